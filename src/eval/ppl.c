/*
 * ppl.c — perplexity with a sliding window, HF's strided method
 * (transformers docs, "Perplexity of fixed-length models"):
 *
 *     prev_end = 0
 *     for begin in 0, stride, 2*stride, ...:
 *         end = min(begin + ctx, n);  trg = end - prev_end
 *         run tokens [begin, end) from an empty cache; score the last trg of them
 *         (never the document's first token, which nothing predicts)
 *         prev_end = end; stop once end == n
 *
 * Every token but the first is scored exactly once; a token in a later window
 * sees ctx - stride tokens of context or more. PPL = exp(total NLL / tokens
 * scored), token-weighted (not HF's per-window average of means).
 */
#include "eval.h"

#include "../core/common.h" // gn_err

gn_status gn_ppl_doc(gn_lm *lm, const int32_t *ids, int n, const gn_ppl_opts *o, gn_ppl_acc *acc) {
    if (o->ctx < 2 || o->stride < 1 || o->stride > o->ctx)
        return gn_err(GN_ERR_ARG, "ppl: need ctx >= 2 and 1 <= stride <= ctx (got ctx %d, stride %d)", o->ctx, o->stride);
    if (o->ctx > gn_lm_max_seq(lm))
        return gn_err(GN_ERR_ARG, "ppl: window %d exceeds the session's %d tokens", o->ctx, gn_lm_max_seq(lm));
    acc->n_docs++;
    acc->n_tokens += n;
    if (n < 2) return GN_OK;
    int prev_end = 0;
    for (int begin = 0; begin < n; begin += o->stride) {
        int end = begin + o->ctx < n ? begin + o->ctx : n;
        int trg = end - prev_end;
        int W = end - begin;
        int from = W - trg; // first scored index inside the window
        if (from < 1) from = 1;
        double ll;
        int cnt;
        gn_status st = gn_lm_loglik(lm, ids + begin, W, from, &ll, &cnt);
        if (st) return st;
        acc->nll -= ll;
        acc->n_scored += cnt;
        acc->n_windows++;
        prev_end = end;
        if (end == n) break;
    }
    return GN_OK;
}
