"""Item 6: bad input gives one clear error line, a non-zero exit and no sanitizer report.

Every case builds a broken copy of a good file (a tiny random model from
tests/ref/gen_tiny_llama.py, data/tiny-llama/stories260K.gguf.xz, the LLaMA
tokenizer.model, a tokenizer.json made with `tokenizers`) and runs `guanaco info` and
`guanaco logits` (or `guanaco tokenize` for a tokenizer file) on it under the release build and
every sanitizer build. Each run must:
  - exit with status 1,
  - write exactly one non-empty line to stderr, starting "guanaco: ",
  - name the offending file (and, where the case is about one tensor or key, that name too),
  - print no sanitizer report ("runtime error", AddressSanitizer, LeakSanitizer).
"""
import json
import os
import pathlib
import shutil
import struct
import zipfile

import numpy as np
import pytest

from conftest import DATA, data_file, guanaco_variants, run_binary, sanitizer_report

MODEL_CMDS = ("info", "logits")


# ---------------------------------------------------------------------------
# helpers that make broken copies


def copy_model(tiny, cfg, fmt, dst):
    shutil.copytree(tiny["configs"][cfg]["formats"][fmt], dst)
    return dst


def truncate(path, n):
    with open(path, "r+b") as f:
        f.truncate(n)


def patch(path, offset, data):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def edit_config(folder, fn):
    p = folder / "config.json"
    d = json.loads(p.read_text())
    fn(d)
    p.write_text(json.dumps(d))


def st_read(path):
    b = pathlib.Path(path).read_bytes()
    n = struct.unpack("<Q", b[:8])[0]
    return json.loads(b[8:8 + n]), b[8 + n:]


def st_write(path, header, data):
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    pathlib.Path(path).write_bytes(struct.pack("<Q", len(h)) + h + data)


def st_edit_header(path, fn):
    h, data = st_read(path)
    fn(h)
    st_write(path, h, data)


def st_rewrite_tensors(path, fn):
    """Loads every tensor of a .safetensors, lets fn edit the dict, saves it back."""
    from safetensors.torch import load_file, save_file
    sd = load_file(str(path))
    fn(sd)
    save_file(sd, str(path), metadata={"format": "pt"})


def torch_zip_replace_pickle(path, new_pkl):
    """Rewrites a torch zip checkpoint with its data.pkl replaced."""
    src = pathlib.Path(path)
    tmp = src.with_suffix(".tmp")
    with zipfile.ZipFile(src) as zi, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zo:
        for info in zi.infolist():
            data = zi.read(info.filename)
            if info.filename.endswith("/data.pkl"):
                data = new_pkl(data)
            zo.writestr(info.filename, data)
    os.replace(tmp, src)


def torch_zip_drop(path, suffix):
    src = pathlib.Path(path)
    tmp = src.with_suffix(".tmp")
    with zipfile.ZipFile(src) as zi, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zo:
        for info in zi.infolist():
            if not info.filename.endswith(suffix):
                zo.writestr(info.filename, zi.read(info.filename))
    os.replace(tmp, src)


def gguf_copy(dst_dir, name):
    dst = dst_dir / f"{name}.gguf"
    shutil.copyfile(data_file("tiny-llama/stories260K.gguf"), dst)
    dst.chmod(0o644)
    return dst


def gguf_layout():
    """Offsets inside stories260K.gguf: (first tensor-info offset, data offset, size, info of
    tensor 0 as (offset of its dtype field, offset of its data-offset field, offset of n_dims))."""
    import gguf
    src = data_file("tiny-llama/stories260K.gguf")
    r = gguf.GGUFReader(str(src))
    t0 = r.tensors[0].field
    sizes = [p.nbytes for p in t0.parts]   # name len, name, n_dims, dims, type, offset
    ndims_at = t0.offset + sizes[0] + sizes[1]
    type_at = ndims_at + sizes[2] + sizes[3]
    off_at = type_at + sizes[4]
    return t0.offset, r.data_offset, src.stat().st_size, (type_at, off_at, ndims_at)


def make_tokenizer_json(path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tr = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"], show_progress=False,
                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["The quick brown fox jumps over the lazy dog. " * 5,
                             "Hello world, hello there."], tr)
    tok.save(str(path))
    return path


# ---------------------------------------------------------------------------
# the cases. Each builder gets (tiny_models, tmp dir) and returns
# (path given to -m, commands to run, names the error line must contain: every inner tuple needs
# one of its strings).

CASES = {}


def case(name):
    def deco(fn):
        CASES[name] = fn
        return fn
    return deco


# --- paths -----------------------------------------------------------------

@case("path_missing_gguf")
def _(t, d):
    return d / "no_such_model.gguf", MODEL_CMDS, [("no_such_model.gguf",)]


@case("path_missing_folder")
def _(t, d):
    return d / "no_such_folder", MODEL_CMDS, [("no_such_folder",)]


@case("folder_without_weights")
def _(t, d):
    m = copy_model(t, "mha_untied", "safetensors", d / "weightless_model")
    (m / "model.safetensors").unlink()
    return m, MODEL_CMDS, [("weightless_model",)]


# --- config.json -----------------------------------------------------------

@case("config_missing")
def _(t, d):
    m = copy_model(t, "mha_untied", "safetensors", d / "m")
    (m / "config.json").unlink()
    return m, MODEL_CMDS, [("config.json",)]


@case("config_truncated_json")
def _(t, d):
    m = copy_model(t, "mha_untied", "safetensors", d / "m")
    p = m / "config.json"
    p.write_text(p.read_text()[:40])
    return m, MODEL_CMDS, [("config.json",)]


@case("config_not_an_object")
def _(t, d):
    m = copy_model(t, "mha_untied", "safetensors", d / "m")
    (m / "config.json").write_text("[1, 2, 3]\n")
    return m, MODEL_CMDS, [("config.json",)]


@case("config_no_hidden_size")
def _(t, d):
    m = copy_model(t, "mha_untied", "safetensors", d / "m")
    edit_config(m, lambda c: c.pop("hidden_size"))
    return m, MODEL_CMDS, [("config.json",), ("hidden_size",)]


@case("config_zero_hidden_size")
def _(t, d):
    m = copy_model(t, "mha_untied", "safetensors", d / "m")
    edit_config(m, lambda c: c.update(hidden_size=0))
    return m, MODEL_CMDS, [("config.json",), ("hidden_size",)]


@case("config_negative_layers")
def _(t, d):
    m = copy_model(t, "mha_untied", "safetensors", d / "m")
    edit_config(m, lambda c: c.update(num_hidden_layers=-2))
    return m, MODEL_CMDS, [("config.json",), ("num_hidden_layers",)]


@case("config_zero_heads")
def _(t, d):
    m = copy_model(t, "mha_untied", "safetensors", d / "m")
    edit_config(m, lambda c: c.update(num_attention_heads=0))
    return m, MODEL_CMDS, [("config.json",), ("num_attention_heads",)]


@case("config_negative_vocab")
def _(t, d):
    m = copy_model(t, "mha_untied", "safetensors", d / "m")
    edit_config(m, lambda c: c.update(vocab_size=-256))
    return m, MODEL_CMDS, [("config.json",), ("vocab_size",)]


@case("config_kv_heads_not_divisor")
def _(t, d):
    m = copy_model(t, "mha_untied", "safetensors", d / "m")   # 4 heads
    edit_config(m, lambda c: c.update(num_key_value_heads=3))
    return m, MODEL_CMDS, [("config.json",), ("num_key_value_heads",)]


@case("config_string_for_number")
def _(t, d):
    m = copy_model(t, "mha_untied", "safetensors", d / "m")
    edit_config(m, lambda c: c.update(intermediate_size="172"))
    return m, MODEL_CMDS, [("config.json",), ("intermediate_size",)]


@case("config_huge_hidden_size")
def _(t, d):
    # sizes computed from this must not overflow: either the config check or the tensor shape
    # check refuses it
    m = copy_model(t, "mha_untied", "safetensors", d / "m")
    edit_config(m, lambda c: c.update(hidden_size=1 << 40))
    return m, MODEL_CMDS, [("config.json", "model.safetensors")]


# --- safetensors -----------------------------------------------------------

def _st_trunc(where):
    def build(t, d):
        m = copy_model(t, "gqa_tied", "safetensors", d / "m")
        p = m / "model.safetensors"
        size = p.stat().st_size
        hlen = struct.unpack("<Q", p.read_bytes()[:8])[0]
        n = {"empty": 0, "in_length": 5, "in_header": 8 + hlen // 2, "after_header": 8 + hlen,
             "mid_data": (8 + hlen + size) // 2, "last_byte": size - 1}[where]
        truncate(p, n)
        return m, MODEL_CMDS, [("model.safetensors",)]
    return build


for _w in ("empty", "in_length", "in_header", "after_header", "mid_data", "last_byte"):
    CASES[f"safetensors_truncated_{_w}"] = _st_trunc(_w)


@case("safetensors_header_length_huge")
def _(t, d):
    m = copy_model(t, "gqa_tied", "safetensors", d / "m")
    patch(m / "model.safetensors", 0, struct.pack("<Q", 1 << 62))
    return m, MODEL_CMDS, [("model.safetensors",)]


@case("safetensors_header_not_json")
def _(t, d):
    m = copy_model(t, "gqa_tied", "safetensors", d / "m")
    patch(m / "model.safetensors", 8, b"#")
    return m, MODEL_CMDS, [("model.safetensors",)]


@case("safetensors_offsets_past_end")
def _(t, d):
    m = copy_model(t, "gqa_tied", "safetensors", d / "m")
    name = "model.layers.1.mlp.up_proj.weight"

    def fn(h):
        a, b = h[name]["data_offsets"]
        h[name]["data_offsets"] = [a + (1 << 40), b + (1 << 40)]
    st_edit_header(m / "model.safetensors", fn)
    return m, MODEL_CMDS, [("model.safetensors",)]


@case("safetensors_offsets_disagree_with_shape")
def _(t, d):
    m = copy_model(t, "gqa_tied", "safetensors", d / "m")
    name = "model.layers.0.self_attn.o_proj.weight"
    st_edit_header(m / "model.safetensors", lambda h: h[name].update(shape=[128, 129]))
    return m, MODEL_CMDS, [("model.safetensors",)]


@case("safetensors_unknown_dtype")
def _(t, d):
    m = copy_model(t, "gqa_tied", "safetensors", d / "m")
    name = "model.layers.0.self_attn.o_proj.weight"
    st_edit_header(m / "model.safetensors", lambda h: h[name].update(dtype="F31"))
    return m, MODEL_CMDS, [("model.safetensors",)]


@case("safetensors_q_proj_wrong_shape")
def _(t, d):
    import torch
    m = copy_model(t, "mha_untied", "safetensors", d / "m")   # hidden 64
    name = "model.layers.1.self_attn.q_proj.weight"
    st_rewrite_tensors(m / "model.safetensors", lambda sd: sd.update({name: torch.zeros(64, 72)}))
    return m, MODEL_CMDS, [("model.safetensors", "config.json"), ("q_proj",)]


@case("safetensors_embedding_wrong_vocab")
def _(t, d):
    import torch
    m = copy_model(t, "gqa_tied", "safetensors", d / "m")   # vocab 512, hidden 128
    name = "model.embed_tokens.weight"
    st_rewrite_tensors(m / "model.safetensors", lambda sd: sd.update({name: torch.zeros(500, 128)}))
    return m, MODEL_CMDS, [("model.safetensors", "config.json"), ("embed_tokens",)]


@case("safetensors_missing_weight")
def _(t, d):
    m = copy_model(t, "mha_untied", "safetensors", d / "missing_weight_model")
    st_rewrite_tensors(m / "model.safetensors", lambda sd: sd.pop("model.layers.1.mlp.down_proj.weight"))
    return m, MODEL_CMDS, [("model.safetensors", "missing_weight_model"), ("down_proj",)]


@case("safetensors_sharded_missing_shard")
def _(t, d):
    m = copy_model(t, "gqa_tied", "safetensors_sharded", d / "m")
    (m / "model-00002-of-00003.safetensors").unlink()
    return m, MODEL_CMDS, [("model-00002-of-00003.safetensors",)]


@case("safetensors_sharded_index_truncated")
def _(t, d):
    m = copy_model(t, "gqa_tied", "safetensors_sharded", d / "m")
    p = m / "model.safetensors.index.json"
    p.write_text(p.read_text()[:100])
    return m, MODEL_CMDS, [("model.safetensors.index.json",)]


@case("safetensors_sharded_shard_truncated")
def _(t, d):
    m = copy_model(t, "gqa_tied", "safetensors_sharded", d / "m")
    p = m / "model-00003-of-00003.safetensors"
    truncate(p, p.stat().st_size - 100)
    return m, MODEL_CMDS, [("model-00003-of-00003.safetensors",)]


# --- GGUF ------------------------------------------------------------------

def _gguf_trunc(where):
    def build(t, d):
        info_at, data_at, size, _ = gguf_layout()
        n = {"0": 0, "3": 3, "6": 6, "12": 12, "20": 20, "30": 30, "kv_mid": info_at // 2,
             "tensor_info": info_at + 10, "before_data": data_at - 1, "data_start": data_at + 100,
             "last_byte": size - 1}[where]
        p = gguf_copy(d, f"trunc_{where}")
        truncate(p, n)
        return p, MODEL_CMDS, [(p.name,)]
    return build


for _w in ("0", "3", "6", "12", "20", "30", "kv_mid", "tensor_info", "before_data", "data_start",
           "last_byte"):
    CASES[f"gguf_truncated_{_w}"] = _gguf_trunc(_w)


def _gguf_patch(name, offset_fn, data_fn):
    def build(t, d):
        p = gguf_copy(d, name)
        off = offset_fn()
        b = bytearray(p.read_bytes()[off:off + 8])
        patch(p, off, data_fn(b))
        return p, MODEL_CMDS, [(p.name,)]
    return build


CASES["gguf_bad_magic"] = _gguf_patch("bad_magic", lambda: 0, lambda b: b"GGUX")
CASES["gguf_version_99"] = _gguf_patch("version_99", lambda: 4, lambda b: struct.pack("<I", 99))
# the tensor count is the u64 at offset 8: flip its top byte (absurd count) or a low bit (more
# tensors than the file holds: the parser walks into the data as if it were tensor infos)
CASES["gguf_tensor_count_top_byte"] = _gguf_patch("tcount_top", lambda: 15, lambda b: bytes([b[0] ^ 0xFF]))
CASES["gguf_tensor_count_bit"] = _gguf_patch("tcount_bit", lambda: 8, lambda b: bytes([b[0] ^ 0x40]))
CASES["gguf_kv_count_top_byte"] = _gguf_patch("kvcount_top", lambda: 23, lambda b: bytes([b[0] ^ 0xFF]))
CASES["gguf_first_key_length_huge"] = _gguf_patch("keylen_huge", lambda: 24, lambda b: struct.pack("<Q", 1 << 61))
CASES["gguf_tensor_bad_type"] = _gguf_patch("tensor_type", lambda: gguf_layout()[3][0], lambda b: struct.pack("<I", 1234))
CASES["gguf_tensor_offset_past_end"] = _gguf_patch("tensor_offset", lambda: gguf_layout()[3][1],
                                                   lambda b: struct.pack("<Q", 1 << 40))
CASES["gguf_tensor_ndims_9"] = _gguf_patch("tensor_ndims", lambda: gguf_layout()[3][2], lambda b: struct.pack("<I", 9))


# --- tokenizer files -------------------------------------------------------

def _tok_model(kind):
    def build(t, d):
        p = d / "tokenizer.model"
        src = (DATA / "llama-tokenizer" / "tokenizer.model").read_bytes()
        if kind == "truncated":
            p.write_bytes(src[:len(src) // 3])
        else:   # random bytes
            p.write_bytes(np.random.default_rng(7).integers(0, 256, 5000, dtype=np.uint8).tobytes())
        return p, ("tokenize",), [("tokenizer.model",)]
    return build


CASES["tokenizer_model_truncated"] = _tok_model("truncated")
CASES["tokenizer_model_random_bytes"] = _tok_model("random")


def _tok_json(kind):
    def build(t, d):
        p = make_tokenizer_json(d / "tokenizer.json")
        j = json.loads(p.read_text())
        if kind == "truncated":
            p.write_text(p.read_text()[:2000])
        elif kind == "no_vocab":
            j["model"].pop("vocab")
            p.write_text(json.dumps(j))
        elif kind == "vocab_is_list":
            j["model"]["vocab"] = list(j["model"]["vocab"])
            p.write_text(json.dumps(j))
        elif kind == "merge_unknown_token":
            m0 = j["model"]["merges"][0]
            j["model"]["merges"][0] = (["qqqzzz", "xxyyww"] if isinstance(m0, list) else "qqqzzz xxyyww")
            p.write_text(json.dumps(j))
        return p, ("tokenize",), [("tokenizer.json",)]
    return build


for _k in ("truncated", "no_vocab", "vocab_is_list", "merge_unknown_token"):
    CASES[f"tokenizer_json_{_k}"] = _tok_json(_k)


@case("tokenizer_config_json_invalid")
def _(t, d):
    p = make_tokenizer_json(d / "tokenizer.json")
    (d / "tokenizer_config.json").write_text('{"add_bos_token": tru')
    return p, ("tokenize",), [("tokenizer_config.json",)]


@case("model_folder_with_corrupt_tokenizer_model")
def _(t, d):
    m = copy_model(t, "mha_untied", "safetensors", d / "m")
    src = (DATA / "llama-tokenizer" / "tokenizer.model").read_bytes()
    (m / "tokenizer.model").write_bytes(src[:len(src) // 3])
    return m, ("info",), [("tokenizer.model",)]


@case("model_folder_with_corrupt_tokenizer_json")
def _(t, d):
    m = copy_model(t, "mha_untied", "safetensors", d / "m")
    p = make_tokenizer_json(m / "tokenizer.json")
    p.write_text(p.read_text()[:2000])
    return m, ("info",), [("tokenizer.json",)]


# --- PyTorch .bin ----------------------------------------------------------

def _bin_pickle(kind):
    def build(t, d):
        m = copy_model(t, "mha_untied", "bin", d / "m")

        def new_pkl(pkl):
            if kind == "next_buffer":      # protocol-5 NEXT_BUFFER (0x97), after EMPTY_DICT BINPUT 0
                return pkl[:5] + b"\x97" + pkl[5:]
            if kind == "ext1":             # EXT1 (0x82): the copyreg extension registry
                return pkl[:5] + b"\x82\x01" + pkl[5:]
            if kind == "not_an_opcode":    # 0xff is no opcode at all
                return pkl[:5] + b"\xff" + pkl[5:]
            if kind == "global_os_system":  # a callable no checkpoint needs (and must never run)
                return (b"\x80\x02cos\nsystem\nq\x00X\x04\x00\x00\x00trueq\x01\x85q\x02Rq\x03.")
            raise ValueError(kind)
        torch_zip_replace_pickle(m / "pytorch_model.bin", new_pkl)
        return m, MODEL_CMDS, [("pytorch_model.bin",)]
    return build


for _k in ("next_buffer", "ext1", "not_an_opcode", "global_os_system"):
    CASES[f"bin_pickle_{_k}"] = _bin_pickle(_k)


@case("bin_truncated")
def _(t, d):
    m = copy_model(t, "mha_untied", "bin", d / "m")
    p = m / "pytorch_model.bin"
    truncate(p, p.stat().st_size // 2)
    return m, MODEL_CMDS, [("pytorch_model.bin",)]


@case("bin_storage_record_missing")
def _(t, d):
    m = copy_model(t, "mha_untied", "bin", d / "m")
    torch_zip_drop(m / "pytorch_model.bin", "/data/3")
    return m, MODEL_CMDS, [("pytorch_model.bin",)]


@case("bin_legacy_non_zip")
def _(t, d):
    import torch
    m = copy_model(t, "mha_untied", "bin", d / "m")
    sd = torch.load(str(m / "pytorch_model.bin"), weights_only=True)
    torch.save(sd, str(m / "pytorch_model.bin"), _use_new_zipfile_serialization=False)
    return m, MODEL_CMDS, [("pytorch_model.bin",)]


@case("bin_q_proj_wrong_shape")
def _(t, d):
    import torch
    m = copy_model(t, "mha_untied", "bin", d / "m")
    sd = torch.load(str(m / "pytorch_model.bin"), weights_only=True)
    sd["model.layers.0.self_attn.q_proj.weight"] = torch.zeros(72, 64)
    torch.save(sd, str(m / "pytorch_model.bin"))
    return m, MODEL_CMDS, [("pytorch_model.bin", "config.json"), ("q_proj",)]


@case("bin_sharded_missing_shard")
def _(t, d):
    m = copy_model(t, "mha_untied", "bin_sharded", d / "m")
    (m / "pytorch_model-00001-of-00003.bin").unlink()
    return m, MODEL_CMDS, [("pytorch_model-00001-of-00003.bin",)]


# ---------------------------------------------------------------------------

VARIANTS = [name for name, _ in guanaco_variants()]


def _cmd_args(cmd, path, tmp):
    if cmd == "info":
        return ["info", "-m", path]
    if cmd == "logits":
        return ["logits", "-m", path, "--ids", "1 5 9", "-o", tmp / "never.npy"]
    if cmd == "tokenize":
        return ["tokenize", "-m", path, "-p", "Hello world"]
    raise ValueError(cmd)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(tiny_models, tmp_path, name, variant):
    binary = dict(guanaco_variants())[variant]
    assert binary.exists(), f"{binary} not built"
    work = tmp_path / "case"
    work.mkdir()
    path, cmds, must_name = CASES[name](tiny_models, work)
    problems = []
    for cmd in cmds:
        args = _cmd_args(cmd, path, tmp_path)
        p = run_binary(binary, *args, timeout=300)
        lines = [l for l in p.stderr.splitlines() if l.strip()]
        where = f"[{variant}] guanaco {cmd} ({name}): exit {p.returncode}, stderr:\n{p.stderr[-3000:]}"
        rep = sanitizer_report(p.stderr + p.stdout)
        if rep:
            problems.append(f"sanitizer report: {rep}\n{where}")
            continue
        if p.returncode != 1:
            problems.append(f"exit status {p.returncode}, expected 1\n{where}")
        if len(lines) != 1:
            problems.append(f"{len(lines)} stderr lines, expected 1\n{where}")
        if not lines or not lines[0].startswith("guanaco: "):
            problems.append(f"error line does not start with 'guanaco: '\n{where}")
        else:
            for alts in must_name:
                if not any(a in lines[0] for a in alts):
                    problems.append(f"error line names none of {alts}: {lines[0]!r}")
        if cmd == "logits" and (tmp_path / "never.npy").exists():
            problems.append(f"logits wrote an output file despite the error\n{where}")
    assert not problems, "\n\n".join(problems)
