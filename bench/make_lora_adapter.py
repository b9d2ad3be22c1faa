#!/usr/bin/env python3
"""make_lora_adapter.py — writes a PEFT-format LoRA adapter with random weights, for benchmarks.

    ~/.cache/guanaco/venv/bin/python bench/make_lora_adapter.py -o /tmp/smol-lora-r64
    build/bench/bench_generate -m SmolLM2-135M-Instruct.Q4_1.gguf --4bit -a /tmp/smol-lora-r64

The folder holds adapter_config.json ({"peft_type": "LORA", "r", "lora_alpha",
"target_modules"}) and adapter_model.safetensors with, for every layer L and module m,
  base_model.model.model.layers.{L}.self_attn.{q,k,v,o}_proj.lora_{A,B}.weight
  base_model.model.model.layers.{L}.mlp.{gate,up,down}_proj.lora_{A,B}.weight
A [r, in], B [out, r], small random values (N(0, 0.02), fixed seed): B is not zero, so the
adapter changes the output, but the cost of applying it does not depend on values. --dtype
bf16 stores them as bf16 (rounded to nearest even), as qlora.py's --bf16 runs save their
adapters (the Guanaco adapters); f32 (the default) as PEFT saves an f32 run's.

The shapes default to SmolLM2-135M (hidden 576, 9 heads x 64, 3 kv heads x 64,
intermediate 1536, 30 layers); with -m GGUF they are read from the model file.
Standard library + numpy + safetensors (the venv's).
"""
import argparse
import json
import os

import numpy as np
from safetensors.numpy import save_file

MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def shapes_from_gguf(path):
    from gguf import GGUFReader

    r = GGUFReader(path)

    def field(key):
        f = r.fields[key]
        return int(f.parts[f.data[0]][0])

    arch = bytes(r.fields["general.architecture"].parts[-1]).decode()
    C, NH = field(f"{arch}.embedding_length"), field(f"{arch}.attention.head_count")
    NKV = field(f"{arch}.attention.head_count_kv")
    hs = field(f"{arch}.attention.key_length") if f"{arch}.attention.key_length" in r.fields else C // NH
    return {"L": field(f"{arch}.block_count"), "C": C, "H": field(f"{arch}.feed_forward_length"),
            "q": NH * hs, "kv": NKV * hs}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-o", "--out", required=True, help="adapter folder to write")
    ap.add_argument("-m", "--model", help="GGUF to take the shapes from (default: SmolLM2-135M)")
    ap.add_argument("-r", "--rank", type=int, default=64)
    ap.add_argument("--alpha", type=float, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", choices=("f32", "bf16"), default="f32")
    a = ap.parse_args()

    d = shapes_from_gguf(a.model) if a.model else {"L": 30, "C": 576, "H": 1536, "q": 576, "kv": 192}
    C, H = d["C"], d["H"]
    in_out = {"q_proj": (C, d["q"]), "k_proj": (C, d["kv"]), "v_proj": (C, d["kv"]),
              "o_proj": (d["q"], C), "gate_proj": (C, H), "up_proj": (C, H), "down_proj": (H, C)}
    rng = np.random.default_rng(a.seed)
    tensors, n = {}, 0
    for L in range(d["L"]):
        for m in MODULES:
            fin, fout = in_out[m]
            blk = "self_attn" if m in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp"
            key = f"base_model.model.model.layers.{L}.{blk}.{m}"
            tensors[key + ".lora_A.weight"] = (0.02 * rng.standard_normal((a.rank, fin))).astype(np.float32)
            tensors[key + ".lora_B.weight"] = (0.02 * rng.standard_normal((fout, a.rank))).astype(np.float32)
            n += a.rank * (fin + fout)
    os.makedirs(a.out, exist_ok=True)
    if a.dtype == "bf16":  # numpy has no bf16: write through torch (the venv's)
        import torch
        from safetensors.torch import save_file as save_torch

        save_torch({k: torch.from_numpy(v).to(torch.bfloat16) for k, v in tensors.items()},
                   os.path.join(a.out, "adapter_model.safetensors"), metadata={"format": "pt"})
    else:
        save_file(tensors, os.path.join(a.out, "adapter_model.safetensors"), metadata={"format": "pt"})
    cfg = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": a.rank, "lora_alpha": a.alpha,
           "lora_dropout": 0.0, "bias": "none", "target_modules": list(MODULES)}
    with open(os.path.join(a.out, "adapter_config.json"), "w") as fh:
        json.dump(cfg, fh, indent=1)
    print(f"wrote {a.out}: r={a.rank}, alpha={a.alpha:g}, {len(MODULES)} modules x {d['L']} layers, "
          f"{n / 1e6:.2f}M params ({(2 if a.dtype == 'bf16' else 4) * n / 1e6:.1f} MB {a.dtype})")


if __name__ == "__main__":
    main()
