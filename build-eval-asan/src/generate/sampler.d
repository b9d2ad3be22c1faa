build-eval-asan/src/generate/sampler.o: src/generate/sampler.c \
 src/generate/../core/common.h include/guanaco.h
src/generate/../core/common.h:
include/guanaco.h:
