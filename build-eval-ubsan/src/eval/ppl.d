build-eval-ubsan/src/eval/ppl.o: src/eval/ppl.c src/eval/eval.h \
 include/guanaco.h src/eval/../core/common.h
src/eval/eval.h:
include/guanaco.h:
src/eval/../core/common.h:
