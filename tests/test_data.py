"""Training examples (src/train/data.c) against qlora.py's DataCollatorForCausalLM.

Oracle: a re-implementation of qlora.py's data path (format mapping,
ALPACA_PROMPT_DICT, DataCollatorForCausalLM: bos+input / output+eos tokenized
separately with add_special_tokens=False and right truncation, labels -100 over
the source) driving transformers' slow SentencePiece tokenizer set up as
qlora ran it with transformers 4.31:

  - legacy=True: every piece of text between special tokens is encoded by
    SentencePiece on its own, so each gets its own dummy prefix (the first
    target token of an oasst1 row is '▁###' = 835; legacy=False gives 2277).
  - qlora re-registers bos/eos/unk as plain strings, and 4.31's tokenize()
    strips whitespace on both sides of special tokens that are not AddedToken
    objects. transformers 5 no longer has that default, so the same rule is
    written as AddedToken(lstrip=True, rstrip=True) for <s>, </s>, <unk>.
  - transformers 5 has no sentencepiece-backed LlamaTokenizer any more; the
    generic SentencePieceBackend is the slow tokenizer (LlamaTokenizer 4.31's
    legacy path is exactly sp_model.encode per piece). A second, hand-written
    oracle on sentencepiece alone must agree with it.

Ours comes out through `guanaco data-dump` when the CLI has it, else through
tests/ref/data_dump_driver.c compiled against build/libguanaco.a.

Run: ~/.cache/guanaco/venv/bin/python -m pytest tests/test_data.py
"""
import json
import os
import pathlib
import subprocess

import pytest
import sentencepiece as spm
from transformers import AddedToken, SentencePieceBackend

from conftest import BUILD, DATA, GUANACO, ROOT, read_text

TOKENIZER = DATA / "llama-tokenizer" / "tokenizer.model"
OASST_EVAL = DATA / "openassistant-guanaco" / "openassistant_best_replies_eval.jsonl.gz"
IGNORE_INDEX = -100

# qlora.py ALPACA_PROMPT_DICT (artidoro/qlora, qlora.py), byte for byte.
ALPACA_PROMPT_DICT = {
    "prompt_input": (
        "Below is an instruction that describes a task, paired with an input that provides further context. "
        "Write a response that appropriately completes the request.\n\n"
        "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response: "
    ),
    "prompt_no_input": (
        "Below is an instruction that describes a task. "
        "Write a response that appropriately completes the request.\n\n"
        "### Instruction:\n{instruction}\n\n### Response: "
    ),
}


# ---------------------------------------------------------------------------
# oracle


@pytest.fixture(scope="session")
def hf_tok():
    """The slow LLaMA tokenizer as qlora.py configured it under transformers 4.31 (see the top)."""
    def strip_tok(s):
        return AddedToken(s, lstrip=True, rstrip=True, special=True, normalized=False)
    t = SentencePieceBackend(vocab_file=str(TOKENIZER), legacy=True, bos_token="<s>", eos_token="</s>",
                             unk_token="<unk>",
                             added_tokens_decoder={0: strip_tok("<unk>"), 1: strip_tok("<s>"), 2: strip_tok("</s>")})
    assert (t.bos_token, t.eos_token) == ("<s>", "</s>")
    assert t.convert_tokens_to_ids(["<unk>", "<s>", "</s>"]) == [0, 1, 2]
    return t


@pytest.fixture(scope="session")
def sp():
    return spm.SentencePieceProcessor(model_file=str(TOKENIZER))


def sp_431(sp, text):
    """Second oracle: 4.31's slow-tokenizer rules written out on sentencepiece alone."""
    specials = {"<s>": 1, "</s>": 2, "<unk>": 0}
    parts, pos = [], 0
    while True:
        hits = [(text.find(s, pos), s) for s in specials if text.find(s, pos) >= 0]
        if not hits:
            parts.append(text[pos:])
            break
        at, s = min(hits)
        parts += [text[pos:at], s]
        pos = at + len(s)
    ids = []
    for i, p in enumerate(parts):
        if p in specials and i % 2 == 1:
            ids.append(specials[p])
            continue
        if i > 0:
            p = p.lstrip()
        if i < len(parts) - 1:
            p = p.rstrip()
        if p:
            ids += sp.encode(p)
    return ids


