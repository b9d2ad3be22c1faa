/*
 * test_train.c — finite-difference check of the whole backward pass: a tiny
 * random LLaMA (GQA, untied head, written here as safetensors) with LoRA on
 * all seven modules; for sampled LoRA weights, (L(w+h) - L(w-h)) / 2h must
 * match the analytic gradient. Covers RMSNorm, RoPE, attention, SwiGLU, the
 * LoRA products and the loss. Also: with lora_B = 0 the gradient of every A is 0,
 * and with scattered ignored labels the loss and gradients are the sums over
 * single-label runs (the head only computes the positions that have a label).
 */
#include <float.h> // FLT_EPSILON
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "harness.h"
#include "tiny_model.h" // tm_write_model
#include "formats/tensors.h"
#include "model/llama.h"

static uint64_t rng = 12345;
static float frand(void) {
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (float)((rng >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

// a random model folder (tiny_model.h): all matrices in [-0.3, 0.3)
static int write_model(const char *dir, int C, int HD, int L, int NH, int NKV, int V) {
    return tm_write_model(dir, C, HD, L, NH, NKV, V, 128, 0.3f, 0.3f, 0.3f, frand);
}

static double loss_of(gn_trainer *tr, const int32_t *ids, const int32_t *lab, int T) {
    double ls;
    int nt;
    gn_trainer_sequence(tr, ids, lab, T, 0.0f, 0, &ls, &nt);
    return ls / nt;
}

int main(void) {
    char dir[] = "/tmp/gn_test_train_XXXXXX";
    if (!mkdtemp(dir)) { printf("mkdtemp failed\n"); return 1; }
    char md[600];
    snprintf(md, sizeof md, "%s/model", dir);
    CHECK(write_model(md, 24, 40, 2, 4, 2, 37) == 0, "write model");
    gn_model *m = NULL;
    CHECK(gn_model_load(&m, md, NULL) == GN_OK, "load: %s", gn_last_error());
    if (!m) TEST_REPORT();
    gn_train_opts o;
    gn_train_opts_default(&o);
    o.lora_r = 3;
    o.lora_alpha = 6.0f;
    gn_trainer *tr = NULL;
    CHECK(gn_trainer_new(&tr, m, &o, NULL) == GN_OK, "trainer: %s", gn_last_error());
    int T = 11;
    int32_t ids[11], lab[11];
    for (int t = 0; t < T; t++) { ids[t] = (t * 7 + 3) % 37; lab[t] = t < 3 ? -100 : (t * 5 + 1) % 37; }
    // B = 0 at init: every A gradient must be exactly 0
    double ls;
    int nt;
    gn_trainer_zero_grad(tr);
    gn_trainer_sequence(tr, ids, lab, T, 1.0f / 7.0f, 1, &ls, &nt);
    const gn_adapter *a = gn_trainer_adapter(tr);
    float *P = gn_trainer_params(tr);
    const float *G = gn_trainer_grads(tr);
    float amax = 0;
    for (int i = 0; i < a->n_layers * GN_N_MODS; i++) {
        const gn_lora_mod *lm = &a->mods[i];
        for (int64_t j = 0; j < lm->r * lm->in; j++) amax = fmaxf(amax, fabsf(G[lm->A - P + j]));
    }
    CHECK(amax == 0.0f, "with B = 0 the A gradients must vanish (max %g)", amax);
    // random B, then finite differences on a sample of A and B entries of every module
    size_t np = gn_trainer_num_params(tr);
    for (size_t i = 0; i < np; i++) P[i] = 0.3f * frand();
    gn_trainer_zero_grad(tr);
    gn_trainer_sequence(tr, ids, lab, T, 1.0f, 1, &ls, &nt); // weight 1: gradient of the summed loss
    float *g = malloc(sizeof(float) * np);
    memcpy(g, G, sizeof(float) * np);
    // Tolerance from float error, not from one machine's result: the forward pass runs in
    // float32, so each summed loss L carries a rounding error up to about FLT_EPSILON * |L|
    // (the order in which a CPU's SIMD width and threads add things up decides where in that
    // range it falls), and the central difference divides the two errors by 2h:
    //   |fd - g| <= 2 * FLT_EPSILON * |L| / (2h)  +  2e-2 * max(|fd|, |g|)  (truncation, O(h^2)).
    // The step is the one that float32 P actually took. At least half the sampled gradients
    // must stand well above the rounding term, so the check keeps its teeth.
    int checked = 0, bad = 0, strong = 0;
    for (int i = 0; i < a->n_layers * GN_N_MODS; i++) {
        const gn_lora_mod *lm = &a->mods[i];
        for (int isB = 0; isB < 2; isB++) {
            size_t base = (size_t)((isB ? lm->B : lm->A) - P), n = (size_t)(lm->r * (isB ? lm->out : lm->in));
            for (int s = 0; s < 3; s++) {
                size_t j = base + (size_t)(s * 7919) % n;
                float keep = P[j];
                P[j] = keep + 1e-2f; double wp = P[j], lp = loss_of(tr, ids, lab, T) * nt;
                P[j] = keep - 1e-2f; double wm = P[j], lm2 = loss_of(tr, ids, lab, T) * nt;
                P[j] = keep;
                double fd = (lp - lm2) / (wp - wm);
                double round = 2.0 * FLT_EPSILON * fmax(fabs(lp), fabs(lm2)) / (wp - wm);
                double tol = round + 2e-2 * fmax(fabs(fd), fabs((double)g[j]));
                checked++;
                strong += fabs(g[j]) > 50.0 * round;
                if (fabs(fd - g[j]) > tol) {
                    bad++;
                    printf("  module %d %s[%zu]: analytic %.6g, finite difference %.6g (tolerance %.3g, of it rounding %.3g)\n",
                           i % GN_N_MODS, isB ? "B" : "A", j - base, g[j], fd, tol, round);
                }
            }
        }
    }
    CHECK(bad == 0, "%d of %d sampled gradients disagree with finite differences", bad, checked);
    CHECK(2 * strong >= checked, "only %d of %d sampled gradients stand above the float rounding of the difference", strong, checked);
    // the head gathers the positions that have a label: with scattered ignored
    // labels, loss and gradients must be the sums over single-label runs
    int32_t lab2[11];
    for (int t = 0; t < T; t++) lab2[t] = (t % 3 == 1 || t == 6) ? -100 : (t * 5 + 1) % 37;
    gn_trainer_zero_grad(tr);
    double ls_all;
    int nt_all;
    gn_trainer_sequence(tr, ids, lab2, T, 1.0f, 1, &ls_all, &nt_all);
    memcpy(g, G, sizeof(float) * np);
    gn_trainer_zero_grad(tr);
    double ls_sum = 0.0;
    int nt_sum = 0;
    for (int t = 1; t < T; t++) {
        if (lab2[t] == -100) continue;
        int32_t one[11];
        for (int j = 0; j < T; j++) one[j] = j == t ? lab2[t] : -100;
        gn_trainer_sequence(tr, ids, one, T, 1.0f, 1, &ls, &nt); // accumulates into the gradients
        ls_sum += ls;
        nt_sum += nt;
    }
    double gd = 0.0, gm = 0.0;
    for (size_t i = 0; i < np; i++) { gd = fmax(gd, fabs((double)g[i] - G[i])); gm = fmax(gm, fabs((double)g[i])); }
    CHECK(nt_all == nt_sum && nt_all == 5, "label count %d vs %d single-label runs", nt_all, nt_sum);
    CHECK(fabs(ls_all - ls_sum) < 1e-4 * fabs(ls_sum), "scattered labels: loss %.9g vs sum of single-label losses %.9g", ls_all, ls_sum);
    CHECK(gd <= 1e-4 * gm, "scattered labels: gradients differ from the single-label sum by %g (max %g)", gd, gm);
    free(g);
    gn_trainer_free(tr);
    gn_model_free(m);
    // a bf16 run (qlora --bf16: 4-bit products, LoRA and the bf16 head take bf16 inputs; on
    // AVX512_BF16 through vdpbf16ps) against the f32 run of the same 4-bit model and the same
    // (bf16-valued) parameters: loss and LoRA gradients agree within bf16 rounding; a wrong
    // transposition or packing in the bf16 products would be off by order one
    {
        gn_load_opts lf = {.weight_dtype = GN_DTYPE_NF4, .compute_dtype = GN_DTYPE_F32};
        gn_load_opts lb = {.weight_dtype = GN_DTYPE_NF4, .compute_dtype = GN_DTYPE_BF16};
        gn_model *mf = NULL, *mb = NULL;
        CHECK(gn_model_load(&mf, md, &lf) == GN_OK && gn_model_load(&mb, md, &lb) == GN_OK, "load 4-bit: %s", gn_last_error());
        gn_train_opts ob = o;
        ob.bf16_params = 1;
        gn_trainer *tf = NULL, *tb = NULL;
        CHECK(mf && mb && gn_trainer_new(&tf, mf, &o, NULL) == GN_OK && gn_trainer_new(&tb, mb, &ob, NULL) == GN_OK,
              "bf16 trainers: %s", gn_last_error());
        if (tf && tb) {
            size_t n2 = gn_trainer_num_params(tf);
            float *pf = gn_trainer_params(tf), *pb = gn_trainer_params(tb);
            for (size_t i = 0; i < n2; i++) pf[i] = pb[i] = gn_bf16_to_f32(gn_f32_to_bf16(0.3f * frand()));
            double lf_, lb_;
            int n1, n3;
            gn_trainer_zero_grad(tf);
            gn_trainer_zero_grad(tb);
            gn_trainer_sequence(tf, ids, lab, T, 1.0f, 1, &lf_, &n1);
            gn_trainer_sequence(tb, ids, lab, T, 1.0f, 1, &lb_, &n3);
            const float *gf = gn_trainer_grads(tf), *gb = gn_trainer_grads(tb);
            double d2 = 0, f2 = 0;
            for (size_t i = 0; i < n2; i++) { d2 += ((double)gb[i] - gf[i]) * ((double)gb[i] - gf[i]); f2 += (double)gf[i] * gf[i]; }
            double rel = sqrt(d2 / (f2 + 1e-30));
            printf("  bf16 vs f32 run: loss %.6f vs %.6f, gradients %.3g relative L2\n", lb_, lf_, rel);
            CHECK(fabs(lb_ - lf_) <= 1e-2 * fabs(lf_) && rel <= 5e-2 && rel > 0, "bf16 run: loss %.6f vs %.6f, gradients %.3g relative L2",
                  lb_, lf_, rel);
        }
        gn_trainer_free(tf);
        gn_trainer_free(tb);
        gn_model_free(mf);
        gn_model_free(mb);
    }
    // kept activations (checkpointing 2) against recomputed ones (1): the very same loss and
    // gradients, bit for bit, with and without LoRA dropout, f32 and bf16 runs; variants 3 and 4
    // keep only the q/k/v/gate/up base outputs as bf16 (checkpointing 3, bf16 compute: exact values)
    for (int variant = 0; variant < 5; variant++) {
        gn_load_opts lo = {.weight_dtype = GN_DTYPE_NF4, .compute_dtype = variant >= 2 ? GN_DTYPE_BF16 : GN_DTYPE_F32};
        gn_model *mk = NULL;
        CHECK(gn_model_load(&mk, md, &lo) == GN_OK, "load: %s", gn_last_error());
        if (!mk) break;
        gn_train_opts o1 = o, o2 = o;
        o1.checkpointing = 1;
        o2.checkpointing = variant >= 3 ? 3 : 2;
        o1.lora_dropout = o2.lora_dropout = variant == 1 || variant == 2 || variant == 4 ? 0.1f : 0.0f;
        o1.bf16_params = o2.bf16_params = variant >= 2;
        gn_trainer *t1 = NULL, *t2 = NULL;
        CHECK(gn_trainer_new(&t1, mk, &o1, NULL) == GN_OK && gn_trainer_new(&t2, mk, &o2, NULL) == GN_OK, "trainers");
        if (t1 && t2) {
            size_t n2 = gn_trainer_num_params(t1);
            float *p1 = gn_trainer_params(t1), *p2 = gn_trainer_params(t2);
            for (size_t i = 0; i < n2; i++) p1[i] = p2[i] = 0.3f * frand();
            double l1 = 0, l2 = 0;
            int c1, c2;
            gn_trainer_zero_grad(t1);
            gn_trainer_zero_grad(t2);
            gn_trainer_set_rng(t1, 77);
            gn_trainer_set_rng(t2, 77);
            gn_trainer_sequence(t1, ids, lab, T, 0.5f, 1, &l1, &c1);
            gn_trainer_sequence(t2, ids, lab, T, 0.5f, 1, &l2, &c2);
            CHECK(l1 == l2 && !memcmp(gn_trainer_grads(t1), gn_trainer_grads(t2), sizeof(float) * n2),
                  "kept vs recomputed activations (variant %d): loss %.9g vs %.9g, gradients %s", variant, l1, l2,
                  memcmp(gn_trainer_grads(t1), gn_trainer_grads(t2), sizeof(float) * n2) ? "differ" : "equal");
        }
        gn_trainer_free(t1);
        gn_trainer_free(t2);
        gn_model_free(mk);
    }
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0, "cleanup");
    TEST_REPORT();
}
