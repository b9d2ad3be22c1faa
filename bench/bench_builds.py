#!/usr/bin/env python3
"""bench_builds.py — two builds of guanaco side by side on one machine, in one run.

A refactoring must not cost speed: this runs the same rows with an older build ("before")
and the working tree's build ("after"), repetitions interleaved (before, after, before, ...)
so that drift of a shared machine hits both, and prints each row's medians, the ratio and
the noise it measured (the largest spread between repetitions of one build, as a share of
their median). A ratio outside 1 +- noise is a real difference.

    git worktree add /tmp/before <commit> && make -C /tmp/before -j2 all
    ~/.cache/guanaco/venv/bin/python bench/bench_builds.py --before /tmp/before/build

Rows (SmolLM2-135M-Instruct, 2 threads): prefill and decode with f32 weights, with --4bit
(NF4 + double quant, bf16 compute), with --4bit and an unmerged r 64 adapter (when the bench
cache holds one: bench/make_lora_adapter.py), and QLoRA training tokens/s (`guanaco finetune
--4bit`, r 64, 2 sequences a step; the first step a warm-up). --after-env sets variables
for the after build only (e.g. GN_NF4_EXACT_DECODE=1 to compare the same kernels).

--sizes 1.1b,7b adds the rows of make bench's random LLaMA shapes (bench cache, made by
bench/bench_all.py): prefill and decode of the pre-quantized NF4 folder, the `--4bit` load of
the f16 folder (seconds: lower is better), and for the sizes named in --sized-train a QLoRA step
on the NF4 folder (the demo data, r 64, 2 sequences a step).
"""
import time
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.path.join(os.path.expanduser("~"), ".cache", "guanaco")
MODEL = os.path.join(CACHE, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
ADAPTER = os.path.join(CACHE, "bench", "SmolLM2-135M-Instruct.Q4_1-lora-r64-bf16")


def env_for(extra):
    env = dict(os.environ)
    for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):  # they select slower OpenBLAS kernels
        env.pop(k, None)
    for kv in extra:
        k, _, v = kv.partition("=")
        env[k] = v
    return env


def gen_row(build, flags, a, env, model=None, prompt=None, gen=None):
    cmd = [os.path.join(build, "bench", "bench_generate"), "-m", model or a.model, "-t", str(a.threads), "--reps", "1",
           "--prompt-tokens", str(prompt or a.prompt_tokens), "--gen-tokens", str(gen or a.gen_tokens), "--json"] + flags
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
    d = json.loads([line for line in out.splitlines() if line.startswith("{")][-1])
    return {"prefill tok/s": d["prefill_tps"], "decode tok/s": d["decode_tps"]}


def load_row(build, model, a, env):
    cmd = [os.path.join(build, "bench", "bench_generate"), "-m", model, "--4bit", "-t", str(a.threads), "--reps", "1",
           "--prompt-tokens", "1", "--gen-tokens", "1", "--json"]
    t0 = time.monotonic()
    subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return {"--4bit load s": time.monotonic() - t0}


def train_row(build, a, env, model=None, flags=("--4bit",), steps=None):
    work = tempfile.mkdtemp(prefix="gn-bb-")
    try:
        cmd = [os.path.join(build, "guanaco"), "finetune", "-m", model or a.model, *flags, "-d",
               os.path.join(ROOT, "data", "guanaco-demo.jsonl"), "-o", os.path.join(work, "run"), "-t",
               str(a.threads), "--max-steps", str(steps or a.train_steps), "--gradient-accumulation-steps", "2",
               "--lora-r", "64", "--lora-alpha", "16", "--save-steps", "1000"]
        subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
        with open(os.path.join(work, "run", "log.jsonl")) as fh:
            log = [json.loads(line) for line in fh if '"tokens_per_s"' in line]
        return {"train tok/s": log[-1]["tokens_per_s"]}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", required=True, help="build folder of the older build (holds guanaco, bench/)")
    ap.add_argument("--after", default=os.path.join(ROOT, "build"))
    ap.add_argument("--after-env", action="append", default=[], metavar="K=V")
    ap.add_argument("-m", "--model", default=MODEL)
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--gen-tokens", type=int, default=64)
    ap.add_argument("--train-steps", type=int, default=3)
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--skip-smol", action="store_true", help="only the --sizes rows")
    ap.add_argument("--sizes", default="", help="comma-separated: 1.1b, 7b (bench cache)")
    ap.add_argument("--sized-prompt-tokens", type=int, default=128)
    ap.add_argument("--sized-gen-tokens", type=int, default=16)
    ap.add_argument("--sized-train", default="", help="comma-separated sizes that also get the QLoRA step row")
    a = ap.parse_args()
    sized = []
    for s in filter(None, a.sizes.split(",")):
        base = os.path.join(CACHE, "bench", f"llama-{s}")
        if not os.path.isdir(base + "-nf4"):
            sys.exit(f"bench_builds: {base}-nf4 missing (bench/bench_all.py --sizes {s} makes it)")
        sized.append((s, base + "-nf4", base + "-f16"))
    for b in (a.before, a.after):
        for f in ("guanaco", os.path.join("bench", "bench_generate")):
            if not os.path.exists(os.path.join(b, f)):
                sys.exit(f"bench_builds: {os.path.join(b, f)} missing (make -C <tree> all)")
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    print(f"CPU: {cpu}, {os.cpu_count()} cores; threads {a.threads}; OPENBLAS_CORETYPE/L2_SIZE unset")
    print(f"before: {a.before}\nafter:  {a.after} {' '.join(a.after_env)}")
    sections = [("f32", []), ("4bit", ["--4bit"])]
    if os.path.isdir(ADAPTER):
        sections.append(("4bit+lora r64", ["--4bit", "-a", ADAPTER]))
    res = {}  # (row, build) -> [values]
    for rep in range(a.reps):
        for name, build, extra in (("before", a.before, []), ("after", a.after, a.after_env)):
            env = env_for(extra)
            for sec, flags in ([] if a.skip_smol else sections):
                for k, v in gen_row(build, flags, a, env).items():
                    res.setdefault((f"{sec} {k}", name), []).append(v)
            if not a.skip_train and not a.skip_smol:
                for k, v in train_row(build, a, env).items():
                    res.setdefault((f"4bit {k}", name), []).append(v)
            for s, nf4, f16 in sized:
                # --4bit: keep the folder's 4-bit weights (without it they are widened to the compute dtype)
                for k, v in gen_row(build, ["--4bit"], a, env, nf4, a.sized_prompt_tokens, a.sized_gen_tokens).items():
                    res.setdefault((f"{s} nf4 {k}", name), []).append(v)
                if os.path.isdir(f16):
                    for k, v in load_row(build, f16, a, env).items():
                        res.setdefault((f"{s} {k}", name), []).append(v)
                if s in a.sized_train.split(","):
                    for k, v in train_row(build, a, env, nf4, ("--4bit",), 2).items():
                        res.setdefault((f"{s} nf4 {k}", name), []).append(v)
            print(f"  rep {rep + 1}/{a.reps} {name} done", flush=True)
    rows = sorted({r for r, _ in res}, key=lambda r: list(dict.fromkeys(r for r, _ in res)).index(r))
    print(f"\n{'row':32s} {'before':>10s} {'after':>10s} {'ratio':>7s} {'noise':>7s}  verdict")
    for r in rows:
        b, f = res[(r, "before")], res[(r, "after")]
        mb, mf = statistics.median(b), statistics.median(f)
        noise = max((max(v) - min(v)) / statistics.median(v) for v in (b, f))
        ratio = mf / mb
        better = ratio < 1 if r.endswith(" s") else ratio > 1  # seconds: lower is better
        verdict = "same within noise" if abs(ratio - 1) <= noise else ("faster" if better else "SLOWER")
        print(f"{r:32s} {mb:10.1f} {mf:10.1f} {ratio:7.3f} {noise:7.1%}  {verdict}")


if __name__ == "__main__":
    main()
