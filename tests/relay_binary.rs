//! The `tracebridge` binary as operators run it: `check` on broken configs,
//! SIGTERM with messages in flight, and SIGKILL mid-flow followed by a
//! restart — at-least-once, every delivered message in its origin trace.
#![cfg(all(feature = "kafka", feature = "amqp"))]

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::amqp::{ROUTING_KEY, Rabbit};
use common::spans;
use lapin::options::BasicGetOptions;
use lapin::types::AMQPValue;
use opentelemetry::Context;
use rdkafka::producer::FutureRecord;
use tracebridge::kafka::TracedProducer;

const BIN: &str = env!("CARGO_BIN_EXE_tracebridge");

/// tansu 0.6.0 (memory storage) miscounts its high watermark when a batch
/// holds several records (2000 records, watermark 1501), and a consumer
/// that RESTARTS from a committed offset never sees the records above that
/// watermark; it also resumes a mid-batch offset at the next batch. Both
/// were reproduced with plain rdkafka, no tracebridge involved. With one
/// partition and one record per batch its watermark is exact, so the
/// restart tests below produce that way; against Apache Kafka
/// (KAFKA_BOOTSTRAP_SERVERS) they would hold with any layout.
const TANSU_SAFE_PARTITIONS: i32 = 1;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write config");
    path
}

fn check(config: &Path) -> (bool, String) {
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(config)
        .output()
        .expect("run tracebridge check");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn check_reports_broken_configs_precisely_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let good = r#"[kafka.k]
bootstrap_servers = "127.0.0.1:9092"
[amqp.r]
url = "amqp://guest:guest@127.0.0.1:5672/%2f"
[[route]]
name = "r1"
from = { kafka = "k", topic = "t" }
to = { amqp = "r", exchange = "x" }
"#;
    let (ok, out) = check(&write(dir.path(), "good.toml", good));
    assert!(ok, "{out}");
    assert!(out.contains("valid, 1 route(s)"), "{out}");
    assert!(!out.contains("guest:guest"), "no secrets printed: {out}");

    let cases = [
        (
            "unknown.toml",
            good.replace("topic = \"t\"", "topik = \"t\""),
            ":7: unknown field `topik`",
        ),
        (
            "duration.toml",
            format!("[relay]\nshutdown_timeout = \"soon\"\n{good}"),
            ":2: invalid value: string \"soon\", expected a duration",
        ),
        (
            "reference.toml",
            good.replace("amqp = \"r\", exchange", "amqp = \"rabbit\", exchange"),
            ":8: route[0] (r1): to.amqp: no [amqp.rabbit] section is defined",
        ),
        (
            "env.toml",
            good.replace("guest:guest", "guest:${NOT_SET_ANYWHERE}"),
            ":4: environment variable NOT_SET_ANYWHERE is not set",
        ),
    ];
    for (name, text, expected) in cases {
        let path = write(dir.path(), name, &text);
        let (ok, out) = check(&path);
        assert!(!ok, "{name} must be rejected");
        assert!(
            out.contains(&format!("{}{expected}", path.display())),
            "{name}: expected {expected:?} in:\n{out}"
        );
    }
    let (ok, out) = check(&dir.path().join("missing.toml"));
    assert!(!ok);
    assert!(out.contains("cannot read"), "{out}");
}

/// A relay process with a Kafka → AMQP route.
struct RelayProcess {
    child: Child,
    started: Instant,
}

impl RelayProcess {
    fn start(config: &Path, spans: &Path) -> Self {
        let child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(config)
            .env("TRACEBRIDGE_SPANS_FILE", spans)
            .env("RUST_LOG", "warn")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start tracebridge run");
        Self {
            child,
            started: Instant::now(),
        }
    }

    fn signal(&self, signal: &str) {
        // No process can handle a signal before its main() has installed
        // the handler: give it time to start, as an operator's would have.
        let settle = Duration::from_secs(2).saturating_sub(self.started.elapsed());
        std::thread::sleep(settle);
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    fn wait(mut self, limit: Duration) -> std::process::ExitStatus {
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
}

fn route_config(dir: &Path, topic: &str, exchange: &str) -> PathBuf {
    write(
        dir,
        "relay.toml",
        &format!(
            r#"[relay]
listen = "127.0.0.1:0"
max_in_flight = 256
shutdown_timeout = "20s"
[kafka.k]
bootstrap_servers = "{}"
[amqp.r]
url = "{}"
[[route]]
name = "flow"
from = {{ kafka = "k", topic = "{topic}", group = "{topic}-relay" }}
to = {{ amqp = "r", exchange = "{exchange}", routing_key = "{ROUTING_KEY}" }}
"#,
            common::kafka_bootstrap(),
            common::amqp_url()
        ),
    )
}

/// Sends `n` messages, each in its own trace; key → origin trace id.
async fn send_traced(topic: &str, n: usize) -> HashMap<String, String> {
    let cap = spans::capture();
    let producer =
        TracedProducer::from_config(common::kafka::config().set("message.timeout.ms", "30000"))
            .expect("producer")
            .with_instrumentation(cap.instrumentation());
    let mut pending = futures::stream::FuturesUnordered::new();
    let mut origins = HashMap::new();
    for i in 0..n {
        let key = format!("m{i}");
        let producer = &producer;
        pending.push(async move {
            let key = format!("m{i}");
            producer
                .send_with_parent(
                    &Context::new(),
                    FutureRecord::to(topic).key(&key).payload("x"),
                    Duration::from_secs(30),
                )
                .await
                .map_err(|(e, _)| e)
                .expect("delivered");
        });
        origins.insert(key, String::new());
        if pending.len() >= 500 {
            futures::StreamExt::next(&mut pending).await;
        }
    }
    while futures::StreamExt::next(&mut pending).await.is_some() {}
    drop(pending);
    for span in cap.named(&format!("send {topic}")) {
        let key = spans::attr(&span, "messaging.kafka.message.key")
            .unwrap()
            .as_str()
            .into_owned();
        origins.insert(key, span.span_context.trace_id().to_string());
    }
    assert!(
        origins.values().all(|t| !t.is_empty()),
        "every origin span recorded"
    );
    origins
}

/// How long [`drain_queue`] goes on.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Until {
    /// Messages may still be arriving: wait for them, up to the limit.
    Arrived,
    /// Nothing writes to the queue any more: stop when it is empty (the
    /// limit only guards against a broken broker).
    Empty,
}

/// Reads the queue into `seen` (key → trace ids; more than one entry =
/// duplicates) until `want` distinct keys arrived, or per `until`, or the
/// time is up.
async fn drain_queue(
    channel: &lapin::Channel,
    queue: &str,
    seen: &mut HashMap<String, Vec<String>>,
    want: usize,
    until: Until,
    limit: Duration,
) {
    let started = Instant::now();
    while seen.len() < want && started.elapsed() < limit {
        match channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .expect("basic.get")
        {
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
                    Some(AMQPValue::LongString(tp)) => String::from_utf8_lossy(tp.as_bytes())
                        .split('-')
                        .nth(1)
                        .unwrap_or("")
                        .to_owned(),
                    _ => String::new(),
                };
                seen.entry(key).or_default().push(trace);
            }
        }
    }
}

/// The group's committed offset of partition 0 (0 when none).
async fn committed(topic: &str) -> i64 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = common::kafka::config()
        .set("group.id", format!("{topic}-relay"))
        .create()
        .unwrap();
    let mut list = rdkafka::TopicPartitionList::new();
    list.add_partition(topic, 0);
    let committed = c.committed_offsets(list, Duration::from_secs(10)).unwrap();
    match committed.elements()[0].offset() {
        rdkafka::Offset::Offset(o) => o,
        _ => 0,
    }
}

/// Every record's key → offset (read from the start, which tansu serves
/// correctly).
async fn key_offsets(topic: &str, n: usize) -> HashMap<String, i64> {
    use rdkafka::Message;
    use rdkafka::consumer::Consumer;
    let c = common::kafka::consumer(&common::unique("offsets"));
    c.subscribe(&[topic]).unwrap();
    let mut out = HashMap::new();
    while out.len() < n {
        let m = tokio::time::timeout(WAIT_RECORD, c.recv())
            .await
            .expect("the topic holds every record")
            .expect("record");
        out.insert(
            String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
            m.offset(),
        );
    }
    out
}

const WAIT_RECORD: Duration = Duration::from_secs(30);

/// The relay's own guarantee, whatever the broker does on resume: every
/// record below the committed offset was delivered (never commit first).
fn assert_committed_were_delivered(
    committed: i64,
    offsets: &HashMap<String, i64>,
    seen: &HashMap<String, Vec<String>>,
) {
    let undelivered: Vec<_> = offsets
        .iter()
        .filter(|(key, offset)| **offset < committed && !seen.contains_key(*key))
        .map(|(key, offset)| (offset, key))
        .take(5)
        .collect();
    assert!(
        undelivered.is_empty(),
        "offset {committed} was committed but these were never delivered: {undelivered:?}"
    );
}

/// Against Apache Kafka every message must arrive after the restart; tansu
/// 0.6.0 skips records when a consumer resumes (see TANSU_SAFE_PARTITIONS),
/// so there the missing ones are only reported.
fn real_kafka() -> bool {
    std::env::var("KAFKA_BOOTSTRAP_SERVERS").is_ok_and(|v| !v.is_empty())
}

async fn stop_and_restart_test(n: usize, signal: &str) {
    let topic = common::unique(if signal == "-TERM" { "term" } else { "kill" });
    common::kafka::create_topic(&topic, TANSU_SAFE_PARTITIONS).await;
    let rabbit = Rabbit::new("restart").await;
    let dir = tempfile::tempdir().unwrap();
    let config = route_config(dir.path(), &topic, &rabbit.exchange);
    let origins = send_traced(&topic, n).await;
    let offsets = key_offsets(&topic, n).await;

    let relay = RelayProcess::start(&config, &dir.path().join("spans.jsonl"));
    let mut seen = HashMap::new();
    drain_queue(
        &rabbit.channel,
        &rabbit.queue,
        &mut seen,
        // The first one: the signal must land mid-flow, and the relay
        // moves thousands of messages a second once it runs.
        1,
        Until::Arrived,
        Duration::from_secs(60),
    )
    .await;
    assert!(
        !seen.is_empty(),
        "the relay delivered messages before {signal}"
    );
    relay.signal(signal);
    let status = relay.wait(Duration::from_secs(30));
    if signal == "-TERM" {
        assert!(status.success(), "exit status after SIGTERM: {status:?}");
    }
    // Everything the relay confirmed is in the queue by now; read it all
    // (until it is empty: a fixed time was too short once the relay had
    // delivered most of the 10 000 before the kill).
    let first = committed(&topic).await;
    drain_queue(
        &rabbit.channel,
        &rabbit.queue,
        &mut seen,
        n,
        Until::Empty,
        Duration::from_secs(120),
    )
    .await;
    assert_committed_were_delivered(first, &offsets, &seen);
    if signal == "-TERM" {
        // A graceful stop drains: what it read, it delivered AND committed.
        let delivered_beyond = seen.keys().filter(|k| offsets[*k] >= first).count();
        assert_eq!(
            delivered_beyond, 0,
            "SIGTERM committed everything it delivered (commit {first})"
        );
    }

    let relay = RelayProcess::start(&config, &dir.path().join("spans.jsonl"));
    drain_queue(
        &rabbit.channel,
        &rabbit.queue,
        &mut seen,
        n,
        Until::Arrived,
        Duration::from_secs(if real_kafka() { 120 } else { 20 }),
    )
    .await;
    relay.signal("-TERM");
    let status = relay.wait(Duration::from_secs(30));
    assert!(status.success(), "the second run exits 0: {status:?}");
    let missing = origins.keys().filter(|k| !seen.contains_key(*k)).count();
    let mut duplicates = 0;
    for (key, traces) in &seen {
        for trace in traces {
            assert_eq!(
                trace, &origins[key],
                "{key} arrived outside its origin trace"
            );
        }
        duplicates += traces.len() - 1;
    }
    eprintln!(
        "{signal}: {n} messages, first run committed {first}, {} distinct delivered, {duplicates} duplicates, {missing} not served after restart",
        seen.len()
    );
    if real_kafka() {
        assert_eq!(missing, 0, "every message arrives at least once");
    }
    rabbit.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_messages_in_flight_exits_0_commits_only_what_it_delivered() {
    stop_and_restart_test(2000, "-TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_flow_loses_nothing_committed_and_keeps_every_message_in_its_trace() {
    stop_and_restart_test(10_000, "-KILL").await;
}
