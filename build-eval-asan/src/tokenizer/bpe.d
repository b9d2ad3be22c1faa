build-eval-asan/src/tokenizer/bpe.o: src/tokenizer/bpe.c \
 src/tokenizer/tok_internal.h src/core/common.h include/guanaco.h
src/tokenizer/tok_internal.h:
src/core/common.h:
include/guanaco.h:
