build-eval-ubsan/src/cli/cmd_eval.o: src/cli/cmd_eval.c \
 src/cli/eval_cli.h src/cli/cli.h include/guanaco.h src/core/common.h \
 src/core/plot.h src/eval/eval.h
src/cli/eval_cli.h:
src/cli/cli.h:
include/guanaco.h:
src/core/common.h:
src/core/plot.h:
src/eval/eval.h:
