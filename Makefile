# The two commands the README gives: `make demo` and `make test`.
# Both bring the local brokers up first (installing them on a fresh machine).
# Each phase says how long it took (scripts/phase.sh).

CARGO ?= cargo
PHASE = scripts/phase.sh

.PHONY: demo test brokers-up brokers-down lint bench

demo: brokers-up
	$(PHASE) demo $(CARGO) run --release -- demo

test: brokers-up
	$(PHASE) build $(CARGO) test --no-run
	$(PHASE) tests $(CARGO) test
	$(PHASE) examples scripts/examples-smoke.sh

brokers-up:
	$(PHASE) brokers scripts/brokers.sh up

brokers-down:
	scripts/brokers.sh down

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings
