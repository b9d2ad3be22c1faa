/*
 * data.h — training data: JSONL rows in the formats qlora.py reads, turned
 * into token ids and loss labels exactly as qlora.py's DataCollatorForCausalLM
 * builds them (spec §6.4–6.5), plus the eval split and the epoch order.
 */
#ifndef GN_DATA_H
#define GN_DATA_H

#include "../core/common.h"

#define GN_IGNORE_INDEX (-100)

// gn_data_format is in guanaco.h (the CLI sets it).

typedef struct {
    gn_data_format format;
    int source_max_len;    // qlora default 1024 (guanaco scripts: 16)
    int target_max_len;    // qlora default 256 (guanaco scripts: 512)
    int train_on_source;   // labels cover the source too
} gn_data_opts;

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
gn_status gn_dataset_load(gn_dataset *ds, const char *path, const gn_tokenizer *tok, const gn_data_opts *o);
void gn_dataset_free(gn_dataset *ds);

// Moves eval_size examples (a seeded shuffle, like datasets' train_test_split)
// from ds into eval; ds keeps the rest in order.
void gn_dataset_split(gn_dataset *ds, int eval_size, uint64_t seed, gn_dataset *eval);

// Order of examples for one epoch: a seeded permutation; with group_by_length,
// HF's LengthGroupedSampler scheme (megabatches of 50*batch, each sorted by
// length, longest first). order has ds->n entries.
void gn_dataset_epoch_order(const gn_dataset *ds, uint64_t seed, int epoch, int group_by_length, int batch, int *order);

#endif
