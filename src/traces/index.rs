//! Every span read, by trace and span id, and the spans linking to each
//! ([`SpanIndex`]): parents and both ends of a link, across traces.

use std::collections::HashMap;

use super::{LinkRecord, SpanRecord};

/// Every span read, by (trace id, span id), and the spans that link to
/// each: parents and both ends of a link are looked up here, across
/// traces.
pub(super) struct SpanIndex<'a> {
    spans: HashMap<(&'a str, &'a str), &'a SpanRecord>,
    linked_from: HashMap<(&'a str, &'a str), Vec<&'a SpanRecord>>,
    /// What a link whose target was not read says.
    pub(super) missing: &'static str,
}

impl<'a> SpanIndex<'a> {
    pub(super) fn new(traces: &'a [(String, Vec<SpanRecord>)], one_trace_read: bool) -> Self {
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
    pub(super) fn target<'s>(&'s self, link: &'s LinkRecord) -> Option<&'s SpanRecord> {
        self.span(&link.trace_id, &link.span_id)
    }

    /// A span's parent, when it was read.
    pub(super) fn parent<'s>(&'s self, span: &'s SpanRecord) -> Option<&'s SpanRecord> {
        self.span(&span.trace_id, &span.parent_span_id)
    }

    fn span<'s>(&'s self, trace_id: &'s str, span_id: &'s str) -> Option<&'s SpanRecord> {
        self.spans.get(&(trace_id, span_id)).copied()
    }

    /// The spans that link to `span`, earliest first.
    pub(super) fn sources<'s>(&'s self, span: &'s SpanRecord) -> &'s [&'s SpanRecord] {
        self.linked_from
            .get(&(span.trace_id.as_str(), span.span_id.as_str()))
            .map_or(&[], Vec::as_slice)
    }
}
