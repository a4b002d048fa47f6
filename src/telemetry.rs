//! Telemetry set-up from the standard `OTEL_*` variables.
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

mod accounting;
mod json_log;
mod prometheus;
mod span_file;

use std::path::PathBuf;

use opentelemetry::propagation::TextMapCompositePropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use opentelemetry_sdk::trace::{BatchSpanProcessor, SdkTracerProvider};
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

pub use accounting::{SpanCounts, span_counts};
pub use prometheus::{PrometheusBridge, prometheus_name};
pub use span_file::{DEFAULT_SPANS_FILE, JsonLinesExporter};

/// The provider [`init`] installed, for [`crate::Instrumentation::global`].
static INSTALLED: std::sync::OnceLock<SdkTracerProvider> = std::sync::OnceLock::new();

pub(crate) fn installed_provider() -> Option<SdkTracerProvider> {
    INSTALLED.get().cloned()
}

/// Whether [`init`] ran and set up no meter provider (so metric
/// instruments record nothing, and their attributes need not be built).
static METRICS_OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

pub(crate) fn metrics_disabled() -> bool {
    METRICS_OFF.get().copied().unwrap_or(false)
}

/// The bridge [`TelemetryBuilder::with_prometheus`] installed.
static PROMETHEUS: std::sync::OnceLock<PrometheusBridge> = std::sync::OnceLock::new();

/// The messaging metrics in the Prometheus text format, when a bridge was
/// installed (the relay's `/metrics` appends them).
pub fn prometheus_text() -> Option<String> {
    PROMETHEUS.get().map(PrometheusBridge::render)
}

/// The instrumentation scope name of tracebridge's own spans.
pub const SCOPE_NAME: &str = "tracebridge";

/// What can go wrong setting telemetry up.
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

/// Where spans are exported to, as chosen by the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpanTarget {
    /// An OTLP endpoint (the exporter reads the endpoint, headers and
    /// timeout variables itself).
    Otlp(OtlpProtocol),
    /// An OTLP/JSON lines file.
    File(PathBuf),
    /// OTLP/JSON lines on standard output.
    Console,
}

/// The OTLP wire protocol (`OTEL_EXPORTER_OTLP_PROTOCOL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// `grpc`.
    Grpc,
    /// `http/protobuf` (the spec's default).
    HttpProtobuf,
    /// `http/json`.
    HttpJson,
}

impl OtlpProtocol {
    fn name(self) -> &'static str {
        match self {
            OtlpProtocol::Grpc => "grpc",
            OtlpProtocol::HttpProtobuf => "http/protobuf",
            OtlpProtocol::HttpJson => "http/json",
        }
    }
}

/// Decides the span targets from environment variables (`lookup` returns a
/// variable's value), following the OpenTelemetry environment spec.
pub fn span_targets_from_env(
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Vec<SpanTarget>, TelemetryError> {
    let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
    let exporters = get("OTEL_TRACES_EXPORTER").unwrap_or_else(|| "otlp".into());
    let mut targets = Vec::new();
    for exporter in exporters.split(',').map(str::trim) {
        match exporter {
            "none" => return Ok(Vec::new()),
            "console" => targets.push(SpanTarget::Console),
            "otlp" => {
                let has_endpoint = get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()
                    || get("OTEL_EXPORTER_OTLP_ENDPOINT").is_some();
                if has_endpoint {
                    let protocol = get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                        .or_else(|| get("OTEL_EXPORTER_OTLP_PROTOCOL"));
                    let protocol = match protocol.as_deref().map(str::trim) {
                        None | Some("http/protobuf") => OtlpProtocol::HttpProtobuf,
                        Some("grpc") => OtlpProtocol::Grpc,
                        Some("http/json") => OtlpProtocol::HttpJson,
                        Some(other) => {
                            return Err(TelemetryError::UnsupportedValue {
                                variable: "OTEL_EXPORTER_OTLP_PROTOCOL",
                                value: other.to_owned(),
                                expected: "grpc, http/protobuf, http/json",
                            });
                        }
                    };
                    targets.push(SpanTarget::Otlp(protocol));
                } else {
                    targets.push(SpanTarget::File(span_file::spans_file_from(get(
                        "TRACEBRIDGE_SPANS_FILE",
                    ))));
                }
            }
            other => {
                return Err(TelemetryError::UnsupportedValue {
                    variable: "OTEL_TRACES_EXPORTER",
                    value: other.to_owned(),
                    expected: "otlp, console, none",
                });
            }
        }
    }
    Ok(targets)
}

/// Installs telemetry for `service_name` (overridden by `OTEL_SERVICE_NAME`
/// or a `service.name` in `OTEL_RESOURCE_ATTRIBUTES`). Never fails: a
/// problem is printed on stderr and the process runs without that part.
pub fn init(service_name: &str) -> TelemetryGuard {
    TelemetryBuilder::new(service_name).init()
}

/// Telemetry options beyond the environment; see [`init`].
pub struct TelemetryBuilder {
    service_name: String,
    targets: Option<Vec<SpanTarget>>,
    log_writer: Option<BoxMakeWriter>,
    prometheus: Option<PrometheusBridge>,
}

impl TelemetryBuilder {
    /// Starts with the service name (the environment may override it).
    pub fn new(service_name: &str) -> Self {
        Self {
            service_name: service_name.to_owned(),
            targets: None,
            log_writer: None,
            prometheus: None,
        }
    }

    /// Writes spans to this OTLP/JSON lines file instead of what the
    /// environment says. Default: decided by [`span_targets_from_env`].
    pub fn with_spans_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.targets = Some(vec![SpanTarget::File(path.into())]);
        self
    }

    /// Exports spans to exactly these targets instead of what the
    /// environment says.
    pub fn with_targets(mut self, targets: Vec<SpanTarget>) -> Self {
        self.targets = Some(targets);
        self
    }

    /// Writes JSON logs here instead of stderr.
    pub fn with_log_writer<W>(mut self, writer: W) -> Self
    where
        W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
    {
        self.log_writer = Some(BoxMakeWriter::new(writer));
        self
    }

    /// Also serves the metrics to a Prometheus scrape
    /// ([`prometheus_text`]): a meter provider is set up even without an
    /// OTLP endpoint.
    pub fn with_prometheus(mut self, bridge: PrometheusBridge) -> Self {
        self.prometheus = Some(bridge);
        self
    }

    /// Like [`TelemetryBuilder::try_init`], but never fails: whatever could
    /// not be set up is reported on stderr and left out.
    pub fn init(self) -> TelemetryGuard {
        let service_name = self.service_name.clone();
        match self.try_init() {
            Ok(guard) => guard,
            Err(err) => {
                eprintln!("tracebridge: telemetry for {service_name} is not exported: {err}");
                TelemetryGuard::default()
            }
        }
    }

    /// Installs the tracer provider, propagator and `tracing` subscriber.
    pub fn try_init(self) -> Result<TelemetryGuard, TelemetryError> {
        let targets = match self.targets {
            Some(targets) => targets,
            None => span_targets_from_env(|name| std::env::var(name).ok())?,
        };
        let mut guard = TelemetryGuard::default();
        let provider = guard.build_provider(&targets, resource(&self.service_name))?;
        guard.targets = targets.clone();
        opentelemetry::global::set_tracer_provider(provider.clone());
        // First install wins, as for the global tracing subscriber below.
        let _ = INSTALLED.set(provider.clone());
        opentelemetry::global::set_text_map_propagator(TextMapCompositePropagator::new(vec![
            Box::new(TraceContextPropagator::new()),
            Box::new(BaggagePropagator::new()),
        ]));

        guard.meters = metrics_provider(
            &targets,
            &self.service_name,
            self.prometheus.as_ref(),
            &mut guard,
        )?;
        if let Some(meters) = &guard.meters {
            opentelemetry::global::set_meter_provider(meters.clone());
        }
        let _ = METRICS_OFF.set(guard.meters.is_none());
        if let Some(bridge) = self.prometheus {
            let _ = PROMETHEUS.set(bridge);
        }

        let tracer = provider.tracer(SCOPE_NAME);
        let otel_layer = tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(span_filter());
        let log_filter =
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
        let log_layer = json_log::JsonLogLayer::new(
            self.log_writer
                .unwrap_or_else(|| BoxMakeWriter::new(std::io::stderr)),
        )
        .with_filter(log_filter);
        tracing_subscriber::registry()
            .with(otel_layer)
            .with(log_layer)
            .try_init()
            .map_err(|e| TelemetryError::SubscriberAlreadySet(e.to_string()))?;
        guard.provider = Some(provider);
        Ok(guard)
    }
}

/// `tracing` spans that become OpenTelemetry spans: INFO and above, minus
/// the transport crates the exporter itself uses (exporting their spans
/// would feed the exporter its own work).
fn span_filter() -> Targets {
    Targets::new()
        .with_default(tracing::Level::INFO)
        .with_target("h2", tracing::level_filters::LevelFilter::OFF)
        .with_target("hyper", tracing::level_filters::LevelFilter::OFF)
        .with_target("hyper_util", tracing::level_filters::LevelFilter::OFF)
        .with_target("tonic", tracing::level_filters::LevelFilter::OFF)
        .with_target("tower", tracing::level_filters::LevelFilter::OFF)
        .with_target("reqwest", tracing::level_filters::LevelFilter::OFF)
        // lapin's connection-long `io_loop` span is not a unit of work.
        .with_target("lapin", tracing::level_filters::LevelFilter::OFF)
        .with_target("opentelemetry", tracing::level_filters::LevelFilter::OFF)
        .with_target(
            "opentelemetry_sdk",
            tracing::level_filters::LevelFilter::OFF,
        )
        .with_target(
            "opentelemetry_otlp",
            tracing::level_filters::LevelFilter::OFF,
        )
}

/// The SDK's default resource (which reads `OTEL_SERVICE_NAME` and
/// `OTEL_RESOURCE_ATTRIBUTES`), with `service_name` when neither names one.
fn resource(service_name: &str) -> Resource {
    let env_names_service = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.is_empty())
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|v| {
            v.split(',')
                .any(|kv| kv.trim().starts_with("service.name="))
        });
    let builder = Resource::builder();
    if env_names_service {
        builder.build()
    } else {
        builder.with_service_name(service_name.to_owned()).build()
    }
}

/// Metrics go over OTLP next to the spans (`OTEL_METRICS_EXPORTER`:
/// `otlp`, the default, or `none`) and to a Prometheus bridge when given;
/// with neither there is no meter provider and instruments are no-ops.
fn metrics_provider(
    targets: &[SpanTarget],
    service_name: &str,
    prometheus: Option<&PrometheusBridge>,
    guard: &mut TelemetryGuard,
) -> Result<Option<SdkMeterProvider>, TelemetryError> {
    let mut builder = SdkMeterProvider::builder().with_resource(resource(service_name));
    if let Some(bridge) = prometheus {
        builder = builder.with_reader(bridge.reader());
    }
    let otlp = targets.iter().find_map(|t| match t {
        SpanTarget::Otlp(protocol) => Some(*protocol),
        _ => None,
    });
    let protocol = match otlp {
        Some(protocol) if otlp_metrics_wanted()? => protocol,
        _ => return Ok(prometheus.map(|_| builder.build())),
    };
    let exporter = build_otlp(
        protocol,
        guard,
        || {
            opentelemetry_otlp::MetricExporter::builder()
                .with_tonic()
                .build()
        },
        |wire| {
            opentelemetry_otlp::MetricExporter::builder()
                .with_http()
                .with_protocol(wire)
                .build()
        },
    )?;
    Ok(Some(builder.with_periodic_exporter(exporter).build()))
}

/// `OTEL_METRICS_EXPORTER`: `otlp` (the default) or `none`.
fn otlp_metrics_wanted() -> Result<bool, TelemetryError> {
    match std::env::var("OTEL_METRICS_EXPORTER").as_deref() {
        Ok("none") => Ok(false),
        Ok("otlp") | Ok("") | Err(_) => Ok(true),
        Ok(other) => Err(TelemetryError::UnsupportedValue {
            variable: "OTEL_METRICS_EXPORTER",
            value: other.to_owned(),
            expected: "otlp, none",
        }),
    }
}

fn otlp_processor(
    protocol: OtlpProtocol,
    guard: &mut TelemetryGuard,
) -> Result<BatchSpanProcessor, TelemetryError> {
    let exporter = build_otlp(
        protocol,
        guard,
        || {
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .build()
        },
        |wire| {
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(wire)
                .build()
        },
    )?;
    Ok(batch(exporter))
}

/// Builds an OTLP exporter for `protocol` where its transport can live.
///
/// gRPC: the SDK exports from its own threads, but tonic needs a Tokio
/// reactor, so the channel is built inside a small runtime that lives as
/// long as the guard. HTTP: reqwest's blocking client refuses to be built
/// inside a Tokio runtime — where `init` is often called from — so it is
/// built on a plain thread.
fn build_otlp<T: Send + 'static>(
    protocol: OtlpProtocol,
    guard: &mut TelemetryGuard,
    grpc: impl FnOnce() -> Result<T, opentelemetry_otlp::ExporterBuildError>,
    http: impl FnOnce(Protocol) -> Result<T, opentelemetry_otlp::ExporterBuildError> + Send + 'static,
) -> Result<T, TelemetryError> {
    let error = |message: String| TelemetryError::Otlp {
        protocol: protocol.name(),
        message,
    };
    match protocol {
        OtlpProtocol::Grpc => {
            let runtime = guard.otlp_runtime()?;
            let _entered = runtime.enter();
            grpc().map_err(|e| error(e.to_string()))
        }
        OtlpProtocol::HttpProtobuf | OtlpProtocol::HttpJson => {
            let wire = if protocol == OtlpProtocol::HttpJson {
                Protocol::HttpJson
            } else {
                Protocol::HttpBinary
            };
            std::thread::spawn(move || http(wire))
                .join()
                .map_err(|_| error("the exporter builder panicked".into()))?
                .map_err(|e| error(e.to_string()))
        }
    }
}

/// The SDK's batch processor (bounded queue: spans beyond it are dropped,
/// never blocking the caller), with export outcomes counted.
fn batch<E: opentelemetry_sdk::trace::SpanExporter + 'static>(exporter: E) -> BatchSpanProcessor {
    BatchSpanProcessor::builder(accounting::CountingExporter(exporter)).build()
}

/// Keeps telemetry running; dropping it flushes pending spans and shuts the
/// tracer provider down.
#[derive(Default)]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
    meters: Option<SdkMeterProvider>,
    runtime: Option<tokio::runtime::Runtime>,
    spans_file: Option<PathBuf>,
    targets: Vec<SpanTarget>,
    /// Providers of further services ([`TelemetryGuard::service_provider`]).
    services: Vec<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// The small runtime OTLP/gRPC exporters run their channels on,
    /// started on first use.
    fn otlp_runtime(&mut self) -> Result<&tokio::runtime::Runtime, TelemetryError> {
        if self.runtime.is_none() {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("tracebridge-otlp")
                .enable_all()
                .build()
                .map_err(|e| TelemetryError::Otlp {
                    protocol: "grpc",
                    message: format!("cannot start its runtime: {e}"),
                })?;
            self.runtime = Some(runtime);
        }
        Ok(self.runtime.as_ref().expect("set above"))
    }

    fn build_provider(
        &mut self,
        targets: &[SpanTarget],
        resource: Resource,
    ) -> Result<SdkTracerProvider, TelemetryError> {
        let mut builder = SdkTracerProvider::builder().with_resource(resource);
        for target in targets {
            let processor = match target {
                SpanTarget::File(path) => {
                    let exporter = JsonLinesExporter::to_file(path).map_err(|source| {
                        TelemetryError::SpansFile {
                            path: path.clone(),
                            source,
                        }
                    })?;
                    self.spans_file = Some(path.clone());
                    batch(exporter)
                }
                SpanTarget::Console => batch(JsonLinesExporter::to_stdout()),
                SpanTarget::Otlp(protocol) => otlp_processor(*protocol, self)?,
            };
            builder = builder.with_span_processor(accounting::CountingProcessor(processor));
        }
        Ok(builder.build())
    }

    /// A tracer provider for another service in this process (its own
    /// `service.name`, the same span targets), flushed and shut down with
    /// the guard. For demos and tests that play several services at once.
    pub fn service_provider(
        &mut self,
        service_name: &str,
    ) -> Result<SdkTracerProvider, TelemetryError> {
        let targets = self.targets.clone();
        let resource = Resource::builder()
            .with_service_name(service_name.to_owned())
            .build();
        let provider = self.build_provider(&targets, resource)?;
        self.services.push(provider.clone());
        Ok(provider)
    }

    /// The span file being written, when spans go to a file.
    pub fn spans_file(&self) -> Option<&std::path::Path> {
        self.spans_file.as_deref()
    }

    /// The tracer provider, when one was installed.
    pub fn provider(&self) -> Option<&SdkTracerProvider> {
        self.provider.as_ref()
    }
}

/// How long dropping the guard may wait for the exporters, all together:
/// a collector that accepts connections and never answers must not hold a
/// process's exit (each SDK call alone may wait 5 s or more).
const SHUTDOWN_LIMIT: std::time::Duration = std::time::Duration::from_secs(3);

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        let services = std::mem::take(&mut self.services);
        let provider = self.provider.take();
        let meters = self.meters.take();
        let (done, finished) = std::sync::mpsc::channel();
        // Flushed on a thread of its own, waited for at most SHUTDOWN_LIMIT;
        // problems are logged (JSON like every other line), not printed.
        let flushing = std::thread::Builder::new()
            .name("telemetry-shutdown".into())
            .spawn(move || {
                let mut problems = Vec::new();
                for provider in services {
                    let _ = provider.force_flush();
                    if let Err(err) = provider.shutdown() {
                        problems.push(format!("shutting a service's tracer provider down: {err}"));
                    }
                }
                if let Some(provider) = provider {
                    if let Err(err) = provider.force_flush() {
                        problems.push(format!("flushing spans: {err}"));
                    }
                    if let Err(err) = provider.shutdown() {
                        problems.push(format!("shutting the tracer provider down: {err}"));
                    }
                }
                if let Some(meters) = meters
                    && let Err(err) = meters.shutdown()
                {
                    problems.push(format!("shutting the meter provider down: {err}"));
                }
                let _ = done.send(problems);
            });
        match flushing.map(|_| finished.recv_timeout(SHUTDOWN_LIMIT)) {
            Ok(Ok(problems)) => {
                for problem in problems {
                    tracing::warn!(stage = "telemetry", error = %problem, "telemetry shutdown");
                }
            }
            Ok(Err(_)) => tracing::error!(
                stage = "telemetry",
                limit = ?SHUTDOWN_LIMIT,
                "the span exporter did not finish in time; spans still queued are not exported"
            ),
            Err(err) => tracing::error!(stage = "telemetry", error = %err,
                "could not start the telemetry shutdown; spans still queued are not exported"),
        }
        if let Some(runtime) = self.runtime.take() {
            // Dropping a runtime inside another runtime's task panics.
            runtime.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets(vars: &[(&str, &str)]) -> Result<Vec<SpanTarget>, TelemetryError> {
        span_targets_from_env(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn no_endpoint_means_the_span_file() {
        assert_eq!(
            targets(&[]).unwrap(),
            vec![SpanTarget::File(DEFAULT_SPANS_FILE.into())]
        );
        assert_eq!(
            targets(&[("TRACEBRIDGE_SPANS_FILE", "/tmp/x.jsonl")]).unwrap(),
            vec![SpanTarget::File("/tmp/x.jsonl".into())]
        );
    }

    #[test]
    fn an_endpoint_selects_otlp_with_the_configured_protocol() {
        let cases = [
            (
                vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")],
                OtlpProtocol::HttpProtobuf,
            ),
            (
                vec![
                    ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4317"),
                    ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                ],
                OtlpProtocol::Grpc,
            ),
            (
                vec![
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                    ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                    ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json"),
                ],
                OtlpProtocol::HttpJson,
            ),
        ];
        for (vars, protocol) in cases {
            assert_eq!(
                targets(&vars).unwrap(),
                vec![SpanTarget::Otlp(protocol)],
                "{vars:?}"
            );
        }
    }

    #[test]
    fn exporter_choice_and_bad_values() {
        assert_eq!(
            targets(&[("OTEL_TRACES_EXPORTER", "none")]).unwrap(),
            vec![]
        );
        assert_eq!(
            targets(&[("OTEL_TRACES_EXPORTER", "console")]).unwrap(),
            vec![SpanTarget::Console]
        );
        let err = targets(&[("OTEL_TRACES_EXPORTER", "zipkin")]).unwrap_err();
        assert!(
            err.to_string().contains("OTEL_TRACES_EXPORTER=\"zipkin\""),
            "{err}"
        );
        let err = targets(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "thrift"),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("thrift"), "{err}");
    }
}
