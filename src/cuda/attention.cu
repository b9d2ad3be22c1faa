// attention.cu — causal grouped-query attention over the KV cache (decode and
// prefill kernels) and the training attention with kept probabilities and its
// backward (cuBLAS products per head plus row-softmax kernels).
#include "common.cuh"

#include <math.h>

#define HS_MAX 256          // largest head size the kernels take
#define DEC_SPLIT 256       // decode: keys per block (one stretch of the cache)
#define DEC_THREADS 128
#define PRE_ROWS 8          // prefill: query rows (warps) per block

// ---------------------------------------------------------------------------
// decode: block (head h, stretch sp, row t) scores keys [sp*DEC_SPLIT, ...) of
// row t's n = pos0 + t + 1 keys, and writes the stretch's partial softmax
// (max m, sum l, unnormalized o); the merge kernel combines the stretches.

__global__ void __launch_bounds__(DEC_THREADS)
attn_decode_partial(float *pm, float *pl, float *po, const float *q, const float *kc, const float *vc, int pos0, int NH,
                    int NKV, int hs, int nsplit, float scale) {
    __shared__ float s_q[HS_MAX];
    __shared__ float s_p[DEC_SPLIT];
    __shared__ float red[32];
    const int h = blockIdx.x, sp = blockIdx.y, t = blockIdx.z;
    const int n = pos0 + t + 1, kvd = NKV * hs, kvh = h / (NH / NKV);
    const int j0 = sp * DEC_SPLIT, j1 = min(n, j0 + DEC_SPLIT), len = max(0, j1 - j0);
    const int64_t at = ((int64_t)t * NH + h) * nsplit + sp;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    if (len == 0) { // this row's keys end before the stretch
        if (threadIdx.x == 0) { pm[at] = -INFINITY; pl[at] = 0.0f; }
        for (int d = threadIdx.x; d < hs; d += blockDim.x) po[at * hs + d] = 0.0f;
        return;
    }
    for (int d = threadIdx.x; d < hs; d += blockDim.x) s_q[d] = q[(int64_t)t * NH * hs + (int64_t)h * hs + d];
    __syncthreads();
    const float *kb = kc + (int64_t)kvh * hs, *vb = vc + (int64_t)kvh * hs;
    for (int j = j0 + warp; j < j1; j += nw) {
        const float *kr = kb + (int64_t)j * kvd;
        float d = 0.0f;
        for (int i = lane; i < hs; i += 32) d = fmaf(s_q[i], kr[i], d);
        d = gn_warp_sum(d);
        if (lane == 0) s_p[j - j0] = d * scale;
    }
    __syncthreads();
    float mx = -INFINITY;
    for (int j = threadIdx.x; j < len; j += blockDim.x) mx = fmaxf(mx, s_p[j]);
    mx = gn_block_max(mx, red);
    float sum = 0.0f;
    for (int j = threadIdx.x; j < len; j += blockDim.x) {
        float p = expf(s_p[j] - mx);
        s_p[j] = p;
        sum += p;
    }
    sum = gn_block_sum(sum, red); // its barriers also publish s_p
    for (int d = threadIdx.x; d < hs; d += blockDim.x) {
        float acc = 0.0f;
        for (int j = 0; j < len; j++) acc = fmaf(s_p[j], vb[(int64_t)(j0 + j) * kvd + d], acc);
        po[at * hs + d] = acc;
    }
    if (threadIdx.x == 0) { pm[at] = mx; pl[at] = sum; }
}

__global__ void attn_decode_merge(float *out, const float *pm, const float *pl, const float *po, int NH, int hs,
                                  int nsplit) {
    const int h = blockIdx.x, t = blockIdx.y;
    const int64_t base = ((int64_t)t * NH + h) * nsplit;
    float M = -INFINITY;
    for (int s = 0; s < nsplit; s++) M = fmaxf(M, pm[base + s]);
    float L = 0.0f;
    for (int s = 0; s < nsplit; s++) L += pl[base + s] == 0.0f ? 0.0f : expf(pm[base + s] - M) * pl[base + s];
    for (int d = threadIdx.x; d < hs; d += blockDim.x) {
        float acc = 0.0f;
        for (int s = 0; s < nsplit; s++)
            if (pl[base + s] != 0.0f) acc += expf(pm[base + s] - M) * po[(base + s) * hs + d];
        out[(int64_t)t * NH * hs + (int64_t)h * hs + d] = acc / L;
    }
}

extern "C" void gn_cuda_attention_decode(float *out, const float *q, const float *k_cache, const float *v_cache, int T,
                                         int pos0, int NH, int NKV, int hs) {
    if (T <= 0 || NH <= 0) return;
    GN_ASSERT(hs >= 1 && hs <= HS_MAX && NKV >= 1 && NH % NKV == 0 && T <= 65535);
    int nsplit = (pos0 + T + DEC_SPLIT - 1) / DEC_SPLIT;
    size_t parts = (size_t)T * NH * nsplit;
    float *pm = (float *)gn_cuda_scratch(parts * (size_t)(hs + 2) * sizeof(float));
    float *pl = pm + parts, *po = pl + parts;
    float scale = 1.0f / sqrtf((float)hs);
    cudaStream_t st = gn_cuda_stream();
    attn_decode_partial<<<dim3(NH, nsplit, T), DEC_THREADS, 0, st>>>(pm, pl, po, q, k_cache, v_cache, pos0, NH, NKV, hs,
                                                                    nsplit, scale);
    CUDA_LAUNCHED();
    attn_decode_merge<<<dim3(NH, T), 128, 0, st>>>(out, pm, pl, po, NH, hs, nsplit);
    CUDA_LAUNCHED();
}

// ---------------------------------------------------------------------------
// prefill: block (row block, head) with PRE_ROWS warps, one query row each;
// tiles of KT keys and values in shared memory, online softmax per warp, the
// output accumulated in registers (lane holds dims lane, lane+32, ...).

template <int KT>
__global__ void __launch_bounds__(PRE_ROWS * 32)
attn_prefill_kernel(float *out, const float *q, const float *kc, const float *vc, int T, int pos0, int NH, int NKV,
                    int hs, float scale) {
    extern __shared__ float smem[];
    const int kst = hs + 1; // padded key rows: lane j reading key j's dim d hits bank (j*kst + d) % 32, all distinct
    float *Ks = smem, *Vs = Ks + KT * kst, *Qs = Vs + KT * hs;
    const int h = blockIdx.y, kvh = h / (NH / NKV), qd = NH * hs, kvd = NKV * hs;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int t0 = blockIdx.x * PRE_ROWS, t = t0 + warp;
    const int valid = t < T;
    const int pos = pos0 + t;
    const int last = pos0 + min(t0 + PRE_ROWS, T) - 1; // the block's last key
    if (valid)
        for (int d = lane; d < hs; d += 32) Qs[warp * hs + d] = q[(int64_t)t * qd + (int64_t)h * hs + d];
    float o[HS_MAX / 32];
#pragma unroll
    for (int k = 0; k < HS_MAX / 32; k++) o[k] = 0.0f;
    float m = -INFINITY, l = 0.0f;
    const float *kb = kc + (int64_t)kvh * hs, *vb = vc + (int64_t)kvh * hs;
    for (int k0 = 0; k0 <= last; k0 += KT) {
        __syncthreads(); // the previous tile is consumed (and Qs written, the first time)
        for (int idx = threadIdx.x; idx < KT * hs; idx += blockDim.x) {
            int j = idx / hs, d = idx % hs, key = k0 + j;
            float kv = 0.0f, vv = 0.0f;
            if (key <= last) {
                kv = kb[(int64_t)key * kvd + d];
                vv = vb[(int64_t)key * kvd + d];
            }
            Ks[j * kst + d] = kv;
            Vs[j * hs + d] = vv;
        }
        __syncthreads();
        if (!valid || k0 > pos) continue; // warp-uniform
        float s = -INFINITY;
        if (lane < KT && k0 + lane <= pos) {
            const float *kr = Ks + lane * kst, *qr = Qs + warp * hs;
            float d = 0.0f;
            for (int i = 0; i < hs; i++) d = fmaf(qr[i], kr[i], d);
            s = d * scale;
        }
        float mn = fmaxf(m, gn_warp_max(s)); // finite: key k0 <= pos is in the tile
        float p = s == -INFINITY ? 0.0f : expf(s - mn);
        float corr = expf(m - mn); // 0 on the first tile (m = -inf)
        l = l * corr + gn_warp_sum(p);
#pragma unroll
        for (int k = 0; k < HS_MAX / 32; k++) o[k] *= corr;
        const int jn = min(KT, pos - k0 + 1);
        for (int j = 0; j < jn; j++) {
            float pj = __shfl_sync(0xffffffffu, p, j);
            const float *vr = Vs + j * hs;
#pragma unroll
            for (int k = 0; k < HS_MAX / 32; k++) {
                int d = lane + 32 * k;
                if (d < hs) o[k] = fmaf(pj, vr[d], o[k]);
            }
        }
        m = mn;
    }
    if (!valid) return;
    float inv = 1.0f / l;
#pragma unroll
    for (int k = 0; k < HS_MAX / 32; k++) {
        int d = lane + 32 * k;
        if (d < hs) out[(int64_t)t * qd + (int64_t)h * hs + d] = o[k] * inv;
    }
}

extern "C" void gn_cuda_attention_prefill(float *out, const float *q, const float *k_cache, const float *v_cache, int T,
                                          int pos0, int NH, int NKV, int hs) {
    if (T <= 0 || NH <= 0) return;
    GN_ASSERT(hs >= 1 && hs <= HS_MAX && NKV >= 1 && NH % NKV == 0 && NH <= 65535);
    float scale = 1.0f / sqrtf((float)hs);
    dim3 grid((unsigned)((T + PRE_ROWS - 1) / PRE_ROWS), (unsigned)NH);
    cudaStream_t st = gn_cuda_stream();
    if (hs <= 128) {
        size_t sm = sizeof(float) * (size_t)(32 * (hs + 1) + 32 * hs + PRE_ROWS * hs);
        attn_prefill_kernel<32><<<grid, PRE_ROWS * 32, sm, st>>>(out, q, k_cache, v_cache, T, pos0, NH, NKV, hs, scale);
    } else {
        size_t sm = sizeof(float) * (size_t)(16 * (hs + 1) + 16 * hs + PRE_ROWS * hs);
        attn_prefill_kernel<16><<<grid, PRE_ROWS * 32, sm, st>>>(out, q, k_cache, v_cache, T, pos0, NH, NKV, hs, scale);
    }
    CUDA_LAUNCHED();
}

extern "C" void gn_cuda_attention(float *out, const float *q, const float *k_cache, const float *v_cache, int T, int pos0,
                                  int NH, int NKV, int hs) {
    if (T == 1) gn_cuda_attention_decode(out, q, k_cache, v_cache, T, pos0, NH, NKV, hs);
    else gn_cuda_attention_prefill(out, q, k_cache, v_cache, T, pos0, NH, NKV, hs);
}

// ---------------------------------------------------------------------------
// training attention: per head, S = scale q k^T (cuBLAS), causal softmax in
// place (P kept), o = P v; the backward as ops.h's gn_op_attention_bwd.

// rows of one head's (T, T) scores: softmax over j <= i, zero above the diagonal
// (one warp per row of the (NH*T, T) stack of heads; row's diagonal is row % T)
__global__ void causal_softmax_rows(float *P, int T, int64_t nrows) {
    const int lane = threadIdx.x & 31;
    const int64_t row = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (row >= nrows) return;
    const int i = (int)(row % T);
    float *r = P + row * T;
    float mx = -INFINITY;
    for (int j = lane; j <= i; j += 32) mx = fmaxf(mx, r[j]);
    mx = gn_warp_max(mx);
    float sum = 0.0f;
    for (int j = lane; j <= i; j += 32) {
        float e = expf(r[j] - mx);
        r[j] = e;
        sum += e;
    }
    sum = gn_warp_sum(sum);
    float inv = 1.0f / sum;
    for (int j = lane; j < T; j += 32) r[j] = j <= i ? r[j] * inv : 0.0f;
}

// dS = P * (dP - rowsum(P * dP)) over j <= i, written over P
__global__ void causal_softmax_bwd_rows(float *P, const float *dP, int T) {
    const int lane = threadIdx.x & 31;
    const int64_t row = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (row >= T) return;
    const int i = (int)row;
    float *r = P + row * T;
    const float *d = dP + row * T;
    float dot = 0.0f;
    for (int j = lane; j <= i; j += 32) dot = fmaf(r[j], d[j], dot);
    dot = gn_warp_sum(dot);
    for (int j = lane; j < T; j += 32) r[j] = j <= i ? r[j] * (d[j] - dot) : 0.0f;
}

extern "C" size_t gn_cuda_train_attn_scratch(int T) { return (size_t)T * (size_t)T; }

extern "C" void gn_cuda_train_attn_fwd(float *o, float *P, const float *q, const float *k, const float *v, int T, int NH,
                                       int NKV, int hs) {
    if (T <= 0) return;
    const int grp = NH / NKV, qd = NH * hs, kvd = NKV * hs;
    const float scale = 1.0f / sqrtf((float)hs);
    const size_t TT = (size_t)T * T;
    for (int h = 0; h < NH; h++) {
        int g = h / grp;
        float *Ph = P + (size_t)h * TT;
        gn_cuda_sgemm(0, 1, T, T, hs, scale, q + (size_t)h * hs, qd, k + (size_t)g * hs, kvd, 0.0f, Ph, T);
    }
    const int64_t rows = (int64_t)NH * T; // 8 warps (rows) per block
    causal_softmax_rows<<<(unsigned)((rows + 7) / 8), 256, 0, gn_cuda_stream()>>>(P, T, rows);
    CUDA_LAUNCHED();
    for (int h = 0; h < NH; h++) {
        int g = h / grp;
        gn_cuda_sgemm(0, 0, T, hs, T, 1.0f, P + (size_t)h * TT, T, v + (size_t)g * hs, kvd, 0.0f, o + (size_t)h * hs, qd);
    }
}

extern "C" void gn_cuda_train_attn_bwd(float *dq, float *dk, float *dv, float *P, const float *q, const float *k,
                                       const float *v, const float *dO, int T, int NH, int NKV, int hs, float *scratch) {
    if (T <= 0) return;
    const int grp = NH / NKV, qd = NH * hs, kvd = NKV * hs;
    const float scale = 1.0f / sqrtf((float)hs);
    const size_t TT = (size_t)T * T;
    for (int h = 0; h < NH; h++) {
        const int g = h / grp;
        const float first = h % grp == 0 ? 0.0f : 1.0f; // the group's first head overwrites dk, dv
        float *Ph = P + (size_t)h * TT;
        const float *dOh = dO + (size_t)h * hs;
        // dV_g (+)= P_h^T dO_h
        gn_cuda_sgemm(1, 0, T, hs, T, 1.0f, Ph, T, dOh, qd, first, dv + (size_t)g * hs, kvd);
        // dP = dO_h V_g^T
        gn_cuda_sgemm(0, 1, T, T, hs, 1.0f, dOh, qd, v + (size_t)g * hs, kvd, 0.0f, scratch, T);
        causal_softmax_bwd_rows<<<(unsigned)((T + 7) / 8), 256, 0, gn_cuda_stream()>>>(Ph, scratch, T);
        CUDA_LAUNCHED();
        // dQ_h = scale dS K_g;  dK_g (+)= scale dS^T Q_h
        gn_cuda_sgemm(0, 0, T, hs, T, scale, Ph, T, k + (size_t)g * hs, kvd, 0.0f, dq + (size_t)h * hs, qd);
        gn_cuda_sgemm(1, 0, T, hs, T, scale, Ph, T, q + (size_t)h * hs, qd, first, dk + (size_t)g * hs, kvd);
    }
}
