/*
 * cmd_generate_prompts.c — `guanaco generate -m MODEL --prompts FILE.jsonl -o OUT.jsonl`:
 * batch generation in the QLoRA release's generations format, the input of
 * `guanaco eval judge`.
 *
 * Input rows: qlora eval/prompts/{vicuna,oa}_questions.jsonl style — question_id,
 * text (the question), category, and optionally prompt (the full prompt, as the
 * OA rows carry it). The prompt is the row's "prompt" when present, else the
 * Guanaco template of the released generations applied to "text":
 *     "<system> ### Human: <text> ### Assistant:"
 * (--template NAME renders "text" with another chat format instead). Sampling is
 * the paper's: top-p 0.9, temperature 0.7. Each row gets its own sampler seeded
 * with seed + row number, so a row's output does not depend on the others.
 * Output rows: question_id, text, category, prompt, generation (whitespace-trimmed).
 */
#include "cli.h"

#include <cjson/cJSON.h> // rows in and out
#include <errno.h>       // errno
#include <stdio.h>       // FILE
#include <stdlib.h>      // free
#include <string.h>      // strcmp


static const char HELP[] =
    "usage: guanaco generate -m MODEL --prompts FILE.jsonl -o OUT.jsonl [options]\n"
    "Generates an answer for every row (question_id, text, category[, prompt]) and writes the\n"
    "QLoRA release's generations format (question_id, text, category, prompt, generation).\n\n"
    "      --prompts FILE       questions, e.g. qlora-eval/prompts/vicuna_questions.jsonl\n"
    "  -o, --output FILE        generations to write (atomically; OUT.partial while running)\n"
    "      --template NAME      render \"text\" with this chat format (guanaco, guanaco-demo,\n"
    "                           chatml, llama2, llama3, auto) even when the row has \"prompt\"\n"
    "                           (default: the row's prompt, else guanaco)\n"
    "      --system TEXT        system line for --template (default: the format's own)\n"
    "      --limit N            first N rows\n"
    "  -n, --max-new-tokens N   tokens per answer (default 512)\n"
    "      --temp T             temperature (default 0.7, the paper's)\n"
    "      --top-p P            nucleus mass (default 0.9, the paper's)\n"
    "      --top-k K            (default 0 = off)\n"
    "      --repeat-penalty R   (default 1.0 = off)\n"
    "      --seed S             base seed (default 42; row i uses S + i)\n"
    "      --no-bos             do not prepend BOS\n"
    "  -c, --ctx N              context size (default: model's, at most 4096)\n";

static void trim(char *s) {
    char *a = s;
    while (*a == ' ' || *a == '\n' || *a == '\t' || *a == '\r') a++;
    size_t n = strlen(a);
    while (n && (a[n - 1] == ' ' || a[n - 1] == '\n' || a[n - 1] == '\t' || a[n - 1] == '\r')) n--;
    memmove(s, a, n);
    s[n] = 0;
}

