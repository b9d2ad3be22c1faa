build-eval/src/formats/gguf_write.o: src/formats/gguf_write.c \
 src/formats/gguf.h src/formats/tensors.h src/formats/../core/common.h \
 include/guanaco.h
src/formats/gguf.h:
src/formats/tensors.h:
src/formats/../core/common.h:
include/guanaco.h:
