/*
 * nf4.c — NF4/FP4 blockwise quantization compatible with bitsandbytes:
 * code tables, the quantizers (4-bit and the 8-bit one used for double
 * quantization), scalar dequantization, and the safetensors layout
 * (load / export / quant_state JSON). SIMD dequant and the matmul live in
 * nf4_kernels.c.
 *
 * Byte-exactness target: bitsandbytes 0.50.2 run on CPU (tests/test_nf4.py).
 * That path is
 *   quantize_4bit        torch code (backends/default): absmax per block, scaled by
 *                        x * (1/max(absmax,1e-38)) (full blocks) or x / max(absmax,1e-38)
 *                        (the last, partial block), torch.bucketize on float32 midpoints
 *   compress_statistics  offset = torch float32 mean, then the native CPU 8-bit
 *                        quantizer on absmax - offset in blocks of 256
 * CUDA bnb gives the same values but may pack other bytes in corner cases; each
 * is noted where it happens.
 */
#include "nf4.h"
#include "core/buf.h" // gn_buf

#include <math.h>    // fabsf, isinf, floor
#include <stdarg.h>  // va_list
#include <stdio.h>   // snprintf
#include <stdlib.h>  // strtod, free

#include <cjson/cJSON.h>
#include <immintrin.h> // AVX2 quantizer (inside target() functions only)

#include "../tensor/kernels.h" // gn_simd_level

// ----------------------------------------------------------------------------
// code tables (float32 values as bnb builds them; hex floats are exact)

const float gn_nf4_code[16] = {
    -0x1p+0f, -0x1.647362p-1f, -0x1.0cd66p-1f, -0x1.94654p-2f,
    -0x1.23449ap-2f, -0x1.7a6a7ep-3f, -0x1.74f0e2p-4f, 0.0f,
    0x1.45f5fep-4f, 0x1.4995c6p-3f, 0x1.f809bap-3f, 0x1.5a0674p-2f,
    0x1.c3497p-2f, 0x1.200f56p-1f, 0x1.722766p-1f, 0x1p+0f,
};

// {0, 0.0625, 8, 12, 4, 6, 2, 3, -0, ...} / 12 in float32, bit-pattern order.
const float gn_fp4_code[16] = {
    0.0f, 0x1.555556p-8f, 0x1.555556p-1f, 0x1p+0f,
    0x1.555556p-2f, 0x1p-1f, 0x1.555556p-3f, 0x1p-2f,
    0.0f, -0x1.555556p-8f, -0x1.555556p-1f, -0x1p+0f,
    -0x1.555556p-2f, -0x1p-1f, -0x1.555556p-3f, -0x1p-2f,
};

// create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8): 127
// negatives, 0 at index 127, 127 positives, 1.0 at 255 (docs/FACTS.md §2.3, FMA variant;
// index 137 is 0x39c7e283).
const float gn_dynamic_map[256] = {
    -0x1.fc6666p-1f, -0x1.f53334p-1f, -0x1.eep-1f, -0x1.e6ccccp-1f, -0x1.df999ap-1f, -0x1.d86666p-1f, -0x1.d13334p-1f, -0x1.cap-1f,  // 0
    -0x1.c2ccccp-1f, -0x1.bb999ap-1f, -0x1.b46666p-1f, -0x1.ad3334p-1f, -0x1.a6p-1f, -0x1.9eccccp-1f, -0x1.97999ap-1f, -0x1.906666p-1f,  // 8
    -0x1.893334p-1f, -0x1.82p-1f, -0x1.7accccp-1f, -0x1.73999ap-1f, -0x1.6c6668p-1f, -0x1.653334p-1f, -0x1.5ep-1f, -0x1.56ccccp-1f,  // 16
    -0x1.4f999ap-1f, -0x1.486668p-1f, -0x1.413334p-1f, -0x1.3ap-1f, -0x1.32ccccp-1f, -0x1.2b999ap-1f, -0x1.246668p-1f, -0x1.1d3334p-1f,  // 24
    -0x1.16p-1f, -0x1.0eccccp-1f, -0x1.079998p-1f, -0x1.006666p-1f, -0x1.f26664p-2f, -0x1.e4p-2f, -0x1.d59998p-2f, -0x1.c73334p-2f,  // 32
    -0x1.b8ccccp-2f, -0x1.aa6666p-2f, -0x1.9cp-2f, -0x1.8d9998p-2f, -0x1.7f3334p-2f, -0x1.70ccccp-2f, -0x1.626666p-2f, -0x1.54p-2f,  // 40
    -0x1.459998p-2f, -0x1.373334p-2f, -0x1.28ccccp-2f, -0x1.1a6668p-2f, -0x1.0cp-2f, -0x1.fb3332p-3f, -0x1.de6666p-3f, -0x1.c1999ap-3f,  // 48
    -0x1.a4ccccp-3f, -0x1.88p-3f, -0x1.6b3334p-3f, -0x1.4e6666p-3f, -0x1.31999ap-3f, -0x1.14ccccp-3f, -0x1.fp-4f, -0x1.b66668p-4f,  // 56
    -0x1.93d70ap-4f, -0x1.8851eep-4f, -0x1.7ccccep-4f, -0x1.7147aep-4f, -0x1.65c29p-4f, -0x1.5a3d7p-4f, -0x1.4eb854p-4f, -0x1.433334p-4f,  // 64
    -0x1.37ae14p-4f, -0x1.2c28f6p-4f, -0x1.20a3d6p-4f, -0x1.151ebap-4f, -0x1.09999ap-4f, -0x1.fc28f6p-5f, -0x1.e51ebap-5f, -0x1.ce147ap-5f,  // 72
    -0x1.b70a3ep-5f, -0x1.ap-5f, -0x1.88f5c2p-5f, -0x1.71eb86p-5f, -0x1.5ae146p-5f, -0x1.43d70ap-5f, -0x1.2ccccep-5f, -0x1.15c29p-5f,  // 80
    -0x1.fd70a4p-6f, -0x1.cf5c2ap-6f, -0x1.a147aep-6f, -0x1.733334p-6f, -0x1.451ebap-6f, -0x1.170a3ep-6f, -0x1.d1eb86p-7f, -0x1.75c29p-7f,  // 88
    -0x1.3e76c8p-7f, -0x1.2c083p-7f, -0x1.19999ap-7f, -0x1.072b02p-7f, -0x1.e978d4p-8f, -0x1.c49ba6p-8f, -0x1.9fbe76p-8f, -0x1.7ae148p-8f,  // 96
    -0x1.56041ap-8f, -0x1.3126e8p-8f, -0x1.0c49bap-8f, -0x1.ced914p-9f, -0x1.851eb8p-9f, -0x1.3b645ap-9f, -0x1.e353f8p-10f, -0x1.4fdf3ap-10f,  // 104
    -0x1.eecbfep-11f, -0x1.b3d07cp-11f, -0x1.78d5p-11f, -0x1.3dd982p-11f, -0x1.02de02p-11f, -0x1.8fc506p-12f, -0x1.19ce0ap-12f, -0x1.47ae16p-13f,  // 112
    -0x1.743e96p-14f, -0x1.15df66p-14f, -0x1.6f0068p-15f, -0x1.64840cp-16f, -0x1.040bfep-17f, -0x1.b43528p-19f, -0x1.27476ep-21f, 0.0f,  // 120
    0x1.27476ep-21f, 0x1.b43528p-19f, 0x1.040bfep-17f, 0x1.64840cp-16f, 0x1.6f0068p-15f, 0x1.15df66p-14f, 0x1.743e96p-14f, 0x1.47ae16p-13f,  // 128
    0x1.19ce0ap-12f, 0x1.8fc506p-12f, 0x1.02de02p-11f, 0x1.3dd982p-11f, 0x1.78d5p-11f, 0x1.b3d07cp-11f, 0x1.eecbfep-11f, 0x1.4fdf3ap-10f,  // 136
    0x1.e353f8p-10f, 0x1.3b645ap-9f, 0x1.851eb8p-9f, 0x1.ced914p-9f, 0x1.0c49bap-8f, 0x1.3126e8p-8f, 0x1.56041ap-8f, 0x1.7ae148p-8f,  // 144
    0x1.9fbe76p-8f, 0x1.c49ba6p-8f, 0x1.e978d4p-8f, 0x1.072b02p-7f, 0x1.19999ap-7f, 0x1.2c083p-7f, 0x1.3e76c8p-7f, 0x1.75c29p-7f,  // 152
    0x1.d1eb86p-7f, 0x1.170a3ep-6f, 0x1.451ebap-6f, 0x1.733334p-6f, 0x1.a147aep-6f, 0x1.cf5c2ap-6f, 0x1.fd70a4p-6f, 0x1.15c29p-5f,  // 160
    0x1.2ccccep-5f, 0x1.43d70ap-5f, 0x1.5ae146p-5f, 0x1.71eb86p-5f, 0x1.88f5c2p-5f, 0x1.ap-5f, 0x1.b70a3ep-5f, 0x1.ce147ap-5f,  // 168
    0x1.e51ebap-5f, 0x1.fc28f6p-5f, 0x1.09999ap-4f, 0x1.151ebap-4f, 0x1.20a3d6p-4f, 0x1.2c28f6p-4f, 0x1.37ae14p-4f, 0x1.433334p-4f,  // 176
    0x1.4eb854p-4f, 0x1.5a3d7p-4f, 0x1.65c29p-4f, 0x1.7147aep-4f, 0x1.7ccccep-4f, 0x1.8851eep-4f, 0x1.93d70ap-4f, 0x1.b66668p-4f,  // 184
    0x1.fp-4f, 0x1.14ccccp-3f, 0x1.31999ap-3f, 0x1.4e6666p-3f, 0x1.6b3334p-3f, 0x1.88p-3f, 0x1.a4ccccp-3f, 0x1.c1999ap-3f,  // 192
    0x1.de6666p-3f, 0x1.fb3332p-3f, 0x1.0cp-2f, 0x1.1a6668p-2f, 0x1.28ccccp-2f, 0x1.373334p-2f, 0x1.459998p-2f, 0x1.54p-2f,  // 200
    0x1.626666p-2f, 0x1.70ccccp-2f, 0x1.7f3334p-2f, 0x1.8d9998p-2f, 0x1.9cp-2f, 0x1.aa6666p-2f, 0x1.b8ccccp-2f, 0x1.c73334p-2f,  // 208
    0x1.d59998p-2f, 0x1.e4p-2f, 0x1.f26664p-2f, 0x1.006666p-1f, 0x1.079998p-1f, 0x1.0eccccp-1f, 0x1.16p-1f, 0x1.1d3334p-1f,  // 216
    0x1.246668p-1f, 0x1.2b999ap-1f, 0x1.32ccccp-1f, 0x1.3ap-1f, 0x1.413334p-1f, 0x1.486668p-1f, 0x1.4f999ap-1f, 0x1.56ccccp-1f,  // 224
    0x1.5ep-1f, 0x1.653334p-1f, 0x1.6c6668p-1f, 0x1.73999ap-1f, 0x1.7accccp-1f, 0x1.82p-1f, 0x1.893334p-1f, 0x1.906666p-1f,  // 232
    0x1.97999ap-1f, 0x1.9eccccp-1f, 0x1.a6p-1f, 0x1.ad3334p-1f, 0x1.b46666p-1f, 0x1.bb999ap-1f, 0x1.c2ccccp-1f, 0x1.cap-1f,  // 240
    0x1.d13334p-1f, 0x1.d86666p-1f, 0x1.df999ap-1f, 0x1.e6ccccp-1f, 0x1.eep-1f, 0x1.f53334p-1f, 0x1.fc6666p-1f, 0x1p+0f,  // 248
};

// torch.argsort of the FP4 table (stable: of the two +0.0 entries, index 0
// sorts before index 8). bucketize counts midpoints of the *sorted* table, so a
// value in (0, 0.0026] lands on index 8 and exactly 0 (or -0) on index 0.
static const uint8_t fp4_order[16] = {11, 10, 13, 12, 15, 14, 9, 0, 8, 1, 6, 7, 4, 5, 2, 3};

// 15 decision thresholds: float32 midpoints of adjacent (sorted) code values,
// computed as torch does, (a + b) / 2. For NF4 these equal the CUDA encoder's
// literals (docs/FACTS.md §1.2); for FP4 they are bnb's dQuantizeFP4 thresholds / 12.
static void thresholds(int quant_type, float thr[15]) {
    for (int k = 0; k < 15; k++) {
        float a, b;
        if (quant_type == GN_QUANT_NF4) { a = gn_nf4_code[k]; b = gn_nf4_code[k + 1]; }
        else { a = gn_fp4_code[fp4_order[k]]; b = gn_fp4_code[fp4_order[k + 1]]; }
        thr[k] = (a + b) / 2.0f;
    }
}

// torch.bucketize(v, thr, right=False): the number of thresholds strictly below
// v, i.e. ties go to the lower code (as CUDA's `x > t` tree does). NaN gives 15:
// torch's binary search moves right on every failed `>=`. (CUDA's tree gives 0.)
static inline int bucket(float v, const float thr[15]) {
    if (v != v) return 15;
    int c = 0;
    for (int k = 0; k < 15; k++) c += v > thr[k];
    return c;
}

// ----------------------------------------------------------------------------
// small helpers

static inline float src_f32(const void *src, gn_dtype dt, int64_t i) {
    switch (dt) {
    case GN_DTYPE_F16: return gn_f16_to_f32(((const uint16_t *)src)[i]);
    case GN_DTYPE_BF16: return gn_bf16_to_f32(((const uint16_t *)src)[i]);
    default: return ((const float *)src)[i];
    }
}

