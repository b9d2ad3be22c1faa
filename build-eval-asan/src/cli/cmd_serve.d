build-eval-asan/src/cli/cmd_serve.o: src/cli/cmd_serve.c src/cli/cli.h \
 include/guanaco.h src/core/common.h src/server/server.h
src/cli/cli.h:
include/guanaco.h:
src/core/common.h:
src/server/server.h:
