build-eval-ubsan/src/generate/generate.o: src/generate/generate.c \
 src/generate/../model/llama.h src/generate/../model/../formats/gguf.h \
 src/generate/../model/../formats/tensors.h \
 src/generate/../model/../formats/../core/common.h include/guanaco.h \
 src/generate/../model/../tensor/kernels.h \
 src/generate/../model/../tensor/../core/common.h \
 src/generate/../model/../quant/nf4.h \
 src/generate/../model/../quant/../formats/tensors.h
src/generate/../model/llama.h:
src/generate/../model/../formats/gguf.h:
src/generate/../model/../formats/tensors.h:
src/generate/../model/../formats/../core/common.h:
include/guanaco.h:
src/generate/../model/../tensor/kernels.h:
src/generate/../model/../tensor/../core/common.h:
src/generate/../model/../quant/nf4.h:
src/generate/../model/../quant/../formats/tensors.h:
