//! [`TracedPublisher`]: publishes on a lapin channel with publisher confirms,
//! one PRODUCER span per message that ends with the broker's confirm.

use std::time::{SystemTime, UNIX_EPOCH};

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Confirmation, PublisherConfirm};
use opentelemetry::Context;
use opentelemetry::trace::{SpanKind, TraceContextExt};

use super::carrier::AmqpHeaderExtractor;
use super::{AmqpHeaderInjector, error_type};
use crate::instrument::{self, Instrumentation};
use crate::metrics::SendTimer;
use crate::propagation::Propagation;
use crate::semconv::{Destination, Endpoint, MessagingAttributes, Operation};
use crate::{Error, Refusal};

/// Publishes with a PRODUCER span `publish {exchange}:{routing_key}` per
/// message, its context injected into the `headers` table (as long strings,
/// replacing trace headers already there, other headers untouched).
///
/// [`TracedPublisher::publish`] returns as soon as the message is handed to
/// the channel, with a [`PendingConfirm`]: keep as many in flight as you
/// like and await them together — nothing waits on confirms one by one. The
/// span ends when the broker confirms; a nack, or a mandatory message the
/// broker returns as unroutable, sets status ERROR and `error.type` and is
/// returned as [`Error::Refused`].
///
/// ```no_run
/// # async fn run(channel: lapin::Channel) -> Result<(), tracebridge::Error> {
/// use tracebridge::amqp::TracedPublisher;
/// let endpoint = tracebridge::amqp::endpoint("amqp://127.0.0.1:5672/%2f");
/// let publisher = TracedPublisher::new(channel, endpoint).await?;
/// let mut pending = Vec::new();
/// for order in ["o-1", "o-2"] {
///     pending.push(
///         publisher
///             .publish("orders", "order.created", Default::default(), Default::default(), order.as_bytes())
///             .await?,
///     );
/// }
/// for confirm in pending {
///     confirm.confirmed().await?;
/// }
/// # Ok(()) }
/// ```
pub struct TracedPublisher {
    inner: Channel,
    endpoint: Endpoint,
    propagation: Propagation,
    instrumentation: Instrumentation,
}

/// A published message waiting for the broker's confirm.
#[must_use = "await `confirmed()` to learn whether the broker took the message"]
pub struct PendingConfirm {
    confirm: PublisherConfirm,
    cx: Context,
    destination: String,
    /// The send's metrics, recorded with the broker's answer.
    timer: SendTimer,
    // lapin closes a channel when its last handle is dropped: a confirm
    // still awaited keeps its channel open even if the publisher is gone.
    _channel: Channel,
}

impl PendingConfirm {
    /// The context of the publish span (its trace id is the message's).
    pub fn context(&self) -> &Context {
        &self.cx
    }

    /// Waits for the broker's answer and ends the publish span.
    pub async fn confirmed(self) -> Result<(), Error> {
        let outcome = match self.confirm.await {
            Ok(Confirmation::Ack(None) | Confirmation::NotRequested) => Ok(()),
            Ok(Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned))) => {
                Err(Error::Refused {
                    destination: self.destination,
                    refusal: Refusal::Returned {
                        reply_code: returned.reply_code,
                        reply_text: returned.reply_text.to_string(),
                    },
                })
            }
            Ok(Confirmation::Nack(None)) => Err(Error::Refused {
                destination: self.destination,
                refusal: Refusal::Nacked,
            }),
            Err(source) => {
                instrument::record_failure(&self.cx, &error_type(&source), source.to_string());
                Err(Error::Publish {
                    destination: self.destination,
                    source: Box::new(source),
                })
            }
        };
        if let Err(Error::Refused { refusal, .. }) = &outcome {
            instrument::record_failure(&self.cx, refusal.error_type(), refusal.to_string());
        }
        self.timer
            .finish(outcome.as_ref().err().map(Error::error_type).as_deref());
        self.cx.span().end();
        outcome
    }
}

impl TracedPublisher {
    /// Wraps `channel`, enabling publisher confirms on it.
    pub async fn new(channel: Channel, endpoint: Endpoint) -> Result<Self, Error> {
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|source| Error::Connect {
                target: endpoint.address.as_deref().unwrap_or("amqp").to_owned(),
                source: Box::new(source),
            })?;
        Ok(Self {
            inner: channel,
            endpoint,
            propagation: Propagation::default(),
            instrumentation: Instrumentation::global(),
        })
    }

    /// Formats to write. Default: `tracecontext` + `baggage`.
    pub fn with_propagation(mut self, propagation: Propagation) -> Self {
        self.propagation = propagation;
        self
    }

    /// Tracer and meters to use. Default: the global providers.
    pub fn with_instrumentation(mut self, instrumentation: Instrumentation) -> Self {
        self.instrumentation = instrumentation;
        self
    }

    /// Publishes under a span that is a child of the current context (the
    /// current `tracing` span, else the current OpenTelemetry context).
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        options: BasicPublishOptions,
        properties: BasicProperties,
        payload: &[u8],
    ) -> Result<PendingConfirm, Error> {
        let parent = instrument::ambient_context();
        self.publish_with_parent(&parent, exchange, routing_key, options, properties, payload)
            .await
    }

    /// Publishes under a span that is a child of `parent`.
    pub async fn publish_with_parent(
        &self,
        parent: &Context,
        exchange: &str,
        routing_key: &str,
        options: BasicPublishOptions,
        properties: BasicProperties,
        payload: &[u8],
    ) -> Result<PendingConfirm, Error> {
        // lapin cannot hand the table over, only lend it.
        let headers = properties.headers().clone().unwrap_or_default();
        self.publish_with_headers(
            parent,
            exchange,
            routing_key,
            options,
            properties,
            headers,
            payload,
        )
        .await
    }

    /// [`TracedPublisher::publish_with_parent`] with the header table given
    /// apart (it replaces the one in `properties`): callers that build the
    /// table anyway, like the relay, avoid a copy per message.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn publish_with_headers(
        &self,
        parent: &Context,
        exchange: &str,
        routing_key: &str,
        options: BasicPublishOptions,
        properties: BasicProperties,
        mut headers: FieldTable,
        payload: &[u8],
    ) -> Result<PendingConfirm, Error> {
        let destination = Destination::rabbitmq(exchange, routing_key);
        let attributes = || {
            let attributes = MessagingAttributes::new(
                Operation::Send,
                &destination,
                self.instrumentation.rules(),
            )
            .message_id(properties.message_id().as_ref().map(|id| id.as_str()))
            .conversation_id(properties.correlation_id().as_ref().map(|id| id.as_str()))
            .captured_headers(&AmqpHeaderExtractor(&headers));
            instrument::producer_attributes(attributes, &self.endpoint, parent)
        };
        let timer = self.instrumentation.time_send(&destination, &self.endpoint);
        let cx = self.instrumentation.start_span_lazy(
            Operation::Send.shared_span_name(&destination),
            SpanKind::Producer,
            parent,
            Vec::new(),
            attributes,
        );

        self.propagation
            .inject(&cx, &mut AmqpHeaderInjector(&mut headers));
        let mut properties = properties.with_headers(headers);
        if properties.timestamp().is_none() {
            // Lets the consumer measure how long the message waited.
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default();
            properties = properties.with_timestamp(now);
        }

        let destination = destination.name();
        match self
            .inner
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                options,
                payload,
                properties,
            )
            .await
        {
            Ok(confirm) => Ok(PendingConfirm {
                confirm,
                cx,
                destination,
                timer,
                _channel: self.inner.clone(),
            }),
            Err(source) => {
                timer.finish(Some(&error_type(&source)));
                instrument::record_failure(&cx, &error_type(&source), source.to_string());
                cx.span().end();
                Err(Error::Publish {
                    destination,
                    source: Box::new(source),
                })
            }
        }
    }

    /// The wrapped channel.
    pub fn get_ref(&self) -> &Channel {
        &self.inner
    }

    /// The wrapped channel, mutably.
    pub fn get_mut(&mut self) -> &mut Channel {
        &mut self.inner
    }

    /// Unwraps the channel.
    pub fn into_inner(self) -> Channel {
        self.inner
    }
}
