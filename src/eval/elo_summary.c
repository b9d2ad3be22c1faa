/*
 * elo_summary.c — summaries over Elo tournaments (elo.c): the systems in order of
 * rating, and the paper's median rank of each system over several benchmarks
 * (Vicuna, OA, ...), where a system missing from a benchmark has no rank there.
 */
#include <stdlib.h> // free
#include <string.h> // strcmp

#include "core/common.h" // gn_malloc
#include "eval/eval.h"   // gn_elo_*, gn_judgments

static int cmp_rank_idx(const void *a, const void *b, void *ctx) {
    const double *mean = ctx;
    int x = *(const int *)a, y = *(const int *)b;
    return (mean[y] > mean[x]) - (mean[y] < mean[x]);
}

// Indices sorted by mean rating, best first (insertion sort: n is small).
int *gn_elo_order(const gn_elo_result *r) {
    int *o = gn_malloc(sizeof(int) * (size_t)(r->n ? r->n : 1));
    for (int i = 0; i < r->n; i++) o[i] = i;
    for (int i = 1; i < r->n; i++)
        for (int k = i; k > 0 && cmp_rank_idx(&o[k - 1], &o[k], r->mean) > 0; k--) { int t = o[k]; o[k] = o[k - 1]; o[k - 1] = t; }
    return o;
}

void gn_elo_median_ranks(const gn_judgments *const *j, const gn_elo_result *const *r, int nb, gn_elo_median_rank *out) {
    memset(out, 0, sizeof *out);
    const char **sys = NULL;
    int ns = 0;
    for (int k = 0; k < nb; k++)
        for (int i = 0; i < j[k]->n_systems; i++) {
            int f = 0;
            for (int s = 0; s < ns; s++) if (!strcmp(sys[s], j[k]->names[i])) f = 1;
            if (!f) { sys = gn_realloc(sys, sizeof(char *) * (size_t)(ns + 1)); sys[ns++] = j[k]->names[i]; }
        }
    double *med = gn_malloc(sizeof(double) * (size_t)(ns ? ns : 1));
    int *rk = gn_malloc(sizeof(int) * (size_t)(ns ? ns : 1) * (size_t)(nb ? nb : 1)); // (ns, nb), 0 = absent
    double *tmp = gn_malloc(sizeof(double) * (size_t)(nb ? nb : 1));
    for (int s = 0; s < ns; s++) {
        int c = 0;
        for (int k = 0; k < nb; k++) {
            rk[s * nb + k] = 0;
            for (int i = 0; i < j[k]->n_systems; i++)
                if (!strcmp(j[k]->names[i], sys[s])) { rk[s * nb + k] = r[k]->rank[i]; tmp[c++] = r[k]->rank[i]; }
        }
        med[s] = gn_median(tmp, c);
    }
    free(tmp);
    *out = (gn_elo_median_rank){.n = ns, .n_bench = nb, .names = sys, .rank = rk, .median = med};
}

void gn_elo_median_rank_free(gn_elo_median_rank *m) {
    free(m->names);
    free(m->rank);
    free(m->median);
    memset(m, 0, sizeof *m);
}
