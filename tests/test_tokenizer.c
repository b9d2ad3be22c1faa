/*
 * test_tokenizer.c — tokenizer unit tests: known LLaMA encodings (llama2.c's
 * test vectors, see data/llama-tokenizer/PROVENANCE.md), streaming
 * decode that never splits a UTF-8 character, invalid bytes, empty input,
 * bad files, and random byte strings / random ids through encode, decode and
 * the streaming decoder (meant to run under ASan and UBSan too).
 *
 *   make && build/tests/test_tokenizer          (from the repository root)
 *   make asan && build-asan/tests/test_tokenizer
 * The data comes from the repository's data/ (override with GN_DATA=/path/to/data).
 */
#include <stdint.h>     // int32_t
#include <stdio.h>      // printf, fopen
#include <stdlib.h>     // getenv, free, rand
#include <string.h>     // memcmp, strlen
#include <sys/stat.h>   // mkdir
#include <unistd.h>     // unlink, rmdir, symlink

#include "guanaco.h"    // gn_tokenizer_*
#include "harness.h"    // CHECK, TEST_REPORT

static char g_data[1024];

static const char *data_path(char *buf, size_t cap, const char *rel) {
    snprintf(buf, cap, "%s/%s", g_data, rel);
    return buf;
}

// ----------------------------------------------------------------------------
// independent helpers (not the library's): UTF-8 validity and repair

// Length of a valid UTF-8 sequence at s, 0 if invalid/incomplete.
static int ref_valid(const unsigned char *s, size_t n) {
    if (!n) return 0;
    uint32_t c = s[0];
    int L;
    uint32_t min;
    if (c < 0x80) return 1;
    else if ((c & 0xE0) == 0xC0) { L = 2; c &= 0x1F; min = 0x80; }
    else if ((c & 0xF0) == 0xE0) { L = 3; c &= 0x0F; min = 0x800; }
    else if ((c & 0xF8) == 0xF0) { L = 4; c &= 0x07; min = 0x10000; }
    else return 0;
    if ((size_t)L > n) return 0;
    for (int i = 1; i < L; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        c = (c << 6) | (s[i] & 0x3F);
    }
    if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) return 0;
    return L;
}

static int is_valid_utf8(const char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        int L = ref_valid((const unsigned char *)s + i, n - i);
        if (!L) return 0;
        i += (size_t)L;
    }
    return 1;
}

// sentencepiece's rule: every byte outside a valid sequence becomes U+FFFD.
static size_t ref_repair_per_byte(const char *s, size_t n, char *out) {
    size_t i = 0, m = 0;
    while (i < n) {
        int L = ref_valid((const unsigned char *)s + i, n - i);
        if (L) { memcpy(out + m, s + i, (size_t)L); m += (size_t)L; i += (size_t)L; }
        else { memcpy(out + m, "\xEF\xBF\xBD", 3); m += 3; i++; }
    }
    return m;
}

// ----------------------------------------------------------------------------

static int ids_eq(const int32_t *a, int na, const int32_t *b, int nb) {
    return na == nb && (na == 0 || memcmp(a, b, (size_t)na * sizeof *a) == 0);
}

// Streams ids through the detokenizer, checking every chunk is valid UTF-8;
// returns the concatenation (malloc'd) in *out.
static int stream_all(const gn_tokenizer *t, const int32_t *ids, int n, char **out, size_t *len) {
    size_t cap = 64 + (size_t)n * 64, m = 0;
    char *buf = malloc(cap);
    gn_detok_stream s;
    gn_detok_stream_init(&s);
    int ok = 1;
    for (int i = 0; i < n; i++) {
        int w = gn_detok_stream_push(t, &s, ids[i], buf + m, (int)(cap - m));
        if (w < 0 || !is_valid_utf8(buf + m, (size_t)w)) ok = 0;
        m += (size_t)(w > 0 ? w : 0);
    }
    int w = gn_detok_stream_flush(&s, buf + m, (int)(cap - m));
    if (w < 0 || !is_valid_utf8(buf + m, (size_t)w)) ok = 0;
    m += (size_t)(w > 0 ? w : 0);
    *out = buf;
    *len = m;
    return ok;
}

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint32_t rnd(void) {
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (uint32_t)(rng >> 11);
}

// A random string mixing ASCII, spaces, multi-byte characters and stray bytes.
static size_t random_text(char *buf, size_t max) {
    static const char *const parts[] = {"a", "b", " ", "  ", "\n", "\t", "1", "23", "é", "中", "文", "🦙", "\xE2\x96\x81",
                                        "<s>", "</s>", "<unk>", "Hello", " world", "'s", "!", "\xC3", "\xE4\xB8",
                                        "\xFF", "\x80", "\xF0\x9F", "\xED\xA0\x80", "\xC0\xAF", "\x00"};
    size_t n = 0, k = rnd() % 40;
    for (size_t i = 0; i < k; i++) {
        if (rnd() % 4 == 0) {  // a raw random byte
            if (n + 1 > max) break;
            buf[n++] = (char)(rnd() & 0xFF);
            continue;
        }
        const char *p = parts[rnd() % (sizeof parts / sizeof *parts)];
        size_t L = p[0] ? strlen(p) : 1;
        if (n + L > max) break;
        memcpy(buf + n, p, L);
        n += L;
    }
    return n;
}

// ----------------------------------------------------------------------------
// SentencePiece (LLaMA tokenizer.model)

static void test_spm_known(const gn_tokenizer *t) {
    CHECK(gn_tokenizer_kind(t) == GN_TOK_SPM, "kind SPM");
    CHECK(gn_tokenizer_vocab_size(t) == 32000, "vocab 32000, got %d", gn_tokenizer_vocab_size(t));
    CHECK(gn_tokenizer_bos(t) == 1 && gn_tokenizer_eos(t) == 2, "bos/eos 1/2");
    CHECK(gn_tokenizer_add_bos(t) == 1, "adds BOS");
    CHECK(gn_tokenizer_is_special(t, 1) && gn_tokenizer_is_special(t, 2) && !gn_tokenizer_is_special(t, 15043),
          "control tokens");
    CHECK(gn_tokenizer_find(t, "<0x0A>") == 13, "<0x0A> is 13");
    CHECK(gn_tokenizer_find(t, "\xE2\x96\x81\xE2\x96\x81") == 259, "'▁▁' is 259");
    CHECK(gn_tokenizer_find(t, "no such piece") == -1, "find missing");

    // llama2.c test.c vectors (BOS included)
    static const int32_t want1[] = {1, 306, 4658, 278, 6593, 310, 2834, 338};
    static const int32_t want2[] = {1, 3439, 17632, 1925, 29892, 278, 6368, 310, 14215, 537, 5922, 393, 29871};
    const char *s1 = "I believe the meaning of life is";
    const char *s2 = "Simply put, the theory of relativity states that ";
    int32_t *ids;
    int n;
    CHECK(gn_tokenizer_encode(t, s1, strlen(s1), GN_ENC_BOS, &ids, &n) == GN_OK, "encode");
    CHECK(ids_eq(ids, n, want1, 8), "llama2.c vector 1");
    free(ids);
    CHECK(gn_tokenizer_encode(t, s2, strlen(s2), GN_ENC_BOS | GN_ENC_EOS, &ids, &n) == GN_OK, "encode");
    CHECK(n == 14 && ids_eq(ids, 13, want2, 13) && ids[13] == 2, "llama2.c vector 2 + EOS");
    free(ids);

    // empty input
    CHECK(gn_tokenizer_encode(t, "", 0, GN_ENC_BOS, &ids, &n) == GN_OK && n == 1 && ids[0] == 1, "empty -> BOS");
    free(ids);
    CHECK(gn_tokenizer_encode(t, "", 0, 0, &ids, &n) == GN_OK && n == 0, "empty -> nothing");
    free(ids);
    CHECK(gn_tokenizer_encode(t, NULL, 0, 0, &ids, &n) == GN_OK && n == 0, "NULL, 0 -> nothing");
    free(ids);
    char *text;
    size_t len;
    CHECK(gn_tokenizer_decode(t, NULL, 0, 1, &text, &len) == GN_OK && len == 0 && text[0] == 0, "decode nothing");
    free(text);

    // special tokens only with GN_ENC_SPECIAL; every chunk gets its dummy prefix
    const char *s3 = "<s>hi</s>";
    CHECK(gn_tokenizer_encode(t, s3, strlen(s3), 0, &ids, &n) == GN_OK, "encode");
    int has_ctrl = 0;
    for (int i = 0; i < n; i++) has_ctrl |= ids[i] == 1 || ids[i] == 2;
    CHECK(!has_ctrl, "\"<s>\" is plain text without GN_ENC_SPECIAL");
    free(ids);
    CHECK(gn_tokenizer_encode(t, s3, strlen(s3), GN_ENC_SPECIAL, &ids, &n) == GN_OK, "encode");
    CHECK(n == 3 && ids[0] == 1 && ids[1] == 7251 && ids[2] == 2, "<s> ▁hi </s> (got n=%d)", n);
    free(ids);

    // decode: dummy prefix removed once; control tokens dropped or shown
    static const int32_t d1[] = {1, 15043, 3186, 2};
    CHECK(gn_tokenizer_decode(t, d1, 4, 1, &text, &len) == GN_OK && strcmp(text, "Hello world") == 0,
          "decode skip_special: '%s'", text);
    free(text);
    CHECK(gn_tokenizer_decode(t, d1, 4, 0, &text, &len) == GN_OK && strcmp(text, "<s>Hello world</s>") == 0,
          "decode with specials: '%s'", text);
    free(text);
    static const int32_t d2[] = {29871, 15043};  // "▁", "▁Hello": only the first space goes
    CHECK(gn_tokenizer_decode(t, d2, 2, 1, &text, &len) == GN_OK && strcmp(text, " Hello") == 0, "' Hello'");
    free(text);
    static const int32_t d3[] = {0};
    CHECK(gn_tokenizer_decode(t, d3, 1, 1, &text, &len) == GN_OK && strcmp(text, " \xE2\x81\x87 ") == 0,
          "<unk> is ' ⁇ '");
    free(text);
    static const int32_t bad[] = {15043, 32000};
    CHECK(gn_tokenizer_decode(t, bad, 2, 1, &text, &len) == GN_ERR_ARG && text == NULL, "id out of range");
    CHECK(strstr(gn_last_error(), "32000") != NULL, "message names the id: %s", gn_last_error());

    // token_bytes
    char tb[64];
    CHECK(gn_tokenizer_token_bytes(t, 15043, tb, sizeof tb) == 6 && memcmp(tb, " Hello", 6) == 0, "' Hello' bytes");
    CHECK(gn_tokenizer_token_bytes(t, 13, tb, sizeof tb) == 1 && tb[0] == '\n', "<0x0A> is a newline byte");
    CHECK(gn_tokenizer_token_bytes(t, 15043, tb, 2) == 6 && tb[0] == ' ', "short buffer gives needed length");
    CHECK(gn_tokenizer_token_bytes(t, -5, tb, sizeof tb) == 0, "bad id -> 0 bytes");
}

static void test_spm_bytes_and_stream(const gn_tokenizer *t) {
    // U+1F999 (llama emoji) is not a piece: byte fallback <0xF0><0x9F><0xA6><0x99> = 243 162 169 156
    const char *s = "a\xF0\x9F\xA6\x99";
    int32_t *ids;
    int n;
    CHECK(gn_tokenizer_encode(t, s, strlen(s), 0, &ids, &n) == GN_OK, "encode");
    CHECK(n == 5 && ids[0] == 263 && ids[1] == 3 + 0xF0 && ids[2] == 3 + 0x9F && ids[3] == 3 + 0xA6 &&
          ids[4] == 3 + 0x99, "byte fallback for the emoji");
    // streaming one token at a time: nothing until the 4th byte
    gn_detok_stream st;
    gn_detok_stream_init(&st);
    char buf[64];
    int w0 = gn_detok_stream_push(t, &st, ids[0], buf, sizeof buf);
    CHECK(w0 == 1 && buf[0] == 'a', "'▁a' streams as 'a' (dummy prefix stripped)");
    int w1 = gn_detok_stream_push(t, &st, ids[1], buf, sizeof buf);
    int w2 = gn_detok_stream_push(t, &st, ids[2], buf, sizeof buf);
    int w3 = gn_detok_stream_push(t, &st, ids[3], buf, sizeof buf);
    CHECK(w1 == 0 && w2 == 0 && w3 == 0, "incomplete character held back (%d %d %d)", w1, w2, w3);
    int w4 = gn_detok_stream_push(t, &st, ids[4], buf, sizeof buf);
    CHECK(w4 == 4 && memcmp(buf, "\xF0\x9F\xA6\x99", 4) == 0, "whole character on the last byte");
    CHECK(gn_detok_stream_flush(&st, buf, sizeof buf) == 0, "nothing left");
    free(ids);

    // invalid bytes: sentencepiece decodes <0xE4><0x41> as U+FFFD 'A', <0xFF> as U+FFFD
    static const int32_t inv[] = {3 + 0xE4, 3 + 0x41, 3 + 0xFF};
    char *text;
    size_t len;
    CHECK(gn_tokenizer_decode(t, inv, 3, 1, &text, &len) == GN_OK && len == 7 &&
          memcmp(text, "\xEF\xBF\xBD" "A" "\xEF\xBF\xBD", 7) == 0, "invalid bytes -> U+FFFD");
    free(text);
    gn_detok_stream_init(&st);
    CHECK(gn_detok_stream_push(t, &st, inv[0], buf, sizeof buf) == 0, "lead byte held");
    int w = gn_detok_stream_push(t, &st, inv[1], buf, sizeof buf);
    CHECK(w == 4 && memcmp(buf, "\xEF\xBF\xBD" "A", 4) == 0, "broken sequence -> U+FFFD then 'A'");
    // unfinished at the end: flush gives one U+FFFD per byte (sentencepiece's rule)
    static const int32_t tail[] = {3 + 0xE4, 3 + 0xB8};
    gn_detok_stream_init(&st);
    gn_detok_stream_push(t, &st, tail[0], buf, sizeof buf);
    gn_detok_stream_push(t, &st, tail[1], buf, sizeof buf);
    w = gn_detok_stream_flush(&st, buf, sizeof buf);
    CHECK(w == 6 && memcmp(buf, "\xEF\xBF\xBD\xEF\xBF\xBD", 6) == 0, "flush of 2 held bytes -> 2x U+FFFD");
    CHECK(gn_tokenizer_decode(t, tail, 2, 1, &text, &len) == GN_OK && len == 6, "decode agrees");
    free(text);

    // invalid UTF-8 input: each bad byte is U+FFFD (piece 30140 '�' in LLaMA), as sentencepiece does
    CHECK(gn_tokenizer_encode(t, "a\xFF" "b", 3, 0, &ids, &n) == GN_OK && n == 3 && ids[0] == 263 &&
          ids[1] == 30140 && ids[2] == 29890, "invalid byte -> U+FFFD piece");
    free(ids);
}

// Random strings: encode/decode/stream agree and never crash.
static void fuzz(const gn_tokenizer *t, const char *name, int iters) {
    char text[512], rep[2048];
    int bad_range = 0, bad_rt = 0, bad_stream = 0, bad_utf8 = 0;
    int V = gn_tokenizer_vocab_size(t);
    for (int it = 0; it < iters; it++) {
        size_t n = random_text(text, sizeof text);
        int flags = (int)(rnd() % 8);
        int32_t *ids;
        int nid;
        if (gn_tokenizer_encode(t, text, n, flags, &ids, &nid) != GN_OK) { bad_range++; continue; }
        for (int i = 0; i < nid; i++)
            if (ids[i] < 0 || ids[i] >= V) bad_range++;
        char *dec;
        size_t dlen;
        int skip = !(flags & GN_ENC_SPECIAL);
        if (gn_tokenizer_decode(t, ids, nid, skip, &dec, &dlen) != GN_OK) { bad_rt++; free(ids); continue; }
        if (!is_valid_utf8(dec, dlen)) bad_utf8++;
        // round trip where the tokenizer promises it: without BOS/EOS, with
        // specials kept as text; SPM maps '▁' to ' ' and stray bytes to U+FFFD
        if (!(flags & (GN_ENC_BOS | GN_ENC_EOS))) {
            int promised = 1;
            size_t m;
            if (gn_tokenizer_kind(t) == GN_TOK_SPM) {
                // with GN_ENC_SPECIAL each chunk after a special token gets its own
                // dummy prefix (HF legacy / llama.cpp), so the text gains spaces
                promised = !(flags & GN_ENC_SPECIAL) && memmem(text, n, "\xE2\x96\x81", 3) == NULL;
                m = ref_repair_per_byte(text, n, rep);
            } else {
                m = n;  // compared after repair below
                memcpy(rep, text, n);
            }
            if (promised && gn_tokenizer_kind(t) == GN_TOK_SPM && (dlen != m || memcmp(dec, rep, m) != 0)) {
                if (bad_rt < 3) {
                    printf("  round trip differs (flags %d): in ", flags);
                    for (size_t i = 0; i < n; i++) printf("%02x", (unsigned char)text[i]);
                    printf(" out ");
                    for (size_t i = 0; i < dlen; i++) printf("%02x", (unsigned char)dec[i]);
                    printf("\n");
                }
                bad_rt++;
            }
            if (gn_tokenizer_kind(t) == GN_TOK_BYTE_BPE && is_valid_utf8(text, n) &&
                (dlen != n || memcmp(dec, text, n) != 0))
                bad_rt++;
        }
        // streaming == decode(skip_special=1)
        char *sd, *dec2;
        size_t sl, d2;
        gn_tokenizer_decode(t, ids, nid, 1, &dec2, &d2);
        if (!stream_all(t, ids, nid, &sd, &sl) || sl != d2 || memcmp(sd, dec2, sl) != 0) bad_stream++;
        free(sd);
        free(dec2);
        free(dec);
        free(ids);
    }
    CHECK(bad_range == 0, "%s fuzz: ids in range (%d bad)", name, bad_range);
    CHECK(bad_rt == 0, "%s fuzz: decode(encode(x)) == x (%d bad)", name, bad_rt);
    CHECK(bad_utf8 == 0, "%s fuzz: decode output is valid UTF-8 (%d bad)", name, bad_utf8);
    CHECK(bad_stream == 0, "%s fuzz: streaming == decode (%d bad)", name, bad_stream);

    // random id sequences: streaming never splits a character and equals decode
    int32_t ids[64];
    int bad = 0;
    for (int it = 0; it < iters; it++) {
        int k = (int)(rnd() % 64);
        for (int i = 0; i < k; i++) {
            uint32_t r = rnd();
            // bias towards byte tokens (3..258 in LLaMA) so partial characters are common
            ids[i] = (gn_tokenizer_kind(t) == GN_TOK_SPM && (r & 1)) ? (int32_t)(3 + (r >> 1) % 256)
                                                                     : (int32_t)((r >> 1) % (uint32_t)V);
        }
        char *sd, *dec;
        size_t sl, dl;
        if (gn_tokenizer_decode(t, ids, k, 1, &dec, &dl) != GN_OK) { bad++; continue; }
        if (!stream_all(t, ids, k, &sd, &sl) || sl != dl || memcmp(sd, dec, sl) != 0) bad++;
        free(sd);
        free(dec);
    }
    CHECK(bad == 0, "%s: random ids stream == decode (%d bad)", name, bad);
}

// ----------------------------------------------------------------------------
// byte-level BPE (GPT-2 vocab GGUF from llama.cpp)

static void test_bpe(const gn_tokenizer *t) {
    CHECK(gn_tokenizer_kind(t) == GN_TOK_BYTE_BPE, "kind byte-level BPE");
    CHECK(gn_tokenizer_vocab_size(t) == 50257, "GPT-2 vocab");
    CHECK(gn_tokenizer_add_bos(t) == 0, "GPT-2 adds no BOS");
    // ids from the llama.cpp reference file (ggml-vocab-gpt-2.gguf.out): " Hello world" -> 18435 995
    int32_t *ids;
    int n;
    CHECK(gn_tokenizer_encode(t, " Hello world", 12, GN_ENC_BOS, &ids, &n) == GN_OK && n == 2 && ids[0] == 18435 &&
          ids[1] == 995, "' Hello world'");
    free(ids);
    // any bytes round-trip exactly through the byte table
    char raw[256];
    for (int i = 0; i < 256; i++) raw[i] = (char)i;
    CHECK(gn_tokenizer_encode(t, raw, 256, 0, &ids, &n) == GN_OK, "encode all bytes");
    char *text;
    size_t len;
    char buf[64];
    int tot = 0;
    for (int i = 0; i < n; i++) tot += gn_tokenizer_token_bytes(t, ids[i], buf, sizeof buf);
    CHECK(tot == 256, "token_bytes of all-bytes encoding sum to 256 (%d)", tot);
    CHECK(gn_tokenizer_decode(t, ids, n, 1, &text, &len) == GN_OK && is_valid_utf8(text, len), "decode repairs");
    free(text);
    free(ids);
    // "<|endoftext|>" only with GN_ENC_SPECIAL
    const char *s = "a<|endoftext|>";
    CHECK(gn_tokenizer_encode(t, s, strlen(s), GN_ENC_SPECIAL, &ids, &n) == GN_OK && n == 2 && ids[1] == 50256,
          "special token matched");
    free(ids);
    CHECK(gn_tokenizer_encode(t, s, strlen(s), 0, &ids, &n) == GN_OK && n > 2, "special token not matched");
    free(ids);
    // streaming a multi-byte character split across tokens (U+1F999 is 3 GPT-2 tokens)
    const char *cjk = "\xF0\x9F\xA6\x99";
    CHECK(gn_tokenizer_encode(t, cjk, 4, 0, &ids, &n) == GN_OK && n >= 2, "emoji splits into several tokens");
    gn_detok_stream st;
    gn_detok_stream_init(&st);
    int w = 0, first_w = gn_detok_stream_push(t, &st, ids[0], buf, sizeof buf);
    for (int i = 1; i < n; i++) w = gn_detok_stream_push(t, &st, ids[i], buf, sizeof buf);
    CHECK(first_w == 0 && w == 4 && memcmp(buf, cjk, 4) == 0, "character emitted whole");
    free(ids);
    // byte-level decode uses one U+FFFD per maximal ill-formed subpart (from_utf8_lossy)
    CHECK(gn_tokenizer_encode(t, "\xE4\xB8" "A", 3, 0, &ids, &n) == GN_OK, "encode");
    CHECK(gn_tokenizer_decode(t, ids, n, 1, &text, &len) == GN_OK && len == 4 &&
          memcmp(text, "\xEF\xBF\xBD" "A", 4) == 0, "E4 B8 A -> one U+FFFD + A");
    free(text);
    free(ids);
}

// ----------------------------------------------------------------------------
// bad files

static void write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return;
    fwrite(data, 1, n, f);
    fclose(f);
}

static void test_bad_files(const char *model_path) {
    char dir[] = "/tmp/gn_tok_test_XXXXXX";
    if (!mkdtemp(dir)) { CHECK(0, "mkdtemp"); return; }
    char p[1200];
    gn_tokenizer *t = NULL;
    // truncated protobuf at several lengths
    FILE *f = fopen(model_path, "rb");
    static char data[600000];
    size_t n = f ? fread(data, 1, sizeof data, f) : 0;
    if (f) fclose(f);
    static const size_t cuts[] = {1, 7, 1000, 123457, 400000};
    snprintf(p, sizeof p, "%s/tokenizer.model", dir);
    for (size_t i = 0; i < sizeof cuts / sizeof *cuts && cuts[i] < n; i++) {
        write_file(p, data, cuts[i]);
        gn_status st = gn_tokenizer_load(&t, p);
        CHECK(st == GN_ERR_FORMAT && t == NULL, "truncated at %zu: GN_ERR_FORMAT (got %d)", cuts[i], (int)st);
        CHECK(strstr(gn_last_error(), p) != NULL, "message names the file: %s", gn_last_error());
    }
    // the whole file, loaded through the folder path
    write_file(p, data, n);
    CHECK(gn_tokenizer_load(&t, dir) == GN_OK && t && gn_tokenizer_vocab_size(t) == 32000, "folder -> tokenizer.model");
    gn_tokenizer_free(t);
    t = NULL;
    // random protobuf-ish bytes, bad JSON, missing fields, ids out of range
    static const struct { const char *name, *body; } cases[] = {
        {"a.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0},"},
        {"b.json", "{\"version\": \"1.0\"}"},
        {"c.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": -3}, \"merges\": []}}"},
        {"d.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": [\"a x\"]},"
                   " \"pre_tokenizer\": {\"type\": \"ByteLevel\"}}"},
        {"e.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, "
                   "\"added_tokens\": [{\"id\": \"x\", \"content\": \"<s>\"}]}"},
        {"f.model", "\x0a\x05\x0a\x01" "a"},  // one piece whose message runs past the end
        {"g.model", "\x12\x02\x18"},           // trainer_spec with a truncated varint
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, cases[i].name);
        write_file(p, cases[i].body, strlen(cases[i].body));
        gn_status st = gn_tokenizer_load(&t, p);
        CHECK(st == GN_ERR_FORMAT && t == NULL, "%s: GN_ERR_FORMAT (got %d: %s)", cases[i].name, (int)st,
              gn_last_error());
        CHECK(strstr(gn_last_error(), p) != NULL, "message names the file: %s", gn_last_error());
        unlink(p);
    }
    CHECK(gn_tokenizer_load(&t, "/nonexistent/tokenizer.model") == GN_ERR_IO && t == NULL, "missing file: GN_ERR_IO");
    snprintf(p, sizeof p, "%s/tokenizer.model", dir);
    unlink(p);
    CHECK(gn_tokenizer_load(&t, dir) == GN_ERR_IO && t == NULL, "empty folder: GN_ERR_IO");
    rmdir(dir);
}

int main(void) {
    const char *env = getenv("GN_DATA");
    snprintf(g_data, sizeof g_data, "%s", env && *env ? env : "data");
    char p[1100];
    gn_tokenizer *t = NULL;
    const char *model = data_path(p, sizeof p, "llama-tokenizer/tokenizer.model");
    gn_status st = gn_tokenizer_load(&t, model);
    CHECK(st == GN_OK, "load %s: %s", model, gn_last_error());
    if (st == GN_OK) {
        test_spm_known(t);
        test_spm_bytes_and_stream(t);
        fuzz(t, "llama spm", 3000);
        gn_tokenizer_free(t);
    }
    test_bad_files(model);

    // the vocabulary ships gzipped: gn_read_file gunzips it into a temporary .gguf
    char q[1100], gpt2[] = "/tmp/gn-test-gpt2-XXXXXX.gguf";
    char *bytes = NULL;
    size_t nbytes = 0;
    st = gn_read_file(data_path(q, sizeof q, "llama-cpp-vocab/ggml-vocab-gpt-2.gguf.gz"), &bytes, &nbytes);
    CHECK(st == GN_OK, "read %s: %s", q, gn_last_error());
    int fd = st == GN_OK ? mkstemps(gpt2, 5) : -1;
    CHECK(st != GN_OK || (fd >= 0 && write(fd, bytes, nbytes) == (ssize_t)nbytes), "write %s", gpt2);
    if (fd >= 0) close(fd);
    free(bytes);
    t = NULL;
    st = fd >= 0 ? gn_tokenizer_load(&t, gpt2) : GN_ERR_IO;
    CHECK(st == GN_OK, "load %s: %s", gpt2, gn_last_error());
    if (st == GN_OK) {
        test_bpe(t);
        fuzz(t, "gpt-2 bpe", 3000);
        gn_tokenizer_free(t);
    }
    if (fd >= 0) unlink(gpt2);
    TEST_REPORT();
}
