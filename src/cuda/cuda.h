/*
 * cuda.h — the CUDA backend's kernels behind a C interface (built by `make CUDA=1`).
 *
 * Every function here runs on the device the library initialized (gn_cuda_init)
 * on one stream of its own, in order; pointers named d_* or documented "device"
 * are device memory (gn_cuda_malloc). Launches are asynchronous: results are
 * ready after gn_cuda_sync() or after a download (gn_cuda_download waits).
 * Shapes follow kernels.h: T tokens (rows of activations), IC input features,
 * OC output features; weights are row-major (OC, IC) as HF's nn.Linear stores
 * them; activations are row-major (T, C) float32 unless a dtype says otherwise.
 *
 * Each kernel has a CPU definition it is tested against (tests/test_cuda.c):
 *   gn_cuda_q4_dequant        gn_dequantize_4bit / gn_dequantize_4bit_to (nf4.h), bit for bit
 *   gn_cuda_q4_gemv, _matmul  gn_nf4_matmul_ref (weights rounded to wdtype, f32 accumulation)
 *   gn_cuda_rmsnorm, _silu_mul, gn_cuda_rope, attention      kernels.h / model/forward.c
 *   *_bwd, gn_cuda_cross_entropy, gn_cuda_lora_*, gn_cuda_adamw_paged   train.c's backward and optimizer
 *
 * Errors: a failed CUDA or cuBLAS call inside a kernel wrapper is a bug or a
 * lost device: it logs "<file>:<line>: <call>: <CUDA error>" and aborts (as
 * llm.c's cudaCheck). Functions that can fail on the user's side (no device,
 * out of device memory) return gn_status with a message instead.
 *
 * This header is plain C (no CUDA types), so C files can call the backend;
 * the .cu files include it inside extern "C".
 */
#ifndef GN_CUDA_H
#define GN_CUDA_H

#include <stddef.h>
#include <stdint.h>

#include "guanaco.h" // gn_status, gn_dtype

#ifdef __cplusplus
extern "C" {
#endif

// ---------------------------------------------------------------------------
// device, memory, stream

// Number of CUDA devices the driver reports; 0 when there is no device or no
// (new enough) driver, with the reason in gn_last_error(). Never aborts.
int gn_cuda_device_count(void);
// Selects device `dev` and creates the library's stream and cuBLAS handle. Safe
// to call again (later calls with the same device do nothing). GN_ERR_UNSUPPORTED
// with a message when there is no usable device.
gn_status gn_cuda_init(int dev);
// "NVIDIA H100 80GB HBM3 (sm_90, 79.1 GiB)" of the initialized device (static string).
const char *gn_cuda_device_name(void);
// Device memory: NULL (and gn_err GN_ERR_OOM naming `what`) when it does not fit.
void *gn_cuda_malloc(size_t bytes, const char *what);
void gn_cuda_free(void *d);
// Bytes of device memory free right now (cudaMemGetInfo).
size_t gn_cuda_mem_free(void);
// Page-locked host memory (faster, asynchronous copies); NULL on failure.
void *gn_cuda_host_alloc(size_t bytes);
void gn_cuda_host_free(void *h);
// Copies, ordered on the library's stream. upload returns once src may be reused;
// download returns when dst holds the data.
void gn_cuda_upload(void *d_dst, const void *h_src, size_t bytes);
void gn_cuda_download(void *h_dst, const void *d_src, size_t bytes);
void gn_cuda_copy(void *d_dst, const void *d_src, size_t bytes);   // device to device
void gn_cuda_memset0(void *d, size_t bytes);
void gn_cuda_sync(void);
// A device buffer of at least `bytes` reused between calls (kernels' scratch:
// dequantized tiles, bf16 copies of activations). Grows, never shrinks. Only
// the library's own wrappers use it, one at a time.
void *gn_cuda_scratch(size_t bytes);
// Benchmark helper: records fn(arg, i) for i = 0..calls-1 on the library stream
// into one CUDA graph, replays it `reps` times between two events and returns
// the mean milliseconds per call (launch overhead gone, kernel gaps kept). fn
// may only enqueue kernels on the library stream (no allocation, no copies from
// pageable memory, no synchronization: e.g. gn_cuda_q4_gemv, gn_cuda_copy).
double gn_cuda_graph_time(void (*fn)(void *arg, int i), void *arg, int calls, int reps);

// ---------------------------------------------------------------------------
// 4-bit weights (bitsandbytes NF4/FP4 layout, nf4.h) on the device

// One quantized (rows, cols) matrix, flattened row-major into blocks of
// `blocksize` elements (blocks may cross rows). Element 2j is the HIGH nibble
// of byte j. The weight at flat index e is
//     round_wdtype(code[q_e] * absmax[e / blocksize])     (f32 product, then rounding)
// where, with double quantization (qabsmax != NULL),
//     absmax[b] = float32(float32(nested_code[qabsmax[b]] * nested_absmax[b / nested_blocksize]) + offset),
// the rebuild nf4.c does at load. The host fields are filled by the uploader
// (cuda_model.c's gn_cuda_q4_from_state) or by hand in tests.
typedef struct {
    int64_t rows, cols, nelem, nblocks;
    int blocksize;               // power of two, 16..4096
    gn_dtype wdtype;             // F32, F16 or BF16: rounding applied to each weight
    float code[16];              // the 4-bit table
    const uint8_t *packed;       // device, (nelem + 1) / 2 bytes
    const float *absmax;         // device, nblocks floats; NULL with double quantization
    const uint8_t *qabsmax;      // device, nblocks codes (double quantization) or NULL
    const float *nested_absmax;  // device, ceil(nblocks / nested_blocksize) floats
    const float *nested_code;    // device, 256 floats
    int nested_blocksize;
    float offset;
} gn_cuda_q4;

// dst (n elements from flat index e0) = the dequantized weights in out_dtype:
// F32 gives the f32 product code[q] * absmax itself (gn_dequantize_4bit), BF16/F16
// that product rounded to nearest even (gn_dequantize_4bit_to). dst: device.
void gn_cuda_q4_dequant(const gn_cuda_q4 *w, int64_t e0, int64_t n, void *dst, gn_dtype out_dtype);

// Fused dequantize-dot for decode: out (T, rows) = beta * out + x (T, cols) @ W^T,
// f32 accumulation, T <= GN_CUDA_GEMV_MAXT. The weights are the f32 dequantized
// values code[q] * absmax (gn_dequantize_4bit's), NOT rounded to w->wdtype: per
// 32-weight chunk the kernel sums code[q] * x and multiplies by absmax once, so
// with a bf16 wdtype it differs from gn_nf4_matmul_ref by the bf16 rounding of
// each weight (< 2^-9 relative). x is F32 or BF16 (x_dtype); beta is 0 or 1.
// A warp per output row (two rows when T <= 2); rows with cols a multiple of 32
// and blocksize >= 32 take the vectorized path (16-byte loads of packed bytes),
// any other shape a per-element path.
#define GN_CUDA_GEMV_MAXT 8
void gn_cuda_q4_gemv(float *out, const void *x, gn_dtype x_dtype, const gn_cuda_q4 *w, int T, float beta);
// Several matrices with the same input in one launch (q/k/v, gate/up): outs[i]
// (T, rows_i) = beta * outs[i] + x @ W_i^T; n <= 3, all with the same cols.
void gn_cuda_q4_gemv_multi(float *const *outs, const void *x, gn_dtype x_dtype, const gn_cuda_q4 *const *ws, int n,
                           int T, float beta);
// Any T: out (T, rows) = beta * out + x (T, cols) @ W^T. T <= GEMV_MAXT: the
// GEMV; else W dequantized in row tiles into scratch and multiplied by cuBLAS:
// wdtype BF16 -> bf16 tiles and a bf16 copy of x on the tensor cores (f32
// accumulate, HF's "dequantize to bf16, then matmul"); F32/F16 -> f32 tiles, SGEMM.
void gn_cuda_q4_matmul(float *out, const float *x, const gn_cuda_q4 *w, int64_t T, float beta);
// Input gradient: dx (T, cols) = beta * dx + dy (T, rows) @ W (same weights).
void gn_cuda_q4_matmul_nn(float *dx, const float *dy, const gn_cuda_q4 *w, int64_t T, float beta);

// ---------------------------------------------------------------------------
// 16/32-bit matrices

// A dense (rows, cols) weight: F32 or BF16, device.
typedef struct {
    gn_dtype dtype;
    int64_t rows, cols;
    const void *data;
} gn_cuda_mat;
// out (T, rows) = beta * out + x (T, cols) @ W^T. F32: SGEMM (no TF32). BF16:
// T <= GEMV_MAXT a GEMV with f32 x (as the CPU's gn_dot_bf16_f32), else x in
// bf16 on the tensor cores.
void gn_cuda_mat_matmul(float *out, const float *x, const gn_cuda_mat *w, int64_t T, float beta);
// dx (T, cols) = beta * dx + dy (T, rows) @ W.
void gn_cuda_mat_matmul_nn(float *dx, const float *dy, const gn_cuda_mat *w, int64_t T, float beta);
// C (M, N) = alpha * op(A) op(B) + beta * C, row-major float32 (cuBLAS SGEMM,
// no TF32): op(A) is (M, K), op(B) (K, N); ta/tb nonzero = transposed; lda,
// ldb, ldc are row strides.
void gn_cuda_sgemm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda, const float *B, int ldb,
                   float beta, float *C, int ldc);

// ---------------------------------------------------------------------------
// elementwise and row kernels (all f32, device)

// out (T, C) = x * rsqrt(mean(x^2) + eps) * w. out may alias x.
void gn_cuda_rmsnorm(float *out, const float *x, const float *w, int T, int C, float eps);
// dx (T, C) (+)= its gradient given dy: rstd * w * dy - x * rstd^3 / C * sum(w * dy * x).
void gn_cuda_rmsnorm_bwd(float *dx, const float *dy, const float *x, const float *w, int T, int C, float eps,
                         int accumulate);
// Rotates the first n_rot dims of n_heads head vectors of T rows (row t at
// x + t*stride, head h at + h*hs) by angle sign * pos * inv_freq[i], pos = pos0 + t:
// interleaved pairs (2i, 2i+1) when interleaved (GGUF), else the halves (i,
// i + n_rot/2) as HF's rotate_half. inv_freq: device, n_rot/2 floats. sign -1
// undoes the rotation (the backward).
void gn_cuda_rope(float *x, int T, int n_heads, int hs, int64_t stride, int n_rot, int interleaved,
                  const float *inv_freq, int pos0, float sign);
// h = silu(g) * u, n elements (h may alias g or u).
void gn_cuda_silu_mul(float *h, const float *g, const float *u, int64_t n);
// dg = dh * u * s * (1 + g (1 - s)), du = dh * g * s, s = sigmoid(g).
void gn_cuda_swiglu_bwd(float *dg, float *du, const float *dh, const float *g, const float *u, int64_t n);
// y += x, n elements.
void gn_cuda_add(float *y, const float *x, int64_t n);
// out (T, C) = rows ids[t] of the (V, C) table (F32 or BF16 -> f32). ids: device.
void gn_cuda_embed(float *out, const void *table, gn_dtype dtype, int64_t C, const int32_t *ids, int T);
// Conversions (n elements).
void gn_cuda_f32_to_bf16(uint16_t *dst, const float *src, int64_t n);
void gn_cuda_bf16_to_f32(float *dst, const uint16_t *src, int64_t n);
// Sum of squares of n floats, accumulated in double (returned to the host; waits).
double gn_cuda_sumsq(const float *x, int64_t n);

// Cross-entropy of n rows of V logits with labels y (device; y < 0: no loss,
// no gradient). loss[i] = logsumexp(row i) - logits[i][y_i] (device, n floats).
// dlogits (may alias logits, may be NULL) = weight * (softmax(row) - onehot(y_i)).
void gn_cuda_cross_entropy(float *loss, float *dlogits, const float *logits, const int32_t *y, int n, int V,
                           float weight);

// LoRA dropout as train.c's keep_scale: element i of the (layer, module)
// stream keeps x_i / (1 - p) when unit(mix64(base ^ i)) >= p, else 0, with
// base = key ^ (layer << 40) ^ (module << 56). dst = src * mask (accumulate 0),
// or dst += src * mask (accumulate 1).
void gn_cuda_dropout(float *dst, const float *src, int64_t n, uint64_t base, float p, int accumulate);

// ---------------------------------------------------------------------------
// attention over a KV cache (inference)

// q (T, NH*hs) at positions pos0..pos0+T-1 attends causally to the cache rows
// 0..pos0+t (k_cache, v_cache: (>= pos0+T, NKV*hs), this layer's, already
// holding the T new rows). Grouped-query: head h reads KV head h / (NH/NKV).
// out (T, NH*hs) = softmax(q.k / sqrt(hs)) v, f32. hs <= 256.
// T == 1 runs the decode kernel (the cache split into stretches whose partial
// softmaxes are merged, so a long context fills the device); T > 1 the prefill
// kernel (flash-style: key tiles in shared memory, online softmax, one warp per
// query row). Both are exposed for the tests.
void gn_cuda_attention(float *out, const float *q, const float *k_cache, const float *v_cache, int T, int pos0, int NH,
                       int NKV, int hs);
void gn_cuda_attention_decode(float *out, const float *q, const float *k_cache, const float *v_cache, int T, int pos0,
                              int NH, int NKV, int hs);
void gn_cuda_attention_prefill(float *out, const float *q, const float *k_cache, const float *v_cache, int T, int pos0,
                               int NH, int NKV, int hs);

// Training attention (the layout of ops.h's attention op, one sequence from position 0): o =
// softmax(scale q k^T, causal) v per head, P (NH, T, T) keeps the probabilities
// (zero above the diagonal). The backward overwrites dq, dk, dv and consumes P.
// scratch: gn_cuda_train_attn_scratch(T) floats of device memory.
size_t gn_cuda_train_attn_scratch(int T);
void gn_cuda_train_attn_fwd(float *o, float *P, const float *q, const float *k, const float *v, int T, int NH, int NKV,
                            int hs);
void gn_cuda_train_attn_bwd(float *dq, float *dk, float *dv, float *P, const float *q, const float *k, const float *v,
                            const float *dO, int T, int NH, int NKV, int hs, float *scratch);

// ---------------------------------------------------------------------------
// LoRA branch (f32; A (r, IC), B (OC, r), scale s)

// ul (T, r) = x (T, IC) @ A^T; then, with y not NULL, y (T, OC) += s * ul @ B^T.
void gn_cuda_lora_fwd(float *y, float *ul, const float *x, const float *A, const float *B, int T, int IC, int OC, int r,
                      float s);
// Backward given dy (T, OC), the LoRA input x (dropout applied) and ul:
// dB += s dy^T ul; z (T, r) = dy B; dA += s z^T x; and, with dx not NULL,
// dx += s z A (no dropout) — with dropout the caller makes s z A with
// gn_cuda_sgemm and adds it through gn_cuda_dropout.
void gn_cuda_lora_bwd(float *dA, float *dB, float *dx, float *z, const float *dy, const float *x, const float *ul,
                      const float *A, const float *B, int T, int IC, int OC, int r, float s);

// ---------------------------------------------------------------------------
// AdamW with paged state

// One AdamW step over n parameters, exactly train.c's gn_trainer_step update:
//   g = grad * clip; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
//   p *= 1 - lr wd (wd > 0); p -= lr / (1 - b1^step) * m / (sqrt(v) / sqrt(1 - b2^step) + eps)
// (then rounded to bf16 when bf16_params). p and g are device memory; m and v
// are host memory (page-locked for speed: gn_cuda_host_alloc), streamed through
// the device in chunks with copies overlapping the update. The staging buffers
// never exceed a quarter of the device memory free at the call (and `max_chunk`
// floats per buffer when nonzero), so the state itself never has to fit.
// GN_ERR_OOM when not even a small chunk fits.
gn_status gn_cuda_adamw_paged(float *p, const float *g, float *m_host, float *v_host, size_t n, float lr, float b1,
                              float b2, float eps, float wd, int64_t step, float clip, int bf16_params,
                              size_t max_chunk);

#ifdef __cplusplus
}
#endif
#endif
