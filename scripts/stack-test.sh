#!/usr/bin/env bash
# The observability stack for real (a CI phase, after `make test` started
# the brokers): builds and starts the OpenTelemetry Collector and Jaeger
# (scripts/stack.sh), then
#   1. keeping every trace: the Kafka → relay → RabbitMQ flow is one trace in
#      Jaeger and in the collector's file (tests/stack.rs), and the demo's
#      traces read back from Jaeger are whole;
#   2. at the seeds' kind of sampling (5 % of ordinary traces): every error
#      and slow trace is kept, most others are not (tests/stack.rs), and the
#      demo's failing order still reaches Jaeger whole;
#   3. at 5 %, messages that wait in Kafka longer than decision_wait: late
#      process spans follow their trace's decision, so errors they alone
#      show are lost; nothing is split (tests/stack.rs).
# Stops the stack at the end, whatever happened.
set -euo pipefail
cd "$(dirname "$0")/.."
trap 'scripts/stack.sh down' EXIT
# The tests' traces are complete within a second of their first span: a
# short decision wait keeps the phase fast (production: see the config).
export TRACEBRIDGE_TAIL_DECISION_WAIT=3s

# The demo exporting to the collector checks its traces in Jaeger too.
run_demo() {
  OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318 \
    cargo run --quiet -- demo --out "target/demo-stack-$TRACEBRIDGE_TAIL_SAMPLE_PERCENT" >/dev/null
}

# At PERCENT % of ordinary traces: restart the stack, run the stack test
# that expects that sampling, then the demo.
with_sampling() {
  export TRACEBRIDGE_TAIL_SAMPLE_PERCENT=$1
  echo "[stack-test] $TRACEBRIDGE_TAIL_SAMPLE_PERCENT % of ordinary traces kept"
  scripts/stack.sh restart
  # Exactly one test must run: a renamed test would otherwise match
  # nothing and pass as "0 passed".
  local log=target/stack-test-$1.log
  cargo test --test stack -- --ignored --exact "$2" 2>&1 | tee "$log"
  grep -q "test result: ok. 1 passed" "$log" || {
    echo "[stack-test] $2 did not run and pass exactly once" >&2
    exit 1
  }
  run_demo
}

with_sampling 100 a_kafka_to_amqp_flow_is_one_trace_in_jaeger_and_in_the_collectors_file
with_sampling 5 tail_sampling_keeps_every_error_and_slow_trace_and_drops_most_others
with_sampling 5 a_queue_delay_beyond_decision_wait_loses_late_errors_and_splits_nothing
