/*
 * train_io.c — the trainer's inputs and outputs in PEFT's terms: the
 * --target-modules names, and every LoRA gradient under PEFT's weight names (what
 * `guanaco grad` writes for the tests to compare with PEFT's backward).
 */
#include <stdio.h>  // snprintf
#include <stdlib.h> // calloc, malloc, free
#include <string.h> // strcmp, strtok_r, memcpy

#include "core/common.h"     // gn_err
#include "formats/gguf.h"    // gn_gguf_permute_qk
#include "formats/tensors.h" // gn_safetensors_save, gn_tensor_out
#include "model/llama.h"     // gn_adapter internals: module shapes and names

gn_status gn_lora_targets_parse(const char *list, unsigned *out) {
    unsigned mask = 0;
    char buf[256];
    snprintf(buf, sizeof buf, "%s", list);
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (!strcmp(tok, "all")) { mask = (1u << GN_N_MODS) - 1; continue; }
        int f = -1;
        for (int k = 0; k < GN_N_MODS; k++) if (!strcmp(tok, GN_MOD_NAMES[k])) f = k;
        if (f < 0) return gn_err(GN_ERR_ARG, "--target-modules: unknown module '%s' (expected q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj or all)", tok);
        mask |= 1u << f;
    }
    *out = mask;
    return GN_OK;
}

gn_status gn_trainer_save_grads(gn_trainer *tr, const gn_model *m, const char *out, float lossf) {
    // gradients in the adapter's layout, named as PEFT names the weights
    const gn_adapter *a = gn_trainer_adapter(tr);
    const float *g = gn_trainer_grads(tr);
    const float *p0 = gn_trainer_params(tr);
    int nt = 1;
    for (int i = 0; i < a->n_layers * GN_N_MODS; i++) nt += a->mods[i].r ? 2 : 0;
    gn_tensor_out *ts = calloc((size_t)nt, sizeof *ts);
    char **names = calloc((size_t)nt, sizeof(char *));
    ts[0] = (gn_tensor_out){"loss", GN_DTYPE_F32, 1, {1}, &lossf, 4};
    int k = 1;
    const gn_config *c = gn_model_config(m);
    float **unperm = calloc((size_t)nt, sizeof(float *));
    for (int L = 0; L < a->n_layers; L++)
        for (int mi = 0; mi < GN_N_MODS; mi++) {
            const gn_lora_mod *lm = &a->mods[(size_t)L * GN_N_MODS + (size_t)mi];
            if (!lm->r) continue;
            for (int isB = 0; isB < 2; isB++) {
                names[k] = malloc(256);
                snprintf(names[k], 256, "base_model.model.model.layers.%d.%s.lora_%s.weight", L, GN_MOD_PATHS[mi], isB ? "B" : "A");
                const float *src = g + ((isB ? lm->B : lm->A) - p0);
                int64_t rows = isB ? lm->out : lm->r, cols = isB ? lm->r : lm->in;
                if (isB && c->rope_interleaved && (mi == GN_MOD_Q || mi == GN_MOD_K)) { // back to HF row order
                    int nh = mi == GN_MOD_Q ? c->n_heads : c->n_kv_heads, hs = c->head_dim;
                    float *u = malloc(sizeof(float) * (size_t)(rows * cols));
                    memcpy(u, src, sizeof(float) * (size_t)(rows * cols));
                    gn_gguf_permute_qk(u, nh, hs, cols, 0);
                    unperm[k] = u;
                    src = u;
                }
                ts[k] = (gn_tensor_out){names[k], GN_DTYPE_F32, 2, {rows, cols}, src, (size_t)(rows * cols) * 4};
                k++;
            }
        }
    gn_status st = gn_safetensors_save(out, ts, k, NULL, 0);
    for (int i = 0; i < k; i++) { free(names[i]); free(unperm[i]); }
    free(names); free(ts); free(unperm);
    return st;
}
