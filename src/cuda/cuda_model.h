/*
 * cuda_model.h — what model/forward.c and train/train.c call to run a model on
 * the GPU (`--device cuda`, gn_load_opts.device = GN_DEVICE_CUDA).
 *
 * In a CUDA build (make CUDA=1) cuda_model.c and cuda_train.c implement these
 * on top of cuda.h's kernels; in the CPU build cuda_stub.c does, and every
 * entry point that would need a GPU fails with "built without CUDA (make CUDA=1)".
 * Plain C: no CUDA headers needed to include it.
 *
 * The hooks, each one line in the CPU code:
 *   gn_model_load      -> gn_cuda_model_attach  (uploads the weights, sets m->cuda)
 *   gn_model_free      -> gn_cuda_model_detach
 *   gn_session_forward -> gn_cuda_session_forward (when m->cuda)
 *   gn_sessions_decode -> gn_cuda_sessions_decode (when m->cuda)
 *   gn_session_free    -> gn_cuda_session_detach
 *   gn_trainer_sequence-> gn_cuda_train_sequence (when m->cuda)
 *   gn_trainer_step    -> gn_cuda_train_adamw   (when m->cuda; host loop on failure)
 */
#ifndef GN_CUDA_MODEL_H
#define GN_CUDA_MODEL_H

#include "../model/llama.h"

// Uploads m's weights (4-bit matrices packed, as they are; 16/32-bit ones in
// their dtype), norms and RoPE frequencies to the GPU and sets m->cuda.
// GN_ERR_UNSUPPORTED in a CPU build or without a device, GN_ERR_OOM when the
// weights do not fit (the message says how much was needed and free).
gn_status gn_cuda_model_attach(gn_model *m);
void gn_cuda_model_detach(gn_model *m);

// gn_session_forward on the GPU: the session's KV cache lives on the device
// (allocated at the first call); s->logits (already sized by the caller for
// `all_logits ? n : 1` rows) receives the logits; s->pos advances by n. The
// caller has checked ids and context room. NULL with a message on failure.
const float *gn_cuda_session_forward(gn_session *s, const int32_t *ids, int n, int all_logits);
// gn_sessions_decode on the GPU: one token for each session, logits row i into
// logits + i*V; each session's pos advances by one.
const float *gn_cuda_sessions_decode(gn_session *const *ss, const int32_t *ids, int n, float *logits);
void gn_cuda_session_detach(gn_session *s);

// One training sequence on the GPU, the same contract as gn_trainer_sequence:
// the LoRA parameters are read from `ad` (the trainer's adapter, A/B pointing
// into its np-float parameter buffer `params`, so A - params is the offset in
// the flat order); the gradients of this sequence (scaled by `weight`) are
// ADDED to grads (host, same order). The parameters are uploaded again only
// when (params, params_version) changed: pass the trainer's step count.
// dropout p and key as train.c (its drop_key). train == 0: loss only.
gn_status gn_cuda_train_sequence(const gn_model *m, const gn_adapter *ad, const float *params, float *grads, size_t np,
                                 int64_t params_version, float dropout, uint64_t drop_key, const int32_t *ids,
                                 const int32_t *labels, int T, float weight, int train, double *loss_sum,
                                 int *n_tokens);

// gn_trainer_step's AdamW update on the GPU with gn_cuda_adamw_paged, the same
// arithmetic as the host loop bit for bit: grads (host, the step's sum) are
// uploaded, the device copy of params is refreshed unless it already holds them
// (the same (params, version) test as above: this step's sequences ran with
// version step - 1), adam_m/adam_v (host, np floats each; may be an mmap'd file)
// stream through the device, and the updated parameters are downloaded into
// params. Afterwards the device copy counts as version `step`, so the next
// sequence (called with the new step count) does not upload them again: a
// caller that writes params between a step and the next sequence must change
// the step count too. step is the new count (1 for the first step), clip the
// factor the gradients are multiplied by. An error (no sequence ran on this
// model yet, no room for the state chunks) leaves params, adam_m and adam_v
// untouched, so the caller can run its host loop instead.
gn_status gn_cuda_train_adamw(const gn_model *m, float *params, const float *grads, float *adam_m, float *adam_v, size_t np,
                              float lr, float b1, float b2, float eps, float wd, int64_t step, float clip, int bf16_params);

#endif
