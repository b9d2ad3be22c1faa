/*
 * fuzz_tiny_model.h — a valid tiny LLaMA (hidden 8, 1 layer, 2 heads / 1 kv
 * head, vocab 16) written into the harness's private folder, for the targets
 * that fuzz one file of a model folder (config.json, the shard index,
 * adapter_config.json) while the other files stay valid.
 */
#ifndef GN_FUZZ_TINY_MODEL_H
#define GN_FUZZ_TINY_MODEL_H

#include "fuzz_common.h"
#include "formats/tensors.h"

#define FZ_TINY_CONFIG                                                                                    \
    "{\"model_type\": \"llama\", \"hidden_size\": 8, \"intermediate_size\": 16, \"num_hidden_layers\": 1, " \
    "\"num_attention_heads\": 2, \"num_key_value_heads\": 1, \"vocab_size\": 16, "                          \
    "\"max_position_embeddings\": 32, \"rms_norm_eps\": 1e-5, \"rope_theta\": 10000.0, "                   \
    "\"bos_token_id\": 1, \"eos_token_id\": 2, \"tie_word_embeddings\": true}"

// Writes fz_dir/<sub>/{config.json, weights}. sharded: two shards plus
// model.safetensors.index.json (index content given, NULL for a valid one).
static __attribute__((unused)) void fz_tiny_model(const char *sub, int sharded) {
    static float buf[16 * 16];
    for (int i = 0; i < 16 * 16; i++) buf[i] = (float)((i * 7) % 11 - 5) / 8.0f;
    static const struct { const char *name; int64_t r, c; int shard; } w[] = {
        {"model.embed_tokens.weight", 16, 8, 0},
        {"model.layers.0.input_layernorm.weight", 8, 0, 0},
        {"model.layers.0.post_attention_layernorm.weight", 8, 0, 0},
        {"model.layers.0.self_attn.q_proj.weight", 8, 8, 0},
        {"model.layers.0.self_attn.k_proj.weight", 4, 8, 0},
        {"model.layers.0.self_attn.v_proj.weight", 4, 8, 0},
        {"model.layers.0.self_attn.o_proj.weight", 8, 8, 1},
        {"model.layers.0.mlp.gate_proj.weight", 16, 8, 1},
        {"model.layers.0.mlp.up_proj.weight", 16, 8, 1},
        {"model.layers.0.mlp.down_proj.weight", 8, 16, 1},
        {"model.norm.weight", 8, 0, 1},
    };
    enum { NW = sizeof w / sizeof w[0] };
    char dir[512], p[600];
    fz_path(sub, dir, sizeof dir);
    mkdir(dir, 0700);
    snprintf(p, sizeof p, "%s/config.json", sub);
    char tmp[600];
    fz_write(p, FZ_TINY_CONFIG, strlen(FZ_TINY_CONFIG), tmp, sizeof tmp);
    for (int shard = 0; shard < (sharded ? 2 : 1); shard++) {
        gn_tensor_out ts[NW];
        int n = 0;
        for (int i = 0; i < NW; i++) {
            if (sharded && w[i].shard != shard) continue;
            gn_tensor_out *t = &ts[n++];
            memset(t, 0, sizeof *t);
            t->name = w[i].name;
            t->dtype = GN_DTYPE_F32;
            t->ndim = w[i].c ? 2 : 1;
            t->shape[0] = w[i].r;
            t->shape[1] = w[i].c;
            t->data = buf;
            t->nbytes = (size_t)(w[i].r * (w[i].c ? w[i].c : 1)) * 4;
        }
        if (sharded) snprintf(p, sizeof p, "%s/model-0000%d-of-00002.safetensors", dir, shard + 1);
        else snprintf(p, sizeof p, "%s/model.safetensors", dir);
        if (gn_safetensors_save(p, ts, n, NULL, 0) != GN_OK) { fprintf(stderr, "%s\n", gn_last_error()); abort(); }
    }
}

#endif
