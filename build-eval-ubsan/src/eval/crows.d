build-eval-ubsan/src/eval/crows.o: src/eval/crows.c src/eval/eval.h \
 include/guanaco.h src/eval/../core/common.h
src/eval/eval.h:
include/guanaco.h:
src/eval/../core/common.h:
