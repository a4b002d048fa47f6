//! `telemetry::init` writes spans as OTLP/JSON lines with the service name,
//! and JSON log lines carry the trace and span ids of the span they were
//! written in — for `tracing` spans and for OpenTelemetry spans alike.

use std::io::Write;
use std::sync::{Arc, Mutex};

use opentelemetry::trace::Tracer;
use serde_json::Value;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

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
    let logs = Captured::default();
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

    let spans: Vec<Value> = std::fs::read_to_string(&path)
        .expect("span file written")
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("each line is JSON"))
        .flat_map(|req| {
            let mut out = Vec::new();
            for rs in req["resourceSpans"].as_array().cloned().unwrap_or_default() {
                let service = rs["resource"]["attributes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|kv| kv["key"] == "service.name")
                    .map(|kv| kv["value"]["stringValue"].clone());
                for ss in rs["scopeSpans"].as_array().cloned().unwrap_or_default() {
                    for mut span in ss["spans"].as_array().cloned().unwrap_or_default() {
                        span["_service"] = service.clone().unwrap_or(Value::Null);
                        out.push(span);
                    }
                }
            }
            out
        })
        .collect();
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

    let log_text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<Value> = log_text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("log line {l:?}: {e}")))
        .collect();
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
