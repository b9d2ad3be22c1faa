/*
 * metrics.c — counters for GET /metrics in the Prometheus text format (0.0.4):
 * HTTP responses by status, completions by endpoint and finish reason, prompt
 * and generated tokens, request latency and time-to-first-token histograms,
 * rejections by reason, decode steps and their batch sizes, queue depth and
 * active slots.
 *
 * Own mutex; callers may hold srv.mu (the order is always srv.mu, then this).
 */
#ifdef GN_HAVE_MHD
#include "server.h"

#include <string.h> // strcmp

#include "core/common.h" // gn_time_s

#define NB 12
static const double BUCKETS[NB] = {0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120};

typedef struct {
    unsigned long long count[NB + 1]; // last: +Inf
    double sum;
    unsigned long long n;
} histo;

static const char *const REASONS[] = {"queue_full", "timeout", "client_gone", "bad_prompt", "error", "shutdown"};
#define NREASONS (int)(sizeof REASONS / sizeof REASONS[0])
static const int CODES[] = {200, 400, 401, 404, 405, 408, 413, 500, 503};
#define NCODES (int)(sizeof CODES / sizeof CODES[0])

static struct {
    pthread_mutex_t mu;
    unsigned long long http[NCODES + 1];        // last: other
    unsigned long long done[2][3];              // [chat|completion][stop|length|cancelled]
    unsigned long long prompt_tokens, gen_tokens, prefill_tokens, reused_tokens;
    unsigned long long rejected[NREASONS];
    unsigned long long steps, step_rows;
    histo latency, ttft;
} M = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void observe(histo *h, double v) {
    int i = 0;
    while (i < NB && v > BUCKETS[i]) i++;
    h->count[i]++;
    h->sum += v;
    h->n++;
}

void metrics_http(int status) {
    pthread_mutex_lock(&M.mu);
    int i = 0;
    while (i < NCODES && CODES[i] != status) i++;
    M.http[i]++;
    pthread_mutex_unlock(&M.mu);
}

void metrics_rejected(const char *reason) {
    pthread_mutex_lock(&M.mu);
    for (int i = 0; i < NREASONS; i++)
        if (!strcmp(reason, REASONS[i])) M.rejected[i]++;
    pthread_mutex_unlock(&M.mu);
}

void metrics_finished(const srv_job *j, int finish, int n_prompt, int n_gen, double ttft_s) {
    pthread_mutex_lock(&M.mu);
    int f = finish == FIN_STOP ? 0 : finish == FIN_LENGTH ? 1 : 2;
    M.done[j->kind == JOB_CHAT ? 0 : 1][f]++;
    M.prompt_tokens += (unsigned long long)n_prompt;
    M.gen_tokens += (unsigned long long)n_gen;
    if (finish != FIN_CANCEL) {
        observe(&M.latency, gn_time_s() - j->t_arrival);
        if (n_gen > 0) observe(&M.ttft, ttft_s);
    }
    pthread_mutex_unlock(&M.mu);
}

void metrics_step(int batch) {
    pthread_mutex_lock(&M.mu);
    M.steps++;
    M.step_rows += (unsigned long long)batch;
    pthread_mutex_unlock(&M.mu);
}

void metrics_prefill(int n_tokens, int reused) {
    pthread_mutex_lock(&M.mu);
    M.prefill_tokens += (unsigned long long)n_tokens;
    M.reused_tokens += (unsigned long long)reused;
    pthread_mutex_unlock(&M.mu);
}

