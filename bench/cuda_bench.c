/*
 * cuda_bench.c — the CUDA backend's GPU figures (bench/cuda_check.sh runs it and
 * makes the table; see bench/README.md):
 *
 *   bandwidth  device-to-device cudaMemcpy of 1 GiB: (read + write bytes) / time
 *   gemv       the fused NF4 GEMV (double quantization, block 64, bf16 weights,
 *              f32 activations, T = 1) at 7B layer shapes 4096x4096, 11008x4096,
 *              4096x11008: bytes it must read (packed + scales + x + out) / time,
 *              and that as a share of the copy bandwidth. Each shape rotates over
 *              enough copies of the weights (>= 256 MiB) that the L2 cache never
 *              holds them; the launches are replayed from a CUDA graph.
 *   decode     a 7B-shaped LLaMA (32 layers, 4096/11008, 32 heads, vocab 32000)
 *              with random NF4 + DQ weights made here (nothing downloaded),
 *              bf16 embedding and head, through the library's own
 *              gn_session_forward: greedy decode after a short prompt (tok/s,
 *              and the weight bytes per token / time as a share of bandwidth),
 *              then a 512-token prefill (tok/s).
 *   train      one QLoRA sequence on that model (r 64 on all 7 modules, 512
 *              tokens) through gn_trainer_sequence (tok/s; the parameters go up
 *              and the gradients come down over PCIe inside the figure), and
 *              one paged AdamW step over the same number of parameters.
 *   gradcheck  a small random model written as safetensors, loaded twice with
 *              --4bit (CPU, and --device cuda): loss and LoRA gradients of one
 *              training sequence (dropout 0.05) compared, relative L2 difference.
 *
 * Prints "RESULT <key> <value>" lines and, with --json FILE, the same as JSON.
 *   build-cuda/bench/cuda_bench [--layers 32] [--decode 128] [--prompt 512]
 *                               [--skip-train] [--skip-gradcheck] [--json FILE]
 * In a build without CUDA it says so and exits 0.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef GN_HAVE_CUDA
int main(void) {
    printf("cuda_bench: built without CUDA (make CUDA=1)\n");
    return 0;
}
#else

#include <sys/stat.h>

#include "cuda/cuda.h"
#include "cuda/cuda_priv.h"
#include "formats/tensors.h"
#include "../tests/tiny_model.h" // tm_write_model
#include "model/llama.h"
#include "quant/nf4.h"

static FILE *g_json;
static int g_json_first = 1;

static void result(const char *key, double v) {
    printf("RESULT %s %.6g\n", key, v);
    fflush(stdout);
    if (g_json) { fprintf(g_json, "%s\n  \"%s\": %.6g", g_json_first ? "" : ",", key, v); g_json_first = 0; }
}
static void result_str(const char *key, const char *v) {
    printf("RESULT %s %s\n", key, v);
    if (g_json) { fprintf(g_json, "%s\n  \"%s\": \"%s\"", g_json_first ? "" : ",", key, v); g_json_first = 0; }
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t next64(void) { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return rng; }
static float frand(void) { return (float)((next64() >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f; }
static void rand_bytes(uint8_t *p, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) { uint64_t v = next64(); memcpy(p + i, &v, 8); }
    for (; i < n; i++) p[i] = (uint8_t)next64();
}

// ----------------------------------------------------------------------------
// a random NF4 + DQ matrix (block 64, nested 256), as a host state

typedef struct {
    gn_quant4_state q;
    uint8_t *packed, *qabs;
    float *nabs;
} rq4;

static void rq4_make(rq4 *r, int64_t rows, int64_t cols) {
    memset(r, 0, sizeof *r);
    gn_quant4_state *q = &r->q;
    q->quant_type = GN_QUANT_NF4;
    q->blocksize = 64;
    q->dtype = q->wdtype = GN_DTYPE_BF16;
    q->ndim = 2;
    q->shape[0] = q->rows = rows;
    q->shape[1] = q->cols = cols;
    q->nelem = rows * cols;
    q->nblocks = (q->nelem + 63) / 64;
    memcpy(q->code, gn_nf4_code, sizeof q->code);
    q->nested = 1;
    q->nested_blocksize = 256;
    q->nested_nblocks = (q->nblocks + 255) / 256;
    q->nested_dtype = GN_DTYPE_F32;
    memcpy(q->nested_code, gn_dynamic_map, sizeof q->nested_code);
    q->offset = 0.02f;
    r->packed = malloc((size_t)(q->nelem + 1) / 2);
    rand_bytes(r->packed, (size_t)(q->nelem + 1) / 2);
    r->qabs = malloc((size_t)q->nblocks);
    rand_bytes(r->qabs, (size_t)q->nblocks);
    r->nabs = malloc(sizeof(float) * (size_t)q->nested_nblocks);
    for (int64_t i = 0; i < q->nested_nblocks; i++) r->nabs[i] = 0.01f;
    q->packed = r->packed;
    q->qabsmax = r->qabs;
    q->nested_absmax = r->nabs;
    q->absmax = NULL; // as a loaded DQ state: the scales come from the codes
}

static void rq4_free(rq4 *r) { free(r->packed); free(r->qabs); free(r->nabs); }

static size_t q4_bytes(const gn_quant4_state *q) {
    return (size_t)(q->nelem + 1) / 2 + (size_t)q->nblocks + 4 * (size_t)q->nested_nblocks;
}

// ----------------------------------------------------------------------------
// bandwidth and GEMV

typedef struct { void *dst; const void *src; size_t bytes; } copy_arg;
static void copy_fn(void *a, int i) {
    (void)i;
    copy_arg *c = a;
    gn_cuda_copy(c->dst, c->src, c->bytes);
}

static double bench_bandwidth(void) {
    size_t bytes = (size_t)1 << 30;
    if (gn_cuda_mem_free() < 3 * bytes) bytes >>= 2;
    void *a = gn_cuda_malloc(bytes, "bandwidth"), *b = gn_cuda_malloc(bytes, "bandwidth");
    if (!a || !b) { fprintf(stderr, "%s\n", gn_last_error()); return 0; }
    gn_cuda_memset0(a, bytes);
    copy_arg c = {b, a, bytes};
    double ms = gn_cuda_graph_time(copy_fn, &c, 1, 20);
    gn_cuda_free(a);
    gn_cuda_free(b);
    double gbs = 2.0 * (double)bytes / (ms * 1e-3) / 1e9;
    result("bandwidth_copy_gbs", gbs);
    return gbs;
}

typedef struct { gn_cuda_q4 *w; float *x, *out; } gemv_arg;
static void gemv_fn(void *a, int i) {
    gemv_arg *g = a;
    gn_cuda_q4_gemv(g->out, g->x, GN_DTYPE_F32, &g->w[i], 1, 0.0f);
}

static void bench_gemv(double bw) {
    const int64_t shapes[3][2] = {{4096, 4096}, {11008, 4096}, {4096, 11008}};
    for (int s = 0; s < 3; s++) {
        int64_t rows = shapes[s][0], cols = shapes[s][1];
        rq4 r;
        rq4_make(&r, rows, cols);
        size_t wb = q4_bytes(&r.q);
        int copies = (int)((256u << 20) / wb) + 1;
        if (copies < 2) copies = 2;
        gn_cuda_q4 *w = calloc((size_t)copies, sizeof *w);
        int ok = 1;
        for (int i = 0; i < copies && ok; i++) ok = gn_cuda_q4_upload(&r.q, &w[i]) == GN_OK;
        float *xh = malloc(sizeof(float) * (size_t)cols);
        for (int64_t i = 0; i < cols; i++) xh[i] = frand();
        float *x = gn_cuda_malloc(sizeof(float) * (size_t)cols, "x"), *out = gn_cuda_malloc(sizeof(float) * (size_t)rows, "out");
        if (ok && x && out) {
            gn_cuda_upload(x, xh, sizeof(float) * (size_t)cols);
            gemv_arg g = {w, x, out};
            int reps = 2000 / copies > 5 ? 2000 / copies : 5;
            double ms = gn_cuda_graph_time(gemv_fn, &g, copies, reps);
            double bytes = (double)wb + 4.0 * (double)(cols + rows);
            double gbs = bytes / (ms * 1e-3) / 1e9;
            char key[64];
            snprintf(key, sizeof key, "gemv_%lldx%lld_us", (long long)rows, (long long)cols);
            result(key, ms * 1e3);
            snprintf(key, sizeof key, "gemv_%lldx%lld_gbs", (long long)rows, (long long)cols);
            result(key, gbs);
            snprintf(key, sizeof key, "gemv_%lldx%lld_pct_bw", (long long)rows, (long long)cols);
            result(key, bw > 0 ? 100.0 * gbs / bw : 0);
        } else fprintf(stderr, "gemv %lldx%lld: %s\n", (long long)rows, (long long)cols, gn_last_error());
        for (int i = 0; i < copies; i++) if (w[i].packed) gn_cuda_q4_release(&w[i]);
        free(w);
        gn_cuda_free(x);
        gn_cuda_free(out);
        free(xh);
        rq4_free(&r);
    }
}

// ----------------------------------------------------------------------------
// a 7B-shaped model in memory

typedef struct {
    gn_model *m;
    rq4 shapes[3];        // (C, C) for q/k/v/o, (HD, C) for gate/up, (C, HD) for down
    uint16_t *embed, *head;
    float *ones, *inv_freq;
    size_t weight_bytes;  // read per decoded token: 4-bit layers, head, norms, one embedding row
} model7b;

static gn_model *model_make(model7b *mb, int L) {
    memset(mb, 0, sizeof *mb);
    const int C = 4096, HD = 11008, NH = 32, V = 32000, hs = C / NH;
    gn_model *m = gn_calloc(1, sizeof *m);
    gn_config *c = &m->cfg;
    c->dim = C; c->hidden_dim = HD; c->n_layers = L; c->n_heads = NH; c->n_kv_heads = NH; c->head_dim = hs;
    c->vocab_size = V; c->max_seq = 4096; c->norm_eps = 1e-5f; c->rope_theta = 10000.0f; c->rope_factor = 1.0f;
    c->bos_id = 1; c->eos_id = 2; c->pad_id = -1;
    m->path = gn_strdup("(random 7B-shaped NF4 model)");
    m->source = "random";
    m->wdtype = GN_DTYPE_BF16;
    m->n_rot = hs;
    rq4_make(&mb->shapes[0], C, C);
    rq4_make(&mb->shapes[1], HD, C);
    rq4_make(&mb->shapes[2], C, HD);
    mb->embed = malloc(2 * (size_t)V * C);
    mb->head = malloc(2 * (size_t)V * C);
    for (size_t i = 0; i < (size_t)V * C; i++) { mb->embed[i] = gn_f32_to_bf16(frand()); mb->head[i] = gn_f32_to_bf16(0.02f * frand()); }
    mb->ones = malloc(sizeof(float) * (size_t)C);
    for (int i = 0; i < C; i++) mb->ones[i] = 1.0f;
    mb->inv_freq = malloc(sizeof(float) * (size_t)(hs / 2));
    for (int i = 0; i < hs / 2; i++) mb->inv_freq[i] = 1.0f / powf(10000.0f, (float)(2 * i) / (float)hs);
    m->rope_inv_freq = mb->inv_freq;
    m->embed = (gn_mat){GN_DTYPE_BF16, V, C, mb->embed, NULL};
    m->lm_head = (gn_mat){GN_DTYPE_BF16, V, C, mb->head, NULL};
    m->final_norm = mb->ones;
    m->layers = gn_calloc((size_t)L, sizeof(gn_layer));
    for (int l = 0; l < L; l++) {
        gn_layer *ly = &m->layers[l];
        ly->attn_norm = ly->ffn_norm = mb->ones;
        gn_mat *ms[7] = {&ly->wq, &ly->wk, &ly->wv, &ly->wo, &ly->w_gate, &ly->w_up, &ly->w_down};
        int which[7] = {0, 0, 0, 0, 1, 1, 2};
        for (int k = 0; k < 7; k++) {
            const gn_quant4_state *q = &mb->shapes[which[k]].q;
            *ms[k] = (gn_mat){GN_DTYPE_NF4, q->rows, q->cols, NULL, q};
            mb->weight_bytes += q4_bytes(q);
        }
    }
    mb->weight_bytes += 2 * (size_t)V * C + 2 * (size_t)C + 4 * (size_t)C * (2 * (size_t)L + 1);
    m->weight_bytes = mb->weight_bytes;
    m->n_params = (int64_t)L * (4 * (int64_t)C * C + 3 * (int64_t)C * HD) + 2 * (int64_t)V * C;
    mb->m = m;
    return m;
}

static void model_free(model7b *mb) {
    if (mb->m) {
        gn_cuda_model_detach(mb->m);
        free(mb->m->layers);
        free(mb->m->path);
        free(mb->m);
    }
    for (int i = 0; i < 3; i++) rq4_free(&mb->shapes[i]);
    free(mb->embed); free(mb->head); free(mb->ones); free(mb->inv_freq);
}

static int32_t argmax(const float *x, int n) {
    int32_t b = 0;
    for (int i = 1; i < n; i++) if (x[i] > x[b]) b = i;
    return b;
}

static void bench_decode(model7b *mb, int n_decode, int n_prompt, double bw) {
    gn_model *m = mb->m;
    const int V = m->cfg.vocab_size;
    int ctx = n_prompt + 64 > 32 + n_decode + 8 ? n_prompt + 64 : 32 + n_decode + 8;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)(n_prompt > 32 ? n_prompt : 32));
    for (int i = 0; i < (n_prompt > 32 ? n_prompt : 32); i++) ids[i] = (int32_t)((i * 7919 + 13) % V);
    gn_session *s = gn_session_new(m, ctx);
    // decode after a 32-token prompt; the first step is not timed (llama2.c's convention)
    const float *lg = gn_session_forward(s, ids, 32, 0);
    if (!lg) { fprintf(stderr, "decode: %s\n", gn_last_error()); gn_session_free(s); free(ids); return; }
    int32_t id = argmax(lg, V);
    lg = gn_session_forward(s, &id, 1, 0);
    id = argmax(lg, V);
    double t0 = gn_time_s();
    for (int i = 0; i < n_decode && lg; i++) {
        lg = gn_session_forward(s, &id, 1, 0);
        if (lg) id = argmax(lg, V);
    }
    double dt = gn_time_s() - t0;
    double tps = n_decode / dt;
    result("decode_tok_s", tps);
    result("decode_ms_per_token", 1e3 * dt / n_decode);
    result("decode_weight_bytes", (double)mb->weight_bytes);
    result("decode_gbs", (double)mb->weight_bytes * tps / 1e9);
    result("decode_pct_bw", bw > 0 ? 100.0 * (double)mb->weight_bytes * tps / 1e9 / bw : 0);
    // prefill of n_prompt tokens in a fresh context (one warm-up first)
    gn_session_reset(s);
    gn_session_forward(s, ids, n_prompt, 0);
    gn_session_reset(s);
    t0 = gn_time_s();
    lg = gn_session_forward(s, ids, n_prompt, 0);
    dt = gn_time_s() - t0;
    if (lg) {
        result("prefill_tokens", n_prompt);
        result("prefill_tok_s", n_prompt / dt);
        double flops = 2.0 * (double)m->n_params * n_prompt;
        result("prefill_tflops", flops / dt / 1e12);
    }
    gn_session_free(s);
    free(ids);
}

static void bench_train(model7b *mb, int T) {
    gn_model *m = mb->m;
    gn_train_opts o;
    gn_train_opts_default(&o); // r 64, alpha 16, all seven modules
    gn_trainer *tr = NULL;
    if (gn_trainer_new(&tr, m, &o, NULL)) { fprintf(stderr, "train: %s\n", gn_last_error()); return; }
    size_t np = gn_trainer_num_params(tr);
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)T), *lab = malloc(sizeof(int32_t) * (size_t)T);
    for (int t = 0; t < T; t++) { ids[t] = (int32_t)((t * 7919 + 13) % m->cfg.vocab_size); lab[t] = t < T / 4 ? -100 : ids[t]; }
    double ls;
    int nt;
    gn_trainer_zero_grad(tr);
    gn_status st = gn_trainer_sequence(tr, ids, lab, T, 1.0f / T, 1, &ls, &nt); // warm-up: buffers, upload
    double t0 = gn_time_s();
    if (!st) st = gn_trainer_sequence(tr, ids, lab, T, 1.0f / T, 1, &ls, &nt);
    double dt = gn_time_s() - t0;
    if (st) fprintf(stderr, "train: %s\n", gn_last_error());
    else {
        result("train_tokens", T);
        result("train_lora_params", (double)np);
        result("train_seq_s", dt);
        result("train_tok_s", T / dt);
        result("train_loss", ls / (nt > 0 ? nt : 1));
    }
    t0 = gn_time_s();
    gn_trainer_step(tr, 2e-4f);
    result("train_host_adamw_s", gn_time_s() - t0);
    gn_trainer_free(tr);
    free(ids);
    free(lab);
    // the paged AdamW kernel on the same number of parameters (state in page-locked host memory)
    float *p = gn_cuda_malloc(4 * np, "adamw"), *g = gn_cuda_malloc(4 * np, "adamw");
    float *hm = gn_cuda_host_alloc(4 * np), *hv = gn_cuda_host_alloc(4 * np);
    if (p && g && hm && hv) {
        memset(hm, 0, 4 * np);
        memset(hv, 0, 4 * np);
        gn_cuda_memset0(p, 4 * np);
        gn_cuda_memset0(g, 4 * np);
        gn_cuda_adamw_paged(p, g, hm, hv, np, 2e-4f, 0.9f, 0.999f, 1e-8f, 0.0f, 1, 1.0f, 0, (size_t)1 << 24);
        t0 = gn_time_s();
        gn_status s2 = gn_cuda_adamw_paged(p, g, hm, hv, np, 2e-4f, 0.9f, 0.999f, 1e-8f, 0.0f, 2, 1.0f, 0, (size_t)1 << 24);
        gn_cuda_sync();
        if (!s2) result("adamw_paged_s", gn_time_s() - t0);
    }
    gn_cuda_free(p); gn_cuda_free(g); gn_cuda_host_free(hm); gn_cuda_host_free(hv);
}

// ----------------------------------------------------------------------------
// CPU vs GPU gradients of one training sequence on a small random model

// a random model folder (tests/tiny_model.h), weights scaled by 1/sqrt(C) (q/k twice that)
static int write_model(const char *dir, int C, int HD, int L, int NH, int NKV, int V) {
    float ws = 1.0f / sqrtf((float)C);
    return tm_write_model(dir, C, HD, L, NH, NKV, V, 2048, ws, 2 * ws, ws, frand);
}

static void bench_gradcheck(void) {
    char dir[] = "/tmp/gn_cuda_bench_XXXXXX";
    if (!mkdtemp(dir)) return;
    char md[600];
    snprintf(md, sizeof md, "%s/model", dir);
    const int C = 512, HD = 1376, L = 4, NH = 8, NKV = 4, V = 8000, T = 256;
    if (write_model(md, C, HD, L, NH, NKV, V)) { fprintf(stderr, "gradcheck: cannot write %s\n", md); return; }
    gn_load_opts lo = {.weight_dtype = GN_DTYPE_NF4, .compute_dtype = GN_DTYPE_BF16};
    gn_model *mc = NULL, *mg = NULL;
    if (gn_model_load(&mc, md, &lo)) { fprintf(stderr, "gradcheck: %s\n", gn_last_error()); return; }
    lo.device = GN_DEVICE_CUDA;
    if (gn_model_load(&mg, md, &lo)) { fprintf(stderr, "gradcheck: %s\n", gn_last_error()); gn_model_free(mc); return; }
    gn_train_opts o;
    gn_train_opts_default(&o);
    o.lora_r = 16;
    o.lora_dropout = 0.05f;
    gn_trainer *tc = NULL, *tg = NULL;
    if (gn_trainer_new(&tc, mc, &o, NULL) || gn_trainer_new(&tg, mg, &o, NULL)) {
        fprintf(stderr, "gradcheck: %s\n", gn_last_error());
    } else {
        size_t np = gn_trainer_num_params(tc);
        float *pc = gn_trainer_params(tc), *pg = gn_trainer_params(tg);
        for (size_t i = 0; i < np; i++) pc[i] = pg[i] = 0.05f * frand(); // B != 0: every gradient is live
        int32_t ids[256], lab[256];
        for (int t = 0; t < T; t++) { ids[t] = (int32_t)((t * 131 + 7) % V); lab[t] = t < 40 ? -100 : (int32_t)((t * 71 + 3) % V); }
        double lc, lg;
        int nc, ng;
        gn_trainer_zero_grad(tc);
        gn_trainer_zero_grad(tg);
        double t0 = gn_time_s();
        gn_status s1 = gn_trainer_sequence(tc, ids, lab, T, 1.0f / 216, 1, &lc, &nc);
        double tcpu = gn_time_s() - t0;
        t0 = gn_time_s();
        gn_status s2 = gn_trainer_sequence(tg, ids, lab, T, 1.0f / 216, 1, &lg, &ng);
        double tgpu = gn_time_s() - t0;
        if (s1 || s2) fprintf(stderr, "gradcheck: %s\n", gn_last_error());
        else {
            const float *gc = gn_trainer_grads(tc), *gg = gn_trainer_grads(tg);
            double dn = 0, cn = 0, amax = 0;
            for (size_t i = 0; i < np; i++) {
                double d = (double)gg[i] - gc[i];
                dn += d * d;
                cn += (double)gc[i] * gc[i];
                amax = fmax(amax, fabs(d));
            }
            result("gradcheck_params", (double)np);
            result("gradcheck_loss_cpu", lc / nc);
            result("gradcheck_loss_gpu", lg / ng);
            result("gradcheck_grad_rel_l2", sqrt(dn) / (sqrt(cn) + 1e-30));
            result("gradcheck_grad_max_abs_diff", amax);
            result("gradcheck_cpu_s", tcpu);
            result("gradcheck_gpu_s", tgpu);
        }
    }
    gn_trainer_free(tc);
    gn_trainer_free(tg);
    gn_model_free(mc);
    gn_model_free(mg);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "gradcheck: could not remove %s\n", dir);
}

int main(int argc, char **argv) {
    int layers = 32, n_decode = 128, n_prompt = 512, skip_train = 0, skip_grad = 0, train_T = 512;
    const char *json = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--layers") && i + 1 < argc) layers = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--decode") && i + 1 < argc) n_decode = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--prompt") && i + 1 < argc) n_prompt = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--train-tokens") && i + 1 < argc) train_T = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--skip-train")) skip_train = 1;
        else if (!strcmp(argv[i], "--skip-gradcheck")) skip_grad = 1;
        else if (!strcmp(argv[i], "--json") && i + 1 < argc) json = argv[++i];
        else {
            fprintf(stderr, "usage: cuda_bench [--layers 32] [--decode 128] [--prompt 512] [--train-tokens 512]\n"
                            "                  [--skip-train] [--skip-gradcheck] [--json FILE]\n");
            return 2;
        }
    }
    if (layers < 1 || n_decode < 1 || n_prompt < 1 || train_T < 2) { fprintf(stderr, "cuda_bench: bad numbers\n"); return 2; }
    if (gn_cuda_device_count() == 0) { printf("SKIP: no CUDA device (%s)\n", gn_last_error()); return 0; }
    if (gn_cuda_init(0)) { fprintf(stderr, "cuda_bench: %s\n", gn_last_error()); return 1; }
    if (json && !(g_json = fopen(json, "w"))) { fprintf(stderr, "cuda_bench: cannot write %s\n", json); return 1; }
    if (g_json) fprintf(g_json, "{");
    result_str("device", gn_cuda_device_name());
    double t0 = gn_time_s();
    double bw = bench_bandwidth();
    bench_gemv(bw);
    model7b mb;
    gn_model *m = model_make(&mb, layers);
    result("model_layers", layers);
    double tu = gn_time_s();
    if (gn_cuda_model_attach(m)) fprintf(stderr, "cuda_bench: %s\n", gn_last_error());
    else {
        result("model_upload_s", gn_time_s() - tu);
        bench_decode(&mb, n_decode, n_prompt, bw);
        if (!skip_train) bench_train(&mb, train_T);
    }
    model_free(&mb);
    if (!skip_grad) bench_gradcheck();
    result("bench_seconds", gn_time_s() - t0);
    if (g_json) { fprintf(g_json, "\n}\n"); fclose(g_json); }
    return 0;
}

#endif // GN_HAVE_CUDA
