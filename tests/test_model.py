"""Forward pass against the reference stacks.

- Tiny random LLaMA models (tests/ref/gen_tiny_llama.py) in safetensors (single, sharded) and
  PyTorch .bin (single, sharded, shared-storage views): logits equal transformers'
  LlamaForCausalLM in float32 within 1e-4 x max|logit|, for the full sequence and token by token
  through the KV cache (`--kv-step`); bf16 weights within bf16 rounding.
- stories260K.gguf: greedy 200 tokens from BOS equal the stored ids.
- SmolLM2-135M-Instruct Q4_1 GGUF: per-position logits agree with llama.cpp (llama-cpp-python);
  `guanaco chat` knows the capital of France.
"""
import os
import pathlib

import numpy as np
import pytest

from conftest import (data_file, run_guanaco, run_binary, sanitizer_builds, sanitizer_report)
from native_oracle import isolated, llama_logits

import sys
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent / "ref"))
import gen_tiny_llama as G  # noqa: E402

# Item 1 of the issue: max |guanaco - transformers| <= REL_TOL * max |transformers logit|.
# transformers' own float32 vs float64 differ by ~3e-6 of max|logit| on these models, while a
# RoPE theta, RoPE scaling, rms_norm_eps or norm-weight mistake moves them by 0.3-1.2 of it.
REL_TOL = 1e-4
# --dtype bf16 (weights stored as bfloat16) against transformers with every matrix rounded to
# bfloat16 and float32 arithmetic. Measured on these models: exact float32 arithmetic on the
# rounded weights would give ~1e-6; also rounding every matmul *input* to bfloat16 (the AVX-512
# BF16 dot-product path) gives 0.020-0.034; transformers run entirely in bfloat16 gives 0.04-0.08
# and rounding the weights at all moves logits by 0.024-0.034 from the float32 ones. So 5e-2
# admits bf16 activations in matmuls, and still catches the 0.3-1.2 of a real mistake.
BF16_REL_TOL = 5e-2

CONFIGS = list(G.CONFIGS)
FORMATS = list(G.FORMATS)
SEQ_LENS = list(G.SEQ_LENS)


def ids_arg(ids):
    return " ".join(str(int(i)) for i in ids)


def ref_logits(tiny, cfg, T, kind=""):
    base = pathlib.Path(tiny["configs"][cfg]["formats"]["safetensors"]).parent
    return np.load(base / "ref" / f"logits{kind}_{T}.npy")


def compare(got, ref, rel_tol, what):
    assert got.dtype == np.float32, f"{what}: dtype {got.dtype}, expected float32"
    assert got.shape == ref.shape, f"{what}: shape {got.shape}, expected {ref.shape}"
    assert np.isfinite(got).all(), f"{what}: non-finite logits at {np.argwhere(~np.isfinite(got))[:5].tolist()}"
    diff = np.abs(got.astype(np.float64) - ref.astype(np.float64))
    scale = float(np.abs(ref).max())
    bound = rel_tol * scale
    worst = np.unravel_index(int(diff.argmax()), diff.shape)
    rows_bad = int((diff.max(axis=1) > bound).sum())
    assert diff.max() <= bound, (
        f"{what}: max abs diff {diff.max():.3g} = {diff.max() / scale:.3g} x max|logit| "
        f"(allowed {rel_tol:g} x {scale:.4g} = {bound:.3g}); worst at position {worst[0]} token "
        f"{worst[1]}: got {got[worst]:.6g} want {ref[worst]:.6g}; {rows_bad}/{diff.shape[0]} positions over")
    return float(diff.max())


def guanaco_logits(tmp_path, model, ids, *extra, binary=None, name="out.npy", env=None):
    out = tmp_path / name
    args = ["logits", "-m", model, "--ids", ids_arg(ids), "-o", out, *extra]
    if binary is None:
        run_guanaco(*args, env=env)
    else:
        p = run_binary(binary, *args)
        rep = sanitizer_report(p.stderr + p.stdout)
        assert rep is None and p.returncode == 0, \
            f"{binary} {' '.join(map(str, args))} exited {p.returncode}; {rep or ''}\n{p.stderr[-4000:]}"
    return np.load(out)


# ---------------------------------------------------------------------------
# Item 1: tiny random models, every weight format, against transformers


@pytest.mark.parametrize("T", SEQ_LENS, ids=lambda t: f"T{t}")
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("cfg", CONFIGS)
def test_logits_match_transformers(tiny_models, guanaco_bin, tmp_path, cfg, fmt, T):
    c = tiny_models["configs"][cfg]
    got = guanaco_logits(tmp_path, c["formats"][fmt], c["ids"][str(T)])
    compare(got, ref_logits(tiny_models, cfg, T), REL_TOL, f"{cfg}/{fmt} T={T}")


@pytest.mark.parametrize("T", SEQ_LENS, ids=lambda t: f"T{t}")
@pytest.mark.parametrize("cfg", CONFIGS)
def test_kv_cache_steps_match_full_pass(tiny_models, guanaco_bin, tmp_path, cfg, T):
    """One token at a time through the KV cache: same logits as transformers and as the
    full-sequence pass."""
    c = tiny_models["configs"][cfg]
    model, ids = c["formats"]["safetensors"], c["ids"][str(T)]
    step = guanaco_logits(tmp_path, model, ids, "--kv-step", name="step.npy")
    full = guanaco_logits(tmp_path, model, ids, name="full.npy")
    compare(step, ref_logits(tiny_models, cfg, T), REL_TOL, f"{cfg} --kv-step T={T} vs transformers")
    compare(step, full, REL_TOL, f"{cfg} --kv-step vs full pass T={T}")


@pytest.mark.parametrize("chunk", [1, 7, 32])
def test_prefill_in_chunks(tiny_models, guanaco_bin, tmp_path, chunk):
    """A prompt longer than one prefill chunk (512 tokens by default; GN_PREFILL_CHUNK sets it)
    goes through the model in pieces, each attending to the cache the earlier ones left: the
    same logits as transformers' one pass, with chunks of 1, 7 (a last piece of 3) and 32."""
    cfg = "gqa_headdim_linear"
    c = tiny_models["configs"][cfg]
    got = guanaco_logits(tmp_path, c["formats"]["safetensors"], c["ids"]["80"], env={"GN_PREFILL_CHUNK": str(chunk)})
    compare(got, ref_logits(tiny_models, cfg, 80), REL_TOL, f"{cfg} T=80 in chunks of {chunk}")


@pytest.mark.parametrize("weights", ["model.safetensors", "pytorch_model.bin"])
def test_model_path_may_name_the_weights_file(tiny_models, guanaco_bin, tmp_path, weights):
    cfg = "gqa_headdim_linear"
    c = tiny_models["configs"][cfg]
    fmt = "safetensors" if weights.endswith("safetensors") else "bin"
    path = pathlib.Path(c["formats"][fmt]) / weights
    got = guanaco_logits(tmp_path, path, c["ids"]["80"])
    compare(got, ref_logits(tiny_models, cfg, 80), REL_TOL, f"{cfg} -m {weights}")


@pytest.mark.parametrize("cfg", CONFIGS)
def test_bf16_weights(tiny_models, guanaco_bin, tmp_path, cfg):
    c = tiny_models["configs"][cfg]
    got = guanaco_logits(tmp_path, c["formats"]["safetensors"], c["ids"]["80"], "--dtype", "bf16")
    compare(got, ref_logits(tiny_models, cfg, 80, "_bf16w"), BF16_REL_TOL, f"{cfg} --dtype bf16 T=80")


@pytest.mark.parametrize("cfg", CONFIGS)
def test_bf16_weights_exact_rounding(tiny_models, guanaco_bin, tmp_path, cfg):
    """`guanaco logits --help` documents bf16 as the weights' dtype with float32 activations.
    Then the result must equal float32 arithmetic on weights rounded to nearest-even bf16
    (torch's rounding) within the float32 tolerance: truncating instead of rounding moves the
    logits by 0.04-0.10 x max|logit| on these models, which BF16_REL_TOL alone would not see.
    (If bf16 activations are ever adopted on purpose, this test is the one to drop.)"""
    c = tiny_models["configs"][cfg]
    got = guanaco_logits(tmp_path, c["formats"]["safetensors"], c["ids"]["80"], "--dtype", "bf16")
    compare(got, ref_logits(tiny_models, cfg, 80, "_bf16w"), REL_TOL, f"{cfg} --dtype bf16 vs f32 math on bf16 weights")


@pytest.mark.parametrize("build", [b for b, _ in sanitizer_builds()] or ["none"])
@pytest.mark.parametrize("fmt", ["safetensors_sharded", "bin_views"])
def test_forward_under_sanitizers(tiny_models, tmp_path, build, fmt):
    """The forward pass and the KV-cache path run clean under ASan/UBSan (two configs)."""
    builds = dict(sanitizer_builds())
    if build not in builds:
        pytest.skip("no sanitizer build (make asan / make ubsan)")
    for cfg in ("gqa_tied", "gqa_headdim_linear"):
        c = tiny_models["configs"][cfg]
        ids = c["ids"]["80"]
        for extra in ((), ("--kv-step",)):
            got = guanaco_logits(tmp_path, c["formats"][fmt], ids, *extra, binary=builds[build])
            compare(got, ref_logits(tiny_models, cfg, 80), REL_TOL, f"{build}: {cfg}/{fmt} {extra}")


# ---------------------------------------------------------------------------
# Item 3: stories260K greedy decode


def _stories_expected(data_dir):
    return [int(x) for x in (data_dir / "tiny-llama" / "stories260K_greedy200_ids.txt").read_text().split()]


def _printed_ids(stdout):
    lines = [l for l in stdout.splitlines() if l.strip()]
    id_lines = [l for l in lines if all(w.lstrip("-").isdigit() for w in l.split())]
    assert len(id_lines) == 1, f"expected one line of ids on stdout, got:\n{stdout[-2000:]}"
    return [int(w) for w in id_lines[0].split()]


GEN_ARGS = ["--ids", "1", "-n", "200", "--temp", "0", "--no-bos", "--ignore-eos", "--print-ids"]


def test_stories260k_greedy_200(guanaco_bin, data_dir):
    want = _stories_expected(data_dir)
    assert len(want) == 200
    p = run_guanaco("generate", "-m", data_file("tiny-llama/stories260K.gguf"), *GEN_ARGS)
    got = _printed_ids(p.stdout)
    first_bad = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), None)
    assert got == want, (f"{len(got)} ids; first difference at step {first_bad}: "
                         f"got {got[first_bad:first_bad + 5] if first_bad is not None else got[200:205]} "
                         f"want {want[first_bad:first_bad + 5] if first_bad is not None else []}")


@pytest.mark.parametrize("build", [b for b, _ in sanitizer_builds()] or ["none"])
def test_stories260k_greedy_under_sanitizers(data_dir, build):
    builds = dict(sanitizer_builds())
    if build not in builds:
        pytest.skip("no sanitizer build (make asan / make ubsan)")
    p = run_binary(builds[build], "generate", "-m", data_file("tiny-llama/stories260K.gguf"), *GEN_ARGS)
    rep = sanitizer_report(p.stderr + p.stdout)
    assert rep is None, f"{build}: {rep}\n{p.stderr[-4000:]}"
    assert p.returncode == 0, p.stderr[-4000:]
    assert _printed_ids(p.stdout) == _stories_expected(data_dir)


# ---------------------------------------------------------------------------
# Item 4: SmolLM2-135M-Instruct Q4_1 against llama.cpp

SMOL_TEXT = ("The history of astronomy is long and rich. Ancient peoples watched the sky to keep track of "
             "seasons, and they named the bright stars and planets after their gods. Later, scientists such as "
             "Copernicus, Galileo and Kepler showed that the Earth moves around the Sun, and Newton explained why "
             "the planets follow their orbits. Today, telescopes in space study galaxies billions of light years away.")
SMOL_N = 64
# llama.cpp multiplies Q4_1 weights by activations rounded to 8 bits (Q8_1 blocks), so an
# implementation doing float32 arithmetic on the dequantized weights cannot match it exactly.
# Measured on this prompt: transformers in float32 on the dequantized weights (from_pretrained
# with gguf_file) vs llama.cpp gives max abs diff 1.56 (max|logit| 32.5, mean abs diff 0.18,
# per-position maxima 0.40-1.56) and top-1 agreement 63/64. The bound allows that much plus
# ~60% margin for summation order; a wrong RoPE/norm/quant block layout gives diffs of 10+.
SMOL_MAX_ABS_DIFF = 2.5
SMOL_TOP1_MIN = 0.95


@pytest.fixture(scope="module")
def smol_llama_cpp(smollm2_gguf):
    pytest.importorskip("llama_cpp")
    # llama.cpp in a child process: a crash there fails this test, not the run
    return isolated(llama_logits, smollm2_gguf, text=SMOL_TEXT, n_tokens=SMOL_N, n_ctx=256)


def test_smollm2_logits_vs_llama_cpp(guanaco_bin, smollm2_gguf, smol_llama_cpp, tmp_path):
    ids, want = smol_llama_cpp
    got = guanaco_logits(tmp_path, smollm2_gguf, ids)
    assert got.shape == want.shape, f"shape {got.shape}, expected {want.shape}"
    assert np.isfinite(got).all()
    top1 = float((got.argmax(1) == want.argmax(1)).mean())
    diff = np.abs(got - want)
    msg = (f"top-1 agreement {top1:.3f} (need >= {SMOL_TOP1_MIN}), max abs diff {diff.max():.3f} at "
           f"position {int(diff.max(1).argmax())} (allowed {SMOL_MAX_ABS_DIFF}), mean abs diff {diff.mean():.3f}")
    assert top1 >= SMOL_TOP1_MIN, msg
    assert diff.max() <= SMOL_MAX_ABS_DIFF, msg


def test_smollm2_chat_capital_of_france(guanaco_bin, smollm2_gguf):
    p = run_guanaco("chat", "-m", smollm2_gguf, "-p", "What is the capital of France?", "-n", "48",
                    "--temp", "0")
    assert "Paris" in p.stdout, f"answer without 'Paris':\n{p.stdout[-2000:]}\nstderr:\n{p.stderr[-2000:]}"


# A GGUF's Q8_0 embedding (SmolLM2's, tied to the head) stays in its blocks: the exact
# float32 values, products summed per block then scaled. Against transformers reading the
# same file (from_pretrained with gguf_file: every tensor dequantized to float32), with
# random token ids, the full pass (head as tiles widened for sgemm) and one token at a
# time (the Q8_0 row kernel) must agree as the tiny float32 models do (REL_TOL).
SMOL_RAND_N = 40


def _transformers_gguf_logits(path, ids):
    import torch
    from transformers import AutoModelForCausalLM
    torch.manual_seed(0)
    m = AutoModelForCausalLM.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path),
                                             dtype=torch.float32)
    with torch.no_grad():
        return m(torch.tensor([ids])).logits[0].float().numpy()


def test_smollm2_q8_0_table_vs_transformers(guanaco_bin, smollm2_gguf, tmp_path):
    ids = [int(i) for i in np.random.RandomState(7).randint(0, 49152, SMOL_RAND_N)]
    want = isolated(_transformers_gguf_logits, str(smollm2_gguf), ids)
    info = run_guanaco("info", "-m", smollm2_gguf).stdout
    assert "embedding: q8_0 (tied head)" in info, info
    full = guanaco_logits(tmp_path, smollm2_gguf, ids, name="full.npy")
    compare(full, want, REL_TOL, "SmolLM2 GGUF full pass vs transformers")
    step = guanaco_logits(tmp_path, smollm2_gguf, ids, "--kv-step", name="step.npy")
    compare(step, want, REL_TOL, "SmolLM2 GGUF --kv-step vs transformers")
