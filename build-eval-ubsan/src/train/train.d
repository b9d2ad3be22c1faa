build-eval-ubsan/src/train/train.o: src/train/train.c \
 src/train/../model/llama.h src/train/../model/../formats/gguf.h \
 src/train/../model/../formats/tensors.h \
 src/train/../model/../formats/../core/common.h include/guanaco.h \
 src/train/../model/../tensor/kernels.h \
 src/train/../model/../tensor/../core/common.h \
 src/train/../model/../quant/nf4.h \
 src/train/../model/../quant/../formats/tensors.h src/train/data.h \
 src/train/../core/common.h \
 /usr/include/x86_64-linux-gnu/openblas-pthread/cblas.h \
 /usr/include/x86_64-linux-gnu/openblas-pthread/openblas_config.h
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
/usr/include/x86_64-linux-gnu/openblas-pthread/cblas.h:
/usr/include/x86_64-linux-gnu/openblas-pthread/openblas_config.h:
