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
// The same for a value: tiled for either dtype (gn_vt_at)
static inline size_t value_at(int j, int h, int d, int hs, int kvd) {
    return (size_t)gn_vt_at(j, h, d, hs, (int64_t)GN_KT * kvd);
}

// Writes position j of layer l: keys and values into their tiles (rounded to bf16 in a bf16 cache).
void gn_kv_cache_store(gn_session *s, int l, int j, const float *k, const float *v, int hs, int nkv);

#endif
