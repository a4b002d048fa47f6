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

/// Reads `want` dead letters from `dlq` on `rabbit`'s channel (within
/// [`WAIT`]): body → header table.
async fn dead_letters(rabbit: &Rabbit, dlq: &str, want: usize) -> HashMap<String, FieldTable> {
    let mut dead = HashMap::new();
    let started = Instant::now();
    while dead.len() < want && started.elapsed() < WAIT {
        match rabbit
            .channel
            .basic_get(dlq.into(), BasicGetOptions { no_ack: true })
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
    dead
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
    let dead = dead_letters(&rabbit, &dlq, 2).await;
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
    let dead = dead_letters(&sink, &dlq, 2).await;
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

/// Creates `topic` (one partition) whose broker refuses records over
/// `max_bytes`.
async fn create_small_topic(topic: &str, max_bytes: usize) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<_> = common::kafka::config().create().expect("admin");
    let max = max_bytes.to_string();
    let results = admin
        .create_topics(
            &[NewTopic::new(topic, 1, TopicReplication::Fixed(1)).set("max.message.bytes", &max)],
            &AdminOptions::new(),
        )
        .await
        .expect("create topics");
    for result in results {
        result.expect("topic created");
    }
}

/// The dead-letter loop of issue 24: AMQP → Kafka with a Kafka dead letter,
/// a 2 MB body and a timestamp two hours ahead. Kafka refuses both (the
/// producer's 1 MB limit, the broker's `message.timestamp.after.max.ms`),
/// and so did the dead letter that kept them: each message was requeued
/// every second for ever with `/readyz` 200. Now the minimal dead letter
/// cuts the payload and takes the current time, naming both; and a route
/// whose dead letter refuses even that stops at the message, saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_drops_what_its_destination_refused_or_the_route_stops_there() {
    use lapin::options::BasicPublishOptions;
    use rdkafka::Message;
    use rdkafka::message::Headers;
    let source = Rabbit::new("refused").await;
    let stuck = Rabbit::new("refused-stuck").await;
    let [topic, dead, tiny] = ["refused-out", "refused-dead", "refused-tiny"].map(common::unique);
    common::kafka::create_topic(&topic, 1).await;
    common::kafka::create_topic(&dead, 1).await;
    create_small_topic(&tiny, 1_000).await;
    let relay = Relay::start(
        common::relay_config(&format!(
            r#"[[route]]
name = "refused"
from = {{ amqp = "r", queue = "{queue}" }}
to = {{ kafka = "k", topic = "{topic}" }}
dead_letter = {{ kafka = "k", topic = "{dead}" }}

[[route]]
name = "stuck"
from = {{ amqp = "r", queue = "{stuck_queue}" }}
to = {{ kafka = "k", topic = "{topic}" }}
dead_letter = {{ kafka = "k", topic = "{tiny}" }}"#,
            queue = source.queue,
            stuck_queue = stuck.queue,
        )),
        tracebridge::Instrumentation::global(),
    )
    .await
    .expect("relay starts");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let big = vec![b'b'; 2 * 1024 * 1024];
    let publish = |rabbit: &Rabbit, key: &'static str, body: Vec<u8>, timestamp: u64| {
        let channel = rabbit.channel.clone();
        let exchange = rabbit.exchange.clone();
        async move {
            channel
                .basic_publish(
                    exchange.as_str().into(),
                    ROUTING_KEY.into(),
                    BasicPublishOptions::default(),
                    &body,
                    lapin::BasicProperties::default()
                        .with_correlation_id(key.into())
                        .with_timestamp(timestamp),
                )
                .await
                .expect("published")
                .await
                .expect("routed");
        }
    };
    publish(&source, "good-0", b"g".to_vec(), now).await;
    publish(&source, "big", big.clone(), now).await;
    publish(&source, "good-1", b"g".to_vec(), now).await;
    publish(&source, "future", b"f".to_vec(), now + 2 * 3600).await;
    publish(&source, "good-2", b"g".to_vec(), now).await;
    publish(&stuck, "stuck", big, now).await;

    let mut seen = Seen::new();
    let reader = common::flow::kafka_reader(&common::kafka_bootstrap(), &topic);
    common::flow::drain_kafka(&reader, &mut seen, 3, Until::Arrived, WAIT).await;
    let dead_reader = common::flow::kafka_reader(&common::kafka_bootstrap(), &dead);
    let mut letters = HashMap::new();
    let started = Instant::now();
    while letters.len() < 2 && started.elapsed() < WAIT {
        if let Ok(Ok(record)) =
            tokio::time::timeout(Duration::from_secs(1), dead_reader.recv()).await
        {
            let header = |name: &str| {
                record.headers().and_then(|h| {
                    h.iter()
                        .find(|h| h.key == name)
                        .and_then(|h| h.value)
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                })
            };
            let key = String::from_utf8_lossy(record.key().unwrap_or_default()).into_owned();
            letters.insert(
                key,
                (
                    record.payload().map_or(0, <[u8]>::len),
                    record.timestamp().to_millis(),
                    header("x-tracebridge-error").unwrap_or_default(),
                    header("x-tracebridge-left-out").unwrap_or_default(),
                ),
            );
        }
    }
    let ready = loop {
        let (status, body) = common::http_get(relay.listen_addr(), "/readyz").await;
        if status == 503 || started.elapsed() > WAIT {
            break (status, body);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(relay.shutdown().await, "drained");
    common::flow::drain_kafka(&reader, &mut seen, usize::MAX, Until::Empty, WAIT).await;

    let mut keys: Vec<_> = seen.iter().map(|(k, v)| (k.clone(), v.len())).collect();
    keys.sort();
    assert_eq!(
        keys,
        vec![
            ("good-0".into(), 1),
            ("good-1".into(), 1),
            ("good-2".into(), 1)
        ],
        "each neighbour exactly once, neither refused message in the sink"
    );
    let (size, _, error, left_out) = letters
        .get("big")
        .unwrap_or_else(|| panic!("big was not dead-lettered: {letters:?}"));
    assert_eq!(*size, 64 * 1024, "the payload cut");
    assert!(error.contains("too large"), "{error}");
    assert!(
        left_out.contains("the payload past its first 65536 bytes (it had 2097152)"),
        "{left_out}"
    );
    let (_, timestamp, error, left_out) = letters
        .get("future")
        .unwrap_or_else(|| panic!("future was not dead-lettered: {letters:?}"));
    assert!(
        error.contains("s ahead of this clock; Kafka refuses records more than 3600 s ahead"),
        "{error}"
    );
    let skew = timestamp.expect("a timestamp") - i64::try_from(now * 1000).expect("ms");
    assert!(
        (-60_000..60_000).contains(&skew),
        "the dead letter carries the time it was sent, not the refused one: {skew} ms off"
    );
    assert!(left_out.contains("the original timestamp"), "{left_out}");
    assert_eq!(ready.0, 503, "{}", ready.1);
    assert!(
        ready
            .1
            .contains("stuck (stopped at a message it can never send or dead-letter")
            && ready
                .1
                .contains(&format!("amqp queue {} delivery 1", stuck.queue))
            && ready.1.contains("dead-lettering failed too"),
        "names the route, the message and both refusals: {}",
        ready.1
    );
    assert!(
        !ready.1.contains("refused ("),
        "the other route is ready: {}",
        ready.1
    );
    // Held, not lost: the broker still has it.
    let held = stuck
        .channel
        .basic_get(
            stuck.queue.as_str().into(),
            BasicGetOptions { no_ack: true },
        )
        .await
        .expect("basic.get");
    assert!(held.is_some(), "the stuck message is still in its queue");
    source.delete().await;
    stuck.delete().await;
}
