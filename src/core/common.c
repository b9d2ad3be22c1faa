/*
 * common.c — error slot, assertions, checked allocation, logging, half floats,
 * files (read whole, mmap, atomic write) and the clock.
 */
#include "common.h"

#include <pthread.h> // pthread_key_t: per-thread scratch freed at thread exit

#include <errno.h>     // errno
#include <fcntl.h>     // open
#include <stdarg.h>    // va_list
#include <stdio.h>     // vsnprintf
#include <stdlib.h>    // malloc, exit
#include <sys/mman.h>  // mmap
#include <sys/stat.h>  // fstat
#include <time.h>      // clock_gettime
#include <unistd.h>    // close, fsync
#include <zlib.h>      // gzopen, gzread: .gz text files

// ----------------------------------------------------------------------------
// errors

static _Thread_local char errbuf[1024];

const char *gn_last_error(void) { return errbuf; }

gn_status gn_err(gn_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errbuf, sizeof errbuf, fmt, ap);
    va_end(ap);
    return st;
}

gn_status gn_err_prefix(gn_status st, const char *prefix) {
    char tmp[sizeof errbuf];
    snprintf(tmp, sizeof tmp, "%.200s: %.800s", prefix, errbuf);
    memcpy(errbuf, tmp, sizeof errbuf);
    return st;
}

void gn_abort(const char *file, int line, const char *expr) {
    fprintf(stderr, "guanaco: internal error at %s:%d: assertion failed: %s\n", file, line, expr);
    fflush(stderr);
    abort();
}

// ----------------------------------------------------------------------------
// allocation

static void oom(size_t n) {
    fprintf(stderr, "guanaco: out of memory allocating %zu bytes\n", n);
    exit(1);
}
// Large buffers (weights converted at load, activations, KV caches, logits) are
// streamed through again and again: ask for transparent huge pages (this system's
// THP mode is "madvise"), which saves the TLB misses of 4 KiB pages. Only the
// 2 MiB-aligned stretches inside get them; nothing is touched or committed here.
static void advise_huge(void *p, size_t n) {
#ifdef MADV_HUGEPAGE
    if (n < ((size_t)4 << 20)) return;
    uintptr_t a = ((uintptr_t)p + 4095) & ~(uintptr_t)4095, end = ((uintptr_t)p + n) & ~(uintptr_t)4095;
    if (end > a) (void)madvise((void *)a, end - a, MADV_HUGEPAGE); // advice: failure changes nothing
#else
    (void)p;
    (void)n;
#endif
}
void *gn_malloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) oom(n);
    advise_huge(p, n);
    return p;
}
int gn_env_switch(const char *name, int *cache) {
    if (*cache < 0) {
        const char *e = getenv(name);
        *cache = e && *e && strcmp(e, "0") != 0;
    }
    return *cache;
}

void *gn_malloc_aligned(size_t n) {
    void *p = NULL;
    if (posix_memalign(&p, 64, n ? n : 1)) oom(n);
    advise_huge(p, n);
    return p;
}
typedef struct { void *p[GN_SCRATCH_SLOTS]; size_t cap[GN_SCRATCH_SLOTS]; } scratch_set;
static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;
static void scratch_free(void *v) {
    scratch_set *s = v;
    for (int i = 0; i < GN_SCRATCH_SLOTS; i++) free(s->p[i]);
    free(s);
}
static void scratch_init(void) { GN_ASSERT(pthread_key_create(&scratch_key, scratch_free) == 0); }
void *gn_scratch(int slot, size_t n) {
    GN_ASSERT(slot >= 0 && slot < GN_SCRATCH_SLOTS);
    pthread_once(&scratch_once, scratch_init);
    scratch_set *s = pthread_getspecific(scratch_key);
    if (!s) {
        s = gn_calloc(1, sizeof *s);
        GN_ASSERT(pthread_setspecific(scratch_key, s) == 0);
    }
    if (n > s->cap[slot] || !s->p[slot]) {
        free(s->p[slot]);
        s->p[slot] = gn_malloc_aligned(n);
        s->cap[slot] = n;
    }
    return s->p[slot];
}
void *gn_calloc(size_t n, size_t size) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) oom(n * size);
    advise_huge(p, n * size);
    return p;
}
void *gn_realloc(void *p, size_t n) { void *q = realloc(p, n ? n : 1); if (!q) oom(n); return q; }
char *gn_strdup(const char *s) { return gn_strndup(s, strlen(s)); }
char *gn_strndup(const char *s, size_t n) {
    char *p = gn_malloc(n + 1);
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

// ----------------------------------------------------------------------------
// logging

static gn_log_fn log_fn;
static void *log_user;
static int verbosity = GN_LOG_WARN;

void gn_set_log(gn_log_fn fn, void *user) { log_fn = fn; log_user = user; }
void gn_set_verbosity(int level) { verbosity = level; }

void gn_log(int level, const char *fmt, ...) {
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (log_fn) { log_fn(level, msg, log_user); return; }
    if (level <= verbosity) fprintf(stderr, "%s\n", msg);
}

// ----------------------------------------------------------------------------
// half precision (IEEE binary16)

float gn_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, u;
    if (exp == 0) {
        if (man == 0) u = sign;
        else { // subnormal: normalise
            int e = -1;
            do { e++; man <<= 1; } while (!(man & 0x400u));
            u = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ffu) << 13);
        }
    } else if (exp == 31) {
        u = sign | 0x7f800000u | (man << 13);
    } else {
        u = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t gn_f32_to_f16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);        // NaN
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);        // overflow -> inf
    if (a < 0x38800000u) {                                          // subnormal or zero
        if (a < 0x33000000u) return (uint16_t)sign;                 // < half of min subnormal
        uint32_t man = (a & 0x7fffffu) | 0x800000u;
        int shift = 126 - (int)(a >> 23) ; // 113 - e + 13
        shift = (int)(126 - (a >> 23));
        uint32_t res = man >> (shift); // shift in [14, 24]
        uint32_t rem = man & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (res & 1))) res++;
        return (uint16_t)(sign | res);
    }
    uint32_t res = ((a >> 13) - (112u << 10));
    uint32_t rem = a & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (res & 1))) res++;
    return (uint16_t)(sign | res);
}

// ----------------------------------------------------------------------------
// time and files

double gn_time_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

size_t gn_stem_len(const char *name, const char *ext) {
    size_t n = strlen(name), m = strlen(ext);
    if (n > 3 && !strcmp(name + n - 3, ".gz")) n -= 3;
    if (n <= m + 1 || name[n - m - 1] != '.' || memcmp(name + n - m, ext, m)) return 0;
    return n - m - 1;
}

char *gn_jsonl_stem(const char *path) {
    const char *s = strrchr(path, '/');
    s = s ? s + 1 : path;
    size_t n = gn_stem_len(s, "jsonl");
    if (!n) n = gn_stem_len(s, "json");
    return gn_strndup(s, n ? n : strlen(s));
}

static int is_gz_path(const char *path) {
    size_t n = strlen(path);
    return n > 3 && !strcmp(path + n - 3, ".gz");
}

// gn_read_file for "*.gz": inflates through zlib, under the same allocation cap
// (a small file can inflate to a large one).
static gn_status read_gz(const char *path, char **out, size_t *len) {
    gzFile f = gzopen(path, "rb");
    if (!f) return gn_err(GN_ERR_IO, "%s: cannot open: %s", path, strerror(errno ? errno : ENOMEM));
    size_t cap = 1 << 16, n = 0;
    char *buf = gn_malloc(cap);
    for (;;) {
        if (cap - n < 2) buf = gn_realloc(buf, cap *= 2);
        size_t want = cap - n - 1;
        if (want > (1u << 30)) want = 1u << 30;
        int got = gzread(f, buf + n, (unsigned)want);
        if (got < 0) {
            int code;
            const char *msg = gzerror(f, &code);
            gn_status st = gn_err(GN_ERR_FORMAT, "%s: corrupt gzip data after %zu bytes: %s (expected a gzip file)", path, n,
                                  code == Z_ERRNO ? strerror(errno) : msg);
            free(buf);
            gzclose(f);
            return st;
        }
        if (got == 0) break;
        if (gzdirect(f)) { // zlib passes non-gzip bytes through; a .gz name promises gzip
            unsigned char b0 = (unsigned char)buf[0], b1 = got > 1 ? (unsigned char)buf[1] : 0;
            free(buf);
            gzclose(f);
            return gn_err(GN_ERR_FORMAT, "%s: offset 0: bytes %02x %02x, expected the gzip magic 1f 8b", path, b0, b1);
        }
        n += (size_t)got;
        if (n > gn_max_alloc_bytes()) {
            free(buf);
            gzclose(f);
            return gn_check_alloc(path, "inflating the whole file", n);
        }
    }
    int code;
    gzerror(f, &code);
    if (code == Z_BUF_ERROR) { // the stream stopped before its end marker
        free(buf);
        gzclose(f);
        return gn_err(GN_ERR_FORMAT, "%s: gzip data truncated after %zu inflated bytes (expected the whole stream)", path, n);
    }
    gzclose(f);
    buf[n] = 0;
    *out = buf;
    if (len) *len = n;
    return GN_OK;
}

