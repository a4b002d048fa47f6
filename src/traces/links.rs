//! The lines under a span with links: where each link points, which spans
//! link to it, and how long a message waited through a link.

use std::fmt::Write as _;

use super::SpanRecord;
use super::draw::Layout;
use super::summary::duration;
use super::waits::{broker_wait, place};

/// Under a span: where each of its links points, and which spans link
/// to it, each with the other end's service, name and kind when read.
pub(super) fn draw_links(out: &mut String, span: &SpanRecord, indent: &str, layout: &Layout<'_>) {
    let index = layout.index;
    // A link to the span's own parent (a joined hop links the context it
    // is the child of) says nothing the tree does not.
    let to_parent = |trace_id: &str, span_id: &str, child: &SpanRecord| {
        trace_id == child.trace_id && span_id == child.parent_span_id
    };
    for link in span
        .links
        .iter()
        .filter(|link| !to_parent(&link.trace_id, &link.span_id, span))
    {
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
    for source in index
        .sources(span)
        .iter()
        .filter(|source| !to_parent(&span.trace_id, &span.span_id, source))
    {
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
