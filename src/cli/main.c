/*
 * main.c — the `guanaco` command: subcommand dispatch, the shared model and
 * sampling flags, and the chat / generate / logits / info commands.
 *
 *   guanaco chat -m MODEL [-p "question"]     one-shot or interactive chat
 *   guanaco generate -m MODEL -p TEXT         continue a text
 *   guanaco logits -m MODEL --ids "1 2 3" -o out.npy
 *   guanaco info -m MODEL
 *   guanaco tokenize -m TOKENIZER -p TEXT     (cmd_tokenize.c)
 *   guanaco dump -m FILE --list               (cmd_tensors.c)
 */
#include "cli.h"

#include <errno.h>   // errno
#include <stdarg.h>  // va_list
#include <stdio.h>   // printf, fgets
#include <stdlib.h>  // strtol, free
#include <string.h>  // strcmp
#include <time.h>    // time (default seed)
#include <unistd.h>  // isatty


// ----------------------------------------------------------------------------
// helpers shared by the commands

int cli_fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("guanaco: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

int cli_fail_lib(void) { return cli_fail("%s", gn_last_error()); }

int cli_write_npy_f32(const char *path, const float *data, const int64_t *shape, int ndim) {
    char hdr[256];
    char dims[160] = "";
    size_t o = 0, n = 1;
    for (int i = 0; i < ndim; i++) {
        if (o < sizeof dims)
            o += (size_t)snprintf(dims + o, sizeof dims - o, ndim == 1 ? "%lld," : (i ? ", %lld" : "%lld"),
                                  (long long)shape[i]);
        n *= (size_t)shape[i];
    }
    int hl = snprintf(hdr, sizeof hdr, "{'descr': '<f4', 'fortran_order': False, 'shape': (%s), }", dims);
    int total = 10 + hl + 1;
    int pad = (64 - total % 64) % 64;
    size_t bytes = (size_t)total + (size_t)pad + n * sizeof(float);
    char *buf = malloc(bytes);
    if (!buf) return cli_fail("%s: out of memory", path);
    memcpy(buf, "\x93NUMPY\x01\x00", 8);
    uint16_t hlen = (uint16_t)(hl + pad + 1);
    buf[8] = (char)(hlen & 0xff);
    buf[9] = (char)(hlen >> 8);
    memcpy(buf + 10, hdr, (size_t)hl);
    memset(buf + 10 + hl, ' ', (size_t)pad);
    buf[10 + hl + pad] = '\n';
    memcpy(buf + total + pad, data, n * sizeof(float));
    gn_status st = gn_write_file_atomic(path, buf, bytes);
    free(buf);
    return st ? cli_fail_lib() : 0;
}

int cli_parse_ids(const char *s, int32_t **ids, int *n) {
    int cap = 16, k = 0;
    int32_t *a = gn_malloc(sizeof(int32_t) * (size_t)cap);
    const char *p = s;
    for (;;) {
        while (*p == ' ' || *p == ',' || *p == '\t' || *p == '\n' || *p == '[' || *p == ']') p++;
        if (!*p) break;
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 0 || v > INT32_MAX) {
            free(a);
            cli_fail("--ids: bad token id at character %d of \"%s\" (expected non-negative integers separated by spaces)",
                     (int)(p - s) + 1, s);
            return -1;
        }
        if (k == cap) a = gn_realloc(a, sizeof(int32_t) * (size_t)(cap *= 2));
        a[k++] = (int32_t)v;
        p = end;
    }
    *ids = a;
    *n = k;
    return 0;
}

// ----------------------------------------------------------------------------
// common flags

typedef struct {
    cli_model mo; // -m -a -t -c --dtype --4bit ... --seed -v (cli_args.c)
    const char *prompt, *ids, *out, *system, *file;
    int n_predict, no_bos, ignore_eos, print_ids, kv_step, quiet;
    gn_sampler_opts smp;
    gn_chat_format fmt;
} opts;

