//! What the traced clients record with, and the span rules they share.
//!
//! [`Instrumentation`] holds a tracer and the queue-time histogram; by default
//! both come from the global providers that [`crate::telemetry::init`]
//! installs, and tests or applications with their own providers pass them in.
//! The functions here implement the span model of DESIGN.md once, for Kafka
//! and AMQP alike: who is the parent of a process span, which links it gets,
//! how an unusable incoming context is recorded.

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use opentelemetry::global::{self, BoxedTracer};
use opentelemetry::metrics::{Histogram, MeterProvider};
use opentelemetry::trace::{
    FutureExt as _, Link, SpanBuilder, SpanContext, SpanKind, Status, TraceContextExt, Tracer,
    TracerProvider,
};
use opentelemetry::{Context, InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::metrics::{MessagingMetrics, SendTimer};
use crate::propagation::ExtractedContext;
use crate::semconv::{
    self, AttributePolicy, AttributeRules, Conventions, Destination, Endpoint, MessagingAttributes,
    Operation, SemconvVersion,
};

/// The attribute that says why an incoming context was not used.
pub const INVALID_CONTEXT_ATTRIBUTE: &str = "tracebridge.context.invalid";
/// How long the message waited in the broker, in milliseconds (process
/// spans; `now - producer timestamp`).
pub const QUEUE_TIME_ATTRIBUTE: &str = "tracebridge.queue_time_ms";
/// The histogram of broker wait times, in seconds.
pub const QUEUE_TIME_METRIC: &str = "tracebridge.messaging.queue_time";

/// One received message as its span describes it: name, attributes, when
/// it was produced and the queue-time metric's attributes. Each transport
/// builds it in one function (`kafka::span::received`,
/// `amqp::span::received`) that its library consumer and the relay both
/// call, so their spans cannot drift apart.
///
/// The span's attributes are not here: each transport's `attributes`
/// function builds them, called only when the span records (see
/// [`Instrumentation::start_span_lazy`]).
#[cfg_attr(not(any(feature = "kafka", feature = "amqp")), allow(dead_code))]
#[derive(Debug)]
pub(crate) struct Received {
    pub(crate) name: Cow<'static, str>,
    pub(crate) produced_at: Option<SystemTime>,
    /// The queue-time and `messaging.process.duration` attributes (empty
    /// when no metric is recorded).
    pub(crate) metric_attributes: Vec<KeyValue>,
    /// The `messaging.client.consumed.messages` attributes (likewise).
    pub(crate) consumed_attributes: Vec<KeyValue>,
}

/// Where a process span hangs in the trace: the one join/link choice of
/// the library consumers and of the relay's `propagation.mode` (written
/// in lowercase there).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParentPolicy {
    /// Child of the message's creation context, plus a link to it: the
    /// asynchronous hop joins the producer's trace. The default.
    #[default]
    Join,
    /// A new trace, linked to the creation context.
    Link,
    /// Child of the span that is current where the message is received
    /// (a `tracing` span or an OpenTelemetry context), linked to the
    /// creation context; a new trace when there is none.
    Ambient,
}

impl ParentPolicy {
    /// The word for it in configuration files.
    pub fn as_str(self) -> &'static str {
        match self {
            ParentPolicy::Join => "join",
            ParentPolicy::Link => "link",
            ParentPolicy::Ambient => "ambient",
        }
    }
}

/// The tracer and instruments tracebridge's clients record with.
///
/// Every traced client takes one (`with_instrumentation`); the default is
/// the global providers [`crate::telemetry::init`] installs. Your own
/// spans can use it too:
///
/// ```
/// use opentelemetry::trace::{SpanKind, TraceContextExt as _};
/// use opentelemetry_sdk::trace::SdkTracerProvider;
///
/// let provider = SdkTracerProvider::builder().build();
/// let instrumentation = tracebridge::Instrumentation::from_sdk(&provider, None);
/// let cx = instrumentation.start_span(
///     "reserve stock",
///     SpanKind::Internal,
///     &opentelemetry::Context::new(),
///     vec![],
///     vec![],
/// );
/// assert!(cx.span().span_context().is_valid());
/// cx.span().end();
/// ```
#[derive(Clone)]
pub struct Instrumentation {
    tracer: AnyTracer,
    queue_time: Histogram<f64>,
    metrics: MessagingMetrics,
    rules: AttributeRules,
}

impl std::fmt::Debug for Instrumentation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instrumentation")
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

/// The SDK's tracer when we know it (no boxing per span), else the global
/// API's boxed one.
#[derive(Clone)]
enum AnyTracer {
    Sdk(SdkTracer),
    Boxed(Arc<BoxedTracer>),
}

impl AnyTracer {
    fn start(&self, builder: SpanBuilder, parent: &Context) -> Context {
        match self {
            AnyTracer::Sdk(tracer) => parent.with_span(builder.start_with_context(tracer, parent)),
            AnyTracer::Boxed(tracer) => {
                parent.with_span(builder.start_with_context(&**tracer, parent))
            }
        }
    }

    /// Starts the span, then adds `attributes()` only if it records.
    fn start_lazy(
        &self,
        builder: SpanBuilder,
        parent: &Context,
        attributes: impl FnOnce() -> Vec<KeyValue>,
    ) -> Context {
        fn fill(
            span: &mut impl opentelemetry::trace::Span,
            attributes: impl FnOnce() -> Vec<KeyValue>,
        ) {
            if span.is_recording() {
                span.set_attributes(attributes());
            }
        }
        match self {
            AnyTracer::Sdk(tracer) => {
                let mut span = builder.start_with_context(tracer, parent);
                fill(&mut span, attributes);
                parent.with_span(span)
            }
            AnyTracer::Boxed(tracer) => {
                let mut span = builder.start_with_context(&**tracer, parent);
                fill(&mut span, attributes);
                parent.with_span(span)
            }
        }
    }
}

/// tracebridge's scope, with the schema of the conventions in use.
fn scope(version: SemconvVersion) -> InstrumentationScope {
    InstrumentationScope::builder(crate::telemetry::SCOPE_NAME)
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
    /// From the global tracer and meter providers (as they are now).
    pub fn global() -> Self {
        Self::global_with_rules(AttributeRules::from_env())
    }

    /// [`Instrumentation::global`] with these conventions and policy (the
    /// scope's schema URL names their version).
    pub fn global_with_rules(rules: AttributeRules) -> Self {
        let scope = scope(rules.conventions.version);
        let tracer = match crate::telemetry::installed_provider() {
            // The provider `telemetry::init` installed globally: use its
            // tracer directly rather than through the boxed global API.
            Some(provider) => AnyTracer::Sdk(provider.tracer_with_scope(scope.clone())),
            None => AnyTracer::Boxed(Arc::new(global::tracer_with_scope(scope.clone()))),
        };
        let meters = global::meter_provider();
        // `telemetry::init` ran and set up no metrics (no OTLP endpoint):
        // skip building their attributes for every message.
        let metrics = if crate::telemetry::metrics_disabled() {
            MessagingMetrics::disabled()
        } else {
            MessagingMetrics::from_provider(&*meters, scope.clone())
        };
        Self {
            tracer,
            queue_time: queue_time_histogram(&*meters, scope),
            metrics,
            rules,
        }
    }

    /// From explicit providers; `meters: None` records no metrics.
    pub fn new<P>(tracers: &P, meters: Option<&dyn MeterProvider>) -> Self
    where
        P: TracerProvider,
        P::Tracer: Send + Sync + 'static,
        <P::Tracer as Tracer>::Span: Send + Sync + 'static,
    {
        let rules = AttributeRules::from_env();
        let scope = scope(rules.conventions.version);
        let tracer = BoxedTracer::new(Box::new(tracers.tracer_with_scope(scope.clone())));
        Self::with_tracer(AnyTracer::Boxed(Arc::new(tracer)), meters, scope, rules)
    }

    /// From an SDK tracer provider (the fastest path: no boxing per span);
    /// `meters: None` records no metrics.
    pub fn from_sdk(tracers: &SdkTracerProvider, meters: Option<&dyn MeterProvider>) -> Self {
        let rules = AttributeRules::from_env();
        let scope = scope(rules.conventions.version);
        let tracer = AnyTracer::Sdk(tracers.tracer_with_scope(scope.clone()));
        Self::with_tracer(tracer, meters, scope, rules)
    }

    fn with_tracer(
        tracer: AnyTracer,
        meters: Option<&dyn MeterProvider>,
        scope: InstrumentationScope,
        rules: AttributeRules,
    ) -> Self {
        let (queue_time, metrics) = match meters {
            Some(meters) => (
                queue_time_histogram(meters, scope.clone()),
                MessagingMetrics::from_provider(meters, scope),
            ),
            None => (
                queue_time_histogram(
                    &opentelemetry::metrics::noop::NoopMeterProvider::new(),
                    scope,
                ),
                MessagingMetrics::disabled(),
            ),
        };
        Self {
            tracer,
            queue_time,
            metrics,
            rules,
        }
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

    /// The conventions and policy in force.
    pub fn rules(&self) -> &AttributeRules {
        &self.rules
    }

    /// The spec's messaging metrics.
    pub fn metrics(&self) -> &MessagingMetrics {
        &self.metrics
    }

    /// The messaging metrics' attributes for `operation` on `destination`
    /// (see [`semconv::MessagingAttributes::metric`]), or none when no
    /// metric records them: nothing is built for nothing.
    #[cfg_attr(not(any(feature = "kafka", feature = "amqp")), allow(dead_code))]
    pub(crate) fn metric_attributes(
        &self,
        operation: Operation,
        destination: &Destination,
        group: Option<&str>,
        endpoint: &Endpoint,
    ) -> Vec<KeyValue> {
        if !self.metrics.enabled() {
            return Vec::new();
        }
        MessagingAttributes::metric(operation, destination, group, endpoint, &self.rules).into_vec()
    }

    /// Starts timing a send (see [`SendTimer`]).
    #[cfg_attr(not(any(feature = "kafka", feature = "amqp")), allow(dead_code))]
    pub(crate) fn time_send(&self, destination: &Destination, endpoint: &Endpoint) -> SendTimer {
        SendTimer::start(
            &self.metrics,
            self.metric_attributes(Operation::Send, destination, None, endpoint),
        )
    }

    /// Starts a span of `kind` as a child of `parent`, with attributes
    /// (available to samplers) and links; returns the context holding it.
    pub fn start_span(
        &self,
        name: impl Into<Cow<'static, str>>,
        kind: SpanKind,
        parent: &Context,
        attributes: Vec<KeyValue>,
        links: Vec<Link>,
    ) -> Context {
        self.start_span_at(name, kind, parent, attributes, links, None)
    }

    /// [`Instrumentation::start_span`] with an explicit start time (a span
    /// that covers a wait which began earlier, like a batch poll).
    pub fn start_span_at(
        &self,
        name: impl Into<Cow<'static, str>>,
        kind: SpanKind,
        parent: &Context,
        attributes: Vec<KeyValue>,
        links: Vec<Link>,
        start_time: Option<SystemTime>,
    ) -> Context {
        let mut builder = SpanBuilder::from_name(name)
            .with_kind(kind)
            .with_attributes(attributes)
            .with_links(links);
        builder.start_time = start_time;
        self.tracer.start(builder, parent)
    }

    /// [`Instrumentation::start_span`] for the hot path: under an
    /// unsampled parent, `attributes` are computed only if the span
    /// records, so a message that head sampling dropped upstream — most of
    /// them, at the advised 5–10 % — builds no attribute at all; the
    /// sampler then decides on the name, kind, parent and links (the SDK's
    /// samplers read no attributes; give a custom one that does a span
    /// from [`Instrumentation::start_span`]). Otherwise the attributes are
    /// computed first and given to the sampler, as `start_span` does.
    pub fn start_span_lazy(
        &self,
        name: impl Into<Cow<'static, str>>,
        kind: SpanKind,
        parent: &Context,
        links: Vec<Link>,
        attributes: impl FnOnce() -> Vec<KeyValue>,
    ) -> Context {
        // Under a parent-based sampler (the default, and the advised head
        // sampling) an unsampled parent means an unsampled span: then the
        // attributes wait for the decision. Otherwise they go in with the
        // builder, which costs the SDK less than adding them one by one
        // to a started span (it checks each key against those present).
        let span = parent.span();
        let parent_context = span.span_context();
        if parent_context.is_valid() && !parent_context.is_sampled() {
            let builder = SpanBuilder::from_name(name)
                .with_kind(kind)
                .with_links(links);
            self.tracer.start_lazy(builder, parent, attributes)
        } else {
            self.start_span(name, kind, parent, attributes(), links)
        }
    }

    /// [`Instrumentation::start_process_span`] with `attributes` computed
    /// only if the span records (see [`Instrumentation::start_span_lazy`]).
    pub fn start_process_span_lazy(
        &self,
        name: impl Into<Cow<'static, str>>,
        policy: ParentPolicy,
        extracted: &ExtractedContext,
        attributes: impl FnOnce() -> Vec<KeyValue>,
    ) -> Context {
        let links = link_to(extracted, Vec::new());
        let parent = process_parent(policy, extracted);
        self.start_span_lazy(name, SpanKind::Consumer, &parent, links, || {
            let mut attributes = attributes();
            if let Some(summary) = extracted.problem_summary() {
                attributes.push(KeyValue::new(INVALID_CONTEXT_ATTRIBUTE, summary));
            }
            attributes
        })
    }

    /// Starts a CONSUMER process span for one message, per `policy`.
    ///
    /// A valid creation context is always linked. An unusable one is
    /// recorded as [`INVALID_CONTEXT_ATTRIBUTE`] and the span starts a new
    /// trace (or sits under the ambient span for [`ParentPolicy::Ambient`]).
    pub fn start_process_span(
        &self,
        name: impl Into<Cow<'static, str>>,
        policy: ParentPolicy,
        extracted: &ExtractedContext,
        attributes: Vec<KeyValue>,
    ) -> Context {
        let links = link_to(extracted, Vec::new());
        let parent = process_parent(policy, extracted);
        self.start_consumer_span(name, extracted, &parent, attributes, links)
    }

    /// Starts a CONSUMER process span for a message whose own context is
    /// missing or unusable but which was correlated another way (by request
    /// id): a child of `parent`, or a new trace linked to `link`, or a new
    /// trace when both are `None`. Keeps the message's baggage and records
    /// an unusable context as [`INVALID_CONTEXT_ATTRIBUTE`].
    pub fn start_correlated_span(
        &self,
        name: impl Into<Cow<'static, str>>,
        extracted: &ExtractedContext,
        parent: Option<&SpanContext>,
        link: Option<&SpanContext>,
        attributes: Vec<KeyValue>,
    ) -> Context {
        let base = without_span(extracted.context());
        let parent = match parent {
            Some(remote) => base.with_remote_span_context(remote.clone()),
            None => base,
        };
        let links = link
            .map(|l| vec![Link::with_context(l.clone())])
            .unwrap_or_default();
        self.start_consumer_span(name, extracted, &parent, attributes, links)
    }

    /// What every process span shares: CONSUMER, and an unusable incoming
    /// context recorded as [`INVALID_CONTEXT_ATTRIBUTE`].
    fn start_consumer_span(
        &self,
        name: impl Into<Cow<'static, str>>,
        extracted: &ExtractedContext,
        parent: &Context,
        mut attributes: Vec<KeyValue>,
        links: Vec<Link>,
    ) -> Context {
        if let Some(summary) = extracted.problem_summary() {
            attributes.push(KeyValue::new(INVALID_CONTEXT_ATTRIBUTE, summary));
        }
        self.start_span(name, SpanKind::Consumer, parent, attributes, links)
    }

    /// Records how long a message waited in the broker: on the span as
    /// [`QUEUE_TIME_ATTRIBUTE`] and in the [`QUEUE_TIME_METRIC`] histogram.
    /// Timestamps in the future (clock skew) count as zero. Returns the
    /// wait, for callers that record it elsewhere too.
    pub fn record_queue_time(
        &self,
        cx: &Context,
        produced_at: Option<SystemTime>,
        metric_attributes: &[KeyValue],
    ) -> Option<Duration> {
        let produced_at = produced_at?;
        let waited = SystemTime::now()
            .duration_since(produced_at)
            .unwrap_or(Duration::ZERO);
        cx.span().set_attribute(KeyValue::new(
            QUEUE_TIME_ATTRIBUTE,
            waited.as_secs_f64() * 1000.0,
        ));
        self.queue_time
            .record(waited.as_secs_f64(), metric_attributes);
        Some(waited)
    }
}

fn queue_time_histogram(
    meters: &(impl MeterProvider + ?Sized),
    scope: InstrumentationScope,
) -> Histogram<f64> {
    meters
        .meter_with_scope(scope)
        .f64_histogram(QUEUE_TIME_METRIC)
        .with_unit("s")
        .with_description(
            "Time a message waited in the broker: consumer clock minus producer timestamp",
        )
        .build()
}

/// Attributes the PRODUCER span of a send under this context adds: the
/// relay's attempt number and dead-letter reason travel this way to the
/// traced producers it sends with.
#[derive(Clone, Debug)]
struct SendAnnotations(Vec<KeyValue>);

/// `parent` with `attributes` for the PRODUCER span a traced producer or
/// publisher starts under it (see [`crate::dead_letter`] for the names the
/// relay uses).
pub fn with_send_annotations(parent: &Context, attributes: Vec<KeyValue>) -> Context {
    parent.with_value(SendAnnotations(attributes))
}

/// A PRODUCER span's attributes: `attributes` with the client's endpoint,
/// then the annotations the caller put in `parent`.
#[cfg_attr(not(any(feature = "kafka", feature = "amqp")), allow(dead_code))]
pub(crate) fn producer_attributes(
    attributes: MessagingAttributes<'_>,
    endpoint: &Endpoint,
    parent: &Context,
) -> Vec<KeyValue> {
    let mut attributes = endpoint.apply(attributes).into_vec();
    attributes.extend(send_annotations(parent));
    attributes
}

/// The attributes [`with_send_annotations`] put in `cx`.
#[cfg_attr(not(any(feature = "kafka", feature = "amqp")), allow(dead_code))]
pub(crate) fn send_annotations(cx: &Context) -> Vec<KeyValue> {
    cx.get::<SendAnnotations>()
        .map(|a| a.0.clone())
        .unwrap_or_default()
}

/// The parent of a process span under `policy`.
fn process_parent(policy: ParentPolicy, extracted: &ExtractedContext) -> Context {
    match (policy, extracted.span_context()) {
        (ParentPolicy::Join, Some(_)) => extracted.context().clone(),
        (ParentPolicy::Ambient, _) => ambient_context(),
        // A new trace; keep the incoming baggage.
        _ => without_span(extracted.context()),
    }
}

/// A link to the message's creation context, when it has a valid one.
// Used by the broker integrations only.
#[cfg_attr(not(any(feature = "kafka", feature = "amqp")), allow(dead_code))]
pub(crate) fn link_to(extracted: &ExtractedContext, attributes: Vec<KeyValue>) -> Vec<Link> {
    extracted
        .span_context()
        .map(|sc| vec![Link::new(sc.clone(), attributes, 0)])
        .unwrap_or_default()
}

/// The span that is current here: the current `tracing` span's
/// OpenTelemetry context when there is one, else the current OpenTelemetry
/// context.
pub fn ambient_context() -> Context {
    let span = tracing::Span::current();
    if !span.is_none() {
        let cx = span.context();
        if cx.span().span_context().is_valid() {
            return cx;
        }
    }
    Context::current()
}

/// `cx`'s baggage without its span: the parent of a new trace.
fn without_span(cx: &Context) -> Context {
    use opentelemetry::baggage::{BaggageExt, KeyValueMetadata};
    let baggage = cx.baggage();
    if baggage.is_empty() {
        return Context::new();
    }
    Context::new().with_baggage(baggage.iter().map(|(key, (value, metadata))| {
        KeyValueMetadata::new(key.clone(), value.clone(), metadata.clone())
    }))
}

/// Marks the span in `cx` failed: status ERROR and `error.type`.
// Used by the broker integrations only.
#[cfg_attr(not(any(feature = "kafka", feature = "amqp")), allow(dead_code))]
pub(crate) fn record_failure(cx: &Context, error_type: &str, description: String) {
    let span = cx.span();
    span.set_attribute(semconv::error_type(error_type.to_owned()));
    span.set_status(Status::error(description));
}

/// The enum variant a value's `Debug` output starts with (`MessageTimedOut`
/// of `MessageTimedOut(..)`): a low-cardinality `error.type`.
#[cfg_attr(not(any(feature = "kafka", feature = "amqp")), allow(dead_code))]
pub(crate) fn variant_name(value: &impl std::fmt::Debug, fallback: &str) -> String {
    let debug = format!("{value:?}");
    debug
        .split(|c: char| !c.is_alphanumeric())
        .next()
        .filter(|s| !s.is_empty())
        .unwrap_or(fallback)
        .to_owned()
}

/// The short type name used as `error.type` for a handler's error type.
// Used by the broker integrations only.
#[cfg_attr(not(any(feature = "kafka", feature = "amqp")), allow(dead_code))]
pub(crate) fn type_error_name<E>() -> &'static str {
    std::any::type_name::<E>()
}

/// Spawns `future` on Tokio inside the current OpenTelemetry context, so
/// spans it opens are children of the span that spawned it (for example a
/// consumer's process span).
pub fn spawn_in_context<F>(future: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(future.with_context(ambient_context()))
}

#[cfg(test)]
mod lazy_tests {
    use std::cell::Cell;

    use opentelemetry::trace::{SpanId, TraceFlags, TraceId, TraceState};
    use opentelemetry_sdk::trace::{InMemorySpanExporter, Sampler};

    use super::*;

    fn parent(sampled: bool) -> Context {
        let flags = if sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        Context::new().with_remote_span_context(SpanContext::new(
            TraceId::from(7),
            SpanId::from(9),
            flags,
            true,
            TraceState::default(),
        ))
    }

    /// Under the advised parent-based ratio sampler, a message whose parent
    /// was not sampled builds no attribute, and its context still travels:
    /// same trace, sampled flag off. A sampled parent's span gets them all.
    #[test]
    fn attributes_are_built_only_for_spans_that_record() {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                0.1,
            ))))
            .with_simple_exporter(exporter.clone())
            .build();
        let instrumentation = Instrumentation::from_sdk(&provider, None);
        for sampled in [false, true] {
            let built = Cell::new(false);
            let cx = instrumentation.start_span_lazy(
                "send orders",
                SpanKind::Producer,
                &parent(sampled),
                Vec::new(),
                || {
                    built.set(true);
                    vec![KeyValue::new("messaging.system", "kafka")]
                },
            );
            let span = cx.span();
            let context = span.span_context();
            assert_eq!(
                built.get(),
                sampled,
                "attributes built: sampled = {sampled}"
            );
            assert_eq!(context.trace_id(), TraceId::from(7), "the trace goes on");
            assert_eq!(context.is_sampled(), sampled);
            assert!(context.is_valid() && context.span_id() != SpanId::from(9));
            span.end();
        }
        let _ = provider.force_flush();
        let spans = exporter.get_finished_spans().expect("spans");
        assert_eq!(spans.len(), 1, "only the sampled span is exported");
        assert!(
            spans[0]
                .attributes
                .iter()
                .any(|kv| kv.key.as_str() == "messaging.system")
        );
    }
}
