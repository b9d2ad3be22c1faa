/*
 * tensors.h — one table of named tensors, whatever file format they came from.
 *
 * Every loader (safetensors, PyTorch .bin, GGUF) appends gn_tensor entries to a
 * gn_tensor_table. Data points into a read-only mmap of the file whenever the
 * bytes are usable in place; otherwise (non-contiguous torch storage views) the
 * loader copies into a buffer that the table owns. A file is mapped once.
 *
 * Shapes are always stored PyTorch-style: outermost dimension first, row-major.
 * GGUF lists ne[0] (the innermost, fastest) first; its loader reverses it, so a
 * GGUF weight of ne = [in, out] becomes shape {out, in} here, like HF's Linear.
 */
#ifndef GN_TENSORS_H
#define GN_TENSORS_H

#include "../core/common.h"

#define GN_MAX_DIMS 8

typedef struct {
    char *name;              // owned, NUL-terminated
    gn_dtype dtype;
    int ndim;
    int64_t shape[GN_MAX_DIMS]; // outermost first
    int64_t nelem;           // product of shape (1 for a scalar)
    const void *data;        // nelem elements in dtype's layout, contiguous
    size_t nbytes;           // bytes at data
    const char *file;        // path of the file it came from (owned by the table)
} gn_tensor;

typedef struct {
    gn_tensor *t;
    int n, cap;
    gn_mmap *maps;   // every mapping the table holds
    int nmaps;
    void **owned;    // buffers the table frees
    int nowned;
    char **files;    // file paths (owned)
    int nfiles;
} gn_tensor_table;

void gn_tensor_table_init(gn_tensor_table *tt);
void gn_tensor_table_free(gn_tensor_table *tt);
// Returns NULL when no tensor has this name.
const gn_tensor *gn_tensor_table_find(const gn_tensor_table *tt, const char *name);

// Loaders: append the file's tensors to tt. On error, tt is left valid (it may
// hold some of the file's tensors) and the message names the file and offset.
gn_status gn_safetensors_load(gn_tensor_table *tt, const char *path);
gn_status gn_torchbin_load(gn_tensor_table *tt, const char *path);

// Converts the whole tensor to float32 (dst holds t->nelem floats). Quantized
// GGUF blocks are dequantized exactly as ggml's dequantize_row_* does.
gn_status gn_tensor_to_f32(const gn_tensor *t, float *dst);
// Same for the row range [row0, row0+nrows) of a 2-D tensor (or of its 2-D view
// with the outer dims flattened). Used for embedding lookup of quantized tables.
gn_status gn_tensor_rows_to_f32(const gn_tensor *t, int64_t row0, int64_t nrows, float *dst);

// Bytes for n elements of a type; for block types n must be a multiple of the
// block size (else returns 0).
size_t gn_dtype_nbytes(gn_dtype dt, int64_t n);
int gn_dtype_block(gn_dtype dt);  // elements per block (1 for plain types)
// torch's name of F32, F16 or BF16 ("float32", "float16", "bfloat16"), as HF's config.json
// and bnb's quant_state spell it; "float32" for any other dtype.
const char *gn_dtype_torch_name(gn_dtype dt);

// ---------------------------------------------------------------------------
// safetensors writer (used by quantize/merge/adapter save): writes tensors in
// the order given, with an optional __metadata__ (string pairs), atomically.
typedef struct {
    const char *name;
    gn_dtype dtype;
    int ndim;
    int64_t shape[GN_MAX_DIMS];
    const void *data;
    size_t nbytes;
} gn_tensor_out;
gn_status gn_safetensors_save(const char *path, const gn_tensor_out *ts, int n,
                              const char *const *meta_kv, int n_meta);

#endif
