/*
 * attn.c — causal self-attention for training as dense per-head products.
 *
 * Per head h of KV group g (shapes in attn.h; scale = 1/sqrt(hs)):
 *   forward   S_h  = scale Q_h K_g^T (j <= t)     P_h = softmax_rows(S_h)    O_h = P_h V_g
 *   backward  dP_h = dO_h V_g^T                   dV_g = sum_h P_h^T dO_h
 *             dS_h = scale P_h o (dP_h - D_h)      D_h[t] = dO_h[t] . O_h[t]  (= sum_j P dP)
 *             dQ_h = dS_h K_g                      dK_g = sum_h dS_h^T Q_h
 * Q_h is a strided view of q (lda = qd, offset h*hs), K_g of k (ldb = kvd).
 *
 * Causality: rows are cut into blocks of ATT_RB positions; block [r0, r1) only
 * needs columns < r1, so of the upper triangle just the diagonal blocks are
 * computed (their entries above the diagonal are set to 0). dV and dK are cut
 * into the same blocks by *row of dV/dK*, which is a column block of P/dS: the
 * task for KV rows [c0, c1) sums over query rows c0..T-1 of every head of the
 * group, so each output row has one writer and no reduction buffers are needed.
 *
 * Threads: OpenMP over (head, block) tasks, dynamic, largest first; OpenBLAS
 * runs single-threaded inside them (gn_blas_single_thread), as in kernels_cpu.c.
 */
#include "attn.h"

#include "../tensor/kernels.h" // gn_softmax, gn_dot_f32, gn_blas_single_thread

#include <cblas.h>
#include <math.h>   // sqrtf
#include <string.h> // memset
#ifdef _OPENMP
#include <omp.h>
#endif

#ifndef ATT_RB
#define ATT_RB 64 // positions per row block (and per dK/dV block)
#endif

static int nblocks(int T) { return (T + ATT_RB - 1) / ATT_RB; }
static int block_end(int b, int T) { return (b + 1) * ATT_RB < T ? (b + 1) * ATT_RB : T; }

// ----------------------------------------------------------------------------
// forward

void gn_train_attn_fwd(float *o, float *P, const float *q, const float *k, const float *v, int T, int NH, int NKV,
                       int hs) {
    if (T <= 0) return;
    const int grp = NH / NKV, qd = NH * hs, kvd = NKV * hs, nb = nblocks(T);
    const size_t TT = (size_t)T * (size_t)T;
    const float scale = 1.0f / sqrtf((float)hs);
    gn_blas_single_thread();
    #pragma omp parallel for schedule(dynamic, 1)
    for (int task = 0; task < NH * nb; task++) {
        int b = nb - 1 - task / NH, h = task % NH, g = h / grp; // the last (widest) blocks first
        int r0 = b * ATT_RB, r1 = block_end(b, T), n = r1 - r0;
        float *S = P + (size_t)h * TT + (size_t)r0 * T; // rows r0..r1-1 of P_h, columns 0..r1-1
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, r1, hs, scale, q + (size_t)r0 * qd + (size_t)h * hs, qd,
                    k + (size_t)g * hs, kvd, 0.0f, S, T);
        for (int i = 0; i < n; i++) {
            float *row = S + (size_t)i * T;
            int valid = r0 + i + 1;
            gn_softmax(row, valid);
            memset(row + valid, 0, sizeof(float) * (size_t)(r1 - valid));
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, hs, r1, 1.0f, S, T, v + (size_t)g * hs, kvd, 0.0f,
                    o + (size_t)r0 * qd + (size_t)h * hs, qd);
    }
}

void gn_train_attn_fwd_ref(float *o, float *P, const float *q, const float *k, const float *v, int T, int NH,
                           int NKV, int hs) {
    const int grp = NH / NKV, qd = NH * hs, kvd = NKV * hs;
    const float scale = 1.0f / sqrtf((float)hs);
    for (int h = 0; h < NH; h++)
        for (int t = 0; t < T; t++) {
            int g = h / grp;
            float *p = P + ((size_t)h * T + t) * T;
            const float *qv = q + (size_t)t * qd + (size_t)h * hs;
            for (int j = 0; j <= t; j++) {
                const float *kv = k + (size_t)j * kvd + (size_t)g * hs;
                double s = 0.0;
                for (int i = 0; i < hs; i++) s += (double)qv[i] * kv[i];
                p[j] = (float)s * scale;
            }
            gn_softmax_ref(p, t + 1);
            float *ov = o + (size_t)t * qd + (size_t)h * hs;
            for (int i = 0; i < hs; i++) {
                double s = 0.0;
                for (int j = 0; j <= t; j++) s += (double)p[j] * v[(size_t)j * kvd + (size_t)g * hs + (size_t)i];
                ov[i] = (float)s;
            }
        }
}

// ----------------------------------------------------------------------------
// backward

size_t gn_train_attn_scratch_size(int T, int nthreads) {
    return (size_t)(nthreads > 0 ? nthreads : 1) * ATT_RB * (size_t)(T > 0 ? T : 1);
}

// out rows [c0, c1) of KV group g = sum over the group's heads h of
// M_h[c0:T, c0:c1]^T X_h[c0:T]: M is P (for dV, X = dO) or dS (for dK, X = q).
// M_h's rows c0.. are zero right of the diagonal inside the block, so the
// product over rows c0..T-1 is the whole causal sum.
static void kv_block(float *out, const float *M, const float *X, int b, int g, int T, int grp, int hs, int qd,
                     int kvd) {
    const size_t TT = (size_t)T * (size_t)T;
    int c0 = b * ATT_RB, n = block_end(b, T) - c0;
    for (int j = 0; j < grp; j++) {
        int h = g * grp + j;
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n, hs, T - c0, 1.0f, M + (size_t)h * TT + (size_t)c0 * T + c0,
                    T, X + (size_t)c0 * qd + (size_t)h * hs, qd, j ? 1.0f : 0.0f, out + (size_t)c0 * kvd + (size_t)g * hs,
                    kvd);
    }
}

void gn_train_attn_bwd(float *dq, float *dk, float *dv, float *P, const float *q, const float *k, const float *v,
                       const float *o, const float *dO, int T, int NH, int NKV, int hs, float *scratch, int nthreads) {
    if (T <= 0) return;
    const int grp = NH / NKV, qd = NH * hs, kvd = NKV * hs, nb = nblocks(T);
    const size_t TT = (size_t)T * (size_t)T;
    const float scale = 1.0f / sqrtf((float)hs);
    if (nthreads < 1) nthreads = 1;
#ifdef _OPENMP
    if (nthreads > omp_get_max_threads()) nthreads = omp_get_max_threads();
#endif
    gn_blas_single_thread();
    #pragma omp parallel num_threads(nthreads)
    {
        int ith = 0;
#ifdef _OPENMP
        ith = omp_get_thread_num();
#endif
        float *dP = scratch + (size_t)ith * ATT_RB * (size_t)T; // (ATT_RB, r1) of this thread's task
        // dV_g, while P is still the probabilities (the widest blocks, b = 0, first)
        #pragma omp for schedule(dynamic, 1)
        for (int task = 0; task < NKV * nb; task++) kv_block(dv, P, dO, task / NKV, task % NKV, T, grp, hs, qd, kvd);
        // dS_h over P_h, and dQ_h, one row block per task
        #pragma omp for schedule(dynamic, 1)
        for (int task = 0; task < NH * nb; task++) {
            int b = nb - 1 - task / NH, h = task % NH, g = h / grp;
            int r0 = b * ATT_RB, r1 = block_end(b, T), n = r1 - r0;
            const float *dOh = dO + (size_t)r0 * qd + (size_t)h * hs;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, r1, hs, 1.0f, dOh, qd, v + (size_t)g * hs, kvd, 0.0f,
                        dP, r1);
            float *S = P + (size_t)h * TT + (size_t)r0 * T;
            for (int i = 0; i < n; i++) {
                int t = r0 + i;
                float D = gn_dot_f32(dOh + (size_t)i * qd, o + (size_t)t * qd + (size_t)h * hs, hs);
                float *p = S + (size_t)i * T;
                const float *dp = dP + (size_t)i * r1;
                #pragma omp simd
                for (int j = 0; j <= t; j++) p[j] = p[j] * (dp[j] - D) * scale;
                memset(p + t + 1, 0, sizeof(float) * (size_t)(r1 - t - 1));
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, hs, r1, 1.0f, S, T, k + (size_t)g * hs, kvd, 0.0f,
                        dq + (size_t)r0 * qd + (size_t)h * hs, qd);
        }
        // dK_g from the score gradients now in P
        #pragma omp for schedule(dynamic, 1)
        for (int task = 0; task < NKV * nb; task++) kv_block(dk, P, q, task / NKV, task % NKV, T, grp, hs, qd, kvd);
    }
}

void gn_train_attn_bwd_ref(float *dq, float *dk, float *dv, const float *P, const float *q, const float *k,
                           const float *v, const float *o, const float *dO, int T, int NH, int NKV, int hs) {
    (void)o;
    const int grp = NH / NKV, qd = NH * hs, kvd = NKV * hs;
    const float scale = 1.0f / sqrtf((float)hs);
    memset(dq, 0, sizeof(float) * (size_t)T * qd);
    memset(dk, 0, sizeof(float) * (size_t)T * kvd);
    memset(dv, 0, sizeof(float) * (size_t)T * kvd);
    for (int h = 0; h < NH; h++) {
        int g = h / grp;
        for (int t = 0; t < T; t++) {
            const float *p = P + ((size_t)h * T + t) * T;
            const float *dov = dO + (size_t)t * qd + (size_t)h * hs;
            const float *qv = q + (size_t)t * qd + (size_t)h * hs;
            float *dqv = dq + (size_t)t * qd + (size_t)h * hs;
            double sum = 0.0; // sum_j p_j dp_j
            for (int j = 0; j <= t; j++) {
                const float *vv = v + (size_t)j * kvd + (size_t)g * hs;
                double dp = 0.0;
                for (int i = 0; i < hs; i++) dp += (double)dov[i] * vv[i];
                sum += p[j] * dp;
            }
            for (int j = 0; j <= t; j++) {
                const float *vv = v + (size_t)j * kvd + (size_t)g * hs, *kv = k + (size_t)j * kvd + (size_t)g * hs;
                float *dvv = dv + (size_t)j * kvd + (size_t)g * hs, *dkv = dk + (size_t)j * kvd + (size_t)g * hs;
                double dp = 0.0;
                for (int i = 0; i < hs; i++) dp += (double)dov[i] * vv[i];
                float ds = (float)(p[j] * (dp - sum)) * scale;
                for (int i = 0; i < hs; i++) {
                    dvv[i] += p[j] * dov[i];
                    dqv[i] += ds * kv[i];
                    dkv[i] += ds * qv[i];
                }
            }
        }
    }
}
