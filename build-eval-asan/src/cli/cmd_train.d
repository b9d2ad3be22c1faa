build-eval-asan/src/cli/cmd_train.o: src/cli/cmd_train.c src/cli/cli.h \
 include/guanaco.h src/formats/tensors.h src/formats/../core/common.h \
 src/model/llama.h src/model/../formats/gguf.h \
 src/model/../formats/tensors.h src/model/../tensor/kernels.h \
 src/model/../tensor/../core/common.h src/model/../quant/nf4.h \
 src/model/../quant/../formats/tensors.h
src/cli/cli.h:
include/guanaco.h:
src/formats/tensors.h:
src/formats/../core/common.h:
src/model/llama.h:
src/model/../formats/gguf.h:
src/model/../formats/tensors.h:
src/model/../tensor/kernels.h:
src/model/../tensor/../core/common.h:
src/model/../quant/nf4.h:
src/model/../quant/../formats/tensors.h:
