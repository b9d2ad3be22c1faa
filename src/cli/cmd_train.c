/*
 * cmd_train.c — the training commands: `guanaco finetune` (QLoRA), `guanaco
 * eval-loss`, `guanaco convert-adapter`, and `guanaco grad`: one forward +
 * backward on given token ids, writing the loss and every LoRA gradient (PEFT key
 * names) as safetensors, so tests can compare our backward pass with PEFT's.
 */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>  // isatty

#include <math.h>    // isnan


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
        else if (!strcmp(a, "--dropout")) {
            double x;
            if (cli_num(a, argv[++i], 0, 0.99, &x)) return 2;
            dropout = (float)x;
        }
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
    if (gn_trainer_save_grads(tr, m, out, lossf)) cli_fail_lib();
    else { printf("loss %.8f tokens %d\n", lossf, ntok); rc = 0; }
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
    "                                 keep them when they take at most 512 MiB, else (4-bit, bf16) keep the\n"
    "                                 q/k/v, gate and up products' bf16 outputs when those do. Same results\n"
    "                                 either way\n"
    "  --seed S (42)  --resume  -t N (threads)  -v\n"
    "  --device cpu|cuda              where the forward and backward run (cuda: a make CUDA=1 build)\n"
    "  --host-adamw                   --device cuda: AdamW in the host loop instead of the GPU kernel (same bits;\n"
    "                                 for checks; also GN_CUDA_HOST_ADAMW=1)\n"
    "  --nccl auto|on|off             GPU ranks sum gradients with NCCL (auto: when several ranks and the build\n"
    "                                 has it; on: even for one rank; off: MPI in host memory; also GN_DIST_NCCL=1|0)\n"
    "Data parallel (a `make MPI=1` build): mpirun -np N guanaco finetune ... splits every global batch\n"
    "(per-device-batch-size x gradient-accumulation-steps sequences, whatever N) over N ranks and sums the\n"
    "LoRA gradients; rank 0 writes RUN_DIR. --resume works with any N. Threads per rank default to the\n"
    "machine's cores / ranks on it.\n";

int cmd_finetune(int argc, char **argv) {
    gn_finetune_opts o;
    gn_finetune_defaults(&o);
    cli_model mo; // -m -t --4bit --quant-type --no-double-quant --blocksize --compute-dtype --device --seed -v
    cli_model_init(&mo, CLI_SEED | CLI_NO_ADAPTER | CLI_NO_DTYPE);
    // the environment switches of earlier versions, then the preset, so flags override both
    const char *e;
    if ((e = getenv("GN_DIST_NCCL")) && *e) o.nccl = atoi(e) ? GN_NCCL_ON : GN_NCCL_OFF;
    if ((e = getenv("GN_CUDA_HOST_ADAMW")) && *e && strcmp(e, "0")) o.train.host_adamw = 1;
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], "--preset") && gn_finetune_preset(&o, argv[i + 1])) return cli_fail_lib(), 2;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { fputs(FINETUNE_HELP, stdout); return 0; }
        int r = cli_model_flag(&mo, argc, argv, &i);
        if (r < 0) return 2;
        if (r) continue;
        if (!strcmp(a, "--train-on-source")) { o.train_on_source = 1; continue; }
        if (!strcmp(a, "--no-group-by-length")) { o.group_by_length = 0; continue; }
        if (!strcmp(a, "--no-shuffle")) { o.no_shuffle = 1; continue; }
        if (!strcmp(a, "--group-by-length")) { o.group_by_length = 1; continue; }
        if (!strcmp(a, "--resume")) { o.resume = 1; continue; }
        if (!strcmp(a, "--host-adamw")) { o.train.host_adamw = 1; continue; }
        if (i + 1 >= argc) return cli_fail("%s needs a value (see guanaco finetune --help)", a), 2;
        const char *v = argv[++i];
        char *end = NULL;
        double x = strtod(v, &end);
        int num_ok = end != v && *end == 0;
// 1: this flag, and its value is good; -1: this flag, bad value (printed); 0: another flag
#define NUM(flag, lo, hi) (strcmp(a, flag) ? 0 : num_ok && x >= (lo) && x <= (hi) ? 1 : (cli_fail("%s: '%s' (expected a number %g..%g)", flag, v, (double)(lo), (double)(hi)), -1))
#define INT(flag, lo, hi, dst) (strcmp(a, flag) ? 0 : cli_int(flag, v, lo, hi, dst) ? -1 : 1)
        if (!strcmp(a, "-d") || !strcmp(a, "--data")) o.data_path = v;
        else if (!strcmp(a, "-o") || !strcmp(a, "--output")) o.out_dir = v;
        else if (!strcmp(a, "--init-adapter")) o.init_adapter = v;
        else if (!strcmp(a, "--preset")) continue;
        else if (!strcmp(a, "--dataset-format")) {
            if (gn_data_format_parse(v, &o.data_format)) return cli_fail_lib(), 2;
        } else if (!strcmp(a, "--lr-scheduler")) {
            if (!strcmp(v, "constant")) o.scheduler = GN_SCHED_CONSTANT;
            else if (!strcmp(v, "linear")) o.scheduler = GN_SCHED_LINEAR;
            else if (!strcmp(v, "cosine")) o.scheduler = GN_SCHED_COSINE;
            else return cli_fail("--lr-scheduler: '%s' (expected constant, linear or cosine)", v), 2;
        } else if (!strcmp(a, "--nccl")) {
            if (!strcmp(v, "auto")) o.nccl = GN_NCCL_AUTO;
            else if (!strcmp(v, "on")) o.nccl = GN_NCCL_ON;
            else if (!strcmp(v, "off")) o.nccl = GN_NCCL_OFF;
            else return cli_fail("--nccl: '%s' (expected auto, on or off)", v), 2;
        } else if (!strcmp(a, "--gradient-checkpointing")) {
            if (!strcmp(v, "auto")) o.train.checkpointing = 0;
            else if (!strcmp(v, "true")) o.train.checkpointing = 1;
            else if (!strcmp(v, "false")) o.train.checkpointing = 2;
            else return cli_fail("--gradient-checkpointing: '%s' (expected auto, true or false)", v), 2;
        } else if (!strcmp(a, "--target-modules")) {
            if (gn_lora_targets_parse(v, &o.train.target_mask)) return cli_fail_lib(), 2;
        }
        else if ((r = INT("--source-max-len", 1, 1 << 20, &o.source_max_len))) { if (r < 0) return 2; }
        else if ((r = INT("--target-max-len", 1, 1 << 20, &o.target_max_len))) { if (r < 0) return 2; }
        else if ((r = INT("--eval-dataset-size", 0, 1 << 30, &o.eval_size))) { if (r < 0) return 2; }
        else if ((r = INT("--eval-steps", 0, 1 << 30, &o.eval_steps))) { if (r < 0) return 2; }
        else if ((r = INT("--save-steps", 0, 1 << 30, &o.save_steps))) { if (r < 0) return 2; }
        else if ((r = INT("--max-steps", 1, 1 << 30, &o.max_steps))) { if (r < 0) return 2; }
        else if ((r = INT("--per-device-batch-size", 1, 64, &o.batch_size))) { if (r < 0) return 2; }
        else if ((r = INT("--gradient-accumulation-steps", 1, 1 << 20, &o.grad_accum))) { if (r < 0) return 2; }
        // --learning-rate: any float (a test diverges on purpose with 1e30)
        else if ((r = NUM("--learning-rate", 0, 3e38))) { if (r < 0) return 2; o.train.lr = (float)x; }
        else if ((r = NUM("--warmup-ratio", 0, 1))) { if (r < 0) return 2; o.warmup_ratio = (float)x; }
        else if ((r = INT("--warmup-steps", 0, 1 << 30, &o.warmup_steps))) { if (r < 0) return 2; }
        else if ((r = NUM("--adam-beta2", 0, 0.999999999))) { if (r < 0) return 2; o.train.beta2 = (float)x; }
        else if ((r = NUM("--weight-decay", 0, 10))) { if (r < 0) return 2; o.train.weight_decay = (float)x; }
        else if ((r = NUM("--max-grad-norm", 0, 1e9))) { if (r < 0) return 2; o.train.max_grad_norm = (float)x; }
        else if ((r = INT("--lora-r", 1, 4096, &o.train.lora_r))) { if (r < 0) return 2; }
        else if ((r = NUM("--lora-alpha", 0, 1e6))) { if (r < 0) return 2; o.train.lora_alpha = (float)x; }
        else if ((r = NUM("--lora-dropout", 0, 0.99))) { if (r < 0) return 2; o.train.lora_dropout = (float)x; }
        else return cli_fail("finetune: unknown option '%s' (see guanaco finetune --help)", a), 2;
#undef NUM
#undef INT
    }
    o.model_path = mo.model;
    if (mo.seed_given) o.train.seed = mo.seed;
    int threads = mo.threads, bf16 = mo.compute_dtype != GN_DTYPE_F32; // compute: bf16 unless --compute-dtype f32
    if (!o.model_path || !o.data_path || !o.out_dir) return cli_fail("finetune: -m, -d and -o are required (see --help)"), 2;
    // under mpirun: join the job; ranks other than 0 stay quiet unless they fail
    if (gn_dist_init()) return cli_fail_lib();
    int rank = gn_dist_rank(), nranks = gn_dist_size();
    if (!threads && gn_dist_local_size() > 1 && !getenv("OMP_NUM_THREADS")) { // share this machine's cores
        threads = gn_get_threads() / gn_dist_local_size();
        if (threads < 1) threads = 1;
    }
    if (threads) gn_set_threads(threads);
    gn_set_verbosity(rank > 0 ? GN_LOG_ERROR : mo.verbose ? GN_LOG_INFO : GN_LOG_WARN);
    o.train.bf16_params = bf16;
    o.progress = rank == 0 ? progress : NULL;
    o.progress_seq = rank == 0 ? progress_seq : NULL;
    progress_last = gn_time_s(); // the first within-step line comes 10 s (0.5 s on a terminal) into the run
    // base: NF4 linear layers (--4bit) with bf16 or f32 compute, or 16/32-bit weights;
    // embeddings and lm_head stay f32 (the LoRA gradients flow through them in f32)
    mo.dtype = bf16 ? GN_DTYPE_BF16 : GN_DTYPE_F32;
    mo.compute_dtype = mo.dtype;
    gn_load_opts lo = cli_load_opts(&mo);
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
    const gn_load_opts lo = {.mmap_weights = 1}; // the shapes are all it needs
    if (gn_model_load(&m, model, &lo) || gn_adapter_load(&a, m, adapter, NULL) || gn_adapter_save(a, out, dt, model)) rc = cli_fail_lib();
    gn_adapter_free(a);
    gn_model_free(m);
    return rc;
}

// ----------------------------------------------------------------------------
// guanaco eval-loss: mean per-sequence loss of a data file (qlora's eval loss)

int cmd_eval_loss(int argc, char **argv) {
    gn_finetune_opts o;
    gn_finetune_defaults(&o);
    const char *data = NULL;
    cli_model mo; // -m -a -t --dtype --4bit ... --device -v
    cli_model_init(&mo, 0);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            printf("usage: guanaco eval-loss -m BASE [--4bit] [-a ADAPTER] -d DATA.jsonl [--dataset-format F]\n"
                   "       [--source-max-len N] [--target-max-len N] [--train-on-source] [--device cpu|cuda]\n"
                   "Prints the mean over rows of each row's mean token loss (rows built as finetune builds them).\n"
                   "Model flags (4-bit compute defaults to f32 here):\n%s", CLI_MODEL_HELP);
            return 0;
        }
        int r = cli_model_flag(&mo, argc, argv, &i);
        if (r < 0) return 2;
        if (r) continue;
        if (!strcmp(a, "--train-on-source")) { o.train_on_source = 1; continue; }
        if (i + 1 >= argc) return cli_fail("%s needs a value", a), 2;
        const char *v = argv[++i];
        if (!strcmp(a, "-d")) data = v;
        else if (!strcmp(a, "--source-max-len")) { if (cli_int(a, v, 1, 1 << 20, &o.source_max_len)) return 2; }
        else if (!strcmp(a, "--target-max-len")) { if (cli_int(a, v, 1, 1 << 20, &o.target_max_len)) return 2; }
        else if (!strcmp(a, "--dataset-format")) {
            if (gn_data_format_parse(v, &o.data_format)) return cli_fail_lib(), 2;
        } else return cli_fail("eval-loss: unknown option '%s'", a), 2;
    }
    if (!mo.model || !data) return cli_fail("eval-loss: -m and -d are required"), 2;
    if (mo.compute_dtype == GN_DTYPE_COUNT) mo.compute_dtype = GN_DTYPE_F32; // this command's default
    gn_adapter *ad = NULL;
    gn_model *m = cli_model_load(&mo, &ad);
    if (!m) return 1;
    int rc = 0;
    double loss = 0;
    if (gn_eval_loss_file(m, ad, data, &o, &loss))
        rc = cli_fail_lib();
    else printf("%.6f\n", loss);
    gn_adapter_free(ad);
    gn_model_free(m);
    return rc;
}
