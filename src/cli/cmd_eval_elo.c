/*
 * cmd_eval_elo.c — `guanaco eval elo`: Elo ratings, intervals, ranks, win rates and the median
 * rank over benchmarks from pairwise judgments (gn_judgments_*, gn_elo_*).
 */
#include "eval_cli.h"

#include <cjson/cJSON.h> // --json output
#include <math.h>        // isfinite
#include <stdio.h>       // printf
#include <stdlib.h>      // free
#include <string.h>      // strcmp

typedef struct {
    char *name;
    const char **paths;
    int n_paths;
    gn_judgments j;
    gn_elo_result r;
    double *winrate;
} bench;

static const char ELO_HELP[] =
    "usage: guanaco eval elo FILES_OR_DIRS... [options]\n"
    "       guanaco eval elo --benchmark vicuna=DIR --benchmark oa=DIR [options]\n"
    "Elo ratings from pairwise judgments (QLoRA release format: score \"1\" first system wins,\n"
    "\"2\" second wins, \"3\" tie, -1 unparsed; systems from the file name <A>-vs-<B>-... or the\n"
    "lines' model1/model2). The paper's method: start 1000, K = 32, ratings averaged over random\n"
    "orderings of all matches; ties score 0.5; -1 lines dropped.\n\n"
    "      --benchmark NAME=PATH  a benchmark of its own (repeatable; PATH a file or folder);\n"
    "                           with several, the median rank over benchmarks is printed too\n"
    "      --rounds N           random orderings (default 10000)\n"
    "      --seed S             random seed (default 42; same seed, same numbers)\n"
    "      --k K                Elo K factor (default 32)\n"
    "      --init R             starting rating (default 1000)\n"
    "      --tie S              score of a tie (default 0.5)\n"
    "      --raw-names          keep system names as the files spell them (default: drop\n"
    "                           \"answer-\" and \"-vicuna-generations-...\", gpt35 -> gpt-3.5)\n"
    "      --alias FROM=TO      rename a system (repeatable)\n"
    "      --json FILE          write everything as JSON ('-' = stdout)\n"
    "      --png FILE           chart of ratings with 95% ranges (one file per benchmark:\n"
    "                           FILE-NAME.png when there are several)\n"
    "      --no-winrate         do not print the win-rate matrix\n"
    "  -t, --threads N          threads for the orderings\n"
    "  -v, --verbose            per-file counts\n";

static char *png_path_for(const char *png, const char *bench_name, int several) {
    if (!several) return gn_strdup(png);
    size_t n = strlen(png) + strlen(bench_name) + 8;
    char *p = gn_malloc(n);
    const char *dot = strrchr(png, '.');
    const char *slash = strrchr(png, '/');
    if (dot && (!slash || dot > slash))
        snprintf(p, n, "%.*s-%s%s", (int)(dot - png), png, bench_name, dot);
    else snprintf(p, n, "%s-%s.png", png, bench_name);
    return p;
}

int cmd_eval_elo(int argc, char **argv) {
    gn_elo_opts eo;
    gn_elo_defaults(&eo);
    gn_judgments_opts jo = {0};
    const char *json = NULL, *png = NULL;
    int threads = 0, verbose = 0, winrate = 1;
    bench *b = NULL;
    int nb = 0;
    const char **pos = gn_malloc(sizeof(char *) * (size_t)argc);
    const char **alias = gn_malloc(sizeof(char *) * (size_t)argc);
    int npos = 0, rc = 2;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { fputs(ELO_HELP, stdout); rc = 0; goto done; }
        if (!strcmp(a, "--benchmark")) {
            if (!(v = cli_val(argc, argv, &i))) goto done;
            const char *eq = strchr(v, '=');
            if (!eq || eq == v || !eq[1]) { cli_fail("--benchmark: '%s' (expected NAME=FILE_OR_DIR)", v); goto done; }
            char *name = gn_strndup(v, (size_t)(eq - v));
            int k = 0;
            while (k < nb && strcmp(b[k].name, name)) k++;
            if (k == nb) {
                b = gn_realloc(b, sizeof(bench) * (size_t)(nb + 1));
                memset(&b[nb], 0, sizeof(bench));
                b[nb].name = name;
                b[nb].paths = gn_malloc(sizeof(char *) * (size_t)argc);
                nb++;
            } else free(name);
            b[k].paths[b[k].n_paths++] = eq + 1;
        } else if (!strcmp(a, "--rounds")) {
            if (!(v = cli_val(argc, argv, &i)) || cli_int(a, v, 1, 100000000, &eo.rounds)) goto done;
        } else if (!strcmp(a, "--seed")) {
            if (!(v = cli_val(argc, argv, &i)) || cli_u64(a, v, &eo.seed)) goto done;
        } else if (!strcmp(a, "--k")) {
            if (!(v = cli_val(argc, argv, &i)) || cli_num(a, v, 0, 1000, &eo.k)) goto done;
        } else if (!strcmp(a, "--init")) {
            if (!(v = cli_val(argc, argv, &i)) || cli_num(a, v, -1e6, 1e6, &eo.init)) goto done;
        } else if (!strcmp(a, "--tie")) {
            if (!(v = cli_val(argc, argv, &i)) || cli_num(a, v, 0, 1, &eo.tie)) goto done;
        } else if (!strcmp(a, "--json")) {
            if (!(json = cli_val(argc, argv, &i))) goto done;
        } else if (!strcmp(a, "--png")) {
            if (!(png = cli_val(argc, argv, &i))) goto done;
        } else if (!strcmp(a, "--raw-names")) {
            jo.raw_names = 1;
        } else if (!strcmp(a, "--alias")) {
            if (!(v = cli_val(argc, argv, &i))) goto done;
            if (!strchr(v, '=')) { cli_fail("--alias: '%s' (expected FROM=TO)", v); goto done; }
            alias[jo.n_alias++] = v;
        } else if (!strcmp(a, "--no-winrate")) {
            winrate = 0;
        } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            if (!(v = cli_val(argc, argv, &i)) || cli_int(a, v, 1, 1024, &threads)) goto done;
        } else if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) {
            verbose = 1;
        } else if (a[0] == '-' && a[1]) {
            cli_fail("eval elo: unknown option '%s' (see --help)", a);
            goto done;
        } else pos[npos++] = a;
    }
    jo.alias = alias;
    if (npos) {
        b = gn_realloc(b, sizeof(bench) * (size_t)(nb + 1));
        memmove(&b[1], &b[0], sizeof(bench) * (size_t)nb);
        memset(&b[0], 0, sizeof(bench));
        b[0].name = gn_strdup(nb ? "files" : "all");
        b[0].paths = gn_malloc(sizeof(char *) * (size_t)argc);
        for (int k = 0; k < npos; k++) b[0].paths[b[0].n_paths++] = pos[k];
        nb++;
    }
    if (nb == 0) { cli_fail("eval elo: no judgment files given (see --help)"); goto done; }
    if (threads) gn_set_threads(threads);
    gn_set_verbosity(verbose ? GN_LOG_INFO : GN_LOG_WARN);
    rc = 1;
    for (int k = 0; k < nb; k++) {
        gn_judgments_init(&b[k].j);
        for (int p = 0; p < b[k].n_paths; p++)
            if (gn_judgments_add(&b[k].j, b[k].paths[p], &jo)) { cli_fail_lib(); goto done; }
        if (b[k].j.n_match == 0) {
            cli_fail("%s: no usable judgments (%d lines: %d unparsed -1, %d malformed)", b[k].name, b[k].j.n_lines,
                     b[k].j.n_unparsed, b[k].j.n_bad);
            goto done;
        }
        double t0 = gn_time_s();
        if (gn_elo_run(b[k].j.match, b[k].j.n_match, b[k].j.n_systems, &eo, &b[k].r)) { cli_fail_lib(); goto done; }
        double dt = gn_time_s() - t0;
        int n = b[k].j.n_systems;
        b[k].winrate = gn_malloc(sizeof(double) * (size_t)n * n);
        gn_elo_winrate(b[k].j.match, b[k].j.n_match, n, eo.tie, b[k].winrate);
        // ---- table
        const gn_judgments *j = &b[k].j;
        const gn_elo_result *r = &b[k].r;
        printf("== %s: %d judgments from %d file%s, %d systems (%d unparsed -1 dropped, %d malformed lines skipped)\n",
               b[k].name, j->n_match, j->n_files, j->n_files == 1 ? "" : "s", n, j->n_unparsed, j->n_bad);
        printf("Elo: mean over %d random orderings (K=%g, start %g, tie=%g, seed %llu) in %.2f s\n", eo.rounds, eo.k,
               eo.init, eo.tie, (unsigned long long)eo.seed, dt);
        int w = 6;
        for (int i = 0; i < n; i++) if ((int)strlen(j->names[i]) > w) w = (int)strlen(j->names[i]);
        printf("rank  %-*s  %8s  %-20s  %-20s  %5s %5s %5s\n", w, "system", "Elo", "95% CI of mean",
               "95% over orderings", "win", "loss", "tie");
        int *ord = gn_elo_order(r);
        for (int q = 0; q < n; q++) {
            int i = ord[q];
            char ci[64], pr[64];
            snprintf(ci, sizeof ci, "[%.1f, %.1f]", r->ci_lo[i], r->ci_hi[i]);
            snprintf(pr, sizeof pr, "[%.1f, %.1f]", r->p_lo[i], r->p_hi[i]);
            printf("%4d  %-*s  %8.1f  %-20s  %-20s  %5d %5d %5d\n", r->rank[i], w, j->names[i], r->mean[i], ci, pr,
                   r->wins[i], r->losses[i], r->ties[i]);
        }
        if (winrate) {
            printf("win rate of row over column (ties count %g, both orders pooled):\n", eo.tie);
            printf("    %-*s", w, "");
            for (int q = 0; q < n; q++) printf(" %6d", q + 1);
            printf("\n");
            for (int q = 0; q < n; q++) {
                int i = ord[q];
                printf("%2d  %-*s", q + 1, w, j->names[i]);
                for (int s = 0; s < n; s++) {
                    double x = b[k].winrate[(size_t)i * n + ord[s]];
                    if (isfinite(x)) printf(" %6.3f", x); else printf(" %6s", "-");
                }
                printf("\n");
            }
        }
        printf("\n");
        if (png) {
            char *path = png_path_for(png, b[k].name, nb > 1);
            const char **labels = gn_malloc(sizeof(char *) * (size_t)n);
            double *v = gn_malloc(sizeof(double) * (size_t)n * 3);
            for (int q = 0; q < n; q++) {
                labels[q] = j->names[ord[q]];
                v[q] = r->mean[ord[q]];
                v[n + q] = r->p_lo[ord[q]];
                v[2 * n + q] = r->p_hi[ord[q]];
            }
            char title[256];
            snprintf(title, sizeof title, "Elo (%s): mean of %d orderings, bars: 95%% range", b[k].name, eo.rounds);
            gn_status st = gn_plot_intervals(path, title, "Elo rating", labels, v, v + n, v + 2 * n, n);
            free(labels); free(v);
            if (st) { free(ord); free(path); cli_fail_lib(); goto done; }
            fprintf(stderr, "wrote %s\n", path);
            free(path);
        }
        free(ord);
    }
    // ---- median rank over benchmarks
    const gn_judgments **bj = gn_malloc(sizeof(*bj) * (size_t)nb);
    const gn_elo_result **br = gn_malloc(sizeof(*br) * (size_t)nb);
    for (int k = 0; k < nb; k++) { bj[k] = &b[k].j; br[k] = &b[k].r; }
    gn_elo_median_rank mrk;
    gn_elo_median_ranks(bj, br, nb, &mrk);
    free(bj);
    free(br);
    const char *const *sys = mrk.names;
    const int ns = mrk.n, *rk = mrk.rank;
    const double *med = mrk.median;
    if (nb > 1) {
        printf("== median rank over %d benchmarks\n", nb);
        int w = 6;
        for (int s = 0; s < ns; s++) if ((int)strlen(sys[s]) > w) w = (int)strlen(sys[s]);
        printf("%-*s", w, "system");
        for (int k = 0; k < nb; k++) printf("  %8.8s", b[k].name);
        printf("  %8s\n", "median");
        int *o = gn_malloc(sizeof(int) * (size_t)ns);
        for (int s = 0; s < ns; s++) o[s] = s;
        for (int s = 1; s < ns; s++)
            for (int q = s; q > 0 && med[o[q - 1]] > med[o[q]]; q--) { int t = o[q]; o[q] = o[q - 1]; o[q - 1] = t; }
        for (int q = 0; q < ns; q++) {
            int s = o[q];
            printf("%-*s", w, sys[s]);
            for (int k = 0; k < nb; k++) {
                if (rk[s * nb + k]) printf("  %8d", rk[s * nb + k]);
                else printf("  %8s", "-");
            }
            printf("  %8.1f\n", med[s]);
        }
        free(o);
    }
    if (json) {
        cJSON *root = cJSON_CreateObject();
        cJSON *cfg = cJSON_AddObjectToObject(root, "settings");
        cJSON_AddNumberToObject(cfg, "rounds", eo.rounds);
        cJSON_AddNumberToObject(cfg, "seed", (double)eo.seed);
        cJSON_AddNumberToObject(cfg, "k", eo.k);
        cJSON_AddNumberToObject(cfg, "init", eo.init);
        cJSON_AddNumberToObject(cfg, "tie", eo.tie);
        cJSON *arr = cJSON_AddArrayToObject(root, "benchmarks");
        for (int k = 0; k < nb; k++) {
            const gn_judgments *j = &b[k].j;
            const gn_elo_result *r = &b[k].r;
            int n = j->n_systems;
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "name", b[k].name);
            cJSON_AddNumberToObject(o, "judgments", j->n_match);
            cJSON_AddNumberToObject(o, "files", j->n_files);
            cJSON_AddNumberToObject(o, "unparsed", j->n_unparsed);
            cJSON_AddNumberToObject(o, "malformed", j->n_bad);
            cJSON *sa = cJSON_AddArrayToObject(o, "systems");
            int *ord = gn_elo_order(r);
            for (int q = 0; q < n; q++) {
                int i = ord[q];
                cJSON *x = cJSON_CreateObject();
                cJSON_AddStringToObject(x, "name", j->names[i]);
                cJSON_AddNumberToObject(x, "rank", r->rank[i]);
                cJSON_AddItemToObject(x, "elo", ecli_json_num(r->mean[i]));
                cJSON_AddItemToObject(x, "sd", ecli_json_num(r->sd[i]));
                cJSON *ci = cJSON_AddArrayToObject(x, "ci95_mean");
                cJSON_AddItemToArray(ci, ecli_json_num(r->ci_lo[i]));
                cJSON_AddItemToArray(ci, ecli_json_num(r->ci_hi[i]));
                cJSON *pr = cJSON_AddArrayToObject(x, "range95");
                cJSON_AddItemToArray(pr, ecli_json_num(r->p_lo[i]));
                cJSON_AddItemToArray(pr, ecli_json_num(r->p_hi[i]));
                cJSON_AddNumberToObject(x, "wins", r->wins[i]);
                cJSON_AddNumberToObject(x, "losses", r->losses[i]);
                cJSON_AddNumberToObject(x, "ties", r->ties[i]);
                cJSON_AddItemToArray(sa, x);
            }
            cJSON *wr = cJSON_AddObjectToObject(o, "winrate");
            cJSON *wn = cJSON_AddArrayToObject(wr, "systems");
            cJSON *wm = cJSON_AddArrayToObject(wr, "matrix");
            for (int q = 0; q < n; q++) {
                cJSON_AddItemToArray(wn, cJSON_CreateString(j->names[ord[q]]));
                cJSON *row = cJSON_CreateArray();
                for (int s = 0; s < n; s++) cJSON_AddItemToArray(row, ecli_json_num(b[k].winrate[(size_t)ord[q] * n + ord[s]]));
                cJSON_AddItemToArray(wm, row);
            }
            free(ord);
            cJSON_AddItemToArray(arr, o);
        }
        cJSON *mr = cJSON_AddArrayToObject(root, "median_rank");
        for (int s = 0; s < ns; s++) {
            cJSON *x = cJSON_CreateObject();
            cJSON_AddStringToObject(x, "name", sys[s]);
            cJSON_AddItemToObject(x, "median_rank", ecli_json_num(med[s]));
            cJSON *rr = cJSON_AddObjectToObject(x, "ranks");
            for (int k = 0; k < nb; k++) if (rk[s * nb + k]) cJSON_AddNumberToObject(rr, b[k].name, rk[s * nb + k]);
            cJSON_AddItemToArray(mr, x);
        }
        if (ecli_write_json(json, root)) { gn_elo_median_rank_free(&mrk); goto done; }
    }
    gn_elo_median_rank_free(&mrk);
    rc = 0;
done:
    for (int k = 0; k < nb; k++) {
        free(b[k].name);
        free(b[k].paths);
        gn_judgments_free(&b[k].j);
        gn_elo_result_free(&b[k].r);
        free(b[k].winrate);
    }
    free(b);
    free(pos);
    free(alias);
    return rc;
}
