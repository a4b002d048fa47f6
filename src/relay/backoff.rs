//! Reconnect pacing shared by the AMQP source and sink: exponential
//! backoff with jitter, capped, and the bookkeeping that lets an outage be
//! logged twice (when it starts and when it ends), never once per attempt.

use std::time::{Duration, Instant};

/// The first wait after a failed reconnect.
const FIRST: Duration = Duration::from_millis(200);
/// The longest wait between two reconnects.
const CAP: Duration = Duration::from_secs(30);

/// One connection's reconnect state.
#[derive(Debug)]
pub(crate) struct Backoff {
    wait: Duration,
    not_before: Option<Instant>,
    outage_started: Option<Instant>,
    failed_attempts: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            wait: FIRST,
            not_before: None,
            outage_started: None,
            failed_attempts: 0,
        }
    }
}

impl Backoff {
    /// Whether a reconnect may be tried now (false while backing off).
    pub(crate) fn may_try(&self, now: Instant) -> bool {
        self.not_before.is_none_or(|t| now >= t)
    }

    /// The connection was found lost: true when this starts an outage (log
    /// it), false when one is already going on.
    pub(crate) fn lost(&mut self, now: Instant) -> bool {
        let starts = self.outage_started.is_none();
        if starts {
            self.outage_started = Some(now);
        }
        starts
    }

    /// A reconnect failed: how long to wait before the next one (doubling,
    /// capped, with up to half of it taken off at random so many relays
    /// do not reconnect in step).
    pub(crate) fn failed(&mut self, now: Instant) -> Duration {
        self.failed_attempts += 1;
        let wait = jitter(self.wait);
        self.not_before = Some(now + wait);
        self.wait = (self.wait * 2).min(CAP);
        wait
    }

    /// A reconnect worked: how long the outage lasted and how many attempts
    /// failed (None when there was no outage), and the state is reset.
    pub(crate) fn recovered(&mut self, now: Instant) -> Option<(Duration, u32)> {
        let summary = self
            .outage_started
            .map(|started| (now.saturating_duration_since(started), self.failed_attempts));
        *self = Self::default();
        summary
    }
}

/// `wait` less a pseudo-random part of up to half of it.
fn jitter(wait: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    // 0..=1000 thousandths of half the wait.
    let off = wait / 2 * (nanos % 1001) / 1000;
    wait - off
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_cap_and_reset_on_recovery() {
        let mut b = Backoff::default();
        let now = Instant::now();
        assert!(b.may_try(now));
        assert!(b.lost(now), "the first loss starts an outage");
        assert!(!b.lost(now), "a second notice of it does not");
        let mut waits = Vec::new();
        for _ in 0..12 {
            waits.push(b.failed(now));
        }
        assert!(!b.may_try(now), "backing off after a failure");
        for (i, w) in waits.iter().enumerate() {
            let full = (FIRST * 2u32.pow(i.min(8) as u32)).min(CAP);
            assert!(
                *w <= full && *w >= full / 2,
                "attempt {i}: {w:?} within [{:?}, {full:?}]",
                full / 2
            );
        }
        let (_, failed) = b.recovered(now).expect("an outage was going on");
        assert_eq!(failed, 12);
        assert!(b.may_try(now));
        assert!(b.recovered(now).is_none(), "no outage any more");
    }
}
