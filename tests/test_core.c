/*
 * test_core.c — the small shared helpers: gn_buf, gn_lines, gn_splitmix64 and the
 * stop-string matcher (gn_stop_held / gn_stop_find).
 */
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "core/buf.h"
#include "core/common.h"
#include "generate/stop.h"

static void test_buf(void) {
    gn_buf b = {0};
    char *s = gn_buf_take(&b);
    CHECK(s && s[0] == 0, "take on an empty buffer gives \"\"");
    free(s);
    gn_buf_puts(&b, "ab");
    gn_buf_put(&b, "c\0d", 3);
    gn_buf_putc(&b, 'e');
    CHECK(b.len == 6 && !memcmp(b.buf, "abc\0de", 7), "put/puts/putc keep bytes and a NUL after them");
    for (int i = 0; i < 1000; i++) gn_buf_printf(&b, "%d,", i);
    CHECK(b.len == 6 + 3890 && b.buf[b.len] == 0 && !strcmp(b.buf + b.len - 4, "999,"), "printf appends (len %zu)", b.len);
    size_t cap = b.cap;
    gn_buf_reserve(&b, 0);
    CHECK(b.cap == cap, "reserve 0 keeps the allocation");
    s = gn_buf_take(&b);
    CHECK(b.buf == NULL && b.len == 0 && b.cap == 0 && !strncmp(s, "abc", 3), "take empties the buffer");
    free(s);
    gn_buf_printf(&b, "%s", "");
    CHECK(b.len == 0, "an empty printf appends nothing");
    gn_buf_free(&b);
    CHECK(b.buf == NULL, "free resets");
}

static void test_lines(void) {
    char text[] = "{\"a\":1}\r\n\n  \t\r\nlast";
    gn_lines it = gn_lines_init(text, strlen(text));
    size_t n;
    char *l = gn_lines_next(&it, &n);
    CHECK(l && !strcmp(l, "{\"a\":1}") && n == 7 && it.lineno == 1, "CRLF line: CR dropped");
    l = gn_lines_next(&it, &n);
    CHECK(l && n == 0 && gn_line_blank(l) && it.lineno == 2, "empty line");
    l = gn_lines_next(&it, &n);
    CHECK(l && n == 3 && gn_line_blank(l) && it.lineno == 3, "spaces and a tab are blank");
    l = gn_lines_next(&it, NULL);
    CHECK(l && !strcmp(l, "last") && !gn_line_blank(l) && it.lineno == 4, "last line without newline");
    CHECK(gn_lines_next(&it, &n) == NULL, "end");
    char t2[] = "x\n";
    it = gn_lines_init(t2, 2);
    CHECK(gn_lines_next(&it, &n) && gn_lines_next(&it, &n) == NULL && it.lineno == 1, "a final newline ends the text");
}

static void test_splitmix(void) {
    // the reference sequence of splitmix64 from seed 0 (Vigna's splitmix64.c)
    uint64_t s = 0;
    CHECK(gn_splitmix64(&s) == 0xe220a8397b1dcdafull, "splitmix64 #1");
    CHECK(gn_splitmix64(&s) == 0x6e789e6aa1b965f4ull, "splitmix64 #2");
    CHECK(gn_splitmix64(&s) == 0x06c45d188009454full, "splitmix64 #3");
}

static void test_stop(void) {
    const char *const st[] = {"###", "</s>", ""};
    CHECK(gn_stop_held("hello #", 7, st, 3) == 1, "hold a possible start");
    CHECK(gn_stop_held("hello </", 8, st, 3) == 2, "hold the longest");
    CHECK(gn_stop_held("hello", 5, st, 3) == 0, "nothing to hold");
    size_t at = 0;
    CHECK(gn_stop_find("ab</s>cd###", 11, 4, st, 3, &at) && at == 2, "earliest match, straddling the new text");
    CHECK(!gn_stop_find("abcdef", 6, 0, st, 3, &at), "no match (empty stop strings never match)");
}

// file stems as the Elo, judge and rating code name systems by them
static void test_jsonl_stem(void) {
    const char *cases[][2] = {{"ratings/a-vs-b.jsonl.gz", "a-vs-b"}, {"/x/y/gens.json", "gens"}, {"plain", "plain"},
                              {"dir.jsonl/name.txt", "name.txt"}, {".jsonl", ".jsonl"}, {"a.jsonl.gz.gz", "a.jsonl.gz.gz"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *s = gn_jsonl_stem(cases[i][0]);
        CHECK(!strcmp(s, cases[i][1]), "gn_jsonl_stem(%s) = %s, expected %s", cases[i][0], s, cases[i][1]);
        free(s);
    }
}

int main(void) {
    test_buf();
    test_jsonl_stem();
    test_lines();
    test_splitmix();
    test_stop();
    TEST_REPORT();
}
