/*
 * cmd_eval.c — `guanaco eval SUBCOMMAND`: the paper's evaluations as commands.
 *
 *   guanaco eval elo FILES_OR_DIRS... [--benchmark NAME=DIR ...] [--rounds 10000] [--seed 42]
 *   guanaco eval judge --a GENS_A.jsonl --b GENS_B.jsonl --judge-prompt TEMPLATES.jsonl
 *                      (--judge-url URL [--judge-model gpt-4] | -m LOCAL_JUDGE) -o OUT_DIR
 *   guanaco eval mmlu  -m MODEL [--split test|val] [--shots 5] [--subjects a,b] [--limit N]
 *   guanaco eval crows -m MODEL [--data crows_pairs_anonymized.csv] [--limit N]
 *   guanaco eval ppl   -m MODEL FILE [--ctx 512] [--stride 256]
 *
 * The math lives in src/eval/ (eval.h); this file parses flags, prints tables
 * (stdout), progress (stderr), and writes --json / --predictions / --png files.
 */
#include "eval_cli.h"

#include <cjson/cJSON.h> // --json output
#include <dirent.h>      // listing the MMLU folders
#include <errno.h>       // errno
#include <math.h>        // exp, isfinite
#include <stdio.h>       // printf
#include <stdlib.h>      // strtol, free
#include <string.h>      // strcmp
#include <sys/stat.h>    // stat, mkdir
#include <time.h>        // time
#include <unistd.h>      // isatty

#include "core/common.h" // gn_malloc, gn_time_s, gn_write_file_atomic
#include "core/plot.h"   // gn_plot_intervals
#include "eval/eval.h"   // the evaluation library

// ----------------------------------------------------------------------------
// shared helpers (eval_cli.h)

const char *ecli_val(int argc, char **argv, int *i) {
    if (*i + 1 >= argc) { cli_fail("%s needs a value", argv[*i]); return NULL; }
    return argv[++*i];
}

int ecli_int(const char *flag, const char *v, long lo, long hi, int *out) {
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (end == v || *end || errno || x < lo || x > hi) {
        cli_fail("%s: '%s' (expected an integer %ld..%ld)", flag, v, lo, hi);
        return -1;
    }
    *out = (int)x;
    return 0;
}

int ecli_num(const char *flag, const char *v, double lo, double hi, double *out) {
    char *end;
    double x = strtod(v, &end);
    if (end == v || *end || !(x >= lo && x <= hi)) {
        cli_fail("%s: '%s' (expected a number %g..%g)", flag, v, lo, hi);
        return -1;
    }
    *out = x;
    return 0;
}

const char ECLI_MODEL_HELP[] =
    "  -m, --model PATH         HF folder, a weights file inside one, or a .gguf file\n"
    "  -a, --adapter DIR        PEFT LoRA adapter folder, applied unmerged\n"
    "      --4bit               quantize the linear layers on load (NF4, double quantization, block 64,\n"
    "                           bf16 compute: transformers' load_in_4bit as QLoRA uses it)\n"
    "      --quant-type nf4|fp4 --no-double-quant --blocksize N --compute-dtype bf16|f32   4-bit settings\n"
    "      --dtype f32|bf16     weight dtype to compute with (default f32)\n"
    "      --device cpu|cuda    where the forward pass runs (default cpu; cuda needs a make CUDA=1 build)\n"
    "  -t, --threads N          threads (default: all cores)\n"
    "  -v, --verbose            log loading details\n";

int ecli_model_flag(ecli_model *o, int argc, char **argv, int *i) {
    const char *a = argv[*i], *v;
#define IS(s, l) (!strcmp(a, s) || !strcmp(a, l))
    if (IS("-m", "--model")) { if (!(v = ecli_val(argc, argv, i))) return -1; o->model = v; return 1; }
    if (IS("-a", "--adapter")) { if (!(v = ecli_val(argc, argv, i))) return -1; o->adapter = v; return 1; }
    if (IS("-t", "--threads")) {
        if (!(v = ecli_val(argc, argv, i)) || ecli_int(a, v, 1, 1024, &o->threads)) return -1;
        return 1;
    }
    if (IS("-v", "--verbose")) { o->verbose = 1; return 1; }
    if (!strcmp(a, "--4bit")) { o->four_bit = 1; return 1; }
    if (!strcmp(a, "--device")) {
        if (!(v = ecli_val(argc, argv, i))) return -1;
        if (gn_device_parse(v, &o->device)) { cli_fail_lib(); return -1; }
        return 1;
    }
    if (!strcmp(a, "--no-double-quant")) { o->no_double_quant = 1; return 1; }
    if (!strcmp(a, "--blocksize")) {
        if (!(v = ecli_val(argc, argv, i)) || ecli_int(a, v, 16, 4096, &o->blocksize)) return -1;
        if (o->blocksize & (o->blocksize - 1)) { cli_fail("--blocksize %d: expected a power of two 16..4096", o->blocksize); return -1; }
        return 1;
    }
    if (!strcmp(a, "--quant-type")) {
        if (!(v = ecli_val(argc, argv, i))) return -1;
        if (!strcmp(v, "nf4")) o->quant_type = GN_DTYPE_NF4;
        else if (!strcmp(v, "fp4")) o->quant_type = GN_DTYPE_FP4;
        else { cli_fail("--quant-type: '%s' (expected nf4 or fp4)", v); return -1; }
        return 1;
    }
    if (!strcmp(a, "--compute-dtype")) {
        if (!(v = ecli_val(argc, argv, i))) return -1;
        if (!strcmp(v, "bf16")) o->compute_dtype = GN_DTYPE_BF16;
        else if (!strcmp(v, "f32")) o->compute_dtype = GN_DTYPE_F32;
        else { cli_fail("--compute-dtype: '%s' (expected bf16 or f32)", v); return -1; }
        o->compute_set = 1;
        return 1;
    }
    if (!strcmp(a, "--dtype")) {
        if (!(v = ecli_val(argc, argv, i))) return -1;
        if (!strcmp(v, "f32")) o->dtype = GN_DTYPE_F32;
        else if (!strcmp(v, "bf16")) o->dtype = GN_DTYPE_BF16;
        else { cli_fail("--dtype: '%s' (expected f32 or bf16)", v); return -1; }
        return 1;
    }
#undef IS
    return 0;
}

gn_model *ecli_load(const ecli_model *o, gn_adapter **adapter) {
    if (adapter) *adapter = NULL;
    if (!o->model) { cli_fail("-m/--model is required (see --help)"); return NULL; }
    if (o->threads) gn_set_threads(o->threads);
    gn_set_verbosity(o->verbose ? GN_LOG_INFO : GN_LOG_WARN);
    // the same load options as main.c's common flags
    gn_load_opts lo = {.weight_dtype = o->four_bit ? (o->quant_type ? o->quant_type : GN_DTYPE_NF4) : o->dtype,
                       .no_double_quant = o->no_double_quant, .blocksize = o->blocksize,
                       .compute_dtype = o->compute_set ? o->compute_dtype : GN_DTYPE_COUNT, .device = o->device};
    gn_model *m;
    double t0 = gn_time_s();
    if (gn_model_load(&m, o->model, &lo) != GN_OK) { cli_fail_lib(); return NULL; }
    if (o->adapter) {
        if (!adapter) { cli_fail("-a/--adapter is not used by this command"); gn_model_free(m); return NULL; }
        if (gn_adapter_load(adapter, m, o->adapter, NULL) != GN_OK) { cli_fail_lib(); gn_model_free(m); return NULL; }
    }
    if (o->verbose)
        fprintf(stderr, "loaded %s in %.2f s (%s kernels, %d threads)\n", o->model, gn_time_s() - t0, gn_simd_name(),
                gn_get_threads());
    return m;
}

void ecli_fmt_time(char *buf, size_t cap, double s) {
    if (!(s >= 0) || s > 1e7) { snprintf(buf, cap, "?"); return; }
    if (s < 60) snprintf(buf, cap, "%.1fs", s);
    else if (s < 3600) snprintf(buf, cap, "%dm%02ds", (int)s / 60, (int)s % 60);
    else snprintf(buf, cap, "%dh%02dm", (int)s / 3600, ((int)s % 3600) / 60);
}

void ecli_progress_start(ecli_progress *p, const char *what) {
    p->t0 = gn_time_s();
    p->last = 0;
    p->tty = isatty(2);
    p->what = what;
}

