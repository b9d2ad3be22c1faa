/*
 * safetensors.c — reader (mmap) and atomic streaming writer for .safetensors.
 *
 * Layout (https://huggingface.co/docs/safetensors, "Format"):
 *   u64 little-endian N | N bytes of UTF-8 JSON header | data section
 *   header: {"__metadata__": {str: str}, "<name>": {"dtype": "F32",
 *            "shape": [d0, d1, ...], "data_offsets": [begin, end]}, ...}
 *   offsets are relative to the data section, end exclusive. The Python
 *   library pads the header with spaces so the data section starts 8-aligned.
 *
 * The reader checks the header length against the file, every tensor's dtype,
 * shape (non-negative, product overflow), offsets (begin <= end, inside the
 * data section) and byte count (== elements * dtype size). Tensors point into
 * the mapping, which the table owns.
 */
#include "tensors.h"       // gn_safetensors_load, gn_safetensors_save
#include "table_build.h"   // gn_tt_push, gn_tt_rollback, ...
#include "core/buf.h" // gn_buf

#include <cjson/cJSON.h>   // cJSON_ParseWithLengthOpts
#include <errno.h>         // errno
#include <fcntl.h>         // open
#include <inttypes.h>      // PRIu64
#include <libgen.h>        // dirname
#include <math.h>          // floor, isfinite
#include <stdio.h>         // snprintf
#include <stdlib.h>        // free
#include <unistd.h>        // write, fsync, close, unlink

// ----------------------------------------------------------------------------
// dtype names

static const struct { const char *name; gn_dtype dt; } st_dtypes[] = {
    {"F32", GN_DTYPE_F32}, {"F16", GN_DTYPE_F16}, {"BF16", GN_DTYPE_BF16},
    {"F64", GN_DTYPE_F64}, {"I64", GN_DTYPE_I64}, {"I32", GN_DTYPE_I32},
    {"I16", GN_DTYPE_I16}, {"I8", GN_DTYPE_I8},   {"U8", GN_DTYPE_U8},
    {"BOOL", GN_DTYPE_BOOL},
};
#define N_ST_DTYPES (int)(sizeof st_dtypes / sizeof st_dtypes[0])

static int st_dtype_from_name(const char *s, gn_dtype *dt) {
    for (int i = 0; i < N_ST_DTYPES; i++)
        if (strcmp(s, st_dtypes[i].name) == 0) { *dt = st_dtypes[i].dt; return 1; }
    return 0;
}

static const char *st_dtype_to_name(gn_dtype dt) {
    for (int i = 0; i < N_ST_DTYPES; i++)
        if (st_dtypes[i].dt == dt) return st_dtypes[i].name;
    return NULL;
}

// ----------------------------------------------------------------------------
// reader

// A JSON number that is a whole number in [0, 2^53] (exact in a double).
static int json_uint(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return 0;
    double d = v->valuedouble;
    if (!isfinite(d) || d < 0 || d > 9007199254740992.0 || floor(d) != d) return 0;
    *out = (uint64_t)d;
    return 1;
}

// Parses one tensor entry of the header into *t (name excluded).
static gn_status parse_entry(const char *path, const cJSON *e, const uint8_t *base, size_t dsize,
                             gn_tensor *t) {
    const char *nm = e->string;
    if (!cJSON_IsObject(e))
        return gn_err(GN_ERR_FORMAT, "%s: header: tensor '%s': value is not an object, expected "
                      "{\"dtype\", \"shape\", \"data_offsets\"}", path, nm);
    const cJSON *jd = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *js = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *jo = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(jd))
        return gn_err(GN_ERR_FORMAT, "%s: header: tensor '%s': missing \"dtype\", expected a string like \"F32\"", path, nm);
    if (!st_dtype_from_name(jd->valuestring, &t->dtype))
        return gn_err(GN_ERR_UNSUPPORTED, "%s: header: tensor '%s': dtype \"%.32s\" is not supported, expected "
                      "F32, F16, BF16, F64, I64, I32, I16, I8, U8 or BOOL", path, nm, jd->valuestring);
    if (!cJSON_IsArray(js))
        return gn_err(GN_ERR_FORMAT, "%s: header: tensor '%s': missing \"shape\", expected an array of sizes", path, nm);
    int nd = cJSON_GetArraySize(js);
    if (nd > GN_MAX_DIMS)
        return gn_err(GN_ERR_UNSUPPORTED, "%s: header: tensor '%s': %d dimensions, expected at most %d",
                      path, nm, nd, GN_MAX_DIMS);
    t->ndim = nd;
    int k = 0;
    for (const cJSON *d = js->child; d; d = d->next, k++) {
        uint64_t v;
        if (!json_uint(d, &v))
            return gn_err(GN_ERR_FORMAT, "%s: header: tensor '%s': shape[%d] is not a size, expected a "
                          "non-negative integer", path, nm, k);
        t->shape[k] = (int64_t)v;
    }
    if (!gn_shape_nelem(t->shape, t->ndim, &t->nelem))
        return gn_err(GN_ERR_FORMAT, "%s: header: tensor '%s': shape has too many elements, expected a product "
                      "below 2^63", path, nm);
    uint64_t b, en;
    if (!cJSON_IsArray(jo) || cJSON_GetArraySize(jo) != 2 || !json_uint(jo->child, &b) ||
        !json_uint(jo->child->next, &en))
        return gn_err(GN_ERR_FORMAT, "%s: header: tensor '%s': bad \"data_offsets\", expected [begin, end] "
                      "as non-negative integers", path, nm);
    if (b > en)
        return gn_err(GN_ERR_FORMAT, "%s: header: tensor '%s': data_offsets [%" PRIu64 ",%" PRIu64 "] has "
                      "begin > end, expected begin <= end", path, nm, b, en);
    if (en > dsize)
        return gn_err(GN_ERR_FORMAT, "%s: header: tensor '%s': data_offsets [%" PRIu64 ",%" PRIu64 "] exceed "
                      "the %zu-byte data section", path, nm, b, en, dsize);
    size_t need = gn_dtype_nbytes(t->dtype, t->nelem);
    if ((need == 0 && t->nelem > 0) || en - b != need)
        return gn_err(GN_ERR_FORMAT, "%s: header: tensor '%s': data_offsets [%" PRIu64 ",%" PRIu64 "] hold %"
                      PRIu64 " bytes, expected %lld elements x %s = %zu bytes", path, nm, b, en, en - b,
                      (long long)t->nelem, jd->valuestring, need);
    t->data = base + b;
    t->nbytes = (size_t)(en - b);
    return GN_OK;
}

gn_status gn_safetensors_load(gn_tensor_table *tt, const char *path) {
    gn_tt_mark mk = gn_tt_mark_now(tt);
    gn_mmap m;
    gn_status st = gn_mmap_open(&m, path);
    if (st != GN_OK) return st;
    cJSON *root = NULL;
    if (m.size < 8) {
        st = gn_err(GN_ERR_FORMAT, "%s: offset 0: file is %zu bytes, expected at least 8 (a safetensors "
                    "header length)", path, m.size);
        goto fail;
    }
    uint64_t hlen;
    memcpy(&hlen, m.data, 8);
    if (hlen > m.size - 8) {
        st = gn_err(GN_ERR_FORMAT, "%s: offset 0: header length %" PRIu64 " exceeds the %zu bytes after it, "
                    "expected a safetensors file", path, hlen, m.size - 8);
        goto fail;
    }
    // the parsed header takes a few times its text in cJSON nodes
    if ((st = gn_check_alloc(path, "the JSON header", 4 * hlen)) != GN_OK) goto fail;
    const char *hdr = (const char *)m.data + 8, *end = NULL;
    root = cJSON_ParseWithLengthOpts(hdr, (size_t)hlen, &end, 0);
    if (!root) {
        size_t at = end && end >= hdr && end <= hdr + hlen ? (size_t)(end - hdr) : 0;
        st = gn_err(GN_ERR_FORMAT, "%s: header: invalid JSON near header byte %zu, expected a JSON object",
                    path, at);
        goto fail;
    }
    for (const char *p = end; p < hdr + hlen; p++) {
        if (*p != ' ' && *p != '\n' && *p != '\r' && *p != '\t' && *p != 0) {
            st = gn_err(GN_ERR_FORMAT, "%s: header: unexpected text after the JSON object at header byte %zu, "
                        "expected only space padding", path, (size_t)(p - hdr));
            goto fail;
        }
    }
    if (!cJSON_IsObject(root)) {
        st = gn_err(GN_ERR_FORMAT, "%s: header: not a JSON object, expected {\"name\": {...}, ...}", path);
        goto fail;
    }
    const uint8_t *base = m.data + 8 + hlen;
    size_t dsize = m.size - 8 - (size_t)hlen;
    const char *file = gn_tt_add_file(tt, path);
    for (const cJSON *e = root->child; e; e = e->next) {
        if (strcmp(e->string, "__metadata__") == 0) {
            if (!cJSON_IsObject(e)) {
                st = gn_err(GN_ERR_FORMAT, "%s: header: \"__metadata__\" is not an object, expected string pairs", path);
                goto fail;
            }
            continue;
        }
        gn_tensor tmp;
        memset(&tmp, 0, sizeof tmp);
        st = parse_entry(path, e, base, dsize, &tmp);
        if (st != GN_OK) goto fail;
        gn_tensor *t = gn_tt_push(tt);
        *t = tmp;
        t->name = gn_strdup(e->string);
        t->file = file;
    }
    st = gn_tt_check_dups(tt, mk.n, path);
    if (st != GN_OK) goto fail;
    cJSON_Delete(root);
    gn_tt_add_map(tt, &m);
    return GN_OK;
fail:
    cJSON_Delete(root);
    gn_tt_rollback(tt, mk);
    gn_mmap_close(&m);
    return st;
}

// ----------------------------------------------------------------------------
// writer

// Appends s as a JSON string literal (quotes, escapes; UTF-8 passes through).
static void sb_json_str(gn_buf *b, const char *s) {
    gn_buf_put(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char esc[8];
        if (c == '"' || c == '\\') { esc[0] = '\\'; esc[1] = (char)c; gn_buf_put(b, esc, 2); }
        else if (c < 0x20) { snprintf(esc, sizeof esc, "\\u%04x", c); gn_buf_put(b, esc, 6); }
        else gn_buf_put(b, (const char *)&c, 1);
    }
    gn_buf_put(b, "\"", 1);
}

static int write_all(int fd, const void *data, size_t n) {
    const uint8_t *p = data;
    while (n > 0) {
        size_t chunk = n > ((size_t)1 << 30) ? ((size_t)1 << 30) : n;
        ssize_t w = write(fd, p, chunk);
        if (w < 0) { if (errno == EINTR) continue; return -1; }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

// Data goes out grouped by element size, largest first (as the Python library
// does), so every tensor stays aligned to its element size when mapped.
static int elem_align(gn_dtype dt) {
    return gn_dtype_block(dt) == 1 ? (int)gn_dtype_nbytes(dt, 1) : 1;
}

gn_status gn_safetensors_save(const char *path, const gn_tensor_out *ts, int n,
                              const char *const *meta_kv, int n_meta) {
    if (n < 0 || n_meta < 0 || (n > 0 && !ts) || (n_meta > 0 && !meta_kv))
        return gn_err(GN_ERR_ARG, "%s: bad tensor/metadata counts %d/%d", path, n, n_meta);
    for (int i = 0; i < n; i++) {
        const gn_tensor_out *t = &ts[i];
        const char *nm = t->name ? t->name : "(null)";
        int64_t ne;
        if (!t->name || !t->name[0] || strcmp(t->name, "__metadata__") == 0)
            return gn_err(GN_ERR_ARG, "%s: tensor %d: name '%s' is not allowed, expected a non-empty name", path, i, nm);
        if (!st_dtype_to_name(t->dtype))
            return gn_err(GN_ERR_ARG, "%s: tensor '%s': dtype %s has no safetensors name, expected a plain type "
                          "(F32, F16, BF16, F64, ints, BOOL)", path, nm, gn_dtype_name(t->dtype));
        if (t->ndim < 0 || t->ndim > GN_MAX_DIMS || !gn_shape_nelem(t->shape, t->ndim, &ne))
            return gn_err(GN_ERR_ARG, "%s: tensor '%s': bad shape (%d dims), expected up to %d non-negative sizes",
                          path, nm, t->ndim, GN_MAX_DIMS);
        size_t need = gn_dtype_nbytes(t->dtype, ne);
        if ((need == 0 && ne > 0) || t->nbytes != need || (need > 0 && !t->data))
            return gn_err(GN_ERR_ARG, "%s: tensor '%s': %zu bytes given, expected %zu for its shape and dtype",
                          path, nm, t->nbytes, need);
        for (int j = 0; j < i; j++)
            if (strcmp(ts[j].name, t->name) == 0)
                return gn_err(GN_ERR_ARG, "%s: tensor '%s': name given twice, expected unique names", path, nm);
    }
    for (int i = 0; i < 2 * n_meta; i++)
        if (!meta_kv[i]) return gn_err(GN_ERR_ARG, "%s: metadata entry %d is NULL, expected a string", path, i / 2);

    // data order: stable by element size, largest first
    int *order = gn_malloc((size_t)(n > 0 ? n : 1) * sizeof *order);
    uint64_t *begin = gn_malloc((size_t)(n > 0 ? n : 1) * sizeof *begin);
    int k = 0;
    for (int a = 8; a >= 1; a /= 2)
        for (int i = 0; i < n; i++)
            if (elem_align(ts[i].dtype) == a) order[k++] = i;
    GN_ASSERT(k == n);
    uint64_t off = 0;
    for (int j = 0; j < n; j++) { begin[order[j]] = off; off += ts[order[j]].nbytes; }

    // header, in the order given
    gn_buf h = {0};
    char num[96];
    gn_buf_puts(&h, "{");
    int first = 1;
    if (n_meta > 0) {
        gn_buf_puts(&h, "\"__metadata__\":{");
        for (int i = 0; i < n_meta; i++) {
            if (i) gn_buf_puts(&h, ",");
            sb_json_str(&h, meta_kv[2 * i]);
            gn_buf_puts(&h, ":");
            sb_json_str(&h, meta_kv[2 * i + 1]);
        }
        gn_buf_puts(&h, "}");
        first = 0;
    }
    for (int i = 0; i < n; i++) {
        const gn_tensor_out *t = &ts[i];
        if (!first) gn_buf_puts(&h, ",");
        first = 0;
        sb_json_str(&h, t->name);
        gn_buf_puts(&h, ":{\"dtype\":\"");
        gn_buf_puts(&h, st_dtype_to_name(t->dtype));
        gn_buf_puts(&h, "\",\"shape\":[");
        for (int d = 0; d < t->ndim; d++) {
            snprintf(num, sizeof num, "%s%lld", d ? "," : "", (long long)t->shape[d]);
            gn_buf_puts(&h, num);
        }
        snprintf(num, sizeof num, "],\"data_offsets\":[%" PRIu64 ",%" PRIu64 "]}", begin[i],
                 begin[i] + (uint64_t)t->nbytes);
        gn_buf_puts(&h, num);
    }
    gn_buf_puts(&h, "}");
    while (h.len % 8) gn_buf_puts(&h, " ");
    uint64_t hlen = h.len;

    // stream to a temp file in the same folder, fsync, rename
    size_t pl = strlen(path);
    char *tmp = gn_malloc(pl + 32);
    snprintf(tmp, pl + 32, "%s.tmp.%ld", path, (long)getpid());
    gn_status st = GN_OK;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        st = gn_err(GN_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
        goto done;
    }
    int bad = write_all(fd, &hlen, 8) || write_all(fd, h.buf, h.len);
    for (int j = 0; j < n && !bad; j++)
        if (ts[order[j]].nbytes) bad = write_all(fd, ts[order[j]].data, ts[order[j]].nbytes);
    if (!bad) bad = fsync(fd) != 0;
    int cerr = close(fd);
    if (bad || cerr != 0 || rename(tmp, path) != 0) {
        st = gn_err(GN_ERR_IO, "%s: write failed: %s", path, strerror(errno));
        unlink(tmp);
        goto done;
    }
    // make the rename itself durable (best effort)
    char *dir = gn_strdup(path);
    int dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) { (void)fsync(dfd); close(dfd); }
    free(dir);
done:
    free(tmp);
    free(h.buf);
    free(order);
    free(begin);
    return st;
}
