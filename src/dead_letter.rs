//! Retries, redeliveries and dead letters, as the spans record them: the
//! relay's reason headers on a dead letter, and the attribute names that
//! carry attempt and death counts.
//!
//! The conventions have no generic retry attribute (only system-specific
//! ones, like `messaging.gcp_pubsub.message.delivery_attempt`), so these
//! live in tracebridge's own namespace, where a later spec name can never
//! collide with them:
//!
//! | attribute | type | on |
//! |---|---|---|
//! | `tracebridge.send.attempt` | int | each relay PRODUCER span (1, 2, 3… for retries of one message) |
//! | `tracebridge.dead_letter.reason` | string | the relay's dead-letter PRODUCER span; a consumer span of a dead letter (the relay's `x-tracebridge-error`, or RabbitMQ's `x-death` reason) |
//! | `tracebridge.dead_letter.attempts` | int | a consumer span of a relay dead letter: the attempts made before it |
//! | `tracebridge.dead_letter.count` | int | a consumer span of a RabbitMQ dead letter: the `x-death` counts, summed |
//! | `tracebridge.delivery.count` | int | a consumer span of a quorum-queue message: `x-delivery-count` (earlier failed deliveries) |
//! | `tracebridge.rabbitmq.redelivered` | bool | a consumer span of an AMQP message the broker redelivered |

use opentelemetry::KeyValue;

use crate::propagation::HeaderReader;

/// Header names on the relay's dead letters.
pub mod headers {
    /// Why the message was dead-lettered (the last error).
    pub const ERROR: &str = "x-tracebridge-error";
    /// The route that dead-lettered the message.
    pub const ROUTE: &str = "x-tracebridge-route";
    /// Where the message came from (`kafka topic[partition]@offset` or
    /// `amqp queue NAME delivery TAG`).
    pub const SOURCE: &str = "x-tracebridge-source";
    /// How many attempts were made.
    pub const ATTEMPTS: &str = "x-tracebridge-attempts";
    /// What a dead letter had to leave out of the original.
    pub const LEFT_OUT: &str = "x-tracebridge-left-out";
}

/// A relay PRODUCER span's attempt number (1-based).
pub const SEND_ATTEMPT_ATTRIBUTE: &str = "tracebridge.send.attempt";
/// Why a message was dead-lettered.
pub const REASON_ATTRIBUTE: &str = "tracebridge.dead_letter.reason";
/// The attempts the relay made before dead-lettering.
pub const ATTEMPTS_ATTRIBUTE: &str = "tracebridge.dead_letter.attempts";
/// How many times RabbitMQ dead-lettered the message (`x-death` counts).
pub const DEATH_COUNT_ATTRIBUTE: &str = "tracebridge.dead_letter.count";
/// A quorum queue's `x-delivery-count`.
pub const DELIVERY_COUNT_ATTRIBUTE: &str = "tracebridge.delivery.count";

/// The longest reason recorded (an error chain can be long).
const REASON_MAX: usize = 512;

/// What a consumer span records of a relay dead letter: the reason and the
/// attempts, when the headers carry them.
pub fn relay_dead_letter_attributes(headers: &(impl HeaderReader + ?Sized)) -> Vec<KeyValue> {
    let text = |name| {
        headers
            .header_bytes(name)
            .and_then(|v| std::str::from_utf8(v).ok())
    };
    let mut attributes = Vec::new();
    if let Some(reason) = text(headers::ERROR) {
        attributes.push(KeyValue::new(REASON_ATTRIBUTE, bounded(reason)));
    }
    if let Some(attempts) = text(headers::ATTEMPTS).and_then(|a| a.trim().parse::<i64>().ok()) {
        attributes.push(KeyValue::new(ATTEMPTS_ATTRIBUTE, attempts));
    }
    attributes
}

/// `text`, cut at a character boundary to at most [`REASON_MAX`] bytes.
pub(crate) fn bounded(text: &str) -> String {
    if text.len() <= REASON_MAX {
        return text.to_owned();
    }
    let mut end = REASON_MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::propagation::HeaderVec;

    #[test]
    fn a_relay_dead_letter_gives_its_reason_and_attempts() {
        let mut headers = HeaderVec::default();
        headers.push(headers::ERROR, "broker down".as_bytes());
        headers.push(headers::ATTEMPTS, "3".as_bytes());
        let attributes = relay_dead_letter_attributes(&headers);
        assert_eq!(
            attributes,
            vec![
                KeyValue::new(REASON_ATTRIBUTE, "broker down"),
                KeyValue::new(ATTEMPTS_ATTRIBUTE, 3i64),
            ]
        );
        assert!(relay_dead_letter_attributes(&HeaderVec::default()).is_empty());
        let long = "é".repeat(400);
        assert!(bounded(&long).len() <= REASON_MAX + "…".len());
    }
}
