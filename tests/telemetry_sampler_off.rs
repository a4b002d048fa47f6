//! `OTEL_TRACES_SAMPLER=always_off` is honoured: no span is written.

use opentelemetry::trace::Tracer;

#[test]
fn always_off_writes_no_span() {
    // SAFETY: single-threaded at this point; this binary has one test.
    unsafe { std::env::set_var("OTEL_TRACES_SAMPLER", "always_off") };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spans.jsonl");
    let guard = tracebridge::telemetry::TelemetryBuilder::new("sampler-test")
        .with_spans_file(&path)
        .with_log_writer(std::io::sink)
        .try_init()
        .expect("telemetry init");
    {
        let _span = tracing::info_span!("dropped").entered();
    }
    opentelemetry::global::tracer("t").in_span("dropped-too", |_| {});
    drop(guard);
    let written = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        !written.contains("dropped"),
        "always_off must not export spans, found: {written}"
    );
    assert!(
        path.exists(),
        "the span file is still created so tools find it"
    );
}
