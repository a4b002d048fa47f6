//! The relay's configuration file (TOML): what it says, how it is read, and
//! how it is checked, one step per file:
//!
//! * `schema.rs`: the file as written, one struct per table;
//! * `reference.rs` (tests only): every key with its type, default and an
//!   example — the one place they are written in prose, rendered into
//!   `docs/config-reference.md` and checked against the parser by
//!   `reference_tests.rs`;
//! * `env.rs`: `${VAR}` / `${VAR:-default}` expansion in the text (so
//!   secrets live in the environment, never in the file);
//! * `parse.rs`: TOML into the schema's structs, every unknown key and bad
//!   value reported, not only the first;
//! * `validate.rs`: broker references resolved, each route's shape and the
//!   guarantees' guards checked, into the types below ([`RelayConfig`]).
//!
//! Each step reports every problem it finds with the file, line and key.

mod env;
mod guards;
mod parse;
#[cfg(test)]
mod reference;
#[cfg(test)]
mod reference_tests;
mod schema;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::correlate::{Fallback, Policy, RequestIdExtractor};
use crate::instrument::ParentPolicy;
use crate::propagation::Propagation;

pub use schema::{DEFAULT_REDIS_URL, KeyMapping};

/// `[relay] max_in_flight_bytes` unless set: 16 MiB a route. Messages up to
/// 16 KB still fill the 1 024-message window; at 100 KB the route holds 168.
pub const DEFAULT_MAX_IN_FLIGHT_BYTES: usize = 16 * 1024 * 1024;

/// Everything wrong with a configuration, each with its location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    /// `file:line: key: what is wrong`, one per problem.
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} problem(s) in the configuration:",
            self.problems.len()
        )?;
        for problem in &self.problems {
            writeln!(f, "  {problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

// ---- the validated configuration ----

/// A validated relay configuration.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Address of `/healthz`, `/readyz`, `/metrics`.
    pub listen: SocketAddr,
    /// Messages in flight per route (unconfirmed by the sink).
    pub max_in_flight: usize,
    /// Bytes of messages in flight per route: reading stops at this many
    /// (a larger message is relayed alone).
    pub max_in_flight_bytes: usize,
    /// How long a graceful shutdown may take.
    pub shutdown_timeout: Duration,
    /// `service.name` of the relay's spans (overridden by `OTEL_SERVICE_NAME`).
    pub service_name: String,
    /// This relay's stable identity in its Kafka consumer groups: each
    /// Kafka route's consumer is the static member `INSTANCE_ID.ROUTE`
    /// (`group.instance.id`), so a restart takes its partitions back at once
    /// instead of after the session timeout.
    pub instance_id: Option<String>,
    /// The routes.
    pub routes: Vec<Route>,
    /// `[telemetry]` over the environment: the convention keys and the
    /// attribute policy of every span and metric.
    pub attribute_rules: crate::semconv::AttributeRules,
    /// `[telemetry] metrics`: the messaging metrics recorded.
    pub metrics: Vec<crate::MessagingMetric>,
}

/// A Kafka cluster.
#[derive(Clone, PartialEq, Eq)]
pub struct KafkaBroker {
    /// Its name in the file.
    pub name: String,
    /// `bootstrap.servers`.
    pub bootstrap_servers: String,
    /// Further librdkafka properties, applied after tracebridge's own.
    pub properties: BTreeMap<String, String>,
}

impl fmt::Debug for KafkaBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let properties: BTreeMap<&str, &str> = self
            .properties
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str(),
                    if is_secret_key(k) { "***" } else { v.as_str() },
                )
            })
            .collect();
        f.debug_struct("KafkaBroker")
            .field("name", &self.name)
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("properties", &properties)
            .finish()
    }
}

/// An AMQP broker.
#[derive(Clone, PartialEq, Eq)]
pub struct AmqpBroker {
    /// Its name in the file.
    pub name: String,
    /// The `amqp://` URL (may hold a password: never printed, see
    /// [`AmqpBroker::redacted_url`]).
    pub url: String,
}

impl KafkaBroker {
    /// The values of its secret properties (see [`is_secret_key`]).
    pub fn secrets(&self) -> Vec<String> {
        self.properties
            .iter()
            .filter(|(k, v)| is_secret_key(k) && !v.is_empty())
            .map(|(_, v)| v.clone())
            .collect()
    }
}

impl RelayConfig {
    /// Every secret the configuration holds (secret Kafka properties, URL
    /// passwords, correlation keys): [`crate::redact::redact_secrets`]
    /// takes them out of any client library's error text.
    pub fn secrets(&self) -> Vec<String> {
        let mut secrets = Vec::new();
        for route in &self.routes {
            let sinks = std::iter::once(&route.sink).chain(route.dead_letter.as_ref());
            let kafka = sinks.filter_map(|s| match s {
                Sink::Kafka { broker, .. } => Some(broker),
                Sink::Amqp { .. } => None,
            });
            for broker in kafka {
                secrets.extend(broker.secrets());
            }
            let urls = [&route.source]
                .into_iter()
                .filter_map(|s| match s {
                    Source::Amqp { broker, .. } => Some(broker.url.as_str()),
                    Source::Kafka { .. } => None,
                })
                .chain(
                    std::iter::once(&route.sink)
                        .chain(route.dead_letter.as_ref())
                        .filter_map(|s| match s {
                            Sink::Amqp { broker, .. } => Some(broker.url.as_str()),
                            Sink::Kafka { .. } => None,
                        }),
                );
            secrets.extend(urls.flat_map(crate::redact::url_credentials));
            if let Source::Kafka { broker, .. } = &route.source {
                secrets.extend(broker.secrets());
            }
            if let Some(c) = &route.correlation {
                if let StoreSpec::Redis { url, .. } = &c.store {
                    secrets.extend(crate::redact::url_credentials(url));
                }
                if let Some(key) = &c.key {
                    secrets.push(String::from_utf8_lossy(key).into_owned());
                }
            }
        }
        secrets.extend(self.attribute_rules.policy.hash_key_text());
        secrets.sort();
        secrets.dedup();
        secrets
    }
}

impl AmqpBroker {
    /// The URL with its user name and password replaced by `***`.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }
}

impl fmt::Debug for AmqpBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmqpBroker")
            .field("name", &self.name)
            .field("url", &self.redacted_url())
            .finish()
    }
}

/// Where a route reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A Kafka topic, read by a consumer group.
    Kafka {
        /// The cluster.
        broker: KafkaBroker,
        /// The topic.
        topic: String,
        /// The consumer group.
        group: String,
    },
    /// An AMQP queue.
    Amqp {
        /// The broker.
        broker: AmqpBroker,
        /// The queue.
        queue: String,
    },
}

/// Where the routing key of an AMQP publish, or the key of a Kafka record,
/// comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// Always this value.
    Fixed(String),
    /// The source message's Kafka key (or AMQP routing key).
    SourceKey,
    /// A header of the source message.
    Header(String),
}

/// Where a route (or its dead letters) writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sink {
    /// A Kafka topic.
    Kafka {
        /// The cluster.
        broker: KafkaBroker,
        /// The topic.
        topic: String,
        /// Where the record key comes from (`SourceKey`: the Kafka key, or
        /// the AMQP property of `key_mapping`).
        key: KeySource,
    },
    /// An AMQP exchange.
    Amqp {
        /// The broker.
        broker: AmqpBroker,
        /// The exchange (`""` = the default exchange).
        exchange: String,
        /// The routing key.
        routing_key: KeySource,
    },
}

/// One validated route.
#[derive(Debug, Clone)]
pub struct Route {
    /// Its name (in logs, metrics and spans).
    pub name: String,
    /// Where it reads.
    pub source: Source,
    /// Where it writes.
    pub sink: Sink,
    /// `join` or `link`.
    pub mode: ParentPolicy,
    /// New traces linked to the message's are sampled by the link.
    pub link_sampling: bool,
    /// Formats read and written.
    pub propagation: Propagation,
    /// Attempts per message before dead-lettering (at least 1).
    pub attempts: u32,
    /// Wait before the first retry; doubled each time.
    pub backoff: Duration,
    /// Where messages go after the last failed attempt.
    pub dead_letter: Option<Sink>,
    /// Kafka key ↔ AMQP property.
    pub key_mapping: KeyMapping,
    /// Correlation by request id, when configured.
    pub correlation: Option<Correlation>,
}

/// A route's `[route.correlation]`, validated.
#[derive(Clone)]
pub struct Correlation {
    /// Where the request id comes from, in order.
    pub request_id: RequestIdExtractor,
    /// What to do with messages that have an id but no context.
    pub policy: Policy,
    /// What `join`/`link` do when the store has nothing.
    pub fallback: Fallback,
    /// The `derive` key (never printed).
    pub key: Option<std::sync::Arc<[u8]>>,
    /// One `rv`, from the request id, for the traces of one request.
    pub journey_sampling: bool,
    /// Where request id → context is kept.
    pub store: StoreSpec,
}

impl fmt::Debug for Correlation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Correlation")
            .field("request_id", &self.request_id)
            .field("policy", &self.policy)
            .field("fallback", &self.fallback)
            .field("key", &self.key.as_ref().map(|_| "***"))
            .field("journey_sampling", &self.journey_sampling)
            .field("store", &self.store)
            .finish()
    }
}

/// Which correlation store, with its settings. Routes whose stores are
/// equal share one store, so a context recorded on one route is found by
/// another.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum StoreSpec {
    /// In this process: at most `max_entries`, each kept `ttl`.
    Memory {
        /// The bound.
        max_entries: u64,
        /// Time to live.
        ttl: Duration,
    },
    /// Redis at `url`; keys live `ttl`; each command waits at most `timeout`.
    Redis {
        /// `redis://` or `rediss://` (may hold a password: never printed).
        url: String,
        /// Time to live.
        ttl: Duration,
        /// Per-command timeout.
        timeout: Duration,
    },
}

impl fmt::Debug for StoreSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreSpec::Memory { max_entries, ttl } => {
                write!(f, "memory (max {max_entries}, ttl {ttl:?})")
            }
            StoreSpec::Redis { url, ttl, timeout } => {
                write!(f, "{} (ttl {ttl:?}, timeout {timeout:?})", redact_url(url))
            }
        }
    }
}

// ---- reading ----

impl RelayConfig {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors {
            problems: vec![format!("{}: cannot read: {e}", path.display())],
        })?;
        Self::parse(&text, &path.display().to_string(), |name| {
            std::env::var(name).ok()
        })
    }

    /// Reads and validates `text` (named `origin` in messages), expanding
    /// `${VAR}` with `env`.
    pub fn parse(
        text: &str,
        origin: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigErrors> {
        let expanded = env::expand_env(text, origin, env)?;
        let (spec, problems) = parse::read_spec(origin, &expanded);
        match spec {
            Some(spec) => validate::validate(spec, origin, &expanded, problems),
            None => Err(ConfigErrors { problems }),
        }
    }
}

/// librdkafka's own sensitive properties (`_RK_SENSITIVE` in
/// `rdkafka_conf.c` of librdkafka 2.12.1, the version linked): it redacts
/// them in its own dumps, and so does tracebridge everywhere it prints.
pub const KAFKA_SENSITIVE_PROPERTIES: [&str; 13] = [
    "ssl.key.location",
    "ssl.key.password",
    "ssl.key.pem",
    "ssl_key",
    "ssl.ca.pem",
    "ssl.keystore.password",
    "sasl.username",
    "sasl.password",
    "sasl.oauthbearer.config",
    "sasl.oauthbearer.client.secret",
    "sasl.oauthbearer.assertion.private.key.file",
    "sasl.oauthbearer.assertion.private.key.passphrase",
    "sasl.oauthbearer.assertion.private.key.pem",
];

/// Whether a property's value is a secret, never printed: librdkafka's
/// sensitive properties, and any name that says password, secret, token,
/// credential, private or key material.
pub fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    KAFKA_SENSITIVE_PROPERTIES.contains(&key.as_str())
        || [
            "password",
            "passphrase",
            "secret",
            "token",
            "credential",
            "sasl.jaas",
            "key.pem",
            "private",
        ]
        .iter()
        .any(|s| key.contains(s))
}

pub use crate::redact::redact_url;

#[cfg(test)]
mod tests;
