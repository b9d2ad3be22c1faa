/*
 * torchbin.c — PyTorch checkpoints in torch.save's zip format (the default
 * since torch 1.6): pytorch_model.bin, *.pt, *.pth.
 *
 * The file is a ZIP archive whose entries are stored uncompressed:
 *   <prefix>/data.pkl        the pickled object (a state dict)
 *   <prefix>/data/<key>      raw little-endian bytes of storage <key>
 *   <prefix>/byteorder       "little" (absent in old files)
 * <prefix> is the archive's top folder ("archive", or the file stem).
 *
 * Two small parsers, both written for hostile input:
 *  - a ZIP central-directory reader (with zip64 records and extra fields, since
 *    7B shards exceed 4 GiB); each entry's data offset comes from its local
 *    header; compressed or encrypted entries are refused when used.
 *    reference: PKWARE APPNOTE.TXT sections 4.3.6-4.3.16, 4.5.3.
 *  - a restricted pickle VM (protocols 2-5 opcodes that torch writes for a
 *    state dict). It knows a handful of globals: collections.OrderedDict,
 *    torch._utils._rebuild_tensor_v2 / _rebuild_parameter(_with_state),
 *    torch.Size and the torch.*Storage classes. Any other global is an error,
 *    so nothing in the file can name code to run. Persistent ids
 *    ('storage', <StorageClass>, key, location, numel) resolve to zip entries.
 *    reference: CPython Lib/pickletools.py (opcode table).
 *  Stack depth, mark depth, memo size and object count are capped, and every
 *  length is checked against the bytes left.
 *
 * Tensors whose view is contiguous point into the mapping (storage base +
 * offset * element size); strided views (e.g. a saved transpose) are copied
 * into a buffer the table owns. Storages shared by several tensors (tied
 * weights) are simply referenced twice. Values of the state dict that are not
 * tensors are skipped with a warning.
 */
#include "tensors.h"       // gn_torchbin_load
#include "table_build.h"   // gn_tt_push, gn_tt_rollback, ...

#include <inttypes.h>      // PRIu64
#include <stdio.h>         // snprintf
#include <stdlib.h>        // free, qsort, bsearch

// ----------------------------------------------------------------------------
// little-endian field reads (callers have checked the bounds)

static uint16_t le16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t le32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t le64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }

// ----------------------------------------------------------------------------
// ZIP reader

typedef struct {
    const char *name;    // into the mapping (central directory), not NUL-terminated
    size_t name_len;
    uint64_t off;        // data offset (after the local header)
    uint64_t size;       // bytes (compressed size; equals the size when stored)
    uint16_t method, flags;
} zentry;

typedef struct {
    const char *path;
    const uint8_t *p;
    size_t size;
    zentry *e;           // sorted by name
    int n;
} zip;

#define ZIP_EOCD_SIG 0x06054b50u
#define ZIP64_LOC_SIG 0x07064b50u
#define ZIP64_EOCD_SIG 0x06064b50u
#define ZIP_CDH_SIG 0x02014b50u
#define ZIP_LFH_SIG 0x04034b50u

static int cmp_entry(const void *a, const void *b) {
    const zentry *x = a, *y = b;
    size_t n = x->name_len < y->name_len ? x->name_len : y->name_len;
    int c = memcmp(x->name, y->name, n);
    return c ? c : (x->name_len > y->name_len) - (x->name_len < y->name_len);
}

static const zentry *zip_find(const zip *z, const char *name, size_t len) {
    zentry key = {.name = name, .name_len = len};
    return z->n ? bsearch(&key, z->e, (size_t)z->n, sizeof *z->e, cmp_entry) : NULL;
}

// Prints an entry name into buf (bounded, non-printables as '?').
static const char *printable(const char *s, size_t n, char *buf, size_t cap) {
    size_t k = 0;
    for (size_t i = 0; i < n && k + 4 < cap; i++)
        buf[k++] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
    if (n > 0 && k + 4 >= cap) { memcpy(buf + k, "...", 3); k += 3; }
    buf[k] = 0;
    return buf;
}

// Reads the central directory into z->e. Errors name the path and offset.
static gn_status zip_open(zip *z) {
    const uint8_t *p = z->p;
    size_t size = z->size;
    const char *path = z->path;
    if (size < 22) {
        if (size >= 2 && p[0] == 0x80)
            return gn_err(GN_ERR_UNSUPPORTED, "%s: offset 0: a legacy (pre-1.6) torch pickle, expected the zip format "
                          "that torch.save writes by default", path);
        return gn_err(GN_ERR_FORMAT, "%s: offset 0: file is %zu bytes, expected a zip archive (torch.save)", path, size);
    }
    // end of central directory: 22 bytes + a comment of up to 65535 bytes
    size_t lo = size - 22 > 65535 ? size - 22 - 65535 : 0, eocd = SIZE_MAX;
    for (size_t i = size - 22 + 1; i-- > lo;) {
        if (le32(p + i) == ZIP_EOCD_SIG && i + 22 + le16(p + i + 20) <= size) { eocd = i; break; }
    }
    if (eocd == SIZE_MAX) {
        if (p[0] == 0x80)
            return gn_err(GN_ERR_UNSUPPORTED, "%s: offset 0: a legacy (pre-1.6) torch pickle, expected the zip format "
                          "that torch.save writes by default", path);
        return gn_err(GN_ERR_FORMAT, "%s: no zip end-of-central-directory record, expected a zip archive written by "
                      "torch.save (truncated file?)", path);
    }
    const uint8_t *q = p + eocd;
    if (le16(q + 4) != 0 || le16(q + 6) != 0)
        return gn_err(GN_ERR_UNSUPPORTED, "%s: offset %zu: multi-disk zip archive, expected a single file", path, eocd);
    uint64_t n_ent = le16(q + 10), cd_size = le32(q + 12), cd_off = le32(q + 16);
    size_t cd_end_limit = eocd;
    if (eocd >= 20 && le32(p + eocd - 20) == ZIP64_LOC_SIG) {
        uint64_t z64 = le64(p + eocd - 20 + 8);
        if (z64 > eocd - 20 || eocd - 20 - z64 < 56 || le32(p + z64) != ZIP64_EOCD_SIG)
            return gn_err(GN_ERR_FORMAT, "%s: offset %zu: zip64 locator points to %" PRIu64 ", expected a zip64 "
                          "end-of-central-directory record there", path, eocd - 20, z64);
        const uint8_t *r = p + z64;
        if (le32(r + 16) != 0 || le32(r + 20) != 0)
            return gn_err(GN_ERR_UNSUPPORTED, "%s: offset %" PRIu64 ": multi-disk zip64 archive, expected a single "
                          "file", path, z64);
        n_ent = le64(r + 32);
        cd_size = le64(r + 40);
        cd_off = le64(r + 48);
        cd_end_limit = (size_t)z64;
    }
    if (cd_off > cd_end_limit || cd_size > cd_end_limit - cd_off)
        return gn_err(GN_ERR_FORMAT, "%s: offset %zu: central directory [%" PRIu64 ", +%" PRIu64 ") lies outside "
                      "the file, expected it before the end record (truncated file?)", path, eocd, cd_off, cd_size);
    if (n_ent > cd_size / 46)
        return gn_err(GN_ERR_FORMAT, "%s: offset %zu: %" PRIu64 " entries cannot fit in a %" PRIu64 "-byte central "
                      "directory, expected a smaller count", path, eocd, n_ent, cd_size);
    z->e = gn_malloc((size_t)(n_ent ? n_ent : 1) * sizeof *z->e);
    size_t pos = (size_t)cd_off, cd_end = (size_t)(cd_off + cd_size);
    char nb[96];
    for (uint64_t k = 0; k < n_ent; k++) {
        if (cd_end - pos < 46 || le32(p + pos) != ZIP_CDH_SIG)
            return gn_err(GN_ERR_FORMAT, "%s: offset %zu: central directory entry %" PRIu64 " is bad, expected "
                          "signature PK\\1\\2", path, pos, k);
        const uint8_t *h = p + pos;
        zentry *e = &z->e[z->n];
        e->flags = le16(h + 8);
        e->method = le16(h + 10);
        uint64_t csize = le32(h + 20), usize = le32(h + 24), lho = le32(h + 42);
        size_t nl = le16(h + 28), xl = le16(h + 30), cl = le16(h + 32);
        uint32_t disk = le16(h + 34);
        if (cd_end - pos - 46 < nl + xl + cl)
            return gn_err(GN_ERR_FORMAT, "%s: offset %zu: central directory entry %" PRIu64 " runs past the "
                          "directory, expected name/extra/comment inside it", path, pos, k);
        e->name = (const char *)h + 46;
        e->name_len = nl;
        // zip64 extended information: only the fields whose 32-bit value is all ones, in this order
        const uint8_t *x = h + 46 + nl, *xend = x + xl;
        while (xend - x >= 4) {
            uint16_t id = le16(x), sz = le16(x + 2);
            if ((size_t)(xend - x - 4) < sz)
                return gn_err(GN_ERR_FORMAT, "%s: offset %zu: entry '%s': extra field runs past its end, expected "
                              "well-formed extra fields", path, pos, printable(e->name, nl, nb, sizeof nb));
            if (id == 0x0001) {
                const uint8_t *f = x + 4, *fend = x + 4 + sz;
                uint64_t *want[3] = {&usize, &csize, &lho};
                for (int w = 0; w < 3; w++) {
                    if (*want[w] != 0xffffffffu) continue;
                    if (fend - f < 8)
                        return gn_err(GN_ERR_FORMAT, "%s: offset %zu: entry '%s': zip64 extra field too short, "
                                      "expected 64-bit sizes", path, pos, printable(e->name, nl, nb, sizeof nb));
                    *want[w] = le64(f);
                    f += 8;
                }
                if (disk == 0xffff && fend - f >= 4) disk = le32(f);
            }
            x += 4 + sz;
        }
        if (disk != 0)
            return gn_err(GN_ERR_UNSUPPORTED, "%s: entry '%s' is on disk %u, expected a single-file archive",
                          path, printable(e->name, nl, nb, sizeof nb), disk);
        // local header: its own name/extra lengths decide where the data starts
        if (lho > size || size - lho < 30 || le32(p + lho) != ZIP_LFH_SIG)
            return gn_err(GN_ERR_FORMAT, "%s: offset %" PRIu64 ": entry '%s': no local header there, expected "
                          "signature PK\\3\\4", path, lho, printable(e->name, nl, nb, sizeof nb));
        uint64_t data = lho + 30 + le16(p + lho + 26) + le16(p + lho + 28);
        if (data > size || csize > size - data)
            return gn_err(GN_ERR_FORMAT, "%s: offset %" PRIu64 ": entry '%s': %" PRIu64 " bytes of data run past "
                          "the end of the %zu-byte file, expected a complete archive (truncated file?)",
                          path, data, printable(e->name, nl, nb, sizeof nb), csize, size);
        if (e->method == 0 && csize != usize)
            return gn_err(GN_ERR_FORMAT, "%s: entry '%s': stored entry with compressed size %" PRIu64 " != size %"
                          PRIu64 ", expected equal", path, printable(e->name, nl, nb, sizeof nb), csize, usize);
        e->off = data;
        e->size = csize;
        z->n++;
        pos += 46 + nl + xl + cl;
    }
    qsort(z->e, (size_t)z->n, sizeof *z->e, cmp_entry);
    for (int i = 1; i < z->n; i++)
        if (cmp_entry(&z->e[i - 1], &z->e[i]) == 0)
            return gn_err(GN_ERR_FORMAT, "%s: entry '%s' appears twice, expected unique names", path,
                          printable(z->e[i].name, z->e[i].name_len, nb, sizeof nb));
    return GN_OK;
}

// GN_ERR_UNSUPPORTED unless the entry's bytes can be used in place.
static gn_status zip_check_stored(const zip *z, const zentry *e) {
    char nb[96];
    if (e->flags & 1)
        return gn_err(GN_ERR_UNSUPPORTED, "%s: entry '%s' is encrypted, expected a plain torch.save archive",
                      z->path, printable(e->name, e->name_len, nb, sizeof nb));
    if (e->method != 0)
        return gn_err(GN_ERR_UNSUPPORTED, "%s: entry '%s' is compressed (method %u), expected stored entries as "
                      "torch.save writes them (re-save the checkpoint with torch.save)",
                      z->path, printable(e->name, e->name_len, nb, sizeof nb), e->method);
    return GN_OK;
}

// ----------------------------------------------------------------------------
// pickle VM: objects

enum { O_NONE, O_BOOL, O_INT, O_FLOAT, O_STR, O_BYTES, O_TUPLE, O_LIST, O_DICT, O_GLOBAL, O_STORAGE, O_TENSOR };
static const char *kind_name[] = {"None", "bool", "int", "float", "str", "bytes", "tuple", "list", "dict",
                                  "global", "storage", "tensor"};

enum { G_ODICT, G_REBUILD_V2, G_REBUILD_PARAM, G_REBUILD_PARAM_STATE, G_SIZE, G_STORAGE };

static const struct { const char *mod, *name; int id; gn_dtype dt; } allowed_globals[] = {
    {"collections", "OrderedDict", G_ODICT, 0},
    {"torch._utils", "_rebuild_tensor_v2", G_REBUILD_V2, 0},
    {"torch._utils", "_rebuild_parameter", G_REBUILD_PARAM, 0},
    {"torch._utils", "_rebuild_parameter_with_state", G_REBUILD_PARAM_STATE, 0},
    {"torch", "Size", G_SIZE, 0},
    {"torch", "FloatStorage", G_STORAGE, GN_DTYPE_F32},
    {"torch", "HalfStorage", G_STORAGE, GN_DTYPE_F16},
    {"torch", "BFloat16Storage", G_STORAGE, GN_DTYPE_BF16},
    {"torch", "DoubleStorage", G_STORAGE, GN_DTYPE_F64},
    {"torch", "LongStorage", G_STORAGE, GN_DTYPE_I64},
    {"torch", "IntStorage", G_STORAGE, GN_DTYPE_I32},
    {"torch", "ShortStorage", G_STORAGE, GN_DTYPE_I16},
    {"torch", "CharStorage", G_STORAGE, GN_DTYPE_I8},
    {"torch", "ByteStorage", G_STORAGE, GN_DTYPE_U8},
    {"torch", "BoolStorage", G_STORAGE, GN_DTYPE_BOOL},
};
#define N_ALLOWED (int)(sizeof allowed_globals / sizeof allowed_globals[0])

typedef struct {
    uint8_t kind;
    int32_t sub;         // O_GLOBAL: G_*; O_STORAGE: gn_dtype
    int32_t n, cap;      // O_TUPLE/O_LIST: items; O_DICT: key/value pairs
    int32_t *items;      // dict: 2*n (key, value, key, value, ...)
    int64_t i;           // O_INT/O_BOOL value; O_STORAGE numel; O_TENSOR descriptor index
    double f;            // O_FLOAT
    const char *s;       // O_STR/O_BYTES bytes (into the pickle), O_STORAGE key
    size_t len;
    const zentry *ent;   // O_STORAGE: its zip entry
} pobj;

// A tensor view as _rebuild_tensor_v2 describes it.
typedef struct {
    int32_t storage;     // object index (O_STORAGE)
    int64_t offset;      // in elements
    int ndim;
    int64_t shape[GN_MAX_DIMS], stride[GN_MAX_DIMS];
    int64_t nelem;
    const void *data;    // set when materialised
} tdesc;

#define VM_MAX_OBJS (1 << 22)
#define VM_MAX_STACK (1 << 20)
#define VM_MAX_MARKS (1 << 16)
#define VM_MAX_MEMO (1 << 22)

typedef struct {
    const char *path;
    const uint8_t *pk;   // data.pkl bytes
    size_t n, pos, at;   // size, read position, offset of the current opcode
    pobj *o;
    int32_t no, co;
    int32_t *stk;
    int32_t sp, cs;
    int32_t *marks;
    int32_t nm, cm;
    int32_t *memo;       // -1 when unset
    uint32_t nmemo, memo_set;
    tdesc *td;
    int32_t ntd, ctd;
    const zip *z;
    const char *prefix;  // "<prefix>/" (into the mapping)
    size_t prefix_len;
    char *scratch;       // entry-name buffer
    size_t scratch_cap;
} vm;

static void vm_free(vm *v) {
    for (int32_t i = 0; i < v->no; i++) free(v->o[i].items);
    free(v->o);
    free(v->stk);
    free(v->marks);
    free(v->memo);
    free(v->td);
    free(v->scratch);
}

static gn_status bad(vm *v, const char *what) {
    return gn_err(GN_ERR_FORMAT, "%s: data.pkl offset %zu: %s", v->path, v->at, what);
}

// Grows *arr (elements of size es, capacity *cap) to hold at least `need`.
static void *ensure(void *arr, int32_t *cap, int64_t need, size_t es) {
    if (need <= *cap) return arr;
    int64_t c = *cap ? *cap : 16;
    while (c < need) c *= 2;
    *cap = (int32_t)(c > INT32_MAX ? INT32_MAX : c);
    return gn_realloc(arr, (size_t)*cap * es);
}

static int32_t new_obj(vm *v, int kind) {
    if (v->no >= VM_MAX_OBJS) return -1;
    v->o = ensure(v->o, &v->co, (int64_t)v->no + 1, sizeof *v->o);
    pobj *o = &v->o[v->no];
    memset(o, 0, sizeof *o);
    o->kind = (uint8_t)kind;
    return v->no++;
}

static gn_status push(vm *v, int32_t id) {
    if (id < 0) return bad(v, "too many objects, expected a state dict of reasonable size");
    if (v->sp >= VM_MAX_STACK) return bad(v, "stack too deep, expected a state dict of reasonable size");
    v->stk = ensure(v->stk, &v->cs, (int64_t)v->sp + 1, sizeof *v->stk);
    v->stk[v->sp++] = id;
    return GN_OK;
}

static int32_t fence(const vm *v) { return v->nm ? v->marks[v->nm - 1] : 0; }

static gn_status pop(vm *v, int32_t *id) {
    if (v->sp <= fence(v)) return bad(v, "stack underflow, expected a value on the stack");
    *id = v->stk[--v->sp];
    return GN_OK;
}

static gn_status top(vm *v, int32_t *id) {
    if (v->sp <= fence(v)) return bad(v, "stack underflow, expected a value on the stack");
    *id = v->stk[v->sp - 1];
    return GN_OK;
}

// Pops the top mark; *k = stack index it recorded.
static gn_status pop_mark(vm *v, int32_t *k) {
    if (v->nm == 0) return bad(v, "no MARK on the stack, expected one before this opcode");
    *k = v->marks[--v->nm];
    return GN_OK;
}

// Reads n bytes of operand; NULL (error set) if the pickle ends first.
static const uint8_t *operand(vm *v, size_t n, gn_status *st) {
    if (n > v->n - v->pos) {
        *st = gn_err(GN_ERR_FORMAT, "%s: data.pkl offset %zu: pickle ends inside an operand (%zu bytes needed, "
                     "%zu left), expected a complete pickle", v->path, v->at, n, v->n - v->pos);
        return NULL;
    }
    const uint8_t *p = v->pk + v->pos;
    v->pos += n;
    return p;
}

static gn_status push_str(vm *v, int kind, uint64_t len) {
    gn_status st = GN_OK;
    if (len > v->n - v->pos)
        return gn_err(GN_ERR_FORMAT, "%s: data.pkl offset %zu: string of %" PRIu64 " bytes but %zu are left, "
                      "expected a complete pickle", v->path, v->at, len, v->n - v->pos);
    const uint8_t *p = operand(v, (size_t)len, &st);
    int32_t id = new_obj(v, kind);
    if (id >= 0) { v->o[id].s = (const char *)p; v->o[id].len = (size_t)len; }
    return push(v, id);
}

static gn_status push_int(vm *v, int kind, int64_t val) {
    int32_t id = new_obj(v, kind);
    if (id >= 0) v->o[id].i = val;
    return push(v, id);
}

// Builds a tuple from stack items [k, sp) and replaces them with it.
static gn_status make_tuple(vm *v, int32_t k) {
    int32_t n = v->sp - k, id = new_obj(v, O_TUPLE);
    if (id < 0) return push(v, id);
    pobj *o = &v->o[id];
    o->n = o->cap = n;
    o->items = gn_malloc((size_t)(n ? n : 1) * sizeof *o->items);
    if (n > 0) memcpy(o->items, v->stk + k, (size_t)n * sizeof *o->items);
    v->sp = k;
    return push(v, id);
}

// Appends stack items [k, sp) to the list/dict object `dst`, then drops them.
static gn_status add_items(vm *v, int32_t dst, int32_t k, int kind) {
    int32_t n = v->sp - k;
    pobj *o = &v->o[dst];
    if (o->kind != kind)
        return bad(v, kind == O_DICT ? "SETITEM(S) on a value that is not a dict, expected a dict"
                                     : "APPEND(S) on a value that is not a list, expected a list");
    if (kind == O_DICT && n % 2) return bad(v, "SETITEMS with an odd number of items, expected key/value pairs");
    int64_t have = kind == O_DICT ? 2 * (int64_t)o->n : o->n;
    if (have + n > VM_MAX_OBJS) return bad(v, "container too large, expected a state dict of reasonable size");
    if (n == 0) return GN_OK;
    o->items = ensure(o->items, &o->cap, have + n, sizeof *o->items);
    memcpy(o->items + have, v->stk + k, (size_t)n * sizeof *o->items);
    o->n += kind == O_DICT ? n / 2 : n;
    v->sp = k;
    return GN_OK;
}

static int str_is(const pobj *o, const char *s) {
    return o->kind == O_STR && o->len == strlen(s) && memcmp(o->s, s, o->len) == 0;
}

// Looks up module.name in the allow-list and pushes the global.
static gn_status push_global(vm *v, const char *mod, size_t ml, const char *name, size_t nl) {
    for (int g = 0; g < N_ALLOWED; g++) {
        const char *am = allowed_globals[g].mod, *an = allowed_globals[g].name;
        if (strlen(am) == ml && memcmp(am, mod, ml) == 0 && strlen(an) == nl && memcmp(an, name, nl) == 0) {
            int32_t id = new_obj(v, O_GLOBAL);
            if (id >= 0) {
                v->o[id].sub = allowed_globals[g].id;
                v->o[id].i = allowed_globals[g].dt;
            }
            return push(v, id);
        }
    }
    char a[80], b[80];
    return gn_err(GN_ERR_UNSUPPORTED, "%s: data.pkl: unsupported pickle global '%s.%s' at offset %zu, expected only "
                  "tensors, storages and OrderedDict (a plain state dict)", v->path, printable(mod, ml, a, sizeof a),
                  printable(name, nl, b, sizeof b), v->at);
}

// ----------------------------------------------------------------------------
// pickle VM: torch reconstruction

// BINPERSID: ('storage', <Storage class>, key, location, numel) -> O_STORAGE.
static gn_status persistent_load(vm *v, int32_t pid) {
    const pobj *t = &v->o[pid];
    if (t->kind != O_TUPLE || t->n != 5 || !str_is(&v->o[t->items[0]], "storage"))
        return bad(v, "persistent id is not ('storage', type, key, location, numel), expected torch's storage id");
    const pobj *cls = &v->o[t->items[1]], *key = &v->o[t->items[2]], *num = &v->o[t->items[4]];
    if (cls->kind != O_GLOBAL || cls->sub != G_STORAGE)
        return bad(v, "persistent id names no torch.*Storage class, expected e.g. torch.FloatStorage");
    if (key->kind != O_STR || key->len == 0 || key->len > 1024)
        return bad(v, "storage key is not a short string, expected e.g. '0'");
    if (num->kind != O_INT || num->i < 0) return bad(v, "storage numel is not a count, expected an int >= 0");
    // entry name: <prefix>/data/<key>
    size_t need = v->prefix_len + 5 + key->len;
    if (need > v->scratch_cap) {
        v->scratch_cap = need * 2;
        v->scratch = gn_realloc(v->scratch, v->scratch_cap);
    }
    memcpy(v->scratch, v->prefix, v->prefix_len);
    memcpy(v->scratch + v->prefix_len, "data/", 5);
    memcpy(v->scratch + v->prefix_len + 5, key->s, key->len);
    char nb[96];
    const zentry *e = zip_find(v->z, v->scratch, need);
    if (!e)
        return gn_err(GN_ERR_FORMAT, "%s: data.pkl offset %zu: storage '%s' has no zip entry, expected '%s' in the "
                      "archive", v->path, v->at, printable(key->s, key->len, nb, sizeof nb),
                      printable(v->scratch, need, nb, sizeof nb));
    gn_status st = zip_check_stored(v->z, e);
    if (st != GN_OK) return st;
    gn_dtype dt = (gn_dtype)cls->i;
    size_t es = gn_dtype_nbytes(dt, 1);
    if ((uint64_t)num->i > e->size / es)
        return gn_err(GN_ERR_FORMAT, "%s: data.pkl offset %zu: storage '%s' claims %lld %s elements but its entry "
                      "holds %" PRIu64 " bytes, expected at least %lld x %zu", v->path, v->at,
                      printable(key->s, key->len, nb, sizeof nb), (long long)num->i, gn_dtype_name(dt), e->size,
                      (long long)num->i, es);
    const char *ks = key->s;
    size_t kl = key->len;
    int64_t numel = num->i;
    int32_t id = new_obj(v, O_STORAGE); // may move v->o: no pobj pointers below
    if (id >= 0) {
        pobj *o = &v->o[id];
        o->sub = (int32_t)dt;
        o->i = numel;
        o->s = ks;
        o->len = kl;
        o->ent = e;
    }
    return push(v, id);
}

// Reads a tuple of ints into out (at most GN_MAX_DIMS); returns its length or -1.
static int int_tuple(const vm *v, int32_t id, int64_t *out) {
    const pobj *t = &v->o[id];
    if (t->kind != O_TUPLE || t->n > GN_MAX_DIMS) return -1;
    for (int i = 0; i < t->n; i++) {
        const pobj *e = &v->o[t->items[i]];
        if (e->kind != O_INT) return -1;
        out[i] = e->i;
    }
    return t->n;
}

// _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad,
//                    backward_hooks[, metadata]) -> O_TENSOR
static gn_status rebuild_tensor(vm *v, const pobj *args) {
    if (args->n < 6 || args->n > 7)
        return bad(v, "_rebuild_tensor_v2 with the wrong number of arguments, expected 6 or 7");
    const pobj *sto = &v->o[args->items[0]], *off = &v->o[args->items[1]];
    if (sto->kind != O_STORAGE) return bad(v, "_rebuild_tensor_v2: first argument is not a storage, expected one");
    if (off->kind != O_INT || off->i < 0)
        return bad(v, "_rebuild_tensor_v2: storage offset is not an int >= 0, expected one");
    // also for empty views (no element is read, but the data pointer is formed)
    if (off->i > sto->i)
        return gn_err(GN_ERR_FORMAT, "%s: data.pkl offset %zu: tensor view starts at element %lld of a storage of "
                      "%lld elements, expected an offset inside it", v->path, v->at, (long long)off->i,
                      (long long)sto->i);
    tdesc d;
    memset(&d, 0, sizeof d);
    d.storage = args->items[0];
    d.offset = off->i;
    int nd = int_tuple(v, args->items[2], d.shape), ns = int_tuple(v, args->items[3], d.stride);
    if (nd < 0 || ns != nd)
        return bad(v, "_rebuild_tensor_v2: size/stride are not int tuples of equal length (at most 8), expected "
                   "matching shapes");
    d.ndim = nd;
    if (!gn_shape_nelem(d.shape, nd, &d.nelem))
        return bad(v, "_rebuild_tensor_v2: size has a negative dim or too many elements, expected a valid shape");
    // strided copies are made at load time: refuse broadcast (stride 0) views
    // larger than their storage rather than allocate without bound
    if (d.nelem > sto->i)
        return gn_err(GN_ERR_UNSUPPORTED, "%s: data.pkl offset %zu: tensor view of %lld elements over a storage of "
                      "%lld, expected at most as many as its storage (expanded views are not supported)",
                      v->path, v->at, (long long)d.nelem, (long long)sto->i);
    // the view's last element must lie inside the storage
    if (d.nelem > 0) {
        uint64_t last = (uint64_t)d.offset;
        for (int i = 0; i < nd; i++) {
            uint64_t t;
            if (d.stride[i] < 0) return bad(v, "_rebuild_tensor_v2: negative stride, expected strides >= 0");
            if (__builtin_mul_overflow((uint64_t)(d.shape[i] - 1), (uint64_t)d.stride[i], &t) ||
                __builtin_add_overflow(last, t, &last))
                return bad(v, "_rebuild_tensor_v2: view extent overflows, expected a view inside its storage");
        }
        if (last >= (uint64_t)sto->i) {
            char nb[64];
            return gn_err(GN_ERR_FORMAT, "%s: data.pkl offset %zu: tensor view reaches element %" PRIu64 " of "
                          "storage '%s', expected below its %lld elements", v->path, v->at, last,
                          printable(sto->s, sto->len, nb, sizeof nb), (long long)sto->i);
        }
    }
    v->td = ensure(v->td, &v->ctd, (int64_t)v->ntd + 1, sizeof *v->td);
    v->td[v->ntd] = d;
    int32_t id = new_obj(v, O_TENSOR);
    if (id >= 0) v->o[id].i = v->ntd++;
    return push(v, id);
}

// REDUCE: callable(*args) for the allowed callables.
static gn_status reduce(vm *v, int32_t fn, int32_t argt) {
    const pobj *f = &v->o[fn], *args = &v->o[argt];
    if (f->kind != O_GLOBAL) return bad(v, "REDUCE on a value that is not a known callable, expected a global");
    if (args->kind != O_TUPLE) return bad(v, "REDUCE arguments are not a tuple, expected a tuple");
    switch (f->sub) {
    case G_ODICT:
        if (args->n != 0) return bad(v, "OrderedDict with arguments, expected OrderedDict()");
        return push(v, new_obj(v, O_DICT));
    case G_REBUILD_V2:
        return rebuild_tensor(v, args);
    case G_REBUILD_PARAM:
    case G_REBUILD_PARAM_STATE:
        if (args->n < 1 || v->o[args->items[0]].kind != O_TENSOR)
            return bad(v, "_rebuild_parameter without a tensor, expected (tensor, requires_grad, hooks)");
        return push(v, args->items[0]);
    case G_SIZE:
        if (args->n != 1 || v->o[args->items[0]].kind != O_TUPLE)
            return bad(v, "torch.Size without a tuple, expected torch.Size((d0, d1, ...))");
        return push(v, args->items[0]);
    default:
        return bad(v, "REDUCE on a storage class, expected a callable");
    }
}

// ----------------------------------------------------------------------------
// pickle VM: the interpreter loop

#define MEMO_GET 1
#define MEMO_PUT 2

static gn_status memo_op(vm *v, uint64_t idx, int op) {
    gn_status st;
    int32_t id;
    if (op == MEMO_GET) {
        if (idx >= v->nmemo || v->memo[idx] < 0) {
            char m[96];
            snprintf(m, sizeof m, "memo key %" PRIu64 " was never stored, expected an earlier PUT", idx);
            return bad(v, m);
        }
        return push(v, v->memo[idx]);
    }
    if ((st = top(v, &id)) != GN_OK) return st;
    if (idx >= VM_MAX_MEMO) return bad(v, "memo key too large, expected a state dict of reasonable size");
    if (idx >= v->nmemo) {
        int32_t cap = (int32_t)v->nmemo;
        v->memo = ensure(v->memo, &cap, (int64_t)idx + 1, sizeof *v->memo);
        for (uint32_t k = v->nmemo; k < (uint32_t)cap; k++) v->memo[k] = -1;
        v->nmemo = (uint32_t)cap;
    }
    if (v->memo[idx] < 0) v->memo_set++;
    v->memo[idx] = id;
    return GN_OK;
}

// Runs the pickle to STOP; *result = the unpickled object.
static gn_status vm_run(vm *v, int32_t *result) {
    gn_status st = GN_OK;
    const uint8_t *p;
    int32_t a = 0, b = 0, k = 0;
    for (;;) {
        v->at = v->pos;
        if (v->pos >= v->n)
            return gn_err(GN_ERR_FORMAT, "%s: data.pkl offset %zu: pickle ends without STOP, expected a complete "
                          "pickle (truncated file?)", v->path, v->pos);
        uint8_t op = v->pk[v->pos++];
        switch (op) {
        case 0x80: // PROTO
            if (!(p = operand(v, 1, &st))) return st;
            if (p[0] < 2 || p[0] > 5) return bad(v, "pickle protocol outside 2..5, expected torch.save's protocol 2");
            break;
        case 0x95: // FRAME (protocol 4): an 8-byte frame length; frames are just a read hint
            if (!(p = operand(v, 8, &st))) return st;
            break;
        case '}': st = push(v, new_obj(v, O_DICT)); break;         // EMPTY_DICT
        case ']': st = push(v, new_obj(v, O_LIST)); break;         // EMPTY_LIST
        case ')': st = make_tuple(v, v->sp); break;                // EMPTY_TUPLE
        case '(': // MARK
            if (v->nm >= VM_MAX_MARKS) return bad(v, "too many nested MARKs, expected a shallow pickle");
            v->marks = ensure(v->marks, &v->cm, (int64_t)v->nm + 1, sizeof *v->marks);
            v->marks[v->nm++] = v->sp;
            break;
        case 'X': // BINUNICODE
            if (!(p = operand(v, 4, &st))) return st;
            st = push_str(v, O_STR, le32(p));
            break;
        case 0x8d: // BINUNICODE8
            if (!(p = operand(v, 8, &st))) return st;
            st = push_str(v, O_STR, le64(p));
            break;
        case 0x8c: // SHORT_BINUNICODE
        case 'U':  // SHORT_BINSTRING
            if (!(p = operand(v, 1, &st))) return st;
            st = push_str(v, O_STR, p[0]);
            break;
        case 'T': { // BINSTRING (signed 4-byte length)
            if (!(p = operand(v, 4, &st))) return st;
            int32_t n = (int32_t)le32(p);
            if (n < 0) return bad(v, "BINSTRING with a negative length, expected >= 0");
            st = push_str(v, O_STR, (uint64_t)n);
            break;
        }
        case 'B': // BINBYTES
            if (!(p = operand(v, 4, &st))) return st;
            st = push_str(v, O_BYTES, le32(p));
            break;
        case 'C': // SHORT_BINBYTES
            if (!(p = operand(v, 1, &st))) return st;
            st = push_str(v, O_BYTES, p[0]);
            break;
        case 0x8e: // BINBYTES8
            if (!(p = operand(v, 8, &st))) return st;
            st = push_str(v, O_BYTES, le64(p));
            break;
        case 'q': // BINPUT
            if (!(p = operand(v, 1, &st))) return st;
            st = memo_op(v, p[0], MEMO_PUT);
            break;
        case 'r': // LONG_BINPUT
            if (!(p = operand(v, 4, &st))) return st;
            st = memo_op(v, le32(p), MEMO_PUT);
            break;
        case 0x94: // MEMOIZE
            st = memo_op(v, v->memo_set, MEMO_PUT);
            break;
        case 'h': // BINGET
            if (!(p = operand(v, 1, &st))) return st;
            st = memo_op(v, p[0], MEMO_GET);
            break;
        case 'j': // LONG_BINGET
            if (!(p = operand(v, 4, &st))) return st;
            st = memo_op(v, le32(p), MEMO_GET);
            break;
        case 'J': // BININT
            if (!(p = operand(v, 4, &st))) return st;
            st = push_int(v, O_INT, (int32_t)le32(p));
            break;
        case 'K': // BININT1
            if (!(p = operand(v, 1, &st))) return st;
            st = push_int(v, O_INT, p[0]);
            break;
        case 'M': // BININT2
            if (!(p = operand(v, 2, &st))) return st;
            st = push_int(v, O_INT, le16(p));
            break;
        case 0x8a: // LONG1
        case 0x8b: { // LONG4
            uint64_t n;
            if (op == 0x8a) { if (!(p = operand(v, 1, &st))) return st; n = p[0]; }
            else {
                if (!(p = operand(v, 4, &st))) return st;
                int32_t s = (int32_t)le32(p);
                if (s < 0) return bad(v, "LONG4 with a negative length, expected >= 0");
                n = (uint64_t)s;
            }
            if (n > 8) return bad(v, "integer wider than 64 bits, expected a size or offset");
            if (!(p = operand(v, (size_t)n, &st))) return st;
            uint64_t u = 0;
            for (uint64_t i = 0; i < n; i++) u |= (uint64_t)p[i] << (8 * i);
            if (n > 0 && n < 8 && (p[n - 1] & 0x80)) u |= ~(uint64_t)0 << (8 * n); // sign-extend
            st = push_int(v, O_INT, (int64_t)u);
            break;
        }
        case 'N': st = push(v, new_obj(v, O_NONE)); break;        // NONE
        case 0x88: st = push_int(v, O_BOOL, 1); break;             // NEWTRUE
        case 0x89: st = push_int(v, O_BOOL, 0); break;             // NEWFALSE
        case 'G': { // BINFLOAT: 8-byte big-endian double
            if (!(p = operand(v, 8, &st))) return st;
            uint64_t u = 0;
            for (int i = 0; i < 8; i++) u = (u << 8) | p[i];
            int32_t id = new_obj(v, O_FLOAT);
            if (id >= 0) memcpy(&v->o[id].f, &u, 8);
            st = push(v, id);
            break;
        }
        case 0x85: case 0x86: case 0x87: // TUPLE1/2/3
            k = v->sp - (op - 0x84);
            if (k < fence(v)) return bad(v, "stack underflow in TUPLE1/2/3, expected enough items");
            st = make_tuple(v, k);
            break;
        case 't': // TUPLE
            if ((st = pop_mark(v, &k)) != GN_OK) return st;
            st = make_tuple(v, k);
            break;
        case 's': // SETITEM
            if (v->sp - fence(v) < 3) return bad(v, "stack underflow in SETITEM, expected dict, key, value");
            st = add_items(v, v->stk[v->sp - 3], v->sp - 2, O_DICT);
            break;
        case 'u': // SETITEMS
            if ((st = pop_mark(v, &k)) != GN_OK) return st;
            if (k <= fence(v)) return bad(v, "SETITEMS without a dict below its MARK, expected one");
            st = add_items(v, v->stk[k - 1], k, O_DICT);
            break;
        case 'a': // APPEND
            if (v->sp - fence(v) < 2) return bad(v, "stack underflow in APPEND, expected list, value");
            st = add_items(v, v->stk[v->sp - 2], v->sp - 1, O_LIST);
            break;
        case 'e': // APPENDS
            if ((st = pop_mark(v, &k)) != GN_OK) return st;
            if (k <= fence(v)) return bad(v, "APPENDS without a list below its MARK, expected one");
            st = add_items(v, v->stk[k - 1], k, O_LIST);
            break;
        case 'c': { // GLOBAL: "module\nname\n"
            const uint8_t *end = v->pk + v->n, *m = v->pk + v->pos;
            const uint8_t *nl1 = memchr(m, '\n', (size_t)(end - m));
            const uint8_t *nl2 = nl1 ? memchr(nl1 + 1, '\n', (size_t)(end - nl1 - 1)) : NULL;
            if (!nl2) return bad(v, "GLOBAL without two newline-terminated names, expected 'module\\nname\\n'");
            v->pos = (size_t)(nl2 + 1 - v->pk);
            st = push_global(v, (const char *)m, (size_t)(nl1 - m), (const char *)nl1 + 1, (size_t)(nl2 - nl1 - 1));
            break;
        }
        case 0x93: { // STACK_GLOBAL
            if ((st = pop(v, &b)) != GN_OK || (st = pop(v, &a)) != GN_OK) return st;
            const pobj *mo = &v->o[a], *na = &v->o[b];
            if (mo->kind != O_STR || na->kind != O_STR)
                return bad(v, "STACK_GLOBAL on non-strings, expected module and name strings");
            st = push_global(v, mo->s, mo->len, na->s, na->len);
            break;
        }
        case 'R': // REDUCE
            if ((st = pop(v, &b)) != GN_OK || (st = pop(v, &a)) != GN_OK) return st;
            st = reduce(v, a, b);
            break;
        case 0x81: // NEWOBJ: cls.__new__(cls, *args)
            if ((st = pop(v, &b)) != GN_OK || (st = pop(v, &a)) != GN_OK) return st;
            if (v->o[a].kind != O_GLOBAL || v->o[a].sub != G_ODICT)
                return bad(v, "NEWOBJ on a class other than OrderedDict, expected a state dict");
            st = push(v, new_obj(v, O_DICT));
            break;
        case 'b': // BUILD: obj.__setstate__(state); the state (e.g. _metadata) is not needed
            if ((st = pop(v, &b)) != GN_OK) return st;
            st = top(v, &a);
            break;
        case 'Q': // BINPERSID
            if ((st = pop(v, &a)) != GN_OK) return st;
            st = persistent_load(v, a);
            break;
        case '0': st = pop(v, &a); break;                           // POP
        case '1': st = pop_mark(v, &k); if (st == GN_OK) v->sp = k; break; // POP_MARK
        case '2': // DUP
            if ((st = top(v, &a)) != GN_OK) return st;
            st = push(v, a);
            break;
        case '.': // STOP
            if ((st = pop(v, result)) != GN_OK) return st;
            return GN_OK;
        default:
            return gn_err(GN_ERR_UNSUPPORTED, "%s: data.pkl offset %zu: unsupported pickle opcode 0x%02x, expected "
                          "the opcodes torch.save writes for a state dict", v->path, v->at, op);
        }
        if (st != GN_OK) return st;
    }
}

// ----------------------------------------------------------------------------
// tensors out of the unpickled dict

// Copies a strided view (elements of es bytes) into dst, row-major.
static void gather(uint8_t *dst, const uint8_t *src, size_t es, const tdesc *d) {
    int nd = d->ndim;
    int64_t idx[GN_MAX_DIMS] = {0};
    int64_t inner = nd ? d->shape[nd - 1] : 1, istr = nd ? d->stride[nd - 1] : 0, off = d->offset;
    for (int64_t done = 0; done < d->nelem; done += inner) {
        for (int64_t j = 0; j < inner; j++)
            memcpy(dst + (size_t)(done + j) * es, src + (size_t)(off + j * istr) * es, es);
        for (int i = nd - 2; i >= 0; i--) {
            off += d->stride[i];
            if (++idx[i] < d->shape[i]) break;
            off -= d->stride[i] * d->shape[i];
            idx[i] = 0;
        }
    }
}

static int is_contiguous(const tdesc *d) {
    if (d->nelem == 0) return 1;
    int64_t want = 1;
    for (int i = d->ndim - 1; i >= 0; i--) {
        if (d->shape[i] != 1 && d->stride[i] != want) return 0;
        want *= d->shape[i];
    }
    return 1;
}

// Adds each (str key -> tensor) of the unpickled dict to the table.
static gn_status collect(vm *v, int32_t root, gn_tensor_table *tt, const char *file) {
    const pobj *d = &v->o[root];
    if (d->kind != O_DICT)
        return gn_err(GN_ERR_FORMAT, "%s: data.pkl holds a %s, expected a dict of tensors (a state dict)",
                      v->path, kind_name[d->kind]);
    char nb[96];
    for (int32_t i = 0; i < d->n; i++) {
        const pobj *key = &v->o[d->items[2 * i]], *val = &v->o[d->items[2 * i + 1]];
        if (key->kind != O_STR || memchr(key->s, 0, key->len)) {
            gn_log(GN_LOG_WARN, "%s: skipping state-dict entry %d: its key is a %s, not a name", v->path, i,
                   kind_name[key->kind]);
            continue;
        }
        if (val->kind != O_TENSOR) {
            gn_log(GN_LOG_WARN, "%s: skipping '%s': a %s, not a tensor", v->path,
                   printable(key->s, key->len, nb, sizeof nb), kind_name[val->kind]);
            continue;
        }
        tdesc *td = &v->td[val->i];
        const pobj *sto = &v->o[td->storage];
        gn_dtype dt = (gn_dtype)sto->sub;
        size_t es = gn_dtype_nbytes(dt, 1);
        const uint8_t *base = v->z->p + sto->ent->off;
        if (!td->data) {
            if (is_contiguous(td)) {
                td->data = base + (size_t)td->offset * es;
            } else {
                gn_status st = gn_check_alloc(v->path, "a copy of a strided tensor view", (uint64_t)td->nelem * es);
                if (st != GN_OK) return st;
                uint8_t *buf = gn_malloc((size_t)td->nelem * es);
                gather(buf, base, es, td);
                gn_tt_add_owned(tt, buf);
                td->data = buf;
            }
        }
        gn_tensor *t = gn_tt_push(tt);
        t->name = gn_strndup(key->s, key->len);
        t->file = file;
        t->dtype = dt;
        t->ndim = td->ndim;
        memcpy(t->shape, td->shape, sizeof t->shape);
        t->nelem = td->nelem;
        t->nbytes = (size_t)td->nelem * es;
        t->data = td->data;
    }
    return GN_OK;
}

