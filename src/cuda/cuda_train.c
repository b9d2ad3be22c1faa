/*
 * cuda_train.c — one QLoRA training sequence on the GPU: train/train.c's
 * forward, loss and backward (per-layer gradient checkpointing, LoRA dropout
 * with the same mask stream) made of cuda.h's kernels.
 *
 * Division of labour with train.c: the trainer (parameters, gradients, AdamW
 * state, RNG, schedule) stays on the host; gn_trainer_sequence hands a model
 * with m->cuda to gn_cuda_train_sequence, which
 *   1. uploads the LoRA parameters when they changed (new step or trainer),
 *   2. runs the sequence on the device (frozen 4-bit base: dequantized tiles on
 *      the tensor cores in bf16, LoRA products and everything else in f32),
 *   3. adds the sequence's gradients to the host gradient buffer.
 * gn_trainer_step computes the norm and clip factor on the host, then hands the
 * AdamW update to gn_cuda_train_adamw (the paged kernel: m/v stay in host
 * memory, the updated parameters come back to the host buffer and stay on the
 * device for the next sequence).
 * Differences from the CPU numbers: the CPU's bf16 run rounds the outputs of the
 * 4-bit products and the inputs of the LoRA and head products to bf16 too (qlora's
 * autocast), the GPU keeps those in f32; and summation order. Tests and
 * bench/cuda_check.sh compare within bf16 tolerance.
 */
#include "cuda_priv.h"

#include <math.h>
#include <stdlib.h>

#define IGNORE_INDEX (-100) // train/data.h's GN_IGNORE_INDEX
#define HEAD_ROWS 256       // logits rows per pass over the head

struct cu_train {
    int Tcap, rmax;
    size_t np;
    float *params, *grads;            // (np) device
    float *grads_host;                // (np) page-locked staging for the download
    const float *params_src;          // host parameter buffer last uploaded, and its version
    int64_t version;
    float *xs;                        // (L+1, T, C) layer inputs
    float *xn1, *q, *k, *v, *P, *att, *x2, *xn2, *g, *u, *h;
    float *xd[GN_N_MODS], *ul[GN_N_MODS];
    float *dx, *dx2, *dxn, *dq, *dk, *dv, *dO, *dh, *dg, *du, *tmp, *tmp2, *tmpr, *att_scr;
    float *logits, *loss;             // (HEAD_ROWS, V), (T)
    int32_t *ids, *y;                 // (T) ids, next-token labels (-1: no loss)
    void **allocs;
    int nallocs;
};

void cu_train_free(struct cu_train *t) {
    if (!t) return;
    for (int i = 0; i < t->nallocs; i++) gn_cuda_free(t->allocs[i]);
    free(t->allocs);
    gn_cuda_host_free(t->grads_host);
    free(t);
}

static void *dev(struct cu_train *t, size_t floats, gn_status *st) {
    if (*st) return NULL;
    void *p = gn_cuda_malloc(floats ? floats * 4 : 4, "training activations (lower --source-max-len/--target-max-len)");
    if (!p) { *st = GN_ERR_OOM; return NULL; }
    t->allocs = gn_realloc(t->allocs, sizeof(void *) * (size_t)(t->nallocs + 1));
    t->allocs[t->nallocs++] = p;
    return p;
}

// Buffers for T tokens and np parameters (kept while they fit).
static struct cu_train *ensure(cu_model *cm, const gn_model *m, const gn_adapter *ad, size_t np, int T, float dropout,
                               gn_status *st) {
    struct cu_train *t = cm->train;
    int rmax = 0;
    for (int i = 0; i < ad->n_layers * GN_N_MODS; i++) if (ad->mods[i].r > rmax) rmax = ad->mods[i].r;
    int need_xd = dropout > 0;
    if (t && T <= t->Tcap && np == t->np && rmax <= t->rmax && (!need_xd || t->xd[GN_MOD_Q] || t->xd[GN_MOD_O]))
        return t;
    cu_train_free(t);
    cm->train = NULL;
    t = gn_calloc(1, sizeof *t);
    const gn_config *c = &m->cfg;
    size_t C = (size_t)c->dim, HD = (size_t)c->hidden_dim, qd = (size_t)c->n_heads * c->head_dim,
           kvd = (size_t)c->n_kv_heads * c->head_dim, Ts = (size_t)T, L = (size_t)c->n_layers, V = (size_t)c->vocab_size;
    size_t big = C > HD ? C : HD;
    if (qd > big) big = qd;
    size_t r = (size_t)(rmax ? rmax : 1);
    t->Tcap = T;
    t->rmax = rmax;
    t->np = np;
    t->version = -1;
    t->params = dev(t, np, st);
    t->grads = dev(t, np, st);
    t->xs = dev(t, (L + 1) * Ts * C, st);
    t->xn1 = dev(t, Ts * C, st); t->q = dev(t, Ts * qd, st); t->k = dev(t, Ts * kvd, st); t->v = dev(t, Ts * kvd, st);
    t->P = dev(t, (size_t)c->n_heads * Ts * Ts, st);
    t->att = dev(t, Ts * qd, st); t->x2 = dev(t, Ts * C, st); t->xn2 = dev(t, Ts * C, st);
    t->g = dev(t, Ts * HD, st); t->u = dev(t, Ts * HD, st); t->h = dev(t, Ts * HD, st);
    t->dx = dev(t, Ts * C, st); t->dx2 = dev(t, Ts * C, st); t->dxn = dev(t, Ts * C, st);
    t->dq = dev(t, Ts * qd, st); t->dk = dev(t, Ts * kvd, st); t->dv = dev(t, Ts * kvd, st); t->dO = dev(t, Ts * qd, st);
    t->dh = dev(t, Ts * HD, st); t->dg = dev(t, Ts * HD, st); t->du = dev(t, Ts * HD, st);
    t->tmp = dev(t, Ts * big, st); t->tmp2 = dev(t, Ts * big, st); t->tmpr = dev(t, Ts * r, st);
    t->att_scr = dev(t, gn_cuda_train_attn_scratch(T), st);
    t->logits = dev(t, (size_t)HEAD_ROWS * V, st);
    t->loss = dev(t, Ts, st);
    t->ids = dev(t, Ts, st);
    t->y = dev(t, Ts, st);
    for (int k = 0; k < GN_N_MODS; k++) {
        size_t in = k == GN_MOD_O ? qd : k == GN_MOD_DOWN ? HD : C;
        if (need_xd) t->xd[k] = dev(t, Ts * in, st);
        t->ul[k] = dev(t, Ts * r, st);
    }
    if (!*st && !(t->grads_host = gn_cuda_host_alloc(np * sizeof(float))))
        *st = gn_err(GN_ERR_OOM, "CUDA: cannot allocate %zu bytes of page-locked host memory for the gradients", np * 4);
    if (*st) { cu_train_free(t); return NULL; }
    cm->train = t;
    return t;
}

// ----------------------------------------------------------------------------
// one sequence, as train.c

typedef struct {
    const gn_model *m;
    const cu_model *cm;
    struct cu_train *t;
    const gn_adapter *ad;
    const float *params;       // host base of the parameter buffer (offsets)
    float dropout;
    uint64_t key;
} ctx;

static const gn_lora_mod *lmod(const ctx *x, int l, int k) { return &x->ad->mods[(size_t)l * GN_N_MODS + (size_t)k]; }
static uint64_t drop_base(const ctx *x, int l, int k) { return x->key ^ ((uint64_t)l << 40) ^ ((uint64_t)k << 56); }
static float *dev_param(const ctx *x, const float *host) { return x->t->params + (host - x->params); }
static float *dev_grad(const ctx *x, const float *host) { return x->t->grads + (host - x->params); }

// y (T, OC) = x W^T + s (d(x) A^T) B^T; y NULL: only the LoRA hidden (and mask)
static void lin_fwd(const ctx *c, int l, int k, const float *x, float *y, int T, int train) {
    const cu_lin *W = &c->cm->layers[l].lin[k];
    if (y) cu_linear(W, y, x, T, 0.0f);
    const gn_lora_mod *lm = lmod(c, l, k);
    if (!lm->r) return;
    const float *xin = x;
    if (c->dropout > 0 && train) {
        gn_cuda_dropout(c->t->xd[k], x, (int64_t)T * lm->in, drop_base(c, l, k), c->dropout, 0);
        xin = c->t->xd[k];
    }
    gn_cuda_lora_fwd(y, c->t->ul[k], xin, dev_param(c, lm->A), dev_param(c, lm->B), T, (int)lm->in, (int)lm->out,
                     lm->r, lm->scale);
}

// dx (T, IC) = dy W + s ((dy B) A) masked; accumulates dA, dB
static void lin_bwd(const ctx *c, int l, int k, const float *x, const float *dy, float *dx, int T) {
    const cu_lin *W = &c->cm->layers[l].lin[k];
    cu_linear_nn(W, dx, dy, T, 0.0f);
    const gn_lora_mod *lm = lmod(c, l, k);
    if (!lm->r) return;
    const int IC = (int)lm->in, OC = (int)lm->out, r = lm->r;
    const float *xin = c->dropout > 0 ? c->t->xd[k] : x;
    const float *A = dev_param(c, lm->A), *B = dev_param(c, lm->B);
    float *gA = dev_grad(c, lm->A), *gB = dev_grad(c, lm->B);
    if (c->dropout > 0) {
        gn_cuda_lora_bwd(gA, gB, NULL, c->t->tmpr, dy, xin, c->t->ul[k], A, B, T, IC, OC, r, lm->scale);
        gn_cuda_sgemm(0, 0, T, IC, r, lm->scale, c->t->tmpr, r, A, IC, 0.0f, c->t->tmp2, IC);
        gn_cuda_dropout(dx, c->t->tmp2, (int64_t)T * IC, drop_base(c, l, k), c->dropout, 1);
    } else {
        gn_cuda_lora_bwd(gA, gB, dx, c->t->tmpr, dy, xin, c->t->ul[k], A, B, T, IC, OC, r, lm->scale);
    }
}

static void rope_seq(const ctx *c, float *vec, int n_heads, int stride, int T, float sign) {
    const gn_config *cf = &c->m->cfg;
    gn_cuda_rope(vec, T, n_heads, cf->head_dim, stride, c->m->n_rot, cf->rope_interleaved, c->cm->inv_freq, 0, sign);
}

static void layer_fwd(const ctx *c, int l, const float *xin, float *xout, int T, int train) {
    const gn_config *cf = &c->m->cfg;
    const cu_layer *L = &c->cm->layers[l];
    struct cu_train *t = c->t;
    int C = cf->dim, HD = cf->hidden_dim, NH = cf->n_heads, NKV = cf->n_kv_heads, hs = cf->head_dim;
    int qd = NH * hs, kvd = NKV * hs;
    gn_cuda_rmsnorm(t->xn1, xin, L->attn_norm, T, C, cf->norm_eps);
    lin_fwd(c, l, GN_MOD_Q, t->xn1, t->q, T, train);
    lin_fwd(c, l, GN_MOD_K, t->xn1, t->k, T, train);
    lin_fwd(c, l, GN_MOD_V, t->xn1, t->v, T, train);
    rope_seq(c, t->q, NH, qd, T, 1.0f);
    rope_seq(c, t->k, NKV, kvd, T, 1.0f);
    gn_cuda_train_attn_fwd(t->att, t->P, t->q, t->k, t->v, T, NH, NKV, hs);
    lin_fwd(c, l, GN_MOD_O, t->att, t->x2, T, train);
    gn_cuda_add(t->x2, xin, (int64_t)T * C);
    gn_cuda_rmsnorm(t->xn2, t->x2, L->ffn_norm, T, C, cf->norm_eps);
    lin_fwd(c, l, GN_MOD_GATE, t->xn2, t->g, T, train);
    lin_fwd(c, l, GN_MOD_UP, t->xn2, t->u, T, train);
    gn_cuda_silu_mul(t->h, t->g, t->u, (int64_t)T * HD);
    lin_fwd(c, l, GN_MOD_DOWN, t->h, xout, T, train);
    if (xout) gn_cuda_add(xout, t->x2, (int64_t)T * C);
}

