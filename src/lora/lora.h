/*
 * lora.h — PEFT LoRA adapters on a LLaMA model: y = W0 x + s * B (A x), with
 * s = lora_alpha / r (or lora_alpha / sqrt(r) with use_rslora).
 *
 * The adapter structs and the unmerged LoRA term, forward and backward (apply.c);
 * reading and writing adapter files (lora.c); merging into the base (merge.c).
 * Modules are indexed (layer, GN_MOD_*) as model/llama.h lists them.
 */
#ifndef GN_LORA_H
#define GN_LORA_H

#include "../core/common.h"  // gn_dtype, gn_adapter
#include "../quant/nf4.h"    // gn_quant4_state

typedef struct {
    int r;          // 0: module not adapted
    float scale;    // alpha / r  (or alpha / sqrt(r))
    float *A;       // (r, IC) f32, owned
    float *B;       // (OC, r) f32, owned
    int64_t in, out;
    // bf16 copies of A and B when every value is a bf16 (a bf16 adapter file, as qlora's
    // --bf16 runs save): decode reads these, half the bytes per token, same products.
    // NULL otherwise, and always for a trainer's adapter (its A/B change every step).
    uint16_t *A16, *B16;
} gn_lora_mod;

struct gn_adapter {
    char *path, *name;
    int n_layers;
    gn_lora_mod *mods;   // (n_layers, GN_N_MODS)
    int r;               // config r (default rank)
    float alpha;         // config lora_alpha
    int use_rslora;
    gn_dtype file_dtype; // dtype the tensors were stored in
    int borrowed;        // A/B point into a trainer's buffer: not freed with the adapter
    int interleaved;     // q/k lora_B rows are in GGUF (interleaved) order; files hold HF order
    int n_heads, n_kv_heads, head_dim;
    void *bf16_arena;    // the modules' A16/B16, when packed into one buffer (pack_bf16), else NULL
};

// The LoRA branch of a linear over T rows, for inference and training alike. xin (T, IC) is
// the branch's input: the linear's input, or the trainer's dropout-masked copy of it.
//   ul (T, r) = xin A^T;  then, with y: y (T, OC) += s ul B^T
// gemm: gn_gemm flags (GN_GEMM_BF16: bf16 products, as a bf16 training run's autocast). Does
// nothing for an unadapted module (r == 0).
void gn_lora_fwd(const gn_lora_mod *lm, const float *xin, float *ul, float *y, int64_t T, unsigned gemm);
// Its backward, given dy (T, OC) and the forward's xin and ul; z is (T, r) scratch:
//   dB (OC, r) += s dy^T ul;  z = dy B;  dA (r, IC) += s z^T xin;  dx (T, IC) = s z A + dx_beta dx
// (dx_beta 1: added to the base's input gradient; 0: stored, for the trainer to mask).
void gn_lora_bwd(const gn_lora_mod *lm, const float *xin, const float *ul, const float *dy, float *dA, float *dB,
                 float *z, float *dx, float dx_beta, int64_t T, unsigned gemm);

// One decode row (T = 1) through the adapters of n <= 3 modules ks[] of layer l that share the
// input in (IC): outs[i] += s_i B_i (A_i in), in one parallel region. tmp holds the summed ranks.
// base (the modules' 4-bit weights, or NULL): their rows are computed into outs first, in the
// same region.
void gn_lora_row_multi(const gn_adapter *ad, int l, const int *ks, int n, const float *in, int64_t IC,
                       float *const *outs, float *tmp, const gn_quant4_state *const *base);

#endif
