/*
 * tok_internal.h — the tokenizer object shared by tokenizer.c (load dispatch,
 * decode, streaming, special tokens), spm.c (SentencePiece BPE: tokenizer.model
 * reader and encoder), bpe.c (byte-level BPE: tokenizer.json reader,
 * pre-tokenizer, merges) and tok_gguf.c (vocab from GGUF keys).
 *
 * One vocabulary layout serves both kinds: pieces live in one blob, looked up by
 * an open-addressing hash table; token types use the SentencePiece / GGUF
 * numbering (NORMAL=1 .. BYTE=6). Not part of the public API.
 */
#ifndef GN_TOK_INTERNAL_H
#define GN_TOK_INTERNAL_H

#include <stddef.h>  // size_t
#include <stdint.h>  // int32_t, uint32_t, uint64_t

#include "core/common.h"  // gn_status, gn_err, gn_malloc

// Token types, as in sentencepiece_model.proto and GGUF tokenizer.ggml.token_type.
enum {
    TOK_UNDEFINED = 0,
    TOK_NORMAL = 1,
    TOK_UNKNOWN = 2,
    TOK_CONTROL = 3,
    TOK_USER_DEFINED = 4,
    TOK_UNUSED = 5,
    TOK_BYTE = 6,
};

// One step of a byte-level BPE pre-tokenizer (HF "Split"/"Digits"/"ByteLevel"
// or one regex of a llama.cpp tokenizer.ggml.pre list).
enum { SPLIT_ISOLATED, SPLIT_REMOVED, SPLIT_MERGED_PREV, SPLIT_MERGED_NEXT, SPLIT_CONTIGUOUS };
enum { PREPEND_NEVER, PREPEND_FIRST, PREPEND_ALWAYS };  // HF Metaspace prepend_scheme
typedef struct {
    void *re;          // pcre2_code_8*
    int behavior;      // SPLIT_*
    int invert;        // HF invert: matches and the text between them swap roles
    int prefix_space;  // ByteLevel add_prefix_space: prepend ' ' to each piece first
    int metaspace;     // HF Metaspace: ' ' -> rep, rep prepended per `prepend`, split before rep when ms_split
    int prepend, ms_split, rep_len;
    char rep[8];       // the replacement character, UTF-8
} tok_pre_step;

// One step of an HF tokenizer.json normalizer (applied to each text chunk).
enum { NORM_PREPEND, NORM_REPLACE, NORM_REPLACE_RE };
typedef struct {
    int op;
    char *pat, *content;  // NORM_REPLACE: literal pattern; NORM_PREPEND: content only
    size_t npat, ncontent;
    void *re;             // NORM_REPLACE_RE: pcre2_code_8*
} tok_norm_step;

// One step of an HF tokenizer.json decoder chain.
enum { DEC_REPLACE, DEC_BYTE_FALLBACK, DEC_FUSE, DEC_STRIP, DEC_METASPACE };
typedef struct {
    int op;
    char *pat, *content;  // DEC_REPLACE; DEC_STRIP/DEC_METASPACE: content = the character
    size_t npat, ncontent;
    int start, stop;      // DEC_STRIP: how many leading / trailing copies to remove
    int prepend;          // DEC_METASPACE: PREPEND_*
} tok_dec_step;

// Added-token flags (tokenizer.json added_tokens), per id.
enum { ADDED_LSTRIP = 1, ADDED_RSTRIP = 2, ADDED_SINGLE_WORD = 4, ADDED_NORMALIZED = 8, ADDED_ANY = 16 };

// Pair (left id, right id) -> (rank, merged id), open addressing.
typedef struct {
    uint64_t *key;     // (left << 32) | right; UINT64_MAX = empty
    int32_t *rank;
    int32_t *result;
    uint32_t mask;     // capacity - 1
    uint32_t n;
} tok_pair_map;

struct gn_tokenizer {
    gn_tok_kind kind;
    int n_vocab;
    char *blob;        // all piece texts, each NUL-terminated
    size_t blob_len, blob_cap;
    uint32_t *off;     // (n_vocab) piece i starts at blob + off[i]
    uint32_t *len;     // (n_vocab) its byte length
    float *score;      // (n_vocab) SentencePiece merge priority (0 for BPE)
    uint8_t *type;     // (n_vocab) TOK_*
    int32_t *ht;       // piece -> id hash table, -1 = empty
    uint32_t ht_mask;

    int bos, eos, unk, pad;  // -1 when none
    int add_bos, add_eos;
    char *chat_template;     // NULL when none

    // SentencePiece
    int add_dummy_prefix, remove_extra_ws, escape_ws, ws_suffix, byte_fallback;
    int32_t byte_tok[256];   // id of <0xXX>, -1 when absent
    int has_user_defined;    // any USER_DEFINED piece (checked while encoding)
    int spm_ws_split;        // encode in segments cut before '▁' (see spm.c)
    int max_piece_len;

    // tokens matched in raw text (CONTROL/UNKNOWN/USER_DEFINED), grouped by
    // first byte, longest first within a group: spec_ids[spec_start[b] .. spec_start[b+1])
    int32_t *spec_ids;
    int32_t spec_start[257];

    // byte-level BPE
    int byte_level;          // pieces are GPT-2 byte-mapped text
    int ignore_merges;       // a pre-token that is a whole vocab piece skips merging (LLaMA 3)
    int32_t byte_char_tok[256]; // id of the one-char piece for byte b, -1 when absent
    tok_pair_map merges;
    tok_pre_step *pre;
    int n_pre;

