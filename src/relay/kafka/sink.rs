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
use crate::relay::hop::{DEAD_LETTER_LEFT_OUT, Dress, SendError, SinkClient};
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
            let dropped = dress.dropped(message).join("; ");
            if !dropped.is_empty() {
                headers = headers.insert(Header {
                    key: DEAD_LETTER_LEFT_OUT,
                    value: Some(dropped.as_bytes()),
                });
            }
            let timestamp = dress.timestamp_ms(message);
            check_timestamp(timestamp)?;
            let mut record: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(&self.topic).headers(headers);
            if let Some(payload) = dress.payload(message) {
                record = record.payload(payload);
            }
            if let Some(key) = &record_key {
                record = record.key(key);
            }
            if let Some(ts) = timestamp {
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

/// How far ahead of the relay's clock a record's timestamp may be: Kafka
/// 4's default `message.timestamp.after.max.ms`, one hour.
const TIMESTAMP_AHEAD_MAX_MS: i64 = 3_600_000;

/// A timestamp Kafka would refuse never reaches the wire: the broker
/// refuses the whole batch it travels in (`INVALID_TIMESTAMP`), its
/// neighbours with it, so the refusal says nothing about any one record.
fn check_timestamp(timestamp_ms: Option<i64>) -> Result<(), SendError> {
    let Some(ts) = timestamp_ms else {
        return Ok(());
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let ahead = ts.saturating_sub(now);
    if ahead > TIMESTAMP_AHEAD_MAX_MS {
        return Err(SendError::permanent(
            "invalid_timestamp",
            format!(
                "its timestamp ({ts} ms) is {} s ahead of this clock; Kafka refuses records more than {} s ahead (message.timestamp.after.max.ms)",
                ahead / 1000,
                TIMESTAMP_AHEAD_MAX_MS / 1000
            ),
        ));
    }
    Ok(())
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
