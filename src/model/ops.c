/*
 * ops.c — one forward (and backward) per LLaMA layer op; see ops.h.
 */
#include "ops.h"
#include "llama.h" // gn_linear_rows_f32

#include <math.h>   // cosf, sinf, sqrtf
#include <string.h> // memcpy

// ----------------------------------------------------------------------------
// linear layers of the base, dispatched on the weight dtype

void gn_linear(float *out, const float *inp, const gn_mat *w, int64_t T) {
    if (w->q4) gn_nf4_matmul(out, inp, (const gn_quant4_state *)w->q4, T);
    else gn_matmul(out, inp, w, T);
}

// Two or three products of the same input (q/k/v, gate/up; w3 may be NULL): one
// parallel loop for all when every weight is 4-bit, else one gn_linear each.
void gn_linear3(float *o1, const gn_mat *w1, float *o2, const gn_mat *w2, float *o3, const gn_mat *w3,
                const float *inp, int64_t T) {
    float *outs[3] = {o1, o2, o3};
    const gn_mat *ws[3] = {w1, w2, w3};
    int n = w3 ? 3 : 2, all4 = 1;
    const gn_quant4_state *qs[3];
    for (int i = 0; i < n; i++) { all4 &= ws[i]->q4 != NULL; qs[i] = ws[i]->q4; }
    if (all4) { gn_nf4_matmul_multi(outs, inp, qs, n, T); return; }
    for (int i = 0; i < n; i++) gn_linear(outs[i], inp, ws[i], T);
}

// Rows of a 4-bit weight as float32, rounded to its compute dtype like the
// forward product sees them (used by gn_matmul_nn for input gradients).
// 4-bit rows dequantized and rounded to the compute dtype, as the products use them
static void q4_rows_f32(const gn_mat *w, int64_t r0, int64_t n, float *dst) {
    const gn_quant4_state *q = w->q4;
    gn_dequantize_4bit_range(q, r0 * q->cols, n * q->cols, dst);
    if (q->wdtype == GN_DTYPE_BF16)
        for (int64_t i = 0; i < n * q->cols; i++) dst[i] = gn_bf16_to_f32(gn_f32_to_bf16(dst[i]));
    else if (q->wdtype == GN_DTYPE_F16)
        for (int64_t i = 0; i < n * q->cols; i++) dst[i] = gn_f16_to_f32(gn_f32_to_f16(dst[i]));
}
void gn_linear_rows_f32(const gn_mat *w, int64_t r0, int64_t n, float *dst) {
    if (w->q4) q4_rows_f32(w, r0, n, dst);
    else gn_mat_rows_f32(w, r0, n, dst);
}
void gn_linear_nn(float *out, const float *dy, const gn_mat *w, int64_t T) {
    if (w->q4) gn_nf4_matmul_nn(out, dy, (const gn_quant4_state *)w->q4, T); // in the compute dtype
    else gn_matmul_nn(out, dy, w, T);
}

// ----------------------------------------------------------------------------
// embedding

void gn_op_embed(float *x, const gn_mat *e, const int32_t *ids, int T) {
    const int64_t C = e->cols;
    for (int t = 0; t < T; t++) {
        float *out = x + (size_t)t * C;
        if (e->dtype == GN_DTYPE_F32) memcpy(out, (const float *)e->data + (int64_t)ids[t] * C, (size_t)C * sizeof(float));
        else gn_linear_rows_f32(e, ids[t], 1, out);
    }
}

// ----------------------------------------------------------------------------
// RMSNorm

void gn_op_rmsnorm_fwd(float *y, const float *x, const float *w, int T, int C, float eps) { gn_rmsnorm(y, x, w, T, C, eps); }

void gn_op_rmsnorm_bwd(float *dx, const float *dy, const float *x, const float *w, int T, int C, float eps, int accumulate) {
    #pragma omp parallel for schedule(static) if (T > 1)
    for (int t = 0; t < T; t++) {
        const float *xr = x + (size_t)t * C, *dr = dy + (size_t)t * C;
        float *o = dx + (size_t)t * C;
        double ss = 0.0, dot = 0.0;
        #pragma omp simd reduction(+ : ss, dot)
        for (int i = 0; i < C; i++) { ss += (double)xr[i] * xr[i]; dot += (double)w[i] * dr[i] * xr[i]; }
        float rstd = 1.0f / sqrtf((float)(ss / C) + eps);
        float coef = (float)(dot / C) * rstd * rstd * rstd;
        #pragma omp simd
        for (int i = 0; i < C; i++) {
            float g = rstd * w[i] * dr[i] - xr[i] * coef;
            o[i] = accumulate ? o[i] + g : g;
        }
    }
}

// ----------------------------------------------------------------------------
// RoPE

void gn_op_rope_angles(float *cs, float *sn, const float *inv_freq, int half, int pos) {
    for (int i = 0; i < half; i++) {
        float ang = (float)pos * inv_freq[i];
        cs[i] = cosf(ang);
        sn[i] = sinf(ang);
    }
}

void gn_op_rope(float *vec, int n_heads, int hs, int n_rot, int interleaved, const float *cs, const float *sn, float sign) {
    const int half = n_rot / 2;
    for (int h = 0; h < n_heads; h++) {
        float *v = vec + (size_t)h * hs;
        if (interleaved) {
            for (int i = 0; i < half; i++) {
                float c = cs[i], s = sign * sn[i], a = v[2 * i], b = v[2 * i + 1];
                v[2 * i] = a * c - b * s;
                v[2 * i + 1] = a * s + b * c;
            }
        } else {
            #pragma omp simd
            for (int i = 0; i < half; i++) {
                float c = cs[i], s = sign * sn[i], a = v[i], b = v[i + half];
                v[i] = a * c - b * s;
                v[i + half] = a * s + b * c;
            }
        }
    }
}

// ----------------------------------------------------------------------------
// SwiGLU

void gn_op_swiglu_fwd(float *h, const float *g, const float *u, size_t n, int how) {
    if (how == GN_SWIGLU_INPLACE) { GN_ASSERT(h == g); gn_silu_mul(h, u, (int64_t)n); return; }
    #pragma omp parallel for schedule(static) if (n > 16384)
    for (size_t i0 = 0; i0 < n; i0 += 4096) {
        size_t i1 = i0 + 4096 < n ? i0 + 4096 : n;
        #pragma omp simd
        for (size_t i = i0; i < i1; i++) h[i] = -g[i];
        gn_exp_inplace(h + i0, (int64_t)(i1 - i0));
        #pragma omp simd
        for (size_t i = i0; i < i1; i++) h[i] = g[i] / (1.0f + h[i]) * u[i];
    }
}

void gn_op_swiglu_bwd(float *dg, float *du, const float *dh, const float *g, const float *u, size_t n) {
    #pragma omp parallel for schedule(static) if (n > 16384)
    for (size_t i0 = 0; i0 < n; i0 += 4096) {
        size_t i1 = i0 + 4096 < n ? i0 + 4096 : n;
        #pragma omp simd
        for (size_t i = i0; i < i1; i++) dg[i] = -g[i];
        gn_exp_inplace(dg + i0, (int64_t)(i1 - i0));
        #pragma omp simd
        for (size_t i = i0; i < i1; i++) {
            float gv = g[i], sg = 1.0f / (1.0f + dg[i]);
            du[i] = dh[i] * (gv * sg);
            dg[i] = dh[i] * u[i] * sg * (1.0f + gv * (1.0f - sg));
        }
    }
}

// ----------------------------------------------------------------------------
// residual

void gn_op_residual(float *y, const float *x, size_t n) {
    #pragma omp parallel for simd schedule(static) if (n > 16384)
    for (size_t i = 0; i < n; i++) y[i] += x[i];
}

// ----------------------------------------------------------------------------
// cross-entropy

double gn_op_xent(float *work, const float *logits, int64_t V, int32_t y, float weight, int grad) {
    float mx = logits[0];
    const float ly = logits[y]; // before work (possibly logits) is overwritten
    #pragma omp simd reduction(max : mx)
    for (int64_t j = 1; j < V; j++) mx = logits[j] > mx ? logits[j] : mx;
    int bad = 0; // a NaN (or inf) logit: the vectorized exp would clamp it away
    #pragma omp simd reduction(| : bad)
    for (int64_t j = 0; j < V; j++) { work[j] = logits[j] - mx; bad |= work[j] != work[j]; }
    gn_exp_inplace(work, V); // exp(logit - max)
    double se = 0.0;
    #pragma omp simd reduction(+ : se)
    for (int64_t j = 0; j < V; j++) se += work[j];
    if (bad) se = NAN; // loss and gradient NaN, as libm's exp gives
    if (grad) { // d(loss)/d(logits) = softmax - onehot, times the weight
        float sc = (float)(weight / se);
        #pragma omp simd
        for (int64_t j = 0; j < V; j++) work[j] *= sc;
        work[y] -= weight;
    }
    return log(se) + mx - ly;
}
