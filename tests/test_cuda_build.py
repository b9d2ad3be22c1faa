"""The CUDA backend as CI can check it: built, and tested where a GPU exists.

scripts/test.sh runs `make CUDA=1 BUILD=build-cuda all` when nvcc is found (CI has nvcc but no
GPU). Here:
  - with nvcc: build-cuda/guanaco and build-cuda/tests/test_cuda must exist; test_cuda runs, and
    without a device it prints "SKIP: no CUDA device ..." and the case is skipped with that line;
    with a device every kernel is checked against the CPU and the model runs on both devices;
  - with nvcc and a device: `guanaco generate --device cuda` on SmolLM2 gives the CPU's greedy tokens;
  - always: the default (CPU) build refuses --device cuda with "built without CUDA (make CUDA=1)".
GN_CUDA_BUILD overrides the build folder.
"""
import os
import pathlib
import shutil
import subprocess

import pytest

from conftest import GUANACO, ROOT, smollm2_gguf_path

CUDA_BUILD = pathlib.Path(os.environ.get("GN_CUDA_BUILD", ROOT / "build-cuda"))
HAVE_NVCC = shutil.which("nvcc") is not None or os.access("/usr/local/cuda/bin/nvcc", os.X_OK)
needs_nvcc = pytest.mark.skipif(not HAVE_NVCC, reason="nvcc not found: scripts/test.sh makes no CUDA build")


def _run(cmd, timeout=900):
    return subprocess.run([str(c) for c in cmd], cwd=ROOT, capture_output=True, text=True, errors="replace",
                          timeout=timeout)


def _skip_line(out):
    for line in out.splitlines():
        if line.startswith("SKIP"):
            return line
    return None


@needs_nvcc
def test_cuda_build_exists():
    for p in (CUDA_BUILD / "guanaco", CUDA_BUILD / "tests" / "test_cuda", CUDA_BUILD / "bench" / "cuda_bench"):
        assert p.exists(), f"{p} missing: scripts/test.sh builds it with `make CUDA=1 BUILD={CUDA_BUILD.name} all`"


@needs_nvcc
def test_cuda_kernels():
    binary = CUDA_BUILD / "tests" / "test_cuda"
    if not binary.exists():
        pytest.fail(f"{binary} missing (make CUDA=1 BUILD={CUDA_BUILD.name} all)")
    p = _run([binary])
    out = p.stdout + p.stderr
    skip = _skip_line(out)
    if p.returncode == 0 and skip:
        pytest.skip(f"{binary.name}: {skip}")
    fails = [l for l in out.splitlines() if l.startswith("FAIL")]
    assert p.returncode == 0 and not fails, f"test_cuda exited {p.returncode}\n" + "\n".join(fails[:30]) + \
        f"\n--- output tail:\n{out[-6000:]}"


@needs_nvcc
def test_dist_nccl():
    """build-cuda/tests/test_dist: with NCCL (make MPI=1 CUDA=1 NCCL=1) and a GPU, a one-rank NCCL
    all-reduce gives back its input exactly, sizes 0, 1, odd, growing and shrinking."""
    binary = CUDA_BUILD / "tests" / "test_dist"
    if not binary.exists():
        pytest.fail(f"{binary} missing")
    p = _run([binary])
    out = p.stdout + p.stderr
    assert p.returncode == 0 and "FAIL" not in out, out[-4000:]
    skip = _skip_line(out)
    if skip:
        pytest.skip(f"{binary.name}: {skip}")


@needs_nvcc
def test_generate_device_cuda_matches_cpu():
    model = smollm2_gguf_path()
    if not model.exists():
        pytest.skip(f"{model} not fetched (scripts/fetch_models.sh)")
    cli = CUDA_BUILD / "guanaco"
    if not cli.exists():
        pytest.fail(f"{cli} missing")
    args = ["generate", "-m", model, "-p", "The capital of France is", "-n", "12", "--temp", "0", "--print-ids"]
    g = _run([cli] + args + ["--device", "cuda"])
    if g.returncode != 0 and "no CUDA device" in g.stderr:
        pytest.skip("no CUDA device: " + g.stderr.strip().splitlines()[-1])
    assert g.returncode == 0, g.stderr[-3000:]
    c = _run([cli] + args)
    assert c.returncode == 0, c.stderr[-3000:]
    # f32 weights on both sides: greedy ids agree (the GPU's sums differ only in order)
    assert g.stdout.split()[:8] == c.stdout.split()[:8], f"cuda:\n{g.stdout}\ncpu:\n{c.stdout}"


def test_cpu_build_refuses_device_cuda():
    if not GUANACO.exists():
        pytest.skip(f"{GUANACO} not built")
    p = _run([GUANACO, "generate", "-m", "unused", "--device", "cuda", "-p", "x"])
    if "built without CUDA" not in p.stderr and "no such file" in p.stderr:
        pytest.skip(f"{GUANACO} is a CUDA build (it accepted --device cuda)")
    assert p.returncode != 0
    assert "built without CUDA (make CUDA=1)" in p.stderr, p.stderr
    p = _run([GUANACO, "generate", "-m", "unused", "--device", "tpu", "-p", "x"])
    assert p.returncode == 2 and "expected cpu or cuda" in p.stderr, p.stderr
