/*
 * tensors.c — the named-tensor table shared by every loader, dtype facts, and
 * conversion of any stored dtype to float32: plain types (f32/f16/bf16/f64,
 * ints, bool) and ggml's block formats Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q8_1 Q4_K Q5_K
 * Q6_K.
 *
 * The block decoders follow ggml's reference dequantize_row_* (ggml-quants.c)
 * operation for operation, so results are bitwise equal to ggml and to
 * gguf-py's gguf.quants.dequantize. Each block is memcpy'd into a local struct
 * first: GGUF allows an alignment of 1, so blocks may sit at odd addresses.
 * Layout reference: ggml-common.h (block_q4_0 ... block_q6_K).
 */
#include "tensors.h"     // gn_tensor_table, gn_tensor_to_f32, ...
#include "table_build.h" // gn_tt_* (loader helpers implemented here)

#include <stdlib.h>      // free, qsort

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "guanaco reads little-endian files by reinterpreting bytes; big-endian hosts are not supported"
#endif

#ifdef _OPENMP
#define OMP_PARALLEL_FOR _Pragma("omp parallel for schedule(static)")
#else
#define OMP_PARALLEL_FOR
#endif

// ----------------------------------------------------------------------------
// dtype facts

static const struct {
    const char *name;
    int block;     // elements per block (1 for plain types)
    int bytes;     // bytes per block
} dtype_info[GN_DTYPE_COUNT] = {
    [GN_DTYPE_F32] = {"f32", 1, 4},      [GN_DTYPE_F16] = {"f16", 1, 2},
    [GN_DTYPE_BF16] = {"bf16", 1, 2},    [GN_DTYPE_Q8_0] = {"q8_0", 32, 34},
    [GN_DTYPE_Q4_0] = {"q4_0", 32, 18},  [GN_DTYPE_Q4_1] = {"q4_1", 32, 20},
    [GN_DTYPE_U8] = {"u8", 1, 1},        [GN_DTYPE_I8] = {"i8", 1, 1},
    [GN_DTYPE_I16] = {"i16", 1, 2},      [GN_DTYPE_I32] = {"i32", 1, 4},
    [GN_DTYPE_I64] = {"i64", 1, 8},      [GN_DTYPE_F64] = {"f64", 1, 8},
    [GN_DTYPE_BOOL] = {"bool", 1, 1},    [GN_DTYPE_Q5_0] = {"q5_0", 32, 22},
    [GN_DTYPE_Q5_1] = {"q5_1", 32, 24},  [GN_DTYPE_Q6_K] = {"q6_K", 256, 210},
    [GN_DTYPE_Q4_K] = {"q4_K", 256, 144}, [GN_DTYPE_Q5_K] = {"q5_K", 256, 176},
    [GN_DTYPE_Q8_1] = {"q8_1", 32, 36},
};

static int dtype_ok(gn_dtype dt) { return (int)dt >= 0 && dt < GN_DTYPE_COUNT; }

const char *gn_dtype_name(gn_dtype dt) { return dtype_ok(dt) ? dtype_info[dt].name : "unknown"; }

const char *gn_dtype_torch_name(gn_dtype dt) {
    return dt == GN_DTYPE_BF16 ? "bfloat16" : dt == GN_DTYPE_F16 ? "float16" : "float32";
}

int gn_dtype_block(gn_dtype dt) { return dtype_ok(dt) ? dtype_info[dt].block : 0; }

// Returns 0 for an unknown dtype, a negative n, an n that is not a whole number
// of blocks, or a byte count that does not fit in size_t (so callers that see
// 0 for n > 0 know the request was invalid).
size_t gn_dtype_nbytes(gn_dtype dt, int64_t n) {
    if (!dtype_ok(dt) || n < 0) return 0;
    int64_t blk = dtype_info[dt].block, bs = dtype_info[dt].bytes;
    if (n % blk) return 0;
    uint64_t nb = (uint64_t)(n / blk);
    if (nb > SIZE_MAX / (uint64_t)bs) return 0;
    return (size_t)nb * (size_t)bs;
}

// ----------------------------------------------------------------------------
// the table

void gn_tensor_table_init(gn_tensor_table *tt) { memset(tt, 0, sizeof *tt); }

void gn_tensor_table_free(gn_tensor_table *tt) {
    gn_tt_rollback(tt, (gn_tt_mark){0, 0, 0, 0});
    free(tt->t);
    free(tt->maps);
    free(tt->owned);
    free(tt->files);
    memset(tt, 0, sizeof *tt);
}

const gn_tensor *gn_tensor_table_find(const gn_tensor_table *tt, const char *name) {
    for (int i = 0; i < tt->n; i++)
        if (strcmp(tt->t[i].name, name) == 0) return &tt->t[i];
    return NULL;
}

gn_tt_mark gn_tt_mark_now(const gn_tensor_table *tt) {
    return (gn_tt_mark){tt->n, tt->nmaps, tt->nowned, tt->nfiles};
}

void gn_tt_rollback(gn_tensor_table *tt, gn_tt_mark mk) {
    for (int i = mk.n; i < tt->n; i++) free(tt->t[i].name);
    if (tt->n > mk.n) tt->n = mk.n;
    for (int i = mk.nmaps; i < tt->nmaps; i++) gn_mmap_close(&tt->maps[i]);
    if (tt->nmaps > mk.nmaps) tt->nmaps = mk.nmaps;
    for (int i = mk.nowned; i < tt->nowned; i++) free(tt->owned[i]);
    if (tt->nowned > mk.nowned) tt->nowned = mk.nowned;
    for (int i = mk.nfiles; i < tt->nfiles; i++) free(tt->files[i]);
    if (tt->nfiles > mk.nfiles) tt->nfiles = mk.nfiles;
}

// Makes room for element n of a table array. The table keeps no capacity for
// maps/owned/files, so their arrays always hold a power of two (>= 4) slots
// that is > n: a realloc is due exactly when n is 0 or a power of two >= 4.
// (After a rollback the array may be larger than that; shrinking it to 2n at
// the next power of two is harmless.)
static void *grow(void *p, int n, size_t elem) {
    if (n == 0) return gn_realloc(p, 4 * elem);
    if (n >= 4 && (n & (n - 1)) == 0) return gn_realloc(p, 2 * (size_t)n * elem);
    return p;
}

const char *gn_tt_add_file(gn_tensor_table *tt, const char *path) {
    tt->files = grow(tt->files, tt->nfiles, sizeof *tt->files);
    tt->files[tt->nfiles] = gn_strdup(path);
    return tt->files[tt->nfiles++];
}

gn_tensor *gn_tt_push(gn_tensor_table *tt) {
    if (tt->n == tt->cap) {
        tt->cap = tt->cap ? tt->cap * 2 : 16;
        tt->t = gn_realloc(tt->t, (size_t)tt->cap * sizeof *tt->t);
    }
    gn_tensor *t = &tt->t[tt->n++];
    memset(t, 0, sizeof *t);
    return t;
}

void gn_tt_add_map(gn_tensor_table *tt, gn_mmap *m) {
    tt->maps = grow(tt->maps, tt->nmaps, sizeof *tt->maps);
    tt->maps[tt->nmaps++] = *m;
    memset(m, 0, sizeof *m);
}

void gn_tt_add_owned(gn_tensor_table *tt, void *p) {
    tt->owned = grow(tt->owned, tt->nowned, sizeof *tt->owned);
    tt->owned[tt->nowned++] = p;
}

static int cmp_name_ptr(const void *a, const void *b) {
    const gn_tensor *x = *(const gn_tensor *const *)a, *y = *(const gn_tensor *const *)b;
    return strcmp(x->name, y->name);
}

