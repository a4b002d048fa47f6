//! An application that installed its tracer provider with OpenTelemetry
//! 0.32 — the line before tracebridge's — has a global tracebridge cannot
//! see (each `opentelemetry` version keeps its own). tracebridge says so
//! once, at the first traced operation, naming the cause and the fix;
//! nothing it does lands in the other version's provider.

use std::sync::{Arc, Mutex};

use old_opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use rdkafka::ClientConfig;
use rdkafka::producer::FutureRecord;
use tracebridge::kafka::producer::FutureProducer;
use tracing_subscriber::layer::SubscriberExt as _;

#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;
    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}

#[tokio::test]
async fn a_provider_of_another_opentelemetry_version_is_named_with_the_fix() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    old_opentelemetry::global::set_tracer_provider(provider.clone());
    let logs = Logs::default();
    tracing::subscriber::set_global_default(
        tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .json()
                .with_writer(logs.clone()),
        ),
    )
    .expect("the only subscriber");

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", "127.0.0.1:1")
        .set("message.timeout.ms", "100")
        .create()
        .expect("a producer");
    for _ in 0..3 {
        let _ = producer.send_result(FutureRecord::<str, str>::to("t").payload("x"));
    }

    let text = String::from_utf8(logs.0.lock().unwrap().clone()).expect("UTF-8");
    let warnings: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).expect("JSON"))
        .filter(|line: &serde_json::Value| {
            line["level"] == "WARN" && line["target"] == "tracebridge"
        })
        .collect();
    assert_eq!(warnings.len(), 1, "once: {warnings:#?}");
    let message = warnings[0]["fields"]["message"]
        .as_str()
        .expect("a message");
    for needle in [
        "another opentelemetry version",
        "cargo tree -i opentelemetry --depth 0",
        "needs opentelemetry 0.33",
    ] {
        assert!(message.contains(needle), "{needle:?} in {message}");
    }
    let _ = provider.force_flush();
    assert!(
        exporter.get_finished_spans().unwrap().is_empty(),
        "the 0.32 provider sees none of tracebridge's spans"
    );
}
