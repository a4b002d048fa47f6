#!/usr/bin/env bash
# Coverage-guided fuzzing of what the relay reads from outside (fuzz/):
#   extract         trace-context extraction, every format, arbitrary headers
#   kafka_to_amqp   Kafka headers → AMQP table → Kafka headers (relay translation)
#   amqp_to_kafka   an AMQP header table from arbitrary wire bytes → Kafka headers
#   config          relay config loading (env expansion, TOML, validation)
#   traces          `tracebridge traces` reading and drawing any span file
#
#   scripts/fuzz.sh [SECONDS] [TARGET…]   each target for SECONDS (default 30)
#
# Runs on the committed corpus (fuzz/corpus/TARGET) and grows it; a crash
# fails the script and leaves its input in fuzz/artifacts/TARGET. cargo-fuzz
# needs a nightly compiler's -Z flags: RUSTC_BOOTSTRAP=1 lets the stable
# toolchain accept them. cargo-fuzz is installed when missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../fuzz"
seconds="${1:-30}"; shift || true
targets=("$@"); (( ${#targets[@]} )) || targets=(extract kafka_to_amqp amqp_to_kafka config traces)
export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "[fuzz] installing cargo-fuzz (about a minute)" >&2
  cargo install cargo-fuzz --locked --quiet
fi
echo "[fuzz] building the targets (instrumented; several minutes the first time)" >&2
cargo fuzz build -O
for target in "${targets[@]}"; do
  echo "[fuzz] $target for ${seconds}s" >&2
  cargo fuzz run -O "$target" -- -max_total_time="$seconds" -print_final_stats=1 2>&1 \
    | grep -E '^(Done|stat::number_of_executed_units)|ERROR|panicked|SUMMARY' || true
  # grep hides libFuzzer's progress lines; the run's own status decides.
  [[ "${PIPESTATUS[0]}" -eq 0 ]] || { echo "[fuzz] $target FAILED (input in fuzz/artifacts/$target)" >&2; exit 1; }
done
echo "[fuzz] no crash" >&2
