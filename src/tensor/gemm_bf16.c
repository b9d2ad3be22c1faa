/*
 * gemm_bf16.c — matrix products on AVX512_BF16's vdpbf16ps: bf16 inputs, float32
 * sums. Each instruction multiplies 32 bf16 pairs and adds them into 16 float32
 * lanes: twice the multiply-adds of an f32 FMA, and the products are exact.
 *
 * Used where the computation is defined in bf16 anyway (a bf16 compute dtype:
 * bitsandbytes' 4-bit products and their input gradients in nf4_kernels.c, the
 * QLoRA branch and head under autocast in train.c). Values are rounded to bf16
 * (nearest even) on the way in; a denormal input counts as zero (vdpbf16ps does
 * that, and vcvtne2ps2bf16 flushes them too).
 *
 * Layout: the micro-kernel computes an 8 x 32 tile of C. A is read as bf16
 * pairs along k (one 32-bit broadcast per row and k pair); B as a packed panel
 * [k/2][32 columns][2], 64 bytes per k pair. gn_gemm_bf16 packs both operands
 * from row-major float32 in any transposition.
 */
#include "kernels.h"

#include <cpuid.h>     // __get_cpuid_count: AMX
#include <pthread.h>   // pthread_once: AMX start-up
#include <immintrin.h>
#include <stdlib.h>    // getenv
#include <string.h>    // memset
#include <sys/syscall.h> // SYS_arch_prctl: the tile state
#include <unistd.h>    // syscall

int gn_bf16_gemm_available(void) {
    static int have = -1;
    if (have < 0) {
        __builtin_cpu_init();
        static int off = -1; // the switch tests and comparisons already use
        have = __builtin_cpu_supports("avx512bf16") && !gn_env_switch("GN_NF4_NO_BF16DOT", &off);
    }
    return have && gn_simd_level() >= GN_SIMD_AVX512;
}

#define NR GN_BF16_NR
#define MR GN_BF16_MR

// One row of a C tile from its sums lo (columns 0-15) and hi (16-31), nr columns stored: first:
// alpha sum + beta C (C not read where beta is 0), else C += alpha sum
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
static inline void store_c_row(float *o, __m512 lo, __m512 hi, int nr, float alpha, float beta, int first) {
    const __mmask16 m0 = nr >= 16 ? 0xffff : (__mmask16)((1u << nr) - 1);
    const __mmask16 m1 = nr >= 32 ? 0xffff : nr <= 16 ? 0 : (__mmask16)((1u << (nr - 16)) - 1);
    const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    for (int h = 0; h < 2; h++) {
        const __mmask16 m = h ? m1 : m0;
        __m512 v = _mm512_mul_ps(h ? hi : lo, va);
        if (!first) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, o + 16 * h));
        else if (beta != 0.0f) v = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m, o + 16 * h), v);
        _mm512_mask_storeu_ps(o + 16 * h, m, v);
    }
}

__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
void gn_bf16_kernel(const uint32_t *a, int64_t sm, int64_t sk, int mr, const uint32_t *pk, int64_t kp, float *c,
                    int64_t ldc, int nr, float alpha, float beta, int first) {
    __m512 acc[MR][2];
#pragma GCC unroll 8
    for (int i = 0; i < MR; i++) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
    const uint32_t *ar[MR];
#pragma GCC unroll 8
    for (int i = 0; i < MR; i++) ar[i] = a + (i < mr ? i : mr - 1) * sm; // extra rows repeat the last
    // the tile of C this call reads and writes at the end, asked for now: its rows lie a row
    // stride apart (tens of KiB), each line a miss the k loop can hide (LoRA's products have
    // 32 k pairs a tile: waiting for C made them half as fast)
    for (int i = 0; i < mr; i++) {
        __builtin_prefetch(c + i * ldc, 1, 3);
        if (nr > 16) __builtin_prefetch(c + i * ldc + 16, 1, 3);
    }
    for (int64_t k = 0; k < kp; k++) {
        __m512bh b0 = (__m512bh)_mm512_loadu_si512(pk + k * NR), b1 = (__m512bh)_mm512_loadu_si512(pk + k * NR + 16);
#pragma GCC unroll 8
        for (int i = 0; i < MR; i++) {
            __m512bh x = (__m512bh)_mm512_set1_epi32((int)ar[i][k * sk]);
            acc[i][0] = _mm512_dpbf16_ps(acc[i][0], x, b0);
            acc[i][1] = _mm512_dpbf16_ps(acc[i][1], x, b1);
        }
    }
    for (int i = 0; i < mr; i++) store_c_row(c + i * ldc, acc[i][0], acc[i][1], nr, alpha, beta, first);
}

// 16 vectors of 16 words, v[j][c], stored transposed: word c of row j goes to dst[c * stride + j],
// rows c < np (unpack within 128-bit lanes, then 128-bit lanes across registers)
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
static inline void transpose16_store(uint32_t *dst, int64_t stride, __m512i v[16], int np) {
    __m512i t[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_epi32(v[2 * i], v[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(v[2 * i], v[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++) { // v[4i + j]: in lane L, column 4L + j of rows 4i..4i+3
        v[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
        v[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
        v[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
        v[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
    }
    for (int j = 0; j < 4; j++) {
        __m512i s0 = _mm512_shuffle_i32x4(v[j], v[4 + j], 0x44), s1 = _mm512_shuffle_i32x4(v[j], v[4 + j], 0xEE);
        __m512i s2 = _mm512_shuffle_i32x4(v[8 + j], v[12 + j], 0x44), s3 = _mm512_shuffle_i32x4(v[8 + j], v[12 + j], 0xEE);
        __m512i o[4] = {_mm512_shuffle_i32x4(s0, s2, 0x88), _mm512_shuffle_i32x4(s0, s2, 0xDD),
                        _mm512_shuffle_i32x4(s1, s3, 0x88), _mm512_shuffle_i32x4(s1, s3, 0xDD)};
        for (int L = 0; L < 4; L++) {
            int c = 4 * L + j;
            if (c < np) _mm512_storeu_si512(dst + c * stride, o[L]);
        }
    }
}
// Panel packing for B stored (N, K): v[j] holds 16 k-pairs of column n0 + j0 + j (j < 16);
// they go to pk[(kp0 + c) * 32 + j0 + j] for c < np — a 16 x 16 transpose of 32-bit words
// in registers.
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
void gn_bf16_pack16(uint32_t *pk, int64_t kp0, int j0, __m512i v[16], int np) {
    transpose16_store(pk + kp0 * NR + j0, NR, v, np);
}

// 16 floats at p and 16 at q as bf16 pairs (p[i], q[i]) in 32-bit lanes
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
static inline __m512i pairs16(const float *p, const float *q, __mmask16 m) {
    __m512i lo = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, p)));
    __m512i hi = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, q)));
    return _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16));
}

// ----------------------------------------------------------------------------
// AMX tiles. The same operands as the kernel above: A as bf16 pairs along k (packed into
// 16 x 16-pair tiles, gn_bf16_amx_pack_a), B as the panel [kp][32] pairs, which is already
// the layout tdpbf16ps wants of its second operand (a tile row is one k pair of 16 columns).
// A 32 x 32 block of C takes four accumulator tiles (0-3), two A tiles (4, 5) and two B
// tiles (6, 7): all eight. Every tile is 16 rows x 64 bytes, one configuration for all. Sums
// are float32 as in vdpbf16ps (products exact, inputs' denormals read as zero), in another order.

static int amx_mode = -1;

// Linux gives a process the tile data state only when asked (arch_prctl ARCH_REQ_XCOMP_PERM
// for XFEATURE_XTILEDATA); before that a tile instruction faults
static int amx_hardware(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !(d & (1u << 24)) || !(d & (1u << 22))) return 0; // AMX-TILE, AMX-BF16
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27))) return 0; // OSXSAVE: XCR0 readable
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if ((lo & (3u << 17)) != (3u << 17)) return 0; // XTILECFG and XTILEDATA enabled by the OS
    return syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XFEATURE_XTILEDATA */) == 0;
}

static int amx_selfcheck(int mode);
static pthread_once_t amx_once = PTHREAD_ONCE_INIT;

static void amx_init(void) {
    static int emu_env = -1;
    const char *s = getenv("GN_SIMD");
    int allowed = (!s || !*s || !strcmp(s, "amx")) && gn_bf16_gemm_available();
    int mode = !allowed ? 0 : amx_hardware() ? 1 : gn_env_switch("GN_AMX_EMULATE", &emu_env) ? 2 : 0;
    if (mode && !amx_selfcheck(mode)) {
        gn_log(GN_LOG_WARN, "AMX tiles gave a wrong product in the start-up check; the bf16 products stay on "
                            "AVX512_BF16 (GN_SIMD=avx512 does that without the check)");
        mode = 0;
    }
    amx_mode = mode;
}

int gn_amx_mode(void) {
    pthread_once(&amx_once, amx_init);
    return amx_mode && gn_bf16_gemm_available() ? amx_mode : 0;
}

// the same from A's pairs stored [kp][m] (a[kp * M + i]: A stored (K, M)), 16 x 16 transposes
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
static void amx_pack_a_t(const uint32_t *a, int64_t M, int64_t KP, uint32_t *at) {
    const int64_t nmt = (M + 15) / 16, nkt = (KP + 15) / 16;
    #pragma omp parallel for schedule(static) if (M * KP > 65536)
    for (int64_t it = 0; it < nmt; it++) {
        const __mmask16 mm = M - it * 16 >= 16 ? 0xffff : (__mmask16)((1u << (M - it * 16)) - 1);
        for (int64_t kt = 0; kt < nkt; kt++) {
            __m512i v[16];
            for (int c = 0; c < 16; c++) {
                const int64_t kp = kt * 16 + c;
                v[c] = kp < KP ? _mm512_maskz_loadu_epi32(mm, a + kp * M + it * 16) : _mm512_setzero_si512();
            }
            transpose16_store(at + (it * nkt + kt) * 256, 16, v, 16);
        }
    }
}

void gn_bf16_amx_pack_a(const uint32_t *a, int64_t sm, int64_t M, int64_t KP, uint32_t *at) {
    const int64_t nmt = (M + 15) / 16, nkt = (KP + 15) / 16;
    #pragma omp parallel for schedule(static) if (M * KP > 65536)
    for (int64_t it = 0; it < nmt; it++)
        for (int64_t kt = 0; kt < nkt; kt++) {
            uint32_t *t = at + (it * nkt + kt) * 256;
            const int64_t kn = KP - kt * 16 < 16 ? KP - kt * 16 : 16;
            for (int r = 0; r < 16; r++) {
                const int64_t i = it * 16 + r;
                if (i >= M) { memset(t + r * 16, 0, 64); continue; }
                memcpy(t + r * 16, a + i * sm + kt * 16, sizeof(uint32_t) * (size_t)kn);
                if (kn < 16) memset(t + r * 16 + kn, 0, sizeof(uint32_t) * (size_t)(16 - kn));
            }
        }
}

// The emulated tile file: each instruction as the ISA reference describes it (rows of 64 bytes;
// tdpbf16ps: for each row m, k pair and column n, c[m][n] += a[m][2k] b[k][2n], then
// += a[m][2k+1] b[k][2n+1], inputs' denormals as zero, float32 sums)
static __thread uint8_t emu_tile[8][16][64];

static void emu_load(int t, const void *base, int64_t stride) {
    for (int r = 0; r < 16; r++) memcpy(emu_tile[t][r], (const uint8_t *)base + r * stride, 64);
}
static void emu_store(int t, void *base, int64_t stride) {
    for (int r = 0; r < 16; r++) memcpy((uint8_t *)base + r * stride, emu_tile[t][r], 64);
}
static float emu_bf16(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    if ((h & 0x7f80) == 0) h &= 0x8000; // a denormal reads as zero
    return gn_bf16_to_f32(h);
}
static void emu_dp(int tc, int ta, int tb) {
    for (int m = 0; m < 16; m++)
        for (int k = 0; k < 16; k++)
            for (int n = 0; n < 16; n++) {
                float s;
                memcpy(&s, emu_tile[tc][m] + 4 * n, 4);
                s += emu_bf16(emu_tile[ta][m] + 4 * k) * emu_bf16(emu_tile[tb][k] + 4 * n);
                s += emu_bf16(emu_tile[ta][m] + 4 * k + 2) * emu_bf16(emu_tile[tb][k] + 4 * n + 2);
                memcpy(emu_tile[tc][m] + 4 * n, &s, 4);
            }
}

// every tile 16 rows of 64 bytes (palette 1)
static const struct { uint8_t palette, start_row, reserved[14]; uint16_t colsb[16]; uint8_t rows[16]; }
    amx_cfg __attribute__((aligned(64))) = {1, 0, {0}, {64, 64, 64, 64, 64, 64, 64, 64}, {16, 16, 16, 16, 16, 16, 16, 16}};
_Static_assert(sizeof amx_cfg == 64, "ldtilecfg reads 64 bytes: palette, start row, 14 reserved, 16 x colsb, 16 x rows");

#define AMX_ZERO(t) do { if (emu) memset(emu_tile[t], 0, 1024); else _tile_zero(t); } while (0)
#define AMX_LOAD(t, p, s) do { if (emu) emu_load(t, p, s); else _tile_loadd(t, p, s); } while (0)
#define AMX_STORE(t, p, s) do { if (emu) emu_store(t, p, s); else _tile_stored(t, p, s); } while (0)
#define AMX_DP(c, a, b) do { if (emu) emu_dp(c, a, b); else _tile_dpbf16ps(c, a, b); } while (0)

// acc (32 x 32 floats) = rows of tiles a (and a + astep when two) times nk k tiles of the panel
__attribute__((target("amx-tile,amx-bf16"), always_inline))
static inline void amx_tiles(int emu, const uint32_t *a, int64_t astep, int two, const uint32_t *pk, int64_t nk, float *acc) {
    // the configuration each call (tens of cycles against thousands): other code in this thread
    // (oneDNN inside a PyTorch loaded beside the Python package) may have loaded its own
    if (!emu) _tile_loadconfig(&amx_cfg);
    __asm__ volatile("" ::: "memory"); // the tile loads read memory the compiler does not see them read
    AMX_ZERO(0); AMX_ZERO(1); AMX_ZERO(2); AMX_ZERO(3);
    for (int64_t kt = 0; kt < nk; kt++) {
        AMX_LOAD(4, a + kt * 256, 64);
        AMX_LOAD(6, pk + kt * 16 * NR, 4 * NR);
        AMX_LOAD(7, pk + kt * 16 * NR + 16, 4 * NR);
        AMX_DP(0, 4, 6);
        AMX_DP(1, 4, 7);
        if (two) {
            AMX_LOAD(5, a + astep + kt * 256, 64);
            AMX_DP(2, 5, 6);
            AMX_DP(3, 5, 7);
        }
    }
    AMX_STORE(0, acc, 4 * 32);
    AMX_STORE(1, acc + 16, 4 * 32);
    if (two) {
        AMX_STORE(2, acc + 16 * 32, 4 * 32);
        AMX_STORE(3, acc + 16 * 32 + 16, 4 * 32);
    }
    if (!emu) _tile_release(); // tiles not in use between calls: nothing of them for a context switch to save
    __asm__ volatile("" ::: "memory"); // ... and write memory it does not see written
}
__attribute__((target("amx-tile,amx-bf16"), noinline))
static void amx_tiles_hw(const uint32_t *a, int64_t astep, int two, const uint32_t *pk, int64_t nk, float *acc) {
    amx_tiles(0, a, astep, two, pk, nk, acc);
}
__attribute__((target("amx-tile,amx-bf16"), noinline))
static void amx_tiles_emu(const uint32_t *a, int64_t astep, int two, const uint32_t *pk, int64_t nk, float *acc) {
    amx_tiles(1, a, astep, two, pk, nk, acc);
}

// gn_bf16_amx_block on the tiles of mode (1 hardware, 2 emulated)
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
static void amx_block(int mode, const uint32_t *at, int64_t nkt, int64_t i0, int64_t kp0, int mr, const uint32_t *pk,
                      int64_t kp, float *c, int64_t ldc, int nr, float alpha, float beta, int first) {
    float acc[32 * 32] __attribute__((aligned(64)));
    const uint32_t *a = at + ((i0 / 16) * nkt + kp0 / 16) * 256;
    const int64_t nk = (kp + 15) / 16;
    if (mode == 2) amx_tiles_emu(a, nkt * 256, mr > 16, pk, nk, acc);
    else amx_tiles_hw(a, nkt * 256, mr > 16, pk, nk, acc);
    for (int i = 0; i < mr; i++)
        store_c_row(c + i * ldc, _mm512_load_ps(acc + i * 32), _mm512_load_ps(acc + i * 32 + 16), nr, alpha, beta, first);
}

void gn_bf16_amx_block(const uint32_t *at, int64_t nkt, int64_t i0, int64_t kp0, int mr, const uint32_t *pk, int64_t kp,
                       float *c, int64_t ldc, int nr, float alpha, float beta, int first) {
    amx_block(amx_mode, at, nkt, i0, kp0, mr, pk, kp, c, ldc, nr, alpha, beta, first);
}

// For the machine probe (bench/probe_machine.c): n rounds of four tdpbf16ps on tiles loaded
// once (no memory traffic), 4 x 16 x 16 x 32 multiply-adds a round; the hardware tiles only
__attribute__((target("amx-tile,amx-bf16")))
void gn_bf16_amx_spin(int64_t n) {
    static const uint32_t ones[256] __attribute__((aligned(64))) = {0}; // zeros: the sums stay finite
    _tile_loadconfig(&amx_cfg);
    _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
    _tile_loadd(4, ones, 64); _tile_loadd(5, ones, 64); _tile_loadd(6, ones, 64); _tile_loadd(7, ones, 64);
    for (int64_t i = 0; i < n; i++) {
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
    }
    _tile_release();
}

// A 32 x 32 product of 48 k pairs through the tiles (two k tiles, the second half zeros) against
// exact integer sums: small integers, so every order of the float32 sums gives the same result
static int amx_selfcheck(int mode) {
    uint32_t a[32 * 48], at[2 * 3 * 256], pk[48 * NR];
    float c[32 * 32];
    for (int i = 0; i < 32; i++)
        for (int k = 0; k < 48; k++) {
            float lo = (float)((i * 7 + k * 3) % 5 - 2), hi = (float)((i * 3 + k * 5) % 7 - 3);
            a[i * 48 + k] = gn_f32_to_bf16(lo) | (uint32_t)gn_f32_to_bf16(hi) << 16;
        }
    for (int k = 0; k < 48; k++)
        for (int n = 0; n < NR; n++) {
            float lo = k < 40 ? (float)((k * 5 + n * 11) % 7 - 3) : 0.0f, hi = k < 40 ? (float)((k + n * 3) % 5 - 2) : 0.0f;
            pk[k * NR + n] = gn_f32_to_bf16(lo) | (uint32_t)gn_f32_to_bf16(hi) << 16;
        }
    gn_bf16_amx_pack_a(a, 48, 32, 48, at);
    for (int i = 0; i < 32 * 32; i++) c[i] = 1.0f;
    amx_block(mode, at, 3, 0, 0, 32, pk, 40, c, 32, 32, 1.0f, 1.0f, 1); // c = acc + c
    for (int i = 0; i < 32; i++)
        for (int n = 0; n < 32; n++) {
            float want = 1.0f;
            for (int k = 0; k < 40; k++)
                want += gn_bf16_to_f32((uint16_t)a[i * 48 + k]) * gn_bf16_to_f32((uint16_t)pk[k * NR + n]) +
                        gn_bf16_to_f32((uint16_t)(a[i * 48 + k] >> 16)) * gn_bf16_to_f32((uint16_t)(pk[k * NR + n] >> 16));
            if (c[i * 32 + n] != want) return 0;
        }
    return 1;
}

// Row r of a row-major (rows, n) float matrix as n/2 bf16 pairs (n odd: a zero pads)
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
void gn_bf16_pairs_row(const float *x, int64_t n, uint32_t *dst) {
    uint16_t *d = (uint16_t *)dst;
    int64_t c = 0;
    for (; c + 32 <= n; c += 32)
        _mm512_storeu_si512(d + c, (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + c + 16), _mm512_loadu_ps(x + c)));
    for (; c < n; c++) d[c] = gn_f32_to_bf16(x[c]);
    if (n & 1) d[n] = 0;
}

// The panel of op(B) from column n0 (nr of NR columns) and k0 (kc, even; kreal of them inside K)
// into pk as [kp][NR] pairs; pack: the caller's own packer
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
static void pack_b_panel(int tb, int64_t K, const float *B, const uint16_t *Bh, int64_t ldb, gn_bf16_packer pack,
                         const void *pctx, int64_t n0, int nr, int64_t k0, int64_t kc, int64_t kreal, uint32_t *pk) {
    if (pack) { // the caller's own B (a 4-bit weight dequantized straight into the panel)
        pack(pctx, pk, n0, nr, k0, kc);
    } else if (tb) { // B stored (N, K): column n of op(B) is row n of B, pairs contiguous
        for (int j0 = 0; j0 < NR; j0 += 16)
            for (int64_t k = 0; k < kc; k += 32) {
                __m512i v[16];
                const int64_t left = kreal - k; // values of the row left in this block
                for (int j = 0; j < 16; j++) {
                    if (j0 + j >= nr || left <= 0) { v[j] = _mm512_setzero_si512(); continue; }
                    if (Bh) {
                        __mmask32 mw = left >= 32 ? 0xffffffffu : (__mmask32)((1ull << left) - 1);
                        v[j] = _mm512_maskz_loadu_epi16(mw, Bh + (n0 + j0 + j) * ldb + k0 + k);
                    } else {
                        const float *src = B + (n0 + j0 + j) * ldb + k0 + k;
                        __mmask16 ma = left >= 16 ? 0xffff : (__mmask16)((1u << left) - 1);
                        __mmask16 mb = left >= 32 ? 0xffff : left <= 16 ? 0 : (__mmask16)((1u << (left - 16)) - 1);
                        v[j] = (__m512i)_mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(mb, src + 16), _mm512_maskz_loadu_ps(ma, src));
                    }
                }
                int64_t np = kc / 2 - k / 2 < 16 ? kc / 2 - k / 2 : 16;
                gn_bf16_pack16(pk, k / 2, j0, v, (int)np);
            }
    } else { // B stored (K, N): rows k and k+1 interleaved
        for (int64_t kp = 0; kp < kc / 2; kp++) {
            const int64_t k = k0 + 2 * kp;
            if (Bh) { // bf16 rows k, k+1: zero-extend and interleave
                const uint16_t *h0 = Bh + k * ldb + n0, *h1 = k + 1 < K ? h0 + ldb : NULL;
                for (int h = 0; h < 2; h++) {
                    int cnt = nr - 16 * h;
                    __mmask16 msk = cnt >= 16 ? 0xffff : cnt <= 0 ? 0 : (__mmask16)((1u << cnt) - 1);
                    __m512i lo = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(msk, h0 + 16 * h));
                    __m512i hi = h1 ? _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(msk, h1 + 16 * h)) : _mm512_setzero_si512();
                    _mm512_store_si512(pk + kp * NR + 16 * h, _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)));
                }
                continue;
            }
            const float *r0 = B + k * ldb + n0, *r1 = k + 1 < K ? r0 + ldb : NULL;
            for (int h = 0; h < 2; h++) {
                int cnt = nr - 16 * h;
                __mmask16 msk = cnt >= 16 ? 0xffff : cnt <= 0 ? 0 : (__mmask16)((1u << cnt) - 1);
                __m512i v = k >= K ? _mm512_setzero_si512()
                            : r1 ? pairs16(r0 + 16 * h, r1 + 16 * h, msk)
                                 : _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(msk, r0 + 16 * h)));
                _mm512_store_si512(pk + kp * NR + 16 * h, v);
            }
        }
    }
}

// A (M x K of op(A)) as bf16 pairs along k into ap: [m][kp] (A stored (M, K); *sm = KP, *sk = 1) or
// [kp][m] (A stored (K, M); *sm = 1, *sk = M); threads where par and the work is large enough
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
static void a_pairs(int ta, int64_t M, int64_t K, const float *A, int64_t lda, uint32_t *ap, int64_t *sm, int64_t *sk,
                    int par) {
    const int64_t KP = (K + 1) / 2;
    if (!ta) {
        *sm = KP, *sk = 1;
        #pragma omp parallel for schedule(static) if (par && M * K > 65536)
        for (int64_t m = 0; m < M; m++) gn_bf16_pairs_row(A + m * lda, K, ap + m * KP);
        return;
    }
    *sm = 1, *sk = M;
    #pragma omp parallel for schedule(static) if (par && M * K > 65536)
    for (int64_t kp = 0; kp < KP; kp++) {
        const float *r0 = A + 2 * kp * lda, *r1 = 2 * kp + 1 < K ? r0 + lda : NULL;
        for (int64_t m = 0; m < M; m += 16) {
            const __mmask16 msk = M - m >= 16 ? 0xffff : (__mmask16)((1u << (M - m)) - 1);
            const __m512i v = r1 ? pairs16(r0 + m, r1 + m, msk)
                                 : _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(msk, r0 + m)));
            _mm512_mask_storeu_epi32(ap + kp * M + m, msk, v);
        }
    }
}

// C = beta C (beta 0: zeros, C not read): a product with K = 0
static void scale_c(int64_t M, int64_t N, float beta, float *C, int64_t ldc) {
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) C[i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
}

// GN_GEMM_SMALL_K_OFF=1: small-K products take the panel tasks too (the path before the row walk)
static int getenv_small_k_off(void) { static int v = -1; return gn_env_switch("GN_GEMM_SMALL_K_OFF", &v); }

// C (M, N) = alpha op(A) op(B) + beta C, row-major; op(A) is (M, K), op(B) is (K, N).
// ta: A is stored (K, M); tb: B is stored (N, K). beta == 0: C is not read.
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
static void gemm(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                 const float *B, const uint16_t *Bh, int64_t ldb, gn_bf16_packer pack, const void *pctx, float beta,
                 float *C, int64_t ldc) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0) { scale_c(M, N, beta, C, ldc); return; }
    const int64_t KP = (K + 1) / 2;
    // AMX (16 rows or more), blocks of 32 rows: A stored (M, K) goes straight into tiles a row at a
    // time (no pairs copy beside them: the head's input gradient has K = the vocabulary, 50 MB of
    // pairs), A stored (K, M) through its pairs [kp][m] and 16 x 16 transposes
    const int amx = M >= 16 && gn_amx_mode();
    const int64_t nkt = (KP + 15) / 16, KPB = amx ? nkt * 16 : KP; // pairs a small-K panel holds
    uint32_t *at = NULL, *ap = NULL;
    int64_t sm = 0, sk = 0;
    if (amx && !ta) {
        at = gn_scratch(GN_SCRATCH_GEMM_A, sizeof(uint32_t) * (size_t)((M + 15) / 16 * nkt * 256));
        #pragma omp parallel if (M * K > 65536)
        {
            uint32_t *row = gn_scratch(GN_SCRATCH_AMX_A, sizeof(uint32_t) * (size_t)(nkt * 16));
            #pragma omp for schedule(static)
            for (int64_t m = 0; m < (M + 15) / 16 * 16; m++) {
                if (m < M) gn_bf16_pairs_row(A + m * lda, K, row);
                memset(row + (m < M ? KP : 0), 0, sizeof(uint32_t) * (size_t)(nkt * 16 - (m < M ? KP : 0)));
                for (int64_t kt = 0; kt < nkt; kt++) memcpy(at + ((m / 16) * nkt + kt) * 256 + (m % 16) * 16, row + kt * 16, 64);
            }
        }
    } else {
        // A as pairs along k: [m][kp] (A stored (M, K)) or [kp][m] (A stored (K, M))
        ap = gn_scratch(GN_SCRATCH_GEMM_A, sizeof(uint32_t) * (size_t)(M * KP));
        a_pairs(ta, M, K, A, lda, ap, &sm, &sk, 1);
        if (amx) { // here ta: A stored (K, M) (the other way went straight into tiles above)
            at = gn_scratch(GN_SCRATCH_AMX_A, sizeof(uint32_t) * (size_t)((M + 15) / 16 * nkt * 256));
            amx_pack_a_t(ap, M, KP, at);
        }
    }
    // Small K (LoRA's products through its rank: y += s (x A^T) B^T, dx += s z A), all of op(B)
    // packed once (at most 768 KiB: in L2), then each task one block of MR rows across all the
    // panels, so C is walked row by row. In panels of 32 columns down the rows, each tile of C
    // was 8 rows 8 KiB or more apart and K = 64 left the kernel no time to hide their misses:
    // 513 x 2048 x 64 took 5.2 ms with C out of cache, 0.64 in it (2 Zen 4 cores; 0.58 both ways
    // now). Same tiles, same sums.
    const int64_t npb = (N + NR - 1) / NR;
    const int64_t small_max = gn_cpu_l2_bytes() * 3 / 4 > (768 << 10) ? gn_cpu_l2_bytes() * 3 / 4 : (768 << 10);
    if (!pack && K <= 128 && npb * KPB * NR * 4 <= small_max && M >= 4 * MR && !getenv_small_k_off()) {
        uint32_t *bp = gn_scratch(GN_SCRATCH_GEMM_B, sizeof(uint32_t) * (size_t)(npb * KPB * NR)); // shared
        const int mb = amx ? 32 : MR;
        #pragma omp parallel if (M * N * K > 65536)
        {
            #pragma omp for schedule(static)
            for (int64_t pn = 0; pn < npb; pn++) {
                const int nr = N - pn * NR < NR ? (int)(N - pn * NR) : NR;
                pack_b_panel(tb, K, B, Bh, ldb, NULL, NULL, pn * NR, nr, 0, 2 * KP, K, bp + pn * KPB * NR);
                memset(bp + (pn * KPB + KP) * NR, 0, sizeof(uint32_t) * (size_t)((KPB - KP) * NR)); // AMX reads them
            }
            #pragma omp for schedule(dynamic, 1)
            for (int64_t i0 = 0; i0 < M; i0 += mb) {
                const int mr = M - i0 < mb ? (int)(M - i0) : mb;
                for (int64_t pn = 0; pn < npb; pn++) {
                    const int nr = N - pn * NR < NR ? (int)(N - pn * NR) : NR;
                    if (amx) gn_bf16_amx_block(at, nkt, i0, 0, mr, bp + pn * KPB * NR, KP, C + i0 * ldc + pn * NR, ldc, nr, alpha, beta, 1);
                    else gn_bf16_kernel(ap + i0 * sm, sm, sk, mr, bp + pn * KP * NR, KP, C + i0 * ldc + pn * NR, ldc, nr, alpha, beta, 1);
                }
            }
        }
        return;
    }
    // tasks: (panel of 32 columns, stretch of rows); each packs its B panel, k in blocks of KC
    // row stretches of about 256 (A's pairs of a stretch stay in L2), as many as M / 256 rounded
    // to nearest: 513 rows (a sequence) make two stretches, not 256 + 256 + 1 (each stretch packs
    // its own copy of every B panel, so a one-row stretch cost as much packing as a full one)
    // (256 rows of 2048 k: 1 MiB; with a larger L2, as many rows as fill it, up to 1024)
    enum { KC = 2048 };
    const int64_t l2rows = gn_cpu_l2_bytes() / (KC * 2), MC0 = l2rows < 256 ? 256 : l2rows > 1024 ? 1024 : l2rows;
    int64_t nmc0 = (M + MC0 / 2) / MC0;
    if (nmc0 < 1) nmc0 = 1;
    const int mb = amx ? 32 : MR; // rows a kernel call takes
    const int64_t MC = ((M + nmc0 - 1) / nmc0 + mb - 1) / mb * mb;
    const int64_t npan = (N + NR - 1) / NR, nmc = (M + MC - 1) / MC, ntask = npan * nmc;
    // k blocks outermost (every thread walks them; the loop over tasks ends in a barrier, so a
    // tile's k blocks are added in order): a stretch's block of A stays in cache while the
    // panels take their turns (k inside the task re-read all of A once per panel: with
    // K = 49152, the head's input gradient, 900 MB of A traffic for a 50 MB operand)
    #pragma omp parallel if (M * N * K > 65536)
    {
        // each thread's panel, kept between calls (a 128 KiB malloc per call was an mmap, its page
        // faults and a munmap each time: LoRA's small products make a thousand calls a sequence)
        uint32_t *pk = gn_scratch(GN_SCRATCH_PANEL, sizeof(uint32_t) * (size_t)(KC / 2) * NR);
        for (int64_t k0 = 0; k0 < 2 * KP; k0 += KC) {
            #pragma omp for schedule(dynamic, 1)
            for (int64_t task = 0; task < ntask; task++) {
                const int64_t pn = task % npan, m0 = (task / npan) * MC, m1 = m0 + MC < M ? m0 + MC : M;
                const int64_t n0 = pn * NR;
                const int nr = N - n0 < NR ? (int)(N - n0) : NR;
                const int64_t kc = 2 * KP - k0 < KC ? 2 * KP - k0 : KC; // even
                const int64_t kreal = K - k0 < kc ? K - k0 : kc;
                pack_b_panel(tb, K, B, Bh, ldb, pack, pctx, n0, nr, k0, kc, kreal, pk);
                if (amx) {
                    const int64_t kp = kc / 2, kp16 = (kp + 15) & ~(int64_t)15; // the tiles read whole 16s of pairs
                    memset(pk + kp * NR, 0, sizeof(uint32_t) * (size_t)((kp16 - kp) * NR));
                    for (int64_t i0 = m0; i0 < m1; i0 += 32)
                        gn_bf16_amx_block(at, nkt, i0, k0 / 2, m1 - i0 < 32 ? (int)(m1 - i0) : 32, pk, kp, C + i0 * ldc + n0, ldc, nr,
                                          alpha, beta, k0 == 0);
                    continue;
                }
                for (int64_t i0 = m0; i0 < m1; i0 += MR) {
                    int mr = m1 - i0 < MR ? (int)(m1 - i0) : MR;
                    gn_bf16_kernel(ap + i0 * sm + (k0 / 2) * sk, sm, sk, mr, pk, kc / 2, C + i0 * ldc + n0, ldc, nr, alpha,
                                   beta, k0 == 0);
                }
            }
        }
    }
}

