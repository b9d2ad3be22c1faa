/*
 * test_cuda.c — the CUDA backend (src/cuda/cuda.h) against the CPU: every kernel
 * on random inputs of awkward sizes (odd lengths, rows that are not multiples of
 * 32 or 64, a single row, empty calls), then a small random LLaMA on both
 * devices (prefill, decode, batched decode, unmerged LoRA, one training
 * sequence's loss and LoRA gradients), and the trainer's AdamW on the GPU
 * against its host loop.
 *
 * References: nf4.h (dequantization bit for bit; gn_nf4_matmul_ref), kernels.h
 * (gn_rmsnorm, gn_silu_mul, gn_attn_causal_rows_ref), model/ops.h (the
 * training attention), and plain scalar loops here that restate train.c's
 * formulas (RMSNorm/SwiGLU backward, LoRA products, cross-entropy, dropout
 * mask, AdamW). Tolerances: exact where the kernel spells out the CPU's
 * roundings (dequantization, dropout, AdamW), float32 accumulation-order
 * error elsewhere, bf16 rounding of the activations where the tensor cores
 * take them (T > 8 products) and in the model-level comparisons.
 *
 * Built in every build; a build without CUDA prints "SKIP: built without
 * CUDA (make CUDA=1)", a CUDA build on a machine without a device
 * "SKIP: no CUDA device", and both exit 0.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "tiny_model.h" // tm_write_model

#ifndef GN_HAVE_CUDA
int main(void) {
    (void)th_passed;
    (void)th_failed;
    printf("SKIP: built without CUDA (make CUDA=1)\n");
    return 0;
}
#else

#include <sys/stat.h>

#include "cuda/cuda.h"
#include "cuda/cuda_priv.h"
#include "formats/tensors.h"
#include "model/llama.h"
#include "quant/nf4.h"
#include "tensor/kernels.h"
#include "model/ops.h"

// ----------------------------------------------------------------------------
// helpers

static uint64_t rng = 0x1234567ull;
static float frand(void) { // uniform [-1, 1)
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (float)((rng >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}
static float *rand_f32(size_t n, float s) {
    float *p = malloc(sizeof(float) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) p[i] = frand() * s;
    return p;
}
static float *to_dev(const float *h, size_t n) {
    float *d = gn_cuda_malloc(sizeof(float) * (n ? n : 1), "test");
    gn_cuda_upload(d, h, sizeof(float) * n);
    return d;
}
static float *from_dev(const float *d, size_t n) {
    float *h = malloc(sizeof(float) * (n ? n : 1));
    gn_cuda_download(h, d, sizeof(float) * n);
    return h;
}
static float round_bf16(float v) { return gn_bf16_to_f32(gn_f32_to_bf16(v)); }
static float round_dt(float v, gn_dtype dt) {
    if (dt == GN_DTYPE_BF16) return round_bf16(v);
    if (dt == GN_DTYPE_F16) return gn_f16_to_f32(gn_f32_to_f16(v));
    return v;
}

// max |a - b| / (tol_abs + tol_rel * scale[i]) over n values: <= 1 passes
static double worst(const float *got, const float *want, const double *scale, size_t n, double rel, double abs_) {
    double w = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - want[i]) / (abs_ + rel * (scale ? scale[i] : fabs((double)want[i])));
        if (!(e <= w)) w = e; // NaN propagates
    }
    return w;
}
static double maxabs(const float *x, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs(x[i]));
    return m;
}

// ----------------------------------------------------------------------------
// 4-bit dequantization: bit for bit

static gn_status make_q4(gn_quant4_state *q, int64_t rows, int64_t cols, int bs, int qt, int dq, gn_dtype wdt) {
    float *w = rand_f32((size_t)(rows * cols), 0.05f);
    for (int64_t i = 0; i < rows * cols && i < 3 * bs; i++) w[i] = i < bs ? 0.0f : w[i]; // an all-zero block
    gn_status st = gn_quantize_4bit(w, GN_DTYPE_F32, rows * cols, bs, qt, dq, q);
    free(w);
    if (st) return st;
    st = gn_quant4_set_shape(q, 2, (int64_t[]){rows, cols});
    q->wdtype = wdt;
    return st;
}

static void test_dequant(void) {
    struct { int64_t rows, cols; int bs, qt, dq; } cs[] = {
        {1, 1, 64, GN_QUANT_NF4, 1},  {3, 37, 64, GN_QUANT_NF4, 1},   {129, 97, 64, GN_QUANT_NF4, 0},
        {7, 301, 128, GN_QUANT_FP4, 1}, {300, 1001, 64, GN_QUANT_NF4, 1}, {5, 999, 32, GN_QUANT_NF4, 1},
        {2, 4096, 4096, GN_QUANT_NF4, 0},
        // blocks straddling rows with cols % 32 == 0 (the vectorized kernels' shapes)
        {9, 352, 128, GN_QUANT_NF4, 1}, {11, 160, 256, GN_QUANT_FP4, 0}, {5, 96, 128, GN_QUANT_NF4, 1},
    };
    for (size_t c = 0; c < sizeof cs / sizeof cs[0]; c++) {
        gn_quant4_state q;
        if (make_q4(&q, cs[c].rows, cs[c].cols, cs[c].bs, cs[c].qt, cs[c].dq, GN_DTYPE_BF16)) {
            CHECK(0, "quantize case %zu: %s", c, gn_last_error());
            continue;
        }
        gn_cuda_q4 d;
        CHECK(gn_cuda_q4_upload(&q, &d) == GN_OK, "upload: %s", gn_last_error());
        size_t n = (size_t)q.nelem;
        float *ref = malloc(4 * n), *got = malloc(4 * n);
        uint16_t *rb = malloc(2 * n), *gb = malloc(2 * n);
        void *dd = gn_cuda_malloc(4 * n, "test");
        gn_dequantize_4bit(&q, ref);
        gn_cuda_q4_dequant(&d, 0, (int64_t)n, dd, GN_DTYPE_F32);
        gn_cuda_download(got, dd, 4 * n);
        CHECK(!memcmp(ref, got, 4 * n), "dequant f32 case %zu (%lldx%lld bs %d %s dq %d): not bit-exact", c,
              (long long)cs[c].rows, (long long)cs[c].cols, cs[c].bs, cs[c].qt ? "fp4" : "nf4", cs[c].dq);
        gn_dtype half[2] = {GN_DTYPE_BF16, GN_DTYPE_F16};
        for (int h = 0; h < 2; h++) {
            gn_dequantize_4bit_to(&q, half[h], rb);
            gn_cuda_q4_dequant(&d, 0, (int64_t)n, dd, half[h]);
            gn_cuda_download(gb, dd, 2 * n);
            CHECK(!memcmp(rb, gb, 2 * n), "dequant %s case %zu: not bit-exact", h ? "f16" : "bf16", c);
        }
        if (n > 6) { // a range starting at an odd element (low nibble first)
            gn_cuda_q4_dequant(&d, 3, (int64_t)n - 5, dd, GN_DTYPE_F32);
            gn_cuda_download(got, dd, 4 * (n - 5));
            CHECK(!memcmp(ref + 3, got, 4 * (n - 5)), "dequant range [3, n-2) case %zu", c);
        }
        gn_cuda_q4_dequant(&d, 0, 0, dd, GN_DTYPE_F32); // empty: no launch
        gn_cuda_free(dd);
        free(ref); free(got); free(rb); free(gb);
        gn_cuda_q4_release(&d);
        gn_quant4_free(&q);
    }
    printf("ok dequant (f32/bf16/f16, bit-exact)\n");
}

// ----------------------------------------------------------------------------
// 4-bit products

// want (T, rows) = x W^T with W dequantized; scale = sum |w x|. round 1: weights rounded to
// wdtype (as the tiled path does; the GEMV uses the unrounded f32 values); round 2: the CPU
// library's compute-dtype product (nf4.h): weights, inputs and outputs rounded to wdtype
static void ref_q4(const gn_quant4_state *q, const float *x, int64_t T, float *want, double *scale, int round) {
    int64_t R = q->rows, Cc = q->cols;
    float *w = malloc(sizeof(float) * (size_t)(R * Cc > 0 ? R * Cc : 1));
    gn_dequantize_4bit(q, w);
    if (round)
        for (int64_t i = 0; i < R * Cc; i++) w[i] = round_dt(w[i], q->wdtype);
    for (int64_t t = 0; t < T; t++)
        for (int64_t r = 0; r < R; r++) {
            double s = 0, a = 0;
            for (int64_t c = 0; c < Cc; c++) {
                float xv = round == 2 ? round_dt(x[t * Cc + c], q->wdtype) : x[t * Cc + c];
                s += (double)w[r * Cc + c] * xv;
                a += fabs((double)w[r * Cc + c] * xv);
            }
            want[t * R + r] = round == 2 ? round_dt((float)s, q->wdtype) : (float)s;
            scale[t * R + r] = a;
        }
    free(w);
}

static void test_gemv(void) {
    struct { int64_t rows, cols; int bs, dq; gn_dtype wdt; } cs[] = {
        {67, 320, 64, 1, GN_DTYPE_BF16}, {5, 4096, 64, 1, GN_DTYPE_BF16}, {33, 128, 32, 0, GN_DTYPE_F32},
        {17, 256, 128, 1, GN_DTYPE_F16}, {45, 100, 64, 1, GN_DTYPE_BF16}, {1, 33, 32, 1, GN_DTYPE_BF16},
        {9, 96, 64, 0, GN_DTYPE_F32},    {3, 64, 256, 1, GN_DTYPE_BF16},
        // blocks straddling rows: 32-weight chunks of the vectorized path in a block that began
        // on an earlier row, rows shorter than a block
        {21, 352, 128, 1, GN_DTYPE_BF16}, {13, 160, 256, 0, GN_DTYPE_F32}, {7, 96, 256, 1, GN_DTYPE_BF16},
        {11, 200, 128, 1, GN_DTYPE_F32},
    };
    int Ts[] = {1, 2, 3, 5, 8};
    for (size_t c = 0; c < sizeof cs / sizeof cs[0]; c++) {
        gn_quant4_state q;
        if (make_q4(&q, cs[c].rows, cs[c].cols, cs[c].bs, GN_QUANT_NF4, cs[c].dq, cs[c].wdt)) { CHECK(0, "quantize"); continue; }
        gn_cuda_q4 d;
        gn_cuda_q4_upload(&q, &d);
        int64_t R = q.rows, Cc = q.cols;
        for (size_t ti = 0; ti < sizeof Ts / sizeof Ts[0]; ti++) {
            int T = Ts[ti];
            float *x = rand_f32((size_t)(T * Cc), 1.0f), *want = malloc(4 * (size_t)(T * R)), *lib = malloc(4 * (size_t)(T * R));
            double *scale = malloc(8 * (size_t)(T * R));
            ref_q4(&q, x, T, want, scale, 2);
            gn_nf4_matmul_ref(lib, x, &q, T); // the library's own reference agrees with ours (compute-dtype product)
            CHECK(worst(lib, want, scale, (size_t)(T * R), 1e-6, 1e-7) <= 1, "gn_nf4_matmul_ref disagrees (case %zu)", c);
            ref_q4(&q, x, T, want, scale, 0); // the GEMV's weights: f32 code * absmax
            float *dx = to_dev(x, (size_t)(T * Cc)), *o0 = rand_f32((size_t)(T * R), 1.0f);
            float *dout = to_dev(o0, (size_t)(T * R));
            gn_cuda_q4_gemv(dout, dx, GN_DTYPE_F32, &d, T, 0.0f);
            float *got = from_dev(dout, (size_t)(T * R));
            double e = worst(got, want, scale, (size_t)(T * R), 5e-6, 1e-6);
            CHECK(e <= 1, "gemv f32 x case %zu (%lldx%lld bs %d dq %d %s) T %d: error %.3g of tolerance", c, (long long)R,
                  (long long)Cc, cs[c].bs, cs[c].dq, gn_dtype_name(cs[c].wdt), T, e);
            // and within the compute dtype's roundings (weights, inputs, outputs) of the CPU's product
            e = worst(got, lib, scale, (size_t)(T * R), cs[c].wdt == GN_DTYPE_F32 ? 2e-6 : 4e-3, 1e-6);
            CHECK(e <= 1, "gemv vs gn_nf4_matmul_ref case %zu T %d: error %.3g of tolerance", c, T, e);
            free(got);
            // beta = 1 accumulates onto what out held
            gn_cuda_upload(dout, o0, 4 * (size_t)(T * R));
            gn_cuda_q4_gemv(dout, dx, GN_DTYPE_F32, &d, T, 1.0f);
            got = from_dev(dout, (size_t)(T * R));
            for (int64_t i = 0; i < T * R; i++) got[i] -= o0[i];
            CHECK(worst(got, want, scale, (size_t)(T * R), 8e-6, 2e-6) <= 1, "gemv beta=1 case %zu T %d", c, T);
            free(got);
            // bf16 activations: the reference with x rounded to bf16
            uint16_t *xb = malloc(2 * (size_t)(T * Cc));
            for (int64_t i = 0; i < T * Cc; i++) { xb[i] = gn_f32_to_bf16(x[i]); x[i] = gn_bf16_to_f32(xb[i]); }
            ref_q4(&q, x, T, want, scale, 0);
            void *dxb = gn_cuda_malloc(2 * (size_t)(T * Cc) + 2, "test");
            gn_cuda_upload(dxb, xb, 2 * (size_t)(T * Cc));
            gn_cuda_q4_gemv(dout, dxb, GN_DTYPE_BF16, &d, T, 0.0f);
            got = from_dev(dout, (size_t)(T * R));
            CHECK(worst(got, want, scale, (size_t)(T * R), 5e-6, 1e-6) <= 1, "gemv bf16 x case %zu T %d", c, T);
            free(got);
            gn_cuda_free(dxb); free(xb);
            gn_cuda_free(dx); gn_cuda_free(dout);
            free(x); free(want); free(lib); free(scale); free(o0);
        }
        gn_cuda_q4_gemv(NULL, NULL, GN_DTYPE_F32, &d, 0, 0.0f); // T = 0: nothing
        gn_cuda_q4_release(&d);
        gn_quant4_free(&q);
    }
    // several matrices with the same input in one launch
    for (int vec = 0; vec < 2; vec++) {
        int64_t Cc = vec ? 96 : 100, rows[3] = {40, 24, 7};
        gn_quant4_state q[3];
        gn_cuda_q4 d[3];
        const gn_cuda_q4 *dp[3];
        float *douts[3];
        for (int i = 0; i < 3; i++) {
            make_q4(&q[i], rows[i], Cc, 64, GN_QUANT_NF4, i != 1, GN_DTYPE_BF16);
            gn_cuda_q4_upload(&q[i], &d[i]);
            dp[i] = &d[i];
        }
        for (int T = 1; T <= 4; T += 3) {
            float *x = rand_f32((size_t)(T * Cc), 1.0f), *dx = to_dev(x, (size_t)(T * Cc));
            for (int i = 0; i < 3; i++) douts[i] = gn_cuda_malloc(4 * (size_t)(T * rows[i]), "test");
            for (int n = 2; n <= 3; n++) {
                gn_cuda_q4_gemv_multi(douts, dx, GN_DTYPE_F32, dp, n, T, 0.0f);
                for (int i = 0; i < n; i++) {
                    size_t m = (size_t)(T * rows[i]);
                    float *want = malloc(4 * m), *got = from_dev(douts[i], m);
                    double *scale = malloc(8 * m);
                    ref_q4(&q[i], x, T, want, scale, 0);
                    CHECK(worst(got, want, scale, m, 5e-6, 1e-6) <= 1, "gemv_multi n %d matrix %d cols %lld T %d", n, i,
                          (long long)Cc, T);
                    free(want); free(got); free(scale);
                }
            }
            for (int i = 0; i < 3; i++) gn_cuda_free(douts[i]);
            gn_cuda_free(dx);
            free(x);
        }
        for (int i = 0; i < 3; i++) { gn_cuda_q4_release(&d[i]); gn_quant4_free(&q[i]); }
    }
    printf("ok 4-bit gemv (vectorized and any-shape paths, f32/bf16 x, T 1..8, multi)\n");
}

static void test_q4_matmul(void) {
    struct { int64_t rows, cols; int bs, dq; gn_dtype wdt; int T; } cs[] = {
        {67, 320, 64, 1, GN_DTYPE_BF16, 9},  {45, 100, 64, 1, GN_DTYPE_BF16, 37}, {33, 128, 32, 0, GN_DTYPE_F32, 130},
        {17, 70, 64, 1, GN_DTYPE_F16, 12},   {1, 64, 64, 1, GN_DTYPE_BF16, 20},   {200, 96, 64, 1, GN_DTYPE_BF16, 3},
        {8200, 4096, 64, 1, GN_DTYPE_BF16, 9}, // more than one dequantized tile (32 Mi weights each)
        // blocks straddling rows, GEMV (T <= 8) and tiles (T > 8)
        {96, 200, 128, 1, GN_DTYPE_BF16, 5}, {200, 96, 256, 1, GN_DTYPE_BF16, 33}, {128, 352, 128, 0, GN_DTYPE_F32, 17},
    };
    for (size_t c = 0; c < sizeof cs / sizeof cs[0]; c++) {
        gn_quant4_state q;
        if (make_q4(&q, cs[c].rows, cs[c].cols, cs[c].bs, GN_QUANT_NF4, cs[c].dq, cs[c].wdt)) { CHECK(0, "quantize"); continue; }
        gn_cuda_q4 d;
        gn_cuda_q4_upload(&q, &d);
        int64_t R = q.rows, Cc = q.cols, T = cs[c].T;
        int bf = cs[c].wdt == GN_DTYPE_BF16 && T > GN_CUDA_GEMV_MAXT; // tensor cores: bf16 activations
        float *x = rand_f32((size_t)(T * Cc), 1.0f), *xr = malloc(4 * (size_t)(T * Cc));
        for (int64_t i = 0; i < T * Cc; i++) xr[i] = bf ? round_bf16(x[i]) : x[i];
        float *want = malloc(4 * (size_t)(T * R));
        double *scale = malloc(8 * (size_t)(T * R));
        ref_q4(&q, xr, T, want, scale, T > GN_CUDA_GEMV_MAXT); // tiles round the weights to wdtype, the GEMV does not
        float *dx = to_dev(x, (size_t)(T * Cc)), *dout = gn_cuda_malloc(4 * (size_t)(T * R), "test");
        gn_cuda_q4_matmul(dout, dx, &d, T, 0.0f);
        float *got = from_dev(dout, (size_t)(T * R));
        // tensor cores accumulate in f32 but not in IEEE order: 5e-5 of sum |w x| (bf16 itself is 4e-3)
        double e = worst(got, want, scale, (size_t)(T * R), 5e-5, 1e-6);
        CHECK(e <= 1, "q4_matmul case %zu (%lldx%lld %s T %lld): error %.3g of tolerance", c, (long long)R, (long long)Cc,
              gn_dtype_name(cs[c].wdt), (long long)T, e);
        free(got);
        // input gradient dx (T, cols) = dy (T, rows) W
        float *dy = rand_f32((size_t)(T * R), 1.0f), *dyr = malloc(4 * (size_t)(T * R));
        int bfn = cs[c].wdt == GN_DTYPE_BF16; // the nn product always uses the tile path
        for (int64_t i = 0; i < T * R; i++) dyr[i] = bfn ? round_bf16(dy[i]) : dy[i];
        float *w = malloc(4 * (size_t)(R * Cc)), *wantn = malloc(4 * (size_t)(T * Cc));
        double *scn = malloc(8 * (size_t)(T * Cc));
        gn_dequantize_4bit(&q, w);
        for (int64_t i = 0; i < R * Cc; i++) w[i] = round_dt(w[i], q.wdtype);
        if (R * Cc < 50000000 / (T > 0 ? T : 1)) {
            for (int64_t t = 0; t < T; t++)
                for (int64_t cc = 0; cc < Cc; cc++) {
                    double s = 0, a = 0;
                    for (int64_t r = 0; r < R; r++) {
                        s += (double)dyr[t * R + r] * w[r * Cc + cc];
                        a += fabs((double)dyr[t * R + r] * w[r * Cc + cc]);
                    }
                    wantn[t * Cc + cc] = (float)s;
                    scn[t * Cc + cc] = a;
                }
            float *ddy = to_dev(dy, (size_t)(T * R)), *ddx = gn_cuda_malloc(4 * (size_t)(T * Cc), "test");
            gn_cuda_q4_matmul_nn(ddx, ddy, &d, T, 0.0f);
            got = from_dev(ddx, (size_t)(T * Cc));
            e = worst(got, wantn, scn, (size_t)(T * Cc), 5e-5, 1e-6);
            CHECK(e <= 1, "q4_matmul_nn case %zu T %lld: error %.3g of tolerance", c, (long long)T, e);
            free(got);
            gn_cuda_free(ddy); gn_cuda_free(ddx);
        }
        free(w); free(wantn); free(scn); free(dy); free(dyr);
        gn_cuda_free(dx); gn_cuda_free(dout);
        free(x); free(xr); free(want); free(scale);
        gn_cuda_q4_release(&d);
        gn_quant4_free(&q);
    }
    printf("ok 4-bit matmul (tiles + cuBLAS, bf16 tensor cores / f32) and input gradient\n");
}

// ----------------------------------------------------------------------------
// dense matrices and the SGEMM wrapper

static void test_dense(void) {
    struct { int64_t rows, cols; gn_dtype dt; } cs[] = {
        {50, 70, GN_DTYPE_F32}, {33, 72, GN_DTYPE_BF16}, {33, 70, GN_DTYPE_BF16}, {1, 8, GN_DTYPE_BF16}};
    int Ts[] = {1, 5, 8, 9, 40};
    for (size_t c = 0; c < sizeof cs / sizeof cs[0]; c++) {
        int64_t R = cs[c].rows, Cc = cs[c].cols;
        int bf = cs[c].dt == GN_DTYPE_BF16;
        float *w = rand_f32((size_t)(R * Cc), 0.3f);
        uint16_t *wb = malloc(2 * (size_t)(R * Cc));
        for (int64_t i = 0; i < R * Cc; i++) { wb[i] = gn_f32_to_bf16(w[i]); if (bf) w[i] = gn_bf16_to_f32(wb[i]); }
        void *dw = gn_cuda_malloc((size_t)(R * Cc) * (bf ? 2 : 4), "test");
        gn_cuda_upload(dw, bf ? (const void *)wb : (const void *)w, (size_t)(R * Cc) * (bf ? 2 : 4));
        gn_cuda_mat m = {cs[c].dt, R, Cc, dw};
        for (size_t ti = 0; ti < sizeof Ts / sizeof Ts[0]; ti++) {
            int64_t T = Ts[ti];
            int xr = bf && T > GN_CUDA_GEMV_MAXT;
            float *x = rand_f32((size_t)(T * Cc), 1.0f), *want = malloc(4 * (size_t)(T * R));
            double *sc = malloc(8 * (size_t)(T * R));
            for (int64_t t = 0; t < T; t++)
                for (int64_t r = 0; r < R; r++) {
                    double s = 0, a = 0;
                    for (int64_t k = 0; k < Cc; k++) {
                        double xv = xr ? round_bf16(x[t * Cc + k]) : x[t * Cc + k];
                        s += w[r * Cc + k] * xv;
                        a += fabs(w[r * Cc + k] * xv);
                    }
                    want[t * R + r] = (float)s;
                    sc[t * R + r] = a;
                }
            float *dx = to_dev(x, (size_t)(T * Cc)), *dout = gn_cuda_malloc(4 * (size_t)(T * R), "test");
            gn_cuda_mat_matmul(dout, dx, &m, T, 0.0f);
            float *got = from_dev(dout, (size_t)(T * R));
            CHECK(worst(got, want, sc, (size_t)(T * R), 5e-5, 1e-6) <= 1, "mat_matmul %s %lldx%lld T %lld",
                  gn_dtype_name(cs[c].dt), (long long)R, (long long)Cc, (long long)T);
            free(got);
            // dx = dy W
            float *dy = rand_f32((size_t)(T * R), 1.0f), *wn = malloc(4 * (size_t)(T * Cc));
            double *scn = malloc(8 * (size_t)(T * Cc));
            for (int64_t t = 0; t < T; t++)
                for (int64_t k = 0; k < Cc; k++) {
                    double s = 0, a = 0;
                    for (int64_t r = 0; r < R; r++) {
                        double yv = bf ? round_bf16(dy[t * R + r]) : dy[t * R + r];
                        s += yv * w[r * Cc + k];
                        a += fabs(yv * w[r * Cc + k]);
                    }
                    wn[t * Cc + k] = (float)s;
                    scn[t * Cc + k] = a;
                }
            float *ddy = to_dev(dy, (size_t)(T * R)), *ddx = gn_cuda_malloc(4 * (size_t)(T * Cc), "test");
            gn_cuda_mat_matmul_nn(ddx, ddy, &m, T, 0.0f);
            got = from_dev(ddx, (size_t)(T * Cc));
            CHECK(worst(got, wn, scn, (size_t)(T * Cc), 5e-5, 1e-6) <= 1, "mat_matmul_nn %s T %lld",
                  gn_dtype_name(cs[c].dt), (long long)T);
            free(got);
            gn_cuda_free(ddy); gn_cuda_free(ddx); gn_cuda_free(dx); gn_cuda_free(dout);
            free(x); free(want); free(sc); free(dy); free(wn); free(scn);
        }
        gn_cuda_free(dw);
        free(w); free(wb);
    }
    // gn_cuda_sgemm: all four transpositions, leading dimensions wider than the matrices
    const int M = 7, N = 5, K = 9, lda = 13, ldb = 11, ldc = 8;
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            int ar = ta ? K : M, br = tb ? N : K;
            float *A = rand_f32((size_t)(ar * lda), 1.0f), *B = rand_f32((size_t)(br * ldb), 1.0f);
            float *C0 = rand_f32((size_t)(M * ldc), 1.0f), *want = malloc(4 * (size_t)(M * ldc));
            memcpy(want, C0, 4 * (size_t)(M * ldc));
            for (int i = 0; i < M; i++)
                for (int j = 0; j < N; j++) {
                    double s = 0;
                    for (int k = 0; k < K; k++) s += (double)(ta ? A[k * lda + i] : A[i * lda + k]) * (tb ? B[j * ldb + k] : B[k * ldb + j]);
                    want[i * ldc + j] = (float)(0.5 * s + 1.0 * C0[i * ldc + j]);
                }
            float *dA = to_dev(A, (size_t)(ar * lda)), *dB = to_dev(B, (size_t)(br * ldb)), *dC = to_dev(C0, (size_t)(M * ldc));
            gn_cuda_sgemm(ta, tb, M, N, K, 0.5f, dA, lda, dB, ldb, 1.0f, dC, ldc);
            float *got = from_dev(dC, (size_t)(M * ldc));
            CHECK(worst(got, want, NULL, (size_t)(M * ldc), 1e-5, 1e-5) <= 1, "sgemm ta %d tb %d", ta, tb);
            free(got); free(A); free(B); free(C0); free(want);
            gn_cuda_free(dA); gn_cuda_free(dB); gn_cuda_free(dC);
        }
    printf("ok dense f32/bf16 products, sgemm\n");
}

// ----------------------------------------------------------------------------
// row and elementwise kernels

static void test_rows(void) {
    // RMSNorm and its backward (train.c's formula)
    int Cs[] = {1, 77, 4096};
    for (int ci = 0; ci < 3; ci++) {
        int T = 3, C = Cs[ci];
        float *x = rand_f32((size_t)T * C, 2.0f), *w = rand_f32((size_t)C, 1.0f), *want = malloc(4 * (size_t)T * C);
        gn_rmsnorm(want, x, w, T, C, 1e-5f);
        float *dx = to_dev(x, (size_t)T * C), *dw = to_dev(w, (size_t)C), *dout = gn_cuda_malloc(4 * (size_t)T * C, "t");
        gn_cuda_rmsnorm(dout, dx, dw, T, C, 1e-5f);
        float *got = from_dev(dout, (size_t)T * C);
        CHECK(worst(got, want, NULL, (size_t)T * C, 1e-6, 1e-7) <= 1, "rmsnorm C %d", C);
        free(got);
        // backward: the gradient alone (accumulate 0), then added onto it (accumulate 1)
        float *dy = rand_f32((size_t)T * C, 1.0f), *wz = malloc(4 * (size_t)T * C);
        for (int t = 0; t < T; t++) {
            const float *xr = x + (size_t)t * C, *dr = dy + (size_t)t * C;
            double ss = 0, dot = 0;
            for (int i = 0; i < C; i++) { ss += (double)xr[i] * xr[i]; dot += (double)w[i] * dr[i] * xr[i]; }
            double rstd = 1.0 / sqrt(ss / C + 1e-5), coef = dot / C * rstd * rstd * rstd;
            for (int i = 0; i < C; i++) wz[(size_t)t * C + i] = (float)(rstd * w[i] * dr[i] - xr[i] * coef);
        }
        float *ddy = to_dev(dy, (size_t)T * C);
        gn_cuda_rmsnorm_bwd(dout, ddy, dx, dw, T, C, 1e-5f, 0);
        got = from_dev(dout, (size_t)T * C);
        double sc = maxabs(wz, (size_t)T * C);
        CHECK(worst(got, wz, NULL, (size_t)T * C, 0, 2e-5 * sc + 1e-6) <= 1, "rmsnorm_bwd C %d", C);
        free(got);
        gn_cuda_rmsnorm_bwd(dout, ddy, dx, dw, T, C, 1e-5f, 1);
        got = from_dev(dout, (size_t)T * C);
        for (size_t i = 0; i < (size_t)T * C; i++) wz[i] *= 2;
        CHECK(worst(got, wz, NULL, (size_t)T * C, 0, 4e-5 * sc + 1e-6) <= 1, "rmsnorm_bwd accumulate C %d", C);
        free(got); free(wz);
        gn_cuda_free(ddy); gn_cuda_free(dx); gn_cuda_free(dw); gn_cuda_free(dout);
        free(x); free(w); free(want); free(dy);
    }
    // RoPE: both layouts, partial rotation, a far position; then the inverse
    for (int il = 0; il < 2; il++)
        for (int nr = 8; nr <= 16; nr += 8) {
            int T = 5, H = 3, hs = 16, half = nr / 2, pos0 = 1000;
            int64_t stride = H * hs + 4; // rows with padding
            float *inv = malloc(4 * (size_t)half);
            for (int i = 0; i < half; i++) inv[i] = 1.0f / powf(10000.0f, (float)(2 * i) / (float)nr);
            float *x = rand_f32((size_t)(T * stride), 1.0f), *want = malloc(4 * (size_t)(T * stride));
            memcpy(want, x, 4 * (size_t)(T * stride));
            for (int t = 0; t < T; t++)
                for (int h = 0; h < H; h++) {
                    float *v = want + t * stride + h * hs;
                    for (int i = 0; i < half; i++) {
                        float ang = (float)(pos0 + t) * inv[i], cs = cosf(ang), sn = sinf(ang);
                        int ia = il ? 2 * i : i, ib = il ? 2 * i + 1 : i + half;
                        float a = v[ia], b = v[ib];
                        v[ia] = a * cs - b * sn;
                        v[ib] = a * sn + b * cs;
                    }
                }
            float *dx = to_dev(x, (size_t)(T * stride)), *dinv = to_dev(inv, (size_t)half);
            gn_cuda_rope(dx, T, H, hs, stride, nr, il, dinv, pos0, 1.0f);
            float *got = from_dev(dx, (size_t)(T * stride));
            CHECK(worst(got, want, NULL, (size_t)(T * stride), 0, 2e-5) <= 1, "rope interleaved %d n_rot %d", il, nr);
            free(got);
            gn_cuda_rope(dx, T, H, hs, stride, nr, il, dinv, pos0, -1.0f);
            got = from_dev(dx, (size_t)(T * stride));
            CHECK(worst(got, x, NULL, (size_t)(T * stride), 0, 2e-5) <= 1, "rope inverse interleaved %d n_rot %d", il, nr);
            free(got); free(x); free(want); free(inv);
            gn_cuda_free(dx); gn_cuda_free(dinv);
        }
    // SwiGLU and its backward
    {
        size_t n = 10007;
        float *g = rand_f32(n, 6.0f), *u = rand_f32(n, 2.0f), *dh = rand_f32(n, 1.0f), *want = malloc(4 * n);
        memcpy(want, g, 4 * n);
        gn_silu_mul(want, u, (int64_t)n);
        float *dg = to_dev(g, n), *du = to_dev(u, n), *dd = to_dev(dh, n), *dout = gn_cuda_malloc(4 * n, "t");
        gn_cuda_silu_mul(dout, dg, du, (int64_t)n);
        float *got = from_dev(dout, n);
        CHECK(worst(got, want, NULL, n, 1e-6, 1e-7) <= 1, "silu_mul");
        free(got);
        float *wg = malloc(4 * n), *wu = malloc(4 * n);
        for (size_t i = 0; i < n; i++) {
            double s = 1.0 / (1.0 + exp(-(double)g[i]));
            wu[i] = (float)(dh[i] * g[i] * s);
            wg[i] = (float)(dh[i] * u[i] * s * (1.0 + g[i] * (1.0 - s)));
        }
        float *ddg = gn_cuda_malloc(4 * n, "t");
        gn_cuda_swiglu_bwd(ddg, dout, dd, dg, du, (int64_t)n);
        float *gg = from_dev(ddg, n), *gu = from_dev(dout, n);
        CHECK(worst(gg, wg, NULL, n, 1e-5, 1e-6) <= 1 && worst(gu, wu, NULL, n, 1e-5, 1e-6) <= 1, "swiglu_bwd");
        free(gg); free(gu); free(wg); free(wu);
        // residual add
        gn_cuda_upload(dout, u, 4 * n);
        gn_cuda_add(dout, dg, (int64_t)n);
        got = from_dev(dout, n);
        for (size_t i = 0; i < n; i++) want[i] = u[i] + g[i];
        CHECK(!memcmp(got, want, 4 * n), "add");
        free(got);
        // sum of squares
        double ss = 0;
        for (size_t i = 0; i < n; i++) ss += (double)g[i] * g[i];
        double gs = gn_cuda_sumsq(dg, (int64_t)n);
        CHECK(fabs(gs - ss) <= 1e-9 * ss, "sumsq %.17g vs %.17g", gs, ss);
        CHECK(gn_cuda_sumsq(dg, 0) == 0.0, "sumsq of nothing");
        gn_cuda_free(dg); gn_cuda_free(du); gn_cuda_free(dd); gn_cuda_free(dout); gn_cuda_free(ddg);
        free(g); free(u); free(dh); free(want);
    }
    // embedding rows, f32 and bf16 tables
    {
        int V = 50, C = 33, T = 6;
        int32_t ids[6] = {0, 49, 7, 7, 20, 1};
        float *tab = rand_f32((size_t)V * C, 1.0f);
        uint16_t *tb = malloc(2 * (size_t)V * C);
        for (int i = 0; i < V * C; i++) tb[i] = gn_f32_to_bf16(tab[i]);
        float *dt = to_dev(tab, (size_t)V * C), *dout = gn_cuda_malloc(4 * (size_t)T * C, "t");
        void *dtb = gn_cuda_malloc(2 * (size_t)V * C, "t");
        int32_t *did = gn_cuda_malloc(sizeof ids, "t");
        gn_cuda_upload(dtb, tb, 2 * (size_t)V * C);
        gn_cuda_upload(did, ids, sizeof ids);
        for (int b = 0; b < 2; b++) {
            gn_cuda_embed(dout, b ? dtb : (void *)dt, b ? GN_DTYPE_BF16 : GN_DTYPE_F32, C, did, T);
            float *got = from_dev(dout, (size_t)T * C);
            int ok = 1;
            for (int t = 0; t < T; t++)
                for (int i = 0; i < C; i++) {
                    float w = b ? gn_bf16_to_f32(tb[ids[t] * C + i]) : tab[ids[t] * C + i];
                    ok &= got[t * C + i] == w;
                }
            CHECK(ok, "embed %s", b ? "bf16" : "f32");
            free(got);
        }
        gn_cuda_free(dt); gn_cuda_free(dout); gn_cuda_free(dtb); gn_cuda_free(did);
        free(tab); free(tb);
    }
    printf("ok rmsnorm (+bwd), rope, swiglu (+bwd), add, sumsq, embed\n");
}

// ----------------------------------------------------------------------------
// attention

static void test_attention(void) {
    struct { int NH, NKV, hs, T, pos0; } cs[] = {
        {4, 4, 64, 1, 0},  {6, 2, 64, 1, 700}, {8, 2, 128, 1, 1500}, {4, 1, 80, 1, 33},  {6, 2, 64, 37, 0},
        {6, 3, 48, 19, 300}, {4, 2, 128, 70, 5}, {2, 1, 256, 9, 20},  {3, 3, 200, 5, 0},  {2, 2, 16, 1, 255},
    };
    for (size_t c = 0; c < sizeof cs / sizeof cs[0]; c++) {
        int NH = cs[c].NH, NKV = cs[c].NKV, hs = cs[c].hs, T = cs[c].T, pos0 = cs[c].pos0;
        int qd = NH * hs, kvd = NKV * hs, n = pos0 + T, grp = NH / NKV;
        float scale = 1.0f / sqrtf((float)hs);
        float *q = rand_f32((size_t)T * qd, 1.5f), *k = rand_f32((size_t)n * kvd, 1.5f), *v = rand_f32((size_t)n * kvd, 1.0f);
        float *want = malloc(4 * (size_t)T * qd);
        for (int h = 0; h < NH; h++)
            gn_attn_causal_rows_ref(want + h * hs, qd, q + h * hs, qd, k + (h / grp) * hs, v + (h / grp) * hs, kvd, T, pos0,
                                    hs, scale);
        float *dq = to_dev(q, (size_t)T * qd), *dk = to_dev(k, (size_t)n * kvd), *dv = to_dev(v, (size_t)n * kvd);
        float *dout = gn_cuda_malloc(4 * (size_t)T * qd, "t");
        for (int kind = 0; kind < 2; kind++) {
            if (kind == 0) gn_cuda_attention_decode(dout, dq, dk, dv, T, pos0, NH, NKV, hs);
            else gn_cuda_attention_prefill(dout, dq, dk, dv, T, pos0, NH, NKV, hs);
            float *got = from_dev(dout, (size_t)T * qd);
            double e = worst(got, want, NULL, (size_t)T * qd, 1e-5, 2e-6);
            CHECK(e <= 1, "attention %s NH %d NKV %d hs %d T %d pos0 %d: error %.3g of tolerance",
                  kind ? "prefill" : "decode", NH, NKV, hs, T, pos0, e);
            free(got);
        }
        gn_cuda_free(dq); gn_cuda_free(dk); gn_cuda_free(dv); gn_cuda_free(dout);
        free(q); free(k); free(v); free(want);
    }
    // training attention with kept probabilities, and its backward
    struct { int T, NH, NKV, hs; } ts[] = {{1, 2, 1, 16}, {33, 4, 2, 40}, {70, 6, 3, 32}};
    for (size_t c = 0; c < sizeof ts / sizeof ts[0]; c++) {
        int T = ts[c].T, NH = ts[c].NH, NKV = ts[c].NKV, hs = ts[c].hs, qd = NH * hs, kvd = NKV * hs;
        size_t TT = (size_t)T * T;
        float *q = rand_f32((size_t)T * qd, 1.0f), *k = rand_f32((size_t)T * kvd, 1.0f), *v = rand_f32((size_t)T * kvd, 1.0f);
        float *dO = rand_f32((size_t)T * qd, 1.0f);
        float *o = malloc(4 * (size_t)T * qd), *P = malloc(4 * NH * TT);
        float *gq = malloc(4 * (size_t)T * qd), *gk = malloc(4 * (size_t)T * kvd), *gv = malloc(4 * (size_t)T * kvd);
        gn_op_attention_fwd_ref(o, P, q, k, v, T, NH, NKV, hs, 0);
        gn_op_attention_bwd_ref(gq, gk, gv, P, q, k, v, o, dO, T, NH, NKV, hs, 0);
        float *d_q = to_dev(q, (size_t)T * qd), *d_k = to_dev(k, (size_t)T * kvd), *d_v = to_dev(v, (size_t)T * kvd);
        float *d_dO = to_dev(dO, (size_t)T * qd), *d_o = gn_cuda_malloc(4 * (size_t)T * qd, "t");
        float *d_P = gn_cuda_malloc(4 * NH * TT, "t"), *d_s = gn_cuda_malloc(4 * gn_cuda_train_attn_scratch(T), "t");
        float *d_gq = gn_cuda_malloc(4 * (size_t)T * qd, "t"), *d_gk = gn_cuda_malloc(4 * (size_t)T * kvd, "t");
        float *d_gv = gn_cuda_malloc(4 * (size_t)T * kvd, "t");
        gn_cuda_train_attn_fwd(d_o, d_P, d_q, d_k, d_v, T, NH, NKV, hs);
        float *go = from_dev(d_o, (size_t)T * qd), *gP = from_dev(d_P, NH * TT);
        CHECK(worst(go, o, NULL, (size_t)T * qd, 1e-5, 2e-6) <= 1, "train attention fwd T %d", T);
        int pok = 1;
        for (int h = 0; h < NH; h++)
            for (int i = 0; i < T; i++)
                for (int j = 0; j < T; j++) {
                    float g = gP[(size_t)h * TT + (size_t)i * T + j];
                    pok &= j <= i ? fabsf(g - P[(size_t)h * TT + (size_t)i * T + j]) <= 1e-5f : g == 0.0f;
                }
        CHECK(pok, "train attention probabilities T %d", T);
        gn_cuda_train_attn_bwd(d_gq, d_gk, d_gv, d_P, d_q, d_k, d_v, d_dO, T, NH, NKV, hs, d_s);
        float *rq = from_dev(d_gq, (size_t)T * qd), *rk = from_dev(d_gk, (size_t)T * kvd), *rv = from_dev(d_gv, (size_t)T * kvd);
        double sq = maxabs(gq, (size_t)T * qd), sk = maxabs(gk, (size_t)T * kvd), sv = maxabs(gv, (size_t)T * kvd);
        CHECK(worst(rq, gq, NULL, (size_t)T * qd, 0, 1e-5 * sq + 1e-7) <= 1, "train attention dq T %d", T);
        CHECK(worst(rk, gk, NULL, (size_t)T * kvd, 0, 1e-5 * sk + 1e-7) <= 1, "train attention dk T %d", T);
        CHECK(worst(rv, gv, NULL, (size_t)T * kvd, 0, 1e-5 * sv + 1e-7) <= 1, "train attention dv T %d", T);
        free(go); free(gP); free(rq); free(rk); free(rv);
        gn_cuda_free(d_q); gn_cuda_free(d_k); gn_cuda_free(d_v); gn_cuda_free(d_dO); gn_cuda_free(d_o);
        gn_cuda_free(d_P); gn_cuda_free(d_s); gn_cuda_free(d_gq); gn_cuda_free(d_gk); gn_cuda_free(d_gv);
        free(q); free(k); free(v); free(dO); free(o); free(P); free(gq); free(gk); free(gv);
    }
    printf("ok attention (decode, prefill, GQA, hs 16..256; training fwd/bwd)\n");
}

// ----------------------------------------------------------------------------
// loss, LoRA, dropout, AdamW

static uint64_t mix64(uint64_t z) { // train.c's
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

// gn_trainer_step's update, verbatim; every operation rounded on its own (no FMA
// contraction, whatever -march the build uses), as the kernel spells it out
#if defined(__clang__)
#define NO_CONTRACT
#else
#define NO_CONTRACT __attribute__((optimize("fp-contract=off")))
#endif
NO_CONTRACT
static void adamw_ref(float *p, const float *g, float *m, float *v, size_t n, float lr, float b1, float b2, float eps,
                      float wd, int64_t step, float clip, int bf) {
#if defined(__clang__)
#pragma clang fp contract(off)
#endif
    float c1 = 1.0f - powf(b1, (float)step), c2 = sqrtf(1.0f - powf(b2, (float)step));
    float step_size = lr / c1;
    for (size_t i = 0; i < n; i++) {
        float gi = g[i] * clip;
        float mm = m[i] = b1 * m[i] + (1.0f - b1) * gi;
        float vv = v[i] = b2 * v[i] + (1.0f - b2) * gi * gi;
        float pi = p[i];
        if (wd > 0) pi *= 1.0f - lr * wd;
        pi -= step_size * mm / (sqrtf(vv) / c2 + eps);
        p[i] = bf ? round_bf16(pi) : pi;
    }
}

static void test_train_kernels(void) {
    // cross-entropy: rows without a label give no loss and no gradient; dlogits may alias logits
    int Vs[] = {7, 1000};
    for (int vi = 0; vi < 2; vi++) {
        int n = 5, V = Vs[vi];
        int32_t y[5] = {0, V - 1, -1, 3 % V, 2};
        float weight = 0.25f;
        float *lg = rand_f32((size_t)n * V, 8.0f), *wl = malloc(4 * (size_t)n), *wd = malloc(4 * (size_t)n * V);
        for (int i = 0; i < n; i++) {
            const float *r = lg + (size_t)i * V;
            double mx = r[0], se = 0;
            for (int j = 1; j < V; j++) mx = fmax(mx, r[j]);
            for (int j = 0; j < V; j++) se += exp(r[j] - mx);
            wl[i] = y[i] < 0 ? 0.0f : (float)(log(se) + mx - r[y[i]]);
            for (int j = 0; j < V; j++)
                wd[(size_t)i * V + j] = y[i] < 0 ? 0.0f : (float)(weight * (exp(r[j] - mx) / se - (j == y[i])));
        }
        float *dl = to_dev(lg, (size_t)n * V), *dloss = gn_cuda_malloc(4 * (size_t)n, "t");
        int32_t *dy = gn_cuda_malloc(sizeof y, "t");
        gn_cuda_upload(dy, y, sizeof y);
        gn_cuda_cross_entropy(dloss, NULL, dl, dy, n, V, weight);
        float *gl = from_dev(dloss, (size_t)n);
        CHECK(worst(gl, wl, NULL, (size_t)n, 1e-5, 1e-6) <= 1, "cross-entropy loss V %d", V);
        gn_cuda_cross_entropy(dloss, dl, dl, dy, n, V, weight); // in place
        float *gd = from_dev(dl, (size_t)n * V);
        CHECK(worst(gd, wd, NULL, (size_t)n * V, 1e-5, 1e-7) <= 1, "cross-entropy gradient V %d", V);
        free(gl); free(gd); free(lg); free(wl); free(wd);
        gn_cuda_free(dl); gn_cuda_free(dloss); gn_cuda_free(dy);
    }
    // LoRA forward and backward (train.c's lin_fwd / lin_bwd products)
    {
        int T = 7, IC = 50, OC = 33, r = 5;
        float s = 1.7f;
        float *x = rand_f32((size_t)T * IC, 1.0f), *A = rand_f32((size_t)r * IC, 0.3f), *B = rand_f32((size_t)OC * r, 0.3f);
        float *y0 = rand_f32((size_t)T * OC, 1.0f), *dy = rand_f32((size_t)T * OC, 1.0f);
        float *gA0 = rand_f32((size_t)r * IC, 1.0f), *gB0 = rand_f32((size_t)OC * r, 1.0f), *dx0 = rand_f32((size_t)T * IC, 1.0f);
        double *ul = calloc((size_t)T * r, 8), *z = calloc((size_t)T * r, 8);
        float *wy = malloc(4 * (size_t)T * OC), *wA = malloc(4 * (size_t)r * IC), *wB = malloc(4 * (size_t)OC * r);
        float *wx = malloc(4 * (size_t)T * IC), *wul = malloc(4 * (size_t)T * r);
        for (int t = 0; t < T; t++)
            for (int j = 0; j < r; j++) {
                for (int i = 0; i < IC; i++) ul[t * r + j] += (double)x[t * IC + i] * A[j * IC + i];
                wul[t * r + j] = (float)ul[t * r + j];
                for (int o = 0; o < OC; o++) z[t * r + j] += (double)dy[t * OC + o] * B[o * r + j];
            }
        for (int t = 0; t < T; t++)
            for (int o = 0; o < OC; o++) {
                double a = 0;
                for (int j = 0; j < r; j++) a += ul[t * r + j] * B[o * r + j];
                wy[t * OC + o] = (float)(y0[t * OC + o] + s * a);
            }
        for (int o = 0; o < OC; o++)
            for (int j = 0; j < r; j++) {
                double a = 0;
                for (int t = 0; t < T; t++) a += (double)dy[t * OC + o] * ul[t * r + j];
                wB[o * r + j] = (float)(gB0[o * r + j] + s * a);
            }
        for (int j = 0; j < r; j++)
            for (int i = 0; i < IC; i++) {
                double a = 0;
                for (int t = 0; t < T; t++) a += z[t * r + j] * x[t * IC + i];
                wA[j * IC + i] = (float)(gA0[j * IC + i] + s * a);
            }
        for (int t = 0; t < T; t++)
            for (int i = 0; i < IC; i++) {
                double a = 0;
                for (int j = 0; j < r; j++) a += z[t * r + j] * A[j * IC + i];
                wx[t * IC + i] = (float)(dx0[t * IC + i] + s * a);
            }
        float *d_x = to_dev(x, (size_t)T * IC), *d_A = to_dev(A, (size_t)r * IC), *d_B = to_dev(B, (size_t)OC * r);
        float *d_y = to_dev(y0, (size_t)T * OC), *d_ul = gn_cuda_malloc(4 * (size_t)T * r, "t");
        float *d_dy = to_dev(dy, (size_t)T * OC), *d_gA = to_dev(gA0, (size_t)r * IC), *d_gB = to_dev(gB0, (size_t)OC * r);
        float *d_dx = to_dev(dx0, (size_t)T * IC), *d_z = gn_cuda_malloc(4 * (size_t)T * r, "t");
        gn_cuda_lora_fwd(d_y, d_ul, d_x, d_A, d_B, T, IC, OC, r, s);
        gn_cuda_lora_bwd(d_gA, d_gB, d_dx, d_z, d_dy, d_x, d_ul, d_A, d_B, T, IC, OC, r, s);
        float *gy = from_dev(d_y, (size_t)T * OC), *gul = from_dev(d_ul, (size_t)T * r), *gA = from_dev(d_gA, (size_t)r * IC);
        float *gB = from_dev(d_gB, (size_t)OC * r), *gx = from_dev(d_dx, (size_t)T * IC);
        CHECK(worst(gul, wul, NULL, (size_t)T * r, 1e-5, 1e-5) <= 1, "lora hidden");
        CHECK(worst(gy, wy, NULL, (size_t)T * OC, 1e-5, 1e-5) <= 1, "lora forward");
        CHECK(worst(gA, wA, NULL, (size_t)r * IC, 1e-5, 1e-5) <= 1, "lora dA");
        CHECK(worst(gB, wB, NULL, (size_t)OC * r, 1e-5, 1e-5) <= 1, "lora dB");
        CHECK(worst(gx, wx, NULL, (size_t)T * IC, 1e-5, 1e-5) <= 1, "lora dx");
        gn_cuda_lora_fwd(NULL, d_ul, d_x, d_A, d_B, 0, IC, OC, r, s); // T = 0: nothing
        free(gy); free(gul); free(gA); free(gB); free(gx);
        gn_cuda_free(d_x); gn_cuda_free(d_A); gn_cuda_free(d_B); gn_cuda_free(d_y); gn_cuda_free(d_ul);
        gn_cuda_free(d_dy); gn_cuda_free(d_gA); gn_cuda_free(d_gB); gn_cuda_free(d_dx); gn_cuda_free(d_z);
        free(x); free(A); free(B); free(y0); free(dy); free(gA0); free(gB0); free(dx0); free(ul); free(z);
        free(wy); free(wA); free(wB); free(wx); free(wul);
    }
    // dropout mask: train.c's keep_scale stream, exactly
    {
        size_t n = 10007;
        float p = 0.3f;
        uint64_t key = 0x0123456789abcdefull, base = key ^ (3ull << 40) ^ (5ull << 56);
        float *x = rand_f32(n, 1.0f), *want = malloc(4 * n), *acc0 = rand_f32(n, 1.0f);
        for (size_t i = 0; i < n; i++) {
            float u = (float)(mix64(base ^ (uint64_t)i) >> 40) / 16777216.0f;
            want[i] = x[i] * (u < p ? 0.0f : 1.0f / (1.0f - p));
        }
        float *dx = to_dev(x, n), *dd = gn_cuda_malloc(4 * n, "t");
        gn_cuda_dropout(dd, dx, (int64_t)n, base, p, 0);
        float *got = from_dev(dd, n);
        CHECK(!memcmp(got, want, 4 * n), "dropout mask (bit-exact)");
        free(got);
        gn_cuda_upload(dd, acc0, 4 * n);
        gn_cuda_dropout(dd, dx, (int64_t)n, base, p, 1);
        got = from_dev(dd, n);
        int ok = 1;
        for (size_t i = 0; i < n; i++) ok &= got[i] == acc0[i] + want[i];
        CHECK(ok, "dropout accumulate");
        free(got); free(x); free(want); free(acc0);
        gn_cuda_free(dx); gn_cuda_free(dd);
    }
    // AdamW with the state in host memory, several chunks, two steps; pageable and pinned state
    for (int pinned = 0; pinned < 2; pinned++)
        for (int bf = 0; bf < 2; bf++) {
            size_t n = 10007;
            float lr = 2e-3f, b1 = 0.9f, b2 = 0.999f, eps = 1e-8f, wd = 0.01f;
            float *p = rand_f32(n, 1.0f), *g = rand_f32(n, 0.1f), *m = calloc(n, 4), *v = calloc(n, 4);
            float *hm = pinned ? gn_cuda_host_alloc(4 * n) : malloc(4 * n), *hv = pinned ? gn_cuda_host_alloc(4 * n) : malloc(4 * n);
            memset(hm, 0, 4 * n);
            memset(hv, 0, 4 * n);
            float *dp = to_dev(p, n), *dg = to_dev(g, n);
            int ok = 1;
            for (int64_t step = 1; step <= 2; step++) {
                float clip = step == 1 ? 0.5f : 1.0f;
                adamw_ref(p, g, m, v, n, lr, b1, b2, eps, wd, step, clip, bf);
                ok &= gn_cuda_adamw_paged(dp, dg, hm, hv, n, lr, b1, b2, eps, wd, step, clip, bf, 1000) == GN_OK;
            }
            float *gp = from_dev(dp, n);
            int pe = !memcmp(gp, p, 4 * n), me = !memcmp(hm, m, 4 * n), ve = !memcmp(hv, v, 4 * n);
            double ep = worst(gp, p, NULL, n, 1e-6, 1e-9);
            CHECK(ok && ep <= 1, "adamw_paged pinned %d bf16 %d: params error %.3g of tolerance", pinned, bf, ep);
            CHECK(me && ve, "adamw_paged state m/v (bit-exact) pinned %d bf16 %d", pinned, bf);
            if (!pe) printf("  note: adamw params equal within tolerance but not bit for bit (pinned %d bf16 %d)\n", pinned, bf);
            free(gp);
            if (pinned) { gn_cuda_host_free(hm); gn_cuda_host_free(hv); } else { free(hm); free(hv); }
            gn_cuda_free(dp); gn_cuda_free(dg);
            free(p); free(g); free(m); free(v);
        }
    printf("ok cross-entropy, lora fwd/bwd, dropout, adamw (paged)\n");
}

// ----------------------------------------------------------------------------
// a small random LLaMA on both devices

// a random model folder (tiny_model.h), weights scaled by 1/sqrt(C) (q/k twice that)
static int write_model(const char *dir, int C, int HD, int L, int NH, int NKV, int V) {
    float ws = 1.0f / sqrtf((float)C);
    return tm_write_model(dir, C, HD, L, NH, NKV, V, 256, ws, 2 * ws, ws, frand);
}

// max over rows of max|got - want| / max|want row|
static double rows_err(const float *got, const float *want, int rows, int V) {
    double w = 0;
    for (int r = 0; r < rows; r++) {
        double m = maxabs(want + (size_t)r * V, (size_t)V) + 1e-6, e = 0;
        for (int j = 0; j < V; j++) e = fmax(e, fabs((double)got[(size_t)r * V + j] - want[(size_t)r * V + j]));
        if (!(e / m <= w)) w = e / m;
    }
    return w;
}

static void test_model(const char *dir, int four_bit, double tol_prefill, double tol_decode) {
    gn_load_opts lo = {.weight_dtype = four_bit ? GN_DTYPE_NF4 : GN_DTYPE_F32, .compute_dtype = four_bit ? GN_DTYPE_BF16 : GN_DTYPE_F32};
    gn_model *mc = NULL, *mg = NULL;
    CHECK(gn_model_load(&mc, dir, &lo) == GN_OK, "load cpu: %s", gn_last_error());
    lo.device = GN_DEVICE_CUDA;
    CHECK(gn_model_load(&mg, dir, &lo) == GN_OK, "load cuda: %s", gn_last_error());
    if (!mc || !mg) { gn_model_free(mc); gn_model_free(mg); return; }
    const int V = mc->cfg.vocab_size, n = 20;
    int32_t ids[20];
    for (int i = 0; i < n; i++) ids[i] = (i * 31 + 7) % V;
    // an adapter (r 4 on every module, random A and B) from a trainer on the CPU model
    gn_train_opts to;
    gn_train_opts_default(&to);
    to.lora_r = 4;
    to.lora_alpha = 8.0f;
    gn_trainer *trc = NULL;
    CHECK(gn_trainer_new(&trc, mc, &to, NULL) == GN_OK, "trainer: %s", gn_last_error());
    if (!trc) { gn_model_free(mc); gn_model_free(mg); return; }
    float *P = gn_trainer_params(trc);
    size_t np = gn_trainer_num_params(trc);
    for (size_t i = 0; i < np; i++) P[i] = 0.2f * frand();
    for (int with_lora = 0; with_lora < 2; with_lora++) {
        gn_session *sc = gn_session_new(mc, 64), *sg = gn_session_new(mg, 64);
        if (with_lora) { gn_session_set_adapter(sc, gn_trainer_adapter(trc)); gn_session_set_adapter(sg, gn_trainer_adapter(trc)); }
        const float *lc = gn_session_forward(sc, ids, n, 1);
        float *keep = malloc(sizeof(float) * (size_t)n * V);
        memcpy(keep, lc, sizeof(float) * (size_t)n * V);
        const float *lg = gn_session_forward(sg, ids, n, 1);
        CHECK(lg != NULL, "cuda forward: %s", gn_last_error());
        if (lg) {
            double e = rows_err(lg, keep, n, V);
            CHECK(e <= tol_prefill, "%s model%s: prefill logits error %.3g (tolerance %.3g)", four_bit ? "4-bit" : "f32",
                  with_lora ? " + LoRA" : "", e, tol_prefill);
        }
        CHECK(gn_session_pos(sg) == n, "cuda forward advances pos");
        // decode steps (the GEMV path)
        double ed = 0;
        for (int step = 0; step < 5; step++) {
            int32_t id = (step * 13 + 5) % V;
            lc = gn_session_forward(sc, &id, 1, 0);
            memcpy(keep, lc, sizeof(float) * (size_t)V);
            lg = gn_session_forward(sg, &id, 1, 0);
            if (lg) ed = fmax(ed, rows_err(lg, keep, 1, V));
        }
        CHECK(ed <= tol_decode, "%s model%s: decode logits error %.3g (tolerance %.3g)", four_bit ? "4-bit" : "f32",
              with_lora ? " + LoRA" : "", ed, tol_decode);
        // batched decode across two sessions, one rewound
        gn_session *sc2 = gn_session_new(mc, 64), *sg2 = gn_session_new(mg, 64);
        gn_session_forward(sc2, ids, 3, 0);
        gn_session_forward(sg2, ids, 3, 0);
        gn_session_rewind(sc, 10);
        gn_session_rewind(sg, 10);
        int32_t two[2] = {3, 9};
        gn_session *bc[2] = {sc, sc2}, *bg[2] = {sg, sg2};
        lc = gn_sessions_decode(bc, two, 2);
        memcpy(keep, lc, sizeof(float) * 2 * (size_t)V);
        lg = gn_sessions_decode(bg, two, 2);
        CHECK(lg && rows_err(lg, keep, 2, V) <= tol_decode, "batched decode%s", with_lora ? " + LoRA" : "");
        CHECK(gn_session_pos(sg) == 11 && gn_session_pos(sg2) == 4, "batched decode advances each pos");
        gn_session_free(sc2); gn_session_free(sg2);
        gn_session_free(sc); gn_session_free(sg);
        free(keep);
    }
    // one training sequence: loss and LoRA gradients, with dropout
    to.lora_dropout = 0.1f;
    gn_trainer *tc = NULL, *tg = NULL;
    CHECK(gn_trainer_new(&tc, mc, &to, NULL) == GN_OK && gn_trainer_new(&tg, mg, &to, NULL) == GN_OK, "trainers");
    if (tc && tg) {
        size_t npc = gn_trainer_num_params(tc);
        float *pc = gn_trainer_params(tc), *pg = gn_trainer_params(tg);
        for (size_t i = 0; i < npc; i++) pc[i] = pg[i] = 0.2f * frand();
        int T = 23;
        int32_t tid[23], lab[23];
        for (int t = 0; t < T; t++) { tid[t] = (t * 17 + 2) % V; lab[t] = t < 4 || t == 11 ? -100 : (t * 5 + 1) % V; }
        for (int round = 0; round < 2; round++) { // the second after a step: the device parameters are AdamW's
            double lsc, lsg;
            int ntc, ntg;
            gn_trainer_zero_grad(tc);
            gn_trainer_zero_grad(tg);
            gn_trainer_set_rng(tg, gn_trainer_rng(tc));
            CHECK(gn_trainer_sequence(tc, tid, lab, T, 1.0f / 15.0f, 1, &lsc, &ntc) == GN_OK, "cpu sequence");
            CHECK(gn_trainer_sequence(tg, tid, lab, T, 1.0f / 15.0f, 1, &lsg, &ntg) == GN_OK, "cuda sequence: %s",
                  gn_last_error());
            CHECK(ntc == ntg, "scored tokens %d vs %d", ntg, ntc);
            CHECK(fabs(lsg - lsc) <= tol_prefill * fabs(lsc) + 1e-4, "training loss %.6f (cuda) vs %.6f (cpu)", lsg, lsc);
            const float *gc = gn_trainer_grads(tc), *gg = gn_trainer_grads(tg);
            double dn = 0, cn = 0;
            for (size_t i = 0; i < npc; i++) { dn += ((double)gg[i] - gc[i]) * ((double)gg[i] - gc[i]); cn += (double)gc[i] * gc[i]; }
            double rel = sqrt(dn) / (sqrt(cn) + 1e-12);
            CHECK(rel <= 2 * tol_prefill, "round %d: LoRA gradients |cuda - cpu| / |cpu| = %.3g (tolerance %.3g)", round,
                  rel, 2 * tol_prefill);
            printf("   %s model, training round %d: loss %.6f vs %.6f, gradient relative difference %.3g\n",
                   four_bit ? "4-bit" : "f32", round, lsg, lsc, rel);
            // AdamW moves every parameter by about lr whatever its gradient's size, so a tiny
            // gradient whose sign differs can move the two apart by up to 2 lr
            gn_trainer_step(tc, 1e-3f);
            gn_trainer_step(tg, 1e-3f);
            double pd = 0;
            for (size_t i = 0; i < npc; i++) pd = fmax(pd, fabs((double)pc[i] - pg[i]));
            CHECK(pd <= 2.5e-3, "parameters after the step differ by %.3g", pd);
            // the same parameters again, so round 1 compares gradients at one point; the CPU
            // trainer takes the GPU's, since the device keeps its AdamW result as the new step's
            // parameters and would not see host writes until the step count changes
            memcpy(pc, pg, sizeof(float) * npc);
        }
        double le;
        int ne;
        CHECK(gn_trainer_sequence(tg, tid, lab, T, 1.0f, 0, &le, &ne) == GN_OK && ne > 0, "cuda evaluation sequence");
    }
    gn_trainer_free(tc);
    gn_trainer_free(tg);
    gn_trainer_free(trc);
    gn_model_free(mc);
    gn_model_free(mg);
    printf("ok %s model on the GPU vs the CPU (prefill, decode, batched, LoRA, training)\n", four_bit ? "4-bit" : "f32");
}

// gn_trainer_step with the paged AdamW kernel (the default on a GPU model) vs
// its host loop (host_adamw): two trainers from the same start, the
// same sequences and steps; parameters and m/v must agree bit for bit. v 1:
// bf16 parameters, weight decay and the state in mmap'd files.
static void test_trainer_adamw(const char *dir) {
    gn_load_opts lo = {.weight_dtype = GN_DTYPE_NF4, .compute_dtype = GN_DTYPE_BF16, .device = GN_DEVICE_CUDA};
    gn_model *mg = NULL;
    CHECK(gn_model_load(&mg, dir, &lo) == GN_OK, "load cuda: %s", gn_last_error());
    if (!mg) return;
    const int V = mg->cfg.vocab_size, T = 19;
    int32_t ids[2][19], lab[2][19];
    for (int s = 0; s < 2; s++)
        for (int t = 0; t < T; t++) { ids[s][t] = (t * 13 + 5 * s + 1) % V; lab[s][t] = t < 3 + s ? -100 : (t * 7 + s) % V; }
    for (int v = 0; v < 2; v++) {
        gn_train_opts to;
        gn_train_opts_default(&to);
        to.lora_r = 4;
        to.lora_alpha = 8.0f;
        to.lora_dropout = 0.1f;
        to.bf16_params = v;
        to.weight_decay = v ? 0.01f : 0.0f;
        char sg[700], sh[700];
        snprintf(sg, sizeof sg, "%s/adamw_gpu.bin", dir);
        snprintf(sh, sizeof sh, "%s/adamw_host.bin", dir);
        gn_trainer *tg = NULL, *th = NULL; // GPU AdamW, host AdamW
        to.state_path = v ? sg : NULL;
        CHECK(gn_trainer_new(&tg, mg, &to, NULL) == GN_OK, "trainer: %s", gn_last_error());
        to.state_path = v ? sh : NULL;
        to.host_adamw = 1;
        CHECK(gn_trainer_new(&th, mg, &to, NULL) == GN_OK, "trainer: %s", gn_last_error());
        if (!tg || !th) { gn_trainer_free(tg); gn_trainer_free(th); break; }
        size_t np = gn_trainer_num_params(tg), nb = gn_trainer_state_size(tg);
        float *pg = gn_trainer_params(tg), *ph = gn_trainer_params(th), *p0 = malloc(sizeof(float) * np);
        for (size_t i = 0; i < np; i++) p0[i] = pg[i] = ph[i] = v ? round_bf16(0.2f * frand()) : 0.2f * frand();
        for (int step = 0; step < 2; step++) {
            // both trainers share the model's device buffers; the order flips so that
            // each AdamW path meets both a current and a stale device copy of its parameters
            gn_trainer *order[2] = {step ? tg : th, step ? th : tg};
            for (int k = 0; k < 2; k++) {
                gn_trainer_zero_grad(order[k]);
                for (int s = 0; s < 2; s++) {
                    double ls;
                    int nt;
                    CHECK(gn_trainer_sequence(order[k], ids[s], lab[s], T, 1.0f / 30.0f, 1, &ls, &nt) == GN_OK,
                          "cuda sequence: %s", gn_last_error());
                }
            }
            // the GPU sequences are deterministic: a difference here means stale device parameters
            CHECK(!memcmp(gn_trainer_grads(tg), gn_trainer_grads(th), sizeof(float) * np),
                  "v %d step %d: gradients of the two trainers differ", v, step);
            gn_trainer_step(tg, 1e-3f);
            gn_trainer_step(th, 1e-3f);
        }
        size_t moved = 0;
        for (size_t i = 0; i < np; i++) moved += pg[i] != p0[i];
        CHECK(moved > np / 2, "v %d: AdamW moved %zu of %zu parameters", v, moved, np);
        CHECK(!memcmp(pg, ph, sizeof(float) * np), "v %d: parameters after GPU and host AdamW (bit-exact)", v);
        CHECK(nb == 2 * sizeof(float) * np && !memcmp(gn_trainer_state(tg), gn_trainer_state(th), nb),
              "v %d: AdamW m and v after GPU and host AdamW (bit-exact)", v);
        free(p0);
        gn_trainer_free(tg);
        gn_trainer_free(th);
        if (v) { remove(sg); remove(sh); }
    }
    gn_model_free(mg);
    printf("ok trainer AdamW on the GPU vs the host loop (bit-exact)\n");
}

int main(void) {
    int ndev = gn_cuda_device_count();
    if (ndev == 0) {
        printf("SKIP: no CUDA device (%s); the CUDA tests need a GPU\n", gn_last_error());
        return 0;
    }
    if (gn_cuda_init(0) != GN_OK) {
        printf("FAIL: gn_cuda_init: %s\n", gn_last_error());
        return 1;
    }
    printf("device: %s\n", gn_cuda_device_name());
    test_dequant();
    test_gemv();
    test_q4_matmul();
    test_dense();
    test_rows();
    test_attention();
    test_train_kernels();
    char dir[] = "/tmp/gn_test_cuda_XXXXXX";
    if (!mkdtemp(dir)) { printf("FAIL: mkdtemp\n"); return 1; }
    char a[600], b[600];
    snprintf(a, sizeof a, "%s/a", dir); // C 64: the vectorized GEMV rows; GQA
    snprintf(b, sizeof b, "%s/b", dir); // C 72: the any-shape path; blocks across rows
    CHECK(write_model(a, 64, 96, 2, 4, 2, 101) == 0, "write model a");
    CHECK(write_model(b, 72, 100, 2, 6, 3, 50) == 0, "write model b");
    test_model(a, 1, 3e-2, 1e-2); // 4-bit: bf16 activations in T > 8 products; the GEMV skips the bf16 rounding of weights
    test_model(b, 1, 3e-2, 1e-2);
    test_model(a, 0, 1e-4, 1e-4);
    test_trainer_adamw(a);
    TEST_REPORT();
}

#endif // GN_HAVE_CUDA
