"""The C unit test binaries (tests/test_*.c), each one a pytest case.

Runs build/tests/test_* and, when present, build-asan/tests/test_* and build-ubsan/tests/test_*
(scripts/test.sh builds all three). A binary fails the case when it exits nonzero or prints a
sanitizer report ('runtime error', AddressSanitizer, LeakSanitizer).
"""
import os
import subprocess

import pytest

from conftest import BUILD, ROOT, sanitizer_builds, sanitizer_report


def _binaries():
    dirs = [BUILD] + [g.parent for _, g in sanitizer_builds()]
    out = []
    for d in dirs:
        t = d / "tests"
        if not t.is_dir():
            continue
        for p in sorted(t.glob("test_*")):
            if p.is_file() and os.access(p, os.X_OK) and p.suffix not in (".o", ".d"):
                out.append(p)
    return out


BINARIES = _binaries()


def _id(p):
    try:
        return str(p.relative_to(ROOT))
    except ValueError:
        return str(p)


@pytest.mark.parametrize("binary", BINARIES, ids=[_id(p) for p in BINARIES])
def test_c_unit(binary):
    env = dict(os.environ)
    env["ASAN_OPTIONS"] = "detect_leaks=1:abort_on_error=0"
    env["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1"
    p = subprocess.run([str(binary)], cwd=ROOT, env=env, capture_output=True, text=True,
                       errors="replace", timeout=1200)
    out = p.stdout + p.stderr
    rep = sanitizer_report(out)
    fails = [l for l in out.splitlines() if l.startswith("FAIL")]
    assert rep is None and p.returncode == 0, (
        f"{_id(binary)} exited {p.returncode}" + (f"; sanitizer: {rep}" if rep else "") +
        (f"\n{len(fails)} FAIL lines, first: " + "\n".join(fails[:20]) if fails else "") +
        f"\n--- output tail:\n{out[-6000:]}")
