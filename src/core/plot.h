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

#include "guanaco.h" // gn_plot_series, gn_plot_available, gn_plot_lines, gn_plot_intervals (public)

#endif
