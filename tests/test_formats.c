/*
 * test_formats.c — the weight-file readers against hand-built files:
 * safetensors (load, save round trip), GGUF (metadata, every block type with
 * known values), PyTorch zip checkpoints (hand-written pickle, shared storage,
 * strided view, zip64 directory), plus half/bfloat16 conversions.
 *
 * Every file is also truncated at every byte and has every byte flipped: each
 * load must either succeed or return an error whose message names the file —
 * never crash (run it under build-asan/ and build-ubsan/ too).
 *
 *   make build/tests/test_formats && build/tests/test_formats
 */
#include "harness.h"            // CHECK, TEST_REPORT
#include "formats/gguf.h"       // gn_gguf_open, ...
#include "formats/tensors.h"    // gn_tensor_table, loaders, gn_tensor_to_f32

#include <math.h>               // isnan
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>             // unlink, rmdir

static char g_dir[64];

// ----------------------------------------------------------------------------
// byte buffer

typedef struct { uint8_t *p; size_t n, cap; } buf;

static void put(buf *b, const void *s, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
    }
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
}
static void put_u8(buf *b, uint8_t v) { put(b, &v, 1); }
static void put_u16(buf *b, uint16_t v) { put(b, &v, 2); }
static void put_u32(buf *b, uint32_t v) { put(b, &v, 4); }
static void put_u64(buf *b, uint64_t v) { put(b, &v, 8); }
static void put_f32(buf *b, float v) { put(b, &v, 4); }
static void put_zeros(buf *b, size_t n) { while (n--) put_u8(b, 0); }
static void put_s(buf *b, const char *s) { put(b, s, strlen(s)); }

static void write_file(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) { perror(path); exit(1); }
    if (n && fwrite(p, 1, n, f) != n) { perror(path); exit(1); }
    fclose(f);
}

static void path_in_dir(char *out, size_t cap, const char *name) { snprintf(out, cap, "%s/%s", g_dir, name); }

// ----------------------------------------------------------------------------
// loader adapters (one signature for the fuzz loops)

typedef gn_status (*load_fn)(const char *path, int convert);

// Converts every tensor (exercises the dequantizers on whatever loaded).
static void convert_all(const gn_tensor_table *tt) {
    for (int i = 0; i < tt->n; i++) {
        float *y = malloc((size_t)(tt->t[i].nelem ? tt->t[i].nelem : 1) * sizeof *y);
        (void)gn_tensor_to_f32(&tt->t[i], y);
        free(y);
    }
}

static gn_status load_st(const char *path, int convert) {
    gn_tensor_table tt;
    gn_tensor_table_init(&tt);
    gn_status st = gn_safetensors_load(&tt, path);
    if (st == GN_OK && convert) convert_all(&tt);
    gn_tensor_table_free(&tt);
    return st;
}

static gn_status load_gguf(const char *path, int convert) {
    gn_gguf *g = NULL;
    gn_status st = gn_gguf_open(&g, path);
    if (st == GN_OK && convert) {
        convert_all(&g->tensors);
        for (int64_t i = 0; i < g->n_kv; i++) { // walk every array through the getters
            const gguf_kv *kv = &g->kv[i];
            if (kv->type != GGUF_T_ARRAY) continue;
            for (uint64_t k = 0; k < kv->arr_n && k < 64; k++) {
                (void)gn_gguf_arr_int(kv, k);
                (void)gn_gguf_arr_float(kv, k);
            }
        }
    }
    gn_gguf_free(g);
    return st;
}

static gn_status load_torch(const char *path, int convert) {
    gn_tensor_table tt;
    gn_tensor_table_init(&tt);
    gn_set_verbosity(-1); // mutated dicts may warn about skipped entries
    gn_status st = gn_torchbin_load(&tt, path);
    gn_set_verbosity(GN_LOG_WARN);
    if (st == GN_OK && convert) convert_all(&tt);
    gn_tensor_table_free(&tt);
    return st;
}

// Truncates at every byte and flips every byte (three ways): no crash, and
// every failure names the file. `all_prefixes_fail`: a strict prefix of the
// file can never be valid.
static void fuzz_file(const char *what, const buf *good, load_fn load, const char *path) {
    uint8_t *m = malloc(good->n);
    int bad_trunc = 0, bad_msg = 0, n_loads = 0;
    for (size_t cut = 0; cut < good->n; cut++) {
        write_file(path, good->p, cut);
        gn_status st = load(path, 1);
        n_loads++;
        if (st == GN_OK) { if (!bad_trunc++) printf("  %s: prefix of %zu bytes loaded\n", what, cut); }
        else if (!strstr(gn_last_error(), path)) { if (!bad_msg++) printf("  %s: message without path: %s\n", what, gn_last_error()); }
    }
    static const uint8_t flips[] = {0xff, 0x80, 0x01};
    for (size_t i = 0; i < good->n; i++) {
        for (size_t f = 0; f < sizeof flips; f++) {
            memcpy(m, good->p, good->n);
            m[i] ^= flips[f];
            write_file(path, m, good->n);
            gn_status st = load(path, 1);
            n_loads++;
            if (st != GN_OK && !strstr(gn_last_error(), path)) {
                if (!bad_msg++) printf("  %s: message without path: %s\n", what, gn_last_error());
            }
        }
    }
    CHECK(bad_trunc == 0, "%s: %d truncated files loaded without error", what, bad_trunc);
    CHECK(bad_msg == 0, "%s: %d errors did not name the file", what, bad_msg);
    printf("  %s: %d mutated loads survived\n", what, n_loads);
    free(m);
    unlink(path);
}

// ----------------------------------------------------------------------------
// half / bfloat16

static void test_half(void) {
    int bad_rt = 0, bad_nan = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = gn_f16_to_f32((uint16_t)h);
        int nan = ((h >> 10) & 0x1f) == 0x1f && (h & 0x3ff);
        if (nan) { if (!isnan(f) || !isnan(gn_f16_to_f32(gn_f32_to_f16(f)))) bad_nan++; continue; }
        if (gn_f32_to_f16(f) != h) bad_rt++;
    }
    CHECK(bad_rt == 0 && bad_nan == 0, "f16 -> f32 -> f16 round trip: %d mismatches, %d NaN problems", bad_rt, bad_nan);
    // known values
    CHECK(gn_f16_to_f32(0x3c00) == 1.0f && gn_f16_to_f32(0xc000) == -2.0f && gn_f16_to_f32(0x7bff) == 65504.0f,
          "f16 known values");
    CHECK(gn_f16_to_f32(0x0001) == 5.9604644775390625e-08f && gn_f16_to_f32(0x03ff) == 6.09755516052246094e-05f,
          "f16 subnormals");
    CHECK(gn_f32_to_f16(65520.0f) == 0x7c00 && gn_f32_to_f16(65519.99f) == 0x7bff, "f16 overflow threshold");
    CHECK(gn_f32_to_f16(2.98023223876953125e-08f) == 0x0000, "f16: half the smallest subnormal rounds to even (0)");
    CHECK(gn_f32_to_f16(2.98023259404089e-08f) == 0x0001, "f16: just above half the smallest subnormal rounds up");
    CHECK(gn_f32_to_f16(1.0f + 1.0f / 2048) == 0x3c00 && gn_f32_to_f16(1.0f + 3.0f / 2048) == 0x3c02,
          "f16 ties to even");
#ifdef __FLT16_MAX__
    // the compiler's own conversion as the oracle, over many bit patterns
    int bad = 0;
    uint32_t x = 12345;
    for (int i = 0; i < 2000000; i++) {
        x = x * 1664525u + 1013904223u;
        uint32_t u = i < 65536 ? (uint32_t)i << 16 | (x & 0xffff) : x;
        float f;
        memcpy(&f, &u, 4);
        if (isnan(f)) continue;
        _Float16 h = (_Float16)f;
        uint16_t hb;
        memcpy(&hb, &h, 2);
        if (gn_f32_to_f16(f) != hb) { if (!bad++) printf("  f32 %a -> %04x, compiler %04x\n", (double)f, gn_f32_to_f16(f), hb); }
    }
    CHECK(bad == 0, "f32 -> f16 agrees with _Float16 conversion: %d mismatches", bad);
#endif
    int bad_bf = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = gn_bf16_to_f32((uint16_t)h);
        if (isnan(f)) continue;
        if (gn_f32_to_bf16(f) != h) bad_bf++;
    }
    CHECK(bad_bf == 0, "bf16 round trip: %d mismatches", bad_bf);
    CHECK(gn_f32_to_bf16(1.00390625f) == 0x3f80 && gn_f32_to_bf16(1.01171875f) == 0x3f82, "bf16 ties to even");
}

// ----------------------------------------------------------------------------
// dtype facts

static void test_dtypes(void) {
    CHECK(gn_dtype_nbytes(GN_DTYPE_F32, 3) == 12 && gn_dtype_nbytes(GN_DTYPE_BF16, 5) == 10, "plain nbytes");
    CHECK(gn_dtype_nbytes(GN_DTYPE_Q4_0, 64) == 36 && gn_dtype_nbytes(GN_DTYPE_Q4_0, 33) == 0, "q4_0 nbytes");
    CHECK(gn_dtype_nbytes(GN_DTYPE_Q6_K, 512) == 420 && gn_dtype_nbytes(GN_DTYPE_Q4_K, 256) == 144 &&
          gn_dtype_nbytes(GN_DTYPE_Q5_K, 256) == 176 && gn_dtype_nbytes(GN_DTYPE_Q8_1, 32) == 36, "k-quant nbytes");
    CHECK(gn_dtype_nbytes(GN_DTYPE_I64, INT64_MAX) == 0, "nbytes overflow gives 0");
    CHECK(gn_dtype_block(GN_DTYPE_Q8_0) == 32 && gn_dtype_block(GN_DTYPE_Q5_K) == 256 && gn_dtype_block(GN_DTYPE_F16) == 1,
          "block sizes");
    CHECK(!strcmp(gn_dtype_name(GN_DTYPE_BF16), "bf16") && !strcmp(gn_dtype_name(GN_DTYPE_Q4_1), "q4_1") &&
          !strcmp(gn_dtype_name((gn_dtype)99), "unknown"), "dtype names");
}

// ----------------------------------------------------------------------------
// safetensors

// A small file: F32 [2,3], F16 [3], BF16 scalar, I64 [2], U8 [0], BOOL [2], I8 [1,1,2].
static void build_safetensors(buf *b) {
    const char *hdr =
        "{\"__metadata__\":{\"format\":\"pt\"},"
        "\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
        "\"b\":{\"dtype\":\"F16\",\"shape\":[3],\"data_offsets\":[24,30]},"
        "\"c\":{\"dtype\":\"BF16\",\"shape\":[],\"data_offsets\":[30,32]},"
        "\"d\":{\"dtype\":\"I64\",\"shape\":[2],\"data_offsets\":[32,48]},"
        "\"e\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[48,48]},"
        "\"f\":{\"dtype\":\"BOOL\",\"shape\":[2],\"data_offsets\":[48,50]},"
        "\"g\":{\"dtype\":\"I8\",\"shape\":[1,1,2],\"data_offsets\":[50,52]}}";
    size_t hl = strlen(hdr), padded = (hl + 7) / 8 * 8;
    b->n = 0;
    put_u64(b, padded);
    put_s(b, hdr);
    for (size_t i = hl; i < padded; i++) put_u8(b, ' ');
    for (int i = 0; i < 6; i++) put_f32(b, (float)i * 0.5f - 1.0f);
    put_u16(b, 0x3e00); put_u16(b, 0xc000); put_u16(b, 0x0001); // 1.5, -2, smallest subnormal
    put_u16(b, 0x4049);                                           // bf16 3.140625
    put_u64(b, (uint64_t)-7); put_u64(b, 1ull << 40);
    put_u8(b, 1); put_u8(b, 0);
    put_u8(b, 0x80); put_u8(b, 0x7f);
}

static void test_safetensors(void) {
    char path[128], path2[128];
    path_in_dir(path, sizeof path, "a.safetensors");
    path_in_dir(path2, sizeof path2, "b.safetensors");
    buf b = {0};
    build_safetensors(&b);
    write_file(path, b.p, b.n);

    gn_tensor_table tt;
    gn_tensor_table_init(&tt);
    gn_status st = gn_safetensors_load(&tt, path);
    CHECK(st == GN_OK, "safetensors load: %s", gn_last_error());
    CHECK(tt.n == 7, "7 tensors (metadata skipped), got %d", tt.n);
    float y[8];
    const gn_tensor *t = gn_tensor_table_find(&tt, "a");
    CHECK(t && t->dtype == GN_DTYPE_F32 && t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 3 && t->nelem == 6 &&
          t->nbytes == 24 && !strcmp(t->file, path), "a: f32 [2,3]");
    if (t && gn_tensor_to_f32(t, y) == GN_OK) CHECK(y[0] == -1.0f && y[5] == 1.5f, "a values");
    t = gn_tensor_table_find(&tt, "b");
    if (t && gn_tensor_to_f32(t, y) == GN_OK)
        CHECK(y[0] == 1.5f && y[1] == -2.0f && y[2] == 5.9604644775390625e-08f, "b: f16 values");
    t = gn_tensor_table_find(&tt, "c");
    CHECK(t && t->ndim == 0 && t->nelem == 1, "c: scalar");
    if (t && gn_tensor_to_f32(t, y) == GN_OK) CHECK(y[0] == 3.140625f, "c: bf16 value %g", y[0]);
    t = gn_tensor_table_find(&tt, "d");
    if (t && gn_tensor_to_f32(t, y) == GN_OK) CHECK(y[0] == -7.0f && y[1] == 1099511627776.0f, "d: i64 values");
    t = gn_tensor_table_find(&tt, "e");
    CHECK(t && t->nelem == 0 && t->nbytes == 0 && gn_tensor_to_f32(t, y) == GN_OK, "e: empty u8");
    t = gn_tensor_table_find(&tt, "f");
    if (t && gn_tensor_to_f32(t, y) == GN_OK) CHECK(y[0] == 1.0f && y[1] == 0.0f, "f: bool values");
    t = gn_tensor_table_find(&tt, "g");
    if (t && gn_tensor_to_f32(t, y) == GN_OK) CHECK(y[0] == -128.0f && y[1] == 127.0f && t->ndim == 3, "g: i8 values");
    CHECK(gn_tensor_table_find(&tt, "__metadata__") == NULL && gn_tensor_table_find(&tt, "zz") == NULL, "find misses");
    t = gn_tensor_table_find(&tt, "a");
    if (t) {
        CHECK(gn_tensor_rows_to_f32(t, 1, 1, y) == GN_OK && y[0] == 0.5f && y[2] == 1.5f, "rows_to_f32 row 1");
        CHECK(gn_tensor_rows_to_f32(t, 1, 2, y) == GN_ERR_ARG, "rows_to_f32 out of range");
    }

    // loading the same file twice into one table: duplicate names are refused, table unchanged
    st = gn_safetensors_load(&tt, path);
    CHECK(st == GN_ERR_FORMAT && strstr(gn_last_error(), "twice") && tt.n == 7 && tt.nmaps == 1,
          "second load of the same names refused and rolled back: %s (n=%d)", gn_last_error(), tt.n);

    // save round trip (with metadata, mixed alignment) and reload
    gn_tensor_out outs[4];
    memset(outs, 0, sizeof outs);
    uint16_t h3[3] = {0x3c00, 0x4000, 0x4200};
    float f4[4] = {1, 2, 3, 4};
    int64_t i1[1] = {-5};
    outs[0] = (gn_tensor_out){.name = "half \"q\"", .dtype = GN_DTYPE_F16, .ndim = 1, .shape = {3}, .data = h3, .nbytes = 6};
    outs[1] = (gn_tensor_out){.name = "w.f32", .dtype = GN_DTYPE_F32, .ndim = 2, .shape = {2, 2}, .data = f4, .nbytes = 16};
    outs[2] = (gn_tensor_out){.name = "i", .dtype = GN_DTYPE_I64, .ndim = 0, .data = i1, .nbytes = 8};
    outs[3] = (gn_tensor_out){.name = "z", .dtype = GN_DTYPE_F32, .ndim = 2, .shape = {0, 3}, .data = NULL, .nbytes = 0};
    const char *meta[] = {"format", "pt", "note", "tab\there"};
    st = gn_safetensors_save(path2, outs, 4, meta, 2);
    CHECK(st == GN_OK, "safetensors save: %s", gn_last_error());
    gn_tensor_table t2;
    gn_tensor_table_init(&t2);
    st = gn_safetensors_load(&t2, path2);
    CHECK(st == GN_OK && t2.n == 4, "reload saved file: %s", gn_last_error());
    const gn_tensor *a = gn_tensor_table_find(&t2, "half \"q\""), *w = gn_tensor_table_find(&t2, "w.f32"),
                    *ii = gn_tensor_table_find(&t2, "i");
    CHECK(a && w && ii && gn_tensor_table_find(&t2, "z"), "saved names present");
    if (a && w && ii) {
        CHECK(memcmp(a->data, h3, 6) == 0 && memcmp(w->data, f4, 16) == 0 && memcmp(ii->data, i1, 8) == 0,
              "saved bytes equal");
        CHECK(((uintptr_t)w->data % 4) == 0 && ((uintptr_t)ii->data % 8) == 0, "saved tensors are aligned");
    }
    FILE *f = fopen(path2, "rb");
    uint64_t hl = 0;
    if (f) { CHECK(fread(&hl, 8, 1, f) == 1, "read header length"); fclose(f); }
    CHECK(hl % 8 == 0, "header length %llu is a multiple of 8", (unsigned long long)hl);
    gn_tensor_table_free(&t2);
    outs[1].nbytes = 15;
    CHECK(gn_safetensors_save(path2, outs, 2, NULL, 0) == GN_ERR_ARG, "save refuses a wrong byte count");
    outs[1].nbytes = 16;
    outs[1].dtype = GN_DTYPE_Q4_0;
    CHECK(gn_safetensors_save(path2, outs, 2, NULL, 0) == GN_ERR_ARG, "save refuses a block dtype");
    unlink(path2);
    gn_tensor_table_free(&tt);

    // many shards into one table (the table's arrays grow past their first sizes)
    gn_tensor_table_init(&tt);
    int ok = 1;
    for (int i = 0; i < 9; i++) {
        char nm[32], sp[160];
        float v = (float)i;
        snprintf(nm, sizeof nm, "layer.%d", i);
        snprintf(sp, sizeof sp, "%s/shard%d.safetensors", g_dir, i);
        gn_tensor_out o = {.name = nm, .dtype = GN_DTYPE_F32, .ndim = 1, .shape = {1}, .data = &v, .nbytes = 4};
        ok &= gn_safetensors_save(sp, &o, 1, NULL, 0) == GN_OK && gn_safetensors_load(&tt, sp) == GN_OK;
        unlink(sp);
    }
    CHECK(ok && tt.n == 9 && tt.nmaps == 9 && tt.nfiles == 9, "9 shards in one table (n=%d): %s", tt.n, gn_last_error());
    const gn_tensor *l7 = gn_tensor_table_find(&tt, "layer.7");
    CHECK(l7 && *(const float *)l7->data == 7.0f && strstr(l7->file, "shard7"), "shard 7 value and file");
    gn_tensor_table_free(&tt);

    // specific bad headers
    struct { const char *hdr; gn_status want; const char *msg; } cases[] = {
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,100]}}", GN_ERR_FORMAT, "exceed the"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", GN_ERR_FORMAT, "begin > end"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", GN_ERR_FORMAT, "expected 3 elements"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", GN_ERR_FORMAT, "shape[0]"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],\"data_offsets\":[0,8]}}",
         GN_ERR_FORMAT, "too many elements"},
        {"{\"a\":{\"dtype\":\"F8_E4M3\",\"shape\":[2],\"data_offsets\":[0,2]}}", GN_ERR_UNSUPPORTED, "F8_E4M3"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}", GN_ERR_FORMAT, "invalid JSON"},
        {"[1,2]", GN_ERR_FORMAT, "not a JSON object"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}} x", GN_ERR_FORMAT, "after the JSON"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"a\":{\"dtype\":\"F32\",\"shape\":[2],"
         "\"data_offsets\":[0,8]}}", GN_ERR_FORMAT, "twice"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0.5,8]}}", GN_ERR_FORMAT, "data_offsets"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        buf x = {0};
        put_u64(&x, strlen(cases[c].hdr));
        put_s(&x, cases[c].hdr);
        put_zeros(&x, 8);
        write_file(path, x.p, x.n);
        gn_tensor_table_init(&tt);
        st = gn_safetensors_load(&tt, path);
        CHECK(st == cases[c].want && strstr(gn_last_error(), path) && strstr(gn_last_error(), cases[c].msg) &&
              tt.n == 0 && tt.nmaps == 0, "bad header %zu: status %d, message: %s", c, st, gn_last_error());
        gn_tensor_table_free(&tt);
        free(x.p);
    }
    // header length fields
    uint64_t lens[] = {UINT64_MAX, 1ull << 63, b.n - 8 + 1, b.n, 0};
    for (size_t c = 0; c < sizeof lens / sizeof lens[0]; c++) {
        buf x = {0};
        put(&x, b.p, b.n);
        memcpy(x.p, &lens[c], 8);
        write_file(path, x.p, x.n);
        st = load_st(path, 0);
        CHECK(st == GN_ERR_FORMAT && strstr(gn_last_error(), path), "header length %llu refused: %s",
              (unsigned long long)lens[c], gn_last_error());
        free(x.p);
    }
    CHECK(load_st("/nonexistent/x.safetensors", 0) == GN_ERR_IO && strstr(gn_last_error(), "/nonexistent/x.safetensors"),
          "missing file: %s", gn_last_error());

    fuzz_file("safetensors", &b, load_st, path);
    free(b.p);
}

// ----------------------------------------------------------------------------
// GGUF

static void g_str(buf *b, const char *s) { put_u64(b, strlen(s)); put_s(b, s); }

typedef struct { const char *name; uint32_t type; int nd; uint64_t ne[4]; const uint8_t *data; size_t nbytes; } gt;

// Writes a v3 file with some metadata and the given tensors (32-aligned).
static void build_gguf(buf *b, const gt *ts, int nt, uint32_t version) {
    b->n = 0;
    put_s(b, "GGUF");
    put_u32(b, version);
    put_u64(b, (uint64_t)nt);
    put_u64(b, 7); // n_kv
    g_str(b, "general.architecture"); put_u32(b, GGUF_T_STRING); g_str(b, "llama");
    g_str(b, "general.alignment"); put_u32(b, GGUF_T_UINT32); put_u32(b, 32);
    g_str(b, "llama.block_count"); put_u32(b, GGUF_T_UINT32); put_u32(b, 2);
    g_str(b, "llama.rope.freq_base"); put_u32(b, GGUF_T_FLOAT32); put_f32(b, 10000.0f);
    g_str(b, "tokenizer.ggml.tokens"); put_u32(b, GGUF_T_ARRAY); put_u32(b, GGUF_T_STRING); put_u64(b, 3);
    g_str(b, "<s>"); g_str(b, "a"); g_str(b, "");
    g_str(b, "tokenizer.ggml.scores"); put_u32(b, GGUF_T_ARRAY); put_u32(b, GGUF_T_FLOAT32); put_u64(b, 3);
    put_f32(b, 0.0f); put_f32(b, -1.5f); put_f32(b, 2.0f);
    g_str(b, "nested"); put_u32(b, GGUF_T_ARRAY); put_u32(b, GGUF_T_ARRAY); put_u64(b, 2);
    put_u32(b, GGUF_T_INT16); put_u64(b, 2); put_u16(b, 1); put_u16(b, 2);
    put_u32(b, GGUF_T_STRING); put_u64(b, 1); g_str(b, "x");
    uint64_t off = 0;
    for (int i = 0; i < nt; i++) {
        g_str(b, ts[i].name);
        put_u32(b, (uint32_t)ts[i].nd);
        for (int d = 0; d < ts[i].nd; d++) put_u64(b, ts[i].ne[d]);
        put_u32(b, ts[i].type);
        put_u64(b, off);
        off += (ts[i].nbytes + 31) / 32 * 32;
    }
    while (b->n % 32) put_u8(b, 0);
    for (int i = 0; i < nt; i++) {
        put(b, ts[i].data, ts[i].nbytes);
        if (i + 1 < nt) while (b->n % 32) put_u8(b, 0);
    }
}

static void test_gguf(void) {
    char path[128];
    path_in_dir(path, sizeof path, "t.gguf");
    // tensor payloads with values that are easy to state
    float f32d[16];
    for (int i = 0; i < 16; i++) f32d[i] = (float)i - 7.5f;
    uint16_t f16d[4] = {0x3c00, 0xbc00, 0x3800, 0x7bff};
    buf q80 = {0}, q40 = {0}, q41 = {0}, q50 = {0}, q51 = {0}, q4k = {0}, q5k = {0}, q6k = {0}, q81 = {0};
    put_u16(&q80, 0x3800); // d = 0.5
    for (int j = 0; j < 32; j++) put_u8(&q80, (uint8_t)(int8_t)(j - 16));
    put_u16(&q80, 0x4000); // second row: d = 2
    for (int j = 0; j < 32; j++) put_u8(&q80, (uint8_t)(int8_t)(j == 0 ? -128 : 127));
    put_u16(&q40, 0x3c00);
    for (int j = 0; j < 16; j++) put_u8(&q40, (uint8_t)(j | (15 - j) << 4));
    put_u16(&q41, 0x3800); put_u16(&q41, 0xbc00); // d 0.5, m -1
    for (int j = 0; j < 16; j++) put_u8(&q41, (uint8_t)(j | (15 - j) << 4));
    put_u16(&q50, 0x3c00); put_u32(&q50, 0x0000ffffu);
    for (int j = 0; j < 16; j++) put_u8(&q50, (uint8_t)j);
    put_u16(&q51, 0x3c00); put_u16(&q51, 0x3c00); put_u32(&q51, 0xffff0000u);
    for (int j = 0; j < 16; j++) put_u8(&q51, (uint8_t)(j << 4));
    put_u16(&q81, 0x3400); put_u16(&q81, 0); // d 0.25
    for (int j = 0; j < 32; j++) put_u8(&q81, (uint8_t)(int8_t)(j - 10));
    // q4_K: sc = 1,2,3,4,5,5,5,5  m = 0,0,0,0,1,1,1,1 ; all nibbles: low 3, high 7
    const uint8_t sc12[12] = {1, 2, 3, 4, 0, 0, 0, 0, 0x15, 0x15, 0x15, 0x15};
    put_u16(&q4k, 0x3c00); put_u16(&q4k, 0x3800); put(&q4k, sc12, 12);
    for (int j = 0; j < 128; j++) put_u8(&q4k, 0x73);
    put_u16(&q5k, 0x3c00); put_u16(&q5k, 0x3800); put(&q5k, sc12, 12);
    for (int j = 0; j < 32; j++) put_u8(&q5k, 0x55); // bit 2c set: low halves get +16
    for (int j = 0; j < 128; j++) put_u8(&q5k, 0x73);
    // q6_K: ql = 0x21 (low 1, high 2), qh = 0, scales = 1..16, d = 1
    for (int j = 0; j < 128; j++) put_u8(&q6k, 0x21);
    put_zeros(&q6k, 64);
    for (int j = 0; j < 16; j++) put_u8(&q6k, (uint8_t)(j + 1));
    put_u16(&q6k, 0x3c00);

    gt ts[] = {
        {"f32", GGML_T_F32, 2, {8, 2}, (const uint8_t *)f32d, 64},
        {"f16", GGML_T_F16, 1, {4}, (const uint8_t *)f16d, 8},
        {"q8_0", GGML_T_Q8_0, 2, {32, 2}, q80.p, q80.n},
        {"q4_0", GGML_T_Q4_0, 1, {32}, q40.p, q40.n},
        {"q4_1", GGML_T_Q4_1, 1, {32}, q41.p, q41.n},
        {"q5_0", GGML_T_Q5_0, 1, {32}, q50.p, q50.n},
        {"q5_1", GGML_T_Q5_1, 1, {32}, q51.p, q51.n},
        {"q8_1", GGML_T_Q8_1, 1, {32}, q81.p, q81.n},
        {"q4_K", GGML_T_Q4_K, 1, {256}, q4k.p, q4k.n},
        {"q5_K", GGML_T_Q5_K, 1, {256}, q5k.p, q5k.n},
        {"blk.0.q6_K", GGML_T_Q6_K, 3, {256, 1, 1}, q6k.p, q6k.n},
    };
    int nt = (int)(sizeof ts / sizeof ts[0]);
    buf b = {0};
    build_gguf(&b, ts, nt, 3);
    write_file(path, b.p, b.n);

    gn_gguf *g = NULL;
    gn_status st = gn_gguf_open(&g, path);
    CHECK(st == GN_OK && g, "gguf open: %s", gn_last_error());
    if (!g) return;
    CHECK(g->version == 3 && g->n_kv == 7 && g->alignment == 32 && g->tensors.n == nt, "gguf header");
    char *arch = gn_gguf_get_str(g, "general.architecture");
    CHECK(arch && !strcmp(arch, "llama"), "get_str");
    free(arch);
    CHECK(gn_gguf_get_str(g, "nope") == NULL && gn_gguf_get_str(g, "llama.block_count") == NULL, "get_str misses");
    CHECK(gn_gguf_get_int(g, "llama.block_count", -1) == 2 && gn_gguf_get_int(g, "nope", -1) == -1 &&
          gn_gguf_get_int(g, "general.architecture", -3) == -3, "get_int");
    CHECK(gn_gguf_get_float(g, "llama.rope.freq_base", 0) == 10000.0 && gn_gguf_get_float(g, "llama.block_count", 0) == 2.0,
          "get_float");
    const gguf_kv *kv = gn_gguf_get(g, "tokenizer.ggml.tokens");
    CHECK(kv && kv->type == GGUF_T_ARRAY && kv->arr_type == GGUF_T_STRING && kv->arr_n == 3 &&
          kv->arr_str[0].len == 3 && !memcmp(kv->arr_str[0].p, "<s>", 3) && kv->arr_str[2].len == 0, "string array");
    kv = gn_gguf_get(g, "tokenizer.ggml.scores");
    CHECK(kv && kv->arr_n == 3 && gn_gguf_arr_float(kv, 1) == -1.5 && gn_gguf_arr_int(kv, 2) == 2, "float array");
    kv = gn_gguf_get(g, "nested");
    CHECK(kv && kv->arr_type == GGUF_T_ARRAY && kv->arr_n == 2, "nested array kept");

    float y[512];
    const gn_tensor *t = gn_tensor_table_find(&g->tensors, "f32");
    CHECK(t && t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 8 && !strcmp(t->file, path), "f32 shape reversed");
    CHECK(t && ((uintptr_t)t->data - (uintptr_t)g->map.data) % 32 == 0, "tensor data aligned in the file");
    if (t && gn_tensor_to_f32(t, y) == GN_OK) CHECK(!memcmp(y, f32d, 64), "f32 values");
    t = gn_tensor_table_find(&g->tensors, "f16");
    if (t && gn_tensor_to_f32(t, y) == GN_OK) CHECK(y[0] == 1 && y[1] == -1 && y[2] == 0.5f && y[3] == 65504, "f16 values");
    t = gn_tensor_table_find(&g->tensors, "q8_0");
    CHECK(t && t->dtype == GN_DTYPE_Q8_0 && t->shape[0] == 2 && t->shape[1] == 32 && t->nbytes == 68, "q8_0 info");
    if (t && gn_tensor_to_f32(t, y) == GN_OK) {
        int bad = 0;
        for (int j = 0; j < 32; j++) bad += y[j] != (j - 16) * 0.5f;
        for (int j = 0; j < 32; j++) bad += y[32 + j] != (j == 0 ? -256.0f : 254.0f);
        CHECK(bad == 0, "q8_0 values (%d wrong)", bad);
        float r[32];
        CHECK(gn_tensor_rows_to_f32(t, 1, 1, r) == GN_OK && !memcmp(r, y + 32, sizeof r), "q8_0 rows_to_f32 row 1");
    }
    t = gn_tensor_table_find(&g->tensors, "q4_0");
    if (t && gn_tensor_to_f32(t, y) == GN_OK) {
        int bad = 0;
        for (int j = 0; j < 16; j++) bad += y[j] != (float)(j - 8) || y[16 + j] != (float)(7 - j);
        CHECK(bad == 0, "q4_0 values (%d wrong)", bad);
    }
    t = gn_tensor_table_find(&g->tensors, "q4_1");
    if (t && gn_tensor_to_f32(t, y) == GN_OK) {
        int bad = 0;
        for (int j = 0; j < 16; j++) bad += y[j] != j * 0.5f - 1 || y[16 + j] != (15 - j) * 0.5f - 1;
        CHECK(bad == 0, "q4_1 values (%d wrong)", bad);
    }
    t = gn_tensor_table_find(&g->tensors, "q5_0");
    if (t && gn_tensor_to_f32(t, y) == GN_OK) {
        int bad = 0; // qh bits 0..15 set: first half gets the 5th bit; high nibbles 0 -> -16
        for (int j = 0; j < 16; j++) bad += y[j] != (float)j || y[16 + j] != -16.0f;
        CHECK(bad == 0, "q5_0 values (%d wrong)", bad);
    }
    t = gn_tensor_table_find(&g->tensors, "q5_1");
    if (t && gn_tensor_to_f32(t, y) == GN_OK) {
        int bad = 0; // qh bits 16..31 set: second half gets the 5th bit; d = m = 1
        for (int j = 0; j < 16; j++) bad += y[j] != 1.0f || y[16 + j] != (float)(j + 16) + 1.0f;
        CHECK(bad == 0, "q5_1 values (%d wrong)", bad);
    }
    t = gn_tensor_table_find(&g->tensors, "q8_1");
    if (t && gn_tensor_to_f32(t, y) == GN_OK) CHECK(y[0] == -2.5f && y[31] == 5.25f, "q8_1 values");
    const float sc[8] = {1, 2, 3, 4, 5, 5, 5, 5}, mn[8] = {0, 0, 0, 0, 1, 1, 1, 1};
    t = gn_tensor_table_find(&g->tensors, "q4_K");
    if (t && gn_tensor_to_f32(t, y) == GN_OK) {
        int bad = 0;
        for (int e = 0; e < 256; e++) {
            int is = e / 32, q = (e / 32) % 2 ? 7 : 3;
            bad += y[e] != sc[is] * q - 0.5f * mn[is];
        }
        CHECK(bad == 0, "q4_K values (%d wrong)", bad);
    }
    t = gn_tensor_table_find(&g->tensors, "q5_K");
    if (t && gn_tensor_to_f32(t, y) == GN_OK) {
        int bad = 0;
        for (int e = 0; e < 256; e++) {
            int is = e / 32, q = (e / 32) % 2 ? 7 : 3 + 16;
            bad += y[e] != sc[is] * q - 0.5f * mn[is];
        }
        CHECK(bad == 0, "q5_K values (%d wrong)", bad);
    }
    t = gn_tensor_table_find(&g->tensors, "blk.0.q6_K");
    CHECK(t && t->ndim == 3 && t->shape[2] == 256, "q6_K shape");
    if (t && gn_tensor_to_f32(t, y) == GN_OK) {
        int bad = 0;
        for (int e = 0; e < 256; e++) {
            int n = e / 128, r = e % 128, k = r / 32, l = r % 32;
            float s = (float)(8 * n + l / 16 + 2 * k + 1);
            bad += y[e] != s * (k < 2 ? -31.0f : -30.0f);
        }
        CHECK(bad == 0, "q6_K values (%d wrong)", bad);
    }
    gn_gguf_free(g);

    // version 1 / 2, bad magic, bad alignment, unsupported type, ne[0] not a multiple of the block
    buf x = {0};
    build_gguf(&x, ts, nt, 1);
    write_file(path, x.p, x.n);
    st = gn_gguf_open(&g, path);
    CHECK(st == GN_ERR_UNSUPPORTED && g == NULL && strstr(gn_last_error(), "unsupported GGUF version 1") &&
          strstr(gn_last_error(), path), "v1: %s", gn_last_error());
    build_gguf(&x, ts, nt, 2);
    write_file(path, x.p, x.n);
    st = gn_gguf_open(&g, path);
    CHECK(st == GN_OK, "v2 opens: %s", gn_last_error());
    gn_gguf_free(g);
    x.p[0] = 'X';
    write_file(path, x.p, x.n);
    CHECK(load_gguf(path, 0) == GN_ERR_FORMAT && strstr(gn_last_error(), "magic"), "bad magic: %s", gn_last_error());
    gt odd[] = {{"odd", GGML_T_Q8_0, 1, {16}, q80.p, 34}};
    build_gguf(&x, odd, 1, 3);
    write_file(path, x.p, x.n);
    CHECK(load_gguf(path, 0) == GN_ERR_FORMAT && strstr(gn_last_error(), "multiple"), "ne[0] %% block: %s", gn_last_error());
    gt q2k[] = {{"q2", GGML_T_Q2_K, 1, {256}, q80.p, 34}};
    build_gguf(&x, q2k, 1, 3);
    write_file(path, x.p, x.n);
    CHECK(load_gguf(path, 0) == GN_ERR_UNSUPPORTED && strstr(gn_last_error(), "q2_K") && strstr(gn_last_error(), "'q2'"),
          "unsupported type: %s", gn_last_error());
    gt dup[] = {{"same", GGML_T_F32, 1, {4}, (const uint8_t *)f32d, 16}, {"same", GGML_T_F32, 1, {4}, (const uint8_t *)f32d, 16}};
    build_gguf(&x, dup, 2, 3);
    write_file(path, x.p, x.n);
    CHECK(load_gguf(path, 0) == GN_ERR_FORMAT && strstr(gn_last_error(), "twice"), "duplicate tensor: %s", gn_last_error());

    // huge counts and lengths at known offsets: n_tensors @8, n_kv @16, first key length @24
    struct { size_t off; uint64_t v; } huge[] = {
        {8, 1ull << 62}, {8, UINT64_MAX}, {16, 1ull << 62}, {16, UINT64_MAX}, {24, 1ull << 63}, {24, UINT64_MAX},
    };
    build_gguf(&x, ts, nt, 3);
    for (size_t c = 0; c < sizeof huge / sizeof huge[0]; c++) {
        buf y2 = {0};
        put(&y2, x.p, x.n);
        memcpy(y2.p + huge[c].off, &huge[c].v, 8);
        write_file(path, y2.p, y2.n);
        st = load_gguf(path, 0);
        CHECK(st == GN_ERR_FORMAT && strstr(gn_last_error(), path), "huge field at %zu refused: %s", huge[c].off,
              gn_last_error());
        free(y2.p);
    }
    // array count of the token list, tensor n_dims and ne: find them by searching the bytes
    {
        buf y2 = {0};
        put(&y2, x.p, x.n);
        uint8_t *k = memmem(y2.p, y2.n, "tokenizer.ggml.tokens", 21);
        uint64_t v = 1ull << 61;
        memcpy(k + 21 + 4 + 4, &v, 8); // key | u32 type | u32 elem type | u64 n
        write_file(path, y2.p, y2.n);
        CHECK(load_gguf(path, 0) == GN_ERR_FORMAT, "huge string-array count refused: %s", gn_last_error());
        memcpy(y2.p, x.p, x.n);
        k = memmem(y2.p, y2.n, "q4_K", 4);
        uint32_t nd = 1000;
        memcpy(k + 4, &nd, 4);
        write_file(path, y2.p, y2.n);
        CHECK(load_gguf(path, 0) == GN_ERR_FORMAT && strstr(gn_last_error(), "n_dims"), "n_dims 1000: %s", gn_last_error());
        memcpy(y2.p, x.p, x.n);
        v = 1ull << 62;
        memcpy(k + 4 + 4, &v, 8);
        write_file(path, y2.p, y2.n);
        CHECK(load_gguf(path, 0) == GN_ERR_FORMAT && strstr(gn_last_error(), path), "ne 2^62: %s", gn_last_error());
        free(y2.p);
    }
    fuzz_file("gguf", &b, load_gguf, path);
    free(x.p);
    free(b.p);
    free(q80.p); free(q40.p); free(q41.p); free(q50.p); free(q51.p); free(q81.p);
    free(q4k.p); free(q5k.p); free(q6k.p);
}

// ----------------------------------------------------------------------------
// PyTorch zip

typedef struct { const char *name; const uint8_t *data; size_t n; uint16_t method; } zent;

// Writes a zip the way torch.save lays it out (stored entries, data aligned to
// 64 bytes by a padding extra field). zip64: every size/offset in the central
// directory goes through zip64 extra fields and a zip64 end record.
static void build_zip(buf *b, const zent *es, int n, int zip64) {
    b->n = 0;
    uint64_t lho[16];
    for (int i = 0; i < n; i++) {
        lho[i] = b->n;
        size_t nl = strlen(es[i].name), base = b->n + 30 + nl + 4;
        size_t pad = (64 - base % 64) % 64;
        put_u32(b, 0x04034b50); put_u16(b, 20); put_u16(b, 0); put_u16(b, es[i].method);
        put_u16(b, 0); put_u16(b, 0); put_u32(b, 0);
        put_u32(b, (uint32_t)es[i].n); put_u32(b, (uint32_t)es[i].n);
        put_u16(b, (uint16_t)nl); put_u16(b, (uint16_t)(4 + pad));
        put_s(b, es[i].name);
        put_u16(b, 0x4246); put_u16(b, (uint16_t)pad); put_zeros(b, pad); // "FB" padding
        put(b, es[i].data, es[i].n);
    }
    uint64_t cd = b->n;
    for (int i = 0; i < n; i++) {
        size_t nl = strlen(es[i].name);
        put_u32(b, 0x02014b50); put_u16(b, 20); put_u16(b, 20); put_u16(b, 0); put_u16(b, es[i].method);
        put_u16(b, 0); put_u16(b, 0); put_u32(b, 0);
        put_u32(b, zip64 ? 0xffffffffu : (uint32_t)es[i].n);
        put_u32(b, zip64 ? 0xffffffffu : (uint32_t)es[i].n);
        put_u16(b, (uint16_t)nl); put_u16(b, zip64 ? 28 : 0); put_u16(b, 0);
        put_u16(b, 0); put_u16(b, 0); put_u32(b, 0);
        put_u32(b, zip64 ? 0xffffffffu : (uint32_t)lho[i]);
        put_s(b, es[i].name);
        if (zip64) { put_u16(b, 1); put_u16(b, 24); put_u64(b, es[i].n); put_u64(b, es[i].n); put_u64(b, lho[i]); }
    }
    uint64_t cd_size = b->n - cd;
    if (zip64) {
        uint64_t rec = b->n;
        put_u32(b, 0x06064b50); put_u64(b, 44); put_u16(b, 45); put_u16(b, 45); put_u32(b, 0); put_u32(b, 0);
        put_u64(b, (uint64_t)n); put_u64(b, (uint64_t)n); put_u64(b, cd_size); put_u64(b, cd);
        put_u32(b, 0x07064b50); put_u32(b, 0); put_u64(b, rec); put_u32(b, 1);
    }
    put_u32(b, 0x06054b50); put_u16(b, 0); put_u16(b, 0);
    put_u16(b, zip64 ? 0xffff : (uint16_t)n); put_u16(b, zip64 ? 0xffff : (uint16_t)n);
    put_u32(b, zip64 ? 0xffffffffu : (uint32_t)cd_size); put_u32(b, zip64 ? 0xffffffffu : (uint32_t)cd);
    put_u16(b, 0);
}

// pickle helpers (protocol 2, as torch.save writes)
static void pk_op(buf *b, uint8_t op) { put_u8(b, op); }
static void pk_str(buf *b, const char *s) { put_u8(b, 'X'); put_u32(b, (uint32_t)strlen(s)); put_s(b, s); }
static void pk_int(buf *b, int v) { put_u8(b, 'K'); put_u8(b, (uint8_t)v); }
static void pk_global(buf *b, const char *mod, const char *name) {
    put_u8(b, 'c'); put_s(b, mod); put_u8(b, '\n'); put_s(b, name); put_u8(b, '\n');
}
// _rebuild_tensor_v2(persistent storage, offset, size, stride, False, OrderedDict())
static void pk_tensor(buf *b, const char *cls, const char *key, int numel, int off, int nd, const int *size,
                      const int *stride) {
    pk_op(b, 'h'); pk_op(b, 1); // BINGET 1: _rebuild_tensor_v2
    pk_op(b, '(');
    pk_op(b, '('); pk_str(b, "storage"); pk_global(b, "torch", cls); pk_str(b, key); pk_str(b, "cpu");
    pk_int(b, numel); pk_op(b, 't'); pk_op(b, 'Q');
    pk_int(b, off);
    pk_op(b, '('); for (int i = 0; i < nd; i++) pk_int(b, size[i]); pk_op(b, 't');
    pk_op(b, '('); for (int i = 0; i < nd; i++) pk_int(b, stride[i]); pk_op(b, 't');
    pk_op(b, 0x89);
    pk_global(b, "collections", "OrderedDict"); pk_op(b, ')'); pk_op(b, 'R');
    pk_op(b, 't');
    pk_op(b, 'R');
}

// {'w': f32 (2,3), 't': w.t() sharing storage 0, 'h': f16 slice at offset 1,
//  'p': _rebuild_parameter(w), 'n': 5 (skipped)}
static void build_pickle(buf *b) {
    b->n = 0;
    pk_op(b, 0x80); pk_op(b, 2);
    pk_global(b, "collections", "OrderedDict"); pk_op(b, 'q'); pk_op(b, 0);
    pk_op(b, ')'); pk_op(b, 'R');
    pk_op(b, '(');
    pk_global(b, "torch._utils", "_rebuild_tensor_v2"); pk_op(b, 'q'); pk_op(b, 1); pk_op(b, '0'); // memo, POP
    int s23[] = {2, 3}, st31[] = {3, 1}, s32[] = {3, 2}, st13[] = {1, 3}, s3[] = {3}, st1[] = {1};
    pk_str(b, "w"); pk_tensor(b, "FloatStorage", "0", 6, 0, 2, s23, st31);
    pk_str(b, "t"); pk_tensor(b, "FloatStorage", "0", 6, 0, 2, s32, st13);
    pk_str(b, "h"); pk_tensor(b, "HalfStorage", "1", 4, 1, 1, s3, st1);
    pk_str(b, "p"); pk_global(b, "torch._utils", "_rebuild_parameter");
    pk_tensor(b, "FloatStorage", "0", 6, 0, 2, s23, st31); pk_op(b, 0x88); pk_op(b, 'N'); pk_op(b, 0x87); pk_op(b, 'R');
    pk_str(b, "n"); pk_int(b, 5);
    pk_op(b, 'u');
    pk_op(b, '}'); pk_str(b, "_metadata"); pk_op(b, '}'); pk_op(b, 's'); pk_op(b, 'b'); // BUILD with state
    pk_op(b, '.');
}

static void torch_zip(buf *out, const buf *pkl, int zip64, uint16_t method) {
    static const float w[6] = {0, 1, 2, 3, 4, 5};
    static const uint16_t h[4] = {0x3c00, 0x4000, 0x4200, 0x4400}; // 1 2 3 4
    zent es[] = {
        {"archive/data.pkl", pkl->p, pkl->n, method},
        {"archive/byteorder", (const uint8_t *)"little", 6, 0},
        {"archive/data/0", (const uint8_t *)w, sizeof w, 0},
        {"archive/data/1", (const uint8_t *)h, sizeof h, 0},
        {"archive/version", (const uint8_t *)"3\n", 2, 0},
    };
    build_zip(out, es, 5, zip64);
}

static void test_torch(void) {
    char path[128];
    path_in_dir(path, sizeof path, "m.bin");
    buf pkl = {0}, z = {0};
    build_pickle(&pkl);
    for (int zip64 = 0; zip64 < 2; zip64++) {
        torch_zip(&z, &pkl, zip64, 0);
        write_file(path, z.p, z.n);
        gn_tensor_table tt;
        gn_tensor_table_init(&tt);
        gn_set_verbosity(-1); // 'n' is skipped with a warning
        gn_status st = gn_torchbin_load(&tt, path);
        gn_set_verbosity(GN_LOG_WARN);
        CHECK(st == GN_OK && tt.n == 4, "torch zip%s load: %s (n=%d)", zip64 ? "64" : "", gn_last_error(), tt.n);
        float y[8];
        const gn_tensor *w = gn_tensor_table_find(&tt, "w"), *t = gn_tensor_table_find(&tt, "t"),
                        *h = gn_tensor_table_find(&tt, "h"), *p = gn_tensor_table_find(&tt, "p");
        CHECK(w && t && h && p && !gn_tensor_table_find(&tt, "n"), "torch names");
        if (w && t && h && p) {
            CHECK(w->dtype == GN_DTYPE_F32 && w->ndim == 2 && w->shape[0] == 2 && w->shape[1] == 3 && w->nbytes == 24,
                  "w info");
            CHECK(w->data >= (const void *)tt.maps[0].data && (uintptr_t)w->data % 64 == 0, "w points into the mapping");
            CHECK(p->data == w->data, "parameter shares the storage");
            if (gn_tensor_to_f32(t, y) == GN_OK) {
                const float want[6] = {0, 3, 1, 4, 2, 5};
                CHECK(!memcmp(y, want, sizeof want) && t->shape[0] == 3 && t->shape[1] == 2, "transposed view copied");
            }
            CHECK(tt.nowned == 1, "one owned copy (the transpose), got %d", tt.nowned);
            if (gn_tensor_to_f32(h, y) == GN_OK)
                CHECK(h->dtype == GN_DTYPE_F16 && h->nelem == 3 && y[0] == 2 && y[1] == 3 && y[2] == 4, "f16 slice at offset 1");
        }
        gn_tensor_table_free(&tt);
    }
    // zip64 variant must survive the fuzz loop too
    torch_zip(&z, &pkl, 1, 0);
    buf z64 = {0};
    put(&z64, z.p, z.n);

    // compressed data.pkl
    torch_zip(&z, &pkl, 0, 8);
    write_file(path, z.p, z.n);
    CHECK(load_torch(path, 0) == GN_ERR_UNSUPPORTED && strstr(gn_last_error(), "compressed"), "compressed: %s",
          gn_last_error());

    // unsupported opcode: INT ('I', protocol 0) is not implemented
    buf pb = {0};
    pk_op(&pb, 0x80); pk_op(&pb, 2); pk_op(&pb, '}'); pk_op(&pb, 'I'); put_s(&pb, "5\n"); pk_op(&pb, '.');
    torch_zip(&z, &pb, 0, 0);
    write_file(path, z.p, z.n);
    gn_status st = load_torch(path, 0);
    CHECK(st == GN_ERR_UNSUPPORTED && strstr(gn_last_error(), "unsupported pickle opcode 0x49") &&
          strstr(gn_last_error(), "data.pkl offset 3") && strstr(gn_last_error(), path), "opcode: %s", gn_last_error());
    pb.n = 0;
    pk_op(&pb, 0x80); pk_op(&pb, 2); pk_global(&pb, "os", "system"); pk_str(&pb, "echo hi"); pk_op(&pb, 0x85);
    pk_op(&pb, 'R'); pk_op(&pb, '.');
    torch_zip(&z, &pb, 0, 0);
    write_file(path, z.p, z.n);
    st = load_torch(path, 0);
    CHECK(st == GN_ERR_UNSUPPORTED && strstr(gn_last_error(), "unsupported pickle global 'os.system' at offset 2"),
          "global: %s", gn_last_error());
    // deep MARK nesting, stack bombs, bad memo
    pb.n = 0;
    pk_op(&pb, 0x80); pk_op(&pb, 2);
    for (int i = 0; i < 70000; i++) pk_op(&pb, '(');
    pk_op(&pb, '.');
    torch_zip(&z, &pb, 0, 0);
    write_file(path, z.p, z.n);
    CHECK(load_torch(path, 0) == GN_ERR_FORMAT && strstr(gn_last_error(), "MARK"), "mark bomb: %s", gn_last_error());
    pb.n = 0;
    pk_op(&pb, 0x80); pk_op(&pb, 2); pk_op(&pb, 'j'); put_u32(&pb, 0xfffffff0u); pk_op(&pb, '.');
    torch_zip(&z, &pb, 0, 0);
    write_file(path, z.p, z.n);
    CHECK(load_torch(path, 0) == GN_ERR_FORMAT && strstr(gn_last_error(), "memo"), "bad memo: %s", gn_last_error());
    pb.n = 0;
    pk_op(&pb, 0x80); pk_op(&pb, 2); pk_op(&pb, 'K'); pk_op(&pb, 1); pk_op(&pb, 'r'); put_u32(&pb, 0xfffffff0u); pk_op(&pb, '.');
    torch_zip(&z, &pb, 0, 0);
    write_file(path, z.p, z.n);
    CHECK(load_torch(path, 0) == GN_ERR_FORMAT && strstr(gn_last_error(), "memo"), "huge memo put: %s", gn_last_error());
    pb.n = 0;
    pk_op(&pb, 0x80); pk_op(&pb, 2); pk_op(&pb, 'X'); put_u32(&pb, 0xffffffffu); pk_op(&pb, '.');
    torch_zip(&z, &pb, 0, 0);
    write_file(path, z.p, z.n);
    CHECK(load_torch(path, 0) == GN_ERR_FORMAT && strstr(gn_last_error(), "string of"), "long string: %s", gn_last_error());
    pb.n = 0;
    pk_op(&pb, 0x80); pk_op(&pb, 2); pk_op(&pb, ']'); pk_op(&pb, '.');
    torch_zip(&z, &pb, 0, 0);
    write_file(path, z.p, z.n);
    CHECK(load_torch(path, 0) == GN_ERR_FORMAT && strstr(gn_last_error(), "holds a list"), "not a dict: %s", gn_last_error());
    // a view reaching past its storage
    pb.n = 0;
    pk_op(&pb, 0x80); pk_op(&pb, 2); pk_op(&pb, '}'); pk_op(&pb, '(');
    pk_global(&pb, "torch._utils", "_rebuild_tensor_v2"); pk_op(&pb, 'q'); pk_op(&pb, 1); pk_op(&pb, '0');
    int s4[] = {4}, st1[] = {1};
    pk_str(&pb, "x"); pk_tensor(&pb, "FloatStorage", "0", 6, 3, 1, s4, st1);
    pk_op(&pb, 'u'); pk_op(&pb, '.');
    torch_zip(&z, &pb, 0, 0);
    write_file(path, z.p, z.n);
    CHECK(load_torch(path, 0) == GN_ERR_FORMAT && strstr(gn_last_error(), "reaches element 6"), "view bounds: %s",
          gn_last_error());
    // storage numel larger than its entry
    pb.n = 0;
    pk_op(&pb, 0x80); pk_op(&pb, 2); pk_op(&pb, '}'); pk_op(&pb, '(');
    pk_global(&pb, "torch._utils", "_rebuild_tensor_v2"); pk_op(&pb, 'q'); pk_op(&pb, 1); pk_op(&pb, '0');
    pk_str(&pb, "x"); pk_tensor(&pb, "FloatStorage", "0", 7, 0, 1, s4, st1);
    pk_op(&pb, 'u'); pk_op(&pb, '.');
    torch_zip(&z, &pb, 0, 0);
    write_file(path, z.p, z.n);
    CHECK(load_torch(path, 0) == GN_ERR_FORMAT && strstr(gn_last_error(), "claims 7"), "storage size: %s",
          gn_last_error());
    // not a zip at all / legacy pickle
    write_file(path, "\x80\x02\x8a\x0alegacy.....................", 30);
    CHECK(load_torch(path, 0) == GN_ERR_UNSUPPORTED && strstr(gn_last_error(), "legacy"), "legacy: %s", gn_last_error());

    torch_zip(&z, &pkl, 0, 0);
    fuzz_file("torch zip", &z, load_torch, path);
    fuzz_file("torch zip64", &z64, load_torch, path);
    free(pkl.p); free(z.p); free(z64.p); free(pb.p);
}

int main(void) {
    snprintf(g_dir, sizeof g_dir, "%s/gn_test_formats_XXXXXX", access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
    if (!mkdtemp(g_dir)) { perror("mkdtemp"); return 1; }
    test_half();
    test_dtypes();
    test_safetensors();
    test_gguf();
    test_torch();
    rmdir(g_dir);
    TEST_REPORT();
}
