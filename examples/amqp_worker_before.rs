//! A RabbitMQ worker as a team writes one before it adds tracebridge:
//! shipping reads orders with lapin's consumer, ships each in
//! `#[instrument]`ed functions — publishing a shipment with publisher
//! confirms — and acks, or nacks a failure (requeued once). It has its own
//! OpenTelemetry set-up: an SDK tracer provider (OTLP when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set) behind a `tracing-opentelemetry`
//! layer — not installed as the global provider — and JSON logs.
//!
//! Its traces break at RabbitMQ. `examples/amqp_worker.rs` is the same
//! worker with tracebridge: three lines changed, Cargo.toml included
//! (`tests/examples_diff.rs` counts them).
//!
//! ```sh
//! cargo run --example amqp_worker_before -- --seed 3 --count 3
//! ```

use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Parser;
use futures::StreamExt as _;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::{Instrument as _, info, instrument, warn};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Ships orders from RabbitMQ.
#[derive(Parser, Debug, Clone)]
pub struct Args {
    /// The broker.
    #[arg(
        long,
        env = "AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    pub url: String,
    /// The queue orders arrive on.
    #[arg(long, default_value = "shipping.orders")]
    pub orders: String,
    /// Send this many test orders first (to try the worker out); the
    /// second fails once, to show a retry.
    #[arg(long, default_value_t = 0)]
    pub seed: u32,
    /// Stop after this many deliveries (0: run until stopped).
    #[arg(long, default_value_t = 0)]
    pub count: u32,
}

/// The queue shipments go to.
pub const SHIPMENTS: &str = "shipping.shipments";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let provider = telemetry();
    let shipped = run(&args).await;
    provider.shutdown()?;
    shipped
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
    tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new("info"))
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("shipping")))
        .with(tracing_subscriber::fmt::layer().json())
        .init();
    provider
}

/// Handles `args.count` deliveries (all of them when 0).
pub async fn run(args: &Args) -> anyhow::Result<()> {
    let connection = Connection::connect(&args.url, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    channel.basic_qos(16, BasicQosOptions::default()).await?;
    for queue in [args.orders.as_str(), SHIPMENTS] {
        channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    if args.seed > 0 {
        seed(&channel, &args.orders, args.seed).await?;
    }
    let mut consumer = channel
        .basic_consume(
            args.orders.as_str().into(),
            "shipping".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut handled = 0;
    while args.count == 0 || handled < args.count {
        let delivery = tokio::time::timeout(Duration::from_secs(60), consumer.next())
            .await
            .context("no order within a minute")?
            .context("the consumer was cancelled")??;
        match ship(&channel, &delivery).await {
            Ok(()) => delivery.ack(BasicAckOptions::default()).await?,
            Err(err) => {
                warn!(error = %err, "shipping failed");
                let requeue = !delivery.redelivered;
                delivery
                    .nack(BasicNackOptions {
                        requeue,
                        ..Default::default()
                    })
                    .await?
            }
        };
        handled += 1;
    }
    Ok(())
}

/// Test orders, sent under one `seed` span (one trace).
#[instrument(skip(channel))]
async fn seed(channel: &Channel, queue: &str, count: u32) -> anyhow::Result<()> {
    for n in 0..count {
        place(channel, queue, &format!("order-{n}")).await?;
    }
    Ok(())
}

#[instrument(skip(channel, queue))]
async fn place(channel: &Channel, queue: &str, order: &str) -> anyhow::Result<()> {
    publish(channel, queue, order.as_bytes()).await?;
    info!("order placed");
    Ok(())
}

#[instrument(skip_all, fields(order))]
async fn ship(channel: &Channel, delivery: &Delivery) -> anyhow::Result<()> {
    let order = String::from_utf8_lossy(&delivery.data).into_owned();
    tracing::Span::current().record("order", order.as_str());
    info!("shipping");
    if order == "order-1" && !delivery.redelivered {
        bail!("the carrier is busy");
    }
    let label = tokio::spawn(print_label(order.clone()).in_current_span());
    publish(
        channel,
        SHIPMENTS,
        format!("shipment of {order}").as_bytes(),
    )
    .await?;
    label.await?
}

#[instrument]
async fn print_label(order: String) -> anyhow::Result<()> {
    tokio::time::sleep(Duration::from_millis(2)).await;
    info!("label printed");
    Ok(())
}

async fn publish(channel: &Channel, queue: &str, payload: &[u8]) -> anyhow::Result<()> {
    let confirmation = channel
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            payload,
            BasicProperties::default(),
        )
        .await?
        .await?;
    if !confirmation.is_ack() {
        bail!("the broker refused the message: {confirmation:?}");
    }
    Ok(())
}
