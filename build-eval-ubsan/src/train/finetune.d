build-eval-ubsan/src/train/finetune.o: src/train/finetune.c \
 src/train/../model/llama.h src/train/../model/../formats/gguf.h \
 src/train/../model/../formats/tensors.h \
 src/train/../model/../formats/../core/common.h include/guanaco.h \
 src/train/../model/../tensor/kernels.h \
 src/train/../model/../tensor/../core/common.h \
 src/train/../model/../quant/nf4.h \
 src/train/../model/../quant/../formats/tensors.h src/train/data.h \
 src/train/../core/common.h src/train/../core/plot.h
src/train/../model/llama.h:
src/train/../model/../formats/gguf.h:
src/train/../model/../formats/tensors.h:
src/train/../model/../formats/../core/common.h:
include/guanaco.h:
src/train/../model/../tensor/kernels.h:
src/train/../model/../tensor/../core/common.h:
src/train/../model/../quant/nf4.h:
src/train/../model/../quant/../formats/tensors.h:
src/train/data.h:
src/train/../core/common.h:
src/train/../core/plot.h:
