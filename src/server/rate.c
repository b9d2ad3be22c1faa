/*
 * rate.c — /rate, the paper's pairwise human evaluation made easy: two answers
 * to the same prompt, one from each of two generations files, shown in random
 * order without names; the verdict is appended to a judgments file in the QLoRA
 * release's pairwise format, which `guanaco eval elo` reads:
 *
 *   {"review_id", "question_id", "answer1_id", "answer2_id", "reviewer_id",
 *    "metadata", "text", "score"}      score 1 = system A wins, 2 = B wins, 3 = tie
 *
 * plus "model1"/"model2" (the two systems' names, as `guanaco eval judge` adds),
 * so `eval elo` needs no file-name parsing.
 *
 * System A (--rate-a) is always "Assistant 1" in the file, whatever order the
 * page showed (metadata.shown_first records it), as in the release where each
 * ordered pair of systems has its own file. The default file name follows the
 * release: <A>-vs-<B>-human-reviewer-threeclass.jsonl.
 *
 * Generations files: JSON lines with question_id (or message_id), the prompt
 * ("text", else "prompt") and the answer ("generation_truncated" when present, as
 * the release cut it at the next turn, else "generation"); FastChat answer files
 * (answer_id, question_id, text = the answer) work too.
 */
#ifdef GN_HAVE_MHD
#include "server.h"

#include <cjson/cJSON.h> // cJSON_Parse
#include <fcntl.h>       // open, O_APPEND
#include <stdio.h>       // snprintf
#include <stdlib.h>      // free
#include <string.h>      // strcmp
#include <time.h>        // time
#include <unistd.h>      // write, close

#include "core/common.h" // gn_read_file, gn_strdup

typedef struct {
    char *key;       // question id as text, for joining
    cJSON *qid;      // the id as it was in the file (number or string)
    char *prompt;    // may be NULL (FastChat answers)
    char *answer;
    char *answer_id;
} gen_row;

typedef struct {
    int a, b;        // rows in A and B
    int rated;       // verdicts recorded by this server
} pair;

static struct {
    int enabled;
    char *sys_a, *sys_b;  // system names (file stems)
    char *id_field;       // "question_id" or "message_id"
    gen_row *ra, *rb;
    int na, nb;
    pair *pairs;
    int n_pairs;
    char *path;           // judgments file
    int n_written;
} R;

int rate_enabled(void) { return R.enabled; }

// 22 characters like the release's shortuuid ids, from a 64-bit hash.
static void short_id(char *out, uint64_t h1, uint64_t h2) {
    static const char al[] = "23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"; // 57
    for (int i = 0; i < 22; i++) {
        uint64_t *h = i < 11 ? &h1 : &h2;
        out[i] = al[*h % 57];
        *h /= 57;
    }
    out[22] = 0;
}

static uint64_t fnv(const char *s, uint64_t h) {
    for (; *s; s++) { h ^= (unsigned char)*s; h *= 0x100000001b3ull; }
    return h;
}

static const char *str_field(const cJSON *o, const char *k) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(x) ? x->valuestring : NULL;
}

// Loads a generations file. Returns 0, or -1 with a message on stderr.
static int load_gens(const char *path, const char *sys, gen_row **rows, int *n, const char **id_field) {
    char *data;
    size_t len;
    if (gn_read_file(path, &data, &len) != GN_OK) {
        fprintf(stderr, "guanaco serve: %s\n", gn_last_error());
        return -1;
    }
    int cap = 64;
    *rows = gn_malloc(sizeof(gen_row) * (size_t)cap);
    *n = 0;
    gn_lines it = gn_lines_init(data, strlen(data)); // a NUL byte ends the file, as it always has
    for (char *p; (p = gn_lines_next(&it, NULL));) {
        int line = it.lineno;
        if (!gn_line_blank(p)) {
            cJSON *o = cJSON_Parse(p);
            const cJSON *qid = o ? cJSON_GetObjectItemCaseSensitive(o, "question_id") : NULL;
            if (o && !qid && (qid = cJSON_GetObjectItemCaseSensitive(o, "message_id"))) *id_field = "message_id";
            // the release's cut at the next "### Human:" turn when there is one
            const char *gen = o ? str_field(o, "generation_truncated") : NULL, *prompt = NULL, *aid = NULL;
            if (o && !gen) gen = str_field(o, "generation");
            if (o && gen) prompt = str_field(o, "text") ? str_field(o, "text") : str_field(o, "prompt");
            else if (o && str_field(o, "answer_id")) { gen = str_field(o, "text"); aid = str_field(o, "answer_id"); }
            if (!o || !qid || !(cJSON_IsNumber(qid) || cJSON_IsString(qid)) || !gen) {
                fprintf(stderr,
                        "guanaco serve: %s:%d: expected a JSON object with question_id and generation (the "
                        "release's generations format); skipping the line\n",
                        path, line);
                cJSON_Delete(o);
            } else {
                if (*n == cap) *rows = gn_realloc(*rows, sizeof(gen_row) * (size_t)(cap *= 2));
                gen_row *r = &(*rows)[(*n)++];
                char key[64];
                if (cJSON_IsNumber(qid)) snprintf(key, sizeof key, "%.0f", qid->valuedouble);
                r->key = cJSON_IsNumber(qid) ? gn_strdup(key) : gn_strdup(qid->valuestring);
                r->qid = cJSON_Duplicate(qid, 1);
                r->prompt = prompt ? gn_strdup(prompt) : NULL;
                r->answer = gn_strdup(gen);
                if (aid) r->answer_id = gn_strdup(aid);
                else {
                    r->answer_id = gn_malloc(23);
                    short_id(r->answer_id, fnv(r->key, fnv(sys, 0xcbf29ce484222325ull)),
                             fnv(gen, fnv(r->key, 0x84222325cbf29ce4ull)));
                }
                cJSON_Delete(o);
            }
        }
    }
    free(data);
    return 0;
}

int rate_init(const srv_opts *o) {
    memset(&R, 0, sizeof R);
    if (!o->rate_a && !o->rate_b) return 0;
    if (!o->rate_a || !o->rate_b) {
        fprintf(stderr, "guanaco serve: /rate needs both --rate-a and --rate-b (two generations files)\n");
        return -1;
    }
    const char *idf = "question_id";
    R.sys_a = gn_jsonl_stem(o->rate_a);
    R.sys_b = gn_jsonl_stem(o->rate_b);
    if (load_gens(o->rate_a, R.sys_a, &R.ra, &R.na, &idf) || load_gens(o->rate_b, R.sys_b, &R.rb, &R.nb, &idf)) return -1;
    R.id_field = gn_strdup(idf);
    R.pairs = gn_calloc((size_t)R.na + 1, sizeof(pair));
    for (int i = 0; i < R.na; i++)
        for (int k = 0; k < R.nb; k++)
            if (!strcmp(R.ra[i].key, R.rb[k].key)) {
                R.pairs[R.n_pairs++] = (pair){i, k, 0};
                break;
            }
    if (R.n_pairs == 0) {
        fprintf(stderr, "guanaco serve: %s and %s share no question_id: nothing to rate\n", o->rate_a, o->rate_b);
        return -1;
    }
    if (o->ratings_file) R.path = gn_strdup(o->ratings_file);
    else {
        size_t n = strlen(R.sys_a) + strlen(R.sys_b) + 64;
        R.path = gn_malloc(n);
        snprintf(R.path, n, "%s-vs-%s-human-reviewer-threeclass.jsonl", R.sys_a, R.sys_b);
    }
    R.enabled = 1;
    fprintf(stderr, "serve: /rate: %d pairs (%s vs %s), judgments go to %s\n", R.n_pairs, R.sys_a, R.sys_b, R.path);
    return 0;
}

static void free_rows(gen_row *r, int n) {
    for (int i = 0; i < n; i++) {
        free(r[i].key); cJSON_Delete(r[i].qid); free(r[i].prompt); free(r[i].answer); free(r[i].answer_id);
    }
    free(r);
}

void rate_free(void) {
    free_rows(R.ra, R.na);
    free_rows(R.rb, R.nb);
    free(R.pairs); free(R.sys_a); free(R.sys_b); free(R.path); free(R.id_field);
    memset(&R, 0, sizeof R);
}

static int not_enabled(gn_buf *out) {
    api_error_json(out, "rating is not set up: start the server with --rate-a FILE --rate-b FILE (two generations files)",
                   "invalid_request_error", NULL, "rating_disabled");
    return 404;
}

int rate_pair_json(gn_buf *out) {
    if (!R.enabled) return not_enabled(out);
    // a random pair among those rated least often by this server
    int least = R.pairs[0].rated, count = 0;
    for (int i = 0; i < R.n_pairs; i++) if (R.pairs[i].rated < least) least = R.pairs[i].rated;
    for (int i = 0; i < R.n_pairs; i++) count += R.pairs[i].rated == least;
    int pick = (int)(srv_rand64() % (uint64_t)count), k = 0;
    for (; k < R.n_pairs; k++) if (R.pairs[k].rated == least && pick-- == 0) break;
    int swap = (int)(srv_rand64() & 1);
    const gen_row *a = &R.ra[R.pairs[k].a], *b = &R.rb[R.pairs[k].b];
    const gen_row *first = swap ? b : a, *second = swap ? a : b;
    const char *prompt = a->prompt ? a->prompt : b->prompt ? b->prompt : "(no prompt text in the files)";
    gn_buf_printf(out, "{\"pair\":\"%d.%d\",\"question_id\":", k, swap);
    sb_json_str(out, a->key, strlen(a->key));
    gn_buf_puts(out, ",\"prompt\":");
    sb_json_str(out, prompt, strlen(prompt));
    gn_buf_puts(out, ",\"answers\":[");
    sb_json_str(out, first->answer, strlen(first->answer));
    gn_buf_puts(out, ",");
    sb_json_str(out, second->answer, strlen(second->answer));
    gn_buf_printf(out, "],\"rated\":%d,\"pairs\":%d}", R.n_written, R.n_pairs);
    return 200;
}

static int verdict_error(gn_buf *out, const char *msg) {
    api_error_json(out, msg, "invalid_request_error", NULL, "invalid_value");
    return 400;
}

int rate_verdict(const char *body, size_t len, gn_buf *out) {
    if (!R.enabled) return not_enabled(out);
    if (!utf8_valid(body, len)) return verdict_error(out, "the request body is not valid UTF-8");
    cJSON *o = cJSON_ParseWithLength(body, len);
    if (!o || !cJSON_IsObject(o)) { cJSON_Delete(o); return verdict_error(out, "expected a JSON object"); }
    const char *pr = str_field(o, "pair"), *choice = str_field(o, "choice");
    const char *reviewer = str_field(o, "reviewer"), *comment = str_field(o, "comment");
    int k = -1, swap = -1, used = 0;
    if (!pr || sscanf(pr, "%d.%d%n", &k, &swap, &used) != 2 || pr[used] || k < 0 || k >= R.n_pairs || swap < 0 || swap > 1) {
        cJSON_Delete(o);
        return verdict_error(out, "'pair' must be the id that /rate/pair returned");
    }
    // the page's choice is by position; the file's score is by system (A = 1, B = 2)
    int score;
    if (choice && !strcmp(choice, "tie")) score = 3;
    else if (choice && (!strcmp(choice, "1") || !strcmp(choice, "2"))) {
        int first_wins = choice[0] == '1';
        int a_wins = swap ? !first_wins : first_wins;
        score = a_wins ? 1 : 2;
    } else {
        cJSON_Delete(o);
        return verdict_error(out, "'choice' must be \"1\", \"2\" or \"tie\"");
    }
    const gen_row *a = &R.ra[R.pairs[k].a], *b = &R.rb[R.pairs[k].b];
    char rid[23];
    short_id(rid, srv_rand64(), srv_rand64());
    cJSON *row = cJSON_CreateObject();
    cJSON_AddStringToObject(row, "review_id", rid);
    cJSON_AddItemToObject(row, R.id_field, cJSON_Duplicate(a->qid, 1));
    cJSON_AddStringToObject(row, "answer1_id", a->answer_id);
    cJSON_AddStringToObject(row, "answer2_id", b->answer_id);
    cJSON_AddNumberToObject(row, "reviewer_id", 0);
    cJSON *meta = cJSON_AddObjectToObject(row, "metadata");
    cJSON_AddStringToObject(meta, "reviewer", reviewer && reviewer[0] ? reviewer : "human");
    cJSON_AddStringToObject(meta, "system1", R.sys_a);
    cJSON_AddStringToObject(meta, "system2", R.sys_b);
    cJSON_AddStringToObject(meta, "shown_first", swap ? "2" : "1");
    cJSON_AddStringToObject(meta, "source", "guanaco serve /rate");
    cJSON_AddNumberToObject(meta, "time", (double)time(NULL));
    gn_buf text = {0};
    if (comment && comment[0]) { gn_buf_puts(&text, comment); gn_buf_puts(&text, "\n\n"); }
    gn_buf_printf(&text, "%d", score);
    cJSON_AddStringToObject(row, "text", text.buf);
    gn_buf_free(&text);
    cJSON_AddNumberToObject(row, "score", score);
    cJSON_AddStringToObject(row, "model1", R.sys_a); // as `eval judge` writes: elo needs no file-name parsing
    cJSON_AddStringToObject(row, "model2", R.sys_b);
    char *line = cJSON_PrintUnformatted(row);
    cJSON_Delete(row);
    cJSON_Delete(o);
    size_t n = strlen(line);
    line = gn_realloc(line, n + 2);
    line[n++] = '\n';
    line[n] = 0;
    int fd = open(R.path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    ssize_t w = fd >= 0 ? write(fd, line, n) : -1; // one write: lines never interleave
    if (fd >= 0) close(fd);
    free(line);
    if (w != (ssize_t)n) {
        api_error_json(out, "could not write the judgments file (see the server's --ratings-file)", "server_error", NULL, NULL);
        gn_log(GN_LOG_ERROR, "serve: cannot append to %s", R.path);
        return 500;
    }
    R.pairs[k].rated++;
    R.n_written++;
    gn_buf_printf(out, "{\"ok\":true,\"score\":%d,\"review_id\":\"%s\",\"rated\":%d}", score, rid, R.n_written);
    return 200;
}

#endif // GN_HAVE_MHD
