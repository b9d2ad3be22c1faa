"""4-bit models end to end: load-time quantization, pre-quantized checkpoints, products.

Oracles: transformers + bitsandbytes (CPU) write and read 4-bit checkpoints; the reference
logits are transformers' LlamaForCausalLM run on bitsandbytes' own dequantization of that
checkpoint's weights ("the same quantized weights on both sides"; tests/ref/q4ref.py says why its
flat-block torch path and not the native CPU kernel).
bitsandbytes' CPU 4-bit matmul itself is not exact (it differs from its own dequantized
weights by ~4e-3 of max|logit| on these models), so it is not the reference for the logits;
its file format and its dequantization are.
"""
import json
import os
import pathlib
import re
import resource
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from conftest import GUANACO, cpu_flags, other_bf16_paths, run_guanaco

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent / "ref"))
from q4ref import flat_dequantize  # noqa: E402

bnb = pytest.importorskip("bitsandbytes")
from transformers import BitsAndBytesConfig, LlamaConfig, LlamaForCausalLM  # noqa: E402

REL_TOL = 1e-4  # float32 arithmetic on identical dequantized weights


def ids_arg(ids):
    return " ".join(str(int(i)) for i in ids)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    # out-features multiples of 64: bnb's CPU 4-bit kernels require it
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("q4") / "base"
    cfg = LlamaConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=300, tie_word_embeddings=False, rms_norm_eps=1e-5)
    LlamaForCausalLM(cfg).save_pretrained(d)
    return d


def dense_model(qdir, base, n_4bit=14):
    """transformers with every 4-bit weight of the checkpoint at qdir (n_4bit of them) replaced by
    bnb's dequantization of it, the rest from base."""
    q = LlamaForCausalLM.from_pretrained(qdir, device_map="cpu")
    dense = LlamaForCausalLM.from_pretrained(base).eval()
    sd = dense.state_dict()
    n = 0
    for name, mod in q.named_modules():
        if isinstance(mod, bnb.nn.Linear4bit):
            sd[name + ".weight"] = flat_dequantize(mod.weight.data, mod.weight.quant_state).float()
            n += 1
    assert n == n_4bit
    dense.load_state_dict(sd)
    return dense


def dense_reference(qdir, base, ids):
    """transformers on bnb's dequantized weights of the 4-bit checkpoint at qdir."""
    with torch.no_grad():
        return dense_model(qdir, base)(torch.tensor([ids])).logits[0].numpy()


def ours(tmp_path, model, ids, *extra, env=None):
    out = tmp_path / "o.npy"
    run_guanaco("logits", "-m", model, "--ids", ids_arg(ids), "-o", out, *extra, env=env)
    return np.load(out)


def check(got, ref, what, tol=REL_TOL):
    scale = float(np.abs(ref).max())
    diff = float(np.abs(got - ref).max())
    assert diff <= tol * scale, f"{what}: max diff {diff:.3g} = {diff / scale:.3g} x max|logit| (allowed {tol:g})"


@pytest.mark.parametrize("qtype,dq", [("nf4", True), ("fp4", False)])
def test_transformers_4bit_checkpoint_loads_in_guanaco(tmp_path, base, qtype, dq):
    qdir = tmp_path / "q"
    m = LlamaForCausalLM.from_pretrained(base, device_map="cpu", quantization_config=BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type=qtype, bnb_4bit_use_double_quant=dq,
        bnb_4bit_compute_dtype=torch.float32))
    m.save_pretrained(qdir)
    ids = list(np.random.default_rng(1).integers(0, 300, 60))
    check(ours(tmp_path, qdir, ids), dense_reference(qdir, base, ids), f"{qtype} dq={dq} checkpoint")
    info = run_guanaco("info", "-m", qdir).stdout
    assert f"{qtype}, blocksize 64, {'double quantization' if dq else 'f32 absmax'}, compute f32" in info, info


def test_guanaco_quantize_loads_in_transformers(tmp_path, base):
    out = tmp_path / "gq"
    run_guanaco("quantize", "-m", base, "-o", out, "--compute-dtype", "f32")
    cfg = json.loads((out / "config.json").read_text())["quantization_config"]
    assert cfg["quant_method"] == "bitsandbytes" and cfg["bnb_4bit_quant_type"] == "nf4" and cfg["bnb_4bit_use_double_quant"]
    ids = list(np.random.default_rng(2).integers(0, 300, 40))
    ref = dense_reference(out, base, ids)
    check(ours(tmp_path, out, ids), ref, "guanaco on its own 4-bit folder")
    check(ours(tmp_path, base, ids, "--4bit", "--compute-dtype", "f32"), ref, "quantize on load == the written folder")
    # transformers' own 4-bit forward on our file: within bnb's CPU matmul error
    q = LlamaForCausalLM.from_pretrained(out, device_map="cpu")
    with torch.no_grad():
        got = q(torch.tensor([ids])).logits[0].float().numpy()
    check(got, ref, "transformers + bnb CPU matmul on guanaco's file", tol=2e-2)


def test_quantize_on_load_matches_bnb_bytes(tmp_path, base):
    """--4bit quantizes the checkpoint exactly as transformers' load_in_4bit does: the file
    guanaco writes and the file transformers writes hold the same 4-bit tensors."""
    ours_dir, theirs_dir = tmp_path / "ours", tmp_path / "theirs"
    run_guanaco("quantize", "-m", base, "-o", ours_dir)
    LlamaForCausalLM.from_pretrained(base, device_map="cpu", quantization_config=BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16)).save_pretrained(theirs_dir)
    from safetensors.torch import load_file
    a, b = load_file(ours_dir / "model.safetensors"), load_file(theirs_dir / "model.safetensors")
    qkeys = [k for k in b if ".weight" in k and ("absmax" in k or "quant" in k or k.endswith("proj.weight"))]
    assert qkeys and set(qkeys) <= set(a)
    for k in qkeys:
        if "quant_state" in k:
            ja, jb = json.loads(bytes(a[k].tolist())), json.loads(bytes(b[k].tolist()))
            assert ja == jb, (k, ja, jb)
        else:
            assert torch.equal(a[k], b[k]), f"{k} differs"


def test_info_bits_and_resident_memory(tmp_path, smollm2_gguf):
    p = run_guanaco("info", "-m", smollm2_gguf, "--4bit")
    m = re.search(r"nf4, blocksize 64, double quantization, compute bf16: ([0-9.]+) bits per parameter", p.stdout)
    assert m and m.group(1) == "4.127", p.stdout
    resident = int(re.search(r"resident weight bytes: (\d+)", p.stdout).group(1))
    # peak RSS of a 4-bit chat against the figure printed: the 4-bit weights plus the f32
    # embedding/head, the f32 dequantized copy of the file made at load (freed before chat),
    # the KV cache and code; it must stay far below the f32 model (538 MB)
    t0 = time.time()
    proc = subprocess.run(["/usr/bin/time", "-v", str(GUANACO), "chat", "-m", str(smollm2_gguf), "--4bit", "-p",
                           "Hi", "-n", "8", "--temp", "0", "-c", "512"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    assert resident < 200e6, resident
    assert rss_kb * 1024 < resident + 200e6, f"peak RSS {rss_kb * 1024} vs resident weights {resident}"


def bad_case(tmp_path, base, name, mutate):
    q = tmp_path / name
    run_guanaco("quantize", "-m", base, "-o", q)
    from safetensors.torch import load_file, save_file
    sd = load_file(q / "model.safetensors")
    mutate(q, sd)
    return q


def test_bad_4bit_files(tmp_path, base):
    from safetensors.torch import save_file
    key = "model.layers.0.self_attn.q_proj.weight"

    def absmax_len(q, sd):
        sd[key + ".absmax"] = sd[key + ".absmax"][:-1].clone()
        save_file(sd, q / "model.safetensors")

    def qtype(q, sd):
        js = json.loads(bytes(sd[key + ".quant_state.bitsandbytes__nf4"].tolist()))
        js["quant_type"] = "nf5"
        sd[key + ".quant_state.bitsandbytes__nf4"] = torch.tensor(list(json.dumps(js).encode()), dtype=torch.uint8)
        save_file(sd, q / "model.safetensors")

    def badjson(q, sd):
        sd[key + ".quant_state.bitsandbytes__nf4"] = torch.tensor(list(b"{\"quant_type\": "), dtype=torch.uint8)
        save_file(sd, q / "model.safetensors")

    def nested(q, sd):
        del sd[key + ".nested_absmax"]
        save_file(sd, q / "model.safetensors")

    for name, fn in [("absmax", absmax_len), ("qtype", qtype), ("json", badjson), ("nested", nested)]:
        q = bad_case(tmp_path, base, name, fn)
        p = run_guanaco("info", "-m", q, check=False)
        lines = [l for l in p.stderr.splitlines() if l.strip()]
        assert p.returncode == 1 and len(lines) == 1 and lines[0].startswith("guanaco: "), (name, p.stderr)
        assert "q_proj" in lines[0], (name, lines[0])


def test_bf16_compute_checkpoint_matches_transformers_bnb(tmp_path, base):
    """A transformers 4-bit checkpoint with bnb_4bit_compute_dtype=bfloat16: guanaco's product in
    the compute dtype (inputs, weights and outputs of each 4-bit matmul in bf16, as Linear4bit)
    against transformers + bitsandbytes' own CPU forward, decode (T=1) and prefill (T=40).
    Measured here: 0.7% of max|logit| (and 0.7% too with the earlier f32 activations), well
    inside 2e-2; dropping the double quantization's offset alone moves it past that."""
    qdir = tmp_path / "q"
    m = LlamaForCausalLM.from_pretrained(base, device_map="cpu", quantization_config=BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16))
    m.save_pretrained(qdir)
    for T in (1, 40):
        ids = list(np.random.default_rng(T).integers(0, 300, T))
        with torch.no_grad():
            ref = m(torch.tensor([ids])).logits[0].float().numpy()
        check(ours(tmp_path, qdir, ids), ref, f"bf16 compute, T={T}", tol=2e-2)
        for what, env in other_bf16_paths():  # the prefill GEMM on the path this CPU does not pick
            check(ours(tmp_path, qdir, ids, env=env), ref, f"bf16 compute, T={T}, {what}", tol=2e-2)


def test_bf16_stored_checkpoint_keeps_its_bf16_head(tmp_path, base):
    """A pre-quantized checkpoint stored in bf16 with bf16 compute (transformers' dtype=bfloat16,
    and `guanaco quantize` on an f16/bf16 folder): transformers reloads its embedding and head in
    bf16 (dtype "auto"), and so does guanaco without --dtype: the same bf16 products on both
    sides, and half the head's bytes per decoded token. An explicit --dtype f32 widens them."""
    qdir = tmp_path / "q"
    LlamaForCausalLM.from_pretrained(base, device_map="cpu", dtype=torch.bfloat16, quantization_config=BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16)).save_pretrained(qdir)
    m = LlamaForCausalLM.from_pretrained(qdir, device_map="cpu")
    assert m.lm_head.weight.dtype == torch.bfloat16 and m.model.embed_tokens.weight.dtype == torch.bfloat16
    info = {d: run_guanaco("info", "-m", qdir, *a).stdout for d, a in (("auto", ()), ("f32", ("--dtype", "f32")))}
    assert "embedding: bf16 (untied head: bf16)" in info["auto"], info["auto"]
    assert "embedding: f32 (untied head: f32)" in info["f32"], info["f32"]
    bytes_of = {d: int(re.search(r"resident weight bytes: (\d+)", t).group(1)) for d, t in info.items()}
    assert bytes_of["f32"] - bytes_of["auto"] == 2 * 2 * 300 * 128, bytes_of  # two 300 x 128 tables, 2 B less each
    for T in (1, 33):
        ids = list(np.random.default_rng(T + 7).integers(0, 300, T))
        with torch.no_grad():
            ref = m(torch.tensor([ids])).logits[0].float().numpy()
        check(ours(tmp_path, qdir, ids), ref, f"bf16 checkpoint, T={T}", tol=2e-2)
        check(ours(tmp_path, qdir, ids, "--dtype", "f32"), ref, f"bf16 checkpoint --dtype f32, T={T}", tol=2e-2)


def test_weights_copied_out_of_the_mapping(tmp_path, base, smollm2_gguf):
    """By default the streamed weights a file holds as used (a pre-quantized checkpoint's packed
    codes, 8-bit and nested scales and dense head; a GGUF's block-quantized layers and tied table;
    the float32 norm vectors read in place, whose pages a kernel that maps a file's large folios
    whole on a fault would otherwise bring back with their neighbours' weights) are copied out
    of the file mapping into memory advised for huge pages; --mmap leaves them there. The bytes
    copied are those tensors' bytes in the file (each rounded up to 64, as the copy aligns them;
    the float32 nested scales are read into memory at load anyway), counted here from the
    safetensors file itself; logits bit for bit the same both ways, and the peak RSS of the copy
    does not hold the mapping's pages as well."""
    qdir = tmp_path / "q"
    LlamaForCausalLM.from_pretrained(base, device_map="cpu", quantization_config=BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16)).save_pretrained(qdir)
    from safetensors import safe_open
    want = 0
    with safe_open(str(qdir / "model.safetensors"), "pt") as f:
        for k in f.keys():
            if not (re.search(r"(_proj\.weight(\.absmax)?|norm\.weight)$", k) or k == "lm_head.weight"):
                continue
            t = f.get_tensor(k)
            if not k.endswith("norm.weight") or t.dtype == torch.float32:  # a float32 norm is used in place
                want += (t.numel() * t.element_size() + 63) // 64 * 64
    copied = {}
    for what, extra in (("copy", ()), ("mmap", ("--mmap",))):
        info = run_guanaco("info", "-m", qdir, *extra).stdout
        copied[what] = int(re.search(r"copied out of the file mapping: (\d+) bytes", info).group(1))
    assert copied == {"copy": want, "mmap": 0}, (copied, want)
    ids = list(np.random.default_rng(5).integers(0, 300, 21))
    for model, extra in ((qdir, ()), (smollm2_gguf, ()), (smollm2_gguf, ("--4bit",))):
        a, b = ours(tmp_path, model, ids, *extra), ours(tmp_path, model, ids, *extra, "--mmap")
        assert np.array_equal(a, b), (model, extra)

    def peak_rss(*extra):
        proc = subprocess.run(["/usr/bin/time", "-v", str(GUANACO), "chat", "-m", str(smollm2_gguf), *extra, "-p", "Hi",
                               "-n", "4", "--temp", "0", "-c", "256"], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        return int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1)) * 1024

    info = run_guanaco("info", "-m", smollm2_gguf).stdout
    n = int(re.search(r"copied out of the file mapping: (\d+) bytes", info).group(1))
    assert n > 50e6, info  # SmolLM2's Q4_1 layers and its tied table
    assert peak_rss() < peak_rss("--mmap") + 0.25 * n


def test_4bit_load_leaves_no_file_pages_resident(smollm2_gguf):
    """--4bit reads each linear weight of the file once (quantizing it): the mapping's pages behind
    it are dropped from the process, so the peak RSS of a chat is the 4-bit weights and the rest,
    not the file as well (SmolLM2's 96 MB of Q4_1 file pages stayed resident before: 182 MB peak
    against 85 MB of weights; 118 MB since; a 7B f16 folder 16.3 GB -> 3.9 GB)."""
    p = run_guanaco("info", "-m", smollm2_gguf, "--4bit")
    resident = int(re.search(r"resident weight bytes: (\d+)", p.stdout).group(1))
    proc = subprocess.run(["/usr/bin/time", "-v", str(GUANACO), "chat", "-m", str(smollm2_gguf), "--4bit", "-p", "Hi",
                           "-n", "4", "--temp", "0", "-c", "256"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1)) * 1024
    assert rss < resident + 60e6, f"peak RSS {rss / 1e6:.0f} MB vs {resident / 1e6:.0f} MB of weights"


def test_kernels_line_names_the_bf16_product_path(base):
    """`guanaco info` names the path the bf16 products take. On a CPU with AMX it must be the tiles
    (the library checks them on a product with a known result at start-up and falls back, with a
    warning, where they give a wrong one: this fails then); GN_SIMD=avx512 keeps AVX512_BF16; on
    an AVX512_BF16 CPU without AMX, GN_AMX_EMULATE=1 names the emulated tiles; AVX-512 without
    AVX512_BF16 (or GN_NF4_NO_BF16DOT=1) is "avx512-nobf16"."""
    f = cpu_flags()

    def kernels(env=None):
        p = run_guanaco("info", "-m", base, env=env)
        line = [l for l in p.stdout.splitlines() if l.startswith("kernels: ")]
        assert len(line) == 1, p.stdout
        assert "AMX" not in p.stderr, p.stderr
        return line[0].split(": ", 1)[1]

    if not {"avx512f", "avx512bw", "avx512vl"} <= f:
        pytest.skip("no AVX-512 here: no bf16 product path to name")
    if "avx512_bf16" not in f:  # Skylake-SP to Ice Lake: the integer 4-bit kernels, no bf16 products
        assert kernels() == "avx512-nobf16"
        return
    assert kernels({"GN_NF4_NO_BF16DOT": "1"}) == "avx512-nobf16"  # the same paths taken on purpose
    assert kernels({"GN_SIMD": "avx512"}) == "avx512"
    if {"amx_tile", "amx_bf16"} <= f:
        assert kernels() == "avx512+amx"
        assert kernels({"GN_SIMD": "amx"}) == "avx512+amx"
    else:
        assert kernels() == "avx512"
        assert kernels({"GN_AMX_EMULATE": "1"}) == "avx512+amx(emulated)"
