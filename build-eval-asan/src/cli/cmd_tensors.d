build-eval-asan/src/cli/cmd_tensors.o: src/cli/cmd_tensors.c \
 src/cli/cli.h include/guanaco.h src/formats/gguf.h src/formats/tensors.h \
 src/formats/../core/common.h src/formats/tensors.h
src/cli/cli.h:
include/guanaco.h:
src/formats/gguf.h:
src/formats/tensors.h:
src/formats/../core/common.h:
src/formats/tensors.h:
