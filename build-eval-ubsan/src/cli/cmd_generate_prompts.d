build-eval-ubsan/src/cli/cmd_generate_prompts.o: \
 src/cli/cmd_generate_prompts.c src/cli/eval_cli.h src/cli/cli.h \
 include/guanaco.h src/core/common.h
src/cli/eval_cli.h:
src/cli/cli.h:
include/guanaco.h:
src/core/common.h:
