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

pub mod jaeger;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::io::BufRead;

use serde_json::Value;

/// What to show.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Only this trace (hex, case-insensitive).
    pub trace_id: Option<String>,
    /// Only traces with a span of this service.
    pub service: Option<String>,
    /// Only traces with an error span.
    pub errors: bool,
    /// At most this many traces (the earliest first).
    pub limit: Option<usize>,
    /// Draw the traces that links join together, as one journey (and
    /// read every trace, so a selected trace's linked ones are there).
    pub journeys: bool,
}

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
    fn parse(value: &Value) -> Self {
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

    fn label(self) -> &'static str {
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

/// The traces read from a file.
#[derive(Debug, Default)]
pub struct Traces {
    /// Spans per trace id, traces in the order first seen.
    traces: Vec<(String, Vec<SpanRecord>)>,
    /// Lines that were not OTLP/JSON.
    pub bad_lines: usize,
    /// The first bad line's number and why, for the message.
    pub first_bad_line: Option<(usize, String)>,
    /// Whether reading kept one trace only: a link's target missing from
    /// the spans may then be in the file after all.
    one_trace_read: bool,
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
        for (number, line) in reader.lines().enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            let spans = match parse_line(&line) {
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

    /// The traces `options` selects, earliest first.
    pub fn selected(&self, options: &Options) -> Vec<&[SpanRecord]> {
        let wanted = options.trace_id.as_deref().map(str::to_ascii_lowercase);
        let mut chosen: Vec<&[SpanRecord]> = self
            .traces
            .iter()
            .filter(|(id, _)| wanted.as_deref().is_none_or(|w| w == id))
            .map(|(_, spans)| spans.as_slice())
            .filter(|spans| {
                options
                    .service
                    .as_deref()
                    .is_none_or(|s| spans.iter().any(|sp| sp.service == s))
            })
            .filter(|spans| !options.errors || spans.iter().any(|sp| sp.error.is_some()))
            .collect();
        chosen.sort_by_key(|spans| spans.iter().map(|s| s.start_ns).min().unwrap_or(0));
        chosen.truncate(options.limit.unwrap_or(usize::MAX));
        chosen
    }

    /// Every selected trace drawn as a tree (with [`Options::journeys`],
    /// together with the traces linked to it), then a summary line.
    pub fn render(&self, options: &Options, colour: bool) -> String {
        let groups = self.groups(options);
        let mut out = String::new();
        self.draw_groups(&mut out, &groups, Paint(colour));
        let traces: usize = groups.iter().map(Vec::len).sum();
        let spans: usize = groups.iter().flatten().map(|trace| trace.len()).sum();
        let _ = write!(out, "{traces} trace(s), {spans} span(s)");
        if options.journeys {
            let _ = write!(out, " in {} journey(s)", groups.len());
        }
        if self.bad_lines > 0 {
            let _ = write!(out, "; {} bad line(s) skipped", self.bad_lines);
            if let Some((line, why)) = &self.first_bad_line {
                let _ = write!(out, " (first: line {line}: {why})");
            }
        }
        out.push('\n');
        out
    }

    /// Every selected trace drawn as a tree, each followed by a blank line.
    pub fn render_trees(&self, options: &Options, colour: bool) -> String {
        let mut out = String::new();
        self.draw_groups(&mut out, &self.groups(options), Paint(colour));
        out
    }

    /// The selected traces, each alone or (journeys) with every trace
    /// links join it to; earliest first, no trace twice.
    fn groups(&self, options: &Options) -> Vec<Vec<&[SpanRecord]>> {
        let selected = self.selected(options);
        if !options.journeys {
            return selected.into_iter().map(|trace| vec![trace]).collect();
        }
        let journey_of = self.journey_of();
        let mut members: HashMap<usize, Vec<&[SpanRecord]>> = HashMap::new();
        for (id, spans) in &self.traces {
            members
                .entry(journey_of[id.as_str()])
                .or_default()
                .push(spans);
        }
        let mut out = Vec::new();
        for trace in selected {
            if let Some(mut journey) = members.remove(&journey_of[trace[0].trace_id.as_str()]) {
                journey.sort_by_key(|spans| window(spans.iter()).0);
                out.push(journey);
            }
        }
        out
    }

    /// Each trace's journey: the smallest trace index among the traces
    /// its links (either way, transitively) join it to.
    fn journey_of(&self) -> HashMap<&str, usize> {
        let index: HashMap<&str, usize> = self
            .traces
            .iter()
            .enumerate()
            .map(|(i, (id, _))| (id.as_str(), i))
            .collect();
        let mut parent: Vec<usize> = (0..self.traces.len()).collect();
        fn root(parent: &mut [usize], mut at: usize) -> usize {
            while parent[at] != at {
                parent[at] = parent[parent[at]];
                at = parent[at];
            }
            at
        }
        for (from, (_, spans)) in self.traces.iter().enumerate() {
            for link in spans.iter().flat_map(|span| &span.links) {
                if let Some(&to) = index.get(link.trace_id.as_str()) {
                    let (a, b) = (root(&mut parent, from), root(&mut parent, to));
                    parent[a.max(b)] = a.min(b);
                }
            }
        }
        index
            .into_iter()
            .map(|(id, at)| (id, root(&mut parent, at)))
            .collect()
    }

    /// Draws each group: a lone trace as is; a journey under a line of its
    /// own, its traces marked as belonging to it.
    fn draw_groups(&self, out: &mut String, groups: &[Vec<&[SpanRecord]>], paint: Paint) {
        let index = SpanIndex::new(&self.traces, self.one_trace_read);
        for group in groups {
            if let [trace] = group.as_slice() {
                draw_trace(out, trace, &index, paint);
                out.push('\n');
                continue;
            }
            draw_journey_line(out, group, &index, paint);
            for trace in group {
                let mut drawn = String::new();
                draw_trace(&mut drawn, trace, &index, paint);
                for line in drawn.lines() {
                    let _ = writeln!(out, "│ {line}");
                }
                out.push_str("│\n");
            }
            out.push('\n');
        }
    }
}

/// Every span read, by (trace id, span id), and the spans that link to
/// each: parents and both ends of a link are looked up here, across
/// traces.
struct SpanIndex<'a> {
    spans: HashMap<(&'a str, &'a str), &'a SpanRecord>,
    linked_from: HashMap<(&'a str, &'a str), Vec<&'a SpanRecord>>,
    /// What a link whose target was not read says.
    missing: &'static str,
}

impl<'a> SpanIndex<'a> {
    fn new(traces: &'a [(String, Vec<SpanRecord>)], one_trace_read: bool) -> Self {
        let all = || traces.iter().flat_map(|(_, spans)| spans);
        let spans = all()
            .map(|span| ((span.trace_id.as_str(), span.span_id.as_str()), span))
            .collect();
        let mut linked_from: HashMap<_, Vec<&SpanRecord>> = HashMap::new();
        for span in all() {
            for link in &span.links {
                let sources = linked_from
                    .entry((link.trace_id.as_str(), link.span_id.as_str()))
                    .or_default();
                if !sources.iter().any(|s| std::ptr::eq(*s, span)) {
                    sources.push(span);
                }
            }
        }
        for sources in linked_from.values_mut() {
            sources.sort_by(|a, b| (a.start_ns, &a.span_id).cmp(&(b.start_ns, &b.span_id)));
        }
        let missing = if one_trace_read {
            "not read (--journeys reads linked traces)"
        } else {
            "not in file"
        };
        Self {
            spans,
            linked_from,
            missing,
        }
    }

    /// The span a link points to, when it was read.
    fn target<'s>(&'s self, link: &'s LinkRecord) -> Option<&'s SpanRecord> {
        self.span(&link.trace_id, &link.span_id)
    }

    /// A span's parent, when it was read.
    fn parent<'s>(&'s self, span: &'s SpanRecord) -> Option<&'s SpanRecord> {
        self.span(&span.trace_id, &span.parent_span_id)
    }

    fn span<'s>(&'s self, trace_id: &'s str, span_id: &'s str) -> Option<&'s SpanRecord> {
        self.spans.get(&(trace_id, span_id)).copied()
    }

    /// The spans that link to `span`, earliest first.
    fn sources<'s>(&'s self, span: &'s SpanRecord) -> &'s [&'s SpanRecord] {
        self.linked_from
            .get(&(span.trace_id.as_str(), span.span_id.as_str()))
            .map_or(&[], Vec::as_slice)
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

/// ANSI colours when drawing to a terminal, nothing otherwise.
#[derive(Clone, Copy)]
struct Paint(bool);

impl Paint {
    fn wrap(self, code: &str, text: &str) -> String {
        if self.0 {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }
    fn service(self, name: &str) -> String {
        const PALETTE: [&str; 6] = ["36", "35", "34", "33", "32", "96"];
        let hash = name
            .bytes()
            .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b.into()));
        self.wrap(PALETTE[hash % PALETTE.len()], name)
    }
    fn dim(self, text: &str) -> String {
        self.wrap("2", text)
    }
    fn error(self, text: &str) -> String {
        self.wrap("1;31", text)
    }
}

/// The tree column is as wide as the trace's longest line, within these.
const TREE_MIN: usize = 48;
const TREE_MAX: usize = 110;
const BAR_WIDTH: usize = 30;

fn draw_trace(out: &mut String, spans: &[SpanRecord], index: &SpanIndex<'_>, paint: Paint) {
    let (start, end) = window(spans.iter());
    // Within the trace, a message waits between its send and its read.
    let waits = spans
        .iter()
        .filter_map(|span| broker_wait(index.parent(span)?, span));
    let _ = writeln!(
        out,
        "trace {}  {}",
        spans[0].trace_id,
        summary(spans.iter(), waits, paint)
    );
    let mut children: BTreeMap<&str, Vec<&SpanRecord>> = BTreeMap::new();
    let mut roots = Vec::new();
    for span in spans {
        if index.parent(span).is_none() {
            roots.push(span);
        } else {
            children
                .entry(span.parent_span_id.as_str())
                .or_default()
                .push(span);
        }
    }
    roots.sort_by_key(|s| s.start_ns);
    for list in children.values_mut() {
        list.sort_by_key(|s| s.start_ns);
    }
    let mut width = TREE_MIN;
    for root in &roots {
        width = width.max(widest(root, 0, &children));
    }
    let layout = Layout {
        axis: Axis { start, end },
        width: width.min(TREE_MAX),
        paint,
        index,
    };
    for root in roots {
        draw_span(out, root, None, 0, &children, &layout);
    }
}

struct Layout<'a> {
    axis: Axis,
    width: usize,
    paint: Paint,
    index: &'a SpanIndex<'a>,
}

/// The first line of a journey: its traces, links, services, wall time
/// and the time its messages waited in brokers, through links included.
fn draw_journey_line(
    out: &mut String,
    traces: &[&[SpanRecord]],
    index: &SpanIndex<'_>,
    paint: Paint,
) {
    let spans = || traces.iter().flat_map(|trace| trace.iter());
    let members: HashSet<&str> = traces.iter().map(|t| t[0].trace_id.as_str()).collect();
    let link_count = spans()
        .flat_map(|span| &span.links)
        .filter(|link| members.contains(link.trace_id.as_str()))
        .count();
    let waits = spans().flat_map(|span| {
        let linked = span.links.iter().filter_map(|link| index.target(link));
        index
            .parent(span)
            .into_iter()
            .chain(linked)
            .filter_map(move |sender| broker_wait(sender, span))
    });
    let _ = writeln!(
        out,
        "journey  {} traces joined by {link_count} link(s)  {}",
        traces.len(),
        summary(spans(), waits, paint)
    );
}

/// `checkout → tracebridge  5 span(s), 260.0 ms, 192.0 ms waiting in
/// brokers (73 %), 1 error(s)`: the services in order, the span count, the
/// wall time, the broker time within it, and the errors.
fn summary<'a>(
    spans: impl Iterator<Item = &'a SpanRecord> + Clone,
    waits: impl Iterator<Item = (u64, u64)>,
    paint: Paint,
) -> String {
    let (start, end) = window(spans.clone());
    let errors = spans.clone().filter(|s| s.error.is_some()).count();
    format!(
        "{}  {} span(s), {}{}{}",
        services(spans.clone()).join(" → "),
        spans.count(),
        duration(end - start),
        in_brokers(waits, (start, end)),
        if errors > 0 {
            paint.error(&format!(", {errors} error(s)"))
        } else {
            String::new()
        }
    )
}

/// The earliest start and latest end of `spans`.
fn window<'a>(spans: impl Iterator<Item = &'a SpanRecord>) -> (u64, u64) {
    spans.fold((u64::MAX, 0), |(start, end), span| {
        (
            start.min(span.start_ns),
            end.max(span.end_ns.max(span.start_ns)),
        )
    })
}

/// Services in the order their first span started.
fn services<'a>(spans: impl Iterator<Item = &'a SpanRecord>) -> Vec<&'a str> {
    let mut ordered: Vec<&SpanRecord> = spans.collect();
    ordered.sort_by_key(|s| s.start_ns);
    let mut seen = HashSet::new();
    ordered
        .into_iter()
        .map(|s| s.service.as_str())
        .filter(|s| seen.insert(*s))
        .collect()
}

/// When `consumer` read what `producer` sent: the interval the message
/// waited in the broker, from the end of the send to the start of the read.
/// The reader is a CONSUMER (process) span or a CLIENT one (a receive or
/// poll, as semantic conventions 1.27 on make them).
fn broker_wait(producer: &SpanRecord, consumer: &SpanRecord) -> Option<(u64, u64)> {
    (producer.kind == Kind::Producer
        && matches!(consumer.kind, Kind::Consumer | Kind::Client)
        && consumer.start_ns > producer.end_ns
        && same_destination(producer, consumer))
    .then_some((producer.end_ns, consumer.start_ns))
}

/// `, 180.0 ms waiting in brokers (69 %)`: the wall time within `window`
/// during which at least one message waited (overlapping waits, as in a
/// batch, count once); empty when none did.
fn in_brokers(waits: impl Iterator<Item = (u64, u64)>, window: (u64, u64)) -> String {
    let mut intervals: Vec<(u64, u64)> = waits
        .map(|(from, to)| (from.max(window.0), to.min(window.1)))
        .filter(|(from, to)| from < to)
        .collect();
    intervals.sort_unstable();
    let mut total = 0;
    let mut covered_to = 0;
    for (from, to) in intervals {
        let from = from.max(covered_to);
        if to > from {
            total += to - from;
            covered_to = to;
        }
    }
    if total == 0 {
        return String::new();
    }
    let wall = (window.1 - window.0).max(1);
    format!(
        ", {} waiting in brokers ({} %)",
        duration(total),
        (total as u128 * 100 / wall as u128)
    )
}

/// The longest tree label under (and including) `span`.
fn widest(span: &SpanRecord, depth: usize, children: &BTreeMap<&str, Vec<&SpanRecord>>) -> usize {
    let own = label(span, depth, false).chars().count();
    children
        .get(span.span_id.as_str())
        .into_iter()
        .flatten()
        .map(|child| widest(child, depth + 1, children))
        .fold(own, usize::max)
}

fn label(span: &SpanRecord, depth: usize, orphan: bool) -> String {
    format!(
        "{}{}  {}  {}{}",
        "  ".repeat(depth + 1),
        span.service,
        span.name,
        span.kind.label(),
        if orphan { "  (parent not in file)" } else { "" }
    )
}

#[derive(Clone, Copy)]
struct Axis {
    start: u64,
    end: u64,
}

impl Axis {
    /// `[  ███      ]` for the span's place on the trace's time axis.
    fn bar(self, span: &SpanRecord) -> String {
        let total = (self.end - self.start).max(1) as f64;
        let cell =
            |t: u64| (((t.saturating_sub(self.start)) as f64 / total) * BAR_WIDTH as f64) as usize;
        let from = cell(span.start_ns).min(BAR_WIDTH - 1);
        let to = cell(span.end_ns.max(span.start_ns)).clamp(from + 1, BAR_WIDTH);
        format!(
            "{}{}{}",
            " ".repeat(from),
            "█".repeat(to - from),
            " ".repeat(BAR_WIDTH - to)
        )
    }
}

fn draw_span(
    out: &mut String,
    span: &SpanRecord,
    parent: Option<&SpanRecord>,
    depth: usize,
    children: &BTreeMap<&str, Vec<&SpanRecord>>,
    layout: &Layout<'_>,
) {
    let paint = layout.paint;
    let indent = "  ".repeat(depth + 1);
    // Only for the same message: a span joined by request id under
    // another message's send (other destination) did not wait there.
    if let Some(parent) = parent
        && let Some((sent, read)) = broker_wait(parent, span)
    {
        let line = format!(
            "{indent}⋯ waited {}{}",
            duration(read - sent),
            place(parent, span)
        );
        let _ = writeln!(out, "{}", paint.dim(&line));
    }
    let orphan = !span.parent_span_id.is_empty() && parent.is_none();
    let width = layout.width;
    let padded = format!("{:<width$}", label(span, depth, orphan));
    // Colour after padding, so escape codes do not break the alignment.
    let shown = padded.replacen(&span.service, &paint.service(&span.service), 1);
    let status = match &span.error {
        Some(message) if message.is_empty() => paint.error("ERROR"),
        Some(message) => paint.error(&format!("ERROR {message}")),
        None => String::new(),
    };
    let _ = writeln!(
        out,
        "{shown} {:>9}  |{}|  {status}",
        duration(span.end_ns.saturating_sub(span.start_ns)),
        layout.axis.bar(span)
    );
    draw_links(out, span, &format!("{indent}  "), layout);
    for child in children.get(span.span_id.as_str()).into_iter().flatten() {
        draw_span(out, child, Some(span), depth + 1, children, layout);
    }
}

/// Under a span: where each of its links points, and which spans link
/// to it, each with the other end's service, name and kind when read.
fn draw_links(out: &mut String, span: &SpanRecord, indent: &str, layout: &Layout<'_>) {
    let index = layout.index;
    for link in &span.links {
        let target = index.target(link);
        let (what, waited) = match target {
            Some(sender) => (
                describe(sender),
                broker_wait(sender, span)
                    .map(|(sent, read)| {
                        format!("; waited {}{}", duration(read - sent), place(sender, span))
                    })
                    .unwrap_or_default(),
            ),
            None => (index.missing.to_owned(), String::new()),
        };
        let line = format!(
            "{indent}↗ links to {}: {what}{waited}",
            whereabouts(span, &link.trace_id, &link.span_id)
        );
        let _ = writeln!(out, "{}", layout.paint.dim(&line));
    }
    for source in index.sources(span) {
        let line = format!(
            "{indent}↙ linked from {}: {}",
            whereabouts(span, &source.trace_id, &source.span_id),
            describe(source)
        );
        let _ = writeln!(out, "{}", layout.paint.dim(&line));
    }
}

/// `span 1111111111111111 in this trace` or `trace … span …`.
fn whereabouts(here: &SpanRecord, trace_id: &str, span_id: &str) -> String {
    if trace_id == here.trace_id {
        format!("span {span_id} in this trace")
    } else {
        format!("trace {trace_id} span {span_id}")
    }
}

/// `checkout  send orders  PRODUCER`.
fn describe(span: &SpanRecord) -> String {
    format!("{}  {}  {}", span.service, span.name, span.kind.label())
}

/// ` in orders`: where a message waited, when either span says.
fn place(producer: &SpanRecord, consumer: &SpanRecord) -> String {
    consumer
        .destination
        .as_deref()
        .or(producer.destination.as_deref())
        .map(|d| format!(" in {d}"))
        .unwrap_or_default()
}

/// Whether a CONSUMER span read what its PRODUCER parent sent: the same
/// destination, or an AMQP queue bound to the exchange the parent
/// published to (`exchange:key:queue` under `exchange:key`); unknown
/// destinations are given the benefit of the doubt.
fn same_destination(producer: &SpanRecord, consumer: &SpanRecord) -> bool {
    match (&producer.destination, &consumer.destination) {
        (Some(sent), Some(read)) => read == sent || read.starts_with(&format!("{sent}:")),
        _ => true,
    }
}

/// `412 µs`, `12.3 ms`, `1.25 s`.
fn duration(ns: u64) -> String {
    let us = ns as f64 / 1_000.0;
    if us < 1_000.0 {
        format!("{us:.0} µs")
    } else if us < 1_000_000.0 {
        format!("{:.1} ms", us / 1_000.0)
    } else {
        format!("{:.2} s", us / 1_000_000.0)
    }
}
