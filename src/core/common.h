/*
 * common.h — what every file in libguanaco needs: status codes and the error
 * message slot, always-on assertions, checked allocation, bf16/f16 helpers.
 *
 * Errors from outside input (files, JSON, flags) are *returned*: a function sets
 * the message with gn_err(status, fmt, ...) and returns that status; callers pass
 * it up unchanged. The message names the file, the offset or field, and what was
 * expected. Our own bugs use GN_ASSERT, which is on in every build.
 */
#ifndef GN_COMMON_H
#define GN_COMMON_H

#include <stddef.h>  // size_t
#include <stdint.h>  // int64_t, uint16_t
#include <string.h>  // memcpy

#include "guanaco.h" // gn_status, gn_last_error

// ---------------------------------------------------------------------------
// errors

// Sets the thread's error message (printf-style) and returns `st`, so a parser can
// write `return gn_err(GN_ERR_FORMAT, "%s: offset %zu: ...", path, off);`.
gn_status gn_err(gn_status st, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

// Prepends "prefix: " to the current message (used to add the file name on the
// way up). Returns `st`.
gn_status gn_err_prefix(gn_status st, const char *prefix);

void gn_abort(const char *file, int line, const char *expr);
#define GN_ASSERT(x) do { if (!(x)) gn_abort(__FILE__, __LINE__, #x); } while (0)
#define GN_UNUSED(x) (void)(x)

// Allocation that never returns NULL (gn_malloc, gn_calloc, gn_realloc, gn_strdup and
// gn_strndup: guanaco.h): out of memory goes to the OOM handler.
void *gn_malloc_aligned(size_t n); // 64-byte aligned (cache line, one AVX-512 register); free() it

// A behaviour switch from the environment, read once into *cache (start it at -1): set and not "0"
int gn_env_switch(const char *name, int *cache);
// Per-thread work buffers that only grow, for kernels called many times a step: slot s
// of the calling thread, at least n bytes, 64-byte aligned, contents undefined, valid
// until this thread asks for the same slot again; freed when the thread exits. (A fresh
// allocation per call of the 50 MB the head's gradient needs page-faulted it in again
// every sequence.)
enum { GN_SCRATCH_GEMM_A, GN_SCRATCH_GEMM_B, GN_SCRATCH_NF4_X, GN_SCRATCH_NF4_W, GN_SCRATCH_PANEL, GN_SCRATCH_ROWS, GN_SCRATCH_DECODE, GN_SCRATCH_AMX_A, GN_SCRATCH_ATT, GN_SCRATCH_SLOTS };
void *gn_scratch(int slot, size_t n);

// Logging through the settable sink (default stderr). The library never prints
// to stdout. Levels: GN_LOG_ERROR .. GN_LOG_DEBUG (guanaco.h).
void gn_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

// ---------------------------------------------------------------------------
// streaming weights

// Decode reads every weight once per token, straight from memory. The kernels that
// stream them ask for the line GN_STREAM_AHEAD bytes ahead as they go (non-temporal
// hint: it is not wanted again this token); the hardware prefetcher alone left the
// cores waiting (SmolLM2 decode: +8-13% tokens/s with a 4 KiB lead; 2 KiB and 16 KiB
// gained less, 8 KiB the same; the hint made no difference). A prefetch never faults, so
// reading past the end is fine.
#define GN_STREAM_AHEAD 4096
#define gn_prefetch_stream(p) __builtin_prefetch((const char *)(p) + GN_STREAM_AHEAD, 0, 0)
// Rows of GN_STREAM_L2_COLS columns or more: the lines asked for into L2 instead (prefetcht1),
// the L1 left to the inputs and the lines in use. Zen 4, decode, medians of five runs each:
// 7B shapes (4096- and 11008-column rows) 10% less time a token, 1.1B shapes (2048, 5632) 4%;
// SmolLM2 (576, 1536) took 20% longer so and keeps the non-temporal hint. 11008-column rows
// gain the most: their inputs (22 KiB as bf16) do not fit in a 32 KiB L1 beside 4 KiB of lines
// fetched ahead. The bf16 head's rows take the same rule (7B: 2% more), and so do the integer
// decode kernels (AVX2, and AVX-512 without BF16 emulated on Zen 4: 1.1B ~10%, 7B ~25% less time).
#define GN_STREAM_L2_COLS 2048
#define gn_prefetch_stream_l2(p) __builtin_prefetch((const char *)(p) + GN_STREAM_AHEAD, 0, 2)
// the one or the other by a row's length in columns
#define gn_prefetch_row(p, cols) \
    ((cols) >= GN_STREAM_L2_COLS ? gn_prefetch_stream_l2(p) : gn_prefetch_stream(p))

// ---------------------------------------------------------------------------
// number formats

static inline float gn_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

// Round to nearest even, as torch does; NaN stays NaN (quiet).
static inline uint16_t gn_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float gn_f16_to_f32(uint16_t h);   // exact IEEE half -> float (subnormals, inf, NaN)
uint16_t gn_f32_to_f16(float f);   // round to nearest even

// ---------------------------------------------------------------------------
// small helpers

// gn_time_s, gn_read_file, gn_mkdir_p, gn_write_file_atomic: guanaco.h

// splitmix64 (Steele, Lea & Flood): advances *state by the golden-ratio step and
// returns the mixed value. Every seeded stream in the library starts here, so a
// seed gives the same shuffles, masks and ids on every machine.
static inline uint64_t gn_splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}


// Read-only memory mapping of a whole file.
typedef struct {
    const uint8_t *data;
    size_t size;
    char *path;  // owned copy, for error messages
    uint64_t dev, ino; // the file mapped (a later open of path may find another one)
} gn_mmap;
gn_status gn_mmap_open(gn_mmap *m, const char *path);
void gn_mmap_close(gn_mmap *m);

// ---------------------------------------------------------------------------
// limits for hostile input (README, "Hostile files and requests")
//
// Parsers check every declared size, count and offset against the bytes the
// file really has before they allocate. On top of that, no single allocation
// that a file's contents decide may exceed GN_MAX_ALLOC_MB mebibytes (from the
// environment; default GN_MAX_ALLOC_MB_DEFAULT). gn_check_alloc returns GN_OK,
// or GN_ERR_OOM with a message that names the file, what needed the memory,
// the limit and how to raise it.
#define GN_MAX_ALLOC_MB_DEFAULT 4096
uint64_t gn_max_alloc_bytes(void);
gn_status gn_check_alloc(const char *path, const char *what, uint64_t bytes);

#endif
