# The two commands of the README: `make demo` and `make test`. Both install what is missing
# (Debian packages, through scripts/install-deps), build, then run.
BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: all deps build test unit e2e demo bench fuzz clean

all: build

deps:
	scripts/install-deps

build: deps
	cmake -S . -B $(BUILD) -G Ninja $(CMAKE_FLAGS)
	cmake --build $(BUILD) -j $(JOBS)

# Every test: unit (GoogleTest) and end-to-end (pytest), through one ctest run.
test: build
	scripts/run-tests $(BUILD)

unit: build
	scripts/run-tests $(BUILD) -L unit

e2e: build
	scripts/run-tests $(BUILD) -L e2e

demo: build
	scripts/demo $(BUILD)

bench: build
	scripts/install-deps --bench
	@echo "benchmarks: see bench/README.md (e.g. bench/proxy)"

fuzz:
	CC=clang CXX=clang++ cmake -S . -B $(BUILD)-fuzz -G Ninja -DTRELLIS_FUZZ=ON
	cmake --build $(BUILD)-fuzz -j $(JOBS)

clean:
	rm -rf $(BUILD) $(BUILD)-fuzz
