//! How many unacknowledged deliveries RabbitMQ may push to an AMQP source.
//! RabbitMQ has no byte prefetch, and what it pushes waits in lapin's
//! memory: with the message window alone (1 024), 1 MB messages held a
//! gigabyte while the sink was down. The prefetch starts small and follows
//! the largest recent message so that that many of it fit the route's byte
//! budget, never above the message window. It is the channel's (RabbitMQ's
//! `global` prefetch), so a change applies to the deliveries that follow.

/// The prefetch a source opens with, before it has seen a message.
const INITIAL: u16 = 16;
/// How many recent message sizes the largest is taken from.
const RECENT: usize = 64;

/// The prefetch a source with a window of `window` messages opens with.
pub(crate) fn initial(window: u16) -> u16 {
    INITIAL.min(window.max(1))
}

/// A source's prefetch, following its messages' sizes.
#[derive(Debug)]
pub(crate) struct Prefetch {
    window: u16,
    budget: usize,
    recent: [usize; RECENT],
    next: usize,
    /// The largest of `recent` (looked for again only when it leaves).
    largest: usize,
    current: u16,
}

impl Prefetch {
    /// For a window of `window` messages and a budget of `budget` bytes.
    pub(crate) fn new(window: u16, budget: usize) -> Self {
        Self {
            window: window.max(1),
            budget: budget.max(1),
            recent: [0; RECENT],
            next: 0,
            largest: 0,
            current: initial(window),
        }
    }

    /// The prefetch to open (or reopen) the consumer with: sizes are
    /// learnt again.
    pub(crate) fn reset(&mut self) -> u16 {
        self.recent = [0; RECENT];
        self.largest = 0;
        self.current = initial(self.window);
        self.current
    }

    /// A delivery of `size` bytes arrived: the prefetch to ask for now, if
    /// it changes — lowered at once, raised once it can at least double
    /// (or reach the window), so the channel is not asked at every message.
    pub(crate) fn observe(&mut self, size: usize) -> Option<u16> {
        let leaving = std::mem::replace(&mut self.recent[self.next], size);
        self.next = (self.next + 1) % RECENT;
        if size >= self.largest {
            self.largest = size;
        } else if leaving == self.largest {
            self.largest = self.recent.iter().copied().max().unwrap_or(0);
        }
        let fits = (self.budget / self.largest.max(1)).clamp(1, usize::from(self.window));
        let target = u16::try_from(fits).unwrap_or(self.window);
        let changes = target < self.current
            || (target > self.current
                && (target >= self.current.saturating_mul(2) || target == self.window));
        changes.then(|| {
            self.current = target;
            target
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Prefetch;

    #[test]
    fn small_messages_open_the_window_and_large_ones_close_it_to_the_budget() {
        let mut prefetch = Prefetch::new(1024, 16 << 20);
        assert_eq!(prefetch.reset(), 16, "small before any message");
        assert_eq!(prefetch.observe(100), Some(1024), "100 B: the whole window");
        assert_eq!(prefetch.observe(200), None);
        assert_eq!(prefetch.observe(1 << 20), Some(16), "1 MiB: 16 fit 16 MiB");
        assert_eq!(prefetch.observe(100), None, "the large one is still recent");
        for _ in 0..63 {
            prefetch.observe(100);
        }
        assert_eq!(prefetch.current, 1024, "forgotten after 64 messages");
        assert_eq!(
            prefetch.observe(64 << 20),
            Some(1),
            "larger than the budget: one at a time"
        );
    }

    #[test]
    fn a_small_window_bounds_everything() {
        let mut prefetch = Prefetch::new(4, 16 << 20);
        assert_eq!(prefetch.reset(), 4);
        assert_eq!(prefetch.observe(10), None, "already the window");
    }

    #[test]
    fn the_largest_recent_size_is_kept_without_a_scan_per_message() {
        let mut prefetch = Prefetch::new(1024, 1 << 20);
        let mut seed: u64 = 42;
        for _ in 0..10_000 {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            prefetch.observe((seed >> 33) as usize % 100_000);
            assert_eq!(
                prefetch.largest,
                prefetch.recent.iter().copied().max().unwrap_or(0)
            );
        }
    }
}
