/*
 * fuzz_tokenizer_json.c — the HF tokenizer.json reader (src/tokenizer/bpe.c:
 * model vocab and merges in both spellings, added_tokens, pre_tokenizer and
 * normalizer trees, regex compilation) and, when it loads, encode/decode with
 * it (fz_exercise_tokenizer). The reader works on a buffer (tok_bpe_load_json);
 * its path is a file name in an empty private folder, so no
 * tokenizer_config.json is found beside it.
 */
#include "fuzz_common.h"
#include "tokenizer/tok_internal.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc; (void)argv;
    fz_setup();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[512];
    fz_path("tokenizer.json", path, sizeof path);
    char *copy = gn_malloc(size + 1); // NUL-terminated like gn_read_file's buffers
    if (size) memcpy(copy, data, size);
    copy[size] = 0;
    gn_tokenizer *tok = NULL;
    if (tok_bpe_load_json(&tok, path, copy, size) == GN_OK) {
        size_t half = size / 2;
        fz_exercise_tokenizer(tok, data + half, size - half);
        gn_tokenizer_free(tok);
    }
    free(copy);
    return 0;
}
