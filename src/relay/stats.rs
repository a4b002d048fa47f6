//! Per-route counters, read by the health and metrics endpoints and logs.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub(crate) fn inc(&self) {
        self.add(1);
    }

    pub(crate) fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// What one route has done so far.
#[derive(Debug, Default)]
pub struct RouteStats {
    /// Messages read from the source.
    pub consumed: Counter,
    /// Messages the sink confirmed.
    pub published: Counter,
    /// Extra attempts made (retries).
    pub retried: Counter,
    /// Messages sent to the dead-letter destination.
    pub dead_lettered: Counter,
    /// Hops that neither the sink nor the dead-letter destination took (the
    /// message is retried or requeued, never acknowledged).
    pub failed: Counter,
    /// Errors reading from the source.
    pub consume_errors: Counter,
    in_flight: AtomicUsize,
}

impl RouteStats {
    pub(crate) fn set_in_flight(&self, n: usize) {
        self.in_flight.store(n, Ordering::Relaxed);
    }

    /// Messages read but not yet settled.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}
