//! The relay: routes that move messages between Kafka and RabbitMQ, in
//! any direction, keeping every message in its trace, at-least-once.
//!
//! One message's way, one room per broker:
//!
//! * `kafka/source.rs` or `amqp/source.rs` reads it (a bounded window of
//!   messages in flight) into a `message::Inbound`;
//! * `hop.rs`, which knows no broker, extracts its context, starts the
//!   process span and hands it to the route's `hop::Sink` — retrying,
//!   dead-lettering — until an `Outcome`;
//! * `kafka/sink.rs` or `amqp/sink.rs` translates it (`*/headers.rs`) and
//!   writes it, confirmed;
//! * `settle.rs` counts the outcome, and the source commits the Kafka
//!   offset (`kafka/offsets.rs`: only up to the highest contiguous settled
//!   offset per partition) or acks the AMQP delivery.
//!
//! Around them: [`config`] (the TOML file, [`RelayConfig::load`]), `stats`
//! (metrics and readiness state), `http` (`/healthz`, `/readyz`,
//! `/metrics`), `backoff` (reconnect pacing) and, here, the wiring of each
//! route and the task that restarts a route's loop if it dies.
//!
//! ```no_run
//! # async fn run() -> anyhow::Result<()> {
//! let config = tracebridge::relay::RelayConfig::load("bridge-config/relay.toml".as_ref())?;
//! let relay = tracebridge::relay::Relay::start(config, tracebridge::Instrumentation::global()).await?;
//! tokio::signal::ctrl_c().await?;
//! relay.shutdown().await;
//! # Ok(()) }
//! ```

mod amqp;
mod backoff;
mod budget;
pub mod config;
mod hop;
mod http;
mod kafka;
mod message;
mod properties;
mod settle;
mod stats;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::{ConfigErrors, RelayConfig, Route};
pub use hop::{
    DEAD_LETTER_ATTEMPTS, DEAD_LETTER_ERROR, DEAD_LETTER_LEFT_OUT, DEAD_LETTER_ROUTE,
    DEAD_LETTER_SOURCE, ROUTE_ATTRIBUTE,
};
pub use stats::{CorrelationStats, RelayMetrics, RouteStats};

use crate::Error;
use crate::Instrumentation;
use crate::correlate::{Correlator, MemoryStore, RedisStore, Store};
use config::{Correlation, Sink, Source, StoreSpec};
use hop::Hop;
use message::Translation;
use stats::Output;

/// The relay's Kafka `client.id` (and `messaging.client.id` on its spans).
const CLIENT_ID: &str = "tracebridge";

/// A running relay: one task per route.
pub struct Relay {
    routes: Vec<RunningRoute>,
    shutdown: watch::Sender<bool>,
    shutdown_timeout: Duration,
    metrics: Arc<RelayMetrics>,
    listen: std::net::SocketAddr,
}

struct RunningRoute {
    name: String,
    stats: Arc<RouteStats>,
    task: JoinHandle<()>,
}

impl Relay {
    /// Connects every route's source, sink and dead-letter destination and
    /// starts relaying. Fails, naming the route and broker, when one cannot
    /// be connected. The configuration's `[telemetry]` rules replace
    /// `instrumentation`'s.
    pub async fn start(
        config: RelayConfig,
        instrumentation: Instrumentation,
    ) -> Result<Self, Error> {
        let instrumentation = instrumentation
            .with_conventions(config.attribute_rules.conventions)
            .with_attribute_policy(config.attribute_rules.policy.clone())
            .with_metrics(config.metrics.iter().copied());
        let (shutdown, watch) = watch::channel(false);
        let metrics = Arc::new(
            RelayMetrics::new().map_err(|e| Error::Config(format!("metrics registry: {e}")))?,
        );
        let mut routes = Vec::new();
        let mut stores = Stores::default();
        for route in config.routes {
            let stats = metrics.route(&route.name);
            let correlator = match &route.correlation {
                Some(c) => Some(stores.correlator(&route.name, c, &metrics)?),
                None => None,
            };
            let running = start_route(
                route,
                budget::Window {
                    messages: config.max_in_flight,
                    bytes: config.max_in_flight_bytes,
                },
                config.instance_id.as_deref(),
                &instrumentation,
                stats,
                correlator,
                watch.clone(),
            )
            .await?;
            routes.push(running);
        }
        let health = Arc::new(http::Health {
            metrics: metrics.clone(),
            routes: routes
                .iter()
                .map(|r| (r.name.clone(), r.stats.clone()))
                .collect(),
        });
        if !config.listen.ip().is_loopback() {
            tracing::warn!(
                listen = %config.listen,
                "/metrics, /readyz and /healthz are served without authentication on a non-loopback address: whoever reaches it reads route names, topics, queues and rates; bind 127.0.0.1 or keep the port behind a firewall"
            );
        }
        let listen = http::serve(config.listen, health, watch)
            .await
            .map_err(|e| Error::Config(format!("relay.listen {}: {e}", config.listen)))?;
        tracing::info!(%listen, "serving /healthz /readyz /metrics");
        Ok(Self {
            routes,
            shutdown,
            shutdown_timeout: config.shutdown_timeout,
            metrics,
            listen,
        })
    }

    /// The address `/healthz`, `/readyz` and `/metrics` are served on.
    pub fn listen_addr(&self) -> std::net::SocketAddr {
        self.listen
    }

    /// The relay's metrics (what `/metrics` serves).
    pub fn metrics(&self) -> &RelayMetrics {
        &self.metrics
    }

    /// Each route's name and counters.
    pub fn stats(&self) -> Vec<(String, Arc<RouteStats>)> {
        self.routes
            .iter()
            .map(|r| (r.name.clone(), r.stats.clone()))
            .collect()
    }

    /// Stops taking new messages, waits (up to the configured
    /// `shutdown_timeout`) for those in flight to be confirmed and
    /// acknowledged, and returns whether all drained in time.
    pub async fn shutdown(self) -> bool {
        let _ = self.shutdown.send(true);
        let deadline = tokio::time::Instant::now() + self.shutdown_timeout;
        let mut drained = true;
        for route in self.routes {
            match tokio::time::timeout_at(deadline, route.task).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => {
                    drained = false;
                    tracing::error!(route = %route.name, error = %err, "route task failed");
                }
                Err(_) => {
                    drained = false;
                    tracing::error!(
                        route = %route.name,
                        in_flight = route.stats.in_flight(),
                        "shutdown timeout: messages still in flight will be redelivered"
                    );
                }
            }
        }
        drained
    }
}

async fn start_route(
    route: Route,
    window: budget::Window,
    instance_id: Option<&str>,
    instrumentation: &Instrumentation,
    stats: Arc<RouteStats>,
    correlation: Option<Correlator>,
    shutdown: watch::Receiver<bool>,
) -> Result<RunningRoute, Error> {
    let translation = Translation::new(&route.propagation, route.key_mapping);
    let sink = connect_sink(
        &route,
        &route.sink,
        Output::Sink,
        &translation,
        instrumentation,
        &stats,
    )
    .await?;
    let dead_letter = match &route.dead_letter {
        Some(dl) => Some(
            connect_sink(
                &route,
                dl,
                Output::DeadLetter,
                &translation,
                instrumentation,
                &stats,
            )
            .await?,
        ),
        None => None,
    };
    let hop = Arc::new(Hop {
        route: route.name.as_str().into(),
        mode: route.mode,
        propagation: route.propagation.clone(),
        attempts: route.attempts,
        backoff: route.backoff,
        source_endpoint: match &route.source {
            Source::Kafka { broker, .. } => {
                crate::semconv::Endpoint::from_servers(&broker.bootstrap_servers, Some(CLIENT_ID))
            }
            Source::Amqp { broker, .. } => crate::amqp::endpoint(&broker.url),
        },
        sink,
        dead_letter,
        instrumentation: instrumentation
            .clone()
            .with_link_sampling(route.link_sampling),
        correlation,
        stats: stats.clone(),
    });
    watch_sinks(&hop, shutdown.clone());
    // The first opening of the source fails the start, loudly; a reopening
    // after the loop died is retried by `supervised`.
    let (first, reopen): (RouteLoop, Reopen) = match &route.source {
        Source::Kafka {
            broker,
            topic,
            group,
        } => {
            let open = {
                let (route, broker, topic, group) = (
                    route.name.clone(),
                    broker.clone(),
                    topic.clone(),
                    group.clone(),
                );
                let instance_id = instance_id.map(str::to_owned);
                move || kafka::source::open(&route, &broker, &topic, &group, instance_id.as_deref())
            };
            let run = {
                let (hop, stats, shutdown) = (hop.clone(), stats.clone(), shutdown.clone());
                let (topic, group) = (topic.clone(), group.clone());
                move |consumer| -> RouteLoop {
                    Box::pin(kafka::source::run(
                        hop.clone(),
                        consumer,
                        topic.clone(),
                        group.clone(),
                        window,
                        stats.clone(),
                        shutdown.clone(),
                    ))
                }
            };
            let first = run(open()?);
            let reopen: Reopen = Box::new(move || {
                let opened = open().map(&run).map_err(|e| e.to_string());
                Box::pin(std::future::ready(opened))
            });
            (first, reopen)
        }
        Source::Amqp { broker, queue } => {
            let subscription = amqp::source::AmqpSubscription {
                route: route.name.clone(),
                broker: broker.clone(),
                queue: queue.clone(),
                // Prefetch = window: the broker never sends more than we hold.
                prefetch: u16::try_from(window.messages).unwrap_or(u16::MAX),
                window_bytes: window.bytes,
            };
            let opened = subscription
                .open(amqp::prefetch::initial(subscription.prefetch))
                .await
                .map_err(|e| {
                    connect_error(
                        &route.name,
                        &broker.redacted_url(),
                        crate::amqp::error_type(&e),
                        e,
                    )
                })?;
            let run = {
                let (hop, stats, shutdown) = (hop.clone(), stats.clone(), shutdown.clone());
                move |subscription, opened| -> RouteLoop {
                    Box::pin(amqp::source::run(
                        hop.clone(),
                        subscription,
                        opened,
                        stats.clone(),
                        shutdown.clone(),
                    ))
                }
            };
            let first = run(subscription.clone(), opened);
            let reopen: Reopen = Box::new(move || {
                let (subscription, run) = (subscription.clone(), run.clone());
                Box::pin(async move {
                    let opened = subscription
                        .open(amqp::prefetch::initial(subscription.prefetch))
                        .await
                        .map_err(|e| e.to_string())?;
                    Ok(run(subscription, opened))
                })
            });
            (first, reopen)
        }
    };
    let task = supervised(&stats, &route.name, first, reopen, shutdown);
    tracing::info!(route = %route.name, "route started");
    Ok(RunningRoute {
        name: route.name,
        stats,
        task,
    })
}

/// A route's read loop, ready to run.
type RouteLoop = futures::future::BoxFuture<'static, ()>;
/// Opens the route's source again and gives its loop (after the loop died).
type Reopen =
    Box<dyn FnMut() -> futures::future::BoxFuture<'static, Result<RouteLoop, String>> + Send>;

/// A restarted loop that runs this long without dying again was a one-off:
/// the next restart waits the shortest time again.
const STABLE_AFTER: Duration = Duration::from_secs(60);

/// Runs a route's loop as a task and, if it panics anyway (no input should
/// make it), restarts it from a reopened source, with backoff: the messages
/// it held are redelivered (at-least-once). While it is down the route is
/// reported — logged, `/readyz` 503 naming it and the panic — and every
/// restart is counted (`relay_route_restarts_total`).
fn supervised(
    stats: &Arc<RouteStats>,
    route: &str,
    first: RouteLoop,
    mut reopen: Reopen,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    use futures::FutureExt as _;
    let (stats, route) = (stats.clone(), route.to_owned());
    tokio::spawn(async move {
        let mut route_loop = first;
        let mut backoff = backoff::Backoff::default();
        loop {
            let started = std::time::Instant::now();
            let Err(panic) = std::panic::AssertUnwindSafe(route_loop)
                .catch_unwind()
                .await
            else {
                return;
            };
            if started.elapsed() >= STABLE_AFTER {
                backoff.recovered(std::time::Instant::now());
            }
            let mut why = panic_message(panic.as_ref());
            stats.set_died(Some(why.clone()));
            route_loop = loop {
                let wait = backoff.failed(std::time::Instant::now());
                tracing::error!(route = %route, stage = "route", error = %why,
                    restart_in_ms = wait.as_millis() as u64,
                    "the route's loop died; restarting it (reported not ready until then)");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.wait_for(|stop| *stop) => return,
                }
                match reopen().await {
                    Ok(route_loop) => break route_loop,
                    Err(err) => why = format!("reopening its source failed: {err}"),
                }
            };
            stats.restarts.inc();
            stats.set_died(None);
            tracing::warn!(route = %route, restarts = stats.restarts.get(), "route restarted");
        }
    })
}

/// A panic's message, as far as it has one.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// Checks the route's AMQP sink connections every second, so `/readyz`
/// tells the truth while no message flows (an idle route would otherwise
/// learn of an outage only from its next publish), and reopens them.
fn watch_sinks(hop: &Arc<Hop>, mut shutdown: watch::Receiver<bool>) {
    let hop = hop.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SINK_CHECK);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
            for sink in std::iter::once(&hop.sink).chain(hop.dead_letter.as_ref()) {
                sink.check().await;
            }
        }
    });
}

/// How often [`watch_sinks`] looks.
const SINK_CHECK: Duration = Duration::from_secs(1);

async fn connect_sink(
    route: &Route,
    sink: &Sink,
    output: Output,
    translation: &Translation,
    instrumentation: &Instrumentation,
    stats: &Arc<RouteStats>,
) -> Result<Arc<dyn hop::SinkClient>, Error> {
    match sink {
        Sink::Kafka { broker, topic, key } => Ok(Arc::new(kafka::connect_sink(
            broker,
            topic,
            key,
            &route.propagation,
            translation.clone(),
            instrumentation,
        )?)),
        Sink::Amqp {
            broker,
            exchange,
            routing_key,
        } => {
            let channel = amqp::channel::ReconnectingPublisher::connect(
                &route.name,
                broker,
                route.propagation.clone(),
                instrumentation.clone(),
                stats.clone(),
                output,
            )
            .await
            .map_err(|e| match e {
                Error::Connect {
                    target,
                    error_type,
                    source,
                } => Error::Connect {
                    target: format!("{target} (route {})", route.name),
                    error_type,
                    source,
                },
                other => other,
            })?;
            Ok(Arc::new(amqp::AmqpSink {
                channel,
                exchange: exchange.clone(),
                routing_key: routing_key.clone(),
                translation: translation.clone(),
            }))
        }
    }
}

/// The correlation stores of a relay: one per distinct store setting, so
/// routes configured alike share what they record.
#[derive(Default)]
struct Stores {
    open: Vec<(StoreSpec, Arc<Store>)>,
}

/// Redis keys: `tracebridge:correlation:{request id}`.
const REDIS_PREFIX: &str = "tracebridge:correlation:";

impl Stores {
    fn correlator(
        &mut self,
        route: &str,
        config: &Correlation,
        metrics: &RelayMetrics,
    ) -> Result<Correlator, Error> {
        let store = match self.open.iter().find(|(spec, _)| *spec == config.store) {
            Some((_, store)) => store.clone(),
            None => {
                let store = Arc::new(match &config.store {
                    StoreSpec::Memory { max_entries, ttl } => {
                        Store::Memory(MemoryStore::new(*max_entries, *ttl))
                    }
                    StoreSpec::Redis { url, ttl, timeout } => Store::Redis(Box::new(
                        RedisStore::new(url, REDIS_PREFIX, *ttl, *timeout).map_err(|e| {
                            Error::Config(format!("route {route}: correlation.store: {e}"))
                        })?,
                    )),
                });
                let label = format!("memory-{}", self.open.len());
                metrics.watch_store(&label, store.clone());
                self.open.push((config.store.clone(), store.clone()));
                store
            }
        };
        Correlator::new(
            config.request_id.clone(),
            config.policy,
            config.fallback,
            config.key.clone(),
            store,
        )
        .and_then(|correlator| correlator.with_journey_sampling(config.journey_sampling))
        .map_err(|e| Error::Config(format!("route {route}: correlation: {e}")))
    }
}

/// A source or sink that cannot be reached, naming the route.
fn connect_error(
    route: &str,
    target: &str,
    error_type: String,
    source: impl std::error::Error + Send + Sync + 'static,
) -> Error {
    Error::Connect {
        target: format!("{target} (route {route})"),
        error_type,
        source: Box::new(source),
    }
}

/// Entry points for the fuzz targets in `fuzz/`: the relay's header
/// translation between brokers, which is private otherwise. Not a stable
/// API.
#[doc(hidden)]
pub mod fuzzing {
    use lapin::BasicProperties;
    use lapin::types::FieldTable;
    use rdkafka::message::{Header, Headers, OwnedHeaders};

    use super::amqp::headers::{AMQP_SHORT_STRING_MAX, amqp_headers_from, encoded_table_size};
    use super::kafka::headers::kafka_headers_from;
    use super::message::InboundHeaders;

