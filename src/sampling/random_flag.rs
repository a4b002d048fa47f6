//! The W3C Trace Context Level 2 random flag, kept where the SDK drops it.

use opentelemetry::Context;
use opentelemetry::trace::{SpanContext, TraceContextExt, TraceFlags};

/// W3C Trace Context Level 2's `random` trace flag (`0x02`): the trace id's
/// last 56 bits are random, so consistent samplers may decide by them.
/// The OpenTelemetry API names only the sampled flag.
pub const RANDOM_FLAG: TraceFlags = TraceFlags::new(0x02);

/// `cx`, whose span was just started under `parent`, with the random flag
/// its parent carried.
///
/// The SDK keeps the parent's flags on a span it samples but gives a span
/// it drops flags `00`, so an unsampled hop would tell the next process
/// that the trace id is not random. A dropped span records nothing and
/// ends as nothing, so it is replaced in the context by its own ids with
/// the flag back; a recording span is left as it is (it kept the flag).
pub(crate) fn carry_random_flag(parent: &Context, cx: Context) -> Context {
    let kept = {
        let span = cx.span();
        let child = span.span_context();
        if span.is_recording() || !child.is_valid() || has_random(child) {
            return cx;
        }
        let parent_span = parent.span();
        let parent = parent_span.span_context();
        if parent.trace_id() != child.trace_id() || !has_random(parent) {
            return cx;
        }
        SpanContext::new(
            child.trace_id(),
            child.span_id(),
            child.trace_flags() | RANDOM_FLAG,
            false,
            child.trace_state().clone(),
        )
    };
    cx.with_remote_span_context(kept)
}

fn has_random(span_context: &SpanContext) -> bool {
    span_context.trace_flags() & RANDOM_FLAG == RANDOM_FLAG
}
