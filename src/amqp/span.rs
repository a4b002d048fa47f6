//! What an AMQP span says of one delivery: built here once, for the traced
//! channel's deliveries ([`super::Consumer`], `basic_get`) and the relay's
//! AMQP source alike.

use std::time::{Duration, UNIX_EPOCH};

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable};
use opentelemetry::KeyValue;

use super::REDELIVERED_ATTRIBUTE;
use super::carrier::AmqpHeaderExtractor;
use crate::dead_letter::{self, DEATH_COUNT_ATTRIBUTE, DELIVERY_COUNT_ATTRIBUTE, REASON_ATTRIBUTE};
use crate::instrument::{Instrumentation, Received};
use crate::metrics::SeriesOf;
use crate::semconv::{AttributeRules, Destination, Endpoint, MessagingAttributes, Operation};

/// A delivery, as far as its span is concerned.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Delivered<'a> {
    pub(crate) exchange: &'a str,
    pub(crate) routing_key: &'a str,
    pub(crate) queue: &'a str,
    pub(crate) delivery_tag: u64,
    pub(crate) redelivered: bool,
    pub(crate) properties: &'a BasicProperties,
    pub(crate) body_len: usize,
}

/// The span of `delivery` for `operation` (`process`, or `receive` for
/// `basic.get`): its name, when the message was produced, and its metric
/// series (the process series with `extra`, the relay's route).
pub(crate) fn received(
    delivery: &Delivered<'_>,
    operation: Operation,
    endpoint: &Endpoint,
    instrumentation: &Instrumentation,
    extra: Option<(&'static str, &str)>,
) -> Received {
    let destination =
        Destination::rabbitmq_queue(delivery.exchange, delivery.routing_key, delivery.queue);
    Received {
        name: operation.shared_span_name(&destination),
        produced_at: super::published_at_ms(delivery.properties)
            .map(|ms| UNIX_EPOCH + Duration::from_millis(ms)),
        process_series: instrumentation.series_of(SeriesOf {
            operation: Operation::Process,
            destination: &destination,
            group: None,
            endpoint,
            extra,
        }),
    }
}

/// The span's attributes: the destination, delivery tag, message id,
/// conversation id (`conversation_id` when the caller knows a better one
/// than the `correlation_id` property — the relay's correlation), the
/// redelivered flag and the connection's endpoint; the body size when
/// `body_size`.
pub(crate) fn attributes(
    delivery: &Delivered<'_>,
    operation: Operation,
    endpoint: &Endpoint,
    rules: &AttributeRules,
    body_size: bool,
    conversation_id: Option<&str>,
) -> Vec<KeyValue> {
    let destination =
        Destination::rabbitmq_queue(delivery.exchange, delivery.routing_key, delivery.queue);
    let properties = delivery.properties;
    let correlation_id = properties.correlation_id().as_ref().map(|id| id.as_str());
    let mut attributes = MessagingAttributes::new(operation, &destination, rules)
        .delivery_tag(delivery.delivery_tag)
        .message_id(properties.message_id().as_ref().map(|id| id.as_str()))
        .conversation_id(conversation_id.or(correlation_id));
    if body_size {
        attributes = attributes.body_size(delivery.body_len);
    }
    if delivery.redelivered {
        attributes = attributes.flag(REDELIVERED_ATTRIBUTE);
    }
    let empty = FieldTable::default();
    let headers = properties.headers().as_ref().unwrap_or(&empty);
    let reader = AmqpHeaderExtractor(headers);
    let mut attributes = endpoint
        .apply(attributes.captured_headers(&reader))
        .into_vec();
    attributes.extend(dead_letter::relay_dead_letter_attributes(&reader));
    attributes.extend(broker_history(headers));
    attributes
}

/// What RabbitMQ says of earlier lives of the message: `x-death` (the
/// counts summed, and the latest reason unless the relay's own reason is
/// already there) and a quorum queue's `x-delivery-count`.
fn broker_history(headers: &FieldTable) -> Vec<KeyValue> {
    let mut attributes = Vec::new();
    let inner = headers.inner();
    if let Some(AMQPValue::FieldArray(deaths)) = inner.get("x-death") {
        let mut count = 0i64;
        let mut reason = None;
        for death in deaths.as_slice() {
            if let AMQPValue::FieldTable(death) = death {
                count =
                    count.saturating_add(death.inner().get("count").and_then(as_i64).unwrap_or(1));
                if reason.is_none()
                    && let Some(AMQPValue::LongString(text)) = death.inner().get("reason")
                {
                    reason = Some(text.to_string());
                }
            }
        }
        attributes.push(KeyValue::new(DEATH_COUNT_ATTRIBUTE, count));
        if let Some(reason) = reason
            && headers.inner().get(dead_letter::headers::ERROR).is_none()
        {
            attributes.push(KeyValue::new(REASON_ATTRIBUTE, reason));
        }
    }
    if let Some(count) = inner.get("x-delivery-count").and_then(as_i64) {
        attributes.push(KeyValue::new(DELIVERY_COUNT_ATTRIBUTE, count));
    }
    attributes
}

/// An AMQP integer of any width.
fn as_i64(value: &AMQPValue) -> Option<i64> {
    match value {
        AMQPValue::ShortShortInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortShortUInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortUInt(v) => Some(i64::from(*v)),
        AMQPValue::LongInt(v) => Some(i64::from(*v)),
        AMQPValue::LongUInt(v) => Some(i64::from(*v)),
        AMQPValue::LongLongInt(v) => Some(*v),
        _ => None,
    }
}
