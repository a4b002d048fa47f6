//! Drawing: each trace as a tree with its waterfall bars, journeys under a
//! line of their own, and the summary line closing the view.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;

use super::index::SpanIndex;
use super::links::draw_links;
use super::paint::Paint;
use super::summary::{duration, summary, window};
use super::waits::{broker_wait, place};
use super::{Options, SpanRecord, Traces};

impl Traces {
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

pub(super) struct Layout<'a> {
    axis: Axis,
    width: usize,
    pub(super) paint: Paint,
    pub(super) index: &'a SpanIndex<'a>,
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
