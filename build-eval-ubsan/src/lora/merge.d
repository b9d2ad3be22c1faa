build-eval-ubsan/src/lora/merge.o: src/lora/merge.c src/lora/lora.h \
 src/lora/../model/llama.h src/lora/../model/../formats/gguf.h \
 src/lora/../model/../formats/tensors.h \
 src/lora/../model/../formats/../core/common.h include/guanaco.h \
 src/lora/../model/../tensor/kernels.h \
 src/lora/../model/../tensor/../core/common.h \
 src/lora/../model/../quant/nf4.h \
 src/lora/../model/../quant/../formats/tensors.h
src/lora/lora.h:
src/lora/../model/llama.h:
src/lora/../model/../formats/gguf.h:
src/lora/../model/../formats/tensors.h:
src/lora/../model/../formats/../core/common.h:
include/guanaco.h:
src/lora/../model/../tensor/kernels.h:
src/lora/../model/../tensor/../core/common.h:
src/lora/../model/../quant/nf4.h:
src/lora/../model/../quant/../formats/tensors.h:
