//! What the traced clients record with, and the span rules they share.
//!
//! [`Instrumentation`] is where tracebridge's spans and metrics go. By
//! default that is wherever the application's own go (as every
//! OpenTelemetry instrumentation library does): its `tracing-opentelemetry`
//! layer or its global tracer provider, and its global meter provider —
//! looked up when a message first needs them, not when a client is made.
//! Tests and applications with providers of their own hand them in.
//! tracebridge never installs a provider or subscriber itself; only
//! [`crate::telemetry::init`] does, for services with no set-up of their
//! own.
//!
//! * `recorder.rs`: where a span goes, and how it starts;
//! * `parent.rs`: the parent/link rules of process spans ([`ParentPolicy`]);
//! * `in_span.rs`: running the application's work inside a message's span;
//! * `annotations.rs`: attributes the relay hands its PRODUCER spans;
//! * `diagnose.rs`: saying once when spans would go nowhere.

// The transports are this module's users: the core built alone (no
// `kafka`, no `amqp` feature) leaves most of it unused.
#![cfg_attr(
    not(any(feature = "kafka", feature = "amqp")),
    allow(dead_code, unused_imports)
)]

mod annotations;
mod diagnose;
mod in_span;
mod parent;
mod recorder;
mod tracing_span;

use std::borrow::Cow;
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use opentelemetry::global::{self, BoxedTracer};
use opentelemetry::metrics::MeterProvider;
use opentelemetry::trace::{
    FutureExt as _, Link, SpanKind, Status, TraceContextExt, Tracer, TracerProvider,
};
use opentelemetry::{Context, InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::SdkTracerProvider;

#[cfg(feature = "relay")]
pub(crate) use annotations::with_send_annotations;
pub(crate) use annotations::{producer_attributes, send_annotations};
pub use in_span::HandlerOutcome;
pub(crate) use in_span::in_context;
pub use parent::ParentPolicy;
pub(crate) use parent::{ambient_context, link_to};
pub(crate) use recorder::{Attributes, SpanSpec};

use crate::metrics::{MessagingMetric, MessagingMetrics, MetricSet, SendTimer, Series, SeriesOf};
use crate::propagation::ExtractedContext;
use crate::semconv::{
    self, AttributePolicy, AttributeRules, Conventions, Destination, Endpoint, Operation,
    SemconvVersion,
};
use recorder::{GlobalTracer, Recorder};

/// The attribute that says why an incoming context was not used.
pub const INVALID_CONTEXT_ATTRIBUTE: &str = "tracebridge.context.invalid";
/// How long the message waited in the broker, in milliseconds (process
/// spans; `now - producer timestamp`).
pub const QUEUE_TIME_ATTRIBUTE: &str = "tracebridge.queue_time_ms";
/// The histogram of broker wait times, in seconds.
pub const QUEUE_TIME_METRIC: &str = "tracebridge.messaging.queue_time";
/// The instrumentation scope name of tracebridge's own spans and metrics.
pub(crate) const SCOPE_NAME: &str = "tracebridge";

/// One received message as its span describes it: name, attributes, when
/// it was produced and the queue-time metric's attributes. Each transport
/// builds it in one function (`kafka::span::received`,
/// `amqp::span::received`) that its library consumer and the relay both
/// call, so their spans cannot drift apart.
///
/// The span's attributes are not here: each transport's `attributes`
/// function builds them, called only when the span records.
#[derive(Debug)]
pub(crate) struct Received {
    pub(crate) name: Cow<'static, str>,
    pub(crate) produced_at: Option<SystemTime>,
    /// The queue-time, `messaging.process.duration` and
    /// `messaging.client.consumed.messages` series.
    pub(crate) process_series: Series,
}

/// Where tracebridge's clients record their spans and metrics, and which
/// conventions they follow.
///
/// The default, [`Instrumentation::global`], records where the
/// application's own telemetry goes. Hand in providers of your own with
/// [`Instrumentation::new`] (any tracer provider) or
/// [`Instrumentation::from_sdk`] (the SDK's, without boxing per span); each
/// client takes one through its `with_instrumentation` option:
///
/// ```
/// use opentelemetry_sdk::trace::SdkTracerProvider;
///
/// let provider = SdkTracerProvider::builder().build();
/// let instrumentation = tracebridge::Instrumentation::from_sdk(&provider, None)
///     .with_semconv_version(tracebridge::semconv::SemconvVersion::V1_44);
/// # let _ = instrumentation;
/// ```
#[derive(Clone)]
pub struct Instrumentation {
    recorder: Recorder,
    meters: Meters,
    /// The metrics recorded (all by default).
    metric_set: MetricSet,
    scope: InstrumentationScope,
    rules: AttributeRules,
    /// New traces with links ask the sampler to decide by the links.
    link_sampling: bool,
}

impl std::fmt::Debug for Instrumentation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let recorder = match &self.recorder {
            Recorder::Global(_) => "global",
            Recorder::Sdk(_) => "sdk",
            Recorder::Boxed(_) => "given",
        };
        f.debug_struct("Instrumentation")
            .field("recorder", &recorder)
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

/// The metric instruments, or where to find them.
#[derive(Clone)]
enum Meters {
    /// From the global meter provider, looked up at first use.
    Global(Arc<OnceLock<MessagingMetrics>>),
    /// From a provider handed in (or none).
    Given(MessagingMetrics),
}

/// tracebridge's scope, with the schema of the conventions in use.
fn scope(version: SemconvVersion) -> InstrumentationScope {
    InstrumentationScope::builder(SCOPE_NAME)
        .with_version(env!("CARGO_PKG_VERSION"))
        .with_schema_url(version.schema_url())
        .build()
}

impl Default for Instrumentation {
    fn default() -> Self {
        Self::global()
    }
}

impl Instrumentation {
    /// Records where the application's own telemetry goes: spans through
    /// its `tracing-opentelemetry` layer when its subscriber has one (so
    /// they nest with its `tracing` spans and their ids reach its logs),
    /// else through the global tracer provider; metrics through the global
    /// meter provider. Both are looked up at the first message, and when
    /// there is nothing to record into, the first message says so (once)
    /// with the fix. Conventions and attribute policy come from the
    /// environment (`TRACEBRIDGE_SEMCONV_VERSION`,
    /// `OTEL_SEMCONV_STABILITY_OPT_IN`, `TRACEBRIDGE_RECORD_*`).
    pub fn global() -> Self {
        let rules = AttributeRules::from_env();
        let scope = scope(rules.conventions.version);
        Self {
            recorder: Recorder::Global(Arc::new(GlobalTracer::new(scope.clone()))),
            meters: Meters::Global(Arc::new(OnceLock::new())),
            metric_set: MetricSet::ALL,
            scope,
            rules,
            link_sampling: true,
        }
    }

    /// Records through `tracers` (any tracer provider) and `meters`
    /// (`None`: no metrics).
    pub fn new<P>(tracers: &P, meters: Option<&dyn MeterProvider>) -> Self
    where
        P: TracerProvider,
        P::Tracer: Send + Sync + 'static,
        <P::Tracer as Tracer>::Span: Send + Sync + 'static,
    {
        let rules = AttributeRules::from_env();
        let scope = scope(rules.conventions.version);
        let tracer = BoxedTracer::new(Box::new(tracers.tracer_with_scope(scope.clone())));
        Self::given(Recorder::Boxed(Arc::new(tracer)), meters, scope, rules)
    }

    /// Records through an SDK tracer provider (the fastest path: no boxing
    /// per span) and `meters` (`None`: no metrics).
    pub fn from_sdk(tracers: &SdkTracerProvider, meters: Option<&dyn MeterProvider>) -> Self {
        let rules = AttributeRules::from_env();
        let scope = scope(rules.conventions.version);
        let recorder = Recorder::Sdk(tracers.tracer_with_scope(scope.clone()));
        Self::given(recorder, meters, scope, rules)
    }

    /// [`Instrumentation::from_sdk`] under these conventions and policy
    /// (the scope's schema URL names their version) rather than those of
    /// the environment.
    pub fn from_sdk_with_rules(
        tracers: &SdkTracerProvider,
        meters: Option<&dyn MeterProvider>,
        rules: AttributeRules,
    ) -> Self {
        let scope = scope(rules.conventions.version);
        let recorder = Recorder::Sdk(tracers.tracer_with_scope(scope.clone()));
        Self::given(recorder, meters, scope, rules)
    }

    fn given(
        recorder: Recorder,
        meters: Option<&dyn MeterProvider>,
        scope: InstrumentationScope,
        rules: AttributeRules,
    ) -> Self {
        let meters = match meters {
            Some(meters) => MessagingMetrics::from_provider(meters, scope.clone()),
            None => MessagingMetrics::disabled(),
        };
        Self {
            recorder,
            meters: Meters::Given(meters),
            metric_set: MetricSet::ALL,
            scope,
            rules,
            link_sampling: true,
        }
    }

    /// Whether a span that starts a new trace linked to the message(s)
    /// that caused it — a consumer in `link` mode, a batch span, the
    /// relay's correlation `link` — asks the sampler to keep it exactly
    /// when a linked context is sampled, so that a kept trace never links
    /// to a dropped one. Default: on. Honoured by
    /// [`crate::sampling::ProbabilitySampler`]; other samplers decide as
    /// they always do.
    pub fn with_link_sampling(mut self, on: bool) -> Self {
        self.link_sampling = on;
        self
    }

    /// Overrides which semantic-convention keys are emitted. Default: from
    /// `TRACEBRIDGE_SEMCONV_VERSION` and `OTEL_SEMCONV_STABILITY_OPT_IN`.
    /// The spans' scope keeps the schema URL it was created with.
    pub fn with_conventions(mut self, conventions: Conventions) -> Self {
        self.rules.conventions = conventions;
        self
    }

    /// Pins the conventions' version (keeps `messaging/dup` as it is).
    pub fn with_semconv_version(mut self, version: SemconvVersion) -> Self {
        self.rules.conventions.version = version;
        self
    }

    /// What may be recorded of message keys, request ids and captured
    /// headers. Default: from the `TRACEBRIDGE_RECORD_*` variables, else
    /// keys and request ids left out.
    pub fn with_attribute_policy(mut self, policy: AttributePolicy) -> Self {
        self.rules.policy = policy;
        self
    }

    /// Records only these metrics (none: `with_metrics([])`). Default: all
    /// of [`MessagingMetric::ALL`]. A metric turned off costs nothing per
    /// message, and when all are off no metric attribute is built.
    pub fn with_metrics(mut self, metrics: impl IntoIterator<Item = MessagingMetric>) -> Self {
        self.metric_set = MetricSet::of(metrics);
        self.meters = match &self.meters {
            Meters::Given(set) => Meters::Given(set.only(self.metric_set)),
            // Looked up at the first message, with the choice applied then.
            Meters::Global(_) => Meters::Global(Arc::new(OnceLock::new())),
        };
        self
    }

    /// The conventions and policy in force.
    pub fn rules(&self) -> &AttributeRules {
        &self.rules
    }

    /// The spec's messaging metrics.
    pub(crate) fn metrics(&self) -> &MessagingMetrics {
        match &self.meters {
            Meters::Given(metrics) => metrics,
            Meters::Global(cell) => cell.get_or_init(|| {
                // `telemetry::init` ran and set up no metrics (no OTLP
                // endpoint): skip building their attributes per message.
                if crate::telemetry::metrics_disabled() {
                    MessagingMetrics::disabled()
                } else {
                    MessagingMetrics::from_provider(&*global::meter_provider(), self.scope.clone())
                        .only(self.metric_set)
                }
            }),
        }
    }

    /// The metric series of `operation` on `destination` (see
    /// [`crate::metrics::Series`]): bound at its first message, found again
    /// after; a disabled series when no metric records.
    pub(crate) fn series(
        &self,
        operation: Operation,
        destination: &Destination,
        group: Option<&str>,
        endpoint: &Endpoint,
    ) -> Series {
        self.series_of(SeriesOf {
            operation,
            destination,
            group,
            endpoint,
            extra: None,
        })
    }

    /// [`Instrumentation::series`], with every field given.
    pub(crate) fn series_of(&self, of: SeriesOf<'_>) -> Series {
        self.metrics().series(of, &self.rules)
    }

    /// Starts timing a send (see [`SendTimer`]).
    pub(crate) fn time_send(&self, destination: &Destination, endpoint: &Endpoint) -> SendTimer {
        SendTimer::start(self.series(Operation::Send, destination, None, endpoint))
    }

    /// Starts the span `spec` describes; returns the context holding it.
    pub(crate) fn start<F: FnOnce() -> Vec<KeyValue>>(
        &self,
        spec: SpanSpec<'_>,
        attributes: impl FnOnce(&Context) -> Attributes<F>,
    ) -> Context {
        if !self.link_sampling || spec.links.is_empty() {
            return self.recorder.start(spec, attributes);
        }
        let ambient;
        let parent = match spec.parent {
            Some(parent) => parent,
            None => {
                ambient = parent::ambient_context();
                &ambient
            }
        };
        let marked;
        let mut spec: SpanSpec<'_> = spec;
        spec.parent = Some(parent);
        // Only a span that starts a trace is decided by its links (a join
        // mode span links to its own parent): the others skip the mark.
        if !parent.span().span_context().is_valid() {
            // It stays in the contexts under this span, where it matters
            // only to another span that starts a trace and has links.
            marked = crate::sampling::ask_links_decide(parent);
            spec.parent = Some(&marked);
        }
        self.recorder.start(spec, attributes)
    }

    /// Starts a span of `kind` as a child of `parent`, with attributes
    /// (available to samplers) and links; returns the context holding it.
    /// For the benches: not the library's API.
    #[doc(hidden)]
    pub fn start_span(
        &self,
        name: impl Into<Cow<'static, str>>,
        kind: SpanKind,
        parent: &Context,
        attributes: Vec<KeyValue>,
        links: Vec<Link>,
    ) -> Context {
        self.start(
            SpanSpec::new(name, kind).parent(parent).links(links),
            |_| Attributes::<fn() -> Vec<KeyValue>>::Now(attributes),
        )
    }

    /// [`Instrumentation::start_span`] for the hot path: under an
    /// unsampled parent, `attributes` are computed only if the span
    /// records (see [`Attributes::for_parent`]). For the benches: not the
    /// library's API.
    #[doc(hidden)]
    pub fn start_span_lazy(
        &self,
        name: impl Into<Cow<'static, str>>,
        kind: SpanKind,
        parent: &Context,
        links: Vec<Link>,
        attributes: impl FnOnce() -> Vec<KeyValue>,
    ) -> Context {
        self.start(
            SpanSpec::new(name, kind).parent(parent).links(links),
            |parent| Attributes::for_parent(parent, attributes),
        )
    }

    /// Starts a CONSUMER process span for one message, per `policy`, with
    /// `attributes` computed only if the span records.
    ///
    /// A valid creation context is always linked. An unusable one is
    /// recorded as [`INVALID_CONTEXT_ATTRIBUTE`] and the span starts a new
    /// trace (or sits under the ambient span for [`ParentPolicy::Ambient`]).
    /// The relay's, and the benches': not the library's API.
    #[doc(hidden)]
    pub fn start_process_span_lazy(
        &self,
        name: impl Into<Cow<'static, str>>,
        policy: ParentPolicy,
        extracted: &ExtractedContext,
        attributes: impl FnOnce() -> Vec<KeyValue>,
    ) -> Context {
        let links = link_to(extracted, Vec::new());
        let parent = parent::process_parent(policy, extracted);
        self.start(
            SpanSpec::new(name, SpanKind::Consumer)
                .parent(&parent)
                .links(links)
                .runs_work(),
            |parent| {
                Attributes::for_parent(parent, || {
                    let mut attributes = attributes();
                    if let Some(summary) = extracted.problem_summary() {
                        attributes.push(KeyValue::new(INVALID_CONTEXT_ATTRIBUTE, summary));
                    }
                    attributes
                })
            },
        )
    }

    /// Starts a CONSUMER process span for a message whose own context is
    /// missing or unusable but which was correlated another way (by request
    /// id): a child of `parent`, or a new trace linked to `link`, or a new
    /// trace when both are `None`; with the `journey`'s randomness when
    /// given. Keeps the message's baggage and records an unusable context
    /// as [`INVALID_CONTEXT_ATTRIBUTE`].
    #[cfg(feature = "relay")]
    pub(crate) fn start_correlated_span(
        &self,
        name: impl Into<Cow<'static, str>>,
        extracted: &ExtractedContext,
        parent: Option<&opentelemetry::trace::SpanContext>,
        link: Option<&opentelemetry::trace::SpanContext>,
        journey: Option<crate::sampling::Randomness>,
        mut attributes: Vec<KeyValue>,
    ) -> Context {
        let base = parent::without_span(extracted.context());
        let parent = match (parent, journey) {
            (parent, Some(rv)) => crate::sampling::journey_parent(&base, parent, rv),
            (Some(remote), None) => base.with_remote_span_context(remote.clone()),
            (None, None) => base,
        };
        let links = link
            .map(|l| vec![Link::with_context(l.clone())])
            .unwrap_or_default();
        if let Some(summary) = extracted.problem_summary() {
            attributes.push(KeyValue::new(INVALID_CONTEXT_ATTRIBUTE, summary));
        }
        self.start(
            SpanSpec::new(name, SpanKind::Consumer)
                .parent(&parent)
                .links(links)
                .runs_work(),
            |_| Attributes::<fn() -> Vec<KeyValue>>::Now(attributes),
        )
    }

    /// Records how long a message waited in the broker: on the span as
    /// [`QUEUE_TIME_ATTRIBUTE`] and in the [`QUEUE_TIME_METRIC`] histogram.
    /// Timestamps in the future (clock skew) count as zero. Returns the
    /// wait, for callers that record it elsewhere too.
    pub(crate) fn record_queue_time(
        &self,
        cx: &Context,
        produced_at: Option<SystemTime>,
        series: &Series,
    ) -> Option<Duration> {
        let produced_at = produced_at?;
        let waited = SystemTime::now()
            .duration_since(produced_at)
            .unwrap_or(Duration::ZERO);
        let span = cx.span();
        if span.is_recording() {
            span.set_attribute(KeyValue::new(
                QUEUE_TIME_ATTRIBUTE,
                waited.as_secs_f64() * 1000.0,
            ));
        }
        series.record_queue_time(waited);
        Some(waited)
    }
}

/// Marks the span in `cx` failed: status ERROR and `error.type`.
pub(crate) fn record_failure(cx: &Context, error_type: &str, description: String) {
    let span = cx.span();
    span.set_attribute(semconv::error_type(error_type.to_owned()));
    span.set_status(Status::error(description));
}

/// The enum variant a value's `Debug` output starts with (`MessageTimedOut`
/// of `MessageTimedOut(..)`): a low-cardinality `error.type`.
pub(crate) fn variant_name(value: &impl std::fmt::Debug, fallback: &str) -> String {
    let debug = format!("{value:?}");
    debug
        .split(|c: char| !c.is_alphanumeric())
        .next()
        .filter(|s| !s.is_empty())
        .unwrap_or(fallback)
        .to_owned()
}

/// Spawns `future` on Tokio inside the current OpenTelemetry context (and
/// `tracing` span), so spans it opens are children of the span that
/// spawned it — a message's process span, say. With `tracing` alone,
/// `tokio::spawn(future.in_current_span())` does the same.
pub fn spawn_in_context<F>(future: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    use tracing::Instrument as _;
    tokio::spawn(
        future
            .with_context(ambient_context())
            .instrument(tracing::Span::current()),
    )
}

#[cfg(test)]
mod tests;
