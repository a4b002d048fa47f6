//! Running the application's work inside a message's span, so everything
//! it does there belongs to the message's trace.

use std::fmt::Display;
use std::future::Future;

use opentelemetry::Context;
use opentelemetry::trace::FutureExt as _;
use tracing::Instrument as _;

use super::recorder::LogSpan;

/// Runs `work` inside the span held in `cx`: at every poll the span is the
/// current OpenTelemetry context, and its `tracing` span (when it has one,
/// see [`LogSpan`]) is entered. So the application's `#[instrument]` spans,
/// `tracing` events and OpenTelemetry spans made inside are its children
/// (after `.await`s too), and tasks spawned with `.in_current_span()` or
/// [`crate::spawn_in_context`] follow.
pub(crate) fn in_context<F: Future>(cx: &Context, work: F) -> impl Future<Output = F::Output> {
    let span = cx
        .get::<LogSpan>()
        .map(|log| log.0.clone())
        .unwrap_or_else(tracing::Span::none);
    work.with_context(cx.clone()).instrument(span)
}

/// What a handler's output says about processing the message: a failure
/// is recorded on its span (status ERROR, `error.type`) and in
/// `messaging.process.duration`.
///
/// Implemented for `()` (never a failure) and for `Result<T, E>` with a
/// displayable error (an `Err` is one; `error.type` is the error's type
/// name). A handler with another output can return `Ok::<_, Infallible>(x)`,
/// or record failures itself through the message's span.
pub trait HandlerOutcome {
    /// The failure: its `error.type` and description.
    fn failure(&self) -> Option<(&'static str, String)>;
}

impl HandlerOutcome for () {
    fn failure(&self) -> Option<(&'static str, String)> {
        None
    }
}

impl<T, E: Display> HandlerOutcome for Result<T, E> {
    fn failure(&self) -> Option<(&'static str, String)> {
        self.as_ref()
            .err()
            // `{:#}`: the whole chain, for errors that print one (anyhow).
            .map(|err| (std::any::type_name::<E>(), format!("{err:#}")))
    }
}
