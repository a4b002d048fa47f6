//! Kafka (rdkafka) integration.
//!
//! * [`TracedProducer`]: a `FutureProducer` whose every send is a PRODUCER
//!   span `send {topic}` with its context injected into the record headers;
//!   the span ends with the broker's delivery report.
//! * [`TracedStreamConsumer`]: a `StreamConsumer` whose messages come with their
//!   extracted creation context and a CONSUMER span `process {topic}`; a
//!   batch API makes one CLIENT `poll {topic}` span linked to every message.
//! * [`KafkaHeaderExtractor`] / [`KafkaHeaderInjector`]: the header
//!   carriers, for code that drives rdkafka itself.

pub(crate) mod carrier;
mod consumer;
mod producer;
pub(crate) mod span;

use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;

pub use carrier::{KafkaHeaderExtractor, KafkaHeaderInjector};
pub use consumer::{TracedBatch, TracedMessage, TracedStreamConsumer};
pub use producer::TracedProducer;

use crate::semconv::Endpoint;

/// `server.*` and `messaging.client.id` from a client config.
pub fn endpoint(config: &ClientConfig) -> Endpoint {
    Endpoint::from_servers(
        config.get("bootstrap.servers").unwrap_or_default(),
        config.get("client.id"),
    )
}

/// Creates `topic` with `partitions` partitions and the cluster's default
/// replication factor (`default.replication.factor`); a topic that already
/// exists is fine. For clusters that create no topic on first use
/// (`auto.create.topics.enable=false`, common in production).
pub async fn create_topic(
    config: &ClientConfig,
    topic: &str,
    partitions: i32,
) -> Result<(), crate::Error> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::types::RDKafkaErrorCode;
    let failed = |source: KafkaError| crate::Error::CreateTopic {
        topic: topic.to_owned(),
        source: Box::new(source),
    };
    let admin: AdminClient<DefaultClientContext> =
        config.create().map_err(|e| client_error(config, e))?;
    let results = admin
        .create_topics(
            &[NewTopic::new(
                topic,
                partitions,
                TopicReplication::Fixed(-1),
            )],
            &AdminOptions::new().operation_timeout(Some(std::time::Duration::from_secs(10))),
        )
        .await
        .map_err(failed)?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => return Err(failed(KafkaError::AdminOp(code))),
        }
    }
    Ok(())
}

/// The error of creating a client from `config`.
pub(crate) fn client_error(config: &ClientConfig, source: KafkaError) -> crate::Error {
    crate::Error::Connect {
        target: config
            .get("bootstrap.servers")
            .unwrap_or_default()
            .to_owned(),
        source: Box::new(source),
    }
}

/// `error.type` for a Kafka error: the broker/client error code's name
/// (`MessageTimedOut`, `UnknownTopicOrPartition`, …) when there is one,
/// else the kind of failure.
pub(crate) fn error_type(err: &KafkaError) -> String {
    match err.rdkafka_error_code() {
        Some(code) => format!("{code:?}"),
        None => crate::instrument::variant_name(err, "KafkaError"),
    }
}
