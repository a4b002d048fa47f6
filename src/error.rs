//! The library's error type.

/// An operation of tracebridge's clients failed. The variant names the
/// operation; `source` is the broker client's own error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Invalid configuration; the message says where and what.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Connecting to a broker failed.
    #[error("connecting to {target} failed")]
    Connect {
        /// The broker address or URL (without credentials).
        target: String,
        /// The client's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Creating a Kafka client from its configuration failed.
    #[cfg(feature = "kafka")]
    #[error("creating the Kafka client failed")]
    KafkaClient {
        /// rdkafka's error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// Receiving from Kafka failed.
    #[cfg(feature = "kafka")]
    #[error("consuming from Kafka failed")]
    Consume {
        /// rdkafka's error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// Committing Kafka offsets failed.
    #[cfg(feature = "kafka")]
    #[error("committing offset {offset} of {topic}[{partition}] failed")]
    Commit {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The offset.
        offset: i64,
        /// rdkafka's error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
}
