/*
 * finetune.c — the QLoRA training run: data, schedule, gradient accumulation,
 * evaluation, progress, checkpoints and exact resume.
 *
 * RUN_DIR layout:
 *   checkpoint-N/   adapter_model.safetensors + adapter_config.json (PEFT, f32),
 *                   optimizer.bin (AdamW m and v), trainer_state.json (step,
 *                   RNG, data position). Written in a temporary folder, fsynced,
 *                   then renamed: a checkpoint folder either exists whole or not.
 *   adapter_model.safetensors, adapter_config.json   the final adapter
 *   log.jsonl       one line per step (and per evaluation)
 *   optimizer.mmap  the live AdamW state (file-backed mapping: may exceed RAM)
 *
 * Loss: each micro-batch's loss is its token mean; the step's loss is the mean
 * of micro-batch means (HF Trainer with gradient accumulation, docs/FACTS.md §6.5).
 *
 * Data parallel (`mpirun -np N`, src/dist/dist.h): the global batch of a step is
 * batch_size x grad_accum sequences whatever N is. Every rank walks the same data
 * order and plans the whole step; rank r runs the sequences g with g % N == r,
 * each weighted by its micro-batch's token count (known to all ranks), with a
 * dropout key that depends only on the step's RNG and g. The LoRA gradients and
 * the micro-batch losses are then summed over ranks, and every rank takes the same
 * clip + AdamW step. So N ranks compute what one process computes (up to float
 * summation order), and a run may resume with a different N. Rank 0 writes the
 * log, the checkpoints and the final adapter; at resume it reads the checkpoint
 * and broadcasts it. Other ranks keep their AdamW state in memory.
 */
#include "../model/llama.h"
#include "data.h"
#include "../core/plot.h" // loss curve PNG
#include "../dist/dist.h"   // ranks, all-reduce (data parallel)

#include <cjson/cJSON.h> // trainer_state.json
#include <dirent.h>      // finding checkpoints
#include <errno.h>       // errno
#include <fcntl.h>       // open (fsync of folders)
#include <math.h>        // isfinite, cosf
#include <stdio.h>       // snprintf, fprintf
#include <stdlib.h>      // free
#include <sys/stat.h>    // mkdir
#ifdef GN_TEST_HOOKS
#include <signal.h>      // raise (test hook)
#endif
#include <unistd.h>      // fsync, rename

// ----------------------------------------------------------------------------
// presets (docs/FACTS.md §6.1, the released finetune_guanaco_*.sh scripts)

gn_status gn_finetune_preset(gn_finetune_opts *o, const char *name) {
    static const struct { const char *name; float lr, dropout; } P[] = {
        {"guanaco-7b", 2e-4f, 0.1f}, {"guanaco-13b", 2e-4f, 0.1f}, {"guanaco-33b", 1e-4f, 0.05f}, {"guanaco-65b", 1e-4f, 0.05f}};
    for (size_t i = 0; i < sizeof P / sizeof P[0]; i++) {
        if (strcmp(name, P[i].name)) continue;
        o->train.lr = P[i].lr;
        o->train.lora_dropout = P[i].dropout;
        o->train.lora_r = 64;
        o->train.lora_alpha = 16.0f;
        o->train.max_grad_norm = 0.3f;
        o->train.beta2 = 0.999f;
        o->train.target_mask = (1u << GN_N_MODS) - 1;
        o->batch_size = 1;
        o->grad_accum = 16;
        o->max_steps = 1875;
        o->source_max_len = 16;
        o->target_max_len = 512;
        o->scheduler = GN_SCHED_CONSTANT;
        o->group_by_length = 1;
        o->eval_steps = 187;
        o->save_steps = 500;
        o->eval_size = 1024;
        o->data_format = GN_DATA_OASST1;
        return GN_OK;
    }
    return gn_err(GN_ERR_ARG, "--preset '%s': expected guanaco-7b, guanaco-13b, guanaco-33b or guanaco-65b", name);
}

void gn_finetune_defaults(gn_finetune_opts *o) {
    memset(o, 0, sizeof *o);
    gn_train_opts_default(&o->train);
    o->batch_size = 1;
    o->grad_accum = 16;
    o->max_steps = 100;
    o->source_max_len = 1024; // qlora.py defaults
    o->target_max_len = 256;
    o->group_by_length = 1;
    o->scheduler = GN_SCHED_CONSTANT;
    o->eval_size = 0;
    o->eval_steps = 0;
    o->save_steps = 250;
    o->log_every = 1;
}

