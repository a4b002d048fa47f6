//! The Kafka side of a route's output: a record per message (or dead
//! letter) through the traced producer, confirmed when the broker has it.

use std::time::Duration;

use futures::future::BoxFuture;
use opentelemetry::Context;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;

use super::headers::kafka_headers_from;
use crate::kafka::producer::FutureProducer;
use crate::relay::config::KeySource;
use crate::relay::hop::{Dress, SendError, SinkClient};
use crate::relay::message::{Inbound, Translation};

/// How long librdkafka may take to deliver a record (its own retries
/// included) before the send counts as failed and the hop retries it.
const DELIVERY_LIMIT: Duration = Duration::from_secs(30);

/// A route's Kafka destination.
pub(crate) struct KafkaSink {
    pub(crate) producer: FutureProducer,
    pub(crate) topic: String,
    /// Where the record key comes from.
    pub(crate) key: KeySource,
    pub(crate) translation: Translation,
}

impl SinkClient for KafkaSink {
    fn send<'a>(
        &'a self,
        parent: &'a Context,
        message: &'a Inbound,
        dress: Dress<'a>,
    ) -> BoxFuture<'a, Result<(), SendError>> {
        Box::pin(async move {
            let record_key = self.record_key(message)?;
            let mut headers = if dress.is_minimal() {
                OwnedHeaders::new()
            } else {
                kafka_headers_from(&message.headers, &|n| self.translation.is_trace_header(n))
            };
            for (name, value) in dress.reason() {
                headers = headers.insert(Header {
                    key: name,
                    value: Some(value.as_bytes()),
                });
            }
            let mut record: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(&self.topic).headers(headers);
            if let Some(payload) = &message.payload {
                record = record.payload(payload.as_slice());
            }
            if let Some(key) = &record_key {
                record = record.key(key);
            }
            if let Some(ts) = message.timestamp_ms {
                record = record.timestamp(ts);
            }
            self.producer
                .send_under(Some(parent), record, DELIVERY_LIMIT)
                .await
                .map(drop)
                .map_err(|(err, _)| SendError {
                    error_type: crate::kafka::error_type(&err),
                    message: err.to_string(),
                    permanent: kafka_error_is_permanent(&err),
                })
        })
    }
}

impl KafkaSink {
    /// The Kafka record key: the source's key by default (absent stays
    /// absent), or a fixed value, or a header (missing = an error).
    /// Borrowed: each attempt reads it again, nothing is copied.
    fn record_key<'m>(&'m self, message: &'m Inbound) -> Result<Option<&'m [u8]>, SendError> {
        match &self.key {
            KeySource::SourceKey => Ok(message.source_key(self.translation.key_mapping)),
            KeySource::Fixed(fixed) => Ok(Some(fixed.as_bytes())),
            KeySource::Header(name) => {
                use crate::propagation::HeaderReader;
                message.headers.header_bytes(name).map(Some).ok_or_else(|| {
                    SendError::permanent(
                        "key_missing",
                        format!("header {name} is missing (it is the Kafka key)"),
                    )
                })
            }
        }
    }
}

/// Kafka errors that say the record itself can never be written.
fn kafka_error_is_permanent(err: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as Code;
    matches!(
        err.rdkafka_error_code(),
        Some(
            Code::MessageSizeTooLarge
                | Code::InvalidMessageSize
                | Code::InvalidMessage
                | Code::InvalidRecord
                | Code::BadMessage
        )
    )
}
