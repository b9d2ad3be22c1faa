/*
 * cuda_priv.h — the model's device-side state, shared by cuda_model.c (upload,
 * inference forward) and cuda_train.c (training forward/backward). Plain C.
 */
#ifndef GN_CUDA_PRIV_H
#define GN_CUDA_PRIV_H

#include "cuda.h"
#include "cuda_model.h"

// One linear layer on the device: 4-bit or dense (F32/BF16).
typedef struct {
    int q4;
    gn_cuda_q4 q;
    gn_cuda_mat d;
} cu_lin;

typedef struct {
    cu_lin lin[GN_N_MODS];        // q, k, v, o, gate, up, down
    const float *attn_norm, *ffn_norm;
} cu_layer;

// A LoRA adapter's A and B on the device (inference: uploaded once per adapter).
typedef struct {
    const gn_adapter *src;
    float **A, **B;               // (n_layers * GN_N_MODS), NULL where r == 0
    float *buf;
    int rmax;
} cu_adapter;

struct cu_train;                  // cuda_train.c

typedef struct {
    cu_layer *layers;
    gn_cuda_mat embed;            // (V, C) F32 or BF16
    cu_lin head;                  // (V, C); shares embed's data when tied
    const float *final_norm;      // (C)
    const float *inv_freq;        // (n_rot / 2)
    void **allocs;                // every device buffer of the weights
    int nallocs;
    size_t bytes;
    cu_adapter *adapters;         // uploaded adapters, by host pointer
    int nadapters;
    struct cu_train *train;       // training buffers (cuda_train.c), or NULL
} cu_model;

// out (T, OC) = beta out + x (T, IC) @ W^T; dx (T, IC) = beta dx + dy (T, OC) @ W.
static inline void cu_linear(const cu_lin *w, float *out, const float *x, int64_t T, float beta) {
    if (w->q4) gn_cuda_q4_matmul(out, x, &w->q, T, beta);
    else gn_cuda_mat_matmul(out, x, &w->d, T, beta);
}
static inline void cu_linear_nn(const cu_lin *w, float *dx, const float *dy, int64_t T, float beta) {
    if (w->q4) gn_cuda_q4_matmul_nn(dx, dy, &w->q, T, beta);
    else gn_cuda_mat_matmul_nn(dx, dy, &w->d, T, beta);
}

void cu_train_free(struct cu_train *t); // cuda_train.c

// A host 4-bit state (nf4.h) copied to the device as it is stored (double
// quantization kept). GN_ERR_OOM (nothing left allocated) when it does not fit.
// Release frees the device buffers. (cuda_model.c; also used by tests and bench.)
gn_status gn_cuda_q4_upload(const gn_quant4_state *q, gn_cuda_q4 *d);
void gn_cuda_q4_release(gn_cuda_q4 *d);

#endif
