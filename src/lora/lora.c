/*
 * lora.c — reading PEFT adapters (adapter_config.json + adapter_model.safetensors
 * or adapter_model.bin), applying them unmerged in the forward pass, and saving
 * them in PEFT's own layout.
 *
 * Reading follows PEFT's rules: unknown config keys are ignored, missing ones
 * take PEFT's defaults; lora_alpha may be int or float; the rank of each module
 * comes from its tensors (r / rank_pattern only say what they must be), alpha
 * from alpha_pattern when a key matches the module name (PEFT matches
 * `(.*\.)?KEY$` against the full module name), else lora_alpha.
 * Tensor names: base_model.model.model.layers.{L}.{self_attn|mlp}.{m}.lora_{A|B}[.default].weight
 */
#include "lora.h"
#include "../model/llama.h"

#include <cjson/cJSON.h>  // adapter_config.json
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>        // alpha_pattern / rank_pattern / target_modules regexes
#include <math.h>         // sqrtf
#include <stdio.h>        // snprintf
#include <stdlib.h>       // free
#include <sys/stat.h>     // stat, mkdir
#include <errno.h>        // errno

#include "../formats/gguf.h" // gn_gguf_permute_qk

const char *const GN_MOD_NAMES[GN_N_MODS] = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
const char *const GN_MOD_PATHS[GN_N_MODS] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                             "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"};

// ----------------------------------------------------------------------------
// config

// Does PEFT's pattern key match this module name? (re.match(rf"(.*\.)?{key}$", name))
static int pattern_matches(const char *key, const char *name) {
    size_t n = strlen(key) + 16;
    char *pat = gn_malloc(n);
    snprintf(pat, n, "^(.*\\.)?%s$", key);
    int errc;
    PCRE2_SIZE erro;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED, 0, &errc, &erro, NULL);
    free(pat);
    if (!re) return 0;
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
    // the key comes from the file: bound the backtracking a hostile pattern can
    // cause (module names are short; PEFT's own keys need a few hundred steps)
    pcre2_match_context *mc = pcre2_match_context_create(NULL);
    if (mc) pcre2_set_match_limit(mc, 100000);
    int rc = pcre2_match(re, (PCRE2_SPTR)name, strlen(name), 0, 0, md, mc);
    pcre2_match_context_free(mc);
    pcre2_match_data_free(md);
    pcre2_code_free(re);
    return rc >= 0;
}

// Value of a *_pattern dict entry matching `name`, or dflt.
static double pattern_value(const cJSON *pat, const char *name, double dflt) {
    const cJSON *e;
    if (!cJSON_IsObject(pat)) return dflt;
    cJSON_ArrayForEach(e, pat) if (cJSON_IsNumber(e) && e->string && pattern_matches(e->string, name)) return e->valuedouble;
    return dflt;
}

// ----------------------------------------------------------------------------
// load

static int file_exists(const char *p) { struct stat st; return stat(p, &st) == 0 && S_ISREG(st.st_mode); }

static gn_status load_tensor_f32(const gn_tensor *t, float **out) {
    *out = gn_malloc(sizeof(float) * (size_t)(t->nelem ? t->nelem : 1));
    gn_status st = gn_tensor_to_f32(t, *out);
    if (st) { free(*out); *out = NULL; }
    return st;
}

static int64_t mod_in(const gn_config *c, int k) {
    return k == GN_MOD_O ? (int64_t)c->n_heads * c->head_dim : k == GN_MOD_DOWN ? c->hidden_dim : c->dim;
}
static int64_t mod_out(const gn_config *c, int k) {
    switch (k) {
    case GN_MOD_Q: return (int64_t)c->n_heads * c->head_dim;
    case GN_MOD_K: case GN_MOD_V: return (int64_t)c->n_kv_heads * c->head_dim;
    case GN_MOD_GATE: case GN_MOD_UP: return c->hidden_dim;
    default: return c->dim;
    }
}

// Splits "…layers.{L}.{path}.lora_{A|B}[.adapter].weight" -> L, module index, A/B.
static int parse_key(const char *key, int *layer, int *mod, int *isB) {
    const char *p = strstr(key, "layers.");
    if (!p) return 0;
    p += 7;
    char *end;
    long L = strtol(p, &end, 10);
    if (end == p || *end != '.' || L < 0 || L > 100000) return 0;
    p = end + 1;
    for (int k = 0; k < GN_N_MODS; k++) {
        size_t n = strlen(GN_MOD_PATHS[k]);
        if (strncmp(p, GN_MOD_PATHS[k], n) || p[n] != '.') continue;
        const char *q = p + n + 1;
        if (!strncmp(q, "lora_A.", 7)) *isB = 0;
        else if (!strncmp(q, "lora_B.", 7)) *isB = 1;
        else return 0;
        size_t ql = strlen(q);
        if (ql < 7 || strcmp(q + ql - 7, ".weight")) return 0;
        *layer = (int)L;
        *mod = k;
        return 1;
    }
    return -1; // a layer tensor of a module LLaMA does not have
}


// n floats as bf16 in *dst (allocated) when each is exactly a bf16 value; else *dst = NULL
static void bf16_if_exact(const float *src, int64_t n, uint16_t **dst) {
    uint16_t *h = gn_malloc(sizeof(uint16_t) * (size_t)n);
    for (int64_t i = 0; i < n; i++) {
        h[i] = gn_f32_to_bf16(src[i]);
        uint32_t a, b;
        float back = gn_bf16_to_f32(h[i]);
        memcpy(&a, &back, 4);
        memcpy(&b, &src[i], 4);
        if (a != b) { free(h); *dst = NULL; return; }
    }
    *dst = h;
}

// The bf16 copies decode streams every token, moved into one buffer, layer by layer: a
// module's copies are tens to hundreds of KiB each, malloc'd one by one into 4 KiB pages (a
// TLB miss each 4 KiB); one buffer of 4 MiB or more is advised for 2 MiB pages (gn_malloc).
// SmolLM2 with a 38 MB r 64 bf16 adapter, 512-token context: 8.8 -> 8.3 ms a token (Zen 4).
static void pack_bf16(gn_adapter *a) {
    const int n = a->n_layers * GN_N_MODS;
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        const gn_lora_mod *lm = &a->mods[i];
        if (!lm->A16) continue;
        total += ((size_t)lm->r * (size_t)lm->in * 2 + 63) & ~(size_t)63;
        total += ((size_t)lm->out * (size_t)lm->r * 2 + 63) & ~(size_t)63;
    }
    if (!total) return;
    uint8_t *arena = gn_malloc_aligned(total), *p = arena;
    for (int i = 0; i < n; i++) {
        gn_lora_mod *lm = &a->mods[i];
        if (!lm->A16) continue;
        uint16_t **mats[2] = {&lm->A16, &lm->B16};
        const size_t bytes[2] = {(size_t)lm->r * (size_t)lm->in * 2, (size_t)lm->out * (size_t)lm->r * 2};
        for (int k = 0; k < 2; k++) {
            memcpy(p, *mats[k], bytes[k]);
            free(*mats[k]);
            *mats[k] = (uint16_t *)p;
            p += (bytes[k] + 63) & ~(size_t)63;
        }
    }
    a->bf16_arena = arena;
}

// A bf16 adapter (every A and B value a bf16) keeps bf16 copies for decode (lora_row_multi):
// half the bytes read per token; the f32 arrays stay for everything else.
static void keep_bf16(gn_lora_mod *lm) {
    if (!lm->r) return;
    bf16_if_exact(lm->A, (int64_t)lm->r * lm->in, &lm->A16);
    if (lm->A16) bf16_if_exact(lm->B, lm->out * (int64_t)lm->r, &lm->B16);
    if (!lm->B16) { free(lm->A16); lm->A16 = NULL; }
}

gn_status gn_adapter_load(gn_adapter **out, const gn_model *m, const char *path, const char *name) {
    *out = NULL;
    const gn_config *c = &m->cfg;
    char cfgp[4096], wp[4096];
    snprintf(cfgp, sizeof cfgp, "%s/adapter_config.json", path);
    char *text;
    size_t len;
    gn_status st = gn_read_file(cfgp, &text, &len);
    if (st) return st;
    cJSON *j = cJSON_ParseWithLength(text, len);
    free(text);
    if (!cJSON_IsObject(j)) { cJSON_Delete(j); return gn_err(GN_ERR_FORMAT, "%s: invalid JSON (expected an object)", cfgp); }
    gn_adapter *a = gn_calloc(1, sizeof *a);
    a->path = gn_strdup(path);
    a->name = gn_strdup(name ? name : path);
    a->n_layers = c->n_layers;
    a->interleaved = c->rope_interleaved;
    a->n_heads = c->n_heads;
    a->n_kv_heads = c->n_kv_heads;
    a->head_dim = c->head_dim;
    a->mods = gn_calloc((size_t)c->n_layers * GN_N_MODS, sizeof(gn_lora_mod));
    gn_tensor_table tt;
    gn_tensor_table_init(&tt);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, "peft_type");
    if (v && (!cJSON_IsString(v) || strcmp(v->valuestring, "LORA"))) {
        st = gn_err(GN_ERR_UNSUPPORTED, "%s: field 'peft_type': expected \"LORA\"", cfgp);
        goto fail;
    }
    v = cJSON_GetObjectItemCaseSensitive(j, "r");
    if (v && cJSON_IsNumber(v) && !(v->valuedouble >= 1 && v->valuedouble <= 65536)) {
        st = gn_err(GN_ERR_FORMAT, "%s: field 'r' = %g: expected a positive rank up to 65536", cfgp, v->valuedouble);
        goto fail;
    }
    a->r = cJSON_IsNumber(v) ? (int)v->valuedouble : 8; // PEFT's default
    v = cJSON_GetObjectItemCaseSensitive(j, "lora_alpha");
    a->alpha = cJSON_IsNumber(v) ? (float)v->valuedouble : 8.0f;
    a->use_rslora = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "use_rslora"));
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "use_dora"))) {
        st = gn_err(GN_ERR_UNSUPPORTED, "%s: field 'use_dora': DoRA adapters are not supported", cfgp);
        goto fail;
    }
    v = cJSON_GetObjectItemCaseSensitive(j, "modules_to_save");
    if (cJSON_IsArray(v) && cJSON_GetArraySize(v) > 0) {
        st = gn_err(GN_ERR_UNSUPPORTED, "%s: field 'modules_to_save': fully trained modules are not supported", cfgp);
        goto fail;
    }
    const cJSON *rank_pat = cJSON_GetObjectItemCaseSensitive(j, "rank_pattern");
    const cJSON *alpha_pat = cJSON_GetObjectItemCaseSensitive(j, "alpha_pattern");
    snprintf(wp, sizeof wp, "%s/adapter_model.safetensors", path);
    if (file_exists(wp)) st = gn_safetensors_load(&tt, wp);
    else {
        snprintf(wp, sizeof wp, "%s/adapter_model.bin", path);
        if (!file_exists(wp)) {
            st = gn_err(GN_ERR_IO, "%s: no adapter_model.safetensors or adapter_model.bin", path);
            goto fail;
        }
        st = gn_torchbin_load(&tt, wp);
    }
    if (st) goto fail;
    a->file_dtype = GN_DTYPE_F32;
    int nfound = 0;
    for (int i = 0; i < tt.n; i++) {
        const gn_tensor *t = &tt.t[i];
        int L, k, isB;
        int r = parse_key(t->name, &L, &k, &isB);
        if (r == 0) {
            if (strstr(t->name, "lora_")) {
                st = gn_err(GN_ERR_FORMAT, "%s: tensor '%s': not a LoRA weight of a LLaMA linear layer", wp, t->name);
                goto fail;
            }
            continue;
        }
        if (r < 0) {
            st = gn_err(GN_ERR_FORMAT, "%s: tensor '%s': targets a module the base model does not have", wp, t->name);
            goto fail;
        }
        if (L >= c->n_layers) {
            st = gn_err(GN_ERR_SHAPE, "%s: tensor '%s': layer %d, but the base has %d layers", wp, t->name, L, c->n_layers);
            goto fail;
        }
        if (t->ndim != 2) { st = gn_err(GN_ERR_SHAPE, "%s: tensor '%s': expected a 2-D weight", wp, t->name); goto fail; }
        gn_lora_mod *lm = &a->mods[(size_t)L * GN_N_MODS + (size_t)k];
        int64_t in = mod_in(c, k), outd = mod_out(c, k);
        int64_t r_here = isB ? t->shape[1] : t->shape[0];
        int64_t other = isB ? t->shape[0] : t->shape[1];
        if (other != (isB ? outd : in) || r_here <= 0) {
            st = gn_err(GN_ERR_SHAPE, "%s: tensor '%s' has shape [%lld, %lld]; the base's %s expects [%s]", wp, t->name,
                        (long long)t->shape[0], (long long)t->shape[1], GN_MOD_NAMES[k],
                        isB ? "out_features, r" : "r, in_features");
            goto fail;
        }
        if (lm->r && lm->r != r_here) {
            st = gn_err(GN_ERR_SHAPE, "%s: tensor '%s': rank %lld disagrees with its lora_%s partner (rank %d)", wp, t->name,
                        (long long)r_here, isB ? "A" : "B", lm->r);
            goto fail;
        }
        lm->r = (int)r_here;
        lm->in = in;
        lm->out = outd;
        a->file_dtype = t->dtype;
        if ((st = load_tensor_f32(t, isB ? &lm->B : &lm->A))) goto fail;
        nfound++;
    }
    if (nfound == 0) { st = gn_err(GN_ERR_FORMAT, "%s: no LoRA tensors found", wp); goto fail; }
    char mname[128];
    for (int L = 0; L < c->n_layers; L++)
        for (int k = 0; k < GN_N_MODS; k++) {
            gn_lora_mod *lm = &a->mods[(size_t)L * GN_N_MODS + (size_t)k];
            if (!lm->r) continue;
            snprintf(mname, sizeof mname, "model.layers.%d.%s", L, GN_MOD_PATHS[k]);
            if (!lm->A || !lm->B) {
                st = gn_err(GN_ERR_FORMAT, "%s: %s: missing lora_%s.weight", wp, mname, lm->A ? "B" : "A");
                goto fail;
            }
            double want_r = pattern_value(rank_pat, mname, a->r);
            if (want_r != (double)lm->r)
                gn_log(GN_LOG_WARN, "%s: %s has rank %d but the config says %g; using the tensors' rank", wp, mname, lm->r,
                       want_r);
            float alpha = (float)pattern_value(alpha_pat, mname, a->alpha);
            lm->scale = a->use_rslora ? alpha / sqrtf((float)lm->r) : alpha / (float)lm->r;
        }
    if (c->rope_interleaved) // GGUF base: q/k rows are in interleaved-pair order, permute lora_B to match
        for (int L = 0; L < c->n_layers; L++)
            for (int k = GN_MOD_Q; k <= GN_MOD_K; k++) {
                gn_lora_mod *lm = &a->mods[(size_t)L * GN_N_MODS + (size_t)k];
                if (lm->r) gn_gguf_permute_qk(lm->B, k == GN_MOD_Q ? c->n_heads : c->n_kv_heads, c->head_dim, lm->r, 1);
            }
    for (int i = 0; i < a->n_layers * GN_N_MODS; i++) keep_bf16(&a->mods[i]);
    pack_bf16(a);
    gn_tensor_table_free(&tt);
    cJSON_Delete(j);
    *out = a;
    return GN_OK;
fail:
    gn_tensor_table_free(&tt);
    cJSON_Delete(j);
    gn_adapter_free(a);
    return st;
}

void gn_adapter_free(gn_adapter *a) {
    if (!a) return;
    if (a->mods && !a->borrowed)
        for (int i = 0; i < a->n_layers * GN_N_MODS; i++) {
            free(a->mods[i].A);
            free(a->mods[i].B);
            if (!a->bf16_arena) {
                free(a->mods[i].A16);
                free(a->mods[i].B16);
            }
        }
    free(a->bf16_arena);
    free(a->mods);
    free(a->path);
    free(a->name);
    free(a);
}

const char *gn_adapter_name(const gn_adapter *a) { return a->name; }

// ----------------------------------------------------------------------------
// save in PEFT's layout

// Writes dir/adapter_model.safetensors (keys and metadata as PEFT writes them)
// and dir/adapter_config.json (PEFT's fields, sorted keys). dtype: F32 or BF16.
gn_status gn_adapter_save(const gn_adapter *a, const char *dir, gn_dtype dtype, const char *base_model) {
    if (dtype != GN_DTYPE_F32 && dtype != GN_DTYPE_BF16 && dtype != GN_DTYPE_F16)
        return gn_err(GN_ERR_ARG, "adapter save: dtype must be f32, f16 or bf16");
    gn_status mst = gn_mkdir_p(dir);
    if (mst) return mst;
    int n = 0;
    for (int i = 0; i < a->n_layers * GN_N_MODS; i++) n += a->mods[i].r ? 2 : 0;
    gn_tensor_out *ts = gn_calloc((size_t)n + 1, sizeof *ts);
    char **names = gn_calloc((size_t)n + 1, sizeof(char *));
    void **bufs = gn_calloc((size_t)n + 1, sizeof(void *));
    cJSON *targets = cJSON_CreateArray();
    int have[GN_N_MODS] = {0};
    int k = 0;
    for (int L = 0; L < a->n_layers; L++)
        for (int m = 0; m < GN_N_MODS; m++) {
            const gn_lora_mod *lm = &a->mods[(size_t)L * GN_N_MODS + (size_t)m];
            if (!lm->r) continue;
            have[m] = 1;
            for (int isB = 0; isB < 2; isB++) {
                char nm[256];
                snprintf(nm, sizeof nm, "base_model.model.model.layers.%d.%s.lora_%s.weight", L, GN_MOD_PATHS[m],
                         isB ? "B" : "A");
                int64_t rows = isB ? lm->out : lm->r, cols = isB ? lm->r : lm->in;
                size_t ne = (size_t)(rows * cols);
                const float *src = isB ? lm->B : lm->A;
                float *unperm = NULL;
                if (isB && a->interleaved && (m == GN_MOD_Q || m == GN_MOD_K)) { // files hold HF row order
                    unperm = gn_malloc(ne * 4);
                    memcpy(unperm, src, ne * 4);
                    gn_gguf_permute_qk(unperm, m == GN_MOD_Q ? a->n_heads : a->n_kv_heads, a->head_dim, lm->r, 0);
                    src = unperm;
                }
                void *buf = NULL; // owned here (freed below); f32 straight from the adapter needs no copy
                const void *data;
                if (dtype == GN_DTYPE_F32) {
                    buf = unperm, unperm = NULL;
                    data = buf ? buf : src;
                } else {
                    uint16_t *h = gn_malloc(ne * 2);
                    for (size_t i = 0; i < ne; i++) h[i] = dtype == GN_DTYPE_BF16 ? gn_f32_to_bf16(src[i]) : gn_f32_to_f16(src[i]);
                    data = buf = h;
                }
                free(unperm);
                names[k] = gn_strdup(nm);
                bufs[k] = buf;
                ts[k] = (gn_tensor_out){names[k], dtype, 2, {rows, cols}, data, ne * (dtype == GN_DTYPE_F32 ? 4 : 2)};
                k++;
            }
        }
    for (int m = 0; m < GN_N_MODS; m++) if (have[m]) cJSON_AddItemToArray(targets, cJSON_CreateString(GN_MOD_NAMES[m]));
    char path[4096];
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    const char *meta[] = {"format", "pt"};
    gn_status st = gn_safetensors_save(path, ts, k, meta, 1);
    if (!st) {
        // adapter_config.json: PEFT's fields (cJSON keeps insertion order; we insert sorted)
        cJSON *j = cJSON_CreateObject();
        cJSON_AddItemToObject(j, "alpha_pattern", cJSON_CreateObject());
        cJSON_AddNullToObject(j, "auto_mapping");
        if (base_model) cJSON_AddStringToObject(j, "base_model_name_or_path", base_model);
        else cJSON_AddNullToObject(j, "base_model_name_or_path");
        cJSON_AddStringToObject(j, "bias", "none");
        cJSON_AddFalseToObject(j, "fan_in_fan_out");
        cJSON_AddTrueToObject(j, "inference_mode");
        cJSON_AddTrueToObject(j, "init_lora_weights");
        cJSON_AddNullToObject(j, "layers_pattern");
        cJSON_AddNullToObject(j, "layers_to_transform");
        {
            char al[32];
            snprintf(al, sizeof al, "%.1f", (double)a->alpha);
            if ((double)(float)atof(al) != (double)a->alpha) snprintf(al, sizeof al, "%.9g", (double)a->alpha);
            cJSON_AddRawToObject(j, "lora_alpha", al); // a float, as qlora writes it (16.0)
        }
        cJSON_AddNumberToObject(j, "lora_dropout", 0.0);
        cJSON_AddNullToObject(j, "modules_to_save");
        cJSON_AddStringToObject(j, "peft_type", "LORA");
        cJSON_AddNumberToObject(j, "r", a->r);
        cJSON_AddItemToObject(j, "rank_pattern", cJSON_CreateObject());
        cJSON_AddNullToObject(j, "revision");
        cJSON_AddItemToObject(j, "target_modules", targets);
        targets = NULL;
        cJSON_AddStringToObject(j, "task_type", "CAUSAL_LM");
        cJSON_AddBoolToObject(j, "use_rslora", a->use_rslora);
        char *txt = cJSON_Print(j);
        cJSON_Delete(j);
        snprintf(path, sizeof path, "%s/adapter_config.json", dir);
        st = gn_write_file_atomic(path, txt, strlen(txt));
        free(txt);
    }
    cJSON_Delete(targets);
    for (int i = 0; i < k; i++) { free(names[i]); free(bufs[i]); }
    free(names);
    free(bufs);
    free(ts);
    return st;
}