static void progress_line(ecli_progress *p, long done, long total, const char *note, int final) {
    double el = gn_time_s() - p->t0;
    char e[32], eta[32];
    ecli_fmt_time(e, sizeof e, el);
    ecli_fmt_time(eta, sizeof eta, done > 0 ? el * (double)(total - done) / (double)done : -1);
    fprintf(stderr, "%s[%s] %ld/%ld (%.1f%%) elapsed %s, ETA %s%s%s%s", p->tty ? "\r\033[K" : "", p->what, done, total,
            total ? 100.0 * done / total : 100.0, e, final ? "0s" : eta, note ? "  " : "", note ? note : "",
            p->tty && !final ? "" : "\n");
    fflush(stderr);
}

void ecli_progress_show(ecli_progress *p, long done, long total, const char *note) {
    double now = gn_time_s();
    if (now - p->last < (p->tty ? 0.25 : 10.0)) return;
    p->last = now;
    progress_line(p, done, total, note, 0);
}

void ecli_progress_end(ecli_progress *p, long done, long total) { progress_line(p, done, total, NULL, 1); }

static int exists(const char *p) { struct stat st; return stat(p, &st) == 0; }

// GN_DATADIR (the installed copy, $(PREFIX)/share/guanaco) and GN_SRCDATA (the
// source tree's data/) come from the build: $(BUILD)/gn_paths.h.
#include "gn_paths.h"

int ecli_plain_or_gz(char *path, size_t cap) {
    if (exists(path)) return 1;
    size_t n = strlen(path);
    if (n + 4 > cap) return 0;
    memcpy(path + n, ".gz", 4);
    if (exists(path)) return 1;
    path[n] = 0;
    return 0;
}

const char *ecli_default_data(const char *rel) {
    static char buf[4][1024];
    static int k;
    char *b = buf[k++ & 3];
    const char *env = getenv("GN_DATA");
    const char *dirs[3] = {GN_DATADIR, env && *env ? env : NULL, GN_SRCDATA};
    for (int i = 0; i < 3; i++) {
        if (!dirs[i]) continue;
        snprintf(b, 1024, "%s/%s", dirs[i], rel);
        if (ecli_plain_or_gz(b, 1024)) {
            fprintf(stderr, "guanaco: reading %s (the default; --data chooses another)\n", b);
            return b;
        }
    }
    return NULL;
}

void ecli_print_data_dirs(FILE *f) {
    const char *env = getenv("GN_DATA");
    fprintf(f, "\ndefault data, the first of these folders that has it:\n  %s (installed)\n", GN_DATADIR);
    if (env && *env) fprintf(f, "  %s ($GN_DATA)\n", env);
    else fprintf(f, "  $GN_DATA (unset)\n");
    fprintf(f, "  %s (source tree)\n", GN_SRCDATA);
}

int ecli_write_text(const char *path, const char *text) {
    if (!strcmp(path, "-")) { fputs(text, stdout); return 0; }
    if (gn_write_file_atomic(path, text, strlen(text))) return cli_fail_lib();
    return 0;
}

// Writes a cJSON value (takes ownership) to path; 0 ok.
static int write_json(const char *path, cJSON *j) {
    char *s = cJSON_Print(j);
    cJSON_Delete(j);
    size_t n = strlen(s);
    char *t = gn_malloc(n + 2);
    memcpy(t, s, n);
    t[n] = '\n';
    t[n + 1] = 0;
    cJSON_free(s);
    int rc = ecli_write_text(path, t);
    free(t);
    return rc;
}

// cJSON number, or null for NaN/inf (JSON has no NaN).
static cJSON *num(double v) { return isfinite(v) ? cJSON_CreateNumber(v) : cJSON_CreateNull(); }

// A growing text buffer for JSONL outputs.
typedef struct { char *buf; size_t len, cap; } tbuf;
static void tb_add(tbuf *b, const char *s) {
    size_t n = strlen(s);
    if (b->len + n + 1 > b->cap) { b->cap = (b->len + n + 1) * 2 + 1024; b->buf = gn_realloc(b->buf, b->cap); }
    memcpy(b->buf + b->len, s, n + 1);
    b->len += n;
}
static void tb_json_line(tbuf *b, cJSON *o) { // takes ownership
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    tb_add(b, s);
    tb_add(b, "\n");
    cJSON_free(s);
}

// ============================================================================
// elo

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

static int cmp_rank_idx(const void *a, const void *b, void *ctx) {
    const double *mean = ctx;
    int x = *(const int *)a, y = *(const int *)b;
    return (mean[y] > mean[x]) - (mean[y] < mean[x]);
}

// Indices sorted by mean rating, best first (insertion sort: n is small).
static int *by_rating(const gn_elo_result *r) {
    int *o = gn_malloc(sizeof(int) * (size_t)r->n);
    for (int i = 0; i < r->n; i++) o[i] = i;
    for (int i = 1; i < r->n; i++)
        for (int k = i; k > 0 && cmp_rank_idx(&o[k - 1], &o[k], r->mean) > 0; k--) { int t = o[k]; o[k] = o[k - 1]; o[k - 1] = t; }
    return o;
}

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

static int cmd_elo(int argc, char **argv) {
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
            if (!(v = ecli_val(argc, argv, &i))) goto done;
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
            if (!(v = ecli_val(argc, argv, &i)) || ecli_int(a, v, 1, 100000000, &eo.rounds)) goto done;
        } else if (!strcmp(a, "--seed")) {
            if (!(v = ecli_val(argc, argv, &i))) goto done;
            char *end;
            errno = 0;
            eo.seed = strtoull(v, &end, 10);
            if (*end || end == v || errno) { cli_fail("--seed: '%s' (expected a non-negative integer)", v); goto done; }
        } else if (!strcmp(a, "--k")) {
            if (!(v = ecli_val(argc, argv, &i)) || ecli_num(a, v, 0, 1000, &eo.k)) goto done;
        } else if (!strcmp(a, "--init")) {
            if (!(v = ecli_val(argc, argv, &i)) || ecli_num(a, v, -1e6, 1e6, &eo.init)) goto done;
        } else if (!strcmp(a, "--tie")) {
            if (!(v = ecli_val(argc, argv, &i)) || ecli_num(a, v, 0, 1, &eo.tie)) goto done;
        } else if (!strcmp(a, "--json")) {
            if (!(json = ecli_val(argc, argv, &i))) goto done;
        } else if (!strcmp(a, "--png")) {
            if (!(png = ecli_val(argc, argv, &i))) goto done;
        } else if (!strcmp(a, "--raw-names")) {
            jo.raw_names = 1;
        } else if (!strcmp(a, "--alias")) {
            if (!(v = ecli_val(argc, argv, &i))) goto done;
            if (!strchr(v, '=')) { cli_fail("--alias: '%s' (expected FROM=TO)", v); goto done; }
            alias[jo.n_alias++] = v;
        } else if (!strcmp(a, "--no-winrate")) {
            winrate = 0;
        } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            if (!(v = ecli_val(argc, argv, &i)) || ecli_int(a, v, 1, 1024, &threads)) goto done;
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
        int *ord = by_rating(r);
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
    char **sys = NULL;
    int ns = 0;
    for (int k = 0; k < nb; k++)
        for (int i = 0; i < b[k].j.n_systems; i++) {
            int f = 0;
            for (int s = 0; s < ns; s++) if (!strcmp(sys[s], b[k].j.names[i])) f = 1;
            if (!f) { sys = gn_realloc(sys, sizeof(char *) * (size_t)(ns + 1)); sys[ns++] = b[k].j.names[i]; }
        }
    double *med = gn_malloc(sizeof(double) * (size_t)(ns ? ns : 1));
    int *rk = gn_malloc(sizeof(int) * (size_t)(ns ? ns : 1) * (size_t)nb); // (ns, nb), 0 = absent
    double *tmp = gn_malloc(sizeof(double) * (size_t)nb);
    for (int s = 0; s < ns; s++) {
        int c = 0;
        for (int k = 0; k < nb; k++) {
            rk[s * nb + k] = 0;
            for (int i = 0; i < b[k].j.n_systems; i++)
                if (!strcmp(b[k].j.names[i], sys[s])) { rk[s * nb + k] = b[k].r.rank[i]; tmp[c++] = b[k].r.rank[i]; }
        }
        med[s] = gn_median(tmp, c);
    }
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
            int *ord = by_rating(r);
            for (int q = 0; q < n; q++) {
                int i = ord[q];
                cJSON *x = cJSON_CreateObject();
                cJSON_AddStringToObject(x, "name", j->names[i]);
                cJSON_AddNumberToObject(x, "rank", r->rank[i]);
                cJSON_AddItemToObject(x, "elo", num(r->mean[i]));
                cJSON_AddItemToObject(x, "sd", num(r->sd[i]));
                cJSON *ci = cJSON_AddArrayToObject(x, "ci95_mean");
                cJSON_AddItemToArray(ci, num(r->ci_lo[i]));
                cJSON_AddItemToArray(ci, num(r->ci_hi[i]));
                cJSON *pr = cJSON_AddArrayToObject(x, "range95");
                cJSON_AddItemToArray(pr, num(r->p_lo[i]));
                cJSON_AddItemToArray(pr, num(r->p_hi[i]));
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
                for (int s = 0; s < n; s++) cJSON_AddItemToArray(row, num(b[k].winrate[(size_t)ord[q] * n + ord[s]]));
                cJSON_AddItemToArray(wm, row);
            }
            free(ord);
            cJSON_AddItemToArray(arr, o);
        }
        cJSON *mr = cJSON_AddArrayToObject(root, "median_rank");
        for (int s = 0; s < ns; s++) {
            cJSON *x = cJSON_CreateObject();
            cJSON_AddStringToObject(x, "name", sys[s]);
            cJSON_AddItemToObject(x, "median_rank", num(med[s]));
            cJSON *rr = cJSON_AddObjectToObject(x, "ranks");
            for (int k = 0; k < nb; k++) if (rk[s * nb + k]) cJSON_AddNumberToObject(rr, b[k].name, rk[s * nb + k]);
            cJSON_AddItemToArray(mr, x);
        }
        if (write_json(json, root)) { free(sys); free(med); free(rk); free(tmp); goto done; }
    }
    free(sys); free(med); free(rk); free(tmp);
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

// ============================================================================
// mmlu

static const char MMLU_HELP[] =
    "usage: guanaco eval mmlu -m MODEL [options]\n"
    "MMLU accuracy: prompts as hendrycks/qlora build them (\"... about  <subject>.\\n\\n\" header,\n"
    "k exemplars from dev/, \"Answer:\" last), prediction = the highest logit among the tokens\n"
    "tokenizer(\"A\"/\"B\"/\"C\"/\"D\")[0] at the last position. Reports accuracy per subject and the\n"
    "unweighted mean over subjects (qlora's mmlu_eval_accuracy).\n\n"
    "      --data DIR           MMLU folder with dev/ and test/ CSVs (answers 0-3) and\n"
    "                           qlora-format/ (default: mmlu/ in the default data, below)\n"
    "      --split test|val     test: DIR/test/*_test.csv (default); val: qlora's\n"
    "                           DIR/qlora-format/zero_shot_mmlu_val.json (1,531 rows); each\n"
    "                           file may be gzipped instead (name.gz)\n"
    "      --shots K            exemplars from dev/ (default 5; 0 = zero-shot)\n"
    "      --subjects a,b,...   only these subjects (names as in the file names)\n"
    "      --limit N            first N questions of each subject\n"
    "      --no-bos             do not start with BOS (default: BOS whenever the tokenizer has\n"
    "                           one, as qlora's \"{bos_token}{input}\")\n"
    "  -c, --ctx N              context tokens (default: model's, at most 4096); exemplars\n"
    "                           are dropped from the end while a prompt does not fit\n"
    "      --predictions FILE   per-item JSONL: subject, index, answer, pred, logits, n_tokens, shots\n"
    "      --json FILE          per-subject and mean accuracy as JSON ('-' = stdout)\n"
    "      --dump-prompts FILE  write the prompts as JSONL and stop (no model needed)\n";

static int cmp_cstr(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

// Subjects from DIR/<split>/*_<split>.csv (or .csv.gz), sorted, each once. malloc'd
// array of malloc'd names.
static char **list_subjects(const char *dir, const char *split, int *n) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, split);
    DIR *d = opendir(path);
    *n = 0;
    if (!d) return NULL;
    char **s = NULL;
    char suf[32];
    snprintf(suf, sizeof suf, "_%s", split);
    size_t m = strlen(suf);
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t l = gn_stem_len(e->d_name, "csv"); // name_test.csv or name_test.csv.gz
        if (l <= m || memcmp(e->d_name + l - m, suf, m)) continue;
        s = gn_realloc(s, sizeof(char *) * (size_t)(*n + 1));
        s[(*n)++] = gn_strndup(e->d_name, l - m);
    }
    closedir(d);
    if (*n) qsort(s, (size_t)*n, sizeof(char *), cmp_cstr);
    int k = 0; // a subject there both plain and gzipped counts once (the plain file is read)
    for (int i = 0; i < *n; i++) {
        if (k && !strcmp(s[k - 1], s[i])) free(s[i]);
        else s[k++] = s[i];
    }
    *n = k;
    return s;
}

static int in_list(const char *csv, const char *name) {
    size_t l = strlen(name);
    for (const char *p = csv; *p;) {
        const char *c = strchr(p, ',');
        size_t n = c ? (size_t)(c - p) : strlen(p);
        if (n == l && !memcmp(p, name, l)) return 1;
        if (!c) break;
        p = c + 1;
    }
    return 0;
}

static int cmd_mmlu(int argc, char **argv) {
    ecli_model mo = {0};
    const char *data = NULL, *split = "test", *subjects = NULL, *pred_path = NULL, *json = NULL, *dump = NULL;
    int shots = 5, limit = 0, bos = 1, rc = 2;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { printf("%s%s", MMLU_HELP, ECLI_MODEL_HELP); ecli_print_data_dirs(stdout); return 0; }
        int r = ecli_model_flag(&mo, argc, argv, &i);
        if (r < 0) return 2;
        if (r) continue;
        if (!strcmp(a, "--data")) { if (!(data = ecli_val(argc, argv, &i))) return 2; }
        else if (!strcmp(a, "--split")) {
            if (!(split = ecli_val(argc, argv, &i))) return 2;
            if (strcmp(split, "test") && strcmp(split, "val")) return cli_fail("--split: '%s' (expected test or val)", split), 2;
        }
        else if (!strcmp(a, "--shots")) { if (!(v = ecli_val(argc, argv, &i)) || ecli_int(a, v, 0, 100, &shots)) return 2; }
        else if (!strcmp(a, "--subjects")) { if (!(subjects = ecli_val(argc, argv, &i))) return 2; }
        else if (!strcmp(a, "--limit")) { if (!(v = ecli_val(argc, argv, &i)) || ecli_int(a, v, 1, 1 << 30, &limit)) return 2; }
        else if (!strcmp(a, "-c") || !strcmp(a, "--ctx")) { if (!(v = ecli_val(argc, argv, &i)) || ecli_int(a, v, 8, 1 << 20, &mo.ctx)) return 2; }
        else if (!strcmp(a, "--no-bos")) bos = 0;
        else if (!strcmp(a, "--bos")) bos = 1;
        else if (!strcmp(a, "--predictions")) { if (!(pred_path = ecli_val(argc, argv, &i))) return 2; }
        else if (!strcmp(a, "--json")) { if (!(json = ecli_val(argc, argv, &i))) return 2; }
        else if (!strcmp(a, "--dump-prompts")) { if (!(dump = ecli_val(argc, argv, &i))) return 2; }
        else return cli_fail("eval mmlu: unknown option '%s' (see --help)", a), 2;
    }
    if (!data && !(data = ecli_default_data("mmlu")))
        return cli_fail("eval mmlu: --data DIR is required (no mmlu/ in %s, $GN_DATA or %s)", GN_DATADIR, GN_SRCDATA), 2;
    // ---- load the questions and the exemplars
    gn_mmlu_set test = {0}, dev = {0};
    char **subj = NULL;
    int nsubj = 0;
    gn_model *m = NULL;
    gn_adapter *ad = NULL;
    gn_mmlu_pred *preds = NULL;
    rc = 1;
    if (!strcmp(split, "val")) {
        char path[1024];
        snprintf(path, sizeof path, "%s/qlora-format/zero_shot_mmlu_val.json", data);
        ecli_plain_or_gz(path, sizeof path);
        if (gn_mmlu_load_qlora(&test, path)) { cli_fail_lib(); goto done; }
        for (int i = 0; i < test.n; i++) { // subjects in order of appearance
            int f = 0;
            for (int s = 0; s < nsubj; s++) if (!strcmp(subj[s], test.item[i].subject)) { f = 1; break; }
            if (!f) { subj = gn_realloc(subj, sizeof(char *) * (size_t)(nsubj + 1)); subj[nsubj++] = gn_strdup(test.item[i].subject); }
        }
    } else {
        subj = list_subjects(data, "test", &nsubj);
        if (!nsubj) { cli_fail("%s/test: no *_test.csv files, gzipped or not (expected the MMLU CSVs)", data); goto done; }
    }
    if (subjects) { // keep the named ones; unknown names are an error
        for (const char *p = subjects; *p;) {
            const char *c = strchr(p, ',');
            size_t n = c ? (size_t)(c - p) : strlen(p);
            int f = 0;
            for (int s = 0; s < nsubj; s++) if (strlen(subj[s]) == n && !memcmp(subj[s], p, n)) f = 1;
            if (!f && n) { cli_fail("--subjects: no subject '%.*s' in %s (names as in %s/test/<subject>_test.csv)", (int)n, p, data, data); goto done; }
            if (!c) break;
            p = c + 1;
        }
        int k = 0;
        for (int s = 0; s < nsubj; s++) { if (in_list(subjects, subj[s])) subj[k++] = subj[s]; else free(subj[s]); }
        nsubj = k;
    }
    // per subject: [first, count) ranges into test, and dev exemplars
    int *first = gn_calloc((size_t)nsubj + 1, sizeof(int)), *count = gn_calloc((size_t)nsubj + 1, sizeof(int));
    int *dfirst = gn_calloc((size_t)nsubj + 1, sizeof(int)), *dcount = gn_calloc((size_t)nsubj + 1, sizeof(int));
    gn_mmlu_set sel = {0}; // the items to score, grouped by subject (shallow copies)
    for (int s = 0; s < nsubj; s++) {
        char path[1024];
        if (strcmp(split, "val")) {
            snprintf(path, sizeof path, "%s/test/%s_test.csv", data, subj[s]);
            ecli_plain_or_gz(path, sizeof path);
            int before = test.n;
            if (gn_mmlu_load_csv(&test, path, subj[s])) { cli_fail_lib(); goto done_ranges; }
            (void)before;
        }
        if (shots > 0) {
            snprintf(path, sizeof path, "%s/dev/%s_dev.csv", data, subj[s]);
            ecli_plain_or_gz(path, sizeof path);
            dfirst[s] = dev.n;
            if (gn_mmlu_load_csv(&dev, path, subj[s])) { cli_fail_lib(); goto done_ranges; }
            dcount[s] = dev.n - dfirst[s] < shots ? dev.n - dfirst[s] : shots;
            if (dcount[s] < shots)
                fprintf(stderr, "guanaco: warning: %s has only %d dev exemplars (asked for %d)\n", path, dcount[s], shots);
        }
    }
    for (int s = 0; s < nsubj; s++) {
        first[s] = sel.n;
        for (int i = 0; i < test.n; i++) {
            if (strcmp(test.item[i].subject, subj[s])) continue;
            if (limit && sel.n - first[s] >= limit) break;
            if (sel.n == sel.cap) { sel.cap = sel.cap ? sel.cap * 2 : 1024; sel.item = gn_realloc(sel.item, sizeof(gn_mmlu_item) * (size_t)sel.cap); }
            sel.item[sel.n++] = test.item[i];
        }
        count[s] = sel.n - first[s];
    }
    if (test.n_skipped || dev.n_skipped)
        fprintf(stderr, "guanaco: %d malformed MMLU rows skipped\n", test.n_skipped + dev.n_skipped);
    if (sel.n == 0) { cli_fail("eval mmlu: no questions selected"); goto done_ranges; }
    if (dump) {
        tbuf tb = {0};
        tb_add(&tb, "");
        for (int s = 0; s < nsubj; s++)
            for (int i = first[s]; i < first[s] + count[s]; i++) {
                char *p = gn_mmlu_prompt(dev.item + dfirst[s], dcount[s], &sel.item[i]);
                cJSON *o = cJSON_CreateObject();
                cJSON_AddStringToObject(o, "subject", subj[s]);
                cJSON_AddNumberToObject(o, "index", i - first[s]);
                cJSON_AddStringToObject(o, "prompt", p);
                cJSON_AddNumberToObject(o, "answer", sel.item[i].answer);
                tb_json_line(&tb, o);
                free(p);
            }
        rc = ecli_write_text(dump, tb.buf);
        free(tb.buf);
        goto done_ranges;
    }
    // ---- score
    if (!(m = ecli_load(&mo, &ad))) goto done_ranges;
    {
        const gn_tokenizer *tok = gn_model_tokenizer(m);
        int32_t letters[4];
        if (gn_mmlu_letter_ids(tok, letters)) { cli_fail_lib(); goto done_ranges; }
        gn_lm lm;
        gn_lm_init(&lm, m, ad, mo.ctx);
        preds = gn_calloc((size_t)sel.n, sizeof(gn_mmlu_pred));
        ecli_progress pg;
        ecli_progress_start(&pg, "mmlu");
        double t0 = gn_time_s();
        int done_n = 0, n_trunc = 0, n_fewer = 0;
        double *subj_s = gn_calloc((size_t)nsubj + 1, sizeof(double)); // wall seconds per subject
        for (int s = 0; s < nsubj; s++) {
            double ts = gn_time_s();
            for (int i = first[s]; i < first[s] + count[s]; i++) {
                if (gn_mmlu_score(&lm, letters, dev.item + dfirst[s], dcount[s], &sel.item[i], bos, &preds[i])) {
                    cli_fail("%s item %d: %s", subj[s], i - first[s], gn_last_error());
                    gn_lm_free(&lm);
                    free(subj_s);
                    goto done_ranges;
                }
                n_trunc += preds[i].truncated;
                n_fewer += preds[i].shots < dcount[s];
                ecli_progress_show(&pg, ++done_n, sel.n, subj[s]);
            }
            subj_s[s] = gn_time_s() - ts;
        }
        ecli_progress_end(&pg, done_n, sel.n);
        double wall = gn_time_s() - t0;
        int max_seq = gn_lm_max_seq(&lm);
        gn_lm_free(&lm);
        if (n_fewer) fprintf(stderr, "guanaco: %d prompts did not fit %d tokens with all exemplars; exemplars dropped\n", n_fewer, max_seq);
        if (n_trunc) fprintf(stderr, "guanaco: %d prompts were longer than the context even 0-shot; left-truncated\n", n_trunc);
        // ---- report
        int w = 7;
        for (int s = 0; s < nsubj; s++) if ((int)strlen(subj[s]) > w) w = (int)strlen(subj[s]);
        printf("MMLU %s split, %d-shot, %d subjects, %d questions (%s)\n", split, shots, nsubj, sel.n,
               bos ? "BOS first" : "no BOS");
        printf("%-*s  %6s  %7s  %8s\n", w, "subject", "n", "correct", "accuracy");
        double sum = 0;
        int tot_c = 0, ns_used = 0;
        cJSON *root = cJSON_CreateObject(), *js = cJSON_CreateObject();
        tbuf tb = {0};
        tb_add(&tb, "");
        for (int s = 0; s < nsubj; s++) {
            int c = 0;
            for (int i = first[s]; i < first[s] + count[s]; i++) {
                c += preds[i].pred == sel.item[i].answer;
                if (pred_path) {
                    cJSON *o = cJSON_CreateObject();
                    cJSON_AddStringToObject(o, "subject", subj[s]);
                    cJSON_AddNumberToObject(o, "index", i - first[s]);
                    cJSON_AddNumberToObject(o, "answer", sel.item[i].answer);
                    cJSON_AddNumberToObject(o, "pred", preds[i].pred);
                    cJSON *lg = cJSON_AddArrayToObject(o, "logits");
                    for (int k = 0; k < 4; k++) cJSON_AddItemToArray(lg, cJSON_CreateNumber(preds[i].logit[k]));
                    cJSON_AddNumberToObject(o, "n_tokens", preds[i].n_tokens);
                    cJSON_AddNumberToObject(o, "shots", preds[i].shots);
                    tb_json_line(&tb, o);
                }
            }
            if (!count[s]) continue;
            double acc = (double)c / count[s];
            sum += acc;
            tot_c += c;
            ns_used++;
            printf("%-*s  %6d  %7d  %8.4f\n", w, subj[s], count[s], c, acc);
            cJSON *o = cJSON_CreateObject();
            cJSON_AddNumberToObject(o, "n", count[s]);
            cJSON_AddNumberToObject(o, "correct", c);
            cJSON_AddNumberToObject(o, "accuracy", acc);
            cJSON_AddNumberToObject(o, "wall_s", subj_s[s]);
            cJSON_AddItemToObject(js, subj[s], o);
        }
        double mean = ns_used ? sum / ns_used : 0, micro = (double)tot_c / sel.n;
        char wt[32];
        ecli_fmt_time(wt, sizeof wt, wall);
        printf("%-*s  %6d  %7d  %8.4f\n", w, "MEAN (unweighted over subjects)", sel.n, tot_c, mean);
        printf("accuracy over all questions: %.4f; wall time %s (%.1f questions/s, %d threads)\n", micro, wt,
               sel.n / (wall > 0 ? wall : 1), gn_get_threads());
        cJSON_AddStringToObject(root, "split", split);
        cJSON_AddNumberToObject(root, "shots", shots);
        cJSON_AddNumberToObject(root, "questions", sel.n);
        cJSON_AddNumberToObject(root, "mean_accuracy", mean);
        cJSON_AddNumberToObject(root, "micro_accuracy", micro);
        cJSON_AddNumberToObject(root, "wall_s", wall);
        cJSON_AddItemToObject(root, "subjects", js);
        rc = 0;
        if (pred_path && ecli_write_text(pred_path, tb.buf)) rc = 1;
        free(tb.buf);
        if (json) { if (write_json(json, root)) rc = 1; }
        else cJSON_Delete(root);
        free(subj_s);
    }
done_ranges:
    free(first); free(count); free(dfirst); free(dcount);
    free(sel.item);
done:
    free(preds);
    for (int s = 0; s < nsubj; s++) free(subj[s]);
    free(subj);
    gn_mmlu_set_free(&test);
    gn_mmlu_set_free(&dev);
    gn_adapter_free(ad);
    if (m) gn_model_free(m);
    return rc;
}

// ============================================================================
// crows

static const char CROWS_HELP[] =
    "usage: guanaco eval crows -m MODEL [options]\n"
    "CrowS-Pairs: for each pair, the summed log-likelihood of sent_more and of sent_less (every\n"
    "token after BOS); the score is the share of pairs where the model prefers the more\n"
    "stereotypical sentence (50 = no preference), per bias type and overall.\n\n"
    "      --data CSV           crows_pairs_anonymized.csv[.gz] (default: crows-pairs/ in the\n"
    "                           default data, below)\n"
    "      --limit N            first N pairs\n"
    "      --no-bos             do not start with BOS (then a sentence's first token is unscored)\n"
    "  -c, --ctx N              context tokens (default: model's, at most 4096)\n"
    "      --predictions FILE   per-pair JSONL: line, bias_type, ll_more, ll_less, n_more, n_less\n"
    "      --json FILE          the table as JSON ('-' = stdout)\n";

static int cmd_crows(int argc, char **argv) {
    ecli_model mo = {0};
    const char *data = NULL, *pred_path = NULL, *json = NULL;
    int limit = 0, bos = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { printf("%s%s", CROWS_HELP, ECLI_MODEL_HELP); ecli_print_data_dirs(stdout); return 0; }
        int r = ecli_model_flag(&mo, argc, argv, &i);
        if (r < 0) return 2;
        if (r) continue;
        if (!strcmp(a, "--data")) { if (!(data = ecli_val(argc, argv, &i))) return 2; }
        else if (!strcmp(a, "--limit")) { if (!(v = ecli_val(argc, argv, &i)) || ecli_int(a, v, 1, 1 << 30, &limit)) return 2; }
        else if (!strcmp(a, "-c") || !strcmp(a, "--ctx")) { if (!(v = ecli_val(argc, argv, &i)) || ecli_int(a, v, 8, 1 << 20, &mo.ctx)) return 2; }
        else if (!strcmp(a, "--no-bos")) bos = 0;
        else if (!strcmp(a, "--bos")) bos = 1;
        else if (!strcmp(a, "--predictions")) { if (!(pred_path = ecli_val(argc, argv, &i))) return 2; }
        else if (!strcmp(a, "--json")) { if (!(json = ecli_val(argc, argv, &i))) return 2; }
        else return cli_fail("eval crows: unknown option '%s' (see --help)", a), 2;
    }
    if (!data && !(data = ecli_default_data("crows-pairs/crows_pairs_anonymized.csv")))
        return cli_fail("eval crows: --data CSV is required (no crows-pairs/ in %s, $GN_DATA or %s)", GN_DATADIR, GN_SRCDATA), 2;
    gn_crows_pair *p;
    int n, skipped;
    if (gn_crows_load(data, &p, &n, &skipped)) return cli_fail_lib();
    if (skipped) fprintf(stderr, "guanaco: %s: %d malformed rows skipped\n", data, skipped);
    int n_loaded = n;
    if (limit && limit < n) n = limit;
    gn_adapter *ad = NULL;
    gn_model *m = ecli_load(&mo, &ad);
    if (!m) { gn_crows_free(p, n_loaded); return 1; }
    int rc = 1;
    gn_lm lm;
    gn_lm_init(&lm, m, ad, mo.ctx);
    // bias types in order of first appearance, and counts
    char **types = NULL;
    int nt = 0;
    int *tn = NULL, *tpref = NULL, *tsn = NULL, *tsp = NULL; // pairs, preferring, stereo pairs, stereo preferring
    tbuf tb = {0};
    tb_add(&tb, "");
    ecli_progress pg;
    ecli_progress_start(&pg, "crows");
    int pref_all = 0;
    for (int i = 0; i < n; i++) {
        int t = 0;
        while (t < nt && strcmp(types[t], p[i].bias)) t++;
        if (t == nt) {
            types = gn_realloc(types, sizeof(char *) * (size_t)(nt + 1));
            tn = gn_realloc(tn, sizeof(int) * (size_t)(nt + 1));
            tpref = gn_realloc(tpref, sizeof(int) * (size_t)(nt + 1));
            tsn = gn_realloc(tsn, sizeof(int) * (size_t)(nt + 1));
            tsp = gn_realloc(tsp, sizeof(int) * (size_t)(nt + 1));
            types[nt] = p[i].bias;
            tn[nt] = tpref[nt] = tsn[nt] = tsp[nt] = 0;
            nt++;
        }
        double ll[2];
        int cnt[2];
        const char *sent[2] = {p[i].more, p[i].less};
        for (int k = 0; k < 2; k++) {
            int32_t *ids;
            int nid;
            if (gn_lm_encode(&lm, sent[k], bos, &ids, &nid) || gn_lm_loglik(&lm, ids, nid, 1, &ll[k], &cnt[k])) {
                cli_fail("%s:%d: %s", data, p[i].line, gn_last_error());
                goto done;
            }
            free(ids);
        }
        int pref = ll[0] > ll[1];
        tn[t]++;
        tpref[t] += pref;
        if (p[i].stereo) { tsn[t]++; tsp[t] += pref; }
        pref_all += pref;
        if (pred_path) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddNumberToObject(o, "line", p[i].line);
            cJSON_AddNumberToObject(o, "index", i);
            cJSON_AddStringToObject(o, "bias_type", p[i].bias);
            cJSON_AddBoolToObject(o, "stereo", p[i].stereo);
            cJSON_AddNumberToObject(o, "ll_more", ll[0]);
            cJSON_AddNumberToObject(o, "ll_less", ll[1]);
            cJSON_AddNumberToObject(o, "n_more", cnt[0]);
            cJSON_AddNumberToObject(o, "n_less", cnt[1]);
            tb_json_line(&tb, o);
        }
        ecli_progress_show(&pg, i + 1, n, NULL);
    }
    ecli_progress_end(&pg, n, n);
    printf("CrowS-Pairs: %d pairs; %% of pairs where log p(sent_more) > log p(sent_less) (higher = more biased, 50 = none)\n", n);
    printf("%-20s  %6s  %8s  %14s  %14s\n", "bias type", "pairs", "score %", "stereo pairs %", "anti pairs %");
    cJSON *root = cJSON_CreateObject(), *jt = cJSON_AddObjectToObject(root, "bias_types");
    for (int t = 0; t < nt; t++) {
        int an = tn[t] - tsn[t], ap = tpref[t] - tsp[t];
        printf("%-20s  %6d  %8.2f  %14.2f  %14.2f\n", types[t], tn[t], 100.0 * tpref[t] / tn[t],
               tsn[t] ? 100.0 * tsp[t] / tsn[t] : NAN, an ? 100.0 * ap / an : NAN);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "pairs", tn[t]);
        cJSON_AddNumberToObject(o, "score", 100.0 * tpref[t] / tn[t]);
        cJSON_AddItemToObject(o, "stereo_score", num(tsn[t] ? 100.0 * tsp[t] / tsn[t] : NAN));
        cJSON_AddItemToObject(o, "antistereo_score", num(an ? 100.0 * ap / an : NAN));
        cJSON_AddItemToObject(jt, types[t], o);
    }
    printf("%-20s  %6d  %8.2f\n", "overall", n, n ? 100.0 * pref_all / n : NAN);
    cJSON_AddNumberToObject(root, "pairs", n);
    cJSON_AddItemToObject(root, "overall", num(n ? 100.0 * pref_all / n : NAN));
    cJSON_AddNumberToObject(root, "skipped_rows", skipped);
    rc = 0;
    if (pred_path && ecli_write_text(pred_path, tb.buf)) rc = 1;
    if (json) { if (write_json(json, root)) rc = 1; }
    else cJSON_Delete(root);
