//! A service with no telemetry of its own (`telemetry::init`): the handler
//! runs inside the process span — spans it opens after an `.await` and
//! inside a task spawned with `spawn_in_context` are children of it, and
//! its log lines (tracebridge's JSON log layer) carry the same trace id.
#![cfg(feature = "kafka")]

mod common;

use std::time::Duration;

use opentelemetry::trace::Tracer;
use rdkafka::consumer::{Consumer, StreamConsumer};
use tracebridge::kafka::producer::{FutureProducer, FutureRecord};

#[tokio::test]
async fn spans_and_logs_in_the_handler_belong_to_the_process_span() {
    let dir = tempfile::tempdir().unwrap();
    let spans_path = dir.path().join("spans.jsonl");
    let logs = common::Captured::default();
    let guard = tracebridge::telemetry::TelemetryBuilder::new("handler-context-test")
        .with_spans_file(&spans_path)
        .with_log_writer(logs.clone())
        .try_init()
        .expect("telemetry");

    let topic = common::unique("handler");
    common::kafka::create_topic(&topic, 1).await;
    let producer: FutureProducer = common::kafka::config().create().expect("producer");
    producer
        .send(
            FutureRecord::to(&topic).key("k").payload("p"),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .expect("delivered");

    let mut config = common::kafka::config();
    config
        .set("group.id", common::unique("grp"))
        .set("auto.offset.reset", "earliest");
    let consumer: StreamConsumer = config.create().expect("consumer");
    consumer.subscribe(&[&topic]).expect("subscribe");
    let message = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
        .await
        .expect("a message within 30 s")
        .expect("received");
    tracebridge::kafka::process(&consumer, &message, async {
        tokio::time::sleep(Duration::from_millis(5)).await;
        tracing::info_span!("after-await").in_scope(|| {
            tracing::info!("inside the handler");
        });
        tracebridge::spawn_in_context(async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            opentelemetry::global::tracer("app").in_span("in-spawned-task", |_| {});
            tracing::info!("inside a spawned task");
        })
        .await
        .expect("task");
        Ok::<_, std::io::Error>(())
    })
    .await
    .expect("handler ok");
    drop(message);
    drop(guard);

    let spans = common::read_span_file(&spans_path);
    let find = |name: &str| {
        spans
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| {
                panic!(
                    "span {name}; have {:?}",
                    spans.iter().map(|s| &s["name"]).collect::<Vec<_>>()
                )
            })
            .clone()
    };
    let send = find(&format!("send {topic}"));
    let process = find(&format!("process {topic}"));
    let after_await = find("after-await");
    let spawned = find("in-spawned-task");
    assert_eq!(process["traceId"], send["traceId"]);
    assert_eq!(process["parentSpanId"], send["spanId"]);
    for child in [&after_await, &spawned] {
        assert_eq!(child["traceId"], process["traceId"], "{}", child["name"]);
        assert_eq!(
            child["parentSpanId"], process["spanId"],
            "{} is a child of the process span",
            child["name"]
        );
    }

    let lines = logs.json_lines();
    let line = |message: &str| {
        lines
            .iter()
            .find(|l| l["message"] == message)
            .unwrap_or_else(|| panic!("log {message:?} in {lines:?}"))
            .clone()
    };
    assert_eq!(line("inside the handler")["trace_id"], process["traceId"]);
    assert_eq!(line("inside the handler")["span_id"], after_await["spanId"]);
    assert_eq!(
        line("inside a spawned task")["trace_id"],
        process["traceId"]
    );
    assert_eq!(line("inside a spawned task")["span_id"], process["spanId"]);
}
