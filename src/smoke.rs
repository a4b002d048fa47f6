//! A smoke run through a real Kafka broker: one message sent under a
//! PRODUCER span with its context injected, read back, and processed under a
//! CONSUMER span whose parent is the extracted context.

use std::time::Duration;

use anyhow::{Context as _, anyhow};
use futures::StreamExt;
use opentelemetry::trace::{Span, SpanKind, TraceContextExt, Tracer};
use opentelemetry::{Context, global};
use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use tracebridge::kafka::{KafkaHeaderExtractor, KafkaHeaderInjector};
use tracebridge::propagation::Propagation;
use tracebridge::semconv::{Destination, MessagingAttributes, Operation, Stability};

const TOPIC: &str = "tracebridge.smoke";

/// What the run observed.
pub(crate) struct Outcome {
    pub(crate) producer_trace_id: String,
    pub(crate) producer_span_id: String,
    pub(crate) consumer_trace_id: String,
    pub(crate) consumer_parent_span_id: String,
}

impl Outcome {
    pub(crate) fn joined(&self) -> bool {
        self.producer_trace_id == self.consumer_trace_id
            && self.producer_span_id == self.consumer_parent_span_id
    }
}

pub(crate) async fn run(brokers: &str, timeout: Duration) -> anyhow::Result<Outcome> {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    create_topic(&config).await?;
    let tracer = global::tracer(tracebridge::telemetry::SCOPE_NAME);
    let propagation = Propagation::default();
    let destination = Destination::kafka(TOPIC);

    let mut send_span = tracer
        .span_builder(Operation::Send.span_name(&destination))
        .with_kind(SpanKind::Producer)
        .with_attributes(
            MessagingAttributes::new(Operation::Send, &destination, Stability::from_env())
                .into_vec(),
        )
        .start(&tracer);
    let send_cx = Context::new().with_remote_span_context(send_span.span_context().clone());
    let mut injector = KafkaHeaderInjector::new(None);
    propagation.inject(&send_cx, &mut injector);
    let producer: FutureProducer = config
        .clone()
        .set("message.timeout.ms", "10000")
        .create()
        .context("creating the producer")?;
    let nonce = uuid_like();
    producer
        .send(
            FutureRecord::to(TOPIC)
                .key(&nonce)
                .payload("hello from tracebridge")
                .headers(injector.finish()),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| anyhow!("delivery failed: {e}"))?;
    let producer_ids = send_span.span_context().clone();
    send_span.end();

    let consumer: StreamConsumer = config
        .clone()
        .set("group.id", format!("tracebridge-smoke-{nonce}"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .context("creating the consumer")?;
    consumer.subscribe(&[TOPIC]).context("subscribing")?;
    let mut stream = consumer.stream();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let next = tokio::time::timeout_at(deadline, stream.next())
            .await
            .map_err(|_| anyhow!("no message came back within {timeout:?}"))?
            .ok_or_else(|| anyhow!("the consumer stream ended"))?
            .context("consuming")?;
        if next.key() != Some(nonce.as_bytes()) {
            continue; // an earlier run's message
        }
        let extracted = match next.headers() {
            Some(headers) => propagation.extract(&KafkaHeaderExtractor(headers)),
            None => {
                propagation.extract(&KafkaHeaderExtractor(&rdkafka::message::OwnedHeaders::new()))
            }
        };
        let parent = extracted.span_context().cloned();
        let process = tracer
            .span_builder(Operation::Process.span_name(&destination))
            .with_kind(SpanKind::Consumer)
            .start_with_context(&tracer, extracted.context());
        let consumer_ids = process.span_context().clone();
        drop(process);
        return Ok(Outcome {
            producer_trace_id: producer_ids.trace_id().to_string(),
            producer_span_id: producer_ids.span_id().to_string(),
            consumer_trace_id: consumer_ids.trace_id().to_string(),
            consumer_parent_span_id: parent.map(|p| p.span_id().to_string()).unwrap_or_default(),
        });
    }
}

async fn create_topic(config: &ClientConfig) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> =
        config.create().context("creating the admin client")?;
    let results = admin
        .create_topics(
            &[NewTopic::new(TOPIC, 1, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .context("creating the smoke topic")?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(anyhow!("creating topic {topic}: {code}")),
        }
    }
    Ok(())
}

fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{nanos:x}-{}", std::process::id())
}
