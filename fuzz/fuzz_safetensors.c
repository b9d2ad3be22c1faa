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
        fz_convert_small(&tt, 1); // and every name is findable
    }
    gn_tensor_table_free(&tt);
    return 0;
}
