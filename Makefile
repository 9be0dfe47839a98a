# ibkr_oauth — top-level targets. On a fresh Debian machine:
#   make demo   build everything and run the end-to-end demo against the local fake IBKR server
#   make test   every test layer: C unit tests, EUnit, Common Test, ExUnit, and the
#               hex package's files built and run on their own
# Missing Debian packages are installed first (scripts/ensure-deps.sh says what).

REBAR3 ?= rebar3
MIX_REBAR3 ?= $(shell command -v rebar3)
export MIX_REBAR3

ASAN_PORT := c_src/build-asan/ibkr_oauth_port
CT_SUITES ?=
# c_src/Makefile's list (recursively expanded: asked only by the targets that use it).
FUZZ_HARNESSES = $(shell $(MAKE) -s --no-print-directory -C c_src fuzz-harnesses)

.PHONY: all build deps deps-test deps-dev demo test test-c test-eunit test-ct test-elixir test-mix-consumer test-package \
	test-asan valgrind fuzz bench lint dialyzer docs escript clean

all: build

deps:
	@scripts/ensure-deps.sh build
deps-test:
	@scripts/ensure-deps.sh test
deps-dev:
	@scripts/ensure-deps.sh dev

# rebar3's pre_hook runs `make -C c_src`, so this builds the port too, and
# the `ibkr_oauth` escript (it runs the port from ./priv next to it).
build: deps
	$(REBAR3) compile
	$(REBAR3) escriptize
	cp _build/default/bin/ibkr_oauth ./ibkr_oauth

escript: build

# The demo also leaves the ./ibkr_oauth escript built (see build).
demo: build
	$(REBAR3) as test compile
	erl -noshell -pa _build/test/lib/ibkr_oauth/ebin -pa _build/test/lib/ibkr_oauth/test \
		-eval 'halt(ibkr_oauth_demo:main())'

test: deps-test
	$(MAKE) test-c
	$(MAKE) test-eunit
	$(MAKE) test-ct
	$(MAKE) test-elixir
	$(MAKE) test-mix-consumer
	$(MAKE) test-package
	@echo "make test: all layers passed"

test-c:
	$(MAKE) -C c_src all test

test-eunit:
	$(REBAR3) eunit

test-ct:
	$(REBAR3) ct $(if $(CT_SUITES),--suite $(CT_SUITES))

test-elixir:
	cd test/elixir && MIX_ENV=test mix test

# A fresh mix project depending on a copy of this tree runs the README's Elixir example.
test-mix-consumer:
	scripts/mix-consumer-test.sh

# Exactly the files the hex package ships (`files` in src/ibkr_oauth.app.src),
# built with rebar3 in a temporary directory, port included; a session from
# that build authenticates and signs against the fake server.
test-package:
	scripts/package-test.sh

# The whole CT suite against an ASan+UBSan build of the port, and the C unit
# tests (and the fuzz corpus replay) under the sanitizers. Reports go to
# files, so one printed when a port exits after its test has passed (a leak
# at exit) still fails the target.
ASAN_LOGS := _build/asan
test-asan: deps-test
	$(MAKE) -C c_src SANITIZE=1 all test
	rm -rf $(ASAN_LOGS) && mkdir -p $(ASAN_LOGS)
	@rc=0; IBKR_OAUTH_PORT=$(CURDIR)/$(ASAN_PORT) \
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:exitcode=66:log_path=$(CURDIR)/$(ASAN_LOGS)/port \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:log_path=$(CURDIR)/$(ASAN_LOGS)/port \
		$(REBAR3) ct $(if $(CT_SUITES),--suite $(CT_SUITES)) || rc=$$?; \
	if ls $(ASAN_LOGS)/port.* >/dev/null 2>&1; then \
		cat $(ASAN_LOGS)/port.*; echo "test-asan: sanitizer reports above"; exit 1; fi; \
	exit $$rc

# memcheck with leak check over the C unit tests, the fuzz corpus replayed
# through the port's request path, and the raw protocol, crypto and websocket suites (the
# port runs under valgrind via scripts/valgrind-port.sh; IBKR_TEST_SLOW makes
# them wait longer and loop less). protocol_SUITE's session group is left
# out: it asserts wall-clock bounds (restarts, a 450 ms start) that a port
# tens of times slower cannot meet.
valgrind: deps-test
	$(MAKE) -C c_src all
	$(MAKE) -C c_src $(patsubst c_src/tests/%.c,build/tests/%,$(wildcard c_src/tests/test_*.c)) \
		$(FUZZ_HARNESSES:%=build/fuzz/replay_%)
	@set -e; for t in c_src/build/tests/test_* \
			$(foreach h,$(FUZZ_HARNESSES),"c_src/build/fuzz/replay_$(h) c_src/fuzz/corpus/$(h)"); do \
		echo "== valgrind $$t"; \
		valgrind -q --leak-check=full --show-leak-kinds=definite,indirect \
			--errors-for-leak-kinds=definite,indirect --error-exitcode=1 \
			--child-silent-after-fork=yes $$t; done
	rm -rf _build/valgrind && mkdir -p _build/valgrind
	IBKR_OAUTH_PORT=$(CURDIR)/scripts/valgrind-port.sh VALGRIND_LOG_DIR=$(CURDIR)/_build/valgrind \
	IBKR_TEST_SLOW=1 $(REBAR3) ct --suite test/protocol_SUITE --group raw
	IBKR_OAUTH_PORT=$(CURDIR)/scripts/valgrind-port.sh VALGRIND_LOG_DIR=$(CURDIR)/_build/valgrind \
	IBKR_TEST_SLOW=1 $(REBAR3) ct --suite test/oauth_SUITE
	IBKR_OAUTH_PORT=$(CURDIR)/scripts/valgrind-port.sh VALGRIND_LOG_DIR=$(CURDIR)/_build/valgrind \
	IBKR_TEST_SLOW=1 $(REBAR3) ct --suite test/ws_port_SUITE
	scripts/check-valgrind-logs.sh _build/valgrind

fuzz: deps-dev
	scripts/fuzz.sh $(or $(FUZZ_SECONDS),60)

bench: build
	$(MAKE) -C c_src echo
	$(REBAR3) as test compile
	erl -noshell -pa _build/test/lib/ibkr_oauth/ebin -pa _build/test/lib/ibkr_oauth/test \
		-eval 'halt(ibkr_oauth_bench:main())'

lint: deps-dev
	scripts/lint.sh

dialyzer: deps-test
	$(REBAR3) dialyzer

docs: deps-test
	$(REBAR3) edoc

clean:
	$(MAKE) -C c_src clean
	rm -rf _build test/elixir/_build test/elixir/deps doc ibkr_oauth
