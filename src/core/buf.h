/*
 * buf.h — a growing byte buffer, and a line iterator over text in memory.
 *
 *     gn_buf b = {0};
 *     gn_buf_puts(&b, "loss ");
 *     gn_buf_printf(&b, "%.4f\n", loss);
 *     char *s = gn_buf_take(&b);   // caller frees; b is empty again
 *
 * After any append, buf[len] is a NUL, so buf is a C string when the bytes hold no
 * NUL. Growth goes through gn_realloc: out of memory never returns.
 */
#ifndef GN_BUF_H
#define GN_BUF_H

#include <stddef.h> // size_t

typedef struct {
    char *buf;     // NULL until the first append
    size_t len;    // bytes in use, not counting the NUL
    size_t cap;    // bytes allocated
} gn_buf;

void gn_buf_reserve(gn_buf *b, size_t extra);            // room for extra more bytes and the NUL
void gn_buf_put(gn_buf *b, const void *s, size_t n);     // s must not point into b
void gn_buf_puts(gn_buf *b, const char *s);
void gn_buf_putc(gn_buf *b, char c);
void gn_buf_printf(gn_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
char *gn_buf_take(gn_buf *b);  // the bytes ("" when none; caller frees); b is left empty
void gn_buf_free(gn_buf *b);

// Lines of text[0..len), in order (a JSONL file from gn_read_file, say): each call to
// gn_lines_next returns the next line with its '\n' (and a '\r' before it) replaced
// by NUL in place, or NULL at the end. text[0..len] must be writable (gn_read_file
// leaves a NUL at text[len]); a last line without '\n' still counts. lineno is the
// 1-based number of the line just returned. Blank lines are returned too, so each
// reader keeps its own idea of blank; gn_line_blank: only spaces, tabs and CRs.
//
//     gn_lines it = gn_lines_init(text, len);
//     size_t n;
//     for (char *line; (line = gn_lines_next(&it, &n));)
//         if (!gn_line_blank(line)) parse(line, n, it.lineno);
typedef struct {
    char *text;
    size_t len, pos;
    int lineno;
} gn_lines;

static inline gn_lines gn_lines_init(char *text, size_t len) {
    gn_lines it = {text, len, 0, 0};
    return it;
}
char *gn_lines_next(gn_lines *it, size_t *n); // n (may be NULL): the line's length
int gn_line_blank(const char *line);

#endif
