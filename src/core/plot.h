/*
 * plot.h — small PNG charts on top of cairo, for loss curves (finetune, bench)
 * and Elo ratings with intervals (eval elo).
 *
 *     double x[] = {1, 2, 3}, y[] = {2.1, 1.7, 1.5};
 *     gn_plot_series s = {"train loss", x, y, 3};
 *     if (gn_plot_lines("loss.png", "QLoRA 7B", "step", "loss", &s, 1))
 *         fprintf(stderr, "%s\n", gn_last_error());
 *
 * Files are written atomically (temp file + rename). Non-finite y values are
 * skipped (they break a line). Built with cairo when the Makefile's probe found
 * it (GN_HAVE_CAIRO); otherwise every call returns GN_ERR_UNSUPPORTED with a hint.
 */
#ifndef GN_PLOT_H
#define GN_PLOT_H

#include "guanaco.h" // gn_status

typedef struct {
    const char *name;       // legend entry (NULL: none)
    const double *x, *y;    // n points each
    int n;
} gn_plot_series;

// 1 when this build can draw (cairo found), else 0.
int gn_plot_available(void);

// Line chart: one colored line per series, shared axes, legend top right.
gn_status gn_plot_lines(const char *path, const char *title, const char *xlabel, const char *ylabel,
                        const gn_plot_series *series, int n_series);

// Horizontal point chart with error bars: row i shows labels[i], a dot at value[i]
// and a bar from lo[i] to hi[i] (lo/hi may be NULL), top to bottom in the given order.
gn_status gn_plot_intervals(const char *path, const char *title, const char *xlabel, const char *const *labels,
                            const double *value, const double *lo, const double *hi, int n);

#endif
