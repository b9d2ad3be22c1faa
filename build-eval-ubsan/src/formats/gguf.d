build-eval-ubsan/src/formats/gguf.o: src/formats/gguf.c \
 src/formats/gguf.h src/formats/tensors.h src/formats/../core/common.h \
 include/guanaco.h src/formats/table_build.h
src/formats/gguf.h:
src/formats/tensors.h:
src/formats/../core/common.h:
include/guanaco.h:
src/formats/table_build.h:
