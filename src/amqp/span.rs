//! What an AMQP span says of one delivery: built here once, for
//! [`super::TracedConsumer`], [`super::TracedReceiver`] and the relay's
//! AMQP source alike.

use std::time::{Duration, UNIX_EPOCH};

use lapin::BasicProperties;
use opentelemetry::KeyValue;
use opentelemetry_semantic_conventions::attribute as attr;

use super::REDELIVERED_ATTRIBUTE;
use crate::instrument::Received;
use crate::semconv::{Destination, Endpoint, MessagingAttributes, Operation, Stability, System};

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
/// `basic.get`): its name, when the message was produced, and the
/// queue-time metric's attributes.
pub(crate) fn received(delivery: &Delivered<'_>, operation: Operation) -> Received {
    let destination =
        Destination::rabbitmq_queue(delivery.exchange, delivery.routing_key, delivery.queue);
    Received {
        name: operation.shared_span_name(&destination),
        produced_at: delivery
            .properties
            .timestamp()
            .map(|ts| UNIX_EPOCH + Duration::from_millis(super::timestamp_ms(ts))),
        metric_attributes: vec![
            KeyValue::new(attr::MESSAGING_SYSTEM, System::RabbitMq.as_str()),
            KeyValue::new(attr::MESSAGING_DESTINATION_NAME, destination.name()),
        ],
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
    stability: Stability,
    body_size: bool,
    conversation_id: Option<&str>,
) -> Vec<KeyValue> {
    let destination =
        Destination::rabbitmq_queue(delivery.exchange, delivery.routing_key, delivery.queue);
    let properties = delivery.properties;
    let correlation_id = properties.correlation_id().as_ref().map(|id| id.as_str());
    let mut attributes = MessagingAttributes::new(operation, &destination, stability)
        .delivery_tag(delivery.delivery_tag)
        .message_id(properties.message_id().as_ref().map(|id| id.as_str()))
        .conversation_id(conversation_id.or(correlation_id));
    if body_size {
        attributes = attributes.body_size(delivery.body_len);
    }
    if delivery.redelivered {
        attributes = attributes.flag(REDELIVERED_ATTRIBUTE);
    }
    endpoint.apply(attributes).into_vec()
}
