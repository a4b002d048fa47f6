//! The time a message waited in a broker: between a PRODUCER span and the
//! span that read what it sent, for the same destination.

use super::summary::duration;
use super::{Kind, SpanRecord};

/// When `consumer` read what `producer` sent: the interval the message
/// waited in the broker, from the end of the send to the start of the read.
/// The reader is a CONSUMER (process) span or a CLIENT one (a receive or
/// poll, as semantic conventions 1.27 on make them).
pub(super) fn broker_wait(producer: &SpanRecord, consumer: &SpanRecord) -> Option<(u64, u64)> {
    (producer.kind == Kind::Producer
        && matches!(consumer.kind, Kind::Consumer | Kind::Client)
        && consumer.start_ns > producer.end_ns
        && same_destination(producer, consumer))
    .then_some((producer.end_ns, consumer.start_ns))
}

/// `, 180.0 ms waiting in brokers (69 %)`: the wall time within `window`
/// during which at least one message waited (overlapping waits, as in a
/// batch, count once); empty when none did.
pub(super) fn in_brokers(waits: impl Iterator<Item = (u64, u64)>, window: (u64, u64)) -> String {
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

/// ` in orders`: where a message waited, when either span says.
pub(super) fn place(producer: &SpanRecord, consumer: &SpanRecord) -> String {
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