    /// Kafka headers → AMQP table → Kafka headers. Panics only when an
    /// invariant breaks: every AMQP name fits a short string, and every
    /// header that was not left out survives the round trip.
    pub fn kafka_round_trip(pairs: &[(String, Option<Vec<u8>>)]) {
        let headers = pairs.iter().fold(OwnedHeaders::new(), |h, (key, value)| {
            h.insert(Header {
                key: key.as_str(),
                value: value.as_deref(),
            })
        });
        // As librdkafka stores them (a name is cut at its first NUL byte).
        let too_long = headers
            .iter()
            .filter(|h| h.key.len() > AMQP_SHORT_STRING_MAX)
            .count();
        let (table, left_out) = amqp_headers_from(&InboundHeaders::Kafka(headers), &|_| false);
        assert_eq!(
            left_out.len(),
            too_long,
            "exactly the over-long names are left out"
        );
        assert!(
            table
                .inner()
                .keys()
                .all(|k| k.as_str().len() <= AMQP_SHORT_STRING_MAX)
        );
        let _ = encoded_table_size(&table);
        let names = table.inner().len();
        let back = kafka_headers_from(
            &InboundHeaders::Amqp(Box::new(BasicProperties::default().with_headers(table))),
            &|_| false,
        );
        // Null Kafka values become AMQP Void, which Kafka cannot carry back.
        assert!(back.count() <= names);
    }

    /// An AMQP table (as a foreign client may send it) → Kafka headers,
    /// and the consumer span's attributes read from it (`x-death`,
    /// `x-delivery-count`, the relay's reason headers, captured headers).
    pub fn amqp_to_kafka(table: FieldTable) {
        use crate::semconv::{
            AttributePolicy, AttributeRules, Conventions, Endpoint, Operation, SemconvVersion,
        };
        let properties = BasicProperties::default().with_headers(table.clone());
        let delivered = crate::amqp::span::Delivered {
            exchange: "x",
            routing_key: "rk",
            queue: "q",
            delivery_tag: 1,
            redelivered: true,
            properties: &properties,
            body_len: 0,
        };
        let rules = AttributeRules {
            conventions: Conventions {
                version: SemconvVersion::V1_45,
                duplicate_pre_1_26: true,
            },
            policy: AttributePolicy::record_all().with_capture(["x-tenant", "x-death"]),
        };
        let attributes = crate::amqp::span::attributes(
            &delivered,
            Operation::Process,
            &Endpoint::default(),
            &rules,
            true,
            None,
        );
        assert!(!attributes.is_empty());
        let size = encoded_table_size(&table);
        assert!(size >= 4);
        let out = kafka_headers_from(
            &InboundHeaders::Amqp(Box::new(BasicProperties::default().with_headers(table))),
            &|name| name.eq_ignore_ascii_case("traceparent"),
        );
        assert!(
            out.iter()
                .all(|h| !h.key.eq_ignore_ascii_case("traceparent"))
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A loop that panics is reported down, restarted from a reopened
    /// source, counted, and reported up again; a shutdown during the wait
    /// before a restart ends the task at once.
    #[tokio::test]
    async fn a_route_loop_that_panics_is_restarted_and_reported() {
        let metrics = RelayMetrics::new().expect("registry");
        let stats = metrics.route("r");
        let (stop, shutdown) = watch::channel(false);
        let (reopened, mut reopens) = tokio::sync::mpsc::unbounded_channel::<()>();
        let (release, released) = watch::channel(false);
        let first: RouteLoop = Box::pin(async { panic!("boom at offset 7") });
        let reopen: Reopen = Box::new(move || {
            let (reopened, mut released) = (reopened.clone(), released.clone());
            Box::pin(async move {
                let _ = reopened.send(());
                // The restarted loop runs until the test lets it end.
                Ok(Box::pin(async move {
                    let _ = released.wait_for(|go| *go).await;
                }) as RouteLoop)
            })
        });
        let task = supervised(&stats, "r", first, reopen, shutdown.clone());

        reopens.recv().await.expect("the source is reopened");
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(stats.restarts.get(), 1);
        assert_eq!(stats.died(), None, "up again after the restart");
        let _ = release.send(true);
        task.await.expect("the task ends when its loop ends");

        // Dies again, and the relay stops while it waits to restart.
        let reopen: Reopen = Box::new(|| Box::pin(async { Err("unreachable".to_owned()) }));
        let first: RouteLoop = Box::pin(async { panic!("boom again") });
        let task = supervised(&stats, "r", first, reopen, shutdown);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!stats.is_ready());
        let died = stats.died().expect("reported while down");
        assert!(died.contains("boom again"), "{died}");
        let _ = stop.send(true);
        tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .expect("a shutdown does not wait for the restart")
            .expect("no panic escapes");
        assert_eq!(stats.restarts.get(), 1, "never restarted");
    }
}
