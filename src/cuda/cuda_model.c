/*
 * cuda_model.c — a LLaMA model on the GPU (`--device cuda`): the weights
 * uploaded once at load (4-bit matrices stay packed, double quantization
 * included, so decode reads ~0.52 bytes per weight), a KV cache per session on
 * the device, and the forward pass of model/forward.c made of cuda.h's kernels.
 *
 * Per layer, T rows at positions pos0..pos0+T-1 (x: the residual stream, f32):
 *   xb = rmsnorm(x)                    q | k | v = xb W^T (+ LoRA); k, v go straight into the cache rows
 *   rope(q), rope(k)                   att = attention(q, cache)       x += att Wo^T (+ LoRA)
 *   xb = rmsnorm(x)                    hb | hb2 = xb Wg^T | xb Wu^T (+ LoRA)
 *   hb = silu(hb) * hb2                x += hb Wd^T (+ LoRA)
 * then logits = rmsnorm(x) head^T for the rows asked for, downloaded into the
 * session's logits. T <= 8 takes the fused 4-bit GEMV (q/k/v and gate/up in
 * one launch each), larger T the dequantized tiles on the tensor cores.
 *
 * Batched decode (gn_sessions_decode) runs the sessions one after the other.
 */
#include "cuda_priv.h"

#include <stdio.h>  // snprintf
#include <stdlib.h> // getenv, atoi

#define DEV_CHUNK 512 // tokens per forward chunk (scratch is sized for it)

// ----------------------------------------------------------------------------
// --device

gn_status gn_device_parse(const char *name, int *device) {
    if (!strcmp(name, "cpu")) { *device = GN_DEVICE_CPU; return GN_OK; }
    if (!strcmp(name, "cuda")) { *device = GN_DEVICE_CUDA; return GN_OK; }
    return gn_err(GN_ERR_ARG, "--device '%s' (expected cpu or cuda)", name);
}

// ----------------------------------------------------------------------------
// upload

static void track(cu_model *cm, const void *d, size_t bytes) {
    cm->allocs = gn_realloc(cm->allocs, sizeof(void *) * (size_t)(cm->nallocs + 1));
    cm->allocs[cm->nallocs++] = (void *)d;
    cm->bytes += bytes;
}

static void *up(cu_model *cm, const void *src, size_t bytes, const char *what, gn_status *st) {
    if (*st) return NULL;
    void *d = gn_cuda_malloc(bytes, what);
    if (!d) { *st = GN_ERR_OOM; return NULL; }
    track(cm, d, bytes);
    if (src) gn_cuda_upload(d, src, bytes);
    return d;
}

gn_status gn_cuda_q4_upload(const gn_quant4_state *q, gn_cuda_q4 *d) {
    memset(d, 0, sizeof *d);
    d->rows = q->rows;
    d->cols = q->cols;
    d->nelem = q->nelem;
    d->nblocks = q->nblocks;
    d->blocksize = q->blocksize;
    d->wdtype = q->wdtype;
    memcpy(d->code, q->code, sizeof d->code);
    size_t nb = (size_t)q->nblocks;
    uint8_t *packed = gn_cuda_malloc((size_t)(q->nelem + 1) / 2, "4-bit weights");
    void *scales = q->nested ? gn_cuda_malloc(nb + sizeof(float) * (256 + (size_t)q->nested_nblocks), "4-bit scales")
                             : gn_cuda_malloc(sizeof(float) * nb, "4-bit scales");
    if (!packed || !scales) {
        gn_cuda_free(packed);
        gn_cuda_free(scales);
        return GN_ERR_OOM;
    }
    d->packed = packed;
    gn_cuda_upload(packed, q->packed, (size_t)(q->nelem + 1) / 2);
    if (q->nested) { // one buffer: 256 map floats, nested_nblocks scales, then the nblocks codes
        float *f = scales;
        d->nested_code = f;
        d->nested_absmax = f + 256;
        d->qabsmax = (const uint8_t *)(f + 256 + q->nested_nblocks);
        gn_cuda_upload(f, q->nested_code, sizeof(float) * 256);
        gn_cuda_upload(f + 256, q->nested_absmax, sizeof(float) * (size_t)q->nested_nblocks);
        gn_cuda_upload(f + 256 + q->nested_nblocks, q->qabsmax, nb);
        d->nested_blocksize = q->nested_blocksize;
        d->offset = q->offset;
    } else {
        d->absmax = scales;
        gn_cuda_upload(scales, q->absmax, sizeof(float) * nb);
    }
    return GN_OK;
}

void gn_cuda_q4_release(gn_cuda_q4 *d) {
    gn_cuda_free((void *)d->packed);
    gn_cuda_free(d->qabsmax ? (void *)d->nested_code : (void *)d->absmax);
    memset(d, 0, sizeof *d);
}

static void up_q4(cu_model *cm, const gn_quant4_state *q, gn_cuda_q4 *d, gn_status *st) {
    if (*st) return;
    if ((*st = gn_cuda_q4_upload(q, d))) return;
    track(cm, d->packed, (size_t)(q->nelem + 1) / 2);
    track(cm, d->qabsmax ? (const void *)d->nested_code : (const void *)d->absmax,
          q->nested ? (size_t)q->nblocks + 4 * (256 + (size_t)q->nested_nblocks) : 4 * (size_t)q->nblocks);
}

static void up_mat(cu_model *cm, const gn_mat *w, gn_cuda_mat *d, gn_status *st) {
    if (*st) return;
    if (gn_blocks_bytes(w->dtype)) { // a GGUF's Q4_0/Q4_1/Q8_0 matrix: widened to bf16 for the card's kernels
        const size_t n = (size_t)(w->rows * w->cols);
        uint16_t *h = gn_mat_to_bf16(w);
        d->dtype = GN_DTYPE_BF16;
        d->rows = w->rows;
        d->cols = w->cols;
        d->data = up(cm, h, 2 * n, "weights", st);
        free(h);
        return;
    }
    if (w->dtype != GN_DTYPE_F32 && w->dtype != GN_DTYPE_BF16) {
        *st = gn_err(GN_ERR_UNSUPPORTED, "--device cuda: weight dtype %s (expected f32, bf16 or 4-bit)",
                     gn_dtype_name(w->dtype));
        return;
    }
    d->dtype = w->dtype;
    d->rows = w->rows;
    d->cols = w->cols;
    d->data = up(cm, w->data, (size_t)(w->rows * w->cols) * (w->dtype == GN_DTYPE_F32 ? 4 : 2), "weights", st);
}

static void up_lin(cu_model *cm, const gn_mat *w, cu_lin *d, gn_status *st) {
    memset(d, 0, sizeof *d);
    if (w->q4) { d->q4 = 1; up_q4(cm, w->q4, &d->q, st); }
    else up_mat(cm, w, &d->d, st);
}

static void cu_model_free(cu_model *cm) {
    if (!cm) return;
    if (cm->train) cu_train_free(cm->train);
    for (int i = 0; i < cm->nadapters; i++) {
        gn_cuda_free(cm->adapters[i].buf);
        free(cm->adapters[i].A);
        free(cm->adapters[i].B);
    }
    free(cm->adapters);
    for (int i = 0; i < cm->nallocs; i++) gn_cuda_free(cm->allocs[i]);
    free(cm->allocs);
    free(cm->layers);
    free(cm);
}

gn_status gn_cuda_model_attach(gn_model *m) {
    const gn_config *c = &m->cfg;
    // GN_CUDA_DEVICE picks the card; under mpirun each rank on a machine takes its own
    const char *dev_env = getenv("GN_CUDA_DEVICE"), *local = getenv("OMPI_COMM_WORLD_LOCAL_RANK");
    int ndev = gn_cuda_device_count();
    int dev = dev_env ? atoi(dev_env) : local && ndev > 0 ? atoi(local) % ndev : 0;
    gn_status st = gn_cuda_init(dev);
    if (st) return gn_err_prefix(st, "--device cuda");
    if (c->head_dim > 256)
        return gn_err(GN_ERR_UNSUPPORTED, "--device cuda: head size %d (the attention kernels take up to 256)",
                      c->head_dim);
    double t0 = gn_time_s();
    cu_model *cm = gn_calloc(1, sizeof *cm);
    size_t free0 = gn_cuda_mem_free();
    cm->layers = gn_calloc((size_t)c->n_layers, sizeof(cu_layer));
    st = GN_OK;
    const int64_t C = c->dim;
    for (int l = 0; l < c->n_layers && !st; l++) {
        const gn_layer *L = &m->layers[l];
        cu_layer *D = &cm->layers[l];
        const gn_mat *ws[GN_N_MODS] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
        for (int k = 0; k < GN_N_MODS; k++) up_lin(cm, ws[k], &D->lin[k], &st);
        D->attn_norm = up(cm, L->attn_norm, sizeof(float) * (size_t)C, "norms", &st);
        D->ffn_norm = up(cm, L->ffn_norm, sizeof(float) * (size_t)C, "norms", &st);
    }
    up_mat(cm, &m->embed, &cm->embed, &st);
    if (!st) {
        if (m->lm_head.data == m->embed.data && !m->lm_head.q4) { cm->head.d = cm->embed; } // tied
        else up_lin(cm, &m->lm_head, &cm->head, &st);
    }
    cm->final_norm = up(cm, m->final_norm, sizeof(float) * (size_t)C, "norms", &st);
    cm->inv_freq = up(cm, m->rope_inv_freq, sizeof(float) * (size_t)(m->n_rot / 2 > 0 ? m->n_rot / 2 : 1), "RoPE", &st);
    if (st) {
        gn_status keep = st;
        char msg[512];
        snprintf(msg, sizeof msg, "%s", gn_last_error());
        cu_model_free(cm);
        if (keep != GN_ERR_OOM) return gn_err(keep, "%s", msg);
        return gn_err(keep, "--device cuda: %s (the model needs more than the %.1f GiB free on %s)", msg,
                      (double)free0 / (1 << 30), gn_cuda_device_name());
    }
    gn_cuda_sync();
    m->cuda = cm;
    gn_log(GN_LOG_INFO, "CUDA: %s: %.1f MiB of weights uploaded in %.2f s", gn_cuda_device_name(),
           (double)cm->bytes / 1048576.0, gn_time_s() - t0);
    return GN_OK;
}

void gn_cuda_model_detach(gn_model *m) {
    cu_model_free(m->cuda);
    m->cuda = NULL;
}

// An adapter's A/B on the device, uploaded at first use (by host pointer: an
// adapter must not be freed and another loaded at its address while the model
// lives; the CLI and the server keep theirs for the model's lifetime).
static const cu_adapter *adapter_on_device(cu_model *cm, const gn_adapter *a) {
    for (int i = 0; i < cm->nadapters; i++)
        if (cm->adapters[i].src == a) return &cm->adapters[i];
    size_t nmods = (size_t)a->n_layers * GN_N_MODS, total = 0;
    int rmax = 0;
    for (size_t i = 0; i < nmods; i++) {
        const gn_lora_mod *lm = &a->mods[i];
        if (!lm->r) continue;
        total += (size_t)(lm->r * (lm->in + lm->out));
        if (lm->r > rmax) rmax = lm->r;
    }
    float *buf = gn_cuda_malloc(sizeof(float) * (total ? total : 1), "the LoRA adapter");
    if (!buf) return NULL;
    cm->adapters = gn_realloc(cm->adapters, sizeof(cu_adapter) * (size_t)(cm->nadapters + 1));
    cu_adapter *d = &cm->adapters[cm->nadapters++];
    d->src = a;
    d->buf = buf;
    d->rmax = rmax;
    d->A = gn_calloc(nmods, sizeof(float *));
    d->B = gn_calloc(nmods, sizeof(float *));
    size_t off = 0;
    for (size_t i = 0; i < nmods; i++) {
        const gn_lora_mod *lm = &a->mods[i];
        if (!lm->r) continue;
        size_t na = (size_t)(lm->r * lm->in), nb = (size_t)(lm->out * lm->r);
        d->A[i] = buf + off;
        gn_cuda_upload(d->A[i], lm->A, sizeof(float) * na);
        off += na;
        d->B[i] = buf + off;
        gn_cuda_upload(d->B[i], lm->B, sizeof(float) * nb);
        off += nb;
    }
    return d;
}

// ----------------------------------------------------------------------------
// session state

typedef struct {
    int max_seq, chunk, rmax;
    float *k_cache, *v_cache;      // (L, max_seq, kvd)
    float *x, *xb, *q, *att, *hb, *hb2, *logits, *ul;
    int32_t *ids;
    void *allocs[16];
    int nallocs;
} cu_session;

static void cu_session_free(cu_session *d) {
    if (!d) return;
    for (int i = 0; i < d->nallocs; i++) gn_cuda_free(d->allocs[i]);
    free(d);
}

static void *sess_alloc(cu_session *d, size_t bytes, const char *what, gn_status *st) {
    if (*st) return NULL;
    void *p = gn_cuda_malloc(bytes, what);
    if (!p) { *st = GN_ERR_OOM; return NULL; }
    GN_ASSERT(d->nallocs < 16);
    d->allocs[d->nallocs++] = p;
    return p;
}

static cu_session *session_on_device(gn_session *s) {
    if (s->cuda) return s->cuda;
    const gn_config *c = &s->m->cfg;
    cu_session *d = gn_calloc(1, sizeof *d);
    d->max_seq = s->max_seq;
    d->chunk = s->max_seq < DEV_CHUNK ? s->max_seq : DEV_CHUNK;
    size_t kvd = (size_t)c->n_kv_heads * c->head_dim, qd = (size_t)c->n_heads * c->head_dim, T = (size_t)d->chunk;
    size_t cache = (size_t)c->n_layers * (size_t)d->max_seq * kvd * sizeof(float);
    gn_status st = GN_OK;
    d->k_cache = sess_alloc(d, cache, "the KV cache (lower -c/--ctx)", &st);
    d->v_cache = sess_alloc(d, cache, "the KV cache (lower -c/--ctx)", &st);
    d->x = sess_alloc(d, T * (size_t)c->dim * 4, "activations", &st);
    d->xb = sess_alloc(d, T * (size_t)c->dim * 4, "activations", &st);
    d->q = sess_alloc(d, T * qd * 4, "activations", &st);
    d->att = sess_alloc(d, T * qd * 4, "activations", &st);
    d->hb = sess_alloc(d, T * (size_t)c->hidden_dim * 4, "activations", &st);
    d->hb2 = sess_alloc(d, T * (size_t)c->hidden_dim * 4, "activations", &st);
    d->logits = sess_alloc(d, T * (size_t)c->vocab_size * 4, "logits", &st);
    d->ids = sess_alloc(d, T * 4, "token ids", &st);
    if (st) { cu_session_free(d); return NULL; }
    s->cuda = d;
    return d;
}

void gn_cuda_session_detach(gn_session *s) {
    cu_session_free(s->cuda);
    s->cuda = NULL;
}

// ----------------------------------------------------------------------------
// forward

// Two or three 4-bit products of the same input in one GEMV launch (decode),
// else one product each.
static void linear_multi(const cu_lin *const *ws, float *const *outs, int n, const float *x, int T) {
    int fuse = T <= GN_CUDA_GEMV_MAXT;
    for (int i = 0; i < n; i++) fuse &= ws[i]->q4;
    if (fuse) {
        const gn_cuda_q4 *qs[3];
        for (int i = 0; i < n; i++) qs[i] = &ws[i]->q;
        gn_cuda_q4_gemv_multi(outs, x, GN_DTYPE_F32, qs, n, T, 0.0f);
        return;
    }
    for (int i = 0; i < n; i++) cu_linear(ws[i], outs[i], x, T, 0.0f);
}

// T rows of one session at positions pos0.. (ids host); logits (host) of the
// last `logits_rows` rows, or none when logits is NULL.
static void forward_chunk(const gn_model *m, cu_session *d, const cu_adapter *ad, const int32_t *ids, int T, int pos0,
                          float *logits, int logits_rows) {
    const gn_config *c = &m->cfg;
    const cu_model *cm = m->cuda;
    const int C = c->dim, HD = c->hidden_dim, NH = c->n_heads, NKV = c->n_kv_heads, hs = c->head_dim;
    const int qd = NH * hs, kvd = NKV * hs, V = c->vocab_size;
    const float eps = c->norm_eps;
    gn_cuda_upload(d->ids, ids, sizeof(int32_t) * (size_t)T);
    gn_cuda_embed(d->x, cm->embed.data, cm->embed.dtype, C, d->ids, T);
    for (int l = 0; l < c->n_layers; l++) {
        const cu_layer *L = &cm->layers[l];
        float *kc = d->k_cache + (size_t)l * d->max_seq * kvd, *vc = d->v_cache + (size_t)l * d->max_seq * kvd;
        float *kn = kc + (size_t)pos0 * kvd, *vn = vc + (size_t)pos0 * kvd; // this chunk's cache rows
#define LORA(k, in, IC, out, OC) do { \
            size_t i_ = (size_t)l * GN_N_MODS + (k); \
            const gn_lora_mod *lm_ = ad ? &ad->src->mods[i_] : NULL; \
            if (lm_ && lm_->r) gn_cuda_lora_fwd(out, d->ul, in, ad->A[i_], ad->B[i_], T, IC, OC, lm_->r, lm_->scale); \
        } while (0)
        gn_cuda_rmsnorm(d->xb, d->x, L->attn_norm, T, C, eps);
        {
            const cu_lin *ws[3] = {&L->lin[GN_MOD_Q], &L->lin[GN_MOD_K], &L->lin[GN_MOD_V]};
            float *outs[3] = {d->q, kn, vn};
            linear_multi(ws, outs, 3, d->xb, T);
        }
        LORA(GN_MOD_Q, d->xb, C, d->q, qd);
        LORA(GN_MOD_K, d->xb, C, kn, kvd);
        LORA(GN_MOD_V, d->xb, C, vn, kvd);
        gn_cuda_rope(d->q, T, NH, hs, qd, m->n_rot, c->rope_interleaved, cm->inv_freq, pos0, 1.0f);
        gn_cuda_rope(kn, T, NKV, hs, kvd, m->n_rot, c->rope_interleaved, cm->inv_freq, pos0, 1.0f);
        gn_cuda_attention(d->att, d->q, kc, vc, T, pos0, NH, NKV, hs);
        cu_linear(&L->lin[GN_MOD_O], d->x, d->att, T, 1.0f); // x += att Wo^T
        LORA(GN_MOD_O, d->att, qd, d->x, C);
        gn_cuda_rmsnorm(d->xb, d->x, L->ffn_norm, T, C, eps);
        {
            const cu_lin *ws[2] = {&L->lin[GN_MOD_GATE], &L->lin[GN_MOD_UP]};
            float *outs[2] = {d->hb, d->hb2};
            linear_multi(ws, outs, 2, d->xb, T);
        }
        LORA(GN_MOD_GATE, d->xb, C, d->hb, HD);
        LORA(GN_MOD_UP, d->xb, C, d->hb2, HD);
        gn_cuda_silu_mul(d->hb, d->hb, d->hb2, (int64_t)T * HD);
        cu_linear(&L->lin[GN_MOD_DOWN], d->x, d->hb, T, 1.0f); // x += h Wd^T
        LORA(GN_MOD_DOWN, d->hb, HD, d->x, C);
#undef LORA
    }
    if (!logits) return;
    int rows = logits_rows;
    gn_cuda_rmsnorm(d->xb, d->x + (size_t)(T - rows) * C, cm->final_norm, rows, C, eps);
    cu_linear(&cm->head, d->logits, d->xb, rows, 0.0f);
    gn_cuda_download(logits, d->logits, sizeof(float) * (size_t)rows * (size_t)V);
}

// The session's adapter on the device (NULL: none), its LoRA scratch sized.
static int session_adapter(gn_session *s, cu_session *d, const cu_adapter **out) {
    *out = NULL;
    if (!s->adapter) return 0;
    const cu_adapter *ad = adapter_on_device(s->m->cuda, s->adapter);
    if (!ad) return -1;
    if (ad->rmax > d->rmax) {
        gn_status st = GN_OK;
        // replaces the previous LoRA scratch (the last allocation slot is reserved for it)
        if (d->ul) { gn_cuda_free(d->ul); d->nallocs--; }
        d->ul = sess_alloc(d, sizeof(float) * (size_t)d->chunk * (size_t)ad->rmax, "LoRA scratch", &st);
        if (st) { d->rmax = 0; return -1; }
        d->rmax = ad->rmax;
    }
    *out = ad;
    return 0;
}

const float *gn_cuda_session_forward(gn_session *s, const int32_t *ids, int n, int all_logits) {
    cu_session *d = session_on_device(s);
    const cu_adapter *ad;
    if (!d || session_adapter(s, d, &ad)) return NULL;
    const int V = s->m->cfg.vocab_size;
    for (int c0 = 0; c0 < n; c0 += d->chunk) {
        int T = n - c0 < d->chunk ? n - c0 : d->chunk;
        int last = c0 + T == n;
        if (all_logits) forward_chunk(s->m, d, ad, ids + c0, T, s->pos, s->logits + (size_t)c0 * V, T);
        else forward_chunk(s->m, d, ad, ids + c0, T, s->pos, last ? s->logits : NULL, 1);
        s->pos += T;
    }
    return s->logits;
}

const float *gn_cuda_sessions_decode(gn_session *const *ss, const int32_t *ids, int n, float *logits) {
    const int V = ss[0]->m->cfg.vocab_size;
    for (int i = 0; i < n; i++) {
        gn_session *s = ss[i];
        cu_session *d = session_on_device(s);
        const cu_adapter *ad;
        if (!d || session_adapter(s, d, &ad)) return NULL;
        forward_chunk(s->m, d, ad, ids + i, 1, s->pos, logits + (size_t)i * V, 1);
        s->pos++;
    }
    return logits;
}
