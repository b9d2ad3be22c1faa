/*
 * test_data.c — training data (src/train/data.c): rows to ids/labels as
 * qlora.py builds them (structure checks; tests/test_data.py compares the ids
 * with transformers), bad rows reported as "file:line" and skipped, files with
 * no usable row, truncation dropping the EOS, the label mask, CRLF / BOM /
 * blank lines / no final newline / invalid UTF-8, the eval split and the epoch
 * order (determinism, HF's length grouping), and random damaged files (for
 * ASan/UBSan).
 *
 *   make && build/tests/test_data          (from the repository root)
 *   make asan && build-asan/tests/test_data
 * The tokenizer comes from the repository's data/ (override with GN_DATA=/path/to/data).
 */
#include <stdint.h>     // int32_t
#include <stdio.h>      // printf, fopen
#include <stdlib.h>     // getenv, free, mkdtemp
#include <string.h>     // strstr, memcmp
#include <unistd.h>     // unlink, rmdir

#include "guanaco.h"
#include "harness.h"    // CHECK, TEST_REPORT
#include "train/data.h"

static char g_dir[256];     // temporary folder
static char g_log[1 << 16]; // captured log lines
static size_t g_log_n;

static void capture(int level, const char *msg, void *user) {
    (void)user;
    if (level > GN_LOG_WARN) return;
    size_t n = strlen(msg);
    if (g_log_n + n + 2 >= sizeof g_log) return;
    memcpy(g_log + g_log_n, msg, n);
    g_log_n += n;
    g_log[g_log_n++] = '\n';
    g_log[g_log_n] = 0;
}
static void log_clear(void) { g_log_n = 0; g_log[0] = 0; }

static const char *tmpfile_with(const char *name, const void *data, size_t n) {
    static char p[512];
    snprintf(p, sizeof p, "%s/%s", g_dir, name);
    FILE *f = fopen(p, "wb");
    if (!f) { printf("cannot write %s\n", p); exit(1); }
    if (n) fwrite(data, 1, n, f);
    fclose(f);
    return p;
}
static const char *tmpfile_str(const char *name, const char *s) { return tmpfile_with(name, s, strlen(s)); }

static gn_data_opts opts(gn_data_format f, int smax, int tmax, int tos) {
    gn_data_opts o;
    gn_data_opts_default(&o);
    o.format = f;
    o.source_max_len = smax;
    o.target_max_len = tmax;
    o.train_on_source = tos;
    return o;
}

// encode(text) with flags 0 (own dummy prefix); *n ids, malloc'd.
static int32_t *enc(const gn_tokenizer *t, const char *s, int *n) {
    int32_t *ids = NULL;
    gn_status st = gn_tokenizer_encode(t, s, strlen(s), 0, &ids, n);
    if (st != GN_OK) { printf("encode failed: %s\n", gn_last_error()); exit(1); }
    return ids;
}

// Does ex equal [bos] + encode(in) (cut to smax) ++ encode(out) + [eos] (cut to tmax)?
static int example_is(const gn_tokenizer *t, const gn_example *e, const char *in, const char *out, int smax,
                      int tmax, int tos) {
    int ni, no;
    int32_t *a = enc(t, in, &ni), *b = enc(t, out, &no);
    int32_t *src = malloc(sizeof(int32_t) * (size_t)(ni + 1)), *tgt = malloc(sizeof(int32_t) * (size_t)(no + 1));
    src[0] = 1;
    memcpy(src + 1, a, sizeof(int32_t) * (size_t)ni);
    memcpy(tgt, b, sizeof(int32_t) * (size_t)no);
    tgt[no] = 2;
    int ns = ni + 1 < smax ? ni + 1 : smax, nt = no + 1 < tmax ? no + 1 : tmax;
    int ok = e->n == ns + nt;
    for (int i = 0; ok && i < ns; i++) ok = e->ids[i] == src[i] && e->labels[i] == (tos ? src[i] : GN_IGNORE_INDEX);
    for (int i = 0; ok && i < nt; i++) ok = e->ids[ns + i] == tgt[i] && e->labels[ns + i] == tgt[i];
    free(a); free(b); free(src); free(tgt);
    return ok;
}

