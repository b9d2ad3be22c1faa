"""Finds libguanaco and declares its functions for ctypes.

The declarations come from include/guanaco.h: the build writes them into
_bindings.py (guanaco/_cheader.py); run from a source tree without a build, the
header beside the package is read at import instead. The library is, in order:
$GUANACO_LIB, the copy shipped inside the package, the source tree's
build/libguanaco.so (after `make shared`), then the system's (ldconfig).

ctypes.CDLL releases the GIL for the duration of every foreign call, and a
CFUNCTYPE callback takes it back while Python code runs.
"""
import ctypes
import ctypes.util
import os
import pathlib

_HERE = pathlib.Path(__file__).resolve().parent
_SRC_ROOT = _HERE.parent.parent  # python/guanaco -> repository root (source tree only)


def _load_bindings():
    try:
        from . import _bindings  # written by the build backend
        return _bindings
    except ImportError:
        pass
    header = _SRC_ROOT / "include" / "guanaco.h"
    if not header.exists():
        raise ImportError("guanaco: no _bindings.py and no include/guanaco.h beside the package; "
                          "install it with `pip install ./python`")
    from . import _cheader
    import types
    mod = types.ModuleType("guanaco._bindings")
    exec(compile(_cheader.generate(header.read_text()), str(header), "exec"), mod.__dict__)
    return mod


def _find_library():
    env = os.environ.get("GUANACO_LIB")
    if env:
        return env
    for p in (_HERE / "libguanaco.so.0", _SRC_ROOT / "build" / "libguanaco.so"):
        if p.exists():
            return str(p)
    found = ctypes.util.find_library("guanaco")
    if found:
        return found
    raise ImportError("guanaco: libguanaco.so not found (set GUANACO_LIB, run `make shared` in the "
                      "source tree, or install the package with `pip install ./python`)")


B = _load_bindings()
PATH = _find_library()
lib = ctypes.CDLL(PATH)
for _name, (_res, _args) in B.FUNCTIONS.items():
    try:
        _f = getattr(lib, _name)
    except AttributeError as e:  # a library older than the header
        raise ImportError("guanaco: %s lacks %s (rebuild it: make shared)" % (PATH, _name)) from e
    _f.restype = _res
    _f.argtypes = _args

_libc = ctypes.CDLL(ctypes.util.find_library("c"))
_libc.free.argtypes = [ctypes.c_void_p]
_libc.free.restype = None
free = _libc.free
