//! Trace headers written by the Kafka carrier come back byte-exact through a
//! real broker, and every other header survives untouched.
#![cfg(feature = "kafka")]

mod common;

use std::time::Duration;

use futures::StreamExt;
use opentelemetry::Context;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use rdkafka::Message;
use rdkafka::consumer::Consumer;
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use tracebridge::kafka::{KafkaHeaderExtractor, KafkaHeaderInjector};
use tracebridge::propagation::Propagation;

const OURS: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[tokio::test]
async fn injected_headers_survive_the_broker_byte_exact() {
    let topic = common::unique("hdr");
    common::kafka::create_topic(&topic, 1).await;

    // A record as a foreign client might have left it: two stale
    // traceparents, plus application headers that must not change.
    let existing = OwnedHeaders::new()
        .insert(Header {
            key: "traceparent",
            value: Some("00-11111111111111111111111111111111-1111111111111111-01"),
        })
        .insert(Header {
            key: "app-id",
            value: Some("checkout"),
        })
        .insert(Header {
            key: "traceparent",
            value: Some("garbage"),
        })
        .insert(Header {
            key: "binary",
            value: Some(&[0u8, 159, 146, 150][..]),
        })
        .insert::<[u8]>(Header {
            key: "empty",
            value: Some(&[]),
        });
    let cx = Context::new().with_remote_span_context(SpanContext::new(
        TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
        SpanId::from_hex("00f067aa0ba902b7").unwrap(),
        TraceFlags::SAMPLED,
        true,
        TraceState::from_key_value([("vendor", "opaque")]).unwrap(),
    ));
    let mut injector = KafkaHeaderInjector::new(Some(existing));
    Propagation::default().inject(&cx, &mut injector);
    let headers = injector.finish();

    let producer = common::kafka::producer();
    producer
        .send(
            FutureRecord::to(&topic)
                .key("k")
                .payload("v")
                .headers(headers),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .expect("delivery");

    let consumer = common::kafka::consumer(&common::unique("grp"));
    consumer.subscribe(&[&topic]).expect("subscribe");
    let message = tokio::time::timeout(Duration::from_secs(30), consumer.stream().next())
        .await
        .expect("a message within 30 s")
        .expect("stream open")
        .expect("no consumer error");
    let received = message.headers().expect("headers came back");
    let pairs: Vec<(String, Option<Vec<u8>>)> = received
        .iter()
        .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
        .collect();
    assert_eq!(
        pairs,
        vec![
            ("app-id".to_owned(), Some(b"checkout".to_vec())),
            ("binary".to_owned(), Some(vec![0, 159, 146, 150])),
            ("empty".to_owned(), Some(vec![])),
            ("traceparent".to_owned(), Some(OURS.as_bytes().to_vec())),
            ("tracestate".to_owned(), Some(b"vendor=opaque".to_vec())),
        ],
        "exactly one traceparent (ours), other headers in order and byte-exact"
    );

    let extracted = Propagation::default().extract(&KafkaHeaderExtractor(received));
    let parent = extracted.span_context().expect("context extracted");
    assert_eq!(parent.trace_id(), cx.span().span_context().trace_id());
    assert_eq!(parent.span_id(), cx.span().span_context().span_id());
    assert_eq!(parent.trace_state().get("vendor"), Some("opaque"));
}
