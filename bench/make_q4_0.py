#!/usr/bin/env python3
"""make_q4_0.py — a llama.cpp Q4_0 GGUF of a model, made by llama.cpp's own quantizer.

    ~/.cache/guanaco/venv/bin/python bench/make_q4_0.py             # SmolLM2 -> /tmp/smol-q4_0.gguf
    ~/.cache/guanaco/venv/bin/python bench/make_q4_0.py -m MODEL.gguf -o OUT.gguf

Two steps, so that llama.cpp quantizes from full precision rather than from another
quantized format:
  1. `guanaco merge -m MODEL -o F32.gguf --format gguf --dtype f32` (no adapter: a plain
     f32 re-export of the same weights; for a Q4_1 source these are its dequantized values);
  2. llama_cpp.llama_model_quantize(F32.gguf, OUT.gguf, params) with
     params = llama_model_quantize_default_params(), ftype = LLAMA_FTYPE_MOSTLY_Q4_0
     (llama.cpp's defaults: the tied token_embd / output tensor gets its own type, see the
     tensor types printed at the end).
The peer file for `bench_inference.py --peer-model OUT.gguf`.

OpenBLAS: `guanaco merge` loads OpenBLAS, so OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are
removed from its environment (and from ours: the script re-executes itself without them).
"""
import argparse
import collections
import ctypes
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchenv import CACHE, DEFAULT_MODEL, ROOT  # noqa: E402,F401  (re-executes without OpenBLAS overrides)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-m", "--model", default=DEFAULT_MODEL)
    ap.add_argument("-o", "--out", default="/tmp/smol-q4_0.gguf")
    ap.add_argument("--f32", default="/tmp/smol-f32.gguf", help="intermediate f32 GGUF")
    ap.add_argument("--guanaco", default=os.path.join(ROOT, "build", "guanaco"))
    ap.add_argument("-t", "--threads", type=int, default=os.cpu_count())
    a = ap.parse_args()
    if os.environ.get("GN_BENCH_OPENBLAS_UNSET") == "1":
        print("env: OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset for this run (were set)")

    cmd = [a.guanaco, "merge", "-m", a.model, "-o", a.f32, "--format", "gguf", "--dtype", "f32",
           "-t", str(a.threads)]
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)

    import llama_cpp

    p = llama_cpp.llama_model_quantize_default_params()
    p.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0
    p.nthread = a.threads
    print(f"$ llama_cpp.llama_model_quantize({a.f32!r}, {a.out!r}, ftype=LLAMA_FTYPE_MOSTLY_Q4_0) "
          f"[llama-cpp-python {llama_cpp.__version__}]", flush=True)
    t0 = time.perf_counter()
    rc = llama_cpp.llama_model_quantize(a.f32.encode(), a.out.encode(), ctypes.byref(p))
    if rc != 0:
        sys.exit(f"llama_model_quantize failed: {rc}")
    print(f"quantized in {time.perf_counter() - t0:.1f} s")

    from gguf import GGUFReader

    r = GGUFReader(a.out)
    types = collections.Counter(t.tensor_type.name for t in r.tensors)
    emb = [t.tensor_type.name for t in r.tensors if t.name in ("token_embd.weight", "output.weight")]
    size = sum(int(t.n_bytes) for t in r.tensors)
    print(f"wrote {a.out}: {os.path.getsize(a.out) / 1e6:.1f} MB, tensors "
          + ", ".join(f"{k}: {v}" for k, v in sorted(types.items()))
          + f"; token_embd/output {'/'.join(emb)}; {size / 1e6:.1f} MB of tensor data")


if __name__ == "__main__":
    main()
