/*
 * load.c — loading a LLaMA-family model: config (HF config.json or GGUF
 * metadata), the weight table (safetensors / PyTorch .bin / GGUF), the weights
 * in their compute dtype (or 4-bit) and the tokenizer. The forward pass is in
 * forward.c, the KV cache and sessions in kvcache.c.
 *
 * Weights are bound in place in the file mapping when the file already holds
 * the compute dtype (f32, or bf16 with --dtype bf16); otherwise converted once
 * at load (f16, bf16 -> f32; GGUF block quants dequantized as ggml does). Those
 * that decode streams are then copied out of the mapping (pin_weights).
 */
#include "llama.h"

#include <cjson/cJSON.h> // config.json, *.index.json
#include <dirent.h>      // opendir: listing a model folder
#include <errno.h>       // EINTR
#include <fcntl.h>       // open
#include <math.h>        // powf, cosf, sinf, sqrtf
#include <stdio.h>       // snprintf
#include <stdlib.h>      // free, getenv
#include <sys/mman.h>    // madvise: the mapping's pages behind the copied weights
#include <sys/stat.h>    // stat
#include <unistd.h>      // sysconf, pread

#include "../tokenizer/tokenizer.h" // gn_tokenizer_from_gguf
#include "../cuda/cuda_model.h"        // --device cuda hooks (stubs in a CPU build)

// ----------------------------------------------------------------------------
// small path helpers

static int is_dir(const char *p) { struct stat st; return stat(p, &st) == 0 && S_ISDIR(st.st_mode); }
static int is_file(const char *p) { struct stat st; return stat(p, &st) == 0 && S_ISREG(st.st_mode); }

static char *join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = gn_malloc(n);
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

static int file_magic_is(const char *path, const char *magic, size_t n) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    char buf[8] = {0};
    size_t got = fread(buf, 1, n, f);
    fclose(f);
    return got == n && !memcmp(buf, magic, n);
}

// ----------------------------------------------------------------------------
// config.json

// Reads an integer field; a JSON list takes its first element (eos_token_id
// may be a list). Returns 1 if present, 0 if absent, -1 on a wrong type (error set).
static int json_int(const cJSON *o, const char *key, const char *path, int64_t *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v)) return 0;
    if (cJSON_IsArray(v)) v = cJSON_GetArrayItem(v, 0);
    if (!v) return 0;
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || fabs(v->valuedouble) > 1e15) {
        gn_err(GN_ERR_FORMAT, "%s: field '%s': expected an integer", path, key);
        return -1;
    }
    *out = (int64_t)v->valuedouble;
    return 1;
}

static int json_num(const cJSON *o, const char *key, const char *path, double *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsNumber(v)) {
        gn_err(GN_ERR_FORMAT, "%s: field '%s': expected a number", path, key);
        return -1;
    }
    *out = v->valuedouble;
    return 1;
}

static gn_status need_int(const cJSON *o, const char *key, const char *path, int64_t lo, int64_t hi, int *out) {
    int64_t v;
    int r = json_int(o, key, path, &v);
    if (r < 0) return GN_ERR_FORMAT;
    if (r == 0) return gn_err(GN_ERR_FORMAT, "%s: missing field '%s' (expected an integer)", path, key);
    if (v < lo || v > hi)
        return gn_err(GN_ERR_FORMAT, "%s: field '%s' = %lld: expected %lld..%lld", path, key, (long long)v,
                      (long long)lo, (long long)hi);
    *out = (int)v;
    return GN_OK;
}

static gn_status opt_int(const cJSON *o, const char *key, const char *path, int dflt, int *out) {
    int64_t v;
    int r = json_int(o, key, path, &v);
    if (r < 0) return GN_ERR_FORMAT;
    if (r && (v < INT32_MIN || v > INT32_MAX))
        return gn_err(GN_ERR_FORMAT, "%s: field '%s' = %lld: expected a 32-bit integer", path, key, (long long)v);
    *out = r ? (int)v : dflt;
    return GN_OK;
}

static gn_status parse_rope_scaling(const cJSON *rs, const char *path, gn_config *c) {
    if (!rs || cJSON_IsNull(rs)) return GN_OK;
    if (!cJSON_IsObject(rs)) return gn_err(GN_ERR_FORMAT, "%s: field 'rope_scaling': expected an object", path);
    const cJSON *ty = cJSON_GetObjectItemCaseSensitive(rs, "rope_type");
    if (!ty) ty = cJSON_GetObjectItemCaseSensitive(rs, "type");
    const char *t = cJSON_IsString(ty) ? ty->valuestring : "default";
    double d;
    if (json_num(rs, "rope_theta", path, &d) > 0) c->rope_theta = (float)d;
    if (!strcmp(t, "default")) return GN_OK;
    double factor = 1.0;
    if (json_num(rs, "factor", path, &factor) <= 0 || factor <= 0)
        return gn_err(GN_ERR_FORMAT, "%s: rope_scaling: missing or bad 'factor' (expected a positive number)", path);
    c->rope_factor = (float)factor;
    if (!strcmp(t, "linear")) { c->rope_scaling = GN_ROPE_LINEAR; return GN_OK; }
    if (!strcmp(t, "llama3")) {
        double lo = 1.0, hi = 4.0;
        int64_t omp = 8192;
        if (json_num(rs, "low_freq_factor", path, &lo) < 0 || json_num(rs, "high_freq_factor", path, &hi) < 0 ||
            json_int(rs, "original_max_position_embeddings", path, &omp) < 0)
            return GN_ERR_FORMAT;
        if (hi <= lo || omp <= 0 || omp > INT32_MAX)
            return gn_err(GN_ERR_FORMAT, "%s: rope_scaling: llama3 needs high_freq_factor > low_freq_factor and original_max_position_embeddings > 0", path);
        c->rope_scaling = GN_ROPE_LLAMA3;
        c->rope_low_freq_factor = (float)lo;
        c->rope_high_freq_factor = (float)hi;
        c->rope_orig_max_pos = (int)omp;
        return GN_OK;
    }
    return gn_err(GN_ERR_UNSUPPORTED, "%s: rope_scaling/rope_parameters: rope_type '%s' is not supported, expected "
                  "default, linear or llama3", path, t);
}

// Adds the ids of field key (an integer or a list of them) to c->eos_ids.
static gn_status add_eos_ids(gn_config *c, const cJSON *o, const char *key, const char *path) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key), *it;
    if (!v || cJSON_IsNull(v)) return GN_OK;
    if (!cJSON_IsArray(v) && !cJSON_IsNumber(v))
        return gn_err(GN_ERR_FORMAT, "%s: field '%s': expected an integer or a list of integers", path, key);
    int single = cJSON_IsNumber(v);
    for (it = single ? v : v->child; it; it = single ? NULL : it->next) {
        if (!cJSON_IsNumber(it) || it->valuedouble != floor(it->valuedouble))
            return gn_err(GN_ERR_FORMAT, "%s: field '%s': expected an integer or a list of integers", path, key);
        double d = it->valuedouble;
        if (d < 0 || d >= c->vocab_size) {
            gn_log(GN_LOG_WARN, "%s: field '%s': id %.0f is outside the vocabulary (0..%d); ignoring it", path, key, d,
                   c->vocab_size - 1);
            continue;
        }
        int id = (int)d, dup = 0;
        for (int k = 0; k < c->n_eos; k++) dup |= c->eos_ids[k] == id;
        if (!dup && c->n_eos < (int)(sizeof c->eos_ids / sizeof c->eos_ids[0])) c->eos_ids[c->n_eos++] = id;
    }
    return GN_OK;
}

// generation_config.json beside config.json: its eos_token_id (one or a list)
// also ends generation. Absent file: nothing to do.
static gn_status read_generation_config(gn_config *c, const char *dir) {
    char *p = join(dir, "generation_config.json");
    gn_status st = GN_OK;
    if (is_file(p)) {
        char *text;
        size_t len;
        if ((st = gn_read_file(p, &text, &len)) == GN_OK) {
            cJSON *j = cJSON_ParseWithLength(text, len);
            free(text);
            if (!cJSON_IsObject(j))
                st = gn_err(GN_ERR_FORMAT, "%s: not a JSON object, expected generation settings", p);
            else
                st = add_eos_ids(c, j, "eos_token_id", p);
            cJSON_Delete(j);
        }
    }
    free(p);
    return st;
}

static gn_status config_from_json(gn_config *c, const char *path) {
    char *text;
    size_t len;
    gn_status st = gn_read_file(path, &text, &len);
    if (st) return st;
    const char *endp = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(text, len, &endp, 0);
    if (!j || !cJSON_IsObject(j)) {
        size_t off = endp ? (size_t)(endp - text) : 0;
        cJSON_Delete(j);
        free(text);
        return gn_err(GN_ERR_FORMAT, j ? "%s: the top level is not a JSON object (expected {...} with the model's fields)"
                                       : "%s: invalid JSON near byte %zu (expected a JSON object)", path, off);
    }
    memset(c, 0, sizeof *c);
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(j, "model_type");
    if (cJSON_IsString(mt) && strcmp(mt->valuestring, "llama") && strcmp(mt->valuestring, "mistral")) {
        st = gn_err(GN_ERR_UNSUPPORTED, "%s: model_type '%s' is not supported (expected llama)", path, mt->valuestring);
        goto done;
    }
    if ((st = need_int(j, "hidden_size", path, 1, 1 << 20, &c->dim)) ||
        (st = need_int(j, "intermediate_size", path, 1, 1 << 22, &c->hidden_dim)) ||
        (st = need_int(j, "num_hidden_layers", path, 1, 4096, &c->n_layers)) ||
        (st = need_int(j, "num_attention_heads", path, 1, 4096, &c->n_heads)) ||
        (st = need_int(j, "vocab_size", path, 1, 1 << 24, &c->vocab_size)))
        goto done;
    if ((st = opt_int(j, "num_key_value_heads", path, c->n_heads, &c->n_kv_heads)) ||
        (st = opt_int(j, "max_position_embeddings", path, 2048, &c->max_seq)) ||
        (st = opt_int(j, "bos_token_id", path, -1, &c->bos_id)) ||
        (st = opt_int(j, "eos_token_id", path, -1, &c->eos_id)) ||
        (st = opt_int(j, "pad_token_id", path, -1, &c->pad_id)))
        goto done;
    // a token id outside the vocabulary would index past the embedding table
    // later: such ids are treated as absent (-1), with a warning
    {
        int *ids[3] = {&c->bos_id, &c->eos_id, &c->pad_id};
        static const char *const names[3] = {"bos_token_id", "eos_token_id", "pad_token_id"};
        for (int k = 0; k < 3; k++)
            if (*ids[k] < -1 || *ids[k] >= c->vocab_size) {
                gn_log(GN_LOG_WARN, "%s: field '%s' = %d is outside the vocabulary (0..%d); ignoring it", path,
                       names[k], *ids[k], c->vocab_size - 1);
                *ids[k] = -1;
            }
    }
    if ((st = add_eos_ids(c, j, "eos_token_id", path))) goto done;
    if (c->n_kv_heads < 1 || c->n_kv_heads > 4096 || c->max_seq > (1 << 24)) {
        st = gn_err(GN_ERR_FORMAT, "%s: num_key_value_heads %d / max_position_embeddings %d: expected 1..4096 and "
                    "at most %d", path, c->n_kv_heads, c->max_seq, 1 << 24);
        goto done;
    }
    int64_t hd = 0;
    if (json_int(j, "head_dim", path, &hd) < 0) { st = GN_ERR_FORMAT; goto done; }
    if (hd == 0) {
        if (c->dim % c->n_heads) {
            st = gn_err(GN_ERR_FORMAT, "%s: hidden_size %d is not a multiple of num_attention_heads %d (and no head_dim given)",
                        path, c->dim, c->n_heads);
            goto done;
        }
        hd = c->dim / c->n_heads;
    }
    if (hd < 2 || hd > 4096 || hd % 2) {
        st = gn_err(GN_ERR_FORMAT, "%s: field 'head_dim' = %lld: expected an even number 2..4096", path, (long long)hd);
        goto done;
    }
    c->head_dim = (int)hd;
    if (c->n_kv_heads < 1 || c->n_heads % c->n_kv_heads) {
        st = gn_err(GN_ERR_FORMAT, "%s: num_key_value_heads %d must divide num_attention_heads %d", path, c->n_kv_heads,
                    c->n_heads);
        goto done;
    }
    if (c->max_seq < 1) c->max_seq = 2048;
    double d = 1e-6;
    if (json_num(j, "rms_norm_eps", path, &d) < 0) { st = GN_ERR_FORMAT; goto done; }
    c->norm_eps = (float)d;
    d = 10000.0;
    if (json_num(j, "rope_theta", path, &d) < 0) { st = GN_ERR_FORMAT; goto done; }
    c->rope_theta = (float)d;
    c->rope_factor = 1.0f;
    // transformers >= 5 writes rope_parameters (with rope_theta inside); older, rope_scaling
    if ((st = parse_rope_scaling(cJSON_GetObjectItemCaseSensitive(j, "rope_parameters"), path, c))) goto done;
    if (c->rope_scaling == GN_ROPE_NONE &&
        (st = parse_rope_scaling(cJSON_GetObjectItemCaseSensitive(j, "rope_scaling"), path, c)))
        goto done;
    if (!(c->rope_theta > 0)) { st = gn_err(GN_ERR_FORMAT, "%s: rope_theta must be positive", path); goto done; }
    const cJSON *tie = cJSON_GetObjectItemCaseSensitive(j, "tie_word_embeddings");
    c->tie_embeddings = tie ? cJSON_IsTrue(tie) : 1; // PretrainedConfig's default is True
    const cJSON *ab = cJSON_GetObjectItemCaseSensitive(j, "attention_bias");
    const cJSON *mb = cJSON_GetObjectItemCaseSensitive(j, "mlp_bias");
    if (cJSON_IsTrue(ab) || cJSON_IsTrue(mb)) {
        st = gn_err(GN_ERR_UNSUPPORTED, "%s: attention_bias/mlp_bias are not supported (LLaMA has no biases)", path);
        goto done;
    }
    c->rope_interleaved = 0;
    st = GN_OK;
done:
    cJSON_Delete(j);
    free(text);
    return st;
}

// quantization_config.bnb_4bit_compute_dtype of config.json (F32 when absent).
static gn_dtype quant_compute_dtype(const char *path) {
    char *text;
    size_t len;
    if (gn_read_file(path, &text, &len)) return GN_DTYPE_F32;
    cJSON *j = cJSON_ParseWithLength(text, len);
    free(text);
    const cJSON *q = cJSON_GetObjectItemCaseSensitive(j, "quantization_config");
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(q, "bnb_4bit_compute_dtype");
    gn_dtype r = GN_DTYPE_F32;
    if (cJSON_IsString(d)) {
        if (!strcmp(d->valuestring, "bfloat16")) r = GN_DTYPE_BF16;
        else if (!strcmp(d->valuestring, "float16")) r = GN_DTYPE_F16;
    }
    cJSON_Delete(j);
    return r;
}

// ----------------------------------------------------------------------------
// HF weight files

// Adds the file list of an *.index.json (unique, in first-seen order).
static gn_status load_index(gn_tensor_table *tt, const char *dir, const char *index_path, int is_bin) {
    char *text;
    size_t len;
    gn_status st = gn_read_file(index_path, &text, &len);
    if (st) return st;
    cJSON *j = cJSON_ParseWithLength(text, len);
    free(text);
    const cJSON *wm = j ? cJSON_GetObjectItemCaseSensitive(j, "weight_map") : NULL;
    if (!cJSON_IsObject(wm)) {
        cJSON_Delete(j);
        return gn_err(GN_ERR_FORMAT, "%s: expected a JSON object with a 'weight_map' object", index_path);
    }
    const cJSON *e;
    char **seen = NULL;
    int nseen = 0;
    st = GN_OK;
    cJSON_ArrayForEach(e, wm) {
        if (!cJSON_IsString(e) || strchr(e->valuestring, '/')) {
            st = gn_err(GN_ERR_FORMAT, "%s: weight_map['%s']: expected a file name in the same folder", index_path,
                        e->string ? e->string : "?");
            break;
        }
        int dup = 0;
        for (int i = 0; i < nseen && !dup; i++) dup = !strcmp(seen[i], e->valuestring);
        if (dup) continue;
        seen = gn_realloc(seen, sizeof(char *) * (size_t)(nseen + 1));
        seen[nseen++] = e->valuestring;
        char *p = join(dir, e->valuestring);
        st = is_bin ? gn_torchbin_load(tt, p) : gn_safetensors_load(tt, p);
        free(p);
        if (st) break;
    }
    free(seen);
    cJSON_Delete(j);
    return st;
}

static gn_status load_hf_weights(gn_tensor_table *tt, const char *dir, const char *single, const char **source) {
    if (single) {
        int bin = file_magic_is(single, "PK\x03\x04", 4);
        *source = bin ? "pytorch-bin" : "safetensors";
        return bin ? gn_torchbin_load(tt, single) : gn_safetensors_load(tt, single);
    }
    static const struct { const char *name; int bin, index; } cand[] = {
        {"model.safetensors.index.json", 0, 1},
        {"model.safetensors", 0, 0},
        {"pytorch_model.bin.index.json", 1, 1},
        {"pytorch_model.bin", 1, 0},
    };
    for (size_t i = 0; i < sizeof cand / sizeof cand[0]; i++) {
        char *p = join(dir, cand[i].name);
        if (is_file(p)) {
            *source = cand[i].bin ? "pytorch-bin" : "safetensors";
            gn_status st = cand[i].index ? load_index(tt, dir, p, cand[i].bin)
                                         : (cand[i].bin ? gn_torchbin_load(tt, p) : gn_safetensors_load(tt, p));
            free(p);
            return st;
        }
        free(p);
    }
    return gn_err(GN_ERR_IO, "%s: no weights found (expected model.safetensors[.index.json] or pytorch_model.bin[.index.json])", dir);
}

// ----------------------------------------------------------------------------
// turning file tensors into compute matrices

static void *own(gn_model *m, size_t bytes) {
    void *p = gn_malloc(bytes);
    m->owned = gn_realloc(m->owned, sizeof(void *) * (size_t)(m->nowned + 1));
    m->owned[m->nowned++] = p;
    return p;
}

static const char *shape_str(const gn_tensor *t, char *buf, size_t cap) {
    size_t o = 0;
    o += (size_t)snprintf(buf + o, cap - o, "[");
    for (int i = 0; i < t->ndim && o < cap; i++)
        o += (size_t)snprintf(buf + o, cap - o, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
    if (o < cap) snprintf(buf + o, cap - o, "]");
    return buf;
}

// Looks up `name`; checks it is (rows, cols) (cols 0: 1-D of rows).
static gn_status find_checked(const gn_model *m, const gn_tensor_table *tt, const char *name, int64_t rows,
                              int64_t cols, const gn_tensor **out) {
    const gn_tensor *t = gn_tensor_table_find(tt, name);
    if (!t) {
        const char *where = m->gguf ? m->gguf->map.path : m->path;
        return gn_err(GN_ERR_FORMAT, "%s: missing tensor '%s'", where, name);
    }
    int ok = cols ? (t->ndim == 2 && t->shape[0] == rows && t->shape[1] == cols)
                  : (t->ndim == 1 && t->shape[0] == rows);
    if (!ok) {
        char got[128];
        if (cols)
            return gn_err(GN_ERR_SHAPE, "%s: tensor '%s' has shape %s, but the config implies [%lld, %lld]", t->file,
                          name, shape_str(t, got, sizeof got), (long long)rows, (long long)cols);
        return gn_err(GN_ERR_SHAPE, "%s: tensor '%s' has shape %s, but the config implies [%lld]", t->file, name,
                      shape_str(t, got, sizeof got), (long long)rows);
    }
    *out = t;
    return GN_OK;
}

static int aligned_for(const void *p, size_t a) { return ((uintptr_t)p % a) == 0; }

// Tensor t (2-D) to bf16 in dst, converting through f32 a few rows at a time.
static gn_status tensor_to_bf16(const gn_tensor *t, uint16_t *dst) {
    int64_t rows = t->shape[0], cols = t->shape[1];
    if (t->dtype == GN_DTYPE_F32 || t->dtype == GN_DTYPE_BF16 || t->dtype == GN_DTYPE_F16 || rows <= 0 || cols <= 0) {
        for (int64_t i = 0; i < t->nelem; i++) {
            float v;
            if (t->dtype == GN_DTYPE_F32) memcpy(&v, (const char *)t->data + i * 4, 4);
            else {
                uint16_t h;
                memcpy(&h, (const char *)t->data + i * 2, 2);
                v = t->dtype == GN_DTYPE_BF16 ? gn_bf16_to_f32(h) : gn_f16_to_f32(h);
            }
            dst[i] = gn_f32_to_bf16(v);
        }
        return GN_OK;
    }
    const int64_t RB = 256;
    float *f = gn_malloc(sizeof(float) * (size_t)(RB * cols));
    gn_status st = GN_OK;
    for (int64_t r0 = 0; r0 < rows && !st; r0 += RB) {
        int64_t n = rows - r0 < RB ? rows - r0 : RB;
        st = gn_tensor_rows_to_f32(t, r0, n, f);
        for (int64_t i = 0; !st && i < n * cols; i++) dst[r0 * cols + i] = gn_f32_to_bf16(f[i]);
    }
    free(f);
    return st;
}

// A matrix in the model's compute dtype: in place when possible, else converted.
// A GGUF's Q4_0, Q4_1 or Q8_0 matrix (SmolLM2's Q8_0 embedding and tied head, the
// layers of a llama.cpp Q4/Q8 file loaded without --4bit) stays as the file has it:
// its products take each weight's value as ggml's dequantizer gives it, where
// widening would round them (bf16) or read 2-7x the bytes a token.
// the mapping holding p, or NULL
static const gn_mmap *mapping_of(const gn_model *m, const void *p) {
    const uint8_t *a = p;
    for (int i = 0; i < m->tt.nmaps; i++) {
        const uint8_t *b = m->tt.maps[i].data;
        if (b && a >= b && a < b + m->tt.maps[i].size) return &m->tt.maps[i];
    }
    if (m->gguf && m->gguf->map.data) {
        const uint8_t *b = m->gguf->map.data;
        if (a >= b && a < b + m->gguf->map.size) return &m->gguf->map;
    }
    return NULL;
}

// A tensor of the mapped file read once at load (converted or quantized into memory of ours):
// this process's view of the pages wholly inside it dropped, so the mapping does not stay in
// the RSS beside the copy (a 7B f16 folder loaded with --4bit peaked at 16.3 GB, file pages
// and all). The page cache keeps them; reading the tensor again refaults them (the mapping
// is PROT_READ and private: never written).
static void drop_mapped(const gn_model *m, const void *p, size_t bytes) {
    if (!p || !bytes || !mapping_of(m, p)) return;
    const uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE);
    const uintptr_t a = ((uintptr_t)p + pg - 1) & ~(pg - 1), e = ((uintptr_t)p + bytes) & ~(pg - 1);
    if (e > a) (void)madvise((void *)a, e - a, MADV_DONTNEED);
}

static gn_status make_mat(gn_model *m, const gn_tensor *t, gn_mat *out) {
    out->rows = t->shape[0];
    out->cols = t->shape[1];
    out->dtype = m->wdtype;
    size_t n = (size_t)t->nelem;
    if (gn_blocks_bytes(t->dtype) && out->cols % GN_QBLOCK == 0 && !getenv("GN_WIDEN_GGML")) {
        out->dtype = t->dtype;
        out->data = t->data;
        return GN_OK;
    }
    if (t->dtype == m->wdtype && aligned_for(t->data, m->wdtype == GN_DTYPE_F32 ? 4 : 2)) {
        out->data = t->data;
        return GN_OK;
    }
    if (t->dtype == GN_DTYPE_BF16 && m->wdtype == GN_DTYPE_BF16) { // unaligned bf16: copy
        void *p = own(m, n * 2);
        memcpy(p, t->data, n * 2);
        out->data = p;
        return GN_OK;
    }
    gn_status st;
    if (m->wdtype == GN_DTYPE_BF16) { // via f32 in slices, so no whole f32 copy is ever resident
        uint16_t *b = own(m, n * 2);
        out->data = b;
        st = tensor_to_bf16(t, b);
    } else {
        float *f = own(m, n * sizeof(float));
        out->data = f;
        st = gn_tensor_to_f32(t, f);
    }
    drop_mapped(m, t->data, t->nbytes);
    return st;
}

// a transformers + bitsandbytes 4-bit checkpoint (its first layer's q_proj stored 4-bit)
static int checkpoint_4bit(const gn_tensor_table *tt) {
    return gn_quant4_present(tt, "model.layers.0.self_attn.q_proj") || gn_quant4_present(tt, "blk.0.attn_q");
}

// A 4-bit linear weight: from a pre-quantized HF checkpoint (prefix.weight.
// quant_state.*) or quantized here from the file's values, as bnb's
// quantize_4bit does on the flattened tensor.
static gn_status make_q4(gn_model *m, const gn_tensor_table *tt, const char *prefix, const gn_tensor *t, int64_t rows,
                         int64_t cols, gn_mat *out) {
    gn_quant4_state *q = &m->q4[m->n_q4];
    gn_status st;
    if (gn_quant4_present(tt, prefix)) {
        if ((st = gn_quant4_load(q, tt, prefix))) return st;
        m->n_q4++;
        if (q->rows != rows || q->cols != cols)
            return gn_err(GN_ERR_SHAPE, "%s: 4-bit tensor '%s.weight' has shape [%lld, %lld], but the config implies [%lld, %lld]",
                          m->path, prefix, (long long)q->rows, (long long)q->cols, (long long)rows, (long long)cols);
    } else {
        const gn_load_opts *o = &m->opts;
        int qt = o->weight_dtype == GN_DTYPE_FP4 ? GN_QUANT_FP4 : GN_QUANT_NF4;
        int bs = o->blocksize ? o->blocksize : 64;
        int plain = t->dtype == GN_DTYPE_F32 || t->dtype == GN_DTYPE_F16 || t->dtype == GN_DTYPE_BF16;
        float *tmp = NULL;
        if (!plain || !aligned_for(t->data, t->dtype == GN_DTYPE_F32 ? 4 : 2)) {
            tmp = gn_malloc(sizeof(float) * (size_t)t->nelem);
            if ((st = gn_tensor_to_f32(t, tmp))) { free(tmp); return st; }
        }
        st = gn_quantize_4bit(tmp ? tmp : t->data, tmp ? GN_DTYPE_F32 : t->dtype, t->nelem, bs, qt, !o->no_double_quant, q);
        free(tmp);
        drop_mapped(m, t->data, t->nbytes);
        if (st) return gn_err_prefix(st, t->name);
        m->n_q4++;
        int64_t shape[2] = {rows, cols};
        if ((st = gn_quant4_set_shape(q, 2, shape))) return st;
    }
    gn_dtype cd = m->opts.compute_dtype;
    if (cd != GN_DTYPE_F32 && cd != GN_DTYPE_BF16 && cd != GN_DTYPE_F16) // auto: a checkpoint's own (its head quantized here too)
        cd = gn_quant4_present(tt, prefix) || checkpoint_4bit(tt) ? m->file_compute_dtype : GN_DTYPE_BF16;
    q->wdtype = cd;
    *out = (gn_mat){q->quant_type == GN_QUANT_FP4 ? GN_DTYPE_FP4 : GN_DTYPE_NF4, rows, cols, NULL, q};
    return GN_OK;
}

static gn_status make_vec(gn_model *m, const gn_tensor *t, const float **out) {
    if (t->dtype == GN_DTYPE_F32 && aligned_for(t->data, 4)) { *out = t->data; return GN_OK; }
    float *f = own(m, (size_t)t->nelem * sizeof(float));
    gn_status st = gn_tensor_to_f32(t, f);
    *out = f;
    return st;
}

typedef struct {
    const char *embed, *norm, *head;
    const char *fmt[9]; // per-layer names with %d: attn_norm, ffn_norm, q, k, v, o, gate, up, down
} name_scheme;

static const name_scheme HF_NAMES = {
    "model.embed_tokens.weight", "model.norm.weight", "lm_head.weight",
    {"model.layers.%d.input_layernorm.weight", "model.layers.%d.post_attention_layernorm.weight",
     "model.layers.%d.self_attn.q_proj.weight", "model.layers.%d.self_attn.k_proj.weight",
     "model.layers.%d.self_attn.v_proj.weight", "model.layers.%d.self_attn.o_proj.weight",
     "model.layers.%d.mlp.gate_proj.weight", "model.layers.%d.mlp.up_proj.weight",
     "model.layers.%d.mlp.down_proj.weight"}};

static const name_scheme GGUF_NAMES = {
    "token_embd.weight", "output_norm.weight", "output.weight",
    {"blk.%d.attn_norm.weight", "blk.%d.ffn_norm.weight", "blk.%d.attn_q.weight", "blk.%d.attn_k.weight",
     "blk.%d.attn_v.weight", "blk.%d.attn_output.weight", "blk.%d.ffn_gate.weight", "blk.%d.ffn_up.weight",
     "blk.%d.ffn_down.weight"}};

