//! `OTEL_TRACES_SAMPLER=always_off` is honoured: no span is written. The
//! same program under `always_on` is the positive control: it writes the
//! spans, so an empty file means the sampler worked, not that nothing ran.
//! Telemetry is initialised once per process, so each sampler runs in a
//! child process of this test binary.

use std::process::Command;

use opentelemetry::trace::Tracer;

/// Where the child writes its spans; set only for the child.
const SPAN_FILE_VAR: &str = "TRACEBRIDGE_SAMPLER_TEST_SPAN_FILE";

#[test]
#[ignore = "a child process of always_off_writes_no_span_and_always_on_writes_them"]
fn child_records_two_spans() {
    let path = std::env::var(SPAN_FILE_VAR).expect("run by the parent test, which sets the path");
    let guard = tracebridge::telemetry::TelemetryBuilder::new("sampler-test")
        .with_spans_file(&path)
        .with_log_writer(std::io::sink)
        .try_init()
        .expect("telemetry init");
    {
        let _span = tracing::info_span!("recorded-through-tracing").entered();
    }
    opentelemetry::global::tracer("t").in_span("recorded-through-otel", |_| {});
    drop(guard);
}

#[test]
fn always_off_writes_no_span_and_always_on_writes_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (sampler, written) in [("always_on", true), ("always_off", false)] {
        let path = dir.path().join(format!("{sampler}.jsonl"));
        let status = Command::new(std::env::current_exe().expect("this test binary"))
            .args([
                "--ignored",
                "--exact",
                "child_records_two_spans",
                "--test-threads=1",
            ])
            .env("OTEL_TRACES_SAMPLER", sampler)
            .env(SPAN_FILE_VAR, &path)
            .status()
            .expect("the child runs");
        assert!(status.success(), "{sampler}: the child failed");
        let spans = std::fs::read_to_string(&path).unwrap_or_default();
        for name in ["recorded-through-tracing", "recorded-through-otel"] {
            assert_eq!(
                spans.contains(name),
                written,
                "{sampler}: {name} written = {written} expected, file:\n{spans}"
            );
        }
        assert!(
            path.exists(),
            "{sampler}: the span file is created so tools find it"
        );
    }
}
