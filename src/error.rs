//! The library's error type.

/// A broker client's own error, kept as the `source` of an [`Error`]
/// (downcast to `rdkafka::error::KafkaError` or `lapin::Error` when needed).
pub type ClientError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An operation of tracebridge's clients failed. The variant names the
/// operation; `source` is the broker client's own error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Invalid configuration; the message says where and what.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Connecting to a broker (or creating a client for it) failed.
    #[error("connecting to {target} failed")]
    Connect {
        /// The broker address or URL, without credentials.
        target: String,
        /// The client error's low-cardinality kind, as spans and metrics
        /// record it (`error.type`), named by the transport that failed.
        error_type: String,
        /// The client's error.
        #[source]
        source: ClientError,
    },
    /// Publishing to AMQP failed before the broker answered.
    #[error("publishing to {destination} failed")]
    Publish {
        /// `{exchange}:{routing_key}`, as in the span name.
        destination: String,
        /// The client error's low-cardinality kind, as spans and metrics
        /// record it (`error.type`), named by the transport that failed.
        error_type: String,
        /// The client's error.
        #[source]
        source: ClientError,
    },
    /// The broker refused a published message: it nacked it, or returned it
    /// as unroutable (mandatory publish).
    #[error("{destination}: the broker {refusal}")]
    Refused {
        /// `{exchange}:{routing_key}`.
        destination: String,
        /// What the broker did.
        refusal: Refusal,
    },
    /// Receiving a message failed.
    #[error("consuming from {source_name} failed")]
    Consume {
        /// The topic or queue.
        source_name: String,
        /// The client error's low-cardinality kind, as spans and metrics
        /// record it (`error.type`), named by the transport that failed.
        error_type: String,
        /// The client's error.
        #[source]
        source: ClientError,
    },
    /// Creating a Kafka topic failed.
    #[error("creating topic {topic} failed")]
    CreateTopic {
        /// The topic.
        topic: String,
        /// The client error's low-cardinality kind, as spans and metrics
        /// record it (`error.type`), named by the transport that failed.
        error_type: String,
        /// The client's error.
        #[source]
        source: ClientError,
    },
    /// Committing a Kafka offset failed.
    #[error("committing offset {offset} of {topic}[{partition}] failed")]
    Commit {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The offset.
        offset: i64,
        /// The client error's low-cardinality kind, as spans and metrics
        /// record it (`error.type`), named by the transport that failed.
        error_type: String,
        /// The client's error.
        #[source]
        source: ClientError,
    },
    /// Acknowledging (ack, nack or reject) an AMQP delivery failed.
    #[error("{operation} of delivery {delivery_tag} failed")]
    Ack {
        /// `ack`, `nack` or `reject`.
        operation: &'static str,
        /// The delivery tag.
        delivery_tag: u64,
        /// The client error's low-cardinality kind, as spans and metrics
        /// record it (`error.type`), named by the transport that failed.
        error_type: String,
        /// The client's error.
        #[source]
        source: ClientError,
    },
}

/// How a broker refused a published message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// `basic.nack` from the broker (it could not take the message).
    Nacked,
    /// `basic.return`: a mandatory message no queue was bound to take.
    Returned {
        /// AMQP reply code (312 = NO_ROUTE).
        reply_code: u16,
        /// The broker's explanation.
        reply_text: String,
    },
}

impl Error {
    /// The low-cardinality `error.type` of this error, as spans and metrics
    /// record it: the refusal, or the broker client's error kind.
    pub fn error_type(&self) -> String {
        match self {
            Error::Refused { refusal, .. } => refusal.error_type().to_owned(),
            Error::Config(_) => "config".to_owned(),
            Error::Connect { error_type, .. }
            | Error::Publish { error_type, .. }
            | Error::Consume { error_type, .. }
            | Error::CreateTopic { error_type, .. }
            | Error::Commit { error_type, .. }
            | Error::Ack { error_type, .. } => error_type.clone(),
        }
    }
}

impl Refusal {
    /// The `error.type` recorded for this refusal.
    pub fn error_type(&self) -> &'static str {
        match self {
            Refusal::Nacked => "nacked",
            Refusal::Returned { .. } => "unroutable",
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Nacked => f.write_str("nacked the message"),
            Refusal::Returned {
                reply_code,
                reply_text,
            } => write!(
                f,
                "returned the message as unroutable ({reply_code} {reply_text})"
            ),
        }
    }
}
