/*
 * cmd_serve.c — `guanaco serve`: flags for the OpenAI-compatible HTTP server
 * (src/server/). Everything else lives there.
 *
 *   guanaco serve -m MODEL [--4bit] [-a NAME=PATH ...] [--host 127.0.0.1] [--port 8080]
 */

// Built only with libmicrohttpd (the Makefile defines GN_HAVE_MHD when pkg-config finds it).
#ifdef GN_HAVE_MHD
#include "cli.h"

#include <errno.h>  // errno
#include <stdio.h>  // printf
#include <stdlib.h> // strtol, getenv
#include <string.h> // strcmp, strchr

#include "server/server.h" // srv_opts, srv_main (the server is part of this program, not of the library)

static const char USAGE[] =
    "usage: guanaco serve -m MODEL [--4bit] [-a NAME=PATH ...] [--host 127.0.0.1] [--port 8080] [options]\n"
    "OpenAI-compatible HTTP server: POST /v1/chat/completions and /v1/completions (streaming or not),\n"
    "GET /v1/models, /health, /metrics; a chat playground at / and a pairwise rating page at /rate.\n"
    "Requests are decoded together (continuous batching); \"model\" picks the base or an adapter.\n\n"
    "  -m, --model PATH         HF folder, weights file or .gguf (required)\n"
    "  -a, --adapter NAME=PATH  PEFT LoRA adapter served as model NAME (repeatable; PATH alone: NAME = folder name)\n"
    "      --model-name NAME    the base model's name in requests (default: file/folder name)\n"
    "      --host HOST          address to bind (default 127.0.0.1; 0.0.0.0 exposes the server)\n"
    "      --port N             port (default 8080; 0 = any free port, printed on stdout)\n"
    "      --api-key KEY        require 'Authorization: Bearer KEY' on /v1 and /rate calls\n"
    "                           (default: the GUANACO_API_KEY environment variable, else none)\n"
    "  -c, --ctx N              tokens per session, prompt + answer (default min(2048, model max))\n"
    "      --parallel N         sessions decoded together (default 8)\n"
    "      --queue N            requests that may wait for a session before 503 (default 64)\n"
    "  -t, --threads N          kernel threads (default: all cores)\n"
    "      --dtype f32|bf16     weight dtype (default f32)\n"
    "      --4bit               quantize the linear layers on load (NF4, double quantization, block 64,\n"
    "                           bf16 compute: transformers' load_in_4bit as QLoRA uses it)\n"
    "      --4bit-head          with --4bit: lm_head in 4-bit too (bnb's llm_int8_skip_modules=[])\n"
    "      --quant-type nf4|fp4 --no-double-quant --blocksize N --compute-dtype bf16|f32   4-bit settings\n"
    "      --device cpu|cuda    where the forward pass runs (default cpu; cuda needs a make CUDA=1 build)\n"
    "      --template NAME      chat format: auto (default: the model's own, else guanaco), guanaco,\n"
    "                           guanaco-demo, chatml, llama2, llama3\n"
    "      --max-body BYTES     largest request body (default 1048576)\n"
    "      --max-prompt-tokens N  longest prompt (default ctx - 1)\n"
    "      --max-tokens N       largest max_tokens a request may ask for; also the default (default 2048)\n"
    "      --timeout S          per request, from arrival to the last token (default 600)\n"
    "      --read-timeout S     time a client has to send a whole request (default 10)\n"
    "      --max-connections N  open connections (default 256)\n"
    "      --rate-a FILE        generations of system A for /rate (the release's generations format)\n"
    "      --rate-b FILE        generations of system B for /rate\n"
    "      --ratings-file FILE  judgments written by /rate (default A-vs-B-human-reviewer-threeclass.jsonl)\n"
    "  -v, --verbose            log loading, requests and libmicrohttpd messages\n";

// Weak: when the Makefile does not compile src/server/*.c the command says so
// instead of breaking the link.
int srv_main(const srv_opts *o) __attribute__((weak));

static int parse_secs(const char *flag, const char *v, double *out) {
    char *end;
    double x = strtod(v, &end);
    if (!*v || *end || !(x > 0 && x <= 1e6)) {
        cli_fail("%s: '%s' (expected seconds > 0)", flag, v);
        return -1;
    }
    *out = x;
    return 0;
}

int cmd_serve(int argc, char **argv) {
    srv_opts o;
    memset(&o, 0, sizeof o);
    o.host = "127.0.0.1";
    o.port = 8080;
    o.parallel = 8;
    o.queue = 64;
    cli_model mo; // -m -t -c --dtype --4bit ... -v (cli_args.c); -a is NAME=PATH here
    cli_model_init(&mo, CLI_CTX | CLI_NO_ADAPTER);
    o.fmt = GN_CHAT_AUTO;
    o.max_body = 1 << 20;
    o.max_tokens = 2048;
    o.timeout_s = 600;
    o.read_timeout_s = 10;
    o.max_connections = 256;
    o.api_key = getenv("GUANACO_API_KEY");
    if (o.api_key && !o.api_key[0]) o.api_key = NULL;
    int mpt = 0;
    int rc = 2;
    o.adapters = gn_calloc((size_t)argc + 1, sizeof(srv_adapter_spec));
    char **owned = gn_calloc((size_t)argc + 1, sizeof(char *)); // adapter names we cut out of NAME=PATH
    int n_owned = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
#define IS(s, l) (!strcmp(a, s) || !strcmp(a, l))
#define VAL() (i + 1 < argc ? argv[++i] : (cli_fail("%s needs a value", a), (char *)NULL))
        char *v;
        int x;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { fputs(USAGE, stdout); rc = 0; goto done; }
        int r = cli_model_flag(&mo, argc, argv, &i);
        if (r < 0) goto done;
        if (r) continue;
        if (IS("-a", "--adapter")) {
            if (!(v = VAL())) goto done;
            const char *eq = strchr(v, '=');
            srv_adapter_spec *s = &o.adapters[o.n_adapters++];
            if (eq && eq != v) {
                s->name = owned[n_owned++] = gn_strndup(v, (size_t)(eq - v));
                s->path = eq + 1;
            } else { // PATH alone: the folder's name
                const char *p = eq ? eq + 1 : v;
                size_t n = strlen(p);
                while (n > 1 && p[n - 1] == '/') n--;
                const char *b = p + n;
                while (b > p && b[-1] != '/') b--;
                s->name = owned[n_owned++] = gn_strndup(b, (size_t)(p + n - b));
                s->path = p;
            }
            if (!s->path[0] || !s->name[0]) { cli_fail("-a: '%s' (expected NAME=PATH)", v); goto done; }
        }
        else if (!strcmp(a, "--model-name")) { if (!(o.model_name = VAL())) goto done; }
        else if (!strcmp(a, "--host")) { if (!(o.host = VAL())) goto done; }
        else if (!strcmp(a, "--port")) { if (!(v = VAL()) || cli_int(a, v, 0, 65535, &x)) goto done; o.port = x; }
        else if (!strcmp(a, "--api-key")) { if (!(o.api_key = VAL())) goto done; if (!o.api_key[0]) o.api_key = NULL; }
        else if (!strcmp(a, "--parallel")) { if (!(v = VAL()) || cli_int(a, v, 1, 256, &x)) goto done; o.parallel = x; }
        else if (!strcmp(a, "--queue")) { if (!(v = VAL()) || cli_int(a, v, 0, 1 << 20, &x)) goto done; o.queue = x; }
        else if (!strcmp(a, "--max-body")) { if (!(v = VAL()) || cli_int(a, v, 1024, 1L << 30, &x)) goto done; o.max_body = x; }
        else if (!strcmp(a, "--max-prompt-tokens")) { if (!(v = VAL()) || cli_int(a, v, 1, 1 << 20, &mpt)) goto done; }
        else if (!strcmp(a, "--max-tokens")) { if (!(v = VAL()) || cli_int(a, v, 1, 1 << 20, &x)) goto done; o.max_tokens = x; }
        else if (!strcmp(a, "--max-connections")) { if (!(v = VAL()) || cli_int(a, v, 4, 100000, &x)) goto done; o.max_connections = x; }
        else if (!strcmp(a, "--timeout")) { if (!(v = VAL()) || parse_secs(a, v, &o.timeout_s)) goto done; }
        else if (!strcmp(a, "--read-timeout")) { if (!(v = VAL()) || parse_secs(a, v, &o.read_timeout_s)) goto done; }
        else if (!strcmp(a, "--rate-a")) { if (!(o.rate_a = VAL())) goto done; }
        else if (!strcmp(a, "--rate-b")) { if (!(o.rate_b = VAL())) goto done; }
        else if (!strcmp(a, "--ratings-file")) { if (!(o.ratings_file = VAL())) goto done; }
        else if (!strcmp(a, "--template")) {
            if (!(v = VAL())) goto done;
            if (gn_chat_format_parse(v, &o.fmt)) { cli_fail_lib(); goto done; }
        }
        else { cli_fail("unknown option '%s' (see guanaco serve --help)", a); goto done; }
#undef IS
#undef VAL
    }
    if (!mo.model) { cli_fail("serve: -m/--model is required (see --help)"); goto done; }
    o.model_path = mo.model;
    o.load = cli_load_opts(&mo);
    o.threads = mo.threads;
    o.verbose = mo.verbose;
    cli_model_apply(&mo);
    o.ctx = mo.ctx;                 // 0: min(2048, the model's length), decided after loading
    o.max_prompt_tokens = mpt; // 0: ctx - 1
    if (!srv_main) {
        cli_fail("serve: the server (src/server/*.c) is not part of this build. HINT: the Makefile's CLI_SRC must "
                 "include src/server/*.c");
        rc = 1;
        goto done;
    }
    rc = srv_main(&o);
done:
    for (int i = 0; i < n_owned; i++) free(owned[i]);
    free(owned);
    free(o.adapters);
    return rc;
}

#endif // GN_HAVE_MHD
