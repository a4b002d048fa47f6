//! Trace-context propagation through message headers, independent of any
//! broker client.
//!
//! * [`HeaderReader`] / [`HeaderWriter`] are what a carrier implements (the
//!   Kafka and AMQP carriers live in `kafka::carrier` and `amqp::carrier`).
//! * [`Propagation`] says which [`Format`]s to read (in precedence order) and
//!   which to write. Reading one format and writing another is how a relay
//!   translates B3 into W3C.
//! * [`Propagation::extract`] never fails: an unusable context yields "no
//!   parent" plus the [`InvalidContext`] reasons a span can record.
//!
//! ```
//! use opentelemetry::trace::TraceContextExt;
//! use tracebridge::propagation::{HeaderVec, Propagation, Transport};
//!
//! let mut headers = HeaderVec::new(Transport::Kafka);
//! headers.push("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03");
//! let extracted = Propagation::default().extract(&headers);
//! let parent = extracted.span_context().expect("a valid context");
//! assert_eq!(parent.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
//! assert!(parent.is_sampled());
//!
//! headers.push("traceparent", "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
//! let extracted = Propagation::default().extract(&headers);
//! assert!(extracted.span_context().is_none());
//! assert_eq!(
//!     extracted.problem_summary().as_deref(),
//!     Some("tracecontext: malformed: version ff is forbidden")
//! );
//! ```

mod carrier;
mod format;
mod jaeger;
mod traceparent;

use std::fmt;

use opentelemetry::Context;
use opentelemetry::baggage::{Baggage, BaggageExt};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanContext, TraceContextExt};
use opentelemetry_sdk::propagation::BaggagePropagator;
use serde::{Deserialize, Serialize};

pub use carrier::{HeaderReader, HeaderVec, HeaderWriter, ReaderExtractor, Transport};
pub use format::{Format, UnknownFormat};

/// W3C Baggage limits: the header is read only up to this many bytes …
pub const MAX_BAGGAGE_BYTES: usize = 8192;
/// … and this many list members.
pub const MAX_BAGGAGE_ENTRIES: usize = 180;

/// Why an incoming context was not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidReason {
    /// The header value is not UTF-8.
    #[error("header value is not valid UTF-8")]
    NotUtf8,
    /// The header value is longer than tracebridge reads.
    #[error("header value is {len} bytes, more than the {max} allowed")]
    TooLong {
        /// Bytes in the value.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The value breaks the format's grammar; the text names the rule.
    #[error("malformed: {0}")]
    Malformed(&'static str),
    /// The SDK's propagator did not accept the named header.
    #[error("{0} header was not accepted by the propagator")]
    Rejected(&'static str),
    /// Baggage with more list members than W3C allows; the rest were dropped.
    #[error("{count} baggage entries, only the first {max} were read")]
    TooManyEntries {
        /// List members in the header.
        count: usize,
        /// The limit.
        max: usize,
    },
}

/// One unusable piece of incoming context: which format, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidContext {
    /// The format whose header was present but unusable.
    pub format: Format,
    /// What was wrong with it.
    pub reason: InvalidReason,
}

impl fmt::Display for InvalidContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.format, self.reason)
    }
}

/// What [`Propagation::extract`] found in a message's headers.
#[derive(Debug, Clone)]
pub struct ExtractedContext {
    context: Context,
    span_context: Option<SpanContext>,
    source: Option<Format>,
    problems: Vec<InvalidContext>,
}

impl ExtractedContext {
    /// The extracted context: the remote span context (when one was valid)
    /// and the accepted baggage. Use it as a parent or as a link target.
    pub fn context(&self) -> &Context {
        &self.context
    }

    /// Consumes self, returning the context.
    pub fn into_context(self) -> Context {
        self.context
    }

    /// The message's creation context, when a valid one was found.
    pub fn span_context(&self) -> Option<&SpanContext> {
        self.span_context.as_ref()
    }

    /// Which format the span context came from.
    pub fn source(&self) -> Option<Format> {
        self.source
    }

    /// Headers that were present but unusable (empty when all was well).
    pub fn problems(&self) -> &[InvalidContext] {
        &self.problems
    }

    /// The problems as one line, for a span attribute or a log field.
    pub fn problem_summary(&self) -> Option<String> {
        if self.problems.is_empty() {
            return None;
        }
        Some(
            self.problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        )
    }
}

/// Which formats to read and write: the propagation part of a route or
/// client configuration.
///
/// Default: read and write `tracecontext` and `baggage`; accept every
/// baggage key.
///
/// ```
/// use tracebridge::propagation::{Format, Propagation};
/// // Accept B3 from legacy Zipkin services, emit W3C only.
/// let translate = Propagation::default()
///     .with_extract([Format::TraceContext, Format::B3, Format::Baggage])
///     .with_inject([Format::TraceContext, Format::Baggage]);
/// assert_eq!(translate.extract_formats()[1], Format::B3);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Propagation {
    /// Formats read from incoming headers; the first valid span context in
    /// this order wins. Default `["tracecontext", "baggage"]`.
    extract: Vec<Format>,
    /// Formats written to outgoing headers (each replaces its headers).
    /// Default `["tracecontext", "baggage"]`.
    inject: Vec<Format>,
    /// When set, only these baggage keys are accepted from incoming
    /// messages. Default: all keys. Example `["tenant", "user.tier"]`.
    baggage_allowlist: Option<Vec<String>>,
}

impl Default for Propagation {
    fn default() -> Self {
        Self {
            extract: vec![Format::TraceContext, Format::Baggage],
            inject: vec![Format::TraceContext, Format::Baggage],
            baggage_allowlist: None,
        }
    }
}

impl Propagation {
    /// Sets the formats to read, in precedence order.
    pub fn with_extract(mut self, formats: impl IntoIterator<Item = Format>) -> Self {
        self.extract = dedup(formats);
        self
    }

    /// Sets the formats to write.
    pub fn with_inject(mut self, formats: impl IntoIterator<Item = Format>) -> Self {
        self.inject = dedup(formats);
        self
    }

    /// Accepts only these baggage keys from incoming messages.
    pub fn with_baggage_allowlist(
        mut self,
        keys: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        self.baggage_allowlist = Some(keys.into_iter().map(Into::into).collect());
        self
    }

    /// Formats read, in precedence order.
    pub fn extract_formats(&self) -> &[Format] {
        &self.extract
    }

    /// Formats written.
    pub fn inject_formats(&self) -> &[Format] {
        &self.inject
    }

    /// Reads the creation context of a message. Never fails: headers that
    /// are present but unusable are listed in [`ExtractedContext::problems`]
    /// and the result then has no span context (a new trace should start).
    pub fn extract<R: HeaderReader + ?Sized>(&self, carrier: &R) -> ExtractedContext {
        let mut problems = Vec::new();
        let mut found: Option<(Format, SpanContext)> = None;
        for &format in &self.extract {
            match format.extract_span_context(carrier) {
                Ok(Some(span_context)) => {
                    found = Some((format, span_context));
                    break;
                }
                Ok(None) => {}
                Err(reason) => problems.push(InvalidContext { format, reason }),
            }
        }
        let mut context = Context::new();
        if self.extract.contains(&Format::Baggage)
            && let Some(baggage) = self.extract_baggage(carrier, &mut problems)
        {
            context = context.with_baggage(baggage);
        }
        let source = found.as_ref().map(|(format, _)| *format);
        let span_context = found.map(|(_, span_context)| span_context);
        if let Some(span_context) = &span_context {
            context = context.with_remote_span_context(span_context.clone());
        }
        ExtractedContext {
            context,
            span_context,
            source,
            problems,
        }
    }

    /// Writes `cx`'s span context and baggage into `carrier` in every inject
    /// format. Headers of those formats already present are replaced (a
    /// message never leaves with two `traceparent`s); all other headers are
    /// left as they were.
    pub fn inject(&self, cx: &Context, carrier: &mut dyn HeaderWriter) {
        let transport = carrier.transport();
        for format in &self.inject {
            carrier.remove_fields(format.fields(transport));
        }
        for format in &self.inject {
            format.inject(cx, carrier);
        }
    }

    fn extract_baggage<R: HeaderReader + ?Sized>(
        &self,
        carrier: &R,
        problems: &mut Vec<InvalidContext>,
    ) -> Option<Baggage> {
        let raw = carrier.header_bytes("baggage")?;
        let problem = |reason| InvalidContext {
            format: Format::Baggage,
            reason,
        };
        if raw.len() > MAX_BAGGAGE_BYTES {
            problems.push(problem(InvalidReason::TooLong {
                len: raw.len(),
                max: MAX_BAGGAGE_BYTES,
            }));
            return None;
        }
        let Ok(text) = std::str::from_utf8(raw) else {
            problems.push(problem(InvalidReason::NotUtf8));
            return None;
        };
        let count = text.split(',').count();
        if count > MAX_BAGGAGE_ENTRIES {
            problems.push(problem(InvalidReason::TooManyEntries {
                count,
                max: MAX_BAGGAGE_ENTRIES,
            }));
        }
        let cx = BaggagePropagator::new().extract(&ReaderExtractor(carrier));
        let baggage: &Baggage = cx.baggage();
        let accepted: Baggage = baggage
            .iter()
            .filter(|(key, _)| self.baggage_key_allowed(key.as_str()))
            .map(|(key, entry)| (key.clone(), entry.clone()))
            .collect();
        (!accepted.is_empty()).then_some(accepted)
    }

    fn baggage_key_allowed(&self, key: &str) -> bool {
        self.baggage_allowlist
            .as_ref()
            .is_none_or(|allowed| allowed.iter().any(|k| k == key))
    }
}

fn dedup(formats: impl IntoIterator<Item = Format>) -> Vec<Format> {
    let mut out: Vec<Format> = Vec::new();
    for format in formats {
        if !out.contains(&format) {
            out.push(format);
        }
    }
    out
}

#[cfg(test)]
mod tests;
