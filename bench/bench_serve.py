#!/usr/bin/env python3
"""bench_serve.py — aggregate generation throughput of `guanaco serve` with 1, 4 and 16
concurrent streaming clients (continuous batching should raise it with concurrency).

    python3 bench/bench_serve.py [--guanaco build/guanaco] [--model SmolLM2.gguf]
                                 [--streams 1,4,16] [--tokens 64] [--requests 2] [--reps 3] [--url URL]

Starts the server on a free loopback port (or uses --url), warms it up, then for each
concurrency C runs C threads; each sends --requests streaming /v1/completions requests one
after another (greedy, --tokens new tokens; the prompts are counting sequences so the model
never stops early). Prints one line per C: wall time, aggregate tokens/s (all generated
tokens / wall time), median time to first token and the median per-stream decode rate
(tokens after the first / time after the first); the levels are run --reps times,
interleaved, and a Markdown table gives the medians (and the best aggregate).

Standard library only; traffic goes to 127.0.0.1 only.
"""
import argparse
import http.client
import json
import os
import pathlib
import platform
import re
import signal
import statistics
import subprocess
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent


def stream_request(port, prompt, tokens):
    """One streaming completion; returns (n_tokens, t_total, t_first)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    body = {"prompt": prompt, "max_tokens": tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    t0 = time.perf_counter()
    c.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
    r = c.getresponse()
    if r.status != 200:
        raise RuntimeError(f"HTTP {r.status}: {r.read()[:200]!r}")
    t_first, n = None, 0
    for raw in r:
        line = raw.decode().strip()
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            break
        j = json.loads(data)
        if j.get("usage"):
            n = j["usage"]["completion_tokens"]
        elif j["choices"] and j["choices"][0]["text"] and t_first is None:
            t_first = time.perf_counter() - t0
    c.close()
    return n, time.perf_counter() - t0, t_first or 0.0


def run(port, streams, tokens, requests):
    results, errors = [], []
    lock = threading.Lock()

    def worker(k):
        for i in range(requests):
            a = 1 + 7 * k + 101 * i
            try:
                res = stream_request(port, f"{a}, {a + 1}, {a + 2}, {a + 3},", tokens)
                with lock:
                    results.append(res)
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(repr(e))

    t0 = time.perf_counter()
    ts = [threading.Thread(target=worker, args=(k,)) for k in range(streams)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    wall = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"{len(errors)} requests failed: {errors[:2]}")
    total = sum(n for n, _, _ in results)
    ttft = statistics.median(f for _, _, f in results)
    decode = statistics.median((n - 1) / (t - f) for n, t, f in results if n > 1 and t > f)
    return {"streams": streams, "requests": len(results), "tokens": total, "wall": wall,
            "agg": total / wall, "ttft": ttft, "per_stream": decode}


def cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--guanaco", default=str(ROOT / "build" / "guanaco"))
    ap.add_argument("--model", default=str(pathlib.Path.home() / ".cache/guanaco/models/SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--streams", default="1,4,16")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--requests", type=int, default=2, help="requests per stream")
    ap.add_argument("--reps", type=int, default=3, help="repeats of each level (median reported)")
    ap.add_argument("--threads", type=int, default=0, help="server kernel threads (0: all cores)")
    ap.add_argument("--url", help="use a running server instead (http://127.0.0.1:PORT)")
    a = ap.parse_args()
    levels = [int(x) for x in a.streams.split(",")]
    proc = None
    if a.url:
        port = int(re.search(r":(\d+)", a.url).group(1))
    else:
        cmd = [a.guanaco, "serve", "-m", a.model, "--port", "0", "--parallel", str(max(levels)), "--ctx", "512"]
        if a.threads:
            cmd += ["-t", str(a.threads)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        line = proc.stdout.readline().decode()
        m = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        if not m:
            proc.kill()
            raise SystemExit(f"server did not start: {line!r}")
        port = int(m.group(1))
    try:
        stream_request(port, "1, 2, 3,", 8)  # warm-up
        print(f"# guanaco serve, {pathlib.Path(a.model).name}, {a.tokens} new tokens per request, "
              f"{a.requests} requests per stream; {cpu_name()}, {os.cpu_count()} cores")
        runs = {s: [] for s in levels}
        for rep in range(a.reps):  # levels interleaved, so a burst of outside load hits all alike
            for s in levels:
                r = run(port, s, a.tokens, a.requests)
                runs[s].append(r)
                print(f"rep {rep + 1} streams {s:3d}: {r['tokens']:5d} tokens in {r['wall']:6.2f} s = "
                      f"{r['agg']:7.1f} tok/s aggregate, median TTFT {r['ttft'] * 1e3:6.0f} ms, "
                      f"median per-stream decode {r['per_stream']:6.1f} tok/s", flush=True)
        med = lambda xs: statistics.median(xs)  # noqa: E731
        base = med([r["agg"] for r in runs[levels[0]]])
        print(f"\nmedian of {a.reps} runs (best in brackets)\n")
        print("| concurrent streams | aggregate tok/s | per-stream decode tok/s | median TTFT ms | vs 1 stream |")
        print("|---:|---:|---:|---:|---:|")
        for s in levels:
            agg = [r["agg"] for r in runs[s]]
            print(f"| {s} | {med(agg):.1f} ({max(agg):.1f}) | {med([r['per_stream'] for r in runs[s]]):.1f} | "
                  f"{med([r['ttft'] for r in runs[s]]) * 1e3:.0f} | {med(agg) / base:.2f}x |")
    finally:
        if proc:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