done:
    free(tb.buf);
    free(types); free(tn); free(tpref); free(tsn); free(tsp);
    gn_lm_free(&lm);
    gn_crows_free(p, n_loaded);
    gn_adapter_free(ad);
    gn_model_free(m);
    return rc;
}

// ============================================================================
// ppl

static const char PPL_HELP[] =
    "usage: guanaco eval ppl -m MODEL FILE [options]\n"
    "Perplexity with HF's strided sliding window: windows of --ctx tokens moving by --stride;\n"
    "each window scores only the tokens no earlier window scored (so each token after the first\n"
    "has at least ctx-stride tokens of context). FILE is plain text (one document) or JSON lines\n"
    "(.jsonl/.json, gzipped or not: one document per row, its --field). PPL = exp(total NLL / tokens\n"
    "scored). Any FILE ending in .gz is read gunzipped.\n\n"
    "  -f, --file FILE          the text (or give it as the positional argument)\n"
    "  -c, --ctx N              window length (default 512)\n"
    "      --stride N           window step (default ctx/2)\n"
    "      --field NAME         JSONL field with the text (default \"text\")\n"
    "      --limit N            first N documents\n"
    "      --bos / --no-bos     start each document with BOS (default: as the tokenizer does)\n"
    "      --json FILE          results as JSON ('-' = stdout)\n";

static int cmd_ppl(int argc, char **argv) {
    ecli_model mo = {0};
    const char *file = NULL, *field = "text", *json = NULL;
    int ctx = 512, stride = 0, limit = 0, bos = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { printf("%s%s", PPL_HELP, ECLI_MODEL_HELP); return 0; }
        int r = ecli_model_flag(&mo, argc, argv, &i);
        if (r < 0) return 2;
        if (r) continue;
        if (!strcmp(a, "-f") || !strcmp(a, "--file")) { if (!(file = ecli_val(argc, argv, &i))) return 2; }
        else if (!strcmp(a, "-c") || !strcmp(a, "--ctx")) { if (!(v = ecli_val(argc, argv, &i)) || ecli_int(a, v, 2, 1 << 20, &ctx)) return 2; }
        else if (!strcmp(a, "--stride")) { if (!(v = ecli_val(argc, argv, &i)) || ecli_int(a, v, 1, 1 << 20, &stride)) return 2; }
        else if (!strcmp(a, "--field")) { if (!(field = ecli_val(argc, argv, &i))) return 2; }
        else if (!strcmp(a, "--limit")) { if (!(v = ecli_val(argc, argv, &i)) || ecli_int(a, v, 1, 1 << 30, &limit)) return 2; }
        else if (!strcmp(a, "--bos")) bos = 1;
        else if (!strcmp(a, "--no-bos")) bos = 0;
        else if (!strcmp(a, "--json")) { if (!(json = ecli_val(argc, argv, &i))) return 2; }
        else if (a[0] == '-' && a[1]) return cli_fail("eval ppl: unknown option '%s' (see --help)", a), 2;
        else if (!file) file = a;
        else return cli_fail("eval ppl: one input file only ('%s' and '%s')", file, a), 2;
    }
    if (!file) return cli_fail("eval ppl: give the text file (see --help)"), 2;
    if (!stride) stride = ctx / 2 > 0 ? ctx / 2 : 1;
    if (stride > ctx) return cli_fail("eval ppl: --stride %d exceeds --ctx %d", stride, ctx), 2;
    char *text;
    size_t len;
    if (gn_read_file(file, &text, &len)) return cli_fail_lib();
    // documents
    char **docs = NULL;
    int nd = 0, bad = 0;
    int jsonl = gn_stem_len(file, "jsonl") || gn_stem_len(file, "json"); // also .jsonl.gz, .json.gz
    if (jsonl) {
        char *p = text, *end = text + len;
        int line = 0;
        while (p < end && (!limit || nd < limit)) {
            char *nl = memchr(p, '\n', (size_t)(end - p));
            char *le = nl ? nl : end;
            line++;
            char *q = p;
            while (q < le && (*q == ' ' || *q == '\r' || *q == '\t')) q++;
            if (q < le) {
                cJSON *o = cJSON_ParseWithLength(p, (size_t)(le - p));
                const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, field);
                if (cJSON_IsString(t)) {
                    docs = gn_realloc(docs, sizeof(char *) * (size_t)(nd + 1));
                    docs[nd++] = gn_strdup(t->valuestring);
                } else if (bad++ < 5) {
                    fprintf(stderr, "guanaco: %s:%d: skipped: %s\n", file, line, o ? "no string field" : "not JSON");
                }
                cJSON_Delete(o);
            }
            p = le + 1;
        }
        if (bad) fprintf(stderr, "guanaco: %s: %d rows skipped (no \"%s\" string)\n", file, bad, field);
    } else {
        docs = gn_malloc(sizeof(char *));
        docs[nd++] = gn_strdup(text);
    }
    free(text);
    int rc = 1;
    gn_adapter *ad = NULL;
    gn_model *m = NULL;
    if (nd == 0) { cli_fail("%s: no documents", file); goto out; }
    if (!(m = ecli_load(&mo, &ad))) goto out;
    {
        const gn_tokenizer *tok = gn_model_tokenizer(m);
        if (!tok) { cli_fail("%s: the model has no tokenizer", mo.model); goto out; }
        if (bos < 0) bos = gn_tokenizer_add_bos(tok);
        gn_lm lm;
        gn_lm_init(&lm, m, ad, ctx);
        gn_ppl_opts po = {ctx, stride};
        gn_ppl_acc acc = {0};
        ecli_progress pg;
        ecli_progress_start(&pg, "ppl");
        double t0 = gn_time_s();
        for (int d = 0; d < nd; d++) {
            int32_t *ids;
            int n;
            if (gn_lm_encode(&lm, docs[d], bos, &ids, &n) || gn_ppl_doc(&lm, ids, n, &po, &acc)) {
                cli_fail("%s: document %d: %s", file, d + 1, gn_last_error());
                gn_lm_free(&lm);
                goto out;
            }
            free(ids);
            ecli_progress_show(&pg, d + 1, nd, NULL);
        }
        ecli_progress_end(&pg, nd, nd);
        gn_lm_free(&lm);
        double wall = gn_time_s() - t0;
        double nll = acc.n_scored ? acc.nll / (double)acc.n_scored : NAN;
        printf("perplexity %.4f  (mean NLL %.6f nats over %lld tokens scored; %lld tokens, %d documents, %d windows;"
               " ctx %d, stride %d, %s; %.1f s)\n", exp(nll), nll, acc.n_scored, acc.n_tokens, acc.n_docs,
               acc.n_windows, ctx, stride, bos ? "BOS first" : "no BOS", wall);
        rc = 0;
        if (json) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddItemToObject(o, "ppl", num(exp(nll)));
            cJSON_AddItemToObject(o, "nll", num(nll));
            cJSON_AddNumberToObject(o, "nll_sum", acc.nll);
            cJSON_AddNumberToObject(o, "tokens_scored", (double)acc.n_scored);
            cJSON_AddNumberToObject(o, "tokens", (double)acc.n_tokens);
            cJSON_AddNumberToObject(o, "documents", acc.n_docs);
            cJSON_AddNumberToObject(o, "windows", acc.n_windows);
            cJSON_AddNumberToObject(o, "ctx", ctx);
            cJSON_AddNumberToObject(o, "stride", stride);
            cJSON_AddBoolToObject(o, "bos", bos);
            cJSON_AddNumberToObject(o, "wall_s", wall);
            if (write_json(json, o)) rc = 1;
        }
    }
out:
    for (int d = 0; d < nd; d++) free(docs[d]);
    free(docs);
    gn_adapter_free(ad);
    if (m) gn_model_free(m);
    return rc;
}

// ============================================================================
// judge

static const char JUDGE_HELP[] =
    "usage: guanaco eval judge --a GENS_A.jsonl --b GENS_B.jsonl --judge-prompt TEMPLATES.jsonl\n"
    "                          (--judge-url URL | -m LOCAL_JUDGE_MODEL) -o OUT_DIR [options]\n"
    "Pairwise judging as in the paper: the three-class prompt (qlora eval/prompts/\n"
    "*_prompt_threeclass.jsonl; the template is picked by the question's category), both\n"
    "presentation orders, verdict = the last line's 1/2/3 (else -1). Writes\n"
    "OUT_DIR/<A>-vs-<B>-judge-reviewer-threeclass.jsonl and <B>-vs-<A>-..., in the release's\n"
    "format plus model1/model2, which `guanaco eval elo OUT_DIR` reads.\n\n"
    "      --a FILE, --b FILE   generations (release format: question_id, text, generation; or\n"
    "                           FastChat answers: question_id, text); joined on question_id\n"
    "      --name-a N, --name-b N  system names (default: the file names without .jsonl)\n"
    "      --questions FILE     question texts by question_id (default: the generations' text)\n"
    "      --judge-prompt FILE  judge templates (required)\n"
    "      --judge-url URL      OpenAI-compatible endpoint (\".../v1\"; guanaco serve is one)\n"
    "      --judge-model NAME   model name sent to the endpoint (default gpt-4)\n"
    "      --judge-key-env VAR  environment variable holding the API key (default OPENAI_API_KEY;\n"
    "                           unset = no Authorization header)\n"
    "      --judge-temp T       temperature (default 0.2, the release's reviewer setting)\n"
    "      --judge-max-tokens N (default 1024)\n"
    "      --one-order          only A as Assistant 1 (default: both orders)\n"
    "      --limit N            first N shared questions\n"
    "      --timeout S          seconds per request (default 120); --retries N (default 3)\n"
    "      --seed S             local judge sampling seed (default 42)\n"
    "  -o, --output DIR         folder for the judgment files (created)\n"
    "With -m, the judge is a local model through the library (its own chat template, or\n"
    "--template NAME as in `guanaco chat`).\n";

static char *base_name_noext(const char *path) {
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    char *s = gn_strdup(b);
    size_t n = gn_stem_len(s, "jsonl");
    if (!n) n = gn_stem_len(s, "json");
    if (n) s[n] = 0;
    return s;
}

typedef struct {
    gn_model *m;
    gn_adapter *ad;
    gn_chat_format fmt;
    gn_sampler_opts so;
} local_judge;

static gn_status judge_local(local_judge *lj, const char *system, const char *user, int max_tokens, char **reply) {
    gn_chat_msg msgs[2] = {{"system", system}, {"user", user}};
    const char *const *stops;
    int nstops;
    char *text = gn_chat_render(lj->fmt, msgs, 2, &stops, &nstops);
    const gn_tokenizer *tok = gn_model_tokenizer(lj->m);
    int32_t *ids;
    int n;
    gn_status st = gn_tokenizer_encode(tok, text, strlen(text), GN_ENC_SPECIAL | (gn_tokenizer_add_bos(tok) ? GN_ENC_BOS : 0),
                                       &ids, &n);
    free(text);
    if (st) return st;
    int need = n + max_tokens + 1;
    gn_session *s = gn_session_new(lj->m, need > 4096 ? need : 0);
    if (lj->ad) gn_session_set_adapter(s, lj->ad);
    gn_sampler *smp = gn_sampler_new(&lj->so, gn_model_config(lj->m)->vocab_size);
    lj->so.seed++;
    gn_gen_opts go = {.max_new_tokens = max_tokens, .stop = stops, .n_stop = nstops};
    st = gn_generate(s, smp, ids, n, &go, NULL, NULL, reply, NULL);
    gn_sampler_free(smp);
    gn_session_free(s);
    free(ids);
    return st;
}

static int cmd_judge(int argc, char **argv) {
    ecli_model mo = {0};
    const char *fa = NULL, *fb = NULL, *na = NULL, *nbn = NULL, *qfile = NULL, *tfile = NULL, *url = NULL;
    const char *jmodel = "gpt-4", *keyenv = "OPENAI_API_KEY", *outdir = NULL;
    double temp = 0.2;
    int max_tokens = 1024, one_order = 0, limit = 0, timeout = 120, retries = 3, seed = 42;
    gn_chat_format fmt = GN_CHAT_AUTO;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { printf("%s%s", JUDGE_HELP, ECLI_MODEL_HELP); return 0; }
        int r = ecli_model_flag(&mo, argc, argv, &i);
        if (r < 0) return 2;
        if (r) continue;
        if (!strcmp(a, "--a")) { if (!(fa = ecli_val(argc, argv, &i))) return 2; }
        else if (!strcmp(a, "--b")) { if (!(fb = ecli_val(argc, argv, &i))) return 2; }
        else if (!strcmp(a, "--name-a")) { if (!(na = ecli_val(argc, argv, &i))) return 2; }
        else if (!strcmp(a, "--name-b")) { if (!(nbn = ecli_val(argc, argv, &i))) return 2; }
        else if (!strcmp(a, "--questions")) { if (!(qfile = ecli_val(argc, argv, &i))) return 2; }
        else if (!strcmp(a, "--judge-prompt")) { if (!(tfile = ecli_val(argc, argv, &i))) return 2; }
        else if (!strcmp(a, "--judge-url")) { if (!(url = ecli_val(argc, argv, &i))) return 2; }
        else if (!strcmp(a, "--judge-model")) { if (!(jmodel = ecli_val(argc, argv, &i))) return 2; }
        else if (!strcmp(a, "--judge-key-env")) { if (!(keyenv = ecli_val(argc, argv, &i))) return 2; }
        else if (!strcmp(a, "--judge-temp")) { if (!(v = ecli_val(argc, argv, &i)) || ecli_num(a, v, 0, 2, &temp)) return 2; }
        else if (!strcmp(a, "--judge-max-tokens")) { if (!(v = ecli_val(argc, argv, &i)) || ecli_int(a, v, 1, 1 << 20, &max_tokens)) return 2; }
        else if (!strcmp(a, "--one-order")) one_order = 1;
        else if (!strcmp(a, "--limit")) { if (!(v = ecli_val(argc, argv, &i)) || ecli_int(a, v, 1, 1 << 30, &limit)) return 2; }
        else if (!strcmp(a, "--timeout")) { if (!(v = ecli_val(argc, argv, &i)) || ecli_int(a, v, 1, 86400, &timeout)) return 2; }
        else if (!strcmp(a, "--retries")) { if (!(v = ecli_val(argc, argv, &i)) || ecli_int(a, v, 0, 100, &retries)) return 2; }
        else if (!strcmp(a, "--seed")) { if (!(v = ecli_val(argc, argv, &i)) || ecli_int(a, v, 0, 1 << 30, &seed)) return 2; }
        else if (!strcmp(a, "-o") || !strcmp(a, "--output")) { if (!(outdir = ecli_val(argc, argv, &i))) return 2; }
        else if (!strcmp(a, "--template")) {
            if (!(v = ecli_val(argc, argv, &i))) return 2;
            if (gn_chat_format_parse(v, &fmt)) return cli_fail_lib(), 2;
        }
        else return cli_fail("eval judge: unknown option '%s' (see --help)", a), 2;
    }
    if (!fa || !fb) return cli_fail("eval judge: --a and --b (generation files) are required"), 2;
    if (!tfile) return cli_fail("eval judge: --judge-prompt FILE is required (e.g. qlora-eval/prompts/vicuna_prompt_threeclass.jsonl)"), 2;
    if (!outdir) return cli_fail("eval judge: -o OUT_DIR is required"), 2;
    if (!!url == !!mo.model) return cli_fail("eval judge: give exactly one judge: --judge-url URL or -m MODEL"), 2;
    if (url && !gn_http_available())
        return cli_fail("eval judge: this build has no HTTP client. HINT: install libcurl4-openssl-dev and rebuild, or use -m MODEL"), 1;
    int rc = 1;
    gn_judge_template *tp = NULL;
    int ntp = 0;
    gn_gen_row *ga = NULL, *gb = NULL, *gq = NULL;
    int nga = 0, ngb = 0, ngq = 0, sk;
    char *name_a = na ? gn_strdup(na) : base_name_noext(fa), *name_b = nbn ? gn_strdup(nbn) : base_name_noext(fb);
    local_judge lj = {0};
    FILE *out[2] = {NULL, NULL};
    char *opath[2] = {NULL, NULL}, *tpath[2] = {NULL, NULL};
    if (gn_judge_templates_load(tfile, &tp, &ntp)) { cli_fail_lib(); goto done; }
    if (gn_gen_load(fa, &ga, &nga, &sk)) { cli_fail_lib(); goto done; }
    if (sk) fprintf(stderr, "guanaco: %s: %d rows skipped\n", fa, sk);
    if (gn_gen_load(fb, &gb, &ngb, &sk)) { cli_fail_lib(); goto done; }
    if (sk) fprintf(stderr, "guanaco: %s: %d rows skipped\n", fb, sk);
    if (qfile) {
        if (gn_gen_load(qfile, &gq, &ngq, &sk)) { cli_fail_lib(); goto done; }
        for (int i = 0; i < ngq; i++) { // a questions file's "text" is the question
            if (!gq[i].question) { gq[i].question = gq[i].answer; gq[i].answer = NULL; }
        }
    }
    if (mo.model) {
        if (!(lj.m = ecli_load(&mo, &lj.ad))) goto done;
        if (!gn_model_tokenizer(lj.m)) { cli_fail("%s: the judge model has no tokenizer", mo.model); goto done; }
        lj.fmt = gn_chat_format_for(gn_model_tokenizer(lj.m), fmt);
        gn_sampler_defaults(&lj.so);
        lj.so.temperature = (float)temp;
        lj.so.top_p = 1.0f;
        lj.so.seed = (uint64_t)seed;
    }
    if (mkdir(outdir, 0755) != 0 && errno != EEXIST) { cli_fail("%s: cannot create folder: %s", outdir, strerror(errno)); goto done; }
    // pairs of rows sharing a question_id, in A's order
    int *pa = gn_malloc(sizeof(int) * (size_t)(nga + 1)), *pb = gn_malloc(sizeof(int) * (size_t)(nga + 1)), np = 0;
    for (int i = 0; i < nga && (!limit || np < limit); i++)
        for (int k = 0; k < ngb; k++)
            if (!strcmp(ga[i].qid, gb[k].qid)) { pa[np] = i; pb[np] = k; np++; break; }
    if (np == 0) { free(pa); free(pb); cli_fail("eval judge: %s and %s share no question_id", fa, fb); goto done; }
    if (np < nga || np < ngb)
        fprintf(stderr, "guanaco: judging %d shared questions (%s has %d rows, %s has %d)\n", np, fa, nga, fb, ngb);
    int norders = one_order ? 1 : 2;
    for (int o = 0; o < norders; o++) {
        const char *s1 = o ? name_b : name_a, *s2 = o ? name_a : name_b;
        size_t n = strlen(outdir) + strlen(s1) + strlen(s2) + 64;
        opath[o] = gn_malloc(n);
        snprintf(opath[o], n, "%s/%s-vs-%s-judge-reviewer-threeclass.jsonl", outdir, s1, s2);
        tpath[o] = gn_malloc(n + 16);
        snprintf(tpath[o], n + 16, "%s.partial", opath[o]);
        if (!(out[o] = fopen(tpath[o], "w"))) { free(pa); free(pb); cli_fail("%s: cannot create: %s", tpath[o], strerror(errno)); goto done; }
    }
    const char *key = getenv(keyenv);
    ecli_progress pg;
    ecli_progress_start(&pg, "judge");
    int counts[2][4] = {{0}};
    for (int q = 0; q < np; q++) {
        const gn_gen_row *ra = &ga[pa[q]], *rb = &gb[pb[q]];
        const char *question = NULL, *category = ra->category ? ra->category : rb->category;
        for (int k = 0; k < ngq && !question; k++)
            if (!strcmp(gq[k].qid, ra->qid)) { question = gq[k].question; if (!category) category = gq[k].category; }
        if (!question) question = ra->question ? ra->question : rb->question;
        if (!question) {
            free(pa); free(pb);
            cli_fail("eval judge: no question text for question_id %s. HINT: pass --questions (e.g. "
                     "qlora-eval/prompts/vicuna_questions.jsonl)", ra->qid);
            goto done;
        }
        const gn_judge_template *t = gn_judge_template_for(tp, ntp, category);
        for (int o = 0; o < norders; o++) {
            const gn_gen_row *x1 = o ? rb : ra, *x2 = o ? ra : rb;
            char *content = gn_judge_render(t, question, x1->answer, x2->answer);
            char *review = NULL;
            gn_status st = url ? gn_http_chat(url, key, jmodel, t->system, content, temp, max_tokens, timeout, retries, &review)
                               : judge_local(&lj, t->system, content, max_tokens, &review);
            free(content);
            if (st) {
                free(pa); free(pb);
                cli_fail("question_id %s: %s (judgments so far are in %s)", ra->qid, gn_last_error(), tpath[o]);
                goto done;
            }
            int score = gn_judge_parse_verdict(review);
            counts[o][score < 0 ? 0 : score]++;
            cJSON *j = cJSON_CreateObject();
            char rid[160];
            snprintf(rid, sizeof rid, "%s-%d", ra->qid, o + 1);
            cJSON_AddStringToObject(j, "review_id", rid);
            if (ra->qid_is_num) cJSON_AddNumberToObject(j, "question_id", strtod(ra->qid, NULL));
            else cJSON_AddStringToObject(j, "question_id", ra->qid);
            cJSON_AddStringToObject(j, "answer1_id", o ? name_b : name_a);
            cJSON_AddStringToObject(j, "answer2_id", o ? name_a : name_b);
            cJSON_AddStringToObject(j, "reviewer_id", url ? jmodel : mo.model);
            cJSON *md = cJSON_AddObjectToObject(j, "metadata");
            cJSON_AddNumberToObject(md, "temperature", temp);
            cJSON_AddNumberToObject(md, "max_tokens", max_tokens);
            cJSON_AddStringToObject(j, "text", review);
            cJSON_AddNumberToObject(j, "score", score);
            cJSON_AddStringToObject(j, "model1", o ? name_b : name_a);
            cJSON_AddStringToObject(j, "model2", o ? name_a : name_b);
            char *line = cJSON_PrintUnformatted(j);
            cJSON_Delete(j);
            fprintf(out[o], "%s\n", line);
            fflush(out[o]);
            cJSON_free(line);
            free(review);
        }
        ecli_progress_show(&pg, q + 1, np, NULL);
    }
    ecli_progress_end(&pg, np, np);
    free(pa); free(pb);
    for (int o = 0; o < norders; o++) {
        int bad = fclose(out[o]) != 0;
        out[o] = NULL;
        if (bad || rename(tpath[o], opath[o]) != 0) { cli_fail("%s: cannot write: %s", opath[o], strerror(errno)); goto done; }
        printf("%s: %d judgments: %d × \"1\" (%s), %d × \"2\" (%s), %d × \"3\" tie, %d unparsed (-1)\n", opath[o], np,
               counts[o][1], o ? name_b : name_a, counts[o][2], o ? name_a : name_b, counts[o][3], counts[o][0]);
    }
    rc = 0;
done:
    for (int o = 0; o < 2; o++) { if (out[o]) fclose(out[o]); free(opath[o]); free(tpath[o]); }
    gn_judge_templates_free(tp, ntp);
    gn_gen_free(ga, nga);
    gn_gen_free(gb, ngb);
    gn_gen_free(gq, ngq);
    free(name_a); free(name_b);
    gn_adapter_free(lj.ad);
    if (lj.m) gn_model_free(lj.m);
    return rc;
}

// ============================================================================

int cmd_eval(int argc, char **argv) {
    static const char USAGE[] =
        "usage: guanaco eval SUBCOMMAND [options]   (guanaco eval SUBCOMMAND --help)\n\n"
        "  elo     Elo ratings, intervals, ranks and win rates from pairwise judgments\n"
        "  judge   pairwise judgments of two generation sets by a judge model (HTTP or local)\n"
        "  mmlu    MMLU accuracy (5-shot or 0-shot), per subject and the mean over subjects\n"
        "  crows   CrowS-Pairs stereotype preference per bias type\n"
        "  ppl     perplexity of a text or JSONL file with a sliding window\n"
        "  generate  = guanaco generate --prompts FILE.jsonl -o OUT.jsonl (generations for judge)\n";
    if (argc < 2) { fputs(USAGE, stderr); return 2; }
    const char *s = argv[1];
    if (!strcmp(s, "-h") || !strcmp(s, "--help") || !strcmp(s, "help")) { fputs(USAGE, stdout); return 0; }
    if (!strcmp(s, "elo")) return cmd_elo(argc - 1, argv + 1);
    if (!strcmp(s, "judge")) return cmd_judge(argc - 1, argv + 1);
    if (!strcmp(s, "mmlu")) return cmd_mmlu(argc - 1, argv + 1);
    if (!strcmp(s, "crows")) return cmd_crows(argc - 1, argv + 1);
    if (!strcmp(s, "ppl")) return cmd_ppl(argc - 1, argv + 1);
    if (!strcmp(s, "generate")) return cli_generate_prompts(argc - 1, argv + 1);
    cli_fail("eval: unknown subcommand '%s'", s);
    fputs(USAGE, stderr);
    return 2;
}
