/*
 * probe_machine.c — the two machine limits the bench tables divide by, measured on the spot:
 *
 *   read bandwidth  T threads each sum their own stretch of a 1 GiB float buffer (AVX2 or
 *                   AVX-512 loads, 4 independent sums), as one plain stream, as four
 *                   16 KiB rows at a time, and so with software fetches 1 KiB ahead, 4
 *                   passes each, in 2 MiB pages, of varied values: the best bytes / time
 *   f32 FMA peak    T threads each run 12 independent chains of vector FMAs (registers
 *                   only) for 200 M lane-FMAs: 2 FLOPs per lane-FMA / time, best of 3
 *   bf16 dot peak   (AVX512_BF16) the same with vdpbf16ps: 4 FLOPs per lane (two products and
 *                   their sums), the limit of the bf16 products (prefill, training) there
 *   AMX bf16 peak   (AMX tiles in use) four independent tdpbf16ps on resident tiles per round:
 *                   2 x 16 x 16 x 32 FLOPs each
 *
 * Both use the widest vector this CPU has (the GN_SIMD level the kernels chose, printed),
 * so on an AVX2-only CPU the peak is the 8-lane FMA peak. The limits are yardsticks for the
 * decode (bandwidth) and prefill/training (FLOPs) rows, not ceilings for int8 engines.
 *
 *   build/bench/probe_machine [-t THREADS] [--mib N] [--json]
 */
#include <guanaco.h>

#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h> // madvise: the buffer in huge pages
#include <time.h>

#include "tensor/kernels.h"

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

// ---------------------------------------------------------------------------
// read bandwidth

__attribute__((target("avx512f"))) static float sum_avx512(const float *p, size_t n) {
    __m512 a = _mm512_setzero_ps(), b = a, c = a, d = a;
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        a = _mm512_add_ps(a, _mm512_load_ps(p + i));
        b = _mm512_add_ps(b, _mm512_load_ps(p + i + 16));
        c = _mm512_add_ps(c, _mm512_load_ps(p + i + 32));
        d = _mm512_add_ps(d, _mm512_load_ps(p + i + 48));
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a, b), _mm512_add_ps(c, d)));
}

__attribute__((target("avx2"))) static float sum_avx2(const float *p, size_t n) {
    __m256 a = _mm256_setzero_ps(), b = a, c = a, d = a;
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        a = _mm256_add_ps(a, _mm256_load_ps(p + i));
        b = _mm256_add_ps(b, _mm256_load_ps(p + i + 8));
        c = _mm256_add_ps(c, _mm256_load_ps(p + i + 16));
        d = _mm256_add_ps(d, _mm256_load_ps(p + i + 24));
    }
    float t[8];
    _mm256_storeu_ps(t, _mm256_add_ps(_mm256_add_ps(a, b), _mm256_add_ps(c, d)));
    return t[0] + t[1] + t[2] + t[3] + t[4] + t[5] + t[6] + t[7];
}

static float sum_scalar(const float *p, size_t n) {
    float a = 0, b = 0, c = 0, d = 0;
    for (size_t i = 0; i + 4 <= n; i += 4) { a += p[i]; b += p[i + 1]; c += p[i + 2]; d += p[i + 3]; }
    return a + b + c + d;
}

// The way the decode kernels read: four rows of 16 KiB side by side, with or without software
// fetches 1 KiB ahead into L2 (ahead 0). One plain stream a core left Zen 5's bandwidth short
// of what decode then read (2 threads, random contents: 36-45 against 46-53 GB/s).
#define ROWF 4096 // floats a row
__attribute__((target("avx512f"))) static float sum4_avx512(const float *p, size_t n, int ahead) {
    __m512 a = _mm512_setzero_ps(), b = a, c = a, d = a;
    for (size_t r = 0; r + 4 * ROWF <= n; r += 4 * ROWF)
        for (size_t i = r; i < r + ROWF; i += 16) {
            if (ahead)
                for (int k = 0; k < 4; k++) _mm_prefetch((const char *)(p + i + k * ROWF) + ahead, _MM_HINT_T1);
            a = _mm512_add_ps(a, _mm512_load_ps(p + i));
            b = _mm512_add_ps(b, _mm512_load_ps(p + i + ROWF));
            c = _mm512_add_ps(c, _mm512_load_ps(p + i + 2 * ROWF));
            d = _mm512_add_ps(d, _mm512_load_ps(p + i + 3 * ROWF));
        }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a, b), _mm512_add_ps(c, d)));
}

