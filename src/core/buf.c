// buf.c — gn_buf and gn_lines (buf.h).
#include "buf.h"

#include <stdarg.h> // va_list
#include <stdio.h>  // vsnprintf
#include <stdlib.h> // free
#include <string.h> // memcpy, memchr, strlen

#include "common.h" // gn_realloc

// ----------------------------------------------------------------------------
// growing buffer

void gn_buf_reserve(gn_buf *b, size_t extra) {
    if (b->len + extra + 1 <= b->cap) return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra + 1) cap *= 2;
    b->buf = gn_realloc(b->buf, cap);
    b->cap = cap;
}

void gn_buf_put(gn_buf *b, const void *s, size_t n) {
    gn_buf_reserve(b, n);
    if (n) memcpy(b->buf + b->len, s, n);
    b->len += n;
    b->buf[b->len] = 0;
}

void gn_buf_puts(gn_buf *b, const char *s) { gn_buf_put(b, s, strlen(s)); }

void gn_buf_putc(gn_buf *b, char c) { gn_buf_put(b, &c, 1); }

void gn_buf_printf(gn_buf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    gn_buf_reserve(b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(b->buf + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

char *gn_buf_take(gn_buf *b) {
    if (!b->buf) gn_buf_reserve(b, 0), b->buf[0] = 0;
    char *s = b->buf;
    b->buf = NULL;
    b->len = b->cap = 0;
    return s;
}

void gn_buf_free(gn_buf *b) {
    free(b->buf);
    b->buf = NULL;
    b->len = b->cap = 0;
}

// ----------------------------------------------------------------------------
// lines

char *gn_lines_next(gn_lines *it, size_t *n) {
    if (it->pos >= it->len) return NULL;
    char *line = it->text + it->pos;
    char *nl = memchr(line, '\n', it->len - it->pos);
    size_t k = nl ? (size_t)(nl - line) : it->len - it->pos;
    it->pos += k + (nl != NULL);
    if (k > 0 && line[k - 1] == '\r') k--;
    line[k] = 0; // the '\n' or '\r', or (last line) the NUL after the text
    it->lineno++;
    if (n) *n = k;
    return line;
}

int gn_line_blank(const char *line) {
    for (; *line; line++)
        if (*line != ' ' && *line != '\t' && *line != '\r') return 0;
    return 1;
}
