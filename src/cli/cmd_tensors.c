/*
 * cmd_tensors.c — `guanaco dump`: list the tensors of a weights file, or write
 * one of them (converted to float32) as a .npy file.
 *
 *   guanaco dump -m FILE [--list]
 *   guanaco dump -m FILE --name NAME -o OUT.npy
 *
 * FILE is a .safetensors, a torch.save zip (.bin/.pt/.pth) or a .gguf
 * (gn_tensor_file_open picks the format).
 * Used by the tests to compare our loaders and dequantizers with the Python
 * libraries.
 */
#include "cli.h"                 // cmd_dump, cli_fail, cli_write_npy_f32; gn_tensor_file_*

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

static void print_tensor(const gn_tensor_info *t) {
    printf("%s %s ", t->name, gn_dtype_name(t->dtype));
    if (t->ndim == 0) printf("-");
    for (int d = 0; d < t->ndim; d++) printf(d ? ",%" PRId64 : "%" PRId64, t->shape[d]);
    printf(" %zu\n", t->nbytes);
}

static int write_one(const gn_tensor_file *tf, int i, const char *file, const char *out) {
    gn_tensor_info ti;
    gn_tensor_file_info(tf, i, &ti);
    const gn_tensor_info *t = &ti;
    if (t->ndim > 4)
        return cli_fail("%s: tensor '%s' has %d dimensions, expected at most 4 for .npy output", file, t->name,
                        t->ndim);
    if ((uint64_t)t->nelem > SIZE_MAX / sizeof(float))
        return cli_fail("%s: tensor '%s' is too large to convert", file, t->name);
    float *buf = gn_malloc((size_t)t->nelem * sizeof(float));
    int rc;
    if (gn_tensor_file_to_f32(tf, i, buf) != GN_OK) rc = cli_fail_lib();
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

    gn_tensor_file *tf = NULL;
    int rc = 0;
    if (gn_tensor_file_open(&tf, file) != GN_OK) return cli_fail_lib();
    if (list)
        for (int i = 0; i < gn_tensor_file_count(tf); i++) {
            gn_tensor_info t;
            gn_tensor_file_info(tf, i, &t);
            print_tensor(&t);
        }
    if (name) {
        int i = gn_tensor_file_find(tf, name);
        if (i < 0) rc = cli_fail("%s: no tensor named '%s' (use --list to see the names)", file, name);
        else rc = write_one(tf, i, file, out);
    }
    gn_tensor_file_free(tf);
    return rc;
}
