/*
 * test_sampler.c — gn_sampler_sample (selection + partial sort) against a
 * plain reference written here that sorts the whole vocabulary and applies
 * temperature -> top-k -> top-p -> draw as transformers' warpers do. The
 * reference draws with the same documented generator (splitmix64 seed,
 * xorshift64*), so both must pick the very same token every time; a second
 * check compares draw frequencies with the reference probabilities.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "guanaco.h"

static uint64_t lcg = 12345;
static float frand(void) {
    lcg = lcg * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((lcg >> 40) / 16777216.0) * 2.0f - 1.0f;
}

static const float *keys;
static int cmp(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    if (keys[x] != keys[y]) return keys[x] < keys[y] ? 1 : -1;
    return x - y;
}

typedef struct { uint64_t rng; } ref_rng;
static void ref_seed(ref_rng *r, uint64_t seed) {
    uint64_t z = seed + 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    r->rng = (z ^ (z >> 31)) | 1;
}
static float ref_unit(ref_rng *r) {
    r->rng ^= r->rng >> 12; r->rng ^= r->rng << 25; r->rng ^= r->rng >> 27;
    return (float)((r->rng * 0x2545f4914f6cdd1dull) >> 40) / 16777216.0f;
}

// Reference: probabilities of the kept candidates (in order) into prob/idx; returns how many.
static int ref_probs(const float *logits0, int V, float temp, int top_k, float top_p, int32_t *idx, float *prob) {
    float *l = malloc(sizeof(float) * (size_t)V);
    for (int i = 0; i < V; i++) l[i] = logits0[i] * (1.0f / temp);
    for (int i = 0; i < V; i++) idx[i] = i;
    keys = l;
    qsort(idx, (size_t)V, sizeof(int32_t), cmp);
    int nc = top_k > 0 && top_k < V ? top_k : V;
    float mx = l[idx[0]];
    double sum = 0;
    for (int i = 0; i < nc; i++) sum += expf(l[idx[i]] - mx);
    for (int i = 0; i < nc; i++) prob[i] = (float)(expf(l[idx[i]] - mx) / sum);
    if (top_p > 0 && top_p < 1) {
        double cum = 0;
        int keep = nc;
        for (int i = 0; i < nc; i++) { cum += prob[i]; if (cum >= top_p) { keep = i + 1; break; } }
        nc = keep;
        double s2 = 0;
        for (int i = 0; i < nc; i++) s2 += prob[i];
        for (int i = 0; i < nc; i++) prob[i] = (float)(prob[i] / s2);
    }
    free(l);
    return nc;
}

int main(void) {
    const int Vs[] = {1, 2, 7, 65, 1000, 49152};
    const struct { float temp; int k; float p; } cfg[] = {
        {0.7f, 0, 0.9f}, {1.0f, 0, 0.5f}, {0.7f, 40, 0.9f}, {1.3f, 5, 1.0f}, {0.2f, 0, 0.0f}, {1.0f, 1, 0.9f}, {2.0f, 0, 0.999f}};
    for (size_t vi = 0; vi < sizeof Vs / sizeof Vs[0]; vi++)
        for (size_t ci = 0; ci < sizeof cfg / sizeof cfg[0]; ci++) {
            int V = Vs[vi];
            float *logits = malloc(sizeof(float) * (size_t)V), *work = malloc(sizeof(float) * (size_t)V);
            float *prob = malloc(sizeof(float) * (size_t)V);
            int32_t *idx = malloc(sizeof(int32_t) * (size_t)V);
            gn_sampler_opts o;
            gn_sampler_defaults(&o);
            o.temperature = cfg[ci].temp;
            o.top_k = cfg[ci].k;
            o.top_p = cfg[ci].p;
            o.seed = 1000 + (uint64_t)ci;
            gn_sampler *s = gn_sampler_new(&o, V);
            ref_rng rr;
            ref_seed(&rr, o.seed);
            int same = 0, draws = V > 5000 ? 40 : 300;
            for (int d = 0; d < draws; d++) {
                // peaked or flat logits, with ties (quantized values)
                float spread = d % 3 == 0 ? 12.0f : 3.0f;
                for (int i = 0; i < V; i++) logits[i] = roundf(frand() * spread * 8.0f) / 8.0f;
                memcpy(work, logits, sizeof(float) * (size_t)V);
                int32_t got = gn_sampler_sample(s, work, NULL, 0);
                int nc = ref_probs(logits, V, o.temperature, o.top_k, o.top_p, idx, prob);
                float r = ref_unit(&rr), acc = 0;
                int32_t want = idx[nc - 1];
                for (int i = 0; i < nc; i++) { acc += prob[i]; if (r < acc) { want = idx[i]; break; } }
                same += got == want;
            }
            CHECK(same == draws, "V=%d temp %g top_k %d top_p %g: %d of %d draws equal the reference", V, o.temperature,
                  o.top_k, o.top_p, same, draws);
            gn_sampler_free(s);
            free(logits); free(work); free(prob); free(idx);
        }
    // frequencies: 20000 draws from fixed logits against the reference probabilities
    {
        const int V = 300, N = 20000;
        float logits[300], work[300], prob[300];
        int32_t idx[300];
        int count[300] = {0};
        for (int i = 0; i < V; i++) logits[i] = frand() * 4.0f;
        gn_sampler_opts o;
        gn_sampler_defaults(&o); // temperature 0.7, top-p 0.9
        o.seed = 7;
        gn_sampler *s = gn_sampler_new(&o, V);
        for (int d = 0; d < N; d++) {
            memcpy(work, logits, sizeof work);
            count[gn_sampler_sample(s, work, NULL, 0)]++;
        }
        int nc = ref_probs(logits, V, o.temperature, o.top_k, o.top_p, idx, prob);
        double worst = 0;
        int outside = 0;
        for (int i = 0; i < nc; i++) {
            double p = prob[i], f = (double)count[idx[i]] / N, sd = sqrt(p * (1 - p) / N);
            worst = fmax(worst, fabs(f - p) / (sd + 1e-12));
            count[idx[i]] = 0;
        }
        for (int i = 0; i < V; i++) outside += count[i];
        CHECK(worst < 5.0 && outside == 0, "frequencies: worst deviation %.2f sd, %d draws outside top-p", worst, outside);
        gn_sampler_free(s);
    }
    TEST_REPORT();
}
