/*
 * kernels_cpu.c — CPU kernels: dot products (scalar / AVX2 / AVX-512, picked at
 * run time), the weight-times-activation matmul used by every linear layer,
 * RMSNorm, SiLU-gate and softmax.
 *
 * The matmul takes two routes: with T > 1 and f32 weights it calls OpenBLAS
 * sgemm (prefill); bf16 and ggml-block weights with T >= 8 are widened to f32 a tile of
 * rows at a time for sgemm; otherwise (decode) each thread takes a block of output
 * rows and runs the dispatched dot product against every token.
 */
#include "kernels.h"

#include <math.h>      // sqrtf, expf
#include <stdlib.h>    // getenv
#include <unistd.h>    // sysconf: cache sizes
#include <cblas.h>     // cblas_sgemm (OpenBLAS)
#include <immintrin.h> // AVX2 / AVX-512 intrinsics (used only inside target() functions)

// ----------------------------------------------------------------------------
// dispatch

static int simd_level = -1;

static gn_simd detect(void) {
    __builtin_cpu_init();
    gn_simd best = GN_SIMD_SCALAR;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) best = GN_SIMD_AVX2;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl")) best = GN_SIMD_AVX512;
    const char *e = getenv("GN_SIMD");
    if (e) {
        gn_simd want = best;
        if (!strcmp(e, "scalar")) want = GN_SIMD_SCALAR;
        else if (!strcmp(e, "avx2")) want = GN_SIMD_AVX2;
        else if (!strcmp(e, "avx512") || !strcmp(e, "amx")) want = GN_SIMD_AVX512; // amx: the tiles too (gn_amx_mode)
        if (want < best) best = want;
    }
    return best;
}

gn_simd gn_simd_level(void) {
    if (simd_level < 0) simd_level = (int)detect();
    return (gn_simd)simd_level;
}

void gn_simd_force(gn_simd level) {
    gn_simd cpu = detect();
    simd_level = (int)(level < cpu ? level : cpu);
}

// The L2 cache of one core (sysconf: glibc reads it from CPUID), 1 MiB where unknown; the
// blockings below it (gemm_bf16.c, nf4_kernels.c) size what they keep in L2 from it
int64_t gn_cpu_l2_bytes(void) {
    static int64_t l2 = -1;
    if (l2 < 0) {
        long v = sysconf(_SC_LEVEL2_CACHE_SIZE);
        l2 = v >= (64 << 10) && v <= (64L << 20) ? v : (1 << 20);
    }
    return l2;
}

const char *gn_simd_name(void) {
    switch (gn_simd_level()) {
    case GN_SIMD_AVX512: // without AVX512_BF16 (or GN_NF4_NO_BF16DOT=1): the 4-bit products' integer kernels
        if (!gn_bf16_gemm_available()) return "avx512-nobf16";
        return gn_amx_mode() == 1 ? "avx512+amx" : gn_amx_mode() == 2 ? "avx512+amx(emulated)" : "avx512";
    case GN_SIMD_AVX2: return "avx2";
    default: return "scalar";
    }
}

// ----------------------------------------------------------------------------
// dot products: scalar references

float gn_dot_f32_ref(const float *a, const float *b, int64_t n) {
    float s = 0.0f;
    for (int64_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

float gn_dot_bf16_f32_ref(const uint16_t *w, const float *x, int64_t n) {
    float s = 0.0f;
    for (int64_t i = 0; i < n; i++) s += gn_bf16_to_f32(w[i]) * x[i];
    return s;
}

// ggml's blocks of 32 weights along a row, each value computed as ggml's dequantizer does:
//   Q4_0: f16 d, 16 bytes of nibbles (low nibbles weights 0-15, high 16-31); (q - 8) * d
//   Q4_1: f16 d, f16 m, 16 bytes of nibbles;                                   q * d + m
//   Q8_0: f16 d, 32 int8 codes;                                                q * d
// The reference dequantizes so and sums in double.
static inline float blk_f16(const uint8_t *p) { return gn_f16_to_f32((uint16_t)(p[0] | p[1] << 8)); }

int gn_blocks_bytes(gn_dtype dt) {
    return dt == GN_DTYPE_Q4_0 ? 18 : dt == GN_DTYPE_Q4_1 ? 20 : dt == GN_DTYPE_Q8_0 ? 34 : 0;
}

// one block's 32 values into y
static void block_f32(gn_dtype dt, const uint8_t *b, float *y) {
    const float d = blk_f16(b);
    if (dt == GN_DTYPE_Q8_0) {
        for (int j = 0; j < 32; j++) y[j] = (float)(int8_t)b[2 + j] * d;
    } else if (dt == GN_DTYPE_Q4_0) {
        for (int j = 0; j < 16; j++) { y[j] = (float)((b[2 + j] & 15) - 8) * d; y[j + 16] = (float)((b[2 + j] >> 4) - 8) * d; }
    } else {
        const float m = blk_f16(b + 2);
        for (int j = 0; j < 16; j++) { y[j] = (float)(b[4 + j] & 15) * d + m; y[j + 16] = (float)(b[4 + j] >> 4) * d + m; }
    }
}

float gn_dot_blocks_f32_ref(gn_dtype dt, const uint8_t *w, const float *x, int64_t n) {
    const int bb = gn_blocks_bytes(dt);
    double s = 0.0;
    float y[GN_QBLOCK];
    for (int64_t b = 0; b < n / GN_QBLOCK; b++, w += bb) {
        block_f32(dt, w, y);
        for (int j = 0; j < GN_QBLOCK; j++) s += (double)y[j] * x[b * GN_QBLOCK + j];
    }
    return (float)s;
}

// ----------------------------------------------------------------------------
// AVX2 + FMA

__attribute__((target("avx2,fma")))
static float hsum256(__m256 v) {
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    lo = _mm_add_ps(lo, hi);
    lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_add_ss(lo, _mm_shuffle_ps(lo, lo, 1));
    return _mm_cvtss_f32(lo);
}

__attribute__((target("avx2,fma")))
static float dot_f32_avx2(const float *a, const float *b, int64_t n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        gn_prefetch_stream(a + i);
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    }
    for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    float s = hsum256(_mm256_add_ps(s0, s1));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

__attribute__((target("avx2,fma")))
static __m256 bf16x8_avx2(const uint16_t *p) {
    __m128i h = _mm_loadu_si128((const __m128i *)p);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

__attribute__((target("avx2,fma")))
static float dot_bf16_avx2(const uint16_t *w, const float *x, int64_t n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        gn_prefetch_stream(w + i);
        s0 = _mm256_fmadd_ps(bf16x8_avx2(w + i), _mm256_loadu_ps(x + i), s0);
        s1 = _mm256_fmadd_ps(bf16x8_avx2(w + i + 8), _mm256_loadu_ps(x + i + 8), s1);
    }
    for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(bf16x8_avx2(w + i), _mm256_loadu_ps(x + i), s0);
    float s = hsum256(_mm256_add_ps(s0, s1));
    for (; i < n; i++) s += gn_bf16_to_f32(w[i]) * x[i];
    return s;
}

// ggml blocks: per block the 32 codes times x in float32, then one multiply by the block's
// scale d (F16C converts it); Q4_0 and Q4_1 add their offset (-8d, m) times the sum of the
// block's inputs. Two blocks a step, one accumulator each.
__attribute__((target("avx2,fma"), always_inline))
static inline __m256 q8_0_codes_x(const uint8_t *q, const float *x) {
#define Q8X8(o) _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(q + (o)))))
    __m256 p0 = _mm256_mul_ps(Q8X8(0), _mm256_loadu_ps(x));
    __m256 p1 = _mm256_mul_ps(Q8X8(8), _mm256_loadu_ps(x + 8));
    p0 = _mm256_fmadd_ps(Q8X8(16), _mm256_loadu_ps(x + 16), p0);
    p1 = _mm256_fmadd_ps(Q8X8(24), _mm256_loadu_ps(x + 24), p1);
#undef Q8X8
    return _mm256_add_ps(p0, p1);
}

// the 32 nibbles at q (unsigned 0..15) times x, and the sum of x into *xs
__attribute__((target("avx2,fma"), always_inline))
static inline __m256 q4_codes_x(const uint8_t *q, const float *x, __m256 *xs) {
    const __m128i v = _mm_loadu_si128((const __m128i *)q), m4 = _mm_set1_epi8(15);
    const __m128i lo = _mm_and_si128(v, m4), hi = _mm_and_si128(_mm_srli_epi16(v, 4), m4);
#define Q4X8(r) _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(r))
    const __m256 x0 = _mm256_loadu_ps(x), x1 = _mm256_loadu_ps(x + 8), x2 = _mm256_loadu_ps(x + 16),
                 x3 = _mm256_loadu_ps(x + 24);
    __m256 p0 = _mm256_mul_ps(Q4X8(lo), x0);
    __m256 p1 = _mm256_mul_ps(Q4X8(_mm_srli_si128(lo, 8)), x1);
    p0 = _mm256_fmadd_ps(Q4X8(hi), x2, p0);
    p1 = _mm256_fmadd_ps(Q4X8(_mm_srli_si128(hi, 8)), x3, p1);
#undef Q4X8
    *xs = _mm256_add_ps(_mm256_add_ps(x0, x1), _mm256_add_ps(x2, x3));
    return _mm256_add_ps(p0, p1);
}

__attribute__((target("avx2,fma,f16c"), always_inline))
static inline float f16c(const uint8_t *p) { return _cvtsh_ss((unsigned short)(p[0] | p[1] << 8)); }

// one block into the accumulators: s += codes.x * d, o += x * offset
__attribute__((target("avx2,fma,f16c"), always_inline))
static inline void block_step_avx2(gn_dtype dt, const uint8_t *b, const float *x, __m256 *s, __m256 *o) {
    const __m256 d = _mm256_set1_ps(f16c(b));
    if (dt == GN_DTYPE_Q8_0) { *s = _mm256_fmadd_ps(q8_0_codes_x(b + 2, x), d, *s); return; }
    __m256 xs;
    const int q41 = dt == GN_DTYPE_Q4_1;
    *s = _mm256_fmadd_ps(q4_codes_x(b + (q41 ? 4 : 2), x, &xs), d, *s);
    *o = _mm256_fmadd_ps(xs, q41 ? _mm256_set1_ps(f16c(b + 2)) : _mm256_mul_ps(d, _mm256_set1_ps(-8.0f)), *o);
}

__attribute__((target("avx2,fma,f16c"), always_inline))
static inline float dot_blocks_avx2_t(gn_dtype dt, const uint8_t *w, const float *x, int64_t n) {
    const int bb = dt == GN_DTYPE_Q4_0 ? 18 : dt == GN_DTYPE_Q4_1 ? 20 : 34;
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps(), o0 = s0, o1 = s0;
    const int64_t nb = n / GN_QBLOCK;
    int64_t b = 0;
    for (; b + 2 <= nb; b += 2, w += 2 * bb, x += 2 * GN_QBLOCK) {
        gn_prefetch_stream(w);
        gn_prefetch_stream(w + 64);
        block_step_avx2(dt, w, x, &s0, &o0);
        block_step_avx2(dt, w + bb, x + GN_QBLOCK, &s1, &o1);
    }
    if (b < nb) block_step_avx2(dt, w, x, &s0, &o0);
    return hsum256(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(o0, o1)));
}

// nb blocks at b widened to y, each value as block_f32 gives it (products then sums, no FMA:
// the same bits)
__attribute__((target("avx2,fma,f16c")))
static void blocks_f32_avx2(gn_dtype dt, const uint8_t *b, int64_t nb, float *y) {
    const int bb = gn_blocks_bytes(dt);
    const __m128i m4 = _mm_set1_epi8(15);
    for (int64_t k = 0; k < nb; k++, b += bb, y += GN_QBLOCK) {
        const __m256 d = _mm256_set1_ps(f16c(b));
        if (dt == GN_DTYPE_Q8_0) {
            for (int j = 0; j < 32; j += 8)
                _mm256_storeu_ps(y + j, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(
                                                          _mm_loadl_epi64((const __m128i *)(b + 2 + j)))), d));
            continue;
        }
        const int q41 = dt == GN_DTYPE_Q4_1;
        const __m128i v = _mm_loadu_si128((const __m128i *)(b + (q41 ? 4 : 2)));
        __m128i lo = _mm_and_si128(v, m4), hi = _mm_and_si128(_mm_srli_epi16(v, 4), m4);
        if (!q41) { lo = _mm_sub_epi8(lo, _mm_set1_epi8(8)); hi = _mm_sub_epi8(hi, _mm_set1_epi8(8)); }
        const __m128i part[4] = {lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)};
        const __m256 m = _mm256_set1_ps(q41 ? f16c(b + 2) : 0.0f);
        for (int j = 0; j < 4; j++) {
            __m256 q = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(part[j]));
            q = _mm256_mul_ps(q, d);
            _mm256_storeu_ps(y + 8 * j, q41 ? _mm256_add_ps(q, m) : q);
        }
    }
}

// one copy per type, so the type's branches fold away
__attribute__((target("avx2,fma,f16c")))
static float dot_blocks_avx2(gn_dtype dt, const uint8_t *w, const float *x, int64_t n) {
    switch (dt) {
    case GN_DTYPE_Q8_0: return dot_blocks_avx2_t(GN_DTYPE_Q8_0, w, x, n);
    case GN_DTYPE_Q4_0: return dot_blocks_avx2_t(GN_DTYPE_Q4_0, w, x, n);
    default: return dot_blocks_avx2_t(GN_DTYPE_Q4_1, w, x, n);
    }
}

// ----------------------------------------------------------------------------
// AVX-512 (masked tails, so no scalar remainder loop)

__attribute__((target("avx512f")))
static float dot_f32_avx512(const float *a, const float *b, int64_t n) {
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        gn_prefetch_stream(a + i);
        gn_prefetch_stream(a + i + 16);
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
    }
    for (; i < n; i += 16) {
        int64_t left = n - i;
        __mmask16 m = left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
        s0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), s0);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

__attribute__((target("avx512f,avx512bw,avx512vl")))
static __m512 bf16x16_avx512(__mmask16 m, const uint16_t *p) {
    __m256i h = _mm256_maskz_loadu_epi16(m, p);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

__attribute__((target("avx512f,avx512bw,avx512vl")))
static float dot_bf16_avx512(const uint16_t *w, const float *x, int64_t n) {
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        gn_prefetch_row(w + i, n);
        s0 = _mm512_fmadd_ps(bf16x16_avx512(0xffff, w + i), _mm512_loadu_ps(x + i), s0);
        s1 = _mm512_fmadd_ps(bf16x16_avx512(0xffff, w + i + 16), _mm512_loadu_ps(x + i + 16), s1);
    }
    for (; i < n; i += 16) {
        int64_t left = n - i;
        __mmask16 m = left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
        s0 = _mm512_fmadd_ps(bf16x16_avx512(m, w + i), _mm512_maskz_loadu_ps(m, x + i), s0);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

// ----------------------------------------------------------------------------
// dispatched entry points

float gn_dot_f32(const float *a, const float *b, int64_t n) {
    switch (gn_simd_level()) {
    case GN_SIMD_AVX512: return dot_f32_avx512(a, b, n);
    case GN_SIMD_AVX2: return dot_f32_avx2(a, b, n);
    default: return gn_dot_f32_ref(a, b, n);
    }
}

float gn_dot_bf16_f32(const uint16_t *w, const float *x, int64_t n) {
    switch (gn_simd_level()) {
    case GN_SIMD_AVX512: return dot_bf16_avx512(w, x, n);
    case GN_SIMD_AVX2: return dot_bf16_avx2(w, x, n);
    default: return gn_dot_bf16_f32_ref(w, x, n);
    }
}

// F16C comes with every AVX2 CPU we know of, but is asked for all the same
static int have_f16c(void) {
    static int v = -1;
    if (v < 0) { __builtin_cpu_init(); v = __builtin_cpu_supports("f16c") ? 1 : 0; }
    return v;
}

float gn_dot_blocks_f32(gn_dtype dt, const uint8_t *w, const float *x, int64_t n) {
    GN_ASSERT(gn_blocks_bytes(dt) > 0 && n % GN_QBLOCK == 0);
    // the AVX2 kernel serves the AVX-512 level too: a row is read at 4.5-8.5 bits a weight
    if (gn_simd_level() >= GN_SIMD_AVX2 && have_f16c()) return dot_blocks_avx2(dt, w, x, n);
    return gn_dot_blocks_f32_ref(dt, w, x, n);
}

// ----------------------------------------------------------------------------
// matmul: out (T, OC) = inp (T, IC) @ W^T

#ifdef _OPENMP
#include <omp.h>
#endif

// This thread's share [*lo, *hi) of n items, in stretches rounded to 16.
static void thread_share(int64_t n, int64_t *lo, int64_t *hi) {
    int nth = 1, ith = 0;
#ifdef _OPENMP
    nth = omp_get_num_threads();
    ith = omp_get_thread_num();
#endif
    int64_t per = ((n + nth - 1) / nth + 15) / 16 * 16;
    *lo = ith * per < n ? ith * per : n;
    *hi = *lo + per < n ? *lo + per : n;
}

void gn_blas_single_thread(void) {
    static int done;
    if (!done) { openblas_set_num_threads(1); done = 1; }
}
#define blas_single_thread gn_blas_single_thread

void gn_matmul_ref(float *out, const float *inp, const gn_mat *w, int64_t T) {
    int64_t OC = w->rows, IC = w->cols;
    for (int64_t t = 0; t < T; t++)
        for (int64_t o = 0; o < OC; o++) {
            double s = 0.0;
            for (int64_t i = 0; i < IC; i++) {
                float wv;
                if (w->dtype == GN_DTYPE_BF16) wv = gn_bf16_to_f32(((const uint16_t *)w->data)[o * IC + i]);
                else if (gn_blocks_bytes(w->dtype)) {
                    float y[GN_QBLOCK];
                    block_f32(w->dtype, gn_blocks_row(w, o) + i / GN_QBLOCK * gn_blocks_bytes(w->dtype), y);
                    wv = y[i % GN_QBLOCK];
                } else wv = ((const float *)w->data)[o * IC + i];
                s += (double)wv * inp[t * IC + i];
            }
            out[t * OC + o] = (float)s;
        }
}

void gn_matmul(float *out, const float *inp, const gn_mat *w, int64_t T) {
    int64_t OC = w->rows, IC = w->cols;
    if (T <= 0 || OC <= 0) return;
    if (IC == 0) { memset(out, 0, (size_t)(T * OC) * sizeof(float)); return; }
    if (w->dtype == GN_DTYPE_F32 && T > 1) {
        // One thread pool only: each OpenMP thread runs a single-threaded sgemm
        // on its own stretch of output features (OpenBLAS' own threads would spin
        // against ours between calls).
        blas_single_thread();
        #pragma omp parallel
        {
            int64_t o0, o1;
            thread_share(OC, &o0, &o1);
            if (o0 < o1)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)T, (int)(o1 - o0), (int)IC, 1.0f, inp,
                            (int)IC, (const float *)w->data + o0 * IC, (int)IC, 0.0f, out + o0, (int)OC);
        }
        return;
    }
    const int bf = w->dtype == GN_DTYPE_BF16, blocks = gn_blocks_bytes(w->dtype) > 0;
    GN_ASSERT(w->dtype == GN_DTYPE_F32 || bf || blocks);
    GN_ASSERT(!blocks || IC % GN_QBLOCK == 0);
    if ((bf || blocks) && T >= 8) {
        // many tokens: convert 64-row tiles of W to f32 (per thread) and run sgemm on them
        blas_single_thread();
        const int64_t RB = 64;
        int64_t ntiles = (OC + RB - 1) / RB;
        #pragma omp parallel
        {
            float *tile = gn_malloc(sizeof(float) * (size_t)(RB * IC));
            #pragma omp for schedule(static)
            for (int64_t b = 0; b < ntiles; b++) {
                int64_t r0 = b * RB, n = OC - r0 < RB ? OC - r0 : RB;
                gn_mat_rows_f32(w, r0, n, tile);
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)T, (int)n, (int)IC, 1.0f, inp, (int)IC, tile,
                            (int)IC, 0.0f, out + r0, (int)OC);
            }
            free(tile);
        }
        return;
    }
    // rows in blocks of 16, taken by the threads in guided stretches (each streams contiguous
    // rows of W; a slower core takes fewer stretches instead of the other waiting for it at the
    // end, as a static split did: decode's head, SmolLM2's tied embedding); a row's sum does not
    // depend on the thread that makes it
    int64_t nblk = (OC + 15) / 16;
    #pragma omp parallel for schedule(guided) if (OC * IC * T > 32768)
    for (int64_t b = 0; b < nblk; b++) {
        int64_t o1 = (b + 1) * 16 < OC ? (b + 1) * 16 : OC;
        for (int64_t o = b * 16; o < o1; o++) {
            for (int64_t t = 0; t < T; t++) {
                float s = bf       ? gn_dot_bf16_f32((const uint16_t *)w->data + o * IC, inp + t * IC, IC)
                          : blocks ? gn_dot_blocks_f32(w->dtype, gn_blocks_row(w, o), inp + t * IC, IC)
                                   : gn_dot_f32((const float *)w->data + o * IC, inp + t * IC, IC);
                out[t * OC + o] = s;
            }
        }
    }
}

// ----------------------------------------------------------------------------
// input gradient: out (T, IC) = dy (T, OC) @ W

void gn_mat_rows_f32(const gn_mat *w, int64_t r0, int64_t n, float *dst) {
    int64_t IC = w->cols;
    if (w->dtype == GN_DTYPE_F32) {
        memcpy(dst, (const float *)w->data + r0 * IC, sizeof(float) * (size_t)(n * IC));
    } else if (w->dtype == GN_DTYPE_BF16) {
        const uint16_t *src = (const uint16_t *)w->data + r0 * IC;
        for (int64_t i = 0; i < n * IC; i++) dst[i] = gn_bf16_to_f32(src[i]);
    } else if (gn_blocks_bytes(w->dtype)) {
        GN_ASSERT(IC % GN_QBLOCK == 0);
        const int bb = gn_blocks_bytes(w->dtype), vec = gn_simd_level() >= GN_SIMD_AVX2 && have_f16c();
        for (int64_t r = 0; r < n; r++) {
            const uint8_t *blk = gn_blocks_row(w, r0 + r);
            if (vec) blocks_f32_avx2(w->dtype, blk, IC / GN_QBLOCK, dst + r * IC);
            else
                for (int64_t b = 0; b < IC / GN_QBLOCK; b++) block_f32(w->dtype, blk + b * bb, dst + r * IC + b * GN_QBLOCK);
        }
    } else {
        GN_ASSERT(!"gn_mat_rows_f32: F32, BF16, Q4_0, Q4_1 or Q8_0 weights only");
    }
}

uint16_t *gn_mat_to_bf16(const gn_mat *w) {
    const int64_t IC = w->cols;
    uint16_t *h = gn_malloc(sizeof(uint16_t) * (size_t)(w->rows * IC));
    float *row = gn_malloc(sizeof(float) * (size_t)(IC > 0 ? IC : 1));
    for (int64_t r = 0; r < w->rows; r++) {
        gn_mat_rows_f32(w, r, 1, row);
        for (int64_t i = 0; i < IC; i++) h[r * IC + i] = gn_f32_to_bf16(row[i]);
    }
    free(row);
    return h;
}

void gn_matmul_nn(float *out, const float *dy, const gn_mat *w, int64_t T) {
    int64_t OC = w->rows, IC = w->cols;
    if (T <= 0 || IC <= 0) return;
    memset(out, 0, sizeof(float) * (size_t)(T * IC));
    if (OC <= 0) return;
    blas_single_thread();
    if (w->dtype == GN_DTYPE_F32) {
        #pragma omp parallel
        {
            int64_t c0, c1;
            thread_share(IC, &c0, &c1);
            if (c0 < c1)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)T, (int)(c1 - c0), (int)OC, 1.0f, dy, (int)OC,
                            (const float *)w->data + c0, (int)IC, 0.0f, out + c0, (int)IC);
        }
        return;
    }
    // other dtypes: each thread converts blocks of 64 rows of W and accumulates
    // into its own slice of columns... rows are shared, so split by columns of
    // the converted block instead: convert once per block, then all threads use it.
    // blocks of ~4 MB: each sgemm call reads and writes all of out, so few, tall blocks
    // (a 49152-row bf16 head in 64-row blocks made 768 passes over out)
    int64_t RB = ((int64_t)1 << 20) / (IC > 0 ? IC : 1);
    RB = RB < 64 ? 64 : RB > OC ? OC : RB;
    float *blk = gn_malloc(sizeof(float) * (size_t)(RB * IC));
    for (int64_t r0 = 0; r0 < OC; r0 += RB) {
        int64_t n = OC - r0 < RB ? OC - r0 : RB;
        #pragma omp parallel for schedule(static) if (n * IC > 65536)
        for (int64_t i = 0; i < n; i += 16) gn_mat_rows_f32(w, r0 + i, n - i < 16 ? n - i : 16, blk + i * IC);
        #pragma omp parallel
        {
            int64_t c0, c1;
            thread_share(IC, &c0, &c1);
            if (c0 < c1)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)T, (int)(c1 - c0), (int)n, 1.0f, dy + r0,
                            (int)OC, blk + c0, (int)IC, 1.0f, out + c0, (int)IC);
        }
    }
    free(blk);
}

