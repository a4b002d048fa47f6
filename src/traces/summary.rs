//! A trace's or journey's summary line — services, spans, wall time, time
//! in brokers, errors — and durations as text.

use std::collections::HashSet;

use super::SpanRecord;
use super::paint::Paint;
use super::waits::in_brokers;

/// `checkout → tracebridge  5 span(s), 260.0 ms, 192.0 ms waiting in
/// brokers (73 %), 1 error(s)`: the services in order, the span count, the
/// wall time, the broker time within it, and the errors.
pub(super) fn summary<'a>(
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
pub(super) fn window<'a>(spans: impl Iterator<Item = &'a SpanRecord>) -> (u64, u64) {
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

/// `412 µs`, `12.3 ms`, `1.25 s`.
pub(super) fn duration(ns: u64) -> String {
    let us = ns as f64 / 1_000.0;
    if us < 1_000.0 {
        format!("{us:.0} µs")
    } else if us < 1_000_000.0 {
        format!("{:.1} ms", us / 1_000.0)
    } else {
        format!("{:.2} s", us / 1_000_000.0)
    }
}
