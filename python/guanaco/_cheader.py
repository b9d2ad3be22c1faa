"""Reads include/guanaco.h and writes the ctypes declarations for it.

The header is regular C (typedef'd enums and structs, opaque handles, function
pointer typedefs, one prototype per function), so a small parser suffices:
comments and preprocessor blocks are stripped, the text is cut into top-level
statements at ';', and each statement is one of

    typedef enum { A = 0, B, ... } name;      enum { ... };
    typedef struct name name;                 (an opaque handle)
    typedef struct { fields } name;
    typedef RET (*name)(params);              (a callback type)
    RET name(params);                         (a function)

`generate(text)` returns Python source (the package's _bindings.py, written at
build time); nothing here needs a compiler. Type rules: an opaque handle is a
c_void_p, `const char *` is c_char_p (arguments, fields, const returns), a
returned `char *` is c_void_p (the caller frees it), and every pointer a
callback receives is c_void_p.
"""
import re

_BASE = {
    "void": "None", "char": "c_char", "int": "c_int", "unsigned": "c_uint", "float": "c_float",
    "double": "c_double", "size_t": "c_size_t", "int8_t": "c_int8", "uint8_t": "c_uint8",
    "int16_t": "c_int16", "uint16_t": "c_uint16", "int32_t": "c_int32", "uint32_t": "c_uint32",
    "int64_t": "c_int64", "uint64_t": "c_uint64", "long": "c_long", "unsigned long": "c_ulong",
    "long long": "c_longlong", "unsigned long long": "c_ulonglong",
}


class HeaderError(ValueError):
    pass


def _strip(text):
    text = re.sub(r"#ifdef __cplusplus.*?#endif", "", text, flags=re.S)
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r"//[^\n]*", " ", text)
    text = "\n".join(l for l in text.splitlines() if not l.lstrip().startswith("#"))
    return text


def _statements(text):
    out, depth, cur = [], 0, []
    for ch in text:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == ";" and depth == 0:
            s = " ".join("".join(cur).split())
            if s:
                out.append(s)
            cur = []
        else:
            cur.append(ch)
    if " ".join("".join(cur).split()):
        raise HeaderError("text after the last ';': " + "".join(cur).strip()[:80])
    return out


class _Gen:
    def __init__(self):
        self.lines = ["# Generated from include/guanaco.h by guanaco/_cheader.py; do not edit.",
                      "from ctypes import *  # noqa: F401,F403", ""]
        self.consts = {}
        self.enums, self.structs, self.opaque, self.callbacks = set(), [], set(), set()
        self.funcs = []
        self.struct_fields = {}

    # a declaration "const char *const *name[8]" -> (ctype source, name)
    def decl(self, d, ctx):
        m = re.match(r"^(.*?)([A-Za-z_]\w*)\s*(\[\s*(\w+)\s*\])?$", d.strip())
        if not m:
            raise HeaderError("cannot read declaration '%s'" % d)
        tspec, name, arr = m.group(1), m.group(2), m.group(4)
        if not tspec.strip():  # a lone type such as "void"
            tspec, name = d, None
        t = self.ctype(tspec, ctx)
        if arr:
            n = int(arr) if arr.isdigit() else self.consts[arr]
            t = "(%s * %d)" % (t, n)
        return t, name

    def ctype(self, tspec, ctx):
        toks = re.findall(r"[A-Za-z_]\w*|\*", tspec)
        stars = toks.count("*")
        words = [t for t in toks if t != "*"]
        const_base = bool(words) and words[0] == "const"
        words = [w for w in words if w not in ("const", "struct", "enum")]
        multi = {("unsigned", "int"): "unsigned", ("long", "long"): "long long",
                 ("long", "long", "int"): "long long", ("unsigned", "long", "long"): "unsigned long long",
                 ("long", "int"): "long", ("unsigned", "long"): "unsigned long"}
        words = [multi.get(tuple(words), " ".join(words))] if len(words) > 1 else words
        if len(words) != 1:
            raise HeaderError("cannot read type '%s'" % tspec)
        b = words[0]
        if stars and ctx == "callback":
            return "c_void_p"
        if b in self.enums:
            base = "c_int"
        elif b in _BASE:
            base = _BASE[b]
        elif b in self.opaque:
            if stars == 0:
                raise HeaderError("opaque type %s used by value" % b)
            base, stars = "c_void_p", stars - 1
            return self._wrap(base, stars)
        elif b in self.callbacks or b in self.struct_fields:
            base = b
        else:
            raise HeaderError("unknown type '%s' in '%s'" % (b, tspec))
        if stars == 0:
            return base
        if b == "char":
            inner = "c_char_p" if (const_base or ctx == "arg") and not (ctx == "ret" and not const_base) else "c_void_p"
            if ctx == "arg" and not const_base and stars >= 2:
                inner = "c_void_p"  # char **out: a malloc'd string comes back
            return self._wrap(inner, stars - 1)
        if b == "void":
            return self._wrap("c_void_p", stars - 1)
        return self._wrap(base, stars)

    @staticmethod
    def _wrap(t, n):
        for _ in range(n):
            t = "POINTER(%s)" % t
        return t

    def params(self, s, ctx):
        s = s.strip()
        if s in ("", "void"):
            return []
        return [self.decl(p, ctx)[0] for p in s.split(",")]

    def enum(self, body, name):
        v = -1
        for item in [x.strip() for x in body.split(",") if x.strip()]:
            if "=" in item:
                k, e = [x.strip() for x in item.split("=", 1)]
                v = int(eval(e, {"__builtins__": {}}, dict(self.consts)))
            else:
                k, v = item, v + 1
            self.consts[k] = v
            self.lines.append("%s = %d" % (k, v))
        if name:
            self.enums.add(name)
        self.lines.append("")

    def struct(self, body, name):
        fields = []
        self.struct_fields[name] = []
        self.lines.append("class %s(Structure):\n    pass" % name)
        for f in [x.strip() for x in body.split(";") if x.strip()]:
            fp = re.match(r"^(.*?)\(\s*\*\s*(\w+)\s*\)\s*\((.*)\)$", f)
            if fp:
                ret, fname, ps = fp.groups()
                cb = "%s_%s_fn" % (name, fname)
                self.lines.append("%s = CFUNCTYPE(%s)" % (cb, ", ".join([self.ctype(ret, "callback")] + self.params(ps, "callback"))))
                fields.append((fname, cb))
                continue
            parts = f.split(",")
            m = re.match(r"^(.*?)[\s*]*[A-Za-z_]\w*\s*(\[\s*\w+\s*\])?$", parts[0])
            if not m:
                raise HeaderError("cannot read field '%s' of %s" % (f, name))
            base = m.group(1).strip()  # the type without the first declarator's stars
            for i, d in enumerate(parts):
                t, n = self.decl(d if i == 0 else base + " " + d.strip(), "field")
                fields.append((n, t))
        self.lines.append("%s._fields_ = [\n%s\n]\n" % (name, "\n".join('    ("%s", %s),' % f for f in fields)))
        self.struct_fields[name] = [n for n, _ in fields]
        self.structs.append(name)

    def statement(self, s):
        m = re.match(r"^(typedef )?enum \{(.*)\}\s*(\w+)?$", s)
        if m:
            return self.enum(m.group(2), m.group(3))
        m = re.match(r"^typedef struct (\w+) (\w+)$", s)
        if m:
            self.opaque.add(m.group(2))
            return
        m = re.match(r"^typedef struct \{(.*)\}\s*(\w+)$", s)
        if m:
            return self.struct(m.group(1), m.group(2))
        m = re.match(r"^typedef (.*?)\(\s*\*\s*(\w+)\s*\)\s*\((.*)\)$", s)
        if m:
            ret, name, ps = m.groups()
            self.callbacks.add(name)
            self.lines.append("%s = CFUNCTYPE(%s)\n" % (name, ", ".join([self.ctype(ret, "callback")] + self.params(ps, "callback"))))
            return
        if s.startswith("extern "):
            return
        m = re.match(r"^(.*?)\b(\w+)\s*\((.*)\)$", s)
        if m:
            ret, name, ps = m.groups()
            self.funcs.append((name, self.ctype(ret, "ret"), self.params(ps, "arg")))
            return
        raise HeaderError("cannot read statement '%s'" % s[:100])


def generate(text):
    """Python source with the constants, Structures, callback types and FUNCTIONS of a header."""
    g = _Gen()
    for s in _statements(_strip(text)):
        g.statement(s)
    L = g.lines
    L.append("# name: (restype, argtypes)")
    L.append("FUNCTIONS = {")
    for name, ret, args in g.funcs:
        L.append('    "%s": (%s, [%s]),' % (name, ret, ", ".join(args)))
    L.append("}")
    L.append("# struct: field names in order (tests compare offsets with the C compiler's)")
    L.append("STRUCTS = {")
    for s in g.structs:
        L.append('    "%s": %r,' % (s, g.struct_fields[s]))
    L.append("}")
    return "\n".join(L) + "\n"


if __name__ == "__main__":
    import sys
    sys.stdout.write(generate(open(sys.argv[1]).read()))
