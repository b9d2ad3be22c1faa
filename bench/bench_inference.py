#!/usr/bin/env python3
"""bench_inference.py — guanaco vs llama.cpp: prefill and decode tok/s on one GGUF, one run.

    make -j2 build/bench/bench_generate
    ~/.cache/guanaco/venv/bin/python bench/bench_inference.py            # 2 threads, 512 + 128
    ~/.cache/guanaco/venv/bin/python bench/bench_inference.py -t 1 --reps 5
    # NF4 + double quant (ours) vs llama.cpp on a Q4_0 file (bench/make_q4_0.py):
    ~/.cache/guanaco/venv/bin/python bench/bench_inference.py --guanaco-args "--4bit" \
        --peer-model /tmp/smol-q4_0.gguf --tag nf4-vs-q4_0
    # an unmerged adapter (bench/make_lora_adapter.py) vs the same 4-bit model without:
    ~/.cache/guanaco/venv/bin/python bench/bench_inference.py --guanaco-args "--4bit -a /tmp/smol-lora-r64" \
        --peer-guanaco-args "--4bit" --tag lora-r64

Runs build/bench/bench_generate on the model (a subprocess) and llama.cpp through
llama_cpp.Llama on the same file (or --peer-model) with the same thread count, prompt
ids and procedure, interleaved: guanaco repetition r, then llama.cpp repetition r.
Each engine warms up first (bench_generate does so in every process).
--guanaco-args passes extra flags to bench_generate (--4bit, -a DIR, --bf16);
--peer-guanaco-args makes the peer another bench_generate run with those flags
instead of llama.cpp (e.g. the same model without an adapter).

  prefill: reset, eval N prompt ids in one call, timed.
  decode : then greedy, one token per call; the timer starts after the first decoded
           token (llama2.c), M tokens timed.
  figures: the median over --reps repetitions.

For each repetition the script measures how much CPU other processes took
(/proc/stat minus our own rusage); --wait-quiet S waits for a quiet machine
before each repetition and retries disturbed ones.

Prints a table (ours, peer, ratio ours/peer, share of the machine's limit) and
writes bench/out/bench_inference.json and, when matplotlib is importable,
bench/out/bench_inference.png. Nothing is appended to bench/RESULTS.md: paste
the printed markdown table there by hand.

Machine limits (override with --peak-gflops / --bw-gbs):
  prefill FLOPs = 2 * (layers' linear weights) * N + 2 * V*C (head, last row only)
                  + causal attention 4 * L * NH * hs * N(N+1)/2;
                  limit = N / (FLOPs / 515 GFLOP/s f32 FMA peak, 2 cores).
  decode  limit = 46 GB/s measured read bandwidth / weight bytes read per token.
                  guanaco: its own figure (f32 weights after dequantizing; with
                  --4bit the model's resident bytes; an adapter's A/B added);
                  llama.cpp: the tensors' bytes in the GGUF (it computes on the
                  quantized blocks), tied head = token_embd read in full.
  llama.cpp multiplies Q4_1/Q8_0 blocks with int8 dot products, so the f32 peak
  is not a hard ceiling for it; the share is still a useful yardstick.

OpenBLAS: our machines set OPENBLAS_CORETYPE=Haswell (halves OpenBLAS speed on
these cores) and OPENBLAS_L2_SIZE. This script re-executes itself with both
unset, so neither process of the run sees them, and says so.
"""
import argparse
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchenv import CACHE, DEFAULT_MODEL, MARK, ROOT  # noqa: E402  (re-executes without OpenBLAS overrides)


def prompt_ids(n, vocab):
    # Same sequence as bench_generate.c.
    return [(i * 7919 + 13) % vocab for i in range(n)]


def machine():
    name, cores = platform.processor() or "?", os.cpu_count()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            k, _, v = line.partition(":")
            if k.strip() == "Model name":
                name = v.strip()
    except OSError:
        pass
    return {"cpu": name, "cores": cores}


# ---------------------------------------------------------------------------
# noise: CPU time other processes took while we measured