// ----------------------------------------------------------------------------
// general product: the LoRA branch's small matrices

void gn_gemm(unsigned flags, int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
             const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    if ((flags & GN_GEMM_BF16) && gn_bf16_gemm_available()) {
        gn_gemm_bf16(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    const CBLAS_TRANSPOSE cta = ta ? CblasTrans : CblasNoTrans, ctb = tb ? CblasTrans : CblasNoTrans;
    const int cols = (flags & GN_GEMM_COLS) != 0;
    blas_single_thread();
    #pragma omp parallel if (M * N * K > 65536)
    {
        int64_t lo, hi;
        thread_share(cols ? N : M, &lo, &hi);
        if (lo < hi && !cols)
            cblas_sgemm(CblasRowMajor, cta, ctb, (int)(hi - lo), (int)N, (int)K, alpha, A + (ta ? lo : lo * lda), (int)lda,
                        B, (int)ldb, beta, C + lo * ldc, (int)ldc);
        else if (lo < hi)
            cblas_sgemm(CblasRowMajor, cta, ctb, (int)M, (int)(hi - lo), (int)K, alpha, A, (int)lda,
                        B + (tb ? lo * ldb : lo), (int)ldb, beta, C + lo, (int)ldc);
    }
}

// ----------------------------------------------------------------------------
// elementwise

void gn_rmsnorm(float *out, const float *inp, const float *weight, int64_t T, int64_t C, float eps) {
    #pragma omp parallel for schedule(static) if (T * C >= 65536) // prefill rows; a decode row stays on this thread
    for (int64_t t = 0; t < T; t++) {
        const float *x = inp + t * C;
        float *o = out + t * C;
        double ss = 0.0;
        #pragma omp simd reduction(+ : ss) // double lanes: the order hardly matters at this precision
        for (int64_t i = 0; i < C; i++) ss += (double)x[i] * x[i];
        float r = 1.0f / sqrtf((float)(ss / (double)C) + eps);
        for (int64_t i = 0; i < C; i++) o[i] = weight[i] * (x[i] * r);
    }
}



// ----------------------------------------------------------------------------
// threads: OpenMP for our kernels and for splitting sgemm across threads

void gn_set_threads(int n) {
    if (n < 1) n = 1;
#ifdef _OPENMP
    omp_set_num_threads(n);
#endif
}

int gn_get_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}
