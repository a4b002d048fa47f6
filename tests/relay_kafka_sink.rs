//! The relay's Kafka sink as the broker stores it: idempotent by
//! construction (a producer id and sequence numbers on every batch), so a
//! retried send is written once and in order. Read from the local broker's
//! own log segment with Kafka's DumpLogSegments tool (the relay's producer
//! was not idempotent before: `producerId: -1`).
#![cfg(feature = "kafka")]

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::flow::{Seen, Until, drain_kafka, kafka_reader, send_kafka};
use tracebridge::relay::Relay;

/// The local broker `scripts/brokers.sh` runs: its data and its tools.
fn local_kafka() -> (PathBuf, PathBuf) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".brokers");
    let data = root.join("kafka/data");
    let libs = std::fs::read_dir(&root)
        .ok()
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("libs"))
        .find(|p| p.join("..").join("libs.complete").exists());
    match libs {
        Some(libs) if data.is_dir() => (data, libs),
        _ => panic!(
            "this test reads the local Kafka's log segments: run `scripts/brokers.sh up` (no {} or Kafka libs under {})",
            data.display(),
            root.display()
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kafka_sink_writes_idempotent_batches() {
    let (data, libs) = local_kafka();
    let bootstrap = common::kafka_bootstrap();
    let source = common::unique("idem-src");
    let sink = common::unique("idem-dst");
    common::kafka::create_topic(&source, 1).await;
    common::kafka::create_topic(&sink, 1).await;
    let relay = Relay::start(
        common::relay_config(&format!(
            r#"[[route]]
name = "idem"
from = {{ kafka = "k", topic = "{source}", group = "{source}-relay" }}
to = {{ kafka = "k", topic = "{sink}" }}"#
        )),
        tracebridge::Instrumentation::global(),
    )
    .await
    .expect("relay starts");
    send_kafka(&bootstrap, &source, 0, 20).await;
    let mut seen = Seen::new();
    drain_kafka(
        &kafka_reader(&bootstrap, &sink),
        &mut seen,
        20,
        Until::Arrived,
        Duration::from_secs(60),
    )
    .await;
    assert!(relay.shutdown().await, "drained");
    assert_eq!(seen.len(), 20);

    let segment = data
        .join(format!("{sink}-0"))
        .join("00000000000000000000.log");
    let out = Command::new("java")
        .arg("-cp")
        .arg(format!("{}/*", libs.display()))
        .args(["kafka.tools.DumpLogSegments", "--files"])
        .arg(&segment)
        .output()
        .expect("java runs Kafka's DumpLogSegments");
    let dump = String::from_utf8_lossy(&out.stdout);
    let batches: Vec<&str> = dump
        .lines()
        .filter(|l| l.starts_with("baseOffset:"))
        .collect();
    assert!(
        !batches.is_empty(),
        "no batch in {}: {dump}",
        segment.display()
    );
    for batch in batches {
        let field = |name: &str| -> i64 {
            batch
                .split_whitespace()
                .skip_while(|w| *w != name)
                .nth(1)
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} in {batch}"))
        };
        assert!(field("producerId:") >= 0, "not idempotent: {batch}");
        assert!(field("baseSequence:") >= 0, "no sequence: {batch}");
    }
}
