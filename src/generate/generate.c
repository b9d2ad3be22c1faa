/*
 * generate.c — the generation loop: prefill the prompt, then sample one token
 * at a time, stream complete UTF-8 text as it appears, stop at EOS, a stop
 * string (cut before the match, never streamed), max tokens or the callback.
 *
 * Text that might be the start of a stop string is held back until it is
 * known not to be one, so a streaming client never sees part of a marker.
 */
#include "../model/llama.h"
#include "../core/buf.h" // gn_buf
#include "stop.h"         // gn_stop_held, gn_stop_find

#include <stdlib.h> // free

// ----------------------------------------------------------------------------
// stop strings (stop.h)

size_t gn_stop_held(const char *text, size_t len, const char *const *stop, int n) {
    size_t best = 0;
    for (int i = 0; i < n; i++) {
        size_t sl = strlen(stop[i]);
        for (size_t k = sl > 1 ? sl - 1 : 0; k > best; k--)
            if (k <= len && !memcmp(text + len - k, stop[i], k)) { best = k; break; }
    }
    return best;
}

int gn_stop_find(const char *text, size_t len, size_t from, const char *const *stop, int n, size_t *at) {
    int found = 0;
    for (int i = 0; i < n; i++) {
        size_t sl = strlen(stop[i]);
        if (!sl) continue;
        size_t start = from > sl ? from - sl : 0; // a match may straddle the new text
        for (size_t p = start; p + sl <= len; p++)
            if (!memcmp(text + p, stop[i], sl)) {
                if (!found || p < *at) *at = p;
                found = 1;
                break;
            }
    }
    return found;
}

// ----------------------------------------------------------------------------
// generation

static int is_eos(const gn_model *m, int32_t t) {
    if (t == m->cfg.eos_id) return 1;
    for (int k = 0; k < m->cfg.n_eos; k++)
        if (t == m->cfg.eos_ids[k]) return 1;
    return m->tok && t == gn_tokenizer_eos(m->tok);
}

gn_status gn_generate(gn_session *s, gn_sampler *smp, const int32_t *prompt, int n_prompt, const gn_gen_opts *o,
                      int32_t **out_ids, int *out_n, char **out_text, gn_gen_stats *stats) {
    const gn_model *m = s->m;
    int V = m->cfg.vocab_size;
    gn_gen_stats st0 = {0};
    st0.n_prompt = n_prompt;
    if (n_prompt <= 0) return gn_err(GN_ERR_ARG, "generate: empty prompt (give at least one token, e.g. BOS)");
    double t0 = gn_time_s();
    const float *lg = gn_session_forward(s, prompt, n_prompt, 0);
    if (!lg) return GN_ERR_ARG;
    st0.t_prompt_s = gn_time_s() - t0;
    int cap = o->max_new_tokens > 0 ? o->max_new_tokens : 0;
    int32_t *hist = gn_malloc(sizeof(int32_t) * (size_t)(n_prompt + cap + 1));
    memcpy(hist, prompt, sizeof(int32_t) * (size_t)n_prompt);
    int nh = n_prompt;
    float *work = gn_malloc(sizeof(float) * (size_t)V);
    gn_buf text = {0};
    size_t emitted = 0;
    gn_detok_stream ds;
    gn_detok_stream_init(&ds);
    char piece[256];
    gn_status status = GN_OK;
    double t1 = gn_time_s();
    st0.stopped_by = 0;
    for (int i = 0; i < cap; i++) {
        memcpy(work, lg, sizeof(float) * (size_t)V);
        int32_t tok = gn_sampler_sample(smp, work, hist, nh);
        if (!o->ignore_eos && is_eos(m, tok)) { st0.stopped_by = 1; break; }
        hist[nh++] = tok;
        st0.n_gen++;
        size_t before = text.len;
        if (m->tok) {
            if (gn_tokenizer_is_special(m->tok, tok)) {
                // a control token ends the turn when it is one of the stop markers
                int k = gn_tokenizer_token_bytes(m->tok, tok, piece, (int)sizeof piece - 1);
                if (k >= 0 && k < (int)sizeof piece) {
                    piece[k] = 0;
                    int hit = 0;
                    for (int j = 0; j < o->n_stop && !hit; j++) hit = !strcmp(piece, o->stop[j]);
                    if (hit) { st0.stopped_by = 2; break; }
                }
            } else {
                int k = gn_detok_stream_push(m->tok, &ds, tok, piece, (int)sizeof piece);
                if (k > 0) gn_buf_put(&text, piece, (size_t)k);
            }
        }
        size_t at = 0;
        if (o->n_stop && gn_stop_find(text.buf ? text.buf : "", text.len, before, o->stop, o->n_stop, &at)) {
            text.len = at;
            if (text.buf) text.buf[at] = 0;
            st0.stopped_by = 2;
            break;
        }
        size_t safe = text.len - gn_stop_held(text.buf ? text.buf : "", text.len, o->stop, o->n_stop);
        if (o->on_text && safe > emitted) {
            if (o->on_text(text.buf + emitted, safe - emitted, o->user)) { emitted = safe; st0.stopped_by = 3; break; }
            emitted = safe;
        }
        if (i + 1 == cap) break;
        if (s->pos >= s->max_seq) break; // context full
        lg = gn_session_forward(s, &tok, 1, 0);
        if (!lg) { status = GN_ERR_ARG; break; }
    }
    if (st0.stopped_by != 2 && st0.stopped_by != 3 && m->tok) {
        int k = gn_detok_stream_flush(&ds, piece, (int)sizeof piece);
        if (k > 0) gn_buf_put(&text, piece, (size_t)k);
    }
    if (o->on_text && text.len > emitted && st0.stopped_by != 3) o->on_text(text.buf + emitted, text.len - emitted, o->user);
    st0.t_gen_s = gn_time_s() - t1;
    if (out_ids) { *out_ids = gn_malloc(sizeof(int32_t) * (size_t)(st0.n_gen + 1)); memcpy(*out_ids, hist + n_prompt, sizeof(int32_t) * (size_t)st0.n_gen); }
    if (out_n) *out_n = st0.n_gen;
    if (out_text) *out_text = gn_buf_take(&text);
    free(text.buf);
    free(work);
    free(hist);
    if (stats) *stats = st0;
    return status;
}
