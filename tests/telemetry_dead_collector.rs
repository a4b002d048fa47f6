//! A collector that is not there never blocks the application: spans are
//! created at full speed (the bounded queue drops what it cannot hold) and
//! shutting down returns promptly. The bounds are liveness limits, orders
//! of magnitude above the expected times, not performance assertions.

use std::time::{Duration, Instant};

use opentelemetry::trace::Tracer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_otlp_endpoint_neither_blocks_nor_panics() {
    // SAFETY: set before anything reads them; this binary has one test.
    unsafe {
        // Port 9 (discard) is closed here: connections are refused at once.
        std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9");
        std::env::set_var("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc");
        std::env::set_var("OTEL_EXPORTER_OTLP_TIMEOUT", "500");
        std::env::remove_var("OTEL_TRACES_EXPORTER");
    }
    let guard = tracebridge::telemetry::TelemetryBuilder::new("dead-collector-test")
        .with_log_writer(std::io::sink)
        .try_init()
        .expect("init succeeds without a collector");
    assert_eq!(guard.spans_file(), None, "spans go to OTLP, not a file");

    let tracer = opentelemetry::global::tracer("load");
    let started = Instant::now();
    for i in 0..20_000 {
        tracer.in_span(format!("span-{}", i % 10), |_| {});
    }
    let creating = started.elapsed();
    assert!(
        creating < Duration::from_secs(10),
        "creating 20 000 spans took {creating:?}: the exporter must not block callers"
    );

    let started = Instant::now();
    tokio::task::spawn_blocking(move || drop(guard))
        .await
        .expect("shutdown does not panic");
    let shutting_down = started.elapsed();
    assert!(
        shutting_down < Duration::from_secs(30),
        "shutdown took {shutting_down:?} with a dead collector"
    );
    // Nothing reached the collector, and every span is accounted for:
    // failed batches plus what the bounded queue dropped.
    let counts = tracebridge::telemetry::span_counts();
    assert_eq!(counts.ended, 20_000, "{counts:?}");
    assert_eq!(counts.exported, 0, "{counts:?}");
    // How the 20 000 split between failed batches and the full queue's
    // drops depends on how fast the refusals come back; the sum does not.
    assert_eq!(
        counts.export_failed + counts.not_exported(),
        counts.ended,
        "every span failed or was dropped: {counts:?}"
    );
}
