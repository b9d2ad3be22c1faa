/*
 * lora.h — PEFT LoRA adapters on a LLaMA model: y = W0 x + s * B (A x), with
 * s = lora_alpha / r (or lora_alpha / sqrt(r) with use_rslora).
 */
#ifndef GN_LORA_H
#define GN_LORA_H

#include "../model/llama.h"

// The adapter structs and gn_lora_apply live in model/llama.h: the forward pass
// applies them; this module reads and writes adapter files.

#endif
