// common.cuh — what every .cu file of the CUDA backend shares: the checked-call
// macros, the library's stream and cuBLAS handle, launch helpers, and the exact
// float arithmetic the kernels use where they must match the CPU bit for bit.
#ifndef GN_CUDA_COMMON_CUH
#define GN_CUDA_COMMON_CUH

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

extern "C" {
#include "../core/common.h"
#include "cuda.h"
}

// A failed call is a bug or a lost device: say where, then abort (runtime.cu).
void gn_cuda_die(const char *file, int line, const char *call, const char *msg);
#define CUDA_CHECK(call) do { \
        cudaError_t e_ = (call); \
        if (e_ != cudaSuccess) gn_cuda_die(__FILE__, __LINE__, #call, cudaGetErrorString(e_)); \
    } while (0)
#define CUBLAS_CHECK(call) do { \
        cublasStatus_t s_ = (call); \
        if (s_ != CUBLAS_STATUS_SUCCESS) gn_cuda_die(__FILE__, __LINE__, #call, cublasGetStatusString(s_)); \
    } while (0)
// after a launch: configuration errors show up here, faults at the next sync
#define CUDA_LAUNCHED() CUDA_CHECK(cudaGetLastError())

cudaStream_t gn_cuda_stream(void);
cublasHandle_t gn_cuda_blas(void);

static inline unsigned gn_blocks(int64_t n, int per) {
    int64_t b = (n + per - 1) / per;
    return (unsigned)(b < 1 ? 1 : b > 65535 * 16 ? 65535 * 16 : b);
}

// ---------------------------------------------------------------------------
// exact arithmetic: nvcc contracts a*b+c into one FMA by default; the places
// that reproduce a CPU result bit for bit spell out each rounding instead.

__device__ __forceinline__ float gn_round_to(float v, gn_dtype dt) {
    if (dt == GN_DTYPE_BF16) return __bfloat162float(__float2bfloat16_rn(v));
    if (dt == GN_DTYPE_F16) return __half2float(__float2half_rn(v));
    return v;
}

__device__ __forceinline__ float gn_bf16_bits_to_f32(uint16_t h) { return __uint_as_float((uint32_t)h << 16); }

// warp reductions (all 32 lanes take part)
__device__ __forceinline__ float gn_warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float gn_warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Block reductions (blockDim.x a multiple of 32, <= 1024): every thread gets the
// sum / max of v over the block; sh holds one value per warp.
template <typename V>
__device__ __forceinline__ V gn_block_sum(V v, V *sh) {
    const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    __syncthreads(); // sh may still be read by a previous reduction
    if (lane == 0) sh[wid] = v;
    __syncthreads();
    V r = 0;
    for (int i = 0; i < nw; i++) r += sh[i];
    return r;
}
__device__ __forceinline__ float gn_block_max(float v, float *sh) {
    const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = gn_warp_max(v);
    __syncthreads();
    if (lane == 0) sh[wid] = v;
    __syncthreads();
    float r = -INFINITY;
    for (int i = 0; i < nw; i++) r = fmaxf(r, sh[i]);
    return r;
}

// The 4-bit weight's arguments as kernels take them (by value).
struct Q4Args {
    const uint8_t *packed;
    const float *absmax;
    const uint8_t *qabsmax;
    const float *nested_absmax;
    const float *nested_code;
    int64_t rows, cols, nelem;
    int blocksize, nested_blocksize;
    float offset;
    gn_dtype wdtype;
    float code[16];
};

static inline Q4Args q4_args(const gn_cuda_q4 *w) {
    Q4Args a;
    a.packed = w->packed;
    a.absmax = w->absmax;
    a.qabsmax = w->qabsmax;
    a.nested_absmax = w->nested_absmax;
    a.nested_code = w->nested_code;
    a.rows = w->rows;
    a.cols = w->cols;
    a.nelem = w->nelem;
    a.blocksize = w->blocksize;
    a.nested_blocksize = w->nested_blocksize;
    a.offset = w->offset;
    a.wdtype = w->wdtype;
    for (int i = 0; i < 16; i++) a.code[i] = w->code[i];
    return a;
}

// absmax of block b: stored, or rebuilt from the double quantization exactly as
// nf4.c's rebuild_absmax (two float32 roundings, no FMA). ncode: the 256-entry
// nested map (shared memory in the kernels).
__device__ __forceinline__ float q4_absmax(const Q4Args &a, const float *ncode, int64_t b) {
    if (!a.qabsmax) return a.absmax[b];
    float p = __fmul_rn(ncode[a.qabsmax[b]], a.nested_absmax[b / a.nested_blocksize]);
    return __fadd_rn(p, a.offset);
}

#endif
