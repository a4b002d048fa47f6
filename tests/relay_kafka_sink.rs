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

/// The running broker that serves `port` on this machine (as
/// `scripts/brokers.sh` starts it, from whichever checkout): its log
/// directory and its libraries, read from its command line and its
/// `server.properties`.
fn local_kafka(port: &str) -> (PathBuf, PathBuf) {
    let brokers = std::fs::read_dir("/proc").into_iter().flatten().flatten();
    for process in brokers {
        let Ok(cmdline) = std::fs::read(process.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if !args.iter().any(|a| a == "kafka.Kafka") {
            continue;
        }
        let Some(properties) = args
            .iter()
            .find(|a| a.ends_with(".properties") && !a.contains("log4j"))
        else {
            continue;
        };
        let Ok(text) = std::fs::read_to_string(properties) else {
            continue;
        };
        let value = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                .map(str::trim)
                .map(str::to_owned)
        };
        let serves = value("listeners").is_some_and(|l| l.contains(&format!(":{port}")));
        let classpath = args
            .iter()
            .position(|a| a == "-cp")
            .and_then(|i| args.get(i + 1));
        if let (true, Some(dirs), Some(classpath)) = (serves, value("log.dirs"), classpath) {
            let data = PathBuf::from(dirs.split(',').next().unwrap_or_default());
            return (data, PathBuf::from(classpath.trim_end_matches("/*")));
        }
    }
    panic!(
        "this test reads the log segments of the Kafka broker on port {port} of this machine: run `scripts/brokers.sh up` (no such broker process found)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kafka_sink_writes_idempotent_batches() {
    let bootstrap = common::kafka_bootstrap();
    let port = bootstrap.rsplit(':').next().unwrap_or("9092").to_owned();
    let (data, libs) = local_kafka(&port);
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
