/*
 * apply.c — the LoRA branch of a linear, applied unmerged: y += s (x A^T) B^T.
 *
 * One forward and one backward over T rows (gn_lora_fwd, gn_lora_bwd), which both
 * inference and the trainer call; the trainer passes its dropout-masked input and
 * masks the input gradient itself. gn_lora_row_multi is a kernel of the same forward
 * for one decode row, fused with the 4-bit base rows of up to three modules.
 */
#include "lora.h"
#include "../model/llama.h" // GN_N_MODS, gn_gemm (tensor/kernels.h)

void gn_lora_fwd(const gn_lora_mod *lm, const float *xin, float *ul, float *y, int64_t T, unsigned gemm) {
    if (!lm->r || T <= 0) return;
    const int64_t IC = lm->in, OC = lm->out, r = lm->r;
    gn_gemm(gemm, 0, 1, T, r, IC, 1.0f, xin, IC, lm->A, IC, 0.0f, ul, r);
    if (y) gn_gemm(gemm, 0, 1, T, OC, r, lm->scale, ul, r, lm->B, r, 1.0f, y, OC);
}

void gn_lora_bwd(const gn_lora_mod *lm, const float *xin, const float *ul, const float *dy, float *dA, float *dB,
                 float *z, float *dx, float dx_beta, int64_t T, unsigned gemm) {
    if (!lm->r || T <= 0) return;
    const int64_t IC = lm->in, OC = lm->out, r = lm->r;
    const float s = lm->scale;
    gn_gemm(gemm, 1, 0, OC, r, T, s, dy, OC, ul, r, 1.0f, dB, r);                    // dB (OC, r) += s dy^T ul
    gn_gemm(gemm, 0, 0, T, r, OC, 1.0f, dy, OC, lm->B, r, 0.0f, z, r);               // z (T, r) = dy B
    gn_gemm(gemm | GN_GEMM_COLS, 1, 0, r, IC, T, s, z, r, xin, IC, 1.0f, dA, IC);    // dA (r, IC) += s z^T xin
    gn_gemm(gemm, 0, 0, T, IC, r, s, z, r, lm->A, IC, dx_beta, dx, IC);              // dx = s z A + beta dx
}

// One decode row through the adapters of up to three modules that share their input
// (q/k/v, gate/up, or one module): out_i += s_i B_i (A_i x) for each, the forward of
// gn_lora_fwd as a kernel for T = 1: one parallel region with one barrier between the A
// and the B products (two sgemm calls per module would be two regions each: at 30 layers
// x 7 modules, hundreds per token). Its sums are dot products (gn_dot_f32, or from the
// bf16 copies of a bf16 adapter: the same values, half the bytes), so they may differ
// from gn_lora_fwd's in the last bit.
// With base (the modules' 4-bit weights), the same region first computes each thread's
// share of the base rows, which the barrier then also covers.
void gn_lora_row_multi(const gn_adapter *ad, int l, const int *ks, int n, const float *in, int64_t IC,
                       float *const *outs, float *tmp, const gn_quant4_state *const *base) {
    const gn_lora_mod *lm[3];
    int64_t a0[4] = {0}, b0[4] = {0};
    for (int i = 0; i < n; i++) {
        lm[i] = &ad->mods[(size_t)l * GN_N_MODS + (size_t)ks[i]];
        a0[i + 1] = a0[i] + lm[i]->r;
        b0[i + 1] = b0[i] + (lm[i]->r ? lm[i]->out : 0);
    }
    if (a0[n] == 0) {
        if (base) gn_nf4_matmul_multi((float **)outs, in, base, n, 1);
        return;
    }
    int64_t next = 0; // the base rows' shared counter
    #pragma omp parallel if (base || IC * a0[n] > 32768)
    {
        if (base) gn_nf4_matmul_multi_team((float **)outs, in, base, n, 1, &next); // rows taken in stretches, no barrier
        #pragma omp for schedule(static) nowait
        for (int64_t j = 0; j < a0[n]; j++) {
            int i = 0;
            while (j >= a0[i + 1]) i++;
            tmp[j] = lm[i]->A16 ? gn_dot_bf16_f32(lm[i]->A16 + (j - a0[i]) * IC, in, IC)
                                : gn_dot_f32(lm[i]->A + (j - a0[i]) * IC, in, IC);
        }
        #pragma omp barrier
        #pragma omp for schedule(static)
        for (int64_t o = 0; o < b0[n]; o++) {
            int i = 0;
            while (o >= b0[i + 1]) i++;
            const int64_t oo = o - b0[i], r = lm[i]->r;
            outs[i][oo] += lm[i]->scale * (lm[i]->B16 ? gn_dot_bf16_f32(lm[i]->B16 + oo * r, tmp + a0[i], r)
                                                      : gn_dot_f32(lm[i]->B + oo * r, tmp + a0[i], r));
        }
    }
}
