build-eval-ubsan/src/eval/judge.o: src/eval/judge.c src/eval/eval.h \
 include/guanaco.h src/eval/../core/common.h
src/eval/eval.h:
include/guanaco.h:
src/eval/../core/common.h:
