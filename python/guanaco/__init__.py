"""guanaco: QLoRA fine-tuning and 4-bit LLaMA inference (libguanaco through ctypes).

    import guanaco
    with guanaco.Model("SmolLM2-135M-Instruct.Q4_1.gguf", load_in_4bit=True) as m:
        print(m.chat([{"role": "user", "content": "What is QLoRA?"}], max_new_tokens=64))
        logits = m.logits(m.tokenize("Hello"))        # numpy float32 [T, vocab]
    run = guanaco.finetune("SmolLM2-135M-Instruct.Q4_1.gguf", "data.jsonl", "run", bits=4, max_steps=10)

Threads and the GIL: every call into the library goes through ctypes.CDLL, which
releases the GIL for the whole foreign call, so other Python threads run while a
model computes or trains; the finetune callback and streaming take the GIL back
only while their Python code runs. One Model serializes its own calls with a lock
(it is safe to share between threads, but calls on it do not overlap); separate
Models run in parallel. n_threads sets the library's kernel thread count, which
is process-wide (gn_set_threads).

Errors: GuanacoError carries the library's one-line message (gn_last_error) and
its status; bad Python arguments raise GuanacoArgumentError, which is also a
TypeError and a ValueError.
"""
import ctypes
import json
import math
import os
import queue
import random
import shutil
import signal
import tempfile
import threading

import numpy as np

from . import _lib

__all__ = ["Model", "finetune", "quantize", "merge", "eval_elo", "GuanacoError", "GuanacoArgumentError",
           "set_verbosity", "library_path"]
__version__ = "0.1.0"

_L = _lib.lib
_B = _lib.B
library_path = _lib.PATH


class GuanacoError(Exception):
    """An error reported by libguanaco: str(e) is its one-line message, e.status the gn_status."""

    def __init__(self, message, status=None):
        super().__init__(message)
        self.status = status


class GuanacoArgumentError(GuanacoError, TypeError, ValueError):
    """A Python argument of the wrong type or value, caught before the library is called."""


_STATUS = {v: k for k, v in vars(_B).items() if k.startswith("GN_ERR_") and isinstance(v, int)}


def _check(st):
    if st != _B.GN_OK:
        msg = (_L.gn_last_error() or b"").decode("utf-8", "replace")
        raise GuanacoError(msg or "libguanaco: %s" % _STATUS.get(st, st), st)


def _fail():
    msg = (_L.gn_last_error() or b"").decode("utf-8", "replace")
    raise GuanacoError(msg or "libguanaco: call failed")


def _take_string(p, n=None):
    """A malloc'd char * from the library as str (then freed)."""
    if not p:
        return None
    try:
        raw = ctypes.string_at(p, n) if n is not None else ctypes.string_at(p)
    finally:
        _lib.free(p)
    return raw.decode("utf-8", "replace")


def _path(x, what):
    if isinstance(x, (str, os.PathLike)):
        s = os.fspath(x)
        if isinstance(s, bytes):
            s = s.decode()
        if "\0" in s:
            raise GuanacoArgumentError("%s: a path may not contain NUL" % what)
        return s
    raise GuanacoArgumentError("%s: expected a path (str or os.PathLike), got %s" % (what, type(x).__name__))


def _b(s):
    return s.encode("utf-8") if s is not None else None


def _int(x, what, lo=None, hi=None):
    if isinstance(x, bool) or not isinstance(x, (int, np.integer)):
        raise GuanacoArgumentError("%s: expected an integer, got %s" % (what, type(x).__name__))
    x = int(x)
    if (lo is not None and x < lo) or (hi is not None and x > hi):
        raise GuanacoArgumentError("%s: %d out of range %s..%s" % (what, x, lo, hi))
    return x


def _num(x, what, lo=None, hi=None):
    if isinstance(x, bool) or not isinstance(x, (int, float, np.integer, np.floating)):
        raise GuanacoArgumentError("%s: expected a number, got %s" % (what, type(x).__name__))
    x = float(x)
    if math.isnan(x) or (lo is not None and x < lo) or (hi is not None and x > hi):
        raise GuanacoArgumentError("%s: %g out of range %s..%s" % (what, x, lo, hi))
    return x


def _choice(x, what, table):
    if not isinstance(x, str) or x.lower() not in table:
        raise GuanacoArgumentError("%s: %r (expected one of %s)" % (what, x, ", ".join(sorted(table))))
    return table[x.lower()]


def set_verbosity(level):
    """Library log level on stderr: 0 errors, 1 warnings (default), 2 info, 3 debug."""
    _L.gn_set_verbosity(_int(level, "level", 0, 3))


_DTYPES = {"float32": _B.GN_DTYPE_F32, "f32": _B.GN_DTYPE_F32, "fp32": _B.GN_DTYPE_F32,
           "bfloat16": _B.GN_DTYPE_BF16, "bf16": _B.GN_DTYPE_BF16,
           "float16": _B.GN_DTYPE_F16, "f16": _B.GN_DTYPE_F16, "fp16": _B.GN_DTYPE_F16}
_QUANT = {"nf4": _B.GN_DTYPE_NF4, "fp4": _B.GN_DTYPE_FP4}


def _dtype_name(x):
    if x is None:
        return None
    if not isinstance(x, str):  # torch.bfloat16 and friends
        x = str(x).replace("torch.", "")
    return x


def _device(device):
    if not isinstance(device, str):
        raise GuanacoArgumentError("device: expected 'cpu' or 'cuda', got %s" % type(device).__name__)
    d = ctypes.c_int(0)
    _check(_L.gn_device_parse(_b(device), ctypes.byref(d)))
    return d.value


def _load_opts(load_in_4bit, quant_type, double_quant, compute_dtype, device, dtype="auto", blocksize=0,
               skip_modules=None):
    lo = _B.gn_load_opts()
    if skip_modules is not None:  # transformers: an explicit list replaces the default skip of lm_head
        names = list(skip_modules) if isinstance(skip_modules, (list, tuple)) else None
        if names is None or any(n != "lm_head" for n in names):
            raise GuanacoArgumentError("llm_int8_skip_modules: %r (expected [] or [\"lm_head\"])" % (skip_modules,))
        lo.quant_head = 0 if names else 1
    if load_in_4bit:
        lo.weight_dtype = _choice(quant_type, "bnb_4bit_quant_type", _QUANT)
    else:  # auto: f32, but a pre-quantized bf16 checkpoint's embedding and head stay bf16
        lo.weight_dtype = _choice(_dtype_name(dtype), "dtype", dict(
            {k: v for k, v in _DTYPES.items() if v != _B.GN_DTYPE_F16}, auto=_B.GN_DTYPE_COUNT))
    lo.no_double_quant = 0 if double_quant else 1
    lo.blocksize = _int(blocksize, "blocksize", 0, 4096)
    if lo.blocksize & (lo.blocksize - 1):
        raise GuanacoArgumentError("blocksize %d: expected a power of two 16..4096" % lo.blocksize)
    cd = _dtype_name(compute_dtype)
    lo.compute_dtype = _B.GN_DTYPE_COUNT if cd == "auto" else _choice(cd, "compute_dtype", _DTYPES)
    lo.device = _device(device)
    return lo


def _set_threads(n_threads):
    if n_threads is not None:
        _L.gn_set_threads(_int(n_threads, "n_threads", 1, 1024))


# ----------------------------------------------------------------------------
# handles: freed when the last Python object that needs them goes


class _ModelHandle:
    def __init__(self, ptr):
        self.ptr = ptr
        self.adapter = None

    def __del__(self, _free_adapter=_L.gn_adapter_free, _free_model=_L.gn_model_free):
        # (the functions are bound as defaults: at interpreter exit the module's globals may be gone)
        if self.adapter:
            _free_adapter(self.adapter)
            self.adapter = None
        if self.ptr:
            _free_model(self.ptr)
            self.ptr = None


class _SessionHandle:
    """A gn_session; holds the model handle so the weights outlive every session."""

    def __init__(self, mh, max_seq):
        self.mh = mh
        self.ptr = _L.gn_session_new(mh.ptr, max_seq)
        if not self.ptr:
            _fail()
        if mh.adapter:
            _L.gn_session_set_adapter(self.ptr, mh.adapter)

    def __del__(self, _free=_L.gn_session_free):
        if self.ptr:
            _free(self.ptr)
            self.ptr = None


_CHAT_FORMATS = ("auto", "guanaco", "guanaco-demo", "chatml", "llama2", "llama3")


class Model:
    """A LLaMA-family model (HF folder, safetensors, or .gguf) loaded by libguanaco.

    load_in_4bit / bnb_4bit_quant_type / bnb_4bit_use_double_quant / compute_dtype follow
    transformers' BitsAndBytesConfig (the CLI's --4bit, --quant-type, --no-double-quant,
    --compute-dtype); dtype is the weight dtype without 4-bit ("float32", "bfloat16", or "auto",
    the CLI's default: float32, but a pre-quantized checkpoint stored and computing in bf16 keeps
    its embedding and head in bf16); adapter is a PEFT folder applied unmerged (-a); n_ctx the context (-c);
    device "cpu" or "cuda" (a CUDA=1 build). llm_int8_skip_modules=[] quantizes lm_head too
    (as in BitsAndBytesConfig; the CLI's --4bit-head); None or ["lm_head"] keeps it dense.
    use_mmap=True reads the weights in place from the mapped file (the CLI's --mmap); by default
    those decode streams are copied into memory advised for huge pages (faster decode).
    """

    def __init__(self, path, load_in_4bit=False, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                 compute_dtype="bfloat16", adapter=None, n_threads=None, n_ctx=None, device="cpu", dtype="auto",
                 llm_int8_skip_modules=None, use_mmap=False):
        self._h = None
        self._lock = threading.RLock()
        path = _path(path, "path")
        if n_ctx is not None:
            n_ctx = _int(n_ctx, "n_ctx", 1, 1 << 24)
        self.n_ctx = n_ctx
        lo = _load_opts(load_in_4bit, bnb_4bit_quant_type, bnb_4bit_use_double_quant, compute_dtype, device, dtype,
                        skip_modules=llm_int8_skip_modules)
        if not isinstance(use_mmap, bool):
            raise GuanacoArgumentError("use_mmap: expected True or False, got %s" % type(use_mmap).__name__)
        lo.mmap_weights = int(use_mmap)
        _set_threads(n_threads)
        ptr = ctypes.c_void_p()
        _check(_L.gn_model_load(ctypes.byref(ptr), _b(path), ctypes.byref(lo)))
        h = _ModelHandle(ptr.value)
        if adapter is not None:
            a = ctypes.c_void_p()
            _check(_L.gn_adapter_load(ctypes.byref(a), h.ptr, _b(_path(adapter, "adapter")), None))
            h.adapter = a.value
        self._h = h
        self.path = path

    # -- lifetime
    def close(self):
        """Releases the model. Logits arrays still alive keep the weights until they go."""
        self._h = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _handle(self):
        if self._h is None:
            raise GuanacoError("the model is closed")
        return self._h

    def _tok(self):
        t = _L.gn_model_tokenizer(self._handle().ptr)
        if not t:
            raise GuanacoError("%s: the model has no tokenizer" % self.path)
        return t

    # -- facts
    @property
    def config(self):
        """The model's config as a dict, in transformers' LlamaConfig names."""
        c = _L.gn_model_config(self._handle().ptr).contents
        rope = None
        if c.rope_scaling == _B.GN_ROPE_LINEAR:
            rope = {"rope_type": "linear", "factor": c.rope_factor}
        elif c.rope_scaling == _B.GN_ROPE_LLAMA3:
            rope = {"rope_type": "llama3", "factor": c.rope_factor, "low_freq_factor": c.rope_low_freq_factor,
                    "high_freq_factor": c.rope_high_freq_factor,
                    "original_max_position_embeddings": c.rope_orig_max_pos}
        none = lambda v: None if v < 0 else v  # noqa: E731
        return {"model_type": "llama", "hidden_size": c.dim, "intermediate_size": c.hidden_dim,
                "num_hidden_layers": c.n_layers, "num_attention_heads": c.n_heads,
                "num_key_value_heads": c.n_kv_heads, "head_dim": c.head_dim, "vocab_size": c.vocab_size,
                "max_position_embeddings": c.max_seq, "rms_norm_eps": float("%.7g" % c.norm_eps),
                "rope_theta": float("%.7g" % c.rope_theta),
                "rope_scaling": rope, "tie_word_embeddings": bool(c.tie_embeddings),
                "bos_token_id": none(c.bos_id), "eos_token_id": none(c.eos_id), "pad_token_id": none(c.pad_id)}

    def describe(self):
        """The library's summary (config, tensors, dtypes, bytes), as `guanaco info` prints it."""
        with self._lock:
            return _take_string(_L.gn_model_describe(self._handle().ptr))

    # -- tokens
    def tokenize(self, text, add_bos=True, special=False):
        """Token ids of text (str or bytes); BOS when add_bos and the model expects one."""
        if isinstance(text, str):
            text = text.encode("utf-8")
        elif not isinstance(text, (bytes, bytearray)):
            raise GuanacoArgumentError("text: expected str or bytes, got %s" % type(text).__name__)
        tok = self._tok()
        flags = (_B.GN_ENC_BOS if add_bos and _L.gn_tokenizer_add_bos(tok) else 0) | (_B.GN_ENC_SPECIAL if special else 0)
        ids = ctypes.POINTER(ctypes.c_int32)()
        n = ctypes.c_int(0)
        with self._lock:
            _check(_L.gn_tokenizer_encode(tok, bytes(text), len(text), flags, ctypes.byref(ids), ctypes.byref(n)))
        try:
            return [ids[i] for i in range(n.value)]
        finally:
            _lib.free(ids)

    def _ids(self, ids, what="ids"):
        if isinstance(ids, (str, bytes)):
            raise GuanacoArgumentError("%s: expected a sequence of token ids, got %s (use tokenize())" % (what, type(ids).__name__))
        try:
            a = np.asarray(ids)
        except Exception as e:
            raise GuanacoArgumentError("%s: expected a sequence of token ids (%s)" % (what, e)) from None
        if a.ndim != 1 or (a.size and a.dtype.kind not in "iu"):
            raise GuanacoArgumentError("%s: expected a 1-D sequence of integers, got shape %s dtype %s" % (what, a.shape, a.dtype))
        V = _L.gn_model_config(self._handle().ptr).contents.vocab_size
        if a.size and (a.min() < 0 or a.max() >= V):
            bad = int(a[(a < 0) | (a >= V)][0])
            raise GuanacoArgumentError("%s: token id %d outside the vocabulary (0..%d)" % (what, bad, V - 1))
        return np.ascontiguousarray(a, dtype=np.int32)

    def detokenize(self, ids, skip_special=False):
        """Text of token ids (invalid UTF-8 becomes U+FFFD)."""
        a = self._ids(ids)
        out = ctypes.c_void_p()
        n = ctypes.c_size_t(0)
        with self._lock:
            _check(_L.gn_tokenizer_decode(self._tok(), a.ctypes.data_as(ctypes.POINTER(ctypes.c_int32)), len(a),
                                          1 if skip_special else 0, ctypes.byref(out), ctypes.byref(n)))
        return _take_string(out.value, n.value)

    # -- logits
    def logits(self, ids):
        """Logits of every position, numpy float32 [T, vocab], as `guanaco logits` writes them.

        Zero-copy: the array views the buffer of a session sized to the T tokens (its KV
        cache included), which lives as long as the array; copy it to keep only the numbers."""
        a = self._ids(ids)
        n = len(a)
        if n == 0:
            raise GuanacoArgumentError("ids: no tokens given")
        with self._lock:
            h = self._handle()
            V = _L.gn_model_config(h.ptr).contents.vocab_size
            s = _SessionHandle(h, self.n_ctx or n)
            p = _L.gn_session_forward(s.ptr, a.ctypes.data_as(ctypes.POINTER(ctypes.c_int32)), n, 1)
            if not p:
                _fail()
            buf = (ctypes.c_float * (n * V)).from_address(ctypes.addressof(p.contents))
            buf._session = s  # the array's base keeps the session (and so the model) alive
            out = np.frombuffer(buf, dtype=np.float32).reshape(n, V)
            out.flags.writeable = False
            return out

    # -- generation
    def _sampler_opts(self, temperature, top_p, top_k, repetition_penalty, seed):
        o = _B.gn_sampler_opts()
        _L.gn_sampler_defaults(ctypes.byref(o))
        o.temperature = _num(temperature, "temperature", 0, 100)
        o.top_p = _num(top_p, "top_p", 0, 1)
        o.top_k = _int(top_k, "top_k", 0, 1 << 24)
        o.repeat_penalty = _num(repetition_penalty, "repetition_penalty", 0.01, 100)
        o.seed = random.getrandbits(63) if seed is None else _int(seed, "seed", 0, (1 << 64) - 1)
        return o

    def _prompt_ids(self, prompt, add_bos):
        if isinstance(prompt, (str, bytes)):
            ids = self.tokenize(prompt, add_bos=add_bos)
            bos = _L.gn_model_config(self._handle().ptr).contents.bos_id
            if not ids and add_bos and bos >= 0:  # need at least one token to start from
                ids = [bos]
            return self._ids(ids, "prompt")
        return self._ids(prompt, "prompt")

    def _run(self, ids, sopts, max_new_tokens, stop, ignore_eos, stream):
        """gn_generate on a fresh session; text, or a generator of pieces when streaming."""
        max_new_tokens = _int(max_new_tokens, "max_new_tokens", 0, 1 << 24)
        if isinstance(stop, str):
            stop = [stop]
        stop = list(stop or [])
        if not all(isinstance(x, str) and x for x in stop):
            raise GuanacoArgumentError("stop: expected a string or a list of non-empty strings")
        if len(ids) == 0:
            raise GuanacoArgumentError("prompt: no tokens")
        h = self._handle()
        n_ctx = self.n_ctx or 0

        def call(on_text):
            stops = (ctypes.c_char_p * max(1, len(stop)))(*[_b(x) for x in stop])
            go = _B.gn_gen_opts(max_new_tokens=max_new_tokens, ignore_eos=1 if ignore_eos else 0,
                                stop=ctypes.cast(stops, ctypes.POINTER(ctypes.c_char_p)), n_stop=len(stop))
            if on_text is not None:
                go.on_text = on_text
            with self._lock:
                s = _SessionHandle(h, n_ctx)
                smp = _L.gn_sampler_new(ctypes.byref(sopts), _L.gn_model_config(h.ptr).contents.vocab_size)
                text = ctypes.c_void_p()
                st = _B.gn_gen_stats()
                try:
                    rc = _L.gn_generate(s.ptr, smp, ids.ctypes.data_as(ctypes.POINTER(ctypes.c_int32)), len(ids),
                                        ctypes.byref(go), None, None, ctypes.byref(text), ctypes.byref(st))
                finally:
                    _L.gn_sampler_free(smp)
                out = _take_string(text.value)
                _check(rc)
                return out or ""

        if not stream:
            return call(None)
        return _stream(call)

    def generate(self, prompt, max_new_tokens=256, temperature=0.7, top_p=0.9, top_k=0, repetition_penalty=1.0,
                 seed=None, stop=None, stream=False, add_bos=True, ignore_eos=False):
        """Continues prompt (text or token ids) as `guanaco generate` does; returns the new text,
        or with stream=True a generator of text pieces (closing it stops the generation)."""
        sopts = self._sampler_opts(temperature, top_p, top_k, repetition_penalty, seed)
        return self._run(self._prompt_ids(prompt, add_bos), sopts, max_new_tokens, stop, ignore_eos, stream)

    def chat(self, messages, max_new_tokens=256, temperature=0.7, top_p=0.9, top_k=0, repetition_penalty=1.0,
             seed=None, stop=None, stream=False, template="auto", system=None, add_bos=True, ignore_eos=False):
        """The assistant's answer to messages ([{"role", "content"}], OpenAI style) in the
        model's chat format, as one-shot `guanaco chat` gives it (surrounding whitespace
        trimmed). Without a system message the format's default one is used (system= sets it).
        With stream=True, a generator of text pieces."""
        if not isinstance(messages, (list, tuple)) or not messages:
            raise GuanacoArgumentError("messages: expected a non-empty list of {'role': ..., 'content': ...}")
        msgs = []
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
                raise GuanacoArgumentError("messages[%d]: expected {'role': str, 'content': str}" % i)
            if m["role"] not in ("system", "user", "assistant"):
                raise GuanacoArgumentError("messages[%d]: role %r (expected system, user or assistant)" % (i, m["role"]))
            msgs.append((m["role"], m["content"]))
        if not isinstance(template, str):
            raise GuanacoArgumentError("template: expected one of %s" % ", ".join(_CHAT_FORMATS))
        fmt = ctypes.c_int(0)
        _check(_L.gn_chat_format_parse(_b(template), ctypes.byref(fmt)))
        tok = self._tok()
        f = _L.gn_chat_format_for(tok, fmt.value)
        if msgs[0][0] != "system":
            if system is not None:
                if not isinstance(system, str):
                    raise GuanacoArgumentError("system: expected a string")
                msgs.insert(0, ("system", system))
            else:
                d = _take_string(_L.gn_chat_default_system(tok, f))
                if d is not None:
                    msgs.insert(0, ("system", d))
        keep = [(_b(r), _b(c)) for r, c in msgs]
        arr = (_B.gn_chat_msg * len(keep))(*[_B.gn_chat_msg(r, c) for r, c in keep])
        stops_p = ctypes.POINTER(ctypes.c_char_p)()
        nst = ctypes.c_int(0)
        text = _take_string(_L.gn_chat_render(f, arr, len(keep), ctypes.byref(stops_p), ctypes.byref(nst)))
        stops = [stops_p[i].decode() for i in range(nst.value)] + ([stop] if isinstance(stop, str) else list(stop or []))
        ids = self.tokenize(text, add_bos=add_bos, special=True)
        sopts = self._sampler_opts(temperature, top_p, top_k, repetition_penalty, seed)
        out = self._run(self._ids(ids), sopts, max_new_tokens, stops, ignore_eos, stream)
        return out if stream else out.strip(" \n")


def _stream(call):
    """Runs call(on_text) on a worker thread and yields the pieces as they come."""
    q = queue.Queue()
    stop = threading.Event()
    END = object()

    @_B.gn_stream_fn
    def on_text(p, n, user):
        q.put(ctypes.string_at(p, n).decode("utf-8", "replace"))
        return 1 if stop.is_set() else 0

    def work():
        try:
            call(on_text)
            q.put(END)
        except BaseException as e:  # handed to the consumer
            q.put(e)

    t = threading.Thread(target=work, daemon=True)
    t.start()
    try:
        while True:
            x = q.get()
            if x is END:
                return
            if isinstance(x, BaseException):
                raise x
            yield x
    finally:
        stop.set()
        t.join()


# ----------------------------------------------------------------------------
# training


_FORMATS = {"auto": _B.GN_DATA_AUTO, "oasst1": _B.GN_DATA_OASST1, "alpaca": _B.GN_DATA_ALPACA,
            "input-output": _B.GN_DATA_INPUT_OUTPUT, "input_output": _B.GN_DATA_INPUT_OUTPUT,
            "messages": _B.GN_DATA_MESSAGES}
_SCHED = {"constant": _B.GN_SCHED_CONSTANT, "linear": _B.GN_SCHED_LINEAR, "cosine": _B.GN_SCHED_COSINE}
_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
_CKPT = {"auto": 0, True: 1, "true": 1, False: 2, "false": 2}

# qlora.py / HF TrainingArguments name -> (the gn_finetune_opts field, converter); the CLI flag in the comment
_HP = {
    "dataset_format": ("data_format", lambda v: _choice(v, "dataset_format", _FORMATS)),        # --dataset-format
    "source_max_len": ("source_max_len", lambda v: _int(v, "source_max_len", 1, 1 << 20)),      # --source-max-len
    "target_max_len": ("target_max_len", lambda v: _int(v, "target_max_len", 1, 1 << 20)),      # --target-max-len
    "train_on_source": ("train_on_source", bool),                                                # --train-on-source
    "group_by_length": ("group_by_length", bool),                                                # --no-group-by-length
    "no_shuffle": ("no_shuffle", bool),                                                          # --no-shuffle
    "eval_dataset_size": ("eval_size", lambda v: _int(v, "eval_dataset_size", 0, 1 << 30)),     # --eval-dataset-size
    "eval_steps": ("eval_steps", lambda v: _int(v, "eval_steps", 0, 1 << 30)),                  # --eval-steps
    "save_steps": ("save_steps", lambda v: _int(v, "save_steps", 0, 1 << 30)),                  # --save-steps
    "max_steps": ("max_steps", lambda v: _int(v, "max_steps", 1, 1 << 30)),                     # --max-steps
    "per_device_train_batch_size": ("batch_size", lambda v: _int(v, "per_device_train_batch_size", 1, 64)),
    "gradient_accumulation_steps": ("grad_accum", lambda v: _int(v, "gradient_accumulation_steps", 1, 1 << 20)),
    "lr_scheduler_type": ("scheduler", lambda v: _choice(v, "lr_scheduler_type", _SCHED)),      # --lr-scheduler
    "warmup_ratio": ("warmup_ratio", lambda v: _num(v, "warmup_ratio", 0, 1)),
    "warmup_steps": ("warmup_steps", lambda v: _int(v, "warmup_steps", 0, 1 << 30)),
    "resume_from_checkpoint": ("resume", bool),                                                  # --resume
}
_HP_TRAIN = {
    "learning_rate": ("lr", lambda v: _num(v, "learning_rate", 0, 10)),
    "adam_beta2": ("beta2", lambda v: _num(v, "adam_beta2", 0, 0.999999999)),
    "weight_decay": ("weight_decay", lambda v: _num(v, "weight_decay", 0, 10)),
    "max_grad_norm": ("max_grad_norm", lambda v: _num(v, "max_grad_norm", 0, 1e9)),
    "lora_r": ("lora_r", lambda v: _int(v, "lora_r", 1, 4096)),
    "lora_alpha": ("lora_alpha", lambda v: _num(v, "lora_alpha", 0, 1e6)),
    "lora_dropout": ("lora_dropout", lambda v: _num(v, "lora_dropout", 0, 0.99)),
    "seed": ("seed", lambda v: _int(v, "seed", 0, (1 << 64) - 1)),
    "gradient_checkpointing": ("checkpointing", lambda v: _CKPT[v.lower() if isinstance(v, str) else v]
                               if (isinstance(v, (bool, str)) and (v.lower() if isinstance(v, str) else v) in _CKPT)
                               else _choice(v, "gradient_checkpointing", {})),
}
_HP_LOAD = ("bits", "quant_type", "double_quant", "blocksize", "bf16", "n_threads", "device", "init_adapter",
            "lora_modules", "target_modules")


def _modules_mask(v):
    if isinstance(v, str):
        v = v.split(",")
    if not isinstance(v, (list, tuple)) or not v:
        raise GuanacoArgumentError("lora_modules: expected 'all' or a list of %s" % ", ".join(_MODULES))
    mask = 0
    for x in v:
        if x == "all":
            mask |= (1 << len(_MODULES)) - 1
        elif x in _MODULES:
            mask |= 1 << _MODULES.index(x)
        else:
            raise GuanacoArgumentError("lora_modules: unknown module %r (expected %s or all)" % (x, ", ".join(_MODULES)))
    return mask


def finetune(base, data, output_dir, preset=None, callback=None, **hyperparameters):
    """QLoRA fine-tuning, as `guanaco finetune -m base -d data -o output_dir` runs it.

    Hyperparameters use qlora.py's names (the CLI flag in parentheses); left out, each takes
    the CLI's default, and a preset ("guanaco-7b", ... : --preset) is applied first:
      dataset_format (--dataset-format), source_max_len, target_max_len, train_on_source,
      group_by_length, no_shuffle, eval_dataset_size, eval_steps, save_steps, max_steps,
      per_device_train_batch_size, gradient_accumulation_steps, learning_rate,
      lr_scheduler_type, warmup_ratio, warmup_steps, adam_beta2, weight_decay, max_grad_norm,
      lora_r, lora_alpha, lora_dropout, lora_modules ("all" or a list; --target-modules),
      init_adapter, seed, gradient_checkpointing ("auto"/True/False),
      resume_from_checkpoint (--resume), bits (4: --4bit; 16 default), quant_type ("nf4"/"fp4"),
      double_quant (True), blocksize, bf16 (True; False = --compute-dtype f32),
      n_threads (-t), device ("cpu"/"cuda").

    callback(info) is called after every step with a dict: step, max_steps, loss,
    learning_rate, grad_norm, tokens_per_s, eta_s (and after an evaluation with eval_loss);
    returning True or "stop" ends the run after that step with checkpoint-N written whole.
    Ctrl-C (KeyboardInterrupt) does the same at the end of the current step, then raises.
    Returns the folder holding the adapter (output_dir) as str.
    """
    o = _B.gn_finetune_opts()
    _L.gn_finetune_defaults(ctypes.byref(o))
    if preset is not None:
        if not isinstance(preset, str):
            raise GuanacoArgumentError("preset: expected a name such as 'guanaco-7b'")
        _check(_L.gn_finetune_preset(ctypes.byref(o), _b(preset)))
    hp = dict(hyperparameters)
    unknown = [k for k in hp if k not in _HP and k not in _HP_TRAIN and k not in _HP_LOAD]
    if unknown:
        raise GuanacoArgumentError("finetune: unknown hyperparameter %s (see help(guanaco.finetune))" % ", ".join(map(repr, unknown)))
    for k, (field, conv) in _HP.items():
        if k in hp:
            setattr(o, field, conv(hp[k]))
    for k, (field, conv) in _HP_TRAIN.items():
        if k in hp:
            setattr(o.train, field, conv(hp[k]))
    for k in ("lora_modules", "target_modules"):
        if k in hp:
            o.train.target_mask = _modules_mask(hp[k])
    keep = [_b(_path(base, "base")), _b(_path(data, "data")), _b(_path(output_dir, "output_dir"))]
    o.model_path, o.data_path, o.out_dir = keep
    if hp.get("init_adapter") is not None:
        keep.append(_b(_path(hp["init_adapter"], "init_adapter")))
        o.init_adapter = keep[-1]
    bits = _int(hp.get("bits", 16), "bits", 4, 32)
    if bits not in (4, 16, 32):
        raise GuanacoArgumentError("bits: %d (expected 4, 16 or 32)" % bits)
    bf16 = bool(hp.get("bf16", True))
    o.train.bf16_params = 1 if bf16 else 0
    lo = _B.gn_load_opts()
    lo.weight_dtype = _choice(hp.get("quant_type", "nf4"), "quant_type", _QUANT) if bits == 4 else \
        (_B.GN_DTYPE_BF16 if bf16 else _B.GN_DTYPE_F32)
    lo.no_double_quant = 0 if hp.get("double_quant", True) else 1
    lo.blocksize = _int(hp.get("blocksize", 0), "blocksize", 0, 4096)
    lo.compute_dtype = _B.GN_DTYPE_BF16 if bf16 else _B.GN_DTYPE_F32
    lo.device = _device(hp.get("device", "cpu"))
    if callback is not None and not callable(callback):
        raise GuanacoArgumentError("callback: expected a callable")
    _set_threads(hp.get("n_threads"))

    state = {"stop": False, "error": None, "interrupted": False}

    @_B.gn_finetune_opts_progress_fn
    def progress(step, max_steps, loss, lr, gnorm, tps, eta, eval_loss, user):
        if callback is None or state["error"] is not None:
            return
        info = {"step": int(step), "max_steps": int(max_steps), "loss": float(loss), "learning_rate": float(lr),
                "grad_norm": float(gnorm), "tokens_per_s": float(tps), "eta_s": float(eta)}
        if not math.isnan(eval_loss):
            info["eval_loss"] = float(eval_loss)
        try:
            r = callback(info)
        except BaseException as e:  # stop cleanly, re-raise after the run
            state["error"] = e
            return
        if r is True or (isinstance(r, str) and r.lower() == "stop"):
            state["stop"] = True

    @_B.gn_finetune_opts_should_stop_fn
    def should_stop(user):
        return 1 if (state["stop"] or state["interrupted"] or state["error"] is not None) else 0

    o.progress = progress
    o.should_stop = should_stop

    old = None
    if threading.current_thread() is threading.main_thread():
        def on_sigint(signum, frame):  # runs in the next callback; the run stops after this step
            state["interrupted"] = True
        old = signal.signal(signal.SIGINT, on_sigint)
    m = ctypes.c_void_p()
    try:
        _check(_L.gn_model_load(ctypes.byref(m), o.model_path, ctypes.byref(lo)))
        _check(_L.gn_finetune_run(ctypes.byref(o), m))
    finally:
        if m.value:
            _L.gn_model_free(m)
        if old is not None:
            signal.signal(signal.SIGINT, old)
    if state["error"] is not None:
        raise state["error"]
    if state["interrupted"]:
        raise KeyboardInterrupt("finetune stopped; the last checkpoint in %s is whole" % output_dir)
    return os.fspath(output_dir)


