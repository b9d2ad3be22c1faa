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
 * The math lives in src/eval/; each subcommand is a file of its own
 * (cmd_eval_<name>.c) that parses flags, prints tables (stdout), progress (stderr),
 * and writes --json / --predictions / --png files. This file dispatches and holds
 * what they share (eval_cli.h).
 */
#include "eval_cli.h"

#include <cjson/cJSON.h> // --json output
#include <math.h>        // isfinite
#include <stdio.h>       // printf
#include <stdlib.h>      // getenv, free
#include <string.h>      // strcmp
#include <sys/stat.h>    // stat

// ----------------------------------------------------------------------------
// shared helpers (eval_cli.h)

static int exists(const char *p) { struct stat st; return stat(p, &st) == 0; }


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

int ecli_write_json(const char *path, cJSON *j) {
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

cJSON *ecli_json_num(double v) { return isfinite(v) ? cJSON_CreateNumber(v) : cJSON_CreateNull(); }

void ecli_tb_json_line(gn_buf *b, cJSON *o) { // takes ownership
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    gn_buf_puts(b, s);
    gn_buf_putc(b, '\n');
    cJSON_free(s);
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
    if (!strcmp(s, "elo")) return cmd_eval_elo(argc - 1, argv + 1);
    if (!strcmp(s, "judge")) return cmd_eval_judge(argc - 1, argv + 1);
    if (!strcmp(s, "mmlu")) return cmd_eval_mmlu(argc - 1, argv + 1);
    if (!strcmp(s, "crows")) return cmd_eval_crows(argc - 1, argv + 1);
    if (!strcmp(s, "ppl")) return cmd_eval_ppl(argc - 1, argv + 1);
    if (!strcmp(s, "generate")) return cli_generate_prompts(argc - 1, argv + 1);
    cli_fail("eval: unknown subcommand '%s'", s);
    fputs(USAGE, stderr);
    return 2;
}
