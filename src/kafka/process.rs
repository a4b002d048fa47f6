//! The consumer side as an extension of the application's own rdkafka
//! consumer: [`process`] wraps the one line that hands a message to its
//! handler.

use std::future::Future;
use std::time::Instant;

use opentelemetry::Context;
use opentelemetry::trace::{SpanKind, TraceContextExt};
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaResult;
use rdkafka::message::{BorrowedMessage, Message};

use super::KafkaHeaderIndex;
use super::client_config::{self, ClientIdentity};
use crate::instrument::{
    self, Attributes, HandlerOutcome, Instrumentation, ParentPolicy, SpanSpec,
};
use crate::metrics::ProcessTimer;
use crate::propagation::{ExtractedContext, HeaderReader, HeaderVec, Propagation};
use crate::semconv::{Destination, MessagingAttributes, Operation, Settlement, System};

/// Runs `work` — the application's handling of `message` — inside the
/// message's CONSUMER span, with [`ConsumerTracing`]'s defaults.
///
/// The span `process {topic}` is a child of the context the producer wrote
/// into the message's headers, with a link to it ([`ParentPolicy::Join`]),
/// so the asynchronous hop continues the producer's trace. It names the
/// consumer group and broker of `consumer`, the partition, offset, key and
/// tombstone flag, and how long the message waited in the broker. The
/// application's `#[instrument]` spans, log lines, OpenTelemetry spans and
/// sends inside `work` are its children (after `.await`s too; tasks
/// spawned with `.in_current_span()` follow). A `work` that ends in `Err`
/// marks the span ERROR with `error.type` (see [`HandlerOutcome`]). A
/// message without usable trace headers still runs: its span starts a new
/// trace and says why in `tracebridge.context.invalid`.
///
/// ```no_run
/// # use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
/// # use rdkafka::message::BorrowedMessage;
/// # async fn handle(message: &BorrowedMessage<'_>) -> anyhow::Result<()> { Ok(()) }
/// # async fn run(consumer: StreamConsumer) -> anyhow::Result<()> {
/// loop {
///     let message = consumer.recv().await?;
///     tracebridge::kafka::process(&consumer, &message, handle(&message)).await?;
///     consumer.commit_message(&message, CommitMode::Async)?;
/// }
/// # }
/// ```
pub async fn process<C, K, W>(consumer: &K, message: &BorrowedMessage<'_>, work: W) -> W::Output
where
    C: ConsumerContext + 'static,
    K: Consumer<C>,
    W: Future,
    W::Output: HandlerOutcome,
{
    defaults().process(consumer, message, work).await
}

/// Runs `work` on a batch of `messages` inside one CONSUMER span
/// `process {topic}` with `messaging.batch.message_count` and one link per
/// message (carrying its partition and offset), with
/// [`ConsumerTracing`]'s defaults. No one message's context becomes the
/// batch's parent: the span is a child of the current context.
pub async fn process_batch<C, K, W>(
    consumer: &K,
    messages: &[BorrowedMessage<'_>],
    work: W,
) -> W::Output
where
    C: ConsumerContext + 'static,
    K: Consumer<C>,
    W: Future,
    W::Output: HandlerOutcome,
{
    defaults().process_batch(consumer, messages, work).await
}

/// Commits `message`'s offset as rdkafka's `commit_message` does, under a
/// CLIENT span `commit {topic}` that is a child of the current context (so
/// inside the work given to [`process`], of the message's span).
pub fn commit<C, K>(
    consumer: &K,
    message: &BorrowedMessage<'_>,
    mode: CommitMode,
) -> KafkaResult<()>
where
    C: ConsumerContext + 'static,
    K: Consumer<C>,
{
    defaults().commit(consumer, message, mode)
}

/// The options of the free functions, made once: the global providers are
/// looked up at the first message, the conventions read from the
/// environment once.
fn defaults() -> &'static ConsumerTracing {
    static DEFAULTS: std::sync::LazyLock<ConsumerTracing> =
        std::sync::LazyLock::new(ConsumerTracing::default);
    &DEFAULTS
}

/// How consumed messages are traced: where their spans hang, which header
/// formats are read, and where spans and metrics go. [`process`],
/// [`process_batch`] and [`commit`] use the defaults; set options here and
/// call the methods of the same names:
///
/// ```no_run
/// # use rdkafka::consumer::StreamConsumer;
/// # async fn handle(message: &rdkafka::message::BorrowedMessage<'_>) {}
/// # async fn run(consumer: StreamConsumer) -> anyhow::Result<()> {
/// use tracebridge::ParentPolicy;
/// use tracebridge::kafka::ConsumerTracing;
///
/// let tracing = ConsumerTracing::default().with_parent_policy(ParentPolicy::Link);
/// let message = consumer.recv().await?;
/// tracing.process(&consumer, &message, handle(&message)).await;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Default)]
pub struct ConsumerTracing {
    propagation: Propagation,
    policy: ParentPolicy,
    record_body_size: bool,
    instrumentation: Instrumentation,
}

impl ConsumerTracing {
    /// The formats read from headers. Default: `tracecontext` and
    /// `baggage` (W3C).
    pub fn with_propagation(mut self, propagation: Propagation) -> Self {
        self.propagation = propagation;
        self
    }

    /// Where process spans hang. Default: [`ParentPolicy::Join`].
    pub fn with_parent_policy(mut self, policy: ParentPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Records `messaging.message.body.size` (opt-in, as the conventions
    /// say). Default: off.
    pub fn with_body_size(mut self, record: bool) -> Self {
        self.record_body_size = record;
        self
    }

    /// Where spans and metrics go. Default: [`Instrumentation::global`].
    pub fn with_instrumentation(mut self, instrumentation: Instrumentation) -> Self {
        self.instrumentation = instrumentation;
        self
    }

    /// [`process`] with these options.
    pub async fn process<C, K, W>(
        &self,
        consumer: &K,
        message: &BorrowedMessage<'_>,
        work: W,
    ) -> W::Output
    where
        C: ConsumerContext + 'static,
        K: Consumer<C>,
        W: Future,
        W::Output: HandlerOutcome,
    {
        let (cx, timer) = self.start(consumer, message);
        let output = instrument::in_context(&cx, work).await;
        if let Some((error_type, description)) = output.failure() {
            timer.fail(error_type);
            instrument::record_failure(&cx, error_type, description);
        }
        cx.span().end();
        drop(timer);
        output
    }

    /// The process span of `message` and its metrics' timer.
    pub(crate) fn start<C, K>(
        &self,
        consumer: &K,
        message: &BorrowedMessage<'_>,
    ) -> (Context, ProcessTimer)
    where
        C: ConsumerContext + 'static,
        K: Consumer<C>,
    {
        let received_at = Instant::now();
        let identity = client_config::identity(consumer.client().native_client());
        // Read once: extraction and the span's captured headers look here.
        let headers = message
            .headers()
            .map(KafkaHeaderIndex::new)
            .unwrap_or_default();
        let extracted = self.propagation.extract(&headers);
        let record = record(message, &identity);
        let received =
            super::span::received(&record, &identity.endpoint, &self.instrumentation, None);
        let headers: &dyn HeaderReader = &headers;
        let cx = self.instrumentation.start_process_span_lazy(
            received.name,
            self.policy,
            &extracted,
            || {
                super::span::attributes(
                    &record,
                    headers,
                    &identity.endpoint,
                    self.instrumentation.rules(),
                    self.record_body_size,
                    None,
                )
            },
        );
        self.instrumentation
            .record_queue_time(&cx, received.produced_at, &received.process_series);
        let timer = ProcessTimer::consumed(received.process_series, received_at);
        (cx, timer)
    }

    /// [`process_batch`] with these options.
    pub async fn process_batch<C, K, W>(
        &self,
        consumer: &K,
        messages: &[BorrowedMessage<'_>],
        work: W,
    ) -> W::Output
    where
        C: ConsumerContext + 'static,
        K: Consumer<C>,
        W: Future,
        W::Output: HandlerOutcome,
    {
        let started = Instant::now();
        let identity = client_config::identity(consumer.client().native_client());
        let group = identity.group.as_deref();
        let rules = self.instrumentation.rules();
        let links = messages
            .iter()
            .flat_map(|message| {
                let attributes = MessagingAttributes::later(rules)
                    .partition(message.partition())
                    .kafka_offset(message.offset())
                    .into_vec();
                instrument::link_to(&self.extract(message), attributes)
            })
            .collect();
        let first_topic = messages.first().map_or("", |m| m.topic());
        let one_topic = messages.iter().all(|m| m.topic() == first_topic);
        let destination = Destination::kafka(first_topic);
        let name = if one_topic {
            Operation::Process.shared_span_name(&destination)
        } else {
            // Several topics: no single destination to name.
            Operation::Process.name(System::Kafka).into()
        };
        let metrics = self.instrumentation.metrics();
        if metrics.enabled() {
            for message in messages {
                self.instrumentation
                    .series(
                        Operation::Receive,
                        &Destination::kafka(message.topic()),
                        group,
                        &identity.endpoint,
                    )
                    .count_consumed();
            }
        }
        let cx = self.instrumentation.start(
            SpanSpec::new(name, SpanKind::Consumer)
                .links(links)
                .runs_work(),
            |_| {
                let mut attributes =
                    MessagingAttributes::new(Operation::Process, &destination, rules)
                        .batch_count(messages.len());
                if !one_topic {
                    attributes = attributes.without(rules.conventions.keys().destination_name);
                }
                if let Some(group) = group {
                    attributes = attributes.consumer_group(group);
                }
                Attributes::<fn() -> Vec<_>>::Now(identity.endpoint.apply(attributes).into_vec())
            },
        );
        let output = instrument::in_context(&cx, work).await;
        let failure = output.failure();
        if metrics.enabled() {
            // Once a batch, so built each time: a batch of several topics
            // has no destination name.
            let mut process = MessagingAttributes::metric(
                Operation::Process,
                &destination,
                group,
                &identity.endpoint,
                rules,
            )
            .into_vec();
            if !one_topic {
                let key = rules.conventions.keys().destination_name;
                process.retain(|kv| kv.key.as_str() != key);
            }
            if let Some((error_type, _)) = &failure {
                process.push(crate::semconv::error_type(*error_type));
            }
            metrics.record_process(started, &process);
        }
        if let Some((error_type, description)) = failure {
            instrument::record_failure(&cx, error_type, description);
        }
        cx.span().end();
        output
    }

    /// [`commit`] with these options.
    pub fn commit<C, K>(
        &self,
        consumer: &K,
        message: &BorrowedMessage<'_>,
        mode: CommitMode,
    ) -> KafkaResult<()>
    where
        C: ConsumerContext + 'static,
        K: Consumer<C>,
    {
        let operation = Operation::Settle(Settlement::Commit);
        let started = Instant::now();
        let identity = client_config::identity(consumer.client().native_client());
        let destination = Destination::kafka(message.topic());
        let cx = self.instrumentation.start(
            SpanSpec::new(operation.shared_span_name(&destination), SpanKind::Client),
            |parent| {
                Attributes::for_parent(parent, || {
                    let mut attributes = MessagingAttributes::new(
                        operation,
                        &destination,
                        self.instrumentation.rules(),
                    )
                    .partition(message.partition())
                    .kafka_offset(message.offset());
                    if let Some(group) = &identity.group {
                        attributes = attributes.consumer_group(group);
                    }
                    identity.endpoint.apply(attributes).into_vec()
                })
            },
        );
        let result = consumer.commit_message(message, mode);
        if self.instrumentation.metrics().enabled() {
            let failed = result.as_ref().err().map(super::error_type);
            self.instrumentation
                .series(
                    operation,
                    &destination,
                    identity.group.as_deref(),
                    &identity.endpoint,
                )
                .record_operation(started, failed.as_deref());
        }
        if let Err(err) = &result {
            instrument::record_failure(&cx, &super::error_type(err), err.to_string());
        }
        cx.span().end();
        result
    }

    fn extract(&self, message: &BorrowedMessage<'_>) -> ExtractedContext {
        match message.headers() {
            Some(headers) => self.propagation.extract(&KafkaHeaderIndex::new(headers)),
            None => self.propagation.extract(&HeaderVec::default()),
        }
    }
}

/// The record as its span describes it.
fn record<'a>(
    message: &'a BorrowedMessage<'_>,
    identity: &'a ClientIdentity,
) -> super::span::Record<'a> {
    super::span::Record {
        topic: message.topic(),
        partition: message.partition(),
        offset: message.offset(),
        key: message.key(),
        payload_len: message.payload().map(<[u8]>::len),
        timestamp_ms: message.timestamp().to_millis(),
        group: identity.group.as_deref(),
    }
}
