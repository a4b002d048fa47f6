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
//!
//! `TB_BENCH_ONLY=process` instead runs the relay as operators do — the
//! `tracebridge run` binary, a process of its own, window 1024, one route,
//! spans written as OTLP/JSON to /dev/null — against the plain pipelined
//! loop, and samples the relay process's resident memory (VmRSS) every
//! 50 ms: the steady state is the median of the second half of the run.
//! `TB_BENCH_RELAY_BINS=name=path,name=path` compares several builds of
//! the binary in the same rounds (how the allocator was chosen).
//! `TB_BENCH_TO=kafka` makes the process route Kafka → Kafka (against a
//! plain pipelined Kafka → Kafka loop), and `TB_BENCH_PAYLOAD=BYTES` sets
//! the messages' size (100 by default). `TB_BENCH_ROUTES=N` runs N routes
//! in the one relay process, each on its own topic of N / routes messages
//! (what each further route costs in memory).

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

/// The messages' size, `TB_BENCH_PAYLOAD` bytes (100 by default).
fn payload_bytes() -> usize {
    std::env::var("TB_BENCH_PAYLOAD")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100)
}

/// Where the process bench's route writes: RabbitMQ, or Kafka with
/// `TB_BENCH_TO=kafka`.
fn to_kafka() -> bool {
    std::env::var("TB_BENCH_TO").as_deref() == Ok("kafka")
}

async fn fill_topic(topic: &str, n: usize) {
    tracebridge::kafka::create_topic(&config(), topic, 1)
        .await
        .expect("create topic");
    let producer: FutureProducer = config().create().expect("producer");
    let payload = vec![b'x'; payload_bytes()];
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

/// The relay's config for one route per `(topic, out)` pair, each into
/// Kafka topic `out`.
fn relay_toml_to_kafka(pairs: &[(String, String)]) -> String {
    let mut text = format!(
        r#"[relay]
listen = "127.0.0.1:0"
max_in_flight = {WINDOW}
[kafka.k]
bootstrap_servers = "{}"
"#,
        kafka()
    );
    for (i, (topic, out)) in pairs.iter().enumerate() {
        text += &format!(
            r#"[[route]]
name = "bench-{i}"
from = {{ kafka = "k", topic = "{topic}", group = "{topic}-relay" }}
to = {{ kafka = "k", topic = "{out}" }}
"#
        );
    }
    text
}

/// How many records Kafka holds in partition 0 of `topic`.
fn topic_depth(topic: &str) -> usize {
    let consumer: rdkafka::consumer::BaseConsumer = config().create().expect("consumer");
    consumer
        .fetch_watermarks(topic, 0, Duration::from_secs(5))
        .map(|(low, high)| usize::try_from(high - low).unwrap_or(0))
        .unwrap_or(0)
}

/// A plain pipelined Kafka → Kafka loop: up to `window` sends awaiting
/// their delivery reports, offsets committed after them.
async fn plain_kafka_run(topic: &str, out: &str, n: usize, window: usize) -> f64 {
    let started = Instant::now();
    let consumer: StreamConsumer = config()
        .set("group.id", format!("{topic}-plain"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(topic, 0, Offset::Beginning)
        .expect("offset");
    consumer.assign(&list).expect("assign");
    let producer: FutureProducer = config().set("acks", "all").create().expect("producer");
    let mut sends = FuturesUnordered::new();
    let (mut done, mut read) = (0, 0);
    while done < n {
        if read < n && sends.len() < window {
            let message = consumer.recv().await.expect("message");
            let offset = message.offset();
            let payload = message.payload().unwrap_or_default().to_vec();
            let producer = &producer;
            sends.push(async move {
                producer
                    .send(
                        FutureRecord::<(), _>::to(out).payload(&payload),
                        Duration::from_secs(30),
                    )
                    .await
                    .map_err(|(e, _)| e)
                    .expect("delivered");
                offset
            });
            read += 1;
        } else if let Some(offset) = sends.next().await {
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

/// The relay's config for one route per `(topic, queue)` pair, window
/// [`WINDOW`].
fn relay_toml(pairs: &[(String, String)]) -> String {
    let mut text = format!(
        r#"[relay]
listen = "127.0.0.1:0"
max_in_flight = {WINDOW}
[kafka.k]
bootstrap_servers = "{}"
[amqp.r]
url = "{}"
"#,
        kafka(),
        amqp()
    );
    for (i, (topic, queue)) in pairs.iter().enumerate() {
        text += &format!(
            r#"[[route]]
name = "bench-{i}"
from = {{ kafka = "k", topic = "{topic}", group = "{topic}-relay" }}
to = {{ amqp = "r", exchange = "", routing_key = "{queue}" }}
"#
        );
    }
    text
}

/// How many routes the process bench's relay runs, `TB_BENCH_ROUTES` (1
/// by default): each reads its own topic of N / routes messages.
fn routes() -> usize {
    std::env::var("TB_BENCH_ROUTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1)
}

async fn relay_run(
    admin: &lapin::Channel,
    topic: &str,
    queue: &str,
    n: usize,
    instrumentation: &Instrumentation,
) -> f64 {
    let text = relay_toml(&[(topic.to_owned(), queue.to_owned())]);
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

/// What one run of the relay process gave.
#[derive(Clone, Copy, Default)]
struct ProcessRun {
    rate: f64,
    /// Median VmRSS over the second half of the run, MiB.
    steady_rss: f64,
    /// VmHWM at the end, MiB.
    peak_rss: f64,
}

/// A field of /proc/PID/status in MiB (0 when the process is gone).
fn rss_of(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// The relay binary at `binary` as a process: one route per `(topic,
/// out)` pair, timed from spawn until the outputs hold all `n`, its memory
/// sampled.
async fn relay_process_run(
    binary: &str,
    admin: &lapin::Channel,
    pairs: &[(String, String)],
    n: usize,
) -> ProcessRun {
    let dir = std::env::temp_dir().join(format!("tb-relay-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let config = dir.join("relay.toml");
    let text = if to_kafka() {
        relay_toml_to_kafka(pairs)
    } else {
        relay_toml(pairs)
    };
    std::fs::write(&config, text).expect("config");
    let started = Instant::now();
    let mut child = std::process::Command::new(binary)
        .args(["run", "--config"])
        .arg(&config)
        .env("TRACEBRIDGE_SPANS_FILE", "/dev/null")
        .env("RUST_LOG", "warn")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{binary}: {e} (cargo build --release first)"));
    let pid = child.id();
    let mut samples = Vec::new();
    loop {
        let mut arrived = 0;
        for (_, out) in pairs {
            arrived += if to_kafka() {
                topic_depth(out)
            } else {
                queue_depth(admin, out).await as usize
            };
        }
        if arrived >= n {
            break;
        }
        samples.push(rss_of(pid, "VmRSS"));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    let peak_rss = rss_of(pid, "VmHWM");
    let mut steady: Vec<f64> = samples.split_off(samples.len() / 2);
    steady.sort_by(f64::total_cmp);
    let steady_rss = steady.get(steady.len() / 2).copied().unwrap_or(0.0);
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = child.wait();
    ProcessRun {
        rate,
        steady_rss,
        peak_rss,
    }
}

/// `TB_BENCH_ONLY=process`: each build of the relay binary, as a process,
/// against the plain pipelined loop, in the same rounds.
async fn process_main(n: usize, conn: &Connection, admin: &lapin::Channel) {
    let bins: Vec<(String, String)> = std::env::var("TB_BENCH_RELAY_BINS")
        .unwrap_or_else(|_| format!("relay={}", env!("CARGO_BIN_EXE_tracebridge")))
        .split(',')
        .filter_map(|pair| pair.split_once('='))
        .map(|(name, path)| (name.to_owned(), path.to_owned()))
        .collect();
    let run = std::process::id();
    let mut best: Vec<ProcessRun> = vec![ProcessRun::default(); bins.len()];
    let mut best_plain = 0f64;
    for round in 0..3 {
        let mut line = format!("round {round}:");
        for (i, (name, binary)) in bins.iter().enumerate() {
            let mut pairs = Vec::new();
            for route in 0..routes() {
                let topic = format!("tb-relay-process-{name}-{run}-{round}-{route}");
                let out = format!("{topic}-out");
                fill_topic(&topic, n / routes()).await;
                if to_kafka() {
                    tracebridge::kafka::create_topic(&config(), &out, 1)
                        .await
                        .expect("create topic");
                } else {
                    declare_queue(admin, &out).await;
                }
                pairs.push((topic, out));
            }
            let result = tokio::time::timeout(
                Duration::from_secs(180),
                relay_process_run(binary, admin, &pairs, n / routes() * routes()),
            )
            .await
            .unwrap_or_default();
            if !to_kafka() {
                for (_, out) in &pairs {
                    delete_queue(admin, out).await;
                }
            }
            line += &format!(
                " {name} {:.0}/s (RSS steady {:.1} MiB, peak {:.1} MiB);",
                result.rate, result.steady_rss, result.peak_rss
            );
            if result.rate > best[i].rate {
                best[i].rate = result.rate;
            }
            // Memory: the worst round counts.
            best[i].steady_rss = best[i].steady_rss.max(result.steady_rss);
            best[i].peak_rss = best[i].peak_rss.max(result.peak_rss);
        }
        let topic = format!("tb-relay-process-plain-{run}-{round}");
        let out = format!("{topic}-out");
        fill_topic(&topic, n).await;
        let plain = if to_kafka() {
            tracebridge::kafka::create_topic(&config(), &out, 1)
                .await
                .expect("create topic");
            tokio::time::timeout(
                Duration::from_secs(120),
                plain_kafka_run(&topic, &out, n, WINDOW),
            )
            .await
            .unwrap_or(0.0)
        } else {
            declare_queue(admin, &out).await;
            let rate = tokio::time::timeout(
                Duration::from_secs(120),
                plain_run(conn, &topic, &out, n, WINDOW),
            )
            .await
            .unwrap_or(0.0);
            delete_queue(admin, &out).await;
            rate
        };
        best_plain = best_plain.max(plain);
        eprintln!("{line} plain pipelined {plain:.0}/s");
    }
    let to = if to_kafka() { "Kafka" } else { "RabbitMQ" };
    println!(
        "relay process Kafka -> {to}, {n} messages of {} bytes, {} route(s), window {WINDOW}, best of 3 (memory: worst round)",
        payload_bytes(),
        routes()
    );
    for ((name, _), result) in bins.iter().zip(&best) {
        println!(
            "  {name:<12} {:>8.0} msg/s  ratio to plain {:.3}  RSS steady {:.1} MiB, peak {:.1} MiB",
            result.rate,
            result.rate / best_plain,
            result.steady_rss,
            result.peak_rss
        );
    }
    println!("  plain pipelined {best_plain:>8.0} msg/s");
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
    if std::env::var("TB_BENCH_ONLY").as_deref() == Ok("process") {
        process_main(n, &conn, &admin).await;
        let _ = provider.shutdown();
        return;
    }
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
