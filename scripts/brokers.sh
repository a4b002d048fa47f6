#!/usr/bin/env bash
# Local brokers for tracebridge's tests and demo: RabbitMQ and tansu (an
# Apache-Kafka-compatible broker), on 127.0.0.1:5672 and 127.0.0.1:9092,
# and Redis (the shared correlation store) on 127.0.0.1:6379.
#
#   scripts/brokers.sh up      install what is missing, start what is down, wait
#   scripts/brokers.sh status  say what answers where
#   scripts/brokers.sh down    stop what this script started
#
# When KAFKA_BOOTSTRAP_SERVERS, AMQP_URL or REDIS_URL is set, that service is
# used as it is: nothing is installed or started for it, the script only
# waits for it. The tests also start a Redis of their own on another port
# (and stop it), so `redis-server` must be installed even then.
# Idempotent: running `up` twice starts nothing twice.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${TRACEBRIDGE_STATE_DIR:-$ROOT/.brokers}"
TANSU_VERSION="0.6.0"
KAFKA_DEFAULT="127.0.0.1:9092"
AMQP_DEFAULT="amqp://guest:guest@127.0.0.1:5672/%2f"
REDIS_DEFAULT="redis://127.0.0.1:6379"
WAIT_SECONDS="${TRACEBRIDGE_BROKER_WAIT:-90}"

say() { printf '[brokers] %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

# host:port of the first bootstrap server
kafka_addr() { local s="${KAFKA_BOOTSTRAP_SERVERS:-$KAFKA_DEFAULT}"; s="${s%%,*}"; echo "${s#*://}"; }

# host:port of an amqp:// URL (credentials and vhost stripped)
amqp_addr() {
  local url="${AMQP_URL:-$AMQP_DEFAULT}" rest
  rest="${url#*://}"; rest="${rest##*@}"; rest="${rest%%/*}"
  case "$rest" in *:*) echo "$rest" ;; *) echo "$rest:5672" ;; esac
}

# host:port of a redis:// URL
redis_addr() {
  local url="${REDIS_URL:-$REDIS_DEFAULT}" rest
  rest="${url#*://}"; rest="${rest##*@}"; rest="${rest%%/*}"
  case "$rest" in *:*) echo "$rest" ;; *) echo "$rest:6379" ;; esac
}

# The URL with its password replaced, for messages.
redact() { sed -E 's#(://[^:/@]+):[^@]*@#\1:***@#' <<<"$1"; }

answers() { # host:port
  local host="${1%:*}" port="${1##*:}"
  (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null
}

wait_for() { # name host:port
  local name="$1" addr="$2" waited=0
  until answers "$addr"; do
    if (( waited >= WAIT_SECONDS )); then
      die "$name does not answer on $addr after ${WAIT_SECONDS}s"
    fi
    (( waited % 10 == 0 )) && say "waiting for $name on $addr (${waited}s)"
    sleep 1; waited=$((waited + 1))
  done
}

as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

tansu_bin() {
  if command -v tansu >/dev/null 2>&1; then command -v tansu
  elif [[ -x "${CARGO_HOME:-$HOME/.cargo}/bin/tansu" ]]; then echo "${CARGO_HOME:-$HOME/.cargo}/bin/tansu"
  fi
}

install_tansu() {
  [[ -n "$(tansu_bin)" ]] && return 0
  command -v cargo >/dev/null || die "cargo is needed to install tansu"
  say "installing tansu $TANSU_VERSION with cargo (about 10 minutes on 2 cores, once per machine)"
  say "build log: $STATE/tansu-install.log"
  mkdir -p "$STATE"
  # dynostore is required even for memory:// storage; postgres for restart tests.
  cargo install "tansu@$TANSU_VERSION" --locked --features dynostore,postgres \
    >"$STATE/tansu-install.log" 2>&1 &
  local pid=$! started=$SECONDS
  while kill -0 "$pid" 2>/dev/null; do
    sleep 30
    say "  still building tansu ($(( SECONDS - started ))s): $(grep -E '^ +Compiling' "$STATE/tansu-install.log" | tail -1 | sed 's/^ *//')"
  done
  wait "$pid" || { tail -20 "$STATE/tansu-install.log" >&2; die "cargo install tansu failed"; }
  say "tansu installed: $(tansu_bin)"
}

start_tansu() {
  local addr; addr="$(kafka_addr)"
  if answers "$addr"; then say "Kafka protocol already answers on $addr"; return 0; fi
  install_tansu
  mkdir -p "$STATE"
  say "starting tansu on $addr (memory storage)"
  setsid nohup "$(tansu_bin)" broker \
    --listener-url "tcp://$addr" \
    --advertised-listener-url "tcp://$addr" \
    --storage-engine "memory://tansu/" \
    >"$STATE/tansu.log" 2>&1 < /dev/null &
  echo $! >"$STATE/tansu.pid"
  wait_for tansu "$addr"
}

apt_install() { # command package: install the Debian package unless the command exists
  command -v "$1" >/dev/null 2>&1 && return 0
  say "installing $2 from Debian's packages"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
}

# The package may start a service; either way `start_rabbitmq` checks.
install_rabbitmq() { apt_install rabbitmq-server rabbitmq-server; }

start_rabbitmq() {
  local addr; addr="$(amqp_addr)"
  if answers "$addr"; then say "AMQP already answers on $addr"; return 0; fi
  install_rabbitmq
  if ! answers "$addr"; then
    say "starting RabbitMQ (ready in about 15 s)"
    as_root rabbitmq-server -detached
    touch "$STATE/rabbitmq.started-by-us" 2>/dev/null || { mkdir -p "$STATE"; touch "$STATE/rabbitmq.started-by-us"; }
    as_root rabbitmqctl await_startup --timeout "$WAIT_SECONDS" >/dev/null 2>&1 || true
  fi
  wait_for RabbitMQ "$addr"
}

install_redis() { apt_install redis-server redis-server; }

start_redis() {
  local addr; addr="$(redis_addr)"
  install_redis
  if answers "$addr"; then say "Redis already answers on $addr"; return 0; fi
  say "starting redis-server on $addr (nothing kept on disk)"
  redis-server --bind "${addr%:*}" --port "${addr##*:}" --save "" --appendonly no \
    --daemonize yes --pidfile "$STATE/redis.pid" --logfile "$STATE/redis.log"
  wait_for Redis "$addr"
}

up() {
  mkdir -p "$STATE"
  if [[ -n "${KAFKA_BOOTSTRAP_SERVERS:-}" ]]; then
    say "using Kafka at $KAFKA_BOOTSTRAP_SERVERS (KAFKA_BOOTSTRAP_SERVERS is set; starting nothing)"
    wait_for Kafka "$(kafka_addr)"
  else
    start_tansu
  fi
  if [[ -n "${AMQP_URL:-}" ]]; then
    say "using AMQP at $(redact "$AMQP_URL") (AMQP_URL is set; starting nothing)"
    wait_for RabbitMQ "$(amqp_addr)"
  else
    start_rabbitmq
  fi
  if [[ -n "${REDIS_URL:-}" ]]; then
    say "using Redis at $(redact "$REDIS_URL") (REDIS_URL is set; starting nothing)"
    install_redis
    wait_for Redis "$(redis_addr)"
  else
    start_redis
  fi
  status
}

status() {
  local k a rc=0; k="$(kafka_addr)"; a="$(amqp_addr)"
  if answers "$k"; then say "Kafka:    up   at $k"; else say "Kafka:    DOWN at $k"; rc=1; fi
  if answers "$a"; then say "RabbitMQ: up   at $a ($(redact "${AMQP_URL:-$AMQP_DEFAULT}"))"; else say "RabbitMQ: DOWN at $a"; rc=1; fi
  local r; r="$(redis_addr)"
  if answers "$r"; then say "Redis:    up   at $r"; else say "Redis:    DOWN at $r"; rc=1; fi
  return $rc
}

down() {
  if [[ -f "$STATE/tansu.pid" ]]; then
    local pid; pid="$(cat "$STATE/tansu.pid")"
    if kill "$pid" 2>/dev/null; then say "stopped tansu (pid $pid)"; fi
    rm -f "$STATE/tansu.pid"
  fi
  if [[ -f "$STATE/redis.pid" ]]; then
    local rpid; rpid="$(cat "$STATE/redis.pid")"
    if kill "$rpid" 2>/dev/null; then say "stopped redis-server (pid $rpid)"; fi
    rm -f "$STATE/redis.pid"
  fi
  if [[ -f "$STATE/rabbitmq.started-by-us" ]]; then
    as_root rabbitmqctl stop >/dev/null 2>&1 && say "stopped RabbitMQ"
    rm -f "$STATE/rabbitmq.started-by-us"
  fi
  say "brokers this script did not start are left running"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
