//! Where a span hangs in the trace: the parent/link rules of DESIGN.md's
//! span model, written once for Kafka, AMQP and the relay.

use opentelemetry::trace::{Link, TraceContextExt};
use opentelemetry::{Context, KeyValue};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::propagation::ExtractedContext;

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

/// The parent of a process span under `policy`.
pub(crate) fn process_parent(policy: ParentPolicy, extracted: &ExtractedContext) -> Context {
    match (policy, extracted.span_context()) {
        (ParentPolicy::Join, Some(_)) => extracted.context().clone(),
        (ParentPolicy::Ambient, _) => ambient_context(),
        // A new trace; keep the incoming baggage.
        _ => without_span(extracted.context()),
    }
}

/// A link to the message's creation context, when it has a valid one.
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
pub(crate) fn ambient_context() -> Context {
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
pub(crate) fn without_span(cx: &Context) -> Context {
    use opentelemetry::baggage::{BaggageExt, KeyValueMetadata};
    let baggage = cx.baggage();
    if baggage.is_empty() {
        return Context::new();
    }
    Context::new().with_baggage(baggage.iter().map(|(key, (value, metadata))| {
        KeyValueMetadata::new(key.clone(), value.clone(), metadata.clone())
    }))
}
