#!/usr/bin/env bash
# Runs one phase of a build (`scripts/phase.sh NAME COMMAND…`) and says how
# long it took; with TRACEBRIDGE_PHASES=FILE set, also appends "NAME SECONDS
# STATUS" to FILE, so .ci/run can print every phase's time at the end.
set -uo pipefail
name="$1"; shift
started=$SECONDS
printf '[phase] %s: %s\n' "$name" "$*" >&2
"$@"
rc=$?
took=$(( SECONDS - started ))
printf '[phase] %s: %ss (exit %s)\n' "$name" "$took" "$rc" >&2
if [[ -n "${TRACEBRIDGE_PHASES:-}" ]]; then
  printf '%s %s %s\n' "$name" "$took" "$rc" >>"$TRACEBRIDGE_PHASES"
fi
exit "$rc"
