//! The two source loops: read, keep at most `window` messages in flight
//! (confirms pipelined, never awaited one by one), acknowledge each message
//! only once its hop is finished, stop and drain on shutdown.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::future::Either;
use futures::stream::FuturesUnordered;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
};
use lapin::types::FieldTable;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::watch;

use super::config::AmqpBroker;
use super::hop::{Hop, Outcome};
use super::message::{Inbound, InboundHeaders, Origin};
use super::offsets::OffsetTracker;
use super::stats::RouteStats;

/// How long to wait before retrying a message nothing would take.
const FAILED_RETRY: Duration = Duration::from_secs(1);

/// How long an AMQP ack or nack may take once the hop is done.
const SETTLE_LIMIT: Duration = Duration::from_secs(5);

/// Reads a Kafka topic through `consumer` until `shutdown`, then drains.
///
/// Offsets are committed one synchronous commit at a time on a blocking
/// thread, each covering everything confirmed since the last; a message
/// counts against `window` until a commit covering it is acknowledged, so
/// a crash re-sends at most `window` messages.
pub(crate) async fn run_kafka(
    hop: Arc<Hop>,
    consumer: StreamConsumer,
    topic: String,
    group: String,
    window: usize,
    stats: Arc<RouteStats>,
    mut shutdown: watch::Receiver<bool>,
) {
    let consumer = Arc::new(consumer);
    let mut offsets = OffsetTracker::default();
    let mut committing: Option<tokio::task::JoinHandle<CommitResult>> = None;
    let mut commit_failures: u32 = 0;
    // One allocation per route, shared by every message's origin.
    let (shared_topic, shared_group): (Arc<str>, Arc<str>) = (topic.as_str().into(), group.into());
    let mut in_flight = FuturesUnordered::new();
    let mut stopping = *shutdown.borrow();
    stats.set_running(true);
    // Consuming means holding partitions: checked, not assumed.
    let mut assignment_check = tokio::time::interval(Duration::from_millis(500));
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
                if committing.is_none() {
                    committing = start_commit(&consumer, &topic, &mut offsets);
                }
            }
            Some((partition, offset, settled)) = in_flight.next(), if !in_flight.is_empty() => {
                // A poison message stays "in flight" for the offsets: the
                // commit stops below it, so no restart skips it.
                if settled == Settled::Done {
                    offsets.done(partition, offset);
                }
                if committing.is_none() {
                    committing = start_commit(&consumer, &topic, &mut offsets);
                }
                stats.set_in_flight(offsets.in_flight());
            }
            finished = async { committing.as_mut().expect("guarded").await }, if committing.is_some() => {
                committing = None;
                match finished {
                    Ok((list, Ok(()))) => {
                        for (partition, next) in list {
                            offsets.acknowledged(partition, next);
                        }
                        commit_failures = 0;
                        committing = start_commit(&consumer, &topic, &mut offsets);
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
            received = consumer.recv(), if !stopping && offsets.unsettled() < window && !stats.is_poisoned() => {
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
                if stats.partitions_held() == 0 {
                    // A message proves an assignment the last check missed.
                    stats.set_partitions_held(consumer.assignment().map(|a| a.count()).unwrap_or(1).max(1));
                }
                offsets.received(partition, offset);
                stats.consumed.inc();
                stats.set_in_flight(offsets.in_flight());
                observe_queue_time(&stats, inbound.timestamp_ms);
                let hop = hop.clone();
                let stats = stats.clone();
                in_flight.push(async move {
                    let read_at = std::time::Instant::now();
                    let settled = relay_until_settled(&hop, &inbound, &stats).await;
                    stats.hop_seconds.observe(read_at.elapsed().as_secs_f64());
                    (partition, offset, settled)
                });
            }
        }
    }
    // The final commit must land before the process exits, and must be
    // OUR offsets: librdkafka's own "consumer state" counts every message it
    // handed over, relayed or not.
    if let Some(pending) = committing.take() {
        let _ = pending.await;
    }
    offsets.recommit_all();
    if let Some(last) = start_commit(&consumer, &topic, &mut offsets)
        && let Ok((_, Err(err))) = last.await
    {
        tracing::warn!(route = %hop.route, stage = "commit", error = %err, "the final offset commit failed");
    }
}

/// The partitions and offsets a commit covered, and how it ended.
type CommitResult = (Vec<(i32, i64)>, rdkafka::error::KafkaResult<()>);

/// Starts a synchronous commit of what may be committed now, on a
/// blocking thread; `None` when there is nothing new.
fn start_commit(
    consumer: &Arc<StreamConsumer>,
    topic: &str,
    offsets: &mut OffsetTracker,
) -> Option<tokio::task::JoinHandle<CommitResult>> {
    let ready = offsets.committable();
    if ready.is_empty() {
        return None;
    }
    let mut list = TopicPartitionList::new();
    for &(partition, next) in &ready {
        // Only fails for an offset type the list cannot hold; ours is plain.
        let _ = list.add_partition_offset(topic, partition, Offset::Offset(next));
    }
    let consumer = consumer.clone();
    Some(tokio::task::spawn_blocking(move || {
        let result = consumer.commit(&list, CommitMode::Sync);
        (ready, result)
    }))
}

fn observe_queue_time(stats: &RouteStats, produced_ms: Option<i64>) {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default();
    if let Some(produced) = produced_ms {
        stats
            .queue_seconds
            .observe(((now_ms - produced).max(0) as f64) / 1000.0);
    }
}

/// How a Kafka message's hop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settled {
    /// Delivered or dead-lettered: its offset may be committed.
    Done,
    /// It can never be sent and there is no dead letter: the route stops.
    Poisoned,
}

/// Kafka cannot skip an offset: a message nothing would take for a
/// transient reason is retried (it blocks its partition's commits, never
/// its neighbours' relays); one that can never be sent stops the route.
async fn relay_until_settled(hop: &Hop, inbound: &Inbound, stats: &RouteStats) -> Settled {
    loop {
        let outcome = hop.relay(inbound).await;
        count_outcome(hop, stats, inbound, &outcome);
        match outcome {
            Outcome::Delivered { .. } | Outcome::DeadLettered { .. } => return Settled::Done,
            Outcome::Poisoned { .. } => return Settled::Poisoned,
            Outcome::Failed { .. } => tokio::time::sleep(FAILED_RETRY).await,
        }
    }
}

/// Counts a hop's outcome, and logs failures once per streak: during an
/// outage every message fails, and one line says so, not one per message.
fn count_outcome(hop: &Hop, stats: &RouteStats, inbound: &Inbound, outcome: &Outcome) {
    match outcome {
        Outcome::Delivered { attempts } => {
            stats.published.inc();
            stats.retried.inc_by(u64::from(attempts - 1));
        }
        Outcome::DeadLettered { attempts, .. } => {
            stats.dead_lettered.inc();
            stats.retried.inc_by(u64::from(attempts - 1));
        }
        Outcome::Failed { .. } => stats.failed.inc(),
        Outcome::Poisoned { error } => stats.set_poisoned(format!("{}: {error}", inbound.origin)),
    }
    match outcome {
        Outcome::Failed { error } => {
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

/// How to (re)open an AMQP source.
#[derive(Clone)]
pub(crate) struct AmqpSubscription {
    pub(crate) route: String,
    pub(crate) broker: AmqpBroker,
    pub(crate) queue: String,
    pub(crate) prefetch: u16,
}

/// An open AMQP source: the connection is kept for as long as the consumer.
pub(crate) struct OpenedAmqp {
    _connection: lapin::Connection,
    channel: lapin::Channel,
    consumer: lapin::Consumer,
}

impl AmqpSubscription {
    pub(crate) async fn open(&self) -> Result<OpenedAmqp, lapin::Error> {
        let connection =
            lapin::Connection::connect(&self.broker.url, lapin::ConnectionProperties::default())
                .await?;
        let channel = connection.create_channel().await?;
        channel
            .basic_qos(self.prefetch, BasicQosOptions::default())
            .await?;
        let consumer = channel
            .basic_consume(
                self.queue.as_str().into(),
                format!("tracebridge-{}", self.route).as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(OpenedAmqp {
            _connection: connection,
            channel,
            consumer,
        })
    }

    /// Reopens with backoff (200 ms doubling to 30 s, with jitter) until
    /// it works or shutdown is asked; `None` on shutdown. The outage was
    /// logged when it started; its end is logged here, with its length.
    async fn reopen(
        &self,
        stats: &RouteStats,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Option<OpenedAmqp> {
        let mut backoff = super::backoff::Backoff::default();
        backoff.lost(std::time::Instant::now());
        loop {
            stats.reconnects.inc();
            match self.open().await {
                Ok(opened) => {
                    if let Some((outage, failed_attempts)) =
                        backoff.recovered(std::time::Instant::now())
                    {
                        tracing::info!(route = %self.route, stage = "connect",
                            outage_seconds = outage.as_secs_f64(), failed_attempts,
                            "AMQP source reconnected");
                    }
                    return Some(opened);
                }
                Err(err) => {
                    let wait = backoff.failed(std::time::Instant::now());
                    tracing::debug!(
                        route = %self.route, stage = "connect", error = %err,
                        url = %self.broker.redacted_url(), retry_in = ?wait,
                        "AMQP source reconnect failed"
                    );
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        _ = shutdown.wait_for(|stop| *stop) => return None,
                    }
                }
            }
        }
    }
}

/// Reads an AMQP queue (prefetch = window) until `shutdown`, then drains.
/// A lost connection is reopened with backoff; meanwhile the route is not
/// ready, and deliveries it held go back to the queue (the broker requeues
/// unacked messages of a closed channel): duplicates, never loss.
pub(crate) async fn run_amqp(
    hop: Arc<Hop>,
    subscription: AmqpSubscription,
    opened: OpenedAmqp,
    stats: Arc<RouteStats>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut opened = opened;
    let queue: Arc<str> = subscription.queue.as_str().into();
    let mut in_flight = FuturesUnordered::new();
    let mut stopping = *shutdown.borrow();
    stats.set_running(true);
    while !stopping || !in_flight.is_empty() {
        tokio::select! {
            changed = shutdown.changed(), if !stopping => {
                stopping = changed.is_err() || *shutdown.borrow();
                if stopping {
                    tracing::info!(route = %hop.route, in_flight = in_flight.len(), "stopping: draining messages in flight");
                    // Unacked deliveries beyond those in flight go back to the queue.
                    let _ = opened.channel.basic_cancel(opened.consumer.tag(), BasicCancelOptions::default()).await;
                }
            }
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {
                stats.set_in_flight(in_flight.len());
            }
            delivery = opened.consumer.next(), if !stopping && !stats.is_poisoned() => {
                let delivery = match delivery {
                    Some(Ok(delivery)) => delivery,
                    lost => {
                        // The connection or channel is gone: reconnect.
                        stats.consume_errors.inc();
                        stats.set_running(false);
                        let error = match lost {
                            Some(Err(err)) => err.to_string(),
                            _ => "the consumer was cancelled".to_owned(),
                        };
                        tracing::warn!(route = %hop.route, stage = "consume", %error, "AMQP source lost; reconnecting");
                        match subscription.reopen(&stats, &mut shutdown).await {
                            Some(reopened) => {
                                opened = reopened;
                                stats.set_running(true);
                            }
                            None => stopping = true,
                        }
                        continue;
                    }
                };
                let mut delivery = delivery;
                // The hop owns the payload, properties, exchange and routing
                // key (moved, not copied); the delivery keeps what acking
                // needs.
                let properties = std::mem::take(&mut delivery.properties);
                let inbound = Inbound {
                    timestamp_ms: properties
                        .timestamp()
                        .map(|ts| i64::try_from(crate::amqp::timestamp_ms(ts)).unwrap_or(i64::MAX)),
                    headers: InboundHeaders::Amqp(Box::new(properties)),
                    payload: Some(std::mem::take(&mut delivery.data)),
                    kafka_key: None,
                    origin: Origin::Amqp {
                        exchange: std::mem::take(&mut delivery.exchange),
                        routing_key: std::mem::take(&mut delivery.routing_key),
                        queue: queue.clone(),
                        delivery_tag: delivery.delivery_tag,
                        redelivered: delivery.redelivered,
                    },
                };
                stats.consumed.inc();
                observe_queue_time(&stats, inbound.timestamp_ms);
                let hop = hop.clone();
                let route_stats = stats.clone();
                in_flight.push(async move {
                    let stats = route_stats;
                    let read_at = std::time::Instant::now();
                    let outcome = hop.relay(&inbound).await;
                    count_outcome(&hop, &stats, &inbound, &outcome);
                    let settle = match outcome {
                        Outcome::Delivered { .. } | Outcome::DeadLettered { .. } => {
                            Either::Left(delivery.ack(BasicAckOptions::default()))
                        }
                        Outcome::Failed { .. } => {
                            // Back to the queue: redelivered later, not lost.
                            tokio::time::sleep(FAILED_RETRY).await;
                            Either::Right(delivery.nack(BasicNackOptions { requeue: true, ..Default::default() }))
                        }
                        Outcome::Poisoned { .. } => {
                            // Held unacknowledged (the route reads no more):
                            // the broker keeps it for whoever fixes the route.
                            stats.hop_seconds.observe(read_at.elapsed().as_secs_f64());
                            return;
                        }
                    };
                    // An ack on a channel whose connection died can wait
                    // forever in lapin; the broker has requeued that
                    // delivery already, so the hop is over either way.
                    let settled = match tokio::time::timeout(SETTLE_LIMIT, settle).await {
                        Ok(settled) => settled.map_err(|err| err.to_string()),
                        Err(_) => Err(format!("no answer within {SETTLE_LIMIT:?}")),
                    };
                    if let Err(error) = settled {
                        // The lost connection is logged once by the loop.
                        tracing::debug!(route = %hop.route, stage = "ack", %error,
                            "acknowledging the source failed; the broker will redeliver");
                    }
                    stats.hop_seconds.observe(read_at.elapsed().as_secs_f64());
                });
                stats.set_in_flight(in_flight.len());
            }
        }
    }
    stats.set_running(false);
}