static int dtype_from_torch_name(const char *s, gn_dtype *dt) {
    if (!strcmp(s, "float32") || !strcmp(s, "float")) { *dt = GN_DTYPE_F32; return 1; }
    if (!strcmp(s, "float16") || !strcmp(s, "half")) { *dt = GN_DTYPE_F16; return 1; }
    if (!strcmp(s, "bfloat16")) { *dt = GN_DTYPE_BF16; return 1; }
    return 0;
}

static int is_pow2_blocksize(int64_t b) { return b >= 16 && b <= 4096 && (b & (b - 1)) == 0; }

// The table dequantization uses: bnb's get_4bit_type table, except that FP4
// index 8 decodes as -0.0 (CUDA's table and bnb's scalar CPU kernel; the stored
// quant_map has +0.0, and bnb's AVX-512 and torch CPU paths also give +0.0, so
// there bnb's output differs from ours in the sign of those zeros only).
static void set_dequant_code(gn_quant4_state *q) {
    memcpy(q->code, q->quant_type == GN_QUANT_NF4 ? gn_nf4_code : gn_fp4_code, sizeof q->code);
    if (q->quant_type == GN_QUANT_FP4) q->code[8] = -0.0f;
}

// float -> half, round to nearest even; a NaN keeps its sign and the top of its
// payload (what the F16C/AVX-512 conversion bnb's kernels use does).
static uint16_t f32_to_f16_keep_nan(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)(((u >> 16) & 0x8000u) | 0x7e00u | ((u >> 13) & 0x3ffu));
    return gn_f32_to_f16(f);
}

static void *own(gn_quant4_state *q, void *p) {
    GN_ASSERT(q->nowned_ < (int)(sizeof q->owned_ / sizeof q->owned_[0]));
    q->owned_[q->nowned_++] = p;
    return p;
}

void gn_quant4_free(gn_quant4_state *q) {
    if (!q) return;
    for (int i = 0; i < q->nowned_; i++) free(q->owned_[i]);
    memset(q, 0, sizeof *q);
}

gn_status gn_quant4_set_shape(gn_quant4_state *q, int ndim, const int64_t *shape) {
    if (ndim < 1 || ndim > GN_MAX_DIMS)
        return gn_err(GN_ERR_ARG, "quant4 shape: %d dims, expected 1..%d", ndim, GN_MAX_DIMS);
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0 || (shape[i] > 0 && n > INT64_MAX / shape[i]))
            return gn_err(GN_ERR_ARG, "quant4 shape: dim %d = %lld is negative or overflows", i, (long long)shape[i]);
        n *= shape[i];
    }
    if (n != q->nelem)
        return gn_err(GN_ERR_ARG, "quant4 shape: %lld elements, expected %lld", (long long)n, (long long)q->nelem);
    q->ndim = ndim;
    for (int i = 0; i < ndim; i++) q->shape[i] = shape[i];
    q->cols = shape[ndim - 1];
    q->rows = q->cols ? n / q->cols : 0;
    return GN_OK;
}

// scale[b] = gn_quant4_scale: with DQ float32(float32(nested_code[qabsmax[b]] *
// nested_absmax[b / nbs]) + offset), bnb's dequantize_blockwise (one multiply) followed by a
// separate torch add.
void gn_quant4_scales(const gn_quant4_state *q, float *dst) {
    for (int64_t b = 0; b < q->nblocks; b++) dst[b] = gn_quant4_scale(q, b);
}

// Frees p, one of q's own buffers, before the state itself goes.
static void disown(gn_quant4_state *q, void *p) {
    for (int i = 0; i < q->nowned_; i++)
        if (q->owned_[i] == p) {
            q->owned_[i] = q->owned_[--q->nowned_];
            free(p);
            return;
        }
    GN_ASSERT(0 && "not an owned buffer");
}

// ----------------------------------------------------------------------------
// torch's float32 mean on CPU (for the DQ offset)
//
// torch sums a contiguous float vector with its "cascade" sum (SumKernel.cpp):
// 8-float vectors (the sum kernel uses the AVX2 build even on AVX-512 CPUs),
// four vector accumulators interleaved (ILP), each a 4-level cascade whose
// level width is 2^max(4, ceil(log2(rows))/4); the tail vectors go into
// accumulator 0; the scalar tail starts a fresh sum to which the 8 lanes are
// then added in order. Below 8 elements the same cascade runs on scalars.
// From 32768 elements on, with more than one thread, each thread sums an
// equal chunk and the per-thread results are summed by the same routine.
// The mean is that sum divided by (float)n.

#define TS_LANES 8

static int ceil_log2(int64_t x) {
    if (x <= 2) return 1;
    return 64 - __builtin_clzll((uint64_t)(x - 1));
}

// Sums `size` rows of 4 columns of L lanes: element (i, k, l) at
// x[i*row_stride + k*col_stride + l]. out[k][l] gets the column sums.
static void ts_multi_row_sum(const float *x, int64_t row_stride, int64_t col_stride, int L, int64_t size,
                             float out[4][TS_LANES]) {
    float acc[4][4][TS_LANES];
    memset(acc, 0, sizeof acc);
    int lp = ceil_log2(size) / 4;
    if (lp < 4) lp = 4;
    const int64_t step = (int64_t)1 << lp, mask = step - 1;
    int64_t i = 0;
    while (i + step <= size) {
        for (int64_t j = 0; j < step; j++, i++)
            for (int k = 0; k < 4; k++)
                for (int l = 0; l < L; l++) acc[0][k][l] += x[i * row_stride + k * col_stride + l];
        for (int j = 1; j < 4; j++) {
            for (int k = 0; k < 4; k++)
                for (int l = 0; l < L; l++) { acc[j][k][l] += acc[j - 1][k][l]; acc[j - 1][k][l] = 0.0f; }
            if ((i & (mask << (j * lp))) != 0) break;
        }
    }
    for (; i < size; i++)
        for (int k = 0; k < 4; k++)
            for (int l = 0; l < L; l++) acc[0][k][l] += x[i * row_stride + k * col_stride + l];
    for (int j = 1; j < 4; j++)
        for (int k = 0; k < 4; k++)
            for (int l = 0; l < L; l++) acc[0][k][l] += acc[j][k][l];
    memcpy(out, acc[0], sizeof acc[0]);
}

// row_sum: `size` items of L lanes, item i at x[i*stride]; returns the L lane sums in out.
static void ts_row_sum(const float *x, int64_t stride, int L, int64_t size, float out[TS_LANES]) {
    float ps[4][TS_LANES];
    int64_t size_ilp = size / 4;
    ts_multi_row_sum(x, 4 * stride, stride, L, size_ilp, ps);
    for (int64_t i = size_ilp * 4; i < size; i++)
        for (int l = 0; l < L; l++) ps[0][l] += x[i * stride + l];
    for (int k = 1; k < 4; k++)
        for (int l = 0; l < L; l++) ps[0][l] += ps[k][l];
    memcpy(out, ps[0], sizeof ps[0]);
}

static float ts_cascade_sum(const float *x, int64_t n) {
    float v[TS_LANES];
    if (n >= TS_LANES) {
        int64_t nv = n / TS_LANES;
        ts_row_sum(x, TS_LANES, TS_LANES, nv, v);
        float acc = 0.0f;
        for (int64_t k = nv * TS_LANES; k < n; k++) acc += x[k];
        for (int l = 0; l < TS_LANES; l++) acc += v[l];
        return acc;
    }
    ts_row_sum(x, 1, 1, n, v);
    return v[0];
}

float gn_quant4_torch_mean(const float *x, int64_t n, int torch_threads) {
    const int64_t grain = 32768;
    float sum;
    if (n < grain || torch_threads <= 1) {
        sum = 0.0f + ts_cascade_sum(x, n);
    } else {
        int64_t nt = (n + grain - 1) / grain;
        if (nt > torch_threads) nt = torch_threads;
        int64_t chunk = (n + nt - 1) / nt;
        float *buf = gn_calloc((size_t)torch_threads, sizeof(float));
        for (int64_t t = 0; t < nt && t * chunk < n; t++) {
            int64_t len = n - t * chunk < chunk ? n - t * chunk : chunk;
            buf[t] = 0.0f + ts_cascade_sum(x + t * chunk, len);
        }
        sum = 0.0f + ts_cascade_sum(buf, torch_threads);
        free(buf);
    }
    return sum / (float)n;
}

// ----------------------------------------------------------------------------
// 8-bit blockwise quantizer (bnb's native CPU quantize_blockwise)
//
// Per block: absmax = max|x| (NaN lanes count as 0); an all-zero block gives
// codes 0. Otherwise v = x * (1/absmax), clamped to [-1, 1], is mapped to one
// of 65536 bins, bin = (uint16)((v + 1) * 0.5 * 65535 + 0.5), and the bin to a
// code index through a table: entry i holds the number of map midpoints
// (0.5 * (c[j] + c[j+1])) below -1 + 2i/65535. This is coarser than CUDA's
// binary search near 0 (bins are 3e-5 wide: values near 0 land on codes 123
// or 131, +-2.1e-5, never on 127) and its ties differ, so CUDA-written files
// hold other bytes for the same absmax array. (Older bnb CPU builds used a
// lower_bound search; bnb 0.50 uses this table.) Dequantization of either
// is exact.

static void build_lut8(const float *code, uint8_t *lut) {
    float mid[255];
    for (int i = 0; i < 255; i++) mid[i] = 0.5f * (code[i] + code[i + 1]);
    int ci = 0;
    for (int i = 0; i < 65536; i++) {
        float val = -1.0f + (2.0f * (float)i) / 65535.0f;
        while (ci < 255 && mid[ci] < val) ci++;
        lut[i] = (uint8_t)ci;
    }
}

void gn_quantize_blockwise_8bit(const float *x, int64_t n, const float *code, int blocksize,
                                uint8_t *out, float *absmax) {
    GN_ASSERT(blocksize > 0);
    uint8_t *lut = gn_malloc(65536);
    build_lut8(code, lut);
    int64_t nb = (n + blocksize - 1) / blocksize;
    #pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t b = 0; b < nb; b++) {
        int64_t i0 = b * blocksize, i1 = i0 + blocksize < n ? i0 + blocksize : n;
        float am = 0.0f;
        for (int64_t i = i0; i < i1; i++) {
            float a = fabsf(x[i]);
            if (a > am) am = a;  // NaN compares false: counts as 0
        }
        absmax[b] = am;
        if (am == 0.0f) { memset(out + i0, 0, (size_t)(i1 - i0)); continue; }
        float inv = 1.0f / am;
        for (int64_t i = i0; i < i1; i++) {
            float v = x[i] * inv;
            // clamp; NaN (only from NaN weights) goes to -1, as max(v, -1) in SIMD does
            v = !(v >= -1.0f) ? -1.0f : (v > 1.0f ? 1.0f : v);
            float y = (v + 1.0f) * 0.5f * 65535.0f + 0.5f;
            out[i] = lut[(uint16_t)(int32_t)y];
        }
    }
    free(lut);
}

// ----------------------------------------------------------------------------
// 4-bit quantizer (bnb 0.50 torch fallback, which is what quantize_4bit runs on CPU)

// Quantizes elements [i0, i1) of one block into nibbles; returns its stored absmax.
static float quant_block(const void *src, gn_dtype dt, int64_t i0, int64_t i1, int partial,
                         int quant_type, const float thr[15], uint8_t *packed) {
    float xs[4096];
    int64_t len = i1 - i0;
    GN_ASSERT(len <= 4096);
    float am = 0.0f, nan = 0.0f;
    int has_nan = 0;
    for (int64_t i = 0; i < len; i++) {
        xs[i] = src_f32(src, dt, i0 + i);
        float a = fabsf(xs[i]);
        if (a != a) { if (!has_nan) nan = a; has_nan = 1; }
        else if (a > am) am = a;
    }
    // torch's max propagates NaN, with the bits its kernel happens to produce:
    // a full block (max over dim -1) returns the first NaN itself, here |NaN|;
    // the partial block (a whole-tensor max) returns all-ones 0xffffffff for two
    // or more elements. clamp(min=1e-38) keeps the NaN as it is.
    if (has_nan) {
        if (partial && len > 1) { uint32_t u = 0xffffffffu; memcpy(&nan, &u, 4); }
        am = nan;
    }
    float c = (am != am || am >= 1e-38f) ? am : 1e-38f;
    float stored = partial ? c : am;   // the partial block stores the clamped value
    float s = 1.0f / c;
    for (int64_t i = 0; i < len; i++) {
        // full blocks multiply by the reciprocal, the partial one divides
        float v = partial ? xs[i] / c : xs[i] * s;
        int k = bucket(v, thr);
        int code = quant_type == GN_QUANT_NF4 ? k : fp4_order[k];
        int64_t e = i0 + i;
        if (e & 1) packed[e >> 1] |= (uint8_t)code;
        else packed[e >> 1] = (uint8_t)(code << 4);
    }
    return stored;
}