static gn_status bind_weights(gn_model *m, const gn_tensor_table *tt, const name_scheme *ns) {
    const gn_config *c = &m->cfg;
    int64_t C = c->dim, HD = c->hidden_dim, V = c->vocab_size;
    int64_t QD = (int64_t)c->n_heads * c->head_dim, KVD = (int64_t)c->n_kv_heads * c->head_dim;
    const gn_tensor *t;
    gn_status st;
    if (m->opts.weight_dtype == GN_DTYPE_NF4 || m->opts.weight_dtype == GN_DTYPE_FP4) {
        // --4bit with bf16 compute (the default): the embedding and head are bf16 too, as
        // transformers holds every non-quantized weight of a QLoRA model in bf16; this
        // also halves the bytes the head reads per token
        gn_dtype cd = m->opts.compute_dtype;
        if (cd != GN_DTYPE_F32 && cd != GN_DTYPE_BF16 && cd != GN_DTYPE_F16) { // auto
            char pre[64];
            snprintf(pre, sizeof pre, ns == &HF_NAMES ? "model.layers.0.self_attn.q_proj" : "blk.0.attn_q");
            cd = gn_quant4_present(tt, pre) ? m->file_compute_dtype : GN_DTYPE_BF16;
        }
        if (cd == GN_DTYPE_BF16) m->wdtype = GN_DTYPE_BF16;
    } else if (m->opts.weight_dtype == GN_DTYPE_COUNT && checkpoint_4bit(tt)) {
        // auto on a pre-quantized checkpoint: its embedding and head in the file's dtype, as
        // transformers loads them (dtype "auto"); bf16 where the file stores them in bf16 and
        // its products compute in bf16 (`guanaco quantize`'s default), so the folder runs as
        // --4bit on its source does, else f32
        gn_dtype cd = m->opts.compute_dtype;
        if (cd != GN_DTYPE_F32 && cd != GN_DTYPE_BF16 && cd != GN_DTYPE_F16) cd = m->file_compute_dtype;
        const gn_tensor *e = gn_tensor_table_find(tt, ns->embed), *h = gn_tensor_table_find(tt, ns->head);
        if (cd == GN_DTYPE_BF16 && e && e->dtype == GN_DTYPE_BF16 && (!h || h->dtype == GN_DTYPE_BF16))
            m->wdtype = GN_DTYPE_BF16;
    }
    if ((st = find_checked(m, tt, ns->embed, V, C, &t)) || (st = make_mat(m, t, &m->embed))) return st;
    if ((st = find_checked(m, tt, ns->norm, C, 0, &t)) || (st = make_vec(m, t, &m->final_norm))) return st;
    m->q4 = gn_calloc((size_t)c->n_layers * 7 + 1, sizeof(gn_quant4_state)); // the layers', and a 4-bit head
    m->n_q4 = 0;
    const gn_tensor *head = gn_tensor_table_find(tt, ns->head);
    const int own = head && !(m->gguf == NULL && c->tie_embeddings); // a head of its own (an HF tied config ignores one)
    const int four = m->opts.weight_dtype == GN_DTYPE_NF4 || m->opts.weight_dtype == GN_DTYPE_FP4 || checkpoint_4bit(tt);
    const char *hpre = ns == &HF_NAMES ? "lm_head" : "output";
    if (m->opts.quant_head && !four)
        return gn_err(GN_ERR_ARG, "%s: a 4-bit head (--4bit-head) needs the 4-bit layers too (--4bit)", m->path);
    if (gn_quant4_present(tt, hpre) || (m->opts.quant_head && four)) {
        // a head stored 4-bit (transformers + bnb with llm_int8_skip_modules=[]), or quantized
        // here from the head, or from the embedding table where the two are tied (the table
        // stays as it is for the lookups: the head becomes a matrix of its own)
        t = NULL;
        if (!gn_quant4_present(tt, hpre) && (st = find_checked(m, tt, own ? ns->head : ns->embed, V, C, &t))) return st;
        if ((st = make_q4(m, tt, hpre, t, V, C, &m->lm_head))) return st;
        m->head_copy = t && !own;
        m->cfg.tie_embeddings = 0;
    } else if (own) {
        if ((st = find_checked(m, tt, ns->head, V, C, &t)) || (st = make_mat(m, t, &m->lm_head))) return st;
        m->cfg.tie_embeddings = 0;
    } else {
        if (!head && !c->tie_embeddings && !m->gguf)
            return gn_err(GN_ERR_FORMAT, "%s: missing tensor '%s' (config.json says tie_word_embeddings=false)",
                          m->path, ns->head);
        m->lm_head = m->embed;
        m->cfg.tie_embeddings = 1;
    }
    m->layers = gn_calloc((size_t)c->n_layers, sizeof(gn_layer));
    char name[160];
    for (int l = 0; l < c->n_layers; l++) {
        gn_layer *L = &m->layers[l];
        const int64_t dims[9][2] = {{C, 0}, {C, 0}, {QD, C}, {KVD, C}, {KVD, C}, {C, QD}, {HD, C}, {HD, C}, {C, HD}};
        gn_mat *mats[9] = {NULL, NULL, &L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
        for (int k = 0; k < 9; k++) {
            snprintf(name, sizeof name, ns->fmt[k], l);
            if (k >= 2) { // a pre-quantized 4-bit layer has no plain 2-D weight to check
                char prefix[160];
                size_t pl = strlen(name) - strlen(".weight");
                snprintf(prefix, sizeof prefix, "%.*s", (int)pl, name);
                if (gn_quant4_present(tt, prefix) || m->opts.weight_dtype == GN_DTYPE_NF4 || m->opts.weight_dtype == GN_DTYPE_FP4) {
                    t = NULL;
                    if (!gn_quant4_present(tt, prefix) && (st = find_checked(m, tt, name, dims[k][0], dims[k][1], &t))) return st;
                    if ((st = make_q4(m, tt, prefix, t, dims[k][0], dims[k][1], mats[k]))) return st;
                    continue;
                }
            }
            if ((st = find_checked(m, tt, name, dims[k][0], dims[k][1], &t))) return st;
            if (k == 0) st = make_vec(m, t, &L->attn_norm);
            else if (k == 1) st = make_vec(m, t, &L->ffn_norm);
            else st = make_mat(m, t, mats[k]);
            if (st) return st;
        }
    }
    return GN_OK;
}

// ----------------------------------------------------------------------------
// GGUF config

static gn_status config_from_gguf(gn_config *c, const gn_gguf *g, const char *path) {
    memset(c, 0, sizeof *c);
    char *arch = gn_gguf_get_str(g, "general.architecture");
    if (!arch) return gn_err(GN_ERR_FORMAT, "%s: missing key general.architecture", path);
    if (strcmp(arch, "llama")) {
        gn_status st = gn_err(GN_ERR_UNSUPPORTED, "%s: architecture '%s' is not supported (expected llama)", path, arch);
        free(arch);
        return st;
    }
    free(arch);
    struct { const char *key; int *dst; int64_t lo, hi; int required; int dflt; } f[] = {
        {"llama.embedding_length", &c->dim, 1, 1 << 20, 1, 0},
        {"llama.feed_forward_length", &c->hidden_dim, 1, 1 << 22, 1, 0},
        {"llama.block_count", &c->n_layers, 1, 4096, 1, 0},
        {"llama.attention.head_count", &c->n_heads, 1, 4096, 1, 0},
        {"llama.context_length", &c->max_seq, 1, 1 << 24, 0, 2048},
    };
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
        const gguf_kv *kv = gn_gguf_get(g, f[i].key);
        if (!kv && f[i].required) return gn_err(GN_ERR_FORMAT, "%s: missing key %s", path, f[i].key);
        int64_t v = kv ? gn_gguf_get_int(g, f[i].key, f[i].dflt) : f[i].dflt;
        if (v < f[i].lo || v > f[i].hi)
            return gn_err(GN_ERR_FORMAT, "%s: key %s = %lld: expected %lld..%lld", path, f[i].key, (long long)v,
                          (long long)f[i].lo, (long long)f[i].hi);
        *f[i].dst = (int)v;
    }
    c->n_kv_heads = (int)gn_gguf_get_int(g, "llama.attention.head_count_kv", c->n_heads);
    if (c->n_kv_heads < 1 || c->n_heads % c->n_kv_heads)
        return gn_err(GN_ERR_FORMAT, "%s: head_count_kv %d must divide head_count %d", path, c->n_kv_heads, c->n_heads);
    int64_t hd = gn_gguf_get_int(g, "llama.attention.key_length", c->dim / c->n_heads);
    if (hd < 2 || hd > 4096 || hd % 2)
        return gn_err(GN_ERR_FORMAT, "%s: head size %lld: expected an even number 2..4096", path, (long long)hd);
    c->head_dim = (int)hd;
    c->norm_eps = (float)gn_gguf_get_float(g, "llama.attention.layer_norm_rms_epsilon", 1e-5);
    c->rope_theta = (float)gn_gguf_get_float(g, "llama.rope.freq_base", 10000.0);
    c->rope_factor = 1.0f;
    char *rs = gn_gguf_get_str(g, "llama.rope.scaling.type");
    if (rs && !strcmp(rs, "linear")) {
        c->rope_scaling = GN_ROPE_LINEAR;
        c->rope_factor = (float)gn_gguf_get_float(g, "llama.rope.scaling.factor", 1.0);
        if (!(c->rope_factor > 0)) { free(rs); return gn_err(GN_ERR_FORMAT, "%s: bad llama.rope.scaling.factor", path); }
    } else if (rs && strcmp(rs, "none")) {
        gn_status st = gn_err(GN_ERR_UNSUPPORTED, "%s: rope scaling '%s' is not supported", path, rs);
        free(rs);
        return st;
    }
    free(rs);
    if (!(c->rope_theta > 0)) return gn_err(GN_ERR_FORMAT, "%s: llama.rope.freq_base must be positive", path);
    c->bos_id = (int)gn_gguf_get_int(g, "tokenizer.ggml.bos_token_id", -1);
    c->eos_id = (int)gn_gguf_get_int(g, "tokenizer.ggml.eos_token_id", -1);
    c->pad_id = (int)gn_gguf_get_int(g, "tokenizer.ggml.padding_token_id", -1);
    c->rope_interleaved = 1;
    // vocab: the embedding's rows are the truth
    const gn_tensor *emb = gn_tensor_table_find(&g->tensors, "token_embd.weight");
    if (!emb || emb->ndim != 2) return gn_err(GN_ERR_FORMAT, "%s: missing 2-D tensor 'token_embd.weight'", path);
    c->vocab_size = (int)emb->shape[0];
    int64_t v = gn_gguf_get_int(g, "llama.vocab_size", c->vocab_size);
    if (v != c->vocab_size)
        return gn_err(GN_ERR_SHAPE, "%s: llama.vocab_size %lld disagrees with token_embd.weight rows %d", path,
                      (long long)v, c->vocab_size);
    return GN_OK;
}

// ----------------------------------------------------------------------------
// RoPE frequencies

static gn_status init_rope(gn_model *m) {
    gn_config *c = &m->cfg;
    m->n_rot = c->head_dim;
    if (m->gguf) {
        int64_t nr = gn_gguf_get_int(m->gguf, "llama.rope.dimension_count", c->head_dim);
        if (nr < 2 || nr > c->head_dim || nr % 2)
            return gn_err(GN_ERR_FORMAT, "%s: llama.rope.dimension_count %lld: expected an even number <= head size %d",
                          m->gguf->map.path, (long long)nr, c->head_dim);
        m->n_rot = (int)nr;
    }
    int half = m->n_rot / 2;
    m->rope_inv_freq = own(m, sizeof(float) * (size_t)half);
    for (int i = 0; i < half; i++) {
        // HF: 1 / base ** (arange(0, dim, 2) / dim), in float32
        float inv = 1.0f / powf(c->rope_theta, (float)(2 * i) / (float)m->n_rot);
        if (c->rope_scaling == GN_ROPE_LINEAR) inv /= c->rope_factor;
        else if (c->rope_scaling == GN_ROPE_LLAMA3) {
            float lo_wl = (float)c->rope_orig_max_pos / c->rope_low_freq_factor;
            float hi_wl = (float)c->rope_orig_max_pos / c->rope_high_freq_factor;
            float wl = 2.0f * (float)M_PI / inv;
            if (wl > lo_wl) inv = inv / c->rope_factor;
            else if (wl >= hi_wl) {
                float smooth = ((float)c->rope_orig_max_pos / wl - c->rope_low_freq_factor) /
                               (c->rope_high_freq_factor - c->rope_low_freq_factor);
                inv = (1.0f - smooth) * inv / c->rope_factor + smooth * inv;
            }
        }
        m->rope_inv_freq[i] = inv;
    }
    if (m->gguf) { // llama-3 style GGUFs carry per-pair frequency divisors
        const gn_tensor *rf = gn_tensor_table_find(&m->gguf->tensors, "rope_freqs.weight");
        if (rf) {
            if (rf->nelem != half || rf->dtype != GN_DTYPE_F32)
                return gn_err(GN_ERR_SHAPE, "%s: rope_freqs.weight: expected %d f32 values", m->gguf->map.path, half);
            for (int i = 0; i < half; i++) m->rope_inv_freq[i] /= ((const float *)rf->data)[i];
        }
    }
    return GN_OK;
}

// ----------------------------------------------------------------------------
// load / free

static size_t mat_bytes(const gn_mat *w, size_t es) {
    size_t n = (size_t)(w->rows * w->cols);
    return gn_blocks_bytes(w->dtype) ? n / GN_QBLOCK * (size_t)gn_blocks_bytes(w->dtype) : n * es;
}

static size_t q4_or_mat_bytes(const gn_mat *w, size_t es) {
    const gn_quant4_state *q = w->q4;
    if (!q) return mat_bytes(w, es);
    return (size_t)((q->nelem + 1) / 2) + (size_t)q->nblocks * (q->nested ? 1 : 4) + (size_t)q->nested_nblocks * 4;
}

static void count_params(gn_model *m) {
    const gn_config *c = &m->cfg;
    int64_t C = c->dim, HD = c->hidden_dim, V = c->vocab_size;
    int64_t QD = (int64_t)c->n_heads * c->head_dim, KVD = (int64_t)c->n_kv_heads * c->head_dim;
    int64_t per_layer = 2 * C + 2 * QD * C + 2 * KVD * C + 3 * HD * C;
    int64_t mats = V * C * (c->tie_embeddings || m->head_copy ? 1 : 2); // the model's own, not a copy
    m->n_params = mats + C + per_layer * c->n_layers;
    // resident weight bytes: what the forward pass reads
    size_t es = m->wdtype == GN_DTYPE_BF16 ? 2 : 4, b = (size_t)(C + 2 * C * c->n_layers) * 4;
    b += mat_bytes(&m->embed, es) + (c->tie_embeddings ? 0 : q4_or_mat_bytes(&m->lm_head, es));
    for (int l = 0; l < c->n_layers; l++) {
        const gn_layer *L = &m->layers[l];
        const gn_mat *ms[7] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
        for (int k = 0; k < 7; k++) {
            b += q4_or_mat_bytes(ms[k], es);
        }
    }
    m->weight_bytes = b;
}

// ----------------------------------------------------------------------------
// the streamed weights out of the file mapping
//
// Decode reads every linear layer and the head once a token. Used in place, a mapped file's
// weights sit in 4 KiB page-cache pages: a TLB miss each 4 KiB, and the hardware prefetchers
// stop at every page's end (Zen 4, 2 threads, pre-quantized folders: 1.1B 26.2 ms a token in
// place, 21.9 copied; 7B 128-137 against 114-118). So the bytes of those matrices that lie in
// a mapping are copied into one anonymous
// buffer advised for huge pages, and the mapping's pages behind them are dropped from this
// process (the page cache keeps them: re-reading a PROT_READ private mapping refaults the
// file). The float32 norm vectors used in place go along: a kernel that maps a file's large
// folios whole on a fault (Linux 6.18) brought their neighbours' dropped pages back into the
// RSS on every read (+35 MB at SmolLM2). Not done with gn_load_opts.mmap_weights (--mmap), when
// transparent huge pages are off, for a CUDA model, or when the copy needs more than half of
// MemAvailable.

typedef struct {
    void *slot;   // the pointer to repoint (a const uint8_t *, const float * or const void *)
    size_t bytes;
    const gn_mmap *map;
    uint8_t *dst; // where it goes
    int fd;       // the mapped file, opened once per mapping (-1: copy from the mapping)
} pin_span;

// the file a mapping was made of, opened again for pread; -1 when the path names another
// file now (replaced since it was mapped) or cannot be opened
static int open_mapped(const gn_mmap *map) {
    int fd = open(map->path, O_RDONLY);
    struct stat st;
    if (fd >= 0 && (fstat(fd, &st) || (uint64_t)st.st_dev != map->dev || (uint64_t)st.st_ino != map->ino)) {
        close(fd);
        fd = -1;
    }
    return fd;
}


static int thp_enabled(void) {
    char buf[128] = {0};
    FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
    if (!f) return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    return strstr(buf, "[never]") == NULL;
}

static size_t mem_available(void) {
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return 0;
    char line[256];
    size_t kb = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %zu kB", &kb) == 1) break;
    fclose(f);
    return kb * 1024;
}

static void pin_add(const gn_model *m, pin_span *sp, int *n, void *slot, size_t bytes) {
    const void *p;
    memcpy(&p, slot, sizeof p);
    const gn_mmap *map = p && bytes ? mapping_of(m, p) : NULL;
    if (map) sp[(*n)++] = (pin_span){slot, bytes, map, NULL, -1};
}

static void pin_mat(const gn_model *m, pin_span *sp, int *n, gn_mat *w) {
    if (w->q4) return; // its state's buffers are listed from m->q4
    size_t e = (size_t)(w->rows * w->cols), bb = (size_t)gn_blocks_bytes(w->dtype);
    pin_add(m, sp, n, &w->data, bb ? e / GN_QBLOCK * bb : e * (w->dtype == GN_DTYPE_F32 ? 4 : 2));
}

static void pin_weights(gn_model *m) {
    if (m->opts.mmap_weights || m->opts.device == GN_DEVICE_CUDA || !thp_enabled()) return;
    const int L = m->cfg.n_layers, cap = 4 * m->n_q4 + 9 * L + 3;
    pin_span *sp = gn_malloc(sizeof *sp * (size_t)cap);
    int n = 0;
    for (int i = 0; i < m->n_q4; i++) {
        gn_quant4_state *q = &m->q4[i];
        pin_add(m, sp, &n, &q->packed, (size_t)((q->nelem + 1) / 2));
        pin_add(m, sp, &n, &q->absmax, q->absmax ? (size_t)q->nblocks * 4 : 0);
        pin_add(m, sp, &n, &q->qabsmax, q->nested ? (size_t)q->nblocks : 0);
        pin_add(m, sp, &n, &q->nested_absmax, q->nested ? (size_t)q->nested_nblocks * 4 : 0);
    }
    for (int l = 0; l < L; l++) {
        gn_layer *y = &m->layers[l];
        gn_mat *ms[7] = {&y->wq, &y->wk, &y->wv, &y->wo, &y->w_gate, &y->w_up, &y->w_down};
        for (int k = 0; k < 7; k++) pin_mat(m, sp, &n, ms[k]);
        pin_add(m, sp, &n, &y->attn_norm, (size_t)m->cfg.dim * 4);
        pin_add(m, sp, &n, &y->ffn_norm, (size_t)m->cfg.dim * 4);
    }
    pin_add(m, sp, &n, &m->final_norm, (size_t)m->cfg.dim * 4);
    const int tied = !m->lm_head.q4 && m->lm_head.data == m->embed.data; // the head streams the table
    pin_mat(m, sp, &n, &m->lm_head);
    size_t total = 0;
    for (int i = 0; i < n; i++) total += (sp[i].bytes + 63) & ~(size_t)63;
    const size_t avail = mem_available();
    if (!total || (avail && total > avail / 2)) {
        if (total)
            gn_log(GN_LOG_INFO, "%s: %.1f MB of weights left in the file mapping (%.1f MB available)", m->path, total / 1e6,
                   avail / 1e6);
        free(sp);
        return;
    }
    m->pinned_bytes = total;
    uint8_t *dst = gn_malloc_aligned(total);
    m->owned = gn_realloc(m->owned, sizeof(void *) * (size_t)(m->nowned + 1));
    m->owned[m->nowned++] = dst;
    for (int i = 0; i < n; i++) {
        sp[i].dst = dst;
        dst += (sp[i].bytes + 63) & ~(size_t)63;
        int j = 0; // the file of this span's mapping: opened at its first span, shared by the rest
        while (j < i && sp[j].map != sp[i].map) j++;
        sp[i].fd = j < i ? sp[j].fd : open_mapped(sp[i].map);
    }
    // read from the file (no page faults on the mapping's side), both cores at once; a span
    // pread cannot read (the path replaced or the file cut since it was mapped) is copied from
    // the mapping instead
    #pragma omp parallel for schedule(dynamic, 1)
    for (int i = 0; i < n; i++) {
        const uint8_t *src;
        memcpy(&src, sp[i].slot, sizeof src);
        size_t done = 0;
        while (sp[i].fd >= 0 && done < sp[i].bytes) {
            ssize_t r = pread(sp[i].fd, sp[i].dst + done, sp[i].bytes - done, (off_t)(src - sp[i].map->data) + (off_t)done);
            if (r < 0 && errno == EINTR) continue;
            if (r <= 0) break;
            done += (size_t)r;
        }
        if (done < sp[i].bytes) memcpy(sp[i].dst + done, src + done, sp[i].bytes - done);
        drop_mapped(m, src, sp[i].bytes);
    }
    for (int i = 0; i < n; i++) {
        memcpy(sp[i].slot, &sp[i].dst, sizeof sp[i].dst);
        int first = 1; // each file closed once
        for (int j = 0; j < i && first; j++) first = sp[j].fd != sp[i].fd;
        if (first && sp[i].fd >= 0) close(sp[i].fd);
    }
    if (tied) m->embed.data = m->lm_head.data;
    free(sp);
}

