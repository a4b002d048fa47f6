//! # tracebridge
//!
//! Keeps distributed traces whole across message queues. Queue workers link
//! this crate for traced Kafka (`rdkafka`) and AMQP 0-9-1 (`lapin`) clients
//! that carry W3C `traceparent`, `tracestate` and `baggage` in message
//! headers; the `tracebridge` binary relays between brokers and keeps every
//! asynchronous hop in one trace.
//!
//! The transport-agnostic core:
//!
//! * [`propagation`]: which context formats to read and write, header
//!   carriers, strict validation that never fails a message;
//! * [`semconv`]: span names, kinds and attributes per the OpenTelemetry
//!   messaging semantic conventions;
//! * [`telemetry`]: tracer provider, span file and JSON logs from `OTEL_*`;
//! * [`correlate`]: request ids from headers, properties, keys or JSON
//!   bodies, and trace ids derived from them;
//! * [`instrument`]: the tracer and instruments the clients record with, and
//!   the parent/link rules of process spans ([`ParentPolicy`]).
//!
//! Broker integrations sit behind the `kafka` and `amqp` cargo features
//! (both on by default).
//!
//! ```
//! use tracebridge::propagation::{HeaderVec, Propagation, Transport};
//!
//! // A message from a Python producer: flags `03`, and an older duplicate.
//! let mut headers = HeaderVec::new(Transport::Kafka);
//! headers.push("traceparent", "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01");
//! headers.push("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03");
//! let extracted = Propagation::default().extract(&headers);
//! let parent = extracted.span_context().expect("the last traceparent wins");
//! assert_eq!(parent.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
//! ```

#![warn(missing_docs, unreachable_pub)]
// One module reads a live rdkafka client's configuration through
// librdkafka (`kafka/client_config.rs`); nothing else may use `unsafe`.
#![deny(unsafe_code)]

mod error;
mod instrument;
mod metrics;
pub mod propagation;
pub mod semconv;
pub mod telemetry;

#[cfg(feature = "amqp")]
pub mod amqp;
#[cfg(feature = "kafka")]
pub mod kafka;

pub use instrument::{HandlerOutcome, Instrumentation, ParentPolicy, spawn_in_context};
pub use propagation::{ExtractedContext, Format, Propagation};

/// The names of tracebridge's own span attributes and metrics, beside the
/// semantic conventions' (see the span model in `docs/conventions.md`).
pub mod attributes {
    #[cfg(feature = "amqp")]
    pub use crate::amqp::REDELIVERED_ATTRIBUTE;
    pub use crate::dead_letter::{
        ATTEMPTS_ATTRIBUTE, DEATH_COUNT_ATTRIBUTE, DELIVERY_COUNT_ATTRIBUTE, REASON_ATTRIBUTE,
        SEND_ATTEMPT_ATTRIBUTE,
    };
    pub use crate::instrument::{
        INVALID_CONTEXT_ATTRIBUTE, QUEUE_TIME_ATTRIBUTE, QUEUE_TIME_METRIC,
    };
}

// The `tracebridge` binary's parts — the relay, the trace viewer, their
// helpers — live in this crate so that tests, benches and fuzz targets
// reach them, but they are not the library's API: hidden from its docs,
// no stability promised.
#[doc(hidden)]
pub mod correlate;
#[doc(hidden)]
pub mod dead_letter;
#[doc(hidden)]
pub mod redact;
#[doc(hidden)]
#[cfg(all(feature = "kafka", feature = "amqp"))]
pub mod relay;
#[doc(hidden)]
pub mod traces;
#[doc(hidden)]
pub use error::{ClientError, Error, Refusal};
#[doc(hidden)]
pub use metrics::{DURATION_BUCKETS, MessagingMetrics};

/// The README's Rust examples, compiled as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
