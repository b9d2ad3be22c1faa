/*
 * test_nf4.c — NF4/FP4 quantization: tables against the spec, hand-checked
 * packing corner cases, every SIMD dequant/matmul path against the scalar
 * reference on awkward shapes, the quant_state JSON, and a save/load round trip.
 * Byte-exactness against bitsandbytes itself is tests/test_nf4.py's job.
 */
#include <float.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "quant/nf4.h"
#include "tensor/kernels.h"

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static float frand(void) {  // uniform in [-1, 1)
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (float)((rng >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

static uint32_t bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

// ---------------------------------------------------------------------------
// tables (docs/FACTS.md §1.1, §1.2, §2.3)

static void test_tables(void) {
    static const uint32_t nf4[16] = {0xbf800000, 0xbf3239b1, 0xbf066b30, 0xbeca32a0, 0xbe91a24d, 0xbe3d353f,
                                     0xbdba7871, 0x00000000, 0x3da2faff, 0x3e24cae3, 0x3e7c04dd, 0x3ead033a,
                                     0x3ee1a4b8, 0x3f1007ab, 0x3f3913b3, 0x3f800000};
    static const uint32_t thr[15] = {0xbf591cd8, 0xbf1c5270, 0xbeeb8480, 0xbeadea76, 0xbe703cec,
                                     0xbe0d38bc, 0xbd3a7871, 0x3d22faff, 0x3df64862, 0x3e5067e0,
                                     0x3e9582d4, 0x3ec753f9, 0x3f006d04, 0x3f248daf, 0x3f5c89da};
    for (int i = 0; i < 16; i++) CHECK(bits(gn_nf4_code[i]) == nf4[i], "nf4[%d] = %08x", i, bits(gn_nf4_code[i]));
    for (int k = 0; k < 15; k++) {
        float m = (gn_nf4_code[k] + gn_nf4_code[k + 1]) / 2.0f;
        CHECK(bits(m) == thr[k], "nf4 threshold %d = %08x, spec %08x", k, bits(m), thr[k]);
    }
    // FP4: {0, 0.0625, 8, 12, 4, 6, 2, 3} / 12, sign bit 3, entry 8 is +0
    const float fp4v[8] = {0, 0.0625f, 8, 12, 4, 6, 2, 3};
    for (int i = 0; i < 8; i++) {
        CHECK(gn_fp4_code[i] == fp4v[i] / 12.0f && gn_fp4_code[i + 8] == -(fp4v[i] / 12.0f), "fp4[%d]", i);
    }
    CHECK(bits(gn_fp4_code[8]) == 0, "fp4[8] is +0.0");
    const struct { int i; uint32_t b; } dm[] = {{128, 0x3513a3b7}, {137, 0x39c7e283}, {138, 0x3a016f01},
                                                {152, 0x3bcfdf3b}, {236, 0x3f3d6666}, {254, 0x3f7e3333},
                                                {255, 0x3f800000}, {127, 0}};
    for (size_t k = 0; k < sizeof dm / sizeof dm[0]; k++)
        CHECK(bits(gn_dynamic_map[dm[k].i]) == dm[k].b, "dynamic map [%d] = %08x", dm[k].i, bits(gn_dynamic_map[dm[k].i]));
    int mirror = 1, sorted = 1;
    for (int k = 1; k <= 127; k++) mirror &= gn_dynamic_map[127 - k] == -gn_dynamic_map[127 + k];
    for (int k = 0; k < 255; k++) sorted &= gn_dynamic_map[k] < gn_dynamic_map[k + 1];
    CHECK(mirror && sorted, "dynamic map mirrored %d sorted %d", mirror, sorted);
}

// ---------------------------------------------------------------------------
// packing corner cases (bnb 0.50 CPU semantics, see nf4.c)

static void test_packing(void) {
    gn_quant4_state q;
    float one = 0.5f;
    CHECK(gn_quantize_4bit(&one, GN_DTYPE_F32, 1, 64, GN_QUANT_NF4, 0, &q) == GN_OK, "quantize 1");
    CHECK(q.packed[0] == 0xF7 && q.absmax[0] == 0.5f, "NF4 [0.5] -> %02x (spare nibble = code of 0.0)", q.packed[0]);
    gn_quant4_free(&q);
    CHECK(gn_quantize_4bit(&one, GN_DTYPE_F32, 1, 64, GN_QUANT_FP4, 0, &q) == GN_OK, "quantize 1 fp4");
    CHECK(q.packed[0] == 0x30, "FP4 [0.5] -> %02x", q.packed[0]);
    gn_quant4_free(&q);

    float z[130] = {0};  // two full zero blocks and a zero tail of 2
    CHECK(gn_quantize_4bit(z, GN_DTYPE_F32, 130, 64, GN_QUANT_NF4, 0, &q) == GN_OK, "zeros");
    CHECK(q.packed[0] == 0x77 && q.packed[64] == 0x77, "zero block packs 0x77 (CUDA: 0x00)");
    CHECK(q.absmax[0] == 0.0f && q.absmax[2] == 1e-38f, "zero absmax: full block stores 0, partial 1e-38 (%g %g)",
          q.absmax[0], q.absmax[2]);
    gn_quant4_free(&q);

    // ties go to the lower code; NaN to code 15; inf scales the block to 0/NaN
    float x[64] = {0};
    x[0] = 1.0f;
    x[1] = (gn_nf4_code[11] + gn_nf4_code[12]) / 2.0f;  // exactly on threshold 11 -> code 11
    x[2] = nextafterf(x[1], 2.0f);                        // just above -> 12
    x[3] = -1.0f;
    CHECK(gn_quantize_4bit(x, GN_DTYPE_F32, 64, 64, GN_QUANT_NF4, 0, &q) == GN_OK, "ties");
    CHECK(q.packed[0] == 0xFB && q.packed[1] == 0xC0, "ties: %02x %02x", q.packed[0], q.packed[1]);
    gn_quant4_free(&q);
    x[5] = NAN;
    CHECK(gn_quantize_4bit(x, GN_DTYPE_F32, 64, 64, GN_QUANT_NF4, 0, &q) == GN_OK, "nan");
    CHECK(isnan(q.absmax[0]) && q.packed[0] == 0xFF && q.packed[31] == 0xFF, "NaN block: all code 15");
    gn_quant4_free(&q);
    x[5] = INFINITY;
    CHECK(gn_quantize_4bit(x, GN_DTYPE_F32, 64, 64, GN_QUANT_NF4, 0, &q) == GN_OK, "inf");
    CHECK(isinf(q.absmax[0]) && q.packed[0] == 0x77 && q.packed[2] == 0x7F, "inf block: %02x %02x",
          q.packed[0], q.packed[2]);
    gn_quant4_free(&q);
    // FP4: tiny positives take index 8 (+0 in the stored map), 0 and negatives index 0
    float f[4] = {1.0f, 1e-3f, 0.0f, -1e-3f};
    CHECK(gn_quantize_4bit(f, GN_DTYPE_F32, 4, 64, GN_QUANT_FP4, 0, &q) == GN_OK, "fp4 small");
    CHECK(q.packed[0] == 0x38 && q.packed[1] == 0x00, "fp4 small: %02x %02x", q.packed[0], q.packed[1]);
    gn_quant4_free(&q);

    CHECK(gn_quantize_4bit(x, GN_DTYPE_F32, 64, 48, GN_QUANT_NF4, 0, &q) == GN_ERR_ARG, "blocksize 48 refused");
    CHECK(gn_quantize_4bit(x, GN_DTYPE_I8, 64, 64, GN_QUANT_NF4, 0, &q) == GN_ERR_ARG, "I8 input refused");
    CHECK(gn_quantize_4bit(x, GN_DTYPE_F32, 0, 64, GN_QUANT_NF4, 0, &q) == GN_ERR_ARG, "empty refused");
}

// ---------------------------------------------------------------------------
// quantization error and bf16 / f16 inputs

static void test_roundtrip(void) {
    const int64_t n = 5000;
    float *x = malloc(n * 4), *d = malloc(n * 4);
    uint16_t *xb = malloc(n * 2), *db = malloc(n * 2);
    for (int64_t i = 0; i < n; i++) { x[i] = frand() * (1 + (i % 7)); xb[i] = gn_f32_to_bf16(x[i]); }
    for (int dq = 0; dq < 2; dq++) {
        gn_quant4_state q;
        CHECK(gn_quantize_4bit(x, GN_DTYPE_F32, n, 64, GN_QUANT_NF4, dq, &q) == GN_OK, "quantize");
        gn_dequantize_4bit(&q, d);
        // largest half-gap of the NF4 table is (1 - 0.6961928) / 2 = 0.1519; DQ moves absmax by < 1%
        float worst = 0;
        for (int64_t i = 0; i < n; i++) {
            float am = 0;
            for (int64_t j = i / 64 * 64; j < (i / 64 + 1) * 64 && j < n; j++) am = fmaxf(am, fabsf(x[j]));
            worst = fmaxf(worst, fabsf(d[i] - x[i]) / am);
        }
        CHECK(worst <= (dq ? 0.16f : 0.1520f), "NF4 dq=%d relative error %g", dq, worst);
        gn_quant4_free(&q);
        // bf16 input: same codes as its float32 value
        gn_quant4_state qa, qb;
        float *xf = malloc(n * 4);
        for (int64_t i = 0; i < n; i++) xf[i] = gn_bf16_to_f32(xb[i]);
        CHECK(gn_quantize_4bit(xb, GN_DTYPE_BF16, n, 128, GN_QUANT_FP4, dq, &qa) == GN_OK, "bf16 in");
        CHECK(gn_quantize_4bit(xf, GN_DTYPE_F32, n, 128, GN_QUANT_FP4, dq, &qb) == GN_OK, "f32 in");
        float *sa = malloc((size_t)qa.nblocks * 4), *sb = malloc((size_t)qb.nblocks * 4);
        gn_quant4_scales(&qa, sa);
        gn_quant4_scales(&qb, sb);
        CHECK(memcmp(qa.packed, qb.packed, (n + 1) / 2) == 0 && memcmp(sa, sb, qa.nblocks * 4) == 0,
              "bf16 input quantizes like its float32 value");
        CHECK(dq ? qa.absmax == NULL : qa.absmax != NULL, "DQ keeps no float32 scales (dq=%d)", dq);
        free(sa); free(sb);
        CHECK(qa.dtype == GN_DTYPE_BF16 && gn_dequantize_4bit_to(&qa, GN_DTYPE_BF16, db) == GN_OK, "to bf16");
        gn_dequantize_4bit(&qa, d);
        int same = 1;
        for (int64_t i = 0; i < n; i++) same &= db[i] == gn_f32_to_bf16(d[i]);
        CHECK(same, "bf16 dequant = bf16(f32 product)");
        gn_quant4_free(&qa);
        gn_quant4_free(&qb);
        free(xf);
    }
    free(x); free(d); free(xb); free(db);
}

// ---------------------------------------------------------------------------
// every SIMD level against the scalar reference

static void fill_state(gn_quant4_state *q, int64_t rows, int64_t cols, int bs, int qt, int dq, gn_dtype wdt) {
    int64_t n = rows * cols;
    float *w = malloc((size_t)n * 4);
    for (int64_t i = 0; i < n; i++) w[i] = frand() * (1.0f + (float)(i % 13));
    GN_ASSERT(gn_quantize_4bit(w, GN_DTYPE_F32, n, bs, qt, dq, q) == GN_OK);
    int64_t shape[2] = {rows, cols};
    GN_ASSERT(gn_quant4_set_shape(q, 2, shape) == GN_OK);
    q->wdtype = wdt;
    free(w);
}

// The rules of the decode and GEMM kernels that do not take the reference's rounded weights
// (nf4_kernels.c), for a bf16 compute dtype:
// - the integer rules, blocks of a multiple of 64: decode (AVX2, one activation row: codes
//   and inputs as 15-bit integers) and the GEMM (more than 16 rows, AVX2 or AVX-512 without
//   BF16 dot products: 14-bit codes, 13-bit inputs). Against the dequantize-then-multiply
//   reference, each term may be off by its code's rounding (0.5/ONE_W of the block scale), its
//   input's (0.5 m_g/ONE_X, m_g = max |x| over the run of 64 columns) and the reference's own
//   rounding of the weight to bf16 (2^-9 of it).
// - the factored decode (AVX512_BF16, one activation row, blocks of exactly 64): weights
//   bf16(code) * s instead of bf16(code * s), inputs rounded to bf16 as the reference's; each
//   term off by |bf16(code) s - bf16(code s)| |x|.
// rule_extra returns that sum for row r (0 where no rule applies, so the caller's bound stays
// the summation bound).
static int env_on(const char *name) {
    const char *e = getenv(name);
    return e && *e && strcmp(e, "0") != 0;
}
static int bf16dot_on(void) {
    return gn_simd_level() == GN_SIMD_AVX512 && __builtin_cpu_supports("avx512bf16") && !env_on("GN_NF4_NO_BF16DOT");
}
static int b64f_applies(const gn_quant4_state *q, int64_t T) {
    return T == 1 && !env_on("GN_NF4_EXACT_DECODE") && q->wdtype == GN_DTYPE_BF16 && q->blocksize == 64 &&
           q->cols > 0 && q->cols % 64 == 0 && bf16dot_on();
}
static int i16_applies(const gn_quant4_state *q, int64_t T) {
    if (env_on("GN_NF4_EXACT_DECODE") || q->wdtype != GN_DTYPE_BF16 || q->blocksize % 64 != 0) return 0;
    const gn_simd l = gn_simd_level();
    if (T == 1) return (l == GN_SIMD_AVX2 || (l == GN_SIMD_AVX512 && !bf16dot_on())) && q->cols % q->blocksize == 0;
    return T > 16 && l != GN_SIMD_SCALAR && !bf16dot_on() && q->cols > 0 && q->cols % 64 == 0;
}
static int rule_applies(const gn_quant4_state *q, int64_t T) { return i16_applies(q, T) || b64f_applies(q, T); }

static double rule_extra(const gn_quant4_state *q, int64_t T, int64_t r, const float *x) {
    const int f = b64f_applies(q, T);
    if (!f && !i16_applies(q, T)) return 0.0;
    const int64_t C = q->cols;
    const double ow = T == 1 ? 16383 : 8191, ox = T == 1 ? 16383 : 4095;
    double sum = 0.0, m = 0.0;
    for (int64_t c = 0; c < C; c++) {
        const double xr = fabs((double)gn_bf16_to_f32(gn_f32_to_bf16(x[c])));
        const int64_t e = r * C + c;
        const uint8_t b = q->packed[e >> 1];
        const float code = q->code[(e & 1) ? (b & 15) : (b >> 4)], sf = gn_quant4_scale(q, e / q->blocksize);
        if (f) { // the factored decode: exact difference of the two weights
            const double ours = (double)gn_bf16_to_f32(gn_f32_to_bf16(code)) * sf;
            sum += fabs(ours - (double)gn_bf16_to_f32(gn_f32_to_bf16(code * sf))) * xr;
            continue;
        }
        if (c % 64 == 0) {
            m = 0.0;
            for (int64_t k = c; k < c + 64; k++) m = fmax(m, fabs((double)gn_bf16_to_f32(gn_f32_to_bf16(x[k]))));
        }
        const double s = fabs((double)sf), ac = fabs((double)code);
        sum += s * ((0.5 / ow) * (xr + 0.5 * m / ox) + ac * 0.5 * m / ox + 0x1p-9 * ac * xr);
    }
    return sum * (1 + 0x1p-20);
}

static void test_kernels_vs_ref(void) {
    // 1100 rows: 35 panels of 32, the last partial (on AMX, tasks of 2 panels with 2 threads, the last one alone)
    const int64_t shapes[][2] = {{1, 1}, {1, 63}, {3, 100}, {7, 200}, {5, 4160}, {17, 64}, {33, 128}, {2, 4096}, {1100, 96}};
    const int bss[] = {32, 64, 128};
    const int64_t Ts[] = {0, 1, 3, 9, 16, 17, 41}; // 1..16: fused table kernel (tiles of 8 rows); 17, 41: sgemm tiles
    // or, bf16 on AVX512_BF16, the vdpbf16ps GEMM (8-row blocks: 17 and 41 leave 1 row over)
    const gn_dtype wdts[] = {GN_DTYPE_F32, GN_DTYPE_BF16, GN_DTYPE_F16};
    for (int lvl = GN_SIMD_SCALAR; lvl <= GN_SIMD_AVX512; lvl++) {
        gn_simd_force((gn_simd)lvl);
        int got = (int)gn_simd_level();
        if (got != lvl) continue;  // this CPU lacks the level
        for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
            for (size_t bi = 0; bi < sizeof bss / sizeof bss[0]; bi++) {
                int64_t R = shapes[si][0], C = shapes[si][1], n = R * C;
                int qt = (si + bi) % 2 ? GN_QUANT_FP4 : GN_QUANT_NF4, dq = (int)(si % 2);
                gn_quant4_state q;
                fill_state(&q, R, C, bss[bi], qt, dq, wdts[(si + bi) % 3]);
                // dequantization: exact, whole tensor and odd ranges
                float *d0 = malloc((size_t)n * 4), *d1 = malloc((size_t)n * 4);
                gn_dequantize_4bit_ref(&q, d0);
                gn_dequantize_4bit(&q, d1);
                CHECK(memcmp(d0, d1, (size_t)n * 4) == 0, "dequant level %d %lldx%lld bs %d", lvl, (long long)R,
                      (long long)C, bss[bi]);
                int64_t e0 = n > 3 ? 3 : 0, len = n - e0 > 37 ? n - e0 - 5 : n - e0;
                gn_dequantize_4bit_range(&q, e0, len, d1);
                CHECK(memcmp(d0 + e0, d1, (size_t)len * 4) == 0, "dequant range level %d", lvl);
                // matmul: same rounded weights, summation order differs; bound
                // |out - ref| <= cols * 2^-22 * sum |w x| (a float32 summation bound)
                for (size_t ti = 0; ti < sizeof Ts / sizeof Ts[0]; ti++) {
                    int64_t T = Ts[ti];
                    size_t ni = (size_t)(T * C) + 1, no = (size_t)(T * R) + 1;
                    float *in = malloc(ni * 4), *o0 = calloc(no, 4), *o1 = calloc(no, 4);
                    for (size_t i = 0; i < ni; i++) in[i] = frand();
                    gn_nf4_matmul_ref(o0, in, &q, T);
                    gn_nf4_matmul(o1, in, &q, T);
                    float worst = 0;
                    for (int64_t t = 0; t < T; t++)
                        for (int64_t r = 0; r < R; r++) {
                            double sa = 0;
                            for (int64_t c = 0; c < C; c++) sa += fabs((double)d0[r * C + c] * in[t * C + c]);
                            float err = fabsf(o1[t * R + r] - o0[t * R + r]);
                            // outputs are rounded to the compute dtype: the two sums may round
                            // to neighbouring values, one unit in the last place apart
                            double ulp = q.wdtype == GN_DTYPE_BF16 ? 0x1p-7 : q.wdtype == GN_DTYPE_F16 ? 0x1p-10 : 0;
                            float tol = (float)((double)C * 0x1p-22 * sa * (1 + ulp) + ulp * fabs(o0[t * R + r]) +
                                                rule_extra(&q, T, r, in + t * C) * (1 + ulp)) + 1e-30f;
                            worst = fmaxf(worst, err / tol);
                        }
                    CHECK(worst <= 1.0f, "matmul level %d %lldx%lld bs %d wdtype %s T=%lld: error %g of bound",
                          lvl, (long long)R, (long long)C, bss[bi], gn_dtype_name(q.wdtype), (long long)T, worst);
                    free(in); free(o0); free(o1);
                }
                free(d0); free(d1);
                gn_quant4_free(&q);
            }
    }
    // several matrices, one input (q/k/v): each output equals its single-matrix reference
    for (int lvl = GN_SIMD_SCALAR; lvl <= GN_SIMD_AVX512; lvl++) {
        gn_simd_force((gn_simd)lvl);
        const int64_t rows[3] = {17, 1, 40}, C = 192, Tm[] = {1, 5, 12};
        gn_quant4_state qs[3];
        const gn_quant4_state *qp[3];
        for (int i = 0; i < 3; i++) { fill_state(&qs[i], rows[i], C, 64, i == 1 ? GN_QUANT_FP4 : GN_QUANT_NF4, i != 0, GN_DTYPE_BF16); qp[i] = &qs[i]; }
        for (size_t ti = 0; ti < 3; ti++) {
            int64_t T = Tm[ti];
            float *in = malloc(sizeof(float) * (size_t)(T * C)), *o[3], *r = malloc(sizeof(float) * (size_t)(T * 40));
            for (int64_t i = 0; i < T * C; i++) in[i] = frand();
            for (int i = 0; i < 3; i++) o[i] = calloc((size_t)(T * rows[i]), sizeof(float));
            gn_nf4_matmul_multi(o, in, qp, 3, T);
            float worst = 0, worst_i16 = 0;
            for (int i = 0; i < 3; i++) {
                gn_nf4_matmul_ref(r, in, qp[i], T);
                float mx = 1e-30f;
                for (int64_t k = 0; k < T * rows[i]; k++) mx = fmaxf(mx, fabsf(r[k]));
                for (int64_t k = 0; k < T * rows[i]; k++) {
                    if (rule_applies(qp[i], T)) { // the decode rule, and one bf16 step of the output
                        const double tol = rule_extra(qp[i], T, k, in) * (1 + 0x1p-7) + 0x1p-7 * fabs(r[k]) + 1e-30;
                        worst_i16 = fmaxf(worst_i16, (float)(fabs(o[i][k] - r[k]) / tol));
                    } else worst = fmaxf(worst, fabsf(o[i][k] - r[k]) / mx);
                }
                free(o[i]);
            }
            // relative to the largest output: f32 summation orders, and on AVX512_BF16
            // the activations carried as two bf16 halves (16 significant bits)
            CHECK(worst <= 2e-5f, "matmul_multi level %d T=%lld maxdiff %g of max|out|", lvl, (long long)T, worst);
            CHECK(worst_i16 <= 1.0f, "matmul_multi level %d T=%lld: error %g of the integer decode bound", lvl,
                  (long long)T, worst_i16);
            free(in); free(r);
        }
        for (int i = 0; i < 3; i++) gn_quant4_free(&qs[i]);
    }
    // blocks with denormal-range scales (the bf16-dot table falls back to exact rounding):
    // row 0 tiny, row 1 ordinary; each row against the reference, relative to its own size
    {
        gn_simd_force(GN_SIMD_AVX512);
        const int64_t R = 2, C = 128;
        float w[256], x[128], o[2], r[2];
        for (int i = 0; i < 256; i++) w[i] = frand() * (i < 128 ? 1e-38f : 1.0f);
        for (int i = 0; i < 128; i++) x[i] = frand();
        gn_quant4_state q;
        GN_ASSERT(gn_quantize_4bit(w, GN_DTYPE_F32, R * C, 64, GN_QUANT_NF4, 0, &q) == GN_OK);
        int64_t shape[2] = {R, C};
        GN_ASSERT(gn_quant4_set_shape(&q, 2, shape) == GN_OK);
        q.wdtype = GN_DTYPE_BF16;
        gn_nf4_matmul(o, x, &q, 1);
        gn_nf4_matmul_ref(r, x, &q, 1);
        // vdpbf16ps treats denormal inputs and outputs as zero: weights below 1.2e-38 count as 0
        // there (documented in nf4_kernels.c); other paths give the exact tiny sum
        CHECK(fabsf(o[0] - r[0]) <= 1e-36f, "tiny-scale row: %g vs ref %g", o[0], r[0]);
        // (where the factored decode rule applies: its bound, and the two sums may round to
        // neighbouring bf16 outputs, one step apart)
        const double rule = rule_extra(&q, 1, 1, x), step = rule > 0.0 ? 0x1p-7 * fabs((double)r[1]) : 0.0;
        CHECK(fabsf(o[1] - r[1]) <= 1e-5f * (fabsf(r[1]) + 1.0f) + rule + step, "ordinary row beside it: %g vs ref %g",
              o[1], r[1]);
        gn_quant4_free(&q);
    }
    gn_simd_force(GN_SIMD_AVX512);  // back to the best this CPU has
    // the matmul rounds weights to wdtype: check the reference does what it says
    gn_quant4_state q;
    fill_state(&q, 2, 64, 64, GN_QUANT_NF4, 0, GN_DTYPE_BF16);
    float x[64] = {0}, o[2], d[128];
    x[5] = 1.0f;
    gn_nf4_matmul_ref(o, x, &q, 1);
    gn_dequantize_4bit(&q, d);
    CHECK(o[1] == gn_bf16_to_f32(gn_f32_to_bf16(d[64 + 5])), "weights rounded to bf16 in matmul");
    // the fused kernels: one row (T = 1) and two rows (the table kernel, reference weights); with
    // the factored decode (AVX512_BF16) one row is bf16(code) * s, within its rule
    float x2r[128], o2r[4];
    memcpy(x2r, x, sizeof x), memcpy(x2r + 64, x, sizeof x);
    gn_nf4_matmul(o2r, x2r, &q, 2);
    CHECK(o2r[1] == gn_bf16_to_f32(gn_f32_to_bf16(d[64 + 5])) && o2r[3] == o2r[1], "weights rounded to bf16 in fused matmul (T=2)");
    gn_nf4_matmul(o, x, &q, 1);
    if (b64f_applies(&q, 1))
        CHECK(fabs(o[1] - gn_bf16_to_f32(gn_f32_to_bf16(d[64 + 5]))) <= rule_extra(&q, 1, 1, x) + 0x1p-7 * fabs(o2r[1]),
              "fused decode within the factored rule: %g vs %g", o[1], o2r[1]);
    else CHECK(o[1] == gn_bf16_to_f32(gn_f32_to_bf16(d[64 + 5])), "weights rounded to bf16 in fused matmul");
    // inputs and outputs in the compute dtype too (bnb's Linear4bit): 1 + 2^-10 is 1 in bf16, so
    // the product is exactly the bf16 weight; a sum that is not a bf16 value comes back rounded
    x[5] = 1.0f + 0x1p-10f;
    memcpy(x2r, x, sizeof x), memcpy(x2r + 64, x, sizeof x);
    for (int path = 0; path < 2; path++) {
        if (path) gn_nf4_matmul(o2r, x2r, &q, 2), o[1] = o2r[1];
        else gn_nf4_matmul_ref(o, x, &q, 1);
        CHECK(o[1] == gn_bf16_to_f32(gn_f32_to_bf16(d[64 + 5])), "input rounded to bf16 (%s)", path ? "fused" : "ref");
    }
    gn_nf4_matmul(o, x, &q, 1); // one row: the same bf16 input as the reference's
    CHECK(fabs(o[1] - gn_bf16_to_f32(gn_f32_to_bf16(d[64 + 5]))) <= rule_extra(&q, 1, 1, x) + 0x1p-7 * fabs(o2r[1]),
          "input rounded to bf16 (decode): %g vs %g", o[1], o2r[1]);
    float x2[128];
    for (int i = 0; i < 128; i++) x2[i] = frand();
    for (int64_t T = 1; T <= 2; T++) { // T=1: fused; T=2 of 64 columns: also fused; then the sgemm path (T=20)
        float o2[40];
        gn_nf4_matmul(o2, x2, &q, T);
        for (int64_t i = 0; i < 2 * T; i++)
            CHECK(o2[i] == gn_bf16_to_f32(gn_f32_to_bf16(o2[i])), "output %lld is a bf16 value (T=%lld)", (long long)i,
                  (long long)T);
    }
    {
        float x3[20 * 64], o3[40], r3[40];
        for (int i = 0; i < 20 * 64; i++) x3[i] = frand();
        gn_nf4_matmul(o3, x3, &q, 20);
        gn_nf4_matmul_ref(r3, x3, &q, 20);
        int ok = 1;
        for (int i = 0; i < 40; i++) // (on AVX2: the integer GEMM's rule on top)
            ok &= o3[i] == gn_bf16_to_f32(gn_f32_to_bf16(o3[i])) &&
                  fabsf(o3[i] - r3[i]) <= 0x1p-7f * fabsf(r3[i]) + 1e-6f + (float)rule_extra(&q, 20, i % 2, x3 + (i / 2) * 64) * 1.01f;
        CHECK(ok, "T=20 (GEMM path): bf16 outputs equal to the reference within one bf16 step");
    }
    gn_quant4_free(&q);
}

// The integer GEMM (more than 16 activation rows, bf16 compute, AVX2 or AVX-512 without
// BF16 dot products) against the scalar reference under its rule (i16_extra), on shapes
// that cut its tiles (16 activation rows, 4 and 32 weight rows, 256 columns) anywhere:
// activation runs of zeros and of a wide range, rows whose block scale is tiny or
// non-finite (the exact per-row fallback), an input with a NaN (the sgemm fallback), and
// several matrices of one input.
static void check_gemm_rule(const gn_quant4_state *q, const float *in, int64_t T, const float *o, const char *what) {
    const int64_t R = q->rows, C = q->cols;
    float *w = malloc(sizeof(float) * (size_t)(R * C) + 4);
    gn_dequantize_4bit_ref(q, w);
    float *ref = malloc(sizeof(float) * (size_t)(T * R) + 4);
    gn_nf4_matmul_ref(ref, in, q, T);
    double worst = 0.0;
    for (int64_t t = 0; t < T; t++)
        for (int64_t r = 0; r < R; r++) {
            double sa = 0.0;
            for (int64_t c = 0; c < C; c++) sa += fabs((double)w[r * C + c] * in[t * C + c]);
            const double tol = (double)C * 0x1p-22 * sa * (1 + 0x1p-7) + 0x1p-7 * fabs(ref[t * R + r]) +
                               rule_extra(q, T, r, in + t * C) * (1 + 0x1p-7) + 1e-30;
            worst = fmax(worst, fabs((double)o[t * R + r] - ref[t * R + r]) / tol);
        }
    CHECK(worst <= 1.0, "%s %lldx%lld bs %d T=%lld: error %g of the bound", what, (long long)R, (long long)C,
          q->blocksize, (long long)T, worst);
    free(w);
    free(ref);
}

static void test_int_gemm(void) {
    for (int lvl = GN_SIMD_AVX2; lvl <= GN_SIMD_AVX512; lvl++) {
        gn_simd_force((gn_simd)lvl);
        if ((int)gn_simd_level() != lvl) continue;
        const int64_t Rs[] = {1, 3, 33, 70}, Cs[] = {64, 320, 576}, Ts[] = {17, 31, 100};
        const int bss[] = {64, 128, 256};
        int n = 0;
        for (size_t ri = 0; ri < 4; ri++)
            for (size_t ci = 0; ci < 3; ci++)
                for (size_t bi = 0; bi < 3; bi++, n++) {
                    const int64_t R = Rs[ri], C = Cs[ci], T = Ts[n % 3];
                    gn_quant4_state q;
                    fill_state(&q, R, C, bss[bi], n % 4 == 3 ? GN_QUANT_FP4 : GN_QUANT_NF4, n % 2, GN_DTYPE_BF16);
                    if (lvl == GN_SIMD_AVX2 && !env_on("GN_NF4_EXACT_DECODE"))
                        CHECK(i16_applies(&q, T), "the integer rule applies at AVX2 (%lldx%lld)", (long long)R, (long long)C);
                    float *in = malloc(sizeof(float) * (size_t)(T * C)), *o = malloc(sizeof(float) * (size_t)(T * R));
                    for (int64_t i = 0; i < T * C; i++) {
                        const int64_t t = i / C, g = (i % C) / 64;
                        in[i] = (t + g) % 5 == 1 ? 0.0f                                        // a run of zeros
                                : (t + g) % 5 == 2 ? frand() * ((i % 64) == 7 ? 300.0f : 1e-3f) // a wide run
                                                   : frand();
                    }
                    gn_nf4_matmul(o, in, &q, T);
                    check_gemm_rule(&q, in, T, o, "integer GEMM");
                    if (lvl == GN_SIMD_AVX512 && i16_applies(&q, T)) {
                        // on AVX512_VNNI the AVX-512 level's tiles are vpdpwssd (ig_tile16_vnni512;
                        // GN_NF4_VNNI_YMM=1: ig_tile8_vnni): the same int32 sums as the AVX2 level's
                        // vpmaddwd tiles, the same bits out
                        float *o2 = malloc(sizeof(float) * (size_t)(T * R));
                        gn_simd_force(GN_SIMD_AVX2);
                        gn_nf4_matmul(o2, in, &q, T);
                        gn_simd_force(GN_SIMD_AVX512);
                        CHECK(memcmp(o, o2, sizeof(float) * (size_t)(T * R)) == 0,
                              "integer GEMM %lldx%lld bs %d T=%lld: the AVX-512 level's outputs are the AVX2 level's "
                              "bit for bit", (long long)R, (long long)C, bss[bi], (long long)T);
                        free(o2);
                    }
                    free(in);
                    free(o);
                    gn_quant4_free(&q);
                }
        // row 1: its first block's scale tiny (below 2^-30), row 2: its second's infinite; the
        // others ordinary. T = 20 activation rows, one of them (row 5) with a NaN.
        {
            const int64_t R = 6, C = 192, T = 20;
            float *w = malloc(sizeof(float) * (size_t)(R * C)), *in = malloc(sizeof(float) * (size_t)(T * C));
            float *o = malloc(sizeof(float) * (size_t)(T * R)), *ref = malloc(sizeof(float) * (size_t)(T * R));
            for (int64_t i = 0; i < R * C; i++) w[i] = frand();
            for (int64_t c = 0; c < 64; c++) w[C + c] *= 1e-12f;
            for (int64_t i = 0; i < T * C; i++) in[i] = frand();
            gn_quant4_state q;
            GN_ASSERT(gn_quantize_4bit(w, GN_DTYPE_F32, R * C, 64, GN_QUANT_NF4, 0, &q) == GN_OK);
            int64_t shape[2] = {R, C};
            GN_ASSERT(gn_quant4_set_shape(&q, 2, shape) == GN_OK);
            q.wdtype = GN_DTYPE_BF16;
            ((float *)q.absmax)[2 * C / 64 + 1] = INFINITY; // (the state owns its scales)
            gn_nf4_matmul(o, in, &q, T);
            gn_nf4_matmul_ref(ref, in, &q, T);
            int same_nan = 1;
            double worst = 0.0;
            for (int64_t t = 0; t < T; t++)
                for (int64_t r = 0; r < R; r++) {
                    const float a = o[t * R + r], b = ref[t * R + r];
                    if (isnan(b) || isinf(b)) { same_nan &= isnan(a) == isnan(b) && (isnan(a) || a == b); continue; }
                    const double tol = r == 1 ? 1e-36 + 0x1p-7 * fabs(b)
                                              : 0x1p-6 * fabs(b) + 1e-6 + rule_extra(&q, T, r, in + t * C) * 1.01;
                    worst = fmax(worst, fabs((double)a - b) / tol);
                }
            CHECK(same_nan, "non-finite scale: the same infinite/NaN outputs as the reference");
            CHECK(worst <= 1.0, "tiny and infinite block scales: error %g of the bound", worst);
            in[5 * C + 17] = NAN;
            gn_nf4_matmul(o, in, &q, T);
            int nan_row = 1;
            for (int64_t r = 0; r < R; r++) nan_row &= isnan(o[5 * R + r]) != 0;
            CHECK(nan_row, "a NaN input gives a NaN output row (the sgemm fallback)");
            free(w); free(in); free(o); free(ref);
            gn_quant4_free(&q);
        }
        // q/k/v of one input: one packed input, one parallel loop over all their rows
        {
            const int64_t rows[3] = {17, 1, 40}, C = 256, T = 40;
            gn_quant4_state qs[3];
            const gn_quant4_state *qp[3];
            float *o[3], *in = malloc(sizeof(float) * (size_t)(T * C));
            for (int64_t i = 0; i < T * C; i++) in[i] = frand();
            for (int i = 0; i < 3; i++) {
                fill_state(&qs[i], rows[i], C, 64, i == 1 ? GN_QUANT_FP4 : GN_QUANT_NF4, i != 0, GN_DTYPE_BF16);
                qp[i] = &qs[i];
                o[i] = malloc(sizeof(float) * (size_t)(T * rows[i]));
            }
            gn_nf4_matmul_multi(o, in, qp, 3, T);
            for (int i = 0; i < 3; i++) {
                check_gemm_rule(qp[i], in, T, o[i], "integer GEMM, one of three");
                free(o[i]);
                gn_quant4_free(&qs[i]);
            }
            free(in);
        }
    }
    gn_simd_force(GN_SIMD_AVX512);
}

// Decode rows shared out by a counter (several stretches a thread): the outputs do not depend on
// the number of threads, nor on whether the product opens its own team or runs in the caller's
// (gn_nf4_matmul_multi_team); each matrix equals its own single-matrix product bit for bit
static void test_multi_split(void) {
    const int64_t rows[3] = {300, 1, 523}, C = 320;
    for (int lvl = GN_SIMD_AVX2; lvl <= GN_SIMD_AVX512; lvl++) {
        gn_simd_force((gn_simd)lvl);
        if (gn_simd_level() != (gn_simd)lvl) continue;
        gn_quant4_state qs[3];
        const gn_quant4_state *qp[3];
        float *in = malloc(sizeof(float) * (size_t)C), *o1[3], *o3[3], *ot[3], *os[3];
        for (int64_t i = 0; i < C; i++) in[i] = frand();
        for (int i = 0; i < 3; i++) {
            fill_state(&qs[i], rows[i], C, 64, i == 1 ? GN_QUANT_FP4 : GN_QUANT_NF4, i != 1, GN_DTYPE_BF16);
            qp[i] = &qs[i];
            o1[i] = calloc((size_t)rows[i], sizeof(float)); o3[i] = calloc((size_t)rows[i], sizeof(float));
            ot[i] = calloc((size_t)rows[i], sizeof(float)); os[i] = calloc((size_t)rows[i], sizeof(float));
        }
        int nthr = omp_get_max_threads();
        omp_set_num_threads(1);
        gn_nf4_matmul_multi(o1, in, qp, 3, 1);
        for (int i = 0; i < 3; i++) gn_nf4_matmul(os[i], in, qp[i], 1);
        omp_set_num_threads(3);
        gn_nf4_matmul_multi(o3, in, qp, 3, 1);
        int64_t next = 0;
        #pragma omp parallel
        gn_nf4_matmul_multi_team(ot, in, qp, 3, 1, &next);
        omp_set_num_threads(nthr);
        int same = 1;
        for (int i = 0; i < 3; i++)
            for (int64_t r = 0; r < rows[i]; r++)
                same &= o1[i][r] == o3[i][r] && o1[i][r] == ot[i][r] && o1[i][r] == os[i][r];
        CHECK(same, "level %d: decode rows shared by a counter equal one thread's and the single products bit for bit", lvl);
        for (int i = 0; i < 3; i++) { free(o1[i]); free(o3[i]); free(ot[i]); free(os[i]); gn_quant4_free(&qs[i]); }
        free(in);
    }
    gn_simd_force(GN_SIMD_AVX512);
}

// the input gradient dy @ W in the compute dtype, against its scalar reference, at every level
// (AVX512_BF16: the vdpbf16ps GEMM; elsewhere sgemm on dequantized rows), awkward shapes
static void test_matmul_nn(void) {
    // the last three: bf16 with double quantization and C % 64 == 0, where AVX512_BF16 packs the
    // GEMM's panels straight from the codes (odd R: the last pair of rows half zero; 1500 blocks:
    // six nested groups)
    const int64_t shapes[][2] = {{1, 64}, {3, 100}, {33, 128}, {17, 64}, {65, 96}, {2, 4160}, {2051, 64},
                                 {7, 192}, {300, 320}, {33, 4096}};
    const int64_t Ts[] = {1, 7, 8, 9, 40};
    const gn_dtype wdts[] = {GN_DTYPE_BF16, GN_DTYPE_F32, GN_DTYPE_F16};
    for (int lvl = GN_SIMD_SCALAR; lvl <= GN_SIMD_AVX512; lvl++) {
        gn_simd_force((gn_simd)lvl);
        for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
            const int64_t R = shapes[si][0], C = shapes[si][1];
            gn_quant4_state q;
            if (si >= 7) fill_state(&q, R, C, 64, GN_QUANT_NF4, 1, GN_DTYPE_BF16);
            else fill_state(&q, R, C, 64, GN_QUANT_NF4, (int)(si % 2), wdts[si % 3]);
            float *d = malloc(sizeof(float) * (size_t)(R * C));
            gn_dequantize_4bit(&q, d);
            for (size_t ti = 0; ti < sizeof Ts / sizeof Ts[0]; ti++) {
                const int64_t T = Ts[ti];
                float *dy = malloc(sizeof(float) * (size_t)(T * R)), *o0 = malloc(sizeof(float) * (size_t)(T * C));
                float *o1 = malloc(sizeof(float) * (size_t)(T * C));
                for (int64_t i = 0; i < T * R; i++) dy[i] = frand();
                gn_nf4_matmul_nn_ref(o0, dy, &q, T);
                gn_nf4_matmul_nn(o1, dy, &q, T);
                double ulp = q.wdtype == GN_DTYPE_BF16 ? 0x1p-7 : q.wdtype == GN_DTYPE_F16 ? 0x1p-10 : 0;
                float worst = 0;
                for (int64_t t = 0; t < T; t++)
                    for (int64_t c = 0; c < C; c++) {
                        double sa = 0;
                        for (int64_t r = 0; r < R; r++) sa += fabs((double)d[r * C + c] * dy[t * R + r]);
                        float tol = (float)((double)R * 0x1p-22 * sa * (1 + ulp) + ulp * fabs(o0[t * C + c])) + 1e-30f;
                        worst = fmaxf(worst, fabsf(o1[t * C + c] - o0[t * C + c]) / tol);
                    }
                CHECK(worst <= 1.0f, "matmul_nn level %d %lldx%lld %s T=%lld: error %g of bound", lvl, (long long)R,
                      (long long)C, gn_dtype_name(q.wdtype), (long long)T, worst);
                free(dy); free(o0); free(o1);
            }
            free(d);
            gn_quant4_free(&q);
        }
    }
    gn_simd_force(GN_SIMD_AVX512);
}

// ---------------------------------------------------------------------------
// JSON, bits per parameter, save/load

static void test_json(void) {
    float x[100];
    for (int i = 0; i < 100; i++) x[i] = frand();
    gn_quant4_state q;
    CHECK(gn_quantize_4bit(x, GN_DTYPE_F32, 100, 64, GN_QUANT_NF4, 1, &q) == GN_OK, "q");
    int64_t shape[2] = {4, 25};
    gn_quant4_set_shape(&q, 2, shape);
    q.dtype = GN_DTYPE_BF16;
    // Python repr() of the float32 offset as a double
    const struct { float v; const char *s; } reprs[] = {
        {0.1f, "0.10000000149011612"}, {1.0f, "1.0"}, {100.0f, "100.0"}, {1e-05f, "9.999999747378752e-06"},
        {1.5e+16f, "1.5000000408846336e+16"}, {123456.78f, "123456.78125"}, {-2.5e-07f, "-2.499999993688107e-07"},
        {0.0003f, "0.0003000000142492354"}, {0.0001f, "9.999999747378752e-05"}, {1e+16f, "1.0000000272564224e+16"},
        {65504.0f, "65504.0"}, {2.6078906059265137f, "2.6078906059265137"}, {1e-45f, "1.401298464324817e-45"},
        {1e15f, "999999986991104.0"}, {0.000125f, "0.0001250000059371814"}, {-0.0f, "-0.0"}, {0.0f, "0.0"}};
    for (size_t k = 0; k < sizeof reprs / sizeof reprs[0]; k++) {
        q.offset = reprs[k].v;
        char *js = gn_quant4_state_json(&q);
        char want[512];
        snprintf(want, sizeof want, "{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"bfloat16\", \"shape\": [4, 25], "
                 "\"nested_blocksize\": 256, \"nested_dtype\": \"float32\", \"nested_offset\": %s}", reprs[k].s);
        CHECK(strcmp(js, want) == 0, "json %s", js);
        free(js);
    }
    gn_quant4_free(&q);
    // bits per parameter: 4 + 8/64 + 32/(64*256) = 4.126953125 ("4.127", QLoRA §3)
    double f = gn_quant4_bits_formula(64, 1, 256);
    CHECK(f == 4.126953125 && fabs(f - 4.127) < 5e-4, "NF4+DQ bits/param %.9f", f);
    CHECK(gn_quant4_bits_formula(64, 0, 0) == 4.5, "NF4 bits/param without DQ");
    float *w = malloc(256 * 4096 * 4);
    for (int i = 0; i < 256 * 4096; i++) w[i] = frand();
    CHECK(gn_quantize_4bit(w, GN_DTYPE_F32, 256 * 4096, 64, GN_QUANT_NF4, 1, &q) == GN_OK, "q big");
    CHECK(gn_quant4_bits_per_param(&q) == f, "256x4096 state: %.9f bits/param", gn_quant4_bits_per_param(&q));
    gn_quant4_free(&q);
    free(w);
}

static void test_save_load(void) {
    char path[] = "/tmp/gn_test_nf4_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0, "mkstemp");
    close(fd);
    for (int dq = 0; dq < 2; dq++) {
        float x[7 * 200];
        for (int i = 0; i < 7 * 200; i++) x[i] = frand() * 3;
        gn_quant4_state q, r;
        int64_t shape[2] = {7, 200};
        CHECK(gn_quantize_4bit(x, GN_DTYPE_F32, 1400, 128, dq ? GN_QUANT_NF4 : GN_QUANT_FP4, dq, &q) == GN_OK, "q");
        gn_quant4_set_shape(&q, 2, shape);
        gn_quant4_export ex;
        CHECK(gn_quant4_export_tensors(&q, "model.layers.0.mlp.down_proj", &ex) == GN_OK, "export");
        CHECK(ex.n == (dq ? 6 : 4), "export count %d", ex.n);
        CHECK(gn_safetensors_save(path, ex.t, ex.n, NULL, 0) == GN_OK, "save: %s", gn_last_error());
        gn_tensor_table tt;
        gn_tensor_table_init(&tt);
        CHECK(gn_safetensors_load(&tt, path) == GN_OK, "load file: %s", gn_last_error());
        CHECK(gn_quant4_present(&tt, "model.layers.0.mlp.down_proj") && !gn_quant4_present(&tt, "model.layers.0"),
              "present");
        gn_status st = gn_quant4_load(&r, &tt, "model.layers.0.mlp.down_proj");
        CHECK(st == GN_OK, "quant4 load: %s", gn_last_error());
        if (st == GN_OK) {
            CHECK(r.rows == 7 && r.cols == 200 && r.nested == dq && r.blocksize == 128 && r.quant_type == q.quant_type,
                  "loaded header");
            float *sr = malloc((size_t)r.nblocks * 4), *sq = malloc((size_t)q.nblocks * 4);
            gn_quant4_scales(&r, sr);
            gn_quant4_scales(&q, sq);
            CHECK(memcmp(r.packed, q.packed, 700) == 0 && memcmp(sr, sq, r.nblocks * 4) == 0, "loaded packed + scales");
            CHECK(dq ? r.absmax == NULL : r.absmax != NULL, "loaded DQ layer keeps no float32 scales");
            free(sr); free(sq);
            CHECK(!dq || (r.offset == q.offset && memcmp(r.nested_code, gn_dynamic_map, 1024) == 0), "nested");
            gn_quant4_free(&r);
        }
        // a layer without its absmax names the missing tensor
        st = gn_quant4_load(&r, &tt, "model.layers.9.mlp.down_proj");
        CHECK(st == GN_ERR_FORMAT && strstr(gn_last_error(), "model.layers.9.mlp.down_proj.weight.quant_state"),
              "missing layer: %s", gn_last_error());
        gn_tensor_table_free(&tt);
        // corrupt JSON
        ex.t[ex.n - 1].data = "{\"quant_type\": 1";
        ex.t[ex.n - 1].nbytes = strlen("{\"quant_type\": 1");
        ex.t[ex.n - 1].shape[0] = (int64_t)ex.t[ex.n - 1].nbytes;
        CHECK(gn_safetensors_save(path, ex.t, ex.n, NULL, 0) == GN_OK, "save bad");
        gn_tensor_table_init(&tt);
        CHECK(gn_safetensors_load(&tt, path) == GN_OK, "load bad file");
        st = gn_quant4_load(&r, &tt, "model.layers.0.mlp.down_proj");
        CHECK(st == GN_ERR_FORMAT && strstr(gn_last_error(), path) && strstr(gn_last_error(), "does not parse"),
              "bad json: %s", gn_last_error());
        gn_tensor_table_free(&tt);
        gn_quant4_export_free(&ex);
        gn_quant4_free(&q);
    }
    unlink(path);
}

static void test_torch_mean(void) {
    float x[40000];
    for (int i = 0; i < 40000; i++) x[i] = 0.25f;
    CHECK(gn_quant4_torch_mean(x, 40000, 1) == 0.25f && gn_quant4_torch_mean(x, 40000, 4) == 0.25f &&
          gn_quant4_torch_mean(x, 3, 1) == 0.25f, "mean of a constant");
    for (int i = 0; i < 40000; i++) x[i] = (float)i;
    CHECK(fabsf(gn_quant4_torch_mean(x, 40000, 2) - 19999.5f) < 0.01f, "mean 0..39999 = %g",
          gn_quant4_torch_mean(x, 40000, 2));
}

// Decode with 64-element blocks and a bf16 compute dtype (the QLoRA default; on
// AVX512_BF16 a kernel of its own: DQ scales looked up per block from per-group tables,
// rows longer than a group in batches whose scales are rebuilt 16 at a time, in runs). Awkward row counts, rows
// whose blocks cross the 256-block nested groups, rows past 1024 blocks, zero blocks,
// and tiny-scale rows (the careful kernel takes their batch), against the reference.
static void test_decode_b64(void) {
    const int64_t Rs[] = {1, 2, 3, 33, 100}, Cs[] = {64, 576, 4160, 66112}; // 66112: runs of blocks
    for (int lvl = GN_SIMD_AVX2; lvl <= GN_SIMD_AVX512; lvl++) {
        gn_simd_force((gn_simd)lvl);
        if ((int)gn_simd_level() != lvl) continue;
        for (size_t ri = 0; ri < sizeof Rs / sizeof Rs[0]; ri++)
            for (size_t ci = 0; ci < sizeof Cs / sizeof Cs[0]; ci++)
                for (int variant = 0; variant < 3; variant++) {
                    const int64_t R = Rs[ri], C = Cs[ci], n = R * C;
                    if (n > 2000000) continue;
                    const int dq = variant != 1, qt = variant == 2 ? GN_QUANT_FP4 : GN_QUANT_NF4;
                    float *w = malloc(sizeof(float) * (size_t)n), *x = malloc(sizeof(float) * (size_t)C);
                    // scales that differ by block and by nested group of 256 blocks (16384 weights)
                    for (int64_t i = 0; i < n; i++) w[i] = frand() * (1.0f + (float)((i / 64) % 5)) * (float)(1 + (i / 16384) % 3);
                    // some all-zero blocks, and (variant 1) a row of denormal-range scale
                    for (int64_t b = 3; b * 64 < n; b += 37) memset(w + b * 64, 0, 64 * sizeof(float));
                    const int64_t tiny = variant == 1 && R > 2 ? R / 2 : -1;
                    if (tiny >= 0) for (int64_t c = 0; c < C; c++) w[tiny * C + c] *= 1e-39f;
                    for (int64_t c = 0; c < C; c++) x[c] = frand();
                    gn_quant4_state q;
                    GN_ASSERT(gn_quantize_4bit(w, GN_DTYPE_F32, n, 64, qt, dq, &q) == GN_OK);
                    GN_ASSERT(gn_quant4_set_shape(&q, 2, (int64_t[]){R, C}) == GN_OK);
                    q.wdtype = GN_DTYPE_BF16;
                    float *d = malloc(sizeof(float) * (size_t)n), *o = malloc(sizeof(float) * (size_t)R),
                          *r = malloc(sizeof(float) * (size_t)R);
                    gn_dequantize_4bit_ref(&q, d);
                    gn_nf4_matmul(o, x, &q, 1);
                    gn_nf4_matmul_ref(r, x, &q, 1);
#ifdef _OPENMP
                    { // a row's sum does not depend on the thread that made it
                        float *o1 = malloc(sizeof(float) * (size_t)R);
                        const int nth = omp_get_max_threads();
                        for (int th = 1; th <= 3; th += 2) {
                            omp_set_num_threads(th);
                            gn_nf4_matmul(o1, x, &q, 1);
                            CHECK(memcmp(o, o1, sizeof(float) * (size_t)R) == 0,
                                  "decode b64 level %d %lldx%lld: %d threads give other bits", lvl, (long long)R,
                                  (long long)C, th);
                        }
                        omp_set_num_threads(nth);
                        free(o1);
                    }
#endif
                    float worst = 0;
                    for (int64_t i = 0; i < R; i++) {
                        double sa = 0;
                        for (int64_t c = 0; c < C; c++) sa += fabs((double)d[i * C + c] * x[c]);
                        // f32 summation in independent chains (8+ of them, each at most C/8 adds, then
                        // a short reduction: (C/8 + 32) * 2^-24 of sum |w x|; the worst case C * 2^-22
                        // would exceed the dot product itself for long rows) plus one bf16 step of the
                        // rounded output; weights below 1.2e-38 count as zero in vdpbf16ps (the tiny
                        // row): an absolute 1e-36 there
                        float tol = (float)((double)(C / 8 + 32) * 0x1p-24 * sa * (1 + 0x1p-7) + 0x1p-7 * fabs(r[i]) +
                                            rule_extra(&q, 1, i, x) * (1 + 0x1p-7)) +
                                    (i == tiny ? 1e-36f : 1e-30f);
                        worst = fmaxf(worst, fabsf(o[i] - r[i]) / tol);
                    }
                    CHECK(worst <= 1.0f, "decode b64 level %d %lldx%lld %s dq %d: error %g of bound", lvl, (long long)R,
                          (long long)C, qt == GN_QUANT_FP4 ? "fp4" : "nf4", dq, worst);
                    free(w); free(x); free(d); free(o); free(r);
                    gn_quant4_free(&q);
                }
    }
    gn_simd_force(GN_SIMD_AVX512);
}

// Blocks of 64 whose scales cannot be factored out of the integer decode (scales near
// 1e-36, where s * sx would be denormal: the nested scale times 1e-36 with offset 0, or
// the absmax times 1e-37 without double quantization; an infinite scale: inf/NaN), in the middle row
// of three, each row one nested group: that row must follow the reference's arithmetic (relative 1e-3 of its
// sum |w x|; NaN where the reference is NaN), the others the integer rule's bound.
static void test_decode_b64_dq_scales(void) {
    const int64_t R = 3, C = 16384, n = R * C;
    float *w = malloc(sizeof(float) * (size_t)n), *x = malloc(sizeof(float) * (size_t)C), *d = malloc(sizeof(float) * (size_t)n);
    float o[3], r[3];
    for (int64_t i = 0; i < n; i++) w[i] = frand() * (1.0f + (float)((i / 64) % 5));
    for (int64_t c = 0; c < C; c++) x[c] = frand();
    for (int lvl = GN_SIMD_AVX2; lvl <= GN_SIMD_AVX512; lvl++) {
        gn_simd_force((gn_simd)lvl);
        if ((int)gn_simd_level() != lvl) continue;
        for (int variant = 0; variant < 4; variant++) { // 0, 1: double quantization; 2, 3: without
            const int dq = variant < 2, inf = variant & 1;
            gn_quant4_state q;
            GN_ASSERT(gn_quantize_4bit(w, GN_DTYPE_F32, n, 64, GN_QUANT_NF4, dq, &q) == GN_OK);
            GN_ASSERT(gn_quant4_set_shape(&q, 2, (int64_t[]){R, C}) == GN_OK);
            q.wdtype = GN_DTYPE_BF16;
            if (dq) { // the state's own copies
                GN_ASSERT(q.nested_blocksize == 256);
                q.offset = 0.0f;
                float *nabs = (float *)q.nested_absmax;
                nabs[1] = inf ? INFINITY : nabs[1] * 1e-36f;
            } else {
                float *am = (float *)q.absmax;
                for (int64_t b = 256; b < 512; b++) am[b] = inf ? INFINITY : am[b] * 1e-37f;
            }
            gn_dequantize_4bit_ref(&q, d);
            gn_nf4_matmul(o, x, &q, 1);
            gn_nf4_matmul_ref(r, x, &q, 1);
            for (int64_t i = 0; i < R; i++) {
                double sa = 0;
                for (int64_t c = 0; c < C; c++) sa += fabs((double)d[i * C + c] * x[c]);
                if (i == 1 && inf) {
                    CHECK((isnan(o[i]) && isnan(r[i])) || o[i] == r[i], "dq inf scale level %d: %g vs ref %g", lvl, o[i], r[i]);
                    continue;
                }
                double tol = i == 1 ? 1e-3 * sa
                                    : (double)(C / 8 + 32) * 0x1p-24 * sa * (1 + 0x1p-7) + 0x1p-7 * fabs(r[i]) +
                                          rule_extra(&q, 1, i, x) * (1 + 0x1p-7) + 1e-30;
                CHECK(fabs((double)o[i] - r[i]) <= tol, "dq scales level %d variant %d row %lld: %g vs ref %g (tol %g)", lvl,
                      variant, (long long)i, o[i], r[i], tol);
            }
            gn_quant4_free(&q);
        }
    }
    gn_simd_force(GN_SIMD_AVX512);
    free(w); free(x); free(d);
}

// Double quantization with nested groups of other sizes than bitsandbytes' 256 blocks (the
// integer decode keeps a table of scales per group for powers of two from 128 and takes its
// general loop below that), rows of 1, 9 and 600 blocks (two rows of 600 span up to six
// groups of 128, so two of them can want the same table slot), odd row counts (row pairs and
// a single row), and (variant 1) a first group whose scales cannot be factored out (offset
// 0, nested scale 1e-36: the rows it touches follow the reference's arithmetic). Two checks:
// against the reference (the rule's bound, loose for long rows: it sums each term's bf16
// rounding), and, where the integer rule applies, bit for bit against the same weights
// without double quantization (absmax = each block's rebuilt scale), which the decode takes
// through its other loop with the same sums in the same order: a block given a wrong scale
// shows there, however long the row.
static void test_decode_b64_nested_sizes(void) {
    const int64_t Cs[] = {64, 576, 64 * 600}, Rs[] = {1, 4, 5};
    const int nbss[] = {32, 64, 128, 512};
    for (int lvl = GN_SIMD_AVX2; lvl <= GN_SIMD_AVX512; lvl++) {
        gn_simd_force((gn_simd)lvl);
        if ((int)gn_simd_level() != lvl) continue;
        for (size_t ci = 0; ci < sizeof Cs / sizeof Cs[0]; ci++)
            for (size_t ri = 0; ri < sizeof Rs / sizeof Rs[0]; ri++)
                for (size_t ni = 0; ni < sizeof nbss / sizeof nbss[0]; ni++)
                    for (int variant = 0; variant < 2; variant++) {
                        const int64_t R = Rs[ri], C = Cs[ci], n = R * C, ng = C / 64;
                        const int nbs = nbss[ni];
                        float *w = malloc(sizeof(float) * (size_t)n), *x = malloc(sizeof(float) * (size_t)C),
                              *d = malloc(sizeof(float) * (size_t)n), *o = malloc(sizeof(float) * (size_t)R),
                              *o2 = malloc(sizeof(float) * (size_t)R), *r = malloc(sizeof(float) * (size_t)R);
                        for (int64_t i = 0; i < n; i++) w[i] = frand() * (1.0f + (float)((i / 64) % 5));
                        for (int64_t c = 0; c < C; c++) x[c] = frand();
                        gn_quant4_state q;
                        GN_ASSERT(gn_quantize_4bit(w, GN_DTYPE_F32, n, 64, GN_QUANT_NF4, 1, &q) == GN_OK);
                        GN_ASSERT(gn_quant4_set_shape(&q, 2, (int64_t[]){R, C}) == GN_OK);
                        q.wdtype = GN_DTYPE_BF16;
                        const int64_t nn = (q.nblocks + nbs - 1) / nbs;
                        float *nabs = malloc(sizeof(float) * (size_t)nn); // ours; the state's own is freed with it
                        for (int64_t k = 0; k < nn; k++) nabs[k] = 0.5f + 0.125f * (float)(k % 7);
                        if (variant == 1) {
                            q.offset = 0.0f;
                            nabs[0] = 1e-36f;
                        }
                        q.nested_absmax = nabs;
                        q.nested_nblocks = nn;
                        q.nested_blocksize = nbs;
                        gn_quant4_state flat = q; // the same block scales, stored
                        float *am = malloc(sizeof(float) * (size_t)q.nblocks);
                        for (int64_t b = 0; b < q.nblocks; b++) am[b] = gn_quant4_scale(&q, b);
                        flat.nested = 0;
                        flat.absmax = am;
                        flat.nowned_ = 0;
                        gn_dequantize_4bit_ref(&q, d);
                        gn_nf4_matmul(o, x, &q, 1);
                        gn_nf4_matmul(o2, x, &flat, 1);
                        gn_nf4_matmul_ref(r, x, &q, 1);
                        if (rule_applies(&q, 1))
                            CHECK(memcmp(o, o2, sizeof(float) * (size_t)R) == 0,
                                  "nested blocks of %d, %lldx%lld, variant %d: not the sums of the same weights stored "
                                  "without double quantization",
                                  nbs, (long long)R, (long long)C, variant);
                        for (int64_t i = 0; i < R; i++) {
                            double sa = 0;
                            int bad = 0;
                            for (int64_t c = 0; c < C; c++) sa += fabs((double)d[i * C + c] * x[c]);
                            for (int64_t b = i * ng; b < (i + 1) * ng; b++) {
                                const float s = fabsf(am[b]);
                                bad |= !(s <= FLT_MAX) || (s != 0.0f && s < 0x1p-30f);
                            }
                            const double tol = bad ? 1e-3 * sa + 1e-37
                                                   : (double)(C / 8 + 32) * 0x1p-24 * sa * (1 + 0x1p-7) +
                                                         0x1p-7 * fabs(r[i]) + rule_extra(&q, 1, i, x) * (1 + 0x1p-7) + 1e-30;
                            CHECK(fabs((double)o[i] - r[i]) <= tol,
                                  "nested blocks of %d, level %d, %lldx%lld, variant %d, row %lld%s: %g vs ref %g (tol %g)",
                                  nbs, lvl, (long long)R, (long long)C, variant, (long long)i,
                                  bad ? " (unfactorable scales)" : "", o[i], r[i], tol);
                        }
                        free(nabs);
                        free(am);
                        gn_quant4_free(&q);
                        free(w); free(x); free(d); free(o); free(o2); free(r);
                    }
    }
    gn_simd_force(GN_SIMD_AVX512);
}

// The quantizer at every SIMD level gives the same bytes: f32, f16 and bf16 inputs, NF4 and
// FP4, blocks holding a NaN, an infinity, all zeros or only tiny values, and a partial last
// block (odd and even lengths), with and without double quantization.
static void test_quantize_levels(void) {
    const int64_t ns[] = {64, 4096 + 64 * 3 + 5, 64 * 40, 64 * 300 + 31};
    const gn_dtype dts[] = {GN_DTYPE_F32, GN_DTYPE_F16, GN_DTYPE_BF16};
    for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++)
        for (size_t di = 0; di < 3; di++)
            for (int v = 0; v < 4; v++) {
                const int64_t n = ns[ni];
                const int qt = v & 1 ? GN_QUANT_FP4 : GN_QUANT_NF4, dq = v >> 1, bs = ni == 1 ? 128 : 64;
                float *f = malloc(sizeof(float) * (size_t)n);
                uint16_t *h = malloc(sizeof(uint16_t) * (size_t)n);
                for (int64_t i = 0; i < n; i++) f[i] = frand() * (float)(1 + (i / 64) % 7);
                if (n > 1000) {
                    f[70] = NAN;                                            // a NaN block
                    f[200] = INFINITY;                                      // an infinite absmax
                    for (int i = 256; i < 320; i++) f[i] = 0.0f;            // a zero block
                    for (int i = 384; i < 448; i++) f[i] = frand() * 1e-39f; // denormal-range block
                    f[500] = -0.0f;
                    f[513] = 0.5f * 0.0f - 1.0f;                            // exactly -absmax
                }
                for (int64_t i = 0; i < n; i++) h[i] = dts[di] == GN_DTYPE_F16 ? gn_f32_to_f16(f[i]) : gn_f32_to_bf16(f[i]);
                const void *src = dts[di] == GN_DTYPE_F32 ? (const void *)f : (const void *)h;
                gn_quant4_state q[2];
                for (int l = 0; l < 2; l++) {
                    gn_simd_force(l ? GN_SIMD_AVX512 : GN_SIMD_SCALAR); // the widest the CPU has, then none
                    GN_ASSERT(gn_quantize_4bit(src, dts[di], n, bs, qt, dq, &q[l]) == GN_OK);
                }
                int same = memcmp(q[0].packed, q[1].packed, (size_t)((n + 1) / 2)) == 0;
                if (dq) {
                    same &= memcmp(q[0].qabsmax, q[1].qabsmax, (size_t)q[0].nblocks) == 0 &&
                            memcmp(q[0].nested_absmax, q[1].nested_absmax, sizeof(float) * (size_t)q[0].nested_nblocks) == 0 &&
                            memcmp(&q[0].offset, &q[1].offset, sizeof(float)) == 0;
                } else same &= memcmp(q[0].absmax, q[1].absmax, sizeof(float) * (size_t)q[0].nblocks) == 0;
                CHECK(same, "quantize %lld elements %s %s dq %d bs %d: SIMD level %d and scalar differ", (long long)n,
                      gn_dtype_name(dts[di]), qt == GN_QUANT_FP4 ? "fp4" : "nf4", dq, bs, (int)gn_simd_level());
                gn_quant4_free(&q[0]);
                gn_quant4_free(&q[1]);
                free(f);
                free(h);
            }
    gn_simd_force(GN_SIMD_AVX512);
}

// AVX-512 without BF16 dot products (GN_NF4_NO_BF16DOT=1 stands in for such a CPU here): the
// integer decode's 512-bit form (two runs a vector) must give the AVX2 integer decode's bits:
// the same products, sums and FMAs a lane. Odd and even run counts (a run without its
// partner at a row's end), rows crossing nested groups of 128 on odd runs (704 and 2368
// columns: a span starting on an odd run), double quantization with groups of 256 and 128 or
// none, a single row and odd row counts (row pairs), inputs with an all-zero run; NF4 and FP4.
// On AVX512_VNNI the 512-bit form runs vpdpwssd (GN_NF4_NO_VNNI=1: vpmaddwd), the same bits.
static void test_decode_i16_avx512_bits(void) {
    gn_simd_force(GN_SIMD_AVX512);
    const int on = (int)gn_simd_level() == GN_SIMD_AVX512 && !bf16dot_on() && !env_on("GN_NF4_EXACT_DECODE");
    gn_simd_force(GN_SIMD_AVX2);
    if (!on || (int)gn_simd_level() != GN_SIMD_AVX2) {
        printf("  (AVX-512 integer decode: not on this CPU / settings; GN_NF4_NO_BF16DOT=1 runs it)\n");
        return;
    }
    const int64_t Cs[] = {64, 128, 192, 576, 704, 64 * 37}, Rs[] = {1, 2, 3, 17};
    for (size_t ci = 0; ci < sizeof Cs / sizeof Cs[0]; ci++)
        for (size_t ri = 0; ri < sizeof Rs / sizeof Rs[0]; ri++)
            for (int dq = 0; dq < 3; dq++)
                for (int qt = 0; qt < 2; qt++) {
                    const int64_t R = Rs[ri], C = Cs[ci], n = R * C;
                    float *w = malloc(sizeof(float) * (size_t)n), *x = malloc(sizeof(float) * (size_t)C),
                          *o2 = malloc(sizeof(float) * (size_t)R), *o5 = malloc(sizeof(float) * (size_t)R);
                    for (int64_t i = 0; i < n; i++) w[i] = frand() * (1.0f + (float)((i / 64) % 5));
                    for (int64_t c = 0; c < C; c++) x[c] = (C > 128 && c >= 64 && c < 128) ? 0.0f : frand() * 3.0f;
                    gn_quant4_state q;
                    GN_ASSERT(gn_quantize_4bit(w, GN_DTYPE_F32, n, 64, qt ? GN_QUANT_FP4 : GN_QUANT_NF4, dq > 0, &q) == GN_OK);
                    GN_ASSERT(gn_quant4_set_shape(&q, 2, (int64_t[]){R, C}) == GN_OK);
                    q.wdtype = GN_DTYPE_BF16;
                    float *nabs = NULL;
                    if (dq == 2) { // nested groups of 128 blocks (our scales; the state's own freed with it)
                        const int64_t nn = (q.nblocks + 127) / 128;
                        nabs = malloc(sizeof(float) * (size_t)nn);
                        for (int64_t k = 0; k < nn; k++) nabs[k] = 0.5f + 0.125f * (float)(k % 7);
                        q.nested_absmax = nabs;
                        q.nested_nblocks = nn;
                        q.nested_blocksize = 128;
                    }
                    gn_simd_force(GN_SIMD_AVX2);
                    gn_nf4_matmul(o2, x, &q, 1);
                    gn_simd_force(GN_SIMD_AVX512);
                    gn_nf4_matmul(o5, x, &q, 1);
                    CHECK(memcmp(o2, o5, sizeof(float) * (size_t)R) == 0,
                          "AVX-512 integer decode %lldx%lld dq %d %s: not the AVX2 kernel's bits (row 0: %.9g vs %.9g)",
                          (long long)R, (long long)C, dq, qt ? "fp4" : "nf4", o5[0], o2[0]);
                    gn_quant4_free(&q);
                    free(nabs); free(w); free(x); free(o2); free(o5);
                }
    gn_simd_force(GN_SIMD_AVX512);
}

int main(void) {
    test_tables();
    test_quantize_levels();
    test_packing();
    test_roundtrip();
    test_kernels_vs_ref();
    test_int_gemm();
    test_decode_b64();
    test_decode_b64_dq_scales();
    test_decode_b64_nested_sizes();
    test_decode_i16_avx512_bits();
    test_matmul_nn();
    test_multi_split();
    test_json();
    test_save_load();
    test_torch_mean();
    TEST_REPORT();
}
