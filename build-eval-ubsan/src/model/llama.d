build-eval-ubsan/src/model/llama.o: src/model/llama.c src/model/llama.h \
 src/model/../formats/gguf.h src/model/../formats/tensors.h \
 src/model/../formats/../core/common.h include/guanaco.h \
 src/model/../tensor/kernels.h src/model/../tensor/../core/common.h \
 src/model/../quant/nf4.h src/model/../quant/../formats/tensors.h \
 src/model/../tokenizer/tokenizer.h \
 src/model/../tokenizer/../formats/gguf.h
src/model/llama.h:
src/model/../formats/gguf.h:
src/model/../formats/tensors.h:
src/model/../formats/../core/common.h:
include/guanaco.h:
src/model/../tensor/kernels.h:
src/model/../tensor/../core/common.h:
src/model/../quant/nf4.h:
src/model/../quant/../formats/tensors.h:
src/model/../tokenizer/tokenizer.h:
src/model/../tokenizer/../formats/gguf.h:
