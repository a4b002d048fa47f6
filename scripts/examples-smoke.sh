#!/usr/bin/env bash
# Runs the examples against the local brokers, as a user would: each must
# exit 0. Called by `make test` after the test suite.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
topic="tracebridge.example.$(date +%s).$$"
spans="$(mktemp -d)/spans.jsonl"
export TRACEBRIDGE_SPANS_FILE="$spans" RUST_LOG="${RUST_LOG:-warn}"
echo "[examples] kafka_worker produce/consume on $topic"
cargo run -q --example kafka_worker -- --topic "$topic" produce --count 5
cargo run -q --example kafka_worker -- --topic "$topic" consume --group "g-$topic" --count 5
queue="tracebridge.example.$(date +%s).$$"
echo "[examples] amqp_worker publish/consume on $queue"
cargo run -q --example amqp_worker -- --exchange "$queue" --queue "$queue" publish --count 5
cargo run -q --example amqp_worker -- --exchange "$queue" --queue "$queue" consume --count 5 --delete-when-done
test -s "$spans" || { echo "[examples] no spans were written to $spans" >&2; exit 1; }
echo "[examples] ok (spans in $spans)"
