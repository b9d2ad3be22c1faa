"""A PEP 517 build backend for the guanaco package (no setuptools needed).

build_wheel:
  1. libguanaco: in a source tree (../Makefile and ../include/guanaco.h beside
     this folder) runs `make shared` there and takes build/libguanaco.so.0.*;
     otherwise asks pkg-config for guanaco (libdir, includedir). GUANACO_LIB and
     GUANACO_HEADER override both; GUANACO_MAKE_ARGS adds make arguments.
  2. writes guanaco/_bindings.py: the ctypes declarations generated from the
     guanaco.h that belongs to that library (guanaco/_cheader.py).
  3. zips guanaco/*.py, _bindings.py and the library (as libguanaco.so.0) into
     a platform wheel.
"""
import base64
import hashlib
import io
import os
import pathlib
import subprocess
import sys
import sysconfig
import tarfile
import zipfile

NAME, VERSION = "guanaco", "0.1.0"
HERE = pathlib.Path(__file__).resolve().parent.parent  # python/
ROOT = HERE.parent
METADATA = f"""Metadata-Version: 2.1
Name: {NAME}
Version: {VERSION}
Summary: QLoRA fine-tuning and 4-bit LLaMA inference in C (libguanaco), from Python
License: MIT
Requires-Python: >=3.8
Requires-Dist: numpy
Description-Content-Type: text/markdown

"""


def _log(msg):
    print("guanaco build: " + msg, file=sys.stderr, flush=True)


def _find_library():
    """(path of the shared library, path of guanaco.h)."""
    lib, hdr = os.environ.get("GUANACO_LIB"), os.environ.get("GUANACO_HEADER")
    if lib and hdr:
        return pathlib.Path(lib), pathlib.Path(hdr)
    if (ROOT / "Makefile").exists() and (ROOT / "include" / "guanaco.h").exists() and (ROOT / "src").is_dir():
        jobs = str(min(os.cpu_count() or 1, 8))
        cmd = ["make", "-C", str(ROOT), "-j" + jobs, "shared"] + os.environ.get("GUANACO_MAKE_ARGS", "").split()
        _log("source tree at %s: %s" % (ROOT, " ".join(cmd)))
        r = subprocess.run(cmd, stdout=sys.stderr, stderr=sys.stderr)
        if r.returncode != 0:
            raise RuntimeError("`%s` failed (exit %d); see the compiler output above" % (" ".join(cmd), r.returncode))
        so = (ROOT / "build" / "libguanaco.so").resolve()
        return pathlib.Path(lib) if lib else so, pathlib.Path(hdr) if hdr else ROOT / "include" / "guanaco.h"
    try:
        libdir = subprocess.run(["pkg-config", "--variable=libdir", "guanaco"], capture_output=True, text=True, check=True).stdout.strip()
        incdir = subprocess.run(["pkg-config", "--variable=includedir", "guanaco"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as e:
        raise RuntimeError("no guanaco source tree around %s and pkg-config does not know guanaco (%s); "
                           "install libguanaco (make install) or build from the repository" % (HERE, e)) from None
    _log("installed libguanaco from pkg-config: %s, %s" % (libdir, incdir))
    return (pathlib.Path(lib) if lib else (pathlib.Path(libdir) / "libguanaco.so").resolve(),
            pathlib.Path(hdr) if hdr else pathlib.Path(incdir) / "guanaco.h")


def _bindings(header):
    sys.path.insert(0, str(HERE / "guanaco"))
    try:
        import _cheader
    finally:
        sys.path.pop(0)
    return _cheader.generate(header.read_text())


def _tag():
    plat = sysconfig.get_platform().replace("-", "_").replace(".", "_")
    return "py3-none-" + plat


class _Wheel:
    def __init__(self, path):
        self.z = zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED)
        self.record = []

    def add(self, name, data, mode=0o644):
        zi = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
        zi.external_attr = (0o100000 | mode) << 16
        zi.compress_type = zipfile.ZIP_DEFLATED
        self.z.writestr(zi, data)
        h = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        self.record.append("%s,sha256=%s,%d" % (name, h, len(data)))

    def close(self, dist_info):
        self.record.append(dist_info + "/RECORD,,")
        zi = zipfile.ZipInfo(dist_info + "/RECORD", date_time=(2020, 1, 1, 0, 0, 0))
        self.z.writestr(zi, "\n".join(self.record) + "\n")
        self.z.close()


def _metadata():
    readme = HERE / "README.md"
    return METADATA + (readme.read_text() if readme.exists() else "")


def _wheel_file():
    return "Wheel-Version: 1.0\nGenerator: guanaco-backend\nRoot-Is-Purelib: false\nTag: %s\n" % _tag()


# ---- PEP 517 hooks -----------------------------------------------------------

def get_requires_for_build_wheel(config_settings=None):
    return []


def get_requires_for_build_sdist(config_settings=None):
    return []


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    d = pathlib.Path(metadata_directory) / ("%s-%s.dist-info" % (NAME, VERSION))
    d.mkdir(parents=True, exist_ok=True)
    (d / "METADATA").write_text(_metadata())
    (d / "WHEEL").write_text(_wheel_file())
    return d.name


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    so, header = _find_library()
    if not so.exists() or not header.exists():
        raise RuntimeError("libguanaco %s or header %s missing" % (so, header))
    _log("library %s, header %s" % (so, header))
    name = "%s-%s-%s.whl" % (NAME, VERSION, _tag())
    dist_info = "%s-%s.dist-info" % (NAME, VERSION)
    w = _Wheel(pathlib.Path(wheel_directory) / name)
    for f in sorted((HERE / "guanaco").glob("*.py")):
        if f.name != "_bindings.py":
            w.add("guanaco/" + f.name, f.read_bytes())
    w.add("guanaco/_bindings.py", _bindings(header).encode())
    w.add("guanaco/libguanaco.so.0", so.read_bytes(), 0o755)
    w.add(dist_info + "/METADATA", _metadata().encode())
    w.add(dist_info + "/WHEEL", _wheel_file().encode())
    w.close(dist_info)
    return name


def build_sdist(sdist_directory, config_settings=None):
    """The python/ folder only: building it later needs an installed libguanaco (pkg-config)."""
    base = "%s-%s" % (NAME, VERSION)
    name = base + ".tar.gz"
    with tarfile.open(pathlib.Path(sdist_directory) / name, "w:gz") as t:
        for f in sorted(HERE.rglob("*")):
            rel = f.relative_to(HERE)
            if f.is_file() and "__pycache__" not in rel.parts and f.name != "_bindings.py":
                t.add(str(f), arcname=base + "/" + str(rel))
        pkg = ("Metadata-Version: 2.1\nName: %s\nVersion: %s\n" % (NAME, VERSION)).encode()
        ti = tarfile.TarInfo(base + "/PKG-INFO")
        ti.size = len(pkg)
        t.addfile(ti, io.BytesIO(pkg))
    return name
