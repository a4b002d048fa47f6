//! A Kafka worker as a team writes one before it adds tracebridge: billing
//! reads orders with rdkafka's `StreamConsumer` (with a `ConsumerContext`
//! of its own), bills each in `#[instrument]`ed functions with a spawned
//! audit task, and sends an invoice with rdkafka's `FutureProducer`. It has
//! its own OpenTelemetry set-up: an SDK tracer provider (OTLP when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set), installed globally and behind a
//! `tracing-opentelemetry` layer, and JSON logs.
//!
//! Its traces break at Kafka: the order's consumer starts a new trace.
//! `examples/kafka_worker.rs` is the same worker with tracebridge — three
//! lines changed, Cargo.toml included (`tests/examples_diff.rs` counts
//! them):
//!
//! ```sh
//! cargo run --example kafka_worker_before -- --seed 3 --count 3
//! ```

use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tracing::{Instrument as _, info, instrument};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Bills orders from Kafka.
#[derive(Parser, Debug, Clone)]
pub struct Args {
    /// Kafka bootstrap servers.
    #[arg(
        long,
        env = "KAFKA_BOOTSTRAP_SERVERS",
        default_value = "127.0.0.1:9092"
    )]
    pub brokers: String,
    /// The topic orders arrive on.
    #[arg(long, default_value = "billing.orders")]
    pub orders: String,
    /// Consumer group.
    #[arg(long, default_value = "billing")]
    pub group: String,
    /// Send this many test orders first (to try the worker out).
    #[arg(long, default_value_t = 0)]
    pub seed: u32,
    /// Stop after this many orders (0: run until stopped).
    #[arg(long, default_value_t = 0)]
    pub count: u32,
}

/// The topic invoices go to.
pub const INVOICES: &str = "billing.invoices";

/// Logs partition assignments.
pub struct Rebalances;

impl ClientContext for Rebalances {}

impl ConsumerContext for Rebalances {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(partitions) = rebalance {
            info!(partitions = partitions.count(), "partitions assigned");
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let provider = telemetry();
    let billed = run(&args).await;
    provider.shutdown()?;
    billed
}

/// The service's own telemetry.
fn telemetry() -> SdkTracerProvider {
    let mut provider = SdkTracerProvider::builder();
    if std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_some() {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
            .expect("the OTLP exporter");
        provider = provider.with_batch_exporter(exporter);
    }
    let provider = provider.build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new("info"))
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("billing")))
        .with(tracing_subscriber::fmt::layer().json())
        .init();
    provider
}

/// Bills `args.count` orders (all of them when 0).
pub async fn run(args: &Args) -> anyhow::Result<()> {
    if args.seed > 0 {
        create_topics(&args.brokers, &[&args.orders, INVOICES]).await?;
    }
    let consumer: StreamConsumer<Rebalances> = ClientConfig::new()
        .set("bootstrap.servers", &args.brokers)
        .set("group.id", &args.group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create_with_context(Rebalances)?;
    consumer.subscribe(&[&args.orders])?;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &args.brokers)
        .create()?;
    if args.seed > 0 {
        seed(&producer, &args.orders, args.seed).await?;
    }
    let mut billed = 0;
    while args.count == 0 || billed < args.count {
        let message = tokio::time::timeout(Duration::from_secs(60), consumer.recv())
            .await
            .context("no order within a minute")??;
        bill(&producer, &message).await?;
        consumer.commit_message(&message, CommitMode::Async)?;
        billed += 1;
    }
    Ok(())
}

/// Creates the topics (for a broker that makes none on first use).
async fn create_topics(brokers: &str, topics: &[&str]) -> anyhow::Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::types::RDKafkaErrorCode;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let new: Vec<_> = topics
        .iter()
        .map(|topic| NewTopic::new(topic, 1, TopicReplication::Fixed(-1)))
        .collect();
    for result in admin.create_topics(&new, &AdminOptions::new()).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => anyhow::bail!("creating {topic}: {code}"),
        }
    }
    Ok(())
}

/// Test orders, sent under one `seed` span (one trace).
#[instrument(skip(producer))]
async fn seed(producer: &FutureProducer, topic: &str, count: u32) -> anyhow::Result<()> {
    for n in 0..count {
        let order = format!("order-{n}");
        place(producer, topic, &order).await?;
    }
    Ok(())
}

#[instrument(skip(producer, topic))]
async fn place(producer: &FutureProducer, topic: &str, order: &str) -> anyhow::Result<()> {
    producer
        .send(
            FutureRecord::to(topic).key(order).payload(order),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(err, _)| err)?;
    info!("order placed");
    Ok(())
}

#[instrument(skip_all, fields(order))]
async fn bill(producer: &FutureProducer, message: &BorrowedMessage<'_>) -> anyhow::Result<()> {
    let order = String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned();
    tracing::Span::current().record("order", order.as_str());
    info!("billing");
    let audit = tokio::spawn(audit(order.clone()).in_current_span());
    let invoice = format!("invoice for {order}");
    producer
        .send(
            FutureRecord::to(INVOICES).key(&order).payload(&invoice),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(err, _)| err)?;
    audit.await?
}

#[instrument]
async fn audit(order: String) -> anyhow::Result<()> {
    tokio::time::sleep(Duration::from_millis(2)).await;
    info!("audited");
    Ok(())
}
