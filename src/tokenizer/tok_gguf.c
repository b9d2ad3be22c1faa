/*
 * tok_gguf.c — builds a tokenizer from the tokenizer.ggml.* keys of an opened
 * GGUF (gguf.h), as llama.cpp writes them:
 *   tokenizer.ggml.model       "llama" (SentencePiece BPE) or "gpt2" (byte-level BPE)
 *   tokenizer.ggml.tokens      [string]  pieces (byte-level: GPT-2 byte-mapped text)
 *   tokenizer.ggml.scores      [float32] SentencePiece merge priorities (llama)
 *   tokenizer.ggml.token_type  [int32]   1 normal, 2 unknown, 3 control,
 *                                        4 user-defined, 5 unused, 6 byte
 *   tokenizer.ggml.merges      [string]  "a b", rank = position (gpt2)
 *   tokenizer.ggml.pre         pre-tokenizer name (gpt2; see bpe.c)
 *   tokenizer.ggml.{bos,eos,unknown,padding}_token_id, add_bos_token,
 *   add_eos_token, add_space_prefix, remove_extra_whitespaces, tokenizer.chat_template
 * Defaults follow llama.cpp: llama adds BOS and a space prefix, bos=1 eos=2 unk=0;
 * gpt2 adds no BOS unless the pre-tokenizer is LLaMA 3's or the key says so.
 */
#include "tok_internal.h"

#include <stdlib.h>  // free
#include <string.h>  // strcmp

#include "../formats/gguf.h"  // gn_gguf, gn_gguf_get, gn_gguf_arr_*
#include "tokenizer.h"        // gn_tokenizer_from_gguf

// The array under key with element type et, or NULL (message set) when absent
// or of another shape. n_expect > 0 also checks the length.
static gn_status get_array(const gn_gguf *g, const char *key, gguf_type et, uint64_t n_expect,
                           int required, const gguf_kv **out) {
    const char *path = g->map.path;
    *out = NULL;
    const gguf_kv *kv = gn_gguf_get(g, key);
    if (!kv) {
        if (!required) return GN_OK;
        return gn_err(GN_ERR_FORMAT, "%s: key %s: missing, expected an array", path, key);
    }
    if (kv->type != GGUF_T_ARRAY || kv->arr_type != et)
        return gn_err(GN_ERR_FORMAT, "%s: key %s: has type %d/%d, expected an array of type %d", path, key,
                      (int)kv->type, (int)kv->arr_type, (int)et);
    if (n_expect && kv->arr_n != n_expect)
        return gn_err(GN_ERR_FORMAT, "%s: key %s: has %llu entries, expected %llu (one per token)", path, key,
                      (unsigned long long)kv->arr_n, (unsigned long long)n_expect);
    if (et == GGUF_T_STRING && !kv->arr_str)
        return gn_err(GN_ERR_FORMAT, "%s: key %s: string array without strings", path, key);
    *out = kv;
    return GN_OK;
}

// Reads an optional token id key; absent keeps *dst. UINT32_MAX / negative = none.
static gn_status get_id(const gn_gguf *g, const char *key, int n_vocab, int *dst) {
    const gguf_kv *kv = gn_gguf_get(g, key);
    if (!kv) return GN_OK;
    if (kv->type == GGUF_T_STRING || kv->type == GGUF_T_ARRAY || kv->type == GGUF_T_FLOAT32 ||
        kv->type == GGUF_T_FLOAT64)
        return gn_err(GN_ERR_FORMAT, "%s: key %s: expected an integer token id", g->map.path, key);
    int64_t v = kv->i;
    if (v < 0 || v == (int64_t)UINT32_MAX) { *dst = -1; return GN_OK; }
    if (v >= n_vocab)
        return gn_err(GN_ERR_FORMAT, "%s: key %s: id %lld is out of range, expected 0..%d", g->map.path, key,
                      (long long)v, n_vocab - 1);
    *dst = (int)v;
    return GN_OK;
}

static int get_bool(const gn_gguf *g, const char *key, int dflt) {
    const gguf_kv *kv = gn_gguf_get(g, key);
    if (!kv || kv->type == GGUF_T_STRING || kv->type == GGUF_T_ARRAY) return dflt;
    return kv->i != 0;
}

gn_status gn_tokenizer_from_gguf(gn_tokenizer **out, const gn_gguf *g) {
    *out = NULL;
    const char *path = g->map.path ? g->map.path : "(gguf)";
    gn_status st = GN_OK;
    gn_tokenizer *t = NULL;
    char *model = gn_gguf_get_str(g, "tokenizer.ggml.model");
    char *pre = gn_gguf_get_str(g, "tokenizer.ggml.pre");
    if (!model) {
        st = gn_err(GN_ERR_FORMAT, "%s: key tokenizer.ggml.model: missing, expected \"llama\" or \"gpt2\" "
                    "(this GGUF carries no vocabulary)", path);
        goto fail;
    }
    int spm = strcmp(model, "llama") == 0, bpe = strcmp(model, "gpt2") == 0;
    if (!spm && !bpe) {
        st = gn_err(GN_ERR_UNSUPPORTED, "%s: key tokenizer.ggml.model: '%s', expected \"llama\" or \"gpt2\"",
                    path, model);
        goto fail;
    }
    const gguf_kv *tokens, *scores, *types, *merges = NULL;
    if ((st = get_array(g, "tokenizer.ggml.tokens", GGUF_T_STRING, 0, 1, &tokens)) != GN_OK) goto fail;
    if (tokens->arr_n == 0 || tokens->arr_n > (1u << 24)) {
        st = gn_err(GN_ERR_FORMAT, "%s: key tokenizer.ggml.tokens: %llu tokens, expected 1..16777216", path,
                    (unsigned long long)tokens->arr_n);
        goto fail;
    }
    int n = (int)tokens->arr_n;
    if ((st = get_array(g, "tokenizer.ggml.scores", GGUF_T_FLOAT32, (uint64_t)n, 0, &scores)) != GN_OK) goto fail;
    if ((st = get_array(g, "tokenizer.ggml.token_type", GGUF_T_INT32, (uint64_t)n, 0, &types)) != GN_OK) goto fail;
    if (bpe && (st = get_array(g, "tokenizer.ggml.merges", GGUF_T_STRING, 0, 1, &merges)) != GN_OK) goto fail;

    t = tok_new(n);
    t->kind = spm ? GN_TOK_SPM : GN_TOK_BYTE_BPE;
    for (int i = 0; i < n; i++) {
        const gguf_str *s = &tokens->arr_str[i];
        tok_set_piece(t, i, s->p, (size_t)s->len);
        int ty = TOK_NORMAL;
        if (types) {
            int64_t v = gn_gguf_arr_int(types, (uint64_t)i);
            if (v < 0 || v > 6) {
                st = gn_err(GN_ERR_FORMAT, "%s: key tokenizer.ggml.token_type[%d]: %lld, expected 0..6", path, i,
                            (long long)v);
                goto fail;
            }
            ty = v == 0 ? TOK_NORMAL : (int)v;  // 0 = undefined: treated as normal text
        }
        t->type[i] = (uint8_t)ty;
        t->score[i] = scores ? (float)gn_gguf_arr_float(scores, (uint64_t)i) : 0.0f;
    }
    if ((st = tok_finish(t)) != GN_OK) goto fail;
    if (spm) {
        t->bos = 1 < n ? 1 : -1;
        t->eos = 2 < n ? 2 : -1;
        t->unk = 0;
        t->add_bos = 1;
        t->add_dummy_prefix = 1;
        t->remove_extra_ws = 0;
        t->byte_fallback = 1;  // llama.cpp always falls back to <0xXX> pieces
        t->add_dummy_prefix = get_bool(g, "tokenizer.ggml.add_space_prefix", 1);
        t->remove_extra_ws = get_bool(g, "tokenizer.ggml.remove_extra_whitespaces", 0);
    } else {
        t->add_dummy_prefix = 0;
        if ((st = tok_bpe_set_pre_name(t, pre, path)) != GN_OK) goto fail;
        tok_bpe_init_merges(t, (uint32_t)merges->arr_n);
        for (uint64_t i = 0; i < merges->arr_n; i++) {
            const gguf_str *s = &merges->arr_str[i];
            const char *sp = NULL;
            for (uint64_t k = 1; k < s->len; k++)
                if (s->p[k] == ' ') { sp = s->p + k; break; }
            if (!sp) {
                st = gn_err(GN_ERR_FORMAT, "%s: key tokenizer.ggml.merges[%llu]: no space, expected \"a b\"", path,
                            (unsigned long long)i);
                goto fail;
            }
            // merges whose pieces are not tokens can never fire (llama.cpp looks them up by text)
            tok_bpe_add_merge(t, s->p, (size_t)(sp - s->p), sp + 1, (size_t)(s->p + s->len - sp - 1), (int32_t)i);
        }
        tok_bpe_init_byte_chars(t);
    }
    if ((st = get_id(g, "tokenizer.ggml.bos_token_id", n, &t->bos)) != GN_OK) goto fail;
    if ((st = get_id(g, "tokenizer.ggml.eos_token_id", n, &t->eos)) != GN_OK) goto fail;
    if ((st = get_id(g, "tokenizer.ggml.unknown_token_id", n, &t->unk)) != GN_OK) goto fail;
    if ((st = get_id(g, "tokenizer.ggml.padding_token_id", n, &t->pad)) != GN_OK) goto fail;
    t->add_bos = get_bool(g, "tokenizer.ggml.add_bos_token", t->add_bos);
    t->add_eos = get_bool(g, "tokenizer.ggml.add_eos_token", t->add_eos);
    t->chat_template = gn_gguf_get_str(g, "tokenizer.chat_template");
    free(model);
    free(pre);
    *out = t;
    return GN_OK;
fail:
    free(model);
    free(pre);
    gn_tokenizer_free(t);
    return st;
}
