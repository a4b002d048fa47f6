# The two commands the README gives: `make demo` and `make test`.
# Both bring the local brokers up first (installing them on a fresh machine).
# Each phase says how long it took (scripts/phase.sh).

CARGO ?= cargo
PHASE = scripts/phase.sh

.PHONY: demo demo-stack test brokers-up brokers-down stack-up stack-down stack-test lint bench

demo: brokers-up
	$(PHASE) demo $(CARGO) run --release -- demo

# The demo exporting to the local Collector → Jaeger (scripts/stack.sh),
# its traces read back from Jaeger and checked.
demo-stack: brokers-up stack-up
	OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318 $(PHASE) demo $(CARGO) run --release -- demo

test: brokers-up
	$(PHASE) build $(CARGO) test --no-run
	$(PHASE) tests $(CARGO) test
	CARGO_TARGET_DIR=$(CURDIR)/target $(PHASE) otel-compat $(CARGO) test --manifest-path tests/otel-compat/Cargo.toml
	$(PHASE) examples scripts/examples-smoke.sh

brokers-up:
	$(PHASE) brokers scripts/brokers.sh up

brokers-down:
	scripts/brokers.sh down

# The OpenTelemetry Collector and Jaeger, built from their Go modules.
stack-up:
	$(PHASE) stack scripts/stack.sh up

stack-down:
	scripts/stack.sh down

# The stack tests (tests/stack.rs) and the demo against the stack.
stack-test: brokers-up
	$(PHASE) stack-test scripts/stack-test.sh

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings
