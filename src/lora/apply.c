/*
 * apply.c — the LoRA term of a linear, applied unmerged at inference:
 * out += s * (x A^T) B^T, for T rows at once or for one decode row through up to
 * three modules that share their input.
 */
#include "lora.h"
#include "../model/llama.h" // gn_linear, GN_N_MODS

void gn_lora_apply(const gn_lora_mod *lm, const float *inp, float *out, int64_t T, float *tmp, float *tmp2) {
    if (!lm->r || T <= 0) return;
    gn_mat A = {GN_DTYPE_F32, lm->r, lm->in, lm->A, NULL};
    gn_mat B = {GN_DTYPE_F32, lm->out, lm->r, lm->B, NULL};
    gn_linear(tmp, inp, &A, T);     // (T, r)
    gn_linear(tmp2, tmp, &B, T);    // (T, OC)
    size_t n = (size_t)(T * lm->out);
    for (size_t i = 0; i < n; i++) out[i] += lm->scale * tmp2[i];
}

// One decode row through the adapters of up to three modules that share their input
// (q/k/v, gate/up, or one module): out_i += s_i B_i (A_i x) for each, in one parallel
// region with one barrier between the A and the B products (two gn_matmul calls per
// module would be two regions each: at 30 layers x 7 modules, hundreds per token).
// Each output is the same dot products as gn_lora_apply's, in the same order (from the
// bf16 copies of a bf16 adapter: the same values, half the bytes, sums in another order).
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
    #pragma omp parallel if (base || IC * a0[n] > 32768)
    {
        if (base) gn_nf4_matmul_multi_team((float **)outs, in, base, n, 1); // this thread's rows, no barrier
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
