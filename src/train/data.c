/*
 * data.c — training rows (JSONL) to input ids and loss labels, the way qlora.py
 * builds them (docs/FACTS.md §6.4, §6.5), plus the eval split and the per-epoch order.
 *
 * What qlora.py does with one row (DataCollatorForCausalLM):
 *     source = bos_token + input          e.g. "<s>" + ""        (oasst1)
 *     target = output + eos_token         e.g. conversation + "</s>"
 *     src = tokenizer(source, add_special_tokens=False, truncation, max_length=source_max_len)
 *     tgt = tokenizer(target, add_special_tokens=False, truncation, max_length=target_max_len)
 *     input_ids = src ++ tgt;  labels = [-100]*len(src) ++ tgt  (or src ++ tgt: train_on_source)
 * Truncation keeps the beginning, so a long target loses its EOS.
 *
 * The tokenizer call is transformers 4.31's slow LlamaTokenizer (legacy mode),
 * reproduced here for SentencePiece tokenizers:
 *   - the text is split at the literal special-token strings "<s>", "</s>",
 *     "<unk>" (the tokenizer's BOS/EOS pieces and "<unk>");
 *   - qlora re-registers bos/eos/unk as plain strings, and 4.31 strips the
 *     whitespace on both sides of such tokens: the piece after a special token
 *     is lstripped, the piece before one rstripped (Python str.isspace set);
 *     a piece left empty is dropped;
 *   - every remaining piece is encoded on its own by SentencePiece, so each one
 *     gets its own dummy-prefix '▁' (the first target token of an oasst1 row is
 *     '▁###' = 835, not '###').
 * Effect on real data: the source is [bos] + encode(lstrip(input)) and the
 * target encode(rstrip(output)) + [eos]. oasst1 text has no edge whitespace, so
 * there the stripping changes nothing. qlora also registers "[PAD]" (id 32000);
 * our 32000-piece tokenizer has no such id, so a literal "[PAD]" in the text is
 * encoded as ordinary text.
 * Byte-level BPE tokenizers (no slow-tokenizer history) are encoded with
 * GN_ENC_SPECIAL and no stripping.
 *
 * Formats (per file; AUTO decides from the first row that has a known field):
 *   oasst1        {"text": T}                        input "", output T
 *   alpaca        {"instruction","input"?,"output"}  input = ALPACA_PROMPT_DICT prompt, output
 *   input-output  {"input","output"}                 as is
 *   messages      {"messages":[{"role","content"}]}  rendered in the oasst1 text layout
 *                 "### Human: u### Assistant: a### Human: ..." (a system message,
 *                 first only, goes in front followed by one space, as in
 *                 guanaco_generate.py) and used as one oasst1 target: input "",
 *                 the whole conversation is trained on, as Guanaco was.
 *
 * The eval split and epoch order use our own seeded generator (splitmix64);
 * they do not reproduce datasets' / torch's shuffles (docs/FACTS.md §6.4: that order is
 * not reproducible outside PyTorch). The group_by_length scheme is HF's
 * get_length_grouped_indices.
 */
#include "data.h"
#include "core/buf.h" // gn_buf, gn_lines

#include <cjson/cJSON.h>  // cJSON_ParseWithLengthOpts
#include <stdarg.h>       // va_list
#include <stdio.h>        // snprintf
#include <stdlib.h>       // free
#include <string.h>       // memcpy, strlen

#define MAX_ROW_WARNINGS 100  // per file; later problems are only counted

// ----------------------------------------------------------------------------
// small growable buffers

typedef struct {
    int32_t *v;
    int n, cap;
} ivec;

static void iv_push(ivec *a, int32_t x) {
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 64;
        a->v = gn_realloc(a->v, (size_t)a->cap * sizeof(int32_t));
    }
    a->v[a->n++] = x;
}

static void iv_append(ivec *a, const int32_t *x, int n) {
    for (int i = 0; i < n; i++) iv_push(a, x[i]);
}

// ----------------------------------------------------------------------------
// UTF-8: Python's str.isspace() set, strip, len()

// Length of the valid UTF-8 sequence at s (n bytes available), 0 if invalid.
static int utf8_dec(const unsigned char *s, size_t n, uint32_t *cp) {
    if (!n) return 0;
    uint32_t c = s[0], min;
    int L;
    if (c < 0x80) { *cp = c; return 1; }
    if ((c & 0xE0) == 0xC0) { L = 2; c &= 0x1F; min = 0x80; }
    else if ((c & 0xF0) == 0xE0) { L = 3; c &= 0x0F; min = 0x800; }
    else if ((c & 0xF8) == 0xF0) { L = 4; c &= 0x07; min = 0x10000; }
    else return 0;
    if ((size_t)L > n) return 0;
    for (int i = 1; i < L; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        c = (c << 6) | (s[i] & 0x3F);
    }
    if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) return 0;
    *cp = c;
    return L;
}

static int py_isspace(uint32_t c) {
    return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
           c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
           c == 0x202F || c == 0x205F || c == 0x3000;
}

// Bytes of leading whitespace in s[0..n).
static size_t lspace(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    uint32_t cp;
    while (i < n) {
        int L = utf8_dec(u + i, n - i, &cp);
        if (!L || !py_isspace(cp)) break;
        i += (size_t)L;
    }
    return i;
}

// Length of s[0..n) without its trailing whitespace.
static size_t rstrip_len(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    while (n > 0) {
        size_t j = n - 1;
        while (j > 0 && n - j < 4 && (u[j] & 0xC0) == 0x80) j--;
        uint32_t cp;
        int L = utf8_dec(u + j, n - j, &cp);
        if ((size_t)L != n - j || !py_isspace(cp)) break;
        n = j;
    }
    return n;
}

// Python len() of the decoded string: code points (an invalid byte counts as one).
static int py_len(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    int c = 0;
    uint32_t cp;
    while (i < n) {
        int L = utf8_dec(u + i, n - i, &cp);
        i += L ? (size_t)L : 1;
        c++;
    }
    return c;
}

static int all_space(const char *s, size_t n) { return lspace(s, n) == n; }

// ----------------------------------------------------------------------------
// tokenization as transformers 4.31's slow tokenizer does it (see the top)

#define MAX_SPECIALS 3

typedef struct {
    const gn_tokenizer *tok;
    int spm;                    // SentencePiece: emulate the slow tokenizer
    char *bos_s, *eos_s;        // special-token strings ("<s>", "</s>"), NULL when none
    char *spec[MAX_SPECIALS];   // strings that split the text
    size_t spec_len[MAX_SPECIALS];
    int32_t spec_id[MAX_SPECIALS];
    int n_spec;
} enc_ctx;

static char *piece_string(const gn_tokenizer *t, int32_t id) {
    if (id < 0 || id >= gn_tokenizer_vocab_size(t)) return NULL;
    char *s = NULL;
    size_t n = 0;
    if (gn_tokenizer_decode(t, &id, 1, 0, &s, &n) != GN_OK) return NULL;
    if (n == 0) { free(s); return NULL; }
    return s;
}

static void enc_add_special(enc_ctx *c, const char *s, int32_t id) {
    if (!s || !*s || id < 0 || c->n_spec == MAX_SPECIALS) return;
    for (int k = 0; k < c->n_spec; k++)
        if (!strcmp(c->spec[k], s)) return;
    c->spec[c->n_spec] = gn_strdup(s);
    c->spec_len[c->n_spec] = strlen(s);
    c->spec_id[c->n_spec] = id;
    c->n_spec++;
}

static void enc_init(enc_ctx *c, const gn_tokenizer *t) {
    memset(c, 0, sizeof *c);
    c->tok = t;
    c->spm = gn_tokenizer_kind(t) == GN_TOK_SPM;
    int bos = gn_tokenizer_bos(t), eos = gn_tokenizer_eos(t);
    c->bos_s = piece_string(t, bos);
    c->eos_s = piece_string(t, eos);
    if (c->spm) {
        enc_add_special(c, c->bos_s, bos);
        enc_add_special(c, c->eos_s, eos);
        enc_add_special(c, "<unk>", gn_tokenizer_find(t, "<unk>"));
    }
}

static void enc_free(enc_ctx *c) {
    free(c->bos_s);
    free(c->eos_s);
    for (int k = 0; k < c->n_spec; k++) free(c->spec[k]);
    memset(c, 0, sizeof *c);
}

static gn_status encode_piece(const enc_ctx *c, const char *s, size_t n, int flags, ivec *out) {
    if (!n) return GN_OK;
    int32_t *ids = NULL;
    int m = 0;
    gn_status st = gn_tokenizer_encode(c->tok, s, n, flags, &ids, &m);
    if (st != GN_OK) return st;
    iv_append(out, ids, m);
    free(ids);
    return GN_OK;
}

// Leftmost special-token string in s[from..n): its index, or -1.
static int find_special(const enc_ctx *c, const char *s, size_t n, size_t from, size_t *at) {
    for (size_t i = from; i < n; i++) {
        for (int k = 0; k < c->n_spec; k++) {
            if (c->spec_len[k] <= n - i && !memcmp(s + i, c->spec[k], c->spec_len[k])) {
                *at = i;
                return k;
            }
        }
    }
    return -1;
}

// tokenizer(text, add_special_tokens=False)["input_ids"] without truncation.
static gn_status hf_encode(const enc_ctx *c, const char *s, size_t n, ivec *out) {
    if (!c->spm) return encode_piece(c, s, n, GN_ENC_SPECIAL, out);
    size_t pos = 0;
    int after_special = 0;
    for (;;) {
        size_t at = n;
        int k = find_special(c, s, n, pos, &at);
        const char *p = s + pos;
        size_t len = at - pos;
        if (after_special) { size_t l = lspace(p, len); p += l; len -= l; }
        if (k >= 0) len = rstrip_len(p, len);
        gn_status st = encode_piece(c, p, len, 0, out);
        if (st != GN_OK) return st;
        if (k < 0) return GN_OK;
        iv_push(out, c->spec_id[k]);
        pos = at + c->spec_len[k];
        after_special = 1;
    }
}

// Builds one example from the row's input/output strings.
static gn_status make_example(const enc_ctx *c, const gn_data_opts *o, const char *in, size_t in_n,
                              const char *outp, size_t out_n, int line, gn_example *ex) {
    gn_buf src = {0}, tgt = {0};
    if (c->bos_s) gn_buf_puts(&src, c->bos_s);
    gn_buf_put(&src, in, in_n);
    gn_buf_put(&tgt, outp, out_n);
    if (c->eos_s) gn_buf_puts(&tgt, c->eos_s);
    ivec a = {0}, b = {0};
    gn_status st = hf_encode(c, src.buf, src.len, &a);
    if (st == GN_OK) st = hf_encode(c, tgt.buf, tgt.len, &b);
    free(src.buf);
    free(tgt.buf);
    if (st != GN_OK) { free(a.v); free(b.v); return st; }
    int ns = a.n < o->source_max_len ? a.n : o->source_max_len;   // keep the beginning
    int nt = b.n < o->target_max_len ? b.n : o->target_max_len;
    memset(ex, 0, sizeof *ex);
    ex->n = ns + nt;
    ex->ids = gn_malloc((size_t)(ex->n ? ex->n : 1) * sizeof(int32_t));
    ex->labels = gn_malloc((size_t)(ex->n ? ex->n : 1) * sizeof(int32_t));
    if (ns) memcpy(ex->ids, a.v, (size_t)ns * sizeof(int32_t));
    if (nt) memcpy(ex->ids + ns, b.v, (size_t)nt * sizeof(int32_t));
    for (int i = 0; i < ns; i++) ex->labels[i] = o->train_on_source ? a.v[i] : GN_IGNORE_INDEX;
    if (nt) memcpy(ex->labels + ns, b.v, (size_t)nt * sizeof(int32_t));
    ex->line = line;
    ex->length = py_len(in, in_n) + py_len(outp, out_n);
    free(a.v);
    free(b.v);
    return GN_OK;
}

// ----------------------------------------------------------------------------
// rows

