#!/usr/bin/env python3
"""bench/cuda_peer.py — the peer of bench/cuda_bench.c's decode and prefill rows.

transformers + bitsandbytes on the same card, the same 7B shape (32 layers, hidden 4096,
intermediate 11008, 32 heads, vocab 32000) with random weights: every linear layer of the
decoder in NF4 with double quantization (block 64) and bf16 compute, embedding, norms and head
in bf16 — what `load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
bnb_4bit_compute_dtype=torch.bfloat16` (QLoRA/Guanaco) gives. Nothing is downloaded.

Greedy decode with the KV cache after a 32-token prompt (the first step untimed), tokens/s;
then a --prompt-token prefill (one warm-up). Prints "RESULT key value" lines; --json FILE.

    python3 bench/cuda_peer.py [--layers 32] [--decode 128] [--prompt 512] [--json FILE]
"""
import argparse
import inspect
import json
import sys
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--decode", type=int, default=128)
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--json")
    # for a smoke test of this script without a GPU: --device cpu --hidden 256 --inter 512 --vocab 1000
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--hidden", type=int, default=4096)
    ap.add_argument("--inter", type=int, default=11008)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--vocab", type=int, default=32000)
    a = ap.parse_args()

    import torch
    import transformers
    import bitsandbytes as bnb
    from transformers import LlamaConfig, LlamaForCausalLM

    res = {}

    def result(k, v):
        res[k] = v
        print(f"RESULT {k} {v}", flush=True)

    dev = a.device
    if dev == "cuda" and not torch.cuda.is_available():
        print("SKIP: torch sees no CUDA device")
        return 0

    def sync():
        if dev == "cuda":
            sync()

    result("peer_stack", f"transformers-{transformers.__version__}+bitsandbytes-{bnb.__version__}+torch-{torch.__version__}")
    result("peer_device", torch.cuda.get_device_name(0).replace(" ", "_") if dev == "cuda" else dev)
    cfg = LlamaConfig(hidden_size=a.hidden, intermediate_size=a.inter, num_hidden_layers=a.layers,
                      num_attention_heads=a.heads, num_key_value_heads=a.heads, vocab_size=a.vocab,
                      max_position_embeddings=4096, rms_norm_eps=1e-5, tie_word_embeddings=False)
    torch.manual_seed(0)
    t0 = time.time()
    # built on the GPU in bf16 (random init there), then each decoder linear replaced by a 4-bit one
    torch.set_default_dtype(torch.bfloat16)
    with torch.device(dev):
        model = LlamaForCausalLM(cfg)
    torch.set_default_dtype(torch.float32)
    # bitsandbytes >= 0.43 quantizes a Params4bit in .to("cuda") wherever its data is; older
    # versions only from CPU data
    new_bnb = hasattr(bnb.nn.Params4bit, "_quantize")

    def four_bit(lin):
        w = lin.weight.data
        q = bnb.nn.Linear4bit(lin.in_features, lin.out_features, bias=False, compute_dtype=torch.bfloat16,
                              compress_statistics=True, quant_type="nf4", device="meta")
        q.weight = bnb.nn.Params4bit(data=w if new_bnb else w.cpu(), requires_grad=False, blocksize=64,
                                     compress_statistics=True, quant_type="nf4").to(dev)
        return q

    for layer in model.model.layers:
        for parent, names in ((layer.self_attn, ("q_proj", "k_proj", "v_proj", "o_proj")),
                              (layer.mlp, ("gate_proj", "up_proj", "down_proj"))):
            for n in names:
                setattr(parent, n, four_bit(getattr(parent, n)))
        if dev == "cuda":
            torch.cuda.empty_cache()
    model.eval()
    result("peer_build_s", round(time.time() - t0, 2))
    if dev == "cuda":
        result("peer_gpu_mem_gib", round(torch.cuda.memory_allocated() / 2**30, 2))

    # transformers >= 5.x names the KV cache argument `cache` (past_key_values is deprecated there)
    cache_kw = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

    def step(inp, cache):
        o = model(input_ids=inp, use_cache=True, **({cache_kw: cache} if cache is not None else {}))
        c = getattr(o, "cache", None) if cache_kw == "cache" else None
        return (c if c is not None else o.past_key_values), o.logits[:, -1:].argmax(-1)

    V = cfg.vocab_size
    n0 = max(32, a.prompt)
    ids = torch.tensor([[(i * 7919 + 13) % V for i in range(n0)]], device=dev)
    with torch.no_grad():
        past, nxt = step(ids[:, :32], None)
        past, nxt = step(nxt, past)  # untimed first step
        sync()
        t0 = time.perf_counter()
        for _ in range(a.decode):
            past, nxt = step(nxt, past)
        sync()
        dt = time.perf_counter() - t0
        result("peer_decode_tok_s", round(a.decode / dt, 3))
        result("peer_decode_ms_per_token", round(1e3 * dt / a.decode, 3))
        del past
        model(input_ids=ids[:, :a.prompt], use_cache=False)  # warm-up
        sync()
        t0 = time.perf_counter()
        model(input_ids=ids[:, :a.prompt], use_cache=False)
        sync()
        dt = time.perf_counter() - t0
        result("peer_prefill_tok_s", round(a.prompt / dt, 3))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
