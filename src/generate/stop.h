/*
 * stop.h — stop strings, shared by gn_generate and the server's batched engine.
 *
 * Text that may be the start of a stop string is held back from the caller until
 * the next piece says whether it is; a match cuts the text right before it.
 */
#ifndef GN_STOP_H
#define GN_STOP_H

#include <stddef.h> // size_t

// Length of the longest suffix of text[0..len) that is a proper prefix of one of
// the n stop strings: the bytes to hold back for now.
size_t gn_stop_held(const char *text, size_t len, const char *const *stop, int n);

// Earliest match of any of the n stop strings in text[0..len), each searched from
// `from` - its length (from: the length before the newest piece, so a match may
// straddle it): 1 with the offset in *at, or 0. Empty stop strings never match.
int gn_stop_find(const char *text, size_t len, size_t from, const char *const *stop, int n, size_t *at);

#endif
