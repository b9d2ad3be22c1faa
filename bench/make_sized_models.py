#!/usr/bin/env python3
"""make_sized_models.py — random LLaMA-shaped models at 1.1B and 7B sizes for the bench rows.

    ~/.cache/guanaco/venv/bin/python bench/make_sized_models.py 1.1b        # TinyLlama-1.1B shapes
    ~/.cache/guanaco/venv/bin/python bench/make_sized_models.py 7b          # LLaMA-7B shapes
    ~/.cache/guanaco/venv/bin/python bench/make_sized_models.py 1.1b --what hf,q4_0,nf4

Writes into the bench cache (--bench-dir, default ~/.cache/guanaco/bench), never the repo:

  llama-SIZE-f16/        HF folder: config.json (LlamaForCausalLM, float16), the LLaMA
                         tokenizer.model (+ tokenizer_config.json), sharded safetensors
                         (model-0000k-of-0000n.safetensors, 2 GB shards) and
                         model.safetensors.index.json
  llama-SIZE-q4_0.gguf   the same weights for llama.cpp: an f16 GGUF (q and k rows permuted
                         as llama.cpp's convert_hf_to_gguf.py does, the tokenizer from the
                         same tokenizer.model) quantized by llama.cpp's own quantizer
                         (llama_model_quantize, LLAMA_FTYPE_MOSTLY_Q4_0); the f16 GGUF is
                         deleted afterwards (13.5 GB at 7B)
  llama-SIZE-nf4/        `guanaco quantize -m llama-SIZE-f16 -o llama-SIZE-nf4` (NF4, double
                         quantization, block 64): what the decode, prefill and training rows load

Shapes: 1.1b = hidden 2048, intermediate 5632, 22 layers, 32 heads, 4 KV heads, vocab 32000
(TinyLlama-1.1B); 7b = 4096, 11008, 32 layers, 32 heads, 32 KV heads, vocab 32000 (LLaMA-7B).
Untied head (lm_head.weight), RMSNorm eps 1e-5 / 1e-6, rope theta 10000.

Weights: numpy's default_rng([seed, tensor index]).standard_normal (float32) x 0.02, stored
f16; norm weights 1. Each tensor is generated and written in 16 M-element pieces, so memory
stays at a few hundred MB while 13.5 GB (7B) are written. A step is skipped when its output
exists (delete it to remake it; --force remakes all).

OpenBLAS: `guanaco quantize` loads OpenBLAS, so OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are
removed from the environment first (benchenv re-executes the script without them).
"""
import argparse
import ctypes
import json
import os
import shutil
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchenv import CACHE, ROOT, openblas_note  # noqa: E402  (re-executes without OpenBLAS overrides)

SHAPES = {
    "1.1b": dict(hidden=2048, inter=5632, layers=22, heads=32, kv_heads=4, vocab=32000, eps=1e-5, ctx=2048,
                 like="TinyLlama-1.1B"),
    "7b": dict(hidden=4096, inter=11008, layers=32, heads=32, kv_heads=32, vocab=32000, eps=1e-6, ctx=2048,
               like="LLaMA-7B"),
}
SHARD_BYTES = 2_000_000_000
PIECE = 16 << 20  # elements generated at a time
STD = 0.02


def tokenizer_model():
    """The LLaMA tokenizer.model: ROOT/data/llama-tokenizer first, then the shared data."""
    for d in (os.path.join(ROOT, "data", "llama-tokenizer"),
              os.path.join(os.path.dirname(ROOT), "shared", "data", "llama-tokenizer"),
              "/work/shared/data/llama-tokenizer"):
        p = os.path.join(d, "tokenizer.model")
        if os.path.exists(p):
            return p
    sys.exit("make_sized_models: no llama-tokenizer/tokenizer.model in ROOT/data or the shared data")


def tensor_list(s):
    """[(HF name, shape)] in HF order; norms are 1-D."""
    C, F, V = s["hidden"], s["inter"], s["vocab"]
    hs = C // s["heads"]
    kv = s["kv_heads"] * hs
    out = [("model.embed_tokens.weight", (V, C))]
    for i in range(s["layers"]):
        p = f"model.layers.{i}."
        out += [(p + "input_layernorm.weight", (C,)),
                (p + "self_attn.q_proj.weight", (C, C)),
                (p + "self_attn.k_proj.weight", (kv, C)),
                (p + "self_attn.v_proj.weight", (kv, C)),
                (p + "self_attn.o_proj.weight", (C, C)),
                (p + "post_attention_layernorm.weight", (C,)),
                (p + "mlp.gate_proj.weight", (F, C)),
                (p + "mlp.up_proj.weight", (F, C)),
                (p + "mlp.down_proj.weight", (C, F))]
    out += [("model.norm.weight", (C,)), ("lm_head.weight", (V, C))]
    return out


def numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def write_pieces(fh, idx, shape, seed, np):
    """Writes tensor idx (f16) to fh in pieces: N(0, STD) for matrices, ones for norms."""
    n = numel(shape)
    if len(shape) == 1:
        np.ones(n, dtype=np.float16).tofile(fh)
        return
    rng = np.random.default_rng([seed, idx])
    done = 0
    while done < n:
        k = min(PIECE, n - done)
        x = rng.standard_normal(k, dtype=np.float32)
        x *= STD
        x.astype(np.float16).tofile(fh)
        done += k


def make_hf(s, out, seed):
    import numpy as np

    tmp = out + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    C = s["hidden"]
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": C,
           "intermediate_size": s["inter"], "num_hidden_layers": s["layers"],
           "num_attention_heads": s["heads"], "num_key_value_heads": s["kv_heads"],
           "vocab_size": s["vocab"], "rms_norm_eps": s["eps"], "rope_theta": 10000.0,
           "max_position_embeddings": s["ctx"], "hidden_act": "silu", "tie_word_embeddings": False,
           "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float16", "initializer_range": STD,
           "attention_bias": False, "mlp_bias": False}
    with open(os.path.join(tmp, "config.json"), "w") as fh:
        json.dump(cfg, fh, indent=2)
    shutil.copy(tokenizer_model(), os.path.join(tmp, "tokenizer.model"))
    with open(os.path.join(tmp, "tokenizer_config.json"), "w") as fh:
        json.dump({"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>",
                   "unk_token": "<unk>", "add_bos_token": True, "add_eos_token": False,
                   "legacy": True, "model_max_length": s["ctx"]}, fh, indent=2)
    with open(os.path.join(tmp, "generation_config.json"), "w") as fh:
        json.dump({"bos_token_id": 1, "eos_token_id": 2}, fh)
    # shards: consecutive tensors up to SHARD_BYTES each
    tl = tensor_list(s)
    shards, cur, cur_b = [], [], 0
    for i, (name, shape) in enumerate(tl):
        b = numel(shape) * 2
        if cur and cur_b + b > SHARD_BYTES:
            shards.append(cur)
            cur, cur_b = [], 0
        cur.append(i)
        cur_b += b
    shards.append(cur)
    n = len(shards)
    weight_map, total = {}, 0
    t0 = time.monotonic()
    for k, idxs in enumerate(shards):
        fname = f"model-{k + 1:05d}-of-{n:05d}.safetensors"
        header, off = {}, 0
        for i in idxs:
            name, shape = tl[i]
            b = numel(shape) * 2
            header[name] = {"dtype": "F16", "shape": list(shape), "data_offsets": [off, off + b]}
            off += b
            weight_map[name] = fname
        header["__metadata__"] = {"format": "pt"}
        hb = json.dumps(header, separators=(",", ":")).encode()
        hb += b" " * (-(8 + len(hb)) % 8)
        with open(os.path.join(tmp, fname), "wb") as fh:
            fh.write(struct.pack("<Q", len(hb)))
            fh.write(hb)
            for i in idxs:
                write_pieces(fh, i, tl[i][1], seed, np)
        total += off
        print(f"  {fname}: {len(idxs)} tensors, {off / 1e9:.2f} GB ({time.monotonic() - t0:.0f} s)", flush=True)
    with open(os.path.join(tmp, "model.safetensors.index.json"), "w") as fh:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, fh, indent=1)
    os.replace(tmp, out)
    print(f"wrote {out}: {sum(numel(sh) for _, sh in tl) / 1e9:.3f} B params, {total / 1e9:.2f} GB f16 "
          f"in {n} shards ({time.monotonic() - t0:.0f} s)", flush=True)


def st_tensors(hf):
    """{name: numpy memmap (f16)} over the folder's safetensors shards."""
    import numpy as np

    with open(os.path.join(hf, "model.safetensors.index.json")) as fh:
        files = sorted(set(json.load(fh)["weight_map"].values()))
    out = {}
    for f in files:
        p = os.path.join(hf, f)
        with open(p, "rb") as fh:
            hn = struct.unpack("<Q", fh.read(8))[0]
            header = json.loads(fh.read(hn))
        header.pop("__metadata__", None)
        for name, h in header.items():
            a, b = h["data_offsets"]
            out[name] = np.memmap(p, dtype=np.float16, mode="r", offset=8 + hn + a, shape=tuple(h["shape"]))
    return out


def permute(w, n_head):
    """llama.cpp's q/k row order (convert_hf_to_gguf.py LlamaModel.permute)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def make_f16_gguf(s, hf, out):
    import numpy as np
    import gguf
    import sentencepiece

    T = tensor_list(s)
    src = st_tensors(hf)
    C = s["hidden"]
    w = gguf.GGUFWriter(out, "llama")
    w.add_name(f"random {s['like']}-shaped")
    w.add_context_length(s["ctx"])
    w.add_embedding_length(C)
    w.add_block_count(s["layers"])
    w.add_feed_forward_length(s["inter"])
    w.add_head_count(s["heads"])
    w.add_head_count_kv(s["kv_heads"])
    w.add_rope_dimension_count(C // s["heads"])
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(s["eps"])
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    w.add_vocab_size(s["vocab"])
    sp = sentencepiece.SentencePieceProcessor(model_file=os.path.join(hf, "tokenizer.model"))
    toks, scores, types = [], [], []
    for i in range(sp.vocab_size()):
        toks.append(sp.id_to_piece(i).encode("utf-8"))
        scores.append(sp.get_score(i))
        t = gguf.TokenType.NORMAL
        if sp.is_unknown(i):
            t = gguf.TokenType.UNKNOWN
        elif sp.is_control(i):
            t = gguf.TokenType.CONTROL
        elif sp.is_unused(i):
            t = gguf.TokenType.UNUSED
        elif sp.is_byte(i):
            t = gguf.TokenType.BYTE
        types.append(t)
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(toks)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    names = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
             "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
             "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down"}

    def gname(n):
        if n == "model.embed_tokens.weight":
            return "token_embd.weight"
        if n == "model.norm.weight":
            return "output_norm.weight"
        if n == "lm_head.weight":
            return "output.weight"
        parts = n.split(".")  # model.layers.i.<module>.weight
        return f"blk.{parts[2]}.{names['.'.join(parts[3:-1])]}.weight"

    def data(n):
        x = src[n]
        if x.ndim == 1:
            return x.astype(np.float32)  # llama.cpp keeps norms in f32
        if n.endswith("q_proj.weight"):
            return permute(x, s["heads"])
        if n.endswith("k_proj.weight"):
            return permute(x, s["kv_heads"])
        return x

    for n, shape in T:
        dt = np.float32 if len(shape) == 1 else np.float16
        w.add_tensor_info(gname(n), shape, np.dtype(dt), numel(shape) * np.dtype(dt).itemsize)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for n, _ in T:
        w.write_tensor_data(np.ascontiguousarray(data(n)))
    w.close()


def make_q4_0(s, hf, out, threads):
    import llama_cpp

    f16 = out + ".f16.tmp.gguf"
    t0 = time.monotonic()
    make_f16_gguf(s, hf, f16)
    print(f"  f16 GGUF {f16}: {os.path.getsize(f16) / 1e9:.2f} GB ({time.monotonic() - t0:.0f} s)", flush=True)
    p = llama_cpp.llama_model_quantize_default_params()
    p.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0
    p.nthread = threads
    print(f"$ llama_cpp.llama_model_quantize({f16!r}, {out!r}, ftype=LLAMA_FTYPE_MOSTLY_Q4_0) "
          f"[llama-cpp-python {llama_cpp.__version__}]", flush=True)
    t1 = time.monotonic()
    rc = llama_cpp.llama_model_quantize(f16.encode(), (out + ".tmp").encode(), ctypes.byref(p))
    os.remove(f16)
    if rc != 0:
        sys.exit(f"llama_model_quantize failed: {rc}")
    os.replace(out + ".tmp", out)
    from gguf import GGUFReader
    import collections

    r = GGUFReader(out)
    types = collections.Counter(t.tensor_type.name for t in r.tensors)
    print(f"wrote {out}: {os.path.getsize(out) / 1e9:.2f} GB, tensors "
          + ", ".join(f"{k}: {v}" for k, v in sorted(types.items()))
          + f" (quantized in {time.monotonic() - t1:.0f} s)", flush=True)


def make_nf4(hf, out, guanaco, threads):
    tmp = out + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    cmd = [guanaco, "quantize", "-m", hf, "-o", tmp, "-t", str(threads)]
    print("$ " + " ".join(cmd), flush=True)
    t0 = time.monotonic()
    subprocess.run(cmd, check=True)
    os.replace(tmp, out)
    size = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
    print(f"wrote {out}: {size / 1e9:.2f} GB ({time.monotonic() - t0:.0f} s)", flush=True)


def paths(bench_dir, size):
    return {"hf": os.path.join(bench_dir, f"llama-{size}-f16"),
            "q4_0": os.path.join(bench_dir, f"llama-{size}-q4_0.gguf"),
            "nf4": os.path.join(bench_dir, f"llama-{size}-nf4")}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("size", choices=sorted(SHAPES))
    ap.add_argument("--bench-dir", default=os.path.join(CACHE, "bench"))
    ap.add_argument("--what", default="hf,q4_0,nf4", help="comma list of hf, q4_0, nf4")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-t", "--threads", type=int, default=os.cpu_count())
    ap.add_argument("--guanaco", default=os.path.join(ROOT, "build", "guanaco"))
    ap.add_argument("--force", action="store_true", help="remake what exists")
    a = ap.parse_args()
    print(f"env: {openblas_note()}")
    s = SHAPES[a.size]
    os.makedirs(a.bench_dir, exist_ok=True)
    P = paths(a.bench_dir, a.size)
    what = a.what.split(",")
    if a.force:
        for k in what:
            if os.path.isdir(P[k]):
                shutil.rmtree(P[k])
            elif os.path.exists(P[k]):
                os.remove(P[k])
    print(f"{a.size}: {s['like']} shapes (hidden {s['hidden']}, intermediate {s['inter']}, {s['layers']} layers, "
          f"{s['heads']} heads, {s['kv_heads']} KV heads, vocab {s['vocab']}), seed {a.seed}, N(0, {STD})", flush=True)
    if "hf" in what and not os.path.exists(os.path.join(P["hf"], "config.json")):
        make_hf(s, P["hf"], a.seed)
    if "q4_0" in what and not os.path.exists(P["q4_0"]):
        make_q4_0(s, P["hf"], P["q4_0"], a.threads)
    if "nf4" in what and not os.path.exists(os.path.join(P["nf4"], "config.json")):
        make_nf4(P["hf"], P["nf4"], a.guanaco, a.threads)
    for k in what:
        print(f"{k}: {P[k]}")


if __name__ == "__main__":
    main()
