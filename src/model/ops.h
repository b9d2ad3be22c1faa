/*
 * ops.h — the operations of a LLaMA layer, one definition each, shared by the
 * inference forward (model/forward.c) and the trainer (train/train.c). Each op
 * has its forward and, where training needs it, its backward. All tensors are
 * float32 row-major; T rows (positions), C channels.
 *
 *   x   = embed(ids)                       gn_op_embed
 *   xn  = rmsnorm(x) * w                   gn_op_rmsnorm_fwd / _bwd
 *   y   = x W^T                            gn_linear / gn_linear_nn (W frozen: F32, BF16 or 4-bit)
 *   q,k = rope(q,k)                        gn_op_rope_angles, gn_op_rope (sign -1: the backward)
 *   o   = softmax(q k^T / sqrt(hs)) v      gn_op_attention_fwd / _bwd (causal, grouped KV heads)
 *   h   = silu(g) * u                      gn_op_swiglu_fwd / _bwd
 *   y  += x                                gn_op_residual
 *   logits = x W_head^T                    gn_linear (the head is a frozen linear)
 *   loss = logsumexp(logits) - logits[y]   gn_op_xent (with its gradient)
 *
 * The LoRA term of a linear is lora/apply.c's (gn_lora_fwd / gn_lora_bwd), the
 * same for both. One decode row per session attends through the KV cache's own
 * kernel (tiled keys, split softmax: tensor/attention.c), a kernel of the same
 * attention op.
 */
#ifndef GN_OPS_H
#define GN_OPS_H

#include "../tensor/kernels.h"

// The frozen base's linear layers, whatever the weight dtype:
// out (T, OC) = inp (T, IC) @ W^T, and the input gradient out (T, IC) = dy (T, OC) @ W.
void gn_linear(float *out, const float *inp, const gn_mat *w, int64_t T);
void gn_linear_nn(float *out, const float *dy, const gn_mat *w, int64_t T);
// Rows [r0, r0+n) of w as float32 (n, IC): 4-bit weights dequantized and rounded to
// their compute dtype (what the products use), other dtypes widened.
void gn_linear_rows_f32(const gn_mat *w, int64_t r0, int64_t n, float *dst);

// Two or three products of the same input (q/k/v, gate/up; w3 may be NULL): one parallel
// loop for all when every weight is 4-bit, else one gn_linear each.
void gn_linear3(float *o1, const gn_mat *w1, float *o2, const gn_mat *w2, float *o3, const gn_mat *w3,
                const float *inp, int64_t T);

// x (T, C) = the rows ids[0..T) of the embedding table e (V, C), F32, BF16 or ggml blocks, as float32.
void gn_op_embed(float *x, const gn_mat *e, const int32_t *ids, int T);

// y (T, C) = x / sqrt(mean(x^2) + eps) * w, w (C).
void gn_op_rmsnorm_fwd(float *y, const float *x, const float *w, int T, int C, float eps);
// Its backward: dx (T, C) = rstd * (w*dy) - x * rstd^3 / C * sum(w*dy*x); added to dx when accumulate.
void gn_op_rmsnorm_bwd(float *dx, const float *dy, const float *x, const float *w, int T, int C, float eps, int accumulate);

// The cos and sin (half = n_rot/2 each) of position pos's RoPE angles pos * inv_freq[i],
// float32 as HF computes them.
void gn_op_rope_angles(float *cs, float *sn, const float *inv_freq, int half, int pos);
// Rotates n_heads head vectors of size hs at one position (only the first n_rot dims) by the
// angles of cs/sn; sign -1 rotates back, which is the backward (the rotation's transpose).
// interleaved: pairs (2i, 2i+1) as GGUF's llama stores q/k; else (i, i + n_rot/2) as HF.
void gn_op_rope(float *vec, int n_heads, int hs, int n_rot, int interleaved, const float *cs, const float *sn, float sign);

