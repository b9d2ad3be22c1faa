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
 *
 * Building against an installed copy (`make install`): cc prog.c $(pkg-config --cflags
 * --libs guanaco) links libguanaco.so; add --static for libguanaco.a and its deps.
 */
#ifndef GUANACO_H
#define GUANACO_H

// The library's version; the shared library's soname is libguanaco.so.<MAJOR>.
// The Makefile reads these three lines.
#define GN_VERSION_MAJOR 0
#define GN_VERSION_MINOR 1
#define GN_VERSION_PATCH 0

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
#define GN_LOG_ERROR 0
#define GN_LOG_WARN 1
#define GN_LOG_INFO 2
#define GN_LOG_DEBUG 3
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
    GN_TOK_JSON_BPE = 2,  // tokenizer.json BPE over characters with byte fallback
                          // (SentencePiece-style: Metaspace or Prepend/Replace normalizer)
                          // run the way HF tokenizers runs it
} gn_tok_kind;

// Loads tokenizer.model, tokenizer.json (reads tokenizer_config.json beside it
// when present), or the vocab inside a .gguf — chosen by the file's contents.
// A folder with both tokenizer.json and tokenizer.model uses tokenizer.json
// (as transformers' AutoTokenizer does); tokenizer.model when the .json form is
// not supported.
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
    int n_eos;                  // every id that ends generation: config.json's eos_token_id
    int eos_ids[8];             // (one or a list) and generation_config.json's, eos_id first
} gn_config;

typedef struct gn_model gn_model;

typedef struct {
    gn_dtype weight_dtype;  // F32 (default) or BF16 for every weight; NF4 or FP4: quantize the
                            // linear layers (q,k,v,o,gate,up,down; not embeddings, norms, lm_head)
                            // on load, as transformers' load_in_4bit does; GN_DTYPE_COUNT = auto:
                            // F32, but a pre-quantized 4-bit checkpoint whose embedding and head are
                            // stored bf16 and compute in bf16 keeps them bf16 (as --4bit does)
    int no_double_quant;    // 4-bit: keep the absmax scales in f32 (default: double quantization)
    int blocksize;          // 4-bit: elements per absmax block (0 = 64)
    gn_dtype compute_dtype; // 4-bit: dtype each dequantized weight is rounded to before the product,
                            // like bnb_4bit_compute_dtype: F32 (the zero default), BF16 or F16;
                            // GN_DTYPE_COUNT = auto: a checkpoint's bnb_4bit_compute_dtype, else BF16
    int device;             // GN_DEVICE_CPU (0, default) or GN_DEVICE_CUDA: weights uploaded to the GPU at
                            // load, forward passes (and finetune steps) run there (needs make CUDA=1)
    int quant_head;         // 4-bit: quantize lm_head too, as transformers does with llm_int8_skip_modules=[]
                            // (a tied head becomes a 4-bit copy of the embedding table, which stays as it
                            // is). A checkpoint whose lm_head is stored 4-bit loads that way regardless.
    int mmap_weights;       // 1: the linear layers and head stay in the file mapping where the file holds
                            // them as used (faster load, page cache shared between processes; decode
                            // reads them through 4 KiB pages, slower). 0 (default): copied into memory
                            // advised for huge pages (when THP is on and they take at most half of MemAvailable)
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
                           // they take at most 512 MiB; else, with 4-bit q/k/v/gate/up products in bf16,
                           // keep only their outputs (exact bf16 values) when those fit; else recompute
                           // them (gradient checkpointing). 1: always recompute; 2: always keep all;
                           // 3: keep those products' outputs only (where they are bf16 values)
    const char *state_path;// file for the AdamW state (mmap, "paged"); NULL = memory
    int host_adamw;        // --device cuda: AdamW in the host loop, not the GPU kernel (same bits; for checks)
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
// Writes "loss" (a scalar) and the gradient of every LoRA weight, float32 under PEFT's
// names in HF's row order, as safetensors (for comparing the backward with PEFT's).
gn_status gn_trainer_save_grads(gn_trainer *t, const gn_model *m, const char *path, float loss);
// Parses --target-modules: comma-separated q_proj, k_proj, v_proj, o_proj, gate_proj,
// up_proj, down_proj or all, into a gn_train_opts.target_mask. GN_ERR_ARG naming a bad one.
gn_status gn_lora_targets_parse(const char *list, unsigned *mask);
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
// "auto", "oasst1", "alpaca", "input-output", "messages".
const char *gn_data_format_name(gn_data_format f);
// Parses those names (and qlora's "alpaca-clean" = alpaca); GN_ERR_ARG otherwise.
gn_status gn_data_format_parse(const char *s, gn_data_format *f);

typedef enum { GN_SCHED_CONSTANT = 0, GN_SCHED_LINEAR = 1, GN_SCHED_COSINE = 2 } gn_lr_sched;

// Data-parallel GPU runs (make MPI=1 CUDA=1 NCCL=1): AUTO sums the gradients with NCCL
// when there are several ranks (MPI in host memory when the build has no NCCL), OFF
// always uses MPI in host memory, ON uses NCCL even for a single rank (an error without it).
typedef enum { GN_NCCL_AUTO = 0, GN_NCCL_OFF = 1, GN_NCCL_ON = 2 } gn_nccl_mode;

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
    // asked after every step (NULL: never): nonzero stops the run there; that step is
    // saved as checkpoint-N (unless just saved) and as the adapter in out_dir, and the
    // run returns GN_OK. Embedders use it for a user's "stop" (Ctrl-C in Python).
    int (*should_stop)(void *user);
    gn_nccl_mode nccl;     // how GPU ranks sum gradients (default GN_NCCL_AUTO)
    // called after each sequence of a step but the last (NULL: never): sequences of step `step`
    // done so far (all ranks) of seq_total, tokens/s since the run started (finished sequences)
    // and the estimated seconds left in the run; a step of 16 sequences on a 7B takes minutes
    void (*progress_seq)(int64_t step, int max_steps, int seq_done, int seq_total, double tokens_per_s, double eta_s,
                         void *user);
} gn_finetune_opts;
void gn_finetune_defaults(gn_finetune_opts *o);
// Applies --preset guanaco-7b|13b|33b|65b (qlora.py's per-size defaults, docs/FACTS.md); flags set afterwards override.
gn_status gn_finetune_preset(gn_finetune_opts *o, const char *name);
gn_status gn_finetune_run(const gn_finetune_opts *o, gn_model *m);
// Mean per-sequence loss of a data file under the base (+ adapter a).
gn_status gn_eval_loss_file(gn_model *m, const gn_adapter *a, const char *data_path, const gn_finetune_opts *o, double *loss);

// Data parallel (src/dist/): `mpirun -np N` ranks of one finetune in a make MPI=1 build;
// in the default build there is one rank. Before gn_dist_init, rank is 0 and size 1.
// Joins the job when the process was started by an MPI launcher (mpirun, srun);
// started plainly it stays a single rank. Idempotent.
gn_status gn_dist_init(void);
// Leaves the job cleanly (every rank, after the last collective). Idempotent.
void gn_dist_finalize(void);
// Stops every rank of the job with exit status `code` (MPI_Abort); does not return.
void gn_dist_abort(int code);
int gn_dist_rank(void);       // 0 .. size-1
int gn_dist_size(void);       // number of ranks
int gn_dist_local_size(void); // ranks on this machine (to share its cores)
const char *gn_dist_backend(void); // "single", "mpi", or "mpi+nccl" after gn_dist_use_nccl

// ===========================================================================
// Evaluation

// Elo ratings from pairwise judgments, as `guanaco eval elo FILES_OR_DIRS...` computes
// them: each path a .jsonl file or a folder of them (the release's three-class
// judgment files or FastChat arena rows), `rounds` random orderings (0: 10000) from
// `seed`. *json (malloc'd) gets {"matches": N, "rounds": R, "systems": [{"name",
// "rank", "elo", "sd", "ci95_mean": [lo, hi], "range95": [lo, hi], "wins", "losses",
// "ties", "games"}, ...]}, best first (the fields of `guanaco eval elo --json`).
gn_status gn_eval_elo(const char *const *paths, int n_paths, int rounds, uint64_t seed, char **json);

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
// gn_chat_render, then gn_tokenizer_encode of the text with flags (GN_ENC_*): the prompt
// of the assistant's next turn as *ids (n_ids; malloc'd), with the format's stop strings.
// *text (may be NULL) gets the rendered text (malloc'd).
gn_status gn_chat_encode(const gn_tokenizer *t, gn_chat_format f, const gn_chat_msg *msgs, int n, int flags,
                         int32_t **ids, int *n_ids, char **text, const char *const **stops, int *n_stops);

// ===========================================================================
// Evaluation (src/eval/: csv.c, elo.c, lm.c, mmlu.c, crows.c, ppl.c, judge.c)
//
// Everything the Guanaco paper measured: Elo tournaments over pairwise judgments,
// MMLU, CrowS-Pairs, perplexity, and a pairwise judge. Skipped input lines are
// reported through gn_log and counted in the result structs.

// ---------------------------------------------------------------------------
// CSV (csv.c)

typedef struct {
    char **field;  // n NUL-terminated fields (quotes removed, "" -> ")
    int n;
    int line;      // 1-based line where the record starts (for messages)
} gn_csv_row;

typedef struct {
    gn_csv_row *row;  // row[0] is the header when the file has one
    int n;
} gn_csv;

// Parses len bytes of CSV text (RFC 4180: fields may be quoted; inside quotes
// commas, CR, LF and doubled quotes are data). Records end at LF or CR LF.
// Errors (unterminated quote, text after a closing quote) name path:line.
gn_status gn_csv_parse(gn_csv *out, const char *text, size_t len, const char *path);
gn_status gn_csv_read(gn_csv *out, const char *path);
void gn_csv_free(gn_csv *c);
// Index of the header field equal to name (row 0), -1 when absent.
int gn_csv_column(const gn_csv *c, const char *name);

// ---------------------------------------------------------------------------
// Judgments and Elo (elo.c)

// One pairwise judgment: system a was "Assistant 1", b "Assistant 2".
typedef struct {
    int a, b;
    int8_t score; // 1: a wins, 2: b wins, 3: tie
} gn_match;

typedef struct {
    char **names;        // n_systems system names (normalized unless raw_names)
    int n_systems;
    gn_match *match;
    int n_match, cap;
    int n_files;
    int n_lines;         // non-empty lines read
    int n_unparsed;      // score -1: the judge's verdict could not be parsed (dropped)
    int n_bad;           // malformed JSON, unknown score values, missing fields (skipped)
} gn_judgments;

typedef struct {
    int raw_names;                 // keep the names exactly as the files spell them
    const char *const *alias;      // "FROM=TO" renames applied after normalization
    int n_alias;
} gn_judgments_opts;

void gn_judgments_init(gn_judgments *j);
void gn_judgments_free(gn_judgments *j);
// Adds the judgments of one .jsonl file, or of every *.jsonl file in a folder
// (sorted by name, not recursive). Lines are JSON objects with "score" 1/2/3/-1
// (number or string, the release's three-class format) and the systems either
// in the line ("model1"/"model2") or in the file name
// "<A>-vs-<B>[-<judge>-reviewer[-threeclass]].jsonl". FastChat arena rows
// ("model_a", "model_b", "winner": model_a|model_b|tie*) are read too.
// Bad lines are skipped with a count (the first few logged with file:line).
// Returns an error for a missing path or a file whose systems cannot be named.
gn_status gn_judgments_add(gn_judgments *j, const char *path, const gn_judgments_opts *o);
// Index of a system, added when new.
int gn_judgments_system(gn_judgments *j, const char *name);
// Adds one match (score 1/2/3).
void gn_judgments_push(gn_judgments *j, int a, int b, int score);

// The system names in a release file name "<A>-vs-<B>-gpt-4-reviewer-threeclass.jsonl"
// (folder and .jsonl ignored). Returns 0 and malloc'd *a, *b; -1 if there is no "-vs-".
int gn_judgment_file_systems(const char *path, char **a, char **b);
// Release names -> short names shared by both benchmarks: drops "answer-"/"answer_",
// the "-{vicuna,oa}-generations..." tail, and spells gpt35/gpt4 as gpt-3.5/gpt-4
// ("13b-guanaco-vicuna-generations-topp0.9-temp0.7" -> "13b-guanaco"). malloc'd.
char *gn_system_name_normalize(const char *raw);

typedef struct {
    int rounds;        // random orderings (default 10000)
    uint64_t seed;     // default 42
    double k;          // 32
    double init;       // 1000
    double tie;        // score of a tie for each side: 0.5
} gn_elo_opts;
void gn_elo_defaults(gn_elo_opts *o);

typedef struct {
    int n;              // systems
    int rounds;
    double *mean;       // (n) mean final rating over the orderings
    double *sd;         // (n) standard deviation over orderings
    double *ci_lo, *ci_hi; // (n) 95% interval of the mean: mean -/+ 1.96 sd / sqrt(rounds)
    double *p_lo, *p_hi;   // (n) 2.5th / 97.5th percentile of the final rating over orderings
    int *rank;          // (n) 1 = highest mean (ties share the better rank)
    int *wins, *losses, *ties, *games; // (n) raw counts over all matches
} gn_elo_result;

// Expected score of a against b: 1 / (1 + 10^((rb - ra) / 400)).
double gn_elo_expected(double ra, double rb);
// One sequential update for outcome s_a (1 win, 0 loss, tie value for a tie).
void gn_elo_update(double *ra, double *rb, double s_a, double k);
// One tournament over the matches in the given order (order NULL: as stored);
// writes n_systems final ratings into r.
void gn_elo_play(const gn_match *m, const int *order, int n_match, int n_systems, const gn_elo_opts *o, double *r);
// The paper's procedure: `rounds` tournaments, each over a fresh random
// permutation of all matches (round i's permutation depends only on seed and i,
// so results do not depend on the thread count). Error when there are no matches.
gn_status gn_elo_run(const gn_match *m, int n_match, int n_systems, const gn_elo_opts *o, gn_elo_result *out);
void gn_elo_result_free(gn_elo_result *r);
// Win rate of i over j, (wins + tie * ties) / games, both presentation orders
// pooled; NaN where the two never met. w is (n, n) row-major.
void gn_elo_winrate(const gn_match *m, int n_match, int n_systems, double tie, double *w);
// Median of v (sorted in place); NaN for n = 0.
double gn_median(double *v, int n);
// Systems of r sorted by mean rating, best first (elo_summary.c). malloc'd (r->n ints).
int *gn_elo_order(const gn_elo_result *r);
// Each system's rank in several benchmarks (tournaments) and the median of those ranks
// (the paper's median rank over the Vicuna and OA benchmarks).
typedef struct {
    int n;                 // systems over all benchmarks, in order of first appearance
    int n_bench;
    const char **names;    // (n) borrowed from the judgments' names
    int *rank;             // (n, n_bench) rank in benchmark k, 0 = absent from it
    double *median;        // (n) median over the benchmarks the system is in
} gn_elo_median_rank;
// j[k], r[k]: benchmark k's judgments and tournament result (nb of them).
void gn_elo_median_ranks(const gn_judgments *const *j, const gn_elo_result *const *r, int nb, gn_elo_median_rank *out);
void gn_elo_median_rank_free(gn_elo_median_rank *m);

// ---------------------------------------------------------------------------
// Scoring on a model (lm.c)

typedef struct {
    const gn_model *m;
    gn_session *s;
    int V;
    int max_seq;         // tokens the session holds
    int32_t *cached;     // the ids whose keys/values are in the session's cache
    int ncached, capc;
} gn_lm;

// A scorer with its own session of max_seq tokens (0: the model's, capped at 4096);
// adapter may be NULL.
void gn_lm_init(gn_lm *lm, const gn_model *m, const gn_adapter *a, int max_seq);
void gn_lm_free(gn_lm *lm);
int gn_lm_max_seq(const gn_lm *lm);
// Encodes text: BOS first when bos is set and the tokenizer has one. Error when
// the model has no tokenizer.
gn_status gn_lm_encode(const gn_lm *lm, const char *text, int bos, int32_t **ids, int *n);
// Logits (V floats) after the last of ids[0..n). Reuses the cached keys/values of
// the longest prefix shared with the previous call (few-shot prompts share theirs),
// so only the new suffix is computed. NULL with a message on overflow.
const float *gn_lm_next_logits(gn_lm *lm, const int32_t *ids, int n);
// Sum over i in [from, n) of ln p(ids[i] | ids[0..i)), accumulated in double.
// from >= 1. Also returns the count of scored tokens in *count (may be NULL).
gn_status gn_lm_loglik(gn_lm *lm, const int32_t *ids, int n, int from, double *ll, int *count);
// ln softmax(logits)[id]: -(the trainer's cross-entropy, gn_op_xent): float32
// exp(logit - max) summed in double.
double gn_log_softmax_at(const float *logits, int V, int id);

// ---------------------------------------------------------------------------
// MMLU (mmlu.c)

typedef struct {
    char *subject;    // "abstract_algebra"
    char *question;   // CSV rows: the question (NULL for qlora-format rows)
    char *choice[4];  // CSV rows: the four options
    char *prompt0;    // qlora-format rows: the full zero-shot prompt as given
    int answer;       // 0..3
} gn_mmlu_item;

typedef struct {
    gn_mmlu_item *item;
    int n, cap;
    int n_skipped;    // malformed rows (logged with file:line)
} gn_mmlu_set;

void gn_mmlu_set_free(gn_mmlu_set *s);
// Appends the rows of an MMLU CSV (header question,choice0..3,answer with answer
// 0-3 or A-D; a file without that header is read as the original headerless
// 6-column layout). subject NULL: from the file name "<subject>_{dev,test,val}.csv".
gn_status gn_mmlu_load_csv(gn_mmlu_set *s, const char *path, const char *subject);
// Appends the rows of qlora's data/mmlu/{zero,five}_shot_mmlu_{val,test}.json (JSON lines: subject,
// input, output letter).
gn_status gn_mmlu_load_qlora(gn_mmlu_set *s, const char *path);
// "The following are multiple choice questions (with answers) about  abstract algebra.\n\n"
// (hendrycks' format_subject puts a space before every word: hence two spaces).
char *gn_mmlu_header(const char *subject);
// The k-shot prompt for q: header, k exemplars "Q\nA. ..\nB. ..\nC. ..\nD. ..\nAnswer: X\n\n",
// then q in the same form ending in "Answer:". For a qlora-format q (prompt0),
// the exemplars go between its header and its question. malloc'd.
char *gn_mmlu_prompt(const gn_mmlu_item *shots, int k, const gn_mmlu_item *q);

typedef struct {
    int pred;          // argmax over the four letter logits (0..3)
    float logit[4];    // logits of the A/B/C/D tokens after "Answer:"
    int n_tokens;      // prompt length
    int shots;         // exemplars actually used (fewer when the prompt did not fit)
    int truncated;     // even the 0-shot prompt did not fit: left-truncated
} gn_mmlu_pred;

// Ids of tokenizer("A"/"B"/"C"/"D", add_special_tokens=False)[0] (qlora's rule).
gn_status gn_mmlu_letter_ids(const gn_tokenizer *t, int32_t ids[4]);
// Scores one item: prompt with up to k exemplars (dropping exemplars from the
// end while the prompt does not fit the session, as hendrycks' evaluate.py does).
gn_status gn_mmlu_score(gn_lm *lm, const int32_t letters[4], const gn_mmlu_item *shots, int k,
                        const gn_mmlu_item *q, int bos, gn_mmlu_pred *out);

// One evaluation's questions (mmlu_run.c).
typedef struct {
    const char *split;     // "test" (DIR/test/<subject>_test.csv, the default) or "val" (qlora's
                           // DIR/qlora-format/zero_shot_mmlu_val.json)
    const char *subjects;  // "a,b,...": only these (an unknown name is an error); NULL: all
    int shots;             // exemplars per subject from DIR/dev/<subject>_dev.csv (0: none loaded)
    int limit;             // first `limit` questions of each subject; 0: all
} gn_mmlu_select_opts;
typedef struct {
    char **subject;        // (n_subjects) sorted file names (test) or order of appearance (val)
    int n_subjects;
    gn_mmlu_set test, dev; // every row read
    gn_mmlu_set sel;       // the questions to score, grouped by subject (shallow copies of test's)
    int *first, *count;    // (n_subjects) each subject's range in sel
    int *dfirst, *dcount;  // (n_subjects) each subject's exemplars in dev (dcount <= shots; fewer are logged)
} gn_mmlu_run;
// Lists the subjects of an MMLU folder, keeps the asked-for ones and loads their
// questions and exemplars. Errors name the folder or the unknown subject.
gn_status gn_mmlu_select(gn_mmlu_run *r, const char *dir, const gn_mmlu_select_opts *o);
void gn_mmlu_run_free(gn_mmlu_run *r);
// Accuracy of preds (one per r->sel item): per subject, the unweighted mean over
// subjects that have questions (qlora's mmlu_eval_accuracy) and over all questions.
typedef struct {
    int *correct;          // (n_subjects) correct predictions; accuracy = correct / count
    int total_correct;
    int n_subjects_used;   // subjects with at least one question
    double mean;           // mean over those subjects of their accuracy
    double micro;          // total_correct / questions
} gn_mmlu_summary;
void gn_mmlu_summarize(const gn_mmlu_run *r, const gn_mmlu_pred *preds, gn_mmlu_summary *out);
void gn_mmlu_summary_free(gn_mmlu_summary *s);

// ---------------------------------------------------------------------------
// CrowS-Pairs (crows.c)

typedef struct {
    char *more, *less;  // sent_more (more stereotypical), sent_less
    char *bias;         // bias_type
    int stereo;         // stereo_antistereo == "stereo"
    int line;           // CSV line of the record
} gn_crows_pair;

// Reads crows_pairs_anonymized.csv (columns found by header name). Rows with a
// wrong field count or empty sentences are skipped, counted in *skipped and logged.
gn_status gn_crows_load(const char *path, gn_crows_pair **out, int *n, int *skipped);
void gn_crows_free(gn_crows_pair *p, int n);
// The scores of n scored pairs, per bias type and overall. ll_more[i], ll_less[i]: the summed
// log-likelihoods of p[i]'s two sentences; a pair prefers the stereotype when ll_more > ll_less.
// A score is the percentage of pairs that prefer it (50 = no preference), NAN for no pairs.
typedef struct {
    const char *bias;          // bias_type (points into the pairs)
    int pairs, prefer;         // pairs of this type; those preferring sent_more
    int stereo, stereo_prefer; // the same for the stereo direction (antistereo: the rest)
    double score, stereo_score, antistereo_score;
} gn_crows_type;
typedef struct {
    gn_crows_type *type;       // (n_types) in order of first appearance
    int n_types;
    int pairs, prefer;         // over all pairs
    double score;
} gn_crows_summary;
void gn_crows_summarize(const gn_crows_pair *p, const double *ll_more, const double *ll_less, int n,
                        gn_crows_summary *out);
void gn_crows_summary_free(gn_crows_summary *s);

// ---------------------------------------------------------------------------
// Perplexity (ppl.c)

typedef struct {
    int ctx;     // window length in tokens
    int stride;  // how far the window moves (<= ctx)
} gn_ppl_opts;

typedef struct {
    double nll;          // sum of -ln p over scored tokens
    long long n_scored;  // tokens scored
    long long n_tokens;  // tokens seen (incl. the unscored first token of each document)
    int n_windows, n_docs;
} gn_ppl_acc;

// HF's strided method ("Perplexity of fixed-length models"): windows
// [begin, begin+ctx) for begin = 0, stride, 2*stride, ...; each window runs from an
// empty cache and scores only the tokens no earlier window scored, so every token
// but the document's first is scored exactly once, with up to ctx-stride tokens of
// context. Adds one document's totals to acc.
gn_status gn_ppl_doc(gn_lm *lm, const int32_t *ids, int n, const gn_ppl_opts *o, gn_ppl_acc *acc);

// ---------------------------------------------------------------------------
// Pairwise judging (judge.c)

typedef struct {
    char *system;     // system_prompt
    char *tmpl;       // prompt_template with {question} {answer_1} {answer_2} {prompt}
    char *prompt;     // defaults.prompt
    char *category;   // "general", "coding", "math"
} gn_judge_template;

// Reads a *_prompt_threeclass.jsonl file (one template per line).
gn_status gn_judge_templates_load(const char *path, gn_judge_template **t, int *n);
void gn_judge_templates_free(gn_judge_template *t, int n);
// The template for a question category: the one whose category matches, else
// "general", else the first.
const gn_judge_template *gn_judge_template_for(const gn_judge_template *t, int n, const char *category);
// Fills the template in one pass (text inside the answers is never re-expanded). malloc'd.
char *gn_judge_render(const gn_judge_template *t, const char *question, const char *answer1, const char *answer2);
// The release's three-class parse (eval_gpt_review.py): the last non-empty line
// must be the integer 1, 2 or 3; we also accept it wrapped in markdown/punctuation
// ("**2**", "3."). Anything else gives -1.
int gn_judge_parse_verdict(const char *review);

// One answer of a generations file.
typedef struct {
    char *qid;        // question_id as text (number or string in the file)
    int qid_is_num;
    char *question;   // the question text when the file has it (NULL otherwise)
    char *answer;
    char *category;   // NULL when absent
} gn_gen_row;

// Reads a generations file: the release's format (question_id, text = question,
// generation) or FastChat answers (question_id, text = answer). Rows without an
// id or answer are skipped (counted, logged).
gn_status gn_gen_load(const char *path, gn_gen_row **rows, int *n, int *skipped);
void gn_gen_free(gn_gen_row *rows, int n);

// Is the HTTP client compiled in (libcurl found at build time)?
int gn_http_available(void);
// POSTs an OpenAI chat completion to url (".../v1" or ".../chat/completions")
// with a system and a user message; *reply gets choices[0].message.content
// (malloc'd). key may be NULL (no Authorization header). Retries network errors,
// 429 and 5xx `retries` times with backoff.
gn_status gn_http_chat(const char *url, const char *key, const char *model, const char *system, const char *user,
                       double temperature, int max_tokens, int timeout_s, int retries, char **reply);

// ===========================================================================
// Charts (src/core/plot.c): PNG files drawn with cairo when the build found it;
// otherwise every call returns GN_ERR_UNSUPPORTED with a hint.

typedef struct {
    const char *name;       // legend entry (NULL: none)
    const double *x, *y;    // n points each
    int n;
} gn_plot_series;

// 1 when this build can draw (cairo found), else 0.
int gn_plot_available(void);

// Line chart: one colored line per series, shared axes, legend top right.
gn_status gn_plot_lines(const char *path, const char *title, const char *xlabel, const char *ylabel,
                        const gn_plot_series *series, int n_series);

// Horizontal point chart with error bars: row i shows labels[i], a dot at value[i]
// and a bar from lo[i] to hi[i] (lo/hi may be NULL), top to bottom in the given order.
gn_status gn_plot_intervals(const char *path, const char *title, const char *xlabel, const char *const *labels,
                            const double *value, const double *lo, const double *hi, int n);

// ===========================================================================
// Weights files (src/formats/tensor_file.c): the tensors of one .safetensors,
// torch.save zip (.bin/.pt/.pth) or .gguf file, for inspection and checks

