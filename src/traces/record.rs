//! One span as the view keeps it ([`SpanRecord`]): its kind, times,
//! status, destination and links — never the JSON.

use serde_json::Value;

/// A span's kind, as OTLP numbers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Unspecified or internal.
    Internal,
    /// SERVER.
    Server,
    /// CLIENT.
    Client,
    /// PRODUCER.
    Producer,
    /// CONSUMER.
    Consumer,
}

impl Kind {
    pub(super) fn parse(value: &Value) -> Self {
        let text = value.as_str().unwrap_or_default();
        match value.as_u64() {
            Some(2) => Kind::Server,
            Some(3) => Kind::Client,
            Some(4) => Kind::Producer,
            Some(5) => Kind::Consumer,
            Some(_) => Kind::Internal,
            None if text.ends_with("SERVER") => Kind::Server,
            None if text.ends_with("CLIENT") => Kind::Client,
            None if text.ends_with("PRODUCER") => Kind::Producer,
            None if text.ends_with("CONSUMER") => Kind::Consumer,
            None => Kind::Internal,
        }
    }

    pub(super) fn label(self) -> &'static str {
        match self {
            Kind::Internal => "INTERNAL",
            Kind::Server => "SERVER",
            Kind::Client => "CLIENT",
            Kind::Producer => "PRODUCER",
            Kind::Consumer => "CONSUMER",
        }
    }
}

/// One span, as much of it as the view needs.
#[derive(Debug, Clone)]
pub struct SpanRecord {
    /// Hex trace id.
    pub trace_id: String,
    /// Hex span id.
    pub span_id: String,
    /// Hex parent span id; empty for a root.
    pub parent_span_id: String,
    /// Span name.
    pub name: String,
    /// The resource's `service.name`.
    pub service: String,
    /// Kind.
    pub kind: Kind,
    /// Start, nanoseconds since the epoch.
    pub start_ns: u64,
    /// End, nanoseconds since the epoch.
    pub end_ns: u64,
    /// `Some(message)` when the status is ERROR.
    pub error: Option<String>,
    /// `messaging.destination.name`, when set.
    pub destination: Option<String>,
    /// The spans this one links to.
    pub links: Vec<LinkRecord>,
}

/// Where a link points: a span, possibly in another trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkRecord {
    /// Hex trace id.
    pub trace_id: String,
    /// Hex span id.
    pub span_id: String,
}
