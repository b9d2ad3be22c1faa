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

#include <immintrin.h> // __m512i in a declaration below (the types exist without target flags)

typedef enum { GN_SIMD_SCALAR = 0, GN_SIMD_AVX2 = 1, GN_SIMD_AVX512 = 2 } gn_simd;
gn_simd gn_simd_level(void);          // chosen once: CPU support, lowered by GN_SIMD env
int64_t gn_cpu_l2_bytes(void);       // one core's L2 (CPUID through sysconf; 1 MiB if unknown)
void gn_simd_force(gn_simd level);    // for tests: pick a path (clamped to what the CPU has)

// A weight matrix (OC, IC) in F32, BF16, or Q4_0 / Q4_1 / Q8_0 (ggml's blocks of 32 along a
// row: IC % 32 == 0; a GGUF's matrices kept as the file has them), row-major; or
// 4-bit (dtype GN_DTYPE_NF4/GN_DTYPE_FP4) with `q4` pointing at its quantization state.
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
// ggml's blocks of 32 weights along a row (Q4_0, Q4_1, Q8_0: a GGUF's matrices kept as the
// file has them): bytes a block (0 for other dtypes); row r of w; the dot of n = 32k weights
// at w with x, each weight's value as ggml's dequantizer computes it (_ref: those values
// times x summed in double; the kernel factors the block scale and offset out of the sums)
#define GN_QBLOCK 32
int gn_blocks_bytes(gn_dtype dt);
static inline const uint8_t *gn_blocks_row(const gn_mat *w, int64_t r) {
    return (const uint8_t *)w->data + r * (w->cols / GN_QBLOCK) * gn_blocks_bytes(w->dtype);
}
float gn_dot_blocks_f32(gn_dtype dt, const uint8_t *w, const float *x, int64_t n);
float gn_dot_blocks_f32_ref(gn_dtype dt, const uint8_t *w, const float *x, int64_t n);

// out (T, OC) = inp (T, IC) @ W^T. Multithreaded. out must not alias inp.
void gn_matmul(float *out, const float *inp, const gn_mat *w, int64_t T);
void gn_matmul_ref(float *out, const float *inp, const gn_mat *w, int64_t T);

// bf16 products on AVX512_BF16 (gemm_bf16.c): inputs rounded to bf16, float32 sums.
// Available when the CPU has AVX512_BF16, the SIMD level is AVX-512 and
// GN_NF4_NO_BF16DOT is unset. C (M, N) = alpha op(A) op(B) + beta C, row-major;
// ta: A stored (K, M), tb: B stored (N, K); beta 0: C not read.
int gn_bf16_gemm_available(void);
void gn_gemm_bf16(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                  const float *B, int64_t ldb, float beta, float *C, int64_t ldc);
void gn_gemm_bf16_ref(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                      const float *B, int64_t ldb, float beta, float *C, int64_t ldc);
// The same with B already bf16 (a bf16 weight matrix), read as it is stored.
void gn_gemm_bf16_b16(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                      const uint16_t *B, int64_t ldb, float beta, float *C, int64_t ldc);
// The same with B (K, N) made by the caller, one panel at a time: pack(ctx, pk, n0, nr, k0, kc)
// fills pk[kp * 32 + j] (kp < kc / 2, j < 32) with the bf16 pair (B[k0 + 2kp][n0 + j],
// B[k0 + 2kp + 1][n0 + j]), zeros past K and past column n0 + nr (kc even; called from
// several threads at once, each with its own pk). For B that is a 4-bit weight.
typedef void (*gn_bf16_packer)(const void *ctx, uint32_t *pk, int64_t n0, int nr, int64_t k0, int64_t kc);
void gn_gemm_bf16_packed(int ta, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                         gn_bf16_packer pack, const void *ctx, float beta, float *C, int64_t ldc);
// The pieces, for other packers (nf4_kernels.c): an 8 x 32 tile of C from A as bf16
// pairs (row i, pair k at a[i*sm + k*sk]) and a panel pk[k][32] of B pairs; first:
// C = alpha acc + beta C, else C += alpha acc. nr <= 32 columns, mr <= 8 rows stored.
#define GN_BF16_NR 32
#define GN_BF16_MR 8
void gn_bf16_kernel(const uint32_t *a, int64_t sm, int64_t sk, int mr, const uint32_t *pk, int64_t kp, float *c,
                    int64_t ldc, int nr, float alpha, float beta, int first);
// Panel packing: v[j] holds 16 bf16 pairs (k pairs kp0..kp0+15) of panel column j0 + j,
// j < 16; stores the first np pairs as pk[(kp0 + c) * 32 + j0 + j] (a transpose in
// registers). For AVX512_BF16 callers.
void gn_bf16_pack16(uint32_t *pk, int64_t kp0, int j0, __m512i v[16], int np);
// AMX (Intel Sapphire Rapids and later): the same products on tiles (tdpbf16ps: 16 x 16 sums of
// 16 x 16 pairs a tile multiply). gn_amx_mode(): 0 off; 1 tiles (the CPU has AMX-TILE and
// AMX-BF16, the OS gave this process the tile state, AVX512_BF16 is on, and GN_SIMD is unset or
// "amx"); 2 emulated (GN_AMX_EMULATE=1 on a CPU without AMX: the same layouts and loops with each
// tile instruction done in C, so the tests check the AMX path's addressing on any AVX512_BF16 CPU).
int gn_amx_mode(void);
// A as tiles: pairs row i, pair k at a[i * sm + k] -> at, row tiles of 16 rows by k tiles of 16
// pairs (each 1 KiB, rows 64 bytes apart), tile (it, kt) at at + (it * nkt + kt) * 256, zeros past
// M and KP; nkt = (KP + 15) / 16. at holds ((M + 15) / 16) * nkt * 256 words.
void gn_bf16_amx_pack_a(const uint32_t *a, int64_t sm, int64_t M, int64_t KP, uint32_t *at);
// An up to 32 x 32 block of C from A's tiles (row i0, a multiple of 16; pair kp0, a multiple of
// 16) and a panel pk[kp][32] whose rows kp .. (kp + 15) / 16 * 16 - 1 are zeros (they are read);
// first, alpha, beta as gn_bf16_kernel; mr <= 32 rows, nr <= 32 columns stored. Only where
// gn_amx_mode() has returned nonzero.
void gn_bf16_amx_block(const uint32_t *at, int64_t nkt, int64_t i0, int64_t kp0, int mr, const uint32_t *pk, int64_t kp,
                       float *c, int64_t ldc, int nr, float alpha, float beta, int first);
// n rounds of four tile products on tiles loaded once (the probe of the AMX bf16 peak: 4 x 16 x 16
// x 32 multiply-adds a round); only where gn_amx_mode() is 1
void gn_bf16_amx_spin(int64_t n);
// Products against one op(B) (K, N) packed once and used many times (attention's keys and
// values): gn_bf16_panels_words(N, K) 32-bit words (64-byte aligned) filled by
// gn_bf16_pack_panels (tb: B stored (N, K)); gn_gemm_bf16_panels then computes C (M, N) = alpha
// op(A) (M, K) B[k0 : k0 + K, 0 : N] + beta C on the calling thread alone (k0 a multiple of 32,
// k0 + K <= bK, N at most the packed N; AMX tiles where gn_amx_mode() and M >= 16).
int64_t gn_bf16_panels_words(int64_t N, int64_t K);
void gn_bf16_pack_panels(int tb, int64_t N, int64_t K, const float *B, int64_t ldb, uint32_t *bp);
void gn_gemm_bf16_panels(int ta, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                         const uint32_t *bp, int64_t bK, int64_t k0, float beta, float *C, int64_t ldc);
// n floats as bf16 pairs (n odd: a zero pads the last pair)
void gn_bf16_pairs_row(const float *x, int64_t n, uint32_t *dst);

// C (M, N) = alpha op(A) op(B) + beta C, row-major; ta: A stored (K, M), tb: B stored (N, K);
// beta 0: C not read. Float32 sgemm, each OpenMP thread on its own stretch of C's rows
// (GN_GEMM_COLS: of its columns, for a C with few rows), one thread pool as gn_matmul.
// GN_GEMM_BF16: bf16 products (gn_gemm_bf16) where gn_bf16_gemm_available(), float32
// otherwise. For the LoRA branch's products (lora/apply.c), forward and backward.
enum { GN_GEMM_COLS = 1, GN_GEMM_BF16 = 2 };
void gn_gemm(unsigned flags, int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
             const float *B, int64_t ldb, float beta, float *C, int64_t ldc);

// out (T, IC) = dy (T, OC) @ W: the input gradient of a linear layer (no
// weight gradient). Multithreaded over IC. out must not alias dy.
void gn_matmul_nn(float *out, const float *dy, const gn_mat *w, int64_t T);
// Rows [r0, r0+n) of an F32, BF16 or ggml-block W as float32 into dst (n, IC). 4-bit weights
// live a layer up: gn_linear_rows_f32 (model/llama.h).
void gn_mat_rows_f32(const gn_mat *w, int64_t r0, int64_t n, float *dst);
// The whole of such a W rounded to bf16, in a new buffer (the caller frees it).
uint16_t *gn_mat_to_bf16(const gn_mat *w);

// out (T, C) = inp * rsqrt(mean(inp^2) + eps) * weight (C). out may alias inp.
void gn_rmsnorm(float *out, const float *inp, const float *weight, int64_t T, int64_t C, float eps);
// In place: x = silu(x) * y, n elements.
void gn_silu_mul(float *x, const float *y, int64_t n);
// In place softmax over n elements (vectorized exp; _ref: libm expf, double sum).
void gn_softmax(float *x, int64_t n);
void gn_softmax_ref(float *x, int64_t n);
// In place x = exp(x), n elements (vectorized; relative error < 2e-7).
void gn_exp_inplace(float *x, int64_t n);
// OpenBLAS runs single-threaded inside our OpenMP regions (one thread pool).
void gn_blas_single_thread(void);

// ----------------------------------------------------------------------------
// attention (attention.c)

// Decode: `grp` query heads (vectors at q + g*qstride) that share one KV head,
// against cache positions 0..n-1 (rows at k + j*kvstride, v + j*kvstride).
// Writes the unnormalized partial softmax: m[g] = max score, l[g] = sum of
// exp(score - m[g]), o[g*hs..] = sum_j exp(score_j - m[g]) v_j. scores are
// scale * q.k; sc is scratch of grp*n floats. n == 0 gives m = -inf, l = 0, o = 0.
// This is the scalar definition with row-major keys; the kernels below read the caches'
// tiled keys.
void gn_attn_partial_ref(const float *q, int64_t qstride, int grp, const float *k, const float *v, int64_t kvstride,
                         int n, int hs, float scale, float *sc, float *m, float *l, float *o);
// The same with a bf16 cache (k, v as bf16 bit patterns; the products of their float32
// values) whose keys are tiled for this kernel: positions in tiles of GN_KT, and inside
// a tile each KV head's hs dims as hs/2 rows of (GN_KT positions x 2 dims), so one
// 64-byte load holds one pair of dims of 16 positions and the scores of 16 positions
// need no horizontal sums. gn_kt_at gives the place of (position j, KV head h, dim d)
// in a layer whose tiles are tile_stride elements apart (GN_KT * NKV * hs with the heads'
// tiles interleaved; the model's cache passes each head's run on its own: model/kvcache.h).
// The values are tiled too, each KV head's part of a tile its GN_KT rows of hs dims (gn_vt_at),
// so the values of a tile are one contiguous run per head (not a head's 256 bytes of each
// position, 8 KiB apart at 7B shapes). Here kt is this KV head's key tile 0
// (gn_kt_at(0, h, 0, ...)), v its value tile 0 (gn_vt_at(0, h, 0, ...)), value tiles
// vtile_stride elements apart, and the stretch is positions j0..j0+n-1 with j0 a multiple of GN_KT.
#define GN_KT 16
static inline int64_t gn_kt_at(int64_t j, int64_t h, int64_t d, int64_t hs, int64_t tile_stride) {
    return (j / GN_KT) * tile_stride + h * GN_KT * hs + (d / 2) * (2 * GN_KT) + (j % GN_KT) * 2 + (d & 1);
}
static inline int64_t gn_vt_at(int64_t j, int64_t h, int64_t d, int64_t hs, int64_t tile_stride) {
    return (j / GN_KT) * tile_stride + h * GN_KT * hs + (j % GN_KT) * hs + d;
}
void gn_attn_partial_bf16(const float *q, int64_t qstride, int grp, const uint16_t *kt, int64_t tile_stride,
                          const uint16_t *v, int64_t vtile_stride, int j0, int n, int hs, float scale, float *sc, float *m,
                          float *l, float *o);
void gn_attn_partial_bf16_ref(const float *q, int64_t qstride, int grp, const uint16_t *kt, int64_t tile_stride,
                              const uint16_t *v, int64_t vtile_stride, int j0, int n, int hs, float scale, float *sc,
                              float *m, float *l, float *o);
// The same for a float32 cache (the decode path's): its keys tiled with one dim per
// 64-byte row of 16 positions (pairs of rows as the bf16 layout's pairs of dims), the
// place of (j, h, d) at gn_kt_at_f32; hs even.
static inline int64_t gn_kt_at_f32(int64_t j, int64_t h, int64_t d, int64_t hs, int64_t tile_stride) {
    return (j / GN_KT) * tile_stride + h * GN_KT * hs + d * GN_KT + j % GN_KT;
}
void gn_attn_partial_f32t(const float *q, int64_t qstride, int grp, const float *kt, int64_t tile_stride,
                          const float *v, int64_t vtile_stride, int j0, int n, int hs, float scale, float *sc, float *m,
                          float *l, float *o);
void gn_attn_partial_f32t_ref(const float *q, int64_t qstride, int grp, const float *kt, int64_t tile_stride,
                              const float *v, int64_t vtile_stride, int j0, int n, int hs, float scale, float *sc,
                              float *m, float *l, float *o);
// Merges nparts partials of one head (part p's m, l at m[p*part_stride], its o at
// o + p*part_stride*hs) into the normalized attention output out (hs).
void gn_attn_merge(int nparts, const float *m, const float *l, const float *o, int64_t part_stride, int hs, float *out);
// A block of consecutive query rows of one head (the attention op's task,
// model/attention.c): row i is at position pos0 + i and attends to positions
// 0..pos0+i. out rows at stride ostride. S (nrows rows at stride sstride >=
// pos0 + nrows) receives the probabilities, zero from the diagonal to column
// pos0 + nrows. Uses OpenBLAS sgemm in the calling thread (call
// gn_blas_single_thread() once before).
void gn_attn_causal_rows(float *out, int64_t ostride, const float *q, int64_t qstride, const float *k, const float *v,
                         int64_t kvstride, int nrows, int pos0, int hs, float scale, float *S, int64_t sstride);
void gn_attn_causal_rows_ref(float *out, int64_t ostride, const float *q, int64_t qstride, const float *k,
                             const float *v, int64_t kvstride, int nrows, int pos0, int hs, float scale);

#endif
