/*
 * spm.c — SentencePiece BPE (LLaMA 1/2): a small protobuf reader for
 * tokenizer.model (ModelProto) and the encoder.
 *
 * Encoding follows sentencepiece's bpe::Model::Encode (facts from the
 * sentencepiece docs/behaviour, checked against the Python package):
 *   1. normalize: each byte that does not start a valid UTF-8 character becomes
 *      U+FFFD (one per byte, as sentencepiece's normalizer does); with
 *      remove_extra_whitespaces, leading/trailing spaces go and runs of spaces
 *      become one; ' ' becomes '▁' (U+2581); a '▁' is prepended (appended when
 *      treat_whitespace_as_suffix) unless add_dummy_prefix is off. Only the
 *      "identity" normalizer is supported (no precompiled NFKC charsmap).
 *   2. split into characters; USER_DEFINED pieces are matched greedily (longest
 *      first) and kept whole.
 *   3. repeatedly merge the adjacent pair whose concatenation is a NORMAL /
 *      USER_DEFINED / UNUSED piece with the highest score, leftmost on ties
 *      (a binary heap; stale entries are skipped when popped).
 *   4. a final symbol that is an UNUSED piece is split back into the two
 *      symbols it was made of; a symbol that is no piece becomes its UTF-8
 *      bytes as <0xXX> pieces (byte_fallback) or <unk>.
 *
 * Protobuf fields read (sentencepiece_model.proto): ModelProto.pieces = 1
 * {piece = 1, score = 2 (float), type = 3}, trainer_spec = 2 {model_type = 3,
 * treat_whitespace_as_suffix = 24, byte_fallback = 35, unk_id = 40, bos_id = 41,
 * eos_id = 42, pad_id = 43}, normalizer_spec = 3 {name = 1,
 * precompiled_charsmap = 2, add_dummy_prefix = 3, remove_extra_whitespaces = 4,
 * escape_whitespaces = 5}. Everything else is skipped by wire type.
 */
#include "tok_internal.h"

#include <stdio.h>   // snprintf
#include <stdlib.h>  // free
#include <string.h>  // memcpy

// ----------------------------------------------------------------------------
// protobuf wire format

typedef struct {
    const uint8_t *p;   // message bytes
    size_t n;           // message length
    size_t pos;         // read position inside the message
    size_t base;        // file offset of p[0], for messages
    const char *path;
    const char *what;   // message name for messages ("ModelProto", "pieces[12]")
} pb;

static gn_status pb_fail(const pb *r, size_t at, const char *problem, const char *expected) {
    return gn_err(GN_ERR_FORMAT, "%s: offset %zu: %s: %s, expected %s", r->path, r->base + at,
                  r->what, problem, expected);
}

static gn_status pb_varint(pb *r, uint64_t *v) {
    uint64_t x = 0;
    size_t at = r->pos;
    for (int shift = 0; shift < 70; shift += 7) {
        if (r->pos >= r->n) return pb_fail(r, at, "truncated varint", "more bytes (file cut short?)");
        uint8_t b = r->p[r->pos++];
        if (shift == 63 && (b & 0x7e)) return pb_fail(r, at, "varint overflows 64 bits", "a valid varint");
        x |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) { *v = x; return GN_OK; }
    }
    return pb_fail(r, at, "varint longer than 10 bytes", "a valid varint");
}

// One field: number, wire type and its payload (varint value / bytes span).
typedef struct {
    uint32_t num;
    int wire;
    uint64_t v;            // varint, fixed32 or fixed64 value
    const uint8_t *data;   // length-delimited payload
    size_t len;
    size_t at;             // offset of the tag inside the message
} pb_field;

static gn_status pb_next(pb *r, pb_field *f) {
    f->at = r->pos;
    uint64_t tag;
    gn_status st = pb_varint(r, &tag);
    if (st != GN_OK) return st;
    f->num = (uint32_t)(tag >> 3);
    f->wire = (int)(tag & 7);
    if (tag >> 3 == 0 || tag >> 3 > 0x1fffffff) return pb_fail(r, f->at, "field number 0 or too large", "a protobuf field tag");
    switch (f->wire) {
    case 0: return pb_varint(r, &f->v);
    case 1:
        if (r->n - r->pos < 8) return pb_fail(r, f->at, "truncated fixed64 field", "8 more bytes");
        f->v = 0;
        for (int i = 7; i >= 0; i--) f->v = (f->v << 8) | r->p[r->pos + (size_t)i];
        r->pos += 8;
        return GN_OK;
    case 5:
        if (r->n - r->pos < 4) return pb_fail(r, f->at, "truncated fixed32 field", "4 more bytes");
        f->v = (uint64_t)r->p[r->pos] | (uint64_t)r->p[r->pos + 1] << 8 |
               (uint64_t)r->p[r->pos + 2] << 16 | (uint64_t)r->p[r->pos + 3] << 24;
        r->pos += 4;
        return GN_OK;
    case 2: {
        uint64_t len;
        st = pb_varint(r, &len);
        if (st != GN_OK) return st;
        if (len > r->n - r->pos) {
            char msg[96];
            snprintf(msg, sizeof msg, "field %u length %llu runs past the end (%zu bytes left)",
                     f->num, (unsigned long long)len, r->n - r->pos);
            return pb_fail(r, f->at, msg, "a complete length-delimited field (file truncated?)");
        }
        f->data = r->p + r->pos;
        f->len = (size_t)len;
        r->pos += (size_t)len;
        return GN_OK;
    }
    default: {
        char msg[64];
        snprintf(msg, sizeof msg, "field %u has wire type %d", f->num, f->wire);
        return pb_fail(r, f->at, msg, "0, 1, 2 or 5 (not a SentencePiece model?)");
    }
    }
}

static pb pb_sub(const pb *parent, const pb_field *f, const char *what) {
    pb r = {f->data, f->len, 0, parent->base + (size_t)(f->data - parent->p), parent->path, what};
    return r;
}

static gn_status want_wire(const pb *r, const pb_field *f, int wire, const char *name) {
    if (f->wire == wire) return GN_OK;
    char msg[96], exp[64];
    snprintf(msg, sizeof msg, "field %u (%s) has wire type %d", f->num, name, f->wire);
    snprintf(exp, sizeof exp, "wire type %d", wire);
    return pb_fail(r, f->at, msg, exp);
}

// ----------------------------------------------------------------------------
// ModelProto

typedef struct {
    int model_type, ws_suffix, byte_fallback;
    int64_t unk, bos, eos, pad;
    int add_dummy_prefix, remove_extra_ws, escape_ws;
    size_t charsmap_len;
    char name[32];
} spm_spec;

static gn_status parse_trainer(pb *r, spm_spec *s) {
    pb_field f;
    while (r->pos < r->n) {
        gn_status st = pb_next(r, &f);
        if (st != GN_OK) return st;
        int64_t *dst = NULL;
        switch (f.num) {
        case 3: if ((st = want_wire(r, &f, 0, "model_type")) != GN_OK) return st;
                s->model_type = (int)f.v; break;
        case 24: if ((st = want_wire(r, &f, 0, "treat_whitespace_as_suffix")) != GN_OK) return st;
                 s->ws_suffix = f.v != 0; break;
        case 35: if ((st = want_wire(r, &f, 0, "byte_fallback")) != GN_OK) return st;
                 s->byte_fallback = f.v != 0; break;
        case 40: dst = &s->unk; break;
        case 41: dst = &s->bos; break;
        case 42: dst = &s->eos; break;
        case 43: dst = &s->pad; break;
        default: break;
        }
        if (dst) {
            if ((st = want_wire(r, &f, 0, "special id")) != GN_OK) return st;
            *dst = (int32_t)(uint32_t)f.v;  // int32 fields: negative values are sign-extended varints
        }
    }
    return GN_OK;
}

static gn_status parse_normalizer(pb *r, spm_spec *s) {
    pb_field f;
    while (r->pos < r->n) {
        gn_status st = pb_next(r, &f);
        if (st != GN_OK) return st;
        switch (f.num) {
        case 1: if ((st = want_wire(r, &f, 2, "name")) != GN_OK) return st;
                memcpy(s->name, f.data, f.len < sizeof s->name - 1 ? f.len : sizeof s->name - 1);
                s->name[f.len < sizeof s->name - 1 ? f.len : sizeof s->name - 1] = 0;
                break;
        case 2: if ((st = want_wire(r, &f, 2, "precompiled_charsmap")) != GN_OK) return st;
                s->charsmap_len = f.len; break;
        case 3: if ((st = want_wire(r, &f, 0, "add_dummy_prefix")) != GN_OK) return st;
                s->add_dummy_prefix = f.v != 0; break;
        case 4: if ((st = want_wire(r, &f, 0, "remove_extra_whitespaces")) != GN_OK) return st;
                s->remove_extra_ws = f.v != 0; break;
        case 5: if ((st = want_wire(r, &f, 0, "escape_whitespaces")) != GN_OK) return st;
                s->escape_ws = f.v != 0; break;
        default: break;
        }
    }
    return GN_OK;
}

static gn_status parse_piece(pb *r, gn_tokenizer *t, int32_t id) {
    pb_field f;
    int have_piece = 0;
    int type = TOK_NORMAL;
    float score = 0;
    while (r->pos < r->n) {
        gn_status st = pb_next(r, &f);
        if (st != GN_OK) return st;
        if (f.num == 1) {
            if ((st = want_wire(r, &f, 2, "piece")) != GN_OK) return st;
            tok_set_piece(t, id, (const char *)f.data, f.len);
            have_piece = 1;
        } else if (f.num == 2) {
            if ((st = want_wire(r, &f, 5, "score")) != GN_OK) return st;
            uint32_t u = (uint32_t)f.v;
            memcpy(&score, &u, 4);
        } else if (f.num == 3) {
            if ((st = want_wire(r, &f, 0, "type")) != GN_OK) return st;
            if (f.v < 1 || f.v > 6) {
                char msg[64];
                snprintf(msg, sizeof msg, "type %llu", (unsigned long long)f.v);
                return pb_fail(r, f.at, msg, "1..6 (NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE)");
            }
            type = (int)f.v;
        }
    }
    if (!have_piece) return pb_fail(r, 0, "missing field 1 (piece)", "every piece to have its text");
    t->type[id] = (uint8_t)type;
    t->score[id] = score;
    return GN_OK;
}

static gn_status check_id(const char *path, const char *name, int64_t v, int n_vocab, int *dst) {
    if (v < 0) { *dst = -1; return GN_OK; }
    if (v >= n_vocab)
        return gn_err(GN_ERR_FORMAT, "%s: trainer_spec.%s: id %lld is out of range, expected -1..%d",
                      path, name, (long long)v, n_vocab - 1);
    *dst = (int)v;
    return GN_OK;
}