__attribute__((target("avx2"))) static float sum4_avx2(const float *p, size_t n, int ahead) {
    __m256 a = _mm256_setzero_ps(), b = a, c = a, d = a;
    for (size_t r = 0; r + 4 * ROWF <= n; r += 4 * ROWF)
        for (size_t i = r; i < r + ROWF; i += 8) {
            if (i % 16 == 0)
                if (ahead)
                for (int k = 0; k < 4; k++) _mm_prefetch((const char *)(p + i + k * ROWF) + ahead, _MM_HINT_T1);
            a = _mm256_add_ps(a, _mm256_load_ps(p + i));
            b = _mm256_add_ps(b, _mm256_load_ps(p + i + ROWF));
            c = _mm256_add_ps(c, _mm256_load_ps(p + i + 2 * ROWF));
            d = _mm256_add_ps(d, _mm256_load_ps(p + i + 3 * ROWF));
        }
    float t[8];
    _mm256_storeu_ps(t, _mm256_add_ps(_mm256_add_ps(a, b), _mm256_add_ps(c, d)));
    return t[0] + t[1] + t[2] + t[3] + t[4] + t[5] + t[6] + t[7];
}

// way 0: one plain stream a thread; 1: four rows at a time; 2: the same fetched 1 KiB ahead
// (sum_scalar for all without vectors). Ways 1-2 leave out under 64 KiB a thread: counted all
// the same (of 1 GiB).
static float sum_any(const float *p, size_t n, gn_simd l, int way) {
    if (l == GN_SIMD_AVX512) return way ? sum4_avx512(p, n, way == 2 ? 1024 : 0) : sum_avx512(p, n);
    if (l == GN_SIMD_AVX2) return way ? sum4_avx2(p, n, way == 2 ? 1024 : 0) : sum_avx2(p, n);
    return sum_scalar(p, n);
}

// ---------------------------------------------------------------------------
// FMA peak: 12 chains (covers latency 4 x 2 pipes, and 4 x 3)

#define CHAINS 12
// CHAINS independent 16-lane accumulators, each updated by STEP (acc[i] from acc[i], m, k) iters
// times, kept in registers (the loop unrolled), then summed so the work is not dead
#define CHAINS_512(STEP)                                                                   \
    for (int i = 0; i < CHAINS; i++) acc[i] = _mm512_set1_ps((float)i);                   \
    for (long it = 0; it < iters; it++) {                                                  \
        _Pragma("GCC unroll 16") for (int i = 0; i < CHAINS; i++) acc[i] = STEP;           \
    }                                                                                      \
    __m512 s = acc[0];                                                                     \
    for (int i = 1; i < CHAINS; i++) s = _mm512_add_ps(s, acc[i]);                         \
    return _mm512_reduce_add_ps(s)

__attribute__((target("avx512f"))) static float fma_avx512(long iters) {
    __m512 acc[CHAINS], m = _mm512_set1_ps(0.999999f), k = _mm512_set1_ps(1e-7f);
    CHAINS_512(_mm512_fmadd_ps(acc[i], m, k));
}

__attribute__((target("avx2,fma"))) static float fma_avx2(long iters) {
    __m256 acc[CHAINS], m = _mm256_set1_ps(0.999999f), k = _mm256_set1_ps(1e-7f);
    for (int i = 0; i < CHAINS; i++) acc[i] = _mm256_set1_ps((float)i);
    for (long it = 0; it < iters; it++) {
        #pragma GCC unroll 16
        for (int i = 0; i < CHAINS; i++) acc[i] = _mm256_fmadd_ps(acc[i], m, k); // kept in registers: unrolled
    }
    __m256 s = acc[0];
    for (int i = 1; i < CHAINS; i++) s = _mm256_add_ps(s, acc[i]);
    float t[8];
    _mm256_storeu_ps(t, s);
    return t[0] + t[7];
}

__attribute__((target("avx512f,avx512bf16"))) static float dot_bf16(long iters) {
    __m512 acc[CHAINS];
    const __m512bh m = (__m512bh)_mm512_set1_epi16(0x3f80), k = (__m512bh)_mm512_set1_epi16(0x3380); // 1, 6e-8
    CHAINS_512(_mm512_dpbf16_ps(acc[i], m, k));
}

static float fma_scalar(long iters) {
    float acc[CHAINS];
    for (int i = 0; i < CHAINS; i++) acc[i] = (float)i;
    for (long it = 0; it < iters; it++)
        for (int i = 0; i < CHAINS; i++) acc[i] = acc[i] * 0.999999f + 1e-7f;
    return acc[0] + acc[CHAINS - 1];
}

int main(int argc, char **argv) {
    int threads = 0, json = 0;
    long mib = 1024;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-t") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--mib") && i + 1 < argc) mib = atol(argv[++i]);
        else if (!strcmp(argv[i], "--json")) json = 1;
        else {
            fprintf(stderr, "usage: probe_machine [-t THREADS] [--mib N] [--json]\n");
            return 2;
        }
    }
    if (threads > 0) omp_set_num_threads(threads);
    int nth = threads > 0 ? threads : omp_get_max_threads();
    gn_simd l = gn_simd_level();
    const int lanes = l == GN_SIMD_AVX512 ? 16 : l == GN_SIMD_AVX2 ? 8 : 1;

    size_t n = (size_t)mib << 18; // floats
    float *buf = NULL;
    if (posix_memalign((void **)&buf, 2 << 20, n * sizeof(float))) { fprintf(stderr, "probe_machine: out of memory\n"); return 1; }
    // in 2 MiB pages where transparent huge pages are on, as the weights decode streams are
    // (load.c: pin_weights): in 4 KiB pages the prefetchers stop at each page's end
    (void)madvise(buf, n * sizeof(float), MADV_HUGEPAGE);
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) // first touch by the thread that reads it; varied contents (a
        buf[i] = (float)((i * 2654435761u) >> 20 & 1023); // constant buffer read 70-80 GB/s on Zen 5, random data 45)
    double best_bw = 0;
    volatile float sink = 0;
    for (int pass = 0; pass < 12; pass++) { // the three ways in turn, 4 passes each
        double t0 = now_s();
        float s = 0;
        #pragma omp parallel reduction(+ : s)
        {
            int th = omp_get_thread_num(), nt = omp_get_num_threads();
            size_t a = n * (size_t)th / (size_t)nt / 64 * 64, b = n * (size_t)(th + 1) / (size_t)nt / 64 * 64;
            s += sum_any(buf + a, b - a, l, pass % 3);
        }
        double dt = now_s() - t0, bw = (double)n * sizeof(float) / dt / 1e9;
        sink += s;
        if (bw > best_bw) best_bw = bw;
    }
    free(buf);

    const long iters = 200000000L / CHAINS / lanes;
    double best_fl = 0;
    for (int pass = 0; pass < 3; pass++) {
        double t0 = now_s();
        float s = 0;
        #pragma omp parallel reduction(+ : s)
        s += l == GN_SIMD_AVX512 ? fma_avx512(iters) : l == GN_SIMD_AVX2 ? fma_avx2(iters) : fma_scalar(iters);
        double dt = now_s() - t0, fl = 2.0 * (double)iters * CHAINS * lanes * nth / dt / 1e9;
        sink += s;
        if (fl > best_fl) best_fl = fl;
    }
    double best_bf = 0, best_amx = 0;
    if (gn_bf16_gemm_available()) {
        const long bi = 200000000L / CHAINS / 16;
        for (int pass = 0; pass < 3; pass++) {
            double t0 = now_s();
            float s = 0;
            #pragma omp parallel reduction(+ : s)
            s += dot_bf16(bi);
            double dt = now_s() - t0, fl = 4.0 * (double)bi * CHAINS * 16 * nth / dt / 1e9;
            sink += s;
            if (fl > best_bf) best_bf = fl;
        }
    }
    if (gn_amx_mode() == 1) {
        const long rounds = 2000000L;
        for (int pass = 0; pass < 3; pass++) {
            double t0 = now_s();
            #pragma omp parallel
            gn_bf16_amx_spin(rounds);
            double dt = now_s() - t0, fl = 4.0 * 2.0 * 16 * 16 * 32 * (double)rounds * nth / dt / 1e9;
            if (fl > best_amx) best_amx = fl;
        }
    }
    (void)sink;
    printf("probe: %d threads, %s kernels (%d f32 lanes)\n", nth, gn_simd_name(), lanes);
    printf("read bandwidth   %.1f GB/s   (%ld MiB buffer, best of 12: a plain stream, rows, prefetched rows)\n", best_bw, mib);
    printf("f32 FMA peak     %.1f GFLOP/s (%d chains of %d-lane FMAs per thread, best of 3)\n", best_fl, CHAINS, lanes);
    if (best_bf > 0) printf("bf16 dot peak    %.1f GFLOP/s (%d chains of vdpbf16ps per thread, best of 3)\n", best_bf, CHAINS);
    if (best_amx > 0) printf("AMX bf16 peak    %.1f GFLOP/s (4 tdpbf16ps on resident tiles a round, best of 3)\n", best_amx);
    if (json)
        printf("{\"threads\": %d, \"simd\": \"%s\", \"lanes\": %d, \"bw_gbs\": %.2f, \"peak_gflops\": %.2f, "
               "\"bf16_gflops\": %.2f, \"amx_gflops\": %.2f}\n", nth, gn_simd_name(), lanes, best_bw, best_fl, best_bf, best_amx);
    return 0;
}
