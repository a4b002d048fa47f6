//! A service that installed no tracer provider for tracebridge's
//! OpenTelemetry line and no `tracing-opentelemetry` layer: tracebridge
//! says so once, at the first traced operation, with the fix — never a
//! silent no-op — and the messages still carry the context they came with.
#![cfg(feature = "kafka")]

mod common;

use rdkafka::ClientConfig;
use rdkafka::producer::FutureRecord;
use tracebridge::kafka::producer::FutureProducer;
use tracing_subscriber::layer::SubscriberExt as _;

#[tokio::test]
async fn the_first_send_says_once_that_spans_go_nowhere_and_how_to_fix_it() {
    let logs = common::Captured::default();
    let subscriber = tracing_subscriber::registry().with(
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(logs.clone()),
    );
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
    let warnings = || {
        logs.json_lines()
            .into_iter()
            .filter(|line| line["level"] == "WARN" && line["target"] == "tracebridge")
            .collect::<Vec<_>>()
    };

    // Made before anything is installed, no broker needed: `send_result`
    // only queues the record.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", "127.0.0.1:1")
        .set("message.timeout.ms", "100")
        .create()
        .expect("a producer");
    assert!(warnings().is_empty(), "nothing is said before a message");
    let first = producer.send_result(FutureRecord::<str, str>::to("t").payload("1"));
    let said = warnings();
    assert_eq!(said.len(), 1, "said at the first send: {said:#?}");
    let message = said[0]["fields"]["message"].as_str().expect("a message");
    for fix in [
        "records nothing",
        "opentelemetry::global::set_tracer_provider",
        "tracing_opentelemetry::layer().with_tracer",
        "tracebridge::telemetry::init",
        "another opentelemetry version",
        "cargo tree -i opentelemetry --depth 0",
        "opentelemetry 0.33",
    ] {
        assert!(message.contains(fix), "{fix:?} in {message}");
    }
    for _ in 0..5 {
        let _ = producer.send_result(FutureRecord::<str, str>::to("t").payload("2"));
    }
    assert_eq!(warnings().len(), 1, "said once");
    drop(first);
}
