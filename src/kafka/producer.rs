//! [`TracedProducer`]: rdkafka's `FutureProducer` with a PRODUCER span per
//! record whose context travels in the record's headers.

use std::time::Duration;

use opentelemetry::Context;
use opentelemetry::trace::{SpanKind, TraceContextExt};
use rdkafka::ClientConfig;
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::FromClientConfigAndContext;
use rdkafka::message::ToBytes;
use rdkafka::producer::future_producer::OwnedDeliveryResult;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::{AsyncRuntime, DefaultRuntime};

use super::error_type;
use super::{KafkaHeaderExtractor, KafkaHeaderInjector};
use crate::instrument::{self, Instrumentation};
use crate::propagation::Propagation;
use crate::semconv::{Destination, Endpoint, MessagingAttributes, Operation};

/// A `FutureProducer` that traces every send.
///
/// `send` starts a PRODUCER span `send {topic}` as a child of the current
/// context (the current `tracing` span, else the current OpenTelemetry
/// context), injects its context into the record's headers (replacing trace
/// headers already there, keeping every other header), and ends the span when
/// the broker's delivery report arrives: partition and offset on success,
/// status ERROR and `error.type` on failure. The delivery result is returned
/// unchanged. Sends may be awaited concurrently: nothing waits on another.
///
/// ```no_run
/// # async fn run() -> Result<(), tracebridge::Error> {
/// use rdkafka::producer::FutureRecord;
/// let mut config = rdkafka::ClientConfig::new();
/// config.set("bootstrap.servers", "127.0.0.1:9092");
/// let producer = tracebridge::kafka::TracedProducer::from_config(&config)?;
/// producer
///     .send(FutureRecord::to("orders").key("o-1").payload("{}"), std::time::Duration::from_secs(5))
///     .await
///     .map_err(|(err, _msg)| err)
///     .ok();
/// # Ok(()) }
/// ```
///
/// A producer with your own [`ClientContext`] is wrapped the same way:
/// `TracedProducer::from_config_and_context(&config, MyContext)`.
pub struct TracedProducer<C = DefaultClientContext, R = DefaultRuntime>
where
    C: ClientContext + 'static,
{
    inner: FutureProducer<C, R>,
    endpoint: Endpoint,
    propagation: Propagation,
    instrumentation: Instrumentation,
}

impl TracedProducer {
    /// Creates the producer from a config the application already has.
    pub fn from_config(config: &ClientConfig) -> Result<Self, crate::Error> {
        Self::from_config_and_context(config, DefaultClientContext)
    }
}

impl<C, R> TracedProducer<C, R>
where
    C: ClientContext + 'static,
    R: AsyncRuntime,
{
    /// Creates the producer from a config and your own client context.
    pub fn from_config_and_context(
        config: &ClientConfig,
        context: C,
    ) -> Result<Self, crate::Error> {
        let inner = FutureProducer::from_config_and_context(config, context)
            .map_err(|source| super::client_error(config, source))?;
        Ok(Self::new(inner, super::endpoint(config)))
    }

    /// Wraps an existing producer; `endpoint` supplies `server.*` and
    /// `messaging.client.id`.
    pub fn new(inner: FutureProducer<C, R>, endpoint: Endpoint) -> Self {
        Self {
            inner,
            endpoint,
            propagation: Propagation::default(),
            instrumentation: Instrumentation::global(),
        }
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

    /// Sends `record` under a span that is a child of the current context.
    pub async fn send<K, P>(
        &self,
        record: FutureRecord<'_, K, P>,
        queue_timeout: Duration,
    ) -> OwnedDeliveryResult
    where
        K: ToBytes + ?Sized,
        P: ToBytes + ?Sized,
    {
        self.send_with_parent(&instrument::ambient_context(), record, queue_timeout)
            .await
    }

    /// Sends `record` under a span that is a child of `parent`.
    pub async fn send_with_parent<K, P>(
        &self,
        parent: &Context,
        mut record: FutureRecord<'_, K, P>,
        queue_timeout: Duration,
    ) -> OwnedDeliveryResult
    where
        K: ToBytes + ?Sized,
        P: ToBytes + ?Sized,
    {
        let destination = Destination::kafka(record.topic);
        let attributes = || {
            let mut attributes = MessagingAttributes::new(
                Operation::Send,
                &destination,
                self.instrumentation.rules(),
            )
            .kafka_key(record.key.map(ToBytes::to_bytes))
            .tombstone(record.payload.is_none());
            if let Some(partition) = record.partition {
                attributes = attributes.partition(partition);
            }
            if let Some(headers) = &record.headers {
                attributes = attributes.captured_headers(&KafkaHeaderExtractor(headers));
            }
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

        let mut injector = KafkaHeaderInjector::new(record.headers.take());
        self.propagation.inject(&cx, &mut injector);
        record = record.headers(injector.finish());

        let result = self.inner.send(record, queue_timeout).await;
        timer.finish(result.as_ref().err().map(|(e, _)| error_type(e)).as_deref());
        let span = cx.span();
        match &result {
            Ok(delivery) => {
                let learned = MessagingAttributes::later(self.instrumentation.rules())
                    .partition(delivery.partition)
                    .kafka_offset(delivery.offset);
                for kv in learned.into_vec() {
                    span.set_attribute(kv);
                }
            }
            Err((err, _)) => instrument::record_failure(&cx, &error_type(err), err.to_string()),
        }
        span.end();
        result
    }

    /// The wrapped producer.
    pub fn get_ref(&self) -> &FutureProducer<C, R> {
        &self.inner
    }

    /// The wrapped producer, mutably.
    pub fn get_mut(&mut self) -> &mut FutureProducer<C, R> {
        &mut self.inner
    }

    /// Unwraps the producer.
    pub fn into_inner(self) -> FutureProducer<C, R> {
        self.inner
    }
}
