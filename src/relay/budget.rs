//! How many bytes a route may hold in flight: messages read and not yet
//! settled. The message window (`max_in_flight`) alone let 1 024 messages
//! of 100 KB — each also copied into the sink's client — hold 240 MiB; the
//! byte budget stops reading once the messages in flight reach it.

/// What a route may hold in flight: `[relay] max_in_flight` and
/// `max_in_flight_bytes`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    /// Messages.
    pub(crate) messages: usize,
    /// Bytes (`Inbound::weight`).
    pub(crate) bytes: usize,
}

/// The bytes of a route's messages in flight, against its budget. Owned by
/// the route's read loop (one task), so no atomics.
#[derive(Debug)]
pub(crate) struct ByteBudget {
    limit: usize,
    held: usize,
}

impl ByteBudget {
    /// A budget of `limit` bytes (at least 1, so an empty route reads).
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            limit: limit.max(1),
            held: 0,
        }
    }

    /// Whether another message may be read: while under the budget, and
    /// always when nothing is held — a message larger than the whole budget
    /// is relayed alone, never refused.
    pub(crate) fn has_room(&self) -> bool {
        self.held < self.limit
    }

    /// A message of `bytes` was read.
    pub(crate) fn take(&mut self, bytes: usize) {
        self.held = self.held.saturating_add(bytes);
    }

    /// A message of `bytes` was settled (its hop holds it no more).
    pub(crate) fn release(&mut self, bytes: usize) {
        self.held = self.held.saturating_sub(bytes);
    }

    /// The bytes held now.
    pub(crate) fn held(&self) -> usize {
        self.held
    }
}

#[cfg(test)]
mod tests {
    use super::ByteBudget;

    #[test]
    fn reading_stops_at_the_budget_and_resumes_when_a_message_settles() {
        let mut budget = ByteBudget::new(250);
        for _ in 0..2 {
            assert!(budget.has_room());
            budget.take(100);
        }
        assert!(budget.has_room(), "200 of 250: one more may be read");
        budget.take(100);
        assert!(!budget.has_room(), "300 of 250: reading stops");
        budget.release(100);
        assert!(budget.has_room());
        assert_eq!(budget.held(), 200);
    }

    #[test]
    fn a_message_larger_than_the_budget_is_read_alone() {
        let mut budget = ByteBudget::new(10);
        assert!(budget.has_room());
        budget.take(1_000);
        assert!(!budget.has_room(), "nothing else while it is held");
        budget.release(1_000);
        assert!(budget.has_room());
    }
}
