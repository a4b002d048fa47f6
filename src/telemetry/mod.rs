//! Telemetry set-up from the standard `OTEL_*` variables, for binaries and
//! services with no set-up of their own — the only part of tracebridge
//! that installs anything global. A service that has its own provider or
//! subscriber keeps them: the traced clients record through whatever the
//! application installed ([`crate::Instrumentation`]), and the parts here
//! compose into an existing set-up — [`JsonLogLayer`] for log lines with
//! trace ids, [`TelemetryBuilder::with_tracer_provider`] and
//! [`TelemetryBuilder::without_subscriber`] to install only what is missing.
//!
//! [`init`] installs, for the whole process:
//!
//! * a tracer provider with a batch span processor, exporting to
//!   - OTLP (`OTEL_EXPORTER_OTLP_ENDPOINT` or `…_TRACES_ENDPOINT` set;
//!     protocol from `OTEL_EXPORTER_OTLP_PROTOCOL`: `grpc`, `http/protobuf`
//!     (default) or `http/json`), or
//!   - an OTLP/JSON lines file, `TRACEBRIDGE_SPANS_FILE` (default
//!     `tracebridge-spans.jsonl`), when no endpoint is set, or
//!   - standard output (`OTEL_TRACES_EXPORTER=console`), or nothing (`none`);
//! * the sampler from `OTEL_TRACES_SAMPLER` / `_ARG` and the resource from
//!   `OTEL_SERVICE_NAME` / `OTEL_RESOURCE_ATTRIBUTES` (the SDK reads these);
//! * with an OTLP endpoint, a meter provider exporting over OTLP too (the
//!   queue-time histogram; `OTEL_METRICS_EXPORTER=none` turns it off);
//! * the W3C `traceparent` + `baggage` propagator as the global propagator;
//! * a `tracing` subscriber: spans become OpenTelemetry spans, and events are
//!   JSON lines on stderr carrying `trace_id`/`span_id`, filtered by
//!   `RUST_LOG` (default `info`).
//!
//! Telemetry never stops the application: an unreachable collector makes
//! the batch processor drop spans once its bounded queue (2048) is full —
//! the SDK counts them and reports the count at shutdown — and a broken
//! configuration is reported on stderr while the process carries on
//! without export ([`init`]) or returned as an error ([`TelemetryBuilder::try_init`]).
//!
//! ```no_run
//! let _guard = tracebridge::telemetry::init("checkout");
//! tracing::info!("spans and logs are set up");
//! // Dropping the guard flushes and shuts the provider down.
//! ```

#[cfg(feature = "otlp")]
use std::path::PathBuf;

#[cfg(feature = "otlp")]
mod accounting;
#[cfg(feature = "otlp")]
mod builder;
#[cfg(feature = "otlp")]
mod exporters;
#[cfg(feature = "otlp")]
mod guard;
mod json_log;
#[cfg(feature = "relay")]
mod prometheus;
#[cfg(feature = "otlp")]
mod span_file;
#[cfg(feature = "otlp")]
mod targets;

#[doc(hidden)]
#[cfg(feature = "otlp")]
pub use accounting::{SpanCounts, span_counts};
#[cfg(feature = "otlp")]
pub use builder::TelemetryBuilder;
#[cfg(feature = "otlp")]
pub use guard::TelemetryGuard;
pub use json_log::JsonLogLayer;
#[doc(hidden)]
#[cfg(feature = "relay")]
pub use prometheus::{PrometheusBridge, prometheus_name};
#[cfg(feature = "otlp")]
pub use span_file::{DEFAULT_SPANS_FILE, JsonLinesExporter};
#[cfg(feature = "otlp")]
pub use targets::{OtlpProtocol, SpanTarget, span_targets_from_env};

/// Whether `init` ran and set up no meter provider (so metric
/// instruments record nothing, and their attributes need not be built).
static METRICS_OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

pub(crate) fn metrics_disabled() -> bool {
    METRICS_OFF.get().copied().unwrap_or(false)
}

/// The bridge [`TelemetryBuilder::with_prometheus`] installed.
#[cfg(feature = "relay")]
static PROMETHEUS: std::sync::OnceLock<PrometheusBridge> = std::sync::OnceLock::new();

/// The messaging metrics in the Prometheus text format, when a bridge was
/// installed (the relay's `/metrics` appends them).
#[doc(hidden)]
#[cfg(feature = "relay")]
pub fn prometheus_text() -> Option<String> {
    PROMETHEUS.get().map(PrometheusBridge::render)
}

/// What can go wrong setting telemetry up.
#[cfg(feature = "otlp")]
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TelemetryError {
    /// An environment variable has a value tracebridge does not support.
    #[error("{variable}={value:?} is not supported (expected one of: {expected})")]
    UnsupportedValue {
        /// The variable.
        variable: &'static str,
        /// Its value.
        value: String,
        /// What would have been accepted.
        expected: &'static str,
    },
    /// The span file could not be opened.
    #[error("cannot open span file {path}: {source}")]
    SpansFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The OTLP exporter could not be built (bad endpoint, …).
    #[error("cannot build the OTLP {protocol} exporter: {message}")]
    Otlp {
        /// The protocol.
        protocol: &'static str,
        /// The exporter's error.
        message: String,
    },
    /// A global `tracing` subscriber was already installed.
    #[error("a global tracing subscriber is already installed: {0}")]
    SubscriberAlreadySet(String),
}

/// Installs telemetry for `service_name` (overridden by `OTEL_SERVICE_NAME`
/// or a `service.name` in `OTEL_RESOURCE_ATTRIBUTES`). Never fails: a
/// problem is printed on stderr and the process runs without that part.
#[cfg(feature = "otlp")]
pub fn init(service_name: &str) -> TelemetryGuard {
    TelemetryBuilder::new(service_name).init()
}