static void layer_bwd(const ctx *c, int l, const float *xin, int T) {
    const gn_config *cf = &c->m->cfg;
    const cu_layer *L = &c->cm->layers[l];
    struct cu_train *t = c->t;
    int C = cf->dim, HD = cf->hidden_dim, NH = cf->n_heads, NKV = cf->n_kv_heads, hs = cf->head_dim;
    int qd = NH * hs, kvd = NKV * hs;
    lin_bwd(c, l, GN_MOD_DOWN, t->h, t->dx, t->dh, T);
    gn_cuda_swiglu_bwd(t->dg, t->du, t->dh, t->g, t->u, (int64_t)T * HD);
    lin_bwd(c, l, GN_MOD_GATE, t->xn2, t->dg, t->dxn, T);
    lin_bwd(c, l, GN_MOD_UP, t->xn2, t->du, t->tmp, T);
    gn_cuda_add(t->dxn, t->tmp, (int64_t)T * C);
    gn_cuda_copy(t->dx2, t->dx, sizeof(float) * (size_t)T * C); // residual
    gn_cuda_rmsnorm_bwd(t->dx2, t->dxn, t->x2, L->ffn_norm, T, C, cf->norm_eps, 1);
    lin_bwd(c, l, GN_MOD_O, t->att, t->dx2, t->dO, T);
    gn_cuda_train_attn_bwd(t->dq, t->dk, t->dv, t->P, t->q, t->k, t->v, t->dO, T, NH, NKV, hs, t->att_scr);
    rope_seq(c, t->dq, NH, qd, T, -1.0f);
    rope_seq(c, t->dk, NKV, kvd, T, -1.0f);
    lin_bwd(c, l, GN_MOD_Q, t->xn1, t->dq, t->dxn, T);
    lin_bwd(c, l, GN_MOD_K, t->xn1, t->dk, t->tmp, T);
    gn_cuda_add(t->dxn, t->tmp, (int64_t)T * C);
    lin_bwd(c, l, GN_MOD_V, t->xn1, t->dv, t->tmp, T);
    gn_cuda_add(t->dxn, t->tmp, (int64_t)T * C);
    gn_cuda_copy(t->dx, t->dx2, sizeof(float) * (size_t)T * C);
    gn_cuda_rmsnorm_bwd(t->dx, t->dxn, xin, L->attn_norm, T, C, cf->norm_eps, 1);
}

gn_status gn_cuda_train_sequence(const gn_model *m, const gn_adapter *ad, const float *params, float *grads, size_t np,
                                 int64_t params_version, float dropout, uint64_t drop_key, const int32_t *ids,
                                 const int32_t *labels, int T, float weight, int train, double *loss_sum,
                                 int *n_tokens) {
    const gn_config *cf = &m->cfg;
    const int C = cf->dim, V = cf->vocab_size, Ln = cf->n_layers;
    cu_model *cm = m->cuda;
    *loss_sum = 0.0;
    *n_tokens = 0;
    if (T <= 0) return GN_OK;
    gn_status st = GN_OK;
    struct cu_train *t = ensure(cm, m, ad, np, T, dropout, &st);
    if (!t) return st;
    if (t->params_src != params || t->version != params_version) {
        gn_cuda_upload(t->params, params, sizeof(float) * np);
        t->params_src = params;
        t->version = params_version;
    }
    ctx c = {m, cm, t, ad, params, dropout, drop_key};
    // labels of the next token per position: -1 where no loss (HF: position t predicts labels[t+1])
    int32_t *y = gn_malloc(sizeof(int32_t) * (size_t)T);
    int nvalid = 0;
    for (int i = 0; i < T; i++) {
        int32_t v = i + 1 < T ? labels[i + 1] : IGNORE_INDEX;
        nvalid += i + 1 < T && v != IGNORE_INDEX;
        y[i] = v >= 0 && v < V ? v : -1;
    }
    *n_tokens = nvalid;
    gn_cuda_upload(t->y, y, sizeof(int32_t) * (size_t)T);
    gn_cuda_upload(t->ids, ids, sizeof(int32_t) * (size_t)T);
    gn_cuda_embed(t->xs, cm->embed.data, cm->embed.dtype, C, t->ids, T);
    for (int l = 0; l < Ln; l++)
        layer_fwd(&c, l, t->xs + (size_t)l * T * C, t->xs + (size_t)(l + 1) * T * C, T, train);
    float *xl = t->xs + (size_t)Ln * T * C;
    float *xn = t->dx2; // the final norm's output (dx2 is free until the backward)
    gn_cuda_rmsnorm(xn, xl, cm->final_norm, T, C, cf->norm_eps);
    if (train) gn_cuda_memset0(t->grads, sizeof(float) * np);
    // head and loss, HEAD_ROWS positions at a time; rows without a label give 0 and no gradient
    for (int r0 = 0; r0 < T; r0 += HEAD_ROWS) {
        int n = T - r0 < HEAD_ROWS ? T - r0 : HEAD_ROWS;
        int any = 0;
        for (int i = 0; i < n && !any; i++) any = y[r0 + i] >= 0;
        if (!any) {
            if (train) gn_cuda_memset0(t->dxn + (size_t)r0 * C, sizeof(float) * (size_t)n * C);
            gn_cuda_memset0(t->loss + r0, sizeof(float) * (size_t)n);
            continue;
        }
        cu_linear(&cm->head, t->logits, xn + (size_t)r0 * C, n, 0.0f);
        gn_cuda_cross_entropy(t->loss + r0, train ? t->logits : NULL, t->logits, t->y + r0, n, V, weight);
        if (train) cu_linear_nn(&cm->head, t->dxn + (size_t)r0 * C, t->logits, n, 0.0f);
    }
    float *loss = gn_malloc(sizeof(float) * (size_t)T);
    gn_cuda_download(loss, t->loss, sizeof(float) * (size_t)T);
    double total = 0.0;
    for (int i = 0; i < T; i++) if (y[i] >= 0) total += loss[i];
    *loss_sum = total;
    free(loss);
    free(y);
    if (!train) return GN_OK;
    gn_cuda_rmsnorm_bwd(t->dx, t->dxn, xl, cm->final_norm, T, C, cf->norm_eps, 0);
    for (int l = Ln - 1; l >= 0; l--) {
        const float *xin = t->xs + (size_t)l * T * C;
        if (l < Ln - 1) layer_fwd(&c, l, xin, NULL, T, 1); // recompute; the last layer's forward just ran
        layer_bwd(&c, l, xin, T);
    }
    gn_cuda_download(t->grads_host, t->grads, sizeof(float) * np);
    const float *gh = t->grads_host;
    #pragma omp parallel for schedule(static) if (np > 65536)
    for (size_t i = 0; i < np; i++) grads[i] += gh[i];
    return GN_OK;
}

gn_status gn_cuda_train_adamw(const gn_model *m, float *params, const float *grads, float *adam_m, float *adam_v, size_t np,
                              float lr, float b1, float b2, float eps, float wd, int64_t step, float clip, int bf16_params) {
    cu_model *cm = m->cuda;
    struct cu_train *t = cm ? cm->train : NULL;
    if (!t || t->np != np)
        return gn_err(GN_ERR_UNSUPPORTED, "AdamW on the GPU: no training buffers for %zu parameters yet (no sequence ran)", np);
    // this step's sequences ran with version step - 1; anything else (another trainer's
    // buffer, a step without sequences) means the device copy may be stale
    if (t->params_src != params || t->version != step - 1) {
        gn_cuda_upload(t->params, params, sizeof(float) * np);
        t->params_src = params;
        t->version = step - 1;
    }
    gn_cuda_upload(t->grads, grads, sizeof(float) * np); // the host sum (all sequences, all ranks)
    gn_status st = gn_cuda_adamw_paged(t->params, t->grads, adam_m, adam_v, np, lr, b1, b2, eps, wd, step, clip,
                                       bf16_params, 0);
    if (st) return st; // failed before touching anything: the caller's host loop takes over
    gn_cuda_download(params, t->params, sizeof(float) * np);
    t->version = step; // the next sequence passes the new step count and finds them in place
    return GN_OK;
}
