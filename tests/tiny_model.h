/*
 * tiny_model.h — a random LLaMA folder (config.json + an f32 model.safetensors) for the C
 * tests and bench/cuda_bench.c. Header-only; each includer passes its own generator (uniform
 * in [-1, 1)), so its random stream stays its own: embedding, final norm, head, then per layer
 * the two norms and q, k, v, o, gate, up, down, in that order.
 */
#ifndef GN_TINY_MODEL_H
#define GN_TINY_MODEL_H

#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h> // mkdir

#include "formats/tensors.h" // gn_tensor_out, gn_safetensors_save

// matrices uniform in [-scale, scale): lm_head `head`, q/k `qk`, the others `rest`; the
// embedding in [-1, 1); norm weights near 1. Returns 0 on success.
static inline int tm_write_model(const char *dir, int C, int HD, int L, int NH, int NKV, int V, int max_pos,
                                 float head, float qk, float rest, float (*rnd)(void)) {
    mkdir(dir, 0755);
    char p[1024];
    snprintf(p, sizeof p, "%s/config.json", dir);
    FILE *f = fopen(p, "w");
    if (!f) return 1;
    fprintf(f, "{\"model_type\":\"llama\",\"hidden_size\":%d,\"intermediate_size\":%d,\"num_hidden_layers\":%d,"
               "\"num_attention_heads\":%d,\"num_key_value_heads\":%d,\"vocab_size\":%d,\"rms_norm_eps\":1e-5,"
               "\"rope_theta\":10000.0,\"tie_word_embeddings\":false,\"max_position_embeddings\":%d}",
            C, HD, L, NH, NKV, V, max_pos);
    fclose(f);
    const int hs = C / NH, nt = 3 + 9 * L;
    gn_tensor_out *ts = calloc((size_t)nt, sizeof *ts);
    char (*names)[96] = calloc((size_t)nt, 96);
    float **bufs = calloc((size_t)nt, sizeof(float *));
    int k = 0;
    // (name, rows, cols, scale): cols 0 is a norm weight
#define TM_ADD(nm, rows, cols, s) do { \
        size_t n_ = (size_t)(rows) * (size_t)((cols) ? (cols) : 1); \
        snprintf(names[k], 96, "%s", nm); \
        bufs[k] = malloc(sizeof(float) * n_); \
        for (size_t i_ = 0; i_ < n_; i_++) bufs[k][i_] = (cols) ? rnd() * (s) : 1.0f + 0.1f * rnd(); \
        ts[k] = (gn_tensor_out){names[k], GN_DTYPE_F32, (cols) ? 2 : 1, {(rows), (cols)}, bufs[k], sizeof(float) * n_}; \
        k++; \
    } while (0)
    TM_ADD("model.embed_tokens.weight", V, C, 1.0f);
    TM_ADD("model.norm.weight", C, 0, 0.0f);
    TM_ADD("lm_head.weight", V, C, head);
    static const char *const mods[9] = {"input_layernorm", "post_attention_layernorm", "self_attn.q_proj",
                                        "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                                        "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"};
    const int rows[9] = {C, C, NH * hs, NKV * hs, NKV * hs, C, HD, HD, C};
    const int cols[9] = {0, 0, C, C, C, NH * hs, C, C, HD};
    const float sc[9] = {0, 0, qk, qk, rest, rest, rest, rest, rest};
    char nm[96];
    for (int l = 0; l < L; l++)
        for (int j = 0; j < 9; j++) {
            snprintf(nm, sizeof nm, "model.layers.%d.%s.weight", l, mods[j]);
            TM_ADD(nm, rows[j], cols[j], sc[j]);
        }
#undef TM_ADD
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    gn_status st = gn_safetensors_save(p, ts, k, NULL, 0);
    for (int i = 0; i < k; i++) free(bufs[i]);
    free(bufs);
    free(names);
    free(ts);
    return st != GN_OK;
}

#endif