// ----------------------------------------------------------------------------
// entry point

gn_status gn_torchbin_load(gn_tensor_table *tt, const char *path) {
    gn_tt_mark mk = gn_tt_mark_now(tt);
    gn_mmap m;
    gn_status st = gn_mmap_open(&m, path);
    if (st != GN_OK) return st;
    zip z = {.path = path, .p = m.data, .size = m.size};
    vm v;
    memset(&v, 0, sizeof v);
    if ((st = zip_open(&z)) != GN_OK) goto fail;

    // <prefix>/data.pkl: the first entry (in directory order) named */data.pkl
    // with exactly one folder level
    const zentry *pk = NULL;
    for (int i = 0; i < z.n; i++) {
        const zentry *e = &z.e[i];
        if (e->name_len < 10 || memcmp(e->name + e->name_len - 9, "/data.pkl", 9) != 0) continue;
        if (memchr(e->name, '/', e->name_len - 9)) continue;
        if (!pk || e->off < pk->off) pk = e;
    }
    if (!pk) {
        st = gn_err(GN_ERR_FORMAT, "%s: no '<folder>/data.pkl' entry in the zip, expected a checkpoint written by "
                    "torch.save", path);
        goto fail;
    }
    if ((st = zip_check_stored(&z, pk)) != GN_OK) goto fail;
    size_t plen = pk->name_len - 8; // keeps the '/'
    const zentry *bo = NULL;
    {
        char name[600];
        if (plen + 9 < sizeof name) {
            memcpy(name, pk->name, plen);
            memcpy(name + plen, "byteorder", 9);
            bo = zip_find(&z, name, plen + 9);
        }
    }
    if (bo && !(bo->method == 0 && bo->size == 6 && memcmp(m.data + bo->off, "little", 6) == 0)) {
        st = gn_err(GN_ERR_UNSUPPORTED, "%s: byteorder entry is not 'little', expected a little-endian checkpoint",
                    path);
        goto fail;
    }
    // the VM makes at most one object and one stack/container slot per pickle
    // byte (and a memo of up to VM_MAX_MEMO slots): bound that up front
    if ((st = gn_check_alloc(path, "unpickling data.pkl", (uint64_t)pk->size * (sizeof(pobj) + 3 * sizeof(int32_t)) +
                             (uint64_t)VM_MAX_MEMO * sizeof(int32_t))) != GN_OK)
        goto fail;
    v.path = path;
    v.pk = m.data + pk->off;
    v.n = (size_t)pk->size;
    v.z = &z;
    v.prefix = pk->name;
    v.prefix_len = plen;
    int32_t root;
    if ((st = vm_run(&v, &root)) != GN_OK) goto fail;
    const char *file = gn_tt_add_file(tt, path);
    if ((st = collect(&v, root, tt, file)) != GN_OK) goto fail;
    if ((st = gn_tt_check_dups(tt, mk.n, path)) != GN_OK) goto fail;
    vm_free(&v);
    free(z.e);
    gn_tt_add_map(tt, &m);
    return GN_OK;
fail:
    vm_free(&v);
    free(z.e);
    gn_tt_rollback(tt, mk);
    gn_mmap_close(&m);
    return st;
}
