/*
 * gguf_write.c — writing GGUF v3: metadata copied from an opened GGUF (so a
 * merged model keeps its tokenizer and hyperparameters exactly), a few u32 keys
 * set here, and F32 / F16 / Q8_0 tensors. Written to a temporary file, fsynced,
 * renamed.
 */
#include "gguf.h"

#include <errno.h>  // errno
#include <math.h>   // fabsf, roundf
#include <stdio.h>  // FILE
#include <stdlib.h> // free
#include <unistd.h> // fsync

typedef struct {
    FILE *f;
    uint64_t off;
    int bad;
} wr;

static void put(wr *w, const void *p, size_t n) {
    if (n && fwrite(p, 1, n, w->f) != n) w->bad = 1;
    w->off += n;
}
static void put_u32(wr *w, uint32_t v) { put(w, &v, 4); }
static void put_u64(wr *w, uint64_t v) { put(w, &v, 8); }
static void put_str(wr *w, const char *s, size_t n) { put_u64(w, n); put(w, s, n); }
static void pad_to(wr *w, uint64_t a) {
    static const uint8_t z[64] = {0};
    while (w->off % a) put(w, z, (size_t)((a - w->off % a) < 64 ? (a - w->off % a) : 64));
}

static uint32_t ggml_type(gn_dtype dt) {
    return dt == GN_DTYPE_F16 ? GGML_T_F16 : dt == GN_DTYPE_Q8_0 ? GGML_T_Q8_0 : GGML_T_F32;
}

static size_t tensor_bytes(const gn_gguf_tensor_out *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    if (t->dtype == GN_DTYPE_F16) return (size_t)n * 2;
    if (t->dtype == GN_DTYPE_Q8_0) return (size_t)(n / 32) * 34;
    return (size_t)n * 4;
}

// ggml's block_q8_0: f16 scale d = amax/127, 32 int8 codes round(x/d)
static void put_q8_0(wr *w, const float *x, int64_t n) {
    for (int64_t b = 0; b < n; b += 32) {
        float amax = 0.0f;
        for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[b + j]));
        float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        uint16_t dh = gn_f32_to_f16(d);
        int8_t q[32];
        for (int j = 0; j < 32; j++) q[j] = (int8_t)roundf(x[b + j] * id);
        put(w, &dh, 2);
        put(w, q, 32);
    }
}

gn_status gn_gguf_write(const char *path, const gn_gguf *meta, const char *const *drop, int n_drop,
                        const char *const *u32_keys, const uint32_t *u32_vals, int n_u32,
                        const gn_gguf_tensor_out *ts, int n) {
    for (int i = 0; i < n; i++) {
        int64_t inner = ts[i].ndim ? ts[i].shape[ts[i].ndim - 1] : 1;
        if (ts[i].dtype == GN_DTYPE_Q8_0 && inner % 32)
            return gn_err(GN_ERR_ARG, "%s: tensor '%s': q8_0 needs rows that are a multiple of 32 (row length %lld)", path,
                          ts[i].name, (long long)inner);
    }
    size_t pl = strlen(path);
    char *tmp = gn_malloc(pl + 32);
    snprintf(tmp, pl + 32, "%s.tmp.%ld", path, (long)getpid());
    wr w = {fopen(tmp, "wb"), 0, 0};
    if (!w.f) {
        gn_status st = gn_err(GN_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
        free(tmp);
        return st;
    }
    const uint64_t align = 32;
    // which metadata survive
    int64_t nkv = 0;
    for (int64_t i = 0; meta && i < meta->n_kv; i++) {
        int skip = !strcmp(meta->kv[i].key, "general.alignment");
        for (int d = 0; d < n_drop && !skip; d++) skip = !strcmp(meta->kv[i].key, drop[d]);
        for (int d = 0; d < n_u32 && !skip; d++) skip = !strcmp(meta->kv[i].key, u32_keys[d]);
        nkv += !skip;
    }
    put(&w, "GGUF", 4);
    put_u32(&w, 3);
    put_u64(&w, (uint64_t)n);
    put_u64(&w, (uint64_t)(nkv + n_u32));
    for (int64_t i = 0; meta && i < meta->n_kv; i++) {
        const gguf_kv *kv = &meta->kv[i];
        int skip = !strcmp(kv->key, "general.alignment");
        for (int d = 0; d < n_drop && !skip; d++) skip = !strcmp(kv->key, drop[d]);
        for (int d = 0; d < n_u32 && !skip; d++) skip = !strcmp(kv->key, u32_keys[d]);
        if (skip) continue;
        put_str(&w, kv->key, strlen(kv->key));
        put_u32(&w, (uint32_t)kv->type);
        put(&w, meta->map.data + kv->raw_off, kv->raw_len);
    }
    for (int i = 0; i < n_u32; i++) {
        put_str(&w, u32_keys[i], strlen(u32_keys[i]));
        put_u32(&w, GGUF_T_UINT32);
        put_u32(&w, u32_vals[i]);
    }
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        put_str(&w, ts[i].name, strlen(ts[i].name));
        put_u32(&w, (uint32_t)ts[i].ndim);
        for (int d = ts[i].ndim - 1; d >= 0; d--) put_u64(&w, (uint64_t)ts[i].shape[d]); // ne[0] innermost
        put_u32(&w, ggml_type(ts[i].dtype));
        put_u64(&w, off);
        off += tensor_bytes(&ts[i]);
        off = (off + align - 1) / align * align;
    }
    pad_to(&w, align);
    for (int i = 0; i < n && !w.bad; i++) {
        int64_t ne = 1;
        for (int d = 0; d < ts[i].ndim; d++) ne *= ts[i].shape[d];
        if (ts[i].dtype == GN_DTYPE_F32) put(&w, ts[i].data, (size_t)ne * 4);
        else if (ts[i].dtype == GN_DTYPE_F16) {
            for (int64_t j = 0; j < ne; j++) { uint16_t h = gn_f32_to_f16(ts[i].data[j]); put(&w, &h, 2); }
        } else put_q8_0(&w, ts[i].data, ne);
        pad_to(&w, align);
    }
    if (fflush(w.f) != 0 || fsync(fileno(w.f)) != 0) w.bad = 1;
    if (fclose(w.f) != 0) w.bad = 1;
    if (w.bad || rename(tmp, path) != 0) {
        gn_status st = gn_err(GN_ERR_IO, "%s: write failed: %s", path, strerror(errno));
        unlink(tmp);
        free(tmp);
        return st;
    }
    free(tmp);
    return GN_OK;
}
