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
    let tree = Tree::of(spans, index);
    if tree.in_cycles > 0 || tree.repeated_ids > 0 {
        let _ = writeln!(
            out,
            "{}",
            paint.error(&format!(
                "  this trace is malformed: {} span(s) in a cycle of parents, {} repeated span id(s)",
                tree.in_cycles, tree.repeated_ids
            ))
        );
    }
    let width = tree
        .placed
        .iter()
        .map(|p| label(p).chars().count())
        .fold(TREE_MIN, usize::max);
    let layout = Layout {
        axis: Axis { start, end },
        width: width.min(TREE_MAX),
        paint,
        index,
    };
    for placed in &tree.placed {
        draw_span(out, placed, &layout);
    }
}

/// How deep the tree is indented: deeper spans are drawn at this depth,
/// with their real depth in the label (a 40 000-span chain of parents
/// would otherwise print gigabytes of spaces).
const INDENT_MAX: usize = 32;

/// One span's place in the drawn tree.
struct Placed<'s> {
    span: &'s SpanRecord,
    /// Its parent in the tree (`None` for a root).
    parent: Option<&'s SpanRecord>,
    depth: usize,
    /// Why it is drawn at the root although its parent is in the file.
    note: Option<&'static str>,
}

impl Placed<'_> {
    /// What the line says of the span's place: in a cycle, or its parent
    /// not in the file.
    fn note(&self) -> Option<&'static str> {
        let orphan = self.parent.is_none() && !self.span.parent_span_id.is_empty();
        self.note.or(orphan.then_some("parent not in file"))
    }
}

/// A trace's spans in drawing order, each once, found without recursion:
/// children under their parent by start time, and spans whose parents
/// form a cycle (possible in a hostile or broken file, with repeated span
/// ids) drawn at the root, marked, rather than lost or looped over.
struct Tree<'s> {
    placed: Vec<Placed<'s>>,
    in_cycles: usize,
    repeated_ids: usize,
}

impl<'s> Tree<'s> {
    fn of(spans: &'s [SpanRecord], index: &SpanIndex<'_>) -> Self {
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
        let ids: HashSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
        let mut tree = Tree {
            placed: Vec::with_capacity(spans.len()),
            in_cycles: 0,
            repeated_ids: spans.len() - ids.len(),
        };
        let mut drawn: HashSet<*const SpanRecord> = HashSet::with_capacity(spans.len());
        for root in roots {
            tree.walk(root, None, &children, &mut drawn);
        }
        // What no root reached has an ancestor in a cycle.
        let mut left: Vec<&SpanRecord> = spans
            .iter()
            .filter(|s| !drawn.contains(&std::ptr::from_ref(*s)))
            .collect();
        left.sort_by_key(|s| s.start_ns);
        for span in left {
            if !drawn.contains(&std::ptr::from_ref(span)) {
                let before = tree.placed.len();
                tree.walk(span, Some("in a cycle of parents"), &children, &mut drawn);
                tree.in_cycles += tree.placed.len() - before;
            }
        }
        tree
    }

    /// Places `root` and everything under it not placed yet, depth first.
    fn walk(
        &mut self,
        root: &'s SpanRecord,
        note: Option<&'static str>,
        children: &BTreeMap<&str, Vec<&'s SpanRecord>>,
        drawn: &mut HashSet<*const SpanRecord>,
    ) {
        let mut stack = vec![(root, None, 0, note)];
        while let Some((span, parent, depth, note)) = stack.pop() {
            if !drawn.insert(std::ptr::from_ref(span)) {
                continue;
            }
            self.placed.push(Placed {
                span,
                parent,
                depth,
                note,
            });
            let under = children.get(span.span_id.as_str()).into_iter().flatten();
            stack.extend(
                under
                    .rev()
                    .map(|child| (*child, Some(span), depth + 1, None)),
            );
        }
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

/// A span's line in the tree, up to its duration: indentation (capped at
/// [`INDENT_MAX`], the real depth written beyond it), service, name, kind
/// and the note, if any.
fn label(placed: &Placed<'_>) -> String {
    let Placed { span, depth, .. } = *placed;
    let deep = if depth > INDENT_MAX {
        format!("[depth {depth}] ")
    } else {
        String::new()
    };
    let note = placed
        .note()
        .map(|n| format!("  ({n})"))
        .unwrap_or_default();
    format!(
        "{}{deep}{}  {}  {}{note}",
        "  ".repeat(depth.min(INDENT_MAX) + 1),
        span.service,
        span.name,
        span.kind.label(),
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

fn draw_span(out: &mut String, placed: &Placed<'_>, layout: &Layout<'_>) {
    let Placed {
        span,
        parent,
        depth,
        ..
    } = *placed;
    let paint = layout.paint;
    let indent = "  ".repeat(depth.min(INDENT_MAX) + 1);
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
    let width = layout.width;
    let padded = format!("{:<width$}", label(placed));
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
}
