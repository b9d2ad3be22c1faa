/*
 * fuzz_adapter_config.c — adapter_config.json as gn_adapter_load reads it
 * (src/lora/lora.c: peft_type, r, lora_alpha, use_rslora, use_dora,
 * modules_to_save, rank_pattern / alpha_pattern regexes), with a valid
 * adapter_model.safetensors (rank 2 on q_proj and v_proj of layer 0) beside it
 * and the tiny base model of fuzz_tiny_model.h. The input is the whole
 * adapter_config.json.
 */
#include "fuzz_tiny_model.h"

static gn_model *base;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc; (void)argv;
    fz_setup();
    fz_tiny_model("base", 0);
    char dir[512], p[600];
    if (gn_model_load(&base, fz_path("base", dir, sizeof dir), NULL) != GN_OK) {
        fprintf(stderr, "tiny model: %s\n", gn_last_error());
        abort();
    }
    fz_path("adapter", dir, sizeof dir);
    mkdir(dir, 0700);
    static float v[64];
    for (int i = 0; i < 64; i++) v[i] = (float)(i % 5) / 4.0f - 0.5f;
    gn_tensor_out ts[4] = {
        {"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", GN_DTYPE_F32, 2, {2, 8}, v, 64},
        {"base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", GN_DTYPE_F32, 2, {8, 2}, v, 64},
        {"base_model.model.model.layers.0.self_attn.v_proj.lora_A.weight", GN_DTYPE_F32, 2, {2, 8}, v, 64},
        {"base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight", GN_DTYPE_F32, 2, {4, 2}, v, 32},
    };
    snprintf(p, sizeof p, "%s/adapter_model.safetensors", dir);
    if (gn_safetensors_save(p, ts, 4, NULL, 0) != GN_OK) { fprintf(stderr, "%s\n", gn_last_error()); abort(); }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char p[512], dir[512];
    fz_write("adapter/adapter_config.json", data, size, p, sizeof p);
    gn_adapter *a = NULL;
    gn_status st = gn_adapter_load(&a, base, fz_path("adapter", dir, sizeof dir), "fuzz");
    fz_why(st);
    if (st == GN_OK) gn_adapter_free(a);
    return 0;
}
