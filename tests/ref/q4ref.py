"""The same 4-bit weights on both sides: a 4-bit checkpoint written by transformers +
bitsandbytes (what guanaco loads) and an ordinary float32 folder holding bitsandbytes' own
dequantize_4bit of every quantized layer (what transformers/PEFT run exactly, since the CPU 4-bit
matmul of bitsandbytes is not exact)."""
import torch
from transformers import BitsAndBytesConfig, LlamaForCausalLM


def make_4bit_pair(base, qdir, densedir, qtype="nf4", double_quant=True):
    import bitsandbytes as bnb
    import bitsandbytes.functional as BF
    q = LlamaForCausalLM.from_pretrained(base, device_map="cpu", quantization_config=BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type=qtype, bnb_4bit_use_double_quant=double_quant,
        bnb_4bit_compute_dtype=torch.float32))
    q.save_pretrained(qdir)
    q = LlamaForCausalLM.from_pretrained(qdir, device_map="cpu")  # dequantize what was written
    dense = LlamaForCausalLM.from_pretrained(base)
    sd = dense.state_dict()
    for name, mod in q.named_modules():
        if isinstance(mod, bnb.nn.Linear4bit):
            sd[name + ".weight"] = BF.dequantize_4bit(mod.weight.data, mod.weight.quant_state).float()
    dense.load_state_dict(sd)
    dense.save_pretrained(densedir)
    for f in ("tokenizer.model", "tokenizer.json", "tokenizer_config.json"):
        src = base / f
        if src.exists():
            (qdir / f).write_bytes(src.read_bytes())
            (densedir / f).write_bytes(src.read_bytes())
    return qdir, densedir
