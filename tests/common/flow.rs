//! A flow of traced messages through a relay PROCESS, and the tally that
//! proves the at-least-once promise: every message sent arrives (0 lost),
//! duplicates are counted, and every delivered copy is in its origin trace.
//!
//! Messages are keyed `m{i}`: the Kafka key, or the AMQP `correlation_id`
//! (the relay maps one to the other by default).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use lapin::BasicProperties;
use lapin::options::{BasicGetOptions, BasicPublishOptions};
use lapin::types::AMQPValue;
use opentelemetry::Context;
use opentelemetry::trace::FutureExt as _;
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Headers;
use rdkafka::producer::FutureRecord;
use tracebridge::kafka::producer::FutureProducer;

use super::spans;

pub const BIN: &str = env!("CARGO_BIN_EXE_tracebridge");

/// Key → origin trace id (hex) of every message sent.
pub type Origins = HashMap<String, String>;

/// Key → the trace id of each copy that arrived (more than one: duplicates).
pub type Seen = HashMap<String, Vec<String>>;

/// The trace id inside a `traceparent` value ("" when there is none).
pub fn trace_of(traceparent: &[u8]) -> String {
    String::from_utf8_lossy(traceparent)
        .split('-')
        .nth(1)
        .unwrap_or("")
        .to_owned()
}

/// Sends keys `m{from}..m{from+n}` to a Kafka topic, each in its own trace,
/// with up to 500 sends in flight.
pub async fn send_kafka(bootstrap: &str, topic: &str, from: usize, n: usize) -> Origins {
    let cap = spans::capture();
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("message.timeout.ms", "60000")
        .set("acks", "all")
        .create()
        .expect("producer");
    let producer = producer.with_instrumentation(cap.instrumentation());
    let mut pending = FuturesUnordered::new();
    for i in from..from + n {
        let producer = &producer;
        pending.push(async move {
            let key = format!("m{i}");
            producer
                .send(
                    FutureRecord::to(topic).key(&key).payload("x"),
                    Duration::from_secs(60),
                )
                .with_context(Context::new())
                .await
                .map_err(|(e, _)| e)
                .unwrap_or_else(|e| panic!("{key} not delivered to {topic}: {e}"));
        });
        if pending.len() >= 500 {
            pending.next().await;
        }
    }
    while pending.next().await.is_some() {}
    drop(pending);
    let origins: Origins = cap
        .named(&format!("send {topic}"))
        .iter()
        .map(|span| {
            let key = spans::attr(span, "kafka.message.key")
                .expect("the key is on the send span")
                .as_str()
                .into_owned();
            (key, span.span_context.trace_id().to_string())
        })
        .collect();
    assert_eq!(origins.len(), n, "one send span per message");
    origins
}

/// Publishes keys `m{from}..m{from+n}` (as `correlation_id`, persistent)
/// to an AMQP exchange, each in its own trace, confirms awaited together.
pub async fn publish_amqp(
    channel: lapin::Channel,
    exchange: &str,
    routing_key: &str,
    from: usize,
    n: usize,
) -> Origins {
    let cap = spans::capture();
    let publisher = tracebridge::amqp::Channel::from(channel)
        .with_server(&super::amqp_url())
        .with_instrumentation(cap.instrumentation());
    publisher
        .confirm_select(Default::default())
        .await
        .expect("confirms");
    let mut confirms = FuturesUnordered::new();
    for i in from..from + n {
        let key = format!("m{i}");
        let confirm = publisher
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                b"x",
                BasicProperties::default()
                    .with_correlation_id(key.as_str().into())
                    .with_delivery_mode(2),
            )
            .with_context(Context::new())
            .await
            .unwrap_or_else(|e| panic!("publishing {key}: {e}"));
        confirms.push(async move {
            match confirm.await {
                Ok(lapin::Confirmation::Ack(None)) => Ok(()),
                other => Err((key, format!("{other:?}"))),
            }
        });
        if confirms.len() >= 500
            && let Some(Err((key, e))) = confirms.next().await
        {
            panic!("{key} not confirmed: {e}");
        }
    }
    while let Some(result) = confirms.next().await {
        if let Err((key, e)) = result {
            panic!("{key} not confirmed: {e}");
        }
    }
    let spans = cap.spans();
    let origins: Origins = spans
        .iter()
        .filter(|s| s.span_kind == opentelemetry::trace::SpanKind::Producer)
        .map(|span| {
            let key = spans::attr(span, "messaging.message.conversation_id")
                .expect("the correlation id is on the publish span")
                .as_str()
                .into_owned();
            (key, span.span_context.trace_id().to_string())
        })
        .collect();
    assert_eq!(origins.len(), n, "one publish span per message");
    origins
}

