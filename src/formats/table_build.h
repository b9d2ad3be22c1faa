/*
 * table_build.h — private to src/formats/: how the loaders (safetensors.c,
 * torchbin.c, gguf.c) append to a gn_tensor_table and undo a half-loaded file.
 * Implemented in tensors.c. Not part of the library's contract; callers outside
 * src/formats/ use tensors.h only.
 */
#ifndef GN_TABLE_BUILD_H
#define GN_TABLE_BUILD_H

#include "tensors.h"

// Sizes of the table's arrays before a file is loaded, so a failed load can be
// undone (gn_tt_rollback) and leave the table exactly as it was.
typedef struct { int n, nmaps, nowned, nfiles; } gn_tt_mark;

gn_tt_mark gn_tt_mark_now(const gn_tensor_table *tt);
// Frees what was added after the mark (names, buffers, maps, file paths).
void gn_tt_rollback(gn_tensor_table *tt, gn_tt_mark mk);

// Stores an owned copy of path; returns it (for gn_tensor.file).
const char *gn_tt_add_file(gn_tensor_table *tt, const char *path);
// Appends a zeroed entry and returns it (valid until the next push).
gn_tensor *gn_tt_push(gn_tensor_table *tt);
// Takes over a mapping (*m is cleared) / a malloc'd buffer.
void gn_tt_add_map(gn_tensor_table *tt, gn_mmap *m);
void gn_tt_add_owned(gn_tensor_table *tt, void *p);

// GN_ERR_FORMAT naming `path` when a name in [from, n) equals any other name
// in the table. O(n log n).
gn_status gn_tt_check_dups(const gn_tensor_table *tt, int from, const char *path);

// Product of the dims into *nelem. Returns 0 when a dim is negative or the
// product (ignoring zero dims, so {0, 2^62, 2^62} is refused too) overflows.
int gn_shape_nelem(const int64_t *shape, int ndim, int64_t *nelem);

#endif
