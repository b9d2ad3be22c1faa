/*
 * fuzz_gguf.c — the GGUF reader (src/formats/gguf.c): header, metadata
 * key/values (strings, arrays, nested arrays), tensor infos, alignment and
 * offsets; then the typed getters, the tokenizer built from the metadata
 * (src/tokenizer/tok_gguf.c, when tokenizer.ggml.model is present) with a short
 * encode/decode, and gn_tensor_to_f32 on small tensors (the ggml block
 * dequantizers in src/formats/tensors.c).
 */
#include "fuzz_common.h"
#include "formats/gguf.h"
#include "tokenizer/tokenizer.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc; (void)argv;
    fz_setup();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[512];
    fz_write("model.gguf", data, size, path, sizeof path);
    gn_gguf *g = NULL;
    if (gn_gguf_open(&g, path) != GN_OK) return 0;
    for (int64_t i = 0; i < g->n_kv; i++) {
        const gguf_kv *kv = &g->kv[i];
        (void)gn_gguf_get_int(g, kv->key, 0);
        (void)gn_gguf_get_float(g, kv->key, 0);
        free(gn_gguf_get_str(g, kv->key));
        if (kv->type == GGUF_T_ARRAY && kv->arr_type != GGUF_T_STRING && kv->arr_type != GGUF_T_ARRAY &&
            kv->arr_n > 0) {
            (void)gn_gguf_arr_int(kv, 0);
            (void)gn_gguf_arr_float(kv, kv->arr_n - 1);
        }
    }
    for (int i = 0; i < g->tensors.n; i++) {
        const gn_tensor *t = &g->tensors.t[i];
        if (t->nelem > (1 << 16)) continue;
        float *f = gn_malloc(sizeof(float) * (size_t)(t->nelem ? t->nelem : 1));
        (void)gn_tensor_to_f32(t, f);
        free(f);
    }
    if (gn_gguf_get(g, "tokenizer.ggml.model")) {
        gn_tokenizer *tok = NULL;
        if (gn_tokenizer_from_gguf(&tok, g) == GN_OK) {
            fz_exercise_tokenizer(tok, data + size / 2, size - size / 2);
            gn_tokenizer_free(tok);
        }
    }
    gn_gguf_free(g);
    return 0;
}
