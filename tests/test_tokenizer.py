"""Tokenizer tests: `guanaco tokenize` against reference tokenizers.

Every expected id comes from an oracle, never from guanaco:
  (a) llama.cpp's reference vectors in data/llama-cpp-vocab (*.gguf.inp/.out,
      written with HF tokenizers, add_special=False, parse_special=False);
  (b) LLaMA tokenizer.model vs the sentencepiece library, and vs HF tokenizers' BPE
      rebuilt from it the way transformers' LlamaConverter does (legacy, merges by score);
  (c) SmolLM2's GGUF vocab vs the HF tokenizer that transformers builds from that GGUF
      (saved as tokenizer.json), and vs llama-cpp-python when it is installed;
  (d) decode(encode(x)) where the tokenizer promises it, and our decode == the
      oracle's decode of the same ids;
  (e) bad tokenizer files: exit 1 with one "guanaco: <path>: ..." line.

Many texts go through one process with the batch modes of `guanaco tokenize`
(`-f rows.jsonl --jsonl text`, `--roundtrip`, `--decode-each`).
"""
import json
import pathlib
import random
import shutil
import time

import pytest

from conftest import DATA, data_file, decode_each, open_text, run_guanaco
from native_oracle import isolated, llama_tokenize

SPM_MODEL = DATA / "llama-tokenizer" / "tokenizer.model"
VOCAB_DIR = DATA / "llama-cpp-vocab"
OASST = DATA / "openassistant-guanaco" / "openassistant_best_replies_eval.jsonl.gz"

AWKWARD = [
    "", " ", "  ", "   ", "\t", "\n", "\n\n\n", "\t\n \r\n", "\r", " \n ", "a  b   c    d",
    " leading space", "trailing space ", "  two leading", "🦙", "🦙🚀😶‍🌫️ ✅", "中文字符测试，你好！",
    "日本語のテキスト", "한국어", "Привет, мир", "e\u0301 a\u0308 n\u0303", "\u0915\u094d\u0937\u093f",
    "1234567890123456789012345", "3.14159 2,718 1e-9", "<s>", "</s>", "<unk>", "a<s>b</s>c",
    "x\u0085y\u2028z\u00a0w\u3000v\u200bq\u180e", "\ufffd", "Ａ１ｂ", "ǅ ǈ", "I'm it's we'Ve THEY'LL",
    "½ ² ³ ١٢٣ ⅷ", "((([[[{{{", "```python\nprint('hi')\n```", "tab\tin\tthe\tmiddle", "\u2581", "▁▁x",
]


def random_unicode(n, seed):
    """n random strings mixing ASCII, odd whitespace, BMP and astral characters."""
    rng = random.Random(seed)
    spaces = " \t\n\r\x0b\x0c\x85\xa0\u1680\u2000\u2028\u3000\u180e\u200b"

    def ch():
        r = rng.random()
        if r < 0.4:
            return chr(rng.randrange(0x20, 0x7F))
        if r < 0.5:
            return rng.choice(spaces)
        if r < 0.6:
            return chr(rng.randrange(0x80, 0x800))
        if r < 0.85:
            c = rng.randrange(0x800, 0x10000)
            return "x" if 0xD800 <= c < 0xE000 else chr(c)
        return chr(rng.randrange(0x10000, 0x30000))
    return ["".join(ch() for _ in range(rng.randrange(1, 50))) for _ in range(n)]


def oasst_rows():
    with open_text(OASST) as f:
        return [json.loads(line)["text"] for line in f if line.strip()]


def write_jsonl(path, texts):
    with open(path, "w", encoding="utf-8") as f:
        for t in texts:
            f.write(json.dumps({"text": t}) + "\n")
    return path


def encode_many(model, texts, tmp_path, *flags):
    """Our ids for each text (one guanaco process)."""
    p = write_jsonl(tmp_path / "rows.jsonl", texts)
    out = run_guanaco("tokenize", "-m", model, "-f", p, "--jsonl", "text", *flags).stdout
    lines = out.split("\n")
    assert len(lines) == len(texts) + 1 and lines[-1] == "", f"expected {len(texts)} lines"
    return [[int(x) for x in line.split()] for line in lines[:-1]]


def roundtrip_many(model, texts, tmp_path, *flags):
    """Our decode(encode(text)) for each text."""
    p = write_jsonl(tmp_path / "rt.jsonl", texts)
    out = run_guanaco("tokenize", "-m", model, "-f", p, "--jsonl", "text", "--roundtrip", *flags).stdout
    return [json.loads(line) for line in out.split("\n")[:-1]]  # not splitlines(): U+2028 is text


def assert_same(texts, got, want, what):
    bad = [i for i in range(len(texts)) if got[i] != want[i]]
    if bad:
        i = bad[0]
        k = next((j for j in range(min(len(got[i]), len(want[i]))) if got[i][j] != want[i][j]),
                 min(len(got[i]), len(want[i])))
        raise AssertionError(
            f"{what}: {len(bad)} of {len(texts)} differ; first #{i} {texts[i][:80]!r}\n"
            f"  at position {k}: ours {got[i][k:k + 12]} oracle {want[i][k:k + 12]}")


def vocab_gguf(name):
    """data/llama-cpp-vocab/ggml-vocab-NAME.gguf (unpacked once where it ships gzipped)."""
    return data_file(f"llama-cpp-vocab/ggml-vocab-{name}.gguf")


# ---------------------------------------------------------------------------
# (a) llama.cpp reference vectors

@pytest.mark.parametrize("name", ["llama-spm", "gpt-2"])
def test_llama_cpp_vocab_vectors(guanaco_bin, tmp_path, name):
    gguf = vocab_gguf(name)
    inp = (VOCAB_DIR / f"ggml-vocab-{name}.gguf.inp").read_text(encoding="utf-8").split("\n__ggml_vocab_test__\n")
    assert inp[-1] == ""
    inp = inp[:-1]
    out = (VOCAB_DIR / f"ggml-vocab-{name}.gguf.out").read_text(encoding="utf-8").split("\n")
    want = [[int(x) for x in line.split()] for line in out[:len(inp)]]
    assert len(inp) == 46
    # the .out files were made with add_special=False, parse_special=False
    got = encode_many(gguf, inp, tmp_path, "--no-bos")
    assert_same(inp, got, want, f"{name} vs llama.cpp .out")


# ---------------------------------------------------------------------------
# (b) LLaMA SentencePiece vs sentencepiece / HF tokenizers

@pytest.fixture(scope="session")
def sp():
    spm = pytest.importorskip("sentencepiece")
    return spm.SentencePieceProcessor(model_file=str(SPM_MODEL))


@pytest.fixture(scope="session")
def hf_llama(sp):
    """HF tokenizers BPE built like transformers' LlamaConverter (legacy): byte
    fallback, Prepend('▁') + Replace(' ', '▁'), merges ordered by piece score."""
    tk = pytest.importorskip("tokenizers")
    csl = pytest.importorskip("transformers.convert_slow_tokenizer")
    n = sp.get_piece_size()
    vocab = {sp.id_to_piece(i): i for i in range(n)}
    merges = csl.generate_merges(vocab, {sp.id_to_piece(i): sp.get_score(i) for i in range(n)})
    tok = tk.Tokenizer(tk.models.BPE(vocab, merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    tok.normalizer = tk.normalizers.Sequence([tk.normalizers.Prepend("▁"), tk.normalizers.Replace(" ", "▁")])
    tok.add_special_tokens([tk.AddedToken(t, special=True, normalized=False) for t in ("<unk>", "<s>", "</s>")])
    tok.encode_special_tokens = True  # "<s>" in the text is plain text, as in sentencepiece
    return tok


def test_spm_vs_sentencepiece(guanaco_bin, tmp_path, sp):
    texts = oasst_rows() + AWKWARD + random_unicode(2000, 11)
    assert len(texts) >= 518
    got = encode_many(SPM_MODEL, texts, tmp_path, "--no-bos")
    assert_same(texts, got, [sp.encode(t) for t in texts], "tokenizer.model vs sentencepiece")


def test_spm_vs_hf_tokenizers(guanaco_bin, tmp_path, hf_llama):
    texts = oasst_rows() + [t for t in AWKWARD if t]  # HF's Prepend adds '▁' even to ""
    got = encode_many(SPM_MODEL, texts, tmp_path, "--no-bos")
    want = [hf_llama.encode(t, add_special_tokens=False).ids for t in texts]
    assert_same(texts, got, want, "tokenizer.model vs HF tokenizers (LlamaConverter)")


def test_spm_bos_eos_and_special(guanaco_bin, tmp_path, sp):
    texts = ["Hello world", "I believe the meaning of life is", ""]
    got = encode_many(SPM_MODEL, texts, tmp_path)  # BOS by default
    assert got == [[sp.bos_id()] + sp.encode(t) for t in texts]
    got = encode_many(SPM_MODEL, texts, tmp_path, "--eos", "--no-bos")
    assert got == [sp.encode(t) + [sp.eos_id()] for t in texts]
    # --special: control tokens in the text; each chunk after one gets its own
    # dummy prefix (HF slow "legacy" LlamaTokenizer = sentencepiece per chunk)
    text = "<s>Hello</s> world<s>"
    out = run_guanaco("tokenize", "-m", SPM_MODEL, "-p", text, "--special", "--no-bos").stdout.split()
    assert [int(x) for x in out] == [1] + sp.encode("Hello") + [2] + sp.encode(" world") + [1]


def test_spm_same_through_every_path(guanaco_bin, tmp_path, sp):
    """tokenizer.model, an HF folder holding it, and the same vocab as llama.cpp's GGUF agree with sentencepiece."""
    folder = tmp_path / "hf"
    folder.mkdir()
    shutil.copy(SPM_MODEL, folder / "tokenizer.model")
    texts = oasst_rows()[:60] + [t for t in AWKWARD if "\u2581" not in t]
    want = [sp.encode(t) for t in texts]
    for path in (folder, vocab_gguf("llama-spm")):
        assert_same(texts, encode_many(path, texts, tmp_path, "--no-bos"), want, str(path))


def test_spm_invalid_utf8_like_sentencepiece(guanaco_bin, tmp_path, sp):
    """Bytes that are not UTF-8: sentencepiece (fed bytes) turns each into U+FFFD."""
    cases = [b"a\xffb", b"\xe4\xb8", b"x\xe4\xb8\xadz\xc3", b"\xed\xa0\x80 \xc0\xaf", b"\xf0\x9f\xa6"]
    for raw in cases:
        f = tmp_path / "raw.bin"
        f.write_bytes(raw)
        got = [int(x) for x in run_guanaco("tokenize", "-m", SPM_MODEL, "-f", f, "--no-bos").stdout.split()]
        assert got == sp.encode(raw), raw


# ---------------------------------------------------------------------------
# (c) byte-level BPE: SmolLM2 GGUF vs HF tokenizers / llama.cpp

@pytest.fixture(scope="session")
def smol_hf_dir(smollm2_gguf, tmp_path_factory):
    """tokenizer.json + tokenizer_config.json that transformers builds from the GGUF."""
    transformers = pytest.importorskip("transformers")
    d = tmp_path_factory.mktemp("smol_hf")
    tok = transformers.AutoTokenizer.from_pretrained(str(smollm2_gguf.parent), gguf_file=smollm2_gguf.name)
    tok.save_pretrained(str(d))
    assert (d / "tokenizer.json").exists()
    return d


@pytest.fixture(scope="session")
def smol_hf(smol_hf_dir):
    tk = pytest.importorskip("tokenizers")
    return tk.Tokenizer.from_file(str(smol_hf_dir / "tokenizer.json"))


@pytest.fixture(scope="session")
def smol_hf_pre(smol_hf_dir, tmp_path_factory):
    """The same tokenizer with the pre-tokenizer the GGUF declares.

    tokenizer.ggml.pre = "smollm" means llama.cpp's regex list [\\p{N}, GPT-2] — i.e.
    SmolLM2's own tokenizer.json: Sequence[Digits(individual_digits), ByteLevel].
    transformers' GGUF converter keeps only ByteLevel, so it differs wherever a
    digit ends a whitespace run (":\\n\\n1." -> ĊĊ vs Ċ Ċ)."""
    tk = pytest.importorskip("tokenizers")
    j = json.loads((smol_hf_dir / "tokenizer.json").read_text(encoding="utf-8"))
    assert j["pre_tokenizer"]["type"] == "ByteLevel"
    j["pre_tokenizer"] = {"type": "Sequence",
                          "pretokenizers": [{"type": "Digits", "individual_digits": True}, j["pre_tokenizer"]]}
    d = tmp_path_factory.mktemp("smol_pre")
    (d / "tokenizer.json").write_text(json.dumps(j, ensure_ascii=False), encoding="utf-8")
    return tk.Tokenizer.from_file(str(d / "tokenizer.json")), d / "tokenizer.json"


SPECIAL_TEXTS = ["<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n", "a<|endoftext|>b<repo_name>"]


def test_smol_gguf_pre_is_smollm(smollm2_gguf):
    gguf = pytest.importorskip("gguf")
    r = gguf.GGUFReader(str(smollm2_gguf))
    f = r.fields["tokenizer.ggml.pre"]
    assert bytes(f.parts[f.data[0]]).decode() == "smollm"


def test_smol_tokenizer_json_vs_hf(guanaco_bin, tmp_path, smol_hf_dir, smol_hf):
    texts = oasst_rows() + AWKWARD + SPECIAL_TEXTS
    want = [smol_hf.encode(t).ids for t in texts]  # HF matches special tokens in text
    got = encode_many(smol_hf_dir / "tokenizer.json", texts, tmp_path, "--special")
    assert_same(texts, got, want, "tokenizer.json vs HF tokenizers")
    # the folder path picks tokenizer.json; no BOS for SmolLM2
    got = encode_many(smol_hf_dir, texts, tmp_path, "--special")
    assert_same(texts, got, want, "HF folder vs HF tokenizers")


def test_smol_gguf_vs_hf(guanaco_bin, tmp_path, smollm2_gguf, smol_hf_pre):
    hf, json_path = smol_hf_pre
    texts = oasst_rows() + AWKWARD + SPECIAL_TEXTS + ["Step:\n\n1. one", "x  1", " 2"] + random_unicode(2000, 12)
    want = [hf.encode(t).ids for t in texts]
    got = encode_many(smollm2_gguf, texts, tmp_path, "--special")
    assert_same(texts, got, want, "SmolLM2 GGUF vs HF tokenizers (Digits + ByteLevel)")
    got = encode_many(json_path, texts, tmp_path, "--special")
    assert_same(texts, got, want, "tokenizer.json with Digits vs HF tokenizers")
    # without --special the markers are plain text, as HF with encode_special_tokens
    hf.encode_special_tokens = True
    try:
        want = [hf.encode(t).ids for t in SPECIAL_TEXTS]
    finally:
        hf.encode_special_tokens = False
    assert_same(SPECIAL_TEXTS, encode_many(smollm2_gguf, SPECIAL_TEXTS, tmp_path), want, "no --special")


def test_smol_gguf_vs_llama_cpp(guanaco_bin, tmp_path, smollm2_gguf):
    pytest.importorskip("llama_cpp")
    texts = oasst_rows() + [t for t in AWKWARD if t] + SPECIAL_TEXTS
    want = isolated(llama_tokenize, smollm2_gguf, texts, add_bos=False, special=True)  # a child process
    got = encode_many(smollm2_gguf, texts, tmp_path, "--special", "--no-bos")
    assert_same(texts, got, want, "SmolLM2 GGUF vs llama.cpp")


LLAMA3_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
             r"\s*[\r\n]+|\s+(?!\S)|\s+")
PRE_VARIANTS = {
    # LLaMA 3 style: Split(regex, Isolated) then ByteLevel without its own regex
    "llama3": [{"type": "Split", "pattern": {"Regex": LLAMA3_RE}, "behavior": "Isolated", "invert": False},
               {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}],
    "prefix_space": [{"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}],
    "digits_contig": [{"type": "Digits", "individual_digits": False},
                      {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}],
}
for beh in ("Isolated", "Removed", "MergedWithPrevious", "MergedWithNext", "Contiguous"):
    for inv in (False, True):
        PRE_VARIANTS[f"{beh}_{inv}"] = [
            {"type": "Split", "pattern": {"Regex": r"[,.!?]+|\s"}, "behavior": beh, "invert": inv},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]
PRE_VARIANTS["string_pattern"] = [{"type": "Split", "pattern": {"String": "e"}, "behavior": "MergedWithNext",
                                   "invert": False},
                                  {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]


@pytest.mark.parametrize("variant", sorted(PRE_VARIANTS))
def test_pre_tokenizer_variants_vs_hf(guanaco_bin, tmp_path, smol_hf_dir, variant):
    """Each Split behaviour / invert, Digits, ByteLevel(add_prefix_space) and
    LLaMA 3's Split + ignore_merges on the SmolLM2 vocab, against HF tokenizers."""
    tk = pytest.importorskip("tokenizers")
    j = json.loads((smol_hf_dir / "tokenizer.json").read_text(encoding="utf-8"))
    j["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": PRE_VARIANTS[variant]}
    if variant == "llama3":
        j["model"]["ignore_merges"] = True
    p = tmp_path / "tokenizer.json"
    p.write_text(json.dumps(j, ensure_ascii=False), encoding="utf-8")
    hf = tk.Tokenizer.from_file(str(p))
    texts = (oasst_rows()[:150] + AWKWARD + ["Hello, world!! How are you?", "a,b.c", "x 12345 y", "eee e"]
             + random_unicode(300, len(variant)))
    want = [hf.encode(t).ids for t in texts]
    assert_same(texts, encode_many(p, texts, tmp_path, "--special"), want, variant)


def test_gpt2_gguf_metadata(guanaco_bin):
    out = run_guanaco("tokenize", "-m", vocab_gguf("gpt-2"), "-p", "Hello<|endoftext|>",
                      "--special", "--pieces").stdout.splitlines()
    assert out[-1] == "50256\t<|endoftext|>"


# ---------------------------------------------------------------------------
# (d) decode

def test_spm_decode_matches_sentencepiece(guanaco_bin, tmp_path, sp):
    texts = oasst_rows() + AWKWARD
    got = roundtrip_many(SPM_MODEL, texts, tmp_path, "--no-bos")
    want = [sp.decode(sp.encode(t)) for t in texts]
    assert_same(texts, got, want, "decode(encode(x)) vs sentencepiece")
    # valid UTF-8 without '▁' in it comes back unchanged
    for t, g in zip(texts, got):
        if "\u2581" not in t:
            assert g == t
    # random id lists, biased to byte pieces so characters are split and broken
    rng = random.Random(1234)
    lists = []
    for _ in range(400):
        k = rng.randrange(0, 40)
        lists.append([rng.randrange(3, 259) if rng.random() < 0.5 else rng.randrange(0, sp.get_piece_size())
                      for _ in range(k)])
    got = decode_each(SPM_MODEL, lists, tmp_path)
    assert_same(lists, got, [sp.decode(ids) for ids in lists], "decode(random ids) vs sentencepiece")


def test_bpe_decode_matches_hf(guanaco_bin, tmp_path, smol_hf_dir, smol_hf, smollm2_gguf):
    texts = oasst_rows() + AWKWARD + SPECIAL_TEXTS
    for model in (smollm2_gguf, smol_hf_dir / "tokenizer.json"):
        got = roundtrip_many(model, texts, tmp_path, "--special")
        assert_same(texts, got, texts, f"{model.name}: decode(encode(x)) == x")
    rng = random.Random(99)
    v = smol_hf.get_vocab_size()
    lists = [[rng.randrange(0, v) for _ in range(rng.randrange(0, 30))] for _ in range(400)]
    lists += [[rng.randrange(100, 400) for _ in range(rng.randrange(1, 12))] for _ in range(400)]  # byte pieces
    want = [smol_hf.decode(ids, skip_special_tokens=True) for ids in lists]
    assert_same(lists, decode_each(smollm2_gguf, lists, tmp_path), want, "decode(random ids) vs HF")
    want = [smol_hf.decode(ids, skip_special_tokens=False) for ids in lists]
    assert_same(lists, decode_each(smollm2_gguf, lists, tmp_path, "--special"), want, "decode with specials vs HF")


def test_decode_flag(guanaco_bin, sp):
    ids = [1] + sp.encode("Hello world, 🦙!") + [2]
    out = run_guanaco("tokenize", "-m", SPM_MODEL, "--decode", " ".join(map(str, ids))).stdout
    assert out == sp.decode(ids) + "\n"


def test_encode_1mb_is_fast(guanaco_bin, tmp_path, smollm2_gguf):
    text = "\n".join(oasst_rows())
    text = (text * (1 + 1_000_000 // len(text)))[:1_000_000]
    f = tmp_path / "big.txt"
    f.write_text(text, encoding="utf-8")
    for model in (SPM_MODEL, smollm2_gguf):
        t0 = time.monotonic()
        run_guanaco("tokenize", "-m", model, "-f", f)
        assert time.monotonic() - t0 < 3.0, f"{model}: 1 MB took {time.monotonic() - t0:.2f}s"


# ---------------------------------------------------------------------------
# (e) bad files and usage

def _gguf(path, fill):
    gguf = pytest.importorskip("gguf")
    w = gguf.GGUFWriter(str(path), "llama")
    fill(w)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def _bad_files(tmp_path):
    model = SPM_MODEL.read_bytes()
    files = {
        "trunc.model": model[:1000],
        "trunc2.model": model[:123457],
        "notail.model": model[:100000],  # may end on a piece boundary: trainer_spec missing
        "empty.model": b"",
        "random.bin": bytes(random.Random(5).randrange(256) for _ in range(300)),
        "bad.json": b'{"model": {"type": "BPE", "vocab": {"a": 0},',
        "nomodel.json": b'{"version": "1.0"}',
        "badid.json": b'{"model": {"type": "BPE", "vocab": {"a": 0, "b": 123456789}, "merges": []}}',
        "badmerge.json": b'{"model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": ["a c"]},'
                         b' "pre_tokenizer": {"type": "ByteLevel"}}',
        "trunc.gguf": (vocab_gguf("gpt-2")).read_bytes()[:3000],
    }
    paths = []
    for name, data in files.items():
        p = tmp_path / name
        p.write_bytes(data)
        paths.append(p)
    _gguf(tmp_path / "novocab.gguf", lambda w: w.add_uint32("llama.block_count", 1))
    _gguf(tmp_path / "bosrange.gguf", lambda w: (w.add_tokenizer_model("llama"),
                                                 w.add_token_list(["<unk>", "<s>", "</s>"]), w.add_bos_token_id(7)))
    _gguf(tmp_path / "scores.gguf", lambda w: (w.add_tokenizer_model("llama"),
                                               w.add_token_list(["<unk>", "<s>", "</s>"]), w.add_token_scores([0.0])))
    paths += [tmp_path / "novocab.gguf", tmp_path / "bosrange.gguf", tmp_path / "scores.gguf"]
    return paths


def test_bad_files(guanaco_bin, tmp_path):
    for p in _bad_files(tmp_path):
        r = run_guanaco("tokenize", "-m", p, "-p", "hello", check=False)
        lines = r.stderr.splitlines()
        assert r.returncode == 1, (p, r.returncode, r.stderr)
        assert len(lines) == 1 and lines[0].startswith("guanaco: ") and str(p) in lines[0], (p, r.stderr)
        assert r.stdout == ""


def test_usage_errors(guanaco_bin):
    for args in (["-p", "x"], ["-m", SPM_MODEL], ["-m", SPM_MODEL, "-p", "x", "--bogus"],
                 ["-m", SPM_MODEL, "-p", "x", "-f", "y"], ["-m", SPM_MODEL, "--jsonl", "text", "-p", "x"]):
        r = run_guanaco("tokenize", *args, check=False)
        assert r.returncode == 2 and r.stderr.startswith("guanaco: "), (args, r.returncode, r.stderr)
    r = run_guanaco("tokenize", "-m", SPM_MODEL, "--decode", "1 99999", check=False)
    assert r.returncode == 1 and r.stderr.startswith("guanaco: ") and "99999" in r.stderr
    r = run_guanaco("tokenize", "-m", "/nonexistent/tokenizer.model", "-p", "x", check=False)
    assert r.returncode == 1 and "/nonexistent/tokenizer.model" in r.stderr
    assert "usage:" in run_guanaco("tokenize", "--help").stdout
