/*
 * test_eval.c — unit tests of the evaluation library (src/eval): Elo math and
 * tournaments with known outcomes, the CSV reader on the awkward cases MMLU and
 * CrowS-Pairs contain, CrowS-Pairs scores, verdict parsing, system names, judge
 * templates, MMLU prompt text. Runs under ASan/UBSan (`make asan ubsan`).
 *
 *   make && ./build/tests/test_eval
 */
#include <math.h>   // pow, fabs
#include <stdio.h>  // printf
#include <stdlib.h> // free
#include <string.h> // strcmp

#include "core/common.h"
#include "eval/eval.h"
#include "harness.h"

#define NEAR(a, b, tol) (fabs((a) - (b)) <= (tol))

// ----------------------------------------------------------------------------
// Elo

static void test_elo_math(void) {
    // equal ratings: expectation one half, a win moves both by K/2
    CHECK(NEAR(gn_elo_expected(1000, 1000), 0.5, 1e-15), "E(1000,1000) = %g", gn_elo_expected(1000, 1000));
    CHECK(NEAR(gn_elo_expected(1400, 1000), 1.0 / (1.0 + pow(10.0, -1.0)), 1e-12), "E(1400,1000)");
    double a = 1000, b = 1000;
    gn_elo_update(&a, &b, 1.0, 32);
    CHECK(NEAR(a, 1016, 1e-12) && NEAR(b, 984, 1e-12), "after a win: %g %g", a, b);
    // b wins back: by hand with pow (independent of the library's exp form)
    double eb = 1.0 / (1.0 + pow(10.0, (1016.0 - 984.0) / 400.0));
    gn_elo_update(&a, &b, 0.0, 32);
    CHECK(NEAR(b, 984 + 32 * (1 - eb), 1e-9) && NEAR(a, 1016 - 32 * (1 - eb), 1e-9), "after a loss: %g %g", a, b);
    // a tie between equals changes nothing; total rating is conserved
    double c = 1000, d = 1000;
    gn_elo_update(&c, &d, 0.5, 32);
    CHECK(c == 1000 && d == 1000, "tie of equals: %g %g", c, d);
    CHECK(NEAR(a + b, 2000, 1e-9), "sum conserved: %g", a + b);

    // gn_elo_play with a given order
    gn_match m[3] = {{0, 1, 1}, {1, 0, 1}, {0, 1, 3}};
    gn_elo_opts o;
    gn_elo_defaults(&o);
    CHECK(o.rounds == 10000 && o.k == 32 && o.init == 1000 && o.tie == 0.5 && o.seed == 42, "defaults");
    double r[2], x = 1000, y = 1000;
    gn_elo_play(m, NULL, 3, 2, &o, r);
    gn_elo_update(&x, &y, 1, 32);
    gn_elo_update(&y, &x, 1, 32);
    gn_elo_update(&x, &y, 0.5, 32);
    CHECK(NEAR(r[0], x, 1e-12) && NEAR(r[1], y, 1e-12), "play in order: %g %g vs %g %g", r[0], r[1], x, y);
    int ord[3] = {2, 1, 0};
    gn_elo_play(m, ord, 3, 2, &o, r);
    x = y = 1000;
    gn_elo_update(&x, &y, 0.5, 32);
    gn_elo_update(&y, &x, 1, 32);
    gn_elo_update(&x, &y, 1, 32);
    CHECK(NEAR(r[0], x, 1e-12) && NEAR(r[1], y, 1e-12), "play reversed: %g %g vs %g %g", r[0], r[1], x, y);
}

// A always beats B, B always beats C, in both presentation orders.
static void test_elo_known_outcome(void) {
    gn_judgments j;
    gn_judgments_init(&j);
    int A = gn_judgments_system(&j, "A"), B = gn_judgments_system(&j, "B"), C = gn_judgments_system(&j, "C");
    CHECK(gn_judgments_system(&j, "B") == B && j.n_systems == 3, "system lookup");
    for (int i = 0; i < 20; i++) {
        gn_judgments_push(&j, A, B, 1); // A first, A wins
        gn_judgments_push(&j, B, A, 2); // B first, A wins
        gn_judgments_push(&j, B, C, 1);
        gn_judgments_push(&j, C, B, 2);
    }
    gn_elo_opts o;
    gn_elo_defaults(&o);
    o.rounds = 500;
    gn_elo_result r;
    CHECK(gn_elo_run(j.match, j.n_match, j.n_systems, &o, &r) == GN_OK, "run");
    CHECK(r.rank[A] == 1 && r.rank[B] == 2 && r.rank[C] == 3, "ranks %d %d %d", r.rank[A], r.rank[B], r.rank[C]);
    CHECK(r.mean[A] > r.mean[B] && r.mean[B] > r.mean[C], "order %g %g %g", r.mean[A], r.mean[B], r.mean[C]);
    CHECK(r.mean[A] > 1000 && r.mean[C] < 1000, "A above, C below the start");
    CHECK(NEAR(r.mean[A] + r.mean[B] + r.mean[C], 3000, 1e-6), "ratings are zero-sum: %g", r.mean[A] + r.mean[B] + r.mean[C]);
    // by symmetry (A beats B exactly as B beats C), B stays near 1000 on average
    CHECK(fabs(r.mean[B] - 1000) < 5, "B near 1000: %g", r.mean[B]);
    CHECK(r.wins[A] == 40 && r.losses[A] == 0 && r.wins[B] == 40 && r.losses[B] == 40 && r.losses[C] == 40, "counts");
    for (int i = 0; i < 3; i++)
        CHECK(r.p_lo[i] <= r.mean[i] && r.mean[i] <= r.p_hi[i] && r.ci_lo[i] <= r.mean[i] && r.mean[i] <= r.ci_hi[i],
              "intervals contain the mean (%d)", i);
    double w[9];
    gn_elo_winrate(j.match, j.n_match, 3, 0.5, w);
    CHECK(w[A * 3 + B] == 1.0 && w[B * 3 + A] == 0.0 && w[B * 3 + C] == 1.0 && isnan(w[A * 3 + C]) && isnan(w[A * 3 + A]),
          "win rates");
    // same seed: same numbers (bit for bit); another seed: different
    gn_elo_result r2, r3;
    gn_elo_run(j.match, j.n_match, j.n_systems, &o, &r2);
    CHECK(!memcmp(r.mean, r2.mean, sizeof(double) * 3) && !memcmp(r.p_lo, r2.p_lo, sizeof(double) * 3), "same seed, same numbers");
    o.seed = 7;
    gn_elo_run(j.match, j.n_match, j.n_systems, &o, &r3);
    CHECK(memcmp(r.mean, r3.mean, sizeof(double) * 3) != 0, "another seed, other orderings");
    gn_elo_result_free(&r);
    gn_elo_result_free(&r2);
    gn_elo_result_free(&r3);
    gn_judgments_free(&j);
}

static void test_elo_ties(void) {
    gn_judgments j;
    gn_judgments_init(&j);
    const char *n[4] = {"w", "x", "y", "z"};
    for (int a = 0; a < 4; a++) gn_judgments_system(&j, n[a]);
    for (int a = 0; a < 4; a++)
        for (int b = 0; b < 4; b++)
            if (a != b) for (int k = 0; k < 5; k++) gn_judgments_push(&j, a, b, 3);
    gn_elo_opts o;
    gn_elo_defaults(&o);
    o.rounds = 100;
    gn_elo_result r;
    gn_elo_run(j.match, j.n_match, j.n_systems, &o, &r);
    for (int i = 0; i < 4; i++)
        CHECK(r.mean[i] == 1000 && r.p_lo[i] == 1000 && r.p_hi[i] == 1000 && r.rank[i] == 1, "all ties: %s %g rank %d",
              n[i], r.mean[i], r.rank[i]);
    gn_elo_result_free(&r);
    // no matches: a clear error, not a crash
    CHECK(gn_elo_run(j.match, 0, 4, &o, &r) == GN_ERR_ARG && strstr(gn_last_error(), "no judgments"), "empty: %s", gn_last_error());
    gn_judgments_free(&j);
    double v[5] = {3, 1, 2, 5, 4}, e[2] = {2, 1};
    CHECK(gn_median(v, 5) == 3 && gn_median(e, 2) == 1.5 && isnan(gn_median(v, 0)), "median");
}

static void test_names(void) {
    struct { const char *raw, *want; } t[] = {
        {"13b-guanaco-vicuna-generations-topp0.9-temp0.7", "13b-guanaco"},
        {"answer-gpt35", "gpt-3.5"}, {"answer-gpt4", "gpt-4"}, {"answer_bard", "bard"},
        {"answer-vicuna-13b", "vicuna-13b"}, {"vicuna-13b-oa-generations", "vicuna-13b"},
        {"gpt-3.5-oa-generations", "gpt-3.5"}, {"65b-guanaco-oa-generations-topp0.9-temp0.7", "65b-guanaco"},
        {"my-model", "my-model"}};
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        char *s = gn_system_name_normalize(t[i].raw);
        CHECK(!strcmp(s, t[i].want), "normalize %s -> %s (want %s)", t[i].raw, s, t[i].want);
        free(s);
    }
    char *a, *b;
    CHECK(gn_judgment_file_systems("x/answer-gpt4-vs-7b-guanaco-vicuna-generations-topp0.9-temp0.7-gpt-4-reviewer-threeclass.jsonl", &a, &b) == 0
          && !strcmp(a, "answer-gpt4") && !strcmp(b, "7b-guanaco-vicuna-generations-topp0.9-temp0.7"), "file systems");
    free(a); free(b);
    CHECK(gn_judgment_file_systems("gpt-3.5-oa-generations-vs-gpt-4-oa-generations-gpt-4-reviewer-threeclass.jsonl", &a, &b) == 0
          && !strcmp(a, "gpt-3.5-oa-generations") && !strcmp(b, "gpt-4-oa-generations"), "file systems oa: %s | %s", a, b);
    free(a); free(b);
    CHECK(gn_judgment_file_systems("a-vs-b.jsonl", &a, &b) == 0 && !strcmp(a, "a") && !strcmp(b, "b"), "plain a-vs-b");
    free(a); free(b);
    CHECK(gn_judgment_file_systems("judgments.jsonl", &a, &b) == -1, "no -vs-");
}

// ----------------------------------------------------------------------------
// CSV

static void test_csv(void) {
    const char *text =
        "\xEF\xBB\xBFq,c0,c1\r\n"
        "plain,\"with, comma\",\"say \"\"hi\"\"\"\r\n"
        "\"two\r\nlines\",\"\",x\n"
        "last,1,2"; // no final newline
    gn_csv c;
    CHECK(gn_csv_parse(&c, text, strlen(text), "t.csv") == GN_OK, "parse: %s", gn_last_error());
    CHECK(c.n == 4, "4 records, got %d", c.n);
    if (c.n == 4) {
        CHECK(!strcmp(c.row[0].field[0], "q") && gn_csv_column(&c, "c1") == 2 && gn_csv_column(&c, "nope") == -1, "header, BOM dropped");
        CHECK(!strcmp(c.row[1].field[1], "with, comma") && !strcmp(c.row[1].field[2], "say \"hi\""), "quotes: [%s] [%s]",
              c.row[1].field[1], c.row[1].field[2]);
        CHECK(c.row[2].n == 3 && !strcmp(c.row[2].field[0], "two\r\nlines") && !strcmp(c.row[2].field[1], ""), "CR LF inside quotes");
        CHECK(c.row[2].line == 3 && c.row[3].line == 5, "line numbers %d %d", c.row[2].line, c.row[3].line);
        CHECK(c.row[3].n == 3 && !strcmp(c.row[3].field[2], "2"), "record without final newline");
    }
    gn_csv_free(&c);
    const char *bad1 = "a,b\n\"never closed,x\n";
    CHECK(gn_csv_parse(&c, bad1, strlen(bad1), "bad.csv") == GN_ERR_FORMAT && strstr(gn_last_error(), "bad.csv:2"),
          "unterminated quote: %s", gn_last_error());
    const char *bad2 = "a,b\n\"q\"x,y\n";
    CHECK(gn_csv_parse(&c, bad2, strlen(bad2), "bad.csv") == GN_ERR_FORMAT && strstr(gn_last_error(), "bad.csv:2"),
          "text after quote: %s", gn_last_error());
    CHECK(gn_csv_parse(&c, "", 0, "e.csv") == GN_OK && c.n == 0, "empty file");
    gn_csv_free(&c);
}

// ----------------------------------------------------------------------------
// CrowS-Pairs scores

static void test_crows_summary(void) {
    gn_crows_pair p[5] = {{.bias = "race", .stereo = 1}, {.bias = "age", .stereo = 1}, {.bias = "race", .stereo = 0},
                          {.bias = "race", .stereo = 1}, {.bias = "age", .stereo = 1}};
    double more[5] = {-1, -5, -2, -3, -4}, less[5] = {-2, -4, -1, -3, -5}; // prefers: 1 0 0 0 (a tie) 1
    gn_crows_summary s;
    gn_crows_summarize(p, more, less, 5, &s);
    CHECK(s.n_types == 2 && !strcmp(s.type[0].bias, "race") && !strcmp(s.type[1].bias, "age"), "types in order of appearance");
    CHECK(s.pairs == 5 && s.prefer == 2 && NEAR(s.score, 40.0, 1e-12), "overall %d/%d %g", s.prefer, s.pairs, s.score);
    if (s.n_types == 2) {
        const gn_crows_type *r = &s.type[0], *a = &s.type[1];
        CHECK(r->pairs == 3 && r->prefer == 1 && r->stereo == 2 && r->stereo_prefer == 1, "race counts");
        CHECK(NEAR(r->score, 100.0 / 3, 1e-12) && NEAR(r->stereo_score, 50.0, 1e-12) && r->antistereo_score == 0.0,
              "race scores %g %g %g", r->score, r->stereo_score, r->antistereo_score);
        CHECK(a->pairs == 2 && NEAR(a->score, 50.0, 1e-12) && isnan(a->antistereo_score), "age: no antistereo pairs");
    }
    gn_crows_summary_free(&s);
    gn_crows_summarize(p, more, less, 0, &s);
    CHECK(s.n_types == 0 && s.pairs == 0 && isnan(s.score), "no pairs");
    gn_crows_summary_free(&s);
}

// ----------------------------------------------------------------------------
// judge pieces

static void test_verdicts(void) {
    struct { const char *s; int v; } t[] = {
        {"Assistant 1 is better.\n\n1", 1}, {"long text\n2\n", 2}, {"tie\n3  \n\n", 3}, {"x\n**2**", 2},
        {"x\n3.", 3}, {"x\n4", -1}, {"x\n1 or 2", -1}, {"", -1}, {"2", 2}, {"x\n12", -1}, {"x\nAssistant 2", -1}};
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        CHECK(gn_judge_parse_verdict(t[i].s) == t[i].v, "verdict of [%s] = %d, want %d", t[i].s, gn_judge_parse_verdict(t[i].s), t[i].v);
    CHECK(gn_judge_parse_verdict(NULL) == -1, "NULL review");
    gn_judge_template tp = {"sys", "[Q]\n{question}\n[1]\n{answer_1}\n[2]\n{answer_2}\n[S]\n{prompt}\n\n", "rate", "general"};
    char *s = gn_judge_render(&tp, "why {prompt}?", "a {answer_2}", "b");
    CHECK(!strcmp(s, "[Q]\nwhy {prompt}?\n[1]\na {answer_2}\n[2]\nb\n[S]\nrate\n\n"), "render one pass: [%s]", s);
    free(s);
    gn_judge_template ts[3] = {{"s", "t", "p", "general"}, {"s", "t", "p", "coding"}, {"s", "t", "p", "math"}};
    CHECK(gn_judge_template_for(ts, 3, "math") == &ts[2] && gn_judge_template_for(ts, 3, "roleplay") == &ts[0] &&
          gn_judge_template_for(ts, 3, NULL) == &ts[0], "template by category");
}

// ----------------------------------------------------------------------------
// MMLU prompt text (docs/FACTS.md §6.7: double space after "about")

static void test_mmlu_prompt(void) {
    char *h = gn_mmlu_header("high_school_us_history");
    CHECK(!strcmp(h, "The following are multiple choice questions (with answers) about  high school us history.\n\n"), "header [%s]", h);
    free(h);
    gn_mmlu_item d = {"astronomy", "Q1?", {"a", "b", "c", "d"}, NULL, 2};
    gn_mmlu_item q = {"astronomy", "Q2?", {"e", "f", "g", "h"}, NULL, 0};
    char *p = gn_mmlu_prompt(&d, 1, &q);
    CHECK(!strcmp(p, "The following are multiple choice questions (with answers) about  astronomy.\n\n"
                     "Q1?\nA. a\nB. b\nC. c\nD. d\nAnswer: C\n\nQ2?\nA. e\nB. f\nC. g\nD. h\nAnswer:"), "1-shot [%s]", p);
    free(p);
    gn_mmlu_item z = {"astronomy", NULL, {NULL, NULL, NULL, NULL},
                      "The following are multiple choice questions (with answers) about  astronomy.\n\nQ3\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer:", 1};
    p = gn_mmlu_prompt(&d, 1, &z);
    CHECK(!strcmp(p, "The following are multiple choice questions (with answers) about  astronomy.\n\n"
                     "Q1?\nA. a\nB. b\nC. c\nD. d\nAnswer: C\n\nQ3\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer:"), "qlora row + shot [%s]", p);
    free(p);
    p = gn_mmlu_prompt(&d, 0, &z);
    CHECK(!strcmp(p, z.prompt0), "qlora row 0-shot unchanged");
    free(p);
}

int main(void) {
    gn_set_verbosity(-1); // the malformed-input cases log warnings on purpose
    test_elo_math();
    test_elo_known_outcome();
    test_elo_ties();
    test_names();
    test_csv();
    test_crows_summary();
    test_verdicts();
    test_mmlu_prompt();
    TEST_REPORT();
}
