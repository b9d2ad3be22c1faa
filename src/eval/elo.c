/*
 * elo.c — pairwise judgments and the paper's Elo tournament.
 *
 * Method (QLoRA paper §5.2, docs/FACTS.md §8.1): every system starts at 1000; matches
 * are played one after another with K = 32,
 *     E_a = 1 / (1 + 10^((R_b - R_a) / 400)),  R_a += K (S_a - E_a),  R_b -= K (S_a - E_a)
 * (the second equals R_b += K ((1 - S_a) - E_b) since E_b = 1 - E_a). A tie scores
 * S = 0.5 for both sides (FastChat's rule, which the paper cites). Because the
 * result depends on the order of the matches, the tournament is repeated over
 * 10,000 random permutations of all matches and the ratings are averaged.
 * We report the mean, a 95% interval of that mean (1.96 sd / sqrt(rounds)) and
 * the 2.5–97.5 percentile range of the per-ordering ratings. Judgments whose
 * score is -1 (verdict not parsed) are dropped.
 *
 * Randomness: round i shuffles with a splitmix64/xoshiro256** stream seeded from
 * (seed, i) alone, so the numbers do not depend on the thread count.
 */
#include "eval.h"

#include <cjson/cJSON.h> // judgment lines
#include <dirent.h>      // opendir: folders of judgment files
#include <math.h>        // exp, sqrt, NAN
#include <stdio.h>       // FILE
#include <stdlib.h>      // qsort, free
#include <sys/stat.h>    // stat

#include "../core/common.h" // gn_err, gn_log, gn_malloc, gn_read_file
#include "../core/buf.h"    // gn_lines

// ----------------------------------------------------------------------------
// system names

static int ends_with(const char *s, const char *suf) {
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && !memcmp(s + n - m, suf, m);
}

char *gn_system_name_normalize(const char *raw) {
    const char *s = raw;
    if (!strncmp(s, "answer-", 7) || !strncmp(s, "answer_", 7)) s += 7;
    char *n = gn_strdup(s);
    char *g = strstr(n, "-generations");
    if (g) {
        *g = 0;
        if (ends_with(n, "-vicuna")) n[strlen(n) - 7] = 0;
        else if (ends_with(n, "-oa")) n[strlen(n) - 3] = 0;
    }
    if (!strcmp(n, "gpt35")) { free(n); return gn_strdup("gpt-3.5"); }
    if (!strcmp(n, "gpt4")) { free(n); return gn_strdup("gpt-4"); }
    return n;
}

int gn_judgment_file_systems(const char *path, char **a, char **b) {
    char *s = gn_jsonl_stem(path);
    char *vs = strstr(s, "-vs-");
    if (!vs || vs == s) { free(s); return -1; }
    *vs = 0;
    char *rest = vs + 4;
    // cut "-<judge>-reviewer[-threeclass]": the judge tag is one of the release's
    char *rv = NULL;
    for (char *p = strstr(rest, "-reviewer"); p; p = strstr(p + 1, "-reviewer")) rv = p;
    if (rv) {
        *rv = 0;
        static const char *const judges[] = {"-gpt-4", "-gpt4", "-gpt-3.5", "-gpt35", "-judge"};
        for (size_t k = 0; k < sizeof judges / sizeof judges[0]; k++)
            if (ends_with(rest, judges[k]) && strlen(rest) > strlen(judges[k])) {
                rest[strlen(rest) - strlen(judges[k])] = 0;
                break;
            }
    }
    if (!*rest) { free(s); return -1; }
    *a = gn_strdup(s);
    *b = gn_strdup(rest);
    free(s);
    return 0;
}

// ----------------------------------------------------------------------------
// judgments

void gn_judgments_init(gn_judgments *j) { memset(j, 0, sizeof *j); }

void gn_judgments_free(gn_judgments *j) {
    for (int i = 0; i < j->n_systems; i++) free(j->names[i]);
    free(j->names);
    free(j->match);
    memset(j, 0, sizeof *j);
}

int gn_judgments_system(gn_judgments *j, const char *name) {
    for (int i = 0; i < j->n_systems; i++)
        if (!strcmp(j->names[i], name)) return i;
    j->names = gn_realloc(j->names, sizeof(char *) * (size_t)(j->n_systems + 1));
    j->names[j->n_systems] = gn_strdup(name);
    return j->n_systems++;
}

void gn_judgments_push(gn_judgments *j, int a, int b, int score) {
    GN_ASSERT(score >= 1 && score <= 3 && a != b);
    if (j->n_match == j->cap) {
        j->cap = j->cap ? j->cap * 2 : 1024;
        j->match = gn_realloc(j->match, sizeof(gn_match) * (size_t)j->cap);
    }
    j->match[j->n_match++] = (gn_match){a, b, (int8_t)score};
}

static char *final_name(const char *raw, const gn_judgments_opts *o) {
    char *n = (o && o->raw_names) ? gn_strdup(raw) : gn_system_name_normalize(raw);
    for (int k = 0; o && k < o->n_alias; k++) {
        const char *eq = strchr(o->alias[k], '=');
        if (!eq) continue;
        size_t fl = (size_t)(eq - o->alias[k]);
        if (strlen(n) == fl && !memcmp(n, o->alias[k], fl)) { free(n); n = gn_strdup(eq + 1); }
    }
    return n;
}

// Score of a judgment line: 1/2/3, -1 (unparsed), or 0 (unknown value).
static int line_score(const cJSON *sc) {
    double v;
    if (cJSON_IsNumber(sc)) v = sc->valuedouble;
    else if (cJSON_IsString(sc)) {
        char *end;
        const char *s = sc->valuestring;
        while (*s == ' ') s++;
        v = strtod(s, &end);
        while (*end == ' ') end++;
        if (end == s || *end) return 0;
    } else return 0;
    if (v == 1 || v == 2 || v == 3) return (int)v;
    if (v == -1) return -1;
    return 0;
}

#define MAX_LOGGED 5

static gn_status add_file(gn_judgments *j, const char *path, const gn_judgments_opts *o) {
    char *text;
    size_t len;
    gn_status st = gn_read_file(path, &text, &len);
    if (st) return st;
    char *fa = NULL, *fb = NULL;
    int ia = -1, ib = -1;
    if (gn_judgment_file_systems(path, &fa, &fb) == 0) {
        char *na = final_name(fa, o), *nb = final_name(fb, o);
        free(fa); free(fb);
        fa = na; fb = nb;
    }
    int line = 0, logged = 0, bad0 = j->n_bad, unp0 = j->n_unparsed, m0 = j->n_match;
    gn_lines it = gn_lines_init(text, len);
    size_t n;
    for (char *p; (p = gn_lines_next(&it, &n));) {
        line = it.lineno;
        if (gn_line_blank(p)) continue;
        j->n_lines++;
        cJSON *o_ = cJSON_ParseWithLength(p, n);
        const char *why = NULL;
        int score = 0, a = -1, b = -1;
        if (!o_ || !cJSON_IsObject(o_)) why = "not a JSON object";
        else {
            const cJSON *m1 = cJSON_GetObjectItemCaseSensitive(o_, "model1");
            const cJSON *m2 = cJSON_GetObjectItemCaseSensitive(o_, "model2");
            const cJSON *ma = cJSON_GetObjectItemCaseSensitive(o_, "model_a");
            const cJSON *mb = cJSON_GetObjectItemCaseSensitive(o_, "model_b");
            const cJSON *win = cJSON_GetObjectItemCaseSensitive(o_, "winner");
            if (cJSON_IsString(ma) && cJSON_IsString(mb) && cJSON_IsString(win)) { // FastChat arena row
                m1 = ma; m2 = mb;
                const char *w = win->valuestring;
                score = !strcmp(w, "model_a") ? 1 : !strcmp(w, "model_b") ? 2 : !strncmp(w, "tie", 3) ? 3 : 0;
                if (!score) why = "unknown \"winner\" (expected model_a, model_b or tie)";
            } else {
                const cJSON *sc = cJSON_GetObjectItemCaseSensitive(o_, "score");
                if (!sc) why = "no \"score\" field";
                else if (!(score = line_score(sc))) why = "unknown score (expected 1, 2, 3 or -1)";
            }
            if (!why) {
                if (cJSON_IsString(m1) && cJSON_IsString(m2)) {
                    char *na = final_name(m1->valuestring, o), *nb = final_name(m2->valuestring, o);
                    a = gn_judgments_system(j, na);
                    b = gn_judgments_system(j, nb);
                    free(na); free(nb);
                } else if (fa) {
                    if (ia < 0) { ia = gn_judgments_system(j, fa); ib = gn_judgments_system(j, fb); }
                    a = ia; b = ib;
                } else {
                    cJSON_Delete(o_);
                    free(text); free(fa); free(fb);
                    return gn_err(GN_ERR_FORMAT,
                                  "%s:%d: cannot tell which systems were compared. HINT: name the file "
                                  "<A>-vs-<B>.jsonl (as the QLoRA release does) or give each line \"model1\" and \"model2\"",
                                  path, line);
                }
                if (a == b) why = "a system compared with itself";
            }
        }
        cJSON_Delete(o_);
        if (why) {
            j->n_bad++;
            if (logged++ < MAX_LOGGED) gn_log(GN_LOG_WARN, "%s:%d: skipped: %s", path, line, why);
        } else if (score < 0) {
            j->n_unparsed++;
        } else {
            gn_judgments_push(j, a, b, score);
        }
    }
    if (j->n_bad - bad0 > MAX_LOGGED)
        gn_log(GN_LOG_WARN, "%s: %d lines skipped in all", path, j->n_bad - bad0);
    gn_log(GN_LOG_INFO, "%s: %d judgments, %d unparsed (-1), %d skipped", path, j->n_match - m0,
           j->n_unparsed - unp0, j->n_bad - bad0);
    j->n_files++;
    free(text); free(fa); free(fb);
    return GN_OK;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

gn_status gn_judgments_add(gn_judgments *j, const char *path, const gn_judgments_opts *o) {
    struct stat st;
    if (stat(path, &st) != 0)
        return gn_err(GN_ERR_IO, "%s: no such file or folder (expected judgment .jsonl files)", path);
    if (!S_ISDIR(st.st_mode)) return add_file(j, path, o);
    DIR *d = opendir(path);
    if (!d) return gn_err(GN_ERR_IO, "%s: cannot open folder", path);
    char **files = NULL;
    int nf = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!gn_stem_len(e->d_name, "jsonl")) continue; // .jsonl or .jsonl.gz
        size_t n = strlen(path) + strlen(e->d_name) + 2;
        char *f = gn_malloc(n);
        snprintf(f, n, "%s/%s", path, e->d_name);
        struct stat fs;
        if (stat(f, &fs) != 0 || !S_ISREG(fs.st_mode)) { free(f); continue; }
        files = gn_realloc(files, sizeof(char *) * (size_t)(nf + 1));
        files[nf++] = f;
    }
    closedir(d);
    if (nf == 0) return gn_err(GN_ERR_IO, "%s: no .jsonl or .jsonl.gz files in this folder", path);
    qsort(files, (size_t)nf, sizeof(char *), cmp_str);
    gn_status rs = GN_OK;
    for (int i = 0; i < nf; i++) {
        if (!rs) rs = add_file(j, files[i], o);
        free(files[i]);
    }
    free(files);
    return rs;
}

// ----------------------------------------------------------------------------
// Elo

void gn_elo_defaults(gn_elo_opts *o) {
    o->rounds = 10000;
    o->seed = 42;
    o->k = 32;
    o->init = 1000;
    o->tie = 0.5;
}

double gn_elo_expected(double ra, double rb) {
    // 10^x = e^(x ln 10)
    return 1.0 / (1.0 + exp((rb - ra) * (2.302585092994045684 / 400.0)));
}

void gn_elo_update(double *ra, double *rb, double s_a, double k) {
    double d = k * (s_a - gn_elo_expected(*ra, *rb));
    *ra += d;
    *rb -= d;
}

void gn_elo_play(const gn_match *m, const int *order, int n_match, int n_systems, const gn_elo_opts *o, double *r) {
    for (int i = 0; i < n_systems; i++) r[i] = o->init;
    for (int t = 0; t < n_match; t++) {
        const gn_match *x = &m[order ? order[t] : t];
        double s = x->score == 1 ? 1.0 : x->score == 2 ? 0.0 : o->tie;
        gn_elo_update(&r[x->a], &r[x->b], s, o->k);
    }
}

// xoshiro256** seeded through splitmix64 (Blackman & Vigna).
typedef struct { uint64_t s[4]; } rng;
static void rng_seed(rng *g, uint64_t seed, uint64_t stream) {
    uint64_t x = seed ^ (stream * 0xD1B54A32D192ED03ull);
    for (int i = 0; i < 4; i++) g->s[i] = gn_splitmix64(&x);
}
static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
static uint64_t rng_next(rng *g) {
    uint64_t *s = g->s, r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3];
    s[2] ^= t; s[3] = rotl(s[3], 45);
    return r;
}
// Uniform in [0, n) without modulo bias (rejection).
static uint32_t rng_below(rng *g, uint32_t n) {
    uint64_t lim = (UINT64_MAX / n) * n;
    uint64_t x;
    do x = rng_next(g); while (x >= lim);
    return (uint32_t)(x % n);
}

static int cmp_dbl(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

// Linear interpolation between order statistics (numpy's default percentile).
static double percentile_sorted(const double *v, int n, double q) {
    if (n == 0) return NAN;
    double pos = q * (n - 1);
    int i = (int)pos;
    if (i >= n - 1) return v[n - 1];
    double f = pos - i;
    return v[i] + f * (v[i + 1] - v[i]);
}

double gn_median(double *v, int n) {
    if (n == 0) return NAN;
    qsort(v, (size_t)n, sizeof(double), cmp_dbl);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

gn_status gn_elo_run(const gn_match *m, int n_match, int n_systems, const gn_elo_opts *o, gn_elo_result *out) {
    memset(out, 0, sizeof *out);
    if (n_match <= 0 || n_systems < 2) return gn_err(GN_ERR_ARG, "elo: no judgments to rate (0 usable matches)");
    if (o->rounds < 1) return gn_err(GN_ERR_ARG, "elo: rounds must be >= 1");
    int n = n_systems, R = o->rounds;
    double *fin = gn_malloc(sizeof(double) * (size_t)R * (size_t)n); // (R, n) final ratings per ordering
    #pragma omp parallel
    {
        int *order = gn_malloc(sizeof(int) * (size_t)n_match);
        #pragma omp for schedule(static)
        for (int r = 0; r < R; r++) {
            rng g;
            rng_seed(&g, o->seed, (uint64_t)r);
            for (int i = 0; i < n_match; i++) order[i] = i;
            for (int i = n_match - 1; i > 0; i--) { // Fisher–Yates
                int k = (int)rng_below(&g, (uint32_t)i + 1);
                int t = order[i]; order[i] = order[k]; order[k] = t;
            }
            gn_elo_play(m, order, n_match, n, o, fin + (size_t)r * n);
        }
        free(order);
    }
    out->n = n;
    out->rounds = R;
    out->mean = gn_calloc((size_t)n, sizeof(double));
    out->sd = gn_calloc((size_t)n, sizeof(double));
    out->ci_lo = gn_calloc((size_t)n, sizeof(double));
    out->ci_hi = gn_calloc((size_t)n, sizeof(double));
    out->p_lo = gn_calloc((size_t)n, sizeof(double));
    out->p_hi = gn_calloc((size_t)n, sizeof(double));
    out->rank = gn_calloc((size_t)n, sizeof(int));
    out->wins = gn_calloc((size_t)n, sizeof(int));
    out->losses = gn_calloc((size_t)n, sizeof(int));
    out->ties = gn_calloc((size_t)n, sizeof(int));
    out->games = gn_calloc((size_t)n, sizeof(int));
    double *col = gn_malloc(sizeof(double) * (size_t)R);
    for (int i = 0; i < n; i++) {
        double s = 0;
        for (int r = 0; r < R; r++) s += (col[r] = fin[(size_t)r * n + i]);
        double mean = s / R, v = 0;
        for (int r = 0; r < R; r++) v += (col[r] - mean) * (col[r] - mean);
        double sd = R > 1 ? sqrt(v / (R - 1)) : 0.0;
        out->mean[i] = mean;
        out->sd[i] = sd;
        out->ci_lo[i] = mean - 1.959963984540054 * sd / sqrt((double)R);
        out->ci_hi[i] = mean + 1.959963984540054 * sd / sqrt((double)R);
        qsort(col, (size_t)R, sizeof(double), cmp_dbl);
        out->p_lo[i] = percentile_sorted(col, R, 0.025);
        out->p_hi[i] = percentile_sorted(col, R, 0.975);
    }
    for (int i = 0; i < n; i++) {
        int better = 0;
        for (int k = 0; k < n; k++) if (out->mean[k] > out->mean[i]) better++;
        out->rank[i] = better + 1;
    }
    for (int t = 0; t < n_match; t++) {
        const gn_match *x = &m[t];
        out->games[x->a]++; out->games[x->b]++;
        if (x->score == 1) { out->wins[x->a]++; out->losses[x->b]++; }
        else if (x->score == 2) { out->wins[x->b]++; out->losses[x->a]++; }
        else { out->ties[x->a]++; out->ties[x->b]++; }
    }
    free(col);
    free(fin);
    return GN_OK;
}

void gn_elo_result_free(gn_elo_result *r) {
    free(r->mean); free(r->sd); free(r->ci_lo); free(r->ci_hi); free(r->p_lo); free(r->p_hi);
    free(r->rank); free(r->wins); free(r->losses); free(r->ties); free(r->games);
    memset(r, 0, sizeof *r);
}

void gn_elo_winrate(const gn_match *m, int n_match, int n_systems, double tie, double *w) {
    int n = n_systems;
    double *pts = gn_calloc((size_t)n * n, sizeof(double));
    int *games = gn_calloc((size_t)n * n, sizeof(int));
    for (int t = 0; t < n_match; t++) {
        int a = m[t].a, b = m[t].b;
        double sa = m[t].score == 1 ? 1.0 : m[t].score == 2 ? 0.0 : tie;
        double sb = m[t].score == 3 ? tie : 1.0 - sa;
        pts[(size_t)a * n + b] += sa;
        pts[(size_t)b * n + a] += sb;
        games[(size_t)a * n + b]++;
        games[(size_t)b * n + a]++;
    }
    for (size_t i = 0; i < (size_t)n * n; i++) w[i] = games[i] ? pts[i] / games[i] : NAN;
    free(pts);
    free(games);
}

// ----------------------------------------------------------------------------
// gn_eval_elo: the `guanaco eval elo` numbers as JSON, for embedders (python/)

static int cmp_rank(const void *x, const void *y, void *r_) {
    const gn_elo_result *r = r_;
    int a = *(const int *)x, b = *(const int *)y;
    return r->mean[a] > r->mean[b] ? -1 : r->mean[a] < r->mean[b] ? 1 : a - b;
}

gn_status gn_eval_elo(const char *const *paths, int n_paths, int rounds, uint64_t seed, char **json) {
    if (!paths || n_paths <= 0 || !json) return gn_err(GN_ERR_ARG, "eval elo: no judgment files given");
    if (rounds < 0) return gn_err(GN_ERR_ARG, "eval elo: rounds %d (expected a positive number)", rounds);
    *json = NULL;
    gn_elo_opts eo;
    gn_elo_defaults(&eo);
    if (rounds) eo.rounds = rounds;
    eo.seed = seed;
    gn_judgments_opts jo = {0};
    gn_judgments j;
    gn_judgments_init(&j);
    gn_elo_result r = {0};
    gn_status st = GN_OK;
    for (int p = 0; p < n_paths && !st; p++) {
        if (!paths[p]) st = gn_err(GN_ERR_ARG, "eval elo: path %d is NULL", p);
        else st = gn_judgments_add(&j, paths[p], &jo);
    }
    if (!st && j.n_match == 0)
        st = gn_err(GN_ERR_FORMAT, "%s: no usable judgments (%d lines: %d unparsed -1, %d malformed)", paths[0], j.n_lines,
                    j.n_unparsed, j.n_bad);
    if (!st) st = gn_elo_run(j.match, j.n_match, j.n_systems, &eo, &r);
    if (!st) {
        int n = j.n_systems;
        int *ord = gn_malloc(sizeof(int) * (size_t)n);
        for (int i = 0; i < n; i++) ord[i] = i;
        qsort_r(ord, (size_t)n, sizeof(int), cmp_rank, &r);
        cJSON *o = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(o, "systems");
        cJSON_AddNumberToObject(o, "matches", j.n_match);
        cJSON_AddNumberToObject(o, "rounds", eo.rounds);
        for (int q = 0; q < n; q++) {
            int i = ord[q];
            cJSON *x = cJSON_CreateObject();
            cJSON_AddStringToObject(x, "name", j.names[i]);
            cJSON_AddNumberToObject(x, "elo", r.mean[i]);
            cJSON_AddNumberToObject(x, "sd", r.sd[i]);
            cJSON *ci = cJSON_AddArrayToObject(x, "ci95_mean"), *pr = cJSON_AddArrayToObject(x, "range95");
            cJSON_AddItemToArray(ci, cJSON_CreateNumber(r.ci_lo[i]));
            cJSON_AddItemToArray(ci, cJSON_CreateNumber(r.ci_hi[i]));
            cJSON_AddItemToArray(pr, cJSON_CreateNumber(r.p_lo[i]));
            cJSON_AddItemToArray(pr, cJSON_CreateNumber(r.p_hi[i]));
            cJSON_AddNumberToObject(x, "rank", r.rank[i]);
            cJSON_AddNumberToObject(x, "wins", r.wins[i]);
            cJSON_AddNumberToObject(x, "losses", r.losses[i]);
            cJSON_AddNumberToObject(x, "ties", r.ties[i]);
            cJSON_AddNumberToObject(x, "games", r.games[i]);
            cJSON_AddItemToArray(arr, x);
        }
        *json = cJSON_PrintUnformatted(o);
        cJSON_Delete(o);
        free(ord);
        gn_elo_result_free(&r);
    }
    gn_judgments_free(&j);
    return st;
}
