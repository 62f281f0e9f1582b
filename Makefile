# Cairn: one plain Makefile.  `make help` lists the targets.
CC      ?= cc
BUILD   ?= build
SAN     ?=
OPT     ?= -O2
CFLAGS  ?= $(OPT) -g
# What the code needs, whatever CFLAGS the caller gives (`make CFLAGS=-O0` keeps them).
override CPPFLAGS += -D_GNU_SOURCE -I. -MMD -MP $(DEFS)
override CFLAGS   += -std=c11 -Wall -Wextra -Werror -pthread
# DEFS=-DCAIRN_TEST_SHORT_HASH: the collision test's build (16-bit chunk ids; build-short).
DEFS    ?=
ifneq ($(SAN),)
override CFLAGS  += -fsanitize=$(SAN) -fno-omit-frame-pointer -fno-sanitize-recover=all
override LDFLAGS += -fsanitize=$(SAN)
endif
# libfuse3's headers live in their own folder (deferred: tools/deps.sh installs them first).
override CPPFLAGS += $(shell pkg-config --cflags fuse3 2>/dev/null)
# make install [PREFIX=/usr/local] [DESTDIR=]: the units name $(BINDIR)/cairn.
PREFIX  ?= /usr/local
BINDIR  ?= $(PREFIX)/bin
MANDIR  ?= $(PREFIX)/share/man
UNITDIR ?= $(PREFIX)/lib/systemd/system
DATADIR ?= $(PREFIX)/share/cairn
UNITS   := cairn-gc.service cairn-gc.timer cairn-serve.service
LDLIBS  = -lrocksdb -lzstd -lxxhash -ljansson -lext2fs -lcom_err -levent -levent_pthreads -lcrypto -lfuse3 -ls3 -lcurl -lpthread -lm

LIB_SRC   := $(wildcard store/*.c snapshotter/*.c restore/*.c gc/*.c api/*.c)
# The console's static files, built into the binary as one generated C file.
CONSOLE_FILES := $(sort $(wildcard api/console/*.html api/console/*.js api/console/*.css api/console/*.svg))
CLI_SRC   := $(wildcard tools/cli*.c)
UNIT_SRC  := $(wildcard tests/unit/*.c)
LIB_OBJ   := $(LIB_SRC:%.c=$(BUILD)/%.o) $(BUILD)/api/console_files.o
CLI_OBJ   := $(CLI_SRC:%.c=$(BUILD)/%.o)
UNIT_BIN  := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)

.SECONDARY:
.PHONY: all deps test check test-slow e2e demo bench fuzz reliability asan ubsan valgrind clean help install uninstall print-LDLIBS
all: $(BUILD)/cairn $(BUILD)/cairn-corpus $(BUILD)/libcairn-fault.so $(BUILD)/libcairn-failio.so $(BUILD)/libcairn-clockstep.so $(BUILD)/cairn-fc-uffd $(UNIT_BIN)

help:
	@echo "make            build build/cairn and build/cairn-corpus"
	@echo "make demo       install deps, build, snapshot a sample VM set, restore, verify"
	@echo "make test       install deps, build, run every test (CI runs this)"
	@echo "make check      the fast tests only (skips the *.slow.sh tests: crash, gc stress, fuzz, VMs)"
	@echo "make e2e        real QEMU microVMs hibernated, woken, gc'd and rebuilt through the API (~35 s)"
	@echo "make bench      Cairn beside zstd, cp, restic, borg, casync (BENCH_SIZE=small|full), then the API (tools/bench_api.sh), then lazy wakes of real VMs (tools/bench_lazy.sh), then the store on a Ceph RGW beside local (tools/bench_s3.sh)"
	@echo "make fuzz       every parser of hostile bytes under libFuzzer (FUZZ_SECONDS=60 each)"
	@echo "make asan|ubsan the tests under AddressSanitizer / UBSan (build-asan, build-ubsan)"
	@echo "make valgrind   the CLI tests with cairn under valgrind memcheck (VALGRIND_TESTS)"
	@echo "make bench-gc   cairn gc over fleets of 1k, 10k, 100k sandboxes (BENCH_GC_SIZES)"
	@echo "make install    cairn, its man page, the systemd units (PREFIX=/usr/local, DESTDIR=)"
	@echo "make reliability every crash point and fault, fuzzing, collisions, sanitizers: one table,"
	@echo "                kept in docs/reliability.md (~1 h)"

deps:
	@tools/deps.sh build

# The packages before any compile: every compile waits for this stamp (order-only), so
# `make -j` never compiles against headers still being installed.
DEPS_OK := $(BUILD)/.deps-ok
$(DEPS_OK): tools/deps.sh
	@mkdir -p $(@D)
	@tools/deps.sh build
	@touch $@

# Made afresh: `ar r` into an old archive would keep members of deleted sources.
$(BUILD)/libcairn.a: $(LIB_OBJ)
	@mkdir -p $(@D)
	rm -f $@
	$(AR) rcs $@ $^

$(BUILD)/cairn: $(CLI_OBJ) $(BUILD)/libcairn.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# The corpus generator is a test input tool, not the product: never sanitized, so
# `make asan` checks cairn, not the generator's exit-time frees.
$(BUILD)/cairn-corpus: tools/corpus.c | $(DEPS_OK)
	@mkdir -p $(@D)
	$(CC) -O2 -g -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -o $@ $< -lxxhash -lm

# The fault-injection shim (LD_PRELOAD) of the fault and crash-point tests: test tooling,
# never linked into cairn, never sanitized (it sits under the process it counts for).
$(BUILD)/libcairn-fault.so: tests/fault/fault.c | $(DEPS_OK)
	@mkdir -p $(@D)
	$(CC) -O2 -g -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -shared -fPIC -o $@ $< -ldl

# The read-failure shim (tests/fault/failio.c): makes chosen readdir/pread calls fail, for
# the tests that prove an I/O error is never taken for the end of the data. Test tooling.
$(BUILD)/libcairn-failio.so: tests/fault/failio.c | $(DEPS_OK)
	@mkdir -p $(@D)
	$(CC) -O2 -g -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -shared -fPIC -o $@ $< -ldl

# The clock-step shim (tests/fault/clockstep.c): moves the wall clock for clock.sh. Test tooling.
$(BUILD)/libcairn-clockstep.so: tests/fault/clockstep.c | $(DEPS_OK)
	@mkdir -p $(@D)
	$(CC) -O2 -g -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -shared -fPIC -o $@ $< -ldl

# Firecracker's side of the UFFD protocol, for tests/integration/uffd.sh.
$(BUILD)/cairn-fc-uffd: $(BUILD)/tests/helpers/fc_uffd.o
	$(CC) $(LDFLAGS) -o $@ $^ -lpthread

# The API bench's load generator (tools/bench/api.py): benchmark tooling, not the product.
$(BUILD)/cairn-apiload: tools/bench/apiload.c | $(DEPS_OK)
	@mkdir -p $(@D)
	$(CC) -O2 -g -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -pthread -o $@ $<

# The page server's ceiling on this machine (tools/bench_lazy.sh): benchmark tooling.
$(BUILD)/cairn-uffd-ceiling: tools/bench/uffd_ceiling.c | $(DEPS_OK)
	@mkdir -p $(@D)
	$(CC) -O2 -g -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -pthread -o $@ $<

# The gc benchmark's fleet maker (tools/bench_gc.sh): benchmark tooling, not the product.
$(BUILD)/cairn-gcfleet: $(BUILD)/tools/bench/gcfleet.o $(BUILD)/libcairn.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/tests/unit/%.o $(BUILD)/libcairn.a
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# The folder is a prerequisite too: a file removed from it changes its mtime, not the others'.
$(BUILD)/api/console_files.c: $(CONSOLE_FILES) api/console tools/embed.sh
	@mkdir -p $(@D)
	tools/embed.sh $(CONSOLE_FILES) >$@.tmp && mv $@.tmp $@

$(BUILD)/api/console_files.o: $(BUILD)/api/console_files.c | $(DEPS_OK)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c -o $@ $<

$(BUILD)/%.o: %.c | $(DEPS_OK)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c -o $@ $<

test: all
	BUILD=$(BUILD) tests/run.sh

check: all
	BUILD=$(BUILD) tests/run.sh --fast

test-slow: all
	BUILD=$(BUILD) tests/run.sh --slow-only

# Run directly, not through tests/run.sh, so its steps and "N passed, N failed" show;
# `make test` runs it too (tests/run.sh takes every tests/e2e/*.slow.sh).
e2e: all
	BUILD=$(BUILD) tests/e2e/api_vm.slow.sh

demo: all
	BUILD=$(BUILD) tools/demo.sh

bench: all $(BUILD)/cairn-apiload $(BUILD)/cairn-uffd-ceiling
	@tools/deps.sh bench
	BUILD=$(BUILD) tools/bench.sh
	BUILD=$(BUILD) tools/bench_api.sh
	@tools/deps.sh vm
	BUILD=$(BUILD) tools/bench_lazy.sh
	BUILD=$(BUILD) tools/bench_s3.sh

bench-gc: $(BUILD)/cairn $(BUILD)/cairn-gcfleet
	BUILD=$(BUILD) tools/bench_gc.sh

fuzz: deps
	tools/fuzz.sh

reliability: deps
	BUILD=$(BUILD) tools/reliability.sh

asan:
	$(MAKE) BUILD=build-asan SAN=address OPT=-O1 test

ubsan:
	$(MAKE) BUILD=build-ubsan SAN=undefined OPT=-O1 test

# The CLI tests with every cairn they start under memcheck (tests/run.sh VALGRIND=1): a
# report fails the test. ~20x slower than a plain run, so not the whole suite.
VALGRIND_TESTS ?= integration/cli integration/roundtrip integration/badinput integration/strict_input
valgrind: all
	VALGRIND=1 BUILD=$(BUILD) tests/run.sh $(VALGRIND_TESTS)

install: $(BUILD)/cairn
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(UNITDIR) $(DESTDIR)$(DATADIR)
	install -m 0755 $(BUILD)/cairn $(DESTDIR)$(BINDIR)/cairn
	install -m 0644 docs/cairn.1 $(DESTDIR)$(MANDIR)/man1/cairn.1
	for u in $(UNITS); do \
	    sed 's|/usr/local/bin/cairn|$(BINDIR)/cairn|g' tools/systemd/$$u >$(DESTDIR)$(UNITDIR)/$$u && \
	    chmod 0644 $(DESTDIR)$(UNITDIR)/$$u || exit 1; \
	done
	sed 's|/usr/local/bin/cairn|$(BINDIR)/cairn|g' tools/systemd/cairn-gc.cron >$(DESTDIR)$(DATADIR)/cairn-gc.cron
	chmod 0644 $(DESTDIR)$(DATADIR)/cairn-gc.cron

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/cairn $(DESTDIR)$(MANDIR)/man1/cairn.1 $(DESTDIR)$(DATADIR)/cairn-gc.cron
	for u in $(UNITS); do rm -f $(DESTDIR)$(UNITDIR)/$$u; done
	-rmdir $(DESTDIR)$(DATADIR) 2>/dev/null

# The library link line, for scripts that link their own binaries (tools/fuzz.sh).
print-LDLIBS:
	@echo $(LDLIBS)

clean:
	rm -rf build build-asan build-ubsan build-fuzz build-short build-clang

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
