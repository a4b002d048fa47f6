//! [`TracedStreamConsumer`]: rdkafka's `StreamConsumer` whose messages arrive with
//! their creation context and a CONSUMER process span.

use std::fmt::Display;
use std::time::{Duration, Instant, SystemTime};

use futures::Stream;
use opentelemetry::Context;
use opentelemetry::trace::{FutureExt as _, Link, SpanKind, TraceContextExt};
use rdkafka::ClientConfig;
use rdkafka::config::FromClientConfigAndContext;
use rdkafka::consumer::{
    CommitMode, Consumer, ConsumerContext, DefaultConsumerContext, StreamConsumer,
};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::util::{AsyncRuntime, DefaultRuntime};

use super::KafkaHeaderExtractor;
use crate::instrument::{self, Instrumentation, ParentPolicy};
use crate::metrics::ProcessTimer;
use crate::propagation::{ExtractedContext, HeaderReader, Propagation};
use crate::semconv::{Destination, Endpoint, MessagingAttributes, Operation, Settlement, System};

/// A `StreamConsumer` whose messages carry their trace context.
///
/// Every received message gets a CONSUMER span `process {topic}`: by default
/// a child of the context its producer injected, plus a link to it
/// ([`ParentPolicy`] changes that). The span carries the consumer group,
/// partition, offset, key, tombstone flag, optionally the body size, and how
/// long the message waited in the broker; the same wait is recorded in the
/// `tracebridge.messaging.queue_time` histogram. A message whose trace
/// headers are missing or unusable is still delivered: its span starts a new
/// trace and says why in `tracebridge.context.invalid`.
///
/// ```no_run
/// # async fn run() -> Result<(), tracebridge::Error> {
/// use rdkafka::Message;
/// use rdkafka::consumer::Consumer;
/// let mut config = rdkafka::ClientConfig::new();
/// config.set("bootstrap.servers", "127.0.0.1:9092").set("group.id", "billing");
/// let consumer = tracebridge::kafka::TracedStreamConsumer::from_config(&config)?;
/// consumer.get_ref().subscribe(&["orders"]).expect("subscribe");
/// consumer
///     .process(async |message| {
///         // Runs inside the process span: spans and logs here join the trace.
///         tracing::info!(offset = message.offset(), "billing an order");
///         Ok::<(), std::io::Error>(())
///     })
///     .await
/// # }
/// ```
///
/// A consumer with your own [`ConsumerContext`] (rebalance or commit
/// callbacks) is wrapped the same way:
/// `TracedStreamConsumer::from_config_and_context(&config, MyContext)` or
/// `TracedStreamConsumer::new(my_stream_consumer, group, endpoint)`.
pub struct TracedStreamConsumer<C = DefaultConsumerContext, R = DefaultRuntime>
where
    C: ConsumerContext + 'static,
{
    inner: StreamConsumer<C, R>,
    group: Option<String>,
    endpoint: Endpoint,
    propagation: Propagation,
    policy: ParentPolicy,
    record_body_size: bool,
    settle_spans: bool,
    instrumentation: Instrumentation,
}

/// One received message, its extracted creation context, and its process
/// span (which ends when this is dropped or [`TracedMessage::end`]ed).
pub struct TracedMessage<'a> {
    message: BorrowedMessage<'a>,
    extracted: ExtractedContext,
    cx: Context,
    /// `messaging.process.duration`, recorded when this is dropped.
    timer: ProcessTimer,
}

/// A traced message reads as the rdkafka message it wraps (`&traced`
/// where a `&BorrowedMessage` is expected), so existing handlers take it
/// unchanged.
impl<'a> std::ops::Deref for TracedMessage<'a> {
    type Target = BorrowedMessage<'a>;

    fn deref(&self) -> &Self::Target {
        &self.message
    }
}

/// The wrapper reads as the consumer it wraps (`subscribe`, `assign`,
/// `seek`, … unchanged); its own `recv`, `stream` and `commit` take
/// precedence and trace.
impl<C, R> std::ops::Deref for TracedStreamConsumer<C, R>
where
    C: ConsumerContext + 'static,
{
    type Target = StreamConsumer<C, R>;

    fn deref(&self) -> &Self::Target {
        &self.inner
    }
}

impl<'a> TracedMessage<'a> {
    /// The rdkafka message.
    pub fn message(&self) -> &BorrowedMessage<'a> {
        &self.message
    }

    /// The creation context read from the headers (and any problems).
    pub fn extracted(&self) -> &ExtractedContext {
        &self.extracted
    }

    /// The context holding the process span: run work in it (e.g. with
    /// `opentelemetry::trace::FutureExt::with_context`) to make it a child.
    pub fn context(&self) -> &Context {
        &self.cx
    }

    /// Marks processing failed: status ERROR and `error.type`.
    pub fn fail(&self, error_type: &str, description: impl Into<String>) {
        self.timer.fail(error_type);
        instrument::record_failure(&self.cx, error_type, description.into());
    }

    /// Ends the process span now.
    pub fn end(self) {
        self.cx.span().end();
    }
}

/// Messages received together, and the CLIENT `poll` span that links each of
/// them (one link per message, carrying its partition and offset).
pub struct TracedBatch<'a> {
    messages: Vec<BorrowedMessage<'a>>,
    extracted: Vec<ExtractedContext>,
    cx: Context,
}

impl<'a> TracedBatch<'a> {
    /// The messages, in arrival order.
    pub fn messages(&self) -> &[BorrowedMessage<'a>] {
        &self.messages
    }

    /// Each message's creation context, in the same order.
    pub fn extracted(&self) -> &[ExtractedContext] {
        &self.extracted
    }

    /// The context holding the poll span (empty for an empty batch).
    pub fn context(&self) -> &Context {
        &self.cx
    }

    /// How many messages arrived.
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    /// Whether none did.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }
}

impl TracedStreamConsumer {
    /// Creates the consumer from a config the application already has; the
    /// consumer group is its `group.id`.
    pub fn from_config(config: &ClientConfig) -> Result<Self, crate::Error> {
        Self::from_config_and_context(config, DefaultConsumerContext)
    }
}

impl<C, R> TracedStreamConsumer<C, R>
where
    C: ConsumerContext + 'static,
    R: AsyncRuntime,
{
    /// Creates the consumer from a config and your own consumer context
    /// (rebalance and commit callbacks keep working as they did).
    pub fn from_config_and_context(
        config: &ClientConfig,
        context: C,
    ) -> Result<Self, crate::Error> {
        let inner = StreamConsumer::from_config_and_context(config, context)
            .map_err(|source| super::client_error(config, source))?;
        Ok(Self::new(
            inner,
            config.get("group.id").map(str::to_owned),
            super::endpoint(config),
        ))
    }

    /// Wraps an existing consumer.
    pub fn new(inner: StreamConsumer<C, R>, group: Option<String>, endpoint: Endpoint) -> Self {
        Self {
            inner,
            group,
            endpoint,
            propagation: Propagation::default(),
            policy: ParentPolicy::default(),
            record_body_size: false,
            settle_spans: false,
            instrumentation: Instrumentation::global(),
        }
    }

    /// Formats to read. Default: `tracecontext` + `baggage`.
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

    /// Traces [`TracedStreamConsumer::commit`] as CLIENT `commit {topic}` spans.
    /// Default: off.
    pub fn with_settle_spans(mut self, enabled: bool) -> Self {
        self.settle_spans = enabled;
        self
    }

    /// Tracer and meters to use. Default: the global providers.
    pub fn with_instrumentation(mut self, instrumentation: Instrumentation) -> Self {
        self.instrumentation = instrumentation;
        self
    }

    /// Waits for the next message and starts its process span.
    pub async fn recv(&self) -> Result<TracedMessage<'_>, crate::Error> {
        let message = self
            .inner
            .recv()
            .await
            .map_err(|source| self.consume_error(source))?;
        Ok(self.trace(message))
    }

    /// The messages as a stream (see [`TracedStreamConsumer::recv`]).
    pub fn stream(&self) -> impl Stream<Item = Result<TracedMessage<'_>, crate::Error>> + '_ {
        futures::stream::unfold(self, |this| async move { Some((this.recv().await, this)) })
    }

    /// Receives one message and runs `handler` on it inside its process
    /// span, so spans the handler opens (after `.await`s too, and in tasks
    /// spawned with [`crate::spawn_in_context`]) are children of it. A
    /// handler error sets status ERROR and `error.type` (the error's type
    /// name) and is returned as the inner result.
    pub async fn process_next<T, E>(
        &self,
        handler: impl AsyncFnOnce(&BorrowedMessage<'_>) -> Result<T, E>,
    ) -> Result<Result<T, E>, crate::Error>
    where
        E: Display,
    {
        let traced = self.recv().await?;
        let result = handler(&traced.message)
            .with_context(traced.cx.clone())
            .await;
        if let Err(err) = &result {
            traced.fail(instrument::type_error_name::<E>(), err.to_string());
        }
        traced.end();
        Ok(result)
    }

    /// Runs `handler` on every message, each inside its process span, until
    /// receiving fails. Handler errors are recorded on the span and logged;
    /// they do not stop the loop (commit or retry policy is the caller's).
    pub async fn process<E>(
        &self,
        mut handler: impl AsyncFnMut(&BorrowedMessage<'_>) -> Result<(), E>,
    ) -> Result<(), crate::Error>
    where
        E: Display,
    {
        loop {
            let traced = self.recv().await?;
            let result = handler(&traced.message)
                .with_context(traced.cx.clone())
                .await;
            if let Err(err) = result {
                let _guard = traced.cx.clone().attach();
                tracing::warn!(
                    topic = traced.message.topic(),
                    partition = traced.message.partition(),
                    offset = traced.message.offset(),
                    error = %err,
                    "message handler failed"
                );
                traced.fail(instrument::type_error_name::<E>(), err.to_string());
            }
            traced.end();
        }
    }

    /// Receives up to `max` messages, waiting at most `wait` in all, under
    /// one CLIENT span `poll {topic}` with `messaging.batch.message_count`
    /// and one link per message carrying that message's partition and
    /// offset. Messages are not given a parent from any one of them.
    pub async fn recv_batch(
        &self,
        max: usize,
        wait: Duration,
    ) -> Result<TracedBatch<'_>, crate::Error> {
        let started = SystemTime::now();
        let poll_started = Instant::now();
        let deadline = Instant::now() + wait;
        let mut messages = Vec::with_capacity(max);
        while messages.len() < max {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(remaining, self.inner.recv()).await {
                Err(_elapsed) => break,
                Ok(Err(source)) => return Err(self.consume_error(source)),
                Ok(Ok(message)) => messages.push(message),
            }
        }
        let extracted: Vec<ExtractedContext> = messages.iter().map(|m| self.extract(m)).collect();
        if messages.is_empty() {
            return Ok(TracedBatch {
                messages,
                extracted,
                cx: Context::new(),
            });
        }
        let rules = self.instrumentation.rules();
        let links: Vec<Link> = messages
            .iter()
            .zip(&extracted)
            .flat_map(|(message, extracted)| {
                let attributes = MessagingAttributes::later(rules)
                    .partition(message.partition())
                    .kafka_offset(message.offset())
                    .into_vec();
                instrument::link_to(extracted, attributes)
            })
            .collect();
        let first_topic = messages[0].topic();
        let one_topic = messages.iter().all(|m| m.topic() == first_topic);
        let destination = Destination::kafka(first_topic);
        let mut attributes = MessagingAttributes::new(Operation::Receive, &destination, rules);
        let name = if one_topic {
            Operation::Receive.shared_span_name(&destination)
        } else {
            // Several topics: no single destination to name.
            attributes = attributes.without(rules.conventions.keys().destination_name);
            Operation::Receive.name(System::Kafka).into()
        };
        attributes = attributes.batch_count(messages.len());
        if let Some(group) = &self.group {
            attributes = attributes.consumer_group(group);
        }
        let attributes = self.endpoint.apply(attributes).into_vec();
        let metrics = self.instrumentation.metrics();
        // Per topic: the batch may span several.
        for message in &messages {
            let consumed = self.instrumentation.metric_attributes(
                Operation::Receive,
                &Destination::kafka(message.topic()),
                self.group.as_deref(),
                &self.endpoint,
            );
            metrics.count_consumed(1, &consumed);
        }
        let mut poll = self.instrumentation.metric_attributes(
            Operation::Receive,
            &destination,
            self.group.as_deref(),
            &self.endpoint,
        );
        if !one_topic {
            let key = rules.conventions.keys().destination_name;
            poll.retain(|kv| kv.key.as_str() != key);
        }
        metrics.record_operation(poll_started, &poll);
        let cx = self.instrumentation.start_span_at(
            name,
            SpanKind::Client,
            &instrument::ambient_context(),
            attributes,
            links,
            Some(started),
        );
        Ok(TracedBatch {
            messages,
            extracted,
            cx,
        })
    }

    /// Commits `message`'s offset; with settle spans on, under a CLIENT span
    /// `commit {topic}` that is a child of the message's process span.
    pub fn commit(
        &self,
        message: &TracedMessage<'_>,
        mode: CommitMode,
    ) -> Result<(), crate::Error> {
        let m = &message.message;
        let operation = Operation::Settle(Settlement::Commit);
        let commit_started = Instant::now();
        let cx = self.settle_spans.then(|| {
            let destination = Destination::kafka(m.topic());
            let mut attributes =
                MessagingAttributes::new(operation, &destination, self.instrumentation.rules())
                    .partition(m.partition())
                    .kafka_offset(m.offset());
            if let Some(group) = &self.group {
                attributes = attributes.consumer_group(group);
            }
            self.instrumentation.start_span(
                operation.shared_span_name(&destination),
                SpanKind::Client,
                &message.cx,
                self.endpoint.apply(attributes).into_vec(),
                Vec::new(),
            )
        });
        let result = self.inner.commit_message(m, mode);
        let metrics = self.instrumentation.metrics();
        if metrics.enabled() {
            let mut metric = self.instrumentation.metric_attributes(
                operation,
                &Destination::kafka(m.topic()),
                self.group.as_deref(),
                &self.endpoint,
            );
            if let Err(err) = &result {
                metric.push(crate::semconv::error_type(super::error_type(err)));
            }
            metrics.record_operation(commit_started, &metric);
        }
        if let Some(cx) = cx {
            if let Err(err) = &result {
                instrument::record_failure(&cx, &super::error_type(err), err.to_string());
            }
            cx.span().end();
        }
        result.map_err(|source| crate::Error::Commit {
            topic: m.topic().to_owned(),
            partition: m.partition(),
            offset: m.offset(),
            source: Box::new(source),
        })
    }

    fn consume_error(&self, source: rdkafka::error::KafkaError) -> crate::Error {
        let source_name = self
            .inner
            .subscription()
            .map(|list| {
                list.elements()
                    .iter()
                    .map(|e| e.topic().to_owned())
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default();
        crate::Error::Consume {
            source_name,
            source: Box::new(source),
        }
    }

    fn extract(&self, message: &BorrowedMessage<'_>) -> ExtractedContext {
        match message.headers() {
            Some(headers) => self.propagation.extract(&KafkaHeaderExtractor(headers)),
            None => self
                .propagation
                .extract(&crate::propagation::HeaderVec::default()),
        }
    }

    fn trace<'a>(&self, message: BorrowedMessage<'a>) -> TracedMessage<'a> {
        let extracted = self.extract(&message);
        let record = super::span::Record {
            topic: message.topic(),
            partition: message.partition(),
            offset: message.offset(),
            key: message.key(),
            payload_len: message.payload().map(<[u8]>::len),
            timestamp_ms: message.timestamp().to_millis(),
            group: self.group.as_deref(),
        };
        let received_at = Instant::now();
        let received = super::span::received(&record, &self.endpoint, &self.instrumentation);
        let no_headers = crate::propagation::HeaderVec::default();
        let extractor = message.headers().map(KafkaHeaderExtractor);
        let headers: &dyn HeaderReader = match &extractor {
            Some(extractor) => extractor,
            None => &no_headers,
        };
        let cx = self.instrumentation.start_process_span_lazy(
            received.name,
            self.policy,
            &extracted,
            || {
                super::span::attributes(
                    &record,
                    headers,
                    &self.endpoint,
                    self.instrumentation.rules(),
                    self.record_body_size,
                    None,
                )
            },
        );
        self.instrumentation.record_queue_time(
            &cx,
            received.produced_at,
            &received.metric_attributes,
        );
        let timer = ProcessTimer::consumed(
            self.instrumentation.metrics(),
            received_at,
            &received.consumed_attributes,
            received.metric_attributes,
        );
        TracedMessage {
            message,
            extracted,
            cx,
            timer,
        }
    }

    /// The wrapped consumer (subscribe, assign, seek, … through it).
    pub fn get_ref(&self) -> &StreamConsumer<C, R> {
        &self.inner
    }

    /// The wrapped consumer, mutably.
    pub fn get_mut(&mut self) -> &mut StreamConsumer<C, R> {
        &mut self.inner
    }

    /// Unwraps the consumer.
    pub fn into_inner(self) -> StreamConsumer<C, R> {
        self.inner
    }
}
