/*
 * eval_cli.h — what the `guanaco eval` subcommands (cmd_eval*.c) share: default
 * data paths and output files. Flags and progress are cli.h's.
 */
#ifndef GN_EVAL_CLI_H
#define GN_EVAL_CLI_H

#include <cjson/cJSON.h> // cJSON

#include "cli.h"
// GN_DATADIR (the installed copy, $(PREFIX)/share/guanaco) and GN_SRCDATA (the
// source tree's data/) come from the build: $(BUILD)/gn_paths.h.
#include "gn_paths.h"

// The subcommands (cmd_eval_<name>.c), dispatched by cmd_eval (cmd_eval.c).
int cmd_eval_elo(int argc, char **argv);
int cmd_eval_judge(int argc, char **argv);
int cmd_eval_mmlu(int argc, char **argv);
int cmd_eval_crows(int argc, char **argv);
int cmd_eval_ppl(int argc, char **argv);

#include <stdio.h> // FILE

// The first of <installed data>/<rel>, $GN_DATA/<rel>, <source tree>/data/<rel> that
// exists, plain or as <rel>.gz (the folders: GN_DATADIR and GN_SRCDATA from the build);
// says which on stderr. NULL when none has it.
const char *ecli_default_data(const char *rel);
// The three default data folders, as ecli_default_data searches them (for --help).
void ecli_print_data_dirs(FILE *f);
// path as given when it exists, else path".gz" when that exists (written into path,
// which holds cap bytes): 1 found, 0 neither (path unchanged).
int ecli_plain_or_gz(char *path, size_t cap);

// Writes text atomically ("-" = stdout). 0 ok, 1 error (printed).
int ecli_write_text(const char *path, const char *text);
// Writes a cJSON value (takes ownership) to path, pretty-printed; 0 ok.
int ecli_write_json(const char *path, cJSON *j);
// cJSON number, or null for NaN/inf (JSON has no NaN).
cJSON *ecli_json_num(double v);

// A growing text buffer for JSONL outputs.
void ecli_tb_json_line(gn_buf *b, cJSON *o); // appends o as one line; takes ownership

#endif