/// How long a drain goes on.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Until {
    /// Messages may still be arriving: wait for `want` keys, up to the limit.
    Arrived,
    /// Nothing writes any more: stop at the first empty read (the limit only
    /// guards against a broken broker).
    Empty,
}

/// Reads an AMQP queue (basic.get, no ack) into `seen`.
pub async fn drain_amqp(
    channel: &lapin::Channel,
    queue: &str,
    seen: &mut Seen,
    want: usize,
    until: Until,
    limit: Duration,
) {
    let started = Instant::now();
    while seen.len() < want && started.elapsed() < limit {
        let got = match channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
        {
            Ok(got) => got,
            // The broker may be restarting under the test: read again.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        match got {
            None if until == Until::Empty => break,
            None => tokio::time::sleep(Duration::from_millis(50)).await,
            Some(message) => {
                let props = &message.delivery.properties;
                let key = props
                    .correlation_id()
                    .as_ref()
                    .map(|c| c.to_string())
                    .unwrap_or_default();
                let trace = match props
                    .headers()
                    .as_ref()
                    .and_then(|h| h.inner().get("traceparent"))
                {
                    Some(AMQPValue::LongString(tp)) => trace_of(tp.as_bytes()),
                    _ => String::new(),
                };
                seen.entry(key).or_default().push(trace);
            }
        }
    }
}

/// A consumer of `topic` from its first record, in a group of its own.
pub fn kafka_reader(bootstrap: &str, topic: &str) -> StreamConsumer {
    let consumer: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", super::unique("reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("a Kafka reader");
    consumer.subscribe(&[topic]).expect("subscribe");
    consumer
}

/// Reads a Kafka topic into `seen` (key → trace id of its `traceparent`).
/// With [`Until::Empty`], stops after 3 s without a record.
pub async fn drain_kafka(
    reader: &StreamConsumer,
    seen: &mut Seen,
    want: usize,
    until: Until,
    limit: Duration,
) {
    let started = Instant::now();
    let idle = Duration::from_secs(3);
    while seen.len() < want && started.elapsed() < limit {
        match tokio::time::timeout(idle, reader.recv()).await {
            Err(_) if until == Until::Empty => break,
            Err(_) | Ok(Err(_)) => {}
            Ok(Ok(record)) => {
                let key = String::from_utf8_lossy(record.key().unwrap_or_default()).into_owned();
                let trace = record
                    .headers()
                    .and_then(|h| {
                        h.iter()
                            .filter(|h| h.key.eq_ignore_ascii_case("traceparent"))
                            .last()
                            .and_then(|h| h.value.map(trace_of))
                    })
                    .unwrap_or_default();
                seen.entry(key).or_default().push(trace);
            }
        }
    }
}

/// Sends `chunks` × `chunk` messages to a Kafka topic in the background,
/// pausing between chunks, so a failure injected meanwhile lands
/// mid-stream whatever the relay's speed.
pub fn spawn_kafka_sender(
    bootstrap: &str,
    topic: &str,
    chunks: usize,
    chunk: usize,
    pause: Duration,
) -> tokio::task::JoinHandle<Origins> {
    let (bootstrap, topic) = (bootstrap.to_owned(), topic.to_owned());
    tokio::spawn(async move {
        let mut origins = Origins::new();
        for c in 0..chunks {
            origins.extend(send_kafka(&bootstrap, &topic, c * chunk, chunk).await);
            tokio::time::sleep(pause).await;
        }
        origins
    })
}

/// [`spawn_kafka_sender`] for an AMQP exchange (on a channel of `conn`).
pub fn spawn_amqp_publisher(
    channel: lapin::Channel,
    exchange: &str,
    routing_key: &str,
    chunks: usize,
    chunk: usize,
    pause: Duration,
) -> tokio::task::JoinHandle<Origins> {
    let (exchange, routing_key) = (exchange.to_owned(), routing_key.to_owned());
    tokio::spawn(async move {
        let mut origins = Origins::new();
        for c in 0..chunks {
            origins.extend(
                publish_amqp(channel.clone(), &exchange, &routing_key, c * chunk, chunk).await,
            );
            tokio::time::sleep(pause).await;
        }
        origins
    })
}

/// What arrived, against what was sent.
#[derive(Debug)]
pub struct Tally {
    pub sent: usize,
    pub distinct: usize,
    /// Sent but never arrived.
    pub lost: Vec<String>,
    /// Copies beyond the first.
    pub duplicates: usize,
    /// Copies whose trace is not their origin's: (key, arrived trace).
    pub outside_origin_trace: Vec<(String, String)>,
    /// Keys that arrived but were never sent.
    pub unknown: Vec<String>,
}

impl Tally {
    pub fn of(origins: &Origins, seen: &Seen) -> Self {
        let mut lost: Vec<String> = origins
            .keys()
            .filter(|k| !seen.contains_key(*k))
            .cloned()
            .collect();
        lost.sort();
        let mut duplicates = 0;
        let mut outside = Vec::new();
        let mut unknown = Vec::new();
        for (key, traces) in seen {
            duplicates += traces.len() - 1;
            match origins.get(key) {
                None => unknown.push(key.clone()),
                Some(origin) => outside.extend(
                    traces
                        .iter()
                        .filter(|t| *t != origin)
                        .map(|t| (key.clone(), t.clone())),
                ),
            }
        }
        Self {
            sent: origins.len(),
            distinct: seen.len(),
            lost,
            duplicates,
            outside_origin_trace: outside,
            unknown,
        }
    }

    /// 0 lost, no stranger, every copy in its origin trace, and at most
    /// `max_duplicates` duplicates.
    pub fn assert_whole(&self, what: &str, max_duplicates: usize) {
        eprintln!(
            "{what}: {} sent, {} arrived, {} lost, {} duplicates",
            self.sent,
            self.distinct,
            self.lost.len(),
            self.duplicates
        );
        assert!(
            self.lost.is_empty(),
            "{what}: {} of {} messages lost, e.g. {:?}",
            self.lost.len(),
            self.sent,
            &self.lost[..self.lost.len().min(10)]
        );
        assert!(
            self.unknown.is_empty(),
            "{what}: messages nobody sent: {:?}",
            &self.unknown[..self.unknown.len().min(10)]
        );
        assert!(
            self.outside_origin_trace.is_empty(),
            "{what}: {} copies outside their origin trace, e.g. {:?}",
            self.outside_origin_trace.len(),
            &self.outside_origin_trace[..self.outside_origin_trace.len().min(5)]
        );
        assert!(
            self.duplicates <= max_duplicates,
            "{what}: {} duplicates, more than {max_duplicates}",
            self.duplicates
        );
    }
}

/// The `[[route]]` body of a Kafka → AMQP route: `topic` (group
/// `{topic}-relay`) of cluster `k` to `exchange` of broker `r`, routing key
/// [`super::amqp::ROUTING_KEY`].
pub fn kafka_to_amqp(name: &str, topic: &str, exchange: &str) -> String {
    format!(
        r#"name = "{name}"
from = {{ kafka = "k", topic = "{topic}", group = "{topic}-relay" }}
to = {{ amqp = "r", exchange = "{exchange}", routing_key = "{}" }}"#,
        super::amqp::ROUTING_KEY
    )
}

/// The `[[route]]` body of an AMQP → Kafka route: `queue` of broker `r` to
/// `topic` of cluster `k`.
pub fn amqp_to_kafka(name: &str, queue: &str, topic: &str) -> String {
    format!(
        r#"name = "{name}"
from = {{ amqp = "r", queue = "{queue}" }}
to = {{ kafka = "k", topic = "{topic}" }}"#
    )
}

/// A free TCP port on 127.0.0.1 (for the relay's HTTP endpoint).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// One route's relay, ready to start and restart: its config and span file
/// in a temporary directory, and a free port for its HTTP endpoints.
pub struct RelaySetup {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub port: u16,
    pub spans: PathBuf,
}

impl RelaySetup {
    /// A relay for `route` (see [`relay_file`]) with `window` in flight,
    /// recording keys and request ids as is.
    pub fn new(window: usize, bootstrap: &str, route: &str) -> Self {
        Self::with_telemetry(window, bootstrap, route, RECORD_ALL)
    }

    /// [`RelaySetup::new`] with `telemetry` as the `[telemetry]` table's
    /// body.
    pub fn with_telemetry(window: usize, bootstrap: &str, route: &str, telemetry: &str) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let port = free_port();
        let config = relay_file(dir.path(), port, window, bootstrap, route, telemetry);
        let spans = dir.path().join("spans.jsonl");
        Self {
            dir,
            config,
            port,
            spans,
        }
    }

    /// Starts (or restarts) the relay process.
    pub fn start(&self) -> RelayProcess {
        RelayProcess::start(&self.config, self.port, &self.spans)
    }
}

/// The tests assert keys and request ids on the relay's spans; the default
/// leaves both out (tests/attribute_policy.rs checks each mode).
pub const RECORD_ALL: &str = "record_message_keys = \"as-is\"\nrecord_request_ids = \"as-is\"";

/// Writes a relay config with one `route` (TOML of the `[[route]]` table),
/// the cluster `k` at `bootstrap`, the broker `r` at the test AMQP URL and
/// `telemetry` as the `[telemetry]` table.
pub fn relay_file(
    dir: &Path,
    listen_port: u16,
    window: usize,
    bootstrap: &str,
    route: &str,
    telemetry: &str,
) -> PathBuf {
    let path = dir.join("relay.toml");
    std::fs::write(
        &path,
        format!(
            r#"[relay]
listen = "127.0.0.1:{listen_port}"
max_in_flight = {window}
shutdown_timeout = "20s"
[kafka.k]
bootstrap_servers = "{bootstrap}"
# A killed relay's group member is dropped after 10 s, not librdkafka's 45.
properties = {{ "session.timeout.ms" = "10000" }}
[amqp.r]
url = "{}"
[telemetry]
{telemetry}
[[route]]
{route}
"#,
            super::amqp_url()
        ),
    )
    .expect("write relay config");
    path
}

/// A `tracebridge run` process; its stderr (the JSON log) goes to a file
/// beside the span file, appended across restarts, and is printed when a
/// test fails.
pub struct RelayProcess {
    child: Child,
    started: Instant,
    pub listen: std::net::SocketAddr,
    pub log: PathBuf,
}

impl RelayProcess {
    pub fn start(config: &Path, listen_port: u16, spans: &Path) -> Self {
        Self::start_with_env(config, listen_port, spans, &[])
    }

    /// [`RelayProcess::start`] with extra environment variables (an OTLP
    /// endpoint among them, which `start` removes).
    pub fn start_with_env(
        config: &Path,
        listen_port: u16,
        spans: &Path,
        env: &[(&str, &str)],
    ) -> Self {
        let log = spans.with_extension("log");
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("the relay's log file");
        let child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(config)
            .env("TRACEBRIDGE_SPANS_FILE", spans)
            .env("RUST_LOG", "warn")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start tracebridge run");
        Self {
            child,
            started: Instant::now(),
            listen: ([127, 0, 0, 1], listen_port).into(),
            log,
        }
    }

    /// Every line the relay wrote to stderr so far (all runs on this log).
    pub fn log_lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Asserts every stderr line is a JSON object; returns them.
    pub fn json_log(&self) -> Vec<serde_json::Value> {
        self.log_lines()
            .iter()
            .map(|line| {
                serde_json::from_str::<serde_json::Value>(line)
                    .ok()
                    .filter(serde_json::Value::is_object)
                    .unwrap_or_else(|| panic!("a relay log line is not JSON: {line:?}"))
            })
            .collect()
    }

    /// A counter or gauge from `/metrics` (0 when absent).
    pub async fn metric(&self, series: &str) -> f64 {
        let (_, body) = super::http_get(self.listen, "/metrics").await;
        body.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0.0)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory now, in MiB (Linux `/proc`; 0 once it exited).
    pub fn rss_mib(&self) -> f64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|status| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            })
            .map_or(0.0, |kib| kib / 1024.0)
    }

    /// Sends a signal (`-TERM`, `-KILL`).
    pub fn signal(&self, signal: &str) {
        // No process can handle a signal before its main() has installed
        // the handler: give it time to start, as an operator's would have.
        // SIGKILL needs no handler and must land mid-stream: no wait.
        if signal != "-KILL" {
            let settle = Duration::from_secs(2).saturating_sub(self.started.elapsed());
            std::thread::sleep(settle);
        }
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits for the exit, failing the test after `limit`.
    pub fn wait(mut self, limit: Duration) -> std::process::ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            if started.elapsed() > limit {
                let _ = self.child.kill();
                panic!("the relay did not exit within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, and the exit status must be 0 within 30 s.
    pub fn stop(self) {
        self.signal("-TERM");
        let status = self.wait(Duration::from_secs(30));
        assert!(
            status.success(),
            "the relay exits 0 after SIGTERM: {status:?}"
        );
    }

    /// `/readyz`: status code and body (0 when it does not answer).
    pub async fn readyz(&self) -> (u16, String) {
        match tokio::time::timeout(
            Duration::from_secs(2),
            super::try_http_get(self.listen, "/readyz"),
        )
        .await
        {
            Ok(Ok(answer)) => answer,
            _ => (0, String::new()),
        }
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&self, limit: Duration) {
        let started = Instant::now();
        loop {
            if self.readyz().await.0 == 200 {
                return;
            }
            assert!(
                started.elapsed() < limit,
                "the relay was not ready within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        // A failed assertion must not leave a relay running.
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let lines = self.log_lines();
            let tail = &lines[lines.len().saturating_sub(30)..];
            eprintln!(
                "--- the relay's last log lines ({}):\n{}",
                self.log.display(),
                tail.join("\n")
            );
        }
    }
}

/// Runs the project's broker script (`scripts/brokers.sh ARGS…`), failing
/// the test with its output when it fails; returns its stdout.
pub fn brokers_script(args: &[&str]) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/brokers.sh");
    let out = Command::new(script)
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("running {script}: {e}"));
    assert!(
        out.status.success(),
        "scripts/brokers.sh {} failed ({:?})",
        args.join(" "),
        out.status
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Runs `rabbitmqctl ARGS…` against the local RabbitMQ (the one
/// `scripts/brokers.sh up` started); fails the test loudly when it cannot.
pub fn rabbitmqctl(args: &[&str]) {
    let status = Command::new("rabbitmqctl")
        .args(args)
        .stdout(Stdio::null())
        .status()
        .unwrap_or_else(|e| {
            panic!("rabbitmqctl (the local RabbitMQ's CLI, installed by scripts/brokers.sh up) did not run: {e}")
        });
    assert!(
        status.success(),
        "rabbitmqctl {} failed: {status:?}",
        args.join(" ")
    );
}

/// Broker-control tests act on the local RabbitMQ: they fail, never skip,
/// when the tests are pointed at another one.
pub fn require_local_rabbitmq(test: &str) {
    assert!(
        std::env::var("AMQP_URL").map_or(true, |v| v.is_empty()),
        "{test} stops and starts the local RabbitMQ with rabbitmqctl; AMQP_URL points elsewhere. \
         Unset AMQP_URL so scripts/brokers.sh up starts a local one."
    );
}

/// Polls `/readyz` every 200 ms for `during`: the status codes seen.
pub async fn watch_readiness(relay: &RelayProcess, during: Duration) -> Vec<u16> {
    let started = Instant::now();
    let mut codes = Vec::new();
    while started.elapsed() < during {
        codes.push(relay.readyz().await.0);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    codes
}

/// An Apache Kafka cluster of `scripts/brokers.sh kafka-cluster`, stopped
/// and deleted when dropped (also when the test fails).
pub struct KafkaCluster {
    pub bootstrap: String,
}

impl KafkaCluster {
    pub fn up(nodes: usize) -> Self {
        let bootstrap = brokers_script(&["kafka-cluster", "up", &nodes.to_string()]);
        assert!(
            bootstrap.starts_with("127.0.0.1:"),
            "kafka-cluster up prints the bootstrap servers, not {bootstrap:?}"
        );
        Self { bootstrap }
    }

    /// SIGKILL node `id` (its `node.id`, as partition metadata names leaders).
    pub fn kill(&self, id: i32) {
        brokers_script(&["kafka-cluster", "kill-node", &id.to_string()]);
    }

    /// A clean stop of node `id`.
    pub fn stop(&self, id: i32) {
        brokers_script(&["kafka-cluster", "stop-node", &id.to_string()]);
    }

    /// Starts node `id` again and waits until it answers.
    pub fn start(&self, id: i32) {
        brokers_script(&["kafka-cluster", "start-node", &id.to_string()]);
    }

    /// The node id leading `topic`'s `partition`.
    pub fn leader(&self, topic: &str, partition: i32) -> i32 {
        use rdkafka::consumer::BaseConsumer;
        let client: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .create()
            .expect("a metadata client");
        let metadata = client
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .expect("cluster metadata");
        metadata.topics()[0]
            .partitions()
            .iter()
            .find(|p| p.id() == partition)
            .unwrap_or_else(|| panic!("{topic} has no partition {partition}"))
            .leader()
    }
}

impl Drop for KafkaCluster {
    fn drop(&mut self) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/brokers.sh");
        let _ = Command::new(script)
            .args(["kafka-cluster", "down"])
            .status();
    }
}
