/*
 * test_train_attn.c — the training attention (src/train/attn.c): the blocked
 * sgemm forward and backward against the scalar per-row references, on awkward
 * shapes: T = 1, 2, 37, 129 (inside one row block, and one past two), head
 * size 8 and 64, GQA groups 1 and 3, on 1 and 2 threads. Output and P buffers
 * start as NaN so a read of anything the fast path did not write shows up.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "train/attn.h"
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

static void check_shape(int T, int hs, int NKV, int grp, int nthreads) {
    int NH = NKV * grp;
    size_t nq = (size_t)T * NH * hs, nkv = (size_t)T * NKV * hs, nP = (size_t)NH * T * T;
    // scores of a few units so the softmax is neither flat nor one-hot
    float *q = rand_buf(nq, 2.0f), *k = rand_buf(nkv, 2.0f), *v = rand_buf(nkv, 1.0f), *dO = rand_buf(nq, 1.0f);
    float *o_ref = nan_buf(nq), *P_ref = nan_buf(nP), *o = nan_buf(nq), *P = nan_buf(nP);
    float *dq_ref = nan_buf(nq), *dk_ref = nan_buf(nkv), *dv_ref = nan_buf(nkv);
    float *dq = nan_buf(nq), *dk = nan_buf(nkv), *dv = nan_buf(nkv);
    float *scr = nan_buf(gn_train_attn_scratch_size(T, nthreads));
#ifdef _OPENMP
    omp_set_num_threads(nthreads);
#endif
    gn_train_attn_fwd_ref(o_ref, P_ref, q, k, v, T, NH, NKV, hs);
    gn_train_attn_fwd(o, P, q, k, v, T, NH, NKV, hs);
    double eo = rel_err(o, o_ref, nq), eP = 0.0;
    for (int h = 0; h < NH; h++) // the probabilities on and below the diagonal
        for (int t = 0; t < T; t++) {
            size_t r = ((size_t)h * T + t) * T;
            eP = fmax(eP, rel_err(P + r, P_ref + r, (size_t)t + 1));
        }
    CHECK(eo < 1e-5, "forward o, T %d hs %d NKV %d grp %d threads %d: rel err %.3g", T, hs, NKV, grp, nthreads, eo);
    CHECK(eP < 1e-5, "forward P, T %d hs %d NKV %d grp %d threads %d: rel err %.3g", T, hs, NKV, grp, nthreads, eP);
    // backward: both from the reference forward's o, P (the fast one consumes its P)
    gn_train_attn_bwd_ref(dq_ref, dk_ref, dv_ref, P_ref, q, k, v, o_ref, dO, T, NH, NKV, hs);
    gn_train_attn_bwd(dq, dk, dv, P, q, k, v, o, dO, T, NH, NKV, hs, scr, nthreads);
    double eq = rel_err(dq, dq_ref, nq), ek = rel_err(dk, dk_ref, nkv), ev = rel_err(dv, dv_ref, nkv);
    CHECK(eq < 1e-4 && ek < 1e-4 && ev < 1e-4, "backward, T %d hs %d NKV %d grp %d threads %d: rel err dq %.3g dk %.3g dv %.3g",
          T, hs, NKV, grp, nthreads, eq, ek, ev);
    float *bufs[] = {q, k, v, dO, o_ref, P_ref, o, P, dq_ref, dk_ref, dv_ref, dq, dk, dv, scr};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
}

int main(void) {
    const int Ts[] = {1, 2, 37, 129}, hss[] = {8, 64}, grps[] = {1, 3};
    for (int nth = 1; nth <= 2; nth++)
        for (size_t a = 0; a < sizeof Ts / sizeof Ts[0]; a++)
            for (size_t b = 0; b < sizeof hss / sizeof hss[0]; b++)
                for (size_t c = 0; c < sizeof grps / sizeof grps[0]; c++)
                    check_shape(Ts[a], hss[b], 2, grps[c], nth);
    check_shape(513, 64, 3, 3, 2); // SmolLM2's heads at the benchmark's length
    TEST_REPORT();
}
