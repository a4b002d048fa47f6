//! Per-route metrics, registered in one Prometheus registry that
//! `/metrics` serves.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::correlate::{Outcome, Resolution, Store};
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

/// The correlation counters, labelled by route (see [`CorrelationStats`]).
struct CorrelationCounters {
    recorded: IntCounterVec,
    hits: IntCounterVec,
    misses: IntCounterVec,
    derived: IntCounterVec,
    store_errors: IntCounterVec,
}

/// Every metric of the relay, labelled by route.
pub struct RelayMetrics {
    registry: Registry,
    consumed: IntCounterVec,
    published: IntCounterVec,
    retried: IntCounterVec,
    dead_lettered: IntCounterVec,
    failed: IntCounterVec,
    consume_errors: IntCounterVec,
    reconnects: IntCounterVec,
    restarts: IntCounterVec,
    in_flight: IntGaugeVec,
    in_flight_bytes: IntGaugeVec,
    poisoned: IntGaugeVec,
    hop_seconds: HistogramVec,
    queue_seconds: HistogramVec,
    spans_ended: IntCounter,
    spans_exported: IntCounter,
    spans_export_failed: IntCounter,
    spans_not_exported: IntGauge,
    correlation: CorrelationCounters,
    store_entries: IntGaugeVec,
    /// Memory stores whose size `/metrics` reports, by label.
    stores: std::sync::Mutex<Vec<(String, Arc<Store>)>>,
}

/// Seconds, from 1 ms to about 1 min.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 60.0,
];

impl RelayMetrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("tracebridge".into()), None)?;
        let counter = |name: &str, help: &str| -> Result<IntCounterVec, prometheus::Error> {
            let c = IntCounterVec::new(Opts::new(name, help), &["route"])?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let histogram = |name: &str, help: &str| -> Result<HistogramVec, prometheus::Error> {
            let h = HistogramVec::new(
                HistogramOpts::new(name, help).buckets(BUCKETS.to_vec()),
                &["route"],
            )?;
            registry.register(Box::new(h.clone()))?;
            Ok(h)
        };
        let in_flight = IntGaugeVec::new(
            Opts::new("relay_in_flight", "Messages read and not yet settled"),
            &["route"],
        )?;
        registry.register(Box::new(in_flight.clone()))?;
        let in_flight_bytes = IntGaugeVec::new(
            Opts::new(
                "relay_in_flight_bytes",
                "Bytes (payload, key, Kafka headers) of the messages read and not yet settled",
            ),
            &["route"],
        )?;
        registry.register(Box::new(in_flight_bytes.clone()))?;
        let poisoned = IntGaugeVec::new(
            Opts::new(
                "relay_stopped_at_poison_message",
                "1 while the route is stopped at a message it can never send or dead-letter",
            ),
            &["route"],
        )?;
        registry.register(Box::new(poisoned.clone()))?;
        let single = |name: &str, help: &str| -> Result<IntCounter, prometheus::Error> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let spans_not_exported = IntGauge::new(
            "spans_not_exported",
            "Ended spans neither exported nor failed: dropped by the exporter's full queue, or still queued (at most 2048)",
        )?;
        registry.register(Box::new(spans_not_exported.clone()))?;
        let store_entries = IntGaugeVec::new(
            Opts::new(
                "correlation_store_entries",
                "Entries in an in-memory correlation store",
            ),
            &["store"],
        )?;
        registry.register(Box::new(store_entries.clone()))?;
        Ok(Self {
            correlation: CorrelationCounters {
                recorded: counter(
                    "correlation_recorded_total",
                    "Messages with a context and a request id whose context was recorded",
                )?,
                hits: counter(
                    "correlation_hits_total",
                    "Messages without context joined or linked to the context found for their request id",
                )?,
                misses: counter(
                    "correlation_misses_total",
                    "Messages without context whose request id the store did not know (fallback taken)",
                )?,
                derived: counter(
                    "correlation_derived_total",
                    "Messages put into the trace derived from their request id",
                )?,
                store_errors: counter(
                    "correlation_store_errors_total",
                    "Correlation store lookups or records that failed (the message went on)",
                )?,
            },
            store_entries,
            stores: std::sync::Mutex::default(),
            spans_ended: single(
                "spans_ended_total",
                "Spans ended and handed to the exporter's queue",
            )?,
            spans_exported: single("spans_exported_total", "Spans the exporter delivered")?,
            spans_export_failed: single(
                "spans_export_failed_total",
                "Spans in batches the exporter failed to deliver",
            )?,
            spans_not_exported,
            consumed: counter("relay_consumed_total", "Messages read from the source")?,
            published: counter("relay_published_total", "Messages the sink confirmed")?,
            retried: counter("relay_retried_total", "Extra attempts made to publish")?,
            dead_lettered: counter(
                "relay_dead_lettered_total",
                "Messages sent to the dead-letter destination",
            )?,
            failed: counter(
                "relay_failed_total",
                "Hops neither the sink nor the dead-letter destination took (retried or requeued)",
            )?,
            consume_errors: counter(
                "relay_consume_errors_total",
                "Errors reading from the source",
            )?,
            reconnects: counter(
                "relay_reconnect_attempts_total",
                "Attempts to reopen a lost AMQP connection (source or sink), paced by backoff",
            )?,
            restarts: counter(
                "relay_route_restarts_total",
                "Times the route's loop died (a panic) and was started again",
            )?,
            in_flight,
            in_flight_bytes,
            poisoned,
            hop_seconds: histogram(
                "relay_hop_duration_seconds",
                "From reading a message to settling it at the source",
            )?,
            queue_seconds: histogram(
                "relay_queue_time_seconds",
                "How long messages waited in the source broker (producer timestamp to relay)",
            )?,
            registry,
        })
    }

    /// The metrics of one route.
    pub fn route(&self, route: &str) -> Arc<RouteStats> {
        let l = &[route];
        Arc::new(RouteStats {
            consumed: self.consumed.with_label_values(l),
            published: self.published.with_label_values(l),
            retried: self.retried.with_label_values(l),
            dead_lettered: self.dead_lettered.with_label_values(l),
            failed: self.failed.with_label_values(l),
            consume_errors: self.consume_errors.with_label_values(l),
            reconnects: self.reconnects.with_label_values(l),
            restarts: self.restarts.with_label_values(l),
            in_flight: self.in_flight.with_label_values(l),
            in_flight_bytes: self.in_flight_bytes.with_label_values(l),
            hop_seconds: self.hop_seconds.with_label_values(l),
            queue_seconds: self.queue_seconds.with_label_values(l),
            running: AtomicBool::new(false),
            sink_down: AtomicBool::new(false),
            dead_letter_down: AtomicBool::new(false),
            stalled: std::sync::Mutex::new(None),
            partitions_held: std::sync::atomic::AtomicUsize::new(NOT_KAFKA),
            failure_streak: std::sync::atomic::AtomicU64::new(0),
            poisoned: std::sync::Mutex::new(None),
            died: std::sync::Mutex::new(None),
            poisoned_gauge: self.poisoned.with_label_values(l),
            correlation: CorrelationStats {
                recorded: self.correlation.recorded.with_label_values(l),
                hits: self.correlation.hits.with_label_values(l),
                misses: self.correlation.misses.with_label_values(l),
                derived: self.correlation.derived.with_label_values(l),
                store_errors: self.correlation.store_errors.with_label_values(l),
            },
        })
    }

    /// Reports `store`'s size as `correlation_store_entries{store=label}`
    /// (memory stores only; Redis counts its own).
    pub(crate) fn watch_store(&self, label: &str, store: Arc<Store>) {
        if matches!(*store, Store::Memory(_))
            && let Ok(mut stores) = self.stores.lock()
        {
            stores.push((label.to_owned(), store));
        }
    }

    /// Everything, in the Prometheus text format.
    pub fn render(&self) -> String {
        self.sync_span_counts();
        if let Ok(stores) = self.stores.lock() {
            for (label, store) in stores.iter() {
                let entries = store.entry_count().unwrap_or(0);
                self.store_entries
                    .with_label_values(&[label.as_str()])
                    .set(i64::try_from(entries).unwrap_or(i64::MAX));
            }
        }
        let mut out = String::new();
        if let Err(err) =
            prometheus::TextEncoder::new().encode_utf8(&self.registry.gather(), &mut out)
        {
            out = format!("# encoding metrics failed: {err}\n");
        }
        // The spec's messaging instruments, by OpenTelemetry's Prometheus
        // names, when telemetry was set up with the bridge.
        if let Some(messaging) = crate::telemetry::prometheus_text() {
            out.push_str(&messaging);
        }
        out
    }
}

impl RelayMetrics {
    /// Brings the span counters up to [`crate::telemetry::span_counts`].
    fn sync_span_counts(&self) {
        let counts = crate::telemetry::span_counts();
        for (counter, value) in [
            (&self.spans_ended, counts.ended),
            (&self.spans_exported, counts.exported),
            (&self.spans_export_failed, counts.export_failed),
        ] {
            let seen = counter.get();
            if value > seen {
                counter.inc_by(value - seen);
            }
        }
        self.spans_not_exported
            .set(i64::try_from(counts.not_exported()).unwrap_or(i64::MAX));
    }
}

/// [`RouteStats::partitions_held`] of a source that is not Kafka.
const NOT_KAFKA: usize = usize::MAX;

/// What one route has done so far.
pub struct RouteStats {
    /// Messages read from the source.
    pub consumed: IntCounter,
    /// Messages the sink confirmed.
    pub published: IntCounter,
    /// Extra attempts made (retries).
    pub retried: IntCounter,
    /// Messages sent to the dead-letter destination.
    pub dead_lettered: IntCounter,
    /// Hops that neither the sink nor the dead-letter destination took (the
    /// message is retried or requeued, never acknowledged).
    pub failed: IntCounter,
    /// Errors reading from the source.
    pub consume_errors: IntCounter,
    /// Attempts to reopen a lost AMQP connection.
    pub reconnects: IntCounter,
    /// Times the route's loop died and was started again.
    pub restarts: IntCounter,
    in_flight: IntGauge,
    in_flight_bytes: IntGauge,
    /// Read → settled, seconds.
    pub hop_seconds: Histogram,
    /// Producer timestamp → read, seconds.
    pub queue_seconds: Histogram,
    running: AtomicBool,
    sink_down: AtomicBool,
    dead_letter_down: AtomicBool,
    /// Why a Kafka source that holds a backlog makes no progress, while
    /// it does not.
    stalled: std::sync::Mutex<Option<String>>,
    /// Kafka sources: partitions the consumer holds (None for AMQP sources,
    /// whose consumer is open whenever the loop runs).
    partitions_held: std::sync::atomic::AtomicUsize,
    /// Consecutive hops that failed (0: messages are getting through).
    failure_streak: std::sync::atomic::AtomicU64,
    /// The message the route stopped at: it can never be sent and there is
    /// no dead-letter destination.
    poisoned: std::sync::Mutex<Option<String>>,
    poisoned_gauge: IntGauge,
    /// Why the route's loop died, while it is down (until its restart).
    died: std::sync::Mutex<Option<String>>,
    /// What correlation by request id did.
    pub correlation: CorrelationStats,
}

/// Where a route writes: its sink, or its dead-letter destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Output {
    Sink,
    DeadLetter,
}

/// One route's correlation counters.
pub struct CorrelationStats {
    /// Contexts recorded for their request id.
    pub recorded: IntCounter,
    /// Messages joined or linked to a stored context.
    pub hits: IntCounter,
    /// Messages whose id the store did not know.
    pub misses: IntCounter,
    /// Messages put into a derived trace.
    pub derived: IntCounter,
    /// Failed store lookups or records.
    pub store_errors: IntCounter,
}

impl CorrelationStats {
    /// Counts one message's resolution.
    pub(crate) fn count(&self, resolution: &Resolution) {
        match resolution.outcome {
            Outcome::Recorded => self.recorded.inc(),
            Outcome::Joined(_) | Outcome::Linked(_) => self.hits.inc(),
            Outcome::Derived(_) => self.derived.inc(),
            Outcome::Root => {}
        }
        if resolution.fell_back {
            self.misses.inc();
        }
        if resolution.store_error.is_some() {
            self.store_errors.inc();
        }
    }
}

impl RouteStats {
    pub(crate) fn set_in_flight(&self, n: usize) {
        self.in_flight.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Messages read but not yet settled.
    pub fn in_flight(&self) -> usize {
        usize::try_from(self.in_flight.get()).unwrap_or(0)
    }

    pub(crate) fn set_in_flight_bytes(&self, n: usize) {
        self.in_flight_bytes
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Bytes of the messages read but not yet settled (the route's byte
    /// budget, `[relay] max_in_flight_bytes`, counts these).
    pub fn in_flight_bytes(&self) -> usize {
        usize::try_from(self.in_flight_bytes.get()).unwrap_or(0)
    }

    pub(crate) fn set_running(&self, running: bool) {
        self.running.store(running, Ordering::Relaxed);
    }

    /// Whether the route's source loop is running.
    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::Relaxed)
    }

    /// `output`'s connection was lost (`true`) or reopened; each output
    /// writes its own state.
    pub(crate) fn set_down(&self, output: Output, down: bool) {
        let flag = match output {
            Output::Sink => &self.sink_down,
            Output::DeadLetter => &self.dead_letter_down,
        };
        flag.store(down, Ordering::Relaxed);
    }

    /// Whether the route's AMQP sink lost its connection and has not been
    /// reopened yet.
    pub fn is_sink_down(&self) -> bool {
        self.sink_down.load(Ordering::Relaxed)
    }

    /// Whether the route's AMQP dead-letter destination lost its
    /// connection and has not been reopened yet.
    pub fn is_dead_letter_down(&self) -> bool {
        self.dead_letter_down.load(Ordering::Relaxed)
    }

    /// A Kafka source holds messages waiting but relays none (`Some(why)`),
    /// or moves again (`None`).
    pub(crate) fn set_stalled(&self, why: Option<String>) {
        if let Ok(mut stalled) = self.stalled.lock() {
            *stalled = why;
        }
    }

    /// Why the route makes no progress with messages waiting, if so.
    pub fn stalled(&self) -> Option<String> {
        self.stalled.lock().ok().and_then(|s| s.clone())
    }

    pub(crate) fn set_partitions_held(&self, held: usize) {
        self.partitions_held.store(held, Ordering::Relaxed);
    }

    /// Partitions a Kafka source holds (as last checked).
    pub(crate) fn partitions_held(&self) -> usize {
        self.partitions_held.load(Ordering::Relaxed)
    }

    /// Whether the source is consuming: its loop runs and, for Kafka, the
    /// consumer holds at least one partition (none until the group's first
    /// assignment, or when the group has more members than partitions).
    pub fn is_consuming(&self) -> bool {
        self.is_running() && self.partitions_held() > 0
    }

    /// The route stops at `description` (where the message is, and why it
    /// can never be sent); the first one stays.
    pub(crate) fn set_poisoned(&self, description: String) {
        if let Ok(mut poisoned) = self.poisoned.lock()
            && poisoned.is_none()
        {
            *poisoned = Some(description);
            self.poisoned_gauge.set(1);
        }
    }

    /// The route's loop died (`Some(why)`) or was started again (`None`).
    pub(crate) fn set_died(&self, why: Option<String>) {
        if let Ok(mut died) = self.died.lock() {
            *died = why;
        }
    }

    /// Why the route's loop died (a panic), while it is down.
    pub fn died(&self) -> Option<String> {
        self.died.lock().ok().and_then(|d| d.clone())
    }

    /// Whether the route stopped at a poison message (read before every
    /// message the source takes: the gauge, no lock, no copy).
    pub fn is_poisoned(&self) -> bool {
        self.poisoned_gauge.get() != 0
    }

    /// The message the route stopped at, if any.
    pub fn poisoned(&self) -> Option<String> {
        self.poisoned.lock().ok().and_then(|p| p.clone())
    }

    /// Counts a failed hop; true for the first of a streak.
    pub(crate) fn failure_streak_started(&self) -> bool {
        self.failure_streak.fetch_add(1, Ordering::Relaxed) == 0
    }

    /// Ends a streak of failed hops: how many failed, if one was going on.
    /// Called for every delivered message: a read, and a write only when a
    /// streak really ends.
    pub(crate) fn failure_streak_ended(&self) -> Option<u64> {
        if self.failure_streak.load(Ordering::Relaxed) == 0 {
            return None;
        }
        match self.failure_streak.swap(0, Ordering::Relaxed) {
            0 => None,
            n => Some(n),
        }
    }

    /// Running, its sinks connected, not stopped at a poison message, its
    /// loop not dead: what `/readyz` reports.
    ///
    /// Each state has one writer: `running` the source loop (true while it
    /// reads), `partitions_held` and `stalled` the Kafka loop, `sink_down`
    /// the AMQP sink's channel, `dead_letter_down` the AMQP dead letter's,
    /// `poisoned` the settling of a hop, `died` the supervisor.
    pub fn is_ready(&self) -> bool {
        self.is_consuming()
            && !self.is_sink_down()
            && !self.is_dead_letter_down()
            && !self.is_poisoned()
            && self.died().is_none()
            && self.stalled().is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_is_ready_while_running_with_its_sinks_connected() {
        let metrics = RelayMetrics::new().expect("registry");
        let stats = metrics.route("r");
        assert!(!stats.is_ready(), "not before its loop runs");
        stats.set_running(true);
        assert!(stats.is_ready());
        stats.set_down(Output::Sink, true);
        assert!(!stats.is_ready(), "not while a sink reconnects");
        stats.set_down(Output::Sink, false);
        assert!(stats.is_ready());
        // The sink and the dead letter each write their own state: one
        // reconnecting does not clear the other's outage.
        stats.set_down(Output::Sink, true);
        stats.set_down(Output::DeadLetter, true);
        stats.set_down(Output::DeadLetter, false);
        assert!(!stats.is_ready(), "the sink is still down");
        stats.set_down(Output::Sink, false);
        stats.set_stalled(Some("stuck".into()));
        assert!(!stats.is_ready(), "not while stalled");
        stats.set_stalled(None);
        assert!(stats.is_ready());
    }
}