// Attention. T query rows at positions pos0..pos0+T-1 attend to keys and values
// 0..pos0+T-1 (causal); NH query heads share NKV KV heads in groups of NH/NKV
// (head h reads KV head h / (NH/NKV)); head size hs; qd = NH*hs, kvd = NKV*hs.
// Row-major: q, o (T, qd); k, v (pos0+T, kvd); q and k after RoPE.
// P: the probabilities (NH, T, pos0+T), kept for the backward (entries above
// the diagonal unspecified), or NULL: then each thread uses scratch (floats:
// gn_op_attention_scratch(pos0 + T, nthreads)). Runs on up to nthreads threads.
// Query rows per (head, block) task: 64 with P kept (the backward's blocks, which read
// P as that forward wrote it), 32 without (a prefill chunk over a long cache: the
// thread's scores stay in L2). sgemm rounds differently for other block shapes, so
// each use keeps the one it had.
#define GN_ATT_RB 32
#define GN_ATT_RB_KEPT 64
size_t gn_op_attention_scratch(int n_keys, int nthreads);
// bf16: products with bf16 inputs and float32 sums where gn_bf16_gemm_available() (a bf16
// training run), softmax float32.
void gn_op_attention_fwd(float *o, float *P, const float *q, const float *k, const float *v, int T, int pos0, int NH,
                         int NKV, int hs, float *scratch, int nthreads, int bf16);
// Its backward over a whole sequence (pos0 = 0): from dO = dL/do and the forward's q,
// k, v, o, P, overwrites dq, dk, dv. P is consumed (overwritten with the score
// gradients); scratch: gn_op_attention_scratch(T, nthreads) floats.
void gn_op_attention_bwd(float *dq, float *dk, float *dv, float *P, const float *q, const float *k, const float *v,
                         const float *o, const float *dO, int T, int NH, int NKV, int hs, float *scratch, int nthreads,
                         int bf16);
// Plain per-row loops (double sums) that the two above are tested against; pos0 = 0. bf16:
// each product's inputs rounded to bf16, and the backward's D = dO . o (the bf16 op's), not
// sum_j p_j dP_j (equal in exact arithmetic, not once P and V are rounded).
void gn_op_attention_fwd_ref(float *o, float *P, const float *q, const float *k, const float *v, int T, int NH,
                             int NKV, int hs, int bf16);
void gn_op_attention_bwd_ref(float *dq, float *dk, float *dv, const float *P, const float *q, const float *k,
                             const float *v, const float *o, const float *dO, int T, int NH, int NKV, int hs, int bf16);

// SwiGLU: h = silu(g) * u over n elements. Two ways that round differently in the last bit
// (the exp of the fused kernel vs gn_exp_inplace), each kept as it was:
//  GN_SWIGLU_INPLACE: h is g, overwritten (inference: the fused gn_silu_mul kernel);
//  GN_SWIGLU_KEEP:    h apart from g, which the backward still needs (training).
enum { GN_SWIGLU_INPLACE, GN_SWIGLU_KEEP };
void gn_op_swiglu_fwd(float *h, const float *g, const float *u, size_t n, int how);
// Its backward (of GN_SWIGLU_KEEP): dg, du (n) from dh; dg holds exp(-g) in between.
void gn_op_swiglu_bwd(float *dg, float *du, const float *dh, const float *g, const float *u, size_t n);

// The residual connection (and any gradient sum): y (n) += x (n).
void gn_op_residual(float *y, const float *x, size_t n);

// Cross-entropy of one row of logits (V) against label y (0 <= y < V): returns
// logsumexp(logits) - logits[y], from float32 exp(logit - max) summed in double
// (NaN if any logit is NaN or infinite). work (V floats, may be logits itself)
// gets exp(logit - max); with grad, then the gradient weight * (softmax - onehot(y)).
double gn_op_xent(float *work, const float *logits, int64_t V, int32_t y, float weight, int grad);

#endif
