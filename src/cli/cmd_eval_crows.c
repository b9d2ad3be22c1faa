/*
 * cmd_eval_crows.c — `guanaco eval crows`: CrowS-Pairs stereotype preference per bias type
 * (gn_crows_load, gn_lm_loglik, gn_crows_summarize).
 */
#include "eval_cli.h"

#include <cjson/cJSON.h> // --json, --predictions
#include <stdio.h>       // printf
#include <stdlib.h>      // free
#include <string.h>      // strcmp

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

int cmd_eval_crows(int argc, char **argv) {
    cli_model mo;
    cli_model_init(&mo, CLI_CTX);
    const char *data = NULL, *pred_path = NULL, *json = NULL;
    int limit = 0, bos = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { printf("%s%s", CROWS_HELP, CLI_MODEL_HELP); ecli_print_data_dirs(stdout); return 0; }
        int r = cli_model_flag(&mo, argc, argv, &i);
        if (r < 0) return 2;
        if (r) continue;
        if (!strcmp(a, "--data")) { if (!(data = cli_val(argc, argv, &i))) return 2; }
        else if (!strcmp(a, "--limit")) { if (!(v = cli_val(argc, argv, &i)) || cli_int(a, v, 1, 1 << 30, &limit)) return 2; }
        else if (!strcmp(a, "--no-bos")) bos = 0;
        else if (!strcmp(a, "--bos")) bos = 1;
        else if (!strcmp(a, "--predictions")) { if (!(pred_path = cli_val(argc, argv, &i))) return 2; }
        else if (!strcmp(a, "--json")) { if (!(json = cli_val(argc, argv, &i))) return 2; }
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
    gn_model *m = cli_model_load(&mo, &ad);
    if (!m) { gn_crows_free(p, n_loaded); return 1; }
    int rc = 1;
    gn_lm lm;
    gn_lm_init(&lm, m, ad, mo.ctx);
    size_t nd = (size_t)(n > 0 ? n : 1);
    double *ll_more = gn_calloc(nd, sizeof(double)), *ll_less = gn_calloc(nd, sizeof(double));
    gn_crows_summary sum = {0};
    gn_buf tb = {0};
    cli_progress pg;
    cli_progress_start(&pg, "crows");
    for (int i = 0; i < n; i++) {
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
        ll_more[i] = ll[0];
        ll_less[i] = ll[1];
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
            ecli_tb_json_line(&tb, o);
        }
        cli_progress_show(&pg, i + 1, n, NULL);
    }
    cli_progress_end(&pg, n, n);
    gn_crows_summarize(p, ll_more, ll_less, n, &sum);
    printf("CrowS-Pairs: %d pairs; %% of pairs where log p(sent_more) > log p(sent_less) (higher = more biased, 50 = none)\n", n);
    printf("%-20s  %6s  %8s  %14s  %14s\n", "bias type", "pairs", "score %", "stereo pairs %", "anti pairs %");
    cJSON *root = cJSON_CreateObject(), *jt = cJSON_AddObjectToObject(root, "bias_types");
    for (int t = 0; t < sum.n_types; t++) {
        const gn_crows_type *ty = &sum.type[t];
        printf("%-20s  %6d  %8.2f  %14.2f  %14.2f\n", ty->bias, ty->pairs, ty->score, ty->stereo_score, ty->antistereo_score);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "pairs", ty->pairs);
        cJSON_AddNumberToObject(o, "score", ty->score);
        cJSON_AddItemToObject(o, "stereo_score", ecli_json_num(ty->stereo_score));
        cJSON_AddItemToObject(o, "antistereo_score", ecli_json_num(ty->antistereo_score));
        cJSON_AddItemToObject(jt, ty->bias, o);
    }
    printf("%-20s  %6d  %8.2f\n", "overall", n, sum.score);
    cJSON_AddNumberToObject(root, "pairs", n);
    cJSON_AddItemToObject(root, "overall", ecli_json_num(sum.score));
    cJSON_AddNumberToObject(root, "skipped_rows", skipped);
    rc = 0;
    if (pred_path && ecli_write_text(pred_path, tb.buf ? tb.buf : "")) rc = 1;
    if (json) { if (ecli_write_json(json, root)) rc = 1; }
    else cJSON_Delete(root);
done:
    gn_buf_free(&tb);
    gn_crows_summary_free(&sum);
    free(ll_more);
    free(ll_less);
    gn_lm_free(&lm);
    gn_crows_free(p, n_loaded);
    gn_adapter_free(ad);
    gn_model_free(m);
    return rc;
}
