/*
 * forward.c — the LLaMA forward pass over a session's KV cache: prefill in
 * chunks, batched decode of several sessions, LoRA applied unmerged.
 *
 * Math follows transformers' LlamaForCausalLM in float32 (per op: model/ops.h):
 *   h = h + Attn(RMSNorm1(h)); h = h + MLP(RMSNorm2(h)); logits = head(RMSNorm(h))
 *   RMSNorm: x * rsqrt(mean(x^2) + eps) * w
 *   RoPE: HF checkpoints use rotate_half on the two halves of each head; GGUF
 *         files (whose q/k rows llama.cpp's converter permuted) rotate
 *         interleaved pairs (2i, 2i+1). Same rotation, different row order.
 *   Attention: grouped-query (q head h reads kv head h / (NH/NKV)), causal,
 *         softmax(q.k / sqrt(hs)) in f32.
 *   MLP: down(silu(gate(x)) * up(x)).
 */
#include "llama.h"
#include "kvcache.h"

#include <math.h>   // sqrtf
#include <stdlib.h> // free
#include <string.h> // memcpy
#ifdef _OPENMP
#include <omp.h>
#endif

#include "../cuda/cuda_model.h" // --device cuda hooks (stubs in a CPU build)

// Adds each row's LoRA term, grouping consecutive rows that share an adapter
// (in a batched decode each row may belong to a session with its own adapter).
static void lora_rows(gn_session *const *rs, int T, int l, int k, const float *in, int64_t IC, float *out, int64_t OC,
                      float *tmp) {
    for (int t0 = 0; t0 < T;) {
        const gn_adapter *ad = rs[t0]->adapter;
        int t1 = t0 + 1;
        while (t1 < T && rs[t1]->adapter == ad) t1++;
        if (ad) gn_lora_fwd(&ad->mods[(size_t)l * GN_N_MODS + (size_t)k], in + (size_t)t0 * IC, tmp, out + (size_t)t0 * OC,
                            t1 - t0, 0);
        t0 = t1;
    }
}

// The base products of n modules that share an input (n <= 3), then their adapter terms.
// For one decode row with an adapter and 4-bit weights, the base rows and x A^T run in one
// parallel region (one fork instead of two, and the adapter's reads start while the base's
// are in flight); otherwise one after the other.
static void linear_n(float *const *outs, const gn_mat *const *ws, int n, const float *inp, int64_t T) {
    if (n == 1) gn_linear(outs[0], inp, ws[0], T);
    else gn_linear3(outs[0], ws[0], outs[1], ws[1], n > 2 ? outs[2] : NULL, n > 2 ? ws[2] : NULL, inp, T);
}

static void linear_lora_row(const gn_adapter *ad, int l, const int *ks, int n, const gn_mat *const *ws,
                            float *const *outs, const float *in, int64_t IC, float *tmp) {
    const gn_quant4_state *qs[3];
    int all4 = 1;
    for (int i = 0; i < n; i++) { all4 &= ws[i]->q4 != NULL; qs[i] = ws[i]->q4; }
    if (!all4) linear_n(outs, ws, n, in, 1);
    gn_lora_row_multi(ad, l, ks, n, in, IC, outs, tmp, all4 ? qs : NULL);
}

// Attention of the T rows of forward_rows for layer l, from w->q and the KV
// caches (this layer's rows already written) into w->att.
//  - prefill (one session, consecutive positions): the attention op
//    (gn_op_attention_fwd, as in training) over the cache's keys and values
//    made row-major float32;
//  - decode (each row its own session, or a single row): each (row, KV head)
//    scores its group of query heads at once, reading the cache once; when there
//    are fewer such tasks than threads, the cache is cut into stretches whose
//    partial softmaxes are merged afterwards.
static void attention(gn_session *w, gn_session *const *rs, const int *off, int T, int l) {
    const gn_config *c = &w->m->cfg;
    const int NH = c->n_heads, NKV = c->n_kv_heads, hs = c->head_dim, grp = NH / NKV;
    const int qd = NH * hs, kvd = NKV * hs;
    const float scale = 1.0f / sqrtf((float)hs);
    const size_t per_thread = (size_t)w->att_rows * (size_t)w->max_seq;
    int prefill = T > 1;
    for (int t = 0; t < T && prefill; t++) prefill = rs[t] == rs[0] && off[t] == t;
    if (prefill) {
        gn_session *s = rs[0];
        // this layer's keys and values so far out of their tiles as row-major float32, for the
        // sgemm of each row block
        const size_t n = (size_t)(s->pos + T) * (size_t)kvd, lay = (size_t)l * s->kv_seq * kvd;
        const size_t need = 2 * n;
        if (need > s->kv_f32_cap) {
            free(s->kv_f32);
            s->kv_f32 = gn_malloc_aligned(need * sizeof(float));
            s->kv_f32_cap = need;
        }
        float *kf = s->kv_f32, *vf = s->kv_f32 + n;
        const int np = s->pos + T, bf = s->kv_bf16;
        #pragma omp parallel for schedule(static) num_threads(w->nthreads) if (n > 65536)
        for (int j = 0; j < np; j++)
            for (int h = 0; h < NKV; h++) {
                const size_t row = (size_t)j * kvd + (size_t)h * hs, vsrc = lay + value_at(s, j, h, 0, hs);
                for (int d = 0; d < hs; d++) { // a head's hs values are one run in either dtype
                    const size_t ksrc = lay + key_at(s, j, h, d, hs);
                    kf[row + d] = bf ? gn_bf16_to_f32(((const uint16_t *)s->k_cache)[ksrc]) : ((const float *)s->k_cache)[ksrc];
                    vf[row + d] = bf ? gn_bf16_to_f32(((const uint16_t *)s->v_cache)[vsrc + d])
                                     : ((const float *)s->v_cache)[vsrc + d];
                }
            }
        gn_op_attention_fwd(w->att, NULL, w->q, kf, vf, T, s->pos, NH, NKV, hs, w->att_scores, w->nthreads, 0);
        return;
    }
    // decode: stretches per (row, KV head) so that there are enough tasks
    int maxn = 0;
    for (int t = 0; t < T; t++) if (rs[t]->pos + off[t] + 1 > maxn) maxn = rs[t]->pos + off[t] + 1;
    int nparts = 1;
    while (nparts < 16 && T * NKV * nparts < 4 * w->nthreads && maxn / (nparts * 2) >= 64) nparts *= 2;
    size_t need = (size_t)T * nparts * NH * (size_t)(hs + 2);
    if (need > w->att_part_cap) {
        free(w->att_part);
        w->att_part = gn_malloc_aligned(need * sizeof(float));
        w->att_part_cap = need;
    }
    float *M = w->att_part, *Lsum = M + (size_t)T * nparts * NH, *O = Lsum + (size_t)T * nparts * NH;
    #pragma omp parallel num_threads(w->nthreads) if (T * NKV * nparts > 1)
    {
#ifdef _OPENMP
        float *sc = w->att_scores + (size_t)omp_get_thread_num() * per_thread;
#else
        float *sc = w->att_scores;
        (void)per_thread;
#endif
        #pragma omp for schedule(dynamic, 1)
        for (int task = 0; task < T * NKV * nparts; task++) {
            int t = task / (NKV * nparts), kvh = task / nparts % NKV, p = task % nparts;
            const gn_session *s = rs[t];
            // stretches of whole key tiles (the last one partly filled)
            const int n = s->pos + off[t] + 1, nt = (n + GN_KT - 1) / GN_KT;
            const int j0 = (int)((int64_t)nt * p / nparts) * GN_KT, j1e = (int)((int64_t)nt * (p + 1) / nparts) * GN_KT;
            const int j1 = j1e < n ? j1e : n;
            const size_t lay = (size_t)l * s->kv_seq * kvd, k0 = lay + key_at(s, 0, kvh, 0, hs),
                         v0 = lay + value_at(s, 0, kvh, 0, hs);
            const int64_t ts = gn_kv_tile_stride(hs);
            size_t at = ((size_t)t * nparts + (size_t)p) * NH + (size_t)kvh * grp;
            const float *qg = w->q + (size_t)t * qd + (size_t)kvh * grp * hs;
            const int nn = j1 > j0 ? j1 - j0 : 0;
            if (s->kv_bf16)
                gn_attn_partial_bf16(qg, hs, grp, (const uint16_t *)s->k_cache + k0, ts, (const uint16_t *)s->v_cache + v0,
                                     ts, j0, nn, hs, scale, sc, M + at, Lsum + at, O + at * hs);
            else
                gn_attn_partial_f32t(qg, hs, grp, (const float *)s->k_cache + k0, ts, (const float *)s->v_cache + v0, ts,
                                     j0, nn, hs, scale, sc, M + at, Lsum + at, O + at * hs);
        }
        #pragma omp for schedule(static)
        for (int th = 0; th < T * NH; th++) {
            int t = th / NH, h = th % NH;
            size_t at = (size_t)t * nparts * NH + (size_t)h;
            gn_attn_merge(nparts, M + at, Lsum + at, O + at * hs, NH, hs, w->att + (size_t)t * qd + (size_t)h * hs);
        }
    }
}

// The forward pass over T rows. Row t is token ids[t] of session rs[t] at
// position rs[t]->pos + off[t] (prefill: one session, off = 0..T-1; batched
// decode: T sessions, off = 0). Scratch comes from `w` (its chunk >= T). Writes
// logits of every row (logits_rows = T) or of the last row only (logits_rows = 1),
// or none when logits is NULL. Does not advance the sessions' positions.
static void forward_rows(gn_session *w, gn_session *const *rs, const int *off, const int32_t *ids, int T,
                         float *logits, int logits_rows) {
    const gn_model *m = w->m;
    const gn_config *c = &m->cfg;
    int C = c->dim, HD = c->hidden_dim, NH = c->n_heads, NKV = c->n_kv_heads, hs = c->head_dim;
    int qd = NH * hs, kvd = NKV * hs, half = m->n_rot / 2;
    float *x = w->x, *xb = w->xb;
    int any_lora = 0;
    for (int t = 0; t < T; t++) any_lora |= rs[t]->adapter != NULL;
    // RoPE tables for these rows: cos/sin of pos * inv_freq (f32 as HF)
    float *cosb = w->rope_cs, *sinb = w->rope_cs + (size_t)T * half;
    for (int t = 0; t < T; t++)
        gn_op_rope_angles(cosb + (size_t)t * half, sinb + (size_t)t * half, m->rope_inv_freq, half, rs[t]->pos + off[t]);
    gn_op_embed(x, &m->embed, ids, T); // x (T, C)
#define LORA(k, in, IC, out, OC) \
    do { if (any_lora) lora_rows(rs, T, l, k, in, IC, out, OC, w->lora_tmp); } while (0)
    // base products, then the adapter terms (one decode row: see linear_lora_row)
#define BASE_LORA(n, ks, in, IC, wsl, ...)                                                          \
    do {                                                                                           \
        float *const o_[] = {__VA_ARGS__};                                                         \
        const gn_mat *const *w_ = wsl;                                                             \
        if (one_row) linear_lora_row(rs[0]->adapter, l, ks, n, w_, o_, in, IC, w->lora_tmp);      \
        else {                                                                                     \
            linear_n(o_, w_, n, in, T);                                                            \
            for (int i_ = 0; i_ < n; i_++) LORA(ks[i_], in, IC, o_[i_], w_[i_]->rows);            \
        }                                                                                          \
    } while (0)
    const int one_row = T == 1 && any_lora && rs[0]->adapter;
    static const int k_qkv[3] = {GN_MOD_Q, GN_MOD_K, GN_MOD_V}, k_o[1] = {GN_MOD_O}, k_gu[2] = {GN_MOD_GATE, GN_MOD_UP},
                     k_down[1] = {GN_MOD_DOWN};
    for (int l = 0; l < c->n_layers; l++) {
        const gn_layer *L = &m->layers[l];
        gn_op_rmsnorm_fwd(xb, x, L->attn_norm, T, C, c->norm_eps); // xb (T, C) = rmsnorm(x)
        // q (T, NH*hs), k and v (T, NKV*hs) = xb W^T + LoRA
        BASE_LORA(3, k_qkv, xb, C, ((const gn_mat *const[]){&L->wq, &L->wk, &L->wv}), w->q, w->k, w->v);
        #pragma omp parallel for schedule(static) num_threads(w->nthreads) if (T >= 32)
        for (int t = 0; t < T; t++) { // rotate q, k at each row's position; k, v into that session's cache
            gn_session *s = rs[t];
            const float *cs = cosb + (size_t)t * half, *sn = sinb + (size_t)t * half;
            gn_op_rope(w->q + (size_t)t * qd, NH, hs, m->n_rot, c->rope_interleaved, cs, sn, 1.0f);
            gn_op_rope(w->k + (size_t)t * kvd, NKV, hs, m->n_rot, c->rope_interleaved, cs, sn, 1.0f);
            gn_kv_cache_store(s, l, s->pos + off[t], w->k + (size_t)t * kvd, w->v + (size_t)t * kvd, hs, NKV);
        }
        attention(w, rs, off, T, l); // att (T, NH*hs): causal softmax over each session's cache
        BASE_LORA(1, k_o, w->att, qd, ((const gn_mat *const[]){&L->wo}), xb);
        gn_op_residual(x, xb, (size_t)T * C); // x += att Wo^T
        gn_op_rmsnorm_fwd(xb, x, L->ffn_norm, T, C, c->norm_eps);
        // hb, hb2 (T, HD) = gate and up projections; hb = silu(hb) * hb2; xb (T, C) = hb Wdown^T
        BASE_LORA(2, k_gu, xb, C, ((const gn_mat *const[]){&L->w_gate, &L->w_up}), w->hb, w->hb2);
        gn_op_swiglu_fwd(w->hb, w->hb, w->hb2, (size_t)T * HD, GN_SWIGLU_INPLACE);
        BASE_LORA(1, k_down, w->hb, HD, ((const gn_mat *const[]){&L->w_down}), xb);
        gn_op_residual(x, xb, (size_t)T * C); // x += MLP
    }
#undef LORA
#undef BASE_LORA
    if (!logits) return;
    if (logits_rows == T) {
        gn_op_rmsnorm_fwd(xb, x, m->final_norm, T, C, c->norm_eps);
        gn_linear(logits, xb, &m->lm_head, T);
    } else {
        gn_op_rmsnorm_fwd(xb, x + (size_t)(T - 1) * C, m->final_norm, 1, C, c->norm_eps);
        gn_linear(logits, xb, &m->lm_head, 1);
    }
}

static void forward_chunk(gn_session *s, const int32_t *ids, int T, float *logits, int logits_rows) {
    gn_session *rs[512];
    int off[512];
    GN_ASSERT(T <= 512);
    for (int t = 0; t < T; t++) { rs[t] = s; off[t] = t; }
    forward_rows(s, rs, off, ids, T, logits, logits_rows);
    s->pos += T;
}

const float *gn_sessions_decode(gn_session *const *ss, const int32_t *ids, int n) {
    if (n <= 0) { gn_err(GN_ERR_ARG, "decode: no sessions given"); return NULL; }
    gn_session *w = ss[0]; // the working session: the largest context, so its scratch fits every row
    for (int i = 1; i < n; i++) if (ss[i]->max_seq > w->max_seq) w = ss[i];
    const gn_config *c = &w->m->cfg;
    if (n > w->chunk || n > 512) {
        gn_err(GN_ERR_ARG, "decode: %d sessions exceed the batch limit %d", n, w->chunk < 512 ? w->chunk : 512);
        return NULL;
    }
    int off[512] = {0};
    for (int i = 0; i < n; i++) {
        if (ss[i]->m != w->m) { gn_err(GN_ERR_ARG, "decode: sessions of different models"); return NULL; }
        if (ss[i]->pos >= ss[i]->max_seq) { gn_err(GN_ERR_ARG, "decode: session %d has a full context", i); return NULL; }
        if (ids[i] < 0 || ids[i] >= c->vocab_size) { gn_err(GN_ERR_ARG, "decode: token id %d out of range", ids[i]); return NULL; }
        for (int j = 0; j < i; j++)
            if (ss[j] == ss[i]) { gn_err(GN_ERR_ARG, "decode: session %d appears twice", i); return NULL; }
    }
    if (n > w->logits_cap) {
        free(w->logits);
        w->logits = gn_malloc_aligned(sizeof(float) * (size_t)n * (size_t)c->vocab_size);
        w->logits_cap = n;
    }
    // LoRA scratch of the working session must fit every row's adapter
    for (int i = 0; i < n; i++)
        if (ss[i]->adapter && ss[i]->lora_rmax > w->lora_rmax) {
            const gn_adapter *keep = w->adapter;
            gn_session_set_adapter(w, ss[i]->adapter);
            w->adapter = keep;
        }
    if (w->m->cuda) return gn_cuda_sessions_decode(ss, ids, n, w->logits); // src/cuda/: advances each pos
    forward_rows(w, ss, off, ids, n, w->logits, n);
    for (int i = 0; i < n; i++) ss[i]->pos++;
    return w->logits;
}

const float *gn_session_forward(gn_session *s, const int32_t *ids, int n, int all_logits) {
    const gn_config *c = &s->m->cfg;
    if (n <= 0) { gn_err(GN_ERR_ARG, "forward: no tokens given"); return NULL; }
    if (n > s->max_seq - s->pos) {
        gn_err(GN_ERR_ARG, "forward: %d tokens do not fit the context (%d used of %d); raise the context size", n,
               s->pos, s->max_seq);
        return NULL;
    }
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= c->vocab_size) {
            gn_err(GN_ERR_ARG, "forward: token id %d at index %d is outside the vocabulary (0..%d)", ids[i], i,
                   c->vocab_size - 1);
            return NULL;
        }
    int rows = all_logits ? n : 1;
    if (rows > s->logits_cap) {
        free(s->logits);
        s->logits = gn_malloc_aligned(sizeof(float) * (size_t)rows * (size_t)c->vocab_size);
        s->logits_cap = rows;
    }
    if (s->m->cuda) return gn_cuda_session_forward(s, ids, n, all_logits); // src/cuda/: advances s->pos
    for (int c0 = 0; c0 < n; c0 += s->chunk) {
        int T = n - c0 < s->chunk ? n - c0 : s->chunk;
        int last = c0 + T == n;
        if (all_logits) forward_chunk(s, ids + c0, T, s->logits + (size_t)c0 * c->vocab_size, T);
        else forward_chunk(s, ids + c0, T, last ? s->logits : NULL, 1);
    }
    return s->logits;
}
