//! A request's journey sampled as one: the relay's correlated spans carry
//! the journey's explicit randomness `rv` (derived from the request id), so
//! a consistent sampler decides all of one request's traces alike.

use opentelemetry::Context;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};

use super::{RANDOM_FLAG, Randomness, marks, ot_state};

/// The context to start a correlated span under, on `base` (the message's
/// baggage): under `derived` (the made-up parent of `derive`), decided by
/// `rv` rather than its flag; else a new trace whose `rv` it is.
///
/// A new trace gets its `rv` through a parent with no ids: the SDK starts
/// a trace for it, and a sampler reads the `tracestate` it carries.
pub(crate) fn journey_parent(
    base: &Context,
    derived: Option<&SpanContext>,
    rv: Randomness,
) -> Context {
    let trace_state = ot_state::set(&TraceState::default(), "rv", Some(&rv.to_string()));
    match derived {
        Some(parent) => {
            let parent = SpanContext::new(
                parent.trace_id(),
                parent.span_id(),
                parent.trace_flags() | RANDOM_FLAG,
                true,
                trace_state,
            );
            marks::ask_randomness_decides(&base.with_remote_span_context(parent))
        }
        None => base.with_remote_span_context(SpanContext::new(
            TraceId::INVALID,
            SpanId::INVALID,
            TraceFlags::default(),
            false,
            trace_state,
        )),
    }
}