gn_status gn_tt_check_dups(const gn_tensor_table *tt, int from, const char *path) {
    if (tt->n - from <= 0 || tt->n < 2) return GN_OK;
    const gn_tensor **v = gn_malloc((size_t)tt->n * sizeof *v);
    for (int i = 0; i < tt->n; i++) v[i] = &tt->t[i];
    qsort(v, (size_t)tt->n, sizeof *v, cmp_name_ptr);
    gn_status st = GN_OK;
    for (int i = 1; i < tt->n; i++) {
        if (strcmp(v[i - 1]->name, v[i]->name) != 0) continue;
        if (v[i - 1] - tt->t < from && v[i] - tt->t < from) continue; // both older
        st = gn_err(GN_ERR_FORMAT, "%s: tensor '%s': name appears twice%s, expected unique names",
                    path, v[i]->name,
                    (v[i - 1]->file != v[i]->file) ? " (also in an earlier file)" : "");
        break;
    }
    free(v);
    return st;
}

int gn_shape_nelem(const int64_t *shape, int ndim, int64_t *nelem) {
    int64_t p = 1, nz = 1; // nz: product of the nonzero dims (overflow guard)
    for (int i = 0; i < ndim; i++) {
        int64_t d = shape[i];
        if (d < 0) return 0;
        if (d == 0) { p = 0; continue; }
        if (nz > INT64_MAX / d) return 0;
        nz *= d;
        p *= d; // p <= nz, cannot overflow
    }
    *nelem = p;
    return 1;
}

// ----------------------------------------------------------------------------
// ggml block layouts (ggml-common.h). ggml_half is stored as uint16_t.

typedef struct { uint16_t d; uint8_t qs[16]; } block_q4_0;
typedef struct { uint16_t d, m; uint8_t qs[16]; } block_q4_1;
typedef struct { uint16_t d; uint8_t qh[4]; uint8_t qs[16]; } block_q5_0;
typedef struct { uint16_t d, m; uint8_t qh[4]; uint8_t qs[16]; } block_q5_1;
typedef struct { uint16_t d; int8_t qs[32]; } block_q8_0;
typedef struct { uint16_t d, s; int8_t qs[32]; } block_q8_1; // s = d*sum(qs), unused here
typedef struct { uint16_t d, dmin; uint8_t scales[12]; uint8_t qs[128]; } block_q4_K;
typedef struct { uint16_t d, dmin; uint8_t scales[12]; uint8_t qh[32]; uint8_t qs[128]; } block_q5_K;
typedef struct { uint8_t ql[128]; uint8_t qh[64]; int8_t scales[16]; uint16_t d; } block_q6_K;

_Static_assert(sizeof(block_q4_0) == 18, "wrong q4_0 block size/padding");
_Static_assert(sizeof(block_q4_1) == 20, "wrong q4_1 block size/padding");
_Static_assert(sizeof(block_q5_0) == 22, "wrong q5_0 block size/padding");
_Static_assert(sizeof(block_q5_1) == 24, "wrong q5_1 block size/padding");
_Static_assert(sizeof(block_q8_0) == 34, "wrong q8_0 block size/padding");
_Static_assert(sizeof(block_q8_1) == 36, "wrong q8_1 block size/padding");
_Static_assert(sizeof(block_q4_K) == 144, "wrong q4_K block size/padding");
_Static_assert(sizeof(block_q5_K) == 176, "wrong q5_K block size/padding");
_Static_assert(sizeof(block_q6_K) == 210, "wrong q6_K block size/padding");

// ----------------------------------------------------------------------------
// block decoders: nb blocks at x -> nb*block floats at y.
// reference: ggml-quants.c dequantize_row_q4_0 ... dequantize_row_q6_K

static void dq_q4_0(const uint8_t *x, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += sizeof(block_q4_0), y += 32) {
        block_q4_0 b;
        memcpy(&b, x, sizeof b);
        const float d = gn_f16_to_f32(b.d);
        for (int j = 0; j < 16; j++) {
            const int x0 = (b.qs[j] & 0x0F) - 8;
            const int x1 = (b.qs[j] >> 4) - 8;
            y[j] = x0 * d;
            y[j + 16] = x1 * d;
        }
    }
}

static void dq_q4_1(const uint8_t *x, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += sizeof(block_q4_1), y += 32) {
        block_q4_1 b;
        memcpy(&b, x, sizeof b);
        const float d = gn_f16_to_f32(b.d), m = gn_f16_to_f32(b.m);
        for (int j = 0; j < 16; j++) {
            const int x0 = b.qs[j] & 0x0F;
            const int x1 = b.qs[j] >> 4;
            y[j] = x0 * d + m;
            y[j + 16] = x1 * d + m;
        }
    }
}

static void dq_q5_0(const uint8_t *x, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += sizeof(block_q5_0), y += 32) {
        block_q5_0 b;
        memcpy(&b, x, sizeof b);
        const float d = gn_f16_to_f32(b.d);
        uint32_t qh;
        memcpy(&qh, b.qh, 4);
        for (int j = 0; j < 16; j++) {
            const uint8_t xh0 = (uint8_t)(((qh >> (j + 0)) << 4) & 0x10);
            const uint8_t xh1 = (uint8_t)((qh >> (j + 12)) & 0x10);
            const int32_t x0 = ((b.qs[j] & 0x0F) | xh0) - 16;
            const int32_t x1 = ((b.qs[j] >> 4) | xh1) - 16;
            y[j] = x0 * d;
            y[j + 16] = x1 * d;
        }
    }
}

static void dq_q5_1(const uint8_t *x, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += sizeof(block_q5_1), y += 32) {
        block_q5_1 b;
        memcpy(&b, x, sizeof b);
        const float d = gn_f16_to_f32(b.d), m = gn_f16_to_f32(b.m);
        uint32_t qh;
        memcpy(&qh, b.qh, 4);
        for (int j = 0; j < 16; j++) {
            const uint8_t xh0 = (uint8_t)(((qh >> (j + 0)) << 4) & 0x10);
            const uint8_t xh1 = (uint8_t)((qh >> (j + 12)) & 0x10);
            const int x0 = (b.qs[j] & 0x0F) | xh0;
            const int x1 = (b.qs[j] >> 4) | xh1;
            y[j] = x0 * d + m;
            y[j + 16] = x1 * d + m;
        }
    }
}

static void dq_q8_0(const uint8_t *x, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += sizeof(block_q8_0), y += 32) {
        block_q8_0 b;
        memcpy(&b, x, sizeof b);
        const float d = gn_f16_to_f32(b.d);
        for (int j = 0; j < 32; j++) y[j] = b.qs[j] * d;
    }
}

// ggml has no dequantize_row_q8_1 (q8_1 is an activation format); this is the
// obvious q*d, which is what its dot products compute with.
static void dq_q8_1(const uint8_t *x, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += sizeof(block_q8_1), y += 32) {
        block_q8_1 b;
        memcpy(&b, x, sizeof b);
        const float d = gn_f16_to_f32(b.d);
        for (int j = 0; j < 32; j++) y[j] = b.qs[j] * d;
    }
}

// 6-bit scale and min number j (0..7) packed in the 12 scale bytes of q4_K/q5_K.
static inline void scale_min_k4(int j, const uint8_t *q, uint8_t *d, uint8_t *m) {
    if (j < 4) {
        *d = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *d = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4));
    }
}

static void dq_q4_K(const uint8_t *x, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += sizeof(block_q4_K)) {
        block_q4_K b;
        memcpy(&b, x, sizeof b);
        const uint8_t *q = b.qs;
        const float d = gn_f16_to_f32(b.d), min = gn_f16_to_f32(b.dmin);
        int is = 0;
        uint8_t sc, m;
        for (int j = 0; j < 256; j += 64) {
            scale_min_k4(is + 0, b.scales, &sc, &m);
            const float d1 = d * sc, m1 = min * m;
            scale_min_k4(is + 1, b.scales, &sc, &m);
            const float d2 = d * sc, m2 = min * m;
            for (int l = 0; l < 32; ++l) *y++ = d1 * (q[l] & 0xF) - m1;
            for (int l = 0; l < 32; ++l) *y++ = d2 * (q[l] >> 4) - m2;
            q += 32;
            is += 2;
        }
    }
}

static void dq_q5_K(const uint8_t *x, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += sizeof(block_q5_K)) {
        block_q5_K b;
        memcpy(&b, x, sizeof b);
        const uint8_t *ql = b.qs, *qh = b.qh;
        const float d = gn_f16_to_f32(b.d), min = gn_f16_to_f32(b.dmin);
        int is = 0;
        uint8_t sc, m, u1 = 1, u2 = 2;
        for (int j = 0; j < 256; j += 64) {
            scale_min_k4(is + 0, b.scales, &sc, &m);
            const float d1 = d * sc, m1 = min * m;
            scale_min_k4(is + 1, b.scales, &sc, &m);
            const float d2 = d * sc, m2 = min * m;
            for (int l = 0; l < 32; ++l) *y++ = d1 * ((ql[l] & 0xF) + (qh[l] & u1 ? 16 : 0)) - m1;
            for (int l = 0; l < 32; ++l) *y++ = d2 * ((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
            ql += 32;
            is += 2;
            u1 = (uint8_t)(u1 << 2);
            u2 = (uint8_t)(u2 << 2);
        }
    }
}

static void dq_q6_K(const uint8_t *x, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += sizeof(block_q6_K)) {
        block_q6_K b;
        memcpy(&b, x, sizeof b);
        const float d = gn_f16_to_f32(b.d);
        const uint8_t *ql = b.ql, *qh = b.qh;
        const int8_t *sc = b.scales;
        for (int n = 0; n < 256; n += 128) {
            for (int l = 0; l < 32; ++l) {
                const int is = l / 16;
                const int8_t q1 = (int8_t)((ql[l + 0] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                const int8_t q2 = (int8_t)((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                const int8_t q3 = (int8_t)((ql[l + 0] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                const int8_t q4 = (int8_t)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                y[l + 0] = d * sc[is + 0] * q1;
                y[l + 32] = d * sc[is + 2] * q2;
                y[l + 64] = d * sc[is + 4] * q3;
                y[l + 96] = d * sc[is + 6] * q4;
            }
            y += 128;
            ql += 64;
            qh += 32;
            sc += 8;
        }
    }
}

// ----------------------------------------------------------------------------
// plain types: n elements at x (any alignment) -> y

#define CONVERT(T, EXPR) do { \
        for (int64_t i = 0; i < n; i++) { T v; memcpy(&v, x + i * (int64_t)sizeof(T), sizeof(T)); y[i] = (EXPR); } \
    } while (0)

static void convert_plain(gn_dtype dt, const uint8_t *x, float *y, int64_t n) {
    switch (dt) {
    case GN_DTYPE_F32: memcpy(y, x, (size_t)n * 4); break;
    case GN_DTYPE_F16: CONVERT(uint16_t, gn_f16_to_f32(v)); break;
    case GN_DTYPE_BF16: CONVERT(uint16_t, gn_bf16_to_f32(v)); break;
    case GN_DTYPE_F64: CONVERT(double, (float)v); break;
    case GN_DTYPE_U8: CONVERT(uint8_t, (float)v); break;
    case GN_DTYPE_I8: CONVERT(int8_t, (float)v); break;
    case GN_DTYPE_I16: CONVERT(int16_t, (float)v); break;
    case GN_DTYPE_I32: CONVERT(int32_t, (float)v); break;
    case GN_DTYPE_I64: CONVERT(int64_t, (float)v); break;
    case GN_DTYPE_BOOL: CONVERT(uint8_t, v ? 1.0f : 0.0f); break;
    default: GN_ASSERT(0 && "not a plain dtype");
    }
}

// Converts `nblk` whole blocks (elements, for plain types) at src into dst.
static void convert_blocks(gn_dtype dt, const uint8_t *src, float *dst, int64_t nblk) {
    switch (dt) {
    case GN_DTYPE_Q4_0: dq_q4_0(src, dst, nblk); break;
    case GN_DTYPE_Q4_1: dq_q4_1(src, dst, nblk); break;
    case GN_DTYPE_Q5_0: dq_q5_0(src, dst, nblk); break;
    case GN_DTYPE_Q5_1: dq_q5_1(src, dst, nblk); break;
    case GN_DTYPE_Q8_0: dq_q8_0(src, dst, nblk); break;
    case GN_DTYPE_Q8_1: dq_q8_1(src, dst, nblk); break;
    case GN_DTYPE_Q4_K: dq_q4_K(src, dst, nblk); break;
    case GN_DTYPE_Q5_K: dq_q5_K(src, dst, nblk); break;
    case GN_DTYPE_Q6_K: dq_q6_K(src, dst, nblk); break;
    default: convert_plain(dt, src, dst, nblk); break;
    }
}

// Converts blocks [0, nblk) of src, in chunks spread over threads when large.
static void convert_range(gn_dtype dt, const uint8_t *src, float *dst, int64_t nblk) {
    const int64_t blk = dtype_info[dt].block, bs = dtype_info[dt].bytes;
    const int64_t chunk = blk == 1 ? 16384 : 256; // blocks per task (~8-64K floats)
    const int64_t nchunks = (nblk + chunk - 1) / chunk;
    if (nchunks <= 1) {
        convert_blocks(dt, src, dst, nblk);
        return;
    }
    OMP_PARALLEL_FOR
    for (int64_t c = 0; c < nchunks; c++) {
        const int64_t b0 = c * chunk, nb = nblk - b0 < chunk ? nblk - b0 : chunk;
        convert_blocks(dt, src + b0 * bs, dst + b0 * blk, nb);
    }
}

// Checks that t describes a convertible tensor; GN_ERR_ARG otherwise.
static gn_status check_convertible(const gn_tensor *t) {
    const char *nm = t->name ? t->name : "?";
    if (!dtype_ok(t->dtype))
        return gn_err(GN_ERR_ARG, "tensor '%s': dtype %d is not a known type", nm, (int)t->dtype);
    if (t->nelem < 0 || t->nelem % dtype_info[t->dtype].block)
        return gn_err(GN_ERR_ARG, "tensor '%s': %lld elements is not a whole number of %s blocks of %d",
                      nm, (long long)t->nelem, gn_dtype_name(t->dtype), dtype_info[t->dtype].block);
    size_t need = gn_dtype_nbytes(t->dtype, t->nelem);
    if ((need == 0 && t->nelem > 0) || t->nbytes < need || (need > 0 && !t->data))
        return gn_err(GN_ERR_ARG, "tensor '%s': %zu bytes of data, expected %zu for %lld %s elements",
                      nm, t->nbytes, need, (long long)t->nelem, gn_dtype_name(t->dtype));
    return GN_OK;
}

gn_status gn_tensor_to_f32(const gn_tensor *t, float *dst) {
    gn_status st = check_convertible(t);
    if (st != GN_OK) return st;
    if (t->nelem == 0) return GN_OK;
    convert_range(t->dtype, t->data, dst, t->nelem / dtype_info[t->dtype].block);
    return GN_OK;
}

gn_status gn_tensor_rows_to_f32(const gn_tensor *t, int64_t row0, int64_t nrows, float *dst) {
    gn_status st = check_convertible(t);
    if (st != GN_OK) return st;
    const char *nm = t->name ? t->name : "?";
    int64_t ncols = t->ndim > 0 ? t->shape[t->ndim - 1] : 1, rows = 1;
    for (int i = 0; i + 1 < t->ndim; i++) rows *= t->shape[i]; // product <= nelem or has a 0
    if (row0 < 0 || nrows < 0 || row0 > rows || nrows > rows - row0)
        return gn_err(GN_ERR_ARG, "tensor '%s': rows [%lld, %lld) out of range, expected within [0, %lld)",
                      nm, (long long)row0, (long long)(row0 + nrows), (long long)rows);
    const int64_t blk = dtype_info[t->dtype].block, bs = dtype_info[t->dtype].bytes;
    if (ncols % blk)
        return gn_err(GN_ERR_ARG, "tensor '%s': row length %lld is not a multiple of the %s block size %lld",
                      nm, (long long)ncols, gn_dtype_name(t->dtype), (long long)blk);
    if (nrows == 0 || ncols == 0) return GN_OK;
    const uint8_t *src = (const uint8_t *)t->data + row0 * (ncols / blk) * bs;
    convert_range(t->dtype, src, dst, nrows * (ncols / blk));
    return GN_OK;
}
