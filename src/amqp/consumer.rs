//! [`Consumer`] (`basic.consume`) and the [`Delivery`]s it yields, each with
//! its span, settled with traced acks, nacks and rejects.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::Instant;

use futures::Stream;
use lapin::options::{BasicAckOptions, BasicNackOptions, BasicRejectOptions};
use lapin::types::{FieldTable, ShortString};
use opentelemetry::Context;
use opentelemetry::trace::{SpanKind, TraceContextExt};

use super::channel::ChannelTracing;
use super::{AmqpHeaderExtractor, error_type};
use crate::instrument::{self, HandlerOutcome, Received};
use crate::metrics::ProcessTimer;
use crate::propagation::ExtractedContext;
use crate::semconv::{Destination, MessagingAttributes, Operation, Settlement, System};

/// lapin's `Consumer`: a stream of deliveries, each a [`Delivery`] with its
/// CONSUMER span (see [`super::Channel`]). Clones share the subscription,
/// as lapin's do.
#[derive(Clone)]
pub struct Consumer {
    inner: lapin::Consumer,
    queue: String,
    tracing: Arc<ChannelTracing>,
}

impl Consumer {
    pub(crate) fn new(inner: lapin::Consumer, tracing: Arc<ChannelTracing>) -> Self {
        let queue = inner.queue().to_string();
        Self {
            inner,
            queue,
            tracing,
        }
    }

    /// lapin's [`Consumer::tag`](lapin::Consumer::tag), unchanged.
    pub fn tag(&self) -> ShortString {
        self.inner.tag()
    }

    /// lapin's [`Consumer::queue`](lapin::Consumer::queue), unchanged.
    pub fn queue(&self) -> ShortString {
        self.inner.queue()
    }

    /// The untraced lapin consumer: its deliveries carry no span.
    pub fn into_inner(self) -> lapin::Consumer {
        self.inner
    }
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl Stream for Consumer {
    type Item = lapin::Result<Delivery>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(delivery))) => Poll::Ready(Some(Ok(Delivery::traced(
                delivery,
                &this.queue,
                &this.tracing,
                Operation::Process,
            )))),
            Poll::Ready(Some(Err(err))) => Poll::Ready(Some(Err(err))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A lapin delivery with its span. It reads as lapin's
/// [`Delivery`](lapin::message::Delivery) (`delivery.data`,
/// `delivery.properties`, `&delivery` where `&lapin::message::Delivery` is
/// taken); its [`Delivery::ack`], [`Delivery::nack`] and
/// [`Delivery::reject`] take lapin's options and answer as lapin's do,
/// each a CLIENT span under the delivery's. Run the handler with
/// [`Delivery::in_span`] to put its work in the message's trace. The span
/// ends at the first settlement, or when the delivery is dropped (so does
/// the `messaging.process.duration` it measures).
pub struct Delivery {
    delivery: lapin::message::Delivery,
    extracted: ExtractedContext,
    cx: Context,
    queue: String,
    tracing: Arc<ChannelTracing>,
    /// `messaging.process.duration` of a consumed delivery; taken when it
    /// is first settled (or dropped).
    timer: Mutex<Option<ProcessTimer>>,
}

impl std::ops::Deref for Delivery {
    type Target = lapin::message::Delivery;

    fn deref(&self) -> &Self::Target {
        &self.delivery
    }
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("delivery", &self.delivery)
            .finish_non_exhaustive()
    }
}

/// A `basic.get` answer, as lapin's
/// [`BasicGetMessage`](lapin::message::BasicGetMessage), its delivery
/// traced.
#[derive(Debug)]
pub struct BasicGetMessage {
    /// The message, with its CLIENT `receive {queue}` span.
    pub delivery: Delivery,
    /// How many messages were left in the queue.
    pub message_count: lapin::types::MessageCount,
}

impl BasicGetMessage {
    pub(crate) fn traced(
        message: lapin::message::BasicGetMessage,
        queue: &str,
        tracing: &Arc<ChannelTracing>,
        operation: Operation,
    ) -> Self {
        Self {
            delivery: Delivery::traced(message.delivery, queue, tracing, operation),
            message_count: message.message_count,
        }
    }
}

impl Delivery {
    fn traced(
        delivery: lapin::message::Delivery,
        queue: &str,
        tracing: &Arc<ChannelTracing>,
        operation: Operation,
    ) -> Self {
        let received_at = Instant::now();
        let empty = FieldTable::default();
        let headers = delivery.properties.headers().as_ref().unwrap_or(&empty);
        let extracted = tracing.propagation.extract(&AmqpHeaderExtractor(headers));
        let delivered = super::span::Delivered {
            exchange: delivery.exchange.as_str(),
            routing_key: delivery.routing_key.as_str(),
            queue,
            delivery_tag: delivery.delivery_tag,
            redelivered: delivery.redelivered,
            properties: &delivery.properties,
            body_len: delivery.data.len(),
        };
        let instrumentation = &tracing.instrumentation;
        let Received {
            name,
            produced_at,
            process_series,
        } = super::span::received(
            &delivered,
            operation,
            &tracing.endpoint,
            instrumentation,
            None,
        );
        let attributes = || {
            super::span::attributes(
                &delivered,
                operation,
                &tracing.endpoint,
                instrumentation.rules(),
                tracing.record_body_size,
                None,
            )
        };
        let cx = match operation {
            Operation::Receive => {
                let links = instrument::link_to(&extracted, Vec::new());
                instrumentation.start(
                    instrument::SpanSpec::new(name, SpanKind::Client)
                        .links(links)
                        .runs_work(),
                    |parent| instrument::Attributes::for_parent(parent, attributes),
                )
            }
            _ => instrumentation.start_process_span_lazy(
                name,
                tracing.policy,
                &extracted,
                attributes,
            ),
        };
        instrumentation.record_queue_time(&cx, produced_at, &process_series);
        let timer = match operation {
            Operation::Process => Some(ProcessTimer::consumed(process_series, received_at)),
            // A `basic.get` is received, not processed here.
            _ => {
                process_series.count_consumed();
                None
            }
        };
        Delivery {
            delivery,
            extracted,
            cx,
            queue: queue.to_owned(),
            tracing: Arc::clone(tracing),
            timer: Mutex::new(timer),
        }
    }

    /// Runs `work` — the application's handling of this delivery — inside
    /// its span: the application's `#[instrument]` spans, log lines,
    /// OpenTelemetry spans and publishes inside are its children (after
    /// `.await`s too). A `work` that ends in `Err` marks the span ERROR
    /// with `error.type` (see [`HandlerOutcome`]).
    ///
    /// ```no_run
    /// # async fn handle(delivery: &lapin::message::Delivery) -> anyhow::Result<()> { Ok(()) }
    /// # async fn run(delivery: tracebridge::amqp::message::Delivery) -> anyhow::Result<()> {
    /// use tracebridge::amqp::options::{BasicAckOptions, BasicNackOptions};
    /// match delivery.in_span(handle(&delivery)).await {
    ///     Ok(()) => delivery.ack(BasicAckOptions::default()).await?,
    ///     Err(_) => delivery.nack(BasicNackOptions::default()).await?,
    /// };
    /// # Ok(()) }
    /// ```
    pub async fn in_span<W>(&self, work: W) -> W::Output
    where
        W: Future,
        W::Output: HandlerOutcome,
    {
        let output = instrument::in_context(&self.cx, work).await;
        if let Some((error_type, description)) = output.failure() {
            self.fail(error_type, description);
        }
        output
    }

    /// The context holding this delivery's span.
    pub fn context(&self) -> &Context {
        &self.cx
    }

    /// The creation context read from the headers (and any problems).
    pub fn extracted(&self) -> &ExtractedContext {
        &self.extracted
    }

    /// Marks handling failed: status ERROR and `error.type`.
    pub fn fail(&self, error_type: &str, description: impl Into<String>) {
        if let Some(timer) = self
            .timer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            timer.fail(error_type);
        }
        instrument::record_failure(&self.cx, error_type, description.into());
    }

    /// `basic.ack`, as lapin's `Acker::ack`, under a CLIENT span `ack`.
    pub async fn ack(&self, options: BasicAckOptions) -> lapin::Result<bool> {
        self.settle(Settlement::Ack, self.delivery.acker.ack(options))
            .await
    }

    /// `basic.nack`, as lapin's `Acker::nack`, under a CLIENT span `nack`.
    pub async fn nack(&self, options: BasicNackOptions) -> lapin::Result<bool> {
        self.settle(Settlement::Nack, self.delivery.acker.nack(options))
            .await
    }

    /// `basic.reject`, as lapin's `Acker::reject`, under a CLIENT span
    /// `reject`.
    pub async fn reject(&self, options: BasicRejectOptions) -> lapin::Result<bool> {
        self.settle(Settlement::Reject, self.delivery.acker.reject(options))
            .await
    }

    /// The untraced lapin delivery (its span ends).
    pub fn into_inner(self) -> lapin::message::Delivery {
        self.finish();
        self.delivery
    }

    fn destination(&self) -> Destination {
        Destination::rabbitmq_queue(
            self.delivery.exchange.as_str(),
            self.delivery.routing_key.as_str(),
            self.queue.as_str(),
        )
    }

    async fn settle(
        &self,
        settlement: Settlement,
        call: impl Future<Output = lapin::Result<bool>>,
    ) -> lapin::Result<bool> {
        let operation = Operation::Settle(settlement);
        let instrumentation = &self.tracing.instrumentation;
        let settle_cx = self.tracing.settle_spans.then(|| {
            let destination = self.destination();
            instrumentation.start(
                instrument::SpanSpec::new(
                    operation.shared_span_name(&destination),
                    SpanKind::Client,
                )
                .parent(&self.cx),
                |parent| {
                    instrument::Attributes::for_parent(parent, || {
                        let attributes = MessagingAttributes::new(
                            operation,
                            &destination,
                            instrumentation.rules(),
                        )
                        .delivery_tag(self.delivery.delivery_tag);
                        self.tracing.endpoint.apply(attributes).into_vec()
                    })
                },
            )
        });
        let started = Instant::now();
        let result = call.await;
        if instrumentation.metrics().enabled() {
            let failed = result.as_ref().err().map(error_type);
            instrumentation
                .series(operation, &self.destination(), None, &self.tracing.endpoint)
                .record_operation(started, failed.as_deref());
        }
        if let Some(cx) = &settle_cx {
            if let Err(err) = &result {
                instrument::record_failure(cx, &error_type(err), err.to_string());
            }
            cx.span().end();
        }
        if let Err(err) = &result {
            tracing::debug!(
                target: "tracebridge",
                operation = operation.name(System::RabbitMq),
                delivery_tag = self.delivery.delivery_tag,
                error = %err,
                "settling a delivery failed"
            );
        }
        self.finish();
        result
    }

    /// Ends the span and records the processing time, once.
    fn finish(&self) {
        let timer = self.timer.lock().unwrap_or_else(|p| p.into_inner()).take();
        drop(timer);
        self.cx.span().end();
    }
}
