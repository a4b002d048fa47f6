//! [`TelemetryBuilder`]: what [`super::init`] installs, part by part.

use std::path::PathBuf;

use opentelemetry::propagation::TextMapCompositePropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use super::exporters::metrics_provider;
use super::guard::TelemetryGuard;
use super::targets::{SpanTarget, span_targets_from_env};
use super::{JsonLogLayer, METRICS_OFF, TelemetryError};
#[cfg(feature = "relay")]
use super::{PROMETHEUS, PrometheusBridge};
use crate::instrument::SCOPE_NAME;

/// Telemetry options beyond the environment; see [`super::init`].
///
/// A service with set-up of its own takes only the parts it lacks: hand in
/// its tracer provider ([`TelemetryBuilder::with_tracer_provider`]) and
/// tracebridge builds none; keep its `tracing` subscriber
/// ([`TelemetryBuilder::without_subscriber`]) and add
/// [`JsonLogLayer`] to it for log lines with trace ids.
pub struct TelemetryBuilder {
    service_name: String,
    targets: Option<Vec<SpanTarget>>,
    provider: Option<SdkTracerProvider>,
    subscriber: bool,
    log_writer: Option<BoxMakeWriter>,
    #[cfg(feature = "relay")]
    prometheus: Option<PrometheusBridge>,
}

impl TelemetryBuilder {
    /// Starts with the service name (the environment may override it).
    pub fn new(service_name: &str) -> Self {
        Self {
            service_name: service_name.to_owned(),
            targets: None,
            provider: None,
            subscriber: true,
            log_writer: None,
            #[cfg(feature = "relay")]
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

    /// Uses this tracer provider (the application's own) instead of
    /// building one from the environment: it is installed as the global
    /// provider and behind the `tracing` layer, flushed when the guard is
    /// dropped, and left for its owner to shut down. Span targets are then
    /// the provider's business.
    pub fn with_tracer_provider(mut self, provider: SdkTracerProvider) -> Self {
        self.provider = Some(provider);
        self
    }

    /// Installs no global `tracing` subscriber: for a service that has its
    /// own. Add [`JsonLogLayer`] (log lines with `trace_id` / `span_id`)
    /// and a `tracing-opentelemetry` layer to it as you see fit.
    pub fn without_subscriber(mut self) -> Self {
        self.subscriber = false;
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
    /// ([`super::prometheus_text`]): a meter provider is set up even without
    /// an OTLP endpoint.
    #[doc(hidden)]
    #[cfg(feature = "relay")]
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

    /// Installs the tracer provider, meter provider and propagator as the
    /// process's globals, and (unless
    /// [`TelemetryBuilder::without_subscriber`]) the `tracing` subscriber.
    pub fn try_init(self) -> Result<TelemetryGuard, TelemetryError> {
        let targets = match self.targets {
            Some(targets) => targets,
            None if self.provider.is_some() => Vec::new(),
            None => span_targets_from_env(|name| std::env::var(name).ok())?,
        };
        let mut guard = TelemetryGuard::default();
        let provider = match self.provider {
            Some(provider) => provider,
            None => {
                guard.owns_provider = true;
                guard.build_provider(&targets, resource(&self.service_name))?
            }
        };
        guard.targets = targets.clone();
        opentelemetry::global::set_tracer_provider(provider.clone());
        opentelemetry::global::set_text_map_propagator(TextMapCompositePropagator::new(vec![
            Box::new(TraceContextPropagator::new()),
            Box::new(BaggagePropagator::new()),
        ]));

        #[cfg(feature = "relay")]
        let reader = self.prometheus.as_ref().map(PrometheusBridge::reader);
        #[cfg(not(feature = "relay"))]
        let reader = None::<opentelemetry_sdk::metrics::ManualReader>;
        guard.meters = metrics_provider(&targets, &self.service_name, reader, &mut guard)?;
        if let Some(meters) = &guard.meters {
            opentelemetry::global::set_meter_provider(meters.clone());
        }
        let _ = METRICS_OFF.set(guard.meters.is_none());
        #[cfg(feature = "relay")]
        if let Some(bridge) = self.prometheus {
            let _ = PROMETHEUS.set(bridge);
        }

        if self.subscriber {
            let tracer = provider.tracer(SCOPE_NAME);
            let otel_layer = tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(span_filter());
            let log_filter =
                EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
            let log_layer = JsonLogLayer::new(
                self.log_writer
                    .unwrap_or_else(|| BoxMakeWriter::new(std::io::stderr)),
            )
            .with_filter(log_filter);
            tracing_subscriber::registry()
                .with(otel_layer)
                .with(log_layer)
                .try_init()
                .map_err(|e| TelemetryError::SubscriberAlreadySet(e.to_string()))?;
        }
        guard.provider = Some(provider);
        Ok(guard)
    }
}

/// `tracing` spans that become OpenTelemetry spans: INFO and above, minus
/// the transport crates the exporter itself uses (exporting their spans
/// would feed the exporter its own work).
fn span_filter() -> Targets {
    use tracing::level_filters::LevelFilter;
    Targets::new()
        .with_default(tracing::Level::INFO)
        .with_target("h2", LevelFilter::OFF)
        .with_target("hyper", LevelFilter::OFF)
        .with_target("hyper_util", LevelFilter::OFF)
        .with_target("tonic", LevelFilter::OFF)
        .with_target("tower", LevelFilter::OFF)
        .with_target("reqwest", LevelFilter::OFF)
        // lapin's connection-long `io_loop` span is not a unit of work.
        .with_target("lapin", LevelFilter::OFF)
        .with_target("opentelemetry", LevelFilter::OFF)
        .with_target("opentelemetry_sdk", LevelFilter::OFF)
        .with_target("opentelemetry_otlp", LevelFilter::OFF)
}

/// The SDK's default resource (which reads `OTEL_SERVICE_NAME` and
/// `OTEL_RESOURCE_ATTRIBUTES`), with `service_name` when neither names one.
pub(super) fn resource(service_name: &str) -> Resource {
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
