//! Every span kind's attributes under each version, with and without
//! `messaging/dup`, and the values left out.

use super::*;
use crate::semconv::{AttributePolicy, Conventions, SemconvVersion, Settlement};

fn get<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attrs
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| &kv.value)
}

/// The rules of `version`, keys and request ids recorded as is (the
/// policy has its own tests).
fn rules(version: SemconvVersion, dup: bool) -> AttributeRules {
    AttributeRules {
        conventions: Conventions {
            version,
            duplicate_pre_1_26: dup,
        },
        policy: AttributePolicy::record_all(),
    }
}

type Expected = &'static [(&'static str, &'static str)];

/// Each span kind's attributes, built as its transport builds them.
fn span_kinds(rules: &AttributeRules) -> Vec<(&'static str, Vec<KeyValue>)> {
    let topic = Destination::kafka("orders");
    let delivery = Destination::rabbitmq_queue("shop", "order.created", "work");
    let endpoint = Endpoint::from_servers("broker:9092", Some("svc"));
    vec![
        (
            "kafka send",
            endpoint
                .apply(
                    MessagingAttributes::new(Operation::Send, &topic, rules)
                        .kafka_key(Some(b"k-1"))
                        .partition(2)
                        .kafka_offset(42),
                )
                .into_vec(),
        ),
        (
            "kafka poll",
            MessagingAttributes::new(Operation::Receive, &topic, rules)
                .consumer_group("billing")
                .batch_count(5)
                .into_vec(),
        ),
        (
            "kafka process",
            MessagingAttributes::new(Operation::Process, &topic, rules)
                .partition(2)
                .kafka_offset(42)
                .kafka_key(Some(b"k-1"))
                .conversation_id(Some("req-9"))
                .tombstone(true)
                .consumer_group("billing")
                .into_vec(),
        ),
        (
            "kafka commit",
            MessagingAttributes::new(Operation::Settle(Settlement::Commit), &topic, rules)
                .consumer_group("billing")
                .partition(2)
                .kafka_offset(43)
                .into_vec(),
        ),
        (
            "rabbitmq publish",
            MessagingAttributes::new(
                Operation::Send,
                &Destination::rabbitmq("shop", "order.created"),
                rules,
            )
            .message_id(Some("m-1"))
            .conversation_id(Some("req-9"))
            .body_size(10)
            .into_vec(),
        ),
        (
            "rabbitmq process",
            MessagingAttributes::new(Operation::Process, &delivery, rules)
                .delivery_tag(7)
                .message_id(Some("m-1"))
                .into_vec(),
        ),
        (
            "rabbitmq ack",
            MessagingAttributes::new(Operation::Settle(Settlement::Ack), &delivery, rules)
                .delivery_tag(7)
                .into_vec(),
        ),
    ]
}

/// v1.45, from the registry's text (see `keys.rs` for the source).
const V1_45_SPANS: [Expected; 7] = [
    &[
        ("messaging.system.name", "kafka"),
        ("messaging.operation.name", "send"),
        ("messaging.operation.type", "send"),
        ("messaging.destination.name", "orders"),
        ("kafka.message.key", "k-1"),
        ("messaging.destination.partition.id", "2"),
        ("kafka.offset", "42"),
        ("server.address", "broker"),
        ("server.port", "9092"),
        ("messaging.client.id", "svc"),
    ],
    &[
        ("messaging.system.name", "kafka"),
        ("messaging.operation.name", "poll"),
        ("messaging.operation.type", "receive"),
        ("messaging.destination.name", "orders"),
        ("messaging.consumer.group.name", "billing"),
        ("messaging.batch.message_count", "5"),
    ],
    &[
        ("messaging.system.name", "kafka"),
        ("messaging.operation.name", "process"),
        ("messaging.operation.type", "process"),
        ("messaging.destination.name", "orders"),
        ("messaging.destination.partition.id", "2"),
        ("kafka.offset", "42"),
        ("kafka.message.key", "k-1"),
        ("messaging.message.conversation_id", "req-9"),
        ("kafka.message.tombstone", "true"),
        ("messaging.consumer.group.name", "billing"),
    ],
    &[
        ("messaging.system.name", "kafka"),
        ("messaging.operation.name", "commit"),
        ("messaging.operation.type", "settle"),
        ("messaging.destination.name", "orders"),
        ("messaging.consumer.group.name", "billing"),
        ("messaging.destination.partition.id", "2"),
        ("kafka.offset", "43"),
    ],
    &[
        ("messaging.system.name", "rabbitmq"),
        ("messaging.operation.name", "publish"),
        ("messaging.operation.type", "send"),
        ("messaging.destination.name", "shop:order.created"),
        ("rabbitmq.destination.routing_key", "order.created"),
        ("messaging.message.id", "m-1"),
        ("messaging.message.conversation_id", "req-9"),
        ("messaging.message.body.size", "10"),
    ],
    &[
        ("messaging.system.name", "rabbitmq"),
        ("messaging.operation.name", "process"),
        ("messaging.operation.type", "process"),
        ("messaging.destination.name", "shop:order.created:work"),
        ("rabbitmq.destination.routing_key", "order.created"),
        ("rabbitmq.message.delivery_tag", "7"),
        ("messaging.message.id", "m-1"),
    ],
    &[
        ("messaging.system.name", "rabbitmq"),
        ("messaging.operation.name", "ack"),
        ("messaging.operation.type", "settle"),
        ("rabbitmq.destination.routing_key", "order.created"),
        ("rabbitmq.message.delivery_tag", "7"),
    ],
];

/// The keys v1.44 spells differently from v1.45.
const V1_44_RENAMES: [(&str, &str); 6] = [
    ("messaging.system.name", "messaging.system"),
    ("kafka.offset", "messaging.kafka.offset"),
    ("kafka.message.key", "messaging.kafka.message.key"),
    (
        "kafka.message.tombstone",
        "messaging.kafka.message.tombstone",
    ),
    (
        "rabbitmq.destination.routing_key",
        "messaging.rabbitmq.destination.routing_key",
    ),
    (
        "rabbitmq.message.delivery_tag",
        "messaging.rabbitmq.message.delivery_tag",
    ),
];

/// Pre-1.26: the v1.44 key → its old name (None: the key did not exist
/// and is left out), and the old operation key added.
fn pre_1_26_name(key: &str) -> Option<&str> {
    Some(match key {
        "messaging.operation.name" | "rabbitmq.message.delivery_tag" => return None,
        "messaging.operation.type" => "messaging.operation",
        "messaging.system.name" => "messaging.system",
        "messaging.consumer.group.name" => "messaging.kafka.consumer.group",
        "messaging.destination.partition.id" => "messaging.kafka.destination.partition",
        "kafka.offset" => "messaging.kafka.message.offset",
        "kafka.message.key" => "messaging.kafka.message.key",
        "kafka.message.tombstone" => "messaging.kafka.message.tombstone",
        "rabbitmq.destination.routing_key" => "messaging.rabbitmq.destination.routing_key",
        "messaging.client.id" => "messaging.client_id",
        "messaging.message.body.size" => "messaging.message.payload_size_bytes",
        "server.address" => "net.peer.name",
        "server.port" => "net.peer.port",
        other => other,
    })
}

/// The pre-1.26 operation value of a v1.45 `messaging.operation.type`.
fn pre_1_26_value(key: &str, value: &str) -> String {
    match (key, value) {
        ("messaging.operation.type", "send") => "publish".to_owned(),
        _ => value.to_owned(),
    }
}

fn as_pairs(attrs: &[KeyValue]) -> Vec<(String, String)> {
    let mut pairs: Vec<_> = attrs
        .iter()
        .map(|kv| (kv.key.as_str().to_owned(), kv.value.as_str().into_owned()))
        .collect();
    pairs.sort();
    pairs
}

fn expected(version: SemconvVersion, table: Expected) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = table
        .iter()
        .filter_map(|(key, value)| match version {
            SemconvVersion::V1_45 => Some((key.to_string(), value.to_string())),
            SemconvVersion::V1_44 => {
                let renamed = V1_44_RENAMES
                    .iter()
                    .find(|(new, _)| new == key)
                    .map_or(*key, |(_, old)| *old);
                Some((renamed.to_owned(), value.to_string()))
            }
            SemconvVersion::Pre1_26 => {
                pre_1_26_name(key).map(|old| (old.to_owned(), pre_1_26_value(key, value)))
            }
        })
        .collect();
    pairs.sort();
    pairs
}

#[test]
fn every_span_kind_has_exactly_its_versions_attributes() {
    for version in SemconvVersion::ALL {
        let rules = rules(version, false);
        for ((kind, attrs), table) in span_kinds(&rules).into_iter().zip(V1_45_SPANS) {
            assert_eq!(
                as_pairs(&attrs),
                expected(version, table),
                "{kind} under {}",
                version.as_str()
            );
        }
    }
}

#[test]
fn messaging_dup_adds_the_pre_1_26_keys_beside_the_chosen_versions() {
    assert!(Conventions::opts_into_duplicates("http,messaging/dup"));
    assert!(!Conventions::opts_into_duplicates("messaging"));
    for version in [SemconvVersion::V1_45, SemconvVersion::V1_44] {
        let rules = rules(version, true);
        for ((kind, attrs), table) in span_kinds(&rules).into_iter().zip(V1_45_SPANS) {
            let mut want = expected(version, table);
            for old in expected(SemconvVersion::Pre1_26, table) {
                if !want.contains(&old) {
                    want.push(old);
                }
            }
            want.sort();
            assert_eq!(as_pairs(&attrs), want, "{kind} with messaging/dup");
            // The partition keeps its type under each key.
            if let Some(partition) = attrs
                .iter()
                .find(|kv| kv.key.as_str() == "messaging.kafka.destination.partition")
            {
                assert_eq!(partition.value, Value::I64(2), "{kind}");
            }
        }
    }
    // Pinned to pre-1.26, dup adds nothing.
    let pre = rules(SemconvVersion::Pre1_26, true);
    let alone = rules(SemconvVersion::Pre1_26, false);
    assert_eq!(span_kinds(&pre), span_kinds(&alone));
}

#[test]
fn binary_keys_false_tombstones_and_forbidden_values_are_left_out() {
    let all = rules(SemconvVersion::V1_45, false);
    let attrs = MessagingAttributes::new(Operation::Send, &Destination::kafka("t"), &all)
        .kafka_key(Some(&[0xff, 0x00]))
        .tombstone(false)
        .into_vec();
    assert!(get(&attrs, "kafka.message.key").is_none());
    assert!(get(&attrs, "kafka.message.tombstone").is_none());
    // The default policy: no key, no request id.
    let default = AttributeRules::default();
    let attrs = MessagingAttributes::new(Operation::Process, &Destination::kafka("t"), &default)
        .kafka_key(Some(b"user-42"))
        .conversation_id(Some("req-9"))
        .into_vec();
    assert!(get(&attrs, "kafka.message.key").is_none());
    assert!(get(&attrs, "messaging.message.conversation_id").is_none());
}

#[test]
fn metric_attributes_are_low_cardinality_only() {
    let rules = rules(SemconvVersion::V1_45, false);
    let attrs = MessagingAttributes::metric(
        Operation::Process,
        &Destination::kafka("orders"),
        Some("billing"),
        &Endpoint::from_servers("broker:9092", Some("svc")),
        &rules,
    )
    .into_vec();
    let want: Expected = &[
        ("messaging.system.name", "kafka"),
        ("messaging.operation.name", "process"),
        ("messaging.operation.type", "process"),
        ("messaging.destination.name", "orders"),
        ("messaging.consumer.group.name", "billing"),
        ("server.address", "broker"),
        ("server.port", "9092"),
    ];
    assert_eq!(as_pairs(&attrs), expected(SemconvVersion::V1_45, want));
}
