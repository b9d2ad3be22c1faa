"""The Python package (python/guanaco) against the CLI, the C compiler and PEFT.

Oracles: the CLI's own outputs (`guanaco logits` .npy, `guanaco generate`/`chat` stdout,
`guanaco finetune`/`quantize`/`merge` files, `guanaco eval elo --json`), compared bit for bit;
the C compiler's sizeof/offsetof/enum values for every struct and constant the ctypes
declarations mirror; PEFT + transformers loading the adapter the package writes. The
package runs from python/ after `make shared` (its wheel is built and installed into a
temporary folder by one test), and python/README.md's example runs as written.
"""
import ctypes
import importlib.util
import gzip
import json
import os
import pathlib
import random
import re
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

from conftest import DATA, ROOT, data_file, run_guanaco, save_tiny_llama_with_tokenizer

STORIES = data_file("tiny-llama/stories260K.gguf")
OASST = DATA / "openassistant-guanaco" / "openassistant_best_replies_eval.jsonl.gz"
PY = ROOT / "python"


@pytest.fixture(scope="module")
def gn():
    """The package from python/, on the library `make shared` builds (a no-op when up to date)."""
    p = subprocess.run(["make", "-C", str(ROOT), "-j2", "shared"], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    sys.path.insert(0, str(PY))
    import guanaco
    assert pathlib.Path(guanaco.__file__).parent == PY / "guanaco", guanaco.__file__
    return guanaco


@pytest.fixture(scope="module")
def smol(gn, smollm2_gguf):
    """SmolLM2-135M-Instruct in NF4 (double quantization, bf16 compute): the CLI's --4bit."""
    with gn.Model(smollm2_gguf, load_in_4bit=True) as m:
        yield m


def bits_equal(a, b):
    a, b = np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)
    return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


# ----------------------------------------------------------------------------
# the declarations


def test_ctypes_declarations_match_the_c_compiler(gn, tmp_path):
    """Every mirrored struct's size and field offsets, and every enum constant, as cc sees them."""
    B = gn._lib.B
    consts = sorted(k for k, v in vars(B).items() if k.startswith("GN_") and isinstance(v, int))
    src = ["#include <stdio.h>", "#include <stddef.h>", '#include "guanaco.h"', "int main(void) {"]
    for s, fields in B.STRUCTS.items():
        src.append('printf("%s %%zu\\n", sizeof(%s));' % (s, s))
        src += ['printf("%s.%s %%zu\\n", offsetof(%s, %s));' % (s, f, s, f) for f in fields]
    src += ['printf("%s %%lld\\n", (long long)%s);' % (k, k) for k in consts]
    src.append("return 0; }")
    (tmp_path / "layout.c").write_text("\n".join(src) + "\n")
    exe = tmp_path / "layout"
    subprocess.run(["cc", "-std=c11", "-Wall", "-Werror", "-I", str(ROOT / "include"), str(tmp_path / "layout.c"),
                    "-o", str(exe)], check=True)
    c = dict(line.split() for line in subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.splitlines())
    py = {}
    for s, fields in B.STRUCTS.items():
        cls = getattr(B, s)
        py[s] = str(ctypes.sizeof(cls))
        for f in fields:
            py["%s.%s" % (s, f)] = str(getattr(cls, f).offset)
    for k in consts:
        py[k] = str(getattr(B, k))
    bad = {k: (py[k], c[k]) for k in c if py.get(k) != c[k]}
    assert not bad, "ctypes vs cc (ctypes, cc): %s" % bad
    assert len(c) == len(py) and len(B.STRUCTS) >= 9
    # every function the header declares is declared for ctypes
    header = (ROOT / "include" / "guanaco.h").read_text()
    header = re.sub(r"//[^\n]*|/\*.*?\*/", "", header, flags=re.S)
    names = set(re.findall(r"\b(gn_\w+)\s*\((?!\s*\*)", header)) - {n for n in re.findall(r"\(\s*\*\s*(\w+)\)", header)}
    assert names == set(B.FUNCTIONS), names ^ set(B.FUNCTIONS)


# ----------------------------------------------------------------------------
# inference equals the CLI


def test_logits_equal_cli_bit_for_bit(gn, smol, smollm2_gguf, tmp_path):
    ids = [1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298]
    run_guanaco("logits", "-m", STORIES, "--ids", " ".join(map(str, ids)), "-o", tmp_path / "s.npy")
    with gn.Model(STORIES) as m:
        ours = m.logits(ids)
        assert ours.dtype == np.float32 and ours.shape == (len(ids), 512)
        assert bits_equal(ours, np.load(tmp_path / "s.npy"))
        assert bits_equal(m.logits(np.array(ids, dtype=np.int64)), ours)
        assert m.tokenize("Once upon a time") == ids[:5]
        # a longer prompt (the package sizes its session to the tokens)
        long_ids = np.random.default_rng(0).integers(3, 512, 300)
        run_guanaco("logits", "-m", STORIES, "--ids", " ".join(map(str, long_ids)), "-o", tmp_path / "l.npy")
        assert bits_equal(m.logits(long_ids), np.load(tmp_path / "l.npy"))
    assert bits_equal(ours, np.load(tmp_path / "s.npy"))  # the array outlives the closed model
    text = "The capital of France is"
    run_guanaco("logits", "-m", smollm2_gguf, "--4bit", "-p", text, "-o", tmp_path / "q.npy")
    q = smol.logits(smol.tokenize(text))
    assert bits_equal(q, np.load(tmp_path / "q.npy"))
    assert smol.detokenize([int(q[-1].argmax())]) == " Paris"


def test_4bit_head_equals_cli(gn, smol, smollm2_gguf, tmp_path):
    """llm_int8_skip_modules=[] (BitsAndBytesConfig's way to quantize lm_head) is the CLI's
    --4bit-head: the same logits bit for bit; SmolLM2's head is its tied table, so a 4-bit copy."""
    text = "The capital of France is"
    run_guanaco("logits", "-m", smollm2_gguf, "--4bit", "--4bit-head", "-p", text, "-o", tmp_path / "h.npy")
    with gn.Model(smollm2_gguf, load_in_4bit=True, llm_int8_skip_modules=[]) as m:
        h = m.logits(m.tokenize(text))
    assert bits_equal(h, np.load(tmp_path / "h.npy"))
    assert not bits_equal(h, smol.logits(smol.tokenize(text)))  # the head's rounding shows
    with pytest.raises(gn.GuanacoArgumentError, match="llm_int8_skip_modules"):
        gn.Model(smollm2_gguf, load_in_4bit=True, llm_int8_skip_modules=["q_proj"])


def test_use_mmap_is_the_cli_mmap(gn, smol, smollm2_gguf):
    """use_mmap=True (llama-cpp-python's name) leaves the weights in the file mapping, as the
    CLI's --mmap: nothing copied, the same logits bit for bit."""
    text = "The capital of France is"
    with gn.Model(smollm2_gguf, load_in_4bit=True, use_mmap=True) as m:
        assert "copied out of the file mapping: 0 bytes" in m.describe()
        assert bits_equal(m.logits(m.tokenize(text)), smol.logits(smol.tokenize(text)))
    cli = run_guanaco("info", "-m", smollm2_gguf, "--4bit").stdout
    assert re.search(r"copied out of the file mapping: [1-9]\d* bytes", cli) and re.search(
        r"copied out of the file mapping: [1-9]\d* bytes", smol.describe())
    with pytest.raises(gn.GuanacoArgumentError, match="use_mmap"):
        gn.Model(smollm2_gguf, use_mmap="yes")


def test_generate_and_chat_equal_cli_with_the_same_seed(gn, smol, smollm2_gguf):
    flags = ["-n", "40", "--temp", "0.8", "--top-p", "0.9", "--top-k", "40", "--repeat-penalty", "1.1", "--seed", "1234"]
    cli = run_guanaco("generate", "-m", STORIES, "-p", "Once upon a time", *flags).stdout
    with gn.Model(STORIES) as m:
        kw = dict(max_new_tokens=40, temperature=0.8, top_p=0.9, top_k=40, repetition_penalty=1.1, seed=1234)
        text = m.generate("Once upon a time", **kw)
        assert cli == text + "\n"
        pieces = list(m.generate("Once upon a time", stream=True, **kw))
        assert len(pieces) > 5 and "".join(pieces) == text
        # closing a stream early stops the generation
        g = m.generate("Once upon a time", stream=True, **kw)
        first = next(g)
        g.close()
        assert text.startswith(first)
    q = "Name three colors."
    cli = run_guanaco("chat", "-m", smollm2_gguf, "--4bit", "-p", q, "-n", "16", "--temp", "0.7", "--seed", "5").stdout
    ours = smol.chat([{"role": "user", "content": q}], max_new_tokens=16, temperature=0.7, seed=5)
    assert ours and cli.strip() == ours
    assert "".join(smol.chat([{"role": "user", "content": q}], max_new_tokens=16, temperature=0.7, seed=5,
                             stream=True)).strip() == ours


def test_config_and_tokens(gn, smol):
    c = smol.config
    assert c["num_hidden_layers"] == 30 and c["vocab_size"] == 49152 and c["hidden_size"] == 576
    ids = smol.tokenize("Hello, world!", add_bos=False)
    assert smol.detokenize(ids) == "Hello, world!"
    assert "30" in smol.describe()
    # ctypes.CDLL (not PyDLL): every foreign call runs with the GIL released
    assert type(gn._lib.lib) is ctypes.CDLL


# ----------------------------------------------------------------------------
# fine-tuning


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A random tiny HF LLaMA with the LLaMA tokenizer and six OASST rows (as test_finetune.py)."""
    d = tmp_path_factory.mktemp("pkg_ft")
    base = save_tiny_llama_with_tokenizer(d / "base")
    rows = [json.loads(l) for l in gzip.open(OASST, "rt", encoding="utf-8").read().splitlines()[:6]]
    data = d / "data.jsonl"
    data.write_text("".join(json.dumps({"text": r["text"]}) + "\n" for r in rows))
    return {"base": base, "data": data}


CLI_FT = ["--dataset-format", "oasst1", "--source-max-len", "16", "--target-max-len", "48",
          "--gradient-accumulation-steps", "2", "--lora-r", "4", "--lora-alpha", "8", "--lora-dropout", "0.1",
          "--learning-rate", "1e-3", "--save-steps", "2", "--seed", "7", "--target-modules", "q_proj,v_proj,down_proj"]
PKG_FT = dict(dataset_format="oasst1", source_max_len=16, target_max_len=48, gradient_accumulation_steps=2,
              lora_r=4, lora_alpha=8, lora_dropout=0.1, learning_rate=1e-3, save_steps=2, seed=7,
              lora_modules=["q_proj", "v_proj", "down_proj"])
RUN_FILES = ["adapter_model.safetensors", "adapter_config.json"] + \
    ["checkpoint-%d/%s" % (s, f) for s in (2, 4) for f in ("adapter_model.safetensors", "optimizer.bin", "trainer_state.json")]


def same_files(a, b, files):
    for f in files:
        assert (a / f).exists(), a / f
        assert (a / f).read_bytes() == (b / f).read_bytes(), "%s differs" % f


def test_finetune_equals_cli_adapter_bytes_and_peft_loads_it(gn, tiny, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import LlamaForCausalLM
    cli, pkg = tmp_path / "cli", tmp_path / "pkg"
    run_guanaco("finetune", "-m", tiny["base"], "-d", tiny["data"], "-o", cli, "--max-steps", "4", *CLI_FT)
    steps = []
    out = gn.finetune(tiny["base"], tiny["data"], pkg, max_steps=4, callback=steps.append, **PKG_FT)
    assert out == str(pkg)
    same_files(pkg, cli, RUN_FILES)
    logged = [json.loads(l) for l in (cli / "log.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps] == [1, 2, 3, 4]
    for s, l in zip(steps, logged):
        assert abs(s["loss"] - l["loss"]) <= 1e-6 * abs(l["loss"]) and abs(s["grad_norm"] - l["grad_norm"]) <= 1e-5 * l["grad_norm"]
        assert s["learning_rate"] == pytest.approx(1e-3) and s["tokens_per_s"] > 0
    # 4-bit base (--4bit, NF4 + double quant, bf16 compute) through both
    run_guanaco("finetune", "-m", tiny["base"], "-d", tiny["data"], "-o", tmp_path / "cli4", "--4bit", "--max-steps", "2", *CLI_FT)
    gn.finetune(tiny["base"], tiny["data"], tmp_path / "pkg4", bits=4, max_steps=2, **PKG_FT)
    same_files(tmp_path / "pkg4", tmp_path / "cli4", RUN_FILES[:5])
    # PEFT loads what the package wrote; its logits match the package's with that adapter
    ids = [1, 450, 4996, 17354, 1701, 432, 1199, 975, 278, 17366, 11203]
    pm = PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(tiny["base"]), pkg).eval()
    with torch.no_grad():
        ref = pm(input_ids=torch.tensor([ids])).logits[0].numpy()
        plain = LlamaForCausalLM.from_pretrained(tiny["base"])(input_ids=torch.tensor([ids])).logits[0].numpy()
    with gn.Model(tiny["base"], adapter=pkg) as m:
        ours = m.logits(ids)
    err = np.abs(ours - ref).max()
    assert err <= 1e-4 * np.abs(ref).max() + 1e-5, err
    assert np.abs(ref - plain).max() > 100 * err, "the adapter changes nothing: the check would be empty"


def test_callback_stop_and_ctrl_c_keep_the_checkpoint_whole(gn, tiny, tmp_path):
    kw = dict(PKG_FT, save_steps=4)
    straight = tmp_path / "straight"
    gn.finetune(tiny["base"], tiny["data"], straight, max_steps=6, **kw)
    # "stop" from the callback at step 3: checkpoint-3 written, then resumed to step 6
    stopped = tmp_path / "stopped"
    gn.finetune(tiny["base"], tiny["data"], stopped, max_steps=6,
                callback=lambda s: "stop" if s["step"] == 3 else None, **kw)
    assert sorted(p.name for p in stopped.glob("checkpoint-*")) == ["checkpoint-3"]
    assert json.loads((stopped / "checkpoint-3" / "trainer_state.json").read_text())["global_step"] == 3
    assert (stopped / "adapter_model.safetensors").read_bytes() == (stopped / "checkpoint-3" / "adapter_model.safetensors").read_bytes()
    gn.finetune(tiny["base"], tiny["data"], stopped, max_steps=6, resume_from_checkpoint=True, **kw)
    same_files(stopped, straight, ["adapter_model.safetensors", "checkpoint-6/optimizer.bin"])
    # Ctrl-C (SIGINT) during step 2: the run ends after it with checkpoint-2 whole, then KeyboardInterrupt
    intr = tmp_path / "intr"

    def ctrl_c(s):
        if s["step"] == 2:
            signal.raise_signal(signal.SIGINT)
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        gn.finetune(tiny["base"], tiny["data"], intr, max_steps=6, callback=ctrl_c, **kw)
    assert signal.getsignal(signal.SIGINT) is handler
    assert sorted(p.name for p in intr.glob("checkpoint-*")) == ["checkpoint-2"] and not list(intr.glob(".checkpoint-*"))
    gn.finetune(tiny["base"], tiny["data"], intr, max_steps=6, resume_from_checkpoint=True, **kw)
    same_files(intr, straight, ["adapter_model.safetensors", "checkpoint-6/optimizer.bin"])
    # an exception in the callback stops the run the same way and comes back to the caller
    with pytest.raises(ZeroDivisionError):
        gn.finetune(tiny["base"], tiny["data"], tmp_path / "exc", max_steps=6, callback=lambda s: 1 / 0, **kw)
    assert (tmp_path / "exc" / "checkpoint-1" / "adapter_model.safetensors").exists()


# ----------------------------------------------------------------------------
# tools


def test_quantize_merge_and_elo_equal_cli(gn, tiny, tmp_path):
    run_guanaco("quantize", "-m", tiny["base"], "-o", tmp_path / "q_cli")
    assert gn.quantize(tiny["base"], tmp_path / "q_pkg") == str(tmp_path / "q_pkg")
    same_files(tmp_path / "q_pkg", tmp_path / "q_cli", ["model.safetensors", "config.json"])
    ad = tmp_path / "ad"
    gn.finetune(tiny["base"], tiny["data"], ad, max_steps=1, **PKG_FT)
    run_guanaco("merge", "-m", tiny["base"], "-a", ad, "-o", tmp_path / "m_cli", "--dtype", "bf16")
    gn.merge(tiny["base"], ad, tmp_path / "m_pkg", dtype="bfloat16")
    same_files(tmp_path / "m_pkg", tmp_path / "m_cli", ["model.safetensors", "config.json"])
    rng = random.Random(0)
    names = ["guanaco-7b", "vicuna-13b", "gpt-4"]
    lines = []
    for _ in range(60):
        a, b = rng.sample(names, 2)
        lines.append(json.dumps({"model1": a, "model2": b, "score": rng.choice([1, 2, 3])}))
    j = tmp_path / "judgments.jsonl"
    j.write_text("\n".join(lines) + "\n")
    run_guanaco("eval", "elo", j, "--rounds", "300", "--seed", "3", "--json", tmp_path / "elo.json")
    cli = {s["name"]: s for s in json.loads((tmp_path / "elo.json").read_text())["benchmarks"][0]["systems"]}
    ours = gn.eval_elo(j, rounds=300, seed=3)
    assert ours["matches"] == 60 and [s["rank"] for s in ours["systems"]] == sorted(s["rank"] for s in ours["systems"])
    for s in ours["systems"]:
        c = cli[s["name"]]
        assert (s["rank"], s["wins"], s["losses"], s["ties"]) == (c["rank"], c["wins"], c["losses"], c["ties"])
        assert s["elo"] == pytest.approx(c["elo"], rel=1e-12) and s["ci95_mean"] == pytest.approx(c["ci95_mean"], rel=1e-12)


# ----------------------------------------------------------------------------
# errors


def test_errors_carry_the_library_message_and_never_crash(gn, tiny, tmp_path):
    E, A = gn.GuanacoError, gn.GuanacoArgumentError
    missing = tmp_path / "nope.gguf"
    with pytest.raises(E) as e:
        gn.Model(missing)
    cli = run_guanaco("info", "-m", missing, check=False).stderr.strip().splitlines()[-1]
    assert cli == "guanaco: " + str(e.value) and str(missing) in str(e.value)
    assert e.value.status == gn._lib.B.GN_ERR_IO
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF" + bytes(range(256)) * 3)
    with pytest.raises(E, match=re.escape(str(junk))):
        gn.Model(junk)
    trunc = tmp_path / "trunc.gguf"
    trunc.write_bytes(STORIES.read_bytes()[:5000])
    with pytest.raises(E, match=re.escape(str(trunc))):
        gn.Model(trunc)
    for bad in (123, None, b"x\0y", ["a"]):
        with pytest.raises(A):
            gn.Model(bad)
    with pytest.raises(TypeError):
        gn.Model(3.5)
    with pytest.raises(A):
        gn.Model(STORIES, load_in_4bit=True, bnb_4bit_quant_type="int3")
    with pytest.raises(E, match="cuda|CUDA"):
        gn.Model(STORIES, device="tpu")
    with pytest.raises(E):
        gn.Model(STORIES, adapter=tmp_path / "no-adapter")
    m = gn.Model(STORIES)
    for bad in ("Once", [1, 2.5], [[1, 2]], [-1], [512], [], {"a": 1}, None):
        with pytest.raises(A):
            m.logits(bad)
    with pytest.raises(A):
        m.generate("x", temperature="hot")
    with pytest.raises(A):
        m.generate("x", max_new_tokens=-1)
    with pytest.raises(A):
        m.generate("x", stop=[1])
    with pytest.raises(A):
        m.chat("hello")
    with pytest.raises(A):
        m.chat([{"role": "wizard", "content": "hi"}])
    with pytest.raises(E, match="template"):
        m.chat([{"role": "user", "content": "hi"}], template="nonsense")
    with pytest.raises(A):
        m.tokenize(42)
    n_ctx = gn.Model(STORIES, n_ctx=4)
    with pytest.raises(E):
        n_ctx.logits([1, 2, 3, 4, 5, 6])
    m.close()
    with pytest.raises(E, match="closed"):
        m.logits([1])
    # finetune: bad data, bad hyperparameters, bad preset
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n" + json.dumps({"text": ""}) + "\n")
    with pytest.raises(E) as e:
        gn.finetune(tiny["base"], bad, tmp_path / "r", max_steps=1, **PKG_FT)
    cli = run_guanaco("finetune", "-m", tiny["base"], "-d", bad, "-o", tmp_path / "r2", "--max-steps", "1", *CLI_FT,
                      check=False).stderr.strip().splitlines()[-1]
    assert str(bad) in str(e.value) and cli == "guanaco: " + str(e.value)
    with pytest.raises(A, match="lora_rank"):
        gn.finetune(tiny["base"], tiny["data"], tmp_path / "r", lora_rank=8)
    with pytest.raises(A):
        gn.finetune(tiny["base"], tiny["data"], tmp_path / "r", learning_rate="fast")
    with pytest.raises(A):
        gn.finetune(tiny["base"], tiny["data"], tmp_path / "r", lora_modules=["attn"])
    with pytest.raises(E, match="preset"):
        gn.finetune(tiny["base"], tiny["data"], tmp_path / "r", preset="guanaco-1b")
    with pytest.raises(E):
        gn.finetune(tmp_path / "no-model", tiny["data"], tmp_path / "r")
    with pytest.raises(E):
        gn.eval_elo(tmp_path / "no-judgments")
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(E, match="no usable judgments"):
        gn.eval_elo(tmp_path / "empty.jsonl")
    with pytest.raises(A):
        gn.merge(STORIES, None, tmp_path / "o", dtype="int2")


# ----------------------------------------------------------------------------
# packaging and the README


def test_wheel_builds_and_imports_outside_the_tree(gn, tmp_path):
    """The PEP 517 backend's wheel: the library and generated declarations inside; imported
    from a folder it is installed into, it runs without the source tree's files."""
    spec = importlib.util.spec_from_file_location("gn_backend", PY / "_build" / "backend.py")
    backend = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(backend)
    whl = tmp_path / backend.build_wheel(str(tmp_path))
    import zipfile
    names = zipfile.ZipFile(whl).namelist()
    for n in ("guanaco/__init__.py", "guanaco/_bindings.py", "guanaco/libguanaco.so.0", "guanaco-0.1.0.dist-info/RECORD"):
        assert n in names, names
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(target), str(whl)],
                   check=True)
    code = ("import guanaco, sys; m = guanaco.Model(sys.argv[1]); "
            "print(guanaco.__file__, guanaco.library_path, guanaco._lib.B.__name__); "
            "print(m.generate('Once upon a time', max_new_tokens=8, temperature=0))")
    env = dict(os.environ, PYTHONPATH=str(target))
    env.pop("GUANACO_LIB", None)
    p = subprocess.run([sys.executable, "-c", code, str(STORIES)], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    where, so, bindings = p.stdout.splitlines()[0].split()
    assert where.startswith(str(target)) and so.startswith(str(target)) and bindings == "guanaco._bindings"
    assert p.stdout.splitlines()[1] == ", there was a little girl"
    # outside a source tree the backend takes an installed libguanaco from pkg-config
    src = tmp_path / "pysrc"
    shutil.copytree(PY, src, ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "pc").mkdir()
    (tmp_path / "pc" / "guanaco.pc").write_text(
        "libdir=%s\nincludedir=%s\nName: guanaco\nDescription: test\nVersion: 0.1.0\nLibs: -L${libdir} -lguanaco\n"
        "Cflags: -I${includedir}\n" % (ROOT / "build", ROOT / "include"))
    env = dict(os.environ, PKG_CONFIG_PATH=str(tmp_path / "pc"))
    code = ("import importlib.util as u, sys; s = u.spec_from_file_location('b', sys.argv[1]); b = u.module_from_spec(s); "
            "s.loader.exec_module(b); print(b.build_wheel(sys.argv[2]))")
    (tmp_path / "w2").mkdir()
    p = subprocess.run([sys.executable, "-c", code, str(src / "_build" / "backend.py"), str(tmp_path / "w2")],
                       capture_output=True, text=True, env=env)
    assert p.returncode == 0 and "from pkg-config" in p.stderr, p.stderr
    w2 = zipfile.ZipFile(tmp_path / "w2" / p.stdout.strip())
    assert w2.read("guanaco/libguanaco.so.0") == (ROOT / "build" / "libguanaco.so").read_bytes()
    assert w2.read("guanaco/_bindings.py") == zipfile.ZipFile(whl).read("guanaco/_bindings.py")


def test_readme_example_runs(gn, smollm2_gguf, tmp_path):
    readme = (PY / "README.md").read_text()
    code = "\n".join(re.findall(r"```python\n(.*?)```", readme, flags=re.S))
    assert "guanaco.finetune" in code and "load_in_4bit=True" in code
    env = dict(os.environ, PYTHONPATH=str(PY), SMOLLM2_GGUF=str(smollm2_gguf))
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    out = p.stdout
    losses = [float(x) for x in re.findall(r"loss (\d+\.\d+)", out)]
    assert len(losses) == 10 and np.mean(losses[-3:]) < np.mean(losses[:3]), out
    assert "before:" in out and "after:" in out and "adapter_model.safetensors" in out
    assert (tmp_path / "demo-run" / "checkpoint-10" / "adapter_model.safetensors").exists()
