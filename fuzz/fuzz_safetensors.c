/*
 * fuzz_safetensors.c — the .safetensors reader (src/formats/safetensors.c):
 * header length, JSON header, dtypes, shapes, data_offsets; then every small
 * tensor goes through gn_tensor_to_f32 (src/formats/tensors.c), which reads the
 * bytes the header points at.
 * Seeds: fuzz/seeds.sh (small files the tests write, truncated copies).
 */
#include "fuzz_common.h"
#include "formats/tensors.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc; (void)argv;
    fz_setup();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[512];
    fz_write("model.safetensors", data, size, path, sizeof path);
    gn_tensor_table tt;
    gn_tensor_table_init(&tt);
    if (gn_safetensors_load(&tt, path) == GN_OK) {
        for (int i = 0; i < tt.n; i++) {
            const gn_tensor *t = &tt.t[i];
            if (t->nelem > (1 << 16)) continue;
            float *f = gn_malloc(sizeof(float) * (size_t)(t->nelem ? t->nelem : 1));
            (void)gn_tensor_to_f32(t, f);
            free(f);
            if (!gn_tensor_table_find(&tt, t->name)) abort(); // every name is findable
        }
    }
    gn_tensor_table_free(&tt);
    return 0;
}
