//! Link-aware sampling, asked for per span by tracebridge's consumers and
//! honoured by [`super::ProbabilitySampler`].
//!
//! A consumer in `link` mode, a batch span and the relay's correlation
//! `link` start new traces that link to the context that caused them. Decided
//! by the ratio alone, the new trace is often kept while the one it links
//! to was dropped, or the other way round. The consumer marks the context
//! it hands the sampler; the sampler then keeps the new trace exactly when
//! a linked context is sampled.

use opentelemetry::Context;

/// The mark: decide this span's new trace by its links.
#[derive(Clone, Copy, Debug)]
struct LinksDecide;

/// `parent` with the mark.
pub(crate) fn ask_links_decide(parent: &Context) -> Context {
    parent.with_value(LinksDecide)
}

/// Whether `cx` carries the mark.
pub(crate) fn links_decide(cx: &Context) -> bool {
    cx.get::<LinksDecide>().is_some()
}
