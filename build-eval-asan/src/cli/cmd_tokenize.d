build-eval-asan/src/cli/cmd_tokenize.o: src/cli/cmd_tokenize.c \
 src/cli/cli.h include/guanaco.h src/core/common.h
src/cli/cli.h:
include/guanaco.h:
src/core/common.h:
