build-eval-ubsan/src/cli/main.o: src/cli/main.c src/cli/cli.h \
 include/guanaco.h src/core/common.h
src/cli/cli.h:
include/guanaco.h:
src/core/common.h:
