//! Where spans are exported to, as the `OTEL_*` environment chooses.

use std::path::PathBuf;

use super::TelemetryError;
use super::span_file;

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
    pub(crate) fn name(self) -> &'static str {
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

#[cfg(test)]
mod tests {
    use super::super::DEFAULT_SPANS_FILE;
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
