# sinkhole developer and operator entry points. `make help` lists them.
SHELL := /bin/bash
# The machine image keeps the Swift toolchain in /opt/swift.
export PATH := /opt/swift/usr/bin:$(PATH)

SWIFT_FLAGS ?= -Xswiftc -warnings-as-errors
# gdb: the test watchdog prints every thread's stack when a test run hangs.
APT_PACKAGES := libldns-dev libssl-dev zlib1g-dev libsqlite3-dev pkg-config ldnsutils bind9-dnsutils curl systemd sqlite3 iproute2 util-linux gdb
LISTEN ?= --listen 127.0.0.1:53 --listen [::1]:53
BLOCK_LOG ?= block.log
QUERY_HISTORY ?= history.db
# Any other serve flags, e.g. ARGS='--upstream 192.0.2.1 --block-mode sinkhole'
ARGS ?=

.PHONY: help deps build release run test check-deps clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

deps: ## Install the Debian packages sinkhole and its tests need (as root, only what is missing)
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi
	@command -v swift >/dev/null || { echo "swift not found: install the Swift 6 toolchain (see README)"; exit 1; }

build: deps ## Debug build (warnings are errors)
	swift build $(SWIFT_FLAGS)

release: deps ## Optimised build: .build/release/sinkhole
	swift build -c release $(SWIFT_FLAGS)

run: release ## Start sinkhole with the shipped lists on 127.0.0.1:53 and [::1]:53, upstreams from /etc/resolv.conf
	.build/release/sinkhole serve $(LISTEN) --blocklist-dir blocklists --block-log $(BLOCK_LOG) --query-history $(QUERY_HISTORY) $(ARGS)

# One build: --build-tests builds the sinkhole executable too (the tests run it), so a separate
# debug build first compiled every module twice (about 2 minutes of CI).
test: deps ## Run every test: unit, loopback integration, end-to-end with drill and dig
	swift build --build-tests $(SWIFT_FLAGS)
	Tests/run-with-watchdog.sh --skip-build

clean: ## Remove build products
	rm -rf .build

# --- benchmark smoke run (benchmarks/compare/README.md) --------------------------------------
BENCH_PACKAGES := dnsperf nsd gcc python3 util-linux iproute2 bind9-dnsutils

.PHONY: bench-smoke

bench-smoke: deps ## Run benchmarks/compare.sh once at its smallest size and check its results (CI)
	@$(MAKE) --no-print-directory deps APT_PACKAGES="$(BENCH_PACKAGES)"
	swift build -c release $(SWIFT_FLAGS)
	SINKHOLE_BIN=.build/release/sinkhole benchmarks/compare.sh --quick --check

# --- fuzzing (Fuzz/README.md) ---------------------------------------------------------------
FUZZ_SECONDS ?= 600
FUZZ_JOBS ?= 1
FUZZ_TARGETS ?=

.PHONY: fuzz fuzz-ci

fuzz: deps ## Build the libFuzzer targets (Fuzz/) and run each for FUZZ_SECONDS (600) s
	FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_JOBS=$(FUZZ_JOBS) Fuzz/run.sh $(FUZZ_TARGETS)

# CI runs one target per core: each is single-threaded and bounded by its run count and time.
FUZZ_CI_JOBS ?= $(shell nproc 2>/dev/null || echo 1)

fuzz-ci: deps ## Replay saved crashes, then fuzz each target from the seeds (fixed seed and runs, at most 40 s), one per core
	FUZZ_SECONDS=40 FUZZ_JOBS=$(FUZZ_CI_JOBS) Fuzz/run.sh --ci $(FUZZ_TARGETS)
