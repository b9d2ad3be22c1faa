#!/usr/bin/env python3
"""bench_all.py — the CPU speed table in one run (`make bench`).

    make bench                                        # = ~/.cache/guanaco/venv/bin/python bench/bench_all.py
    make bench BENCH_ARGS="--quick"                   # very short runs: checks that the driver works
    ~/.cache/guanaco/venv/bin/python bench/bench_all.py --wait-quiet 600 --skip-train

Runs the existing benchmark programs as subprocesses (SmolLM2-135M-Instruct, -t 2), each
writing its JSON under --out/bench_all/, and reads the figures from those JSON files:

  A  bench_inference.py --guanaco-args "--4bit" --peer-model Q4_0.gguf      (rows 1, 2)
     ours NF4 + double quant vs llama.cpp on a Q4_0 file made once by make_q4_0.py
     (cached in ~/.cache/guanaco/bench/)
  A2 the same with --guanaco-args "--4bit --4bit-head" --skip-llama          (row 1h, extra)
     lm_head in NF4 + double quant too (bnb's llm_int8_skip_modules=[]), against A's peer figure
  B  bench_inference.py --guanaco-args "--4bit -a LORA" --peer-guanaco-args "--4bit"   (row 4)
     an unmerged r 64 adapter on all seven modules, bf16 as qlora --bf16 saves it
     (make_lora_adapter.py --dtype bf16, cached) vs none
  C  bench_inference.py -t 1 --guanaco-args "--4bit" --skip-llama            (row 5a, 5c)
     ours with 1 thread; the 2-thread figures are A's
  D  bench_train.py --grad-accum 4 --steps 3 --reps 3 --also-threads 1   (rows 3, 3b, 5b)
     ours, the peer and ours with 1 thread in turn, three times: medians (the machine drifts
     by 10-20%), each over the two steps after the warm-up
     guanaco finetune vs PyTorch + PEFT + bitsandbytes, NF4, r 64, seq 512

and prints ONE markdown table (row | target | guanaco | peer | ratio | share of limit | met?),
with the CPU model, the date and the exact command; it also writes it to
--out/bench_all.md, --out/bench_all.json and, when matplotlib is importable, a bar chart
--out/bench_all.png. The sub-scripts' own output goes to --out/bench_all/*.log; their
progress lines are echoed (their own tables are not; --verbose echoes everything).

Flags: --quick (prompt 128, 8 decoded tokens, 1 rep, training 1 x 1 sequence, 1 step),
--skip-train (no D), --skip-peer (no llama.cpp, no PyTorch: ratios against them are n/a;
row 4's peer is ours and still runs), --wait-quiet S (passed to every sub-script),
--reps N (A and B, default 3), --scaling-reps N (C, default 2), --grad-accum / --steps
(D, default 4 / 3), -t (default 2), --sized-train-peer on|off|auto (the PyTorch peer in the 1.1B
training section as well; auto: on where the CPU has AVX512_BF16, where it took under 2 minutes
a run on 2 Zen 4 cores, off elsewhere: over 50 minutes a step on 2 Zen 3 cores), --emulate NAME
(both engines and both peers held to another family's instruction set on this CPU: see EMULATIONS
and bench/README.md; output under --out/emulate-NAME), --verbose.

Benchmarks never fail on a number: the exit status is non-zero only when a sub-script
failed to run. Figures taken on a busy machine are noisy; each section's "others took up
to X cores" (from the sub-scripts' JSON) is printed under the table.
"""
import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchenv import CACHE, DEFAULT_MODEL, HERE, MARK, ROOT  # noqa: E402  (re-executes without OpenBLAS overrides)
PY = sys.executable

T0 = time.monotonic()
SECTIONS = []  # {"name", "cmd", "rc", "elapsed_s", "log"}
FAILED = []
TABLE_ONLY = False  # --table-only: run nothing, rebuild the table from the last run's JSON


def rel(p):
    return os.path.relpath(p, ROOT) if p.startswith(ROOT) else p


PREP_ECHO = ("$ ", "wrote ", "quantized", "env:", "warning", "error", "Error", "Traceback")


def run_section(name, cmd, log_path, verbose, prep=False):
    """Runs cmd (cwd ROOT), output to log_path; echoes progress lines (for prep steps only a
    few: llama.cpp's quantizer logs every tensor). Returns rc; on failure prints the log's tail."""
    if TABLE_ONLY:
        return 0
    print(f"\n== {name}\n$ {shlex.join(rel(c) for c in cmd)}", flush=True)
    t = time.monotonic()
    with open(log_path, "w") as log:
        p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in p.stdout:
            log.write(line)
            s = line.rstrip("\n")
            # The sub-scripts' own tables and their notes are left to the log: one table here.
            if verbose or (s.startswith(PREP_ECHO) if prep else
                           not (s.startswith("|") or s.startswith("(ratio"))):
                print("  " + s, flush=True)
        rc = p.wait()
    if rc != 0 and not verbose:
        with open(log_path) as log:
            tail = log.read().splitlines()[-20:]
        print("  last lines of the log:\n" + "\n".join("  > " + x for x in tail))
    dt = time.monotonic() - t
    SECTIONS.append({"name": name, "cmd": cmd, "rc": rc, "elapsed_s": round(dt, 1), "log": rel(log_path)})
    print(f"-- {name}: {'ok' if rc == 0 else f'FAILED (exit {rc})'} in {dt:.0f} s "
          f"(total so far {time.monotonic() - T0:.0f} s); log {rel(log_path)}", flush=True)
    if rc != 0:
        FAILED.append(name)
    return rc


def load_json(path):
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def fresh(path):
    """Removes a stale output file so that a failed run cannot be read as a result."""
    if TABLE_ONLY:
        return
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def cpu_has(flag):
    """whether /proc/cpuinfo lists flag for this CPU"""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return flag in line.split(":", 1)[1].split()
    except OSError:
        pass
    return False


# --emulate: another x86-64 family's paths on this CPU, for both engines and both peers.
# ours: the library's switch for that family's kernels; PyTorch: oneDNN's ISA cap (its bf16
# products then convert to float32, as on such a CPU); llama.cpp: a build of the peer compiled
# without the ISA extensions the family lacks (-mno-..., beside its -march=native), installed
# once into the bench cache and put first on PYTHONPATH. The host's cores stay what they are
# (e.g. Zen 4 runs 512-bit operations in two halves): figures from an emulation say how the two
# engines fare on the same instruction set, not what that family's cores would measure.
EMULATIONS = {
    "cascadelake": {
        "what": "Intel Cascade Lake class: AVX-512 F/BW/DQ/VL and VNNI, no AVX512_BF16, no AMX",
        "needs": ("avx512f", "avx512bw", "avx512vl", "avx512_vnni"),
        "env": {"GN_NF4_NO_BF16DOT": "1", "ONEDNN_MAX_CPU_ISA": "AVX512_CORE_VNNI"},
        "peer_cflags": ("-mno-avx512bf16 -mno-avxvnni -mno-avx512vbmi -mno-avx512vbmi2 -mno-avx512bitalg "
                        "-mno-avx512vpopcntdq -mno-avx512ifma -mno-gfni -mno-vpclmulqdq -mno-vaes -mno-amx-tile "
                        "-mno-amx-int8 -mno-amx-bf16"),
    },
}


def lcp_requirement():
    """the llama-cpp-python pin of the test requirements (the peer every bench script imports)"""
    with open(os.path.join(ROOT, "scripts", "requirements-test.txt")) as fh:
        for line in fh:
            if line.lower().startswith("llama-cpp-python=="):
                return line.strip()
    sys.exit("bench_all: scripts/requirements-test.txt names no llama-cpp-python==VERSION")


def emulation_peer(bench_dir, name, cflags, log_path):
    """The llama.cpp peer built with cflags into bench_dir/lcp-NAME (once: a stamp holds the
    requirement and the flags); returns that folder, for PYTHONPATH."""
    req = lcp_requirement()
    dest = os.path.join(bench_dir, f"lcp-{name}")
    stamp = f"{req} cflags={cflags}"
    try:
        with open(os.path.join(dest, ".guanaco-stamp")) as fh:
            if fh.read().strip() == stamp:
                return dest
    except OSError:
        pass
    if TABLE_ONLY:
        return dest
    tmp = dest + ".part"
    shutil.rmtree(tmp, ignore_errors=True)
    env = dict(os.environ, CMAKE_BUILD_PARALLEL_LEVEL=str(os.cpu_count()), MAKEFLAGS=f"-j{os.cpu_count()}",
               CMAKE_ARGS=f'-DLLAVA_BUILD=OFF -DCMAKE_C_FLAGS="{cflags}" -DCMAKE_CXX_FLAGS="{cflags}"')
    cmd = [PY, "-m", "pip", "install", "--no-deps", "--no-cache-dir", "--target", tmp, req]
    print(f"\n== building the {name} llama.cpp peer into {dest} (once; about 15 minutes on 2 cores)\n  $ "
          + shlex.join(cmd), flush=True)
    with open(log_path, "w") as log:
        rc = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        sys.exit(f"bench_all: building the {name} peer failed (exit {rc}); see {log_path}")
    with open(os.path.join(tmp, ".guanaco-stamp"), "w") as fh:
        fh.write(stamp + "\n")
    shutil.rmtree(dest, ignore_errors=True)
    os.rename(tmp, dest)
    return dest


def machine():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            k, _, v = line.partition(":")
            if k.strip() == "Model name":
                return v.strip()
    except OSError:
        pass
    return "?"


# ---------------------------------------------------------------------------
# formatting and targets


def fmt(x, spec=".1f"):
    return "n/a" if x is None else format(x, spec)


def pct(x, limit, unit="tok/s"):
    return "n/a" if x is None or not limit else f"{100 * x:.1f}% of {limit:.0f} {unit}"


def verdict(checks):
    """checks: [(label, value, op, bound)]; 'yes' when all hold, 'NO (...)' naming the misses,
    '?' when a value is missing."""
    miss, unknown = [], []
    for label, v, op, bound in checks:
        if v is None:
            unknown.append(label)
        elif not (v >= bound if op == ">=" else v <= bound):
            cmp = "<" if op == ">=" else ">"
            miss.append(f"{label} {100 * v:.1f}% {cmp} {100 * bound:g}%" if label == "share"
                        else f"{label} {v:.2f} {cmp} {bound:g}")
    if miss:
        return "NO (" + "; ".join(miss) + ")"
    if unknown:
        return "? (" + ", ".join(unknown) + " n/a)"
    return "yes"


def ratio(a, b):
    return a / b if a is not None and b else None


def bf16_share(a, share_f32):
    """A share of the f32 FMA peak restated against the bf16 products' peaks the probe measured
    (the prefill and training products run in bf16): '; x% of the bf16 dot peak ...'."""
    if share_f32 is None:
        return ""
    fl = share_f32 * a.peak_gflops
    out = ""
    if getattr(a, "bf16_gflops", 0):
        out += f"; {100 * fl / a.bf16_gflops:.1f}% of the {a.bf16_gflops:g} GFLOP/s bf16 dot peak"
    if getattr(a, "amx_gflops", 0):
        out += f"; {100 * fl / a.amx_gflops:.1f}% of the {a.amx_gflops:g} GFLOP/s AMX bf16 peak"
    return out


def inf_row(j, key):
    """(ours, peer, ratio, ours share, ours limit, peer share, peer limit) of a bench_inference
    JSON row: key 'prefill' or 'decode'."""
    if not j:
        return (None,) * 7
    r = next(x for x in j["rows"] if x["metric"].startswith(key))
    return (r["guanaco"], r["llama_cpp"], r["ratio"], r["guanaco_share"], r["guanaco_limit"],
            r["llama_cpp_share"], r["llama_cpp_limit"])


def build_rows(a, jA, jB, jC, jD, jE, jAh=None):
    rows = []

    def add(rid, name, target, ours, peer, rat, share, met, note="", spec=".1f", ratio_spec=".2f"):
        rows.append({"row": rid, "name": name, "target": target, "guanaco": ours, "peer": peer,
                     "ratio": rat, "share": share, "met": met, "note": note,
                     "guanaco_s": fmt(ours, spec), "peer_s": fmt(peer, spec),
                     "ratio_s": fmt(rat, ratio_spec)})

    N = jA["prompt_tokens"] if jA else a.prompt_tokens
    M = jA["gen_tokens"] if jA else a.gen_tokens
    # 1 / 2: NF4 vs llama.cpp Q4_0
    g, l, rt, gs, gl, ls, ll = inf_row(jA, "decode")
    add("1", f"decode {M} tok/s, NF4+DQ vs llama.cpp Q4_0", "ratio ≥ 1.3, share ≥ 70%", g, l, rt,
        pct(gs, gl), verdict([("ratio", rt, ">=", 1.3), ("share", gs, ">=", 0.70)]) if jA else "not run",
        note=f"share = weight bytes/token × tok/s ÷ {a.bw_gbs:g} GB/s; llama.cpp: {pct(ls, ll)}")
    if jAh:
        head4_row(add, "1h", f"decode {M} tok/s", jAh, jA, "ratio ≥ 1.3 (extra row)", 1.3)
    g, l, rt, gs, gl, ls, ll = inf_row(jA, "prefill")
    add("2", f"prefill {N} tok/s, NF4+DQ vs llama.cpp Q4_0", "ratio ≥ 1.5", g, l, rt, pct(gs, gl),
        verdict([("ratio", rt, ">=", 1.5)]) if jA else "not run",
        note=f"share of the {a.peak_gflops:g} GFLOP/s f32 FMA peak{bf16_share(a, gs)}; llama.cpp: {pct(ls, ll)}")
    # 3: training
    if jD:
        seq, acc, st = jD["seq_tokens"], jD["grad_accum"], jD["steps"]
        g, p, lim = jD["guanaco_tps"], jD["peer_tps"], jD["limit_tps"]
        rt = ratio(g, p)
        add("3", f"QLoRA train tok/s, NF4 r64 seq {seq - 1}+BOS (1×{acc}, {st} step{'s' if st > 1 else ''}) "
                 "vs PyTorch+PEFT+bnb",
            "ratio ≥ 2, share ≥ 40%", g, p, rt, pct(ratio(g, lim), lim),
            verdict([("ratio", rt, ">=", 2.0), ("share", ratio(g, lim), ">=", 0.40)]),
            note=f"share = 6 × {jD['params'] / 1e6:.1f}M params × tok/s ÷ {jD['peak_gflops']:g} GFLOP/s"
                 + bf16_share(a, ratio(g, lim)) + (f"; peer: {pct(ratio(p, lim), lim)}" if p else ""))
        gr, pr = jD["guanaco_rss_mb"], jD["peer_rss_mb"]
        rt = ratio(gr, pr)
        add("3b", "QLoRA train peak RSS MB (same runs)", "ratio ≤ 0.5", gr, pr, rt, "—",
            verdict([("ratio", rt, "<=", 0.5)]), spec=".0f")
    else:
        why = "skipped (--skip-train)" if a.skip_train else "not run"
        add("3", "QLoRA train tok/s vs PyTorch+PEFT+bnb", "ratio ≥ 2, share ≥ 40%", None, None, None,
            "n/a", why)
        add("3b", "QLoRA train peak RSS MB", "ratio ≤ 0.5", None, None, None, "—", why)
    # 4: adapter
    g, l, rt, gs, gl, _, _ = inf_row(jB, "decode")
    add("4", f"decode {M} tok/s, unmerged r64 bf16 adapter (7 modules) vs none", "ratio ≥ 0.9", g, l, rt,
        pct(gs, gl), verdict([("ratio", rt, ">=", 0.9)]) if jB else "not run",
        note="peer = ours, NF4+DQ, no adapter; share: base + adapter bytes per token")
    # 5a/5c: thread scaling of inference (2 threads from A, 1 thread from C)
    t = a.threads
    g2d, _, _, g2s, _, _, _ = inf_row(jA, "decode")
    g1d, _, _, g1s, _, _, _ = inf_row(jC, "decode")
    rt = ratio(g2d, g1d)
    bw_note = ""
    if g2s is not None:
        bw_note = (f"; at {t} threads decode reaches {100 * g2s:.1f}% of the bandwidth limit"
                   + (" — far below it, so in practice it is still compute-limited and should scale"
                      if g2s < 0.5 else ""))
    add("5a", f"scaling: decode tok/s, {t} threads vs 1", "n/a (bandwidth-bound)", g2d, g1d, rt,
        pct(g2s, inf_row(jA, "decode")[4]), "n/a" if jA and jC else "not run",
        note=f"peer = ours with 1 thread; the target (≥ 1.8) applies where the work is "
             f"compute-bound, decode is bandwidth-bound by design" + bw_note)
    g2p, _, _, g2ps, g2pl, _, _ = inf_row(jA, "prefill")
    g1p = inf_row(jC, "prefill")[0]
    rt = ratio(g2p, g1p)
    add("5c", f"scaling: prefill {N} tok/s, {t} threads vs 1 (extra)", "ratio ≥ 1.8 (compute-bound)",
        g2p, g1p, rt, pct(g2ps, g2pl),
        verdict([("ratio", rt, ">=", 1.8)]) if jA and jC else "not run",
        note="peer = ours with 1 thread; not a target row, free from the same runs")
    # 5b: training scaling (D's ours, E)
    g2 = jD["guanaco_tps"] if jD else None
    g1 = jE["guanaco_alt_tps"] if jE else None
    rt = ratio(g2, g1)
    lim = jD["limit_tps"] if jD else None
    add("5b", f"scaling: train tok/s, {t} threads vs 1", "ratio ≥ 1.8", g2, g1, rt, pct(ratio(g2, lim), lim),
        verdict([("ratio", rt, ">=", 1.8)]) if jD and jE else
        ("skipped (--skip-train)" if a.skip_train else "not run"),
        note="peer = ours with 1 thread")
    order = {"1": 0, "1h": 0.5, "2": 1, "3": 2, "3b": 3, "4": 4, "5a": 5, "5b": 6, "5c": 7}
    rows.sort(key=lambda r: order[r["row"]])
    return rows


def head4_row(add, rid, what, jH, jI, target, bound):
    """decode with lm_head in 4-bit too (--4bit-head), against the peer of the plain run jI"""
    g, _, _, gs, gl, _, _ = inf_row(jH, "decode")
    l = inf_row(jI, "decode")[1]
    rt = ratio(g, l)
    add(rid, f"{what} with --4bit-head (lm_head NF4+DQ too) vs llama.cpp Q4_0", target, g, l, rt, pct(gs, gl),
        verdict([("ratio", rt, ">=", bound)]) if g and l else "not run",
        note="llama.cpp's Q4_0 files hold their head in Q6_K; ours bitsandbytes' NF4 + double quant "
             "(llm_int8_skip_modules=[]); peer figure from the plain row's run")


def sized_rows(a, size, jI, jT, jL, jH=None):
    """Rows of one random LLaMA-shaped model (bench/make_sized_models.py): decode and prefill vs
    llama.cpp Q4_0, QLoRA training (vs the peer at 1.1B; seconds and peak RSS at 7B), the
    --4bit load vs bitsandbytes' quantize_4bit."""
    rows = []
    S = size.upper()

    def add(rid, name, target, ours, peer, rat, share, met, note="", spec=".1f", ratio_spec=".2f"):
        rows.append({"row": rid, "name": name, "target": target, "guanaco": ours, "peer": peer,
                     "ratio": rat, "share": share, "met": met, "note": note,
                     "guanaco_s": fmt(ours, spec), "peer_s": fmt(peer, spec),
                     "ratio_s": fmt(rat, ratio_spec)})

    M = jI["gen_tokens"] if jI else a.sized_gen_tokens
    N = jI["prompt_tokens"] if jI else a.prompt_tokens
    g, l, rt, gs, gl, ls, ll = inf_row(jI, "decode")
    add(f"6-{size}", f"{S} decode {M} tok/s, NF4+DQ vs llama.cpp Q4_0", "ratio ≥ 1.1, share ≥ 70%", g, l, rt,
        pct(gs, gl), verdict([("ratio", rt, ">=", 1.1), ("share", gs, ">=", 0.70)]) if jI else "not run",
        note=f"{S}: llama.cpp {pct(ls, ll)} of its own bytes per token")
    if jH:
        head4_row(add, f"6h-{size}", f"{S} decode {M} tok/s", jH, jI, "ratio ≥ 1.1 (extra row)", 1.1)
    g, l, rt, gs, gl, ls, ll = inf_row(jI, "prefill")
    add(f"7-{size}", f"{S} prefill {N} tok/s, NF4+DQ vs llama.cpp Q4_0", "ratio ≥ 1.5", g, l, rt, pct(gs, gl),
        verdict([("ratio", rt, ">=", 1.5)]) if jI else "not run", note=bf16_share(a, gs).lstrip("; "))
    if jT:
        gt, pt, lim = jT["guanaco_tps"], jT["peer_tps"], jT["limit_tps"]
        gr, pr = jT["guanaco_rss_mb"], jT["peer_rss_mb"]
        seq, acc, st = jT["seq_tokens"], jT["grad_accum"], jT["steps"]
        what = f"1×{acc} seq {seq - 1}+BOS, {'step 2' if st == 2 else f'steps 2..{st}' if st > 2 else 'step 1'}"
        if pt:
            rt = ratio(gt, pt)
            add(f"8-{size}", f"{S} QLoRA train tok/s, NF4 r64 ({what}) vs PyTorch+PEFT+bnb", "ratio ≥ 2", gt, pt, rt,
                pct(ratio(gt, lim), lim), verdict([("ratio", rt, ">=", 2.0)]),
                note=bf16_share(a, ratio(gt, lim)).lstrip("; "))
            rt = ratio(gr, pr)
            add(f"8b-{size}", f"{S} QLoRA train peak RSS MB (same runs)", "ratio ≤ 0.5", gr, pr, rt, "—",
                verdict([("ratio", rt, "<=", 0.5)]), spec=".0f")
        else:
            sec = seq * acc / gt if gt else None
            add(f"8-{size}", f"{S} QLoRA step seconds ({what}; no peer run)", "report", sec, None, None,
                pct(ratio(gt, lim), lim), "n/a", spec=".1f")
            add(f"8b-{size}", f"{S} QLoRA step peak RSS MB (same run)", "≤ 8000 MB", gr, None, None, "—",
                ("yes" if gr <= 8000 else f"NO ({gr:.0f} > 8000)") if gr else "?", spec=".0f")
    else:
        add(f"8-{size}", f"{S} QLoRA training", "ratio ≥ 2 (1.1B); ≤ 8000 MB (7B)", None, None, None, "n/a", "not run")
    if not jL and size == "7b":
        add(f"9-{size}", f"{S} --4bit load s vs bnb quantize_4bit", "ratio ≤ 1 (seconds)", None, None, None, "—", "not run")
    if jL and jL.get("peer"):
        o, p = jL["guanaco"]["load_s"], jL["peer"]["quantize_s"]
        sc = jL["peer"].get("scaled_from")
        rt = ratio(o, p)
        add(f"9-{size}", f"{S} --4bit load s (f16 folder) vs bnb quantize_4bit calls"
            + (" (scaled from a layer subset)" if sc else ""), "ratio ≤ 1 (seconds)", o, p, rt, "—",
            verdict([("ratio", rt, "<=", 1.0)]),
            note=f"{S} load: ours reads and quantizes ({jL['guanaco']['cpu_s']:.0f} s CPU); the peer's whole "
                 f"pass with reading {jL['peer']['whole_s']:.1f} s" + (f", measured on {sc['params'] / 1e9:.2f} B "
                                                                    f"params and scaled ×{sc['factor']:.2f}" if sc else ""))
    elif jL:
        add(f"9-{size}", f"{S} --4bit load s (f16 folder)", "report", jL["guanaco"]["load_s"], None, None, "—", "n/a")
    return rows


def settings_line(a, jA, jC, jD):
    """The run's settings, from the sub-scripts' JSON where there is one."""
    P = jA["prompt_tokens"] if jA else a.prompt_tokens
    M = jA["gen_tokens"] if jA else a.gen_tokens
    R = jA["reps"] if jA else a.reps
    R1 = jC["reps"] if jC else a.scaling_reps
    s = f"prompt {P}, decode {M} tokens, reps {R} (1 thread: {R1})"
    if jD:
        s += (f"; training 1 × {jD['grad_accum']} sequences of {jD['seq_tokens']} ids a step, "
              f"{jD['steps']} step{'s' if jD['steps'] > 1 else ''}, {jD.get('reps', 1)} interleaved "
              f"repetition{'s' if jD.get('reps', 1) > 1 else ''} (medians)")
    elif a.skip_train:
        s += "; no training (--skip-train)"
    if a.skip_peer:
        s += "; no external peers (--skip-peer)"
    if a.wait_quiet:
        s += f"; --wait-quiet {a.wait_quiet:g}"
    return s


def isa_paths(jA, jP, sized):
    """Which vector paths each engine used: ours the GN_SIMD level its kernels chose, llama.cpp
    its system_info string (from the inference sections' JSON)."""
    ours = peer = None
    for j in [jA] + [v[0] for v in sized.values()]:
        if j and j.get("guanaco"):
            ours = ours or j["guanaco"].get("simd")
        if j and j.get("llama_cpp"):
            peer = peer or j["llama_cpp"].get("system_info")
    ours = ours or (jP or {}).get("simd")
    return (f"guanaco {ours or '?'} kernels (GN_SIMD level chosen at run time); "
            f"llama.cpp system_info: {peer or 'n/a'}")


def markdown(rows):
    out = ["| row | target | guanaco | peer | ratio | share of limit | met? |",
           "|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['row']} {r['name']} | {r['target']} | {r['guanaco_s']} | {r['peer_s']} | "
                   f"{r['ratio_s']} | {r['share']} | {r['met']} |")
    return out


def plot(rows, path, title):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot skipped: matplotlib is not installed in this python "
              f"({PY}; pip install matplotlib for bench/out/bench_all.png)")
        return None
    import re

    def bound(target):
        m = re.search(r"ratio [≥≤] ([0-9.]+)", target)
        return float(m.group(1)) if m else None

    rs = [r for r in rows if r["ratio"] is not None]
    if not rs:
        print("plot skipped: no ratios")
        return None
    fig, ax = plt.subplots(figsize=(11, 0.55 * len(rs) + 1.5))
    labels = [f"{r['row']} {r['name']}" for r in rs][::-1]
    vals = [r["ratio"] for r in rs][::-1]
    colors = ["tab:green" if r["met"] == "yes" else "tab:gray" if r["met"].startswith("n/a")
              else "tab:red" for r in rs][::-1]
    ax.barh(range(len(rs)), vals, color=colors)
    for i, r in enumerate(rs[::-1]):
        b = bound(r["target"])
        if b is not None:
            ax.plot([b, b], [i - 0.4, i + 0.4], color="k", lw=2)
        ax.text(vals[i], i, f" {vals[i]:.2f}", va="center", fontsize=8)
    ax.set_yticks(range(len(rs)))
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_xlabel("ratio (ours / peer; black tick = target; green met, red missed)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-m", "--model", default=DEFAULT_MODEL)
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="very short runs, to check the driver")
    ap.add_argument("--skip-train", action="store_true", help="no training sections (rows 3, 3b, 5b)")
    ap.add_argument("--skip-peer", action="store_true", help="no llama.cpp and no PyTorch peer")
    ap.add_argument("--skip-smol", action="store_true",
                    help="no SmolLM2 sections (A-D): the sized rows only (--table-only then joins the JSON of "
                         "the sections' last runs into one table)")
    ap.add_argument("--skip-adapter", action="store_true", help="no section B (row 4, the unmerged adapter)")
    ap.add_argument("--wait-quiet", type=float, default=0, metavar="S", help="passed to the sub-scripts")
    ap.add_argument("--reps", type=int, default=None, help="repetitions of A and B (default 3; quick 1)")
    ap.add_argument("--scaling-reps", type=int, default=None, help="repetitions of C (default 2; quick 1)")
    ap.add_argument("--train-reps", type=int, default=None,
                    help="interleaved repetitions of D and E, medians (default 3; quick 1)")
    ap.add_argument("--prompt-tokens", type=int, default=None, help="default 512 (quick 128)")
    ap.add_argument("--gen-tokens", type=int, default=None, help="default 128 (quick 8)")
    ap.add_argument("--grad-accum", type=int, default=None, help="training: sequences a step (default 4; quick 1)")
    ap.add_argument("--steps", type=int, default=None, help="training: steps, the first a warm-up (default 3; quick 1)")
    ap.add_argument("--peak-gflops", type=float, default=None,
                    help="f32 FMA peak of the threads, GFLOP/s (default: measured by build/bench/probe_machine)")
    ap.add_argument("--bw-gbs", type=float, default=None,
                    help="read bandwidth, GB/s (default: measured by build/bench/probe_machine)")
    ap.add_argument("--sizes", default="1.1b,7b",
                    help="random LLaMA-shaped models for the sized rows (bench/make_sized_models.py): "
                         "comma list of 1.1b, 7b; 'none' for the SmolLM2 rows only")
    ap.add_argument("--sized-gen-tokens", type=int, default=None, help="decoded tokens of the sized rows (default 32)")
    ap.add_argument("--sized-reps", default=None,
                    help="interleaved repetitions of the sized rows' section I, medians: one number, or "
                         "SIZE=N,SIZE=N (default 1.1b=3,7b=2; quick 1). One repetition swung the 1.1B decode "
                         "ratio between 0.93 and 1.29 on one host within an hour (bench/RESULTS.md)")
    ap.add_argument("--sized-train-steps", type=int, default=None,
                    help="1.1B training steps of 1 sequence, the first a warm-up (default 2; quick 1)")
    ap.add_argument("--sized-train-peer", nargs="?", const="on", default="auto", choices=("on", "off", "auto"),
                    help="run the PyTorch + PEFT + bitsandbytes peer in the 1.1B training section too: on, off, or "
                         "auto (default: on where the CPU has AVX512_BF16, about 2 minutes a run on 2 Zen 4 cores; "
                         "off elsewhere: over 50 minutes a step on 2 Zen 3 cores, bench/RESULTS.md)")
    ap.add_argument("--sized-sections", default="ITL",
                    help="which sections of the sized rows run: I (inference, with its --4bit-head rerun: "
                         "rows 6h), T (training), L (7B load); "
                         "the others keep their last JSON for --table-only")
    ap.add_argument("--peer-load-layers", type=int, default=4,
                    help="7B load row: bitsandbytes quantizes the first N layers, scaled to all (0: all)")
    ap.add_argument("--emulate", choices=sorted(EMULATIONS), default=None,
                    help="run the table as on another CPU family, both engines on its instruction set: "
                         + "; ".join(f"{k}: {v['what']}" for k, v in EMULATIONS.items())
                         + " (output under --out/emulate-NAME; the first run builds that family's llama.cpp peer)")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "out"))
    ap.add_argument("--bench-dir", default=os.path.join(CACHE, "bench"),
                    help="where the Q4_0 peer file and the adapter are cached")
    ap.add_argument("--verbose", action="store_true", help="echo all of the sub-scripts' output")
    ap.add_argument("--table-only", action="store_true",
                    help="run nothing: rebuild the table from the sub-scripts' JSON of the last run")
    a = ap.parse_args()
    global TABLE_ONLY
    TABLE_ONLY = a.table_only
    q = a.quick
    a.reps = a.reps or (1 if q else 3)
    a.scaling_reps = a.scaling_reps or (1 if q else 2)
    a.train_reps = a.train_reps or (1 if q else 3)
    a.prompt_tokens = a.prompt_tokens or (128 if q else 512)
    a.gen_tokens = a.gen_tokens or (8 if q else 128)
    a.grad_accum = a.grad_accum or (1 if q else 4)
    a.steps = a.steps or (1 if q else 3)
    a.sized_gen_tokens = a.sized_gen_tokens or (4 if q else 32)
    a.sized_train_steps = a.sized_train_steps or (1 if q else 2)
    sizes = [x for x in a.sizes.split(",") if x and x != "none"]
    emu = EMULATIONS.get(a.emulate)
    if emu:
        missing = [f for f in emu["needs"] if not cpu_has(f)]
        if missing:
            ap.error(f"--emulate {a.emulate}: this CPU lacks {', '.join(missing)}, which that family has")
        a.out = os.path.join(a.out, f"emulate-{a.emulate}")
    sized_train_peer = a.sized_train_peer == "on" or (a.sized_train_peer == "auto" and cpu_has("avx512_bf16")
                                                      and not emu)
    sized_reps = {"1.1b": 1, "7b": 1} if q else {"1.1b": 3, "7b": 2}
    if a.sized_reps:
        for part in a.sized_reps.split(","):
            k, _, v = part.rpartition("=")
            try:
                n = int(v)
            except ValueError:
                n = 0
            if n < 1 or (k and k not in ("1.1b", "7b")):
                ap.error(f"--sized-reps: '{part}' is not N or SIZE=N (SIZE 1.1b or 7b, N >= 1)")
            for z in ([k] if k else list(sized_reps)):
                sized_reps[z] = n

    command = shlex.join([rel(PY) if PY.startswith(ROOT) else PY, rel(os.path.abspath(sys.argv[0]))]
                         + sys.argv[1:])
    date = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    cpu = machine()
    env_note = ("OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset for this run (were set)"
                if os.environ.get(MARK) == "1" else "OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE not set")
    print(f"bench_all: {date}")
    print(f"cpu: {cpu} ({os.cpu_count()} cores); threads {a.threads}")
    print(f"command: {command}")
    print(f"env: {env_note}")
    if emu:
        os.makedirs(a.bench_dir, exist_ok=True)
        os.makedirs(a.out, exist_ok=True)
        peer_dir = None if a.skip_peer else emulation_peer(a.bench_dir, a.emulate, emu["peer_cflags"],
                                                           os.path.join(a.out, f"build-peer-{a.emulate}.log"))
        os.environ.update(emu["env"])
        if peer_dir:
            os.environ["PYTHONPATH"] = os.pathsep.join(x for x in (peer_dir, os.environ.get("PYTHONPATH")) if x)
        env_note += (f"; EMULATED {a.emulate} ({emu['what']}): "
                     + " ".join(f"{k}={v}" for k, v in emu["env"].items())
                     + (f", llama.cpp built with {emu['peer_cflags']} ({rel(peer_dir)})" if peer_dir else ""))
        print(f"emulation: {env_note}")
    la = os.getloadavg()
    print(f"load average: {la[0]:.2f} {la[1]:.2f} {la[2]:.2f}"
          + ("  (busy: figures will be noisy; --wait-quiet 600 waits for quiet windows)" if la[0] > 0.5 else ""))

    guanaco = os.path.join(ROOT, "build", "guanaco")
    bench_bin = os.path.join(ROOT, "build", "bench", "bench_generate")
    for b in (guanaco, bench_bin):
        if not os.access(b, os.X_OK):
            sys.exit(f"bench_all: {rel(b)} is not built (make -j2)")
    if not os.path.exists(a.model):
        if a.model != DEFAULT_MODEL:
            sys.exit(f"bench_all: {a.model} not found")
        subprocess.run(["bash", os.path.join(ROOT, "scripts", "fetch_models.sh")], check=True)

    sub = os.path.join(a.out, "bench_all")
    os.makedirs(sub, exist_ok=True)
    os.makedirs(a.bench_dir, exist_ok=True)
    T = str(a.threads)
    # -- the machine's limits, measured now (unless given) ---------------------------------
    probe_bin = os.path.join(ROOT, "build", "bench", "probe_machine")
    jP_path = os.path.join(sub, "probe.json")
    if not TABLE_ONLY and os.access(probe_bin, os.X_OK) and (a.bw_gbs is None or a.peak_gflops is None):
        fresh(jP_path)
        with open(jP_path + ".log", "w") as log:
            p = subprocess.run([probe_bin, "-t", T, "--json"], cwd=ROOT, capture_output=True, text=True)
            log.write(p.stdout + p.stderr)
        line = next((x for x in p.stdout.splitlines() if x.startswith("{")), None)
        if line:
            with open(jP_path, "w") as fh:
                fh.write(line + "\n")
        print("\n== P: machine limits\n  " + "\n  ".join(p.stdout.strip().splitlines()[:3]), flush=True)
    jP = load_json(jP_path)
    measured = []
    if a.bw_gbs is None:
        a.bw_gbs = round(jP["bw_gbs"], 1) if jP else 46.0
        measured.append("bandwidth " + ("measured" if jP else "46 GB/s assumed (no probe)"))
    if a.peak_gflops is None:
        a.peak_gflops = round(jP["peak_gflops"], 0) if jP else 515.0
        measured.append("FMA peak " + ("measured" if jP else "515 GFLOP/s assumed (no probe)"))
    # the bf16 products' own limits where the probe measured them (AVX512_BF16 dot products, AMX tiles)
    a.bf16_gflops = round(jP.get("bf16_gflops", 0.0), 0) if jP and not emu else 0.0
    a.amx_gflops = round(jP.get("amx_gflops", 0.0), 0) if jP and not emu else 0.0
    a.limits_note = (f"limits: read bandwidth {a.bw_gbs:g} GB/s, f32 FMA peak {a.peak_gflops:g} GFLOP/s with {T} threads"
                     + (f" ({', '.join(measured)} by build/bench/probe_machine, {jP['simd']} vectors, this run)"
                        if jP and measured else " (given)")
                     + (f"; bf16 dot peak {a.bf16_gflops:g} GFLOP/s" if a.bf16_gflops else "")
                     + (f"; AMX bf16 peak {a.amx_gflops:g} GFLOP/s" if a.amx_gflops else ""))
    print(a.limits_note, flush=True)
    common = ["-m", a.model, "--prompt-tokens", str(a.prompt_tokens), "--gen-tokens", str(a.gen_tokens),
              "--peak-gflops", str(a.peak_gflops), "--bw-gbs", str(a.bw_gbs), "--out", sub]
    if a.wait_quiet > 0:
        common += ["--wait-quiet", str(a.wait_quiet)]
    inf = [PY, os.path.join(HERE, "bench_inference.py")]
    stem = os.path.splitext(os.path.basename(a.model))[0]

    # -- peer files, made once ------------------------------------------------
    q4 = os.path.join(a.bench_dir, f"{stem}-q4_0.gguf")
    if not TABLE_ONLY and not a.skip_peer and not (os.path.exists(q4) and os.path.getmtime(q4) >= os.path.getmtime(a.model)):
        f32 = os.path.join(a.bench_dir, f"{stem}-f32.tmp.gguf")
        rc = run_section("Q4_0: llama.cpp Q4_0 peer file (made once)",
                         [PY, os.path.join(HERE, "make_q4_0.py"), "-m", a.model, "-o", q4 + ".tmp",
                          "--f32", f32, "-t", T], os.path.join(sub, "make_q4_0.log"), a.verbose, prep=True)
        fresh(f32)
        if rc == 0:
            os.replace(q4 + ".tmp", q4)
    # bf16, as qlora.py's --bf16 runs (the Guanaco adapters) save them
    lora = os.path.join(a.bench_dir, f"{stem}-lora-r64-bf16")
    if not TABLE_ONLY and not os.path.exists(os.path.join(lora, "adapter_model.safetensors")):
        run_section("LoRA: r64 bf16 adapter on 7 modules (made once)",
                    [PY, os.path.join(HERE, "make_lora_adapter.py"), "-o", lora, "-m", a.model, "-r", "64",
                     "--dtype", "bf16"],
                    os.path.join(sub, "make_lora_adapter.log"), a.verbose, prep=True)

    # -- A: NF4 vs llama.cpp Q4_0 --------------------------------------------
    jA_path = os.path.join(sub, "bench_inference-nf4-vs-q4_0.json")
    smol = not a.skip_smol or TABLE_ONLY
    if smol:
        fresh(jA_path)
    cmd = inf + common + ["-t", T, "--reps", str(a.reps), "--guanaco-args", "--4bit", "--tag", "nf4-vs-q4_0"]
    if a.skip_peer or not (os.path.exists(q4) or TABLE_ONLY):
        cmd += ["--skip-llama"]
    else:
        cmd += ["--peer-model", q4]
    if smol:
        run_section("A: decode/prefill, guanaco NF4+DQ vs llama.cpp Q4_0 (rows 1, 2)", cmd,
                    os.path.join(sub, "A-nf4-vs-q4_0.log"), a.verbose)
    jA = load_json(jA_path)
    # A2: the same with lm_head (SmolLM2: a 4-bit copy of its tied table) in 4-bit too
    jAh_path = os.path.join(sub, "bench_inference-nf4-head4.json")
    if smol:
        fresh(jAh_path)
        run_section("A2: decode/prefill with --4bit-head (row 1h)",
                    inf + common + ["-t", T, "--reps", str(a.reps), "--guanaco-args", "--4bit --4bit-head", "--skip-llama",
                                    "--tag", "nf4-head4"], os.path.join(sub, "A2-nf4-head4.log"), a.verbose)
    jAh = load_json(jAh_path)

    # -- B: adapter vs none ----------------------------------------------------
    jB_path = os.path.join(sub, "bench_inference-lora-r64.json")
    jB = None
    if smol and not a.skip_adapter:
        fresh(jB_path)
    if smol and not a.skip_adapter and (os.path.exists(lora) or TABLE_ONLY):
        run_section("B: decode, unmerged r64 adapter vs none (row 4)",
                    inf + common + ["-t", T, "--reps", str(a.reps), "--guanaco-args", f"--4bit -a {lora}",
                                    "--peer-guanaco-args", "--4bit", "--tag", "lora-r64"],
                    os.path.join(sub, "B-lora-r64.log"), a.verbose)
        jB = load_json(jB_path)

    # -- C: 1 thread -----------------------------------------------------------
    jC_path = os.path.join(sub, "bench_inference-t1.json")
    if smol:
        fresh(jC_path)
        run_section("C: decode/prefill, guanaco NF4+DQ with 1 thread (rows 5a, 5c)",
                    inf + common + ["-t", "1", "--reps", str(a.scaling_reps), "--guanaco-args", "--4bit",
                                    "--skip-llama", "--tag", "t1"],
                    os.path.join(sub, "C-t1.log"), a.verbose)
    jC = load_json(jC_path)

    # -- D, E: training ----------------------------------------------------------
    jD = jE = None
    if not a.skip_train and smol:
        tr = [PY, os.path.join(HERE, "bench_train.py"), "-m", a.model, "--grad-accum", str(a.grad_accum),
              "--steps", str(a.steps), "--peak-gflops", str(a.peak_gflops), "--reps", str(a.train_reps)]
        if a.wait_quiet > 0:
            tr += ["--wait-quiet", str(a.wait_quiet)]
        dD = os.path.join(sub, f"train-t{T}")
        fresh(os.path.join(dD, "bench_train.json"))
        # ours with 1 thread inside the same interleaved repetitions: the scaling ratio compares
        # runs minutes apart at most (a separate section drifted by 10-20%)
        run_section("D: QLoRA training, guanaco vs PyTorch+PEFT+bnb, and guanaco with 1 thread (rows 3, 3b, 5b)",
                    tr + ["-t", T, "--out", dD] + (["--skip-peer"] if a.skip_peer else [])
                    + (["--also-threads", "1"] if T != "1" else []),
                    os.path.join(sub, f"D-train-t{T}.log"), a.verbose)
        jD = load_json(os.path.join(dD, "bench_train.json"))
        jE = jD if jD and jD.get("guanaco_alt_tps") else None

    # -- the sized rows: random TinyLlama-1.1B / LLaMA-7B shapes -----------------------
    sized, heads = {}, {}
    for size in sizes:
        mk = [PY, os.path.join(HERE, "make_sized_models.py"), size, "--bench-dir", a.bench_dir, "-t", T]
        sd = os.path.join(a.bench_dir, f"llama-{size}")
        nf4, q4s, f16 = sd + "-nf4", sd + "-q4_0.gguf", sd + "-f16"
        if not TABLE_ONLY and not (os.path.exists(q4s) and os.path.exists(os.path.join(nf4, "config.json"))):
            run_section(f"M-{size}: random {size} model (f16 folder, Q4_0 GGUF, NF4 folder; made once)", mk,
                        os.path.join(sub, f"make-{size}.log"), a.verbose, prep=True)
        jI = jT = jL = None
        jI_path = os.path.join(sub, f"bench_inference-{size}.json")
        runI, runT, runL = ("I" in a.sized_sections, "T" in a.sized_sections, "L" in a.sized_sections)
        if runI:
            fresh(jI_path)
        if runI and (os.path.exists(q4s) or TABLE_ONLY):
            cmd = (inf + ["-m", nf4, "--peer-model", q4s, "--prompt-tokens", str(a.prompt_tokens),
                          "--gen-tokens", str(a.sized_gen_tokens), "--peak-gflops", str(a.peak_gflops),
                          "--bw-gbs", str(a.bw_gbs), "--out", sub, "-t", T, "--reps", str(sized_reps[size]),
                          "--guanaco-args", "--4bit", "--tag", size]
                   + (["--wait-quiet", str(a.wait_quiet)] if a.wait_quiet > 0 else [])
                   + (["--skip-llama"] if a.skip_peer else [])
                   + (["--peer-reload"] if size == "7b" else []))
            run_section(f"I-{size}: decode/prefill, guanaco NF4+DQ vs llama.cpp Q4_0 ({size})", cmd,
                        os.path.join(sub, f"I-{size}.log"), a.verbose)
            jI = load_json(jI_path)
            # the same with lm_head in 4-bit too (--4bit-head), against the peer figure just measured
            fresh(os.path.join(sub, f"bench_inference-{size}-head4.json"))
            cmd = (inf + ["-m", nf4, "--peer-model", q4s, "--skip-llama", "--prompt-tokens", str(a.prompt_tokens),
                          "--gen-tokens", str(a.sized_gen_tokens), "--peak-gflops", str(a.peak_gflops),
                          "--bw-gbs", str(a.bw_gbs), "--out", sub, "-t", T, "--reps", "1",
                          "--guanaco-args", "--4bit --4bit-head", "--tag", f"{size}-head4"])
            run_section(f"H-{size}: decode/prefill with --4bit-head ({size})", cmd, os.path.join(sub, f"H-{size}.log"),
                        a.verbose)
        heads[size] = load_json(os.path.join(sub, f"bench_inference-{size}-head4.json"))
        if runT and not a.skip_train and (os.path.exists(nf4) or TABLE_ONLY):
            dT = os.path.join(sub, f"train-{size}")
            fresh(os.path.join(dT, "bench_train.json"))
            peer = size == "1.1b" and not a.skip_peer and sized_train_peer
            cmd = [PY, os.path.join(HERE, "bench_train.py"), "-m", nf4, "--ours-4bit", "", "--costs-gguf", q4s,
                   "--hf", f16, "--grad-accum", "1", "--steps", str(a.sized_train_steps if peer else 1),
                   "--reps", "1", "--peak-gflops", str(a.peak_gflops), "-t", T, "--out", dT,
                   "--work", f"/tmp/guanaco-bench-train-{size}"] + ([] if peer else ["--skip-peer"])
            if a.wait_quiet > 0:
                cmd += ["--wait-quiet", str(a.wait_quiet)]
            run_section(f"T-{size}: QLoRA training ({size})" + (", guanaco vs PyTorch+PEFT+bnb" if peer else ", guanaco"),
                        cmd, os.path.join(sub, f"T-{size}.log"), a.verbose)
            jT = load_json(os.path.join(dT, "bench_train.json"))
        if runL and size == "7b" and (os.path.exists(f16) or TABLE_ONLY):
            dL = os.path.join(sub, f"load-{size}")
            fresh(os.path.join(dL, "bench_load.json"))
            cmd = [PY, os.path.join(HERE, "bench_load.py"), "-m", f16, "-t", T, "--out", dL,
                   "--peer-layers", str(a.peer_load_layers)] + (["--skip-peer"] if a.skip_peer else [])
            run_section(f"L-{size}: --4bit load vs bitsandbytes quantize_4bit ({size})", cmd,
                        os.path.join(sub, f"L-{size}.log"), a.verbose)
            jL = load_json(os.path.join(dL, "bench_load.json"))
        if not runI:  # not run now: the last run's JSON, if any (its date is in the notes)
            jI = load_json(jI_path)
        if not runT:
            jT = load_json(os.path.join(sub, f"train-{size}", "bench_train.json"))
        if not runL and size == "7b":
            jL = load_json(os.path.join(sub, f"load-{size}", "bench_load.json"))
        sized[size] = (jI, jT, jL)

    if a.skip_smol and not TABLE_ONLY:  # not run now: no figures from an older run in this table
        jA = jB = jC = jD = jE = jAh = None

    # -- the table ------------------------------------------------------------------
    total = time.monotonic() - T0
    rows = build_rows(a, jA, jB, jC, jD, jE, jAh)
    for size in sizes:
        rows += sized_rows(a, size, *sized[size], jH=heads.get(size))
    table = markdown(rows)
    noise = {}
    for name, j in (("A", jA), ("B", jB), ("C", jC), ("D", jD)) + tuple(
            (f"{k}-{size}", j) for size in sizes for k, j in zip("IT", sized[size][:2])):
        if j:
            noise[name] = j.get("max_other_cores")
    head = [f"## bench_all: {date}", "",
            f"- CPU: {cpu} ({os.cpu_count()} cores), {a.threads} threads; model {os.path.basename(a.model)}",
            f"- command: `{command}`" + ("  (quick: short runs, not for the record)" if q else ""),
            "- settings: " + settings_line(a, jA, jC, jD)
            + (f"; sized rows {', '.join(sizes)}: "
               + ", ".join(f"{z} {n} interleaved repetition{'s (medians)' if n > 1 else ''}"
                           for z in sizes for n in [(sized[z][0] or {}).get("reps", sized_reps[z])])
               + f" (--4bit-head rows 1), decode {a.sized_gen_tokens} tokens" if sizes else ""),
            f"- {a.limits_note}",
            "- ISA paths: " + isa_paths(jA, jP, sized),
            f"- {env_note}", ""]
    notes = ["", "Notes:"]
    for r in rows:
        if r["note"]:
            notes.append(f"- row {r['row']}: {r['note']}")
    if sizes:
        notes.append("- rows 6-9: random LLaMA-shaped weights (bench/make_sized_models.py, N(0, 0.02), seed 0), "
                     "ours the NF4+DQ folder `guanaco quantize` wrote, llama.cpp the Q4_0 file its quantizer made "
                     "from the same f16 weights; the logits of random weights are nearly flat, so the two engines' "
                     "greedy tokens differ from the first (NF4 vs Q4_0 rounding decides the argmax): no sanity "
                     "check there. Training: 1 sequence a step (BOS + 512 ids, loss on 512), LoRA r 64 on all "
                     "seven modules, bf16 compute; at 7B one step, no peer run")
    notes.append("- ratio = guanaco / peer (row 3b: RSS, lower is better); limits: decode "
                 f"{a.bw_gbs:g} GB/s read bandwidth ÷ weight bytes per token, prefill {a.peak_gflops:g} "
                 "GFLOP/s f32 FMA peak, training 6 × params FLOPs per token at the same peak")
    notes.append("- others' CPU use during the runs (cores, max over repetitions): "
                 + ", ".join(f"{k} {v:.2f}" for k, v in noise.items() if v is not None)
                 + ("  <-- NOISY: rerun on a quiet machine (--wait-quiet 600)"
                    if any(v and v > 0.2 for v in noise.values()) else ""))
    if True:  # sections may come from earlier runs (--table-only, --skip-smol, --sized-sections)
        notes.append(("- --table-only: rebuilt from the sub-scripts' JSON, " if TABLE_ONLY else "- ") + "sections' JSON written "
                     + ", ".join(f"{k} {j['date']}" for k, j in (("A", jA), ("B", jB), ("C", jC), ("D", jD)) + tuple(
                         (f"{k}-{size}", j) for size in sizes for k, j in zip("ITL", sized[size])) if j))
    if not TABLE_ONLY:
        notes.append("- elapsed: " + ", ".join(f"{s['name'].split(':')[0]} {s['elapsed_s']:.0f} s" for s in SECTIONS)
                     + f"; total {total:.0f} s ({total / 60:.1f} min)")
    if FAILED:
        notes.append("- FAILED sections (see their logs): " + ", ".join(FAILED))
    text = head + table + notes

    print("\n" + "\n".join(text))
    os.makedirs(a.out, exist_ok=True)
    md = os.path.join(a.out, "bench_all.md")
    with open(md, "w") as fh:
        fh.write("\n".join(text) + "\n")
    result = {"date": date, "cpu": cpu, "cores": os.cpu_count(), "threads": a.threads, "command": command,
              "model": a.model, "env": env_note, "quick": q,
              "settings": {k: getattr(a, k) for k in ("reps", "scaling_reps", "train_reps", "prompt_tokens", "gen_tokens",
                                                      "grad_accum", "steps", "skip_train", "skip_peer",
                                                      "wait_quiet", "peak_gflops", "bw_gbs")},
              "rows": rows, "noise_max_other_cores": noise,
              "sections": [dict(s, cmd=shlex.join(s["cmd"])) for s in SECTIONS],
              "inputs": {"A": rel(jA_path), "B": rel(jB_path), "C": rel(jC_path)},
              "failed": FAILED, "total_s": round(total, 1)}
    jpath = os.path.join(a.out, "bench_all.json")
    with open(jpath, "w") as fh:
        json.dump(result, fh, indent=1, ensure_ascii=False)
    print(f"\nwrote {rel(md)}, {rel(jpath)}")
    png = plot(rows, os.path.join(a.out, "bench_all.png"),
               f"{os.path.basename(a.model)}, {a.threads} threads, {cpu}, {date}")
    if png:
        print(f"wrote {rel(png)}")
    print(f"total {total:.0f} s ({total / 60:.1f} min)")
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
