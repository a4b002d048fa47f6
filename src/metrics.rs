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
//!
//! The clients record each message through a [`Series`]: the instruments
//! bound once to one attribute set (OpenTelemetry's `bind`, experimental in
//! 0.33), found again by comparing what the set is built from. Recording a
//! message then builds no attribute and hashes none — the SDK's per-call
//! lookup was nearly all of the metrics' cost (6 700 instructions a send,
//! 9 400 a consumed message).

use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use opentelemetry::metrics::{BoundCounter, BoundHistogram, Counter, Histogram, Meter};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_semantic_conventions::metric as names;

use crate::semconv::{
    AttributeRules, Conventions, Destination, Endpoint, MessagingAttributes, Operation,
};

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

/// The instruments, or nothing when no meter provider records them.
#[derive(Clone, Debug)]
pub struct MessagingMetrics {
    /// Shared: every timed message holds a handle (one reference count).
    instruments: Option<Arc<Instruments>>,
}

/// The instruments and the series bound so far.
#[derive(Debug)]
struct Instruments {
    set: InstrumentSet,
    /// Bound series, found by [`SeriesKey::matches`]; at most
    /// [`MAX_BOUND_SERIES`], later ones record unbound.
    bound: RwLock<Vec<(SeriesKey, Arc<BoundSeries>)>>,
}

/// How many attribute sets are bound (each holds its SDK tracker for the
/// process's life): more destinations than this record through the
/// unbound, slower path.
const MAX_BOUND_SERIES: usize = 256;

/// Each instrument, `None` when turned off.
#[derive(Clone, Debug)]
struct InstrumentSet {
    operation_duration: Option<Histogram<f64>>,
    process_duration: Option<Histogram<f64>>,
    sent: Option<Counter<u64>>,
    consumed: Option<Counter<u64>>,
    queue_time: Option<Histogram<f64>>,
}

impl InstrumentSet {
    fn any(&self) -> bool {
        self.operation_duration.is_some()
            || self.process_duration.is_some()
            || self.sent.is_some()
            || self.consumed.is_some()
            || self.queue_time.is_some()
    }
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
            instruments: Some(Arc::new(Instruments {
                set: InstrumentSet {
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
                queue_time: Some(
                    meter
                        .f64_histogram(crate::instrument::QUEUE_TIME_METRIC)
                        .with_unit("s")
                        .with_description(
                            "Time a message waited in the broker: consumer clock minus producer timestamp",
                        )
                        .build(),
                ),
                },
                bound: RwLock::new(Vec::new()),
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
        let all = &all.set;
        let kept = InstrumentSet {
            operation_duration: keep(set, M::OperationDuration, &all.operation_duration),
            process_duration: keep(set, M::ProcessDuration, &all.process_duration),
            sent: keep(set, M::SentMessages, &all.sent),
            consumed: keep(set, M::ConsumedMessages, &all.consumed),
            queue_time: keep(set, M::QueueTime, &all.queue_time),
        };
        Self {
            instruments: kept.any().then(|| {
                Arc::new(Instruments {
                    set: kept,
                    bound: RwLock::new(Vec::new()),
                })
            }),
        }
    }

    /// The series `of` describes, bound on first use: what each message
    /// records through. A disabled series when nothing records.
    pub fn series(&self, of: SeriesOf<'_>, rules: &AttributeRules) -> Series {
        let Some(instruments) = &self.instruments else {
            return Series(None);
        };
        let conventions = rules.conventions;
        let find = |bound: &[(SeriesKey, Arc<BoundSeries>)]| {
            bound
                .iter()
                .find(|(key, _)| key.matches(&of, conventions))
                .map(|(_, series)| Series(Some(series.clone())))
        };
        if let Ok(bound) = instruments.bound.read()
            && let Some(series) = find(&bound)
        {
            return series;
        }
        let attributes = of.attributes(rules);
        let receive_attributes = (of.operation == Operation::Process).then(|| {
            SeriesOf {
                operation: Operation::Receive,
                extra: None,
                ..of
            }
            .attributes(rules)
        });
        let unbound = |attributes, receive_attributes| {
            let series = BoundSeries::new(&instruments.set, attributes, receive_attributes, false);
            Series(Some(Arc::new(series)))
        };
        let Ok(mut bound) = instruments.bound.write() else {
            return unbound(attributes, receive_attributes);
        };
        if let Some(series) = find(&bound) {
            return series;
        }
        if bound.len() >= MAX_BOUND_SERIES {
            return unbound(attributes, receive_attributes);
        }
        let series = Arc::new(BoundSeries::new(
            &instruments.set,
            attributes,
            receive_attributes,
            true,
        ));
        bound.push((SeriesKey::of(&of, conventions), series.clone()));
        Series(Some(series))
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
            .and_then(|i| i.set.operation_duration.as_ref())
        {
            i.record(started.elapsed().as_secs_f64(), attributes);
        }
    }

    /// One message's processing, begun at `started`.
    pub fn record_process(&self, started: Instant, attributes: &[KeyValue]) {
        if let Some(i) = self
            .instruments
            .as_ref()
            .and_then(|i| i.set.process_duration.as_ref())
        {
            i.record(started.elapsed().as_secs_f64(), attributes);
        }
    }

    /// `count` messages sent (attempted).
    pub fn count_sent(&self, count: u64, attributes: &[KeyValue]) {
        if let Some(i) = self.instruments.as_ref().and_then(|i| i.set.sent.as_ref()) {
            i.add(count, attributes);
        }
    }

    /// `count` messages delivered to the application.
    pub fn count_consumed(&self, count: u64, attributes: &[KeyValue]) {
        if let Some(i) = self
            .instruments
            .as_ref()
            .and_then(|i| i.set.consumed.as_ref())
        {
            i.add(count, attributes);
        }
    }
}

/// What one metric series is built from. Its attributes are built from
/// these once, and the series is found again by comparing them: nothing
/// is built or hashed per message.
#[derive(Clone, Copy, Debug)]
pub struct SeriesOf<'a> {
    /// The operation recorded.
    pub operation: Operation,
    /// Where the messages go or come from.
    pub destination: &'a Destination,
    /// The consumer group, if any.
    pub group: Option<&'a str>,
    /// The broker.
    pub endpoint: &'a Endpoint,
    /// One attribute of the caller's own (the relay's route).
    pub extra: Option<(&'static str, &'a str)>,
}

impl SeriesOf<'_> {
    /// The series' attributes (see [`MessagingAttributes::metric`]).
    fn attributes(&self, rules: &AttributeRules) -> Vec<KeyValue> {
        let mut attributes = MessagingAttributes::metric(
            self.operation,
            self.destination,
            self.group,
            self.endpoint,
            rules,
        )
        .into_vec();
        if let Some((key, value)) = self.extra {
            attributes.push(KeyValue::new(key, value.to_owned()));
        }
        attributes
    }
}

