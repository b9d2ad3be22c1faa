/*
 * fuzz_quant_state.c — the bitsandbytes 4-bit quant_state JSON
 * (src/quant/nf4.c gn_quant4_load: quant_type, blocksize, dtype, shape,
 * nested_* fields) against a table of valid companion tensors, then a
 * dequantization of what it accepted.
 * First input byte: bit 0 set -> double-quantized companions (U8 absmax,
 * nested_absmax, nested_quant_map); else plain F32 absmax. The rest is the
 * quant_state JSON bytes.
 * Companions are sized for the seeds' shape [4, 32], blocksize 64 (2 blocks),
 * nested_blocksize 256 (1 nested block): other shapes are refused by the size
 * checks, which is part of what is tested.
 */
#include "fuzz_common.h"
#include "formats/tensors.h"
#include "quant/nf4.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc; (void)argv;
    fz_setup();
    return 0;
}

static gn_tensor mk(const char *name, gn_dtype dt, int64_t n, const void *data, size_t nbytes) {
    gn_tensor t;
    memset(&t, 0, sizeof t);
    t.name = (char *)name;
    t.dtype = dt;
    t.ndim = 1;
    t.shape[0] = n;
    t.nelem = n;
    t.data = data;
    t.nbytes = nbytes;
    t.file = "fuzz.safetensors";
    return t;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    int nested = data[0] & 1;
    uint8_t *js = gn_malloc(size); // exact-size copy: the reader must stay inside nbytes
    memcpy(js, data + 1, size - 1);
    static uint8_t packed[64];
    static float absmax[2] = {1.0f, 0.5f}, nabs[1] = {0.25f}, qmap[16], nmap[256];
    static uint8_t qabs[2] = {17, 200};
    for (int i = 0; i < 64; i++) packed[i] = (uint8_t)(i * 37);
    for (int i = 0; i < 16; i++) qmap[i] = gn_nf4_code[i];
    for (int i = 0; i < 256; i++) nmap[i] = (float)(i - 128) / 128.0f;
    gn_tensor t[6];
    int n = 0;
    t[n++] = mk("l.weight", GN_DTYPE_U8, 64, packed, 64);
    t[n++] = mk(nested ? "l.weight.quant_state.bitsandbytes__nf4" : "l.weight.quant_state.bitsandbytes__fp4",
                GN_DTYPE_U8, (int64_t)(size - 1), js, size - 1);
    t[n++] = mk("l.weight.quant_map", GN_DTYPE_F32, 16, qmap, sizeof qmap);
    if (nested) {
        t[n++] = mk("l.weight.absmax", GN_DTYPE_U8, 2, qabs, 2);
        t[n++] = mk("l.weight.nested_absmax", GN_DTYPE_F32, 1, nabs, 4);
        t[n++] = mk("l.weight.nested_quant_map", GN_DTYPE_F32, 256, nmap, sizeof nmap);
    } else {
        t[n++] = mk("l.weight.absmax", GN_DTYPE_F32, 2, absmax, sizeof absmax);
    }
    gn_tensor_table tt;
    memset(&tt, 0, sizeof tt);
    tt.t = t;
    tt.n = tt.cap = n;
    gn_quant4_state q;
    if (gn_quant4_load(&q, &tt, "l") == GN_OK) {
        if (q.nelem <= 4096) {
            float *out = gn_malloc(sizeof(float) * (size_t)q.nelem);
            gn_dequantize_4bit(&q, out);
            gn_dequantize_4bit_ref(&q, out);
            free(out);
        }
        gn_quant4_free(&q);
    }
    free(js);
    return 0;
}
