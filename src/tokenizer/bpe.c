/*
 * bpe.c — BPE from tokenizer.json and GGUF "gpt2" vocabularies: byte-level BPE
 * (GPT-2 style: GPT-2, SmolLM2, LLaMA 3) and BPE over characters with byte
 * fallback (SentencePiece-style files: LLaMA-1/2 re-saves, TinyLlama, Mistral).
 * Holds the GPT-2 byte<->unicode table, the pre-tokenizers (regex steps with
 * PCRE2, UTF + UCP, JIT when available; Metaspace), rank-ordered merges, and
 * loading from tokenizer.json (+ tokenizer_config.json / chat_template.jinja
 * beside it). Normalizers and the decoder chain are in hf.c. GGUF loading
 * lives in tok_gguf.c and uses tok_bpe_set_pre_name for tokenizer.ggml.pre.
 *
 * Encoding one text chunk (added tokens are split off and the chunk normalized
 * by tokenizer.c):
 *   1. pre-tokenize: each step splits every current piece; a step is a regex
 *      with an HF split behaviour (Isolated, Removed, MergedWithPrevious,
 *      MergedWithNext, Contiguous; optional invert). ByteLevel(add_prefix_space)
 *      prepends ' ' to each piece that lacks one; ByteLevel(use_regex) is the
 *      GPT-2 regex, Isolated. Metaspace turns ' ' into its replacement,
 *      prepends one (always, or "first": only to the piece that starts the
 *      text) unless the piece starts with it, and with split cuts before every
 *      replacement. Bytes that are not valid UTF-8 never match a regex
 *      (PCRE2_MATCH_INVALID_UTF), so they end up in pieces of their own.
 *   2. symbols: byte-level, one per byte (the vocab id of the GPT-2 char for
 *      that byte); otherwise one per character, a character missing from the
 *      vocab becoming its <0xXX> byte tokens (byte_fallback) or <unk> (a run
 *      of them one <unk> with fuse_unk). With ignore_merges a piece that is a
 *      whole vocab entry is emitted as is.
 *   3. merges: repeatedly merge the adjacent pair with the lowest merge rank,
 *      leftmost on ties (binary heap; stale entries skipped when popped).
 *
 * Limits: models other than BPE, continuing_subword_prefix/end_of_word_suffix,
 * pre-tokenizers other than the above and a normalizer on a byte-level file
 * give GN_ERR_UNSUPPORTED naming the field.
 */
#include "tok_internal.h"
#include "../core/buf.h" // gn_buf

#include <pthread.h> // pthread_once
#include <stdio.h>   // snprintf
#include <stdlib.h>  // free
#include <string.h>  // memcpy, strcmp

#define PCRE2_CODE_UNIT_WIDTH 8
#include <cjson/cJSON.h>  // cJSON_ParseWithLength, cJSON_GetObjectItemCaseSensitive
#include <pcre2.h>        // pcre2_compile, pcre2_match, pcre2_jit_compile

static int in_list(const char *const *list, const char *s);

// ----------------------------------------------------------------------------
// GPT-2 byte <-> unicode table
//
// Printable bytes '!'..'~', 0xA1..0xAC and 0xAE..0xFF stand for themselves;
// the other 68 bytes map, in increasing order, to U+0100, U+0101, ...

static uint16_t byte_to_cp[256];
static int16_t cp_to_byte[512];  // -1 when the code point is not a byte char
static pthread_once_t table_once = PTHREAD_ONCE_INIT;

static void byte_table_build(void) {
    for (int i = 0; i < 512; i++) cp_to_byte[i] = -1;
    int next = 256;
    for (int b = 0; b < 256; b++) {
        int keep = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        byte_to_cp[b] = (uint16_t)(keep ? b : next++);
        cp_to_byte[byte_to_cp[b]] = (int16_t)b;
    }
}

static void byte_table_init(void) { pthread_once(&table_once, byte_table_build); }

// UTF-8 of the byte's char into d (1 or 2 bytes); returns the length.
static int byte_char(unsigned char b, char *d) {
    unsigned cp = byte_to_cp[b];
    if (cp < 0x80) { d[0] = (char)cp; return 1; }
    d[0] = (char)(0xC0 | (cp >> 6));
    d[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
}

size_t tok_bpe_unmap(const char *piece, size_t n, char *dst) {
    byte_table_init();
    const unsigned char *u = (const unsigned char *)piece;
    size_t i = 0, m = 0;
    while (i < n) {
        int L = tok_utf8_valid_len(u + i, n - i);
        if (L == 1 || L == 2) {
            unsigned cp = L == 1 ? u[i] : ((unsigned)(u[i] & 0x1F) << 6) | (u[i + 1] & 0x3F);
            if (cp < 512 && cp_to_byte[cp] >= 0) { dst[m++] = (char)cp_to_byte[cp]; i += (size_t)L; continue; }
        }
        if (L == 0) L = 1;
        memcpy(dst + m, piece + i, (size_t)L);  // not a byte char: copy as is
        m += (size_t)L;
        i += (size_t)L;
    }
    return m;
}

void tok_bpe_init_byte_chars(gn_tokenizer *t) {
    byte_table_init();
    for (int b = 0; b < 256; b++) {
        char d[2];
        int L = byte_char((unsigned char)b, d);
        t->byte_char_tok[b] = tok_lookup(t, d, (size_t)L);
    }
}

// ----------------------------------------------------------------------------
// merges: (left id, right id) -> (rank, merged id)

static uint64_t mix64(uint64_t x) {
    x ^= x >> 33; x *= 0xff51afd7ed558ccdull; x ^= x >> 33; x *= 0xc4ceb9fe1a85ec53ull; x ^= x >> 33;
    return x;
}

void tok_bpe_init_merges(gn_tokenizer *t, uint32_t n_hint) {
    tok_pair_map *m = &t->merges;
    free(m->key); free(m->rank); free(m->result);
    uint32_t cap = 64;
    while (cap < n_hint * 2u + 64u) cap *= 2;
    m->key = gn_malloc(cap * sizeof *m->key);
    m->rank = gn_malloc(cap * sizeof *m->rank);
    m->result = gn_malloc(cap * sizeof *m->result);
    for (uint32_t i = 0; i < cap; i++) m->key[i] = UINT64_MAX;
    m->mask = cap - 1;
    m->n = 0;
}

static void pair_grow(tok_pair_map *m) {
    tok_pair_map old = *m;
    uint32_t cap = (old.mask + 1) * 2;
    m->key = gn_malloc(cap * sizeof *m->key);
    m->rank = gn_malloc(cap * sizeof *m->rank);
    m->result = gn_malloc(cap * sizeof *m->result);
    for (uint32_t i = 0; i < cap; i++) m->key[i] = UINT64_MAX;
    m->mask = cap - 1;
    for (uint32_t i = 0; i <= old.mask; i++) {
        if (old.key[i] == UINT64_MAX) continue;
        uint32_t j = (uint32_t)mix64(old.key[i]) & m->mask;
        while (m->key[j] != UINT64_MAX) j = (j + 1) & m->mask;
        m->key[j] = old.key[i];
        m->rank[j] = old.rank[i];
        m->result[j] = old.result[i];
    }
    free(old.key); free(old.rank); free(old.result);
}

// Returns the slot of key, or of the empty slot where it would go.
static uint32_t pair_slot(const tok_pair_map *m, uint64_t key) {
    uint32_t j = (uint32_t)mix64(key) & m->mask;
    while (m->key[j] != UINT64_MAX && m->key[j] != key) j = (j + 1) & m->mask;
    return j;
}

int tok_bpe_add_merge(gn_tokenizer *t, const char *a, size_t na, const char *b, size_t nb, int32_t rank) {
    int32_t ia = tok_lookup(t, a, na), ib = tok_lookup(t, b, nb);
    if (ia < 0 || ib < 0) return 0;
    char tmp[512];
    char *ab = na + nb <= sizeof tmp ? tmp : gn_malloc(na + nb);
    memcpy(ab, a, na);
    memcpy(ab + na, b, nb);
    int32_t r = tok_lookup(t, ab, na + nb);
    if (ab != tmp) free(ab);
    if (r < 0) return 0;
    tok_pair_map *m = &t->merges;
    if ((m->n + 1) * 2 > m->mask + 1) pair_grow(m);
    uint64_t key = (uint64_t)(uint32_t)ia << 32 | (uint32_t)ib;
    uint32_t j = pair_slot(m, key);
    if (m->key[j] == key) return 1;  // duplicate merge: the first (lowest rank) wins
    m->key[j] = key;
    m->rank[j] = rank;
    m->result[j] = r;
    m->n++;
    return 1;
}

static int pair_find(const tok_pair_map *m, int32_t a, int32_t b, int32_t *rank, int32_t *result) {
    if (!m->key) return 0;
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    uint32_t j = pair_slot(m, key);
    if (m->key[j] != key) return 0;
    *rank = m->rank[j];
    *result = m->result[j];
    return 1;
}

// ----------------------------------------------------------------------------
// pre-tokenizer

// HF ByteLevel's regex (GPT-2); the trailing \s+ only matters at the end.
static const char RE_GPT2[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
// LLaMA 3 Split pattern as in its tokenizer.json.
static const char RE_LLAMA3[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char RE_QWEN2[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char RE_BLOOM[] = " ?[^(\\s|.,!?…。，、।۔،)]+";

// Compiles pattern; literal when is_literal (HF Split with {"String": ...}).
// HF's regex engine (Oniguruma) takes \s as Unicode White_Space; PCRE2's \s
// also matches U+180E and its tables may differ, so \s and \S are spelled out
// as that exact set (inside a class \S is left alone).
#define WS_SET "\\t\\n\\x{0B}\\f\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}"
gn_status tok_compile_re(void **out, const char *pat, size_t n, int is_literal, const char *path, const char *where) {
    char *fixed = NULL;
    size_t m = 0;
    if (!is_literal) {
        const size_t W = sizeof WS_SET - 1;
        fixed = gn_malloc(n * (W + 4) + 1);
        int in_class = 0;
        for (size_t i = 0; i < n; i++) {
            char c = pat[i];
            if (c == '\\' && i + 1 < n) {
                char d = pat[i + 1];
                if (d == 's' && in_class) { memcpy(fixed + m, WS_SET, W); m += W; i++; continue; }
                if (d == 's' || (d == 'S' && !in_class)) {
                    fixed[m++] = '[';
                    if (d == 'S') fixed[m++] = '^';
                    memcpy(fixed + m, WS_SET, W);
                    m += W;
                    fixed[m++] = ']';
                    i++;
                    continue;
                }
                fixed[m++] = c;
                fixed[m++] = d;
                i++;
                continue;
            }
            if (c == '[' && !in_class) {
                in_class = 1;
                fixed[m++] = c;
                // a ']' or '^]' right after '[' is literal
                if (i + 1 < n && pat[i + 1] == '^') { fixed[m++] = '^'; i++; }
                if (i + 1 < n && pat[i + 1] == ']') { fixed[m++] = ']'; i++; }
                continue;
            }
            if (c == ']' && in_class) in_class = 0;
            fixed[m++] = c;
        }
        fixed[m] = 0;
    }
    int err;
    PCRE2_SIZE erroff;
    uint32_t opts = PCRE2_UTF | PCRE2_MATCH_INVALID_UTF | (is_literal ? PCRE2_LITERAL : PCRE2_UCP);
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)(is_literal ? pat : fixed), is_literal ? n : m, opts,
                                   &err, &erroff, NULL);
    free(fixed);
    if (!re) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(err, msg, sizeof msg);
        return gn_err(GN_ERR_FORMAT, "%s: %s: regex does not compile at pattern offset %zu: %s, "
                      "expected a valid regular expression", path, where, (size_t)erroff, (char *)msg);
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);  // best effort: falls back to the interpreter
    *out = re;
    return GN_OK;
}

static tok_pre_step *add_step(gn_tokenizer *t) {
    t->pre = gn_realloc(t->pre, (size_t)(t->n_pre + 1) * sizeof *t->pre);
    tok_pre_step *s = &t->pre[t->n_pre++];
    memset(s, 0, sizeof *s);
    s->behavior = SPLIT_ISOLATED;
    return s;
}

static gn_status add_regex_step(gn_tokenizer *t, const char *pat, const char *path, const char *where) {
    tok_pre_step *s = add_step(t);
    return tok_compile_re(&s->re, pat, strlen(pat), 0, path, where);
}

gn_status tok_bpe_set_pre_name(gn_tokenizer *t, const char *pre, const char *path) {
    // Names and their regex lists as in llama.cpp's llama-vocab.cpp
    // (tokenizer.ggml.pre); the regexes are the ones of the models' tokenizer.json.
    static const char *const llama3[] = {"llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral",
                                         "midm-2.0", "lfm2", "dbrx", "smaug-bpe", "chatglm-bpe", "glm4", NULL};
    static const char *const gpt2[] = {"gpt-2", "gpt2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v2-es",
                                       "jina-v2-de", "a.x-4.0", "mellum", "jina-v1-en", "jina-v2-code",
                                       "roberta-bpe", "mpt", "olmo", "jais", "trillion", "granite-docling",
                                       "exaone4", NULL};
    static const char *const digits_gpt2[] = {"smollm", "starcoder", "refact", "command-r", "codeshell",
                                              "exaone", "minerva-7b", NULL};
    static const char *const qwen2[] = {"qwen2", "qwen2.5", "qwen-2.5", "deepseek-r1-qwen", "kormo", "stablelm2",
                                        "hunyuan", "megrez", NULL};
    static const char *const bloom[] = {"poro-chat", "bloom", "gpt3-finnish", NULL};
    #define IN(list) in_list(list, pre)
    const char *where = "tokenizer.ggml.pre";
    gn_status st = GN_OK;
    t->byte_level = 1;
    if (pre && IN(llama3)) {
        st = add_regex_step(t, RE_LLAMA3, path, where);
        t->ignore_merges = 1;
        t->add_bos = 1;
    } else if (pre && IN(gpt2)) {
        st = add_regex_step(t, RE_GPT2, path, where);
    } else if (pre && IN(digits_gpt2)) {
        if ((st = add_regex_step(t, "\\p{N}", path, where)) == GN_OK) st = add_regex_step(t, RE_GPT2, path, where);
    } else if (pre && IN(qwen2)) {
        st = add_regex_step(t, RE_QWEN2, path, where);
    } else if (pre && IN(bloom)) {
        st = add_regex_step(t, RE_BLOOM, path, where);
    } else if (pre && strcmp(pre, "viking") == 0) {
        if ((st = add_regex_step(t, RE_BLOOM, path, where)) == GN_OK) st = add_regex_step(t, "\\p{N}", path, where);
    } else if (pre && strcmp(pre, "falcon") == 0) {
        if ((st = add_regex_step(t, "[\\p{P}\\$\\+<=>\\^~\\|`]+", path, where)) == GN_OK &&
            (st = add_regex_step(t, RE_GPT2, path, where)) == GN_OK)
            st = add_regex_step(t, "[0-9][0-9][0-9]", path, where);
    } else {
        if (pre && strcmp(pre, "default") != 0)
            gn_log(GN_LOG_WARN, "%s: tokenizer.ggml.pre '%s' is not known; using llama.cpp's default "
                   "pre-tokenizer (token ids may differ from the model's own tokenizer)", path, pre);
        // llama.cpp's "default" list
        if ((st = add_regex_step(t, "[\\p{P}\\$\\+<=>\\^~\\|]+", path, where)) == GN_OK &&
            (st = add_regex_step(t, RE_GPT2, path, where)) == GN_OK &&
            (st = add_regex_step(t, "\\p{N}+", path, where)) == GN_OK)
            st = add_regex_step(t, "[0-9][0-9][0-9]", path, where);
    }
    #undef IN
    return st;
}

void tok_bpe_free(gn_tokenizer *t) {
    for (int i = 0; i < t->n_pre; i++) pcre2_code_free((pcre2_code *)t->pre[i].re);
    free(t->pre);
    free(t->merges.key);
    free(t->merges.rank);
    free(t->merges.result);
}

// Working text: pieces are (off, len) into buf, which only grows.
typedef struct { uint32_t off, len; int first; } span;  // first: starts the chunk's text
typedef struct { span *v; size_t n, cap; } spans;

static void spans_push(spans *a, uint32_t off, uint32_t len) {
    if (len == 0) return;
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 64;
        a->v = gn_realloc(a->v, a->cap * sizeof *a->v);
    }
    a->v[a->n++] = (span){off, len, 0};
}

typedef struct { uint32_t s, e; int match; } seg;
typedef struct { seg *v; size_t n, cap; } segs;

static void segs_push(segs *a, uint32_t s, uint32_t e, int match) {
    if (e <= s) return;
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 64;
        a->v = gn_realloc(a->v, a->cap * sizeof *a->v);
    }
    a->v[a->n++] = (seg){s, e, match};
}

// Runs re over subject[0..n) and lists matches and gaps in order.
static void find_matches(pcre2_code *re, const char *subject, size_t n, pcre2_match_data *md, segs *out) {
    size_t pos = 0, gap = 0;
    uint32_t opts = 0;
    while (pos <= n) {
        int rc = pcre2_match(re, (PCRE2_SPTR)subject, n, pos, opts, md, NULL);
        if (rc < 0 && rc != PCRE2_ERROR_NOMATCH)  // e.g. JIT stack limit: retry interpreted
            rc = pcre2_match(re, (PCRE2_SPTR)subject, n, pos, opts | PCRE2_NO_JIT, md, NULL);
        if (rc < 0) break;
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t ms = ov[0], me = ov[1];
        if (me <= ms) {  // empty match: step one character and look again
            if (ms >= n) break;
            int L = tok_utf8_valid_len((const unsigned char *)subject + ms, n - ms);
            pos = ms + (size_t)(L ? L : 1);
            continue;
        }
        segs_push(out, (uint32_t)gap, (uint32_t)ms, 0);
        segs_push(out, (uint32_t)ms, (uint32_t)me, 1);
        gap = pos = me;
    }
    segs_push(out, (uint32_t)gap, (uint32_t)n, 0);
}

// HF Metaspace on piece sp: ' ' -> rep, rep prepended (always, or only to the
// piece that starts the text for "first") unless the piece starts with it,
// then split before every rep when ms_split (MergedWithNext).
static void metaspace_piece(const tok_pre_step *st, gn_buf *b, span sp, spans *out) {
    size_t R = (size_t)st->rep_len;
    gn_buf_reserve(b, (size_t)sp.len * R + R);  // b->buf may move here, not during the copy
    uint32_t at = (uint32_t)b->len;
    char *d = b->buf + at;
    const char *src = b->buf + sp.off;
    size_t m = 0;
    int starts = sp.len && (src[0] == ' ' || (sp.len >= R && memcmp(src, st->rep, R) == 0));
    if (sp.len && !starts && (st->prepend == PREPEND_ALWAYS || (st->prepend == PREPEND_FIRST && sp.first))) {
        memcpy(d, st->rep, R);
        m = R;
    }
    for (uint32_t i = 0; i < sp.len; i++) {
        if (src[i] == ' ') { memcpy(d + m, st->rep, R); m += R; }
        else d[m++] = src[i];
    }
    b->len += m;
    size_t n0 = out->n, a = 0;
    if (st->ms_split)
        for (size_t i = 1; i + R <= m; i++)
            if (memcmp(d + i, st->rep, R) == 0) { spans_push(out, at + (uint32_t)a, (uint32_t)(i - a)); a = i; }
    spans_push(out, at + (uint32_t)a, (uint32_t)(m - a));
    if (out->n > n0) out->v[n0].first = sp.first;
}

// Applies one split step to piece sp of b, appending the resulting pieces.
static void split_piece(const tok_pre_step *st, gn_buf *b, span sp, pcre2_match_data *md, segs *tmp, spans *out) {
    if (st->metaspace) { metaspace_piece(st, b, sp, out); return; }
    size_t n_in = out->n;
    if (st->prefix_space && b->buf[sp.off] != ' ') {
        gn_buf_reserve(b, (size_t)sp.len + 1);  // b->buf may move here, not during the copy
        uint32_t at = (uint32_t)b->len;
        b->buf[at] = ' ';
        memcpy(b->buf + at + 1, b->buf + sp.off, sp.len);
        b->len += (size_t)sp.len + 1;
        sp = (span){at, sp.len + 1, sp.first};
    }
    if (!st->re) {
        spans_push(out, sp.off, sp.len);
        if (out->n > n_in) out->v[n_in].first = sp.first;
        return;
    }
    tmp->n = 0;
    find_matches((pcre2_code *)st->re, b->buf + sp.off, sp.len, md, tmp);
    if (st->invert)
        for (size_t i = 0; i < tmp->n; i++) tmp->v[i].match = !tmp->v[i].match;
    // HF SplitDelimiterBehavior, on (range, is_match) in order
    size_t n0 = out->n;
    int prev_match = 0;
    for (size_t i = 0; i < tmp->n; i++) {
        seg g = tmp->v[i];
        switch (st->behavior) {
        case SPLIT_REMOVED:
            if (!g.match) spans_push(out, sp.off + g.s, g.e - g.s);
            break;
        case SPLIT_MERGED_PREV:
            if (g.match && !prev_match && out->n > n0) out->v[out->n - 1].len += g.e - g.s;
            else spans_push(out, sp.off + g.s, g.e - g.s);
            break;
        case SPLIT_CONTIGUOUS:
            if (g.match == prev_match && out->n > n0) out->v[out->n - 1].len += g.e - g.s;
            else spans_push(out, sp.off + g.s, g.e - g.s);
            break;
        case SPLIT_MERGED_NEXT:  // handled below, in reverse
        case SPLIT_ISOLATED:
        default:
            spans_push(out, sp.off + g.s, g.e - g.s);
            break;
        }
        prev_match = g.match;
    }
    if (st->behavior == SPLIT_MERGED_NEXT) {
        // walk backwards: a match (not after another match) joins the piece after it
        out->n = n0;
        size_t k = out->n;
        prev_match = 0;
        for (size_t i = tmp->n; i-- > 0;) {
            seg g = tmp->v[i];
            if (g.match && !prev_match && out->n > k) {
                span *last = &out->v[out->n - 1];
                last->len += last->off - (sp.off + g.s);
                last->off = sp.off + g.s;
            } else {
                spans_push(out, sp.off + g.s, g.e - g.s);
            }
            prev_match = g.match;
        }
        for (size_t i = k, j = out->n ? out->n - 1 : 0; i < j; i++, j--) {  // reverse
            span x = out->v[i]; out->v[i] = out->v[j]; out->v[j] = x;
        }
    }
    for (size_t i = n_in; i < out->n; i++) out->v[i].first = sp.first && out->v[i].off == sp.off;
}

// ----------------------------------------------------------------------------
// merges on one pre-token

// Heap entries are one 64-bit key: rank in the high half, the left symbol's
// index in the low half, so the smallest key is the lowest rank, leftmost.
// An entry is stale unless the pair now starting at `left` still has that rank
// (ranks are unique per pair, so this identifies the pair exactly).
typedef struct {
    int32_t *id, *prev, *next;
    size_t cap;
    uint64_t *heap;
    size_t hn, hcap;
    char *mapped;
    size_t mcap;
} bpe_scratch;

static void bheap_push(bpe_scratch *w, uint64_t c) {
    if (w->hn == w->hcap) {
        w->hcap = w->hcap ? w->hcap * 2 : 256;
        w->heap = gn_realloc(w->heap, w->hcap * sizeof *w->heap);
    }
    size_t i = w->hn++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (c >= w->heap[p]) break;
        w->heap[i] = w->heap[p];
        i = p;
    }
    w->heap[i] = c;
}

static uint64_t bheap_pop(bpe_scratch *w) {
    uint64_t top = w->heap[0], last = w->heap[--w->hn];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        uint64_t best = last;
        if (l < w->hn && w->heap[l] < best) { m = l; best = w->heap[l]; }
        if (r < w->hn && w->heap[r] < best) m = r;
        if (m == i) break;
        w->heap[i] = w->heap[m];
        i = m;
    }
    if (w->hn) w->heap[i] = last;
    return top;
}

static void try_merge(const gn_tokenizer *t, bpe_scratch *w, int32_t l, int32_t r) {
    if (l < 0 || r < 0) return;
    int32_t rank, res;
    if (!pair_find(&t->merges, w->id[l], w->id[r], &rank, &res)) return;
    bheap_push(w, (uint64_t)(uint32_t)rank << 32 | (uint32_t)l);
}

// Initial symbols of a word for BPE over characters (HF BPE without a byte-level
// pre-tokenizer): each character's vocab id; a character that is not in the
// vocab becomes its bytes' <0xXX> ids when byte_fallback and all of them exist,
// else <unk> (a run of them one <unk> with fuse_unk), else it is dropped.
// Bytes that are not valid UTF-8 count as one character each. Returns the count.
static int32_t char_symbols(const gn_tokenizer *t, const unsigned char *s, size_t n, int32_t *ids) {
    int32_t ns = 0;
    int pending_unk = 0;
    for (size_t i = 0; i < n;) {
        int L = tok_utf8_valid_len(s + i, n - i);
        if (L == 0) L = 1;
        int32_t id = tok_lookup(t, (const char *)s + i, (size_t)L);
        if (id >= 0) {
            if (pending_unk) { ids[ns++] = t->unk; pending_unk = 0; }
            ids[ns++] = id;
        } else {
            int all = t->byte_fallback;
            for (int k = 0; k < L && all; k++) all = t->byte_tok[s[i + (size_t)k]] >= 0;
            if (all) {
                for (int k = 0; k < L; k++) ids[ns++] = t->byte_tok[s[i + (size_t)k]];
            } else if (t->unk >= 0) {
                if (pending_unk && !t->fuse_unk) ids[ns++] = t->unk;
                pending_unk = 1;
            }
        }
        i += (size_t)L;
    }
    if (pending_unk) ids[ns++] = t->unk;
    return ns;
}

