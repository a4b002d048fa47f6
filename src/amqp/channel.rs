//! [`Channel`]: lapin's `Channel` with publishing and consuming traced.

use std::sync::Arc;

use lapin::message::BasicReturnMessage;
use lapin::options::{
    AccessRequestOptions, BasicAckOptions, BasicCancelOptions, BasicConsumeOptions,
    BasicGetOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    BasicRecoverAsyncOptions, BasicRecoverOptions, BasicRejectOptions, ChannelFlowOptions,
    ConfirmSelectOptions, ExchangeBindOptions, ExchangeDeclareOptions, ExchangeDeleteOptions,
    ExchangeUnbindOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
    QueuePurgeOptions,
};
use lapin::types::{
    Boolean, ChannelId, FieldTable, LongLongUInt, MessageCount, ReplyCode, ShortString, ShortUInt,
};
use lapin::{BasicProperties, ChannelStatus, ExchangeKind, Queue};

use super::consumer::{BasicGetMessage, Consumer};
#[cfg(feature = "relay")]
use super::publish::Pending;
use super::publish::{self, PublisherConfirm};
use crate::instrument::{Instrumentation, ParentPolicy};
use crate::propagation::Propagation;
use crate::semconv::{Endpoint, Operation};

/// lapin's `Channel`, with `basic_publish`, `basic_consume` and
/// `basic_get` traced and every other method lapin's own: the same names,
/// arguments and results, so code written against lapin's channel runs
/// unchanged.
///
/// * `basic_publish` is a PRODUCER span `publish {exchange}:{routing_key}`
///   whose context goes into the message's `headers`; it ends when the
///   returned [`PublisherConfirm`] resolves (with publisher confirms on,
///   when the broker answers).
/// * `basic_consume` gives a [`Consumer`] whose
///   [`Delivery`](super::message::Delivery)s each come with a CONSUMER span
///   `process {exchange}:{routing_key}:{queue}` in the publisher's trace;
///   their `ack` / `nack` / `reject` are CLIENT spans under it.
/// * `basic_get` gives a delivery with a CLIENT span `receive {queue}`.
///
/// Made by [`super::Connection::create_channel`], or from a lapin channel
/// with `Channel::from` (then name the broker with
/// [`Channel::with_server`] for the `server.*` attributes). It is not
/// lapin's type and does not turn into it, so it cannot be handed to code
/// that would publish untraced; [`Channel::get_ref`] gives lapin's channel
/// on purpose.
#[derive(Clone)]
pub struct Channel {
    inner: lapin::Channel,
    tracing: Arc<ChannelTracing>,
}

/// What every message of one channel shares.
#[derive(Clone, Debug)]
pub(crate) struct ChannelTracing {
    pub(crate) endpoint: Endpoint,
    pub(crate) propagation: Propagation,
    pub(crate) policy: ParentPolicy,
    pub(crate) record_body_size: bool,
    pub(crate) settle_spans: bool,
    pub(crate) instrumentation: Instrumentation,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("inner", &self.inner)
            .field("tracing", &self.tracing)
            .finish()
    }
}

/// Traces a lapin channel the application already has (no `server.*`
/// attributes until [`Channel::with_server`] names the broker).
impl From<lapin::Channel> for Channel {
    fn from(inner: lapin::Channel) -> Self {
        Self::new(inner, Endpoint::default())
    }
}

macro_rules! lapin_methods {
    ($( fn $name:ident(&self $(, $arg:ident: $ty:ty)* $(,)?) -> $ret:ty; )*) => {
        $(
            #[doc = concat!("lapin's [`Channel::", stringify!($name), "`](lapin::Channel::", stringify!($name), "), unchanged.")]
            pub async fn $name(&self $(, $arg: $ty)*) -> lapin::Result<$ret> {
                self.inner.$name($($arg),*).await
            }
        )*
    };
}

impl Channel {
    pub(crate) fn new(inner: lapin::Channel, endpoint: Endpoint) -> Self {
        Self {
            inner,
            tracing: Arc::new(ChannelTracing {
                endpoint,
                propagation: Propagation::default(),
                policy: ParentPolicy::default(),
                record_body_size: false,
                settle_spans: true,
                instrumentation: Instrumentation::global(),
            }),
        }
    }

    fn tracing_mut(&mut self) -> &mut ChannelTracing {
        // Options are set before the channel is shared; clones made
        // earlier, and consumers already started, keep theirs.
        Arc::make_mut(&mut self.tracing)
    }

    /// The broker, for the `server.address` / `server.port` attributes:
    /// its `amqp://` URL (credentials are not kept). Set by
    /// [`super::Connection::create_channel`].
    pub fn with_server(mut self, url: &str) -> Self {
        self.tracing_mut().endpoint = super::endpoint(url);
        self
    }

    /// The context formats read and written. Default: `tracecontext` and
    /// `baggage` (W3C).
    pub fn with_propagation(mut self, propagation: Propagation) -> Self {
        self.tracing_mut().propagation = propagation;
        self
    }

    /// Where process spans hang. Default: [`ParentPolicy::Join`].
    pub fn with_parent_policy(mut self, policy: ParentPolicy) -> Self {
        self.tracing_mut().policy = policy;
        self
    }

    /// Records `messaging.message.body.size` (opt-in, as the conventions
    /// say). Default: off.
    pub fn with_body_size(mut self, record: bool) -> Self {
        self.tracing_mut().record_body_size = record;
        self
    }

    /// Records acks, nacks and rejects as CLIENT spans. Default: on.
    pub fn with_settle_spans(mut self, enabled: bool) -> Self {
        self.tracing_mut().settle_spans = enabled;
        self
    }

    /// Where spans and metrics go. Default: [`Instrumentation::global`].
    pub fn with_instrumentation(mut self, instrumentation: Instrumentation) -> Self {
        self.tracing_mut().instrumentation = instrumentation;
        self
    }

    /// Publishes as lapin's `basic_publish`, under a PRODUCER span that is
    /// a child of the current context (the current `tracing` span, else
    /// the current OpenTelemetry context).
    pub async fn basic_publish(
        &self,
        exchange: ShortString,
        routing_key: ShortString,
        options: BasicPublishOptions,
        payload: &[u8],
        properties: BasicProperties,
    ) -> lapin::Result<PublisherConfirm> {
        // lapin cannot hand the table over, only lend it.
        let headers = properties.headers().clone().unwrap_or_default();
        let (confirm, publishing) = publish::publish(
            &self.inner,
            &self.tracing,
            None,
            exchange.as_str(),
            routing_key.as_str(),
            options,
            payload,
            properties,
            headers,
        )
        .await?;
        Ok(PublisherConfirm::new(
            confirm,
            publishing,
            self.inner.clone(),
        ))
    }

    /// Publishes under a span that is a child of `parent`, with the header
    /// table given apart (it replaces the one in `properties`: the relay
    /// builds it anyway, and a copy per message is saved); the confirm
    /// answers in tracebridge's errors.
    #[cfg(feature = "relay")]
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn publish_with_headers(
        &self,
        parent: &opentelemetry::Context,
        exchange: &str,
        routing_key: &str,
        options: BasicPublishOptions,
        properties: BasicProperties,
        headers: FieldTable,
        payload: &[u8],
    ) -> Result<Pending, crate::Error> {
        let (confirm, publishing) = publish::publish(
            &self.inner,
            &self.tracing,
            Some(parent),
            exchange,
            routing_key,
            options,
            payload,
            properties,
            headers,
        )
        .await
        .map_err(|source| crate::Error::Publish {
            destination: crate::semconv::Destination::rabbitmq(exchange, routing_key).name(),
            error_type: super::error_type(&source),
            source: Box::new(source),
        })?;
        Ok(Pending {
            confirm,
            publishing,
            _channel: self.inner.clone(),
        })
    }

    /// Consumes as lapin's `basic_consume`; each delivery comes with its
    /// process span.
    pub async fn basic_consume(
        &self,
        queue: ShortString,
        consumer_tag: ShortString,
        options: BasicConsumeOptions,
        arguments: FieldTable,
    ) -> lapin::Result<Consumer> {
        let inner = self
            .inner
            .basic_consume(queue, consumer_tag, options, arguments)
            .await?;
        Ok(Consumer::new(inner, Arc::clone(&self.tracing)))
    }

    /// Fetches one message as lapin's `basic_get`, under a CLIENT span
    /// `receive {queue}` that is a child of the current context and links
    /// the message's creation context.
    pub async fn basic_get(
        &self,
        queue: ShortString,
        options: BasicGetOptions,
    ) -> lapin::Result<Option<BasicGetMessage>> {
        let name = queue.to_string();
        let message = self.inner.basic_get(queue, options).await?;
        Ok(message.map(|message| {
            BasicGetMessage::traced(message, &name, &self.tracing, Operation::Receive)
        }))
    }

    lapin_methods! {
        fn close(&self, reply_code: ReplyCode, reply_text: ShortString) -> ();
        fn wait_for_recovery(&self, error: lapin::Error) -> ();
        fn exchange_declare(&self, exchange: ShortString, kind: ExchangeKind, options: ExchangeDeclareOptions, arguments: FieldTable) -> ();
        fn wait_for_confirms(&self) -> Vec<BasicReturnMessage>;
        fn basic_qos(&self, prefetch_count: ShortUInt, options: BasicQosOptions) -> ();
        fn basic_cancel(&self, consumer_tag: ShortString, options: BasicCancelOptions) -> ();
        fn basic_ack(&self, delivery_tag: LongLongUInt, options: BasicAckOptions) -> ();
        fn basic_reject(&self, delivery_tag: LongLongUInt, options: BasicRejectOptions) -> ();
        fn basic_recover_async(&self, options: BasicRecoverAsyncOptions) -> ();
        fn basic_recover(&self, options: BasicRecoverOptions) -> ();
        fn basic_nack(&self, delivery_tag: LongLongUInt, options: BasicNackOptions) -> ();
        fn channel_flow(&self, options: ChannelFlowOptions) -> Boolean;
        fn access_request(&self, realm: ShortString, options: AccessRequestOptions) -> ();
        fn exchange_delete(&self, exchange: ShortString, options: ExchangeDeleteOptions) -> ();
        fn exchange_bind(&self, destination: ShortString, source: ShortString, routing_key: ShortString, options: ExchangeBindOptions, arguments: FieldTable) -> ();
        fn exchange_unbind(&self, destination: ShortString, source: ShortString, routing_key: ShortString, options: ExchangeUnbindOptions, arguments: FieldTable) -> ();
        fn queue_declare(&self, queue: ShortString, options: QueueDeclareOptions, arguments: FieldTable) -> Queue;
        fn queue_bind(&self, queue: ShortString, exchange: ShortString, routing_key: ShortString, options: QueueBindOptions, arguments: FieldTable) -> ();
        fn queue_purge(&self, queue: ShortString, options: QueuePurgeOptions) -> MessageCount;
        fn queue_delete(&self, queue: ShortString, options: QueueDeleteOptions) -> MessageCount;
        fn queue_unbind(&self, queue: ShortString, exchange: ShortString, routing_key: ShortString, arguments: FieldTable) -> ();
        fn tx_select(&self) -> ();
        fn tx_commit(&self) -> ();
        fn tx_rollback(&self) -> ();
        fn confirm_select(&self, options: ConfirmSelectOptions) -> ();
    }

    /// lapin's [`Channel::status`](lapin::Channel::status), unchanged.
    pub fn status(&self) -> &ChannelStatus {
        self.inner.status()
    }

    /// lapin's [`Channel::id`](lapin::Channel::id), unchanged.
    pub fn id(&self) -> ChannelId {
        self.inner.id()
    }

    /// The untraced lapin channel: publishes through it carry no trace.
    pub fn get_ref(&self) -> &lapin::Channel {
        &self.inner
    }

    /// Unwraps the untraced lapin channel.
    pub fn into_inner(self) -> lapin::Channel {
        self.inner
    }
}
