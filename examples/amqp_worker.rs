//! An AMQP (RabbitMQ) worker with tracebridge: `publish` sends traced
//! messages with publisher confirms, `consume` handles them, each in its
//! publisher's trace, acking on success.
//!
//! ```sh
//! cargo run --example amqp_worker -- publish --count 10
//! cargo run --example amqp_worker -- consume --count 10
//! ```
//!
//! Declares the exchange (direct), the queue and the binding first, so it
//! runs against an empty broker. Spans go to `tracebridge-spans.jsonl`, or
//! to a collector when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.

use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use opentelemetry::trace::{FutureExt as _, TraceContextExt as _, Tracer as _};
use tracebridge::amqp::{TracedConsumer, TracedPublisher};

#[derive(Parser)]
#[command(about = "A traced RabbitMQ worker (tracebridge example)")]
struct Args {
    /// AMQP URL.
    #[arg(
        long,
        env = "AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    url: String,
    /// Exchange to publish to.
    #[arg(long, default_value = "tracebridge.example")]
    exchange: String,
    /// Queue to consume from (bound to the exchange with the routing key).
    #[arg(long, default_value = "tracebridge.example")]
    queue: String,
    /// Routing key.
    #[arg(long, default_value = "order.created")]
    routing_key: String,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Publish COUNT messages, each from its own "place-order" span; all
    /// confirms are awaited together.
    Publish {
        /// How many messages.
        #[arg(long, default_value_t = 10)]
        count: u32,
    },
    /// Handle COUNT messages, then exit.
    Consume {
        /// How many messages to handle before exiting.
        #[arg(long, default_value_t = 10)]
        count: u32,
        /// Give up when no message arrives for this many seconds.
        #[arg(long, default_value_t = 30)]
        idle_timeout: u64,
        /// Delete the queue and the exchange afterwards (for smoke runs).
        #[arg(long)]
        delete_when_done: bool,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let service = match args.mode {
        Mode::Publish { .. } => "amqp-worker-publisher",
        Mode::Consume { .. } => "amqp-worker-consumer",
    };
    let _telemetry = tracebridge::telemetry::init(service);
    let conn = Connection::connect(&args.url, ConnectionProperties::default())
        .await
        .context("connecting to RabbitMQ (is it running? scripts/brokers.sh up)")?;
    let channel = conn.create_channel().await?;
    declare(&channel, &args).await?;
    let endpoint = tracebridge::amqp::endpoint(&args.url);
    match args.mode {
        Mode::Publish { count } => {
            let publisher = TracedPublisher::new(channel, endpoint).await?;
            let tracer = opentelemetry::global::tracer("amqp-worker");
            let mut pending = Vec::new();
            for i in 0..count {
                let order = format!("order-{i}");
                let cx = opentelemetry::Context::current_with_span(tracer.start("place-order"));
                let properties = BasicProperties::default()
                    .with_message_id(order.as_str().into())
                    .with_correlation_id(format!("req-{i}").as_str().into());
                pending.push(
                    publisher
                        .publish_with_parent(
                            &cx,
                            &args.exchange,
                            &args.routing_key,
                            BasicPublishOptions::default(),
                            properties,
                            format!(r#"{{"order":"{order}"}}"#).as_bytes(),
                        )
                        .await?,
                );
            }
            for confirm in pending {
                confirm.confirmed().await?;
            }
            tracing::info!(count, "all messages confirmed");
        }
        Mode::Consume {
            count,
            idle_timeout,
            delete_when_done,
        } => {
            channel.basic_qos(50, BasicQosOptions::default()).await?;
            let consumer = channel
                .basic_consume(
                    args.queue.as_str().into(),
                    "amqp-worker".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            let mut consumer = TracedConsumer::new(consumer, endpoint);
            for _ in 0..count {
                let handled = tokio::time::timeout(
                    Duration::from_secs(idle_timeout),
                    consumer.process_next(async |delivery| {
                        let order = String::from_utf8_lossy(&delivery.data).into_owned();
                        async {
                            let _work = tracing::info_span!("ship-order").entered();
                            tracing::info!(%order, "shipping order");
                        }
                        .with_context(opentelemetry::Context::current())
                        .await;
                        Ok::<_, anyhow::Error>(())
                    }),
                )
                .await
                .context("no message arrived in time")??;
                anyhow::ensure!(handled.is_some(), "the consumer was cancelled");
            }
            if delete_when_done {
                let admin = conn.create_channel().await?;
                admin
                    .queue_delete(args.queue.as_str().into(), Default::default())
                    .await?;
                admin
                    .exchange_delete(args.exchange.as_str().into(), Default::default())
                    .await?;
            }
        }
    }
    // Dropping the connection closes it (publishes were confirmed above).
    drop(conn);
    Ok(())
}

async fn declare(channel: &Channel, args: &Args) -> anyhow::Result<()> {
    channel
        .exchange_declare(
            args.exchange.as_str().into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_declare(
            args.queue.as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_bind(
            args.queue.as_str().into(),
            args.exchange.as_str().into(),
            args.routing_key.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(())
}
