"""gen_nf4.py — inputs and bitsandbytes reference outputs for tests/test_nf4.py.

The oracle is bitsandbytes.functional.quantize_4bit / dequantize_4bit (and
quantize_blockwise for the nested 8-bit step) as installed in the venv, run on
CPU tensors. In bitsandbytes 0.50 that means:
  * quantize_4bit: the torch fallback (backends/default/ops.py): per block
    absmax, x * (1 / max(absmax, 1e-38)) for full blocks and x / max(absmax,
    1e-38) for the last partial one, torch.bucketize on float32 midpoints;
  * compress_statistics: torch's float32 absmax.mean() (thread-count
    dependent for >= 32768 blocks), then the native CPU quantize_blockwise
    (65536-bin lookup table) on absmax - offset in blocks of 256;
  * dequantize: code * absmax in float32, rounded to the state's dtype.
The CUDA kernels give the same values but other bytes in a few places (the
all-zero block packs 0x00 on CUDA, 0x77 here; NaN packs code 0 on CUDA, 15
here; an odd tail's spare nibble is 0 on CUDA, the code of 0.0 here; FP4 puts
tiny positives on index 0 on CUDA, index 8 here; the 8-bit absmax codes use a
binary search with other ties on CUDA). We match the CPU path because it is
the one we can run and check bit for bit; a file written by either path
loads exactly (dequantization only multiplies stored numbers).
"""
import json
import logging
import os

import numpy as np
import torch

logging.disable(logging.WARNING)  # bnb warns that the optional 'kernels' package is absent
import bitsandbytes.functional as F  # noqa: E402

logging.disable(logging.NOTSET)

# bnb wraps its torch dequantize fallback (used for odd last dims) in
# torch.compile, which recompiles for every new shape (seconds each). Eager mode
# computes the same float32 product and rounding (checked: identical bits).
torch._dynamo.config.disable = True

TORCH_DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}
NP_VIEW = {"f32": np.uint32, "f16": np.uint16, "bf16": np.uint16}

NF4 = np.array(F.get_4bit_type("nf4", device="cpu").numpy(), dtype=np.float32)
NF4_THRESHOLDS = ((NF4[:-1] + NF4[1:]) / np.float32(2)).astype(np.float32)


def make_input(shape, dtype, kind, seed, finite=False):
    """A float32 numpy array (already rounded to `dtype`) of the given kind.

    normal: randn with a per-row scale spread over 1e-3..10.
    edge:   normal plus, at fixed places, an all-zero block, blocks of tiny
            values (below the 1e-38 clamp, subnormal in the input dtype), exact
            NF4 decision thresholds next to a 1.0 (ties), -0.0, values just
            above 0 (FP4's index 8), and unless `finite`: +inf, -inf and NaN.
    """
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape))
    rows = shape[0] if len(shape) > 1 else 1
    scale = (10.0 ** rng.uniform(-3, 1, size=(rows, 1))).astype(np.float32)
    x = (rng.standard_normal((rows, n // rows)).astype(np.float32) * scale).reshape(-1)
    if kind == "edge":
        def put(i, vals):
            vals = np.asarray(vals, dtype=np.float32)
            j = min(len(vals), n - i) if 0 <= i < n else 0
            if j > 0:
                x[i:i + j] = vals[:j]
        put(64, np.zeros(64))                                # an all-zero block (block size 32/64)
        put(128, [1.0] + list(NF4_THRESHOLDS) + list(-NF4_THRESHOLDS) + [0.0, -0.0])
        put(180, [1e-3, 2e-3, -1e-3, 2.5e-3, 2.7e-3, -2.6e-3])  # around FP4's 0.0026 boundary (scale 1)
        tiny = {"f32": 1e-40, "f16": 3e-7, "bf16": 1e-39}[dtype]
        put(256, rng.standard_normal(64).astype(np.float32) * np.float32(tiny))  # subnormal block
        put(320, np.full(32, 5e-39, dtype=np.float32))         # below the 1e-38 clamp (f32 only: bf16/f16 round)
        if not finite:
            put(400, [np.inf, 1.0, -2.0, 0.5])
            put(480, [-np.inf, 3.0])
            put(530, [np.nan, 1.0, -1.0])
        put(n - 3, [1.0, 0.5, -0.25])
    t = torch.from_numpy(x).to(TORCH_DTYPES[dtype])
    return t.float().numpy(), t.reshape(shape)


def raw_bytes(t):
    """The tensor's bytes (any dtype) as numpy uint8."""
    t = t.contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(np.uint8).reshape(-1)
    return t.numpy().view(np.uint8).reshape(-1)


def bnb_quantize(t, blocksize, quant_type, double_quant):
    """bnb's outputs for tensor t: dict of numpy arrays plus the JSON bytes."""
    q, s = F.quantize_4bit(t, blocksize=blocksize, quant_type=quant_type, compress_statistics=double_quant)
    out = {"packed": q.numpy().reshape(-1), "absmax": s.absmax.numpy().reshape(-1)}
    if double_quant:
        out["nested_absmax"] = s.state2.absmax.numpy().reshape(-1)
        out["offset"] = np.array([s.offset.item()], dtype=np.float32)
        out["nested_code"] = s.state2.code.numpy()
    out["deq"] = F.dequantize_4bit(q, s)                # in t's dtype
    s32 = F.QuantState(absmax=s.absmax, shape=s.shape, code=s.code, blocksize=s.blocksize,
                       quant_type=s.quant_type, dtype=torch.float32, offset=s.offset, state2=s.state2)
    out["deq_f32"] = F.dequantize_4bit(q, s32).numpy().reshape(-1)
    packed = s.as_dict(packed=True)
    out["json"] = bytes(packed[f"quant_state.bitsandbytes__{quant_type}"].numpy())
    out["state"] = s
    out["q"] = q
    return out


def f32_to_dtype_bits(x, dtype):
    """float32 -> the bits of `dtype` (f32/f16/bf16) by round-to-nearest-even
    with gradual underflow; a NaN keeps its sign and top payload bits."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    nan = (u & 0x7FFFFFFF) > 0x7F800000
    if dtype == "f32":
        return u.astype(np.uint32)
    if dtype == "bf16":
        r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) & 0xFFFF
        return np.where(nan, (u >> 16) | 0x40, r).astype(np.uint16)
    with np.errstate(over="ignore"):
        h = np.ascontiguousarray(x, dtype=np.float32).astype(np.float16).view(np.uint16).astype(np.uint64)
    return np.where(nan, ((u >> 16) & 0x8000) | 0x7E00 | ((u >> 13) & 0x3FF), h).astype(np.uint16)


def expected_dequant(packed, absmax, quant_type, n, blocksize, dtype):
    """The definition our dequantizer implements: dtype(code[q] * absmax) in
    float32, blocks over the flat index, FP4 index 8 = -0.0 (CUDA's table).
    Returns the bits (uint32 / uint16)."""
    p = np.asarray(packed, dtype=np.uint8).reshape(-1)
    q = np.empty(p.size * 2, dtype=np.int64)
    q[0::2] = p >> 4
    q[1::2] = p & 15
    code = np.array(F.get_4bit_type(quant_type, device="cpu").numpy(), dtype=np.float32)
    if quant_type == "fp4":
        code[8] = np.float32(-0.0)
    with np.errstate(invalid="ignore"):  # 0 * inf
        prod = code[q[:n]] * np.asarray(absmax, dtype=np.float32)[np.arange(n) // blocksize]
    return f32_to_dtype_bits(prod.astype(np.float32), dtype)


def bnb_absmax_used(state):
    """The float32 scales bnb's dequantize_4bit multiplies by (DQ rebuilt)."""
    if state.nested:
        return (F.dequantize_blockwise(state.absmax, state.state2) + state.offset).float().numpy()
    return state.absmax.float().numpy()


def linear4bit_state_dict(w, quant_type, double_quant):
    """state_dict() of a bnb.nn.Linear4bit holding w (out, in): the tensors
    transformers saves for a quantized Linear (keys relative to the module)."""
    import bitsandbytes as bnb
    lin = bnb.nn.Linear4bit(w.shape[1], w.shape[0], bias=False, compute_dtype=torch.bfloat16,
                            compress_statistics=double_quant, quant_type=quant_type)
    lin.weight = bnb.nn.Params4bit(w, requires_grad=False, compress_statistics=double_quant,
                                   quant_type=quant_type)
    lin = lin.to("cpu")
    return {k: v.clone() for k, v in lin.state_dict().items()}


def write_raw(path, arr_bytes):
    with open(path, "wb") as f:
        f.write(arr_bytes.tobytes())


def read_raw(path, dtype):
    return np.fromfile(path, dtype=dtype)


if __name__ == "__main__":
    # Prints bnb's outputs for a small case (for looking at by hand).
    x, t = make_input((3, 100), "f32", "edge", 0)
    r = bnb_quantize(t, 64, "nf4", False)
    print("packed", r["packed"][:80].tolist())
    print("absmax", r["absmax"].tolist())
    print("json", json.loads(r["json"]))
    print("threads", torch.get_num_threads(), os.cpu_count())
