//! How a hop's outcome settles the message at its source, shared by both
//! sources: counted, failures logged once per streak, transient failures
//! retried.

use std::time::Duration;

use super::hop::{Hop, HopOutcome};
use super::message::Inbound;
use super::stats::RouteStats;

/// How long to wait before retrying a message nothing would take.
pub(crate) const FAILED_RETRY: Duration = Duration::from_secs(1);

/// How a message's hop ended, for a source that cannot skip it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settled {
    /// Delivered or dead-lettered: its offset may be committed.
    Done,
    /// It can never be sent and there is no dead letter: the route stops.
    Poisoned,
}

/// Kafka cannot skip an offset: a message nothing would take for a
/// transient reason is retried (it blocks its partition's commits, never
/// its neighbours' relays); one that can never be sent stops the route.
pub(crate) async fn relay_until_settled(
    hop: &Hop,
    inbound: &Inbound,
    stats: &RouteStats,
) -> Settled {
    loop {
        let outcome = hop.relay(inbound).await;
        count_outcome(hop, stats, inbound, &outcome);
        match outcome {
            HopOutcome::Delivered { .. } | HopOutcome::DeadLettered { .. } => return Settled::Done,
            HopOutcome::Poisoned { .. } => return Settled::Poisoned,
            HopOutcome::Failed { .. } => tokio::time::sleep(FAILED_RETRY).await,
        }
    }
}

/// Counts a hop's outcome, and logs failures once per streak: during an
/// outage every message fails, and one line says so, not one per message.
pub(crate) fn count_outcome(
    hop: &Hop,
    stats: &RouteStats,
    inbound: &Inbound,
    outcome: &HopOutcome,
) {
    match outcome {
        HopOutcome::Delivered { attempts } => {
            stats.published.inc();
            stats.retried.inc_by(u64::from(attempts - 1));
        }
        HopOutcome::DeadLettered { attempts, .. } => {
            stats.dead_lettered.inc();
            stats.retried.inc_by(u64::from(attempts - 1));
        }
        HopOutcome::Failed { .. } => stats.failed.inc(),
        HopOutcome::Poisoned { error } => {
            stats.set_poisoned(format!("{}: {error}", inbound.origin))
        }
    }
    match outcome {
        HopOutcome::Failed { error } => {
            if stats.failure_streak_started() {
                tracing::warn!(
                    route = %hop.route, stage = "send", source = %inbound.origin, %error,
                    "messages are not getting through; retrying them (logged once until they do)"
                );
            }
        }
        _ => {
            if let Some(failures) = stats.failure_streak_ended() {
                tracing::info!(route = %hop.route, stage = "send", failures,
                    "messages are getting through again");
            }
        }
    }
}
