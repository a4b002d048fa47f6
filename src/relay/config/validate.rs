//! From the file as written to the configuration the relay runs on: broker
//! references resolved, each route's shape checked, and the properties
//! that would break the relay's guarantees refused, every problem at once.

use crate::MessagingMetric;
use std::collections::BTreeMap;

use super::parse::line_of;
use super::schema::{CorrelationSpec, EndpointSpec, FileSpec, TelemetrySpec};
use super::*;
use crate::correlate::RequestIdExtractor;
use crate::semconv::{
    AttributePolicy, AttributeRules, Conventions, HashKey, SEMCONV_VERSION_ENV, SemconvVersion,
    policy_env,
};

/// The largest `max_in_flight`: RabbitMQ's prefetch count is 16 bits.
const MAX_IN_FLIGHT_MAX: usize = 65_535;
/// The largest `max_in_flight_bytes`: 1 GiB a route.
const MAX_IN_FLIGHT_BYTES_MAX: usize = 1 << 30;

/// Resolves broker references and checks each route's shape, adding to the
/// `problems` reading found.
pub(super) fn validate(
    spec: FileSpec,
    origin: &str,
    text: &str,
    mut problems: Vec<String>,
) -> Result<RelayConfig, ConfigErrors> {
    let mut kafka: BTreeMap<String, KafkaBroker> = BTreeMap::new();
    for (name, section) in spec.kafka {
        let at = format!(
            "{origin}:{}: kafka.{name}",
            line_of(text, section.span().start)
        );
        let section = section.into_inner();
        let broker = KafkaBroker {
            name: name.clone(),
            bootstrap_servers: section.bootstrap_servers,
            properties: section.properties,
        };
        kafka_guards(&at, &broker, &mut problems);
        kafka.insert(name, broker);
    }
    let mut amqp: BTreeMap<String, AmqpBroker> = BTreeMap::new();
    for (name, section) in spec.amqp {
        let at = format!(
            "{origin}:{}: amqp.{name}",
            line_of(text, section.span().start)
        );
        let broker = AmqpBroker {
            name: name.clone(),
            url: section.into_inner().url,
        };
        if !broker.url.starts_with("amqp://") && !broker.url.starts_with("amqps://") {
            problems.push(format!(
                "{at}.url: `{}` is not an amqp:// or amqps:// URL",
                broker.redacted_url()
            ));
        }
        amqp.insert(name, broker);
    }
    if !(1..=MAX_IN_FLIGHT_MAX).contains(&spec.relay.max_in_flight) {
        problems.push(format!(
            "{origin}: relay.max_in_flight: {} is outside 1 to {MAX_IN_FLIGHT_MAX} (an AMQP prefetch count is 16 bits, and a crash re-sends this many)",
            spec.relay.max_in_flight
        ));
    }
    if !(1..=MAX_IN_FLIGHT_BYTES_MAX).contains(&spec.relay.max_in_flight_bytes) {
        problems.push(format!(
            "{origin}: relay.max_in_flight_bytes: {} is outside 1 to {MAX_IN_FLIGHT_BYTES_MAX} (1 GiB a route)",
            spec.relay.max_in_flight_bytes
        ));
    }
    if spec.route.is_empty() {
        problems.push(format!("{origin}: no [[route]] is configured"));
    }
    if let Some(id) = &spec.relay.instance_id
        && let Err(why) = check_instance_id(id)
    {
        problems.push(format!("{origin}: relay.instance_id: {why}"));
    }

    let mut routes = Vec::new();
    // Each route's location in the file, for the guards across routes.
    let mut located: Vec<String> = Vec::new();
    let mut names = std::collections::BTreeSet::new();
    for (index, route) in spec.route.into_iter().enumerate() {
        let line = line_of(text, route.span().start);
        let route = route.into_inner();
        let label = format!("route[{index}] ({})", route.name);
        let at = format!("{origin}:{line}: {label}");
        if !names.insert(route.name.clone()) {
            problems.push(format!(
                "{at}: name: another route is already called `{}`",
                route.name
            ));
        }
        let resolver = Resolver {
            kafka: &kafka,
            amqp: &amqp,
            origin,
            text,
            label: &label,
        };
        let source = resolver.source(&at, &route.name, route.from, &mut problems);
        let sink = resolver.sink(&at, "to", route.to, &mut problems);
        let dead_letter = route
            .dead_letter
            .map(|d| resolver.sink(&at, "dead_letter", d, &mut problems));
        if route.retry.attempts == 0 {
            problems.push(format!("{at}: retry.attempts: must be at least 1"));
        }
        if route.propagation.mode == ParentPolicy::Ambient {
            problems.push(format!(
                "{at}: propagation.mode: `ambient` means nothing in the relay (no span is current where it reads); write `join` or `link`"
            ));
        }
        let correlation = route
            .correlation
            .and_then(|c| correlation(&at, c, &mut problems));
        if let (Some(source), Some(sink)) = (source, sink) {
            located.push(at.clone());
            routes.push(Route {
                name: route.name,
                source,
                sink,
                mode: route.propagation.mode,
                link_sampling: route.propagation.link_sampling.unwrap_or(true),
                propagation: route.propagation.formats(),
                attempts: route.retry.attempts.max(1),
                backoff: route.retry.backoff,
                dead_letter: dead_letter.flatten(),
                key_mapping: route.key_mapping,
                correlation,
            });
        }
    }
    for (at, route) in located.iter().zip(&routes) {
        super::guards::names(at, route, &mut problems);
    }
    let located: Vec<(String, &Route)> = located.into_iter().zip(&routes).collect();
    super::guards::loops(&located, &mut problems);
    let metrics = metrics(origin, spec.telemetry.metrics.as_deref(), &mut problems);
    let attribute_rules = attribute_rules(origin, spec.telemetry, &mut problems);
    if problems.is_empty() {
        Ok(RelayConfig {
            listen: spec.relay.listen,
            max_in_flight: spec.relay.max_in_flight,
            max_in_flight_bytes: spec.relay.max_in_flight_bytes,
            shutdown_timeout: spec.relay.shutdown_timeout,
            service_name: spec.relay.service_name,
            instance_id: spec.relay.instance_id,
            routes,
            attribute_rules,
            metrics,
        })
    } else {
        Err(ConfigErrors { problems })
    }
}

/// `[telemetry] metrics`: the metrics named (all when left out), each name
/// checked.
fn metrics(
    origin: &str,
    names: Option<&[String]>,
    problems: &mut Vec<String>,
) -> Vec<MessagingMetric> {
    let Some(names) = names else {
        return MessagingMetric::ALL.to_vec();
    };
    names
        .iter()
        .filter_map(|name| {
            let metric = MessagingMetric::from_name(name);
            if metric.is_none() {
                let known: Vec<&str> = MessagingMetric::ALL.iter().map(|m| m.name()).collect();
                problems.push(format!(
                    "{origin}: telemetry.metrics: unknown metric `{name}` (expected any of: {})",
                    known.join(", ")
                ));
            }
            metric
        })
        .collect()
}

/// `[telemetry]` over the environment: each key the file sets wins.
fn attribute_rules(
    origin: &str,
    spec: TelemetrySpec,
    problems: &mut Vec<String>,
) -> AttributeRules {
    let at = format!("{origin}: telemetry");
    let env = |name: &str| std::env::var(name).ok();
    let version = match &spec.semconv_version {
        Some(text) => SemconvVersion::parse(text)
            .map_err(|err| problems.push(format!("{at}.semconv_version: {err}")))
            .unwrap_or_default(),
        None => match Conventions::try_from_env() {
            Ok(conventions) => conventions.version,
            Err(err) => {
                problems.push(format!("{at}: {err} (in {SEMCONV_VERSION_ENV})"));
                SemconvVersion::default()
            }
        },
    };
    let conventions = Conventions {
        version,
        ..Conventions::from_env()
    };
    // The environment first (reported as such), then the file's keys.
    let mut policy = AttributePolicy::from_lookup(|name| {
        // Checked together with the file's keys below.
        env(name).filter(|_| name != policy_env::HASH_KEY)
    })
    .unwrap_or_else(|err| {
        problems.push(format!("{at}: {err}"));
        AttributePolicy::default()
    });
    if let Some(t) = spec.record_message_keys {
        policy = policy.with_message_keys(t);
    }
    if let Some(t) = spec.record_request_ids {
        policy = policy.with_request_ids(t);
    }
    if let Some(t) = spec.record_captured_headers {
        policy = policy.with_captured_headers(t);
    }
    if let Some(names) = &spec.capture_headers {
        policy = policy.with_capture(names);
    }
    let key = spec
        .attribute_hash_key
        .or_else(|| env(policy_env::HASH_KEY))
        .filter(|k| !k.is_empty());
    if let Some(key) = key {
        match HashKey::new(key) {
            Ok(key) => policy = policy.with_hash_key(key),
            Err(err) => problems.push(format!("{at}.attribute_hash_key: {err}")),
        }
    }
    let policy = policy.build().unwrap_or_else(|err| {
        problems.push(format!("{at}: {err}"));
        AttributePolicy::default()
    });
    AttributeRules {
        conventions,
        policy,
    }
}

fn correlation(at: &str, spec: CorrelationSpec, problems: &mut Vec<String>) -> Option<Correlation> {
    let before = problems.len();
    let at = format!("{at}: correlation");
    if spec.request_id.is_empty() {
        problems.push(format!("{at}.request_id: name at least one source"));
    }
    let key = spec
        .key
        .filter(|k| !k.is_empty())
        .map(|k| std::sync::Arc::from(k.into_bytes()));
    // With a key, a miss can still land in a stable trace: derive by default.
    let fallback = spec.fallback.unwrap_or(if key.is_some() {
        Fallback::Derive
    } else {
        Fallback::Root
    });
    if key.is_none() && (spec.policy == Policy::Derive || fallback == Fallback::Derive) {
        problems.push(format!(
            "{at}.key: `derive` needs a secret key (e.g. key = \"${{TRACEBRIDGE_CORRELATION_KEY}}\")"
        ));
    }
    if key.is_none() && spec.journey_sampling {
        problems.push(format!(
            "{at}.key: `journey_sampling` needs a secret key (e.g. key = \"${{TRACEBRIDGE_CORRELATION_KEY}}\")"
        ));
    }
    if spec.ttl.is_zero() {
        problems.push(format!("{at}.ttl: must be longer than 0s"));
    }
    let store = match spec.store.as_str() {
        "memory" => {
            if spec.max_entries == 0 {
                problems.push(format!("{at}.max_entries: must be at least 1"));
            }
            StoreSpec::Memory {
                max_entries: spec.max_entries,
                ttl: spec.ttl,
            }
        }
        "redis" => StoreSpec::Redis {
            url: DEFAULT_REDIS_URL.to_owned(),
            ttl: spec.ttl,
            timeout: spec.store_timeout,
        },
        url if url.starts_with("redis://") || url.starts_with("rediss://") => StoreSpec::Redis {
            url: url.to_owned(),
            ttl: spec.ttl,
            timeout: spec.store_timeout,
        },
        other => {
            problems.push(format!(
                "{at}.store: `{}` is not \"memory\", \"redis\" or a redis:// URL",
                redact_url(other)
            ));
            return None;
        }
    };
    (problems.len() == before).then(|| Correlation {
        request_id: RequestIdExtractor::new(spec.request_id),
        policy: spec.policy,
        fallback,
        key,
        journey_sampling: spec.journey_sampling,
        store,
    })
}

struct Resolver<'a> {
    kafka: &'a BTreeMap<String, KafkaBroker>,
    amqp: &'a BTreeMap<String, AmqpBroker>,
    origin: &'a str,
    text: &'a str,
    /// `route[INDEX] (NAME)`, for problems reported at another line.
    label: &'a str,
}

enum Broker {
    Kafka(KafkaBroker),
    Amqp(AmqpBroker),
}

impl Resolver<'_> {
    fn broker(
        &self,
        at: &str,
        key: &str,
        spec: &EndpointSpec,
        problems: &mut Vec<String>,
    ) -> Option<Broker> {
        // An unknown name is reported at its own line.
        let here = self.label;
        match (&spec.kafka, &spec.amqp) {
            (Some(name), None) => match self.kafka.get(name.get_ref()) {
                Some(b) => Some(Broker::Kafka(b.clone())),
                None => {
                    problems.push(format!(
                        "{}:{}: {here}: {key}.kafka: no [kafka.{}] section is defined",
                        self.origin,
                        line_of(self.text, name.span().start),
                        name.get_ref()
                    ));
                    None
                }
            },
            (None, Some(name)) => match self.amqp.get(name.get_ref()) {
                Some(b) => Some(Broker::Amqp(b.clone())),
                None => {
                    problems.push(format!(
                        "{}:{}: {here}: {key}.amqp: no [amqp.{}] section is defined",
                        self.origin,
                        line_of(self.text, name.span().start),
                        name.get_ref()
                    ));
                    None
                }
            },
            (Some(_), Some(_)) => {
                problems.push(format!(
                    "{at}: {key}: names both `kafka` and `amqp`; a side is one broker"
                ));
                None
            }
            (None, None) => {
                problems.push(format!(
                    "{at}: {key}: needs `kafka = \"NAME\"` or `amqp = \"NAME\"`"
                ));
                None
            }
        }
    }

    fn source(
        &self,
        at: &str,
        route: &str,
        spec: EndpointSpec,
        problems: &mut Vec<String>,
    ) -> Option<Source> {
        let broker = self.broker(at, "from", &spec, problems)?;
        let mut misplaced = |field: &str, present: bool| {
            if present {
                problems.push(format!(
                    "{at}: from.{field}: not used by this kind of source"
                ));
            }
        };
        match broker {
            Broker::Kafka(broker) => {
                misplaced("queue", spec.queue.is_some());
                misplaced("exchange", spec.exchange.is_some());
                misplaced("routing_key", spec.routing_key.is_some());
                let Some(topic) = spec.topic.filter(|t| !t.trim().is_empty()) else {
                    problems.push(format!(
                        "{at}: from.topic: a Kafka source needs a topic (missing or empty)"
                    ));
                    return None;
                };
                Some(Source::Kafka {
                    broker,
                    topic,
                    group: spec.group.unwrap_or_else(|| format!("tracebridge-{route}")),
                })
            }
            Broker::Amqp(broker) => {
                misplaced("topic", spec.topic.is_some());
                misplaced("group", spec.group.is_some());
                misplaced("exchange", spec.exchange.is_some());
                let Some(queue) = spec.queue.filter(|q| !q.trim().is_empty()) else {
                    problems.push(format!(
                        "{at}: from.queue: an AMQP source needs a queue (missing or empty)"
                    ));
                    return None;
                };
                Some(Source::Amqp { broker, queue })
            }
        }
    }

    fn sink(
        &self,
        at: &str,
        key: &str,
        spec: EndpointSpec,
        problems: &mut Vec<String>,
    ) -> Option<Sink> {
        let broker = self.broker(at, key, &spec, problems)?;
        match broker {
            Broker::Kafka(broker) => {
                for (field, present) in [
                    ("group", spec.group.is_some()),
                    ("queue", spec.queue.is_some()),
                    ("exchange", spec.exchange.is_some()),
                    ("routing_key", spec.routing_key.is_some()),
                    ("routing_key_from", spec.routing_key_from.is_some()),
                ] {
                    if present {
                        problems.push(format!(
                            "{at}: {key}.{field}: not used by a Kafka destination"
                        ));
                    }
                }
                let record_key = key_source(
                    at,
                    &format!("{key}.key"),
                    spec.key,
                    spec.key_from.as_deref(),
                    KeySource::SourceKey,
                    problems,
                )?;
                let Some(topic) = spec.topic.filter(|t| !t.trim().is_empty()) else {
                    problems.push(format!(
                        "{at}: {key}.topic: a Kafka destination needs a topic (missing or empty)"
                    ));
                    return None;
                };
                Some(Sink::Kafka {
                    broker,
                    topic,
                    key: record_key,
                })
            }
            Broker::Amqp(broker) => {
                for (field, present) in [
                    ("topic", spec.topic.is_some()),
                    ("group", spec.group.is_some()),
                    ("queue", spec.queue.is_some()),
                ] {
                    if present {
                        problems.push(format!(
                            "{at}: {key}.{field}: not used by an AMQP destination"
                        ));
                    }
                }
                for (field, present) in [
                    ("key", spec.key.is_some()),
                    ("key_from", spec.key_from.is_some()),
                ] {
                    if present {
                        problems.push(format!(
                            "{at}: {key}.{field}: not used by an AMQP destination (use routing_key)"
                        ));
                    }
                }
                let routing_key = key_source(
                    at,
                    &format!("{key}.routing_key"),
                    spec.routing_key,
                    spec.routing_key_from.as_deref(),
                    KeySource::Fixed(String::new()),
                    problems,
                )?;
                Some(Sink::Amqp {
                    broker,
                    exchange: spec.exchange.unwrap_or_default(),
                    routing_key,
                })
            }
        }
    }
}

/// `NAME = "fixed"` or `NAME_from = "source_key" | "header:NAME"`.
fn key_source(
    at: &str,
    name: &str,
    fixed: Option<String>,
    from: Option<&str>,
    default: KeySource,
    problems: &mut Vec<String>,
) -> Option<KeySource> {
    match (fixed, from) {
        (Some(_), Some(_)) => {
            problems.push(format!(
                "{at}: {name}: give `{name}` or `{name}_from`, not both"
            ));
            None
        }
        (Some(fixed), None) => Some(KeySource::Fixed(fixed)),
        (None, None) => Some(default),
        (None, Some("source_key")) => Some(KeySource::SourceKey),
        (None, Some(other)) => match other.strip_prefix("header:") {
            Some(header) if !header.is_empty() => Some(KeySource::Header(header.to_owned())),
            _ => {
                problems.push(format!(
                    "{at}: {name}_from: `{other}` is not `source_key` or `header:NAME`"
                ));
                None
            }
        },
    }
}

/// librdkafka properties the relay sets itself from typed keys, or that
/// would break its at-least-once promise: rejected with the reason. The
/// same properties go to a cluster's consumers and producers, so each is
/// checked whatever role the cluster plays.
fn kafka_guards(at: &str, broker: &KafkaBroker, problems: &mut Vec<String>) {
    if broker.bootstrap_servers.trim().is_empty() {
        problems.push(format!("{at}.bootstrap_servers: is empty"));
    }
    for (key, value) in &broker.properties {
        let shown = if is_secret_key(key) {
            "***"
        } else {
            value.as_str()
        };
        let reason = match (key.as_str(), value.trim()) {
            ("bootstrap.servers" | "metadata.broker.list", _) => {
                Some("set `bootstrap_servers` instead (the typed key)".to_owned())
            }
            ("group.id", _) => {
                Some("set the route's `from.group` instead (each route has its own)".to_owned())
            }
            ("group.instance.id", _) => Some(
                "set `[relay] instance_id` instead (each route's consumer needs an id of its own; one shared id would fence the others)".to_owned(),
            ),
            ("enable.auto.commit" | "auto.commit.enable", "false") => None,
            ("enable.auto.commit" | "auto.commit.enable", _) => Some(format!(
                "`{shown}`: must stay false — the relay commits an offset only once the sink confirmed the message; auto-commit loses messages in a crash"
            )),
            ("acks" | "request.required.acks", "all" | "-1") => None,
            ("acks" | "request.required.acks", _) => Some(format!(
                "`{shown}`: must be `all` — the relay acknowledges the source once the sink confirmed; fewer acks lose confirmed messages when a broker fails"
            )),
            ("auto.offset.reset", "earliest" | "smallest" | "beginning") => None,
            ("auto.offset.reset", _) => Some(format!(
                "`{shown}`: must stay `earliest` — a route's new consumer group would skip every message already waiting (a backlog lost)"
            )),
            ("enable.idempotence", "true") => None,
            ("enable.idempotence", _) => Some(format!(
                "`{shown}`: must stay true — without it a retried send can be written twice and out of order"
            )),
            _ => None,
        };
        if let Some(reason) = reason {
            problems.push(format!("{at}.properties.\"{key}\": {reason}"));
        }
    }
    // librdkafka's own check of every name and value, without connecting:
    // one property at a time, because it stops at the first it rejects.
    let secrets = broker.secrets();
    for (key, value) in &broker.properties {
        let mut config = rdkafka::ClientConfig::new();
        config.set(key, value);
        if let Err(err) = config.create_native_config() {
            problems.push(format!(
                "{at}.properties.\"{key}\": librdkafka rejects it: {}",
                crate::redact::redact_secrets(&err.to_string(), &secrets)
            ));
        }
    }
}

/// Kafka's rule for a `group.instance.id` (as for topic names): 1 to 249
/// ASCII letters, digits, `.`, `_` and `-`; the route's name is appended.
fn check_instance_id(id: &str) -> Result<(), String> {
    const MAX: usize = 200;
    if id.is_empty() {
        return Err("must not be empty (leave it out for dynamic membership)".into());
    }
    if id.len() > MAX {
        return Err(format!(
            "{} bytes; at most {MAX} (Kafka allows 249 with the route's name appended)",
            id.len()
        ));
    }
    if let Some(bad) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "`{}` has {bad:?}; only ASCII letters, digits, `.`, `_` and `-` are allowed",
            crate::relay::message::prefix(id, 64)
        ));
    }
    Ok(())
}