int cli_generate_prompts(int argc, char **argv) {
    cli_model mo;
    cli_model_init(&mo, CLI_CTX | CLI_SEED);
    const char *prompts = NULL, *out = NULL, *system = NULL;
    int limit = 0, n_predict = 512, no_bos = 0, have_fmt = 0;
    gn_chat_format fmt = GN_CHAT_GUANACO;
    gn_sampler_opts so;
    gn_sampler_defaults(&so);
    so.seed = 42;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        double x;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { printf("%s%s", HELP, CLI_MODEL_HELP); return 0; }
        int r = cli_model_flag(&mo, argc, argv, &i);
        if (r < 0) return 2;
        if (r) continue;
        if (!strcmp(a, "--prompts")) { if (!(prompts = cli_val(argc, argv, &i))) return 2; }
        else if (!strcmp(a, "-o") || !strcmp(a, "--output")) { if (!(out = cli_val(argc, argv, &i))) return 2; }
        else if (!strcmp(a, "--system")) { if (!(system = cli_val(argc, argv, &i))) return 2; }
        else if (!strcmp(a, "--limit")) { if (!(v = cli_val(argc, argv, &i)) || cli_int(a, v, 1, 1 << 30, &limit)) return 2; }
        else if (!strcmp(a, "-n") || !strcmp(a, "--max-new-tokens")) { if (!(v = cli_val(argc, argv, &i)) || cli_int(a, v, 0, 1 << 24, &n_predict)) return 2; }
        else if (!strcmp(a, "--temp")) { if (!(v = cli_val(argc, argv, &i)) || cli_num(a, v, 0, 100, &x)) return 2; so.temperature = (float)x; }
        else if (!strcmp(a, "--top-p")) { if (!(v = cli_val(argc, argv, &i)) || cli_num(a, v, 0, 1, &x)) return 2; so.top_p = (float)x; }
        else if (!strcmp(a, "--top-k")) { if (!(v = cli_val(argc, argv, &i)) || cli_int(a, v, 0, 1 << 24, &so.top_k)) return 2; }
        else if (!strcmp(a, "--repeat-penalty")) { if (!(v = cli_val(argc, argv, &i)) || cli_num(a, v, 0.01, 100, &x)) return 2; so.repeat_penalty = (float)x; }
        else if (!strcmp(a, "--no-bos")) no_bos = 1;
        else if (!strcmp(a, "--template")) {
            if (!(v = cli_val(argc, argv, &i))) return 2;
            if (gn_chat_format_parse(v, &fmt)) return cli_fail_lib(), 2;
            have_fmt = 1;
        }
        else return cli_fail("generate --prompts: unknown option '%s' (see generate --prompts FILE --help)", a), 2;
    }
    if (mo.seed_given) so.seed = mo.seed;
    if (!prompts || !out) return cli_fail("generate: --prompts FILE.jsonl needs -o OUT.jsonl (see --help)"), 2;
    char *text;
    size_t len;
    if (gn_read_file(prompts, &text, &len)) return cli_fail_lib();
    // parse rows first: a malformed file fails before the model loads
    cJSON **rows = NULL;
    int nr = 0, bad = 0;
    gn_lines it = {text, len, 0, 0};
    size_t n;
    for (char *p; (!limit || nr < limit) && (p = gn_lines_next(&it, &n));) {
        const int line = it.lineno;
        if (!gn_line_blank(p)) {
            cJSON *o = cJSON_ParseWithLength(p, n);
            const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "text"), *pr = cJSON_GetObjectItemCaseSensitive(o, "prompt");
            if (cJSON_IsObject(o) && (cJSON_IsString(t) || cJSON_IsString(pr))) {
                rows = gn_realloc(rows, sizeof(cJSON *) * (size_t)(nr + 1));
                rows[nr++] = o;
            } else {
                if (bad++ < 5) fprintf(stderr, "guanaco: %s:%d: skipped: expected a JSON object with \"text\" or \"prompt\"\n", prompts, line);
                cJSON_Delete(o);
            }
        }
    }
    free(text);
    if (bad) fprintf(stderr, "guanaco: %s: %d rows skipped\n", prompts, bad);
    int rc = 1;
    gn_adapter *ad = NULL;
    gn_model *m = NULL;
    gn_session *s = NULL;
    FILE *f = NULL;
    char *tmp = NULL;
    if (!nr) { cli_fail("%s: no rows to generate for", prompts); goto done; }
    if (!(m = cli_model_load(&mo, &ad))) goto done;
    const gn_tokenizer *tok = gn_model_tokenizer(m);
    if (!tok) { cli_fail("%s: the model has no tokenizer", mo.model); goto done; }
    gn_chat_format use = gn_chat_format_for(tok, fmt);
    s = gn_session_new(m, mo.ctx);
    if (ad) gn_session_set_adapter(s, ad);
    tmp = gn_malloc(strlen(out) + 16);
    sprintf(tmp, "%s.partial", out);
    if (!(f = fopen(tmp, "w"))) { cli_fail("%s: cannot create: %s", tmp, strerror(errno)); goto done; }
    cli_progress pg;
    cli_progress_start(&pg, "generate");
    for (int r = 0; r < nr; r++) {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(rows[r], "text");
        const cJSON *pr = cJSON_GetObjectItemCaseSensitive(rows[r], "prompt");
        const char *const *stops;
        int nstops;
        char *prompt;
        int special = use != GN_CHAT_GUANACO && use != GN_CHAT_GUANACO_DEMO; // chat markers are special tokens
        int flags = (special ? GN_ENC_SPECIAL : 0) | ((!no_bos && gn_tokenizer_add_bos(tok)) ? GN_ENC_BOS : 0);
        int32_t *ids;
        int n;
        if (cJSON_IsString(pr) && !have_fmt) {
            prompt = gn_strdup(pr->valuestring);
            free(gn_chat_render(GN_CHAT_GUANACO, NULL, 0, &stops, &nstops)); // the Guanaco turn markers
            if (gn_tokenizer_encode(tok, prompt, strlen(prompt), flags, &ids, &n)) { free(prompt); cli_fail_lib(); goto done; }
        } else {
            if (!cJSON_IsString(t)) { cli_fail("%s row %d: no \"text\" to render with --template", prompts, r + 1); goto done; }
            char *sys = system ? gn_strdup(system) : gn_chat_default_system(tok, use);
            gn_chat_msg msgs[2];
            int nm = 0;
            if (sys) msgs[nm++] = (gn_chat_msg){"system", sys};
            msgs[nm++] = (gn_chat_msg){"user", t->valuestring};
            gn_status est = gn_chat_encode(tok, use, msgs, nm, flags, &ids, &n, &prompt, &stops, &nstops);
            free(sys);
            if (est) { cli_fail_lib(); goto done; }
        }
        gn_sampler_opts ro = so;
        ro.seed = so.seed + (uint64_t)r;
        gn_sampler *smp = gn_sampler_new(&ro, gn_model_config(m)->vocab_size);
        gn_session_reset(s);
        gn_gen_opts go = {.max_new_tokens = n_predict, .stop = stops, .n_stop = nstops};
        char *gen = NULL;
        gn_status st = gn_generate(s, smp, ids, n, &go, NULL, NULL, &gen, NULL);
        gn_sampler_free(smp);
        free(ids);
        if (st) { free(prompt); free(gen); cli_fail("%s row %d: %s", prompts, r + 1, gn_last_error()); goto done; }
        trim(gen);
        cJSON *o = cJSON_CreateObject();
        const cJSON *qid = cJSON_GetObjectItemCaseSensitive(rows[r], "question_id");
        if (qid) cJSON_AddItemToObject(o, "question_id", cJSON_Duplicate(qid, 1));
        else cJSON_AddNumberToObject(o, "question_id", r + 1);
        if (cJSON_IsString(t)) cJSON_AddStringToObject(o, "text", t->valuestring);
        const cJSON *cat = cJSON_GetObjectItemCaseSensitive(rows[r], "category");
        if (cJSON_IsString(cat)) cJSON_AddStringToObject(o, "category", cat->valuestring);
        cJSON_AddStringToObject(o, "prompt", prompt);
        cJSON_AddStringToObject(o, "generation", gen);
        char *js = cJSON_PrintUnformatted(o);
        fprintf(f, "%s\n", js);
        fflush(f);
        cJSON_free(js);
        cJSON_Delete(o);
        free(prompt);
        free(gen);
        cli_progress_show(&pg, r + 1, nr, NULL);
    }
    cli_progress_end(&pg, nr, nr);
    int werr = fclose(f) != 0;
    f = NULL;
    if (werr || rename(tmp, out) != 0) { cli_fail("%s: cannot write: %s", out, strerror(errno)); goto done; }
    fprintf(stderr, "wrote %d generations to %s\n", nr, out);
    rc = 0;
done:
    if (f) fclose(f);
    free(tmp);
    for (int r = 0; r < nr; r++) cJSON_Delete(rows[r]);
    free(rows);
    gn_session_free(s);
    gn_adapter_free(ad);
    if (m) gn_model_free(m);
    return rc;
}
