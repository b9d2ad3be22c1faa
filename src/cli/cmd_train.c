/*
 * cmd_train.c — `guanaco grad`: one forward + backward on given token ids,
 * writing the loss and every LoRA gradient (PEFT key names) as safetensors.
 * It exists so tests can compare our backward pass with PEFT's.
 */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>  // isatty

#include <math.h>    // isnan

#include "dist/dist.h"        // mpirun: rank, size, abort
#include "formats/tensors.h" // gn_safetensors_save
#include "model/llama.h"     // adapter internals: module shapes and names
#include "train/data.h"      // gn_data_format_parse

int cmd_grad(int argc, char **argv) {
    const char *model = NULL, *adapter = NULL, *ids_s = NULL, *labels_s = NULL, *out = NULL;
    float dropout = 0.0f;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            printf("usage: guanaco grad -m BASE -a INIT_ADAPTER --ids \"1 2 3\" [--labels \"-100 2 3\"] -o GRADS.safetensors\n"
                   "One forward+backward; writes 'loss' and the gradient of every LoRA weight under PEFT's names.\n");
            return 0;
        }
        if (i + 1 >= argc) return cli_fail("%s needs a value", a), 2;
        if (!strcmp(a, "-m")) model = argv[++i];
        else if (!strcmp(a, "-a")) adapter = argv[++i];
        else if (!strcmp(a, "--ids")) ids_s = argv[++i];
        else if (!strcmp(a, "--labels")) labels_s = argv[++i];
        else if (!strcmp(a, "-o")) out = argv[++i];
        else if (!strcmp(a, "--dropout")) dropout = (float)atof(argv[++i]);
        else return cli_fail("grad: unknown option '%s'", a), 2;
    }
    if (!model || !adapter || !ids_s || !out) return cli_fail("grad: -m, -a, --ids and -o are required"), 2;
    int32_t *ids = NULL, *labels = NULL;
    int n = 0, nl = 0, rc = 1;
    if (cli_parse_ids(ids_s, &ids, &n)) return 2;
    labels = malloc(sizeof(int32_t) * (size_t)(n ? n : 1));
    if (labels_s) { // may contain -100: parse by hand
        const char *p = labels_s;
        char *end;
        while (*p && nl < n) {
            long v = strtol(p, &end, 10);
            if (end == p) break;
            labels[nl++] = (int32_t)v;
            p = end;
        }
        if (nl != n) { free(ids); free(labels); return cli_fail("grad: --labels must have %d integers", n), 2; }
    } else memcpy(labels, ids, sizeof(int32_t) * (size_t)n);
    gn_model *m = NULL;
    gn_adapter *init = NULL;
    gn_trainer *tr = NULL;
    if (gn_model_load(&m, model, NULL) || gn_adapter_load(&init, m, adapter, NULL)) { cli_fail_lib(); goto done; }
    gn_train_opts o;
    gn_train_opts_default(&o);
    o.lora_dropout = dropout;
    if (gn_trainer_new(&tr, m, &o, init)) { cli_fail_lib(); goto done; }
    int nvalid = 0;
    for (int t = 0; t + 1 < n; t++) nvalid += labels[t + 1] != -100;
    double loss;
    int ntok;
    if (gn_trainer_sequence(tr, ids, labels, n, nvalid ? 1.0f / (float)nvalid : 0.0f, 1, &loss, &ntok)) { cli_fail_lib(); goto done; }
    float lossf = ntok ? (float)(loss / ntok) : 0.0f;
    // gradients in the adapter's layout, named as PEFT names the weights
    const gn_adapter *a = gn_trainer_adapter(tr);
    const float *g = gn_trainer_grads(tr);
    const float *p0 = gn_trainer_params(tr);
    int nt = 1;
    for (int i = 0; i < a->n_layers * GN_N_MODS; i++) nt += a->mods[i].r ? 2 : 0;
    gn_tensor_out *ts = calloc((size_t)nt, sizeof *ts);
    char **names = calloc((size_t)nt, sizeof(char *));
    ts[0] = (gn_tensor_out){"loss", GN_DTYPE_F32, 1, {1}, &lossf, 4};
    int k = 1;
    const gn_config *c = gn_model_config(m);
    float **unperm = calloc((size_t)nt, sizeof(float *));
    for (int L = 0; L < a->n_layers; L++)
        for (int mi = 0; mi < GN_N_MODS; mi++) {
            const gn_lora_mod *lm = &a->mods[(size_t)L * GN_N_MODS + (size_t)mi];
            if (!lm->r) continue;
            for (int isB = 0; isB < 2; isB++) {
                names[k] = malloc(256);
                snprintf(names[k], 256, "base_model.model.model.layers.%d.%s.lora_%s.weight", L, GN_MOD_PATHS[mi], isB ? "B" : "A");
                const float *src = g + ((isB ? lm->B : lm->A) - p0);
                int64_t rows = isB ? lm->out : lm->r, cols = isB ? lm->r : lm->in;
                if (isB && c->rope_interleaved && (mi == GN_MOD_Q || mi == GN_MOD_K)) { // back to HF row order
                    int nh = mi == GN_MOD_Q ? c->n_heads : c->n_kv_heads, hs = c->head_dim;
                    float *u = malloc(sizeof(float) * (size_t)(rows * cols));
                    for (int h = 0; h < nh; h++)
                        for (int i = 0; i < hs / 2; i++) {
                            memcpy(u + ((size_t)h * hs + i) * cols, src + ((size_t)h * hs + 2 * i) * cols, sizeof(float) * (size_t)cols);
                            memcpy(u + ((size_t)h * hs + i + hs / 2) * cols, src + ((size_t)h * hs + 2 * i + 1) * cols, sizeof(float) * (size_t)cols);
                        }
                    unperm[k] = u;
                    src = u;
                }
                ts[k] = (gn_tensor_out){names[k], GN_DTYPE_F32, 2, {rows, cols}, src, (size_t)(rows * cols) * 4};
                k++;
            }
        }
    if (gn_safetensors_save(out, ts, k, NULL, 0)) cli_fail_lib();
    else { printf("loss %.8f tokens %d\n", lossf, ntok); rc = 0; }
    for (int i = 0; i < k; i++) { free(names[i]); free(unperm[i]); }
    free(names); free(ts); free(unperm);
done:
    gn_trainer_free(tr);
    gn_adapter_free(init);
    gn_model_free(m);
    free(ids);
    free(labels);
    return rc;
}

// ----------------------------------------------------------------------------
// guanaco finetune

static void progress(int64_t step, int max_steps, double loss, float lr, float gnorm, double tps, double eta, double eval_loss,
                     void *user) {
    (void)user;
    if (isatty(2)) fputs("\r\033[K", stderr); // over a moving within-step line
    if (!isnan(eval_loss)) { fprintf(stderr, "step %lld/%d  eval_loss %.4f\n", (long long)step, max_steps, eval_loss); return; }
    int e = (int)eta;
    fprintf(stderr, "step %lld/%d  loss %.4f  lr %.3g  grad_norm %.3f  %.0f tok/s  ETA %dh%02dm%02ds\n", (long long)step, max_steps,
            loss, lr, gnorm, tps, e / 3600, (e / 60) % 60, e % 60);
}

// Within a step: a line that moves (rewritten in place on a terminal, at most every 10 s to a
// file or pipe, never in the first 10 s of the run). It starts with spaces, so readers of the "step k/N" lines skip it.
static double progress_last; // when the last progress line was printed (the run's start at first)

static void progress_seq(int64_t step, int max_steps, int done, int total, double tps, double eta, void *user) {
    (void)user;
    static int tty = -1;
    if (tty < 0) tty = isatty(2);
    double now = gn_time_s();
    if (now - progress_last < (tty ? 0.5 : 10.0)) return;
    progress_last = now;
    int e = (int)eta;
    fprintf(stderr, "%s  step %lld/%d: sequence %d/%d done  %.0f tok/s  ETA %dh%02dm%02ds%s", tty ? "\r\033[K" : "",
            (long long)step, max_steps, done, total, tps, e / 3600, (e / 60) % 60, e % 60, tty ? "" : "\n");
    fflush(stderr);
}

static const char FINETUNE_HELP[] =
    "usage: guanaco finetune -m BASE -d DATA.jsonl -o RUN_DIR [flags]\n"
    "QLoRA: trains a LoRA adapter on the frozen base; writes PEFT checkpoints, log.jsonl and the final adapter.\n"
    "  --preset NAME                  guanaco-7b|guanaco-13b|guanaco-33b|guanaco-65b (the released settings; flags override)\n"
    "  --dataset-format F             auto (default), oasst1, alpaca, input-output, messages\n"
    "  --source-max-len N / --target-max-len N     (1024 / 256)\n"
    "  --train-on-source              loss on the source tokens too\n"
    "  --no-group-by-length           plain shuffled order (default: HF's length-grouped order)\n"
    "  --no-shuffle                   rows in file order every epoch\n"
    "  --eval-dataset-size N          rows held out for eval loss (0)   --eval-steps N (0 = never)\n"
    "  --save-steps N                 checkpoint every N steps (250) and at the end\n"
    "  --max-steps N (100)  --per-device-batch-size N (1)  --gradient-accumulation-steps N (16)\n"
    "  --learning-rate LR (2e-4)  --lr-scheduler constant|linear|cosine  --warmup-ratio R  --warmup-steps N\n"
    "  --adam-beta2 B (0.999)  --weight-decay W (0)  --max-grad-norm N (0.3)\n"
    "  --lora-r R (64)  --lora-alpha A (16)  --lora-dropout P (0)  --target-modules q_proj,k_proj,...|all\n"
    "  --init-adapter DIR             start from this PEFT adapter\n"
    "  --4bit                         NF4 base with double quantization (QLoRA); --quant-type nf4|fp4,\n"
    "                                 --no-double-quant, --blocksize N (64)\n"
    "  --compute-dtype bf16|f32       bf16 (default, qlora --bf16): the 4-bit, LoRA and head products take bf16\n"
    "                                 inputs (float32 sums), LoRA weights kept bf16-rounded; f32: all f32\n"
    "  --gradient-checkpointing auto|true|false   recompute each layer's intermediates in the backward\n"
    "                                 (true, as qlora.py) or keep them from the forward (false); auto (default):\n"
    "                                 keep them when they take at most 1 GiB. Same results either way\n"
    "  --seed S (42)  --resume  -t N (threads)  -v\n"
    "  --device cpu|cuda              where the forward and backward run (cuda: a make CUDA=1 build)\n"
    "Data parallel (a `make MPI=1` build): mpirun -np N guanaco finetune ... splits every global batch\n"
    "(per-device-batch-size x gradient-accumulation-steps sequences, whatever N) over N ranks and sums the\n"
    "LoRA gradients; rank 0 writes RUN_DIR. --resume works with any N. Threads per rank default to the\n"
    "machine's cores / ranks on it.\n";

int cmd_finetune(int argc, char **argv) {
    gn_finetune_opts o;
    gn_finetune_defaults(&o);
    int threads = 0, bf16 = 1, verbose = 0, four_bit = 0, no_dq = 0, blocksize = 0, device = GN_DEVICE_CPU;
    gn_dtype qtype = GN_DTYPE_NF4;
    // the preset first, so flags override it
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], "--preset") && gn_finetune_preset(&o, argv[i + 1])) return cli_fail_lib(), 2;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { fputs(FINETUNE_HELP, stdout); return 0; }
        if (!strcmp(a, "--train-on-source")) { o.train_on_source = 1; continue; }
        if (!strcmp(a, "--no-group-by-length")) { o.group_by_length = 0; continue; }
        if (!strcmp(a, "--no-shuffle")) { o.no_shuffle = 1; continue; }
        if (!strcmp(a, "--group-by-length")) { o.group_by_length = 1; continue; }
        if (!strcmp(a, "--resume")) { o.resume = 1; continue; }
        if (!strcmp(a, "--4bit")) { four_bit = 1; continue; }
        if (!strcmp(a, "--no-double-quant")) { no_dq = 1; continue; }
        if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) { verbose = 1; continue; }
        if (i + 1 >= argc) return cli_fail("%s needs a value (see guanaco finetune --help)", a), 2;
        const char *v = argv[++i];
        char *end = NULL;
        double x = strtod(v, &end);
        int num_ok = end != v && *end == 0;
#define NUM(flag, lo, hi) (!strcmp(a, flag) && (num_ok && x >= (lo) && x <= (hi) ? 1 : (cli_fail("%s: '%s' (expected a number %g..%g)", flag, v, (double)(lo), (double)(hi)), -1)))
        int r;
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) o.model_path = v;
        else if (!strcmp(a, "-d") || !strcmp(a, "--data")) o.data_path = v;
        else if (!strcmp(a, "-o") || !strcmp(a, "--output")) o.out_dir = v;
        else if (!strcmp(a, "--init-adapter")) o.init_adapter = v;
        else if (!strcmp(a, "--device")) { if (gn_device_parse(v, &device)) return cli_fail_lib(), 2; }
        else if (!strcmp(a, "--preset")) continue;
        else if (!strcmp(a, "--dataset-format")) {
            if (gn_data_format_parse(v, &o.data_format)) return cli_fail_lib(), 2;
        } else if (!strcmp(a, "--lr-scheduler")) {
            if (!strcmp(v, "constant")) o.scheduler = GN_SCHED_CONSTANT;
            else if (!strcmp(v, "linear")) o.scheduler = GN_SCHED_LINEAR;
            else if (!strcmp(v, "cosine")) o.scheduler = GN_SCHED_COSINE;
            else return cli_fail("--lr-scheduler: '%s' (expected constant, linear or cosine)", v), 2;
        } else if (!strcmp(a, "--gradient-checkpointing")) {
            if (!strcmp(v, "auto")) o.train.checkpointing = 0;
            else if (!strcmp(v, "true")) o.train.checkpointing = 1;
            else if (!strcmp(v, "false")) o.train.checkpointing = 2;
            else return cli_fail("--gradient-checkpointing: '%s' (expected auto, true or false)", v), 2;
        } else if (!strcmp(a, "--quant-type")) {
            if (!strcmp(v, "nf4")) qtype = GN_DTYPE_NF4;
            else if (!strcmp(v, "fp4")) qtype = GN_DTYPE_FP4;
            else return cli_fail("--quant-type: '%s' (expected nf4 or fp4)", v), 2;
        } else if (!strcmp(a, "--compute-dtype")) {
            if (!strcmp(v, "bf16")) bf16 = 1;
            else if (!strcmp(v, "f32")) bf16 = 0;
            else return cli_fail("--compute-dtype: '%s' (expected bf16 or f32)", v), 2;
        } else if (!strcmp(a, "--target-modules")) {
            unsigned mask = 0;
            char buf[256];
            snprintf(buf, sizeof buf, "%s", v);
            for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
                if (!strcmp(tok, "all")) { mask = (1u << GN_N_MODS) - 1; continue; }
                int f = -1;
                for (int k = 0; k < GN_N_MODS; k++) if (!strcmp(tok, GN_MOD_NAMES[k])) f = k;
                if (f < 0) return cli_fail("--target-modules: unknown module '%s' (expected q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj or all)", tok), 2;
                mask |= 1u << f;
            }
            o.train.target_mask = mask;
        }
        else if ((r = NUM("--source-max-len", 1, 1 << 20))) { if (r < 0) return 2; o.source_max_len = (int)x; }
        else if ((r = NUM("--target-max-len", 1, 1 << 20))) { if (r < 0) return 2; o.target_max_len = (int)x; }
        else if ((r = NUM("--eval-dataset-size", 0, 1 << 30))) { if (r < 0) return 2; o.eval_size = (int)x; }
        else if ((r = NUM("--eval-steps", 0, 1 << 30))) { if (r < 0) return 2; o.eval_steps = (int)x; }
        else if ((r = NUM("--save-steps", 0, 1 << 30))) { if (r < 0) return 2; o.save_steps = (int)x; }
        else if ((r = NUM("--max-steps", 1, 1 << 30))) { if (r < 0) return 2; o.max_steps = (int)x; }
        else if ((r = NUM("--per-device-batch-size", 1, 64))) { if (r < 0) return 2; o.batch_size = (int)x; }
        else if ((r = NUM("--gradient-accumulation-steps", 1, 1 << 20))) { if (r < 0) return 2; o.grad_accum = (int)x; }
        else if ((r = NUM("--learning-rate", 0, 10))) { if (r < 0) return 2; o.train.lr = (float)x; }
        else if ((r = NUM("--warmup-ratio", 0, 1))) { if (r < 0) return 2; o.warmup_ratio = (float)x; }
        else if ((r = NUM("--warmup-steps", 0, 1 << 30))) { if (r < 0) return 2; o.warmup_steps = (int)x; }
        else if ((r = NUM("--adam-beta2", 0, 0.999999999))) { if (r < 0) return 2; o.train.beta2 = (float)x; }
        else if ((r = NUM("--weight-decay", 0, 10))) { if (r < 0) return 2; o.train.weight_decay = (float)x; }
        else if ((r = NUM("--max-grad-norm", 0, 1e9))) { if (r < 0) return 2; o.train.max_grad_norm = (float)x; }
        else if ((r = NUM("--lora-r", 1, 4096))) { if (r < 0) return 2; o.train.lora_r = (int)x; }
        else if ((r = NUM("--lora-alpha", 0, 1e6))) { if (r < 0) return 2; o.train.lora_alpha = (float)x; }
        else if ((r = NUM("--lora-dropout", 0, 0.99))) { if (r < 0) return 2; o.train.lora_dropout = (float)x; }
        else if ((r = NUM("--blocksize", 16, 4096))) { if (r < 0) return 2; blocksize = (int)x; }
        else if ((r = NUM("--seed", 0, 1.8e19))) { if (r < 0) return 2; o.train.seed = (uint64_t)x; }
        else if ((r = NUM("-t", 1, 1024)) || (r = NUM("--threads", 1, 1024))) { if (r < 0) return 2; threads = (int)x; }
        else return cli_fail("finetune: unknown option '%s' (see guanaco finetune --help)", a), 2;
#undef NUM
    }
    if (!o.model_path || !o.data_path || !o.out_dir) return cli_fail("finetune: -m, -d and -o are required (see --help)"), 2;
    // under mpirun: join the job; ranks other than 0 stay quiet unless they fail
    if (gn_dist_init()) return cli_fail_lib();
    int rank = gn_dist_rank(), nranks = gn_dist_size();
    if (!threads && gn_dist_local_size() > 1 && !getenv("OMP_NUM_THREADS")) { // share this machine's cores
        threads = gn_get_threads() / gn_dist_local_size();
        if (threads < 1) threads = 1;
    }
    if (threads) gn_set_threads(threads);
    gn_set_verbosity(rank > 0 ? GN_LOG_ERROR : verbose ? GN_LOG_INFO : GN_LOG_WARN);
    o.train.bf16_params = bf16;
    o.progress = rank == 0 ? progress : NULL;
    o.progress_seq = rank == 0 ? progress_seq : NULL;
    progress_last = gn_time_s(); // the first within-step line comes 10 s (0.5 s on a terminal) into the run
    // base: NF4 linear layers (--4bit) with bf16 or f32 compute, or 16/32-bit weights;
    // embeddings and lm_head stay f32 (the LoRA gradients flow through them in f32)
    gn_load_opts lo = {.weight_dtype = four_bit ? qtype : (bf16 ? GN_DTYPE_BF16 : GN_DTYPE_F32), .no_double_quant = no_dq,
                       .blocksize = blocksize, .compute_dtype = bf16 ? GN_DTYPE_BF16 : GN_DTYPE_F32, .device = device};
    gn_model *m = NULL;
    double t0 = gn_time_s();
    if (gn_model_load(&m, o.model_path, &lo) || gn_finetune_run(&o, m)) {
        if (nranks == 1) {
            int rc = cli_fail_lib();
            gn_model_free(m);
            gn_dist_finalize(); // `mpirun -np 1`: leave the job cleanly
            return rc;
        }
        // a rank that stops must stop them all: the others would wait in the next all-reduce
        cli_fail("rank %d of %d: %s", rank, nranks, gn_last_error());
        gn_dist_abort(1);
    }
    if (rank == 0) fprintf(stderr, "finetune: done in %.1f s; adapter in %s\n", gn_time_s() - t0, o.out_dir);
    gn_model_free(m);
    gn_dist_finalize();
    return 0;
}

// ----------------------------------------------------------------------------
// guanaco convert-adapter: re-save a PEFT adapter (.bin or safetensors, any
// dtype) as PEFT safetensors in the chosen dtype, checked against a base.

int cmd_convert_adapter(int argc, char **argv) {
    const char *model = NULL, *adapter = NULL, *out = NULL, *dtype = "f32";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            printf("usage: guanaco convert-adapter -m BASE -a ADAPTER_DIR -o OUT_DIR [--dtype f32|f16|bf16]\n"
                   "Checks a PEFT adapter against the base and writes it as adapter_model.safetensors + adapter_config.json.\n");
            return 0;
        }
        if (i + 1 >= argc) return cli_fail("%s needs a value", a), 2;
        if (!strcmp(a, "-m")) model = argv[++i];
        else if (!strcmp(a, "-a")) adapter = argv[++i];
        else if (!strcmp(a, "-o")) out = argv[++i];
        else if (!strcmp(a, "--dtype")) dtype = argv[++i];
        else return cli_fail("convert-adapter: unknown option '%s'", a), 2;
    }
    if (!model || !adapter || !out) return cli_fail("convert-adapter: -m, -a and -o are required"), 2;
    gn_dtype dt = !strcmp(dtype, "f32") ? GN_DTYPE_F32 : !strcmp(dtype, "f16") ? GN_DTYPE_F16 : !strcmp(dtype, "bf16") ? GN_DTYPE_BF16 : GN_DTYPE_COUNT;
    if (dt == GN_DTYPE_COUNT) return cli_fail("--dtype: '%s' (expected f32, f16 or bf16)", dtype), 2;
    gn_model *m = NULL;
    gn_adapter *a = NULL;
    int rc = 0;
    if (gn_model_load(&m, model, NULL) || gn_adapter_load(&a, m, adapter, NULL) || gn_adapter_save(a, out, dt, model)) rc = cli_fail_lib();
    gn_adapter_free(a);
    gn_model_free(m);
    return rc;
}

// ----------------------------------------------------------------------------
// guanaco eval-loss: mean per-sequence loss of a data file (qlora's eval loss)

int cmd_eval_loss(int argc, char **argv) {
    gn_finetune_opts o;
    gn_finetune_defaults(&o);
    const char *model = NULL, *adapter = NULL, *data = NULL;
    int four_bit = 0, threads = 0, device = GN_DEVICE_CPU;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            printf("usage: guanaco eval-loss -m BASE [--4bit] [-a ADAPTER] -d DATA.jsonl [--dataset-format F]\n"
                   "       [--source-max-len N] [--target-max-len N] [--train-on-source] [--device cpu|cuda]\n"
                   "Prints the mean over rows of each row's mean token loss (rows built as finetune builds them).\n");
            return 0;
        }
        if (!strcmp(a, "--4bit")) { four_bit = 1; continue; }
        if (!strcmp(a, "--train-on-source")) { o.train_on_source = 1; continue; }
        if (i + 1 >= argc) return cli_fail("%s needs a value", a), 2;
        const char *v = argv[++i];
        if (!strcmp(a, "-m")) model = v;
        else if (!strcmp(a, "-a")) adapter = v;
        else if (!strcmp(a, "-d")) data = v;
        else if (!strcmp(a, "-t")) threads = atoi(v);
        else if (!strcmp(a, "--device")) { if (gn_device_parse(v, &device)) return cli_fail_lib(), 2; }
        else if (!strcmp(a, "--source-max-len")) o.source_max_len = atoi(v);
        else if (!strcmp(a, "--target-max-len")) o.target_max_len = atoi(v);
        else if (!strcmp(a, "--dataset-format")) {
            if (gn_data_format_parse(v, &o.data_format)) return cli_fail_lib(), 2;
        } else return cli_fail("eval-loss: unknown option '%s'", a), 2;
    }
    if (!model || !data) return cli_fail("eval-loss: -m and -d are required"), 2;
    if (o.source_max_len <= 0 || o.target_max_len <= 0) return cli_fail("eval-loss: length limits must be positive"), 2;
    if (threads > 0) gn_set_threads(threads);
    gn_load_opts lo = {.weight_dtype = four_bit ? GN_DTYPE_NF4 : GN_DTYPE_F32, .compute_dtype = GN_DTYPE_F32, .device = device};
    gn_model *m = NULL;
    gn_adapter *ad = NULL;
    int rc = 0;
    double loss = 0;
    if (gn_model_load(&m, model, &lo) || (adapter && gn_adapter_load(&ad, m, adapter, NULL)) ||
        gn_eval_loss_file(m, ad, data, &o, &loss))
        rc = cli_fail_lib();
    else printf("%.6f\n", loss);
    gn_adapter_free(ad);
    gn_model_free(m);
    return rc;
}
