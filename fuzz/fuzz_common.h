/*
 * fuzz_common.h — shared by the libFuzzer harnesses in fuzz/fuzz_*.c.
 *
 * Build: `make fuzz` (clang, -fsanitize=fuzzer,address,undefined) -> build-fuzz/fuzz_<target>.
 * Run:   build-fuzz/fuzz_<target> CORPUS_DIR [SEED_DIR...] -rss_limit_mb=2048 -timeout=10
 *        fuzz/run_all.sh SECONDS runs every target in turn (docs/FUZZING.md).
 *
 * Most loaders take a path (they mmap or read the file), so a harness writes the
 * input into a private temporary folder (on /dev/shm when it exists) and calls
 * the loader on that path. The folder is removed at exit.
 *
 * The per-file allocation limit (GN_MAX_ALLOC_MB, see README "Hostile files")
 * is set to 64 MiB here unless the environment sets it, so a declared size that
 * slips past a check shows up as a refusal or an rss-limit report rather than
 * an out-of-memory exit.
 */
#ifndef GN_FUZZ_COMMON_H
#define GN_FUZZ_COMMON_H

#include <ftw.h>      // nftw (cleanup)
#include <sys/stat.h> // mkdir
#include <fcntl.h>    // open
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>   // mkdtemp, setenv, atexit
#include <string.h>
#include <unistd.h>   // write, close, unlink, rmdir

#include "guanaco.h"
#include "core/common.h"
#include "formats/tensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static char fz_dir[256];

static void fz_quiet_log(int level, const char *msg, void *user) {
    (void)level; (void)msg; (void)user;
}

static int fz_rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb; (void)flag; (void)ftw;
    remove(p);
    return 0;
}

static void fz_cleanup(void) {
    if (fz_dir[0]) nftw(fz_dir, fz_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

// Creates the private folder and quiets the library log (GN_FUZZ_LOG=1 keeps it).
static void fz_setup(void) {
    if (!getenv("GN_MAX_ALLOC_MB")) setenv("GN_MAX_ALLOC_MB", "64", 1);
    if (!getenv("GN_FUZZ_LOG")) gn_set_log(fz_quiet_log, NULL);
    const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(fz_dir, sizeof fz_dir, "%s/gn-fuzz-XXXXXX", base);
    if (!mkdtemp(fz_dir)) { perror("mkdtemp"); abort(); }
    atexit(fz_cleanup);
}

// Path of `name` inside the private folder (static buffer per call site is fine:
// callers copy what they keep).
static __attribute__((unused)) const char *fz_path(const char *name, char *buf, size_t cap) {
    snprintf(buf, cap, "%s/%s", fz_dir, name);
    return buf;
}

// Writes data to fz_dir/name (replacing it); returns the path in buf.
static __attribute__((unused)) const char *fz_write(const char *name, const void *data, size_t size, char *buf, size_t cap) {
    fz_path(name, buf, cap);
    int fd = open(buf, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) { perror(buf); abort(); }
    const uint8_t *p = data;
    while (size > 0) {
        ssize_t w = write(fd, p, size);
        if (w <= 0) { perror(buf); abort(); }
        p += w;
        size -= (size_t)w;
    }
    close(fd);
    return buf;
}

static __attribute__((unused)) void fz_remove(const char *name) {
    char p[512];
    unlink(fz_path(name, p, sizeof p));
}

// With GN_FUZZ_LOG=1, prints why an input was refused (for checking seeds).
static __attribute__((unused)) void fz_why(gn_status st) {
    if (st != GN_OK && getenv("GN_FUZZ_LOG")) fprintf(stderr, "refused (%d): %s\n", (int)st, gn_last_error());
}

// Encodes a fixed text plus up to 64 bytes of `extra`, decodes the ids back (with
// and without special tokens) and asks every id's raw bytes: the paths a loaded
// tokenizer takes with hostile vocabularies, merges and scores.
static __attribute__((unused)) void fz_exercise_tokenizer(const gn_tokenizer *tok, const uint8_t *extra, size_t n_extra) {
    static const char fixed[] = "Hello world!  <s> </s> 123 \xe2\x96\x81x \xf0\x9f\x98\x80 caf\xc3\xa9\n\t";
    char text[sizeof fixed + 64];
    size_t n = sizeof fixed - 1;
    memcpy(text, fixed, n);
    if (n_extra > 64) n_extra = 64;
    if (n_extra) memcpy(text + n, extra, n_extra);
    n += n_extra;
    int32_t *ids = NULL;
    int nid = 0;
    if (gn_tokenizer_encode(tok, text, n, GN_ENC_BOS | GN_ENC_EOS | GN_ENC_SPECIAL, &ids, &nid) == GN_OK) {
        int V = gn_tokenizer_vocab_size(tok);
        for (int i = 0; i < nid; i++)
            if (ids[i] < 0 || ids[i] >= V) abort(); // the encoder must only emit ids of its vocabulary
        for (int skip = 0; skip < 2; skip++) {
            char *s = NULL;
            size_t sl = 0;
            if (gn_tokenizer_decode(tok, ids, nid, skip, &s, &sl) == GN_OK) free(s);
        }
        free(ids);
    }
    int V = gn_tokenizer_vocab_size(tok);
    char buf[64];
    for (int32_t id = 0; id < V && id < 4096; id++) (void)gn_tokenizer_token_bytes(tok, id, buf, (int)sizeof buf);
}

// Every tensor of a loaded table with at most 2^16 elements through gn_tensor_to_f32, which
// reads the bytes its header points at; with check_names, each name must be findable.
static __attribute__((unused)) void fz_convert_small(const gn_tensor_table *tt, int check_names) {
    for (int i = 0; i < tt->n; i++) {
        const gn_tensor *t = &tt->t[i];
        if (t->nelem > (1 << 16)) continue;
        float *f = gn_malloc(sizeof(float) * (size_t)(t->nelem ? t->nelem : 1));
        (void)gn_tensor_to_f32(t, f);
        free(f);
        if (check_names && !gn_tensor_table_find(tt, t->name)) abort();
    }
}

#endif
