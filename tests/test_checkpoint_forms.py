"""A LLaMA saved by transformers 5 in each form people hold it in today loads in guanaco.

For each tokenizer form a tiny random LLaMA is built here (fixed seeds, tmp_path) and saved
by transformers 5:
  metaspace-first   LlamaTokenizer.save_pretrained: tokenizer.json with a Metaspace
                    pre-tokenizer (prepend_scheme "first"), no tokenizer.model;
  metaspace-always  the same with "legacy": true (prepend_scheme "always"), then split and a
                    Metaspace decoder (the other spelling seen in the wild);
  legacy            LLaMA-2's own form: normalizer Sequence[Prepend, Replace], no pre-tokenizer,
                    BOS from the TemplateProcessing post-processor; tokenizer.model beside it;
  bytelevel         a byte-level BPE tokenizer.json (GPT-2 style);
  spm-model         tokenizer.model only;
  gguf              the same weights and vocabulary in one GGUF file;
  gguf-q8_0, -q4_0, -q4_1   models whose matrices are all ggml blocks of that type (as
                    llama.cpp's files of those types are; guanaco keeps them so), their HF twins
                    holding the same values (q8_0 tied, the others untied).
Each must give AutoTokenizer's ids on an awkward corpus (and the `tokenizers` decode), the
logits of LlamaForCausalLM, and survive one `finetune` step. The configs use today's
spellings: dtype, explicit head_dim != hidden/heads, rope_parameters (default, linear,
llama3), tied embeddings without lm_head in the shards, eos_token_id as a list, a
generation_config.json with its own eos ids. `guanaco merge` of the Metaspace base writes a
folder that transformers 5 loads with the same ids and logits, and that guanaco loads back.
"""
import gzip
import json
import shutil

import numpy as np
import pytest

from conftest import DATA, decode_each, run_guanaco

torch = pytest.importorskip("torch")
spm = pytest.importorskip("sentencepiece")
tk = pytest.importorskip("tokenizers")
transformers = pytest.importorskip("transformers")
gguf = pytest.importorskip("gguf")
from transformers import (AutoModelForCausalLM, AutoTokenizer, GenerationConfig, LlamaConfig,  # noqa: E402
                          LlamaForCausalLM, LlamaTokenizer, PreTrainedTokenizerFast)

OASST = DATA / "openassistant-guanaco" / "openassistant_best_replies_eval.jsonl.gz"
REL_TOL = 1e-4  # as test_model.py: max |guanaco - transformers| <= REL_TOL * max |logit|

AWKWARD = [
    "", " ", "  ", "   x", "\t", "\n", "\n\n", " \t\n ", "\r\n", "Hello world", " leading space",
    "trailing space ", "  two  leading", "multiple   inner    spaces", "tab\tin\tthe\tmiddle",
    "line one\nline two\n", "0123456789 3.14159 2,718 1e-9 12345678901234567890", "中文字符测试，你好！",
    "日本語のテキスト", "한국어", "Привет, мир", "🦙🚀😶\u200d🌫️ ✅", "e\u0301 a\u0308 n\u0303", "\u0915\u094d\u0937\u093f",
    "special <s> in the </s> middle", "<s>", "</s>", "<unk>", "a<s>b</s>c", " <s> x ", "x\u00a0y\u3000z\u2028w",
    "\u2581", "\u2581\u2581x \u2581", "I'm it's we've THEY'LL", "½ ² ³ ⅷ", "((([[[{{{", "```python\nprint('hi')\n```",
    "\ufffd", "Ａ１ｂ",
]


def oasst_texts(n):
    with gzip.open(OASST, "rt", encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f if line.strip()][:n]


def corpus():
    return AWKWARD + oasst_texts(40)


def encode_many(model, texts, tmp_path, *flags):
    p = tmp_path / "rows.jsonl"
    p.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    out = run_guanaco("tokenize", "-m", model, "-f", p, "--jsonl", "text", *flags).stdout
    lines = out.split("\n")
    assert len(lines) == len(texts) + 1, f"expected {len(texts)} lines"
    return [[int(x) for x in line.split()] for line in lines[:-1]]


def assert_same(texts, got, want, what):
    bad = [i for i in range(len(texts)) if got[i] != want[i]]
    assert not bad, (f"{what}: {len(bad)} of {len(texts)} differ; first {texts[bad[0]][:60]!r}: "
                     f"ours {got[bad[0]][:16]} oracle {want[bad[0]][:16]}")


def logits_of(tmp_path, model, ids, name="l.npy"):
    out = tmp_path / name
    run_guanaco("logits", "-m", model, "--ids", " ".join(map(str, ids)), "-o", out)
    return np.load(out)


def compare(got, ref, what):
    assert got.shape == ref.shape, f"{what}: shape {got.shape}, expected {ref.shape}"
    scale = float(np.abs(ref).max())
    diff = float(np.abs(got.astype(np.float64) - ref.astype(np.float64)).max())
    assert diff <= REL_TOL * scale, f"{what}: max abs diff {diff:.3g} > {REL_TOL:g} x {scale:.4g}"


# ---------------------------------------------------------------------------
# building the forms

@pytest.fixture(scope="module")
def spm_file(tmp_path_factory):
    """A small SentencePiece BPE with byte fallback, LLaMA's settings (identity normalizer,
    whitespace kept, digits split), trained on oasst text."""
    d = tmp_path_factory.mktemp("spm")
    text = d / "corpus.txt"
    text.write_text("\n".join(t.replace("\n", " ") for t in oasst_texts(200)), encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(text), model_prefix=str(d / "tiny"), vocab_size=700, model_type="bpe", byte_fallback=True,
        normalization_rule_name="identity", remove_extra_whitespaces=False, split_digits=True,
        allow_whitespace_only_pieces=True, character_coverage=0.98, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        num_threads=1, minloglevel=2)
    return d / "tiny.model"


def _llama_tokenizer_json(spm_file, d, legacy):
    """What transformers 5 writes for a LLaMA tokenizer: tokenizer.json, no tokenizer.model
    (Metaspace prepend_scheme "first", or "always" with "legacy": true in tokenizer_config.json)."""
    src = d.parent / (d.name + "-src")
    src.mkdir()
    shutil.copy(spm_file, src / "tokenizer.model")
    (src / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "bos_token": "<s>", "eos_token": "</s>",
         "unk_token": "<unk>", **({"legacy": True} if legacy else {})}))
    LlamaTokenizer.from_pretrained(src).save_pretrained(d)
    assert not (d / "tokenizer.model").exists()
    return json.loads((d / "tokenizer.json").read_text(encoding="utf-8"))


def _edit_json(d, fn, tokenizer_class="TokenizersBackend"):
    """Rewrites tokenizer.json with fn. transformers 5's LlamaTokenizer class replaces the file's
    normalizer, pre-tokenizer and decoder with its own, so an edited file is declared with the
    class that uses it as written."""
    p = d / "tokenizer.json"
    j = json.loads(p.read_text(encoding="utf-8"))
    fn(j)
    p.write_text(json.dumps(j, ensure_ascii=False), encoding="utf-8")
    c = d / "tokenizer_config.json"
    cfg = json.loads(c.read_text())
    cfg["tokenizer_class"] = tokenizer_class
    c.write_text(json.dumps(cfg))


def _bytelevel_tokenizer(d):
    tok = tk.Tokenizer(tk.models.BPE())
    tok.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tk.decoders.ByteLevel()
    trainer = tk.trainers.BpeTrainer(vocab_size=600, special_tokens=["<unk>", "<s>", "</s>"],
                                     initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(oasst_texts(200), trainer)
    tok.post_processor = tk.processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>").save_pretrained(d)


# Config spellings, one set per form: tied/untied, head_dim, rope_parameters, eos lists.
ROPES = {
    "default": {"rope_type": "default", "rope_theta": 10000.0},
    "linear": {"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0},
    "llama3": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 32, "rope_theta": 500000.0},
}
FORMS = {
    "metaspace-always": dict(rope="llama3", tie=True),
    "metaspace-first": dict(rope="linear", tie=False),
    "legacy": dict(rope="default", tie=False),
    "bytelevel": dict(rope="default", tie=True),
    "spm-model": dict(rope="linear", tie=True),
    "gguf": dict(rope="default", tie=False),
    "gguf-q8_0": dict(rope="default", tie=True),
    "gguf-q4_0": dict(rope="default", tie=False),  # _write_gguf writes no RoPE scaling
    "gguf-q4_1": dict(rope="default", tie=False),
}
QTYPES = {"gguf-q8_0": "Q8_0", "gguf-q4_0": "Q4_0", "gguf-q4_1": "Q4_1"}


def _ggml_roundtrip(d, qtype):
    """Every matrix of the HF folder d replaced by its values in ggml blocks of qtype (gguf-py's
    quantize then dequantize), so that the GGUF written from it holds the folder's values."""
    qt = gguf.GGMLQuantizationType[qtype]
    m = LlamaForCausalLM.from_pretrained(d).eval()
    with torch.no_grad():
        for _, p in m.named_parameters():
            if p.dim() == 2:
                a = p.detach().float().numpy()
                q = gguf.quants.quantize(a, qt)
                p.copy_(torch.from_numpy(gguf.quants.dequantize(q, qt).reshape(a.shape)))
    m.save_pretrained(d)


def _save_model(d, vocab, rope, tie, seed):
    cfg = LlamaConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=32, vocab_size=vocab, rms_norm_eps=1e-5,
                      tie_word_embeddings=tie, max_position_embeddings=256, bos_token_id=1, eos_token_id=[2, 3],
                      rope_parameters=dict(ROPES[rope]))
    torch.manual_seed(seed)
    m = LlamaForCausalLM(cfg).eval()
    m.save_pretrained(d)
    GenerationConfig(bos_token_id=1, eos_token_id=[2, 4]).save_pretrained(d)
    return m


def _write_gguf(hf_dir, spm_file, path, qtype=None):
    """The HF model's weights and the SentencePiece vocabulary as a llama GGUF (f32; qtype: the
    matrices as ggml blocks of that type, and no output.weight when the model is tied)."""
    cfg = json.loads((hf_dir / "config.json").read_text())
    sd = LlamaForCausalLM.from_pretrained(hf_dir).state_dict()
    sp = spm.SentencePieceProcessor(model_file=str(spm_file))
    w = gguf.GGUFWriter(str(path), "llama")
    nh, nkv, hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(nh)
    w.add_head_count_kv(nkv)
    w.add_key_length(hd)
    w.add_value_length(hd)
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_rope_freq_base(cfg["rope_parameters"]["rope_theta"])
    w.add_tokenizer_model("llama")
    n = sp.get_piece_size()
    w.add_token_list([sp.id_to_piece(i).encode("utf-8") for i in range(n)])
    w.add_token_scores([sp.get_score(i) for i in range(n)])
    types = [2 if sp.is_unknown(i) else 3 if sp.is_control(i) else 6 if sp.is_byte(i) else 1 for i in range(n)]
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)

    def perm(t, heads):  # HF rotate_half rows -> GGUF interleaved pairs (llama.cpp's convert)
        return t.reshape(heads, 2, t.shape[0] // heads // 2, *t.shape[1:]).swapaxes(1, 2).reshape(t.shape)

    def put(name, t):
        a = t.detach().float().numpy().copy()
        if qtype and a.ndim == 2:
            qt = gguf.GGMLQuantizationType[qtype]
            q = gguf.quants.quantize(a, qt)
            w.add_tensor(name, q, raw_shape=q.shape, raw_dtype=qt)
        else:
            w.add_tensor(name, a)

    put("token_embd.weight", sd["model.embed_tokens.weight"])
    put("output_norm.weight", sd["model.norm.weight"])
    if not (qtype and cfg.get("tie_word_embeddings")):
        put("output.weight", sd["lm_head.weight"])
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        put(f"blk.{i}.attn_norm.weight", sd[p + "input_layernorm.weight"])
        put(f"blk.{i}.ffn_norm.weight", sd[p + "post_attention_layernorm.weight"])
        put(f"blk.{i}.attn_q.weight", perm(sd[p + "self_attn.q_proj.weight"], nh))
        put(f"blk.{i}.attn_k.weight", perm(sd[p + "self_attn.k_proj.weight"], nkv))
        put(f"blk.{i}.attn_v.weight", sd[p + "self_attn.v_proj.weight"])
        put(f"blk.{i}.attn_output.weight", sd[p + "self_attn.o_proj.weight"])
        put(f"blk.{i}.ffn_gate.weight", sd[p + "mlp.gate_proj.weight"])
        put(f"blk.{i}.ffn_up.weight", sd[p + "mlp.up_proj.weight"])
        put(f"blk.{i}.ffn_down.weight", sd[p + "mlp.down_proj.weight"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.fixture(scope="module")
def forms(spm_file, tmp_path_factory):
    """form -> {"path": what guanaco is given, "hf": the transformers folder, "tok": the oracle}."""
    root = tmp_path_factory.mktemp("forms")
    out = {}
    for k, (name, spec) in enumerate(FORMS.items()):
        d = root / name
        d.mkdir()
        if name in ("metaspace-always", "metaspace-first", "legacy"):
            j = _llama_tokenizer_json(spm_file, d, legacy=name != "metaspace-first")
            scheme = "first" if name == "metaspace-first" else "always"
            assert j["pre_tokenizer"] == {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": scheme,
                                          "split": False}, j["pre_tokenizer"]
            if name == "metaspace-always":
                def split_metaspace_decoder(j):  # the other spelling seen in the wild
                    for key in ("pre_tokenizer", "decoder"):
                        j[key] = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always",
                                  "split": True}
                _edit_json(d, split_metaspace_decoder)
            if name == "legacy":
                def legacy(j):
                    j["normalizer"] = {"type": "Sequence", "normalizers": [
                        {"type": "Prepend", "prepend": "\u2581"},
                        {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]}
                    j["pre_tokenizer"] = None
                _edit_json(d, legacy)
                shutil.copy(spm_file, d / "tokenizer.model")
        elif name == "bytelevel":
            _bytelevel_tokenizer(d)
        else:
            shutil.copy(spm_file, d / "tokenizer.model")
        tok = AutoTokenizer.from_pretrained(d)
        _save_model(d, len(tok), spec["rope"], spec["tie"], seed=k)
        path = d
        if name.startswith("gguf"):
            if name in QTYPES:
                _ggml_roundtrip(d, QTYPES[name])
            path = root / f"{name}-file" / "model.gguf"
            path.parent.mkdir()
            _write_gguf(d, spm_file, path, qtype=QTYPES.get(name))
        out[name] = {"path": path, "hf": d, "tok": tok, "spec": spec}
    return out


# ---------------------------------------------------------------------------
# tokenizer

@pytest.mark.parametrize("form", list(FORMS))
def test_ids_equal_autotokenizer(forms, form, tmp_path):
    f = forms[form]
    texts = corpus()
    want = [f["tok"](t, add_special_tokens=False).input_ids for t in texts]
    got = encode_many(f["path"], texts, tmp_path, "--no-bos", "--special")
    assert_same(texts, got, want, f"{form}: ids without special tokens")
    if form in ("spm-model", "gguf") or form in QTYPES:
        # AutoTokenizer reads a bare tokenizer.model without adding BOS; guanaco adds it, as
        # sentencepiece / llama.cpp do; the ids after it are the same
        want = [[1] + w for w in want]
    else:
        want = [f["tok"](t).input_ids for t in texts]
    got = encode_many(f["path"], texts, tmp_path, "--special")
    assert_same(texts, got, want, f"{form}: ids with the file's BOS/EOS")


@pytest.mark.parametrize("form", ["metaspace-always", "metaspace-first", "legacy", "bytelevel"])
def test_decode_equals_tokenizers(forms, form, tmp_path):
    f = forms[form]
    ref = tk.Tokenizer.from_file(str(f["hf"] / "tokenizer.json"))
    texts = corpus()
    ids = [ref.encode(t).ids for t in texts]
    ids += [[5, 300, 9, 1, 2, 100], [259, 259], [3, 4, 5, 6], list(range(0, 40))]  # odd sequences too
    for skip, flags in ((True, ()), (False, ("--special",))):
        want = [ref.decode(x, skip_special_tokens=skip) for x in ids]
        got = decode_each(f["path"], ids, tmp_path, *flags)
        bad = [i for i in range(len(ids)) if got[i] != want[i]]
        assert not bad, f"{form} skip_special={skip}: {len(bad)} differ; first {ids[bad[0]][:12]}: " \
                        f"ours {got[bad[0]]!r} tokenizers {want[bad[0]]!r}"


def test_tokenizer_json_and_model_agree(forms, tmp_path, spm_file):
    """The legacy folder holds both files: the same ids either way, and sentencepiece's."""
    d = forms["legacy"]["hf"]
    texts = corpus()
    sp = spm.SentencePieceProcessor(model_file=str(spm_file))
    want = [sp.encode(t) for t in texts]
    assert_same(texts, encode_many(d / "tokenizer.json", texts, tmp_path, "--no-bos"), want, "tokenizer.json")
    assert_same(texts, encode_many(d / "tokenizer.model", texts, tmp_path, "--no-bos"), want, "tokenizer.model")
    info = run_guanaco("info", "-m", d).stdout
    assert "tokenizer: sentencepiece-style-bpe (tokenizer.json)" in info, info


@pytest.mark.parametrize("legacy", [False, True])
def test_llama_tokenizer_class_rebuilds_the_pipeline(forms, tmp_path, legacy):
    """LLaMA-2's legacy tokenizer.json declared as LlamaTokenizer: AutoTokenizer (transformers 5)
    drops the normalizer and uses Metaspace (first, or always with legacy=true); so does guanaco."""
    d = tmp_path / "llama-class"
    d.mkdir()
    src = forms["legacy"]["hf"]
    shutil.copy(src / "tokenizer.json", d / "tokenizer.json")
    cfg = json.loads((src / "tokenizer_config.json").read_text())
    cfg.update(tokenizer_class="LlamaTokenizer", legacy=legacy)
    (d / "tokenizer_config.json").write_text(json.dumps(cfg))
    tok = AutoTokenizer.from_pretrained(d)
    texts = corpus()
    assert_same(texts, encode_many(d, texts, tmp_path, "--special"), [tok(t).input_ids for t in texts],
                f"LlamaTokenizer legacy={legacy}")
    ids = [tok(t).input_ids for t in texts]
    got = decode_each(d, ids, tmp_path)
    want = [tok.decode(x, skip_special_tokens=True) for x in ids]
    assert got == want
    # the file itself is read as the tokenizers library reads it (the legacy normalizer)
    ref = tk.Tokenizer.from_file(str(d / "tokenizer.json"))
    want = [ref.encode(t).ids for t in texts]
    assert want != [tok(t).input_ids for t in texts]
    assert_same(texts, encode_many(d / "tokenizer.json", texts, tmp_path, "--special"), want, "the file")


@pytest.mark.parametrize("build", ["build-asan", "build-ubsan"])
def test_awkward_texts_under_sanitizers(forms, tmp_path, build):
    """The tokenizer.json paths (encode, decode, added tokens) are clean under ASan / UBSan
    (when that build exists: make asan / make ubsan)."""
    import subprocess
    from conftest import BUILD, sanitizer_report
    binary = BUILD.parent / build / "guanaco"
    if not binary.exists():
        pytest.skip(f"{build}/guanaco not built")
    p = tmp_path / "rows.jsonl"
    p.write_text("".join(json.dumps({"text": t}) + "\n" for t in corpus()), encoding="utf-8")
    for form in ("metaspace-always", "metaspace-first", "legacy", "bytelevel"):
        for path in (forms[form]["path"], forms[form]["hf"] / "tokenizer.json"):
            r = subprocess.run([str(binary), "tokenize", "-m", str(path), "-f", str(p), "--jsonl", "text",
                                "--roundtrip", "--special"], capture_output=True, text=True)
            assert r.returncode == 0 and sanitizer_report(r.stderr) is None, r.stderr[-2000:]


# ---------------------------------------------------------------------------
# config, logits, finetune, merge

def test_config_spellings_read(forms):
    info = run_guanaco("info", "-m", forms["metaspace-always"]["path"]).stdout
    assert "head_dim: 32" in info and "rope_scaling: llama3 (factor 8)" in info, info
    assert "tie_word_embeddings: true" in info and "stop_token_ids: 2 3 4" in info, info
    info = run_guanaco("info", "-m", forms["metaspace-first"]["path"]).stdout
    assert "rope_scaling: linear (factor 2)" in info and "tie_word_embeddings: false" in info, info


@pytest.mark.parametrize("form", list(FORMS))
def test_logits_equal_transformers(forms, form, tmp_path):
    f = forms[form]
    ids = f["tok"](oasst_texts(1)[0]).input_ids[:40]
    with torch.no_grad():
        ref = LlamaForCausalLM.from_pretrained(f["hf"]).eval()(torch.tensor([ids])).logits[0].numpy()
    compare(logits_of(tmp_path, f["path"], ids), ref, form)
    if form in QTYPES:  # the matrices kept in their blocks: the row kernel of decode too
        qt = QTYPES[form].lower()
        want = f"embedding: {qt} (tied head)" if f["spec"]["tie"] else f"embedding: {qt} (untied head: {qt})"
        assert want in run_guanaco("info", "-m", f["path"]).stdout
        out = tmp_path / "step.npy"
        run_guanaco("logits", "-m", f["path"], "--ids", " ".join(map(str, ids)), "-o", out, "--kv-step")
        compare(np.load(out), ref, form + " --kv-step")


def _data(tmp_path):
    p = tmp_path / "data.jsonl"
    p.write_text("".join(json.dumps({"text": t}) + "\n" for t in oasst_texts(4)), encoding="utf-8")
    return p


def _finetune(model, data, run):
    return run_guanaco("finetune", "-m", model, "-d", data, "-o", run, "--dataset-format", "oasst1",
                       "--source-max-len", "16", "--target-max-len", "32", "--max-steps", "1", "--lora-r", "4",
                       "--save-steps", "1", "-t", "1")


@pytest.mark.parametrize("form", list(FORMS))
def test_finetune_one_step(forms, form, tmp_path):
    run = tmp_path / "run"
    _finetune(forms[form]["path"], _data(tmp_path), run)
    assert (run / "adapter_model.safetensors").exists() and (run / "adapter_config.json").exists()


def test_merge_round_trip_today(forms, tmp_path):
    f = forms["metaspace-always"]
    run = tmp_path / "run"
    _finetune(f["path"], _data(tmp_path), run)
    merged = tmp_path / "merged"
    run_guanaco("merge", "-m", f["path"], "-a", run, "-o", merged, "--dtype", "f32")
    assert (merged / "tokenizer.json").exists() and not (merged / "tokenizer.model").exists()
    cfg = json.loads((merged / "config.json").read_text())
    assert cfg.get("dtype") == "float32" and cfg["head_dim"] == 32, cfg
    tok = AutoTokenizer.from_pretrained(merged)
    texts = corpus()
    assert [tok(t).input_ids for t in texts] == [f["tok"](t).input_ids for t in texts]
    assert_same(texts, encode_many(merged, texts, tmp_path, "--special"), [tok(t).input_ids for t in texts], "merged")
    ids = tok(oasst_texts(2)[1]).input_ids[:32]
    with torch.no_grad():
        model = AutoModelForCausalLM.from_pretrained(merged).eval()
        ref = model(torch.tensor([ids])).logits[0].numpy()
    compare(logits_of(tmp_path, merged, ids), ref, "guanaco on the merged folder vs transformers")
    # and the merged weights are the adapter's: guanaco's unmerged forward gives the same logits
    out = tmp_path / "unmerged.npy"
    run_guanaco("logits", "-m", f["path"], "-a", run, "--ids", " ".join(map(str, ids)), "-o", out)
    compare(np.load(out), ref, "base + adapter (guanaco) vs merged (transformers)")


# ---------------------------------------------------------------------------
# unsupported or broken files: one line naming the file and the field

BAD_JSON = {
    "normalizer": ({"type": "NFKC"}, "normalizer"),
    "nested": ({"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u2581"}, {"type": "Lowercase"}]},
               "normalizer.normalizers[1]"),
    "prepend_scheme": ({"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "sometimes"},
                       "pre_tokenizer.prepend_scheme"),
    "replacement": ({"type": "Metaspace", "replacement": "ab", "prepend_scheme": "first"}, "pre_tokenizer.replacement"),
    "decoder": ({"type": "WordPiece", "prefix": "##"}, "decoder"),
}


@pytest.mark.parametrize("case", list(BAD_JSON))
def test_bad_tokenizer_json_one_line(forms, tmp_path, case):
    value, field = BAD_JSON[case]
    j = json.loads((forms["metaspace-first"]["hf"] / "tokenizer.json").read_text(encoding="utf-8"))
    key = "normalizer" if case in ("normalizer", "nested") else "decoder" if case == "decoder" else "pre_tokenizer"
    j[key] = value
    p = tmp_path / "tokenizer.json"
    p.write_text(json.dumps(j, ensure_ascii=False), encoding="utf-8")
    r = run_guanaco("tokenize", "-m", p, "-p", "hello", check=False)
    lines = r.stderr.splitlines()
    assert r.returncode == 1 and r.stdout == "", (r.returncode, r.stderr)
    assert len(lines) == 1 and lines[0].startswith(f"guanaco: {p}: {field}"), r.stderr


@pytest.mark.parametrize("rope", ["yarn", "dynamic"])
def test_unbuilt_rope_types_refused(forms, tmp_path, rope):
    d = tmp_path / "m"
    shutil.copytree(forms["metaspace-first"]["hf"], d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["rope_parameters"] = {"rope_type": rope, "factor": 4.0, "rope_theta": 10000.0,
                              "original_max_position_embeddings": 64}
    (d / "config.json").write_text(json.dumps(cfg))
    r = run_guanaco("info", "-m", d, check=False)
    lines = r.stderr.splitlines()
    assert r.returncode == 1 and len(lines) == 1, r.stderr
    assert str(d / "config.json") in lines[0] and f"'{rope}'" in lines[0] and "linear or llama3" in lines[0], lines


def test_bad_generation_config_named(forms, tmp_path):
    d = tmp_path / "m"
    shutil.copytree(forms["metaspace-first"]["hf"], d)
    (d / "generation_config.json").write_text('{"eos_token_id": "two"}')
    r = run_guanaco("info", "-m", d, check=False)
    lines = r.stderr.splitlines()
    assert r.returncode == 1 and len(lines) == 1 and "generation_config.json" in lines[0] and "eos_token_id" in lines[0]


def _greedy_ids(stdout):
    lines = [l for l in stdout.splitlines() if l.strip() and all(w.isdigit() for w in l.split())]
    assert len(lines) == 1, stdout[-2000:]
    return [int(w) for w in lines[0].split()]


def test_generation_config_eos_stops_generation(forms, tmp_path):
    """Greedy ids equal transformers'; an id listed only in generation_config.json's
    eos_token_id ends generation there."""
    d = tmp_path / "m"
    shutil.copytree(forms["metaspace-first"]["hf"], d)
    prompt = forms["metaspace-first"]["tok"]("The llama").input_ids
    with torch.no_grad():
        model = LlamaForCausalLM.from_pretrained(d).eval()
        want = model.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False, eos_token_id=None,
                              pad_token_id=0)[0, len(prompt):].tolist()
    args = ["generate", "-m", d, "--ids", " ".join(map(str, prompt)), "-n", "12", "--temp", "0", "--no-bos",
            "--print-ids", "-t", "1"]
    free = _greedy_ids(run_guanaco(*args, "--ignore-eos").stdout)
    assert free[-12:] == want, (free, want)
    k = next(i for i in range(2, 12) if want[i] not in want[:i] and want[i] not in (2, 3))
    (d / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": [2, want[k]]}))
    stopped = _greedy_ids(run_guanaco(*args).stdout)
    head = len(free) - 12  # the prompt, when it is printed too
    assert stopped[:head] == free[:head]
    assert stopped[head:] in (want[:k], want[:k + 1]), (stopped, want, k)


def test_chat_on_transformers5_folder(forms):
    """`guanaco chat` answers on a folder with tokenizer.json only (no tokenizer.model)."""
    d = forms["metaspace-first"]["hf"]
    assert not (d / "tokenizer.model").exists()
    r = run_guanaco("chat", "-m", d, "-p", "Hello, who are you?", "-n", "8", "--temp", "0", "-t", "1")
    assert r.returncode == 0 and r.stdout.strip(), r.stderr


def test_added_tokens_decoder_extends_tokenizer_model(spm_file, tmp_path):
    """tokenizer_config.json's added_tokens_decoder adds tokens past a tokenizer.model's vocab."""
    d = tmp_path / "tok"
    d.mkdir()
    shutil.copy(spm_file, d / "tokenizer.model")
    n = spm.SentencePieceProcessor(model_file=str(spm_file)).get_piece_size()
    flags = {"lstrip": False, "rstrip": False, "normalized": False, "single_word": False, "special": True}
    atd = {"0": {"content": "<unk>", **flags}, "1": {"content": "<s>", **flags}, "2": {"content": "</s>", **flags},
           str(n): {"content": "<|im_start|>", **flags}, str(n + 1): {"content": "<|im_end|>", **flags}}
    (d / "tokenizer_config.json").write_text(json.dumps(
        {"added_tokens_decoder": atd, "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}))
    tok = AutoTokenizer.from_pretrained(d)
    assert len(tok) == n + 2
    texts = ["<|im_start|>user\nhi there<|im_end|>\n<|im_start|>assistant\n", "a <|im_end|> b", "<|im_end|>"] + AWKWARD
    want = [tok(t, add_special_tokens=False).input_ids for t in texts]
    assert any(n in w for w in want)
    assert_same(texts, encode_many(d, texts, tmp_path, "--no-bos", "--special"), want, "added_tokens_decoder")