static void test_oasst1(const gn_tokenizer *t) {
    const char *p = tmpfile_str("o.jsonl",
        "{\"text\": \"### Human: Hello there### Assistant: Hi! How can I help?\"}\n"
        "{\"text\": \"### Human: 2+2?### Assistant: 4### Human: and 3+3?### Assistant: 6\"}\n");
    gn_dataset ds;
    gn_data_opts o = opts(GN_DATA_OASST1, 16, 512, 0);
    CHECK(gn_dataset_load(&ds, p, t, &o) == GN_OK, "oasst1 load: %s", gn_last_error());
    CHECK(ds.n == 2 && ds.skipped == 0, "oasst1: n %d skipped %d", ds.n, ds.skipped);
    if (ds.n == 2) {
        gn_example *e = &ds.ex[0];
        CHECK(e->ids[0] == 1 && e->labels[0] == GN_IGNORE_INDEX, "source is BOS, not a label");
        CHECK(e->ids[1] == 835 && e->labels[1] == 835, "first target token is '\\u2581###' = 835 (own dummy prefix)");
        CHECK(e->ids[e->n - 1] == 2 && e->labels[e->n - 1] == 2, "EOS ends the target and is a label");
        CHECK(example_is(t, e, "", "### Human: Hello there### Assistant: Hi! How can I help?", 16, 512, 0),
              "row 1 = [bos] ++ encode(text) + [eos]");
        CHECK(e->line == 1 && ds.ex[1].line == 2, "line numbers");
        CHECK(e->length == 56, "length = len(text) in characters: %d", e->length);
        int n_label = 0;
        for (int i = 0; i < e->n; i++) n_label += e->labels[i] != GN_IGNORE_INDEX;
        CHECK(n_label == e->n - 1, "labels: everything but the BOS");
    }
    gn_dataset_free(&ds);

    // truncation keeps the beginning and drops the EOS; train_on_source labels the BOS
    o = opts(GN_DATA_OASST1, 16, 5, 1);
    CHECK(gn_dataset_load(&ds, p, t, &o) == GN_OK, "oasst1 truncated: %s", gn_last_error());
    if (ds.n == 2) {
        gn_example *e = &ds.ex[1];
        CHECK(e->n == 6, "1 source + 5 target tokens: %d", e->n);
        CHECK(e->ids[5] != 2, "the truncated target lost its EOS");
        CHECK(e->labels[0] == 1, "train_on_source: the BOS is a label");
        CHECK(example_is(t, e, "", "### Human: 2+2?### Assistant: 4### Human: and 3+3?### Assistant: 6", 16, 5, 1),
              "truncated row = first tokens of the full one");
    }
    gn_dataset_free(&ds);
}

static void test_formats(const gn_tokenizer *t) {
    // alpaca: prompt with / without input; input missing or null = no input
    const char *p = tmpfile_str("a.jsonl",
        "{\"instruction\": \"Add {x}.\", \"input\": \"2 and 3\", \"output\": \"5\"}\n"
        "{\"instruction\": \"Say hi.\", \"input\": \"\", \"output\": \"hi\"}\n"
        "{\"instruction\": \"Say bye.\", \"output\": \"bye\"}\n"
        "{\"instruction\": \"Null input.\", \"input\": null, \"output\": \"ok\"}\n");
    gn_dataset ds;
    gn_data_opts o = opts(GN_DATA_AUTO, 1024, 256, 0);
    CHECK(gn_dataset_load(&ds, p, t, &o) == GN_OK && ds.n == 4, "alpaca auto: %s", gn_last_error());
    if (ds.n == 4) {
        const char *pi = "Below is an instruction that describes a task, paired with an input that provides further "
                         "context. Write a response that appropriately completes the request.\n\n### Instruction:\n"
                         "Add {x}.\n\n### Input:\n2 and 3\n\n### Response: ";
        const char *pn = "Below is an instruction that describes a task. Write a response that appropriately "
                         "completes the request.\n\n### Instruction:\nSay hi.\n\n### Response: ";
        CHECK(example_is(t, &ds.ex[0], pi, "5", 1024, 256, 0), "alpaca prompt_input");
        CHECK(example_is(t, &ds.ex[1], pn, "hi", 1024, 256, 0), "alpaca prompt_no_input");
        CHECK(ds.ex[0].length == (int)strlen(pi) + 1, "alpaca length counts the prompt");
        CHECK(ds.ex[2].n > 0 && ds.ex[3].n > 0, "alpaca without input");
    }
    gn_dataset_free(&ds);

    // input-output, with the 4.31 whitespace rule next to <s> / </s>
    p = tmpfile_str("io.jsonl", "{\"input\": \"  question\", \"output\": \"answer \\n\"}\n"
                                "{\"input\": \"\", \"output\": \"x\"}\n");
    o = opts(GN_DATA_INPUT_OUTPUT, 1024, 256, 0);
    CHECK(gn_dataset_load(&ds, p, t, &o) == GN_OK && ds.n == 2, "input-output: %s", gn_last_error());
    if (ds.n == 2) {
        CHECK(example_is(t, &ds.ex[0], "question", "answer", 1024, 256, 0),
              "whitespace after <s> and before </s> is stripped (transformers 4.31)");
        CHECK(ds.ex[0].length == 10 + 8, "length of the unstripped strings: %d", ds.ex[0].length);
        CHECK(ds.ex[1].n == 3 && ds.ex[1].ids[0] == 1 && ds.ex[1].ids[2] == 2, "empty input: source is BOS only");
    }
    gn_dataset_free(&ds);

    // messages: rendered in the oasst1 layout
    p = tmpfile_str("m.jsonl",
        "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}, {\"role\": \"assistant\", \"content\": \"Yo\"}]}\n"
        "{\"messages\": [{\"role\": \"system\", \"content\": \"Sys.\"}, {\"role\": \"user\", \"content\": \"q\"},"
        " {\"role\": \"assistant\", \"content\": \"a\"}]}\n"
        "{\"messages\": [{\"role\": \"user\", \"content\": \"no answer\"}]}\n"
        "{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}, {\"role\": \"bot\", \"content\": \"a\"}]}\n"
        "{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}, {\"role\": \"system\", \"content\": \"late\"}]}\n"
        "{\"messages\": []}\n"
        "{\"messages\": \"nope\"}\n");
    o = opts(GN_DATA_AUTO, 16, 512, 0);
    log_clear();
    CHECK(gn_dataset_load(&ds, p, t, &o) == GN_OK && ds.n == 2 && ds.skipped == 5, "messages: n %d skipped %d %s",
          ds.n, ds.skipped, gn_last_error());
    if (ds.n == 2) {
        CHECK(example_is(t, &ds.ex[0], "", "### Human: Hi### Assistant: Yo", 16, 512, 0), "messages rendering");
        CHECK(example_is(t, &ds.ex[1], "", "Sys. ### Human: q### Assistant: a", 16, 512, 0), "system message first");
    }
    CHECK(strstr(g_log, "m.jsonl:3: no \"assistant\" message"), "no assistant reported: %s", g_log);
    CHECK(strstr(g_log, "m.jsonl:4: messages[1]: role \"bot\""), "unknown role reported");
    CHECK(strstr(g_log, "m.jsonl:5:") && strstr(g_log, "m.jsonl:6:") && strstr(g_log, "m.jsonl:7:"), "rest reported");
    gn_dataset_free(&ds);

    gn_data_format f;
    CHECK(gn_data_format_parse("input-output", &f) == GN_OK && f == GN_DATA_INPUT_OUTPUT, "format names");
    CHECK(gn_data_format_parse("alpaca-clean", &f) == GN_OK && f == GN_DATA_ALPACA, "alpaca-clean");
    CHECK(gn_data_format_parse("jsonl", &f) == GN_ERR_ARG, "bad format name");
    CHECK(!strcmp(gn_data_format_name(GN_DATA_MESSAGES), "messages"), "format name");
}

