/*
 * bench_generate.c — prefill and decode throughput of one model through the public API.
 *
 *   make build/bench/bench_generate
 *   build/bench/bench_generate -m ~/.cache/guanaco/models/SmolLM2-135M-Instruct.Q4_1.gguf -t 2
 *
 * One repetition = reset the session, prefill N prompt tokens in one
 * gn_session_forward call (all_logits=0, timed), then decode greedily one token
 * at a time. The decode timer starts after the first decoded token (llama2.c),
 * so M tokens are timed after one untimed step. One warm-up repetition runs
 * first; the figures are medians over --reps repetitions (CLOCK_MONOTONIC).
 *
 * The prompt is a fixed id sequence, (i*7919 + 13) % V: any in-range ids do,
 * the cost of a forward pass does not depend on which tokens they are.
 *
 * --4bit quantizes the linear layers to NF4 with double quantization at load
 * (bf16 compute), as `guanaco ... --4bit` does; -a DIR applies a PEFT adapter
 * unmerged (gn_session_set_adapter).
 *
 * Machine limits (the 2-core AVX-512 box the baseline was taken on; override
 * with --peak-gflops / --bw-gbs):
 *   decode  is bandwidth-bound: every weight matrix is read once per token,
 *           limit tok/s = read bandwidth / weight bytes per token (46 GB/s).
 *           f32/bf16: counted from the config; 4-bit: the model's own figure
 *           ("resident weight bytes" in gn_model_describe: packed nibbles,
 *           scales, and the f32 embedding/head and norms), plus one embedding
 *           row. An adapter adds its A and B matrices (f32 in memory; a bf16 file's
 *           bf16 copies, which decode reads), counted from the safetensors header.
 *   prefill is compute-bound:  FLOPs = 2 * matmul params * N + attention,
 *           limit tok/s = N / (FLOPs / peak), peak = 515 GFLOP/s f32 FMA, 2 cores.
 *
 * OpenBLAS reads OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE when the library loads;
 * our machines set OPENBLAS_CORETYPE=Haswell, which halves its speed on these
 * cores. If either is set we unset both and re-execute ourselves, and say so.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE // unsetenv, setenv, CLOCK_MONOTONIC
#endif
#include <stdint.h>  // uint64_t
#include <stdio.h>   // printf, fprintf, fopen
#include <stdlib.h>  // malloc, free, strtol, getenv, unsetenv, qsort
#include <string.h>  // strcmp
#include <time.h>    // clock_gettime, CLOCK_MONOTONIC
#include <unistd.h>  // execv

#include <cjson/cJSON.h> // the adapter's safetensors header (linked by the Makefile)

#include "guanaco.h" // gn_model_load, gn_session_*, gn_set_threads, gn_model_config

// ----------------------------------------------------------------------------
// defaults and machine constants

#define DEFAULT_PEAK_GFLOPS 515.0 // f32 FMA peak, 2 cores AVX-512 (measured box)
#define DEFAULT_BW_GBS 46.0       // measured read bandwidth, GB/s
#define N_IDS_REPORTED 16         // greedy ids echoed in --json, to compare with a peer

static void error_usage(void) {
    fprintf(stderr,
            "Usage:   bench_generate -m MODEL [options]\n"
            "Example: bench_generate -m SmolLM2-135M-Instruct.Q4_1.gguf -t 2 --json\n"
            "Options:\n"
            "  -m MODEL              .gguf file or HF folder (required)\n"
            "  -t THREADS            kernel threads (default: all cores)\n"
            "  --prompt-tokens N     tokens prefilled in one forward call (default 512)\n"
            "  --gen-tokens M        decoded tokens timed after the first one (default 128)\n"
            "  --reps R              timed repetitions, median reported (default 3)\n"
            "  --bf16                load weights as bf16 (default f32)\n"
            "  --4bit                quantize linear layers to NF4 + double quant at load (bf16 compute)\n"
            "  --4bit-head           with --4bit: lm_head too (bnb's llm_int8_skip_modules=[])\n"
            "  --mmap                weights in place from the file mapping (the CLI's --mmap)\n"
            "  -a ADAPTER_DIR        apply this PEFT LoRA adapter unmerged\n"
            "  --peak-gflops X       prefill limit, GFLOP/s (default %.0f)\n"
            "  --bw-gbs X            decode limit, GB/s (default %.0f)\n"
            "  --json                also print one JSON line with the figures\n",
            DEFAULT_PEAK_GFLOPS, DEFAULT_BW_GBS);
    exit(1);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) { // sorts v in place
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static int32_t argmax(const float *x, int n) {
    int32_t best = 0;
    float bv = x[0];
    for (int i = 1; i < n; i++)
        if (x[i] > bv) { bv = x[i]; best = i; }
    return best;
}

static int parse_int(const char *flag, const char *s, int lo) {
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < lo || v > 1000000) {
        fprintf(stderr, "bench_generate: %s wants an integer >= %d, got '%s'\n", flag, lo, s);
        exit(1);
    }
    return (int)v;
}

static double parse_pos(const char *flag, const char *s) {
    char *end;
    double v = strtod(s, &end);
    if (*s == '\0' || *end != '\0' || !(v > 0)) {
        fprintf(stderr, "bench_generate: %s wants a positive number, got '%s'\n", flag, s);
        exit(1);
    }
    return v;
}

// ----------------------------------------------------------------------------
// napkin math from the config

typedef struct {
    double params;        // every weight in the model (tied head counted once)
    double matmul_params; // weights multiplied per token: layers' linears + LM head
    double head_params;   // V * C
    double bytes_token;   // weight bytes read per decoded token
} model_size;

// Counts the weights of a LLaMA with this config. Per layer: q (C, NH*hs),
// k and v (C, NKV*hs), o (NH*hs, C), gate and up (C, H), down (H, C), two
// RMSNorm vectors (C). Plus the embedding (V, C), the final norm (C) and an
// untied head (V, C). A decode step reads every layer weight, the final norm,
// the head matrix (the embedding itself when tied) and one embedding row.
static model_size count_params(const gn_config *c, double bytes_per_param) {
    double C = c->dim, H = c->hidden_dim, V = c->vocab_size, L = c->n_layers;
    double q = C * c->n_heads * (double)c->head_dim;
    double kv = C * c->n_kv_heads * (double)c->head_dim;
    double layer_linear = q + 2 * kv + q /* o */ + 3 * C * H;
    double layer = layer_linear + 2 * C;
    model_size s;
    s.head_params = V * C;
    s.params = V * C + L * layer + C + (c->tie_embeddings ? 0 : V * C);
    s.matmul_params = L * layer_linear + s.head_params;
    s.bytes_token = bytes_per_param * (L * layer + C + s.head_params + C /* embedding row */);
    return s;
}

// FLOPs of prefilling N tokens from an empty cache: every token goes through the
// layers' linears (2 FLOPs per weight), the head runs on the last row only
// (all_logits=0), and causal attention costs, per layer and head, 2*hs for the
// scores plus 2*hs for the weighted sum per (query, key) pair, N(N+1)/2 pairs.
static double prefill_flops(const gn_config *c, const model_size *s, int N) {
    double layer_linear = s->matmul_params - s->head_params;
    double pairs = 0.5 * (double)N * (double)(N + 1);
    double attn = (double)c->n_layers * c->n_heads * 4.0 * c->head_dim * pairs;
    return 2.0 * layer_linear * N + 2.0 * s->head_params + attn;
}

// ----------------------------------------------------------------------------
// bytes from the model and the adapter files

// The "resident weight bytes: N" line of gn_model_describe (what the forward pass
// reads); 0 when absent.
static double resident_weight_bytes(const char *desc) {
    const char *key = "resident weight bytes:";
    const char *p = desc ? strstr(desc, key) : NULL;
    return p ? strtod(p + strlen(key), NULL) : 0;
}

// A LoRA adapter's A and B matrices: the weights they hold (their product with one
// token costs 2 FLOPs each) and, in *bytes, what decode reads of them per token (a bf16
// file: its bf16 copies, 2 bytes a weight; else f32, 4): summed over the tensors listed
// in DIR/adapter_model.safetensors's header. 0 when unreadable (e.g. an adapter_model.bin).
static double adapter_params(const char *dir, double *bytes) {
    char path[4096];
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    unsigned char len8[8];
    double n = 0;
    *bytes = 0;
    if (fread(len8, 1, 8, f) == 8) {
        uint64_t len = 0;
        for (int i = 7; i >= 0; i--) len = len << 8 | len8[i];
        char *hdr = len < (1u << 26) ? malloc(len + 1) : NULL;
        if (hdr && fread(hdr, 1, len, f) == len) {
            hdr[len] = '\0';
            cJSON *j = cJSON_Parse(hdr);
            for (cJSON *t = j ? j->child : NULL; t; t = t->next) {
                cJSON *shape = cJSON_GetObjectItemCaseSensitive(t, "shape");
                if (!t->string || !strcmp(t->string, "__metadata__") || !cJSON_IsArray(shape)) continue;
                double e = 1;
                for (cJSON *d = shape->child; d; d = d->next) e *= d->valuedouble;
                n += e;
                const cJSON *dt = cJSON_GetObjectItemCaseSensitive(t, "dtype");
                *bytes += e * (cJSON_IsString(dt) && !strcmp(dt->valuestring, "BF16") ? 2 : 4);
            }
            cJSON_Delete(j);
        }
        free(hdr);
    }
    fclose(f);
    return n;
}

// ----------------------------------------------------------------------------

int main(int argc, char **argv) {
    // Re-execute without the OpenBLAS overrides (read once, when OpenBLAS loads).
    if (getenv("OPENBLAS_CORETYPE") || getenv("OPENBLAS_L2_SIZE")) {
        fprintf(stderr, "bench_generate: unsetting OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE "
                        "(CORETYPE=Haswell halves OpenBLAS speed here) and re-executing\n");
        unsetenv("OPENBLAS_CORETYPE");
        unsetenv("OPENBLAS_L2_SIZE");
        setenv("GN_BENCH_OPENBLAS_UNSET", "1", 1);
        execv("/proc/self/exe", argv);
        perror("bench_generate: execv /proc/self/exe failed, running with the variables unset "
               "in-process only (OpenBLAS may already have read them)");
    }

    const char *model_path = NULL, *adapter_path = NULL;
    int threads = 0, N = 512, M = 128, reps = 3, json = 0;
    double peak_gflops = DEFAULT_PEAK_GFLOPS, bw_gbs = DEFAULT_BW_GBS;
    gn_load_opts opts = {.weight_dtype = GN_DTYPE_F32};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int has = i + 1 < argc;
        if (!strcmp(a, "-m") && has) model_path = argv[++i];
        else if (!strcmp(a, "-t") && has) threads = parse_int(a, argv[++i], 1);
        else if (!strcmp(a, "--prompt-tokens") && has) N = parse_int(a, argv[++i], 1);
        else if (!strcmp(a, "--gen-tokens") && has) M = parse_int(a, argv[++i], 1);
        else if (!strcmp(a, "--reps") && has) reps = parse_int(a, argv[++i], 1);
        else if (!strcmp(a, "--peak-gflops") && has) peak_gflops = parse_pos(a, argv[++i]);
        else if (!strcmp(a, "--bw-gbs") && has) bw_gbs = parse_pos(a, argv[++i]);
        else if (!strcmp(a, "--bf16")) opts.weight_dtype = GN_DTYPE_BF16;
        else if (!strcmp(a, "--4bit")) {
            opts.weight_dtype = GN_DTYPE_NF4;     // double quant: no_double_quant = 0
            opts.compute_dtype = GN_DTYPE_COUNT; // auto: bf16, as the CLI's --4bit
        } else if (!strcmp(a, "--4bit-head")) opts.quant_head = 1;
        else if (!strcmp(a, "--mmap")) opts.mmap_weights = 1;
        else if (!strcmp(a, "-a") && has) adapter_path = argv[++i];
        else if (!strcmp(a, "--json")) json = 1;
        else {
            fprintf(stderr, "bench_generate: unknown or incomplete flag '%s'\n", a);
            error_usage();
        }
    }
    if (!model_path) error_usage();

    if (threads > 0) gn_set_threads(threads);
    threads = gn_get_threads();

    double t0 = now_s();
    gn_model *m;
    if (gn_model_load(&m, model_path, &opts) != GN_OK) {
        fprintf(stderr, "bench_generate: %s\n", gn_last_error());
        return 1;
    }
    gn_adapter *ad = NULL;
    if (adapter_path && gn_adapter_load(&ad, m, adapter_path, NULL) != GN_OK) {
        fprintf(stderr, "bench_generate: adapter %s: %s\n", adapter_path, gn_last_error());
        return 1;
    }
    double load_s = now_s() - t0;
    const gn_config *cfg = gn_model_config(m);
    const int V = cfg->vocab_size;
    // f32 = 4 bytes, bf16 = 2: what the API lets us ask for. gn_model_describe
    // (printed below) shows what was really loaded.
    int q4 = opts.weight_dtype == GN_DTYPE_NF4;
    double bpp = opts.weight_dtype == GN_DTYPE_BF16 ? 2.0 : 4.0;
    model_size ms = count_params(cfg, bpp);
    char *desc = gn_model_describe(m);
    double resident = resident_weight_bytes(desc);
    if (q4 && resident <= 0) {
        fprintf(stderr, "bench_generate: no 'resident weight bytes:' line in "
                        "gn_model_describe; cannot size the 4-bit weights\n");
        return 1;
    }
    if (resident > 0) { // the model's own count: packed 4-bit layers, a GGUF's Q8_0 matrices kept
        // resident counts the embedding table; decode reads one row of it (all of it only as
        // a tied head, which resident already holds once). Bytes a weight of the table:
        const char *emb = strstr(desc, "embedding: ");
        const double es = !emb                             ? bpp
                          : !strncmp(emb + 11, "q8_0", 4) ? 34.0 / 32.0
                          : !strncmp(emb + 11, "q4_1", 4) ? 20.0 / 32.0
                          : !strncmp(emb + 11, "q4_0", 4) ? 18.0 / 32.0
                          : !strncmp(emb + 11, "bf16", 4) ? 2.0 : 4.0;
        ms.bytes_token = resident + es * cfg->dim - (cfg->tie_embeddings ? 0.0 : es * (double)V * cfg->dim);
    }
    double ad_bytes = 0, ad_params = ad ? adapter_params(adapter_path, &ad_bytes) : 0;
    if (ad && ad_params <= 0)
        fprintf(stderr, "bench_generate: could not size the adapter from its safetensors "
                        "header; its bytes are left out of the decode limit\n");
    double model_bytes = ms.bytes_token;
    ms.bytes_token += ad_bytes;        // A, B (f32, or bf16 from a bf16 file), read once per token
    ms.matmul_params += ad_params;     // x @ A^T @ B^T: 2 FLOPs per adapter weight per token
    double flops = prefill_flops(cfg, &ms, N);

    printf("bench_generate: %s\n", model_path);
    printf("env: OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE %s\n",
           getenv("GN_BENCH_OPENBLAS_UNSET") ? "were set; unset for this run"
                                             : "not set");
    if (q4)
        printf("threads %d, simd %s, weights nf4 + double quant (bf16 compute) on linear "
               "layers, load %.2f s\n", threads, gn_simd_name(), load_s);
    else
        printf("threads %d, simd %s, weights %s (%.0f B/param), load %.2f s\n", threads,
               gn_simd_name(), gn_dtype_name(opts.weight_dtype), bpp, load_s);
    printf("config: C=%d H=%d L=%d NH=%d NKV=%d hs=%d V=%d tied=%d\n", cfg->dim,
           cfg->hidden_dim, cfg->n_layers, cfg->n_heads, cfg->n_kv_heads, cfg->head_dim, V,
           cfg->tie_embeddings);
    if (ad)
        printf("adapter: %s, %.2fM params (%s: %.1f MB read per token), unmerged\n", adapter_path,
               ad_params / 1e6, ad_bytes < 3 * ad_params ? "bf16" : "f32", ad_bytes / 1e6);
    printf("params %.1fM, matmul params %.1fM%s, weight bytes per decoded token %.1f MB "
           "(%s%s)\n",
           ms.params / 1e6, ms.matmul_params / 1e6, ad ? " (incl. adapter)" : "",
           ms.bytes_token / 1e6, resident > 0 ? "the model's resident weight bytes less the embedding table but one row" : "counted from config",
           ad ? " + adapter" : "");
    if (resident > 0 && !q4)
        printf("(model reports %.1f MB resident weight bytes; counted %.1f MB)\n",
               resident / 1e6, model_bytes / 1e6);
    if (desc) {
        printf("%s%s", desc, desc[0] && desc[strlen(desc) - 1] == '\n' ? "" : "\n");
        free(desc);
    }
    fflush(stdout);

    int32_t *prompt = malloc((size_t)N * sizeof *prompt);
    int32_t first_ids[N_IDS_REPORTED];
    double *pre_s = malloc((size_t)reps * sizeof(double));
    double *dec_s = malloc((size_t)reps * sizeof(double));
    if (!prompt || !pre_s || !dec_s) {
        fprintf(stderr, "bench_generate: out of memory\n");
        return 1;
    }
    for (int i = 0; i < N; i++) prompt[i] = (int32_t)(((int64_t)i * 7919 + 13) % V);

    gn_session *s = gn_session_new(m, N + M + 1);
    if (!s) {
        fprintf(stderr, "bench_generate: gn_session_new: %s\n", gn_last_error());
        return 1;
    }
    if (ad) gn_session_set_adapter(s, ad);

    int n_first = 0;
    for (int r = -1; r < reps; r++) { // r = -1 is the warm-up
        gn_session_reset(s);
        double a = now_s();
        const float *logits = gn_session_forward(s, prompt, N, 0);
        double b = now_s();
        if (!logits) {
            fprintf(stderr, "bench_generate: prefill: %s\n", gn_last_error());
            return 1;
        }
        int32_t tok = argmax(logits, V);
        int steps = r < 0 && M > 16 ? 16 : M; // a shorter warm-up decode
        double c = 0;
        n_first = 0;
        for (int k = 0; k <= steps; k++) { // step 0 is the untimed first token
            if (n_first < N_IDS_REPORTED) first_ids[n_first++] = tok;
            logits = gn_session_forward(s, &tok, 1, 0);
            if (!logits) {
                fprintf(stderr, "bench_generate: decode at pos %d: %s\n", gn_session_pos(s),
                        gn_last_error());
                return 1;
            }
            tok = argmax(logits, V);
            if (k == 0) c = now_s();
        }
        double d = now_s();
        if (r >= 0) {
            pre_s[r] = b - a;
            dec_s[r] = d - c;
            fprintf(stderr, "rep %d: prefill %.1f ms, decode %.2f ms/tok\n", r,
                    1e3 * (b - a), 1e3 * (d - c) / M);
        }
    }
    double pre = median(pre_s, reps), dec = median(dec_s, reps);
    double pre_tps = N / pre, dec_tps = M / dec;
    // Limits: prefill at peak FLOP/s, decode at read bandwidth over weight bytes.
    double pre_limit = N / (flops / (peak_gflops * 1e9));
    double dec_limit = bw_gbs * 1e9 / ms.bytes_token;

    printf("prefill  N=%-4d %9.1f ms  %8.1f tok/s  %6.1f GFLOP/s  %5.1f%% of %.0f GFLOP/s "
           "(%.1f GFLOP)\n",
           N, 1e3 * pre, pre_tps, flops / pre / 1e9, 100 * pre_tps / pre_limit, peak_gflops,
           flops / 1e9);
    printf("decode   M=%-4d %9.2f ms/tok %6.1f tok/s  %6.1f GB/s     %5.1f%% of %.0f GB/s "
           "(%.1f MB/tok)\n",
           M, 1e3 * dec / M, dec_tps, ms.bytes_token * dec_tps / 1e9, 100 * dec_tps / dec_limit,
           bw_gbs, ms.bytes_token / 1e6);
    if (json) {
        printf("{\"prefill_tps\":%.3f,\"decode_tps\":%.3f,\"weight_bytes\":%.0f,\"params\":%.0f,"
               "\"matmul_params\":%.0f,\"prefill_flops\":%.0f,\"prefill_ms\":%.3f,"
               "\"decode_ms_per_tok\":%.4f,\"prefill_share\":%.4f,\"decode_share\":%.4f,"
               "\"threads\":%d,\"prompt_tokens\":%d,\"gen_tokens\":%d,\"reps\":%d,"
               "\"weight_dtype\":\"%s\",\"simd\":\"%s\",\"openblas_env_unset\":%s,"
               "\"resident_weight_bytes\":%.0f,\"adapter_params\":%.0f,\"adapter\":%s%s%s,"
               "\"decode_ids\":[",
               pre_tps, dec_tps, ms.bytes_token, ms.params, ms.matmul_params, flops, 1e3 * pre,
               1e3 * dec / M, pre_tps / pre_limit, dec_tps / dec_limit, threads, N, M, reps,
               q4 ? "nf4-dq" : gn_dtype_name(opts.weight_dtype), gn_simd_name(),
               getenv("GN_BENCH_OPENBLAS_UNSET") ? "true" : "false", resident, ad_params,
               ad ? "\"" : "", ad ? adapter_path : "null", ad ? "\"" : "");
        for (int i = 0; i < n_first; i++) printf("%s%d", i ? "," : "", first_ids[i]);
        printf("]}\n");
    }

    gn_session_free(s);
    gn_adapter_free(ad);
    gn_model_free(m);
    free(prompt);
    free(pre_s);
    free(dec_s);
    return 0;
}
