//! A traced `basic.publish`: one PRODUCER span per message, its context in
//! the `headers` table, ended by the broker's confirm.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use lapin::options::BasicPublishOptions;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Confirmation};
use opentelemetry::Context;
use opentelemetry::trace::{SpanKind, TraceContextExt};

use super::carrier::AmqpHeaderExtractor;
use super::channel::ChannelTracing;
use super::{AmqpHeaderInjector, error_type};
use crate::error::{Error, Refusal};
use crate::instrument::{self, Attributes, SpanSpec};
use crate::metrics::SendTimer;
use crate::semconv::{Destination, MessagingAttributes, Operation};

/// One publish in flight: its span, its metrics, and where it went.
pub(crate) struct Publishing {
    cx: Context,
    timer: SendTimer,
    /// `{exchange}:{routing_key}`, as in the span name.
    destination: String,
}

/// Starts the publish span of a message to `exchange` / `routing_key`
/// under `parent` (`None`: the current context), writes its context into
/// `headers` (replacing trace headers there, keeping the rest) and stamps
/// the publish time when the message has none (the `timestamp` property
/// and a `timestamp_in_ms` header), so its consumer can tell how long it
/// waited. Returns the properties to publish with.
pub(crate) fn begin(
    tracing: &ChannelTracing,
    parent: Option<&Context>,
    exchange: &str,
    routing_key: &str,
    properties: BasicProperties,
    mut headers: FieldTable,
) -> (BasicProperties, Publishing) {
    let destination = Destination::rabbitmq(exchange, routing_key);
    let instrumentation = &tracing.instrumentation;
    let timer = instrumentation.time_send(&destination, &tracing.endpoint);
    let mut spec = SpanSpec::new(
        Operation::Send.shared_span_name(&destination),
        SpanKind::Producer,
    );
    // Only a parent handed in carries annotations (the relay's).
    let annotations = parent.map(instrument::send_annotations).unwrap_or_default();
    if let Some(parent) = parent {
        spec = spec.parent(parent);
    }
    let cx = instrumentation.start(spec, |parent| {
        Attributes::for_parent(parent, || {
            let attributes =
                MessagingAttributes::new(Operation::Send, &destination, instrumentation.rules())
                    .message_id(properties.message_id().as_ref().map(|id| id.as_str()))
                    .conversation_id(properties.correlation_id().as_ref().map(|id| id.as_str()))
                    .captured_headers(&AmqpHeaderExtractor(&headers));
            instrument::producer_attributes(attributes, &tracing.endpoint, annotations)
        })
    });
    tracing
        .propagation
        .inject(&cx, &mut AmqpHeaderInjector(&mut headers));
    // Lets the consumer measure how long the message waited: the standard
    // property in seconds, and the milliseconds in RabbitMQ's header for it.
    let now = properties.timestamp().is_none().then(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
    });
    if let Some(now) = now {
        let ms = i64::try_from(now.as_millis()).unwrap_or(i64::MAX);
        headers.insert(
            super::TIMESTAMP_IN_MS_HEADER.into(),
            lapin::types::AMQPValue::LongLongInt(ms),
        );
    }
    let mut properties = properties.with_headers(headers);
    if let Some(now) = now {
        properties = properties.with_timestamp(now.as_secs());
    }
    let publishing = Publishing {
        cx,
        timer,
        destination: destination.name(),
    };
    (properties, publishing)
}

impl Publishing {
    /// The publish span's context.
    pub(crate) fn context(&self) -> &Context {
        &self.cx
    }

    /// `basic.publish` itself failed: the span ends failed.
    pub(crate) fn failed(self, err: &lapin::Error) {
        let error_type = error_type(err);
        self.timer.finish(Some(&error_type));
        instrument::record_failure(&self.cx, &error_type, err.to_string());
        self.cx.span().end();
    }

    /// Ends the span with the broker's answer, as tracebridge's errors:
    /// a nack or a returned (unroutable) message is [`Error::Refused`].
    pub(crate) fn settle(self, answer: &lapin::Result<Confirmation>) -> Result<(), Error> {
        let outcome = match answer {
            Ok(Confirmation::Ack(None) | Confirmation::NotRequested) => Ok(()),
            Ok(Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned))) => {
                Err(Error::Refused {
                    destination: self.destination.clone(),
                    refusal: Refusal::Returned {
                        reply_code: returned.reply_code,
                        reply_text: returned.reply_text.to_string(),
                    },
                })
            }
            Ok(Confirmation::Nack(None)) => Err(Error::Refused {
                destination: self.destination.clone(),
                refusal: Refusal::Nacked,
            }),
            Err(source) => Err(Error::Publish {
                destination: self.destination.clone(),
                error_type: error_type(source),
                source: Box::new(source.clone()),
            }),
        };
        if let Err(err) = &outcome {
            instrument::record_failure(&self.cx, &err.error_type(), err.to_string());
        }
        self.timer
            .finish(outcome.as_ref().err().map(Error::error_type).as_deref());
        self.cx.span().end();
        outcome
    }
}

/// A publish waiting for the broker's confirm, inside the crate (the
/// relay's AMQP sink): answers in tracebridge's errors.
#[cfg(feature = "relay")]
pub(crate) struct Pending {
    pub(crate) confirm: lapin::PublisherConfirm,
    pub(crate) publishing: Publishing,
    // lapin closes a channel when its last handle is dropped: a confirm
    // still awaited keeps its channel open even if the publisher is gone.
    pub(crate) _channel: lapin::Channel,
}

#[cfg(feature = "relay")]
impl Pending {
    /// Waits for the broker's answer and ends the publish span.
    pub(crate) async fn confirmed(self) -> Result<(), Error> {
        let answer = self.confirm.await;
        self.publishing.settle(&answer)
    }
}

/// The broker's answer to a traced publish, as lapin's `PublisherConfirm`:
/// a future of [`lapin::Confirmation`]. The publish span ends when it
/// resolves — status ERROR and `error.type` for a nack (`nacked`) or a
/// mandatory message returned as unroutable (`unroutable`) — or, if it is
/// dropped unawaited, then. Unlike lapin's, it keeps its channel open
/// until it resolves, so the application may drop the channel meanwhile.
#[must_use = "the confirm says whether the broker took the message"]
pub struct PublisherConfirm {
    confirm: lapin::PublisherConfirm,
    publishing: Option<Publishing>,
    // lapin closes a channel when its last handle is dropped: a confirm
    // still awaited keeps its channel open, even once the application has
    // dropped the channel it published on.
    _channel: lapin::Channel,
}

impl PublisherConfirm {
    pub(crate) fn new(
        confirm: lapin::PublisherConfirm,
        publishing: Publishing,
        channel: lapin::Channel,
    ) -> Self {
        Self {
            confirm,
            publishing: Some(publishing),
            _channel: channel,
        }
    }

    /// The context of the publish span (its trace id is the message's).
    pub fn context(&self) -> Option<&Context> {
        self.publishing.as_ref().map(Publishing::context)
    }
}

impl std::fmt::Debug for PublisherConfirm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublisherConfirm")
            .field("confirm", &self.confirm)
            .finish_non_exhaustive()
    }
}

impl Future for PublisherConfirm {
    type Output = lapin::Result<Confirmation>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let answer = match Pin::new(&mut self.confirm).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(answer) => answer,
        };
        if let Some(publishing) = self.publishing.take() {
            // The application reads the refusal from the answer itself.
            let _ = publishing.settle(&answer);
        }
        Poll::Ready(answer)
    }
}

impl Drop for PublisherConfirm {
    fn drop(&mut self) {
        if let Some(publishing) = self.publishing.take() {
            publishing.cx.span().end();
        }
    }
}

/// Publishes `payload` with lapin and returns the confirm still pending.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn publish(
    channel: &lapin::Channel,
    tracing: &ChannelTracing,
    parent: Option<&Context>,
    exchange: &str,
    routing_key: &str,
    options: BasicPublishOptions,
    payload: &[u8],
    properties: BasicProperties,
    headers: FieldTable,
) -> lapin::Result<(lapin::PublisherConfirm, Publishing)> {
    let (properties, publishing) =
        begin(tracing, parent, exchange, routing_key, properties, headers);
    match channel
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            options,
            payload,
            properties,
        )
        .await
    {
        Ok(confirm) => Ok((confirm, publishing)),
        Err(err) => {
            publishing.failed(&err);
            Err(err)
        }
    }
}
