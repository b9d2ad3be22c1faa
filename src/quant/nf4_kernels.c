/*
 * nf4_kernels.c — dequantization and matmul on NF4/FP4 weights, with runtime
 * SIMD dispatch (scalar, AVX2+FMA, AVX-512) like src/tensor/kernels_cpu.c.
 *
 * Decoding 16 codes in AVX-512: 8 packed bytes are duplicated (b0 b0 b1 b1 ..),
 * widened to 16 dwords and shifted right by 4 in the even lanes, so each lane's
 * low 4 bits hold its code (high nibble first, as bnb packs); vpermps with the
 * 16-entry table in one register then yields the code values. AVX2 does the
 * same for 8 codes with two 8-entry tables and a blend on bit 3. The weight is
 * code * absmax, one float32 multiply, so every path's dequantized values are
 * bit-identical to the scalar definition; only the matmul's summation order
 * differs between paths.
 *
 * gn_nf4_matmul: T == 1 (decode) runs a fused dequant+dot per row when rows
 * start on block boundaries (cols % blocksize == 0); other shapes dequantize a
 * row into a buffer and use gn_dot_f32. One exception to "bit-identical weights":
 * AVX2 decode in bf16 compute factors the block scale out and multiplies 15-bit
 * integers (rows_dot_i16_avx2, its error rule there; GN_NF4_EXACT_DECODE=1 keeps the
 * exact kernel), and so does AVX-512 without BF16 dot products (i16_span512:
 * the AVX2 kernel's bits, two runs a vector; GN_NF4_NO_BF16DOT=1 takes it on any
 * AVX-512). T > 16 (prefill, training) with a bf16 compute dtype: on AVX2 (and
 * AVX-512 without BF16 dot products) an integer GEMM on vpmaddwd (ig_gemm, its rule
 * there; GN_NF4_EXACT_DECODE=1 keeps the exact path), on AVX512_BF16 a vdpbf16ps GEMM;
 * elsewhere each OpenMP thread dequantizes 64-row tiles into its own buffer and runs a
 * single-threaded OpenBLAS sgemm on them (one thread pool, as gn_matmul does).
 */
#include "nf4.h"

#include <cblas.h>     // cblas_sgemm (OpenBLAS)
#include <immintrin.h> // AVX2 / AVX-512 intrinsics (only inside target() functions)
#include <float.h>     // FLT_MAX
#include <limits.h>    // INT_MAX
#include <math.h>      // fabsf
#ifdef _OPENMP
#include <omp.h> // omp_get_num_threads
#endif
#include <stdlib.h>    // free, getenv

#include "../tensor/kernels.h"

// ----------------------------------------------------------------------------
// scalar

static inline int nibble(const uint8_t *p, int64_t e) {
    uint8_t b = p[e >> 1];
    return (e & 1) ? (b & 15) : (b >> 4);
}

// The weight the matmul uses: the product rounded to wdtype (as bnb's
// dequantize_4bit returns it in the state's dtype).
static inline float round_w(float v, gn_dtype wdt) {
    if (wdt == GN_DTYPE_BF16) return gn_bf16_to_f32(gn_f32_to_bf16(v));
    if (wdt == GN_DTYPE_F16) return gn_f16_to_f32(gn_f32_to_f16(v));
    return v;
}

// Values rounded to the compute dtype in place: bnb's Linear4bit casts its input to
// the compute dtype and returns the product in it. Branch-free for bf16 so the
// compiler vectorizes it (NaN stays NaN, quieted, as gn_f32_to_bf16).
__attribute__((target("avx512f")))
static int64_t round_bf16_avx512(float *v, int64_t n) {
    const __m512i one = _mm512_set1_epi32(1), bias = _mm512_set1_epi32(0x7fff), hi = _mm512_set1_epi32((int)0xffff0000u);
    const __m512i abs = _mm512_set1_epi32(0x7fffffff), inf = _mm512_set1_epi32(0x7f800000), qb = _mm512_set1_epi32(0x00400000);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512i u = _mm512_loadu_si512(v + i);
        __m512i r = _mm512_add_epi32(_mm512_add_epi32(u, bias), _mm512_and_si512(_mm512_srli_epi32(u, 16), one));
        __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, abs), inf);
        r = _mm512_mask_or_epi32(r, nan, u, qb);
        _mm512_storeu_si512(v + i, _mm512_and_si512(r, hi));
    }
    return i;
}

// the same on AVX2 (the NaN test as a signed compare: |u| and 0x7f800000 are both positive)
__attribute__((target("avx2")))
static int64_t round_bf16_avx2(float *v, int64_t n) {
    const __m256i one = _mm256_set1_epi32(1), bias = _mm256_set1_epi32(0x7fff), hi = _mm256_set1_epi32((int)0xffff0000u);
    const __m256i abs = _mm256_set1_epi32(0x7fffffff), inf = _mm256_set1_epi32(0x7f800000), qb = _mm256_set1_epi32(0x00400000);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i u = _mm256_loadu_si256((const __m256i *)(v + i));
        __m256i r = _mm256_add_epi32(_mm256_add_epi32(u, bias), _mm256_and_si256(_mm256_srli_epi32(u, 16), one));
        __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, abs), inf);
        r = _mm256_blendv_epi8(r, _mm256_or_si256(u, qb), nan);
        _mm256_storeu_si256((__m256i *)(v + i), _mm256_and_si256(r, hi));
    }
    return i;
}

static void round_act(float *v, int64_t n, gn_dtype dt) {
    if (dt == GN_DTYPE_BF16) {
        const gn_simd l = gn_simd_level();
        int64_t i0 = l >= GN_SIMD_AVX512 ? round_bf16_avx512(v, n) : l == GN_SIMD_AVX2 ? round_bf16_avx2(v, n) : 0;
        for (int64_t i = i0; i < n; i++) {
            uint32_t u;
            memcpy(&u, &v[i], 4);
            uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
            uint32_t qn = (u | 0x00400000u) & 0xffff0000u;
            r = (u & 0x7fffffffu) > 0x7f800000u ? qn : r;
            memcpy(&v[i], &r, 4);
        }
    } else if (dt == GN_DTYPE_F16) {
        for (int64_t i = 0; i < n; i++) v[i] = gn_f16_to_f32(gn_f32_to_f16(v[i]));
    }
}

// dst = src rounded to dt, split across threads for large n (no nested parallelism: called
// outside the matmul's parallel loops)
static void round_copy(float *dst, const float *src, int64_t n, gn_dtype dt) {
    const int64_t CH = 16384, nch = (n + CH - 1) / CH;
    #pragma omp parallel for schedule(static) if (nch > 4)
    for (int64_t c = 0; c < nch; c++) {
        int64_t i0 = c * CH, m = n - i0 < CH ? n - i0 : CH;
        memcpy(dst + i0, src + i0, sizeof(float) * (size_t)m);
        round_act(dst + i0, m, dt);
    }
}

static void deq_range_scalar(const gn_quant4_state *q, int64_t e0, int64_t n, float *dst, gn_dtype wdt) {
    for (int64_t i = 0; i < n; i++) {
        int64_t e = e0 + i;
        dst[i] = round_w(q->code[nibble(q->packed, e)] * gn_quant4_scale(q, e / q->blocksize), wdt);
    }
}

// ----------------------------------------------------------------------------
// AVX2 + FMA (+ F16C for f16-rounded weights)

static const int32_t shift_hi_lo[16] = {4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0};

// 8 codes from 4 packed bytes -> 8 table values
__attribute__((target("avx2,fma,f16c")))
static inline __m256 dec8_avx2(const uint8_t *p, __m256 tlo, __m256 thi) {
    int32_t w;
    memcpy(&w, p, 4);
    __m128i b = _mm_cvtsi32_si128(w);
    b = _mm_unpacklo_epi8(b, b);
    __m256i v = _mm256_cvtepu8_epi32(b);
    v = _mm256_srlv_epi32(v, _mm256_loadu_si256((const __m256i *)shift_hi_lo));
    v = _mm256_and_si256(v, _mm256_set1_epi32(15));
    __m256 a = _mm256_permutevar8x32_ps(tlo, v), c = _mm256_permutevar8x32_ps(thi, v);
    return _mm256_blendv_ps(a, c, _mm256_castsi256_ps(_mm256_slli_epi32(v, 28)));
}

__attribute__((target("avx2,fma,f16c")))
static inline __m256 round_w_avx2(__m256 v, gn_dtype wdt) {
    if (wdt == GN_DTYPE_BF16) {
        __m256i u = _mm256_castps_si256(v);
        __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
        __m256i r = _mm256_add_epi32(u, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff)));
        __m256i nanv = _mm256_or_si256(u, _mm256_set1_epi32(0x400000));
        __m256 isnan = _mm256_cmp_ps(v, v, _CMP_UNORD_Q);
        r = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(r), _mm256_castsi256_ps(nanv), isnan));
        return _mm256_castsi256_ps(_mm256_and_si256(r, _mm256_set1_epi32((int)0xffff0000u)));
    }
    if (wdt == GN_DTYPE_F16)
        return _mm256_cvtph_ps(_mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    return v;
}

// dst[i] = wdt(code * absmax) for elements [e0, e0+n) (wdt F32: no rounding)
__attribute__((target("avx2,fma,f16c")))
static void deq_range_avx2(const gn_quant4_state *q, int64_t e0, int64_t n, float *dst, gn_dtype wdt) {
    int64_t e = e0, end = e0 + n;
    for (; e < end && (e & 7); e++)
        dst[e - e0] = round_w(q->code[nibble(q->packed, e)] * gn_quant4_scale(q, e / q->blocksize), wdt);
    __m256 tlo = _mm256_loadu_ps(q->code), thi = _mm256_loadu_ps(q->code + 8);
    // blocksize is a multiple of 8, so an 8-aligned run of 8 stays in one block
    int64_t cb = -1; // the block whose scale s holds (rebuilt once per block with DQ)
    __m256 s = _mm256_setzero_ps();
    for (; e + 8 <= end; e += 8) {
        if (e / q->blocksize != cb) { cb = e / q->blocksize; s = _mm256_set1_ps(gn_quant4_scale(q, cb)); }
        __m256 v = _mm256_mul_ps(dec8_avx2(q->packed + (e >> 1), tlo, thi), s);
        _mm256_storeu_ps(dst + (e - e0), round_w_avx2(v, wdt));
    }
    for (; e < end; e++)
        dst[e - e0] = round_w(q->code[nibble(q->packed, e)] * gn_quant4_scale(q, e / q->blocksize), wdt);
}

__attribute__((target("avx2,fma,f16c")))
static float hsum256_nf4(__m256 v) {
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    lo = _mm_add_ps(lo, hi);
    lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_add_ss(lo, _mm_shuffle_ps(lo, lo, 1));
    return _mm_cvtss_f32(lo);
}


// ----------------------------------------------------------------------------
// AVX-512

__attribute__((target("avx512f,avx512bw,avx512vl")))
static inline __m512 dec16_avx512(const uint8_t *p, __m512 tab) {
    __m128i b = _mm_loadl_epi64((const __m128i *)p);
    b = _mm_unpacklo_epi8(b, b);
    __m512i v = _mm512_cvtepu8_epi32(b);
    v = _mm512_srlv_epi32(v, _mm512_loadu_si512(shift_hi_lo));
    return _mm512_permutexvar_ps(v, tab);  // uses the low 4 bits of each lane
}

__attribute__((target("avx512f,avx512bw,avx512vl")))
static inline __m512 round_w_avx512(__m512 v, gn_dtype wdt) {
    if (wdt == GN_DTYPE_BF16) {
        __m512i u = _mm512_castps_si512(v);
        __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
        __m512i r = _mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff)));
        __mmask16 isnan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
        r = _mm512_mask_mov_epi32(r, isnan, _mm512_or_si512(u, _mm512_set1_epi32(0x400000)));
        return _mm512_castsi512_ps(_mm512_and_si512(r, _mm512_set1_epi32((int)0xffff0000u)));
    }
    if (wdt == GN_DTYPE_F16)
        return _mm512_cvtph_ps(_mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    return v;
}

__attribute__((target("avx512f,avx512bw,avx512vl")))
static void deq_range_avx512(const gn_quant4_state *q, int64_t e0, int64_t n, float *dst, gn_dtype wdt) {
    int64_t e = e0, end = e0 + n;
    for (; e < end && (e & 15); e++)
        dst[e - e0] = round_w(q->code[nibble(q->packed, e)] * gn_quant4_scale(q, e / q->blocksize), wdt);
    __m512 tab = _mm512_loadu_ps(q->code);
    // blocksize is a multiple of 16, so a 16-aligned run of 16 stays in one block
    int64_t cb = -1; // the block whose scale s holds (rebuilt once per block with DQ)
    __m512 s = _mm512_setzero_ps();
    for (; e + 16 <= end; e += 16) {
        if (e / q->blocksize != cb) { cb = e / q->blocksize; s = _mm512_set1_ps(gn_quant4_scale(q, cb)); }
        __m512 v = _mm512_mul_ps(dec16_avx512(q->packed + (e >> 1), tab), s);
        _mm512_storeu_ps(dst + (e - e0), round_w_avx512(v, wdt));
    }
    for (; e < end; e++)
        dst[e - e0] = round_w(q->code[nibble(q->packed, e)] * gn_quant4_scale(q, e / q->blocksize), wdt);
}


// Decode with a per-block table. For block b the 16 possible weights are
// tab_b[i] = wdt(code[i] * absmax_b), the very products the definition rounds,
// so the weights are bit-identical to the scalar path; per 32 weights the loop
// is one byte widening, one shift and two vpermps from tab_b held in a
// register, then FMAs. The activations are pre-arranged ("deinterleaved") so
// the high nibbles (even elements) and low nibbles (odd elements) of 16 packed
// bytes meet contiguous activations: in every run of 32, evens first, then odds.
// With double quantization absmax_b is rebuilt from its 8-bit code as every
// dequantizing path does (gn_quant4_scale): float32(float32(nested_code[qabsmax[b]]
// * nested_absmax[b/256]) + offset); the state keeps no float32 copy.

static void deinterleave32(const float *x, int64_t C, float *xd) {
    int64_t g = 0;
    for (; g + 32 <= C; g += 32)
        for (int i = 0; i < 16; i++) { xd[g + i] = x[g + 2 * i]; xd[g + 16 + i] = x[g + 2 * i + 1]; }
    for (; g < C; g++) xd[g] = x[g];
}

// out[t*ostride + r] for rows [r0, r1) and nt <= 8 activation rows (deinterleaved,
// stride C). Rows start on block boundaries, blocksize % 32 == 0.
__attribute__((target("avx512f,avx512bw,avx512vl")))
static void rows_dot_tab_avx512(const gn_quant4_state *q, int64_t r0, int64_t r1, const float *xd, int nt, float *out,
                                int64_t ostride) {
    const int64_t C = q->cols, bs = q->blocksize, nb = C / bs;
    const gn_dtype wdt = q->wdtype;
    const __m512 code = _mm512_loadu_ps(q->code);
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *p = q->packed + (r * C) / 2;
        const int64_t b0 = (r * C) / bs;
        if (nt == 1) {
            __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            for (int64_t b = 0; b < nb; b++) {
                __m512 tab = round_w_avx512(_mm512_mul_ps(code, _mm512_set1_ps(gn_quant4_scale(q, b0 + b))), wdt);
                const uint8_t *pb = p + b * bs / 2;
                const float *xb = xd + b * bs;
                int64_t j = 0;
                for (; j + 64 <= bs; j += 64) {
                    gn_prefetch_stream(pb + j / 2);
                    __m512i v0 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(pb + j / 2)));
                    __m512i v1 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(pb + j / 2 + 16)));
                    a0 = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(v0, 4), tab), _mm512_loadu_ps(xb + j), a0);
                    a1 = _mm512_fmadd_ps(_mm512_permutexvar_ps(v0, tab), _mm512_loadu_ps(xb + j + 16), a1);
                    a2 = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(v1, 4), tab), _mm512_loadu_ps(xb + j + 32), a2);
                    a3 = _mm512_fmadd_ps(_mm512_permutexvar_ps(v1, tab), _mm512_loadu_ps(xb + j + 48), a3);
                }
                for (; j < bs; j += 32) {
                    gn_prefetch_stream(pb + j / 2);
                    __m512i v0 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(pb + j / 2)));
                    a0 = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(v0, 4), tab), _mm512_loadu_ps(xb + j), a0);
                    a1 = _mm512_fmadd_ps(_mm512_permutexvar_ps(v0, tab), _mm512_loadu_ps(xb + j + 16), a1);
                }
            }
            out[r] = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
            continue;
        }
        __m512 acc[8];
        for (int t = 0; t < nt; t++) acc[t] = _mm512_setzero_ps();
        for (int64_t b = 0; b < nb; b++) {
            __m512 tab = round_w_avx512(_mm512_mul_ps(code, _mm512_set1_ps(gn_quant4_scale(q, b0 + b))), wdt);
            const uint8_t *pb = p + b * bs / 2;
            for (int64_t j = 0; j < bs; j += 32) {
                gn_prefetch_stream(pb + j / 2);
                __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(pb + j / 2)));
                __m512 we = _mm512_permutexvar_ps(_mm512_srli_epi32(v, 4), tab), wo = _mm512_permutexvar_ps(v, tab);
                const float *xb = xd + b * bs + j;
                for (int t = 0; t < nt; t++) {
                    acc[t] = _mm512_fmadd_ps(we, _mm512_loadu_ps(xb + t * C), acc[t]);
                    acc[t] = _mm512_fmadd_ps(wo, _mm512_loadu_ps(xb + t * C + 16), acc[t]);
                }
            }
        }
        for (int t = 0; t < nt; t++) out[t * ostride + r] = _mm512_reduce_add_ps(acc[t]);
    }
}

// bf16 weights (wdtype BF16, the QLoRA default) on CPUs with AVX512_BF16: the
// block's 16 possible weights are bf16 words, so one vpermw looks up 32 weights
// and one vdpbf16ps multiplies-and-adds 32 of them into f32 lanes. The
// activations are bf16 too: with a bf16 compute dtype the product takes its
// input rounded to bf16 (bnb's Linear4bit casts x to the compute dtype), so a
// bf16 pair product is exact in f32. The table conversion vcvtne2ps2bf16 is
// RNE like gn_f32_to_bf16 (NaN quieted the same way) but flushes denormal
// inputs, so blocks with a tiny, huge or NaN absmax build their table the exact
// way; vdpbf16ps itself treats denormal weights and products as zero, so a
// weight below 1.2e-38 counts as 0 here (GN_NF4_NO_BF16DOT=1 avoids this path).
// Activations are arranged per run of 64: 32 evens, then 32 odds.

static int have_bf16_dot(void) {
    static int v = -1;
    if (v < 0) { __builtin_cpu_init(); v = __builtin_cpu_supports("avx512bf16") ? 1 : 0; }
    return v;
}

// AVX512_VNNI with AVX512VL (Cascade Lake and later, Zen 4): the integer kernels' vpmaddwd and
// the vpaddd after it as one vpdpwssd (the same int32 sums); GN_NF4_NO_VNNI=1: without
static int getenv_no_vnni(void) { static int v = -1; return gn_env_switch("GN_NF4_NO_VNNI", &v); }
static int have_vnni(void) {
    static int cpu = -1;
    if (cpu < 0) {
        __builtin_cpu_init();
        cpu = __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vl") &&
              __builtin_cpu_supports("avx512f");
    }
    return cpu && !getenv_no_vnni();
}

// x as bf16, each run of 64 arranged evens then odds (only called on AVX512_BF16: the
// conversion flushes denormals, which vdpbf16ps would read as zero anyway)
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
static void bf16_deinterleave64(const float *x, int64_t C, uint16_t *hi) {
    uint16_t e16[32];
    for (int i = 0; i < 32; i++) e16[i] = (uint16_t)(2 * i);
    const __m512i ev = _mm512_loadu_si512(e16), od = _mm512_add_epi16(ev, _mm512_set1_epi16(1));
    for (int64_t g = 0; g < C; g += 64) { // C is a multiple of the block size, itself of 64
        __m512i a = (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + g + 16), _mm512_loadu_ps(x + g));
        __m512i b = (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + g + 48), _mm512_loadu_ps(x + g + 32));
        _mm512_storeu_si512(hi + g, _mm512_permutex2var_epi16(a, ev, b));
        _mm512_storeu_si512(hi + g + 32, _mm512_permutex2var_epi16(a, od, b));
    }
}

__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
static inline __m512i bf16_table(const gn_quant4_state *q, __m512 code, float am) {
    __m256i t;
    if (am >= 1e-36f && am <= 3e38f) {
        __m512 v = _mm512_mul_ps(code, _mm512_set1_ps(am));
        return (__m512i)_mm512_cvtne2ps_pbh(v, v);
    } else { // tiny, huge or NaN scale: the exact rounding of the scalar path
        uint16_t w[16];
        for (int i = 0; i < 16; i++) w[i] = gn_f32_to_bf16(q->code[i] * am);
        t = _mm256_loadu_si256((const __m256i *)w);
    }
    return _mm512_broadcast_i64x4(t); // entries 16..31 = 0..15: vpermw may see bit 4 set
}

__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
static void rows_dot_bf16w(const gn_quant4_state *q, int64_t r0, int64_t r1, const uint16_t *xh, int nt, float *out,
                           int64_t ostride) {
    const int64_t C = q->cols, bs = q->blocksize, nb = C / bs;
    const __m512 code = _mm512_loadu_ps(q->code);
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *p = q->packed + (r * C) / 2;
        const int64_t b0 = (r * C) / bs;
        if (nt == 1) {
            __m512 a0 = _mm512_setzero_ps(), a1 = a0;
            for (int64_t b = 0; b < nb; b++) {
                __m512i tab = bf16_table(q, code, gn_quant4_scale(q, b0 + b));
                for (int64_t j = 0; j < bs; j += 64) {
                    gn_prefetch_stream(p + (b * bs + j) / 2);
                    __m512i v = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)(p + (b * bs + j) / 2)));
                    __m512i we = _mm512_permutexvar_epi16(_mm512_srli_epi16(v, 4), tab);
                    __m512i wo = _mm512_permutexvar_epi16(v, tab);
                    const int64_t e = b * bs + j;
                    a0 = _mm512_dpbf16_ps(a0, (__m512bh)we, (__m512bh)_mm512_loadu_si512(xh + e));
                    a1 = _mm512_dpbf16_ps(a1, (__m512bh)wo, (__m512bh)_mm512_loadu_si512(xh + e + 32));
                }
            }
            out[r] = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
            continue;
        }
        __m512 acc[8];
        for (int t = 0; t < nt; t++) acc[t] = _mm512_setzero_ps();
        for (int64_t b = 0; b < nb; b++) {
            __m512i tab = bf16_table(q, code, gn_quant4_scale(q, b0 + b));
            for (int64_t j = 0; j < bs; j += 64) {
                gn_prefetch_stream(p + (b * bs + j) / 2);
                __m512i v = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)(p + (b * bs + j) / 2)));
                __m512bh we = (__m512bh)_mm512_permutexvar_epi16(_mm512_srli_epi16(v, 4), tab);
                __m512bh wo = (__m512bh)_mm512_permutexvar_epi16(v, tab);
                const int64_t e = b * bs + j;
                for (int t = 0; t < nt; t++) {
                    const uint16_t *h = xh + t * C + e;
                    acc[t] = _mm512_dpbf16_ps(acc[t], we, (__m512bh)_mm512_loadu_si512(h));
                    acc[t] = _mm512_dpbf16_ps(acc[t], wo, (__m512bh)_mm512_loadu_si512(h + 32));
                }
            }
        }
        for (int t = 0; t < nt; t++) out[t * ostride + r] = _mm512_reduce_add_ps(acc[t]);
    }
}

// Decode (one activation row) with 64-element blocks, the QLoRA default. Four blocks
// at a time in eight independent sums (vdpbf16ps's latency), one row after another
// (two rows interleaved were faster from cache but slower from memory: two streams
// per page defeat the prefetcher; the factored kernel in pairs, tried again with the L2
// prefetch, took 16% longer a token at 1.1B and 7B shapes). With DQ a block's scale is float32(float32(nested_code[qabsmax]
// * nested_absmax) + offset) (no FMA: bnb rounds the product): the 256 possible scales of each
// nested group are built once (b64_gtab) and a block's scale is a byte load and a load from that
// table inside the row loop (b64_row), on the load ports beside the vector work (12% less time
// per 64 weights than the pass below on Zen 4). Rows of more blocks than a nested group, and
// GN_NF4_B64_BATCH=1, rebuild the scales of a batch of rows first, 16 at a time, the 256-entry
// lookup done by eight two-register permutes and a tree of blends (a scalar loop there took 40%
// of the kernel's time, a gather more). A row or batch holding a tiny, huge or NaN scale goes to
// rows_dot_bf16w, whose table builder takes the exact scalar rounding for those.
#define B64_AM 1024 // rebuilt scales per batch (4 KiB on the stack)

// lanes of v the vector table build would not round exactly: |v| in the denormal range
// (the conversion flushes it), above 3e38, NaN (zero is exact)
__attribute__((target("avx512f,avx512bw,avx512vl")))
static inline __mmask16 b64_inexact(__m512 v, __mmask16 m) {
    const __m512 a = _mm512_abs_ps(v);
    return m & ((_mm512_cmp_ps_mask(a, _mm512_set1_ps(1e-36f), _CMP_NGE_UQ) & _mm512_cmp_ps_mask(a, _mm512_setzero_ps(), _CMP_NEQ_UQ)) |
                _mm512_cmp_ps_mask(a, _mm512_set1_ps(3e38f), _CMP_NLE_UQ));
}

__attribute__((target("avx512f,avx512bw,avx512vl")))
static int b64_scales(const gn_quant4_state *q, int64_t b, int n, float *restrict am) {
    __mmask16 bad = 0;
    if (q->nested) {
        __m512 tab[16];
        for (int k = 0; k < 16; k++) tab[k] = _mm512_loadu_ps(q->nested_code + 16 * k);
        const uint8_t *qa = q->qabsmax + b;
        const __m512 off = _mm512_set1_ps(q->offset);
        const int sh = __builtin_ctz((unsigned)q->nested_blocksize); // a power of two (256)
        const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        for (int i = 0; i < n; i += 16) {
            __builtin_prefetch(qa + i + B64_AM, 0, 3); // the next batch's codes
            const __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
            const __m512i idx = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, qa + i));
            const __mmask16 m5 = _mm512_test_epi32_mask(idx, _mm512_set1_epi32(32));
            const __mmask16 m6 = _mm512_test_epi32_mask(idx, _mm512_set1_epi32(64));
            const __mmask16 m7 = _mm512_test_epi32_mask(idx, _mm512_set1_epi32(128));
            __m512 h[2];
            for (int half = 0; half < 2; half++) { // codes 0-127, then 128-255: four permutes (bits 0-4), two blend levels
                const __m512 *t = tab + 8 * half;
                const __m512 p0 = _mm512_permutex2var_ps(t[0], idx, t[1]), p1 = _mm512_permutex2var_ps(t[2], idx, t[3]);
                const __m512 p2 = _mm512_permutex2var_ps(t[4], idx, t[5]), p3 = _mm512_permutex2var_ps(t[6], idx, t[7]);
                h[half] = _mm512_mask_blend_ps(m6, _mm512_mask_blend_ps(m5, p0, p1), _mm512_mask_blend_ps(m5, p2, p3));
            }
            const __m512 c = _mm512_mask_blend_ps(m7, h[0], h[1]);
            // nested scale of each block: one or two distinct values in 16 blocks (groups of 256)
            const int64_t g0 = (b + i) >> sh, g1 = (b + i + 15) >> sh;
            __m512 ns = _mm512_set1_ps(q->nested_absmax[g0]);
            if (g1 != g0) { // the group changes inside these 16 (not past the end: masked below)
                const int split = (int)((g1 << sh) - (b + i));
                const __mmask16 second = _mm512_cmpge_epi32_mask(iota, _mm512_set1_epi32(split));
                if (b + i + split < q->nblocks) ns = _mm512_mask_blend_ps(second, ns, _mm512_set1_ps(q->nested_absmax[g1]));
            }
            const __m512 v = _mm512_add_ps(_mm512_mul_ps(c, ns), off);
            _mm512_mask_storeu_ps(am + i, m, v);
            bad |= b64_inexact(v, m);
        }
    } else {
        for (int i = 0; i < n; i += 16) {
            const __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
            const __m512 v = _mm512_maskz_loadu_ps(m, q->absmax + b + i);
            _mm512_mask_storeu_ps(am + i, m, v);
            bad |= b64_inexact(v, m);
        }
    }
    return bad == 0;
}

__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
static inline __m512i b64_table(__m512 code, float am) {
    __m512 v = _mm512_mul_ps(code, _mm512_set1_ps(am));
    return (__m512i)_mm512_cvtne2ps_pbh(v, v);
}

// one block of a row (packed bytes p, scale s) into sums A0/A1 against activations x
#define B64_ONE(A0, A1, p, s, x)                                                                                \
    do {                                                                                                       \
        const __m512i t_ = b64_table(code, s);                                                                 \
        const __m512i v_ = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)(p)));                     \
        A0 = _mm512_dpbf16_ps(A0, (__m512bh)_mm512_permutexvar_epi16(_mm512_srli_epi16(v_, 4), t_),           \
                              (__m512bh)_mm512_loadu_si512(x));                                                \
        A1 = _mm512_dpbf16_ps(A1, (__m512bh)_mm512_permutexvar_epi16(v_, t_), (__m512bh)_mm512_loadu_si512((x) + 32)); \
    } while (0)

// GN_NF4_B64_BATCH=1: decode's double-quant scales rebuilt a batch at a time (b64_scales) instead of
// looked up per block from the group tables
static int getenv_b64_batch(void) { static int v = -1; return gn_env_switch("GN_NF4_B64_BATCH", &v); }

// With double quantization, the scales of one nested group: tab[c] = float32(float32(ncode[c] *
// nabs) + offset) for each 8-bit code c (the rounding of gn_quant4_scale and b64_scales), and
// whether one of them is one b64_table would not round exactly (b64_inexact)
// code_ok: the nested codes are all finite, at most 1 in magnitude, and zero or at least 2^-30
// (b64_code_ok; bitsandbytes' dynamic map is, its smallest nonzero entry near 1e-7)
typedef struct {
    float tab[2][256];
    int64_t grp[2];
    int inexact[2];
    int code_ok;
} b64_gcache;

__attribute__((target("avx512f,avx512bw,avx512vl")))
static int b64_code_ok(const float *code) {
    __mmask16 bad = 0;
    for (int i = 0; i < 256; i += 16) {
        const __m512 a = _mm512_abs_ps(_mm512_loadu_ps(code + i));
        bad |= _mm512_cmp_ps_mask(a, _mm512_set1_ps(1.0f), _CMP_NLE_UQ) | // above 1, or NaN
               (_mm512_cmp_ps_mask(a, _mm512_setzero_ps(), _CMP_NEQ_UQ) &
                _mm512_cmp_ps_mask(a, _mm512_set1_ps(0x1p-30f), _CMP_NGE_UQ));
    }
    return bad == 0;
}

// x in [2^-60, 2^60] in magnitude (not NaN)
static inline int b64_plain(float x) { return fabsf(x) >= 0x1p-60f && fabsf(x) <= 0x1p60f; }

// With such codes, a group scale na and an offset off both plain (off may be zero), no scale of
// the group is one b64_inexact flags, so the table is built without that test (4 of its 9
// operations): the product p = code * na is zero or within [2^-90, 2^60] in magnitude, p + off
// at most 2^61, and when it is not zero at least 2^-113 (p alone when off is zero; else the sum
// of two floats of at least 2^-90 is zero or a multiple of the smaller one's unit in the last
// place, 2^-113 at least), above the 1e-36 where the test starts.
__attribute__((target("avx512f,avx512bw,avx512vl")))
static const float *b64_gtab(const gn_quant4_state *q, b64_gcache *c, int64_t grp, int *inexact) {
    const int k = (int)(grp & 1);
    if (c->grp[k] != grp) {
        const float nas = q->nested_absmax[grp];
        const __m512 na = _mm512_set1_ps(nas), off = _mm512_set1_ps(q->offset);
        const int plain = c->code_ok && b64_plain(nas) && (q->offset == 0.0f || b64_plain(q->offset));
        __mmask16 bad = 0;
        for (int i = 0; i < 256; i += 16) {
            const __m512 v = _mm512_add_ps(_mm512_mul_ps(_mm512_loadu_ps(q->nested_code + i), na), off);
            _mm512_storeu_ps(c->tab[k] + i, v);
            if (!plain) bad |= b64_inexact(v, 0xffff);
        }
        c->grp[k] = grp, c->inexact[k] = bad != 0;
    }
    *inexact = c->inexact[k];
    return c->tab[k];
}

// One row of n blocks: block i's scale is t0[i] (by_code 0: the scales given in order), or (1) looked
// up by its 8-bit code qa[i] from the group tables (blocks before sp: t0, from sp: t1): a byte load and a
// broadcast from memory per block, beside the vector work, instead of a separate pass
// (b64_scales, 10% of a decode). The same sums in the same order either way. by_code is a constant
// at each call (always_inline): a test of qa inside the loop cost 10% of the kernel's time.
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"), always_inline))
static inline float b64_row(const uint8_t *pa, const uint16_t *xh, int by_code, const uint8_t *qa, const float *t0,
                            const float *t1, int sp, int n, __m512 code) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
#define B64_S(i) (by_code ? ((i) < sp ? t0 : t1)[qa[i]] : t0[i])
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        gn_prefetch_row(pa + 32 * i, 64 * n);
        gn_prefetch_row(pa + 32 * i + 64, 64 * n);
        B64_ONE(a0, a1, pa + 32 * i, B64_S(i), xh + 64 * i);
        B64_ONE(a2, a3, pa + 32 * i + 32, B64_S(i + 1), xh + 64 * i + 64);
        B64_ONE(a4, a5, pa + 32 * i + 64, B64_S(i + 2), xh + 64 * i + 128);
        B64_ONE(a6, a7, pa + 32 * i + 96, B64_S(i + 3), xh + 64 * i + 192);
    }
    for (; i < n; i++) B64_ONE(a0, a1, pa + 32 * i, B64_S(i), xh + 64 * i);
#undef B64_S
    a0 = _mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3));
    a4 = _mm512_add_ps(_mm512_add_ps(a4, a5), _mm512_add_ps(a6, a7));
    return _mm512_reduce_add_ps(_mm512_add_ps(a0, a4));
}

// the scales of n blocks at am: is one of them one b64_table would not round exactly (b64_inexact)?
__attribute__((target("avx512f,avx512bw,avx512vl")))
static int b64_any_inexact(const float *am, int64_t n) {
    __mmask16 m = 0;
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 k = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        m |= b64_inexact(_mm512_maskz_loadu_ps(k, am + i), k);
    }
    return m != 0;
}

// A decode kernel for rows of blocks of 64 (the table kernel b64_row or the factored b64f_row):
// its row in both forms (scales looked up by code in the group tables, or given in order), and
// the careful way for a row holding a scale outside what those take (b64_inexact); k is the
// kernel's constant (the code table)
typedef struct {
    float (*by_code)(const uint8_t *pa, const uint16_t *x, const uint8_t *qa, const float *t0, const float *t1, int sp,
                     int n, const void *k);
    float (*listed)(const uint8_t *pa, const uint16_t *x, const float *am, int n, const void *k);
    void (*careful)(const gn_quant4_state *q, int64_t r, const uint16_t *x, float *out); // out[r]
    const void *k;
} b64_kernel;

// Rows [r0, r1) of q (blocks of 64) against the arranged input x through kernel kn: with double
// quantization and rows of at most a nested group, each block's scale looked up by its code in
// the group tables (b64_gtab) inside the row loop; else a batch of scales rebuilt first
// (b64_scales: whole rows, or runs of B64_AM blocks of a very long row)
__attribute__((target("avx512f,avx512bw,avx512vl"), always_inline))
static inline void b64_walk(const gn_quant4_state *q, int64_t r0, int64_t r1, const uint16_t *x, float *out, const b64_kernel *kn) {
    const int64_t C = q->cols, nb = C / 64;
    if (q->nested && (q->nested_blocksize & (q->nested_blocksize - 1)) != 0) { // never written by bnb
        for (int64_t r = r0; r < r1; r++) kn->careful(q, r, x, out);
        return;
    }
    if (q->nested && nb <= q->nested_blocksize && !getenv_b64_batch()) { // a row in at most two groups
        const int sh = __builtin_ctz((unsigned)q->nested_blocksize);
        b64_gcache gc;
        gc.grp[0] = gc.grp[1] = -1;
        gc.code_ok = b64_code_ok(q->nested_code);
        for (int64_t r = r0; r < r1; r++) {
            const int64_t b0 = r * nb, g0 = b0 >> sh, g1 = (b0 + nb - 1) >> sh;
            int bad0, bad1 = 0;
            const float *t0 = b64_gtab(q, &gc, g0, &bad0), *t1 = g1 != g0 ? b64_gtab(q, &gc, g1, &bad1) : t0;
            const int sp = (int)((g1 << sh) - b0) < nb ? (int)((g1 << sh) - b0) : (int)nb;
            const uint8_t *qa = q->qabsmax + b0;
            int ok = 1;
            for (int64_t i = 0; (bad0 | bad1) && i < nb && ok; i++) // rare: does this row use one of those scales?
                ok = !b64_any_inexact(&(i < sp ? t0 : t1)[qa[i]], 1);
            if (ok) out[r] = kn->by_code(q->packed + r * (C / 2), x, qa, t0, t1, sp, (int)nb, kn->k);
            else kn->careful(q, r, x, out);
        }
        return;
    }
    float am[B64_AM];
    if (nb <= B64_AM) { // whole rows: one batch of scales for up to B64_AM / nb rows
        const int64_t per = B64_AM / nb;
        for (int64_t r = r0; r < r1;) {
            const int64_t nr = r1 - r < per ? r1 - r : per;
            const int ok = b64_scales(q, r * nb, (int)(nr * nb), am);
            for (int64_t k = 0; k < nr; k++) {
                if (ok || !b64_any_inexact(am + k * nb, nb))
                    out[r + k] = kn->listed(q->packed + (r + k) * (C / 2), x, am + k * nb, (int)nb, kn->k);
                else kn->careful(q, r + k, x, out); // rare: this row the careful way
            }
            r += nr;
        }
        return;
    }
    for (int64_t r = r0; r < r1; r++) { // very long rows: runs of B64_AM blocks (even: a run starts on a pair)
        const uint8_t *p = q->packed + r * (C / 2);
        float sum = 0;
        int ok = 1;
        for (int64_t b = 0; b < nb && ok; b += B64_AM) {
            const int n = nb - b < B64_AM ? (int)(nb - b) : B64_AM;
            ok = b64_scales(q, r * nb + b, n, am);
            if (ok) sum += kn->listed(p + 32 * b, x + 64 * b, am, n, kn->k);
        }
        if (ok) out[r] = sum;
        else kn->careful(q, r, x, out);
    }
}

__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
static float b64_row_code(const uint8_t *pa, const uint16_t *x, const uint8_t *qa, const float *t0, const float *t1, int sp,
                          int n, const void *k) {
    return b64_row(pa, x, 1, qa, t0, t1, sp, n, _mm512_loadu_ps(k));
}
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
static float b64_row_listed(const uint8_t *pa, const uint16_t *x, const float *am, int n, const void *k) {
    return b64_row(pa, x, 0, NULL, am, NULL, 0, n, _mm512_loadu_ps(k));
}
static void b64_row_careful(const gn_quant4_state *q, int64_t r, const uint16_t *x, float *out) {
    rows_dot_bf16w(q, r, r + 1, x, 1, out, 0); // the exact scalar rounding of tiny, huge or NaN scales
}

__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
static void rows_dot_bf16w_b64(const gn_quant4_state *q, int64_t r0, int64_t r1, const uint16_t *xh, float *out) {
    const b64_kernel kn = {b64_row_code, b64_row_listed, b64_row_careful, q->code};
    b64_walk(q, r0, r1, xh, out, &kn);
}

// Decode on AVX512_BF16 with blocks of 64 (the default unless GN_NF4_EXACT_DECODE=1): the block
// scale factored out of the block's sum, so no weight table is built per block:
//   out[r] = sum_b  s_b * sum_{i in b} bf16(code[q_i]) * x_i        (x rounded to bf16)
// The 16 codes are one constant bf16 table (vpermw, entries 16-31 repeat 0-15), one 64-byte load
// holds two blocks (128 weights), read as 32 words: vpermw of the word itself, and of it shifted
// right by 4, 8 and 12, looks up four nibbles of every word (elements 4w+1, 4w, 4w+3, 4w+2 of
// the two blocks), each against its own arranged run of 32 inputs (b64f_arrange); lanes 0-7 of
// the vdpbf16ps sums are the first block, 8-15 the second, so one FMA with the two scales
// (blended) adds both. Per 128 weights: 1 load, 3 shifts, 4 vpermw, 4 vdpbf16ps, 1 blend, 1 FMA,
// where the per-block table kernel (rows_dot_bf16w_b64) spends 2 zero-extends, 2 shifts, 4 vpermw,
// 4 vdpbf16ps and 2 table builds (multiply + two-source convert). Zen 4 runs about 1.3 of
// these 512-bit ops a cycle (vpermw and vdpbf16ps one each, sharing a pipe); one core of the
// table kernel makes 14-18 GB/s of packed weights from L2, this one 1.1-1.15x that (the packed
// line loaded once: gcc otherwise folds the load into each shift). From memory the two are
// alike on the noisy 2-core hosts measured; on Intel cores, where 512-bit shuffles have one
// port, the shuffles per block drop from 4 (zero-extend, 2 vpermw, convert) to 2.
// The rule against the dequantize-then-multiply reference (weights bf16(code * s)): each term
// differs by |bf16(code) * s - bf16(code * s)| * |x| (the code's rounding to bf16 scaled, and the
// reference's own rounding of the weight: each at most 2^-9 of the weight), plus the float32
// sums; test_nf4.c checks that bound. Scales outside [1e-36, 3e38] (not zero) or NaN: the row
// takes b64f_row_exact, the reference's weights.

// x (C, a multiple of 64, rounded to bf16 by vcvtne2ps2bf16 as bf16_deinterleave64 does) into
// runs of 128 (the last one zero-padded when C / 64 is odd): vector k (0..3) of a run holds, in
// word w, element 4w + {1, 0, 3, 2}[k]; (C + 127) / 128 * 128 words
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
static void b64f_arrange(const float *x, int64_t C, uint16_t *xf) {
    static const int off[4] = {1, 0, 3, 2};
    uint16_t ix[4][32];
    for (int k = 0; k < 4; k++)
        for (int w = 0; w < 32; w++) ix[k][w] = (uint16_t)((w % 16 < 8 ? 0 : 32) + 4 * (w % 8) + off[k]);
    for (int64_t g = 0; g < C; g += 128) {
        __m512i n[4];
        for (int v = 0; v < 4; v++) {
            const int64_t e = g + 32 * v;
            n[v] = e < C ? (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + e + 16), _mm512_loadu_ps(x + e)) : _mm512_setzero_si512();
        }
        for (int k = 0; k < 4; k++) { // words 0-15 from n[0], n[1]; 16-31 from n[2], n[3]
            const __m512i idx = _mm512_loadu_si512(ix[k]);
            const __m512i lo = _mm512_permutex2var_epi16(n[0], idx, n[1]), hi = _mm512_permutex2var_epi16(n[2], idx, n[3]);
            _mm512_storeu_si512(xf + g + 32 * k, _mm512_mask_blend_epi16(0xffff0000u, lo, hi));
        }
    }
}

// one row the reference's way (weights bf16(code * s)) from the arranged inputs
static float b64f_row_exact(const gn_quant4_state *q, int64_t r, const uint16_t *xf) {
    static const int kof[4] = {1, 0, 3, 2}; // element offset 0..3 -> vector k
    const int64_t C = q->cols;
    float s = 0.0f;
    for (int64_t c = 0; c < C; c++) {
        const int64_t e = r * C + c, m = c % 128;
        const float x = gn_bf16_to_f32(xf[c - m + 32 * kof[m % 4] + m / 4]);
        s += round_w(q->code[nibble(q->packed, e)] * gn_quant4_scale(q, e / q->blocksize), GN_DTYPE_BF16) * x;
    }
    return s;
}

// two blocks: 64 packed bytes at p, scales sa, sb, the run's arranged inputs at x, into ACC
#define B64F_PAIR(ACC, p, sa, sb, x)                                                                               \
    do {                                                                                                          \
        __m512i v_ = _mm512_loadu_si512(p);                                                                       \
        __asm__("" : "+v"(v_)); /* one load: gcc would fold it into each shift, four loads of the same line */    \
        __m512 t_ = _mm512_dpbf16_ps(_mm512_setzero_ps(), (__m512bh)_mm512_permutexvar_epi16(v_, tab),            \
                                     (__m512bh)_mm512_loadu_si512(x));                                            \
        t_ = _mm512_dpbf16_ps(t_, (__m512bh)_mm512_permutexvar_epi16(_mm512_srli_epi16(v_, 4), tab),              \
                              (__m512bh)_mm512_loadu_si512((x) + 32));                                            \
        t_ = _mm512_dpbf16_ps(t_, (__m512bh)_mm512_permutexvar_epi16(_mm512_srli_epi16(v_, 8), tab),              \
                              (__m512bh)_mm512_loadu_si512((x) + 64));                                            \
        t_ = _mm512_dpbf16_ps(t_, (__m512bh)_mm512_permutexvar_epi16(_mm512_srli_epi16(v_, 12), tab),             \
                              (__m512bh)_mm512_loadu_si512((x) + 96));                                            \
        ACC = _mm512_fmadd_ps(t_, _mm512_mask_mov_ps(_mm512_set1_ps(sa), 0xff00, _mm512_set1_ps(sb)), ACC);       \
    } while (0)

// One row of n blocks, scales as for b64_row (by_code: looked up by qa[i] in t0 before sp, t1 from
// sp; else t0[i]); xf the arranged inputs
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"), always_inline))
static inline float b64f_row(const uint8_t *pa, const uint16_t *xf, int by_code, const uint8_t *qa, const float *t0,
                             const float *t1, int sp, int n, __m512i tab) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
#define B64F_S(i) (by_code ? ((i) < sp ? t0 : t1)[qa[i]] : t0[i])
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        gn_prefetch_row(pa + 32 * i, 64 * n);
        gn_prefetch_row(pa + 32 * i + 64, 64 * n);
        gn_prefetch_row(pa + 32 * i + 128, 64 * n);
        gn_prefetch_row(pa + 32 * i + 192, 64 * n);
        B64F_PAIR(a0, pa + 32 * i, B64F_S(i), B64F_S(i + 1), xf + 64 * i);
        B64F_PAIR(a1, pa + 32 * i + 64, B64F_S(i + 2), B64F_S(i + 3), xf + 64 * i + 128);
        B64F_PAIR(a2, pa + 32 * i + 128, B64F_S(i + 4), B64F_S(i + 5), xf + 64 * i + 256);
        B64F_PAIR(a3, pa + 32 * i + 192, B64F_S(i + 6), B64F_S(i + 7), xf + 64 * i + 384);
    }
    for (; i + 2 <= n; i += 2) B64F_PAIR(a0, pa + 32 * i, B64F_S(i), B64F_S(i + 1), xf + 64 * i);
    if (i < n) { // an odd block: its 32 bytes in the low half, zeros above (code 0 against zero padding)
        const __m512i v_ = _mm512_maskz_loadu_epi8((__mmask64)0xffffffffu, pa + 32 * i);
        const uint16_t *x = xf + 64 * i;
        __m512 t_ = _mm512_dpbf16_ps(_mm512_setzero_ps(), (__m512bh)_mm512_permutexvar_epi16(v_, tab), (__m512bh)_mm512_loadu_si512(x));
        t_ = _mm512_dpbf16_ps(t_, (__m512bh)_mm512_permutexvar_epi16(_mm512_srli_epi16(v_, 4), tab), (__m512bh)_mm512_loadu_si512(x + 32));
        t_ = _mm512_dpbf16_ps(t_, (__m512bh)_mm512_permutexvar_epi16(_mm512_srli_epi16(v_, 8), tab), (__m512bh)_mm512_loadu_si512(x + 64));
        t_ = _mm512_dpbf16_ps(t_, (__m512bh)_mm512_permutexvar_epi16(_mm512_srli_epi16(v_, 12), tab), (__m512bh)_mm512_loadu_si512(x + 96));
        a1 = _mm512_fmadd_ps(t_, _mm512_set1_ps(B64F_S(i)), a1);
    }
#undef B64F_S
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}

__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
static float b64f_row_code(const uint8_t *pa, const uint16_t *x, const uint8_t *qa, const float *t0, const float *t1, int sp,
                           int n, const void *k) {
    return b64f_row(pa, x, 1, qa, t0, t1, sp, n, _mm512_loadu_si512(k));
}
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
static float b64f_row_listed(const uint8_t *pa, const uint16_t *x, const float *am, int n, const void *k) {
    return b64f_row(pa, x, 0, NULL, am, NULL, 0, n, _mm512_loadu_si512(k));
}
static void b64f_row_careful(const gn_quant4_state *q, int64_t r, const uint16_t *x, float *out) {
    out[r] = b64f_row_exact(q, r, x);
}

__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
static void rows_dot_b64f(const gn_quant4_state *q, int64_t r0, int64_t r1, const uint16_t *xf, float *out) {
    uint16_t tb[32]; // the 16 codes as bf16, twice (vpermw may see bit 4 set)
    for (int i = 0; i < 32; i++) tb[i] = gn_f32_to_bf16(q->code[i & 15]);
    const b64_kernel kn = {b64f_row_code, b64f_row_listed, b64f_row_careful, tb};
    b64_walk(q, r0, r1, xf, out, &kn);
}

// AVX2: 8 weights per vector; the 16-entry table is two 8-entry registers
// (low and high half) chosen by bit 3 of the code. Activations deinterleaved
// as for AVX-512 (runs of 32: 16 evens then 16 odds); 8 packed bytes feed 8
// even and 8 odd weights.
__attribute__((target("avx2,fma,f16c")))
static inline __m256 lut8_avx2(__m256i v, __m256 tlo, __m256 thi) {
    __m256 a = _mm256_permutevar8x32_ps(tlo, v), c = _mm256_permutevar8x32_ps(thi, v);
    return _mm256_blendv_ps(a, c, _mm256_castsi256_ps(_mm256_slli_epi32(v, 28)));
}

__attribute__((target("avx2,fma,f16c")))
static void rows_dot_tab_avx2(const gn_quant4_state *q, int64_t r0, int64_t r1, const float *xd, int nt, float *out,
                              int64_t ostride) {
    const int64_t C = q->cols, bs = q->blocksize, nb = C / bs;
    const gn_dtype wdt = q->wdtype;
    const __m256 clo = _mm256_loadu_ps(q->code), chi = _mm256_loadu_ps(q->code + 8);
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *p = q->packed + (r * C) / 2;
        const int64_t b0 = (r * C) / bs;
        __m256 acc[8];
        for (int t = 0; t < nt; t++) acc[t] = _mm256_setzero_ps();
        for (int64_t b = 0; b < nb; b++) {
            __m256 s = _mm256_set1_ps(gn_quant4_scale(q, b0 + b));
            __m256 tlo = round_w_avx2(_mm256_mul_ps(clo, s), wdt), thi = round_w_avx2(_mm256_mul_ps(chi, s), wdt);
            const uint8_t *pb = p + b * bs / 2;
            for (int64_t j = 0; j < bs; j += 32) {
                gn_prefetch_stream(pb + j / 2);
                for (int h = 0; h < 2; h++) { // 8 bytes = 8 even + 8 odd weights
                    int64_t w8;
                    memcpy(&w8, pb + j / 2 + 8 * h, 8);
                    __m256i v = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(w8));
                    __m256 we = lut8_avx2(_mm256_and_si256(_mm256_srli_epi32(v, 4), _mm256_set1_epi32(15)), tlo, thi);
                    __m256 wo = lut8_avx2(_mm256_and_si256(v, _mm256_set1_epi32(15)), tlo, thi);
                    const float *xb = xd + b * bs + j + 8 * h;
                    for (int t = 0; t < nt; t++) {
                        acc[t] = _mm256_fmadd_ps(we, _mm256_loadu_ps(xb + t * C), acc[t]);
                        acc[t] = _mm256_fmadd_ps(wo, _mm256_loadu_ps(xb + t * C + 16), acc[t]);
                    }
                }
            }
        }
        for (int t = 0; t < nt; t++) out[t * ostride + r] = hsum256_nf4(acc[t]);
    }
}

// AVX2 decode (one activation row) with bf16 weights (the QLoRA default) and blocks of a
// multiple of 64: the block's 16 possible weights bf16(code[i] * absmax) are split into two
// 16-byte tables, their low and high bytes, so one vpshufb looks up 32 bytes of 32 weights.
// The weights are bit-identical to the reference's (the same rounded products); only the
// order of the float32 sums differs (the bound test_nf4.c already uses). Per 64 weights: one
// 32-byte load, two nibble masks, four vpshufb, four byte unpacks to 16-bit words and a shift
// or a mask per 8 weights to float32: 12 shuffles where the table kernel above needs 20, and
// no per-weight blend. The order this leaves the weights in (vector v = 0..7, lane k = 0..7)
// is arranged into the activations beforehand (b64x_arrange):
//   element(v, k) = 2 * (16*(k/4) + 8*U + 2*(k%4) + sel) + S,  v = 4*S + 2*U + sel
// (S: odd element = low nibble; U: vpunpckhbw half; sel: high word of the dword).
static inline int b64x_elem(int v, int k) {
    const int S = v >> 2, U = (v >> 1) & 1, sel = v & 1, l = k >> 2, d = k & 3;
    return 2 * (16 * l + 8 * U + 2 * d + sel) + S;
}

// xd[g + 8v + k] = x[g + element(v, k)] for each run of 64 (C % 64 == 0)
static void b64x_arrange(const float *x, int64_t C, float *xd) {
    for (int64_t g = 0; g < C; g += 64)
        for (int i = 0; i < 64; i++) xd[g + i] = x[g + b64x_elem(i >> 3, i & 7)];
}

// one row from the arranged activations the plain way (a block with a non-finite scale)
static float b64x_row_scalar(const gn_quant4_state *q, int64_t r, const float *xd) {
    const int64_t C = q->cols;
    float s = 0.0f;
    for (int64_t g = 0; g < C; g += 64)
        for (int i = 0; i < 64; i++) {
            const int64_t e = r * C + g + b64x_elem(i >> 3, i & 7);
            s += round_w(q->code[nibble(q->packed, e)] * gn_quant4_scale(q, e / q->blocksize), q->wdtype) * xd[g + i];
        }
    return s;
}

// the two byte tables of bf16(code[i] * s), each 16 bytes in both lanes (s finite)
__attribute__((target("avx2,fma,f16c")))
static inline void b64x_tables(__m256 clo, __m256 chi, float s, __m256i *tl, __m256i *th) {
    const __m256 sv = _mm256_set1_ps(s);
    __m256i u0 = _mm256_castps_si256(_mm256_mul_ps(clo, sv)), u1 = _mm256_castps_si256(_mm256_mul_ps(chi, sv));
    const __m256i one = _mm256_set1_epi32(1), half = _mm256_set1_epi32(0x7fff);
    // round to nearest even on the upper 16 bits (gn_f32_to_bf16 for finite values)
    u0 = _mm256_srli_epi32(_mm256_add_epi32(u0, _mm256_add_epi32(_mm256_and_si256(_mm256_srli_epi32(u0, 16), one), half)), 16);
    u1 = _mm256_srli_epi32(_mm256_add_epi32(u1, _mm256_add_epi32(_mm256_and_si256(_mm256_srli_epi32(u1, 16), one), half)), 16);
    // words: lane 0 = codes 0-3, 8-11; lane 1 = codes 4-7, 12-15
    __m256i w = _mm256_packus_epi32(u0, u1);
    // per lane: low bytes of its 8 words, then high bytes
    w = _mm256_shuffle_epi8(w, _mm256_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15, 0, 2, 4, 6, 8, 10,
                                                12, 14, 1, 3, 5, 7, 9, 11, 13, 15));
    // dwords: [lo 0-3, lo 8-11, hi 0-3, hi 8-11 | lo 4-7, lo 12-15, hi 4-7, hi 12-15]
    *tl = _mm256_permutevar8x32_epi32(w, _mm256_setr_epi32(0, 4, 1, 5, 0, 4, 1, 5));
    *th = _mm256_permutevar8x32_epi32(w, _mm256_setr_epi32(2, 6, 3, 7, 2, 6, 3, 7));
}

// rows [r0, r1), one arranged activation row xd; rows start on block boundaries,
// blocksize % 64 == 0, wdtype BF16. A block with a non-finite scale takes the table kernel.
__attribute__((target("avx2,fma,f16c")))
static void rows_dot_b64x_avx2(const gn_quant4_state *q, int64_t r0, int64_t r1, const float *xd, float *out) {
    const int64_t C = q->cols, bs = q->blocksize, nb = C / bs;
    const __m256 clo = _mm256_loadu_ps(q->code), chi = _mm256_loadu_ps(q->code + 8);
    const __m256i m4 = _mm256_set1_epi8(15), hiw = _mm256_set1_epi32((int)0xffff0000u);
    __m256i tab[2 * 64]; // the tables of up to 64 blocks, built first: independent work, then the products
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *p = q->packed + (r * C) / 2;
        const int64_t b0 = (r * C) / bs;
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
        int ok = 1;
        for (int64_t c0 = 0; c0 < nb && ok; c0 += 64) {
            const int64_t c1 = nb - c0 < 64 ? nb : c0 + 64;
            for (int64_t b = c0; b < c1; b++) {
                const float s = gn_quant4_scale(q, b0 + b);
                if (!(fabsf(s) <= FLT_MAX)) { ok = 0; break; }
                b64x_tables(clo, chi, s, &tab[2 * (b - c0)], &tab[2 * (b - c0) + 1]);
            }
            if (!ok) break;
            for (int64_t b = c0; b < c1; b++) {
                const __m256i tl = tab[2 * (b - c0)], th = tab[2 * (b - c0) + 1];
                for (int64_t j = 0; j < bs; j += 64) {
                    const uint8_t *pb = p + (b * bs + j) / 2;
                    gn_prefetch_stream(pb);
                    const __m256i v = _mm256_loadu_si256((const __m256i *)pb);
                    const __m256i ih = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4), il = _mm256_and_si256(v, m4);
                    const float *x = xd + b * bs + j;
#define B64X_HALF(idx, xo)                                                                                    \
    do {                                                                                                      \
        const __m256i lo = _mm256_shuffle_epi8(tl, idx), hi = _mm256_shuffle_epi8(th, idx);                  \
        const __m256i wl = _mm256_unpacklo_epi8(lo, hi), wh = _mm256_unpackhi_epi8(lo, hi);                  \
        a0 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(wl, 16)), _mm256_load_ps(x + (xo)), a0);      \
        a1 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_and_si256(wl, hiw)), _mm256_load_ps(x + (xo) + 8), a1);  \
        a2 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(wh, 16)), _mm256_load_ps(x + (xo) + 16), a2); \
        a3 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_and_si256(wh, hiw)), _mm256_load_ps(x + (xo) + 24), a3); \
    } while (0)
                    B64X_HALF(ih, 0);
                    B64X_HALF(il, 32);
#undef B64X_HALF
                }
            }
        }
        out[r] = ok ? hsum256_nf4(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3))) : b64x_row_scalar(q, r, xd);
    }
}

// AVX2 decode with a bf16 compute dtype, blocks of a multiple of 64: integer dot products.
// The block scale is factored out of the block's sum, and both factors of each product are
// held as 15-bit integers, so one vpmaddwd does 16 multiply-adds:
//   out[r] = sum_g  s_b(g) * sx_g * sum_{i in g} cq_i * xq_i,     g = runs of 64 columns
//   cq_i = rne(code[q_i] * 16383)        (a constant 16-entry table, looked up by vpshufb)
//   xq_i = rne(x_i * 16383 / m_g),  sx_g = m_g / 16383^2,  m_g = max |x| over the run
// with x the input rounded to bf16 (the compute dtype), as the reference takes it. The sum
// of a run is exact in int32 (8 products of at most 16383^2 per lane stay below 2^31).
// The rule, against the dequantize-then-multiply reference (which rounds each weight
// code*s to bf16): per term the code is off by at most 0.5/16383 and the input by
// 0.5 * m_g/16383, where the reference's weight is off by up to 2^-9 of itself; the bound
// test_nf4.c checks is the sum of those three plus the float32 summation bound. No
// weight table is built per block: per 64 weights one load, three nibble ops, four
// vpshufb, four byte unpacks, four vpmaddwd, three adds and one convert + FMA.
// Rows with a non-finite or tiny (below 2^-30, not zero) block scale take the reference's
// per-element arithmetic; inputs with a non-finite value or a run whose largest magnitude is
// below 2^-60 (not zero) take the byte-table kernel.
#define I16_ONE 16383

// the arranged order of a run of 64: vector v (0..3) of 16 words, word k; v = 2*S + U
// (S: the low nibble = odd element; U: vpunpckhbw half), lane = k / 8
static inline int i16_elem(int v, int k) {
    const int S = v >> 1, U = v & 1, lane = k >> 3, m = k & 7;
    return 2 * (16 * lane + 8 * U + m) + S;
}

// Where word i (0..63) of run j's arrangement goes: the AVX2 kernel's runs one after another,
// or (pairs, the AVX-512 kernel) runs 2p and 2p+1 in one block of 128 words, their vectors
// interleaved by halves: vector v of run j at 32 v + 16 (j & 1) (a 512-bit vector of the pair
// is the two runs' 256-bit vectors side by side)
static inline int64_t i16_pos(int64_t j, int i, int pairs) {
    return pairs ? (j >> 1) * 128 + 32 * (i >> 4) + 16 * (j & 1) + (i & 15) : 64 * j + i;
}

// xq (C words arranged, or with pairs (C / 64 + 1) / 2 * 128: a lone last run's partner is
// zeros) and sx (C / 64) from x (already rounded to the compute dtype); 0 when some run holds
// a non-finite value or only values too small to scale
__attribute__((target("avx2,fma,f16c")))
static int i16_arrange(const float *x, int64_t C, int16_t *xq, float *sx, int pairs) {
    if (pairs && (C / 64) % 2) // the lone last run's partner halves
        for (int v = 0; v < 4; v++) memset(xq + (C / 64 / 2) * 128 + 32 * v + 16, 0, 16 * sizeof(int16_t));
    const __m256 absm = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    for (int64_t g = 0; g < C; g += 64) {
        __m256 mx = _mm256_setzero_ps(), nan = _mm256_setzero_ps();
        for (int i = 0; i < 64; i += 8) {
            const __m256 v = _mm256_loadu_ps(x + g + i);
            mx = _mm256_max_ps(mx, _mm256_and_ps(v, absm));
            nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q)); // max would drop a NaN
        }
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_shuffle_ps(m4, m4, 1));
        const float m = _mm_cvtss_f32(m4);
        if (_mm256_movemask_ps(nan) || !(m <= FLT_MAX)) return 0;
        if (m == 0.0f) {
            for (int i = 0; i < 64; i++) xq[i16_pos(g / 64, i, pairs)] = 0;
            sx[g / 64] = 0.0f;
            continue;
        }
        if (m < 0x1p-60f) return 0;
        const float inv = (float)I16_ONE / m;
        sx[g / 64] = (float)((double)m / ((double)I16_ONE * I16_ONE)); // both factors' scales
        for (int i = 0; i < 64; i++) {
            int v = _mm_cvtss_si32(_mm_set_ss(x[g + i16_elem(i >> 4, i & 15)] * inv)); // nearest even
            xq[i16_pos(g / 64, i, pairs)] = (int16_t)(v > I16_ONE ? I16_ONE : v < -I16_ONE ? -I16_ONE : v);
        }
    }
    return 1;
}

// the code table as 16-bit integers round(c * one) split into low-byte and high-byte
// vpshufb tables (16 bytes, both lanes); 0 when a code's magnitude exceeds 1 (not a
// normalized table). Decode uses one = I16_ONE, the GEMM IG_W.
static int i16_tables(const float *code, int one, uint8_t lo[16], uint8_t hi[16]) {
    for (int i = 0; i < 16; i++) {
        if (!(fabsf(code[i]) <= 1.0f)) return 0;
        const int16_t c = (int16_t)lrintf(code[i] * (float)one);
        lo[i] = (uint8_t)((uint16_t)c & 0xff);
        hi[i] = (uint8_t)((uint16_t)c >> 8);
    }
    return 1;
}

// one row the exact way (the reference's rounded weights), from the rounded input xr
static float i16_row_exact(const gn_quant4_state *q, int64_t r, const float *xr) {
    const int64_t C = q->cols;
    float s = 0.0f;
    for (int64_t c = 0; c < C; c++) {
        const int64_t e = r * C + c;
        s += round_w(q->code[nibble(q->packed, e)] * gn_quant4_scale(q, e / q->blocksize), q->wdtype) * xr[c];
    }
    return s;
}

// One run of 64 weights (32 packed bytes at pb) against its 64 arranged inputs: the exact
// int32 sum, as eight lanes of float32.
// The input's four 16-word vectors at x, x + st, x + 2 st, x + 3 st (st 16: the AVX2 layout;
// 32: one run of an AVX-512 pair, i16_pos).
__attribute__((target("avx2,fma,f16c"), always_inline))
static inline __m256 i16_run_st(const uint8_t *pb, const int16_t *x, __m256i tl, __m256i th, __m256i m4, const int st) {
    const __m256i v = _mm256_loadu_si256((const __m256i *)pb);
    const __m256i ih = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4), il = _mm256_and_si256(v, m4);
    __m256i lo = _mm256_shuffle_epi8(tl, ih), hi = _mm256_shuffle_epi8(th, ih);
    __m256i d0 = _mm256_madd_epi16(_mm256_unpacklo_epi8(lo, hi), _mm256_load_si256((const __m256i *)x));
    __m256i d1 = _mm256_madd_epi16(_mm256_unpackhi_epi8(lo, hi), _mm256_load_si256((const __m256i *)(x + st)));
    lo = _mm256_shuffle_epi8(tl, il);
    hi = _mm256_shuffle_epi8(th, il);
    __m256i d2 = _mm256_madd_epi16(_mm256_unpacklo_epi8(lo, hi), _mm256_load_si256((const __m256i *)(x + 2 * st)));
    __m256i d3 = _mm256_madd_epi16(_mm256_unpackhi_epi8(lo, hi), _mm256_load_si256((const __m256i *)(x + 3 * st)));
    return _mm256_cvtepi32_ps(_mm256_add_epi32(_mm256_add_epi32(d0, d1), _mm256_add_epi32(d2, d3)));
}
__attribute__((target("avx2,fma,f16c")))
static inline __m256 i16_run(const uint8_t *pb, const int16_t *x, __m256i tl, __m256i th, __m256i m4) {
    return i16_run_st(pb, x, tl, th, m4, 16);
}

// 1 when a block scale cannot be factored out: non-finite, or so small (below 2^-30, not
// zero) that s * sx would leave the normal range. On the bits, without a branch.
static inline unsigned i16_scale_bad(float s) {
    uint32_t u;
    memcpy(&u, &s, 4);
    u &= 0x7fffffffu;
    return (u != 0) & ((uint32_t)(u - 0x30800000u) > 0x7f7fffffu - 0x30800000u);
}

// i16_scale_bad on eight scales at once: all ones in the lanes whose scale cannot be factored out
__attribute__((target("avx2,fma,f16c")))
static inline __m256i i16_scale_bad8(__m256 s) {
    const __m256i u = _mm256_and_si256(_mm256_castps_si256(s), _mm256_set1_epi32(0x7fffffff));
    const __m256i small = _mm256_andnot_si256(_mm256_cmpeq_epi32(u, _mm256_setzero_si256()),
                                              _mm256_cmpgt_epi32(_mm256_set1_epi32(0x30800000), u));
    return _mm256_or_si256(small, _mm256_cmpgt_epi32(u, _mm256_set1_epi32(0x7f7fffff)));
}

// The scales of one nested group of blocks (double quantization): tab[c] = ncode[c] * nabs + offset
// for each 8-bit code c, rounded as gn_quant4_scale rounds them (a product, then a sum). 1 when
// one of them cannot be factored out (i16_scale_bad), bad8 then marking which; 0 otherwise.
__attribute__((target("avx2,fma,f16c")))
static int i16_group_scales(const gn_quant4_state *q, int64_t grp, float *tab, uint8_t *bad8) {
    const __m256 na = _mm256_set1_ps(q->nested_absmax[grp]), off = _mm256_set1_ps(q->offset);
    __m256i any = _mm256_setzero_si256();
    for (int i = 0; i < 256; i += 8) {
        const __m256 s = _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(q->nested_code + i), na), off);
        _mm256_store_ps(tab + i, s);
        any = _mm256_or_si256(any, i16_scale_bad8(s));
    }
    if (_mm256_testz_si256(any, any)) return 0;
    for (int i = 0; i < 256; i++) bad8[i] = (uint8_t)i16_scale_bad(tab[i]);
    return 1;
}

// One run's product scaled: the run's int32 sum (as float) times its block scale *s times the
// input run's scale *sx, into acc. Both scales come from memory as broadcasts (loads, no shuffle).
__attribute__((target("avx2,fma,f16c")))
static inline __m256 i16_step(const uint8_t *pb, const int16_t *x, const float *s, const float *sx, __m256 acc,
                              __m256i tl, __m256i th, __m256i m4) {
    const __m256 sc = _mm256_mul_ps(_mm256_broadcast_ss(s), _mm256_broadcast_ss(sx));
    return _mm256_fmadd_ps(i16_run(pb, x, tl, th, m4), sc, acc);
}

// Runs g..g1-1 of one row (packed bytes p, block scales sc[g] or, with dq, sc[qg[g]]): even runs
// into *a0 and odd runs into *a1, two runs a step, so the sums and their order do not depend on
// where a span starts.
__attribute__((target("avx2,fma,f16c"), always_inline))
static inline void i16_span(const uint8_t *p, const int16_t *xq, const float *sx, int64_t g, int64_t g1, int dq,
                            const uint8_t *qg, const float *sc, __m256 *a0, __m256 *a1, __m256i tl, __m256i th,
                            __m256i m4, int64_t C) {
    __m256 acc0 = *a0, acc1 = *a1;
#define I16_S(h) (dq ? sc + qg[h] : sc + (h))
    if ((g & 1) && g < g1) {
        acc1 = i16_step(p + g * 32, xq + g * 64, I16_S(g), sx + g, acc1, tl, th, m4);
        g++;
    }
    for (; g + 1 < g1; g += 2) {
        gn_prefetch_row(p + g * 32, C);
        acc0 = i16_step(p + g * 32, xq + g * 64, I16_S(g), sx + g, acc0, tl, th, m4);
        acc1 = i16_step(p + g * 32 + 32, xq + g * 64 + 64, I16_S(g + 1), sx + g + 1, acc1, tl, th, m4);
    }
    if (g < g1) acc0 = i16_step(p + g * 32, xq + g * 64, I16_S(g), sx + g, acc0, tl, th, m4);
#undef I16_S
    *a0 = acc0;
    *a1 = acc1;
}

// 1 when one of the n scales s cannot be factored out (i16_scale_bad)
__attribute__((target("avx2,fma,f16c")))
static unsigned i16_scales_bad(const float *s, int64_t n) {
    __m256i any = _mm256_setzero_si256();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) any = _mm256_or_si256(any, i16_scale_bad8(_mm256_loadu_ps(s + i)));
    unsigned bad = !_mm256_testz_si256(any, any);
    for (; i < n; i++) bad |= i16_scale_bad(s[i]);
    return bad;
}

// Runs g..g1-1 of two rows (A and B) against the same inputs: each row as i16_span does it (its
// accumulators a[0], a[1] and b[0], b[1], the same order), the input runs loaded once for both.
__attribute__((target("avx2,fma,f16c"), always_inline))
static inline void i16_span2(const uint8_t *pa, const uint8_t *pb, const int16_t *xq, const float *sx, int64_t g,
                             int64_t g1, int dq, const uint8_t *qa, const uint8_t *qb, const float *sa,
                             const float *sb, __m256 *a, __m256 *b, __m256i tl, __m256i th, __m256i m4, int64_t C) {
    __m256 a0 = a[0], a1 = a[1], b0 = b[0], b1 = b[1];
#define I16_SA(h) (dq ? sa + qa[h] : sa + (h))
#define I16_SB(h) (dq ? sb + qb[h] : sb + (h))
    if ((g & 1) && g < g1) {
        a1 = i16_step(pa + g * 32, xq + g * 64, I16_SA(g), sx + g, a1, tl, th, m4);
        b1 = i16_step(pb + g * 32, xq + g * 64, I16_SB(g), sx + g, b1, tl, th, m4);
        g++;
    }
    for (; g + 1 < g1; g += 2) {
        gn_prefetch_row(pa + g * 32, C);
        gn_prefetch_row(pb + g * 32, C);
        a0 = i16_step(pa + g * 32, xq + g * 64, I16_SA(g), sx + g, a0, tl, th, m4);
        b0 = i16_step(pb + g * 32, xq + g * 64, I16_SB(g), sx + g, b0, tl, th, m4);
        a1 = i16_step(pa + g * 32 + 32, xq + g * 64 + 64, I16_SA(g + 1), sx + g + 1, a1, tl, th, m4);
        b1 = i16_step(pb + g * 32 + 32, xq + g * 64 + 64, I16_SB(g + 1), sx + g + 1, b1, tl, th, m4);
    }
    if (g < g1) {
        a0 = i16_step(pa + g * 32, xq + g * 64, I16_SA(g), sx + g, a0, tl, th, m4);
        b0 = i16_step(pb + g * 32, xq + g * 64, I16_SB(g), sx + g, b0, tl, th, m4);
    }
#undef I16_SA
#undef I16_SB
    a[0] = a0, a[1] = a1, b[0] = b0, b[1] = b1;
}

// The scale tables of the nested groups a thread is in (at most three at a time for rows of up
// to 256 blocks), direct-mapped by group number
typedef struct {
    float tab[4][256];
    uint8_t bad8[4][256];
    int64_t grp[4];
    int bad[4];
} i16_gcache;

// The scale table of group grp (built when not cached), with *bad or-ed with the flags of the
// scales that the runs g..g1-1 of a row (their codes qg[g..g1-1]) use
__attribute__((target("avx2,fma,f16c")))
static const float *i16_gtab(const gn_quant4_state *q, i16_gcache *c, int64_t grp, const uint8_t *qg, int64_t g,
                             int64_t g1, unsigned *bad) {
    const int k = (int)(grp & 3);
    if (c->grp[k] != grp) {
        c->bad[k] = i16_group_scales(q, grp, c->tab[k], c->bad8[k]);
        c->grp[k] = grp;
    }
    if (c->bad[k])
        for (int64_t h = g; h < g1; h++) *bad |= c->bad8[k][qg[h]];
    return c->tab[k];
}

// AVX-512 without BF16 dot products (Skylake-SP to Ice Lake; AVX2 code otherwise): the same
// integer decode, two runs a 512-bit vector (i16_arrange's pairs): the even run in the low
// half, the odd run in the high half, so the AVX2 kernel's two accumulators of a row (even and
// odd runs) are the halves of one register, and every lane's products, int32 sums, scale
// products and FMAs are the AVX2 kernel's in the same order: the same bits, the same rule.
// A run without its partner (a span starting on an odd run, or ending on an even one) takes
// the AVX2 run on its half.
#define I16_512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c"), always_inline))

// acc + the pairwise products of a and b (vpdpwssd; in asm: the spans are compiled without the
// AVX512_VNNI target and run it only in their VNNI instantiation)
I16_512 static inline __m512i i16_dp(__m512i acc, __m512i a, __m512i b) {
    __asm__("vpdpwssd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b));
    return acc;
}

// vnni (a constant): the four products and their sum as vpdpwssd, into one chain: the same
// int32 sums (each lane's eight products and every partial sum of them stay below 2^31)
I16_512 static inline __m512 i16_run2(const uint8_t *pb, const int16_t *x, __m512i tl, __m512i th, __m512i m4,
                                      const int vnni) {
    const __m512i v = _mm512_loadu_si512(pb);
    const __m512i ih = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4), il = _mm512_and_si512(v, m4);
    __m512i lo = _mm512_shuffle_epi8(tl, ih), hi = _mm512_shuffle_epi8(th, ih);
    if (vnni) {
        __m512i d = i16_dp(_mm512_setzero_si512(), _mm512_unpacklo_epi8(lo, hi), _mm512_load_si512(x));
        d = i16_dp(d, _mm512_unpackhi_epi8(lo, hi), _mm512_load_si512(x + 32));
        lo = _mm512_shuffle_epi8(tl, il);
        hi = _mm512_shuffle_epi8(th, il);
        d = i16_dp(d, _mm512_unpacklo_epi8(lo, hi), _mm512_load_si512(x + 64));
        d = i16_dp(d, _mm512_unpackhi_epi8(lo, hi), _mm512_load_si512(x + 96));
        return _mm512_cvtepi32_ps(d);
    }
    __m512i d0 = _mm512_madd_epi16(_mm512_unpacklo_epi8(lo, hi), _mm512_load_si512(x));
    __m512i d1 = _mm512_madd_epi16(_mm512_unpackhi_epi8(lo, hi), _mm512_load_si512(x + 32));
    lo = _mm512_shuffle_epi8(tl, il);
    hi = _mm512_shuffle_epi8(th, il);
    __m512i d2 = _mm512_madd_epi16(_mm512_unpacklo_epi8(lo, hi), _mm512_load_si512(x + 64));
    __m512i d3 = _mm512_madd_epi16(_mm512_unpackhi_epi8(lo, hi), _mm512_load_si512(x + 96));
    return _mm512_cvtepi32_ps(_mm512_add_epi32(_mm512_add_epi32(d0, d1), _mm512_add_epi32(d2, d3)));
}

// runs g and g + 1 of a row into acc: scales *sa, *sb (blocks) times sx[0], sx[1] (inputs)
I16_512 static inline __m512 i16_step2(const uint8_t *p, int64_t g, const int16_t *xq, const float *sa, const float *sb,
                                       const float *sx, __m512 acc, __m512i tl, __m512i th, __m512i m4,
                                       const int vnni) {
    const __m512 s = _mm512_mask_broadcastss_ps(_mm512_set1_ps(*sa), 0xff00, _mm_load_ss(sb));
    const __m512 x = _mm512_mask_broadcastss_ps(_mm512_set1_ps(sx[0]), 0xff00, _mm_load_ss(sx + 1));
    return _mm512_fmadd_ps(i16_run2(p + g * 32, xq + (g >> 1) * 128, tl, th, m4, vnni), _mm512_mul_ps(s, x), acc);
}

// run g alone into its half of acc (the high half for an odd run)
I16_512 static inline __m512 i16_lone(const uint8_t *p, int64_t g, const int16_t *xq, const float *s, const float *sx,
                                      __m512 acc, __m512i tl, __m512i th, __m512i m4) {
    const int hi = (int)(g & 1);
    const __m256 f = i16_run_st(p + g * 32, xq + (g >> 1) * 128 + 16 * hi, _mm512_castsi512_si256(tl),
                                _mm512_castsi512_si256(th), _mm512_castsi512_si256(m4), 32);
    const __m256 sc = _mm256_mul_ps(_mm256_broadcast_ss(s), _mm256_broadcast_ss(sx));
    const __m512d a = _mm512_castps_pd(acc);
    const __m256 h = _mm256_castpd_ps(hi ? _mm512_extractf64x4_pd(a, 1) : _mm512_castpd512_pd256(a));
    const __m256d r = _mm256_castps_pd(_mm256_fmadd_ps(f, sc, h));
    return _mm512_castpd_ps(hi ? _mm512_insertf64x4(a, r, 1) : _mm512_insertf64x4(a, r, 0));
}

// i16_span on one 512-bit accumulator
I16_512 static inline __m512 i16_span512(const uint8_t *p, const int16_t *xq, const float *sx, int64_t g, int64_t g1,
                                         int dq, const uint8_t *qg, const float *sc, __m512 acc, __m512i tl,
                                         __m512i th, __m512i m4, int64_t C, const int vnni) {
#define I16_S(h) (dq ? sc + qg[h] : sc + (h))
    if ((g & 1) && g < g1) {
        acc = i16_lone(p, g, xq, I16_S(g), sx + g, acc, tl, th, m4);
        g++;
    }
    for (; g + 1 < g1; g += 2) {
        gn_prefetch_row(p + g * 32, C);
        acc = i16_step2(p, g, xq, I16_S(g), I16_S(g + 1), sx + g, acc, tl, th, m4, vnni);
    }
    if (g < g1) acc = i16_lone(p, g, xq, I16_S(g), sx + g, acc, tl, th, m4);
#undef I16_S
    return acc;
}

// i16_span2 on two 512-bit accumulators (rows A and B)
I16_512 static inline void i16_span2_512(const uint8_t *pa, const uint8_t *pb, const int16_t *xq, const float *sx,
                                         int64_t g, int64_t g1, int dq, const uint8_t *qa, const uint8_t *qb,
                                         const float *sa, const float *sb, __m512 *a, __m512 *b, __m512i tl,
                                         __m512i th, __m512i m4, int64_t C, const int vnni) {
#define I16_SA(h) (dq ? sa + qa[h] : sa + (h))
#define I16_SB(h) (dq ? sb + qb[h] : sb + (h))
    __m512 a0 = *a, b0 = *b;
    if ((g & 1) && g < g1) {
        a0 = i16_lone(pa, g, xq, I16_SA(g), sx + g, a0, tl, th, m4);
        b0 = i16_lone(pb, g, xq, I16_SB(g), sx + g, b0, tl, th, m4);
        g++;
    }
    for (; g + 1 < g1; g += 2) {
        gn_prefetch_row(pa + g * 32, C);
        gn_prefetch_row(pb + g * 32, C);
        a0 = i16_step2(pa, g, xq, I16_SA(g), I16_SA(g + 1), sx + g, a0, tl, th, m4, vnni);
        b0 = i16_step2(pb, g, xq, I16_SB(g), I16_SB(g + 1), sx + g, b0, tl, th, m4, vnni);
    }
    if (g < g1) {
        a0 = i16_lone(pa, g, xq, I16_SA(g), sx + g, a0, tl, th, m4);
        b0 = i16_lone(pb, g, xq, I16_SB(g), sx + g, b0, tl, th, m4);
    }
#undef I16_SA
#undef I16_SB
    *a = a0, *b = b0;
}

// The spans above as calls from the AVX2 row walk (rows_dot_i16_b64_avx2), its accumulators
// a[2] (and b[2]: even runs, odd runs) the low and high halves of one 512-bit register, the
// code tables as the 16-byte rows lo8, hi8; each in two instantiations, vnni 0 and 1
I16_512 static inline void i16_span512_do(const uint8_t *p, const int16_t *xq, const float *sx, int64_t g, int64_t g1,
                                          int dq, const uint8_t *qg, const float *sc, __m256 *a, const uint8_t *lo8,
                                          const uint8_t *hi8, int64_t C, const int vnni) {
    const __m512i tl = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)lo8));
    const __m512i th = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)hi8));
    const __m512 acc = i16_span512(p, xq, sx, g, g1, dq, qg, sc, _mm512_loadu_ps((const float *)a), tl, th,
                                   _mm512_set1_epi8(15), C, vnni);
    _mm512_storeu_ps((float *)a, acc);
}
I16_512 static inline void i16_span2_512_do(const uint8_t *pa, const uint8_t *pb, const int16_t *xq, const float *sx,
                                            int64_t g, int64_t g1, int dq, const uint8_t *qa, const uint8_t *qb,
                                            const float *sa, const float *sb, __m256 *a, __m256 *b, const uint8_t *lo8,
                                            const uint8_t *hi8, int64_t C, const int vnni) {
    const __m512i tl = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)lo8));
    const __m512i th = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)hi8));
    __m512 va = _mm512_loadu_ps((const float *)a), vb = _mm512_loadu_ps((const float *)b);
    i16_span2_512(pa, pb, xq, sx, g, g1, dq, qa, qb, sa, sb, &va, &vb, tl, th, _mm512_set1_epi8(15), C, vnni);
    _mm512_storeu_ps((float *)a, va);
    _mm512_storeu_ps((float *)b, vb);
}
#define I16_CALLS(suffix, vnni)                                                                                  \
    __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c"))) static void i16_span512_call##suffix(       \
        const uint8_t *p, const int16_t *xq, const float *sx, int64_t g, int64_t g1, int dq, const uint8_t *qg,      \
        const float *sc, __m256 *a, const uint8_t *lo8, const uint8_t *hi8, int64_t C) {                           \
        i16_span512_do(p, xq, sx, g, g1, dq, qg, sc, a, lo8, hi8, C, vnni);                                      \
    }                                                                                                            \
    __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c"))) static void i16_span2_512_call##suffix(     \
        const uint8_t *pa, const uint8_t *pb, const int16_t *xq, const float *sx, int64_t g, int64_t g1, int dq,     \
        const uint8_t *qa, const uint8_t *qb, const float *sa, const float *sb, __m256 *a, __m256 *b,              \
        const uint8_t *lo8, const uint8_t *hi8, int64_t C) {                                                      \
        i16_span2_512_do(pa, pb, xq, sx, g, g1, dq, qa, qb, sa, sb, a, b, lo8, hi8, C, vnni);                    \
    }
I16_CALLS(, 0)
I16_CALLS(_vnni, 1)
#undef I16_CALLS
#undef I16_512

// the layouts the 512-bit spans take (rows_dot_i16_b64_avx2 with wide): blocks of 64, nested groups (if any) a power of two of
// at least 128 blocks (the AVX2 kernel's fast case; bitsandbytes writes 256)
static int i16_b64_ok(const gn_quant4_state *q) {
    const int64_t nbs = q->nested_blocksize;
    return q->blocksize == 64 && (!q->nested || (nbs >= 128 && (nbs & (nbs - 1)) == 0));
}

// Blocks of 64 (QLoRA's layout), with double quantization when the nested block size is a
// power of two of at least 128 blocks (bitsandbytes uses 256), or without. The scale of a
// block comes from a table of the nested group's 256 possible scales (built once per group,
// checked once per group), so a run costs its vector work plus two broadcasts, a product and a
// byte load. Rows go in pairs that share each load of the inputs (a row of 11008 inputs is
// 22 KB of them: L1 holds them for one pass, not for one pass a row while the weights stream
// through). Each row sums as the general loop below does (two accumulators, even and odd
// runs, in order), so the same sums. wide: the inputs in i16_arrange's pairs and each span the
// 512-bit kernel's (AVX-512 without BF16 dot products; the same sums in the same order); 2: its
// vpdpwssd instantiation (AVX512_VNNI).
__attribute__((target("avx2,fma,f16c")))
static void rows_dot_i16_b64_avx2(const gn_quant4_state *q, int64_t r0, int64_t r1, const int16_t *xq,
                                  const float *sx, const float *xr, float *out, __m256i tl, __m256i th, int wide,
                                  const uint8_t *lo8, const uint8_t *hi8) {
    const int64_t C = q->cols, ng = C / 64;
    const int dq = q->nested, nsh = dq ? __builtin_ctzll((unsigned long long)q->nested_blocksize) : 0;
    const __m256i m4 = _mm256_set1_epi8(15);
    i16_gcache gc __attribute__((aligned(32)));
    for (int k = 0; k < 4; k++) gc.grp[k] = -1;
#define I16_SPAN(p, g, g1, dq_, qg, sc, acc)                                                                     \
    do {                                                                                                         \
        if (wide == 2) i16_span512_call_vnni(p, xq, sx, g, g1, dq_, qg, sc, acc, lo8, hi8, C);                  \
        else if (wide) i16_span512_call(p, xq, sx, g, g1, dq_, qg, sc, acc, lo8, hi8, C);                       \
        else i16_span(p, xq, sx, g, g1, dq_, qg, sc, &(acc)[0], &(acc)[1], tl, th, m4, C);                       \
    } while (0)
#define I16_SPAN2(pa_, pb_, g, g1, dq_, qa_, qb_, sa, sb)                                                        \
    do {                                                                                                         \
        if (wide == 2) i16_span2_512_call_vnni(pa_, pb_, xq, sx, g, g1, dq_, qa_, qb_, sa, sb, a, b, lo8, hi8, C); \
        else if (wide) i16_span2_512_call(pa_, pb_, xq, sx, g, g1, dq_, qa_, qb_, sa, sb, a, b, lo8, hi8, C);  \
        else i16_span2(pa_, pb_, xq, sx, g, g1, dq_, qa_, qb_, sa, sb, a, b, tl, th, m4, C);                     \
    } while (0)
    for (int64_t r = r0; r < r1; r += 2) {
        const int two = r + 1 < r1;
        const uint8_t *pa = q->packed + (r * C) / 2, *pb = two ? pa + C / 2 : pa;
        const int64_t ba = r * ng, bb = ba + (two ? ng : 0);
        __m256 a[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()}, b[2] = {a[0], a[1]};
        unsigned bada = 0, badb = 0;
        if (!dq) {
            bada = i16_scales_bad(q->absmax + ba, ng);
            if (two) {
                badb = i16_scales_bad(q->absmax + bb, ng);
                I16_SPAN2(pa, pb, 0, ng, 0, NULL, NULL, q->absmax + ba, q->absmax + bb);
            } else I16_SPAN(pa, 0, ng, 0, NULL, q->absmax + ba, a);
        } else {
            const uint8_t *qa = q->qabsmax + ba, *qb = q->qabsmax + bb;
            for (int64_t g = 0; g < ng;) {
                const int64_t ga = (ba + g) >> nsh, gb = (bb + g) >> nsh;
                int64_t end = ((ga + 1) << nsh) - ba;
                if (((gb + 1) << nsh) - bb < end) end = ((gb + 1) << nsh) - bb;
                if (end > ng) end = ng;
                const float *ta = i16_gtab(q, &gc, ga, qa, g, end, &bada);
                if (!two) {
                    I16_SPAN(pa, g, end, 1, qa, ta, a);
                } else if (gb != ga && ((gb - ga) & 3) == 0) { // one slot: one row, then the other
                    I16_SPAN(pa, g, end, 1, qa, ta, a);
                    const float *tb = i16_gtab(q, &gc, gb, qb, g, end, &badb);
                    I16_SPAN(pb, g, end, 1, qb, tb, b);
                } else {
                    const float *tb = i16_gtab(q, &gc, gb, qb, g, end, &badb);
                    I16_SPAN2(pa, pb, g, end, 1, qa, qb, ta, tb);
                }
                g = end;
            }
        }
        out[r] = bada ? i16_row_exact(q, r, xr) : hsum256_nf4(_mm256_add_ps(a[0], a[1]));
        if (two) out[r + 1] = badb ? i16_row_exact(q, r + 1, xr) : hsum256_nf4(_mm256_add_ps(b[0], b[1]));
    }
#undef I16_SPAN
#undef I16_SPAN2
}

__attribute__((target("avx2,fma,f16c")))
// wide (i16_b64_ok states only): the inputs in i16_arrange's pairs, the 512-bit spans (2: with vpdpwssd)
static void rows_dot_i16_avx2(const gn_quant4_state *q, int64_t r0, int64_t r1, const int16_t *xq, const float *sx,
                              const float *xr, float *out, int wide) {
    const int64_t C = q->cols, bs = q->blocksize, ng = C / 64, gpb = bs / 64;
    uint8_t lo8[16], hi8[16];
    if (!i16_tables(q->code, I16_ONE, lo8, hi8)) {
        for (int64_t r = r0; r < r1; r++) out[r] = i16_row_exact(q, r, xr);
        return;
    }
    const __m256i tl = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)lo8));
    const __m256i th = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)hi8));
    if (i16_b64_ok(q)) {
        rows_dot_i16_b64_avx2(q, r0, r1, xq, sx, xr, out, tl, th, wide, lo8, hi8);
        return;
    }
    GN_ASSERT(!wide);
    const __m256i m4 = _mm256_set1_epi8(15);
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *p = q->packed + (r * C) / 2;
        const int64_t b0 = (r * C) / bs;
        __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
        float s = 0.0f;
        int ok = 1;
        for (int64_t g = 0; g < ng; g++) {
            if (g % gpb == 0) {
                s = gn_quant4_scale(q, b0 + g / gpb);
                // non-finite, or so small that s * sx would leave the normal range
                if (!(fabsf(s) <= FLT_MAX) || (s != 0.0f && fabsf(s) < 0x1p-30f)) { ok = 0; break; }
            }
            const uint8_t *pb = p + g * 32;
            if ((g & 1) == 0) gn_prefetch_row(pb, C);
            const __m256 f = i16_run(pb, xq + g * 64, tl, th, m4);
            const __m256 sc = _mm256_set1_ps(s * sx[g]);
            if (g & 1) acc1 = _mm256_fmadd_ps(f, sc, acc1);
            else acc0 = _mm256_fmadd_ps(f, sc, acc0);
        }
        out[r] = ok ? hsum256_nf4(_mm256_add_ps(acc0, acc1)) : i16_row_exact(q, r, xr);
    }
}


// ----------------------------------------------------------------------------
// dispatched dequantization

static int have_f16c(void) {
    static int v = -1;
    if (v < 0) { __builtin_cpu_init(); v = __builtin_cpu_supports("f16c") ? 1 : 0; }
    return v;
}

// The SIMD paths need 16 | blocksize (always true for a valid state).
static gn_simd level_for(const gn_quant4_state *q) {
    gn_simd l = gn_simd_level();
    if (q->blocksize % 16 != 0) return GN_SIMD_SCALAR;
    if (l == GN_SIMD_AVX2 && !have_f16c()) return GN_SIMD_SCALAR;
    return l;
}

static void deq_range(const gn_quant4_state *q, int64_t e0, int64_t n, float *dst, gn_dtype wdt) {
    switch (level_for(q)) {
    case GN_SIMD_AVX512: deq_range_avx512(q, e0, n, dst, wdt); break;
    case GN_SIMD_AVX2: deq_range_avx2(q, e0, n, dst, wdt); break;
    default: deq_range_scalar(q, e0, n, dst, wdt); break;
    }
}

void gn_dequantize_4bit_range(const gn_quant4_state *q, int64_t e0, int64_t n, float *dst) {
    deq_range(q, e0, n, dst, GN_DTYPE_F32);
}

void gn_dequantize_4bit(const gn_quant4_state *q, float *dst) {
    const int64_t chunk = 1 << 16;
    int64_t nch = (q->nelem + chunk - 1) / chunk;
    #pragma omp parallel for schedule(static) if (nch > 1)
    for (int64_t c = 0; c < nch; c++) {
        int64_t e0 = c * chunk, n = q->nelem - e0 < chunk ? q->nelem - e0 : chunk;
        gn_dequantize_4bit_range(q, e0, n, dst + e0);
    }
}

// ----------------------------------------------------------------------------
// matmul: out (T, rows) = inp (T, cols) @ W^T

void gn_nf4_matmul_ref(float *out, const float *inp, const gn_quant4_state *w, int64_t T) {
    const int64_t R = w->rows, C = w->cols;
    for (int64_t t = 0; t < T; t++)
        for (int64_t r = 0; r < R; r++) {
            double s = 0.0;
            for (int64_t i = 0; i < C; i++) {
                int64_t e = r * C + i;
                float wv = round_w(w->code[nibble(w->packed, e)] * gn_quant4_scale(w, e / w->blocksize), w->wdtype);
                s += (double)wv * round_w(inp[t * C + i], w->wdtype);
            }
            out[t * R + r] = round_w((float)s, w->wdtype);
        }
}

static void blas_single_thread(void) {
    static int done;
    if (!done) { openblas_set_num_threads(1); done = 1; }
}

#define NF4_SMALL_T 16 // up to this many rows: fused kernel; above: dequantized tiles + sgemm

// GN_NF4_NO_BF16DOT=1: keep the f32 table kernel even where AVX512_BF16 exists (tests, comparisons)
static int getenv_nobf16(void) { static int v = -1; return gn_env_switch("GN_NF4_NO_BF16DOT", &v); }

static int getenv_nob64x(void) { static int v = -1; return gn_env_switch("GN_NF4_NO_B64X", &v); }

static int getenv_exact_decode(void) { static int v = -1; return gn_env_switch("GN_NF4_EXACT_DECODE", &v); }

// GN_NF4_NN_COPY=1: the input gradient's GEMM through a bf16 copy of W (the path before the panel packer)
static int getenv_nn_copy(void) { static int v = -1; return gn_env_switch("GN_NF4_NN_COPY", &v); }

static int small_t_ok(const gn_quant4_state *w, int64_t T, gn_simd lvl) {
    return T >= 1 && T <= NF4_SMALL_T && lvl != GN_SIMD_SCALAR && w->cols > 0 && w->cols % w->blocksize == 0 &&
           w->blocksize % 32 == 0 && w->cols <= INT_MAX / 16;
}

static void nf4_matmul_each(float **outs, const float *inp, const gn_quant4_state *const *ws, int n, int64_t T);

// Row blocks [b0, b1) of the n matrices (block b of matrix i at start[i] + b), the kernel
// run once per matrix in them, so the b64 kernel walks many rows per call.
static void nf4_multi_range(float **outs, const gn_quant4_state *const *ws, int n, int64_t T, const float *xd,
                            const int64_t *start, int bf, int x64, int i16, gn_simd lvl, gn_dtype cdt, int64_t bl0,
                            int64_t bl1) {
    const int64_t C = ws[0]->cols, RB = 16, xq_f = (C / 64 + 1) / 2 * 64; // xq_f as nf4_multi: xq's room in floats
    const uint16_t *xh = (const uint16_t *)xd;
    const int vnni = i16 == 2 && have_vnni(); // the 512-bit integer spans' vpdpwssd instantiation
    for (int i = 0; i < n; i++) {
        const int64_t s0 = bl0 > start[i] ? bl0 : start[i], s1 = bl1 < start[i + 1] ? bl1 : start[i + 1];
        if (s0 >= s1) continue;
        const gn_quant4_state *w = ws[i];
        const int64_t R = w->rows, r0 = (s0 - start[i]) * RB, r1 = (s1 - start[i]) * RB < R ? (s1 - start[i]) * RB : R;
        for (int64_t t0 = 0; t0 < T; t0 += 8) {
            int nt = T - t0 < 8 ? (int)(T - t0) : 8;
            if (bf == 2) rows_dot_b64f(w, r0, r1, xh, outs[i]); // T == 1
            else if (bf && nt == 1 && w->blocksize == 64) rows_dot_bf16w_b64(w, r0, r1, xh + t0 * C, outs[i] + t0 * R);
            else if (bf) rows_dot_bf16w(w, r0, r1, xh + t0 * C, nt, outs[i] + t0 * R, R);
            else if (i16) rows_dot_i16_avx2(w, r0, r1, (const int16_t *)(xd + C), xd + C + xq_f, xd, outs[i],
                                            i16 == 2 ? 1 + vnni : 0);
            else if (x64) rows_dot_b64x_avx2(w, r0, r1, xd, outs[i]);
            else if (lvl == GN_SIMD_AVX512) rows_dot_tab_avx512(w, r0, r1, xd + t0 * C, nt, outs[i] + t0 * R, R);
            else rows_dot_tab_avx2(w, r0, r1, xd + t0 * C, nt, outs[i] + t0 * R, R);
            if (cdt != GN_DTYPE_F32)
                for (int t = 0; t < nt; t++) round_act(outs[i] + (t0 + t) * R + r0, r1 - r0, cdt);
        }
    }
}

// GN_NF4_STATIC_SPLIT=1: each thread one fixed share of the row blocks (before the shared counter)
static int getenv_static_split(void) { static int v = -1; return gn_env_switch("GN_NF4_STATIC_SPLIT", &v); }

// Thread th of nth takes stretches of the row blocks from the shared counter *next (zero when the
// team starts) until none is left: a core that runs slower (another tenant, a busier memory
// channel) takes fewer stretches instead of making the other wait at the barrier (the static
// halves left a core idle 6% of a 1.1B decode, 3% after). The counter is touched a few dozen
// times a product. Each row's result does not depend on which thread made it. next NULL: one
// fixed contiguous share a thread.
static void nf4_multi_part(float **outs, const gn_quant4_state *const *ws, int n, int64_t T, const float *xd,
                           const int64_t *start, int64_t total, int bf, int x64, int i16, gn_simd lvl, gn_dtype cdt,
                           int64_t th, int64_t nth, int64_t *next) {
    if (!next || nth == 1 || getenv_static_split()) {
        nf4_multi_range(outs, ws, n, T, xd, start, bf, x64, i16, lvl, cdt, total * th / nth, total * (th + 1) / nth);
        return;
    }
    // guided: a stretch is a quarter of what is left over the threads, at least one block, so the
    // last stretches are short and the threads finish together
    int64_t b0 = __atomic_load_n(next, __ATOMIC_RELAXED);
    for (;;) {
        if (b0 >= total) break;
        int64_t ch = (total - b0) / (4 * nth);
        if (ch < 1) ch = 1;
        if (!__atomic_compare_exchange_n(next, &b0, b0 + ch, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) continue; // b0 reloaded
        nf4_multi_range(outs, ws, n, T, xd, start, bf, x64, i16, lvl, cdt, b0, b0 + ch < total ? b0 + ch : total);
        b0 = __atomic_load_n(next, __ATOMIC_RELAXED);
    }
}

// team: called by every thread of the enclosing parallel region, each doing its share
// (no barrier at the end); else opens its own region.
static void nf4_multi(float **outs, const float *inp, const gn_quant4_state *const *ws, int n, int64_t T, int team,
                      int64_t *next) {
    if (n <= 0 || T <= 0) return;
    gn_simd lvl = level_for(ws[0]);
    const int64_t C = ws[0]->cols;
    int ok = 1;
    const gn_dtype cdt = ws[0]->wdtype; // the compute dtype: inputs and outputs rounded to it
    for (int i = 0; i < n; i++)
        ok &= ws[i]->cols == C && level_for(ws[i]) == lvl && small_t_ok(ws[i], T, lvl) && ws[i]->wdtype == cdt;
    if (!ok) {
        if (team) {
            #pragma omp single
            nf4_matmul_each(outs, inp, ws, n, T); // its parallel regions run on this one thread here
            return;
        }
        nf4_matmul_each(outs, inp, ws, n, T);
        return;
    }
    // decode and small batches: the fused table kernel, weights read once per 8
    // activation rows; the row blocks of all n matrices (same input) share one
    // parallel loop, so q/k/v or gate/up cost one fork/join, not n
    int bf = lvl == GN_SIMD_AVX512 && have_bf16_dot() && !getenv_nobf16();
    for (int i = 0; i < n; i++) bf &= ws[i]->wdtype == GN_DTYPE_BF16 && ws[i]->blocksize % 64 == 0;
    // one row, all blocks of 64: the factored kernel (rows_dot_b64f; GN_NF4_EXACT_DECODE=1: the table kernel)
    if (bf && T == 1 && !getenv_exact_decode()) {
        bf = 2;
        for (int i = 0; i < n; i++) bf = ws[i]->blocksize == 64 ? bf : 1;
    }
    // AVX2 decode with bf16 weights and 64-multiple blocks (and AVX-512 without BF16 dot
    // products): the byte-table kernel (GN_NF4_NO_B64X=1: the table kernel)
    int x64 = (lvl == GN_SIMD_AVX2 || (lvl == GN_SIMD_AVX512 && !bf)) && T == 1 && !getenv_nob64x();
    for (int i = 0; i < n; i++) x64 &= ws[i]->wdtype == GN_DTYPE_BF16 && ws[i]->blocksize % 64 == 0;
    // ... and before it the integer kernel (GN_NF4_EXACT_DECODE=1: the byte-table kernel, whose
    // weights are the reference's bit for bit); i16 2: its AVX-512 spans (i16_span512)
    int i16 = x64 && !getenv_exact_decode();
    if (i16 && lvl == GN_SIMD_AVX512) {
        i16 = 2;
        for (int i = 0; i < n; i++) i16 = i16_b64_ok(ws[i]) ? i16 : 1;
    }
    // the arranged activations: a per-thread scratch buffer that only grows (no allocation per
    // token; in a team each thread arranges its own copy; freed when its thread ends, as a pool
    // thread does when the team shrinks); 64-byte aligned: no split cache-line loads
    // i16: xr (C floats), then xq (C words, or (C / 64 + 1) / 2 * 128 with pairs), then sx (C / 64)
    const int64_t xq_f = (C / 64 + 1) / 2 * 64; // xq's room in floats, for both layouts
    const size_t need = (size_t)(T * C) + (size_t)(i16 ? xq_f + C / 64 : 0);
    float *xd = gn_scratch(GN_SCRATCH_DECODE, sizeof(float) * (need > 4096 ? need : 4096));
    uint16_t *xh = (uint16_t *)xd; // bf16 activations reuse the same bytes
    if (i16) { // the input rounded, then scaled to integers; back to the byte-table kernel if it cannot be
        memcpy(xd, inp, sizeof(float) * (size_t)C);
        round_act(xd, C, cdt);
        i16 = i16_arrange(xd, C, (int16_t *)(xd + C), xd + C + xq_f, i16 == 2) ? i16 : 0;
    }
    if (bf == 2) b64f_arrange(inp, C, xh); // (C + 127) / 128 * 128 words: within the C floats
    else if (bf) for (int64_t t = 0; t < T; t++) bf16_deinterleave64(inp + t * C, C, xh + t * C);
    else if (i16) ; // arranged above
    else if (x64) {
        b64x_arrange(inp, C, xd);
        round_act(xd, C, cdt);
    } else {
        for (int64_t t = 0; t < T; t++) deinterleave32(inp + t * C, C, xd + t * C);
        round_act(xd, T * C, cdt);
    }
    const int64_t RB = 16;
    int64_t start[9], total = 0, work = 0;
    GN_ASSERT(n <= 8);
    for (int i = 0; i < n; i++) { start[i] = total; total += (ws[i]->rows + RB - 1) / RB; work += ws[i]->rows * C * T; }
    start[n] = total;
#ifdef _OPENMP
    if (team) {
        nf4_multi_part(outs, ws, n, T, xd, start, total, bf, x64, i16, lvl, cdt, omp_get_thread_num(), omp_get_num_threads(),
                       next);
        return;
    }
    int64_t shared_next = 0;
    #pragma omp parallel if (work > 32768)
    nf4_multi_part(outs, ws, n, T, xd, start, total, bf, x64, i16, lvl, cdt, omp_get_thread_num(), omp_get_num_threads(),
                   &shared_next);
#else
    (void)team; (void)work; (void)next;
    nf4_multi_part(outs, ws, n, T, xd, start, total, bf, x64, i16, lvl, cdt, 0, 1, NULL);
#endif
}

void gn_nf4_matmul_multi(float **outs, const float *inp, const gn_quant4_state *const *ws, int n, int64_t T) {
    nf4_multi(outs, inp, ws, n, T, 0, NULL);
}

void gn_nf4_matmul_multi_team(float **outs, const float *inp, const gn_quant4_state *const *ws, int n, int64_t T,
                              int64_t *next) {
    nf4_multi(outs, inp, ws, n, T, 1, next);
}


// ----------------------------------------------------------------------------
// T > 16 with a bf16 compute dtype on AVX512_BF16: a GEMM on vdpbf16ps. Inputs,
// weights and products are the same as the sgemm path's (bf16 values, products
// exact in f32, f32 sums), only the order of the sums differs, at twice the
// multiply-adds per instruction of f32 FMA.
//
// Per panel of NR = 32 weight rows and KC columns, the weights are dequantized
// to bf16 and packed as [k/2][32 rows][2]: one 64-byte load holds 16 rows x 2 k.
// Activations stay row-major bf16: one 32-bit broadcast is x[t][k], x[t][k+1].
// The micro-kernel (gn_bf16_kernel, tensor/gemm_bf16.c) keeps MR = 8 activation rows x
// 32 weight rows in 16 zmm sums.

#define BG_NR GN_BF16_NR
#define BG_MR GN_BF16_MR
#define BG_KC 2048 // k per panel (even): 128 KiB of packed weights, in L2

// x (T, C) as bf16 pairs (rounded to nearest even: the compute dtype's rounding of the input;
// vcvtne2ps2bf16 flushes denormals, which vdpbf16ps would read as zero anyway), a zero padding
// an odd C; in this thread's scratch (valid until the next call)
static uint32_t *bf16_pairs(const float *x, int64_t T, int64_t C) {
    const int64_t KP = (C + 1) / 2;
    uint32_t *xp = gn_scratch(GN_SCRATCH_NF4_X, sizeof(uint32_t) * (size_t)(T * KP));
    #pragma omp parallel for schedule(static) if (T * C > 65536)
    for (int64_t t = 0; t < T; t++) gn_bf16_pairs_row(x + t * C, C, xp + t * KP);
    return xp;
}

// GN_NF4_GEMM_ROWS=1: the GEMM's panels through float32 rows (the path before nn_row32 was used there)
static int getenv_gemm_rows(void) { static int v = -1; return gn_env_switch("GN_NF4_GEMM_ROWS", &v); }

static int gemm_bf16_ok(const gn_quant4_state *w) {
    return w->wdtype == GN_DTYPE_BF16 && level_for(w) == GN_SIMD_AVX512 && have_bf16_dot() && !getenv_nobf16();
}

// 32 weights of row r of w from column n0 (one block: blocksize % 32 == 0, C % blocksize == 0)
// as 32 bf16 words in column order: the block's table bf16(code[i] * s) (vcvtne2ps2bf16: RNE as
// gn_f32_to_bf16, NaN quieted; a denormal product flushed, which vdpbf16ps reads as zero
// anyway) looked up by one vpermw; each byte's high nibble (the even column) in the low word
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
static inline __m512i nn_row32(const gn_quant4_state *w, __m512 code, int64_t r, int64_t n0) {
    const int64_t e = r * w->cols + n0;
    const __m512 v = _mm512_mul_ps(code, _mm512_set1_ps(gn_quant4_scale(w, e / w->blocksize)));
    const __m512i tab = (__m512i)_mm512_cvtne2ps_pbh(v, v);
    const __m512i d = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(w->packed + e / 2)));
    const __m512i idx = _mm512_or_si512(_mm512_srli_epi32(d, 4), _mm512_slli_epi32(_mm512_and_si512(d, _mm512_set1_epi32(15)), 16));
    return _mm512_permutexvar_epi16(idx, tab);
}

// 64 weights of row r from column n0 (one block: blocksize % 64 == 0, C % blocksize == 0) as
// nn_row32 gives them, columns n0..n0+31 in *lo and n0+32..n0+63 in *hi: one table for both
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
static inline void nn_row64(const gn_quant4_state *w, __m512 code, int64_t r, int64_t n0, __m512i *lo, __m512i *hi) {
    const int64_t e = r * w->cols + n0;
    const __m512 v = _mm512_mul_ps(code, _mm512_set1_ps(gn_quant4_scale(w, e / w->blocksize)));
    const __m512i tab = (__m512i)_mm512_cvtne2ps_pbh(v, v), m15 = _mm512_set1_epi32(15);
    const __m512i d0 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(w->packed + e / 2)));
    const __m512i d1 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(w->packed + e / 2 + 16)));
    *lo = _mm512_permutexvar_epi16(_mm512_or_si512(_mm512_srli_epi32(d0, 4), _mm512_slli_epi32(_mm512_and_si512(d0, m15), 16)), tab);
    *hi = _mm512_permutexvar_epi16(_mm512_or_si512(_mm512_srli_epi32(d1, 4), _mm512_slli_epi32(_mm512_and_si512(d1, m15), 16)), tab);
}

// The panel of weight rows r0 .. r0 + nr - 1 (nr <= 32), columns k0 .. k0 + kc - 1 (kreal of them
// inside C) as bf16 pairs pk[kp][32]. 16 rows at a time: dequantized (bf16 values), then 16 x 16
// pair blocks transposed into pk; where every 32 columns lie in one block (direct), straight from
// the codes as bf16 words (nn_row32: the same values; 10% of a 7B prefill on 2 Zen 4 cores went to
// the float32 rows and their conversion). rows: 16 x BG_KC floats of scratch.
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
static void nf4_fill_panel(const gn_quant4_state *w, __m512 code, int direct, int64_t r0, int nr, int64_t k0, int64_t kc,
                           int64_t kreal, uint32_t *pk, float *rows) {
    const int64_t C = w->cols, k32 = (kc + 31) & ~(int64_t)31;
    if (direct) {
        for (int j0 = 0; j0 < BG_NR; j0 += 16) {
            int64_t k = 0;
            if (w->blocksize % 64 == 0) // a table per block of 64, not per 32 weights
                for (; k + 64 <= kreal; k += 64) {
                    __m512i v[16], u[16];
                    for (int j = 0; j < 16; j++) {
                        if (j0 + j < nr) nn_row64(w, code, r0 + j0 + j, k0 + k, &v[j], &u[j]);
                        else v[j] = u[j] = _mm512_setzero_si512();
                    }
                    gn_bf16_pack16(pk, k / 2, j0, v, 16);
                    gn_bf16_pack16(pk, k / 2 + 16, j0, u, 16);
                }
            for (; k < kreal; k += 32) { // kreal, like C, a multiple of 32
                __m512i v[16];
                for (int j = 0; j < 16; j++)
                    v[j] = j0 + j < nr ? nn_row32(w, code, r0 + j0 + j, k0 + k) : _mm512_setzero_si512();
                gn_bf16_pack16(pk, k / 2, j0, v, 16);
            }
        }
        return;
    }
    for (int j0 = 0; j0 < BG_NR; j0 += 16) {
        for (int j = 0; j < 16; j++) {
            float *rj = rows + (size_t)j * BG_KC;
            if (j0 + j < nr) deq_range(w, (r0 + j0 + j) * C + k0, kreal, rj, GN_DTYPE_BF16);
            else memset(rj, 0, sizeof(float) * (size_t)kreal);
            for (int64_t k = kreal; k < k32; k++) rj[k] = 0.0f;
        }
        for (int64_t k = 0; k < k32; k += 32) {
            __m512i v[16];
            for (int j = 0; j < 16; j++) {
                const float *rj = rows + (size_t)j * BG_KC + k;
                v[j] = (__m512i)_mm512_cvtne2ps_pbh(_mm512_load_ps(rj + 16), _mm512_load_ps(rj));
            }
            int64_t np = kc / 2 - k / 2 < 16 ? kc / 2 - k / 2 : 16;
            gn_bf16_pack16(pk, k / 2, j0, v, (int)np);
        }
    }
}

// AMX: the bf16 pairs of x (T, C) as tiles (gn_bf16_amx_pack_a), made once for all the products
// of one input (q/k/v, gate/up); NULL where the tiles are not in use. Valid until the next call.
static const uint32_t *amx_inputs(const uint32_t *xp, int64_t T, int64_t C) {
    if (!gn_amx_mode()) return NULL;
    const int64_t KP = (C + 1) / 2, nkt = (KP + 15) / 16;
    uint32_t *at = gn_scratch(GN_SCRATCH_AMX_A, sizeof(uint32_t) * (size_t)((T + 15) / 16 * nkt * 256));
    gn_bf16_amx_pack_a(xp, KP, T, KP, at);
    return at;
}

// out (T, R) = x @ W^T with x given as bf16 pairs (bf16_pairs) and, on AMX, as tiles (amx_inputs),
// rounded to bf16 at the end.
// A task takes G panels of 32 weight rows: G = 1 on AVX512_BF16 (the activations of all T rows
// stream past each panel, broadcast 32 bits at a time); on AMX up to 4 (the tiles go through a
// panel several times faster, and a block of 32 rows of activation tiles, 128 KiB at k 2048,
// then serves 4 panels from L2 instead of coming again from L3 for each), fewer where that
// leaves less than 8 tasks a thread or the panels (128 KiB each) would take more than half of L2
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
static void nf4_gemm_bf16(float *out, const uint32_t *xp, const uint32_t *at, const gn_quant4_state *w, int64_t T) {
    const int64_t R = w->rows, C = w->cols, Cp = (C + 1) & ~(int64_t)1, KP = Cp / 2;
    const int64_t npan = (R + BG_NR - 1) / BG_NR;
    const int direct = C % w->blocksize == 0 && w->blocksize % 32 == 0 && !getenv_gemm_rows();
    const __m512 code = _mm512_loadu_ps(w->code);
    const int64_t nkt = (KP + 15) / 16;
    int G = 1;
    if (at) {
        const int64_t g = npan / (8 * (int64_t)gn_get_threads()), gl2 = gn_cpu_l2_bytes() / (256 << 10); // panels of 128 KiB
        const int64_t gmax = gl2 < 1 ? 1 : gl2 > 4 ? 4 : gl2;
        G = g > gmax ? (int)gmax : g < 1 ? 1 : (int)g;
    }
    const int64_t ntask = (npan + G - 1) / G;
    #pragma omp parallel
    {
        uint32_t *pk = gn_scratch(GN_SCRATCH_PANEL, sizeof(uint32_t) * (size_t)G * (BG_KC / 2) * BG_NR); // kept per thread
        float *rows = gn_scratch(GN_SCRATCH_ROWS, sizeof(float) * 16 * (size_t)BG_KC); // 16 dequantized rows
        #pragma omp for schedule(dynamic, 1)
        for (int64_t task = 0; task < ntask; task++) {
            const int64_t p0 = task * G, np = npan - p0 < G ? npan - p0 : G;
            for (int64_t k0 = 0; k0 < Cp; k0 += BG_KC) {
                const int64_t kc = Cp - k0 < BG_KC ? Cp - k0 : BG_KC, kreal = C - k0 < kc ? C - k0 : kc;
                const int64_t kp = kc / 2, kp16 = (kp + 15) & ~(int64_t)15; // the tiles read whole 16s of pairs
                for (int64_t g = 0; g < np; g++) {
                    const int64_t r0 = (p0 + g) * BG_NR;
                    uint32_t *pg = pk + g * (BG_KC / 2) * BG_NR;
                    nf4_fill_panel(w, code, direct, r0, R - r0 < BG_NR ? (int)(R - r0) : BG_NR, k0, kc, kreal, pg, rows);
                    if (at) memset(pg + kp * BG_NR, 0, sizeof(uint32_t) * (size_t)((kp16 - kp) * BG_NR));
                }
                if (at) {
                    for (int64_t t0 = 0; t0 < T; t0 += 32)
                        for (int64_t g = 0; g < np; g++) {
                            const int64_t r0 = (p0 + g) * BG_NR;
                            gn_bf16_amx_block(at, nkt, t0, k0 / 2, T - t0 < 32 ? (int)(T - t0) : 32, pk + g * (BG_KC / 2) * BG_NR,
                                              kp, out + t0 * R + r0, R, R - r0 < BG_NR ? (int)(R - r0) : BG_NR, 1.0f, 0.0f, k0 == 0);
                        }
                    continue;
                }
                const int64_t r0 = p0 * BG_NR;
                const int nr = R - r0 < BG_NR ? (int)(R - r0) : BG_NR;
                for (int64_t t0 = 0; t0 < T; t0 += BG_MR) {
                    int mr = T - t0 < BG_MR ? (int)(T - t0) : BG_MR;
                    gn_bf16_kernel(xp + t0 * KP + k0 / 2, KP, 1, mr, pk, kc / 2, out + t0 * R + r0, R, nr, 1.0f, 0.0f, k0 == 0);
                }
            }
            const int64_t r0 = p0 * BG_NR, nrows = R - r0 < np * BG_NR ? R - r0 : np * BG_NR;
            for (int64_t t = 0; t < T; t++) round_act(out + t * R + r0, nrows, GN_DTYPE_BF16);
        }
    }
}

// The panel packer of gn_gemm_bf16_packed for B = W (R, C): pair kp of column j is (W[k0 + 2kp][n0 + j],
// W[k0 + 2kp + 1][n0 + j]), straight from the 4-bit codes (no bf16 copy of W)
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
static void nn_pack(const void *ctx, uint32_t *pk, int64_t n0, int nr, int64_t k0, int64_t kc) {
    const gn_quant4_state *w = ctx;
    const __m512 code = _mm512_loadu_ps(w->code);
    const __m512i lo = _mm512_setr_epi32(0x200000, 0x210001, 0x220002, 0x230003, 0x240004, 0x250005, 0x260006, 0x270007,
                                         0x280008, 0x290009, 0x2a000a, 0x2b000b, 0x2c000c, 0x2d000d, 0x2e000e, 0x2f000f);
    const __m512i hi = _mm512_add_epi16(lo, _mm512_set1_epi16(16));
    const __mmask32 cols = nr >= 32 ? 0xffffffffu : (__mmask32)((1u << nr) - 1); // nr == 32 here (C % 32 == 0)
    for (int64_t kp = 0; kp < kc / 2; kp++) {
        const int64_t ra = k0 + 2 * kp, rb = ra + 1;
        const __m512i a = ra < w->rows ? _mm512_maskz_mov_epi16(cols, nn_row32(w, code, ra, n0)) : _mm512_setzero_si512();
        const __m512i b = rb < w->rows ? _mm512_maskz_mov_epi16(cols, nn_row32(w, code, rb, n0)) : _mm512_setzero_si512();
        _mm512_store_si512(pk + kp * GN_BF16_NR, _mm512_permutex2var_epi16(a, lo, b));
        _mm512_store_si512(pk + kp * GN_BF16_NR + 16, _mm512_permutex2var_epi16(a, hi, b));
    }
}

// out (T, C) = dy (T, R) @ W, W (R, C) the dequantized bf16 weight: the input gradient of
// the product above, on gn_gemm_bf16's kernel with W's panels (pairs of rows k, k+1, as this
// product's k runs over them) dequantized straight from the codes where a row's 32-column
// pieces each lie in one block (C % blocksize == 0), else through a bf16 copy of W; rounded
// to bf16 at the end (bnb's backward returns the compute dtype)
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
static void nf4_gemm_nn_bf16(float *out, const float *dy, const gn_quant4_state *w, int64_t T) {
    const int64_t R = w->rows, C = w->cols, Cs = (C + 31) & ~(int64_t)31; // row stride of the copy
    if (C % w->blocksize == 0 && w->blocksize % 32 == 0 && !getenv_nn_copy()) {
        gn_gemm_bf16_packed(0, T, C, R, 1.0f, dy, R, nn_pack, w, 0.0f, out, C);
        round_act(out, T * C, GN_DTYPE_BF16);
        return;
    }
    uint16_t *wb = gn_scratch(GN_SCRATCH_NF4_W, sizeof(uint16_t) * (size_t)(R * Cs));
    #pragma omp parallel
    {
        float *row = gn_malloc_aligned(sizeof(float) * (size_t)Cs);
        #pragma omp for schedule(static)
        for (int64_t r = 0; r < R; r++) {
            deq_range(w, r * C, C, row, GN_DTYPE_BF16);
            for (int64_t c = C; c < Cs; c++) row[c] = 0.0f;
            for (int64_t c = 0; c < Cs; c += 32) // exact: the values are bf16 already
                _mm512_store_si512(wb + r * Cs + c,
                                   (__m512i)_mm512_cvtne2ps_pbh(_mm512_load_ps(row + c + 16), _mm512_load_ps(row + c)));
        }
        free(row);
    }
    gn_gemm_bf16_b16(0, 0, T, C, R, 1.0f, dy, R, wb, Cs, 0.0f, out, C);
    round_act(out, T * C, GN_DTYPE_BF16);
}

void gn_nf4_matmul_nn_ref(float *out, const float *dy, const gn_quant4_state *w, int64_t T) {
    const int64_t R = w->rows, C = w->cols;
    for (int64_t t = 0; t < T; t++)
        for (int64_t c = 0; c < C; c++) {
            double s = 0.0;
            for (int64_t r = 0; r < R; r++) {
                int64_t e = r * C + c;
                float wv = round_w(w->code[nibble(w->packed, e)] * gn_quant4_scale(w, e / w->blocksize), w->wdtype);
                s += (double)wv * round_w(dy[t * R + r], w->wdtype);
            }
            out[t * C + c] = round_w((float)s, w->wdtype);
        }
}

void gn_nf4_matmul_nn(float *out, const float *dy, const gn_quant4_state *w, int64_t T) {
    const int64_t R = w->rows, C = w->cols;
    if (T <= 0 || C <= 0) return;
    const gn_dtype cdt = w->wdtype;
    if (R <= 0) { memset(out, 0, sizeof(float) * (size_t)(T * C)); return; }
    if (cdt == GN_DTYPE_BF16 && level_for(w) == GN_SIMD_AVX512 && have_bf16_dot() && !getenv_nobf16()) {
        nf4_gemm_nn_bf16(out, dy, w, T);
        return;
    }
    // elsewhere: dy in the compute dtype, blocks of rows of W dequantized (rounded to it)
    // and multiplied by sgemm, the sum rounded at the end
    GN_ASSERT(T <= INT_MAX && R <= INT_MAX && C <= INT_MAX);
    float *yr = NULL;
    if (cdt != GN_DTYPE_F32) {
        yr = gn_malloc(sizeof(float) * (size_t)(T * R));
        round_copy(yr, dy, T * R, cdt);
        dy = yr;
    }
    blas_single_thread();
    const int64_t RB = 256;
    float *blk = gn_malloc(sizeof(float) * (size_t)(RB * C));
    memset(out, 0, sizeof(float) * (size_t)(T * C));
    for (int64_t r0 = 0; r0 < R; r0 += RB) {
        const int64_t n = R - r0 < RB ? R - r0 : RB;
        #pragma omp parallel for schedule(static)
        for (int64_t r = 0; r < n; r++) deq_range(w, (r0 + r) * C, C, blk + r * C, cdt);
        #pragma omp parallel
        {
            int nt = 1, id = 0;
#ifdef _OPENMP
            nt = omp_get_num_threads();
            id = omp_get_thread_num();
#endif
            int64_t c0 = C * id / nt, c1 = C * (id + 1) / nt;
            if (c0 < c1)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)T, (int)(c1 - c0), (int)n, 1.0f, dy + r0,
                            (int)R, blk + c0, (int)C, 1.0f, out + c0, (int)C);
        }
    }
    free(blk);
    free(yr);
    round_act(out, T * C, cdt);
}

// inp already in the compute dtype; T > 1 or rows not on block boundaries
static void nf4_matmul_rounded(float *out, const float *inp, const gn_quant4_state *w, int64_t T) {
    const int64_t R = w->rows, C = w->cols;
    const gn_dtype cdt = w->wdtype;
    if (T == 1) {
        // rows that do not start on a block boundary: dequantize the row, then dot
        #pragma omp parallel if (R * C > 32768)
        {
            float *buf = gn_malloc((size_t)C * sizeof(float));
            #pragma omp for schedule(static)
            for (int64_t r = 0; r < R; r++) {
                deq_range(w, r * C, C, buf, w->wdtype);
                out[r] = gn_dot_f32(buf, inp, C);
            }
            free(buf);
        }
        round_act(out, R, cdt);
        return;
    }
    if (gemm_bf16_ok(w)) {
        uint32_t *xp = bf16_pairs(inp, T, C);
        nf4_gemm_bf16(out, xp, amx_inputs(xp, T, C), w, T);
        return;
    }
    // T > 1: each thread dequantizes 64-row tiles of W to f32 and runs a
    // single-threaded sgemm on them (one thread pool, as gn_matmul does)
    GN_ASSERT(T <= INT_MAX && R <= INT_MAX && C <= INT_MAX);
    blas_single_thread();
    const int64_t RB = 64, ntiles = (R + RB - 1) / RB;
    #pragma omp parallel if (R * C * T > 65536)
    {
        float *tile = gn_malloc((size_t)(RB * C) * sizeof(float));
        #pragma omp for schedule(static)
        for (int64_t b = 0; b < ntiles; b++) {
            int64_t r0 = b * RB, nr = R - r0 < RB ? R - r0 : RB;
            deq_range(w, r0 * C, nr * C, tile, w->wdtype);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)T, (int)nr, (int)C, 1.0f, inp, (int)C,
                        tile, (int)C, 0.0f, out + r0, (int)R);
            if (cdt != GN_DTYPE_F32)
                for (int64_t t = 0; t < T; t++) round_act(out + t * R + r0, nr, cdt);
        }
        free(tile);
    }
}

// ----------------------------------------------------------------------------
// T > 16 on AVX2 with a bf16 compute dtype: an integer GEMM on vpmaddwd, the same idea as
// the integer decode above (block scales factored out of the sums): 16 multiply-adds per
// vpmaddwd against FMA's 8, at the same issue rate; with the vpaddd beside each one, about
// 1.6x sgemm's ceiling on Zen 3 (measured: ~1.35x a whole product). Weight codes are 14-bit
// integers round(c * IG_W), each activation run of 64 columns is scaled to 13-bit integers
// round(x * IG_X / m), m its largest magnitude, so a lane's 64 products of a run stay below
// 2^31 (64 * 8191 * 4095 < 2^31): a run's sum is
// exact in int32, then converted and multiplied by the weight's block scale times the run's
// scale. The rule, against the dequantize-then-multiply reference (which rounds each weight
// to bf16): per term the code is off by at most 0.5/IG_W, the input by 0.5 m/IG_X, the
// reference's weight by 2^-9 of itself; tests/test_nf4.c checks the sum of those and the
// float32 summation bound. GN_NF4_EXACT_DECODE=1 keeps the exact sgemm path.
//
// Layout: activations in tiles of IG_MT = 16 rows, [column pair][16 rows][2] (a vector
// load is 8 rows x 2 columns), with their run scales [run][16 rows]; weights decoded per
// chunk of IG_RC rows x IG_KC columns into 32-bit code pairs (one broadcast is a row's two
// columns). The micro-kernel keeps 16 activation rows x IG_NR = 4 weight rows in 8 int32
// sums and adds each run into a float32 tile of the chunk ([row][T], in L2).
// Rows with a non-finite or tiny block scale take the reference's arithmetic
// (i16_row_exact); an input with a non-finite value or a run outside [2^-60, 2^60] (not
// zero) takes the sgemm path.

#define IG_W 8191
#define IG_X 4095
#define IG_MT 16
#define IG_NR 4
#define IG_RC 32
#define IG_KC 256

static int gemm_i16_ok(const gn_quant4_state *w) {
    if (w->wdtype != GN_DTYPE_BF16 || w->blocksize % 64 != 0 || w->cols <= 0 || w->cols % 64 != 0 ||
        level_for(w) == GN_SIMD_SCALAR || gemm_bf16_ok(w) || getenv_exact_decode())
        return 0;
    uint8_t lo[16], hi[16];
    return i16_tables(w->code, IG_W, lo, hi);
}

// One run of 64 inputs as 13-bit integers round(x * inv), nearest even, into q
__attribute__((target("avx2,fma")))
static void ig_run_q(const float *x, float inv, int16_t q[64]) {
    const __m256 vi = _mm256_set1_ps(inv);
    const __m256i hi = _mm256_set1_epi32(IG_X), lo = _mm256_set1_epi32(-IG_X);
    for (int i = 0; i < 64; i += 16) {
        __m256i a = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i), vi));
        __m256i b = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i + 8), vi));
        a = _mm256_max_epi32(_mm256_min_epi32(a, hi), lo);
        b = _mm256_max_epi32(_mm256_min_epi32(b, hi), lo);
        // packs works per 128-bit lane: a0 b0 a1 b1 -> a0 a1 b0 b1
        _mm256_storeu_si256((__m256i *)(q + i), _mm256_permute4x64_epi64(_mm256_packs_epi32(a, b), 0xd8));
    }
}

// x (T, C, already in the compute dtype) into tiles: xp (Tp/16 tiles of C*16 int16) and
// sx (Tp/16 tiles of C/64*16 floats), Tp = T rounded up to 16 (the rows past T are zero);
// 0 when some run cannot be scaled
static int ig_pack_x(const float *x, int64_t T, int64_t C, int16_t *xp, float *sx) {
    const int64_t Tp = (T + IG_MT - 1) / IG_MT * IG_MT, ng = C / 64;
    int ok = 1;
    #pragma omp parallel for schedule(static) reduction(&& : ok) if (T * C > 65536)
    for (int64_t t = 0; t < Tp; t++) {
        // row t is lane t % 16 of its tile: a pair of columns is one 32-bit word, 64 bytes apart
        uint32_t *xb = (uint32_t *)(void *)(xp + (t / IG_MT) * C * IG_MT) + t % IG_MT;
        float *sb = sx + (t / IG_MT) * ng * IG_MT + t % IG_MT;
        for (int64_t g = 0; g < ng; g++) {
            const float *xr = x + t * C + g * 64;
            float m = 0.0f;
            int fin = t < T;
            if (fin)
                for (int i = 0; i < 64; i++) {
                    const float a = fabsf(xr[i]);
                    fin &= a <= FLT_MAX; // NaN fails too
                    m = a > m ? a : m;
                }
            if (t < T && (!fin || (m != 0.0f && (m < 0x1p-60f || m > 0x1p60f)))) { ok = 0; break; }
            sb[g * IG_MT] = (float)((double)m / ((double)IG_X * IG_W));
            int16_t q[64] = {0};
            if (m > 0.0f) ig_run_q(xr, (float)IG_X / m, q);
            for (int i = 0; i < 32; i++) {
                uint32_t v;
                memcpy(&v, q + 2 * i, 4);
                xb[(g * 32 + i) * IG_MT] = v;
            }
        }
    }
    return ok;
}

// n (a multiple of 64) packed codes at p as 16-bit integers in column order, a pair of
// columns per 32-bit word (the first, a byte's high nibble, in the low half)
__attribute__((target("avx2")))
static void ig_codes(const uint8_t *p, int64_t n, const uint8_t lo[16], const uint8_t hi[16], uint32_t *d) {
    const __m256i tl = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)lo));
    const __m256i th = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)hi));
    const __m256i m4 = _mm256_set1_epi8(15);
    for (int64_t k = 0; k < n / 2; k += 32) {
        const __m256i v = _mm256_loadu_si256((const __m256i *)(p + k));
        const __m256i ih = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4), il = _mm256_and_si256(v, m4);
        const __m256i a = _mm256_shuffle_epi8(tl, ih), b = _mm256_shuffle_epi8(th, ih); // first of each pair
        const __m256i c = _mm256_shuffle_epi8(tl, il), e = _mm256_shuffle_epi8(th, il); // second
        const __m256i f0 = _mm256_unpacklo_epi8(a, b), f1 = _mm256_unpackhi_epi8(a, b);
        const __m256i s0 = _mm256_unpacklo_epi8(c, e), s1 = _mm256_unpackhi_epi8(c, e);
        // per 128-bit lane: bytes 0-3, 4-7 (from the low unpacks), 8-11, 12-15 (from the high)
        const __m256i p0 = _mm256_unpacklo_epi16(f0, s0), p1 = _mm256_unpackhi_epi16(f0, s0);
        const __m256i p2 = _mm256_unpacklo_epi16(f1, s1), p3 = _mm256_unpackhi_epi16(f1, s1);
        _mm256_storeu_si256((__m256i *)(d + k), _mm256_permute2x128_si256(p0, p1, 0x20));
        _mm256_storeu_si256((__m256i *)(d + k + 8), _mm256_permute2x128_si256(p2, p3, 0x20));
        _mm256_storeu_si256((__m256i *)(d + k + 16), _mm256_permute2x128_si256(p0, p1, 0x31));
        _mm256_storeu_si256((__m256i *)(d + k + 24), _mm256_permute2x128_si256(p2, p3, 0x31));
    }
}

// c[0..16) += (float)(s0, s1) * (f0, f1) * w: one run's sums, scaled
__attribute__((target("avx2,fma")))
static inline void ig_add(float *c, __m256i s0, __m256i s1, __m256 f0, __m256 f1, float w) {
    const __m256 s = _mm256_set1_ps(w);
    _mm256_store_ps(c, _mm256_fmadd_ps(_mm256_cvtepi32_ps(s0), _mm256_mul_ps(f0, s), _mm256_load_ps(c)));
    _mm256_store_ps(c + 8, _mm256_fmadd_ps(_mm256_cvtepi32_ps(s1), _mm256_mul_ps(f1, s), _mm256_load_ps(c + 8)));
}

