#!/usr/bin/env bash
# Local brokers for tracebridge's tests and demo: Apache Kafka, RabbitMQ and
# Redis (the shared correlation store), on 127.0.0.1:9092, :5672 and :6379.
#
#   scripts/brokers.sh up       install what is missing, start what is down, wait
#   scripts/brokers.sh status   say what answers where
#   scripts/brokers.sh down     stop what this script started
#   scripts/brokers.sh kafka-cluster up [N]|down|status|kill-node I|start-node I
#                               an N-node Apache Kafka cluster (default 3) on
#                               127.0.0.1:19092+I, for failover tests
#   scripts/brokers.sh kafka-secure up|down
#                               a Kafka node with TLS and SASL/SCRAM listeners
#                               (127.0.0.1:19393-19395), for the security tests
#
# `up` also installs what building tracebridge needs beyond Rust: OpenSSL's
# headers and pkg-config (librdkafka is built with TLS and SASL/SCRAM); and
# the foreign peers the sampling tests run: the OpenTelemetry Python SDK and
# kafka-python, pinned, in a virtualenv at .brokers/python; the OpenTelemetry
# Java agent's jar (Maven Central), at .brokers/java-peer.
#
# Apache Kafka (KAFKA_VERSION below) comes from its official jars on Maven
# Central: `mvn` copies them once into the state folder and the JVM runs
# `kafka.Kafka` from there, one combined KRaft broker+controller. On a
# machine with no JVM or no Maven, tansu (an Apache-Kafka-compatible broker
# in Rust, installed with cargo) stands in, and the script says so. RabbitMQ
# and Redis come from Debian's packages.
#
# When KAFKA_BOOTSTRAP_SERVERS, AMQP_URL or REDIS_URL is set, that service is
# used as it is: nothing is installed or started for it, the script only
# waits for it. The tests also start a Redis of their own on another port
# (and stop it), so `redis-server` must be installed even then.
# Idempotent: running `up` twice starts nothing twice. No systemd needed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${TRACEBRIDGE_STATE_DIR:-$ROOT/.brokers}"
KAFKA_VERSION="4.1.1"   # also in scripts/kafka/pom.xml
TANSU_VERSION="0.6.0"
KAFKA_DEFAULT="127.0.0.1:9092"
AMQP_DEFAULT="amqp://guest:guest@127.0.0.1:5672/%2f"
REDIS_DEFAULT="redis://127.0.0.1:6379"
WAIT_SECONDS="${TRACEBRIDGE_BROKER_WAIT:-90}"
# The machine has 2 cores and 24 GiB and builds Rust beside the broker: a
# small heap keeps GC pauses short and leaves the memory to rustc.
KAFKA_HEAP="${TRACEBRIDGE_KAFKA_HEAP:--Xms256m -Xmx768m}"
CLUSTER_HEAP="-Xms128m -Xmx512m"
CLUSTER_BASE_PORT=19092   # node I listens on 19092+I-1, its controller on 19192+I-1

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

# True when a Kafka broker at host:port answers a Metadata request (v4,
# all topics) listing at least one broker: an open port alone can be a
# broker still starting. Plain bash, so it needs no Kafka client.
kafka_answers_metadata() { # host:port
  local reply
  reply="$(timeout 5 bash -c '
    exec 3<>"/dev/tcp/$0/$1" || exit 1
    # size 15 | api_key 3 (Metadata) | version 4 | correlation 7 | client_id null | topics null | auto-create false
    printf "\x00\x00\x00\x0f\x00\x03\x00\x04\x00\x00\x00\x07\xff\xff\xff\xff\xff\xff\x00" >&3
    head -c 16 <&3 | od -An -tx1 | tr -d " \n"' "${1%:*}" "${1##*:}" 2>/dev/null)" || return 1
  # size(4) correlation(4) throttle(4) broker count(4)
  [[ ${#reply} -eq 32 && "${reply:8:8}" == 00000007 && $((16#${reply:24:8})) -ge 1 ]]
}

wait_for() { # name host:port [check]
  local name="$1" addr="$2" check="${3:-answers}" waited=0
  until "$check" "$addr"; do
    if (( waited >= WAIT_SECONDS )); then
      die "$name does not answer on $addr after ${WAIT_SECONDS}s"
    fi
    (( waited % 10 == 0 )) && say "waiting for $name on $addr (${waited}s)"
    sleep 1; waited=$((waited + 1))
  done
  say "$name answers on $addr (waited ${waited}s)"
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

# --- Apache Kafka from Maven Central -----------------------------------------

KAFKA_HOME="$STATE/kafka-$KAFKA_VERSION"   # the jars (libs/), cached across runs

have_jvm() { command -v java >/dev/null 2>&1 && command -v mvn >/dev/null 2>&1; }

kafka_java() { # java arguments…: runs a Kafka main class from the cached jars
  java -cp "$KAFKA_HOME/libs/*" "$@"
}

install_kafka() {
  [[ -f "$KAFKA_HOME/libs.complete" ]] && return 0
  mkdir -p "$KAFKA_HOME"; rm -rf "$KAFKA_HOME/libs"
  local log="$STATE/kafka-install.log" started=$SECONDS
  say "fetching Apache Kafka $KAFKA_VERSION's jars from Maven Central with mvn (about 45 MB the first time; cached in $KAFKA_HOME)"
  say "download log: $log"
  mvn -B -f "$ROOT/scripts/kafka/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$KAFKA_HOME/libs" >"$log" 2>&1 &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 5
    kill -0 "$pid" 2>/dev/null && say "  still fetching ($(( SECONDS - started ))s, $(grep -c 'Downloaded from' "$log" || true) files so far)"
  done
  wait "$pid" || { tail -20 "$log" >&2; die "mvn could not fetch Apache Kafka $KAFKA_VERSION (log: $log)"; }
  [[ -f "$KAFKA_HOME/libs/kafka_2.13-$KAFKA_VERSION.jar" ]] || die "mvn finished but kafka_2.13-$KAFKA_VERSION.jar is missing (log: $log)"
  # The storage tool's chatter goes to stderr at WARN, so its output stays readable.
  sed 's/^rootLogger.level = .*/rootLogger.level = warn/; s/SYSTEM_OUT/SYSTEM_ERR/' \
    "$ROOT/scripts/kafka/log4j2.properties" >"$KAFKA_HOME/tools-log4j2.properties"
  touch "$KAFKA_HOME/libs.complete"
  say "Apache Kafka $KAFKA_VERSION ready: $(ls "$KAFKA_HOME/libs" | wc -l) jars, $(du -sh "$KAFKA_HOME/libs" | cut -f1), in $(( SECONDS - started ))s"
}

# One combined KRaft broker+controller's server.properties.
kafka_node_config() { # node_dir node_id port controller_port voters replication_factor
  local dir="$1" id="$2" port="$3" cport="$4" voters="$5" rf="$6" isr=1
  (( rf >= 3 )) && isr=2
  mkdir -p "$dir/data"
  cat >"$dir/server.properties" <<EOF
process.roles=broker,controller
node.id=$id
controller.quorum.voters=$voters
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$dir/data
num.partitions=1
default.replication.factor=$rf
min.insync.replicas=$isr
offsets.topic.replication.factor=$rf
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$isr
share.coordinator.state.topic.replication.factor=$rf
share.coordinator.state.topic.min.isr=$isr
# Topics are created explicitly, as on most production clusters.
auto.create.topics.enable=false
# Tests join consumer groups all the time: no 3 s wait for more members.
group.initial.rebalance.delay.ms=0
# What the tests write is thrown away: keep the disk small.
log.retention.hours=2
log.segment.bytes=67108864
EOF
}

start_kafka_node() { # node_dir heap cluster_id
  local dir="$1" heap="$2" cluster_id="$3"
  if [[ ! -f "$dir/data/meta.properties" ]]; then
    kafka_java -Dlog4j2.configurationFile="$KAFKA_HOME/tools-log4j2.properties" \
      kafka.tools.StorageTool format -t "$cluster_id" -c "$dir/server.properties" \
      >"$dir/format.log" 2>&1 || { cat "$dir/format.log" >&2; die "could not format KRaft storage in $dir"; }
  fi
  # $heap is several JVM options: split on purpose.
  # shellcheck disable=SC2086
  setsid nohup java $heap -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$ROOT/scripts/kafka/log4j2.properties" \
    -cp "$KAFKA_HOME/libs/*" kafka.Kafka "$dir/server.properties" \
    >>"$dir/kafka.log" 2>&1 </dev/null &
  echo $! >"$dir/kafka.pid"
}

# Waits until the node answers metadata requests; fails at once if it died.
wait_kafka_node() { # name host:port node_dir
  local name="$1" addr="$2" dir="$3" waited=0
  until kafka_answers_metadata "$addr"; do
    if ! kill -0 "$(cat "$dir/kafka.pid")" 2>/dev/null; then
      tail -15 "$dir/kafka.log" >&2; die "$name exited while starting (log: $dir/kafka.log)"
    fi
    (( waited >= WAIT_SECONDS )) && die "$name does not answer metadata requests on $addr after ${WAIT_SECONDS}s (log: $dir/kafka.log)"
    (( waited % 10 == 0 )) && say "waiting for $name on $addr (${waited}s)"
    sleep 1; waited=$((waited + 1))
  done
  say "$name answers metadata requests on $addr (waited ${waited}s; log: $dir/kafka.log)"
}

stop_kafka_node() { # node_dir signal
  local dir="$1" sig="${2:-TERM}" pid
  [[ -f "$dir/kafka.pid" ]] || return 0
  pid="$(cat "$dir/kafka.pid")"
  if kill -"$sig" "$pid" 2>/dev/null; then
    # A clean stop flushes and hands leadership over: give it 30 s.
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$dir/kafka.pid"
}

new_cluster_id() {
  kafka_java -Dlog4j2.configurationFile="$KAFKA_HOME/tools-log4j2.properties" kafka.tools.StorageTool random-uuid
}

start_kafka() {
  local addr; addr="$(kafka_addr)"
  if answers "$addr"; then
    say "Kafka already answers on $addr"
    wait_for Kafka "$addr" kafka_answers_metadata
    return 0
  fi
  if ! have_jvm; then
    say "no java or mvn on this machine: tansu $TANSU_VERSION stands in for Apache Kafka (delivery guarantees are not proven on it; see README)"
    start_tansu
    return 0
  fi
  install_kafka
  local dir="$STATE/kafka" port="${addr##*:}" cport=$(( ${addr##*:} + 1 ))
  mkdir -p "$dir"
  [[ -s "$dir/cluster.id" ]] || new_cluster_id >"$dir/cluster.id"
  kafka_node_config "$dir" 1 "$port" "$cport" "1@127.0.0.1:$cport" 1
  say "starting Apache Kafka $KAFKA_VERSION on $addr (KRaft broker+controller, controller on :$cport, heap $KAFKA_HEAP)"
  start_kafka_node "$dir" "$KAFKA_HEAP" "$(cat "$dir/cluster.id")"
  wait_kafka_node "Apache Kafka" "$addr" "$dir"
}

# --- The N-node cluster for failover tests ------------------------------------

CLUSTER="$STATE/kafka-cluster"

cluster_port() { echo $(( CLUSTER_BASE_PORT + $1 - 1 )); }
cluster_cport() { echo $(( CLUSTER_BASE_PORT + 100 + $1 - 1 )); }
cluster_nodes() { cat "$CLUSTER/nodes" 2>/dev/null || echo 0; }
cluster_bootstrap() {
  local i out=""
  for i in $(seq 1 "$(cluster_nodes)"); do out+="127.0.0.1:$(cluster_port "$i"),"; done
  echo "${out%,}"
}

cluster_up() { # nodes
  local n="${1:-3}" i voters=""
  [[ "$n" =~ ^[1-9]$ ]] || die "kafka-cluster up takes a node count from 1 to 9, not '$n'"
  have_jvm || die "the Kafka cluster needs java and mvn"
  install_kafka
  if [[ -f "$CLUSTER/nodes" && "$(cluster_nodes)" != "$n" ]]; then cluster_down; fi
  mkdir -p "$CLUSTER"
  echo "$n" >"$CLUSTER/nodes"
  [[ -s "$CLUSTER/cluster.id" ]] || new_cluster_id >"$CLUSTER/cluster.id"
  for i in $(seq 1 "$n"); do voters+="$i@127.0.0.1:$(cluster_cport "$i"),"; done
  local rf=$(( n >= 3 ? 3 : n ))
  for i in $(seq 1 "$n"); do
    kafka_node_config "$CLUSTER/node$i" "$i" "$(cluster_port "$i")" "$(cluster_cport "$i")" "${voters%,}" "$rf"
    if ! answers "127.0.0.1:$(cluster_port "$i")"; then
      say "starting Kafka cluster node $i of $n on 127.0.0.1:$(cluster_port "$i")"
      start_kafka_node "$CLUSTER/node$i" "$CLUSTER_HEAP" "$(cat "$CLUSTER/cluster.id")"
    fi
  done
  for i in $(seq 1 "$n"); do
    wait_kafka_node "Kafka cluster node $i" "127.0.0.1:$(cluster_port "$i")" "$CLUSTER/node$i"
  done
  say "Kafka cluster up: $n node(s), replication factor $rf, min.insync.replicas $(( rf >= 3 ? 2 : 1 ))"
  cluster_bootstrap
}

cluster_node_arg() { # I
  [[ "$1" =~ ^[1-9]$ && "$1" -le "$(cluster_nodes)" ]] || die "no cluster node '$1' (the cluster has $(cluster_nodes))"
}

cluster_kill_node() { cluster_node_arg "$1"; stop_kafka_node "$CLUSTER/node$1" KILL; say "killed cluster node $1"; }
cluster_stop_node() { cluster_node_arg "$1"; stop_kafka_node "$CLUSTER/node$1" TERM; say "stopped cluster node $1"; }

cluster_start_node() {
  cluster_node_arg "$1"
  local addr; addr="127.0.0.1:$(cluster_port "$1")"
  answers "$addr" || start_kafka_node "$CLUSTER/node$1" "$CLUSTER_HEAP" "$(cat "$CLUSTER/cluster.id")"
  wait_kafka_node "Kafka cluster node $1" "$addr" "$CLUSTER/node$1"
}

# Stops every node and deletes the cluster's data: each test starts afresh.
cluster_down() {
  local i
  for i in $(seq 1 "$(cluster_nodes)"); do stop_kafka_node "$CLUSTER/node$i" TERM; done
  rm -rf "$CLUSTER"
  say "Kafka cluster stopped and its data removed"
}

cluster_status() {
  local i rc=0
  (( $(cluster_nodes) > 0 )) || { say "Kafka cluster: not started"; return 1; }
  for i in $(seq 1 "$(cluster_nodes)"); do
    if kafka_answers_metadata "127.0.0.1:$(cluster_port "$i")"; then say "cluster node $i: up   at 127.0.0.1:$(cluster_port "$i")"
    else say "cluster node $i: DOWN at 127.0.0.1:$(cluster_port "$i")"; rc=1; fi
  done
  return $rc
}

# --- A Kafka node with TLS and SASL/SCRAM listeners, for the security tests ---
#
# One KRaft node of its own (the shared broker is never reconfigured):
# PLAINTEXT on 19392 (administration), SSL on 19393, SASL_PLAINTEXT with
# SCRAM-SHA-512 on 19394, SASL_SSL with SCRAM-SHA-512 on 19395, controller
# on 19396. A CA and a server certificate for 127.0.0.1/localhost are made
# with openssl; the SCRAM user is written at format time. What clients need
# is printed as KEY=VALUE lines: bootstrap addresses, the CA file, the user.

SECURE="$STATE/kafka-secure"
SECURE_USER="tracebridge"
SECURE_PASSWORD="tracebridge-scram-secret"

secure_certs() {
  [[ -s "$SECURE/ca.pem" && -s "$SECURE/server.pem" ]] && return 0
  command -v openssl >/dev/null || apt_install openssl openssl
  mkdir -p "$SECURE"
  local log="$SECURE/openssl.log"
  {
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=tracebridge test CA" \
      -keyout "$SECURE/ca.key" -out "$SECURE/ca.pem"
    openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
      -keyout "$SECURE/server.key" -out "$SECURE/server.csr"
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$SECURE/san.ext"
    openssl x509 -req -in "$SECURE/server.csr" -CA "$SECURE/ca.pem" -CAkey "$SECURE/ca.key" \
      -CAcreateserial -days 3650 -extfile "$SECURE/san.ext" -out "$SECURE/server.crt"
    # Kafka's PEM key store: the PKCS#8 key, then the certificate chain.
    openssl pkcs8 -topk8 -nocrypt -in "$SECURE/server.key" -out "$SECURE/server.p8"
    cat "$SECURE/server.p8" "$SECURE/server.crt" "$SECURE/ca.pem" >"$SECURE/server.pem"
  } >"$log" 2>&1 || { tail -10 "$log" >&2; die "openssl could not make the test certificates (log: $log)"; }
}

# The state folder of the secure node answering now, whichever checkout
# started it (its certificates are there).
running_secure_home() {
  local pid props
  for pid in $(pgrep -f 'kafka[.]Kafka .*kafka-secure/node/server[.]properties' || true); do
    props="$(tr '\0' '\n' <"/proc/$pid/cmdline" | grep 'kafka-secure/node/server.properties' | head -1)"
    [[ -n "$props" ]] && { dirname "$(dirname "$props")"; return 0; }
  done
  return 1
}

secure_up() {
  have_jvm || die "the secure Kafka node needs java and mvn"
  install_kafka
  local home="$SECURE"
  if answers 127.0.0.1:19392; then
    home="$(running_secure_home)" || die "something other than the secure Kafka node answers on 127.0.0.1:19392"
    if [[ -s "$home/ca.pem" ]]; then
      say "the secure Kafka node already runs (state: $home)"
    else
      # Its checkout (and certificates) are gone: replace it with ours.
      say "the secure Kafka node running from $home has lost its certificates: restarting it here"
      pkill -f "kafka[.]Kafka $home/node/server[.]properties" || true
      for _ in $(seq 1 60); do answers 127.0.0.1:19392 || break; sleep 0.5; done
      home="$SECURE"
    fi
  fi
  local dir="$home/node"
  if ! answers 127.0.0.1:19392; then
    secure_certs
    mkdir -p "$dir/data"
    cat >"$dir/server.properties" <<PROPERTIES
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:19396
listeners=PLAINTEXT://127.0.0.1:19392,SSL://127.0.0.1:19393,SASL_PLAINTEXT://127.0.0.1:19394,SASL_SSL://127.0.0.1:19395,CONTROLLER://127.0.0.1:19396
advertised.listeners=PLAINTEXT://127.0.0.1:19392,SSL://127.0.0.1:19393,SASL_PLAINTEXT://127.0.0.1:19394,SASL_SSL://127.0.0.1:19395
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
ssl.keystore.type=PEM
ssl.keystore.location=$SECURE/server.pem
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
log.dirs=$dir/data
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
auto.create.topics.enable=false
group.initial.rebalance.delay.ms=0
PROPERTIES
    if [[ ! -f "$dir/data/meta.properties" ]]; then
      [[ -s "$SECURE/cluster.id" ]] || new_cluster_id >"$SECURE/cluster.id"
      kafka_java -Dlog4j2.configurationFile="$KAFKA_HOME/tools-log4j2.properties" \
        kafka.tools.StorageTool format -t "$(cat "$SECURE/cluster.id")" -c "$dir/server.properties" \
        --add-scram "SCRAM-SHA-512=[name=$SECURE_USER,password=$SECURE_PASSWORD]" \
        >"$dir/format.log" 2>&1 || { cat "$dir/format.log" >&2; die "could not format the secure node's storage"; }
    fi
    say "starting the secure Kafka node (SSL :19393, SASL/SCRAM :19394, SASL_SSL :19395)"
    start_kafka_node "$dir" "$CLUSTER_HEAP" "$(cat "$SECURE/cluster.id")"
  fi
  wait_kafka_node "secure Kafka node" 127.0.0.1:19392 "$dir"
  echo "PLAINTEXT=127.0.0.1:19392"
  echo "SSL=127.0.0.1:19393"
  echo "SASL_PLAINTEXT=127.0.0.1:19394"
  echo "SASL_SSL=127.0.0.1:19395"
  echo "CA=$home/ca.pem"
  echo "USER=$SECURE_USER"
  echo "PASSWORD=$SECURE_PASSWORD"
}

secure_down() {
  local home="$SECURE"
  [[ -f "$home/node/kafka.pid" ]] || home="$(running_secure_home)" || home="$SECURE"
  stop_kafka_node "$home/node" TERM
  rm -rf "$home"
  say "secure Kafka node stopped and its data removed"
}

# --- RabbitMQ and Redis from Debian's packages ------------------------------

APT_UPDATED=""
apt_install() { # command package: install the Debian package unless the command exists
  # (an empty command: install it, for packages that bring no command)
  [[ -n "$1" ]] && command -v "$1" >/dev/null 2>&1 && return 0
  local started=$SECONDS log="$STATE/apt-$2.log"
  mkdir -p "$STATE"
  if [[ -z "$APT_UPDATED" ]]; then
    say "apt-get update (once)"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >"$STATE/apt-update.log" 2>&1 \
      || { tail -5 "$STATE/apt-update.log" >&2; die "apt-get update failed (log: $STATE/apt-update.log)"; }
    APT_UPDATED=1
  fi
  say "installing $2 from Debian's packages (log: $log)"
  # No init system here: keep the package's scripts from starting the service
  # (policy-rc.d exit 101 = "not allowed"); this script starts it itself.
  local policy=/usr/sbin/policy-rc.d added_policy=""
  if [[ ! -e "$policy" ]]; then
    printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null && as_root chmod +x "$policy" && added_policy=1
  fi
  local rc=0
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$2" >"$log" 2>&1 || rc=$?
  [[ -n "$added_policy" ]] && as_root rm -f "$policy"
  (( rc == 0 )) || { tail -15 "$log" >&2; die "apt-get install $2 failed (log: $log)"; }
  [[ -z "$1" ]] || command -v "$1" >/dev/null 2>&1 || die "$2 installed but '$1' is not on PATH"
  say "$2 installed in $(( SECONDS - started ))s"
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


# tracebridge links librdkafka with TLS and SASL/SCRAM (OpenSSL): its build
# needs OpenSSL's headers and pkg-config, installed here before `make test`
# builds anything.
build_prerequisites() {
  apt_install pkg-config pkg-config
  pkg-config --exists openssl 2>/dev/null || apt_install "" libssl-dev
  pkg-config --exists openssl || die "libssl-dev installed but pkg-config does not find openssl"
}

# The foreign producer of tests/sampling_flow.rs: OpenTelemetry's Python SDK
# (which writes the W3C random flag) and a pure-Python Kafka client, pinned,
# in a virtualenv of the state folder. Reused when it already has them.
PYTHON_PEER_PACKAGES=(opentelemetry-sdk==1.45.2 kafka-python==3.0.12)
python_peer() {
  local venv="$STATE/python" started=$SECONDS
  if [[ -x "$venv/bin/python" ]] && "$venv/bin/python" -c 'import opentelemetry.sdk, kafka' 2>/dev/null; then
    say "Python peer ready in $venv"
    return
  fi
  command -v python3 >/dev/null 2>&1 || die "the sampling test's Python peer needs python3"
  say "installing the Python peer (${PYTHON_PEER_PACKAGES[*]}) into $venv (about 20 s)"
  python3 -m venv "$venv" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "${PYTHON_PEER_PACKAGES[@]}" \
    || die "pip could not install ${PYTHON_PEER_PACKAGES[*]}"
  say "Python peer installed in $(( SECONDS - started ))s"
}

# The OpenTelemetry Java agent, for the Kafka producer of
# tests/relay_sampling.rs (kafka-clients comes from the Kafka jars above).
# 2.30 and later write the W3C Level 2 random flag (`03`); 2.22 wrote `01`.
JAVA_AGENT_VERSION="2.33.0"
java_peer() {
  local dir="$STATE/java-peer" jar="opentelemetry-javaagent-$JAVA_AGENT_VERSION.jar"
  if ! have_jvm; then
    say "no java or mvn: the Java agent is not fetched, and tests/relay_sampling.rs's Java test will fail saying so"
    return
  fi
  # kafka-clients comes from Kafka's jars, fetched even when a Kafka started
  # elsewhere already answers.
  install_kafka
  if [[ -f "$dir/$jar" ]]; then say "Java agent $JAVA_AGENT_VERSION ready in $dir"; return; fi
  say "fetching the OpenTelemetry Java agent $JAVA_AGENT_VERSION with mvn (about 24 MB)"
  mvn -B -q dependency:copy -Dartifact="io.opentelemetry.javaagent:opentelemetry-javaagent:$JAVA_AGENT_VERSION" \
    -DoutputDirectory="$dir" >"$STATE/java-peer.log" 2>&1 \
    || { tail -20 "$STATE/java-peer.log" >&2; die "mvn could not fetch the Java agent (log: $STATE/java-peer.log)"; }
  say "Java agent $JAVA_AGENT_VERSION in $dir"
}

up() {
  mkdir -p "$STATE"
  local started=$SECONDS
  build_prerequisites
  python_peer
  java_peer
  if [[ -n "${KAFKA_BOOTSTRAP_SERVERS:-}" ]]; then
    say "using Kafka at $KAFKA_BOOTSTRAP_SERVERS (KAFKA_BOOTSTRAP_SERVERS is set; starting nothing)"
    wait_for Kafka "$(kafka_addr)"
  else
    start_kafka
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
  say "brokers ready in $(( SECONDS - started ))s"
}

status() {
  local k a r rc=0; k="$(kafka_addr)"; a="$(amqp_addr)"; r="$(redis_addr)"
  if kafka_answers_metadata "$k"; then say "Kafka:    up   at $k ($(kafka_kind))"
  elif answers "$k"; then say "Kafka:    port $k open but no metadata answer"; rc=1
  else say "Kafka:    DOWN at $k"; rc=1; fi
  if answers "$a"; then say "RabbitMQ: up   at $a ($(redact "${AMQP_URL:-$AMQP_DEFAULT}"))"; else say "RabbitMQ: DOWN at $a"; rc=1; fi
  if answers "$r"; then say "Redis:    up   at $r"; else say "Redis:    DOWN at $r"; rc=1; fi
  return $rc
}

kafka_kind() {
  if [[ -f "$STATE/kafka/kafka.pid" ]] && kill -0 "$(cat "$STATE/kafka/kafka.pid")" 2>/dev/null; then
    echo "Apache Kafka $KAFKA_VERSION started by this script; log: $STATE/kafka/kafka.log"
  elif [[ -f "$STATE/tansu.pid" ]]; then echo "tansu $TANSU_VERSION started by this script"
  else echo "not started by this script"; fi
}

down() {
  if [[ -f "$STATE/kafka/kafka.pid" ]]; then
    stop_kafka_node "$STATE/kafka" TERM
    say "stopped Apache Kafka"
  fi
  [[ -f "$CLUSTER/nodes" ]] && cluster_down
  [[ -f "$SECURE/node/kafka.pid" ]] && secure_down
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

usage() {
  echo "usage: $0 up|down|status" >&2
  echo "       $0 kafka-cluster up [NODES]|down|status|kill-node I|stop-node I|start-node I|bootstrap" >&2
  echo "       $0 kafka-secure up|down" >&2
  exit 2
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  kafka-secure)
    case "${2:-}" in
      up) secure_up ;;
      down) secure_down ;;
      *) usage ;;
    esac ;;
  kafka-cluster)
    case "${2:-}" in
      up) cluster_up "${3:-3}" ;;
      down) cluster_down ;;
      status) cluster_status ;;
      kill-node) cluster_kill_node "${3:-}" ;;
      stop-node) cluster_stop_node "${3:-}" ;;
      start-node) cluster_start_node "${3:-}" ;;
      bootstrap) cluster_bootstrap ;;
      *) usage ;;
    esac ;;
  *) usage ;;
esac
