# guanaco — build the library, the CLI and the C tests.
#   make              release build: build/libguanaco.a, build/guanaco
#   make test         the whole test suite (installs what it needs; see README)
#   make asan|ubsan   sanitizer builds in build-asan/ and build-ubsan/
#   make ctest        C unit tests only (release build)
#   make shared       build/libguanaco.so (soname libguanaco.so.MAJOR) beside the static library
#   make install      PREFIX=/usr/local (default) DESTDIR=: bin, lib (.a, .so), include,
#                     lib/pkgconfig/guanaco.pc, share/guanaco (data/); make uninstall undoes it
# Knobs: NO_OMP=1, NATIVE=0 (default; dispatch picks SIMD at run time), CC=,
#        TEST_HOOKS=1 (compile the test-only hooks, e.g. finetune's GN_TEST_KILL_AT_CHECKPOINT;
#        scripts/test.sh builds with it)
CC ?= cc
BUILD ?= build
OPT ?= -O2
CFLAGS_BASE = -std=c11 -Wall -Wextra -Werror -Wno-unused-parameter -D_GNU_SOURCE -Iinclude -Isrc -g
# zlib: data files kept gzipped (data/*.jsonl.gz, *.csv.gz) read like the plain ones
LDLIBS = -lopenblas -lcjson -lpcre2-8 -lz -lm -lpthread

