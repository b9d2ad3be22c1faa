/*
 * kvcache.h — the KV cache layout of a session (model-internal; see llama.h's gn_session).
 */
#ifndef GN_KVCACHE_H
#define GN_KVCACHE_H

#include "llama.h"

// Where key (position j, KV head h, dim d) of a layer lies in s's cache, counted from the
// layer's start: head-major (KV head h's kv_seq positions one run of kv_seq * hs elements),
// and inside a head's run tiled as the decode kernel of its dtype reads it, the tiles one
// after another (tile stride GN_KT * hs: gn_kv_tile_stride). Head-major, a head's keys and
// values are two long runs, which the decode attention reads at 23-25 GB/s on two Zen 4 cores
// against 21-22 with the tiles of all heads interleaved (7B layer, 512 positions).
static inline int64_t gn_kv_tile_stride(int hs) { return (int64_t)GN_KT * hs; }
static inline size_t key_at(const gn_session *s, int j, int h, int d, int hs) {
    const int64_t ts = gn_kv_tile_stride(hs), head = (int64_t)h * s->kv_seq * hs;
    return (size_t)(head + (s->kv_bf16 ? gn_kt_at(j, 0, d, hs, ts) : gn_kt_at_f32(j, 0, d, hs, ts)));
}
// The same for a value: tiled for either dtype (gn_vt_at)
static inline size_t value_at(const gn_session *s, int j, int h, int d, int hs) {
    return (size_t)((int64_t)h * s->kv_seq * hs + gn_vt_at(j, 0, d, hs, gn_kv_tile_stride(hs)));
}

// Writes position j of layer l: keys and values into their tiles (rounded to bf16 in a bf16 cache).
void gn_kv_cache_store(gn_session *s, int l, int j, const float *k, const float *v, int hs, int nkv);

#endif
