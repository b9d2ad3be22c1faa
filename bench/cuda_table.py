#!/usr/bin/env python3
"""bench/cuda_table.py — the CUDA backend's table from what bench/cuda_check.sh left in OUT_DIR:
build.rc, test_cuda.log/.rc, cuda_bench.json, peer.json (optional), device.txt.

    python3 bench/cuda_table.py bench/out/cuda_check [--command "..."]

Prints a markdown table (check | target | result | met?) with the card's name, the date and
the command; RESULTS.md takes it as it is.
"""
import argparse
import datetime
import json
import pathlib
import re
import sys

GEMV_TARGET = 70.0   # % of the measured copy bandwidth
GRAD_TOL = 5e-2      # relative L2 difference of the LoRA gradients, GPU vs CPU ("bf16 tolerance")


def load_json(p):
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return {}


def read(p, default=""):
    try:
        return p.read_text().strip()
    except OSError:
        return default


def fmt(v, nd=1):
    return "n/a" if v is None else f"{v:,.{nd}f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out_dir")
    ap.add_argument("--command", default="bash bench/cuda_check.sh")
    a = ap.parse_args()
    d = pathlib.Path(a.out_dir)
    b = load_json(d / "cuda_bench.json")
    p = load_json(d / "peer.json")
    rows = []

    def row(check, target, result, met):
        rows.append((check, target, result, {True: "yes", False: "**no**", None: ""}[met]))

    build_rc = read(d / "build.rc", "?")
    row("`make CUDA=1` (sm_80 + sm_90)", "builds", "ok" if build_rc == "0" else f"failed (rc {build_rc}, build.log)",
        build_rc == "0")
    log = read(d / "test_cuda.log")
    m = re.search(r"(\d+) passed, (\d+) failed", log)
    trc = read(d / "test_cuda.rc", "?")
    if "SKIP" in log:
        row("CUDA tests (tests/test_cuda.c)", "all pass", "skipped: " + log.splitlines()[0], False)
    elif m:
        row("CUDA tests (tests/test_cuda.c)", "all pass", f"{m.group(1)} passed, {m.group(2)} failed (rc {trc})",
            m.group(2) == "0" and trc == "0")
    else:
        row("CUDA tests (tests/test_cuda.c)", "all pass", f"no summary (rc {trc}; see test_cuda.log)", False)
    bw = b.get("bandwidth_copy_gbs")
    row("device bandwidth (1 GiB device-to-device copy)", "measured", f"{fmt(bw)} GB/s (read + write)", None)
    for shape in ("4096x4096", "11008x4096", "4096x11008"):
        gbs, pct, us = b.get(f"gemv_{shape}_gbs"), b.get(f"gemv_{shape}_pct_bw"), b.get(f"gemv_{shape}_us")
        row(f"NF4 GEMV {shape.replace('x', '×')} (DQ, T 1)", f"≥ {GEMV_TARGET:.0f}% of bandwidth",
            f"{fmt(us, 2)} µs, {fmt(gbs)} GB/s = {fmt(pct)}%", None if pct is None else pct >= GEMV_TARGET)
    ours, peer = b.get("decode_tok_s"), p.get("peer_decode_tok_s")
    layers = b.get("model_layers", 32)
    shape = "7B-shaped" if layers == 32 else f"7B-shaped, {layers:.0f} layers"
    if ours is not None:
        ratio = f", {ours / peer:.1f}× transformers+bnb ({fmt(peer)} tok/s)" if peer else ", peer not run"
        row(f"decode, {shape} random LLaMA, NF4+DQ", "vs transformers + bitsandbytes, same card",
            f"{fmt(ours)} tok/s{ratio}", None if not peer else ours > peer)
        row("decode: weight bytes per token / time", "share of bandwidth",
            f"{fmt(b.get('decode_gbs'))} GB/s = {fmt(b.get('decode_pct_bw'))}%", None)
    else:
        row(f"decode, {shape} random LLaMA, NF4+DQ", "vs transformers + bitsandbytes", "not measured (cuda_bench.log)", False)
    pf, ppf = b.get("prefill_tok_s"), p.get("peer_prefill_tok_s")
    if pf is not None:
        row(f"prefill {b.get('prefill_tokens', 512):.0f} tokens", "vs transformers + bitsandbytes",
            f"{fmt(pf)} tok/s ({fmt(b.get('prefill_tflops'))} TFLOP/s)" + (f", {pf / ppf:.2f}× peer ({fmt(ppf)})" if ppf else ""),
            None)
    if b.get("train_tok_s") is not None:
        row(f"QLoRA training sequence ({b.get('train_tokens', 512):.0f} tokens, r 64, 7 modules)", "runs on the GPU",
            f"{fmt(b['train_tok_s'])} tok/s ({fmt(b.get('train_seq_s'), 2)} s; host AdamW {fmt(b.get('train_host_adamw_s'), 2)} s)",
            None)
    if b.get("adamw_paged_s") is not None:
        row(f"paged AdamW, {b.get('train_lora_params', 0) / 1e6:.0f} M parameters (state in host memory)", "runs",
            f"{fmt(b['adamw_paged_s'], 3)} s", None)
    g = b.get("gradcheck_grad_rel_l2")
    if g is not None:
        row("LoRA gradients of one training sequence, GPU vs CPU (small random model, NF4)",
            f"relative L2 ≤ {GRAD_TOL:g} (bf16 tolerance)",
            f"{g:.2e} (loss {b.get('gradcheck_loss_gpu', 0):.5f} vs {b.get('gradcheck_loss_cpu', 0):.5f})", g <= GRAD_TOL)
    else:
        row("LoRA gradients, GPU vs CPU", f"relative L2 ≤ {GRAD_TOL:g}", "not measured", False)

    device = b.get("device") or read(d / "device.txt", "unknown device")
    print(f"## CUDA backend — {device}\n")
    print(f"{datetime.date.today().isoformat()}, `{a.command}`" + (f"; peer: {p.get('peer_stack')}" if p else "; peer: not run (see peer.log)") + "\n")
    print("| check | target | result | met? |")
    print("|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    print()
    print(f"nvidia-smi: {read(d / 'device.txt', 'n/a')}. Bandwidth: a device-to-device cudaMemcpy counts its bytes read and "
          "written; the GEMV rows count packed nibbles + 8-bit scales + nested scales + x + out per call, over weight "
          "copies that exceed the L2 cache, replayed from a CUDA graph. Decode: greedy after a 32-token prompt through "
          "gn_session_forward (logits copied to the host and argmax there each token).")
    failed = [r for r in rows if r[3] == "**no**"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
