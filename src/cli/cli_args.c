/*
 * cli_args.c — the flags every command shares: strict number parsing and the
 * model/load flags (-m -a -t -c --dtype --4bit --quant-type --no-double-quant
 * --blocksize --compute-dtype --device --seed -v), parsed here once for main.c,
 * the eval commands, generate --prompts, serve, finetune and eval-loss.
 */
#include "cli.h"

#include <errno.h>  // errno
#include <stdio.h>  // fprintf
#include <stdlib.h> // strtol, strtod, strtoull
#include <string.h> // strcmp

// ----------------------------------------------------------------------------
// values

const char *cli_val(int argc, char **argv, int *i) {
    if (*i + 1 >= argc) { cli_fail("%s needs a value", argv[*i]); return NULL; }
    return argv[++*i];
}

int cli_int(const char *flag, const char *v, long lo, long hi, int *out) {
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (end == v || *end || errno || x < lo || x > hi) {
        cli_fail("%s: '%s' (expected an integer %ld..%ld)", flag, v, lo, hi);
        return -1;
    }
    *out = (int)x;
    return 0;
}

int cli_num(const char *flag, const char *v, double lo, double hi, double *out) {
    char *end;
    double x = strtod(v, &end);
    if (end == v || *end || !(x >= lo && x <= hi)) {
        cli_fail("%s: '%s' (expected a number %g..%g)", flag, v, lo, hi);
        return -1;
    }
    *out = x;
    return 0;
}

int cli_u64(const char *flag, const char *v, uint64_t *out) {
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (end == v || *end || errno || v[0] == '-') {
        cli_fail("%s: '%s' (expected a non-negative integer)", flag, v);
        return -1;
    }
    *out = x;
    return 0;
}

// ----------------------------------------------------------------------------
// model flags

void cli_model_init(cli_model *o, unsigned accept) {
    memset(o, 0, sizeof *o);
    o->accept = accept;
    o->dtype = GN_DTYPE_COUNT; // auto: f32, a pre-quantized bf16 checkpoint's embedding and head bf16
    o->quant_type = GN_DTYPE_NF4;
    o->compute_dtype = GN_DTYPE_COUNT; // auto: a 4-bit checkpoint's own, else bf16
    o->device = GN_DEVICE_CPU;
}

const char CLI_MODEL_HELP[] =
    "  -m, --model PATH         HF folder (config.json + safetensors or pytorch_model*.bin), a weights\n"
    "                           file inside one, or a .gguf file (required)\n"
    "  -a, --adapter DIR        PEFT LoRA adapter folder, applied unmerged\n"
    "  -t, --threads N          threads (default: all cores)\n"
    "      --dtype f32|bf16     weight dtype to compute with (default f32, but a 4-bit checkpoint with\n"
    "                           bf16 compute keeps its bf16 embedding and head; activations are f32)\n"
    "      --4bit               quantize the linear layers on load (NF4, double quantization, block 64,\n"
    "                           bf16 compute: transformers' load_in_4bit as QLoRA uses it)\n"
    "      --quant-type nf4|fp4 --no-double-quant --blocksize N --compute-dtype bf16|f32   4-bit settings\n"
    "      --4bit-head          with --4bit: lm_head in 4-bit too (bnb's llm_int8_skip_modules=[]): a quarter\n"
    "                           of the head's bytes per decoded token; logits move by its rounding\n"
    "      --mmap               read the weights in place from the mapped file where it holds them as used\n"
    "                           (faster load, page cache shared; decode slower: 4 KiB pages). Default: a\n"
    "                           copy in memory advised for 2 MiB pages\n"
    "      --device cpu|cuda    where the forward pass runs (default cpu; cuda needs a make CUDA=1 build)\n"
    "  -v, --verbose            log loading details and timings\n";

int cli_model_flag(cli_model *o, int argc, char **argv, int *i) {
    const char *a = argv[*i], *v;
#define IS(s, l) (!strcmp(a, s) || !strcmp(a, l))
    if (IS("-m", "--model")) { if (!(v = cli_val(argc, argv, i))) return -1; o->model = v; return 1; }
    if (IS("-a", "--adapter") && !(o->accept & CLI_NO_ADAPTER)) {
        if (!(v = cli_val(argc, argv, i))) return -1;
        o->adapter = v;
        return 1;
    }
    if (IS("-t", "--threads")) {
        if (!(v = cli_val(argc, argv, i)) || cli_int(a, v, 1, 1024, &o->threads)) return -1;
        return 1;
    }
    if (IS("-c", "--ctx") && (o->accept & CLI_CTX)) {
        if (!(v = cli_val(argc, argv, i)) || cli_int(a, v, 8, 1 << 24, &o->ctx)) return -1;
        return 1;
    }
    if (!strcmp(a, "--seed") && (o->accept & CLI_SEED)) {
        if (!(v = cli_val(argc, argv, i)) || cli_u64(a, v, &o->seed)) return -1;
        o->seed_given = 1;
        return 1;
    }
    if (IS("-v", "--verbose")) { o->verbose = 1; return 1; }
    if (!strcmp(a, "--4bit")) { o->four_bit = 1; return 1; }
    if (!strcmp(a, "--4bit-head")) { o->quant_head = 1; return 1; }
    if (!strcmp(a, "--mmap")) { o->mmap_weights = 1; return 1; }
    if (!strcmp(a, "--device")) {
        if (!(v = cli_val(argc, argv, i))) return -1;
        if (gn_device_parse(v, &o->device)) { cli_fail_lib(); return -1; }
        return 1;
    }
    if (!strcmp(a, "--no-double-quant")) { o->no_double_quant = 1; return 1; }
    if (!strcmp(a, "--blocksize")) {
        if (!(v = cli_val(argc, argv, i)) || cli_int(a, v, 16, 4096, &o->blocksize)) return -1;
        if (o->blocksize & (o->blocksize - 1)) { cli_fail("--blocksize %d: expected a power of two 16..4096", o->blocksize); return -1; }
        return 1;
    }
    if (!strcmp(a, "--quant-type")) {
        if (!(v = cli_val(argc, argv, i))) return -1;
        if (!strcmp(v, "nf4")) o->quant_type = GN_DTYPE_NF4;
        else if (!strcmp(v, "fp4")) o->quant_type = GN_DTYPE_FP4;
        else { cli_fail("--quant-type: '%s' (expected nf4 or fp4)", v); return -1; }
        return 1;
    }
    if (!strcmp(a, "--compute-dtype")) {
        if (!(v = cli_val(argc, argv, i))) return -1;
        if (!strcmp(v, "bf16")) o->compute_dtype = GN_DTYPE_BF16;
        else if (!strcmp(v, "f32")) o->compute_dtype = GN_DTYPE_F32;
        else { cli_fail("--compute-dtype: '%s' (expected bf16 or f32)", v); return -1; }
        return 1;
    }
    if (!strcmp(a, "--dtype") && !(o->accept & CLI_NO_DTYPE)) {
        if (!(v = cli_val(argc, argv, i))) return -1;
        if (!strcmp(v, "f32")) o->dtype = GN_DTYPE_F32;
        else if (!strcmp(v, "bf16")) o->dtype = GN_DTYPE_BF16;
        else { cli_fail("--dtype: '%s' (expected f32 or bf16)", v); return -1; }
        return 1;
    }
#undef IS
    return 0;
}

gn_load_opts cli_load_opts(const cli_model *o) {
    gn_load_opts lo = {.weight_dtype = o->four_bit ? o->quant_type : o->dtype, .no_double_quant = o->no_double_quant,
                       .blocksize = o->blocksize, .compute_dtype = o->compute_dtype, .device = o->device,
                       .quant_head = o->quant_head, .mmap_weights = o->mmap_weights};
    return lo;
}

void cli_model_apply(const cli_model *o) {
    if (o->threads) gn_set_threads(o->threads);
    gn_set_verbosity(o->verbose ? GN_LOG_INFO : GN_LOG_WARN);
}

gn_model *cli_model_load(const cli_model *o, gn_adapter **adapter) {
    if (adapter) *adapter = NULL;
    if (!o->model) { cli_fail("-m/--model is required (see --help)"); return NULL; }
    cli_model_apply(o);
    gn_load_opts lo = cli_load_opts(o);
    gn_model *m;
    double t0 = gn_time_s();
    if (gn_model_load(&m, o->model, &lo) != GN_OK) { cli_fail_lib(); return NULL; }
    if (o->adapter) {
        if (!adapter) { cli_fail("-a/--adapter is not used by this command"); gn_model_free(m); return NULL; }
        if (gn_adapter_load(adapter, m, o->adapter, NULL) != GN_OK) { cli_fail_lib(); gn_model_free(m); return NULL; }
    }
    if (o->verbose)
        fprintf(stderr, "loaded %s in %.2f s (%s kernels, %d threads)\n", o->model, gn_time_s() - t0, gn_simd_name(),
                gn_get_threads());
    return m;
}
