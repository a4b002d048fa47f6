//! The `tracing` span that stands for one of tracebridge's spans in the
//! application's `tracing` world (see `recorder.rs`).
//!
//! It has a callsite of its own, without a source location: the span is a
//! message's, not a place in tracebridge's code, so a
//! `tracing-opentelemetry` layer that records locations (its default)
//! gives it no `code.file.path` pointing into tracebridge.

use tracing::level_filters::{LevelFilter, STATIC_MAX_LEVEL};
use tracing_core::callsite::{DefaultCallsite, Identifier};
use tracing_core::field::{FieldSet, Value};
use tracing_core::metadata::Kind;
use tracing_core::{Level, Metadata};

/// The fields: the layer's span name and kind, and the ids log lines read.
const FIELD_NAMES: &[&str] = &["otel.name", "otel.kind", "trace_id", "span_id"];

static CALLSITE: DefaultCallsite = DefaultCallsite::new(&METADATA);

static METADATA: Metadata<'static> = Metadata::new(
    "tracebridge",
    "tracebridge",
    Level::INFO,
    None,
    None,
    None,
    FieldSet::new(FIELD_NAMES, Identifier(&CALLSITE)),
    Kind::SPAN,
);

/// A new span named `name` of `kind` (an `otel.kind` word), a child of the
/// current `tracing` span; disabled when no subscriber wants it (INFO,
/// target `tracebridge`).
pub(super) fn new_span(name: &str, kind: &'static str) -> tracing::Span {
    if Level::INFO > STATIC_MAX_LEVEL || Level::INFO > LevelFilter::current() {
        return tracing::Span::none();
    }
    let interest = CALLSITE.interest();
    if interest.is_never()
        || (!interest.is_always()
            && !tracing::dispatcher::get_default(|dispatch| dispatch.enabled(&METADATA)))
    {
        return tracing::Span::none();
    }
    let fields = METADATA.fields();
    let (Some(otel_name), Some(otel_kind)) = (fields.field("otel.name"), fields.field("otel.kind"))
    else {
        return tracing::Span::none();
    };
    let name = tracing::field::display(name);
    let values = [
        (&otel_name, Some(&name as &dyn Value)),
        (&otel_kind, Some(&kind as &dyn Value)),
    ];
    tracing::Span::new(&METADATA, &fields.value_set(&values))
}
