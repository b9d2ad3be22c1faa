/*
 * hf.c — the parts of an HF tokenizer.json that SentencePiece-style BPE files
 * use, run the way the `tokenizers` library runs them:
 *
 *   normalizer   Prepend (only to non-empty text), Replace (literal or regex,
 *                every match), Sequence of those. Each chunk of text between
 *                added tokens is normalized on its own.
 *   decoder      Replace (literal), ByteFallback (a run of <0xXX> tokens becomes
 *                its bytes when they are valid UTF-8, else one U+FFFD per
 *                token of the run), Fuse (join), Strip (remove up to `start`
 *                leading and `stop` trailing copies of one character from each
 *                token), Metaspace (the replacement becomes ' ', and is dropped
 *                in the first token unless prepend_scheme is "never"),
 *                Sequence of those. Added tokens go through the decoder too;
 *                with no decoder the tokens are joined with ' '.
 *
 * The Metaspace pre-tokenizer and the BPE model (character symbols, byte
 * fallback, fuse_unk, ignore_merges) live in bpe.c beside the byte-level code.
 * Anything else gives GN_ERR_UNSUPPORTED naming the field.
 */
#include "tok_internal.h"
#include "core/buf.h" // gn_buf

#include <stdio.h>   // snprintf
#include <stdlib.h>  // free
#include <string.h>  // memcpy, strcmp

#define PCRE2_CODE_UNIT_WIDTH 8
#include <cjson/cJSON.h>  // cJSON_GetObjectItemCaseSensitive
#include <pcre2.h>        // pcre2_match

static const char *jstr(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

// Growable byte string.
// Length of the one UTF-8 character of s (1..4); 0 when s is not exactly one character.
static int one_char(const char *s) {
    size_t n = strlen(s);
    int L = tok_utf8_valid_len((const unsigned char *)s, n);
    return L > 0 && (size_t)L == n ? L : 0;
}

// ----------------------------------------------------------------------------
// normalizer

// {"String": "..."} or {"Regex": "..."}: 1 literal, 2 regex, 0 neither.
static int read_pattern(const cJSON *o, const char **pat) {
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(o, "pattern");
    if ((*pat = p ? jstr(p, "String") : NULL) != NULL) return 1;
    if ((*pat = p ? jstr(p, "Regex") : NULL) != NULL) return 2;
    return 0;
}

gn_status tok_hf_read_normalizer(gn_tokenizer *t, const void *node, const char *path, const char *where) {
    const cJSON *n = node;
    if (!n || cJSON_IsNull(n)) return GN_OK;
    const char *type = jstr(n, "type");
    if (!type) return gn_err(GN_ERR_FORMAT, "%s: %s: missing \"type\", expected a normalizer object", path, where);
    char sub[96];
    if (strcmp(type, "Sequence") == 0) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(n, "normalizers"), *it;
        if (!cJSON_IsArray(list)) return gn_err(GN_ERR_FORMAT, "%s: %s.normalizers: expected an array", path, where);
        int i = 0;
        cJSON_ArrayForEach(it, list) {
            snprintf(sub, sizeof sub, "%s.normalizers[%d]", where, i++);
            gn_status st = tok_hf_read_normalizer(t, it, path, sub);
            if (st != GN_OK) return st;
        }
        return GN_OK;
    }
    if (strcmp(type, "Prepend") == 0 || strcmp(type, "Replace") == 0) {
        tok_norm_step s = {0};
        const char *content = jstr(n, strcmp(type, "Prepend") == 0 ? "prepend" : "content");
        if (!content)
            return gn_err(GN_ERR_FORMAT, "%s: %s.%s: missing, expected a string", path, where,
                          strcmp(type, "Prepend") == 0 ? "prepend" : "content");
        if (strcmp(type, "Prepend") == 0) {
            s.op = NORM_PREPEND;
        } else {
            const char *pat;
            int kind = read_pattern(n, &pat);
            if (!kind)
                return gn_err(GN_ERR_FORMAT, "%s: %s.pattern: expected {\"String\": ...} or {\"Regex\": ...}",
                              path, where);
            if (kind == 1 && !*pat)
                return gn_err(GN_ERR_FORMAT, "%s: %s.pattern: empty string, expected text to replace", path, where);
            s.op = kind == 1 ? NORM_REPLACE : NORM_REPLACE_RE;
            s.pat = gn_strdup(pat);
            s.npat = strlen(pat);
            if (kind == 2) {
                snprintf(sub, sizeof sub, "%s.pattern", where);
                gn_status st = tok_compile_re(&s.re, pat, s.npat, 0, path, sub);
                if (st != GN_OK) { free(s.pat); return st; }
            }
        }
        s.content = gn_strdup(content);
        s.ncontent = strlen(content);
        t->norm = gn_realloc(t->norm, (size_t)(t->n_norm + 1) * sizeof *t->norm);
        t->norm[t->n_norm++] = s;
        return GN_OK;
    }
    return gn_err(GN_ERR_UNSUPPORTED, "%s: %s: normalizer type '%s' is not supported, expected Prepend, Replace "
                  "or a Sequence of them", path, where, type);
}

// Replaces every match of step s in in[0..n) into out.
static void replace_all(const tok_norm_step *s, const char *in, size_t n, gn_buf *out) {
    size_t pos = 0;
    if (s->op == NORM_REPLACE) {
        size_t i = 0;
        while (i + s->npat <= n) {
            if (memcmp(in + i, s->pat, s->npat) == 0) {
                gn_buf_put(out, in + pos, i - pos);
                gn_buf_put(out, s->content, s->ncontent);
                i += s->npat;
                pos = i;
            } else {
                i++;
            }
        }
        gn_buf_put(out, in + pos, n - pos);
        return;
    }
    pcre2_match_data *md = pcre2_match_data_create(1, NULL);
    GN_ASSERT(md != NULL);
    size_t at = 0;
    while (at <= n) {
        int rc = pcre2_match((pcre2_code *)s->re, (PCRE2_SPTR)in, n, at, 0, md, NULL);
        if (rc < 0) break;
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t ms = ov[0], me = ov[1];
        gn_buf_put(out, in + pos, ms - pos);
        gn_buf_put(out, s->content, s->ncontent);
        pos = me;
        if (me > ms) { at = me; continue; }
        if (ms >= n) break;  // empty match: step one character
        int L = tok_utf8_valid_len((const unsigned char *)in + ms, n - ms);
        at = ms + (size_t)(L ? L : 1);
        gn_buf_put(out, in + pos, at - pos);
        pos = at;
    }
    pcre2_match_data_free(md);
    if (pos < n) gn_buf_put(out, in + pos, n - pos);
}

char *tok_hf_normalize(const gn_tokenizer *t, const char *s, size_t n, size_t *m) {
    gn_buf cur = {0};
    gn_buf_put(&cur, s, n);
    for (int k = 0; k < t->n_norm; k++) {
        const tok_norm_step *st = &t->norm[k];
        gn_buf nxt = {0};
        if (st->op == NORM_PREPEND) {
            if (cur.len) gn_buf_put(&nxt, st->content, st->ncontent);
            gn_buf_put(&nxt, cur.buf, cur.len);
        } else {
            replace_all(st, cur.buf, cur.len, &nxt);
        }
        if (!nxt.buf) gn_buf_put(&nxt, "", 0);
        free(cur.buf);
        cur = nxt;
    }
    *m = cur.len;
    return cur.buf;
}

// ----------------------------------------------------------------------------
// decoder

// PREPEND_* from prepend_scheme, or from the older add_prefix_space flag.
static int read_prepend(const cJSON *o, int *out, const char *path, const char *where) {
    const char *ps = jstr(o, "prepend_scheme");
    if (ps) {
        if (!strcmp(ps, "always")) *out = PREPEND_ALWAYS;
        else if (!strcmp(ps, "first")) *out = PREPEND_FIRST;
        else if (!strcmp(ps, "never")) *out = PREPEND_NEVER;
        else return gn_err(GN_ERR_FORMAT, "%s: %s.prepend_scheme: '%s', expected always, first or never",
                           path, where, ps);
        return GN_OK;
    }
    const cJSON *aps = cJSON_GetObjectItemCaseSensitive(o, "add_prefix_space");
    *out = cJSON_IsFalse(aps) ? PREPEND_NEVER : PREPEND_ALWAYS;
    return GN_OK;
}

gn_status tok_metaspace_params(const void *node, char *rep, int *rep_len, int *prepend, int *split,
                               const char *path, const char *where) {
    const cJSON *o = node;
    const char *r = jstr(o, "replacement");
    if (!r) r = "\xE2\x96\x81";
    int L = one_char(r);
    if (!L) return gn_err(GN_ERR_FORMAT, "%s: %s.replacement: '%s', expected one character", path, where, r);
    memcpy(rep, r, (size_t)L);
    *rep_len = L;
    const cJSON *sp = cJSON_GetObjectItemCaseSensitive(o, "split");
    *split = !cJSON_IsFalse(sp);
    return read_prepend(o, prepend, path, where);
}

gn_status tok_hf_read_decoder(gn_tokenizer *t, const void *node, const char *path, const char *where) {
    const cJSON *d = node;
    if (!d || cJSON_IsNull(d)) return GN_OK;
    t->has_decoder = 1;
    const char *type = jstr(d, "type");
    if (!type) return gn_err(GN_ERR_FORMAT, "%s: %s: missing \"type\", expected a decoder object", path, where);
    char sub[96];
    if (strcmp(type, "Sequence") == 0) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(d, "decoders"), *it;
        if (!cJSON_IsArray(list)) return gn_err(GN_ERR_FORMAT, "%s: %s.decoders: expected an array", path, where);
        int i = 0;
        cJSON_ArrayForEach(it, list) {
            snprintf(sub, sizeof sub, "%s.decoders[%d]", where, i++);
            gn_status st = tok_hf_read_decoder(t, it, path, sub);
            if (st != GN_OK) return st;
        }
        return GN_OK;
    }
    tok_dec_step s = {0};
    if (strcmp(type, "Replace") == 0) {
        const char *pat, *content = jstr(d, "content");
        int kind = read_pattern(d, &pat);
        if (kind != 1 || !*pat || !content)
            return gn_err(GN_ERR_UNSUPPORTED, "%s: %s: Replace decoder with %s, expected {\"String\": text} "
                          "and a content string", path, where, kind == 2 ? "a Regex pattern" : "no usable pattern");
        s.op = DEC_REPLACE;
        s.pat = gn_strdup(pat);
        s.npat = strlen(pat);
        s.content = gn_strdup(content);
        s.ncontent = strlen(content);
    } else if (strcmp(type, "ByteFallback") == 0) {
        s.op = DEC_BYTE_FALLBACK;
    } else if (strcmp(type, "Fuse") == 0) {
        s.op = DEC_FUSE;
    } else if (strcmp(type, "Strip") == 0) {
        const char *c = jstr(d, "content");
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(d, "start"), *b = cJSON_GetObjectItemCaseSensitive(d, "stop");
        if (!c || !one_char(c) || !cJSON_IsNumber(a) || !cJSON_IsNumber(b) || a->valuedouble < 0 ||
            b->valuedouble < 0 || a->valuedouble > 1e6 || b->valuedouble > 1e6)
            return gn_err(GN_ERR_FORMAT, "%s: %s: Strip decoder, expected one-character \"content\" and "
                          "counts \"start\", \"stop\"", path, where);
        s.op = DEC_STRIP;
        s.content = gn_strdup(c);
        s.ncontent = strlen(c);
        s.start = (int)a->valuedouble;
        s.stop = (int)b->valuedouble;
    } else if (strcmp(type, "Metaspace") == 0) {
        char rep[8];
        int rl, split;
        s.op = DEC_METASPACE;
        gn_status st = tok_metaspace_params(d, rep, &rl, &s.prepend, &split, path, where);
        if (st != GN_OK) return st;
        s.content = gn_malloc((size_t)rl + 1);
        memcpy(s.content, rep, (size_t)rl);
        s.content[rl] = 0;
        s.ncontent = (size_t)rl;
    } else {
        return gn_err(GN_ERR_UNSUPPORTED, "%s: %s: decoder type '%s' is not supported for this tokenizer, "
                      "expected Replace, ByteFallback, Fuse, Strip, Metaspace or a Sequence of them",
                      path, where, type);
    }
    t->dec = gn_realloc(t->dec, (size_t)(t->n_dec + 1) * sizeof *t->dec);
    t->dec[t->n_dec++] = s;
    return GN_OK;
}

void tok_hf_free(gn_tokenizer *t) {
    for (int i = 0; i < t->n_norm; i++) {
        free(t->norm[i].pat);
        free(t->norm[i].content);
        if (t->norm[i].re) pcre2_code_free((pcre2_code *)t->norm[i].re);
    }
    free(t->norm);
    for (int i = 0; i < t->n_dec; i++) {
        free(t->dec[i].pat);
        free(t->dec[i].content);
    }
    free(t->dec);
    free(t->added);
    for (int i = 0; i < t->n_nadd; i++) free(t->nadd_text[i]);
    free(t->nadd_text);
    free(t->nadd_len);
    free(t->nadd_id);
}

static tok_dec_step dec_new(int op, const char *pat, const char *content) {
    tok_dec_step s = {0};
    s.op = op;
    if (pat) { s.pat = gn_strdup(pat); s.npat = strlen(pat); }
    if (content) { s.content = gn_strdup(content); s.ncontent = strlen(content); }
    return s;
}

void tok_hf_llama_class(gn_tokenizer *t) {
    int aps = t->cfg_add_prefix_space != 0;  // default true
    int legacy = t->cfg_legacy == 1;         // default false
    for (int i = 0; i < t->n_norm; i++) {
        free(t->norm[i].pat);
        free(t->norm[i].content);
        if (t->norm[i].re) pcre2_code_free((pcre2_code *)t->norm[i].re);
    }
    t->n_norm = 0;
    for (int i = 0; i < t->n_nadd; i++) free(t->nadd_text[i]);
    t->n_nadd = 0;
    for (int i = 0; i < t->n_pre; i++)
        if (t->pre[i].re) pcre2_code_free((pcre2_code *)t->pre[i].re);
    t->pre = gn_realloc(t->pre, sizeof *t->pre);
    t->n_pre = 1;
    memset(t->pre, 0, sizeof *t->pre);
    t->pre[0].metaspace = 1;
    memcpy(t->pre[0].rep, "\xE2\x96\x81", 3);
    t->pre[0].rep_len = 3;
    t->pre[0].prepend = !aps ? PREPEND_NEVER : legacy ? PREPEND_ALWAYS : PREPEND_FIRST;
    for (int i = 0; i < t->n_dec; i++) {
        free(t->dec[i].pat);
        free(t->dec[i].content);
    }
    t->dec = gn_realloc(t->dec, 4 * sizeof *t->dec);
    t->n_dec = 0;
    t->dec[t->n_dec++] = dec_new(DEC_REPLACE, "\xE2\x96\x81", " ");
    t->dec[t->n_dec++] = dec_new(DEC_BYTE_FALLBACK, NULL, NULL);
    t->dec[t->n_dec++] = dec_new(DEC_FUSE, NULL, NULL);
    if (aps) {
        t->dec[t->n_dec] = dec_new(DEC_STRIP, NULL, " ");
        t->dec[t->n_dec].start = 1;
        t->n_dec++;
    }
    t->has_decoder = 1;
    t->add_dummy_prefix = aps;
}

static int all_valid_utf8(const char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        int L = tok_utf8_valid_len((const unsigned char *)s + i, n - i);
        if (!L) return 0;
        i += (size_t)L;
    }
    return 1;
}

typedef struct { gn_buf *v; int n, cap; } strs;

static void strs_push(strs *a, gn_buf s) {
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 16;
        a->v = gn_realloc(a->v, (size_t)a->cap * sizeof *a->v);
    }
    a->v[a->n++] = s;
}

static void strs_free(strs *a) {
    for (int i = 0; i < a->n; i++) free(a->v[i].buf);
    free(a->v);
}

static void dec_step(const tok_dec_step *s, strs *toks) {
    strs out = {0};
    if (s->op == DEC_FUSE) {
        gn_buf all = {0};
        gn_buf_put(&all, "", 0);
        for (int i = 0; i < toks->n; i++) gn_buf_put(&all, toks->v[i].buf, toks->v[i].len);
        strs_push(&out, all);
    } else if (s->op == DEC_BYTE_FALLBACK) {
        gn_buf bytes = {0};
        int nb = 0;
        for (int i = 0; i <= toks->n; i++) {
            int b = i < toks->n ? tok_byte_piece(toks->v[i].buf, toks->v[i].len) : -1;
            if (b >= 0) { char c = (char)b; gn_buf_put(&bytes, &c, 1); nb++; continue; }
            if (nb) {
                gn_buf r = {0};
                if (all_valid_utf8(bytes.buf, bytes.len)) gn_buf_put(&r, bytes.buf, bytes.len);
                else for (int k = 0; k < nb; k++) { gn_buf x = {0}; gn_buf_put(&x, "\xEF\xBF\xBD", 3); strs_push(&out, x); }
                if (r.buf) strs_push(&out, r);
                bytes.len = 0;
                nb = 0;
            }
            if (i < toks->n) {
                gn_buf x = {0};
                gn_buf_put(&x, toks->v[i].buf, toks->v[i].len);
                strs_push(&out, x);
            }
        }
        free(bytes.buf);
    } else {
        for (int i = 0; i < toks->n; i++) {
            const char *p = toks->v[i].buf;
            size_t n = toks->v[i].len;
            gn_buf r = {0};
            gn_buf_put(&r, "", 0);
            if (s->op == DEC_REPLACE || s->op == DEC_METASPACE) {
                const char *pat = s->op == DEC_REPLACE ? s->pat : s->content;
                size_t np = s->op == DEC_REPLACE ? s->npat : s->ncontent, pos = 0, j = 0;
                int drop = s->op == DEC_METASPACE && i == 0 && s->prepend != PREPEND_NEVER;
                while (j + np <= n) {
                    if (memcmp(p + j, pat, np) != 0) { j++; continue; }
                    gn_buf_put(&r, p + pos, j - pos);
                    if (s->op == DEC_REPLACE) gn_buf_put(&r, s->content, s->ncontent);
                    else if (!drop) gn_buf_put(&r, " ", 1);
                    j += np;
                    pos = j;
                }
                gn_buf_put(&r, p + pos, n - pos);
            } else {  // DEC_STRIP
                size_t a = 0, b = n, c = s->ncontent;
                for (int k = 0; k < s->start && a + c <= b && memcmp(p + a, s->content, c) == 0; k++) a += c;
                for (int k = 0; k < s->stop && b >= a + c && memcmp(p + b - c, s->content, c) == 0; k++) b -= c;
                gn_buf_put(&r, p + a, b - a);
            }
            strs_push(&out, r);
        }
    }
    strs_free(toks);
    *toks = out;
}

char *tok_hf_decode(const gn_tokenizer *t, const int32_t *ids, int n, int skip_special, size_t *len) {
    strs toks = {0};
    for (int i = 0; i < n; i++) {
        if (skip_special && t->type[ids[i]] == TOK_CONTROL) continue;
        gn_buf s = {0};
        const char *p = tok_piece(t, ids[i]);
        size_t np = t->len[ids[i]];
        for (int k = 0; k < t->n_nadd; k++)  // HF keeps a normalized added token's normalized text
            if (t->nadd_id[k] == ids[i]) { p = t->nadd_text[k]; np = t->nadd_len[k]; break; }
        gn_buf_put(&s, p, np);
        strs_push(&toks, s);
    }
    if (t->has_decoder) {
        for (int k = 0; k < t->n_dec; k++) dec_step(&t->dec[k], &toks);
    }
    gn_buf all = {0};
    gn_buf_put(&all, "", 0);
    for (int i = 0; i < toks.n; i++) {
        if (i && !t->has_decoder) gn_buf_put(&all, " ", 1);
        gn_buf_put(&all, toks.v[i].buf, toks.v[i].len);
    }
    strs_free(&toks);
    *len = all.len;
    return all.buf;
}
