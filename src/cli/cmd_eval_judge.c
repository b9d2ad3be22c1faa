/*
 * cmd_eval_judge.c — `guanaco eval judge`: pairwise judgments of two generation sets by a judge
 * model over HTTP or a local one (gn_judge_*, gn_gen_load, gn_http_chat).
 */
#include "eval_cli.h"

#include <cjson/cJSON.h> // judgment lines
#include <errno.h>       // errno
#include <stdio.h>       // printf
#include <stdlib.h>      // free
#include <string.h>      // strcmp
#include <sys/stat.h>    // mkdir
#include <time.h>        // time

static const char JUDGE_HELP[] =
    "usage: guanaco eval judge --a GENS_A.jsonl --b GENS_B.jsonl --judge-prompt TEMPLATES.jsonl\n"
    "                          (--judge-url URL | -m LOCAL_JUDGE_MODEL) -o OUT_DIR [options]\n"
    "Pairwise judging as in the paper: the three-class prompt (qlora eval/prompts/\n"
    "*_prompt_threeclass.jsonl; the template is picked by the question's category), both\n"
    "presentation orders, verdict = the last line's 1/2/3 (else -1). Writes\n"
    "OUT_DIR/<A>-vs-<B>-judge-reviewer-threeclass.jsonl and <B>-vs-<A>-..., in the release's\n"
    "format plus model1/model2, which `guanaco eval elo OUT_DIR` reads.\n\n"
    "      --a FILE, --b FILE   generations (release format: question_id, text, generation; or\n"
    "                           FastChat answers: question_id, text); joined on question_id\n"
    "      --name-a N, --name-b N  system names (default: the file names without .jsonl)\n"
    "      --questions FILE     question texts by question_id (default: the generations' text)\n"
    "      --judge-prompt FILE  judge templates (required)\n"
    "      --judge-url URL      OpenAI-compatible endpoint (\".../v1\"; guanaco serve is one)\n"
    "      --judge-model NAME   model name sent to the endpoint (default gpt-4)\n"
    "      --judge-key-env VAR  environment variable holding the API key (default OPENAI_API_KEY;\n"
    "                           unset = no Authorization header)\n"
    "      --judge-temp T       temperature (default 0.2, the release's reviewer setting)\n"
    "      --judge-max-tokens N (default 1024)\n"
    "      --one-order          only A as Assistant 1 (default: both orders)\n"
    "      --limit N            first N shared questions\n"
    "      --timeout S          seconds per request (default 120); --retries N (default 3)\n"
    "      --seed S             local judge sampling seed (default 42)\n"
    "  -o, --output DIR         folder for the judgment files (created)\n"
    "With -m, the judge is a local model through the library (its own chat template, or\n"
    "--template NAME as in `guanaco chat`).\n";

typedef struct {
    gn_model *m;
    gn_adapter *ad;
    gn_chat_format fmt;
    gn_sampler_opts so;
} local_judge;

static gn_status judge_local(local_judge *lj, const char *system, const char *user, int max_tokens, char **reply) {
    gn_chat_msg msgs[2] = {{"system", system}, {"user", user}};
    const char *const *stops;
    int nstops;
    const gn_tokenizer *tok = gn_model_tokenizer(lj->m);
    int32_t *ids;
    int n;
    gn_status st = gn_chat_encode(tok, lj->fmt, msgs, 2, GN_ENC_SPECIAL | (gn_tokenizer_add_bos(tok) ? GN_ENC_BOS : 0),
                                  &ids, &n, NULL, &stops, &nstops);
    if (st) return st;
    int need = n + max_tokens + 1;
    gn_session *s = gn_session_new(lj->m, need > 4096 ? need : 0);
    if (lj->ad) gn_session_set_adapter(s, lj->ad);
    gn_sampler *smp = gn_sampler_new(&lj->so, gn_model_config(lj->m)->vocab_size);
    lj->so.seed++;
    gn_gen_opts go = {.max_new_tokens = max_tokens, .stop = stops, .n_stop = nstops};
    st = gn_generate(s, smp, ids, n, &go, NULL, NULL, reply, NULL);
    gn_sampler_free(smp);
    gn_session_free(s);
    free(ids);
    return st;
}

int cmd_eval_judge(int argc, char **argv) {
    cli_model mo;
    cli_model_init(&mo, 0);
    const char *fa = NULL, *fb = NULL, *na = NULL, *nbn = NULL, *qfile = NULL, *tfile = NULL, *url = NULL;
    const char *jmodel = "gpt-4", *keyenv = "OPENAI_API_KEY", *outdir = NULL;
    double temp = 0.2;
    int max_tokens = 1024, one_order = 0, limit = 0, timeout = 120, retries = 3, seed = 42;
    gn_chat_format fmt = GN_CHAT_AUTO;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { printf("%s%s", JUDGE_HELP, CLI_MODEL_HELP); return 0; }
        int r = cli_model_flag(&mo, argc, argv, &i);
        if (r < 0) return 2;
        if (r) continue;
        if (!strcmp(a, "--a")) { if (!(fa = cli_val(argc, argv, &i))) return 2; }
        else if (!strcmp(a, "--b")) { if (!(fb = cli_val(argc, argv, &i))) return 2; }
        else if (!strcmp(a, "--name-a")) { if (!(na = cli_val(argc, argv, &i))) return 2; }
        else if (!strcmp(a, "--name-b")) { if (!(nbn = cli_val(argc, argv, &i))) return 2; }
        else if (!strcmp(a, "--questions")) { if (!(qfile = cli_val(argc, argv, &i))) return 2; }
        else if (!strcmp(a, "--judge-prompt")) { if (!(tfile = cli_val(argc, argv, &i))) return 2; }
        else if (!strcmp(a, "--judge-url")) { if (!(url = cli_val(argc, argv, &i))) return 2; }
        else if (!strcmp(a, "--judge-model")) { if (!(jmodel = cli_val(argc, argv, &i))) return 2; }
        else if (!strcmp(a, "--judge-key-env")) { if (!(keyenv = cli_val(argc, argv, &i))) return 2; }
        else if (!strcmp(a, "--judge-temp")) { if (!(v = cli_val(argc, argv, &i)) || cli_num(a, v, 0, 2, &temp)) return 2; }
        else if (!strcmp(a, "--judge-max-tokens")) { if (!(v = cli_val(argc, argv, &i)) || cli_int(a, v, 1, 1 << 20, &max_tokens)) return 2; }
        else if (!strcmp(a, "--one-order")) one_order = 1;
        else if (!strcmp(a, "--limit")) { if (!(v = cli_val(argc, argv, &i)) || cli_int(a, v, 1, 1 << 30, &limit)) return 2; }
        else if (!strcmp(a, "--timeout")) { if (!(v = cli_val(argc, argv, &i)) || cli_int(a, v, 1, 86400, &timeout)) return 2; }
        else if (!strcmp(a, "--retries")) { if (!(v = cli_val(argc, argv, &i)) || cli_int(a, v, 0, 100, &retries)) return 2; }
        else if (!strcmp(a, "--seed")) { if (!(v = cli_val(argc, argv, &i)) || cli_int(a, v, 0, 1 << 30, &seed)) return 2; }
        else if (!strcmp(a, "-o") || !strcmp(a, "--output")) { if (!(outdir = cli_val(argc, argv, &i))) return 2; }
        else if (!strcmp(a, "--template")) {
            if (!(v = cli_val(argc, argv, &i))) return 2;
            if (gn_chat_format_parse(v, &fmt)) return cli_fail_lib(), 2;
        }
        else return cli_fail("eval judge: unknown option '%s' (see --help)", a), 2;
    }
    if (!fa || !fb) return cli_fail("eval judge: --a and --b (generation files) are required"), 2;
    if (!tfile) return cli_fail("eval judge: --judge-prompt FILE is required (e.g. qlora-eval/prompts/vicuna_prompt_threeclass.jsonl)"), 2;
    if (!outdir) return cli_fail("eval judge: -o OUT_DIR is required"), 2;
    if (!!url == !!mo.model) return cli_fail("eval judge: give exactly one judge: --judge-url URL or -m MODEL"), 2;
    if (url && !gn_http_available())
        return cli_fail("eval judge: this build has no HTTP client. HINT: install libcurl4-openssl-dev and rebuild, or use -m MODEL"), 1;
    int rc = 1;
    gn_judge_template *tp = NULL;
    int ntp = 0;
    gn_gen_row *ga = NULL, *gb = NULL, *gq = NULL;
    int nga = 0, ngb = 0, ngq = 0, sk;
    char *name_a = na ? gn_strdup(na) : gn_jsonl_stem(fa), *name_b = nbn ? gn_strdup(nbn) : gn_jsonl_stem(fb);
    local_judge lj = {0};
    FILE *out[2] = {NULL, NULL};
    char *opath[2] = {NULL, NULL}, *tpath[2] = {NULL, NULL};
    if (gn_judge_templates_load(tfile, &tp, &ntp)) { cli_fail_lib(); goto done; }
    if (gn_gen_load(fa, &ga, &nga, &sk)) { cli_fail_lib(); goto done; }
    if (sk) fprintf(stderr, "guanaco: %s: %d rows skipped\n", fa, sk);
    if (gn_gen_load(fb, &gb, &ngb, &sk)) { cli_fail_lib(); goto done; }
    if (sk) fprintf(stderr, "guanaco: %s: %d rows skipped\n", fb, sk);
    if (qfile) {
        if (gn_gen_load(qfile, &gq, &ngq, &sk)) { cli_fail_lib(); goto done; }
        for (int i = 0; i < ngq; i++) { // a questions file's "text" is the question
            if (!gq[i].question) { gq[i].question = gq[i].answer; gq[i].answer = NULL; }
        }
    }
    if (mo.model) {
        if (!(lj.m = cli_model_load(&mo, &lj.ad))) goto done;
        if (!gn_model_tokenizer(lj.m)) { cli_fail("%s: the judge model has no tokenizer", mo.model); goto done; }
        lj.fmt = gn_chat_format_for(gn_model_tokenizer(lj.m), fmt);
        gn_sampler_defaults(&lj.so);
        lj.so.temperature = (float)temp;
        lj.so.top_p = 1.0f;
        lj.so.seed = (uint64_t)seed;
    }
    if (mkdir(outdir, 0755) != 0 && errno != EEXIST) { cli_fail("%s: cannot create folder: %s", outdir, strerror(errno)); goto done; }
    // pairs of rows sharing a question_id, in A's order
    int *pa = gn_malloc(sizeof(int) * (size_t)(nga + 1)), *pb = gn_malloc(sizeof(int) * (size_t)(nga + 1)), np = 0;
    for (int i = 0; i < nga && (!limit || np < limit); i++)
        for (int k = 0; k < ngb; k++)
            if (!strcmp(ga[i].qid, gb[k].qid)) { pa[np] = i; pb[np] = k; np++; break; }
    if (np == 0) { free(pa); free(pb); cli_fail("eval judge: %s and %s share no question_id", fa, fb); goto done; }
    if (np < nga || np < ngb)
        fprintf(stderr, "guanaco: judging %d shared questions (%s has %d rows, %s has %d)\n", np, fa, nga, fb, ngb);
    int norders = one_order ? 1 : 2;
    for (int o = 0; o < norders; o++) {
        const char *s1 = o ? name_b : name_a, *s2 = o ? name_a : name_b;
        size_t n = strlen(outdir) + strlen(s1) + strlen(s2) + 64;
        opath[o] = gn_malloc(n);
        snprintf(opath[o], n, "%s/%s-vs-%s-judge-reviewer-threeclass.jsonl", outdir, s1, s2);
        tpath[o] = gn_malloc(n + 16);
        snprintf(tpath[o], n + 16, "%s.partial", opath[o]);
        if (!(out[o] = fopen(tpath[o], "w"))) { free(pa); free(pb); cli_fail("%s: cannot create: %s", tpath[o], strerror(errno)); goto done; }
    }
    const char *key = getenv(keyenv);
    cli_progress pg;
    cli_progress_start(&pg, "judge");
    int counts[2][4] = {{0}};
    for (int q = 0; q < np; q++) {
        const gn_gen_row *ra = &ga[pa[q]], *rb = &gb[pb[q]];
        const char *question = NULL, *category = ra->category ? ra->category : rb->category;
        for (int k = 0; k < ngq && !question; k++)
            if (!strcmp(gq[k].qid, ra->qid)) { question = gq[k].question; if (!category) category = gq[k].category; }
        if (!question) question = ra->question ? ra->question : rb->question;
        if (!question) {
            free(pa); free(pb);
            cli_fail("eval judge: no question text for question_id %s. HINT: pass --questions (e.g. "
                     "qlora-eval/prompts/vicuna_questions.jsonl)", ra->qid);
            goto done;
        }
        const gn_judge_template *t = gn_judge_template_for(tp, ntp, category);
        for (int o = 0; o < norders; o++) {
            const gn_gen_row *x1 = o ? rb : ra, *x2 = o ? ra : rb;
            char *content = gn_judge_render(t, question, x1->answer, x2->answer);
            char *review = NULL;
            gn_status st = url ? gn_http_chat(url, key, jmodel, t->system, content, temp, max_tokens, timeout, retries, &review)
                               : judge_local(&lj, t->system, content, max_tokens, &review);
            free(content);
            if (st) {
                free(pa); free(pb);
                cli_fail("question_id %s: %s (judgments so far are in %s)", ra->qid, gn_last_error(), tpath[o]);
                goto done;
            }
            int score = gn_judge_parse_verdict(review);
            counts[o][score < 0 ? 0 : score]++;
            cJSON *j = cJSON_CreateObject();
            char rid[160];
            snprintf(rid, sizeof rid, "%s-%d", ra->qid, o + 1);
            cJSON_AddStringToObject(j, "review_id", rid);
            if (ra->qid_is_num) cJSON_AddNumberToObject(j, "question_id", strtod(ra->qid, NULL));
            else cJSON_AddStringToObject(j, "question_id", ra->qid);
            cJSON_AddStringToObject(j, "answer1_id", o ? name_b : name_a);
            cJSON_AddStringToObject(j, "answer2_id", o ? name_a : name_b);
            cJSON_AddStringToObject(j, "reviewer_id", url ? jmodel : mo.model);
            cJSON *md = cJSON_AddObjectToObject(j, "metadata");
            cJSON_AddNumberToObject(md, "temperature", temp);
            cJSON_AddNumberToObject(md, "max_tokens", max_tokens);
            cJSON_AddStringToObject(j, "text", review);
            cJSON_AddNumberToObject(j, "score", score);
            cJSON_AddStringToObject(j, "model1", o ? name_b : name_a);
            cJSON_AddStringToObject(j, "model2", o ? name_a : name_b);
            char *line = cJSON_PrintUnformatted(j);
            cJSON_Delete(j);
            fprintf(out[o], "%s\n", line);
            fflush(out[o]);
            cJSON_free(line);
            free(review);
        }
        cli_progress_show(&pg, q + 1, np, NULL);
    }
    cli_progress_end(&pg, np, np);
    free(pa); free(pb);
    for (int o = 0; o < norders; o++) {
        int bad = fclose(out[o]) != 0;
        out[o] = NULL;
        if (bad || rename(tpath[o], opath[o]) != 0) { cli_fail("%s: cannot write: %s", opath[o], strerror(errno)); goto done; }
        printf("%s: %d judgments: %d × \"1\" (%s), %d × \"2\" (%s), %d × \"3\" tie, %d unparsed (-1)\n", opath[o], np,
               counts[o][1], o ? name_b : name_a, counts[o][2], o ? name_a : name_b, counts[o][3], counts[o][0]);
    }
    rc = 0;
done:
    for (int o = 0; o < 2; o++) { if (out[o]) fclose(out[o]); free(opath[o]); free(tpath[o]); }
    gn_judge_templates_free(tp, ntp);
    gn_gen_free(ga, nga);
    gn_gen_free(gb, ngb);
    gn_gen_free(gq, ngq);
    free(name_a); free(name_b);
    gn_adapter_free(lj.ad);
    if (lj.m) gn_model_free(lj.m);
    return rc;
}
