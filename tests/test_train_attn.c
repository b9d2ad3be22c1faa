/*
 * test_train_attn.c — the attention op (src/model/attention.c): the blocked
 * sgemm forward and backward against the scalar per-row references, on awkward
 * shapes: T = 1, 2, 37, 129 (inside one row block, and one past two), head
 * size 8 and 64, GQA groups 1 and 3, on 1 and 2 threads. Output and P buffers
 * start as NaN so a read of anything the fast path did not write shows up.
 * Then the op as prefill runs it: rows after pos0 earlier positions, without
 * kept probabilities (thread scratch), against the per-row reference of
 * tensor/attention.c, with and without kept probabilities.
 * The bf16 op (a bf16 training run: bf16 product inputs, float32 sums, through
 * packed panels) against the reference that rounds the same inputs, where the CPU
 * has bf16 products (else the op is the float32 one and is held to that), and
 * farther from the float32 reference than from it: the rounding really happens.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "model/ops.h"
#ifdef _OPENMP
#include <omp.h>
#endif

static uint64_t rng = 88172645463325252ull;
static float frand(void) {
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (float)((rng >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

static float *rand_buf(size_t n, float s) {
    float *p = malloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++) p[i] = frand() * s;
    return p;
}

static float *nan_buf(size_t n) {
    float *p = malloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++) p[i] = NAN;
    return p;
}

// max |a - b| / max(max |b|, 1e-2): gradients that cancel to ~0 (all of dq,
// dk at T = 1) are judged on the O(1) scale of the inputs. NaN gives +inf.
static double rel_err(const float *a, const float *b, size_t n) {
    double d = 0.0, m = 1e-2;
    for (size_t i = 0; i < n; i++) {
        if (isnan(a[i]) || isnan(b[i])) return INFINITY;
        d = fmax(d, fabs((double)a[i] - b[i]));
        m = fmax(m, fabs((double)b[i]));
    }
    return d / m;
}

static void check_shape(int T, int hs, int NKV, int grp, int nthreads, int bf16) {
    int NH = NKV * grp;
    size_t nq = (size_t)T * NH * hs, nkv = (size_t)T * NKV * hs, nP = (size_t)NH * T * T;
    // scores of a few units so the softmax is neither flat nor one-hot
    float *q = rand_buf(nq, 2.0f), *k = rand_buf(nkv, 2.0f), *v = rand_buf(nkv, 1.0f), *dO = rand_buf(nq, 1.0f);
    float *o_ref = nan_buf(nq), *P_ref = nan_buf(nP), *o = nan_buf(nq), *P = nan_buf(nP);
    float *dq_ref = nan_buf(nq), *dk_ref = nan_buf(nkv), *dv_ref = nan_buf(nkv);
    float *dq = nan_buf(nq), *dk = nan_buf(nkv), *dv = nan_buf(nkv);
    float *scr = nan_buf(gn_op_attention_scratch(T, nthreads));
#ifdef _OPENMP
    omp_set_num_threads(nthreads);
#endif
    const int b16 = bf16 && gn_bf16_gemm_available(); // the products the op takes
    // bf16: sums of rounded inputs in another order; P rounds to bf16 on its way into P V, where
    // a float32 ulp of difference can move a value across a rounding boundary
    const double tf = b16 ? 2e-4 : 1e-5, tb = b16 ? 2e-3 : 1e-4;
    gn_op_attention_fwd_ref(o_ref, P_ref, q, k, v, T, NH, NKV, hs, b16);
    gn_op_attention_fwd(o, P, q, k, v, T, 0, NH, NKV, hs, NULL, nthreads, bf16);
    double eo = rel_err(o, o_ref, nq), eP = 0.0;
    for (int h = 0; h < NH; h++) // the probabilities on and below the diagonal
        for (int t = 0; t < T; t++) {
            size_t r = ((size_t)h * T + t) * T;
            eP = fmax(eP, rel_err(P + r, P_ref + r, (size_t)t + 1));
        }
    CHECK(eo < tf, "forward o, T %d hs %d NKV %d grp %d threads %d bf16 %d: rel err %.3g", T, hs, NKV, grp, nthreads, b16, eo);
    CHECK(eP < tf, "forward P, T %d hs %d NKV %d grp %d threads %d bf16 %d: rel err %.3g", T, hs, NKV, grp, nthreads, b16, eP);
    // backward: both from the reference forward's o, P (the fast one consumes its P)
    if (b16 && T >= 8) { // the bf16 op is nearer its own reference than the float32 one
        float *o32 = nan_buf(nq), *P32 = nan_buf(nP);
        gn_op_attention_fwd_ref(o32, P32, q, k, v, T, NH, NKV, hs, 0);
        double e32 = rel_err(o, o32, nq);
        CHECK(e32 > 4 * eo, "forward o, T %d hs %d: bf16 op %.3g from the bf16 reference, %.3g from the float32 one", T, hs, eo, e32);
        free(o32), free(P32);
    }
    gn_op_attention_bwd_ref(dq_ref, dk_ref, dv_ref, P_ref, q, k, v, o_ref, dO, T, NH, NKV, hs, b16);
    gn_op_attention_bwd(dq, dk, dv, P, q, k, v, o, dO, T, NH, NKV, hs, scr, nthreads, bf16);
    double eq = rel_err(dq, dq_ref, nq), ek = rel_err(dk, dk_ref, nkv), ev = rel_err(dv, dv_ref, nkv);
    CHECK(eq < tb && ek < tb && ev < tb, "backward, T %d hs %d NKV %d grp %d threads %d bf16 %d: rel err dq %.3g dk %.3g dv %.3g",
          T, hs, NKV, grp, nthreads, b16, eq, ek, ev);
    if (getenv("GN_TEST_VERBOSE") && b16)
        printf("  bf16 T %d hs %d grp %d: o %.3g P %.3g dq %.3g dk %.3g dv %.3g\n", T, hs, grp, eo, eP, eq, ek, ev);
    float *bufs[] = {q, k, v, dO, o_ref, P_ref, o, P, dq_ref, dk_ref, dv_ref, dq, dk, dv, scr};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
}

// T query rows at positions pos0.., keys and values of pos0 + T positions.
static void check_cached(int T, int pos0, int hs, int NKV, int grp, int nthreads) {
    int NH = NKV * grp, nk = pos0 + T, qd = NH * hs, kvd = NKV * hs;
    size_t nq = (size_t)T * qd, nkv = (size_t)nk * kvd;
    float *q = rand_buf(nq, 2.0f), *k = rand_buf(nkv, 2.0f), *v = rand_buf(nkv, 1.0f);
    float *o = nan_buf(nq), *o_kept = nan_buf(nq), *o_ref = nan_buf(nq), *P = nan_buf((size_t)NH * T * nk);
    float *scr = nan_buf(gn_op_attention_scratch(nk, nthreads));
    const float scale = 1.0f / sqrtf((float)hs);
    for (int h = 0; h < NH; h++)
        gn_attn_causal_rows_ref(o_ref + (size_t)h * hs, qd, q + (size_t)h * hs, qd, k + (size_t)(h / grp) * hs,
                                v + (size_t)(h / grp) * hs, kvd, T, pos0, hs, scale);
    gn_op_attention_fwd(o, NULL, q, k, v, T, pos0, NH, NKV, hs, scr, nthreads, 0);
    gn_op_attention_fwd(o_kept, P, q, k, v, T, pos0, NH, NKV, hs, NULL, nthreads, 0);
    double e = rel_err(o, o_ref, nq);
    CHECK(e < 1e-5, "after %d positions: T %d hs %d NKV %d grp %d threads %d: rel err %.3g", pos0, T, hs, NKV, grp,
          nthreads, e);
    double ek = rel_err(o_kept, o_ref, nq);
    CHECK(ek < 1e-5, "after %d positions, P kept: T %d threads %d: rel err %.3g", pos0, T, nthreads, ek);
    // bf16 products after pos0 positions (the packed keys' prefix per row block): within bf16
    // rounding of the float32 reference (a misplaced key or column is off by order one)
    gn_op_attention_fwd(o, NULL, q, k, v, T, pos0, NH, NKV, hs, scr, nthreads, 1);
    gn_op_attention_fwd(o_kept, P, q, k, v, T, pos0, NH, NKV, hs, NULL, nthreads, 1);
    double e16 = fmax(rel_err(o, o_ref, nq), rel_err(o_kept, o_ref, nq));
    CHECK(e16 < 3e-2, "after %d positions, bf16: T %d threads %d: rel err %.3g", pos0, T, nthreads, e16);
    float *bufs[] = {q, k, v, o, o_kept, o_ref, P, scr};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
}

int main(void) {
    const int Ts[] = {1, 2, 37, 129}, hss[] = {8, 64}, grps[] = {1, 3};
    for (int nth = 1; nth <= 2; nth++)
        for (size_t a = 0; a < sizeof Ts / sizeof Ts[0]; a++)
            for (size_t b = 0; b < sizeof hss / sizeof hss[0]; b++)
                for (size_t c = 0; c < sizeof grps / sizeof grps[0]; c++)
                    for (int bf16 = 0; bf16 <= 1; bf16++) check_shape(Ts[a], hss[b], 2, grps[c], nth, bf16);
    check_shape(513, 64, 3, 3, 2, 0); // SmolLM2's heads at the benchmark's length
    check_shape(513, 64, 3, 3, 2, 1);
    check_shape(70, 80, 1, 2, 2, 1); // a head size of 2.5 panels
    const int pos0s[] = {1, 63, 200}, Tcs[] = {1, 5, 64, 131};
    for (int nth = 1; nth <= 2; nth++)
        for (size_t a = 0; a < sizeof pos0s / sizeof pos0s[0]; a++)
            for (size_t b = 0; b < sizeof Tcs / sizeof Tcs[0]; b++) check_cached(Tcs[b], pos0s[a], 64, 2, 3, nth);
    check_cached(0, 7, 64, 2, 1, 2); // nothing to do
    TEST_REPORT();
}
