//! `examples/kafka_worker.rs` — a worker with its own OpenTelemetry 0.33
//! provider and `tracing` subscriber, tracebridge added in three lines —
//! run as it is, under the same set-up with an in-memory exporter: the
//! Kafka hop is one trace, the worker's `#[instrument]` spans and its
//! spawned task sit under the CONSUMER span, and the worker's own JSON log
//! lines carry the CONSUMER span's ids.
#![cfg(feature = "kafka")]

mod common;

#[allow(dead_code)]
#[path = "../examples/kafka_worker.rs"]
mod worker;

use opentelemetry::trace::{SpanKind, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing_subscriber::layer::SubscriberExt as _;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_through_the_workers_consume_and_produce_with_its_spans_and_logs() {
    common::kafka::require_broker();
    // The worker's own set-up (`telemetry()` in the example), exporting
    // to memory and logging to a buffer.
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    let logs = common::Captured::default();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new("info"))
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("billing")))
        .with(
            tracing_subscriber::fmt::layer()
                .json()
                .with_writer(logs.clone()),
        );
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");

    let args = worker::Args {
        brokers: common::kafka_bootstrap(),
        orders: common::unique("billing.orders"),
        group: common::unique("billing"),
        seed: 2,
        count: 2,
    };
    common::within("the worker", worker::run(&args))
        .await
        .expect("the worker billed two orders");
    let _ = provider.force_flush();
    let spans = exporter.get_finished_spans().expect("spans");
    let named =
        |name: &str| -> Vec<&SpanData> { spans.iter().filter(|s| s.name == name).collect() };
    let by_id =
        |id: opentelemetry::trace::SpanId| spans.iter().find(|s| s.span_context.span_id() == id);

    let sends = named(&format!("send {}", args.orders));
    let processes = named(&format!("process {}", args.orders));
    let invoices = named(&format!("send {}", worker::INVOICES));
    assert_eq!(
        (sends.len(), processes.len(), invoices.len()),
        (2, 2, 2),
        "{:#?}",
        names(&spans)
    );
    for process in &processes {
        assert_eq!(process.span_kind, SpanKind::Consumer);
        // Joined: the CONSUMER span is the child of the order's send.
        let send = by_id(process.parent_span_id).expect("the process span's parent is a send");
        assert_eq!(send.span_kind, SpanKind::Producer);
        assert_eq!(send.name, format!("send {}", args.orders));
        assert_eq!(
            send.span_context.trace_id(),
            process.span_context.trace_id()
        );
        // The send is the worker's own `place` span's child, under `seed`.
        let place = by_id(send.parent_span_id).expect("the send's parent");
        assert_eq!(place.name, "place");
        assert_eq!(
            by_id(place.parent_span_id).expect("place's parent").name,
            "seed"
        );
        let group = process
            .attributes
            .iter()
            .find(|kv| kv.key.as_str() == "messaging.consumer.group.name")
            .map(|kv| kv.value.to_string());
        assert_eq!(
            group.as_deref(),
            Some(args.group.as_str()),
            "the group, read from the consumer"
        );

        // The worker's `#[instrument]` handler is the CONSUMER span's child…
        let bill = spans
            .iter()
            .find(|s| s.name == "bill" && s.parent_span_id == process.span_context.span_id())
            .unwrap_or_else(|| panic!("bill under {}: {:#?}", process.name, names(&spans)));
        assert_eq!(
            bill.span_context.trace_id(),
            process.span_context.trace_id()
        );
        // …its spawned audit task is under the handler…
        let audit = spans
            .iter()
            .find(|s| s.name == "audit" && s.parent_span_id == bill.span_context.span_id())
            .expect("the spawned audit task under bill");
        assert_eq!(
            audit.span_context.trace_id(),
            process.span_context.trace_id()
        );
        // …and the invoice's send continues the same trace.
        let invoice = invoices
            .iter()
            .find(|s| s.parent_span_id == bill.span_context.span_id())
            .expect("the invoice sent under bill");
        assert_eq!(invoice.span_kind, SpanKind::Producer);
        assert_eq!(
            invoice.span_context.trace_id(),
            process.span_context.trace_id()
        );
    }

    // The worker's own JSON log lines (its formatter, its schema) carry the
    // CONSUMER span's ids in their span list.
    let lines = logs.json_lines();
    for message in ["billing", "audited"] {
        let with_ids: Vec<_> = lines
            .iter()
            .filter(|l| l["fields"]["message"] == message)
            .collect();
        assert_eq!(with_ids.len(), 2, "two {message:?} lines in {lines:#?}");
        for line in with_ids {
            let carried = line["spans"]
                .as_array()
                .and_then(|spans| spans.iter().find(|s| s["trace_id"].is_string()))
                .unwrap_or_else(|| panic!("trace ids in {line}"));
            let process = processes
                .iter()
                .find(|p| carried["span_id"] == p.span_context.span_id().to_string())
                .unwrap_or_else(|| panic!("{line} names a process span"));
            assert_eq!(
                carried["trace_id"],
                process.span_context.trace_id().to_string()
            );
        }
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
