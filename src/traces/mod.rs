//! `tracebridge traces FILE`: trace trees in the terminal, from OTLP/JSON
//! lines (tracebridge's span file, or the OpenTelemetry Collector's file
//! exporter).
//!
//! Reading streams the file line by line and keeps one small record per
//! span (never the JSON), grouped by trace; filters apply while reading, so
//! `--trace-id` over a huge file holds one trace. Lines that are not OTLP
//! JSON are skipped and counted.
//!
//! Drawing: each trace is a tree (children by start time) with service,
//! span name, kind, duration, a waterfall bar on the trace's time axis and
//! the status. Where a CONSUMER span follows a PRODUCER span, the time the
//! message waited in the broker is a line of its own. Spans whose parent is
//! not in the file are drawn at the root, marked.
//!
//! Any file is drawn, never a crash or a hang: lines that are not UTF-8 or
//! not OTLP/JSON are skipped and counted; trees are walked without
//! recursion, each span once, so a cycle of parents (possible only with
//! repeated span ids) is drawn at the root, marked, and reported on the
//! trace's line; indentation stops at 32 levels, deeper spans say their
//! depth. A fuzz target (`fuzz/fuzz_targets/traces.rs`) holds it to that.
//!
//! One concern per file:
//!
//! * `record.rs`: one span as the view keeps it ([`SpanRecord`]);
//! * `read.rs`: OTLP/JSON lines into records, by trace ([`Traces::read`]);
//! * `select.rs`: which traces to show ([`Options`]), and journeys;
//! * `index.rs`: every span by id, for parents and both ends of links;
//! * `draw.rs`: the trees and their waterfall bars, with `links.rs` (the
//!   lines under a linked span), `summary.rs` (the summary lines),
//!   `waits.rs` (time in brokers) and `paint.rs` (colours);
//! * `jaeger.rs`: the same traces read back from Jaeger's query API.
//!
//! ```
//! use tracebridge::traces::{Options, Traces};
//!
//! // One OTLP/JSON request per line.
//! let line = concat!(
//!     r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"checkout"}}]},"#,
//!     r#""scopeSpans":[{"spans":[{"traceId":"4bf92f3577b34da6a3ce929d0e0e4736","spanId":"00f067aa0ba902b7","#,
//!     r#""name":"send orders","kind":4,"startTimeUnixNano":"1000000","endTimeUnixNano":"3000000"}]}]}]}"#,
//! );
//! let traces = Traces::read(line.as_bytes(), &Options::default()).unwrap();
//! let text = traces.render(&Options::default(), false);
//! assert!(text.contains("checkout  send orders  PRODUCER"), "{text}");
//! assert_eq!(traces.bad_lines, 0);
//! ```

mod draw;
mod index;
pub mod jaeger;
mod links;
mod paint;
mod read;
mod record;
mod select;
mod summary;
mod waits;

pub use read::Traces;
pub use record::{Kind, LinkRecord, SpanRecord};
pub use select::Options;
