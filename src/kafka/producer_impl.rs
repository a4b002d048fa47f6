//! [`FutureProducer`]: rdkafka's `FutureProducer`, every send traced.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use futures::channel::oneshot::Canceled;
use opentelemetry::Context;
use opentelemetry::trace::{SpanKind, TraceContextExt};
use rdkafka::ClientConfig;
use rdkafka::TopicPartitionList;
use rdkafka::client::{Client, ClientContext, DefaultClientContext};
use rdkafka::config::{FromClientConfig, FromClientConfigAndContext};
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::ToBytes;
use rdkafka::producer::future_producer::{FutureProducerContext, OwnedDeliveryResult};
use rdkafka::producer::{FutureRecord, Producer, PurgeConfig};
use rdkafka::util::{AsyncRuntime, DefaultRuntime, Timeout};

use super::{KafkaHeaderExtractor, KafkaHeaderInjector, error_type};
use crate::instrument::{self, Attributes, Instrumentation, SpanSpec};
use crate::metrics::SendTimer;
use crate::propagation::Propagation;
use crate::semconv::{Destination, Endpoint, MessagingAttributes, Operation};

/// rdkafka's `FutureProducer`, every send traced: the same name, the same
/// methods with the same arguments and results, so swapping the import is
/// the whole change.
///
/// Each `send` (and `send_result`) is a PRODUCER span `send {topic}`, a
/// child of the current context (the current `tracing` span, else the
/// current OpenTelemetry context), whose context is written into the
/// record's headers — replacing trace headers already there, keeping every
/// other header. The span ends with the broker's delivery report:
/// partition and offset on success, status ERROR and `error.type` on
/// failure. Sends may be awaited concurrently; nothing waits on another.
///
/// ```no_run
/// # async fn run() -> Result<(), rdkafka::error::KafkaError> {
/// use std::time::Duration;
/// use rdkafka::ClientConfig;
/// use tracebridge::kafka::producer::{FutureProducer, FutureRecord};
///
/// let producer: FutureProducer = ClientConfig::new()
///     .set("bootstrap.servers", "127.0.0.1:9092")
///     .create()?;
/// producer
///     .send(FutureRecord::to("orders").key("o-1").payload("{}"), Duration::from_secs(5))
///     .await
///     .map_err(|(err, _message)| err)?;
/// # Ok(()) }
/// ```
///
/// It is not rdkafka's type and does not turn into it: a function that
/// takes `&rdkafka::producer::FutureProducer` does not compile with it,
/// rather than quietly sending untraced. [`FutureProducer::get_ref`] and
/// [`FutureProducer::into_inner`] give the untraced producer on purpose.
pub struct FutureProducer<C = DefaultClientContext, R = DefaultRuntime>
where
    C: ClientContext + 'static,
{
    inner: rdkafka::producer::FutureProducer<C, R>,
    tracing: Arc<SendTracing>,
}

/// What every send of one producer shares.
#[derive(Clone)]
struct SendTracing {
    endpoint: Endpoint,
    propagation: Propagation,
    instrumentation: Instrumentation,
}

impl<C: ClientContext + 'static, R> Clone for FutureProducer<C, R> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            tracing: Arc::clone(&self.tracing),
        }
    }
}

impl<R: AsyncRuntime> FromClientConfig for FutureProducer<DefaultClientContext, R> {
    fn from_config(config: &ClientConfig) -> KafkaResult<Self> {
        rdkafka::producer::FutureProducer::from_config(config).map(Self::from)
    }
}

impl<C, R> FromClientConfigAndContext<C> for FutureProducer<C, R>
where
    C: ClientContext + 'static,
    R: AsyncRuntime,
{
    fn from_config_and_context(config: &ClientConfig, context: C) -> KafkaResult<Self> {
        rdkafka::producer::FutureProducer::from_config_and_context(config, context).map(Self::from)
    }
}

/// Traces an rdkafka producer the application already made.
impl<C, R> From<rdkafka::producer::FutureProducer<C, R>> for FutureProducer<C, R>
where
    C: ClientContext + 'static,
    R: AsyncRuntime,
{
    fn from(inner: rdkafka::producer::FutureProducer<C, R>) -> Self {
        let endpoint = super::client_config::identity(inner.client().native_client())
            .endpoint
            .clone();
        Self {
            inner,
            tracing: Arc::new(SendTracing {
                endpoint,
                propagation: Propagation::default(),
                instrumentation: Instrumentation::global(),
            }),
        }
    }
}

impl<C, R> FutureProducer<C, R>
where
    C: ClientContext + 'static,
    R: AsyncRuntime,
{
    /// The context formats written into headers. Default: `tracecontext`
    /// and `baggage` (W3C).
    pub fn with_propagation(mut self, propagation: Propagation) -> Self {
        self.tracing_mut().propagation = propagation;
        self
    }

    /// Where spans and metrics go. Default: [`Instrumentation::global`].
    pub fn with_instrumentation(mut self, instrumentation: Instrumentation) -> Self {
        self.tracing_mut().instrumentation = instrumentation;
        self
    }

    fn tracing_mut(&mut self) -> &mut SendTracing {
        // Options are set before the producer is shared; a clone made
        // earlier keeps the options it had.
        Arc::make_mut(&mut self.tracing)
    }

    /// Sends `record` and waits for its delivery report, as rdkafka's
    /// `send` does (retrying while the local queue is full, up to
    /// `queue_timeout`), under a PRODUCER span.
    pub async fn send<K, P, T>(
        &self,
        record: FutureRecord<'_, K, P>,
        queue_timeout: T,
    ) -> OwnedDeliveryResult
    where
        K: ToBytes + ?Sized,
        P: ToBytes + ?Sized,
        T: Into<Timeout>,
    {
        self.send_under(None, record, queue_timeout).await
    }

    /// Enqueues `record` without waiting, as rdkafka's `send_result`; the
    /// span ends when the returned future yields the delivery report. A
    /// record handed back (the queue is full) carries the trace headers.
    #[allow(clippy::result_large_err)]
    pub fn send_result<'a, K, P>(
        &self,
        record: FutureRecord<'a, K, P>,
    ) -> Result<DeliveryFuture, (KafkaError, FutureRecord<'a, K, P>)>
    where
        K: ToBytes + ?Sized,
        P: ToBytes + ?Sized,
    {
        let (record, sending) = self.tracing.begin(None, record);
        match self.inner.send_result(record) {
            Ok(inner) => Ok(DeliveryFuture {
                inner,
                sending: Some(sending),
            }),
            Err((err, record)) => {
                sending.failed(&err);
                Err((err, record))
            }
        }
    }

    /// Polls the producer, as rdkafka's `poll`.
    pub fn poll<T: Into<Timeout>>(&self, timeout: T) {
        self.inner.poll(timeout);
    }

    /// Sends `record` under a span that is a child of `parent` (the relay
    /// hands its process span's context) or, for `None`, of the current
    /// context.
    pub(crate) async fn send_under<K, P, T>(
        &self,
        parent: Option<&Context>,
        record: FutureRecord<'_, K, P>,
        queue_timeout: T,
    ) -> OwnedDeliveryResult
    where
        K: ToBytes + ?Sized,
        P: ToBytes + ?Sized,
        T: Into<Timeout>,
    {
        let (record, sending) = self.tracing.begin(parent, record);
        let result = self.inner.send(record, queue_timeout).await;
        sending.finish(&result);
        result
    }

    /// The untraced producer: sends through it carry no trace.
    pub fn get_ref(&self) -> &rdkafka::producer::FutureProducer<C, R> {
        &self.inner
    }

    /// Unwraps the untraced producer.
    pub fn into_inner(self) -> rdkafka::producer::FutureProducer<C, R> {
        self.inner
    }
}

/// One send in flight: its span and its metrics.
struct Sending {
    cx: Context,
    timer: SendTimer,
    tracing: Arc<SendTracing>,
}

impl SendTracing {
    /// Starts the send's span and writes its context into `record`.
    fn begin<'a, K, P>(
        self: &Arc<Self>,
        parent: Option<&Context>,
        mut record: FutureRecord<'a, K, P>,
    ) -> (FutureRecord<'a, K, P>, Sending)
    where
        K: ToBytes + ?Sized,
        P: ToBytes + ?Sized,
    {
        let destination = Destination::kafka(record.topic);
        let timer = self.instrumentation.time_send(&destination, &self.endpoint);
        let mut spec = SpanSpec::new(
            Operation::Send.shared_span_name(&destination),
            SpanKind::Producer,
        );
        // Only a parent handed in carries annotations (the relay's).
        let annotations = parent.map(instrument::send_annotations).unwrap_or_default();
        if let Some(parent) = parent {
            spec = spec.parent(parent);
        }
        let cx = self.instrumentation.start(spec, |parent| {
            Attributes::for_parent(parent, || {
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
                instrument::producer_attributes(attributes, &self.endpoint, annotations)
            })
        });
        let mut injector = KafkaHeaderInjector::new(record.headers.take());
        self.propagation.inject(&cx, &mut injector);
        record = record.headers(injector.finish());
        let sending = Sending {
            cx,
            timer,
            tracing: Arc::clone(self),
        };
        (record, sending)
    }
}

impl Sending {
    /// Ends the span with the delivery report.
    fn finish(self, result: &OwnedDeliveryResult) {
        match result {
            Ok(delivery) => {
                let span = self.cx.span();
                if span.is_recording() {
                    let learned = MessagingAttributes::later(self.tracing.instrumentation.rules())
                        .partition(delivery.partition)
                        .kafka_offset(delivery.offset);
                    for kv in learned.into_vec() {
                        span.set_attribute(kv);
                    }
                }
                self.timer.finish(None);
                span.end();
            }
            Err((err, _)) => self.failed(err),
        }
    }

    /// Ends the span as failed.
    fn failed(self, err: &KafkaError) {
        let error_type = error_type(err);
        self.timer.finish(Some(&error_type));
        instrument::record_failure(&self.cx, &error_type, err.to_string());
        self.cx.span().end();
    }
}

/// The delivery report of a [`FutureProducer::send_result`], as rdkafka's
/// `DeliveryFuture`; the send's span ends when it resolves (or, unresolved,
/// when this is dropped).
#[must_use = "the delivery report says whether the broker took the message"]
pub struct DeliveryFuture {
    inner: rdkafka::producer::DeliveryFuture,
    sending: Option<Sending>,
}

impl Future for DeliveryFuture {
    type Output = Result<OwnedDeliveryResult, Canceled>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let outcome = match Pin::new(&mut self.inner).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(outcome) => outcome,
        };
        if let Some(sending) = self.sending.take() {
            match &outcome {
                Ok(result) => sending.finish(result),
                Err(Canceled) => sending.failed(&KafkaError::Canceled),
            }
        }
        Poll::Ready(outcome)
    }
}

impl Drop for DeliveryFuture {
    fn drop(&mut self) {
        if let Some(sending) = self.sending.take() {
            sending.cx.span().end();
        }
    }
}

impl<C, R> Producer<FutureProducerContext<C>> for FutureProducer<C, R>
where
    C: ClientContext + 'static,
    R: AsyncRuntime,
{
    fn client(&self) -> &Client<FutureProducerContext<C>> {
        self.inner.client()
    }

    fn in_flight_count(&self) -> i32 {
        self.inner.in_flight_count()
    }

    fn flush<T: Into<Timeout>>(&self, timeout: T) -> KafkaResult<()> {
        self.inner.flush(timeout)
    }

    fn purge(&self, flags: PurgeConfig) {
        self.inner.purge(flags)
    }

    fn init_transactions<T: Into<Timeout>>(&self, timeout: T) -> KafkaResult<()> {
        self.inner.init_transactions(timeout)
    }

    fn begin_transaction(&self) -> KafkaResult<()> {
        self.inner.begin_transaction()
    }

    fn send_offsets_to_transaction<T: Into<Timeout>>(
        &self,
        offsets: &TopicPartitionList,
        cgm: &ConsumerGroupMetadata,
        timeout: T,
    ) -> KafkaResult<()> {
        self.inner
            .send_offsets_to_transaction(offsets, cgm, timeout)
    }

    fn commit_transaction<T: Into<Timeout>>(&self, timeout: T) -> KafkaResult<()> {
        self.inner.commit_transaction(timeout)
    }

    fn abort_transaction<T: Into<Timeout>>(&self, timeout: T) -> KafkaResult<()> {
        self.inner.abort_transaction(timeout)
    }
}
