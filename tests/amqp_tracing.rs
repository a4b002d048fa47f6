//! TracedPublisher, TracedConsumer and TracedReceiver against a real
//! RabbitMQ: trace ids, parents, kinds, names and attributes by value.
#![cfg(feature = "amqp")]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::amqp::{ROUTING_KEY, Rabbit};
use common::spans::{self, attr, span_id, trace_id};
use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, ByteArray, FieldTable, LongString};
use opentelemetry::trace::{SpanId, SpanKind, Status, TraceContextExt};
use opentelemetry::{Context, Value};
use tracebridge::amqp::{REDELIVERED_ATTRIBUTE, TracedConsumer, TracedPublisher, TracedReceiver};
use tracebridge::{Error, Refusal};

use common::within;

async fn publisher(rabbit: &Rabbit, cap: &spans::Capture) -> TracedPublisher {
    let channel = rabbit.conn.create_channel().await.expect("channel");
    TracedPublisher::new(channel, tracebridge::amqp::endpoint(&common::amqp_url()))
        .await
        .expect("publisher")
        .with_instrumentation(cap.instrumentation())
}

async fn consumer(rabbit: &Rabbit, cap: &spans::Capture) -> TracedConsumer {
    TracedConsumer::new(
        rabbit.consumer().await,
        tracebridge::amqp::endpoint(&common::amqp_url()),
    )
    .with_instrumentation(cap.instrumentation())
}

fn props(message_id: &str) -> BasicProperties {
    BasicProperties::default()
        .with_message_id(message_id.into())
        .with_correlation_id("req-9".into())
}

#[tokio::test]
async fn publish_and_process_form_one_trace_with_semconv_attributes_and_an_ack_span() {
    let rabbit = Rabbit::new("one").await;
    let cap = spans::capture();
    publisher(&rabbit, &cap)
        .await
        .publish(
            &rabbit.exchange,
            ROUTING_KEY,
            BasicPublishOptions::default(),
            props("m-1"),
            b"hello",
        )
        .await
        .expect("published")
        .confirmed()
        .await
        .expect("confirmed");
    let mut consumer = consumer(&rabbit, &cap).await.with_body_size(true);
    within(
        "processing",
        consumer.process_next(async |d| Ok::<_, std::io::Error>(d.data.clone())),
    )
    .await
    .expect("received")
    .expect("not cancelled")
    .expect("handler ok");

    let (host, port) = {
        let e = tracebridge::amqp::endpoint(&common::amqp_url());
        (e.address.unwrap().to_string(), i64::from(e.port.unwrap()))
    };
    let publish = cap.one(&format!("publish {}:{ROUTING_KEY}", rabbit.exchange));
    assert_eq!(publish.span_kind, SpanKind::Producer);
    assert_eq!(publish.status, Status::Unset);
    for (key, value) in [
        ("messaging.system.name", Value::from("rabbitmq")),
        ("messaging.operation.name", "publish".into()),
        ("messaging.operation.type", "send".into()),
        (
            "messaging.destination.name",
            format!("{}:{ROUTING_KEY}", rabbit.exchange).into(),
        ),
        ("rabbitmq.destination.routing_key", ROUTING_KEY.into()),
        ("messaging.message.id", "m-1".into()),
        ("messaging.message.conversation_id", "req-9".into()),
        ("server.address", host.clone().into()),
        ("server.port", port.into()),
    ] {
        assert_eq!(attr(&publish, key), Some(value), "publish span {key}");
    }

    let process = cap.one(&format!(
        "process {}:{ROUTING_KEY}:{}",
        rabbit.exchange, rabbit.queue
    ));
    assert_eq!(process.span_kind, SpanKind::Consumer);
    assert_eq!(trace_id(&process), trace_id(&publish), "one trace");
    assert_eq!(
        process.parent_span_id,
        span_id(&publish),
        "parent is the publish span"
    );
    assert_eq!(process.links.len(), 1);
    for (key, value) in [
        ("messaging.system.name", Value::from("rabbitmq")),
        ("messaging.operation.name", "process".into()),
        ("messaging.operation.type", "process".into()),
        (
            "messaging.destination.name",
            format!("{}:{ROUTING_KEY}:{}", rabbit.exchange, rabbit.queue).into(),
        ),
        ("rabbitmq.destination.routing_key", ROUTING_KEY.into()),
        ("rabbitmq.message.delivery_tag", 1i64.into()),
        ("messaging.message.id", "m-1".into()),
        ("messaging.message.conversation_id", "req-9".into()),
        ("messaging.message.body.size", 5i64.into()),
        ("server.address", host.into()),
    ] {
        assert_eq!(attr(&process, key), Some(value), "process span {key}");
    }
    assert_eq!(attr(&process, REDELIVERED_ATTRIBUTE), None);
    assert!(attr(&process, tracebridge::instrument::QUEUE_TIME_ATTRIBUTE).is_some());
    assert_eq!(
        cap.histogram_count(tracebridge::instrument::QUEUE_TIME_METRIC),
        1
    );

    let ack = cap.one("ack");
    assert_eq!(ack.span_kind, SpanKind::Client);
    assert_eq!(ack.parent_span_id, span_id(&process));
    assert_eq!(
        attr(&ack, "messaging.operation.type"),
        Some("settle".into())
    );
    assert_eq!(
        attr(&ack, "rabbitmq.message.delivery_tag"),
        Some(1i64.into())
    );
    rabbit.delete().await;
}

#[tokio::test]
async fn foreign_byte_array_and_long_string_flags_03_headers_continue_their_traces() {
    let rabbit = Rabbit::new("foreign").await;
    let cases = [
        (
            "bytes",
            AMQPValue::ByteArray(ByteArray::from(
                b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_vec(),
            )),
        ),
        (
            "long",
            AMQPValue::LongString(LongString::from(
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03",
            )),
        ),
    ];
    for (id, value) in &cases {
        let mut headers = FieldTable::default();
        headers.insert("traceparent".into(), value.clone());
        rabbit
            .channel
            .basic_publish(
                rabbit.exchange.as_str().into(),
                ROUTING_KEY.into(),
                BasicPublishOptions::default(),
                b"x",
                BasicProperties::default()
                    .with_message_id((*id).into())
                    .with_headers(headers),
            )
            .await
            .expect("publish");
    }
    let cap = spans::capture();
    let mut consumer = consumer(&rabbit, &cap).await;
    for _ in 0..2 {
        within(
            "processing",
            consumer.process_next(async |_| Ok::<_, std::io::Error>(())),
        )
        .await
        .expect("received")
        .expect("not cancelled")
        .expect("ok");
    }
    let spans = cap.named(&format!(
        "process {}:{ROUTING_KEY}:{}",
        rabbit.exchange, rabbit.queue
    ));
    let by_id = |id: &str| {
        spans
            .iter()
            .find(|s| attr(s, "messaging.message.id") == Some(id.to_owned().into()))
            .expect("span")
            .clone()
    };
    let bytes = by_id("bytes");
    assert_eq!(
        trace_id(&bytes).to_string(),
        "0af7651916cd43dd8448eb211c80319c"
    );
    assert_eq!(bytes.parent_span_id.to_string(), "b7ad6b7169203331");
    let long = by_id("long");
    assert_eq!(
        trace_id(&long).to_string(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(long.parent_span_id.to_string(), "00f067aa0ba902b7");
    assert!(long.span_context.is_sampled());
    rabbit.delete().await;
}

#[tokio::test]
async fn a_failed_handler_nacks_and_the_redelivery_stays_in_the_origin_trace() {
    let rabbit = Rabbit::new("redeliver").await;
    let cap = spans::capture();
    publisher(&rabbit, &cap)
        .await
        .publish(
            &rabbit.exchange,
            ROUTING_KEY,
            BasicPublishOptions::default(),
            props("m-r"),
            b"x",
        )
        .await
        .expect("published")
        .confirmed()
        .await
        .expect("confirmed");
    let mut consumer = consumer(&rabbit, &cap).await;
    let first = within(
        "first delivery",
        consumer.process_next(async |_| Err::<(), _>(std::io::Error::other("boom"))),
    )
    .await
    .expect("received")
    .expect("not cancelled");
    assert!(first.is_err());
    within(
        "redelivery",
        consumer.process_next(async |d| {
            assert!(d.redelivered, "the broker redelivers the nacked message");
            Ok::<_, std::io::Error>(())
        }),
    )
    .await
    .expect("received")
    .expect("not cancelled")
    .expect("ok");

    let publish = cap.one(&format!("publish {}:{ROUTING_KEY}", rabbit.exchange));
    let processes = cap.named(&format!(
        "process {}:{ROUTING_KEY}:{}",
        rabbit.exchange, rabbit.queue
    ));
    assert_eq!(processes.len(), 2);
    let failed = processes
        .iter()
        .find(|s| attr(s, REDELIVERED_ATTRIBUTE).is_none())
        .expect("first");
    let retried = processes
        .iter()
        .find(|s| attr(s, REDELIVERED_ATTRIBUTE) == Some(true.into()))
        .expect("redelivered");
    for span in [failed, retried] {
        assert_eq!(trace_id(span), trace_id(&publish), "same origin trace");
        assert_eq!(span.parent_span_id, span_id(&publish));
    }
    assert!(matches!(failed.status, Status::Error { .. }));
    assert_eq!(
        attr(failed, "error.type"),
        Some("std::io::error::Error".into())
    );
    let nack = cap.one("nack");
    assert_eq!(nack.parent_span_id, span_id(failed));
    assert_eq!(cap.one("ack").parent_span_id, span_id(retried));
    rabbit.delete().await;
}

#[tokio::test]
async fn an_unroutable_mandatory_publish_is_an_error_span_and_an_error() {
    let rabbit = Rabbit::new("unroutable").await;
    let cap = spans::capture();
    let result = publisher(&rabbit, &cap)
        .await
        .publish(
            &rabbit.exchange,
            "nobody-listens",
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            BasicProperties::default(),
            b"x",
        )
        .await
        .expect("handed to the channel")
        .confirmed()
        .await;
    match result {
        Err(Error::Refused {
            refusal: Refusal::Returned { reply_code, .. },
            ..
        }) => assert_eq!(reply_code, 312),
        other => panic!("expected an unroutable refusal, got {other:?}"),
    }
    let span = cap.one(&format!("publish {}:nobody-listens", rabbit.exchange));
    assert!(
        matches!(span.status, Status::Error { .. }),
        "{:?}",
        span.status
    );
    assert_eq!(attr(&span, "error.type"), Some("unroutable".into()));
    rabbit.delete().await;
}

#[tokio::test]
async fn an_existing_traceparent_is_replaced_by_exactly_one() {
    let rabbit = Rabbit::new("replace").await;
    let cap = spans::capture();
    let mut headers = FieldTable::default();
    headers.insert(
        "Traceparent".into(),
        AMQPValue::LongString("00-11111111111111111111111111111111-1111111111111111-01".into()),
    );
    headers.insert("x-tenant".into(), AMQPValue::LongString("acme".into()));
    let pending = publisher(&rabbit, &cap)
        .await
        .publish(
            &rabbit.exchange,
            ROUTING_KEY,
            BasicPublishOptions::default(),
            BasicProperties::default().with_headers(headers),
            b"x",
        )
        .await
        .expect("published");
    let publish_ids = pending.context().span().span_context().clone();
    pending.confirmed().await.expect("confirmed");
    let receiver = TracedReceiver::new(
        rabbit.channel.clone(),
        &rabbit.queue,
        tracebridge::amqp::endpoint(&common::amqp_url()),
    )
    .with_instrumentation(cap.instrumentation());
    let delivery = within("basic.get", async {
        loop {
            if let Some(d) = receiver.receive().await.expect("basic.get") {
                break d;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let table = delivery
        .delivery()
        .properties
        .headers()
        .clone()
        .expect("headers");
    let trace_keys: Vec<_> = table
        .inner()
        .keys()
        .filter(|k| k.as_str().eq_ignore_ascii_case("traceparent"))
        .collect();
    assert_eq!(trace_keys.len(), 1, "exactly one traceparent: {table:?}");
    assert_eq!(
        table.inner().get("traceparent"),
        Some(&AMQPValue::LongString(
            format!("00-{}-{}-01", publish_ids.trace_id(), publish_ids.span_id()).into()
        ))
    );
    assert_eq!(
        table.inner().get("x-tenant"),
        Some(&AMQPValue::LongString("acme".into()))
    );
    delivery.ack().await.expect("ack");

    // basic.get: a CLIENT receive span linked to the message.
    let receive = cap.one(&format!("receive {}", rabbit.queue));
    assert_eq!(receive.span_kind, SpanKind::Client);
    assert_eq!(receive.parent_span_id, SpanId::INVALID);
    assert_eq!(receive.links.len(), 1);
    assert_eq!(
        receive.links.links[0].span_context.span_id(),
        publish_ids.span_id()
    );
    rabbit.delete().await;
}

#[tokio::test]
async fn a_confirm_outlives_its_publisher() {
    let rabbit = Rabbit::new("outlive").await;
    let cap = spans::capture();
    let mut pending = Vec::new();
    {
        let publisher = publisher(&rabbit, &cap).await;
        for i in 0..50 {
            pending.push(
                publisher
                    .publish(
                        &rabbit.exchange,
                        ROUTING_KEY,
                        BasicPublishOptions::default(),
                        props(&format!("m{i}")),
                        b"x",
                    )
                    .await
                    .expect("handed to the channel"),
            );
        }
        // The publisher (and its channel handle) is dropped here.
    }
    for confirm in pending {
        confirm.confirmed().await.expect("still confirmed");
    }
    rabbit.delete().await;
}

#[tokio::test]
async fn a_thousand_pipelined_publishes_are_all_confirmed_and_each_keeps_its_trace() {
    const N: usize = 1000;
    let rabbit = Rabbit::new("pipelined").await;
    let cap = spans::capture();
    let publisher = publisher(&rabbit, &cap).await;
    let mut pending = Vec::with_capacity(N);
    for i in 0..N {
        pending.push(
            publisher
                .publish_with_parent(
                    &Context::new(),
                    &rabbit.exchange,
                    ROUTING_KEY,
                    BasicPublishOptions::default(),
                    props(&format!("m{i}")),
                    b"x",
                )
                .await
                .expect("handed to the channel"),
        );
    }
    let confirmed = within(
        "confirms",
        futures::future::join_all(pending.into_iter().map(|p| p.confirmed())),
    )
    .await;
    assert!(
        confirmed.iter().all(Result::is_ok),
        "every publish confirmed"
    );

    let mut consumer = consumer(&rabbit, &cap).await.with_settle_spans(false);
    for _ in 0..N {
        within(
            "processing",
            consumer.process_next(async |_| Ok::<_, std::io::Error>(())),
        )
        .await
        .expect("received")
        .expect("not cancelled")
        .expect("ok");
    }
    let publishes: HashMap<String, _> = cap
        .named(&format!("publish {}:{ROUTING_KEY}", rabbit.exchange))
        .into_iter()
        .map(|s| {
            (
                attr(&s, "messaging.message.id")
                    .unwrap()
                    .as_str()
                    .into_owned(),
                s,
            )
        })
        .collect();
    assert_eq!(publishes.len(), N);
    let processes = cap.named(&format!(
        "process {}:{ROUTING_KEY}:{}",
        rabbit.exchange, rabbit.queue
    ));
    assert_eq!(processes.len(), N);
    for process in processes {
        let id = attr(&process, "messaging.message.id")
            .unwrap()
            .as_str()
            .into_owned();
        let publish = &publishes[&id];
        assert_eq!(
            trace_id(&process),
            trace_id(publish),
            "{id} stays in its trace"
        );
        assert_eq!(process.parent_span_id, span_id(publish), "{id} parent");
    }
    rabbit.delete().await;
}
