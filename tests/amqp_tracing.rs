//! tracebridge's traced lapin `Channel` — `basic_publish`, `basic_consume`
//! and `basic_get` — against a real RabbitMQ: trace ids, parents, kinds,
//! names and attributes by value.
#![cfg(feature = "amqp")]

mod common;

use std::collections::HashMap;
use std::fmt::Display;
use std::time::Duration;

use common::amqp::{ROUTING_KEY, Rabbit};
use common::spans::{self, attr, span_id, trace_id};
use futures::StreamExt as _;
use lapin::types::{AMQPValue, ByteArray, FieldTable, LongString};
use opentelemetry::trace::{FutureExt as _, SpanId, SpanKind, Status, TraceContextExt};
use opentelemetry::{Context, Value};
use tracebridge::amqp::message::Delivery;
use tracebridge::amqp::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions,
    BasicQosOptions, BasicRejectOptions,
};
use tracebridge::amqp::{BasicProperties, Channel, Confirmation, Consumer, PublisherConfirm};
use tracebridge::attributes::REDELIVERED_ATTRIBUTE;

use common::within;

/// A traced channel on `rabbit`'s connection, naming the test broker,
/// its spans going to `cap`.
async fn channel(rabbit: &Rabbit, cap: &spans::Capture) -> Channel {
    Channel::from(rabbit.conn.create_channel().await.expect("channel"))
        .with_server(&common::amqp_url())
        .with_instrumentation(cap.instrumentation())
}

/// A traced channel with publisher confirms on.
async fn publisher(rabbit: &Rabbit, cap: &spans::Capture) -> Channel {
    let channel = channel(rabbit, cap).await;
    channel
        .confirm_select(Default::default())
        .await
        .expect("confirms");
    channel
}

/// A consumer of `rabbit`'s queue on `channel` (a channel of its own).
async fn consumer(rabbit: &Rabbit, channel: Channel) -> Consumer {
    channel
        .basic_qos(100, BasicQosOptions::default())
        .await
        .expect("qos");
    channel
        .basic_consume(
            rabbit.queue.as_str().into(),
            common::unique("tag").as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume")
}

/// Publishes through the traced channel, lapin's argument order.
async fn publish(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    options: BasicPublishOptions,
    properties: BasicProperties,
    payload: &[u8],
) -> PublisherConfirm {
    channel
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            options,
            payload,
            properties,
        )
        .await
        .expect("handed to the channel")
}

/// Waits for the broker's answer and insists it is a plain ack.
async fn acked(confirm: PublisherConfirm) {
    match confirm.await.expect("confirm") {
        Confirmation::Ack(None) => {}
        other => panic!("expected an ack, got {other:?}"),
    }
}

/// The next delivery, `handler` run inside its span, then settled as a
/// worker does: `Ok` acks; `Err` nacks with requeue the first time and
/// rejects (no requeue) once the broker redelivered it.
async fn process_next<T, E: Display>(
    consumer: &mut Consumer,
    handler: impl AsyncFnOnce(&Delivery) -> Result<T, E>,
) -> Result<T, E> {
    let delivery = consumer
        .next()
        .await
        .expect("not cancelled")
        .expect("received");
    let result = delivery.in_span(handler(&delivery)).await;
    match &result {
        Ok(_) => delivery.ack(BasicAckOptions::default()).await,
        Err(_) if !delivery.redelivered => {
            delivery
                .nack(BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                })
                .await
        }
        Err(_) => delivery.reject(BasicRejectOptions { requeue: false }).await,
    }
    .expect("settled");
    result
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
    let publisher = publisher(&rabbit, &cap).await;
    acked(
        publish(
            &publisher,
            &rabbit.exchange,
            ROUTING_KEY,
            BasicPublishOptions::default(),
            props("m-1"),
            b"hello",
        )
        .await,
    )
    .await;
    let mut consumer = consumer(&rabbit, channel(&rabbit, &cap).await.with_body_size(true)).await;
    let data = within(
        "processing",
        process_next(&mut consumer, async |d| {
            Ok::<_, std::io::Error>(d.data.clone())
        }),
    )
    .await
    .expect("handler ok");
    assert_eq!(data, b"hello");

    // The test broker's URL, as the spans should name it.
    let (host, port) = {
        let uri: lapin::uri::AMQPUri = common::amqp_url().parse().expect("an AMQP URL");
        (uri.authority.host, i64::from(uri.authority.port))
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
    assert!(attr(&process, tracebridge::attributes::QUEUE_TIME_ATTRIBUTE).is_some());
    assert_eq!(
        cap.histogram_count(tracebridge::attributes::QUEUE_TIME_METRIC),
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
    let mut consumer = consumer(&rabbit, channel(&rabbit, &cap).await).await;
    for _ in 0..2 {
        within(
            "processing",
            process_next(&mut consumer, async |_| Ok::<_, std::io::Error>(())),
        )
        .await
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
    let publisher = publisher(&rabbit, &cap).await;
    acked(
        publish(
            &publisher,
            &rabbit.exchange,
            ROUTING_KEY,
            BasicPublishOptions::default(),
            props("m-r"),
            b"x",
        )
        .await,
    )
    .await;
    let mut consumer = consumer(&rabbit, channel(&rabbit, &cap).await).await;
    let first = within(
        "first delivery",
        process_next(&mut consumer, async |_| {
            Err::<(), _>(std::io::Error::other("boom"))
        }),
    )
    .await;
    assert!(first.is_err());
    within(
        "redelivery",
        process_next(&mut consumer, async |d| {
            assert!(d.redelivered, "the broker redelivers the nacked message");
            Ok::<_, std::io::Error>(())
        }),
    )
    .await
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
async fn an_unroutable_mandatory_publish_is_an_error_span_and_a_returned_message() {
    let rabbit = Rabbit::new("unroutable").await;
    let cap = spans::capture();
    let publisher = publisher(&rabbit, &cap).await;
    let answer = publish(
        &publisher,
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
    .await;
    // lapin's answer, unchanged: acked, with the message returned.
    match answer {
        Ok(Confirmation::Ack(Some(returned))) => assert_eq!(returned.reply_code, 312),
        other => panic!("expected an unroutable return, got {other:?}"),
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
    let publisher = publisher(&rabbit, &cap).await;
    let pending = publish(
        &publisher,
        &rabbit.exchange,
        ROUTING_KEY,
        BasicPublishOptions::default(),
        BasicProperties::default().with_headers(headers),
        b"x",
    )
    .await;
    let publish_ids = pending
        .context()
        .expect("the publish span")
        .span()
        .span_context()
        .clone();
    acked(pending).await;
    let receiver = Channel::from(rabbit.channel.clone())
        .with_server(&common::amqp_url())
        .with_instrumentation(cap.instrumentation());
    let delivery = within("basic.get", async {
        loop {
            if let Some(message) = receiver
                .basic_get(
                    rabbit.queue.as_str().into(),
                    BasicGetOptions { no_ack: false },
                )
                .await
                .expect("basic.get")
            {
                break message.delivery;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let table = delivery.properties.headers().clone().expect("headers");
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
    delivery.ack(BasicAckOptions::default()).await.expect("ack");

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

/// lapin closes a channel when its last handle is dropped; a confirm still
/// awaited keeps it open (without that, 3 runs in 25 failed with
/// `InvalidChannelState(Closed, …)`).
#[tokio::test]
async fn a_confirm_outlives_its_publisher() {
    let rabbit = Rabbit::new("outlive").await;
    let cap = spans::capture();
    let mut pending = Vec::new();
    {
        let publisher = publisher(&rabbit, &cap).await;
        for i in 0..50 {
            pending.push(
                publish(
                    &publisher,
                    &rabbit.exchange,
                    ROUTING_KEY,
                    BasicPublishOptions::default(),
                    props(&format!("m{i}")),
                    b"x",
                )
                .await,
            );
        }
        // The publisher (its channel handle) is dropped here.
    }
    for confirm in pending {
        acked(confirm).await;
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
        // Each message is its own trace: no ambient parent.
        pending.push(
            publish(
                &publisher,
                &rabbit.exchange,
                ROUTING_KEY,
                BasicPublishOptions::default(),
                props(&format!("m{i}")),
                b"x",
            )
            .with_context(Context::new())
            .await,
        );
    }
    let confirmed = within("confirms", futures::future::join_all(pending)).await;
    assert!(
        confirmed
            .iter()
            .all(|answer| matches!(answer, Ok(Confirmation::Ack(None)))),
        "every publish confirmed"
    );

    let mut consumer = consumer(
        &rabbit,
        channel(&rabbit, &cap).await.with_settle_spans(false),
    )
    .await;
    for _ in 0..N {
        within(
            "processing",
            process_next(&mut consumer, async |_| Ok::<_, std::io::Error>(())),
        )
        .await
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
