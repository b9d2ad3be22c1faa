/*
 * fuzz_http.c — the request handling of `guanaco serve` without sockets: the
 * functions http.c calls with a request's body or path once libmicrohttpd has
 * read it (libmicrohttpd itself parses the HTTP framing):
 *   src/server/api.c api_parse   POST /v1/chat/completions, /v1/completions
 *                                (UTF-8 check, JSON, every field's validation)
 *   src/server/rate.c rate_verdict POST /rate/verdict (writes a judgment line)
 *   src/server/api.c api_model_json GET /v1/models/{id}
 * The server state is a stand-in: the tiny model of fuzz_tiny_model.h (its
 * vocab bounds token-id prompts), one adapter name, two small generations
 * files for /rate.
 * First input byte: 0 chat, 1 completion, 2 /rate/verdict, 3 model id,
 * bit 3 -> the server has a default system prompt. The rest is the body.
 */
#include "fuzz_tiny_model.h"
#include "server/server.h"

srv_state srv; // http.c's global, which the handlers read

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc; (void)argv;
    fz_setup();
    fz_tiny_model("base", 0);
    char dir[512], a[512], b[512], r[512];
    if (gn_model_load(&srv.model, fz_path("base", dir, sizeof dir), NULL) != GN_OK) {
        fprintf(stderr, "tiny model: %s\n", gn_last_error());
        abort();
    }
    srv.model_name = "base";
    static srv_adapter ads[1] = {{"ad1", NULL}};
    srv.adapters = ads;
    srv.n_adapters = 1;
    srv.o.max_tokens = 512;
    srv.o.timeout_s = 60;
    static const char ga[] = "{\"question_id\": 1, \"text\": \"q1\", \"generation\": \"a1\"}\n"
                             "{\"question_id\": 2, \"text\": \"q2\", \"generation\": \"a2\"}\n";
    static const char gb[] = "{\"question_id\": 2, \"text\": \"q2\", \"generation\": \"b2\"}\n"
                             "{\"question_id\": 1, \"text\": \"q1\", \"generation\": \"b1\"}\n";
    fz_write("sysA.jsonl", ga, sizeof ga - 1, a, sizeof a);
    fz_write("sysB.jsonl", gb, sizeof gb - 1, b, sizeof b);
    fz_path("ratings.jsonl", r, sizeof r);
    static srv_opts o;
    o.rate_a = gn_strdup(a);
    o.rate_b = gn_strdup(b);
    o.ratings_file = gn_strdup(r);
    if (rate_init(&o) != 0) abort();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    static unsigned calls;
    if (++calls % 1024 == 0) fz_remove("ratings.jsonl"); // keep the judgments file small
    srv.default_system = (data[0] & 8) ? "You are a helpful assistant." : NULL;
    // an exact-size heap copy, not NUL-terminated: handlers must honour len
    size_t n = size - 1;
    char *body = gn_malloc(n ? n : 1);
    memcpy(body, data + 1, n);
    gn_buf out = {0};
    int status = 0;
    switch (data[0] & 3) {
    case 0:
    case 1: {
        srv_job *j = api_parse((data[0] & 3) == 0 ? JOB_CHAT : JOB_COMPLETION, body, n, &out, &status);
        if (j) {
            if (j->n_prompt_ids > 0)
                for (int i = 0; i < j->n_prompt_ids; i++)
                    if (j->prompt_ids[i] < 0 || j->prompt_ids[i] >= gn_model_config(srv.model)->vocab_size) abort();
            job_free(j);
        } else if (status < 400 || !out.buf) {
            abort(); // a refusal always has an error status and body
        }
        break;
    }
    case 2:
        status = rate_verdict(body, n, &out);
        break;
    default: {
        char *id = gn_strndup(body, n);
        (void)api_model_json(&out, id);
        free(id);
        break;
    }
    }
    gn_buf_free(&out);
    free(body);
    return 0;
}
