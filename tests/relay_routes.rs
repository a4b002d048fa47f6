//! The relay between real brokers (library entry point): one trace across
//! the hop in both directions, link mode, headers carried unchanged, B3 in
//! and W3C out, and poison messages dead-lettered while the route goes on.
#![cfg(all(feature = "kafka", feature = "amqp"))]

mod common;

use std::time::Duration;

use common::amqp::{ROUTING_KEY, Rabbit};
use common::spans::{self, attr, span_id, trace_id};
use lapin::BasicProperties;
use lapin::options::{BasicPublishOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use opentelemetry::trace::SpanKind;
use rdkafka::Message;
use rdkafka::consumer::Consumer;
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use tracebridge::kafka::ConsumerTracing;
use tracebridge::relay::Relay;

use common::within;

/// The end of a route read with a traced Kafka consumer.
struct KafkaEnd {
    consumer: rdkafka::consumer::StreamConsumer,
    tracing: ConsumerTracing,
}

fn kafka_consumer(cap: &spans::Capture, topic: &str) -> KafkaEnd {
    let mut config = common::kafka::config();
    config
        .set("group.id", common::unique("final"))
        .set("auto.offset.reset", "earliest");
    let consumer: rdkafka::consumer::StreamConsumer = config.create().expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    KafkaEnd {
        consumer,
        tracing: ConsumerTracing::default().with_instrumentation(cap.instrumentation()),
    }
}

impl KafkaEnd {
    /// The next record, handled by `read` inside its process span.
    async fn process_next<T>(
        &self,
        read: impl FnOnce(&rdkafka::message::BorrowedMessage<'_>) -> T,
    ) -> T {
        let message = self.consumer.recv().await.expect("received");
        let read = async { Ok::<_, std::convert::Infallible>(read(&message)) };
        match self.tracing.process(&self.consumer, &message, read).await {
            Ok(value) => value,
            Err(never) => match never {},
        }
    }
}

async fn amqp_consumer(rabbit: &Rabbit, cap: &spans::Capture) -> tracebridge::amqp::Consumer {
    common::traced::amqp_consumer(rabbit, cap.instrumentation(), false).await
}

/// The next delivery, handled by `read` inside its process span, then acked.
async fn amqp_next<T>(
    consumer: &mut tracebridge::amqp::Consumer,
    read: impl FnOnce(&lapin::message::Delivery) -> T,
) -> T {
    use futures::StreamExt as _;
    let delivery = consumer.next().await.expect("open").expect("received");
    let read = async { Ok::<_, std::convert::Infallible>(read(&delivery)) };
    let Ok(value) = delivery.in_span(read).await;
    delivery
        .ack(lapin::options::BasicAckOptions::default())
        .await
        .expect("ack");
    value
}

#[tokio::test]
async fn kafka_to_amqp_is_one_trace_and_carries_other_headers_unchanged() {
    let topic = common::unique("k2a");
    common::kafka::create_topic(&topic, 1).await;
    let rabbit = Rabbit::new("k2a").await;
    let cap = spans::capture();
    let relay = Relay::start(
        common::relay_config(&format!(
            r#"[[route]]
name = "k2a"
from = {{ kafka = "k", topic = "{topic}", group = "{topic}-relay" }}
to = {{ amqp = "r", exchange = "{}", routing_key = "{ROUTING_KEY}" }}"#,
            rabbit.exchange
        )),
        cap.instrumentation(),
    )
    .await
    .expect("relay starts");

    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "x_under",
            value: Some("u"),
        })
        .insert(Header {
            key: "x-dash",
            value: Some(&[0u8, 1, 254, 255][..]),
        });
    common::traced::kafka_producer(cap.instrumentation())
        .send(
            FutureRecord::to(&topic)
                .key("req-1")
                .payload("order")
                .headers(headers),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .expect("delivered");

    let mut consumer = amqp_consumer(&rabbit, &cap).await;
    let table = within(
        "relayed delivery",
        amqp_next(&mut consumer, |d| {
            (
                d.properties.headers().clone().unwrap_or_default(),
                d.properties.correlation_id().clone(),
            )
        }),
    )
    .await;

    let addr = relay.listen_addr();
    assert_eq!(
        common::http_get(addr, "/healthz").await,
        (200, "ok\n".to_owned())
    );
    assert_eq!(
        common::http_get(addr, "/readyz").await,
        (200, "ready\n".to_owned())
    );
    let expected = [
        "tracebridge_relay_consumed_total{route=\"k2a\"} 1",
        "tracebridge_relay_published_total{route=\"k2a\"} 1",
        "tracebridge_relay_dead_lettered_total{route=\"k2a\"} 0",
        "tracebridge_relay_in_flight{route=\"k2a\"} 0",
        "tracebridge_relay_hop_duration_seconds_count{route=\"k2a\"} 1",
    ];
    // RabbitMQ may deliver the message to us before its publisher confirm
    // reaches the relay, which counts it only then: wait for the count.
    let settled = std::time::Instant::now();
    let metrics = loop {
        let (status, metrics) = common::http_get(addr, "/metrics").await;
        assert_eq!(status, 200);
        let all = expected
            .iter()
            .all(|line| metrics.lines().any(|l| l == *line));
        if all || settled.elapsed() > Duration::from_secs(10) {
            break metrics;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for line in expected {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line:?} in:\n{metrics}"
        );
    }
    assert!(relay.shutdown().await, "drained");

    let (table, correlation_id) = table;
    assert_eq!(
        table.inner().get("x_under"),
        Some(&AMQPValue::LongString("u".into()))
    );
    assert_eq!(
        table.inner().get("x-dash"),
        Some(&AMQPValue::LongString(vec![0u8, 1, 254, 255].into()))
    );
    assert_eq!(
        correlation_id.map(|c| c.to_string()).as_deref(),
        Some("req-1"),
        "Kafka key -> correlation_id"
    );

    let origin = cap.one(&format!("send {topic}"));
    let relay_process = cap.one(&format!("process {topic}"));
    let relay_publish = cap.one(&format!("publish {}:{ROUTING_KEY}", rabbit.exchange));
    let last = cap.one(&format!(
        "process {}:{ROUTING_KEY}:{}",
        rabbit.exchange, rabbit.queue
    ));
    for span in [&relay_process, &relay_publish, &last] {
        assert_eq!(
            trace_id(span),
            trace_id(&origin),
            "{} is in the origin trace",
            span.name
        );
    }
    assert_eq!(relay_process.parent_span_id, span_id(&origin));
    assert_eq!(relay_process.span_kind, SpanKind::Consumer);
    assert_eq!(
        attr(&relay_process, "tracebridge.route"),
        Some("k2a".into())
    );
    assert_eq!(relay_publish.parent_span_id, span_id(&relay_process));
    assert_eq!(relay_publish.span_kind, SpanKind::Producer);
    assert_eq!(last.parent_span_id, span_id(&relay_publish));
    rabbit.delete().await;
}

#[tokio::test]
async fn amqp_to_kafka_is_one_trace_and_link_mode_makes_two_linked_traces() {
    for mode in ["join", "link"] {
        let topic = common::unique("a2k");
        common::kafka::create_topic(&topic, 1).await;
        let rabbit = Rabbit::new("a2k").await;
        let cap = spans::capture();
        let relay = Relay::start(
            common::relay_config(&format!(
                r#"[[route]]
name = "a2k"
from = {{ amqp = "r", queue = "{}" }}
to = {{ kafka = "k", topic = "{topic}" }}
propagation = {{ mode = "{mode}" }}"#,
                rabbit.queue
            )),
            cap.instrumentation(),
        )
        .await
        .expect("relay starts");
        let mut headers = FieldTable::default();
        headers.insert("x-tenant".into(), AMQPValue::LongString("acme".into()));
        let confirmation = common::traced::amqp_channel(&rabbit.conn, cap.instrumentation())
            .await
            .basic_publish(
                rabbit.exchange.as_str().into(),
                ROUTING_KEY.into(),
                BasicPublishOptions::default(),
                b"payload",
                BasicProperties::default()
                    .with_correlation_id("req-7".into())
                    .with_headers(headers),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(confirmation.is_ack());

        let consumer = kafka_consumer(&cap, &topic);
        let (key, tenant) = within(
            "relayed record",
            consumer.process_next(|m| {
                let tenant = m.headers().and_then(|h| {
                    h.iter()
                        .find(|h| h.key == "x-tenant")
                        .and_then(|h| h.value.map(<[u8]>::to_vec))
                });
                (m.key().map(<[u8]>::to_vec), tenant)
            }),
        )
        .await;
        assert!(relay.shutdown().await);
        assert_eq!(
            key.as_deref(),
            Some(&b"req-7"[..]),
            "correlation_id -> Kafka key"
        );
        assert_eq!(tenant.as_deref(), Some(&b"acme"[..]));

        let origin = cap.one(&format!("publish {}:{ROUTING_KEY}", rabbit.exchange));
        let relay_process = cap.one(&format!(
            "process {}:{ROUTING_KEY}:{}",
            rabbit.exchange, rabbit.queue
        ));
        let relay_send = cap.one(&format!("send {topic}"));
        let last = cap.one(&format!("process {topic}"));
        assert_eq!(relay_send.parent_span_id, span_id(&relay_process));
        assert_eq!(last.parent_span_id, span_id(&relay_send));
        assert_eq!(trace_id(&last), trace_id(&relay_process));
        match mode {
            "join" => {
                assert_eq!(trace_id(&relay_process), trace_id(&origin), "one trace");
                assert_eq!(relay_process.parent_span_id, span_id(&origin));
            }
            _ => {
                assert_ne!(
                    trace_id(&relay_process),
                    trace_id(&origin),
                    "link: a new trace"
                );
                assert_eq!(relay_process.links.len(), 1);
                assert_eq!(
                    relay_process.links.links[0].span_context.span_id(),
                    span_id(&origin)
                );
            }
        }
        rabbit.delete().await;
    }
}

#[tokio::test]
async fn b3_in_w3c_out_keeps_the_trace_id_and_drops_the_stale_b3() {
    let topic = common::unique("b3");
    common::kafka::create_topic(&topic, 1).await;
    let rabbit = Rabbit::new("b3").await;
    let cap = spans::capture();
    let relay = Relay::start(
        common::relay_config(&format!(
            r#"[[route]]
name = "b3"
from = {{ kafka = "k", topic = "{topic}", group = "{topic}-relay" }}
to = {{ amqp = "r", exchange = "{}", routing_key = "{ROUTING_KEY}" }}
propagation = {{ extract = ["b3"], inject = ["tracecontext"] }}"#,
            rabbit.exchange
        )),
        cap.instrumentation(),
    )
    .await
    .expect("relay starts");
    let b3 = "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1";
    common::kafka::producer()
        .send(
            FutureRecord::to(&topic)
                .key("k")
                .payload("p")
                .headers(OwnedHeaders::new().insert(Header {
                    key: "b3",
                    value: Some(b3),
                })),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .expect("delivered");
    let mut consumer = amqp_consumer(&rabbit, &cap).await;
    let table = within(
        "relayed delivery",
        amqp_next(&mut consumer, |d| {
            d.properties.headers().clone().unwrap_or_default()
        }),
    )
    .await;
    assert!(relay.shutdown().await);
    assert!(
        table.inner().get("b3").is_none(),
        "the stale b3 header is not carried on"
    );
    let Some(AMQPValue::LongString(traceparent)) = table.inner().get("traceparent") else {
        panic!("a traceparent is written: {table:?}");
    };
    let traceparent = String::from_utf8_lossy(traceparent.as_bytes()).into_owned();
    assert!(
        traceparent.starts_with("00-80f198ee56343ba864fe8b2a57d3eff7-"),
        "{traceparent}"
    );
    let relay_process = cap.one(&format!("process {topic}"));
    assert_eq!(relay_process.parent_span_id.to_string(), "e457b5a2e4d86bd1");
    rabbit.delete().await;
}

#[tokio::test]
async fn a_poison_message_is_dead_lettered_with_the_reason_and_the_route_goes_on() {
    let topic = common::unique("poison");
    common::kafka::create_topic(&topic, 1).await;
    let rabbit = Rabbit::new("poison").await;
    // The dead-letter exchange is the same one, bound under "dead".
    let dlq = common::unique("dlq");
    rabbit
        .channel
        .queue_declare(
            dlq.as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    rabbit
        .channel
        .queue_bind(
            dlq.as_str().into(),
            rabbit.exchange.as_str().into(),
            "dead".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let cap = spans::capture();
    let relay = Relay::start(
        common::relay_config(&format!(
            r#"[[route]]
name = "poison"
from = {{ kafka = "k", topic = "{topic}", group = "{topic}-relay" }}
to = {{ amqp = "r", exchange = "{x}", routing_key_from = "header:x-route" }}
retry = {{ attempts = 3, backoff = "10ms" }}
dead_letter = {{ amqp = "r", exchange = "{x}", routing_key = "dead" }}"#,
            x = rabbit.exchange
        )),
        cap.instrumentation(),
    )
    .await
    .expect("relay starts");
    // Traced: the dead letter must stay in the origin's trace.
    let producer = common::traced::kafka_producer(cap.instrumentation());
    for (key, route) in [("poison", "nowhere"), ("good", ROUTING_KEY)] {
        producer
            .send(
                FutureRecord::to(&topic)
                    .key(key)
                    .payload(key)
                    .headers(OwnedHeaders::new().insert(Header {
                        key: "x-route",
                        value: Some(route),
                    })),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("delivered");
    }
    let mut consumer = amqp_consumer(&rabbit, &cap).await;
    let good = within(
        "the next message",
        amqp_next(&mut consumer, |d| d.data.clone()),
    )
    .await;
    assert_eq!(good, b"good");

    // A traced consumer of the dead-letter queue, as a user would run.
    let dead_channel = common::traced::amqp_channel(&rabbit.conn, cap.instrumentation()).await;
    let mut dead_consumer = dead_channel
        .basic_consume(
            dlq.as_str().into(),
            common::unique("dead").as_str().into(),
            lapin::options::BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume the dead letters");
    let dead = within(
        "the dead letter",
        futures::StreamExt::next(&mut dead_consumer),
    )
    .await
    .expect("open")
    .expect("received");
    assert!(relay.shutdown().await);
    assert_eq!(dead.data, b"poison");
    let headers = dead.properties.headers().clone().expect("headers");
    let text = |name: &str| match headers.inner().get(name) {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        other => panic!("{name}: {other:?}"),
    };
    assert!(
        text("x-tracebridge-error").contains("unroutable"),
        "{}",
        text("x-tracebridge-error")
    );
    assert_eq!(text("x-tracebridge-route"), "poison");
    assert_eq!(text("x-tracebridge-source"), format!("kafka {topic}[0]@0"));
    // Unroutable is permanent: dead-lettered at once, not retried.
    assert_eq!(text("x-tracebridge-attempts"), "1");
    dead.ack(lapin::options::BasicAckOptions::default())
        .await
        .expect("ack");

    let failed = cap
        .named(&format!("process {topic}"))
        .into_iter()
        .find(|s| attr(s, "kafka.message.key") == Some("poison".into()))
        .expect("the poison message's process span");
    assert!(matches!(
        failed.status,
        opentelemetry::trace::Status::Error { .. }
    ));
    let attempts = cap.named(&format!("publish {}:nowhere", rabbit.exchange));
    assert_eq!(
        attempts.len(),
        1,
        "one publish span: no retry of a permanent failure"
    );
    assert_eq!(
        attr(
            &attempts[0],
            tracebridge::dead_letter::SEND_ATTEMPT_ATTRIBUTE
        ),
        Some(1i64.into())
    );
    // The dead letter: a PRODUCER span under the process span, saying why;
    // its consumer continues the origin's trace and reads the reason.
    let origin = cap
        .named(&format!("send {topic}"))
        .into_iter()
        .find(|s| attr(s, "kafka.message.key") == Some("poison".into()))
        .expect("the poison message's send span");
    assert_eq!(
        trace_id(&failed),
        trace_id(&origin),
        "the relay joins the origin trace"
    );
    let dead_publish = cap.one(&format!("publish {}:dead", rabbit.exchange));
    assert_eq!(dead_publish.parent_span_id, span_id(&failed));
    let reason = attr(&dead_publish, tracebridge::dead_letter::REASON_ATTRIBUTE)
        .expect("the dead letter's reason")
        .as_str()
        .into_owned();
    assert!(reason.contains("unroutable"), "{reason}");
    assert_eq!(
        attr(&dead_publish, tracebridge::dead_letter::ATTEMPTS_ATTRIBUTE),
        Some(1i64.into())
    );
    let received = cap.one(&format!("process {}:dead:{dlq}", rabbit.exchange));
    assert_eq!(trace_id(&received), trace_id(&origin), "the origin's trace");
    assert_eq!(received.parent_span_id, span_id(&dead_publish));
    assert_eq!(
        attr(&received, tracebridge::dead_letter::REASON_ATTRIBUTE),
        Some(reason.into())
    );
    assert_eq!(
        attr(&received, tracebridge::dead_letter::ATTEMPTS_ATTRIBUTE),
        Some(1i64.into())
    );
    let channel = rabbit.conn.create_channel().await.unwrap();
    let _ = channel
        .queue_delete(dlq.as_str().into(), Default::default())
        .await;
    rabbit.delete().await;
}

/// A minimal HTTP/1.0 GET: (status, body).
#[tokio::test]
async fn kafka_to_kafka_and_amqp_to_amqp_keep_the_trace_too() {
    let cap = spans::capture();
    // Kafka -> Kafka.
    let (a, b) = (common::unique("kk-a"), common::unique("kk-b"));
    common::kafka::create_topic(&a, 1).await;
    common::kafka::create_topic(&b, 1).await;
    // AMQP -> AMQP: from one queue to another exchange.
    let from = Rabbit::new("aa-from").await;
    let to = Rabbit::new("aa-to").await;
    let relay = Relay::start(
        common::relay_config(&format!(
            r#"[[route]]
name = "kk"
from = {{ kafka = "k", topic = "{a}", group = "{a}-relay" }}
to = {{ kafka = "k", topic = "{b}", key_from = "header:x-order" }}

[[route]]
name = "aa"
from = {{ amqp = "r", queue = "{}" }}
to = {{ amqp = "r", exchange = "{}", routing_key_from = "source_key" }}"#,
            from.queue, to.exchange
        )),
        cap.instrumentation(),
    )
    .await
    .expect("relay starts");

    common::traced::kafka_producer(cap.instrumentation())
        .send(
            FutureRecord::to(&a)
                .key("k1")
                .payload("p")
                .headers(OwnedHeaders::new().insert(Header {
                    key: "x-order",
                    value: Some("o-9"),
                })),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .expect("delivered");
    let confirmation = common::traced::amqp_channel(&from.conn, cap.instrumentation())
        .await
        // Routed into `from.queue` with ROUTING_KEY, which the relay reuses
        // as the routing key into `to.exchange` (bound with the same key).
        .basic_publish(
            from.exchange.as_str().into(),
            ROUTING_KEY.into(),
            BasicPublishOptions::default(),
            b"p",
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(confirmation.is_ack());

    let consumer = kafka_consumer(&cap, &b);
    let key = within(
        "k->k record",
        consumer.process_next(|m| m.key().map(<[u8]>::to_vec)),
    )
    .await;
    assert_eq!(
        key.as_deref(),
        Some(&b"o-9"[..]),
        "the Kafka key comes from the x-order header"
    );
    let mut amqp = amqp_consumer(&to, &cap).await;
    within("a->a delivery", amqp_next(&mut amqp, |_| ())).await;
    assert!(relay.shutdown().await);

    let origin = cap.one(&format!("send {a}"));
    let last = cap.one(&format!("process {b}"));
    assert_eq!(
        trace_id(&last),
        trace_id(&origin),
        "Kafka -> Kafka: one trace"
    );
    assert_eq!(last.parent_span_id, span_id(&cap.one(&format!("send {b}"))));
    let origin = cap.one(&format!("publish {}:{ROUTING_KEY}", from.exchange));
    let last = cap.one(&format!(
        "process {}:{ROUTING_KEY}:{}",
        to.exchange, to.queue
    ));
    assert_eq!(
        trace_id(&last),
        trace_id(&origin),
        "AMQP -> AMQP: one trace"
    );
    assert_eq!(
        last.parent_span_id,
        span_id(&cap.one(&format!("publish {}:{ROUTING_KEY}", to.exchange)))
    );
    from.delete().await;
    to.delete().await;
}
