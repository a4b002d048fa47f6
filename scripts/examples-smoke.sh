#!/usr/bin/env bash
# Runs the examples against the local brokers, as a user would: each must
# exit 0. Called by `make test` after the test suite (tests/worker_*.rs run
# the same workers with their spans checked).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
run="$(date +%s).$$"
export RUST_LOG="${RUST_LOG:-warn}"
for example in kafka_worker_before kafka_worker; do
  echo "[examples] $example: 3 orders seeded and billed (topic billing.orders.$run)"
  cargo run -q --example "$example" -- --orders "billing.orders.$run.$example" \
    --group "billing.$run.$example" --seed 3 --count 3 >/dev/null
done
spans="$(mktemp -d)/spans.jsonl"
echo "[examples] plain_worker_before, plain_worker (telemetry::init: spans to $spans)"
cargo run -q --example plain_worker_before -- --orders "plain.orders.$run.before" \
  --group "plain.$run.before" --seed 3 --count 3 >/dev/null
TRACEBRIDGE_SPANS_FILE="$spans" cargo run -q --example plain_worker -- \
  --orders "plain.orders.$run" --group "plain.$run" --seed 3 --count 3 2>/dev/null
grep -q '"name":"process plain.orders' "$spans" \
  || { echo "[examples] plain_worker wrote no process span to $spans" >&2; exit 1; }
for example in amqp_worker_before amqp_worker; do
  echo "[examples] $example: 3 orders seeded, 4 deliveries (one retried)"
  cargo run -q --example "$example" -- --orders "shipping.orders.$run.$example" \
    --seed 3 --count 4 >/dev/null
done
echo "[examples] ok"
