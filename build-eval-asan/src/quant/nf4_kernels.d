build-eval-asan/src/quant/nf4_kernels.o: src/quant/nf4_kernels.c \
 src/quant/nf4.h src/quant/../formats/tensors.h \
 src/quant/../formats/../core/common.h include/guanaco.h \
 /usr/include/x86_64-linux-gnu/openblas-pthread/cblas.h \
 /usr/include/x86_64-linux-gnu/openblas-pthread/openblas_config.h \
 src/quant/../tensor/kernels.h src/quant/../tensor/../core/common.h
src/quant/nf4.h:
src/quant/../formats/tensors.h:
src/quant/../formats/../core/common.h:
include/guanaco.h:
/usr/include/x86_64-linux-gnu/openblas-pthread/cblas.h:
/usr/include/x86_64-linux-gnu/openblas-pthread/openblas_config.h:
src/quant/../tensor/kernels.h:
src/quant/../tensor/../core/common.h:
