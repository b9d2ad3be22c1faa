#!/usr/bin/env bash
# bench/cuda_check.sh — the CUDA backend's on-GPU checks in one go, one table at the end
# (bench/out/cuda_check.md). Needs the repository, the CUDA toolkit (nvcc, cuBLAS) and a GPU;
# Python with PyTorch for the peer row (transformers + bitsandbytes: when they do not import,
# wheels in bench/wheels/*.whl are installed with pip --no-index; without them the peer row
# says "not run"). Expected time on an H100/H200: build ~1.5 min, tests ~1 min, benchmarks
# ~1.5 min, peer ~1.5 min; each step has a time limit so the whole stays under 8 minutes.
#
#   bash bench/cuda_check.sh            # full: 7B shape (32 layers), 128 decode tokens, 512-token prefill
#   bash bench/cuda_check.sh --quick    # 4 layers, short runs: checks the pipeline, not for the record
# Environment: CUDA_BUILD (build folder, default build-cuda), CUDA_CHECK_OUT (default
# bench/out/cuda_check; the table goes to $CUDA_CHECK_OUT.md), PYTHON (default python3), JOBS.
#
# Steps:
#   1. make CUDA=1 BUILD=build-cuda all
#   2. build-cuda/tests/test_cuda: every kernel against the CPU; a small model on both devices
#      (prefill, decode, batched decode, LoRA, one training sequence's gradients)
#   3. build-cuda/bench/cuda_bench: copy bandwidth, NF4 GEMV at 7B layer shapes, decode and prefill
#      of a 7B-shaped random NF4 LLaMA, one QLoRA training sequence, paged AdamW, CPU-vs-GPU gradients
#   4. bench/cuda_peer.py: transformers + bitsandbytes decode/prefill, same shape, same card
#   5. bench/cuda_table.py: the table (exit status 1 when a row with a target misses it)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${CUDA_CHECK_OUT:-bench/out/cuda_check}   # where the logs, JSON and the table go
B=${CUDA_BUILD:-build-cuda}                    # the build folder
mkdir -p "$OUT"
rm -f "$OUT"/*.json "$OUT"/*.log "$OUT"/*.rc
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 4)}
PY=${PYTHON:-python3}
T0=$(date +%s)
step() { echo "== [$(( $(date +%s) - T0 ))s] $*"; }
LAYERS=32 DECODE=128 PROMPT=512 TRAIN=512
if [ "${1:-}" = "--quick" ]; then LAYERS=4 DECODE=32 PROMPT=128 TRAIN=128; fi

step "device"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/device.txt" 2>&1 \
    || echo "nvidia-smi failed" > "$OUT/device.txt"
cat "$OUT/device.txt"

step "build: make CUDA=1 BUILD=$B -j$JOBS all (log: $OUT/build.log)"
timeout 300 make CUDA=1 BUILD="$B" -j"$JOBS" all > "$OUT/build.log" 2>&1
echo $? > "$OUT/build.rc"
if [ "$(cat "$OUT/build.rc")" != 0 ]; then
    tail -30 "$OUT/build.log"
else
    step "tests: $B/tests/test_cuda"
    timeout 180 "$B"/tests/test_cuda > "$OUT/test_cuda.log" 2>&1
    echo $? > "$OUT/test_cuda.rc"
    grep -E "^(device|ok|FAIL|SKIP|  )|passed" "$OUT/test_cuda.log" | head -60

    step "benchmarks: $B/bench/cuda_bench --layers $LAYERS --decode $DECODE --prompt $PROMPT"
    timeout 200 "$B"/bench/cuda_bench --layers "$LAYERS" --decode "$DECODE" --prompt "$PROMPT" \
        --train-tokens "$TRAIN" --json "$OUT/cuda_bench.json" > "$OUT/cuda_bench.log" 2>&1
    echo $? > "$OUT/cuda_bench.rc"
    cat "$OUT/cuda_bench.log"
fi

step "peer: transformers + bitsandbytes (bench/cuda_peer.py)"
if ! "$PY" -c "import torch, transformers, bitsandbytes" > /dev/null 2>&1; then
    if ls bench/wheels/*.whl > /dev/null 2>&1; then
        echo "installing bench/wheels/*.whl (no index)"
        "$PY" -m pip install -q --no-index --find-links bench/wheels bench/wheels/*.whl > "$OUT/pip.log" 2>&1 \
            || tail -5 "$OUT/pip.log"
    fi
fi
if "$PY" -c "import torch, transformers, bitsandbytes; assert torch.cuda.is_available()" > /dev/null 2>&1; then
    timeout 240 "$PY" bench/cuda_peer.py --layers "$LAYERS" --decode "$DECODE" --prompt "$PROMPT" \
        --json "$OUT/peer.json" > "$OUT/peer.log" 2>&1
    echo $? > "$OUT/peer.rc"
    grep RESULT "$OUT/peer.log" || tail -20 "$OUT/peer.log"
else
    echo "torch + transformers + bitsandbytes with CUDA not importable by $PY: the peer row is left out" | tee "$OUT/peer.log"
fi

step "table ($OUT.md)"
cmd="bash bench/cuda_check.sh${1:+ $1}"
"$PY" bench/cuda_table.py "$OUT" --command "$cmd" > "$OUT.md"
rc=$?
cat "$OUT.md"
step "done"
exit $rc
