/*
 * guanaco.h — public API of libguanaco: LLaMA-family inference in C.
 *
 * Quick tour:
 *
 *     gn_model *m;
 *     if (gn_model_load(&m, "path/to/model-folder-or.gguf", NULL) != GN_OK) {
 *         fprintf(stderr, "%s\n", gn_last_error()); exit(1);
 *     }
 *     const gn_tokenizer *tok = gn_model_tokenizer(m);
 *     int32_t *ids; int n;
 *     gn_tokenizer_encode(tok, "Hello", 5, GN_ENC_BOS, &ids, &n);
 *     gn_session *s = gn_session_new(m, 0);    // owns the KV cache
 *     float *logits = gn_session_forward(s, ids, n); // [n, vocab] or last row
 *     ...
 *     gn_session_free(s); free(ids); gn_model_free(m);
 *
 * Errors: every function that can fail on outside input returns gn_status;
 * gn_last_error() gives a one-line message naming the file/offset/field and what
 * was expected. The library never writes to stdout.
 */
#ifndef GUANACO_H
#define GUANACO_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    GN_OK = 0,
    GN_ERR_IO = 1,          // file missing / unreadable / unwritable
    GN_ERR_FORMAT = 2,      // a file's contents are malformed or truncated
    GN_ERR_UNSUPPORTED = 3, // well-formed but something we do not handle
    GN_ERR_ARG = 4,         // bad argument / flag / request field
    GN_ERR_OOM = 5,
    GN_ERR_SHAPE = 6,       // tensor shape disagrees with the config
} gn_status;

// Message of the last error on this thread ("" if none).
const char *gn_last_error(void);

// Element types. Stored in files: append only.
typedef enum {
    GN_DTYPE_F32 = 0,
    GN_DTYPE_F16 = 1,
    GN_DTYPE_BF16 = 2,
    GN_DTYPE_Q8_0 = 3,  // ggml block formats (32 elements per block)
    GN_DTYPE_Q4_0 = 4,
    GN_DTYPE_Q4_1 = 5,
    GN_DTYPE_U8 = 6,
    GN_DTYPE_I8 = 7,
    GN_DTYPE_I16 = 8,
    GN_DTYPE_I32 = 9,
    GN_DTYPE_I64 = 10,
    GN_DTYPE_F64 = 11,
    GN_DTYPE_BOOL = 12,
    GN_DTYPE_Q5_0 = 13,
    GN_DTYPE_Q5_1 = 14,
    GN_DTYPE_Q6_K = 15, // ggml k-quants (256 elements per block)
    GN_DTYPE_Q4_K = 16,
    GN_DTYPE_Q5_K = 17,
    GN_DTYPE_Q8_1 = 18,
    GN_DTYPE_NF4 = 19,  // bitsandbytes 4-bit NormalFloat (blockwise absmax, optional double quant)
    GN_DTYPE_FP4 = 20,  // bitsandbytes 4-bit float
    GN_DTYPE_COUNT
} gn_dtype;

const char *gn_dtype_name(gn_dtype dt);

// Log sink: level 0 error .. 3 debug. Default writes levels <= verbosity to stderr.
typedef void (*gn_log_fn)(int level, const char *msg, void *user);
void gn_set_log(gn_log_fn fn, void *user);
void gn_set_verbosity(int level);

// Number of threads used by kernels (default: all cores).
void gn_set_threads(int n);
int gn_get_threads(void);
// Name of the SIMD path chosen at run time: "avx512", "avx2" or "scalar".
// The environment variable GN_SIMD=scalar|avx2|avx512 lowers the choice.
const char *gn_simd_name(void);

// ===========================================================================
// Tokenizer

typedef struct gn_tokenizer gn_tokenizer;

typedef enum {
    GN_TOK_SPM = 0,       // SentencePiece BPE (LLaMA 1/2), byte fallback, dummy prefix
    GN_TOK_BYTE_BPE = 1,  // GPT-2 style byte-level BPE (SmolLM2, LLaMA 3)
} gn_tok_kind;

// Loads tokenizer.model, tokenizer.json (reads tokenizer_config.json beside it
// when present), or the vocab inside a .gguf — chosen by the file's contents.
gn_status gn_tokenizer_load(gn_tokenizer **out, const char *path);
void gn_tokenizer_free(gn_tokenizer *t);

enum {
    GN_ENC_BOS = 1,      // prepend BOS when the tokenizer adds one
    GN_ENC_EOS = 2,      // append EOS
    GN_ENC_SPECIAL = 4,  // recognise special/added tokens written in the text
};
// Encodes len bytes of text (any bytes, need not be valid UTF-8). *ids is
// malloc'd (caller frees); *n its length.
gn_status gn_tokenizer_encode(const gn_tokenizer *t, const char *text, size_t len,
                              int flags, int32_t **ids, int *n);
// Decodes ids to a malloc'd NUL-terminated string (*len bytes). With
// skip_special, control tokens (BOS/EOS/...) are dropped. The SentencePiece
// leading dummy-prefix space is removed like HF/sentencepiece do.
gn_status gn_tokenizer_decode(const gn_tokenizer *t, const int32_t *ids, int n,
                              int skip_special, char **out, size_t *len);
// The raw bytes one token stands for (byte tokens give their byte, '▁' becomes
// ' ', byte-level BPE maps back through the byte table). Writes up to cap bytes,
// returns the number of bytes (may exceed cap: then call again with more room).
int gn_tokenizer_token_bytes(const gn_tokenizer *t, int32_t id, char *buf, int cap);
int gn_tokenizer_vocab_size(const gn_tokenizer *t);
int gn_tokenizer_bos(const gn_tokenizer *t);   // -1 when none
int gn_tokenizer_eos(const gn_tokenizer *t);
gn_tok_kind gn_tokenizer_kind(const gn_tokenizer *t);
int gn_tokenizer_add_bos(const gn_tokenizer *t); // does the model expect BOS by default
int gn_tokenizer_is_special(const gn_tokenizer *t, int32_t id);
// Id of an exact token string (e.g. "<|im_end|>"), -1 when none.
int32_t gn_tokenizer_find(const gn_tokenizer *t, const char *piece);
// Chat template text that shipped with the tokenizer (NULL when none).
const char *gn_tokenizer_chat_template(const gn_tokenizer *t);

// Streaming decode: feed ids one by one, get back only complete UTF-8 text.
typedef struct {
    char pending[8];
    int npending;
    int first;       // no text produced yet (for dummy-prefix stripping)
} gn_detok_stream;
void gn_detok_stream_init(gn_detok_stream *s);
// Appends the text for id into buf (cap bytes), returns bytes written. Bytes of
// an unfinished UTF-8 character are held back until it completes; an invalid
// sequence is emitted as U+FFFD.
int gn_detok_stream_push(const gn_tokenizer *t, gn_detok_stream *s, int32_t id,
                         char *buf, int cap);
int gn_detok_stream_flush(gn_detok_stream *s, char *buf, int cap);

// ===========================================================================
// Model

typedef enum { GN_ROPE_NONE = 0, GN_ROPE_LINEAR = 1, GN_ROPE_LLAMA3 = 2 } gn_rope_scaling;

typedef struct {
    int dim;            // hidden_size (C)
    int hidden_dim;     // intermediate_size
    int n_layers;       // L
    int n_heads;        // NH
    int n_kv_heads;     // NKV
    int head_dim;       // hs
    int vocab_size;     // V
    int max_seq;        // max_position_embeddings
    float norm_eps;
    float rope_theta;
    gn_rope_scaling rope_scaling;
    float rope_factor, rope_low_freq_factor, rope_high_freq_factor;
    int rope_orig_max_pos;
    int rope_interleaved; // 1: pairs (2i,2i+1) as GGUF/Meta; 0: rotate_half as HF
    int tie_embeddings;
    int bos_id, eos_id, pad_id; // -1 when absent
} gn_config;

typedef struct gn_model gn_model;

typedef struct {
    gn_dtype weight_dtype;  // F32 (default) or BF16 for every weight; NF4 or FP4: quantize the
                            // linear layers (q,k,v,o,gate,up,down; not embeddings, norms, lm_head)
                            // on load, as transformers' load_in_4bit does
    int no_double_quant;    // 4-bit: keep the absmax scales in f32 (default: double quantization)
    int blocksize;          // 4-bit: elements per absmax block (0 = 64)
    gn_dtype compute_dtype; // 4-bit: dtype each dequantized weight is rounded to before the product,
                            // like bnb_4bit_compute_dtype: F32 (the zero default), BF16 or F16;
                            // GN_DTYPE_COUNT = auto: a checkpoint's bnb_4bit_compute_dtype, else BF16
    int device;             // GN_DEVICE_CPU (0, default) or GN_DEVICE_CUDA: weights uploaded to the GPU at
                            // load, forward passes (and finetune steps) run there (needs make CUDA=1)
} gn_load_opts;

enum { GN_DEVICE_CPU = 0, GN_DEVICE_CUDA = 1 };
// Parses a --device value ("cpu" or "cuda") into *device. GN_ERR_ARG with a message
// for another name, GN_ERR_UNSUPPORTED "built without CUDA (make CUDA=1)" for
// "cuda" in a build without the CUDA backend.
gn_status gn_device_parse(const char *name, int *device);

// path: an HF folder (config.json + *.safetensors or pytorch_model*.bin), a
// .safetensors/.bin file inside such a folder, or a .gguf file. A folder written
// by transformers + bitsandbytes with 4-bit layers (weight.quant_state.*) loads
// as 4-bit whatever opts say.
gn_status gn_model_load(gn_model **out, const char *path, const gn_load_opts *opts);
void gn_model_free(gn_model *m);
const gn_config *gn_model_config(const gn_model *m);
const gn_tokenizer *gn_model_tokenizer(const gn_model *m); // NULL if none found
// Human-readable summary (config, tensor count, dtypes, bytes); malloc'd.
char *gn_model_describe(const gn_model *m);

// A session: one sequence's KV cache and scratch.
typedef struct gn_session gn_session;
// max_seq 0 = the model's max_position_embeddings (capped at 4096).
gn_session *gn_session_new(const gn_model *m, int max_seq);
void gn_session_free(gn_session *s);
int gn_session_pos(const gn_session *s);   // tokens in the cache
void gn_session_reset(gn_session *s);
// Drops cached tokens after the first `pos` (pos <= gn_session_pos), so a chat
// can reuse the prefix it shares with a re-rendered conversation.
void gn_session_rewind(gn_session *s, int pos);
// Runs n tokens at positions pos..pos+n-1 and appends them to the cache.
// Returns logits: all n rows [n, V] when all_logits, else only the last row [V].
// The pointer stays valid until the next call. NULL (with message) when the
// cache would overflow or an id is out of range.
const float *gn_session_forward(gn_session *s, const int32_t *ids, int n, int all_logits);

// Batched decode (continuous batching): one new token for each of n distinct
// sessions of the same model, in one shared pass. Returns logits [n, V] (row i
// for ss[i]); valid until the next forward on any of them. n <= 256.
const float *gn_sessions_decode(gn_session *const *ss, const int32_t *ids, int n);

// ===========================================================================
// LoRA adapters (PEFT format)

typedef struct gn_adapter gn_adapter;
// Loads a PEFT adapter folder (adapter_config.json + adapter_model.safetensors or
// adapter_model.bin) for model m; checks every tensor against the base's shapes.
// name: how requests refer to it (NULL: the path).
gn_status gn_adapter_load(gn_adapter **out, const gn_model *m, const char *path, const char *name);
void gn_adapter_free(gn_adapter *a);
const char *gn_adapter_name(const gn_adapter *a);
// Writes dir/adapter_model.safetensors + dir/adapter_config.json as PEFT does
// (keys base_model.model.model.layers.{L}.{self_attn|mlp}.{m}.lora_{A|B}.weight).
// dtype: GN_DTYPE_F32, GN_DTYPE_F16 or GN_DTYPE_BF16. base_model may be NULL.
gn_status gn_adapter_save(const gn_adapter *a, const char *dir, gn_dtype dtype, const char *base_model);
// Folds adapter a (may be NULL) into m's weights and writes an HF folder:
// model.safetensors (dtype F32, F16 or BF16) + config.json + the base's tokenizer files.
gn_status gn_model_save_merged(const gn_model *m, const gn_adapter *a, const char *dir, gn_dtype dtype);
// Same for a GGUF base, written as a GGUF llama.cpp loads: the base's metadata and
// tokenizer copied, matrices in F32, F16 or Q8_0.
gn_status gn_model_save_merged_gguf(const gn_model *m, const gn_adapter *a, const char *path, gn_dtype dtype);
// Writes a 4-bit model (loaded with 4-bit linear layers) as an HF folder in the
// layout transformers + bitsandbytes write: model.safetensors with
// weight/absmax/quant_map/nested_* /quant_state tensors, config.json with its
// quantization_config block, and the base's tokenizer files.
gn_status gn_model_save_4bit(const gn_model *m, const char *dir);
// Applies the adapter unmerged in this session's forward passes (NULL: base only).
// Several sessions may use different adapters on one model.
void gn_session_set_adapter(gn_session *s, const gn_adapter *a);

// ===========================================================================
// Training (QLoRA): LoRA adapters on the frozen base

typedef struct {
    int lora_r;            // rank (64 in the paper)
    float lora_alpha;      // scale = alpha / r (16)
    float lora_dropout;    // on the LoRA input only
    unsigned target_mask;  // bit k: module k in q,k,v,o,gate,up,down order
    float lr, beta1, beta2, eps, weight_decay;
    float max_grad_norm;   // global L2 clip (0.3); 0 = off
    uint64_t seed;
    int bf16_params;       // keep LoRA params bf16-rounded after each update (qlora: no fp32 master)
    int checkpointing;     // 0 (default): keep each layer's forward intermediates for the backward when
                           // they take at most 1 GiB, else recompute them (gradient checkpointing);
                           // 1: always recompute; 2: always keep
    const char *state_path;// file for the AdamW state (mmap, "paged"); NULL = memory
} gn_train_opts;
void gn_train_opts_default(gn_train_opts *o);

typedef struct gn_trainer gn_trainer;
// init: start from this adapter's weights and targets (NULL: PEFT's init, A
// kaiming-uniform, B zero).
gn_status gn_trainer_new(gn_trainer **out, const gn_model *m, const gn_train_opts *o, const gn_adapter *init);
void gn_trainer_free(gn_trainer *t);
// Forward (and with train, backward) of one sequence. labels[t] = -100 where no
// loss; position t predicts labels[t+1] (HF). Gradients accumulate scaled by
// `weight` (1 / tokens of the micro-batch / accumulation steps). Returns the
// summed cross-entropy and the number of scored tokens.
gn_status gn_trainer_sequence(gn_trainer *t, const int32_t *ids, const int32_t *labels, int n, float weight, int train,
                              double *loss_sum, int *n_tokens);
void gn_trainer_zero_grad(gn_trainer *t);
// Clips the gradients to max_grad_norm and takes one AdamW step with learning
// rate lr. Returns the gradient norm before clipping.
float gn_trainer_step(gn_trainer *t, float lr);
const gn_adapter *gn_trainer_adapter(const gn_trainer *t); // current weights (save with gn_adapter_save)
int64_t gn_trainer_step_count(const gn_trainer *t);
size_t gn_trainer_num_params(const gn_trainer *t);
const float *gn_trainer_grads(const gn_trainer *t);      // flat, in adapter order (A then B per module)
float *gn_trainer_grads_mut(gn_trainer *t);              // the same, writable (data-parallel all-reduce)
float *gn_trainer_params(gn_trainer *t);
size_t gn_trainer_state_size(const gn_trainer *t);       // AdamW m and v, bytes
const void *gn_trainer_state(const gn_trainer *t);
gn_status gn_trainer_restore(gn_trainer *t, const float *params, const void *state, size_t state_bytes, int64_t step);
uint64_t gn_trainer_rng(const gn_trainer *t);
void gn_trainer_set_rng(gn_trainer *t, uint64_t r);

// A whole run: data, schedule, accumulation, eval, checkpoints, resume.
typedef enum {
    GN_DATA_AUTO = 0,      // by fields: text -> oasst1, instruction -> alpaca, input+output, messages
    GN_DATA_OASST1 = 1,    // {"text": "### Human: ...### Assistant: ..."}: input "", output = text
    GN_DATA_ALPACA = 2,    // instruction / input / output with the Alpaca prompt (qlora's ALPACA_PROMPT_DICT)
    GN_DATA_INPUT_OUTPUT = 3, // {"input": ..., "output": ...}
    GN_DATA_MESSAGES = 4,  // {"messages": [...]}: rendered as oasst1 text (### Human/### Assistant), the whole conversation is the target
} gn_data_format;

typedef enum { GN_SCHED_CONSTANT = 0, GN_SCHED_LINEAR = 1, GN_SCHED_COSINE = 2 } gn_lr_sched;