/// A bound series' [`SeriesOf`], owned; with the conventions, which name
/// the attributes' keys.
#[derive(Debug)]
struct SeriesKey {
    operation: Operation,
    destination: Destination,
    group: Option<Box<str>>,
    address: Option<Arc<str>>,
    port: Option<u16>,
    extra: Option<(&'static str, Box<str>)>,
    conventions: Conventions,
}

impl SeriesKey {
    fn of(of: &SeriesOf<'_>, conventions: Conventions) -> Self {
        Self {
            operation: of.operation,
            destination: of.destination.clone(),
            group: of.group.map(Box::from),
            address: of.endpoint.address.clone(),
            port: of.endpoint.port,
            extra: of.extra.map(|(key, value)| (key, Box::from(value))),
            conventions,
        }
    }

    /// Whether `of` (under `conventions`) has this key's attributes.
    fn matches(&self, of: &SeriesOf<'_>, conventions: Conventions) -> bool {
        self.operation == of.operation
            && self.conventions == conventions
            && self.port == of.endpoint.port
            && self.group.as_deref() == of.group
            && match (&self.address, &of.endpoint.address) {
                // A client's endpoint is shared: usually the same pointer.
                (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == b,
                (None, None) => true,
                _ => false,
            }
            && self.extra.as_ref().map(|(k, v)| (*k, &**v)) == of.extra
            && self.destination == *of.destination
    }
}

/// One attribute set's instruments, each bound at its first measurement
/// (binding earlier would export an empty series of an instrument never
/// used, with nonsense min and max) — or, past [`MAX_BOUND_SERIES`],
/// recorded with the attributes. A failure records with the attributes and
/// `error.type`.
#[derive(Debug)]
struct BoundSeries {
    attributes: Vec<KeyValue>,
    /// A process series counts its messages consumed under the receive
    /// operation's attributes (one lookup a message, not two).
    receive_attributes: Option<Vec<KeyValue>>,
    unbound: InstrumentSet,
    binds: bool,
    operation_duration: OnceLock<BoundHistogram<f64>>,
    process_duration: OnceLock<BoundHistogram<f64>>,
    sent: OnceLock<BoundCounter<u64>>,
    consumed: OnceLock<BoundCounter<u64>>,
    queue_time: OnceLock<BoundHistogram<f64>>,
}

impl BoundSeries {
    fn new(
        set: &InstrumentSet,
        attributes: Vec<KeyValue>,
        receive_attributes: Option<Vec<KeyValue>>,
        binds: bool,
    ) -> Self {
        Self {
            attributes,
            receive_attributes,
            unbound: set.clone(),
            binds,
            operation_duration: OnceLock::new(),
            process_duration: OnceLock::new(),
            sent: OnceLock::new(),
            consumed: OnceLock::new(),
            queue_time: OnceLock::new(),
        }
    }

    fn record(
        &self,
        instrument: &Option<Histogram<f64>>,
        bound: &OnceLock<BoundHistogram<f64>>,
        attributes: &[KeyValue],
        value: f64,
    ) {
        let Some(instrument) = instrument else { return };
        if self.binds {
            bound
                .get_or_init(|| instrument.bind(attributes))
                .record(value);
        } else {
            instrument.record(value, attributes);
        }
    }

    fn add(
        &self,
        instrument: &Option<Counter<u64>>,
        bound: &OnceLock<BoundCounter<u64>>,
        attributes: &[KeyValue],
    ) {
        let Some(instrument) = instrument else { return };
        if self.binds {
            bound.get_or_init(|| instrument.bind(attributes)).add(1);
        } else {
            instrument.add(1, attributes);
        }
    }

    /// A duration of `seconds` in `instrument`: bound, or with the
    /// attributes and `error.type` when it failed.
    fn record_duration(
        &self,
        instrument: &Option<Histogram<f64>>,
        bound: &OnceLock<BoundHistogram<f64>>,
        seconds: f64,
        error_type: Option<&str>,
    ) {
        match (error_type, instrument) {
            (None, _) => self.record(instrument, bound, &self.attributes, seconds),
            (Some(error_type), Some(h)) => h.record(seconds, &self.failed(error_type)),
            (Some(_), None) => {}
        }
    }

    /// The attributes with `error.type`.
    fn failed(&self, error_type: &str) -> Vec<KeyValue> {
        let mut attributes = self.attributes.clone();
        attributes.push(crate::semconv::error_type(error_type.to_owned()));
        attributes
    }
}

/// One metric series, what a client records each message through (see the
/// module's docs); records nothing when no metric is recorded.
#[derive(Clone, Debug, Default)]
pub struct Series(Option<Arc<BoundSeries>>);

#[cfg_attr(not(any(feature = "kafka", feature = "amqp")), allow(dead_code))]
impl Series {
    /// Whether anything is recorded through it.
    #[cfg(test)]
    pub(crate) fn records(&self) -> bool {
        self.0.is_some()
    }

    /// A client operation (poll, commit, ack…) begun at `started`, failed
    /// with `error_type` or not.
    pub fn record_operation(&self, started: Instant, error_type: Option<&str>) {
        let Some(series) = &self.0 else { return };
        series.record_duration(
            &series.unbound.operation_duration,
            &series.operation_duration,
            started.elapsed().as_secs_f64(),
            error_type,
        );
    }

    /// One send begun at `started`: its duration, and the message counted
    /// as sent (both with `error_type` when it failed).
    pub fn record_send(&self, started: Instant, error_type: Option<&str>) {
        let Some(series) = &self.0 else { return };
        let seconds = started.elapsed().as_secs_f64();
        let set = &series.unbound;
        match error_type {
            None => {
                series.record(
                    &set.operation_duration,
                    &series.operation_duration,
                    &series.attributes,
                    seconds,
                );
                series.add(&set.sent, &series.sent, &series.attributes);
            }
            Some(error_type) => {
                let failed = series.failed(error_type);
                if let Some(h) = &set.operation_duration {
                    h.record(seconds, &failed);
                }
                if let Some(c) = &set.sent {
                    c.add(1, &failed);
                }
            }
        }
    }

    /// One message delivered to the application (or the relay), counted
    /// under the receive operation's attributes.
    pub fn count_consumed(&self) {
        let Some(series) = &self.0 else { return };
        let attributes = series
            .receive_attributes
            .as_deref()
            .unwrap_or(&series.attributes);
        series.add(&series.unbound.consumed, &series.consumed, attributes);
    }

    /// One message's processing, begun at `started`.
    pub fn record_process(&self, started: Instant, error_type: Option<&str>) {
        let Some(series) = &self.0 else { return };
        series.record_duration(
            &series.unbound.process_duration,
            &series.process_duration,
            started.elapsed().as_secs_f64(),
            error_type,
        );
    }

    /// How long a message waited in the broker.
    pub fn record_queue_time(&self, waited: Duration) {
        let Some(series) = &self.0 else { return };
        series.record(
            &series.unbound.queue_time,
            &series.queue_time,
            &series.attributes,
            waited.as_secs_f64(),
        );
    }
}

/// Times one message's processing and records
/// `messaging.process.duration` when dropped (with `error.type` when
/// [`ProcessTimer::fail`] was called): it lives as long as the process
/// span it measures.
#[cfg_attr(not(any(feature = "kafka", feature = "amqp")), allow(dead_code))]
#[derive(Debug)]
pub(crate) struct ProcessTimer {
    series: Series,
    started: Instant,
    error_type: std::sync::OnceLock<String>,
}

#[cfg_attr(not(any(feature = "kafka", feature = "amqp")), allow(dead_code))]
impl ProcessTimer {
    /// Counts a message received at `started` as consumed and times its
    /// processing from then, in `series` (a process series).
    pub(crate) fn consumed(series: Series, started: Instant) -> Self {
        series.count_consumed();
        Self {
            series,
            started,
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
        self.series
            .record_process(self.started, self.error_type.get().map(String::as_str));
    }
}

/// Times one send until the broker answers; [`SendTimer::finish`] records
/// `messaging.client.operation.duration` and counts the message in
/// `messaging.client.sent.messages` (with `error.type` when it failed).
#[cfg_attr(not(any(feature = "kafka", feature = "amqp")), allow(dead_code))]
#[derive(Debug)]
pub(crate) struct SendTimer {
    series: Series,
    started: Instant,
}

#[cfg_attr(not(any(feature = "kafka", feature = "amqp")), allow(dead_code))]
impl SendTimer {
    /// Starts timing now.
    pub(crate) fn start(series: Series) -> Self {
        Self {
            series,
            started: Instant::now(),
        }
    }

    /// Records the send's outcome.
    pub(crate) fn finish(self, error_type: Option<&str>) {
        self.series.record_send(self.started, error_type);
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::KeyValue;
    use opentelemetry::metrics::MeterProvider as _;
    use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
    use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};

    use super::{MAX_BOUND_SERIES, MessagingMetrics, SendTimer, SeriesOf};
    use crate::semconv::{AttributeRules, Destination, Endpoint, Operation};

    fn provider() -> (SdkMeterProvider, InMemoryMetricExporter) {
        let exporter = InMemoryMetricExporter::default();
        let meters = SdkMeterProvider::builder()
            .with_reader(PeriodicReader::builder(exporter.clone()).build())
            .build();
        (meters, exporter)
    }

    /// `messaging.client.sent.messages` per attribute set, as exported.
    fn sent(
        meters: &SdkMeterProvider,
        exporter: &InMemoryMetricExporter,
    ) -> Vec<(Vec<KeyValue>, u64)> {
        meters.force_flush().expect("flush");
        let mut out = Vec::new();
        for rm in exporter.get_finished_metrics().expect("metrics") {
            for metric in rm.scope_metrics().flat_map(|sm| sm.metrics()) {
                if metric.name() != "messaging.client.sent.messages" {
                    continue;
                }
                if let AggregatedMetrics::U64(MetricData::Sum(sum)) = metric.data() {
                    for point in sum.data_points() {
                        let mut attributes: Vec<KeyValue> = point.attributes().cloned().collect();
                        attributes.sort_by(|a, b| a.key.cmp(&b.key));
                        out.push((attributes, point.value()));
                    }
                }
            }
        }
        exporter.reset();
        out
    }

    fn send_of<'a>(destination: &'a Destination, endpoint: &'a Endpoint) -> SeriesOf<'a> {
        SeriesOf {
            operation: Operation::Send,
            destination,
            group: None,
            endpoint,
            extra: None,
        }
    }

    #[test]
    fn a_series_is_bound_once_and_found_again() {
        let (meters, _) = provider();
        let metrics = MessagingMetrics::new(&meters.meter("t"));
        let rules = AttributeRules::default();
        let endpoint = Endpoint::from_servers("broker:9092", None);
        let orders = Destination::kafka("orders");
        let first = metrics.series(send_of(&orders, &endpoint), &rules);
        let again = metrics.series(
            send_of(&orders, &Endpoint::from_servers("broker:9092", None)),
            &rules,
        );
        let (Some(first), Some(again)) = (&first.0, &again.0) else {
            panic!("enabled metrics give a series");
        };
        assert!(
            std::sync::Arc::ptr_eq(first, again),
            "found again, not bound twice"
        );
        let other_broker = metrics.series(
            send_of(&orders, &Endpoint::from_servers("other:9092", None)),
            &rules,
        );
        let other_topic =
            metrics.series(send_of(&Destination::kafka("refunds"), &endpoint), &rules);
        for other in [&other_broker, &other_topic] {
            assert!(!std::sync::Arc::ptr_eq(
                first,
                other.0.as_ref().expect("a series")
            ));
        }
    }

    /// Bound or not, the exported series are the attributes the
    /// conventions give, failures with `error.type`, and none is lost past
    /// the bound series' limit.
    #[test]
    fn bound_and_unbound_series_export_the_same_points() {
        let (meters, exporter) = provider();
        let metrics = MessagingMetrics::new(&meters.meter("t"));
        let rules = AttributeRules::default();
        let endpoint = Endpoint::from_servers("broker:9092", None);
        let topics: Vec<Destination> = (0..MAX_BOUND_SERIES + 10)
            .map(|i| Destination::kafka(format!("t{i}")))
            .collect();
        for topic in &topics {
            for _ in 0..3 {
                SendTimer::start(metrics.series(send_of(topic, &endpoint), &rules)).finish(None);
            }
            SendTimer::start(metrics.series(send_of(topic, &endpoint), &rules))
                .finish(Some("timeout"));
        }
        let points = sent(&meters, &exporter);
        assert_eq!(
            points.len(),
            2 * topics.len(),
            "a success and a failure series per topic"
        );
        for topic in [&topics[0], &topics[MAX_BOUND_SERIES + 5]] {
            let expected = send_of(topic, &endpoint).attributes(&rules);
            let mut ok = expected.clone();
            ok.sort_by(|a, b| a.key.cmp(&b.key));
            let mut failed = expected;
            failed.push(crate::semconv::error_type("timeout"));
            failed.sort_by(|a, b| a.key.cmp(&b.key));
            assert!(points.contains(&(ok, 3)), "{topic:?}: 3 sent");
            assert!(points.contains(&(failed, 1)), "{topic:?}: 1 failed");
        }
    }

    /// Only what was measured is exported: a series found but not used,
    /// or a process series whose messages were only counted, adds no empty
    /// series (an empty histogram exports nonsense min and max).
    #[test]
    fn only_measured_instruments_are_exported() {
        let (meters, exporter) = provider();
        let metrics = MessagingMetrics::new(&meters.meter("t"));
        let rules = AttributeRules::default();
        let endpoint = Endpoint::from_servers("broker:9092", None);
        let orders = Destination::kafka("orders");
        let _unused = metrics.series(send_of(&orders, &endpoint), &rules);
        let process = metrics.series(
            SeriesOf {
                operation: Operation::Process,
                destination: &orders,
                group: Some("billing"),
                endpoint: &endpoint,
                extra: Some(("tracebridge.route", "r")),
            },
            &rules,
        );
        process.count_consumed();
        meters.force_flush().expect("flush");
        let exported: Vec<(String, Vec<KeyValue>)> = exporter
            .get_finished_metrics()
            .expect("metrics")
            .iter()
            .flat_map(|rm| rm.scope_metrics())
            .flat_map(|sm| sm.metrics())
            .flat_map(|m| match m.data() {
                AggregatedMetrics::U64(MetricData::Sum(sum)) => sum
                    .data_points()
                    .map(|p| (m.name().to_owned(), p.attributes().cloned().collect()))
                    .collect::<Vec<_>>(),
                _ => vec![(m.name().to_owned(), Vec::new())],
            })
            .collect();
        assert_eq!(exported.len(), 1, "{exported:#?}");
        let (name, attributes) = &exported[0];
        assert_eq!(name, "messaging.client.consumed.messages");
        let has = |key: &str, value: &str| {
            attributes
                .iter()
                .any(|kv| kv.key.as_str() == key && kv.value.as_str() == value)
        };
        assert!(has("messaging.operation.type", "receive"), "{attributes:?}");
        assert!(
            has("messaging.consumer.group.name", "billing"),
            "{attributes:?}"
        );
        assert!(
            !attributes
                .iter()
                .any(|kv| kv.key.as_str() == "tracebridge.route"),
            "the route goes on process metrics only"
        );
    }
}
