/*
 * lm.c — scoring text with a model: next-token logits that reuse the KV cache
 * of a shared prefix, and summed token log-likelihoods.
 *
 * Prefix reuse is exact up to float summation order: the cached keys/values of
 * positions 0..p-1 are the ones a full forward would compute, so the logits of
 * the last position do not depend on whether the prefix was cached.
 */
#include "eval.h"

#include <stdlib.h> // free
#ifdef _OPENMP
#include <omp.h>
#endif

#include "../core/common.h" // gn_err, gn_malloc
#include "../model/ops.h"   // gn_op_xent

void gn_lm_init(gn_lm *lm, const gn_model *m, const gn_adapter *a, int max_seq) {
    memset(lm, 0, sizeof *lm);
    lm->m = m;
    const gn_config *c = gn_model_config(m);
    if (max_seq <= 0) max_seq = c->max_seq < 4096 ? c->max_seq : 4096; // gn_session_new's rule
    lm->max_seq = max_seq;
    lm->s = gn_session_new(m, max_seq);
    if (a) gn_session_set_adapter(lm->s, a);
    lm->V = gn_model_config(m)->vocab_size;
}

void gn_lm_free(gn_lm *lm) {
    gn_session_free(lm->s);
    free(lm->cached);
    memset(lm, 0, sizeof *lm);
}

int gn_lm_max_seq(const gn_lm *lm) { return lm->max_seq; }

gn_status gn_lm_encode(const gn_lm *lm, const char *text, int bos, int32_t **ids, int *n) {
    const gn_tokenizer *t = gn_model_tokenizer(lm->m);
    if (!t) return gn_err(GN_ERR_ARG, "the model has no tokenizer (expected tokenizer.model/tokenizer.json beside it, or a .gguf)");
    // GN_ENC_BOS only adds BOS where the tokenizer does by default (not SmolLM2's);
    // qlora's f"{bos_token}{input}" always has it, so prepend it ourselves
    int32_t *x;
    int nx;
    gn_status st = gn_tokenizer_encode(t, text, strlen(text), 0, &x, &nx);
    if (st) return st;
    int b = bos ? gn_tokenizer_bos(t) : -1;
    if (b < 0) { *ids = x; *n = nx; return GN_OK; }
    *ids = gn_malloc(sizeof(int32_t) * (size_t)(nx + 1));
    (*ids)[0] = b;
    memcpy(*ids + 1, x, sizeof(int32_t) * (size_t)nx);
    *n = nx + 1;
    free(x);
    return GN_OK;
}

static void remember(gn_lm *lm, const int32_t *ids, int n) {
    if (n > lm->capc) {
        lm->capc = n * 2;
        lm->cached = gn_realloc(lm->cached, sizeof(int32_t) * (size_t)lm->capc);
    }
    memcpy(lm->cached, ids, sizeof(int32_t) * (size_t)n);
    lm->ncached = n;
}

const float *gn_lm_next_logits(gn_lm *lm, const int32_t *ids, int n) {
    if (n <= 0) { gn_err(GN_ERR_ARG, "score: empty token sequence"); return NULL; }
    int same = 0;
    int lim = lm->ncached < gn_session_pos(lm->s) ? lm->ncached : gn_session_pos(lm->s);
    while (same < n - 1 && same < lim && ids[same] == lm->cached[same]) same++;
    gn_session_rewind(lm->s, same);
    if (gn_session_pos(lm->s) != same) { gn_session_reset(lm->s); same = 0; }
    const float *lg = gn_session_forward(lm->s, ids + same, n - same, 0);
    if (!lg) { lm->ncached = 0; gn_session_reset(lm->s); return NULL; }
    remember(lm, ids, n);
    return lg;
}

double gn_log_softmax_at(const float *x, int V, int id) {
    float *work = gn_malloc(sizeof(float) * (size_t)V);
    double lp = -gn_op_xent(work, x, V, id, 0.0f, 0);
    free(work);
    return lp;
}

gn_status gn_lm_loglik(gn_lm *lm, const int32_t *ids, int n, int from, double *ll, int *count) {
    if (from < 1) from = 1;
    *ll = 0;
    if (count) *count = 0;
    if (n <= from) return GN_OK;
    gn_session_reset(lm->s);
    lm->ncached = 0;
    enum { CH = 256 };
    double part[CH];
    double total = 0;
    int scored = 0;
    int nthr = 1;
#ifdef _OPENMP
    nthr = omp_get_max_threads();
#endif
    float *work = gn_malloc(sizeof(float) * (size_t)lm->V * (size_t)nthr); // one row of exps per thread
    // positions 0..n-2 predict tokens 1..n-1; only predictions of tokens >= from count
    for (int c0 = 0; c0 < n - 1; c0 += CH) {
        int T = n - 1 - c0 < CH ? n - 1 - c0 : CH;
        const float *lg = gn_session_forward(lm->s, ids + c0, T, 1);
        if (!lg) { gn_session_reset(lm->s); free(work); return GN_ERR_ARG; }
        #pragma omp parallel for schedule(static) num_threads(nthr)
        for (int t = 0; t < T; t++) {
            int tgt = c0 + t + 1, th = 0;
#ifdef _OPENMP
            th = omp_get_thread_num();
#endif
            // ln p(token) = -(cross-entropy), the trainer's loss op
            part[t] = tgt >= from ? -gn_op_xent(work + (size_t)th * lm->V, lg + (size_t)t * lm->V, lm->V, ids[tgt], 0.0f, 0)
                                  : 0.0;
        }
        for (int t = 0; t < T; t++) // in order: the sum does not depend on the thread count
            if (c0 + t + 1 >= from) { total += part[t]; scored++; }
    }
    // the cache now holds ids[0..n-1); a later next_logits call may reuse it
    remember(lm, ids, n - 1);
    free(work);
    *ll = total;
    if (count) *count = scored;
    return GN_OK;
}
