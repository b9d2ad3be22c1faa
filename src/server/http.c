/*
 * http.c — the socket side of `guanaco serve` on libmicrohttpd: one internal
 * polling thread (epoll on Linux), routing, request bodies with a size limit,
 * API-key checks, and the hand-off of completion requests to the inference
 * thread.
 *
 * A completion request is parsed when its body is complete, queued, and its
 * connection suspended. The inference thread resumes it when there is something
 * to send: an error, the whole body, or (streams) more SSE bytes, which the
 * content reader hands out and suspends again when it runs dry. A suspended
 * connection is invisible to MHD, so the inference thread peeks its socket for
 * EOF to notice clients that left (engine.c).
 *
 * Slow clients: MHD's inactivity timeout does not stop a client that trickles a
 * byte a second, so the main thread runs a watchdog that shuts down any socket
 * that has not delivered a whole request within --read-timeout seconds of
 * connecting (or of its previous request finishing).
 */

// Built only with libmicrohttpd (the Makefile defines GN_HAVE_MHD when pkg-config finds it).
#ifdef GN_HAVE_MHD
#include "server.h"

#include <arpa/inet.h>   // inet_pton
#include <errno.h>       // errno
#include <microhttpd.h>  // MHD_start_daemon, MHD_queue_response, MHD_suspend_connection
#include <netdb.h>       // getaddrinfo
#include <netinet/in.h>  // sockaddr_in
#include <signal.h>      // sigaction
#include <stdio.h>       // printf
#include <stdlib.h>      // strtoull
#include <string.h>      // strcmp
#include <strings.h>     // strncasecmp
#include <sys/socket.h>  // shutdown
#include <time.h>        // time

#include "core/common.h" // gn_malloc, gn_time_s, gn_log

srv_state srv;

// ----------------------------------------------------------------------------
// jobs and sockets

void job_unref_locked(srv_job *j) {
    GN_ASSERT(j->refs > 0);
    if (--j->refs == 0) job_free(j);
}

struct srv_conn {
    int fd;
    double since;     // when the socket started waiting for a request
    int busy;         // a whole request arrived and is being answered
    int killed;
    srv_conn *prev, *next;
};

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode code) {
    (void)cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        srv_conn *k = gn_calloc(1, sizeof *k);
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        k->fd = ci ? ci->connect_fd : -1;
        k->since = gn_time_s();
        pthread_mutex_lock(&srv.mu);
        k->next = srv.conns;
        if (srv.conns) srv.conns->prev = k;
        srv.conns = k;
        pthread_mutex_unlock(&srv.mu);
        *socket_context = k;
    } else {
        srv_conn *k = *socket_context;
        if (!k) return;
        pthread_mutex_lock(&srv.mu);
        if (k->prev) k->prev->next = k->next; else srv.conns = k->next;
        if (k->next) k->next->prev = k->prev;
        pthread_mutex_unlock(&srv.mu);
        free(k);
        *socket_context = NULL;
    }
}

static srv_conn *conn_of(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? (srv_conn *)ci->socket_context : NULL;
}

static void set_busy(struct MHD_Connection *c, int busy) {
    srv_conn *k = conn_of(c);
    if (!k) return;
    pthread_mutex_lock(&srv.mu);
    k->busy = busy;
    if (!busy) k->since = gn_time_s();
    pthread_mutex_unlock(&srv.mu);
}

// Shuts down sockets that are too slow to deliver a request (main thread).
static void watchdog(void) {
    double now = gn_time_s();
    pthread_mutex_lock(&srv.mu);
    for (srv_conn *k = srv.conns; k; k = k->next)
        if (!k->busy && !k->killed && k->fd >= 0 && now - k->since > srv.o.read_timeout_s) {
            shutdown(k->fd, SHUT_RDWR); // MHD sees the end of the stream and closes the connection
            k->killed = 1;
            metrics_http(408);
        }
    pthread_mutex_unlock(&srv.mu);
}

// ----------------------------------------------------------------------------
// requests

enum {
    R_NOT_FOUND = 0, R_BAD_METHOD, R_CHAT_PAGE, R_RATE_PAGE, R_HEALTH, R_METRICS, R_MODELS, R_MODEL_ONE,
    R_CHAT, R_COMPL, R_RATE_PAIR, R_RATE_VERDICT,
};

typedef struct {
    int route;
    gn_buf body;
    int too_big;
    size_t received;    // body bytes, kept or not
    int answered;       // a response is queued
    srv_job *job;
    double t0;
    int status;
    char what[160];     // "METHOD /path" for the access log
} req_ctx;

static int route_of(const char *method, const char *url) {
    int get = !strcmp(method, "GET") || !strcmp(method, "HEAD"), post = !strcmp(method, "POST");
    static const struct { const char *path; int get, post; } T[] = {
        {"/", R_CHAT_PAGE, -1}, {"/index.html", R_CHAT_PAGE, -1}, {"/rate", R_RATE_PAGE, -1},
        {"/rate/pair", R_RATE_PAIR, -1}, {"/rate/verdict", -1, R_RATE_VERDICT}, {"/health", R_HEALTH, -1},
        {"/metrics", R_METRICS, -1}, {"/v1/models", R_MODELS, -1}, {"/v1/chat/completions", -1, R_CHAT},
        {"/v1/completions", -1, R_COMPL},
    };
    for (size_t i = 0; i < sizeof T / sizeof T[0]; i++)
        if (!strcmp(url, T[i].path)) {
            int r = get ? T[i].get : post ? T[i].post : -1;
            return r < 0 ? R_BAD_METHOD : r;
        }
    if (!strncmp(url, "/v1/models/", 11) && url[11]) return get ? R_MODEL_ONE : R_BAD_METHOD;
    return R_NOT_FOUND;
}

static int needs_key(int route) {
    return route == R_MODELS || route == R_MODEL_ONE || route == R_CHAT || route == R_COMPL || route == R_RATE_PAIR ||
           route == R_RATE_VERDICT;
}

static int has_body(int route) { return route == R_CHAT || route == R_COMPL || route == R_RATE_VERDICT; }

static enum MHD_Result respond(struct MHD_Connection *c, req_ctx *r, int status, const char *ctype, const char *body,
                               size_t len) {
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!resp) return MHD_NO;
    MHD_add_response_header(resp, "Content-Type", ctype);
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    if (!strncmp(ctype, "text/html", 9)) {
        MHD_add_response_header(resp, "X-Frame-Options", "DENY");
        MHD_add_response_header(resp, "Content-Security-Policy",
                                "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'");
    }
    if (status == 503) MHD_add_response_header(resp, "Retry-After", "1");
    if (status == 401) MHD_add_response_header(resp, "WWW-Authenticate", "Bearer");
    if (status == 405) MHD_add_response_header(resp, "Allow", "GET, HEAD, POST");
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, resp);
    MHD_destroy_response(resp);
    if (r) { r->status = status; r->answered = 1; }
    metrics_http(status);
    return ret;
}

static enum MHD_Result respond_json(struct MHD_Connection *c, req_ctx *r, int status, const gn_buf *b) {
    return respond(c, r, status, "application/json", b->buf ? b->buf : "", b->len);
}

static enum MHD_Result respond_error(struct MHD_Connection *c, req_ctx *r, int status, const char *msg,
                                     const char *type, const char *code) {
    gn_buf b = {0};
    api_error_json(&b, msg, type, NULL, code);
    enum MHD_Result ret = respond_json(c, r, status, &b);
    gn_buf_free(&b);
    return ret;
}

// Constant-time check of "Authorization: Bearer <key>".
static int key_ok(struct MHD_Connection *c) {
    if (!srv.o.api_key) return 1;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h || strncasecmp(h, "Bearer ", 7)) return 0;
    h += 7;
    size_t n = strlen(h), k = strlen(srv.o.api_key);
    unsigned diff = (unsigned)(n != k);
    for (size_t i = 0; i < n; i++) diff |= (unsigned char)h[i] ^ (unsigned char)srv.o.api_key[i % (k ? k : 1)];
    return diff == 0;
}

// ----------------------------------------------------------------------------
// completion requests: queue, suspend, answer when the inference thread wakes us

static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    srv_job *j = cls;
    pthread_mutex_lock(&srv.mu);
    if (j->cancelled) { pthread_mutex_unlock(&srv.mu); return MHD_CONTENT_READER_END_WITH_ERROR; }
    size_t avail = j->out.len - j->out_read;
    if (avail) {
        size_t n = avail < max ? avail : max;
        memcpy(buf, j->out.buf + j->out_read, n);
        j->out_read += n;
        if (j->out_read == j->out.len) j->out.len = j->out_read = 0;
        pthread_mutex_unlock(&srv.mu);
        return (ssize_t)n;
    }
    if (j->state == JS_DONE || j->state == JS_FAILED) {
        pthread_mutex_unlock(&srv.mu);
        return MHD_CONTENT_READER_END_OF_STREAM;
    }
    j->suspended = 1; // the inference thread resumes us when it writes more
    MHD_suspend_connection(j->conn);
    pthread_mutex_unlock(&srv.mu);
    return 0;
}

static enum MHD_Result start_job(struct MHD_Connection *c, req_ctx *r) {
    gn_buf err = {0};
    int status = 400;
    srv_job *j = api_parse(r->route == R_CHAT ? JOB_CHAT : JOB_COMPLETION, r->body.buf ? r->body.buf : "", r->body.len,
                           &err, &status);
    gn_buf_free(&r->body);
    if (!j) {
        enum MHD_Result ret = respond_json(c, r, status, &err);
        gn_buf_free(&err);
        return ret;
    }
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    pthread_mutex_lock(&srv.mu);
    j->refs = 1; // this connection's
    if (engine_submit_locked(j)) {
        int stopping = srv.stopping;
        job_unref_locked(j);
        pthread_mutex_unlock(&srv.mu);
        metrics_rejected(stopping ? "shutdown" : "queue_full");
        return respond_error(c, r, 503,
                             stopping ? "the server is shutting down"
                                      : "the server is busy: the request queue is full, retry later (--queue)",
                             "server_error", stopping ? "server_shutdown" : "server_overloaded");
    }
    r->job = j;
    j->conn = c;
    j->fd = ci ? ci->connect_fd : -1;
    j->suspended = 1;
    MHD_suspend_connection(c);
    pthread_mutex_unlock(&srv.mu);
    return MHD_YES;
}

// Called again after the inference thread resumed the connection.
static enum MHD_Result continue_job(struct MHD_Connection *c, req_ctx *r) {
    srv_job *j = r->job;
    pthread_mutex_lock(&srv.mu);
    if (j->cancelled) { pthread_mutex_unlock(&srv.mu); return MHD_NO; } // client gone: close
    if (j->state == JS_FAILED || (!j->stream && j->state == JS_DONE)) {
        gn_buf body = j->out; // answer with a copy made by MHD
        int status = j->state == JS_FAILED ? j->http_status : 200;
        enum MHD_Result ret = respond(c, r, status, "application/json", body.buf ? body.buf : "", body.len);
        pthread_mutex_unlock(&srv.mu);
        return ret;
    }
    if (j->stream && j->state != JS_QUEUED) {
        pthread_mutex_unlock(&srv.mu);
        struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, stream_reader, j, NULL);
        if (!resp) return MHD_NO;
        MHD_add_response_header(resp, "Content-Type", "text/event-stream");
        MHD_add_response_header(resp, "Cache-Control", "no-cache");
        MHD_add_response_header(resp, "X-Accel-Buffering", "no");
        enum MHD_Result ret = MHD_queue_response(c, 200, resp);
        MHD_destroy_response(resp);
        r->status = 200;
        r->answered = 1;
        metrics_http(200);
        return ret;
    }
    j->suspended = 1; // nothing to say yet
    MHD_suspend_connection(c);
    pthread_mutex_unlock(&srv.mu);
    return MHD_YES;
}

// ----------------------------------------------------------------------------
// the access handler

static enum MHD_Result dispatch(struct MHD_Connection *c, req_ctx *r, const char *url) {
    gn_buf b = {0};
    enum MHD_Result ret;
    switch (r->route) {
    case R_CHAT_PAGE: return respond(c, r, 200, "text/html; charset=utf-8", PAGE_CHAT, strlen(PAGE_CHAT));
    case R_RATE_PAGE: return respond(c, r, 200, "text/html; charset=utf-8", PAGE_RATE, strlen(PAGE_RATE));
    case R_HEALTH:
        pthread_mutex_lock(&srv.mu);
        gn_buf_puts(&b, "{\"status\":\"ok\",\"model\":");
        sb_json_str(&b, srv.model_name, strlen(srv.model_name));
        gn_buf_printf(&b, ",\"slots\":%d,\"active\":%d,\"queued\":%d}", srv.o.parallel, srv.n_active, srv.q_len);
        pthread_mutex_unlock(&srv.mu);
        break;
    case R_METRICS: {
        pthread_mutex_lock(&srv.mu);
        int q = srv.q_len, a = srv.n_active;
        pthread_mutex_unlock(&srv.mu);
        metrics_text(&b, q, a);
        ret = respond(c, r, 200, "text/plain; version=0.0.4; charset=utf-8", b.buf, b.len);
        gn_buf_free(&b);
        return ret;
    }
    case R_MODELS: api_models_json(&b); break;
    case R_MODEL_ONE:
        if (api_model_json(&b, url + 11)) {
            gn_buf_free(&b);
            return respond_error(c, r, 404, "no such model", "invalid_request_error", "model_not_found");
        }
        break;
    case R_CHAT:
    case R_COMPL: return start_job(c, r);
    case R_RATE_PAIR: {
        int st = rate_pair_json(&b);
        ret = respond_json(c, r, st, &b);
        gn_buf_free(&b);
        return ret;
    }
    case R_RATE_VERDICT: {
        int st = rate_verdict(r->body.buf ? r->body.buf : "", r->body.len, &b);
        ret = respond_json(c, r, st, &b);
        gn_buf_free(&b);
        return ret;
    }
    case R_BAD_METHOD:
        return respond_error(c, r, 405, "method not allowed on this path", "invalid_request_error", "method_not_allowed");
    default: {
        char msg[300];
        snprintf(msg, sizeof msg, "no route for %.200s (see / for the playground, /v1/... for the API)", url);
        return respond_error(c, r, 404, msg, "invalid_request_error", "not_found");
    }
    }
    ret = respond_json(c, r, 200, &b);
    gn_buf_free(&b);
    return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **con_cls) {
    (void)cls;
    (void)version;
    req_ctx *r = *con_cls;
    if (!r) { // headers are in: route, key, declared size
        r = gn_calloc(1, sizeof *r);
        r->t0 = gn_time_s();
        snprintf(r->what, sizeof r->what, "%.10s %.140s", method, url);
        *con_cls = r;
        r->route = route_of(method, url);
        if (needs_key(r->route) && !key_ok(c))
            return respond_error(c, r, 401, "Incorrect API key provided (send it as 'Authorization: Bearer KEY')",
                                 "invalid_request_error", "invalid_api_key");
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl && has_body(r->route) && strtoull(cl, NULL, 10) > srv.o.max_body) goto too_big;
        return MHD_YES;
    }
    if (*upload_size) {
        // MHD cannot answer in the middle of an upload: an oversized body (chunked, so
        // its size was not declared) is read and dropped, then answered with 413; one
        // that goes on far past the limit loses its connection instead.
        r->received += *upload_size;
        if (!r->answered && !r->too_big && has_body(r->route)) { // other routes ignore a body
            if (r->body.len + *upload_size > srv.o.max_body) {
                r->too_big = 1;
                gn_buf_free(&r->body);
            } else {
                gn_buf_put(&r->body, upload, *upload_size);
            }
        }
        *upload_size = 0;
        if (r->received > 4 * srv.o.max_body) return MHD_NO;
        return MHD_YES;
    }
    if (r->answered) return MHD_YES;
    if (r->too_big) goto too_big;
    set_busy(c, 1);
    if (r->job) return continue_job(c, r);
    return dispatch(c, r, url);
too_big: {
        char msg[160];
        snprintf(msg, sizeof msg, "the request body is larger than %zu bytes (--max-body)", srv.o.max_body);
        return respond_error(c, r, 413, msg, "invalid_request_error", "request_too_large");
    }
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe) {
    (void)cls;
    req_ctx *r = *con_cls;
    set_busy(c, 0);
    if (!r) return;
    if (r->job) {
        pthread_mutex_lock(&srv.mu);
        srv_job *j = r->job;
        j->conn = NULL;
        j->fd = -1;
        j->suspended = 0;
        if (j->state != JS_DONE && j->state != JS_FAILED) j->cancelled = 1;
        job_unref_locked(j);
        pthread_cond_signal(&srv.cv);
        pthread_mutex_unlock(&srv.mu);
    }
    if (srv.o.verbose)
        fprintf(stderr, "%s -> %d%s (%.1f ms)\n", r->what, r->status,
                toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? "" : " [connection ended early]",
                (gn_time_s() - r->t0) * 1e3);
    gn_buf_free(&r->body);
    free(r);
    *con_cls = NULL;
}

static void mhd_log(void *cls, const char *fmt, va_list ap) {
    (void)cls;
    if (!srv.o.verbose) return;
    fputs("serve: libmicrohttpd: ", stderr);
    vfprintf(stderr, fmt, ap);
}

// ----------------------------------------------------------------------------
// start, serve, stop

// Frees what load() and rate_init() made (safe on partial loads).
static void unload(void) {
    rate_free();
    for (int i = 0; i < srv.n_adapters; i++) gn_adapter_free(srv.adapters[i].ad);
    free(srv.adapters);
    free(srv.default_system);
    free(srv.model_name);
    gn_model_free(srv.model);
}

// The model's name for "model": the file or folder name without its extension.
static char *default_name(const char *path) {
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/') n--;
    const char *s = path + n;
    while (s > path && s[-1] != '/') s--;
    size_t len = (size_t)(path + n - s);
    if (len > 5 && !strncmp(s + len - 5, ".gguf", 5)) len -= 5;
    return gn_strndup(s, len);
}

static int load(const srv_opts *o) {
    double t0 = gn_time_s();
    if (gn_model_load(&srv.model, o->model_path, &o->load) != GN_OK) {
        fprintf(stderr, "guanaco serve: %s\n", gn_last_error());
        return -1;
    }
    srv.tok = gn_model_tokenizer(srv.model);
    srv.model_name = o->model_name ? gn_strdup(o->model_name) : default_name(o->model_path);
    srv.adapters = gn_calloc((size_t)o->n_adapters + 1, sizeof(srv_adapter));
    for (int i = 0; i < o->n_adapters; i++) {
        const srv_adapter_spec *a = &o->adapters[i];
        if (!strcmp(a->name, srv.model_name)) {
            fprintf(stderr, "guanaco serve: adapter name '%s' is the base model's name; pick another (-a NAME=PATH)\n", a->name);
            return -1;
        }
        for (int k = 0; k < i; k++)
            if (!strcmp(a->name, o->adapters[k].name)) {
                fprintf(stderr, "guanaco serve: adapter name '%s' given twice\n", a->name);
                return -1;
            }
        if (gn_adapter_load(&srv.adapters[i].ad, srv.model, a->path, a->name) != GN_OK) {
            fprintf(stderr, "guanaco serve: adapter '%s': %s\n", a->name, gn_last_error());
            return -1;
        }
        srv.adapters[i].name = a->name;
        srv.n_adapters++;
    }
    srv.fmt = gn_chat_format_for(srv.tok, o->fmt);
    srv.default_system = srv.tok ? gn_chat_default_system(srv.tok, srv.fmt) : NULL;
    if (o->verbose)
        fprintf(stderr, "serve: loaded %s in %.2f s (%s kernels, %d threads), chat format %s, %d adapter(s)\n",
                o->model_path, gn_time_s() - t0, gn_simd_name(), gn_get_threads(), gn_chat_format_name(srv.fmt),
                srv.n_adapters);
    return 0;
}

// Fills addr for host:port. Returns 0, or -1 with a message.
static int resolve(const char *host, int port, struct sockaddr_storage *addr, int *v6) {
    memset(addr, 0, sizeof *addr);
    struct sockaddr_in *a4 = (struct sockaddr_in *)addr;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)addr;
    if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
        *v6 = 0;
        return 0;
    }
    if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        *v6 = 1;
        return 0;
    }
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_socktype = SOCK_STREAM;
    int e = getaddrinfo(host, NULL, &hints, &res);
    if (e || !res) {
        fprintf(stderr, "guanaco serve: --host '%s': %s\n", host, gai_strerror(e));
        return -1;
    }
    memcpy(addr, res->ai_addr, res->ai_addrlen);
    *v6 = res->ai_family == AF_INET6;
    if (*v6) a6->sin6_port = htons((uint16_t)port); else a4->sin_port = htons((uint16_t)port);
    freeaddrinfo(res);
    return 0;
}

static volatile sig_atomic_t g_signal;
static void on_signal(int sig) { g_signal = sig; }

int srv_main(const srv_opts *o) {
    memset(&srv, 0, sizeof srv);
    srv.o = *o;
    srv.started = (long)time(NULL);
    pthread_mutex_init(&srv.mu, NULL);
    pthread_cond_init(&srv.cv, NULL);
    // SIGINT/SIGTERM only raise a flag (any thread may take them: OpenBLAS starts its
    // threads before main); a closed socket is an error code, not SIGPIPE
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (load(o)) { unload(); return 1; }
    if (!srv.o.ctx) {
        int max_seq = gn_model_config(srv.model)->max_seq;
        srv.o.ctx = max_seq > 16 && max_seq < 2048 ? max_seq : 2048;
    }
    if (!srv.o.max_prompt_tokens) srv.o.max_prompt_tokens = srv.o.ctx - 1;
    if (srv.o.max_prompt_tokens > srv.o.ctx - 1) {
        fprintf(stderr, "guanaco serve: --max-prompt-tokens %d leaves no room for an answer in a context of %d (--ctx)\n",
                srv.o.max_prompt_tokens, srv.o.ctx);
        unload();
        return 1;
    }
    o = &srv.o;
    if (rate_init(o)) { unload(); return 1; }
    struct sockaddr_storage addr;
    int v6 = 0;
    if (resolve(o->host, o->port, &addr, &v6)) { unload(); return 1; }
    if (engine_start()) {
        fprintf(stderr, "guanaco serve: cannot start the inference thread\n");
        unload();
        return 1;
    }

    unsigned flags = MHD_USE_AUTO_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    if (v6) flags |= MHD_USE_IPv6;
    srv.daemon = MHD_start_daemon(
        flags, (uint16_t)o->port, NULL, NULL, on_request, NULL, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)o->max_connections, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)(o->read_timeout_s > 60 ? o->read_timeout_s : 60), MHD_OPTION_CONNECTION_MEMORY_LIMIT,
        (size_t)(64 * 1024), MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL, MHD_OPTION_NOTIFY_CONNECTION,
        on_connection, NULL, MHD_OPTION_END);
    if (!srv.daemon) {
        fprintf(stderr, "guanaco serve: cannot listen on %s:%d (%s). HINT: is the port taken? try --port 0\n", o->host,
                o->port, strerror(errno));
        engine_stop();
        unload();
        return 1;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(srv.daemon, MHD_DAEMON_INFO_BIND_PORT);
    int port = di ? di->port : o->port;
    printf("guanaco serve: listening on http://%s%s%s:%d (model '%s', %d slots of %d tokens%s)\n", v6 ? "[" : "",
           o->host, v6 ? "]" : "", port, srv.model_name, o->parallel, o->ctx, o->api_key ? ", API key required" : "");
    fflush(stdout);

    while (!g_signal) {
        struct timespec ts = {0, 100 * 1000000L};
        nanosleep(&ts, NULL);
        watchdog();
    }
    fprintf(stderr, "guanaco serve: stopping\n");
    MHD_quiesce_daemon(srv.daemon);   // no new connections
    engine_stop();                    // answers or fails every request, resumes their connections
    double t0 = gn_time_s();
    while (gn_time_s() - t0 < 2.0) {  // let the last bytes go out
        pthread_mutex_lock(&srv.mu);
        int busy = 0;
        for (srv_conn *k = srv.conns; k; k = k->next) busy |= k->busy;
        pthread_mutex_unlock(&srv.mu);
        if (!busy) break;
        struct timespec ts = {0, 20 * 1000000L};
        nanosleep(&ts, NULL);
    }
    MHD_stop_daemon(srv.daemon);
    unload();
    return 0;
}

#endif // GN_HAVE_MHD
