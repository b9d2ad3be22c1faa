build-eval-asan/src/tokenizer/tok_gguf.o: src/tokenizer/tok_gguf.c \
 src/tokenizer/tok_internal.h src/core/common.h include/guanaco.h \
 src/tokenizer/../formats/gguf.h src/tokenizer/../formats/tensors.h \
 src/tokenizer/../formats/../core/common.h src/tokenizer/tokenizer.h
src/tokenizer/tok_internal.h:
src/core/common.h:
include/guanaco.h:
src/tokenizer/../formats/gguf.h:
src/tokenizer/../formats/tensors.h:
src/tokenizer/../formats/../core/common.h:
src/tokenizer/tokenizer.h:
