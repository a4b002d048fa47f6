//! Trace headers written by the AMQP carrier come back through a real
//! RabbitMQ as long strings, and foreign value types are read.
#![cfg(feature = "amqp")]

mod common;

use lapin::BasicProperties;
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, ByteArray, FieldTable, LongString};
use opentelemetry::Context;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracebridge::amqp::{AmqpHeaderExtractor, AmqpHeaderInjector};
use tracebridge::propagation::Propagation;

const OURS: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const PYTHON: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-03";

#[tokio::test]
async fn headers_survive_rabbitmq_and_foreign_types_are_read() {
    let conn = common::amqp::connect().await;
    let channel = conn.create_channel().await.expect("channel");
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    let queue = common::unique("hdr");
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("declare queue");

    // Ours: injected into a table that already has a stale Traceparent.
    let mut ours = FieldTable::default();
    ours.insert("Traceparent".into(), AMQPValue::LongString("stale".into()));
    ours.insert("x-app".into(), AMQPValue::LongInt(7));
    let cx = Context::new().with_remote_span_context(SpanContext::new(
        TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
        SpanId::from_hex("00f067aa0ba902b7").unwrap(),
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    ));
    Propagation::default().inject(&cx, &mut AmqpHeaderInjector(&mut ours));

    // Foreign: pika writing bytes (`x`) with the Python SDK's flags 03.
    let mut foreign = FieldTable::default();
    foreign.insert(
        "traceparent".into(),
        AMQPValue::ByteArray(ByteArray::from(PYTHON.as_bytes().to_vec())),
    );

    for headers in [ours, foreign] {
        channel
            .basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions::default(),
                b"payload",
                BasicProperties::default().with_headers(headers),
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
    }

    let get = |channel: lapin::Channel, queue: String| async move {
        channel
            .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .expect("basic.get")
            .expect("a message is waiting")
            .delivery
    };
    let first = get(channel.clone(), queue.clone()).await;
    let table = first.properties.headers().clone().expect("headers");
    let keys: Vec<_> = table
        .inner()
        .keys()
        .map(|k| k.as_str().to_owned())
        .collect();
    assert_eq!(
        keys,
        vec!["traceparent", "x-app"],
        "one traceparent, other header kept"
    );
    assert_eq!(
        table.inner().get("traceparent"),
        Some(&AMQPValue::LongString(LongString::from(OURS)))
    );
    assert_eq!(table.inner().get("x-app"), Some(&AMQPValue::LongInt(7)));

    let second = get(channel.clone(), queue.clone()).await;
    let table = second.properties.headers().clone().expect("headers");
    let extracted = Propagation::default().extract(&AmqpHeaderExtractor(&table));
    let parent = extracted
        .span_context()
        .expect("byte-array traceparent is read");
    assert_eq!(
        parent.trace_id().to_string(),
        "0af7651916cd43dd8448eb211c80319c"
    );
    assert!(parent.is_sampled());

    channel
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await
        .expect("delete queue");
}
