"""make install / make uninstall, and building against the installed library with pkg-config.

Installs into a temporary PREFIX (and once more under a DESTDIR staging root), builds a small
C program with `pkg-config --cflags --libs guanaco`, runs it (the LLaMA tokenizer from the
installed data folder; the ids come from sentencepiece, the reference), runs the installed
`guanaco eval mmlu` on its installed default data, and checks that `make uninstall` removes
every file that `make install` put there.

The build happens in a copy of the release build folder (only the CLI's data-path object is
recompiled for the new PREFIX), so build/ itself keeps its own paths.
"""
import os
import shutil
import subprocess

import pytest

from conftest import BUILD, DATA, ROOT

PROGRAM = r"""
#include <guanaco.h>
#include <stdio.h>
#include <stdlib.h>
int main(int argc, char **argv) {
    gn_tokenizer *t; int32_t *ids; int n;
    if (argc < 3 || gn_tokenizer_load(&t, argv[1]) != GN_OK) { fprintf(stderr, "%s\n", gn_last_error()); return 1; }
    if (gn_tokenizer_encode(t, argv[2], strlen(argv[2]), GN_ENC_BOS, &ids, &n) != GN_OK) return 1;
    for (int i = 0; i < n; i++) printf("%s%d", i ? " " : "", (int)ids[i]);
    printf("\n"); free(ids); gn_tokenizer_free(t); return 0;
}
"""
TEXT = "I believe the meaning of life is"


def make(build, *args):
    p = subprocess.run(["make", "-s", f"BUILD={build}", *args], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, f"make {' '.join(args)} exited {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p


def installed_files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() or p.is_symlink())


@pytest.fixture(scope="module")
def build_copy(tmp_path_factory):
    if shutil.which("pkg-config") is None:
        pytest.fail("pkg-config not found (scripts/install_deps.sh installs it)")
    b = tmp_path_factory.mktemp("install") / "build"
    if BUILD.is_dir():
        shutil.copytree(BUILD, b, symlinks=True)  # timestamps kept: make redoes only what PREFIX changes
    return b


def reference_ids():
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=str(DATA / "llama-tokenizer" / "tokenizer.model"))
    return [sp.bos_id()] + sp.encode(TEXT)


def test_install_pkg_config_program_uninstall(build_copy, tmp_path):
    prefix = tmp_path / "prefix"
    make(build_copy, "install", f"PREFIX={prefix}")
    files = installed_files(prefix)
    major = next(f for f in files if f.startswith("lib/libguanaco.so.") and f.count(".") == 2).rsplit(".", 1)[1]
    for f in ("bin/guanaco", "include/guanaco.h", "lib/libguanaco.a", "lib/libguanaco.so", f"lib/libguanaco.so.{major}",
              "lib/pkgconfig/guanaco.pc", "share/guanaco/llama-tokenizer/tokenizer.model",
              "share/guanaco/mmlu/test/anatomy_test.csv.gz", "share/guanaco/README.md"):
        assert f in files, f"{f} not installed; installed: {files[:40]}"
    real = [f for f in files if f.startswith("lib/libguanaco.so.") and f.count(".") == 4]
    assert len(real) == 1 and os.path.realpath(prefix / "lib/libguanaco.so") == str(prefix / real[0]), real
    soname = subprocess.run(["objdump", "-p", str(prefix / real[0])], capture_output=True, text=True).stdout
    assert f"SONAME               libguanaco.so.{major}" in soname, soname[-2000:]
    # every data file
    data_files = sorted(str(p.relative_to(DATA)) for p in DATA.rglob("*") if p.is_file())
    assert [f[len("share/guanaco/"):] for f in files if f.startswith("share/guanaco/")] == data_files

    # a small program built with pkg-config against the installed library
    env = dict(os.environ, PKG_CONFIG_PATH=str(prefix / "lib" / "pkgconfig"))
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "guanaco"], env=env, capture_output=True, text=True)
    assert flags.returncode == 0, flags.stderr
    assert f"-I{prefix}/include" in flags.stdout and f"-L{prefix}/lib" in flags.stdout and "-lguanaco" in flags.stdout
    src = tmp_path / "prog.c"
    src.write_text("#include <string.h>\n" + PROGRAM)
    prog = tmp_path / "prog"
    cc = subprocess.run(["cc", "-std=c11", str(src), "-o", str(prog), *flags.stdout.split()], capture_output=True, text=True)
    assert cc.returncode == 0, cc.stderr
    run_env = dict(os.environ, LD_LIBRARY_PATH=str(prefix / "lib"))
    ldd = subprocess.run(["ldd", str(prog)], env=run_env, capture_output=True, text=True).stdout
    assert str(prefix / "lib" / f"libguanaco.so.{major}") in ldd, ldd  # the shared library, not a static copy
    out = subprocess.run([str(prog), str(prefix / "share/guanaco/llama-tokenizer/tokenizer.model"), TEXT],
                         env=run_env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert [int(x) for x in out.stdout.split()] == reference_ids()

    # the installed CLI: help, and its default data is the installed copy (said on stderr)
    gn = prefix / "bin" / "guanaco"
    h = subprocess.run([str(gn), "eval", "mmlu", "--help"], capture_output=True, text=True)
    assert h.returncode == 0 and "usage: guanaco eval mmlu" in h.stdout and f"{prefix}/share/guanaco (installed)" in h.stdout
    dump = tmp_path / "prompts.jsonl"
    e = dict(os.environ)
    e.pop("GN_DATA", None)
    d = subprocess.run([str(gn), "eval", "mmlu", "--subjects", "anatomy", "--limit", "2", "--dump-prompts", str(dump)],
                       env=e, capture_output=True, text=True)
    assert d.returncode == 0, d.stderr
    assert f"reading {prefix}/share/guanaco/mmlu" in d.stderr, d.stderr
    assert len(dump.read_text().splitlines()) == 2

    make(build_copy, "uninstall", f"PREFIX={prefix}")
    assert installed_files(prefix) == [], installed_files(prefix)
    assert not (prefix / "share" / "guanaco").exists()


def test_install_destdir_staging(build_copy, tmp_path):
    stage = tmp_path / "stage"
    make(build_copy, "install", f"DESTDIR={stage}", "PREFIX=/opt/guanaco-test")
    files = installed_files(stage)
    assert "opt/guanaco-test/bin/guanaco" in files and "opt/guanaco-test/lib/pkgconfig/guanaco.pc" in files
    assert all(f.startswith("opt/guanaco-test/") for f in files), [f for f in files if not f.startswith("opt/")][:5]
    pc = (stage / "opt/guanaco-test/lib/pkgconfig/guanaco.pc").read_text()
    assert "prefix=/opt/guanaco-test\n" in pc and "Libs.private:" in pc and "-lz" in pc
    h = subprocess.run([str(stage / "opt/guanaco-test/bin/guanaco"), "eval", "mmlu", "--help"], capture_output=True, text=True)
    assert "/opt/guanaco-test/share/guanaco (installed)" in h.stdout  # the final place, not the staging root
    make(build_copy, "uninstall", f"DESTDIR={stage}", "PREFIX=/opt/guanaco-test")
    assert installed_files(stage) == []
