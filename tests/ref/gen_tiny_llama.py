#!/usr/bin/env python3
"""Random tiny LLaMA checkpoints and their reference logits, made with transformers.

For every config in CONFIGS this writes, under OUT/<config>/:
  safetensors/          config.json + model.safetensors
  safetensors_sharded/  config.json + model-0000i-of-00003.safetensors + model.safetensors.index.json
  bin/                  config.json + pytorch_model.bin (torch.save zip format, pickle inside)
  bin_sharded/          config.json + pytorch_model-0000i-of-00003.bin + pytorch_model.bin.index.json
  bin_views/            config.json + pytorch_model.bin whose q/k/v and gate/up tensors are views
                        into one shared storage (non-zero storage offsets), as fused checkpoints have
  ref/ids_<T>.txt       the token ids fed (space separated), T in SEQ_LENS
  ref/logits_<T>.npy    float32 [T, vocab]: LlamaForCausalLM in float32, eager attention
  ref/logits_bf16w_<T>.npy  the same model with every matrix (embeddings, projections, lm_head)
                        rounded to bfloat16 and everything else (norms, activations) in float32
  ref/logits_bf16_<T>.npy   the model run entirely in torch.bfloat16 (only used to size the bf16
                        tolerance, see tests/test_model.py)
and OUT/manifest.json describing it all.

Weights are random but not the tiny `initializer_range` default: with std 0.02 attention is
almost uniform and a RoPE or norm mistake would hardly change the logits. Here projections are
N(0, 1/fan_in) with q/k scaled up so attention is peaked, norm weights are 1 + N(0, 0.2^2) (so a
missing norm weight shows), and embeddings N(0, EMBED_STD^2) with EMBED_STD^2 close to rms_norm_eps so that the
first RMSNorm depends on eps.

Every written folder is loaded back with transformers' own from_pretrained and must give the
same logits (this checks the files, not guanaco).

Usage: gen_tiny_llama.py OUTDIR   (skips work when OUTDIR/manifest.json matches this script)
"""
import copy
import hashlib
import json
import os
import pathlib
import sys

import numpy as np

SEQ_LENS = (1, 80)
EMBED_STD = 0.004

# "style": how config.json spells RoPE. "legacy" = rope_theta + rope_scaling keys as found in
# real checkpoints on the Hub (Llama 2/3, SmolLM2); "v5" = the rope_parameters dict that
# transformers >= 5 writes.
CONFIGS = {
    # MHA, untied, eps 1e-6, theta 10000, no scaling.
    "mha_untied": dict(vocab_size=256, hidden_size=64, intermediate_size=172, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=4, rms_norm_eps=1e-6,
                       rope_theta=10000.0, rope_scaling=None, tie_word_embeddings=False,
                       max_position_embeddings=128, style="legacy", seed=1),
    # GQA 8:2, tied, eps 1e-5, theta 500000 (Llama 3 style), 3 layers.
    "gqa_tied": dict(vocab_size=512, hidden_size=128, intermediate_size=300, num_hidden_layers=3,
                     num_attention_heads=8, num_key_value_heads=2, rms_norm_eps=1e-5,
                     rope_theta=500000.0, rope_scaling=None, tie_word_embeddings=True,
                     max_position_embeddings=256, style="legacy", seed=2),
    # GQA 4:2 with head_dim given explicitly (32 != 96/4), linear RoPE scaling (old "type" key).
    "gqa_headdim_linear": dict(vocab_size=384, hidden_size=96, intermediate_size=172,
                               num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                               head_dim=32, rms_norm_eps=1e-5, rope_theta=1000000.0,
                               rope_scaling={"type": "linear", "factor": 2.0},
                               tie_word_embeddings=False, max_position_embeddings=128,
                               style="legacy", seed=3),
    # GQA 6:3, tied, llama3 RoPE scaling with a small original context so that all three
    # frequency bands (kept, scaled, blended) occur for head_dim 16; transformers-5 config style.
    "llama3_rope": dict(vocab_size=300, hidden_size=96, intermediate_size=200, num_hidden_layers=2,
                        num_attention_heads=6, num_key_value_heads=3, rms_norm_eps=1e-6,
                        rope_theta=50000.0,
                        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                      "high_freq_factor": 4.0,
                                      "original_max_position_embeddings": 32},
                        tie_word_embeddings=True, max_position_embeddings=128, style="v5", seed=4),
    # MHA, untied, odd vocab, theta 20000, transformers-5 config style without scaling.
    "mha_v5_default": dict(vocab_size=1000, hidden_size=80, intermediate_size=236,
                           num_hidden_layers=2, num_attention_heads=5, num_key_value_heads=5,
                           rms_norm_eps=1e-5, rope_theta=20000.0, rope_scaling=None,
                           tie_word_embeddings=False, max_position_embeddings=128, style="v5",
                           seed=5),
}
FORMATS = ("safetensors", "safetensors_sharded", "bin", "bin_sharded", "bin_views")


def _script_hash():
    return hashlib.sha256(pathlib.Path(__file__).read_bytes()).hexdigest()[:16]


def _make_model(spec):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    kw = {k: v for k, v in spec.items() if k not in ("style", "seed", "rope_scaling", "rope_theta")}
    rope = {"rope_theta": spec["rope_theta"], "rope_type": "default"}
    if spec["rope_scaling"]:
        rs = dict(spec["rope_scaling"])
        rs["rope_type"] = rs.pop("type", None) or rs["rope_type"]
        rope.update(rs)
    cfg = LlamaConfig(**kw, rope_parameters=rope, bos_token_id=1, eos_token_id=2)
    cfg._attn_implementation = "eager"
    torch.manual_seed(spec["seed"])
    model = LlamaForCausalLM(cfg).eval()
    g = torch.Generator().manual_seed(1000 + spec["seed"])
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:      # RMSNorm weights
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name:
                # tiny embeddings: mean square ~1.6e-5, the size of rms_norm_eps, so the first
                # RMSNorm's result depends on eps (1e-5 vs 1e-6 moves logits well past 1e-4)
                p.copy_(EMBED_STD * torch.randn(p.shape, generator=g))
            else:
                gain = 2.0 if ("q_proj" in name or "k_proj" in name) else 1.0
                p.copy_(gain * torch.randn(p.shape, generator=g) / np.sqrt(p.shape[1]))
        if not spec["tie_word_embeddings"]:
            model.lm_head.weight.copy_(torch.randn(model.lm_head.weight.shape, generator=g) / np.sqrt(cfg.hidden_size))
    if spec["tie_word_embeddings"]:
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    return model


def _config_json(model, spec):
    d = model.config.to_dict()
    for k in ("_attn_implementation_autoset", "_name_or_path", "torch_dtype", "dtype",
              "transformers_version", "architectures"):
        d.pop(k, None)
    d["architectures"] = ["LlamaForCausalLM"]
    d["torch_dtype"] = "float32"
    if spec["style"] == "legacy":
        rp = d.pop("rope_parameters")
        d["rope_theta"] = rp.pop("rope_theta")
        if rp.get("rope_type", "default") == "default":
            d["rope_scaling"] = None
        else:
            d["rope_scaling"] = dict(spec["rope_scaling"])  # as spelled in CONFIGS
    return d


def _state_dict(model, spec):
    sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    if spec["tie_word_embeddings"]:
        sd.pop("lm_head.weight", None)   # as transformers' save_pretrained writes tied models
    return sd


def _shards(names, n=3):
    names = list(names)
    k = (len(names) + n - 1) // n
    return [names[i * k:(i + 1) * k] for i in range(n)]


def _nbytes(t):
    return t.numel() * t.element_size()


def _write_format(fmt, d, sd, cfg_json):
    import torch
    from safetensors.torch import save_file

    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps(cfg_json, indent=2) + "\n")
    total = sum(_nbytes(t) for t in sd.values())
    if fmt == "safetensors":
        save_file(sd, str(d / "model.safetensors"), metadata={"format": "pt"})
    elif fmt == "bin":
        torch.save(sd, str(d / "pytorch_model.bin"))
    elif fmt in ("safetensors_sharded", "bin_sharded"):
        st = fmt == "safetensors_sharded"
        groups = _shards(sd.keys())
        wmap = {}
        for i, g in enumerate(groups):
            fn = (f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors" if st
                  else f"pytorch_model-{i + 1:05d}-of-{len(groups):05d}.bin")
            part = {k: sd[k] for k in g}
            if st:
                save_file(part, str(d / fn), metadata={"format": "pt"})
            else:
                torch.save(part, str(d / fn))
            wmap.update({k: fn for k in g})
        idx = "model.safetensors.index.json" if st else "pytorch_model.bin.index.json"
        (d / idx).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": wmap}, indent=2) + "\n")
    elif fmt == "bin_views":
        # q/k/v of a layer share one storage, and so do gate/up: torch.save keeps the sharing, so
        # k and v (and up) are stored at non-zero storage offsets.
        out = dict(sd)
        layers = sorted({k.split(".")[2] for k in sd if k.startswith("model.layers.")}, key=int)
        for li in layers:
            p = f"model.layers.{li}."
            for grp in (("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
                        ("mlp.gate_proj", "mlp.up_proj")):
                ts = [sd[p + n + ".weight"] for n in grp]
                fused = torch.cat(ts, 0).contiguous()
                off = 0
                for n, t in zip(grp, ts):
                    out[p + n + ".weight"] = fused[off:off + t.shape[0]]
                    off += t.shape[0]
        torch.save(out, str(d / "pytorch_model.bin"))
    else:
        raise ValueError(fmt)


def _logits(model, ids):
    import torch
    with torch.no_grad():
        return model(torch.tensor([ids], dtype=torch.long)).logits[0].float().numpy()


def build_config(name, spec, out, verify=True):
    import torch
    from transformers import LlamaForCausalLM

    model = _make_model(spec)
    sd = _state_dict(model, spec)
    cfg_json = _config_json(model, spec)
    base = out / name
    for fmt in FORMATS:
        _write_format(fmt, base / fmt, sd, cfg_json)
    ref = base / "ref"
    ref.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(spec["seed"])
    info = {"spec": spec, "formats": {f: str(base / f) for f in FORMATS}, "ids": {}, "max_abs_logit": {}}

    # bf16-weight twin: matrices rounded to bf16, norms and activations float32
    m_bw = copy.deepcopy(model)
    with torch.no_grad():
        for n, p in m_bw.named_parameters():
            if p.dim() == 2:
                p.copy_(p.to(torch.bfloat16).float())
    m_b16 = copy.deepcopy(model).to(torch.bfloat16)

    for T in SEQ_LENS:
        ids = rng.integers(3, spec["vocab_size"], size=T).tolist()
        ids[0] = 1 if T > 1 else ids[0]   # longer sequences start with BOS as usual
        (ref / f"ids_{T}.txt").write_text(" ".join(map(str, ids)) + "\n")
        lg = _logits(model, ids)
        np.save(ref / f"logits_{T}.npy", lg.astype(np.float32))
        np.save(ref / f"logits_bf16w_{T}.npy", _logits(m_bw, ids).astype(np.float32))
        np.save(ref / f"logits_bf16_{T}.npy", _logits(m_b16, ids).astype(np.float32))
        info["ids"][str(T)] = ids
        info["max_abs_logit"][str(T)] = float(np.abs(lg).max())
        if verify:
            for fmt in FORMATS:
                m2 = LlamaForCausalLM.from_pretrained(str(base / fmt), dtype=torch.float32,
                                                      attn_implementation="eager").eval()
                d = float(np.abs(_logits(m2, ids) - lg).max())
                assert d <= 1e-6 * max(1.0, info["max_abs_logit"][str(T)]), \
                    f"{name}/{fmt}: transformers reloads the written files with max diff {d}"
    return info


def build_all(out, verify=True, log=print):
    out = pathlib.Path(out)
    man = out / "manifest.json"
    h = _script_hash()
    if man.exists():
        m = json.loads(man.read_text())
        if m.get("script") == h:
            return m
    out.mkdir(parents=True, exist_ok=True)
    import torch
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    m = {"script": h, "seq_lens": list(SEQ_LENS), "formats": list(FORMATS), "configs": {}}
    for name, spec in CONFIGS.items():
        log(f"gen_tiny_llama: {name}")
        m["configs"][name] = build_config(name, spec, out, verify=verify)
    man.write_text(json.dumps(m, indent=1))
    return m


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    build_all(sys.argv[1])
    print(sys.argv[1])
