//! The spec's messaging metrics, recorded by every traced client and by the
//! relay: how long client operations and processing take, how many
//! messages were sent and consumed.
//!
//! | instrument | kind | unit | recorded |
//! |---|---|---|---|
//! | `messaging.client.operation.duration` | histogram | `s` | each send (until the broker confirms), poll, commit, ack/nack/reject |
//! | `messaging.process.duration` | histogram | `s` | each process span, when it ends |
//! | `messaging.client.sent.messages` | counter | `{message}` | each send attempt (failed ones carry `error.type`) |
//! | `messaging.client.consumed.messages` | counter | `{message}` | each message delivered to the application (or the relay) |
//!
//! Attributes come from [`MessagingAttributes::metric`] under the chosen
//! [`SemconvVersion`](crate::semconv::SemconvVersion): system, operation
//! name and type, destination, consumer group, `server.*`, and
//! `error.type` on failure — never a partition, offset, key or id, so the
//! series stay few.
//!
//! [`MessagingAttributes::metric`]: crate::semconv::MessagingAttributes::metric

use std::time::Instant;

use opentelemetry::metrics::{Counter, Histogram, Meter};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_semantic_conventions::metric as names;

/// The duration histograms' bucket boundaries, in seconds, as the spec
/// advises.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// One of the metrics tracebridge records: the spec's four, and the broker
/// wait. Each can be turned off ([`crate::Instrumentation::with_metrics`],
/// the relay's `[telemetry] metrics`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MessagingMetric {
    /// `messaging.client.operation.duration`.
    OperationDuration,
    /// `messaging.process.duration`.
    ProcessDuration,
    /// `messaging.client.sent.messages`.
    SentMessages,
    /// `messaging.client.consumed.messages`.
    ConsumedMessages,
    /// `tracebridge.messaging.queue_time`: how long messages waited in the
    /// broker.
    QueueTime,
}

impl MessagingMetric {
    /// Every metric, in the order of their names.
    pub const ALL: [MessagingMetric; 5] = [
        MessagingMetric::OperationDuration,
        MessagingMetric::ProcessDuration,
        MessagingMetric::SentMessages,
        MessagingMetric::ConsumedMessages,
        MessagingMetric::QueueTime,
    ];

    /// The instrument's name.
    pub fn name(self) -> &'static str {
        match self {
            MessagingMetric::OperationDuration => names::MESSAGING_CLIENT_OPERATION_DURATION,
            MessagingMetric::ProcessDuration => names::MESSAGING_PROCESS_DURATION,
            MessagingMetric::SentMessages => names::MESSAGING_CLIENT_SENT_MESSAGES,
            MessagingMetric::ConsumedMessages => names::MESSAGING_CLIENT_CONSUMED_MESSAGES,
            MessagingMetric::QueueTime => crate::instrument::QUEUE_TIME_METRIC,
        }
    }

    /// The metric of this name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|metric| metric.name() == name)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// Which metrics are recorded: a set of [`MessagingMetric`]s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct MetricSet(u8);

impl MetricSet {
    pub(crate) const ALL: MetricSet = MetricSet(0b1_1111);

    pub(crate) fn of(metrics: impl IntoIterator<Item = MessagingMetric>) -> Self {
        MetricSet(metrics.into_iter().fold(0, |set, m| set | m.bit()))
    }

    pub(crate) fn has(self, metric: MessagingMetric) -> bool {
        self.0 & metric.bit() != 0
    }
}

/// The four instruments, or nothing when no meter provider records them.
#[derive(Clone, Debug)]
pub struct MessagingMetrics {
    /// Shared: every timed message holds a handle (one reference count).
    instruments: Option<std::sync::Arc<Instruments>>,
}

/// Each instrument, `None` when turned off.
#[derive(Clone, Debug)]
struct Instruments {
    operation_duration: Option<Histogram<f64>>,
    process_duration: Option<Histogram<f64>>,
    sent: Option<Counter<u64>>,
    consumed: Option<Counter<u64>>,
}

impl MessagingMetrics {
    /// Records nothing (and builds no attribute).
    pub fn disabled() -> Self {
        Self { instruments: None }
    }

    /// The instruments of `meter`.
    pub fn new(meter: &Meter) -> Self {
        let histogram = |name: &'static str, description: &'static str| {
            meter
                .f64_histogram(name)
                .with_unit("s")
                .with_description(description)
                .with_boundaries(DURATION_BUCKETS.to_vec())
                .build()
        };
        let counter = |name: &'static str, description: &'static str| {
            meter
                .u64_counter(name)
                .with_unit("{message}")
                .with_description(description)
                .build()
        };
        Self {
            instruments: Some(std::sync::Arc::new(Instruments {
                operation_duration: Some(histogram(
                    names::MESSAGING_CLIENT_OPERATION_DURATION,
                    "Duration of a messaging operation initiated by a producer or consumer client",
                )),
                process_duration: Some(histogram(
                    names::MESSAGING_PROCESS_DURATION,
                    "Duration of processing one message",
                )),
                sent: Some(counter(
                    names::MESSAGING_CLIENT_SENT_MESSAGES,
                    "Messages a producer attempted to send to the broker",
                )),
                consumed: Some(counter(
                    names::MESSAGING_CLIENT_CONSUMED_MESSAGES,
                    "Messages delivered to the application",
                )),
            })),
        }
    }

    /// These instruments, only those of `set` kept (disabled when none is).
    pub(crate) fn only(&self, set: MetricSet) -> Self {
        let Some(all) = &self.instruments else {
            return Self::disabled();
        };
        fn keep<T: Clone>(
            set: MetricSet,
            metric: MessagingMetric,
            instrument: &Option<T>,
        ) -> Option<T> {
            instrument.clone().filter(|_| set.has(metric))
        }
        use MessagingMetric as M;
        let kept = Instruments {
            operation_duration: keep(set, M::OperationDuration, &all.operation_duration),
            process_duration: keep(set, M::ProcessDuration, &all.process_duration),
            sent: keep(set, M::SentMessages, &all.sent),
            consumed: keep(set, M::ConsumedMessages, &all.consumed),
        };
        let any = kept.operation_duration.is_some()
            || kept.process_duration.is_some()
            || kept.sent.is_some()
            || kept.consumed.is_some();
        Self {
            instruments: any.then(|| std::sync::Arc::new(kept)),
        }
    }

    /// From a meter provider, under tracebridge's scope.
    pub(crate) fn from_provider(
        meters: &(impl opentelemetry::metrics::MeterProvider + ?Sized),
        scope: InstrumentationScope,
    ) -> Self {
        Self::new(&meters.meter_with_scope(scope))
    }

    /// Whether anything is recorded: callers build attributes only then.
    pub fn enabled(&self) -> bool {
        self.instruments.is_some()
    }

    /// One client operation (send, poll, commit, ack…) that began at
    /// `started`; `attributes` carry `error.type` when it failed.
    pub fn record_operation(&self, started: Instant, attributes: &[KeyValue]) {
        if let Some(i) = self
            .instruments
            .as_ref()
            .and_then(|i| i.operation_duration.as_ref())
        {
            i.record(started.elapsed().as_secs_f64(), attributes);
        }
    }

    /// One message's processing, begun at `started`.
    pub fn record_process(&self, started: Instant, attributes: &[KeyValue]) {
        if let Some(i) = self
            .instruments
            .as_ref()
            .and_then(|i| i.process_duration.as_ref())
        {
            i.record(started.elapsed().as_secs_f64(), attributes);
        }
    }

    /// `count` messages sent (attempted).
    pub fn count_sent(&self, count: u64, attributes: &[KeyValue]) {
        if let Some(i) = self.instruments.as_ref().and_then(|i| i.sent.as_ref()) {
            i.add(count, attributes);
        }
    }

    /// `count` messages delivered to the application.
    pub fn count_consumed(&self, count: u64, attributes: &[KeyValue]) {
        if let Some(i) = self.instruments.as_ref().and_then(|i| i.consumed.as_ref()) {
            i.add(count, attributes);
        }
    }
}

/// Times one message's processing and records
/// `messaging.process.duration` when dropped (with `error.type` when
/// [`ProcessTimer::fail`] was called): it lives as long as the process
/// span it measures.
#[cfg_attr(not(any(feature = "kafka", feature = "amqp")), allow(dead_code))]
#[derive(Debug)]
pub(crate) struct ProcessTimer {
    metrics: MessagingMetrics,
    started: Instant,
    attributes: Vec<KeyValue>,
    error_type: std::sync::OnceLock<String>,
}

#[cfg_attr(not(any(feature = "kafka", feature = "amqp")), allow(dead_code))]
impl ProcessTimer {
    /// Counts a message received at `started` as consumed (with
    /// `consumed` attributes) and times its processing from then (with
    /// `attributes`, which the caller no longer needs: they move here).
    /// Records nothing when `metrics` are disabled.
    pub(crate) fn consumed(
        metrics: &MessagingMetrics,
        started: Instant,
        consumed: &[KeyValue],
        attributes: Vec<KeyValue>,
    ) -> Self {
        metrics.count_consumed(1, consumed);
        Self {
            metrics: metrics.clone(),
            started,
            attributes,
            error_type: std::sync::OnceLock::new(),
        }
    }

    /// Marks the processing failed (the first error type counts).
    pub(crate) fn fail(&self, error_type: &str) {
        let _ = self.error_type.set(error_type.to_owned());
    }
}

impl Drop for ProcessTimer {
    fn drop(&mut self) {
        if !self.metrics.enabled() {
            return;
        }
        let mut attributes = std::mem::take(&mut self.attributes);
        if let Some(error_type) = self.error_type.take() {
            attributes.push(crate::semconv::error_type(error_type));
        }
        self.metrics.record_process(self.started, &attributes);
    }
}

/// Times one send until the broker answers; [`SendTimer::finish`] records
/// `messaging.client.operation.duration` and counts the message in
/// `messaging.client.sent.messages` (with `error.type` when it failed).
#[cfg_attr(not(any(feature = "kafka", feature = "amqp")), allow(dead_code))]
#[derive(Debug)]
pub(crate) struct SendTimer {
    metrics: MessagingMetrics,
    started: Instant,
    attributes: Vec<KeyValue>,
}

#[cfg_attr(not(any(feature = "kafka", feature = "amqp")), allow(dead_code))]
impl SendTimer {
    /// Starts timing now.
    pub(crate) fn start(metrics: &MessagingMetrics, attributes: Vec<KeyValue>) -> Self {
        Self {
            metrics: metrics.clone(),
            started: Instant::now(),
            attributes,
        }
    }

    /// Records the send's outcome.
    pub(crate) fn finish(mut self, error_type: Option<&str>) {
        if !self.metrics.enabled() {
            return;
        }
        if let Some(error_type) = error_type {
            self.attributes
                .push(crate::semconv::error_type(error_type.to_owned()));
        }
        self.metrics
            .record_operation(self.started, &self.attributes);
        self.metrics.count_sent(1, &self.attributes);
    }
}
