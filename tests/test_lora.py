"""PEFT LoRA adapters against PEFT itself.

Oracles: peft + transformers in float32. Random adapters (init_lora_weights=False, so lora_B is
not zero) on random tiny LLaMA models; logits must agree within REL_TOL x max|logit|.
"""
import json
import pathlib
import shutil

import numpy as np
import pytest
import torch

from conftest import run_guanaco
from native_oracle import isolated, llama_logits

import sys
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent / "ref"))
from q4ref import make_4bit_pair  # noqa: E402

peft = pytest.importorskip("peft")
from peft import LoraConfig, PeftModel, get_peft_model  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

REL_TOL = 1e-4  # float32 on both sides; a wrong scale or a transposed factor is off by >1e-1
ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def ids_arg(ids):
    return " ".join(str(int(i)) for i in ids)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("lora_base")
    cfg = LlamaConfig(hidden_size=96, intermediate_size=200, num_hidden_layers=2, num_attention_heads=6,
                      num_key_value_heads=2, vocab_size=301, rms_norm_eps=1e-5, tie_word_embeddings=False,
                      max_position_embeddings=256)
    m = LlamaForCausalLM(cfg).eval()
    m.save_pretrained(d)
    return d


def make_adapter(base, out, r, targets, safe, dtype, seed, alpha=16):
    torch.manual_seed(seed)
    pm = get_peft_model(LlamaForCausalLM.from_pretrained(base),
                        LoraConfig(r=r, lora_alpha=alpha, target_modules=targets, init_lora_weights=False))
    if dtype == "bf16":
        for n, p in pm.named_parameters():
            if "lora_" in n:
                p.data = p.data.to(torch.bfloat16)
    pm.save_pretrained(out, safe_serialization=safe)
    return out


def peft_logits(base, adapter, ids):
    m = PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(base), adapter).eval()
    for n, p in m.named_parameters():  # compute in float32 on both sides
        if p.dtype != torch.float32:
            p.data = p.data.float()
    with torch.no_grad():
        return m(torch.tensor([ids])).logits[0].numpy()


def ours(tmp_path, model, ids, *extra):
    out = tmp_path / "l.npy"
    run_guanaco("logits", "-m", model, "--ids", ids_arg(ids), "-o", out, *extra)
    return np.load(out)


def check(got, ref, what, tol=REL_TOL):
    scale = float(np.abs(ref).max())
    diff = float(np.abs(got - ref).max())
    assert diff <= tol * scale, f"{what}: max diff {diff:.3g} > {tol:g} x {scale:.3g}"


@pytest.mark.parametrize("r,targets,safe,dtype", [
    (8, ALL, True, "f32"),
    (64, ALL, False, "f32"),
    (8, ["q_proj", "v_proj", "down_proj"], False, "bf16"),
    (64, ["k_proj", "o_proj", "gate_proj", "up_proj"], True, "bf16"),
])
def test_adapter_logits_match_peft(tmp_path, base, r, targets, safe, dtype):
    ad = make_adapter(base, tmp_path / "ad", r, targets, safe, dtype, seed=r + len(targets))
    assert (ad / ("adapter_model.safetensors" if safe else "adapter_model.bin")).exists()
    rng = np.random.default_rng(r)
    for T in (1, 70):
        ids = rng.integers(0, 301, T).tolist()
        ref = peft_logits(base, ad, ids)
        check(ours(tmp_path, base, ids, "-a", ad), ref, f"r={r} {targets} T={T}")
        if T > 1:  # one token at a time through the KV cache: the decode path of the adapter
            check(ours(tmp_path, base, ids, "-a", ad, "--kv-step"), ref, f"r={r} {targets} T={T} --kv-step")


@pytest.fixture(scope="module")
def base4(tmp_path_factory):
    # out-features multiples of 64 (bnb's CPU 4-bit kernels need it)
    torch.manual_seed(4)
    d = tmp_path_factory.mktemp("lora4")
    cfg = LlamaConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=301, rms_norm_eps=1e-5, tie_word_embeddings=False)
    LlamaForCausalLM(cfg).save_pretrained(d / "base")
    return make_4bit_pair(d / "base", d / "q4", d / "dense")


