/*
 * eval_cli.h — what the `guanaco eval` subcommands (cmd_eval*.c) share: default
 * data paths and output files. Flags and progress are cli.h's.
 */
#ifndef GN_EVAL_CLI_H
#define GN_EVAL_CLI_H

#include "cli.h"

// The first of $GN_DATA/<rel>, ../shared/data/<rel>, shared/data/<rel> that exists,
// else NULL.
const char *ecli_default_data(const char *rel);

// Writes text atomically ("-" = stdout). 0 ok, 1 error (printed).
int ecli_write_text(const char *path, const char *text);

#endif
