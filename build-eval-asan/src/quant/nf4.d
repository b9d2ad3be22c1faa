build-eval-asan/src/quant/nf4.o: src/quant/nf4.c src/quant/nf4.h \
 src/quant/../formats/tensors.h src/quant/../formats/../core/common.h \
 include/guanaco.h
src/quant/nf4.h:
src/quant/../formats/tensors.h:
src/quant/../formats/../core/common.h:
include/guanaco.h:
