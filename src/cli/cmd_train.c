/*
 * cmd_train.c — `guanaco grad`: one forward + backward on given token ids,
 * writing the loss and every LoRA gradient (PEFT key names) as safetensors.
 * It exists so tests can compare our backward pass with PEFT's.
 */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/tensors.h" // gn_safetensors_save
#include "model/llama.h"     // adapter internals: module shapes and names

int cmd_grad(int argc, char **argv) {
    const char *model = NULL, *adapter = NULL, *ids_s = NULL, *labels_s = NULL, *out = NULL;
    float dropout = 0.0f;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            printf("usage: guanaco grad -m BASE -a INIT_ADAPTER --ids \"1 2 3\" [--labels \"-100 2 3\"] -o GRADS.safetensors\n"
                   "One forward+backward; writes 'loss' and the gradient of every LoRA weight under PEFT's names.\n");
            return 0;
        }
        if (i + 1 >= argc) return cli_fail("%s needs a value", a), 2;
        if (!strcmp(a, "-m")) model = argv[++i];
        else if (!strcmp(a, "-a")) adapter = argv[++i];
        else if (!strcmp(a, "--ids")) ids_s = argv[++i];
        else if (!strcmp(a, "--labels")) labels_s = argv[++i];
        else if (!strcmp(a, "-o")) out = argv[++i];
        else if (!strcmp(a, "--dropout")) dropout = (float)atof(argv[++i]);
        else return cli_fail("grad: unknown option '%s'", a), 2;
    }
    if (!model || !adapter || !ids_s || !out) return cli_fail("grad: -m, -a, --ids and -o are required"), 2;
    int32_t *ids = NULL, *labels = NULL;
    int n = 0, nl = 0, rc = 1;
    if (cli_parse_ids(ids_s, &ids, &n)) return 2;
    labels = malloc(sizeof(int32_t) * (size_t)(n ? n : 1));
    if (labels_s) { // may contain -100: parse by hand
        const char *p = labels_s;
        char *end;
        while (*p && nl < n) {
            long v = strtol(p, &end, 10);
            if (end == p) break;
            labels[nl++] = (int32_t)v;
            p = end;
        }
        if (nl != n) { free(ids); free(labels); return cli_fail("grad: --labels must have %d integers", n), 2; }
    } else memcpy(labels, ids, sizeof(int32_t) * (size_t)n);
    gn_model *m = NULL;
    gn_adapter *init = NULL;
    gn_trainer *tr = NULL;
    if (gn_model_load(&m, model, NULL) || gn_adapter_load(&init, m, adapter, NULL)) { cli_fail_lib(); goto done; }
    gn_train_opts o;
    gn_train_opts_default(&o);
    o.lora_dropout = dropout;
    if (gn_trainer_new(&tr, m, &o, init)) { cli_fail_lib(); goto done; }
    int nvalid = 0;
    for (int t = 0; t + 1 < n; t++) nvalid += labels[t + 1] != -100;
    double loss;
    int ntok;
    if (gn_trainer_sequence(tr, ids, labels, n, nvalid ? 1.0f / (float)nvalid : 0.0f, 1, &loss, &ntok)) { cli_fail_lib(); goto done; }
    float lossf = ntok ? (float)(loss / ntok) : 0.0f;
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
                    for (int h = 0; h < nh; h++)
                        for (int i = 0; i < hs / 2; i++) {
                            memcpy(u + ((size_t)h * hs + i) * cols, src + ((size_t)h * hs + 2 * i) * cols, sizeof(float) * (size_t)cols);
                            memcpy(u + ((size_t)h * hs + i + hs / 2) * cols, src + ((size_t)h * hs + 2 * i + 1) * cols, sizeof(float) * (size_t)cols);
                        }
                    unperm[k] = u;
                    src = u;
                }
                ts[k] = (gn_tensor_out){names[k], GN_DTYPE_F32, 2, {rows, cols}, src, (size_t)(rows * cols) * 4};
                k++;
            }
        }
    if (gn_safetensors_save(out, ts, k, NULL, 0)) cli_fail_lib();
    else { printf("loss %.8f tokens %d\n", lossf, ntok); rc = 0; }
    for (int i = 0; i < k; i++) { free(names[i]); free(unperm[i]); }
    free(names); free(ts); free(unperm);
done:
    gn_trainer_free(tr);
    gn_adapter_free(init);
    gn_model_free(m);
    free(ids);
    free(labels);
    return rc;
}
