/*
 * test_attention.c — the attention kernels (src/tensor/attention.c) against
 * plain scalar loops written here, for each SIMD level this CPU has, on
 * awkward shapes: head sizes 8/12/64/80/128, GQA groups 1/3/4/5/8, cache lengths 0, 1
 * and not multiples of 16, one query row and blocks of rows, strided views.
 * Also gn_softmax against gn_softmax_ref and gn_exp_inplace against expf.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "tensor/kernels.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static float frand(void) {
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (float)((rng >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

// Normalized attention of one query vector over n cache rows, in double.
static void naive(const float *q, const float *k, const float *v, int64_t kvs, int n, int hs, float scale, double *out) {
    double *s = malloc(sizeof(double) * (size_t)(n + 1)), mx = -INFINITY, sum = 0;
    for (int j = 0; j < n; j++) {
        double d = 0;
        for (int i = 0; i < hs; i++) d += (double)q[i] * k[(int64_t)j * kvs + i];
        s[j] = d * scale;
        if (s[j] > mx) mx = s[j];
    }
    for (int i = 0; i < hs; i++) out[i] = 0;
    for (int j = 0; j < n; j++) {
        double p = exp(s[j] - mx);
        sum += p;
        for (int i = 0; i < hs; i++) out[i] += p * v[(int64_t)j * kvs + i];
    }
    for (int i = 0; i < hs; i++) out[i] = sum > 0 ? out[i] / sum : 0;
    free(s);
}

// The largest difference of a partial softmax (m, l, o) from a reference's (m0, l0, o0): l and
// o relative to the reference's l.
static float partial_diff(int grp, int hs, const float *m, const float *l, const float *o, const float *m0,
                          const float *l0, const float *o0) {
    float d = 0;
    for (int g = 0; g < grp; g++) {
        d = fmaxf(d, fabsf(m[g] - m0[g]));
        d = fmaxf(d, fabsf(l[g] - l0[g]) / l0[g]);
        for (int i = 0; i < hs; i++) d = fmaxf(d, fabsf(o[g * hs + i] - o0[g * hs + i]) / l0[g]);
    }
    return d;
}

// A tiled kernel (bf16 or float32 keys kt, values v, both in tiles ts apart) from position 0
// and from a later whole tile: against the row-major float32 reference on the same values
// (kr, vr, rows kvs apart), and its own scalar reference, which must equal that one bit for bit.
static void check_tiled(int bf, int got, const float *q, int64_t qs, int grp, const void *kt, int64_t ts, const void *v,
                        const float *kr, const float *vr, int64_t kvs, int n, int hs, float scale, float *sc) {
    for (int j0 = 0; j0 < n; j0 += j0 ? n : 2 * GN_KT) {
        const int nn = n - j0;
        float m[8], l[8], o[8 * 128], m0[8], l0[8], o0[8 * 128], m1[8], l1[8], o1[8 * 128];
        if (bf) {
            gn_attn_partial_bf16(q, qs, grp, kt, ts, v, ts, j0, nn, hs, scale, sc, m, l, o);
            gn_attn_partial_bf16_ref(q, qs, grp, kt, ts, v, ts, j0, nn, hs, scale, sc, m1, l1, o1);
        } else {
            gn_attn_partial_f32t(q, qs, grp, kt, ts, v, ts, j0, nn, hs, scale, sc, m, l, o);
            gn_attn_partial_f32t_ref(q, qs, grp, kt, ts, v, ts, j0, nn, hs, scale, sc, m1, l1, o1);
        }
        gn_attn_partial_ref(q, qs, grp, kr + (int64_t)j0 * kvs, vr + (int64_t)j0 * kvs, kvs, nn, hs, scale, sc, m0, l0, o0);
        const float mb = partial_diff(grp, hs, m, l, o, m0, l0, o0), mr = partial_diff(grp, hs, m1, l1, o1, m0, l0, o0);
        CHECK(mb <= 1e-5f, "attn_partial_%s level %d hs=%d grp=%d n=%d j0=%d maxdiff %g", bf ? "bf16" : "f32t", got, hs, grp,
              n, j0, mb);
        CHECK(mr == 0.0f, "attn_partial_%s_ref = ref on the same values (hs=%d grp=%d n=%d j0=%d): %g", bf ? "bf16" : "f32t",
              hs, grp, n, j0, mr);
    }
}

int main(void) {
    const int hss[] = {8, 12, 64, 80, 128};
    const int grps[] = {1, 3, 4, 5, 8};
    const int ns[] = {0, 1, 2, 15, 17, 64, 100, 257};
    for (int lvl = GN_SIMD_SCALAR; lvl <= GN_SIMD_AVX512; lvl++) {
        gn_simd_force((gn_simd)lvl);
        gn_simd got = gn_simd_level();
        // softmax and exp
        const int sn[] = {0, 1, 5, 16, 17, 100, 1000};
        for (size_t a = 0; a < sizeof sn / sizeof sn[0]; a++) {
            int n = sn[a];
            float *x = malloc(sizeof(float) * (size_t)(n + 1)), *y = malloc(sizeof(float) * (size_t)(n + 1));
            for (int i = 0; i < n; i++) x[i] = y[i] = frand() * 30.0f;
            gn_softmax(x, n);
            gn_softmax_ref(y, n);
            float md = 0;
            for (int i = 0; i < n; i++) md = fmaxf(md, fabsf(x[i] - y[i]));
            CHECK(md <= 1e-6f, "softmax level %d n=%d maxdiff %g", got, n, md);
            for (int i = 0; i < n; i++) x[i] = frand() * 100.0f;
            if (n > 5) { x[0] = -INFINITY; x[1] = -200.0f; x[2] = 88.72f; x[3] = INFINITY; x[4] = -103.5f; x[5] = 0.0f; }
            memcpy(y, x, sizeof(float) * (size_t)n);
            gn_exp_inplace(x, n);
            float mr = 0;
            for (int i = 0; i < n; i++) {
                float e = expf(y[i]);
                float r = isinf(e) ? (x[i] == e ? 0 : 1) : fabsf(x[i] - e) / e;
                if (e < 1e-37f) r = fabsf(x[i] - e) < 1e-44f ? 0 : 1; // denormal region: absolute
                mr = fmaxf(mr, r);
            }
            CHECK(mr <= 3e-7f, "exp level %d n=%d max rel err %g", got, n, mr);
            free(x); free(y);
        }
        for (size_t a = 0; a < sizeof hss / sizeof hss[0]; a++)
            for (size_t b = 0; b < sizeof grps / sizeof grps[0]; b++)
                for (size_t c = 0; c < sizeof ns / sizeof ns[0]; c++) {
                    int hs = hss[a], grp = grps[b], n = ns[c];
                    int64_t kvs = (int64_t)hs * 2 + 3; // strided cache rows (another KV head beside)
                    int64_t qs = hs + 5;
                    float scale = 1.0f / sqrtf((float)hs);
                    float *q = malloc(sizeof(float) * (size_t)(grp * qs));
                    float *k = malloc(sizeof(float) * (size_t)(n * kvs + 1)), *v = malloc(sizeof(float) * (size_t)(n * kvs + 1));
                    for (int64_t i = 0; i < grp * qs; i++) q[i] = frand() * 2.0f;
                    for (int64_t i = 0; i < n * kvs; i++) { k[i] = frand() * 2.0f; v[i] = frand(); }
                    float *sc = malloc(sizeof(float) * (size_t)(grp * n + 1));
                    float m[8], l[8], o[8 * 128], out[128];
                    // a float32 cache with tiled keys (gn_kt_at_f32) as KV head 1 of 2, tiles padded apart
                    const int64_t ts = (int64_t)GN_KT * 2 * hs + 40, ntl = (n + GN_KT - 1) / GN_KT;
                    float *kf = calloc((size_t)(ntl * ts + 1), sizeof(float));
                    for (int j = 0; j < n; j++)
                        for (int d = 0; d < hs; d++) kf[gn_kt_at_f32(j, 1, d, hs, ts)] = k[(int64_t)j * kvs + d];
                    const float *ktf = kf + gn_kt_at_f32(0, 1, 0, hs, ts);
                    // its values tiled the same way (gn_vt_at), head 1 of 2, the other head's part poisoned
                    float *vf = malloc(sizeof(float) * (size_t)(ntl * ts + 1));
                    for (int64_t i = 0; i < ntl * ts + 1; i++) vf[i] = NAN;
                    for (int j = 0; j < n; j++)
                        for (int d = 0; d < hs; d++) vf[gn_vt_at(j, 1, d, hs, ts)] = v[(int64_t)j * kvs + d];
                    const float *vtf = vf + gn_vt_at(0, 1, 0, hs, ts);
                    // whole range in one part, and split in 3 stretches of whole tiles, merged
                    for (int parts = 1; parts <= 3; parts += 2) {
                        float pm[3 * 8], pl[3 * 8], po[3 * 8 * 128];
                        for (int p = 0; p < parts; p++) {
                            int j0 = (int)(ntl * p / parts) * GN_KT, j1 = (int)(ntl * (p + 1) / parts) * GN_KT;
                            if (j1 > n) j1 = n;
                            gn_attn_partial_f32t(q, qs, grp, ktf, ts, vtf, ts, j0, j1 > j0 ? j1 - j0 : 0, hs, scale, sc, m, l, o);
                            for (int g = 0; g < grp; g++) {
                                // layout the merge expects: part stride grp heads
                                pm[p * grp + g] = m[g];
                                pl[p * grp + g] = l[g];
                                memcpy(po + ((int64_t)p * grp + g) * hs, o + (int64_t)g * hs, sizeof(float) * (size_t)hs);
                            }
                        }
                        double worst = 0;
                        for (int g = 0; g < grp; g++) {
                            gn_attn_merge(parts, pm + g, pl + g, po + (int64_t)g * hs, grp, hs, out);
                            double ref[128];
                            naive(q + g * qs, k, v, kvs, n, hs, scale, ref);
                            for (int i = 0; i < hs; i++) worst = fmax(worst, fabs(out[i] - ref[i]));
                        }
                        CHECK(worst <= 2e-5, "attn_partial_f32t level %d hs=%d grp=%d n=%d parts=%d maxdiff %g", got, hs, grp,
                              n, parts, worst);
                    }
                    if (n > 0) {
                        // a bf16 cache, keys tiled the same way: the same as the float32 reference on the
                        // bf16 values, and as its own reference; from position 0 and from a later whole tile
                        uint16_t *kh = calloc((size_t)(ntl * ts + 1), sizeof(uint16_t)), *vh = malloc(sizeof(uint16_t) * (size_t)(n * kvs));
                        float *kr = malloc(sizeof(float) * (size_t)(n * kvs)), *vr = malloc(sizeof(float) * (size_t)(n * kvs));
                        for (int64_t i = 0; i < n * kvs; i++) {
                            vh[i] = gn_f32_to_bf16(v[i]);
                            kr[i] = gn_bf16_to_f32(gn_f32_to_bf16(k[i])); vr[i] = gn_bf16_to_f32(vh[i]);
                        }
                        uint16_t *vth = malloc(sizeof(uint16_t) * (size_t)(ntl * ts + 1));
                        for (int64_t i = 0; i < ntl * ts + 1; i++) vth[i] = 0x7fc1; // NaN: never read
                        for (int j = 0; j < n; j++)
                            for (int d = 0; d < hs; d++) {
                                kh[gn_kt_at(j, 1, d, hs, ts)] = gn_f32_to_bf16(k[(int64_t)j * kvs + d]);
                                vth[gn_vt_at(j, 1, d, hs, ts)] = vh[(int64_t)j * kvs + d];
                            }
                        const uint16_t *kt = kh + gn_kt_at(0, 1, 0, hs, ts), *vt = vth + gn_vt_at(0, 1, 0, hs, ts);
                        check_tiled(1, got, q, qs, grp, kt, ts, vt, kr, vr, kvs, n, hs, scale, sc);
                        // the float32 tiled kernel unmerged against the row-major reference, and its own
                        check_tiled(0, got, q, qs, grp, ktf, ts, vtf, k, v, kvs, n, hs, scale, sc);
                        // an empty stretch
                        gn_attn_partial_bf16(q, qs, grp, kt, ts, vt, ts, 0, 0, hs, scale, sc, m, l, o);
                        float e = 0;
                        for (int g = 0; g < grp; g++) {
                            e = fmaxf(e, l[g] == 0.0f && m[g] == -INFINITY ? 0.0f : 1.0f);
                            for (int i = 0; i < hs; i++) e = fmaxf(e, fabsf(o[g * hs + i]));
                        }
                        CHECK(e == 0.0f, "attn_partial_bf16 of no positions (hs=%d grp=%d)", hs, grp);
                        free(kh); free(vh); free(vth); free(kr); free(vr);
                    }
                    free(q); free(k); free(v); free(sc); free(kf); free(vf);
                }
        // prefill rows: nrows query rows at positions pos0.. of one head, strided
        const int rows[][2] = {{1, 0}, {1, 5}, {2, 0}, {7, 3}, {33, 0}, {32, 31}, {5, 100}};
        for (size_t a = 0; a < sizeof hss / sizeof hss[0]; a++)
            for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++) {
                int hs = hss[a], nr = rows[r][0], pos0 = rows[r][1], n = pos0 + nr;
                int64_t qs = hs * 3 + 1, kvs = hs + 7, os = hs * 2;
                float scale = 1.0f / sqrtf((float)hs);
                float *q = malloc(sizeof(float) * (size_t)(nr * qs)), *k = malloc(sizeof(float) * (size_t)(n * kvs));
                float *v = malloc(sizeof(float) * (size_t)(n * kvs)), *out = calloc((size_t)(nr * os), sizeof(float));
                float *out0 = calloc((size_t)(nr * os), sizeof(float)), *S = malloc(sizeof(float) * (size_t)(nr * n));
                for (int64_t i = 0; i < nr * qs; i++) q[i] = frand() * 2.0f;
                for (int64_t i = 0; i < n * kvs; i++) { k[i] = frand() * 2.0f; v[i] = frand(); }
                gn_blas_single_thread();
                gn_attn_causal_rows(out, os, q, qs, k, v, kvs, nr, pos0, hs, scale, S, pos0 + nr);
                gn_attn_causal_rows_ref(out0, os, q, qs, k, v, kvs, nr, pos0, hs, scale);
                double worst = 0, worst0 = 0;
                for (int i = 0; i < nr; i++) {
                    double ref[128];
                    naive(q + i * qs, k, v, kvs, pos0 + i + 1, hs, scale, ref);
                    for (int c = 0; c < hs; c++) {
                        worst = fmax(worst, fabs(out[i * os + c] - ref[c]));
                        worst0 = fmax(worst0, fabs(out0[i * os + c] - ref[c]));
                    }
                }
                CHECK(worst <= 2e-5 && worst0 <= 2e-5, "causal_rows level %d hs=%d rows=%d pos0=%d maxdiff %g (ref %g)", got, hs,
                      nr, pos0, worst, worst0);
                free(q); free(k); free(v); free(out); free(out0); free(S);
            }
    }
    TEST_REPORT();
}
