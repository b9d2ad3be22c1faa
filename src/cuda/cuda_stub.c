/*
 * cuda_stub.c — the --device cuda entry points of a build without the CUDA
 * backend (the default `make`; `make CUDA=1` links cuda_model.c and
 * cuda_train.c instead). Nothing here can be reached with a model on the GPU,
 * since no model gets there: attaching fails with the message below.
 */
#include "cuda_model.h"

#define NO_CUDA "built without CUDA (make CUDA=1)"

gn_status gn_device_parse(const char *name, int *device) {
    if (!strcmp(name, "cpu")) { *device = GN_DEVICE_CPU; return GN_OK; }
    if (!strcmp(name, "cuda")) return gn_err(GN_ERR_UNSUPPORTED, "--device cuda: " NO_CUDA);
    return gn_err(GN_ERR_ARG, "--device '%s' (expected cpu or cuda)", name);
}

gn_status gn_cuda_model_attach(gn_model *m) {
    GN_UNUSED(m);
    return gn_err(GN_ERR_UNSUPPORTED, "--device cuda: " NO_CUDA);
}

void gn_cuda_model_detach(gn_model *m) { GN_UNUSED(m); }

const float *gn_cuda_session_forward(gn_session *s, const int32_t *ids, int n, int all_logits) {
    GN_UNUSED(s); GN_UNUSED(ids); GN_UNUSED(n); GN_UNUSED(all_logits);
    gn_err(GN_ERR_UNSUPPORTED, "forward on the GPU: " NO_CUDA);
    return NULL;
}

const float *gn_cuda_sessions_decode(gn_session *const *ss, const int32_t *ids, int n, float *logits) {
    GN_UNUSED(ss); GN_UNUSED(ids); GN_UNUSED(n); GN_UNUSED(logits);
    gn_err(GN_ERR_UNSUPPORTED, "decode on the GPU: " NO_CUDA);
    return NULL;
}

void gn_cuda_session_detach(gn_session *s) { GN_UNUSED(s); }

gn_status gn_cuda_train_sequence(const gn_model *m, const gn_adapter *ad, const float *params, float *grads, size_t np,
                                 int64_t params_version, float dropout, uint64_t drop_key, const int32_t *ids,
                                 const int32_t *labels, int T, float weight, int train, double *loss_sum,
                                 int *n_tokens) {
    GN_UNUSED(m); GN_UNUSED(ad); GN_UNUSED(params); GN_UNUSED(grads); GN_UNUSED(np); GN_UNUSED(params_version);
    GN_UNUSED(dropout);
    GN_UNUSED(drop_key); GN_UNUSED(ids); GN_UNUSED(labels); GN_UNUSED(T); GN_UNUSED(weight); GN_UNUSED(train);
    GN_UNUSED(loss_sum); GN_UNUSED(n_tokens);
    return gn_err(GN_ERR_UNSUPPORTED, "training on the GPU: " NO_CUDA);
}

gn_status gn_cuda_train_adamw(const gn_model *m, float *params, const float *grads, float *adam_m, float *adam_v, size_t np,
                              float lr, float b1, float b2, float eps, float wd, int64_t step, float clip, int bf16_params) {
    GN_UNUSED(m); GN_UNUSED(params); GN_UNUSED(grads); GN_UNUSED(adam_m); GN_UNUSED(adam_v); GN_UNUSED(np);
    GN_UNUSED(lr); GN_UNUSED(b1); GN_UNUSED(b2); GN_UNUSED(eps); GN_UNUSED(wd); GN_UNUSED(step); GN_UNUSED(clip);
    GN_UNUSED(bf16_params);
    return gn_err(GN_ERR_UNSUPPORTED, "AdamW on the GPU: " NO_CUDA);
}
