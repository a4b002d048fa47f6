//! AMQP message properties across brokers. Leaving AMQP for Kafka, each
//! property the record has no field for travels as a header named
//! `amqp-` and the property's name in the AMQP 0-9-1 specification
//! (`amqp-content-encoding: gzip`); entering AMQP from Kafka, those headers
//! become the properties again (and leave the header table), so a round
//! trip AMQP → Kafka → AMQP restores them. Between two AMQP brokers the
//! properties are copied.
//!
//! Two exceptions, both documented: the relay publishes every message
//! persistent (`delivery-mode` 2: at-least-once survives a broker
//! restart), carrying an original `delivery-mode` as a header; and
//! `user-id` always travels as the header `amqp-user-id`, because RabbitMQ
//! refuses a publish whose `user-id` is not the publishing connection's
//! user (and closes the channel, with every neighbour's confirm).

use std::borrow::Cow;

use lapin::BasicProperties;
use lapin::types::ShortString;

use crate::propagation::HeaderReader;

/// The header that carries the original `delivery-mode`.
pub(crate) const DELIVERY_MODE: &str = "amqp-delivery-mode";
/// The header that carries `user-id`, on both brokers.
pub(crate) const USER_ID: &str = "amqp-user-id";

/// A short-string property: its header, and how to read and set it.
struct ShortProperty {
    header: &'static str,
    get: fn(&BasicProperties) -> &Option<ShortString>,
    set: fn(BasicProperties, ShortString) -> BasicProperties,
}

/// The short-string properties carried as headers and restored from them.
const SHORT_PROPERTIES: [ShortProperty; 9] = [
    ShortProperty {
        header: "amqp-content-type",
        get: BasicProperties::content_type,
        set: BasicProperties::with_content_type,
    },
    ShortProperty {
        header: "amqp-content-encoding",
        get: BasicProperties::content_encoding,
        set: BasicProperties::with_content_encoding,
    },
    ShortProperty {
        header: "amqp-correlation-id",
        get: BasicProperties::correlation_id,
        set: BasicProperties::with_correlation_id,
    },
    ShortProperty {
        header: "amqp-reply-to",
        get: BasicProperties::reply_to,
        set: BasicProperties::with_reply_to,
    },
    ShortProperty {
        header: "amqp-expiration",
        get: BasicProperties::expiration,
        set: BasicProperties::with_expiration,
    },
    ShortProperty {
        header: "amqp-message-id",
        get: BasicProperties::message_id,
        set: BasicProperties::with_message_id,
    },
    ShortProperty {
        header: "amqp-type",
        get: BasicProperties::kind,
        set: BasicProperties::with_type,
    },
    ShortProperty {
        header: "amqp-app-id",
        get: BasicProperties::app_id,
        set: BasicProperties::with_app_id,
    },
    ShortProperty {
        header: "amqp-cluster-id",
        get: BasicProperties::cluster_id,
        set: BasicProperties::with_cluster_id,
    },
];

/// The header that carries `priority` (0 to 9 in RabbitMQ's use, any octet
/// on the wire), as decimal text.
const PRIORITY: &str = "amqp-priority";

/// Whether `name` is a header that entering AMQP turns back into a
/// property (and so leaves the table).
pub(crate) fn is_restored(name: &str) -> bool {
    name.eq_ignore_ascii_case(PRIORITY)
        || SHORT_PROPERTIES
            .iter()
            .any(|p| p.header.eq_ignore_ascii_case(name))
}

/// The Kafka headers for `properties`: every property set that a Kafka
/// record has no field for (the `timestamp` is the record's timestamp, the
/// `headers` table is copied header by header).
pub(crate) fn kafka_headers(properties: &BasicProperties) -> Vec<(&'static str, Cow<'_, [u8]>)> {
    let mut out: Vec<(&'static str, Cow<'_, [u8]>)> = SHORT_PROPERTIES
        .iter()
        .map(|p| (p.header, (p.get)(properties)))
        .chain([(USER_ID, properties.user_id())])
        .filter_map(|(header, value)| {
            let value = value.as_ref()?;
            Some((header, Cow::Borrowed(value.as_str().as_bytes())))
        })
        .collect();
    if let Some(priority) = properties.priority() {
        out.push((PRIORITY, Cow::Owned(priority.to_string().into_bytes())));
    }
    if let Some(mode) = properties.delivery_mode() {
        out.push((DELIVERY_MODE, Cow::Owned(mode.to_string().into_bytes())));
    }
    out
}

/// `base` with the properties restored from `headers` (a Kafka record's):
/// a value AMQP cannot carry (a short string over 255 bytes or not UTF-8,
/// a priority that is not an octet) is left out and described in the
/// second value.
pub(crate) fn restored_from(
    headers: &dyn HeaderReader,
    mut base: BasicProperties,
) -> (BasicProperties, Vec<String>) {
    let mut problems = Vec::new();
    for property in &SHORT_PROPERTIES {
        let Some(bytes) = headers.header_bytes(property.header) else {
            continue;
        };
        match std::str::from_utf8(bytes).ok().map(ShortString::try_new) {
            Some(Ok(value)) => base = (property.set)(base, value),
            _ => problems.push(format!(
                "header {} of {} bytes is not an AMQP short string (UTF-8, at most 255 bytes)",
                property.header,
                bytes.len()
            )),
        }
    }
    if let Some(bytes) = headers.header_bytes(PRIORITY) {
        match std::str::from_utf8(bytes)
            .ok()
            .and_then(|t| t.parse::<u8>().ok())
        {
            Some(priority) => base = base.with_priority(priority),
            None => problems.push(format!(
                "header {PRIORITY} is not a priority from 0 to 255: {:?}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(32)])
            )),
        }
    }
    (base, problems)
}

/// `base` with `source`'s properties (an AMQP delivery's) copied, but for
/// those the relay sets itself: the header table, the delivery mode, the
/// timestamp, and `user-id` (a header, see the module's comment).
pub(crate) fn copied_from(source: &BasicProperties, mut base: BasicProperties) -> BasicProperties {
    for property in &SHORT_PROPERTIES {
        if let Some(value) = (property.get)(source) {
            base = (property.set)(base, value.clone());
        }
    }
    if let Some(priority) = source.priority() {
        base = base.with_priority(*priority);
    }
    base
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::message::InboundHeaders;
    use rdkafka::message::{Header, OwnedHeaders};

    fn every_property() -> BasicProperties {
        BasicProperties::default()
            .with_content_type("application/json".into())
            .with_content_encoding("gzip".into())
            .with_delivery_mode(1)
            .with_priority(7)
            .with_correlation_id("c-1".into())
            .with_reply_to("replies".into())
            .with_expiration("60000".into())
            .with_message_id("m-1".into())
            .with_timestamp(1_700_000_000)
            .with_type("order.created".into())
            .with_user_id("guest".into())
            .with_app_id("checkout".into())
            .with_cluster_id("eu-1".into())
    }

    fn as_kafka(properties: &BasicProperties) -> InboundHeaders {
        InboundHeaders::Kafka(kafka_headers(properties).iter().fold(
            OwnedHeaders::new(),
            |h, (key, value)| {
                h.insert(Header {
                    key,
                    value: Some(value.as_ref()),
                })
            },
        ))
    }

    #[test]
    fn every_property_survives_amqp_to_kafka_to_amqp_but_those_the_relay_sets() {
        let original = every_property();
        let headers = kafka_headers(&original);
        let names: Vec<&str> = headers.iter().map(|(name, _)| *name).collect();
        assert_eq!(names.len(), 12, "{names:?}");
        assert!(names.iter().all(|n| n.starts_with("amqp-")));
        let persistent = BasicProperties::default().with_delivery_mode(2);
        let (restored, problems) = restored_from(&as_kafka(&original), persistent.clone());
        assert!(problems.is_empty(), "{problems:?}");
        // What the relay sets itself: persistent, the timestamp from the
        // record, user-id as a header (USER_ID, never restored).
        let expected = copied_from(&original, persistent);
        assert_eq!(restored, expected);
        assert_eq!(
            restored.content_encoding().as_ref().map(|s| s.as_str()),
            Some("gzip")
        );
        assert_eq!(restored.priority(), &Some(7));
        assert_eq!(
            restored.kind().as_ref().map(|s| s.as_str()),
            Some("order.created")
        );
        assert_eq!(restored.delivery_mode(), &Some(2));
        assert_eq!(restored.user_id(), &None);
        assert!(!is_restored(USER_ID) && !is_restored(DELIVERY_MODE));
        assert!(is_restored("AMQP-Content-Type") && is_restored("amqp-priority"));
    }

    #[test]
    fn what_amqp_cannot_carry_is_left_out_and_described() {
        let long = "x".repeat(300);
        let headers = InboundHeaders::Kafka(
            OwnedHeaders::new()
                .insert(Header {
                    key: "amqp-reply-to",
                    value: Some(long.as_bytes()),
                })
                .insert(Header {
                    key: "amqp-type",
                    value: Some(&[0xff, 0xfe][..]),
                })
                .insert(Header {
                    key: "amqp-priority",
                    value: Some(b"urgent"),
                })
                .insert(Header {
                    key: "amqp-app-id",
                    value: Some(b"ok"),
                }),
        );
        let (restored, problems) = restored_from(&headers, BasicProperties::default());
        assert_eq!(restored.app_id().as_ref().map(|s| s.as_str()), Some("ok"));
        assert_eq!(restored.reply_to(), &None);
        assert_eq!(
            problems,
            vec![
                "header amqp-reply-to of 300 bytes is not an AMQP short string (UTF-8, at most 255 bytes)",
                "header amqp-type of 2 bytes is not an AMQP short string (UTF-8, at most 255 bytes)",
                "header amqp-priority is not a priority from 0 to 255: \"urgent\"",
            ]
        );
    }
}
