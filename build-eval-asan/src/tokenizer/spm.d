build-eval-asan/src/tokenizer/spm.o: src/tokenizer/spm.c \
 src/tokenizer/tok_internal.h src/core/common.h include/guanaco.h
src/tokenizer/tok_internal.h:
src/core/common.h:
include/guanaco.h:
