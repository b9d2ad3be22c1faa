build-eval-asan/src/eval/mmlu.o: src/eval/mmlu.c src/eval/eval.h \
 include/guanaco.h src/eval/../core/common.h
src/eval/eval.h:
include/guanaco.h:
src/eval/../core/common.h:
