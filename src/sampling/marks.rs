//! What a span tracebridge starts asks of [`super::ProbabilitySampler`],
//! marked in the context handed to the sampler (other samplers ignore it).
//!
//! * **Decide by the links.** A consumer in `link` mode, a batch span and
//!   the relay's correlation `link` start new traces that link to the
//!   context that caused them. Decided by the ratio alone, the new trace is
//!   often kept while the one it links to was dropped, or the other way
//!   round; marked, it is kept exactly when a linked context is sampled.
//! * **Decide by the randomness.** The relay's `derive` parent is made up,
//!   and its sampled flag says nothing; with journey sampling, a span under
//!   it is decided by the journey's `rv`, as the traces the relay starts
//!   for the same request id are.

use opentelemetry::Context;

/// Decide this span's new trace by its links.
#[derive(Clone, Copy, Debug)]
struct LinksDecide;

/// Decide this span by its randomness, whatever its parent's flag.
#[derive(Clone, Copy, Debug)]
struct RandomnessDecides;

/// `parent` marked: its new trace is decided by its links.
pub(crate) fn ask_links_decide(parent: &Context) -> Context {
    parent.with_value(LinksDecide)
}

/// Whether `cx` asks for its new trace to be decided by its links.
pub(crate) fn links_decide(cx: &Context) -> bool {
    cx.get::<LinksDecide>().is_some()
}

/// `parent` marked: the span is decided by its randomness.
#[cfg_attr(not(feature = "relay"), allow(dead_code))]
pub(crate) fn ask_randomness_decides(parent: &Context) -> Context {
    parent.with_value(RandomnessDecides)
}

/// Whether `cx` asks for the span to be decided by its randomness.
pub(crate) fn randomness_decides(cx: &Context) -> bool {
    cx.get::<RandomnessDecides>().is_some()
}
