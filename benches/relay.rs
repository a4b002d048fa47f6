//! Relay throughput, Kafka → RabbitMQ, against plain loops in the same run.
//!
//! ```sh
//! scripts/brokers.sh up
//! cargo bench --bench relay        # TB_BENCH_MESSAGES=20000 by default
//! ```
//!
//! Each contender moves the same N messages (100-byte payload, written by a
//! plain producer to its own one-partition topic) into its own RabbitMQ
//! queue and is timed until the broker has confirmed the last one:
//!
//! * `relay`: tracebridge's relay (library entry point), window 1024, spans
//!   to a real SDK provider whose batch exporter discards;
//! * `plain pipelined`: rdkafka + lapin, no tracing, up to 1024 publishes
//!   awaiting confirms, offsets committed after confirms — the fair baseline;
//! * `plain one-by-one`: the same loop awaiting each confirm before the next
//!   publish — what a naive bridge does.
//!
//! Peak RSS is the whole benchmark process's (an upper bound for the relay).

mod support;

use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tracebridge::Instrumentation;
use tracebridge::relay::{Relay, RelayConfig};

const WINDOW: usize = 1024;

fn kafka() -> String {
    std::env::var("KAFKA_BOOTSTRAP_SERVERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

fn amqp() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

fn config() -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", kafka());
    c
}

async fn fill_topic(topic: &str, n: usize) {
    tracebridge::kafka::create_topic(&config(), topic, 1)
        .await
        .expect("create topic");
    let producer: FutureProducer = config().create().expect("producer");
    let payload = [b'x'; 100];
    let mut pending = FuturesUnordered::new();
    for i in 0..n {
        let producer = &producer;
        let payload = &payload;
        pending.push(async move {
            let key = i.to_string();
            producer
                .send(
                    FutureRecord::to(topic).key(&key).payload(&payload[..]),
                    Duration::from_secs(30),
                )
                .await
                .map_err(|(e, _)| e)
                .expect("delivered");
        });
        if pending.len() >= 1000 {
            pending.next().await;
        }
    }
    while pending.next().await.is_some() {}
}

// One admin channel for declaring, counting and deleting: opening a
// channel per poll (every few ms) made lapin's channel creation hang after
// some thousands of open/close cycles on one connection, stalling the run.
async fn declare_queue(channel: &lapin::Channel, queue: &str) {
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("declare");
}

async fn delete_queue(channel: &lapin::Channel, queue: &str) {
    let _ = channel.queue_delete(queue.into(), Default::default()).await;
}

async fn queue_depth(channel: &lapin::Channel, queue: &str) -> u32 {
    let q = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("passive declare");
    q.message_count()
}

async fn relay_run(
    admin: &lapin::Channel,
    topic: &str,
    queue: &str,
    n: usize,
    instrumentation: &Instrumentation,
) -> f64 {
    let text = format!(
        r#"[relay]
listen = "127.0.0.1:0"
max_in_flight = {WINDOW}
[kafka.k]
bootstrap_servers = "{}"
[amqp.r]
url = "{}"
[[route]]
name = "bench"
from = {{ kafka = "k", topic = "{topic}", group = "{topic}-relay" }}
to = {{ amqp = "r", exchange = "", routing_key = "{queue}" }}
"#,
        kafka(),
        amqp()
    );
    let config = RelayConfig::parse(&text, "bench", |_| None).expect("config");
    let started = Instant::now();
    let relay = Relay::start(config, instrumentation.clone())
        .await
        .expect("relay");
    while (queue_depth(admin, queue).await as usize) < n {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    relay.shutdown().await;
    rate
}

async fn plain_run(conn: &Connection, topic: &str, queue: &str, n: usize, window: usize) -> f64 {
    let started = Instant::now();
    let consumer: StreamConsumer = config()
        .set("group.id", format!("{topic}-plain-{window}"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(topic, 0, Offset::Beginning)
        .expect("offset");
    consumer.assign(&list).expect("assign");
    let channel = conn.create_channel().await.expect("channel");
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    let mut confirms = FuturesUnordered::new();
    let mut done = 0;
    let mut read = 0;
    while done < n {
        if read < n && confirms.len() < window {
            let message = consumer.recv().await.expect("message");
            let offset = message.offset();
            let payload = message.payload().unwrap_or_default().to_vec();
            let channel = &channel;
            // Publish and confirm both run concurrently with further reads,
            // as the relay's hops do.
            confirms.push(async move {
                let confirm = channel
                    .basic_publish(
                        "".into(),
                        queue.into(),
                        BasicPublishOptions::default(),
                        &payload,
                        BasicProperties::default(),
                    )
                    .await
                    .expect("publish");
                (confirm.await.expect("confirm"), offset)
            });
            read += 1;
        } else if let Some((_, offset)) = confirms.next().await {
            done += 1;
            let mut commit = TopicPartitionList::new();
            commit
                .add_partition_offset(topic, 0, Offset::Offset(offset + 1))
                .expect("offset");
            let _ = consumer.commit(&commit, CommitMode::Async);
        }
    }
    n as f64 / started.elapsed().as_secs_f64()
}

fn peak_rss_mib() -> f64 {
    support::proc_status_kib("VmHWM") as f64 / 1024.0
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("TB_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let provider = support::provider();
    let instrumentation = Instrumentation::from_sdk(&provider, None);
    let conn = Connection::connect(&amqp(), ConnectionProperties::default())
        .await
        .expect("RabbitMQ (scripts/brokers.sh up)");
    let admin = conn.create_channel().await.expect("admin channel");
    let run = std::process::id();
    let mut best = [0f64; 3];
    for round in 0..3 {
        let mut rates = [0f64; 3];
        for (i, name) in ["relay", "pipelined", "one-by-one"].iter().enumerate() {
            let topic = format!("tb-relay-bench-{name}-{run}-{round}");
            let queue = topic.clone();
            let count = if i == 2 { n / 10 } else { n };
            fill_topic(&topic, count).await;
            declare_queue(&admin, &queue).await;
            let contender = async {
                match i {
                    0 => relay_run(&admin, &topic, &queue, count, &instrumentation).await,
                    1 => plain_run(&conn, &topic, &queue, count, WINDOW).await,
                    _ => plain_run(&conn, &topic, &queue, count, 1).await,
                }
            };
            // lapin occasionally never resolves a publisher confirm under
            // this load (seen in the plain loops, which have no confirm
            // timeout): such a run is reported and counts as 0.
            rates[i] = match tokio::time::timeout(Duration::from_secs(120), contender).await {
                Ok(rate) => rate,
                Err(_) => {
                    eprintln!(
                        "round {round}: {name} did not finish within 120 s (a lost confirm); not counted"
                    );
                    0.0
                }
            };
            delete_queue(&admin, &queue).await;
            best[i] = best[i].max(rates[i]);
        }
        eprintln!(
            "round {round}: relay {:.0}/s, plain pipelined {:.0}/s, plain one-by-one {:.0}/s",
            rates[0], rates[1], rates[2]
        );
    }
    println!(
        "relay Kafka -> RabbitMQ, {n} messages (one-by-one: {}), best of 3",
        n / 10
    );
    println!("  relay (traced):        {:>8.0} msg/s", best[0]);
    println!(
        "  plain, pipelined:      {:>8.0} msg/s   ratio relay/plain {:.3}",
        best[1],
        best[0] / best[1]
    );
    println!(
        "  plain, one confirm at a time: {:>8.0} msg/s   relay is {:.1}x faster",
        best[2],
        best[0] / best[2]
    );
    println!("  peak RSS of this process: {:.1} MiB", peak_rss_mib());
    let _ = provider.shutdown();
}
