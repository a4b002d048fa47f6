//! [`TelemetryGuard`]: what [`super::init`] set up, flushed and shut down
//! when dropped.

use std::path::PathBuf;

use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;

use super::exporters::{batch, otlp_processor};
use super::targets::SpanTarget;
use super::{JsonLinesExporter, TelemetryError, accounting};

/// Keeps telemetry running; dropping it flushes pending spans and shuts the
/// tracer provider down.
#[derive(Default)]
pub struct TelemetryGuard {
    pub(super) provider: Option<SdkTracerProvider>,
    /// Whether the tracer provider is ours to shut down (not when the
    /// application handed it in: then it is only flushed).
    pub(super) owns_provider: bool,
    pub(super) meters: Option<SdkMeterProvider>,
    runtime: Option<tokio::runtime::Runtime>,
    spans_file: Option<PathBuf>,
    pub(super) targets: Vec<SpanTarget>,
    /// Providers of further services ([`TelemetryGuard::service_provider`]).
    services: Vec<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// The small runtime OTLP/gRPC exporters run their channels on,
    /// started on first use.
    pub(super) fn otlp_runtime(&mut self) -> Result<&tokio::runtime::Runtime, TelemetryError> {
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

    pub(super) fn build_provider(
        &mut self,
        targets: &[SpanTarget],
        resource: Resource,
    ) -> Result<SdkTracerProvider, TelemetryError> {
        let mut builder = SdkTracerProvider::builder().with_resource(resource);
        // The SDK reads the samplers it knows; the specification's
        // consistent one is tracebridge's.
        let from_env = crate::sampling::sampler_from_env(|name| std::env::var(name).ok());
        if let crate::sampling::SamplerFromEnv::Probability { sampler, warning } = from_env {
            if let Some(warning) = warning {
                eprintln!("tracebridge: {warning}");
            }
            builder = builder.with_sampler(sampler);
        }
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

    /// The meter provider, when one was set up (an OTLP endpoint or a
    /// Prometheus bridge).
    pub fn meter_provider(&self) -> Option<&SdkMeterProvider> {
        self.meters.as_ref()
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
        let owns_provider = self.owns_provider;
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
                    if owns_provider && let Err(err) = provider.shutdown() {
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