def cpu_snapshot():
    """(wall s, machine busy CPU s, steal CPU s, our own CPU s incl. waited-for children)."""
    with open("/proc/stat") as fh:
        f = [int(x) for x in fh.readline().split()[1:]]
    hz = os.sysconf("SC_CLK_TCK")
    busy = (sum(f[:8]) - f[3] - f[4]) / hz  # everything but idle and iowait; steal included
    steal = (f[7] if len(f) > 7 else 0) / hz
    own = sum(resource.getrusage(w).ru_utime + resource.getrusage(w).ru_stime
              for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return time.monotonic(), busy, steal, own


def foreign_load(s0, s1):
    """Cores' worth of CPU that others (and the hypervisor, as steal) used between s0 and s1."""
    wall = max(s1[0] - s0[0], 1e-9)
    other = max(0.0, (s1[1] - s0[1]) - (s1[3] - s0[3])) / wall
    return {"other_cores": round(other, 3), "steal_cores": round((s1[2] - s0[2]) / wall, 3)}


def wait_quiet(limit_s, threshold=0.2, sample_s=5.0):
    """Waits (up to limit_s) until others use less than threshold cores over sample_s."""
    t_end = time.monotonic() + limit_s
    while True:
        s0 = cpu_snapshot()
        time.sleep(sample_s)
        fl = foreign_load(s0, cpu_snapshot())
        if fl["other_cores"] < threshold or time.monotonic() >= t_end:
            return fl
        print(f"  waiting for a quiet machine: others use {fl['other_cores']:.2f} cores", flush=True)


# ---------------------------------------------------------------------------
# napkin math from the GGUF itself (independent of guanaco)


def gguf_costs(path, n_prompt):
    from gguf import GGUFReader

    r = GGUFReader(path)

    def field(key):
        f = r.fields[key]
        return f.parts[f.data[0]][0]

    arch = bytes(r.fields["general.architecture"].parts[-1]).decode()
    L = int(field(f"{arch}.block_count"))
    C = int(field(f"{arch}.embedding_length"))
    NH = int(field(f"{arch}.attention.head_count"))
    hs = C // NH
    if f"{arch}.attention.key_length" in r.fields:
        hs = int(field(f"{arch}.attention.key_length"))
    tensors = {t.name: t for t in r.tensors}
    emb = tensors["token_embd.weight"]
    V = int(emb.n_elements) // C
    tied = "output.weight" not in tensors
    layer_linear = sum(int(t.n_elements) for n, t in tensors.items()
                       if n.startswith("blk.") and len(t.shape) == 2)
    params = sum(int(t.n_elements) for t in r.tensors)
    total_bytes = sum(int(t.n_bytes) for t in r.tensors)
    # Per decoded token: everything but the embedding table (one row of it), unless
    # the head is tied to it, then the whole table is read as the head.
    row = int(emb.n_bytes) // V
    bytes_token = total_bytes + row if tied else total_bytes - int(emb.n_bytes) + row
    N = n_prompt
    flops = 2.0 * layer_linear * N + 2.0 * V * C + L * NH * 4.0 * hs * 0.5 * N * (N + 1)
    types = sorted({t.tensor_type.name for t in r.tensors})
    return {"params": params, "file_tensor_bytes": total_bytes, "bytes_per_token": bytes_token,
            "prefill_flops": flops, "vocab": V, "tied": tied, "tensor_types": types}


# ---------------------------------------------------------------------------
# the two engines, one repetition at a time so that they can be interleaved


def guanaco_rep(a, verbose, model=None, extra=None):
    """One bench_generate process: load, warm-up, one timed repetition. JSON dict or None.
    model / extra: the peer's file and flags (default: -m and --guanaco-args)."""
    cmd = [a.bin, "-m", model or a.model, "-t", str(a.threads), "--prompt-tokens",
           str(a.prompt_tokens), "--gen-tokens", str(a.gen_tokens), "--reps", "1", "--json",
           "--peak-gflops", str(a.peak_gflops), "--bw-gbs", str(a.bw_gbs)]
    cmd += shlex.split(a.guanaco_args if extra is None else extra)
    if verbose:
        print("$ " + " ".join(cmd), flush=True)
    p = subprocess.run(cmd, capture_output=True, text=True)
    res = None
    for line in p.stdout.splitlines():
        if line.startswith("{"):
            res = json.loads(line)
        elif verbose:
            print("  | " + line)
    if p.returncode != 0 or res is None:
        print(f"guanaco: bench_generate failed (exit {p.returncode}):\n{p.stderr.strip()}")
        return None
    return res


class LlamaCpp:
    """llama.cpp through llama_cpp.Llama, loaded once; rep() is one timed repetition."""

    def __init__(self, a, vocab, model):
        import numpy as np
        import llama_cpp

        self.np, self.lc = np, llama_cpp
        self.llm = llama_cpp.Llama(model_path=model, n_threads=a.threads,
                                   n_threads_batch=a.threads, n_ctx=1024, n_batch=512,
                                   verbose=False)
        self.V = self.llm.n_vocab()
        assert self.V == vocab, (self.V, vocab)
        self.N, self.M = a.prompt_tokens, a.gen_tokens
        assert self.N + self.M + 1 <= 1024 and self.N <= 512, "n_ctx=1024, n_batch=512"
        self.ids = prompt_ids(self.N, self.V)
        self.info = llama_cpp.llama_print_system_info().decode().strip()
        self.version = getattr(llama_cpp, "__version__", "?")
        self.rep(warmup=True)

    def last_argmax(self):
        ptr = self.lc.llama_get_logits_ith(self.llm.ctx, -1)
        return int(self.np.ctypeslib.as_array(ptr, shape=(self.V,)).argmax())

    def rep(self, warmup=False):
        """Returns {prefill_tps, decode_tps, decode_ids} (same procedure as bench_generate.c)."""
        llm = self.llm
        llm.reset()  # eval() then drops the cache from position 0 on
        t0 = time.perf_counter()
        llm.eval(self.ids)
        t1 = time.perf_counter()
        tok = self.last_argmax()
        steps = min(self.M, 16) if warmup else self.M
        first = []
        for k in range(steps + 1):  # k = 0: the untimed first token
            if len(first) < 16:
                first.append(tok)
            llm.eval([tok])
            tok = self.last_argmax()
            if k == 0:
                t2 = time.perf_counter()
        t3 = time.perf_counter()
        return {"prefill_tps": self.N / (t1 - t0), "decode_tps": steps / (t3 - t2),
                "decode_ids": first}


def measure(fn, a):
    """Runs fn() once; with --wait-quiet waits for a quiet machine first and retries (up to
    twice) a repetition during which others took more than 0.2 cores."""
    for attempt in range(3):
        if a.wait_quiet > 0:
            wait_quiet(a.wait_quiet)
        s0 = cpu_snapshot()
        res = fn()
        fl = foreign_load(s0, cpu_snapshot())
        if res is None or a.wait_quiet <= 0 or fl["other_cores"] + fl["steal_cores"] < 0.2:
            break
        print(f"  retrying: others took {fl['other_cores']:.2f} cores", flush=True)
    if res is not None:
        res = dict(res, noise=fl)
    return res


def summarize(reps):
    """Medians over repetitions; None when there are none."""
    reps = [r for r in reps if r]
    if not reps:
        return None
    out = dict(reps[-1])
    for k in ("prefill_tps", "decode_tps"):
        out[k] = statistics.median(r[k] for r in reps)
    out["reps_prefill_tps"] = [round(r["prefill_tps"], 2) for r in reps]
    out["reps_decode_tps"] = [round(r["decode_tps"], 2) for r in reps]
    out["reps_other_cores"] = [r["noise"]["other_cores"] + r["noise"]["steal_cores"] for r in reps]
    out.pop("noise", None)
    return out


# ---------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-m", "--model", default=DEFAULT_MODEL)
    ap.add_argument("-t", "--threads", type=int, default=os.cpu_count())
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--gen-tokens", type=int, default=128)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "bench", "bench_generate"))
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "out"))
    ap.add_argument("--peak-gflops", type=float, default=515.0)
    ap.add_argument("--bw-gbs", type=float, default=46.0)
    ap.add_argument("--skip-guanaco", action="store_true")
    ap.add_argument("--skip-llama", action="store_true", help="run no peer")
    ap.add_argument("--guanaco-args", default="", metavar="ARGS",
                    help='extra bench_generate flags for ours, e.g. "--4bit" or "--4bit -a DIR"')
    ap.add_argument("--peer-model", default=None, metavar="PATH",
                    help="GGUF the peer runs (default: -m), e.g. a Q4_0 file from make_q4_0.py")
    ap.add_argument("--peer-guanaco-args", default=None, metavar="ARGS",
                    help="make the peer bench_generate with these flags instead of llama.cpp "
                         '(e.g. "--4bit" against --guanaco-args "--4bit -a DIR")')
    ap.add_argument("--peer-reload", action="store_true",
                    help="load llama.cpp for each repetition and free it afterwards, so that the two "
                         "engines never hold a large model at the same time (the 7B rows)")
    ap.add_argument("--tag", default="", help="suffix of the output files (bench_inference-TAG.json)")
    ap.add_argument("--wait-quiet", type=float, default=0, metavar="S",
                    help="before each repetition wait up to S seconds until other processes "
                         "use < 0.2 cores, and retry a repetition they disturbed (twice at most)")
    # "--guanaco-args --4bit": argparse would take "--4bit" for an option; glue it on with "=".
    argv, i = [], 0
    while i < len(sys.argv[1:]):
        x = sys.argv[1 + i]
        if x in ("--guanaco-args", "--peer-guanaco-args") and i + 1 < len(sys.argv[1:]):
            x, i = f"{x}={sys.argv[2 + i]}", i + 1
        argv.append(x)
        i += 1
    a = ap.parse_args(argv)

    unset = os.environ.get(MARK) == "1"
    env_note = ("OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset for this run (were set)" if unset
                else "OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE not set")
    if not os.path.exists(a.model) and a.model == DEFAULT_MODEL:
        subprocess.run(["bash", os.path.join(ROOT, "scripts", "fetch_models.sh")], check=True)
    mach = machine()
    print(f"machine: {mach['cpu']}, {mach['cores']} cores; threads {a.threads}")
    print(f"env: {env_note}")
    load0 = os.getloadavg()
    print(f"load average before: {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f} "
          "(other work on the box skews both engines; rerun when it is busy)")
    peer_model = a.peer_model or a.model
    peer_is_g = a.peer_guanaco_args is not None
    ours = "guanaco" + (f" {a.guanaco_args}" if a.guanaco_args.strip() else "")
    peer = ("guanaco" + (f" {a.peer_guanaco_args}" if a.peer_guanaco_args.strip() else "")
            if peer_is_g else "llama.cpp")
    if ours == peer:
        peer += " (peer)"
    print(f"model: {a.model}" + (f"; peer model: {peer_model}" if peer_model != a.model else ""))
    print(f"ours: {ours}; peer: {peer}")
    # FLOPs and shapes from the GGUF; ours may be an HF folder (the 1.1B / 7B rows: an NF4
    # folder of the same shapes as the peer's GGUF), then the peer's file gives them
    costs = gguf_costs(a.model if a.model.endswith(".gguf") else peer_model, a.prompt_tokens)
    pcosts = costs if peer_model == a.model else gguf_costs(peer_model, a.prompt_tokens)
    for name, c in [("gguf", costs)] + ([("peer gguf", pcosts)] if peer_model != a.model and pcosts is not costs else []):
        print(f"{name}: {c['params'] / 1e6:.1f}M params, tensor types {','.join(c['tensor_types'])}, "
              f"{c['bytes_per_token'] / 1e6:.1f} MB read per decoded token, "
              f"prefill {c['prefill_flops'] / 1e9:.1f} GFLOP for N={a.prompt_tokens}", flush=True)
    assert pcosts["vocab"] == costs["vocab"], "the peer model has another vocabulary"

    have_bin = os.access(a.bin, os.X_OK)
    if not a.skip_guanaco and not have_bin:
        print(f"guanaco: {a.bin} not built (make -j2 {os.path.relpath(a.bin, ROOT)}); skipped")
    run_g = not a.skip_guanaco and have_bin
    lcpp, peer_rep = None, None
    if not a.skip_llama and peer_is_g:
        if not have_bin:
            sys.exit(f"peer: {a.bin} not built")
        peer_rep = lambda verbose: guanaco_rep(a, verbose, peer_model, a.peer_guanaco_args)  # noqa: E731
    elif not a.skip_llama:
        print("$ llama_cpp.Llama(%r, n_threads=%d, n_threads_batch=%d, n_ctx=1024, n_batch=512)"
              % (peer_model, a.threads, a.threads), flush=True)
        if a.peer_reload:
            def peer_rep(verbose):
                nonlocal lcpp
                lc = LlamaCpp(a, pcosts["vocab"], peer_model)
                r = lc.rep()
                lc.llm.close()
                lcpp = lc  # its version and system_info for the report
                return r
        else:
            lcpp = LlamaCpp(a, pcosts["vocab"], peer_model)
            peer_rep = lambda verbose: lcpp.rep()  # noqa: E731
    greps, lreps = [], []
    for r in range(a.reps):  # interleaved: ours rep r, then the peer's rep r
        gr = measure(lambda: guanaco_rep(a, verbose=(r == 0)), a) if run_g else None
        lr = measure(lambda: peer_rep(verbose=(r == 0)), a) if peer_rep else None
        greps.append(gr)
        lreps.append(lr)
        line = f"rep {r}:"
        for name, x in ((ours, gr), (peer, lr)):
            if x:
                line += (f"  {name} prefill {x['prefill_tps']:.1f} decode {x['decode_tps']:.1f} "
                         f"tok/s (others {x['noise']['other_cores'] + x['noise']['steal_cores']:.2f} cores)")
        print(line, flush=True)
    g, l = summarize(greps), summarize(lreps)
    if l and lcpp:
        l.update(llama_cpp_python=lcpp.version, system_info=lcpp.info)
    noise = max([x for r in (g, l) if r for x in r["reps_other_cores"]], default=0.0)
    if noise > 0.2:
        print(f"WARNING: other work took up to {noise:.2f} cores during a repetition; figures "
              "are noisy, rerun (--wait-quiet 600 waits for a quiet machine)")

    # Limits in tok/s. Prefill FLOPs are the model's, the same for both engines, unless
    # bench_generate counts more (an adapter's products). Decode: each engine's bytes.
    N, M = a.prompt_tokens, a.gen_tokens
    pre_limit = N / (costs["prefill_flops"] / (a.peak_gflops * 1e9))
    pre_limit_g = N / (g["prefill_flops"] / (a.peak_gflops * 1e9)) if g else pre_limit
    pre_limit_l = pre_limit
    if peer_is_g:
        dec_limit_l = a.bw_gbs * 1e9 / l["weight_bytes"] if l else None
        pre_limit_l = N / (l["prefill_flops"] / (a.peak_gflops * 1e9)) if l else pre_limit
    else:
        dec_limit_l = a.bw_gbs * 1e9 / pcosts["bytes_per_token"]
    dec_limit_g = a.bw_gbs * 1e9 / g["weight_bytes"] if g else None
    if g and abs(g["prefill_flops"] - costs["prefill_flops"]) > 0.01 * costs["prefill_flops"]:
        print(f"note: FLOP counts differ: bench_generate {g['prefill_flops']:.4g}, "
              f"gguf {costs['prefill_flops']:.4g}"
              + (f" (adapter: {g['adapter_params'] / 1e6:.2f}M params)" if g.get("adapter_params") else ""))

    rows = []
    for metric, key, lim_g, lim_l in (
            (f"prefill {N} tok/s", "prefill_tps", pre_limit_g, pre_limit_l),
            (f"decode {M} tok/s", "decode_tps", dec_limit_g, dec_limit_l)):
        gv = g[key] if g else None
        lv = l[key] if l else None
        rows.append({
            "metric": metric, "guanaco": gv, "llama_cpp": lv,
            "ratio": gv / lv if gv and lv else None,
            "guanaco_share": gv / lim_g if gv and lim_g else None,
            "llama_cpp_share": lv / lim_l if lv else None,
            "guanaco_limit": lim_g, "llama_cpp_limit": lim_l})

    def f(x, spec):
        return format(x, spec) if x is not None else "n/a"

    def share(x, lim):
        return f"{100 * x:.1f}% of {lim:.0f}" if x is not None else "n/a"

    print()
    hdr = ("metric", ours, peer, "ratio", f"{ours} % limit", f"{peer} % limit")
    print("| " + " | ".join(hdr) + " |")
    print("|" + "---|" * len(hdr))
    for r in rows:
        print(f"| {r['metric']} | {f(r['guanaco'], '.1f')} | {f(r['llama_cpp'], '.1f')} | "
              f"{f(r['ratio'], '.3f')} | {share(r['guanaco_share'], r['guanaco_limit'])} | "
              f"{share(r['llama_cpp_share'], r['llama_cpp_limit'])} |")
    print(f"(ratio = {ours} / {peer}; limits in tok/s: prefill {a.peak_gflops:.0f} GFLOP/s "
          f"f32 FMA peak, decode {a.bw_gbs:.0f} GB/s read bandwidth; {env_note})")

    agree = None
    if g and l:
        gi, li = g.get("decode_ids", []), l["decode_ids"]
        agree = 0
        for x, y in zip(gi, li):
            if x != y:
                break
            agree += 1
        print(f"greedy ids agree for the first {agree} of {min(len(gi), len(li))} decoded tokens"
              + ("" if agree >= 1 else "  <-- ODD: engines disagree from the first token"))

    load1 = os.getloadavg()
    print(f"load average after: {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")
    os.makedirs(a.out, exist_ok=True)
    result = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": mach, "threads": a.threads,
              "model": a.model, "peer_model": peer_model, "ours": ours, "peer": peer,
              "guanaco_args": a.guanaco_args, "peer_guanaco_args": a.peer_guanaco_args,
              "prompt_tokens": N, "gen_tokens": M, "reps": a.reps,
              "env": env_note, "peak_gflops": a.peak_gflops, "bw_gbs": a.bw_gbs,
              "gguf": costs, "peer_gguf": pcosts, "guanaco": g, "llama_cpp": l, "rows": rows,
              "greedy_ids_agree": agree, "loadavg_before": load0, "loadavg_after": load1,
              "max_other_cores": noise}
    stem = "bench_inference" + (f"-{a.tag}" if a.tag else "")
    jpath = os.path.join(a.out, stem + ".json")
    with open(jpath, "w") as fh:
        json.dump(result, fh, indent=1)
    print(f"wrote {jpath}")

    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot skipped: matplotlib is not installed in this python")
        return
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.5))
    for ax, r in zip(axes, rows):
        vals = [r["guanaco"] or 0, r["llama_cpp"] or 0]
        ax.bar([ours, peer], vals, color=["tab:blue", "tab:orange"])
        ax.set_title(r["metric"] + (f"  (ratio {r['ratio']:.2f})" if r["ratio"] else ""))
        ax.set_ylabel("tokens/s")
    fig.suptitle(f"{os.path.basename(a.model)}, {a.threads} threads, {mach['cpu']}", fontsize=9)
    fig.tight_layout()
    ppath = os.path.join(a.out, stem + ".png")
    fig.savefig(ppath, dpi=100)
    print(f"wrote {ppath}")


if __name__ == "__main__":
    main()
