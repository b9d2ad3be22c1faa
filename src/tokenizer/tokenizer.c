/*
 * tokenizer.c — the public tokenizer API (guanaco.h): loading by content,
 * vocabulary tables, special-token splitting, encode dispatch, decode and the
 * streaming detokenizer.
 *
 * Three kinds share one vocabulary layout (tok_internal.h):
 *   - SentencePiece BPE (LLaMA 1/2): spm.c; tokenizer.model or GGUF "llama".
 *   - byte-level BPE (GPT-2, SmolLM2, LLaMA 3): bpe.c; tokenizer.json or GGUF "gpt2".
 *   - tokenizer.json BPE over characters (SentencePiece-style files written by
 *     transformers: Metaspace pre-tokenizer or Prepend/Replace normalizer, byte
 *     fallback): bpe.c + hf.c, run as HF tokenizers runs it.
 *
 * Loading: "GGUF" magic -> GGUF vocab; first non-blank byte '{' -> tokenizer.json;
 * anything else -> tokenizer.model protobuf. A folder uses tokenizer.json when
 * it has one (as AutoTokenizer does), tokenizer.model when the .json is missing
 * or of an unsupported form (plus tokenizer_config.json beside either). A
 * tokenizer.json file is read as the tokenizers library reads it; a folder as
 * transformers 5's AutoTokenizer does, which differs for tokenizer_class
 * LlamaTokenizer: that class drops the file's normalizer, pre-tokenizer and
 * decoder for its own (Metaspace "first", or "always" with legacy=true).
 *
 * tokenizer.json encode (HF order): added tokens are cut out of the raw text
 * (lstrip/rstrip take the whitespace beside them, single_word ones must stand
 * alone); each chunk is normalized; normalized=true added tokens are cut out of
 * the normalized chunk by their normalized text; each piece is pre-tokenized
 * (Metaspace "first" prepends only to the piece that starts the text) and BPE'd.
 *
 * Encode: the text is first cut at literal special tokens, leftmost then longest
 * (CONTROL/UNKNOWN only with GN_ENC_SPECIAL; byte-level USER_DEFINED always, as
 * HF and llama.cpp do; SentencePiece USER_DEFINED pieces are matched inside
 * spm.c instead, as sentencepiece does). Each chunk between them is encoded on
 * its own, so with SentencePiece every chunk gets its own dummy prefix (HF's
 * "legacy" LlamaTokenizer and llama.cpp behave the same). Any bytes are
 * accepted: see spm.c / bpe.c for invalid UTF-8.
 *
 * Decode rules (checked against sentencepiece 0.2 and HF tokenizers):
 *   - SentencePiece: '▁' becomes ' '; the leading '▁' of the first piece that is
 *     not a control token is dropped when the model adds a dummy prefix; runs of
 *     <0xXX> byte pieces become bytes and every byte that does not belong to a
 *     valid UTF-8 sequence becomes U+FFFD (one per byte, as sentencepiece does);
 *     <unk> decodes to " ⁇ " (sentencepiece's unk surface).
 *   - byte-level BPE: pieces map back through the GPT-2 byte table; special /
 *     added tokens are their literal text; invalid UTF-8 becomes U+FFFD per
 *     maximal ill-formed subpart (Rust's from_utf8_lossy, which HF uses).
 *   - skip_special drops CONTROL tokens; otherwise they appear as their text.
 */
#include "tok_internal.h"

#include <stdio.h>     // FILE, snprintf
#include <stdlib.h>    // free
#include <string.h>    // memcpy, strlen
#include <sys/stat.h>  // stat

#include "../formats/gguf.h"  // gn_gguf_open, gn_gguf_free
#include "tokenizer.h"        // gn_tokenizer_from_gguf
#include "../core/buf.h" // gn_buf

// ----------------------------------------------------------------------------
// vocabulary tables

gn_tokenizer *tok_new(int n_vocab) {
    gn_tokenizer *t = gn_calloc(1, sizeof *t);
    t->n_vocab = n_vocab;
    t->off = gn_calloc((size_t)n_vocab + 1, sizeof *t->off);
    t->len = gn_calloc((size_t)n_vocab + 1, sizeof *t->len);
    t->score = gn_calloc((size_t)n_vocab + 1, sizeof *t->score);
    t->type = gn_calloc((size_t)n_vocab + 1, sizeof *t->type);
    for (int i = 0; i < n_vocab; i++) t->type[i] = TOK_UNUSED;
    t->blob_cap = 1024;
    t->blob = gn_malloc(t->blob_cap);
    t->blob[0] = 0;  // offset 0: the empty string every unset piece points at
    t->blob_len = 1;
    t->bos = t->eos = t->unk = t->pad = -1;
    t->add_dummy_prefix = 1;
    t->escape_ws = 1;
    for (int b = 0; b < 256; b++) t->byte_tok[b] = t->byte_char_tok[b] = -1;
    return t;
}

void tok_grow(gn_tokenizer *t, int n_vocab) {
    if (n_vocab <= t->n_vocab) return;
    t->off = gn_realloc(t->off, ((size_t)n_vocab + 1) * sizeof *t->off);
    t->len = gn_realloc(t->len, ((size_t)n_vocab + 1) * sizeof *t->len);
    t->score = gn_realloc(t->score, ((size_t)n_vocab + 1) * sizeof *t->score);
    t->type = gn_realloc(t->type, ((size_t)n_vocab + 1) * sizeof *t->type);
    for (int i = t->n_vocab; i <= n_vocab; i++) {
        t->off[i] = 0;
        t->len[i] = 0;
        t->score[i] = 0;
        t->type[i] = TOK_UNUSED;
    }
    t->n_vocab = n_vocab;
}

void tok_set_piece(gn_tokenizer *t, int32_t id, const char *s, size_t n) {
    GN_ASSERT(id >= 0 && id < t->n_vocab);
    if (t->blob_len + n + 1 > t->blob_cap) {
        while (t->blob_len + n + 1 > t->blob_cap) t->blob_cap *= 2;
        t->blob = gn_realloc(t->blob, t->blob_cap);
    }
    GN_ASSERT(t->blob_len + n < UINT32_MAX);
    memcpy(t->blob + t->blob_len, s, n);
    t->blob[t->blob_len + n] = 0;
    t->off[id] = (uint32_t)t->blob_len;
    t->len[id] = (uint32_t)n;
    t->blob_len += n + 1;
}

static uint32_t hash_bytes(const char *s, size_t n) {
    uint32_t h = 2166136261u;  // FNV-1a
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h ^ (h >> 15);
}

int32_t tok_lookup(const gn_tokenizer *t, const char *s, size_t n) {
    if (!t->ht) return -1;
    uint32_t i = hash_bytes(s, n) & t->ht_mask;
    for (;;) {
        int32_t id = t->ht[i];
        if (id < 0) return -1;
        if (t->len[id] == n && memcmp(t->blob + t->off[id], s, n) == 0) return id;
        i = (i + 1) & t->ht_mask;
    }
}

int tok_byte_piece(const char *s, size_t n) {
    if (n != 6 || s[0] != '<' || s[1] != '0' || s[2] != 'x' || s[5] != '>') return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10
              : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

static int spec_cmp_len_desc(const gn_tokenizer *t, int32_t a, int32_t b) {
    if (t->len[a] != t->len[b]) return t->len[a] > t->len[b] ? -1 : 1;
    return a < b ? -1 : a > b;
}

gn_status tok_finish(gn_tokenizer *t) {
    uint32_t cap = 16;
    while (cap < (uint32_t)t->n_vocab * 2u + 16u) cap *= 2;
    free(t->ht);
    t->ht = gn_malloc(cap * sizeof *t->ht);
    for (uint32_t i = 0; i < cap; i++) t->ht[i] = -1;
    t->ht_mask = cap - 1;
    t->max_piece_len = 0;
    t->has_user_defined = 0;
    for (int32_t id = 0; id < t->n_vocab; id++) {
        const char *s = tok_piece(t, id);
        size_t n = t->len[id];
        if ((int)n > t->max_piece_len) t->max_piece_len = (int)n;
        if (t->type[id] == TOK_USER_DEFINED && n > 0) t->has_user_defined = 1;
        if (t->type[id] == TOK_BYTE) {
            int b = tok_byte_piece(s, n);
            if (b >= 0 && t->byte_tok[b] < 0) t->byte_tok[b] = id;
        }
        uint32_t i = hash_bytes(s, n) & t->ht_mask;
        int dup = 0;
        while (t->ht[i] >= 0) {
            int32_t o = t->ht[i];
            if (t->len[o] == n && memcmp(tok_piece(t, o), s, n) == 0) { dup = 1; break; }
            i = (i + 1) & t->ht_mask;
        }
        if (!dup) t->ht[i] = id;
    }
    t->spm_ws_split = t->kind == GN_TOK_SPM && tok_spm_ws_splittable(t);
    // tokens that may be written literally in the text, by first byte, longest first
    int nspec = 0;
    for (int32_t id = 0; id < t->n_vocab; id++) {
        uint8_t ty = t->type[id];
        if ((ty == TOK_CONTROL || ty == TOK_UNKNOWN || ty == TOK_USER_DEFINED) && t->len[id] > 0) nspec++;
    }
    free(t->spec_ids);
    t->spec_ids = gn_malloc((size_t)(nspec + 1) * sizeof *t->spec_ids);
    int count[256] = {0};
    for (int32_t id = 0; id < t->n_vocab; id++) {
        uint8_t ty = t->type[id];
        if ((ty == TOK_CONTROL || ty == TOK_UNKNOWN || ty == TOK_USER_DEFINED) && t->len[id] > 0)
            count[(unsigned char)tok_piece(t, id)[0]]++;
    }
    t->spec_start[0] = 0;
    for (int b = 0; b < 256; b++) t->spec_start[b + 1] = t->spec_start[b] + count[b];
    int fill[256];
    for (int b = 0; b < 256; b++) fill[b] = t->spec_start[b];
    for (int32_t id = 0; id < t->n_vocab; id++) {
        uint8_t ty = t->type[id];
        if ((ty == TOK_CONTROL || ty == TOK_UNKNOWN || ty == TOK_USER_DEFINED) && t->len[id] > 0)
            t->spec_ids[fill[(unsigned char)tok_piece(t, id)[0]]++] = id;
    }
    // insertion sort inside each bucket (buckets are small)
    for (int b = 0; b < 256; b++) {
        for (int i = t->spec_start[b] + 1; i < t->spec_start[b + 1]; i++) {
            int32_t x = t->spec_ids[i];
            int j = i - 1;
            while (j >= t->spec_start[b] && spec_cmp_len_desc(t, t->spec_ids[j], x) > 0) {
                t->spec_ids[j + 1] = t->spec_ids[j];
                j--;
            }
            t->spec_ids[j + 1] = x;
        }
    }
    return GN_OK;
}

void tok_ids_push(tok_ids *a, int32_t x) {
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 64;
        a->v = gn_realloc(a->v, (size_t)a->cap * sizeof *a->v);
    }
    a->v[a->n++] = x;
}

// ----------------------------------------------------------------------------
// UTF-8

int tok_utf8_lead_len(unsigned char c) {
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) return 2;
    if (c >= 0xE0 && c <= 0xEF) return 3;
    if (c >= 0xF0 && c <= 0xF4) return 4;
    return 1;
}

// Valid range of the second byte for a lead byte (Unicode Table 3-7); the rest
// of the continuation bytes are 0x80..0xBF.
static void second_range(unsigned char c, unsigned char *lo, unsigned char *hi) {
    *lo = 0x80; *hi = 0xBF;
    if (c == 0xE0) *lo = 0xA0;
    else if (c == 0xED) *hi = 0x9F;
    else if (c == 0xF0) *lo = 0x90;
    else if (c == 0xF4) *hi = 0x8F;
}

int tok_utf8_valid_len(const unsigned char *s, size_t n) {
    if (n == 0) return 0;
    unsigned char c = s[0];
    if (c < 0x80) return 1;
    int L = tok_utf8_lead_len(c);
    if (L == 1 || (size_t)L > n) return 0;
    unsigned char lo, hi;
    second_range(c, &lo, &hi);
    if (s[1] < lo || s[1] > hi) return 0;
    for (int i = 2; i < L; i++)
        if ((s[i] & 0xC0) != 0x80) return 0;
    return L;
}

// Length of the longest prefix of s[0..n) that could still grow into a valid
// sequence (the "maximal subpart"), at least 1. Used for U+FFFD replacement
// and to know whether an unfinished tail may complete later.
static int utf8_subpart_len(const unsigned char *s, size_t n) {
    unsigned char c = s[0];
    int L = tok_utf8_lead_len(c);
    if (L == 1) return 1;
    unsigned char lo, hi;
    second_range(c, &lo, &hi);
    int k = 1;
    for (; k < L && (size_t)k < n; k++) {
        unsigned char b = s[k];
        if (k == 1 ? (b < lo || b > hi) : ((b & 0xC0) != 0x80)) break;
    }
    return k;
}

static const char REPL[3] = {(char)0xEF, (char)0xBF, (char)0xBD};  // U+FFFD

// Growable byte buffer.
// Appends s[0..n) with invalid UTF-8 replaced by U+FFFD: per byte when
// per_byte, else per maximal subpart.
static void sb_put_repaired(gn_buf *b, const char *s, size_t n, int per_byte) {
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, run = 0;
    while (i < n) {
        int v = tok_utf8_valid_len(u + i, n - i);
        if (v > 0) { i += (size_t)v; continue; }
        if (i > run) gn_buf_put(b, s + run, i - run);
        gn_buf_put(b, REPL, 3);
        i += per_byte ? 1 : (size_t)utf8_subpart_len(u + i, n - i);
        run = i;
    }
    if (n > run) gn_buf_put(b, s + run, n - run);
}

// ----------------------------------------------------------------------------
// loading

static int is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}
static int is_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

// Loads one tokenizer file, deciding the format by its first bytes.
static gn_status load_file(gn_tokenizer **out, const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return gn_err(GN_ERR_IO, "%s: cannot open tokenizer file", path);
    unsigned char head[4] = {0};
    size_t got = fread(head, 1, 4, f);
    fclose(f);
    if (got == 4 && memcmp(head, "GGUF", 4) == 0) {
        gn_gguf *g = NULL;
        gn_status st = gn_gguf_open(&g, path);
        if (st != GN_OK) return st;
        st = gn_tokenizer_from_gguf(out, g);
        gn_gguf_free(g);
        if (st != GN_OK && strstr(gn_last_error(), path) == NULL) gn_err_prefix(st, path);
        return st;
    }
    char *data = NULL;
    size_t len = 0;
    gn_status st = gn_read_file(path, &data, &len);
    if (st != GN_OK) return st;
    size_t i = 0;
    while (i < len && (data[i] == ' ' || data[i] == '\t' || data[i] == '\n' || data[i] == '\r')) i++;
    if (i < len && data[i] == '{')
        st = tok_bpe_load_json(out, path, data, len);
    else if (len == 0)
        st = gn_err(GN_ERR_FORMAT, "%s: offset 0: empty file, expected a tokenizer.model "
                    "(protobuf), tokenizer.json or GGUF", path);
    else {
        st = tok_spm_load_model(out, path, (const uint8_t *)data, len);
        int cfg_add_bos;  // an HF folder's tokenizer_config.json: chat template, add_bos_token
        if (st == GN_OK && (st = tok_read_config(*out, path, &cfg_add_bos)) != GN_OK) {
            gn_tokenizer_free(*out);
            *out = NULL;
        }
        if (st == GN_OK && cfg_add_bos >= 0) (*out)->add_bos = cfg_add_bos;
    }
    free(data);
    return st;
}

gn_status gn_tokenizer_load(gn_tokenizer **out, const char *path) {
    *out = NULL;
    if (!path || !*path) return gn_err(GN_ERR_ARG, "tokenizer path is empty");
    if (is_dir(path)) {
        // HF model folder: tokenizer.json when there is one (AutoTokenizer's
        // choice), tokenizer.model when the .json is missing or of a form not
        // supported.
        size_t n = strlen(path) + 32;
        char *json = gn_malloc(n), *model = gn_malloc(n);
        snprintf(json, n, "%s/tokenizer.json", path);
        snprintf(model, n, "%s/tokenizer.model", path);
        gn_status st;
        if (is_file(json)) {
            st = load_file(out, json);
            if (st == GN_ERR_UNSUPPORTED && is_file(model)) {
                gn_log(GN_LOG_WARN, "%s; using tokenizer.model instead", gn_last_error());
                st = load_file(out, model);
            } else if (st == GN_OK && is_file(model)) {
                gn_log(GN_LOG_INFO, "%s: using tokenizer.json (tokenizer.model is also there)", path);
            }
            // a folder is read as AutoTokenizer reads it: transformers 5's LlamaTokenizer
            // class builds its own pipeline around the file's vocab and merges
            gn_tokenizer *t = st == GN_OK ? *out : NULL;
            if (t && t->kind == GN_TOK_JSON_BPE &&
                (!strcmp(t->cfg_class, "LlamaTokenizer") || !strcmp(t->cfg_class, "LlamaTokenizerFast")))
                tok_hf_llama_class(t);
        } else if (is_file(model)) {
            st = load_file(out, model);
        } else {
            st = gn_err(GN_ERR_IO, "%s: no tokenizer.json or tokenizer.model in this folder", path);
        }
        free(json);
        free(model);
        return st;
    }
    if (!is_file(path)) return gn_err(GN_ERR_IO, "%s: no such tokenizer file or folder", path);
    return load_file(out, path);
}

