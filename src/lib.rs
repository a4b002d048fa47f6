//! # tracebridge
//!
//! Keeps distributed traces whole across message queues: the workers'
//! Kafka (`rdkafka`) and RabbitMQ (`lapin`) clients carry W3C
//! `traceparent`, `tracestate` and `baggage` in message headers, and each
//! consumed message's handler runs inside a CONSUMER span that continues
//! the producer's trace, with the OpenTelemetry messaging semantic
//! conventions and metrics.
//!
//! The clients keep the shape of the ones they trace, so a worker changes
//! a line or two:
//!
//! * [`kafka`]: [`kafka::producer::FutureProducer`] is rdkafka's, every
//!   send traced (import it from `tracebridge::kafka::producer`);
//!   [`kafka::process`] runs a handler inside its message's span, on your
//!   own consumer.
//! * [`amqp`]: lapin's API with [`amqp::Connection`] and [`amqp::Channel`]
//!   traced (publish, consume, get, ack/nack/reject); a delivery's handler
//!   runs inside its span with [`amqp::message::Delivery::in_span`].
//!
//! They record through the application's own telemetry — its
//! `tracing-opentelemetry` layer or global providers ([`Instrumentation`])
//! — and install nothing; [`telemetry::init`] is the set-up for services
//! with none of their own. [`propagation`] chooses the header formats,
//! [`semconv`] the conventions' version and what may be recorded. The
//! guides are in `docs/` (library, relay, conventions, sampling,
//! benchmarks).
//!
//! ```no_run
//! use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
//! use rdkafka::message::BorrowedMessage;
//! use tracebridge::kafka::producer::{FutureProducer, FutureRecord};
//!
//! #[tracing::instrument(skip_all)]
//! async fn bill(producer: &FutureProducer, message: &BorrowedMessage<'_>) -> anyhow::Result<()> {
//!     let invoice = FutureRecord::to("invoices").key("o-1").payload("{}");
//!     producer.send(invoice, std::time::Duration::from_secs(5)).await.map_err(|(e, _)| e)?;
//!     Ok(())
//! }
//!
//! # async fn run(consumer: StreamConsumer, producer: FutureProducer) -> anyhow::Result<()> {
//! loop {
//!     let message = consumer.recv().await?;
//!     tracebridge::kafka::process(&consumer, &message, bill(&producer, &message)).await?;
//!     consumer.commit_message(&message, CommitMode::Async)?;
//! }
//! # }
//! ```

#![warn(missing_docs, unreachable_pub)]
// One module reads a live rdkafka client's configuration through
// librdkafka (`kafka/client_config.rs`); nothing else may use `unsafe`.
#![deny(unsafe_code)]

mod error;
mod instrument;
mod metrics;
pub mod propagation;
pub mod sampling;
pub mod semconv;
pub mod telemetry;

#[cfg(feature = "amqp")]
pub mod amqp;
#[cfg(feature = "kafka")]
pub mod kafka;

pub use instrument::{HandlerOutcome, Instrumentation, ParentPolicy, spawn_in_context};
pub use metrics::MessagingMetric;
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
#[cfg(feature = "relay")]
pub mod correlate;
#[doc(hidden)]
pub mod dead_letter;
#[doc(hidden)]
pub mod redact;
#[doc(hidden)]
#[cfg(feature = "relay")]
pub mod relay;
#[doc(hidden)]
#[cfg(feature = "relay")]
pub mod traces;
#[doc(hidden)]
pub use error::{ClientError, Error, Refusal};
#[doc(hidden)]
pub use metrics::{DURATION_BUCKETS, MessagingMetrics, Series, SeriesOf};

/// The README's Rust examples, compiled as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// The guides' examples, compiled as doctests too.
#[cfg(doctest)]
#[doc = include_str!("../docs/library.md")]
struct LibraryGuideDoctests;

#[cfg(doctest)]
#[doc = include_str!("../docs/relay.md")]
struct RelayGuideDoctests;

#[cfg(doctest)]
#[doc = include_str!("../docs/conventions.md")]
struct ConventionsGuideDoctests;

#[cfg(doctest)]
#[doc = include_str!("../docs/sampling.md")]
struct SamplingGuideDoctests;

#[cfg(doctest)]
#[doc = include_str!("../docs/benchmarks.md")]
struct BenchmarksGuideDoctests;
