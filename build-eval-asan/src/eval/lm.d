build-eval-asan/src/eval/lm.o: src/eval/lm.c src/eval/eval.h \
 include/guanaco.h src/eval/../core/common.h
src/eval/eval.h:
include/guanaco.h:
src/eval/../core/common.h:
