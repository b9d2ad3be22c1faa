/*
 * kernels.h — CPU compute kernels for the forward pass, with runtime SIMD
 * dispatch (scalar, AVX2+FMA, AVX-512). Every optimized kernel has a plain
 * scalar reference `*_ref` beside it; tests/test_kernels.c compares them on
 * random inputs of awkward sizes.
 *
 * Shapes follow llm.c's letters: T tokens, IC input features, OC output
 * features. Weights are row-major (OC, IC), as HF's nn.Linear stores them.
 */
#ifndef GN_KERNELS_H
#define GN_KERNELS_H

#include "../core/common.h"

typedef enum { GN_SIMD_SCALAR = 0, GN_SIMD_AVX2 = 1, GN_SIMD_AVX512 = 2 } gn_simd;
gn_simd gn_simd_level(void);          // chosen once: CPU support, lowered by GN_SIMD env
void gn_simd_force(gn_simd level);    // for tests: pick a path (clamped to what the CPU has)

// A weight matrix (OC, IC) in F32 or BF16, row-major; or 4-bit (dtype
// GN_DTYPE_NF4/GN_DTYPE_FP4) with `q4` pointing at its quantization state.
typedef struct {
    gn_dtype dtype;
    int64_t rows, cols;   // OC, IC
    const void *data;
    const void *q4;       // gn_quant4_state* for 4-bit weights, else NULL
} gn_mat;

// dot products of n elements
float gn_dot_f32(const float *a, const float *b, int64_t n);
float gn_dot_f32_ref(const float *a, const float *b, int64_t n);
float gn_dot_bf16_f32(const uint16_t *w, const float *x, int64_t n);   // w bf16, x f32
float gn_dot_bf16_f32_ref(const uint16_t *w, const float *x, int64_t n);

// out (T, OC) = inp (T, IC) @ W^T. Multithreaded. out must not alias inp.
void gn_matmul(float *out, const float *inp, const gn_mat *w, int64_t T);
void gn_matmul_ref(float *out, const float *inp, const gn_mat *w, int64_t T);

// out (T, IC) = dy (T, OC) @ W: the input gradient of a linear layer (no
// weight gradient). Multithreaded over IC. out must not alias dy.
void gn_matmul_nn(float *out, const float *dy, const gn_mat *w, int64_t T);
// Rows [r0, r0+n) of W as float32 into dst (n, IC).
void gn_mat_rows_f32(const gn_mat *w, int64_t r0, int64_t n, float *dst);
// Set by the quant module: row conversion for 4-bit weights (keeps tensor/
// free of a dependency on quant/).
extern void (*gn_mat_rows_f32_hook)(const gn_mat *w, int64_t r0, int64_t n, float *dst);

// out (T, C) = inp * rsqrt(mean(inp^2) + eps) * weight (C). out may alias inp.
void gn_rmsnorm(float *out, const float *inp, const float *weight, int64_t T, int64_t C, float eps);
// In place: x = silu(x) * y, n elements.
void gn_silu_mul(float *x, const float *y, int64_t n);
// In place softmax over n elements.
void gn_softmax(float *x, int64_t n);

#endif
