//! RabbitMQ (AMQP 0-9-1), through lapin.
//!
//! This module is lapin's API with the entry points traced: import from
//! `tracebridge::amqp` where you imported from `lapin` — `Connection`,
//! `Channel`, `message::Delivery` are tracebridge's, everything else
//! (`options`, `types`, `BasicProperties`, `ConnectionProperties`, …) is
//! lapin's own, re-exported. Publishing and consuming both hang off the
//! channel, so a traced [`Channel`] covers both directions; it keeps
//! lapin's method names, argument order and results (`basic_publish`
//! returns an awaitable [`PublisherConfirm`], `basic_consume` a
//! [`Consumer`] that is a `Stream` of deliveries that read as lapin's), so
//! the worker's code does not change. The one line that does is the
//! handler call, wrapped in [`Delivery::in_span`](message::Delivery::in_span)
//! so the handler's work joins the message's trace.
//!
//! ```no_run
//! use futures::StreamExt;
//! use tracebridge::amqp::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions};
//! use tracebridge::amqp::types::FieldTable;
//! use tracebridge::amqp::{BasicProperties, Channel, Connection, ConnectionProperties};
//!
//! #[tracing::instrument(skip_all)]
//! async fn ship(channel: &Channel, order: &[u8]) -> anyhow::Result<()> {
//!     tracing::info!("shipping");
//!     channel
//!         .basic_publish("".into(), "shipments".into(), BasicPublishOptions::default(), order, BasicProperties::default())
//!         .await?
//!         .await?;
//!     Ok(())
//! }
//!
//! # async fn run() -> anyhow::Result<()> {
//! let connection = Connection::connect("amqp://127.0.0.1:5672/%2f", ConnectionProperties::default()).await?;
//! let channel = connection.create_channel().await?;
//! let mut consumer = channel
//!     .basic_consume("orders".into(), "shipper".into(), BasicConsumeOptions::default(), FieldTable::default())
//!     .await?;
//! while let Some(delivery) = consumer.next().await {
//!     let delivery = delivery?;
//!     match delivery.in_span(ship(&channel, &delivery.data)).await {
//!         Ok(()) => delivery.ack(BasicAckOptions::default()).await?,
//!         Err(_) => delivery.nack(BasicNackOptions::default()).await?,
//!     };
//! }
//! # Ok(()) }
//! ```
//!
//! [`AmqpHeaderExtractor`] / [`AmqpHeaderInjector`] are the header
//! carriers, for code that drives lapin itself.

pub(crate) mod carrier;
mod channel;
mod connection;
mod consumer;
mod publish;
pub(crate) mod span;

use std::str::FromStr;

pub use lapin::*;

pub use carrier::{AmqpHeaderExtractor, AmqpHeaderInjector};
pub use channel::Channel;
pub use connection::Connection;
pub use consumer::Consumer;
pub use publish::PublisherConfirm;

/// lapin's `message` module, with tracebridge's traced
/// [`Delivery`](message::Delivery) and
/// [`BasicGetMessage`](message::BasicGetMessage) in place of lapin's.
pub mod message {
    pub use lapin::message::*;

    pub use super::consumer::{BasicGetMessage, Delivery};
}

/// Whether a delivery was redelivered by the broker (set only when true).
pub const REDELIVERED_ATTRIBUTE: &str = "tracebridge.rabbitmq.redelivered";

use crate::semconv::Endpoint;

/// `server.address` / `server.port` from an `amqp://` URL (nothing when the
/// URL does not parse; the connection itself reports that).
pub(crate) fn endpoint(url: &str) -> Endpoint {
    match lapin::uri::AMQPUri::from_str(url) {
        Ok(uri) => Endpoint {
            address: Some(uri.authority.host.as_str().into()),
            port: Some(uri.authority.port),
            client_id: None,
        },
        Err(_) => Endpoint::default(),
    }
}

/// `error.type` for a lapin error: the kind of failure, without its details.
pub(crate) fn error_type(err: &lapin::Error) -> String {
    crate::instrument::variant_name(err.kind(), "AMQPError")
}

/// The header with the publish time in milliseconds: RabbitMQ's own name
/// for it (its message-timestamp plugin writes it). The `timestamp`
/// property has whole seconds, too coarse for a wait of milliseconds.
pub(crate) const TIMESTAMP_IN_MS_HEADER: &str = "timestamp_in_ms";

/// When the message was published, in milliseconds since the epoch: the
/// `timestamp_in_ms` header when there is one, else the `timestamp`
/// property (see [`timestamp_ms`]).
pub(crate) fn published_at_ms(properties: &lapin::BasicProperties) -> Option<u64> {
    use lapin::types::AMQPValue;
    let header = properties
        .headers()
        .as_ref()
        .and_then(|headers| headers.inner().get(TIMESTAMP_IN_MS_HEADER))
        .and_then(|value| match value {
            AMQPValue::LongLongInt(ms) => u64::try_from(*ms).ok(),
            AMQPValue::LongInt(ms) => u64::try_from(*ms).ok(),
            AMQPValue::LongUInt(ms) => Some(u64::from(*ms)),
            AMQPValue::Timestamp(ms) => Some(*ms),
            _ => None,
        });
    header.or_else(|| properties.timestamp().map(timestamp_ms))
}

/// An AMQP `timestamp` property in milliseconds since the epoch. AMQP 0-9-1
/// timestamps are POSIX seconds; some clients write milliseconds,
/// recognisable by their size (after 1973 in ms, before 5138 in s).
pub(crate) fn timestamp_ms(value: u64) -> u64 {
    if value > 100_000_000_000 {
        value
    } else {
        value.saturating_mul(1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_publish_time_prefers_the_millisecond_header() {
        use lapin::types::{AMQPValue, FieldTable};
        let seconds = lapin::BasicProperties::default().with_timestamp(1_700_000_000);
        assert_eq!(published_at_ms(&seconds), Some(1_700_000_000_000));
        let mut headers = FieldTable::default();
        headers.insert(
            TIMESTAMP_IN_MS_HEADER.into(),
            AMQPValue::LongLongInt(1_700_000_000_123),
        );
        let both = seconds.with_headers(headers);
        assert_eq!(published_at_ms(&both), Some(1_700_000_000_123));
        assert_eq!(published_at_ms(&lapin::BasicProperties::default()), None);
    }

    #[test]
    fn endpoints_come_from_the_url_without_credentials() {
        let e = endpoint("amqp://user:secret@rabbit.internal:5673/%2f");
        assert_eq!(e.address.as_deref(), Some("rabbit.internal"));
        assert_eq!(e.port, Some(5673));
        let e = endpoint("amqp://localhost");
        assert_eq!(
            (e.address.as_deref(), e.port),
            (Some("localhost"), Some(5672))
        );
        assert_eq!(endpoint("not a url"), Endpoint::default());
    }
}
