/*
 * data_dump.c — `guanaco data-dump`: the training examples of a JSONL file as
 * gn_dataset_load builds them, one JSON line each on stdout, so tests can
 * compare them with qlora.py's collator (tests/test_data.py):
 *
 *     {"line":3,"length":1234,"ids":[1,835,...],"labels":[-100,835,...]}
 *
 * Row problems go to stderr (gn_log). This is a CLI entry point kept beside
 * data.c; it is the only code under src/train that writes to stdout.
 */
#include "data.h"

#include <errno.h>     // errno
#include <stdio.h>     // printf, fprintf
#include <stdlib.h>    // strtol, free
#include <string.h>    // strcmp
#include <sys/stat.h>  // stat

static int usage(void) {
    fprintf(stderr,
            "usage: guanaco data-dump -m TOKENIZER_OR_MODEL -d FILE [--dataset-format F]\n"
            "                         [--source-max-len N] [--target-max-len N] [--train-on-source]\n"
            "  -m   tokenizer.model / tokenizer.json / .gguf, or a model folder holding one\n"
            "  -d   JSONL data file\n"
            "  --dataset-format  auto (default), oasst1, alpaca, input-output, messages\n"
            "  --source-max-len  default 1024 (qlora); --target-max-len default 256\n"
            "Prints {\"line\":..,\"length\":..,\"ids\":[..],\"labels\":[..]} per example.\n");
    return 2;
}

static int fail(const char *msg) {
    fprintf(stderr, "guanaco: %s\n", msg);
    return 1;
}

static int parse_int(const char *flag, const char *v, int *out) {
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (!*v || *end || errno || x < 1 || x > 1 << 24) {
        fprintf(stderr, "guanaco: %s: '%s' (expected a whole number from 1 to %d)\n", flag, v, 1 << 24);
        return -1;
    }
    *out = (int)x;
    return 0;
}

// A folder: its tokenizer.model, else tokenizer.json. A file: itself.
static gn_status load_tokenizer(gn_tokenizer **t, const char *path) {
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        static const char *names[] = {"tokenizer.model", "tokenizer.json"};
        for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
            char p[4096];
            snprintf(p, sizeof p, "%s/%s", path, names[k]);
            if (stat(p, &st) == 0) return gn_tokenizer_load(t, p);
        }
        return gn_err(GN_ERR_IO, "%s: no tokenizer.model or tokenizer.json in this folder", path);
    }
    return gn_tokenizer_load(t, path);
}

int gn_data_dump_main(int argc, char **argv) {
    const char *model = NULL, *data = NULL;
    gn_data_opts o;
    gn_data_opts_default(&o);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(); return 0; }
        if (!strcmp(a, "--train-on-source")) { o.train_on_source = 1; continue; }
        int takes = !strcmp(a, "-m") || !strcmp(a, "--model") || !strcmp(a, "-d") || !strcmp(a, "--data") ||
                    !strcmp(a, "--dataset-format") || !strcmp(a, "--source-max-len") ||
                    !strcmp(a, "--target-max-len");
        if (!takes) { fprintf(stderr, "guanaco: data-dump: unknown option '%s'\n", a); return usage(); }
        if (!v) { fprintf(stderr, "guanaco: data-dump: %s needs a value\n", a); return usage(); }
        i++;
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) model = v;
        else if (!strcmp(a, "-d") || !strcmp(a, "--data")) data = v;
        else if (!strcmp(a, "--dataset-format")) {
            if (gn_data_format_parse(v, &o.format) != GN_OK) { fail(gn_last_error()); return 2; }
        } else if (!strcmp(a, "--source-max-len")) {
            if (parse_int(a, v, &o.source_max_len)) return 2;
        } else if (parse_int(a, v, &o.target_max_len)) {
            return 2;
        }
    }
    if (!model || !data) { fprintf(stderr, "guanaco: data-dump: -m and -d are required\n"); return usage(); }

    gn_tokenizer *tok = NULL;
    if (load_tokenizer(&tok, model) != GN_OK) return fail(gn_last_error());
    gn_dataset ds;
    gn_status st = gn_dataset_load(&ds, data, tok, &o);
    gn_tokenizer_free(tok);
    if (st != GN_OK) return fail(gn_last_error());
    for (int i = 0; i < ds.n; i++) {
        const gn_example *e = &ds.ex[i];
        printf("{\"line\":%d,\"length\":%d,\"ids\":[", e->line, e->length);
        for (int k = 0; k < e->n; k++) printf(k ? ",%d" : "%d", (int)e->ids[k]);
        printf("],\"labels\":[");
        for (int k = 0; k < e->n; k++) printf(k ? ",%d" : "%d", (int)e->labels[k]);
        printf("]}\n");
    }
    gn_dataset_free(&ds);
    if (fflush(stdout) != 0) return fail("writing to stdout failed");
    return 0;
}
