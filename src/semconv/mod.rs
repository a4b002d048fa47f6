//! Span names, kinds and attributes for messaging operations, per the
//! OpenTelemetry messaging semantic conventions: v1.45 by default, v1.44 or
//! the pre-1.26 keys when pinned ([`SemconvVersion`], `keys.rs` holds one
//! table per version), and never a sensitive value the
//! [`AttributePolicy`] (`policy.rs`) forbids.
//!
//! | operation | Kafka | RabbitMQ | kind |
//! |---|---|---|---|
//! | send | `send {topic}` | `publish {exchange}:{routing_key}` | PRODUCER |
//! | receive | `poll {topic}` | `receive {queue}` | CLIENT |
//! | process | `process {topic}` | `process {exchange}:{routing_key}:{queue}` | CONSUMER |
//! | settle | `commit {topic}` | `ack` / `nack` / `reject` | CLIENT |
//!
//! Span names and kinds are the same under every version (the pre-1.26
//! conventions had no settle spans and named spans the other way round;
//! `messaging/dup` keeps the new names, as the spec asks). Attributes a
//! sampler may use are returned by [`MessagingAttributes::new`] so they can
//! be given when the span starts. With
//! `OTEL_SEMCONV_STABILITY_OPT_IN=messaging/dup` the pre-1.26 keys are
//! emitted as well, for dashboards that still query them.
//!
//! ```
//! use tracebridge::semconv::{AttributeRules, Destination, MessagingAttributes, Operation};
//! let dest = Destination::kafka("orders");
//! assert_eq!(Operation::Send.span_name(&dest), "send orders");
//! let rules = AttributeRules::default();
//! let attrs = MessagingAttributes::new(Operation::Send, &dest, &rules)
//!     .partition(2)
//!     .into_vec();
//! assert!(attrs.iter().any(|kv| kv.key.as_str() == "messaging.system.name"
//!     && kv.value.as_str() == "kafka"));
//! assert!(attrs.iter().any(|kv| kv.key.as_str() == "messaging.destination.partition.id"
//!     && kv.value.as_str() == "2"));
//! ```

mod keys;
mod policy;

pub use keys::{Keys, PartitionType, SEMCONV_VERSION_ENV, SemconvVersion, UnknownSemconvVersion};
pub use policy::{
    AttributePolicy, CAPTURED_HEADER_PREFIX, HashKey, PolicyError, Treatment, env as policy_env,
};

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

use opentelemetry::trace::SpanKind;
use opentelemetry::{KeyValue, StringValue, Value};
use opentelemetry_semantic_conventions::attribute as attr;

use crate::propagation::HeaderReader;

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

/// Which attribute keys to emit: the pinned version's
/// ([`SEMCONV_VERSION_ENV`], default v1.45), plus the pre-1.26 keys with
/// `OTEL_SEMCONV_STABILITY_OPT_IN=messaging/dup`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Conventions {
    /// The version whose keys are emitted.
    pub version: SemconvVersion,
    /// Also emit the pre-1.26 keys (`messaging/dup`).
    pub duplicate_pre_1_26: bool,
}

impl Conventions {
    /// One version's keys alone.
    pub fn new(version: SemconvVersion) -> Self {
        Self {
            version,
            duplicate_pre_1_26: false,
        }
    }

    /// Whether an `OTEL_SEMCONV_STABILITY_OPT_IN` value (comma-separated)
    /// asks for the pre-1.26 keys too.
    pub fn opts_into_duplicates(opt_in: &str) -> bool {
        opt_in.split(',').any(|v| v.trim() == "messaging/dup")
    }

    /// From [`SEMCONV_VERSION_ENV`] and `OTEL_SEMCONV_STABILITY_OPT_IN`.
    pub fn try_from_env() -> Result<Self, UnknownSemconvVersion> {
        let version = match std::env::var(SEMCONV_VERSION_ENV) {
            Ok(text) if !text.trim().is_empty() => SemconvVersion::parse(&text)?,
            _ => SemconvVersion::default(),
        };
        Ok(Self {
            version,
            duplicate_pre_1_26: Self::opts_into_duplicates(
                &std::env::var("OTEL_SEMCONV_STABILITY_OPT_IN").unwrap_or_default(),
            ),
        })
    }

    /// [`Conventions::try_from_env`], read once per process; an unknown
    /// version is reported once on stderr and the default used (the relay
    /// refuses it at start instead).
    pub fn from_env() -> Self {
        static CONVENTIONS: OnceLock<Conventions> = OnceLock::new();
        *CONVENTIONS.get_or_init(|| {
            Self::try_from_env().unwrap_or_else(|err| {
                eprintln!("tracebridge: {err} (in {SEMCONV_VERSION_ENV}); using 1.45");
                Self::default()
            })
        })
    }

    /// The chosen version's keys.
    pub fn keys(self) -> &'static Keys {
        self.version.keys()
    }

    /// The pre-1.26 key beside `current`, when asked for and different.
    fn duplicate(
        self,
        current: Option<&'static str>,
        old: Option<&'static str>,
    ) -> Option<&'static str> {
        old.filter(|old| self.duplicate_pre_1_26 && Some(*old) != current)
    }
}

/// Everything that decides a messaging span's attribute keys and values:
/// the [`Conventions`] and the [`AttributePolicy`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AttributeRules {
    /// Which keys.
    pub conventions: Conventions,
    /// Which sensitive values, and how.
    pub policy: AttributePolicy,
}

impl AttributeRules {
    /// From the environment: [`Conventions::from_env`] and
    /// [`AttributePolicy::from_env`] (a bad policy is reported once on
    /// stderr and the default, which records no key or request id, used).
    pub fn from_env() -> Self {
        static POLICY: OnceLock<AttributePolicy> = OnceLock::new();
        let policy = POLICY.get_or_init(|| {
            AttributePolicy::from_env().unwrap_or_else(|err| {
                eprintln!("tracebridge: {err}; recording no message key, request id or header");
                AttributePolicy::default()
            })
        });
        Self {
            conventions: Conventions::from_env(),
            policy: policy.clone(),
        }
    }
}

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
    pub fn apply<'r>(&self, attributes: MessagingAttributes<'r>) -> MessagingAttributes<'r> {
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

/// Builds the attribute list of one messaging span, under the
/// [`AttributeRules`] in force.
#[derive(Debug, Clone)]
pub struct MessagingAttributes<'r> {
    rules: &'r AttributeRules,
    attrs: Vec<KeyValue>,
}

impl<'r> MessagingAttributes<'r> {
    /// The attributes every span of `operation` on `destination` carries:
    /// the system, operation name and type, destination name (and, for
    /// RabbitMQ, the routing key).
    pub fn new(operation: Operation, destination: &Destination, rules: &'r AttributeRules) -> Self {
        let system = destination.system();
        let mut this = Self {
            rules,
            attrs: Vec::with_capacity(12),
        };
        this = this
            .put(|k| Some(k.system), system.as_str())
            .put(|k| k.operation_name, operation.name(system))
            .put(|k| k.operation_type, operation.type_name())
            .put(|k| k.legacy_operation, operation.legacy_name());
        if !matches!(
            (operation, destination),
            (Operation::Settle(_), Destination::RabbitMq { .. })
        ) {
            this = this.put(|k| Some(k.destination_name), destination.name());
        }
        if let Destination::RabbitMq { routing_key, .. } = destination
            && !routing_key.is_empty()
        {
            this = this.put(|k| Some(k.rabbitmq_routing_key), routing_key.clone());
        }
        this
    }

    /// An empty list, for attributes learned after the span started (a
    /// delivery report's partition and offset).
    pub fn later(rules: &'r AttributeRules) -> Self {
        Self {
            rules,
            attrs: Vec::new(),
        }
    }

    /// The low-cardinality attributes of the messaging metrics: system,
    /// operation, destination, consumer group, broker — never a key, id,
    /// partition or offset.
    pub fn metric(
        operation: Operation,
        destination: &Destination,
        group: Option<&str>,
        endpoint: &Endpoint,
        rules: &'r AttributeRules,
    ) -> Self {
        let system = destination.system();
        let mut this = Self {
            rules,
            attrs: Vec::with_capacity(8),
        }
        .put(|k| Some(k.system), system.as_str())
        .put(|k| k.operation_name, operation.name(system))
        .put(|k| k.operation_type, operation.type_name())
        .put(|k| Some(k.destination_name), destination.name());
        if let Some(group) = group {
            this = this.consumer_group(group);
        }
        match &endpoint.address {
            Some(address) => this.server(StringValue::from(address.clone()), endpoint.port),
            None => this,
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

    /// The chosen version's key for this attribute (when it has one) and,
    /// under `messaging/dup`, the pre-1.26 key beside it.
    fn put(self, key: impl Fn(&Keys) -> Option<&'static str>, value: impl Into<Value>) -> Self {
        let conventions = self.rules.conventions;
        let current = key(conventions.keys());
        let old = conventions.duplicate(current, key(&keys::PRE_1_26));
        let value = value.into();
        let this = match old {
            Some(old) => self.push(old, value.clone()),
            None => self,
        };
        match current {
            Some(current) => this.push(current, value),
            None => this,
        }
    }

    /// `messaging.destination.partition.id` (a string, per 1.26+; an
    /// integer under the pre-1.26 key).
    pub fn partition(self, partition: i32) -> Self {
        let conventions = self.rules.conventions;
        let as_value = |(key, kind): (&'static str, PartitionType)| {
            let value: Value = match kind {
                PartitionType::String => partition.to_string().into(),
                PartitionType::Int => i64::from(partition).into(),
            };
            (key, value)
        };
        let (key, value) = as_value(conventions.keys().partition);
        let this = self.push(key, value);
        match conventions.duplicate(Some(key), Some(keys::PRE_1_26.partition.0)) {
            Some(_) => {
                let (old, value) = as_value(keys::PRE_1_26.partition);
                this.push(old, value)
            }
            None => this,
        }
    }

    /// The Kafka offset (`kafka.offset` in 1.45).
    pub fn kafka_offset(self, offset: i64) -> Self {
        self.put(|k| Some(k.kafka_offset), offset)
    }

    /// The Kafka message key, as the [`AttributePolicy`] allows, when it is
    /// UTF-8 (binary keys are left out rather than mangled).
    pub fn kafka_key(self, key: Option<&[u8]>) -> Self {
        let recorded = key
            .and_then(|k| std::str::from_utf8(k).ok())
            .and_then(|k| self.rules.policy.message_key(k));
        match recorded {
            Some(key) => self.put(|k| Some(k.kafka_key), key),
            None => self,
        }
    }

    /// The tombstone flag, set only when true.
    pub fn tombstone(self, is_tombstone: bool) -> Self {
        if is_tombstone {
            self.put(|k| Some(k.kafka_tombstone), true)
        } else {
            self
        }
    }

    /// `messaging.consumer.group.name`.
    pub fn consumer_group(self, group: &str) -> Self {
        self.put(|k| Some(k.consumer_group), group.to_owned())
    }

    /// The RabbitMQ delivery tag (`rabbitmq.message.delivery_tag` in 1.45).
    pub fn delivery_tag(self, tag: u64) -> Self {
        // OTel integers are i64; a delivery tag never nears 2^63 in practice.
        self.put(
            |k| k.rabbitmq_delivery_tag,
            i64::try_from(tag).unwrap_or(i64::MAX),
        )
    }

    /// `messaging.message.id`, when present.
    pub fn message_id(self, id: Option<&str>) -> Self {
        match id {
            Some(id) if !id.is_empty() => self.put(|k| Some(k.message_id), id.to_owned()),
            _ => self,
        }
    }

    /// `messaging.message.conversation_id` (AMQP correlation id; the
    /// business request id), when present and the [`AttributePolicy`]
    /// allows.
    pub fn conversation_id(self, id: Option<&str>) -> Self {
        match id
            .filter(|id| !id.is_empty())
            .and_then(|id| self.rules.policy.request_id(id))
        {
            Some(id) => self.put(|k| Some(k.conversation_id), id),
            None => self,
        }
    }

    /// The headers the [`AttributePolicy`] captures, as
    /// `messaging.header.<name>` string arrays (every value of the name).
    pub fn captured_headers(mut self, headers: &(impl HeaderReader + ?Sized)) -> Self {
        let policy = &self.rules.policy;
        if policy.captured().is_empty() {
            return self;
        }
        for (name, key) in policy.captured() {
            let Some(value) = headers
                .header_bytes(name)
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|v| policy.captured_header(v))
            else {
                continue;
            };
            self.attrs.push(KeyValue::new(
                key.clone(),
                Value::Array(vec![StringValue::from(value)].into()),
            ));
        }
        self
    }

    /// `messaging.client.id`.
    pub fn client_id(self, id: impl Into<StringValue>) -> Self {
        self.put(|k| Some(k.client_id), id.into())
    }

    /// `server.address` and `server.port`.
    pub fn server(self, address: impl Into<StringValue>, port: Option<u16>) -> Self {
        let this = self.put(|k| Some(k.server_address), address.into());
        match port {
            Some(port) => this.put(|k| Some(k.server_port), i64::from(port)),
            None => this,
        }
    }

    /// `messaging.message.body.size` (opt-in: callers decide).
    pub fn body_size(self, bytes: usize) -> Self {
        self.put(
            |k| Some(k.body_size),
            i64::try_from(bytes).unwrap_or(i64::MAX),
        )
    }

    /// `messaging.batch.message_count`.
    pub fn batch_count(self, count: usize) -> Self {
        self.put(
            |k| Some(k.batch_count),
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
        let attrs =
            MessagingAttributes::new(Operation::Process, &Destination::kafka("t"), &default)
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
            .apply(MessagingAttributes::later(&AttributeRules::default()))
            .into_vec();
        assert_eq!(attrs.len(), 3);
    }
}
