/*
 * eval_cli.h — flag parsing and progress helpers shared by `guanaco eval`
 * (cmd_eval.c) and `guanaco generate --prompts` (cmd_generate_prompts.c).
 * Flag names follow main.c's common flags (-m, -a, -t, -c, --dtype, -v) plus --4bit.
 */
#ifndef GN_EVAL_CLI_H
#define GN_EVAL_CLI_H

#include "cli.h"

#include <stdio.h> // FILE

typedef struct {
    const char *model, *adapter;
    int threads, ctx, verbose;
    gn_dtype dtype;
    int four_bit, no_double_quant, blocksize; // --4bit and its settings, as main.c spells them
    gn_dtype quant_type;                      // 0: NF4
    gn_dtype compute_dtype;                   // used when compute_set, else auto (checkpoint's, else bf16)
    int compute_set;
    int device;                               // --device cpu|cuda (GN_DEVICE_*)
} ecli_model;

// argv[*i] is a flag that needs a value: returns it and advances *i, or prints
// "FLAG needs a value" and returns NULL.
const char *ecli_val(int argc, char **argv, int *i);
// Parses an integer / a number in [lo, hi]; prints a message and returns -1 when bad.
int ecli_int(const char *flag, const char *v, long lo, long hi, int *out);
int ecli_num(const char *flag, const char *v, double lo, double hi, double *out);
// Consumes one model flag (-m -a -t --dtype -v --4bit --quant-type --no-double-quant
// --blocksize --compute-dtype) at argv[*i]:
// 1 consumed, 0 not a model flag, -1 error (message printed).
int ecli_model_flag(ecli_model *o, int argc, char **argv, int *i);
extern const char ECLI_MODEL_HELP[];
// Loads the model (and adapter into *adapter, may be NULL); NULL on error (printed).
gn_model *ecli_load(const ecli_model *o, gn_adapter **adapter);

// Progress with ETA on stderr: redraws one line on a terminal, else prints a
// line every 10 s. ecli_progress_end prints the final line.
typedef struct { double t0, last; int tty; const char *what; } ecli_progress;
void ecli_progress_start(ecli_progress *p, const char *what);
void ecli_progress_show(ecli_progress *p, long done, long total, const char *note);
void ecli_progress_end(ecli_progress *p, long done, long total);
// "1h02m", "3m05s", "12.3s"
void ecli_fmt_time(char *buf, size_t cap, double s);

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

// generate --prompts FILE.jsonl -o OUT.jsonl (cmd_generate_prompts.c); argv as cmd_generate's.
int cli_generate_prompts(int argc, char **argv);

#endif