gn_status gn_model_load(gn_model **out, const char *path, const gn_load_opts *opts) {
    *out = NULL;
    gn_model *m = gn_calloc(1, sizeof *m);
    m->path = gn_strdup(path);
    if (opts) m->opts = *opts;
    m->wdtype = m->opts.weight_dtype == GN_DTYPE_BF16 ? GN_DTYPE_BF16 : GN_DTYPE_F32;
    gn_tensor_table_init(&m->tt);
    gn_status st;
    char *dir = NULL, *cfgp = NULL;
    if (!is_dir(path) && !is_file(path)) { st = gn_err(GN_ERR_IO, "%s: no such file or folder", path); goto fail; }
    if (is_file(path) && (file_magic_is(path, "GGUF", 4) || ends_with(path, ".gguf"))) {
        if ((st = gn_gguf_open(&m->gguf, path))) goto fail;
        m->source = "gguf";
        if ((st = config_from_gguf(&m->cfg, m->gguf, path))) goto fail;
        if ((st = bind_weights(m, &m->gguf->tensors, &GGUF_NAMES))) goto fail;
        if (gn_gguf_get(m->gguf, "tokenizer.ggml.model") && (st = gn_tokenizer_from_gguf(&m->tok, m->gguf))) goto fail;
    } else {
        const char *single = NULL;
        if (is_dir(path)) dir = gn_strdup(path);
        else {
            const char *slash = strrchr(path, '/');
            dir = slash ? gn_strndup(path, (size_t)(slash - path)) : gn_strdup(".");
            if (!ends_with(path, ".json")) single = path;
        }
        cfgp = join(dir, "config.json");
        if (!is_file(cfgp)) { st = gn_err(GN_ERR_IO, "%s: missing config.json beside the weights", dir); goto fail; }
        if ((st = config_from_json(&m->cfg, cfgp))) goto fail;
        m->file_compute_dtype = quant_compute_dtype(cfgp);
        if ((st = load_hf_weights(&m->tt, dir, single, (const char **)&m->source))) goto fail;
        if ((st = bind_weights(m, &m->tt, &HF_NAMES))) goto fail;
        if ((st = read_generation_config(&m->cfg, dir))) goto fail;
        // tokenizer.json first (as AutoTokenizer), tokenizer.model when the .json form is not supported
        char *tj = join(dir, "tokenizer.json"), *tm = join(dir, "tokenizer.model");
        int any = is_file(tj) || is_file(tm);
        free(tj);
        free(tm);
        if (any && (st = gn_tokenizer_load(&m->tok, dir))) goto fail;
    }
    if ((st = init_rope(m))) goto fail;
    pin_weights(m);
    count_params(m);
    if (m->tok && m->cfg.bos_id < 0) m->cfg.bos_id = gn_tokenizer_bos(m->tok);
    if (m->tok && m->cfg.eos_id < 0) m->cfg.eos_id = gn_tokenizer_eos(m->tok);
    if (m->cfg.eos_id >= 0 && m->cfg.n_eos == 0) m->cfg.eos_ids[m->cfg.n_eos++] = m->cfg.eos_id;
    if (m->opts.device == GN_DEVICE_CUDA && (st = gn_cuda_model_attach(m))) goto fail; // src/cuda/
    free(dir);
    free(cfgp);
    *out = m;
    return GN_OK;
fail:
    free(dir);
    free(cfgp);
    gn_model_free(m);
    return st;
}

void gn_model_free(gn_model *m) {
    if (!m) return;
    if (m->cuda) gn_cuda_model_detach(m);
    for (int i = 0; i < m->nowned; i++) free(m->owned[i]);
    free(m->owned);
    free(m->layers);
    for (int i = 0; i < m->n_q4; i++) gn_quant4_free(&m->q4[i]);
    free(m->q4);
    gn_tensor_table_free(&m->tt);
    if (m->gguf) gn_gguf_free(m->gguf);
    if (m->tok) gn_tokenizer_free(m->tok);
    free(m->path);
    free(m);
}

const gn_config *gn_model_config(const gn_model *m) { return &m->cfg; }
const gn_tokenizer *gn_model_tokenizer(const gn_model *m) { return m->tok; }

char *gn_model_describe(const gn_model *m) {
    const gn_config *c = &m->cfg;
    const gn_tensor_table *tt = m->gguf ? &m->gguf->tensors : &m->tt;
    int64_t count[GN_DTYPE_COUNT] = {0};
    size_t bytes = 0;
    for (int i = 0; i < tt->n; i++) {
        if ((int)tt->t[i].dtype < GN_DTYPE_COUNT) count[tt->t[i].dtype]++;
        bytes += tt->t[i].nbytes;
    }
    size_t cap = 4096, o = 0;
    char *s = gn_malloc(cap);
#define OUT(...) do { if (o < cap) o += (size_t)snprintf(s + o, cap - o, __VA_ARGS__); } while (0)
    OUT("model: %s\nformat: %s\n", m->path, m->source);
    OUT("architecture: llama\nhidden_size: %d\nintermediate_size: %d\nnum_hidden_layers: %d\n", c->dim, c->hidden_dim,
        c->n_layers);
    OUT("num_attention_heads: %d\nnum_key_value_heads: %d\nhead_dim: %d\nvocab_size: %d\n", c->n_heads,
        c->n_kv_heads, c->head_dim, c->vocab_size);
    OUT("max_position_embeddings: %d\nrms_norm_eps: %g\nrope_theta: %g\n", c->max_seq, c->norm_eps, c->rope_theta);
    OUT("rope_scaling: %s", c->rope_scaling == GN_ROPE_LINEAR ? "linear" : c->rope_scaling == GN_ROPE_LLAMA3 ? "llama3" : "none");
    if (c->rope_scaling) OUT(" (factor %g)", c->rope_factor);
    OUT("\nrope_layout: %s\ntie_word_embeddings: %s\n", c->rope_interleaved ? "interleaved (GGUF)" : "rotate_half (HF)",
        c->tie_embeddings ? "true" : "false");
    OUT("bos_token_id: %d\neos_token_id: %d\npad_token_id: %d\n", c->bos_id, c->eos_id, c->pad_id);
    OUT("stop_token_ids:");
    for (int k = 0; k < c->n_eos; k++) OUT(" %d", c->eos_ids[k]);
    OUT("\n");
    OUT("tensors: %d (", tt->n);
    int first = 1;
    for (int d = 0; d < GN_DTYPE_COUNT; d++)
        if (count[d]) { OUT("%s%s: %lld", first ? "" : ", ", gn_dtype_name((gn_dtype)d), (long long)count[d]); first = 0; }
    OUT(")\nfile tensor bytes: %zu\nparameters: %lld\ncompute weights: %s, %zu bytes\n", bytes, (long long)m->n_params,
        gn_dtype_name(m->wdtype), m->weight_bytes);
    OUT("embedding: %s (%s head", gn_dtype_name(m->embed.dtype), c->tie_embeddings ? "tied" : "untied");
    if (!c->tie_embeddings) OUT(": %s", m->lm_head.q4 ? "4-bit" : gn_dtype_name(m->lm_head.dtype));
    OUT(")\n");
    if (m->n_q4 > 0) {
        const gn_quant4_state *q = &m->q4[0];
        double bits = 0, n = 0;
        for (int i = 0; i < m->n_q4; i++) { bits += gn_quant4_bits_per_param(&m->q4[i]) * (double)m->q4[i].nelem; n += (double)m->q4[i].nelem; }
        OUT("4-bit linear weights: %d tensors, %s, blocksize %d, %s, compute %s: %.3f bits per parameter\n", m->n_q4,
            q->quant_type == GN_QUANT_FP4 ? "fp4" : "nf4", q->blocksize, q->nested ? "double quantization" : "f32 absmax",
            gn_dtype_name(q->wdtype), n > 0 ? bits / n : 0.0);
    }
    OUT("resident weight bytes: %zu\n", m->weight_bytes);
    OUT("copied out of the file mapping: %zu bytes\n", m->pinned_bytes);
    gn_tok_kind tk = m->tok ? gn_tokenizer_kind(m->tok) : GN_TOK_SPM;
    OUT("tokenizer: %s\n", !m->tok ? "none" : tk == GN_TOK_SPM ? "sentencepiece-bpe" : tk == GN_TOK_JSON_BPE
        ? "sentencepiece-style-bpe (tokenizer.json)" : "byte-level-bpe");
#undef OUT
    return s;
}
