//! The configuration file as written: one struct per table, every key with
//! its default. Only `serde` knows these; `validate.rs` turns them into the
//! types the relay runs on.

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
    /// `[relay]`: the process's own settings (all have defaults).
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
    /// spans and metrics carry (each key defaults to its environment
    /// variable, else the library's default).
    #[serde(default)]
    pub(super) telemetry: TelemetrySpec,
}

/// `[telemetry]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct TelemetrySpec {
    /// `1.45`, `1.44` or `pre-1.26`. Default `TRACEBRIDGE_SEMCONV_VERSION`,
    /// else 1.45; `semconv_version = "1.44"`.
    pub(super) semconv_version: Option<String>,
    /// `as-is`, `hashed` or `omitted`. Default
    /// `TRACEBRIDGE_RECORD_MESSAGE_KEYS`, else `omitted`.
    pub(super) record_message_keys: Option<Treatment>,
    /// Likewise for request ids (`TRACEBRIDGE_RECORD_REQUEST_IDS`).
    pub(super) record_request_ids: Option<Treatment>,
    /// Likewise for captured headers (`TRACEBRIDGE_RECORD_CAPTURED_HEADERS`,
    /// else `as-is`).
    pub(super) record_captured_headers: Option<Treatment>,
    /// Headers recorded as `messaging.header.<name>`. Default
    /// `TRACEBRIDGE_CAPTURE_HEADERS`, else none;
    /// `capture_headers = ["x-tenant"]`.
    pub(super) capture_headers: Option<Vec<String>>,
    /// The HMAC key of `hashed` (16+ bytes; write `${VAR}`). Default
    /// `TRACEBRIDGE_ATTRIBUTE_HASH_KEY`.
    pub(super) attribute_hash_key: Option<String>,
}

/// `[relay]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RelaySpec {
    /// `/healthz`, `/readyz`, `/metrics`. Default `127.0.0.1:9464`;
    /// `listen = "0.0.0.0:9464"`.
    pub(super) listen: SocketAddr,
    /// Messages in flight per route (also the most a crash re-sends).
    /// Default 1024; `max_in_flight = 256`.
    pub(super) max_in_flight: usize,
    /// How long SIGTERM waits for messages in flight. Default `20s`;
    /// `shutdown_timeout = "30s"`.
    #[serde(with = "humantime_serde")]
    pub(super) shutdown_timeout: Duration,
    /// `service.name` unless `OTEL_SERVICE_NAME` says otherwise. Default
    /// `tracebridge`; `service_name = "orders-relay"`.
    pub(super) service_name: String,
}

impl Default for RelaySpec {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
            max_in_flight: 1024,
            shutdown_timeout: Duration::from_secs(20),
            service_name: "tracebridge".into(),
        }
    }
}

/// `[kafka.NAME]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct KafkaSpec {
    /// Required; `bootstrap_servers = "kafka-1:9092,kafka-2:9092"`.
    pub(super) bootstrap_servers: String,
    /// librdkafka properties for every client of this cluster (security,
    /// timeouts); those that would break the relay's guarantees are
    /// refused. Default none;
    /// `properties = { "security.protocol" = "SASL_SSL", "sasl.password" = "${KAFKA_PASSWORD}" }`.
    #[serde(default)]
    pub(super) properties: BTreeMap<String, String>,
}

/// `[amqp.NAME]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AmqpSpec {
    /// Required; `url = "amqp://relay:${AMQP_PASSWORD}@rabbit:5672/%2f"`.
    pub(super) url: String,
}

