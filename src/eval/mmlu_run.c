/*
 * mmlu_run.c — one MMLU evaluation's questions and its summary: which subjects
 * (the test/<subject>_test.csv files, or qlora's val file in order of appearance, cut to
 * --subjects), the questions grouped by subject (first --limit of each), each
 * subject's dev exemplars, and per-subject / mean / overall accuracy of the
 * predictions. Scoring one item is mmlu.c's gn_mmlu_score.
 */
#include <dirent.h> // opendir: listing the subjects
#include <stdio.h>  // snprintf
#include <stdlib.h> // qsort, free
#include <string.h> // strcmp, strchr, memcmp
#include <unistd.h> // access

#include "core/common.h" // gn_err, gn_log, gn_realloc
#include "eval/eval.h"   // gn_mmlu_*

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

// path as given when it exists, else path".gz" when that exists (written into path, which
// holds cap bytes); unchanged when neither does (the loader then names the plain file).
static void plain_or_gz(char *path, size_t cap) {
    if (access(path, F_OK) == 0) return;
    size_t n = strlen(path);
    if (n + 4 > cap) return;
    memcpy(path + n, ".gz", 4);
    if (access(path, F_OK) != 0) path[n] = 0;
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

gn_status gn_mmlu_select(gn_mmlu_run *r, const char *data, const gn_mmlu_select_opts *o) {
    memset(r, 0, sizeof *r);
    const char *split = o->split ? o->split : "test", *subjects = o->subjects;
    const int shots = o->shots, limit = o->limit;
    gn_mmlu_set *test = &r->test, *dev = &r->dev, *sel = &r->sel;
    char **subj = NULL;
    int nsubj = 0;
    gn_status st = GN_OK;
    if (!strcmp(split, "val")) {
        char path[1024];
        snprintf(path, sizeof path, "%s/qlora-format/zero_shot_mmlu_val.json", data);
        plain_or_gz(path, sizeof path);
        if ((st = gn_mmlu_load_qlora(test, path))) goto fail;
        for (int i = 0; i < test->n; i++) { // subjects in order of appearance
            int f = 0;
            for (int s = 0; s < nsubj; s++) if (!strcmp(subj[s], test->item[i].subject)) { f = 1; break; }
            if (!f) { subj = gn_realloc(subj, sizeof(char *) * (size_t)(nsubj + 1)); subj[nsubj++] = gn_strdup(test->item[i].subject); }
        }
    } else {
        subj = list_subjects(data, "test", &nsubj);
        if (!nsubj) { st = gn_err(GN_ERR_IO, "%s/test: no *_test.csv files, gzipped or not (expected the MMLU CSVs)", data); goto fail; }
    }
    r->subject = subj;
    r->n_subjects = nsubj;
    if (subjects) { // keep the named ones; unknown names are an error
        for (const char *p = subjects; *p;) {
            const char *c = strchr(p, ',');
            size_t n = c ? (size_t)(c - p) : strlen(p);
            int f = 0;
            for (int s = 0; s < nsubj; s++) if (strlen(subj[s]) == n && !memcmp(subj[s], p, n)) f = 1;
            if (!f && n) { st = gn_err(GN_ERR_ARG, "--subjects: no subject '%.*s' in %s (names as in %s/test/<subject>_test.csv)", (int)n, p, data, data); goto fail; }
            if (!c) break;
            p = c + 1;
        }
        int k = 0;
        for (int s = 0; s < nsubj; s++) { if (in_list(subjects, subj[s])) subj[k++] = subj[s]; else free(subj[s]); }
        nsubj = r->n_subjects = k;
    }
    // per subject: [first, count) ranges into sel, and dev exemplars
    r->first = gn_calloc((size_t)nsubj + 1, sizeof(int));
    r->count = gn_calloc((size_t)nsubj + 1, sizeof(int));
    r->dfirst = gn_calloc((size_t)nsubj + 1, sizeof(int));
    r->dcount = gn_calloc((size_t)nsubj + 1, sizeof(int));
    for (int s = 0; s < nsubj; s++) {
        char path[1024];
        if (strcmp(split, "val")) {
            snprintf(path, sizeof path, "%s/test/%s_test.csv", data, subj[s]);
            plain_or_gz(path, sizeof path);
            if ((st = gn_mmlu_load_csv(test, path, subj[s]))) goto fail;
        }
        if (shots > 0) {
            snprintf(path, sizeof path, "%s/dev/%s_dev.csv", data, subj[s]);
            plain_or_gz(path, sizeof path);
            r->dfirst[s] = dev->n;
            if ((st = gn_mmlu_load_csv(dev, path, subj[s]))) goto fail;
            r->dcount[s] = dev->n - r->dfirst[s] < shots ? dev->n - r->dfirst[s] : shots;
            if (r->dcount[s] < shots)
                gn_log(GN_LOG_WARN, "warning: %s has only %d dev exemplars (asked for %d)", path, r->dcount[s], shots);
        }
    }
    for (int s = 0; s < nsubj; s++) {
        r->first[s] = sel->n;
        for (int i = 0; i < test->n; i++) {
            if (strcmp(test->item[i].subject, subj[s])) continue;
            if (limit && sel->n - r->first[s] >= limit) break;
            if (sel->n == sel->cap) { sel->cap = sel->cap ? sel->cap * 2 : 1024; sel->item = gn_realloc(sel->item, sizeof(gn_mmlu_item) * (size_t)sel->cap); }
            sel->item[sel->n++] = test->item[i];
        }
        r->count[s] = sel->n - r->first[s];
    }
    return GN_OK;
fail:
    r->subject = subj;
    r->n_subjects = nsubj;
    gn_mmlu_run_free(r);
    return st;
}

void gn_mmlu_run_free(gn_mmlu_run *r) {
    for (int s = 0; s < r->n_subjects; s++) free(r->subject[s]);
    free(r->subject);
    free(r->first); free(r->count); free(r->dfirst); free(r->dcount);
    free(r->sel.item); // shallow copies of test's items
    gn_mmlu_set_free(&r->test);
    gn_mmlu_set_free(&r->dev);
    memset(r, 0, sizeof *r);
}

void gn_mmlu_summarize(const gn_mmlu_run *r, const gn_mmlu_pred *preds, gn_mmlu_summary *out) {
    memset(out, 0, sizeof *out);
    out->correct = gn_calloc((size_t)r->n_subjects + 1, sizeof(int));
    double sum = 0;
    for (int s = 0; s < r->n_subjects; s++) {
        int c = 0;
        for (int i = r->first[s]; i < r->first[s] + r->count[s]; i++) c += preds[i].pred == r->sel.item[i].answer;
        out->correct[s] = c;
        if (!r->count[s]) continue;
        sum += (double)c / r->count[s];
        out->total_correct += c;
        out->n_subjects_used++;
    }
    out->mean = out->n_subjects_used ? sum / out->n_subjects_used : 0;
    out->micro = r->sel.n ? (double)out->total_correct / r->sel.n : 0;
}

void gn_mmlu_summary_free(gn_mmlu_summary *s) {
    free(s->correct);
    memset(s, 0, sizeof *s);
}
