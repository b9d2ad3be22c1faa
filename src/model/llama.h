/*
 * llama.h — the LLaMA model as the library holds it: config, weight table,
 * and the session (KV cache + scratch) used by the forward pass.
 */
#ifndef GN_LLAMA_H
#define GN_LLAMA_H

#include "../formats/gguf.h"
#include "../tensor/kernels.h"

typedef struct {
    const float *attn_norm;  // (C)
    const float *ffn_norm;   // (C)
    gn_mat wq;               // (NH*hs, C)
    gn_mat wk;               // (NKV*hs, C)
    gn_mat wv;               // (NKV*hs, C)
    gn_mat wo;               // (C, NH*hs)
    gn_mat w_gate;           // (HD, C)
    gn_mat w_up;             // (HD, C)
    gn_mat w_down;           // (C, HD)
} gn_layer;

struct gn_model {
    gn_config cfg;
    char *path;              // what the user passed
    char *source;            // "safetensors", "pytorch-bin" or "gguf"
    gn_tensor_table tt;      // HF files (mapped)
    gn_gguf *gguf;           // GGUF file (mapped), or NULL
    gn_dtype wdtype;         // dtype of the matrices we compute with (F32 or BF16)
    gn_mat embed;            // (V, C) token embedding table (F32 or BF16)
    gn_mat lm_head;          // (V, C); same data as embed when tied
    const float *final_norm; // (C)
    gn_layer *layers;        // (L)
    float *rope_inv_freq;    // (n_rot/2) per-pair inverse frequencies (scaling applied)
    int n_rot;               // rotary dims per head (= head_dim for LLaMA)
    void **owned;            // buffers converted at load (freed with the model)
    int nowned;
    size_t weight_bytes;     // bytes of all weights as computed with
    int64_t n_params;
    gn_tokenizer *tok;       // may be NULL
};

struct gn_session {
    const gn_model *m;
    int max_seq;             // cache capacity in tokens
    int pos;                 // tokens in the cache
    float *k_cache;          // (L, max_seq, NKV*hs)
    float *v_cache;          // (L, max_seq, NKV*hs)
    int chunk;               // tokens per forward chunk (scratch is sized for it)
    float *x, *xb, *q, *k, *v, *att, *hb, *hb2; // activations for one chunk
    float *att_scores;       // (nthreads, max_seq)
    float *rope_cs;          // (2, chunk, n_rot/2): cos then sin for the chunk's positions
    int nthreads;
    float *logits;           // (logits_cap, V)
    int logits_cap;
};

#endif
