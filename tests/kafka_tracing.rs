//! The traced `FutureProducer` and the consumer extension (`process`,
//! `process_batch`, `commit` on rdkafka's own `StreamConsumer`) against a
//! real Kafka-protocol broker: trace ids, parents, links, kinds, names and
//! attributes asserted by value.
#![cfg(feature = "kafka")]

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::spans::{self, attr, span_id, trace_id};
use opentelemetry::trace::{FutureExt as _, SpanId, SpanKind, Status, TraceContextExt};
use opentelemetry::{Context, Value};
use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Header, OwnedHeaders};
use tracebridge::ParentPolicy;
use tracebridge::kafka::ConsumerTracing;
use tracebridge::kafka::producer::{FutureProducer, FutureRecord};

use common::{WAIT, within};

fn producer(cap: &spans::Capture) -> FutureProducer {
    let mut config = common::kafka::config();
    config
        .set("client.id", "tb-test-producer")
        .set("message.timeout.ms", "10000");
    let producer: FutureProducer = config.create().expect("producer");
    producer.with_instrumentation(cap.instrumentation())
}

/// rdkafka's own consumer, subscribed to `topic`: the application keeps it.
fn consumer(group: &str, topic: &str) -> StreamConsumer {
    let mut config = common::kafka::config();
    config
        .set("group.id", group)
        .set("client.id", "tb-test-consumer")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000");
    let consumer: StreamConsumer = config.create().expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    consumer
}

/// How consumed messages are traced here: into the capture.
fn consumer_tracing(cap: &spans::Capture) -> ConsumerTracing {
    ConsumerTracing::default().with_instrumentation(cap.instrumentation())
}

/// Receives the next message and runs a handler that succeeds with
/// nothing inside its process span.
async fn process_next(tracing: &ConsumerTracing, consumer: &StreamConsumer) {
    let message = within("consuming", consumer.recv())
        .await
        .expect("received");
    tracing
        .process(consumer, &message, async { Ok::<_, std::io::Error>(()) })
        .await
        .expect("handler ok");
}

/// Same trace and span id (a link's context is remote, the span's is not).
fn same_span(a: &opentelemetry::trace::SpanContext, b: &opentelemetry::trace::SpanContext) -> bool {
    a.trace_id() == b.trace_id() && a.span_id() == b.span_id()
}

/// A new one-partition topic holding one message sent by a traced producer.
async fn topic_with_one_traced_message(prefix: &str, cap: &spans::Capture) -> String {
    let topic = common::unique(prefix);
    common::kafka::create_topic(&topic, 1).await;
    producer(cap)
        .send(
            FutureRecord::to(&topic).key("k").payload("p"),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .expect("delivered");
    topic
}

#[tokio::test]
async fn producer_and_consumer_spans_form_one_trace_with_semconv_attributes() {
    let topic = common::unique("one-trace");
    common::kafka::create_topic(&topic, 1).await;
    let cap = spans::capture();
    let delivery = producer(&cap)
        .send(
            FutureRecord::to(&topic).key("order-1").payload("hello"),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .expect("delivered");

    let group = common::unique("grp");
    let consumer = consumer(&group, &topic);
    let message = within("consuming", consumer.recv())
        .await
        .expect("received");
    let payload = consumer_tracing(&cap)
        .with_body_size(true)
        .process(&consumer, &message, async {
            Ok::<_, std::io::Error>(message.payload().map(<[u8]>::to_vec))
        })
        .await
        .expect("handler ok");
    assert_eq!(payload.as_deref(), Some(&b"hello"[..]));

    let send = cap.one(&format!("send {topic}"));
    let process = cap.one(&format!("process {topic}"));
    let (host, port) = common::kafka_server();

    assert_eq!(send.span_kind, SpanKind::Producer);
    assert_eq!(
        send.parent_span_id,
        SpanId::INVALID,
        "no ambient parent: a root"
    );
    for (key, value) in [
        ("messaging.system.name", Value::from("kafka")),
        ("messaging.operation.name", "send".into()),
        ("messaging.operation.type", "send".into()),
        ("messaging.destination.name", topic.clone().into()),
        ("kafka.message.key", "order-1".into()),
        ("messaging.client.id", "tb-test-producer".into()),
        ("server.address", host.clone().into()),
        ("server.port", port.into()),
        (
            "messaging.destination.partition.id",
            delivery.partition.to_string().into(),
        ),
        ("kafka.offset", delivery.offset.into()),
    ] {
        assert_eq!(attr(&send, key), Some(value), "send span {key}");
    }
    assert_eq!(send.status, Status::Unset);

    assert_eq!(process.span_kind, SpanKind::Consumer);
    assert_eq!(trace_id(&process), trace_id(&send), "one trace");
    assert_eq!(
        process.parent_span_id,
        span_id(&send),
        "parent is the producer span"
    );
    assert!(process.parent_span_is_remote);
    assert_eq!(process.links.len(), 1, "linked to its creation context");
    assert!(same_span(
        &process.links.links[0].span_context,
        &send.span_context
    ));
    for (key, value) in [
        ("messaging.system.name", Value::from("kafka")),
        ("messaging.operation.name", "process".into()),
        ("messaging.operation.type", "process".into()),
        ("messaging.destination.name", topic.clone().into()),
        ("messaging.consumer.group.name", group.clone().into()),
        (
            "messaging.destination.partition.id",
            delivery.partition.to_string().into(),
        ),
        ("kafka.offset", delivery.offset.into()),
        ("kafka.message.key", "order-1".into()),
        ("messaging.message.body.size", 5i64.into()),
        ("messaging.client.id", "tb-test-consumer".into()),
        ("server.address", host.clone().into()),
    ] {
        assert_eq!(attr(&process, key), Some(value), "process span {key}");
    }
    match attr(&process, tracebridge::attributes::QUEUE_TIME_ATTRIBUTE) {
        Some(Value::F64(ms)) => assert!((0.0..60_000.0).contains(&ms), "queue time {ms} ms"),
        other => panic!("queue time attribute missing: {other:?}"),
    }
    assert_eq!(
        cap.histogram_count(tracebridge::attributes::QUEUE_TIME_METRIC),
        1,
        "one queue-time measurement"
    );
    assert_eq!(attr(&process, "kafka.message.tombstone"), None);
    assert_eq!(
        attr(&process, tracebridge::attributes::INVALID_CONTEXT_ATTRIBUTE),
        None
    );
}

#[tokio::test]
async fn foreign_headers_with_flags_03_and_an_older_duplicate_continue_the_last_context() {
    let topic = common::unique("foreign");
    common::kafka::create_topic(&topic, 1).await;
    // What Python's instrumentation leaves when the app already had one:
    // the older traceparent first, the appended current one last.
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "traceparent",
            value: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        })
        .insert(Header {
            key: "traceparent",
            value: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03".as_bytes()),
        });
    common::kafka::producer()
        .send(
            FutureRecord::to(&topic)
                .payload("from python")
                .key("k")
                .headers(headers),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .expect("delivered");

    let cap = spans::capture();
    let consumer = consumer(&common::unique("grp"), &topic);
    process_next(&consumer_tracing(&cap), &consumer).await;
    let process = cap.one(&format!("process {topic}"));
    assert_eq!(
        trace_id(&process).to_string(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(process.parent_span_id.to_string(), "00f067aa0ba902b7");
    assert!(process.span_context.is_sampled(), "flags 03 is sampled");
}

#[tokio::test]
async fn malformed_or_missing_context_still_delivers_and_starts_a_new_trace_saying_why() {
    let topic = common::unique("malformed");
    common::kafka::create_topic(&topic, 1).await;
    let raw = common::kafka::producer();
    let bad = OwnedHeaders::new().insert(Header {
        key: "traceparent",
        value: Some("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    });
    for (key, headers) in [("bad", Some(bad)), ("none", None)] {
        let mut record = FutureRecord::to(&topic).key(key).payload(key);
        if let Some(headers) = headers {
            record = record.headers(headers);
        }
        raw.send(record, Duration::from_secs(10))
            .await
            .map_err(|(e, _)| e)
            .expect("delivered");
    }

    let cap = spans::capture();
    let tracing = consumer_tracing(&cap);
    let consumer = consumer(&common::unique("grp"), &topic);
    let mut seen = Vec::new();
    for _ in 0..2 {
        let message = within("consuming", consumer.recv())
            .await
            .expect("received");
        let key = tracing
            .process(&consumer, &message, async {
                Ok::<_, std::io::Error>(
                    String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned(),
                )
            })
            .await
            .expect("handler ok");
        seen.push(key);
    }
    assert_eq!(
        seen,
        vec!["bad", "none"],
        "both messages reached the handler"
    );
    let spans = cap.named(&format!("process {topic}"));
    assert_eq!(spans.len(), 2);
    let by_key = |k: &str| {
        spans
            .iter()
            .find(|s| attr(s, "kafka.message.key") == Some(k.to_owned().into()))
            .expect("span for key")
            .clone()
    };
    let bad_span = by_key("bad");
    assert!(bad_span.parent_span_id == SpanId::INVALID, "a new root");
    assert_ne!(
        trace_id(&bad_span).to_string(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert!(bad_span.links.is_empty());
    assert_eq!(
        attr(
            &bad_span,
            tracebridge::attributes::INVALID_CONTEXT_ATTRIBUTE
        ),
        Some("tracecontext: malformed: version ff is forbidden".into())
    );
    let none_span = by_key("none");
    assert!(none_span.parent_span_id == SpanId::INVALID);
    assert_eq!(
        attr(
            &none_span,
            tracebridge::attributes::INVALID_CONTEXT_ATTRIBUTE
        ),
        None
    );
}

#[tokio::test]
async fn link_policy_starts_a_new_trace_linked_to_the_producer() {
    let cap = spans::capture();
    let topic = topic_with_one_traced_message("link", &cap).await;
    let consumer = consumer(&common::unique("grp"), &topic);
    process_next(
        &consumer_tracing(&cap).with_parent_policy(ParentPolicy::Link),
        &consumer,
    )
    .await;
    let send = cap.one(&format!("send {topic}"));
    let process = cap.one(&format!("process {topic}"));
    assert_ne!(trace_id(&process), trace_id(&send));
    assert!(process.parent_span_id == SpanId::INVALID);
    assert!(same_span(
        &process.links.links[0].span_context,
        &send.span_context
    ));
}

#[tokio::test]
async fn two_consumers_in_a_group_over_three_partitions_keep_every_message_in_its_own_trace() {
    const MESSAGES: i64 = 30;
    let topic = common::unique("group");
    common::kafka::create_topic(&topic, 3).await;
    let cap = spans::capture();
    let group = common::unique("grp");
    let first = consumer(&group, &topic);
    let second = consumer(&group, &topic);

    let producer = producer(&cap);
    for i in 0..MESSAGES {
        // Each message is its own trace: no ambient parent.
        producer
            .send(
                FutureRecord::to(&topic)
                    .partition((i % 3) as i32)
                    .key(&format!("m{i}"))
                    .payload("x"),
                Duration::from_secs(10),
            )
            .with_context(Context::new())
            .await
            .map_err(|(e, _)| e)
            .expect("delivered");
    }

    let seen: Arc<Mutex<HashSet<(i32, i64)>>> = Arc::default();
    let tracing = consumer_tracing(&cap);
    let drain = |consumer: StreamConsumer, seen: Arc<Mutex<HashSet<(i32, i64)>>>| {
        let tracing = tracing.clone();
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            while (seen.lock().unwrap().len() as i64) < MESSAGES
                && tokio::time::Instant::now() < deadline
            {
                let Ok(next) =
                    tokio::time::timeout(Duration::from_millis(500), consumer.recv()).await
                else {
                    continue;
                };
                let message = next.expect("received");
                tracing
                    .process(&consumer, &message, async {
                        seen.lock()
                            .unwrap()
                            .insert((message.partition(), message.offset()));
                        Ok::<_, std::io::Error>(())
                    })
                    .await
                    .expect("handler ok");
            }
        }
    };
    tokio::join!(drain(first, seen.clone()), drain(second, seen.clone()));
    assert_eq!(
        seen.lock().unwrap().len() as i64,
        MESSAGES,
        "every message processed"
    );

    let sends: HashMap<(String, String), _> = cap
        .named(&format!("send {topic}"))
        .into_iter()
        .map(|s| {
            let key = (
                attr(&s, "messaging.destination.partition.id")
                    .unwrap()
                    .as_str()
                    .into_owned(),
                attr(&s, "kafka.offset").unwrap().as_str().into_owned(),
            );
            (key, s)
        })
        .collect();
    assert_eq!(sends.len() as i64, MESSAGES);
    let processes = cap.named(&format!("process {topic}"));
    assert!(processes.len() as i64 >= MESSAGES);
    let traces: HashSet<_> = sends.values().map(trace_id).collect();
    assert_eq!(traces.len() as i64, MESSAGES, "one trace per message");
    for process in processes {
        let key = (
            attr(&process, "messaging.destination.partition.id")
                .unwrap()
                .as_str()
                .into_owned(),
            attr(&process, "kafka.offset")
                .unwrap()
                .as_str()
                .into_owned(),
        );
        let send = &sends[&key];
        assert_eq!(
            trace_id(&process),
            trace_id(send),
            "message {key:?} stays in its trace"
        );
        assert_eq!(
            process.parent_span_id,
            span_id(send),
            "message {key:?} parent"
        );
    }
}

#[tokio::test]
async fn batch_process_links_every_message_with_its_partition_and_offset() {
    let topic = common::unique("batch");
    common::kafka::create_topic(&topic, 1).await;
    let cap = spans::capture();
    let producer = producer(&cap);
    for i in 0..5 {
        producer
            .send(
                FutureRecord::to(&topic).key(&format!("b{i}")).payload("x"),
                Duration::from_secs(10),
            )
            .with_context(Context::new())
            .await
            .map_err(|(e, _)| e)
            .expect("delivered");
    }
    let group = common::unique("grp");
    let consumer = consumer(&group, &topic);
    // The application receives the batch itself, then hands it over.
    let mut messages: Vec<BorrowedMessage<'_>> = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while messages.len() < 5 && tokio::time::Instant::now() < deadline {
        if let Ok(next) = tokio::time::timeout(Duration::from_millis(500), consumer.recv()).await {
            messages.push(next.expect("received"));
        }
    }
    assert_eq!(messages.len(), 5);
    let handled = consumer_tracing(&cap)
        .process_batch(&consumer, &messages, async {
            Ok::<_, std::io::Error>(messages.len())
        })
        .await
        .expect("handler ok");
    assert_eq!(handled, 5);

    let sends = cap.named(&format!("send {topic}"));
    let batch = cap.one(&format!("process {topic}"));
    assert_eq!(batch.span_kind, SpanKind::Consumer);
    assert_eq!(
        attr(&batch, "messaging.operation.name"),
        Some("process".into())
    );
    assert_eq!(
        attr(&batch, "messaging.operation.type"),
        Some("process".into())
    );
    assert_eq!(
        attr(&batch, "messaging.consumer.group.name"),
        Some(group.clone().into())
    );
    let count = match attr(&batch, "messaging.batch.message_count") {
        Some(Value::I64(n)) => n as usize,
        other => panic!("batch count {other:?}"),
    };
    assert_eq!(count, 5);
    assert_eq!(batch.links.len(), count, "one link per message");
    assert_eq!(
        batch.parent_span_id,
        SpanId::INVALID,
        "no message's context is the batch's parent"
    );
    assert!(
        sends.iter().all(|s| trace_id(s) != trace_id(&batch)),
        "the batch span takes no message's trace"
    );
    let mut linked = 0;
    for link in batch.links.iter() {
        let send = sends
            .iter()
            .find(|s| same_span(&s.span_context, &link.span_context))
            .expect("link points at a producer span");
        let link_attr = |k: &str| {
            link.attributes
                .iter()
                .find(|kv| kv.key.as_str() == k)
                .map(|kv| kv.value.clone())
        };
        assert_eq!(
            link_attr("messaging.destination.partition.id"),
            attr(send, "messaging.destination.partition.id")
        );
        assert_eq!(link_attr("kafka.offset"), attr(send, "kafka.offset"));
        linked += 1;
    }
    assert_eq!(linked, 5);
}

#[tokio::test]
async fn a_failed_send_marks_the_span_error_and_returns_the_error_unchanged() {
    common::kafka::require_broker();
    let cap = spans::capture();
    let mut config = common::kafka::config();
    config.set("message.timeout.ms", "1500");
    let producer: FutureProducer = config.create().expect("producer");
    let producer = producer.with_instrumentation(cap.instrumentation());
    // The test broker creates no topic on first use (auto.create.topics.enable
    // = false, as on most production clusters): this send times out.
    let topic = common::unique("missing");
    let (err, message) = producer
        .send(
            FutureRecord::to(&topic).key("k").payload("lost?"),
            Duration::from_secs(5),
        )
        .await
        .expect_err("a topic that does not exist cannot take the record");
    assert_eq!(
        message.payload(),
        Some(&b"lost?"[..]),
        "the record is handed back"
    );
    let span = cap.one(&format!("send {topic}"));
    assert!(
        matches!(span.status, Status::Error { .. }),
        "{:?}",
        span.status
    );
    let expected = format!("{:?}", err.rdkafka_error_code().expect("an error code"));
    assert_eq!(attr(&span, "error.type"), Some(expected.into()));
}

#[tokio::test]
async fn commit_spans_are_children_of_the_process_span() {
    let cap = spans::capture();
    let topic = topic_with_one_traced_message("commit", &cap).await;
    let tracing = consumer_tracing(&cap);
    let consumer = consumer(&common::unique("grp"), &topic);
    let message = within("consuming", consumer.recv())
        .await
        .expect("received");
    // Committed inside the work, so under the message's span.
    let process_span_id = tracing
        .process(&consumer, &message, async {
            tracing.commit(&consumer, &message, CommitMode::Sync)?;
            Ok::<_, rdkafka::error::KafkaError>(Context::current().span().span_context().span_id())
        })
        .await
        .expect("commit");
    let process = cap.one(&format!("process {topic}"));
    assert_eq!(span_id(&process), process_span_id);
    let commit = cap.one(&format!("commit {topic}"));
    assert_eq!(commit.span_kind, SpanKind::Client);
    assert_eq!(commit.parent_span_id, process_span_id);
    assert_eq!(trace_id(&commit), trace_id(&process));
    assert_eq!(
        attr(&commit, "messaging.operation.type"),
        Some("settle".into())
    );
    assert_eq!(attr(&commit, "kafka.offset"), Some(0i64.into()));
}

/// A worker's own consumer context (here: one that counts rebalances) keeps
/// working — tracebridge never wraps the consumer — and its messages are
/// traced like any other.
#[tokio::test]
async fn a_consumer_with_its_own_context_keeps_its_callbacks_and_is_traced() {
    use rdkafka::client::ClientContext;
    use rdkafka::consumer::{ConsumerContext, Rebalance};
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct CountingContext(Arc<AtomicUsize>);
    impl ClientContext for CountingContext {}
    impl ConsumerContext for CountingContext {
        fn post_rebalance(
            &self,
            _: &rdkafka::consumer::BaseConsumer<Self>,
            rebalance: &Rebalance<'_>,
        ) {
            if matches!(rebalance, Rebalance::Assign(_)) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    let cap = spans::capture();
    let topic = topic_with_one_traced_message("own-context", &cap).await;
    let group = common::unique("grp");
    let mut config = common::kafka::config();
    config
        .set("group.id", &group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false");
    let assignments = Arc::new(AtomicUsize::new(0));
    let consumer: StreamConsumer<CountingContext> = config
        .create_with_context(CountingContext(assignments.clone()))
        .expect("consumer");
    consumer.subscribe(&[&topic]).expect("subscribe");
    let message = within("a message", consumer.recv())
        .await
        .expect("received");
    let process_trace = consumer_tracing(&cap)
        .process(&consumer, &message, async {
            Ok::<_, std::convert::Infallible>(Context::current().span().span_context().trace_id())
        })
        .await
        .expect("handler ok");

    assert!(
        assignments.load(Ordering::SeqCst) >= 1,
        "the context's rebalance callback ran"
    );
    let finished = cap.spans();
    let send = finished
        .iter()
        .find(|s| s.span_kind == SpanKind::Producer)
        .expect("the send span");
    assert_eq!(process_trace, send.span_context.trace_id(), "one trace");
    let process = cap.one(&format!("process {topic}"));
    assert_eq!(trace_id(&process), process_trace);
    assert_eq!(process.parent_span_id, span_id(send));
    assert_eq!(
        attr(&process, "messaging.consumer.group.name"),
        Some(group.into()),
        "the group is read from the live consumer"
    );
}

/// Under the consistent sampler, a batch span (a new trace linking to each
/// message) is kept exactly when one of the messages it links to was: at a
/// ratio that would keep almost none, a batch holding one sampled message
/// is kept, and a batch of unsampled ones is dropped.
#[tokio::test]
async fn a_batch_span_is_kept_exactly_when_a_message_it_links_to_was_kept() {
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracebridge::sampling::ProbabilitySampler;

    let provider = SdkTracerProvider::builder()
        .with_sampler(ProbabilitySampler::new(0.000_001).expect("ratio"))
        .build();
    let tracing = ConsumerTracing::default()
        .with_instrumentation(tracebridge::Instrumentation::from_sdk(&provider, None));
    let raw: rdkafka::producer::FutureProducer =
        common::kafka::config().create().expect("producer");
    for (flags, expect_kept) in [(["02", "02", "03"], true), (["02", "00", "02"], false)] {
        let topic = common::unique("batch-sampling");
        common::kafka::create_topic(&topic, 1).await;
        for flag in flags {
            let traceparent = format!(
                "00-{}-00f067aa0ba902b7-{flag}",
                uuid::Uuid::new_v4().simple()
            );
            raw.send(
                rdkafka::producer::FutureRecord::<(), _>::to(&topic)
                    .payload("x")
                    .headers(OwnedHeaders::new().insert(Header {
                        key: "traceparent",
                        value: Some(&traceparent),
                    })),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("delivered");
        }
        let consumer = consumer(&common::unique("grp"), &topic);
        let mut messages: Vec<BorrowedMessage<'_>> = Vec::new();
        while messages.len() < flags.len() {
            messages.push(within("a record", consumer.recv()).await.expect("received"));
        }
        let kept = tracing
            .process_batch(&consumer, &messages, async {
                Ok::<_, std::convert::Infallible>(
                    Context::current().span().span_context().is_sampled(),
                )
            })
            .await
            .expect("handled");
        assert_eq!(kept, expect_kept, "a batch of messages flagged {flags:?}");
    }
}
