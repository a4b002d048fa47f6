//! The Kafka side of a route's input: read a topic with a window of
//! messages in flight, relay each through the hop, and commit offsets only
//! up to the highest contiguous settled one per partition.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use tokio::sync::watch;

use super::ownership::Ownership;
use crate::Error;
use crate::relay::budget::{ByteBudget, Window};
use crate::relay::config::KafkaBroker;
use crate::relay::hop::Hop;
use crate::relay::message::{Inbound, InboundHeaders, Origin};
use crate::relay::settle::{Settled, relay_until_settled};
use crate::relay::stats::RouteStats;

/// librdkafka's `queued.min.messages` for a route's consumer.
const RELAY_PREFETCH_MESSAGES: &str = "10000";
/// librdkafka's `queued.max.messages.kbytes` for a route's consumer.
const RELAY_PREFETCH_KIB: &str = "8192";
/// librdkafka's `fetch.queue.backoff.ms` for a route's consumer: with the
/// prefetch lowered as above, librdkafka's default of 1 000 ms made each
/// fetch wait up to a second whenever the local queue crossed its
/// thresholds, and the route idled with nothing in flight.
const RELAY_FETCH_QUEUE_BACKOFF_MS: &str = "10";

/// A route's consumer: its context tracks the offsets of the partitions it
/// holds, and gives them up cleanly on a rebalance.
pub(crate) type RouteConsumer = StreamConsumer<Ownership>;

/// How long a route that holds unsettled messages may settle none before
/// it says it is not ready: longer than a send's own limit (30 s), so a slow
/// broker is not taken for a stuck route.
const STALL_LIMIT: Duration = Duration::from_secs(45);

/// Creates a route's consumer and subscribes it to `topic`: manual
/// commits, from the earliest offset when the group has none; the static
/// member `INSTANCE_ID.ROUTE` when the relay has an `instance_id`.
pub(crate) fn open(
    route: &str,
    broker: &KafkaBroker,
    topic: &str,
    group: &str,
    instance_id: Option<&str>,
) -> Result<RouteConsumer, Error> {
    let mut config = super::client_config(broker);
    config
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        // The route holds at most `max_in_flight` messages: librdkafka's
        // default prefetch (up to 100 000 messages or 64 MiB a partition)
        // only adds resident memory. `properties` may raise them again.
        .set("queued.min.messages", RELAY_PREFETCH_MESSAGES)
        .set("queued.max.messages.kbytes", RELAY_PREFETCH_KIB)
        .set("fetch.queue.backoff.ms", RELAY_FETCH_QUEUE_BACKOFF_MS);
    if let Some(id) = instance_id {
        config.set("group.instance.id", static_member_id(id, route));
    }
    super::apply_properties(&mut config, broker);
    let connect_error = |e: rdkafka::error::KafkaError| {
        let error_type = crate::kafka::error_type(&e);
        crate::relay::connect_error(route, &broker.bootstrap_servers, error_type, e)
    };
    let consumer: RouteConsumer = config
        .create_with_context(Ownership::new(route, topic))
        .map_err(connect_error)?;
    consumer.subscribe(&[topic]).map_err(connect_error)?;
    Ok(consumer)
}

/// A route consumer's `group.instance.id`: the relay's id and the route's
/// name, with what Kafka does not allow in an id (ASCII letters, digits,
/// `.`, `_`, `-`) written as `_`.
fn static_member_id(instance_id: &str, route: &str) -> String {
    let route: String = route
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{instance_id}.{route}")
}

/// Reads a Kafka topic through `consumer` until `shutdown`, then drains.
///
/// Offsets are committed one synchronous commit at a time on a blocking
/// thread, each covering everything confirmed since the last; a message
/// counts against `window.messages` until a commit covering it is
/// acknowledged, so a crash re-sends at most that many; and against
/// `window.bytes` until it settles.
pub(crate) async fn run(
    hop: Arc<Hop>,
    consumer: RouteConsumer,
    topic: String,
    group: String,
    window: Window,
    stats: Arc<RouteStats>,
    mut shutdown: watch::Receiver<bool>,
) {
    let consumer = Arc::new(consumer);
    let ownership = consumer.context().clone();
    let mut committing: Option<tokio::task::JoinHandle<CommitResult>> = None;
    let mut commit_failures: u32 = 0;
    // One allocation per route, shared by every message's origin.
    let (shared_topic, shared_group): (Arc<str>, Arc<str>) = (topic.as_str().into(), group.into());
    let mut in_flight = FuturesUnordered::new();
    let mut bytes = ByteBudget::new(window.bytes);
    let mut stopping = *shutdown.borrow();
    stats.set_running(true);
    // Consuming means holding partitions: checked, not assumed.
    let mut assignment_check = tokio::time::interval(Duration::from_millis(500));
    // Messages read or settled: the route moves while this changes.
    let mut progress: u64 = 0;
    let mut stall = StallWatch::default();
    while !stopping || !in_flight.is_empty() {
        tokio::select! {
            changed = shutdown.changed(), if !stopping => {
                stopping = changed.is_err() || *shutdown.borrow();
                if stopping {
                    tracing::info!(route = %hop.route, in_flight = in_flight.len(), "stopping: draining messages in flight");
                }
            }
            _ = assignment_check.tick() => {
                let held = consumer.assignment().map(|a| a.count()).unwrap_or(0);
                stats.set_partitions_held(held);
                let unsettled = ownership.offsets().unsettled();
                if let Some(why) = stall.check(std::time::Instant::now(), progress, unsettled) {
                    stats.set_stalled(why);
                }
                if committing.is_none() {
                    committing = start_commit(&consumer);
                }
            }
            Some((partition, offset, weight, settled)) = in_flight.next(), if !in_flight.is_empty() => {
                bytes.release(weight);
                progress += 1;
                stats.set_in_flight_bytes(bytes.held());
                // A poison message stays "in flight" for the offsets: the
                // commit stops below it, so no restart skips it.
                if settled == Settled::Done {
                    ownership.offsets().done(partition, offset);
                }
                if committing.is_none() {
                    committing = start_commit(&consumer);
                }
                stats.set_in_flight(ownership.offsets().in_flight());
            }
            finished = async { committing.as_mut().expect("guarded").await }, if committing.is_some() => {
                committing = None;
                match finished {
                    Ok((list, Ok(()))) => {
                        let mut offsets = ownership.offsets();
                        for (partition, next) in list {
                            offsets.acknowledged(partition, next);
                        }
                        drop(offsets);
                        commit_failures = 0;
                        committing = start_commit(&consumer);
                    }
                    Ok((list, Err(err))) => {
                        // Asked again at the next tick. A partition revoked
                        // by a rebalance is forgotten: its new owner reads it
                        // from the last commit (duplicates, never loss).
                        commit_failures += 1;
                        if commit_failures == 1 {
                            tracing::warn!(route = %hop.route, stage = "commit", error = %err,
                                "offset commit failed; retrying (reading pauses once the window is unsettled)");
                        }
                        let mut offsets = ownership.offsets();
                        for (partition, _) in list {
                            offsets.commit_failed(partition);
                        }
                        if let Ok(assignment) = consumer.assignment() {
                            let held: Vec<i32> = assignment.elements().iter().map(|e| e.partition()).collect();
                            offsets.retain(|p| held.contains(&p));
                        }
                    }
                    Err(err) => tracing::error!(route = %hop.route, stage = "commit", error = %err, "commit task failed"),
                }
            }
            received = consumer.recv(), if !stopping && ownership.offsets().unsettled() < window.messages && bytes.has_room() && !stats.is_poisoned() => {
                let message = match received {
                    Ok(message) => message,
                    Err(err) => {
                        stats.consume_errors.inc();
                        tracing::warn!(route = %hop.route, stage = "consume", error = %err, "Kafka consume error");
                        continue;
                    }
                };
                let inbound = Inbound {
                    headers: InboundHeaders::Kafka(message.headers().map(|h| h.detach()).unwrap_or_default()),
                    payload: message.payload().map(<[u8]>::to_vec),
                    kafka_key: message.key().map(<[u8]>::to_vec),
                    timestamp_ms: message.timestamp().to_millis(),
                    origin: Origin::Kafka {
                        topic: shared_topic.clone(),
                        partition: message.partition(),
                        offset: message.offset(),
                        group: shared_group.clone(),
                    },
                };
                let (partition, offset) = (message.partition(), message.offset());
                progress += 1;
                let weight = inbound.weight();
                bytes.take(weight);
                stats.set_in_flight_bytes(bytes.held());
                if stats.partitions_held() == 0 {
                    // A message proves an assignment the last check missed.
                    stats.set_partitions_held(consumer.assignment().map(|a| a.count()).unwrap_or(1).max(1));
                }
                let in_flight_now = {
                    let mut offsets = ownership.offsets();
                    offsets.received(partition, offset);
                    offsets.in_flight()
                };
                stats.consumed.inc();
                stats.set_in_flight(in_flight_now);
                let hop = hop.clone();
                let stats = stats.clone();
                in_flight.push(async move {
                    let read_at = std::time::Instant::now();
                    let settled = relay_until_settled(&hop, &inbound, &stats).await;
                    stats.hop_seconds.observe(read_at.elapsed().as_secs_f64());
                    (partition, offset, weight, settled)
                });
            }
        }
    }
    stats.set_running(false);
    // The final commit must land before the process exits, and must be
    // OUR offsets: librdkafka's own "consumer state" counts every message it
    // handed over, relayed or not.
    if let Some(pending) = committing.take() {
        let _ = pending.await;
    }
    ownership.offsets().recommit_all();
    if let Some(last) = start_commit(&consumer)
        && let Ok((_, Err(err))) = last.await
    {
        tracing::warn!(route = %hop.route, stage = "commit", error = %err, "the final offset commit failed");
    }
}

/// Whether a route holding messages it has not settled (in flight, or
/// awaiting the commit that covers them) makes no progress: no message
/// read or settled for [`STALL_LIMIT`]. The Kafka loop's own readiness
/// state (its only writer).
#[derive(Default)]
struct StallWatch {
    /// The progress count last seen, and when it last changed.
    last: Option<(u64, std::time::Instant)>,
    stalled: bool,
}

impl StallWatch {
    /// Looks at the route's progress at `now` (every assignment check):
    /// stalled after [`STALL_LIMIT`] without any while `unsettled` messages
    /// are held; moving again at the first message read or settled. The
    /// new readiness state (`Some(why)` stalled, `None` moving) when it
    /// changes or its description does.
    fn check(
        &mut self,
        now: std::time::Instant,
        progress: u64,
        unsettled: usize,
    ) -> Option<Option<String>> {
        let since = match self.last {
            Some((seen, since)) if seen == progress => since,
            _ => {
                self.last = Some((progress, now));
                return std::mem::take(&mut self.stalled).then_some(None);
            }
        };
        let idle = now.duration_since(since);
        if idle >= STALL_LIMIT && unsettled > 0 {
            self.stalled = true;
            Some(Some(format!(
                "it holds {unsettled} unsettled message(s) and none was read or settled for {} s",
                idle.as_secs()
            )))
        } else {
            std::mem::take(&mut self.stalled).then_some(None)
        }
    }
}

/// The partitions and offsets a commit covered, and how it ended.
type CommitResult = (Vec<(i32, i64)>, rdkafka::error::KafkaResult<()>);

/// Starts a synchronous commit of what may be committed now, on a
/// blocking thread; `None` when there is nothing new.
fn start_commit(consumer: &Arc<RouteConsumer>) -> Option<tokio::task::JoinHandle<CommitResult>> {
    let ready = consumer.context().offsets().committable();
    if ready.is_empty() {
        return None;
    }
    let consumer = consumer.clone();
    Some(tokio::task::spawn_blocking(move || {
        consumer.context().commit(consumer.as_ref(), ready)
    }))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{STALL_LIMIT, StallWatch};

    #[test]
    fn a_route_holding_unsettled_messages_that_settles_none_is_stalled() {
        let start = Instant::now();
        let at = |seconds: u64| start + Duration::from_secs(seconds);
        let limit = STALL_LIMIT.as_secs();
        let mut watch = StallWatch::default();
        assert_eq!(watch.check(at(0), 5, 64), None, "first look");
        assert_eq!(watch.check(at(limit - 1), 5, 64), None, "not yet");
        let stalled = watch.check(at(limit), 5, 64).expect("a change");
        assert_eq!(
            stalled.as_deref(),
            Some("it holds 64 unsettled message(s) and none was read or settled for 45 s")
        );
        assert_eq!(
            watch.check(at(limit + 1), 6, 64),
            Some(None),
            "moving again"
        );
        assert_eq!(watch.check(at(limit + 2), 6, 64), None, "no change");
        // Idle with nothing held is an idle topic, not a stall.
        assert_eq!(watch.check(at(3 * limit), 6, 0), None);
    }

    #[test]
    fn a_static_member_id_is_the_instance_and_the_route_in_kafka_letters() {
        assert_eq!(
            super::static_member_id("relay-0", "orders → billing"),
            "relay-0.orders___billing"
        );
    }
}
