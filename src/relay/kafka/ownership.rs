//! What a route's consumer owns, shared between its loop and librdkafka's
//! rebalance callback. When the group takes partitions away, the callback
//! commits what was settled on them while this member still owns them, and
//! forgets them: no later commit of this member covers a partition another
//! member now reads. (The broker checks a commit against the group's
//! generation, not against who owns the partition: a stale commit would be
//! taken, and roll the new owner's offsets back.)

use std::sync::{Mutex, MutexGuard};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::offsets::OffsetTracker;

/// A route consumer's librdkafka context.
pub(crate) struct Ownership {
    route: String,
    topic: String,
    offsets: Mutex<OffsetTracker>,
    /// Held for the whole of every commit: a revocation waits for a commit
    /// under way, and a commit started later sees the partitions forgotten.
    commit: Mutex<()>,
}

impl Ownership {
    pub(crate) fn new(route: &str, topic: &str) -> Self {
        Self {
            route: route.to_owned(),
            topic: topic.to_owned(),
            offsets: Mutex::default(),
            commit: Mutex::default(),
        }
    }

    /// The offsets of the partitions this member holds.
    pub(crate) fn offsets(&self) -> MutexGuard<'_, OffsetTracker> {
        // A panic elsewhere while holding it leaves the tracker as it was
        // between two calls: still consistent.
        self.offsets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Commits `positions` (partition → next offset to read) synchronously
    /// and returns them, less any partition forgotten since they were
    /// chosen (revoked meanwhile: never committed).
    pub(crate) fn commit<C: Consumer<Self>>(
        &self,
        consumer: &C,
        mut positions: Vec<(i32, i64)>,
    ) -> (Vec<(i32, i64)>, rdkafka::error::KafkaResult<()>) {
        let _committing = self
            .commit
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        {
            let offsets = self.offsets();
            positions.retain(|&(partition, _)| offsets.holds(partition));
        }
        if positions.is_empty() {
            return (positions, Ok(()));
        }
        let result = consumer.commit(&self.list(&positions), CommitMode::Sync);
        (positions, result)
    }

    fn list(&self, positions: &[(i32, i64)]) -> TopicPartitionList {
        let mut list = TopicPartitionList::new();
        for &(partition, next) in positions {
            // Only fails for an offset type the list cannot hold; ours is plain.
            let _ = list.add_partition_offset(&self.topic, partition, Offset::Offset(next));
        }
        list
    }
}

impl ClientContext for Ownership {}

impl ConsumerContext for Ownership {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(list) = rebalance else {
            return;
        };
        let revoked: Vec<i32> = list
            .elements_for_topic(&self.topic)
            .iter()
            .map(|e| e.partition())
            .collect();
        let _committing = self
            .commit
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (last, abandoned) = {
            let mut offsets = self.offsets();
            let last = offsets.settled_positions(&revoked);
            let abandoned = offsets.in_flight_on(&revoked);
            offsets.retain(|p| !revoked.contains(&p));
            (last, abandoned)
        };
        // A lost assignment (the session expired) is another member's
        // already: nothing may be committed for it.
        let committed = if last.is_empty() || consumer.assignment_lost() {
            "nothing".to_owned()
        } else {
            match consumer.commit(&self.list(&last), CommitMode::Sync) {
                Ok(()) => format!("{last:?}"),
                Err(err) => format!("nothing ({err})"),
            }
        };
        tracing::info!(
            route = %self.route,
            stage = "rebalance",
            revoked = ?revoked,
            abandoned,
            "partitions revoked: committed {committed}; messages still in flight on them will be read again by their next owner"
        );
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(list) = rebalance {
            let assigned: Vec<i32> = list
                .elements_for_topic(&self.topic)
                .iter()
                .map(|e| e.partition())
                .collect();
            // Whatever this member knew of them is from an earlier
            // ownership: they are read from their committed offset again.
            self.offsets().retain(|p| !assigned.contains(&p));
            tracing::info!(route = %self.route, stage = "rebalance", assigned = ?assigned, "partitions assigned");
        }
    }
}