@pytest.mark.parametrize("r,targets", [(8, ALL), (64, ["q_proj", "v_proj"])])
def test_adapter_on_4bit_base_matches_peft(tmp_path, base4, r, targets):
    qdir, dense = base4
    ad = make_adapter(dense, tmp_path / "ad", r, targets, True, "f32", seed=r)
    ids = list(np.random.default_rng(r).integers(0, 301, 50))
    check(ours(tmp_path, qdir, ids, "-a", ad), peft_logits(dense, ad, ids), f"4-bit base r={r}")


def test_adapter_saved_by_guanaco_loads_in_peft(tmp_path, base):
    ad = make_adapter(base, tmp_path / "ad", 8, ALL, False, "f32", seed=3)
    out = tmp_path / "resaved"
    run_guanaco("convert-adapter", "-m", base, "-a", ad, "-o", out)
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["r"] == 8 and sorted(cfg["target_modules"]) == sorted(ALL)
    ids = list(range(5, 45))
    check(peft_logits(base, out, ids), peft_logits(base, ad, ids), "PEFT on guanaco's file vs PEFT on the original")
    check(ours(tmp_path, base, ids, "-a", out), peft_logits(base, ad, ids), "guanaco on its own file")


def test_merged_model_loads_in_transformers(tmp_path, base):
    ad = make_adapter(base, tmp_path / "ad", 16, ALL, True, "f32", seed=5)
    merged = tmp_path / "merged"
    run_guanaco("merge", "-m", base, "-a", ad, "-o", merged, "--dtype", "f32")
    ids = list(range(3, 60))
    with torch.no_grad():
        got = LlamaForCausalLM.from_pretrained(merged).eval()(torch.tensor([ids])).logits[0].numpy()
    check(got, peft_logits(base, ad, ids), "merged (transformers) vs unmerged (PEFT)")
    check(ours(tmp_path, merged, ids), got, "guanaco on the merged folder")


def test_merge_to_nf4(tmp_path, base):
    """merge --dtype nf4 = fold in f32, then quantize as `guanaco quantize` (bitsandbytes layout)."""
    ad = make_adapter(base, tmp_path / "ad", 8, ALL, True, "f32", seed=21)
    run_guanaco("merge", "-m", base, "-a", ad, "-o", tmp_path / "m32", "--dtype", "f32")
    run_guanaco("merge", "-m", base, "-a", ad, "-o", tmp_path / "m4", "--dtype", "nf4", "--compute-dtype", "f32")
    qc = json.loads((tmp_path / "m4" / "config.json").read_text())["quantization_config"]
    assert qc["bnb_4bit_quant_type"] == "nf4" and qc["bnb_4bit_use_double_quant"]
    ids = list(range(2, 50))
    check(ours(tmp_path, tmp_path / "m4", ids), ours(tmp_path, tmp_path / "m32", ids, "--4bit", "--compute-dtype", "f32"),
          "merged nf4 folder vs the merged f32 folder quantized on load")
    assert not list(tmp_path.glob("*tmp*"))


def test_adapter_on_gguf_base_matches_peft(tmp_path, smollm2_gguf):
    """A PEFT adapter made on the HF form of SmolLM2 applied to the GGUF: q/k lora_B rows must be
    permuted like llama.cpp's converter permutes q/k. The oracle is transformers' own GGUF loader."""
    from transformers import AutoModelForCausalLM
    d = tmp_path / "hf"
    d.mkdir()
    shutil.copy(smollm2_gguf, d / "m.gguf")
    hf = AutoModelForCausalLM.from_pretrained(d, gguf_file="m.gguf", torch_dtype=torch.float32)
    ids = [1, 504, 3458, 314, 253, 1543, 28, 2743, 11, 198, 17, 45, 5000, 33, 7, 99]
    with torch.no_grad():
        base_ref = hf(torch.tensor([ids])).logits[0].numpy()  # before get_peft_model wraps hf in place
    torch.manual_seed(9)
    pm = get_peft_model(hf, LoraConfig(r=8, lora_alpha=16, target_modules=ALL, init_lora_weights=False)).eval()
    for n, p in pm.named_parameters():  # visible effect
        if "lora_B" in n:
            p.data.normal_(0, 0.02)
    pm.save_pretrained(tmp_path / "ad")
    with torch.no_grad():
        ref = pm(torch.tensor([ids])).logits[0].numpy()
    got = ours(tmp_path, smollm2_gguf, ids, "-a", tmp_path / "ad")
    base_got = ours(tmp_path, smollm2_gguf, ids)
    # the base itself agrees to float32 rounding of the dequantized weights; the adapter's effect
    # (ref - base_ref) must be reproduced to the same tolerance
    check(base_got, base_ref, "GGUF base vs transformers' GGUF loader")
    check(got - base_got, ref - base_ref, "adapter effect on the GGUF base")
    # merged into a GGUF (f16) that llama.cpp loads: its logits track the unmerged model's. llama.cpp
    # runs f16 weights with f16-rounded activations, so compare like test_model's llama.cpp check:
    # top-1 agreement and a max-diff bound (here measured ~0.1-0.3 of max|logit| 30).
    pytest.importorskip("llama_cpp")
    merged = tmp_path / "merged-f16.gguf"
    run_guanaco("merge", "-m", smollm2_gguf, "-a", tmp_path / "ad", "-o", merged, "--format", "gguf", "--dtype", "f16")
    _, lc = isolated(llama_logits, merged, ids=[int(i) for i in ids], n_ctx=64)  # a child process
    assert (lc.argmax(-1) == got.argmax(-1)).mean() >= 0.9
    assert np.abs(lc - got).max() <= 1.0, np.abs(lc - got).max()
    # and the merged GGUF loads back in guanaco, equal to the unmerged logits within f16 rounding
    check(ours(tmp_path, merged, ids), got, "guanaco on the merged GGUF", tol=5e-3)


def corrupt_cases(base, tmp_path):
    ad = make_adapter(base, tmp_path / "good", 4, ALL, True, "f32", seed=11)
    from safetensors.torch import load_file, save_file
    sd = load_file(ad / "adapter_model.safetensors")
    key = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
    cases = {}

    def variant(name, mutate_sd=None, mutate_cfg=None, raw=None):
        d = tmp_path / name
        shutil.copytree(ad, d)
        if mutate_sd:
            s = dict(sd)
            mutate_sd(s)
            save_file(s, d / "adapter_model.safetensors", metadata={"format": "pt"})
        if mutate_cfg:
            c = json.loads((d / "adapter_config.json").read_text())
            mutate_cfg(c)
            (d / "adapter_config.json").write_text(json.dumps(c))
        if raw:
            raw(d)
        cases[name] = d

    variant("shape", lambda s: s.__setitem__(key, torch.zeros(4, 95)))
    variant("module", lambda s: s.__setitem__(
        "base_model.model.model.layers.0.self_attn.rotary_proj.lora_A.weight", torch.zeros(4, 96)))
    variant("missing_b", lambda s: s.pop(key.replace("lora_A", "lora_B")))
    variant("layer", lambda s: s.__setitem__(key.replace("layers.0", "layers.7"), torch.zeros(4, 96)))
    variant("r0", mutate_cfg=lambda c: c.__setitem__("r", 0))
    variant("badjson", raw=lambda d: (d / "adapter_config.json").write_text("{\"r\": 4,"))
    variant("truncated", raw=lambda d: (d / "adapter_model.safetensors").write_bytes(
        (d / "adapter_model.safetensors").read_bytes()[:100]))
    return cases


EXPECT = {"shape": "q_proj", "module": "rotary_proj", "missing_b": "lora_B", "layer": "layer",
          "r0": "'r'", "badjson": "adapter_config.json", "truncated": "adapter_model.safetensors"}


def test_bad_adapters_give_clear_errors(tmp_path, base):
    for name, d in corrupt_cases(base, tmp_path).items():
        p = run_guanaco("logits", "-m", base, "-a", d, "--ids", "1 2 3", "-o", tmp_path / "x.npy", check=False)
        lines = [l for l in p.stderr.splitlines() if l.strip()]
        assert p.returncode == 1, f"{name}: exit {p.returncode}\n{p.stderr}"
        assert len(lines) == 1 and lines[0].startswith("guanaco: "), f"{name}: {p.stderr!r}"
        assert EXPECT[name] in lines[0], f"{name}: message should name {EXPECT[name]!r}: {lines[0]}"
        assert not (tmp_path / "x.npy").exists()
