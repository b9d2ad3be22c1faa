/*
 * attention.c — scaled dot-product attention over a KV cache, and the
 * vectorized exp/softmax it needs (and SwiGLU's silu, which uses the same exp).
 *
 * Two shapes of work reach it from the forward pass:
 *   decode  — one query row per session, long cache: gn_attn_partial_bf16 /
 *             _f32t score a group of query heads that share one KV head
 *             against a stretch of cache positions (keys tiled, 16 positions
 *             per 64-byte load) and return an unnormalized partial softmax
 *             (max, sum, weighted values), so a long cache can be split across
 *             threads and the parts merged (gn_attn_merge);
 *   prefill — many consecutive rows of one session: gn_attn_causal_rows runs
 *             the two dense products of a row block (scores = Q K^T, out = P V)
 *             through OpenBLAS sgemm, with the causal mask and softmax between.
 * Each has a plain scalar reference (_ref) that tests/test_attention.c compares
 * against on awkward shapes.
 */
#include "kernels.h"

#include <cblas.h>     // cblas_sgemm (OpenBLAS)
#include <immintrin.h> // AVX2 / AVX-512 intrinsics (only inside target() functions)
#include <math.h>      // expf, INFINITY

// ----------------------------------------------------------------------------
// exp: x = n ln2 + r with |r| <= ln2/2, exp(r) by its Taylor series to r^7
// (relative error below 1e-8 on that interval), then times 2^n.

#define EXP_HI 88.7228394f // ln(FLT_MAX): larger inputs give +inf
#define EXP_LO (-104.0f)   // below: exp underflows to 0 in float

__attribute__((target("avx512f")))
static inline __m512 exp16(__m512 x) {
    __mmask16 big = _mm512_cmp_ps_mask(x, _mm512_set1_ps(EXP_HI), _CMP_GT_OQ);
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(EXP_LO)), _mm512_set1_ps(EXP_HI));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187e-06f), r);
    __m512 p = _mm512_set1_ps(1.0f / 5040);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_scalef_ps(p, n); // p * 2^n, exact, with gradual underflow to 0
    return _mm512_mask_mov_ps(p, big, _mm512_set1_ps(INFINITY));
}

__attribute__((target("avx2,fma")))
static inline __m256 exp8(__m256 x) {
    __m256 big = _mm256_cmp_ps(x, _mm256_set1_ps(EXP_HI), _CMP_GT_OQ);
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(EXP_LO)), _mm256_set1_ps(EXP_HI));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145751953125f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428606765330187e-06f), r);
    __m256 p = _mm256_set1_ps(1.0f / 5040);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    // AVX2 has no scalef: 2^n as 2^a * 2^b with a = n/2, b = n - a, each a normal
    // float (n in [-150, 128]); the second product rounds once into denormals
    __m256i ni = _mm256_cvtps_epi32(n), a = _mm256_srai_epi32(ni, 1), b = _mm256_sub_epi32(ni, a);
    __m256 ea = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(a, _mm256_set1_epi32(127)), 23));
    __m256 eb = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(b, _mm256_set1_epi32(127)), 23));
    p = _mm256_mul_ps(_mm256_mul_ps(p, ea), eb);
    return _mm256_blendv_ps(p, _mm256_set1_ps(INFINITY), big);
}

// In place x[i] = exp(x[i] - mx); returns the sum (float accumulation in lanes).
__attribute__((target("avx512f")))
static float exp_sub_sum_avx512(float *x, int64_t n, float mx) {
    __m512 s = _mm512_setzero_ps(), m = _mm512_set1_ps(mx);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 e = exp16(_mm512_sub_ps(_mm512_loadu_ps(x + i), m));
        _mm512_storeu_ps(x + i, e);
        s = _mm512_add_ps(s, e);
    }
    if (i < n) {
        __mmask16 k = (__mmask16)((1u << (n - i)) - 1);
        __m512 e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + i), m));
        _mm512_mask_storeu_ps(x + i, k, e);
        s = _mm512_add_ps(s, _mm512_maskz_mov_ps(k, e));
    }
    return _mm512_reduce_add_ps(s);
}

__attribute__((target("avx512f")))
static float max_avx512(const float *x, int64_t n) {
    __m512 m = _mm512_set1_ps(-INFINITY);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) m = _mm512_max_ps(m, _mm512_loadu_ps(x + i));
    if (i < n) m = _mm512_mask_max_ps(m, (__mmask16)((1u << (n - i)) - 1), m, _mm512_maskz_loadu_ps((__mmask16)((1u << (n - i)) - 1), x + i));
    return _mm512_reduce_max_ps(m);
}

__attribute__((target("avx512f")))
static void scale_avx512(float *x, int64_t n, float a) {
    __m512 va = _mm512_set1_ps(a);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(x + i, _mm512_mul_ps(_mm512_loadu_ps(x + i), va));
    for (; i < n; i++) x[i] *= a;
}

__attribute__((target("avx2,fma")))
static float exp_sub_sum_avx2(float *x, int64_t n, float mx) {
    __m256 s = _mm256_setzero_ps(), m = _mm256_set1_ps(mx);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), m));
        _mm256_storeu_ps(x + i, e);
        s = _mm256_add_ps(s, e);
    }
    float t[8];
    _mm256_storeu_ps(t, s);
    float sum = ((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7]));
    for (; i < n; i++) { x[i] = expf(x[i] - mx); sum += x[i]; }
    return sum;
}

static float exp_sub_sum(float *x, int64_t n, float mx) {
    switch (gn_simd_level()) {
    case GN_SIMD_AVX512: return exp_sub_sum_avx512(x, n, mx);
    case GN_SIMD_AVX2: return exp_sub_sum_avx2(x, n, mx);
    default: {
        float s = 0.0f;
        for (int64_t i = 0; i < n; i++) { x[i] = expf(x[i] - mx); s += x[i]; }
        return s;
    }
    }
}

static float max_of(const float *x, int64_t n) {
    if (gn_simd_level() == GN_SIMD_AVX512) return max_avx512(x, n);
    float m = -INFINITY;
    for (int64_t i = 0; i < n; i++) if (x[i] > m) m = x[i];
    return m;
}

static void scale_by(float *x, int64_t n, float a) {
    if (gn_simd_level() == GN_SIMD_AVX512) { scale_avx512(x, n, a); return; }
    for (int64_t i = 0; i < n; i++) x[i] *= a;
}

void gn_softmax_ref(float *x, int64_t n) {
    if (n <= 0) return;
    float mx = x[0];
    for (int64_t i = 1; i < n; i++) if (x[i] > mx) mx = x[i];
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) { x[i] = expf(x[i] - mx); sum += x[i]; }
    float inv = (float)(1.0 / sum);
    for (int64_t i = 0; i < n; i++) x[i] *= inv;
}

void gn_softmax(float *x, int64_t n) {
    if (n <= 0) return;
    float mx = max_of(x, n);
    if (mx == -INFINITY) { gn_softmax_ref(x, n); return; } // all masked: the reference's NaNs
    float sum = exp_sub_sum(x, n, mx);
    scale_by(x, n, 1.0f / sum);
}

void gn_exp_inplace(float *x, int64_t n) { (void)exp_sub_sum(x, n, 0.0f); }

// SwiGLU's silu(x) * y in place of x: x / (1 + exp(-x)) * y, exp(-x) through the same
// vectorized exp (expf on the scalar path and for the AVX2 tail), 4096 values a task.
static inline float silu_mul1(float x, float y) { return x / (1.0f + expf(-x)) * y; }
__attribute__((target("avx512f")))
static void silu_mul_avx512(float *x, const float *y, int64_t n) {
    const __m512 one = _mm512_set1_ps(1.0f);
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        const __m512 xv = _mm512_maskz_loadu_ps(m, x + i);
        const __m512 e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), xv));
        _mm512_mask_storeu_ps(x + i, m, _mm512_mul_ps(_mm512_div_ps(xv, _mm512_add_ps(one, e)), _mm512_maskz_loadu_ps(m, y + i)));
    }
}

__attribute__((target("avx2,fma")))
static void silu_mul_avx2(float *x, const float *y, int64_t n) {
    const __m256 one = _mm256_set1_ps(1.0f);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 xv = _mm256_loadu_ps(x + i);
        const __m256 e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), xv));
        _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_div_ps(xv, _mm256_add_ps(one, e)), _mm256_loadu_ps(y + i)));
    }
    for (; i < n; i++) x[i] = silu_mul1(x[i], y[i]);
}

void gn_silu_mul(float *x, const float *y, int64_t n) {
    const gn_simd lv = gn_simd_level();
    #pragma omp parallel for schedule(static) if (n >= 65536)
    for (int64_t i0 = 0; i0 < n; i0 += 4096) {
        const int64_t m = n - i0 < 4096 ? n - i0 : 4096;
        if (lv == GN_SIMD_AVX512) silu_mul_avx512(x + i0, y + i0, m);
        else if (lv == GN_SIMD_AVX2) silu_mul_avx2(x + i0, y + i0, m);
        else for (int64_t i = i0; i < i0 + m; i++) x[i] = silu_mul1(x[i], y[i]);
    }
}

// ----------------------------------------------------------------------------
// decode: partial softmax of a group of heads over a stretch of the cache

// The scalar references: one body, keys and values row-major float32 (lay 0), tiled bf16 (1)
// or tiled float32 (2), the values tiled of the same dtype, vs their tile stride (so the tiled
// ones equal, bit for bit, the row-major one on the same values).
static inline float k_get(const void *k, int64_t ks, int64_t j, int64_t i, int hs, int lay) {
    if (lay == 0) return ((const float *)k)[j * ks + i];
    if (lay == 1) return gn_bf16_to_f32(((const uint16_t *)k)[gn_kt_at(j, 0, i, hs, ks)]);
    return ((const float *)k)[gn_kt_at_f32(j, 0, i, hs, ks)];
}

static void partial_ref(const float *q, int64_t qstride, int grp, const void *k, int64_t ks, const void *v, int64_t vs,
                        int j0, int n, int hs, float scale, float *sc, float *m, float *l, float *o, int lay) {
    for (int g = 0; g < grp; g++) {
        const float *qg = q + (int64_t)g * qstride;
        float *s = sc + (int64_t)g * n, *og = o + (int64_t)g * hs;
        float mx = -INFINITY;
        for (int j = 0; j < n; j++) {
            float d = 0.0f;
            for (int i = 0; i < hs; i++) d += qg[i] * k_get(k, ks, j0 + j, i, hs, lay);
            s[j] = d * scale;
            if (s[j] > mx) mx = s[j];
        }
        double sum = 0.0;
        for (int i = 0; i < hs; i++) og[i] = 0.0f;
        for (int j = 0; j < n; j++) {
            float p = expf(s[j] - mx);
            sum += p;
            const int64_t vj = lay == 0 ? (int64_t)(j0 + j) * vs : gn_vt_at(j0 + j, 0, 0, hs, vs);
            for (int i = 0; i < hs; i++)
                og[i] += p * (lay == 1 ? gn_bf16_to_f32(((const uint16_t *)v)[vj + i]) : ((const float *)v)[vj + i]);
        }
        m[g] = mx;
        l[g] = (float)sum;
    }
}

void gn_attn_partial_ref(const float *q, int64_t qstride, int grp, const float *k, const float *v, int64_t kvstride,
                         int n, int hs, float scale, float *sc, float *m, float *l, float *o) {
    partial_ref(q, qstride, grp, k, kvstride, v, kvstride, 0, n, hs, scale, sc, m, l, o, 0);
}

void gn_attn_partial_bf16_ref(const float *q, int64_t qstride, int grp, const uint16_t *kt, int64_t tile_stride,
                              const uint16_t *v, int64_t vtile_stride, int j0, int n, int hs, float scale, float *sc,
                              float *m, float *l, float *o) {
    partial_ref(q, qstride, grp, kt, tile_stride, v, vtile_stride, j0, n, hs, scale, sc, m, l, o, 1);
}

void gn_attn_partial_f32t_ref(const float *q, int64_t qstride, int grp, const float *kt, int64_t tile_stride,
                              const float *v, int64_t vtile_stride, int j0, int n, int hs, float scale, float *sc, float *m,
                              float *l, float *o) {
    partial_ref(q, qstride, grp, kt, tile_stride, v, vtile_stride, j0, n, hs, scale, sc, m, l, o, 2);
}

// ----------------------------------------------------------------------------
// Tiled keys (bf16 or float32 cache). Scores per tile of 16 positions: bf16 — one
// 64-byte load per pair of dims, the low halves of its 32-bit lanes dim d of the 16
// positions, the high halves dim d+1 (a bf16 is the top half of its float32: a shift
// and a mask widen them); float32 — one 64-byte load per dim. Each times the query's
// broadcast value into even/odd sums per head (up to four heads share the loads).
// Values: each row of V read once for all the heads, its (widened) chunks times each
// head's weight. The scores loop prefetches the keys and the values of the tile KT_AHEAD
// ahead (the cache comes from memory: the weights read since the last token have pushed it
// out of the caches), so the values loop reads from cache. Into L2 (prefetcht1): asked into
// L1, the lines in flight were fewer (Zen 4, a 7B layer's 32 heads x 512 positions from
// memory: 9.8 -> 13.3 GB/s on one core, 19.7 -> 21.5 on two). `bf` is a constant in each
// instantiation.

#define KT_AHEAD 2  // key tiles ahead
// The scores loop also fetches the values of the tile KT_AHEAD ahead: this head's 16 rows of
// hs values of es bytes, 16*es*hs contiguous bytes, the lines the key loop visits one per step
// (hs/2 steps for bf16, hs for float32: 32*hs resp. 64*hs bytes of lines): line i at byte 64*i.

// The first KT_AHEAD tiles' keys and values, asked for all at once before the loops
// (else each of their lines is a miss in turn).
static inline void prefetch_first_tiles(const void *kt, int64_t ts, const void *v, int64_t vs, int j0, int n, int hs,
                                        int bf) {
    const int es = bf ? 2 : 4, steps = bf ? hs / 2 : hs;
    for (int t = 0; t < KT_AHEAD && t * GN_KT < n; t++) {
        const char *kp = (const char *)kt + ((int64_t)(j0 / GN_KT + t) * ts) * es;
        const char *vt = (const char *)v + ((int64_t)(j0 / GN_KT + t) * vs) * es;
        for (int i = 0; i < steps; i++) {
            _mm_prefetch(kp + 64 * i, _MM_HINT_T1);
            _mm_prefetch(vt + 64 * i, _MM_HINT_T1);
        }
    }
}

__attribute__((target("avx512f,avx512bw,avx512vl"), always_inline))
static inline void scores_t_avx512(const float *q, int64_t qstride, const void *kt, int64_t ts, const void *v,
                                   int64_t vs, int j0, int n, int hs, float scale, float *sc, const int NG, const int bf) {
    const __m512i himask = _mm512_set1_epi32((int)0xffff0000u);
    const int es = bf ? 2 : 4;
    prefetch_first_tiles(kt, ts, v, vs, j0, n, hs, bf);
    for (int t = 0; t * GN_KT < n; t++) {
        const char *kp = (const char *)kt + ((int64_t)(j0 / GN_KT + t) * ts) * es;
        const char *vt = (const char *)v + ((int64_t)(j0 / GN_KT + t + KT_AHEAD) * vs) * es;
        __m512 e[4], od[4];
#pragma GCC unroll 4
        for (int g = 0; g < NG; g++) e[g] = od[g] = _mm512_setzero_ps();
        for (int dp = 0; dp < hs / 2; dp++) { // one pair of dims a step
            __m512 lo, hi;
            if (bf) {
                _mm_prefetch(kp + KT_AHEAD * ts * es + 64 * dp, _MM_HINT_T1);
                _mm_prefetch(vt + 64 * dp, _MM_HINT_T1);
                const __m512i x = _mm512_loadu_si512(kp + 64 * dp);
                lo = _mm512_castsi512_ps(_mm512_slli_epi32(x, 16));
                hi = _mm512_castsi512_ps(_mm512_and_si512(x, himask));
            } else {
                _mm_prefetch(kp + KT_AHEAD * ts * es + 128 * dp, _MM_HINT_T1);
                _mm_prefetch(kp + KT_AHEAD * ts * es + 128 * dp + 64, _MM_HINT_T1);
                _mm_prefetch(vt + 128 * dp, _MM_HINT_T1);
                _mm_prefetch(vt + 128 * dp + 64, _MM_HINT_T1);
                lo = _mm512_loadu_ps((const float *)(kp + 128 * dp));
                hi = _mm512_loadu_ps((const float *)(kp + 128 * dp + 64));
            }
#pragma GCC unroll 4
            for (int g = 0; g < NG; g++) {
                e[g] = _mm512_fmadd_ps(lo, _mm512_set1_ps(q[g * qstride + 2 * dp]), e[g]);
                od[g] = _mm512_fmadd_ps(hi, _mm512_set1_ps(q[g * qstride + 2 * dp + 1]), od[g]);
            }
        }
        const int left = n - t * GN_KT;
        const __mmask16 mk = left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
#pragma GCC unroll 4
        for (int g = 0; g < NG; g++)
            _mm512_mask_storeu_ps(sc + (int64_t)g * n + t * GN_KT, mk,
                                  _mm512_mul_ps(_mm512_add_ps(e[g], od[g]), _mm512_set1_ps(scale)));
    }
}

// 16 values of a V row at element i, as float32
__attribute__((target("avx512f,avx512bw,avx512vl"), always_inline))
static inline __m512 v_load16(const void *v, int64_t i, const int bf) {
    if (bf)
        return _mm512_castsi512_ps(
            _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)((const uint16_t *)v + i))), 16));
    return _mm512_loadu_ps((const float *)v + i);
}

// values for NG heads, NC chunks of 16 dims starting at dim c0 (weights in sc, g*n apart); v the
// stretch's first value tile, tiles vs elements apart
__attribute__((target("avx512f,avx512bw,avx512vl"), always_inline))
static inline void values_avx512(const float *sc, int n, const void *v, int64_t vs, int c0, int hs, float *o,
                                 const int NG, const int NC, const int bf) {
    __m512 acc[4][4];
#pragma GCC unroll 4
    for (int g = 0; g < NG; g++)
#pragma GCC unroll 4
        for (int c = 0; c < NC; c++) acc[g][c] = _mm512_setzero_ps();
    for (int j = 0; j < n; j++) {
        const int64_t vj = (int64_t)(j / GN_KT) * vs + (int64_t)(j % GN_KT) * hs + c0; // v at this stretch's first tile
#pragma GCC unroll 4
        for (int c = 0; c < NC; c++) {
            const __m512 x = v_load16(v, vj + 16 * c, bf);
#pragma GCC unroll 4
            for (int g = 0; g < NG; g++) acc[g][c] = _mm512_fmadd_ps(_mm512_set1_ps(sc[(int64_t)g * n + j]), x, acc[g][c]);
        }
    }
#pragma GCC unroll 4
    for (int g = 0; g < NG; g++)
#pragma GCC unroll 4
        for (int c = 0; c < NC; c++) _mm512_storeu_ps(o + (int64_t)g * hs + c0 + 16 * c, acc[g][c]);
}

__attribute__((target("avx512f,avx512bw,avx512vl"), always_inline))
static inline void partial_t_avx512_ng(const float *q, int64_t qstride, const void *kt, int64_t ts, const void *v,
                                       int64_t vs, int j0, int n, int hs, float scale, float *sc, float *m, float *l,
                                       float *o, const int NG, const int bf) {
    scores_t_avx512(q, qstride, kt, ts, v, vs, j0, n, hs, scale, sc, NG, bf);
    for (int g = 0; g < NG; g++) {
        float *s = sc + (int64_t)g * n;
        m[g] = n ? max_avx512(s, n) : -INFINITY;
        l[g] = n ? exp_sub_sum_avx512(s, n, m[g]) : 0.0f;
    }
    const void *v0 = (const char *)v + ((int64_t)(j0 / GN_KT) * vs) * (bf ? 2 : 4);
    int c0 = 0;
    for (; c0 + 64 <= hs; c0 += 64) values_avx512(sc, n, v0, vs, c0, hs, o, NG, 4, bf);
    for (; c0 < hs; c0 += 16) values_avx512(sc, n, v0, vs, c0, hs, o, NG, 1, bf);
}

// heads four at a time: 16 sums in registers
#define T_AVX512_GROUPS(BF)                                                                                          \
    for (int g0 = 0; g0 < grp; g0 += 4) {                                                                           \
        const float *qg = q + (int64_t)g0 * qstride;                                                                \
        float *scg = sc + (int64_t)g0 * n, *og = o + (int64_t)g0 * hs;                                              \
        switch (grp - g0 < 4 ? grp - g0 : 4) {                                                                      \
        case 1: partial_t_avx512_ng(qg, qstride, kt, ts, v, vs, j0, n, hs, scale, scg, m + g0, l + g0, og, 1, BF); break; \
        case 2: partial_t_avx512_ng(qg, qstride, kt, ts, v, vs, j0, n, hs, scale, scg, m + g0, l + g0, og, 2, BF); break; \
        case 3: partial_t_avx512_ng(qg, qstride, kt, ts, v, vs, j0, n, hs, scale, scg, m + g0, l + g0, og, 3, BF); break; \
        default: partial_t_avx512_ng(qg, qstride, kt, ts, v, vs, j0, n, hs, scale, scg, m + g0, l + g0, og, 4, BF); break; \
        }                                                                                                           \
    }

__attribute__((target("avx512f,avx512bw,avx512vl")))
static void partial_t_avx512(const float *q, int64_t qstride, int grp, const void *kt, int64_t ts, const void *v,
                             int64_t vs, int j0, int n, int hs, float scale, float *sc, float *m, float *l, float *o,
                             int bf) {
    if (bf) { T_AVX512_GROUPS(1) }
    else { T_AVX512_GROUPS(0) }
}
#undef T_AVX512_GROUPS

// AVX2: the same, a tile as two halves of 8 positions, two heads at a time (16 registers)
__attribute__((target("avx2,fma"), always_inline))
static inline void partial_t_avx2_ng(const float *q, int64_t qstride, const void *kt, int64_t ts, const void *v,
                                     int64_t vs, int j0, int n, int hs, float scale, float *sc, float *m, float *l,
                                     float *o, const int NG, const int bf) {
    const __m256i himask = _mm256_set1_epi32((int)0xffff0000u);
    const int es = bf ? 2 : 4;
    prefetch_first_tiles(kt, ts, v, vs, j0, n, hs, bf);
    for (int t = 0; t * GN_KT < n; t++) {
        const char *kp = (const char *)kt + ((int64_t)(j0 / GN_KT + t) * ts) * es;
        const char *vt = (const char *)v + ((int64_t)(j0 / GN_KT + t + KT_AHEAD) * vs) * es;
        __m256 e[2][2], od[2][2];
#pragma GCC unroll 4
        for (int g = 0; g < NG; g++) e[g][0] = e[g][1] = od[g][0] = od[g][1] = _mm256_setzero_ps();
        for (int dp = 0; dp < hs / 2; dp++) {
            for (int r = 0; r < es / 2; r++) { // the key lines of this step (one bf16 pair row, two float32 rows)
                _mm_prefetch(kp + KT_AHEAD * ts * es + 64 * ((es / 2) * dp + r), _MM_HINT_T1);
                _mm_prefetch(vt + 64 * ((es / 2) * dp + r), _MM_HINT_T1);
            }
#pragma GCC unroll 4
            for (int h = 0; h < 2; h++) {
                __m256 lo, hi;
                if (bf) {
                    const __m256i x = _mm256_loadu_si256((const __m256i *)(kp + 64 * dp + 32 * h));
                    lo = _mm256_castsi256_ps(_mm256_slli_epi32(x, 16));
                    hi = _mm256_castsi256_ps(_mm256_and_si256(x, himask));
                } else {
                    lo = _mm256_loadu_ps((const float *)(kp + 128 * dp + 32 * h));
                    hi = _mm256_loadu_ps((const float *)(kp + 128 * dp + 64 + 32 * h));
                }
#pragma GCC unroll 4
                for (int g = 0; g < NG; g++) {
                    e[g][h] = _mm256_fmadd_ps(lo, _mm256_set1_ps(q[g * qstride + 2 * dp]), e[g][h]);
                    od[g][h] = _mm256_fmadd_ps(hi, _mm256_set1_ps(q[g * qstride + 2 * dp + 1]), od[g][h]);
                }
            }
        }
        float tmp[GN_KT];
        const int left = n - t * GN_KT < GN_KT ? n - t * GN_KT : GN_KT;
        for (int g = 0; g < NG; g++) {
#pragma GCC unroll 4
            for (int h = 0; h < 2; h++)
                _mm256_storeu_ps(tmp + 8 * h, _mm256_mul_ps(_mm256_add_ps(e[g][h], od[g][h]), _mm256_set1_ps(scale)));
            memcpy(sc + (int64_t)g * n + t * GN_KT, tmp, sizeof(float) * (size_t)left);
        }
    }
    for (int g = 0; g < NG; g++) {
        float *s = sc + (int64_t)g * n;
        float mx = -INFINITY;
        for (int j = 0; j < n; j++) if (s[j] > mx) mx = s[j];
        m[g] = mx;
        l[g] = n ? exp_sub_sum_avx2(s, n, mx) : 0.0f;
    }
    for (int c0 = 0; c0 < hs; c0 += 32) { // 32 dims (four registers) per head and pass
        const int nc = hs - c0 < 32 ? (hs - c0) / 8 : 4;
        __m256 acc[2][4];
#pragma GCC unroll 4
        for (int g = 0; g < NG; g++)
#pragma GCC unroll 4
            for (int c = 0; c < 4; c++) acc[g][c] = _mm256_setzero_ps();
        for (int j = 0; j < n; j++) {
            const int64_t vj = gn_vt_at(j0 + j, 0, c0, hs, vs);
#pragma GCC unroll 4
            for (int c = 0; c < nc; c++) {
                const __m256 x = bf ? _mm256_castsi256_ps(_mm256_slli_epi32(
                                          _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const uint16_t *)v + vj + 8 * c))), 16))
                                    : _mm256_loadu_ps((const float *)v + vj + 8 * c);
#pragma GCC unroll 4
                for (int g = 0; g < NG; g++) acc[g][c] = _mm256_fmadd_ps(_mm256_set1_ps(sc[(int64_t)g * n + j]), x, acc[g][c]);
            }
        }
#pragma GCC unroll 4
        for (int g = 0; g < NG; g++)
#pragma GCC unroll 4
            for (int c = 0; c < nc; c++) _mm256_storeu_ps(o + (int64_t)g * hs + c0 + 8 * c, acc[g][c]);
    }
}

__attribute__((target("avx2,fma")))
static void partial_t_avx2(const float *q, int64_t qstride, int grp, const void *kt, int64_t ts, const void *v,
                           int64_t vs, int j0, int n, int hs, float scale, float *sc, float *m, float *l, float *o, int bf) {
    for (int g0 = 0; g0 < grp; g0 += 2) {
        const float *qg = q + (int64_t)g0 * qstride;
        float *scg = sc + (int64_t)g0 * n, *og = o + (int64_t)g0 * hs;
        const int two = grp - g0 >= 2;
        if (bf && two) partial_t_avx2_ng(qg, qstride, kt, ts, v, vs, j0, n, hs, scale, scg, m + g0, l + g0, og, 2, 1);
        else if (bf) partial_t_avx2_ng(qg, qstride, kt, ts, v, vs, j0, n, hs, scale, scg, m + g0, l + g0, og, 1, 1);
        else if (two) partial_t_avx2_ng(qg, qstride, kt, ts, v, vs, j0, n, hs, scale, scg, m + g0, l + g0, og, 2, 0);
        else partial_t_avx2_ng(qg, qstride, kt, ts, v, vs, j0, n, hs, scale, scg, m + g0, l + g0, og, 1, 0);
    }
}

static void partial_t_any(const float *q, int64_t qstride, int grp, const void *kt, int64_t ts, const void *v,
                          int64_t vs, int j0, int n, int hs, float scale, float *sc, float *m, float *l, float *o, int bf) {
    GN_ASSERT(j0 % GN_KT == 0 && n >= 0);
    gn_simd lv = gn_simd_level();
    if (lv == GN_SIMD_AVX512 && hs % 16 == 0 && hs > 0) partial_t_avx512(q, qstride, grp, kt, ts, v, vs, j0, n, hs, scale, sc, m, l, o, bf);
    else if (lv >= GN_SIMD_AVX2 && hs % 8 == 0 && hs > 0) partial_t_avx2(q, qstride, grp, kt, ts, v, vs, j0, n, hs, scale, sc, m, l, o, bf);
    else if (bf) gn_attn_partial_bf16_ref(q, qstride, grp, kt, ts, v, vs, j0, n, hs, scale, sc, m, l, o);
    else gn_attn_partial_f32t_ref(q, qstride, grp, kt, ts, v, vs, j0, n, hs, scale, sc, m, l, o);
}

void gn_attn_partial_bf16(const float *q, int64_t qstride, int grp, const uint16_t *kt, int64_t tile_stride,
                          const uint16_t *v, int64_t vtile_stride, int j0, int n, int hs, float scale, float *sc, float *m,
                          float *l, float *o) {
    partial_t_any(q, qstride, grp, kt, tile_stride, v, vtile_stride, j0, n, hs, scale, sc, m, l, o, 1);
}

void gn_attn_partial_f32t(const float *q, int64_t qstride, int grp, const float *kt, int64_t tile_stride,
                          const float *v, int64_t vtile_stride, int j0, int n, int hs, float scale, float *sc, float *m,
                          float *l, float *o) {
    partial_t_any(q, qstride, grp, kt, tile_stride, v, vtile_stride, j0, n, hs, scale, sc, m, l, o, 0);
}

void gn_attn_merge(int nparts, const float *m, const float *l, const float *o, int64_t part_stride, int hs, float *out) {
    float mx = -INFINITY;
    for (int p = 0; p < nparts; p++) if (m[p * part_stride] > mx) mx = m[p * part_stride];
    double den = 0.0;
    for (int i = 0; i < hs; i++) out[i] = 0.0f;
    for (int p = 0; p < nparts; p++) {
        if (l[p * part_stride] == 0.0f) continue; // an empty stretch
        float w = expf(m[p * part_stride] - mx);
        den += (double)w * l[p * part_stride];
        const float *op = o + (int64_t)p * part_stride * hs;
        for (int i = 0; i < hs; i++) out[i] += w * op[i];
    }
    float inv = den > 0.0 ? (float)(1.0 / den) : 0.0f;
    for (int i = 0; i < hs; i++) out[i] *= inv;
}

// ----------------------------------------------------------------------------
// prefill: a block of consecutive query rows of one head, dense products

void gn_attn_causal_rows_ref(float *out, int64_t ostride, const float *q, int64_t qstride, const float *k,
                             const float *v, int64_t kvstride, int nrows, int pos0, int hs, float scale) {
    for (int i = 0; i < nrows; i++) {
        int n = pos0 + i + 1;
        float *s = gn_malloc(sizeof(float) * (size_t)n), mo[1], lo[1];
        gn_attn_partial_ref(q + (int64_t)i * qstride, 0, 1, k, v, kvstride, n, hs, scale, s, mo, lo, out + (int64_t)i * ostride);
        for (int c = 0; c < hs; c++) out[(int64_t)i * ostride + c] /= lo[0];
        free(s);
    }
}

void gn_attn_causal_rows(float *out, int64_t ostride, const float *q, int64_t qstride, const float *k, const float *v,
                         int64_t kvstride, int nrows, int pos0, int hs, float scale, float *S, int64_t sstride) {
    if (nrows <= 0) return;
    const int n = pos0 + nrows;
    if (hs <= 0) return;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nrows, n, hs, scale, q, (int)qstride, k, (int)kvstride, 0.0f, S,
                (int)sstride);
    for (int i = 0; i < nrows; i++) {
        float *row = S + (int64_t)i * sstride;
        int valid = pos0 + i + 1;
        gn_softmax(row, valid);
        memset(row + valid, 0, sizeof(float) * (size_t)(n - valid));
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nrows, hs, n, 1.0f, S, (int)sstride, v, (int)kvstride, 0.0f,
                out, (int)ostride);
}
