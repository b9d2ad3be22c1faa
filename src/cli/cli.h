/*
 * cli.h — the guanaco command-line tool: one cmd_* function per subcommand,
 * dispatched from main.c. Each returns the process exit code (0 ok, 1 error,
 * 2 usage). Only cli/ writes to stdout.
 */
#ifndef GN_CLI_H
#define GN_CLI_H

#include "guanaco.h"

int cmd_chat(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_logits(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_merge(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);   // cmd_tokenize.c
int cmd_dump(int argc, char **argv);       // cmd_tensors.c: tensors of a file as .npy

// Prints "guanaco: <msg>" to stderr and returns 1 (for `return cli_fail(...)`).
int cli_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
// Prints the last library error as "guanaco: <gn_last_error()>" and returns 1.
int cli_fail_lib(void);

// Writes a float32 .npy file of the given shape (ndim <= 4) atomically.
int cli_write_npy_f32(const char *path, const float *data, const int64_t *shape, int ndim);
// Parses "1 2 3" / "1,2,3" into a malloc'd id array; returns -1 on a bad token
// (message says which).
int cli_parse_ids(const char *s, int32_t **ids, int *n);

#endif