static void bpe_word(const gn_tokenizer *t, const unsigned char *s, size_t n, bpe_scratch *w, tok_ids *out) {
    if (t->ignore_merges) {
        if (w->mcap < 2 * n) { w->mcap = 2 * n; w->mapped = gn_realloc(w->mapped, w->mcap); }
        size_t m = 0;
        if (t->byte_level) for (size_t i = 0; i < n; i++) m += (size_t)byte_char(s[i], w->mapped + m);
        else { memcpy(w->mapped, s, n); m = n; }
        int32_t id = tok_lookup(t, w->mapped, m);
        if (id >= 0) { tok_ids_push(out, id); return; }
    }
    if (w->cap < n) {
        w->cap = n;
        w->id = gn_realloc(w->id, n * sizeof *w->id);
        w->prev = gn_realloc(w->prev, n * sizeof *w->prev);
        w->next = gn_realloc(w->next, n * sizeof *w->next);
    }
    int32_t ns = 0;
    if (t->byte_level) {
        for (size_t i = 0; i < n; i++) {
            int32_t id = t->byte_char_tok[s[i]];
            if (id < 0) id = t->unk;
            if (id < 0) continue;  // byte has no token and there is no <unk>: dropped (as HF does)
            w->id[ns++] = id;
        }
    } else {
        ns = char_symbols(t, s, n, w->id);
    }
    for (int32_t i = 0; i < ns; i++) {
        w->prev[i] = i - 1;
        w->next[i] = i + 1 < ns ? i + 1 : -1;
    }
    if (ns == 0) return;
    w->hn = 0;
    for (int32_t i = 0; i + 1 < ns; i++) try_merge(t, w, i, i + 1);
    while (w->hn) {
        uint64_t c = bheap_pop(w);
        int32_t l = (int32_t)(uint32_t)c, r = w->next[l];
        int32_t rank, res;
        if (w->id[l] < 0 || r < 0 || !pair_find(&t->merges, w->id[l], w->id[r], &rank, &res) ||
            (uint32_t)rank != (uint32_t)(c >> 32))
            continue;
        w->id[l] = res;
        w->id[r] = -2;  // dead
        w->next[l] = w->next[r];
        if (w->next[r] >= 0) w->prev[w->next[r]] = l;
        w->prev[r] = w->next[r] = -3;
        try_merge(t, w, w->prev[l], l);
        try_merge(t, w, l, w->next[l]);
    }
    for (int32_t i = 0; i >= 0; i = w->next[i]) tok_ids_push(out, w->id[i]);
}

void tok_bpe_encode_chunk(const gn_tokenizer *t, const char *text, size_t len, int at_start, tok_ids *out) {
    gn_buf b = {0};
    gn_buf_put(&b, text, len);
    spans cur = {0}, nxt = {0};
    segs tmp = {0};
    spans_push(&cur, 0, (uint32_t)len);
    if (cur.n) cur.v[0].first = at_start;
    pcre2_match_data *md = NULL;
    for (int k = 0; k < t->n_pre; k++) {
        const tok_pre_step *st = &t->pre[k];
        if (st->re && !md) {
            md = pcre2_match_data_create(1, NULL);  // only the whole match is used
            GN_ASSERT(md != NULL);                  // out of memory
        }
        nxt.n = 0;
        for (size_t i = 0; i < cur.n; i++) split_piece(st, &b, cur.v[i], md, &tmp, &nxt);
        spans x = cur; cur = nxt; nxt = x;
    }
    bpe_scratch w = {0};
    for (size_t i = 0; i < cur.n; i++)
        bpe_word(t, (const unsigned char *)b.buf + cur.v[i].off, cur.v[i].len, &w, out);
    free(w.id); free(w.prev); free(w.next); free(w.heap); free(w.mapped);
    if (md) pcre2_match_data_free(md);
    free(tmp.v);
    free(cur.v);
    free(nxt.v);
    free(b.buf);
}

// ----------------------------------------------------------------------------
// tokenizer.json

static int in_list(const char *const *list, const char *s) {
    for (; *list; list++)
        if (strcmp(*list, s) == 0) return 1;
    return 0;
}

static const char *jstr(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

// -1 when absent, else 0/1.
static int jbool(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (cJSON_IsBool(v)) return cJSON_IsTrue(v);
    return -1;
}

// A token given as "text" or {"content": "text", ...} (tokenizer_config.json).
static const char *jtoken(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (cJSON_IsString(v)) return v->valuestring;
    if (cJSON_IsObject(v)) return jstr(v, "content");
    return NULL;
}

static int is_int_id(const cJSON *v) {
    return cJSON_IsNumber(v) && v->valuedouble >= 0 && v->valuedouble < (double)(1 << 24) &&
           v->valuedouble == (double)(int)v->valuedouble;
}

static gn_status add_pre(gn_tokenizer *t, const cJSON *p, const char *path, const char *where) {
    if (!p || cJSON_IsNull(p)) return GN_OK;
    const char *type = jstr(p, "type");
    if (!type) return gn_err(GN_ERR_FORMAT, "%s: %s: missing \"type\", expected a pre-tokenizer object", path, where);
    char sub[96];
    if (strcmp(type, "Sequence") == 0) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(p, "pretokenizers");
        if (!cJSON_IsArray(list)) return gn_err(GN_ERR_FORMAT, "%s: %s.pretokenizers: expected an array", path, where);
        int i = 0;
        const cJSON *it;
        cJSON_ArrayForEach(it, list) {
            snprintf(sub, sizeof sub, "%s.pretokenizers[%d]", where, i++);
            gn_status st = add_pre(t, it, path, sub);
            if (st != GN_OK) return st;
        }
        return GN_OK;
    }
    if (strcmp(type, "ByteLevel") == 0) {
        int aps = jbool(p, "add_prefix_space"), ure = jbool(p, "use_regex");
        tok_pre_step *s = add_step(t);
        s->prefix_space = aps == 1;
        t->byte_level = 1;
        if (ure != 0) return tok_compile_re(&s->re, RE_GPT2, strlen(RE_GPT2), 0, path, where);
        return GN_OK;
    }
    if (strcmp(type, "Metaspace") == 0) {
        tok_pre_step *s = add_step(t);
        s->metaspace = 1;
        return tok_metaspace_params(p, s->rep, &s->rep_len, &s->prepend, &s->ms_split, path, where);
    }
    if (strcmp(type, "Digits") == 0) {
        const char *pat = jbool(p, "individual_digits") == 1 ? "\\p{N}" : "\\p{N}+";
        tok_pre_step *s = add_step(t);
        return tok_compile_re(&s->re, pat, strlen(pat), 0, path, where);
    }
    if (strcmp(type, "Split") == 0) {
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(p, "pattern");
        const char *re = pat ? jstr(pat, "Regex") : NULL, *lit = pat ? jstr(pat, "String") : NULL;
        if (!re && !lit)
            return gn_err(GN_ERR_FORMAT, "%s: %s.pattern: expected {\"Regex\": ...} or {\"String\": ...}", path, where);
        const char *beh = jstr(p, "behavior");
        static const char *const names[] = {"Isolated", "Removed", "MergedWithPrevious", "MergedWithNext", "Contiguous"};
        int b = -1;
        for (int i = 0; i < 5; i++)
            if (beh && strcmp(beh, names[i]) == 0) b = i;
        if (b < 0)
            return gn_err(GN_ERR_FORMAT, "%s: %s.behavior: '%s', expected Isolated, Removed, MergedWithPrevious, "
                          "MergedWithNext or Contiguous", path, where, beh ? beh : "(missing)");
        tok_pre_step *s = add_step(t);
        s->behavior = b;  // SPLIT_* follow the order of names[]
        s->invert = jbool(p, "invert") == 1;
        snprintf(sub, sizeof sub, "%s.pattern", where);
        const char *src = re ? re : lit;
        return tok_compile_re(&s->re, src, strlen(src), re == NULL, path, sub);
    }
    return gn_err(GN_ERR_UNSUPPORTED, "%s: %s: pre-tokenizer type '%s' is not supported, expected ByteLevel, "
                  "Metaspace, Split, Digits or Sequence", path, where, type);
}

// The id a TemplateProcessing special-token entry stands for.
static int32_t post_special_id(const cJSON *pp, const cJSON *piece, const gn_tokenizer *t) {
    const cJSON *sp = cJSON_GetObjectItemCaseSensitive(piece, "SpecialToken");
    const char *name = sp ? jstr(sp, "id") : NULL;
    if (!name) return -1;
    int32_t id = tok_lookup(t, name, strlen(name));
    const cJSON *specials = cJSON_GetObjectItemCaseSensitive(pp, "special_tokens");
    const cJSON *ent = specials ? cJSON_GetObjectItemCaseSensitive(specials, name) : NULL;
    const cJSON *ids = ent ? cJSON_GetObjectItemCaseSensitive(ent, "ids") : NULL;
    const cJSON *id0 = cJSON_IsArray(ids) ? cJSON_GetArrayItem(ids, 0) : NULL;
    if (id0 && is_int_id(id0) && (int)id0->valuedouble < t->n_vocab) id = (int32_t)id0->valuedouble;
    return id;
}

// post_processor TemplateProcessing "single": a special token before $A means
// BOS, one after it EOS.
static void read_post(const cJSON *pp, int *add_bos, int32_t *bos_id, int *add_eos, int32_t *eos_id,
                      const gn_tokenizer *t) {
    if (!pp || cJSON_IsNull(pp)) return;
    const char *type = jstr(pp, "type");
    if (!type) return;
    if (strcmp(type, "Sequence") == 0) {
        const cJSON *it;
        cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(pp, "processors"))
            read_post(it, add_bos, bos_id, add_eos, eos_id, t);
        return;
    }
    if (strcmp(type, "TemplateProcessing") != 0) return;
    const cJSON *single = cJSON_GetObjectItemCaseSensitive(pp, "single"), *it;
    int seen_seq = 0;
    *add_bos = *add_eos = 0;
    cJSON_ArrayForEach(it, single) {
        if (cJSON_GetObjectItemCaseSensitive(it, "Sequence")) { seen_seq = 1; continue; }
        int32_t id = post_special_id(pp, it, t);
        if (id < 0) continue;
        if (!seen_seq && !*add_bos) { *add_bos = 1; *bos_id = id; }
        if (seen_seq && !*add_eos) { *add_eos = 1; *eos_id = id; }
    }
}

// Reads tokenizer_config.json (and chat_template.jinja) from the folder of path:
// bos/eos/unk/pad token names, add_bos_token (-1 in *cfg_add_bos when absent),
// add_eos_token, chat_template. Absent files are fine.
gn_status tok_read_config(gn_tokenizer *t, const char *path, int *cfg_add_bos) {
    *cfg_add_bos = -1;
    t->cfg_legacy = t->cfg_add_prefix_space = -1;
    t->cfg_class[0] = 0;
    const char *slash = strrchr(path, '/');
    size_t dl = slash ? (size_t)(slash - path) + 1 : 0;
    char *cfgp = gn_malloc(dl + 32), *jinja = gn_malloc(dl + 32);
    memcpy(cfgp, path, dl);
    strcpy(cfgp + dl, "tokenizer_config.json");
    memcpy(jinja, path, dl);
    strcpy(jinja + dl, "chat_template.jinja");
    gn_status st = GN_OK;
    FILE *f = fopen(cfgp, "rb");
    if (f) {
        fclose(f);
        char *data = NULL;
        size_t len = 0;
        if ((st = gn_read_file(cfgp, &data, &len)) != GN_OK) goto done;
        cJSON *root = cJSON_ParseWithLength(data, len);
        free(data);
        if (!cJSON_IsObject(root)) {
            cJSON_Delete(root);
            st = gn_err(GN_ERR_FORMAT, "%s: not valid JSON, expected a tokenizer_config.json object", cfgp);
            goto done;
        }
        const char *bos = jtoken(root, "bos_token"), *eos = jtoken(root, "eos_token");
        const char *unk = jtoken(root, "unk_token"), *pad = jtoken(root, "pad_token");
        // names that are not tokens (old conversions wrote "") leave the ids alone
        int32_t id;
        if (bos && (id = tok_lookup(t, bos, strlen(bos))) >= 0) t->bos = id;
        if (eos && (id = tok_lookup(t, eos, strlen(eos))) >= 0) t->eos = id;
        if (unk && (id = tok_lookup(t, unk, strlen(unk))) >= 0) t->unk = id;
        if (pad && (id = tok_lookup(t, pad, strlen(pad))) >= 0) t->pad = id;
        // added_tokens_decoder {"id": {"content", "special", ...}}: tokens a tokenizer.model
        // folder adds past (or marks inside) its SentencePiece vocabulary
        const cJSON *atd = cJSON_GetObjectItemCaseSensitive(root, "added_tokens_decoder"), *ent;
        if (!t->json && cJSON_IsObject(atd)) {
            int changed = 0;
            cJSON_ArrayForEach(ent, atd) {
                char *endp = NULL;
                long id_l = strtol(ent->string, &endp, 10);
                const char *content = jstr(ent, "content");
                if (!endp || *endp || id_l < 0 || id_l >= (1 << 24) || !content) {
                    cJSON_Delete(root);
                    st = gn_err(GN_ERR_FORMAT, "%s: added_tokens_decoder[\"%.20s\"]: expected an id 0..16777215 "
                                "mapping to {\"content\": string, ...}", cfgp, ent->string);
                    goto done;
                }
                int32_t aid = (int32_t)id_l;
                if (aid < t->n_vocab && (t->len[aid] != strlen(content) ||
                                          memcmp(tok_piece(t, aid), content, t->len[aid]) != 0)) {
                    cJSON_Delete(root);
                    st = gn_err(GN_ERR_FORMAT, "%s: added_tokens_decoder[\"%d\"]: content '%.40s' but the vocabulary "
                                "has '%.40s' there, expected the same token", cfgp, aid, content, tok_piece(t, aid));
                    goto done;
                }
                if (aid >= t->n_vocab) {
                    tok_grow(t, aid + 1);
                    tok_set_piece(t, aid, content, strlen(content));
                    t->type[aid] = jbool(ent, "special") == 1 ? TOK_CONTROL : TOK_USER_DEFINED;
                    changed = 1;
                } else if (jbool(ent, "special") == 1 && t->type[aid] != TOK_CONTROL && t->type[aid] != TOK_UNKNOWN) {
                    t->type[aid] = TOK_CONTROL;
                    changed = 1;
                }
            }
            if (changed) tok_finish(t);
        }
        *cfg_add_bos = jbool(root, "add_bos_token");
        const char *cls = jstr(root, "tokenizer_class");
        snprintf(t->cfg_class, sizeof t->cfg_class, "%s", cls ? cls : "");
        t->cfg_legacy = jbool(root, "legacy");
        t->cfg_add_prefix_space = jbool(root, "add_prefix_space");
        int ae = jbool(root, "add_eos_token");
        if (ae >= 0) t->add_eos = ae;
        const cJSON *ct = cJSON_GetObjectItemCaseSensitive(root, "chat_template");
        if (cJSON_IsString(ct)) {
            t->chat_template = gn_strdup(ct->valuestring);
        } else if (cJSON_IsArray(ct)) {  // [{"name": "default", "template": ...}, ...]
            const cJSON *it, *pick = NULL;
            cJSON_ArrayForEach(it, ct) {
                const char *nm = jstr(it, "name");
                if (!pick || (nm && strcmp(nm, "default") == 0)) pick = it;
            }
            const char *tpl = pick ? jstr(pick, "template") : NULL;
            if (tpl) t->chat_template = gn_strdup(tpl);
        }
        cJSON_Delete(root);
    }
    if (!t->chat_template && (f = fopen(jinja, "rb")) != NULL) {
        fclose(f);
        char *data = NULL;
        size_t len = 0;
        if ((st = gn_read_file(jinja, &data, &len)) != GN_OK) goto done;
        t->chat_template = data;
    }
done:
    free(cfgp);
    free(jinja);
    return st;
}

