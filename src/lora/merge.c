/*
 * merge.c — folding a LoRA adapter into the base weights and writing the
 * result as an HF folder (model.safetensors + config.json + tokenizer files):
 *   W' = W + s * B @ A       computed in float32, stored in the requested dtype.
 * A GGUF base is written back in HF row order (q/k rows un-permuted), so the
 * folder loads in transformers like any HF checkpoint.
 */
#include "lora.h"
#include "../model/llama.h"

#include <cjson/cJSON.h> // config.json
#include <errno.h>       // errno
#include <stdio.h>       // snprintf
#include <stdlib.h>      // free
#include <sys/stat.h>    // mkdir

#include "../formats/gguf.h" // gn_gguf_permute_qk

// dst (rows, cols) = weight of m as float32
static void mat_to_f32(const gn_mat *w, float *dst) { gn_linear_rows_f32(w, 0, w->rows, dst); }

// w (OC, IC) += s * B (OC, r) @ A (r, IC)
static void add_delta(float *w, const gn_lora_mod *lm) {
    int64_t r = lm->r, IC = lm->in, OC = lm->out;
    float *At = gn_malloc(sizeof(float) * (size_t)(IC * r));
    for (int64_t i = 0; i < r; i++)
        for (int64_t j = 0; j < IC; j++) At[j * r + i] = lm->A[i * IC + j];
    float *d = gn_malloc(sizeof(float) * (size_t)(OC * IC));
    gn_mat at = {GN_DTYPE_F32, IC, r, At, NULL};
    gn_matmul(d, lm->B, &at, OC); // (OC, IC) = B (OC, r) @ At^T
    for (size_t i = 0; i < (size_t)(OC * IC); i++) w[i] += lm->scale * d[i];
    free(d);
    free(At);
}

static gn_status copy_file(const char *src, const char *dst) {
    char *buf;
    size_t n;
    gn_status st = gn_read_file(src, &buf, &n);
    if (st) return st;
    st = gn_write_file_atomic(dst, buf, n);
    free(buf);
    return st;
}

static char *config_json(const gn_model *m, gn_dtype dt) {
    const gn_config *c = &m->cfg;
    cJSON *j = NULL;
    if (!m->gguf) { // start from the base's own config.json so unknown fields survive
        char p[4096];
        const char *slash = strrchr(m->path, '/');
        struct stat st;
        if (stat(m->path, &st) == 0 && S_ISDIR(st.st_mode)) snprintf(p, sizeof p, "%s/config.json", m->path);
        else snprintf(p, sizeof p, "%.*s/config.json", slash ? (int)(slash - m->path) : 1, slash ? m->path : ".");
        char *txt;
        size_t n;
        if (gn_read_file(p, &txt, &n) == GN_OK) { j = cJSON_ParseWithLength(txt, n); free(txt); }
    }
    if (!j) {
        j = cJSON_CreateObject();
        cJSON *arch = cJSON_AddArrayToObject(j, "architectures");
        cJSON_AddItemToArray(arch, cJSON_CreateString("LlamaForCausalLM"));
        cJSON_AddStringToObject(j, "model_type", "llama");
        cJSON_AddNumberToObject(j, "hidden_size", c->dim);
        cJSON_AddNumberToObject(j, "intermediate_size", c->hidden_dim);
        cJSON_AddNumberToObject(j, "num_hidden_layers", c->n_layers);
        cJSON_AddNumberToObject(j, "num_attention_heads", c->n_heads);
        cJSON_AddNumberToObject(j, "num_key_value_heads", c->n_kv_heads);
        cJSON_AddNumberToObject(j, "head_dim", c->head_dim);
        cJSON_AddNumberToObject(j, "vocab_size", c->vocab_size);
        cJSON_AddNumberToObject(j, "max_position_embeddings", c->max_seq);
        cJSON_AddNumberToObject(j, "rms_norm_eps", c->norm_eps);
        cJSON_AddNumberToObject(j, "rope_theta", c->rope_theta);
        cJSON_AddStringToObject(j, "hidden_act", "silu");
        cJSON_AddBoolToObject(j, "tie_word_embeddings", c->tie_embeddings);
        if (c->rope_scaling == GN_ROPE_LINEAR) {
            cJSON *rs = cJSON_AddObjectToObject(j, "rope_scaling");
            cJSON_AddStringToObject(rs, "rope_type", "linear");
            cJSON_AddNumberToObject(rs, "factor", c->rope_factor);
        }
        if (c->bos_id >= 0) cJSON_AddNumberToObject(j, "bos_token_id", c->bos_id);
        if (c->eos_id >= 0) cJSON_AddNumberToObject(j, "eos_token_id", c->eos_id);
        if (c->pad_id >= 0) cJSON_AddNumberToObject(j, "pad_token_id", c->pad_id);
    }
    cJSON_DeleteItemFromObject(j, "tie_word_embeddings"); // a head made 4-bit from the tied table is its own now
    cJSON_AddBoolToObject(j, "tie_word_embeddings", c->tie_embeddings);
    cJSON_DeleteItemFromObject(j, "quantization_config");
    // the base's spelling: transformers >= 4.56 writes "dtype", older "torch_dtype"
    int old_name = cJSON_GetObjectItemCaseSensitive(j, "torch_dtype") && !cJSON_GetObjectItemCaseSensitive(j, "dtype");
    cJSON_DeleteItemFromObject(j, "torch_dtype");
    cJSON_DeleteItemFromObject(j, "dtype");
    cJSON_AddStringToObject(j, old_name ? "torch_dtype" : "dtype", gn_dtype_torch_name(dt));
    char *s = cJSON_Print(j);
    cJSON_Delete(j);
    return s;
}

// The base's tokenizer and generation files travel along (HF bases only).
static gn_status copy_side_files(const gn_model *m, const char *dir) {
    if (m->gguf) return GN_OK;
    gn_status st = GN_OK;
    static const char *const extra[] = {"tokenizer.json", "tokenizer.model", "tokenizer_config.json",
                                        "special_tokens_map.json", "generation_config.json",
                                        "chat_template.jinja"};
    struct stat sb;
    char base[4096];
    if (stat(m->path, &sb) == 0 && S_ISDIR(sb.st_mode)) snprintf(base, sizeof base, "%s", m->path);
    else {
        const char *slash = strrchr(m->path, '/');
        snprintf(base, sizeof base, "%.*s", slash ? (int)(slash - m->path) : 1, slash ? m->path : ".");
    }
    for (size_t i = 0; i < sizeof extra / sizeof extra[0]; i++) {
        char src[4200], dst[4200];
        snprintf(src, sizeof src, "%s/%s", base, extra[i]);
        snprintf(dst, sizeof dst, "%s/%s", dir, extra[i]);
        if (stat(src, &sb) == 0 && (st = copy_file(src, dst))) return st;
    }
    return GN_OK;
}

gn_status gn_model_save_merged(const gn_model *m, const gn_adapter *a, const char *dir, gn_dtype dt) {
    if (dt != GN_DTYPE_F32 && dt != GN_DTYPE_F16 && dt != GN_DTYPE_BF16)
        return gn_err(GN_ERR_ARG, "merge: --dtype for safetensors must be f32, f16 or bf16");
    gn_status mst = gn_mkdir_p(dir);
    if (mst) return mst;
    const gn_config *c = &m->cfg;
    int nt = 2 + (c->tie_embeddings ? 0 : 1) + 9 * c->n_layers;
    gn_tensor_out *ts = gn_calloc((size_t)nt, sizeof *ts);
    void **bufs = gn_calloc((size_t)nt, sizeof(void *));
    char **names = gn_calloc((size_t)nt, sizeof(char *));
    int k = 0;
    size_t es = dt == GN_DTYPE_F32 ? 4 : 2;
    // adds one tensor from f32 data (consumed: freed or kept as the output buffer)
#define ADD(NAME, F32, R, C) do { \
        size_t ne_ = (size_t)(R) * (size_t)((C) ? (C) : 1); void *b_ = (F32); \
        if (dt != GN_DTYPE_F32) { uint16_t *h_ = gn_malloc(ne_ * 2); \
            for (size_t i_ = 0; i_ < ne_; i_++) h_[i_] = dt == GN_DTYPE_BF16 ? gn_f32_to_bf16((F32)[i_]) : gn_f32_to_f16((F32)[i_]); \
            free(F32); b_ = h_; } \
        names[k] = gn_strdup(NAME); bufs[k] = b_; \
        ts[k] = (gn_tensor_out){names[k], dt, (C) ? 2 : 1, {(R), (C)}, b_, ne_ * es}; k++; } while (0)
    float *f = gn_malloc(sizeof(float) * (size_t)(m->embed.rows * m->embed.cols));
    mat_to_f32(&m->embed, f);
    ADD("model.embed_tokens.weight", f, m->embed.rows, m->embed.cols);
    f = gn_malloc(sizeof(float) * (size_t)c->dim);
    memcpy(f, m->final_norm, sizeof(float) * (size_t)c->dim);
    ADD("model.norm.weight", f, c->dim, 0);
    if (!c->tie_embeddings) {
        f = gn_malloc(sizeof(float) * (size_t)(m->lm_head.rows * m->lm_head.cols));
        mat_to_f32(&m->lm_head, f);
        ADD("lm_head.weight", f, m->lm_head.rows, m->lm_head.cols);
    }
    char nm[256];
    for (int l = 0; l < c->n_layers; l++) {
        const gn_layer *L = &m->layers[l];
        const gn_mat *mats[GN_N_MODS] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
        snprintf(nm, sizeof nm, "model.layers.%d.input_layernorm.weight", l);
        f = gn_malloc(sizeof(float) * (size_t)c->dim);
        memcpy(f, L->attn_norm, sizeof(float) * (size_t)c->dim);
        ADD(nm, f, c->dim, 0);
        snprintf(nm, sizeof nm, "model.layers.%d.post_attention_layernorm.weight", l);
        f = gn_malloc(sizeof(float) * (size_t)c->dim);
        memcpy(f, L->ffn_norm, sizeof(float) * (size_t)c->dim);
        ADD(nm, f, c->dim, 0);
        for (int mi = 0; mi < GN_N_MODS; mi++) {
            const gn_mat *w = mats[mi];
            f = gn_malloc(sizeof(float) * (size_t)(w->rows * w->cols));
            mat_to_f32(w, f);
            if (a && a->mods[(size_t)l * GN_N_MODS + (size_t)mi].r) add_delta(f, &a->mods[(size_t)l * GN_N_MODS + (size_t)mi]);
            if (c->rope_interleaved && (mi == GN_MOD_Q || mi == GN_MOD_K))
                gn_gguf_permute_qk(f, mi == GN_MOD_Q ? c->n_heads : c->n_kv_heads, c->head_dim, w->cols, 0);
            snprintf(nm, sizeof nm, "model.layers.%d.%s.weight", l, GN_MOD_PATHS[mi]);
            ADD(nm, f, w->rows, w->cols);
        }
    }
#undef ADD
    char p[4096];
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    const char *meta[] = {"format", "pt"};
    gn_status st = gn_safetensors_save(p, ts, k, meta, 1);
    for (int i = 0; i < k; i++) { free(bufs[i]); free(names[i]); }
    free(bufs); free(names); free(ts);
    if (st) return st;
    char *cj = config_json(m, dt);
    snprintf(p, sizeof p, "%s/config.json", dir);
    st = gn_write_file_atomic(p, cj, strlen(cj));
    free(cj);
    if (st) return st;
    return copy_side_files(m, dir);
    return GN_OK;
}

// ----------------------------------------------------------------------------
// 4-bit folder: the model's tensors in checkpoint order, written in the layout
// transformers + bitsandbytes use (quant/checkpoint.c)

// w (any dtype gn_mat_rows_f32 reads) as a new buffer of dtype dt (F32 or BF16)
static void *widen(const gn_mat *w, gn_dtype dt) {
    if (dt == GN_DTYPE_BF16) return gn_mat_to_bf16(w);
    float *f = gn_malloc(sizeof(float) * (size_t)(w->rows * w->cols));
    mat_to_f32(w, f);
    return f;
}

gn_status gn_model_save_4bit(const gn_model *m, const char *dir) {
    if (m->n_q4 == 0) return gn_err(GN_ERR_ARG, "quantize: the model has no 4-bit layers (load it with --4bit)");
    gn_status st = gn_mkdir_p(dir);
    if (st) return st;
    const gn_config *c = &m->cfg;
    int cap = 3 + c->n_layers * (2 + GN_N_MODS), k = 0;
    gn_quant4_item *it = gn_calloc((size_t)cap, sizeof *it);
    char **names = gn_calloc((size_t)cap, sizeof(char *));
    // plain tensors in the model's compute dtype (f32 unless loaded with --dtype bf16)
    gn_dtype pdt = m->wdtype;
    size_t pes = pdt == GN_DTYPE_BF16 ? 2 : 4;
    // a matrix in another dtype (a GGUF's Q8_0 embedding, kept in its blocks) is widened to pdt into a buffer of its own
    void **widened = gn_calloc((size_t)cap, sizeof(void *));
#define PLAIN(NAME, MAT) do { names[k] = gn_strdup(NAME); const void *d_ = (MAT)->data; \
        if ((MAT)->dtype != pdt) d_ = widened[k] = widen(MAT, pdt); \
        it[k].t = (gn_tensor_out){names[k], pdt, 2, {(MAT)->rows, (MAT)->cols}, d_, (size_t)((MAT)->rows * (MAT)->cols) * pes}; k++; } while (0)
#define VEC(NAME, PTR) do { names[k] = gn_strdup(NAME); \
        it[k].t = (gn_tensor_out){names[k], GN_DTYPE_F32, 1, {c->dim}, (PTR), (size_t)c->dim * 4}; k++; } while (0)
    char nm[256];
    PLAIN("model.embed_tokens.weight", &m->embed);
    VEC("model.norm.weight", m->final_norm);
    if (!c->tie_embeddings && m->lm_head.q4) { // transformers + bnb with llm_int8_skip_modules=[]
        names[k] = gn_strdup("lm_head");
        it[k].t.name = names[k];
        it[k].q4 = m->lm_head.q4;
        k++;
    } else if (!c->tie_embeddings) PLAIN("lm_head.weight", &m->lm_head);
    for (int l = 0; l < c->n_layers && !st; l++) {
        const gn_layer *L = &m->layers[l];
        snprintf(nm, sizeof nm, "model.layers.%d.input_layernorm.weight", l); VEC(nm, L->attn_norm);
        snprintf(nm, sizeof nm, "model.layers.%d.post_attention_layernorm.weight", l); VEC(nm, L->ffn_norm);
        const gn_mat *mats[GN_N_MODS] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
        for (int mi = 0; mi < GN_N_MODS; mi++) {
            snprintf(nm, sizeof nm, "model.layers.%d.%s", l, GN_MOD_PATHS[mi]);
            if (!mats[mi]->q4) { // not quantized: plain weight
                char wn[300];
                snprintf(wn, sizeof wn, "%s.weight", nm);
                PLAIN(wn, mats[mi]);
                continue;
            }
            if (c->rope_interleaved && (mi == GN_MOD_Q || mi == GN_MOD_K)) {
                st = gn_err(GN_ERR_UNSUPPORTED, "quantize: GGUF bases are stored in llama.cpp's q/k row order; "
                            "merge to an HF folder first (guanaco merge -m BASE -o DIR) and quantize that");
                break;
            }
            names[k] = gn_strdup(nm);
            it[k].t.name = names[k];
            it[k].q4 = mats[mi]->q4;
            k++;
        }
    }
#undef PLAIN
#undef VEC
    char p[4096];
    if (!st) {
        snprintf(p, sizeof p, "%s/model.safetensors", dir);
        st = gn_quant4_save_safetensors(p, it, k);
    }
    if (!st) {
        char *base = config_json(m, pdt), *txt = gn_quant4_hf_config(base, &m->q4[0], m->lm_head.q4 != NULL);
        free(base);
        snprintf(p, sizeof p, "%s/config.json", dir);
        st = txt ? gn_write_file_atomic(p, txt, strlen(txt)) : gn_err(GN_ERR_FORMAT, "quantize: config.json does not parse");
        free(txt);
    }
    if (!st) st = copy_side_files(m, dir);
    for (int i = 0; i < k; i++) { free(names[i]); free(widened[i]); }
    free(widened);
    free(names);
    free(it);
    return st;
}

// ----------------------------------------------------------------------------
// merged GGUF (GGUF bases): the base's metadata and tokenizer copied verbatim,
// weights with the adapter folded in, matrices in f32 / f16 / q8_0

gn_status gn_model_save_merged_gguf(const gn_model *m, const gn_adapter *a, const char *path, gn_dtype dt) {
    if (!m->gguf)
        return gn_err(GN_ERR_UNSUPPORTED, "merge: --format gguf needs a GGUF base (for an HF base, write safetensors and "
                      "convert with llama.cpp's convert_hf_to_gguf.py)");
    if (dt != GN_DTYPE_F32 && dt != GN_DTYPE_F16 && dt != GN_DTYPE_Q8_0)
        return gn_err(GN_ERR_ARG, "merge: --dtype for gguf must be f32, f16 or q8_0");
    const gn_config *c = &m->cfg;
    int cap = 4 + 9 * c->n_layers, k = 0;
    gn_gguf_tensor_out *ts = gn_calloc((size_t)cap, sizeof *ts);
    float **bufs = gn_calloc((size_t)cap, sizeof(float *));
    char **names = gn_calloc((size_t)cap, sizeof(char *));
#define MAT(NAME, W, LM) do { \
        float *f_ = gn_malloc(sizeof(float) * (size_t)((W)->rows * (W)->cols)); mat_to_f32((W), f_); \
        if (LM) add_delta(f_, (LM)); \
        names[k] = gn_strdup(NAME); bufs[k] = f_; \
        ts[k] = (gn_gguf_tensor_out){names[k], dt, 2, {(W)->rows, (W)->cols}, f_}; k++; } while (0)
#define VEC(NAME, P, N) do { names[k] = gn_strdup(NAME); \
        ts[k] = (gn_gguf_tensor_out){names[k], GN_DTYPE_F32, 1, {(N)}, (P)}; k++; } while (0)
    MAT("token_embd.weight", &m->embed, (const gn_lora_mod *)NULL);
    VEC("output_norm.weight", m->final_norm, c->dim);
    if (!c->tie_embeddings) MAT("output.weight", &m->lm_head, (const gn_lora_mod *)NULL);
    const gn_tensor *rf = gn_tensor_table_find(&m->gguf->tensors, "rope_freqs.weight");
    if (rf && rf->dtype == GN_DTYPE_F32) VEC("rope_freqs.weight", rf->data, rf->nelem);
    static const char *const GG[GN_N_MODS] = {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"};
    char nm[128];
    for (int l = 0; l < c->n_layers; l++) {
        const gn_layer *L = &m->layers[l];
        snprintf(nm, sizeof nm, "blk.%d.attn_norm.weight", l); VEC(nm, L->attn_norm, c->dim);
        snprintf(nm, sizeof nm, "blk.%d.ffn_norm.weight", l); VEC(nm, L->ffn_norm, c->dim);
        const gn_mat *mats[GN_N_MODS] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
        for (int mi = 0; mi < GN_N_MODS; mi++) {
            const gn_lora_mod *lm = a && a->mods[(size_t)l * GN_N_MODS + (size_t)mi].r ? &a->mods[(size_t)l * GN_N_MODS + (size_t)mi] : NULL;
            snprintf(nm, sizeof nm, "blk.%d.%s.weight", l, GG[mi]);
            MAT(nm, mats[mi], lm); // q/k rows stay in the base's (interleaved) order, as the adapter was permuted at load
        }
    }
#undef MAT
#undef VEC
    const char *drop[] = {"general.file_type"};
    const char *u32k[] = {"general.file_type"};
    uint32_t u32v[] = {dt == GN_DTYPE_F32 ? 0u : dt == GN_DTYPE_F16 ? 1u : 7u}; // LLAMA_FTYPE_ALL_F32 / MOSTLY_F16 / MOSTLY_Q8_0
    gn_status st = gn_gguf_write(path, m->gguf, drop, 1, u32k, u32v, 1, ts, k);
    for (int i = 0; i < k; i++) { free(bufs[i]); free(names[i]); }
    free(bufs); free(names); free(ts);
    return st;
}