def qlora_rows(fmt, rows):
    """qlora.py's format_dataset: rows -> [{"input", "output"}] (messages: our documented rendering)."""
    out = []
    for r in rows:
        if fmt == "oasst1":
            out.append({"input": "", "output": r["text"]})
        elif fmt == "alpaca":  # extract_alpaca_dataset
            key = "prompt_input" if r.get("input", "") != "" else "prompt_no_input"
            out.append({"input": ALPACA_PROMPT_DICT[key].format(**r), "output": r["output"]})
        elif fmt == "input-output":
            out.append({"input": r["input"], "output": r["output"]})
        elif fmt == "messages":
            text = ""
            for i, m in enumerate(r["messages"]):
                if m["role"] == "system":
                    text += m["content"] + ("" if m["content"][-1:].isspace() else " ")
                else:
                    text += {"user": "### Human: ", "assistant": "### Assistant: "}[m["role"]] + m["content"]
            out.append({"input": "", "output": text})
        else:
            raise ValueError(fmt)
    return out


def qlora_collate(tok, examples, source_max_len, target_max_len, train_on_source=False):
    """DataCollatorForCausalLM.__call__ (qlora.py) without the padding: [(ids, labels)]."""
    sources = [f"{tok.bos_token}{e['input']}" for e in examples]
    targets = [f"{e['output']}{tok.eos_token}" for e in examples]
    src = tok(sources, max_length=source_max_len, truncation=True, add_special_tokens=False)["input_ids"]
    tgt = tok(targets, max_length=target_max_len, truncation=True, add_special_tokens=False)["input_ids"]
    res = []
    for s, t in zip(src, tgt):
        labels = list(s + t) if train_on_source else [IGNORE_INDEX] * len(s) + list(t)
        res.append((list(s + t), labels))
    return res


# ---------------------------------------------------------------------------
# ours


@pytest.fixture(scope="session")
def data_dump(tmp_path_factory):
    """Command prefix that runs our data-dump."""
    if GUANACO.exists():
        p = subprocess.run([str(GUANACO), "data-dump", "--help"], capture_output=True, text=True)
        if p.returncode == 0 and "data-dump" in p.stdout + p.stderr:
            return [str(GUANACO), "data-dump"]
    lib = BUILD / "libguanaco.a"
    assert lib.exists(), f"{lib} not built; run make"
    exe = tmp_path_factory.mktemp("data_dump") / "data_dump"
    cc = os.environ.get("CC", "cc")
    cmd = [cc, "-I", str(ROOT / "include"), "-I", str(ROOT / "src"), str(ROOT / "tests/ref/data_dump_driver.c"),
           str(lib), "-lopenblas", "-lcjson", "-lpcre2-8", "-lm", "-lpthread", "-fopenmp", "-o", str(exe)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    assert p.returncode == 0, f"{' '.join(cmd)}\n{p.stderr}"
    return [str(exe)]


def run_dump(data_dump, path, fmt="auto", smax=1024, tmax=256, train_on_source=False, check=True):
    cmd = data_dump + ["-m", str(TOKENIZER), "-d", str(path), "--dataset-format", fmt,
                       "--source-max-len", str(smax), "--target-max-len", str(tmax)]
    if train_on_source:
        cmd.append("--train-on-source")
    p = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=120)
    if check:
        assert p.returncode == 0, f"{' '.join(cmd)} exited {p.returncode}\n{p.stderr[-3000:]}"
    return p


def ours(p):
    return [json.loads(l) for l in p.stdout.splitlines()]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def compare(got, want_pairs, examples, lines=None):
    assert len(got) == len(want_pairs), (len(got), len(want_pairs))
    for k, (g, (ids, labels), e) in enumerate(zip(got, want_pairs, examples)):
        where = f"example {k} (line {g['line']})"
        assert g["ids"] == ids, f"{where}: ids\n got  {g['ids'][:40]}\n want {ids[:40]}"
        assert g["labels"] == labels, f"{where}: labels"
        assert g["length"] == len(e["input"]) + len(e["output"]), where
        if lines is not None:
            assert g["line"] == lines[k], where


# ---------------------------------------------------------------------------
# the oracle itself


def test_oracle_agrees_with_plain_sentencepiece(hf_tok, sp):
    texts = ["<s>", "<s>  Hello", "### Human: hi</s>", "hi  \n</s>", "a <s> b</s>c", "<s>\u3000x",
             "x\u00a0</s>", "  </s>", "<s>" + "Ünïcödé 🦙 {x}\t", "a<unk> b", "x<</s>"]
    for t in texts:
        assert hf_tok(t, add_special_tokens=False)["input_ids"] == sp_431(sp, t), repr(t)
    # docs/FACTS.md §6.5/§9.4: separate tokenization gives the target its own dummy prefix
    assert hf_tok("### Human: hi</s>", add_special_tokens=False)["input_ids"][0] == 835


# ---------------------------------------------------------------------------
# oasst1 (the Guanaco data)


@pytest.mark.parametrize("smax,tmax", [(16, 512), (16, 64), (4, 1)])
def test_oasst1_eval_file(data_dump, hf_tok, smax, tmax):
    rows = [json.loads(l) for l in read_text(OASST_EVAL).splitlines()]
    ex = qlora_rows("oasst1", rows)
    want = qlora_collate(hf_tok, ex, smax, tmax)
    got = ours(run_dump(data_dump, OASST_EVAL, "oasst1", smax, tmax))
    compare(got, want, ex, lines=list(range(1, len(rows) + 1)))
    for g in got:
        assert g["ids"][0] == 1 and g["labels"][0] == IGNORE_INDEX
        if tmax > 1:
            assert g["ids"][1] == 835  # '▁###'
    ends = sum(g["ids"][-1] == 2 for g in got)
    if tmax == 512:
        assert 0 < ends < len(got)  # some conversations are longer than 512 tokens and lose the EOS
    elif tmax == 64:
        assert ends < len(got) // 4


def test_oasst1_auto_and_train_on_source(data_dump, hf_tok):
    rows = [json.loads(l) for l in read_text(OASST_EVAL).splitlines()[:40]]
    ex = qlora_rows("oasst1", rows)
    got = ours(run_dump(data_dump, OASST_EVAL, "auto", 16, 128, train_on_source=True))[:40]
    compare(got, qlora_collate(hf_tok, ex, 16, 128, train_on_source=True), ex)
    assert all(g["labels"][0] == 1 for g in got)


# ---------------------------------------------------------------------------
# alpaca, input-output, messages


ALPACA_ROWS = [
    {"instruction": "Give three tips for staying healthy.", "input": "", "output": "1. Eat well.\n2. Sleep.\n3. Move."},
    {"instruction": "Translate to French.", "input": "Good morning, {name}!", "output": "Bonjour, {name} !"},
    {"instruction": "Use {input} and {instruction} literally", "input": "{instruction}", "output": "ok"},
    {"instruction": "Summarise", "input": "  leading and trailing spaces  ", "output": "answer with a trailing newline\n"},
    {"instruction": "No input key at all", "output": "  spaced output  "},
    {"instruction": "Ünïcödé ✓ 🦙", "input": "日本語のテキスト", "output": "Ответ\u3000"},
    {"instruction": "Special strings", "input": "x <s> y", "output": "before </s> after<unk>z"},
    {"instruction": "Tabs\tand\r\nnewlines", "input": "\n", "output": "\t\tindented"},
    {"instruction": "long " * 300, "input": "more " * 200, "output": "very long output " * 200},
]


@pytest.mark.parametrize("smax,tmax,tos", [(1024, 256, False), (64, 16, False), (8, 4, True), (2048, 2048, True)])
def test_alpaca(data_dump, hf_tok, tmp_path, smax, tmax, tos):
    path = write_jsonl(tmp_path / "alpaca.jsonl", ALPACA_ROWS)
    ex = qlora_rows("alpaca", ALPACA_ROWS)
    got = ours(run_dump(data_dump, path, "alpaca", smax, tmax, tos))
    compare(got, qlora_collate(hf_tok, ex, smax, tmax, tos), ex, lines=list(range(1, len(ALPACA_ROWS) + 1)))
    # AUTO picks alpaca from the "instruction" field
    assert ours(run_dump(data_dump, path, "auto", smax, tmax, tos)) == got


IO_ROWS = [
    {"input": "", "output": "Just an answer."},
    {"input": "  two leading spaces", "output": "trailing newlines\n\n"},
    {"input": "\u3000ideographic space first", "output": "nbsp last\u00a0"},
    {"input": "emoji 🦙🦙 and bytes \u0001\u007f", "output": "zero-width \u200b joiner"},
    {"input": "literal </s> in the source", "output": "literal <s> in the target"},
    {"input": "tab\t", "output": "\ttab first"},
    {"input": "numbers 12345 3.14159", "output": "67890"},
    {"input": "x" * 3000, "output": "y " * 1000},
]


@pytest.mark.parametrize("smax,tmax,tos", [(1024, 256, False), (16, 512, False), (5, 7, True)])
def test_input_output(data_dump, hf_tok, tmp_path, smax, tmax, tos):
    path = write_jsonl(tmp_path / "io.jsonl", IO_ROWS)
    ex = qlora_rows("input-output", IO_ROWS)
    got = ours(run_dump(data_dump, path, "input-output", smax, tmax, tos))
    compare(got, qlora_collate(hf_tok, ex, smax, tmax, tos), ex)
    assert ours(run_dump(data_dump, path, "auto", smax, tmax, tos)) == got


MSG_ROWS = [
    {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"}]},
    {"messages": [{"role": "system", "content": "A chat between a curious human and an artificial intelligence "
                   "assistant. The assistant gives helpful, detailed, and polite answers to the user's questions."},
                  {"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"},
                  {"role": "user", "content": "and 3+3?"}, {"role": "assistant", "content": "6"}]},
    {"messages": [{"role": "system", "content": "sys ends in space "}, {"role": "user", "content": "q"},
                  {"role": "assistant", "content": "a\n"}]},
]


def test_messages_match_oasst1_layout(data_dump, hf_tok, tmp_path):
    path = write_jsonl(tmp_path / "msgs.jsonl", MSG_ROWS)
    ex = qlora_rows("messages", MSG_ROWS)
    assert ex[0]["output"] == "### Human: Hi### Assistant: Hello! How can I help?"
    got = ours(run_dump(data_dump, path, "messages", 16, 512))
    compare(got, qlora_collate(hf_tok, ex, 16, 512), ex)
    assert ours(run_dump(data_dump, path, "auto", 16, 512)) == got
    # the same conversation written as an oasst1 row gives the same example
    oasst = write_jsonl(tmp_path / "as_oasst1.jsonl", [{"text": ex[0]["output"]}])
    assert ours(run_dump(data_dump, oasst, "oasst1", 16, 512))[0]["ids"] == got[0]["ids"]


# ---------------------------------------------------------------------------
# file handling and bad rows


def test_crlf_blank_lines_bad_rows(data_dump, hf_tok, tmp_path):
    good = [{"text": "### Human: one### Assistant: 1"}, {"text": "### Human: two### Assistant: 2"},
            {"text": "### Human: three### Assistant: 3"}]
    lines = [
        json.dumps(good[0]),                 # 1
        "",                                  # 2 blank: silent
        "   \t ",                            # 3 whitespace only: silent
        "{not json",                         # 4 bad JSON
        json.dumps({"txt": "typo"}),         # 5 missing field
        json.dumps({"text": ""}),            # 6 empty text
        json.dumps({"text": 42}),            # 7 not a string
        json.dumps(good[1]),                 # 8
        "[1, 2]",                            # 9 not an object
        json.dumps(good[2]) + " trailing",   # 10 extra text
        json.dumps(good[2]),                 # 11, last line without newline
    ]
    path = tmp_path / "mixed.jsonl"
    path.write_bytes("\r\n".join(lines).encode())
    p = run_dump(data_dump, path, "oasst1", 16, 512)
    got = ours(p)
    ex = qlora_rows("oasst1", [good[0], good[1], good[2]])
    compare(got, qlora_collate(hf_tok, ex, 16, 512), ex, lines=[1, 8, 11])
    for ln in (4, 5, 6, 7, 9, 10):
        assert f"{path}:{ln}:" in p.stderr, (ln, p.stderr)
    for ln in (1, 2, 3, 8, 11):
        assert f"{path}:{ln}:" not in p.stderr, (ln, p.stderr)
    assert 'missing field "text"' in p.stderr and "not valid JSON" in p.stderr
    assert "6 skipped" in p.stderr


@pytest.mark.parametrize("content,words", [
    (None, ["cannot open"]),
    (b"", ["no rows", "empty"]),
    (b"\n  \n\r\n", ["no rows"]),
    (b'{"text": ""}\nnot json\n{"other": 1}\n', ["no usable row"]),
])
def test_no_usable_row_is_an_error(data_dump, tmp_path, content, words):
    path = tmp_path / "data.jsonl"
    if content is not None:
        path.write_bytes(content)
    p = run_dump(data_dump, path, "auto", 16, 512, check=False)
    assert p.returncode == 1, (p.returncode, p.stdout, p.stderr)
    assert p.stdout == ""
    last = p.stderr.strip().splitlines()[-1]
    assert str(path) in last and all(w in last for w in words), p.stderr
