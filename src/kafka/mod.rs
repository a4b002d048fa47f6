//! Kafka (rdkafka) integration.
//!
//! * [`TracedProducer`]: a `FutureProducer` whose every send is a PRODUCER
//!   span `send {topic}` with its context injected into the record headers;
//!   the span ends with the broker's delivery report.
//! * [`TracedConsumer`]: a `StreamConsumer` whose messages come with their
//!   extracted creation context and a CONSUMER span `process {topic}`; a
//!   batch API makes one CLIENT `poll {topic}` span linked to every message.
//! * [`KafkaHeaderExtractor`] / [`KafkaHeaderInjector`]: the header
//!   carriers, for code that drives rdkafka itself.

pub(crate) mod carrier;
mod consumer;
mod producer;

use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;

pub use carrier::{KafkaHeaderExtractor, KafkaHeaderInjector};
pub use consumer::{TracedBatch, TracedConsumer, TracedMessage};
pub use producer::TracedProducer;

use crate::semconv::Endpoint;

/// `server.*` and `messaging.client.id` from a client config.
pub fn endpoint(config: &ClientConfig) -> Endpoint {
    Endpoint::from_servers(
        config.get("bootstrap.servers").unwrap_or_default(),
        config.get("client.id"),
    )
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
        None => {
            let debug = format!("{err:?}");
            debug
                .split(|c: char| !c.is_alphanumeric())
                .next()
                .unwrap_or("KafkaError")
                .to_owned()
        }
    }
}