void gn_tokenizer_free(gn_tokenizer *t) {
    if (!t) return;
    tok_bpe_free(t);
    tok_hf_free(t);
    free(t->blob);
    free(t->off);
    free(t->len);
    free(t->score);
    free(t->type);
    free(t->ht);
    free(t->spec_ids);
    free(t->chat_template);
    free(t);
}

// ----------------------------------------------------------------------------
// accessors

int gn_tokenizer_vocab_size(const gn_tokenizer *t) { return t->n_vocab; }
int gn_tokenizer_bos(const gn_tokenizer *t) { return t->bos; }
int gn_tokenizer_eos(const gn_tokenizer *t) { return t->eos; }
gn_tok_kind gn_tokenizer_kind(const gn_tokenizer *t) { return t->kind; }
int gn_tokenizer_add_bos(const gn_tokenizer *t) { return t->add_bos && t->bos >= 0; }
const char *gn_tokenizer_chat_template(const gn_tokenizer *t) { return t->chat_template; }

int gn_tokenizer_is_special(const gn_tokenizer *t, int32_t id) {
    if (id < 0 || id >= t->n_vocab) return 0;
    return t->type[id] == TOK_CONTROL;
}

int32_t gn_tokenizer_find(const gn_tokenizer *t, const char *piece) {
    return piece ? tok_lookup(t, piece, strlen(piece)) : -1;
}

// ----------------------------------------------------------------------------
// encode

// Is token id one that the text splitter may match under these flags?
static int spec_allowed(const gn_tokenizer *t, int32_t id, int flags) {
    uint8_t ty = t->type[id];
    if (t->json && t->n_norm && t->added && (t->added[id] & ADDED_NORMALIZED))
        return 0;  // matched after normalization instead
    if (ty == TOK_USER_DEFINED) return t->kind != GN_TOK_SPM;  // SPM handles them inside the chunk
    return (flags & GN_ENC_SPECIAL) != 0;
}

// Code point of the UTF-8 character at s (n bytes left), -1 when invalid.
static long cp_at(const unsigned char *s, size_t n, int *L) {
    *L = tok_utf8_valid_len(s, n);
    if (*L == 0) { *L = 1; return -1; }
    if (*L == 1) return s[0];
    long c = s[0] & (0x7F >> *L);
    for (int i = 1; i < *L; i++) c = c << 6 | (s[i] & 0x3F);
    return c;
}

// Unicode White_Space (Rust's char::is_whitespace).
static int is_ws_cp(long c) {
    return (c >= 9 && c <= 13) || c == ' ' || c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) ||
           c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

// Length of the whitespace character ending at s[0..n), 0 when none.
static size_t ws_before(const char *s, size_t n) {
    size_t k = n;
    while (k > 0 && n - k < 4 && ((unsigned char)s[k - 1] & 0xC0) == 0x80) k--;
    if (k == 0) return 0;
    k--;
    int L;
    long c = cp_at((const unsigned char *)s + k, n - k, &L);
    return c >= 0 && (size_t)L == n - k && is_ws_cp(c) ? (size_t)L : 0;
}

static size_t ws_after(const char *s, size_t n) {
    if (!n) return 0;
    int L;
    long c = cp_at((const unsigned char *)s, n, &L);
    return c >= 0 && is_ws_cp(c) ? (size_t)L : 0;
}

// Word character for single_word: letters and digits (ASCII), any other
// non-space character outside ASCII.
static int word_cp(long c) {
    if (c < 0) return 0;
    if (c < 0x80) return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    return !is_ws_cp(c);
}

static void encode_chunk(const gn_tokenizer *t, const char *s, size_t n, int at_start, tok_ids *out);

// The normalized=true added tokens of a tokenizer.json, matched in the
// normalized text of one chunk; the pieces between go to the model.
static void encode_normalized(const gn_tokenizer *t, const char *s, size_t n, int at_start, tok_ids *out) {
    size_t start = 0;
    for (size_t i = 0; i < n && t->n_nadd; i++) {
        int k = 0;
        for (; k < t->n_nadd; k++)
            if (t->nadd_len[k] <= n - i && memcmp(s + i, t->nadd_text[k], t->nadd_len[k]) == 0) break;
        if (k == t->n_nadd) continue;
        if (i > start) tok_bpe_encode_chunk(t, s + start, i - start, at_start && start == 0, out);
        tok_ids_push(out, t->nadd_id[k]);
        i += t->nadd_len[k] - 1;
        start = i + 1;
    }
    if (n > start) tok_bpe_encode_chunk(t, s + start, n - start, at_start && start == 0, out);
}

static void encode_chunk(const gn_tokenizer *t, const char *s, size_t n, int at_start, tok_ids *out) {
    if (n == 0) return;
    if (t->kind == GN_TOK_SPM) { tok_spm_encode_chunk(t, s, n, out); return; }
    if (!t->n_norm) { tok_bpe_encode_chunk(t, s, n, at_start, out); return; }
    size_t m;
    char *norm = tok_hf_normalize(t, s, n, &m);
    encode_normalized(t, norm, m, at_start, out);
    free(norm);
}

gn_status gn_tokenizer_encode(const gn_tokenizer *t, const char *text, size_t len,
                              int flags, int32_t **ids, int *n) {
    *ids = NULL;
    *n = 0;
    if (!text && len) return gn_err(GN_ERR_ARG, "tokenizer encode: text is NULL");
    // the encoders index the (up to 3x longer) normalized text with int32
    if (len > ((size_t)1 << 28))
        return gn_err(GN_ERR_ARG, "tokenizer encode: text of %zu bytes is too long, expected at most 256 MiB "
                      "(split it)", len);
    tok_ids out = {0};
    if ((flags & GN_ENC_BOS) && t->add_bos && t->bos >= 0) tok_ids_push(&out, t->bos);
    // split at literal special tokens (leftmost, then longest); tokenizer.json
    // added tokens may take the whitespace around them (lstrip / rstrip) and
    // may have to stand alone (single_word)
    int any_spec = t->spec_start[256] > 0 && ((flags & GN_ENC_SPECIAL) || t->kind != GN_TOK_SPM);
    size_t start = 0;
    if (any_spec) {
        for (size_t i = 0; i < len; i++) {
            unsigned char c = (unsigned char)text[i];
            int32_t hit = -1;
            for (int k = t->spec_start[c]; k < t->spec_start[c + 1]; k++) {
                int32_t id = t->spec_ids[k];
                if (t->len[id] <= len - i && memcmp(text + i, tok_piece(t, id), t->len[id]) == 0 &&
                    spec_allowed(t, id, flags)) {
                    if (t->added && (t->added[id] & ADDED_SINGLE_WORD)) {
                        int L;
                        size_t e = i + t->len[id], b = i;
                        while (b > 0 && ((unsigned char)text[b - 1] & 0xC0) == 0x80 && i - b < 3) b--;
                        if (b > 0) b--;
                        if (i > 0 && word_cp(cp_at((const unsigned char *)text + b, len - b, &L))) continue;
                        if (e < len && word_cp(cp_at((const unsigned char *)text + e, len - e, &L))) continue;
                    }
                    hit = id;
                    break;
                }
            }
            if (hit < 0) continue;
            size_t ms = i, me = i + t->len[hit];
            uint8_t fl = t->added ? t->added[hit] : 0;
            if (fl & ADDED_LSTRIP)
                for (size_t w; ms > start && (w = ws_before(text + start, ms - start)) > 0;) ms -= w;
            if (fl & ADDED_RSTRIP)
                for (size_t w; me < len && (w = ws_after(text + me, len - me)) > 0;) me += w;
            encode_chunk(t, text + start, ms - start, start == 0, &out);
            tok_ids_push(&out, hit);
            i = me - 1;
            start = me;
        }
    }
    encode_chunk(t, text + start, len - start, start == 0, &out);
    if (((flags & GN_ENC_EOS) || ((flags & GN_ENC_BOS) && t->add_eos_post)) && t->eos >= 0)
        tok_ids_push(&out, t->eos);
    if (!out.v) out.v = gn_malloc(sizeof(int32_t));
    *ids = out.v;
    *n = out.n;
    return GN_OK;
}

// ----------------------------------------------------------------------------
// decode

static const char UNK_SURFACE[] = " \xE2\x81\x87 ";  // sentencepiece's " ⁇ "
static const char SPACE_MARK[] = "\xE2\x96\x81";     // U+2581 '▁'

// Appends a SentencePiece piece with '▁' -> ' ', dropping one leading '▁' when strip.
static void put_spm_piece(gn_buf *b, const char *s, size_t n, int strip) {
    size_t i = 0, run = 0;
    if (strip && n >= 3 && memcmp(s, SPACE_MARK, 3) == 0) i = run = 3;
    while (i + 3 <= n) {
        if (memcmp(s + i, SPACE_MARK, 3) == 0) {
            if (i > run) gn_buf_put(b, s + run, i - run);
            gn_buf_put(b, " ", 1);
            i += 3;
            run = i;
        } else {
            i++;
        }
    }
    if (n > run) gn_buf_put(b, s + run, n - run);
}

static int spm_strips(const gn_tokenizer *t) { return t->add_dummy_prefix && !t->ws_suffix; }

// Appends the text of one token to b (raw bytes for byte pieces / byte-level
// pieces; the caller repairs UTF-8). *first tracks the SPM dummy-prefix rule.
static void token_text(const gn_tokenizer *t, int32_t id, int skip_special, int *first, gn_buf *b) {
    uint8_t ty = t->type[id];
    const char *s = tok_piece(t, id);
    size_t n = t->len[id];
    if (ty == TOK_CONTROL) {
        if (!skip_special) gn_buf_put(b, s, n);
        return;
    }
    if (t->kind == GN_TOK_SPM || t->kind == GN_TOK_JSON_BPE) {
        int strip = *first && spm_strips(t);
        *first = 0;
        if (ty == TOK_BYTE) {
            int v = tok_byte_piece(s, n);
            if (v >= 0) { char c = (char)v; gn_buf_put(b, &c, 1); }
            return;
        }
        if (ty == TOK_UNKNOWN) { gn_buf_put(b, UNK_SURFACE, sizeof UNK_SURFACE - 1); return; }
        put_spm_piece(b, s, n, strip);
        return;
    }
    *first = 0;
    if (ty == TOK_USER_DEFINED || ty == TOK_UNKNOWN || !t->byte_level) { gn_buf_put(b, s, n); return; }
    char tmp[256];
    char *d = n <= sizeof tmp ? tmp : gn_malloc(n);
    size_t m = tok_bpe_unmap(s, n, d);
    gn_buf_put(b, d, m);
    if (d != tmp) free(d);
}

gn_status gn_tokenizer_decode(const gn_tokenizer *t, const int32_t *ids, int n,
                              int skip_special, char **out, size_t *len) {
    *out = NULL;
    if (len) *len = 0;
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= t->n_vocab)
            return gn_err(GN_ERR_ARG, "decode: token id %d at position %d is out of range, expected 0..%d",
                          (int)ids[i], i, t->n_vocab - 1);
    if (t->kind == GN_TOK_JSON_BPE) {
        size_t m;
        char *d = tok_hf_decode(t, ids, n, skip_special, &m);
        gn_buf res = {0};
        sb_put_repaired(&res, d, m, 0);  // the pieces themselves may hold any bytes
        free(d);
        if (len) *len = res.len;
        *out = gn_buf_take(&res);
        return GN_OK;
    }
    gn_buf raw = {0}, res = {0};
    int first = 1;
    int per_byte = t->kind == GN_TOK_SPM;
    for (int i = 0; i < n; i++) token_text(t, ids[i], skip_special, &first, &raw);
    sb_put_repaired(&res, raw.buf ? raw.buf : "", raw.len, per_byte);
    free(raw.buf);
    if (len) *len = res.len;
    *out = gn_buf_take(&res);
    return GN_OK;
}

int gn_tokenizer_token_bytes(const gn_tokenizer *t, int32_t id, char *buf, int cap) {
    if (id < 0 || id >= t->n_vocab) return 0;
    gn_buf b = {0};
    const char *s = tok_piece(t, id);
    size_t n = t->len[id];
    uint8_t ty = t->type[id];
    if (ty == TOK_CONTROL || ty == TOK_UNKNOWN) gn_buf_put(&b, s, n);
    else if (t->kind == GN_TOK_SPM || t->kind == GN_TOK_JSON_BPE) {
        int v = ty == TOK_BYTE ? tok_byte_piece(s, n) : -1;
        if (v >= 0) { char c = (char)v; gn_buf_put(&b, &c, 1); }
        else put_spm_piece(&b, s, n, 0);
    } else {
        int first = 0;
        token_text(t, id, 0, &first, &b);
    }
    int m = (int)b.len;
    if (buf && cap > 0) memcpy(buf, b.buf ? b.buf : "", (size_t)(m < cap ? m : cap));
    free(b.buf);
    return m;
}

// ----------------------------------------------------------------------------
// streaming decode
//
// State: pending[0..npending) holds the bytes of an unfinished UTF-8 character
// (at most 3); pending[7] records the tokenizer kind's replacement rule for
// flush (1 = one U+FFFD per byte, sentencepiece; 0 = per maximal subpart).
// `first` is 1 until a token produced text; set it to 0 after init to keep the
// leading space of the first token (e.g. when continuing after a prompt).
// Control tokens (BOS/EOS/<|im_end|>...) produce no text. buf should hold the
// token's bytes plus 4 (256 bytes is plenty for real vocabularies); text beyond
// cap is dropped at a character boundary.

void gn_detok_stream_init(gn_detok_stream *s) {
    memset(s, 0, sizeof *s);
    s->first = 1;
}

// Copies src to buf within cap, never splitting a UTF-8 character; returns bytes written.
static int put_capped(char *buf, int cap, int at, const char *src, size_t n) {
    if (at >= cap) return 0;
    size_t room = (size_t)(cap - at);
    if (n > room) {
        n = room;
        while (n > 0 && ((unsigned char)src[n] & 0xC0) == 0x80) n--;
    }
    memcpy(buf + at, src, n);
    return (int)n;
}

int gn_detok_stream_push(const gn_tokenizer *t, gn_detok_stream *s, int32_t id,
                         char *buf, int cap) {
    if (id < 0 || id >= t->n_vocab || !buf || cap <= 0) return 0;
    int per_byte = t->kind != GN_TOK_BYTE_BPE;
    s->pending[7] = (char)per_byte;
    if (s->npending < 0 || s->npending > 3) s->npending = 0;
    gn_buf in = {0};
    if (s->npending) gn_buf_put(&in, s->pending, (size_t)s->npending);
    token_text(t, id, 1, &s->first, &in);
    s->npending = 0;
    if (!in.buf) return 0;
    // find the start of an unfinished character at the very end
    size_t n = in.len, keep = n;
    const unsigned char *u = (const unsigned char *)in.buf;
    for (size_t k = n > 3 ? n - 3 : 0; k < n; k++) {
        if (tok_utf8_lead_len(u[k]) > 1 && tok_utf8_valid_len(u + k, n - k) == 0 &&
            (size_t)utf8_subpart_len(u + k, n - k) == n - k &&
            (size_t)tok_utf8_lead_len(u[k]) > n - k) { keep = k; break; }
    }
    gn_buf outb = {0};
    sb_put_repaired(&outb, in.buf, keep, per_byte);
    memcpy(s->pending, in.buf + keep, n - keep);
    s->npending = (int)(n - keep);
    int w = outb.buf ? put_capped(buf, cap, 0, outb.buf, outb.len) : 0;
    free(in.buf);
    free(outb.buf);
    return w;
}

int gn_detok_stream_flush(gn_detok_stream *s, char *buf, int cap) {
    if (s->npending <= 0 || s->npending > 3 || !buf || cap <= 0) { s->npending = 0; return 0; }
    gn_buf outb = {0};
    sb_put_repaired(&outb, s->pending, (size_t)s->npending, s->pending[7] == 1);
    s->npending = 0;
    int w = put_capped(buf, cap, 0, outb.buf, outb.len);
    free(outb.buf);
    return w;
}
