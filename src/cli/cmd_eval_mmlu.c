/*
 * cmd_eval_mmlu.c — `guanaco eval mmlu`: MMLU accuracy per subject and the mean over subjects
 * (gn_mmlu_select, gn_mmlu_score, gn_mmlu_summarize).
 */
#include "eval_cli.h"

#include <cjson/cJSON.h> // --json, --predictions
#include <stdio.h>       // printf
#include <stdlib.h>      // free
#include <string.h>      // strcmp

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

int cmd_eval_mmlu(int argc, char **argv) {
    cli_model mo;
    cli_model_init(&mo, CLI_CTX);
    const char *data = NULL, *split = "test", *subjects = NULL, *pred_path = NULL, *json = NULL, *dump = NULL;
    int shots = 5, limit = 0, bos = 1, rc = 2;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { printf("%s%s", MMLU_HELP, CLI_MODEL_HELP); ecli_print_data_dirs(stdout); return 0; }
        int r = cli_model_flag(&mo, argc, argv, &i);
        if (r < 0) return 2;
        if (r) continue;
        if (!strcmp(a, "--data")) { if (!(data = cli_val(argc, argv, &i))) return 2; }
        else if (!strcmp(a, "--split")) {
            if (!(split = cli_val(argc, argv, &i))) return 2;
            if (strcmp(split, "test") && strcmp(split, "val")) return cli_fail("--split: '%s' (expected test or val)", split), 2;
        }
        else if (!strcmp(a, "--shots")) { if (!(v = cli_val(argc, argv, &i)) || cli_int(a, v, 0, 100, &shots)) return 2; }
        else if (!strcmp(a, "--subjects")) { if (!(subjects = cli_val(argc, argv, &i))) return 2; }
        else if (!strcmp(a, "--limit")) { if (!(v = cli_val(argc, argv, &i)) || cli_int(a, v, 1, 1 << 30, &limit)) return 2; }
        else if (!strcmp(a, "--no-bos")) bos = 0;
        else if (!strcmp(a, "--bos")) bos = 1;
        else if (!strcmp(a, "--predictions")) { if (!(pred_path = cli_val(argc, argv, &i))) return 2; }
        else if (!strcmp(a, "--json")) { if (!(json = cli_val(argc, argv, &i))) return 2; }
        else if (!strcmp(a, "--dump-prompts")) { if (!(dump = cli_val(argc, argv, &i))) return 2; }
        else return cli_fail("eval mmlu: unknown option '%s' (see --help)", a), 2;
    }
    if (!data && !(data = ecli_default_data("mmlu")))
        return cli_fail("eval mmlu: --data DIR is required (no mmlu/ in %s, $GN_DATA or %s)", GN_DATADIR, GN_SRCDATA), 2;
    // ---- load the questions and the exemplars
    gn_mmlu_run run;
    gn_mmlu_select_opts so = {.split = split, .subjects = subjects, .shots = shots, .limit = limit};
    gn_model *m = NULL;
    gn_adapter *ad = NULL;
    gn_mmlu_pred *preds = NULL;
    if (gn_mmlu_select(&run, data, &so)) return cli_fail_lib();
    rc = 1;
    // the run's parts under their old names
    const gn_mmlu_set test = run.test, dev = run.dev, sel = run.sel;
    char **subj = run.subject;
    const int nsubj = run.n_subjects, *first = run.first, *count = run.count, *dfirst = run.dfirst, *dcount = run.dcount;
    if (test.n_skipped || dev.n_skipped)
        fprintf(stderr, "guanaco: %d malformed MMLU rows skipped\n", test.n_skipped + dev.n_skipped);
    if (sel.n == 0) { cli_fail("eval mmlu: no questions selected"); goto done; }
    if (dump) {
        gn_buf tb = {0};
        for (int s = 0; s < nsubj; s++)
            for (int i = first[s]; i < first[s] + count[s]; i++) {
                char *p = gn_mmlu_prompt(dev.item + dfirst[s], dcount[s], &sel.item[i]);
                cJSON *o = cJSON_CreateObject();
                cJSON_AddStringToObject(o, "subject", subj[s]);
                cJSON_AddNumberToObject(o, "index", i - first[s]);
                cJSON_AddStringToObject(o, "prompt", p);
                cJSON_AddNumberToObject(o, "answer", sel.item[i].answer);
                ecli_tb_json_line(&tb, o);
                free(p);
            }
        rc = ecli_write_text(dump, tb.buf ? tb.buf : "");
        gn_buf_free(&tb);
        goto done;
    }
    // ---- score
    if (!(m = cli_model_load(&mo, &ad))) goto done;
    {
        const gn_tokenizer *tok = gn_model_tokenizer(m);
        int32_t letters[4];
        if (gn_mmlu_letter_ids(tok, letters)) { cli_fail_lib(); goto done; }
        gn_lm lm;
        gn_lm_init(&lm, m, ad, mo.ctx);
        preds = gn_calloc((size_t)sel.n, sizeof(gn_mmlu_pred));
        cli_progress pg;
        cli_progress_start(&pg, "mmlu");
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
                    goto done;
                }
                n_trunc += preds[i].truncated;
                n_fewer += preds[i].shots < dcount[s];
                cli_progress_show(&pg, ++done_n, sel.n, subj[s]);
            }
            subj_s[s] = gn_time_s() - ts;
        }
        cli_progress_end(&pg, done_n, sel.n);
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
        gn_mmlu_summary sum;
        gn_mmlu_summarize(&run, preds, &sum);
        cJSON *root = cJSON_CreateObject(), *js = cJSON_CreateObject();
        gn_buf tb = {0};
        for (int s = 0; s < nsubj; s++) {
            for (int i = first[s]; i < first[s] + count[s]; i++) {
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
                    ecli_tb_json_line(&tb, o);
                }
            }
            if (!count[s]) continue;
            int c = sum.correct[s];
            double acc = (double)c / count[s];
            printf("%-*s  %6d  %7d  %8.4f\n", w, subj[s], count[s], c, acc);
            cJSON *o = cJSON_CreateObject();
            cJSON_AddNumberToObject(o, "n", count[s]);
            cJSON_AddNumberToObject(o, "correct", c);
            cJSON_AddNumberToObject(o, "accuracy", acc);
            cJSON_AddNumberToObject(o, "wall_s", subj_s[s]);
            cJSON_AddItemToObject(js, subj[s], o);
        }
        double mean = sum.mean, micro = sum.micro;
        int tot_c = sum.total_correct;
        gn_mmlu_summary_free(&sum);
        char wt[32];
        cli_fmt_time(wt, sizeof wt, wall);
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
        if (pred_path && ecli_write_text(pred_path, tb.buf ? tb.buf : "")) rc = 1;
        gn_buf_free(&tb);
        if (json) { if (ecli_write_json(json, root)) rc = 1; }
        else cJSON_Delete(root);
        free(subj_s);
    }
done:
    free(preds);
    gn_mmlu_run_free(&run);
    gn_adapter_free(ad);
    if (m) gn_model_free(m);
    return rc;
}