typedef struct {
    const char *model_path, *data_path, *out_dir, *init_adapter;
    gn_train_opts train;
    gn_data_format data_format;
    int source_max_len, target_max_len, train_on_source, group_by_length;
    int no_shuffle;        // examples in file order every epoch (for reproducing a run elsewhere)
    int batch_size, grad_accum, max_steps;
    gn_lr_sched scheduler;
    float warmup_ratio;
    int warmup_steps;
    int eval_size, eval_steps, save_steps, log_every;
    int resume;
    gn_dtype save_dtype;   // final adapter dtype (default f32)
    // called after every step (eval_loss NaN) and after each evaluation
    void (*progress)(int64_t step, int max_steps, double loss, float lr, float grad_norm, double tokens_per_s,
                     double eta_s, double eval_loss, void *user);
    void (*on_checkpoint)(const char *out_dir, void *user);
    void *user;
    // called after each sequence of a step but the last (NULL: never): sequences of step `step`
    // done so far (all ranks) of seq_total, tokens/s since the run started (finished sequences)
    // and the estimated seconds left in the run; a step of 16 sequences on a 7B takes minutes
    void (*progress_seq)(int64_t step, int max_steps, int seq_done, int seq_total, double tokens_per_s, double eta_s,
                         void *user);
} gn_finetune_opts;
void gn_finetune_defaults(gn_finetune_opts *o);
// Applies --preset guanaco-7b|13b|33b|65b (spec §6.1); flags set afterwards override.
gn_status gn_finetune_preset(gn_finetune_opts *o, const char *name);
gn_status gn_finetune_run(const gn_finetune_opts *o, gn_model *m);
// Mean per-sequence loss of a data file under the base (+ adapter a).
gn_status gn_eval_loss_file(gn_model *m, const gn_adapter *a, const char *data_path, const gn_finetune_opts *o, double *loss);

// ===========================================================================
// Sampling and generation

typedef struct {
    float temperature;     // 0 = greedy
    int top_k;             // 0 = off
    float top_p;           // 1 = off
    float repeat_penalty;  // 1 = off (HF RepetitionPenaltyLogitsProcessor rule)
    uint64_t seed;
} gn_sampler_opts;
void gn_sampler_defaults(gn_sampler_opts *o);

typedef struct gn_sampler gn_sampler;
gn_sampler *gn_sampler_new(const gn_sampler_opts *o, int vocab_size);
void gn_sampler_free(gn_sampler *s);
// Picks a token from logits (modified in place). `history` (n ids) feeds the
// repetition penalty.
int32_t gn_sampler_sample(gn_sampler *s, float *logits, const int32_t *history, int n);

// Called with each piece of text as it is produced; return nonzero to stop.
typedef int (*gn_stream_fn)(const char *text, size_t len, void *user);

typedef struct {
    int max_new_tokens;
    int ignore_eos;
    const char *const *stop;  // stop strings (text is cut before the match)
    int n_stop;
    gn_stream_fn on_text;
    void *user;
} gn_gen_opts;

typedef struct {
    int n_prompt, n_gen;
    double t_prompt_s, t_gen_s;
    int stopped_by;   // 0 max tokens, 1 eos, 2 stop string, 3 callback
} gn_gen_stats;

// Continues the session with prompt ids, then generates. Appends generated ids
// to *out_ids (malloc'd, may be NULL) and the text (stop string removed) to
// *out_text (malloc'd, may be NULL).
gn_status gn_generate(gn_session *s, gn_sampler *smp, const int32_t *prompt, int n_prompt,
                      const gn_gen_opts *o, int32_t **out_ids, int *out_n,
                      char **out_text, gn_gen_stats *stats);

// ===========================================================================
// Chat formatting

typedef enum {
    GN_CHAT_AUTO = 0,      // the model's own template if known, else guanaco
    GN_CHAT_GUANACO = 1,   // released generations: "... questions. ### Human: q ### Assistant:"
    GN_CHAT_GUANACO_DEMO = 2, // demo script: "... questions. ### Human: q### Assistant: "
    GN_CHAT_CHATML = 3,
    GN_CHAT_LLAMA2 = 4,
    GN_CHAT_LLAMA3 = 5,
} gn_chat_format;

typedef struct {
    const char *role;    // "system", "user", "assistant"
    const char *content;
} gn_chat_msg;

extern const char GN_GUANACO_SYSTEM[];
// The system line a format uses when the conversation has none: the Guanaco
// line, or the fixed one a ChatML template inserts (SmolLM2's); NULL if none.
// malloc'd.
char *gn_chat_default_system(const gn_tokenizer *t, gn_chat_format f);
gn_chat_format gn_chat_format_for(const gn_tokenizer *t, gn_chat_format requested);
const char *gn_chat_format_name(gn_chat_format f);
// Parses a --template name (auto, guanaco, guanaco-demo, chatml, llama2, llama3);
// GN_ERR_ARG with a message listing the names otherwise.
gn_status gn_chat_format_parse(const char *name, gn_chat_format *f);
// Renders messages, ending with the cue for the assistant's next turn.
// Returns malloc'd text. *stops (static strings) gets the turn markers that end
// the assistant's answer.
char *gn_chat_render(gn_chat_format f, const gn_chat_msg *msgs, int n,
                     const char *const **stops, int *n_stops);

#ifdef __cplusplus
}
#endif
#endif
