/*
 * fuzz_judgments.c — the eval readers (src/eval/): the GPT-4 judgments JSONL
 * that `guanaco eval elo` reads (elo.c gn_judgments_add), and beside it the
 * other eval inputs: generations JSONL (judge.c gn_gen_load), judge prompt
 * templates (gn_judge_templates_load + gn_judge_render), qlora-format MMLU
 * (mmlu.c), CSV (csv.c, also MMLU .csv), CrowS-Pairs (crows.c) and the
 * verdict parser applied to a review text.
 * First input byte (mod 7) selects the reader; the rest is the file.
 */
#include "fuzz_common.h"
#include "eval/eval.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc; (void)argv;
    fz_setup();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const uint8_t *d = data + 1;
    size_t n = size - 1;
    char p[512];
    switch (data[0] % 7) {
    case 0: { // judgments, with one alias, raw and normalized names
        fz_write("a-vs-b-gpt-4-reviewer-threeclass.jsonl", d, n, p, sizeof p);
        gn_judgments j;
        gn_judgments_init(&j);
        const char *alias[] = {"a=b"};
        gn_judgments_opts o = {(int)(data[0] >> 7), alias, 1};
        if (gn_judgments_add(&j, p, &o) == GN_OK && j.n_match > 0 && j.n_systems > 0) {
            gn_elo_opts eo;
            gn_elo_defaults(&eo);
            eo.rounds = 3;
            gn_elo_result r;
            if (gn_elo_run(j.match, j.n_match, j.n_systems, &eo, &r) == GN_OK) gn_elo_result_free(&r);
        }
        gn_judgments_free(&j);
        break;
    }
    case 1: { // generations
        fz_write("gen.jsonl", d, n, p, sizeof p);
        gn_gen_row *rows = NULL;
        int nr = 0, skipped = 0;
        if (gn_gen_load(p, &rows, &nr, &skipped) == GN_OK) gn_gen_free(rows, nr);
        break;
    }
    case 2: { // judge templates
        fz_write("prompts.jsonl", d, n, p, sizeof p);
        gn_judge_template *t = NULL;
        int nt = 0;
        if (gn_judge_templates_load(p, &t, &nt) == GN_OK) {
            const gn_judge_template *g = gn_judge_template_for(t, nt, "general");
            if (g) free(gn_judge_render(g, "q {answer_1}", "a1 {question}", "a2"));
            gn_judge_templates_free(t, nt);
        }
        break;
    }
    case 3: { // qlora-format MMLU
        fz_write("five_shot_mmlu_val.json", d, n, p, sizeof p);
        gn_mmlu_set s;
        memset(&s, 0, sizeof s);
        (void)gn_mmlu_load_qlora(&s, p);
        gn_mmlu_set_free(&s);
        break;
    }
    case 4: { // CSV, then as an MMLU csv
        gn_csv c;
        char *text = gn_malloc(n + 1);
        memcpy(text, d, n);
        text[n] = 0;
        if (gn_csv_parse(&c, text, n, "fuzz.csv") == GN_OK) {
            (void)gn_csv_column(&c, "sent_more");
            gn_csv_free(&c);
        }
        free(text);
        fz_write("anatomy_dev.csv", d, n, p, sizeof p);
        gn_mmlu_set s;
        memset(&s, 0, sizeof s);
        (void)gn_mmlu_load_csv(&s, p, NULL);
        gn_mmlu_set_free(&s);
        break;
    }
    case 5: { // CrowS-Pairs
        fz_write("crows.csv", d, n, p, sizeof p);
        gn_crows_pair *pairs = NULL;
        int np = 0, skipped = 0;
        if (gn_crows_load(p, &pairs, &np, &skipped) == GN_OK) gn_crows_free(pairs, np);
        break;
    }
    default: { // a judge's review text
        char *text = gn_malloc(n + 1);
        memcpy(text, d, n);
        text[n] = 0;
        (void)gn_judge_parse_verdict(text);
        char *name = gn_system_name_normalize(text);
        free(name);
        char *a = NULL, *b = NULL;
        if (gn_judgment_file_systems(text, &a, &b) == 0) { free(a); free(b); }
        free(text);
        break;
    }
    }
    return 0;
}
