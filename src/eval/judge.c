/*
 * judge.c — pieces of the paper's pairwise GPT-4 judging (docs/FACTS.md §8.2):
 * the three-class judge templates (qlora eval/prompts/{vicuna,oa}_prompt_threeclass.jsonl),
 * the verdict parse, generations files, and an OpenAI-compatible chat client.
 *
 * The HTTP client uses libcurl when the build found it (GN_HAVE_CURL, set by the
 * Makefile's probe); without it gn_http_chat says how to get it, and a local
 * judge model (cmd_eval_judge.c) still works.
 */
#include "eval.h"

#include <cjson/cJSON.h> // templates, generations, API bodies
#include <stdio.h>       // snprintf
#include <stdlib.h>      // free
#include <time.h>        // nanosleep (retry backoff)

#include "../core/common.h" // gn_err, gn_log, gn_read_file
#include "../core/buf.h" // gn_buf, gn_lines

#ifdef GN_HAVE_CURL
#include <curl/curl.h> // curl_easy_*
#endif

// ----------------------------------------------------------------------------
// JSON lines

// Calls fn(object, line) for each non-empty line; a line that is not a JSON
// object is passed as NULL so the caller can count it.
typedef void (*line_fn)(const cJSON *o, int line, void *user);
static gn_status each_line(const char *path, line_fn fn, void *user) {
    char *text;
    size_t len;
    gn_status st = gn_read_file(path, &text, &len);
    if (st) return st;
    gn_lines it = gn_lines_init(text, len);
    size_t n;
    for (char *p; (p = gn_lines_next(&it, &n));) {
        if (gn_line_blank(p)) continue;
        cJSON *o = cJSON_ParseWithLength(p, n);
        fn(cJSON_IsObject(o) ? o : NULL, it.lineno, user);
        cJSON_Delete(o);
    }
    free(text);
    return GN_OK;
}

static const char *str_field(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

// ----------------------------------------------------------------------------
// templates

typedef struct { gn_judge_template *t; int n; const char *path; int bad; } tpl_ctx;

static void tpl_line(const cJSON *o, int line, void *user) {
    tpl_ctx *c = user;
    const cJSON *d = o ? cJSON_GetObjectItemCaseSensitive(o, "defaults") : NULL;
    const char *sys = o ? str_field(o, "system_prompt") : NULL, *tm = o ? str_field(o, "prompt_template") : NULL;
    const char *pr = d ? str_field(d, "prompt") : NULL;
    if (!sys || !tm) {
        c->bad++;
        gn_log(GN_LOG_WARN, "%s:%d: skipped: expected \"system_prompt\" and \"prompt_template\"", c->path, line);
        return;
    }
    c->t = gn_realloc(c->t, sizeof(gn_judge_template) * (size_t)(c->n + 1));
    gn_judge_template *t = &c->t[c->n++];
    t->system = gn_strdup(sys);
    t->tmpl = gn_strdup(tm);
    t->prompt = gn_strdup(pr ? pr : "");
    const char *cat = str_field(o, "category");
    t->category = gn_strdup(cat ? cat : "general");
}

gn_status gn_judge_templates_load(const char *path, gn_judge_template **t, int *n) {
    tpl_ctx c = {NULL, 0, path, 0};
    gn_status st = each_line(path, tpl_line, &c);
    if (st) return st;
    if (c.n == 0)
        return gn_err(GN_ERR_FORMAT, "%s: no judge templates (expected lines like qlora's eval/prompts/"
                      "vicuna_prompt_threeclass.jsonl)", path);
    *t = c.t;
    *n = c.n;
    return GN_OK;
}

void gn_judge_templates_free(gn_judge_template *t, int n) {
    for (int i = 0; i < n; i++) { free(t[i].system); free(t[i].tmpl); free(t[i].prompt); free(t[i].category); }
    free(t);
}

const gn_judge_template *gn_judge_template_for(const gn_judge_template *t, int n, const char *category) {
    if (category)
        for (int i = 0; i < n; i++) if (!strcmp(t[i].category, category)) return &t[i];
    for (int i = 0; i < n; i++) if (!strcmp(t[i].category, "general")) return &t[i];
    return &t[0];
}

char *gn_judge_render(const gn_judge_template *t, const char *question, const char *answer1, const char *answer2) {
    const char *keys[4] = {"{question}", "{answer_1}", "{answer_2}", "{prompt}"};
    const char *vals[4] = {question, answer1, answer2, t->prompt};
    gn_buf b = {0};
    const char *p = t->tmpl;
    while (*p) {
        int hit = -1;
        if (*p == '{')
            for (int k = 0; k < 4; k++) if (!strncmp(p, keys[k], strlen(keys[k]))) { hit = k; break; }
        if (hit >= 0) { gn_buf_put(&b, vals[hit], strlen(vals[hit])); p += strlen(keys[hit]); }
        else gn_buf_put(&b, p++, 1);
    }
    return gn_buf_take(&b);
}

int gn_judge_parse_verdict(const char *review) {
    if (!review) return -1;
    const char *end = review + strlen(review);
    // last non-empty line
    while (end > review && (end[-1] == '\n' || end[-1] == '\r' || end[-1] == ' ' || end[-1] == '\t')) end--;
    const char *start = end;
    while (start > review && start[-1] != '\n') start--;
    // strip wrapping: whitespace, markdown emphasis/code, quotes, final punctuation
    const char *strip = " \t\r*_`\"'#";
    while (start < end && strchr(strip, *start)) start++;
    while (end > start && (strchr(strip, end[-1]) || end[-1] == '.')) end--;
    if (end - start == 1 && *start >= '1' && *start <= '3') return *start - '0';
    return -1;
}

// ----------------------------------------------------------------------------
// generations files

typedef struct { gn_gen_row *r; int n; int bad; const char *path; } gen_ctx;

static void gen_line(const cJSON *o, int line, void *user) {
    gen_ctx *c = user;
    const cJSON *id = o ? cJSON_GetObjectItemCaseSensitive(o, "question_id") : NULL;
    const char *gen = o ? str_field(o, "generation") : NULL, *text = o ? str_field(o, "text") : NULL;
    const char *answer = gen ? gen : text;
    char num[64];
    const char *qid = NULL;
    if (cJSON_IsNumber(id)) {
        double v = id->valuedouble; // the cast is only defined inside long long's range
        if (v > -9.2e18 && v < 9.2e18 && v == (double)(long long)v) snprintf(num, sizeof num, "%lld", (long long)v);
        else snprintf(num, sizeof num, "%.17g", v);
        qid = num;
    } else if (cJSON_IsString(id)) qid = id->valuestring;
    if (!qid || !answer) {
        c->bad++;
        if (c->bad <= 5)
            gn_log(GN_LOG_WARN, "%s:%d: skipped: %s", c->path, line,
                   !o ? "not a JSON object" : !qid ? "no \"question_id\"" : "no \"generation\" or \"text\"");
        return;
    }
    c->r = gn_realloc(c->r, sizeof(gn_gen_row) * (size_t)(c->n + 1));
    gn_gen_row *r = &c->r[c->n++];
    memset(r, 0, sizeof *r);
    r->qid = gn_strdup(qid);
    r->qid_is_num = cJSON_IsNumber(id);
    r->answer = gn_strdup(answer);
    if (gen && text) r->question = gn_strdup(text);
    const char *cat = str_field(o, "category");
    if (cat) r->category = gn_strdup(cat);
}

gn_status gn_gen_load(const char *path, gn_gen_row **rows, int *n, int *skipped) {
    gen_ctx c = {NULL, 0, 0, path};
    gn_status st = each_line(path, gen_line, &c);
    if (st) return st;
    *rows = c.r;
    *n = c.n;
    *skipped = c.bad;
    return GN_OK;
}

void gn_gen_free(gn_gen_row *rows, int n) {
    for (int i = 0; i < n; i++) { free(rows[i].qid); free(rows[i].question); free(rows[i].answer); free(rows[i].category); }
    free(rows);
}

// ----------------------------------------------------------------------------
// OpenAI-compatible chat client

#ifdef GN_HAVE_CURL
int gn_http_available(void) { return 1; }

static size_t on_body(char *p, size_t size, size_t nmemb, void *user) {
    gn_buf_put(user, p, size * nmemb);
    return size * nmemb;
}

static void sleep_s(double s) {
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

gn_status gn_http_chat(const char *url, const char *key, const char *model, const char *system, const char *user,
                       double temperature, int max_tokens, int timeout_s, int retries, char **reply) {
    *reply = NULL;
    static int inited;
    if (!inited) { curl_global_init(CURL_GLOBAL_DEFAULT); inited = 1; }
    size_t ul = strlen(url);
    char *full = gn_malloc(ul + 32);
    memcpy(full, url, ul + 1);
    while (ul && full[ul - 1] == '/') full[--ul] = 0;
    if (ul < 17 || strcmp(full + ul - 17, "/chat/completions")) strcat(full, "/chat/completions");
    cJSON *req = cJSON_CreateObject();
    cJSON_AddStringToObject(req, "model", model);
    cJSON *msgs = cJSON_AddArrayToObject(req, "messages");
    cJSON *m1 = cJSON_CreateObject();
    cJSON_AddStringToObject(m1, "role", "system");
    cJSON_AddStringToObject(m1, "content", system);
    cJSON_AddItemToArray(msgs, m1);
    cJSON *m2 = cJSON_CreateObject();
    cJSON_AddStringToObject(m2, "role", "user");
    cJSON_AddStringToObject(m2, "content", user);
    cJSON_AddItemToArray(msgs, m2);
    cJSON_AddNumberToObject(req, "temperature", temperature);
    cJSON_AddNumberToObject(req, "max_tokens", max_tokens);
    char *body = cJSON_PrintUnformatted(req);
    cJSON_Delete(req);
    struct curl_slist *hdr = curl_slist_append(NULL, "Content-Type: application/json");
    char *auth = NULL;
    if (key && *key) {
        size_t n = strlen(key) + 32;
        auth = gn_malloc(n);
        snprintf(auth, n, "Authorization: Bearer %s", key);
        hdr = curl_slist_append(hdr, auth);
    }
    gn_status st = GN_ERR_IO;
    double wait = 1.0;
    for (int attempt = 0; attempt <= retries; attempt++) {
        if (attempt) { sleep_s(wait); wait *= 2; }
        CURL *h = curl_easy_init();
        if (!h) { st = gn_err(GN_ERR_IO, "%s: curl_easy_init failed", full); continue; }
        gn_buf resp = {0};
        gn_buf_put(&resp, "", 0);
        char cerr[CURL_ERROR_SIZE] = "";
        curl_easy_setopt(h, CURLOPT_URL, full);
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, &resp);
        curl_easy_setopt(h, CURLOPT_TIMEOUT, (long)timeout_s);
        curl_easy_setopt(h, CURLOPT_ERRORBUFFER, cerr);
        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
        CURLcode rc = curl_easy_perform(h);
        long code = 0;
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
        curl_easy_cleanup(h);
        if (rc != CURLE_OK) {
            st = gn_err(GN_ERR_IO, "%s: %s", full, cerr[0] ? cerr : curl_easy_strerror(rc));
            free(resp.buf);
            continue; // network trouble: retry
        }
        if (code != 200) {
            st = gn_err(GN_ERR_IO, "%s: HTTP %ld: %.300s", full, code, resp.buf);
            free(resp.buf);
            if (code == 429 || code >= 500) continue;
            break; // 4xx other than 429: our request is wrong, retrying will not help
        }
        cJSON *r = cJSON_Parse(resp.buf);
        const cJSON *ch = cJSON_GetObjectItemCaseSensitive(r, "choices");
        const cJSON *c0 = cJSON_IsArray(ch) ? cJSON_GetArrayItem(ch, 0) : NULL;
        const cJSON *msg = c0 ? cJSON_GetObjectItemCaseSensitive(c0, "message") : NULL;
        const char *content = msg ? str_field(msg, "content") : NULL;
        if (content) { *reply = gn_strdup(content); st = GN_OK; }
        else st = gn_err(GN_ERR_FORMAT, "%s: reply has no choices[0].message.content: %.300s", full, resp.buf);
        cJSON_Delete(r);
        free(resp.buf);
        break;
    }
    curl_slist_free_all(hdr);
    free(auth);
    cJSON_free(body);
    free(full);
    return st;
}
#else
int gn_http_available(void) { return 0; }

gn_status gn_http_chat(const char *url, const char *key, const char *model, const char *system, const char *user,
                       double temperature, int max_tokens, int timeout_s, int retries, char **reply) {
    (void)key; (void)model; (void)system; (void)user; (void)temperature; (void)max_tokens; (void)timeout_s; (void)retries;
    *reply = NULL;
    return gn_err(GN_ERR_UNSUPPORTED, "%s: this build has no HTTP client. HINT: install libcurl (Debian: "
                  "libcurl4-openssl-dev) and rebuild, or judge with a local model (-m MODEL)", url);
}
#endif