gn_status tok_spm_load_model(gn_tokenizer **out, const char *path, const uint8_t *data, size_t size) {
    *out = NULL;
    pb top = {data, size, 0, 0, path, "ModelProto"};
    spm_spec s = {.model_type = 1, .unk = 0, .bos = 1, .eos = 2, .pad = -1,
                  .add_dummy_prefix = 1, .remove_extra_ws = 1, .escape_ws = 1};
    strcpy(s.name, "identity");
    // pass 1: count pieces, parse the specs
    int n = 0, have_trainer = 0, have_normalizer = 0;
    pb_field f;
    gn_status st;
    while (top.pos < top.n) {
        if ((st = pb_next(&top, &f)) != GN_OK) return st;
        if (f.num == 1) {
            if ((st = want_wire(&top, &f, 2, "pieces")) != GN_OK) return st;
            if (n == (1 << 24)) return pb_fail(&top, f.at, "more than 16M pieces", "a SentencePiece model");
            n++;
        } else if (f.num == 2) {
            if ((st = want_wire(&top, &f, 2, "trainer_spec")) != GN_OK) return st;
            pb sub = pb_sub(&top, &f, "trainer_spec");
            if ((st = parse_trainer(&sub, &s)) != GN_OK) return st;
            have_trainer = 1;
        } else if (f.num == 3) {
            if ((st = want_wire(&top, &f, 2, "normalizer_spec")) != GN_OK) return st;
            pb sub = pb_sub(&top, &f, "normalizer_spec");
            if ((st = parse_normalizer(&sub, &s)) != GN_OK) return st;
            have_normalizer = 1;
        }
    }
    if (n == 0)
        return gn_err(GN_ERR_FORMAT, "%s: offset 0: ModelProto has no pieces (field 1), expected a "
                      "SentencePiece tokenizer.model", path);
    if (!have_trainer || !have_normalizer)
        return gn_err(GN_ERR_FORMAT, "%s: offset %zu: ModelProto ends without %s, expected a complete "
                      "SentencePiece tokenizer.model (file truncated?)", path, size,
                      !have_trainer ? "trainer_spec (field 2)" : "normalizer_spec (field 3)");
    if (s.model_type != 2) {
        const char *names[] = {"?", "UNIGRAM", "BPE", "WORD", "CHAR"};
        return gn_err(GN_ERR_UNSUPPORTED, "%s: trainer_spec.model_type is %s, expected BPE (2)", path,
                      s.model_type >= 0 && s.model_type <= 4 ? names[s.model_type] : "?");
    }
    if (s.charsmap_len > 0)
        return gn_err(GN_ERR_UNSUPPORTED, "%s: normalizer_spec '%s' uses a precompiled charsmap (NFKC), "
                      "expected the 'identity' normalizer", path, s.name);
    gn_tokenizer *t = tok_new(n);
    t->kind = GN_TOK_SPM;
    // pass 2: the pieces
    top.pos = 0;
    int32_t id = 0;
    while (top.pos < top.n) {
        if ((st = pb_next(&top, &f)) != GN_OK) goto fail;
        if (f.num != 1) continue;
        char what[40];
        snprintf(what, sizeof what, "pieces[%d]", (int)id);
        pb sub = pb_sub(&top, &f, what);
        if ((st = parse_piece(&sub, t, id)) != GN_OK) goto fail;
        id++;
    }
    if ((st = check_id(path, "unk_id", s.unk, n, &t->unk)) != GN_OK) goto fail;
    if ((st = check_id(path, "bos_id", s.bos, n, &t->bos)) != GN_OK) goto fail;
    if ((st = check_id(path, "eos_id", s.eos, n, &t->eos)) != GN_OK) goto fail;
    if ((st = check_id(path, "pad_id", s.pad, n, &t->pad)) != GN_OK) goto fail;
    t->add_bos = 1;
    t->add_eos = 0;
    t->byte_fallback = s.byte_fallback;
    t->ws_suffix = s.ws_suffix;
    t->add_dummy_prefix = s.add_dummy_prefix;
    t->remove_extra_ws = s.remove_extra_ws;
    t->escape_ws = s.escape_ws;
    if ((st = tok_finish(t)) != GN_OK) goto fail;
    *out = t;
    return GN_OK;
fail:
    gn_tokenizer_free(t);
    return st;
}

// ----------------------------------------------------------------------------
// encoder

static const char SPACE_MARK[] = "\xE2\x96\x81";  // U+2581 '▁'

typedef struct {
    int32_t start, len;   // bytes of the normalized text
    int32_t prev, next;   // linked list of live symbols (-1 ends)
    int32_t node;         // merge-tree node (for resegmenting UNUSED pieces)
    int32_t frozen;       // user-defined piece: never merged
} sym;

typedef struct { int32_t start, len, left, right; } tree_node;  // left/right -1 for leaves

typedef struct {
    float score;
    int32_t left, right;
    int32_t size;
} cand;

// true when a should be popped before b: higher score, then leftmost
static int cand_before(const cand *a, const cand *b) {
    if (a->score != b->score) return a->score > b->score;
    return a->left < b->left;
}

typedef struct { cand *v; size_t n, cap; } heap;

static void heap_push(heap *h, cand c) {
    if (h->n == h->cap) {
        h->cap = h->cap ? h->cap * 2 : 256;
        h->v = gn_realloc(h->v, h->cap * sizeof *h->v);
    }
    size_t i = h->n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!cand_before(&c, &h->v[p])) break;
        h->v[i] = h->v[p];
        i = p;
    }
    h->v[i] = c;
}

static cand heap_pop(heap *h) {
    cand top = h->v[0], last = h->v[--h->n];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const cand *best = &last;
        if (l < h->n && cand_before(&h->v[l], best)) { m = l; best = &h->v[l]; }
        if (r < h->n && cand_before(&h->v[r], best)) { m = r; }
        if (m == i) break;
        h->v[i] = h->v[m];
        i = m;
    }
    if (h->n) h->v[i] = last;
    return top;
}

// Builds the normalized text (see file comment).
static char *normalize(const gn_tokenizer *t, const char *text, size_t len, size_t *out_len) {
    size_t cap = len * 3 + 8, n = 0;
    char *o = gn_malloc(cap);
    const unsigned char *u = (const unsigned char *)text;
    size_t i = 0, end = len;
    if (t->remove_extra_ws) {
        while (i < end && u[i] == ' ') i++;
        while (end > i && u[end - 1] == ' ') end--;
    }
    int prefix = t->add_dummy_prefix && i < end;
    if (prefix && !t->ws_suffix) {
        if (t->escape_ws) { memcpy(o, SPACE_MARK, 3); n = 3; }
        else o[n++] = ' ';
    }
    int prev_space = 0;
    while (i < end) {
        if (u[i] == ' ') {
            if (!(t->remove_extra_ws && prev_space)) {
                if (t->escape_ws) { memcpy(o + n, SPACE_MARK, 3); n += 3; }
                else o[n++] = ' ';
            }
            prev_space = 1;
            i++;
            continue;
        }
        prev_space = 0;
        int v = tok_utf8_valid_len(u + i, end - i);
        if (v == 0) {  // invalid byte -> U+FFFD, one byte consumed
            o[n++] = (char)0xEF; o[n++] = (char)0xBF; o[n++] = (char)0xBD;
            i++;
        } else {
            memcpy(o + n, u + i, (size_t)v);
            n += (size_t)v;
            i += (size_t)v;
        }
    }
    if (prefix && t->ws_suffix) {
        if (t->escape_ws) { memcpy(o + n, SPACE_MARK, 3); n += 3; }
        else o[n++] = ' ';
    }
    *out_len = n;
    return o;
}

// Can a merge produce this piece? (sentencepiece: normal, user-defined, unused)
static int mergeable(const gn_tokenizer *t, int32_t id) {
    uint8_t ty = t->type[id];
    return ty == TOK_NORMAL || ty == TOK_USER_DEFINED || ty == TOK_UNUSED;
}

static void try_pair(const gn_tokenizer *t, const char *norm, const sym *s, int32_t l, int32_t r, heap *h) {
    if (l < 0 || r < 0 || s[l].frozen || s[r].frozen) return;
    int32_t size = s[l].len + s[r].len;
    if (size > t->max_piece_len) return;
    int32_t id = tok_lookup(t, norm + s[l].start, (size_t)size);
    if (id < 0 || !mergeable(t, id)) return;
    cand c = {t->score[id], l, r, size};
    heap_push(h, c);
}

static void emit_bytes(const gn_tokenizer *t, const char *s, size_t n, tok_ids *out) {
    for (size_t i = 0; i < n; i++) {
        int32_t b = t->byte_tok[(unsigned char)s[i]];
        if (b >= 0) tok_ids_push(out, b);
        else if (t->unk >= 0) tok_ids_push(out, t->unk);
    }
}

static void resegment(const gn_tokenizer *t, const char *norm, const tree_node *nodes, int32_t k, tok_ids *out) {
    const tree_node *nd = &nodes[k];
    int32_t id = tok_lookup(t, norm + nd->start, (size_t)nd->len);
    if (id >= 0 && t->type[id] == TOK_UNUSED && nd->left >= 0) {
        resegment(t, norm, nodes, nd->left, out);
        resegment(t, norm, nodes, nd->right, out);
        return;
    }
    if (id >= 0) { tok_ids_push(out, id); return; }
    if (t->byte_fallback) emit_bytes(t, norm + nd->start, (size_t)nd->len, out);
    else if (t->unk >= 0) tok_ids_push(out, t->unk);
}

// Merges the symbols of norm[a..b) and appends the ids. s/nodes/h are
// scratch of at least (b-a) symbols / 2(b-a) nodes.
static void encode_segment(const gn_tokenizer *t, const char *norm, size_t a, size_t b, sym *s,
                           tree_node *nodes, heap *h, tok_ids *out) {
    int32_t ns = 0, nnodes = 0;
    const unsigned char *u = (const unsigned char *)norm;
    for (size_t i = a; i < b;) {
        int32_t L = 0, frozen = 0;
        if (t->has_user_defined) {
            for (int k = t->spec_start[u[i]]; k < t->spec_start[u[i] + 1]; k++) {
                int32_t id = t->spec_ids[k];
                if (t->type[id] == TOK_USER_DEFINED && t->len[id] <= b - i &&
                    memcmp(norm + i, tok_piece(t, id), t->len[id]) == 0) {
                    L = (int32_t)t->len[id];
                    frozen = 1;
                    break;
                }
            }
        }
        if (!L) {
            L = tok_utf8_valid_len(u + i, b - i);
            if (L == 0) L = 1;  // cannot happen: normalize() made the text valid
        }
        s[ns] = (sym){(int32_t)i, L, ns - 1, -1, nnodes, frozen};
        if (ns > 0) s[ns - 1].next = ns;
        nodes[nnodes++] = (tree_node){(int32_t)i, L, -1, -1};
        ns++;
        i += (size_t)L;
    }
    if (ns == 0) return;
    h->n = 0;
    for (int32_t i = 0; i + 1 < ns; i++) try_pair(t, norm, s, i, i + 1, h);
    while (h->n) {
        cand c = heap_pop(h);
        sym *l = &s[c.left], *r = &s[c.right];
        if (l->len == 0 || r->len == 0 || l->next != c.right || l->len + r->len != c.size) continue;
        nodes[nnodes] = (tree_node){l->start, c.size, l->node, r->node};
        l->node = nnodes++;
        l->len = c.size;
        r->len = 0;
        l->next = r->next;
        if (r->next >= 0) s[r->next].prev = c.left;
        try_pair(t, norm, s, l->prev, c.left, h);
        try_pair(t, norm, s, c.left, l->next, h);
    }
    for (int32_t i = 0; i >= 0; i = s[i].next) resegment(t, norm, nodes, s[i].node, out);
}

// Does any mergeable piece hold a '▁' after a character that is not '▁'? If
// not, no merge can cross the start of a '▁' that follows another character,
// and the text can be encoded in independent segments split there: same
// result (merges never interact across the cut), far smaller heaps.
int tok_spm_ws_splittable(const gn_tokenizer *t) {
    for (int32_t id = 0; id < t->n_vocab; id++) {
        if (!mergeable(t, id)) continue;
        const char *p = tok_piece(t, id);
        size_t n = t->len[id], i = 0;
        while (i + 3 <= n && memcmp(p + i, SPACE_MARK, 3) == 0) i += 3;  // leading run of '▁'
        for (; i + 3 <= n; i++)
            if (memcmp(p + i, SPACE_MARK, 3) == 0) return 0;
    }
    return 1;
}

void tok_spm_encode_chunk(const gn_tokenizer *t, const char *text, size_t len, tok_ids *out) {
    size_t nn;
    char *norm = normalize(t, text, len, &nn);
    if (nn == 0) { free(norm); return; }
    // segments: cut before each '▁' that follows a character other than '▁'
    size_t maxseg = nn;
    if (t->spm_ws_split) {
        maxseg = 0;
        size_t a = 0, i = 0;
        int prev_ws = 0;
        while (i < nn) {
            int ws = i + 3 <= nn && memcmp(norm + i, SPACE_MARK, 3) == 0;
            if (ws && i > a && !prev_ws) { if (i - a > maxseg) maxseg = i - a; a = i; }
            prev_ws = ws;
            int L = tok_utf8_valid_len((const unsigned char *)norm + i, nn - i);
            i += (size_t)(L ? L : 1);
        }
        if (nn - a > maxseg) maxseg = nn - a;
    }
    sym *s = gn_malloc(maxseg * sizeof *s);
    tree_node *nodes = gn_malloc(2 * maxseg * sizeof *nodes);
    heap h = {0};
    if (!t->spm_ws_split) {
        encode_segment(t, norm, 0, nn, s, nodes, &h, out);
    } else {
        size_t a = 0, i = 0;
        int prev_ws = 0;
        while (i < nn) {
            int ws = i + 3 <= nn && memcmp(norm + i, SPACE_MARK, 3) == 0;
            if (ws && i > a && !prev_ws) { encode_segment(t, norm, a, i, s, nodes, &h, out); a = i; }
            prev_ws = ws;
            int L = tok_utf8_valid_len((const unsigned char *)norm + i, nn - i);
            i += (size_t)(L ? L : 1);
        }
        encode_segment(t, norm, a, nn, s, nodes, &h, out);
    }
    free(h.v);
    free(nodes);
    free(s);
    free(norm);
}
