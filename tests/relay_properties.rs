//! AMQP message properties through the relay, against the real brokers:
//! AMQP → Kafka → AMQP (each property as an `amqp-*` header in Kafka, a
//! property again on the way back) and AMQP → AMQP (copied). Only what the
//! relay sets itself differs, as documented: persistent delivery, and
//! `user-id` carried as the header `amqp-user-id`.
#![cfg(all(feature = "kafka", feature = "amqp"))]

mod common;

use std::time::Duration;

use common::amqp::{ROUTING_KEY, Rabbit};
use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable};
use rdkafka::Message;
use tracebridge::relay::Relay;

const WAIT: Duration = Duration::from_secs(60);

/// A minute ago, in seconds (AMQP timestamps are seconds).
fn a_minute_ago() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        - 60
}

/// Every property but the delivery mode, `user-id` and the header table,
/// `timestamp` in seconds.
fn carried(timestamp: u64) -> BasicProperties {
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_content_encoding("gzip".into())
        .with_priority(7)
        .with_correlation_id("order-1".into())
        .with_reply_to("replies".into())
        .with_expiration("600000".into())
        .with_message_id("m-1".into())
        .with_timestamp(timestamp)
        .with_type("order.created".into())
        .with_app_id("checkout".into())
        .with_cluster_id("eu-1".into())
}

/// Every property: transient, `user` as `user-id` (RabbitMQ takes only the
/// publishing connection's user), one header.
fn every_property(user: &str, timestamp: u64) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert("x-app".into(), AMQPValue::LongString("1".into()));
    carried(timestamp)
        .with_delivery_mode(1)
        .with_user_id(user.into())
        .with_headers(headers)
}

/// `got` carries every property sent at `timestamp` but for what the relay
/// sets itself: persistent, and `user-id` as a header.
fn assert_restored(what: &str, timestamp: u64, got: &BasicProperties, user: &str) {
    let mut headers = FieldTable::default();
    headers.insert("x-app".into(), AMQPValue::LongString("1".into()));
    headers.insert("amqp-user-id".into(), AMQPValue::LongString(user.into()));
    let table = got.headers().clone().unwrap_or_default();
    // Anything else in the table is the relay's own trace context.
    let others: Vec<&str> = table
        .inner()
        .keys()
        .map(|k| k.as_str())
        .filter(|k| !headers.inner().contains_key(*k))
        .collect();
    assert!(
        others
            .iter()
            .all(|k| ["traceparent", "tracestate", "amqp-delivery-mode"].contains(k)),
        "{what}: {others:?}"
    );
    for (name, value) in headers.inner() {
        assert_eq!(
            table.inner().get(name.as_str()),
            Some(value),
            "{what}: header {name}"
        );
    }
    let expected = carried(timestamp).with_delivery_mode(2).with_headers(table);
    assert_eq!(got, &expected, "{what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_amqp_property_survives_kafka_and_amqp() {
    let url: lapin::uri::AMQPUri = common::amqp_url().parse().expect("URL");
    let user = url.authority.userinfo.username.clone();
    let source = Rabbit::new("props-src").await;
    let back = Rabbit::new("props-back").await;
    let copy_source = Rabbit::new("props-copy-src").await;
    let copy = Rabbit::new("props-copy").await;
    let topic = common::unique("props");
    common::kafka::create_topic(&topic, 1).await;
    let relay = Relay::start(
        common::relay_config(&format!(
            r#"[[route]]
name = "out"
from = {{ amqp = "r", queue = "{source_queue}" }}
to = {{ kafka = "k", topic = "{topic}" }}

[[route]]
name = "back"
from = {{ kafka = "k", topic = "{topic}", group = "{topic}-relay" }}
to = {{ amqp = "r", exchange = "{back_exchange}", routing_key = "{ROUTING_KEY}" }}

[[route]]
name = "copy"
from = {{ amqp = "r", queue = "{copy_queue}" }}
to = {{ amqp = "r", exchange = "{copy_exchange}", routing_key = "{ROUTING_KEY}" }}"#,
            source_queue = source.queue,
            back_exchange = back.exchange,
            copy_queue = copy_source.queue,
            copy_exchange = copy.exchange,
        )),
        tracebridge::Instrumentation::global(),
    )
    .await
    .expect("relay starts");
    let timestamp = a_minute_ago();
    let sent = every_property(&user, timestamp);
    for rabbit in [&source, &copy_source] {
        rabbit
            .channel
            .basic_publish(
                rabbit.exchange.as_str().into(),
                ROUTING_KEY.into(),
                BasicPublishOptions::default(),
                b"{}",
                sent.clone(),
            )
            .await
            .expect("published")
            .await
            .expect("routed");
    }

    // In Kafka: each property a header, the timestamp the record's.
    let reader = common::flow::kafka_reader(&common::kafka_bootstrap(), &topic);
    let record = tokio::time::timeout(WAIT, reader.recv())
        .await
        .expect("a record in time")
        .expect("a record");
    let header = |name: &str| common::kafka::header_text(&record, name);
    for (name, value) in [
        ("amqp-content-type", "application/json"),
        ("amqp-content-encoding", "gzip"),
        ("amqp-delivery-mode", "1"),
        ("amqp-priority", "7"),
        ("amqp-correlation-id", "order-1"),
        ("amqp-reply-to", "replies"),
        ("amqp-expiration", "600000"),
        ("amqp-message-id", "m-1"),
        ("amqp-type", "order.created"),
        ("amqp-user-id", user.as_str()),
        ("amqp-app-id", "checkout"),
        ("amqp-cluster-id", "eu-1"),
        ("x-app", "1"),
    ] {
        assert_eq!(header(name).as_deref(), Some(value), "{name} in Kafka");
    }
    let millis = i64::try_from(timestamp * 1000).expect("ms");
    assert_eq!(record.timestamp().to_millis(), Some(millis));
    assert_eq!(
        record.key(),
        Some(&b"order-1"[..]),
        "the correlation id is the key"
    );

    let round_trip = back.get_one().await;
    assert_restored(
        "AMQP → Kafka → AMQP",
        timestamp,
        &round_trip.delivery.properties,
        &user,
    );
    let copied = copy.get_one().await;
    assert_restored("AMQP → AMQP", timestamp, &copied.delivery.properties, &user);
    assert!(relay.shutdown().await, "drained");
    for rabbit in [source, back, copy_source, copy] {
        rabbit.delete().await;
    }
}
