//! Messages the sink can never take, against the real brokers: a Kafka
//! header name AMQP cannot carry (300 bytes) and headers larger than
//! RabbitMQ's frame_max (200 KB). With a dead letter, each is dead-lettered
//! at once with the reason, its neighbours arrive exactly once, and the
//! sink connection never breaks. Without one, the route stops at it
//! visibly (`/readyz` 503 naming it, a metric), SIGTERM exits 0 at once, and
//! a restart duplicates at most the window.
#![cfg(all(feature = "kafka", feature = "amqp"))]

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::amqp::{ROUTING_KEY, Rabbit};
use common::flow::{RelaySetup, Seen, Until, drain_amqp, kafka_to_amqp};
use common::raw_amqp::{self, RawMessage};
use lapin::options::{BasicGetOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use tracebridge::relay::Relay;

const WAIT: Duration = Duration::from_secs(60);

/// A record to send: its key (also its payload) and its headers.
type Record = (String, Vec<(String, Vec<u8>)>);

/// Sends records in order to `topic`.
async fn send(topic: &str, records: &[Record]) {
    let producer = common::kafka::config()
        .set("message.timeout.ms", "10000")
        .set("message.max.bytes", "2000000")
        .create::<rdkafka::producer::FutureProducer>()
        .expect("producer");
    for (key, headers) in records {
        let headers = headers
            .iter()
            .fold(OwnedHeaders::new(), |h, (name, value)| {
                h.insert(Header {
                    key: name,
                    value: Some(value),
                })
            });
        producer
            .send(
                FutureRecord::to(topic)
                    .key(key)
                    .payload(key)
                    .headers(headers),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("delivered");
    }
}

fn plain(key: &str) -> Record {
    (key.to_owned(), vec![("x-app".into(), b"1".to_vec())])
}

fn long_name(key: &str) -> Record {
    (key.to_owned(), vec![("n".repeat(300), b"v".to_vec())])
}

fn huge_header(key: &str) -> Record {
    (
        key.to_owned(),
        vec![("x-huge".into(), vec![b'h'; 200 * 1024])],
    )
}

/// A queue bound to `rabbit`'s exchange under routing key "dead".
async fn dead_letter_queue(rabbit: &Rabbit) -> String {
    let dlq = common::unique("dlq");
    rabbit
        .channel
        .queue_declare(
            dlq.as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("declare the dead-letter queue");
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
        .expect("bind it");
    dlq
}

fn text(headers: &FieldTable, name: &str) -> String {
    match headers.inner().get(name) {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        other => panic!("{name}: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrepresentable_messages_are_dead_lettered_at_once_and_neighbours_arrive_once() {
    let topic = common::unique("unrep");
    common::kafka::create_topic(&topic, 1).await;
    let rabbit = Rabbit::new("unrep").await;
    let dlq = dead_letter_queue(&rabbit).await;
    let relay = Relay::start(
        common::relay_config(&format!(
            r#"[[route]]
name = "unrep"
from = {{ kafka = "k", topic = "{topic}", group = "{topic}-relay" }}
to = {{ amqp = "r", exchange = "{x}", routing_key = "{ROUTING_KEY}" }}
retry = {{ attempts = 5, backoff = "1s" }}
dead_letter = {{ amqp = "r", exchange = "{x}", routing_key = "dead" }}"#,
            x = rabbit.exchange
        )),
        tracebridge::Instrumentation::global(),
    )
    .await
    .expect("relay starts");
    let started = Instant::now();
    send(
        &topic,
        &[
            plain("good-0"),
            long_name("long-name"),
            plain("good-1"),
            huge_header("huge"),
            plain("good-2"),
        ],
    )
    .await;

    let mut seen = Seen::new();
    drain_amqp(
        &rabbit.channel,
        &rabbit.queue,
        &mut seen,
        3,
        Until::Arrived,
        WAIT,
    )
    .await;
    let mut dead = HashMap::new();
    while dead.len() < 2 && started.elapsed() < WAIT {
        match rabbit
            .channel
            .basic_get(dlq.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .expect("basic.get")
        {
            Some(m) => {
                let key = String::from_utf8_lossy(&m.delivery.data).into_owned();
                dead.insert(
                    key,
                    m.delivery.properties.headers().clone().unwrap_or_default(),
                );
            }
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let took = started.elapsed();
    let metrics = relay.metrics().render();
    assert!(relay.shutdown().await, "drained");
    drain_amqp(
        &rabbit.channel,
        &rabbit.queue,
        &mut seen,
        usize::MAX,
        Until::Empty,
        WAIT,
    )
    .await;

    let mut keys: Vec<_> = seen.iter().map(|(k, v)| (k.clone(), v.len())).collect();
    keys.sort();
    assert_eq!(
        keys,
        vec![
            ("good-0".into(), 1),
            ("good-1".into(), 1),
            ("good-2".into(), 1)
        ],
        "each neighbour exactly once, no poison in the sink"
    );
    let long = dead
        .get("long-name")
        .expect("the long header name was dead-lettered");
    assert!(
        text(long, "x-tracebridge-error").contains("header name of 300 bytes"),
        "{}",
        text(long, "x-tracebridge-error")
    );
    assert_eq!(
        text(long, "x-tracebridge-attempts"),
        "1",
        "permanent: no retries"
    );
    assert!(text(long, "x-tracebridge-left-out").contains("300 bytes"));
    let huge = dead
        .get("huge")
        .expect("the 200 KB header was dead-lettered");
    assert!(
        text(huge, "x-tracebridge-error").contains("frame_max"),
        "{}",
        text(huge, "x-tracebridge-error")
    );
    assert!(
        text(huge, "x-tracebridge-left-out").contains("every original header"),
        "the dead letter could not carry the header either: a minimal one"
    );
    assert!(huge.inner().get("x-huge").is_none());
    // Dead-lettered at once: no backoff (1 s, 2 s, …) was waited.
    assert!(took < Duration::from_secs(10), "took {took:?}");
    for (metric, value) in [
        ("tracebridge_relay_published_total{route=\"unrep\"}", "3"),
        (
            "tracebridge_relay_dead_lettered_total{route=\"unrep\"}",
            "2",
        ),
        ("tracebridge_relay_retried_total{route=\"unrep\"}", "0"),
        ("tracebridge_relay_failed_total{route=\"unrep\"}", "0"),
    ] {
        assert!(
            metrics.contains(&format!("{metric} {value}")),
            "{metric} {value} in:\n{metrics}"
        );
    }
    let channel = rabbit.conn.create_channel().await.expect("channel");
    let _ = channel
        .queue_delete(dlq.as_str().into(), Default::default())
        .await;
    rabbit.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_dead_letter_a_poison_message_stops_the_route_visibly_and_sigterm_is_quick() {
    const WINDOW: usize = 4;
    let bootstrap = common::kafka_bootstrap();
    let topic = common::unique("stuck");
    common::kafka::create_topic(&topic, 1).await;
    let rabbit = Rabbit::new("stuck").await;
    let mut records = vec![plain("before-0"), plain("before-1"), long_name("poison")];
    records.extend((0..20).map(|i| plain(&format!("after-{i}"))));
    send(&topic, &records).await;
    let setup = RelaySetup::new(
        WINDOW,
        &bootstrap,
        &kafka_to_amqp("stuck", &topic, &rabbit.exchange),
    );
    let mut seen = Seen::new();

    let relay = setup.start();
    let started = Instant::now();
    let (status, body) = loop {
        let (status, body) = relay.readyz().await;
        if status == 503 && body.contains("never send") {
            break (status, body);
        }
        assert!(
            started.elapsed() < WAIT,
            "/readyz never named the poison message: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status, 503);
    assert!(body.contains("stuck"), "names the route: {body}");
    assert!(
        body.contains(&format!("kafka {topic}[0]@2")),
        "names where the message is: {body}"
    );
    assert!(body.contains("header name of 300 bytes"), "and why: {body}");
    let (_, metrics) = common::http_get(relay.listen, "/metrics").await;
    assert!(
        metrics.contains("tracebridge_relay_stopped_at_poison_message{route=\"stuck\"} 1"),
        "{metrics}"
    );
    let stopping = Instant::now();
    relay.stop();
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "SIGTERM took {:?}",
        stopping.elapsed()
    );
    drain_amqp(
        &rabbit.channel,
        &rabbit.queue,
        &mut seen,
        usize::MAX,
        Until::Empty,
        WAIT,
    )
    .await;
    let first_run: usize = seen.values().map(Vec::len).sum();
    assert!(seen.contains_key("before-0") && seen.contains_key("before-1"));
    assert!(!seen.contains_key("poison"));
    let after = seen.keys().filter(|k| k.starts_with("after-")).count();
    assert!(
        after <= WINDOW,
        "the route stopped reading at the poison message: {after} after it"
    );

    // A restart stops at the same message and re-sends at most the window.
    let relay = setup.start();
    let started = Instant::now();
    while relay.readyz().await.0 != 503 || !relay.readyz().await.1.contains("never send") {
        assert!(
            started.elapsed() < WAIT,
            "the restarted route did not stop at the poison message"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    relay.stop();
    drain_amqp(
        &rabbit.channel,
        &rabbit.queue,
        &mut seen,
        usize::MAX,
        Until::Empty,
        WAIT,
    )
    .await;
    let total: usize = seen.values().map(Vec::len).sum();
    assert_eq!(
        seen["before-0"].len(),
        1,
        "committed before the poison: not re-sent"
    );
    assert!(
        total - first_run <= WINDOW,
        "{} re-sent after the restart",
        total - first_run
    );
    rabbit.delete().await;
}

/// Headers nested past what a recursive parser survives (1 200 tables and
/// 1 500 arrays aborted the whole process on lapin's I/O thread before
/// `patches/amq-protocol-types`) are dead-lettered with the reason; their
/// neighbours and the route go on, and a nesting within the limit is
/// relayed as it came.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_nested_past_any_stack_are_dead_lettered_and_the_process_lives() {
    let source = Rabbit::new("deep-src").await;
    let sink = Rabbit::new("deep-dst").await;
    let dlq = dead_letter_queue(&sink).await;
    let relay = Relay::start(
        common::relay_config(&format!(
            r#"[[route]]
name = "deep"
from = {{ amqp = "r", queue = "{queue}" }}
to = {{ amqp = "r", exchange = "{x}", routing_key = "{ROUTING_KEY}" }}
dead_letter = {{ amqp = "r", exchange = "{x}", routing_key = "dead" }}"#,
            queue = source.queue,
            x = sink.exchange
        )),
        tracebridge::Instrumentation::global(),
    )
    .await
    .expect("relay starts");
    // lapin's own encoder recurses on its I/O thread as its parser did:
    // the hostile headers are written as bytes.
    let empty = 0u32.to_be_bytes().to_vec();
    let messages = [
        ("good-0", empty.clone()),
        ("tables", raw_amqp::nested_header("x-deep", 1_200, false)),
        ("good-1", raw_amqp::nested_header("x-deep", 10, false)),
        ("arrays", raw_amqp::nested_header("x-deep", 1_500, true)),
        ("good-2", empty),
    ]
    .map(|(key, headers)| RawMessage {
        correlation_id: key.into(),
        headers,
    });
    let url = common::amqp_url();
    let exchange = source.exchange.clone();
    tokio::task::spawn_blocking(move || raw_amqp::publish(&url, &exchange, ROUTING_KEY, &messages))
        .await
        .expect("published");

    let mut seen = Seen::new();
    drain_amqp(
        &sink.channel,
        &sink.queue,
        &mut seen,
        3,
        Until::Arrived,
        WAIT,
    )
    .await;
    let mut dead = HashMap::new();
    let started = Instant::now();
    while dead.len() < 2 && started.elapsed() < WAIT {
        match sink
            .channel
            .basic_get(dlq.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .expect("basic.get")
        {
            Some(m) => {
                let key = String::from_utf8_lossy(&m.delivery.data).into_owned();
                dead.insert(
                    key,
                    m.delivery.properties.headers().clone().unwrap_or_default(),
                );
            }
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    assert!(relay.shutdown().await, "drained");

    let mut keys: Vec<_> = seen.iter().map(|(k, v)| (k.clone(), v.len())).collect();
    keys.sort();
    assert_eq!(
        keys,
        vec![
            ("good-0".into(), 1),
            ("good-1".into(), 1),
            ("good-2".into(), 1)
        ],
        "each neighbour exactly once, no poison in the sink"
    );
    for (key, depth) in [("tables", 1_200), ("arrays", 1_500)] {
        let headers = dead
            .get(key)
            .unwrap_or_else(|| panic!("{key} was not dead-lettered: {:?}", dead.keys()));
        let error = text(headers, "x-tracebridge-error");
        assert!(
            error.contains("\"x-deep\" nests tables or arrays more than 64 levels deep"),
            "{key} ({depth} levels): {error}"
        );
        assert!(headers.inner().get("x-deep").is_none(), "{key}");
        assert!(text(headers, "x-tracebridge-left-out").contains("x-deep"));
    }
    source.delete().await;
    let channel = sink.conn.create_channel().await.expect("channel");
    let _ = channel
        .queue_delete(dlq.as_str().into(), Default::default())
        .await;
    sink.delete().await;
}