static void test_bad_rows(const gn_tokenizer *t) {
    // CRLF, BOM, blank and whitespace-only lines (silent), bad rows (reported), no final newline
    const char data[] =
        "\xEF\xBB\xBF{\"text\": \"### Human: a### Assistant: b\"}\r\n"  // 1 ok (BOM)
        "\r\n"                                                           // 2 blank
        "  \t \r\n"                                                      // 3 whitespace only
        "{\"text\": \"### Human: c\r\n"                                  // 4 bad JSON
        "{\"txt\": \"typo\"}\r\n"                                        // 5 missing field
        "{\"text\": \"\"}\r\n"                                           // 6 empty
        "{\"text\": \"  \\n \"}\r\n"                                     // 7 only whitespace
        "{\"text\": [1]}\r\n"                                            // 8 not a string
        "\"just a string\"\r\n"                                          // 9 not an object
        "{\"text\": \"x\"} {\"text\": \"y\"}\r\n"                        // 10 extra text
        "{\"text\": \"bad \xff\xfe utf-8 \xc3\"}\r\n"                    // 11 ok: raw bytes
        "{\"text\": \"### Human: last### Assistant: no newline\"}";      // 12 ok
    const char *p = tmpfile_with("bad.jsonl", data, sizeof data - 1);
    gn_dataset ds;
    gn_data_opts o = opts(GN_DATA_OASST1, 16, 512, 0);
    log_clear();
    gn_status st = gn_dataset_load(&ds, p, t, &o);
    CHECK(st == GN_OK, "bad rows: %s", gn_last_error());
    CHECK(ds.n == 3 && ds.skipped == 7, "3 usable, 7 skipped: %d %d", ds.n, ds.skipped);
    if (ds.n == 3) {
        CHECK(ds.ex[0].line == 1 && ds.ex[1].line == 11 && ds.ex[2].line == 12, "lines %d %d %d", ds.ex[0].line,
              ds.ex[1].line, ds.ex[2].line);
        CHECK(example_is(t, &ds.ex[0], "", "### Human: a### Assistant: b", 16, 512, 0), "BOM and CR removed");
        CHECK(example_is(t, &ds.ex[2], "", "### Human: last### Assistant: no newline", 16, 512, 0), "last line");
        CHECK(ds.ex[1].length == 14, "length of invalid UTF-8: one per bad byte: %d", ds.ex[1].length);
    }
    char want[600];
    for (int ln = 4; ln <= 10; ln++) {
        snprintf(want, sizeof want, "%s:%d: ", p, ln);
        CHECK(strstr(g_log, want), "line %d reported as file:line: %s", ln, g_log);
    }
    for (int ln = 1; ln <= 3; ln++) {
        snprintf(want, sizeof want, "%s:%d: ", p, ln);
        CHECK(!strstr(g_log, want), "line %d not reported", ln);
    }
    snprintf(want, sizeof want, "%s:5: missing field \"text\"", p);
    CHECK(strstr(g_log, want), "missing field message");
    snprintf(want, sizeof want, "%s:6: field \"text\" is empty", p);
    CHECK(strstr(g_log, want), "empty text message");
    snprintf(want, sizeof want, "%s:4: not valid JSON", p);
    CHECK(strstr(g_log, want), "bad JSON message");
    snprintf(want, sizeof want, "%s:8: field \"text\" is not a string", p);
    CHECK(strstr(g_log, want), "not a string message");
    gn_dataset_free(&ds);

    // no usable row: an error naming the file
    const char *cases[][2] = {
        {"empty.jsonl", ""},
        {"blank.jsonl", "\n\r\n   \n"},
        {"allbad.jsonl", "{\"text\": \"\"}\nnope\n{\"other\": 1}\n"},
        {"noformat.jsonl", "{\"foo\": 1}\n{\"bar\": 2}\n"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        p = tmpfile_str(cases[k][0], cases[k][1]);
        memset(&ds, 0x55, sizeof ds);
        st = gn_dataset_load(&ds, p, t, &o);
        CHECK(st == GN_ERR_FORMAT && ds.n == 0 && ds.ex == NULL, "%s: GN_ERR_FORMAT (%d)", cases[k][0], st);
        CHECK(strstr(gn_last_error(), p) && (strstr(gn_last_error(), "no usable row") || strstr(gn_last_error(), "no rows")),
              "%s: message: %s", cases[k][0], gn_last_error());
        gn_dataset_free(&ds);
        unlink(p);
    }
    gn_data_opts ao = opts(GN_DATA_AUTO, 16, 512, 0);
    p = tmpfile_str("noformat.jsonl", "{\"foo\": 1}\n");
    CHECK(gn_dataset_load(&ds, p, t, &ao) == GN_ERR_FORMAT, "auto with no known field: error");
    unlink(p);
    snprintf(want, sizeof want, "%s/missing.jsonl", g_dir);
    CHECK(gn_dataset_load(&ds, want, t, &o) == GN_ERR_IO && strstr(gn_last_error(), "missing.jsonl"),
          "missing file: GN_ERR_IO naming it: %s", gn_last_error());
    o.source_max_len = 0;
    CHECK(gn_dataset_load(&ds, want, t, &o) == GN_ERR_ARG, "source_max_len 0: GN_ERR_ARG");
}

// ----------------------------------------------------------------------------
// split and order

static void make_fake(gn_dataset *ds, int n, int distinct_lengths) {
    memset(ds, 0, sizeof *ds);
    ds->ex = calloc((size_t)n, sizeof *ds->ex);
    ds->n = n;
    for (int i = 0; i < n; i++) {
        ds->ex[i].line = i + 1;
        ds->ex[i].length = distinct_lengths ? (i * 7919) % 1009 : (i * 37) % 5;
        ds->ex[i].ids = malloc(sizeof(int32_t));
        ds->ex[i].labels = malloc(sizeof(int32_t));
        ds->ex[i].n = 1;
        ds->ex[i].ids[0] = ds->ex[i].labels[0] = i;
    }
}

static void test_split(void) {
    gn_dataset a, b, ea, eb;
    make_fake(&a, 500, 1);
    make_fake(&b, 500, 1);
    gn_dataset_split(&a, 120, 42, &ea);
    gn_dataset_split(&b, 120, 42, &eb);
    CHECK(a.n == 380 && ea.n == 120, "split sizes %d %d", a.n, ea.n);
    int same = a.n == b.n && ea.n == eb.n, ordered = 1, inorder = 1;
    for (int i = 0; same && i < ea.n; i++) same = ea.ex[i].line == eb.ex[i].line;
    for (int i = 0; same && i < a.n; i++) same = a.ex[i].line == b.ex[i].line;
    for (int i = 1; i < a.n; i++) ordered &= a.ex[i].line > a.ex[i - 1].line;
    for (int i = 1; i < ea.n; i++) inorder &= ea.ex[i].line > ea.ex[i - 1].line;
    CHECK(same, "same seed, same split");
    CHECK(ordered, "train keeps file order");
    CHECK(!inorder, "eval is a shuffled pick");
    char seen[501] = {0};
    for (int i = 0; i < a.n; i++) seen[a.ex[i].line]++;
    for (int i = 0; i < ea.n; i++) seen[ea.ex[i].line]++;
    int all = 1;
    for (int i = 1; i <= 500; i++) all &= seen[i] == 1;
    CHECK(all, "every example in exactly one part");
    CHECK(ea.ex[0].ids[0] == ea.ex[0].line - 1, "examples moved with their data");
    gn_dataset_free(&b); gn_dataset_free(&eb);
    make_fake(&b, 500, 1);
    gn_dataset_split(&b, 120, 43, &eb);
    int diff = 0;
    for (int i = 0; i < eb.n; i++) diff |= eb.ex[i].line != ea.ex[i].line;
    CHECK(diff, "another seed, another split");
    gn_dataset_free(&a); gn_dataset_free(&ea); gn_dataset_free(&b); gn_dataset_free(&eb);

    make_fake(&a, 5, 1);
    gn_dataset_split(&a, 0, 1, &ea);
    CHECK(a.n == 5 && ea.n == 0 && ea.ex == NULL, "eval_size 0");
    gn_dataset_split(&a, 99, 1, &ea);
    CHECK(a.n == 0 && ea.n == 5, "eval_size clamped to n");
    gn_dataset_free(&a); gn_dataset_free(&ea);
}

static int is_perm(const int *o, int n) {
    char *s = calloc((size_t)n, 1);
    int ok = 1;
    for (int i = 0; i < n && ok; i++) {
        ok = o[i] >= 0 && o[i] < n && !s[o[i]];
        if (ok) s[o[i]] = 1;
    }
    free(s);
    return ok;
}

// HF get_length_grouped_indices applied to our permutation, written independently.
static int grouped_ok(const gn_dataset *ds, const int *order, int batch) {
    int n = ds->n;
    int mult = n / (batch * 4);
    if (mult > 50) mult = 50;
    if (mult == 0) mult = 1;
    int mb = mult * batch, maxlen = -1;
    for (int i = 0; i < n; i++) if (ds->ex[i].length > maxlen) maxlen = ds->ex[i].length;
    if (ds->ex[order[0]].length != maxlen) return 0;
    for (int s = 0; s < n; s += mb) {
        int e = s + mb < n ? s + mb : n;
        for (int i = s + 2; i < e; i++)  // position 0 of a megabatch may hold the swapped element
            if (ds->ex[order[i]].length > ds->ex[order[i - 1]].length) return 0;
    }
    return 1;
}

static void test_order(void) {
    gn_dataset ds;
    make_fake(&ds, 1000, 0);
    int *a = malloc(sizeof(int) * 1000), *b = malloc(sizeof(int) * 1000);
    gn_dataset_epoch_order(&ds, 7, 0, 0, 1, a);
    gn_dataset_epoch_order(&ds, 7, 0, 0, 1, b);
    CHECK(is_perm(a, 1000) && !memcmp(a, b, sizeof(int) * 1000), "same seed and epoch: same permutation");
    gn_dataset_epoch_order(&ds, 7, 1, 0, 1, b);
    CHECK(is_perm(b, 1000) && memcmp(a, b, sizeof(int) * 1000), "next epoch: another permutation");
    gn_dataset_epoch_order(&ds, 8, 0, 0, 1, b);
    CHECK(memcmp(a, b, sizeof(int) * 1000), "another seed: another permutation");
    int fixed = 0;
    for (int i = 0; i < 1000; i++) fixed += a[i] == i;
    CHECK(fixed < 20, "looks shuffled (%d fixed points)", fixed);

    int batches[] = {1, 4, 16, 300, 5000};
    for (size_t k = 0; k < sizeof batches / sizeof batches[0]; k++) {
        gn_dataset_epoch_order(&ds, 3, 2, 1, batches[k], a);
        gn_dataset_epoch_order(&ds, 3, 2, 1, batches[k], b);
        CHECK(is_perm(a, 1000) && !memcmp(a, b, sizeof(int) * 1000), "grouped, batch %d: deterministic", batches[k]);
        CHECK(grouped_ok(&ds, a, batches[k] > 1000 ? 1000 : batches[k]), "grouped, batch %d: HF megabatch scheme",
              batches[k]);
    }
    // stable among equal lengths: within a megabatch, equal lengths keep the permutation's order
    gn_dataset_epoch_order(&ds, 3, 2, 0, 1, b);
    gn_dataset_epoch_order(&ds, 3, 2, 1, 1, a);
    int pos[1000];
    for (int i = 0; i < 1000; i++) pos[b[i]] = i;
    int stable = 1;
    for (int i = 2; i < 50; i++)
        if (ds.ex[a[i]].length == ds.ex[a[i - 1]].length) stable &= pos[a[i]] > pos[a[i - 1]];
    CHECK(stable, "equal lengths keep the shuffled order (Python's stable sort)");
    free(a); free(b);
    gn_dataset_free(&ds);

    make_fake(&ds, 1, 1);
    int one = -1;
    gn_dataset_epoch_order(&ds, 1, 0, 1, 16, &one);
    CHECK(one == 0, "one example");
    gn_dataset_free(&ds);
}

// ----------------------------------------------------------------------------
// random damage (for the sanitizers)

static uint64_t g_rng = 0x1234567;
static uint32_t rnd(void) {
    g_rng ^= g_rng << 13; g_rng ^= g_rng >> 7; g_rng ^= g_rng << 17;
    return (uint32_t)(g_rng >> 16);
}

static void fuzz(const gn_tokenizer *t) {
    static const char *rows[] = {
        "{\"text\": \"### Human: hi### Assistant: ho\"}",
        "{\"instruction\": \"i\", \"input\": \"x\", \"output\": \"o\"}",
        "{\"input\": \" a \", \"output\": \"b</s>c<s>\"}",
        "{\"messages\": [{\"role\": \"user\", \"content\": \"u\"}, {\"role\": \"assistant\", \"content\": \"a\"}]}",
        "{\"text\": \"\\u00e9\\ud83e\\udd99 <unk> \\\" \\\\ \\n\"}",
    };
    gn_data_format fmts[] = {GN_DATA_AUTO, GN_DATA_OASST1, GN_DATA_ALPACA, GN_DATA_INPUT_OUTPUT, GN_DATA_MESSAGES};
    char buf[4096];
    int ok = 1;
    for (int it = 0; it < 300; it++) {
        size_t n = 0;
        int lines = 1 + (int)(rnd() % 6);
        for (int l = 0; l < lines; l++) {
            const char *r = rows[rnd() % 5];
            size_t m = strlen(r);
            if (n + m + 2 >= sizeof buf) break;
            memcpy(buf + n, r, m);
            int muts = (int)(rnd() % 4);
            for (int k = 0; k < muts; k++) {
                size_t at = n + rnd() % m;
                switch (rnd() % 3) {
                case 0: buf[at] = (char)rnd(); break;
                case 1: buf[at] = "{}[]\":,\\\n\r\0 "[rnd() % 13]; break;
                default: m = at - n + 1; break;  // cut the row short
                }
            }
            n += m;
            if (rnd() % 4) buf[n++] = rnd() % 2 ? '\n' : '\r';
            if (rnd() % 2) buf[n++] = '\n';
        }
        const char *p = tmpfile_with("fuzz.jsonl", buf, n);
        gn_data_opts o = opts(fmts[rnd() % 5], 1 + (int)(rnd() % 20), 1 + (int)(rnd() % 40), (int)(rnd() % 2));
        gn_dataset ds;
        gn_status st = gn_dataset_load(&ds, p, t, &o);
        if (st == GN_OK) {
            for (int i = 0; i < ds.n; i++) {
                gn_example *e = &ds.ex[i];
                ok &= e->n >= 1 && e->n <= o.source_max_len + o.target_max_len && e->line >= 1;
                for (int k = 0; k < e->n; k++) ok &= e->ids[k] >= 0 && e->ids[k] < gn_tokenizer_vocab_size(t);
            }
        } else {
            ok &= st == GN_ERR_FORMAT && ds.n == 0;
        }
        gn_dataset_free(&ds);
    }
    CHECK(ok, "random damaged files: valid examples or a clean GN_ERR_FORMAT");
}

int main(void) {
    const char *env = getenv("GN_DATA");
    char model[1100];
    snprintf(model, sizeof model, "%s/llama-tokenizer/tokenizer.model", env && *env ? env : "data");
    snprintf(g_dir, sizeof g_dir, "/tmp/gn_test_data_XXXXXX");
    if (!mkdtemp(g_dir)) { printf("mkdtemp failed\n"); return 1; }
    gn_set_log(capture, NULL);

    gn_tokenizer *t = NULL;
    gn_status st = gn_tokenizer_load(&t, model);
    CHECK(st == GN_OK, "load %s: %s", model, gn_last_error());
    if (st == GN_OK) {
        test_oasst1(t);
        test_formats(t);
        test_bad_rows(t);
        fuzz(t);
        gn_tokenizer_free(t);
    }
    test_split();
    test_order();

    static const char *names[] = {"o.jsonl", "a.jsonl", "io.jsonl", "m.jsonl", "bad.jsonl", "fuzz.jsonl"};
    char p[512];
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
        snprintf(p, sizeof p, "%s/%s", g_dir, names[k]);
        unlink(p);
    }
    rmdir(g_dir);
    gn_set_log(NULL, NULL);
    TEST_REPORT();
}
