// nf4.cu — 4-bit (NF4/FP4, bitsandbytes layout) weights on the device:
// dequantization, the fused dequantize-dot GEMV for decode, and the tiled
// dequantize + cuBLAS path for prefill and training; the bf16 GEMV and cuBLAS
// products of dense matrices; a row-major SGEMM wrapper.
#include "common.cuh"

#ifndef GEMV_WARPS
#define GEMV_WARPS 8          // warps (= output rows) per block
#endif
#ifndef GEMV_RPW_SMALL_T
#define GEMV_RPW_SMALL_T 2    // rows per warp for T <= 2 (x read once from L1 for this many rows)
#endif
#define TILE_ELEMS (32 << 20) // dequantized tile: at most this many weights (64 MiB in bf16)

// ---------------------------------------------------------------------------
// dequantization

// Loads the nested code map (double quantization) into shared memory; all threads call it.
__device__ __forceinline__ void load_ncode(float *s_ncode, const float *ncode) {
    if (ncode)
        for (int i = threadIdx.x; i < 256; i += blockDim.x) s_ncode[i] = ncode[i];
    __syncthreads();
}

template <typename OutT>
__device__ __forceinline__ void store_as(OutT *p, float v);
template <> __device__ __forceinline__ void store_as<float>(float *p, float v) { *p = v; }
template <> __device__ __forceinline__ void store_as<__nv_bfloat16>(__nv_bfloat16 *p, float v) { *p = __float2bfloat16_rn(v); }
template <> __device__ __forceinline__ void store_as<__half>(__half *p, float v) { *p = __float2half_rn(v); }

// dst[i] = round(code[q] * absmax) of flat element e0 + i, i < n. `round`: the
// dtype the product is rounded to before it is stored (F32: none).
template <typename OutT>
__global__ void q4_dequant_kernel(const Q4Args a, int64_t e0, int64_t n, OutT *__restrict__ dst, gn_dtype round) {
    __shared__ float s_ncode[256];
    __shared__ float s_code[16];
    if (threadIdx.x < 16) s_code[threadIdx.x] = a.code[threadIdx.x];
    load_ncode(s_ncode, a.qabsmax ? a.nested_code : NULL);
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t e = e0 + i;
        uint8_t byte = a.packed[e >> 1];
        int q = (e & 1) ? (byte & 15) : (byte >> 4);
        float s = q4_absmax(a, s_ncode, e / a.blocksize);
        store_as<OutT>(dst + i, gn_round_to(__fmul_rn(s_code[q], s), round));
    }
}

static void q4_dequant_round(const gn_cuda_q4 *w, int64_t e0, int64_t n, void *dst, gn_dtype out_dtype, gn_dtype round) {
    if (n <= 0) return;
    GN_ASSERT(e0 >= 0 && e0 + n <= w->nelem);
    Q4Args a = q4_args(w);
    unsigned nb = gn_blocks(n, 256);
    cudaStream_t st = gn_cuda_stream();
    if (out_dtype == GN_DTYPE_BF16)
        q4_dequant_kernel<__nv_bfloat16><<<nb, 256, 0, st>>>(a, e0, n, (__nv_bfloat16 *)dst, GN_DTYPE_BF16);
    else if (out_dtype == GN_DTYPE_F16)
        q4_dequant_kernel<__half><<<nb, 256, 0, st>>>(a, e0, n, (__half *)dst, GN_DTYPE_F16);
    else
        q4_dequant_kernel<float><<<nb, 256, 0, st>>>(a, e0, n, (float *)dst, round);
    CUDA_LAUNCHED();
}

extern "C" void gn_cuda_q4_dequant(const gn_cuda_q4 *w, int64_t e0, int64_t n, void *dst, gn_dtype out_dtype) {
    GN_ASSERT(out_dtype == GN_DTYPE_F32 || out_dtype == GN_DTYPE_BF16 || out_dtype == GN_DTYPE_F16);
    q4_dequant_round(w, e0, n, dst, out_dtype, GN_DTYPE_F32);
}

// ---------------------------------------------------------------------------
// GEMV: one warp per output row, up to three matrices with the same input

struct Q4Multi {
    const uint8_t *packed[3];
    const float *absmax[3];
    const uint8_t *qabsmax[3];
    const float *nested_absmax[3];
    const float *nested_code[3];
    int blocksize[3], nested_blocksize[3];
    float offset[3];
    float code[3][16];
    float *out[3];
    int64_t rows[3];
    int64_t row_end[3]; // cumulative warp slots (set by gemv_launch)
    int64_t cols;
    int n;
};

template <typename V>
__device__ __forceinline__ V pick(int i, V a, V b, V c) { return i == 0 ? a : i == 1 ? b : c; }

// x as float: 8 consecutive values from element c of one row
__device__ __forceinline__ void load8(const float *__restrict__ x, float v[8]) {
    float4 a = __ldg((const float4 *)x), b = __ldg((const float4 *)x + 1);
    v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w; v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
}
__device__ __forceinline__ void load8(const __nv_bfloat16 *__restrict__ x, float v[8]) {
    uint4 a = __ldg((const uint4 *)x);
    uint32_t u[4] = {a.x, a.y, a.z, a.w};
#pragma unroll
    for (int i = 0; i < 4; i++) {
        v[2 * i] = __uint_as_float(u[i] << 16);
        v[2 * i + 1] = __uint_as_float(u[i] & 0xffff0000u);
    }
}
__device__ __forceinline__ float load1(const float *x) { return __ldg(x); }
__device__ __forceinline__ float load1(const __nv_bfloat16 *x) { return __bfloat162float(*x); }

// Vectorized path: cols % 32 == 0 and blocksize >= 32, so each lane's 16-byte
// load holds 32 weights of one row that share one absmax block. Per chunk the
// lane sums code[q] * x over the 32 weights and multiplies by absmax once: the
// weights are the f32 dequantized values code[q] * absmax (gn_dequantize_4bit's),
// the scale factored out of the chunk's sum. A warp computes RPW rows, so each
// 32-value stretch of x is read (from L1) once for RPW rows. NT: tokens per
// launch (rows of x; T <= NT are used).
template <int NT, int RPW, typename XT>
__global__ void __launch_bounds__(GEMV_WARPS * 32)
q4_gemv_vec(const Q4Multi mm, const XT *__restrict__ x, int T, float beta) {
    __shared__ float s_code[3][16]; // lanes index it with 16 distinct words: no bank conflicts
    for (int i = threadIdx.x; i < mm.n * 16; i += blockDim.x) s_code[i / 16][i % 16] = mm.code[i / 16][i % 16];
    __syncthreads();
    const int lane = threadIdx.x & 31;
    const int64_t gw = (int64_t)blockIdx.x * GEMV_WARPS + (threadIdx.x >> 5); // warp slot
    if (gw >= mm.row_end[mm.n - 1]) return;
    // row_end counts warp slots here: ceil(rows_i / RPW) per matrix
    const int mi = gw < mm.row_end[0] ? 0 : gw < mm.row_end[1] ? 1 : 2;
    const int64_t r0 = (gw - (mi ? mm.row_end[mi - 1] : 0)) * RPW;
    const int64_t cols = mm.cols, rows = mm.rows[mi];
    const uint8_t *packed = pick(mi, mm.packed[0], mm.packed[1], mm.packed[2]);
    const float *absmax = pick(mi, mm.absmax[0], mm.absmax[1], mm.absmax[2]);
    const uint8_t *qabs = pick(mi, mm.qabsmax[0], mm.qabsmax[1], mm.qabsmax[2]);
    const float *nabs = pick(mi, mm.nested_absmax[0], mm.nested_absmax[1], mm.nested_absmax[2]);
    const int bshift = __ffs(pick(mi, mm.blocksize[0], mm.blocksize[1], mm.blocksize[2])) - 1;
    const int nbs = pick(mi, mm.nested_blocksize[0], mm.nested_blocksize[1], mm.nested_blocksize[2]);
    const float offset = pick(mi, mm.offset[0], mm.offset[1], mm.offset[2]);
    const float *code = s_code[mi];
    const float *ncode = pick(mi, mm.nested_code[0], mm.nested_code[1], mm.nested_code[2]); // 1 KiB: stays in L1
    const int64_t nch = cols >> 5; // 32-weight chunks per row
    // rows past the matrix's end (its last warp slot) reread row r0 and are never written
    int64_t rr[RPW];
#pragma unroll
    for (int j = 0; j < RPW; j++) rr[j] = r0 + j < rows ? r0 + j : r0;
    auto scale_of = [&](int64_t row, int64_t ch) -> float {
        int64_t b = (row * cols + (ch << 5)) >> bshift;
        if (!qabs) return __ldg(absmax + b);
        return __fadd_rn(__fmul_rn(__ldg(ncode + __ldg(qabs + b)), __ldg(nabs + b / nbs)), offset);
    };
    auto chunk_of = [&](int64_t row, int64_t ch) -> uint4 {
        return __ldg((const uint4 *)(packed + ((row * cols) >> 1)) + ch);
    };
    float acc[NT][RPW];
#pragma unroll
    for (int t = 0; t < NT; t++)
#pragma unroll
        for (int j = 0; j < RPW; j++) acc[t][j] = 0.0f;
    // one chunk ahead in flight: packed bytes and the blocks' scales
    int64_t c = lane;
    uint4 p[RPW];
    float s[RPW];
#pragma unroll
    for (int j = 0; j < RPW; j++) {
        p[j] = c < nch ? chunk_of(rr[j], c) : make_uint4(0, 0, 0, 0);
        s[j] = c < nch ? scale_of(rr[j], c) : 0.0f;
    }
    for (; c < nch; c += 32) {
        uint4 pn[RPW];
        float sn[RPW];
        const int more = c + 32 < nch;
#pragma unroll
        for (int j = 0; j < RPW; j++) {
            pn[j] = more ? chunk_of(rr[j], c + 32) : make_uint4(0, 0, 0, 0);
            sn[j] = more ? scale_of(rr[j], c + 32) : 0.0f;
        }
        float part[NT][RPW];
#pragma unroll
        for (int t = 0; t < NT; t++)
#pragma unroll
            for (int j = 0; j < RPW; j++) part[t][j] = 0.0f;
#pragma unroll
        for (int g = 0; g < 4; g++) { // 8 weights per 32-bit word: bytes in memory order, high nibble first
            float xv[NT][8];
#pragma unroll
            for (int t = 0; t < NT; t++)
                if (t < T) load8(x + (int64_t)t * cols + (c << 5) + g * 8, xv[t]);
#pragma unroll
            for (int j = 0; j < RPW; j++) {
                const uint32_t word = g == 0 ? p[j].x : g == 1 ? p[j].y : g == 2 ? p[j].z : p[j].w;
#pragma unroll
                for (int b = 0; b < 4; b++) {
                    const float hi = code[(word >> (8 * b + 4)) & 15u], lo = code[(word >> (8 * b)) & 15u];
#pragma unroll
                    for (int t = 0; t < NT; t++) {
                        if (t < T) {
                            part[t][j] = fmaf(hi, xv[t][2 * b], part[t][j]);
                            part[t][j] = fmaf(lo, xv[t][2 * b + 1], part[t][j]);
                        }
                    }
                }
            }
        }
#pragma unroll
        for (int t = 0; t < NT; t++)
#pragma unroll
            for (int j = 0; j < RPW; j++) acc[t][j] = fmaf(s[j], part[t][j], acc[t][j]);
#pragma unroll
        for (int j = 0; j < RPW; j++) { p[j] = pn[j]; s[j] = sn[j]; }
    }
#pragma unroll
    for (int t = 0; t < NT; t++) {
        if (t >= T) break;
#pragma unroll
        for (int j = 0; j < RPW; j++) {
            float v = gn_warp_sum(acc[t][j]);
            if (lane == 0 && r0 + j < rows) {
                float *o = mm.out[mi] + (int64_t)t * rows + r0 + j;
                *o = beta != 0.0f ? beta * *o + v : v;
            }
        }
    }
}

// Any shape: lanes stride over the row's elements one weight at a time.
template <int NT, typename XT>
__global__ void __launch_bounds__(GEMV_WARPS * 32)
q4_gemv_any(const Q4Multi mm, const XT *__restrict__ x, int T, float beta) {
    __shared__ float s_code[3][16]; // lanes index it with 16 distinct words: no bank conflicts
    for (int i = threadIdx.x; i < mm.n * 16; i += blockDim.x) s_code[i / 16][i % 16] = mm.code[i / 16][i % 16];
    __syncthreads();
    const int lane = threadIdx.x & 31;
    const int64_t gw = (int64_t)blockIdx.x * GEMV_WARPS + (threadIdx.x >> 5);
    if (gw >= mm.row_end[mm.n - 1]) return;
    const int mi = gw < mm.row_end[0] ? 0 : gw < mm.row_end[1] ? 1 : 2;
    const int64_t r = gw - (mi ? mm.row_end[mi - 1] : 0);
    const int64_t cols = mm.cols, rows = mm.rows[mi];
    const uint8_t *packed = pick(mi, mm.packed[0], mm.packed[1], mm.packed[2]);
    const float *absmax = pick(mi, mm.absmax[0], mm.absmax[1], mm.absmax[2]);
    const uint8_t *qabs = pick(mi, mm.qabsmax[0], mm.qabsmax[1], mm.qabsmax[2]);
    const float *nabs = pick(mi, mm.nested_absmax[0], mm.nested_absmax[1], mm.nested_absmax[2]);
    const int bs = pick(mi, mm.blocksize[0], mm.blocksize[1], mm.blocksize[2]);
    const int nbs = pick(mi, mm.nested_blocksize[0], mm.nested_blocksize[1], mm.nested_blocksize[2]);
    const float offset = pick(mi, mm.offset[0], mm.offset[1], mm.offset[2]);
    const float *code = s_code[mi];
    const float *ncode = pick(mi, mm.nested_code[0], mm.nested_code[1], mm.nested_code[2]); // 1 KiB: stays in L1
    float acc[NT];
#pragma unroll
    for (int t = 0; t < NT; t++) acc[t] = 0.0f;
    for (int64_t c = lane; c < cols; c += 32) {
        int64_t e = r * cols + c, b = e / bs;
        uint8_t byte = packed[e >> 1];
        int q = (e & 1) ? (byte & 15) : (byte >> 4);
        float s = qabs ? __fadd_rn(__fmul_rn(__ldg(ncode + qabs[b]), nabs[b / nbs]), offset) : absmax[b];
        float w = __fmul_rn(code[q], s); // gn_dequantize_4bit's value, as the vectorized path
#pragma unroll
        for (int t = 0; t < NT; t++)
            if (t < T) acc[t] = fmaf(w, load1(x + (int64_t)t * cols + c), acc[t]);
    }
#pragma unroll
    for (int t = 0; t < NT; t++) {
        if (t >= T) break;
        float v = gn_warp_sum(acc[t]);
        if (lane == 0) {
            float *o = mm.out[mi] + (int64_t)t * rows + r;
            *o = beta != 0.0f ? beta * *o + v : v;
        }
    }
}

// Launches over warp slots: one row each (any-shape path) or RPW rows each (vectorized:
// 2 rows for T <= 2, where reading x from L1 would otherwise rival the weight stream).
template <int NT, typename XT>
static void gemv_launch(Q4Multi mm, const void *x, int T, float beta, int vec) {
    constexpr int RPW = NT <= 2 ? GEMV_RPW_SMALL_T : 1;
    const int rpw = vec ? RPW : 1;
    int64_t end = 0;
    for (int i = 0; i < 3; i++) {
        if (i < mm.n) end += (mm.rows[i] + rpw - 1) / rpw;
        mm.row_end[i] = end;
    }
    unsigned nb = (unsigned)((end + GEMV_WARPS - 1) / GEMV_WARPS);
    cudaStream_t st = gn_cuda_stream();
    if (vec) q4_gemv_vec<NT, RPW, XT><<<nb, GEMV_WARPS * 32, 0, st>>>(mm, (const XT *)x, T, beta);
    else q4_gemv_any<NT, XT><<<nb, GEMV_WARPS * 32, 0, st>>>(mm, (const XT *)x, T, beta);
    CUDA_LAUNCHED();
}

template <typename XT>
static void gemv_dispatch(const Q4Multi &mm, const void *x, int T, float beta, int vec) {
    if (T <= 1) gemv_launch<1, XT>(mm, x, T, beta, vec);
    else if (T <= 2) gemv_launch<2, XT>(mm, x, T, beta, vec);
    else if (T <= 4) gemv_launch<4, XT>(mm, x, T, beta, vec);
    else gemv_launch<8, XT>(mm, x, T, beta, vec);
}

extern "C" void gn_cuda_q4_gemv_multi(float *const *outs, const void *x, gn_dtype x_dtype, const gn_cuda_q4 *const *ws,
                                      int n, int T, float beta) {
    GN_ASSERT(n >= 1 && n <= 3 && T >= 0 && T <= GN_CUDA_GEMV_MAXT);
    GN_ASSERT(x_dtype == GN_DTYPE_F32 || x_dtype == GN_DTYPE_BF16);
    if (T == 0) return;
    Q4Multi mm;
    memset(&mm, 0, sizeof mm);
    mm.n = n;
    mm.cols = ws[0]->cols;
    int vec = mm.cols % 32 == 0;
    int64_t end = 0;
    for (int i = 0; i < n; i++) {
        const gn_cuda_q4 *w = ws[i];
        GN_ASSERT(w->cols == mm.cols);
        mm.packed[i] = w->packed;
        mm.absmax[i] = w->absmax;
        mm.qabsmax[i] = w->qabsmax;
        mm.nested_absmax[i] = w->nested_absmax;
        mm.nested_code[i] = w->qabsmax ? w->nested_code : NULL;
        mm.blocksize[i] = w->blocksize;
        mm.nested_blocksize[i] = w->nested_blocksize > 0 ? w->nested_blocksize : 256;
        mm.offset[i] = w->offset;
        memcpy(mm.code[i], w->code, sizeof mm.code[i]);
        mm.out[i] = outs[i];
        mm.rows[i] = w->rows;
        end += w->rows;
        mm.row_end[i] = end;
        vec &= w->blocksize >= 32 && ((uintptr_t)w->packed % 16) == 0;
    }
    for (int i = n; i < 3; i++) mm.row_end[i] = end;
    if (end == 0 || mm.cols == 0) { // empty product: out = beta * out (0 columns sum to 0)
        for (int i = 0; i < n && beta == 0.0f; i++) gn_cuda_memset0(outs[i], sizeof(float) * (size_t)(T * ws[i]->rows));
        return;
    }
    vec &= ((uintptr_t)x % 16) == 0; // rows of x start 16-byte aligned when x does (cols % 32 == 0)
    if (x_dtype == GN_DTYPE_BF16) gemv_dispatch<__nv_bfloat16>(mm, x, T, beta, vec);
    else gemv_dispatch<float>(mm, x, T, beta, vec);
}

extern "C" void gn_cuda_q4_gemv(float *out, const void *x, gn_dtype x_dtype, const gn_cuda_q4 *w, int T, float beta) {
    float *outs[1] = {out};
    const gn_cuda_q4 *ws[1] = {w};
    gn_cuda_q4_gemv_multi(outs, x, x_dtype, ws, 1, T, beta);
}

// ---------------------------------------------------------------------------
// bf16 dense GEMV with f32 activations (the CPU's gn_dot_bf16_f32)

template <int NT>
__global__ void __launch_bounds__(GEMV_WARPS * 32)
bf16_gemv(float *__restrict__ out, const float *__restrict__ x, const uint16_t *__restrict__ W, int64_t rows,
          int64_t cols, int T, float beta, int vec) {
    const int lane = threadIdx.x & 31;
    const int64_t r = (int64_t)blockIdx.x * GEMV_WARPS + (threadIdx.x >> 5);
    if (r >= rows) return;
    const uint16_t *wr = W + r * cols;
    float acc[NT];
#pragma unroll
    for (int t = 0; t < NT; t++) acc[t] = 0.0f;
    if (vec) { // cols % 8 == 0, aligned: 16-byte loads of 8 weights
        for (int64_t c = lane; c < (cols >> 3); c += 32) {
            float w[8];
            load8((const __nv_bfloat16 *)wr + (c << 3), w);
#pragma unroll
            for (int t = 0; t < NT; t++) {
                if (t < T) {
                    float xv[8];
                    load8(x + (int64_t)t * cols + (c << 3), xv);
#pragma unroll
                    for (int i = 0; i < 8; i++) acc[t] = fmaf(w[i], xv[i], acc[t]);
                }
            }
        }
    } else {
        for (int64_t c = lane; c < cols; c += 32) {
            float w = gn_bf16_bits_to_f32(wr[c]);
#pragma unroll
            for (int t = 0; t < NT; t++)
                if (t < T) acc[t] = fmaf(w, __ldg(x + (int64_t)t * cols + c), acc[t]);
        }
    }
#pragma unroll
    for (int t = 0; t < NT; t++) {
        if (t >= T) break;
        float v = gn_warp_sum(acc[t]);
        if (lane == 0) {
            float *o = out + (int64_t)t * rows + r;
            *o = beta != 0.0f ? beta * *o + v : v;
        }
    }
}

static void bf16_gemv_launch(float *out, const float *x, const uint16_t *W, int64_t rows, int64_t cols, int T, float beta) {
    int vec = cols % 8 == 0 && ((uintptr_t)W % 16) == 0 && ((uintptr_t)x % 16) == 0;
    unsigned nb = (unsigned)((rows + GEMV_WARPS - 1) / GEMV_WARPS);
    cudaStream_t st = gn_cuda_stream();
    if (T <= 1) bf16_gemv<1><<<nb, GEMV_WARPS * 32, 0, st>>>(out, x, W, rows, cols, T, beta, vec);
    else if (T <= 2) bf16_gemv<2><<<nb, GEMV_WARPS * 32, 0, st>>>(out, x, W, rows, cols, T, beta, vec);
    else if (T <= 4) bf16_gemv<4><<<nb, GEMV_WARPS * 32, 0, st>>>(out, x, W, rows, cols, T, beta, vec);
    else bf16_gemv<8><<<nb, GEMV_WARPS * 32, 0, st>>>(out, x, W, rows, cols, T, beta, vec);
    CUDA_LAUNCHED();
}

// ---------------------------------------------------------------------------
// cuBLAS products (row-major callers; cuBLAS is column-major: a row-major
// (R, C) matrix is a column-major (C, R) one with leading dimension C)

static size_t align256(size_t n) { return (n + 255) & ~(size_t)255; }

// out (T, rows) = beta out + x @ W^T with W given as a bf16 tile of nr rows starting at row r0
static void gemm_bf16_tile(float *out, int64_t rows_total, const __nv_bfloat16 *xb, const __nv_bfloat16 *tile,
                           int64_t r0, int64_t nr, int64_t cols, int64_t T, float beta) {
    float alpha = 1.0f;
    CUBLAS_CHECK(cublasGemmEx(gn_cuda_blas(), CUBLAS_OP_T, CUBLAS_OP_N, (int)nr, (int)T, (int)cols, &alpha, tile,
                              CUDA_R_16BF, (int)cols, xb, CUDA_R_16BF, (int)cols, &beta, out + r0, CUDA_R_32F,
                              (int)rows_total, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

extern "C" void gn_cuda_f32_to_bf16(uint16_t *dst, const float *src, int64_t n); // ops.cu

extern "C" void gn_cuda_q4_matmul(float *out, const float *x, const gn_cuda_q4 *w, int64_t T, float beta) {
    if (T <= 0) return;
    if (T <= GN_CUDA_GEMV_MAXT) { gn_cuda_q4_gemv(out, x, GN_DTYPE_F32, w, (int)T, beta); return; }
    const int64_t rows = w->rows, cols = w->cols;
    if (rows == 0) return;
    if (cols == 0) { if (beta == 0.0f) gn_cuda_memset0(out, sizeof(float) * (size_t)(T * rows)); return; }
    int64_t tr = TILE_ELEMS / cols;
    if (tr < 1) tr = 1;
    if (tr > rows) tr = rows;
    const int bf = w->wdtype == GN_DTYPE_BF16;
    const size_t es = bf ? 2 : 4;
    size_t xbytes = bf ? align256((size_t)(T * cols) * 2) : 0;
    char *scr = (char *)gn_cuda_scratch(xbytes + (size_t)(tr * cols) * es);
    void *tile = scr + xbytes;
    if (bf) gn_cuda_f32_to_bf16((uint16_t *)scr, x, T * cols);
    for (int64_t r0 = 0; r0 < rows; r0 += tr) {
        int64_t nr = rows - r0 < tr ? rows - r0 : tr;
        if (bf) {
            q4_dequant_round(w, r0 * cols, nr * cols, tile, GN_DTYPE_BF16, GN_DTYPE_BF16);
            gemm_bf16_tile(out, rows, (const __nv_bfloat16 *)scr, (const __nv_bfloat16 *)tile, r0, nr, cols, T, beta);
        } else {
            q4_dequant_round(w, r0 * cols, nr * cols, tile, GN_DTYPE_F32, w->wdtype);
            float alpha = 1.0f;
            CUBLAS_CHECK(cublasSgemm(gn_cuda_blas(), CUBLAS_OP_T, CUBLAS_OP_N, (int)nr, (int)T, (int)cols, &alpha,
                                     (const float *)tile, (int)cols, x, (int)cols, &beta, out + r0, (int)rows));
        }
    }
}

extern "C" void gn_cuda_q4_matmul_nn(float *dx, const float *dy, const gn_cuda_q4 *w, int64_t T, float beta) {
    if (T <= 0) return;
    const int64_t rows = w->rows, cols = w->cols;
    if (cols == 0) return;
    if (rows == 0) { if (beta == 0.0f) gn_cuda_memset0(dx, sizeof(float) * (size_t)(T * cols)); return; }
    int64_t tr = TILE_ELEMS / cols;
    if (tr < 1) tr = 1;
    if (tr > rows) tr = rows;
    const int bf = w->wdtype == GN_DTYPE_BF16;
    const size_t es = bf ? 2 : 4;
    size_t ybytes = bf ? align256((size_t)(T * rows) * 2) : 0;
    char *scr = (char *)gn_cuda_scratch(ybytes + (size_t)(tr * cols) * es);
    void *tile = scr + ybytes;
    if (bf) gn_cuda_f32_to_bf16((uint16_t *)scr, dy, T * rows);
    for (int64_t r0 = 0; r0 < rows; r0 += tr) {
        int64_t nr = rows - r0 < tr ? rows - r0 : tr;
        float alpha = 1.0f, b = r0 == 0 ? beta : 1.0f;
        // dx_cm (cols, T) += tile_cm (cols, nr) * dy_cm[r0 : r0 + nr, :]
        if (bf) {
            q4_dequant_round(w, r0 * cols, nr * cols, tile, GN_DTYPE_BF16, GN_DTYPE_BF16);
            CUBLAS_CHECK(cublasGemmEx(gn_cuda_blas(), CUBLAS_OP_N, CUBLAS_OP_N, (int)cols, (int)T, (int)nr, &alpha, tile,
                                      CUDA_R_16BF, (int)cols, (const __nv_bfloat16 *)scr + r0, CUDA_R_16BF, (int)rows,
                                      &b, dx, CUDA_R_32F, (int)cols, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
        } else {
            q4_dequant_round(w, r0 * cols, nr * cols, tile, GN_DTYPE_F32, w->wdtype);
            CUBLAS_CHECK(cublasSgemm(gn_cuda_blas(), CUBLAS_OP_N, CUBLAS_OP_N, (int)cols, (int)T, (int)nr, &alpha,
                                     (const float *)tile, (int)cols, dy + r0, (int)rows, &b, dx, (int)cols));
        }
    }
}

extern "C" void gn_cuda_mat_matmul(float *out, const float *x, const gn_cuda_mat *w, int64_t T, float beta) {
    if (T <= 0 || w->rows == 0) return;
    const int64_t rows = w->rows, cols = w->cols;
    if (cols == 0) { if (beta == 0.0f) gn_cuda_memset0(out, sizeof(float) * (size_t)(T * rows)); return; }
    float alpha = 1.0f;
    if (w->dtype == GN_DTYPE_F32) {
        CUBLAS_CHECK(cublasSgemm(gn_cuda_blas(), CUBLAS_OP_T, CUBLAS_OP_N, (int)rows, (int)T, (int)cols, &alpha,
                                 (const float *)w->data, (int)cols, x, (int)cols, &beta, out, (int)rows));
        return;
    }
    GN_ASSERT(w->dtype == GN_DTYPE_BF16);
    if (T <= GN_CUDA_GEMV_MAXT) { bf16_gemv_launch(out, x, (const uint16_t *)w->data, rows, cols, (int)T, beta); return; }
    uint16_t *xb = (uint16_t *)gn_cuda_scratch((size_t)(T * cols) * 2);
    gn_cuda_f32_to_bf16(xb, x, T * cols);
    gemm_bf16_tile(out, rows, (const __nv_bfloat16 *)xb, (const __nv_bfloat16 *)w->data, 0, rows, cols, T, beta);
}

extern "C" void gn_cuda_mat_matmul_nn(float *dx, const float *dy, const gn_cuda_mat *w, int64_t T, float beta) {
    if (T <= 0 || w->cols == 0) return;
    const int64_t rows = w->rows, cols = w->cols;
    if (rows == 0) { if (beta == 0.0f) gn_cuda_memset0(dx, sizeof(float) * (size_t)(T * cols)); return; }
    float alpha = 1.0f;
    if (w->dtype == GN_DTYPE_F32) {
        CUBLAS_CHECK(cublasSgemm(gn_cuda_blas(), CUBLAS_OP_N, CUBLAS_OP_N, (int)cols, (int)T, (int)rows, &alpha,
                                 (const float *)w->data, (int)cols, dy, (int)rows, &beta, dx, (int)cols));
        return;
    }
    GN_ASSERT(w->dtype == GN_DTYPE_BF16);
    uint16_t *yb = (uint16_t *)gn_cuda_scratch((size_t)(T * rows) * 2);
    gn_cuda_f32_to_bf16(yb, dy, T * rows);
    CUBLAS_CHECK(cublasGemmEx(gn_cuda_blas(), CUBLAS_OP_N, CUBLAS_OP_N, (int)cols, (int)T, (int)rows, &alpha, w->data,
                              CUDA_R_16BF, (int)cols, yb, CUDA_R_16BF, (int)rows, &beta, dx, CUDA_R_32F, (int)cols,
                              CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

extern "C" void gn_cuda_sgemm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda, const float *B,
                              int ldb, float beta, float *C, int ldc) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0) { // C = beta C
        GN_ASSERT(beta == 0.0f || beta == 1.0f);
        if (beta == 0.0f)
            for (int i = 0; i < M; i++) gn_cuda_memset0(C + (size_t)i * ldc, sizeof(float) * (size_t)N);
        return;
    }
    // row-major C (M, N) is column-major C^T (N, M): C^T = op(B)^T op(A)^T, same flags
    CUBLAS_CHECK(cublasSgemm(gn_cuda_blas(), tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K,
                             &alpha, B, ldb, A, lda, &beta, C, ldc));
}
