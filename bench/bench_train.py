#!/usr/bin/env python3
"""bench_train.py — QLoRA training tokens/s and peak RSS: guanaco finetune vs PyTorch + PEFT +
bitsandbytes on the CPU, same model, same sequences, one run.

    make -j2                                    # build/guanaco
    ~/.cache/guanaco/venv/bin/python bench/bench_train.py --wait-quiet 600   # accumulation 16, 3 steps
    ~/.cache/guanaco/venv/bin/python bench/bench_train.py --grad-accum 4     # shorter: 4 sequences a step

Setup (both sides): SmolLM2-135M from the GGUF, linear layers NF4 with double quantization
(bf16 compute), LoRA r 64, alpha 16, dropout 0 on all seven modules (q,k,v,o,gate,up,down),
AdamW (lr 2e-4 constant, beta2 0.999, weight decay 0), grad-norm clip 0.3, gradient
checkpointing, batch 1 x --grad-accum sequences per optimizer step, --steps steps.

  ours: `guanaco finetune -m GGUF --4bit -d DATA -o RUN --max-steps S --gradient-accumulation-steps G
         --lora-r 64 --lora-alpha 16 --source-max-len 16 --target-max-len 512 --dataset-format oasst1
         --save-steps 0 --no-shuffle --no-group-by-length -t T`
  peer: transformers loads the GGUF (AutoModelForCausalLM.from_pretrained(dir, gguf_file=...),
        dequantized to f32) and saves a plain HF copy once (--work/smol-hf); a worker process
        then loads that copy with BitsAndBytesConfig(load_in_4bit, nf4, double quant, compute
        bf16), prepare_model_for_kbit_training (gradient checkpointing), get_peft_model(LoraConfig
        (r=64, lora_alpha=16, the 7 modules)), torch.optim.AdamW, torch threads = T.

Sequences: rows of --data (openassistant_best_replies_eval.jsonl) that fill the 512-token
target (BOS + 512 text tokens = 513 ids, loss on the 512), taken in file order and written to
--work/data.jsonl; ours reads that file. The peer gets the very ids and labels ours trains on,
from `guanaco data-dump` (the trainer's own tokenization with the GGUF's vocab); the first row
is cross-checked against `guanaco tokenize`. Both sides count 513 tokens per sequence.

Figures: tokens/s over the steps after the first (step 1 is a warm-up on both sides: lazy
allocation, optimizer state); with --steps 1, over that step. Ours: wall clock between the
"step k/S" lines `guanaco finetune` prints (read as they come); log.jsonl's cumulative
tokens_per_s is printed too. Peer: time.perf_counter around each optimizer step. Peak RSS:
ru_maxrss of each training process (os.wait4), load and data included; the peer's GGUF export
runs in its own process beforehand and is not counted.

Limit ("share"): training FLOPs ~ 6 x base params per token (forward 2, backward 4; the extra
forward of gradient checkpointing, the LoRA products and attention are left out), at the 515
GFLOP/s f32 FMA peak of the 2 cores: 6 x 134.5M x tok/s / 515e9 (limit 638 tok/s).

Noise: like bench_inference.py, CPU time other processes took during each side is measured
(/proc/stat minus our children) and printed; --wait-quiet S waits for a quiet machine before
each side and retries (twice at most) a disturbed one.

OpenBLAS: our machines set OPENBLAS_CORETYPE=Haswell (halves OpenBLAS speed on these cores)
and OPENBLAS_L2_SIZE; the script re-executes itself with both unset, so neither side sees
them, and says so.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchenv import DEFAULT_DATA, DEFAULT_MODEL, HERE, MARK, ROOT, open_text  # noqa: E402  (re-executes first)
MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
SOURCE_MAX, TARGET_MAX = 16, 512

sys.path.insert(0, HERE)
from bench_inference import gguf_costs, machine, measure  # noqa: E402


# ---------------------------------------------------------------------------
# peer processes (run as `bench_train.py --peer-export ...` / `--peer-worker ...`)


def peer_export(gguf, out_dir):
    """GGUF -> plain HF folder (f32), through transformers' GGUF loader."""
    import torch
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(os.path.dirname(gguf), gguf_file=os.path.basename(gguf),
                                             dtype=torch.float32)
    # transformers keeps the GGUF "quantizer" on the model and refuses to save it; the weights
    # are plain f32 tensors by now, so drop it and save a plain copy.
    m.hf_quantizer = None
    if hasattr(m.config, "quantization_config"):
        del m.config.quantization_config
    m.save_pretrained(out_dir, safe_serialization=True)
    print(f"peer: wrote {out_dir}")


def peer_worker(a):
    """QLoRA steps with transformers + bitsandbytes + PEFT; prints one JSON line."""
    import resource

    import torch

    torch.set_num_threads(a.threads)
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    t0 = time.perf_counter()
    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                           bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.bfloat16)
    m = AutoModelForCausalLM.from_pretrained(a.hf, quantization_config=q, device_map="cpu",
                                             dtype=getattr(torch, a.peer_dtype))
    lin = type(m.model.layers[0].self_attn.q_proj).__module__ + "." + type(m.model.layers[0].self_attn.q_proj).__name__
    m = prepare_model_for_kbit_training(m, use_gradient_checkpointing=True,
                                        gradient_checkpointing_kwargs={"use_reentrant": True})
    m = get_peft_model(m, LoraConfig(r=64, lora_alpha=16, lora_dropout=0.0, bias="none",
                                     target_modules=MODULES, task_type="CAUSAL_LM"))
    params = [p for p in m.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=2e-4, betas=(0.9, 0.999), weight_decay=0.0)
    with open(a.ids) as fh:
        rows = [json.loads(line) for line in fh]
    load_s = time.perf_counter() - t0
    m.train()
    steps, k = [], 0
    for s in range(a.steps):
        t = time.perf_counter()
        loss_sum, ntok, first = 0.0, 0, None
        for _ in range(a.grad_accum):
            r = rows[k % len(rows)]
            k += 1
            ids = torch.tensor([r["ids"]])
            labels = torch.tensor([r["labels"]])
            out = m(input_ids=ids, labels=labels)  # mean over the labelled tokens
            (out.loss / a.grad_accum).backward()
            loss_sum += out.loss.item() / a.grad_accum
            first = out.loss.item() if first is None else first
            ntok += len(r["ids"])
        gn = torch.nn.utils.clip_grad_norm_(params, 0.3)
        opt.step()
        opt.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t
        steps.append({"step": s + 1, "tokens": ntok, "seconds": dt, "loss": loss_sum,
                      "grad_norm": float(gn), "first_loss": first})
        print(f"peer step {s + 1}/{a.steps}  loss {loss_sum:.4f}  grad_norm {float(gn):.3f}  "
              f"{ntok / dt:.1f} tok/s", file=sys.stderr, flush=True)
    import bitsandbytes
    import peft
    import transformers
    print(json.dumps({"steps": steps, "load_s": load_s, "linear": lin,
                      "trainable": sum(p.numel() for p in params),
                      "maxrss_self_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                      "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                                   "peft": peft.__version__, "bitsandbytes": bitsandbytes.__version__},
                      "torch_threads": torch.get_num_threads()}))


# ---------------------------------------------------------------------------
# the driver


def run_child(cmd, env=None, on_line=None):
    """Runs cmd, stdout+stderr merged and read line by line (on_line(line, t) for each);
    returns (returncode, lines, peak RSS MB of that process from wait4)."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines = []
    for line in p.stdout:
        t = time.monotonic()
        line = line.rstrip("\n")
        lines.append(line)
        if on_line:
            on_line(line, t)
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    return p.returncode, lines, ru.ru_maxrss / 1024.0


def prepare_data(a):
    """Selects rows filling the target and writes work/data.jsonl; returns the ids/labels file."""
    dump = [a.guanaco, "data-dump", "-m", a.model, "--dataset-format", "oasst1",
            "--source-max-len", str(SOURCE_MAX), "--target-max-len", str(TARGET_MAX)]
    need = a.grad_accum * a.steps
    out = subprocess.run(dump + ["-d", a.data], capture_output=True, text=True, check=True).stdout
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    full = [r for r in rows if sum(x != -100 for x in r["labels"]) >= TARGET_MAX]
    with open_text(a.data) as fh:
        lines = fh.read().splitlines()
    if len(full) < need:
        sys.exit(f"{a.data}: only {len(full)} rows fill {TARGET_MAX} target tokens, need {need}")
    data = os.path.join(a.work, "data.jsonl")
    with open(data, "w") as fh:
        for r in full[:need]:
            fh.write(lines[r["line"] - 1] + "\n")
    # The ids ours trains on, for the peer: data-dump of that very file.
    out = subprocess.run(dump + ["-d", data], capture_output=True, text=True, check=True).stdout
    sel = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert len(sel) == need and all(len(r["ids"]) == len(sel[0]["ids"]) for r in sel), "uneven rows"
    ids_path = os.path.join(a.work, "ids.jsonl")
    with open(ids_path, "w") as fh:
        for r in sel:
            fh.write(json.dumps({"ids": r["ids"], "labels": r["labels"]}) + "\n")
    # Cross-check with `guanaco tokenize` (BOS + the row's text, cut to the sequence).
    text = json.loads(lines[full[0]["line"] - 1])["text"]
    tfile = os.path.join(a.work, "row0.txt")
    with open(tfile, "w") as fh:
        fh.write(text)
    tok = subprocess.run([a.guanaco, "tokenize", "-m", a.model, "-f", tfile], capture_output=True,
                         text=True, check=True).stdout.split()
    n, ids0 = len(sel[0]["ids"]), sel[0]["ids"]
    tok = [int(x) for x in tok]
    if tok[:1] != ids0[:1]:  # the trainer's source is the BOS string; `tokenize` adds BOS only
        tok = ids0[:1] + tok  # when the tokenizer does (SmolLM2's does not)
    same = tok[:n] == ids0
    print(f"data: {need} of {len(full)} rows of {os.path.basename(a.data)} that fill {TARGET_MAX} "
          f"target tokens ({len(rows)} rows); {n} ids per sequence (BOS + {n - 1}), loss on "
          f"{sum(x != -100 for x in sel[0]['labels'])}; `guanaco tokenize` of row 1 "
          + ("matches" if same else "DIFFERS from") + " the trainer's ids", flush=True)
    return data, ids_path, n


def ours_rep(a, data, r, verbose):
    run = os.path.join(a.work, f"run-{r}")
    shutil.rmtree(run, ignore_errors=True)  # finetune will not overwrite a checkpoint
    cmd = [a.guanaco, "finetune", "-m", a.model] + ([a.ours_4bit] if a.ours_4bit else []) + ["-d", data, "-o", run,
           "--max-steps", str(a.steps), "--gradient-accumulation-steps", str(a.grad_accum),
           "--per-device-batch-size", "1", "--lora-r", "64", "--lora-alpha", "16",
           "--source-max-len", str(SOURCE_MAX), "--target-max-len", str(TARGET_MAX),
           "--dataset-format", "oasst1", "--save-steps", "0", "--no-shuffle",
           "--no-group-by-length", "-t", str(a.threads)]
    if verbose:
        print("$ " + " ".join(cmd), flush=True)
    t_start = time.monotonic()
    stamps = {}

    def on_line(line, t):
        if line.startswith("step "):
            stamps[int(line.split()[1].split("/")[0])] = t
        elif "finetune: " in line and " train rows" in line:  # loaded: step 1 starts (load not timed)
            stamps[0] = t
        if verbose or line.startswith("step "):
            print("  | " + line, flush=True)

    rc, lines, rss = run_child(cmd, on_line=on_line)
    if rc != 0 or a.steps not in stamps:
        print(f"guanaco finetune failed (exit {rc}):\n" + "\n".join(lines[-20:]))
        return None
    with open(os.path.join(run, "log.jsonl")) as fh:
        log = [json.loads(line) for line in fh if '"tokens_per_s"' in line]
    return {"stamps": stamps, "t_start": t_start, "log": log, "rss_mb": rss,
            "first_loss": log[0]["loss"] if log else None}


def peer_rep(a, ids_path, verbose):
    cmd = [sys.executable, os.path.abspath(__file__), "--peer-worker", "--hf", a.hf, "--ids", ids_path,
           "--grad-accum", str(a.grad_accum), "--steps", str(a.steps), "-t", str(a.threads),
           "--peer-dtype", a.peer_dtype]
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), TOKENIZERS_PARALLELISM="false")
    if verbose:
        print("$ " + " ".join(cmd), flush=True)
    res = {}

    def on_line(line, t):
        if line.startswith("{"):
            res.update(json.loads(line))
        elif line.startswith("peer step") or (verbose and not line.startswith(("Loading", "  warn"))):
            print("  | " + line, flush=True)

    rc, lines, rss = run_child(cmd, env=env, on_line=on_line)
    if rc != 0 or not res:
        print(f"peer failed (exit {rc}):\n" + "\n".join(lines[-30:]))
        return None
    res["rss_mb"] = rss
    return res


def rates(per_step_s, tokens_per_step):
    """tok/s over the steps after the first (all steps when there is one)."""
    timed = per_step_s[1:] if len(per_step_s) > 1 else per_step_s
    return tokens_per_step * len(timed) / sum(timed)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--peer-export", nargs=2, metavar=("GGUF", "DIR"), help=argparse.SUPPRESS)
    ap.add_argument("--peer-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--ids", help=argparse.SUPPRESS)
    ap.add_argument("-m", "--model", default=DEFAULT_MODEL)
    ap.add_argument("-t", "--threads", type=int, default=os.cpu_count())
    ap.add_argument("--grad-accum", type=int, default=16,
                    help="sequences per optimizer step (QLoRA's 16; 4 for a shorter run)")
    ap.add_argument("--steps", type=int, default=3, help="optimizer steps; the first is a warm-up")
    ap.add_argument("--reps", type=int, default=1, help="interleaved repetitions (median reported)")
    ap.add_argument("--also-threads", type=int, default=0, metavar="N",
                    help="each repetition also runs ours with N threads, interleaved with the rest "
                         "(the thread-scaling figure without minutes of drift between two runs)")
    ap.add_argument("--costs-gguf", default=None, metavar="GGUF",
                    help="the parameter count from this GGUF (default -m; for an HF folder -m, e.g. the "
                         "1.1B / 7B rows: the Q4_0 file of the same shapes)")
    ap.add_argument("--peer-dtype", default="float32", choices=("float32", "bfloat16", "float16"),
                    help="dtype the peer loads the modules bitsandbytes leaves unquantized in (embedding, "
                         "norms, head; default float32, as the SmolLM2 row's f32 copy)")
    ap.add_argument("--ours-4bit", default="--4bit", metavar="FLAG",
                    help="the 4-bit flag ours gets (\"\" for an already quantized folder)")
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--work", default="/tmp/guanaco-bench-train", help="data, runs, the peer's HF copy")
    ap.add_argument("--hf", default=None, help="the peer's plain HF copy (default WORK/smol-hf)")
    ap.add_argument("--guanaco", default=os.path.join(ROOT, "build", "guanaco"))
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "out"))
    ap.add_argument("--peak-gflops", type=float, default=515.0)
    ap.add_argument("--skip-guanaco", action="store_true")
    ap.add_argument("--skip-peer", action="store_true")
    ap.add_argument("--wait-quiet", type=float, default=0, metavar="S",
                    help="before each side wait up to S seconds until other processes use < 0.2 "
                         "cores, and retry a side they disturbed (twice at most)")
    a = ap.parse_args()
    a.hf = a.hf or os.path.join(a.work, "smol-hf")
    if a.peer_export:
        return peer_export(*a.peer_export)
    if a.peer_worker:
        return peer_worker(a)

    import statistics

    unset = os.environ.get(MARK) == "1"
    env_note = ("OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset for this run (were set)" if unset
                else "OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE not set")
    mach = machine()
    print(f"machine: {mach['cpu']}, {mach['cores']} cores; threads {a.threads}")
    print(f"env: {env_note}")
    load0 = os.getloadavg()
    print(f"load average before: {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}")
    costs = gguf_costs(a.costs_gguf or a.model, TARGET_MAX)
    params = costs["params"]
    limit = a.peak_gflops * 1e9 / (6.0 * params)
    print(f"model: {a.model} ({params / 1e6:.1f}M params); NF4 + double quant, LoRA r 64 alpha 16 on "
          f"{len(MODULES)} modules; batch 1 x accumulation {a.grad_accum}, {a.steps} steps"
          + (" (step 1 = warm-up)" if a.steps > 1 else ""))
    print(f"limit: 6 x {params / 1e6:.1f}M x tok/s at {a.peak_gflops:.0f} GFLOP/s = {limit:.0f} tok/s",
          flush=True)
    os.makedirs(a.work, exist_ok=True)
    data, ids_path, seq = prepare_data(a)
    tokens_step = seq * a.grad_accum

    run_p = not a.skip_peer
    if run_p and not os.path.exists(os.path.join(a.hf, "config.json")):
        cmd = [sys.executable, os.path.abspath(__file__), "--peer-export", a.model, a.hf]
        print("$ " + " ".join(cmd) + "   (plain HF copy for the peer, once)", flush=True)
        rc, lines, _ = run_child(cmd)
        if rc != 0:
            sys.exit("peer export failed:\n" + "\n".join(lines[-20:]))

    greps, preps, areps = [], [], []
    a_alt = argparse.Namespace(**vars(a))
    a_alt.threads = a.also_threads
    run_alt = a.also_threads > 0 and not a.skip_guanaco
    for r in range(a.reps):  # interleaved: ours rep r, then the peer's (then ours with --also-threads)
        g = measure(lambda: ours_rep(a, data, r, verbose=(r == 0)), a) if not a.skip_guanaco else None
        if g:
            st = [g["stamps"][k] - g["stamps"].get(k - 1, g["t_start"]) for k in range(1, a.steps + 1)]
            g["load_s"] = g["stamps"][0] - g["t_start"] if 0 in g["stamps"] else None
            g["step_s"] = st
            g["tps"] = rates(st, tokens_step)
        p = measure(lambda: peer_rep(a, ids_path, verbose=(r == 0)), a) if run_p else None
        if p:
            p["step_s"] = [s["seconds"] for s in p["steps"]]
            p["tps"] = rates(p["step_s"], tokens_step)
            p["first_loss"] = p["steps"][0]["first_loss"]
        q = measure(lambda: ours_rep(a_alt, data, r, verbose=False), a) if run_alt else None
        if q:
            st = [q["stamps"][k] - q["stamps"].get(k - 1, q["t_start"]) for k in range(1, a.steps + 1)]
            q["load_s"] = q["stamps"][0] - q["t_start"] if 0 in q["stamps"] else None
            q["step_s"] = st
            q["tps"] = rates(st, tokens_step)
        greps.append(g)
        preps.append(p)
        areps.append(q)
        line = f"rep {r}:"
        for name, x in (("guanaco", g), ("peer", p), (f"guanaco -t {a.also_threads}", q)):
            if x:
                line += (f"  {name} {x['tps']:.1f} tok/s, peak RSS {x['rss_mb']:.0f} MB (others "
                         f"{x['noise']['other_cores'] + x['noise']['steal_cores']:.2f} cores)")
        print(line, flush=True)

    def med(reps, k):
        v = [x[k] for x in reps if x]
        return statistics.median(v) if v else None

    g_tps, p_tps, a_tps = med(greps, "tps"), med(preps, "tps"), med(areps, "tps")
    if run_alt and g_tps and a_tps:
        print(f"threads: guanaco {g_tps:.1f} tok/s with {a.threads}, {a_tps:.1f} with {a.also_threads}: "
              f"{g_tps / a_tps:.2f}x (medians of {a.reps} interleaved repetitions)")
    g_rss, p_rss = med(greps, "rss_mb"), med(preps, "rss_mb")
    noise = max([x["noise"]["other_cores"] + x["noise"]["steal_cores"] for x in greps + preps if x],
                default=0.0)
    if noise > 0.2:
        print(f"WARNING: other work took up to {noise:.2f} cores during a side; figures are noisy, "
              "rerun (--wait-quiet 600 waits for a quiet machine)")
    gl = next((x for x in greps if x), None)
    pl = next((x for x in preps if x), None)
    if gl and gl["log"]:
        print(f"guanaco log.jsonl: cumulative tokens_per_s {[s['tokens_per_s'] for s in gl['log']]} "
              "(from the end of loading, step 1 included)")
    if gl and pl:
        print(f"step 1 mean loss (LoRA B = 0 until the first update, so the 4-bit base's loss on the "
              f"same ids: should be close): guanaco {gl['first_loss']:.4f}, peer "
              f"{pl['steps'][0]['loss']:.4f}")
    if pl:
        print(f"peer: {pl['linear']}, {pl['trainable'] / 1e6:.2f}M trainable, torch threads "
              f"{pl['torch_threads']}, load {pl['load_s']:.1f} s, {pl['versions']}")

    def f(x, spec):
        return format(x, spec) if x is not None else "n/a"

    timed = f"steps 2..{a.steps}" if a.steps > 1 else "step 1"
    rows = [(f"train tok/s (seq {seq}, 1 x {a.grad_accum}, {timed})", g_tps, p_tps, True),
            ("peak RSS MB", g_rss, p_rss, False)]
    peer = "PyTorch+PEFT+bnb"
    print()
    hdr = ("metric", "guanaco", peer, "ratio", "guanaco % limit", f"{peer} % limit")
    print("| " + " | ".join(hdr) + " |")
    print("|" + "---|" * len(hdr))
    for name, gv, pv, is_rate in rows:
        ratio = gv / pv if gv and pv else None
        gs = f"{100 * gv / limit:.1f}% of {limit:.0f}" if is_rate and gv else "—"
        ps = f"{100 * pv / limit:.1f}% of {limit:.0f}" if is_rate and pv else "—"
        print(f"| {name} | {f(gv, '.1f')} | {f(pv, '.1f')} | {f(ratio, '.3f')} | {gs} | {ps} |")
    print(f"(ratio = guanaco / {peer}; for RSS below 1 = guanaco uses less; limit = {a.peak_gflops:.0f} "
          f"GFLOP/s / (6 x {params / 1e6:.1f}M FLOPs per token); {env_note})")
    load1 = os.getloadavg()
    print(f"load average after: {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")

    os.makedirs(a.out, exist_ok=True)
    for x in greps + areps:
        if x:
            x.pop("stamps", None)
    result = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": mach, "threads": a.threads,
              "model": a.model, "params": params, "seq_tokens": seq, "grad_accum": a.grad_accum,
              "steps": a.steps, "reps": a.reps, "env": env_note, "peak_gflops": a.peak_gflops,
              "limit_tps": limit, "guanaco": greps, "peer": preps,
              "guanaco_tps": g_tps, "peer_tps": p_tps, "guanaco_rss_mb": g_rss, "peer_rss_mb": p_rss,
              "also_threads": a.also_threads, "guanaco_alt": areps, "guanaco_alt_tps": a_tps,
              "max_other_cores": noise, "loadavg_before": load0, "loadavg_after": load1}
    jpath = os.path.join(a.out, "bench_train.json")
    with open(jpath, "w") as fh:
        json.dump(result, fh, indent=1)
    print(f"wrote {jpath}")


if __name__ == "__main__":
    main()
