//! AMQP 0-9-1 (lapin, RabbitMQ) integration.
//!
//! * [`TracedPublisher`]: publishes with confirms, a PRODUCER span
//!   `publish {exchange}:{routing_key}` per message, ended by the confirm;
//!   many publishes may be in flight at once ([`PendingConfirm`]).
//! * [`TracedConsumer`]: deliveries with their creation context and a
//!   CONSUMER span `process {exchange}:{routing_key}:{queue}`; the handler's
//!   result decides ack / nack / reject, each a CLIENT settle span.
//! * [`TracedReceiver`]: `basic.get` with a CLIENT `receive {queue}` span
//!   linked to the message.
//! * [`AmqpHeaderExtractor`] / [`AmqpHeaderInjector`]: the header carriers.

pub(crate) mod carrier;
mod consumer;
mod publisher;
pub(crate) mod span;

use std::str::FromStr;

pub use carrier::{AmqpHeaderExtractor, AmqpHeaderInjector};
pub use consumer::{
    OnError, REDELIVERED_ATTRIBUTE, TracedConsumer, TracedDelivery, TracedReceiver,
};
pub use publisher::{PendingConfirm, TracedPublisher};

use crate::semconv::Endpoint;

/// `server.address` / `server.port` from an `amqp://` URL (nothing when the
/// URL does not parse; the connection itself reports that).
pub fn endpoint(url: &str) -> Endpoint {
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