static const char ALPACA_PROMPT_INPUT[] =
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response: ";
static const char ALPACA_PROMPT_NO_INPUT[] =
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response: ";

const char *gn_data_format_name(gn_data_format f) {
    switch (f) {
    case GN_DATA_AUTO: return "auto";
    case GN_DATA_OASST1: return "oasst1";
    case GN_DATA_ALPACA: return "alpaca";
    case GN_DATA_INPUT_OUTPUT: return "input-output";
    case GN_DATA_MESSAGES: return "messages";
    }
    return "?";
}

gn_status gn_data_format_parse(const char *s, gn_data_format *f) {
    static const struct { const char *n; gn_data_format f; } t[] = {
        {"auto", GN_DATA_AUTO}, {"oasst1", GN_DATA_OASST1}, {"alpaca", GN_DATA_ALPACA},
        {"alpaca-clean", GN_DATA_ALPACA}, {"input-output", GN_DATA_INPUT_OUTPUT},
        {"messages", GN_DATA_MESSAGES},
    };
    for (size_t k = 0; k < sizeof t / sizeof t[0]; k++)
        if (s && !strcmp(s, t[k].n)) { *f = t[k].f; return GN_OK; }
    return gn_err(GN_ERR_ARG, "dataset format '%s' (expected auto, oasst1, alpaca, input-output or messages)",
                  s ? s : "(null)");
}

// Row-problem reporting: the message for one row, in a small buffer.
typedef struct {
    char msg[512];
} row_err;

static int bad(row_err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int bad(row_err *e, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    return -1;
}

// A string field: 0 ok (*s set), -1 with message. missing_ok: absent/null gives "".
static int get_str(const cJSON *obj, const char *key, int missing_ok, int empty_ok, const char **s, row_err *e) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!it || cJSON_IsNull(it)) {
        if (missing_ok) { *s = ""; return 0; }
        return it ? bad(e, "field \"%s\" is null", key) : bad(e, "missing field \"%s\"", key);
    }
    if (!cJSON_IsString(it) || !it->valuestring) return bad(e, "field \"%s\" is not a string", key);
    if (!empty_ok && !it->valuestring[0]) return bad(e, "field \"%s\" is empty", key);
    if (!empty_ok && all_space(it->valuestring, strlen(it->valuestring)))
        return bad(e, "field \"%s\" is empty (only whitespace)", key);
    *s = it->valuestring;
    return 0;
}

// Replaces "{instruction}" / "{input}" in an Alpaca template (values verbatim, as str.format does).
static void alpaca_prompt(gn_buf *b, const char *tmpl, const char *instruction, const char *input) {
    const char *p = tmpl;
    while (*p) {
        if (!strncmp(p, "{instruction}", 13)) { gn_buf_puts(b, instruction); p += 13; }
        else if (!strncmp(p, "{input}", 7)) { gn_buf_puts(b, input); p += 7; }
        else { gn_buf_put(b, p, 1); p++; }
    }
}

// Renders {"messages": [...]} in the oasst1 layout. 0 ok, -1 with message.
static int render_messages(const cJSON *obj, gn_buf *b, row_err *e) {
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(obj, "messages");
    if (!msgs) return bad(e, "missing field \"messages\"");
    if (!cJSON_IsArray(msgs)) return bad(e, "field \"messages\" is not an array");
    int i = 0, n_assistant = 0;
    gn_buf_put(b, "", 0);
    for (const cJSON *m = msgs->child; m; m = m->next, i++) {
        if (!cJSON_IsObject(m)) return bad(e, "messages[%d] is not an object", i);
        const char *role, *content;
        if (get_str(m, "role", 0, 0, &role, e) || get_str(m, "content", 0, 0, &content, e)) {
            char tmp[sizeof e->msg];
            snprintf(tmp, sizeof tmp, "messages[%d]: %.400s", i, e->msg);
            memcpy(e->msg, tmp, sizeof tmp);
            return -1;
        }
        if (!strcmp(role, "system")) {
            if (i != 0) return bad(e, "messages[%d]: a \"system\" message must come first", i);
            gn_buf_puts(b, content);
            size_t n = strlen(content);
            if (rstrip_len(content, n) == n) gn_buf_put(b, " ", 1);
        } else if (!strcmp(role, "user")) {
            gn_buf_puts(b, "### Human: ");
            gn_buf_puts(b, content);
        } else if (!strcmp(role, "assistant")) {
            gn_buf_puts(b, "### Assistant: ");
            gn_buf_puts(b, content);
            n_assistant++;
        } else {
            return bad(e, "messages[%d]: role \"%.40s\" (expected system, user or assistant)", i, role);
        }
    }
    if (i == 0) return bad(e, "field \"messages\" is empty");
    if (!n_assistant) return bad(e, "no \"assistant\" message");
    return 0;
}

static gn_data_format detect_format(const cJSON *obj) {
    if (cJSON_GetObjectItemCaseSensitive(obj, "text")) return GN_DATA_OASST1;
    if (cJSON_GetObjectItemCaseSensitive(obj, "instruction")) return GN_DATA_ALPACA;
    if (cJSON_GetObjectItemCaseSensitive(obj, "output")) return GN_DATA_INPUT_OUTPUT;
    if (cJSON_GetObjectItemCaseSensitive(obj, "messages")) return GN_DATA_MESSAGES;
    return GN_DATA_AUTO;
}

// One parsed row -> example. 0 ok, -1 row problem (message in e), >0 a gn_status.
static int row_example(const enc_ctx *c, const gn_data_opts *o, gn_data_format f, const cJSON *obj,
                       int line, gn_example *ex, row_err *e) {
    const char *in = "", *outp = NULL;
    gn_buf buf = {0};
    int r = 0;
    switch (f) {
    case GN_DATA_OASST1:
        r = get_str(obj, "text", 0, 0, &outp, e);
        break;
    case GN_DATA_ALPACA: {
        const char *instruction, *input;
        r = get_str(obj, "instruction", 0, 0, &instruction, e);
        if (!r) r = get_str(obj, "input", 1, 1, &input, e);
        if (!r) r = get_str(obj, "output", 0, 0, &outp, e);
        if (!r) {
            alpaca_prompt(&buf, *input ? ALPACA_PROMPT_INPUT : ALPACA_PROMPT_NO_INPUT, instruction, input);
            in = buf.buf;
        }
        break;
    }
    case GN_DATA_INPUT_OUTPUT:
        r = get_str(obj, "input", 0, 1, &in, e);
        if (!r) r = get_str(obj, "output", 0, 0, &outp, e);
        break;
    case GN_DATA_MESSAGES:
        r = render_messages(obj, &buf, e);
        outp = buf.buf;
        break;
    default:
        r = bad(e, "unknown format");
    }
    if (r) { free(buf.buf); return -1; }
    gn_status st = make_example(c, o, in, strlen(in), outp, strlen(outp), line, ex);
    free(buf.buf);
    return st == GN_OK ? 0 : (int)st;
}

static void free_example(gn_example *ex) {
    free(ex->ids);
    free(ex->labels);
    ex->ids = ex->labels = NULL;
}

void gn_data_opts_default(gn_data_opts *o) {
    memset(o, 0, sizeof *o);
    o->format = GN_DATA_AUTO;
    o->source_max_len = 1024;
    o->target_max_len = 256;
}

gn_status gn_dataset_load(gn_dataset *ds, const char *path, const gn_tokenizer *tok, const gn_data_opts *opts) {
    GN_ASSERT(ds && path && tok);
    memset(ds, 0, sizeof *ds);
    gn_data_opts o;
    if (opts) o = *opts; else gn_data_opts_default(&o);
    if (o.source_max_len < 1 || o.target_max_len < 1)
        return gn_err(GN_ERR_ARG, "%s: source_max_len %d / target_max_len %d: both must be at least 1", path,
                      o.source_max_len, o.target_max_len);
    if ((unsigned)o.format > GN_DATA_MESSAGES) return gn_err(GN_ERR_ARG, "%s: dataset format %d", path, (int)o.format);

    char *buf = NULL;
    size_t len = 0;
    gn_status st = gn_read_file(path, &buf, &len);
    if (st != GN_OK) return st;

    enc_ctx c;
    enc_init(&c, tok);
    gn_data_format f = o.format;
    int cap = 0, line = 0, warned = 0, nonblank = 0;
    size_t bom = len >= 3 && !memcmp(buf, "\xEF\xBB\xBF", 3) ? 3 : 0;  // UTF-8 byte-order mark
    gn_lines it = gn_lines_init(buf + bom, len - bom);
    size_t n;
    for (const char *p; (p = gn_lines_next(&it, &n));) {
        if (it.lineno > (1 << 30)) { // line numbers and the example count are ints
            st = gn_err(GN_ERR_UNSUPPORTED, "%s: more than %d lines, expected a smaller file (split it)", path,
                        1 << 30);
            goto fail;
        }
        line = it.lineno;
        if (all_space(p, n)) continue;
        nonblank++;

        row_err e = {{0}};
        int r = -1;
        const char *end = NULL;
        cJSON *obj = cJSON_ParseWithLengthOpts(p, n, &end, 0);
        if (!obj) {
            bad(&e, "not valid JSON (column %d)", end ? (int)(end - p) + 1 : 1);
        } else if (!all_space(end, n - (size_t)(end - p))) {
            bad(&e, "not valid JSON: extra text after the value (column %d)", (int)(end - p) + 1);
        } else if (!cJSON_IsObject(obj)) {
            bad(&e, "expected a JSON object");
        } else {
            if (f == GN_DATA_AUTO) {
                f = detect_format(obj);
                if (f != GN_DATA_AUTO)
                    gn_log(GN_LOG_INFO, "%s:%d: dataset format %s (from this row's fields)", path, line,
                           gn_data_format_name(f));
            }
            if (f == GN_DATA_AUTO) {
                bad(&e, "no \"text\", \"instruction\", \"input\"/\"output\" or \"messages\" field");
            } else {
                if (ds->n == cap) {
                    cap = cap ? cap * 2 : 256;
                    ds->ex = gn_realloc(ds->ex, (size_t)cap * sizeof *ds->ex);
                }
                r = row_example(&c, &o, f, obj, line, &ds->ex[ds->n], &e);
                if (r > 0) {  // tokenizer failure: not a row problem
                    cJSON_Delete(obj);
                    st = gn_err_prefix((gn_status)r, path);
                    goto fail;
                }
            }
        }
        cJSON_Delete(obj);
        if (r == 0) { ds->n++; continue; }
        ds->skipped++;
        if (warned++ < MAX_ROW_WARNINGS) gn_log(GN_LOG_WARN, "%s:%d: %s; row skipped", path, line, e.msg);
    }
    if (warned > MAX_ROW_WARNINGS)
        gn_log(GN_LOG_WARN, "%s: %d more rows skipped (not shown)", path, warned - MAX_ROW_WARNINGS);
    if (ds->n == 0) {
        if (nonblank == 0) st = gn_err(GN_ERR_FORMAT, "%s: no rows (the file is empty or has only blank lines)", path);
        else st = gn_err(GN_ERR_FORMAT, "%s: no usable row (%d rows, all skipped; see the warnings above)",
                         path, nonblank);
        goto fail;
    }
    if (ds->skipped)
        gn_log(GN_LOG_WARN, "%s: %d usable rows, %d skipped", path, ds->n, ds->skipped);
    free(buf);
    enc_free(&c);
    return GN_OK;
fail:
    free(buf);
    enc_free(&c);
    gn_dataset_free(ds);
    return st;
}

void gn_dataset_free(gn_dataset *ds) {
    if (!ds) return;
    for (int i = 0; i < ds->n; i++) free_example(&ds->ex[i]);
    free(ds->ex);
    memset(ds, 0, sizeof *ds);
}

// ----------------------------------------------------------------------------
// seeded order: splitmix64


// Uniform in [0, k), k >= 1, without modulo bias.
static uint64_t below(uint64_t *s, uint64_t k) {
    uint64_t lim = (uint64_t)0 - ((uint64_t)0 - k) % k;  // largest multiple of k (mod 2^64)
    for (;;) {
        uint64_t x = gn_splitmix64(s);
        if (lim == 0 || x < lim) return x % k;
    }
}

// Fisher-Yates permutation of 0..n-1.
static void permutation(int *p, int n, uint64_t *s) {
    for (int i = 0; i < n; i++) p[i] = i;
    for (int i = n - 1; i > 0; i--) {
        int j = (int)below(s, (uint64_t)i + 1);
        int t = p[i]; p[i] = p[j]; p[j] = t;
    }
}

void gn_dataset_split(gn_dataset *ds, int eval_size, uint64_t seed, gn_dataset *eval) {
    GN_ASSERT(ds && eval && eval != ds);
    memset(eval, 0, sizeof *eval);
    if (eval_size < 0) eval_size = 0;
    if (eval_size > ds->n) eval_size = ds->n;
    if (eval_size == 0) return;
    uint64_t s = seed ^ 0x5EED5EED5EED5EEDull;
    int *perm = gn_malloc((size_t)ds->n * sizeof(int));
    permutation(perm, ds->n, &s);
    char *taken = gn_calloc((size_t)ds->n, 1);
    eval->ex = gn_malloc((size_t)eval_size * sizeof *eval->ex);
    eval->n = eval_size;
    for (int i = 0; i < eval_size; i++) {
        eval->ex[i] = ds->ex[perm[i]];
        taken[perm[i]] = 1;
    }
    int k = 0;
    for (int i = 0; i < ds->n; i++)
        if (!taken[i]) ds->ex[k++] = ds->ex[i];
    ds->n = k;
    if (k == 0) { free(ds->ex); ds->ex = NULL; }
    free(taken);
    free(perm);
}

// Sorts idx[0..n) by length, longest first, keeping the given order among
// equals (Python's sorted(..., reverse=True) is stable): merge sort, tmp n ints.
static void sort_by_length_desc(int *idx, int *tmp, int n, const gn_dataset *ds) {
    if (n < 2) return;
    int h = n / 2;
    sort_by_length_desc(idx, tmp, h, ds);
    sort_by_length_desc(idx + h, tmp, n - h, ds);
    int i = 0, j = h, k = 0;
    while (i < h && j < n)  // take from the right only when strictly longer
        tmp[k++] = ds->ex[idx[j]].length > ds->ex[idx[i]].length ? idx[j++] : idx[i++];
    while (i < h) tmp[k++] = idx[i++];
    while (j < n) tmp[k++] = idx[j++];
    memcpy(idx, tmp, (size_t)n * sizeof(int));
}

void gn_dataset_epoch_order(const gn_dataset *ds, uint64_t seed, int epoch, int group_by_length, int batch, int *order) {
    GN_ASSERT(ds && (order || ds->n == 0));
    int n = ds->n;
    if (n == 0) return;
    uint64_t s = seed;
    s = gn_splitmix64(&s) ^ ((uint64_t)(uint32_t)epoch * 0xD1B54A32D192ED03ull);
    permutation(order, n, &s);
    if (!group_by_length) return;
    // transformers' get_length_grouped_indices: megabatches of mult*batch
    // (mult = min(n / (4*batch), 50), at least 1), each sorted longest first,
    // then the overall longest example swapped to the very front.
    if (batch < 1) batch = 1;
    if (batch > n) batch = n;
    int mult = n / (4 * (int64_t)batch) > 50 ? 50 : (int)(n / (4 * (int64_t)batch));
    if (mult < 1) mult = 1;
    int64_t mb64 = (int64_t)mult * batch;
    int mb = mb64 > n ? n : (int)mb64;
    int best = 0;  // start of the megabatch whose first element is longest (first on ties)
    int *tmp = gn_malloc((size_t)(mb < n ? mb : n) * sizeof(int));
    for (int start = 0; start < n; start += mb) {
        int m = n - start < mb ? n - start : mb;
        sort_by_length_desc(order + start, tmp, m, ds);
        if (ds->ex[order[start]].length > ds->ex[order[best]].length) best = start;
    }
    free(tmp);
    int t = order[0]; order[0] = order[best]; order[best] = t;
}
