build-eval-ubsan/src/tensor/kernels_cpu.o: src/tensor/kernels_cpu.c \
 src/tensor/kernels.h src/tensor/../core/common.h include/guanaco.h \
 /usr/include/x86_64-linux-gnu/openblas-pthread/cblas.h \
 /usr/include/x86_64-linux-gnu/openblas-pthread/openblas_config.h
src/tensor/kernels.h:
src/tensor/../core/common.h:
include/guanaco.h:
/usr/include/x86_64-linux-gnu/openblas-pthread/cblas.h:
/usr/include/x86_64-linux-gnu/openblas-pthread/openblas_config.h:
