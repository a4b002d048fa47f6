//! A smoke run through a real Kafka broker: one message sent with
//! `TracedProducer` under a "checkout" span, read back with
//! `TracedConsumer`, and checked to be processed in the same trace.

use std::time::Duration;

use anyhow::{Context as _, anyhow};
use opentelemetry::trace::{TraceContextExt, Tracer};
use opentelemetry::{Context, global};
use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::consumer::Consumer;
use rdkafka::producer::FutureRecord;
use tracebridge::kafka::{TracedConsumer, TracedProducer};

const TOPIC: &str = "tracebridge.smoke";

/// What the run observed.
pub(crate) struct Outcome {
    pub(crate) producer_trace_id: String,
    pub(crate) consumer_trace_id: String,
    pub(crate) consumer_parent_span_id: String,
}

impl Outcome {
    pub(crate) fn joined(&self) -> bool {
        self.producer_trace_id == self.consumer_trace_id && !self.consumer_parent_span_id.is_empty()
    }
}

pub(crate) async fn run(brokers: &str, timeout: Duration) -> anyhow::Result<Outcome> {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    tracebridge::kafka::create_topic(&config, TOPIC, 1)
        .await
        .context("creating the smoke topic")?;

    // The "checkout" side: one message under its own root span.
    let producer = TracedProducer::from_config(config.clone().set("message.timeout.ms", "10000"))
        .context("creating the producer")?;
    let nonce = nonce();
    let root = global::tracer("tracebridge-demo").start("checkout");
    let checkout = Context::new().with_span(root);
    producer
        .send_with_parent(
            &checkout,
            FutureRecord::to(TOPIC)
                .key(&nonce)
                .payload("hello from tracebridge"),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| anyhow!("delivery failed: {e}"))?;
    let producer_trace_id = checkout.span().span_context().trace_id().to_string();
    checkout.span().end();

    // The consumer side: find our message and process it.
    let consumer = TracedConsumer::from_config(
        config
            .clone()
            .set("group.id", format!("tracebridge-smoke-{nonce}"))
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false"),
    )
    .context("creating the consumer")?;
    consumer
        .get_ref()
        .subscribe(&[TOPIC])
        .context("subscribing")?;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let message = tokio::time::timeout_at(deadline, consumer.recv())
            .await
            .map_err(|_| anyhow!("no message came back within {timeout:?}"))?
            .context("consuming")?;
        if message.message().key() != Some(nonce.as_bytes()) {
            continue; // an earlier run's message
        }
        let outcome = Outcome {
            producer_trace_id: producer_trace_id.clone(),
            consumer_trace_id: message
                .context()
                .span()
                .span_context()
                .trace_id()
                .to_string(),
            consumer_parent_span_id: message
                .extracted()
                .span_context()
                .map(|p| p.span_id().to_string())
                .unwrap_or_default(),
        };
        message.end();
        return Ok(outcome);
    }
}

fn nonce() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{nanos:x}-{}", std::process::id())
}
