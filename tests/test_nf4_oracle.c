/*
 * test_nf4_oracle.c — the C half of tests/test_nf4.py, which compares our
 * NF4/FP4 quantizer, dequantizer and checkpoint layout with bitsandbytes.
 * Python writes raw inputs; this program runs our code on them and writes raw
 * outputs (little-endian, no headers) for Python to compare byte for byte.
 *
 *   test_nf4_oracle quant IN DTYPE BLOCKSIZE nf4|fp4 DQ TORCH_THREADS OUTDIR D0 [D1 ..]
 *       IN: D0*D1*.. elements of DTYPE (f32|f16|bf16). Writes OUTDIR/{packed, absmax
 *       (stored: f32, or u8 codes with DQ), nested_absmax, offset, absmax_used
 *       (f32 scales dequant uses), deq_f32, deq (in DTYPE), json}
 *   test_nf4_oracle q8 IN N OUTDIR        bnb CPU quantize_blockwise(IN f32, blocksize 256)
 *                                         -> OUTDIR/{codes, absmax}
 *   test_nf4_oracle mean IN N THREADS OUT torch float32 mean -> OUT (4 bytes)
 *   test_nf4_oracle save IN DTYPE BLOCKSIZE nf4|fp4 DQ FILE PREFIX D0 [D1 ..]
 *                                         quantize with that shape, write FILE (safetensors)
 *   test_nf4_oracle load FILE PREFIX OUTDIR   gn_quant4_load -> OUTDIR/{deq (state dtype), deq_f32,
 *                                             absmax_used, info (text: dtype nelem blocksize nested)}
 *   test_nf4_oracle loaderr FILE PREFIX   prints "status N: message" (0 = loaded); exits 0
 *   test_nf4_oracle products IN BLOCKSIZE nf4|fp4 DQ X DY T OUTDIR ROWS COLS
 *       IN: ROWS*COLS f32 weights, quantized with that block; X: T*COLS f32, DY: T*ROWS f32.
 *       With float32 compute writes OUTDIR/{deq_ref (gn_dequantize_4bit_ref), mm_ref, mm
 *       (X @ W^T by gn_nf4_matmul_ref / gn_nf4_matmul), nn_ref, nn (DY @ W by
 *       gn_nf4_matmul_nn_ref / gn_nf4_matmul_nn)}
 *
 * With no arguments (as `make ctest` runs it) it only checks that it runs.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "quant/nf4.h"

static void *read_all(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) { fprintf(stderr, "cannot open %s\n", path); exit(2); }
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *p = malloc((size_t)len + 1);
    if (fread(p, 1, (size_t)len, f) != (size_t)len) { fprintf(stderr, "short read %s\n", path); exit(2); }
    fclose(f);
    *n = (size_t)len;
    return p;
}

static void write_out(const char *dir, const char *name, const void *p, size_t n) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || (n && fwrite(p, 1, n, f) != n)) { fprintf(stderr, "cannot write %s\n", path); exit(2); }
    fclose(f);
}

static gn_dtype parse_dtype(const char *s) {
    if (!strcmp(s, "f32")) return GN_DTYPE_F32;
    if (!strcmp(s, "f16")) return GN_DTYPE_F16;
    if (!strcmp(s, "bf16")) return GN_DTYPE_BF16;
    fprintf(stderr, "bad dtype %s\n", s);
    exit(2);
}

static size_t dsize(gn_dtype dt) { return dt == GN_DTYPE_F32 ? 4 : 2; }

static void die_st(gn_status st) {
    if (st != GN_OK) { fprintf(stderr, "error %d: %s\n", st, gn_last_error()); exit(3); }
}

// Writes what every mode shares: scales in use and the dequantized tensor.
static void write_state(const gn_quant4_state *q, const char *dir) {
    float *used = malloc((size_t)q->nblocks * 4 + 4); // the scales dequantization uses (rebuilt with DQ)
    if (!used) { fprintf(stderr, "out of memory\n"); exit(1); }
    gn_quant4_scales(q, used);
    write_out(dir, "absmax_used", used, (size_t)q->nblocks * 4);
    free(used);
    float *d = malloc((size_t)q->nelem * 4);
    gn_dequantize_4bit(q, d);
    write_out(dir, "deq_f32", d, (size_t)q->nelem * 4);
    void *dd = malloc((size_t)q->nelem * dsize(q->dtype));
    die_st(gn_dequantize_4bit_to(q, q->dtype, dd));
    write_out(dir, "deq", dd, (size_t)q->nelem * dsize(q->dtype));
    free(d);
    free(dd);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        // smoke test: quantize and dequantize a few values
        float x[5] = {1, -0.5f, 0.25f, 0, -1};
        gn_quant4_state q;
        CHECK(gn_quantize_4bit(x, GN_DTYPE_F32, 5, 64, GN_QUANT_NF4, 1, &q) == GN_OK, "quantize: %s", gn_last_error());
        float d[5];
        gn_dequantize_4bit(&q, d);
        CHECK(d[0] > 0.99f && d[4] < -0.99f, "dequant %g %g", d[0], d[4]);
        gn_quant4_free(&q);
        TEST_REPORT();
    }
    const char *mode = argv[1];
    if (!strcmp(mode, "quant") && argc >= 10 && argc - 9 <= GN_MAX_DIMS) {
        size_t nb;
        void *in = read_all(argv[2], &nb);
        gn_dtype dt = parse_dtype(argv[3]);
        int ndim = argc - 9;
        int64_t shape[GN_MAX_DIMS], n = 1;
        for (int i = 0; i < ndim; i++) { shape[i] = atoll(argv[9 + i]); n *= shape[i]; }
        if (nb != (size_t)n * dsize(dt)) { fprintf(stderr, "input size %zu for %lld elements\n", nb, (long long)n); return 2; }
        gn_quant4_opts o = {.torch_threads = atoi(argv[7])};
        gn_quant4_state q;
        die_st(gn_quantize_4bit_ex(in, dt, n, atoi(argv[4]), strcmp(argv[5], "fp4") ? GN_QUANT_NF4 : GN_QUANT_FP4,
                                   atoi(argv[6]), &o, &q));
        die_st(gn_quant4_set_shape(&q, ndim, shape));
        const char *dir = argv[8];
        write_out(dir, "packed", q.packed, (size_t)((n + 1) / 2));
        if (q.nested) {
            write_out(dir, "absmax", q.qabsmax, (size_t)q.nblocks);
            write_out(dir, "nested_absmax", q.nested_absmax, (size_t)q.nested_nblocks * 4);
            write_out(dir, "offset", &q.offset, 4);
        } else {
            write_out(dir, "absmax", q.absmax, (size_t)q.nblocks * 4);
        }
        char *js = gn_quant4_state_json(&q);
        write_out(dir, "json", js, strlen(js));
        free(js);
        write_state(&q, dir);
        gn_quant4_free(&q);
        free(in);
        return 0;
    }
    if (!strcmp(mode, "q8") && argc == 5) {
        size_t nb;
        float *in = read_all(argv[2], &nb);
        int64_t n = atoll(argv[3]);
        uint8_t *codes = malloc((size_t)n + 1);
        float *am = malloc((size_t)((n + 255) / 256 + 1) * 4);
        gn_quantize_blockwise_8bit(in, n, gn_dynamic_map, 256, codes, am);
        write_out(argv[4], "codes", codes, (size_t)n);
        write_out(argv[4], "absmax", am, (size_t)((n + 255) / 256) * 4);
        free(in); free(codes); free(am);
        return 0;
    }
    if (!strcmp(mode, "mean") && argc == 6) {
        size_t nb;
        float *in = read_all(argv[2], &nb);
        float m = gn_quant4_torch_mean(in, atoll(argv[3]), atoi(argv[4]));
        FILE *f = fopen(argv[5], "wb");
        fwrite(&m, 4, 1, f);
        fclose(f);
        free(in);
        return 0;
    }
    if (!strcmp(mode, "save") && argc >= 10 && argc - 9 <= GN_MAX_DIMS) {
        size_t nb;
        void *in = read_all(argv[2], &nb);
        gn_dtype dt = parse_dtype(argv[3]);
        int ndim = argc - 9;
        int64_t shape[GN_MAX_DIMS], n = 1;
        for (int i = 0; i < ndim; i++) { shape[i] = atoll(argv[9 + i]); n *= shape[i]; }
        gn_quant4_state q;
        die_st(gn_quantize_4bit(in, dt, n, atoi(argv[4]), strcmp(argv[5], "fp4") ? GN_QUANT_NF4 : GN_QUANT_FP4,
                                atoi(argv[6]), &q));
        die_st(gn_quant4_set_shape(&q, ndim, shape));
        gn_quant4_export ex;
        die_st(gn_quant4_export_tensors(&q, argv[8], &ex));
        die_st(gn_safetensors_save(argv[7], ex.t, ex.n, NULL, 0));
        gn_quant4_export_free(&ex);
        gn_quant4_free(&q);
        free(in);
        return 0;
    }
    if ((!strcmp(mode, "load") && argc == 5) || (!strcmp(mode, "loaderr") && argc == 4)) {
        gn_tensor_table tt;
        gn_tensor_table_init(&tt);
        die_st(gn_safetensors_load(&tt, argv[2]));
        gn_quant4_state q;
        gn_status st = gn_quant4_load(&q, &tt, argv[3]);
        if (!strcmp(mode, "loaderr")) {
            printf("status %d: %s\n", (int)st, st == GN_OK ? "" : gn_last_error());
            if (st == GN_OK) gn_quant4_free(&q);
            gn_tensor_table_free(&tt);
            return 0;
        }
        die_st(st);
        write_state(&q, argv[4]);
        char info[256];
        snprintf(info, sizeof info, "%s %lld %d %d %lld %lld\n", gn_dtype_name(q.dtype), (long long)q.nelem,
                 q.blocksize, q.nested, (long long)q.rows, (long long)q.cols);
        write_out(argv[4], "info", info, strlen(info));
        gn_quant4_free(&q);
        gn_tensor_table_free(&tt);
        return 0;
    }
    if (!strcmp(mode, "products") && argc == 12) {
        size_t nw, nx, ny;
        float *w = read_all(argv[2], &nw), *x = read_all(argv[6], &nx), *dy = read_all(argv[7], &ny);
        const int64_t T = atoll(argv[8]), R = atoll(argv[10]), C = atoll(argv[11]);
        if (nw != (size_t)(R * C) * 4 || nx != (size_t)(T * C) * 4 || ny != (size_t)(T * R) * 4) {
            fprintf(stderr, "products: input sizes %zu %zu %zu for %lldx%lld, T %lld\n", nw, nx, ny, (long long)R,
                    (long long)C, (long long)T);
            return 2;
        }
        gn_quant4_state q;
        die_st(gn_quantize_4bit(w, GN_DTYPE_F32, R * C, atoi(argv[3]), strcmp(argv[4], "fp4") ? GN_QUANT_NF4 : GN_QUANT_FP4,
                                atoi(argv[5]), &q));
        die_st(gn_quant4_set_shape(&q, 2, (int64_t[]){R, C}));
        q.wdtype = GN_DTYPE_F32;
        const char *dir = argv[9];
        float *d = malloc((size_t)(R * C) * 4), *o = malloc((size_t)(T * (R > C ? R : C)) * 4);
        if (!d || !o) { fprintf(stderr, "out of memory\n"); return 1; }
        gn_dequantize_4bit_ref(&q, d);
        write_out(dir, "deq_ref", d, (size_t)(R * C) * 4);
        gn_nf4_matmul_ref(o, x, &q, T);
        write_out(dir, "mm_ref", o, (size_t)(T * R) * 4);
        gn_nf4_matmul(o, x, &q, T);
        write_out(dir, "mm", o, (size_t)(T * R) * 4);
        gn_nf4_matmul_nn_ref(o, dy, &q, T);
        write_out(dir, "nn_ref", o, (size_t)(T * C) * 4);
        gn_nf4_matmul_nn(o, dy, &q, T);
        write_out(dir, "nn", o, (size_t)(T * C) * 4);
        free(d);
        free(o);
        gn_quant4_free(&q);
        free(w);
        free(x);
        free(dy);
        return 0;
    }
    fprintf(stderr, "usage: see the comment at the top of tests/test_nf4_oracle.c\n");
    return 2;
}
