//! A Kafka worker with tracebridge: `produce` sends traced messages,
//! `consume` processes them, each in its producer's trace.
//!
//! ```sh
//! cargo run --example kafka_worker -- produce --topic orders --count 10
//! cargo run --example kafka_worker -- consume --topic orders --group billing --count 10
//! cargo run --release -- traces tracebridge-spans.jsonl   # (once the `traces` command exists)
//! ```
//!
//! Spans go to `tracebridge-spans.jsonl`, or to a collector when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set; logs are JSON lines on stderr.

use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use opentelemetry::trace::{FutureExt as _, TraceContextExt as _, Tracer as _};
use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::consumer::Consumer;
use rdkafka::producer::FutureRecord;
use tracebridge::kafka::{TracedProducer, TracedStreamConsumer};

#[derive(Parser)]
#[command(about = "A traced Kafka worker (tracebridge example)")]
struct Args {
    /// Kafka bootstrap servers.
    #[arg(
        long,
        env = "KAFKA_BOOTSTRAP_SERVERS",
        default_value = "127.0.0.1:9092"
    )]
    brokers: String,
    /// Topic to produce to / consume from.
    #[arg(long, default_value = "tracebridge.example")]
    topic: String,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Send COUNT messages, each from its own "place-order" span.
    Produce {
        /// How many messages.
        #[arg(long, default_value_t = 10)]
        count: u32,
    },
    /// Process COUNT messages, then exit.
    Consume {
        /// Consumer group.
        #[arg(long, default_value = "tracebridge-example")]
        group: String,
        /// How many messages to process before exiting.
        #[arg(long, default_value_t = 10)]
        count: u32,
        /// Give up when no message arrives for this many seconds.
        #[arg(long, default_value_t = 30)]
        idle_timeout: u64,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &args.brokers);
    match args.mode {
        Mode::Produce { count } => {
            let _telemetry = tracebridge::telemetry::init("kafka-worker-producer");
            tracebridge::kafka::create_topic(&config, &args.topic, 3).await?;
            let producer = TracedProducer::from_config(&config)?;
            let tracer = opentelemetry::global::tracer("kafka-worker");
            for i in 0..count {
                let order = format!("order-{i}");
                let payload = format!(r#"{{"order":"{order}"}}"#);
                // The application's own span; the send span is its child.
                let span = tracer.start("place-order");
                let cx = opentelemetry::Context::current_with_span(span);
                let delivery = producer
                    .send(
                        FutureRecord::to(&args.topic).key(&order).payload(&payload),
                        Duration::from_secs(10),
                    )
                    .with_context(cx.clone())
                    .await
                    .map_err(|(err, _)| anyhow::anyhow!("sending {order}: {err}"))?;
                let _attached = cx.attach();
                tracing::info!(%order, partition = delivery.partition, offset = delivery.offset, "order sent");
            }
        }
        Mode::Consume {
            group,
            count,
            idle_timeout,
        } => {
            let _telemetry = tracebridge::telemetry::init("kafka-worker-consumer");
            config
                .set("group.id", &group)
                .set("auto.offset.reset", "earliest")
                .set("enable.auto.commit", "false");
            let consumer = TracedStreamConsumer::from_config(&config)?.with_settle_spans(true);
            consumer.get_ref().subscribe(&[&args.topic])?;
            for _ in 0..count {
                let message =
                    tokio::time::timeout(Duration::from_secs(idle_timeout), consumer.recv())
                        .await
                        .context("no message arrived in time")??;
                let key = String::from_utf8_lossy(message.message().key().unwrap_or_default())
                    .into_owned();
                async {
                    // Work done here is part of the message's trace.
                    let _work = tracing::info_span!("bill-order", order = %key).entered();
                    tracing::info!(order = %key, "billing order");
                }
                .with_context(message.context().clone())
                .await;
                consumer.commit(&message, rdkafka::consumer::CommitMode::Async)?;
            }
            if count == 0 {
                bail!("nothing to do: --count is 0");
            }
        }
    }
    Ok(())
}
