#!/usr/bin/env bash
# The seeds' observability stack without Docker: the OpenTelemetry Collector
# (built with its official builder from bridge-config/stack/otelcol-builder.yaml)
# and Jaeger v2 (built from its Go module), run natively on their standard
# local ports with the SAME configurations docker-compose.yml mounts:
# bridge-config/otel-collector.yaml and bridge-config/stack/jaeger.yaml.
#
#   scripts/stack.sh build     build both (once; cached by version and manifest)
#   scripts/stack.sh up        build if needed, start both, wait until healthy
#   scripts/stack.sh restart   down, then up (to apply new TRACEBRIDGE_TAIL_* values)
#   scripts/stack.sh down      stop what `up` started (nothing else)
#   scripts/stack.sh status    what runs, where
#
# Ports: OTLP gRPC 4317 and HTTP 4318 (the collector), Jaeger UI and query
# API http://localhost:16686, collector health :13133, Jaeger health :13134.
# The collector's file exporter writes target/stack/spans.jsonl; logs are in
# target/stack/. The tail-sampling settings are read from the environment
# at `up` (see bridge-config/otel-collector.yaml): TRACEBRIDGE_TAIL_SAMPLE_PERCENT,
# TRACEBRIDGE_TAIL_DECISION_WAIT, TRACEBRIDGE_TAIL_SLOW_MS.
#
# Needs Go and the Go module proxy. The first build took 9.5 minutes on 2 cores
# from empty Go caches (Jaeger 6, the collector 3, downloads included); builds are kept in
# ${TRACEBRIDGE_STACK_CACHE:-~/.cache/tracebridge/stack}, build logs beside them.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

MANIFEST=$ROOT/bridge-config/stack/otelcol-builder.yaml
COLLECTOR_CONFIG=$ROOT/bridge-config/otel-collector.yaml
JAEGER_CONFIG=$ROOT/bridge-config/stack/jaeger.yaml
# Jaeger v2 releases are tagged v2.x for users and v1.(x+63) for Go:
# v1.76.0 is Jaeger v2.13.0, the newest the module proxy here serves.
JAEGER_MODULE=github.com/jaegertracing/jaeger
JAEGER_VERSION=v1.76.0
COLLECTOR_VERSION=$(sed -n 's/^  version: *//p' "$MANIFEST")

CACHE=${TRACEBRIDGE_STACK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tracebridge/stack}
MANIFEST_SUM=$(sha256sum "$MANIFEST" | cut -c1-12)
COLLECTOR_DIR=$CACHE/otelcol-$COLLECTOR_VERSION-$MANIFEST_SUM
COLLECTOR_BIN=$COLLECTOR_DIR/otelcol-tracebridge
JAEGER_DIR=$CACHE/jaeger-$JAEGER_VERSION
JAEGER_BIN=$JAEGER_DIR/jaeger
RUN=$ROOT/target/stack

say() { echo "[stack] $*"; }
die() {
  echo "[stack] error: $*" >&2
  exit 1
}

# Runs "$@" with its output in LOG, printing a line every 30 s so a long
# first build shows it is alive; on failure, the log's tail.
with_progress() {
  local what=$1 log=$2
  shift 2
  local started=$SECONDS
  "$@" >"$log" 2>&1 &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 5
    if kill -0 "$pid" 2>/dev/null && (((SECONDS - started) % 30 < 5)); then
      say "  still $what ($((SECONDS - started)) s; $(tail -n 1 "$log" | cut -c1-100))"
    fi
  done
  if ! wait "$pid"; then
    tail -n 30 "$log" >&2
    die "$what failed after $((SECONDS - started)) s; whole log: $log"
  fi
  say "  $what took $((SECONDS - started)) s"
}

build_collector() {
  if [[ -x $COLLECTOR_BIN ]]; then
    return
  fi
  command -v go >/dev/null || die "Go is needed to build the collector (https://go.dev/dl)"
  mkdir -p "$COLLECTOR_DIR"
  say "building the OpenTelemetry Collector $COLLECTOR_VERSION (first time: ~3 min; log: $COLLECTOR_DIR/build.log)"
  with_progress "installing the collector builder" "$COLLECTOR_DIR/builder-install.log" \
    env GOBIN="$COLLECTOR_DIR" go install "go.opentelemetry.io/collector/cmd/builder@v$COLLECTOR_VERSION"
  # The builder writes its sources under the manifest's output_path,
  # relative to where it runs.
  cp "$MANIFEST" "$COLLECTOR_DIR/manifest.yaml"
  with_progress "building the collector" "$COLLECTOR_DIR/build.log" \
    bash -c "cd '$COLLECTOR_DIR' && ./builder --config manifest.yaml"
  mv "$COLLECTOR_DIR/otelcol-build/otelcol-tracebridge" "$COLLECTOR_BIN"
}

build_jaeger() {
  if [[ -x $JAEGER_BIN ]]; then
    return
  fi
  command -v go >/dev/null || die "Go is needed to build Jaeger (https://go.dev/dl)"
  mkdir -p "$JAEGER_DIR"
  say "building Jaeger $JAEGER_VERSION (v2.13.0; first time: ~6 min; log: $JAEGER_DIR/build.log)"
  # `go install module@version` refuses a module whose go.mod has replace
  # directives (Jaeger's does), so build inside a copy of the module.
  local source
  source=$(go mod download -json "$JAEGER_MODULE@$JAEGER_VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
  [[ -d $source ]] || die "go mod download $JAEGER_MODULE@$JAEGER_VERSION gave no source directory"
  rm -rf "$JAEGER_DIR/src"
  cp -r "$source" "$JAEGER_DIR/src"
  chmod -R u+w "$JAEGER_DIR/src"
  with_progress "building Jaeger" "$JAEGER_DIR/build.log" \
    bash -c "cd '$JAEGER_DIR/src' && go build -trimpath -o '$JAEGER_BIN' ./cmd/jaeger"
  rm -rf "$JAEGER_DIR/src"
}

pid_of() {
  local file=$RUN/$1.pid
  if [[ -f $file ]] && kill -0 "$(cat "$file")" 2>/dev/null; then
    cat "$file"
  fi
}

# Fails when something else already listens on PORT.
port_free() {
  if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
    die "port $1 is taken by another program; stop it first ($2 needs it)"
  fi
}

# Waits until URL answers 200; on timeout, shows the program's log.
wait_healthy() {
  local name=$1 url=$2 log=$3 pid
  for _ in $(seq 1 120); do
    if curl -fsS -o /dev/null "$url" 2>/dev/null; then
      return
    fi
    pid=$(pid_of "$name")
    if [[ -z $pid ]]; then
      tail -n 20 "$log" >&2
      die "$name exited during start; log: $log"
    fi
    sleep 0.5
  done
  tail -n 20 "$log" >&2
  die "$name not healthy at $url after 60 s; log: $log"
}

start() {
  local name=$1 health=$2
  shift 2
  if [[ -n $(pid_of "$name") ]]; then
    say "$name already runs (pid $(pid_of "$name"))"
    return
  fi
  local log=$RUN/$name.log
  nohup "$@" >"$log" 2>&1 &
  echo $! >"$RUN/$name.pid"
  wait_healthy "$name" "$health" "$log"
  say "$name runs (pid $(pid_of "$name"), log $log)"
}

up() {
  build_jaeger
  build_collector
  mkdir -p "$RUN"
  [[ -n $(pid_of jaeger) ]] || {
    port_free 14317 jaeger
    port_free 16686 jaeger
  }
  start jaeger http://127.0.0.1:13134/status "$JAEGER_BIN" --config "$JAEGER_CONFIG"
  [[ -n $(pid_of collector) ]] || {
    port_free 4317 "the collector"
    port_free 4318 "the collector"
  }
  say "tail sampling: ${TRACEBRIDGE_TAIL_SAMPLE_PERCENT:-10} % of ordinary traces, every error, every trace over ${TRACEBRIDGE_TAIL_SLOW_MS:-2000} ms; decision after ${TRACEBRIDGE_TAIL_DECISION_WAIT:-30s}"
  start collector http://127.0.0.1:13133/ \
    env TRACEBRIDGE_JAEGER_HOST=127.0.0.1 TRACEBRIDGE_SPAN_FILE="$RUN/spans.jsonl" \
    "$COLLECTOR_BIN" --config "$COLLECTOR_CONFIG"
  say "OTLP: http://localhost:4317 (gRPC), http://localhost:4318 (HTTP); Jaeger: http://localhost:16686"
  say "span file: $RUN/spans.jsonl  (tracebridge traces $RUN/spans.jsonl)"
}

stop() {
  local name=$1 pid
  pid=$(pid_of "$name")
  if [[ -z $pid ]]; then
    rm -f "$RUN/$name.pid"
    return
  fi
  kill "$pid"
  for _ in $(seq 1 40); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.25
  done
  kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  rm -f "$RUN/$name.pid"
  say "$name stopped"
}

down() {
  # The collector first: it flushes to Jaeger on the way out.
  stop collector
  stop jaeger
}

status() {
  local name pid
  for name in collector jaeger; do
    pid=$(pid_of "$name")
    if [[ -n $pid ]]; then
      say "$name: running (pid $pid, log $RUN/$name.log)"
    else
      say "$name: not running"
    fi
  done
  say "collector build: $([[ -x $COLLECTOR_BIN ]] && echo "$COLLECTOR_BIN" || echo "not built")"
  say "jaeger build: $([[ -x $JAEGER_BIN ]] && echo "$JAEGER_BIN" || echo "not built")"
}

case ${1:-} in
  build)
    build_jaeger
    build_collector
    ;;
  up) up ;;
  down) down ;;
  restart)
    down
    up
    ;;
  status) status ;;
  *)
    echo "usage: $0 build|up|restart|down|status" >&2
    exit 2
    ;;
esac
