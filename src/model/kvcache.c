/*
 * kvcache.c — sessions: the KV cache of each layer (keys tiled for the decode
 * kernels, values row-major; float32 or bf16) and the scratch of the forward.
 */
#include "llama.h"
#include "kvcache.h"

#include <stdlib.h> // free
#include <string.h> // memset, memcpy
#ifdef _OPENMP
#include <omp.h>
#endif

#include "../cuda/cuda_model.h" // gn_cuda_session_detach (a stub in a CPU build)

// ----------------------------------------------------------------------------
// session

static int n_threads_max(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

// zeroed floats on 64-byte boundaries: rows of activations start on a cache line, so
// the AVX-512 kernels' loads never straddle two (measured: 5-10% of decode and prefill)
static void *zalloc64(size_t bytes) {
    void *p = gn_malloc_aligned(bytes);
    memset(p, 0, bytes);
    return p;
}
static float *fzalloc(size_t n) { return zalloc64(n * sizeof(float)); }

// Tokens a prefill forward takes at once: each 4-bit product unpacks its weights once per
// chunk, so a 512-token prompt in one chunk unpacks them once, not twice (with chunks of 256 a
// 7B prefill on 2 Zen 4 cores spent ~8% of its time unpacking; 512: 1.1B prefill +4%, 7B +1.5%
// in interleaved pairs); the activations of a chunk (float32, ~90 MB at 7B shapes) are what it
// costs. GN_PREFILL_CHUNK=N (1..4096) sets it (the tests cross chunk boundaries with short
// prompts that way).
static int prefill_chunk(void) {
    static int n = 0;
    if (!n) {
        const char *e = getenv("GN_PREFILL_CHUNK");
        int v = e ? atoi(e) : 0;
        n = v >= 1 && v <= 4096 ? v : 512;
    }
    return n;
}

gn_session *gn_session_new(const gn_model *m, int max_seq) {
    const gn_config *c = &m->cfg;
    gn_session *s = gn_calloc(1, sizeof *s);
    s->m = m;
    if (max_seq <= 0) max_seq = c->max_seq < 4096 ? c->max_seq : 4096;
    s->max_seq = max_seq;
    s->kv_seq = (max_seq + GN_KT - 1) / GN_KT * GN_KT;
    size_t kvd = (size_t)c->n_kv_heads * c->head_dim, qd = (size_t)c->n_heads * c->head_dim;
    size_t cache = (size_t)c->n_layers * (size_t)s->kv_seq * kvd;
    s->kv_bf16 = m->n_q4 > 0 && m->q4[0].wdtype == GN_DTYPE_BF16;
    const size_t es = s->kv_bf16 ? sizeof(uint16_t) : sizeof(float);
    s->k_cache = zalloc64(cache * es);
    s->v_cache = zalloc64(cache * es);
    s->chunk = max_seq < prefill_chunk() ? max_seq : prefill_chunk();
    size_t T = (size_t)s->chunk;
    s->x = fzalloc(T * (size_t)c->dim);
    s->xb = fzalloc(T * (size_t)c->dim);
    s->q = fzalloc(T * qd);
    s->k = fzalloc(T * kvd);
    s->v = fzalloc(T * kvd);
    s->att = fzalloc(T * qd);
    s->hb = fzalloc(T * (size_t)c->hidden_dim);
    s->hb2 = fzalloc(T * (size_t)c->hidden_dim);
    s->rope_cs = gn_calloc(T * (size_t)m->n_rot, sizeof(float));
    s->nthreads = n_threads_max();
    int grp = c->n_heads / c->n_kv_heads;
    s->att_rows = GN_ATT_RB > grp ? GN_ATT_RB : grp;
    s->att_scores = fzalloc((size_t)s->nthreads * (size_t)s->att_rows * (size_t)max_seq);
    return s;
}

void gn_session_free(gn_session *s) {
    if (!s) return;
    if (s->cuda) gn_cuda_session_detach(s);
    free(s->k_cache); free(s->v_cache); free(s->kv_f32);
    free(s->x); free(s->xb); free(s->q); free(s->k); free(s->v); free(s->att); free(s->hb); free(s->hb2);
    free(s->att_scores);
    free(s->att_part);
    free(s->rope_cs);
    free(s->lora_tmp);
    free(s->logits);
    free(s);
}

int gn_session_pos(const gn_session *s) { return s->pos; }
void gn_session_reset(gn_session *s) { s->pos = 0; }
void gn_session_rewind(gn_session *s, int pos) {
    if (pos >= 0 && pos < s->pos) s->pos = pos;
}

// ----------------------------------------------------------------------------
// LoRA scratch of a session

void gn_session_set_adapter(gn_session *s, const gn_adapter *a) {
    s->adapter = a;
    if (!a) return;
    int rmax = 0;
    for (int i = 0; i < a->n_layers * GN_N_MODS; i++) if (a->mods[i].r > rmax) rmax = a->mods[i].r;
    if (rmax > s->lora_rmax) {
        free(s->lora_tmp);
        s->lora_tmp = fzalloc((size_t)(s->chunk > 3 ? s->chunk : 3) * (size_t)rmax); // >= 3 rows: q/k/v of one decode row
        s->lora_rmax = rmax;
    }
}

// ----------------------------------------------------------------------------
// cache layout

// Writes position j of layer l: keys and values into their tiles; a bf16 cache rounds to
// nearest even (v is a bf16 value already unless an adapter added to it).
void gn_kv_cache_store(gn_session *s, int l, int j, const float *k, const float *v, int hs, int nkv) {
    const int kvd = nkv * hs;
    const size_t lay = (size_t)l * s->kv_seq * kvd;
    for (int h = 0; h < nkv; h++) {
        for (int d = 0; d < hs; d++) {
            const size_t i = lay + key_at(s, j, h, d, hs);
            if (s->kv_bf16) ((uint16_t *)s->k_cache)[i] = gn_f32_to_bf16(k[h * hs + d]);
            else ((float *)s->k_cache)[i] = k[h * hs + d];
        }
        const size_t at = lay + value_at(s, j, h, 0, hs); // this head's hs values are one run
        if (s->kv_bf16)
            for (int d = 0; d < hs; d++) ((uint16_t *)s->v_cache)[at + d] = gn_f32_to_bf16(v[h * hs + d]);
        else memcpy((float *)s->v_cache + at, v + h * hs, sizeof(float) * (size_t)hs);
    }
}
