/*
 * tokenizer.h — internal entry points of the tokenizer (the public API is in
 * guanaco.h). The model loader hands an already opened GGUF over so the file
 * is parsed and mapped once.
 */
#ifndef GN_TOKENIZER_H
#define GN_TOKENIZER_H

#include "../formats/gguf.h"

// Builds a tokenizer from the tokenizer.ggml.* keys of an opened GGUF
// (model "llama" = SentencePiece, "gpt2" = byte-level BPE). Copies what it
// needs, so g may be freed afterwards.
gn_status gn_tokenizer_from_gguf(gn_tokenizer **out, const gn_gguf *g);

#endif
