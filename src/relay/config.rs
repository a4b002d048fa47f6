//! The relay's configuration file (TOML): what it says, how it is read, and
//! how it is checked.
//!
//! Reading happens in three steps, each reporting every problem it finds
//! with the file, line and key: `${VAR}` / `${VAR:-default}` expansion in
//! the text (so secrets live in the environment, never in the file), TOML
//! parsing into the `*Spec` structs (unknown keys and bad values rejected,
//! all of them: see `read_spec`),
//! and validation into [`RelayConfig`] (broker references resolved, each
//! route's shape checked).

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::correlate::{Fallback, Policy, RequestIdExtractor, RequestIdSource};
use crate::instrument::ParentPolicy;
use crate::propagation::{Format, Propagation};

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

// ---- the file as written ----

/// The file's top level.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    #[serde(default)]
    relay: RelaySpec,
    #[serde(default)]
    kafka: BTreeMap<String, Spanned<KafkaSpec>>,
    #[serde(default)]
    amqp: BTreeMap<String, Spanned<AmqpSpec>>,
    #[serde(default)]
    route: Vec<Spanned<RouteSpec>>,
}

/// `[relay]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RelaySpec {
    listen: SocketAddr,
    max_in_flight: usize,
    #[serde(with = "humantime_serde")]
    shutdown_timeout: Duration,
    service_name: String,
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
struct KafkaSpec {
    bootstrap_servers: String,
    #[serde(default)]
    properties: BTreeMap<String, String>,
}

/// `[amqp.NAME]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AmqpSpec {
    url: String,
}

/// `[[route]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteSpec {
    name: String,
    from: EndpointSpec,
    to: EndpointSpec,
    #[serde(default)]
    propagation: PropagationSpec,
    #[serde(default)]
    retry: RetrySpec,
    dead_letter: Option<EndpointSpec>,
    #[serde(default)]
    key_mapping: KeyMapping,
    correlation: Option<CorrelationSpec>,
}

/// `[route.correlation]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CorrelationSpec {
    #[serde(default = "default_request_id_sources")]
    request_id: Vec<RequestIdSource>,
    #[serde(default)]
    policy: Policy,
    fallback: Option<Fallback>,
    key: Option<String>,
    #[serde(default = "default_store")]
    store: String,
    #[serde(default = "default_ttl", with = "humantime_serde")]
    ttl: Duration,
    #[serde(default = "default_max_entries")]
    max_entries: u64,
    #[serde(default = "default_store_timeout", with = "humantime_serde")]
    store_timeout: Duration,
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
struct EndpointSpec {
    kafka: Option<Spanned<String>>,
    amqp: Option<Spanned<String>>,
    topic: Option<String>,
    group: Option<String>,
    queue: Option<String>,
    exchange: Option<String>,
    routing_key: Option<String>,
    routing_key_from: Option<String>,
    key: Option<String>,
    key_from: Option<String>,
}

/// `propagation = { mode, extract, inject, baggage_allowlist }`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct PropagationSpec {
    mode: ParentPolicy,
    extract: Option<Vec<Format>>,
    inject: Option<Vec<Format>>,
    baggage_allowlist: Option<Vec<String>>,
}

impl PropagationSpec {
    fn formats(&self) -> Propagation {
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RetrySpec {
    attempts: u32,
    #[serde(with = "humantime_serde")]
    backoff: Duration,
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

// ---- the validated configuration ----

/// A validated relay configuration.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Address of `/healthz`, `/readyz`, `/metrics`.
    pub listen: SocketAddr,
    /// Messages in flight per route (unconfirmed by the sink).
    pub max_in_flight: usize,
    /// How long a graceful shutdown may take.
    pub shutdown_timeout: Duration,
    /// `service.name` of the relay's spans (overridden by `OTEL_SERVICE_NAME`).
    pub service_name: String,
    /// The routes.
    pub routes: Vec<Route>,
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
            secrets.extend(urls.filter_map(crate::redact::url_password));
            if let Source::Kafka { broker, .. } = &route.source {
                secrets.extend(broker.secrets());
            }
            if let Some(c) = &route.correlation {
                if let StoreSpec::Redis { url, .. } = &c.store {
                    secrets.extend(crate::redact::url_password(url));
                }
                if let Some(key) = &c.key {
                    secrets.push(String::from_utf8_lossy(key).into_owned());
                }
            }
        }
        secrets.sort();
        secrets.dedup();
        secrets
    }
}

impl AmqpBroker {
    /// The URL with its password replaced by `***`.
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
        /// The consumer group (default `tracebridge-{route}`).
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
        /// Where the record key comes from (default: the source's key —
        /// the Kafka key, or the AMQP property of `key_mapping`).
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
        let expanded = expand_env(text, origin, env)?;
        let (spec, problems) = read_spec(origin, &expanded);
        match spec {
            Some(spec) => validate(spec, origin, &expanded, problems),
            None => Err(ConfigErrors { problems }),
        }
    }
}

