"""benchenv.py — what every bench/ script does first, imported before anything loads OpenBLAS.

These machines set OPENBLAS_CORETYPE=Haswell (and OPENBLAS_L2_SIZE), which makes OpenBLAS run
its AVX2 kernels at about half its AVX-512 speed. OpenBLAS reads them when it loads, so a
script re-executes itself without them; MARK tells it (and the children, which inherit the
clean environment) that they were set, so the report can say so.
"""
import os
import sys

OPENBLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
MARK = "GN_BENCH_OPENBLAS_UNSET"

if any(v in os.environ for v in OPENBLAS_VARS):
    _env = {k: v for k, v in os.environ.items() if k not in OPENBLAS_VARS}
    _env[MARK] = "1"
    os.execve(sys.executable, [sys.executable] + sys.argv, _env)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CACHE = os.environ.get("GN_CACHE", os.path.expanduser("~/.cache/guanaco"))
DEFAULT_MODEL = os.path.join(CACHE, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
# the repository's own copy of the OASST1 eval split (gzipped; open_text reads either form)
DEFAULT_DATA = os.path.join(ROOT, "data", "openassistant-guanaco", "openassistant_best_replies_eval.jsonl.gz")


def open_text(path):
    """open(path) for reading text; a .gz name is gunzipped."""
    if path.endswith(".gz"):
        import gzip
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def openblas_note():
    """One line for a report: were the overrides unset for this run?"""
    return ("OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset for this run (were set)" if os.environ.get(MARK) == "1"
            else "OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE not set")
