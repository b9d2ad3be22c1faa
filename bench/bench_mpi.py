#!/usr/bin/env python3
"""bench_mpi.py — data-parallel finetune: training tokens/s with 1 and 2 MPI ranks on this machine.

    make MPI=1 BUILD=build-mpi -j2 cli                                  # build-mpi/guanaco
    ~/.cache/guanaco/venv/bin/python bench/bench_mpi.py --wait-quiet 600
    ~/.cache/guanaco/venv/bin/python bench/bench_mpi.py --guanaco /tmp/mpi-build-mpi/guanaco --steps 3

Same run three ways, same global batch (batch 1 x --grad-accum sequences a step), same
sequences, so the same adapter (tests/test_mpi.py checks that):
  1 rank x 1 thread     guanaco finetune ... -t 1               (the unit of work)
  1 rank x N threads    guanaco finetune ... -t N               (N = cores: OpenMP over the machine)
  N ranks x 1 thread    mpirun -np N ... OMP_NUM_THREADS=1       (MPI over the machine, loopback TCP)
Each rank holds its own copy of the base; per step the ranks all-reduce every LoRA gradient
(the "all-reduce MB/step" column: 4 bytes x LoRA parameters).

Setup: SmolLM2-135M from the GGUF, linear layers NF4 + double quant (--4bit, bf16 compute),
LoRA r 64 alpha 16 on q,k,v,o,gate,up,down, AdamW, clip 0.3, --no-shuffle, rows of
openassistant_best_replies_eval.jsonl that fill --target-max-len target tokens (equal-length
sequences, so the ranks' shares are equal).

Figure: tokens/s over the steps after the first (step 1 warms up), from the wall clock between
the "step k/S" lines rank 0 prints. CPU time that other processes took during each run is
printed ("others"); --wait-quiet S waits for a quiet machine first and retries a disturbed run
(3 tries at most; the table shows the least disturbed).
OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE are removed from the runs' environment (as bench_train.py).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchenv import DEFAULT_DATA, DEFAULT_MODEL, OPENBLAS_VARS, ROOT, open_text  # noqa: E402  (re-executes without them)
from bench_inference import cpu_snapshot, foreign_load, machine, wait_quiet  # noqa: E402

SOURCE_MAX = 16
MPI_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
MPI_FLAGS = ["--oversubscribe", "--bind-to", "none", "--mca", "btl", "self,tcp", "--mca", "btl_tcp_if_include", "lo",
             "--mca", "oob_tcp_if_include", "lo"]


def prepare_data(a):
    """Rows whose target fills --target-max-len, in file order; returns (file, ids per sequence)."""
    dump = [a.guanaco, "data-dump", "-m", a.model, "--dataset-format", "oasst1",
            "--source-max-len", str(SOURCE_MAX), "--target-max-len", str(a.target_max_len)]
    out = subprocess.run(dump + ["-d", a.data], capture_output=True, text=True, check=True).stdout
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    full = [r for r in rows if sum(x != -100 for x in r["labels"]) >= a.target_max_len]
    need = a.grad_accum * a.steps
    if len(full) < need:
        sys.exit(f"{a.data}: only {len(full)} rows fill {a.target_max_len} target tokens, need {need}")
    with open_text(a.data) as fh:
        lines = fh.read().splitlines()
    data = os.path.join(a.work, "data.jsonl")
    with open(data, "w") as fh:
        for r in full[:need]:
            fh.write(lines[r["line"] - 1] + "\n")
    out = subprocess.run(dump + ["-d", data], capture_output=True, text=True, check=True).stdout
    sel = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    n = len(sel[0]["ids"])
    assert len(sel) == need and all(len(r["ids"]) == n for r in sel), "uneven rows"
    return data, n


def one_run(a, data, ranks, threads, label):
    run = os.path.join(a.work, f"run-{ranks}x{threads}")
    shutil.rmtree(run, ignore_errors=True)
    ft = [a.guanaco, "finetune", "-m", a.model, "--4bit", "-d", data, "-o", run, "--max-steps", str(a.steps),
          "--gradient-accumulation-steps", str(a.grad_accum), "--per-device-batch-size", "1", "--lora-r", "64",
          "--lora-alpha", "16", "--source-max-len", str(SOURCE_MAX), "--target-max-len", str(a.target_max_len),
          "--dataset-format", "oasst1", "--save-steps", "0", "--no-shuffle", "--no-group-by-length", "-t", str(threads)]
    env = {k: v for k, v in os.environ.items() if k not in OPENBLAS_VARS}
    env["OMP_NUM_THREADS"] = str(threads)
    cmd = ft
    if ranks > 1:
        env.update(MPI_ENV)
        cmd = ["mpirun", "-np", str(ranks), *MPI_FLAGS, "-x", "OMP_NUM_THREADS", *ft]
    print(f"{label}: $ {' '.join(cmd)}", flush=True)
    stamps, lines, nparams = {}, [], None
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    for line in p.stdout:
        t = time.monotonic()
        line = line.rstrip("\n")
        lines.append(line)
        if line.startswith("step "):
            stamps[int(line.split()[1].split("/")[0])] = t
            print("  | " + line, flush=True)
        if "LoRA parameters" in line:
            nparams = int(line.split(" LoRA parameters")[0].split(",")[-1])
    p.wait()
    if p.returncode != 0 or a.steps not in stamps:
        print(f"failed (exit {p.returncode}):\n" + "\n".join(lines[-20:]))
        return None
    return {"stamps": stamps, "nparams": nparams}


def measured(a, data, ranks, threads, label):
    """One run; with --wait-quiet, up to 3 tries, keeping the least disturbed."""
    best = None
    for _ in range(3):
        if a.wait_quiet > 0:
            wait_quiet(a.wait_quiet)
        s0 = cpu_snapshot()
        res = one_run(a, data, ranks, threads, label)
        fl = foreign_load(s0, cpu_snapshot())
        if res is None:
            return best
        res["noise"] = fl
        if best is None or fl["other_cores"] + fl["steal_cores"] < best["noise"]["other_cores"] + best["noise"]["steal_cores"]:
            best = res
        if a.wait_quiet <= 0 or fl["other_cores"] + fl["steal_cores"] < 0.2:
            break
        print(f"  retrying: others took {fl['other_cores']:.2f} cores", flush=True)
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--guanaco", default=os.path.join(ROOT, "build-mpi", "guanaco"), help="a `make MPI=1` build")
    ap.add_argument("-m", "--model", default=DEFAULT_MODEL)
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--work", default=os.path.join(ROOT, "bench", "out", "mpi"))
    ap.add_argument("--ranks", type=int, default=os.cpu_count() or 2, help="N (default: the cores)")
    ap.add_argument("--grad-accum", type=int, default=8, help="sequences per step (the global batch)")
    ap.add_argument("--target-max-len", type=int, default=128)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--wait-quiet", type=float, default=0, metavar="S")
    a = ap.parse_args()
    if not os.path.exists(a.guanaco):
        sys.exit(f"{a.guanaco}: not built (make MPI=1 BUILD=build-mpi cli)")
    if not shutil.which("mpirun"):
        sys.exit("mpirun not found (apt-get install openmpi-bin libopenmpi-dev)")
    os.makedirs(a.work, exist_ok=True)
    data, n = prepare_data(a)
    m = machine()
    print(f"machine: {m['cpu']}, {m['cores']} cores; {a.grad_accum} sequences of {n} ids a step, {a.steps} steps", flush=True)
    N = a.ranks
    configs = [(1, 1, "1 rank x 1 thread"), (1, N, f"1 rank x {N} threads"), (N, 1, f"{N} ranks x 1 thread")]
    rows = []
    for ranks, threads, label in configs:
        res = measured(a, data, ranks, threads, label)
        if res is None:
            rows.append((label, None, None, None))
            continue
        st = res["stamps"]
        k0 = 1 if a.steps > 1 else min(st)
        tps = a.grad_accum * n * (a.steps - k0) / (st[a.steps] - st[k0]) if a.steps > 1 else float("nan")
        mb = res["nparams"] * 4 / 1e6 if (res["nparams"] and ranks > 1) else 0.0
        rows.append((label, tps, mb, res["noise"]["other_cores"]))
    base = rows[0][1]
    print()
    print("| run | train tok/s (steps 2..S) | vs 1 rank x 1 thread | all-reduce MB/step | others (cores) |")
    print("|---|---|---|---|---|")
    for label, tps, mb, other in rows:
        if tps is None:
            print(f"| {label} | failed | | | |")
            continue
        print(f"| {label} | {tps:.1f} | {tps / base:.2f}x | {mb:.1f} | {other:.2f} |")


if __name__ == "__main__":
    main()