/// `[[route]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RouteSpec {
    /// Required, unique; in metrics, logs and `tracebridge.route`.
    /// `name = "orders-to-fulfillment"`.
    pub(super) name: String,
    /// Required: where messages are read.
    /// `from = { kafka = "main", topic = "orders", group = "relay" }` or
    /// `from = { amqp = "rabbit", queue = "billing" }`.
    pub(super) from: EndpointSpec,
    /// Required: where they are written.
    /// `to = { amqp = "rabbit", exchange = "fulfillment", routing_key = "order.created" }`
    /// or `to = { kafka = "main", topic = "billing", key_from = "header:x-order" }`.
    pub(super) to: EndpointSpec,
    /// Default: `join`, read and write `tracecontext` + `baggage`.
    #[serde(default)]
    pub(super) propagation: PropagationSpec,
    /// Default `{ attempts = 5, backoff = "200ms" }`.
    #[serde(default)]
    pub(super) retry: RetrySpec,
    /// Where messages go that cannot be delivered. Default none (the route
    /// retries transient failures and stops at a message it can never
    /// send). `dead_letter = { amqp = "rabbit", exchange = "tracebridge.dlx" }`.
    pub(super) dead_letter: Option<EndpointSpec>,
    /// Default `correlation_id`; `key_mapping = "message_id"`.
    #[serde(default)]
    pub(super) key_mapping: KeyMapping,
    /// Correlation by request id for producers that send no context.
    /// Default off; `correlation = { request_id = ["header:x-request-id"] }`.
    pub(super) correlation: Option<CorrelationSpec>,
}

/// `[route.correlation]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CorrelationSpec {
    /// Where the request id is read, first found wins. Default the
    /// `x-request-id` header, then `correlation_id`;
    /// `request_id = ["header:x-request-id", "json:/order/id"]`.
    #[serde(default = "default_request_id_sources")]
    pub(super) request_id: Vec<RequestIdSource>,
    /// `join`, `link` or `derive`. Default `join`.
    #[serde(default)]
    pub(super) policy: Policy,
    /// What `join`/`link` do when the store has nothing: `derive` or
    /// `root`. Default `derive` when a `key` is set, else `root`.
    pub(super) fallback: Option<Fallback>,
    /// The key derived trace ids are hashed with (a secret). Default none;
    /// `key = "${CORRELATION_KEY}"`.
    pub(super) key: Option<String>,
    /// `memory`, `redis` or a `redis://` URL. Default `memory`.
    #[serde(default = "default_store")]
    pub(super) store: String,
    /// How long a recorded context is kept. Default `1h`; `ttl = "10m"`.
    #[serde(default = "default_ttl", with = "humantime_serde")]
    pub(super) ttl: Duration,
    /// The memory store's bound. Default 100000.
    #[serde(default = "default_max_entries")]
    pub(super) max_entries: u64,
    /// How long one store command may take. Default `250ms`.
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
    /// Kafka source: the consumer group. Default `tracebridge-ROUTE`.
    pub(super) group: Option<String>,
    /// AMQP source: required.
    pub(super) queue: Option<String>,
    /// AMQP destination. Default `""` (the default exchange).
    pub(super) exchange: Option<String>,
    /// AMQP destination: a fixed routing key. Default `""`.
    pub(super) routing_key: Option<String>,
    /// AMQP destination: `source_key` or `header:NAME` instead.
    pub(super) routing_key_from: Option<String>,
    /// Kafka destination: a fixed record key. Default: the source's key.
    pub(super) key: Option<String>,
    /// Kafka destination: `source_key` or `header:NAME` instead.
    pub(super) key_from: Option<String>,
}

/// `propagation = { mode, extract, inject, baggage_allowlist }`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(super) struct PropagationSpec {
    /// `join` (the relay's spans are children of the message's context)
    /// or `link` (a new trace linked to it). Default `join`.
    pub(super) mode: ParentPolicy,
    /// Formats read, first valid wins. Default `["tracecontext", "baggage"]`;
    /// `extract = ["tracecontext", "b3", "jaeger"]`.
    pub(super) extract: Option<Vec<Format>>,
    /// Formats written. Default `["tracecontext", "baggage"]`.
    pub(super) inject: Option<Vec<Format>>,
    /// Baggage keys passed on; the rest are dropped. Default: all;
    /// `baggage_allowlist = ["tenant"]`.
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
    /// Sends per message before it is dead-lettered. Default 5.
    pub(super) attempts: u32,
    /// The first wait between attempts, doubling, capped at 30 s.
    /// Default `200ms`.
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
    /// Kafka key ↔ AMQP `correlation_id` (the default: usually the request id).
    #[default]
    CorrelationId,
    /// Kafka key ↔ AMQP `message_id`.
    MessageId,
    /// Not mapped.
    None,
}
