"""`guanaco dump` against the Python libraries that write each weights format.

Oracles: safetensors.torch / torch tensors for .safetensors, torch.save'd state
dicts for .bin, gguf.quants.dequantize for GGUF blocks (bitwise for float32
results). Nothing expected here comes from guanaco's own output.

Run: ~/.cache/guanaco/venv/bin/python -m pytest tests/test_formats.py
"""
import pathlib
import struct
import zipfile

import gguf
import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as QT
from safetensors.torch import save_file

from conftest import run_guanaco


# ---------------------------------------------------------------------------
# helpers


def dump(path, name, tmp_path):
    out = pathlib.Path(tmp_path) / "out.npy"
    run_guanaco("dump", "-m", path, "--name", name, "-o", out)
    a = np.load(out)
    out.unlink()
    return a


def listing(path):
    """name -> (dtype, shape tuple, nbytes) from `dump --list`."""
    p = run_guanaco("dump", "-m", path, "--list")
    res = {}
    for line in p.stdout.splitlines():
        name, dt, shape, nb = line.rsplit(" ", 3)
        res[name] = (dt, () if shape == "-" else tuple(int(x) for x in shape.split(",")), int(nb))
    return res


def assert_bitwise(got, want):
    want = np.array(want, dtype=np.float32)  # keeps 0-d shapes (ascontiguousarray would not)
    assert got.dtype == np.float32
    assert got.shape == want.shape, (got.shape, want.shape)
    bad = np.flatnonzero(got.reshape(-1).view(np.uint32) != want.reshape(-1).view(np.uint32))
    assert bad.size == 0, f"{bad.size} differ, first at {bad[:5]}: got {got.reshape(-1)[bad[:5]]}, want {want.reshape(-1)[bad[:5]]}"


def torch_f32(t):
    return t.detach().to(torch.float32).contiguous().numpy()


def assert_one_error_line(p, path, *words):
    assert p.returncode == 1, (p.returncode, p.stderr)
    lines = p.stderr.splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("guanaco: "), lines[0]
    assert str(path) in lines[0], lines[0]
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert "Traceback" not in p.stderr and "runtime error" not in p.stderr


def bad_run(path, *extra):
    return run_guanaco("dump", "-m", path, "--list", *extra, check=False)


# ---------------------------------------------------------------------------
# (a) safetensors written by safetensors.torch.save_file


def specials(dtype):
    v = torch.tensor([0.0, -0.0, 1.0, -2.5, float("inf"), float("-inf"), 1e-7, 65504.0, 3.0e38], dtype=torch.float32)
    return v.to(dtype)


def test_safetensors_values(tmp_path, guanaco_bin):
    g = torch.Generator().manual_seed(0)
    tensors = {
        "scalar": torch.tensor(3.25),
        "empty": torch.zeros(0, 3),
        "f32_1d": torch.randn(7, generator=g),
        "f32_3d": torch.randn(2, 3, 5, generator=g),
        "f16_1d": torch.randn(7, generator=g).half(),
        "f16_specials": specials(torch.float16),
        "f16_subnormals": torch.tensor([5.96e-8, 6.1e-5, -3e-6], dtype=torch.float16),
        "bf16_3d": torch.randn(2, 3, 5, generator=g).bfloat16(),
        "bf16_specials": specials(torch.bfloat16),
        "model.layers.0.weight": torch.randn(4, 8, generator=g),
    }
    path = tmp_path / "m.safetensors"
    save_file(tensors, str(path), metadata={"format": "pt"})
    lst = listing(path)
    names = {"scalar": "f32", "empty": "f32", "f16_1d": "f16", "bf16_3d": "bf16"}
    assert set(lst) == set(tensors)
    for k, t in tensors.items():
        dt, shape, nb = lst[k]
        assert shape == tuple(t.shape), k
        assert nb == t.numel() * t.element_size(), k
        if k in names:
            assert dt == names[k]
        assert_bitwise(dump(path, k, tmp_path), torch_f32(t))


# ---------------------------------------------------------------------------
# (b) torch.save state dicts (zip format)


def state_dict_cases():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(4, 6, generator=g)
    big = torch.randn(10, 3, generator=g)
    emb = torch.randn(5, 4, generator=g)
    return {
        "f32": torch.randn(3, 4, generator=g),
        "f16": torch.randn(9, generator=g).half(),
        "bf16": torch.randn(2, 3, 4, generator=g).bfloat16(),
        "tied_a": w,
        "tied_b": w,                      # same tensor object twice
        "embed.weight": emb,
        "lm_head.weight": emb.view(5, 4),  # a second view of the same storage
        "transposed": w.t(),               # non-contiguous view of w's storage
        "slice": big[2:5],                 # storage offset
        "column": big[:, 1],               # strided 1-D view
        "ints": torch.arange(6, dtype=torch.int64).reshape(2, 3),
        "i32": torch.tensor([-7, 1 << 20], dtype=torch.int32),
        "i16": torch.tensor([-300, 301], dtype=torch.int16),
        "i8": torch.tensor([-128, 127], dtype=torch.int8),
        "u8": torch.tensor([0, 255], dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
        "f64": torch.tensor([0.1, -1e300, 2.5], dtype=torch.float64),
        "param": torch.nn.Parameter(torch.randn(2, 2, generator=g)),
        "scalar": torch.tensor(-1.5),
        "empty": torch.zeros(0, 2),
    }


@pytest.mark.parametrize("protocol", [2, 4])
def test_torch_bin_values(tmp_path, guanaco_bin, protocol):
    sd = state_dict_cases()
    path = tmp_path / "pytorch_model.bin"
    torch.save(sd, path, pickle_protocol=protocol)
    lst = listing(path)
    assert set(lst) == set(sd)
    for k, t in sd.items():
        assert lst[k][1] == tuple(t.shape), k
        assert_bitwise(dump(path, k, tmp_path), torch_f32(t))


def test_torch_module_state_dict_and_shards(tmp_path, guanaco_bin):
    torch.manual_seed(2)
    m = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.LayerNorm(16), torch.nn.Linear(16, 4, bias=False))
    sd = m.state_dict()  # OrderedDict with _metadata (BUILD)
    keys = list(sd)
    shards = [dict((k, sd[k]) for k in keys[:2]), dict((k, sd[k]) for k in keys[2:])]
    for i, shard in enumerate(shards):
        path = tmp_path / f"pytorch_model-0000{i + 1}-of-00002.bin"
        torch.save(shard, path)
        lst = listing(path)
        assert set(lst) == set(shard)
        for k, t in shard.items():
            assert_bitwise(dump(path, k, tmp_path), torch_f32(t))


# ---------------------------------------------------------------------------
# (c) GGUF written by gguf.GGUFWriter, compared with gguf.quants.dequantize


def write_gguf(path, tensors):
    """tensors: name -> (array, raw_dtype or None)."""
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_uint32("llama.block_count", 1)
    for name, (arr, qt) in tensors.items():
        w.add_tensor(name, arr, raw_dtype=qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def random_blocks(rng, qt, n_blocks):
    """Random bytes for n_blocks of a k-quant/q5 type, with finite f16 scales."""
    bs, ts = gguf.GGML_QUANT_SIZES[qt]
    raw = rng.integers(0, 256, size=(n_blocks, ts), dtype=np.uint8)
    scales = rng.uniform(-0.5, 0.5, size=(n_blocks, 2)).astype(np.float16).view(np.uint8)
    if qt == QT.Q6_K:           # ql, qh, scales, d
        raw[:, ts - 2:] = scales[:, :2]
    else:                       # d (and m/dmin) first
        raw[:, :2] = scales[:, :2]
        if qt in (QT.Q5_1, QT.Q4_K, QT.Q5_K):
            raw[:, 2:4] = scales[:, 2:4]
    return raw


def test_gguf_quant_types(tmp_path, guanaco_bin):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 64)).astype(np.float32)
    tensors = {
        "f32": (x, None),
        "f16": (x.astype(np.float16), None),
        "bf16": (gguf.quants.quantize(x, QT.BF16), QT.BF16),
        "q8_0": (gguf.quants.quantize(x, QT.Q8_0), QT.Q8_0),
        "q4_0": (gguf.quants.quantize(x, QT.Q4_0), QT.Q4_0),
        "q4_1": (gguf.quants.quantize(x, QT.Q4_1), QT.Q4_1),
        "q5_0": (gguf.quants.quantize(x, QT.Q5_0), QT.Q5_0),
        "q5_1": (gguf.quants.quantize(x, QT.Q5_1), QT.Q5_1),
        "q4_K": (random_blocks(rng, QT.Q4_K, 6).reshape(3, -1), QT.Q4_K),
        "q5_K": (random_blocks(rng, QT.Q5_K, 6).reshape(3, -1), QT.Q5_K),
        "q6_K": (random_blocks(rng, QT.Q6_K, 6).reshape(3, -1), QT.Q6_K),
        "q5_0_raw": (random_blocks(rng, QT.Q5_0, 8).reshape(2, -1), QT.Q5_0),
    }
    path = tmp_path / "q.gguf"
    write_gguf(path, tensors)
    lst = listing(path)
    for name, (arr, qt) in tensors.items():
        if qt is None:
            want = arr.astype(np.float32)
        else:
            want = gguf.quants.dequantize(arr, qt)
        assert lst[name][1] == want.shape, (name, lst[name], want.shape)
        assert_bitwise(dump(path, name, tmp_path), want)
    assert lst["q4_1"][0] == "q4_1" and lst["q8_0"][0] == "q8_0" and lst["bf16"][0] == "bf16"


# ---------------------------------------------------------------------------
# (d) the real SmolLM2 GGUF


def test_smollm2_gguf_tensors(tmp_path, guanaco_bin, smollm2_gguf):
    reader = gguf.GGUFReader(str(smollm2_gguf))
    by_name = {t.name: t for t in reader.tensors}
    lst = listing(smollm2_gguf)
    assert set(lst) == set(by_name)
    for name in ["blk.0.attn_norm.weight", "blk.0.ffn_down.weight", "blk.3.attn_q.weight", "output_norm.weight"]:
        t = by_name[name]
        want = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type)
        shape = tuple(int(d) for d in reversed(t.shape))
        assert lst[name][1] == shape
        assert_bitwise(dump(smollm2_gguf, name, tmp_path), want.reshape(shape))
    # the embedding (q8_0): a few rows are enough to compare, but dump writes it whole
    t = by_name["token_embd.weight"]
    assert t.tensor_type == QT.Q8_0
    got = dump(smollm2_gguf, "token_embd.weight", tmp_path)
    rows = np.asarray(t.data)[[0, 1, 1000, 49151]]
    assert_bitwise(got[[0, 1, 1000, 49151]], gguf.quants.dequantize(rows, QT.Q8_0))


# ---------------------------------------------------------------------------
# (e) bad files: exit 1, one "guanaco: " line naming the file


@pytest.fixture
def good_st(tmp_path):
    path = tmp_path / "good.safetensors"
    save_file({"a": torch.arange(12, dtype=torch.float32).reshape(3, 4), "b": torch.ones(5)}, str(path))
    return path


def test_bad_safetensors(tmp_path, guanaco_bin, good_st):
    data = good_st.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    cases = {
        "trunc.safetensors": (data[: len(data) - 3], "exceed"),
        "short.safetensors": (data[:5], "at least 8"),
        "hlen.safetensors": (struct.pack("<Q", len(data)) + data[8:], "header length"),
        "json.safetensors": (data[:8] + b"{]" + data[10:], "invalid JSON"),
        "empty.safetensors": (b"", "at least 8"),
    }
    for fname, (content, word) in cases.items():
        p = tmp_path / fname
        p.write_bytes(content)
        assert_one_error_line(bad_run(p), p, word)
    # offsets beyond the data section, with the exact message shape
    hdr = b'{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,100]}}'
    p = tmp_path / "offs.safetensors"
    p.write_bytes(struct.pack("<Q", len(hdr)) + hdr + bytes(8))
    assert_one_error_line(bad_run(p), p, "tensor 'x': data_offsets [0,100] exceed the 8-byte data section")
    assert n > 0
    missing = tmp_path / "missing.safetensors"
    assert_one_error_line(bad_run(missing), missing)
    p = run_guanaco("dump", "-m", good_st, "--name", "nope", "-o", tmp_path / "x.npy", check=False)
    assert_one_error_line(p, good_st, "'nope'")


def test_bad_gguf(tmp_path, guanaco_bin):
    good = tmp_path / "good.gguf"
    write_gguf(good, {"w": (np.ones((2, 32), dtype=np.float32), None)})
    data = good.read_bytes()
    cases = {
        "magic.gguf": (b"GGUX" + data[4:], "magic"),
        "trunc.gguf": (data[: len(data) - 5], "exceeds"),
        "head.gguf": (data[:20], "file ends"),
        "count.gguf": (data[:8] + struct.pack("<Q", 1 << 62) + data[16:], "tensor count"),
        "nkv.gguf": (data[:16] + struct.pack("<Q", (1 << 64) - 1) + data[24:], "metadata count"),
        "v1.gguf": (data[:4] + struct.pack("<I", 1) + data[8:], "version 1"),
    }
    for fname, (content, word) in cases.items():
        p = tmp_path / fname
        p.write_bytes(content)
        assert_one_error_line(bad_run(p), p, word)


def rezip(src, dst, replace=None, compress=None):
    """Copies a torch zip, replacing entries (name suffix -> bytes), stored unless compress."""
    with zipfile.ZipFile(src) as zi, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zo:
        for info in zi.infolist():
            data = zi.read(info.filename)
            for suffix, new in (replace or {}).items():
                if info.filename.endswith(suffix):
                    data = new
            ct = zipfile.ZIP_DEFLATED if compress and info.filename.endswith(compress) else zipfile.ZIP_STORED
            zo.writestr(info.filename, data, compress_type=ct)


def test_bad_torch_bin(tmp_path, guanaco_bin):
    good = tmp_path / "good.bin"
    torch.save({"w": torch.ones(3)}, good)
    # our own rewritten copy of a good file still loads (the zip writer is Python's, not torch's)
    same = tmp_path / "same.bin"
    rezip(good, same)
    assert_bitwise(dump(same, "w", tmp_path), np.ones(3, np.float32))

    cases = {
        # INT (protocol 0 text integer): an opcode the reader does not implement
        "opcode.bin": ({"data.pkl": b"\x80\x02}q\x00X\x01\x00\x00\x00aI5\nu."}, None, "unsupported pickle opcode 0x49"),
        # a global outside the allow-list
        "global.bin": ({"data.pkl": b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00echo\x85R."}, None,
                       "unsupported pickle global 'os.system'"),
        "compressed.bin": (None, "data.pkl", "compressed"),
        "notdict.bin": ({"data.pkl": b"\x80\x02]."}, None, "expected a dict"),
    }
    for fname, (repl, comp, word) in cases.items():
        p = tmp_path / fname
        rezip(good, p, repl, comp)
        assert_one_error_line(bad_run(p), p, word)
    data = good.read_bytes()
    p = tmp_path / "trunc.bin"
    p.write_bytes(data[: len(data) // 2])
    assert_one_error_line(bad_run(p), p)
    legacy = tmp_path / "legacy.bin"
    torch.save({"w": torch.ones(3)}, legacy, _use_new_zipfile_serialization=False)
    assert_one_error_line(bad_run(legacy), legacy, "legacy")


def test_dump_usage(guanaco_bin):
    p = run_guanaco("dump", "--help")
    assert "--name" in p.stdout and "--list" in p.stdout
    p = run_guanaco("dump", "--bogus", check=False)
    assert p.returncode == 2 and p.stderr.startswith("guanaco: ")
