//! The attribute policy end to end, against the real brokers: a Kafka
//! record with key `user-42` and header `x-tenant: acme` goes through the
//! library's traced producer, a relay process (Kafka → RabbitMQ, whose
//! publish carries the key as AMQP `correlation_id`, the request id) and a
//! traced AMQP consumer. For each mode, what the four spans, the relay's
//! span file and its log (at debug) say of the key, the request id and the
//! captured header.
#![cfg(all(feature = "kafka", feature = "amqp"))]

mod common;

use std::time::Duration;

use common::amqp::Rabbit;
use common::flow::{RelayProcess, RelaySetup, kafka_to_amqp};
use common::spans::{self, attr};
use common::within;
use futures::StreamExt as _;
use opentelemetry::Context;
use opentelemetry::trace::FutureExt as _;
use rdkafka::message::{Header, OwnedHeaders};
use tracebridge::amqp::Channel;
use tracebridge::amqp::options::{BasicAckOptions, BasicConsumeOptions};
use tracebridge::amqp::types::FieldTable;
use tracebridge::kafka::producer::{FutureProducer, FutureRecord};
use tracebridge::semconv::{AttributePolicy, HashKey, Treatment};

const KEY: &str = "user-42";
const TENANT: &str = "acme";
const HASH_KEY: &str = "test-hash-key-0123456789";

/// What one run's spans said: (span, attribute) → value as text.
#[derive(Debug, Default)]
struct Seen {
    /// (which span, which attribute, the value if any).
    values: Vec<(&'static str, &'static str, Option<String>)>,
    /// The relay's span file and log, whole.
    relay_text: String,
}

impl Seen {
    fn get(&self, span: &str, attribute: &str) -> Option<String> {
        self.values
            .iter()
            .find(|(s, a, _)| *s == span && *a == attribute)
            .and_then(|(_, _, v)| v.clone())
    }
}

const WHERE: [(&str, &str); 7] = [
    ("library send", "kafka.message.key"),
    ("library send", "messaging.header.x_tenant"),
    ("relay process", "kafka.message.key"),
    ("relay process", "messaging.header.x_tenant"),
    ("relay publish", "messaging.message.conversation_id"),
    ("relay publish", "messaging.header.x_tenant"),
    ("library process", "messaging.message.conversation_id"),
];

/// One record through producer, relay and consumer under `policy` (the
/// library's) and `telemetry` (the relay's `[telemetry]` table).
async fn run(policy: AttributePolicy, telemetry: &str, prefix: &str) -> Seen {
    let policy = policy
        .with_capture(["x-tenant"])
        .build()
        .expect("a valid policy");
    let bootstrap = common::kafka_bootstrap();
    let topic = common::unique(prefix);
    common::kafka::create_topic(&topic, 1).await;
    let rabbit = Rabbit::new(prefix).await;
    let setup = RelaySetup::with_telemetry(
        16,
        &bootstrap,
        &kafka_to_amqp(prefix, &topic, &rabbit.exchange),
        telemetry,
    );
    let relay = RelayProcess::start_with_env(
        &setup.config,
        setup.port,
        &setup.spans,
        &[("RUST_LOG", "debug")],
    );
    relay.wait_ready(Duration::from_secs(60)).await;

    let cap = spans::capture();
    let instrumentation = cap.instrumentation().with_attribute_policy(policy.clone());
    let producer: FutureProducer = common::kafka::config().create().expect("producer");
    let producer = producer.with_instrumentation(instrumentation.clone());
    producer
        .send(
            FutureRecord::to(&topic)
                .key(KEY)
                .payload("{}")
                .headers(OwnedHeaders::new().insert(Header {
                    key: "x-tenant",
                    value: Some(TENANT),
                })),
            Duration::from_secs(30),
        )
        .with_context(Context::new())
        .await
        .map_err(|(e, _)| e)
        .expect("sent");
    let channel = Channel::from(rabbit.conn.create_channel().await.expect("channel"))
        .with_server(&common::amqp_url())
        .with_instrumentation(instrumentation);
    let mut consumer = channel
        .basic_consume(
            rabbit.queue.as_str().into(),
            common::unique("tag").as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let delivery = within("the relayed message", consumer.next())
        .await
        .expect("not cancelled")
        .expect("received");
    delivery
        .in_span(async { Ok::<_, std::io::Error>(()) })
        .await
        .expect("handled");
    delivery.ack(BasicAckOptions::default()).await.expect("ack");
    let log = relay.log.clone();
    relay.stop();

    let relay_spans = common::read_span_file(&setup.spans);
    let relay_span = |kind: i64| {
        relay_spans
            .iter()
            .find(|s| s["kind"] == kind)
            .cloned()
            .unwrap_or_else(|| panic!("a relay span of kind {kind}: {relay_spans:#?}"))
    };
    // OTLP kinds: 5 CONSUMER (process), 4 PRODUCER (publish).
    let (relay_process, relay_publish) = (relay_span(5), relay_span(4));
    let library_send = cap.one(&format!("send {topic}"));
    let library_process = cap
        .spans()
        .into_iter()
        .find(|s| s.span_kind == opentelemetry::trace::SpanKind::Consumer)
        .expect("the library's process span");
    let mut seen = Seen::default();
    for (span, attribute) in WHERE {
        let value = match span {
            "library send" => attr(&library_send, attribute).map(|v| text_of(&v)),
            "library process" => attr(&library_process, attribute).map(|v| text_of(&v)),
            "relay process" => json_attr(&relay_process, attribute),
            _ => json_attr(&relay_publish, attribute),
        };
        seen.values.push((span, attribute, value));
    }
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        log.contains("relay running"),
        "the relay's log was read: {log}"
    );
    seen.relay_text = std::fs::read_to_string(&setup.spans).expect("span file") + &log;
    rabbit.delete().await;
    seen
}

/// A string, or the first string of an array (captured headers).
fn text_of(value: &opentelemetry::Value) -> String {
    match value {
        opentelemetry::Value::Array(opentelemetry::Array::String(values)) => values
            .first()
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default(),
        other => other.as_str().into_owned(),
    }
}

/// An OTLP/JSON span's attribute as text.
fn json_attr(span: &serde_json::Value, key: &str) -> Option<String> {
    let kv = span["attributes"]
        .as_array()?
        .iter()
        .find(|kv| kv["key"] == key)?;
    let value = &kv["value"];
    value["stringValue"]
        .as_str()
        .or_else(|| value["arrayValue"]["values"][0]["stringValue"].as_str())
        .map(str::to_owned)
}

fn raw_value(attribute: &str) -> &'static str {
    if attribute.contains("tenant") {
        TENANT
    } else {
        KEY
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_is_records_every_value_verbatim() {
    let seen = run(
        AttributePolicy::record_all().with_captured_headers(Treatment::AsIs),
        "record_message_keys = \"as-is\"\nrecord_request_ids = \"as-is\"\ncapture_headers = [\"x-tenant\"]",
        "pol-asis",
    )
    .await;
    for (span, attribute) in WHERE {
        assert_eq!(
            seen.get(span, attribute).as_deref(),
            Some(raw_value(attribute)),
            "{span} {attribute}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hashed_values_group_across_relays_and_never_show_the_value() {
    let policy = || {
        AttributePolicy::default()
            .with_message_keys(Treatment::Hashed)
            .with_request_ids(Treatment::Hashed)
            .with_captured_headers(Treatment::Hashed)
            .with_hash_key(HashKey::new(HASH_KEY).expect("long enough"))
    };
    let telemetry = format!(
        "record_message_keys = \"hashed\"\nrecord_request_ids = \"hashed\"\n\
         record_captured_headers = \"hashed\"\ncapture_headers = [\"x-tenant\"]\n\
         attribute_hash_key = \"{HASH_KEY}\""
    );
    let first = run(policy(), &telemetry, "pol-hash-a").await;
    let second = run(policy(), &telemetry, "pol-hash-b").await;
    let expected = policy().build().expect("valid");
    for (span, attribute) in WHERE {
        let want = if attribute.contains("tenant") {
            expected.captured_header(TENANT)
        } else {
            expected.message_key(KEY)
        };
        let got = first.get(span, attribute);
        assert!(
            got.as_deref()
                .is_some_and(|v| v.starts_with("hmac-sha256:")),
            "{span} {attribute}: {got:?}"
        );
        assert_eq!(got, want, "{span} {attribute}: the library's hash");
        assert_eq!(
            second.get(span, attribute),
            got,
            "{span} {attribute}: the second relay's"
        );
    }
    for seen in [&first, &second] {
        for raw in [KEY, TENANT, HASH_KEY] {
            assert!(
                !seen.relay_text.contains(raw),
                "{raw:?} in the relay's spans or log"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_leaves_keys_request_ids_and_headers_out_everywhere() {
    // No capture list in the relay's config, none recorded by default.
    let seen = run(AttributePolicy::default(), "", "pol-default").await;
    for (span, attribute) in WHERE {
        // The library captures x-tenant (asked for); keys and ids: never.
        if span.starts_with("library") && attribute.contains("tenant") {
            continue;
        }
        assert_eq!(seen.get(span, attribute), None, "{span} {attribute}");
    }
    for raw in [KEY, TENANT] {
        assert!(
            !seen.relay_text.contains(raw),
            "{raw:?} in the relay's spans or log"
        );
    }
}
