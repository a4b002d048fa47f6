//! Where tracebridge's spans are recorded, and how one is started.
//!
//! By default ([`Recorder::Global`]) spans go where the application's own
//! spans go, decided at each span:
//!
//! * when its `tracing` subscriber has a `tracing-opentelemetry` layer, a
//!   span is a `tracing` span with `otel.name` / `otel.kind` that the layer
//!   turns into an OpenTelemetry span — so it nests with the application's
//!   `#[instrument]` spans both ways, and its `trace_id` / `span_id` fields
//!   show in the application's own log lines (a formatter that prints span
//!   fields, like `tracing_subscriber::fmt().json()`, prints them);
//! * otherwise an OpenTelemetry span from the global tracer provider,
//!   resolved at the first span (not when the client was made, so clients
//!   built before the provider was installed still record).
//!
//! When neither records, [`super::diagnose`] says so once. A provider the
//! application hands in ([`Recorder::Sdk`], [`Recorder::Boxed`]) is always
//! used directly.

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

use opentelemetry::global::{self, BoxedTracer};
use opentelemetry::trace::{Link, SpanBuilder, SpanContext, SpanKind, TraceContextExt, Tracer};
use opentelemetry::{Context, InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::SdkTracer;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use super::diagnose::{self, Problem};

/// Where spans go (see the module docs).
#[derive(Clone)]
pub(crate) enum Recorder {
    /// The application's: its `tracing-opentelemetry` layer, else the
    /// global tracer provider.
    Global(Arc<GlobalTracer>),
    /// An SDK tracer handed in (no boxing per span).
    Sdk(SdkTracer),
    /// Any other tracer handed in.
    Boxed(Arc<BoxedTracer>),
}

/// The global provider's tracer, taken at the first span that found one
/// installed.
pub(crate) struct GlobalTracer {
    scope: InstrumentationScope,
    tracer: OnceLock<BoxedTracer>,
}

impl GlobalTracer {
    pub(crate) fn new(scope: InstrumentationScope) -> Self {
        Self {
            scope,
            tracer: OnceLock::new(),
        }
    }
}

/// A span to start.
pub(crate) struct SpanSpec<'a> {
    pub(crate) name: Cow<'static, str>,
    pub(crate) kind: SpanKind,
    /// `None`: the ambient context ([`super::parent::ambient_context`]).
    pub(crate) parent: Option<&'a Context>,
    pub(crate) links: Vec<Link>,
    /// Work will run inside this span: give the application's log lines
    /// its ids (see [`LogSpan`]).
    pub(crate) runs_work: bool,
}

impl<'a> SpanSpec<'a> {
    pub(crate) fn new(name: impl Into<Cow<'static, str>>, kind: SpanKind) -> Self {
        Self {
            name: name.into(),
            kind,
            parent: None,
            links: Vec::new(),
            runs_work: false,
        }
    }

    pub(crate) fn parent(mut self, parent: &'a Context) -> Self {
        self.parent = Some(parent);
        self
    }

    pub(crate) fn links(mut self, links: Vec<Link>) -> Self {
        self.links = links;
        self
    }

    pub(crate) fn runs_work(mut self) -> Self {
        self.runs_work = true;
        self
    }
}

/// The `tracing` span that carries a tracebridge span into the `tracing`
/// world: the span itself when a `tracing-opentelemetry` layer records it,
/// else a span only log formatters see, with the ids as fields. Kept in the
/// span's [`Context`]; [`super::InSpan`] enters it around the work.
#[derive(Clone, Debug)]
pub(crate) struct LogSpan(pub(crate) tracing::Span);

/// Attributes that may wait for the sampler's decision.
pub(crate) enum Attributes<F> {
    /// Computed before the span starts, so samplers see them.
    Now(Vec<KeyValue>),
    /// Computed only if the span records.
    IfRecorded(F),
}

impl<F: FnOnce() -> Vec<KeyValue>> Attributes<F> {
    /// Under a parent-based sampler (the default, and the advised head
    /// sampling) an unsampled parent means an unsampled span: then the
    /// attributes wait for the decision, and a message that head sampling
    /// dropped upstream — most of them, at the advised 5–10 % — builds
    /// none. Otherwise they go in with the builder, which costs the SDK
    /// less than adding them one by one (it checks each key against those
    /// present), and samplers see them.
    pub(crate) fn for_parent(parent: &Context, attributes: F) -> Self {
        let span = parent.span();
        let parent_context = span.span_context();
        if parent_context.is_valid() && !parent_context.is_sampled() {
            Attributes::IfRecorded(attributes)
        } else {
            Attributes::Now(attributes())
        }
    }

    fn split(self) -> (Vec<KeyValue>, Option<F>) {
        match self {
            Attributes::Now(now) => (now, None),
            Attributes::IfRecorded(later) => (Vec::new(), Some(later)),
        }
    }
}

impl Recorder {
    /// Starts `spec` with `attributes`; returns the context holding it.
    pub(crate) fn start<F: FnOnce() -> Vec<KeyValue>>(
        &self,
        spec: SpanSpec<'_>,
        attributes: impl FnOnce(&Context) -> Attributes<F>,
    ) -> Context {
        let ambient;
        let parent = match spec.parent {
            Some(parent) => parent,
            None => {
                ambient = super::parent::ambient_context();
                &ambient
            }
        };
        let attributes = attributes(parent);
        let cx = match self {
            Recorder::Sdk(tracer) => start_native(tracer, spec, parent, attributes),
            Recorder::Boxed(tracer) => start_native(&**tracer, spec, parent, attributes),
            Recorder::Global(global) => global.start(spec, parent, attributes),
        };
        crate::sampling::carry_random_flag(parent, cx)
    }
}

impl GlobalTracer {
    fn start<F: FnOnce() -> Vec<KeyValue>>(
        &self,
        spec: SpanSpec<'_>,
        parent: &Context,
        attributes: Attributes<F>,
    ) -> Context {
        let log_span = match open_tracing_span(&spec, parent) {
            Ok(bridged) => return start_bridged(bridged, spec, attributes),
            Err(NotBridged(log_span)) => log_span,
        };
        let runs_work = spec.runs_work;
        let parent_context = parent.span().span_context().clone();
        let cx = match self.tracer.get() {
            Some(tracer) => start_native(tracer, spec, parent, attributes),
            None => {
                let tracer = global::tracer_with_scope(self.scope.clone());
                let cx = start_native(&tracer, spec, parent, attributes);
                if is_noop(&cx, &parent_context) {
                    // Not kept: a provider installed later is picked up.
                    diagnose::warn_once(Problem::NoProvider);
                } else {
                    let _ = self.tracer.set(tracer);
                }
                cx
            }
        };
        match log_span {
            Some(span) if runs_work => carry_ids(cx, span, true),
            _ => cx,
        }
    }
}

/// A span the no-op tracer made: it carries its parent's context as it is.
fn is_noop(cx: &Context, parent: &SpanContext) -> bool {
    let span = cx.span();
    !span.is_recording() && span.span_context() == parent
}

fn start_native<T: Tracer, F: FnOnce() -> Vec<KeyValue>>(
    tracer: &T,
    spec: SpanSpec<'_>,
    parent: &Context,
    attributes: Attributes<F>,
) -> Context
where
    T::Span: Send + Sync + 'static,
{
    let (now, later) = attributes.split();
    let builder = SpanBuilder::from_name(spec.name)
        .with_kind(spec.kind)
        .with_links(spec.links)
        .with_attributes(now);
    let mut span = builder.start_with_context(tracer, parent);
    if let Some(later) = later {
        use opentelemetry::trace::Span as _;
        if span.is_recording() {
            span.set_attributes(later());
        }
    }
    parent.with_span(span)
}

/// A `tracing` span the application's `tracing-opentelemetry` layer
/// records, its parent set.
struct Bridged(tracing::Span);

/// No layer records `tracing` spans as OpenTelemetry spans here; the span
/// made to find out, if enabled, can still carry ids to log lines.
struct NotBridged(Option<tracing::Span>);

fn open_tracing_span(spec: &SpanSpec<'_>, parent: &Context) -> Result<Bridged, NotBridged> {
    let span = super::tracing_span::new_span(&spec.name, kind_name(&spec.kind));
    // No subscriber wants it (none installed, or filtered out).
    if span.is_disabled() {
        return Err(NotBridged(None));
    }
    match span.set_parent(parent.clone()) {
        Ok(()) => Ok(Bridged(span)),
        Err(_) => Err(NotBridged(Some(span))),
    }
}

fn start_bridged<F: FnOnce() -> Vec<KeyValue>>(
    Bridged(span): Bridged,
    spec: SpanSpec<'_>,
    attributes: Attributes<F>,
) -> Context {
    let spec_runs_work = spec.runs_work;
    for link in spec.links {
        span.add_link_with_attributes(link.span_context, link.attributes);
    }
    let (now, later) = attributes.split();
    for kv in now {
        span.set_attribute(kv.key, kv.value);
    }
    // Starts the OpenTelemetry span (the layer's sampler decides now).
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        diagnose::warn_once(Problem::LayerWithoutTracer);
    }
    if let Some(later) = later
        && cx.span().is_recording()
    {
        cx.span().set_attributes(later());
    }
    // Kept in the context even when no work runs in it: the OpenTelemetry
    // span ends when the `tracing` span closes, so it must live as long.
    carry_ids(cx, span, spec_runs_work)
}

/// Keeps `span` in `cx`, with the span's ids recorded on it when work runs
/// inside (they are its log lines' `trace_id` / `span_id`).
fn carry_ids(cx: Context, span: tracing::Span, record_ids: bool) -> Context {
    if record_ids {
        let otel = cx.span();
        let ids = otel.span_context();
        if ids.is_valid() {
            span.record("trace_id", tracing::field::display(ids.trace_id()));
            span.record("span_id", tracing::field::display(ids.span_id()));
        }
    }
    cx.with_value(LogSpan(span))
}

/// `otel.kind` as tracing-opentelemetry reads it.
fn kind_name(kind: &SpanKind) -> &'static str {
    match kind {
        SpanKind::Client => "client",
        SpanKind::Server => "server",
        SpanKind::Producer => "producer",
        SpanKind::Consumer => "consumer",
        SpanKind::Internal => "internal",
    }
}
