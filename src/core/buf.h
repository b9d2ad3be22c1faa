/*
 * buf.h — the growing byte buffer and the line iterator (gn_buf, gn_lines: declared in
 * guanaco.h, which the CLI uses too), plus what stays inside the library: a printf
 * append and an initializer.
 *
 *     gn_buf b = {0};
 *     gn_buf_puts(&b, "loss ");
 *     gn_buf_printf(&b, "%.4f\n", loss);
 *     char *s = gn_buf_take(&b);   // caller frees; b is empty again
 */
#ifndef GN_BUF_H
#define GN_BUF_H

#include "guanaco.h" // gn_buf, gn_lines

void gn_buf_printf(gn_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static inline gn_lines gn_lines_init(char *text, size_t len) {
    gn_lines it = {text, len, 0, 0};
    return it;
}

#endif
