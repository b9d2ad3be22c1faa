build-eval-asan/src/train/data.o: src/train/data.c src/train/data.h \
 src/train/../core/common.h include/guanaco.h
src/train/data.h:
src/train/../core/common.h:
include/guanaco.h:
