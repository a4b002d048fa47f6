//! A route holds at most `[relay] max_in_flight_bytes` of messages in
//! flight, whatever its message window, and loses nothing for it, against
//! the real brokers.
//!
//! The sink refuses every publish while a second queue bound to its
//! exchange is full (`x-max-length = 0`, `reject-publish`: RabbitMQ nacks),
//! so every message read stays in flight. With a budget of 50 000 bytes and
//! messages of 10 KB, the route must stop at 5 although its window is
//! 1 024; once the full queue goes, every message arrives.
#![cfg(all(feature = "kafka", feature = "amqp"))]

mod common;

use std::time::{Duration, Instant};

use common::amqp::{ROUTING_KEY, Rabbit};
use common::flow::{Seen, Until, drain_amqp};
use lapin::BasicProperties;
use lapin::options::{BasicPublishOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use rdkafka::producer::FutureRecord;
use tracebridge::relay::{Relay, RouteStats};

const MESSAGES: usize = 40;
const SIZE: usize = 10 * 1024;
const BUDGET: usize = 50_000;
const WAIT: Duration = Duration::from_secs(60);

/// A queue bound to `rabbit`'s exchange under the route's routing key that
/// refuses every message, so RabbitMQ nacks every publish the route makes.
async fn refusing_queue(rabbit: &Rabbit) -> String {
    let full = common::unique("full");
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongLongInt(0));
    args.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    rabbit
        .channel
        .queue_declare(full.as_str().into(), QueueDeclareOptions::default(), args)
        .await
        .expect("declare the full queue");
    rabbit
        .channel
        .queue_bind(
            full.as_str().into(),
            rabbit.exchange.as_str().into(),
            ROUTING_KEY.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind it");
    full
}

/// Starts one route with the message window 1 024 and the byte budget
/// [`BUDGET`].
async fn relay(route: &str) -> Relay {
    let mut config = common::relay_config(route);
    config.max_in_flight = 1024;
    config.max_in_flight_bytes = BUDGET;
    Relay::start(config, tracebridge::Instrumentation::global())
        .await
        .expect("relay starts")
}

/// Waits until the route has read something and nothing more for a while,
/// then checks what it holds: no more than the budget allows.
async fn assert_held_within_budget(stats: &RouteStats) {
    let started = Instant::now();
    while stats.in_flight() == 0 && started.elapsed() < WAIT {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every publish is refused and retried: give the route time to read
    // all it would.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (held, bytes) = (stats.in_flight(), stats.in_flight_bytes());
    assert!(held > 0, "the route read nothing");
    // Reading stops once the budget is reached: 5 messages of 10 KB make
    // 51 200 bytes, the first over 50 000.
    assert!(
        held <= BUDGET.div_ceil(SIZE),
        "{held} messages in flight ({bytes} bytes), more than a budget of {BUDGET} bytes allows"
    );
    assert!(
        bytes < BUDGET + SIZE + 1024,
        "{bytes} bytes in flight against a budget of {BUDGET}"
    );
}

/// Removes the full queue, then reads every message from `rabbit`'s queue.
async fn release_and_drain(rabbit: &Rabbit, full: &str) -> Seen {
    rabbit
        .channel
        .queue_delete(full.into(), Default::default())
        .await
        .expect("delete the full queue");
    let mut seen = Seen::new();
    drain_amqp(
        &rabbit.channel,
        &rabbit.queue,
        &mut seen,
        MESSAGES,
        Until::Arrived,
        WAIT,
    )
    .await;
    seen
}

/// While the sink refuses, the route holds no more than the budget; once
/// it takes them, every message arrives.
async fn hold_then_release(relay: Relay, rabbit: &Rabbit, full: &str) {
    let stats = relay.stats().remove(0).1;
    assert_held_within_budget(&stats).await;
    let seen = release_and_drain(rabbit, full).await;
    for i in 0..MESSAGES {
        assert!(seen.contains_key(&format!("m{i}")), "m{i} never arrived");
    }
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kafka_source_stops_reading_at_its_byte_budget_and_loses_nothing() {
    let topic = common::unique("budget-k");
    common::kafka::create_topic(&topic, 1).await;
    let rabbit = Rabbit::new("budget-k").await;
    let full = refusing_queue(&rabbit).await;
    let producer: rdkafka::producer::FutureProducer =
        common::kafka::config().create().expect("producer");
    let payload = vec![b'p'; SIZE];
    for i in 0..MESSAGES {
        let key = format!("m{i}");
        producer
            .send(
                FutureRecord::to(&topic).key(&key).payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("delivered");
    }
    let relay = relay(&format!(
        r#"[[route]]
name = "budget"
from = {{ kafka = "k", topic = "{topic}", group = "{topic}-relay" }}
to = {{ amqp = "r", exchange = "{}", routing_key = "{ROUTING_KEY}" }}
key_mapping = "correlation_id"
retry = {{ attempts = 1 }}"#,
        rabbit.exchange
    ))
    .await;
    hold_then_release(relay, &rabbit, &full).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_amqp_source_stops_reading_at_its_byte_budget_and_loses_nothing() {
    let source = Rabbit::new("budget-a-src").await;
    let rabbit = Rabbit::new("budget-a").await;
    let full = refusing_queue(&rabbit).await;
    let payload = vec![b'p'; SIZE];
    for i in 0..MESSAGES {
        source
            .channel
            .basic_publish(
                "".into(),
                source.queue.as_str().into(),
                BasicPublishOptions::default(),
                &payload,
                BasicProperties::default().with_correlation_id(format!("m{i}").into()),
            )
            .await
            .expect("publish");
    }
    let relay = relay(&format!(
        r#"[[route]]
name = "budget"
from = {{ amqp = "r", queue = "{}" }}
to = {{ amqp = "r", exchange = "{}", routing_key = "{ROUTING_KEY}" }}
retry = {{ attempts = 1 }}"#,
        source.queue, rabbit.exchange
    ))
    .await;
    hold_then_release(relay, &rabbit, &full).await;
}

/// Messages of 900 KB (under the Kafka producer's own 1 000 000-byte
/// limit) with the sink down.
const LARGE: usize = 900 * 1024;
/// How many of them wait.
const WAITING: usize = 200;

/// Runs the relay process at its defaults (1 024 messages, 16 MiB) reading
/// `from` into a Kafka sink nobody answers for 20 s; its worst resident
/// memory (MiB) and the most bytes it held in flight.
async fn held_with_the_sink_down(from: &str) -> (f64, f64) {
    let nobody = common::flow::free_port();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let port = common::flow::free_port();
    let config = common::flow::relay_file(
        dir.path(),
        port,
        1024,
        &common::kafka_bootstrap(),
        &format!(
            r#"name = "mb"
from = {from}
to = {{ kafka = "nobody", topic = "anywhere" }}

[kafka.nobody]
bootstrap_servers = "127.0.0.1:{nobody}""#
        ),
        common::flow::RECORD_ALL,
    );
    let relay = common::flow::RelayProcess::start(&config, port, &dir.path().join("spans.jsonl"));
    let started = Instant::now();
    let mut worst: f64 = 0.0;
    let mut held_bytes: f64 = 0.0;
    while started.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        worst = worst.max(relay.rss_mib());
        held_bytes = held_bytes.max(
            relay
                .metric("tracebridge_relay_in_flight_bytes{route=\"mb\"}")
                .await,
        );
    }
    // Nothing can drain with the sink down: the messages stay in the source.
    relay.signal("-KILL");
    relay.wait(Duration::from_secs(10));
    eprintln!(
        "{from}: 900 KB messages, sink down: worst RSS {worst:.1} MiB, in flight {held_bytes} bytes"
    );
    assert!(
        held_bytes >= LARGE as f64,
        "the route read messages: {held_bytes}"
    );
    assert!(
        held_bytes <= (16 * 1024 * 1024 + LARGE) as f64,
        "in flight within the budget: {held_bytes}"
    );
    (worst, held_bytes)
}

/// Issue 24: 1 MB messages on an AMQP source whose sink is down held a
/// gigabyte, because RabbitMQ pushes as many deliveries as the prefetch
/// allows (the window, 1 024) and they wait in lapin. The prefetch now
/// follows the messages' sizes within the byte budget: 62 MiB where it was
/// 228 with 200 such messages waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_amqp_messages_with_the_sink_down_stay_within_the_budget() {
    let source = Rabbit::new("budget-mb").await;
    let payload = vec![b'm'; LARGE];
    for i in 0..WAITING {
        source
            .channel
            .basic_publish(
                "".into(),
                source.queue.as_str().into(),
                BasicPublishOptions::default(),
                &payload,
                BasicProperties::default().with_correlation_id(format!("m{i}").into()),
            )
            .await
            .expect("publish")
            .await
            .expect("routed");
    }
    let (worst, _) =
        held_with_the_sink_down(&format!(r#"{{ amqp = "r", queue = "{}" }}"#, source.queue)).await;
    assert!(worst < 128.0, "worst RSS {worst:.1} MiB");
    source.delete().await;
}

/// The same from Kafka: the byte budget, and librdkafka's prefetch capped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_kafka_messages_with_the_sink_down_stay_within_the_budget() {
    let topic = common::unique("budget-mb");
    common::kafka::create_topic(&topic, 1).await;
    let producer = common::kafka::producer();
    let payload = vec![b'm'; LARGE];
    for i in 0..WAITING {
        producer
            .send(
                FutureRecord::<str, [u8]>::to(&topic)
                    .key(&format!("m{i}"))
                    .payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("delivered");
    }
    let (worst, _) = held_with_the_sink_down(&format!(
        r#"{{ kafka = "k", topic = "{topic}", group = "{topic}-relay" }}"#
    ))
    .await;
    assert!(worst < 128.0, "worst RSS {worst:.1} MiB");
}
