build-eval-asan/src/core/common.o: src/core/common.c src/core/common.h \
 include/guanaco.h
src/core/common.h:
include/guanaco.h:
