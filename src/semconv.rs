//! Span names, kinds and attributes for messaging operations, per the
//! OpenTelemetry messaging semantic conventions (v1.44).
//!
//! | operation | Kafka | RabbitMQ | kind |
//! |---|---|---|---|
//! | send | `send {topic}` | `publish {exchange}:{routing_key}` | PRODUCER |
//! | receive | `poll {topic}` | `receive {queue}` | CLIENT |
//! | process | `process {topic}` | `process {exchange}:{routing_key}:{queue}` | CONSUMER |
//! | settle | `commit {topic}` | `ack` / `nack` / `reject` | CLIENT |
//!
//! Attributes a sampler may use are returned by [`MessagingAttributes::new`]
//! so they can be given when the span starts. With
//! `OTEL_SEMCONV_STABILITY_OPT_IN=messaging/dup` the pre-1.26 keys are
//! emitted as well, for dashboards that still query them.
//!
//! ```
//! use tracebridge::semconv::{Destination, MessagingAttributes, Operation, Stability};
//! let dest = Destination::kafka("orders");
//! assert_eq!(Operation::Send.span_name(&dest), "send orders");
//! let attrs = MessagingAttributes::new(Operation::Send, &dest, Stability::Stable)
//!     .partition(2)
//!     .into_vec();
//! assert!(attrs.iter().any(|kv| kv.key.as_str() == "messaging.destination.partition.id"
//!     && kv.value.as_str() == "2"));
//! ```

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

use opentelemetry::trace::SpanKind;
use opentelemetry::{KeyValue, StringValue, Value};
use opentelemetry_semantic_conventions::attribute as attr;

/// The `messaging.system` of a destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum System {
    /// Apache Kafka (`kafka`).
    Kafka,
    /// RabbitMQ / AMQP 0-9-1 (`rabbitmq`).
    RabbitMq,
}

impl System {
    /// The attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            System::Kafka => "kafka",
            System::RabbitMq => "rabbitmq",
        }
    }
}

/// How a consumer settled a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Settlement {
    /// Kafka offset commit.
    Commit,
    /// AMQP `basic.ack`.
    Ack,
    /// AMQP `basic.nack` (the message may be requeued).
    Nack,
    /// AMQP `basic.reject`.
    Reject,
}

/// A messaging operation, as the semantic conventions name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    /// Sending one message (PRODUCER).
    Send,
    /// Pulling a message or a batch (CLIENT).
    Receive,
    /// Handling one message (CONSUMER).
    Process,
    /// Settling (CLIENT).
    Settle(Settlement),
}

/// Where a message goes or comes from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Destination {
    /// A Kafka topic.
    Kafka {
        /// Topic name.
        topic: String,
    },
    /// An AMQP exchange + routing key, and for consumers the queue.
    RabbitMq {
        /// Exchange (empty = the default exchange).
        exchange: String,
        /// Routing key (may be empty).
        routing_key: String,
        /// The queue, on the consumer side.
        queue: Option<String>,
    },
}

impl Destination {
    /// A Kafka topic.
    pub fn kafka(topic: impl Into<String>) -> Self {
        Destination::Kafka {
            topic: topic.into(),
        }
    }

    /// A RabbitMQ publish target.
    pub fn rabbitmq(exchange: impl Into<String>, routing_key: impl Into<String>) -> Self {
        Destination::RabbitMq {
            exchange: exchange.into(),
            routing_key: routing_key.into(),
            queue: None,
        }
    }

    /// A RabbitMQ delivery: exchange, routing key, and the queue it came from.
    pub fn rabbitmq_queue(
        exchange: impl Into<String>,
        routing_key: impl Into<String>,
        queue: impl Into<String>,
    ) -> Self {
        Destination::RabbitMq {
            exchange: exchange.into(),
            routing_key: routing_key.into(),
            queue: Some(queue.into()),
        }
    }

    /// The system this destination belongs to.
    pub fn system(&self) -> System {
        match self {
            Destination::Kafka { .. } => System::Kafka,
            Destination::RabbitMq { .. } => System::RabbitMq,
        }
    }

    /// `messaging.destination.name`.
    ///
    /// RabbitMQ, per the conventions: producer side `{exchange}:{routing_key}`
    /// with empty parts left out, `amq.default` when both are empty; consumer
    /// side `{exchange}:{routing_key}:{queue}` with empty parts left out and
    /// the queue omitted when it equals the routing key.
    pub fn name(&self) -> String {
        match self {
            Destination::Kafka { topic } => topic.clone(),
            Destination::RabbitMq {
                exchange,
                routing_key,
                queue,
            } => {
                let mut parts: Vec<&str> = [exchange.as_str(), routing_key.as_str()]
                    .into_iter()
                    .filter(|p| !p.is_empty())
                    .collect();
                if let Some(queue) = queue.as_deref()
                    && !queue.is_empty()
                    && queue != routing_key
                {
                    parts.push(queue);
                }
                if parts.is_empty() {
                    "amq.default".to_owned()
                } else {
                    parts.join(":")
                }
            }
        }
    }
}

impl Operation {
    /// `messaging.operation.name` for `system`.
    pub fn name(self, system: System) -> &'static str {
        match (self, system) {
            (Operation::Send, System::Kafka) => "send",
            (Operation::Send, System::RabbitMq) => "publish",
            (Operation::Receive, System::Kafka) => "poll",
            (Operation::Receive, System::RabbitMq) => "receive",
            (Operation::Process, _) => "process",
            (Operation::Settle(Settlement::Commit), _) => "commit",
            (Operation::Settle(Settlement::Ack), _) => "ack",
            (Operation::Settle(Settlement::Nack), _) => "nack",
            (Operation::Settle(Settlement::Reject), _) => "reject",
        }
    }

    /// `messaging.operation.type`.
    pub fn type_name(self) -> &'static str {
        match self {
            Operation::Send => "send",
            Operation::Receive => "receive",
            Operation::Process => "process",
            Operation::Settle(_) => "settle",
        }
    }

    /// The span kind for this operation.
    pub fn span_kind(self) -> SpanKind {
        match self {
            Operation::Send => SpanKind::Producer,
            Operation::Process => SpanKind::Consumer,
            Operation::Receive | Operation::Settle(_) => SpanKind::Client,
        }
    }

    /// The span name: `{operation} {destination}`; RabbitMQ settle spans are
    /// named by the operation alone (`ack`, `nack`, `reject`).
    pub fn span_name(self, destination: &Destination) -> String {
        let system = destination.system();
        let op = self.name(system);
        match (self, destination) {
            (Operation::Settle(_), Destination::RabbitMq { .. }) => op.to_owned(),
            (
                Operation::Receive,
                Destination::RabbitMq {
                    queue: Some(queue), ..
                },
            ) => format!("{op} {queue}"),
            _ => format!("{op} {}", destination.name()),
        }
    }

    /// [`Operation::span_name`], formatted once per operation and
    /// destination and shared after: a span name is needed for every
    /// message, and a process uses a handful of destinations. The names
    /// live as long as the process, so at most [`SHARED_SPAN_NAMES`] are
    /// kept; past that, each name is formatted as before.
    pub fn shared_span_name(self, destination: &Destination) -> Cow<'static, str> {
        span_names::shared(self, destination)
    }

    /// The pre-1.26 `messaging.operation` value, for `messaging/dup`.
    fn legacy_name(self) -> &'static str {
        match self {
            Operation::Send => "publish",
            Operation::Receive => "receive",
            Operation::Process => "process",
            Operation::Settle(_) => "settle",
        }
    }
}

/// How many span names [`Operation::shared_span_name`] keeps.
pub const SHARED_SPAN_NAMES: usize = 1024;

mod span_names {
    use std::borrow::Cow;
    use std::collections::HashMap;
    use std::hash::{Hash, Hasher};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{LazyLock, RwLock};

    use super::{Destination, Operation, SHARED_SPAN_NAMES};

    /// The names formatted so far, by the hash of their operation and
    /// destination (looked up without building a key), each bucket
    /// checked for equality.
    type Names = HashMap<u64, Vec<(Operation, Destination, &'static str)>, KeyIsTheHash>;

    /// The map's keys are already FNV hashes: hashing them again (SipHash,
    /// the default) cost ~90 instructions a lookup.
    #[derive(Default, Clone, Copy)]
    struct KeyIsTheHash;

    impl std::hash::BuildHasher for KeyIsTheHash {
        type Hasher = Fnv;
        fn build_hasher(&self) -> Fnv {
            Fnv(0)
        }
    }

    static NAMES: LazyLock<RwLock<Names>> = LazyLock::new(RwLock::default);
    /// How many names NAMES holds: once it is full, a new name is formatted
    /// without taking the write lock.
    static KEPT: AtomicUsize = AtomicUsize::new(0);

    /// FNV-1a: a few instructions a byte, where SipHash cost ~240 a
    /// message. The map is bounded, so colliding names cannot grow it.
    struct Fnv(u64);

    impl Hasher for Fnv {
        fn write(&mut self, bytes: &[u8]) {
            for byte in bytes {
                self.0 = (self.0 ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
            }
        }
        fn write_u64(&mut self, value: u64) {
            // Only the map's own keys (already hashes) come this way.
            self.0 ^= value;
        }
        fn finish(&self) -> u64 {
            self.0
        }
    }

    pub(super) fn shared(operation: Operation, destination: &Destination) -> Cow<'static, str> {
        let names = &*NAMES;
        let mut state = Fnv(0xcbf2_9ce4_8422_2325);
        operation.hash(&mut state);
        destination.hash(&mut state);
        let key = state.finish();
        let found = |names: &Names| {
            names.get(&key).and_then(|bucket| {
                bucket
                    .iter()
                    .find(|(op, dest, _)| *op == operation && dest == destination)
                    .map(|(_, _, name)| *name)
            })
        };
        // A poisoned lock only means another thread panicked mid-insert;
        // the map is still consistent (an insert is one push).
        if let Some(name) = found(&names.read().unwrap_or_else(|e| e.into_inner())) {
            return Cow::Borrowed(name);
        }
        if KEPT.load(Ordering::Relaxed) >= SHARED_SPAN_NAMES {
            return Cow::Owned(operation.span_name(destination));
        }
        let mut map = names.write().unwrap_or_else(|e| e.into_inner());
        if let Some(name) = found(&map) {
            return Cow::Borrowed(name);
        }
        let formatted = operation.span_name(destination);
        // Under the write lock: only one thread counts at a time.
        if KEPT.load(Ordering::Relaxed) >= SHARED_SPAN_NAMES {
            return Cow::Owned(formatted);
        }
        // Kept for the process's life: bounded by SHARED_SPAN_NAMES.
        let name: &'static str = Box::leak(formatted.into_boxed_str());
        map.entry(key)
            .or_default()
            .push((operation, destination.clone(), name));
        KEPT.fetch_add(1, Ordering::Relaxed);
        Cow::Borrowed(name)
    }
}

/// Which attribute keys to emit (`OTEL_SEMCONV_STABILITY_OPT_IN`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stability {
    /// Only the current (v1.26+) keys.
    Stable,
    /// Current keys plus the pre-1.26 ones (`messaging/dup`).
    Duplicate,
}

impl Stability {
    /// Parses an `OTEL_SEMCONV_STABILITY_OPT_IN` value (comma-separated).
    pub fn parse(opt_in: &str) -> Self {
        if opt_in.split(',').any(|v| v.trim() == "messaging/dup") {
            Stability::Duplicate
        } else {
            Stability::Stable
        }
    }

    /// From the environment, read once per process.
    pub fn from_env() -> Self {
        static STABILITY: OnceLock<Stability> = OnceLock::new();
        *STABILITY.get_or_init(|| {
            Stability::parse(&std::env::var("OTEL_SEMCONV_STABILITY_OPT_IN").unwrap_or_default())
        })
    }
}

// Pre-1.26 keys, spelled out: the semconv crate marks its constants for them
// deprecated, and they are emitted only on request.
const LEGACY_OPERATION: &str = "messaging.operation";
const LEGACY_KAFKA_CONSUMER_GROUP: &str = "messaging.kafka.consumer.group";
const LEGACY_KAFKA_PARTITION: &str = "messaging.kafka.destination.partition";
const LEGACY_KAFKA_OFFSET: &str = "messaging.kafka.message.offset";
const LEGACY_BODY_SIZE: &str = "messaging.message.payload_size_bytes";
const LEGACY_PEER_NAME: &str = "net.peer.name";
const LEGACY_PEER_PORT: &str = "net.peer.port";

/// The broker a client talks to and the client's own id: the
/// `server.address`, `server.port` and `messaging.client.id` attributes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Endpoint {
    /// `server.address` (shared, so each span's copy is a reference count).
    pub address: Option<Arc<str>>,
    /// `server.port`.
    pub port: Option<u16>,
    /// `messaging.client.id`.
    pub client_id: Option<Arc<str>>,
}

impl Endpoint {
    /// From the first entry of a `host:port[,host:port…]` list (an optional
    /// `scheme://` prefix is ignored; IPv6 hosts in brackets are kept whole).
    pub fn from_servers(servers: &str, client_id: Option<&str>) -> Self {
        let first = servers.split(',').next().unwrap_or("").trim();
        let first = first.split_once("://").map_or(first, |(_, rest)| rest);
        let (address, port) = match first.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(':') => match port.parse::<u16>() {
                Ok(port) => (host, Some(port)),
                Err(_) => (first, None),
            },
            _ => (first, None),
        };
        Self {
            address: (!address.is_empty()).then(|| Arc::from(address)),
            port,
            client_id: client_id.filter(|c| !c.is_empty()).map(Arc::from),
        }
    }

    /// Adds the endpoint's attributes.
    pub fn apply(&self, attributes: MessagingAttributes) -> MessagingAttributes {
        let attributes = match &self.address {
            Some(address) => attributes.server(StringValue::from(address.clone()), self.port),
            None => attributes,
        };
        match &self.client_id {
            Some(id) => attributes.client_id(StringValue::from(id.clone())),
            None => attributes,
        }
    }
}

/// Builds the attribute list of one messaging span.
#[derive(Debug, Clone)]
pub struct MessagingAttributes {
    stability: Stability,
    attrs: Vec<KeyValue>,
}

impl MessagingAttributes {
    /// The attributes every span of `operation` on `destination` carries:
    /// `messaging.system`, operation name and type, destination name (and,
    /// for RabbitMQ, the routing key).
    pub fn new(operation: Operation, destination: &Destination, stability: Stability) -> Self {
        let system = destination.system();
        let mut this = Self {
            stability,
            attrs: Vec::with_capacity(12),
        };
        this.attrs
            .push(KeyValue::new(attr::MESSAGING_SYSTEM, system.as_str()));
        this.attrs.push(KeyValue::new(
            attr::MESSAGING_OPERATION_NAME,
            operation.name(system),
        ));
        this.attrs.push(KeyValue::new(
            attr::MESSAGING_OPERATION_TYPE,
            operation.type_name(),
        ));
        if !matches!(
            (operation, destination),
            (Operation::Settle(_), Destination::RabbitMq { .. })
        ) {
            this.attrs.push(KeyValue::new(
                attr::MESSAGING_DESTINATION_NAME,
                destination.name(),
            ));
        }
        if let Destination::RabbitMq { routing_key, .. } = destination
            && !routing_key.is_empty()
        {
            this.attrs.push(KeyValue::new(
                attr::MESSAGING_RABBITMQ_DESTINATION_ROUTING_KEY,
                routing_key.clone(),
            ));
        }
        if stability == Stability::Duplicate {
            this.attrs
                .push(KeyValue::new(LEGACY_OPERATION, operation.legacy_name()));
        }
        this
    }

    /// An empty list, for attributes learned after the span started (a
    /// delivery report's partition and offset).
    pub fn later(stability: Stability) -> Self {
        Self {
            stability,
            attrs: Vec::new(),
        }
    }

    /// A boolean attribute set to true (for flags outside the conventions).
    pub fn flag(self, key: &'static str) -> Self {
        self.push(key, true)
    }

    /// Drops every attribute with this key.
    pub fn without(mut self, key: &str) -> Self {
        self.attrs.retain(|kv| kv.key.as_str() != key);
        self
    }

    fn push(mut self, key: &'static str, value: impl Into<Value>) -> Self {
        self.attrs.push(KeyValue::new(key, value));
        self
    }

    fn push_legacy(self, key: &'static str, value: impl Into<Value>) -> Self {
        if self.stability == Stability::Duplicate {
            self.push(key, value)
        } else {
            self
        }
    }

    /// `messaging.destination.partition.id` (a string, per the conventions).
    pub fn partition(self, partition: i32) -> Self {
        self.push(
            attr::MESSAGING_DESTINATION_PARTITION_ID,
            partition.to_string(),
        )
        .push_legacy(LEGACY_KAFKA_PARTITION, i64::from(partition))
    }

    /// `messaging.kafka.offset`.
    pub fn kafka_offset(self, offset: i64) -> Self {
        self.push(attr::MESSAGING_KAFKA_OFFSET, offset)
            .push_legacy(LEGACY_KAFKA_OFFSET, offset)
    }

    /// `messaging.kafka.message.key`, when the key is UTF-8 (binary keys
    /// are left out rather than mangled).
    pub fn kafka_key(self, key: Option<&[u8]>) -> Self {
        match key.and_then(|k| std::str::from_utf8(k).ok()) {
            Some(key) => self.push(attr::MESSAGING_KAFKA_MESSAGE_KEY, key.to_owned()),
            None => self,
        }
    }

    /// `messaging.kafka.message.tombstone`, set only when true.
    pub fn tombstone(self, is_tombstone: bool) -> Self {
        if is_tombstone {
            self.push(attr::MESSAGING_KAFKA_MESSAGE_TOMBSTONE, true)
        } else {
            self
        }
    }

    /// `messaging.consumer.group.name`.
    pub fn consumer_group(self, group: &str) -> Self {
        self.push(attr::MESSAGING_CONSUMER_GROUP_NAME, group.to_owned())
            .push_legacy(LEGACY_KAFKA_CONSUMER_GROUP, group.to_owned())
    }

    /// `messaging.rabbitmq.message.delivery_tag`.
    pub fn delivery_tag(self, tag: u64) -> Self {
        // OTel integers are i64; a delivery tag never nears 2^63 in practice.
        self.push(
            attr::MESSAGING_RABBITMQ_MESSAGE_DELIVERY_TAG,
            i64::try_from(tag).unwrap_or(i64::MAX),
        )
    }

    /// `messaging.message.id`, when present.
    pub fn message_id(self, id: Option<&str>) -> Self {
        match id {
            Some(id) if !id.is_empty() => self.push(attr::MESSAGING_MESSAGE_ID, id.to_owned()),
            _ => self,
        }
    }

    /// `messaging.message.conversation_id` (AMQP correlation id; the
    /// business request id), when present.
    pub fn conversation_id(self, id: Option<&str>) -> Self {
        match id {
            Some(id) if !id.is_empty() => {
                self.push(attr::MESSAGING_MESSAGE_CONVERSATION_ID, id.to_owned())
            }
            _ => self,
        }
    }

    /// `messaging.client.id`.
    pub fn client_id(self, id: impl Into<StringValue>) -> Self {
        self.push(attr::MESSAGING_CLIENT_ID, id.into())
    }

    /// `server.address` and `server.port`.
    pub fn server(self, address: impl Into<StringValue>, port: Option<u16>) -> Self {
        let address = address.into();
        let this = self
            .push_legacy(LEGACY_PEER_NAME, address.clone())
            .push(attr::SERVER_ADDRESS, address);
        match port {
            Some(port) => this
                .push(attr::SERVER_PORT, i64::from(port))
                .push_legacy(LEGACY_PEER_PORT, i64::from(port)),
            None => this,
        }
    }

    /// `messaging.message.body.size` (opt-in: callers decide).
    pub fn body_size(self, bytes: usize) -> Self {
        let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
        self.push(attr::MESSAGING_MESSAGE_BODY_SIZE, bytes)
            .push_legacy(LEGACY_BODY_SIZE, bytes)
    }

    /// `messaging.batch.message_count`.
    pub fn batch_count(self, count: usize) -> Self {
        self.push(
            attr::MESSAGING_BATCH_MESSAGE_COUNT,
            i64::try_from(count).unwrap_or(i64::MAX),
        )
    }

    /// The attributes.
    pub fn into_vec(self) -> Vec<KeyValue> {
        self.attrs
    }
}

/// `error.type`, for a failed operation.
pub fn error_type(kind: impl Into<String>) -> KeyValue {
    KeyValue::new(attr::ERROR_TYPE, kind.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_span_names_equal_the_formatted_ones_and_are_formatted_once() {
        for (operation, destination) in [
            (Operation::Send, Destination::kafka("shared-orders")),
            (Operation::Process, Destination::kafka("shared-orders")),
            (
                Operation::Send,
                Destination::rabbitmq("shared-x", "order.created"),
            ),
            (
                Operation::Receive,
                Destination::rabbitmq_queue("shared-x", "rk", "shared-q"),
            ),
            (
                Operation::Settle(Settlement::Ack),
                Destination::rabbitmq_queue("shared-x", "rk", "shared-q"),
            ),
        ] {
            let first = operation.shared_span_name(&destination);
            assert_eq!(first, operation.span_name(&destination));
            let second = operation.shared_span_name(&destination);
            assert!(
                matches!((&first, &second), (Cow::Borrowed(a), Cow::Borrowed(b)) if std::ptr::eq(*a, *b)),
                "{first}: the same shared name the second time"
            );
        }
        // Past the bound, names are still right, just formatted each time.
        for n in 0..=SHARED_SPAN_NAMES {
            let destination = Destination::kafka(format!("bound-{n}"));
            assert_eq!(
                Operation::Send.shared_span_name(&destination),
                format!("send bound-{n}")
            );
        }
        let past = Destination::kafka("past-the-bound");
        assert!(matches!(
            Operation::Send.shared_span_name(&past),
            Cow::Owned(_)
        ));
    }

    fn get<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Value> {
        attrs
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| &kv.value)
    }

    #[test]
    fn span_names_and_kinds_match_the_design_table() {
        let topic = Destination::kafka("orders");
        let publish = Destination::rabbitmq("fulfillment", "order.created");
        let delivery = Destination::rabbitmq_queue("fulfillment", "order.created", "work");
        let cases = [
            (Operation::Send, &topic, "send orders", SpanKind::Producer),
            (Operation::Receive, &topic, "poll orders", SpanKind::Client),
            (
                Operation::Process,
                &topic,
                "process orders",
                SpanKind::Consumer,
            ),
            (
                Operation::Settle(Settlement::Commit),
                &topic,
                "commit orders",
                SpanKind::Client,
            ),
            (
                Operation::Send,
                &publish,
                "publish fulfillment:order.created",
                SpanKind::Producer,
            ),
            (
                Operation::Receive,
                &delivery,
                "receive work",
                SpanKind::Client,
            ),
            (
                Operation::Process,
                &delivery,
                "process fulfillment:order.created:work",
                SpanKind::Consumer,
            ),
            (
                Operation::Settle(Settlement::Ack),
                &delivery,
                "ack",
                SpanKind::Client,
            ),
            (
                Operation::Settle(Settlement::Nack),
                &delivery,
                "nack",
                SpanKind::Client,
            ),
            (
                Operation::Settle(Settlement::Reject),
                &delivery,
                "reject",
                SpanKind::Client,
            ),
        ];
        for (op, dest, name, kind) in cases {
            assert_eq!(op.span_name(dest), name);
            assert_eq!(op.span_kind(), kind, "{name}");
        }
    }

    #[test]
    fn rabbitmq_destination_names_leave_out_empty_parts() {
        for (dest, name) in [
            (Destination::rabbitmq("", ""), "amq.default"),
            (Destination::rabbitmq("", "jobs"), "jobs"),
            (Destination::rabbitmq("events", ""), "events"),
            (Destination::rabbitmq("events", "a.b"), "events:a.b"),
            (Destination::rabbitmq_queue("", "jobs", "jobs"), "jobs"),
            (Destination::rabbitmq_queue("events", "", "q"), "events:q"),
            (Destination::rabbitmq_queue("", "", "q"), "q"),
            (Destination::rabbitmq_queue("e", "k", "q"), "e:k:q"),
        ] {
            assert_eq!(dest.name(), name, "{dest:?}");
        }
    }

    #[test]
    fn kafka_process_attributes_by_value() {
        let attrs = MessagingAttributes::new(
            Operation::Process,
            &Destination::kafka("orders"),
            Stability::Stable,
        )
        .consumer_group("billing")
        .partition(2)
        .kafka_offset(42)
        .kafka_key(Some(b"order-7"))
        .tombstone(true)
        .body_size(10)
        .into_vec();
        let expect: [(&str, Value); 10] = [
            ("messaging.system", "kafka".into()),
            ("messaging.operation.name", "process".into()),
            ("messaging.operation.type", "process".into()),
            ("messaging.destination.name", "orders".into()),
            ("messaging.consumer.group.name", "billing".into()),
            ("messaging.destination.partition.id", "2".into()),
            ("messaging.kafka.offset", 42i64.into()),
            ("messaging.kafka.message.key", "order-7".into()),
            ("messaging.kafka.message.tombstone", true.into()),
            ("messaging.message.body.size", 10i64.into()),
        ];
        for (key, value) in &expect {
            assert_eq!(get(&attrs, key), Some(value), "{key}");
        }
        assert_eq!(attrs.len(), expect.len(), "no extra keys: {attrs:?}");
    }

    #[test]
    fn binary_keys_and_false_tombstones_are_left_out() {
        let attrs =
            MessagingAttributes::new(Operation::Send, &Destination::kafka("t"), Stability::Stable)
                .kafka_key(Some(&[0xff, 0x00]))
                .tombstone(false)
                .into_vec();
        assert!(get(&attrs, "messaging.kafka.message.key").is_none());
        assert!(get(&attrs, "messaging.kafka.message.tombstone").is_none());
    }

    #[test]
    fn rabbitmq_publish_and_settle_attributes_by_value() {
        let publish = MessagingAttributes::new(
            Operation::Send,
            &Destination::rabbitmq("fulfillment", "order.created"),
            Stability::Stable,
        )
        .message_id(Some("m-1"))
        .conversation_id(Some("req-9"))
        .server("127.0.0.1".to_owned(), Some(5672))
        .into_vec();
        assert_eq!(get(&publish, "messaging.system"), Some(&"rabbitmq".into()));
        assert_eq!(
            get(&publish, "messaging.operation.name"),
            Some(&"publish".into())
        );
        assert_eq!(
            get(&publish, "messaging.operation.type"),
            Some(&"send".into())
        );
        assert_eq!(
            get(&publish, "messaging.destination.name"),
            Some(&"fulfillment:order.created".into())
        );
        assert_eq!(
            get(&publish, "messaging.rabbitmq.destination.routing_key"),
            Some(&"order.created".into())
        );
        assert_eq!(get(&publish, "messaging.message.id"), Some(&"m-1".into()));
        assert_eq!(
            get(&publish, "messaging.message.conversation_id"),
            Some(&"req-9".into())
        );
        assert_eq!(get(&publish, "server.address"), Some(&"127.0.0.1".into()));
        assert_eq!(get(&publish, "server.port"), Some(&5672i64.into()));

        let ack = MessagingAttributes::new(
            Operation::Settle(Settlement::Ack),
            &Destination::rabbitmq_queue("fulfillment", "order.created", "work"),
            Stability::Stable,
        )
        .delivery_tag(7)
        .into_vec();
        assert_eq!(get(&ack, "messaging.operation.name"), Some(&"ack".into()));
        assert_eq!(
            get(&ack, "messaging.operation.type"),
            Some(&"settle".into())
        );
        assert_eq!(
            get(&ack, "messaging.rabbitmq.message.delivery_tag"),
            Some(&7i64.into())
        );
    }

    #[test]
    fn kafka_poll_carries_the_batch_count() {
        let attrs = MessagingAttributes::new(
            Operation::Receive,
            &Destination::kafka("t"),
            Stability::Stable,
        )
        .batch_count(5)
        .into_vec();
        assert_eq!(
            get(&attrs, "messaging.operation.name"),
            Some(&"poll".into())
        );
        assert_eq!(
            get(&attrs, "messaging.operation.type"),
            Some(&"receive".into())
        );
        assert_eq!(
            get(&attrs, "messaging.batch.message_count"),
            Some(&5i64.into())
        );
    }

    #[test]
    fn endpoints_parse_the_first_server() {
        let e = Endpoint::from_servers("broker-1:9093,broker-2:9093", Some("svc"));
        assert_eq!(e.address.as_deref(), Some("broker-1"));
        assert_eq!(e.port, Some(9093));
        assert_eq!(e.client_id.as_deref(), Some("svc"));
        let e = Endpoint::from_servers("PLAINTEXT://10.0.0.1:9092", None);
        assert_eq!(
            (e.address.as_deref(), e.port),
            (Some("10.0.0.1"), Some(9092))
        );
        let e = Endpoint::from_servers("localhost", Some(""));
        assert_eq!(
            (e.address.as_deref(), e.port, e.client_id),
            (Some("localhost"), None, None)
        );
        let e = Endpoint::from_servers("[::1]:9092", None);
        assert_eq!((e.address.as_deref(), e.port), (Some("[::1]"), Some(9092)));
        let attrs = Endpoint::from_servers("b:1", Some("c"))
            .apply(MessagingAttributes::later(Stability::Stable))
            .into_vec();
        assert_eq!(attrs.len(), 3);
    }

    #[test]
    fn messaging_dup_adds_the_pre_1_26_keys_only_when_asked() {
        assert_eq!(Stability::parse("http,messaging/dup"), Stability::Duplicate);
        assert_eq!(Stability::parse("messaging"), Stability::Stable);
        assert_eq!(Stability::parse(""), Stability::Stable);
        let build = |stability| {
            MessagingAttributes::new(Operation::Process, &Destination::kafka("t"), stability)
                .consumer_group("g")
                .partition(1)
                .kafka_offset(5)
                .server("broker".to_owned(), Some(9092))
                .into_vec()
        };
        let dup = build(Stability::Duplicate);
        assert_eq!(get(&dup, "messaging.operation"), Some(&"process".into()));
        assert_eq!(
            get(&dup, "messaging.kafka.consumer.group"),
            Some(&"g".into())
        );
        assert_eq!(
            get(&dup, "messaging.kafka.destination.partition"),
            Some(&1i64.into())
        );
        assert_eq!(
            get(&dup, "messaging.kafka.message.offset"),
            Some(&5i64.into())
        );
        assert_eq!(get(&dup, "net.peer.name"), Some(&"broker".into()));
        // The new keys are still there.
        assert_eq!(
            get(&dup, "messaging.consumer.group.name"),
            Some(&"g".into())
        );
        let stable = build(Stability::Stable);
        assert!(get(&stable, "messaging.operation").is_none());
        assert!(get(&stable, "messaging.kafka.consumer.group").is_none());
    }
}
