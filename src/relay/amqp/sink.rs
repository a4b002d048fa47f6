//! The AMQP side of a route's output: a publish per message (or dead
//! letter) on the reconnecting channel, confirmed by the broker. Whatever
//! AMQP cannot carry is found here, before the wire: a content header over
//! `frame_max` makes RabbitMQ close the whole connection, and every
//! neighbour's confirm with it.

use std::time::Duration;

use futures::future::BoxFuture;
use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, LongString, ShortString};
use opentelemetry::Context;

use super::channel::ReconnectingPublisher;
use super::headers::{AMQP_SHORT_STRING_MAX, amqp_headers_from, encoded_table_size};
use crate::relay::config::{KeyMapping, KeySource};
use crate::relay::hop::{DEAD_LETTER_LEFT_OUT, Dress, SendError, SinkClient};
use crate::relay::message::{Inbound, InboundHeaders, Origin, Translation, prefix};
use crate::relay::properties;

/// A route's AMQP destination.
pub(crate) struct AmqpSink {
    pub(crate) channel: ReconnectingPublisher,
    pub(crate) exchange: String,
    pub(crate) routing_key: KeySource,
    pub(crate) translation: Translation,
}

impl SinkClient for AmqpSink {
    fn send<'a>(
        &'a self,
        parent: &'a Context,
        message: &'a Inbound,
        dress: Dress<'a>,
    ) -> BoxFuture<'a, Result<(), SendError>> {
        Box::pin(async move {
            // A Kafka record's `amqp-*` headers become properties again.
            let from_kafka = matches!(message.headers, InboundHeaders::Kafka(_));
            let (mut headers, mut left_out) = if dress.is_minimal() {
                (lapin::types::FieldTable::default(), Vec::new())
            } else {
                amqp_headers_from(&message.headers, &|n| {
                    self.translation.is_trace_header(n)
                        || (from_kafka && properties::is_restored(n))
                })
            };
            if !left_out.is_empty() && matches!(dress, Dress::Message) {
                return Err(SendError::permanent(
                    "unrepresentable",
                    format!("AMQP cannot carry this message: {}", left_out.join("; ")),
                ));
            }
            let (properties, unrepresentable) = self.amqp_properties(message, dress)?;
            left_out.extend(unrepresentable);
            left_out.extend(dress.dropped(message));
            for (name, value) in dress.reason() {
                headers.insert(
                    (*name).into(),
                    AMQPValue::LongString(LongString::from(value.as_str())),
                );
            }
            if !left_out.is_empty() {
                headers.insert(
                    DEAD_LETTER_LEFT_OUT.into(),
                    AMQPValue::LongString(LongString::from(prefix(&left_out.join("; "), 1024))),
                );
            }
            let routing_key = self.routing_key(message)?;
            if routing_key.len() > AMQP_SHORT_STRING_MAX {
                return Err(SendError::permanent(
                    "unrepresentable",
                    format!(
                        "routing key of {} bytes (AMQP allows {AMQP_SHORT_STRING_MAX})",
                        routing_key.len()
                    ),
                ));
            }
            let open = self.channel.get().await;
            // A content header over the broker's frame_max makes
            // RabbitMQ close the whole connection (every neighbour's
            // confirm with it): such a message never reaches the wire.
            let frame_max = open.frame_max();
            let header_frame = CONTENT_HEADER_OVERHEAD + encoded_table_size(&headers);
            if frame_max > 0 && header_frame > frame_max as usize {
                return Err(SendError::permanent(
                    "message_too_large",
                    format!(
                        "its headers take {header_frame} bytes, over the broker's frame_max of {frame_max}"
                    ),
                ));
            }
            let options = BasicPublishOptions {
                // Unroutable messages come back as errors: never lost silently.
                mandatory: true,
                ..Default::default()
            };
            let published = match open
                .publisher
                .publish_with_headers(
                    parent,
                    &self.exchange,
                    routing_key,
                    options,
                    properties,
                    headers,
                    dress.payload(message).unwrap_or_default(),
                )
                .await
            {
                // A confirm that never comes (seen with lapin under
                // load) must not hold the hop forever: after the limit
                // the message is sent again (a duplicate at worst).
                Ok(pending) => match tokio::time::timeout(CONFIRM_LIMIT, pending.confirmed()).await
                {
                    Ok(confirmed) => confirmed,
                    Err(_) => {
                        return Err(SendError::transient(
                            "confirm_timeout",
                            format!("no publisher confirm within {CONFIRM_LIMIT:?}"),
                        ));
                    }
                },
                Err(err) => Err(err),
            };
            if published.is_err() {
                self.channel.recover(&open).await;
            }
            published.map_err(send_error)
        })
    }

    fn check(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.channel.check())
    }
}

impl AmqpSink {
    /// The routing key: fixed, the source's (an AMQP source's routing key,
    /// a Kafka source's key), or a header's value.
    fn routing_key<'m>(&'m self, message: &'m Inbound) -> Result<&'m str, SendError> {
        let missing = |what: String| SendError::permanent("routing_key_missing", what);
        match &self.routing_key {
            KeySource::Fixed(key) => Ok(key),
            KeySource::SourceKey => match &message.origin {
                Origin::Amqp { routing_key, .. } => Ok(routing_key.as_str()),
                Origin::Kafka { .. } => message
                    .kafka_key
                    .as_deref()
                    .and_then(|k| std::str::from_utf8(k).ok())
                    .ok_or_else(|| missing("the Kafka key is missing or not UTF-8".into())),
            },
            KeySource::Header(name) => {
                use crate::propagation::HeaderReader;
                message
                    .headers
                    .header_bytes(name)
                    .and_then(|v| std::str::from_utf8(v).ok())
                    .ok_or_else(|| missing(format!("header {name} is missing or not UTF-8")))
            }
        }
    }

    /// The outgoing AMQP properties: an AMQP source's copied, a Kafka
    /// record's restored from its `amqp-*` headers (`relay/properties.rs`),
    /// the Kafka key as `correlation_id` or `message_id` (`key_mapping`)
    /// where no header restored one, persistent, the timestamp. What AMQP
    /// cannot carry makes the message unrepresentable, or is left out of a
    /// dead letter (which must go through) and described in the second
    /// value.
    fn amqp_properties(
        &self,
        message: &Inbound,
        dress: Dress<'_>,
    ) -> Result<(BasicProperties, Vec<String>), SendError> {
        let persistent = BasicProperties::default().with_delivery_mode(2);
        let (mut properties, mut problems) = match &message.headers {
            InboundHeaders::Amqp(source) => {
                (properties::copied_from(source, persistent), Vec::new())
            }
            InboundHeaders::Kafka(_) => properties::restored_from(&message.headers, persistent),
        };
        // The property the Kafka key maps to, unless a header restored it.
        type Set = fn(BasicProperties, ShortString) -> BasicProperties;
        let mapped: Option<(&str, bool, Set)> = match self.translation.key_mapping {
            KeyMapping::CorrelationId => Some((
                "correlation_id",
                properties.correlation_id().is_none(),
                BasicProperties::with_correlation_id,
            )),
            KeyMapping::MessageId => Some((
                "message_id",
                properties.message_id().is_none(),
                BasicProperties::with_message_id,
            )),
            KeyMapping::None => None,
        };
        if let (Some(key), Some((what, true, set))) = (message.kafka_key.as_deref(), mapped) {
            match std::str::from_utf8(key).ok().map(ShortString::try_new) {
                Some(Ok(id)) => properties = set(properties, id),
                Some(Err(_)) => problems.push(format!(
                    "{what} of {} bytes (AMQP allows {AMQP_SHORT_STRING_MAX})",
                    key.len()
                )),
                // A key that is not text was never mapped.
                None => {}
            }
        }
        if !problems.is_empty() && matches!(dress, Dress::Message) {
            return Err(SendError::permanent(
                "unrepresentable",
                format!("AMQP cannot carry this message: {}", problems.join("; ")),
            ));
        }
        if let Some(ms) = dress
            .timestamp_ms(message)
            .and_then(|ms| u64::try_from(ms).ok())
        {
            properties = properties.with_timestamp(ms / 1000);
        }
        Ok((properties, problems))
    }
}

/// An AMQP content header frame's bytes besides its header table: frame
/// header and end (8), class, weight, body size and flags (14), and the
/// largest properties the relay sets (delivery mode, priority, timestamp,
/// nine short strings of at most 256 bytes each).
const CONTENT_HEADER_OVERHEAD: usize = 8 + 14 + 1 + 1 + 8 + 9 * 256;

/// How long an AMQP publisher confirm may take before the send counts as
/// failed (and is retried).
const CONFIRM_LIMIT: Duration = Duration::from_secs(30);

fn send_error(err: crate::Error) -> SendError {
    let (error_type, permanent) = match &err {
        // No queue is bound for it: the message itself is unroutable.
        crate::Error::Refused {
            refusal: refusal @ crate::error::Refusal::Returned { .. },
            ..
        } => (refusal.error_type().to_owned(), true),
        // The same `error.type` the publish span records for it.
        other => (other.error_type(), false),
    };
    SendError {
        error_type,
        message: crate::relay::hop::error_chain(&err),
        permanent,
    }
}
