//! Which Kafka offsets may be committed, and how many messages a crash
//! could re-send. Per partition, a commit goes only up to the highest
//! CONTIGUOUS confirmed offset, so a crash never skips a message whose relay
//! had not been confirmed yet (at-least-once); and a message counts against
//! the window until a commit covering it has been acknowledged by the
//! broker, so a crash re-sends at most the window (bounded duplicates).

use std::collections::{BTreeMap, BTreeSet};

/// Tracks offsets received, confirmed and committed, per partition.
#[derive(Debug, Default)]
pub(crate) struct OffsetTracker {
    partitions: BTreeMap<i32, Partition>,
}

#[derive(Debug, Default)]
struct Partition {
    /// Received, not yet confirmed.
    in_flight: BTreeSet<i64>,
    /// Received and not yet covered by an acknowledged commit: what a crash
    /// now would make the next owner read again.
    unsettled: BTreeSet<i64>,
    /// One past the highest confirmed offset.
    next_after_done: Option<i64>,
    /// The offset last handed to a commit (Kafka commits "the next offset
    /// to read").
    requested: Option<i64>,
    /// The offset the broker last acknowledged as committed.
    acknowledged: Option<i64>,
}

impl OffsetTracker {
    /// A message was received and is now in flight.
    pub(crate) fn received(&mut self, partition: i32, offset: i64) {
        let p = self.partitions.entry(partition).or_default();
        p.in_flight.insert(offset);
        p.unsettled.insert(offset);
    }

    /// A message's relay is finished (delivered or dead-lettered). An
    /// offset that is not in flight (its partition was revoked and
    /// forgotten meanwhile) is ignored: it must not move a commit.
    pub(crate) fn done(&mut self, partition: i32, offset: i64) {
        let Some(p) = self.partitions.get_mut(&partition) else {
            return;
        };
        if !p.in_flight.remove(&offset) {
            return;
        }
        p.next_after_done = Some(p.next_after_done.map_or(offset + 1, |n| n.max(offset + 1)));
    }

    /// Offsets to commit now (partition → next offset to read), each
    /// higher than the last one requested; marks them requested.
    pub(crate) fn committable(&mut self) -> Vec<(i32, i64)> {
        let mut out = Vec::new();
        for (&partition, p) in &mut self.partitions {
            // Everything below the lowest offset still in flight is done.
            let safe = match p.in_flight.first() {
                Some(&lowest) => Some(lowest),
                None => p.next_after_done,
            };
            if let Some(safe) = safe
                && p.requested.is_none_or(|c| safe > c)
                && p.next_after_done.is_some()
            {
                p.requested = Some(safe);
                out.push((partition, safe));
            }
        }
        out
    }

    /// The broker acknowledged a commit of `next` on `partition`: what lies
    /// below it no longer counts against the window.
    pub(crate) fn acknowledged(&mut self, partition: i32, next: i64) {
        if let Some(p) = self.partitions.get_mut(&partition) {
            p.unsettled = p.unsettled.split_off(&next);
            p.acknowledged = Some(p.acknowledged.map_or(next, |a| a.max(next)));
        }
    }

    /// A commit failed: the next [`OffsetTracker::committable`] asks again.
    pub(crate) fn commit_failed(&mut self, partition: i32) {
        if let Some(p) = self.partitions.get_mut(&partition) {
            p.requested = p.acknowledged;
        }
    }

    /// Forgets partitions the consumer no longer holds (a rebalance gave
    /// them to another member, which reads them from the last commit).
    pub(crate) fn retain(&mut self, held: impl Fn(i32) -> bool) {
        self.partitions.retain(|&partition, _| held(partition));
    }

    /// What is settled on `partitions` (partition → next offset to read),
    /// whatever was requested before: the last commit before they are
    /// given up. Partitions with nothing done are left out.
    pub(crate) fn settled_positions(&self, partitions: &[i32]) -> Vec<(i32, i64)> {
        partitions
            .iter()
            .filter_map(|partition| {
                let p = self.partitions.get(partition)?;
                p.next_after_done?;
                let safe = p.in_flight.first().copied().or(p.next_after_done)?;
                Some((*partition, safe))
            })
            .collect()
    }

    /// Makes the next [`OffsetTracker::committable`] return every
    /// partition's position again (for a final synchronous commit).
    pub(crate) fn recommit_all(&mut self) {
        for p in self.partitions.values_mut() {
            p.requested = None;
        }
    }

    /// Whether `partition` is tracked (held, and not forgotten).
    pub(crate) fn holds(&self, partition: i32) -> bool {
        self.partitions.contains_key(&partition)
    }

    /// Messages in flight on `partitions`.
    pub(crate) fn in_flight_on(&self, partitions: &[i32]) -> usize {
        partitions
            .iter()
            .filter_map(|p| self.partitions.get(p))
            .map(|p| p.in_flight.len())
            .sum()
    }

    /// Messages still in flight.
    pub(crate) fn in_flight(&self) -> usize {
        self.partitions.values().map(|p| p.in_flight.len()).sum()
    }

    /// Messages a crash now would re-send: in flight, or confirmed but not
    /// yet covered by an acknowledged commit. The source reads no more
    /// while this is at the window.
    pub(crate) fn unsettled(&self) -> usize {
        self.partitions.values().map(|p| p.unsettled.len()).sum()
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

    #[test]
    fn a_message_counts_against_the_window_until_its_commit_is_acknowledged() {
        let mut t = OffsetTracker::default();
        for o in 0..4 {
            t.received(0, o);
        }
        for o in 0..4 {
            t.done(0, o);
        }
        assert_eq!(t.in_flight(), 0);
        assert_eq!(
            t.unsettled(),
            4,
            "confirmed, but a crash would re-send them"
        );
        assert_eq!(t.committable(), vec![(0, 4)]);
        assert_eq!(t.unsettled(), 4, "requested is not acknowledged");
        t.acknowledged(0, 4);
        assert_eq!(t.unsettled(), 0);
    }

    #[test]
    fn a_failed_commit_is_asked_again() {
        let mut t = OffsetTracker::default();
        t.received(0, 0);
        t.done(0, 0);
        assert_eq!(t.committable(), vec![(0, 1)]);
        assert_eq!(t.committable(), vec![]);
        t.commit_failed(0);
        assert_eq!(t.committable(), vec![(0, 1)], "retried");
    }

    #[test]
    fn settled_positions_ignore_what_was_requested() {
        let mut t = OffsetTracker::default();
        for o in 0..3 {
            t.received(0, o);
        }
        t.received(1, 9);
        t.done(0, 0);
        t.done(0, 2);
        assert_eq!(t.committable(), vec![(0, 1)]);
        assert_eq!(
            t.settled_positions(&[0, 1, 2]),
            vec![(0, 1)],
            "1 in flight; partition 1 has nothing done, 2 is unknown"
        );
    }

    #[test]
    fn a_partition_forgotten_and_assigned_again_commits_from_scratch() {
        // The freeze of issue 24: a member that held partition 0 up to
        // 5 502 gets it back after another member rolled its commit back
        // to 502; it reads 502.. again and must commit them.
        let mut t = OffsetTracker::default();
        t.received(0, 5_501);
        t.done(0, 5_501);
        assert_eq!(t.committable(), vec![(0, 5_502)]);
        t.acknowledged(0, 5_502);
        t.retain(|p| p != 0);
        for o in 502..600 {
            t.received(0, o);
            t.done(0, o);
        }
        assert_eq!(t.committable(), vec![(0, 600)]);
        t.acknowledged(0, 600);
        assert_eq!(t.unsettled(), 0, "nothing holds the window");
    }

    #[test]
    fn a_revoked_partition_is_forgotten_and_its_late_completions_move_nothing() {
        let mut t = OffsetTracker::default();
        t.received(3, 100);
        t.retain(|p| p != 3);
        assert_eq!(t.unsettled(), 0);
        t.done(3, 100);
        assert_eq!(
            t.committable(),
            vec![],
            "an offset not in flight commits nothing"
        );
        t.received(3, 50);
        t.done(3, 100);
        assert_eq!(
            t.committable(),
            vec![],
            "nor on the partition received again"
        );
    }
}
