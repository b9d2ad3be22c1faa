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
#include <stdlib.h> // qsort

struct gn_sampler {
    gn_sampler_opts o;
    int V;
    uint64_t rng;
    int32_t *idx;      // (V) candidate ids, sorted by logit
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
static uint64_t splitmix(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static float rand_unit(uint64_t *s) { // [0, 1)
    *s ^= *s >> 12; *s ^= *s << 25; *s ^= *s >> 27;
    return (float)((*s * 0x2545f4914f6cdd1dull) >> 40) / 16777216.0f;
}

gn_sampler *gn_sampler_new(const gn_sampler_opts *o, int vocab_size) {
    gn_sampler *s = gn_calloc(1, sizeof *s);
    s->o = *o;
    s->V = vocab_size;
    uint64_t x = o->seed;
    s->rng = splitmix(&x) | 1;
    s->idx = gn_malloc(sizeof(int32_t) * (size_t)vocab_size);
    s->prob = gn_malloc(sizeof(float) * (size_t)vocab_size);
    s->seen = gn_calloc((size_t)vocab_size, 1);
    return s;
}

void gn_sampler_free(gn_sampler *s) {
    if (!s) return;
    free(s->idx); free(s->prob); free(s->seen);
    free(s);
}

static const float *sort_keys;
static int by_logit_desc(const void *a, const void *b) {
    float x = sort_keys[*(const int32_t *)a], y = sort_keys[*(const int32_t *)b];
    if (x != y) return x < y ? 1 : -1;
    return *(const int32_t *)a - *(const int32_t *)b; // stable: lower id first
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
        for (int i = 1; i < V; i++) if (logits[i] > logits[best]) best = i;
        return best;
    }
    float invt = 1.0f / s->o.temperature;
    for (int i = 0; i < V; i++) logits[i] *= invt;
    // candidates: top-k by partial work when k is small, else all, sorted by logit
    int nc = V;
    for (int i = 0; i < V; i++) s->idx[i] = i;
    sort_keys = logits; // single-threaded use per sampler; qsort has no context argument in C11
    qsort(s->idx, (size_t)V, sizeof(int32_t), by_logit_desc);
    if (s->o.top_k > 0 && s->o.top_k < nc) nc = s->o.top_k;
    float mx = logits[s->idx[0]];
    double sum = 0.0;
    for (int i = 0; i < nc; i++) { s->prob[i] = expf(logits[s->idx[i]] - mx); sum += s->prob[i]; }
    for (int i = 0; i < nc; i++) s->prob[i] = (float)(s->prob[i] / sum);
    if (s->o.top_p > 0.0f && s->o.top_p < 1.0f) {
        double cum = 0.0;
        int keep = nc;
        for (int i = 0; i < nc; i++) {
            cum += s->prob[i];
            if (cum >= s->o.top_p) { keep = i + 1; break; }
        }
        nc = keep;
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
