//! Which traces to show ([`Options`]): the filters, the earliest first, and
//! the journeys that links join traces into.

use std::collections::HashMap;

use super::summary::window;
use super::{SpanRecord, Traces};

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

impl Traces {
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

    /// The selected traces, each alone or (journeys) with every trace
    /// links join it to; earliest first, no trace twice.
    pub(super) fn groups(&self, options: &Options) -> Vec<Vec<&[SpanRecord]>> {
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
}
