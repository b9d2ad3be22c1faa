build-eval-asan/src/formats/safetensors.o: src/formats/safetensors.c \
 src/formats/tensors.h src/formats/../core/common.h include/guanaco.h \
 src/formats/table_build.h
src/formats/tensors.h:
src/formats/../core/common.h:
include/guanaco.h:
src/formats/table_build.h:
