/*
 * cmd_tensors.c — `guanaco dump`: list the tensors of a weights file, or write
 * one of them (converted to float32) as a .npy file.
 *
 *   guanaco dump -m FILE [--list]
 *   guanaco dump -m FILE --name NAME -o OUT.npy
 *
 * FILE is a .safetensors, a torch.save zip (.bin/.pt/.pth) or a .gguf; the
 * format is chosen by the first bytes ("GGUF", "PK\3\4"), then by the
 * extension, else safetensors.
 * Used by the tests to compare our loaders and dequantizers with the Python
 * libraries.
 */
#include "cli.h"                 // cmd_dump, cli_fail, cli_write_npy_f32
#include "formats/gguf.h"        // gn_gguf_open
#include "formats/tensors.h"     // gn_tensor_table, gn_safetensors_load, gn_torchbin_load

#include <inttypes.h>            // PRId64
#include <stdio.h>               // printf, fopen
#include <stdlib.h>              // free
#include <string.h>              // strcmp, memcmp

static void dump_usage(FILE *f) {
    fprintf(f,
            "usage: guanaco dump -m FILE [--list]\n"
            "       guanaco dump -m FILE --name NAME -o OUT.npy\n"
            "\n"
            "FILE: .safetensors, PyTorch zip checkpoint (.bin/.pt) or .gguf (detected from its bytes).\n"
            "  -m, --model FILE   the weights file (required)\n"
            "  --list             print one line per tensor (the default):\n"
            "                     NAME DTYPE SHAPE NBYTES, SHAPE outermost first and comma-separated\n"
            "                     (\"-\" for a scalar), DTYPE as f32 f16 bf16 q8_0 q4_0 q4_1 ...\n"
            "  --name NAME        the tensor to write\n"
            "  -o, --output FILE  write it as a float32 .npy of its (PyTorch-order) shape\n"
            "  -h, --help         this text\n");
}

enum { FMT_SAFETENSORS, FMT_TORCH, FMT_GGUF };

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

// Picks the format from the first 4 bytes ("GGUF", "PK\3\4"); a file with
// neither goes by its extension (.gguf, .bin/.pt/.pth), so a damaged header
// still gets the right loader's message; anything else is read as safetensors.
static int sniff(const char *path) {
    unsigned char m[4] = {0};
    FILE *f = fopen(path, "rb");
    if (f) {
        size_t n = fread(m, 1, 4, f);
        fclose(f);
        if (n == 4 && memcmp(m, "GGUF", 4) == 0) return FMT_GGUF;
        if (n == 4 && memcmp(m, "PK\x03\x04", 4) == 0) return FMT_TORCH;
    }
    if (ends_with(path, ".gguf")) return FMT_GGUF;
    if (ends_with(path, ".bin") || ends_with(path, ".pt") || ends_with(path, ".pth")) return FMT_TORCH;
    return FMT_SAFETENSORS;
}

static void print_tensor(const gn_tensor *t) {
    printf("%s %s ", t->name, gn_dtype_name(t->dtype));
    if (t->ndim == 0) printf("-");
    for (int d = 0; d < t->ndim; d++) printf(d ? ",%" PRId64 : "%" PRId64, t->shape[d]);
    printf(" %zu\n", t->nbytes);
}

static int write_one(const gn_tensor *t, const char *file, const char *out) {
    if (t->ndim > 4)
        return cli_fail("%s: tensor '%s' has %d dimensions, expected at most 4 for .npy output", file, t->name,
                        t->ndim);
    if ((uint64_t)t->nelem > SIZE_MAX / sizeof(float))
        return cli_fail("%s: tensor '%s' is too large to convert", file, t->name);
    float *buf = gn_malloc((size_t)t->nelem * sizeof(float));
    int rc;
    if (gn_tensor_to_f32(t, buf) != GN_OK) rc = cli_fail_lib();
    else rc = cli_write_npy_f32(out, buf, t->shape, t->ndim);
    free(buf);
    return rc;
}

int cmd_dump(int argc, char **argv) {
    const char *file = NULL, *name = NULL, *out = NULL;
    int list = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int has_val = i + 1 < argc;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { dump_usage(stdout); return 0; }
        else if (!strcmp(a, "--list")) list = 1;
        else if (!strcmp(a, "-m") || !strcmp(a, "--model")) { if (!has_val) goto needs_value; file = argv[++i]; }
        else if (!strcmp(a, "--name")) { if (!has_val) goto needs_value; name = argv[++i]; }
        else if (!strcmp(a, "-o") || !strcmp(a, "--output")) { if (!has_val) goto needs_value; out = argv[++i]; }
        else { cli_fail("dump: unknown option '%s' (see guanaco dump --help)", a); return 2; }
        continue;
    needs_value:
        cli_fail("dump: %s needs a value (see guanaco dump --help)", a);
        return 2;
    }
    if (!file) { cli_fail("dump: -m FILE is required (see guanaco dump --help)"); return 2; }
    if (name && !out) { cli_fail("dump: --name needs -o OUT.npy (see guanaco dump --help)"); return 2; }
    if (out && !name) { cli_fail("dump: -o needs --name NAME (see guanaco dump --help)"); return 2; }
    if (!name) list = 1;

    gn_gguf *g = NULL;
    gn_tensor_table own;
    gn_tensor_table_init(&own);
    const gn_tensor_table *tt = &own;
    gn_status st;
    switch (sniff(file)) {
    case FMT_GGUF: st = gn_gguf_open(&g, file); if (g) tt = &g->tensors; break;
    case FMT_TORCH: st = gn_torchbin_load(&own, file); break;
    default: st = gn_safetensors_load(&own, file); break;
    }
    int rc = 0;
    if (st != GN_OK) {
        rc = cli_fail_lib();
        goto done;
    }
    if (list)
        for (int i = 0; i < tt->n; i++) print_tensor(&tt->t[i]);
    if (name) {
        const gn_tensor *t = gn_tensor_table_find(tt, name);
        if (!t) rc = cli_fail("%s: no tensor named '%s' (use --list to see the names)", file, name);
        else rc = write_one(t, file, out);
    }
done:
    gn_gguf_free(g);
    gn_tensor_table_free(&own);
    return rc;
}
