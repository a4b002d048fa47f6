//! What a Kafka process span says of one consumed record: built here once,
//! for the consumer extension ([`super::process`]) and for the relay's
//! Kafka source alike.

use std::time::{Duration, UNIX_EPOCH};

use opentelemetry::KeyValue;

use crate::instrument::{Instrumentation, Received};
use crate::metrics::SeriesOf;
use crate::propagation::HeaderReader;
use crate::semconv::{AttributeRules, Destination, Endpoint, MessagingAttributes, Operation};

/// A consumed record, as far as its span is concerned.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Record<'a> {
    pub(crate) topic: &'a str,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) key: Option<&'a [u8]>,
    /// `None` for a tombstone (no payload at all).
    pub(crate) payload_len: Option<usize>,
    /// Producer (or log-append) timestamp, ms since the epoch.
    pub(crate) timestamp_ms: Option<i64>,
    pub(crate) group: Option<&'a str>,
}

/// The process span of `record`: `process {topic}`, when the record was
/// produced, and the queue-time metric's attributes.
pub(crate) fn received(
    record: &Record<'_>,
    endpoint: &Endpoint,
    instrumentation: &Instrumentation,
    extra: Option<(&'static str, &str)>,
) -> Received {
    let destination = Destination::kafka(record.topic);
    let process_series = instrumentation.series_of(SeriesOf {
        operation: Operation::Process,
        destination: &destination,
        group: record.group,
        endpoint,
        extra,
    });
    Received {
        name: Operation::Process.shared_span_name(&destination),
        produced_at: record
            .timestamp_ms
            .and_then(|ms| u64::try_from(ms).ok())
            .map(|ms| UNIX_EPOCH + Duration::from_millis(ms)),
        process_series,
    }
}

/// The process span's attributes: the consumer group, partition, offset,
/// key, tombstone flag and the client's endpoint; the body size when
/// `body_size`; `conversation_id` when the caller knows one (the relay's
/// correlation).
pub(crate) fn attributes(
    record: &Record<'_>,
    headers: &(impl HeaderReader + ?Sized),
    endpoint: &Endpoint,
    rules: &AttributeRules,
    body_size: bool,
    conversation_id: Option<&str>,
) -> Vec<KeyValue> {
    let destination = Destination::kafka(record.topic);
    let mut attributes = MessagingAttributes::new(Operation::Process, &destination, rules)
        .partition(record.partition)
        .kafka_offset(record.offset)
        .kafka_key(record.key)
        .conversation_id(conversation_id)
        .tombstone(record.payload_len.is_none());
    if let Some(group) = record.group {
        attributes = attributes.consumer_group(group);
    }
    if body_size {
        attributes = attributes.body_size(record.payload_len.unwrap_or(0));
    }
    let mut attributes = endpoint
        .apply(attributes.captured_headers(headers))
        .into_vec();
    attributes.extend(crate::dead_letter::relay_dead_letter_attributes(headers));
    attributes
}
