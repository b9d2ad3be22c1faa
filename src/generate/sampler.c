/*
 * sampler.c — picking the next token from logits: greedy, or repetition
 * penalty -> temperature -> top-k -> top-p -> a draw, in the order transformers'
 * generate() applies its logits processors and warpers.
 *
 * Repetition penalty is HF's rule (RepetitionPenaltyLogitsProcessor): for each
 * distinct token already seen, a positive logit is divided by the penalty and a
 * negative one multiplied. top-p keeps the smallest set of most likely tokens
 * whose probability mass reaches p (at least one token).
 */
#include "../core/common.h"

#include <math.h>   // expf
#include <stdlib.h> // malloc

struct gn_sampler {
    gn_sampler_opts o;
    int V;
    uint64_t rng;
    int32_t *idx;      // (V) candidate ids; a sorted prefix of them after selection
    int32_t *tmp;      // (V) merge-sort scratch
    float *prob;       // (V)
    uint8_t *seen;     // (V) repetition-penalty marks
};

void gn_sampler_defaults(gn_sampler_opts *o) {
    o->temperature = 0.7f; // the Guanaco paper's evaluation settings
    o->top_k = 0;
    o->top_p = 0.9f;
    o->repeat_penalty = 1.0f;
    o->seed = 0;
}

// splitmix64 to spread the seed, then xorshift64*

static float rand_unit(uint64_t *s) { // [0, 1)
    *s ^= *s >> 12; *s ^= *s << 25; *s ^= *s >> 27;
    return (float)((*s * 0x2545f4914f6cdd1dull) >> 40) / 16777216.0f;
}

gn_sampler *gn_sampler_new(const gn_sampler_opts *o, int vocab_size) {
    gn_sampler *s = gn_calloc(1, sizeof *s);
    s->o = *o;
    s->V = vocab_size;
    uint64_t x = o->seed;
    s->rng = gn_splitmix64(&x) | 1;
    s->idx = gn_malloc(sizeof(int32_t) * (size_t)vocab_size);
    s->tmp = gn_malloc(sizeof(int32_t) * (size_t)vocab_size);
    s->prob = gn_malloc(sizeof(float) * (size_t)vocab_size);
    s->seen = gn_calloc((size_t)vocab_size, 1);
    return s;
}

void gn_sampler_free(gn_sampler *s) {
    if (!s) return;
    free(s->idx); free(s->tmp); free(s->prob); free(s->seen);
    free(s);
}

// Candidate order: higher logit first, lower id first among equal logits (a
// total order, so every correct selection or sort gives the same sequence).
static inline int before(const float *key, int32_t a, int32_t b) {
    return key[a] > key[b] || (key[a] == key[b] && a < b);
}

// Rearranges idx[0..n) so that its first m entries are the m first in candidate
// order (in no particular order among themselves): quickselect, Hoare partition.
static void select_top(int32_t *idx, int n, int m, const float *key) {
    int lo = 0, hi = n - 1, k = m - 1;
    if (m <= 0 || m >= n) return;
    while (hi > lo) {
        int32_t a = idx[lo], b = idx[lo + (hi - lo) / 2], c = idx[hi], p;
        if (before(key, a, b)) p = before(key, b, c) ? b : before(key, a, c) ? c : a;
        else p = before(key, a, c) ? a : before(key, b, c) ? c : b;
        int i = lo, j = hi;
        while (i <= j) {
            while (before(key, idx[i], p)) i++;
            while (before(key, p, idx[j])) j--;
            if (i <= j) { int32_t t = idx[i]; idx[i] = idx[j]; idx[j] = t; i++; j--; }
        }
        if (k <= j) hi = j;
        else if (k >= i) lo = i;
        else break;
    }
}

// Sorts idx[0..n) in candidate order (bottom-up merge sort through tmp).
static void sort_cands(int32_t *idx, int32_t *tmp, int n, const float *key) {
    int32_t *src = idx, *dst = tmp;
    for (int w = 1; w < n; w *= 2) {
        for (int lo = 0; lo < n; lo += 2 * w) {
            int mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n, i = lo, j = mid, o = lo;
            while (i < mid && j < hi) dst[o++] = before(key, src[j], src[i]) ? src[j++] : src[i++];
            while (i < mid) dst[o++] = src[i++];
            while (j < hi) dst[o++] = src[j++];
        }
        int32_t *t = src; src = dst; dst = t;
    }
    if (src != idx) memcpy(idx, src, sizeof(int32_t) * (size_t)n);
}

int32_t gn_sampler_sample(gn_sampler *s, float *logits, const int32_t *history, int n) {
    int V = s->V;
    if (s->o.repeat_penalty != 1.0f && n > 0) {
        float p = s->o.repeat_penalty;
        for (int i = 0; i < n; i++) {
            int32_t t = history[i];
            if (t < 0 || t >= V || s->seen[t]) continue;
            s->seen[t] = 1;
            logits[t] = logits[t] < 0 ? logits[t] * p : logits[t] / p;
        }
        for (int i = 0; i < n; i++) if (history[i] >= 0 && history[i] < V) s->seen[history[i]] = 0;
    }
    if (s->o.temperature <= 0.0f) { // greedy: first maximum
        int32_t best = 0;
        float bv = logits[0]; // the best value in a register: no reload per element
        for (int i = 1; i < V; i++)
            if (logits[i] > bv) { bv = logits[i]; best = i; }
        return best;
    }
    float invt = 1.0f / s->o.temperature;
    for (int i = 0; i < V; i++) logits[i] *= invt;
    for (int i = 0; i < V; i++) if (isnan(logits[i])) logits[i] = -INFINITY;
    // candidates: the top-k (all V without top-k). Only the prefix that top-p keeps
    // (or, without top-p, all candidates) is ever sorted: selection finds the
    // candidate set, sorting a growing prefix finds where top-p stops. The result
    // is the same as sorting the whole vocabulary.
    int nc = V;
    for (int i = 0; i < V; i++) s->idx[i] = i;
    if (s->o.top_k > 0 && s->o.top_k < nc) nc = s->o.top_k;
    select_top(s->idx, V, nc, logits);
    float mx = logits[s->idx[0]];
    for (int i = 1; i < nc; i++) if (logits[s->idx[i]] > mx) mx = logits[s->idx[i]];
    double sum = 0.0;
    for (int i = 0; i < nc; i++) sum += expf(logits[s->idx[i]] - mx);
    int use_p = s->o.top_p > 0.0f && s->o.top_p < 1.0f, keep = nc;
    int m = use_p && nc > 64 ? 64 : nc;
    for (;;) {
        select_top(s->idx, nc, m, logits);
        sort_cands(s->idx, s->tmp, m, logits);
        for (int i = 0; i < m; i++) s->prob[i] = (float)(expf(logits[s->idx[i]] - mx) / sum);
        if (!use_p) break;
        double cum = 0.0;
        keep = -1;
        for (int i = 0; i < m; i++) {
            cum += s->prob[i];
            if (cum >= s->o.top_p) { keep = i + 1; break; }
        }
        if (keep > 0) break;
        if (m == nc) { keep = nc; break; }
        m = m * 4 < nc ? m * 4 : nc;
    }
    nc = keep;
    if (use_p) {
        double s2 = 0.0;
        for (int i = 0; i < nc; i++) s2 += s->prob[i];
        for (int i = 0; i < nc; i++) s->prob[i] = (float)(s->prob[i] / s2);
    }
    float r = rand_unit(&s->rng), acc = 0.0f;
    for (int i = 0; i < nc; i++) {
        acc += s->prob[i];
        if (r < acc) return s->idx[i];
    }
    return s->idx[nc - 1];
}