gn_status gn_read_file(const char *path, char **out, size_t *len) {
    *out = NULL;
    if (len) *len = 0;
    if (is_gz_path(path)) return read_gz(path, out, len);
    FILE *f = fopen(path, "rb");
    if (!f) return gn_err(GN_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(f), &sb) == 0 && S_ISREG(sb.st_mode)) {
        gn_status st = gn_check_alloc(path, "reading the whole file", (uint64_t)sb.st_size);
        if (st != GN_OK) { fclose(f); return st; }
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = gn_malloc(cap);
    for (;;) {
        if (cap - n < 2) buf = gn_realloc(buf, cap *= 2);
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0) break;
        if (n > gn_max_alloc_bytes()) { // a pipe or a file that grows while read
            free(buf);
            fclose(f);
            return gn_check_alloc(path, "reading the whole file", n);
        }
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) { free(buf); return gn_err(GN_ERR_IO, "%s: read error", path); }
    buf[n] = 0;
    *out = buf;
    if (len) *len = n;
    return GN_OK;
}

gn_status gn_mmap_open(gn_mmap *m, const char *path) {
    memset(m, 0, sizeof *m);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return gn_err(GN_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) { close(fd); return gn_err(GN_ERR_IO, "%s: cannot stat: %s", path, strerror(errno)); }
    if (S_ISDIR(st.st_mode)) { close(fd); return gn_err(GN_ERR_IO, "%s: is a directory, expected a file", path); }
    m->size = (size_t)st.st_size;
    m->dev = (uint64_t)st.st_dev, m->ino = (uint64_t)st.st_ino;
    if (m->size > 0) {
        void *p = mmap(NULL, m->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) { close(fd); return gn_err(GN_ERR_IO, "%s: mmap failed: %s", path, strerror(errno)); }
        m->data = p;
    }
    close(fd);
    m->path = gn_strdup(path);
    return GN_OK;
}

void gn_mmap_close(gn_mmap *m) {
    if (m->data) munmap((void *)m->data, m->size);
    free(m->path);
    memset(m, 0, sizeof *m);
}

gn_status gn_write_file_atomic(const char *path, const void *data, size_t n) {
    size_t pl = strlen(path);
    char *tmp = gn_malloc(pl + 32);
    snprintf(tmp, pl + 32, "%s.tmp.%ld", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        gn_status st = gn_err(GN_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
        free(tmp);
        return st;
    }
    const uint8_t *p = data;
    size_t left = n;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0) { if (errno == EINTR) continue; goto fail; }
        p += w;
        left -= (size_t)w;
    }
    if (fsync(fd) != 0) goto fail;
    if (close(fd) != 0) { fd = -1; goto fail; }
    fd = -1;
    if (rename(tmp, path) != 0) goto fail;
    free(tmp);
    return GN_OK;
fail:;
    gn_status st = gn_err(GN_ERR_IO, "%s: write failed: %s", path, strerror(errno));
    if (fd >= 0) close(fd);
    unlink(tmp);
    free(tmp);
    return st;
}

gn_status gn_mkdir_p(const char *path) {
    char buf[4096];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof buf) return gn_err(GN_ERR_ARG, "%s: bad folder name", path);
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != 0) continue;
        char c = buf[i];
        buf[i] = 0;
        if (mkdir(buf, 0755) != 0 && errno != EEXIST) return gn_err(GN_ERR_IO, "%s: cannot create folder: %s", buf, strerror(errno));
        buf[i] = c;
    }
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode)) return gn_err(GN_ERR_IO, "%s: exists and is not a folder", path);
    return GN_OK;
}

// ----------------------------------------------------------------------------
// per-file allocation limit

uint64_t gn_max_alloc_bytes(void) {
    const char *e = getenv("GN_MAX_ALLOC_MB");
    uint64_t mb = GN_MAX_ALLOC_MB_DEFAULT;
    if (e && *e) {
        char *end = NULL;
        errno = 0;
        unsigned long long v = strtoull(e, &end, 10);
        if (errno == 0 && end && *end == 0 && v > 0 && v <= (UINT64_MAX >> 20)) mb = v;
    }
    return mb << 20;
}

gn_status gn_check_alloc(const char *path, const char *what, uint64_t bytes) {
    uint64_t lim = gn_max_alloc_bytes();
    if (bytes <= lim) return GN_OK;
    return gn_err(GN_ERR_OOM, "%s: %s needs %llu MiB, above the per-file limit of %llu MiB (set GN_MAX_ALLOC_MB "
                  "to a larger number of MiB to allow it)", path, what,
                  (unsigned long long)((bytes + (1u << 20) - 1) >> 20), (unsigned long long)(lim >> 20));
}