# ----------------------------------------------------------------------------
# tools


def quantize(model, output_dir, quant_type="nf4", double_quant=True, blocksize=64, n_threads=None):
    """Writes a 4-bit model folder in the bitsandbytes layout (`guanaco quantize`); returns its path."""
    lo = _load_opts(True, quant_type, double_quant, "auto", "cpu", blocksize=blocksize)
    out = _path(output_dir, "output_dir")
    _set_threads(n_threads)
    m = ctypes.c_void_p()
    try:
        _check(_L.gn_model_load(ctypes.byref(m), _b(_path(model, "model")), ctypes.byref(lo)))
        _check(_L.gn_model_save_4bit(m, _b(out)))
    finally:
        if m.value:
            _L.gn_model_free(m)
    return out


_MERGE_DT = {"float32": _B.GN_DTYPE_F32, "f32": _B.GN_DTYPE_F32, "float16": _B.GN_DTYPE_F16, "f16": _B.GN_DTYPE_F16,
             "bfloat16": _B.GN_DTYPE_BF16, "bf16": _B.GN_DTYPE_BF16, "q8_0": _B.GN_DTYPE_Q8_0, "nf4": _B.GN_DTYPE_NF4}


def merge(base, adapter, output, format="safetensors", dtype="float16", load_in_4bit=False, n_threads=None):
    """Folds a PEFT adapter into the base and writes an HF folder (format="safetensors"; dtype
    float32/float16/bfloat16/nf4) or, from a GGUF base, a .gguf file (float32/float16/q8_0),
    as `guanaco merge` does. Returns the output path."""
    fmt = _choice(format, "format", {"safetensors": "safetensors", "gguf": "gguf"})
    dt = _choice(_dtype_name(dtype), "dtype", _MERGE_DT)
    if fmt == "gguf" and dt in (_B.GN_DTYPE_BF16, _B.GN_DTYPE_NF4):
        raise GuanacoArgumentError("merge: for gguf use dtype float32, float16 or q8_0")
    if fmt == "safetensors" and dt == _B.GN_DTYPE_Q8_0:
        raise GuanacoArgumentError("merge: q8_0 is a GGUF type (use format='gguf')")
    out = _path(output, "output")
    lo = _load_opts(load_in_4bit, "nf4", True, "auto", "cpu")
    _set_threads(n_threads)
    m, a = ctypes.c_void_p(), ctypes.c_void_p()
    try:
        _check(_L.gn_model_load(ctypes.byref(m), _b(_path(base, "base")), ctypes.byref(lo)))
        if adapter is not None:
            _check(_L.gn_adapter_load(ctypes.byref(a), m, _b(_path(adapter, "adapter")), None))
        if dt == _B.GN_DTYPE_NF4:  # fold in f32, then quantize that as `guanaco quantize` does
            tmp = tempfile.mkdtemp(prefix=".merge-f32-", dir=os.path.dirname(os.path.abspath(out)) or ".")
            mq = ctypes.c_void_p()
            try:
                _check(_L.gn_model_save_merged(m, a, _b(tmp), _B.GN_DTYPE_F32))
                lq = _load_opts(True, "nf4", True, "auto", "cpu")
                _check(_L.gn_model_load(ctypes.byref(mq), _b(tmp), ctypes.byref(lq)))
                _check(_L.gn_model_save_4bit(mq, _b(out)))
            finally:
                if mq.value:
                    _L.gn_model_free(mq)
                shutil.rmtree(tmp, ignore_errors=True)
        elif fmt == "gguf":
            _check(_L.gn_model_save_merged_gguf(m, a, _b(out), dt))
        else:
            _check(_L.gn_model_save_merged(m, a, _b(out), dt))
    finally:
        if a.value:
            _L.gn_adapter_free(a)
        if m.value:
            _L.gn_model_free(m)
    return out


def eval_elo(judgments, rounds=10000, seed=42):
    """Elo ratings from pairwise judgment files or folders (`guanaco eval elo`): a dict with
    matches, rounds and systems (best first), each a dict of name, rank, elo, sd, ci95_mean
    ([lo, hi] of the mean), range95 ([lo, hi] over orderings), wins, losses, ties and games."""
    if isinstance(judgments, (str, os.PathLike)):
        judgments = [judgments]
    if not isinstance(judgments, (list, tuple)) or not judgments:
        raise GuanacoArgumentError("judgments: expected a path or a list of paths")
    paths = [_b(_path(p, "judgments")) for p in judgments]
    arr = (ctypes.c_char_p * len(paths))(*paths)
    out = ctypes.c_void_p()
    _check(_L.gn_eval_elo(arr, len(paths), _int(rounds, "rounds", 1, 100000000), _int(seed, "seed", 0, (1 << 64) - 1),
                          ctypes.byref(out)))
    return json.loads(_take_string(out.value))
