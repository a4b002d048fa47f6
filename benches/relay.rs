//! Relay throughput against plain loops in the same run: in-process
//! Kafka → RabbitMQ by default, the relay binary in any direction with
//! `TB_BENCH_ONLY=process`.
//!
//! ```sh
//! scripts/brokers.sh up
//! cargo bench --bench relay        # TB_BENCH_MESSAGES=20000 by default
//! ```
//!
//! Each contender moves the same N messages (100-byte payload, written by a
//! plain producer to its own one-partition topic) into its own RabbitMQ
//! queue and is timed from its first message out until the broker has
//! confirmed the last one (steady state: start-up and group joins are not
//! counted):
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
//! `tracebridge run` binary, a process of its own, window 1024, one route —
//! against a plain pipelined loop (the same window, the same message
//! properties: a `traceparent` header, persistent on RabbitMQ), in 3
//! interleaved rounds, printing min/median/max of the rates and of each
//! round's ratio, and samples the relay process's resident memory (VmRSS)
//! every 50 ms: the steady state is the median of the second half of the
//! run. Its settings:
//!
//! * `TB_BENCH_FROM=amqp` reads a RabbitMQ queue (default: a Kafka topic),
//!   `TB_BENCH_TO=kafka` writes a Kafka topic (default: a RabbitMQ queue);
//! * `TB_BENCH_PAYLOAD=BYTES` sets the messages' size (100 by default);
//! * `TB_BENCH_SAMPLE=0.1` samples `parentbased_traceidratio` at that ratio
//!   and exports OTLP/HTTP to a local sink that accepts everything
//!   (default: every span, written as OTLP/JSON to /dev/null);
//! * `TB_BENCH_RELAY_BINS=name=path,name=path` compares several builds of
//!   the binary in the same rounds (how the allocator was chosen);
//! * `TB_BENCH_ROUTES=N` runs N routes in the one relay process, each on
//!   its own source of N / routes messages (what each further route costs
//!   in memory).

mod support;

use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Header, Message, OwnedHeaders};
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
/// A process route's end: a Kafka topic or a RabbitMQ queue.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Broker {
    Kafka,
    Amqp,
}

impl Broker {
    fn name(self) -> &'static str {
        match self {
            Broker::Kafka => "Kafka",
            Broker::Amqp => "RabbitMQ",
        }
    }
}

/// Where process routes read: `TB_BENCH_FROM=amqp` for a RabbitMQ queue,
/// else a Kafka topic.
fn from_broker() -> Broker {
    match std::env::var("TB_BENCH_FROM").as_deref() {
        Ok("amqp") => Broker::Amqp,
        _ => Broker::Kafka,
    }
}

/// Where process routes write: `TB_BENCH_TO=kafka` for a Kafka topic, else
/// a RabbitMQ queue.
fn to_broker() -> Broker {
    match std::env::var("TB_BENCH_TO").as_deref() {
        Ok("kafka") => Broker::Kafka,
        _ => Broker::Amqp,
    }
}

/// The relay process's head sampling ratio, `TB_BENCH_SAMPLE` (unset: every
/// span, written as OTLP/JSON to /dev/null; set: `parentbased_traceidratio`
/// at that ratio, exported as OTLP/HTTP to a local sink that accepts all).
fn sample_ratio() -> Option<f64> {
    std::env::var("TB_BENCH_SAMPLE").ok()?.parse().ok()
}

/// A local OTLP/HTTP endpoint that answers 200 to everything; its port.
async fn accepting_otlp_sink() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the OTLP sink");
    let port = listener.local_addr().expect("sink address").port();
    let app = axum::Router::new().fallback(|| async { axum::http::StatusCode::OK });
    tokio::spawn(async move { axum::serve(listener, app).await });
    port
}

/// The `traceparent` the plain loops send, so that they carry what the
/// relay's messages carry (RabbitMQ pays for the header, whoever sends it).
const PLAIN_TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

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

/// Publishes `n` persistent messages of the bench's size to `queue`
/// (declared here), every one confirmed.
async fn fill_queue(conn: &Connection, admin: &lapin::Channel, queue: &str, n: usize) {
    declare_queue(admin, queue).await;
    let channel = conn.create_channel().await.expect("channel");
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    let payload = vec![b'x'; payload_bytes()];
    let mut pending = FuturesUnordered::new();
    for _ in 0..n {
        let confirm = channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                &payload,
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .expect("publish");
        pending.push(confirm);
        if pending.len() >= 1000 {
            pending.next().await.map(|c| c.expect("confirm"));
        }
    }
    while let Some(confirm) = pending.next().await {
        confirm.expect("confirm");
    }
    let _ = channel.close(200, "filled".into()).await;
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

/// The relay's config: one route per `(source, out)` pair, `from` one
/// broker `to` another (or the same), each broker declared once, window
/// [`WINDOW`].
fn relay_toml(from: Broker, to: Broker, pairs: &[(String, String)]) -> String {
    let mut text = format!("[relay]\nlisten = \"127.0.0.1:0\"\nmax_in_flight = {WINDOW}\n");
    if from == Broker::Kafka || to == Broker::Kafka {
        text += &format!("[kafka.k]\nbootstrap_servers = \"{}\"\n", kafka());
    }
    if from == Broker::Amqp || to == Broker::Amqp {
        text += &format!("[amqp.r]\nurl = \"{}\"\n", amqp());
    }
    for (i, (source, out)) in pairs.iter().enumerate() {
        let from = match from {
            Broker::Kafka => {
                format!(r#"{{ kafka = "k", topic = "{source}", group = "{source}-relay" }}"#)
            }
            Broker::Amqp => format!(r#"{{ amqp = "r", queue = "{source}" }}"#),
        };
        let to = match to {
            Broker::Kafka => format!(r#"{{ kafka = "k", topic = "{out}" }}"#),
            Broker::Amqp => format!(r#"{{ amqp = "r", exchange = "", routing_key = "{out}" }}"#),
        };
        text += &format!("[[route]]\nname = \"bench-{i}\"\nfrom = {from}\nto = {to}\n");
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

/// Where a plain loop sends: what the relay's sinks send, untraced — the
/// payload, a `traceparent` header, persistent on RabbitMQ.
enum PlainSink {
    Kafka(FutureProducer),
    Amqp(lapin::Channel),
}

impl PlainSink {
    async fn new(conn: &Connection, broker: Broker) -> Self {
        match broker {
            Broker::Kafka => {
                PlainSink::Kafka(config().set("acks", "all").create().expect("producer"))
            }
            Broker::Amqp => {
                let channel = conn.create_channel().await.expect("channel");
                channel
                    .confirm_select(ConfirmSelectOptions::default())
                    .await
                    .expect("confirms");
                PlainSink::Amqp(channel)
            }
        }
    }

    /// Sends `payload` to `out` and waits for the broker to take it.
    async fn send(&self, out: &str, payload: &[u8]) {
        match self {
            PlainSink::Kafka(producer) => {
                let headers = OwnedHeaders::new().insert(Header {
                    key: "traceparent",
                    value: Some(PLAIN_TRACEPARENT),
                });
                producer
                    .send(
                        FutureRecord::<(), _>::to(out)
                            .payload(payload)
                            .headers(headers),
                        Duration::from_secs(30),
                    )
                    .await
                    .map_err(|(e, _)| e)
                    .expect("delivered");
            }
            PlainSink::Amqp(channel) => {
                let mut headers = FieldTable::default();
                headers.insert(
                    "traceparent".into(),
                    lapin::types::AMQPValue::LongString(PLAIN_TRACEPARENT.into()),
                );
                channel
                    .basic_publish(
                        "".into(),
                        out.into(),
                        BasicPublishOptions::default(),
                        payload,
                        BasicProperties::default()
                            .with_delivery_mode(2)
                            .with_headers(headers),
                    )
                    .await
                    .expect("publish")
                    .await
                    .expect("confirm");
            }
        }
    }
}

/// A plain pipelined loop from Kafka `topic` to `out`: up to `window` sends
/// awaiting the broker, offsets committed after them.
async fn plain_from_kafka(
    sink: &PlainSink,
    topic: &str,
    out: &str,
    n: usize,
    window: usize,
) -> f64 {
    // Timed from the first message out, as the relay is.
    let mut started = Instant::now();
    let consumer: StreamConsumer = config()
        .set("group.id", format!("{topic}-plain-{window}"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(topic, 0, Offset::Beginning)
        .expect("offset");
    consumer.assign(&list).expect("assign");
    let mut sends = FuturesUnordered::new();
    let (mut done, mut read) = (0, 0);
    // Offsets are committed every 100 ms, as a consumer's auto-commit
    // would: one asynchronous commit per message queued 100 000 requests,
    // which dropping the consumer then waited on for minutes.
    let (mut settled, mut committed_at) = (Offset::Beginning, Instant::now());
    let commit = |offset: Offset| {
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(topic, 0, offset).expect("offset");
        let _ = consumer.commit(&list, CommitMode::Async);
    };
    while done < n {
        if read < n && sends.len() < window {
            let message = consumer.recv().await.expect("message");
            let offset = message.offset();
            let payload = message.payload().unwrap_or_default().to_vec();
            // Sends run concurrently with further reads, as the relay's
            // hops do.
            sends.push(async move {
                sink.send(out, &payload).await;
                offset
            });
            read += 1;
        } else if let Some(offset) = sends.next().await {
            done += 1;
            if done == 1 {
                started = Instant::now();
            }
            // One partition, sends completing out of order: the highest
            // completed is an upper bound the plain loop accepts.
            if Offset::Offset(offset + 1).to_raw() > settled.to_raw() {
                settled = Offset::Offset(offset + 1);
            }
            if committed_at.elapsed() >= Duration::from_millis(100) {
                commit(settled);
                committed_at = Instant::now();
            }
        }
    }
    let rate = (n - 1) as f64 / started.elapsed().as_secs_f64();
    commit(settled);
    rate
}

/// A plain pipelined loop from RabbitMQ `queue` to `out`: prefetch
/// `window`, each delivery acknowledged once the sink has taken it.
async fn plain_from_amqp(
    conn: &Connection,
    sink: &PlainSink,
    queue: &str,
    out: &str,
    n: usize,
    window: usize,
) -> f64 {
    // Timed from the first message out, as the relay is.
    let mut started = Instant::now();
    let channel = conn.create_channel().await.expect("channel");
    channel
        .basic_qos(
            u16::try_from(window).unwrap_or(u16::MAX),
            Default::default(),
        )
        .await
        .expect("qos");
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "plain".into(),
            Default::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let mut sends = FuturesUnordered::new();
    let (mut done, mut read) = (0, 0);
    while done < n {
        if read < n && sends.len() < window {
            let delivery = consumer
                .next()
                .await
                .expect("consumer open")
                .expect("delivery");
            sends.push(async move {
                sink.send(out, &delivery.data).await;
                delivery.acker.ack(Default::default()).await.expect("ack");
            });
            read += 1;
        } else if sends.next().await.is_some() {
            done += 1;
            if done == 1 {
                started = Instant::now();
            }
        }
    }
    let rate = (n - 1) as f64 / started.elapsed().as_secs_f64();
    let _ = channel.close(200, "done".into()).await;
    rate
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
    let text = relay_toml(
        Broker::Kafka,
        Broker::Amqp,
        &[(topic.to_owned(), queue.to_owned())],
    );
    let config = RelayConfig::parse(&text, "bench", |_| None).expect("config");
    let relay = Relay::start(config, instrumentation.clone())
        .await
        .expect("relay");
    // Timed from the first message out, as the plain loops are.
    let mut first: Option<(Instant, usize)> = None;
    loop {
        let arrived = queue_depth(admin, queue).await as usize;
        if arrived >= n {
            break;
        }
        if arrived > 0 && first.is_none() {
            first = Some((Instant::now(), arrived));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (since, before) = first.unwrap_or((Instant::now(), 0));
    let rate = (n - before) as f64 / since.elapsed().as_secs_f64();
    relay.shutdown().await;
    rate
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

/// Makes `name` ready to be written to on `broker`.
async fn prepare(admin: &lapin::Channel, broker: Broker, name: &str) {
    match broker {
        Broker::Kafka => tracebridge::kafka::create_topic(&config(), name, 1)
            .await
            .expect("create topic"),
        Broker::Amqp => declare_queue(admin, name).await,
    }
}

/// Fills source `name` on `broker` with `n` messages.
async fn fill(conn: &Connection, admin: &lapin::Channel, broker: Broker, name: &str, n: usize) {
    match broker {
        Broker::Kafka => fill_topic(name, n).await,
        Broker::Amqp => fill_queue(conn, admin, name, n).await,
    }
}

/// How many messages `name` on `broker` holds.
async fn depth(admin: &lapin::Channel, broker: Broker, name: &str) -> usize {
    match broker {
        Broker::Kafka => topic_depth(name),
        Broker::Amqp => queue_depth(admin, name).await as usize,
    }
}

/// Deletes RabbitMQ queue `name` (Kafka topics are left: each run has its own).
async fn clean_up(admin: &lapin::Channel, broker: Broker, name: &str) {
    if broker == Broker::Amqp {
        delete_queue(admin, name).await;
    }
}

/// The relay binary at `binary` as a process: one route per `(topic,
/// out)` pair, timed from its first message out until the outputs hold all `n`, its memory
/// sampled.
async fn relay_process_run(
    binary: &str,
    admin: &lapin::Channel,
    pairs: &[(String, String)],
    n: usize,
    otlp_port: Option<u16>,
) -> ProcessRun {
    let dir = std::env::temp_dir().join(format!("tb-relay-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let config = dir.join("relay.toml");
    std::fs::write(&config, relay_toml(from_broker(), to_broker(), pairs)).expect("config");
    let started = Instant::now();
    let mut command = std::process::Command::new(binary);
    command
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null());
    match (otlp_port, sample_ratio()) {
        (Some(port), Some(ratio)) => command
            .env(
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("http://127.0.0.1:{port}"),
            )
            .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
            .env("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
            .env("OTEL_TRACES_SAMPLER_ARG", ratio.to_string())
            .env_remove("TRACEBRIDGE_SPANS_FILE"),
        _ => command
            .env("TRACEBRIDGE_SPANS_FILE", "/dev/null")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT"),
    };
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("{binary}: {e} (cargo build --release first)"));
    let pid = child.id();
    let mut samples = Vec::new();
    // Timed from the first message out (steady state: the process's
    // start-up and its group join are not the relay's rate).
    let mut first: Option<(Instant, usize)> = None;
    loop {
        let mut arrived = 0;
        for (_, out) in pairs {
            arrived += depth(admin, to_broker(), out).await;
        }
        if arrived >= n {
            break;
        }
        if arrived > 0 && first.is_none() {
            first = Some((Instant::now(), arrived));
        }
        samples.push(rss_of(pid, "VmRSS"));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (since, before) = first.unwrap_or((started, 0));
    let rate = (n - before) as f64 / since.elapsed().as_secs_f64();
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
    let (from, to) = (from_broker(), to_broker());
    let otlp_port = match sample_ratio() {
        Some(_) => Some(accepting_otlp_sink().await),
        None => None,
    };
    let run = std::process::id();
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); bins.len()];
    let mut worst: Vec<ProcessRun> = vec![ProcessRun::default(); bins.len()];
    let mut plain_rates = Vec::new();
    for round in 0..3 {
        let mut line = format!("round {round}:");
        for (i, (name, binary)) in bins.iter().enumerate() {
            let mut pairs = Vec::new();
            for route in 0..routes() {
                let source = format!("tb-relay-process-{name}-{run}-{round}-{route}");
                let out = format!("{source}-out");
                fill(conn, admin, from, &source, n / routes()).await;
                prepare(admin, to, &out).await;
                pairs.push((source, out));
            }
            let result = tokio::time::timeout(
                Duration::from_secs(180),
                relay_process_run(binary, admin, &pairs, n / routes() * routes(), otlp_port),
            )
            .await
            .unwrap_or_default();
            for (source, out) in &pairs {
                clean_up(admin, from, source).await;
                clean_up(admin, to, out).await;
            }
            line += &format!(
                " {name} {:.0}/s (RSS steady {:.1} MiB, peak {:.1} MiB);",
                result.rate, result.steady_rss, result.peak_rss
            );
            rates[i].push(result.rate);
            // Memory: the worst round counts.
            worst[i].steady_rss = worst[i].steady_rss.max(result.steady_rss);
            worst[i].peak_rss = worst[i].peak_rss.max(result.peak_rss);
        }
        let source = format!("tb-relay-process-plain-{run}-{round}");
        let out = format!("{source}-out");
        fill(conn, admin, from, &source, n).await;
        prepare(admin, to, &out).await;
        let sink = PlainSink::new(conn, to).await;
        let plain = async {
            match from {
                Broker::Kafka => plain_from_kafka(&sink, &source, &out, n, WINDOW).await,
                Broker::Amqp => plain_from_amqp(conn, &sink, &source, &out, n, WINDOW).await,
            }
        };
        // A lost confirm (lapin, rarely, under this load) would hang the
        // plain loop, which has no confirm timeout: 0, reported.
        let plain = tokio::time::timeout(Duration::from_secs(120), plain)
            .await
            .unwrap_or(0.0);
        clean_up(admin, from, &source).await;
        clean_up(admin, to, &out).await;
        plain_rates.push(plain);
        eprintln!("{line} plain pipelined {plain:.0}/s");
    }
    let sampling = match sample_ratio() {
        Some(ratio) => format!("parentbased_traceidratio {ratio}, OTLP/HTTP to a local sink"),
        None => "every span, OTLP/JSON to /dev/null".to_owned(),
    };
    println!(
        "relay process {} -> {}, {n} messages of {} bytes, {} route(s), window {WINDOW}, {sampling}; 3 interleaved rounds, min/median/max (memory: worst round)",
        from.name(),
        to.name(),
        payload_bytes(),
        routes()
    );
    let spread = |rates: &[f64]| {
        let mut sorted = rates.to_vec();
        sorted.sort_by(f64::total_cmp);
        (
            sorted[0],
            sorted[sorted.len() / 2],
            sorted[sorted.len() - 1],
        )
    };
    let (plain_min, plain_median, plain_max) = spread(&plain_rates);
    for ((name, _), (rates, memory)) in bins.iter().zip(rates.iter().zip(&worst)) {
        let (min, median, max) = spread(rates);
        // Each round's ratio against the plain loop of the same round.
        let ratios: Vec<f64> = rates
            .iter()
            .zip(&plain_rates)
            .map(|(relay, plain)| relay / plain)
            .collect();
        let (ratio_min, ratio_median, ratio_max) = spread(&ratios);
        println!(
            "  {name:<12} {min:.0}/{median:.0}/{max:.0} msg/s  ratio to plain {ratio_min:.2}/{ratio_median:.2}/{ratio_max:.2}  RSS steady {:.1} MiB, peak {:.1} MiB",
            memory.steady_rss, memory.peak_rss
        );
    }
    println!("  plain pipelined {plain_min:.0}/{plain_median:.0}/{plain_max:.0} msg/s");
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
    let sink = PlainSink::new(&conn, Broker::Amqp).await;
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
                    1 => plain_from_kafka(&sink, &topic, &queue, count, WINDOW).await,
                    _ => plain_from_kafka(&sink, &topic, &queue, count, 1).await,
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
