build-eval-ubsan/src/train/data_dump.o: src/train/data_dump.c \
 src/train/data.h src/train/../core/common.h include/guanaco.h
src/train/data.h:
src/train/../core/common.h:
include/guanaco.h:
