//! A `tracing-opentelemetry` layer built without a tracer records nothing:
//! tracebridge says so once, at the first traced operation, with the fix.
#![cfg(feature = "kafka")]

mod common;

use rdkafka::ClientConfig;
use rdkafka::producer::FutureRecord;
use tracebridge::kafka::producer::FutureProducer;
use tracing_subscriber::layer::SubscriberExt as _;

#[tokio::test]
async fn a_layer_without_a_tracer_is_named_once() {
    let logs = common::Captured::default();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer())
        .with(
            tracing_subscriber::fmt::layer()
                .json()
                .with_writer(logs.clone()),
        );
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", "127.0.0.1:1")
        .set("message.timeout.ms", "100")
        .create()
        .expect("a producer");
    for _ in 0..3 {
        let _ = producer.send_result(FutureRecord::<str, str>::to("t").payload("x"));
    }
    let said: Vec<_> = logs
        .json_lines()
        .into_iter()
        .filter(|line| line["level"] == "WARN" && line["target"] == "tracebridge")
        .collect();
    assert_eq!(said.len(), 1, "{said:#?}");
    let message = said[0]["fields"]["message"].as_str().expect("a message");
    assert!(message.contains("has no tracer"), "{message}");
    assert!(
        message.contains(".with_tracer(provider.tracer("),
        "{message}"
    );
}
