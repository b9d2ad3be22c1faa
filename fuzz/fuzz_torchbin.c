/*
 * fuzz_torchbin.c — the PyTorch checkpoint reader (src/formats/torchbin.c): the
 * zip central directory (zip64 records, extra fields, local headers) and the
 * restricted pickle VM (opcodes, memo, MARK stack, the global allow-list,
 * persistent storage ids, _rebuild_tensor_v2 views, strided copies).
 *
 * A zip wrapper is costly for the fuzzer to discover, so the first input byte
 * picks the mode:
 *   'Z' (or anything but 'P'): the rest is the whole file (zip mutations);
 *   'P': the rest is data.pkl; the harness wraps it in a stored zip
 *        "archive/data.pkl" + "archive/data/0" (64 bytes) + "archive/byteorder",
 *        so pickle mutations reach the VM and its storage lookups.
 */
#include "fuzz_common.h"
#include "formats/tensors.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc; (void)argv;
    fz_setup();
    return 0;
}

// ---- a minimal stored-zip writer (local headers, central directory, end record)

typedef struct { uint8_t *p; size_t n, cap; } zbuf;

static void zput(zbuf *b, const void *s, size_t n) {
    if (b->n + n > b->cap) {
        while (b->n + n > b->cap) b->cap = b->cap ? 2 * b->cap : 1024;
        b->p = gn_realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
}
static void z16(zbuf *b, uint16_t v) { uint8_t t[2] = {(uint8_t)v, (uint8_t)(v >> 8)}; zput(b, t, 2); }
static void z32(zbuf *b, uint32_t v) { z16(b, (uint16_t)v); z16(b, (uint16_t)(v >> 16)); }

typedef struct { const char *name; const uint8_t *data; uint32_t size, off; } zent;

// No CRC (the reader does not check it: torch's own reader does, ours needs not).
static void zip_build(zbuf *b, zent *e, int n) {
    for (int i = 0; i < n; i++) {
        e[i].off = (uint32_t)b->n;
        z32(b, 0x04034b50u); z16(b, 20); z16(b, 0); z16(b, 0); z16(b, 0); z16(b, 0);
        z32(b, 0); z32(b, e[i].size); z32(b, e[i].size);
        z16(b, (uint16_t)strlen(e[i].name)); z16(b, 0);
        zput(b, e[i].name, strlen(e[i].name));
        zput(b, e[i].data, e[i].size);
    }
    uint32_t cd = (uint32_t)b->n;
    for (int i = 0; i < n; i++) {
        z32(b, 0x02014b50u); z16(b, 20); z16(b, 20); z16(b, 0); z16(b, 0); z16(b, 0); z16(b, 0);
        z32(b, 0); z32(b, e[i].size); z32(b, e[i].size);
        z16(b, (uint16_t)strlen(e[i].name)); z16(b, 0); z16(b, 0); z16(b, 0); z16(b, 0); z32(b, 0);
        z32(b, e[i].off);
        zput(b, e[i].name, strlen(e[i].name));
    }
    uint32_t cds = (uint32_t)b->n - cd;
    z32(b, 0x06054b50u); z16(b, 0); z16(b, 0); z16(b, (uint16_t)n); z16(b, (uint16_t)n);
    z32(b, cds); z32(b, cd); z16(b, 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    char path[512];
    if (data[0] == 'P') {
        static const uint8_t storage[64] = {0};
        zent e[3] = {{"archive/data.pkl", data + 1, (uint32_t)(size - 1), 0},
                     {"archive/data/0", storage, sizeof storage, 0},
                     {"archive/byteorder", (const uint8_t *)"little", 6, 0}};
        zbuf b = {0};
        zip_build(&b, e, 3);
        fz_write("pytorch_model.bin", b.p, b.n, path, sizeof path);
        free(b.p);
    } else {
        fz_write("pytorch_model.bin", data + 1, size - 1, path, sizeof path);
    }
    gn_tensor_table tt;
    gn_tensor_table_init(&tt);
    if (gn_torchbin_load(&tt, path) == GN_OK) {
        fz_convert_small(&tt, 0);
    }
    gn_tensor_table_free(&tt);
    return 0;
}
