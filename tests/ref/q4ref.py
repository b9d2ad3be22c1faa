"""The same 4-bit weights on both sides: a 4-bit checkpoint written by transformers +
bitsandbytes (what guanaco loads) and an ordinary float32 folder holding bitsandbytes' own
dequantization of every quantized layer (what transformers/PEFT run exactly, since the CPU 4-bit
matmul of bitsandbytes is not exact).

Which dequantization: bitsandbytes' flat-block one (block b = elements b*blocksize .. of the
flattened weight, as bnb's quantize_4bit and its CUDA and torch paths define it), taken from
bnb's own torch implementation. bnb 0.50's native CPU dequantize_4bit is not used: on CPUs with
AVX-512 it indexes the scales per row (row * (cols // blocksize) + col // blocksize) whenever
cols % 16 == 0, which is wrong as soon as a block straddles two rows, so it would make the
oracle, not guanaco, wrong on such shapes."""
import torch
from transformers import BitsAndBytesConfig, LlamaForCausalLM


def bnb_native_dequant_is_per_row():
    """True where bnb's native CPU dequantize_4bit takes its AVX-512 path (per-row scale index)."""
    return torch.backends.cpu.get_cpu_capability() == "AVX512"


def flat_dequantize(packed, state, dtype=torch.float32):
    """bitsandbytes' dequantization of (packed, QuantState) with blocks over the flattened
    tensor: the scales rebuilt as bnb's dequantize_4bit rebuilds them (8-bit nested codes
    dequantized, plus the offset), then bnb's torch dequantize (code[q] * absmax per flat block)."""
    import bitsandbytes.functional as BF
    from bitsandbytes.backends.default.ops import _dequantize_4bit_compute
    absmax = state.absmax
    if state.nested:
        absmax = BF.dequantize_blockwise(state.absmax, state.state2) + state.offset
    code = BF.get_4bit_type(state.quant_type, device="cpu")
    return _dequantize_4bit_compute(packed.view(torch.uint8).reshape(-1), absmax.float(), code, state.blocksize,
                                    tuple(state.shape), dtype)


def roundtrip(w, blocksize, qtype="nf4", double_quant=True):
    """bnb's quantize_4bit of w (float32, on CPU) and its flat dequantization in float32."""
    import bitsandbytes.functional as BF
    q, s = BF.quantize_4bit(w.float().contiguous(), blocksize=blocksize, quant_type=qtype,
                            compress_statistics=double_quant)
    return flat_dequantize(q, s)


def make_4bit_pair(base, qdir, densedir, qtype="nf4", double_quant=True):
    import bitsandbytes as bnb
    q = LlamaForCausalLM.from_pretrained(base, device_map="cpu", quantization_config=BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type=qtype, bnb_4bit_use_double_quant=double_quant,
        bnb_4bit_compute_dtype=torch.float32))
    q.save_pretrained(qdir)
    q = LlamaForCausalLM.from_pretrained(qdir, device_map="cpu")  # dequantize what was written
    dense = LlamaForCausalLM.from_pretrained(base)
    sd = dense.state_dict()
    for name, mod in q.named_modules():
        if isinstance(mod, bnb.nn.Linear4bit):
            sd[name + ".weight"] = flat_dequantize(mod.weight.data, mod.weight.quant_state).float()
    dense.load_state_dict(sd)
    dense.save_pretrained(densedir)
    for f in ("tokenizer.model", "tokenizer.json", "tokenizer_config.json"):
        src = base / f
        if src.exists():
            (qdir / f).write_bytes(src.read_bytes())
            (densedir / f).write_bytes(src.read_bytes())
    return qdir, densedir
