//! `telemetry::init` writes spans as OTLP/JSON lines with the service name,
//! and JSON log lines carry the trace and span ids of the span they were
//! written in — for `tracing` spans and for OpenTelemetry spans alike.

mod common;

use opentelemetry::trace::Tracer;

#[test]
fn spans_land_in_the_file_and_logs_carry_their_ids() {
    // SAFETY: single-threaded at this point; this binary has one test.
    unsafe {
        std::env::remove_var("OTEL_SERVICE_NAME");
        std::env::remove_var("OTEL_RESOURCE_ATTRIBUTES");
        std::env::remove_var("OTEL_TRACES_SAMPLER");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spans.jsonl");
    let logs = common::Captured::default();
    let guard = tracebridge::telemetry::TelemetryBuilder::new("span-file-test")
        .with_spans_file(&path)
        .with_log_writer(logs.clone())
        .try_init()
        .expect("telemetry init");
    assert_eq!(guard.spans_file(), Some(path.as_path()));

    {
        let span = tracing::info_span!("checkout", order = 7);
        let _entered = span.enter();
        tracing::info!(order = 7, "order placed");
    }
    let tracer = opentelemetry::global::tracer("native");
    tracer.in_span("native-work", |_cx| {
        tracing::warn!("inside an OpenTelemetry span");
    });
    drop(guard);

    let counts = tracebridge::telemetry::span_counts();
    assert_eq!(counts.ended, 2, "two spans ended: {counts:?}");
    assert_eq!(counts.exported, 2, "both exported: {counts:?}");
    assert_eq!(counts.not_exported(), 0);
    let spans = common::read_span_file(&path);
    let find = |name: &str| {
        spans
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("span {name} in {spans:#?}"))
            .clone()
    };
    let checkout = find("checkout");
    let native = find("native-work");
    assert_eq!(checkout["_service"], "span-file-test");
    assert_eq!(native["_service"], "span-file-test");
    let trace_id = checkout["traceId"].as_str().unwrap();
    assert_eq!(trace_id.len(), 32, "OTLP/JSON ids are hex: {trace_id}");

    let lines = logs.json_lines();
    let placed = lines
        .iter()
        .find(|l| l["message"] == "order placed")
        .expect("log line written");
    assert_eq!(placed["level"], "INFO");
    assert_eq!(placed["order"], 7);
    assert_eq!(placed["span"], "checkout");
    assert_eq!(placed["trace_id"], checkout["traceId"]);
    assert_eq!(placed["span_id"], checkout["spanId"]);

    let inside = lines
        .iter()
        .find(|l| l["message"] == "inside an OpenTelemetry span")
        .expect("log line written");
    assert_eq!(inside["trace_id"], native["traceId"]);
    assert_eq!(inside["span_id"], native["spanId"]);
}
