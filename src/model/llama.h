/*
 * llama.h — the LLaMA model as the library holds it: config, weight table,
 * and the session (KV cache + scratch) used by the forward pass.
 */
#ifndef GN_LLAMA_H
#define GN_LLAMA_H

#include "../formats/gguf.h"
#include "../tensor/kernels.h"
#include "../quant/nf4.h"
#include "ops.h"          // the layer ops: linear, rmsnorm, rope, swiglu, embed
#include "../lora/lora.h" // gn_adapter, gn_lora_mod: the LoRA term of the linears

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

// The seven LLaMA linear modules, in the order the forward pass visits them.
enum { GN_MOD_Q, GN_MOD_K, GN_MOD_V, GN_MOD_O, GN_MOD_GATE, GN_MOD_UP, GN_MOD_DOWN, GN_N_MODS };
extern const char *const GN_MOD_NAMES[GN_N_MODS];  // "q_proj", ...
extern const char *const GN_MOD_PATHS[GN_N_MODS];  // "self_attn.q_proj", "mlp.gate_proj", ...

struct gn_model {
    gn_config cfg;
    char *path;              // what the user passed
    char *source;            // "safetensors", "pytorch-bin" or "gguf"
    gn_tensor_table tt;      // HF files (mapped)
    gn_gguf *gguf;           // GGUF file (mapped), or NULL
    gn_dtype wdtype;         // dtype of the matrices we compute with (F32 or BF16; a GGUF's Q4_0/Q4_1/Q8_0 ones stay so)
    gn_mat embed;            // (V, C) token embedding table (F32, BF16, or Q4_0/Q4_1/Q8_0 as a GGUF holds it)
    gn_mat lm_head;          // (V, C); same data as embed when tied
    const float *final_norm; // (C)
    gn_layer *layers;        // (L)
    float *rope_inv_freq;    // (n_rot/2) per-pair inverse frequencies (scaling applied)
    int n_rot;               // rotary dims per head (= head_dim for LLaMA)
    void **owned;            // buffers converted at load (freed with the model)
    int nowned;
    size_t weight_bytes;     // bytes of all weights as computed with
    size_t pinned_bytes;     // bytes of them copied out of the file mapping at load (load.c: pin_weights)
    int64_t n_params;
    gn_tokenizer *tok;       // may be NULL
    gn_quant4_state *q4;     // (n_q4) 4-bit linear weights, or NULL
    int n_q4;
    int head_copy;           // lm_head is a 4-bit copy of the tied embedding table (--4bit-head)
    gn_load_opts opts;       // as loaded
    gn_dtype file_compute_dtype; // quantization_config.bnb_4bit_compute_dtype of a 4-bit checkpoint (F32 if none)
    void *cuda;              // the weights on the GPU (src/cuda/cuda_model.c, --device cuda), or NULL
};

struct gn_session {
    const gn_model *m;
    int max_seq;             // cache capacity in tokens
    int pos;                 // tokens in the cache
    int kv_seq;              // positions per layer in the caches: max_seq rounded up to GN_KT
    void *k_cache;           // (L, NKV, kv_seq, hs), tiled (kvcache.h): float, or bf16 bit patterns when kv_bf16
    void *v_cache;           // (L, NKV, kv_seq, hs), tiled
    int kv_bf16;             // the cache holds bf16: 4-bit layers with a bf16 compute dtype, where
                             // k and v come out of their products in bf16 already (half the bytes
                             // decode reads per token; keys rounded after RoPE, as a bf16 model's are);
                             // the keys of either kind are tiled for the decode kernels (gn_kt_at,
                             // gn_kt_at_f32 in tensor/kernels.h)
    float *kv_f32;           // prefill: one layer's keys out of their tiles (and a bf16 cache's values) as float32
    size_t kv_f32_cap;       // floats in kv_f32
    int chunk;               // tokens per forward chunk (scratch is sized for it)
    float *x, *xb, *q, *k, *v, *att, *hb, *hb2; // activations for one chunk
    float *att_scores;       // (nthreads, att_rows, max_seq): scores of one attention task per thread
    int att_rows;            // max(GN_ATT_RB, query heads per KV head)
    float *att_part;         // decode partial softmaxes (max, sum, values) of every (row, stretch, head)
    size_t att_part_cap;     // floats in att_part
    float *rope_cs;          // (2, chunk, n_rot/2): cos then sin for the chunk's positions
    int nthreads;
    float *logits;           // (logits_cap, V)
    int logits_cap;
    const gn_adapter *adapter; // LoRA applied unmerged, or NULL
    float *lora_tmp;         // (max(chunk, 3), max r): LoRA hiddens (x A^T) of a chunk
    int lora_rmax;
    void *cuda;              // KV cache and scratch on the GPU (src/cuda/cuda_model.c), or NULL
};

#endif