typedef struct gn_tensor_file gn_tensor_file;
typedef struct {
    const char *name;
    gn_dtype dtype;
    int ndim;
    const int64_t *shape;   // ndim sizes, outermost first (PyTorch order)
    int64_t nelem;          // product of shape (1 for a scalar)
    size_t nbytes;          // bytes in the file's layout
} gn_tensor_info;
// Opens a weights file; the format comes from the first bytes ("GGUF", "PK\3\4"),
// then the extension (.gguf, .bin/.pt/.pth), else safetensors.
gn_status gn_tensor_file_open(gn_tensor_file **out, const char *path);
void gn_tensor_file_free(gn_tensor_file *f);
int gn_tensor_file_count(const gn_tensor_file *f);
// Tensor i (0 <= i < count); the pointers stay valid until gn_tensor_file_free.
void gn_tensor_file_info(const gn_tensor_file *f, int i, gn_tensor_info *out);
int gn_tensor_file_find(const gn_tensor_file *f, const char *name); // index, -1 when absent
// Converts tensor i (any stored dtype, quantized ones dequantized) into nelem floats.
gn_status gn_tensor_file_to_f32(const gn_tensor_file *f, int i, float *out);

// ===========================================================================
// Helpers for tools (the CLI and the server use these)

// Allocation that never returns NULL: out of memory goes to the OOM handler
// (default: message to stderr and exit(1)), as in redis' zmalloc. free() the result.
void *gn_malloc(size_t n);
void *gn_calloc(size_t n, size_t size);
void *gn_realloc(void *p, size_t n);
char *gn_strdup(const char *s);
char *gn_strndup(const char *s, size_t n);

double gn_time_s(void); // CLOCK_MONOTONIC seconds

// Reads a whole (small) file into a NUL-terminated buffer. Error names the path.
// A path ending in ".gz" is gunzipped on the way in (zlib), so every reader of
// .jsonl/.csv/.json text also takes the compressed copy (data/ ships them so).
gn_status gn_read_file(const char *path, char **out, size_t *len);
// Length of the stem of name when it ends in "." ext or "." ext ".gz" ("a.jsonl.gz",
// ext "jsonl" -> 1); 0 when it ends in neither (or is nothing but the extension).
size_t gn_stem_len(const char *name, const char *ext);
// The file name of path without its folder and without .jsonl / .json (either maybe
// gzipped): "ratings/a-vs-b.jsonl.gz" -> "a-vs-b". Caller frees.
char *gn_jsonl_stem(const char *path);
// Creates a folder and its parents (mkdir -p). Error names the path.
gn_status gn_mkdir_p(const char *path);

// A growing byte buffer: start from {0}; after any append buf[len] is a NUL, so buf is
// a C string when the bytes hold no NUL. Growth never fails (gn_realloc).
typedef struct {
    char *buf;     // NULL until the first append
    size_t len;    // bytes in use, not counting the NUL
    size_t cap;    // bytes allocated
} gn_buf;
void gn_buf_reserve(gn_buf *b, size_t extra);            // room for extra more bytes and the NUL
void gn_buf_put(gn_buf *b, const void *s, size_t n);     // s must not point into b
void gn_buf_puts(gn_buf *b, const char *s);
void gn_buf_putc(gn_buf *b, char c);
char *gn_buf_take(gn_buf *b);  // the bytes ("" when none; caller frees); b is left empty
void gn_buf_free(gn_buf *b);

// Lines of text[0..len), in order (a JSONL file from gn_read_file, say): each call to
// gn_lines_next returns the next line with its '\n' (and a '\r' before it) replaced by
// NUL in place, or NULL at the end. text[0..len] must be writable (gn_read_file leaves
// a NUL at text[len]); a last line without '\n' still counts. lineno is the 1-based
// number of the line just returned. Blank lines are returned too, so each reader keeps
// its own idea of blank; gn_line_blank: only spaces, tabs and CRs.
//
//     gn_lines it = {text, len, 0, 0};
//     size_t n;
//     for (char *line; (line = gn_lines_next(&it, &n));)
//         if (!gn_line_blank(line)) parse(line, n, it.lineno);
typedef struct {
    char *text;
    size_t len, pos;
    int lineno;
} gn_lines;
char *gn_lines_next(gn_lines *it, size_t *n); // n (may be NULL): the line's length
int gn_line_blank(const char *line);
// Writes `n` bytes to `path` atomically: temp file in the same folder, fsync,
// rename. Never leaves a partial file.
gn_status gn_write_file_atomic(const char *path, const void *data, size_t n);

#ifdef __cplusplus
}
#endif
#endif
