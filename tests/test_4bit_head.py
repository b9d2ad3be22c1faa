"""--4bit-head: lm_head in 4-bit too, as transformers + bitsandbytes quantize it when
llm_int8_skip_modules=[] (their default skips it).

Oracles: transformers + bitsandbytes (CPU) quantize and save such a model; the reference logits
are transformers' LlamaForCausalLM on bitsandbytes' own dequantization of every 4-bit weight of
that checkpoint, the head included (tests/ref/q4ref.py), as in test_4bit_model.py. A tied head
(the embedding table) cannot be quantized by bitsandbytes in place (its Linear4bit asserts on the
shared parameter), so its oracle is the same model untied: lm_head a copy of the table, then
quantized by bnb; guanaco quantizes that copy and keeps the table for the lookups.
"""
import json

import numpy as np
import pytest
import torch

from conftest import run_guanaco

bnb = pytest.importorskip("bitsandbytes")
from test_4bit_model import dense_model  # noqa: E402
from peft import LoraConfig, get_peft_model  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from transformers import BitsAndBytesConfig, LlamaConfig, LlamaForCausalLM  # noqa: E402

REL_TOL = 1e-4  # float32 arithmetic on identical dequantized weights
V = 320  # out-features multiples of 64: bnb's CPU 4-bit kernels require it (the head's are V)


def make_base(d, tie, seed=0):
    torch.manual_seed(seed)
    cfg = LlamaConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=V, tie_word_embeddings=tie, rms_norm_eps=1e-5)
    LlamaForCausalLM(cfg).save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return make_base(tmp_path_factory.mktemp("h4") / "base", tie=False)


def bnb_config(compute=torch.float32):
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute, llm_int8_skip_modules=[])


def dense_of(qdir, base):
    """transformers with every 4-bit weight of qdir, the head included, as bnb dequantizes it"""
    assert type(LlamaForCausalLM.from_pretrained(qdir, device_map="cpu").lm_head).__name__ == "Linear4bit"
    return dense_model(qdir, base, n_4bit=2 * 7 + 1)


def logits_of(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()


def ours(tmp_path, model, ids, *extra):
    out = tmp_path / "o.npy"
    run_guanaco("logits", "-m", model, "--ids", " ".join(str(int(i)) for i in ids), "-o", out, *extra)
    return np.load(out)


def check(got, ref, what, tol=REL_TOL):
    scale = float(np.abs(ref).max())
    diff = float(np.abs(got - ref).max())
    assert diff <= tol * scale, f"{what}: max diff {diff:.3g} = {diff / scale:.3g} x max|logit| (allowed {tol:g})"


def test_transformers_checkpoint_with_4bit_head(tmp_path, base):
    qdir = tmp_path / "q"
    LlamaForCausalLM.from_pretrained(base, device_map="cpu", quantization_config=bnb_config()).save_pretrained(qdir)
    assert "lm_head.weight.absmax" in load_file(qdir / "model.safetensors")
    ids = list(np.random.default_rng(1).integers(0, V, 50))
    ref = logits_of(dense_of(qdir, base), ids)
    check(ours(tmp_path, qdir, ids), ref, "bnb checkpoint with a 4-bit head")
    check(ours(tmp_path, qdir, ids[:12], "--kv-step"), ref[:12], "the same, one token at a time (decode's head product)")
    # quantized on load from the plain folder: the same weights, so the same logits
    check(ours(tmp_path, base, ids, "--4bit", "--4bit-head", "--compute-dtype", "f32"), ref, "--4bit --4bit-head")
    # a 4-bit checkpoint with a 16-bit head: --4bit-head quantizes its head on load (no --4bit needed)
    q16 = tmp_path / "q16"
    LlamaForCausalLM.from_pretrained(base, device_map="cpu", quantization_config=BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.float32)).save_pretrained(q16)
    check(ours(tmp_path, q16, ids, "--4bit-head"), ref, "a 4-bit checkpoint's head quantized on load")
    info = run_guanaco("info", "-m", qdir).stdout
    assert "untied head: 4-bit" in info, info
    # without the flag the head stays dense: the logits differ by the head's rounding
    plain = ours(tmp_path, base, ids, "--4bit", "--compute-dtype", "f32")
    assert float(np.abs(plain - ref).max()) > 10 * REL_TOL * float(np.abs(ref).max())


def test_quantize_4bit_head_writes_what_bnb_writes(tmp_path, base):
    mine, theirs = tmp_path / "mine", tmp_path / "theirs"
    run_guanaco("quantize", "-m", base, "-o", mine, "--4bit-head")
    LlamaForCausalLM.from_pretrained(base, device_map="cpu",
                                     quantization_config=bnb_config(torch.bfloat16)).save_pretrained(theirs)
    a, b = load_file(mine / "model.safetensors"), load_file(theirs / "model.safetensors")
    hkeys = [k for k in b if k.startswith("lm_head.")]
    assert len(hkeys) >= 5 and set(hkeys) <= set(a), (hkeys, [k for k in a if k.startswith("lm_head")])
    for k in hkeys:
        if "quant_state" in k:
            assert json.loads(bytes(a[k].tolist())) == json.loads(bytes(b[k].tolist())), k
        else:
            assert torch.equal(a[k], b[k]), f"{k} differs"
    qc = json.loads((mine / "config.json").read_text())["quantization_config"]
    assert qc["llm_int8_skip_modules"] == [], qc
    # transformers reloads our folder with a 4-bit head; its CPU matmul is within ~2e-2 of the exact product
    ids = list(np.random.default_rng(2).integers(0, V, 30))
    q = LlamaForCausalLM.from_pretrained(mine, device_map="cpu")
    assert type(q.lm_head).__name__ == "Linear4bit"
    # (that folder keeps the embedding and norms in bf16, the compute dtype: the exact check below
    # takes an f32 one, whose 4-bit tensors are the same bytes)
    mine32 = tmp_path / "mine32"
    run_guanaco("quantize", "-m", base, "-o", mine32, "--4bit-head", "--compute-dtype", "f32")
    ref = logits_of(dense_of(mine32, base), ids)
    check(logits_of(q, ids).astype(np.float32), ref, "transformers + bnb on guanaco's folder", tol=2e-2)
    check(ours(tmp_path, mine32, ids), ref, "guanaco on its own folder")


def test_tied_head_quantized_as_an_untied_copy(tmp_path):
    tied = make_base(tmp_path / "tied", tie=True, seed=4)
    # the oracle: the same model untied (lm_head = a copy of the table), quantized by bnb
    m = LlamaForCausalLM.from_pretrained(tied)
    m.config.tie_word_embeddings = False
    untied = LlamaForCausalLM(m.config)
    sd = m.state_dict()
    sd["lm_head.weight"] = m.model.embed_tokens.weight.detach().clone()
    untied.load_state_dict(sd)
    untied.save_pretrained(tmp_path / "untied")
    qdir = tmp_path / "uq"
    LlamaForCausalLM.from_pretrained(tmp_path / "untied", device_map="cpu",
                                     quantization_config=bnb_config()).save_pretrained(qdir)
    ids = list(np.random.default_rng(3).integers(0, V, 40))
    ref = logits_of(dense_of(qdir, tmp_path / "untied"), ids)
    check(ours(tmp_path, tied, ids, "--4bit", "--4bit-head", "--compute-dtype", "f32"), ref, "tied head, 4-bit copy")
    # written out: an untied 4-bit head that transformers loads as such
    out = tmp_path / "out"
    run_guanaco("quantize", "-m", tied, "-o", out, "--4bit-head", "--compute-dtype", "f32")
    assert json.loads((out / "config.json").read_text())["tie_word_embeddings"] is False
    check(ours(tmp_path, out, ids), ref, "guanaco on the written tied-head folder")
    assert type(LlamaForCausalLM.from_pretrained(out, device_map="cpu").lm_head).__name__ == "Linear4bit"


def test_gradients_through_a_4bit_head_equal_peft(tmp_path, base):
    """QLoRA with the head in 4-bit: the head's input gradient through the 4-bit product (f32
    compute) against PEFT on the dequantized weights."""
    qdir = tmp_path / "q"
    LlamaForCausalLM.from_pretrained(base, device_map="cpu", quantization_config=bnb_config()).save_pretrained(qdir)
    dense = dense_of(qdir, base)
    torch.manual_seed(7)
    pm = get_peft_model(dense, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                                          init_lora_weights=False))
    pm.save_pretrained(tmp_path / "ad")
    rng = np.random.default_rng(5)
    ids = [int(i) for i in rng.integers(0, V, 24)]
    labels = [-100] * 6 + ids[6:]
    out = tmp_path / "g.safetensors"
    run_guanaco("grad", "-m", qdir, "-a", tmp_path / "ad", "--ids", " ".join(map(str, ids)),
                "--labels", " ".join(map(str, labels)), "-o", out)  # the folder's compute dtype: f32
    got = load_file(out)
    pm.train()
    loss = pm(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss
    loss.backward()
    assert abs(got["loss"].item() - loss.item()) <= 1e-4 * abs(loss.item())
    n = 0
    for name, prm in pm.named_parameters():
        if prm.grad is not None:
            g = got[name.replace(".default", "")]
            assert (g - prm.grad).abs().max().item() <= 1e-4 * prm.grad.abs().max().item(), name
            n += 1
    assert n == 2 * 3 * 2


def test_4bit_head_needs_4bit(tmp_path, base):
    p = run_guanaco("logits", "-m", base, "--ids", "1 2 3", "-o", tmp_path / "o.npy", "--4bit-head", check=False)
    assert p.returncode != 0 and "--4bit-head" in p.stderr and "--4bit" in p.stderr, p.stderr
    assert not (tmp_path / "o.npy").exists()


def test_merge_keeps_or_makes_the_4bit_head(tmp_path, base):
    """merge --dtype nf4 --4bit-head writes the head 4-bit (as quantize does); a plain merge of a
    4-bit-head checkpoint writes the head dequantized: both reproduce the 4-bit head's logits."""
    qdir = tmp_path / "q"
    LlamaForCausalLM.from_pretrained(base, device_map="cpu", quantization_config=bnb_config()).save_pretrained(qdir)
    ids = list(np.random.default_rng(6).integers(0, V, 20))
    ref = logits_of(dense_of(qdir, base), ids)
    run_guanaco("merge", "-m", qdir, "-o", tmp_path / "f32", "--dtype", "f32")
    assert "lm_head.weight" in load_file(tmp_path / "f32" / "model.safetensors")
    check(ours(tmp_path, tmp_path / "f32", ids), ref, "plain merge of a 4-bit-head checkpoint")
    run_guanaco("merge", "-m", base, "-o", tmp_path / "n4", "--dtype", "nf4", "--4bit-head", "--compute-dtype", "f32")
    assert "lm_head.weight.absmax" in load_file(tmp_path / "n4" / "model.safetensors")
    check(ours(tmp_path, tmp_path / "n4", ids), ref, "merge --dtype nf4 --4bit-head")
