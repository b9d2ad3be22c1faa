#!/usr/bin/env python3
"""bench_load.py — `--4bit` quantization at load: guanaco vs bitsandbytes' CPU quantize_4bit, same weights.

    ~/.cache/guanaco/venv/bin/python bench/bench_load.py -m ~/.cache/guanaco/bench/llama-7b-f16 -t 2

  ours: `guanaco info -m HF_F16_FOLDER --4bit -v -t T`: the "loaded ... in S s" line (reading the
        safetensors, NF4 + double quantization of every linear weight at block 64, the rest
        converted to its compute dtype), plus the process's CPU time and peak RSS.
  peer: a worker process, torch threads = T, reads each linear weight of the same files
        (safetensors safe_open, f16 tensors, the dtype transformers hands to Params4bit with an
        f16 folder) and calls bitsandbytes.functional.quantize_4bit(w, blocksize=64,
        compress_statistics=True, quant_type="nf4") on it: the quantize calls alone are timed,
        and the whole pass (reading included) separately.

Before both, the shards are read once (page cache), so neither side pays the disk alone; with
less free memory than the folder, both read part of it from disk (printed).
Prints a table: ours (load, the whole) vs the peer's quantize calls and the peer's whole pass;
ratio = peer seconds / ours (above 1: ours is faster). Writes --out/bench_load.json.
"""
import argparse
import json
import os
import re
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchenv import ROOT, openblas_note  # noqa: E402  (re-executes without OpenBLAS overrides)

MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def shards(hf):
    return sorted(os.path.join(hf, f) for f in os.listdir(hf) if f.endswith(".safetensors"))


def peer_worker(a):
    import torch
    import bitsandbytes
    import bitsandbytes.functional as F
    from safetensors import safe_open

    torch.set_num_threads(a.threads)
    tq = tall = 0.0
    n = params = 0
    t0 = time.perf_counter()
    for path in shards(a.model):
        with safe_open(path, framework="pt") as f:
            for name in f.keys():
                if not any(f".{m}." in name for m in MODULES):
                    continue
                if a.peer_layers and int(name.split(".")[2]) >= a.peer_layers:
                    continue
                w = f.get_tensor(name)
                t = time.perf_counter()
                q, st = F.quantize_4bit(w, blocksize=64, compress_statistics=True, quant_type="nf4")
                tq += time.perf_counter() - t
                n += 1
                params += w.numel()
                del q, st, w
    tall = time.perf_counter() - t0
    print(json.dumps({"quantize_s": tq, "whole_s": tall, "tensors": n, "params": params,
                      "torch_threads": torch.get_num_threads(), "dtype": "float16",
                      "versions": {"torch": torch.__version__, "bitsandbytes": bitsandbytes.__version__},
                      "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def run(cmd, env=None):
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    out = p.stdout.read()
    _, status, ru = os.wait4(p.pid, 0)
    return os.waitstatus_to_exitcode(status), out, ru


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--peer-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("-m", "--model", required=True, help="f16 HF folder (bench/make_sized_models.py)")
    ap.add_argument("-t", "--threads", type=int, default=os.cpu_count())
    ap.add_argument("--guanaco", default=os.path.join(ROOT, "build", "guanaco"))
    ap.add_argument("--skip-peer", action="store_true")
    ap.add_argument("--peer-layers", type=int, default=0, metavar="N",
                    help="the peer quantizes only the linear weights of the first N layers; its "
                         "seconds are scaled to all layers by parameter count (printed as such)")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "out"))
    a = ap.parse_args()
    if a.peer_worker:
        return peer_worker(a)
    print(f"env: {openblas_note()}")
    size = sum(os.path.getsize(p) for p in shards(a.model))
    with open("/proc/meminfo") as fh:
        avail = int(next(x for x in fh if x.startswith("MemAvailable")).split()[1]) * 1024
    t = time.monotonic()
    for p in shards(a.model):  # warm the page cache for both sides
        with open(p, "rb") as fh:
            while fh.read(64 << 20):
                pass
    print(f"model: {a.model}: {size / 1e9:.2f} GB of safetensors, read once in {time.monotonic() - t:.0f} s "
          f"(available memory {avail / 1e9:.1f} GB" + (": part of it comes from disk each time)" if avail < size * 1.1 else ")"),
          flush=True)

    cmd = [a.guanaco, "info", "-m", a.model, "--4bit", "-v", "-t", str(a.threads)]
    print("$ " + " ".join(cmd), flush=True)
    t = time.monotonic()
    rc, out, ru = run(cmd)
    wall = time.monotonic() - t
    m = re.search(r"loaded .* in ([0-9.]+) s \((\S+) kernels", out)
    if rc != 0 or not m:
        sys.exit("guanaco info failed:\n" + out[-2000:])
    ours = {"load_s": float(m.group(1)), "process_s": wall, "cpu_s": ru.ru_utime + ru.ru_stime,
            "rss_mb": ru.ru_maxrss / 1024, "simd": m.group(2)}
    print(f"guanaco: --4bit load {ours['load_s']:.1f} s ({ours['cpu_s']:.1f} s CPU, peak RSS {ours['rss_mb']:.0f} MB, "
          f"{ours['simd']} kernels)", flush=True)
    peer = None
    if not a.skip_peer:
        cmd = [sys.executable, os.path.abspath(__file__), "--peer-worker", "-m", a.model, "-t", str(a.threads),
               "--peer-layers", str(a.peer_layers)]
        env = dict(os.environ, OMP_NUM_THREADS=str(a.threads))
        print("$ " + " ".join(cmd), flush=True)
        rc, out, ru = run(cmd, env)
        line = next((x for x in out.splitlines() if x.startswith("{")), None)
        if rc != 0 or not line:
            print("peer failed:\n" + out[-2000:])
        else:
            peer = json.loads(line)
            peer["cpu_s"] = ru.ru_utime + ru.ru_stime
            with open(os.path.join(a.model, "config.json")) as fh:
                cfg = json.load(fh)
            C, F, L = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
            kv = cfg.get("num_key_value_heads", cfg["num_attention_heads"]) * (C // cfg["num_attention_heads"])
            total = L * (2 * C * C + 2 * C * kv + 3 * C * F)
            peer["scaled_from"] = None
            if peer["params"] < total:  # --peer-layers: scale to all layers by parameter count
                f = total / peer["params"]
                peer["scaled_from"] = {"quantize_s": peer["quantize_s"], "whole_s": peer["whole_s"],
                                       "params": peer["params"], "factor": f}
                print(f"peer: measured on {peer['params'] / 1e9:.2f} B of the {total / 1e9:.2f} B linear "
                      f"parameters (--peer-layers {a.peer_layers}): seconds below scaled by {f:.2f}", flush=True)
                peer["quantize_s"] *= f
                peer["whole_s"] *= f
            print(f"bitsandbytes {peer['versions']['bitsandbytes']}: quantize_4bit on {peer['tensors']} tensors "
                  f"({peer['params'] / 1e9:.2f} B params): {peer['quantize_s']:.1f} s in the calls, "
                  f"{peer['whole_s']:.1f} s with reading, torch threads {peer['torch_threads']}", flush=True)
    print()
    print("| metric | guanaco | bitsandbytes | ratio (peer s / ours s) |")
    print("|---|---|---|---|")
    if peer:
        print(f"| 4-bit quantization at load, s | {ours['load_s']:.1f} (whole load) | {peer['quantize_s']:.1f} "
              f"(quantize_4bit calls only{', scaled' if peer['scaled_from'] else ''}) | {peer['quantize_s'] / ours['load_s']:.2f} |")
        print(f"| the same with reading the weights, s | {ours['load_s']:.1f} | {peer['whole_s']:.1f} | "
              f"{peer['whole_s'] / ours['load_s']:.2f} |")
    else:
        print(f"| 4-bit quantization at load, s | {ours['load_s']:.1f} | n/a | n/a |")
    os.makedirs(a.out, exist_ok=True)
    res = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "model": a.model, "threads": a.threads, "bytes": size,
           "guanaco": ours, "peer": peer, "env": openblas_note()}
    path = os.path.join(a.out, "bench_load.json")
    with open(path, "w") as fh:
        json.dump(res, fh, indent=1)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
