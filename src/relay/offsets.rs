//! Which Kafka offsets may be committed: per partition, only up to the
//! highest CONTIGUOUS confirmed offset, so a crash never skips a message
//! whose relay had not been confirmed yet (at-least-once).

use std::collections::{BTreeMap, BTreeSet};

/// Tracks offsets in flight and confirmed, per partition.
#[derive(Debug, Default)]
pub(crate) struct OffsetTracker {
    partitions: BTreeMap<i32, Partition>,
}

#[derive(Debug, Default)]
struct Partition {
    /// Received, not yet confirmed.
    in_flight: BTreeSet<i64>,
    /// One past the highest confirmed offset.
    next_after_done: Option<i64>,
    /// The offset last committed (Kafka commits "the next offset to read").
    committed: Option<i64>,
}

impl OffsetTracker {
    /// A message was received and is now in flight.
    pub(crate) fn received(&mut self, partition: i32, offset: i64) {
        self.partitions
            .entry(partition)
            .or_default()
            .in_flight
            .insert(offset);
    }

    /// A message's relay is finished (delivered or dead-lettered).
    pub(crate) fn done(&mut self, partition: i32, offset: i64) {
        let p = self.partitions.entry(partition).or_default();
        p.in_flight.remove(&offset);
        p.next_after_done = Some(p.next_after_done.map_or(offset + 1, |n| n.max(offset + 1)));
    }

    /// Offsets to commit now (partition → next offset to read), each
    /// higher than the last commit; marks them committed.
    pub(crate) fn committable(&mut self) -> Vec<(i32, i64)> {
        let mut out = Vec::new();
        for (&partition, p) in &mut self.partitions {
            // Everything below the lowest offset still in flight is done.
            let safe = match p.in_flight.first() {
                Some(&lowest) => Some(lowest),
                None => p.next_after_done,
            };
            if let Some(safe) = safe
                && p.committed.is_none_or(|c| safe > c)
                && p.next_after_done.is_some()
            {
                p.committed = Some(safe);
                out.push((partition, safe));
            }
        }
        out
    }

    /// Makes the next [`OffsetTracker::committable`] return every
    /// partition's position again (for a final synchronous commit).
    pub(crate) fn recommit_all(&mut self) {
        for p in self.partitions.values_mut() {
            p.committed = None;
        }
    }

    /// Messages still in flight.
    pub(crate) fn in_flight(&self) -> usize {
        self.partitions.values().map(|p| p.in_flight.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_only_up_to_the_first_gap() {
        let mut t = OffsetTracker::default();
        for o in 10..15 {
            t.received(0, o);
        }
        t.done(0, 12);
        t.done(0, 13);
        assert_eq!(
            t.committable(),
            vec![(0, 10)],
            "10 is still in flight: nothing past it"
        );
        t.done(0, 10);
        assert_eq!(t.committable(), vec![(0, 11)]);
        t.done(0, 11);
        assert_eq!(t.committable(), vec![(0, 14)], "11..=13 done, 14 in flight");
        t.done(0, 14);
        assert_eq!(t.committable(), vec![(0, 15)]);
        assert_eq!(t.committable(), vec![], "nothing new");
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn partitions_are_independent() {
        let mut t = OffsetTracker::default();
        t.received(0, 5);
        t.received(1, 7);
        t.received(1, 8);
        t.done(1, 8);
        t.done(0, 5);
        let mut c = t.committable();
        c.sort();
        assert_eq!(c, vec![(0, 6), (1, 7)]);
        assert_eq!(t.in_flight(), 1, "partition 1 offset 7 still in flight");
    }

    #[test]
    fn nothing_is_committed_before_anything_is_done() {
        let mut t = OffsetTracker::default();
        t.received(0, 0);
        assert_eq!(t.committable(), vec![]);
    }
}
