# marketd — see README.md. `make run` / `make test` are the two commands;
# everything else here is what they are made of.

SHELL := /bin/bash
CC    ?= cc
CLANG ?= clang

PKGS := libpq libh2o-evloop libsodium jansson hiredis
# Debian's libh2o-evloop.pc lacks -DH2O_USE_LIBUV=0; without it h2o/socket.h
# pulls in uv.h (shared/spec/limits.md).
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null) -DH2O_USE_LIBUV=0
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lssl -lcrypto -lpthread -lm

WARN    := -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter -Wno-missing-field-initializers
BASE    := -std=c11 -D_GNU_SOURCE -Isrc -Ibuild/gen $(WARN)
SANITIZE := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer

SRC_ALL := $(sort $(shell find src -name '*.c'))
SRC_LIB := $(filter-out src/main.c,$(SRC_ALL))
GEN_C   := build/gen/migrations_embed.c build/gen/seed_data_embed.c build/gen/openapi_embed.c
MIGRATIONS := $(sort $(wildcard migrations/*.sql))
SEED_DATA  := $(sort $(wildcard src/cli/seed-data/*.tsv src/cli/seed-data/*.txt))

UNIT_SRC := $(sort $(wildcard tests/unit/test_*.c))
FUZZ_SRC := $(sort $(wildcard tests/fuzz/fuzz_*.c))

# flavour: release (-O2) and asan (tests). Objects per flavour.
REL_OBJ  := $(patsubst %.c,build/release/obj/%.o,$(SRC_LIB) $(GEN_C))
ASAN_OBJ := $(patsubst %.c,build/asan/obj/%.o,$(SRC_LIB) $(GEN_C))
FUZZ_OBJ := $(patsubst %.c,build/fuzz/obj/%.o,$(SRC_LIB) $(GEN_C))
UNIT_BIN := $(patsubst tests/unit/%.c,build/asan/tests/%,$(UNIT_SRC))
FUZZ_BIN := $(patsubst tests/fuzz/%.c,build/fuzz/%,$(FUZZ_SRC))

.PHONY: all build asan unit fuzz run restart stop status test bench deps fmt fmt-check lint clean
all: build
build: build/release/marketd
asan: build/asan/marketd
unit: $(UNIT_BIN)
fuzz: $(FUZZ_BIN)

build/gen/migrations_embed.c: scripts/embed-migrations.sh $(MIGRATIONS)
	@mkdir -p $(dir $@)
	bash scripts/embed-migrations.sh migrations > $@.tmp && mv $@.tmp $@
# The directory too: removing or renaming a data file changes no file's date.
build/gen/seed_data_embed.c: scripts/embed-seed-data.sh $(SEED_DATA) src/cli/seed-data
	@mkdir -p $(dir $@)
	bash scripts/embed-seed-data.sh src/cli/seed-data > $@.tmp && mv $@.tmp $@

# The contract the binary serves (/openapi.yaml, /openapi.json).
build/gen/openapi_embed.c: scripts/embed-openapi.py api/openapi.yaml
	@mkdir -p $(dir $@)
	python3 scripts/embed-openapi.py api/openapi.yaml > $@.tmp && mv $@.tmp $@

build/release/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(BASE) -O2 -g $(PKG_CFLAGS) -MMD -MP -c $< -o $@
build/asan/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(BASE) -O1 -g $(SANITIZE) $(PKG_CFLAGS) -MMD -MP -c $< -o $@
build/fuzz/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CLANG) $(BASE) -O1 -g $(SANITIZE) -fsanitize=fuzzer-no-link $(PKG_CFLAGS) -MMD -MP -c $< -o $@

build/release/libmarketd.a: $(REL_OBJ)
	rm -f $@ && ar rcs $@ $^
build/asan/libmarketd.a: $(ASAN_OBJ)
	rm -f $@ && ar rcs $@ $^
build/fuzz/libmarketd.a: $(FUZZ_OBJ)
	rm -f $@ && ar rcs $@ $^

build/release/marketd: build/release/obj/src/main.o build/release/libmarketd.a
	$(CC) -g $^ $(PKG_LIBS) -o $@
build/asan/marketd: build/asan/obj/src/main.o build/asan/libmarketd.a
	$(CC) -g $(SANITIZE) $^ $(PKG_LIBS) -o $@

build/asan/tests/%: tests/unit/%.c build/asan/libmarketd.a
	@mkdir -p $(dir $@)
	$(CC) $(BASE) -O1 -g $(SANITIZE) $(PKG_CFLAGS) $< build/asan/libmarketd.a $(PKG_LIBS) -lcmocka -o $@
build/fuzz/%: tests/fuzz/%.c build/fuzz/libmarketd.a
	@mkdir -p $(dir $@)
	$(CLANG) $(BASE) -O1 -g $(SANITIZE) -fsanitize=fuzzer $(PKG_CFLAGS) $< build/fuzz/libmarketd.a $(PKG_LIBS) -o $@

-include $(shell find build -name '*.d' 2>/dev/null)

# --- the commands of README.md ----------------------------------------------
deps:
	bash scripts/deps.sh
# MONITORING=1 make run also starts Prometheus (and the exporters) on :9090.
run: deps
	$(MAKE) build
	bash scripts/stack.sh start
	@if [ "$(MONITORING)" = 1 ]; then bash scripts/monitoring.sh start; fi
# Everything stopped (the backend drains) and started again from the current build.
restart: deps
	$(MAKE) build
	bash scripts/stack.sh stop
	bash scripts/stack.sh start
	@if [ "$(MONITORING)" = 1 ]; then bash scripts/monitoring.sh start; fi
stop:
	@if ls .data/prometheus/*.pid >/dev/null 2>&1; then bash scripts/monitoring.sh stop; fi
	bash scripts/stack.sh stop
status:
	bash scripts/stack.sh status
test: deps
	T="$(T)" bash scripts/test.sh
bench: deps
	$(MAKE) build
	bash bench/run.sh
# The whole suite three times in a row under stress-ng (issue 10).
.PHONY: test-loaded
test-loaded: deps
	bash scripts/test-loaded.sh
# A longer fuzzing run that keeps what it finds: inputs that add coverage
# are merged into tests/fuzz/corpus/<target>/ (commit them).
.PHONY: fuzz-long
fuzz-long: deps
	TEST_ONLY=fuzz FUZZ_SECONDS=$${FUZZ_SECONDS:-300} FUZZ_KEEP=1 bash scripts/test.sh
# The overload benchmark (bench/overload.sh): SCENARIOS="a b" make bench-overload
.PHONY: bench-overload
bench-overload: deps
	$(MAKE) build
	bash bench/overload.sh

# The two commands on a fresh debian:12-slim container (private dockerd,
# base image from debootstrap; root; ~7 min, not part of `make test`):
# docs/fresh-debian.md.
.PHONY: fresh-debian-test
fresh-debian-test:
	bash tests/fresh/run.sh

# The production compose deployment run for real on a private dockerd
# (root; docs/deploy.md "Compose, run for real"): topology + HTTP checks,
# and the failure drills (bench/results/drills-latest.json). The swarm-*
# targets deploy the same file with `docker stack deploy` on a single-node
# Docker Swarm (docs/deploy.md "Docker Swarm"); `DEPLOY_ORCH=swarm make
# drills` is `make swarm-drills`.
.PHONY: deploy-test drills swarm-test swarm-drills
deploy-test:
	bash tests/compose/run.sh check
drills:
	bash tests/compose/run.sh drills
swarm-test:
	DEPLOY_ORCH=swarm bash tests/compose/run.sh check
swarm-drills:
	DEPLOY_ORCH=swarm bash tests/compose/run.sh drills

# docs/traceability.md: which tests check which requirement and api.md rule
# (scripts/traceability.py; `make test` fails when it is stale).
.PHONY: traceability
traceability:
	python3 scripts/traceability.py

# Every C file of the tree: formatted by `make fmt`, checked by `make test`.
FMT_FILES = $(sort $(SRC_ALL) $(shell find src tests -name '*.h') $(UNIT_SRC) $(FUZZ_SRC) $(wildcard tests/redis/*.c))
fmt:
	clang-format -i $(FMT_FILES)
fmt-check:
	clang-format --dry-run --Werror $(FMT_FILES)
lint:
	cppcheck --quiet --error-exitcode=1 --enable=warning,performance,portability --inline-suppr \
	  --suppress=missingIncludeSystem -Isrc -DH2O_USE_LIBUV=0 src
clean:
	rm -rf build
