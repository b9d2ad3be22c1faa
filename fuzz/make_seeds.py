#!/usr/bin/env python3
"""fuzz/make_seeds.py [OUT] — seed corpora for the libFuzzer targets (default
OUT: build-fuzz/seeds/<target>/).

Seeds are made at fuzz time, never committed: small files written here with
the reference libraries (safetensors, torch, gguf, sentencepiece, tokenizers),
short pieces (the first lines, or a header-only/truncated prefix) of the real
files in the repository's data/ (gzipped ones read through gzip) and
~/.cache/guanaco/models, and small synthetic inputs.
Run with the test venv's python (~/.cache/guanaco/venv/bin/python); a library
that does not import just means fewer seeds of that kind.
"""
import io
import json
import os
import pathlib
import struct
import sys
import tempfile
import zipfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "build-fuzz" / "seeds"
DATA = pathlib.Path(os.environ.get("GN_DATA", ROOT / "data")).resolve()
CACHE = pathlib.Path(os.environ.get("GN_CACHE", pathlib.Path.home() / ".cache" / "guanaco"))
MAX = 60000  # keep every seed under the runs' -max_len (65536)

counts = {}


def put(target, name, data):
    if isinstance(data, str):
        data = data.encode()
    data = data[:MAX]
    d = OUT / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)
    counts[target] = counts.get(target, 0) + 1


def _open(path):
    """A binary file object; a .gz or .xz file is read decompressed."""
    if str(path).endswith(".gz"):
        import gzip
        return gzip.open(path, "rb")
    if str(path).endswith(".xz"):
        import lzma
        return lzma.open(path, "rb")
    return open(path, "rb")


def head_lines(path, n, max_bytes=MAX):
    out = b""
    try:
        with _open(path) as f:
            for _ in range(n):
                line = f.readline()
                if not line or len(out) + len(line) > max_bytes:
                    break
                out += line
    except OSError:
        pass
    return out


def prefix(path, n):
    try:
        with _open(path) as f:
            return f.read(n)
    except OSError:
        return b""


# ---------------------------------------------------------------------------
# safetensors

def st_file(tensors, meta=None):
    """safetensors bytes by hand (no library needed): tensors = [(name, dtype, shape, raw)]."""
    hdr, off, blobs = {}, 0, []
    if meta:
        hdr["__metadata__"] = meta
    for name, dt, shape, raw in tensors:
        hdr[name] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + len(raw)]}
        off += len(raw)
        blobs.append(raw)
    h = json.dumps(hdr).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def seeds_safetensors():
    f32 = struct.pack("<6f", 1, -2, 3.5, 0, 1e-3, -7)
    put("safetensors", "f32", st_file([("w", "F32", [2, 3], f32)], {"format": "pt"}))
    put("safetensors", "mixed", st_file([
        ("a", "F16", [4], struct.pack("<4H", 0x3c00, 0xc000, 0x7c00, 0x0001)),
        ("b", "BF16", [2, 2], struct.pack("<4H", 0x3f80, 0xbf80, 0x7fc0, 0)),
        ("c", "I64", [1], struct.pack("<q", -5)),
        ("d", "U8", [3], b"\x01\x02\x03"),
        ("e", "BOOL", [2], b"\x00\x01"),
        ("f", "F64", [], struct.pack("<d", 2.5)),
        ("g", "I32", [0, 4], b""),
    ]))
    put("safetensors", "unaligned", st_file([("x", "U8", [1], b"\x07"), ("y", "F32", [1], struct.pack("<f", 1.0))]))
    try:
        import numpy as np
        from safetensors.numpy import save
        put("safetensors", "lib", save({"model.embed_tokens.weight": np.arange(12, dtype=np.float32).reshape(3, 4),
                                        "model.norm.weight": np.ones(4, dtype=np.float16)}))
    except Exception as e:  # noqa: BLE001
        print("safetensors library seeds skipped:", e)
    # header-only prefixes of real files the tests or models left behind
    for p in list((CACHE / "models").glob("**/*.safetensors"))[:4]:
        raw = prefix(p, 8)
        if len(raw) == 8:
            n = struct.unpack("<Q", raw)[0]
            if n < MAX - 64:
                put("safetensors", "hdr-" + p.name, prefix(p, 8 + n + 64))


# ---------------------------------------------------------------------------
# GGUF

def seeds_gguf():
    for p in [DATA / "llama-cpp-vocab" / "ggml-vocab-llama-spm.gguf", DATA / "llama-cpp-vocab" / "ggml-vocab-gpt-2.gguf.gz",
              DATA / "tiny-llama" / "stories260K.gguf.xz", CACHE / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"]:
        if p.exists():
            put("gguf", "prefix-" + p.name.removesuffix(".gz").removesuffix(".xz"), prefix(p, 16384))  # header + first metadata only
    try:
        import numpy as np
        import gguf
    except Exception as e:  # noqa: BLE001
        print("gguf library seeds skipped:", e)
        return
    tmp = tempfile.mkdtemp()

    def write(name, fill):
        path = os.path.join(tmp, name)
        w = gguf.GGUFWriter(path, "llama")
        fill(w)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        put("gguf", name, pathlib.Path(path).read_bytes())

    def spm(w):
        toks = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + ["\u2581", "\u2581a", "b", "ab"]
        types = [2, 3, 3] + [6] * 256 + [1, 1, 1, 1]
        w.add_tokenizer_model("llama")
        w.add_token_list(toks)
        w.add_token_scores([0.0] * (len(toks) - 4) + [-1.0, -2.0, -3.0, -4.0])
        w.add_token_types(types)
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)
        w.add_unk_token_id(0)
        w.add_uint32("llama.context_length", 64)
        w.add_array("test.nested", [[1, 2], [3]])
        w.add_tensor("token_embd.weight", np.ones((4, 32), dtype=np.float32))
        w.add_tensor("f16", np.arange(32, dtype=np.float16))

    def bpe(w):
        from gguf.constants import GGMLQuantizationType as Q
        toks = ["a", "b", "ab", "\u0120", "\u0120a", "<|endoftext|>"]
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("smollm")
        w.add_token_list(toks)
        w.add_token_types([1, 1, 1, 1, 1, 3])
        w.add_token_merges(["a b", "\u0120 a"])
        w.add_eos_token_id(5)
        w.add_float32("f", 0.5)
        w.add_float64("d", -1.25)
        w.add_bool("t", True)
        w.add_int8("i8", -3)
        w.add_string("general.name", "seed")
        x = np.linspace(-1, 1, 64, dtype=np.float32).reshape(2, 32)
        for q in (Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1):
            try:
                w.add_tensor(f"q{int(q)}", gguf.quants.quantize(x, q), raw_dtype=q)
            except Exception:  # noqa: BLE001
                pass
        try:
            k = np.linspace(-1, 1, 256, dtype=np.float32).reshape(1, 256)
            for q in (Q.Q4_K, Q.Q5_K, Q.Q6_K):
                w.add_tensor(f"k{int(q)}", gguf.quants.quantize(k, q), raw_dtype=q)
        except Exception:  # noqa: BLE001
            pass

    for name, fill in (("spm.gguf", spm), ("bpe.gguf", bpe)):
        try:
            write(name, fill)
        except Exception as e:  # noqa: BLE001
            print("gguf seed", name, "skipped:", e)


# ---------------------------------------------------------------------------
# PyTorch .bin (mode byte 'Z': whole file, 'P': data.pkl only)

def seeds_torchbin():
    try:
        import torch
        from collections import OrderedDict
    except Exception as e:  # noqa: BLE001
        print("torch seeds skipped:", e)
        return
    w = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    dicts = {
        "plain": {"w": w, "b": torch.ones(3, dtype=torch.float16)},
        "strided": {"wt": w.t(), "slice": w[1:, ::2]},
        "tied": OrderedDict([("a", w), ("b", w), ("n", torch.tensor(3)), ("s", "text")]),
        "dtypes": {"bf": torch.ones(2, dtype=torch.bfloat16), "i64": torch.tensor([1, -2]),
                   "u8": torch.tensor([1, 2], dtype=torch.uint8), "bool": torch.tensor([True, False]),
                   "f64": torch.tensor([0.5], dtype=torch.float64), "i8": torch.tensor([-1], dtype=torch.int8),
                   "i16": torch.tensor([7], dtype=torch.int16), "i32": torch.tensor([9], dtype=torch.int32)},
        "param": {"p": torch.nn.Parameter(torch.ones(2, 2))},
        "small0": {"x": torch.zeros(4)},
    }
    for name, d in dicts.items():
        buf = io.BytesIO()
        torch.save(d, buf)
        raw = buf.getvalue()
        put("torchbin", "Z-" + name, b"Z" + raw)
        with zipfile.ZipFile(io.BytesIO(raw)) as z:
            pk = [n for n in z.namelist() if n.endswith("/data.pkl")][0]
            put("torchbin", "P-" + name, b"P" + z.read(pk))
    for proto in (2, 4, 5):
        buf = io.BytesIO()
        torch.save({"x": torch.zeros(4)}, buf, pickle_protocol=proto)
        put("torchbin", f"Z-proto{proto}", b"Z" + buf.getvalue())
        with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as z:
            pk = [n for n in z.namelist() if n.endswith("/data.pkl")][0]
            put("torchbin", f"P-proto{proto}", b"P" + z.read(pk))


# ---------------------------------------------------------------------------
# tokenizers

def seeds_spm():
    p = DATA / "llama-tokenizer" / "tokenizer.model"
    if p.exists():
        put("spm", "llama-prefix", prefix(p, 4096))
        try:  # the real LLaMA model cut down to its first 400 pieces (specs kept)
            from sentencepiece import sentencepiece_model_pb2 as pb
            m = pb.ModelProto()
            m.ParseFromString(p.read_bytes())
            del m.pieces[400:]
            put("spm", "llama-400", m.SerializeToString())
        except Exception as e:  # noqa: BLE001
            print("spm llama-400 seed skipped:", e)
    try:
        import sentencepiece as spm
    except Exception as e:  # noqa: BLE001
        print("sentencepiece seeds skipped:", e)
        return
    tmp = tempfile.mkdtemp()
    txt = os.path.join(tmp, "t.txt")
    with open(txt, "w") as f:
        for i in range(200):
            f.write(f"the quick brown fox {i} jumps over the lazy dog caf\u00e9 \u00fcber na\u00efve\n")
    for kind, extra in (("bpe", dict(byte_fallback=True, vocab_size=320)), ("unigram", dict(vocab_size=60)),
                        ("bpe-nodummy", dict(add_dummy_prefix=False, vocab_size=100))):
        mt = "bpe" if kind.startswith("bpe") else "unigram"
        prefix_ = os.path.join(tmp, kind)
        try:
            spm.SentencePieceTrainer.train(input=txt, model_prefix=prefix_, model_type=mt,
                                           normalization_rule_name="identity",
                                           user_defined_symbols=["<tool>"], minloglevel=2, **extra)
            put("spm", kind + ".model", pathlib.Path(prefix_ + ".model").read_bytes())
        except Exception as e:  # noqa: BLE001
            print("spm seed", kind, "skipped:", e)


def seeds_tokenizer_json():
    try:
        from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers, normalizers
    except Exception as e:  # noqa: BLE001
        print("tokenizers seeds skipped:", e)
        return
    text = [f"the quick brown fox {i} jumps over the lazy dog's caf\u00e9 \u00fcber 12345" for i in range(100)]
    t = Tokenizer(models.BPE())
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    t.decoder = decoders.ByteLevel()
    t.train_from_iterator(text, trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>", "<|im_start|>"],
                                                    initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    put("tokenizer_json", "bytelevel.json", t.to_str())
    t2 = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>", fuse_unk=True))
    t2.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    t2.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()])
    t2.train_from_iterator(text, trainers.BpeTrainer(vocab_size=120, special_tokens=["<unk>", "<s>", "</s>"]))
    put("tokenizer_json", "spm-style.json", t2.to_str())
    t3 = Tokenizer(models.BPE())
    t3.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(pattern="\\p{N}{1,3}", behavior="isolated"),
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True)])
    t3.train_from_iterator(text, trainers.BpeTrainer(vocab_size=280, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    put("tokenizer_json", "split-digits.json", t3.to_str())
    # merges in the older "a b" string spelling
    j = json.loads(t.to_str())
    j["model"]["merges"] = [" ".join(m) if isinstance(m, list) else m for m in j["model"]["merges"]]
    put("tokenizer_json", "merges-str.json", json.dumps(j))


# ---------------------------------------------------------------------------
# JSON configs (first byte: 0 config.json, 1 model.safetensors.index.json)

LLAMA_CFG = {"model_type": "llama", "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1,
             "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 16, "max_position_embeddings": 32,
             "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "bos_token_id": 1, "eos_token_id": [2, 3],
             "tie_word_embeddings": True}


def seeds_config():
    put("config_json", "cfg", b"\x00" + json.dumps(LLAMA_CFG).encode())
    c = dict(LLAMA_CFG, rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                      "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
             head_dim=4, tie_word_embeddings=False, quantization_config={"bnb_4bit_compute_dtype": "bfloat16"})
    put("config_json", "cfg-llama3", b"\x00" + json.dumps(c).encode())
    put("config_json", "cfg-linear", b"\x00" + json.dumps(dict(LLAMA_CFG, rope_scaling={"type": "linear", "factor": 2})).encode())
    put("config_json", "cfg-params", b"\x00" + json.dumps(dict(LLAMA_CFG, rope_parameters={"rope_theta": 5e5, "rope_type": "default"})).encode())
    wm = {"weight_map": {"model.embed_tokens.weight": "model-00001-of-00002.safetensors",
                         "model.norm.weight": "model-00002-of-00002.safetensors"}, "metadata": {"total_size": 1}}
    put("config_json", "index", b"\x01" + json.dumps(wm).encode())


def seeds_adapter_config():
    base = {"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q_proj", "v_proj"],
            "lora_dropout": 0.0, "bias": "none", "task_type": "CAUSAL_LM", "base_model_name_or_path": "x"}
    put("adapter_config", "plain", json.dumps(base))
    put("adapter_config", "patterns", json.dumps(dict(base, rank_pattern={"q_proj": 2, "layers\\.0\\..*": 3},
                                                      alpha_pattern={"v_proj": 16.5}, use_rslora=True)))
    put("adapter_config", "defaults", "{}")


def seeds_quant_state():
    qs = {"quant_type": "nf4", "absmax": [], "blocksize": 64, "quant_map": [], "dtype": "float32", "shape": [4, 32]}
    put("quant_state", "nf4", b"\x00" + json.dumps(qs).encode())
    put("quant_state", "fp4-bf16", b"\x00" + json.dumps(dict(qs, quant_type="fp4", dtype="bfloat16")).encode())
    nested = dict(qs, nested_blocksize=256, nested_offset=0.25, nested_dtype="float32")
    put("quant_state", "nested", b"\x01" + json.dumps(nested).encode())


# ---------------------------------------------------------------------------
# JSONL datasets (first byte: format and lengths)

def seeds_jsonl():
    oa = DATA / "openassistant-guanaco" / "openassistant_best_replies_eval.jsonl.gz"
    if oa.exists():
        put("jsonl", "oasst", b"\x00" + head_lines(oa, 3, 8000))
        put("jsonl", "oasst-small", b"\x81" + head_lines(oa, 1, 4000))
    rows = [
        {"instruction": "Say hi", "input": "", "output": "Hi"},
        {"instruction": "Add", "input": "1+1", "output": "2"},
    ]
    put("jsonl", "alpaca", b"\x02" + "\n".join(json.dumps(r) for r in rows).encode() + b"\n")
    put("jsonl", "io", b"\x03" + b'{"input": "a", "output": "b"}\r\n\n{"input": "<s>x</s>", "output": ""}')
    msgs = {"messages": [{"role": "system", "content": "be nice"}, {"role": "user", "content": "hi"},
                         {"role": "assistant", "content": "hello"}]}
    put("jsonl", "messages", b"\x04" + json.dumps(msgs).encode())
    put("jsonl", "bom-text", b"\x00\xef\xbb\xbf" + b'{"text": "### Human: x### Assistant: y"}')


# ---------------------------------------------------------------------------
# eval readers (first byte selects: see fuzz_judgments.c)

def seeds_judgments():
    ev = DATA / "qlora-eval"
    r = sorted((ev / "ratings-gpt4" / "oa").glob("*.jsonl*"))
    if r:
        put("judgments", "j-oa", b"\x00" + head_lines(r[0], 3, 12000))
    vr = sorted((ev / "ratings-gpt4" / "vicuna").glob("**/*.jsonl*"))
    if vr:
        put("judgments", "j-vicuna", b"\x00" + head_lines(vr[0], 3, 12000))
    put("judgments", "j-synth", b"\x00" + b'{"score": 1, "metadata": {"system1": "A", "system2": "B"}}\n'
        b'{"score": "3", "system1": "a-b", "system2": "c"}\n{"score": [2, 8]}\n')
    g = sorted((ev / "generations").glob("**/*.jsonl*"))
    if g:
        put("judgments", "gen", b"\x01" + head_lines(g[0], 2, 12000))
    p = ev / "prompts" / "vicuna_prompt_threeclass.jsonl"
    if p.exists():
        put("judgments", "templates", b"\x02" + head_lines(p, 3))
    q = sorted((DATA / "mmlu" / "qlora-format").glob("*")) if (DATA / "mmlu" / "qlora-format").exists() else []
    if q:
        put("judgments", "mmlu-qlora", b"\x03" + prefix(q[0], 6000))
    d = sorted((DATA / "mmlu" / "dev").glob("*.csv*"))
    if d:
        put("judgments", "csv", b"\x04" + head_lines(d[0], 3))
    c = DATA / "crows-pairs" / "crows_pairs_anonymized.csv.gz"
    if c.exists():
        put("judgments", "crows", b"\x05" + head_lines(c, 4))
    put("judgments", "csv-quoted", b'\x04a,"b ""c""",d\r\n1,"x\ny",3\n')
    put("judgments", "verdict", b"\x06[[A]] then [[B]]? [[C]] 8 9\n10 3")


# ---------------------------------------------------------------------------
# HTTP request bodies (first byte: route; see fuzz_http.c)

def seeds_http():
    chat = {"model": "base", "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"},
                                          {"role": "assistant", "content": [{"type": "text", "text": "x"}]}],
            "temperature": 0.7, "top_p": 0.9, "max_tokens": 16, "stream": True, "stop": ["\n", "###"], "seed": 3,
            "stream_options": {"include_usage": True}, "top_k": 40, "repetition_penalty": 1.1}
    put("http", "chat", b"\x00" + json.dumps(chat).encode())
    put("http", "chat-adapter", b"\x00" + json.dumps({"model": "ad1", "messages": [{"role": "developer", "content": None}],
                                                      "max_completion_tokens": 4, "tools": []}).encode())
    put("http", "completion", b"\x01" + json.dumps({"prompt": "Once upon", "max_tokens": 8, "stop": "x", "echo": False,
                                                    "best_of": 1, "suffix": ""}).encode())
    put("http", "completion-ids", b"\x01" + json.dumps({"prompt": [1, 2, 3], "logprobs": None}).encode())
    put("http", "verdict", b"\x02" + json.dumps({"pair": "0.1", "choice": "tie", "reviewer": "me", "comment": "ok"}).encode())
    put("http", "model", b"\x03ad1")
    put("http", "route", b"\x04POST /v1/chat/completions")


def main():
    for f in (seeds_safetensors, seeds_gguf, seeds_torchbin, seeds_spm, seeds_tokenizer_json, seeds_config,
              seeds_adapter_config, seeds_quant_state, seeds_jsonl, seeds_judgments, seeds_http):
        try:
            f()
        except Exception as e:  # noqa: BLE001
            print(f.__name__, "failed:", e)
    for t in sorted(counts):
        print(f"{t}: {counts[t]} seeds in {OUT / t}")


if __name__ == "__main__":
    main()
