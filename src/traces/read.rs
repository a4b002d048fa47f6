//! Reading: OTLP/JSON lines, streamed, into [`SpanRecord`]s grouped by
//! trace ([`Traces`]), filtered while read; other lines skipped and counted.

use std::collections::HashMap;
use std::io::BufRead;

use serde_json::Value;

use super::{Kind, LinkRecord, Options, SpanRecord};

/// The traces read from a file.
#[derive(Debug, Default)]
pub struct Traces {
    /// Spans per trace id, traces in the order first seen.
    pub(super) traces: Vec<(String, Vec<SpanRecord>)>,
    /// Lines that were not OTLP/JSON.
    pub bad_lines: usize,
    /// The first bad line's number and why, for the message.
    pub first_bad_line: Option<(usize, String)>,
    /// Whether reading kept one trace only: a link's target missing from
    /// the spans may then be in the file after all.
    pub(super) one_trace_read: bool,
}

impl Traces {
    /// Reads OTLP/JSON lines from `reader`, keeping the spans `options`
    /// may show. Fails only when the reader does.
    pub fn read(reader: impl BufRead, options: &Options) -> std::io::Result<Self> {
        // A journey needs the traces linked to the wanted one: read all.
        let wanted = (!options.journeys)
            .then(|| options.trace_id.as_deref().map(str::to_ascii_lowercase))
            .flatten();
        let mut out = Self {
            one_trace_read: wanted.is_some(),
            ..Self::default()
        };
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut reader = reader;
        let mut bytes = Vec::new();
        for number in 0.. {
            bytes.clear();
            if reader.read_until(b'\n', &mut bytes)? == 0 {
                break;
            }
            // A line that is not UTF-8 is a bad line, not a failed file.
            let parsed = std::str::from_utf8(&bytes)
                .map_err(|e| format!("not UTF-8: {e}"))
                .and_then(|line| {
                    if line.trim().is_empty() {
                        Ok(Vec::new())
                    } else {
                        parse_line(line)
                    }
                });
            let spans = match parsed {
                Ok(spans) => spans,
                Err(why) => {
                    out.bad_lines += 1;
                    out.first_bad_line.get_or_insert((number + 1, why));
                    continue;
                }
            };
            for span in spans {
                if wanted.as_deref().is_some_and(|w| w != span.trace_id) {
                    continue;
                }
                let slot = *index.entry(span.trace_id.clone()).or_insert_with(|| {
                    out.traces.push((span.trace_id.clone(), Vec::new()));
                    out.traces.len() - 1
                });
                out.traces[slot].1.push(span);
            }
        }
        Ok(out)
    }
}

/// The spans of one OTLP/JSON line (an `ExportTraceServiceRequest`).
fn parse_line(line: &str) -> Result<Vec<SpanRecord>, String> {
    let request: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let resource_spans = request
        .get("resourceSpans")
        .and_then(Value::as_array)
        .ok_or("no resourceSpans")?;
    let mut out = Vec::new();
    for rs in resource_spans {
        let service = attribute(&rs["resource"]["attributes"], "service.name")
            .unwrap_or_else(|| "unknown".into());
        let scopes = rs["scopeSpans"].as_array().into_iter().flatten();
        for span in scopes.flat_map(|ss| ss["spans"].as_array().into_iter().flatten()) {
            let (trace_id, span_id) = (hex_id(span, "traceId"), hex_id(span, "spanId"));
            if trace_id.is_empty() || span_id.is_empty() {
                return Err("a span without traceId or spanId".into());
            }
            let status = &span["status"];
            let is_error = matches!(status["code"].as_u64(), Some(2))
                || status["code"].as_str() == Some("STATUS_CODE_ERROR");
            out.push(SpanRecord {
                trace_id,
                span_id,
                parent_span_id: hex_id(span, "parentSpanId"),
                name: span["name"].as_str().unwrap_or("(unnamed)").to_owned(),
                service: service.clone(),
                kind: Kind::parse(&span["kind"]),
                start_ns: nanos(&span["startTimeUnixNano"]),
                end_ns: nanos(&span["endTimeUnixNano"]),
                error: is_error.then(|| status["message"].as_str().unwrap_or_default().to_owned()),
                destination: attribute(&span["attributes"], "messaging.destination.name"),
                links: span["links"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|link| LinkRecord {
                        trace_id: hex_id(link, "traceId"),
                        span_id: hex_id(link, "spanId"),
                    })
                    .filter(|link| !link.trace_id.is_empty() && !link.span_id.is_empty())
                    .collect(),
            });
        }
    }
    Ok(out)
}

/// A trace or span id field, lower-case hex; empty when absent.
fn hex_id(object: &Value, key: &str) -> String {
    object[key]
        .as_str()
        .unwrap_or_default()
        .to_ascii_lowercase()
}

/// OTLP/JSON writes 64-bit integers as strings; accept numbers too.
fn nanos(value: &Value) -> u64 {
    value
        .as_u64()
        .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or(0)
}

/// A string (or scalar, as text) attribute's value.
fn attribute(attributes: &Value, key: &str) -> Option<String> {
    let kv = attributes.as_array()?.iter().find(|kv| kv["key"] == key)?;
    let value = kv["value"].as_object()?.values().next()?;
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}
