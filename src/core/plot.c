/*
 * plot.c — PNG line and interval charts with cairo (see plot.h).
 *
 * Layout: title on top, plot area with light grid lines at "nice" ticks
 * (1, 2, 5 x 10^k), axis labels below and to the left. The image is rendered
 * into memory (cairo_surface_write_to_png_stream) and written with
 * gn_write_file_atomic, so a reader never sees half a PNG.
 */
#include "plot.h"

#include <math.h>   // floor, log10, pow, isfinite
#include <stdio.h>  // snprintf
#include <stdlib.h> // free

#include "common.h" // gn_err, gn_write_file_atomic
#include "buf.h"    // gn_buf

#ifdef GN_HAVE_CAIRO
#include <cairo.h> // cairo_*
#include <dlfcn.h> // dlsym: fontconfig's FcFini at exit

int gn_plot_available(void) { return 1; }

// cairo's toy text API loads fontconfig, which keeps its configuration for the life of
// the process; leak checkers (ASan) report it. At exit, after the last chart, we drop
// cairo's caches and, when fontconfig is loaded, its data too. FcFini is looked up at run
// time so the build needs no -lfontconfig.
static void release_fonts(void) {
    cairo_debug_reset_static_data();
    void (*fcfini)(void);
    *(void **)&fcfini = dlsym(RTLD_DEFAULT, "FcFini");
    if (fcfini) fcfini();
}

// tab10 palette
static const double PAL[10][3] = {
    {0.122, 0.467, 0.706}, {1.000, 0.498, 0.055}, {0.173, 0.627, 0.173}, {0.839, 0.153, 0.157},
    {0.580, 0.404, 0.741}, {0.549, 0.337, 0.294}, {0.890, 0.467, 0.761}, {0.498, 0.498, 0.498},
    {0.737, 0.741, 0.133}, {0.090, 0.745, 0.812}};

typedef struct { double lo, hi, step; } axis;

// Widens [lo, hi] to nice tick boundaries, about 6 ticks.
static axis nice_axis(double lo, double hi) {
    if (!(hi > lo)) { double c = lo; lo = c - (c ? fabs(c) * 0.05 : 1); hi = c + (c ? fabs(c) * 0.05 : 1); }
    double raw = (hi - lo) / 6, mag = pow(10, floor(log10(raw))), f = raw / mag;
    double step = (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * mag;
    axis a = {floor(lo / step) * step, ceil(hi / step) * step, step};
    return a;
}

static void fmt_tick(char *buf, size_t cap, double v, double step) {
    if (fabs(v) < step * 1e-9) v = 0;
    int dec = step >= 1 ? 0 : (int)ceil(-log10(step) - 1e-9);
    if (dec > 6) dec = 6;
    snprintf(buf, cap, "%.*f", dec, v);
}

static cairo_status_t on_png(void *closure, const unsigned char *data, unsigned int n) {
    gn_buf_put(closure, data, n);
    return CAIRO_STATUS_SUCCESS;
}

static gn_status finish(cairo_surface_t *sf, cairo_t *cr, const char *path) {
    cairo_destroy(cr);
    gn_buf b = {0};
    cairo_status_t cs = cairo_surface_write_to_png_stream(sf, on_png, &b);
    cairo_surface_destroy(sf);
    if (cs != CAIRO_STATUS_SUCCESS) { free(b.buf); return gn_err(GN_ERR_IO, "%s: PNG encoding failed: %s", path, cairo_status_to_string(cs)); }
    gn_status st = gn_write_file_atomic(path, b.buf, b.len);
    free(b.buf);
    return st;
}

static void text_at(cairo_t *cr, const char *s, double x, double y, double ax, double ay) {
    cairo_text_extents_t e;
    cairo_text_extents(cr, s, &e);
    cairo_move_to(cr, x - ax * e.width - e.x_bearing, y - ay * e.height - e.y_bearing);
    cairo_show_text(cr, s);
}

static cairo_t *start(cairo_surface_t **sf, int W, int H, const char *title) {
    static int registered;
    if (!registered) { atexit(release_fonts); registered = 1; }
    *sf = cairo_image_surface_create(CAIRO_FORMAT_ARGB32, W, H);
    cairo_t *cr = cairo_create(*sf);
    cairo_set_source_rgb(cr, 1, 1, 1);
    cairo_paint(cr);
    cairo_select_font_face(cr, "sans-serif", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_BOLD);
    cairo_set_font_size(cr, 16);
    cairo_set_source_rgb(cr, 0, 0, 0);
    if (title) text_at(cr, title, W / 2.0, 18, 0.5, 0);
    cairo_select_font_face(cr, "sans-serif", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
    cairo_set_font_size(cr, 12);
    return cr;
}

// Grid and tick labels of the x axis over [x0, x1] pixels, and the plot frame.
static void x_axis(cairo_t *cr, axis ax, double x0, double x1, double y0, double y1, const char *label) {
    char buf[64];
    for (double v = ax.lo; v <= ax.hi + ax.step * 1e-6; v += ax.step) {
        double px = x0 + (v - ax.lo) / (ax.hi - ax.lo) * (x1 - x0);
        cairo_set_source_rgb(cr, 0.88, 0.88, 0.88);
        cairo_move_to(cr, px, y0);
        cairo_line_to(cr, px, y1);
        cairo_stroke(cr);
        cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
        fmt_tick(buf, sizeof buf, v, ax.step);
        text_at(cr, buf, px, y1 + 6, 0.5, 0);
    }
    if (label) text_at(cr, label, (x0 + x1) / 2, y1 + 26, 0.5, 0);
}

static void frame(cairo_t *cr, double x0, double x1, double y0, double y1) {
    cairo_set_source_rgb(cr, 0.3, 0.3, 0.3);
    cairo_rectangle(cr, x0, y0, x1 - x0, y1 - y0);
    cairo_stroke(cr);
}

gn_status gn_plot_lines(const char *path, const char *title, const char *xlabel, const char *ylabel,
                        const gn_plot_series *s, int ns) {
    double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
    for (int k = 0; k < ns; k++)
        for (int i = 0; i < s[k].n; i++) {
            if (!isfinite(s[k].x[i]) || !isfinite(s[k].y[i])) continue;
            if (s[k].x[i] < xmin) xmin = s[k].x[i];
            if (s[k].x[i] > xmax) xmax = s[k].x[i];
            if (s[k].y[i] < ymin) ymin = s[k].y[i];
            if (s[k].y[i] > ymax) ymax = s[k].y[i];
        }
    if (!isfinite(xmin)) return gn_err(GN_ERR_ARG, "%s: nothing to plot (no finite points)", path);
    const int W = 900, H = 560;
    double L = 80, R = W - 24, T = 40, B = H - 56;
    axis ax = nice_axis(xmin, xmax), ay = nice_axis(ymin, ymax);
    cairo_surface_t *sf;
    cairo_t *cr = start(&sf, W, H, title);
    cairo_set_line_width(cr, 1);
    x_axis(cr, ax, L, R, T, B, xlabel);
    char buf[64];
    for (double v = ay.lo; v <= ay.hi + ay.step * 1e-6; v += ay.step) {
        double py = B - (v - ay.lo) / (ay.hi - ay.lo) * (B - T);
        cairo_set_source_rgb(cr, 0.88, 0.88, 0.88);
        cairo_move_to(cr, L, py);
        cairo_line_to(cr, R, py);
        cairo_stroke(cr);
        cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
        fmt_tick(buf, sizeof buf, v, ay.step);
        text_at(cr, buf, L - 6, py, 1, 0.5);
    }
    if (ylabel) {
        cairo_save(cr);
        cairo_translate(cr, 16, (T + B) / 2);
        cairo_rotate(cr, -M_PI / 2);
        text_at(cr, ylabel, 0, 0, 0.5, 0.5);
        cairo_restore(cr);
    }
    frame(cr, L, R, T, B);
    cairo_set_line_width(cr, 1.8);
    for (int k = 0; k < ns; k++) {
        const double *c = PAL[k % 10];
        cairo_set_source_rgb(cr, c[0], c[1], c[2]);
        int pen = 0;
        for (int i = 0; i < s[k].n; i++) {
            if (!isfinite(s[k].x[i]) || !isfinite(s[k].y[i])) { if (pen) cairo_stroke(cr); pen = 0; continue; }
            double px = L + (s[k].x[i] - ax.lo) / (ax.hi - ax.lo) * (R - L);
            double py = B - (s[k].y[i] - ay.lo) / (ay.hi - ay.lo) * (B - T);
            if (pen) cairo_line_to(cr, px, py); else cairo_move_to(cr, px, py);
            pen = 1;
            if (s[k].n == 1) { cairo_arc(cr, px, py, 3, 0, 2 * M_PI); cairo_fill(cr); pen = 0; }
        }
        if (pen) cairo_stroke(cr);
    }
    // legend
    double ly = T + 14;
    for (int k = 0; k < ns; k++) {
        if (!s[k].name) continue;
        cairo_text_extents_t e;
        cairo_text_extents(cr, s[k].name, &e);
        const double *c = PAL[k % 10];
        double lx = R - 14 - e.width;
        cairo_set_source_rgb(cr, c[0], c[1], c[2]);
        cairo_move_to(cr, lx - 30, ly);
        cairo_line_to(cr, lx - 8, ly);
        cairo_stroke(cr);
        cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
        text_at(cr, s[k].name, lx, ly, 0, 0.5);
        ly += 18;
    }
    return finish(sf, cr, path);
}

gn_status gn_plot_intervals(const char *path, const char *title, const char *xlabel, const char *const *labels,
                            const double *value, const double *lo, const double *hi, int n) {
    if (n <= 0) return gn_err(GN_ERR_ARG, "%s: nothing to plot", path);
    double vmin = INFINITY, vmax = -INFINITY;
    for (int i = 0; i < n; i++) {
        double a = lo ? lo[i] : value[i], b = hi ? hi[i] : value[i];
        double cand[3] = {value[i], a, b};
        for (int k = 0; k < 3; k++)
            if (isfinite(cand[k])) { if (cand[k] < vmin) vmin = cand[k]; if (cand[k] > vmax) vmax = cand[k]; }
    }
    if (!isfinite(vmin)) return gn_err(GN_ERR_ARG, "%s: nothing to plot (no finite values)", path);
    const int W = 900, row = 30;
    int H = 40 + row * n + 60;
    cairo_surface_t *sf;
    cairo_t *cr = start(&sf, W, H, title);
    double lw = 0;
    for (int i = 0; i < n; i++) {
        cairo_text_extents_t e;
        cairo_text_extents(cr, labels[i], &e);
        if (e.width > lw) lw = e.width;
    }
    double L = lw + 24, R = W - 24, T = 40, B = H - 56;
    axis ax = nice_axis(vmin, vmax);
    cairo_set_line_width(cr, 1);
    x_axis(cr, ax, L, R, T, B, xlabel);
    frame(cr, L, R, T, B);
    for (int i = 0; i < n; i++) {
        double py = T + row * (i + 0.5);
        cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
        text_at(cr, labels[i], L - 8, py, 1, 0.5);
        const double *c = PAL[0];
        cairo_set_source_rgb(cr, c[0], c[1], c[2]);
#define PX(v) (L + ((v) - ax.lo) / (ax.hi - ax.lo) * (R - L))
        if (lo && hi && isfinite(lo[i]) && isfinite(hi[i])) {
            cairo_set_line_width(cr, 2);
            cairo_move_to(cr, PX(lo[i]), py);
            cairo_line_to(cr, PX(hi[i]), py);
            cairo_move_to(cr, PX(lo[i]), py - 6);
            cairo_line_to(cr, PX(lo[i]), py + 6);
            cairo_move_to(cr, PX(hi[i]), py - 6);
            cairo_line_to(cr, PX(hi[i]), py + 6);
            cairo_stroke(cr);
        }
        if (isfinite(value[i])) {
            cairo_arc(cr, PX(value[i]), py, 4.5, 0, 2 * M_PI);
            cairo_fill(cr);
        }
#undef PX
    }
    return finish(sf, cr, path);
}

#else // no cairo

int gn_plot_available(void) { return 0; }

static gn_status no_cairo(const char *path) {
    return gn_err(GN_ERR_UNSUPPORTED, "%s: this build cannot draw charts. HINT: install cairo (Debian: libcairo2-dev) "
                  "and rebuild", path);
}
gn_status gn_plot_lines(const char *path, const char *title, const char *xlabel, const char *ylabel,
                        const gn_plot_series *s, int ns) {
    (void)title; (void)xlabel; (void)ylabel; (void)s; (void)ns;
    return no_cairo(path);
}
gn_status gn_plot_intervals(const char *path, const char *title, const char *xlabel, const char *const *labels,
                            const double *value, const double *lo, const double *hi, int n) {
    (void)title; (void)xlabel; (void)labels; (void)value; (void)lo; (void)hi; (void)n;
    return no_cairo(path);
}
#endif