static void opts_init(opts *o) {
    memset(o, 0, sizeof *o);
    cli_model_init(&o->mo, CLI_CTX | CLI_SEED);
    gn_sampler_defaults(&o->smp);
    o->n_predict = 256;
    o->fmt = GN_CHAT_AUTO;
}

static const char CTX_HELP[] =
    "  -c, --ctx N              context size in tokens (default: min(model max, 4096))\n";
static const char SAMPLING_HELP[] =
    "  -p, --prompt TEXT        the prompt\n"
    "  -n, --max-new-tokens N   tokens to generate (default 256)\n"
    "      --temp T             temperature, 0 = greedy (default 0.7, the paper's setting)\n"
    "      --top-p P            nucleus sampling mass (default 0.9)\n"
    "      --top-k K            keep the K most likely tokens (default 0 = off)\n"
    "      --repeat-penalty R   HF repetition penalty (default 1.0 = off)\n"
    "      --seed S             random seed (default: from the clock)\n"
    "      --no-bos             do not prepend BOS\n"
    "      --ignore-eos         keep generating past end-of-sequence\n";

// Parses one flag at argv[*i]; returns 1 if consumed, 0 if unknown, -1 on error.
static int parse_common(opts *o, int argc, char **argv, int *i) {
    const char *a = argv[*i];
#define VAL() (*i + 1 < argc ? argv[++*i] : (cli_fail("%s needs a value", a), (char *)NULL))
#define IS(s, l) (!strcmp(a, s) || !strcmp(a, l))
    char *v;
    int r = cli_model_flag(&o->mo, argc, argv, i);
    if (r) return r;
    if (IS("-p", "--prompt")) { if (!(v = VAL())) return -1; o->prompt = v; return 1; }
    if (IS("-f", "--file")) { if (!(v = VAL())) return -1; o->file = v; return 1; }
    if (IS("-o", "--output")) { if (!(v = VAL())) return -1; o->out = v; return 1; }
    if (!strcmp(a, "--ids")) { if (!(v = VAL())) return -1; o->ids = v; return 1; }
    if (!strcmp(a, "--system")) { if (!(v = VAL())) return -1; o->system = v; return 1; }
    if (!strcmp(a, "--no-bos")) { o->no_bos = 1; return 1; }
    if (!strcmp(a, "--ignore-eos")) { o->ignore_eos = 1; return 1; }
    if (!strcmp(a, "--print-ids")) { o->print_ids = 1; return 1; }
    if (!strcmp(a, "--kv-step")) { o->kv_step = 1; return 1; }
    if (!strcmp(a, "--template")) {
        if (!(v = VAL())) return -1;
        if (gn_chat_format_parse(v, &o->fmt)) { cli_fail_lib(); return -1; }
        return 1;
    }
    struct { const char *s, *l; int *dst; long lo, hi; } ints[] = {
        {"-n", "--max-new-tokens", &o->n_predict, 0, 1 << 24}, {"--top-k", "--top-k", &o->smp.top_k, 0, 1 << 24}};
    for (size_t k = 0; k < sizeof ints / sizeof ints[0]; k++)
        if (IS(ints[k].s, ints[k].l)) {
            if (!(v = VAL()) || cli_int(a, v, ints[k].lo, ints[k].hi, ints[k].dst)) return -1;
            return 1;
        }
    struct { const char *l; float *dst; double lo, hi; } fl[] = {
        {"--temp", &o->smp.temperature, 0, 100}, {"--top-p", &o->smp.top_p, 0, 1},
        {"--repeat-penalty", &o->smp.repeat_penalty, 0.01, 100}};
    for (size_t k = 0; k < sizeof fl / sizeof fl[0]; k++)
        if (!strcmp(a, fl[k].l)) {
            double x;
            if (!(v = VAL()) || cli_num(a, v, fl[k].lo, fl[k].hi, &x)) return -1;
            *fl[k].dst = (float)x;
            return 1;
        }
#undef VAL
#undef IS
    return 0;
}

// Parses argv for a command; prints help and returns 0 (done) / 2 (usage error) /
// -1 (continue).
static int parse_args(opts *o, int argc, char **argv, const char *usage, const char *extra_help, int sampling) {
    opts_init(o);
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            printf("%s\n%s%s%s%s", usage, CLI_MODEL_HELP, CTX_HELP, sampling ? SAMPLING_HELP : "", extra_help);
            return 0;
        }
        int r = parse_common(o, argc, argv, &i);
        if (r < 0) return 2;
        if (r == 0) {
            cli_fail("unknown option '%s' (see %s --help)", argv[i], argv[0]);
            return 2;
        }
    }
    if (!o->mo.model) { cli_fail("%s: -m/--model is required (see --help)", argv[0]); return 2; }
    o->smp.seed = o->mo.seed_given ? o->mo.seed : (uint64_t)time(NULL);
    cli_model_apply(&o->mo);
    return -1;
}

static gn_adapter *g_adapter; // the -a adapter of this run (freed by unload)

static void unload(gn_model *m) {
    gn_adapter_free(g_adapter);
    g_adapter = NULL;
    gn_model_free(m);
}

// A session with the run's adapter attached.
static gn_session *new_session(const gn_model *m, int ctx) {
    gn_session *s = gn_session_new(m, ctx);
    if (g_adapter) gn_session_set_adapter(s, g_adapter);
    return s;
}

static gn_model *load(const opts *o) { return cli_model_load(&o->mo, &g_adapter); }

// Tokenizes the prompt (or parses --ids); BOS per the model unless --no-bos.
static int prompt_ids(const opts *o, const gn_model *m, int32_t **ids, int *n) {
    if (o->ids) {
        if (cli_parse_ids(o->ids, ids, n)) return -1;
        return 0;
    }
    const gn_tokenizer *tok = gn_model_tokenizer(m);
    if (!tok) { cli_fail("%s: the model has no tokenizer; pass token ids with --ids", o->mo.model); return -1; }
    const char *text = o->prompt ? o->prompt : "";
    int flags = (!o->no_bos && gn_tokenizer_add_bos(tok)) ? GN_ENC_BOS : 0;
    if (gn_tokenizer_encode(tok, text, strlen(text), flags, ids, n)) { cli_fail_lib(); return -1; }
    if (*n == 0 && !o->no_bos && gn_model_config(m)->bos_id >= 0) { // need at least one token to start from
        (*ids)[0] = gn_model_config(m)->bos_id;
        *n = 1;
    }
    return 0;
}

// ----------------------------------------------------------------------------
// info

int cmd_info(int argc, char **argv) {
    opts o;
    int r = parse_args(&o, argc, argv, "usage: guanaco info -m MODEL\nPrints the config, tensor count, dtypes and bytes.", "", 0);
    if (r >= 0) return r;
    gn_model *m = load(&o);
    if (!m) return 1;
    char *d = gn_model_describe(m);
    fputs(d, stdout);
    free(d);
    const gn_tokenizer *t = gn_model_tokenizer(m);
    if (t) printf("tokenizer vocab: %d (bos %d, eos %d)\n", gn_tokenizer_vocab_size(t), gn_tokenizer_bos(t), gn_tokenizer_eos(t));
    printf("kernels: %s\n", gn_simd_name());
    unload(m);
    return 0;
}

// ----------------------------------------------------------------------------
// logits

int cmd_logits(int argc, char **argv) {
    opts o;
    int r = parse_args(&o, argc, argv,
                       "usage: guanaco logits -m MODEL (--ids \"1 2 3\" | -p TEXT) -o OUT.npy [--kv-step]\n"
                       "Writes the logits of every position as float32 .npy of shape [T, vocab].",
                       "      --ids \"1 2 3\"        token ids (space or comma separated)\n"
                       "  -o, --output FILE        .npy to write (required)\n"
                       "      --kv-step            feed one token at a time through the KV cache\n", 0);
    if (r >= 0) return r;
    if (!o.out) return cli_fail("logits: -o/--output is required"), 2;
    gn_model *m = load(&o);
    if (!m) return 1;
    int32_t *ids = NULL;
    int n = 0, rc = 1;
    gn_session *s = NULL;
    if (prompt_ids(&o, m, &ids, &n)) goto done;
    if (n == 0) { cli_fail("logits: no tokens given"); goto done; }
    const gn_config *c = gn_model_config(m);
    s = new_session(m, o.mo.ctx ? o.mo.ctx : (n > 4096 ? n : 0));
    float *all = gn_malloc(sizeof(float) * (size_t)n * (size_t)c->vocab_size);
    if (o.kv_step) {
        for (int i = 0; i < n; i++) {
            const float *lg = gn_session_forward(s, ids + i, 1, 1);
            if (!lg) { free(all); cli_fail_lib(); goto done; }
            memcpy(all + (size_t)i * c->vocab_size, lg, sizeof(float) * (size_t)c->vocab_size);
        }
    } else {
        const float *lg = gn_session_forward(s, ids, n, 1);
        if (!lg) { free(all); cli_fail_lib(); goto done; }
        memcpy(all, lg, sizeof(float) * (size_t)n * (size_t)c->vocab_size);
    }
    int64_t shape[2] = {n, c->vocab_size};
    rc = cli_write_npy_f32(o.out, all, shape, 2);
    free(all);
done:
    gn_session_free(s);
    free(ids);
    unload(m);
    return rc;
}

// ----------------------------------------------------------------------------
// generate and chat

static int print_text(const char *text, size_t len, void *user) {
    (void)user;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    return 0;
}

static void print_stats(const gn_gen_stats *st) {
    fprintf(stderr, "\n[prompt %d tokens in %.2f s (%.1f tok/s), generated %d tokens in %.2f s (%.1f tok/s)]\n",
            st->n_prompt, st->t_prompt_s, st->t_prompt_s > 0 ? st->n_prompt / st->t_prompt_s : 0.0, st->n_gen,
            st->t_gen_s, st->t_gen_s > 0 ? st->n_gen / st->t_gen_s : 0.0);
}

int cmd_generate(int argc, char **argv) {
    for (int i = 1; i < argc; i++) // batch mode: a prompts file in, a generations file out
        if (!strcmp(argv[i], "--prompts")) return cli_generate_prompts(argc, argv);
    opts o;
    int r = parse_args(&o, argc, argv,
                       "usage: guanaco generate -m MODEL (-p TEXT | --ids \"1 2 3\") [sampling flags]\n"
                       "Continues the text and streams the new text to stdout.",
                       "      --ids \"1 2 3\"        prompt as token ids instead of text\n"
                       "      --print-ids          print the generated token ids (one line) instead of text\n"
                       "      --prompts F.jsonl -o OUT.jsonl   generations for a prompts file, in the QLoRA\n"
                       "                           release's format (see guanaco generate --prompts x --help)\n", 1);
    if (r >= 0) return r;
    gn_model *m = load(&o);
    if (!m) return 1;
    int32_t *ids = NULL, *out = NULL;
    int n = 0, nout = 0, rc = 1;
    gn_session *s = NULL;
    gn_sampler *smp = NULL;
    if (prompt_ids(&o, m, &ids, &n)) goto done;
    s = new_session(m, o.mo.ctx ? o.mo.ctx : 0);
    smp = gn_sampler_new(&o.smp, gn_model_config(m)->vocab_size);
    gn_gen_opts go = {.max_new_tokens = o.n_predict, .ignore_eos = o.ignore_eos,
                      .on_text = o.print_ids ? NULL : print_text};
    gn_gen_stats st;
    if (gn_generate(s, smp, ids, n, &go, &out, &nout, NULL, &st)) { cli_fail_lib(); goto done; }
    if (o.print_ids) {
        for (int i = 0; i < nout; i++) printf(i ? " %d" : "%d", out[i]);
        printf("\n");
    } else {
        printf("\n");
    }
    if (o.mo.verbose) print_stats(&st);
    rc = 0;
done:
    free(out);
    free(ids);
    gn_sampler_free(smp);
    gn_session_free(s);
    unload(m);
    return rc;
}

// One assistant turn: render, reuse the cached prefix, generate. Appends the
// answer to the conversation.
static int chat_turn(const opts *o, gn_model *m, gn_session *s, gn_sampler *smp, gn_chat_format fmt,
                     gn_chat_msg **msgs, int *nmsg, int32_t **cached, int *ncached) {
    const gn_tokenizer *tok = gn_model_tokenizer(m);
    const char *const *stops;
    int nstops;
    int flags = GN_ENC_SPECIAL | ((!o->no_bos && gn_tokenizer_add_bos(tok)) ? GN_ENC_BOS : 0);
    int32_t *ids;
    int n;
    if (gn_chat_encode(tok, fmt, *msgs, *nmsg, flags, &ids, &n, NULL, &stops, &nstops)) return cli_fail_lib();
    // reuse the KV cache for the prefix this prompt shares with what is cached
    int same = 0;
    while (same < n - 1 && same < *ncached && ids[same] == (*cached)[same]) same++;
    gn_session_rewind(s, same);
    if (gn_session_pos(s) != same) { gn_session_reset(s); same = 0; }
    gn_gen_opts go = {.max_new_tokens = o->n_predict, .ignore_eos = o->ignore_eos, .stop = stops, .n_stop = nstops,
                      .on_text = print_text};
    int32_t *out = NULL;
    int nout = 0;
    char *answer = NULL;
    gn_gen_stats st;
    gn_status rs = gn_generate(s, smp, ids + same, n - same, &go, &out, &nout, &answer, &st);
    if (rs) { free(ids); free(out); free(answer); return cli_fail_lib(); }
    printf("\n");
    fflush(stdout);
    if (o->mo.verbose) print_stats(&st);
    // the cache now holds ids + the generated tokens (up to the stop)
    *cached = gn_realloc(*cached, sizeof(int32_t) * (size_t)(n + nout + 1));
    memcpy(*cached, ids, sizeof(int32_t) * (size_t)n);
    memcpy(*cached + n, out, sizeof(int32_t) * (size_t)nout);
    *ncached = gn_session_pos(s) < n + nout ? gn_session_pos(s) : n + nout;
    free(ids);
    free(out);
    // trim surrounding whitespace of the answer for the transcript
    char *a = answer;
    while (*a == ' ' || *a == '\n') a++;
    size_t al = strlen(a);
    while (al && (a[al - 1] == ' ' || a[al - 1] == '\n')) a[--al] = 0;
    *msgs = gn_realloc(*msgs, sizeof(gn_chat_msg) * (size_t)(*nmsg + 2));
    (*msgs)[(*nmsg)++] = (gn_chat_msg){"assistant", gn_strdup(a)};
    free(answer);
    return 0;
}

int cmd_chat(int argc, char **argv) {
    opts o;
    int r = parse_args(&o, argc, argv,
                       "usage: guanaco chat -m MODEL [-p \"question\"] [--template NAME] [--system TEXT]\n"
                       "Chats with the Guanaco prompt format or the model's own template. With -p, answers\n"
                       "once and exits; otherwise reads one message per line (/reset clears, /quit ends).",
                       "      --template NAME      auto (default: the model's own template, else guanaco),\n"
                       "                           guanaco (\"### Human: q ### Assistant:\"), guanaco-demo\n"
                       "                           (\"### Human: q### Assistant: \"), chatml, llama2, llama3\n"
                       "      --system TEXT        system line (default: the format's own)\n", 1);
    if (r >= 0) return r;
    gn_model *m = load(&o);
    if (!m) return 1;
    const gn_tokenizer *tok = gn_model_tokenizer(m);
    if (!tok) { unload(m); return cli_fail("%s: the model has no tokenizer; chat needs one", o.mo.model); }
    gn_chat_format fmt = gn_chat_format_for(tok, o.fmt);
    if (o.mo.verbose) fprintf(stderr, "chat format: %s\n", gn_chat_format_name(fmt));
    gn_session *s = new_session(m, o.mo.ctx ? o.mo.ctx : 0);
    gn_sampler *smp = gn_sampler_new(&o.smp, gn_model_config(m)->vocab_size);
    gn_chat_msg *msgs = gn_malloc(sizeof(gn_chat_msg) * 2);
    int nmsg = 0, rc = 0;
    char *sys = o.system ? gn_strdup(o.system) : gn_chat_default_system(tok, fmt);
    int nfixed = 0;
    if (sys) { msgs[nmsg++] = (gn_chat_msg){"system", sys}; nfixed = 1; }
    int32_t *cached = NULL;
    int ncached = 0;
    if (o.prompt) {
        msgs = gn_realloc(msgs, sizeof(gn_chat_msg) * (size_t)(nmsg + 1));
        msgs[nmsg++] = (gn_chat_msg){"user", gn_strdup(o.prompt)};
        rc = chat_turn(&o, m, s, smp, fmt, &msgs, &nmsg, &cached, &ncached);
    } else {
        int tty = isatty(0);
        char line[16384];
        for (;;) {
            if (tty) { fputs("> ", stderr); fflush(stderr); }
            if (!fgets(line, sizeof line, stdin)) break;
            size_t l = strlen(line);
            while (l && (line[l - 1] == '\n' || line[l - 1] == '\r')) line[--l] = 0;
            if (!l) continue;
            if (!strcmp(line, "/quit") || !strcmp(line, "/exit")) break;
            if (!strcmp(line, "/reset")) {
                for (int i = nfixed; i < nmsg; i++) free((char *)msgs[i].content);
                nmsg = nfixed;
                continue;
            }
            msgs = gn_realloc(msgs, sizeof(gn_chat_msg) * (size_t)(nmsg + 1));
            msgs[nmsg++] = (gn_chat_msg){"user", gn_strdup(line)};
            if ((rc = chat_turn(&o, m, s, smp, fmt, &msgs, &nmsg, &cached, &ncached))) break;
        }
    }
    for (int i = 0; i < nmsg; i++) free((char *)msgs[i].content);
    free(msgs);
    free(cached);
    gn_sampler_free(smp);
    gn_session_free(s);
    unload(m);
    return rc;
}

// ----------------------------------------------------------------------------
// quantize

int cmd_quantize(int argc, char **argv) {
    opts o;
    int r = parse_args(&o, argc, argv,
                       "usage: guanaco quantize -m IN -o OUT_DIR [--quant-type nf4|fp4] [--no-double-quant] [--blocksize N]\n"
                       "                        [--4bit-head]\n"
                       "Writes a 4-bit model folder (bitsandbytes layout + quantization_config) that guanaco and\n"
                       "transformers both load. Embeddings, norms and lm_head keep their dtype (--4bit-head: lm_head\n"
                       "4-bit too, llm_int8_skip_modules=[] in its quantization_config).",
                       "  -o, --output DIR         folder to write (created)\n", 0);
    if (r >= 0) return r;
    if (!o.out) return cli_fail("quantize: -o/--output is required"), 2;
    o.mo.four_bit = 1;
    o.mo.mmap_weights = 1; // each weight read once: no copy out of the mapping
    gn_model *m = load(&o);
    if (!m) return 1;
    int rc = 0;
    if (gn_model_save_4bit(m, o.out)) rc = cli_fail_lib();
    else fprintf(stderr, "wrote %s\n", o.out);
    unload(m);
    return rc;
}

// ----------------------------------------------------------------------------
// merge

int cmd_merge(int argc, char **argv) {
    // --format and --dtype mean the output here; take them out before the common parser
    const char *format = "safetensors", *dtype = "f16";
    char **rest = gn_malloc(sizeof(char *) * (size_t)(argc + 1));
    int nr = 0;
    for (int i = 0; i < argc; i++) {
        if ((!strcmp(argv[i], "--format") || !strcmp(argv[i], "--dtype")) && i + 1 < argc) {
            if (argv[i][2] == 'f') format = argv[++i]; else dtype = argv[++i];
            continue;
        }
        rest[nr++] = argv[i];
    }
    rest[nr] = NULL;
    opts o;
    int r = parse_args(&o, nr, rest,
                       "usage: guanaco merge -m BASE -a ADAPTER -o OUT [--format safetensors|gguf] [--dtype f32|f16|bf16|q8_0]\n"
                       "Folds a LoRA adapter into the base weights (a 4-bit base is dequantized first) and writes an\n"
                       "HF folder (model.safetensors, config.json, the base's tokenizer files) that transformers loads,\n"
                       "or, from a GGUF base, a .gguf file that llama.cpp loads.",
                       "  -o, --output PATH        folder (safetensors) or file (gguf) to write\n"
                       "      --format F           safetensors (default) or gguf\n"
                       "      --dtype D            f32, f16 (default), bf16, nf4 (safetensors, bitsandbytes layout;\n"
                       "                           --quant-type/--no-double-quant/--blocksize/--4bit-head apply) or q8_0 (gguf)\n", 0);
    free(rest);
    if (r >= 0) return r;
    if (!o.out) return cli_fail("merge: -o/--output is required"), 2;
    gn_dtype dt;
    if (!strcmp(dtype, "f32")) dt = GN_DTYPE_F32;
    else if (!strcmp(dtype, "f16")) dt = GN_DTYPE_F16;
    else if (!strcmp(dtype, "bf16")) dt = GN_DTYPE_BF16;
    else if (!strcmp(dtype, "q8_0")) dt = GN_DTYPE_Q8_0;
    else if (!strcmp(dtype, "nf4")) dt = GN_DTYPE_NF4;
    else return cli_fail("merge: --dtype '%s' (expected f32, f16, bf16, q8_0 or nf4)", dtype), 2;
    if (dt == GN_DTYPE_NF4 && !strcmp(format, "gguf")) return cli_fail("merge: nf4 is written as safetensors (bitsandbytes layout)"), 2;
    int gguf = !strcmp(format, "gguf");
    if (!gguf && strcmp(format, "safetensors")) return cli_fail("merge: --format '%s' (expected safetensors or gguf)", format), 2;
    if (!gguf && dt == GN_DTYPE_Q8_0) return cli_fail("merge: q8_0 is a GGUF type (use --format gguf)"), 2;
    if (gguf && dt == GN_DTYPE_BF16) return cli_fail("merge: for gguf use --dtype f32, f16 or q8_0"), 2;
    const int quant_head = o.mo.quant_head; // with --dtype nf4: for the requantized output (the fold is in f32)
    if (dt == GN_DTYPE_NF4 && !o.mo.four_bit) o.mo.quant_head = 0;
    o.mo.mmap_weights = 1; // each weight read once: no copy out of the mapping
    gn_model *m = load(&o);
    if (!m) return 1;
    int rc = 0;
    double t0 = gn_time_s();
    if (dt == GN_DTYPE_NF4) {
        // fold in f32 into a temporary folder, then quantize that like `guanaco quantize`
        char tmp[4096];
        snprintf(tmp, sizeof tmp, "%s.f32-tmp", o.out);
        gn_load_opts lo = {.weight_dtype = o.mo.quant_type, .no_double_quant = o.mo.no_double_quant, .blocksize = o.mo.blocksize,
                           .compute_dtype = o.mo.compute_dtype, .quant_head = quant_head, .mmap_weights = 1};
        gn_model *mq = NULL;
        if (gn_model_save_merged(m, g_adapter, tmp, GN_DTYPE_F32) || gn_model_load(&mq, tmp, &lo) || gn_model_save_4bit(mq, o.out))
            rc = cli_fail_lib();
        gn_model_free(mq);
        static const char *const parts[] = {"model.safetensors", "config.json", "tokenizer.json", "tokenizer.model",
                                            "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"};
        for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
            char p[4300];
            snprintf(p, sizeof p, "%s/%s", tmp, parts[i]);
            unlink(p);
        }
        rmdir(tmp);
        if (!rc) fprintf(stderr, "wrote %s (safetensors, nf4) in %.1f s\n", o.out, gn_time_s() - t0);
        unload(m);
        return rc;
    } else if (gguf ? gn_model_save_merged_gguf(m, g_adapter, o.out, dt) : gn_model_save_merged(m, g_adapter, o.out, dt))
        rc = cli_fail_lib();
    else fprintf(stderr, "wrote %s (%s, %s) in %.1f s\n", o.out, format, dtype, gn_time_s() - t0);
    unload(m);
    return rc;
}

// ----------------------------------------------------------------------------

// Commands built from optional parts of the tree are weak: when their file is
// absent the command answers that it is not built.
int cmd_eval(int argc, char **argv) __attribute__((weak));
int cmd_serve(int argc, char **argv) __attribute__((weak));
int cmd_finetune(int argc, char **argv);
int cmd_grad(int argc, char **argv);
int cmd_convert_adapter(int argc, char **argv);
int cmd_eval_loss(int argc, char **argv);
int gn_data_dump_main(int argc, char **argv); // src/train/data_dump.c

static const struct { const char *name; int (*fn)(int, char **); const char *help; } COMMANDS[] = {
    {"chat", cmd_chat, "chat with a model (Guanaco prompt format or the model's template)"},
    {"generate", cmd_generate, "continue a prompt"},
    {"logits", cmd_logits, "write per-position logits for token ids as .npy"},
    {"merge", cmd_merge, "fold a LoRA adapter into the weights and write an HF folder"},
    {"info", cmd_info, "describe a model: config, tensors, dtypes, bytes"},
    {"finetune", cmd_finetune, "QLoRA: train a LoRA adapter on a frozen (4-bit) base"},
    {"quantize", cmd_quantize, "write a 4-bit (NF4/FP4) model folder in the bitsandbytes layout"},
    {"eval", cmd_eval, "evaluation: elo, judge, mmlu, crows, ppl"},
    {"serve", cmd_serve, "OpenAI-compatible HTTP server with a web chat"},
    {"tokenize", cmd_tokenize, "text to token ids (and back with --decode)"},
    {"convert-adapter", cmd_convert_adapter, "check a PEFT adapter against a base and re-save it (safetensors, any dtype)"},
    {"eval-loss", cmd_eval_loss, "mean per-row loss of a data file (finetune's eval loss)"},
    {"grad", cmd_grad, "one forward+backward: loss and LoRA gradients as safetensors (for checks)"},
    {"data-dump", gn_data_dump_main, "training rows as ids and labels, one JSON line each (for checks)"},
    {"dump", cmd_dump, "list a weights file's tensors or write one as .npy"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: guanaco COMMAND [options]   (guanaco COMMAND --help for its options)\n\ncommands:\n");
    for (size_t i = 0; i < sizeof COMMANDS / sizeof COMMANDS[0]; i++)
        fprintf(f, "  %-10s %s\n", COMMANDS[i].name, COMMANDS[i].help);
}

int main(int argc, char **argv) {
    // OpenMP threads that wait at a barrier spin for ~300k iterations by default;
    // on a machine shared with other work that burns the time slice a descheduled
    // sibling needs, and throughput collapses (measured 10x on 2 busy cores). A
    // short spin keeps quiet-machine speed. libgomp reads this at start-up, so
    // set it and re-execute once; an explicit setting is left alone.
    if (!getenv("GOMP_SPINCOUNT") && !getenv("OMP_WAIT_POLICY") && !getenv("GN_NO_REEXEC")) {
        setenv("GOMP_SPINCOUNT", "20000", 1);
        setenv("GN_NO_REEXEC", "1", 1);
        execv("/proc/self/exe", argv);
        // fall through if exec is impossible
    }
    if (argc < 2) { usage(stderr); return 2; }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) { usage(stdout); return 0; }
    for (size_t i = 0; i < sizeof COMMANDS / sizeof COMMANDS[0]; i++)
        if (!strcmp(argv[1], COMMANDS[i].name)) {
            if (!COMMANDS[i].fn) return cli_fail("command '%s' is not part of this build", argv[1]), 2;
            return COMMANDS[i].fn(argc - 1, argv + 1);
        }
    cli_fail("unknown command '%s'", argv[1]);
    usage(stderr);
    return 2;
}
