//! The messaging metrics in the Prometheus text format, for the relay's
//! `/metrics`: the same instruments the OTLP exporter sends, read from the
//! meter provider on each scrape and named by OpenTelemetry's Prometheus
//! compatibility rules (`.` → `_`, the unit as a suffix — `s` becomes
//! `_seconds`, an annotation like `{message}` is dropped — and `_total` on
//! counters).

use std::fmt::Write as _;
use std::sync::{Arc, Weak};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, Metric, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::reader::MetricReader;
use opentelemetry_sdk::metrics::{InstrumentKind, ManualReader, Pipeline, Temporality};

/// A reader on the meter provider whose metrics a scrape renders; give it
/// to [`super::TelemetryBuilder::with_prometheus`].
#[derive(Clone, Debug)]
pub struct PrometheusBridge {
    reader: Arc<ManualReader>,
    /// Only metrics whose name starts with this are rendered.
    prefix: &'static str,
}

impl PrometheusBridge {
    /// Renders the metrics named `prefix…` (the relay: `messaging.`; its
    /// own series are already in its registry).
    pub fn new(prefix: &'static str) -> Self {
        Self {
            reader: Arc::new(ManualReader::builder().build()),
            prefix,
        }
    }

    /// The reader to register with a meter provider.
    pub(crate) fn reader(&self) -> SharedReader {
        SharedReader(self.reader.clone())
    }

    /// The metrics now, in the Prometheus text format (empty before the
    /// reader is registered).
    pub fn render(&self) -> String {
        let mut collected = ResourceMetrics::default();
        if self.reader.collect(&mut collected).is_err() {
            return String::new();
        }
        let mut out = String::new();
        for scope in collected.scope_metrics() {
            for metric in scope.metrics() {
                if metric.name().starts_with(self.prefix) {
                    render_metric(metric, &mut out);
                }
            }
        }
        out
    }
}

/// The bridge's reader, shared with the meter provider that owns it.
#[derive(Debug)]
pub(crate) struct SharedReader(Arc<ManualReader>);

impl MetricReader for SharedReader {
    fn register_pipeline(&self, pipeline: Weak<Pipeline>) {
        self.0.register_pipeline(pipeline)
    }
    fn collect(&self, rm: &mut ResourceMetrics) -> OTelSdkResult {
        self.0.collect(rm)
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }
    fn temporality(&self, kind: InstrumentKind) -> Temporality {
        self.0.temporality(kind)
    }
}

/// The Prometheus name of an OpenTelemetry metric.
pub fn prometheus_name(name: &str, unit: &str, counter: bool) -> String {
    let mut out = sanitize(name);
    let suffix = match unit {
        "s" => "seconds",
        "ms" => "milliseconds",
        "By" => "bytes",
        "1" => "ratio",
        // Annotations (`{message}`) and empty units add nothing.
        u if u.is_empty() || u.starts_with('{') => "",
        u => {
            return format!(
                "{out}_{}{}",
                sanitize(u),
                if counter { "_total" } else { "" }
            );
        }
    };
    if !suffix.is_empty() && !out.ends_with(suffix) {
        out.push('_');
        out.push_str(suffix);
    }
    if counter {
        out.push_str("_total");
    }
    out
}

fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn labels(attributes: &[&KeyValue], extra: Option<(&str, &str)>) -> String {
    let mut pairs: Vec<(String, String)> = attributes
        .iter()
        .map(|kv| (sanitize(kv.key.as_str()), kv.value.as_str().into_owned()))
        .collect();
    pairs.sort();
    if let Some((key, value)) = extra {
        pairs.push((key.to_owned(), value.to_owned()));
    }
    if pairs.is_empty() {
        return String::new();
    }
    let body: Vec<String> = pairs
        .into_iter()
        .map(|(k, v)| {
            let v = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{k}=\"{v}\"")
        })
        .collect();
    format!("{{{}}}", body.join(","))
}

fn render_metric(metric: &Metric, out: &mut String) {
    match metric.data() {
        AggregatedMetrics::F64(data) => render_data(metric, data, out, |v| v),
        AggregatedMetrics::U64(data) => render_data(metric, data, out, |v| v as f64),
        AggregatedMetrics::I64(data) => render_data(metric, data, out, |v| v as f64),
    }
}

fn render_data<T: Copy>(
    metric: &Metric,
    data: &MetricData<T>,
    out: &mut String,
    as_f64: impl Fn(T) -> f64,
) {
    let header = |out: &mut String, name: &str, kind: &str| {
        let _ = writeln!(out, "# HELP {name} {}", metric.description());
        let _ = writeln!(out, "# TYPE {name} {kind}");
    };
    match data {
        MetricData::Sum(sum) => {
            let counter = sum.is_monotonic();
            let name = prometheus_name(metric.name(), metric.unit(), counter);
            header(out, &name, if counter { "counter" } else { "gauge" });
            let points = sum
                .data_points()
                .map(|p| (p.attributes().collect(), p.value()));
            render_values(&name, points, out, &as_f64);
        }
        MetricData::Gauge(gauge) => {
            let name = prometheus_name(metric.name(), metric.unit(), false);
            header(out, &name, "gauge");
            let points = gauge
                .data_points()
                .map(|p| (p.attributes().collect(), p.value()));
            render_values(&name, points, out, &as_f64);
        }
        MetricData::Histogram(histogram) => {
            let name = prometheus_name(metric.name(), metric.unit(), false);
            header(out, &name, "histogram");
            for point in histogram.data_points() {
                let attrs: Vec<&KeyValue> = point.attributes().collect();
                let mut cumulative = 0u64;
                let counts: Vec<u64> = point.bucket_counts().collect();
                for (bound, count) in point.bounds().zip(&counts) {
                    cumulative += count;
                    let le = bound.to_string();
                    let _ = writeln!(
                        out,
                        "{name}_bucket{} {cumulative}",
                        labels(&attrs, Some(("le", &le)))
                    );
                }
                let _ = writeln!(
                    out,
                    "{name}_bucket{} {}",
                    labels(&attrs, Some(("le", "+Inf"))),
                    point.count()
                );
                let _ = writeln!(
                    out,
                    "{name}_sum{} {}",
                    labels(&attrs, None),
                    as_f64(point.sum())
                );
                let _ = writeln!(
                    out,
                    "{name}_count{} {}",
                    labels(&attrs, None),
                    point.count()
                );
            }
        }
        // Not produced by tracebridge's instruments.
        MetricData::ExponentialHistogram(_) => {}
    }
}

/// One line per data point: `name{labels} value`.
fn render_values<'a, T: Copy + 'a>(
    name: &str,
    points: impl Iterator<Item = (Vec<&'a KeyValue>, T)>,
    out: &mut String,
    as_f64: &impl Fn(T) -> f64,
) {
    for (attrs, value) in points {
        let _ = writeln!(out, "{name}{} {}", labels(&attrs, None), as_f64(value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_compatibility_rules() {
        assert_eq!(
            prometheus_name("messaging.client.operation.duration", "s", false),
            "messaging_client_operation_duration_seconds"
        );
        assert_eq!(
            prometheus_name("messaging.client.sent.messages", "{message}", true),
            "messaging_client_sent_messages_total"
        );
    }

    #[test]
    fn a_scrape_shows_each_instrument_with_its_labels() {
        use opentelemetry::metrics::MeterProvider as _;
        let bridge = PrometheusBridge::new("messaging.");
        let provider = opentelemetry_sdk::metrics::SdkMeterProvider::builder()
            .with_reader(bridge.reader())
            .build();
        let metrics = crate::metrics::MessagingMetrics::new(&provider.meter("t"));
        let attrs = [
            KeyValue::new("messaging.system.name", "kafka"),
            KeyValue::new("messaging.destination.name", "orders"),
        ];
        metrics.count_sent(3, &attrs);
        metrics.record_operation(std::time::Instant::now(), &attrs);
        let text = bridge.render();
        assert!(
            text.contains(
                "messaging_client_sent_messages_total{messaging_destination_name=\"orders\",messaging_system_name=\"kafka\"} 3"
            ),
            "{text}"
        );
        assert!(text.contains("# TYPE messaging_client_operation_duration_seconds histogram"));
        assert!(text.contains(
            "messaging_client_operation_duration_seconds_bucket{messaging_destination_name=\"orders\",messaging_system_name=\"kafka\",le=\"0.005\"} 1"
        ), "{text}");
        assert!(text.contains(
            "messaging_client_operation_duration_seconds_count{messaging_destination_name=\"orders\",messaging_system_name=\"kafka\"} 1"
        ));
    }
}
