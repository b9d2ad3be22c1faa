/*
 * train.c — QLoRA training engine: LoRA adapters on a frozen base, forward and
 * backward for one sequence with per-layer gradient checkpointing, global-norm
 * clipping and AdamW with file-backed ("paged") state.
 *
 * Per layer (as in model/forward.c; s = LoRA scale, d() = LoRA-input dropout):
 *   xn1 = rmsnorm(x)            q,k,v = lin(xn1)      rope(q,k)
 *   o   = softmax(q.k/sqrt(hs)) v                     x2 = x + lin_o(o)
 *   xn2 = rmsnorm(x2)           g,u = lin(xn2)        h = silu(g)*u
 *   out = x2 + lin_down(h)
 *   lin(x) = x W^T + s (d(x) A^T) B^T          (W frozen: F32/BF16/NF4)
 * Backward of lin: dx = dy W + s (dy B) A (masked like d), dB += s dy^T (d(x) A^T),
 * dA += s (dy B)^T d(x). The base weights get no gradient. The LoRA branch is
 * gn_lora_fwd/gn_lora_bwd (lora/apply.c, the one inference uses); the dropout
 * mask is applied here, to its input and to its input gradient.
 *
 * Checkpointing: the forward keeps only each layer's input; the backward
 * recomputes one layer's intermediates before differentiating it (all but the
 * last layer, whose intermediates the forward leaves in the buffers), so memory
 * is O(L*T*C + one layer) and the cost is about 3 forward passes.
 *
 * The loss is HF's: logits of position t predict label t+1, mean cross-entropy
 * over labels != -100. The caller passes a weight per sequence so a step's
 * gradient is the mean of micro-batch means (qlora + HF Trainer, docs/FACTS.md §6.5).
 */
#include "../model/llama.h"
#include "data.h"       // GN_IGNORE_INDEX
#include "../cuda/cuda_model.h" // --device cuda (stubs in a CPU build)

#include <errno.h>     // errno
#include <fcntl.h>     // open
#include <math.h>      // sqrtf, expf, logf
#include <stdio.h>     // snprintf
#include <stdlib.h>    // free
#include <sys/mman.h>  // mmap: paged optimizer state
#include <unistd.h>    // ftruncate

// The head's logits are computed for this many positions at a time: sgemm
// wants many rows per pass over the (V, C) head, memory wants few (SmolLM2,
// V = 49152: 48 MiB of logits; 128 rows made the head 15% slower, 512 2% faster).
#ifndef HEAD_CHUNK
#define HEAD_CHUNK 256
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
    int adamw_warned;      // the GPU AdamW failed once (logged) and the host loop took over
    uint64_t drop_key;     // dropout stream of the current sequence
    uint64_t rng;          // trainer RNG (dropout keys)
    int Tcap;              // activations sized for this many tokens
    // activations
    float *xs;             // (L+1, T, C) layer inputs (checkpoints)
    float *xn1, *q, *k, *v, *P, *att, *x2, *xn2, *g, *u, *h; // one layer, recomputed
    int keep;              // the forward keeps what the backward would recompute (opts.checkpointing)
    float *kq, *kk, *kv, *kx2, *kg, *ku; // (L, T, dim) each when keep: q/k/v before RoPE, x2, gate, up
    int keep16;            // keep only the q/k/v, gate and up base products' outputs, as the bf16 values they
                           // are, of the first keep16 layers (0: none)
    uint16_t *k16;         // (L, T, qd + 2 kvd + 2 HD) when keep16: per layer q, k, v, gate, up (T rows each),
                           // the base products' outputs before the LoRA terms
    unsigned char *k16_ok; // (L) the layer's kept outputs were all exact bf16 values (else it recomputes them)
    float *xd[GN_N_MODS];  // dropout-masked LoRA inputs (or NULL when dropout == 0)
    float *ul[GN_N_MODS];  // (T, r) LoRA hidden per module
    // gradients of activations
    float *dx, *dx2, *dxn, *dq, *dk, *dv, *dO, *dg, *du, *tmp, *tmp2, *tmpr; // tmp2: dropout only
    float *logits;         // (HEAD_CHUNK, V)
    uint16_t *head_b16;    // a ggml-block head widened to bf16 once, for the bf16 GEMM (bf16 runs on AVX512_BF16)
    float *att_scr;        // attention backward scratch for att_nthr threads
    int att_nthr;
    float *rope_cs;        // (Tcap, 2, n_rot/2): cos, then sin, of each position's angles
    int *head_rows;        // (Tcap) positions whose next token is a label
};

// ----------------------------------------------------------------------------
// helpers

// splitmix64's output from state z, as a pure function of z (the advanced state is
// dropped): the trainer's streams step through it, and a dropout mask element hashes
// its (key, layer, module, index) with it.
static uint64_t mix64(uint64_t z) { return gn_splitmix64(&z); }

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

// The LoRA products' gn_gemm flags. With bf16 LoRA weights (qlora's --bf16 casts the LoRA
// modules to bf16 and runs them under autocast) they are bf16 products: inputs rounded to
// bf16, float32 sums, on vdpbf16ps where the CPU has it; float32 sgemm otherwise.
static unsigned lora_gemm(const gn_trainer *tr) { return tr->o.bf16_params ? GN_GEMM_BF16 : 0; }

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
    if (o->bf16_params && gn_blocks_bytes(m->lm_head.dtype) && gn_bf16_gemm_available()) {
        // the products autocast runs in bf16 take the head in bf16, as a bf16-widened table gave it
        tr->head_b16 = gn_mat_to_bf16(&m->lm_head);
    }
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
                      &tr->kq, &tr->kk, &tr->kv, &tr->kx2, &tr->kg, &tr->ku,
                      &tr->dx, &tr->dx2, &tr->dxn, &tr->dq, &tr->dk, &tr->dv, &tr->dO, &tr->dg, &tr->du,
                      &tr->tmp, &tr->tmp2, &tr->tmpr, &tr->logits, &tr->att_scr, &tr->rope_cs};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) { free(*bufs[i]); *bufs[i] = NULL; }
    for (int k = 0; k < GN_N_MODS; k++) { free(tr->xd[k]); free(tr->ul[k]); tr->xd[k] = tr->ul[k] = NULL; }
    free(tr->head_rows);
    free(tr->k16);
    free(tr->k16_ok);
    tr->head_rows = NULL;
    tr->k16 = NULL;
    tr->k16_ok = NULL;
    tr->keep16 = 0;
    tr->Tcap = 0;
}

void gn_trainer_free(gn_trainer *tr) {
    if (!tr) return;
    free_acts(tr);
    if (tr->state_fd >= 0 && tr->adam_m) { munmap(tr->adam_m, tr->state_bytes); close(tr->state_fd); }
    else free(tr->adam_m);
    free(tr->params);
    free(tr->grads);
    free(tr->head_b16);
    gn_adapter_free(tr->ad);
    free(tr);
}

const gn_adapter *gn_trainer_adapter(const gn_trainer *tr) { return tr->ad; }
int64_t gn_trainer_step_count(const gn_trainer *tr) { return tr->step; }
size_t gn_trainer_num_params(const gn_trainer *tr) { return tr->np; }

static void ensure_acts(gn_trainer *tr, int T) {
    if (T <= tr->Tcap && gn_get_threads() <= tr->att_nthr) return;
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
    tr->dO = gn_calloc(Ts * qd, 4); tr->dg = gn_calloc(Ts * HD, 4); tr->du = gn_calloc(Ts * HD, 4);
    tr->tmp = gn_calloc(Ts * big, 4);
    if (tr->o.lora_dropout > 0) tr->tmp2 = gn_calloc(Ts * big, 4);
    tr->tmpr = gn_calloc(Ts * (size_t)(rmax ? rmax : 1), 4);
    tr->logits = gn_calloc(HEAD_CHUNK * (size_t)c->vocab_size, 4);
    tr->att_nthr = gn_get_threads();
    tr->att_scr = gn_calloc(gn_op_attention_scratch(T, tr->att_nthr), 4);
    tr->head_rows = gn_calloc(Ts, sizeof(int));
    // what the backward's recompute would make again, kept from the forward (exactly the same
    // values: the recompute is deterministic) when allowed and small enough. auto's budget is
    // 512 MiB: SmolLM2's 30 layers x 513 positions (283 MB) are kept whole. Where that is too
    // much, auto keeps the outputs of the q/k/v, gate and up base products when they fit: with
    // a bf16 compute dtype a 4-bit product's outputs are bf16 values, so 2 bytes hold each one
    // exactly, and they are all the recompute multiplies but o_proj (a 1.1B's 22 layers x 513:
    // 323 MB instead of 715, the recompute's products 88% shorter); of a 7B's 32 layers (35 MB
    // each) the first 15 are kept and the others recomputed, as qlora.py always does.
    // checkpointing 3 asks for that keep of every layer whatever its size.
    const size_t budget = (size_t)1 << 29, layer16 = 2 * Ts * (qd + 2 * kvd + 2 * HD);
    size_t keep_bytes = sizeof(float) * L * Ts * (qd + 2 * kvd + C + 2 * HD);
    tr->keep = tr->o.checkpointing == 2 || (tr->o.checkpointing == 0 && keep_bytes <= budget);
    int all16 = 1; // every q/k/v, gate and up product rounds its outputs to bf16
    for (int l = 0; l < c->n_layers; l++)
        for (int k = GN_MOD_Q; k <= GN_MOD_UP; k++) {
            const gn_quant4_state *q4 = layer_mat(&tr->m->layers[l], k)->q4;
            all16 &= k == GN_MOD_O || (q4 != NULL && q4->wdtype == GN_DTYPE_BF16);
        }
    const size_t fit = budget / layer16;
    tr->keep16 = tr->keep || !all16         ? 0
                 : tr->o.checkpointing == 3 ? (int)L
                 : tr->o.checkpointing == 0 ? (int)(fit < L ? fit : L)
                                            : 0;
    if (tr->keep16) {
        tr->k16 = gn_malloc(layer16 * (size_t)tr->keep16);
        tr->k16_ok = gn_calloc(L, 1);
    }
    if (tr->keep) {
        tr->kq = gn_malloc(sizeof(float) * L * Ts * qd);
        tr->kk = gn_malloc(sizeof(float) * L * Ts * kvd);
        tr->kv = gn_malloc(sizeof(float) * L * Ts * kvd);
        tr->kx2 = gn_malloc(sizeof(float) * L * Ts * C);
        tr->kg = gn_malloc(sizeof(float) * L * Ts * HD);
        tr->ku = gn_malloc(sizeof(float) * L * Ts * HD);
    }
    int half = tr->m->n_rot / 2;
    tr->rope_cs = gn_calloc(Ts * (size_t)(half > 0 ? 2 * half : 1), 4);
    for (int t = 0; t < T; t++) {
        float *cs = tr->rope_cs + (size_t)t * 2 * half;
        gn_op_rope_angles(cs, cs + half, tr->m->rope_inv_freq, half, t);
    }
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

// The kept bf16 outputs of a base product (keep16): n values of y copied to kept as their top 16
// bits; returns 0 when one of them is not a bf16 value (its low bits not zero: then the layer
// recomputes instead of reading them back)
static int bf16_store(uint16_t *kept, const float *y, size_t n) {
    unsigned bad = 0;
    #pragma omp parallel for schedule(static) reduction(| : bad)
    for (size_t i = 0; i < n; i++) {
        uint32_t b;
        memcpy(&b, y + i, 4);
        kept[i] = (uint16_t)(b >> 16);
        bad |= b & 0xffffu;
    }
    return bad == 0;
}

static void bf16_load(float *y, const uint16_t *kept, size_t n) {
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) y[i] = gn_bf16_to_f32(kept[i]);
}

// y (T, OC) = x W^T + s (d(x) A^T) B^T. With y NULL only the LoRA hidden
// d(x) A^T (and the dropout mask) is made: all the backward needs of a module
// whose output it does not need. kept (keep16: q, k, v, gate, up): the base product's
// outputs are kept there in the forward (store; *ok cleared unless all were exact)
// and read back instead of multiplying again in the recompute (!store).
static void lin_fwd_kept(gn_trainer *tr, int l, int k, const float *x, float *y, int T, int train, uint16_t *kept,
                         int store, unsigned char *ok) {
    const gn_mat *W = layer_mat(&tr->m->layers[l], k);
    const size_t n = (size_t)T * (size_t)W->rows;
    if (y && kept && !store) bf16_load(y, kept, n);
    else if (y) {
        gn_linear(y, x, W, T);
        if (kept && !bf16_store(kept, y, n)) *ok = 0;
    }
    gn_lora_mod *lm = mod(tr, l, k);
    if (!lm->r) return;
    const float *xin = x;
    if (tr->o.lora_dropout > 0 && train) {
        float *xd = tr->xd[k];
        #pragma omp parallel for schedule(static)
        for (size_t i = 0; i < (size_t)T * lm->in; i++) xd[i] = x[i] * keep_scale(tr, l, k, i);
        xin = xd;
    }
    gn_lora_fwd(lm, xin, tr->ul[k], y, T, lora_gemm(tr));
}

static void lin_fwd(gn_trainer *tr, int l, int k, const float *x, float *y, int T, int train) {
    lin_fwd_kept(tr, l, k, x, y, T, train, NULL, 0, NULL);
}

// dx (T, IC) = dy W + s ((dy B) A) masked; accumulates dA, dB. x: the layer input.
static void lin_bwd(gn_trainer *tr, int l, int k, const float *x, const float *dy, float *dx, int T) {
    const gn_mat *W = layer_mat(&tr->m->layers[l], k);
    gn_linear_nn(dx, dy, W, T);
    gn_lora_mod *lm = mod(tr, l, k);
    if (!lm->r) return;
    const float *xin = tr->o.lora_dropout > 0 ? tr->xd[k] : x;
    float *gA = grad_of(tr, lm->A), *gB = grad_of(tr, lm->B);
    if (tr->o.lora_dropout > 0) { // dx += (s z A) * mask, z = dy B
        float *t2 = tr->tmp2;
        gn_lora_bwd(lm, xin, tr->ul[k], dy, gA, gB, tr->tmpr, t2, 0.0f, T, lora_gemm(tr));
        #pragma omp parallel for schedule(static)
        for (size_t i = 0; i < (size_t)T * lm->in; i++) dx[i] += t2[i] * keep_scale(tr, l, k, i);
    } else {
        gn_lora_bwd(lm, xin, tr->ul[k], dy, gA, gB, tr->tmpr, dx, 1.0f, T, lora_gemm(tr));
    }
}

// Rotates (or un-rotates, sign -1) the n_heads head vectors of each of T
// positions; row t of vec starts at vec + t*stride. Angles from tr->rope_cs.
static void rope_seq(const gn_trainer *tr, float *vec, int n_heads, int stride, int T, float sign) {
    const gn_config *c = &tr->m->cfg;
    int half = tr->m->n_rot / 2;
    #pragma omp parallel for schedule(static) if (T > 1)
    for (int t = 0; t < T; t++) {
        const float *co = tr->rope_cs + (size_t)t * half * 2, *sn = co + half;
        gn_op_rope(vec + (size_t)t * stride, n_heads, c->head_dim, tr->m->n_rot, c->rope_interleaved, co, sn, sign);
    }
}

// ----------------------------------------------------------------------------
// one layer

// Computes the layer's output into xout from xin, keeping intermediates in the
// trainer's one-layer buffers. xout NULL: the recompute before layer_bwd, which
// needs everything but the output (so down_proj makes only its LoRA hidden).
static void layer_fwd(gn_trainer *tr, int l, const float *xin, float *xout, int T, int train) {
    const gn_model *m = tr->m;
    const gn_config *c = &m->cfg;
    const gn_layer *L = &m->layers[l];
    int C = c->dim, HD = c->hidden_dim, NH = c->n_heads, NKV = c->n_kv_heads, hs = c->head_dim;
    int qd = NH * hs, kvd = NKV * hs;
    // kept (tr->keep): the forward of a training pass stores q/k/v, x2, gate and up; the
    // recompute (xout NULL) copies them back and makes only what is cheap (norms, RoPE,
    // attention, SwiGLU, the LoRA hiddens), the same values either way
    const int store = tr->keep && train && xout, reuse = tr->keep && train && !xout;
    const size_t lT = (size_t)l * T;
#define KEEP(buf, dst, dim) memcpy((buf) + lT * (dim), (dst), sizeof(float) * (size_t)T * (dim))
#define BACK(buf, dst, dim) memcpy((dst), (buf) + lT * (dim), sizeof(float) * (size_t)T * (dim))
    // keep16: the forward keeps the base outputs of q/k/v, gate and up as bf16, the recompute reads
    // them back (use16; a layer whose outputs were not all bf16 values multiplies again). Exclusive
    // with keep, so lin_fwd_kept with no kept buffer is the plain lin_fwd of the keep/recompute paths.
    const int k16 = l < tr->keep16 && train;
    uint16_t *kq16 = NULL, *kk16 = NULL, *kv16 = NULL, *kg16 = NULL, *ku16 = NULL;
    unsigned char *ok = NULL;
    if (k16) {
        kq16 = tr->k16 + lT * (size_t)(qd + 2 * kvd + 2 * HD), kk16 = kq16 + (size_t)T * qd;
        kv16 = kk16 + (size_t)T * kvd, kg16 = kv16 + (size_t)T * kvd, ku16 = kg16 + (size_t)T * HD;
        ok = tr->k16_ok + l;
        if (xout) *ok = 1;
    }
    const int use16 = k16 && (xout || *ok), st = xout != NULL;
    gn_op_rmsnorm_fwd(tr->xn1, xin, L->attn_norm, T, C, c->norm_eps);
    lin_fwd_kept(tr, l, GN_MOD_Q, tr->xn1, reuse ? NULL : tr->q, T, train, use16 ? kq16 : NULL, st, ok);
    lin_fwd_kept(tr, l, GN_MOD_K, tr->xn1, reuse ? NULL : tr->k, T, train, use16 ? kk16 : NULL, st, ok);
    lin_fwd_kept(tr, l, GN_MOD_V, tr->xn1, reuse ? NULL : tr->v, T, train, use16 ? kv16 : NULL, st, ok);
    if (store) { KEEP(tr->kq, tr->q, qd); KEEP(tr->kk, tr->k, kvd); KEEP(tr->kv, tr->v, kvd); }
    if (reuse) { BACK(tr->kq, tr->q, qd); BACK(tr->kk, tr->k, kvd); BACK(tr->kv, tr->v, kvd); }
    rope_seq(tr, tr->q, NH, qd, T, 1.0f);
    rope_seq(tr, tr->k, NKV, kvd, T, 1.0f);
    gn_op_attention_fwd(tr->att, tr->P, tr->q, tr->k, tr->v, T, 0, NH, NKV, hs, NULL, tr->att_nthr, tr->o.bf16_params);
    if (reuse) {
        lin_fwd(tr, l, GN_MOD_O, tr->att, NULL, T, train);
        BACK(tr->kx2, tr->x2, C);
    } else {
        lin_fwd(tr, l, GN_MOD_O, tr->att, tr->x2, T, train);
        gn_op_residual(tr->x2, xin, (size_t)T * C);
        if (store) KEEP(tr->kx2, tr->x2, C);
    }
    gn_op_rmsnorm_fwd(tr->xn2, tr->x2, L->ffn_norm, T, C, c->norm_eps);
    lin_fwd_kept(tr, l, GN_MOD_GATE, tr->xn2, reuse ? NULL : tr->g, T, train, use16 ? kg16 : NULL, st, ok);
    lin_fwd_kept(tr, l, GN_MOD_UP, tr->xn2, reuse ? NULL : tr->u, T, train, use16 ? ku16 : NULL, st, ok);
    if (store) { KEEP(tr->kg, tr->g, HD); KEEP(tr->ku, tr->u, HD); }
    if (reuse) { BACK(tr->kg, tr->g, HD); BACK(tr->ku, tr->u, HD); }
#undef KEEP
#undef BACK
    gn_op_swiglu_fwd(tr->h, tr->g, tr->u, (size_t)T * HD, GN_SWIGLU_KEEP);
    lin_fwd(tr, l, GN_MOD_DOWN, tr->h, xout, T, train);
    if (xout) gn_op_residual(xout, tr->x2, (size_t)T * C);
}

// Given dout = dL/d(layer output) in tr->dx, leaves dL/d(layer input) in tr->dx.
// Needs layer_fwd(l) to have just run on xin.
static void layer_bwd(gn_trainer *tr, int l, const float *xin, int T) {
    const gn_model *m = tr->m;
    const gn_config *c = &m->cfg;
    const gn_layer *L = &m->layers[l];
    int C = c->dim, HD = c->hidden_dim, NH = c->n_heads, NKV = c->n_kv_heads, hs = c->head_dim;
    int qd = NH * hs, kvd = NKV * hs;
    // MLP: out = x2 + down(h)
    float *dh = tr->tmp; // dL/dh lives in tmp until the up projection's backward reuses it
    lin_bwd(tr, l, GN_MOD_DOWN, tr->h, tr->dx, dh, T);
    gn_op_swiglu_bwd(tr->dg, tr->du, dh, tr->g, tr->u, (size_t)T * HD);
    lin_bwd(tr, l, GN_MOD_GATE, tr->xn2, tr->dg, tr->dxn, T);
    lin_bwd(tr, l, GN_MOD_UP, tr->xn2, tr->du, tr->tmp, T);
    gn_op_residual(tr->dxn, tr->tmp, (size_t)T * C);
    memcpy(tr->dx2, tr->dx, sizeof(float) * (size_t)T * C); // residual
    gn_op_rmsnorm_bwd(tr->dx2, tr->dxn, tr->x2, L->ffn_norm, T, C, c->norm_eps, 1);
    // attention: x2 = x + o_proj(o)
    lin_bwd(tr, l, GN_MOD_O, tr->att, tr->dx2, tr->dO, T);
    gn_op_attention_bwd(tr->dq, tr->dk, tr->dv, tr->P, tr->q, tr->k, tr->v, tr->att, tr->dO, T, NH, NKV, hs, tr->att_scr,
                        tr->att_nthr, tr->o.bf16_params); // consumes P
    rope_seq(tr, tr->dq, NH, qd, T, -1.0f); // gradients w.r.t. the pre-rotation q, k
    rope_seq(tr, tr->dk, NKV, kvd, T, -1.0f);
    lin_bwd(tr, l, GN_MOD_Q, tr->xn1, tr->dq, tr->dxn, T);
    lin_bwd(tr, l, GN_MOD_K, tr->xn1, tr->dk, tr->tmp, T);
    gn_op_residual(tr->dxn, tr->tmp, (size_t)T * C);
    lin_bwd(tr, l, GN_MOD_V, tr->xn1, tr->dv, tr->tmp, T);
    gn_op_residual(tr->dxn, tr->tmp, (size_t)T * C);
    memcpy(tr->dx, tr->dx2, sizeof(float) * (size_t)T * C);
    gn_op_rmsnorm_bwd(tr->dx, tr->dxn, xin, L->attn_norm, T, C, c->norm_eps, 1);
}

// The head: logits (n, V) = x W^T, or its input gradient x' (n, C) = dlogits W (nn). A bf16
// head in a bf16 run is used as qlora's autocast does: bf16 inputs, float32 sums (vdpbf16ps).
static void head_product(const gn_trainer *tr, float *out, const float *in, int n, int nn) {
    const gn_mat *W = &tr->m->lm_head;
    const int64_t V = W->rows, C = W->cols;
    const uint16_t *Wb = tr->head_b16 ? tr->head_b16 : W->dtype == GN_DTYPE_BF16 ? (const uint16_t *)W->data : NULL;
    if (tr->o.bf16_params && Wb && gn_bf16_gemm_available()) {
        if (nn) gn_gemm_bf16_b16(0, 0, n, C, V, 1.0f, in, V, Wb, C, 0.0f, out, C);
        else gn_gemm_bf16_b16(0, 1, n, V, C, 1.0f, in, C, Wb, C, 0.0f, out, V);
    } else if (nn) gn_linear_nn(out, in, W, n);
    else gn_linear(out, in, W, n);
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
    if (m->cuda) // --device cuda: the same sequence on the GPU (src/cuda/cuda_train.c)
        return gn_cuda_train_sequence(m, tr->ad, tr->params, tr->grads, tr->np, tr->step, tr->o.lora_dropout,
                                      tr->drop_key, ids, labels, T, weight, train, loss_sum, n_tokens);
    float *x0 = tr->xs;
    gn_op_embed(x0, &m->embed, ids, T); // x0 (T, C)
    for (int l = 0; l < Ln; l++)
        layer_fwd(tr, l, tr->xs + (size_t)l * T * C, tr->xs + (size_t)(l + 1) * T * C, T, train);
    // head + loss: only positions whose next token is a label (0 <= y < V) get
    // logits; they are gathered HEAD_CHUNK at a time into tmp
    float *xl = tr->xs + (size_t)Ln * T * C;
    float *xn = tr->dx2; // final-norm output (dx2 is free until the backward; the last layer's intermediates stay)
    gn_op_rmsnorm_fwd(xn, xl, m->final_norm, T, C, c->norm_eps);
    int nvalid = 0, nrows = 0;
    for (int t = 0; t + 1 < T; t++) {
        int32_t y = labels[t + 1];
        nvalid += y != GN_IGNORE_INDEX;
        if (y >= 0 && y < V) tr->head_rows[nrows++] = t;
    }
    *n_tokens = nvalid;
    if (train) memset(tr->dxn, 0, sizeof(float) * (size_t)T * C);
    double total = 0.0;
    for (int r0 = 0; r0 < nrows; r0 += HEAD_CHUNK) {
        int n = nrows - r0 < HEAD_CHUNK ? nrows - r0 : HEAD_CHUNK;
        const int *rows = tr->head_rows + r0;
        float *xg = tr->tmp; // (n, C): the final-norm rows, later their gradients
        for (int i = 0; i < n; i++) memcpy(xg + (size_t)i * C, xn + (size_t)rows[i] * C, sizeof(float) * (size_t)C);
        head_product(tr, tr->logits, xg, n, 0);
        double row_loss[HEAD_CHUNK]; // summed in order below, so the total does not depend on the threads
        #pragma omp parallel for schedule(static)
        for (int i = 0; i < n; i++) {
            float *lg = tr->logits + (size_t)i * V; // becomes d(loss)/d(logits) when training
            row_loss[i] = gn_op_xent(lg, lg, V, labels[rows[i] + 1], weight, train);
        }
        for (int i = 0; i < n; i++) total += row_loss[i];
        if (train) {
            head_product(tr, xg, tr->logits, n, 1);
            for (int i = 0; i < n; i++) memcpy(tr->dxn + (size_t)rows[i] * C, xg + (size_t)i * C, sizeof(float) * (size_t)C);
        }
    }
    *loss_sum = total;
    if (!train) return GN_OK;
    gn_op_rmsnorm_bwd(tr->dx, tr->dxn, xl, m->final_norm, T, C, c->norm_eps, 0);
    for (int l = Ln - 1; l >= 0; l--) {
        const float *xin = tr->xs + (size_t)l * T * C;
        if (l < Ln - 1) layer_fwd(tr, l, xin, NULL, T, 1); // recompute; the last layer's forward just ran
        layer_bwd(tr, l, xin, T);
    }
    return GN_OK;
}

// ----------------------------------------------------------------------------
// optimizer

void gn_trainer_zero_grad(gn_trainer *tr) { memset(tr->grads, 0, sizeof(float) * tr->np); }

const float *gn_trainer_grads(const gn_trainer *tr) { return tr->grads; }
float *gn_trainer_grads_mut(gn_trainer *tr) { return tr->grads; }
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
    // --device cuda: the paged kernel, the same roundings as the loop below (host_adamw keeps the loop)
    if (tr->m->cuda && !tr->o.host_adamw) {
        gn_status st = gn_cuda_train_adamw(tr->m, tr->params, tr->grads, tr->adam_m, tr->adam_v, tr->np, lr, b1, b2, eps,
                                           wd, tr->step, clip, tr->o.bf16_params);
        if (st == GN_OK) return norm;
        if (!tr->adamw_warned) gn_log(GN_LOG_WARN, "AdamW on the host: %s", gn_last_error());
        tr->adamw_warned = 1;
    }
    #pragma omp parallel for schedule(static)
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