// AVX2 + F16C: quant_block for a full NF4 block without NaN, bit for bit: the same float32
// conversion, absmax, reciprocal and products, and the bucket as the count of the 15
// thresholds strictly below v (15 compares per 8 elements). Returns 0 (nothing written)
// when the block holds a NaN or an infinity, for quant_block to take it. i0 is even (blocks are >= 32).
__attribute__((target("avx2,fma,f16c")))
static int quant_block_nf4_avx2(const void *src, gn_dtype dt, int64_t i0, int64_t len, const float thr[15],
                                uint8_t *packed, float *stored) {
    float xs[4096];
    __m256 am = _mm256_setzero_ps(), nan = _mm256_setzero_ps();
    const __m256 absm = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    for (int64_t i = 0; i < len; i += 8) {
        __m256 x;
        if (dt == GN_DTYPE_F16) x = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)src + i0 + i)));
        else if (dt == GN_DTYPE_BF16)
            x = _mm256_castsi256_ps(_mm256_slli_epi32(
                _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const uint16_t *)src + i0 + i))), 16));
        else x = _mm256_loadu_ps((const float *)src + i0 + i);
        _mm256_storeu_ps(xs + i, x);
        const __m256 a = _mm256_and_ps(x, absm);
        nan = _mm256_or_ps(nan, _mm256_cmp_ps(a, a, _CMP_UNORD_Q));
        am = _mm256_max_ps(am, a);
    }
    if (_mm256_movemask_ps(nan)) return 0;
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(am), _mm256_extractf128_ps(am, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_shuffle_ps(m4, m4, 1));
    const float amax = _mm_cvtss_f32(m4);
    if (amax > 3.4e38f) return 0; // an infinite absmax: inf * 0 is NaN, which takes code 15 there
    const float c = amax >= 1e-38f ? amax : 1e-38f;
    const __m256 s = _mm256_set1_ps(1.0f / c);
    __m256 t[15];
    for (int k = 0; k < 15; k++) t[k] = _mm256_set1_ps(thr[k]);
    for (int64_t i = 0; i < len; i += 8) {
        const __m256 v = _mm256_mul_ps(_mm256_loadu_ps(xs + i), s);
        __m256i k = _mm256_setzero_si256();
        for (int j = 0; j < 15; j++) k = _mm256_sub_epi32(k, _mm256_castps_si256(_mm256_cmp_ps(v, t[j], _CMP_GT_OQ)));
        // 8 codes -> 4 bytes, the even element in the high nibble
        k = _mm256_or_si256(_mm256_slli_epi64(k, 4), _mm256_srli_epi64(k, 32)); // per qword: (c0 << 4) | c1 in its low byte
        k = _mm256_shuffle_epi8(k, _mm256_setr_epi8(0, 8, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 8, -1, -1,
                                                    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1));
        const uint16_t lo = (uint16_t)_mm256_extract_epi16(k, 0), hi = (uint16_t)_mm256_extract_epi16(k, 8);
        uint8_t *pb = packed + ((i0 + i) >> 1);
        pb[0] = (uint8_t)lo;
        pb[1] = (uint8_t)(lo >> 8);
        pb[2] = (uint8_t)hi;
        pb[3] = (uint8_t)(hi >> 8);
    }
    *stored = amax;
    return 1;
}

gn_status gn_quantize_4bit_ex(const void *src, gn_dtype src_dtype, int64_t nelem, int blocksize,
                              int quant_type, int double_quant, const gn_quant4_opts *opts,
                              gn_quant4_state *out) {
    memset(out, 0, sizeof *out);
    if (!src || nelem < 1)
        return gn_err(GN_ERR_ARG, "quantize_4bit: %lld elements, expected at least 1", (long long)nelem);
    if (src_dtype != GN_DTYPE_F32 && src_dtype != GN_DTYPE_F16 && src_dtype != GN_DTYPE_BF16)
        return gn_err(GN_ERR_ARG, "quantize_4bit: input dtype %s, expected F32, F16 or BF16", gn_dtype_name(src_dtype));
    if (blocksize < 32 || !is_pow2_blocksize(blocksize))
        return gn_err(GN_ERR_ARG, "quantize_4bit: blocksize %d, expected a power of two in 32..4096", blocksize);
    if (quant_type != GN_QUANT_NF4 && quant_type != GN_QUANT_FP4)
        return gn_err(GN_ERR_ARG, "quantize_4bit: quant_type %d, expected NF4 or FP4", quant_type);
    int torch_threads = opts && opts->torch_threads > 0 ? opts->torch_threads : 1;
    const float *ncode = opts && opts->nested_code ? opts->nested_code : gn_dynamic_map;

    out->quant_type = quant_type;
    out->blocksize = blocksize;
    out->dtype = out->wdtype = src_dtype;
    out->nelem = nelem;
    out->ndim = 1;
    out->shape[0] = nelem;
    out->rows = 1;
    out->cols = nelem;
    out->nblocks = (nelem + blocksize - 1) / blocksize;
    set_dequant_code(out);

    uint8_t *packed = own(out, gn_malloc((size_t)((nelem + 1) / 2)));
    float *absmax = own(out, gn_malloc((size_t)out->nblocks * sizeof(float)));
    float thr[15];
    thresholds(quant_type, thr);
    int64_t nfull = nelem / blocksize;
    const int avx2 = quant_type == GN_QUANT_NF4 && gn_simd_level() >= GN_SIMD_AVX2 && __builtin_cpu_supports("f16c");
    #pragma omp parallel for schedule(static) if (nelem > 65536)
    for (int64_t b = 0; b < out->nblocks; b++) {
        int64_t i0 = b * blocksize, i1 = i0 + blocksize < nelem ? i0 + blocksize : nelem;
        if (avx2 && b < nfull && quant_block_nf4_avx2(src, src_dtype, i0, blocksize, thr, packed, &absmax[b])) continue;
        absmax[b] = quant_block(src, src_dtype, i0, i1, b >= nfull, quant_type, thr, packed);
    }
    // Odd count: torch pads the scaled vector with 0.0 before packing, so the
    // spare low nibble holds the code of 0 (NF4: 7; FP4: 0). CUDA leaves 0.
    if (nelem & 1) packed[nelem >> 1] |= (uint8_t)(quant_type == GN_QUANT_NF4 ? bucket(0.0f, thr) : fp4_order[bucket(0.0f, thr)]);
    out->packed = packed;
    out->absmax = absmax;

    if (double_quant) {
        out->nested = 1;
        out->nested_blocksize = 256;
        out->nested_dtype = GN_DTYPE_F32;
        out->nested_nblocks = (out->nblocks + 255) / 256;
        memcpy(out->nested_code, ncode, sizeof out->nested_code);
        out->offset = gn_quant4_torch_mean(absmax, out->nblocks, torch_threads);
        float *centered = gn_malloc((size_t)out->nblocks * sizeof(float));
        for (int64_t b = 0; b < out->nblocks; b++) centered[b] = absmax[b] - out->offset;
        uint8_t *qabs = own(out, gn_malloc((size_t)out->nblocks));
        float *nabs = own(out, gn_malloc((size_t)out->nested_nblocks * sizeof(float)));
        gn_quantize_blockwise_8bit(centered, out->nblocks, out->nested_code, 256, qabs, nabs);
        free(centered);
        out->qabsmax = qabs;
        out->nested_absmax = nabs;
        out->absmax = NULL; // the codes stand in for the float32 scales from now on
        disown(out, absmax);
    }
    return GN_OK;
}

gn_status gn_quantize_4bit(const void *src, gn_dtype src_dtype, int64_t nelem, int blocksize,
                           int quant_type, int double_quant, gn_quant4_state *out) {
    return gn_quantize_4bit_ex(src, src_dtype, nelem, blocksize, quant_type, double_quant, NULL, out);
}

// ----------------------------------------------------------------------------
// scalar dequantization (the definition the SIMD paths are tested against)

void gn_dequantize_4bit_ref(const gn_quant4_state *q, float *dst) {
    for (int64_t e = 0; e < q->nelem; e++) {
        uint8_t byte = q->packed[e >> 1];
        int c = (e & 1) ? (byte & 15) : (byte >> 4);
        dst[e] = q->code[c] * gn_quant4_scale(q, e / q->blocksize);
    }
}

gn_status gn_dequantize_4bit_to(const gn_quant4_state *q, gn_dtype out_dtype, void *dst) {
    if (out_dtype == GN_DTYPE_F32) { gn_dequantize_4bit(q, dst); return GN_OK; }
    if (out_dtype != GN_DTYPE_F16 && out_dtype != GN_DTYPE_BF16)
        return gn_err(GN_ERR_ARG, "dequantize_4bit: output dtype %s, expected F32, F16 or BF16", gn_dtype_name(out_dtype));
    const int64_t chunk = 4096;
    int64_t nch = (q->nelem + chunk - 1) / chunk;
    uint16_t *o = dst;
    #pragma omp parallel for schedule(static) if (q->nelem > 65536)
    for (int64_t c = 0; c < nch; c++) {
        float buf[4096];
        int64_t e0 = c * chunk, n = q->nelem - e0 < chunk ? q->nelem - e0 : chunk;
        gn_dequantize_4bit_range(q, e0, n, buf);
        for (int64_t i = 0; i < n; i++)
            o[e0 + i] = out_dtype == GN_DTYPE_BF16 ? gn_f32_to_bf16(buf[i]) : f32_to_f16_keep_nan(buf[i]);
    }
    return GN_OK;
}

// ----------------------------------------------------------------------------
// bits per parameter

double gn_quant4_bits_per_param(const gn_quant4_state *q) {
    if (q->nelem <= 0) return 0.0;
    double bytes = (double)((q->nelem + 1) / 2);
    if (q->nested) bytes += (double)q->nblocks + 4.0 * (double)q->nested_nblocks;
    else bytes += 4.0 * (double)q->nblocks;
    return 8.0 * bytes / (double)q->nelem;
}

double gn_quant4_bits_formula(int blocksize, int nested, int nested_blocksize) {
    // 4 bits of code; a float32 absmax per block, or with DQ an 8-bit code per
    // block plus a float32 per nested block of blocks.
    if (!nested) return 4.0 + 32.0 / blocksize;
    return 4.0 + 8.0 / blocksize + 32.0 / ((double)blocksize * nested_blocksize);
}

// ----------------------------------------------------------------------------
// quant_state JSON

// Python's repr() of a double (what json.dumps writes for a float): the
// shortest digit string that reads back to the same double; fixed notation for
// decimal exponents -4..15 (always with a fraction, "100.0"), else "1.5e-05".
// json.dumps spells the non-finite values NaN / Infinity / -Infinity.
static void py_float_repr(double v, char *out, size_t cap) {
    if (v != v) { snprintf(out, cap, "NaN"); return; }
    if (isinf(v)) { snprintf(out, cap, v > 0 ? "Infinity" : "-Infinity"); return; }
    if (v == 0) { snprintf(out, cap, signbit(v) ? "-0.0" : "0.0"); return; }
    char e[40];
    for (int p = 1; p <= 17; p++) {
        snprintf(e, sizeof e, "%.*e", p - 1, v);
        if (strtod(e, NULL) == v) break;
    }
    // e is "[-]d[.ddd]e[+-]XX": split into sign, digits, exponent
    const char *s = e;
    int neg = *s == '-';
    if (neg) s++;
    char dig[24];
    int nd = 0;
    for (; *s && *s != 'e'; s++)
        if (*s != '.') dig[nd++] = *s;
    while (nd > 1 && dig[nd - 1] == '0') nd--;
    dig[nd] = 0;
    int x = atoi(s + 1);
    char body[64];
    size_t k = 0;
    if (x >= -4 && x < 16) {
        if (x >= 0) {
            for (int i = 0; i <= x; i++) body[k++] = i < nd ? dig[i] : '0';
            body[k++] = '.';
            if (nd > x + 1) for (int i = x + 1; i < nd; i++) body[k++] = dig[i];
            else body[k++] = '0';
        } else {
            body[k++] = '0';
            body[k++] = '.';
            for (int i = 0; i < -x - 1; i++) body[k++] = '0';
            for (int i = 0; i < nd; i++) body[k++] = dig[i];
        }
        body[k] = 0;
    } else {
        body[k++] = dig[0];
        if (nd > 1) {
            body[k++] = '.';
            for (int i = 1; i < nd; i++) body[k++] = dig[i];
        }
        snprintf(body + k, sizeof body - k, "e%c%02d", x < 0 ? '-' : '+', x < 0 ? -x : x);
    }
    snprintf(out, cap, "%s%s", neg ? "-" : "", body);
}

char *gn_quant4_state_json(const gn_quant4_state *q) {
    gn_buf b = {0};
    char t[96];
    gn_buf_puts(&b, "{\"quant_type\": \"");
    gn_buf_puts(&b, q->quant_type == GN_QUANT_NF4 ? "nf4" : "fp4");
    snprintf(t, sizeof t, "\", \"blocksize\": %d, \"dtype\": \"", q->blocksize);
    gn_buf_puts(&b, t);
    gn_buf_puts(&b, gn_dtype_torch_name(q->dtype));
    gn_buf_puts(&b, "\", \"shape\": [");
    for (int i = 0; i < q->ndim; i++) {
        snprintf(t, sizeof t, "%s%lld", i ? ", " : "", (long long)q->shape[i]);
        gn_buf_puts(&b, t);
    }
    gn_buf_puts(&b, "]");
    if (q->nested) {
        snprintf(t, sizeof t, ", \"nested_blocksize\": %d, \"nested_dtype\": \"%s\", \"nested_offset\": ",
                 q->nested_blocksize, gn_dtype_torch_name(q->nested_dtype));
        gn_buf_puts(&b, t);
        py_float_repr((double)q->offset, t, sizeof t);
        gn_buf_puts(&b, t);
    }
    gn_buf_puts(&b, "}");
    return b.buf;
}

// ----------------------------------------------------------------------------
// export: the tensors transformers writes for a quantized Linear

static char *cat_name(const char *prefix, const char *suffix) {
    size_t a = strlen(prefix), c = strlen(suffix);
    char *s = gn_malloc(a + c + 1);
    memcpy(s, prefix, a);
    memcpy(s + a, suffix, c + 1);
    return s;
}

static void ex_add(gn_quant4_export *ex, char *name, gn_dtype dt, int ndim, int64_t d0, int64_t d1,
                   const void *data, size_t nbytes) {
    gn_tensor_out *t = &ex->t[ex->n];
    memset(t, 0, sizeof *t);
    ex->names_[ex->n] = name;
    t->name = name;
    t->dtype = dt;
    t->ndim = ndim;
    t->shape[0] = d0;
    t->shape[1] = d1;
    t->data = data;
    t->nbytes = nbytes;
    ex->n++;
}

gn_status gn_quant4_export_tensors(const gn_quant4_state *q, const char *prefix, gn_quant4_export *ex) {
    memset(ex, 0, sizeof *ex);
    if (!q->packed || q->nelem < 1)
        return gn_err(GN_ERR_ARG, "%s: nothing quantized to export", prefix);
    ex->json_ = gn_quant4_state_json(q);
    int64_t nb = q->nblocks;
    ex_add(ex, cat_name(prefix, ".weight"), GN_DTYPE_U8, 2, (q->nelem + 1) / 2, 1, q->packed, (size_t)((q->nelem + 1) / 2));
    if (q->nested) ex_add(ex, cat_name(prefix, ".weight.absmax"), GN_DTYPE_U8, 1, nb, 0, q->qabsmax, (size_t)nb);
    else ex_add(ex, cat_name(prefix, ".weight.absmax"), GN_DTYPE_F32, 1, nb, 0, q->absmax, (size_t)nb * 4);
    ex_add(ex, cat_name(prefix, ".weight.quant_map"), GN_DTYPE_F32, 1, 16, 0,
           q->quant_type == GN_QUANT_NF4 ? gn_nf4_code : gn_fp4_code, sizeof gn_nf4_code);
    if (q->nested) {
        ex_add(ex, cat_name(prefix, ".weight.nested_absmax"), GN_DTYPE_F32, 1, q->nested_nblocks, 0,
               q->nested_absmax, (size_t)q->nested_nblocks * 4);
        ex_add(ex, cat_name(prefix, ".weight.nested_quant_map"), GN_DTYPE_F32, 1, 256, 0, q->nested_code,
               sizeof q->nested_code);
    }
    size_t jl = strlen(ex->json_);
    ex_add(ex, cat_name(prefix, q->quant_type == GN_QUANT_NF4 ? ".weight.quant_state.bitsandbytes__nf4"
                                                              : ".weight.quant_state.bitsandbytes__fp4"),
           GN_DTYPE_U8, 1, (int64_t)jl, 0, ex->json_, jl);
    return GN_OK;
}

void gn_quant4_export_free(gn_quant4_export *ex) {
    if (!ex) return;
    for (int i = 0; i < ex->n; i++) free(ex->names_[i]);
    free(ex->json_);
    memset(ex, 0, sizeof *ex);
}

// ----------------------------------------------------------------------------
// load

static const gn_tensor *find_sfx(const gn_tensor_table *tt, const char *prefix, const char *suffix) {
    char *n = cat_name(prefix, suffix);
    const gn_tensor *t = gn_tensor_table_find(tt, n);
    free(n);
    return t;
}

int gn_quant4_present(const gn_tensor_table *tt, const char *prefix) {
    return find_sfx(tt, prefix, ".weight.quant_state.bitsandbytes__nf4") != NULL ||
           find_sfx(tt, prefix, ".weight.quant_state.bitsandbytes__fp4") != NULL;
}

// GN_ERR_FORMAT "<file>: tensor '<name>': " + message
static gn_status tensor_err(const gn_tensor *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static gn_status tensor_err(const gn_tensor *t, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return gn_err(GN_ERR_FORMAT, "%s: tensor '%s': %s", t->file ? t->file : "(table)", t->name, msg);
}

static gn_status missing(const gn_tensor *near, const char *prefix, const char *suffix, const char *why) {
    return gn_err(GN_ERR_FORMAT, "%s: tensor '%s%s' missing, expected it %s",
                  near && near->file ? near->file : "(table)", prefix, suffix, why);
}

// Copies a float32 tensor of exactly n elements (file data need not be aligned).
static gn_status load_f32(const gn_tensor *t, int64_t n, float *dst) {
    if (t->dtype != GN_DTYPE_F32)
        return tensor_err(t, "dtype %s, expected F32", gn_dtype_name(t->dtype));
    if (t->nelem != n || t->nbytes != (size_t)n * 4)
        return tensor_err(t, "%lld elements, expected %lld", (long long)t->nelem, (long long)n);
    memcpy(dst, t->data, (size_t)n * 4);
    return GN_OK;
}

static int json_int(const cJSON *o, const char *key, int64_t *v) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(x)) return 0;
    double d = x->valuedouble;
    if (!(d >= 0 && d <= 9007199254740992.0) || floor(d) != d) return 0;
    *v = (int64_t)d;
    return 1;
}

static const char *json_str(const cJSON *o, const char *key) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(x) ? x->valuestring : NULL;
}

