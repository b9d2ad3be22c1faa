"""4-bit models whose rows are not multiples of the quantization block.

bitsandbytes quantizes the flattened weight: block b holds elements b*blocksize .. of the
row-major tensor whatever the row length, so with hidden or intermediate sizes that are not
multiples of the block a block ends inside a row and the next row starts in it. Every consumer
of the layout (decode kernels, prefill GEMMs, the input gradient, dequantization for merge)
must index blocks that way.

Oracles: bitsandbytes' quantize_4bit of each linear weight and its flat-block dequantization
(tests/ref/q4ref.py: bnb's own torch path; its native AVX-512 CPU dequantize indexes scales
per row and is not used), transformers' LlamaForCausalLM on those weights, PEFT for the LoRA
gradients and the merge. The bytes guanaco writes are checked against quantize_4bit too, so
both sides hold the same 4-bit weights.
"""
import json
import os
import pathlib
import sys

import numpy as np
import pytest
import torch

from conftest import run_guanaco

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent / "ref"))
from q4ref import roundtrip  # noqa: E402

pytest.importorskip("bitsandbytes")
import bitsandbytes.functional as BF  # noqa: E402
from peft import LoraConfig, PeftModel, get_peft_model  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

REL_TOL = 1e-4   # float32 products on identical weights (test_4bit_model.py)
BF16_TOL = 2e-2  # bf16 compute against the float32 product on the same weights
ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
VOCAB = 300

# (hidden, intermediate): down_proj rows of 352 = 5.5 blocks of 64; rows of 96 and 200
# (shorter than a block of 128 or 256, 96 % 16 == 0 and 200 % 16 != 0); 160 and 424
SHAPES = [(128, 352), (96, 200), (160, 424)]


def ids_arg(ids):
    return " ".join(str(int(i)) for i in ids)


@pytest.fixture(scope="module", params=SHAPES, ids=lambda s: f"h{s[0]}-i{s[1]}")
def base(request, tmp_path_factory):
    h, i = request.param
    torch.manual_seed(h + i)
    d = tmp_path_factory.mktemp(f"q4shape{h}x{i}") / "base"
    cfg = LlamaConfig(hidden_size=h, intermediate_size=i, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=VOCAB, tie_word_embeddings=False, rms_norm_eps=1e-5)
    LlamaForCausalLM(cfg).save_pretrained(d)
    return d


def straddles(model, bs):
    """How many of the linear weights have rows that do not start on a block boundary."""
    return sum(1 for k, v in model.state_dict().items() if k.endswith("proj.weight") and v.shape[1] % bs)


def dense_roundtrip(base, bs, qtype="nf4", dq=True):
    """transformers' model with every linear weight replaced by bnb's round trip at block bs."""
    m = LlamaForCausalLM.from_pretrained(base).eval()
    sd = m.state_dict()
    for k, v in sd.items():
        if k.endswith("proj.weight"):
            sd[k] = roundtrip(v, bs, qtype, dq).reshape(v.shape)
    m.load_state_dict(sd)
    return m


def ref_logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float().numpy()


def ours(tmp_path, model, ids, *extra, env=None):
    out = tmp_path / "o.npy"
    run_guanaco("logits", "-m", model, "--ids", ids_arg(ids), "-o", out, *extra, env=env)
    return np.load(out)


def check(got, ref, what, tol=REL_TOL):
    scale = float(np.abs(ref).max())
    diff = float(np.abs(got - ref).max())
    assert diff <= tol * scale, f"{what}: max diff {diff:.3g} = {diff / scale:.3g} x max|logit| (allowed {tol:g})"


def simd_env(level):
    env = dict(os.environ)
    env["GN_SIMD"] = level
    return env


@pytest.mark.parametrize("bs", [64, 128, 256])
def test_logits_quantized_on_load(tmp_path, base, bs):
    """--4bit --blocksize bs: prefill (T = 40: tiled GEMM), small batch (T = 5), decode through the
    KV cache (--kv-step: T = 1 per token), float32 compute at every SIMD level this CPU has, and
    bf16 compute."""
    ref_model = dense_roundtrip(base, bs)
    assert straddles(ref_model, bs), "no weight has blocks straddling rows: the case tests nothing"
    ids = list(np.random.default_rng(bs).integers(0, VOCAB, 40))
    ref = ref_logits(ref_model, ids)
    q = ("--4bit", "--blocksize", str(bs))
    for level in ("scalar", "avx2", None):
        env = simd_env(level) if level else None
        what = f"bs {bs} {level or 'best SIMD'}"
        check(ours(tmp_path, base, ids, *q, "--compute-dtype", "f32", env=env), ref, f"{what} T=40")
        check(ours(tmp_path, base, ids[:5], *q, "--compute-dtype", "f32", env=env), ref[:5], f"{what} T=5")
        check(ours(tmp_path, base, ids[:12], *q, "--compute-dtype", "f32", "--kv-step", env=env), ref[:12],
              f"{what} --kv-step")
    for extra in ((), ("--kv-step",)):
        check(ours(tmp_path, base, ids[:16], *q, "--compute-dtype", "bf16", *extra), ref[:16],
              f"bs {bs} bf16 compute {extra}", tol=BF16_TOL)


@pytest.mark.parametrize("bs,qtype,dq", [(64, "nf4", True), (128, "fp4", False), (256, "nf4", True)])
def test_quantized_folder_bytes_and_logits(tmp_path, base, bs, qtype, dq):
    """`guanaco quantize --blocksize bs` writes bnb's quantize_4bit bytes for every linear weight,
    and the folder it writes computes transformers' logits on bnb's round trip."""
    qdir = tmp_path / "q"
    args = ["quantize", "-m", base, "-o", qdir, "--blocksize", str(bs), "--quant-type", qtype, "--compute-dtype", "f32"]
    if not dq:
        args.append("--no-double-quant")
    run_guanaco(*args)
    st = load_file(qdir / "model.safetensors")
    dense = LlamaForCausalLM.from_pretrained(base).state_dict()
    n = 0
    for k, w in dense.items():
        if not k.endswith("proj.weight"):
            continue
        q, s = BF.quantize_4bit(w.float().contiguous(), blocksize=bs, quant_type=qtype, compress_statistics=dq)
        assert torch.equal(st[k].reshape(-1), q.reshape(-1)), f"{k}: packed codes differ from bnb"
        js = json.loads(bytes(st[f"{k}.quant_state.bitsandbytes__{qtype}"].tolist()))
        assert js["blocksize"] == bs and js["shape"] == list(w.shape), js
        if dq:
            assert torch.equal(st[k + ".absmax"], s.absmax), f"{k}: absmax codes differ"
            assert torch.equal(st[k + ".nested_absmax"], s.state2.absmax), f"{k}: nested absmax differs"
            assert js["nested_offset"] == s.offset.item(), k
        else:
            assert torch.equal(st[k + ".absmax"], s.absmax), f"{k}: absmax differs"
        n += 1
    assert n == 14
    ref_model = dense_roundtrip(base, bs, qtype, dq)
    ids = list(np.random.default_rng(bs + 1).integers(0, VOCAB, 30))
    ref = ref_logits(ref_model, ids)
    check(ours(tmp_path, qdir, ids), ref, f"{qtype} bs {bs} folder, prefill")
    check(ours(tmp_path, qdir, ids[:10], "--kv-step"), ref[:10], f"{qtype} bs {bs} folder, decode")


def adapter_on(dense_dir, out, seed):
    torch.manual_seed(seed)
    pm = get_peft_model(LlamaForCausalLM.from_pretrained(dense_dir),
                        LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=ALL, init_lora_weights=False))
    pm.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def qpair(base, tmp_path_factory):
    """A 4-bit folder written by guanaco at block 128 (f32 compute) and the float32 folder of
    bnb's round trip of the same weights (what PEFT runs), with an adapter made on the latter."""
    d = tmp_path_factory.mktemp("qpair")
    run_guanaco("quantize", "-m", base, "-o", d / "q", "--blocksize", "128", "--compute-dtype", "f32")
    m = dense_roundtrip(base, 128)
    assert straddles(m, 128)
    m.save_pretrained(d / "dense")
    return d / "q", d / "dense", adapter_on(d / "dense", d / "ad", 7)


def test_one_step_gradients_equal_peft(tmp_path, qpair):
    """`guanaco grad` on the straddling 4-bit base: loss and every LoRA gradient equal PEFT's on
    the same weights (input gradients through every 4-bit product)."""
    qdir, dense, ad = qpair
    rng = np.random.default_rng(11)
    ids = rng.integers(0, VOCAB, 33).tolist()
    labels = [-100] * 8 + ids[8:]
    out = tmp_path / "g.safetensors"
    run_guanaco("grad", "-m", qdir, "-a", ad, "--ids", ids_arg(ids), "--labels", ids_arg(labels), "-o", out)
    got = load_file(out)
    pm = PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(dense), ad, is_trainable=True)
    pm.train()
    loss = pm(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss
    loss.backward()
    assert abs(got["loss"].item() - loss.item()) <= 1e-4 * abs(loss.item()), (got["loss"].item(), loss.item())
    n = 0
    for name, prm in pm.named_parameters():
        if prm.grad is None:
            continue
        g = got[name.replace(".default", "")]
        rel = (g - prm.grad).abs().max().item() / prm.grad.abs().max().item()
        assert rel <= 1e-4, f"{name}: max diff {rel:.3g} of max |grad|"
        n += 1
    assert n == 2 * 7 * 2


def test_merge_equals_peft_merge(tmp_path, qpair):
    """`guanaco merge --dtype f32` of an adapter into the straddling 4-bit base: every weight
    equals PEFT's merge_and_unload on bnb's round trip of the base."""
    qdir, dense, ad = qpair
    out = tmp_path / "merged"
    run_guanaco("merge", "-m", qdir, "-a", ad, "-o", out, "--dtype", "f32")
    got = load_file(out / "model.safetensors")
    want = PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(dense), ad).merge_and_unload().state_dict()
    n = 0
    for k, w in want.items():
        if not k.endswith("proj.weight"):
            continue
        g = got[k]
        assert g.shape == w.shape, (k, g.shape, w.shape)
        rel = (g.float() - w).abs().max().item() / w.abs().max().item()
        assert rel <= 1e-6, f"{k}: merged weight differs from PEFT's by {rel:.3g} of max|w|"
        n += 1
    assert n == 14
    ids = list(np.random.default_rng(5).integers(0, VOCAB, 24))
    with torch.no_grad():
        ref = PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(dense), ad).eval()(
            torch.tensor([ids])).logits[0].numpy()
    check(ours(tmp_path, out, ids), ref, "merged folder vs PEFT unmerged")
