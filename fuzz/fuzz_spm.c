/*
 * fuzz_spm.c — the SentencePiece tokenizer.model reader (src/tokenizer/spm.c:
 * protobuf wire format, pieces, scores, types, trainer/normalizer specs) and,
 * when it loads, encode/decode with that vocabulary (fz_exercise_tokenizer).
 * The reader works on bytes in memory (tok_spm_load_model), no file needed.
 */
#include "fuzz_common.h"
#include "tokenizer/tok_internal.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc; (void)argv;
    fz_setup();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    gn_tokenizer *tok = NULL;
    // the reader must not read past `size`: give it an exact-size heap copy
    uint8_t *copy = gn_malloc(size ? size : 1);
    if (size) memcpy(copy, data, size);
    if (tok_spm_load_model(&tok, "tokenizer.model", copy, size) == GN_OK) {
        fz_exercise_tokenizer(tok, data + size / 2, size - size / 2);
        gn_tokenizer_free(tok);
    }
    free(copy);
    return 0;
}
