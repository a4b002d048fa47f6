//! [`TracedConsumer`] (basic.consume) and [`TracedReceiver`] (basic.get):
//! deliveries with their creation context, a span, and traced settlement.

use std::fmt::Display;
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicGetOptions, BasicNackOptions, BasicRejectOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Consumer};
use opentelemetry::Context;
use opentelemetry::trace::{FutureExt as _, SpanKind, TraceContextExt};

use super::{AmqpHeaderExtractor, error_type};
use crate::Error;
use crate::instrument::{self, Instrumentation, ParentPolicy, Received};
use crate::metrics::ProcessTimer;
use crate::propagation::{ExtractedContext, Propagation};
use crate::semconv::{Destination, Endpoint, MessagingAttributes, Operation, Settlement, System};

/// Whether a delivery was redelivered by the broker (set only when true).
pub const REDELIVERED_ATTRIBUTE: &str = "tracebridge.rabbitmq.redelivered";

/// How [`TracedConsumer::process_next`] settles a delivery whose handler
/// failed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnError {
    /// `nack` with requeue the first time; `reject` without requeue when
    /// the broker already redelivered it (a queue with a dead-letter
    /// exchange keeps it; without one the broker drops it). The default:
    /// retries once without looping forever on a poison message.
    #[default]
    RequeueOnce,
    /// Always `nack` with requeue.
    Requeue,
    /// Always `reject` without requeue (to the dead-letter exchange).
    Reject,
}

/// Settings shared by every delivery of one consumer or receiver.
#[derive(Clone)]
struct Tracing {
    queue: String,
    endpoint: Endpoint,
    propagation: Propagation,
    policy: ParentPolicy,
    record_body_size: bool,
    settle_spans: bool,
    instrumentation: Instrumentation,
}

/// A lapin `Consumer` whose deliveries come with their trace context.
///
/// Every delivery gets a CONSUMER span
/// `process {exchange}:{routing_key}:{queue}` (empty parts left out): by
/// default a child of the publisher's context plus a link to it
/// ([`ParentPolicy`] changes that), carrying the delivery tag, routing key,
/// message and conversation ids, the redelivered flag, optionally the body
/// size, and how long the message waited (from the `timestamp` property). A
/// delivery with missing or unusable trace headers is still handled: its
/// span starts a new trace and says why in `tracebridge.context.invalid`.
/// Acks, nacks and rejects are CLIENT spans `ack` / `nack` / `reject`,
/// children of the process span (see [`TracedConsumer::with_settle_spans`]).
///
/// ```no_run
/// # async fn run(consumer: lapin::Consumer) -> Result<(), tracebridge::Error> {
/// let endpoint = tracebridge::amqp::endpoint("amqp://127.0.0.1:5672/%2f");
/// let mut consumer = tracebridge::amqp::TracedConsumer::new(consumer, endpoint);
/// consumer
///     .process(async |delivery| {
///         // Runs inside the process span; Ok acks, Err nacks.
///         tracing::info!(bytes = delivery.data.len(), "shipping");
///         Ok::<(), std::io::Error>(())
///     })
///     .await
/// # }
/// ```
pub struct TracedConsumer {
    inner: Consumer,
    tracing: Arc<Tracing>,
    on_error: OnError,
}

/// One delivery, its creation context and its span. Settle it with
/// [`TracedDelivery::ack`], [`TracedDelivery::nack`] or
/// [`TracedDelivery::reject`]; the span ends then (or when dropped).
pub struct TracedDelivery {
    delivery: Delivery,
    extracted: ExtractedContext,
    cx: Context,
    // Shared with the consumer: settling needs the same settings.
    tracing: Arc<Tracing>,
    /// `messaging.process.duration` of a process delivery, recorded when
    /// it is settled or dropped.
    timer: Option<ProcessTimer>,
}

impl TracedConsumer {
    /// Wraps a consumer (its queue is read from it).
    pub fn new(inner: Consumer, endpoint: Endpoint) -> Self {
        let queue = inner.queue().to_string();
        Self {
            inner,
            tracing: Arc::new(Tracing {
                queue,
                endpoint,
                propagation: Propagation::default(),
                policy: ParentPolicy::default(),
                record_body_size: false,
                settle_spans: true,
                instrumentation: Instrumentation::global(),
            }),
            on_error: OnError::default(),
        }
    }

    /// Formats to read. Default: `tracecontext` + `baggage`.
    pub fn with_propagation(mut self, propagation: Propagation) -> Self {
        Arc::make_mut(&mut self.tracing).propagation = propagation;
        self
    }

    /// Where process spans hang. Default: [`ParentPolicy::Join`].
    pub fn with_parent_policy(mut self, policy: ParentPolicy) -> Self {
        Arc::make_mut(&mut self.tracing).policy = policy;
        self
    }

    /// Records `messaging.message.body.size`. Default: off (opt-in, as the
    /// conventions say).
    pub fn with_body_size(mut self, record: bool) -> Self {
        Arc::make_mut(&mut self.tracing).record_body_size = record;
        self
    }

    /// Records acks, nacks and rejects as CLIENT spans. Default: on; turn
    /// off if you find them noisy.
    pub fn with_settle_spans(mut self, enabled: bool) -> Self {
        Arc::make_mut(&mut self.tracing).settle_spans = enabled;
        self
    }

    /// How a failed handler's delivery is settled. Default:
    /// [`OnError::RequeueOnce`].
    pub fn with_on_error(mut self, on_error: OnError) -> Self {
        self.on_error = on_error;
        self
    }

    /// Tracer and meters to use. Default: the global providers.
    pub fn with_instrumentation(mut self, instrumentation: Instrumentation) -> Self {
        Arc::make_mut(&mut self.tracing).instrumentation = instrumentation;
        self
    }

    /// The next delivery with its process span; `None` once the consumer is
    /// cancelled.
    pub async fn recv(&mut self) -> Result<Option<TracedDelivery>, Error> {
        match self.inner.next().await {
            None => Ok(None),
            Some(Err(source)) => Err(Error::Consume {
                source_name: self.tracing.queue.clone(),
                source: Box::new(source),
            }),
            Some(Ok(delivery)) => Ok(Some(self.tracing.trace(delivery, Operation::Process))),
        }
    }

    /// Receives one delivery and runs `handler` on it inside its process
    /// span (spans opened after `.await`s and in tasks spawned with
    /// [`crate::spawn_in_context`] are children). `Ok` acks; `Err` sets
    /// status ERROR and `error.type` and settles per [`OnError`]. `None`
    /// once the consumer is cancelled.
    pub async fn process_next<T, E>(
        &mut self,
        handler: impl AsyncFnOnce(&Delivery) -> Result<T, E>,
    ) -> Result<Option<Result<T, E>>, Error>
    where
        E: Display,
    {
        let Some(traced) = self.recv().await? else {
            return Ok(None);
        };
        let result = handler(&traced.delivery)
            .with_context(traced.cx.clone())
            .await;
        match &result {
            Ok(_) => traced.ack().await?,
            Err(err) => {
                traced.fail(instrument::type_error_name::<E>(), err.to_string());
                match self.on_error {
                    OnError::Requeue => traced.nack(true).await?,
                    OnError::RequeueOnce if !traced.delivery.redelivered => {
                        traced.nack(true).await?
                    }
                    OnError::RequeueOnce | OnError::Reject => traced.reject(false).await?,
                }
            }
        }
        Ok(Some(result))
    }

    /// Runs `handler` on every delivery until the consumer is cancelled;
    /// handler errors are recorded, logged and settled per [`OnError`].
    pub async fn process<E>(
        &mut self,
        mut handler: impl AsyncFnMut(&Delivery) -> Result<(), E>,
    ) -> Result<(), Error>
    where
        E: Display,
    {
        loop {
            let outcome = self.process_next(async |d| handler(d).await).await?;
            match outcome {
                None => return Ok(()),
                Some(Err(err)) => {
                    tracing::warn!(queue = %self.tracing.queue, error = %err, "message handler failed");
                }
                Some(Ok(())) => {}
            }
        }
    }

    /// The wrapped consumer.
    pub fn get_ref(&self) -> &Consumer {
        &self.inner
    }

    /// The wrapped consumer, mutably.
    pub fn get_mut(&mut self) -> &mut Consumer {
        &mut self.inner
    }

    /// Unwraps the consumer.
    pub fn into_inner(self) -> Consumer {
        self.inner
    }
}

/// Pulls single messages with `basic.get`, each under a CLIENT span
/// `receive {queue}` linked to the message's creation context.
pub struct TracedReceiver {
    channel: Channel,
    tracing: Arc<Tracing>,
}

impl TracedReceiver {
    /// Receives from `queue` on `channel`.
    pub fn new(channel: Channel, queue: &str, endpoint: Endpoint) -> Self {
        Self {
            channel,
            tracing: Arc::new(Tracing {
                queue: queue.to_owned(),
                endpoint,
                propagation: Propagation::default(),
                policy: ParentPolicy::Ambient,
                record_body_size: false,
                settle_spans: true,
                instrumentation: Instrumentation::global(),
            }),
        }
    }

    /// Tracer and meters to use. Default: the global providers.
    pub fn with_instrumentation(mut self, instrumentation: Instrumentation) -> Self {
        Arc::make_mut(&mut self.tracing).instrumentation = instrumentation;
        self
    }

    /// `basic.get` (manual ack): `None` when the queue is empty. The receive
    /// span is a child of the current context and links the message.
    pub async fn receive(&self) -> Result<Option<TracedDelivery>, Error> {
        let message = self
            .channel
            .basic_get(
                self.tracing.queue.as_str().into(),
                BasicGetOptions { no_ack: false },
            )
            .await
            .map_err(|source| Error::Consume {
                source_name: self.tracing.queue.clone(),
                source: Box::new(source),
            })?;
        Ok(message.map(|m| self.tracing.trace(m.delivery, Operation::Receive)))
    }
}

impl Tracing {
    fn trace(self: &Arc<Self>, delivery: Delivery, operation: Operation) -> TracedDelivery {
        let empty = FieldTable::default();
        let headers = delivery.properties.headers().as_ref().unwrap_or(&empty);
        let extracted = self.propagation.extract(&AmqpHeaderExtractor(headers));
        let delivered = super::span::Delivered {
            exchange: delivery.exchange.as_str(),
            routing_key: delivery.routing_key.as_str(),
            queue: self.queue.as_str(),
            delivery_tag: delivery.delivery_tag,
            redelivered: delivery.redelivered,
            properties: &delivery.properties,
            body_len: delivery.data.len(),
        };
        let received_at = Instant::now();
        let Received {
            name,
            produced_at,
            metric_attributes,
            consumed_attributes,
        } = super::span::received(&delivered, operation, &self.endpoint, &self.instrumentation);
        let attributes = || {
            super::span::attributes(
                &delivered,
                operation,
                &self.endpoint,
                self.instrumentation.rules(),
                self.record_body_size,
                None,
            )
        };
        let cx = match operation {
            Operation::Receive => {
                let links = instrument::link_to(&extracted, Vec::new());
                self.instrumentation.start_span_lazy(
                    name,
                    SpanKind::Client,
                    &instrument::ambient_context(),
                    links,
                    attributes,
                )
            }
            _ => self.instrumentation.start_process_span_lazy(
                name,
                self.policy,
                &extracted,
                attributes,
            ),
        };
        self.instrumentation
            .record_queue_time(&cx, produced_at, &metric_attributes);
        let metrics = self.instrumentation.metrics();
        let timer = match operation {
            Operation::Process => Some(ProcessTimer::consumed(
                metrics,
                received_at,
                &consumed_attributes,
                metric_attributes,
            )),
            // A `basic.get` is received, not processed here.
            _ => {
                metrics.count_consumed(1, &consumed_attributes);
                None
            }
        };
        TracedDelivery {
            delivery,
            extracted,
            cx,
            tracing: Arc::clone(self),
            timer,
        }
    }

    fn destination(&self, delivery: &Delivery) -> Destination {
        Destination::rabbitmq_queue(
            delivery.exchange.as_str(),
            delivery.routing_key.as_str(),
            self.queue.as_str(),
        )
    }
}

impl TracedDelivery {
    /// The lapin delivery.
    pub fn delivery(&self) -> &Delivery {
        &self.delivery
    }

    /// The creation context read from the headers (and any problems).
    pub fn extracted(&self) -> &ExtractedContext {
        &self.extracted
    }

    /// The context holding this delivery's span.
    pub fn context(&self) -> &Context {
        &self.cx
    }

    /// Marks handling failed: status ERROR and `error.type`.
    pub fn fail(&self, error_type: &str, description: impl Into<String>) {
        if let Some(timer) = &self.timer {
            timer.fail(error_type);
        }
        instrument::record_failure(&self.cx, error_type, description.into());
    }

    /// `basic.ack`.
    pub async fn ack(self) -> Result<(), Error> {
        let acker = self.delivery.acker.clone();
        self.settle(Settlement::Ack, async move {
            acker.ack(BasicAckOptions::default()).await
        })
        .await
    }

    /// `basic.nack`, requeueing when asked.
    pub async fn nack(self, requeue: bool) -> Result<(), Error> {
        let acker = self.delivery.acker.clone();
        self.settle(Settlement::Nack, async move {
            acker
                .nack(BasicNackOptions {
                    requeue,
                    ..Default::default()
                })
                .await
        })
        .await
    }

    /// `basic.reject`, requeueing when asked.
    pub async fn reject(self, requeue: bool) -> Result<(), Error> {
        let acker = self.delivery.acker.clone();
        self.settle(Settlement::Reject, async move {
            acker.reject(BasicRejectOptions { requeue }).await
        })
        .await
    }

    async fn settle(
        self,
        settlement: Settlement,
        call: impl Future<Output = lapin::Result<bool>>,
    ) -> Result<(), Error> {
        let operation = Operation::Settle(settlement);
        let settle_cx = self.tracing.settle_spans.then(|| {
            let destination = self.tracing.destination(&self.delivery);
            // Attributes only for a span that records: under an unsampled
            // message they were built and thrown away.
            self.tracing.instrumentation.start_span_lazy(
                operation.shared_span_name(&destination),
                SpanKind::Client,
                &self.cx,
                Vec::new(),
                || {
                    let attributes = MessagingAttributes::new(
                        operation,
                        &destination,
                        self.tracing.instrumentation.rules(),
                    )
                    .delivery_tag(self.delivery.delivery_tag);
                    self.tracing.endpoint.apply(attributes).into_vec()
                },
            )
        });
        let started = Instant::now();
        let result = call.await;
        let metrics = self.tracing.instrumentation.metrics();
        if metrics.enabled() {
            let mut attributes = self.tracing.instrumentation.metric_attributes(
                operation,
                &self.tracing.destination(&self.delivery),
                None,
                &self.tracing.endpoint,
            );
            if let Err(err) = &result {
                attributes.push(crate::semconv::error_type(error_type(err)));
            }
            metrics.record_operation(started, &attributes);
        }
        if let Some(cx) = &settle_cx {
            if let Err(err) = &result {
                instrument::record_failure(cx, &error_type(err), err.to_string());
            }
            cx.span().end();
        }
        self.cx.span().end();
        result.map(drop).map_err(|source| Error::Ack {
            operation: operation.name(System::RabbitMq),
            delivery_tag: self.delivery.delivery_tag,
            source: Box::new(source),
        })
    }
}
