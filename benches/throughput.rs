//! Throughput through a real broker, traced vs plain client in the same run.
//!
//! ```sh
//! scripts/brokers.sh up
//! cargo bench --bench throughput   # TB_BENCH_MESSAGES=20000, TB_BENCH_ONLY=kafka|amqp
//! TB_BENCH_SAMPLING=0.1 cargo bench --bench throughput   # parentbased_traceidratio 0.1
//! ```
//!
//! Each round: plain rdkafka and tracebridge's `FutureProducer` each send N messages
//! (100-byte payload, 1000 sends in flight) to a fresh topic; then a plain
//! `StreamConsumer` read the traced topic, plainly and through `kafka::process` (timed
//! from `assign` to the Nth message, so fetching from the broker counts), in
//! alternating order. The best of three rounds is reported, with the ratio
//! traced / plain (1.0 = no cost). Spans go to a real SDK provider with a
//! batch processor whose exporter discards.

mod support;

use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use lapin::BasicProperties;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use tracebridge::Instrumentation;
use tracebridge::kafka::ConsumerTracing;
use tracebridge::kafka::producer::FutureProducer as TracedProducer;

const IN_FLIGHT: usize = 1000;
const ROUNDS: usize = 3;

#[derive(Clone, Copy, Default)]
struct Rates {
    produce: f64,
    consume: f64,
}

fn config() -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set(
        "bootstrap.servers",
        std::env::var("KAFKA_BOOTSTRAP_SERVERS").unwrap_or_else(|_| "127.0.0.1:9092".into()),
    );
    config
}

fn consumer_config(group: &str) -> ClientConfig {
    let mut c = config();
    c.set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false");
    c
}

async fn new_topic(name: &str) {
    tracebridge::kafka::create_topic(&config(), name, 1)
        .await
        .expect("create topic");
}

/// Sends `n` records with up to `IN_FLIGHT` awaiting delivery; msg/s.
async fn produce<F, Fut>(n: usize, send: F) -> f64
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let started = Instant::now();
    let mut in_flight = FuturesUnordered::new();
    for i in 0..n {
        in_flight.push(send(i));
        if in_flight.len() >= IN_FLIGHT {
            in_flight.next().await;
        }
    }
    while in_flight.next().await.is_some() {}
    n as f64 / started.elapsed().as_secs_f64()
}

async fn plain_produce(topic: &str, n: usize, payload: &[u8]) -> f64 {
    let producer: FutureProducer = config().create().expect("producer");
    produce(n, |i| {
        let producer = &producer;
        async move {
            let key = i.to_string();
            producer
                .send(
                    FutureRecord::to(topic).key(&key).payload(payload),
                    Duration::from_secs(30),
                )
                .await
                .map_err(|(e, _)| e)
                .expect("delivered");
        }
    })
    .await
}

async fn traced_produce(
    topic: &str,
    n: usize,
    payload: &[u8],
    instrumentation: &Instrumentation,
) -> f64 {
    let producer: TracedProducer = config().create().expect("producer");
    let producer = producer.with_instrumentation(instrumentation.clone());
    produce(n, |i| {
        let producer = &producer;
        async move {
            let key = i.to_string();
            producer
                .send(
                    FutureRecord::to(topic).key(&key).payload(payload),
                    Duration::from_secs(30),
                )
                .await
                .map_err(|(e, _)| e)
                .expect("delivered");
        }
    })
    .await
}

async fn plain_consume(topic: &str, n: usize, group: &str) -> f64 {
    let consumer: StreamConsumer = consumer_config(group).create().expect("consumer");
    let started = Instant::now();
    consumer.assign(&from_start(topic)).expect("assign");
    for _ in 0..n {
        let message = consumer.recv().await.expect("message");
        std::hint::black_box(&message);
    }
    n as f64 / started.elapsed().as_secs_f64()
}

async fn traced_consume(
    topic: &str,
    n: usize,
    group: &str,
    instrumentation: &Instrumentation,
) -> f64 {
    let consumer: StreamConsumer = consumer_config(group).create().expect("consumer");
    let tracing = ConsumerTracing::default().with_instrumentation(instrumentation.clone());
    let started = Instant::now();
    consumer.assign(&from_start(topic)).expect("assign");
    for _ in 0..n {
        let message = consumer.recv().await.expect("message");
        tracing
            .process(&consumer, &message, async {
                std::hint::black_box(&message);
            })
            .await;
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// Partition 0 from its first offset: consumption timed from here includes
/// fetching from the broker (no group join, no prefetch head start).
fn from_start(topic: &str) -> TopicPartitionList {
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(topic, 0, Offset::Beginning)
        .expect("partition offset");
    list
}

fn best(rounds: &[Rates]) -> Rates {
    Rates {
        produce: rounds.iter().map(|r| r.produce).fold(0.0, f64::max),
        consume: rounds.iter().map(|r| r.consume).fold(0.0, f64::max),
    }
}

// ---- AMQP (RabbitMQ, publisher confirms) ----

fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

async fn amqp_queue(conn: &lapin::Connection, name: &str) -> lapin::Channel {
    let channel = conn.create_channel().await.expect("channel");
    channel
        .queue_declare(
            name.into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("declare");
    channel
}

/// Publishes `n` messages with confirms, all awaited together; msg/s.
async fn amqp_plain_publish(
    conn: &lapin::Connection,
    queue: &str,
    n: usize,
    payload: &[u8],
) -> f64 {
    let channel = amqp_queue(conn, queue).await;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    let started = Instant::now();
    let mut confirms = Vec::with_capacity(n);
    for _ in 0..n {
        confirms.push(
            channel
                .basic_publish(
                    "".into(),
                    queue.into(),
                    BasicPublishOptions::default(),
                    payload,
                    BasicProperties::default(),
                )
                .await
                .expect("publish"),
        );
    }
    for confirm in futures::future::join_all(confirms).await {
        confirm.expect("confirmed");
    }
    n as f64 / started.elapsed().as_secs_f64()
}

async fn amqp_traced_publish(
    conn: &lapin::Connection,
    queue: &str,
    n: usize,
    payload: &[u8],
    instrumentation: &Instrumentation,
) -> f64 {
    let channel = amqp_queue(conn, queue).await;
    let publisher = tracebridge::amqp::Channel::from(channel)
        .with_server(&amqp_url())
        .with_instrumentation(instrumentation.clone());
    publisher
        .confirm_select(Default::default())
        .await
        .expect("confirms");
    let started = Instant::now();
    let mut confirms = Vec::with_capacity(n);
    for _ in 0..n {
        confirms.push(
            publisher
                .basic_publish(
                    "".into(),
                    queue.into(),
                    BasicPublishOptions::default(),
                    payload,
                    BasicProperties::default(),
                )
                .await
                .expect("publish"),
        );
    }
    for confirm in futures::future::join_all(confirms).await {
        assert!(confirm.expect("confirmed").is_ack());
    }
    n as f64 / started.elapsed().as_secs_f64()
}

async fn amqp_consumer(conn: &lapin::Connection, queue: &str) -> lapin::Consumer {
    let channel = conn.create_channel().await.expect("channel");
    channel
        .basic_qos(1000, BasicQosOptions::default())
        .await
        .expect("qos");
    channel
        .basic_consume(
            queue.into(),
            "bench".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume")
}

/// Consumes and acks `n` messages; msg/s.
async fn amqp_plain_consume(conn: &lapin::Connection, queue: &str, n: usize) -> f64 {
    let mut consumer = amqp_consumer(conn, queue).await;
    let started = Instant::now();
    for _ in 0..n {
        let delivery = consumer.next().await.expect("open").expect("delivery");
        delivery.ack(BasicAckOptions::default()).await.expect("ack");
    }
    n as f64 / started.elapsed().as_secs_f64()
}

async fn amqp_traced_consume(
    conn: &lapin::Connection,
    queue: &str,
    n: usize,
    instrumentation: &Instrumentation,
) -> f64 {
    let channel = tracebridge::amqp::Channel::from(conn.create_channel().await.expect("channel"))
        .with_server(&amqp_url())
        .with_instrumentation(instrumentation.clone());
    channel
        .basic_qos(1000, BasicQosOptions::default())
        .await
        .expect("qos");
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "bench".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let started = Instant::now();
    for _ in 0..n {
        let delivery = consumer.next().await.expect("open").expect("delivery");
        delivery
            .in_span(async {
                std::hint::black_box(delivery.data.len());
            })
            .await;
        delivery.ack(BasicAckOptions::default()).await.expect("ack");
    }
    n as f64 / started.elapsed().as_secs_f64()
}

async fn amqp_bench(n: usize, payload: &[u8], instrumentation: &Instrumentation) {
    let conn = lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default())
        .await
        .expect("RabbitMQ (scripts/brokers.sh up)");
    let run = std::process::id();
    let (mut plain, mut traced) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let plain_queue = format!("tb-bench-plain-{run}-{round}");
        let traced_queue = format!("tb-bench-traced-{run}-{round}");
        let plain_publish = amqp_plain_publish(&conn, &plain_queue, n, payload).await;
        let traced_publish =
            amqp_traced_publish(&conn, &traced_queue, n, payload, instrumentation).await;
        let plain_consume = amqp_plain_consume(&conn, &plain_queue, n).await;
        let traced_consume = amqp_traced_consume(&conn, &traced_queue, n, instrumentation).await;
        for queue in [&plain_queue, &traced_queue] {
            let channel = conn.create_channel().await.expect("channel");
            let _ = channel
                .queue_delete(queue.as_str().into(), Default::default())
                .await;
        }
        eprintln!(
            "amqp round {round}: plain publish {plain_publish:.0}/s consume {plain_consume:.0}/s | traced publish {traced_publish:.0}/s consume {traced_consume:.0}/s"
        );
        plain.push(Rates {
            produce: plain_publish,
            consume: plain_consume,
        });
        traced.push(Rates {
            produce: traced_publish,
            consume: traced_consume,
        });
    }
    let (p, t) = (best(&plain), best(&traced));
    println!("amqp throughput, {n} messages with confirms and acks, best of {ROUNDS} rounds");
    println!(
        "  publish: plain {:>9.0} msg/s  traced {:>9.0} msg/s  ratio {:.3}",
        p.produce,
        t.produce,
        t.produce / p.produce
    );
    println!(
        "  consume: plain {:>9.0} msg/s  traced {:>9.0} msg/s  ratio {:.3}",
        p.consume,
        t.consume,
        t.consume / p.consume
    );
}

#[tokio::main]
async fn main() {
    // TB_BENCH_ONLY=kafka|amqp runs one broker's part.
    let only = std::env::var("TB_BENCH_ONLY").unwrap_or_default();
    let n: usize = std::env::var("TB_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let payload = vec![b'x'; 100];
    // TB_BENCH_SAMPLING=0.1: the seeds' advised head sampling (parent-based
    // ratio): 90 % of the traced producer's messages unsampled, and their
    // consumers following that decision.
    let provider = match std::env::var("TB_BENCH_SAMPLING").as_deref() {
        Ok("0.1") => {
            println!("sampling: parentbased_traceidratio 0.1");
            support::ratio_provider()
        }
        Ok(other) if other != "1" => panic!("TB_BENCH_SAMPLING: 1 or 0.1, not {other:?}"),
        _ => {
            println!("sampling: always on");
            support::provider()
        }
    };
    let instrumentation = Instrumentation::from_sdk(&provider, None);
    if only != "amqp" {
        kafka_bench(n, &payload, &instrumentation).await;
    }
    if only != "kafka" {
        amqp_bench(n, &payload, &instrumentation).await;
    }
    let _ = provider.shutdown();
}

async fn kafka_bench(n: usize, payload: &[u8], instrumentation: &Instrumentation) {
    let run = std::process::id();
    let (mut plain, mut traced) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        // Producers: each to its own fresh topic.
        let plain_topic = format!("tb-bench-plain-{run}-{round}");
        new_topic(&plain_topic).await;
        let plain_produce = plain_produce(&plain_topic, n, payload).await;
        let topic = format!("tb-bench-traced-{run}-{round}");
        new_topic(&topic).await;
        let traced_produce = traced_produce(&topic, n, payload, instrumentation).await;
        // Consumers: both read the traced topic (what a traced consumer
        // really sees), in alternating order, each in its own group.
        let (plain_consume, traced_consume) = if round % 2 == 0 {
            let p = plain_consume(&topic, n, &format!("{topic}-plain")).await;
            (
                p,
                traced_consume(&topic, n, &format!("{topic}-traced"), instrumentation).await,
            )
        } else {
            let t = traced_consume(&topic, n, &format!("{topic}-traced"), instrumentation).await;
            (plain_consume(&topic, n, &format!("{topic}-plain")).await, t)
        };
        // The same plain consumer on the plain topic: does a topic written
        // by the traced producer fetch slower? (tansu served it 60× slower.)
        let plain_topic_consume =
            crate::plain_consume(&plain_topic, n, &format!("{plain_topic}-plain")).await;
        plain.push(Rates {
            produce: plain_produce,
            consume: plain_consume,
        });
        traced.push(Rates {
            produce: traced_produce,
            consume: traced_consume,
        });
        eprintln!(
            "round {round}: plain produce {plain_produce:.0}/s consume {plain_consume:.0}/s | traced produce {traced_produce:.0}/s consume {traced_consume:.0}/s | plain consumer on the plain topic {plain_topic_consume:.0}/s"
        );
    }
    let (p, t) = (best(&plain), best(&traced));
    println!("kafka throughput, {n} messages, best of {ROUNDS} rounds");
    println!(
        "  produce: plain {:>9.0} msg/s  traced {:>9.0} msg/s  ratio {:.3}",
        p.produce,
        t.produce,
        t.produce / p.produce
    );
    println!(
        "  consume: plain {:>9.0} msg/s  traced {:>9.0} msg/s  ratio {:.3}",
        p.consume,
        t.consume,
        t.consume / p.consume
    );
}
