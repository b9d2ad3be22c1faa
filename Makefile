# guanaco — build the library, the CLI and the C tests.
#   make              release build: build/libguanaco.a, build/guanaco
#   make test         the whole test suite (installs what it needs; see README)
#   make asan|ubsan   sanitizer builds in build-asan/ and build-ubsan/
#   make ctest        C unit tests only (release build)
# Knobs: NO_OMP=1, NATIVE=0 (default; dispatch picks SIMD at run time), CC=
CC ?= cc
BUILD ?= build
OPT ?= -O2
CFLAGS_BASE = -std=c11 -Wall -Wextra -Werror -Wno-unused-parameter -D_GNU_SOURCE -Iinclude -Isrc -g
LDLIBS = -lopenblas -lcjson -lpcre2-8 -lm -lpthread

ifneq ($(NO_OMP),1)
OMP_OK := $(shell echo 'int main(void){return 0;}' | $(CC) -fopenmp -x c - -o /dev/null 2>/dev/null && echo 1)
ifeq ($(OMP_OK),1)
CFLAGS_BASE += -fopenmp
LDFLAGS += -fopenmp
$(info ✓ OpenMP found)
else
$(info ✗ OpenMP not found, building single-threaded)
endif
endif
OPENBLAS_INC := $(shell pkg-config --cflags openblas 2>/dev/null || echo -I/usr/include/x86_64-linux-gnu/openblas-pthread)
CFLAGS_BASE += $(OPENBLAS_INC)

# optional libraries, announced like the OpenMP probe
ifneq ($(shell pkg-config --exists cairo 2>/dev/null && echo 1),)
CFLAGS_BASE += -DGN_HAVE_CAIRO $(shell pkg-config --cflags cairo)
LDLIBS += $(shell pkg-config --libs cairo)
$(info ✓ cairo found: PNG charts)
else
$(info ✗ cairo not found: no PNG charts (apt-get install libcairo2-dev))
endif
ifneq ($(shell pkg-config --exists libcurl 2>/dev/null && echo 1),)
CFLAGS_BASE += -DGN_HAVE_CURL
LDLIBS += $(shell pkg-config --libs libcurl)
$(info ✓ libcurl found: eval judge over HTTP)
else
$(info ✗ libcurl not found: eval judge only with a local model (apt-get install libcurl4-openssl-dev))
endif
ifneq ($(shell pkg-config --exists libmicrohttpd 2>/dev/null && echo 1),)
CFLAGS_BASE += -DGN_HAVE_MHD
LDLIBS += $(shell pkg-config --libs libmicrohttpd)
$(info ✓ libmicrohttpd found: guanaco serve)
else
$(info ✗ libmicrohttpd not found: no guanaco serve (apt-get install libmicrohttpd-dev))
endif

CFLAGS ?= $(OPT)
ALL_CFLAGS = $(CFLAGS_BASE) $(CFLAGS) $(SAN)

LIB_SRC := $(sort $(wildcard src/core/*.c src/tensor/*.c src/formats/*.c src/tokenizer/*.c \
                  src/quant/*.c src/model/*.c src/lora/*.c src/generate/*.c src/train/*.c src/eval/*.c))
LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/%.o)
CLI_SRC := $(wildcard src/cli/*.c src/server/*.c)
CLI_OBJ := $(CLI_SRC:%.c=$(BUILD)/%.o)
TEST_SRC := $(wildcard tests/test_*.c)
TEST_BIN := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
BENCH_SRC := $(wildcard bench/*.c)
BENCH_BIN := $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%)

.PHONY: all lib cli ctest test asan ubsan clean bench
all: lib cli $(TEST_BIN) $(BENCH_BIN)
lib: $(BUILD)/libguanaco.a
cli: $(BUILD)/guanaco

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/libguanaco.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/guanaco: $(CLI_OBJ) $(BUILD)/libguanaco.a
	$(CC) $(ALL_CFLAGS) $(LDFLAGS) $^ $(LDLIBS) -o $@

$(BUILD)/tests/%: tests/%.c $(BUILD)/libguanaco.a tests/harness.h
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(LDFLAGS) $< $(BUILD)/libguanaco.a $(LDLIBS) -o $@

$(BUILD)/bench/%: bench/%.c $(BUILD)/libguanaco.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(LDFLAGS) $< $(BUILD)/libguanaco.a $(LDLIBS) -o $@

ctest: all
	@fail=0; for t in $(TEST_BIN); do echo "== $$t"; $$t || fail=1; done; exit $$fail

asan:
	$(MAKE) BUILD=build-asan OPT="-O1" SAN="-fsanitize=address -fno-omit-frame-pointer" all
ubsan:
	$(MAKE) BUILD=build-ubsan OPT="-O1" SAN="-fsanitize=undefined -fno-sanitize-recover=undefined" all

test:
	bash scripts/test.sh

clean:
	rm -rf build build-asan build-ubsan

-include $(LIB_OBJ:.o=.d) $(CLI_OBJ:.o=.d)
