/*
 * gguf.c — GGUF v2/v3 reader (little-endian files only).
 *
 * Layout (ggml docs/gguf.md):
 *   "GGUF" | u32 version | u64 n_tensors | u64 n_kv
 *   n_kv x  { string key | u32 type | value }
 *   n_tensors x { string name | u32 n_dims | u64 ne[n_dims] | u32 ggml_type | u64 offset }
 *   padding to general.alignment (default 32) | tensor data
 *   string = u64 len | bytes (no NUL);  array = u32 elem_type | u64 n | elements
 *
 * Every count and length is checked against the bytes left before anything is
 * allocated for it, so a fuzzed n_kv of 2^62 fails fast. Tensor offsets are
 * relative to the data section and must be multiples of the alignment; each
 * tensor's bytes must lie inside the file. Shapes are reversed into PyTorch
 * order (ne[0], the innermost, goes last).
 */
#include "gguf.h"          // gn_gguf, gguf_kv, GGML_T_*
#include "table_build.h"   // gn_tt_push, gn_tt_check_dups, gn_shape_nelem

#include <inttypes.h>      // PRIu64
#include <stdlib.h>        // free, qsort

#define GGUF_MAX_ARRAY_DEPTH 4  // arrays of arrays are validated and skipped up to this depth

// ----------------------------------------------------------------------------
// bounded reader

typedef struct {
    const uint8_t *p;
    size_t size, pos;
    const char *path;
} rd;

static size_t left(const rd *r) { return r->size - r->pos; }

static gn_status need(rd *r, size_t n, const char *what) {
    if (n > left(r))
        return gn_err(GN_ERR_FORMAT, "%s: offset %zu: file ends while reading %s (%zu bytes needed, %zu left), "
                      "expected a complete GGUF file", r->path, r->pos, what, n, left(r));
    return GN_OK;
}

// n bytes into v (little-endian values on a little-endian host), or an error naming what
static gn_status rd_bytes(rd *r, void *v, size_t n, const char *what) {
    gn_status st = need(r, n, what);
    if (st != GN_OK) return st;
    memcpy(v, r->p + r->pos, n);
    r->pos += n;
    return GN_OK;
}
static gn_status rd_u32(rd *r, uint32_t *v, const char *what) { return rd_bytes(r, v, 4, what); }
static gn_status rd_u64(rd *r, uint64_t *v, const char *what) { return rd_bytes(r, v, 8, what); }

static gn_status rd_str(rd *r, gguf_str *s, const char *what) {
    uint64_t n;
    size_t at = r->pos;
    gn_status st = rd_u64(r, &n, what);
    if (st != GN_OK) return st;
    if (n > left(r))
        return gn_err(GN_ERR_FORMAT, "%s: offset %zu: %s has length %" PRIu64 " but only %zu bytes are left, "
                      "expected a string inside the file", r->path, at, what, n, left(r));
    s->p = (const char *)r->p + r->pos;
    s->len = n;
    r->pos += (size_t)n;
    return GN_OK;
}

// Bytes of one scalar value of type t (0 for string/array/unknown).
static size_t scalar_size(uint32_t t) {
    switch (t) {
    case GGUF_T_UINT8: case GGUF_T_INT8: case GGUF_T_BOOL: return 1;
    case GGUF_T_UINT16: case GGUF_T_INT16: return 2;
    case GGUF_T_UINT32: case GGUF_T_INT32: case GGUF_T_FLOAT32: return 4;
    case GGUF_T_UINT64: case GGUF_T_INT64: case GGUF_T_FLOAT64: return 8;
    default: return 0;
    }
}

// Widens the little-endian scalar of type t at p.
static void scalar_read(uint32_t t, const uint8_t *p, int64_t *i, double *f) {
    *i = 0;
    *f = 0;
    switch (t) {
    case GGUF_T_UINT8: *i = p[0]; break;
    case GGUF_T_INT8: *i = (int8_t)p[0]; break;
    case GGUF_T_BOOL: *i = p[0] != 0; break;
    case GGUF_T_UINT16: { uint16_t v; memcpy(&v, p, 2); *i = v; break; }
    case GGUF_T_INT16: { int16_t v; memcpy(&v, p, 2); *i = v; break; }
    case GGUF_T_UINT32: { uint32_t v; memcpy(&v, p, 4); *i = v; break; }
    case GGUF_T_INT32: { int32_t v; memcpy(&v, p, 4); *i = v; break; }
    case GGUF_T_UINT64: { uint64_t v; memcpy(&v, p, 8); *i = (int64_t)v; break; }
    case GGUF_T_INT64: { int64_t v; memcpy(&v, p, 8); *i = v; break; }
    case GGUF_T_FLOAT32: { float v; memcpy(&v, p, 4); *f = v; return; }
    case GGUF_T_FLOAT64: { double v; memcpy(&v, p, 8); *f = v; return; }
    default: return;
    }
    *f = (double)*i;
}

// Skips one array body (type already read) inside a nested array, checking
// every length; depth bounds the recursion.
static gn_status skip_array(rd *r, const char *key, int depth) {
    uint32_t et;
    uint64_t n;
    size_t at = r->pos;
    gn_status st = rd_u32(r, &et, "an array element type");
    if (st == GN_OK) st = rd_u64(r, &n, "an array length");
    if (st != GN_OK) return st;
    if (et == GGUF_T_STRING) {
        if (n > left(r) / 8)
            return gn_err(GN_ERR_FORMAT, "%s: offset %zu: key '%s': array of %" PRIu64 " strings cannot fit in the "
                          "%zu bytes left, expected a smaller count", r->path, at, key, n, left(r));
        for (uint64_t k = 0; k < n; k++) {
            gguf_str s;
            if ((st = rd_str(r, &s, "an array string")) != GN_OK) return st;
        }
    } else if (et == GGUF_T_ARRAY) {
        if (depth >= GGUF_MAX_ARRAY_DEPTH)
            return gn_err(GN_ERR_UNSUPPORTED, "%s: offset %zu: key '%s': arrays nested deeper than %d, expected "
                          "flatter metadata", r->path, at, key, GGUF_MAX_ARRAY_DEPTH);
        if (n > left(r) / 12)
            return gn_err(GN_ERR_FORMAT, "%s: offset %zu: key '%s': array of %" PRIu64 " arrays cannot fit in the "
                          "%zu bytes left, expected a smaller count", r->path, at, key, n, left(r));
        for (uint64_t k = 0; k < n; k++)
            if ((st = skip_array(r, key, depth + 1)) != GN_OK) return st;
    } else {
        size_t es = scalar_size(et);
        if (!es)
            return gn_err(GN_ERR_FORMAT, "%s: offset %zu: key '%s': array element type %u, expected 0..12",
                          r->path, at, key, et);
        if (n > left(r) / es)
            return gn_err(GN_ERR_FORMAT, "%s: offset %zu: key '%s': array of %" PRIu64 " elements cannot fit in "
                          "the %zu bytes left, expected a smaller count", r->path, at, key, n, left(r));
        r->pos += (size_t)n * es;
    }
    return GN_OK;
}

// Reads the value of kv (its type already set).
static gn_status read_value(rd *r, gguf_kv *kv) {
    size_t at = r->pos;
    gn_status st;
    uint32_t t = kv->type;
    if (t == GGUF_T_STRING) return rd_str(r, &kv->s, "a string value");
    if (t != GGUF_T_ARRAY) {
        size_t es = scalar_size(t);
        if (!es)
            return gn_err(GN_ERR_FORMAT, "%s: offset %zu: key '%s': value type %u, expected 0..12",
                          r->path, at - 4, kv->key, t);
        if ((st = need(r, es, "a value")) != GN_OK) return st;
        scalar_read(t, r->p + r->pos, &kv->i, &kv->f);
        r->pos += es;
        return GN_OK;
    }
    uint32_t et;
    uint64_t n;
    if ((st = rd_u32(r, &et, "an array element type")) != GN_OK) return st;
    if ((st = rd_u64(r, &n, "an array length")) != GN_OK) return st;
    kv->arr_type = (gguf_type)et;
    kv->arr_n = n;
    if (et == GGUF_T_STRING) {
        if (n > left(r) / 8)
            return gn_err(GN_ERR_FORMAT, "%s: offset %zu: key '%s': array of %" PRIu64 " strings cannot fit in the "
                          "%zu bytes left, expected a smaller count", r->path, at, kv->key, n, left(r));
        if ((st = gn_check_alloc(r->path, "a string array", n * sizeof *kv->arr_str)) != GN_OK) return st;
        kv->arr_str = gn_malloc((size_t)(n ? n : 1) * sizeof *kv->arr_str);
        for (uint64_t k = 0; k < n; k++)
            if ((st = rd_str(r, &kv->arr_str[k], "an array string")) != GN_OK) return st;
        return GN_OK;
    }
    if (et == GGUF_T_ARRAY) { // array of arrays: validated, kept raw (no getters)
        if (n > left(r) / 12)
            return gn_err(GN_ERR_FORMAT, "%s: offset %zu: key '%s': array of %" PRIu64 " arrays cannot fit in the "
                          "%zu bytes left, expected a smaller count", r->path, at, kv->key, n, left(r));
        kv->arr_data = r->p + r->pos;
        for (uint64_t k = 0; k < n; k++)
            if ((st = skip_array(r, kv->key, 1)) != GN_OK) return st;
        return GN_OK;
    }
    size_t es = scalar_size(et);
    if (!es)
        return gn_err(GN_ERR_FORMAT, "%s: offset %zu: key '%s': array element type %u, expected 0..12",
                      r->path, at, kv->key, et);
    if (n > left(r) / es)
        return gn_err(GN_ERR_FORMAT, "%s: offset %zu: key '%s': array of %" PRIu64 " elements cannot fit in the "
                      "%zu bytes left, expected a smaller count", r->path, at, kv->key, n, left(r));
    kv->arr_data = r->p + r->pos;
    r->pos += (size_t)n * es;
    return GN_OK;
}

// ----------------------------------------------------------------------------
// ggml types

static const char *ggml_type_name(uint32_t t) {
    static const char *names[] = {
        "f32", "f16", "q4_0", "q4_1", "q4_2 (removed)", "q4_3 (removed)", "q5_0", "q5_1", "q8_0", "q8_1",
        "q2_K", "q3_K", "q4_K", "q5_K", "q6_K", "q8_K", "iq2_xxs", "iq2_xs", "iq3_xxs", "iq1_s",
        "iq4_nl", "iq3_s", "iq2_s", "iq4_xs", "i8", "i16", "i32", "i64", "f64", "iq1_m",
        "bf16", "q4_0_4_4 (removed)", "q4_0_4_8 (removed)", "q4_0_8_8 (removed)", "tq1_0", "tq2_0",
    };
    return t < sizeof names / sizeof names[0] ? names[t] : "unknown";
}

static int ggml_to_dtype(uint32_t t, gn_dtype *dt) {
    switch (t) {
    case GGML_T_F32: *dt = GN_DTYPE_F32; return 1;
    case GGML_T_F16: *dt = GN_DTYPE_F16; return 1;
    case GGML_T_BF16: *dt = GN_DTYPE_BF16; return 1;
    case GGML_T_Q4_0: *dt = GN_DTYPE_Q4_0; return 1;
    case GGML_T_Q4_1: *dt = GN_DTYPE_Q4_1; return 1;
    case GGML_T_Q5_0: *dt = GN_DTYPE_Q5_0; return 1;
    case GGML_T_Q5_1: *dt = GN_DTYPE_Q5_1; return 1;
    case GGML_T_Q8_0: *dt = GN_DTYPE_Q8_0; return 1;
    case GGML_T_Q8_1: *dt = GN_DTYPE_Q8_1; return 1;
    case GGML_T_Q4_K: *dt = GN_DTYPE_Q4_K; return 1;
    case GGML_T_Q5_K: *dt = GN_DTYPE_Q5_K; return 1;
    case GGML_T_Q6_K: *dt = GN_DTYPE_Q6_K; return 1;
    case 24: *dt = GN_DTYPE_I8; return 1;   // GGML_TYPE_I8
    case 25: *dt = GN_DTYPE_I16; return 1;  // GGML_TYPE_I16
    case 26: *dt = GN_DTYPE_I32; return 1;  // GGML_TYPE_I32
    case 27: *dt = GN_DTYPE_I64; return 1;  // GGML_TYPE_I64
    case 28: *dt = GN_DTYPE_F64; return 1;  // GGML_TYPE_F64
    default: return 0;
    }
}

// ----------------------------------------------------------------------------
// open / free

static int cmp_kv_key(const void *a, const void *b) {
    return strcmp((*(const gguf_kv *const *)a)->key, (*(const gguf_kv *const *)b)->key);
}

// GN_ERR_FORMAT when two keys are equal (ggml refuses such files too).
static gn_status check_dup_keys(const gn_gguf *g) {
    if (g->n_kv < 2) return GN_OK;
    const gguf_kv **v = gn_malloc((size_t)g->n_kv * sizeof *v);
    for (int64_t i = 0; i < g->n_kv; i++) v[i] = &g->kv[i];
    qsort(v, (size_t)g->n_kv, sizeof *v, cmp_kv_key);
    gn_status st = GN_OK;
    for (int64_t i = 1; i < g->n_kv; i++)
        if (strcmp(v[i - 1]->key, v[i]->key) == 0) {
            st = gn_err(GN_ERR_FORMAT, "%s: key '%s' appears twice, expected unique metadata keys",
                        g->map.path, v[i]->key);
            break;
        }
    free(v);
    return st;
}

static gn_status parse(gn_gguf *g) {
    rd r = {g->map.data, g->map.size, 0, g->map.path};
    const char *path = r.path;
    gn_status st;
    if (r.size < 4 || memcmp(r.p, "GGUF", 4) != 0)
        return gn_err(GN_ERR_FORMAT, "%s: offset 0: bad magic, expected \"GGUF\"", path);
    r.pos = 4;
    if ((st = rd_u32(&r, &g->version, "the version")) != GN_OK) return st;
    if (g->version == 1)
        return gn_err(GN_ERR_UNSUPPORTED, "%s: offset 4: unsupported GGUF version 1, expected 2 or 3 "
                      "(re-convert the model with a current llama.cpp)", path);
    if (g->version > 0xffff && (g->version & 0xffff) == 0)
        return gn_err(GN_ERR_UNSUPPORTED, "%s: offset 4: big-endian GGUF files are not supported, expected a "
                      "little-endian file", path);
    if (g->version != 2 && g->version != 3)
        return gn_err(GN_ERR_UNSUPPORTED, "%s: offset 4: unsupported GGUF version %u, expected 2 or 3",
                      path, g->version);
    uint64_t n_tensors, n_kv;
    if ((st = rd_u64(&r, &n_tensors, "the tensor count")) != GN_OK) return st;
    if ((st = rd_u64(&r, &n_kv, "the metadata count")) != GN_OK) return st;
    // a key/value takes at least 8 (key length) + 4 (type) + 1 bytes
    if (n_kv > left(&r) / 13)
        return gn_err(GN_ERR_FORMAT, "%s: offset 16: metadata count %" PRIu64 " cannot fit in the %zu bytes "
                      "left, expected a smaller count", path, n_kv, left(&r));
    // a tensor info takes at least 8 (name length) + 4 (n_dims) + 4 (type) + 8 (offset) bytes
    if (n_tensors > left(&r) / 24 || n_tensors > INT32_MAX)
        return gn_err(GN_ERR_FORMAT, "%s: offset 8: tensor count %" PRIu64 " cannot fit in the %zu bytes "
                      "left, expected a smaller count", path, n_tensors, left(&r));

    if ((st = gn_check_alloc(path, "the metadata table", n_kv * sizeof *g->kv)) != GN_OK ||
        (st = gn_check_alloc(path, "the tensor table", n_tensors * (sizeof(gn_tensor) + 8))) != GN_OK)
        return st;
    g->kv = gn_calloc((size_t)(n_kv ? n_kv : 1), sizeof *g->kv);
    g->alignment = 32;
    for (uint64_t k = 0; k < n_kv; k++) {
        gguf_kv *kv = &g->kv[k];
        gguf_str key;
        if ((st = rd_str(&r, &key, "a metadata key")) != GN_OK) return st;
        kv->key = gn_strndup(key.p, (size_t)key.len);
        g->n_kv = (int64_t)k + 1; // so gn_gguf_free releases what was read
        uint32_t t;
        if ((st = rd_u32(&r, &t, "a value type")) != GN_OK) return st;
        if (t > GGUF_T_FLOAT64)
            return gn_err(GN_ERR_FORMAT, "%s: offset %zu: key '%s': value type %u, expected 0..12",
                          path, r.pos - 4, kv->key, t);
        kv->type = (gguf_type)t;
        kv->raw_off = r.pos;
        if ((st = read_value(&r, kv)) != GN_OK) return st;
        kv->raw_len = r.pos - kv->raw_off;
        if (strcmp(kv->key, "general.alignment") == 0) {
            if (kv->type != GGUF_T_UINT32 || kv->i == 0 || (kv->i & (kv->i - 1)) != 0)
                return gn_err(GN_ERR_FORMAT, "%s: key 'general.alignment': bad value, expected a uint32 power of 2",
                              path);
            g->alignment = (size_t)kv->i;
        }
    }
    if ((st = check_dup_keys(g)) != GN_OK) return st;

    const char *file = gn_tt_add_file(&g->tensors, path);
    uint64_t *offs = gn_malloc((size_t)(n_tensors ? n_tensors : 1) * sizeof *offs);
    for (uint64_t k = 0; k < n_tensors; k++) {
        size_t at = r.pos;
        gguf_str name;
        uint32_t nd, type;
        if ((st = rd_str(&r, &name, "a tensor name")) != GN_OK) goto done;
        gn_tensor *t = gn_tt_push(&g->tensors);
        t->name = gn_strndup(name.p, (size_t)name.len);
        t->file = file;
        if ((st = rd_u32(&r, &nd, "a tensor's n_dims")) != GN_OK) goto done;
        if (nd > GN_MAX_DIMS) {
            st = gn_err(GN_ERR_FORMAT, "%s: offset %zu: tensor '%s': n_dims %u, expected at most %d",
                        path, at, t->name, nd, GN_MAX_DIMS);
            goto done;
        }
        t->ndim = (int)nd;
        for (uint32_t d = 0; d < nd; d++) {
            uint64_t ne;
            if ((st = rd_u64(&r, &ne, "a tensor dimension")) != GN_OK) goto done;
            if (ne > (uint64_t)INT64_MAX) {
                st = gn_err(GN_ERR_FORMAT, "%s: offset %zu: tensor '%s': ne[%u] = %" PRIu64 ", expected below 2^63",
                            path, r.pos - 8, t->name, d, ne);
                goto done;
            }
            t->shape[nd - 1 - d] = (int64_t)ne; // PyTorch order: ne[0] (innermost) last
        }
        if (!gn_shape_nelem(t->shape, t->ndim, &t->nelem)) {
            st = gn_err(GN_ERR_FORMAT, "%s: offset %zu: tensor '%s': shape has too many elements, expected a "
                        "product below 2^63", path, at, t->name);
            goto done;
        }
        if ((st = rd_u32(&r, &type, "a tensor type")) != GN_OK) goto done;
        if (!ggml_to_dtype(type, &t->dtype)) {
            st = gn_err(GN_ERR_UNSUPPORTED, "%s: tensor '%s': ggml type %u (%s) is not supported, expected f32, "
                        "f16, bf16, q4_0, q4_1, q5_0, q5_1, q8_0, q8_1, q4_K, q5_K or q6_K",
                        path, t->name, type, ggml_type_name(type));
            goto done;
        }
        int blk = gn_dtype_block(t->dtype);
        int64_t ne0 = nd ? t->shape[nd - 1] : 1;
        if (ne0 % blk) {
            st = gn_err(GN_ERR_FORMAT, "%s: offset %zu: tensor '%s': ne[0] = %lld is not a multiple of the %s "
                        "block size %d", path, at, t->name, (long long)ne0, gn_dtype_name(t->dtype), blk);
            goto done;
        }
        t->nbytes = gn_dtype_nbytes(t->dtype, t->nelem);
        if (t->nbytes == 0 && t->nelem > 0) {
            st = gn_err(GN_ERR_FORMAT, "%s: offset %zu: tensor '%s': byte size overflows, expected a smaller shape",
                        path, at, t->name);
            goto done;
        }
        if ((st = rd_u64(&r, &offs[k], "a tensor offset")) != GN_OK) goto done;
    }
    // the data section starts at the next multiple of the alignment
    size_t pad = (g->alignment - r.pos % g->alignment) % g->alignment;
    if (n_tensors > 0 && pad > left(&r)) {
        st = gn_err(GN_ERR_FORMAT, "%s: offset %zu: file ends before the tensor data, expected %zu padding bytes",
                    path, r.pos, pad);
        goto done;
    }
    g->data_offset = n_tensors > 0 ? r.pos + pad : r.pos;
    size_t dsize = r.size - g->data_offset;
    for (uint64_t k = 0; k < n_tensors; k++) {
        gn_tensor *t = &g->tensors.t[k];
        if (offs[k] % g->alignment) {
            st = gn_err(GN_ERR_FORMAT, "%s: tensor '%s': data offset %" PRIu64 " is not a multiple of the "
                        "alignment %zu", path, t->name, offs[k], g->alignment);
            goto done;
        }
        if (offs[k] > dsize || t->nbytes > dsize - offs[k]) {
            st = gn_err(GN_ERR_FORMAT, "%s: tensor '%s': data [%" PRIu64 ", +%zu) exceeds the %zu-byte data "
                        "section at offset %zu, expected it inside the file (truncated download?)",
                        path, t->name, offs[k], t->nbytes, dsize, g->data_offset);
            goto done;
        }
        t->data = g->map.data + g->data_offset + offs[k];
    }
    st = gn_tt_check_dups(&g->tensors, 0, path);
done:
    free(offs);
    return st;
}

gn_status gn_gguf_open(gn_gguf **out, const char *path) {
    *out = NULL;
    gn_gguf *g = gn_calloc(1, sizeof *g);
    gn_tensor_table_init(&g->tensors);
    gn_status st = gn_mmap_open(&g->map, path);
    if (st != GN_OK) { free(g); return st; }
    st = parse(g);
    if (st != GN_OK) { gn_gguf_free(g); return st; }
    *out = g;
    return GN_OK;
}

void gn_gguf_free(gn_gguf *g) {
    if (!g) return;
    for (int64_t i = 0; i < g->n_kv; i++) {
        free(g->kv[i].key);
        free(g->kv[i].arr_str);
    }
    free(g->kv);
    gn_tensor_table_free(&g->tensors);
    gn_mmap_close(&g->map);
    free(g);
}

// ----------------------------------------------------------------------------
// getters

const gguf_kv *gn_gguf_get(const gn_gguf *g, const char *key) {
    for (int64_t i = 0; i < g->n_kv; i++)
        if (strcmp(g->kv[i].key, key) == 0) return &g->kv[i];
    return NULL;
}

static int is_int_type(gguf_type t) {
    return t != GGUF_T_FLOAT32 && t != GGUF_T_FLOAT64 && t != GGUF_T_STRING && t != GGUF_T_ARRAY &&
           scalar_size(t) != 0;
}

int64_t gn_gguf_get_int(const gn_gguf *g, const char *key, int64_t dflt) {
    const gguf_kv *kv = gn_gguf_get(g, key);
    return kv && is_int_type(kv->type) ? kv->i : dflt;
}

double gn_gguf_get_float(const gn_gguf *g, const char *key, double dflt) {
    const gguf_kv *kv = gn_gguf_get(g, key);
    return kv && scalar_size(kv->type) != 0 && kv->type != GGUF_T_BOOL ? kv->f : dflt;
}

char *gn_gguf_get_str(const gn_gguf *g, const char *key) {
    const gguf_kv *kv = gn_gguf_get(g, key);
    return kv && kv->type == GGUF_T_STRING ? gn_strndup(kv->s.p, (size_t)kv->s.len) : NULL;
}

// float -> int64 without undefined behaviour for NaN/out-of-range values.
static int64_t f2i(double f) {
    if (f != f) return 0;
    if (f >= 9.2e18) return INT64_MAX;
    if (f <= -9.2e18) return INT64_MIN;
    return (int64_t)f;
}

int64_t gn_gguf_arr_int(const gguf_kv *kv, uint64_t i) {
    GN_ASSERT(kv->type == GGUF_T_ARRAY && i < kv->arr_n);
    size_t es = scalar_size(kv->arr_type);
    if (!es || !kv->arr_data) return 0;
    int64_t v;
    double f;
    scalar_read(kv->arr_type, kv->arr_data + i * es, &v, &f);
    return is_int_type(kv->arr_type) ? v : f2i(f);
}

double gn_gguf_arr_float(const gguf_kv *kv, uint64_t i) {
    GN_ASSERT(kv->type == GGUF_T_ARRAY && i < kv->arr_n);
    size_t es = scalar_size(kv->arr_type);
    if (!es || !kv->arr_data) return 0;
    int64_t v;
    double f;
    scalar_read(kv->arr_type, kv->arr_data + i * es, &v, &f);
    return f;
}

// ----------------------------------------------------------------------------
// q/k row order

void gn_gguf_permute_qk(float *w, int n_heads, int hs, int64_t cols, int to_gguf) {
    float *tmp = gn_malloc(sizeof(float) * (size_t)hs * (size_t)cols);
    size_t rb = sizeof(float) * (size_t)cols;
    for (int h = 0; h < n_heads; h++) {
        float *head = w + (size_t)h * hs * cols;
        for (int i = 0; i < hs / 2; i++) {
            int64_t hf0 = i, hf1 = i + hs / 2, il0 = 2 * i, il1 = 2 * i + 1;
            if (to_gguf) {
                memcpy(tmp + il0 * cols, head + hf0 * cols, rb);
                memcpy(tmp + il1 * cols, head + hf1 * cols, rb);
            } else {
                memcpy(tmp + hf0 * cols, head + il0 * cols, rb);
                memcpy(tmp + hf1 * cols, head + il1 * cols, rb);
            }
        }
        memcpy(head, tmp, rb * (size_t)hs);
    }
    free(tmp);
}
