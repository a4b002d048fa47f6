//! The attribute keys of each supported version of the messaging semantic
//! conventions: one table per version, the only place a key is spelled.
//!
//! Sources: v1.44 — `docs/messaging/*.md` at tag v1.44.0 of
//! open-telemetry/semantic-conventions (the `opentelemetry-semantic-conventions`
//! crate's constants, which follow it for these keys); v1.45 — the registry
//! of `@opentelemetry/semantic-conventions` 1.45.0, whose deprecation notes
//! say `messaging.system` → `messaging.system.name`, `messaging.kafka.*` →
//! `kafka.*`, `messaging.rabbitmq.*` → `rabbitmq.*`; pre-1.26 — the keys
//! `OTEL_SEMCONV_STABILITY_OPT_IN=messaging/dup` has always added.

use opentelemetry_semantic_conventions::attribute as attr;

/// Which version of the messaging conventions names the attributes: the
/// table a dashboard was built against.
///
/// ```
/// use tracebridge::semconv::SemconvVersion;
/// assert_eq!(SemconvVersion::parse("v1.44.0"), Ok(SemconvVersion::V1_44));
/// assert_eq!(SemconvVersion::default().keys().system, "messaging.system.name");
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SemconvVersion {
    /// v1.45: `messaging.system.name`, `kafka.*`, `rabbitmq.*`. The default.
    #[default]
    V1_45,
    /// v1.44: `messaging.system`, `messaging.kafka.*`, `messaging.rabbitmq.*`
    /// (tracebridge's keys before v1.45 became the default).
    V1_44,
    /// The keys before v1.26 (`messaging.operation`,
    /// `messaging.kafka.message.offset`, `net.peer.name`, …).
    Pre1_26,
}

/// The environment variable that pins the version (the relay's config key
/// is `[telemetry] semconv_version`).
pub const SEMCONV_VERSION_ENV: &str = "TRACEBRIDGE_SEMCONV_VERSION";

/// A version this build does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown semantic-conventions version {given:?}: expected 1.45, 1.44 or pre-1.26")]
pub struct UnknownSemconvVersion {
    /// What was given.
    pub given: String,
}

impl SemconvVersion {
    /// Every supported version, newest first.
    pub const ALL: [SemconvVersion; 3] = [
        SemconvVersion::V1_45,
        SemconvVersion::V1_44,
        SemconvVersion::Pre1_26,
    ];

    /// Parses `1.45`, `v1.45`, `1.45.0` (likewise 1.44) or `pre-1.26`.
    pub fn parse(text: &str) -> Result<Self, UnknownSemconvVersion> {
        let trimmed = text.trim();
        let bare = trimmed.strip_prefix('v').unwrap_or(trimmed);
        let bare = bare.strip_suffix(".0").unwrap_or(bare);
        match bare {
            "1.45" => Ok(SemconvVersion::V1_45),
            "1.44" => Ok(SemconvVersion::V1_44),
            "pre-1.26" => Ok(SemconvVersion::Pre1_26),
            _ => Err(UnknownSemconvVersion {
                given: text.to_owned(),
            }),
        }
    }

    /// How configuration writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            SemconvVersion::V1_45 => "1.45",
            SemconvVersion::V1_44 => "1.44",
            SemconvVersion::Pre1_26 => "pre-1.26",
        }
    }

    /// The schema URL of the instrumentation scope.
    pub fn schema_url(self) -> &'static str {
        match self {
            SemconvVersion::V1_45 => "https://opentelemetry.io/schemas/1.45.0",
            SemconvVersion::V1_44 => "https://opentelemetry.io/schemas/1.44.0",
            SemconvVersion::Pre1_26 => "https://opentelemetry.io/schemas/1.24.0",
        }
    }

    /// This version's keys.
    pub fn keys(self) -> &'static Keys {
        match self {
            SemconvVersion::V1_45 => &V1_45,
            SemconvVersion::V1_44 => &V1_44,
            SemconvVersion::Pre1_26 => &PRE_1_26,
        }
    }
}

/// The attribute keys of one version; `None` where that version has no
/// such attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keys {
    /// The messaging system (`kafka`, `rabbitmq`).
    pub system: &'static str,
    /// The system-specific operation name (`send`, `poll`, `ack`, …).
    pub operation_name: Option<&'static str>,
    /// The operation type (`send`, `receive`, `process`, `settle`).
    pub operation_type: Option<&'static str>,
    /// The pre-1.26 single operation key (`publish`, `receive`, `process`).
    pub legacy_operation: Option<&'static str>,
    /// The destination (topic, `exchange:routing_key`).
    pub destination_name: &'static str,
    /// The partition, and whether it is written as a string (1.26+) or an
    /// integer (before).
    pub partition: (&'static str, PartitionType),
    /// The consumer group.
    pub consumer_group: &'static str,
    /// A Kafka record's offset.
    pub kafka_offset: &'static str,
    /// A Kafka record's key.
    pub kafka_key: &'static str,
    /// A Kafka tombstone (null payload).
    pub kafka_tombstone: &'static str,
    /// A RabbitMQ routing key.
    pub rabbitmq_routing_key: &'static str,
    /// A RabbitMQ delivery tag.
    pub rabbitmq_delivery_tag: Option<&'static str>,
    /// The message id.
    pub message_id: &'static str,
    /// The conversation (correlation) id.
    pub conversation_id: &'static str,
    /// The client id.
    pub client_id: &'static str,
    /// The body size in bytes.
    pub body_size: &'static str,
    /// A batch's message count.
    pub batch_count: &'static str,
    /// The broker's address.
    pub server_address: &'static str,
    /// The broker's port.
    pub server_port: &'static str,
}

/// How a version writes the partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionType {
    /// `"2"` (1.26+: `messaging.destination.partition.id`).
    String,
    /// `2` (before: `messaging.kafka.destination.partition`).
    Int,
}

/// v1.44, the crate's constants.
pub(super) const V1_44: Keys = Keys {
    system: attr::MESSAGING_SYSTEM,
    operation_name: Some(attr::MESSAGING_OPERATION_NAME),
    operation_type: Some(attr::MESSAGING_OPERATION_TYPE),
    legacy_operation: None,
    destination_name: attr::MESSAGING_DESTINATION_NAME,
    partition: (
        attr::MESSAGING_DESTINATION_PARTITION_ID,
        PartitionType::String,
    ),
    consumer_group: attr::MESSAGING_CONSUMER_GROUP_NAME,
    kafka_offset: attr::MESSAGING_KAFKA_OFFSET,
    kafka_key: attr::MESSAGING_KAFKA_MESSAGE_KEY,
    kafka_tombstone: attr::MESSAGING_KAFKA_MESSAGE_TOMBSTONE,
    rabbitmq_routing_key: attr::MESSAGING_RABBITMQ_DESTINATION_ROUTING_KEY,
    rabbitmq_delivery_tag: Some(attr::MESSAGING_RABBITMQ_MESSAGE_DELIVERY_TAG),
    message_id: attr::MESSAGING_MESSAGE_ID,
    conversation_id: attr::MESSAGING_MESSAGE_CONVERSATION_ID,
    client_id: attr::MESSAGING_CLIENT_ID,
    body_size: attr::MESSAGING_MESSAGE_BODY_SIZE,
    batch_count: attr::MESSAGING_BATCH_MESSAGE_COUNT,
    server_address: attr::SERVER_ADDRESS,
    server_port: attr::SERVER_PORT,
};

/// v1.45: v1.44 with the system renamed and the Kafka and RabbitMQ keys
/// moved to their own namespaces (the crate has no constants for them yet).
pub(super) const V1_45: Keys = Keys {
    system: "messaging.system.name",
    kafka_offset: "kafka.offset",
    kafka_key: "kafka.message.key",
    kafka_tombstone: "kafka.message.tombstone",
    rabbitmq_routing_key: "rabbitmq.destination.routing_key",
    rabbitmq_delivery_tag: Some("rabbitmq.message.delivery_tag"),
    ..V1_44
};

/// Before v1.26: what `messaging/dup` adds beside the chosen version's keys.
pub(super) const PRE_1_26: Keys = Keys {
    system: attr::MESSAGING_SYSTEM,
    operation_name: None,
    operation_type: None,
    legacy_operation: Some("messaging.operation"),
    destination_name: attr::MESSAGING_DESTINATION_NAME,
    partition: ("messaging.kafka.destination.partition", PartitionType::Int),
    consumer_group: "messaging.kafka.consumer.group",
    kafka_offset: "messaging.kafka.message.offset",
    kafka_key: attr::MESSAGING_KAFKA_MESSAGE_KEY,
    kafka_tombstone: attr::MESSAGING_KAFKA_MESSAGE_TOMBSTONE,
    rabbitmq_routing_key: attr::MESSAGING_RABBITMQ_DESTINATION_ROUTING_KEY,
    rabbitmq_delivery_tag: None,
    message_id: attr::MESSAGING_MESSAGE_ID,
    conversation_id: attr::MESSAGING_MESSAGE_CONVERSATION_ID,
    client_id: "messaging.client_id",
    body_size: "messaging.message.payload_size_bytes",
    batch_count: attr::MESSAGING_BATCH_MESSAGE_COUNT,
    server_address: "net.peer.name",
    server_port: "net.peer.port",
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_in_the_ways_people_write_them() {
        for (text, version) in [
            ("1.45", SemconvVersion::V1_45),
            ("v1.45.0", SemconvVersion::V1_45),
            (" 1.44 ", SemconvVersion::V1_44),
            ("pre-1.26", SemconvVersion::Pre1_26),
        ] {
            assert_eq!(SemconvVersion::parse(text), Ok(version), "{text}");
        }
        let err = SemconvVersion::parse("1.46").expect_err("unknown");
        assert!(err.to_string().contains("1.45, 1.44 or pre-1.26"), "{err}");
    }
}
