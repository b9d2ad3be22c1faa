"""Fuzz targets (docs/FUZZING.md): replay every regression input under
ASan/UBSan, then fuzz each target for a few seconds.

The targets are built here with `make fuzz` (clang, -fsanitize=fuzzer,address,undefined)
into $GN_FUZZ_BUILD (default build-fuzz/). clang and libclang_rt.fuzzer come from
Debian's clang and libclang-rt-14-dev (scripts/test.sh installs them); when they are
missing these tests FAIL, they do not skip: a parser change must not go unfuzzed
because the tool quietly went away.

Knobs: GN_FUZZ_SECONDS (per-target budget of the short runs, default 5).
"""
import os
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
FUZZ_BUILD = pathlib.Path(os.environ.get("GN_FUZZ_BUILD", ROOT / "build-fuzz"))
REGRESS = ROOT / "tests" / "fuzz-regress"
TARGETS = sorted(p.stem[len("fuzz_"):] for p in (ROOT / "fuzz").glob("fuzz_*.c"))
SECONDS = int(os.environ.get("GN_FUZZ_SECONDS", "5"))
SAN_ENV = {
    "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:allocator_may_return_null=0",
    "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
}


def clang_fuzzer_present():
    cc = shutil.which(os.environ.get("FUZZ_CC", "clang"))
    if not cc:
        return False, "clang not found (apt-get install clang libclang-rt-14-dev; scripts/test.sh does)"
    p = subprocess.run([cc, "-print-file-name=libclang_rt.fuzzer-x86_64.a"], capture_output=True, text=True)
    lib = p.stdout.strip()
    rt = subprocess.run([cc, "--print-runtime-dir"], capture_output=True, text=True).stdout.strip()
    if not (os.path.isabs(lib) and os.path.exists(lib)) and not (rt and os.path.exists(os.path.join(rt, "libclang_rt.fuzzer-x86_64.a"))):
        return False, f"{cc} has no libclang_rt.fuzzer (apt-get install libclang-rt-14-dev)"
    return True, cc


@pytest.fixture(scope="module")
def fuzz_bins():
    ok, why = clang_fuzzer_present()
    assert ok, "fuzz targets cannot be built: " + why
    jobs = str(os.cpu_count() or 2)
    p = subprocess.run(["make", "-j" + jobs, "fuzz", f"FUZZ_BUILD={FUZZ_BUILD}"], cwd=ROOT, capture_output=True,
                       text=True, timeout=1800)
    assert p.returncode == 0, "make fuzz failed:\n" + p.stdout[-3000:] + p.stderr[-3000:]
    bins = {t: FUZZ_BUILD / f"fuzz_{t}" for t in TARGETS}
    for t, b in bins.items():
        assert b.exists(), f"{b} not built"
    return bins


def test_every_parser_has_a_target():
    want = {"safetensors", "gguf", "torchbin", "config_json", "adapter_config", "tokenizer_json", "spm", "jsonl",
            "quant_state", "judgments", "http"}
    assert want <= set(TARGETS), f"missing fuzz targets: {sorted(want - set(TARGETS))}"
    for t in TARGETS:
        assert (REGRESS / t).is_dir(), f"tests/fuzz-regress/{t}/ missing (keep it, even if empty, with a README)"


# -rss_limit_mb is off: libFuzzer reads the peak RSS from getrusage, and a child forked from
# a large pytest process (torch loaded by earlier tests) starts with the parent's peak, so it
# trips at once; -malloc_limit_mb bounds every single allocation instead.
def run_target(binary, args, timeout):
    env = dict(os.environ)
    env.update(SAN_ENV)
    return subprocess.run([str(binary)] + [str(a) for a in args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)


def report(p):
    tail = (p.stdout + p.stderr)[-6000:]
    return f"exit {p.returncode}\n{tail}"


@pytest.mark.parametrize("target", TARGETS)
def test_regressions_replay(fuzz_bins, target, tmp_path):
    """Every committed crash/hang/sanitizer input (and the hand-written cases) runs clean."""
    files = sorted(f for f in (REGRESS / target).glob("*") if f.is_file() and f.name != "README.md")
    # an empty input too: every target must cope with it
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    p = run_target(fuzz_bins[target], ["-timeout=10", "-rss_limit_mb=0", "-malloc_limit_mb=2048", empty] + files, timeout=300)
    assert p.returncode == 0, report(p)
    assert f"Executed {empty}" in p.stderr, report(p)


@pytest.mark.parametrize("target", TARGETS)
def test_short_fuzz(fuzz_bins, target, tmp_path):
    """A short fixed-budget run from the regression inputs (no corpus kept)."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    art = tmp_path / "artifacts"
    art.mkdir()
    p = run_target(fuzz_bins[target], [corpus, REGRESS / target, f"-max_total_time={SECONDS}", "-seed=1",
                                       "-timeout=10", "-rss_limit_mb=0", "-malloc_limit_mb=2048", "-max_len=4096",
                                       f"-artifact_prefix={art}/"], timeout=SECONDS + 120)
    found = sorted(art.iterdir())
    assert p.returncode == 0 and not found, (
        f"fuzz_{target} found a bug in {SECONDS}s: {[str(f) for f in found]}\n"
        f"keep the input in tests/fuzz-regress/{target}/ once fixed (docs/FUZZING.md)\n" + report(p))
