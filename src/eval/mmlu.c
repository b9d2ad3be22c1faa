/*
 * mmlu.c — MMLU (Hendrycks et al.) as QLoRA evaluated it (docs/FACTS.md §6.7).
 *
 * Prompt, as hendrycks' evaluate.py builds it and as qlora's data/mmlu json files hold it:
 *     "The following are multiple choice questions (with answers) about  <subject words>.\n\n"
 *     then per exemplar  "<question>\nA. <c0>\nB. <c1>\nC. <c2>\nD. <c3>\nAnswer: <X>\n\n"
 *     then the question  "<question>\nA. <c0>\nB. <c1>\nC. <c2>\nD. <c3>\nAnswer:"
 * (format_subject joins the words with a leading space each: "about" + " " + " abstract
 * algebra" — the double space). Five-shot takes the subject's first 5 dev rows.
 *
 * Scoring (qlora.py): the source is "<bos>" + prompt, the prediction is the argmax of
 * the logits at the last prompt position restricted to the ids of
 * tokenizer("A"/"B"/"C"/"D", add_special_tokens=False)[0] — "▁A" = 319 for LLaMA's
 * SentencePiece, plain "A" for byte-level BPE (qlora's rule, not " A").
 * When a prompt does not fit the context we drop exemplars from the end, as
 * evaluate.py does (qlora instead right-truncates at 2048 tokens, which would cut
 * "Answer:" off; prompts that long are rare).
 */
#include "eval.h"

#include <cjson/cJSON.h> // qlora-format rows
#include <stdio.h>       // snprintf
#include <stdlib.h>      // free

#include "../core/common.h" // gn_err, gn_log, gn_malloc
#include "../core/buf.h" // gn_buf, gn_lines

static void push(gn_mmlu_set *s, gn_mmlu_item it) {
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 256;
        s->item = gn_realloc(s->item, sizeof(gn_mmlu_item) * (size_t)s->cap);
    }
    s->item[s->n++] = it;
}

void gn_mmlu_set_free(gn_mmlu_set *s) {
    for (int i = 0; i < s->n; i++) {
        gn_mmlu_item *it = &s->item[i];
        free(it->subject); free(it->question); free(it->prompt0);
        for (int k = 0; k < 4; k++) free(it->choice[k]);
    }
    free(s->item);
    memset(s, 0, sizeof *s);
}

static int answer_index(const char *a) {
    while (*a == ' ') a++;
    if ((a[0] >= '0' && a[0] <= '3') || (a[0] >= 'A' && a[0] <= 'D')) {
        const char *e = a + 1;
        while (*e == ' ' || *e == '\r') e++;
        if (!*e) return a[0] >= 'A' ? a[0] - 'A' : a[0] - '0';
    }
    return -1;
}

gn_status gn_mmlu_load_csv(gn_mmlu_set *s, const char *path, const char *subject) {
    char *subj;
    if (subject) subj = gn_strdup(subject);
    else {
        const char *b = strrchr(path, '/');
        b = b ? b + 1 : path;
        subj = gn_strdup(b);
        static const char *const suf[] = {"_dev.csv", "_test.csv", "_val.csv", ".csv"};
        for (size_t k = 0; k < sizeof suf / sizeof suf[0]; k++) {
            size_t n = strlen(subj), m = strlen(suf[k]);
            if (n > m && !strcmp(subj + n - m, suf[k])) { subj[n - m] = 0; break; }
        }
    }
    gn_csv c;
    gn_status st = gn_csv_read(&c, path);
    if (st) { free(subj); return st; }
    int first = 0;
    if (c.n > 0 && c.row[0].n >= 1 && !strcmp(c.row[0].field[0], "question")) first = 1;
    int logged = 0;
    for (int r = first; r < c.n; r++) {
        gn_csv_row *row = &c.row[r];
        const char *why = NULL;
        int ans = -1;
        if (row->n != 6) why = "expected 6 fields (question, 4 choices, answer)";
        else if ((ans = answer_index(row->field[5])) < 0) why = "answer must be 0-3 or A-D";
        if (why) {
            s->n_skipped++;
            if (logged++ < 5) gn_log(GN_LOG_WARN, "%s:%d: skipped: %s (found %d fields)", path, row->line, why, row->n);
            continue;
        }
        gn_mmlu_item it = {0};
        it.subject = gn_strdup(subj);
        it.question = gn_strdup(row->field[0]);
        for (int k = 0; k < 4; k++) it.choice[k] = gn_strdup(row->field[1 + k]);
        it.answer = ans;
        push(s, it);
    }
    gn_csv_free(&c);
    free(subj);
    return GN_OK;
}

gn_status gn_mmlu_load_qlora(gn_mmlu_set *s, const char *path) {
    char *text;
    size_t len;
    gn_status st = gn_read_file(path, &text, &len);
    if (st) return st;
    int logged = 0;
    gn_lines it = gn_lines_init(text, len);
    size_t n;
    for (char *p; (p = gn_lines_next(&it, &n));) {
        int line = it.lineno;
        if (n > 0) { // a line of spaces is a row that does not parse: counted, as in the release
            cJSON *o = cJSON_ParseWithLength(p, n);
            const cJSON *su = cJSON_GetObjectItemCaseSensitive(o, "subject");
            const cJSON *in = cJSON_GetObjectItemCaseSensitive(o, "input");
            const cJSON *out = cJSON_GetObjectItemCaseSensitive(o, "output");
            int ans = cJSON_IsString(out) ? answer_index(out->valuestring) : -1;
            if (cJSON_IsString(su) && cJSON_IsString(in) && ans >= 0 && strstr(in->valuestring, "\n\n")) {
                gn_mmlu_item it = {0};
                it.subject = gn_strdup(su->valuestring);
                it.prompt0 = gn_strdup(in->valuestring);
                it.answer = ans;
                push(s, it);
            } else {
                s->n_skipped++;
                if (logged++ < 5)
                    gn_log(GN_LOG_WARN, "%s:%d: skipped: expected {\"subject\", \"input\" (header, blank line, question), "
                           "\"output\": A-D}", path, line);
            }
            cJSON_Delete(o);
        }
    }
    free(text);
    return GN_OK;
}

// ----------------------------------------------------------------------------
// prompts

char *gn_mmlu_header(const char *subject) {
    gn_buf b = {0};
    gn_buf_puts(&b, "The following are multiple choice questions (with answers) about ");
    const char *p = subject;
    for (;;) { // format_subject: " " + word for every '_'-separated word
        const char *u = strchr(p, '_');
        size_t n = u ? (size_t)(u - p) : strlen(p);
        char *w = gn_strndup(p, n);
        gn_buf_puts(&b, " ");
        gn_buf_puts(&b, w);
        free(w);
        if (!u) break;
        p = u + 1;
    }
    gn_buf_puts(&b, ".\n\n");
    return b.buf;
}

static void add_example(gn_buf *b, const gn_mmlu_item *it, int with_answer) {
    static const char *const L[4] = {"A", "B", "C", "D"};
    gn_buf_puts(b, it->question);
    for (int k = 0; k < 4; k++) { gn_buf_puts(b, "\n"); gn_buf_puts(b, L[k]); gn_buf_puts(b, ". "); gn_buf_puts(b, it->choice[k]); }
    gn_buf_puts(b, "\nAnswer:");
    if (with_answer) { gn_buf_puts(b, " "); gn_buf_puts(b, L[it->answer]); gn_buf_puts(b, "\n\n"); }
}

char *gn_mmlu_prompt(const gn_mmlu_item *shots, int k, const gn_mmlu_item *q) {
    gn_buf b = {0};
    const char *body = NULL;
    if (q->prompt0) { // qlora row: header, blank line, question
        const char *cut = strstr(q->prompt0, "\n\n");
        char *h = gn_strndup(q->prompt0, (size_t)(cut - q->prompt0) + 2);
        gn_buf_puts(&b, h);
        free(h);
        body = cut + 2;
    } else {
        char *h = gn_mmlu_header(q->subject);
        gn_buf_puts(&b, h);
        free(h);
    }
    for (int i = 0; i < k; i++) add_example(&b, &shots[i], 1);
    if (body) gn_buf_puts(&b, body);
    else add_example(&b, q, 0);
    return gn_buf_take(&b);
}

// ----------------------------------------------------------------------------
// scoring

gn_status gn_mmlu_letter_ids(const gn_tokenizer *t, int32_t ids[4]) {
    static const char *const L[4] = {"A", "B", "C", "D"};
    if (!t) return gn_err(GN_ERR_ARG, "mmlu: the model has no tokenizer");
    for (int k = 0; k < 4; k++) {
        int32_t *x;
        int n;
        gn_status st = gn_tokenizer_encode(t, L[k], 1, 0, &x, &n);
        if (st) return st;
        if (n < 1) { free(x); return gn_err(GN_ERR_FORMAT, "mmlu: the tokenizer gives no token for \"%s\"", L[k]); }
        ids[k] = x[0];
        free(x);
    }
    return GN_OK;
}

gn_status gn_mmlu_score(gn_lm *lm, const int32_t letters[4], const gn_mmlu_item *shots, int k,
                        const gn_mmlu_item *q, int bos, gn_mmlu_pred *out) {
    memset(out, 0, sizeof *out);
    int32_t *ids = NULL;
    int n = 0;
    int cap = gn_lm_max_seq(lm);
    for (;;) {
        char *prompt = gn_mmlu_prompt(shots, k, q);
        gn_status st = gn_lm_encode(lm, prompt, bos, &ids, &n);
        free(prompt);
        if (st) return st;
        if (n <= cap || k == 0) break;
        free(ids);
        k--;
    }
    const int32_t *use = ids;
    if (n > cap) { use = ids + (n - cap); n = cap; out->truncated = 1; }
    const float *lg = gn_lm_next_logits(lm, use, n);
    if (!lg) { free(ids); return GN_ERR_ARG; }
    int best = 0;
    for (int j = 0; j < 4; j++) {
        out->logit[j] = lg[letters[j]];
        if (out->logit[j] > out->logit[best]) best = j;
    }
    out->pred = best;
    out->n_tokens = n;
    out->shots = k;
    free(ids);
    return GN_OK;
}
