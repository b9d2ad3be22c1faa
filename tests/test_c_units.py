"""The C unit test binaries (tests/test_*.c), each one a pytest case per build and SIMD level.

Runs build/tests/test_* and, when present, build-asan/tests/test_* and build-ubsan/tests/test_*
(scripts/test.sh builds all three). A binary fails the case when it exits nonzero or prints a
sanitizer report ('runtime error', AddressSanitizer, LeakSanitizer). A binary that a build
should have made but did not is a failure, not a skip: the list comes from tests/test_*.c.

Each binary runs at every SIMD level the library dispatches to (GN_SIMD=scalar|avx2|avx512|amx
lowers the level it picks, src/tensor/kernels_cpu.c; amx is AVX-512 with the bf16 products on AMX
tiles, src/tensor/gemm_bf16.c) and once with no GN_SIMD (the CPU's best), so the scalar and AVX2
kernels are exercised on an AVX-512 machine too. A level this CPU lacks is skipped with the
reason, and so is the level the CPU picks anyway (the default case ran it).

test_nf4 runs once more with GN_NF4_EXACT_DECODE=1 (the exact paths) and, on an AVX-512 CPU,
with GN_NF4_NO_BF16DOT=1 (the paths of an AVX-512 CPU without BF16 dot products).

On an AVX512_BF16 CPU without AMX, the binaries with bf16 products run once more with
GN_AMX_EMULATE=1: the AMX path's tile layouts, loops and edges with each tile instruction done in
C, checked by the same scalar references (a CPU with AMX runs the real tiles in [default]).
"""
import os
import subprocess

import pytest

from conftest import BUILD, ROOT, cpu_flags, sanitizer_builds, sanitizer_report

SOURCES = sorted(p.stem for p in (ROOT / "tests").glob("test_*.c"))


FLAGS = set(cpu_flags())
# what the library's dispatch asks of the CPU for each level (kernels_cpu.c, detect())
LEVEL_NEEDS = {"scalar": set(), "avx2": {"avx2", "fma"}, "avx512": {"avx512f", "avx512bw", "avx512vl"}}
LEVEL_NEEDS["amx"] = LEVEL_NEEDS["avx512"] | {"avx512_bf16", "amx_tile", "amx_bf16"}
LEVELS = ["default", "scalar", "avx2", "avx512", "amx"]
# the level the library picks here with no GN_SIMD: the [default] case already runs it
BEST = [lv for lv in ("scalar", "avx2", "avx512", "amx") if LEVEL_NEEDS[lv] <= FLAGS][-1]


def _builds():
    out = [BUILD]
    out += [g.parent for _, g in sanitizer_builds()]
    return out


def _id(p):
    try:
        return str(p.relative_to(ROOT))
    except ValueError:
        return str(p)


CASES = [(d / "tests" / name, level) for d in _builds() for name in SOURCES for level in LEVELS]


def _run_unit(binary, label, env):
    """Runs a C test binary; fails on a nonzero exit or a sanitizer report, quoting FAIL lines."""
    env["ASAN_OPTIONS"] = "detect_leaks=1:abort_on_error=0"
    env["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1"
    p = subprocess.run([str(binary)], cwd=ROOT, env=env, capture_output=True, text=True,
                       errors="replace", timeout=1200)
    out = p.stdout + p.stderr
    rep = sanitizer_report(out)
    fails = [l for l in out.splitlines() if l.startswith("FAIL")]
    assert rep is None and p.returncode == 0, (
        f"{_id(binary)} ({label}) exited {p.returncode}" + (f"; sanitizer: {rep}" if rep else "") +
        (f"\n{len(fails)} FAIL lines, first: " + "\n".join(fails[:20]) if fails else "") +
        f"\n--- output tail:\n{out[-6000:]}")


@pytest.mark.parametrize("binary,level", CASES, ids=[f"{_id(b)}[{lv}]" for b, lv in CASES])
def test_c_unit(binary, level):
    assert binary.is_file() and os.access(binary, os.X_OK), (
        f"{_id(binary)} missing: the build did not make it (run make, or scripts/test.sh for all builds)")
    env = dict(os.environ)
    env.pop("GN_SIMD", None)
    if level != "default":
        missing = LEVEL_NEEDS[level] - FLAGS
        if missing:
            pytest.skip(f"this CPU lacks {' '.join(sorted(missing))}: no {level} kernels to test here")
        if level == BEST:
            pytest.skip(f"{level} is this CPU's own level: the [default] case ran it")
        env["GN_SIMD"] = level
    _run_unit(binary, f"GN_SIMD={level}", env)


# test_nf4 once more with GN_NF4_EXACT_DECODE=1: the integer decode and GEMM kernels off, the
# exact byte-table and sgemm paths (and the tests' rules) in their place, in every build
EXACT = [d / "tests" / "test_nf4" for d in _builds()]


@pytest.mark.parametrize("binary", EXACT, ids=[f"{_id(b)}[exact]" for b in EXACT])
def test_nf4_exact_paths(binary):
    assert binary.is_file(), f"{_id(binary)} missing: the build did not make it"
    env = dict(os.environ, GN_NF4_EXACT_DECODE="1")
    env.pop("GN_SIMD", None)
    _run_unit(binary, "GN_NF4_EXACT_DECODE=1", env)


# test_nf4 as on an AVX-512 CPU without BF16 dot products (Skylake-SP to Ice Lake): with
# GN_NF4_NO_BF16DOT=1 decode takes the integer kernel's 512-bit form and the GEMMs the integer
# path, checked against the reference under their rules and bit for bit against the AVX2 kernel.
# Where the CPU has AVX512_VNNI those kernels run vpdpwssd (the GEMM's 512-bit tile of 16 weight
# rows; GN_NF4_VNNI_YMM=1 its 256-bit tile of 8); GN_NF4_NO_VNNI=1 runs them without (Skylake-SP),
# so all three forms are checked here.
VNNI_MODES = {"vnni": {}, "vnni-ymm": {"GN_NF4_VNNI_YMM": "1"}, "no-vnni": {"GN_NF4_NO_VNNI": "1"}}
NOBF16 = [(d / "tests" / "test_nf4", mode) for d in _builds() for mode in VNNI_MODES]


@pytest.mark.parametrize("binary,mode", NOBF16,
                         ids=[f"{_id(b)}[no-bf16-dot{'' if m == 'vnni' else ',' + m}]" for b, m in NOBF16])
def test_nf4_avx512_without_bf16(binary, mode):
    assert binary.is_file(), f"{_id(binary)} missing: the build did not make it"
    if not LEVEL_NEEDS["avx512"] <= FLAGS:
        pytest.skip("this CPU lacks AVX-512: no 512-bit integer decode to run")
    if mode != "no-vnni" and "avx512_vnni" not in FLAGS:
        pytest.skip("this CPU lacks AVX512_VNNI: the [no-vnni] case runs these kernels")
    env = dict(os.environ, GN_NF4_NO_BF16DOT="1", **VNNI_MODES[mode])
    env.pop("GN_SIMD", None)
    _run_unit(binary, " ".join(["GN_NF4_NO_BF16DOT=1"] + [f"{k}={v}" for k, v in VNNI_MODES[mode].items()]), env)


# the AMX path emulated (GN_AMX_EMULATE=1) where the CPU has AVX512_BF16 but no tiles: the binaries
# whose products reach gn_gemm_bf16 / the 4-bit GEMM
EMULATED = [d / "tests" / name for d in _builds() for name in ("test_kernels", "test_nf4", "test_train", "test_train_attn")]


@pytest.mark.parametrize("binary", EMULATED, ids=[f"{_id(b)}[amx-emulated]" for b in EMULATED])
def test_amx_paths_emulated(binary):
    assert binary.is_file(), f"{_id(binary)} missing: the build did not make it"
    if "avx512_bf16" not in FLAGS or not LEVEL_NEEDS["avx512"] <= FLAGS:
        pytest.skip("this CPU lacks AVX512_BF16: the AMX path's packers need it, no AMX path to emulate")
    if LEVEL_NEEDS["amx"] <= FLAGS:
        pytest.skip("this CPU has AMX: [default] ran the real tiles")
    env = dict(os.environ, GN_AMX_EMULATE="1")
    env.pop("GN_SIMD", None)
    _run_unit(binary, "GN_AMX_EMULATE=1", env)