static gn_status load_json(gn_quant4_state *q, const gn_tensor *qs, int key_type, int *json_nested) {
    cJSON *j = cJSON_ParseWithLength((const char *)qs->data, qs->nbytes);
    gn_status st = GN_OK;
    if (!j || !cJSON_IsObject(j)) { st = tensor_err(qs, "quant_state JSON does not parse, expected a JSON object"); goto out; }
    const char *qt = json_str(j, "quant_type");
    if (!qt || (strcmp(qt, "nf4") && strcmp(qt, "fp4"))) {
        st = tensor_err(qs, "unknown quant_type '%s', expected \"nf4\" or \"fp4\"", qt ? qt : "(missing)");
        goto out;
    }
    q->quant_type = strcmp(qt, "nf4") == 0 ? GN_QUANT_NF4 : GN_QUANT_FP4;
    if (q->quant_type != key_type) {
        st = tensor_err(qs, "quant_type \"%s\" disagrees with the tensor name", qt);
        goto out;
    }
    int64_t bs;
    if (!json_int(j, "blocksize", &bs) || !is_pow2_blocksize(bs)) {
        st = tensor_err(qs, "blocksize missing or not a power of two in 16..4096");
        goto out;
    }
    q->blocksize = (int)bs;
    const char *dt = json_str(j, "dtype");
    if (!dt || !dtype_from_torch_name(dt, &q->dtype)) {
        st = tensor_err(qs, "dtype '%s', expected \"float32\", \"float16\" or \"bfloat16\"", dt ? dt : "(missing)");
        goto out;
    }
    q->wdtype = q->dtype;
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(j, "shape");
    int nd = cJSON_IsArray(sh) ? cJSON_GetArraySize(sh) : -1;
    if (nd < 1 || nd > GN_MAX_DIMS) {
        st = tensor_err(qs, "shape missing or with %d dims, expected a list of 1..%d sizes", nd, GN_MAX_DIMS);
        goto out;
    }
    int64_t n = 1;
    for (int i = 0; i < nd; i++) {
        const cJSON *d = cJSON_GetArrayItem(sh, i);
        double v = cJSON_IsNumber(d) ? d->valuedouble : -1;
        if (!(v >= 0 && v <= 9007199254740992.0) || floor(v) != v || (v > 0 && n > INT64_MAX / (int64_t)v)) {
            st = tensor_err(qs, "shape[%d] is not a non-negative integer", i);
            goto out;
        }
        q->shape[i] = (int64_t)v;
        n *= q->shape[i];
    }
    if (n < 1) { st = tensor_err(qs, "shape has no elements"); goto out; }
    q->ndim = nd;
    q->nelem = n;
    q->cols = q->shape[nd - 1];
    q->rows = n / q->cols;
    q->nblocks = (n + bs - 1) / bs;
    int64_t nbs;
    *json_nested = json_int(j, "nested_blocksize", &nbs);
    if (*json_nested) {
        if (nbs < 1 || nbs > (1 << 20)) { st = tensor_err(qs, "nested_blocksize %lld out of range", (long long)nbs); goto out; }
        q->nested_blocksize = (int)nbs;
        const cJSON *off = cJSON_GetObjectItemCaseSensitive(j, "nested_offset");
        if (!cJSON_IsNumber(off)) { st = tensor_err(qs, "nested_offset missing, expected a number"); goto out; }
        q->offset = (float)off->valuedouble;
        const char *ndt = json_str(j, "nested_dtype");
        if (ndt && (!dtype_from_torch_name(ndt, &q->nested_dtype) || q->nested_dtype != GN_DTYPE_F32)) {
            st = tensor_err(qs, "nested_dtype '%s', expected \"float32\"", ndt);
            goto out;
        }
        q->nested_dtype = GN_DTYPE_F32;
    }
out:
    cJSON_Delete(j);
    return st;
}

gn_status gn_quant4_load(gn_quant4_state *q, const gn_tensor_table *tt, const char *prefix) {
    memset(q, 0, sizeof *q);
    const gn_tensor *qs = find_sfx(tt, prefix, ".weight.quant_state.bitsandbytes__nf4");
    int key_type = GN_QUANT_NF4;
    if (!qs) { qs = find_sfx(tt, prefix, ".weight.quant_state.bitsandbytes__fp4"); key_type = GN_QUANT_FP4; }
    const gn_tensor *w = find_sfx(tt, prefix, ".weight");
    if (!qs) return missing(w, prefix, ".weight.quant_state.bitsandbytes__nf4", "(or __fp4) for a 4-bit layer");
    if (qs->dtype != GN_DTYPE_U8 && qs->dtype != GN_DTYPE_I8)
        return tensor_err(qs, "dtype %s, expected U8 bytes of JSON", gn_dtype_name(qs->dtype));
    int json_nested = 0;
    gn_status st = load_json(q, qs, key_type, &json_nested);
    if (st != GN_OK) { memset(q, 0, sizeof *q); return st; }

    if (!w) { st = missing(qs, prefix, ".weight", "with the packed 4-bit codes"); goto fail; }
    if (w->nbytes != (size_t)((q->nelem + 1) / 2)) {
        st = tensor_err(w, "%zu bytes of packed codes, expected %lld for shape with %lld elements", w->nbytes,
                  (long long)((q->nelem + 1) / 2), (long long)q->nelem);
        goto fail;
    }
    q->packed = w->data;
    set_dequant_code(q);

    const gn_tensor *am = find_sfx(tt, prefix, ".weight.absmax");
    if (!am) { st = missing(qs, prefix, ".weight.absmax", "with the block scales"); goto fail; }
    if (am->nelem != q->nblocks) {
        st = tensor_err(am, "%lld elements, expected %lld (ceil(%lld / blocksize %d)) for the shape in the quant_state",
                  (long long)am->nelem, (long long)q->nblocks, (long long)q->nelem, q->blocksize);
        goto fail;
    }
    // bnb dequantizes with its built-in table whatever quant_map says; so do we,
    // but a file whose map differs is worth a warning.
    const gn_tensor *qm = find_sfx(tt, prefix, ".weight.quant_map");
    if (qm) {
        float m[16];
        if ((st = load_f32(qm, 16, m)) != GN_OK) goto fail;
        if (memcmp(m, q->quant_type == GN_QUANT_NF4 ? gn_nf4_code : gn_fp4_code, sizeof m) != 0)
            gn_log(GN_LOG_WARN, "%s: tensor '%s': differs from bnb's %s table; using bnb's (as bnb does)",
                   qm->file ? qm->file : "(table)", qm->name, q->quant_type == GN_QUANT_NF4 ? "nf4" : "fp4");
    }
    const gn_tensor *na = find_sfx(tt, prefix, ".weight.nested_absmax");
    const gn_tensor *nm = find_sfx(tt, prefix, ".weight.nested_quant_map");
    if (json_nested || na || nm) {
        if (!json_nested) { st = tensor_err(qs, "nested_blocksize/nested_offset missing, but nested tensors exist"); goto fail; }
        if (!na) { st = missing(qs, prefix, ".weight.nested_absmax", "for a double-quantized layer"); goto fail; }
        if (!nm) { st = missing(qs, prefix, ".weight.nested_quant_map", "for a double-quantized layer"); goto fail; }
        if (am->dtype != GN_DTYPE_U8) {
            st = tensor_err(am, "dtype %s, expected U8 codes for a double-quantized layer", gn_dtype_name(am->dtype));
            goto fail;
        }
        q->nested = 1;
        q->nested_nblocks = (q->nblocks + q->nested_blocksize - 1) / q->nested_blocksize;
        float *nab = own(q, gn_malloc((size_t)q->nested_nblocks * sizeof(float)));
        if ((st = load_f32(na, q->nested_nblocks, nab)) != GN_OK) goto fail;
        if ((st = load_f32(nm, 256, q->nested_code)) != GN_OK) goto fail;
        q->nested_absmax = nab;
        q->qabsmax = am->data;
    } else {
        float *scales = own(q, gn_malloc((size_t)q->nblocks * sizeof(float)));
        if ((st = load_f32(am, q->nblocks, scales)) != GN_OK) goto fail;
        q->absmax = scales;
    }
    return GN_OK;
fail:
    gn_quant4_free(q);
    return st;
}
