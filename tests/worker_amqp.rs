//! `examples/amqp_worker.rs` — a worker with its own OpenTelemetry 0.33
//! provider behind a `tracing-opentelemetry` layer (and no global
//! provider), tracebridge added in three lines — run as it is, under the
//! same set-up with an in-memory exporter: the RabbitMQ hop is one trace,
//! the failed first attempt and its retry both in it, the worker's
//! `#[instrument]` spans and its spawned task under the CONSUMER spans,
//! acks and nacks as their children, and the worker's own JSON log lines
//! carrying the ids.
#![cfg(feature = "amqp")]

mod common;

#[allow(dead_code)]
#[path = "../examples/amqp_worker.rs"]
mod worker;

use opentelemetry::trace::{SpanKind, Status, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing_subscriber::layer::SubscriberExt as _;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_through_the_workers_consume_retry_and_publish_with_its_spans_and_logs() {
    common::amqp::connect().await;
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    // As the worker does: the provider behind its layer only.
    let logs = common::Captured::default();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new("info"))
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("shipping")))
        .with(
            tracing_subscriber::fmt::layer()
                .json()
                .with_writer(logs.clone()),
        );
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");

    let orders = common::unique("shipping.orders");
    let args = worker::Args {
        url: common::amqp_url(),
        orders: orders.clone(),
        seed: 2,
        // order-0; order-1 fails, is nacked and redelivered; order-1 again.
        count: 3,
    };
    common::within("the worker", worker::run(&args))
        .await
        .expect("the worker shipped two orders");
    let _ = provider.force_flush();
    let spans = exporter.get_finished_spans().expect("spans");
    let by_id =
        |id: opentelemetry::trace::SpanId| spans.iter().find(|s| s.span_context.span_id() == id);
    let process_name = format!("process {orders}");
    let processes: Vec<&SpanData> = spans.iter().filter(|s| s.name == process_name).collect();
    assert_eq!(processes.len(), 3, "{:#?}", names(&spans));
    for process in &processes {
        assert_eq!(process.span_kind, SpanKind::Consumer);
        let publish = by_id(process.parent_span_id).expect("joined to the order's publish");
        assert_eq!(publish.span_kind, SpanKind::Producer);
        assert_eq!(
            publish.span_context.trace_id(),
            process.span_context.trace_id()
        );
        assert_eq!(
            by_id(publish.parent_span_id)
                .expect("the publish's parent")
                .name,
            "place"
        );
        let ship = spans
            .iter()
            .find(|s| s.name == "ship" && s.parent_span_id == process.span_context.span_id())
            .unwrap_or_else(|| panic!("ship under {}: {:#?}", process.name, names(&spans)));
        assert_eq!(
            ship.span_context.trace_id(),
            process.span_context.trace_id()
        );
        let settle = spans
            .iter()
            .find(|s| {
                (s.name == "ack" || s.name == "nack")
                    && s.parent_span_id == process.span_context.span_id()
            })
            .expect("the settlement under the process span");
        assert_eq!(settle.span_kind, SpanKind::Client);
        if settle.name == "nack" {
            assert!(
                matches!(process.status, Status::Error { .. }),
                "the failed attempt's span is an error: {:?}",
                process.status
            );
        } else {
            let shipment = spans
                .iter()
                .find(|s| {
                    s.span_kind == SpanKind::Producer
                        && s.parent_span_id == ship.span_context.span_id()
                })
                .expect("the shipment published under ship");
            assert_eq!(
                shipment.span_context.trace_id(),
                process.span_context.trace_id()
            );
            let label = spans
                .iter()
                .find(|s| {
                    s.name == "print_label" && s.parent_span_id == ship.span_context.span_id()
                })
                .expect("the spawned label task under ship");
            assert_eq!(
                label.span_context.trace_id(),
                process.span_context.trace_id()
            );
        }
    }
    // The broker wait is measured in milliseconds (the `timestamp`
    // property alone has whole seconds): these waited a few.
    for process in &processes {
        let waited = process
            .attributes
            .iter()
            .find(|kv| kv.key.as_str() == tracebridge::attributes::QUEUE_TIME_ATTRIBUTE)
            .and_then(|kv| match kv.value {
                opentelemetry::Value::F64(ms) => Some(ms),
                _ => None,
            })
            .expect("the queue time");
        assert!(waited < 250.0, "waited {waited} ms in the broker");
    }
    // The retry stays in the first attempt's trace.
    let retried: Vec<_> = processes
        .iter()
        .filter(|p| {
            p.attributes
                .iter()
                .any(|kv| kv.key.as_str() == tracebridge::attributes::REDELIVERED_ATTRIBUTE)
        })
        .collect();
    assert_eq!(retried.len(), 1, "one redelivery");
    assert_eq!(
        processes
            .iter()
            .filter(|p| p.span_context.trace_id() == retried[0].span_context.trace_id())
            .count(),
        // The seed span holds both orders: all three attempts share it.
        3,
    );

    let lines = logs.json_lines();
    let shipping: Vec<_> = lines
        .iter()
        .filter(|l| l["fields"]["message"] == "shipping")
        .collect();
    assert_eq!(shipping.len(), 3, "{lines:#?}");
    for line in shipping {
        let carried = line["spans"]
            .as_array()
            .and_then(|spans| spans.iter().find(|s| s["trace_id"].is_string()))
            .unwrap_or_else(|| panic!("trace ids in {line}"));
        assert!(
            processes.iter().any(
                |p| carried["span_id"] == p.span_context.span_id().to_string()
                    && carried["trace_id"] == p.span_context.trace_id().to_string()
            ),
            "{line} names a process span"
        );
    }
}

fn names(spans: &[SpanData]) -> Vec<(String, String, String)> {
    spans
        .iter()
        .map(|s| {
            (
                s.name.to_string(),
                s.span_context.span_id().to_string(),
                s.parent_span_id.to_string(),
            )
        })
        .collect()
}
