build-eval-ubsan/src/formats/tensors.o: src/formats/tensors.c \
 src/formats/tensors.h src/formats/../core/common.h include/guanaco.h \
 src/formats/table_build.h
src/formats/tensors.h:
src/formats/../core/common.h:
include/guanaco.h:
src/formats/table_build.h:
