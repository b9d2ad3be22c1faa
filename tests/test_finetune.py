"""QLoRA fine-tuning against PEFT + torch.

Oracles: PEFT LoRA on transformers' LlamaForCausalLM in float32, torch.optim.AdamW and
torch.nn.utils.clip_grad_norm_, HF's loss (mean CE over shifted labels != -100), and the
accumulation rule of qlora + HF Trainer (each micro-batch loss divided by the accumulation steps).
The token ids come from guanaco's data pipeline (checked against qlora's collator in
test_data.py), so both sides train on identical inputs.
"""
import json
import os
import pathlib
import shutil
import signal
import subprocess

import numpy as np
import pytest
import torch

from conftest import DATA, GUANACO, read_text, run_guanaco, save_tiny_llama_with_tokenizer

import sys
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent / "ref"))
from q4ref import make_4bit_pair  # noqa: E402

from peft import LoraConfig, PeftModel, get_peft_model  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
OASST = DATA / "openassistant-guanaco" / "openassistant_best_replies_eval.jsonl.gz"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A random tiny LLaMA with the real LLaMA tokenizer, an init adapter with non-zero B, and
    a small oasst1 file."""
    d = tmp_path_factory.mktemp("ft")
    base = save_tiny_llama_with_tokenizer(d / "base")
    torch.manual_seed(1)
    pm = get_peft_model(LlamaForCausalLM.from_pretrained(base),
                        LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=ALL, init_lora_weights=False))
    ad = d / "init"
    pm.save_pretrained(ad)
    rows = [json.loads(l) for l in read_text(OASST).splitlines()[:6]]
    data = d / "data.jsonl"
    data.write_text("".join(json.dumps({"text": r["text"]}) + "\n" for r in rows))
    return {"base": base, "init": ad, "data": data, "dir": d}


def dump(tiny, tlen=48):
    p = run_guanaco("data-dump", "-m", tiny["base"], "-d", tiny["data"], "--dataset-format", "oasst1",
                    "--source-max-len", "16", "--target-max-len", str(tlen))
    return [json.loads(l) for l in p.stdout.splitlines() if l.strip()]


def peft_model(tiny):
    m = PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(tiny["base"]), tiny["init"], is_trainable=True)
    m.train()
    return m


def test_one_step_loss_and_gradients_equal_peft(tmp_path, tiny):
    ex = dump(tiny)[0]
    ids, labels = ex["ids"], ex["labels"]
    out = tmp_path / "g.safetensors"
    p = run_guanaco("grad", "-m", tiny["base"], "-a", tiny["init"], "--ids", " ".join(map(str, ids)),
                    "--labels", " ".join(map(str, labels)), "-o", out)
    ours = load_file(out)
    m = peft_model(tiny)
    loss = m(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss
    loss.backward()
    assert abs(ours["loss"].item() - loss.item()) <= 1e-4 * abs(loss.item()), (ours["loss"].item(), loss.item())
    n = 0
    for name, prm in m.named_parameters():
        if prm.grad is None:
            continue
        key = name.replace(".default", "")
        g = ours[key]
        rel = (g - prm.grad).abs().max().item() / prm.grad.abs().max().item()
        assert rel <= 1e-4, f"{key}: max diff {rel:.3g} of max |grad|"
        n += 1
    assert n == 2 * 7 * 2  # A and B of seven modules in two layers


def test_one_step_on_nf4_base_equals_peft(tmp_path, tiny):
    """The QLoRA case: NF4 + double quantization base (written by transformers + bnb), PEFT on
    the same dequantized weights, all seven targets, r 8, dropout 0, f32 compute."""
    torch.manual_seed(3)
    cfg = LlamaConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=32000, rms_norm_eps=1e-5, tie_word_embeddings=False)
    base = tmp_path / "base"
    LlamaForCausalLM(cfg).save_pretrained(base)
    shutil.copy(DATA / "llama-tokenizer" / "tokenizer.model", base / "tokenizer.model")
    qdir, dense = make_4bit_pair(base, tmp_path / "q4", tmp_path / "dense")
    torch.manual_seed(5)
    pm = get_peft_model(LlamaForCausalLM.from_pretrained(dense),
                        LoraConfig(r=8, lora_alpha=16, target_modules=ALL, init_lora_weights=False))
    pm.save_pretrained(tmp_path / "ad")
    ex = dump(tiny)[1]
    out = tmp_path / "g.safetensors"
    run_guanaco("grad", "-m", qdir, "-a", tmp_path / "ad", "--ids", " ".join(map(str, ex["ids"])),
                "--labels", " ".join(map(str, ex["labels"])), "-o", out)
    ours = load_file(out)
    pm.train()
    loss = pm(input_ids=torch.tensor([ex["ids"]]), labels=torch.tensor([ex["labels"]])).loss
    loss.backward()
    assert abs(ours["loss"].item() - loss.item()) <= 1e-4 * abs(loss.item())
    for name, prm in pm.named_parameters():
        if prm.grad is not None:
            g = ours[name.replace(".default", "")]
            assert (g - prm.grad).abs().max().item() <= 1e-4 * prm.grad.abs().max().item(), name


def test_twenty_adamw_steps_track_peft(tmp_path, tiny):
    """20 steps, accumulation 4, clipping 0.3, AdamW (0.9, 0.999, 1e-8), rows in file order."""
    exs = dump(tiny)
    steps, ga, lr = 20, 4, 1e-3
    run = tmp_path / "run"
    run_guanaco("finetune", "-m", tiny["base"], "-d", tiny["data"], "-o", run, "--init-adapter", tiny["init"],
                "--dataset-format", "oasst1", "--source-max-len", "16", "--target-max-len", "48",
                "--max-steps", steps, "--gradient-accumulation-steps", ga, "--max-grad-norm", "0.3",
                "--learning-rate", lr, "--no-shuffle", "--compute-dtype", "f32", "--save-steps", "0", "-t", "1")
    ours = [json.loads(l)["loss"] for l in (run / "log.jsonl").read_text().splitlines() if '"loss"' in l]
    m = peft_model(tiny)
    params = [p for p in m.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    ref, k = [], 0
    for s in range(steps):
        opt.zero_grad()
        total = 0.0
        for _ in range(ga):
            e = exs[k % len(exs)]
            k += 1
            loss = m(input_ids=torch.tensor([e["ids"]]), labels=torch.tensor([e["labels"]])).loss / ga
            loss.backward()
            total += loss.item()
        torch.nn.utils.clip_grad_norm_(params, 0.3)
        opt.step()
        ref.append(total)
    assert len(ours) == steps
    rel = np.abs(np.array(ours) - np.array(ref)) / np.abs(np.array(ref))
    assert rel.max() <= 1e-3, f"per-step loss rel diff {rel.max():.3g} at step {int(rel.argmax()) + 1}: ours {ours} ref {ref}"
    assert ref[-1] < ref[0]  # it actually learns
    # the final adapter loads in PEFT and gives the loss our trainer would give next
    m2 = PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(tiny["base"]), run).eval()
    e = exs[0]
    with torch.no_grad():
        l_ours_adapter = m2(input_ids=torch.tensor([e["ids"]]), labels=torch.tensor([e["labels"]])).loss.item()
        m.eval()
        l_ref_adapter = m(input_ids=torch.tensor([e["ids"]]), labels=torch.tensor([e["labels"]])).loss.item()
    assert abs(l_ours_adapter - l_ref_adapter) <= 1e-3 * abs(l_ref_adapter)


def finetune_args(tiny, run, steps, extra=()):
    return ["finetune", "-m", tiny["base"], "-d", tiny["data"], "-o", run, "--dataset-format", "oasst1",
            "--source-max-len", "16", "--target-max-len", "48", "--max-steps", str(steps),
            "--gradient-accumulation-steps", "2", "--lora-r", "4", "--lora-dropout", "0.1", "--save-steps", "2",
            "--learning-rate", "1e-3", "-t", "1", *extra]


def test_sigkill_during_checkpoint_then_resume_is_bit_identical(tmp_path, tiny):
    a, b = tmp_path / "a", tmp_path / "b"
    run_guanaco(*finetune_args(tiny, a, 6))
    env = dict(os.environ, GN_TEST_KILL_AT_CHECKPOINT="4")
    p = subprocess.run([str(GUANACO), *map(str, finetune_args(tiny, b, 6))], env=env, capture_output=True, text=True)
    assert p.returncode == -signal.SIGKILL, f"expected the run to die by SIGKILL, got {p.returncode}: {p.stderr}"
    assert (b / "checkpoint-2").is_dir() and not (b / "checkpoint-4").exists()
    run_guanaco(*finetune_args(tiny, b, 6, ("--resume",)))
    for f in ("adapter_model.safetensors", "checkpoint-6/optimizer.bin", "checkpoint-4/adapter_model.safetensors"):
        assert (a / f).read_bytes() == (b / f).read_bytes(), f"{f} differs between the uninterrupted and resumed runs"


def test_bad_data_is_reported_with_file_and_line(tmp_path, tiny):
    bad = tmp_path / "bad.jsonl"
    good = json.dumps({"text": "### Human: hi### Assistant: hello"})
    bad.write_text("\n".join([good, "{not json", json.dumps({"txt": "x"}), json.dumps({"text": ""}), good]) + "\n")
    p = run_guanaco(*finetune_args({**tiny, "data": bad}, tmp_path / "r", 1), check=True)
    for line in (2, 3, 4):
        assert f"{bad}:{line}:" in p.stderr, p.stderr
    empty = tmp_path / "empty.jsonl"
    empty.write_text("{not json\n" + json.dumps({"text": ""}) + "\n")
    p = run_guanaco(*finetune_args({**tiny, "data": empty}, tmp_path / "r2", 1), check=False)
    assert p.returncode == 1 and str(empty) in p.stderr.splitlines()[-1]


def test_nan_loss_stops_and_keeps_the_last_checkpoint(tmp_path, tiny):
    run = tmp_path / "r"
    args = finetune_args(tiny, run, 50)
    args[args.index("--learning-rate") + 1] = "1e30"
    args[args.index("--save-steps") + 1] = "1"
    p = run_guanaco(*args, check=False)
    assert p.returncode == 1, p.stderr
    last = p.stderr.strip().splitlines()[-1]
    assert "step" in last and ("nan" in last.lower() or "inf" in last.lower()), last
    cks = sorted(run.glob("checkpoint-*"))
    assert cks, "no checkpoint kept"
    # the newest checkpoint is complete and loads
    newest = max(cks, key=lambda c: int(c.name.split("-")[1]))
    assert (newest / "adapter_model.safetensors").exists() and (newest / "trainer_state.json").exists()
    assert not list(run.glob(".checkpoint-*"))


def test_smollm2_nf4_finetune_on_oasst(tmp_path, smollm2_gguf):
    """SmolLM2-135M-Instruct in NF4, QLoRA on the OASST1 rows with 64 held out: training loss
    falls, held-out loss improves, and PEFT on the same 4-bit base with our adapter gives the same
    held-out loss within 1%."""
    rows = read_text(OASST).splitlines()
    held, train = tmp_path / "held.jsonl", tmp_path / "train.jsonl"
    held.write_text("\n".join(rows[:64]) + "\n")
    train.write_text("\n".join(rows[64:]) + "\n")
    lim = ["--dataset-format", "oasst1", "--source-max-len", "16", "--target-max-len", "32"]
    before = float(run_guanaco("eval-loss", "-m", smollm2_gguf, "--4bit", "-d", held, *lim).stdout)
    run = tmp_path / "run"
    run_guanaco("finetune", "-m", smollm2_gguf, "--4bit", "-d", train, "-o", run, *lim, "--max-steps", "10",
                "--gradient-accumulation-steps", "2", "--lora-r", "8", "--learning-rate", "1e-3", "--save-steps", "0",
                "--compute-dtype", "f32")
    losses = [json.loads(l)["loss"] for l in (run / "log.jsonl").read_text().splitlines() if '"loss"' in l]
    assert np.mean(losses[-4:]) < np.mean(losses[:4]), losses
    after = float(run_guanaco("eval-loss", "-m", smollm2_gguf, "--4bit", "-a", run, "-d", held, *lim).stdout)
    assert after < before, (before, after)
    # PEFT on the same base: transformers' GGUF loader, quantized by bitsandbytes, dequantized
    from transformers import AutoModelForCausalLM
    g = tmp_path / "gguf"
    g.mkdir()
    shutil.copy(smollm2_gguf, g / "m.gguf")
    gm = AutoModelForCausalLM.from_pretrained(g, gguf_file="m.gguf", torch_dtype=torch.float32)
    plain = LlamaForCausalLM(gm.config)  # a GGUF-loaded model refuses save_pretrained: copy it
    plain.load_state_dict(gm.state_dict())
    plain.config.quantization_config = None
    plain.save_pretrained(tmp_path / "hf")
    _, dense = make_4bit_pair(tmp_path / "hf", tmp_path / "q4", tmp_path / "dense")
    m = PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(dense), run).eval()
    exs = [json.loads(l) for l in run_guanaco("data-dump", "-m", smollm2_gguf, "-d", held, *lim).stdout.splitlines() if l.strip()]
    assert len(exs) == 64
    per_row = []
    with torch.no_grad():
        for e in exs:
            per_row.append(m(input_ids=torch.tensor([e["ids"]]), labels=torch.tensor([e["labels"]])).loss.item())
    peft_loss = float(np.mean(per_row))
    assert abs(peft_loss - after) <= 0.01 * peft_loss, f"held-out loss: guanaco {after:.4f}, PEFT {peft_loss:.4f}"
