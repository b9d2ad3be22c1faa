build-eval-ubsan/src/eval/csv.o: src/eval/csv.c src/eval/eval.h \
 include/guanaco.h src/eval/../core/common.h
src/eval/eval.h:
include/guanaco.h:
src/eval/../core/common.h:
