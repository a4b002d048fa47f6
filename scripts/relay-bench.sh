#!/usr/bin/env bash
# The relay as a process against a plain pipelined loop, in every direction
# (Kafka → Kafka, Kafka → RabbitMQ, RabbitMQ → Kafka, RabbitMQ → RabbitMQ)
# and message size, at 10 % head sampling exported as OTLP/HTTP to a local
# sink — issue 23's first target, one table.
#
#   scripts/relay-bench.sh [SIZE...]   sizes in bytes (default: 100 10240 102400)
#
# Each cell is `TB_BENCH_ONLY=process cargo bench --bench relay` (see
# benches/relay.rs): 3 interleaved rounds, timed from the first message
# out; the ratio is the relay's rate over the plain loop's in the same
# round, min/median/max. Brokers must be up (scripts/brokers.sh up).
# TB_BENCH_SAMPLE overrides the ratio (unset it with TB_BENCH_SAMPLE=).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
sizes=("${@:-100 10240 102400}")
read -r -a sizes <<<"${sizes[*]}"
export TB_BENCH_ONLY=process TB_BENCH_SAMPLE="${TB_BENCH_SAMPLE-0.1}"
# Fewer messages as they grow: each cell stays within a few minutes.
messages_for() { case "$1" in 100) echo 100000 ;; 10240) echo 20000 ;; *) echo 5000 ;; esac; }
echo "[relay-bench] building the benchmark (release)" >&2
cargo bench --bench relay --no-run 2>&1 | tail -1 >&2
printf '%-22s %7s %9s  %-22s %-16s %s\n' direction bytes messages "relay msg/s (min/med/max)" "ratio to plain" "plain msg/s"
for size in "${sizes[@]}"; do
  for direction in "kafka kafka" "kafka amqp" "amqp kafka" "amqp amqp"; do
    read -r from to <<<"$direction"
    n=$(messages_for "$size")
    echo "[relay-bench] $from -> $to, $n × $size bytes" >&2
    out=$(TB_BENCH_FROM=$from TB_BENCH_TO=$to TB_BENCH_PAYLOAD=$size TB_BENCH_MESSAGES=$n \
      cargo bench --bench relay 2>/dev/null) || { echo "[relay-bench] $from -> $to failed" >&2; continue; }
    relay=$(sed -n 's/^ *relay *\([0-9/]*\) msg\/s *ratio to plain \([0-9./]*\).*/\1 \2/p' <<<"$out")
    plain=$(sed -n 's/^ *plain pipelined *\([0-9/]*\) msg\/s.*/\1/p' <<<"$out")
    printf '%-22s %7s %9s  %-22s %-16s %s\n' "$from -> $to" "$size" "$n" "${relay% *}" "${relay#* }" "$plain"
  done
done
