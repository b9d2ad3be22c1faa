/*
 * data.h — training data: JSONL rows in the formats qlora.py reads, turned
 * into token ids and loss labels exactly as qlora.py's DataCollatorForCausalLM
 * builds them (docs/FACTS.md §6.4–6.5), plus the eval split and the epoch order.
 */
#ifndef GN_DATA_H
#define GN_DATA_H

#include "../core/common.h"

#define GN_IGNORE_INDEX (-100)

// gn_data_format is in guanaco.h (the CLI sets it).
// GN_DATA_MESSAGES: the conversation is rendered in the oasst1 text layout
// ("### Human: u### Assistant: a### Human: ..."; a first "system" message goes in
// front, followed by one space unless it ends in whitespace) and used as one
// oasst1 row: input "", the whole conversation is the target (trained on), as
// Guanaco was trained. Roles: system (first only), user, assistant; at least one
// assistant message.

// gn_data_format_name, gn_data_format_parse: guanaco.h

typedef struct {
    gn_data_format format;
    int source_max_len;    // qlora default 1024 (guanaco scripts: 16)
    int target_max_len;    // qlora default 256 (guanaco scripts: 512)
    int train_on_source;   // labels cover the source too
} gn_data_opts;

// qlora.py's defaults: auto format, 1024 / 256, train_on_source off.
void gn_data_opts_default(gn_data_opts *o);

typedef struct {
    int32_t *ids;      // (n) input ids: source ++ target
    int32_t *labels;   // (n) GN_IGNORE_INDEX where no loss
    int n;
    int line;          // 1-based line in the file
    int length;        // qlora's group_by_length key: len(input) + len(output) in characters
} gn_example;

typedef struct {
    gn_example *ex;
    int n;
    int skipped;       // rows reported and skipped
} gn_dataset;

// Reads a JSONL file. Bad rows (not JSON, missing field, empty text) are
// reported through gn_log as "path:line: problem" and skipped; a file with no
// usable row is an error (GN_ERR_FORMAT). bos/eos: the tokenizer's.
// Blank lines (only whitespace) are skipped silently; CRLF and a last line
// without newline are fine. Over-long rows are truncated, as qlora does.
// o NULL: gn_data_opts_default. Details of the tokenization (transformers 4.31's
// slow-tokenizer rules for the "<s>"/"</s>" strings) at the top of data.c.
gn_status gn_dataset_load(gn_dataset *ds, const char *path, const gn_tokenizer *tok, const gn_data_opts *o);
void gn_dataset_free(gn_dataset *ds);

// Moves eval_size examples (a seeded shuffle, like datasets' train_test_split)
// from ds into eval; ds keeps the rest in order. eval_size is clamped to
// [0, ds->n]. Our own generator (splitmix64): the same seed gives the same split
// here, but not the split datasets/torch would pick (not reproducible outside
// PyTorch, docs/FACTS.md §6.4). eval owns its examples (free both with gn_dataset_free).
void gn_dataset_split(gn_dataset *ds, int eval_size, uint64_t seed, gn_dataset *eval);

// Order of examples for one epoch: a seeded permutation (seed and epoch select
// it; our own generator, see above); with group_by_length, HF's
// LengthGroupedSampler scheme (get_length_grouped_indices: megabatches of
// min(n / (4*batch), 50) * batch, at least batch, each sorted by length, longest
// first and stable; then the overall longest example swapped to the front).
// order has ds->n entries.
void gn_dataset_epoch_order(const gn_dataset *ds, uint64_t seed, int epoch, int group_by_length, int batch, int *order);

// `guanaco data-dump` (hidden CLI command; data_dump.c): prints one JSON line
// per example to stdout, {"line":L,"length":C,"ids":[..],"labels":[..]}.
//   data-dump -m TOKENIZER_OR_MODEL -d FILE [--dataset-format F]
//             [--source-max-len N] [--target-max-len N] [--train-on-source]
// argv[0] is the command name. Returns the exit code (0 ok, 1 error, 2 usage).
int gn_data_dump_main(int argc, char **argv);

#endif