    // tokenizer.json read as HF tokenizers reads it
    int json;                // loaded from tokenizer.json
    int fuse_unk;            // consecutive unknown characters become one <unk>
    uint8_t *added;          // (n_vocab) ADDED_* flags; NULL when the file lists no added_tokens
    tok_norm_step *norm;     // normalizer steps, in order
    int n_norm;
    tok_dec_step *dec;       // decoder steps, in order (json kind)
    int n_dec, has_decoder;  // no decoder: tokens joined with ' '
    int add_eos_post;        // post_processor appends EOS
    // tokenizer_config.json: tokenizer_class, legacy, add_prefix_space (-1 when absent)
    char cfg_class[64];
    int cfg_legacy, cfg_add_prefix_space;
    // added tokens with normalized=true, matched in normalized text by their
    // normalized content (HF normalizes the token text too), longest first
    char **nadd_text;
    size_t *nadd_len;
    int32_t *nadd_id;
    int n_nadd;
};

// ---------------------------------------------------------------------------
// vocabulary building (tokenizer.c)

// Allocates a tokenizer with n_vocab empty UNUSED pieces and defaults.
gn_tokenizer *tok_new(int n_vocab);
// Extends the vocabulary to n_vocab ids (new ones empty UNUSED); call tok_finish after.
void tok_grow(gn_tokenizer *t, int n_vocab);
// Sets the text of piece id (copied); type and score set separately.
void tok_set_piece(gn_tokenizer *t, int32_t id, const char *s, size_t n);
// Builds the hash table, byte_tok, spec lists. Returns GN_OK. Duplicate
// pieces keep the lowest id (as sentencepiece does).
gn_status tok_finish(gn_tokenizer *t);
// -1 when absent.
int32_t tok_lookup(const gn_tokenizer *t, const char *s, size_t n);
static inline const char *tok_piece(const gn_tokenizer *t, int32_t id) { return t->blob + t->off[id]; }

// ---------------------------------------------------------------------------
// UTF-8 helpers (tokenizer.c)

// Length of the valid UTF-8 sequence at s (1..4), or 0 when the bytes at s do
// not start a valid, complete, shortest-form sequence of a scalar value.
int tok_utf8_valid_len(const unsigned char *s, size_t n);
// The byte of a "<0xXX>" piece (exactly that form, hex in either case), else -1:
// SentencePiece byte pieces and the ByteFallback decoder's test.
int tok_byte_piece(const char *s, size_t n);
// Length of the sequence its lead byte announces (1..4), 1 for a bad lead byte.
int tok_utf8_lead_len(unsigned char c);

// Growable int32 array for encoder output.
typedef struct { int32_t *v; int n, cap; } tok_ids;
void tok_ids_push(tok_ids *a, int32_t x);

// ---------------------------------------------------------------------------
// kinds

// spm.c
gn_status tok_spm_load_model(gn_tokenizer **out, const char *path, const uint8_t *data, size_t size);
// Encodes one text chunk (no special tokens inside) with SentencePiece BPE.
void tok_spm_encode_chunk(const gn_tokenizer *t, const char *text, size_t len, tok_ids *out);
int tok_spm_ws_splittable(const gn_tokenizer *t);

// bpe.c
gn_status tok_bpe_load_json(gn_tokenizer **out, const char *path, const char *json, size_t len);
// Installs the pre-tokenizer that a GGUF tokenizer.ggml.pre name stands for.
gn_status tok_bpe_set_pre_name(gn_tokenizer *t, const char *pre, const char *path);
// Adds one merge by piece texts; unknown pieces are skipped (returns 0), else 1.
int tok_bpe_add_merge(gn_tokenizer *t, const char *a, size_t na, const char *b, size_t nb, int32_t rank);
void tok_bpe_init_merges(gn_tokenizer *t, uint32_t n_hint);
void tok_bpe_init_byte_chars(gn_tokenizer *t);
// Encodes one chunk; at_start: the chunk begins the text (Metaspace prepend_scheme "first").
void tok_bpe_encode_chunk(const gn_tokenizer *t, const char *text, size_t len, int at_start, tok_ids *out);
void tok_bpe_free(gn_tokenizer *t);
// Reads tokenizer_config.json / chat_template.jinja beside path (any kind).
gn_status tok_read_config(gn_tokenizer *t, const char *path, int *cfg_add_bos);
// Appends the bytes that a byte-level piece stands for (inverse GPT-2 byte map;
// chars outside the map are copied as UTF-8).
size_t tok_bpe_unmap(const char *piece, size_t n, char *dst);

// hf.c: tokenizer.json normalizers and decoders
gn_status tok_metaspace_params(const void *node, char *rep, int *rep_len, int *prepend, int *split,
                               const char *path, const char *where);
gn_status tok_hf_read_normalizer(gn_tokenizer *t, const void *json_node, const char *path, const char *where);
gn_status tok_hf_read_decoder(gn_tokenizer *t, const void *json_node, const char *path, const char *where);
// Normalized text of s[0..n) (malloc'd, *m bytes).
char *tok_hf_normalize(const gn_tokenizer *t, const char *s, size_t n, size_t *m);
// Decodes ids with the decoder chain into a malloc'd string (*len bytes).
char *tok_hf_decode(const gn_tokenizer *t, const int32_t *ids, int n, int skip_special, size_t *len);
void tok_hf_free(gn_tokenizer *t);
// transformers 5's LlamaTokenizer rebuilds the pipeline around the file's vocab and merges:
// no normalizer, Metaspace (prepend from legacy / add_prefix_space, no split), decoder
// Replace + ByteFallback + Fuse (+ Strip). Applied when tokenizer_config.json names it.
void tok_hf_llama_class(gn_tokenizer *t);
// Compiles an HF regex (Oniguruma syntax as PCRE2, \s spelled out); bpe.c.
gn_status tok_compile_re(void **out, const char *pat, size_t n, int is_literal, const char *path, const char *where);

#endif
