/*
 * server.h — `guanaco serve`: an OpenAI-compatible HTTP server with continuous
 * batching, a chat playground at / and a pairwise human-rating page at /rate.
 *
 * Threads: libmicrohttpd runs one socket loop (its internal polling
 * thread); one inference thread owns the model, the sessions and the samplers and
 * is fed by a bounded queue; the main thread only supervises (signals and the
 * slow-client watchdog). Everything the two sides share sits in `srv` behind the
 * one mutex srv.mu; the inference thread never calls into libmicrohttpd while
 * holding it.
 *
 *   http.c     sockets, routing, bodies, suspend/resume, auth, watchdog
 *   api.c      OpenAI request validation -> srv_job, response JSON
 *   engine.c   the inference thread: admission, prefill, batched decode, stops
 *   metrics.c  Prometheus counters and histograms
 *   rate.c     /rate: pairs from two generations files, verdicts as judgments
 *   pages.c    the HTML/JS of / and /rate
 */
#ifndef GN_SERVER_H
#define GN_SERVER_H

#include <pthread.h> // pthread_mutex_t, pthread_cond_t
#include <stddef.h>  // size_t
#include <stdint.h>  // int32_t

#include "core/buf.h" // gn_buf
#include "guanaco.h" // gn_model, gn_session, gn_sampler_opts, gn_chat_msg

struct MHD_Connection;
struct MHD_Daemon;
typedef struct cJSON cJSON;

// ----------------------------------------------------------------------------
// options (filled by cli/cmd_serve.c)

typedef struct {
    const char *name;  // what requests put in "model"
    const char *path;  // PEFT folder
} srv_adapter_spec;

typedef struct {
    const char *model_path;
    const char *model_name;     // NULL: the file/folder name without extension
    const char *host;           // default 127.0.0.1
    int port;                   // 0: any free port (printed on stdout)
    const char *api_key;        // NULL: no key needed
    int ctx;                    // tokens per session (KV cache size)
    int parallel;               // sessions decoded together (slots)
    int queue;                  // requests waiting for a slot before 503
    int threads;                // kernel threads (0: all cores)
    gn_load_opts load;          // weight dtype, 4-bit settings
    gn_chat_format fmt;
    size_t max_body;            // bytes
    int max_prompt_tokens;      // 0: ctx - 1
    int max_tokens;             // upper bound a request may ask for
    double timeout_s;           // per request, from arrival to the last token
    double read_timeout_s;      // to receive a whole request (slow clients)
    int max_connections;
    srv_adapter_spec *adapters;
    int n_adapters;
    const char *rate_a, *rate_b; // generations files for /rate (both or neither)
    const char *ratings_file;    // judgments JSONL (NULL: derived from rate_a/rate_b)
    int verbose;
} srv_opts;

// Loads everything, serves until SIGINT/SIGTERM. Returns the process exit code.
int srv_main(const srv_opts *o);

// ----------------------------------------------------------------------------
// byte buffers: gn_buf (core/buf.h)

void sb_json_str(gn_buf *b, const char *s, size_t n); // a JSON string literal, quotes included

// Is s[0..n) well-formed UTF-8 (no overlongs, surrogates or code points past U+10FFFF)?
int utf8_valid(const char *s, size_t n);

// ----------------------------------------------------------------------------
// jobs: one completion request, shared by its connection and the inference thread

enum { JOB_CHAT = 0, JOB_COMPLETION = 1 };
enum { JS_QUEUED = 0, JS_RUNNING, JS_DONE, JS_FAILED };
enum { FIN_NONE = 0, FIN_STOP, FIN_LENGTH, FIN_CANCEL };

typedef struct srv_job srv_job;
struct srv_job {
    // -- the request: written by the socket thread before enqueueing, then read-only
    int kind;                   // JOB_CHAT / JOB_COMPLETION
    int stream, include_usage;
    char *prompt;               // completions: the text
    int32_t *prompt_ids;        // completions given as token ids (else NULL)
    int n_prompt_ids;
    gn_chat_msg *msgs;          // chat: normalised messages (system first if any)
    int n_msgs;
    int adapter;                // index into srv.adapters, -1 = base
    char *model;                // the name the client asked for (echoed back)
    gn_sampler_opts smp;
    int max_tokens;             // -1: as many as the context allows (up to the server's limit)
    char **stop;                // user stop strings
    int n_stop;
    double t_arrival, deadline; // gn_time_s()
    long created;               // unix time
    char id[48];                // "chatcmpl-..." / "cmpl-..."

    // -- shared under srv.mu
    int refs;                   // connection + queue/slot
    int state;                  // JS_*
    int http_status;            // for JS_FAILED before any output
    struct MHD_Connection *conn;// NULL once the request is over
    int fd;                     // the connection's socket (peeked for disconnects)
    int suspended;              // the connection is suspended waiting for us
    int cancelled;              // client gone or server stopping: stop working
    gn_buf out;                   // bytes for the client (SSE events or the whole body)
    size_t out_read;            // how much of out the connection has taken

    srv_job *next;              // queue link
};

// ----------------------------------------------------------------------------
// the server state (one, global)

typedef struct {
    const char *name;
    gn_adapter *ad;
} srv_adapter;

typedef struct srv_conn srv_conn; // http.c: a socket for the watchdog

typedef struct {
    srv_opts o;
    gn_model *model;
    const gn_tokenizer *tok;
    char *model_name;
    srv_adapter *adapters;
    int n_adapters;
    gn_chat_format fmt;
    char *default_system;       // the format's system line (NULL: none)
    long started;               // unix time

    pthread_mutex_t mu;         // guards everything below
    pthread_cond_t cv;          // inference thread waits here for work
    srv_job *q_head, *q_tail;   // waiting requests
    int q_len;
    int n_active;               // jobs in slots
    int stopping;
    srv_conn *conns;            // open sockets (watchdog)

    struct MHD_Daemon *daemon;
    pthread_t infer_thread;
} srv_state;

extern srv_state srv;

void job_unref_locked(srv_job *j);   // drops a reference; frees at zero (srv.mu held)

// engine.c
int engine_start(void);               // starts the inference thread; 0 on success
void engine_stop(void);               // asks it to finish every job and joins it
// Queues j (takes a reference). Returns 0, or -1 when the queue is full / stopping.
int engine_submit_locked(srv_job *j);

// api.c
// Parses and validates a request body into a new job (refs 0). On a bad request
// returns NULL and writes an OpenAI error body to err with *status set.
srv_job *api_parse(int kind, const char *body, size_t len, gn_buf *err, int *status);
// An OpenAI-style error object: {"error": {"message","type","param","code"}}.
void api_error_json(gn_buf *out, const char *message, const char *type, const char *param, const char *code);
void api_models_json(gn_buf *out);
int api_model_json(gn_buf *out, const char *id);   // -1 when no such model
uint64_t srv_rand64(void);                       // socket thread only
void srv_rand_id(char *out, int n);              // n chars of [A-Za-z0-9] + NUL
void job_free(srv_job *j);

// metrics.c: counters behind their own mutex (taken after srv.mu, never before)
void metrics_http(int status);
void metrics_rejected(const char *reason);   // shutdown, timeout, client_gone, bad_prompt, error, queue_full
void metrics_finished(const srv_job *j, int finish, int n_prompt, int n_gen, double ttft_s);
void metrics_step(int batch);
void metrics_prefill(int n_tokens, int reused);
void metrics_text(gn_buf *out, int queued, int active);

// rate.c
int rate_init(const srv_opts *o);     // loads the two files; 0 ok (also when not configured)
void rate_free(void);
int rate_enabled(void);
// GET /rate/pair: a random pair as JSON. Returns the HTTP status.
int rate_pair_json(gn_buf *out);
// POST /rate/verdict: appends a judgment line. Returns the HTTP status; body in out.
int rate_verdict(const char *body, size_t len, gn_buf *out);

// pages.c
extern const char PAGE_CHAT[];
extern const char PAGE_RATE[];

#endif
