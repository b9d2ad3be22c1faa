/*
 * nf4.h — bitsandbytes-compatible 4-bit blockwise quantization (NF4 and FP4),
 * with double quantization of the scales, the checkpoint layout transformers
 * writes for a quantized Linear, and the matmul the model runs on it.
 *
 * The format, in one paragraph (facts in docs/FACTS.md §1–3):
 * a tensor of n elements is flattened row-major and cut into blocks of
 * `blocksize` consecutive elements (blocks cross row boundaries when the row
 * length is not a multiple of the block). Each block stores absmax = max|x|
 * (float32). Each element is scaled into [-1, 1] and replaced by the index of
 * the nearest of 16 code values (NF4: normal quantiles; FP4: bnb's E2M1 layout).
 * Two indices share a byte, the first element in the HIGH nibble. Dequantizing
 * is one float32 multiply, code[q] * absmax, then a rounding to the dtype the
 * tensor had. Double quantization ("DQ", compress_statistics) stores the
 * absmax array itself as 8-bit codes of (absmax - mean) in blocks of 256 with
 * one float32 scale each, so a block-64 tensor costs 4.127 bits per element.
 *
 * Which bitsandbytes we are byte-exact with: bitsandbytes 0.50.2's *CPU* path
 * (torch fallback quantize_4bit, native CPU quantize_blockwise for the nested
 * absmax) as measured by tests/test_nf4.py. Where CUDA bnb packs different
 * bytes for the same values (all-zero block, FP4 of tiny positives, NaN, odd
 * tail, DQ tie rules) the comment at the function says so. Loading is exact
 * whichever path wrote the file: dequantization only multiplies stored numbers.
 *
 *     gn_quant4_state q;
 *     gn_quantize_4bit(w, GN_DTYPE_BF16, rows * cols, 64, GN_QUANT_NF4, 1, &q);
 *     gn_quant4_set_shape(&q, 2, (int64_t[]){rows, cols});
 *     gn_nf4_matmul(out, inp, &q, T);       // out (T, rows) = inp (T, cols) @ W^T
 *     gn_quant4_free(&q);
 *
 * Shapes follow kernels.h: T tokens, W is (rows, cols) = (OC, IC).
 */
#ifndef GN_NF4_H
#define GN_NF4_H

#include "../formats/tensors.h"

// 4-bit code types (the values end up in files only as strings "nf4"/"fp4").
enum { GN_QUANT_NF4 = 0, GN_QUANT_FP4 = 1 };

// Code tables, index -> value, float32 exactly as bnb's get_4bit_type() builds
// them (FP4 is in bit-pattern order; its entry 8 is +0.0, as bnb's `-0` is a
// Python int). gn_dynamic_map is create_dynamic_map(signed=True, 7, 8) in the
// FMA variant (docs/FACTS.md §2.3), used only when quantizing fresh: a loaded file
// brings its own nested_quant_map.
extern const float gn_nf4_code[16];
extern const float gn_fp4_code[16];
extern const float gn_dynamic_map[256];

typedef struct {
    int quant_type;          // GN_QUANT_NF4 / GN_QUANT_FP4
    int blocksize;           // elements per absmax block: power of two, 16..4096
    gn_dtype dtype;          // dtype of the tensor that was quantized (F32/F16/BF16): what dequantize returns
    gn_dtype wdtype;         // rounding gn_nf4_matmul applies to each weight (default: dtype; F32 = none)
    int ndim;
    int64_t shape[GN_MAX_DIMS]; // original shape, outermost first
    int64_t rows, cols;      // 2-D view: cols = last dim, rows = product of the others
    int64_t nelem, nblocks;  // nblocks = ceil(nelem / blocksize)
    const uint8_t *packed;   // (nelem+1)/2 bytes: element 2j in the high nibble of byte j
    const float *absmax;     // nblocks float32 scales (no DQ); NULL with DQ, whose scales are rebuilt per block
                             // when used (gn_quant4_scale), so double quantization saves the memory it promises
    float code[16];          // the 4-bit table dequantization uses: bnb's built-in one for quant_type
                             // (FP4 index 8 decodes as -0.0, as on CUDA)
    // double quantization (nested == 1)
    int nested;
    const uint8_t *qabsmax;      // nblocks 8-bit codes of absmax - offset
    const float *nested_absmax;  // nested_nblocks float32 scales
    int64_t nested_nblocks;      // ceil(nblocks / nested_blocksize)
    int nested_blocksize;        // 256
    float offset;                // mean of the raw absmax (subtracted before 8-bit coding)
    gn_dtype nested_dtype;       // F32
    float nested_code[256];      // nested_quant_map
    // private: buffers this state frees (packed may instead point into a mapped file)
    void *owned_[6];
    int nowned_;
} gn_quant4_state;

// The float32 scale dequantization uses for block b: the stored absmax, or with DQ
// float32(float32(nested_code[qabsmax[b]] * nested_absmax[b / nested_blocksize]) + offset),
// exactly as bnb's dequantize_4bit rebuilds it (product rounded before the add).
static inline float gn_quant4_scale(const gn_quant4_state *q, int64_t b) {
    if (!q->nested) return q->absmax[b];
    const int64_t nb = q->nested_blocksize;
    const int64_t g = (nb & (nb - 1)) == 0 ? b >> __builtin_ctzll((unsigned long long)nb) : b / nb; // 256: a shift
    const float p = q->nested_code[q->qabsmax[b]] * q->nested_absmax[g];
    return p + q->offset;
}
// All nblocks scales into dst (float32 each).
void gn_quant4_scales(const gn_quant4_state *q, float *dst);

// ---------------------------------------------------------------------------
// quantize / dequantize

typedef struct {
    // Thread count of the torch process whose absmax.mean() to reproduce for DQ
    // (torch splits a float sum over >= 32768 elements across its threads, so
    // the last bit of the offset depends on it). Default 1.
    int torch_threads;
    const float *nested_code;  // 256-entry map for DQ (NULL: gn_dynamic_map)
} gn_quant4_opts;

// Quantizes nelem elements of src (F32, F16 or BF16), flattened, in blocks of
// `blocksize` (32..4096, power of two), like bnb.functional.quantize_4bit(
// A, blocksize, compress_statistics=double_quant, quant_type) on CPU. The
// state gets shape {nelem} (see gn_quant4_set_shape), dtype = src_dtype and its
// own copies of everything. Returns GN_ERR_ARG for a bad argument.
gn_status gn_quantize_4bit(const void *src, gn_dtype src_dtype, int64_t nelem, int blocksize,
                           int quant_type, int double_quant, gn_quant4_state *out);
gn_status gn_quantize_4bit_ex(const void *src, gn_dtype src_dtype, int64_t nelem, int blocksize,
                              int quant_type, int double_quant, const gn_quant4_opts *opts,
                              gn_quant4_state *out);
// Sets the original shape (product must equal nelem); updates rows/cols.
gn_status gn_quant4_set_shape(gn_quant4_state *q, int ndim, const int64_t *shape);
void gn_quant4_free(gn_quant4_state *q);

// dst (nelem floats) = code[q] * absmax, the float32 product before any dtype
// rounding: equal, bit for bit, to bnb's dequantize_4bit for a float32 state.
// Dispatched SIMD; the _ref version is the scalar definition.
void gn_dequantize_4bit(const gn_quant4_state *q, float *dst);
void gn_dequantize_4bit_ref(const gn_quant4_state *q, float *dst);
// Same for the flat element range [e0, e0+n).
void gn_dequantize_4bit_range(const gn_quant4_state *q, int64_t e0, int64_t n, float *dst);
// bnb's dequantize_4bit output in out_dtype (F32, F16 or BF16: the product
// rounded to nearest even); pass q->dtype for what bnb returns for this state.
gn_status gn_dequantize_4bit_to(const gn_quant4_state *q, gn_dtype out_dtype, void *dst);

// out (T, rows) = inp (T, cols) @ W^T, W the (rows, cols) view of the
// dequantized weight. q->wdtype is the compute dtype, as in bitsandbytes'
// Linear4bit: each weight, each input value and each output are rounded to it
// (bf16 or f16; f32 rounds nothing), the products summed in float32 — HF's
// "x.to(compute_dtype); dequantize; matmul; result in compute_dtype".
// T == 1 fuses dequant and dot per block (AVX-512 / AVX2 by gn_simd_level());
// T <= 16: fused kernels (vdpbf16ps on AVX512_BF16 for bf16); larger T: a vdpbf16ps GEMM on
// bf16 panels (bf16 compute, AVX512_BF16), else dequantized tiles of rows and sgemm.
// Multithreaded over rows. out must not alias inp.
// Several matrices with the same input (q/k/v, gate/up): outs[i] (T, rows_i) =
// inp (T, cols) @ W_i^T, n <= 8, in one parallel loop when the fused kernel applies.
void gn_nf4_matmul_multi(float **outs, const float *inp, const gn_quant4_state *const *ws, int n, int64_t T);
// The same called by every thread of an enclosing OpenMP parallel region: the threads take
// stretches of the rows from *next, a counter shared by the team and zero when it starts
// (NULL: each thread one fixed share); outputs complete after the caller's barrier.
void gn_nf4_matmul_multi_team(float **outs, const float *inp, const gn_quant4_state *const *ws, int n, int64_t T,
                              int64_t *next);
void gn_nf4_matmul(float *out, const float *inp, const gn_quant4_state *w, int64_t T);
// Scalar reference: same roundings of weights, inputs and outputs, double accumulation.
void gn_nf4_matmul_ref(float *out, const float *inp, const gn_quant4_state *w, int64_t T);
// The input gradient: out (T, cols) = dy (T, rows) @ W, in the compute dtype likewise
// (bnb's backward: grad_output in the compute dtype times the dequantized weight).
void gn_nf4_matmul_nn(float *out, const float *dy, const gn_quant4_state *w, int64_t T);
void gn_nf4_matmul_nn_ref(float *out, const float *dy, const gn_quant4_state *w, int64_t T);

// ---------------------------------------------------------------------------
// pieces of the algorithm, exposed for tests

// float32 mean exactly as torch's CPU x.mean() computes it (cascade sum in
// 8-lane vectors, split across `torch_threads` for n >= 32768, then sum / n).
float gn_quant4_torch_mean(const float *x, int64_t n, int torch_threads);
// bnb's CPU 8-bit blockwise quantizer (quantize_blockwise on CPU): absmax per
// block, x/absmax mapped to 65536 bins, bin -> nearest code through a table
// built from the map's midpoints. out gets n codes, absmax ceil(n/blocksize).
void gn_quantize_blockwise_8bit(const float *x, int64_t n, const float *code, int blocksize,
                                uint8_t *out, float *absmax);

// ---------------------------------------------------------------------------
// files: the layout transformers/bnb write for a quantized Linear `<p>`
//   <p>.weight                              U8  [(n+1)/2, 1]  packed
//   <p>.weight.absmax                       U8 [nblocks] (DQ) or F32 [nblocks]
//   <p>.weight.quant_map                    F32 [16]
//   <p>.weight.nested_absmax                F32 [ceil(nblocks/256)]   (DQ)
//   <p>.weight.nested_quant_map             F32 [256]                 (DQ)
//   <p>.weight.quant_state.bitsandbytes__nf4 (or __fp4)  U8 [len]  JSON

// 1 when the table holds `<prefix>.weight.quant_state.bitsandbytes__nf4|fp4`.
int gn_quant4_present(const gn_tensor_table *tt, const char *prefix);
// Builds *q from those tensors. q->packed points into the table (which must
// outlive q); the float absmax cache is q's own. Errors are GN_ERR_FORMAT
// "<file>: tensor '<name>': what is wrong, what was expected".
gn_status gn_quant4_load(gn_quant4_state *q, const gn_tensor_table *tt, const char *prefix);

// The quant_state JSON exactly as bnb's json.dumps writes it (malloc'd).
char *gn_quant4_state_json(const gn_quant4_state *q);
// The tensors transformers would save for q under `prefix`, in its order
// (weight, absmax, quant_map[, nested_absmax, nested_quant_map], quant_state),
// ready for gn_safetensors_save. Data points into q and ex (keep both alive).
typedef struct {
    gn_tensor_out t[6];
    int n;
    char *names_[6];
    char *json_;
} gn_quant4_export;
gn_status gn_quant4_export_tensors(const gn_quant4_state *q, const char *prefix, gn_quant4_export *ex);
void gn_quant4_export_free(gn_quant4_export *ex);

// ---------------------------------------------------------------------------
// a whole checkpoint (checkpoint.c): model.safetensors and config.json's
// quantization_config as transformers + bitsandbytes write them

// One tensor of the checkpoint, in file order: q4 NULL, the plain tensor t as it is;
// else the 4-bit weight q4 of the Linear named t.name (t's other fields unused).
typedef struct {
    gn_tensor_out t;
    const gn_quant4_state *q4;
} gn_quant4_item;
// Writes the items as one safetensors file (metadata format: pt), each 4-bit weight as
// gn_quant4_export_tensors lists it.
gn_status gn_quant4_save_safetensors(const char *path, const gn_quant4_item *items, int n);
// The text of a config.json (config) with transformers' quantization_config block added
// for weights quantized as q (type, double quantization, compute dtype); head4: lm_head is
// 4-bit too (llm_int8_skip_modules [] instead of null); malloc'd, NULL when config does not parse.
char *gn_quant4_hf_config(const char *config, const gn_quant4_state *q, int head4);

// Storage cost in bits per element: 8 * (packed + absmax [+ nested_absmax]
// bytes) / nelem, leaving out the per-tensor constants (code maps, offset,
// JSON). NF4 + DQ at block 64 on a large tensor: 4 + 8/64 + 32/(64*256) = 4.127.
double gn_quant4_bits_per_param(const gn_quant4_state *q);
// The same figure from the layout alone (the limit for large tensors).
double gn_quant4_bits_formula(int blocksize, int nested, int nested_blocksize);

#endif
