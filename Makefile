# The two commands the README gives: `make demo` and `make test`.
# Both bring the local brokers up first (installing them on a fresh machine).

CARGO ?= cargo

.PHONY: demo test brokers-up brokers-down lint bench

demo: brokers-up
	$(CARGO) run --release -- demo

test: brokers-up
	$(CARGO) test
	scripts/examples-smoke.sh

brokers-up:
	scripts/brokers.sh up

brokers-down:
	scripts/brokers.sh down

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings
