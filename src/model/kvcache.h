/*
 * kvcache.h — the KV cache layout of a session (model-internal; see llama.h's gn_session).
 */
#ifndef GN_KVCACHE_H
#define GN_KVCACHE_H

#include "llama.h"

// Where key (position j, KV head h, dim d) of a layer lies in s's cache, counted from the
// layer's start: tiled as the decode kernel of its dtype reads it. (Either layout puts KV
// head h's part of a tile at h * GN_KT * hs.)
static inline size_t key_at(const gn_session *s, int j, int h, int d, int hs, int kvd) {
    const int64_t ts = (int64_t)GN_KT * kvd;
    return (size_t)(s->kv_bf16 ? gn_kt_at(j, h, d, hs, ts) : gn_kt_at_f32(j, h, d, hs, ts));
}

// Writes position j of layer l: keys into their tiles, values row-major (rounded to bf16 in a bf16 cache).
void gn_kv_cache_store(gn_session *s, int l, int j, const float *k, const float *v, int hs, int nkv);

#endif
