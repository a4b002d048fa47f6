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