gn_status tok_bpe_load_json(gn_tokenizer **out, const char *path, const char *json, size_t len) {
    *out = NULL;
    gn_status st = GN_OK;
    gn_tokenizer *t = NULL;
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!root) {
        const char *e = cJSON_GetErrorPtr();
        size_t at = e && e >= json && e <= json + len ? (size_t)(e - json) : 0;
        return gn_err(GN_ERR_FORMAT, "%s: offset %zu: invalid JSON, expected a tokenizer.json object", path, at);
    }
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!cJSON_IsObject(model)) {
        st = gn_err(GN_ERR_FORMAT, "%s: \"model\": missing or not an object, expected a tokenizer.json "
                    "with a BPE model", path);
        goto fail;
    }
    const char *mtype = jstr(model, "type");
    if (mtype && strcmp(mtype, "BPE") != 0) {
        st = gn_err(GN_ERR_UNSUPPORTED, "%s: model.type is '%s', expected BPE", path, mtype);
        goto fail;
    }
    const char *cs = jstr(model, "continuing_subword_prefix"), *ew = jstr(model, "end_of_word_suffix");
    if ((cs && *cs) || (ew && *ew)) {
        st = gn_err(GN_ERR_UNSUPPORTED, "%s: model.continuing_subword_prefix/end_of_word_suffix are set, "
                    "expected byte-level BPE without them", path);
        goto fail;
    }
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    if (!cJSON_IsObject(vocab)) {
        st = gn_err(GN_ERR_FORMAT, "%s: model.vocab: missing or not an object, expected {\"piece\": id, ...}", path);
        goto fail;
    }
    if (!cJSON_IsArray(merges)) {
        st = gn_err(GN_ERR_FORMAT, "%s: model.merges: missing or not an array, expected [\"a b\", ...]", path);
        goto fail;
    }
    if (added && !cJSON_IsArray(added) && !cJSON_IsNull(added)) {
        st = gn_err(GN_ERR_FORMAT, "%s: added_tokens: expected an array", path);
        goto fail;
    }
    // size of the id space
    int max_id = -1;
    const cJSON *it;
    cJSON_ArrayForEach(it, vocab) {
        if (!is_int_id(it)) {
            st = gn_err(GN_ERR_FORMAT, "%s: model.vocab[\"%.40s\"]: id is not an integer in 0..16777215", path,
                        it->string ? it->string : "");
            goto fail;
        }
        if ((int)it->valuedouble > max_id) max_id = (int)it->valuedouble;
    }
    int ai = 0;
    if (cJSON_IsArray(added)) cJSON_ArrayForEach(it, added) {
        const cJSON *idv = cJSON_GetObjectItemCaseSensitive(it, "id");
        if (!is_int_id(idv) || !jstr(it, "content")) {
            st = gn_err(GN_ERR_FORMAT, "%s: added_tokens[%d]: expected {\"id\": integer 0..16777215, "
                        "\"content\": string, ...}", path, ai);
            goto fail;
        }
        if ((int)idv->valuedouble > max_id) max_id = (int)idv->valuedouble;
        ai++;
    }
    if (max_id < 0) {
        st = gn_err(GN_ERR_FORMAT, "%s: model.vocab is empty, expected at least one piece", path);
        goto fail;
    }
    t = tok_new(max_id + 1);
    t->kind = GN_TOK_BYTE_BPE;
    t->add_dummy_prefix = 0;
    uint8_t *seen = gn_calloc((size_t)max_id + 1, 1);
    cJSON_ArrayForEach(it, vocab) {
        int id = (int)it->valuedouble;
        if (seen[id]) {
            free(seen);
            st = gn_err(GN_ERR_FORMAT, "%s: model.vocab[\"%.40s\"]: id %d is used by two pieces, expected "
                        "unique ids", path, it->string, id);
            goto fail;
        }
        seen[id] = 1;
        tok_set_piece(t, id, it->string, strlen(it->string));
        t->type[id] = TOK_NORMAL;
    }
    free(seen);
    t->json = 1;
    if (cJSON_IsArray(added)) {
        t->added = gn_calloc((size_t)max_id + 1, 1);
        cJSON_ArrayForEach(it, added) {
            int id = (int)cJSON_GetObjectItemCaseSensitive(it, "id")->valuedouble;
            const char *content = jstr(it, "content");
            tok_set_piece(t, id, content, strlen(content));
            t->type[id] = jbool(it, "special") == 1 ? TOK_CONTROL : TOK_USER_DEFINED;
            // HF AddedToken defaults: normalized = !special, the others false
            int normalized = jbool(it, "normalized");
            if (normalized < 0) normalized = t->type[id] != TOK_CONTROL;
            t->added[id] = (uint8_t)(ADDED_ANY | (jbool(it, "lstrip") == 1 ? ADDED_LSTRIP : 0) |
                                     (jbool(it, "rstrip") == 1 ? ADDED_RSTRIP : 0) |
                                     (jbool(it, "single_word") == 1 ? ADDED_SINGLE_WORD : 0) |
                                     (normalized ? ADDED_NORMALIZED : 0));
        }
    }
    if ((st = tok_finish(t)) != GN_OK) goto fail;
    const char *unk = jstr(model, "unk_token");
    if (unk) t->unk = tok_lookup(t, unk, strlen(unk));
    t->ignore_merges = jbool(model, "ignore_merges") == 1;
    t->fuse_unk = jbool(model, "fuse_unk") == 1;
    t->byte_fallback = jbool(model, "byte_fallback") == 1;
    if (t->byte_fallback) {
        // HF looks byte tokens up by the exact text "<0xXX>" (uppercase hex)
        for (int b = 0; b < 256; b++) {
            char name[8];
            snprintf(name, sizeof name, "<0x%02X>", b);
            int32_t id = tok_lookup(t, name, 6);
            t->byte_tok[b] = id;
            if (id >= 0 && t->type[id] == TOK_NORMAL) t->type[id] = TOK_BYTE;
        }
    }
    // merges: "a b" strings or ["a", "b"] pairs, rank = position
    tok_bpe_init_merges(t, (uint32_t)cJSON_GetArraySize(merges));
    int rank = 0;
    cJSON_ArrayForEach(it, merges) {
        const char *a = NULL, *b = NULL;
        size_t na = 0, nb = 0;
        if (cJSON_IsString(it)) {
            const char *s = it->valuestring, *sp = *s ? strchr(s + 1, ' ') : NULL;
            if (sp) { a = s; na = (size_t)(sp - s); b = sp + 1; nb = strlen(b); }
        } else if (cJSON_IsArray(it) && cJSON_GetArraySize(it) == 2 &&
                   cJSON_IsString(cJSON_GetArrayItem(it, 0)) && cJSON_IsString(cJSON_GetArrayItem(it, 1))) {
            a = cJSON_GetArrayItem(it, 0)->valuestring;
            b = cJSON_GetArrayItem(it, 1)->valuestring;
            na = strlen(a);
            nb = strlen(b);
        }
        if (!a) {
            st = gn_err(GN_ERR_FORMAT, "%s: model.merges[%d]: expected \"a b\" or [\"a\", \"b\"]", path, rank);
            goto fail;
        }
        if (!tok_bpe_add_merge(t, a, na, b, nb, rank)) {
            st = gn_err(GN_ERR_FORMAT, "%s: model.merges[%d]: '%.*s' + '%.*s': a part or the merged piece is "
                        "not in model.vocab, expected merges of vocab pieces", path, rank, (int)na, a, (int)nb, b);
            goto fail;
        }
        rank++;
    }
    if ((st = tok_hf_read_normalizer(t, cJSON_GetObjectItemCaseSensitive(root, "normalizer"), path,
                                     "normalizer")) != GN_OK)
        goto fail;
    if ((st = add_pre(t, cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"), path, "pre_tokenizer")) != GN_OK)
        goto fail;
    if (!t->byte_level) {
        // BPE over characters (SentencePiece-style): the decoder chain decodes
        t->kind = GN_TOK_JSON_BPE;
        if ((st = tok_hf_read_decoder(t, cJSON_GetObjectItemCaseSensitive(root, "decoder"), path, "decoder")) != GN_OK)
            goto fail;
        // streaming decode drops the first token's leading space when the decoder does
        t->add_dummy_prefix = 0;
        for (int k = 0; k < t->n_dec; k++)
            if ((t->dec[k].op == DEC_STRIP && t->dec[k].start > 0 && strcmp(t->dec[k].content, " ") == 0) ||
                (t->dec[k].op == DEC_METASPACE && t->dec[k].prepend != PREPEND_NEVER))
                t->add_dummy_prefix = 1;
    } else if (t->n_norm) {
        st = gn_err(GN_ERR_UNSUPPORTED, "%s: normalizer: set on a byte-level BPE tokenizer, expected none", path);
        goto fail;
    }
    // normalized=true added tokens are matched by their normalized text
    if (t->added && t->n_norm) {
        for (int32_t id = 0; id < t->n_vocab; id++) {
            if (!(t->added[id] & ADDED_NORMALIZED) || !t->len[id]) continue;
            size_t m;
            char *nt = tok_hf_normalize(t, tok_piece(t, id), t->len[id], &m);
            int k = t->n_nadd++;
            t->nadd_text = gn_realloc(t->nadd_text, (size_t)t->n_nadd * sizeof *t->nadd_text);
            t->nadd_len = gn_realloc(t->nadd_len, (size_t)t->n_nadd * sizeof *t->nadd_len);
            t->nadd_id = gn_realloc(t->nadd_id, (size_t)t->n_nadd * sizeof *t->nadd_id);
            while (k > 0 && t->nadd_len[k - 1] < m) {  // longest first
                t->nadd_text[k] = t->nadd_text[k - 1];
                t->nadd_len[k] = t->nadd_len[k - 1];
                t->nadd_id[k] = t->nadd_id[k - 1];
                k--;
            }
            t->nadd_text[k] = nt;
            t->nadd_len[k] = m;
            t->nadd_id[k] = id;
        }
    }
    if (t->byte_level) tok_bpe_init_byte_chars(t);
    int post_bos = 0, post_eos = 0;
    int32_t post_bos_id = -1, post_eos_id = -1;
    read_post(cJSON_GetObjectItemCaseSensitive(root, "post_processor"), &post_bos, &post_bos_id, &post_eos,
              &post_eos_id, t);
    int cfg_add_bos;
    t->add_eos = -1;
    if ((st = tok_read_config(t, path, &cfg_add_bos)) != GN_OK) goto fail;
    if (t->bos < 0 && post_bos_id >= 0) t->bos = post_bos_id;
    if (t->eos < 0 && post_eos_id >= 0) t->eos = post_eos_id;
    t->add_bos = cfg_add_bos >= 0 ? cfg_add_bos : post_bos;
    t->add_eos = t->add_eos >= 0 ? t->add_eos : post_eos;
    t->add_eos_post = t->add_eos;
    cJSON_Delete(root);
    *out = t;
    return GN_OK;
fail:
    cJSON_Delete(root);
    gn_tokenizer_free(t);
    return st;
}
