//! Kafka, through the application's own rdkafka clients.
//!
//! Each side keeps the shape of the client it traces, so adding
//! tracebridge changes a line or two, not the worker:
//!
//! * **Producer: a drop-in type.** [`producer::FutureProducer`] is
//!   rdkafka's `FutureProducer` with every send traced — the same name,
//!   methods, arguments and results, created the same way
//!   (`config.create()`). [`producer`] is rdkafka's `producer` module with
//!   it in place, so the change is the import:
//!   `use rdkafka::producer::{FutureProducer, FutureRecord}` becomes
//!   `use tracebridge::kafka::producer::{FutureProducer, FutureRecord}`. A
//!   send has to be traced where it happens and rdkafka has no hook for
//!   it, hence a type; it never turns into rdkafka's, so no code path can
//!   send untraced without asking ([`producer::FutureProducer::get_ref`]).
//! * **Consumer: an extension of your own.** Keep your consumer —
//!   `StreamConsumer` or `BaseConsumer`, your `ConsumerContext`, your
//!   receive loop — and wrap the call that hands a message to its handler
//!   in [`process`]. That call is where the message's span must surround
//!   the work (Rust has no thread-local "current message" a wrapper could
//!   set safely across `.await`s), so the one line that is needed anyway
//!   does it all; a wrapper type would have to re-implement rdkafka's
//!   consumer traits for nothing. The consumer group and broker are read
//!   from the live client. [`process_batch`] and [`commit`] complete it;
//!   [`ConsumerTracing`] holds the options.
//!
//! ```no_run
//! use std::time::Duration;
//! use rdkafka::ClientConfig;
//! use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
//! use tracebridge::kafka::producer::{FutureProducer, FutureRecord};
//!
//! #[tracing::instrument(skip_all)]
//! async fn bill(producer: &FutureProducer, order: &[u8]) -> anyhow::Result<()> {
//!     tracing::info!("billing");
//!     producer
//!         .send(FutureRecord::to("invoices").key("o-1").payload(order), Duration::from_secs(5))
//!         .await
//!         .map_err(|(err, _)| err)?;
//!     Ok(())
//! }
//!
//! # async fn run() -> anyhow::Result<()> {
//! let consumer: StreamConsumer = ClientConfig::new()
//!     .set("bootstrap.servers", "127.0.0.1:9092")
//!     .set("group.id", "billing")
//!     .create()?;
//! consumer.subscribe(&["orders"])?;
//! let producer: FutureProducer = ClientConfig::new()
//!     .set("bootstrap.servers", "127.0.0.1:9092")
//!     .create()?;
//! loop {
//!     let message = consumer.recv().await?;
//!     let order = rdkafka::Message::payload(&message).unwrap_or_default();
//!     tracebridge::kafka::process(&consumer, &message, bill(&producer, order)).await?;
//!     consumer.commit_message(&message, CommitMode::Async)?;
//! }
//! # }
//! ```
//!
//! [`KafkaHeaderExtractor`] / [`KafkaHeaderInjector`] are the header
//! carriers, for code that drives rdkafka itself.

pub(crate) mod carrier;
mod client_config;
mod process;
mod producer_impl;
pub(crate) mod span;

use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;

pub use carrier::{KafkaHeaderExtractor, KafkaHeaderIndex, KafkaHeaderInjector};
pub use process::{ConsumerTracing, commit, process, process_batch};

/// rdkafka's `producer` module, with tracebridge's traced
/// [`FutureProducer`](producer::FutureProducer) in place of rdkafka's:
/// import from here instead of `rdkafka::producer` and every send is
/// traced.
pub mod producer {
    pub use rdkafka::producer::*;

    pub use super::producer_impl::{DeliveryFuture, FutureProducer};
}

/// Creates `topic` with `partitions` partitions and the cluster's default
/// replication factor (`default.replication.factor`); a topic that already
/// exists is fine. For clusters that create no topic on first use
/// (`auto.create.topics.enable=false`, common in production). A helper of
/// the demo and the tests, not part of the library's API.
#[doc(hidden)]
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
        error_type: error_type(&source),
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
        error_type: error_type(&source),
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
