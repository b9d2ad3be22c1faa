// lora.cu — the LoRA branch y += s (x A^T) B^T and its backward, as train.c's
// lin_fwd / lin_bwd, in float32 cuBLAS products (no TF32).
#include "common.cuh"

extern "C" void gn_cuda_lora_fwd(float *y, float *ul, const float *x, const float *A, const float *B, int T, int IC,
                                 int OC, int r, float s) {
    if (T <= 0 || r <= 0) return;
    gn_cuda_sgemm(0, 1, T, r, IC, 1.0f, x, IC, A, IC, 0.0f, ul, r);        // ul (T, r) = x A^T
    if (y) gn_cuda_sgemm(0, 1, T, OC, r, s, ul, r, B, r, 1.0f, y, OC);     // y (T, OC) += s ul B^T
}

extern "C" void gn_cuda_lora_bwd(float *dA, float *dB, float *dx, float *z, const float *dy, const float *x,
                                 const float *ul, const float *A, const float *B, int T, int IC, int OC, int r, float s) {
    if (T <= 0 || r <= 0) return;
    gn_cuda_sgemm(1, 0, OC, r, T, s, dy, OC, ul, r, 1.0f, dB, r);           // dB (OC, r) += s dy^T ul
    gn_cuda_sgemm(0, 0, T, r, OC, 1.0f, dy, OC, B, r, 0.0f, z, r);          // z (T, r) = dy B
    gn_cuda_sgemm(1, 0, r, IC, T, s, z, r, x, IC, 1.0f, dA, IC);            // dA (r, IC) += s z^T x
    if (dx) gn_cuda_sgemm(0, 0, T, IC, r, s, z, r, A, IC, 1.0f, dx, IC);    // dx (T, IC) += s z A
}
