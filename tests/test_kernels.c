/*
 * test_kernels.c — every dispatched kernel against its plain scalar reference,
 * on random inputs of awkward sizes (empty, 1, not multiples of 16/32/64), for
 * each SIMD level this CPU has.
 */
#include <math.h>
#include <stdlib.h>

#include "harness.h"
#include "tensor/kernels.h"

static uint64_t rng = 88172645463325252ull;
static float frand(void) {
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (float)((rng >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

static int close_enough(float a, float b, float tol) { return fabsf(a - b) <= tol * (1.0f + fabsf(b)); }

// C1 against the reference's C0 (M x N of ldc) for C = alpha op(A) op(B) + beta C: the largest error
// as a share of its bound (float32 sums in another order, alpha and beta applied with one more
// rounding each); *pad_ok: the columns past N untouched
static float gemm_err(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha, float beta, const float *A, int64_t lda,
                      const float *B, int64_t ldb, const float *C1, const float *C0, int64_t ldc, int *pad_ok) {
    float worst = 0;
    *pad_ok = 1;
    for (int64_t i = 0; i < M; i++) {
        for (int64_t j = 0; j < N; j++) {
            double sa = 0;
            for (int64_t k = 0; k < K; k++)
                sa += fabs((double)(ta ? A[k * lda + i] : A[i * lda + k]) * (tb ? B[j * ldb + k] : B[k * ldb + j]));
            double tol = (double)(K + 4) * 0x1p-23 * (fabs(alpha) * sa * 1.01 + fabs(beta) * 2.0) + 1e-30;
            worst = fmaxf(worst, (float)(fabs((double)C1[i * ldc + j] - C0[i * ldc + j]) / tol));
        }
        for (int64_t j = N; j < ldc; j++) *pad_ok &= C1[i * ldc + j] == C0[i * ldc + j];
    }
    return worst;
}

// the bf16 GEMM against its scalar reference: every transposition, awkward sizes (k past one
// 2048 block, rows past one 256 stretch, columns not a multiple of 32), alpha and beta
static void test_gemm_bf16(void) {
    if (!gn_bf16_gemm_available()) { printf("SKIP: gemm_bf16 (no AVX512_BF16)\n"); return; }
    // {513, 200, 64} .. {33, 31, 128}: small K with 32 rows or more (all of op(B) packed once, row blocks
    // across it); {20, 33, 2100}: k past one block with 16 rows or more (AMX: a second k block of tiles)
    const int64_t sz[][3] = {{1, 1, 1}, {7, 33, 5}, {8, 32, 64}, {9, 65, 100}, {300, 17, 129}, {3, 40, 2051}, {64, 576, 512},
                             {513, 200, 64}, {37, 65, 7}, {33, 31, 128}, {20, 33, 2100}};
    const float ab[][2] = {{1.0f, 0.0f}, {0.25f, 1.0f}, {-2.0f, 0.5f}};
    for (size_t z = 0; z < sizeof sz / sizeof sz[0]; z++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++) {
                const int64_t M = sz[z][0], N = sz[z][1], K = sz[z][2];
                const float alpha = ab[(z + ta + tb) % 3][0], beta = ab[(z + ta + tb) % 3][1];
                const int64_t lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 1, ldc = N + 2; // padded strides
                float *A = malloc(sizeof(float) * (size_t)((ta ? K : M) * lda)), *B = malloc(sizeof(float) * (size_t)((tb ? N : K) * ldb));
                float *C0 = malloc(sizeof(float) * (size_t)(M * ldc)), *C1 = malloc(sizeof(float) * (size_t)(M * ldc));
                for (int64_t i = 0; i < (ta ? K : M) * lda; i++) A[i] = frand();
                for (int64_t i = 0; i < (tb ? N : K) * ldb; i++) B[i] = frand();
                for (int64_t i = 0; i < M * ldc; i++) C0[i] = C1[i] = frand();
                float *C2 = malloc(sizeof(float) * (size_t)(M * ldc));
                memcpy(C2, C1, sizeof(float) * (size_t)(M * ldc));
                uint16_t *Bh = malloc(sizeof(uint16_t) * (size_t)((tb ? N : K) * ldb));
                for (int64_t i = 0; i < (tb ? N : K) * ldb; i++) Bh[i] = gn_f32_to_bf16(B[i]);
                gn_gemm_bf16_ref(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C0, ldc);
                gn_gemm_bf16(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C1, ldc);
                gn_gemm_bf16_b16(ta, tb, M, N, K, alpha, A, lda, Bh, ldb, beta, C2, ldc);
                CHECK(!memcmp(C1, C2, sizeof(float) * (size_t)(M * ldc)), "gemm_bf16 with B stored as bf16 = with B f32 (ta %d tb %d, %lldx%lldx%lld)",
                      ta, tb, (long long)M, (long long)N, (long long)K);
                free(C2); free(Bh);
                int pad_ok;
                float worst = gemm_err(ta, tb, M, N, K, alpha, beta, A, lda, B, ldb, C1, C0, ldc, &pad_ok);
                CHECK(worst <= 1.0f && pad_ok, "gemm_bf16 ta %d tb %d M %lld N %lld K %lld: error %g of bound%s", ta, tb,
                      (long long)M, (long long)N, (long long)K, worst, pad_ok ? "" : ", wrote past N");
                free(A); free(B); free(C0); free(C1);
            }
}

// products against panels packed once (attention's): a corner of op(B) (rows k0 .. k0+K, the
// first N columns) against the scalar reference on that corner, every transposition, awkward
// sizes (one row, empty, odd K, N past a panel, k0 past a tile of pairs), alpha and beta
static void test_gemm_bf16_panels(void) {
    if (!gn_bf16_gemm_available()) { printf("SKIP: gemm_bf16_panels (no AVX512_BF16)\n"); return; }
    // {M, N, K, k0, bN, bK}: the product's shape, the packed op(B)'s (bN x bK... as K x N: bK rows, bN columns)
    const int64_t sz[][6] = {{1, 1, 1, 0, 1, 1}, {0, 5, 3, 0, 7, 9}, {3, 0, 3, 0, 7, 9}, {5, 7, 0, 0, 9, 4},
                             {7, 33, 5, 32, 40, 40}, {16, 31, 64, 0, 64, 64}, {33, 70, 129, 64, 100, 200},
                             {64, 513, 64, 0, 513, 64}, {64, 64, 513, 0, 64, 513}, {50, 64, 449, 64, 64, 513}};
    for (size_t z = 0; z < sizeof sz / sizeof sz[0]; z++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++) {
                const int64_t M = sz[z][0], N = sz[z][1], K = sz[z][2], k0 = sz[z][3], bN = sz[z][4], bK = sz[z][5];
                const float alpha = z % 2 ? 0.5f : 1.0f, beta = z % 3 ? 0.0f : -1.5f;
                const int64_t lda = (ta ? M : K) + 3, ldb = (tb ? bK : bN) + 2, ldc = N + 1;
                const int64_t na = (ta ? K : M) * lda + 1, nb = (tb ? bN : bK) * ldb + 1;
                float *A = malloc(sizeof(float) * (size_t)na), *B = malloc(sizeof(float) * (size_t)nb);
                float *C0 = malloc(sizeof(float) * (size_t)(M * ldc + 1)), *C1 = malloc(sizeof(float) * (size_t)(M * ldc + 1));
                for (int64_t i = 0; i < na; i++) A[i] = frand();
                for (int64_t i = 0; i < nb; i++) B[i] = frand();
                for (int64_t i = 0; i < M * ldc; i++) C0[i] = C1[i] = frand();
                uint32_t *bp = gn_malloc_aligned(sizeof(uint32_t) * (size_t)(gn_bf16_panels_words(bN, bK) + 1));
                gn_bf16_pack_panels(tb, bN, bK, B, ldb, bp);
                // the reference on the corner: B's rows from k0 (tb: columns from k0 of B stored (N, K))
                const float *Bc = tb ? B + k0 : B + k0 * ldb;
                gn_gemm_bf16_ref(ta, tb, M, N, K, alpha, A, lda, Bc, ldb, beta, C0, ldc);
                gn_gemm_bf16_panels(ta, M, N, K, alpha, A, lda, bp, bK, k0, beta, C1, ldc);
                int pad_ok;
                float worst = gemm_err(ta, tb, M, N, K, alpha, beta, A, lda, Bc, ldb, C1, C0, ldc, &pad_ok);
                CHECK(worst <= 1.0f && pad_ok, "gemm_bf16_panels ta %d tb %d M %lld N %lld K %lld k0 %lld: error %g of bound%s", ta, tb,
                      (long long)M, (long long)N, (long long)K, (long long)k0, worst, pad_ok ? "" : ", wrote past N");
                free(A); free(B); free(C0); free(C1); free(bp);
            }
}

// silu(x) * y through the vectorized exp against expf, across the range (overflowing exp too),
// at every SIMD level, on lengths with tails and one long enough to be split across threads
static void test_silu_mul(void) {
    const int64_t lens[] = {0, 1, 7, 17, 1000, 70001};
    for (int lvl = GN_SIMD_SCALAR; lvl <= GN_SIMD_AVX512; lvl++) {
        gn_simd_force((gn_simd)lvl);
        for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
            const int64_t n = lens[li];
            float *x = malloc(sizeof(float) * (size_t)(n + 1)), *y = malloc(sizeof(float) * (size_t)(n + 1));
            float *ref = malloc(sizeof(float) * (size_t)(n + 1));
            for (int64_t i = 0; i < n; i++) {
                x[i] = i < 20 ? (float[]){0.0f, -0.0f, 88.0f, -88.0f, 89.0f, -89.0f, 100.0f, -100.0f, 1e4f, -1e4f, 1e30f,
                                          -1e30f, 1e-30f, -1e-30f, 0.5f, -0.5f, 20.0f, -20.0f, 3.0f, -3.0f}[i]
                              : frand() * 30.0f;
                y[i] = frand() * 2.0f;
                ref[i] = x[i] / (1.0f + expf(-x[i])) * y[i];
            }
            gn_silu_mul(x, y, n);
            int bad = 0;
            for (int64_t i = 0; i < n; i++) {
                float err = fabsf(x[i] - ref[i]), tol = 4e-6f * fabsf(ref[i]) + 1e-30f;
                if (!(err <= tol)) { if (bad < 5) printf("  silu_mul[%lld]: %g vs %g\n", (long long)i, x[i], ref[i]); bad++; }
            }
            CHECK(bad == 0, "silu_mul level %d n=%lld: %d values off the expf reference", lvl, (long long)n, bad);
            free(x); free(y); free(ref);
        }
    }
    gn_simd_force(GN_SIMD_AVX512);
}

// max |gn_matmul_nn(dy, W) - dy @ W| over random dy (T, OC), the reference a double triple loop
// over W's values as gn_mat_rows_f32 widens them
static float matmul_nn_maxdiff(const gn_mat *m, int64_t T) {
    const int64_t OC = m->rows, IC = m->cols;
    float *wf = malloc(sizeof(float) * (size_t)(OC * IC + 1));
    float *dy = malloc(sizeof(float) * (size_t)(T * OC + 1)), *dx = calloc((size_t)(T * IC + 1), 4);
    gn_mat_rows_f32(m, 0, OC, wf);
    for (int64_t i = 0; i < T * OC; i++) dy[i] = frand();
    gn_matmul_nn(dx, dy, m, T);
    float mdn = 0;
    for (int64_t t = 0; t < T; t++)
        for (int64_t i = 0; i < IC; i++) {
            double ref = 0;
            for (int64_t o = 0; o < OC; o++) ref += (double)dy[t * OC + o] * wf[o * IC + i];
            mdn = fmaxf(mdn, fabsf(dx[t * IC + i] - (float)ref));
        }
    free(wf); free(dy); free(dx);
    return mdn;
}

// ggml's block matrices (Q4_0, Q4_1, Q8_0: a GGUF's matrices kept as the file has them): rows
// widened (against a decode written here from ggml's definitions), the row dot, gn_matmul
// (decode rows and widened tiles for sgemm) and gn_matmul_nn against plain double loops over
// the values, at every SIMD level. Scales include f16 subnormals and zero (Q4_1's offsets
// negative too), codes every value of their range.
static void put_f16(uint8_t *p, float v) {
    uint16_t h = gn_f32_to_f16(v);
    p[0] = (uint8_t)(h & 0xff);
    p[1] = (uint8_t)(h >> 8);
}

static float f16_at(const uint8_t *p) { return gn_f16_to_f32((uint16_t)(p[0] | p[1] << 8)); }

static void fill_blocks(gn_dtype dt, uint8_t *blk, int64_t nblocks) {
    const int bb = gn_blocks_bytes(dt);
    for (int64_t b = 0; b < nblocks; b++, blk += bb) {
        uint64_t r = (uint64_t)(frand() * 1e6f + 2e6f);
        float d = r % 13 == 0 ? 0.0f : r % 17 == 0 ? 3e-7f : 1e-3f + (float)(r % 1000) * 1e-5f;
        put_f16(blk, d);
        int q0 = 2;
        if (dt == GN_DTYPE_Q4_1) { put_f16(blk + 2, frand() * 0.02f); q0 = 4; }
        for (int j = 0; j < bb - q0; j++) blk[q0 + j] = (uint8_t)(int)((frand() + 1.0f) * 127.9f) ^ (j == 5 ? 0x80 : 0);
    }
}

// weight i of a row of blocks, as ggml's dequantize_row_* computes it
static float block_value(gn_dtype dt, const uint8_t *row, int64_t i) {
    const uint8_t *b = row + i / 32 * gn_blocks_bytes(dt);
    const int j = (int)(i % 32);
    const float d = f16_at(b);
    if (dt == GN_DTYPE_Q8_0) return (float)(int8_t)b[2 + j] * d;
    const uint8_t byte = b[(dt == GN_DTYPE_Q4_1 ? 4 : 2) + j % 16];
    const int q = j < 16 ? byte & 15 : byte >> 4;
    if (dt == GN_DTYPE_Q4_0) return (float)(q - 8) * d;
    return (float)q * d + f16_at(b + 2);
}

static void test_blocks(void) {
    const int64_t shapes[][3] = {{1, 1, 32}, {1, 17, 96}, {3, 5, 32}, {8, 33, 160}, {9, 70, 576}, {1, 0, 64}, {0, 3, 32},
                                 {2, 7, 0}, {13, 129, 1024}, {3, 600, 4096}};
    const gn_dtype types[] = {GN_DTYPE_Q4_0, GN_DTYPE_Q4_1, GN_DTYPE_Q8_0};
    for (int lvl = GN_SIMD_SCALAR; lvl <= GN_SIMD_AVX512; lvl++) {
        gn_simd_force((gn_simd)lvl);
        gn_simd got = gn_simd_level();
        for (size_t ti = 0; ti < 3; ti++)
        for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
            const gn_dtype dt = types[ti];
            const char *nm = gn_dtype_name(dt);
            int64_t T = shapes[k][0], OC = shapes[k][1], IC = shapes[k][2], nb = IC / 32;
            uint8_t *wq = malloc((size_t)(OC * nb * gn_blocks_bytes(dt)) + 1);
            fill_blocks(dt, wq, OC * nb);
            float *wf = malloc(sizeof(float) * (size_t)(OC * IC + 1)), *in = malloc(sizeof(float) * (size_t)(T * IC + 1));
            float *o1 = calloc((size_t)(T * OC + 1), 4), *o0 = calloc((size_t)(T * OC + 1), 4);
            for (int64_t i = 0; i < T * IC; i++) in[i] = frand();
            gn_mat m = {dt, OC, IC, wq, NULL};
            gn_mat_rows_f32(&m, 0, OC, wf);
            int bad = 0;
            for (int64_t o = 0; o < OC; o++)
                for (int64_t i = 0; i < IC; i++) bad += wf[o * IC + i] != block_value(dt, gn_blocks_row(&m, o), i);
            CHECK(bad == 0, "%s rows OC=%lld IC=%lld: %d values wrong", nm, (long long)OC, (long long)IC, bad);
            uint16_t *wh = gn_mat_to_bf16(&m);
            int badh = 0;
            for (int64_t i = 0; i < OC * IC; i++) badh += wh[i] != gn_f32_to_bf16(wf[i]);
            free(wh);
            CHECK(badh == 0, "%s to bf16 OC=%lld IC=%lld: %d values wrong", nm, (long long)OC, (long long)IC, badh);
            for (int64_t o = 0; o < OC && T > 0; o++) {
                float d1 = gn_dot_blocks_f32(dt, gn_blocks_row(&m, o), in, IC), d0 = gn_dot_blocks_f32_ref(dt, gn_blocks_row(&m, o), in, IC);
                if (!close_enough(d1, d0, 1e-5f * (float)(IC + 1))) {
                    CHECK(0, "dot %s level %d IC=%lld row %lld: %g vs ref %g", nm, got, (long long)IC, (long long)o, d1, d0);
                    break;
                }
            }
            gn_matmul(o1, in, &m, T);
            gn_matmul_ref(o0, in, &m, T);
            float md = 0, mdr = 0;
            for (int64_t t = 0; t < T; t++)
                for (int64_t o = 0; o < OC; o++) {
                    double ref = 0;
                    for (int64_t i = 0; i < IC; i++) ref += (double)wf[o * IC + i] * in[t * IC + i];
                    md = fmaxf(md, fabsf(o1[t * OC + o] - (float)ref));
                    mdr = fmaxf(mdr, fabsf(o0[t * OC + o] - (float)ref));
                }
            CHECK(md <= 1e-5f * (float)(IC + 1) && mdr <= 1e-6f, "matmul %s level %d T=%lld OC=%lld IC=%lld maxdiff %g (ref %g)",
                  nm, got, (long long)T, (long long)OC, (long long)IC, md, mdr);
            float mdn = matmul_nn_maxdiff(&m, T);
            CHECK(mdn <= 1e-5f * (float)(OC + 1), "matmul_nn %s T=%lld OC=%lld IC=%lld maxdiff %g", nm, (long long)T,
                  (long long)OC, (long long)IC, mdn);
            free(wq); free(wf); free(in); free(o1); free(o0);
        }
    }
}

int main(void) {
    const int64_t sizes[] = {0, 1, 2, 7, 15, 16, 17, 31, 33, 63, 64, 65, 100, 127, 129, 576, 1000};
    const int ns = (int)(sizeof sizes / sizeof sizes[0]);
    for (int lvl = GN_SIMD_SCALAR; lvl <= GN_SIMD_AVX512; lvl++) {
        gn_simd_force((gn_simd)lvl);
        gn_simd got = gn_simd_level();
        for (int si = 0; si < ns; si++) {
            int64_t n = sizes[si];
            float *a = malloc(sizeof(float) * (size_t)(n + 1)), *b = malloc(sizeof(float) * (size_t)(n + 1));
            uint16_t *w = malloc(sizeof(uint16_t) * (size_t)(n + 1));
            for (int64_t i = 0; i < n; i++) { a[i] = frand(); b[i] = frand(); w[i] = gn_f32_to_bf16(frand()); }
            float r1 = gn_dot_f32(a, b, n), r0 = gn_dot_f32_ref(a, b, n);
            CHECK(close_enough(r1, r0, 1e-5f * (float)(n + 1)), "dot_f32 level %d n=%lld: %g vs ref %g", got, (long long)n, r1, r0);
            float q1 = gn_dot_bf16_f32(w, a, n), q0 = gn_dot_bf16_f32_ref(w, a, n);
            CHECK(close_enough(q1, q0, 1e-5f * (float)(n + 1)), "dot_bf16 level %d n=%lld: %g vs ref %g", got, (long long)n, q1, q0);
            free(a); free(b); free(w);
        }
        // matmul: (T, IC) x (OC, IC)^T, both dtypes, T = 1 (decode) and > 1
        // {3, 600, 4099}: matmul_nn in several row blocks (~1 M weights each)
        const int64_t shapes[][3] = {{1, 1, 1}, {1, 65, 33}, {3, 17, 100}, {5, 64, 64}, {1, 0, 7}, {2, 7, 0}, {0, 3, 3}, {9, 129, 63},
                                     {3, 600, 4099}};
        for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
            int64_t T = shapes[k][0], OC = shapes[k][1], IC = shapes[k][2];
            size_t ni = (size_t)(T * IC) + 1, nw = (size_t)(OC * IC) + 1, no = (size_t)(T * OC) + 1;
            float *in = malloc(ni * 4), *wf = malloc(nw * 4), *o1 = calloc(no, 4), *o0 = calloc(no, 4);
            uint16_t *wb = malloc(nw * 2);
            for (size_t i = 0; i < ni; i++) in[i] = frand();
            for (size_t i = 0; i < nw; i++) { wf[i] = frand(); wb[i] = gn_f32_to_bf16(wf[i]); }
            for (int bf = 0; bf < 2; bf++) {
                gn_mat m = {bf ? GN_DTYPE_BF16 : GN_DTYPE_F32, OC, IC, bf ? (const void *)wb : (const void *)wf, NULL};
                gn_matmul(o1, in, &m, T);
                gn_matmul_ref(o0, in, &m, T);
                float md = 0;
                for (int64_t i = 0; i < T * OC; i++) md = fmaxf(md, fabsf(o1[i] - o0[i]));
                CHECK(md <= 1e-4f * (float)(IC + 1), "matmul %s level %d T=%lld OC=%lld IC=%lld maxdiff %g", bf ? "bf16" : "f32",
                      got, (long long)T, (long long)OC, (long long)IC, md);
                // input gradient dx (T, IC) = dy (T, OC) @ W against a plain triple loop
                float mdn = matmul_nn_maxdiff(&m, T);
                CHECK(mdn <= 1e-4f * (float)(OC + 1), "matmul_nn %s T=%lld OC=%lld IC=%lld maxdiff %g", bf ? "bf16" : "f32",
                      (long long)T, (long long)OC, (long long)IC, mdn);
            }
            free(in); free(wf); free(o1); free(o0); free(wb);
        }
    }
    // rmsnorm / softmax / silu on one row vs direct formulas
    float x[37], w[37], o[37];
    for (int i = 0; i < 37; i++) { x[i] = frand() * 3; w[i] = frand(); }
    gn_rmsnorm(o, x, w, 1, 37, 1e-6f);
    double ss = 0;
    for (int i = 0; i < 37; i++) ss += (double)x[i] * x[i];
    double r = 1.0 / sqrt(ss / 37 + 1e-6);
    float md = 0;
    for (int i = 0; i < 37; i++) md = fmaxf(md, fabsf(o[i] - (float)(w[i] * x[i] * r)));
    CHECK(md < 1e-6f, "rmsnorm maxdiff %g", md);
    float sm[5] = {1, 2, 3, 4, 1000}, tot = 0;
    gn_softmax(sm, 5);
    for (int i = 0; i < 5; i++) tot += sm[i];
    CHECK(fabsf(tot - 1) < 1e-6f && sm[4] > 0.999f, "softmax sums to %g", tot);
    gn_softmax(sm, 0); // empty: no-op
    test_gemm_bf16();
    test_gemm_bf16_panels();
    test_silu_mul();
    test_blocks();
    TEST_REPORT();
}
