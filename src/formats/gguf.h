/*
 * gguf.h — GGUF v2/v3 reader: metadata key/values and tensors (mmapped).
 *
 * Every length, count and offset in the file is checked against the bytes left
 * before use; a bad file gives GN_ERR_FORMAT and a message naming the path, the
 * byte offset and what was expected. Tensors go into a gn_tensor_table with
 * PyTorch-order shapes (ne reversed), data pointing into the mapping.
 */
#ifndef GN_GGUF_H
#define GN_GGUF_H

#include "tensors.h"

// GGUF metadata value types (values as in the file format).
typedef enum {
    GGUF_T_UINT8 = 0, GGUF_T_INT8 = 1, GGUF_T_UINT16 = 2, GGUF_T_INT16 = 3,
    GGUF_T_UINT32 = 4, GGUF_T_INT32 = 5, GGUF_T_FLOAT32 = 6, GGUF_T_BOOL = 7,
    GGUF_T_STRING = 8, GGUF_T_ARRAY = 9, GGUF_T_UINT64 = 10, GGUF_T_INT64 = 11,
    GGUF_T_FLOAT64 = 12,
} gguf_type;

typedef struct {
    const char *p;  // points into the mapping, NOT NUL-terminated
    uint64_t len;
} gguf_str;

typedef struct {
    char *key;          // owned, NUL-terminated
    gguf_type type;
    // scalar value (for ints/bools/floats), widened:
    int64_t i;          // any integer or bool type
    double f;           // float32/float64 (also set for ints)
    gguf_str s;         // GGUF_T_STRING
    // arrays:
    gguf_type arr_type;
    uint64_t arr_n;
    const uint8_t *arr_data; // for numeric arrays: raw little-endian elements in the mapping
    gguf_str *arr_str;       // for string arrays: arr_n entries (owned array, strings point into mapping)
    size_t raw_off, raw_len; // the value's bytes in the file (after the type), for copying it verbatim
} gguf_kv;



typedef struct {
    gn_mmap map;
    uint32_t version;
    gguf_kv *kv;
    int64_t n_kv;
    gn_tensor_table tensors; // the file's tensors (shape outermost-first)
    size_t alignment;
    size_t data_offset;      // start of the tensor data section
} gn_gguf;

// Opens and parses the file. On failure *out is NULL and the message is set.
gn_status gn_gguf_open(gn_gguf **out, const char *path);
void gn_gguf_free(gn_gguf *g);

// NULL when the key is absent.
const gguf_kv *gn_gguf_get(const gn_gguf *g, const char *key);
// Typed getters with a default when absent (or of a non-matching type).
int64_t gn_gguf_get_int(const gn_gguf *g, const char *key, int64_t dflt);
double gn_gguf_get_float(const gn_gguf *g, const char *key, double dflt);
// Returns a newly allocated NUL-terminated copy, or NULL when absent.
char *gn_gguf_get_str(const gn_gguf *g, const char *key);
// Element i of a numeric array, widened (caller checks i < arr_n).
int64_t gn_gguf_arr_int(const gguf_kv *kv, uint64_t i);
double gn_gguf_arr_float(const gguf_kv *kv, uint64_t i);

// ggml type ids as stored in GGUF tensor infos (append-only upstream).
enum {
    GGML_T_F32 = 0, GGML_T_F16 = 1, GGML_T_Q4_0 = 2, GGML_T_Q4_1 = 3,
    GGML_T_Q5_0 = 6, GGML_T_Q5_1 = 7, GGML_T_Q8_0 = 8, GGML_T_Q8_1 = 9,
    GGML_T_Q2_K = 10, GGML_T_Q3_K = 11, GGML_T_Q4_K = 12, GGML_T_Q5_K = 13,
    GGML_T_Q6_K = 14, GGML_T_Q8_K = 15, GGML_T_BF16 = 30,
};

// ---------------------------------------------------------------------------
// writer: GGUF v3 with the metadata of `meta` copied verbatim (may be NULL)
// except the keys in `drop`, then extra u32 keys, then the tensors (shapes
// outermost first, as everywhere in guanaco; dtype F32, F16 or Q8_0 — Q8_0 is
// quantized here as ggml's quantize_row_q8_0_ref does from f32 data).
typedef struct {
    const char *name;
    gn_dtype dtype;          // stored dtype
    int ndim;
    int64_t shape[GN_MAX_DIMS];
    const float *data;       // f32 values, converted to dtype on write
} gn_gguf_tensor_out;
gn_status gn_gguf_write(const char *path, const gn_gguf *meta, const char *const *drop, int n_drop,
                        const char *const *u32_keys, const uint32_t *u32_vals, int n_u32,
                        const gn_gguf_tensor_out *ts, int n);

// q/k row order. HF checkpoints rotate the two halves of each head (rows i and
// i + hs/2 form a rotary pair); llama.cpp's converter permutes q_proj/k_proj rows so
// the pairs are adjacent (rows 2i, 2i+1). Reorders, in place, the rows of w, a
// (n_heads*hs, cols) matrix: to_gguf = 1 from HF to GGUF order, 0 back to HF order.
void gn_gguf_permute_qk(float *w, int n_heads, int hs, int64_t cols, int to_gguf);

#endif
