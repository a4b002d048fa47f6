//! The W3C Trace Context Level 2 random flag, kept where the SDK drops it.

use opentelemetry::Context;
use opentelemetry::trace::{SpanContext, TraceContextExt, TraceFlags};

use super::Randomness;

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
        // Cheapest first: most parents (Level 1 peers, new traces) have no
        // flag to carry, and asking a span whether it records takes a lock.
        let parent_span = parent.span();
        let parent = parent_span.span_context();
        if !has_random(parent) {
            return cx;
        }
        let span = cx.span();
        let child = span.span_context();
        if has_random(child) || child.trace_id() != parent.trace_id() || span.is_recording() {
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

/// The flags to write for `span_context`: its own, with the random flag
/// when its `tracestate` carries an explicit `rv` equal to its trace id's
/// last 56 bits.
///
/// That is how [`super::ProbabilitySampler`] marks a trace it starts: the
/// SDK builds a new trace's flags itself and gives a sampler no way to set
/// the random flag, so the sampler writes the id's own randomness as `rv`.
/// With the two equal, a Level 2 sampler that reads the flag and the id and
/// a consistent sampler that reads `rv` decide alike.
pub(crate) fn outgoing_flags(span_context: &SpanContext) -> TraceFlags {
    let flags = span_context.trace_flags();
    if has_random(span_context) {
        return flags;
    }
    let rv = super::ot_state::get(span_context.trace_state(), "rv").and_then(Randomness::parse_rv);
    if rv == Some(Randomness::of_trace_id(span_context.trace_id())) {
        flags | RANDOM_FLAG
    } else {
        flags
    }
}

fn has_random(span_context: &SpanContext) -> bool {
    span_context.trace_flags() & RANDOM_FLAG == RANDOM_FLAG
}
