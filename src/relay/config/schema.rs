//! The configuration file as written: one struct per table. Only `serde`
//! knows these; `validate.rs` turns them into the types the relay runs on.
//!
//! Each key's type, default and an example are written once, in
//! `reference.rs` (rendered into `docs/config-reference.md`, checked
//! against these structs by `reference_tests.rs`); the comments here say
//! what the code needs to know, and no default.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::correlate::{Fallback, Policy, RequestIdExtractor, RequestIdSource};
use crate::instrument::ParentPolicy;
use crate::propagation::{Format, Propagation};
use crate::semconv::Treatment;

/// The file's top level.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileSpec {
    /// `[relay]`: the process's own settings.
    #[serde(default)]
    pub(super) relay: RelaySpec,
    /// `[kafka.NAME]`: Kafka clusters, named for the routes to use.
    #[serde(default)]
    pub(super) kafka: BTreeMap<String, Spanned<KafkaSpec>>,
    /// `[amqp.NAME]`: RabbitMQ brokers, named for the routes to use.
    #[serde(default)]
    pub(super) amqp: BTreeMap<String, Spanned<AmqpSpec>>,
    /// `[[route]]`: at least one.
    #[serde(default)]
    pub(super) route: Vec<Spanned<RouteSpec>>,
    /// `[telemetry]`: which convention keys and which sensitive values the
    /// spans and metrics carry (a key left out falls back to its
    /// environment variable, see `validate::attribute_rules`).
    #[serde(default)]
    pub(super) telemetry: TelemetrySpec,
}

/// `[telemetry]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct TelemetrySpec {
    /// A version name, read by `SemconvVersion::parse` (a string, so that
    /// its error names the versions). `None`: the environment decides.
    pub(super) semconv_version: Option<String>,
    /// How Kafka message keys are recorded.
    pub(super) record_message_keys: Option<Treatment>,
    /// Likewise for request ids.
    pub(super) record_request_ids: Option<Treatment>,
    /// Likewise for captured headers.
    pub(super) record_captured_headers: Option<Treatment>,
    /// Headers recorded as `messaging.header.<name>`.
    pub(super) capture_headers: Option<Vec<String>>,
    /// The HMAC key of `hashed` (a secret: written `${VAR}`).
    pub(super) attribute_hash_key: Option<String>,
    /// The messaging metrics recorded, by name; the others are off.
    pub(super) metrics: Option<Vec<String>>,
}

/// `[relay]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RelaySpec {
    /// `/healthz`, `/readyz`, `/metrics`.
    pub(super) listen: SocketAddr,
    /// Messages in flight per route (also the most a crash re-sends).
    pub(super) max_in_flight: usize,
    /// Bytes of messages in flight per route.
    pub(super) max_in_flight_bytes: usize,
    /// How long SIGTERM waits for messages in flight.
    #[serde(with = "humantime_serde")]
    pub(super) shutdown_timeout: Duration,
    /// `service.name` unless `OTEL_SERVICE_NAME` says otherwise.
    pub(super) service_name: String,
    /// This relay's stable identity in its Kafka groups (static membership).
    pub(super) instance_id: Option<String>,
}

impl Default for RelaySpec {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
            max_in_flight: 1024,
            max_in_flight_bytes: super::DEFAULT_MAX_IN_FLIGHT_BYTES,
            shutdown_timeout: Duration::from_secs(20),
            service_name: "tracebridge".into(),
            instance_id: None,
        }
    }
}

/// `[kafka.NAME]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct KafkaSpec {
    /// `bootstrap.servers`.
    pub(super) bootstrap_servers: String,
    /// librdkafka properties for every client of this cluster (security,
    /// timeouts); those that would break the relay's guarantees are
    /// refused (`validate::kafka_guards`).
    #[serde(default)]
    pub(super) properties: BTreeMap<String, String>,
}

/// `[amqp.NAME]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AmqpSpec {
    /// `amqp://` or `amqps://` (may hold a password: never printed).
    pub(super) url: String,
}

/// `[[route]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RouteSpec {
    /// Unique (checked in `validate`); in metrics, logs and
    /// `tracebridge.route`.
    pub(super) name: String,
    /// Where messages are read.
    pub(super) from: EndpointSpec,
    /// Where they are written.
    pub(super) to: EndpointSpec,
    /// Context formats and the join/link mode.
    #[serde(default)]
    pub(super) propagation: PropagationSpec,
    /// Attempts and backoff.
    #[serde(default)]
    pub(super) retry: RetrySpec,
    /// Where messages go that cannot be delivered. `None`: the route
    /// retries transient failures and stops at a message it can never
    /// send.
    pub(super) dead_letter: Option<EndpointSpec>,
    /// Kafka key ↔ AMQP property.
    #[serde(default)]
    pub(super) key_mapping: KeyMapping,
    /// Correlation by request id for producers that send no context.
    pub(super) correlation: Option<CorrelationSpec>,
}

/// `[route.correlation]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CorrelationSpec {
    /// Where the request id is read, first found wins.
    #[serde(default = "default_request_id_sources")]
    pub(super) request_id: Vec<RequestIdSource>,
    /// What a message with an id but no context joins.
    #[serde(default)]
    pub(super) policy: Policy,
    /// What `join`/`link` do when the store has nothing. `None`: decided
    /// in `validate` by whether a `key` is set.
    pub(super) fallback: Option<Fallback>,
    /// The key derived trace ids are hashed with (a secret).
    pub(super) key: Option<String>,
    /// One `rv`, from the request id, for the traces of one request.
    #[serde(default)]
    pub(super) journey_sampling: bool,
    /// `memory`, `redis` or a `redis://` URL (a string: `validate` tells
    /// them apart).
    #[serde(default = "default_store")]
    pub(super) store: String,
    /// How long a recorded context is kept.
    #[serde(default = "default_ttl", with = "humantime_serde")]
    pub(super) ttl: Duration,
    /// The memory store's bound.
    #[serde(default = "default_max_entries")]
    pub(super) max_entries: u64,
    /// How long one store command may take.
    #[serde(default = "default_store_timeout", with = "humantime_serde")]
    pub(super) store_timeout: Duration,
}

fn default_request_id_sources() -> Vec<RequestIdSource> {
    RequestIdExtractor::default().sources().to_vec()
}
/// `store = "redis"`: the local Redis `scripts/brokers.sh up` starts.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

fn default_store() -> String {
    "memory".into()
}
fn default_ttl() -> Duration {
    Duration::from_secs(3600)
}
fn default_max_entries() -> u64 {
    100_000
}
fn default_store_timeout() -> Duration {
    Duration::from_millis(250)
}

/// `from`, `to` and `dead_letter`: one broker reference plus where on it.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct EndpointSpec {
    /// A `[kafka.NAME]`; exactly one of `kafka` and `amqp`.
    pub(super) kafka: Option<Spanned<String>>,
    /// An `[amqp.NAME]`.
    pub(super) amqp: Option<Spanned<String>>,
    /// Kafka source or destination: required.
    pub(super) topic: Option<String>,
    /// Kafka source: the consumer group.
    pub(super) group: Option<String>,
    /// AMQP source: required.
    pub(super) queue: Option<String>,
    /// AMQP destination.
    pub(super) exchange: Option<String>,
    /// AMQP destination: a fixed routing key.
    pub(super) routing_key: Option<String>,
    /// AMQP destination: `source_key` or `header:NAME` instead.
    pub(super) routing_key_from: Option<String>,
    /// Kafka destination: a fixed record key.
    pub(super) key: Option<String>,
    /// Kafka destination: `source_key` or `header:NAME` instead.
    pub(super) key_from: Option<String>,
}

/// `propagation = { mode, extract, inject, baggage_allowlist }`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(super) struct PropagationSpec {
    /// `join` (the relay's spans are children of the message's context)
    /// or `link` (a new trace linked to it); `ambient` parses but is
    /// refused in `validate`.
    pub(super) mode: ParentPolicy,
    /// New traces linked to the message's are sampled by the link
    /// (`None`: yes).
    pub(super) link_sampling: Option<bool>,
    /// Formats read, first valid wins. `None`: `Propagation::default()`'s.
    pub(super) extract: Option<Vec<Format>>,
    /// Formats written. `None`: `Propagation::default()`'s.
    pub(super) inject: Option<Vec<Format>>,
    /// Baggage keys passed on; the rest are dropped. `None`: all.
    pub(super) baggage_allowlist: Option<Vec<String>>,
}

impl PropagationSpec {
    pub(super) fn formats(&self) -> Propagation {
        let mut p = Propagation::default();
        if let Some(extract) = &self.extract {
            p = p.with_extract(extract.iter().copied());
        }
        if let Some(inject) = &self.inject {
            p = p.with_inject(inject.iter().copied());
        }
        if let Some(keys) = &self.baggage_allowlist {
            p = p.with_baggage_allowlist(keys.iter().cloned());
        }
        p
    }
}

/// `retry = { attempts, backoff }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RetrySpec {
    /// Sends per message before it is dead-lettered.
    pub(super) attempts: u32,
    /// The first wait between attempts, doubling, capped at 30 s.
    #[serde(with = "humantime_serde")]
    pub(super) backoff: Duration,
}

impl Default for RetrySpec {
    fn default() -> Self {
        Self {
            attempts: 5,
            backoff: Duration::from_millis(200),
        }
    }
}

/// How the Kafka key maps to AMQP message properties (both directions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum KeyMapping {
    /// Kafka key ↔ AMQP `correlation_id` (usually the request id).
    #[default]
    CorrelationId,
    /// Kafka key ↔ AMQP `message_id`.
    MessageId,
    /// Not mapped.
    None,
}
