# Beamfleet - a thin wrapper over CMake: deps, build, demo, test.
#   make demo   installs what is missing, builds, runs examples/demo.yaml
#   make test   installs what is missing, builds, runs every test (ctest)
BUILD      ?= build
JOBS       ?= $(shell nproc)
CMAKE_ARGS ?=
NVCC       ?= $(firstword $(shell command -v nvcc 2>/dev/null) $(wildcard /usr/local/cuda/bin/nvcc /usr/local/cuda-*/bin/nvcc /usr/bin/nvcc))

DEB_PACKAGES = build-essential cmake pkg-config python3 python3-pip \
               libzmq3-dev libmsgpack-dev libyaml-dev libsqlite3-dev libjansson-dev \
               libexpat1-dev libpng-dev libmicrohttpd-dev libembree-dev \
               libxxhash-dev
PY_PACKAGES  = pyzmq msgpack
# What only the tests use: a browser for report.html, promtool, network
# namespaces, groff for the man page, clang for the fuzzers, Slurm, munge,
# sshd and systemd-analyze for the deployment tests, podman (with runc) and
# debootstrap to build and run deploy/Dockerfile, gdb for the stacks of a
# process that will not stop (tests/e2e/fleet.py), and the LLVM that
# Sionna RT's Dr.Jit runs on (tests/sionna: LLVM 15 makes it abort; its
# virtual environment is a ctest fixture, tests/sionna/setup.sh).
TEST_DEB_PACKAGES = chromium prometheus iproute2 groff-base clang slurm-wlm munge \
                    openssh-server systemd libllvm19 python3-venv gdb podman runc debootstrap
# PyYAML reads the Kubernetes manifests in tests/deploy/test_k8s.py; pandas and
# matplotlib are the Python client's optional results table and plots, and wheel
# lets tests/python install it with pip offline (tests/python/test_client.py).
TEST_PY_PACKAGES  = pyyaml pandas matplotlib wheel

.PHONY: all deps deps-test build demo test test-asan test-tsan bench clean format format-check fuzz

all: build

deps:
	@./deploy/install-deps.sh $(DEB_PACKAGES) -- $(PY_PACKAGES)

# `make build` (and a plain `make`) installs the build's packages first, so
# any target works first on a fresh machine (BF_DEPS=0 skips that). CMake is
# run on every build (a second when nothing changed): a configure that failed
# half-way is simply tried again. The nvcc found is offered through CUDACXX,
# so CMake still checks that it works with the host compiler (CPU-only, with
# a warning, when it does not).
BF_DEPS ?= 1
build: $(if $(filter 1,$(BF_DEPS)),deps)
	$(if $(NVCC),CUDACXX=$(NVCC)) cmake -S . -B $(BUILD) $(CMAKE_ARGS)
	cmake --build $(BUILD) -j $(JOBS)

demo: deps build $(BUILD)/demo-scenes
	cp examples/demo.yaml $(BUILD)/demo.yaml
	./$(BUILD)/beamfleet run $(BUILD)/demo.yaml

deps-test:
	@./deploy/install-deps.sh $(DEB_PACKAGES) $(TEST_DEB_PACKAGES) -- $(PY_PACKAGES) $(TEST_PY_PACKAGES)

test: deps-test build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) --timeout 900 --output-junit ctest-junit.xml

# Every test again under AddressSanitizer and UndefinedBehaviorSanitizer (CI runs both).
# Any report ends the test that caused it (halt_on_error), with a stack. The
# unit tests with 100 ms heartbeats stretch their intervals and bounds 3x
# (BF_TEST_TIME_SCALE, common/bf_check.h): instrumented code on 2 cores.
test-asan: deps-test
	BF_TEST_TIME_SCALE=3 ASAN_OPTIONS=halt_on_error=1:detect_leaks=1 \
	UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	$(MAKE) test BUILD=build-asan CMAKE_ARGS="-DBF_SANITIZE=ON -DBF_CUDA=OFF"

# The unit tests whose code runs threads (the worker's socket and task threads,
# the CPU engine's pool, the metrics server, the broker and the collector run
# beside their fake peers) under ThreadSanitizer, intervals stretched 5x; libzmq
# is not instrumented, so hand-overs inside it are suppressed (tests/tsan.supp).
# CI runs it.
TSAN_TESTS = ^(worker_test|kern_cpu_test|broker_metrics_test|broker_test|collector_test|collector_report_test)$$
test-tsan: deps-test
	$(MAKE) build BUILD=build-tsan CMAKE_ARGS="-DBF_TSAN=ON -DBF_CUDA=OFF"
	cd build-tsan && BF_TEST_NO_FORK=1 BF_TEST_TIME_SCALE=5 \
	TSAN_OPTIONS="halt_on_error=1 suppressions=$(CURDIR)/tests/tsan.supp" \
	ctest --output-on-failure -j $(JOBS) --timeout 900 -R '$(TSAN_TESTS)' \
	  --output-junit ctest-junit.xml

# libFuzzer harnesses (tests/fuzz, docs/fuzzing.md): clang build in build-fuzz,
# then FUZZ_SECONDS per harness from the committed corpus; fails on any finding.
FUZZ_SECONDS ?= 30
fuzz:
	@./deploy/install-deps.sh $(DEB_PACKAGES) clang -- $(PY_PACKAGES)
	CC=clang CXX=clang++ cmake -S . -B build-fuzz -DBF_FUZZ=ON -DBF_CUDA=OFF
	cmake --build build-fuzz -j $(JOBS) --target fuzz_harnesses
	./tests/fuzz/run.sh build-fuzz $(FUZZ_SECONDS)

bench: deps build
	./bench/run-all.sh $(BUILD)

format:
	clang-format -i $$(git ls-files '*.c' '*.h' '*.cu' '*.cuh')

# Fails, naming each file and line, where a file differs from .clang-format.
format-check:
	@./deploy/install-deps.sh clang-format git --
	clang-format --dry-run --Werror $$(git ls-files '*.c' '*.h' '*.cu' '*.cuh')

clean:
	rm -rf $(BUILD)

$(BUILD)/demo-scenes:
	./$(BUILD)/beamfleet scenegen --out $(BUILD)/demo-scenes --count 16 --seed 1
