//! An AMQP sink's publisher that survives a lost connection: when a publish
//! finds its channel closed, the connection and channel are opened again —
//! one attempt at a time, paced by an exponential backoff with jitter, so
//! hundreds of hops in flight make a handful of attempts, not one each —
//! and the hop's retry goes on. An outage is logged when it starts and
//! when it ends.

use std::sync::Arc;

use tokio::sync::RwLock;

use crate::amqp::Channel;
use crate::instrument::Instrumentation;
use crate::propagation::Propagation;
use crate::relay::backoff::Backoff;
use crate::relay::config::AmqpBroker;
use crate::relay::stats::{Output, RouteStats};

/// A connection and the traced publisher on one of its channels.
pub(crate) struct Open {
    connection: lapin::Connection,
    pub(crate) publisher: Channel,
}

impl Open {
    /// Whether the connection and the publisher's channel are both open.
    pub(crate) fn is_connected(&self) -> bool {
        self.connection.status().connected() && self.publisher.get_ref().status().connected()
    }

    /// The largest frame the broker takes on this connection (0: no limit).
    pub(crate) fn frame_max(&self) -> u32 {
        self.connection.configuration().frame_max()
    }
}

/// The current [`Open`] publisher, replaced when it breaks.
pub(crate) struct ReconnectingPublisher {
    route: String,
    broker: AmqpBroker,
    propagation: Propagation,
    instrumentation: Instrumentation,
    current: RwLock<Arc<Open>>,
    /// Pacing of reconnect attempts (read and written under `current`'s
    /// write lock, so one attempt at a time).
    backoff: std::sync::Mutex<Backoff>,
    /// The route's readiness: not ready while this output is reconnecting.
    stats: Arc<RouteStats>,
    /// Which of the route's outputs this is (each writes its own state).
    output: Output,
}

impl ReconnectingPublisher {
    /// Connects (failing the route's start when the broker is unreachable).
    pub(crate) async fn connect(
        route: &str,
        broker: &AmqpBroker,
        propagation: Propagation,
        instrumentation: Instrumentation,
        stats: Arc<RouteStats>,
        output: Output,
    ) -> Result<Self, crate::Error> {
        let open = open(broker, &propagation, &instrumentation).await?;
        Ok(Self {
            route: route.to_owned(),
            broker: broker.clone(),
            propagation,
            instrumentation,
            current: RwLock::new(Arc::new(open)),
            backoff: std::sync::Mutex::default(),
            stats,
            output,
        })
    }

    /// The publisher to use now.
    pub(crate) async fn get(&self) -> Arc<Open> {
        self.current.read().await.clone()
    }

    /// Reopens the connection when it is found closed (the relay's sink
    /// watcher calls this every second, message or not).
    pub(crate) async fn check(&self) {
        let open = self.get().await;
        if !open.is_connected() {
            self.recover(&open).await;
        }
    }

    /// After a failed publish on `used`: when its channel is closed, open a
    /// new one (unless another hop already did).
    pub(crate) async fn recover(&self, used: &Arc<Open>) {
        if used.is_connected() {
            return;
        }
        let mut current = self.current.write().await;
        if !Arc::ptr_eq(&current, used) {
            return;
        }
        self.stats.set_down(self.output, true);
        let now = std::time::Instant::now();
        {
            let Ok(mut backoff) = self.backoff.lock() else {
                return;
            };
            if backoff.lost(now) {
                tracing::warn!(route = %self.route, stage = "connect", url = %self.broker.redacted_url(),
                    "AMQP sink connection lost; reconnecting with backoff (the route is not ready meanwhile)");
            }
            if !backoff.may_try(now) {
                return;
            }
        }
        self.stats.reconnects.inc();
        let opened = open(&self.broker, &self.propagation, &self.instrumentation).await;
        let Ok(mut backoff) = self.backoff.lock() else {
            return;
        };
        let now = std::time::Instant::now();
        match opened {
            Ok(open) => {
                *current = Arc::new(open);
                self.stats.set_down(self.output, false);
                if let Some((outage, failed_attempts)) = backoff.recovered(now) {
                    tracing::info!(route = %self.route, stage = "connect",
                        outage_seconds = outage.as_secs_f64(), failed_attempts,
                        "AMQP sink reconnected");
                }
            }
            Err(err) => {
                let retry_in = backoff.failed(now);
                tracing::debug!(route = %self.route, stage = "connect", url = %self.broker.redacted_url(),
                    error = %crate::relay::hop::error_chain(&err), ?retry_in, "AMQP sink reconnect failed");
            }
        }
    }
}

async fn open(
    broker: &AmqpBroker,
    propagation: &Propagation,
    instrumentation: &Instrumentation,
) -> Result<Open, crate::Error> {
    let connect_error = |source: lapin::Error| crate::Error::Connect {
        target: broker.redacted_url(),
        error_type: crate::amqp::error_type(&source),
        source: Box::new(source),
    };
    let connection =
        lapin::Connection::connect(&broker.url, lapin::ConnectionProperties::default())
            .await
            .map_err(connect_error)?;
    let channel = connection.create_channel().await.map_err(connect_error)?;
    channel
        .confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await
        .map_err(connect_error)?;
    let publisher = Channel::from(channel)
        .with_server(&broker.url)
        .with_propagation(propagation.clone())
        .with_instrumentation(instrumentation.clone());
    Ok(Open {
        connection,
        publisher,
    })
}
