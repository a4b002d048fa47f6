//! The exporters and processors behind the providers: OTLP (gRPC or HTTP),
//! the span file, standard output; the metrics' readers.

use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::metrics::reader::MetricReader;
use opentelemetry_sdk::trace::BatchSpanProcessor;

use super::guard::TelemetryGuard;
use super::targets::{OtlpProtocol, SpanTarget};
use super::{TelemetryError, accounting};

/// Metrics go over OTLP next to the spans (`OTEL_METRICS_EXPORTER`:
/// `otlp`, the default, or `none`) and to `reader` when given (the relay's
/// Prometheus bridge); with neither there is no meter provider and
/// instruments are no-ops.
pub(super) fn metrics_provider(
    targets: &[SpanTarget],
    service_name: &str,
    reader: Option<impl MetricReader>,
    guard: &mut TelemetryGuard,
) -> Result<Option<SdkMeterProvider>, TelemetryError> {
    let mut builder =
        SdkMeterProvider::builder().with_resource(super::builder::resource(service_name));
    let has_reader = reader.is_some();
    if let Some(reader) = reader {
        builder = builder.with_reader(reader);
    }
    let otlp = targets.iter().find_map(|t| match t {
        SpanTarget::Otlp(protocol) => Some(*protocol),
        _ => None,
    });
    let protocol = match otlp {
        Some(protocol) if otlp_metrics_wanted()? => protocol,
        _ => return Ok(has_reader.then(|| builder.build())),
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

pub(super) fn otlp_processor(
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
pub(super) fn batch<E: opentelemetry_sdk::trace::SpanExporter + 'static>(
    exporter: E,
) -> BatchSpanProcessor {
    BatchSpanProcessor::builder(accounting::CountingExporter(exporter)).build()
}