void gn_gemm_bf16(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                  const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    gemm(ta, tb, M, N, K, alpha, A, lda, B, NULL, ldb, NULL, NULL, beta, C, ldc);
}

void gn_gemm_bf16_b16(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                      const uint16_t *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    gemm(ta, tb, M, N, K, alpha, A, lda, NULL, B, ldb, NULL, NULL, beta, C, ldc);
}

void gn_gemm_bf16_packed(int ta, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                         gn_bf16_packer pack, const void *ctx, float beta, float *C, int64_t ldc) {
    gemm(ta, 0, M, N, K, alpha, A, lda, NULL, NULL, 0, pack, ctx, beta, C, ldc);
}

// ----------------------------------------------------------------------------
// Products against one op(B) packed once (attention: a KV group's keys and values serve every
// head of the group and every row block). Panel pn of 32 columns at bp + pn * kpb * 32, kpb =
// op(B)'s k pairs rounded up to 16, zeros past K and past N (the tiles read whole 16s of pairs).

static int64_t panel_kp(int64_t K) { return ((K + 1) / 2 + 15) / 16 * 16; }

int64_t gn_bf16_panels_words(int64_t N, int64_t K) { return (N + NR - 1) / NR * panel_kp(K) * NR; }

__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
void gn_bf16_pack_panels(int tb, int64_t N, int64_t K, const float *B, int64_t ldb, uint32_t *bp) {
    const int64_t KP = (K + 1) / 2, KPB = panel_kp(K);
    for (int64_t pn = 0; pn < (N + NR - 1) / NR; pn++) {
        const int nr = N - pn * NR < NR ? (int)(N - pn * NR) : NR;
        uint32_t *pk = bp + pn * KPB * NR;
        pack_b_panel(tb, K, B, NULL, ldb, NULL, NULL, pn * NR, nr, 0, 2 * KP, K, pk);
        memset(pk + KP * NR, 0, sizeof(uint32_t) * (size_t)((KPB - KP) * NR));
    }
}

// C (M, N) = alpha op(A) (M, K) times rows [k0, k0 + K) and columns [0, N) of the panels bp of an
// op(B) with bK rows + beta C; one thread (no OpenMP inside: it runs in its caller's tasks).
// k0 a multiple of 32; k0 + K <= bK. A's pairs past K are zeros, so B's rows past k0 + K never count
// (finite values there, as attention's are).
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
void gn_gemm_bf16_panels(int ta, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                         const uint32_t *bp, int64_t bK, int64_t k0, float beta, float *C, int64_t ldc) {
    GN_ASSERT(k0 % 32 == 0 && k0 + K <= bK);
    if (M <= 0 || N <= 0) return;
    if (K <= 0) { scale_c(M, N, beta, C, ldc); return; }
    const int64_t KP = (K + 1) / 2, KPB = panel_kp(bK), nkt = (KP + 15) / 16;
    const int amx = M >= 16 && gn_amx_mode();
    uint32_t *ap = gn_scratch(GN_SCRATCH_GEMM_A, sizeof(uint32_t) * (size_t)(M * KP));
    int64_t sm, sk;
    a_pairs(ta, M, K, A, lda, ap, &sm, &sk, 0);
    uint32_t *at = NULL;
    if (amx) {
        at = gn_scratch(GN_SCRATCH_AMX_A, sizeof(uint32_t) * (size_t)((M + 15) / 16 * nkt * 256));
        if (!ta) gn_bf16_amx_pack_a(ap, KP, M, KP, at);
        else amx_pack_a_t(ap, M, KP, at);
    }
    const int mb = amx ? 32 : MR;
    for (int64_t i0 = 0; i0 < M; i0 += mb) {
        const int mr = M - i0 < mb ? (int)(M - i0) : mb;
        for (int64_t pn = 0; pn < (N + NR - 1) / NR; pn++) {
            const int nr = N - pn * NR < NR ? (int)(N - pn * NR) : NR;
            const uint32_t *pk = bp + pn * KPB * NR + (k0 / 2) * NR;
            if (amx) gn_bf16_amx_block(at, nkt, i0, 0, mr, pk, KP, C + i0 * ldc + pn * NR, ldc, nr, alpha, beta, 1);
            else gn_bf16_kernel(ap + i0 * sm, sm, sk, mr, pk, KP, C + i0 * ldc + pn * NR, ldc, nr, alpha, beta, 1);
        }
    }
}

void gn_gemm_bf16_ref(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                      const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            double s = 0.0;
            for (int64_t k = 0; k < K; k++) {
                float a = ta ? A[k * lda + i] : A[i * lda + k], b = tb ? B[j * ldb + k] : B[k * ldb + j];
                s += (double)gn_bf16_to_f32(gn_f32_to_bf16(a)) * gn_bf16_to_f32(gn_f32_to_bf16(b));
            }
            float v = alpha * (float)s;
            C[i * ldc + j] = beta == 0.0f ? v : v + beta * C[i * ldc + j];
        }
}