/// At most this many key or type problems are reported from one file.
const MAX_PARSE_PROBLEMS: usize = 50;

/// Parses the expanded text into the file's structs, reporting every key
/// and value they reject, not only the first (serde stops at one): each
/// rejected line is blanked out and the text parsed again.
///
/// The structs come back only when they are whole — no table had to be
/// blanked for a missing key — so that validation never reports a problem
/// the blanking made up. A syntax error stops the reading: what follows it
/// cannot be trusted.
fn read_spec(origin: &str, expanded: &str) -> (Option<FileSpec>, Vec<String>) {
    let mut text = expanded.to_owned();
    let mut problems = Problems::default();
    // (the table it was in, the key) of each line blanked so far.
    let mut blanked: Vec<(usize, String)> = Vec::new();
    let mut whole = true;
    while problems.len() < MAX_PARSE_PROBLEMS {
        if let Err(err) = toml::from_str::<toml::Table>(&text) {
            // Only the first round's syntax error is the user's own; a
            // later one comes from blanking part of a multi-line value.
            if blanked.is_empty() {
                problems.add(origin, &text, &err);
            }
            return (None, problems.by_line());
        }
        let err = match toml::from_str::<FileSpec>(&text) {
            Ok(spec) => return (whole.then_some(spec), problems.by_line()),
            Err(err) => err,
        };
        let Some(span) = err.span() else {
            problems.add(origin, &text, &err);
            return (None, problems.by_line());
        };
        let missing_key = err
            .message()
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next());
        // A key blanked out for its bad value is missing next round: that
        // is the same problem, already reported.
        let follows_earlier = missing_key.is_some_and(|key| {
            let table = table_start(&text, span.start);
            blanked.iter().any(|(t, k)| *t == table && k == key)
        });
        if !follows_earlier {
            problems.add(origin, &text, &err);
        }
        whole &= missing_key.is_none();
        let table = table_start(&text, span.start);
        // A table without a key it needs goes whole: blanking its header
        // alone would hand its keys to the table above.
        let span = match missing_key {
            Some(_) => table..table_end(&text, table),
            None => span,
        };
        let Some(key) = blank_lines(&mut text, span) else {
            return (None, problems.by_line());
        };
        blanked.push((table, key));
    }
    (None, problems.by_line())
}

/// Problems found while reading, each with its line, to be listed in the
/// file's order (the reading finds them in the structs' order).
#[derive(Default)]
struct Problems(Vec<(usize, String)>);

impl Problems {
    fn add(&mut self, origin: &str, text: &str, err: &toml::de::Error) {
        let line = err.span().map_or(0, |s| line_of(text, s.start));
        self.0.push((line, toml_error(origin, text, err)));
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn by_line(mut self) -> Vec<String> {
        self.0.sort_by_key(|(line, _)| *line);
        self.0.into_iter().map(|(_, problem)| problem).collect()
    }
}

/// Where the table whose header starts at `table` ends: the newline before
/// the next header, or the end of the text.
fn table_end(text: &str, table: usize) -> usize {
    let mut line_start = table;
    for (index, line) in text[table..].split_inclusive('\n').enumerate() {
        if index > 0 && line.trim_start().starts_with('[') {
            return line_start - 1;
        }
        line_start += line.len();
    }
    text.len()
}

/// Where the `[table]` or `[[table]]` header before `offset` starts (0 for
/// the top level).
fn table_start(text: &str, offset: usize) -> usize {
    let mut start = 0;
    let mut line_start = 0;
    for line in text.split_inclusive('\n') {
        if line_start > offset {
            break;
        }
        if line.trim_start().starts_with('[') {
            start = line_start;
        }
        line_start += line.len();
    }
    start
}

/// Replaces every character on the lines that `span` touches with spaces
/// (newlines kept, one space per byte, so every later line keeps its number
/// and offset). Returns the key the first of them held, `None` when they
/// held nothing to blank.
fn blank_lines(text: &mut String, span: std::ops::Range<usize>) -> Option<String> {
    let end = span.end.min(text.len());
    let start = span.start.min(end);
    // Bytes, not str slices: a span need not fall on a char boundary, a
    // newline always does.
    let bytes = text.as_bytes();
    let first = bytes[..start]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let last = bytes[end..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(text.len(), |i| end + i);
    let lines = &text[first..last];
    if lines.trim().is_empty() {
        return None;
    }
    let key = lines
        .split('=')
        .next()
        .unwrap_or_default()
        .trim()
        .trim_matches(['"', '\''])
        .to_owned();
    let blank: String = lines
        .chars()
        .flat_map(|c| {
            let fill = if c == '\n' { '\n' } else { ' ' };
            std::iter::repeat_n(fill, c.len_utf8())
        })
        .collect();
    text.replace_range(first..last, &blank);
    Some(key)
}

/// `${VAR}` and `${VAR:-default}`; `$$` is a literal `$`. Comments (from
/// a `#` outside quotes to the end of the line) are left as they are.
fn expand_env(
    text: &str,
    origin: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<String, ConfigErrors> {
    let mut out = String::with_capacity(text.len());
    let mut problems = Vec::new();
    for (index, line) in text.split_inclusive('\n').enumerate() {
        let (code, comment) = line.split_at(comment_start(line));
        expand_line(
            code,
            &format!("{origin}:{}", index + 1),
            &env,
            &mut out,
            &mut problems,
        );
        out.push_str(comment);
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(ConfigErrors { problems })
    }
}

/// Where a TOML comment starts on `line` (its length when there is none).
fn comment_start(line: &str) -> usize {
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        match quote {
            Some('"') if escaped => escaped = false,
            Some('"') if c == '\\' => escaped = true,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == '#' => return i,
            None => {}
        }
    }
    line.len()
}

fn expand_line(
    line: &str,
    at: &str,
    env: &impl Fn(&str) -> Option<String>,
    out: &mut String,
    problems: &mut Vec<String>,
) {
    let mut rest = line;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let Some(end) = body.find('}') else {
                problems.push(format!("{at}: `${{` is not closed by `}}`"));
                out.push_str(&rest[dollar..]);
                return;
            };
            let expr = &body[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (expr, None),
            };
            match (env(name), default) {
                (Some(value), _) => out.push_str(&value),
                (None, Some(default)) => out.push_str(default),
                (None, None) => problems.push(format!(
                    "{at}: environment variable {name} is not set (write ${{{name}:-default}} for a default)"
                )),
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
}

fn line_of(text: &str, offset: usize) -> usize {
    let before = &text.as_bytes()[..offset.min(text.len())];
    before.iter().filter(|&&b| b == b'\n').count() + 1
}

fn toml_error(origin: &str, text: &str, err: &toml::de::Error) -> String {
    let line = err.span().map(|s| line_of(text, s.start)).unwrap_or(0);
    let message = err.message().trim().replace('\n', " ");
    format!("{origin}:{line}: {message}")
}

/// Resolves broker references and checks each route's shape, adding to the
/// `problems` reading found.
fn validate(
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
    if spec.relay.max_in_flight == 0 {
        problems.push(format!("{origin}: relay.max_in_flight: must be at least 1"));
    }
    if spec.route.is_empty() {
        problems.push(format!("{origin}: no [[route]] is configured"));
    }

    let mut routes = Vec::new();
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
        if let (Some(source), Some(sink)) = (&source, &sink) {
            endless_loop(&at, source, sink, "to", &mut problems);
            if let Some(Some(dead_letter)) = &dead_letter {
                endless_loop(&at, source, dead_letter, "dead_letter", &mut problems);
            }
        }
        if let (Some(source), Some(sink)) = (source, sink) {
            routes.push(Route {
                name: route.name,
                source,
                sink,
                mode: route.propagation.mode,
                propagation: route.propagation.formats(),
                attempts: route.retry.attempts.max(1),
                backoff: route.retry.backoff,
                dead_letter: dead_letter.flatten(),
                key_mapping: route.key_mapping,
                correlation,
            });
        }
    }
    if problems.is_empty() {
        Ok(RelayConfig {
            listen: spec.relay.listen,
            max_in_flight: spec.relay.max_in_flight,
            shutdown_timeout: spec.relay.shutdown_timeout,
            service_name: spec.relay.service_name,
            routes,
        })
    } else {
        Err(ConfigErrors { problems })
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
            ("enable.auto.commit" | "auto.commit.enable", "false") => None,
            ("enable.auto.commit" | "auto.commit.enable", _) => Some(format!(
                "`{shown}`: must stay false — the relay commits an offset only once the sink confirmed the message; auto-commit loses messages in a crash"
            )),
            ("acks" | "request.required.acks", "all" | "-1") => None,
            ("acks" | "request.required.acks", _) => Some(format!(
                "`{shown}`: must be `all` — the relay acknowledges the source once the sink confirmed; fewer acks lose confirmed messages when a broker fails"
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

/// A route whose sink (or dead letter) is its own source relays every
/// message again, forever.
fn endless_loop(at: &str, source: &Source, sink: &Sink, key: &str, problems: &mut Vec<String>) {
    let same = match (source, sink) {
        (
            Source::Kafka { broker, topic, .. },
            Sink::Kafka {
                broker: to,
                topic: to_topic,
                ..
            },
        ) => broker.bootstrap_servers == to.bootstrap_servers && topic == to_topic,
        (
            Source::Amqp { broker, queue },
            Sink::Amqp {
                broker: to,
                exchange,
                routing_key: KeySource::Fixed(routing_key),
            },
        ) => broker.url == to.url && exchange.is_empty() && routing_key == queue,
        _ => false,
    };
    if same {
        problems.push(format!(
            "{at}: {key}: writes to the route's own source: every message would be relayed again, forever"
        ));
    }
}

/// Property names whose values are secrets (never printed).
pub fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "password",
        "secret",
        "token",
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
