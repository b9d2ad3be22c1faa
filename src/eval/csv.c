/*
 * csv.c — an RFC 4180 CSV reader, enough for MMLU and CrowS-Pairs.
 *
 * Rules: fields are separated by ','; a field that starts with '"' is quoted
 * and runs to the next lone '"' ("" inside is one quote; commas, CR and LF
 * inside are data — MMLU's college_mathematics dev file and CrowS row 1293 have
 * line breaks inside quotes); a record ends at LF or CR LF outside quotes. An
 * unquoted field is taken literally (a stray '"' inside it is data, as Python's
 * csv module does). A UTF-8 byte-order mark at the start is dropped. A final
 * record without a line break counts; an empty last line does not.
 */
#include "eval.h"

#include <stdlib.h> // free

#include "../core/common.h" // gn_err, gn_malloc, gn_read_file
#include "../core/buf.h"    // gn_buf

static void row_push(gn_csv_row *r, int *cap, gn_buf *f) {
    if (r->n == *cap) { *cap = *cap ? *cap * 2 : 8; r->field = gn_realloc(r->field, sizeof(char *) * (size_t)*cap); }
    r->field[r->n++] = gn_strndup(f->buf ? f->buf : "", f->len);
    f->len = 0;
}

gn_status gn_csv_parse(gn_csv *out, const char *text, size_t len, const char *path) {
    memset(out, 0, sizeof *out);
    size_t i = 0;
    if (len >= 3 && (unsigned char)text[0] == 0xEF && (unsigned char)text[1] == 0xBB && (unsigned char)text[2] == 0xBF)
        i = 3;
    int line = 1, cap_rows = 0;
    gn_buf f = {0};
    while (i < len) {
        gn_csv_row r = {0};
        int cap_f = 0;
        r.line = line;
        for (;;) { // one field per iteration
            if (i < len && text[i] == '"') {
                int qline = line;
                i++;
                for (;;) {
                    if (i >= len) {
                        free(f.buf);
                        for (int k = 0; k < r.n; k++) free(r.field[k]);
                        free(r.field);
                        gn_csv_free(out);
                        return gn_err(GN_ERR_FORMAT, "%s:%d: quoted field never closed (a '\"' is missing)", path, qline);
                    }
                    char c = text[i++];
                    if (c == '"') {
                        if (i < len && text[i] == '"') { gn_buf_putc(&f, '"'); i++; continue; }
                        break;
                    }
                    if (c == '\n') line++;
                    gn_buf_putc(&f, c);
                }
                if (i < len && text[i] != ',' && text[i] != '\n' && !(text[i] == '\r' && i + 1 < len && text[i + 1] == '\n')
                    && !(text[i] == '\r' && i + 1 == len)) {
                    free(f.buf);
                    for (int k = 0; k < r.n; k++) free(r.field[k]);
                    free(r.field);
                    gn_csv_free(out);
                    return gn_err(GN_ERR_FORMAT, "%s:%d: text after a closing quote (expected ',' or end of line)",
                                  path, line);
                }
            } else {
                while (i < len && text[i] != ',' && text[i] != '\n' && !(text[i] == '\r' && (i + 1 == len || text[i + 1] == '\n')))
                    gn_buf_putc(&f, text[i++]);
            }
            row_push(&r, &cap_f, &f);
            if (i < len && text[i] == ',') { i++; continue; }
            // end of record
            if (i < len && text[i] == '\r') i++;
            if (i < len && text[i] == '\n') i++;
            line++;
            break;
        }
        if (out->n == cap_rows) {
            cap_rows = cap_rows ? cap_rows * 2 : 64;
            out->row = gn_realloc(out->row, sizeof(gn_csv_row) * (size_t)cap_rows);
        }
        out->row[out->n++] = r;
    }
    free(f.buf);
    return GN_OK;
}

gn_status gn_csv_read(gn_csv *out, const char *path) {
    char *text;
    size_t len;
    memset(out, 0, sizeof *out);
    gn_status st = gn_read_file(path, &text, &len);
    if (st) return st;
    st = gn_csv_parse(out, text, len, path);
    free(text);
    return st;
}

void gn_csv_free(gn_csv *c) {
    for (int i = 0; i < c->n; i++) {
        for (int k = 0; k < c->row[i].n; k++) free(c->row[i].field[k]);
        free(c->row[i].field);
    }
    free(c->row);
    c->row = NULL;
    c->n = 0;
}

int gn_csv_column(const gn_csv *c, const char *name) {
    if (c->n == 0) return -1;
    for (int k = 0; k < c->row[0].n; k++)
        if (!strcmp(c->row[0].field[k], name)) return k;
    return -1;
}
