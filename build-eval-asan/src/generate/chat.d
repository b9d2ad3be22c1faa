build-eval-asan/src/generate/chat.o: src/generate/chat.c \
 src/generate/../core/common.h include/guanaco.h
src/generate/../core/common.h:
include/guanaco.h:
