#!/usr/bin/env bash
# Instructions per message of each overhead scenario (benches/scenarios.rs),
# counted by valgrind's callgrind: deterministic where wall time is noise.
#
#   scripts/instructions.sh [FILTER]   scenarios whose name contains FILTER
#
# Each scenario runs at two counts (LOW and HIGH steps, all threads
# counted: the batch span processor's export work included); the
# difference divided by HIGH-LOW is the cost of one message, set-up
# excluded. Prints a table, then traced − floor and unsampled − raw, with
# the SDK's own cost of an unsampled span where a scenario measures it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
filter="${1:-}"
low=2000 high=12000
command -v valgrind >/dev/null || { echo "[instructions] valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }
echo "[instructions] building the benchmark (release)" >&2
cargo bench --bench instructions --no-run 2>&1 | tail -1 >&2
bin=$(ls -t target/release/deps/instructions-* | grep -v '\.d$' | head -1)
count() { # NAME N -> instructions collected
  valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" run "$1" "$2" 2>&1 \
    | sed -n 's/.*Collected : \([0-9]*\).*/\1/p' | tail -1
}
declare -A per
for name in $("$bin" list); do
  [[ -z "$filter" || "$name" == *"$filter"* ]] || continue
  a=$(count "$name" "$low"); b=$(count "$name" "$high")
  per[$name]=$(( (b - a) / (high - low) ))
  printf '%-34s %8d instructions/message\n' "$name" "${per[$name]}"
done
for side in kafka/produce kafka/consume amqp/publish amqp/consume; do
  raw=${per[$side/raw]:-} traced=${per[$side/traced]:-} unsampled=${per[$side/traced-unsampled]:-}
  floor=${per[$side/sdk-span-floor]:-} unsampled_floor=${per[$side/sdk-unsampled-floor]:-}
  [[ -n "$raw" && -n "$traced" ]] || continue
  line="$side: traced − raw = $(( traced - raw ))"
  [[ -n "$floor" ]] && line+=", traced − sdk floor = $(( traced - floor ))"
  [[ -n "$unsampled" ]] && line+=", unsampled − raw = $(( unsampled - raw ))"
  [[ -n "$unsampled_floor" ]] && line+=" (the SDK's own part of it alone: $unsampled_floor)"
  echo "$line"
done