static void histo_text(gn_buf *o, const char *name, const char *help, const histo *h) {
    gn_buf_printf(o, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    unsigned long long cum = 0;
    for (int i = 0; i < NB; i++) {
        cum += h->count[i];
        gn_buf_printf(o, "%s_bucket{le=\"%g\"} %llu\n", name, BUCKETS[i], cum);
    }
    cum += h->count[NB];
    gn_buf_printf(o, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.6f\n%s_count %llu\n", name, cum, name, h->sum, name, h->n);
}

void metrics_text(gn_buf *o, int queued, int active) {
    pthread_mutex_lock(&M.mu);
    gn_buf_puts(o, "# HELP guanaco_http_responses_total HTTP responses by status code.\n"
               "# TYPE guanaco_http_responses_total counter\n");
    for (int i = 0; i <= NCODES; i++) {
        if (i == NCODES) gn_buf_printf(o, "guanaco_http_responses_total{code=\"other\"} %llu\n", M.http[i]);
        else gn_buf_printf(o, "guanaco_http_responses_total{code=\"%d\"} %llu\n", CODES[i], M.http[i]);
    }
    gn_buf_puts(o, "# HELP guanaco_requests_total Completion requests finished, by endpoint and finish reason.\n"
               "# TYPE guanaco_requests_total counter\n");
    static const char *const EP[2] = {"chat", "completions"}, *const FIN[3] = {"stop", "length", "cancelled"};
    for (int e = 0; e < 2; e++)
        for (int f = 0; f < 3; f++)
            gn_buf_printf(o, "guanaco_requests_total{endpoint=\"%s\",finish_reason=\"%s\"} %llu\n", EP[e], FIN[f], M.done[e][f]);
    gn_buf_puts(o, "# HELP guanaco_requests_rejected_total Requests that got no completion, by reason.\n"
               "# TYPE guanaco_requests_rejected_total counter\n");
    for (int i = 0; i < NREASONS; i++)
        gn_buf_printf(o, "guanaco_requests_rejected_total{reason=\"%s\"} %llu\n", REASONS[i], M.rejected[i]);
    gn_buf_printf(o,
              "# HELP guanaco_prompt_tokens_total Prompt tokens of finished requests.\n"
              "# TYPE guanaco_prompt_tokens_total counter\nguanaco_prompt_tokens_total %llu\n"
              "# HELP guanaco_generated_tokens_total Tokens generated.\n"
              "# TYPE guanaco_generated_tokens_total counter\nguanaco_generated_tokens_total %llu\n"
              "# HELP guanaco_prefill_tokens_total Prompt tokens run through the model (not found in a cache).\n"
              "# TYPE guanaco_prefill_tokens_total counter\nguanaco_prefill_tokens_total %llu\n"
              "# HELP guanaco_prefix_reused_tokens_total Prompt tokens reused from a slot's KV cache.\n"
              "# TYPE guanaco_prefix_reused_tokens_total counter\nguanaco_prefix_reused_tokens_total %llu\n"
              "# HELP guanaco_decode_steps_total Batched decode passes.\n"
              "# TYPE guanaco_decode_steps_total counter\nguanaco_decode_steps_total %llu\n"
              "# HELP guanaco_decode_rows_total Sequences advanced by those passes (rows / steps = mean batch).\n"
              "# TYPE guanaco_decode_rows_total counter\nguanaco_decode_rows_total %llu\n",
              M.prompt_tokens, M.gen_tokens, M.prefill_tokens, M.reused_tokens, M.steps, M.step_rows);
    histo_text(o, "guanaco_request_duration_seconds", "Time from arrival to the last token.", &M.latency);
    histo_text(o, "guanaco_time_to_first_token_seconds", "Time from arrival to the first generated token.", &M.ttft);
    pthread_mutex_unlock(&M.mu);
    gn_buf_printf(o,
              "# HELP guanaco_queue_depth Requests waiting for a slot.\n# TYPE guanaco_queue_depth gauge\n"
              "guanaco_queue_depth %d\n"
              "# HELP guanaco_active_requests Requests holding a slot.\n# TYPE guanaco_active_requests gauge\n"
              "guanaco_active_requests %d\n"
              "# HELP guanaco_slots Sessions decoded together (--parallel).\n# TYPE guanaco_slots gauge\n"
              "guanaco_slots %d\n",
              queued, active, srv.o.parallel);
}

#endif // GN_HAVE_MHD