ifeq ($(TEST_HOOKS),1)
CFLAGS_BASE += -DGN_TEST_HOOKS
$(info ✓ TEST_HOOKS=1: test-only hooks compiled in (not for release binaries))
endif

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
# --- MPI (opt-in): data-parallel `mpirun -np N guanaco finetune` (src/dist/) --------
# make MPI=1 links src/dist/dist_mpi.c against MPI (Open MPI: libopenmpi-dev); the
# default build links src/dist/dist_single.c and needs nothing from MPI.
ifeq ($(MPI),1)
MPI_PC := $(firstword $(foreach p,mpi-c ompi-c mpich,$(shell pkg-config --exists $(p) 2>/dev/null && echo $(p))))
ifneq ($(MPI_PC),)
CFLAGS_BASE += -DGN_HAVE_MPI $(shell pkg-config --cflags $(MPI_PC))
LDLIBS += $(shell pkg-config --libs $(MPI_PC))
DIST_SRC := src/dist/dist_mpi.c
$(info ✓ MPI found ($(MPI_PC)): mpirun -np N guanaco finetune)
else
$(error MPI=1 but no MPI found by pkg-config (apt-get install libopenmpi-dev openmpi-bin))
endif
else
DIST_SRC := src/dist/dist_single.c
$(info ✗ MPI off: single-process finetune (make MPI=1 for mpirun; apt-get install libopenmpi-dev))
endif
# --- end MPI ------------------------------------------------------------------
# --- CUDA (opt-in): `make CUDA=1` ------------------------------------------
# Compiles src/cuda/*.cu with nvcc (sm_80 + sm_90), links cudart and cuBLAS, defines
# GN_HAVE_CUDA and gives models `--device cuda` (src/cuda/cuda_model.c, cuda_train.c).
# The default build links src/cuda/cuda_stub.c instead and needs nothing from CUDA.
# Knobs: NVCC (default: nvcc on PATH, else /usr/local/cuda/bin/nvcc), NVCC_EXTRA (more nvcc flags, e.g.
# -DGEMV_RPW_SMALL_T=4 or -DGEMV_WARPS=4 to try GEMV launch shapes), CUDA_HOME (default: the
# toolkit that nvcc belongs to), CUDA_ARCH (the -gencode list).
NVCC ?= $(shell command -v nvcc 2>/dev/null || echo /usr/local/cuda/bin/nvcc)
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(realpath $(NVCC)))
# sm_80 (A100; runs on sm_86/89 too) and sm_90 (H100/H200) code, plus sm_90 PTX for newer cards
CUDA_ARCH ?= -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=[sm_90,compute_90]
ifeq ($(CUDA),1)
ifeq ($(shell test -x "$(NVCC)" && echo 1),)
$(error CUDA=1 but nvcc not found ($(NVCC)); set CUDA_HOME or NVCC, or build without CUDA=1)
endif
CUDA_LIBDIR := $(firstword $(wildcard $(CUDA_HOME)/lib64 $(CUDA_HOME)/lib) $(CUDA_HOME)/lib64)
CFLAGS_BASE += -DGN_HAVE_CUDA
LDLIBS += -L$(CUDA_LIBDIR) -Wl,-rpath,$(CUDA_LIBDIR) -lcublas -lcudart -lstdc++
CUDA_C_SRC := src/cuda/cuda_model.c src/cuda/cuda_train.c
CUDA_CU_OBJ := $(patsubst %.cu,$(BUILD)/%.o,$(wildcard src/cuda/*.cu))
NVCCFLAGS = -std=c++17 -O3 -lineinfo $(CUDA_ARCH) -Iinclude -Isrc -DGN_HAVE_CUDA $(NVCC_EXTRA) --Werror all-warnings \
            -Xcompiler -Wall,-Wextra,-Werror,-Wno-unused-parameter,-fPIC
$(BUILD)/src/cuda/%.o: src/cuda/%.cu src/cuda/common.cuh src/cuda/cuda.h include/guanaco.h src/core/common.h
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -c $< -o $@
$(info ✓ CUDA: $(NVCC) ($(CUDA_ARCH)), --device cuda)
else
CUDA_C_SRC := src/cuda/cuda_stub.c
CUDA_CU_OBJ :=
$(info ✗ CUDA off: no --device cuda (make CUDA=1 with nvcc; BUILD=build-cuda keeps it apart))
endif
# --- end CUDA -----------------------------------------------------------------
# --- NCCL (opt-in): `make MPI=1 CUDA=1 NCCL=1` ------------------------------
# Adds src/dist/dist_nccl.c: GPU runs under mpirun all-reduce the gradients with NCCL.
# nccl.h / libnccl from NCCL_HOME (default: the CUDA toolkit's include and lib folders).
comma := ,
ifeq ($(NCCL),1)
ifneq ($(CUDA)$(MPI),11)
$(error NCCL=1 needs CUDA=1 and MPI=1 (MPI starts the ranks and hands out NCCL's id))
endif
NCCL_HOME ?= $(CUDA_HOME)
NCCL_INC := $(firstword $(wildcard $(NCCL_HOME)/include/nccl.h /usr/include/nccl.h))
ifeq ($(NCCL_INC),)
$(error NCCL=1 but nccl.h not found under $(NCCL_HOME)/include or /usr/include (set NCCL_HOME))
endif
NCCL_LIBDIR := $(firstword $(wildcard $(NCCL_HOME)/lib64/libnccl.so $(NCCL_HOME)/lib/libnccl.so /usr/lib/x86_64-linux-gnu/libnccl.so))
CFLAGS_BASE += -DGN_HAVE_NCCL -I$(dir $(NCCL_INC)) -I$(CUDA_HOME)/include
NCCL_L := $(dir $(NCCL_LIBDIR))
LDLIBS += $(if $(NCCL_LIBDIR),-L$(NCCL_L) -Wl$(comma)-rpath$(comma)$(NCCL_L)) -lnccl
DIST_SRC += src/dist/dist_nccl.c
$(info ✓ NCCL: $(NCCL_INC): GPU gradient all-reduce under mpirun)
endif
# --- end NCCL -----------------------------------------------------------------

CFLAGS ?= $(OPT)
# -fPIC: the same objects go into libguanaco.a and libguanaco.so (make shared)
ALL_CFLAGS = $(CFLAGS_BASE) $(CFLAGS) $(SAN) -fPIC

# install locations; the CLI looks for its default data in $(DATADIR) first
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
DATADIR ?= $(PREFIX)/share/guanaco
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
gn_version_part = $(word 2,$(shell grep -o 'GN_VERSION_$(1) [0-9]*' include/guanaco.h))
MAJOR := $(call gn_version_part,MAJOR)
VERSION := $(MAJOR).$(call gn_version_part,MINOR).$(call gn_version_part,PATCH)
SONAME := libguanaco.so.$(MAJOR)

LIB_SRC := $(sort $(wildcard src/core/*.c src/tensor/*.c src/formats/*.c src/tokenizer/*.c \
                  src/quant/*.c src/model/*.c src/lora/*.c src/generate/*.c src/train/*.c src/eval/*.c))
LIB_SRC += $(DIST_SRC) # MPI block above: one backend of src/dist/dist.h
LIB_SRC += $(CUDA_C_SRC) # CUDA block above: the GPU backend's C side, or its stub
LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/%.o)
LIB_OBJ += $(CUDA_CU_OBJ) # CUDA block: the nvcc-compiled kernels (none without CUDA=1)
CLI_SRC := $(wildcard src/cli/*.c src/server/*.c)
CLI_OBJ := $(CLI_SRC:%.c=$(BUILD)/%.o)
TEST_SRC := $(wildcard tests/test_*.c)
TEST_BIN := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
BENCH_SRC := $(wildcard bench/*.c)
BENCH_BIN := $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%)

.PHONY: all lib cli shared ctest test asan ubsan clean bench install uninstall FORCE
all: lib cli $(TEST_BIN) $(BENCH_BIN)
lib: $(BUILD)/libguanaco.a
cli: $(BUILD)/guanaco
shared: $(BUILD)/libguanaco.so

# The data folders the CLI searches (src/cli/cmd_eval.c, eval_cli.h): rewritten only when PREFIX or
# the tree's place changes, so `make install PREFIX=...` recompiles just what uses them.
$(BUILD)/gn_paths.h: FORCE
	@mkdir -p $(dir $@)
	@printf '/* written by the Makefile: the default data folders */\n#define GN_DATADIR "%s"\n#define GN_SRCDATA "%s"\n' \
	  '$(DATADIR)' '$(CURDIR)/data' > $@.tmp
	@if cmp -s $@.tmp $@; then rm -f $@.tmp; else mv $@.tmp $@; fi
$(CLI_OBJ): $(BUILD)/gn_paths.h
$(CLI_OBJ): ALL_CFLAGS += -I$(BUILD)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -MMD -MP -c $< -o $@

# the objects that hold test hooks are rebuilt when TEST_HOOKS changes (a stamp holds the last value)
TEST_HOOKS_STAMP := $(BUILD)/.test-hooks
$(shell mkdir -p $(BUILD) && [ "$$(cat $(TEST_HOOKS_STAMP) 2>/dev/null)" = "hooks=$(TEST_HOOKS)" ] || echo "hooks=$(TEST_HOOKS)" > $(TEST_HOOKS_STAMP))
$(BUILD)/src/train/finetune.o: $(TEST_HOOKS_STAMP)

$(BUILD)/libguanaco.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/guanaco: $(CLI_OBJ) $(BUILD)/libguanaco.a
	$(CC) $(ALL_CFLAGS) $(LDFLAGS) $^ $(LDLIBS) -o $@

# libguanaco.so.X.Y.Z, soname libguanaco.so.X, and the two links to it
$(BUILD)/libguanaco.so.$(VERSION): $(LIB_OBJ)
	$(CC) -shared -Wl,-soname,$(SONAME) -Wl,--no-undefined $(ALL_CFLAGS) $(LDFLAGS) $^ -Wl,--as-needed $(LDLIBS) -o $@
$(BUILD)/libguanaco.so: $(BUILD)/libguanaco.so.$(VERSION)
	ln -sf libguanaco.so.$(VERSION) $(BUILD)/$(SONAME)
	ln -sf $(SONAME) $@

# pkg-config: Libs.private lists what a static link (--static) needs besides libguanaco.a
$(BUILD)/guanaco.pc: FORCE
	@mkdir -p $(dir $@)
	@printf '%s\n' 'prefix=$(PREFIX)' 'libdir=$(LIBDIR)' 'includedir=$(INCLUDEDIR)' 'datadir=$(DATADIR)' '' \
	  'Name: guanaco' 'Description: QLoRA fine-tuning and 4-bit LLaMA inference in C' 'Version: $(VERSION)' \
	  'Libs: -L$${libdir} -lguanaco' 'Libs.private: $(strip $(filter -fopenmp,$(LDFLAGS)) $(LDLIBS))' \
	  'Cflags: -I$${includedir}' > $@.tmp
	@if cmp -s $@.tmp $@; then rm -f $@.tmp; else mv $@.tmp $@; fi

# make install / uninstall: PREFIX (default /usr/local) and DESTDIR (staging root)
DATA_FILES := $(shell cd data 2>/dev/null && find . -type f | sed 's|^\./||' | LC_ALL=C sort)
install: $(BUILD)/guanaco $(BUILD)/libguanaco.a $(BUILD)/libguanaco.so $(BUILD)/guanaco.pc
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(PKGCONFIGDIR) $(DESTDIR)$(DATADIR)
	install -m 755 $(BUILD)/guanaco $(DESTDIR)$(BINDIR)/guanaco
	install -m 644 $(BUILD)/libguanaco.a $(DESTDIR)$(LIBDIR)/libguanaco.a
	install -m 755 $(BUILD)/libguanaco.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libguanaco.so.$(VERSION)
	ln -sf libguanaco.so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(LIBDIR)/libguanaco.so
	install -m 644 include/guanaco.h $(DESTDIR)$(INCLUDEDIR)/guanaco.h
	install -m 644 $(BUILD)/guanaco.pc $(DESTDIR)$(PKGCONFIGDIR)/guanaco.pc
	@cd data && for f in $(DATA_FILES); do install -D -m 644 "$$f" "$(DESTDIR)$(DATADIR)/$$f" || exit 1; done
	@echo "installed $(words $(DATA_FILES)) data files in $(DESTDIR)$(DATADIR)"
	@echo "(a PREFIX outside ld.so's path, or /usr/local before ldconfig runs: LD_LIBRARY_PATH=$(LIBDIR))"

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/guanaco $(DESTDIR)$(LIBDIR)/libguanaco.a $(DESTDIR)$(LIBDIR)/libguanaco.so \
	  $(DESTDIR)$(LIBDIR)/$(SONAME) $(DESTDIR)$(LIBDIR)/libguanaco.so.$(VERSION) \
	  $(DESTDIR)$(INCLUDEDIR)/guanaco.h $(DESTDIR)$(PKGCONFIGDIR)/guanaco.pc
	@for f in $(DATA_FILES); do rm -f "$(DESTDIR)$(DATADIR)/$$f"; done
	@if [ -d "$(DESTDIR)$(DATADIR)" ]; then find "$(DESTDIR)$(DATADIR)" -depth -type d -empty -delete; fi
	@echo "removed guanaco from $(DESTDIR)$(PREFIX)"

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

# make bench: the CPU speed table (bench/bench_all.py): SmolLM2 rows (~6 min on 2 cores) and the
# 1.1B / 7B rows (the first run writes their random models into ~/.cache/guanaco/bench: ~15-30
# min and ~35 GB of disk; BENCH_ARGS="--sizes none" skips them). Flags through BENCH_ARGS, e.g.
# make bench BENCH_ARGS="--quick" or "--wait-quiet 600 --skip-train".
GN_VENV ?= $(HOME)/.cache/guanaco/venv
bench: all
	@$(GN_VENV)/bin/python -c "import matplotlib" 2>/dev/null || $(GN_VENV)/bin/pip install -q "matplotlib==3.11.2" \
	  || echo "matplotlib could not be installed: the table is printed, the plot skipped"
	$(GN_VENV)/bin/python bench/bench_all.py $(BENCH_ARGS)

test:
	bash scripts/test.sh

clean:
	rm -rf build build-asan build-ubsan build-mpi build-cuda

-include $(LIB_OBJ:.o=.d) $(CLI_OBJ:.o=.d)

# ---- fuzz --------------------------------------------------------
# make fuzz: libFuzzer targets fuzz/fuzz_*.c -> build-fuzz/fuzz_* (clang,
# -fsanitize=fuzzer,address,undefined). The library is recompiled with clang
# into build-fuzz/obj; the gcc build above is untouched. See docs/FUZZING.md.
FUZZ_CC ?= clang
FUZZ_BUILD ?= build-fuzz
FUZZ_SAN = -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
FUZZ_CFLAGS = -std=c11 -Wall -Wextra -Wno-unused-parameter -Wno-unknown-pragmas -D_GNU_SOURCE -Iinclude -Isrc \
              -g -O1 $(OPENBLAS_INC) $(FUZZ_SAN) -DGN_FUZZING -include fuzz/compat.h
# the parsers and what they link against; the trainer, finetune loop and data-parallel
# code are left out (no parser needs them, and the fuzz build then does not depend on them)
FUZZ_LIB_SRC := $(filter-out src/train/train.c src/train/finetune.c src/dist/%,$(LIB_SRC)) \
                src/server/api.c src/server/rate.c
FUZZ_LIB_OBJ := $(FUZZ_LIB_SRC:%.c=$(FUZZ_BUILD)/obj/%.o)
FUZZ_SRC := $(wildcard fuzz/fuzz_*.c)
FUZZ_BIN := $(FUZZ_SRC:fuzz/%.c=$(FUZZ_BUILD)/%)
.PHONY: fuzz
fuzz: $(FUZZ_BIN)
# api.c and rate.c (request handling, fuzz_http) are guarded by GN_HAVE_MHD;
# they need no libmicrohttpd symbol themselves
$(FUZZ_BUILD)/obj/src/server/%.o $(FUZZ_BUILD)/fuzz_http: FUZZ_CFLAGS += -DGN_HAVE_MHD
$(FUZZ_BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -MMD -MP -c $< -o $@
$(FUZZ_BUILD)/libguanaco-fuzz.a: $(FUZZ_LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^
$(FUZZ_BUILD)/fuzz_%: fuzz/fuzz_%.c $(wildcard fuzz/*.h) $(FUZZ_BUILD)/libguanaco-fuzz.a
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer $< $(FUZZ_BUILD)/libguanaco-fuzz.a -lopenblas -lcjson -lpcre2-8 -lz -lm -lpthread -o $@
.PHONY: clean-fuzz
clean-fuzz:
	rm -rf $(FUZZ_BUILD)
-include $(FUZZ_LIB_OBJ:.o=.d)
# ---- end fuzz ---------------------------------------------------------------
