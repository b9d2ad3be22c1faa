// ops.cu — row and elementwise kernels: RMSNorm (and backward), RoPE, SwiGLU
// (and backward), residual add, embedding rows, conversions, sum of squares,
// cross-entropy with its gradient, LoRA dropout, and the paged AdamW step.
#include "common.cuh"

#include <math.h>

// ---------------------------------------------------------------------------
// RMSNorm: sums in double and each rounding spelled out, as kernels_cpu.c

__global__ void rmsnorm_kernel(float *out, const float *x, const float *w, int C, float eps) {
    __shared__ double sh[32];
    const float *xr = x + (int64_t)blockIdx.x * C;
    float *o = out + (int64_t)blockIdx.x * C;
    double ss = 0.0;
    for (int i = threadIdx.x; i < C; i += blockDim.x) ss += (double)xr[i] * xr[i];
    ss = gn_block_sum(ss, sh);
    float r = __fdiv_rn(1.0f, __fsqrt_rn(__fadd_rn((float)(ss / (double)C), eps)));
    for (int i = threadIdx.x; i < C; i += blockDim.x) o[i] = __fmul_rn(w[i], __fmul_rn(xr[i], r));
}

extern "C" void gn_cuda_rmsnorm(float *out, const float *x, const float *w, int T, int C, float eps) {
    if (T <= 0 || C <= 0) return;
    rmsnorm_kernel<<<T, 256, 0, gn_cuda_stream()>>>(out, x, w, C, eps);
    CUDA_LAUNCHED();
}

__global__ void rmsnorm_bwd_kernel(float *dx, const float *dy, const float *x, const float *w, int C, float eps,
                                   int accumulate) {
    __shared__ double sh[32];
    const int64_t off = (int64_t)blockIdx.x * C;
    const float *xr = x + off, *dr = dy + off;
    float *o = dx + off;
    double ss = 0.0, dot = 0.0;
    for (int i = threadIdx.x; i < C; i += blockDim.x) {
        ss += (double)xr[i] * xr[i];
        dot += (double)w[i] * dr[i] * xr[i];
    }
    ss = gn_block_sum(ss, sh);
    dot = gn_block_sum(dot, sh);
    float rstd = 1.0f / sqrtf((float)(ss / C) + eps);
    float coef = (float)(dot / C) * rstd * rstd * rstd;
    for (int i = threadIdx.x; i < C; i += blockDim.x) {
        float g = rstd * w[i] * dr[i] - xr[i] * coef;
        o[i] = accumulate ? o[i] + g : g;
    }
}

extern "C" void gn_cuda_rmsnorm_bwd(float *dx, const float *dy, const float *x, const float *w, int T, int C, float eps,
                                    int accumulate) {
    if (T <= 0 || C <= 0) return;
    rmsnorm_bwd_kernel<<<T, 256, 0, gn_cuda_stream()>>>(dx, dy, x, w, C, eps, accumulate);
    CUDA_LAUNCHED();
}

// ---------------------------------------------------------------------------
// RoPE: one thread per rotated pair

__global__ void rope_kernel(float *x, int T, int n_heads, int hs, int64_t stride, int half, int interleaved,
                            const float *inv_freq, int pos0, float sign) {
    int64_t n = (int64_t)T * n_heads * half;
    for (int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; idx < n; idx += (int64_t)gridDim.x * blockDim.x) {
        int i = (int)(idx % half);
        int64_t th = idx / half;
        int h = (int)(th % n_heads), t = (int)(th / n_heads);
        float ang = __fmul_rn((float)(pos0 + t), inv_freq[i]);
        float cs = cosf(ang), sg = sign * sinf(ang);
        float *v = x + (int64_t)t * stride + (int64_t)h * hs;
        int ia = interleaved ? 2 * i : i, ib = interleaved ? 2 * i + 1 : i + half;
        float a = v[ia], b = v[ib];
        v[ia] = __fsub_rn(__fmul_rn(a, cs), __fmul_rn(b, sg));
        v[ib] = __fadd_rn(__fmul_rn(a, sg), __fmul_rn(b, cs));
    }
}

extern "C" void gn_cuda_rope(float *x, int T, int n_heads, int hs, int64_t stride, int n_rot, int interleaved,
                             const float *inv_freq, int pos0, float sign) {
    int half = n_rot / 2;
    int64_t n = (int64_t)T * n_heads * half;
    if (n <= 0) return;
    rope_kernel<<<gn_blocks(n, 256), 256, 0, gn_cuda_stream()>>>(x, T, n_heads, hs, stride, half, interleaved, inv_freq,
                                                                  pos0, sign);
    CUDA_LAUNCHED();
}

// ---------------------------------------------------------------------------
// elementwise

#define GRID_STRIDE(i, n) \
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (int64_t)gridDim.x * blockDim.x)

__global__ void silu_mul_kernel(float *h, const float *g, const float *u, int64_t n) {
    GRID_STRIDE(i, n) {
        float v = g[i];
        h[i] = v / (1.0f + expf(-v)) * u[i];
    }
}

extern "C" void gn_cuda_silu_mul(float *h, const float *g, const float *u, int64_t n) {
    if (n <= 0) return;
    silu_mul_kernel<<<gn_blocks(n, 256), 256, 0, gn_cuda_stream()>>>(h, g, u, n);
    CUDA_LAUNCHED();
}

__global__ void swiglu_bwd_kernel(float *dg, float *du, const float *dh, const float *g, const float *u, int64_t n) {
    GRID_STRIDE(i, n) {
        float gv = g[i], sg = 1.0f / (1.0f + expf(-gv)), d = dh[i], uv = u[i];
        du[i] = d * (gv * sg);
        dg[i] = d * uv * sg * (1.0f + gv * (1.0f - sg));
    }
}

extern "C" void gn_cuda_swiglu_bwd(float *dg, float *du, const float *dh, const float *g, const float *u, int64_t n) {
    if (n <= 0) return;
    swiglu_bwd_kernel<<<gn_blocks(n, 256), 256, 0, gn_cuda_stream()>>>(dg, du, dh, g, u, n);
    CUDA_LAUNCHED();
}

__global__ void add_kernel(float *y, const float *x, int64_t n) {
    GRID_STRIDE(i, n) y[i] += x[i];
}

extern "C" void gn_cuda_add(float *y, const float *x, int64_t n) {
    if (n <= 0) return;
    add_kernel<<<gn_blocks(n, 256), 256, 0, gn_cuda_stream()>>>(y, x, n);
    CUDA_LAUNCHED();
}

__global__ void embed_kernel(float *out, const void *table, int bf16, int64_t C, const int32_t *ids) {
    const int64_t row = ids[blockIdx.y];
    float *o = out + (int64_t)blockIdx.y * C;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < C; i += (int64_t)gridDim.x * blockDim.x)
        o[i] = bf16 ? gn_bf16_bits_to_f32(((const uint16_t *)table)[row * C + i]) : ((const float *)table)[row * C + i];
}

extern "C" void gn_cuda_embed(float *out, const void *table, gn_dtype dtype, int64_t C, const int32_t *ids, int T) {
    if (T <= 0 || C <= 0) return;
    GN_ASSERT(dtype == GN_DTYPE_F32 || dtype == GN_DTYPE_BF16);
    dim3 grid((unsigned)((C + 255) / 256 < 64 ? (C + 255) / 256 : 64), (unsigned)T);
    embed_kernel<<<grid, 256, 0, gn_cuda_stream()>>>(out, table, dtype == GN_DTYPE_BF16, C, ids);
    CUDA_LAUNCHED();
}

__global__ void f32_to_bf16_kernel(__nv_bfloat16 *dst, const float *src, int64_t n) {
    GRID_STRIDE(i, n) dst[i] = __float2bfloat16_rn(src[i]);
}
__global__ void bf16_to_f32_kernel(float *dst, const uint16_t *src, int64_t n) {
    GRID_STRIDE(i, n) dst[i] = gn_bf16_bits_to_f32(src[i]);
}

extern "C" void gn_cuda_f32_to_bf16(uint16_t *dst, const float *src, int64_t n) {
    if (n <= 0) return;
    f32_to_bf16_kernel<<<gn_blocks(n, 256), 256, 0, gn_cuda_stream()>>>((__nv_bfloat16 *)dst, src, n);
    CUDA_LAUNCHED();
}

extern "C" void gn_cuda_bf16_to_f32(float *dst, const uint16_t *src, int64_t n) {
    if (n <= 0) return;
    bf16_to_f32_kernel<<<gn_blocks(n, 256), 256, 0, gn_cuda_stream()>>>(dst, src, n);
    CUDA_LAUNCHED();
}

__global__ void sumsq_kernel(double *acc, const float *x, int64_t n) {
    __shared__ double sh[32];
    double s = 0.0;
    GRID_STRIDE(i, n) s += (double)x[i] * x[i];
    s = gn_block_sum(s, sh);
    if (threadIdx.x == 0) atomicAdd(acc, s);
}

extern "C" double gn_cuda_sumsq(const float *x, int64_t n) {
    static double *d_acc;
    if (!d_acc) CUDA_CHECK(cudaMalloc(&d_acc, sizeof(double)));
    double r = 0.0;
    gn_cuda_memset0(d_acc, sizeof(double));
    if (n > 0) {
        unsigned nb = gn_blocks(n, 256);
        if (nb > 1024) nb = 1024;
        sumsq_kernel<<<nb, 256, 0, gn_cuda_stream()>>>(d_acc, x, n);
        CUDA_LAUNCHED();
    }
    gn_cuda_download(&r, d_acc, sizeof(double));
    return r;
}

// ---------------------------------------------------------------------------
// cross-entropy: one block per row

__global__ void cross_entropy_kernel(float *loss, float *dlogits, const float *logits, const int32_t *y, int V,
                                     float weight) {
    __shared__ double shd[32];
    __shared__ float shf[32];
    const int64_t off = (int64_t)blockIdx.x * V;
    const float *lg = logits + off;
    const int32_t label = y[blockIdx.x];
    if (label < 0 || label >= V) { // no loss on this row
        if (threadIdx.x == 0) loss[blockIdx.x] = 0.0f;
        if (dlogits)
            for (int j = threadIdx.x; j < V; j += blockDim.x) dlogits[off + j] = 0.0f;
        return;
    }
    const float ly = lg[label]; // read before any thread overwrites the row (dlogits may alias)
    float mx = -INFINITY;
    for (int j = threadIdx.x; j < V; j += blockDim.x) mx = fmaxf(mx, lg[j]);
    mx = gn_block_max(mx, shf);
    double se = 0.0;
    for (int j = threadIdx.x; j < V; j += blockDim.x) se += (double)expf(lg[j] - mx);
    se = gn_block_sum(se, shd);
    if (threadIdx.x == 0) loss[blockIdx.x] = (float)(log(se) + (double)mx - (double)ly);
    if (dlogits) {
        __syncthreads(); // every thread has read its logits (and ly is in registers) before the row is overwritten
        float sc = (float)((double)weight / se);
        for (int j = threadIdx.x; j < V; j += blockDim.x) {
            float p = expf(lg[j] - mx) * sc;
            dlogits[off + j] = j == label ? p - weight : p;
        }
    }
}

extern "C" void gn_cuda_cross_entropy(float *loss, float *dlogits, const float *logits, const int32_t *y, int n, int V,
                                      float weight) {
    if (n <= 0 || V <= 0) return;
    cross_entropy_kernel<<<n, 512, 0, gn_cuda_stream()>>>(loss, dlogits, logits, y, V, weight);
    CUDA_LAUNCHED();
}

// ---------------------------------------------------------------------------
// LoRA dropout: train.c's keep_scale, element by element

__device__ __forceinline__ uint64_t mix64(uint64_t z) {
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

__global__ void dropout_kernel(float *dst, const float *src, int64_t n, uint64_t base, float p, float keep,
                               int accumulate) {
    GRID_STRIDE(i, n) {
        float u = (float)(mix64(base ^ (uint64_t)i) >> 40) / 16777216.0f;
        float v = __fmul_rn(src[i], u < p ? 0.0f : keep);
        dst[i] = accumulate ? __fadd_rn(dst[i], v) : v; // two roundings, as the CPU (no FMA)
    }
}

extern "C" void gn_cuda_dropout(float *dst, const float *src, int64_t n, uint64_t base, float p, int accumulate) {
    if (n <= 0) return;
    dropout_kernel<<<gn_blocks(n, 256), 256, 0, gn_cuda_stream()>>>(dst, src, n, base, p, 1.0f / (1.0f - p), accumulate);
    CUDA_LAUNCHED();
}

// ---------------------------------------------------------------------------
// AdamW, state streamed from host memory

__global__ void adamw_kernel(float *p, const float *g, float *m, float *v, int64_t n, float lr, float b1, float b2,
                             float eps, float wd, float step_size, float c2, float clip, int bf16_params) {
    GRID_STRIDE(i, n) {
        float gi = __fmul_rn(g[i], clip);
        float mm = __fadd_rn(__fmul_rn(b1, m[i]), __fmul_rn(__fsub_rn(1.0f, b1), gi));
        float vv = __fadd_rn(__fmul_rn(b2, v[i]), __fmul_rn(__fmul_rn(__fsub_rn(1.0f, b2), gi), gi));
        m[i] = mm;
        v[i] = vv;
        float pi = p[i];
        if (wd > 0) pi = __fmul_rn(pi, __fsub_rn(1.0f, __fmul_rn(lr, wd)));
        pi = __fsub_rn(pi, __fdiv_rn(__fmul_rn(step_size, mm), __fadd_rn(__fdiv_rn(__fsqrt_rn(vv), c2), eps)));
        p[i] = bf16_params ? gn_round_to(pi, GN_DTYPE_BF16) : pi;
    }
}

extern "C" gn_status gn_cuda_adamw_paged(float *p, const float *g, float *m_host, float *v_host, size_t n, float lr,
                                         float b1, float b2, float eps, float wd, int64_t step, float clip,
                                         int bf16_params, size_t max_chunk) {
    if (n == 0) return GN_OK;
    // the same host arithmetic as gn_trainer_step
    float c1 = 1.0f - powf(b1, (float)step), c2 = sqrtf(1.0f - powf(b2, (float)step));
    float step_size = lr / c1;
    // two lanes (stream + m/v staging each): lane k's copies overlap lane 1-k's update
    static cudaStream_t lane[2];
    if (!lane[0])
        for (int k = 0; k < 2; k++) CUDA_CHECK(cudaStreamCreateWithFlags(&lane[k], cudaStreamNonBlocking));
    size_t budget = gn_cuda_mem_free() / 4; // never more than a quarter of what is free
    size_t chunk = budget / (4 * sizeof(float)); // 2 lanes x (m, v)
    // the room test looks at what the device has, before the caller's cap (a small cap is fine)
    if (chunk < 1024 && chunk < n)
        return gn_err(GN_ERR_OOM, "AdamW: no room on the device even for a 1024-parameter chunk of the optimizer state "
                      "(%zu bytes free)", gn_cuda_mem_free());
    if (max_chunk && chunk > max_chunk) chunk = max_chunk;
    if (chunk > n) chunk = n;
    float *stage = (float *)gn_cuda_malloc(4 * chunk * sizeof(float), "the AdamW state chunks");
    if (!stage) return GN_ERR_OOM;
    cudaEvent_t ready, done[2];
    CUDA_CHECK(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming));
    for (int k = 0; k < 2; k++) CUDA_CHECK(cudaEventCreateWithFlags(&done[k], cudaEventDisableTiming));
    // p and g come from work queued on the library stream
    CUDA_CHECK(cudaEventRecord(ready, gn_cuda_stream()));
    for (int k = 0; k < 2; k++) CUDA_CHECK(cudaStreamWaitEvent(lane[k], ready, 0));
    size_t nch = (n + chunk - 1) / chunk;
    for (size_t c = 0; c < nch; c++) {
        int k = (int)(c & 1);
        size_t i0 = c * chunk, len = n - i0 < chunk ? n - i0 : chunk;
        float *dm = stage + (size_t)k * 2 * chunk, *dv = dm + chunk;
        cudaStream_t s = lane[k];
        CUDA_CHECK(cudaMemcpyAsync(dm, m_host + i0, len * sizeof(float), cudaMemcpyHostToDevice, s));
        CUDA_CHECK(cudaMemcpyAsync(dv, v_host + i0, len * sizeof(float), cudaMemcpyHostToDevice, s));
        unsigned nb = gn_blocks((int64_t)len, 256);
        adamw_kernel<<<nb, 256, 0, s>>>(p + i0, g + i0, dm, dv, (int64_t)len, lr, b1, b2, eps, wd, step_size, c2, clip,
                                        bf16_params);
        CUDA_LAUNCHED();
        CUDA_CHECK(cudaMemcpyAsync(m_host + i0, dm, len * sizeof(float), cudaMemcpyDeviceToHost, s));
        CUDA_CHECK(cudaMemcpyAsync(v_host + i0, dv, len * sizeof(float), cudaMemcpyDeviceToHost, s));
    }
    for (int k = 0; k < 2; k++) {
        CUDA_CHECK(cudaEventRecord(done[k], lane[k]));
        CUDA_CHECK(cudaStreamWaitEvent(gn_cuda_stream(), done[k], 0));
        CUDA_CHECK(cudaStreamSynchronize(lane[k])); // m_host, v_host are written back when we return
    }
    CUDA_CHECK(cudaEventDestroy(ready));
    for (int k = 0; k < 2; k++) CUDA_CHECK(cudaEventDestroy(done[k]));
    gn_cuda_free(stage);
    return GN_OK;
}
