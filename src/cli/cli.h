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
// generate --prompts FILE.jsonl -o OUT.jsonl (cmd_generate_prompts.c); argv as cmd_generate's.
int cli_generate_prompts(int argc, char **argv);

// Prints "guanaco: <msg>" to stderr and returns 1 (for `return cli_fail(...)`).
int cli_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
// Prints the last library error as "guanaco: <gn_last_error()>" and returns 1.
int cli_fail_lib(void);

// ----------------------------------------------------------------------------
// flags (cli_args.c)

// argv[*i] is a flag that needs a value: returns it and advances *i, or prints
// "FLAG needs a value" and returns NULL.
const char *cli_val(int argc, char **argv, int *i);
// Parse the whole string as an integer / a number in [lo, hi] / a uint64; print
// "FLAG: 'V' (expected ...)" and return -1 when it is not one.
int cli_int(const char *flag, const char *v, long lo, long hi, int *out);
int cli_num(const char *flag, const char *v, double lo, double hi, double *out);
int cli_u64(const char *flag, const char *v, uint64_t *out);

// The model and load flags every command shares. Bits of `accept`: which of the
// optional ones a command takes (the others stay unknown options).
enum {
    CLI_CTX = 1,        // -c/--ctx N: tokens per session (8..2^24; 0 = the command's default)
    CLI_SEED = 2,       // --seed S: a uint64
    CLI_NO_ADAPTER = 4, // no -a/--adapter (the command reads -a itself)
    CLI_NO_DTYPE = 8,   // no --dtype (the command reads it itself)
};
typedef struct {
    unsigned accept;
    const char *model, *adapter;
    int threads, ctx, verbose;
    gn_dtype dtype;           // --dtype (GN_DTYPE_COUNT = auto: F32, a bf16 4-bit checkpoint's embedding and head BF16)
    int four_bit, no_double_quant, blocksize; // --4bit and its settings
    int quant_head;           // --4bit-head
    int mmap_weights;         // --mmap
    gn_dtype quant_type;      // --quant-type (NF4)
    gn_dtype compute_dtype;   // --compute-dtype; GN_DTYPE_COUNT = auto (a checkpoint's own, else bf16)
    int device;               // --device cpu|cuda (GN_DEVICE_*)
    uint64_t seed;            // --seed, when seed_given
    int seed_given;
} cli_model;
void cli_model_init(cli_model *o, unsigned accept);
// Consumes one model flag at argv[*i]: 1 consumed, 0 not a model flag, -1 error (printed).
int cli_model_flag(cli_model *o, int argc, char **argv, int *i);
extern const char CLI_MODEL_HELP[]; // -m -a -t --dtype --4bit ... -v, one per line
// The gn_model_load options the flags ask for.
gn_load_opts cli_load_opts(const cli_model *o);
// Sets the thread count (-t) and the log level (-v).
void cli_model_apply(const cli_model *o);
// cli_model_apply, then loads the model (and the -a adapter into *adapter; adapter
// NULL: -a is refused). NULL on error (printed).
gn_model *cli_model_load(const cli_model *o, gn_adapter **adapter);

// ----------------------------------------------------------------------------
// progress (cli_progress.c)

// Progress with ETA on stderr: redraws one line on a terminal, else prints a
// line every 10 s. cli_progress_end prints the final line.
typedef struct { double t0, last; int tty; const char *what; } cli_progress;
void cli_progress_start(cli_progress *p, const char *what);
void cli_progress_show(cli_progress *p, long done, long total, const char *note);
void cli_progress_end(cli_progress *p, long done, long total);
// "1h02m", "3m05s", "12.3s"
void cli_fmt_time(char *buf, size_t cap, double s);

// ----------------------------------------------------------------------------
// output

// Writes a float32 .npy file of the given shape (ndim <= 4) atomically.
int cli_write_npy_f32(const char *path, const float *data, const int64_t *shape, int ndim);
// Parses "1 2 3" / "1,2,3" into a malloc'd id array; returns -1 on a bad token
// (message says which).
int cli_parse_ids(const char *s, int32_t **ids, int *n);

#endif
