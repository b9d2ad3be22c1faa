/*
 * cli_progress.c — progress with ETA on stderr for the long commands (eval,
 * generate --prompts): one redrawn line on a terminal, else a line every 10 s.
 */
#include "cli.h"

#include <stdio.h>  // fprintf, snprintf
#include <unistd.h> // isatty

void cli_fmt_time(char *buf, size_t cap, double s) {
    if (!(s >= 0) || s > 1e7) { snprintf(buf, cap, "?"); return; }
    if (s < 60) snprintf(buf, cap, "%.1fs", s);
    else if (s < 3600) snprintf(buf, cap, "%dm%02ds", (int)s / 60, (int)s % 60);
    else snprintf(buf, cap, "%dh%02dm", (int)s / 3600, ((int)s % 3600) / 60);
}

void cli_progress_start(cli_progress *p, const char *what) {
    p->t0 = gn_time_s();
    p->last = 0;
    p->tty = isatty(2);
    p->what = what;
}

static void progress_line(cli_progress *p, long done, long total, const char *note, int final) {
    double el = gn_time_s() - p->t0;
    char e[32], eta[32];
    cli_fmt_time(e, sizeof e, el);
    cli_fmt_time(eta, sizeof eta, done > 0 ? el * (double)(total - done) / (double)done : -1);
    fprintf(stderr, "%s[%s] %ld/%ld (%.1f%%) elapsed %s, ETA %s%s%s%s", p->tty ? "\r\033[K" : "", p->what, done, total,
            total ? 100.0 * done / total : 100.0, e, final ? "0s" : eta, note ? "  " : "", note ? note : "",
            p->tty && !final ? "" : "\n");
    fflush(stderr);
}

void cli_progress_show(cli_progress *p, long done, long total, const char *note) {
    double now = gn_time_s();
    if (now - p->last < (p->tty ? 0.25 : 10.0)) return;
    p->last = now;
    progress_line(p, done, total, note, 0);
}

void cli_progress_end(cli_progress *p, long done, long total) { progress_line(p, done, total, NULL, 1); }
