/*
 * train.c — QLoRA training engine: LoRA adapters on a frozen base, forward and
 * backward for one sequence with per-layer gradient checkpointing, global-norm
 * clipping and AdamW with file-backed ("paged") state.
 *
 * Per layer (as in model/llama.c; s = LoRA scale, d() = LoRA-input dropout):
 *   xn1 = rmsnorm(x)            q,k,v = lin(xn1)      rope(q,k)
 *   o   = softmax(q.k/sqrt(hs)) v                     x2 = x + lin_o(o)
 *   xn2 = rmsnorm(x2)           g,u = lin(xn2)        h = silu(g)*u
 *   out = x2 + lin_down(h)
 *   lin(x) = x W^T + s (d(x) A^T) B^T          (W frozen: F32/BF16/NF4)
 * Backward of lin: dx = dy W + s (dy B) A (masked like d), dB += s dy^T (d(x) A^T),
 * dA += s (dy B)^T d(x). The base weights get no gradient.
 *
 * Checkpointing: the forward keeps only each layer's input; the backward
 * recomputes one layer's intermediates before differentiating it, so memory is
 * O(L*T*C + one layer) and the cost is about 3 forward passes.
 *
 * The loss is HF's: logits of position t predict label t+1, mean cross-entropy
 * over labels != -100. The caller passes a weight per sequence so a step's
 * gradient is the mean of micro-batch means (qlora + HF Trainer, spec §6.5).
 */
#include "../model/llama.h"
#include "data.h"       // GN_IGNORE_INDEX

#include <cblas.h>     // small LoRA products
#include <errno.h>     // errno
#include <fcntl.h>     // open
#include <math.h>      // sqrtf, expf, logf
#include <stdio.h>     // snprintf
#include <stdlib.h>    // free
#include <sys/mman.h>  // mmap: paged optimizer state
#include <unistd.h>    // ftruncate
#ifdef _OPENMP
#include <omp.h>
#endif

struct gn_trainer {
    const gn_model *m;
    gn_train_opts o;
    gn_adapter *ad;        // trainable adapter; its A/B point into params
    size_t np;             // number of trainable floats
    float *params, *grads; // (np) each
    float *adam_m, *adam_v;// (np) each, file-backed when state_path is set
    size_t state_bytes;
    int state_fd;
    int64_t step;          // optimizer steps taken
    uint64_t drop_key;     // dropout stream of the current sequence
    uint64_t rng;          // trainer RNG (dropout keys)
    int Tcap;              // activations sized for this many tokens
    // activations
    float *xs;             // (L+1, T, C) layer inputs (checkpoints)
    float *xn1, *q, *k, *v, *P, *att, *x2, *xn2, *g, *u, *h; // one layer, recomputed
    float *xd[GN_N_MODS];  // dropout-masked LoRA inputs (or NULL when dropout == 0)
    float *ul[GN_N_MODS];  // (T, r) LoRA hidden per module
    // gradients of activations
    float *dx, *dx2, *dxn, *dq, *dk, *dv, *dO, *dh, *dg, *du, *tmp, *tmp2, *tmpr;
    float *logits;         // (64, V) chunk
};

// ----------------------------------------------------------------------------
// helpers

static uint64_t mix64(uint64_t z) {
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static float unit_from(uint64_t z) { return (float)(z >> 40) / 16777216.0f; } // [0,1)

static int targeted(const gn_trainer *tr, int k) { return (tr->o.target_mask >> k) & 1u; }

static const gn_mat *layer_mat(const gn_layer *L, int k) {
    switch (k) {
    case GN_MOD_Q: return &L->wq;
    case GN_MOD_K: return &L->wk;
    case GN_MOD_V: return &L->wv;
    case GN_MOD_O: return &L->wo;
    case GN_MOD_GATE: return &L->w_gate;
    case GN_MOD_UP: return &L->w_up;
    default: return &L->w_down;
    }
}

static gn_lora_mod *mod(gn_trainer *tr, int l, int k) { return &tr->ad->mods[(size_t)l * GN_N_MODS + (size_t)k]; }

// the gradient buffer of a module's A (isB = 0) or B (isB = 1)
static float *grad_of(gn_trainer *tr, const float *param) { return tr->grads + (param - tr->params); }

// ----------------------------------------------------------------------------
// trainer lifetime

static void *state_map(gn_trainer *tr, size_t bytes, gn_status *st) {
    *st = GN_OK;
    tr->state_fd = -1;
    if (!tr->o.state_path) return gn_calloc(bytes, 1);
    int fd = open(tr->o.state_path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) { *st = gn_err(GN_ERR_IO, "%s: cannot create optimizer state: %s", tr->o.state_path, strerror(errno)); return NULL; }
    if (ftruncate(fd, (off_t)bytes) != 0) {
        close(fd);
        *st = gn_err(GN_ERR_IO, "%s: cannot size optimizer state to %zu bytes: %s", tr->o.state_path, bytes, strerror(errno));
        return NULL;
    }
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        close(fd);
        *st = gn_err(GN_ERR_IO, "%s: cannot map optimizer state: %s", tr->o.state_path, strerror(errno));
        return NULL;
    }
    tr->state_fd = fd;
    return p;
}

void gn_train_opts_default(gn_train_opts *o) {
    memset(o, 0, sizeof *o);
    o->lora_r = 64;
    o->lora_alpha = 16.0f;
    o->lora_dropout = 0.0f;
    o->target_mask = (1u << GN_N_MODS) - 1;
    o->lr = 2e-4f;
    o->beta1 = 0.9f;
    o->beta2 = 0.999f;
    o->eps = 1e-8f;
    o->weight_decay = 0.0f;
    o->max_grad_norm = 0.3f;
    o->seed = 42;
}

gn_status gn_trainer_new(gn_trainer **out, const gn_model *m, const gn_train_opts *o, const gn_adapter *init) {
    *out = NULL;
    const gn_config *c = &m->cfg;
    if (o->lora_r <= 0 && !init) return gn_err(GN_ERR_ARG, "finetune: --lora-r must be positive");
    if (!(o->lora_dropout >= 0.0f && o->lora_dropout < 1.0f)) return gn_err(GN_ERR_ARG, "finetune: --lora-dropout must be in [0, 1)");
    gn_trainer *tr = gn_calloc(1, sizeof *tr);
    tr->m = m;
    tr->o = *o;
    tr->rng = mix64(o->seed ^ 0x5eedull);
    gn_adapter *a = gn_calloc(1, sizeof *a);
    tr->ad = a;
    a->path = gn_strdup("(training)");
    a->name = gn_strdup("train");
    a->n_layers = c->n_layers;
    a->r = init ? init->r : o->lora_r;
    a->alpha = init ? init->alpha : o->lora_alpha;
    a->use_rslora = init ? init->use_rslora : 0;
    a->interleaved = c->rope_interleaved;
    a->n_heads = c->n_heads;
    a->n_kv_heads = c->n_kv_heads;
    a->head_dim = c->head_dim;
    a->borrowed = 1;
    a->mods = gn_calloc((size_t)c->n_layers * GN_N_MODS, sizeof(gn_lora_mod));
    if (init) { // the targets are the init adapter's modules
        tr->o.target_mask = 0;
        for (int i = 0; i < init->n_layers * GN_N_MODS; i++)
            if (init->mods[i].r) tr->o.target_mask |= 1u << (i % GN_N_MODS);
    }
    // sizes, then one allocation carved into A/B (llm.c's malloc_and_point)
    size_t np = 0;
    for (int l = 0; l < c->n_layers; l++)
        for (int k = 0; k < GN_N_MODS; k++) {
            if (!targeted(tr, k)) continue;
            gn_lora_mod *lm = mod(tr, l, k);
            const gn_lora_mod *im = init ? &init->mods[(size_t)l * GN_N_MODS + (size_t)k] : NULL;
            lm->r = im ? im->r : o->lora_r;
            const gn_mat *w = layer_mat(&m->layers[l], k);
            lm->in = w->cols;
            lm->out = w->rows;
            if (!lm->r) continue;
            np += (size_t)(lm->r * (lm->in + lm->out));
        }
    if (np == 0) { gn_trainer_free(tr); return gn_err(GN_ERR_ARG, "finetune: no LoRA parameters (check --target-modules)"); }
    tr->np = np;
    tr->params = gn_calloc(np, sizeof(float));
    tr->grads = gn_calloc(np, sizeof(float));
    gn_status st;
    tr->state_bytes = 2 * np * sizeof(float);
    float *state = state_map(tr, tr->state_bytes, &st);
    if (!state) { gn_trainer_free(tr); return st; }
    tr->adam_m = state;
    tr->adam_v = state + np;
    size_t off = 0;
    uint64_t init_rng = mix64(o->seed);
    for (int l = 0; l < c->n_layers; l++)
        for (int k = 0; k < GN_N_MODS; k++) {
            gn_lora_mod *lm = mod(tr, l, k);
            if (!lm->r) continue;
            lm->A = tr->params + off;
            off += (size_t)(lm->r * lm->in);
            lm->B = tr->params + off;
            off += (size_t)(lm->out * lm->r);
            float alpha = a->alpha;
            const gn_lora_mod *im = init ? &init->mods[(size_t)l * GN_N_MODS + (size_t)k] : NULL;
            if (im && im->r) {
                memcpy(lm->A, im->A, sizeof(float) * (size_t)(lm->r * lm->in));
                memcpy(lm->B, im->B, sizeof(float) * (size_t)(lm->out * lm->r));
                lm->scale = im->scale;
                continue;
            }
            // PEFT's init: A ~ kaiming_uniform(a=sqrt(5)) = U(-1/sqrt(in), 1/sqrt(in)), B = 0
            float bound = 1.0f / sqrtf((float)lm->in);
            for (int64_t i = 0; i < lm->r * lm->in; i++) lm->A[i] = (2.0f * unit_from(init_rng = mix64(init_rng)) - 1.0f) * bound;
            lm->scale = a->use_rslora ? alpha / sqrtf((float)lm->r) : alpha / (float)lm->r;
        }
    GN_ASSERT(off == np);
    if (tr->o.bf16_params) for (size_t i = 0; i < np; i++) tr->params[i] = gn_bf16_to_f32(gn_f32_to_bf16(tr->params[i]));
    *out = tr;
    return GN_OK;
}

static void free_acts(gn_trainer *tr) {
    float **bufs[] = {&tr->xs, &tr->xn1, &tr->q, &tr->k, &tr->v, &tr->P, &tr->att, &tr->x2, &tr->xn2, &tr->g, &tr->u, &tr->h,
                      &tr->dx, &tr->dx2, &tr->dxn, &tr->dq, &tr->dk, &tr->dv, &tr->dO, &tr->dh, &tr->dg, &tr->du,
                      &tr->tmp, &tr->tmp2, &tr->tmpr, &tr->logits};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) { free(*bufs[i]); *bufs[i] = NULL; }
    for (int k = 0; k < GN_N_MODS; k++) { free(tr->xd[k]); free(tr->ul[k]); tr->xd[k] = tr->ul[k] = NULL; }
    tr->Tcap = 0;
}

void gn_trainer_free(gn_trainer *tr) {
    if (!tr) return;
    free_acts(tr);
    if (tr->state_fd >= 0 && tr->adam_m) { munmap(tr->adam_m, tr->state_bytes); close(tr->state_fd); }
    else free(tr->adam_m);
    free(tr->params);
    free(tr->grads);
    gn_adapter_free(tr->ad);
    free(tr);
}

const gn_adapter *gn_trainer_adapter(const gn_trainer *tr) { return tr->ad; }
int64_t gn_trainer_step_count(const gn_trainer *tr) { return tr->step; }
size_t gn_trainer_num_params(const gn_trainer *tr) { return tr->np; }

static void ensure_acts(gn_trainer *tr, int T) {
    if (T <= tr->Tcap) return;
    free_acts(tr);
    const gn_config *c = &tr->m->cfg;
    size_t C = (size_t)c->dim, HD = (size_t)c->hidden_dim, qd = (size_t)c->n_heads * c->head_dim,
           kvd = (size_t)c->n_kv_heads * c->head_dim, Ts = (size_t)T, L = (size_t)c->n_layers;
    size_t big = C > HD ? C : HD;
    if (qd > big) big = qd;
    int rmax = 0;
    for (int i = 0; i < tr->ad->n_layers * GN_N_MODS; i++) if (tr->ad->mods[i].r > rmax) rmax = tr->ad->mods[i].r;
    tr->xs = gn_calloc((L + 1) * Ts * C, sizeof(float));
    tr->xn1 = gn_calloc(Ts * C, 4); tr->q = gn_calloc(Ts * qd, 4); tr->k = gn_calloc(Ts * kvd, 4); tr->v = gn_calloc(Ts * kvd, 4);
    tr->P = gn_calloc((size_t)c->n_heads * Ts * Ts, 4);
    tr->att = gn_calloc(Ts * qd, 4); tr->x2 = gn_calloc(Ts * C, 4); tr->xn2 = gn_calloc(Ts * C, 4);
    tr->g = gn_calloc(Ts * HD, 4); tr->u = gn_calloc(Ts * HD, 4); tr->h = gn_calloc(Ts * HD, 4);
    tr->dx = gn_calloc(Ts * C, 4); tr->dx2 = gn_calloc(Ts * C, 4); tr->dxn = gn_calloc(Ts * C, 4);
    tr->dq = gn_calloc(Ts * qd, 4); tr->dk = gn_calloc(Ts * kvd, 4); tr->dv = gn_calloc(Ts * kvd, 4);
    tr->dO = gn_calloc(Ts * qd, 4); tr->dh = gn_calloc(Ts * HD, 4); tr->dg = gn_calloc(Ts * HD, 4); tr->du = gn_calloc(Ts * HD, 4);
    tr->tmp = gn_calloc(Ts * big, 4);
    tr->tmp2 = gn_calloc(Ts * big, 4);
    tr->tmpr = gn_calloc(Ts * (size_t)(rmax ? rmax : 1), 4);
    tr->logits = gn_calloc(64 * (size_t)c->vocab_size, 4);
    for (int k = 0; k < GN_N_MODS; k++) {
        if (!targeted(tr, k)) continue;
        size_t in = k == GN_MOD_O ? qd : k == GN_MOD_DOWN ? HD : C;
        if (tr->o.lora_dropout > 0) tr->xd[k] = gn_calloc(Ts * in, 4);
        tr->ul[k] = gn_calloc(Ts * (size_t)(rmax ? rmax : 1), 4);
    }
    tr->Tcap = T;
}

// ----------------------------------------------------------------------------
// linear layer with LoRA: forward and backward

// Dropout mask element: keep (returns 1/(1-p)) or drop (0), a pure function of
// (sequence key, layer, module, index) so the recompute sees the same mask.
static float keep_scale(const gn_trainer *tr, int l, int k, size_t i) {
    float p = tr->o.lora_dropout;
    uint64_t z = mix64(tr->drop_key ^ ((uint64_t)l << 40) ^ ((uint64_t)k << 56) ^ (uint64_t)i);
    return unit_from(z) < p ? 0.0f : 1.0f / (1.0f - p);
}

// y (T, OC) = x W^T + s (d(x) A^T) B^T
static void lin_fwd(gn_trainer *tr, int l, int k, const float *x, float *y, int T, int train) {
    const gn_mat *W = layer_mat(&tr->m->layers[l], k);
    gn_linear(y, x, W, T);
    gn_lora_mod *lm = mod(tr, l, k);
    if (!lm->r) return;
    int64_t IC = lm->in, OC = lm->out, r = lm->r;
    const float *xin = x;
    if (tr->o.lora_dropout > 0 && train) {
        float *xd = tr->xd[k];
        for (size_t i = 0; i < (size_t)T * IC; i++) xd[i] = x[i] * keep_scale(tr, l, k, i);
        xin = xd;
    }
    float *ul = tr->ul[k];
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, (int)r, (int)IC, 1.0f, xin, (int)IC, lm->A, (int)IC, 0.0f, ul, (int)r);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, (int)OC, (int)r, lm->scale, ul, (int)r, lm->B, (int)r, 1.0f, y, (int)OC);
}

// dx (T, IC) = dy W + s ((dy B) A) masked; accumulates dA, dB. x: the layer input.
static void lin_bwd(gn_trainer *tr, int l, int k, const float *x, const float *dy, float *dx, int T) {
    const gn_mat *W = layer_mat(&tr->m->layers[l], k);
    gn_linear_nn(dx, dy, W, T);
    gn_lora_mod *lm = mod(tr, l, k);
    if (!lm->r) return;
    int64_t IC = lm->in, OC = lm->out, r = lm->r;
    const float *xin = (tr->o.lora_dropout > 0) ? tr->xd[k] : x;
    float *gA = grad_of(tr, lm->A), *gB = grad_of(tr, lm->B);
    // dB (OC, r) += s dy^T ul
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)OC, (int)r, T, lm->scale, dy, (int)OC, tr->ul[k], (int)r, 1.0f, gB, (int)r);
    // z (T, r) = dy B
    float *z = tr->tmpr;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, (int)r, (int)OC, 1.0f, dy, (int)OC, lm->B, (int)r, 0.0f, z, (int)r);
    // dA (r, IC) += s z^T d(x)
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)r, (int)IC, T, lm->scale, z, (int)r, xin, (int)IC, 1.0f, gA, (int)IC);
    // dx += s (z A) * mask
    if (tr->o.lora_dropout > 0) {
        float *t2 = tr->tmp2;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, (int)IC, (int)r, lm->scale, z, (int)r, lm->A, (int)IC, 0.0f, t2, (int)IC);
        for (size_t i = 0; i < (size_t)T * IC; i++) dx[i] += t2[i] * keep_scale(tr, l, k, i);
    } else {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, (int)IC, (int)r, lm->scale, z, (int)r, lm->A, (int)IC, 1.0f, dx, (int)IC);
    }
}

// ----------------------------------------------------------------------------
// RMSNorm backward: y = w * x * rstd  =>  dx = rstd * (w*dy) - x * rstd^3 / C * sum(w*dy*x)
static void rmsnorm_bwd(float *dx, const float *dy, const float *x, const float *w, int T, int C, float eps, int accumulate) {
    for (int t = 0; t < T; t++) {
        const float *xr = x + (size_t)t * C, *dr = dy + (size_t)t * C;
        float *o = dx + (size_t)t * C;
        double ss = 0.0, dot = 0.0;
        for (int i = 0; i < C; i++) { ss += (double)xr[i] * xr[i]; dot += (double)w[i] * dr[i] * xr[i]; }
        float rstd = 1.0f / sqrtf((float)(ss / C) + eps);
        float coef = (float)(dot / C) * rstd * rstd * rstd;
        for (int i = 0; i < C; i++) {
            float g = rstd * w[i] * dr[i] - xr[i] * coef;
            o[i] = accumulate ? o[i] + g : g;
        }
    }
}

// rotate (or un-rotate with sign -1) n_heads vectors of one position
static void rope_rows(const gn_model *m, float *vec, int n_heads, int pos, float sign) {
    const gn_config *c = &m->cfg;
    int hs = c->head_dim, half = m->n_rot / 2;
    for (int i = 0; i < half; i++) {
        float ang = (float)pos * m->rope_inv_freq[i];
        float cs = cosf(ang), sn = sign * sinf(ang);
        for (int h = 0; h < n_heads; h++) {
            float *v = vec + (size_t)h * hs;
            int i0 = c->rope_interleaved ? 2 * i : i, i1 = c->rope_interleaved ? 2 * i + 1 : i + half;
            float a = v[i0], b = v[i1];
            v[i0] = a * cs - b * sn;
            v[i1] = a * sn + b * cs;
        }
    }
}

// ----------------------------------------------------------------------------
// one layer

// Computes the layer's output into xout from xin, keeping intermediates in the
// trainer's one-layer buffers.
static void layer_fwd(gn_trainer *tr, int l, const float *xin, float *xout, int T, int train) {
    const gn_model *m = tr->m;
    const gn_config *c = &m->cfg;
    const gn_layer *L = &m->layers[l];
    int C = c->dim, HD = c->hidden_dim, NH = c->n_heads, NKV = c->n_kv_heads, hs = c->head_dim;
    int qd = NH * hs, kvd = NKV * hs, grp = NH / NKV;
    float scale = 1.0f / sqrtf((float)hs);
    gn_rmsnorm(tr->xn1, xin, L->attn_norm, T, C, c->norm_eps);
    lin_fwd(tr, l, GN_MOD_Q, tr->xn1, tr->q, T, train);
    lin_fwd(tr, l, GN_MOD_K, tr->xn1, tr->k, T, train);
    lin_fwd(tr, l, GN_MOD_V, tr->xn1, tr->v, T, train);
    for (int t = 0; t < T; t++) {
        rope_rows(m, tr->q + (size_t)t * qd, NH, t, 1.0f);
        rope_rows(m, tr->k + (size_t)t * kvd, NKV, t, 1.0f);
    }
    #pragma omp parallel for schedule(dynamic, 1)
    for (int th = 0; th < NH * T; th++) {
        int h = th / T, t = th % T, kvh = h / grp;
        float *p = tr->P + ((size_t)h * T + t) * T;
        const float *qv = tr->q + (size_t)t * qd + (size_t)h * hs;
        for (int j = 0; j <= t; j++) p[j] = gn_dot_f32(qv, tr->k + (size_t)j * kvd + (size_t)kvh * hs, hs) * scale;
        gn_softmax(p, t + 1);
        float *o = tr->att + (size_t)t * qd + (size_t)h * hs;
        memset(o, 0, sizeof(float) * (size_t)hs);
        for (int j = 0; j <= t; j++) {
            const float *vv = tr->v + (size_t)j * kvd + (size_t)kvh * hs;
            for (int i = 0; i < hs; i++) o[i] += p[j] * vv[i];
        }
    }
    lin_fwd(tr, l, GN_MOD_O, tr->att, tr->x2, T, train);
    for (size_t i = 0; i < (size_t)T * C; i++) tr->x2[i] += xin[i];
    gn_rmsnorm(tr->xn2, tr->x2, L->ffn_norm, T, C, c->norm_eps);
    lin_fwd(tr, l, GN_MOD_GATE, tr->xn2, tr->g, T, train);
    lin_fwd(tr, l, GN_MOD_UP, tr->xn2, tr->u, T, train);
    for (size_t i = 0; i < (size_t)T * HD; i++) {
        float gv = tr->g[i];
        tr->h[i] = gv / (1.0f + expf(-gv)) * tr->u[i];
    }
    lin_fwd(tr, l, GN_MOD_DOWN, tr->h, xout, T, train);
    for (size_t i = 0; i < (size_t)T * C; i++) xout[i] += tr->x2[i];
}

// Given dout = dL/d(layer output) in tr->dx, leaves dL/d(layer input) in tr->dx.
// Needs layer_fwd(l) to have just run on xin.
static void layer_bwd(gn_trainer *tr, int l, const float *xin, int T) {
    const gn_model *m = tr->m;
    const gn_config *c = &m->cfg;
    const gn_layer *L = &m->layers[l];
    int C = c->dim, HD = c->hidden_dim, NH = c->n_heads, NKV = c->n_kv_heads, hs = c->head_dim;
    int qd = NH * hs, kvd = NKV * hs, grp = NH / NKV;
    float scale = 1.0f / sqrtf((float)hs);
    // MLP: out = x2 + down(h)
    lin_bwd(tr, l, GN_MOD_DOWN, tr->h, tr->dx, tr->dh, T);
    for (size_t i = 0; i < (size_t)T * HD; i++) {
        float gv = tr->g[i], sg = 1.0f / (1.0f + expf(-gv)), silu = gv * sg;
        tr->du[i] = tr->dh[i] * silu;
        tr->dg[i] = tr->dh[i] * tr->u[i] * sg * (1.0f + gv * (1.0f - sg));
    }
    lin_bwd(tr, l, GN_MOD_GATE, tr->xn2, tr->dg, tr->dxn, T);
    lin_bwd(tr, l, GN_MOD_UP, tr->xn2, tr->du, tr->tmp, T);
    for (size_t i = 0; i < (size_t)T * C; i++) tr->dxn[i] += tr->tmp[i];
    memcpy(tr->dx2, tr->dx, sizeof(float) * (size_t)T * C); // residual
    rmsnorm_bwd(tr->dx2, tr->dxn, tr->x2, L->ffn_norm, T, C, c->norm_eps, 1);
    // attention: x2 = x + o_proj(o)
    lin_bwd(tr, l, GN_MOD_O, tr->att, tr->dx2, tr->dO, T);
    memset(tr->dq, 0, sizeof(float) * (size_t)T * qd);
    memset(tr->dk, 0, sizeof(float) * (size_t)T * kvd);
    memset(tr->dv, 0, sizeof(float) * (size_t)T * kvd);
    // one kv head per task so dk/dv have a single writer
    #pragma omp parallel for schedule(dynamic, 1)
    for (int kvh = 0; kvh < NKV; kvh++) {
        float *dp = gn_malloc(sizeof(float) * (size_t)T);
        for (int h = kvh * grp; h < (kvh + 1) * grp; h++)
            for (int t = 0; t < T; t++) {
                const float *p = tr->P + ((size_t)h * T + t) * T;
                const float *dov = tr->dO + (size_t)t * qd + (size_t)h * hs;
                double sum = 0.0;
                for (int j = 0; j <= t; j++) {
                    const float *vv = tr->v + (size_t)j * kvd + (size_t)kvh * hs;
                    dp[j] = gn_dot_f32(dov, vv, hs);
                    sum += (double)p[j] * dp[j];
                    float *dvv = tr->dv + (size_t)j * kvd + (size_t)kvh * hs;
                    for (int i = 0; i < hs; i++) dvv[i] += p[j] * dov[i];
                }
                const float *qv = tr->q + (size_t)t * qd + (size_t)h * hs;
                float *dqv = tr->dq + (size_t)t * qd + (size_t)h * hs;
                for (int j = 0; j <= t; j++) {
                    float ds = p[j] * (dp[j] - (float)sum) * scale;
                    const float *kv = tr->k + (size_t)j * kvd + (size_t)kvh * hs;
                    float *dkv = tr->dk + (size_t)j * kvd + (size_t)kvh * hs;
                    for (int i = 0; i < hs; i++) { dqv[i] += ds * kv[i]; dkv[i] += ds * qv[i]; }
                }
            }
        free(dp);
    }
    for (int t = 0; t < T; t++) { // gradients w.r.t. the pre-rotation q, k
        rope_rows(m, tr->dq + (size_t)t * qd, NH, t, -1.0f);
        rope_rows(m, tr->dk + (size_t)t * kvd, NKV, t, -1.0f);
    }
    lin_bwd(tr, l, GN_MOD_Q, tr->xn1, tr->dq, tr->dxn, T);
    lin_bwd(tr, l, GN_MOD_K, tr->xn1, tr->dk, tr->tmp, T);
    for (size_t i = 0; i < (size_t)T * C; i++) tr->dxn[i] += tr->tmp[i];
    lin_bwd(tr, l, GN_MOD_V, tr->xn1, tr->dv, tr->tmp, T);
    for (size_t i = 0; i < (size_t)T * C; i++) tr->dxn[i] += tr->tmp[i];
    memcpy(tr->dx, tr->dx2, sizeof(float) * (size_t)T * C);
    rmsnorm_bwd(tr->dx, tr->dxn, xin, L->attn_norm, T, C, c->norm_eps, 1);
}

// ----------------------------------------------------------------------------
// one sequence

gn_status gn_trainer_sequence(gn_trainer *tr, const int32_t *ids, const int32_t *labels, int T, float weight, int train,
                              double *loss_sum, int *n_tokens) {
    const gn_model *m = tr->m;
    const gn_config *c = &m->cfg;
    int C = c->dim, V = c->vocab_size, Ln = c->n_layers;
    *loss_sum = 0.0;
    *n_tokens = 0;
    if (T <= 0) return GN_OK;
    for (int t = 0; t < T; t++)
        if (ids[t] < 0 || ids[t] >= V) return gn_err(GN_ERR_ARG, "train: token id %d at %d outside the vocabulary", ids[t], t);
    ensure_acts(tr, T);
    if (train) tr->drop_key = tr->rng = mix64(tr->rng); // evaluation leaves the training stream alone
    float *x0 = tr->xs;
    for (int t = 0; t < T; t++) {
        const gn_mat *e = &m->embed;
        if (e->dtype == GN_DTYPE_F32) memcpy(x0 + (size_t)t * C, (const float *)e->data + (size_t)ids[t] * C, sizeof(float) * (size_t)C);
        else gn_mat_rows_f32(e, ids[t], 1, x0 + (size_t)t * C);
    }
    for (int l = 0; l < Ln; l++)
        layer_fwd(tr, l, tr->xs + (size_t)l * T * C, tr->xs + (size_t)(l + 1) * T * C, T, train);
    // head + loss, in chunks of 64 positions
    float *xl = tr->xs + (size_t)Ln * T * C;
    float *xn = tr->xn1; // final-norm output
    gn_rmsnorm(xn, xl, m->final_norm, T, C, c->norm_eps);
    int nvalid = 0;
    for (int t = 0; t + 1 < T; t++) nvalid += labels[t + 1] != GN_IGNORE_INDEX;
    *n_tokens = nvalid;
    if (train) memset(tr->dxn, 0, sizeof(float) * (size_t)T * C);
    double total = 0.0;
    for (int t0 = 0; t0 < T - 1; t0 += 64) {
        int n = T - 1 - t0 < 64 ? T - 1 - t0 : 64;
        gn_linear(tr->logits, xn + (size_t)t0 * C, &m->lm_head, n);
        for (int i = 0; i < n; i++) {
            int32_t y = labels[t0 + i + 1];
            float *lg = tr->logits + (size_t)i * V;
            if (y == GN_IGNORE_INDEX || y < 0 || y >= V) { memset(lg, 0, sizeof(float) * (size_t)V); continue; }
            float mx = lg[0];
            for (int j = 1; j < V; j++) if (lg[j] > mx) mx = lg[j];
            double se = 0.0;
            for (int j = 0; j < V; j++) se += exp((double)(lg[j] - mx));
            double lse = log(se) + mx;
            total += lse - lg[y];
            if (train) { // d(loss)/d(logits) = softmax - onehot, times the sequence weight
                for (int j = 0; j < V; j++) lg[j] = (float)(exp((double)lg[j] - lse)) * weight;
                lg[y] -= weight;
            }
        }
        if (train) {
            gn_linear_nn(tr->tmp, tr->logits, &m->lm_head, n);
            memcpy(tr->dxn + (size_t)t0 * C, tr->tmp, sizeof(float) * (size_t)n * C);
        }
    }
    *loss_sum = total;
    if (!train) return GN_OK;
    rmsnorm_bwd(tr->dx, tr->dxn, xl, m->final_norm, T, C, c->norm_eps, 0);
    for (int l = Ln - 1; l >= 0; l--) {
        const float *xin = tr->xs + (size_t)l * T * C;
        layer_fwd(tr, l, xin, tr->tmp, T, 1); // recompute (the output itself is not needed)
        layer_bwd(tr, l, xin, T);
    }
    return GN_OK;
}

// ----------------------------------------------------------------------------
// optimizer

void gn_trainer_zero_grad(gn_trainer *tr) { memset(tr->grads, 0, sizeof(float) * tr->np); }

const float *gn_trainer_grads(const gn_trainer *tr) { return tr->grads; }
float *gn_trainer_params(gn_trainer *tr) { return tr->params; }

float gn_trainer_step(gn_trainer *tr, float lr) {
    double ss = 0.0;
    for (size_t i = 0; i < tr->np; i++) ss += (double)tr->grads[i] * tr->grads[i];
    float norm = (float)sqrt(ss);
    float clip = 1.0f;
    if (tr->o.max_grad_norm > 0) { // HF: coef = max_norm / (norm + 1e-6), clamped at 1
        float coef = tr->o.max_grad_norm / (norm + 1e-6f);
        if (coef < 1.0f) clip = coef;
    }
    tr->step++;
    float b1 = tr->o.beta1, b2 = tr->o.beta2, eps = tr->o.eps, wd = tr->o.weight_decay;
    float c1 = 1.0f - powf(b1, (float)tr->step), c2 = sqrtf(1.0f - powf(b2, (float)tr->step));
    float step_size = lr / c1;
    for (size_t i = 0; i < tr->np; i++) {
        float g = tr->grads[i] * clip;
        float mm = tr->adam_m[i] = b1 * tr->adam_m[i] + (1.0f - b1) * g;
        float vv = tr->adam_v[i] = b2 * tr->adam_v[i] + (1.0f - b2) * g * g;
        float p = tr->params[i];
        if (wd > 0) p *= 1.0f - lr * wd; // torch AdamW decays before the update
        p -= step_size * mm / (sqrtf(vv) / c2 + eps);
        tr->params[i] = tr->o.bf16_params ? gn_bf16_to_f32(gn_f32_to_bf16(p)) : p;
    }
    return norm;
}

// Optimizer state for checkpoints: step, m, v.
size_t gn_trainer_state_size(const gn_trainer *tr) { return tr->state_bytes; }
const void *gn_trainer_state(const gn_trainer *tr) { return tr->adam_m; }

gn_status gn_trainer_restore(gn_trainer *tr, const float *params, const void *state, size_t state_bytes, int64_t step) {
    if (state_bytes != tr->state_bytes)
        return gn_err(GN_ERR_FORMAT, "optimizer state has %zu bytes, expected %zu (different model or LoRA settings?)", state_bytes,
                      tr->state_bytes);
    memcpy(tr->params, params, sizeof(float) * tr->np);
    memcpy(tr->adam_m, state, state_bytes);
    tr->step = step;
    return GN_OK;
}

uint64_t gn_trainer_rng(const gn_trainer *tr) { return tr->rng; }
void gn_trainer_set_rng(gn_trainer *tr, uint64_t r) { tr->rng = r; }
