/*
 * checkpoint.c — a whole 4-bit checkpoint in the layout transformers + bitsandbytes
 * save (docs/FACTS.md §3): one model.safetensors holding the plain tensors and, for
 * each quantized Linear, the tensors gn_quant4_export_tensors lists; and config.json's
 * quantization_config block, which tells transformers to load it with bitsandbytes.
 *
 * It knows the format, not the model: the caller (gn_model_save_4bit, lora/merge.c)
 * walks the model's tensors in checkpoint order and names them.
 */
#include "nf4.h"

#include <cjson/cJSON.h> // quantization_config
#include <stdlib.h>      // free

gn_status gn_quant4_save_safetensors(const char *path, const gn_quant4_item *items, int n) {
    int cap = 0;
    for (int i = 0; i < n; i++) cap += items[i].q4 ? 6 : 1;
    gn_tensor_out *ts = gn_calloc((size_t)(cap ? cap : 1), sizeof *ts);
    gn_quant4_export *ex = gn_calloc((size_t)(n ? n : 1), sizeof *ex);
    int k = 0, nex = 0;
    gn_status st = GN_OK;
    for (int i = 0; i < n && !st; i++) {
        if (!items[i].q4) { ts[k++] = items[i].t; continue; }
        if ((st = gn_quant4_export_tensors(items[i].q4, items[i].t.name, &ex[nex]))) break;
        for (int j = 0; j < ex[nex].n; j++) ts[k++] = ex[nex].t[j];
        nex++;
    }
    const char *meta[] = {"format", "pt"};
    if (!st) st = gn_safetensors_save(path, ts, k, meta, 1);
    for (int i = 0; i < nex; i++) gn_quant4_export_free(&ex[i]);
    free(ex);
    free(ts);
    return st;
}

char *gn_quant4_hf_config(const char *config, const gn_quant4_state *q, int head4) {
    cJSON *j = cJSON_Parse(config);
    if (!j) return NULL;
    cJSON *qc = cJSON_CreateObject();
    cJSON_AddBoolToObject(qc, "_load_in_4bit", 1);
    cJSON_AddBoolToObject(qc, "_load_in_8bit", 0);
    cJSON_AddStringToObject(qc, "bnb_4bit_compute_dtype", gn_dtype_torch_name(q->wdtype));
    cJSON_AddStringToObject(qc, "bnb_4bit_quant_storage", "uint8");
    cJSON_AddStringToObject(qc, "bnb_4bit_quant_type", q->quant_type == GN_QUANT_FP4 ? "fp4" : "nf4");
    cJSON_AddBoolToObject(qc, "bnb_4bit_use_double_quant", q->nested);
    cJSON_AddBoolToObject(qc, "llm_int8_enable_fp32_cpu_offload", 0);
    cJSON_AddBoolToObject(qc, "llm_int8_has_fp16_weight", 0);
    if (head4) cJSON_AddArrayToObject(qc, "llm_int8_skip_modules"); // [] : lm_head quantized too
    else cJSON_AddNullToObject(qc, "llm_int8_skip_modules");
    cJSON_AddRawToObject(qc, "llm_int8_threshold", "6.0"); // a float: transformers checks the type
    cJSON_AddBoolToObject(qc, "load_in_4bit", 1);
    cJSON_AddBoolToObject(qc, "load_in_8bit", 0);
    cJSON_AddStringToObject(qc, "quant_method", "bitsandbytes");
    cJSON_AddItemToObject(j, "quantization_config", qc);
    char *txt = cJSON_Print(j);
    cJSON_Delete(j);
    return txt;
}
