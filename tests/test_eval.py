"""guanaco eval: Elo, judge, MMLU, CrowS-Pairs, perplexity — against independent references.

Expected values come from the data files in data/, from transformers/sentencepiece
(MMLU, CrowS), llama-cpp-python (perplexity) or from a numpy re-implementation of the
paper's Elo procedure — never from guanaco's own output. The model-based cases use small
subsets (--limit) so the file runs in a few minutes on 2 cores:

  * MMLU, tiny random LLaMA (SentencePiece vocab, float32): 200 items 5-shot; predictions
    must match transformers exactly, except where transformers' top-2 letter margin is < 1e-4.
  * MMLU, SmolLM2-135M (our Q4_1 GGUF vs transformers' GGUF loader, which dequantizes the
    same blocks to float32): 200 items 0-shot; predictions equal except where the top-2
    margin is < 1e-3 (the logits differ by ~1e-4 from float summation order only).
  * CrowS, SmolLM2: per-sentence log-likelihoods of 100 pairs within 1e-3 of transformers'.
  * Perplexity, SmolLM2 on OASST1 rows: within 0.5% of llama.cpp on the same windows.
"""
import csv
import http.server
import json
import math
import os
import pathlib
import re
import shutil
import struct
import threading
import time

import numpy as np
import pytest

from conftest import CACHE, DATA, GUANACO, open_text, read_text, run_guanaco, smollm2_gguf_path
from native_oracle import isolated, llama_strided_nll

RATINGS = DATA / "qlora-eval" / "ratings-gpt4"
PROMPTS = DATA / "qlora-eval" / "prompts"
MMLU = DATA / "mmlu"
CROWS = DATA / "crows-pairs" / "crows_pairs_anonymized.csv.gz"
OASST = DATA / "openassistant-guanaco" / "openassistant_best_replies_eval.jsonl.gz"
THREADS = "2"
# libgomp's default spin-waiting fights OpenBLAS's own threads: on a busy 2-core machine a
# forward pass runs several times slower (measured 6x). Passive waiting avoids that.
os.environ.setdefault("OMP_WAIT_POLICY", "passive")


def read_jsonl(path):
    """JSON lines (split on \\n only: MMLU text holds U+2028 and friends, which str.splitlines splits on)."""
    return [json.loads(l) for l in read_text(path).split("\n") if l.strip()]


def guanaco_eval(*args, check=True, timeout=900):
    return run_guanaco("eval", *args, check=check, timeout=timeout)


# =============================================================================
# Elo

def read_release(folder):
    """(a, b, score) of every rated line in a release folder; systems from the file names."""
    out, unparsed = [], 0
    for f in sorted(folder.glob("*.jsonl*")):  # the release's .jsonl files, gzipped in data/
        base = f.name[:f.name.index(".jsonl")]
        a, rest = base.split("-vs-", 1)
        b = rest[:rest.index("-gpt-4-reviewer")]
        for line in read_text(f).split("\n"):
            if not line.strip():
                continue
            s = int(json.loads(line)["score"])
            if s == -1:
                unparsed += 1
            else:
                out.append((a, b, s))
    return out, unparsed


def short(name):
    """The release names as the paper's table shows them (our default normalization)."""
    n = re.sub(r"^answer[-_]", "", name)
    n = re.sub(r"-(vicuna|oa)-generations.*$", "", n)
    return {"gpt35": "gpt-3.5", "gpt4": "gpt-4"}.get(n, n)


def numpy_elo(matches, rounds, seed, k=32.0, init=1000.0, tie=0.5):
    """The paper's procedure, written independently: per round a random permutation of all
    matches, sequential Elo updates; returns (systems, mean, sd) over rounds."""
    systems = sorted({m[0] for m in matches} | {m[1] for m in matches})
    idx = {s: i for i, s in enumerate(systems)}
    A = np.array([idx[m[0]] for m in matches])
    B = np.array([idx[m[1]] for m in matches])
    S = np.array([1.0 if m[2] == 1 else 0.0 if m[2] == 2 else tie for m in matches])
    rng = np.random.default_rng(seed)
    perm = np.argsort(rng.random((rounds, len(matches))), axis=1)
    R = np.full((rounds, len(systems)), init)
    rows = np.arange(rounds)
    for t in range(len(matches)):
        j = perm[:, t]
        a, b, s = A[j], B[j], S[j]
        ea = 1.0 / (1.0 + 10.0 ** ((R[rows, b] - R[rows, a]) / 400.0))
        d = k * (s - ea)
        R[rows, a] += d
        R[rows, b] -= d
    return systems, R.mean(0), R.std(0, ddof=1)


@pytest.fixture(scope="module")
def released_elo(tmp_path_factory):
    out = tmp_path_factory.mktemp("elo") / "elo.json"
    t0 = time.time()
    p = guanaco_eval("elo", "--benchmark", f"vicuna={RATINGS / 'vicuna' / 'pairwise'}",
                     "--benchmark", f"oa={RATINGS / 'oa'}", "--json", out, "-t", THREADS)
    return json.loads(out.read_text()), p.stdout, time.time() - t0


def test_elo_released_judgments(released_elo):
    js, stdout, wall = released_elo
    assert wall < 120, f"10,000 orderings of 43k judgments took {wall:.0f} s"
    bench = {b["name"]: b for b in js["benchmarks"]}
    assert js["settings"] == {"rounds": 10000, "seed": 42, "k": 32, "init": 1000, "tie": 0.5}
    for name, folder, nsys in (("vicuna", RATINGS / "vicuna" / "pairwise", 8), ("oa", RATINGS / "oa", 7)):
        matches, unparsed = read_release(folder)
        b = bench[name]
        assert b["judgments"] == len(matches) and b["unparsed"] == unparsed and b["malformed"] == 0
        want = sorted({short(m[0]) for m in matches} | {short(m[1]) for m in matches})
        got = [s["name"] for s in b["systems"]]
        assert sorted(got) == want and len(got) == nsys
        assert [s["rank"] for s in b["systems"]] == list(range(1, nsys + 1))
        for s in b["systems"]:
            assert s["range95"][0] < s["elo"] < s["range95"][1]
            assert s["ci95_mean"][0] < s["elo"] < s["ci95_mean"][1]
            assert s["name"] in stdout
        assert b["systems"][0]["name"] == "gpt-4"   # the paper: GPT-4 first on both benchmarks
        # win-rate matrix from the raw lines
        wr = b["winrate"]
        pts, games = {}, {}
        for a, bb, s in matches:
            a, bb = short(a), short(bb)
            sa = 1.0 if s == 1 else 0.0 if s == 2 else 0.5
            pts[(a, bb)] = pts.get((a, bb), 0) + sa
            pts[(bb, a)] = pts.get((bb, a), 0) + 1 - sa
            games[(a, bb)] = games.get((a, bb), 0) + 1
            games[(bb, a)] = games.get((bb, a), 0) + 1
        for i, x in enumerate(wr["systems"]):
            for j, y in enumerate(wr["systems"]):
                if x == y:
                    assert wr["matrix"][i][j] is None
                else:
                    assert abs(wr["matrix"][i][j] - pts[(x, y)] / games[(x, y)]) < 1e-12
    med = {m["name"]: m for m in js["median_rank"]}
    assert set(med) == {"gpt-4", "gpt-3.5", "bard", "vicuna-13b", "7b-guanaco", "13b-guanaco", "30b-guanaco",
                        "65b-guanaco"}
    for name, m in med.items():
        ranks = sorted(m["ranks"].values())
        assert m["median_rank"] == float(np.median(ranks))
    assert med["bard"]["ranks"].keys() == {"vicuna"}
    assert "median rank over 2 benchmarks" in stdout


def test_elo_matches_numpy_reference(released_elo):
    """Our means agree with an independent numpy implementation of the same procedure
    (different random orderings, so within the sampling error of both means)."""
    js, _, _ = released_elo
    matches, _ = read_release(RATINGS / "vicuna" / "pairwise")
    matches = [(short(a), short(b), s) for a, b, s in matches]
    systems, mean, sd = numpy_elo(matches, rounds=2000, seed=1)
    ours = {s["name"]: s for s in next(b for b in js["benchmarks"] if b["name"] == "vicuna")["systems"]}
    for name, m, s in zip(systems, mean, sd):
        tol = 5 * math.sqrt(s * s / 2000 + ours[name]["sd"] ** 2 / 10000)
        assert abs(ours[name]["elo"] - m) < tol, (name, ours[name]["elo"], m, tol)
        assert abs(ours[name]["sd"] - s) < 0.1 * s


def test_elo_same_seed_same_numbers(tmp_path):
    vic = RATINGS / "vicuna" / "pairwise"
    outs = []
    for seed in ("5", "5", "6"):
        o = tmp_path / f"e{len(outs)}.json"
        guanaco_eval("elo", vic, "--rounds", "2000", "--seed", seed, "--json", o)
        outs.append(json.loads(o.read_text()))
    assert outs[0] == outs[1]
    assert outs[0] != outs[2]
    # thread count does not change the numbers either
    o = tmp_path / "t1.json"
    guanaco_eval("elo", vic, "--rounds", "2000", "--seed", "5", "--json", o, "-t", "1")
    assert json.loads(o.read_text()) == outs[0]


def write_lines(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_elo_known_tournament(tmp_path):
    """A always beats B, B always beats C (both presentation orders): ranks A > B > C."""
    d = tmp_path / "abc"
    d.mkdir()
    write_lines(d / "A-vs-B-gpt-4-reviewer-threeclass.jsonl", [{"question_id": i, "score": "1"} for i in range(10)])
    write_lines(d / "B-vs-A-gpt-4-reviewer-threeclass.jsonl", [{"question_id": i, "score": "2"} for i in range(10)])
    write_lines(d / "B-vs-C-gpt-4-reviewer-threeclass.jsonl", [{"question_id": i, "score": 1} for i in range(10)])
    write_lines(d / "C-vs-B-gpt-4-reviewer-threeclass.jsonl", [{"question_id": i, "score": 2} for i in range(10)])
    o = tmp_path / "abc.json"
    p = guanaco_eval("elo", d, "--rounds", "1000", "--json", o, "--png", tmp_path / "abc.png")
    s = {x["name"]: x for x in json.loads(o.read_text())["benchmarks"][0]["systems"]}
    assert (s["A"]["rank"], s["B"]["rank"], s["C"]["rank"]) == (1, 2, 3)
    assert s["A"]["elo"] > s["B"]["elo"] > s["C"]["elo"]
    assert s["A"]["elo"] > 1000 > s["C"]["elo"]
    assert abs(s["A"]["elo"] + s["B"]["elo"] + s["C"]["elo"] - 3000) < 1e-6
    assert (s["A"]["wins"], s["A"]["losses"], s["C"]["losses"]) == (20, 0, 20)
    png = (tmp_path / "abc.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    w, h = struct.unpack(">II", png[16:24])
    assert w == 900 and h > 100
    assert "A" in p.stdout

    # symmetric ties everywhere: everybody stays at exactly 1000
    t = tmp_path / "ties"
    t.mkdir()
    for a, b in (("x", "y"), ("y", "x"), ("x", "z"), ("z", "x"), ("y", "z"), ("z", "y")):
        write_lines(t / f"{a}-vs-{b}.jsonl", [{"score": 3}] * 5)
    o = tmp_path / "ties.json"
    guanaco_eval("elo", t, "--rounds", "300", "--json", o)
    for x in json.loads(o.read_text())["benchmarks"][0]["systems"]:
        assert x["elo"] == 1000 and x["range95"] == [1000, 1000] and x["rank"] == 1


# =============================================================================
# malformed inputs

def test_elo_malformed_lines(tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    f = d / "x-vs-y-gpt-4-reviewer-threeclass.jsonl"
    f.write_text('{"score": "1"}\n'          # 1 ok
                 '{"score": 2}\n'            # 2 ok
                 '\n'                         # 3 empty: ignored
                 '{"score": "3"}\n'          # 4 ok (tie)
                 '{"score": -1}\n'           # 5 unparsed
                 '{"score": "7"}\n'          # 6 unknown score
                 '{"score": "abc"}\n'        # 7 unknown score
                 '{"text": "no score"}\n'    # 8 missing
                 '{"score": [9.0, 6.0]}\n'   # 9 relative-score row: unknown here
                 '{{ not json\n')            # 10
    o = tmp_path / "m.json"
    p = guanaco_eval("elo", d, "--rounds", "50", "--json", o)
    b = json.loads(o.read_text())["benchmarks"][0]
    assert (b["judgments"], b["unparsed"], b["malformed"]) == (3, 1, 5)
    for line in (6, 7, 8, 9, 10):
        assert f"{f}:{line}: skipped" in p.stderr
    assert "unknown score" in p.stderr and "not a JSON object" in p.stderr
    assert "5 malformed lines skipped" in p.stdout and "1 unparsed" in p.stdout

    # missing file / folder: clear error
    p = guanaco_eval("elo", tmp_path / "nope.jsonl", check=False)
    assert p.returncode == 1 and "nope.jsonl: no such file" in p.stderr
    # systems cannot be named: file:line and a hint
    g = tmp_path / "judgments.jsonl"
    g.write_text('{"score": 1}\n')
    p = guanaco_eval("elo", g, check=False)
    assert p.returncode == 1 and f"{g}:1: cannot tell which systems" in p.stderr and "HINT" in p.stderr
    # only bad lines: nothing to rate
    h = tmp_path / "p-vs-q.jsonl"
    h.write_text('{"score": -1}\n{"score": 5}\n')
    p = guanaco_eval("elo", h, check=False)
    assert p.returncode == 1 and "no usable judgments" in p.stderr
    # lines naming their systems override the file name; FastChat arena rows are read too
    r = tmp_path / "mixed.jsonl"
    write_lines(r, [{"model1": "u", "model2": "v", "score": 1},
                    {"model_a": "v", "model_b": "u", "winner": "model_b"},
                    {"model_a": "u", "model_b": "v", "winner": "tie (bothbad)"}])
    o = tmp_path / "r.json"
    guanaco_eval("elo", r, "--rounds", "10", "--json", o)
    s = {x["name"]: x for x in json.loads(o.read_text())["benchmarks"][0]["systems"]}
    assert (s["u"]["wins"], s["u"]["ties"], s["v"]["losses"]) == (2, 1, 2)
    # bad flags
    assert guanaco_eval("elo", "--rounds", "0", r, check=False).returncode == 2
    assert guanaco_eval("elo", "--benchmark", "novalue", check=False).returncode == 2


# =============================================================================
# model fixtures

@pytest.fixture(scope="module")
def tiny_spm(tmp_path_factory):
    """A random float32 LLaMA with LLaMA's SentencePiece vocabulary (32000) and a 4096 context."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    d = tmp_path_factory.mktemp("tiny_spm")
    cfg = LlamaConfig(vocab_size=32000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                      rms_norm_eps=1e-5, rope_parameters={"rope_theta": 10000.0, "rope_type": "default"},
                      tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).eval()
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():   # weights of unit scale so the letter logits are well separated
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1]))
    model.save_pretrained(d, safe_serialization=True)
    shutil.copy(DATA / "llama-tokenizer" / "tokenizer.model", d / "tokenizer.model")
    return d, model


@pytest.fixture(scope="module")
def smollm2_hf():
    """SmolLM2-135M as transformers loads the GGUF (dequantized to float32), cached as an HF
    folder under ~/.cache/guanaco/ref so later runs skip the slow GGUF conversion."""
    import torch
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer
    gg = smollm2_gguf_path()
    if not gg.exists():
        pytest.skip(f"{gg} missing (scripts/fetch_models.sh)")
    d = CACHE / "ref" / "smollm2-135m-instruct-q4_1-f32"
    if not (d / "model.safetensors").exists():
        tok = AutoTokenizer.from_pretrained(gg.parent, gguf_file=gg.name)
        m = AutoModelForCausalLM.from_pretrained(gg.parent, gguf_file=gg.name, dtype=torch.float32)
        tmp = d.with_name(d.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        # save_pretrained refuses a GGUF-loaded model; its weights are plain float32 by now
        cfg = m.config.to_dict()
        cfg.pop("quantization_config", None)
        (tmp / "config.json").write_text(json.dumps(cfg, indent=1))
        save_model(m, str(tmp / "model.safetensors"))
        tok.save_pretrained(tmp)
        shutil.rmtree(d, ignore_errors=True)
        tmp.rename(d)
    torch.set_num_threads(int(THREADS))
    tok = AutoTokenizer.from_pretrained(d)
    m = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
    return gg, tok, m


# =============================================================================
# MMLU

def format_subject(subject):       # hendrycks/test evaluate.py
    return "".join(" " + w for w in subject.split("_"))


def format_example(row, include_answer):
    q, choices, ans = row[0], row[1:5], int(row[5])
    s = q
    for letter, c in zip("ABCD", choices):
        s += f"\n{letter}. {c}"
    s += "\nAnswer:"
    if include_answer:
        s += f" {'ABCD'[ans]}\n\n"
    return s


def mmlu_rows(split, subject):
    with open_text(MMLU / split / f"{subject}_{split}.csv.gz") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["question", "choice0", "choice1", "choice2", "choice3", "answer"]
    return rows[1:]


def mmlu_reference_prompts(subjects, limit, shots):
    out = []
    for s in subjects:
        dev = mmlu_rows("dev", s)[:shots]
        head = "The following are multiple choice questions (with answers) about {}.\n\n".format(format_subject(s))
        head += "".join(format_example(r, True) for r in dev)
        for i, r in enumerate(mmlu_rows("test", s)[:limit]):
            out.append((s, i, head + format_example(r, False), int(r[5])))
    return out


def letter_logits(model, batches):
    """Last-position logits of each id list, float32 torch forward."""
    import torch
    res = []
    with torch.no_grad():
        for ids in batches:   # the head on the last position only (full logits would dominate the time)
            h = model.model(torch.tensor([ids])).last_hidden_state[:, -1]
            res.append(model.lm_head(h)[0].float().numpy())
    return res


def compare_predictions(ours, ref_prompts, ref_logits, letter_ids, margin_ok):
    """Per-item argmax over the four letters; disagreements only where transformers'
    top-2 margin is below margin_ok. Returns (max |logit diff|, disagreements)."""
    by_key = {(o["subject"], o["index"]): o for o in ours}
    assert len(by_key) == len(ref_prompts)
    worst, disagree = 0.0, []
    for (s, i, _, ans), lg in zip(ref_prompts, ref_logits):
        o = by_key[(s, i)]
        assert o["answer"] == ans
        ref4 = lg[letter_ids]
        worst = max(worst, float(np.max(np.abs(np.array(o["logits"]) - ref4))))
        if o["pred"] != int(np.argmax(ref4)):
            top2 = np.sort(ref4)[-2:]
            disagree.append((s, i, float(top2[1] - top2[0])))
            assert top2[1] - top2[0] < margin_ok, (s, i, o["logits"], ref4.tolist())
    return worst, disagree


# subjects with short test questions (keeps the SmolLM2 case quick)
SHORT_SUBJECTS = ["abstract_algebra", "anatomy", "astronomy", "business_ethics", "clinical_knowledge",
                  "college_biology", "college_chemistry", "college_computer_science", "college_mathematics",
                  "college_medicine", "college_physics", "computer_security", "conceptual_physics", "econometrics",
                  "electrical_engineering", "elementary_mathematics", "formal_logic", "global_facts",
                  "high_school_biology", "high_school_chemistry", "high_school_computer_science",
                  "high_school_geography", "high_school_government_and_politics", "high_school_macroeconomics",
                  "high_school_mathematics", "high_school_microeconomics", "high_school_physics",
                  "high_school_psychology", "human_aging", "human_sexuality", "logical_fallacies",
                  "machine_learning", "management", "marketing", "medical_genetics", "miscellaneous",
                  "nutrition", "prehistory", "sociology", "virology"]


def test_mmlu_tiny_model_matches_transformers(tiny_spm, tmp_path):
    import sentencepiece as spm
    d, model = tiny_spm
    subjects = SHORT_SUBJECTS[::4]            # 10 subjects x 20 questions, 5-shot
    pred = tmp_path / "pred.jsonl"
    js = tmp_path / "mmlu.json"
    guanaco_eval("mmlu", "-m", d, "--data", MMLU, "--subjects", ",".join(subjects), "--limit", "20",
                 "--shots", "5", "--predictions", pred, "--json", js, "-t", THREADS)
    ours = read_jsonl(pred)
    assert len(ours) == 200 and all(o["shots"] == 5 for o in ours)
    # reference: prompts rebuilt from the CSVs, "<s>" + SentencePiece ids (qlora: f"{bos}{input}"),
    # letters = sp.encode("A")[0] (= tokenizer("A", add_special_tokens=False)[0] = 319 "▁A")
    sp = spm.SentencePieceProcessor(model_file=str(d / "tokenizer.model"))
    letters = [sp.encode(x)[0] for x in "ABCD"]
    assert letters == [319, 350, 315, 360]
    ref = mmlu_reference_prompts(subjects, 20, 5)
    ids = [[1] + sp.encode(p) for _, _, p, _ in ref]
    for o, i in zip(ours, ids):
        assert o["n_tokens"] == len(i)
    worst, dis = compare_predictions(ours, ref, letter_logits(model, ids), letters, 1e-4)
    print(f"mmlu tiny: max |letter logit diff| {worst:.2e}, {len(dis)} argmax disagreements {dis}")
    assert worst < 1e-3, worst
    # the summary: unweighted mean over subjects
    j = json.loads(js.read_text())
    accs = [v["accuracy"] for v in j["subjects"].values()]
    assert abs(j["mean_accuracy"] - sum(accs) / len(accs)) < 1e-12 and len(accs) == 10


def test_mmlu_prompts_match_qlora_format():
    """Our prompt text for the val split reproduces qlora's zero-shot file byte for byte, and
    the CSV prompts use the same header (double space after "about")."""
    rows = read_jsonl(MMLU / "qlora-format" / "zero_shot_mmlu_val.json.gz")
    out = pathlib.Path(os.environ.get("TMPDIR", "/tmp")) / f"gn_mmlu_dump_{os.getpid()}.jsonl"
    try:
        guanaco_eval("mmlu", "--data", MMLU, "--split", "val", "--shots", "0", "--dump-prompts", out)
        dumped = read_jsonl(out)
        assert [d["prompt"] for d in dumped] == [r["input"] for r in rows]
        assert [d["answer"] for d in dumped] == ["ABCD".index(r["output"]) for r in rows]
        guanaco_eval("mmlu", "--data", MMLU, "--split", "test", "--shots", "5", "--limit", "2", "--dump-prompts", out)
        dumped = read_jsonl(out)
        heads = {r["subject"]: r["input"].split("\n\n")[0] for r in rows}
        assert len(dumped) == 57 * 2
        ref = {(s, i): p for s, i, p, _ in mmlu_reference_prompts(sorted(heads), 2, 5)}
        for d in dumped:
            assert d["prompt"].startswith(heads[d["subject"]] + "\n\n")
            assert d["prompt"] == ref[(d["subject"], d["index"])]
    finally:
        out.unlink(missing_ok=True)


def test_mmlu_smollm2_matches_transformers(smollm2_hf, tmp_path):
    gg, tok, model = smollm2_hf
    subjects = SHORT_SUBJECTS                 # 40 subjects x 5 questions, 0-shot
    pred = tmp_path / "pred.jsonl"
    guanaco_eval("mmlu", "-m", gg, "--data", MMLU, "--subjects", ",".join(subjects), "--limit", "5",
                 "--shots", "0", "--predictions", pred, "-t", THREADS)
    ours = read_jsonl(pred)
    assert len(ours) == 200
    ref = mmlu_reference_prompts(subjects, 5, 0)
    # qlora: the source is f"{tokenizer.bos_token}{input}" (SmolLM2's BOS is <|im_start|>, id 1)
    ids = [[tok.bos_token_id] + tok(p, add_special_tokens=False).input_ids for _, _, p, _ in ref]
    letters = [tok(x, add_special_tokens=False).input_ids[0] for x in "ABCD"]
    for o, i in zip(ours, ids):
        assert o["n_tokens"] == len(i)
    worst, dis = compare_predictions(ours, ref, letter_logits(model, ids), letters, 1e-3)
    print(f"mmlu smollm2: max |letter logit diff| {worst:.2e}, {len(dis)} argmax disagreements {dis}")
    assert worst < 2e-3, worst
    assert len(dis) <= 2, dis


def test_mmlu_bad_inputs(tiny_spm, tmp_path):
    d, _ = tiny_spm
    data = tmp_path / "mmlu"
    (data / "test").mkdir(parents=True)
    (data / "dev").mkdir()
    (data / "test" / "toy_subject_test.csv").write_text(
        'question,choice0,choice1,choice2,choice3,answer\n'
        '"Two\r\nlines, and ""quotes""?",a,b,c,d,2\n'
        'short row,a,b\n'
        'bad answer,a,b,c,d,9\n'
        'ok?,a,b,c,d,0\n')
    (data / "dev" / "toy_subject_dev.csv").write_text(
        'question,choice0,choice1,choice2,choice3,answer\nD?,w,x,y,z,3\n')
    dump = tmp_path / "p.jsonl"
    p = guanaco_eval("mmlu", "--data", data, "--dump-prompts", dump)
    rows = read_jsonl(dump)
    assert len(rows) == 2 and "2 malformed MMLU rows skipped" in p.stderr
    assert "toy_subject_test.csv:4: skipped" in p.stderr and "toy_subject_test.csv:5: skipped" in p.stderr  # record 2 spans lines 2-3
    assert rows[0]["prompt"] == ("The following are multiple choice questions (with answers) about  toy subject.\n\n"
                                 "D?\nA. w\nB. x\nC. y\nD. z\nAnswer: D\n\n"
                                 'Two\r\nlines, and "quotes"?\nA. a\nB. b\nC. c\nD. d\nAnswer:')
    assert "only 1 dev exemplars" in p.stderr
    p = guanaco_eval("mmlu", "-m", d, "--data", data, "-t", THREADS)
    assert "toy_subject" in p.stdout and "MEAN" in p.stdout
    # unterminated quote: file:line error; unknown subject; missing folder
    (data / "test" / "toy_subject_test.csv").write_text('question,choice0,choice1,choice2,choice3,answer\n"open,a,b,c,d,1\n')
    p = guanaco_eval("mmlu", "--data", data, "--dump-prompts", dump, check=False)
    assert p.returncode == 1 and "toy_subject_test.csv:2: quoted field never closed" in p.stderr
    p = guanaco_eval("mmlu", "--data", data, "--subjects", "nope", "--dump-prompts", dump, check=False)
    assert p.returncode == 1 and "no subject 'nope'" in p.stderr
    p = guanaco_eval("mmlu", "--data", tmp_path / "none", "--dump-prompts", dump, check=False)
    assert p.returncode == 1 and "no *_test.csv files" in p.stderr


# =============================================================================
# CrowS-Pairs

def crows_rows():
    with open_text(CROWS) as f:
        return list(csv.DictReader(f))


def sentence_loglik(model, ids):
    import torch
    with torch.no_grad():
        lg = model(torch.tensor([ids])).logits[0].double()
    lp = torch.log_softmax(lg, dim=-1)
    return float(sum(lp[i - 1, ids[i]] for i in range(1, len(ids))))


def test_crows_smollm2_loglik_matches_transformers(smollm2_hf, tmp_path):
    gg, tok, model = smollm2_hf
    pred = tmp_path / "crows.jsonl"
    js = tmp_path / "crows.json"
    p = guanaco_eval("crows", "-m", gg, "--data", CROWS, "--limit", "100", "--predictions", pred, "--json", js,
                     "-t", THREADS)
    ours = read_jsonl(pred)
    rows = crows_rows()[:100]
    assert len(ours) == 100
    worst = 0.0
    pref = {}
    for o, r in zip(ours, rows):
        assert o["bias_type"] == r["bias_type"]
        lls = []
        for key, n_key, sent in (("ll_more", "n_more", r["sent_more"]), ("ll_less", "n_less", r["sent_less"])):
            ids = [tok.bos_token_id] + tok(sent, add_special_tokens=False).input_ids
            assert o[n_key] == len(ids) - 1
            ll = sentence_loglik(model, ids)
            worst = max(worst, abs(o[key] - ll))
            lls.append(ll)
        t = r["bias_type"]
        n, k = pref.get(t, (0, 0))
        pref[t] = (n + 1, k + (lls[0] > lls[1]))
    print(f"crows smollm2: max |ll ours - ll transformers| = {worst:.2e} over 200 sentences")
    assert worst < 1e-3, f"max |ll ours - ll transformers| = {worst}"
    j = json.loads(js.read_text())
    for t, (n, k) in pref.items():
        assert j["bias_types"][t]["pairs"] == n
        assert abs(j["bias_types"][t]["score"] - 100.0 * k / n) < 1e-9
    assert "overall" in p.stdout


def test_crows_csv_edge_cases(tiny_spm, tmp_path):
    d, _ = tiny_spm
    f = tmp_path / "c.csv"
    f.write_text(',sent_more,sent_less,stereo_antistereo,bias_type,annotations,anon_writer,anon_annotators\n'
                 '0,"He said ""hi"", then left.","She said ""hi"", then left.",stereo,gender,"[[\'gender\']]",a0,"[\'a1\']"\n'
                 '1,"Two\nlines here.","Two\nlines there.",antistereo,age,[],a1,[]\n'
                 '2,too,few,fields\n'
                 '3,Poor people are lazy.,Rich people are lazy.,stereo,socioeconomic,[],a2,[]\n')
    pred = tmp_path / "p.jsonl"
    p = guanaco_eval("crows", "-m", d, "--data", f, "--predictions", pred, "-t", THREADS)
    rows = read_jsonl(pred)
    assert [r["bias_type"] for r in rows] == ["gender", "age", "socioeconomic"]
    assert [r["line"] for r in rows] == [2, 3, 7]   # record 1 spans lines 3-5
    assert f"{f}:6: skipped" in p.stderr and "1 malformed rows skipped" in p.stderr
    assert rows[1]["stereo"] is False and rows[0]["stereo"] is True
    f.write_text(',sent_more,sent_less,stereo_antistereo,bias_type\n0,"never closed,x,stereo,age\n')
    p = guanaco_eval("crows", "-m", d, "--data", f, check=False)
    assert p.returncode == 1 and f"{f}:2: quoted field never closed" in p.stderr
    f.write_text('a,b\n1,2\n')
    p = guanaco_eval("crows", "-m", d, "--data", f, check=False)
    assert p.returncode == 1 and "lacks sent_more" in p.stderr


# =============================================================================
# perplexity

def test_ppl_smollm2_matches_llama_cpp(tmp_path):
    pytest.importorskip("llama_cpp")
    gg = smollm2_gguf_path()
    if not gg.exists():
        pytest.skip(f"{gg} missing")
    ctx, stride, ndocs = 256, 192, 6
    rows = [r["text"] for r in read_jsonl(OASST)[:ndocs]]
    js = tmp_path / "ppl.json"
    guanaco_eval("ppl", "-m", gg, OASST, "--limit", str(ndocs), "--ctx", str(ctx), "--stride", str(stride),
                 "--json", js, "-t", THREADS)
    ours = json.loads(js.read_text())
    # SmolLM2 adds no BOS (tokenizer.ggml.add_bos_token = false): neither do we; llama.cpp in a child
    nll, scored, tokens, windows = isolated(llama_strided_nll, gg, rows, ctx, stride, int(THREADS))
    ref_ppl = math.exp(nll / scored)
    print(f"ppl ours {ours['ppl']:.6f} llama.cpp {ref_ppl:.6f} ({scored} tokens, {windows} windows)")
    assert ours["tokens"] == tokens and ours["tokens_scored"] == scored and ours["windows"] == windows
    assert windows > ndocs    # some documents did need several windows
    assert abs(ours["ppl"] / ref_ppl - 1) < 0.005, (ours["ppl"], ref_ppl)


def test_ppl_text_file_and_errors(tiny_spm, tmp_path):
    d, _ = tiny_spm
    f = tmp_path / "t.txt"
    f.write_text("The quick brown fox jumps over the lazy dog. " * 20)
    js = tmp_path / "p.json"
    guanaco_eval("ppl", "-m", d, f, "--ctx", "64", "--stride", "32", "--json", js)
    r = json.loads(js.read_text())
    assert r["documents"] == 1 and r["tokens_scored"] == r["tokens"] - 1 and r["windows"] > 3 and r["ppl"] > 1
    assert guanaco_eval("ppl", "-m", d, f, "--ctx", "32", "--stride", "64", check=False).returncode == 2
    p = guanaco_eval("ppl", "-m", d, tmp_path / "missing.txt", check=False)
    assert p.returncode == 1 and "missing.txt" in p.stderr
    j = tmp_path / "rows.jsonl"
    j.write_text('{"text": "hello there"}\nnot json\n{"other": 1}\n{"text": "general kenobi"}\n')
    p = guanaco_eval("ppl", "-m", d, j, "--json", js)
    assert json.loads(js.read_text())["documents"] == 2 and "2 rows skipped" in p.stderr


# =============================================================================
# judge -> elo round trip against a stub OpenAI-compatible server

class StubJudge(http.server.BaseHTTPRequestHandler):
    requests = []
    failed_once = set()

    def log_message(self, *a):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        StubJudge.requests.append((self.path, self.headers.get("Authorization"), body))
        user = body["messages"][1]["content"]
        a1 = re.search(r"\[The Start of Assistant 1's Answer\]\n(.*?)\n\n\[The End of Assistant 1's Answer\]", user, re.S).group(1)
        a2 = re.search(r"\[The Start of Assistant 2's Answer\]\n(.*?)\n\n\[The End of Assistant 2's Answer\]", user, re.S).group(1)
        if "RETRY" in a1 and a1 not in StubJudge.failed_once:     # one transient failure
            StubJudge.failed_once.add(a1)
            self.send_response(503)
            self.end_headers()
            self.wfile.write(b"busy")
            return
        if "UNSURE" in a1 + a2:
            verdict = "I cannot decide between them."
        elif "TIE" in a1 and "TIE" in a2:
            verdict = "Both are equally good.\n3"
        elif "GOOD" in a1:
            verdict = "Assistant 1 is more helpful.\n**1**"
        else:
            verdict = "Assistant 2 is more helpful.\n2"
        out = json.dumps({"id": "x", "object": "chat.completion",
                          "choices": [{"index": 0, "message": {"role": "assistant", "content": verdict},
                                       "finish_reason": "stop"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)


@pytest.fixture
def stub_server():
    StubJudge.requests = []
    StubJudge.failed_once = set()
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), StubJudge)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    srv.shutdown()


def test_judge_elo_round_trip(stub_server, tmp_path):
    p = run_guanaco("eval", "judge", "--help")
    qs = [{"question_id": i + 1, "text": f"Question {i + 1}?", "category": c}
          for i, c in enumerate(["generic", "coding", "math", "generic", "knowledge", "roleplay"])]
    write_lines(tmp_path / "questions.jsonl", qs)
    # system A: release generations format; system B: FastChat answers format
    gen_a = [{"question_id": q["question_id"], "text": q["text"], "category": q["category"],
              "prompt": "...", "generation": f"GOOD answer {q['question_id']}"} for q in qs]
    gen_b = [{"answer_id": f"b{q['question_id']}", "model_id": "b", "question_id": q["question_id"],
              "text": f"plain answer {q['question_id']}"} for q in qs]
    gen_a[3]["generation"] = "TIE RETRY"
    gen_b[3]["text"] = "TIE"
    gen_a[4]["generation"] = "UNSURE"
    write_lines(tmp_path / "sys-a.jsonl", gen_a)
    write_lines(tmp_path / "sys-b.jsonl", gen_b)
    out = tmp_path / "judged"
    env = {"TEST_JUDGE_KEY": "sk-test-123"}
    p = run_guanaco("eval", "judge", "--a", tmp_path / "sys-a.jsonl", "--b", tmp_path / "sys-b.jsonl",
                    "--questions", tmp_path / "questions.jsonl",
                    "--judge-prompt", PROMPTS / "vicuna_prompt_threeclass.jsonl",
                    "--judge-url", stub_server, "--judge-model", "stub-4", "--judge-key-env", "TEST_JUDGE_KEY",
                    "-o", out, "--retries", "2", env=env, timeout=300)
    files = sorted(x.name for x in out.iterdir())
    assert files == ["sys-a-vs-sys-b-judge-reviewer-threeclass.jsonl", "sys-b-vs-sys-a-judge-reviewer-threeclass.jsonl"]
    ab = read_jsonl(out / files[0])
    ba = read_jsonl(out / files[1])
    assert [r["score"] for r in ab] == [1, 1, 1, 3, -1, 1]
    assert [r["score"] for r in ba] == [2, 2, 2, 3, -1, 2]
    assert all(r["model1"] == "sys-a" and r["model2"] == "sys-b" for r in ab)
    assert [r["question_id"] for r in ab] == [1, 2, 3, 4, 5, 6]
    # requests: both orders, the release's system prompt and sampling settings, key from the env
    tmpl = {t["category"]: t for t in read_jsonl(PROMPTS / "vicuna_prompt_threeclass.jsonl")}
    assert len(StubJudge.requests) == 13       # 12 judgments + one 503 retried
    for path, auth, body in StubJudge.requests:
        assert path == "/v1/chat/completions" and auth == "Bearer sk-test-123"
        assert body["model"] == "stub-4" and body["temperature"] == 0.2 and body["max_tokens"] == 1024
        assert body["messages"][0] == {"role": "system", "content": tmpl["general"]["system_prompt"]}
    users = [b["messages"][1]["content"] for _, _, b in StubJudge.requests]
    coding = [u for u in users if "[Question]\nQuestion 2?\n" in u]
    assert coding and all(tmpl["coding"]["defaults"]["prompt"] in u for u in coding)
    first = users[0]
    assert first == tmpl["general"]["prompt_template"].format(
        question="Question 1?", answer_1="GOOD answer 1", answer_2="plain answer 1",
        prompt=tmpl["general"]["defaults"]["prompt"])
    # the judgments feed eval elo
    js = tmp_path / "elo.json"
    guanaco_eval("elo", out, "--rounds", "500", "--json", js)
    b = json.loads(js.read_text())["benchmarks"][0]
    s = {x["name"]: x for x in b["systems"]}
    assert b["judgments"] == 10 and b["unparsed"] == 2
    assert s["sys-a"]["rank"] == 1 and s["sys-a"]["elo"] > 1000 > s["sys-b"]["elo"]
    assert (s["sys-a"]["wins"], s["sys-a"]["ties"], s["sys-a"]["losses"]) == (8, 2, 0)

    # a dead endpoint: clear error naming the URL, no final files written
    p = run_guanaco("eval", "judge", "--a", tmp_path / "sys-a.jsonl", "--b", tmp_path / "sys-b.jsonl",
                    "--questions", tmp_path / "questions.jsonl",
                    "--judge-prompt", PROMPTS / "vicuna_prompt_threeclass.jsonl",
                    "--judge-url", "http://127.0.0.1:9/v1", "--retries", "0", "-o", tmp_path / "dead", check=False)
    assert p.returncode == 1 and "127.0.0.1:9/v1/chat/completions" in p.stderr
    assert not any(x.name.endswith("threeclass.jsonl") for x in (tmp_path / "dead").iterdir())


def test_judge_local_model_and_generate_prompts(tiny_spm, tmp_path):
    d, _ = tiny_spm
    gens = tmp_path / "tiny-gens.jsonl"
    p = run_guanaco("eval", "generate", "-m", d, "--prompts", PROMPTS / "vicuna_questions.jsonl", "-o", gens,
                    "--limit", "3", "-n", "4", "--seed", "1")
    rows = read_jsonl(gens)
    q = read_jsonl(PROMPTS / "vicuna_questions.jsonl")[:3]
    assert [r["question_id"] for r in rows] == [x["question_id"] for x in q]
    for r, x in zip(rows, q):
        assert r["text"] == x["text"] and r["category"] == x["category"] and isinstance(r["generation"], str)
        # the released generations' prompt spelling (docs/FACTS.md §6.8)
        assert r["prompt"] == ("A chat between a curious human and an artificial intelligence assistant. The assistant "
                               "gives helpful, detailed, and polite answers to the user's questions. ### Human: "
                               + x["text"] + " ### Assistant:")
    # same seed, same generations
    gens2 = tmp_path / "tiny-gens2.jsonl"
    run_guanaco("eval", "generate", "-m", d, "--prompts", PROMPTS / "vicuna_questions.jsonl", "-o", gens2,
                "--limit", "3", "-n", "4", "--seed", "1")
    assert gens2.read_text() == gens.read_text()
    # once main.c routes `generate --prompts` here, the same command works under its documented name
    p = run_guanaco("generate", "-m", d, "--prompts", PROMPTS / "vicuna_questions.jsonl", "-o", gens2,
                    "--limit", "3", "-n", "4", "--seed", "1", check=False)
    if p.returncode == 0:
        assert gens2.read_text() == gens.read_text()
    # a local judge model (random weights: its verdicts are noise, the plumbing is what counts)
    out = tmp_path / "local"
    run_guanaco("eval", "judge", "-m", d, "--a", gens, "--b", DATA / "qlora-eval" / "generations" / "vicuna" / "answer_gpt4.jsonl.gz",
                "--judge-prompt", PROMPTS / "vicuna_prompt_threeclass.jsonl", "--judge-max-tokens", "3", "-o", out)
    f = out / "tiny-gens-vs-answer_gpt4-judge-reviewer-threeclass.jsonl"
    lines = read_jsonl(f)
    assert len(lines) == 3 and all(r["score"] in (-1, 1, 2, 3) for r in lines)
    assert (out / "answer_gpt4-vs-tiny-gens-judge-reviewer-threeclass.jsonl").exists()
    # both judges at once, or none: usage error
    assert run_guanaco("eval", "judge", "--a", gens, "--b", gens, "--judge-prompt", PROMPTS / "vicuna_prompt_threeclass.jsonl",
                       "-o", out, check=False).returncode == 2


# =============================================================================
# -a ADAPTER: the evaluations run the base with a PEFT LoRA adapter applied

def test_adapter_applied(tiny_spm, tmp_path):
    import sentencepiece as spm
    import torch
    from peft import LoraConfig, get_peft_model
    d, base = tiny_spm
    torch.manual_seed(3)
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], lora_dropout=0.0,
                     init_lora_weights=False)   # random A and B: the adapter changes the outputs
    import copy
    pm = get_peft_model(copy.deepcopy(base), cfg).eval()
    ad = tmp_path / "adapter"
    pm.save_pretrained(ad)
    text = "The quick brown fox jumps over the lazy dog, and then it rests in the warm afternoon sun."
    f = tmp_path / "t.txt"
    f.write_text(text)
    sp = spm.SentencePieceProcessor(model_file=str(d / "tokenizer.model"))
    ids = [1] + sp.encode(text)   # LLaMA's tokenizer adds BOS by default: so does eval ppl

    def ref_ppl(model):
        with torch.no_grad():
            lg = model(torch.tensor([ids])).logits[0].double()
        lp = torch.log_softmax(lg, -1)
        return math.exp(-float(sum(lp[i - 1, ids[i]] for i in range(1, len(ids)))) / (len(ids) - 1))

    out = {}
    for name, extra in (("base", []), ("lora", ["-a", ad])):
        js = tmp_path / f"{name}.json"
        guanaco_eval("ppl", "-m", d, f, "--ctx", "128", "--json", js, *extra)
        out[name] = json.loads(js.read_text())
        assert out[name]["tokens"] == len(ids) and out[name]["windows"] == 1
    want_base, want_lora = ref_ppl(base), ref_ppl(pm)
    assert abs(want_lora / want_base - 1) > 1e-3          # the adapter matters
    assert abs(out["base"]["ppl"] / want_base - 1) < 1e-4, (out["base"]["ppl"], want_base)
    assert abs(out["lora"]["ppl"] / want_lora - 1) < 1e-4, (out["lora"]["ppl"], want_lora)
    # the same flag through mmlu and crows (a bad adapter path is a clear error there)
    p = guanaco_eval("crows", "-m", d, "--data", CROWS, "--limit", "2", "-a", tmp_path / "none", check=False)
    assert p.returncode == 1 and "none" in p.stderr
    p = guanaco_eval("mmlu", "-m", d, "--data", MMLU, "--subjects", "anatomy", "--limit", "2", "-a", ad)
    assert "anatomy" in p.stdout
