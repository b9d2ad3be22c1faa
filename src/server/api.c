/*
 * api.c — the OpenAI request side of `guanaco serve`: small buffers and UTF-8
 * checks, validation of /v1/chat/completions and /v1/completions bodies into a
 * srv_job, error objects in OpenAI's shape, and the /v1/models list.
 *
 * Validation follows the OpenAI reference where it is strict (types, ranges,
 * n == 1) and is lenient where clients differ: unknown fields are ignored,
 * "model" may be left out (the base model), penalties are accepted and ignored.
 * Extensions: top_k, repetition_penalty.
 */
#ifdef GN_HAVE_MHD
#include "server.h"

#include <cjson/cJSON.h> // cJSON_ParseWithLength, cJSON_GetObjectItemCaseSensitive
#include <math.h>        // floor, isfinite
#include <stdarg.h>      // va_list
#include <stdio.h>       // vsnprintf
#include <stdlib.h>      // free
#include <string.h>      // strcmp
#include <time.h>        // time

#include "core/common.h" // gn_malloc, gn_strdup, gn_time_s

// ----------------------------------------------------------------------------
// JSON strings

// Length of the well-formed UTF-8 sequence at s[0..n) (n > 0, s[0] >= 0x80), or 0.
static size_t utf8_seq(const unsigned char *s, size_t n) {
    unsigned c = s[0], cp, min;
    size_t k;
    if ((c & 0xe0) == 0xc0) { k = 1; cp = c & 0x1f; min = 0x80; }
    else if ((c & 0xf0) == 0xe0) { k = 2; cp = c & 0x0f; min = 0x800; }
    else if ((c & 0xf8) == 0xf0) { k = 3; cp = c & 0x07; min = 0x10000; }
    else return 0;
    if (n <= k) return 0;
    for (size_t j = 1; j <= k; j++) {
        if ((s[j] & 0xc0) != 0x80) return 0;
        cp = (cp << 6) | (s[j] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
    return k + 1;
}

// JSON string literal (with quotes) for n bytes of text; bytes that are not
// well-formed UTF-8 become U+FFFD, so the output is always valid JSON.
void sb_json_str(gn_buf *b, const char *str, size_t n) {
    static const char hex[] = "0123456789abcdef";
    const unsigned char *s = (const unsigned char *)str;
    gn_buf_put(b, "\"", 1);
    size_t run = 0; // start of the bytes not yet copied
    for (size_t i = 0; i < n;) {
        unsigned char c = s[i];
        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') { i++; continue; }
        if (c >= 0x80) {
            size_t k = utf8_seq(s + i, n - i);
            if (k) { i += k; continue; }
        }
        gn_buf_put(b, str + run, i - run);
        switch (c) {
        case '"': gn_buf_put(b, "\\\"", 2); break;
        case '\\': gn_buf_put(b, "\\\\", 2); break;
        case '\n': gn_buf_put(b, "\\n", 2); break;
        case '\r': gn_buf_put(b, "\\r", 2); break;
        case '\t': gn_buf_put(b, "\\t", 2); break;
        default:
            if (c >= 0x80) gn_buf_put(b, "\\ufffd", 6);
            else {
                char u[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
                gn_buf_put(b, u, 6);
            }
        }
        run = ++i;
    }
    gn_buf_put(b, str + run, n - run);
    gn_buf_put(b, "\"", 1);
}

int utf8_valid(const char *str, size_t n) {
    const unsigned char *s = (const unsigned char *)str;
    for (size_t i = 0; i < n;) {
        if (s[i] < 0x80) { i++; continue; }
        size_t k = utf8_seq(s + i, n - i);
        if (!k) return 0;
        i += k;
    }
    return 1;
}

// ----------------------------------------------------------------------------
// errors and ids

void api_error_json(gn_buf *out, const char *message, const char *type, const char *param, const char *code) {
    gn_buf_puts(out, "{\"error\":{\"message\":");
    sb_json_str(out, message, strlen(message));
    gn_buf_puts(out, ",\"type\":");
    sb_json_str(out, type, strlen(type));
    gn_buf_puts(out, ",\"param\":");
    if (param) sb_json_str(out, param, strlen(param)); else gn_buf_puts(out, "null");
    gn_buf_puts(out, ",\"code\":");
    if (code) sb_json_str(out, code, strlen(code)); else gn_buf_puts(out, "null");
    gn_buf_puts(out, "}}");
}

// Random numbers for ids and default seeds (socket thread only).
uint64_t srv_rand64(void) {
    static uint64_t s;
    if (!s) s = ((uint64_t)time(NULL) << 20) ^ (uint64_t)(gn_time_s() * 1e9) ^ 0x9e3779b97f4a7c15ull;
    return gn_splitmix64(&s);
}

// n random characters from [A-Za-z0-9] into out (NUL-terminated).
void srv_rand_id(char *out, int n) {
    static const char al[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    for (int i = 0; i < n; i++) out[i] = al[srv_rand64() % (sizeof al - 1)];
    out[n] = 0;
}

// ----------------------------------------------------------------------------
// jobs

void job_free(srv_job *j) {
    if (!j) return;
    free(j->prompt);
    for (int i = 0; i < j->n_msgs; i++) { free((char *)j->msgs[i].role); free((char *)j->msgs[i].content); }
    free(j->msgs);
    for (int i = 0; i < j->n_stop; i++) free(j->stop[i]);
    free(j->stop);
    free(j->prompt_ids);
    free(j->model);
    gn_buf_free(&j->out);
    free(j);
}

// ----------------------------------------------------------------------------
// request validation

typedef struct {
    gn_buf *err;
    int *status;
} vctx;

static int bad(vctx *v, int status, const char *param, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int bad(vctx *v, int status, const char *param, const char *code, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    v->err->len = 0;
    api_error_json(v->err, msg, "invalid_request_error", param, code);
    *v->status = status;
    return -1;
}

static const char *type_name(const cJSON *x) {
    if (cJSON_IsString(x)) return "a string";
    if (cJSON_IsNumber(x)) return "a number";
    if (cJSON_IsBool(x)) return "a boolean";
    if (cJSON_IsNull(x)) return "null";
    if (cJSON_IsArray(x)) return "an array";
    if (cJSON_IsObject(x)) return "an object";
    return "something else";
}

// A number field in [lo, hi]; absent/null keeps *dst. 0 ok, -1 error.
static int get_num(vctx *v, const cJSON *root, const char *key, double lo, double hi, double *dst) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!x || cJSON_IsNull(x)) return 0;
    if (!cJSON_IsNumber(x) || !isfinite(x->valuedouble))
        return bad(v, 400, key, "invalid_type", "'%s' must be a number, got %s", key, type_name(x));
    if (x->valuedouble < lo || x->valuedouble > hi)
        return bad(v, 400, key, "invalid_value", "'%s' must be between %g and %g, got %g", key, lo, hi, x->valuedouble);
    *dst = x->valuedouble;
    return 0;
}

// An integer field in [lo, hi]; absent/null: *present = 0.
static int get_int(vctx *v, const cJSON *root, const char *key, double lo, double hi, double *dst, int *present) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(root, key);
    if (present) *present = 0;
    if (!x || cJSON_IsNull(x)) return 0;
    if (!cJSON_IsNumber(x) || !isfinite(x->valuedouble) || floor(x->valuedouble) != x->valuedouble)
        return bad(v, 400, key, "invalid_type", "'%s' must be an integer, got %s", key,
                   cJSON_IsNumber(x) ? "a fraction" : type_name(x));
    if (x->valuedouble < lo || x->valuedouble > hi)
        return bad(v, 400, key, "invalid_value", "'%s' must be an integer from %.0f to %.0f, got %.0f", key, lo, hi,
                   x->valuedouble);
    *dst = x->valuedouble;
    if (present) *present = 1;
    return 0;
}

static int get_bool(vctx *v, const cJSON *root, const char *key, int *dst) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!x || cJSON_IsNull(x)) return 0;
    if (!cJSON_IsBool(x)) return bad(v, 400, key, "invalid_type", "'%s' must be a boolean, got %s", key, type_name(x));
    *dst = cJSON_IsTrue(x);
    return 0;
}

// Text of a message "content": a string, or an array of {"type":"text","text":...} parts.
static int content_text(vctx *v, const cJSON *c, int i, char **out) {
    char param[64];
    snprintf(param, sizeof param, "messages[%d].content", i);
    if (!c || cJSON_IsNull(c)) { *out = gn_strdup(""); return 0; }
    if (cJSON_IsString(c)) { *out = gn_strdup(c->valuestring); return 0; }
    if (!cJSON_IsArray(c))
        return bad(v, 400, param, "invalid_type", "'%s' must be a string or an array of text parts, got %s", param,
                   type_name(c));
    gn_buf b = {0};
    const cJSON *p;
    cJSON_ArrayForEach(p, c) {
        const cJSON *ty = cJSON_GetObjectItemCaseSensitive(p, "type");
        const cJSON *tx = cJSON_GetObjectItemCaseSensitive(p, "text");
        if (!cJSON_IsObject(p) || !cJSON_IsString(ty) || strcmp(ty->valuestring, "text") || !cJSON_IsString(tx)) {
            gn_buf_free(&b);
            return bad(v, 400, param, "invalid_value",
                       "'%s': only parts of the form {\"type\": \"text\", \"text\": \"...\"} are supported", param);
        }
        gn_buf_puts(&b, tx->valuestring);
    }
    *out = gn_buf_take(&b);
    return 0;
}

static int parse_messages(vctx *v, const cJSON *root, srv_job *j) {
    const cJSON *ms = cJSON_GetObjectItemCaseSensitive(root, "messages");
    if (!ms) return bad(v, 400, "messages", "missing_required_parameter", "'messages' is required");
    if (!cJSON_IsArray(ms))
        return bad(v, 400, "messages", "invalid_type", "'messages' must be an array, got %s", type_name(ms));
    int n = cJSON_GetArraySize(ms);
    if (n == 0) return bad(v, 400, "messages", "invalid_value", "'messages' must contain at least one message");
    if (n > 4096) return bad(v, 400, "messages", "invalid_value", "'messages' has %d messages (at most 4096)", n);
    // system/developer messages are merged into one leading system turn
    gn_buf sys = {0};
    int have_sys = 0;
    j->msgs = gn_calloc((size_t)n + 1, sizeof(gn_chat_msg));
    j->n_msgs = 1; // slot 0 is reserved for the system turn
    const cJSON *m;
    int i = 0;
    cJSON_ArrayForEach(m, ms) {
        char param[64];
        snprintf(param, sizeof param, "messages[%d]", i);
        if (!cJSON_IsObject(m)) {
            gn_buf_free(&sys);
            return bad(v, 400, param, "invalid_type", "'%s' must be an object, got %s", param, type_name(m));
        }
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        snprintf(param, sizeof param, "messages[%d].role", i);
        if (!cJSON_IsString(role)) {
            gn_buf_free(&sys);
            return bad(v, 400, param, "invalid_type", "'%s' must be a string", param);
        }
        const char *r = role->valuestring;
        int is_sys = !strcmp(r, "system") || !strcmp(r, "developer");
        if (!is_sys && strcmp(r, "user") && strcmp(r, "assistant")) {
            gn_buf_free(&sys);
            return bad(v, 400, param, "invalid_value",
                       "'%s' is '%.40s': supported roles are system, developer, user and assistant", param, r);
        }
        char *text = NULL;
        if (content_text(v, cJSON_GetObjectItemCaseSensitive(m, "content"), i, &text)) { gn_buf_free(&sys); return -1; }
        if (is_sys) {
            if (have_sys) gn_buf_puts(&sys, "\n");
            gn_buf_puts(&sys, text);
            have_sys = 1;
            free(text);
        } else {
            j->msgs[j->n_msgs].role = gn_strdup(r);
            j->msgs[j->n_msgs].content = text;
            j->n_msgs++;
        }
        i++;
    }
    char *system = have_sys ? (sys.buf ? sys.buf : gn_strdup("")) : (srv.default_system ? gn_strdup(srv.default_system) : NULL);
    if (system) {
        j->msgs[0].role = gn_strdup("system");
        j->msgs[0].content = system;
    } else { // no system turn: shift the conversation down
        memmove(j->msgs, j->msgs + 1, sizeof(gn_chat_msg) * (size_t)(j->n_msgs - 1));
        j->n_msgs--;
        j->msgs[j->n_msgs] = (gn_chat_msg){NULL, NULL};
    }
    return 0;
}

static int parse_stop(vctx *v, const cJSON *root, srv_job *j) {
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(root, "stop");
    if (!s || cJSON_IsNull(s)) return 0;
    if (cJSON_IsString(s)) {
        if (!s->valuestring[0]) return 0;
        if (strlen(s->valuestring) > 256) return bad(v, 400, "stop", "invalid_value", "'stop' strings are limited to 256 bytes");
        j->stop = gn_malloc(sizeof(char *));
        j->stop[0] = gn_strdup(s->valuestring);
        j->n_stop = 1;
        return 0;
    }
    if (!cJSON_IsArray(s))
        return bad(v, 400, "stop", "invalid_type", "'stop' must be a string or an array of strings, got %s", type_name(s));
    int n = cJSON_GetArraySize(s);
    if (n > 16) return bad(v, 400, "stop", "invalid_value", "'stop' has %d strings (at most 16)", n);
    j->stop = gn_calloc((size_t)n + 1, sizeof(char *));
    const cJSON *x;
    cJSON_ArrayForEach(x, s) {
        if (!cJSON_IsString(x)) return bad(v, 400, "stop", "invalid_type", "'stop' must contain only strings, found %s", type_name(x));
        if (strlen(x->valuestring) > 256) return bad(v, 400, "stop", "invalid_value", "'stop' strings are limited to 256 bytes");
        if (!x->valuestring[0]) continue;
        j->stop[j->n_stop++] = gn_strdup(x->valuestring);
    }
    return 0;
}

static int parse_prompt(vctx *v, const cJSON *root, srv_job *j) {
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(root, "prompt");
    if (!p) return bad(v, 400, "prompt", "missing_required_parameter", "'prompt' is required");
    if (cJSON_IsString(p)) { j->prompt = gn_strdup(p->valuestring); return 0; }
    if (cJSON_IsArray(p)) {
        int n = cJSON_GetArraySize(p);
        const cJSON *first = cJSON_GetArrayItem(p, 0);
        if (n == 1 && cJSON_IsString(first)) { j->prompt = gn_strdup(first->valuestring); return 0; }
        if (n >= 1 && cJSON_IsNumber(first)) { // token ids
            int V = gn_model_config(srv.model)->vocab_size;
            j->prompt_ids = gn_malloc(sizeof(int32_t) * (size_t)n);
            const cJSON *x;
            cJSON_ArrayForEach(x, p) {
                if (!cJSON_IsNumber(x) || floor(x->valuedouble) != x->valuedouble || x->valuedouble < 0 ||
                    x->valuedouble >= V)
                    return bad(v, 400, "prompt", "invalid_value",
                               "'prompt' as token ids must hold integers from 0 to %d", V - 1);
                j->prompt_ids[j->n_prompt_ids++] = (int32_t)x->valuedouble;
            }
            return 0;
        }
        return bad(v, 400, "prompt", "invalid_value",
                   "'prompt' must be a string, an array of one string, or an array of token ids (one prompt per request)");
    }
    return bad(v, 400, "prompt", "invalid_type", "'prompt' must be a string, got %s", type_name(p));
}

// Resolves "model" to the base (-1) or an adapter index; -2 when unknown.
static int find_model(const char *name) {
    if (!strcmp(name, srv.model_name)) return -1;
    for (int i = 0; i < srv.n_adapters; i++)
        if (!strcmp(name, srv.adapters[i].name)) return i;
    return -2;
}

