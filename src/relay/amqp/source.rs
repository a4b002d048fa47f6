//! The AMQP side of a route's input: consume a queue (prefetch following
//! the messages' sizes within the window and the byte budget,
//! `prefetch.rs`), relay each delivery through the hop, and ack it after
//! the sink's confirm (nack to requeue when nothing took it). A lost
//! connection is reopened with backoff.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::future::Either;
use futures::stream::FuturesUnordered;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
};
use lapin::types::FieldTable;
use tokio::sync::watch;

use super::prefetch::Prefetch;
use crate::relay::backoff::Backoff;
use crate::relay::budget::ByteBudget;
use crate::relay::config::AmqpBroker;
use crate::relay::hop::{Hop, HopOutcome};
use crate::relay::message::{Inbound, InboundHeaders, Origin};
use crate::relay::settle::{FAILED_RETRY, count_outcome};
use crate::relay::stats::RouteStats;

/// How long an AMQP ack or nack may take once the hop is done.
const SETTLE_LIMIT: Duration = Duration::from_secs(5);

/// How to (re)open an AMQP source.
#[derive(Clone)]
pub(crate) struct AmqpSubscription {
    pub(crate) route: String,
    pub(crate) broker: AmqpBroker,
    pub(crate) queue: String,
    /// `[relay] max_in_flight`: the most deliveries RabbitMQ may push.
    pub(crate) prefetch: u16,
    /// `[relay] max_in_flight_bytes`: reading stops at this many bytes in
    /// flight (what RabbitMQ already sent waits in lapin, ≤ `prefetch`).
    pub(crate) window_bytes: usize,
}

/// An open AMQP source: the connection is kept for as long as the consumer.
pub(crate) struct OpenedAmqp {
    _connection: lapin::Connection,
    channel: lapin::Channel,
    consumer: lapin::Consumer,
}

impl AmqpSubscription {
    /// Connects and consumes with the channel's prefetch at `prefetch`.
    pub(crate) async fn open(&self, prefetch: u16) -> Result<OpenedAmqp, lapin::Error> {
        let connection =
            lapin::Connection::connect(&self.broker.url, lapin::ConnectionProperties::default())
                .await?;
        let channel = connection.create_channel().await?;
        channel
            .basic_qos(prefetch, BasicQosOptions { global: true })
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
        prefetch: u16,
        stats: &RouteStats,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Option<OpenedAmqp> {
        let mut backoff = Backoff::default();
        backoff.lost(std::time::Instant::now());
        loop {
            stats.reconnects.inc();
            match self.open(prefetch).await {
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
pub(crate) async fn run(
    hop: Arc<Hop>,
    subscription: AmqpSubscription,
    opened: OpenedAmqp,
    stats: Arc<RouteStats>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut opened = opened;
    let queue: Arc<str> = subscription.queue.as_str().into();
    let mut in_flight = FuturesUnordered::new();
    let mut bytes = ByteBudget::new(subscription.window_bytes);
    let mut prefetch = Prefetch::new(subscription.prefetch, subscription.window_bytes);
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
            Some(weight) = in_flight.next(), if !in_flight.is_empty() => {
                bytes.release(weight);
                stats.set_in_flight_bytes(bytes.held());
                stats.set_in_flight(in_flight.len());
            }
            delivery = opened.consumer.next(), if !stopping && bytes.has_room() && !stats.is_poisoned() => {
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
                        match subscription.reopen(prefetch.reset(), &stats, &mut shutdown).await {
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
                    timestamp_ms: crate::amqp::published_at_ms(&properties)
                        .map(|ms| i64::try_from(ms).unwrap_or(i64::MAX)),
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
                let weight = inbound.weight();
                bytes.take(weight);
                stats.set_in_flight_bytes(bytes.held());
                if let Some(limit) = prefetch.observe(weight)
                    && let Err(error) = opened.channel.basic_qos(limit, BasicQosOptions { global: true }).await
                {
                    // The channel is going: its reopening starts small again.
                    tracing::debug!(route = %hop.route, stage = "consume", %error, limit, "changing the prefetch failed");
                }
                let hop = hop.clone();
                let route_stats = stats.clone();
                in_flight.push(async move {
                  async move {
                    let stats = route_stats;
                    let read_at = std::time::Instant::now();
                    let outcome = hop.relay(&inbound).await;
                    count_outcome(&hop, &stats, &inbound, &outcome);
                    let settle = match outcome {
                        HopOutcome::Delivered { .. } | HopOutcome::DeadLettered { .. } => {
                            Either::Left(delivery.ack(BasicAckOptions::default()))
                        }
                        HopOutcome::Failed { .. } => {
                            // Back to the queue: redelivered later, not lost.
                            tokio::time::sleep(FAILED_RETRY).await;
                            Either::Right(delivery.nack(BasicNackOptions { requeue: true, ..Default::default() }))
                        }
                        HopOutcome::Poisoned { .. } => {
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
                  }.await;
                  weight
                });
                stats.set_in_flight(in_flight.len());
            }
        }
    }
    stats.set_running(false);
}
