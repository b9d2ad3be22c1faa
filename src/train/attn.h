/*
 * attn.h — causal self-attention of one layer for training (train.c): the
 * forward that keeps the softmax probabilities, and its backward.
 *
 * One sequence of T positions; NH query heads share NKV KV heads in groups of
 * grp = NH / NKV (head h reads KV head g = h / grp); head size hs, scale =
 * 1/sqrt(hs); qd = NH*hs, kvd = NKV*hs. All row-major:
 *   q, o, dO, dq (T, qd)     k, v, dk, dv (T, kvd)     P (NH, T, T)
 * q and k are after RoPE. Position t attends to positions 0..t.
 *
 * The fast versions run per-head matrix products through OpenBLAS sgemm (one
 * thread each, inside an OpenMP loop over head x row-block tasks); the _ref
 * versions are the plain per-row loops they replaced. tests/test_train_attn.c
 * compares the two on awkward shapes.
 */
#ifndef GN_TRAIN_ATTN_H
#define GN_TRAIN_ATTN_H

#include <stddef.h>

// Forward: o = softmax(scale q k^T, causal) v per head; P[h] gets the
// probabilities. Entries of P above the diagonal are unspecified (the backward
// reads only what the forward wrote).
void gn_train_attn_fwd(float *o, float *P, const float *q, const float *k, const float *v, int T, int NH, int NKV,
                       int hs);
void gn_train_attn_fwd_ref(float *o, float *P, const float *q, const float *k, const float *v, int T, int NH,
                           int NKV, int hs);

// Floats of scratch gn_train_attn_bwd needs for T positions on up to nthreads
// OpenMP threads.
size_t gn_train_attn_scratch_size(int T, int nthreads);

// Backward: given dO = dL/do and the forward's q, k, v, o, P, overwrites dq,
// dk, dv with dL/dq, dL/dk, dL/dv. P is consumed: it is overwritten with the
// score gradients. scratch: gn_train_attn_scratch_size(T, nthreads) floats;
// runs on at most nthreads threads.
void gn_train_attn_bwd(float *dq, float *dk, float *dv, float *P, const float *q, const float *k, const float *v,
                       const float *o, const float *dO, int T, int NH, int NKV, int hs, float *scratch, int nthreads);
// Reference: leaves P as it is; needs no scratch.
void gn_train_attn_bwd_ref(float *dq, float *dk, float *dv, const float *P, const float *q, const float *k,
                           const float *v, const float *o, const float *dO, int T, int NH, int NKV, int hs);

#endif
