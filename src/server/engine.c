/*
 * engine.c — the inference thread of `guanaco serve`: continuous batching.
 *
 * Each turn of the loop:
 *   1. housekeeping under srv.mu: drop requests whose client left (a suspended
 *      connection is peeked for EOF) or whose deadline passed;
 *   2. admission: while a slot is free, take the oldest queued request, tokenize
 *      it, pick the free slot whose KV cache shares the longest prefix with the
 *      prompt (same adapter) and rewind to it; a long rest of the prompt (or any
 *      when the request would run alone) is prefilled in one pass, a short one is
 *      fed through the batched decode a token per step;
 *   3. one batched decode (gn_sessions_decode) over every active slot: each row
 *      feeds its pending token (a prompt token, or the token sampled last step)
 *      and, once the prompt is in, gets the logits of its next token;
 *   4. sampling, detokenizing and stop handling per row, outside the lock; then
 *      the new bytes (SSE events or whole bodies) are handed to the connections
 *      under srv.mu and suspended connections are resumed after it is released.
 *
 * Only this thread touches the model, the sessions and the samplers (a session's
 * KV cache and a sampler's state belong to one request at a time).
 */
#ifdef GN_HAVE_MHD
#include "server.h"

#include <errno.h>       // errno
#include <microhttpd.h>  // MHD_resume_connection
#include <stdio.h>       // snprintf
#include <stdlib.h>      // free
#include <string.h>      // memcmp
#include <sys/socket.h>  // recv, MSG_PEEK
#include <time.h>        // clock_gettime

#include "core/common.h" // gn_malloc, gn_time_s
#include "generate/stop.h" // gn_stop_held, gn_stop_find

// ----------------------------------------------------------------------------
// slots

typedef struct {
    gn_session *s;
    int32_t *cached;            // (ctx + 1) ids in the KV cache, then the prompt still to feed
    int n_cached;               // tokens in the KV cache (== gn_session_pos(s))
    int adapter;                // adapter the cache was computed with (-1 base)
    double last_used;

    srv_job *job;               // NULL: free
    gn_sampler *smp;
    int32_t pending;            // id fed at the next decode (== cached[n_cached])
    int n_prompt, n_gen, max_gen; // while n_cached < n_prompt the prompt is being fed
    const char *const *marks;   // the chat format's turn markers
    int n_marks;
    gn_detok_stream ds;
    gn_buf text;                  // generated text (cut at a stop)
    size_t emitted;             // bytes of text already sent
    double ttft;                // seconds from arrival to the first token
    int finish;                 // FIN_* once decided
    int cut;                    // the text was cut at a stop string
    gn_buf send;                  // bytes to hand to the connection this turn
} slot;

// prompt rests up to this many tokens are fed through the batched decode
#define FEED_IN_BATCH_MAX 16

static slot *slots;
static int n_slots;
static float *work;             // (V) logits row the sampler may modify
static int32_t *batch_ids;      // (n_slots)
static gn_session **batch_ss;   // (n_slots)
static int *batch_slot;         // (n_slots)
static struct MHD_Connection **to_resume;
static int n_resume, cap_resume;

// ----------------------------------------------------------------------------
// hand-off to the socket thread (srv.mu held)

// Marks j's connection for resuming once srv.mu is released.
static void wake_locked(srv_job *j) {
    if (!j->conn || !j->suspended) return;
    j->suspended = 0;
    if (n_resume == cap_resume) {
        cap_resume = cap_resume ? cap_resume * 2 : 64;
        to_resume = gn_realloc(to_resume, sizeof *to_resume * (size_t)cap_resume);
    }
    to_resume[n_resume++] = j->conn;
}

// Resumes the connections collected by wake_locked (srv.mu not held).
static void resume_all(void) {
    for (int i = 0; i < n_resume; i++) MHD_resume_connection(to_resume[i]);
    n_resume = 0;
}

// A request that fails before any output: HTTP status + OpenAI error body.
static void fail_locked(srv_job *j, int status, const char *msg, const char *type, const char *code) {
    j->out.len = 0;
    api_error_json(&j->out, msg, type, NULL, code);
    j->http_status = status;
    j->state = JS_FAILED;
    wake_locked(j);
}

// Is the client of a suspended connection gone? (EOF or reset on its socket)
static int client_gone(const srv_job *j) {
    if (j->fd < 0) return 0;
    char c;
    ssize_t r = recv(j->fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    if (r == 0) return 1;
    if (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return 1;
    return 0;
}

// ----------------------------------------------------------------------------
// output formatting (inference thread, into slot.send)

static const char *finish_name(int f) { return f == FIN_STOP ? "stop" : "length"; }

static void usage_json(gn_buf *b, int n_prompt, int n_gen) {
    gn_buf_printf(b, "\"usage\":{\"prompt_tokens\":%d,\"completion_tokens\":%d,\"total_tokens\":%d}", n_prompt, n_gen,
              n_prompt + n_gen);
}

static void chunk_head(gn_buf *b, const srv_job *j) {
    gn_buf_puts(b, "data: {\"id\":\"");
    gn_buf_puts(b, j->id);
    gn_buf_puts(b, j->kind == JOB_CHAT ? "\",\"object\":\"chat.completion.chunk\"" : "\",\"object\":\"text_completion\"");
    gn_buf_printf(b, ",\"created\":%ld,\"model\":", j->created);
    sb_json_str(b, j->model, strlen(j->model));
    gn_buf_puts(b, ",\"system_fingerprint\":\"guanaco\",\"choices\":[");
}

// One SSE event carrying text (and/or a finish reason). role: first chat chunk.
static void sse_delta(slot *sl, const char *text, size_t n, int role, int finish) {
    const srv_job *j = sl->job;
    gn_buf *b = &sl->send;
    chunk_head(b, j);
    if (j->kind == JOB_CHAT) {
        gn_buf_puts(b, "{\"index\":0,\"delta\":{");
        if (role) gn_buf_puts(b, "\"role\":\"assistant\",\"content\":\"\"");
        else if (text) { gn_buf_puts(b, "\"content\":"); sb_json_str(b, text, n); }
        gn_buf_puts(b, "},\"logprobs\":null,\"finish_reason\":");
    } else {
        gn_buf_puts(b, "{\"index\":0,\"text\":");
        sb_json_str(b, text ? text : "", text ? n : 0);
        gn_buf_puts(b, ",\"logprobs\":null,\"finish_reason\":");
    }
    if (finish) { gn_buf_puts(b, "\""); gn_buf_puts(b, finish_name(finish)); gn_buf_puts(b, "\""); }
    else gn_buf_puts(b, "null");
    gn_buf_puts(b, "}]}\n\n");
}

static void emit_text(slot *sl, const char *text, size_t n) {
    if (!n || !sl->job->stream) return;
    sse_delta(sl, text, n, 0, 0);
}

// The end of a request: last events or the whole body.
static void emit_finish(slot *sl) {
    const srv_job *j = sl->job;
    gn_buf *b = &sl->send;
    if (j->stream) {
        sse_delta(sl, NULL, 0, 0, sl->finish);
        if (j->include_usage) {
            chunk_head(b, j);
            b->len -= 1; // "choices":[ -> "choices":[]
            gn_buf_puts(b, "[],");
            usage_json(b, sl->n_prompt, sl->n_gen);
            gn_buf_puts(b, "}\n\n");
        }
        gn_buf_puts(b, "data: [DONE]\n\n");
        return;
    }
    gn_buf_puts(b, "{\"id\":\"");
    gn_buf_puts(b, j->id);
    gn_buf_puts(b, j->kind == JOB_CHAT ? "\",\"object\":\"chat.completion\"" : "\",\"object\":\"text_completion\"");
    gn_buf_printf(b, ",\"created\":%ld,\"model\":", j->created);
    sb_json_str(b, j->model, strlen(j->model));
    gn_buf_puts(b, ",\"system_fingerprint\":\"guanaco\",\"choices\":[{\"index\":0,");
    if (j->kind == JOB_CHAT) {
        gn_buf_puts(b, "\"message\":{\"role\":\"assistant\",\"content\":");
        sb_json_str(b, sl->text.buf ? sl->text.buf : "", sl->text.len);
        gn_buf_puts(b, "},");
    } else {
        gn_buf_puts(b, "\"text\":");
        sb_json_str(b, sl->text.buf ? sl->text.buf : "", sl->text.len);
        gn_buf_puts(b, ",");
    }
    gn_buf_printf(b, "\"logprobs\":null,\"finish_reason\":\"%s\"}],", finish_name(sl->finish));
    usage_json(b, sl->n_prompt, sl->n_gen);
    gn_buf_puts(b, "}");
}

// ----------------------------------------------------------------------------
// stop strings (generate/stop.h, the same rules as gn_generate: text that may
// begin a stop string is held back; a match cuts the text before it)

// Length of the stop text held back given both stop lists.
static size_t held(const slot *sl) {
    const srv_job *j = sl->job;
    const char *t = sl->text.buf ? sl->text.buf : "";
    size_t a = gn_stop_held(t, sl->text.len, (const char *const *)j->stop, j->n_stop);
    size_t b = gn_stop_held(t, sl->text.len, sl->marks, sl->n_marks);
    return a > b ? a : b;
}

static int is_eos(int32_t t) {
    const gn_config *c = gn_model_config(srv.model);
    for (int k = 0; k < c->n_eos; k++)
        if (t == c->eos_ids[k]) return 1;
    return t == gn_model_config(srv.model)->eos_id || (srv.tok && t == gn_tokenizer_eos(srv.tok));
}

// Takes the sampled token for a slot: text, stops, limits. Sets sl->finish when done.
static void take_token(slot *sl, int32_t tok) {
    srv_job *j = sl->job;
    if (is_eos(tok)) { sl->finish = FIN_STOP; return; }
    sl->n_gen++;
    if (sl->n_gen == 1) sl->ttft = gn_time_s() - j->t_arrival;
    size_t before = sl->text.len;
    char piece[256];
    if (srv.tok && gn_tokenizer_is_special(srv.tok, tok)) {
        // a control token ends the answer when it is a turn marker; others make no text
        int k = gn_tokenizer_token_bytes(srv.tok, tok, piece, (int)sizeof piece - 1);
        if (k >= 0 && k < (int)sizeof piece) {
            piece[k] = 0;
            for (int i = 0; i < sl->n_marks; i++)
                if (!strcmp(piece, sl->marks[i])) { sl->n_gen--; sl->finish = FIN_STOP; return; }
        }
    } else if (srv.tok) {
        int k = gn_detok_stream_push(srv.tok, &sl->ds, tok, piece, (int)sizeof piece);
        if (k > 0) gn_buf_put(&sl->text, piece, (size_t)k);
    }
    size_t at = 0, at2 = 0;
    const char *t = sl->text.buf ? sl->text.buf : "";
    int f1 = gn_stop_find(t, sl->text.len, before, (const char *const *)j->stop, j->n_stop, &at);
    int f2 = gn_stop_find(t, sl->text.len, before, sl->marks, sl->n_marks, &at2);
    if (f1 || f2) {
        if (!f1 || (f2 && at2 < at)) at = at2;
        if (at < sl->emitted) at = sl->emitted;
        sl->text.len = at;
        sl->text.buf[at] = 0;
        sl->finish = FIN_STOP;
        sl->cut = 1;
        return;
    }
    size_t safe = sl->text.len - held(sl);
    if (safe > sl->emitted) {
        emit_text(sl, sl->text.buf + sl->emitted, safe - sl->emitted);
        sl->emitted = safe;
    }
    if (sl->n_gen >= sl->max_gen || sl->n_cached + 1 > srv.o.ctx) sl->finish = FIN_LENGTH;
}

// Completes a slot's request: flushes text, writes the last events / the body.
static void finish_slot(slot *sl) {
    if (sl->finish != FIN_CANCEL) {
        if (!sl->cut && srv.tok) { // bytes of an unfinished character
            char piece[32];
            int k = gn_detok_stream_flush(&sl->ds, piece, (int)sizeof piece);
            if (k > 0) gn_buf_put(&sl->text, piece, (size_t)k);
        }
        if (sl->text.len > sl->emitted) {
            emit_text(sl, sl->text.buf + sl->emitted, sl->text.len - sl->emitted);
            sl->emitted = sl->text.len;
        }
        emit_finish(sl);
    }
}

// Frees the per-request parts of a slot (the cache stays for prefix reuse). srv.mu held.
static void release_slot_locked(slot *sl) {
    gn_sampler_free(sl->smp);
    sl->smp = NULL;
    if (sl->job) {
        job_unref_locked(sl->job);
        srv.n_active--;
    }
    sl->job = NULL;
    sl->text.len = 0;
    sl->send.len = 0;
    sl->last_used = gn_time_s();
}

// ----------------------------------------------------------------------------
// admission (inference thread, srv.mu not held)

static int common_prefix(const int32_t *a, int na, const int32_t *b, int nb) {
    int n = na < nb ? na : nb, i = 0;
    while (i < n && a[i] == b[i]) i++;
    return i;
}

// Tokenizes j's prompt. Returns ids (malloc'd) or NULL with *status and msg set;
// *marks gets the chat format's turn markers.
static int32_t *prompt_tokens(const srv_job *j, int *n, const char *const **marks, int *n_marks, char *msg,
                              size_t msgcap, int *status) {
    int32_t *ids = NULL;
    *n = 0;
    *marks = NULL;
    *n_marks = 0;
    if (j->prompt_ids) {
        ids = gn_malloc(sizeof(int32_t) * (size_t)j->n_prompt_ids);
        memcpy(ids, j->prompt_ids, sizeof(int32_t) * (size_t)j->n_prompt_ids);
        *n = j->n_prompt_ids;
        return ids;
    }
    if (!srv.tok) {
        snprintf(msg, msgcap, "the model has no tokenizer; send completions prompts as token ids");
        *status = 400;
        return NULL;
    }
    int bos = gn_tokenizer_add_bos(srv.tok) ? GN_ENC_BOS : 0;
    gn_status st;
    if (j->kind == JOB_CHAT) {
        // note: special-token text inside messages is read as those tokens (as `guanaco chat` does)
        char *text = gn_chat_render(srv.fmt, j->msgs, j->n_msgs, marks, n_marks);
        st = gn_tokenizer_encode(srv.tok, text, strlen(text), GN_ENC_SPECIAL | bos, &ids, n);
        free(text);
    } else {
        st = gn_tokenizer_encode(srv.tok, j->prompt, strlen(j->prompt), bos, &ids, n);
    }
    if (st != GN_OK) {
        snprintf(msg, msgcap, "could not tokenize the prompt: %s", gn_last_error());
        *status = 400;
        free(ids);
        return NULL;
    }
    if (*n == 0) {
        int b = gn_model_config(srv.model)->bos_id;
        if (b < 0) {
            free(ids);
            snprintf(msg, msgcap, "the prompt is empty and the model has no BOS token to start from");
            *status = 400;
            return NULL;
        }
        ids = gn_realloc(ids, sizeof(int32_t));
        ids[0] = b;
        *n = 1;
    }
    return ids;
}

// Picks the free slot to use for ids: the longest reusable prefix, then the least
// recently used.
static int pick_slot(const int32_t *ids, int n, int adapter) {
    int best = -1, best_len = -1;
    for (int i = 0; i < n_slots; i++) {
        slot *sl = &slots[i];
        if (sl->job) continue;
        int len = sl->adapter == adapter ? common_prefix(sl->cached, sl->n_cached, ids, n) : 0;
        if (len > best_len || (len == best_len && sl->last_used < slots[best].last_used)) { best = i; best_len = len; }
    }
    return best;
}

// Prepares slot sl for j with its prompt ids (n > 0): prefix reuse, prefill (or
// feeding through the batch when batch_feed and the rest is short). Returns 0,
// or an HTTP status with msg on a request error.
static int admit(slot *sl, srv_job *j, const int32_t *ids, int n, int batch_feed, char *msg, size_t msgcap,
                 const char **code) {
    *code = NULL;
    int limit = srv.o.max_prompt_tokens;
    if (n > limit) {
        snprintf(msg, msgcap,
                 "This model's maximum prompt length is %d tokens; the prompt has %d tokens. Shorten the "
                 "messages or start the server with a larger --ctx.",
                 limit, n);
        *code = "context_length_exceeded";
        return 400;
    }
    int V = gn_model_config(srv.model)->vocab_size;
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= V) {
            snprintf(msg, msgcap, "prompt token %d is outside the vocabulary", ids[i]);
            return 400;
        }
    int same = common_prefix(sl->cached, sl->n_cached, ids, n);
    if (sl->adapter != j->adapter) same = 0;
    if (same > n - 1) same = n - 1; // at least the last prompt token is fed again for its logits
    gn_session_rewind(sl->s, same);
    if (gn_session_pos(sl->s) != same) { gn_session_reset(sl->s); same = 0; }
    gn_session_set_adapter(sl->s, j->adapter >= 0 ? srv.adapters[j->adapter].ad : NULL);
    sl->adapter = j->adapter;
    sl->n_cached = same;
    metrics_prefill(n - same, same);
    // A short rest of the prompt rides along in the batched decode one token per
    // step (it shares the pass over the weights with the other rows); a long one,
    // or any when nothing else runs, is prefilled here in one pass.
    int rest = n - same;
    if (rest > 1 && (!batch_feed || rest > FEED_IN_BATCH_MAX)) {
        const float *lg = gn_session_forward(sl->s, ids + same, rest - 1, 0);
        if (!lg) {
            snprintf(msg, msgcap, "prefill failed: %s", gn_last_error());
            gn_session_reset(sl->s);
            sl->n_cached = 0;
            return 500;
        }
        same = n - 1;
    }
    memcpy(sl->cached, ids, sizeof(int32_t) * (size_t)n);
    sl->n_cached = same;
    sl->pending = ids[same];
    sl->n_prompt = n;
    sl->n_gen = 0;
    int room = srv.o.ctx - n; // tokens that still fit after the prompt
    int want = j->max_tokens > 0 ? j->max_tokens : srv.o.max_tokens;
    sl->max_gen = want < room ? want : room;
    if (sl->max_gen < 1) sl->max_gen = 1;
    sl->smp = gn_sampler_new(&j->smp, V);
    gn_detok_stream_init(&sl->ds);
    sl->text.len = 0;
    sl->emitted = 0;
    sl->finish = FIN_NONE;
    sl->cut = 0;
    sl->ttft = 0;
    if (j->stream && j->kind == JOB_CHAT) sse_delta(sl, NULL, 0, 1, 0);
    return 0;
}

// ----------------------------------------------------------------------------
// the loop

static void publish_locked(slot *sl) {
    srv_job *j = sl->job;
    if (sl->send.len && j->conn && !j->cancelled) gn_buf_put(&j->out, sl->send.buf, sl->send.len);
    sl->send.len = 0;
    if (j->state == JS_QUEUED) j->state = JS_RUNNING;
    if (sl->finish) {
        if (sl->finish != FIN_CANCEL) j->state = JS_DONE;
        metrics_finished(j, sl->finish, sl->n_prompt, sl->n_gen, sl->ttft);
    }
    // a non-stream body is only worth waking for once it is complete
    if (j->stream || sl->finish) wake_locked(j);
}

// Housekeeping of queued and active jobs (srv.mu held).
static void housekeeping_locked(double now, int peek) {
    // queued: drop the cancelled, fail the overdue
    srv_job **pp = &srv.q_head, *prev = NULL;
    while (*pp) {
        srv_job *j = *pp;
        if (peek && j->conn && j->suspended && client_gone(j)) {
            j->cancelled = 1;
            wake_locked(j);
        }
        int drop = j->cancelled || srv.stopping || now > j->deadline;
        if (!drop) { prev = j; pp = &j->next; continue; }
        *pp = j->next;
        if (srv.q_tail == j) srv.q_tail = prev;
        srv.q_len--;
        if (!j->cancelled) {
            if (srv.stopping) fail_locked(j, 503, "the server is shutting down", "server_error", "server_shutdown");
            else fail_locked(j, 503, "timed out waiting for a free slot (--timeout)", "server_error", "timeout");
            metrics_rejected(srv.stopping ? "shutdown" : "timeout");
        } else {
            metrics_rejected("client_gone");
        }
        job_unref_locked(j);
    }
    // active: the client left, the deadline passed, or the server stops
    for (int i = 0; i < n_slots; i++) {
        slot *sl = &slots[i];
        srv_job *j = sl->job;
        if (!j || sl->finish) continue;
        if (peek && j->conn && j->suspended && client_gone(j)) {
            j->cancelled = 1;
            wake_locked(j);
        }
        if (j->cancelled) sl->finish = FIN_CANCEL;
        else if (srv.stopping || now > j->deadline) sl->finish = FIN_LENGTH; // answer with what there is
    }
}

static void *infer_main(void *arg) {
    (void)arg;
    int V = gn_model_config(srv.model)->vocab_size;
    double last_peek = 0;
    for (;;) {
        // ---- 1. wait for work, housekeeping, admission (under the lock)
        pthread_mutex_lock(&srv.mu);
        while (!srv.stopping && srv.n_active == 0 && srv.q_len == 0) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 200 * 1000000L;
            if (ts.tv_nsec >= 1000000000L) { ts.tv_sec++; ts.tv_nsec -= 1000000000L; }
            pthread_cond_timedwait(&srv.cv, &srv.mu, &ts);
        }
        double now = gn_time_s();
        int peek = now - last_peek > 0.05;
        if (peek) last_peek = now;
        housekeeping_locked(now, peek);
        // requests finished by housekeeping
        for (int i = 0; i < n_slots; i++) {
            slot *sl = &slots[i];
            if (sl->job && sl->finish) {
                pthread_mutex_unlock(&srv.mu);
                finish_slot(sl);
                pthread_mutex_lock(&srv.mu);
                publish_locked(sl);
                release_slot_locked(sl);
            }
        }
        if (srv.stopping && srv.n_active == 0 && srv.q_len == 0) {
            pthread_mutex_unlock(&srv.mu);
            resume_all();
            break;
        }
        // take queued requests into free slots (the slot choice needs the tokens,
        // so the job is popped first and placed after tokenizing)
        srv_job *newj[256];
        int n_new = 0, free_slots = n_slots - srv.n_active;
        while (srv.q_head && n_new < free_slots && n_new < 256) {
            srv_job *j = srv.q_head;
            srv.q_head = j->next;
            if (!srv.q_head) srv.q_tail = NULL;
            srv.q_len--;
            j->next = NULL;
            srv.n_active++; // reserved
            newj[n_new++] = j;
        }
        pthread_mutex_unlock(&srv.mu);
        resume_all();

        // ---- 2. prefill new requests (no lock)
        int rows = n_new;
        for (int i = 0; i < n_slots; i++) rows += slots[i].job != NULL;
        for (int k = 0; k < n_new; k++) {
            srv_job *j = newj[k];
            char msg[512] = "";
            const char *code = NULL;
            const char *const *marks;
            int n = 0, n_marks = 0, status = 0;
            int32_t *ids = prompt_tokens(j, &n, &marks, &n_marks, msg, sizeof msg, &status);
            slot *sl = NULL;
            if (ids) {
                int si = pick_slot(ids, n, j->adapter);
                GN_ASSERT(si >= 0); // a slot was reserved when the job was popped
                sl = &slots[si];
                sl->job = j;
                sl->marks = marks;
                sl->n_marks = n_marks;
                status = admit(sl, j, ids, n, rows > 1, msg, sizeof msg, &code);
                free(ids);
            }
            pthread_mutex_lock(&srv.mu);
            if (status) {
                fail_locked(j, status, msg, status >= 500 ? "server_error" : "invalid_request_error", code);
                metrics_rejected(status >= 500 ? "error" : "bad_prompt");
                if (sl) { sl->send.len = 0; sl->finish = FIN_NONE; release_slot_locked(sl); }
                else { job_unref_locked(j); srv.n_active--; }
            } else {
                publish_locked(sl);
            }
            pthread_mutex_unlock(&srv.mu);
            resume_all();
        }

        // ---- 3. one batched decode over all active slots
        int nb = 0;
        for (int i = 0; i < n_slots; i++)
            if (slots[i].job && !slots[i].finish) {
                batch_ids[nb] = slots[i].pending;
                batch_ss[nb] = slots[i].s;
                batch_slot[nb] = i;
                nb++;
            }
        if (nb == 0) continue;
        const float *lg = gn_sessions_decode(batch_ss, batch_ids, nb);
        if (!lg) {
            char msg[512];
            snprintf(msg, sizeof msg, "decode failed: %s", gn_last_error());
            gn_log(GN_LOG_ERROR, "serve: %s", msg);
            for (int r = 0; r < nb; r++) { // streams end early; plain requests get a 500
                slot *sl = &slots[batch_slot[r]];
                gn_session_reset(sl->s);
                sl->n_cached = 0;
                sl->finish = FIN_LENGTH;
                if (sl->job->stream) finish_slot(sl);
            }
            pthread_mutex_lock(&srv.mu);
            for (int r = 0; r < nb; r++) {
                slot *sl = &slots[batch_slot[r]];
                if (sl->job->stream) publish_locked(sl);
                else fail_locked(sl->job, 500, msg, "server_error", NULL);
                release_slot_locked(sl);
            }
            metrics_step(nb);
            pthread_mutex_unlock(&srv.mu);
            resume_all();
            continue;
        }

        // ---- 4. sample, detokenize, stop (no lock); publish (lock)
        for (int r = 0; r < nb; r++) {
            slot *sl = &slots[batch_slot[r]];
            sl->n_cached++;
            if (sl->n_cached < sl->n_prompt) { // still feeding the prompt: no token to pick
                sl->pending = sl->cached[sl->n_cached];
                continue;
            }
            memcpy(work, lg + (size_t)r * (size_t)V, sizeof(float) * (size_t)V);
            int32_t tok = gn_sampler_sample(sl->smp, work, sl->cached, sl->n_cached);
            take_token(sl, tok);
            if (sl->finish) finish_slot(sl);
            else sl->cached[sl->n_cached] = sl->pending = tok;
        }
        pthread_mutex_lock(&srv.mu);
        metrics_step(nb);
        for (int r = 0; r < nb; r++) {
            slot *sl = &slots[batch_slot[r]];
            publish_locked(sl);
            if (sl->finish) release_slot_locked(sl);
        }
        pthread_mutex_unlock(&srv.mu);
        resume_all();
    }
    return NULL;
}

// ----------------------------------------------------------------------------
// start / stop / submit

int engine_start(void) {
    n_slots = srv.o.parallel;
    slots = gn_calloc((size_t)n_slots, sizeof(slot));
    for (int i = 0; i < n_slots; i++) {
        slots[i].s = gn_session_new(srv.model, srv.o.ctx);
        slots[i].cached = gn_malloc(sizeof(int32_t) * (size_t)(srv.o.ctx + 1));
        slots[i].adapter = -1;
    }
    work = gn_malloc(sizeof(float) * (size_t)gn_model_config(srv.model)->vocab_size);
    batch_ids = gn_malloc(sizeof(int32_t) * (size_t)n_slots);
    batch_ss = gn_malloc(sizeof(gn_session *) * (size_t)n_slots);
    batch_slot = gn_malloc(sizeof(int) * (size_t)n_slots);
    if (pthread_create(&srv.infer_thread, NULL, infer_main, NULL)) return -1;
    return 0;
}

void engine_stop(void) {
    pthread_mutex_lock(&srv.mu);
    srv.stopping = 1;
    pthread_cond_broadcast(&srv.cv);
    pthread_mutex_unlock(&srv.mu);
    pthread_join(srv.infer_thread, NULL);
    for (int i = 0; i < n_slots; i++) {
        gn_session_free(slots[i].s);
        free(slots[i].cached);
        gn_buf_free(&slots[i].text);
        gn_buf_free(&slots[i].send);
    }
    free(slots);
    free(work);
    free(batch_ids);
    free(batch_ss);
    free(batch_slot);
    free(to_resume);
    slots = NULL;
    n_slots = 0;
}

int engine_submit_locked(srv_job *j) {
    if (srv.stopping || srv.q_len >= srv.o.queue) return -1;
    j->refs++;
    j->state = JS_QUEUED;
    j->next = NULL;
    if (srv.q_tail) srv.q_tail->next = j; else srv.q_head = j;
    srv.q_tail = j;
    srv.q_len++;
    pthread_cond_signal(&srv.cv);
    return 0;
}

#endif // GN_HAVE_MHD
