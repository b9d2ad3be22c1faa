/*
 * tensor_file.c — one weights file of any format behind a public handle
 * (gn_tensor_file_*, guanaco.h): a .safetensors, a torch.save zip (.bin/.pt/.pth)
 * or a .gguf. The format is chosen by the first bytes ("GGUF", "PK\3\4"), then
 * by the extension, else safetensors. `guanaco dump` lists and converts tensors
 * through it.
 */
#include <stdio.h>  // fopen
#include <stdlib.h> // free
#include <string.h> // strcmp, memcmp

#include "core/common.h"     // gn_malloc
#include "formats/gguf.h"    // gn_gguf_open
#include "formats/tensors.h" // gn_tensor_table, gn_safetensors_load, gn_torchbin_load

struct gn_tensor_file {
    gn_gguf *g;                 // a .gguf: its table
    gn_tensor_table own;        // safetensors / torch zip
    const gn_tensor_table *tt;  // the one in use
};

enum { FMT_SAFETENSORS, FMT_TORCH, FMT_GGUF };

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

// Picks the format from the first 4 bytes ("GGUF", "PK\3\4"); a file with
// neither goes by its extension (.gguf, .bin/.pt/.pth), so a damaged header
// still gets the right loader's message; anything else is read as safetensors.
static int sniff(const char *path) {
    unsigned char m[4] = {0};
    FILE *f = fopen(path, "rb");
    if (f) {
        size_t n = fread(m, 1, 4, f);
        fclose(f);
        if (n == 4 && memcmp(m, "GGUF", 4) == 0) return FMT_GGUF;
        if (n == 4 && memcmp(m, "PK\x03\x04", 4) == 0) return FMT_TORCH;
    }
    if (ends_with(path, ".gguf")) return FMT_GGUF;
    if (ends_with(path, ".bin") || ends_with(path, ".pt") || ends_with(path, ".pth")) return FMT_TORCH;
    return FMT_SAFETENSORS;
}

gn_status gn_tensor_file_open(gn_tensor_file **out, const char *path) {
    *out = NULL;
    gn_tensor_file *f = gn_calloc(1, sizeof *f);
    gn_tensor_table_init(&f->own);
    f->tt = &f->own;
    gn_status st;
    switch (sniff(path)) {
    case FMT_GGUF: st = gn_gguf_open(&f->g, path); if (f->g) f->tt = &f->g->tensors; break;
    case FMT_TORCH: st = gn_torchbin_load(&f->own, path); break;
    default: st = gn_safetensors_load(&f->own, path); break;
    }
    if (st != GN_OK) { gn_tensor_file_free(f); return st; }
    *out = f;
    return GN_OK;
}

void gn_tensor_file_free(gn_tensor_file *f) {
    if (!f) return;
    gn_gguf_free(f->g);
    gn_tensor_table_free(&f->own);
    free(f);
}

int gn_tensor_file_count(const gn_tensor_file *f) { return f->tt->n; }

static void info_of(const gn_tensor *t, gn_tensor_info *out) {
    *out = (gn_tensor_info){.name = t->name, .dtype = t->dtype, .ndim = t->ndim, .shape = t->shape,
                            .nelem = t->nelem, .nbytes = t->nbytes};
}

void gn_tensor_file_info(const gn_tensor_file *f, int i, gn_tensor_info *out) { info_of(&f->tt->t[i], out); }

int gn_tensor_file_find(const gn_tensor_file *f, const char *name) {
    const gn_tensor *t = gn_tensor_table_find(f->tt, name);
    return t ? (int)(t - f->tt->t) : -1;
}

gn_status gn_tensor_file_to_f32(const gn_tensor_file *f, int i, float *out) { return gn_tensor_to_f32(&f->tt->t[i], out); }
