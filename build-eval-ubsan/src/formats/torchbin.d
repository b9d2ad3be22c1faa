build-eval-ubsan/src/formats/torchbin.o: src/formats/torchbin.c \
 src/formats/tensors.h src/formats/../core/common.h include/guanaco.h \
 src/formats/table_build.h
src/formats/tensors.h:
src/formats/../core/common.h:
include/guanaco.h:
src/formats/table_build.h:
