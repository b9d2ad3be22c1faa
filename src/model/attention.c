/*
 * attention.c — the attention op of a LLaMA layer (ops.h): causal attention of
 * a block of consecutive query positions as dense per-head products, and its
 * backward. The trainer runs it over whole sequences (pos0 = 0, probabilities
 * kept for the backward); the inference forward over a prefill chunk, keys and
 * values read from the KV cache (forward.c). One decode row per session takes
 * the cache's own kernel (tensor/attention.c: tiled keys, split softmax), which
 * computes the same op.
 *
 * Per head h of KV group g (shapes in ops.h; scale = 1/sqrt(hs)):
 *   forward   S_h  = scale Q_h K_g^T (j <= t)     P_h = softmax_rows(S_h)    O_h = P_h V_g
 *   backward  dP_h = dO_h V_g^T                   dV_g = sum_h P_h^T dO_h
 *             dS_h = scale P_h o (dP_h - D_h)      D_h[t] = dO_h[t] . O_h[t]  (= sum_j P dP)
 *             dQ_h = dS_h K_g                      dK_g = sum_h dS_h^T Q_h
 * Q_h is a strided view of q (lda = qd, offset h*hs), K_g of k (ldb = kvd).
 *
 * Causality: rows are cut into blocks (GN_ATT_RB or GN_ATT_RB_KEPT positions,
 * ops.h); block [r0, r1)
 * only needs keys < pos0 + r1, so of the upper triangle just the diagonal
 * blocks are computed (their entries above the diagonal are set to 0). dV and
 * dK are cut into the same blocks by *row of dV/dK*, which is a column block of
 * P/dS: the task for KV rows [c0, c1) sums over query rows c0..T-1 of every head
 * of the group, so each output row has one writer and no reduction buffers are
 * needed.
 *
 * Threads: OpenMP over (head, block) tasks, dynamic, largest first; OpenBLAS
 * runs single-threaded inside them (gn_blas_single_thread), as in kernels_cpu.c.
 *
 * bf16 (a bf16 training run, as qlora's autocast runs attention): every product takes
 * bf16 inputs and float32 sums (gn_gemm_bf16_panels: vdpbf16ps, AMX tiles), the softmax
 * and D stay float32. The operand every task of a group or head shares (K_g, V_g in
 * both layouts, dO_h, Q_h) is packed once per call into panels, so a task converts only
 * its own block of rows. Where the CPU has no bf16 products the float32 path runs.
 */
#include "ops.h"

#include <cblas.h>
#include <math.h>   // sqrtf
#include <string.h> // memset
#ifdef _OPENMP
#include <omp.h>
#endif

// GN_ATT_F32=1: the float32 products in a bf16 run too (the path before the bf16 one)
static int bf16_on(int bf16) {
    static int off = -1;
    return bf16 && gn_bf16_gemm_available() && !gn_env_switch("GN_ATT_F32", &off);
}

static int nblocks(int T, int rb) { return (T + rb - 1) / rb; }
static int block_end(int b, int T, int rb) { return (b + 1) * rb < T ? (b + 1) * rb : T; }

static int team_size(int nthreads) {
    if (nthreads < 1) nthreads = 1;
#ifdef _OPENMP
    if (nthreads > omp_get_max_threads()) nthreads = omp_get_max_threads();
#endif
    return nthreads;
}

size_t gn_op_attention_scratch(int n_keys, int nthreads) {
    return (size_t)(nthreads > 0 ? nthreads : 1) * GN_ATT_RB_KEPT * (size_t)(n_keys > 0 ? n_keys : 1);
}

// ----------------------------------------------------------------------------
// forward

// rows [pos0, pos0 + nrows) of one head, as gn_attn_causal_rows but with bf16 products against
// the group's packed keys kp (op(B) = K^T: hs x nkeys) and values vp (nkeys x hs)
static void causal_rows_bf16(float *out, int64_t ostride, const float *q, int64_t qstride, const uint32_t *kp,
                             const uint32_t *vp, int nkeys, int nrows, int pos0, int hs, float scale, float *S,
                             int64_t sstride) {
    const int n = pos0 + nrows;
    gn_gemm_bf16_panels(0, nrows, n, hs, scale, q, qstride, kp, hs, 0, 0.0f, S, sstride);
    for (int i = 0; i < nrows; i++) {
        float *row = S + (int64_t)i * sstride;
        const int valid = pos0 + i + 1;
        gn_softmax(row, valid);
        memset(row + valid, 0, sizeof(float) * (size_t)(n - valid));
    }
    gn_gemm_bf16_panels(0, nrows, hs, n, 1.0f, S, sstride, vp, nkeys, 0, 0.0f, out, ostride);
}

void gn_op_attention_fwd(float *o, float *P, const float *q, const float *k, const float *v, int T, int pos0, int NH,
                         int NKV, int hs, float *scratch, int nthreads, int bf16) {
    if (T <= 0 || hs <= 0) return;
    const int rb = P ? GN_ATT_RB_KEPT : GN_ATT_RB;
    const int grp = NH / NKV, qd = NH * hs, kvd = NKV * hs, nb = nblocks(T, rb), nk = pos0 + T;
    const float scale = 1.0f / sqrtf((float)hs);
    const int b16 = bf16_on(bf16);
    int64_t wk = 0, wv = 0;
    uint32_t *pan = NULL; // bf16: K_g^T and V_g of each group as panels, packed once for all their heads' tasks
    if (b16) {
        wk = gn_bf16_panels_words(nk, hs), wv = gn_bf16_panels_words(hs, nk);
        pan = gn_scratch(GN_SCRATCH_ATT, sizeof(uint32_t) * (size_t)(NKV * (wk + wv)));
    } else gn_blas_single_thread();
    #pragma omp parallel num_threads(team_size(nthreads))
    {
        if (b16) {
            #pragma omp for schedule(dynamic, 1)
            for (int t = 0; t < 2 * NKV; t++) {
                const int g = t / 2;
                if (t % 2 == 0) gn_bf16_pack_panels(1, nk, hs, k + (size_t)g * hs, kvd, pan + g * wk);
                else gn_bf16_pack_panels(0, hs, nk, v + (size_t)g * hs, kvd, pan + NKV * wk + g * wv);
            }
        }
        #pragma omp for schedule(dynamic, 1)
        for (int task = 0; task < NH * nb; task++) {
            int b = nb - 1 - task / NH, h = task % NH, g = h / grp; // the last (widest) blocks first
            int r0 = b * rb, n = block_end(b, T, rb) - r0;
            int th = 0;
#ifdef _OPENMP
            th = omp_get_thread_num();
#endif
            // rows r0.. of P_h (columns 0..pos0+r1-1), or this thread's scratch
            float *S = P ? P + ((size_t)h * T + (size_t)r0) * (size_t)nk : scratch + (size_t)th * (size_t)rb * (size_t)nk;
            float *oh = o + (size_t)r0 * qd + (size_t)h * hs;
            const float *qh = q + (size_t)r0 * qd + (size_t)h * hs;
            if (b16) causal_rows_bf16(oh, qd, qh, qd, pan + g * wk, pan + NKV * wk + g * wv, nk, n, pos0 + r0, hs, scale, S, nk);
            else gn_attn_causal_rows(oh, qd, qh, qd, k + (size_t)g * hs, v + (size_t)g * hs, kvd, n, pos0 + r0, hs, scale, S, nk);
        }
    }
}

// a product's input as the op reads it: rounded to bf16 in a bf16 run
static double in16(float x, int bf16) { return bf16 ? (double)gn_bf16_to_f32(gn_f32_to_bf16(x)) : (double)x; }

void gn_op_attention_fwd_ref(float *o, float *P, const float *q, const float *k, const float *v, int T, int NH,
                             int NKV, int hs, int bf16) {
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
                for (int i = 0; i < hs; i++) s += in16(qv[i], bf16) * in16(kv[i], bf16);
                p[j] = (float)s * scale;
            }
            gn_softmax_ref(p, t + 1);
            float *ov = o + (size_t)t * qd + (size_t)h * hs;
            for (int i = 0; i < hs; i++) {
                double s = 0.0;
                for (int j = 0; j <= t; j++) s += in16(p[j], bf16) * in16(v[(size_t)j * kvd + (size_t)g * hs + (size_t)i], bf16);
                ov[i] = (float)s;
            }
        }
}

// ----------------------------------------------------------------------------
// backward

// out rows [c0, c1) of KV group g = sum over the group's heads h of
// M_h[c0:T, c0:c1]^T X_h[c0:T]: M is P (for dV, X = dO) or dS (for dK, X = q).
// M_h's rows c0.. are zero right of the diagonal inside the block, so the
// product over rows c0..T-1 is the whole causal sum. xp: X_h packed (xp + h * wx, op(B) =
// X_h, T x hs) for bf16 products; NULL: float32 sgemm on X.
static void kv_block(float *out, const float *M, const float *X, const uint32_t *xp, int64_t wx, int b, int g, int T,
                     int grp, int hs, int qd, int kvd) {
    const size_t TT = (size_t)T * (size_t)T;
    int c0 = b * GN_ATT_RB_KEPT, n = block_end(b, T, GN_ATT_RB_KEPT) - c0;
    for (int j = 0; j < grp; j++) {
        int h = g * grp + j;
        const float *Mh = M + (size_t)h * TT + (size_t)c0 * T + c0;
        float *o = out + (size_t)c0 * kvd + (size_t)g * hs;
        if (xp) gn_gemm_bf16_panels(1, n, hs, T - c0, 1.0f, Mh, T, xp + h * wx, T, c0, j ? 1.0f : 0.0f, o, kvd);
        else cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n, hs, T - c0, 1.0f, Mh, T, X + (size_t)c0 * qd + (size_t)h * hs,
                         qd, j ? 1.0f : 0.0f, o, kvd);
    }
}

// the score gradients of rows [r0, r0 + n) of head h in place of their probabilities S (row
// stride T), from dP (row stride r1 = r0 + n)
static void scores_grad(float *S, const float *dP, const float *dOh, const float *o, int r0, int n, int T, int h, int hs,
                        int qd, float scale) {
    const int r1 = r0 + n;
    for (int i = 0; i < n; i++) {
        int t = r0 + i;
        float D = gn_dot_f32(dOh + (size_t)i * qd, o + (size_t)t * qd + (size_t)h * hs, hs);
        float *p = S + (size_t)i * T;
        const float *dp = dP + (size_t)i * r1;
        #pragma omp simd
        for (int j = 0; j <= t; j++) p[j] = p[j] * (dp[j] - D) * scale;
        memset(p + t + 1, 0, sizeof(float) * (size_t)(r1 - t - 1));
    }
}

void gn_op_attention_bwd(float *dq, float *dk, float *dv, float *P, const float *q, const float *k, const float *v,
                         const float *o, const float *dO, int T, int NH, int NKV, int hs, float *scratch, int nthreads,
                         int bf16) {
    if (T <= 0) return;
    const int grp = NH / NKV, qd = NH * hs, kvd = NKV * hs, nb = nblocks(T, GN_ATT_RB_KEPT);
    const size_t TT = (size_t)T * (size_t)T;
    const float scale = 1.0f / sqrtf((float)hs);
    nthreads = team_size(nthreads);
    const int b16 = bf16_on(bf16);
    // bf16: panels of K_g (T x hs) and V_g^T (hs x T) of each group, dO_h and Q_h (T x hs) of each head
    const int64_t wn = b16 ? gn_bf16_panels_words(hs, T) : 0, wt = b16 ? gn_bf16_panels_words(T, hs) : 0;
    uint32_t *kn = NULL, *vt = NULL, *don = NULL, *qn = NULL;
    if (b16) {
        kn = gn_scratch(GN_SCRATCH_ATT, sizeof(uint32_t) * (size_t)(NKV * (wn + wt) + 2 * NH * wn));
        vt = kn + NKV * wn, don = vt + NKV * wt, qn = don + NH * wn;
    } else gn_blas_single_thread();
    #pragma omp parallel num_threads(nthreads)
    {
        int ith = 0;
#ifdef _OPENMP
        ith = omp_get_thread_num();
#endif
        float *dP = scratch + (size_t)ith * GN_ATT_RB_KEPT * (size_t)T; // (GN_ATT_RB_KEPT, r1) of this thread's task
        if (b16) {
            #pragma omp for schedule(dynamic, 1)
            for (int t = 0; t < 2 * NKV + 2 * NH; t++) {
                if (t < NKV) gn_bf16_pack_panels(0, hs, T, k + (size_t)t * hs, kvd, kn + t * wn);
                else if (t < 2 * NKV) gn_bf16_pack_panels(1, T, hs, v + (size_t)(t - NKV) * hs, kvd, vt + (t - NKV) * wt);
                else if (t < 2 * NKV + NH) gn_bf16_pack_panels(0, hs, T, dO + (size_t)(t - 2 * NKV) * hs, qd, don + (t - 2 * NKV) * wn);
                else gn_bf16_pack_panels(0, hs, T, q + (size_t)(t - 2 * NKV - NH) * hs, qd, qn + (t - 2 * NKV - NH) * wn);
            }
        }
        // dV_g, while P is still the probabilities (the widest blocks, b = 0, first)
        #pragma omp for schedule(dynamic, 1)
        for (int task = 0; task < NKV * nb; task++) kv_block(dv, P, dO, don, wn, task / NKV, task % NKV, T, grp, hs, qd, kvd);
        // dS_h over P_h, and dQ_h, one row block per task
        #pragma omp for schedule(dynamic, 1)
        for (int task = 0; task < NH * nb; task++) {
            int b = nb - 1 - task / NH, h = task % NH, g = h / grp;
            int r0 = b * GN_ATT_RB_KEPT, r1 = block_end(b, T, GN_ATT_RB_KEPT), n = r1 - r0;
            const float *dOh = dO + (size_t)r0 * qd + (size_t)h * hs;
            float *S = P + (size_t)h * TT + (size_t)r0 * T, *dqh = dq + (size_t)r0 * qd + (size_t)h * hs;
            if (b16) gn_gemm_bf16_panels(0, n, r1, hs, 1.0f, dOh, qd, vt + g * wt, hs, 0, 0.0f, dP, r1);
            else cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, r1, hs, 1.0f, dOh, qd, v + (size_t)g * hs, kvd, 0.0f,
                             dP, r1);
            scores_grad(S, dP, dOh, o, r0, n, T, h, hs, qd, scale);
            if (b16) gn_gemm_bf16_panels(0, n, hs, r1, 1.0f, S, T, kn + g * wn, T, 0, 0.0f, dqh, qd);
            else cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, hs, r1, 1.0f, S, T, k + (size_t)g * hs, kvd, 0.0f,
                             dqh, qd);
        }
        // dK_g from the score gradients now in P
        #pragma omp for schedule(dynamic, 1)
        for (int task = 0; task < NKV * nb; task++) kv_block(dk, P, q, qn, wn, task / NKV, task % NKV, T, grp, hs, qd, kvd);
    }
}

void gn_op_attention_bwd_ref(float *dq, float *dk, float *dv, const float *P, const float *q, const float *k,
                             const float *v, const float *o, const float *dO, int T, int NH, int NKV, int hs, int bf16) {
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
            double sum = 0.0; // sum_j p_j dp_j; bf16: dO . o, as the op takes it (float32 sums)
            for (int j = 0; j <= t && !bf16; j++) {
                const float *vv = v + (size_t)j * kvd + (size_t)g * hs;
                double dp = 0.0;
                for (int i = 0; i < hs; i++) dp += (double)dov[i] * vv[i];
                sum += p[j] * dp;
            }
            for (int i = 0; i < hs && bf16; i++) sum += (double)dov[i] * o[(size_t)t * qd + (size_t)h * hs + (size_t)i];
            for (int j = 0; j <= t; j++) {
                const float *vv = v + (size_t)j * kvd + (size_t)g * hs, *kv = k + (size_t)j * kvd + (size_t)g * hs;
                float *dvv = dv + (size_t)j * kvd + (size_t)g * hs, *dkv = dk + (size_t)j * kvd + (size_t)g * hs;
                double dp = 0.0;
                for (int i = 0; i < hs; i++) dp += in16(dov[i], bf16) * in16(vv[i], bf16);
                float ds = (float)(p[j] * (dp - sum)) * scale;
                for (int i = 0; i < hs; i++) {
                    dvv[i] += (float)(in16(p[j], bf16) * in16(dov[i], bf16));
                    dqv[i] += (float)(in16(ds, bf16) * in16(kv[i], bf16));
                    dkv[i] += (float)(in16(ds, bf16) * in16(qv[i], bf16));
                }
            }
        }
    }
}