srv_job *api_parse(int kind, const char *body, size_t len, gn_buf *err, int *status) {
    vctx v = {err, status};
    srv_job *j = NULL;
    cJSON *root = NULL;
    if (!utf8_valid(body, len)) {
        bad(&v, 400, NULL, "invalid_encoding", "the request body is not valid UTF-8");
        return NULL;
    }
    const char *end = NULL;
    root = cJSON_ParseWithLengthOpts(body, len, &end, 0);
    if (!root) {
        size_t at = end && end >= body && end <= body + len ? (size_t)(end - body) : 0;
        bad(&v, 400, NULL, "invalid_json", "could not parse the JSON body (error near byte %zu of %zu)", at, len);
        return NULL;
    }
    if (!cJSON_IsObject(root)) {
        bad(&v, 400, NULL, "invalid_json", "the JSON body must be an object, got %s", type_name(root));
        goto fail;
    }
    j = gn_calloc(1, sizeof *j);
    j->kind = kind;
    j->fd = -1;
    j->adapter = -1;
    // model
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (model && !cJSON_IsNull(model)) {
        if (!cJSON_IsString(model)) { bad(&v, 400, "model", "invalid_type", "'model' must be a string, got %s", type_name(model)); goto fail; }
        int a = model->valuestring[0] ? find_model(model->valuestring) : -1;
        if (a == -2) {
            gn_buf names = {0};
            gn_buf_puts(&names, srv.model_name);
            for (int i = 0; i < srv.n_adapters; i++) { gn_buf_puts(&names, ", "); gn_buf_puts(&names, srv.adapters[i].name); }
            bad(&v, 404, "model", "model_not_found", "The model '%.100s' does not exist; this server has: %.300s",
                model->valuestring, names.buf);
            gn_buf_free(&names);
            goto fail;
        }
        j->adapter = a;
    }
    j->model = gn_strdup(j->adapter >= 0 ? srv.adapters[j->adapter].name : srv.model_name);
    // sampling: OpenAI's defaults (temperature 1, top_p 1)
    gn_sampler_defaults(&j->smp);
    double temperature = 1.0, top_p = 1.0, seed = 0, top_k = 0, rep = 1.0, ign = 0, n = 1, mt = -1;
    int have_seed = 0, have_mt = 0, have_mct = 0;
    if (get_num(&v, root, "temperature", 0, 2, &temperature) || get_num(&v, root, "top_p", 0, 1, &top_p) ||
        get_int(&v, root, "seed", -9.2e18, 1.8e19, &seed, &have_seed) ||
        get_int(&v, root, "top_k", 0, 1e9, &top_k, NULL) ||
        get_num(&v, root, "repetition_penalty", 0.01, 100, &rep) ||
        get_num(&v, root, "presence_penalty", -2, 2, &ign) || get_num(&v, root, "frequency_penalty", -2, 2, &ign) ||
        get_int(&v, root, "n", 1, 1, &n, NULL) || get_bool(&v, root, "stream", &j->stream))
        goto fail;
    if (get_int(&v, root, "max_tokens", -1e18, 1e18, &mt, &have_mt)) goto fail;
    if (!have_mt && kind == JOB_CHAT && get_int(&v, root, "max_completion_tokens", -1e18, 1e18, &mt, &have_mct)) goto fail;
    if (have_mt || have_mct) {
        const char *k = have_mt ? "max_tokens" : "max_completion_tokens";
        if (mt < 1) { bad(&v, 400, k, "invalid_value", "'%s' must be at least 1, got %.0f", k, mt); goto fail; }
        if (mt > srv.o.max_tokens) {
            bad(&v, 400, k, "invalid_value", "'%s' is %.0f; this server allows at most %d (--max-tokens)", k, mt,
                srv.o.max_tokens);
            goto fail;
        }
        j->max_tokens = (int)mt;
    } else {
        j->max_tokens = -1;
    }
    j->smp.temperature = (float)temperature;
    j->smp.top_p = (float)top_p;
    j->smp.top_k = (int)top_k;
    j->smp.repeat_penalty = (float)rep;
    j->smp.seed = !have_seed ? srv_rand64() : seed >= 0 ? (uint64_t)seed : (uint64_t)(int64_t)seed;
    const cJSON *so = cJSON_GetObjectItemCaseSensitive(root, "stream_options");
    if (so && !cJSON_IsNull(so)) {
        if (!cJSON_IsObject(so)) { bad(&v, 400, "stream_options", "invalid_type", "'stream_options' must be an object"); goto fail; }
        if (get_bool(&v, so, "include_usage", &j->include_usage)) goto fail;
    }
    // features we do not have: refuse rather than silently ignore
    const cJSON *lp = cJSON_GetObjectItemCaseSensitive(root, "logprobs");
    if (lp && !cJSON_IsNull(lp) && !cJSON_IsFalse(lp)) {
        bad(&v, 400, "logprobs", "unsupported_parameter", "'logprobs' is not supported by this server");
        goto fail;
    }
    const cJSON *tools = cJSON_GetObjectItemCaseSensitive(root, "tools");
    if (tools && !cJSON_IsNull(tools) && !(cJSON_IsArray(tools) && cJSON_GetArraySize(tools) == 0)) {
        bad(&v, 400, "tools", "unsupported_parameter", "'tools' (function calling) is not supported by this server");
        goto fail;
    }
    if (parse_stop(&v, root, j)) goto fail;
    if (kind == JOB_CHAT) {
        if (parse_messages(&v, root, j)) goto fail;
    } else {
        if (parse_prompt(&v, root, j)) goto fail;
        int echo = 0;
        double best_of = 1;
        if (get_bool(&v, root, "echo", &echo) || get_int(&v, root, "best_of", 1, 1, &best_of, NULL)) goto fail;
        if (echo) { bad(&v, 400, "echo", "unsupported_parameter", "'echo' is not supported by this server"); goto fail; }
        const cJSON *sfx = cJSON_GetObjectItemCaseSensitive(root, "suffix");
        if (sfx && !cJSON_IsNull(sfx) && !(cJSON_IsString(sfx) && !sfx->valuestring[0])) {
            bad(&v, 400, "suffix", "unsupported_parameter", "'suffix' is not supported by this server");
            goto fail;
        }
    }
    cJSON_Delete(root);
    j->t_arrival = gn_time_s();
    j->deadline = j->t_arrival + srv.o.timeout_s;
    j->created = (long)time(NULL);
    strcpy(j->id, kind == JOB_CHAT ? "chatcmpl-" : "cmpl-");
    srv_rand_id(j->id + strlen(j->id), 24);
    return j;
fail:
    cJSON_Delete(root);
    job_free(j);
    return NULL;
}

// ----------------------------------------------------------------------------
// GET /v1/models

static void model_entry(gn_buf *out, const char *id, const char *parent) {
    gn_buf_puts(out, "{\"id\":");
    sb_json_str(out, id, strlen(id));
    gn_buf_printf(out, ",\"object\":\"model\",\"created\":%ld,\"owned_by\":\"guanaco\"", srv.started);
    if (parent) { gn_buf_puts(out, ",\"parent\":"); sb_json_str(out, parent, strlen(parent)); }
    gn_buf_puts(out, "}");
}

void api_models_json(gn_buf *out) {
    gn_buf_puts(out, "{\"object\":\"list\",\"data\":[");
    model_entry(out, srv.model_name, NULL);
    for (int i = 0; i < srv.n_adapters; i++) {
        gn_buf_puts(out, ",");
        model_entry(out, srv.adapters[i].name, srv.model_name);
    }
    gn_buf_puts(out, "]}");
}

int api_model_json(gn_buf *out, const char *id) {
    int a = find_model(id);
    if (a == -2) return -1;
    model_entry(out, id, a >= 0 ? srv.model_name : NULL);
    return 0;
}

#endif // GN_HAVE_MHD
