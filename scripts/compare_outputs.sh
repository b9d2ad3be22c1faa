#!/bin/bash
# scripts/compare_outputs.sh — do two builds give the same bytes on SmolLM2?
#
#   scripts/compare_outputs.sh /tmp/before/build/guanaco build/guanaco
#
# Runs, with each binary: greedy chat with f32 weights, with --4bit, and each with the
# adapter it trained; 4-step finetunes (f32, --4bit, --4bit with dropout) whose per-step
# losses and adapter file hashes are kept. Prints "same"/"DIFF" per output, exits 1 on any
# difference. Extra environment (e.g. GN_NF4_EXACT_DECODE=1) applies to both binaries.
set -u
[ $# -eq 2 ] || { echo "usage: $0 GUANACO_A GUANACO_B" >&2; exit 2; }
M=${MODEL:-$(bash "$(dirname "$0")/fetch_models.sh")}
D="$(cd "$(dirname "$0")/.." && pwd)/data/guanaco-demo.jsonl"
LONG="Summarize the following notes in two sentences. $(for i in $(seq 1 24); do printf 'Note %d: the river rises in spring, the mill turns faster, and the village trades flour for wool. ' "$i"; done)"
run() { # binary outdir
    local G=$1 O=$2
    for mode in "" "--4bit"; do
        local tag=${mode:-f32}; tag=${tag#--}
        "$G" chat -m "$M" $mode --template guanaco --temp 0 -n 64 -p "Name three colors and explain why the sky is blue." > "$O/chat_$tag.txt" 2>/dev/null
        # a prompt of a few hundred tokens: several attention row blocks in the prefill
        "$G" chat -m "$M" $mode --template guanaco --temp 0 -n 32 -p "$LONG" > "$O/chat_long_$tag.txt" 2>/dev/null
        "$G" finetune -m "$M" $mode -d "$D" -o "$O/ft_$tag" --max-steps 4 --gradient-accumulation-steps 2 --lora-r 16 \
            --lora-alpha 32 --learning-rate 1e-3 --save-steps 100 > "$O/ft_$tag.log" 2>&1
        grep -o '"step": [0-9]*, "loss": [^,]*' "$O/ft_$tag/log.jsonl" > "$O/loss_$tag.txt"
        sha256sum < "$O/ft_$tag/adapter_model.safetensors" > "$O/adapter_$tag.sha"
        "$G" chat -m "$M" $mode -a "$O/ft_$tag" --template guanaco --temp 0 -n 48 -p "What is your name?" > "$O/chat_lora_$tag.txt" 2>/dev/null
    done
    "$G" finetune -m "$M" --4bit -d "$D" -o "$O/ft_drop" --max-steps 3 --gradient-accumulation-steps 2 --lora-r 8 \
        --lora-alpha 16 --lora-dropout 0.1 --learning-rate 1e-3 --save-steps 100 > "$O/ft_drop.log" 2>&1
    sha256sum < "$O/ft_drop/adapter_model.safetensors" > "$O/adapter_drop.sha"
}
tmp=$(mktemp -d /tmp/gn-compare-XXXXXX)
mkdir -p "$tmp/a" "$tmp/b"
run "$1" "$tmp/a"
run "$2" "$tmp/b"
rc=0
for f in "$tmp"/a/*.txt "$tmp"/a/*.sha; do
    n=$(basename "$f")
    if [ -s "$f" ] && cmp -s "$f" "$tmp/b/$n"; then echo "same $n"; else echo "DIFF $n"; rc=1; fi
done
echo "outputs in $tmp"
exit $rc