// 16 activation rows x 4 weight rows over nblk runs: c (4 rows of 16 floats, stride cs) +=
// the runs' sums times their scales. xa: the tile at the first run; wp: 4 rows of code
// pairs (stride IG_KC/2); sxa: the runs' scales [run][16]; sw: the weight scales (4 rows,
// stride IG_KC/64)
__attribute__((target("avx2,fma")))
static void ig_tile(const int16_t *xa, const uint32_t *wp, const float *sxa, const float *sw, int nblk, float *c,
                    int64_t cs) {
    for (int g = 0; g < nblk; g++) {
        __m256i s00 = _mm256_setzero_si256(), s01 = s00, s10 = s00, s11 = s00, s20 = s00, s21 = s00, s30 = s00,
                s31 = s00;
        const int16_t *xg = xa + (int64_t)g * 64 * IG_MT;
        const uint32_t *w0 = wp + g * 32;
        // 32 column pairs: two activation vectors, four broadcast code pairs, eight
        // vpmaddwd + vpaddd (in asm: GCC's allocation copied every sum once per step)
        const int16_t *xk = xg;
        const uint32_t *wk = w0;
        int n = 32;
        __asm__("1:\n\t"
                "vmovdqa (%[x]), %%ymm12\n\t"
                "vmovdqa 32(%[x]), %%ymm13\n\t"
                "vpbroadcastd (%[w]), %%ymm14\n\t"
                "vpbroadcastd %c[d1](%[w]), %%ymm15\n\t"
                "vpmaddwd %%ymm14, %%ymm12, %%ymm8\n\t"
                "vpmaddwd %%ymm14, %%ymm13, %%ymm9\n\t"
                "vpmaddwd %%ymm15, %%ymm12, %%ymm10\n\t"
                "vpmaddwd %%ymm15, %%ymm13, %%ymm11\n\t"
                "vpaddd %%ymm8, %[s00], %[s00]\n\t"
                "vpaddd %%ymm9, %[s01], %[s01]\n\t"
                "vpaddd %%ymm10, %[s10], %[s10]\n\t"
                "vpaddd %%ymm11, %[s11], %[s11]\n\t"
                "vpbroadcastd %c[d2](%[w]), %%ymm14\n\t"
                "vpbroadcastd %c[d3](%[w]), %%ymm15\n\t"
                "vpmaddwd %%ymm14, %%ymm12, %%ymm8\n\t"
                "vpmaddwd %%ymm14, %%ymm13, %%ymm9\n\t"
                "vpmaddwd %%ymm15, %%ymm12, %%ymm10\n\t"
                "vpmaddwd %%ymm15, %%ymm13, %%ymm11\n\t"
                "vpaddd %%ymm8, %[s20], %[s20]\n\t"
                "vpaddd %%ymm9, %[s21], %[s21]\n\t"
                "vpaddd %%ymm10, %[s30], %[s30]\n\t"
                "vpaddd %%ymm11, %[s31], %[s31]\n\t"
                "add $64, %[x]\n\t"
                "add $4, %[w]\n\t"
                "dec %[n]\n\t"
                "jnz 1b"
                : [s00] "+x"(s00), [s01] "+x"(s01), [s10] "+x"(s10), [s11] "+x"(s11), [s20] "+x"(s20),
                  [s21] "+x"(s21), [s30] "+x"(s30), [s31] "+x"(s31), [x] "+r"(xk), [w] "+r"(wk), [n] "+r"(n)
                : [d1] "i"(IG_KC / 2 * 4), [d2] "i"(IG_KC * 4), [d3] "i"(IG_KC / 2 * 12)
                : "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "cc", "memory");
        const __m256 f0 = _mm256_load_ps(sxa + g * IG_MT), f1 = _mm256_load_ps(sxa + g * IG_MT + 8);
        ig_add(c, s00, s01, f0, f1, sw[g]);
        ig_add(c + cs, s10, s11, f0, f1, sw[IG_KC / 64 + g]);
        ig_add(c + 2 * cs, s20, s21, f0, f1, sw[2 * (IG_KC / 64) + g]);
        ig_add(c + 3 * cs, s30, s31, f0, f1, sw[3 * (IG_KC / 64) + g]);
    }
}

// ig_tile on AVX512_VNNI (Cascade Lake and later, Zen 4): 8 weight rows at a time, each
// vpdpwssd one vpmaddwd and its vpaddd in one instruction. Its latency (4-5 cycles) against
// one update of each sum per step would bind 8 sums: 16 sums (32 registers under AVX-512) keep
// the multiply ports busy. The int32 sums are the same integers as ig_tile's (no product pair
// or sum overflows: see IG_W, IG_X) and each run is scaled and added by the same ig_add in the
// same order, so the output is ig_tile's bit for bit. GN_NF4_NO_VNNI=1 keeps ig_tile.
__attribute__((target("avx2,fma,avx512f,avx512vl,avx512vnni")))
static void ig_tile8_vnni(const int16_t *xa, const uint32_t *wp, const float *sxa, const float *sw, int nblk, float *c,
                          int64_t cs) {
    _Static_assert(IG_KC / 2 * 4 == 512, "the asm's row stride: IG_KC / 2 code pairs of 4 bytes");
    for (int g = 0; g < nblk; g++) {
        __m256i sum[16]; // row r: sum[2 r] (activation rows 0-7), sum[2 r + 1] (8-15)
        const int16_t *xk = xa + (int64_t)g * 64 * IG_MT;
        const uint32_t *wk = wp + g * 32;
        int n = 32;
        // 32 column pairs: two activation vectors, eight broadcast code pairs (one a row, 512
        // bytes apart), 16 vpdpwssd into ymm16-31 (in asm: GCC copied the sums between
        // registers every step, and an asm statement takes 30 operands, not 16 sums besides);
        // volatile: its only result is the memory at sum
        __asm__ volatile(
                "vpxord %%ymm16, %%ymm16, %%ymm16\n\t"
                "vpxord %%ymm17, %%ymm17, %%ymm17\n\t"
                "vpxord %%ymm18, %%ymm18, %%ymm18\n\t"
                "vpxord %%ymm19, %%ymm19, %%ymm19\n\t"
                "vpxord %%ymm20, %%ymm20, %%ymm20\n\t"
                "vpxord %%ymm21, %%ymm21, %%ymm21\n\t"
                "vpxord %%ymm22, %%ymm22, %%ymm22\n\t"
                "vpxord %%ymm23, %%ymm23, %%ymm23\n\t"
                "vpxord %%ymm24, %%ymm24, %%ymm24\n\t"
                "vpxord %%ymm25, %%ymm25, %%ymm25\n\t"
                "vpxord %%ymm26, %%ymm26, %%ymm26\n\t"
                "vpxord %%ymm27, %%ymm27, %%ymm27\n\t"
                "vpxord %%ymm28, %%ymm28, %%ymm28\n\t"
                "vpxord %%ymm29, %%ymm29, %%ymm29\n\t"
                "vpxord %%ymm30, %%ymm30, %%ymm30\n\t"
                "vpxord %%ymm31, %%ymm31, %%ymm31\n\t"
                "1:\n\t"
                "vmovdqa (%[x]), %%ymm0\n\t"
                "vmovdqa 32(%[x]), %%ymm1\n\t"
                "vpbroadcastd 0(%[w]), %%ymm2\n\t"
                "vpdpwssd %%ymm2, %%ymm0, %%ymm16\n\t"
                "vpdpwssd %%ymm2, %%ymm1, %%ymm17\n\t"
                "vpbroadcastd 512(%[w]), %%ymm3\n\t"
                "vpdpwssd %%ymm3, %%ymm0, %%ymm18\n\t"
                "vpdpwssd %%ymm3, %%ymm1, %%ymm19\n\t"
                "vpbroadcastd 1024(%[w]), %%ymm2\n\t"
                "vpdpwssd %%ymm2, %%ymm0, %%ymm20\n\t"
                "vpdpwssd %%ymm2, %%ymm1, %%ymm21\n\t"
                "vpbroadcastd 1536(%[w]), %%ymm3\n\t"
                "vpdpwssd %%ymm3, %%ymm0, %%ymm22\n\t"
                "vpdpwssd %%ymm3, %%ymm1, %%ymm23\n\t"
                "vpbroadcastd 2048(%[w]), %%ymm2\n\t"
                "vpdpwssd %%ymm2, %%ymm0, %%ymm24\n\t"
                "vpdpwssd %%ymm2, %%ymm1, %%ymm25\n\t"
                "vpbroadcastd 2560(%[w]), %%ymm3\n\t"
                "vpdpwssd %%ymm3, %%ymm0, %%ymm26\n\t"
                "vpdpwssd %%ymm3, %%ymm1, %%ymm27\n\t"
                "vpbroadcastd 3072(%[w]), %%ymm2\n\t"
                "vpdpwssd %%ymm2, %%ymm0, %%ymm28\n\t"
                "vpdpwssd %%ymm2, %%ymm1, %%ymm29\n\t"
                "vpbroadcastd 3584(%[w]), %%ymm3\n\t"
                "vpdpwssd %%ymm3, %%ymm0, %%ymm30\n\t"
                "vpdpwssd %%ymm3, %%ymm1, %%ymm31\n\t"
                "add $64, %[x]\n\t"
                "add $4, %[w]\n\t"
                "dec %[n]\n\t"
                "jnz 1b\n\t"
                "vmovdqa64 %%ymm16, 0(%[o])\n\t"
                "vmovdqa64 %%ymm17, 32(%[o])\n\t"
                "vmovdqa64 %%ymm18, 64(%[o])\n\t"
                "vmovdqa64 %%ymm19, 96(%[o])\n\t"
                "vmovdqa64 %%ymm20, 128(%[o])\n\t"
                "vmovdqa64 %%ymm21, 160(%[o])\n\t"
                "vmovdqa64 %%ymm22, 192(%[o])\n\t"
                "vmovdqa64 %%ymm23, 224(%[o])\n\t"
                "vmovdqa64 %%ymm24, 256(%[o])\n\t"
                "vmovdqa64 %%ymm25, 288(%[o])\n\t"
                "vmovdqa64 %%ymm26, 320(%[o])\n\t"
                "vmovdqa64 %%ymm27, 352(%[o])\n\t"
                "vmovdqa64 %%ymm28, 384(%[o])\n\t"
                "vmovdqa64 %%ymm29, 416(%[o])\n\t"
                "vmovdqa64 %%ymm30, 448(%[o])\n\t"
                "vmovdqa64 %%ymm31, 480(%[o])"
                : [x] "+r"(xk), [w] "+r"(wk), [n] "+r"(n)
                : [o] "r"(sum)
                : "xmm0", "xmm1", "xmm2", "xmm3", "xmm16", "xmm17", "xmm18", "xmm19", "xmm20", "xmm21", "xmm22",
                  "xmm23", "xmm24", "xmm25", "xmm26", "xmm27", "xmm28", "xmm29", "xmm30", "xmm31", "cc", "memory");
        const __m256 f0 = _mm256_load_ps(sxa + g * IG_MT), f1 = _mm256_load_ps(sxa + g * IG_MT + 8);
        for (int r = 0; r < 8; r++) ig_add(c + r * cs, sum[2 * r], sum[2 * r + 1], f0, f1, sw[r * (IG_KC / 64) + g]);
    }
}

// ig_tile8_vnni in 512-bit vectors: one vector holds the tile's 16 activation rows, 16 weight
// rows a step, each code pair broadcast from memory inside its vpdpwssd ({1to16}): per 64
// columns of 16 x 16 outputs 16 instructions where ig_tile8_vnni issues twice as many for
// half the rows. A core with two full 512-bit multiply units runs up to twice the multiply-adds
// a cycle (Zen 5, emulating Cascade Lake: prefill 1.4-1.6x); on one that splits them (Zen 4) it
// has not been measured, and GN_NF4_VNNI_YMM=1 keeps ig_tile8_vnni. Same int32 sums, and each
// run scaled and added lane for lane as ig_add does, so the output is ig_tile's bit for bit.
__attribute__((target("avx2,fma,avx512f,avx512vl,avx512vnni")))
static void ig_tile16_vnni512(const int16_t *xa, const uint32_t *wp, const float *sxa, const float *sw, int nblk,
                              float *c, int64_t cs) {
    for (int g = 0; g < nblk; g++) {
        __m512i sum[16]; // weight row r: sum[r], the 16 activation rows in lanes
        const int16_t *xk = xa + (int64_t)g * 64 * IG_MT;
        const uint32_t *wk = wp + g * 32;
        int n = 32;
        __asm__ volatile(
                "vpxord %%zmm16, %%zmm16, %%zmm16\n\t"
                "vpxord %%zmm17, %%zmm17, %%zmm17\n\t"
                "vpxord %%zmm18, %%zmm18, %%zmm18\n\t"
                "vpxord %%zmm19, %%zmm19, %%zmm19\n\t"
                "vpxord %%zmm20, %%zmm20, %%zmm20\n\t"
                "vpxord %%zmm21, %%zmm21, %%zmm21\n\t"
                "vpxord %%zmm22, %%zmm22, %%zmm22\n\t"
                "vpxord %%zmm23, %%zmm23, %%zmm23\n\t"
                "vpxord %%zmm24, %%zmm24, %%zmm24\n\t"
                "vpxord %%zmm25, %%zmm25, %%zmm25\n\t"
                "vpxord %%zmm26, %%zmm26, %%zmm26\n\t"
                "vpxord %%zmm27, %%zmm27, %%zmm27\n\t"
                "vpxord %%zmm28, %%zmm28, %%zmm28\n\t"
                "vpxord %%zmm29, %%zmm29, %%zmm29\n\t"
                "vpxord %%zmm30, %%zmm30, %%zmm30\n\t"
                "vpxord %%zmm31, %%zmm31, %%zmm31\n\t"
                "1:\n\t"
                "vmovdqa64 (%[x]), %%zmm0\n\t"
                "vpdpwssd 0(%[w])%{1to16%}, %%zmm0, %%zmm16\n\t"
                "vpdpwssd 512(%[w])%{1to16%}, %%zmm0, %%zmm17\n\t"
                "vpdpwssd 1024(%[w])%{1to16%}, %%zmm0, %%zmm18\n\t"
                "vpdpwssd 1536(%[w])%{1to16%}, %%zmm0, %%zmm19\n\t"
                "vpdpwssd 2048(%[w])%{1to16%}, %%zmm0, %%zmm20\n\t"
                "vpdpwssd 2560(%[w])%{1to16%}, %%zmm0, %%zmm21\n\t"
                "vpdpwssd 3072(%[w])%{1to16%}, %%zmm0, %%zmm22\n\t"
                "vpdpwssd 3584(%[w])%{1to16%}, %%zmm0, %%zmm23\n\t"
                "vpdpwssd 4096(%[w])%{1to16%}, %%zmm0, %%zmm24\n\t"
                "vpdpwssd 4608(%[w])%{1to16%}, %%zmm0, %%zmm25\n\t"
                "vpdpwssd 5120(%[w])%{1to16%}, %%zmm0, %%zmm26\n\t"
                "vpdpwssd 5632(%[w])%{1to16%}, %%zmm0, %%zmm27\n\t"
                "vpdpwssd 6144(%[w])%{1to16%}, %%zmm0, %%zmm28\n\t"
                "vpdpwssd 6656(%[w])%{1to16%}, %%zmm0, %%zmm29\n\t"
                "vpdpwssd 7168(%[w])%{1to16%}, %%zmm0, %%zmm30\n\t"
                "vpdpwssd 7680(%[w])%{1to16%}, %%zmm0, %%zmm31\n\t"
                "add $64, %[x]\n\t"
                "add $4, %[w]\n\t"
                "dec %[n]\n\t"
                "jnz 1b\n\t"
                "vmovdqu64 %%zmm16, 0(%[o])\n\t"
                "vmovdqu64 %%zmm17, 64(%[o])\n\t"
                "vmovdqu64 %%zmm18, 128(%[o])\n\t"
                "vmovdqu64 %%zmm19, 192(%[o])\n\t"
                "vmovdqu64 %%zmm20, 256(%[o])\n\t"
                "vmovdqu64 %%zmm21, 320(%[o])\n\t"
                "vmovdqu64 %%zmm22, 384(%[o])\n\t"
                "vmovdqu64 %%zmm23, 448(%[o])\n\t"
                "vmovdqu64 %%zmm24, 512(%[o])\n\t"
                "vmovdqu64 %%zmm25, 576(%[o])\n\t"
                "vmovdqu64 %%zmm26, 640(%[o])\n\t"
                "vmovdqu64 %%zmm27, 704(%[o])\n\t"
                "vmovdqu64 %%zmm28, 768(%[o])\n\t"
                "vmovdqu64 %%zmm29, 832(%[o])\n\t"
                "vmovdqu64 %%zmm30, 896(%[o])\n\t"
                "vmovdqu64 %%zmm31, 960(%[o])"
                : [x] "+r"(xk), [w] "+r"(wk), [n] "+r"(n)
                : [o] "r"(sum)
                : "xmm0", "xmm16", "xmm17", "xmm18", "xmm19", "xmm20", "xmm21", "xmm22", "xmm23", "xmm24", "xmm25",
                  "xmm26", "xmm27", "xmm28", "xmm29", "xmm30", "xmm31", "cc", "memory");
        const __m512 f = _mm512_loadu_ps(sxa + g * IG_MT);
        for (int r = 0; r < 16; r++) {
            float *cr = c + r * cs;
            const __m512 fs = _mm512_mul_ps(f, _mm512_set1_ps(sw[r * (IG_KC / 64) + g]));
            _mm512_storeu_ps(cr, _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum[r]), fs, _mm512_loadu_ps(cr)));
        }
    }
}

// whether the GEMM takes the VNNI tiles (ig_tile16_vnni512, or ig_tile8_vnni): have_vnni() and
// the AVX-512 level (the AVX2 level keeps ig_tile; the level may be forced: tests)
static int ig_vnni(void) { return have_vnni() && gn_simd_level() >= GN_SIMD_AVX512; }

// outs[i] (T, R_i) = x @ W_i^T for the n matrices (same cols), x given as tiles (ig_pack_x)
// and, for rows with unusable scales, rounded (xr); outputs rounded to bf16
static void ig_gemm(float **outs, const gn_quant4_state *const *ws, int n, const int16_t *xp, const float *sx,
                    const float *xr, int64_t T) {
    const int64_t C = ws[0]->cols, Tp = (T + IG_MT - 1) / IG_MT * IG_MT, ng = C / 64;
    int64_t start[9], total = 0;
    GN_ASSERT(n <= 8);
    uint8_t tabs[8][2][16];
    for (int i = 0; i < n; i++) {
        start[i] = total;
        total += (ws[i]->rows + IG_RC - 1) / IG_RC;
        const int ok = i16_tables(ws[i]->code, IG_W, tabs[i][0], tabs[i][1]);
        GN_ASSERT(ok); // gemm_i16_ok checked the table
    }
    start[n] = total;
    static int ymm = -1; // GN_NF4_VNNI_YMM=1: ig_tile8_vnni instead of ig_tile16_vnni512
    const int vnni = ig_vnni() ? (gn_env_switch("GN_NF4_VNNI_YMM", &ymm) ? 1 : 2) : 0;
    _Static_assert(IG_RC % 16 == 0, "a chunk's rows in steps of 16");
    #pragma omp parallel if (total > 1)
    {
        // this thread's chunk: sums (IG_RC x Tp), codes, scales, in one scratch buffer
        float *acc = gn_scratch(GN_SCRATCH_NF4_W, sizeof(float) * (size_t)(IG_RC * Tp) +
                                                       sizeof(uint32_t) * IG_RC * (IG_KC / 2) + sizeof(float) * IG_RC * (IG_KC / 64));
        uint32_t *wb = (uint32_t *)(void *)(acc + IG_RC * Tp);
        float *sb = (float *)(void *)(wb + IG_RC * (IG_KC / 2));
        #pragma omp for schedule(dynamic, 1)
        for (int64_t ch = 0; ch < total; ch++) {
            int i = 0;
            while (ch >= start[i + 1]) i++;
            const gn_quant4_state *q = ws[i];
            const int64_t R = q->rows, r0 = (ch - start[i]) * IG_RC, bs = q->blocksize;
            const int nr = R - r0 < IG_RC ? (int)(R - r0) : IG_RC;
            unsigned bad[IG_RC] = {0};
            memset(acc, 0, sizeof(float) * (size_t)(IG_RC * Tp));
            for (int64_t k0 = 0; k0 < C; k0 += IG_KC) {
                const int64_t kc = C - k0 < IG_KC ? C - k0 : IG_KC;
                for (int j = 0; j < IG_RC; j++) { // this chunk's codes and scales at columns k0..k0+kc
                    uint32_t *d = wb + j * (IG_KC / 2);
                    float *s = sb + j * (IG_KC / 64);
                    if (j >= nr) {
                        memset(d, 0, sizeof(uint32_t) * (size_t)(kc / 2));
                        memset(s, 0, sizeof(float) * (size_t)(kc / 64));
                        continue;
                    }
                    const int64_t e0 = (r0 + j) * C + k0;
                    ig_codes(q->packed + e0 / 2, kc, tabs[i][0], tabs[i][1], d);
                    for (int64_t g = 0; g < kc / 64; g++) {
                        const float v = gn_quant4_scale(q, (e0 + g * 64) / bs);
                        const unsigned b = i16_scale_bad(v);
                        bad[j] |= b;
                        s[g] = b ? 0.0f : v;
                    }
                }
                void (*tile)(const int16_t *, const uint32_t *, const float *, const float *, int, float *, int64_t) =
                    vnni == 2 ? ig_tile16_vnni512 : vnni ? ig_tile8_vnni : ig_tile;
                const int step = vnni == 2 ? 16 : vnni ? 8 : IG_NR; // weight rows a tile call
                for (int64_t tb = 0; tb < Tp / IG_MT; tb++)
                    for (int j0 = 0; j0 < nr; j0 += step) // rows past nr: zero codes and scales
                        tile(xp + tb * C * IG_MT + k0 * IG_MT, wb + j0 * (IG_KC / 2), sx + (tb * ng + k0 / 64) * IG_MT,
                             sb + j0 * (IG_KC / 64), (int)(kc / 64), acc + j0 * Tp + tb * IG_MT, Tp);
            }
            round_act(acc, IG_RC * Tp, GN_DTYPE_BF16);
            float *out = outs[i];
            for (int64_t t = 0; t < T; t++) {
                float *o = out + t * R + r0;
                for (int j = 0; j < nr; j++) o[j] = acc[j * Tp + t];
            }
            for (int j = 0; j < nr; j++)
                if (bad[j])
                    for (int64_t t = 0; t < T; t++) {
                        out[t * R + r0 + j] = i16_row_exact(q, r0 + j, xr + t * C);
                        round_act(out + t * R + r0 + j, 1, GN_DTYPE_BF16);
                    }
        }
    }
}

// The n products (gemm_i16_ok each, same cols) of xr (T, C, in the compute dtype): the
// integer GEMM, or the sgemm path where the input cannot be scaled
static void nf4_igemm(float **outs, const float *xr, const gn_quant4_state *const *ws, int n, int64_t T) {
    const int64_t C = ws[0]->cols, Tp = (T + IG_MT - 1) / IG_MT * IG_MT;
    const size_t nx = (size_t)(Tp * C), ns = (size_t)(Tp * (C / 64));
    int16_t *xp = gn_scratch(GN_SCRATCH_NF4_X, sizeof(int16_t) * nx + sizeof(float) * ns + 64);
    float *sx = (float *)(void *)(xp + ((nx + 31) & ~(size_t)31));
    if (ig_pack_x(xr, T, C, xp, sx)) ig_gemm(outs, ws, n, xp, sx, xr, T);
    else
        for (int i = 0; i < n; i++) nf4_matmul_rounded(outs[i], xr, ws[i], T);
}

// The matrices of gn_nf4_matmul_multi outside the fused kernel's reach: the input
// rounded to the compute dtype once for all of them (same cols and compute dtype)
static void nf4_matmul_each(float **outs, const float *inp, const gn_quant4_state *const *ws, int n, int64_t T) {
    const int64_t C = ws[0]->cols;
    const gn_dtype cdt = ws[0]->wdtype;
    int same = 1;
    for (int i = 0; i < n; i++) same &= ws[i]->cols == C && ws[i]->wdtype == cdt;
    if (!same || cdt == GN_DTYPE_F32) {
        for (int i = 0; i < n; i++) gn_nf4_matmul(outs[i], inp, ws[i], T);
        return;
    }
    int all_gemm = T > NF4_SMALL_T;
    for (int i = 0; i < n; i++) all_gemm &= gemm_bf16_ok(ws[i]) && !small_t_ok(ws[i], T, level_for(ws[i]));
    if (all_gemm) { // the bf16 pairs are the rounded input: made once for q/k/v or gate/up
        uint32_t *xp = bf16_pairs(inp, T, C);
        const uint32_t *at = amx_inputs(xp, T, C);
        for (int i = 0; i < n; i++) nf4_gemm_bf16(outs[i], xp, at, ws[i], T);
        return;
    }
    int all_i16 = T > NF4_SMALL_T;
    for (int i = 0; i < n; i++) all_i16 &= gemm_i16_ok(ws[i]);
    float *xr = gn_malloc(sizeof(float) * (size_t)(T * C));
    round_copy(xr, inp, T * C, cdt);
    if (all_i16) { // one packed input for q/k/v or gate/up, one parallel loop over their rows
        nf4_igemm(outs, xr, ws, n, T);
        free(xr);
        return;
    }
    for (int i = 0; i < n; i++) {
        if (small_t_ok(ws[i], T, level_for(ws[i]))) gn_nf4_matmul_multi(&outs[i], xr, &ws[i], 1, T); // idempotent rounding
        else nf4_matmul_rounded(outs[i], xr, ws[i], T);
    }
    free(xr);
}

void gn_nf4_matmul(float *out, const float *inp, const gn_quant4_state *w, int64_t T) {
    const int64_t R = w->rows, C = w->cols;
    if (T <= 0 || R <= 0) return;
    if (C == 0) { memset(out, 0, (size_t)(T * R) * sizeof(float)); return; }
    gn_simd lvl = level_for(w);
    if (small_t_ok(w, T, lvl)) { gn_nf4_matmul_multi(&out, inp, &w, 1, T); return; }
    if (w->wdtype == GN_DTYPE_F32) { nf4_matmul_rounded(out, inp, w, T); return; }
    if (T > 1 && gemm_bf16_ok(w)) { // the bf16 pairs are the rounded input
        uint32_t *xp = bf16_pairs(inp, T, C);
        nf4_gemm_bf16(out, xp, amx_inputs(xp, T, C), w, T);
        return;
    }
    float *xr = gn_malloc(sizeof(float) * (size_t)(T * C)); // the input in the compute dtype
    round_copy(xr, inp, T * C, w->wdtype);
    if (T > NF4_SMALL_T && gemm_i16_ok(w)) nf4_igemm(&out, xr, &w, 1, T);
    else nf4_matmul_rounded(out, xr, w, T);
    free(xr);
}