// HF get_scheduler: constant ignores warmup (docs/FACTS.md §6.3); linear / cosine warm
// up linearly then decay to 0 at max_steps.
static float lr_at(const gn_finetune_opts *o, int64_t step) { // step: 0-based index of the update
    float base = o->train.lr;
    int warm = o->warmup_steps > 0 ? o->warmup_steps : (int)ceilf(o->warmup_ratio * (float)o->max_steps);
    if (o->scheduler == GN_SCHED_CONSTANT) return base;
    if (step < warm) return base * (float)step / (float)(warm > 0 ? warm : 1);
    double prog = (double)(step - warm) / (double)((o->max_steps - warm) > 0 ? (o->max_steps - warm) : 1);
    if (o->scheduler == GN_SCHED_LINEAR) return (float)(base * fmax(0.0, 1.0 - prog));
    return (float)(base * 0.5 * (1.0 + cos(M_PI * prog)));
}

// ----------------------------------------------------------------------------
// files

static gn_status fsync_path(const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return gn_err(GN_ERR_IO, "%s: cannot open for fsync: %s", path, strerror(errno));
    int r = fsync(fd);
    close(fd);
    return r == 0 ? GN_OK : gn_err(GN_ERR_IO, "%s: fsync failed: %s", path, strerror(errno));
}

static gn_status write_json(const char *path, cJSON *j) {
    char *txt = cJSON_Print(j);
    gn_status st = gn_write_file_atomic(path, txt, strlen(txt));
    free(txt);
    return st;
}

typedef struct {
    int64_t step;
    uint64_t rng;
    int epoch, pos;     // data position: next example is order[pos] of epoch
    double tokens_seen;
} run_state;

