/*
 * fuzz_config_json.c — the model folder's JSON files, read by gn_model_load
 * (src/model/llama.c: config.json fields, rope_scaling / rope_parameters,
 * quantization_config; the *.index.json weight_map) with valid tiny weights
 * beside them (fuzz_tiny_model.h), so a config that parses goes on to bind
 * the weights and build the model.
 * First input byte: even -> the rest is config.json of a single-file model;
 *                   odd  -> the rest is model.safetensors.index.json of a
 *                           two-shard model (config.json valid).
 */
#include "fuzz_tiny_model.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc; (void)argv;
    fz_setup();
    fz_tiny_model("single", 0);
    fz_tiny_model("sharded", 1);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    char p[512], dir[512];
    if (data[0] & 1) {
        fz_write("sharded/model.safetensors.index.json", data + 1, size - 1, p, sizeof p);
        fz_path("sharded", dir, sizeof dir);
    } else {
        fz_write("single/config.json", data + 1, size - 1, p, sizeof p);
        fz_path("single", dir, sizeof dir);
    }
    gn_model *m = NULL;
    gn_status st = gn_model_load(&m, dir, NULL);
    fz_why(st);
    if (st == GN_OK) {
        free(gn_model_describe(m));
        gn_model_free(m);
    }
    return 0;
}
