/*
 * cmd_eval_ppl.c — `guanaco eval ppl`: perplexity of a text or JSONL file with HF's strided
 * sliding window (gn_ppl_doc).
 */
#include "eval_cli.h"

#include <cjson/cJSON.h> // JSONL input, --json
#include <math.h>        // exp
#include <stdio.h>       // printf
#include <stdlib.h>      // free
#include <string.h>      // strcmp

static const char PPL_HELP[] =
    "usage: guanaco eval ppl -m MODEL FILE [options]\n"
    "Perplexity with HF's strided sliding window: windows of --ctx tokens moving by --stride;\n"
    "each window scores only the tokens no earlier window scored (so each token after the first\n"
    "has at least ctx-stride tokens of context). FILE is plain text (one document) or JSON lines\n"
    "(.jsonl/.json, gzipped or not: one document per row, its --field). PPL = exp(total NLL / tokens\n"
    "scored). Any FILE ending in .gz is read gunzipped.\n\n"
    "  -f, --file FILE          the text (or give it as the positional argument)\n"
    "  -c, --ctx N              window length (default 512)\n"
    "      --stride N           window step (default ctx/2)\n"
    "      --field NAME         JSONL field with the text (default \"text\")\n"
    "      --limit N            first N documents\n"
    "      --bos / --no-bos     start each document with BOS (default: as the tokenizer does)\n"
    "      --json FILE          results as JSON ('-' = stdout)\n";

int cmd_eval_ppl(int argc, char **argv) {
    cli_model mo;
    cli_model_init(&mo, 0);
    const char *file = NULL, *field = "text", *json = NULL;
    int ctx = 512, stride = 0, limit = 0, bos = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { printf("%s%s", PPL_HELP, CLI_MODEL_HELP); return 0; }
        int r = cli_model_flag(&mo, argc, argv, &i);
        if (r < 0) return 2;
        if (r) continue;
        if (!strcmp(a, "-f") || !strcmp(a, "--file")) { if (!(file = cli_val(argc, argv, &i))) return 2; }
        else if (!strcmp(a, "-c") || !strcmp(a, "--ctx")) { if (!(v = cli_val(argc, argv, &i)) || cli_int(a, v, 2, 1 << 20, &ctx)) return 2; }
        else if (!strcmp(a, "--stride")) { if (!(v = cli_val(argc, argv, &i)) || cli_int(a, v, 1, 1 << 20, &stride)) return 2; }
        else if (!strcmp(a, "--field")) { if (!(field = cli_val(argc, argv, &i))) return 2; }
        else if (!strcmp(a, "--limit")) { if (!(v = cli_val(argc, argv, &i)) || cli_int(a, v, 1, 1 << 30, &limit)) return 2; }
        else if (!strcmp(a, "--bos")) bos = 1;
        else if (!strcmp(a, "--no-bos")) bos = 0;
        else if (!strcmp(a, "--json")) { if (!(json = cli_val(argc, argv, &i))) return 2; }
        else if (a[0] == '-' && a[1]) return cli_fail("eval ppl: unknown option '%s' (see --help)", a), 2;
        else if (!file) file = a;
        else return cli_fail("eval ppl: one input file only ('%s' and '%s')", file, a), 2;
    }
    if (!file) return cli_fail("eval ppl: give the text file (see --help)"), 2;
    if (!stride) stride = ctx / 2 > 0 ? ctx / 2 : 1;
    if (stride > ctx) return cli_fail("eval ppl: --stride %d exceeds --ctx %d", stride, ctx), 2;
    char *text;
    size_t len;
    if (gn_read_file(file, &text, &len)) return cli_fail_lib();
    // documents
    char **docs = NULL;
    int nd = 0, bad = 0;
    int jsonl = gn_stem_len(file, "jsonl") || gn_stem_len(file, "json"); // also .jsonl.gz, .json.gz
    if (jsonl) {
        gn_lines it = {text, len, 0, 0};
        size_t n;
        for (char *p; (!limit || nd < limit) && (p = gn_lines_next(&it, &n));) {
            const int line = it.lineno;
            if (!gn_line_blank(p)) {
                cJSON *o = cJSON_ParseWithLength(p, n);
                const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, field);
                if (cJSON_IsString(t)) {
                    docs = gn_realloc(docs, sizeof(char *) * (size_t)(nd + 1));
                    docs[nd++] = gn_strdup(t->valuestring);
                } else if (bad++ < 5) {
                    fprintf(stderr, "guanaco: %s:%d: skipped: %s\n", file, line, o ? "no string field" : "not JSON");
                }
                cJSON_Delete(o);
            }
        }
        if (bad) fprintf(stderr, "guanaco: %s: %d rows skipped (no \"%s\" string)\n", file, bad, field);
    } else {
        docs = gn_malloc(sizeof(char *));
        docs[nd++] = gn_strdup(text);
    }
    free(text);
    int rc = 1;
    gn_adapter *ad = NULL;
    gn_model *m = NULL;
    if (nd == 0) { cli_fail("%s: no documents", file); goto out; }
    if (!(m = cli_model_load(&mo, &ad))) goto out;
    {
        const gn_tokenizer *tok = gn_model_tokenizer(m);
        if (!tok) { cli_fail("%s: the model has no tokenizer", mo.model); goto out; }
        if (bos < 0) bos = gn_tokenizer_add_bos(tok);
        gn_lm lm;
        gn_lm_init(&lm, m, ad, ctx);
        gn_ppl_opts po = {ctx, stride};
        gn_ppl_acc acc = {0};
        cli_progress pg;
        cli_progress_start(&pg, "ppl");
        double t0 = gn_time_s();
        for (int d = 0; d < nd; d++) {
            int32_t *ids;
            int n;
            if (gn_lm_encode(&lm, docs[d], bos, &ids, &n) || gn_ppl_doc(&lm, ids, n, &po, &acc)) {
                cli_fail("%s: document %d: %s", file, d + 1, gn_last_error());
                gn_lm_free(&lm);
                goto out;
            }
            free(ids);
            cli_progress_show(&pg, d + 1, nd, NULL);
        }
        cli_progress_end(&pg, nd, nd);
        gn_lm_free(&lm);
        double wall = gn_time_s() - t0;
        double nll = acc.n_scored ? acc.nll / (double)acc.n_scored : NAN;
        printf("perplexity %.4f  (mean NLL %.6f nats over %lld tokens scored; %lld tokens, %d documents, %d windows;"
               " ctx %d, stride %d, %s; %.1f s)\n", exp(nll), nll, acc.n_scored, acc.n_tokens, acc.n_docs,
               acc.n_windows, ctx, stride, bos ? "BOS first" : "no BOS", wall);
        rc = 0;
        if (json) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddItemToObject(o, "ppl", ecli_json_num(exp(nll)));
            cJSON_AddItemToObject(o, "nll", ecli_json_num(nll));
            cJSON_AddNumberToObject(o, "nll_sum", acc.nll);
            cJSON_AddNumberToObject(o, "tokens_scored", (double)acc.n_scored);
            cJSON_AddNumberToObject(o, "tokens", (double)acc.n_tokens);
            cJSON_AddNumberToObject(o, "documents", acc.n_docs);
            cJSON_AddNumberToObject(o, "windows", acc.n_windows);
            cJSON_AddNumberToObject(o, "ctx", ctx);
            cJSON_AddNumberToObject(o, "stride", stride);
            cJSON_AddBoolToObject(o, "bos", bos);
            cJSON_AddNumberToObject(o, "wall_s", wall);
            if (ecli_write_json(json, o)) rc = 1;
        }
    }
out:
    for (int d = 0; d < nd; d++) free(docs[d]);
    free(docs);
    gn_adapter_free(ad);
    if (m) gn_model_free(m);
    return rc;
}