static gn_status save_checkpoint(const gn_finetune_opts *o, gn_trainer *tr, const run_state *rs) {
    char tmp[4096], fin[4096], p[4200];
    snprintf(tmp, sizeof tmp, "%s/.checkpoint-%lld.tmp", o->out_dir, (long long)rs->step);
    snprintf(fin, sizeof fin, "%s/checkpoint-%lld", o->out_dir, (long long)rs->step);
    // a leftover temporary folder from a killed run is replaced
    snprintf(p, sizeof p, "%s/optimizer.bin", tmp); unlink(p);
    snprintf(p, sizeof p, "%s/trainer_state.json", tmp); unlink(p);
    snprintf(p, sizeof p, "%s/adapter_model.safetensors", tmp); unlink(p);
    snprintf(p, sizeof p, "%s/adapter_config.json", tmp); unlink(p);
    rmdir(tmp);
    if (mkdir(tmp, 0755) != 0) return gn_err(GN_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
    gn_status st = gn_adapter_save(gn_trainer_adapter(tr), tmp, GN_DTYPE_F32, o->model_path);
    if (st) return st;
    snprintf(p, sizeof p, "%s/optimizer.bin", tmp);
    if ((st = gn_write_file_atomic(p, gn_trainer_state(tr), gn_trainer_state_size(tr)))) return st;
    cJSON *j = cJSON_CreateObject();
    char buf[32];
    cJSON_AddNumberToObject(j, "global_step", (double)rs->step);
    snprintf(buf, sizeof buf, "%llu", (unsigned long long)rs->rng);
    cJSON_AddStringToObject(j, "rng", buf);
    cJSON_AddNumberToObject(j, "epoch", rs->epoch);
    cJSON_AddNumberToObject(j, "data_position", rs->pos);
    cJSON_AddNumberToObject(j, "tokens_seen", rs->tokens_seen);
    cJSON_AddNumberToObject(j, "num_params", (double)gn_trainer_num_params(tr));
    snprintf(p, sizeof p, "%s/trainer_state.json", tmp);
    st = write_json(p, j);
    cJSON_Delete(j);
    if (st) return st;
    if ((st = fsync_path(tmp))) return st;
#ifdef GN_TEST_HOOKS
    // test hook (make TEST_HOOKS=1 only): die here, with the checkpoint written but not yet renamed into place
    const char *kill_at = getenv("GN_TEST_KILL_AT_CHECKPOINT");
    if (kill_at && atoll(kill_at) == rs->step) raise(SIGKILL);
#endif
    if (rename(tmp, fin) != 0) {
        if (errno == EEXIST || errno == ENOTEMPTY) return gn_err(GN_ERR_IO, "%s: already exists", fin);
        return gn_err(GN_ERR_IO, "%s: cannot rename to %s: %s", tmp, fin, strerror(errno));
    }
    return fsync_path(o->out_dir);
}

// Highest complete checkpoint-N in dir (-1 when none).
static long long latest_checkpoint(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    long long best = -1;
    struct dirent *e;
    while ((e = readdir(d))) {
        char *end;
        if (strncmp(e->d_name, "checkpoint-", 11)) continue;
        long long n = strtoll(e->d_name + 11, &end, 10);
        if (*end == 0 && n > best) best = n;
    }
    closedir(d);
    return best;
}

static gn_status load_checkpoint(const gn_finetune_opts *o, const gn_model *m, gn_trainer *tr, long long n, run_state *rs) {
    char dir[4096], p[4200];
    snprintf(dir, sizeof dir, "%s/checkpoint-%lld", o->out_dir, n);
    gn_adapter *a = NULL;
    gn_status st = gn_adapter_load(&a, m, dir, NULL);
    if (st) return st;
    // flatten the adapter in the trainer's order (A then B per module)
    size_t np = gn_trainer_num_params(tr), off = 0;
    float *flat = gn_malloc(sizeof(float) * np);
    const gn_adapter *cur = gn_trainer_adapter(tr);
    for (int i = 0; i < cur->n_layers * GN_N_MODS && st == GN_OK; i++) {
        const gn_lora_mod *cm = &cur->mods[i], *lm = &a->mods[i];
        if (!cm->r) continue;
        if (lm->r != cm->r || lm->in != cm->in || lm->out != cm->out) {
            st = gn_err(GN_ERR_FORMAT, "%s: adapter does not match this run's LoRA settings", dir);
            break;
        }
        memcpy(flat + off, lm->A, sizeof(float) * (size_t)(lm->r * lm->in));
        off += (size_t)(lm->r * lm->in);
        memcpy(flat + off, lm->B, sizeof(float) * (size_t)(lm->out * lm->r));
        off += (size_t)(lm->out * lm->r);
    }
    gn_adapter_free(a);
    char *blob = NULL, *js = NULL;
    size_t nb = 0, nj = 0;
    cJSON *j = NULL;
    if (!st) { snprintf(p, sizeof p, "%s/optimizer.bin", dir); st = gn_read_file(p, &blob, &nb); }
    if (!st) { snprintf(p, sizeof p, "%s/trainer_state.json", dir); st = gn_read_file(p, &js, &nj); }
    if (!st) {
        j = cJSON_ParseWithLength(js, nj);
        const cJSON *gs = cJSON_GetObjectItem(j, "global_step"), *rg = cJSON_GetObjectItem(j, "rng"),
                    *ep = cJSON_GetObjectItem(j, "epoch"), *dp = cJSON_GetObjectItem(j, "data_position"),
                    *tk = cJSON_GetObjectItem(j, "tokens_seen");
        if (!cJSON_IsNumber(gs) || !cJSON_IsString(rg) || !cJSON_IsNumber(ep) || !cJSON_IsNumber(dp))
            st = gn_err(GN_ERR_FORMAT, "%s: expected global_step, rng, epoch and data_position", p);
        else {
            rs->step = (int64_t)gs->valuedouble;
            rs->rng = strtoull(rg->valuestring, NULL, 10);
            rs->epoch = (int)ep->valuedouble;
            rs->pos = (int)dp->valuedouble;
            rs->tokens_seen = cJSON_IsNumber(tk) ? tk->valuedouble : 0;
            st = gn_trainer_restore(tr, flat, blob, nb, rs->step);
            if (st) gn_err_prefix(st, dir);
            gn_trainer_set_rng(tr, rs->rng);
        }
    }
    cJSON_Delete(j);
    free(js);
    free(blob);
    free(flat);
    return st;
}

// ----------------------------------------------------------------------------
// loss curve: RUN_DIR/loss.png from log.jsonl (the whole history, across resumes)

static void plot_losses(const char *out_dir) {
    if (!gn_plot_available()) return;
    char p[4200], png[4200];
    snprintf(p, sizeof p, "%s/log.jsonl", out_dir);
    snprintf(png, sizeof png, "%s/loss.png", out_dir);
    char *txt;
    size_t n;
    if (gn_read_file(p, &txt, &n)) return;
    int cap = 1024, nt = 0, ne = 0;
    double *tx = gn_malloc(sizeof(double) * cap), *ty = gn_malloc(sizeof(double) * cap);
    double *ex = gn_malloc(sizeof(double) * cap), *ey = gn_malloc(sizeof(double) * cap);
    for (char *line = strtok(txt, "\n"); line; line = strtok(NULL, "\n")) {
        cJSON *j = cJSON_Parse(line);
        const cJSON *st = cJSON_GetObjectItem(j, "step"), *lo = cJSON_GetObjectItem(j, "loss"), *el = cJSON_GetObjectItem(j, "eval_loss");
        if (cJSON_IsNumber(st) && (cJSON_IsNumber(lo) || cJSON_IsNumber(el))) {
            if (nt == cap || ne == cap) {
                cap *= 2;
                tx = gn_realloc(tx, sizeof(double) * cap); ty = gn_realloc(ty, sizeof(double) * cap);
                ex = gn_realloc(ex, sizeof(double) * cap); ey = gn_realloc(ey, sizeof(double) * cap);
            }
            if (cJSON_IsNumber(lo)) { tx[nt] = st->valuedouble; ty[nt++] = lo->valuedouble; }
            else { ex[ne] = st->valuedouble; ey[ne++] = el->valuedouble; }
        }
        cJSON_Delete(j);
    }
    gn_plot_series s[2] = {{"train loss", tx, ty, nt}, {"eval loss", ex, ey, ne}};
    if (nt > 0 && gn_plot_lines(png, "QLoRA fine-tuning", "step", "loss", s, ne > 0 ? 2 : 1))
        gn_log(GN_LOG_WARN, "loss plot: %s", gn_last_error());
    free(tx); free(ty); free(ex); free(ey);
    free(txt);
}

// ----------------------------------------------------------------------------
// evaluation: mean over eval examples of their token-mean loss (eval batch 1)

// With several ranks, rank r scores rows i % N == r and the sums are all-reduced.
static gn_status eval_loss(gn_trainer *tr, const gn_dataset *ev, double *out) {
    double acc[2] = {0.0, 0.0}; // sum of row means, rows
    int rank = gn_dist_rank(), size = gn_dist_size();
    for (int i = rank; i < ev->n; i += size) {
        double ls;
        int nt;
        gn_status st = gn_trainer_sequence(tr, ev->ex[i].ids, ev->ex[i].labels, ev->ex[i].n, 0.0f, 0, &ls, &nt);
        if (st) return st;
        if (nt) { acc[0] += ls / nt; acc[1] += 1; }
    }
    gn_status st = gn_dist_allreduce_sum_f64(acc, 2);
    if (st) return st;
    *out = acc[1] > 0 ? acc[0] / acc[1] : NAN;
    return GN_OK;
}

// ----------------------------------------------------------------------------
// data parallel helpers

// Dropout key of the g-th sequence of a step (splitmix64 of the step's RNG state
// and g): the same masks whichever rank runs the sequence.
static uint64_t seq_key(uint64_t base, uint64_t g) {
    uint64_t s = base + g * 0x9E3779B97F4A7C15ull; // one step on: base + (g+1) * step
    return gn_splitmix64(&s);
}

// Rank 0's parameters, AdamW state and run position to every rank (start and resume).
static gn_status sync_from_rank0(gn_trainer *tr, run_state *rs) {
    gn_status st = gn_dist_bcast(rs, sizeof *rs, 0);
    if (st) return st;
    size_t np = gn_trainer_num_params(tr), nb = gn_trainer_state_size(tr);
    if (gn_dist_rank() == 0) { // root's buffers are only read
        if ((st = gn_dist_bcast(gn_trainer_params(tr), sizeof(float) * np, 0))) return st;
        return gn_dist_bcast((void *)gn_trainer_state(tr), nb, 0);
    }
    float *p = gn_malloc(sizeof(float) * np);
    void *state = gn_malloc(nb);
    if (!(st = gn_dist_bcast(p, sizeof(float) * np, 0)) && !(st = gn_dist_bcast(state, nb, 0)))
        st = gn_trainer_restore(tr, p, state, nb, rs->step);
    gn_trainer_set_rng(tr, rs->rng);
    free(p);
    free(state);
    return st;
}

// Every rank applies the same AdamW step to the same summed gradients, so the
// parameters stay bit-identical; checked at each checkpoint. A 16-bit digest per
// rank: sum(d)^2 == N * sum(d^2) exactly when all digests are equal.
static gn_status check_replicas(gn_trainer *tr, int64_t step) {
    const float *p = gn_trainer_params(tr);
    size_t np = gn_trainer_num_params(tr);
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < np; i++) {
        uint32_t u;
        memcpy(&u, p + i, 4);
        h = (h ^ u) * 0x100000001b3ull;
    }
    double d = (double)(h >> 48), acc[2] = {d, d * d};
    gn_status st = gn_dist_allreduce_sum_f64(acc, 2);
    if (st) return st;
    if (acc[0] * acc[0] != (double)gn_dist_size() * acc[1])
        return gn_err(GN_ERR_FORMAT, "finetune: the ranks' LoRA parameters differ at step %lld (the ranks must run the same "
                      "guanaco build on the same kind of machine); the last checkpoint is intact", (long long)step);
    return GN_OK;
}

// ----------------------------------------------------------------------------
// the run

static void epoch_order(const gn_finetune_opts *o, const gn_dataset *ds, int epoch, int *order) {
    if (o->no_shuffle) { for (int i = 0; i < ds->n; i++) order[i] = i; return; }
    gn_dataset_epoch_order(ds, o->train.seed, epoch, o->group_by_length, o->batch_size, order);
}

gn_status gn_finetune_run(const gn_finetune_opts *o, gn_model *m) {
    const gn_tokenizer *tok = gn_model_tokenizer(m);
    if (!tok) return gn_err(GN_ERR_ARG, "%s: the model has no tokenizer; finetune needs one", o->model_path);
    if (o->max_steps <= 0 || o->grad_accum <= 0 || o->batch_size <= 0)
        return gn_err(GN_ERR_ARG, "finetune: --max-steps, --gradient-accumulation-steps and --per-device-batch-size must be positive");
    const int rank = gn_dist_rank(), nranks = gn_dist_size(), lead = rank == 0; // lead: writes files, reports
    gn_status mst = lead ? gn_mkdir_p(o->out_dir) : GN_OK;
    if (mst) return mst;
    gn_data_opts dop = {o->data_format, o->source_max_len, o->target_max_len, o->train_on_source};
    gn_dataset ds = {0}, ev = {0};
    gn_adapter *init = NULL;
    gn_trainer *tr = NULL;
    int *order = NULL, *plan = NULL, *ntok = NULL;
    double *mb_loss = NULL;
    FILE *logf = NULL;
    gn_status st = gn_dataset_load(&ds, o->data_path, tok, &dop);
    if (st) goto done;
    if (o->eval_size > 0) {
        if (o->eval_size >= ds.n) { st = gn_err(GN_ERR_ARG, "%s: --eval-dataset-size %d leaves no training rows (%d usable)", o->data_path, o->eval_size, ds.n); goto done; }
        gn_dataset_split(&ds, o->eval_size, 42, &ev); // qlora: seed 42
    }
    if (o->init_adapter && (st = gn_adapter_load(&init, m, o->init_adapter, NULL))) goto done;
    gn_train_opts to = o->train;
    char statep[4096];
    snprintf(statep, sizeof statep, "%s/optimizer.mmap", o->out_dir);
    to.state_path = lead ? statep : NULL; // one paged AdamW state file per run folder: rank 0's
    if ((st = gn_trainer_new(&tr, m, &to, init))) goto done;
    run_state rs = {0};
    rs.rng = gn_trainer_rng(tr);
    if (o->resume && lead) {
        long long n = latest_checkpoint(o->out_dir);
        if (n < 0) { st = gn_err(GN_ERR_IO, "%s: --resume: no checkpoint-N folder to resume from", o->out_dir); goto done; }
        if ((st = load_checkpoint(o, m, tr, n, &rs))) goto done;
        gn_log(GN_LOG_WARN, "resuming from %s/checkpoint-%lld (step %lld)", o->out_dir, n, (long long)rs.step);
    }
    if (nranks > 1 && (st = sync_from_rank0(tr, &rs))) goto done;
    // GPU ranks sum their gradients with NCCL when the build has it (GN_NCCL_OFF: MPI on the
    // host; GN_NCCL_ON: NCCL even for a single rank, which checks the path on one GPU)
    int want_nccl = o->nccl == GN_NCCL_AUTO ? nranks > 1 : o->nccl == GN_NCCL_ON;
    if (m->cuda && want_nccl) {
        st = gn_dist_use_nccl();
        if (st == GN_ERR_UNSUPPORTED && o->nccl != GN_NCCL_ON) {
            if (lead) gn_log(GN_LOG_WARN, "finetune: %s; gradients are summed by MPI in host memory", gn_last_error());
            st = GN_OK;
        }
        if (st) goto done;
    }
    order = gn_malloc(sizeof(int) * (size_t)ds.n);
    epoch_order(o, &ds, rs.epoch, order);
    char logp[4200];
    snprintf(logp, sizeof logp, "%s/log.jsonl", o->out_dir);
    if (lead && !(logf = fopen(logp, o->resume ? "a" : "w"))) { st = gn_err(GN_ERR_IO, "%s: cannot write: %s", logp, strerror(errno)); goto done; }
    const int nb = o->batch_size < 64 ? o->batch_size : 64, G = nb * o->grad_accum; // sequences per global batch
    if (lead) {
        gn_log(GN_LOG_WARN, "finetune: %d train rows (%d skipped), %d eval rows, %zu LoRA parameters, %d steps of %d x %d sequences",
               ds.n, ds.skipped, ev.n, gn_trainer_num_params(tr), o->max_steps, o->batch_size, o->grad_accum);
        if (nranks > 1 || strstr(gn_dist_backend(), "nccl")) gn_log(GN_LOG_WARN, "finetune: data parallel over %d ranks (%s): each takes %d-%d of the %d sequences of a step",
                               nranks, gn_dist_backend(), G / nranks, (G + nranks - 1) / nranks, G);
    }
    plan = gn_malloc(sizeof(int) * (size_t)G);              // example index of global sequence g
    ntok = gn_malloc(sizeof(int) * (size_t)o->grad_accum);  // scored tokens of each micro-batch
    mb_loss = gn_malloc(sizeof(double) * (size_t)o->grad_accum);
    double t_start = gn_time_s(), tok_start = rs.tokens_seen;
    int64_t step0 = rs.step;
    for (; rs.step < o->max_steps;) {
        // the whole step's plan, identical on every rank
        int step_tokens = 0;
        for (int mb = 0; mb < o->grad_accum; mb++) {
            ntok[mb] = 0;
            mb_loss[mb] = 0.0;
            for (int b = 0; b < nb; b++) {
                if (rs.pos >= ds.n) { rs.pos = 0; rs.epoch++; epoch_order(o, &ds, rs.epoch, order); }
                int i = plan[mb * nb + b] = order[rs.pos++];
                const gn_example *e = &ds.ex[i];
                for (int t = 0; t + 1 < e->n; t++) ntok[mb] += e->labels[t + 1] != GN_IGNORE_INDEX;
                step_tokens += e->n;
            }
        }
        // this rank's share: sequences g = rank, rank + N, ...
        gn_trainer_zero_grad(tr);
        double step_done_tokens = 0; // tokens of this step's finished sequences (for progress_seq)
        for (int g = rank; g < G; g += nranks) {
            int mb = g / nb;
            const gn_example *e = &ds.ex[plan[g]];
            double ls;
            int nt;
            float w = ntok[mb] ? 1.0f / (float)ntok[mb] / (float)o->grad_accum : 0.0f;
            gn_trainer_set_rng(tr, seq_key(rs.rng, (uint64_t)g));
            if ((st = gn_trainer_sequence(tr, e->ids, e->labels, e->n, w, 1, &ls, &nt))) goto done;
            mb_loss[mb] += ls;
            if (lead && o->progress_seq && g + nranks < G) {
                // the other ranks run their sequences of the step alongside: count theirs as done too
                const int done = g + nranks;
                step_done_tokens += (double)e->n * nranks;
                const double el = gn_time_s() - t_start, tok = rs.tokens_seen - tok_start + step_done_tokens;
                const double left = (double)(step_tokens - step_done_tokens) + (double)step_tokens * (double)(o->max_steps - rs.step - 1);
                o->progress_seq(rs.step + 1, o->max_steps, done, G, el > 0 ? tok / el : 0, tok > 0 ? el / tok * left : 0, o->user);
            }
        }
        if ((st = gn_dist_allreduce_sum_f32(gn_trainer_grads_mut(tr), gn_trainer_num_params(tr))) ||
            (st = gn_dist_allreduce_sum_f64(mb_loss, (size_t)o->grad_accum)))
            goto done;
        double step_loss = 0.0;
        for (int mb = 0; mb < o->grad_accum; mb++) step_loss += (ntok[mb] ? mb_loss[mb] / ntok[mb] : 0.0) / o->grad_accum;
        float lr = lr_at(o, rs.step);
        if (!isfinite(step_loss)) {
            st = gn_err(GN_ERR_FORMAT, "finetune: loss is %f at step %lld; stopping (the last checkpoint in %s is intact)", step_loss,
                        (long long)rs.step + 1, o->out_dir);
            goto done;
        }
        float gnorm = gn_trainer_step(tr, lr);
        rs.step++;
        rs.rng = seq_key(rs.rng, (uint64_t)G); // the next step's RNG state
        gn_trainer_set_rng(tr, rs.rng);
        rs.tokens_seen += step_tokens;
        double el = gn_time_s() - t_start;
        double tps = el > 0 ? (rs.tokens_seen - tok_start) / el : 0;
        double eta = rs.step > step0 ? el / (double)(rs.step - step0) * (double)(o->max_steps - rs.step) : 0;
        if (lead) {
            fprintf(logf, "{\"step\": %lld, \"loss\": %.6f, \"lr\": %.6g, \"grad_norm\": %.6f, \"tokens_per_s\": %.1f, \"epoch\": %d}\n",
                    (long long)rs.step, step_loss, lr, gnorm, tps, rs.epoch);
            fflush(logf);
            if (o->progress) o->progress(rs.step, o->max_steps, step_loss, lr, gnorm, tps, eta, NAN, o->user);
        }
        if (o->eval_steps > 0 && ev.n > 0 && (rs.step % o->eval_steps == 0 || rs.step == o->max_steps)) {
            double el2;
            if ((st = eval_loss(tr, &ev, &el2))) goto done;
            if (lead) {
                fprintf(logf, "{\"step\": %lld, \"eval_loss\": %.6f}\n", (long long)rs.step, el2);
                fflush(logf);
                if (o->progress) o->progress(rs.step, o->max_steps, step_loss, lr, gnorm, tps, eta, el2, o->user);
            }
        }
        if ((o->save_steps > 0 && rs.step % o->save_steps == 0) || rs.step == o->max_steps) {
            if (nranks > 1 && (st = check_replicas(tr, rs.step))) goto done;
            if (lead) {
                if ((st = save_checkpoint(o, tr, &rs))) goto done;
                plot_losses(o->out_dir);
                if (o->on_checkpoint) o->on_checkpoint(o->out_dir, o->user);
            }
        }
        // the embedder's stop (single process): keep this step whole
        if (nranks == 1 && rs.step < o->max_steps && o->should_stop && o->should_stop(o->user)) {
            gn_log(GN_LOG_WARN, "finetune: stopped at step %lld of %d", (long long)rs.step, o->max_steps);
            if (!(o->save_steps > 0 && rs.step % o->save_steps == 0) && (st = save_checkpoint(o, tr, &rs))) goto done;
            break;
        }
    }
    if (lead) st = gn_adapter_save(gn_trainer_adapter(tr), o->out_dir, o->save_dtype ? o->save_dtype : GN_DTYPE_F32, o->model_path);
done:
    if (logf) fclose(logf);
    free(order);
    free(plan);
    free(ntok);
    free(mb_loss);
    gn_trainer_free(tr);
    gn_adapter_free(init);
    gn_dataset_free(&ds);
    gn_dataset_free(&ev);
    return st;
}

gn_status gn_eval_loss_file(gn_model *m, const gn_adapter *a, const char *data_path, const gn_finetune_opts *o, double *loss) {
    (void)a;
    gn_data_opts dop = {o->data_format, o->source_max_len, o->target_max_len, o->train_on_source};
    gn_dataset ds = {0};
    gn_status st = gn_dataset_load(&ds, data_path, gn_model_tokenizer(m), &dop);
    if (st) return st;
    gn_train_opts to = o->train;
    to.state_path = NULL;
    gn_trainer *tr = NULL;
    st = gn_trainer_new(&tr, m, &to, a);
    if (!st) st = eval_loss(tr, &ds, loss);
    gn_trainer_free(tr);
    gn_dataset_free(&ds);
    return st;
}
