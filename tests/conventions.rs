//! What dashboards rely on, against the real brokers: every span's keys
//! under each supported convention version (and `messaging/dup`), the
//! spec's four messaging metrics from the library and on the relay's
//! `/metrics`, and RabbitMQ's own dead-lettering continuing the trace.
#![cfg(all(feature = "kafka", feature = "amqp"))]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::amqp::{ROUTING_KEY, Rabbit};
use common::spans::{self, attr, trace_id};
use common::within;
use futures::StreamExt as _;
use opentelemetry::trace::{FutureExt as _, SpanKind};
use opentelemetry::{Context, KeyValue, Value};
use opentelemetry_sdk::trace::SpanData;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use tracebridge::Instrumentation;
use tracebridge::amqp::message::Delivery;
use tracebridge::amqp::options::{
    BasicAckOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions, BasicRejectOptions,
};
use tracebridge::amqp::{BasicProperties, Channel, Confirmation};
use tracebridge::kafka::ConsumerTracing;
use tracebridge::kafka::producer::{FutureProducer, FutureRecord};
use tracebridge::semconv::{Conventions, SemconvVersion};

/// Keys only v1.45 has.
const V1_45_ONLY: [&str; 6] = [
    "messaging.system.name",
    "kafka.offset",
    "kafka.message.key",
    "kafka.message.tombstone",
    "rabbitmq.destination.routing_key",
    "rabbitmq.message.delivery_tag",
];
/// Keys v1.44 has and v1.45 renamed (not in the pre-1.26 table either).
const V1_44_ONLY: [&str; 3] = [
    "messaging.kafka.offset",
    "messaging.rabbitmq.message.delivery_tag",
    // In both 1.44 and pre-1.26, never in 1.45:
    "messaging.kafka.message.key",
];
/// Keys only the pre-1.26 conventions have.
const PRE_1_26_ONLY: [&str; 8] = [
    "messaging.operation",
    "messaging.kafka.consumer.group",
    "messaging.kafka.destination.partition",
    "messaging.kafka.message.offset",
    "messaging.client_id",
    "messaging.message.payload_size_bytes",
    "net.peer.name",
    "net.peer.port",
];
/// Keys of 1.26 and later.
const SINCE_1_26: [&str; 6] = [
    "messaging.operation.name",
    "messaging.operation.type",
    "messaging.consumer.group.name",
    "messaging.destination.partition.id",
    "server.address",
    "server.port",
];

/// The Kafka process span's keys, from the spec text of each version (key
/// and conversation id recorded; no body size, no tombstone).
fn kafka_process_keys(version: SemconvVersion) -> BTreeSet<&'static str> {
    let keys: &[&str] = match version {
        SemconvVersion::V1_45 => &[
            "messaging.system.name",
            "messaging.operation.name",
            "messaging.operation.type",
            "messaging.destination.name",
            "messaging.destination.partition.id",
            "kafka.offset",
            "kafka.message.key",
            "messaging.consumer.group.name",
            "server.address",
            "server.port",
            "messaging.client.id",
        ],
        SemconvVersion::V1_44 => &[
            "messaging.system",
            "messaging.operation.name",
            "messaging.operation.type",
            "messaging.destination.name",
            "messaging.destination.partition.id",
            "messaging.kafka.offset",
            "messaging.kafka.message.key",
            "messaging.consumer.group.name",
            "server.address",
            "server.port",
            "messaging.client.id",
        ],
        SemconvVersion::Pre1_26 => &[
            "messaging.system",
            "messaging.operation",
            "messaging.destination.name",
            "messaging.kafka.destination.partition",
            "messaging.kafka.message.offset",
            "messaging.kafka.message.key",
            "messaging.kafka.consumer.group",
            "net.peer.name",
            "net.peer.port",
            "messaging.client_id",
        ],
    };
    keys.iter()
        .copied()
        .chain([tracebridge::attributes::QUEUE_TIME_ATTRIBUTE])
        .collect()
}

/// The RabbitMQ process span's keys (message id and correlation id set).
fn amqp_process_keys(version: SemconvVersion) -> BTreeSet<&'static str> {
    let keys: &[&str] = match version {
        SemconvVersion::V1_45 => &[
            "messaging.system.name",
            "messaging.operation.name",
            "messaging.operation.type",
            "messaging.destination.name",
            "rabbitmq.destination.routing_key",
            "rabbitmq.message.delivery_tag",
            "messaging.message.id",
            "messaging.message.conversation_id",
            "server.address",
            "server.port",
        ],
        SemconvVersion::V1_44 => &[
            "messaging.system",
            "messaging.operation.name",
            "messaging.operation.type",
            "messaging.destination.name",
            "messaging.rabbitmq.destination.routing_key",
            "messaging.rabbitmq.message.delivery_tag",
            "messaging.message.id",
            "messaging.message.conversation_id",
            "server.address",
            "server.port",
        ],
        SemconvVersion::Pre1_26 => &[
            "messaging.system",
            "messaging.operation",
            "messaging.destination.name",
            "messaging.rabbitmq.destination.routing_key",
            "messaging.message.id",
            "messaging.message.conversation_id",
            "net.peer.name",
            "net.peer.port",
        ],
    };
    keys.iter()
        .copied()
        .chain([tracebridge::attributes::QUEUE_TIME_ATTRIBUTE])
        .collect()
}

fn keys_of(span: &SpanData) -> BTreeSet<&str> {
    span.attributes.iter().map(|kv| kv.key.as_str()).collect()
}

/// A traced producer on the test broker.
fn kafka_producer(instrumentation: &Instrumentation) -> FutureProducer {
    let producer: FutureProducer = common::kafka::config().create().expect("producer");
    producer.with_instrumentation(instrumentation.clone())
}

/// rdkafka's own consumer of `topic` in a new group, and the group's name.
fn kafka_consumer(topic: &str) -> (StreamConsumer, String) {
    let group = common::unique("conv");
    let mut config = common::kafka::config();
    config
        .set("group.id", &group)
        .set("client.id", "tb-conventions")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false");
    let consumer: StreamConsumer = config.create().expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    (consumer, group)
}

/// Receives one Kafka message and processes it, committing its offset
/// inside the process span.
async fn kafka_process_and_commit(tracing: &ConsumerTracing, consumer: &StreamConsumer) {
    let message = within("a Kafka message", consumer.recv())
        .await
        .expect("received");
    tracing
        .process(consumer, &message, async {
            tracing.commit(consumer, &message, CommitMode::Sync)
        })
        .await
        .expect("committed");
}

/// A traced channel on `conn`, naming the test broker.
async fn amqp_channel(conn: &lapin::Connection, instrumentation: &Instrumentation) -> Channel {
    Channel::from(conn.create_channel().await.expect("channel"))
        .with_server(&common::amqp_url())
        .with_instrumentation(instrumentation.clone())
}

/// A traced channel with publisher confirms on.
async fn amqp_publisher(conn: &lapin::Connection, instrumentation: &Instrumentation) -> Channel {
    let channel = amqp_channel(conn, instrumentation).await;
    channel
        .confirm_select(Default::default())
        .await
        .expect("confirms");
    channel
}

/// Publishes one message (its own trace) and waits for the broker's ack.
async fn publish_confirmed(
    publisher: &Channel,
    exchange: &str,
    routing_key: &str,
    properties: BasicProperties,
) {
    let answer = publisher
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions::default(),
            b"{}",
            properties,
        )
        .with_context(Context::new())
        .await
        .expect("published")
        .await
        .expect("confirm");
    assert_eq!(answer, Confirmation::Ack(None), "confirmed");
}

/// One message to the test exchange, with a message id and a request id.
async fn publish(publisher: &Channel, rabbit: &Rabbit, id: &str) {
    let properties = BasicProperties::default()
        .with_message_id(id.into())
        .with_correlation_id("req-1".into());
    publish_confirmed(publisher, &rabbit.exchange, ROUTING_KEY, properties).await;
}

/// One message to `queue` through the default exchange.
async fn publish_to_queue(
    conn: &lapin::Connection,
    instrumentation: &Instrumentation,
    queue: &str,
) {
    let publisher = amqp_publisher(conn, instrumentation).await;
    publish_confirmed(&publisher, "", queue, BasicProperties::default()).await;
}

/// A traced consumer of `queue` on a channel of its own.
async fn consume_queue(
    conn: &lapin::Connection,
    instrumentation: &Instrumentation,
    queue: &str,
) -> tracebridge::amqp::Consumer {
    amqp_channel(conn, instrumentation)
        .await
        .basic_consume(
            queue.into(),
            common::unique("tag").as_str().into(),
            lapin::options::BasicConsumeOptions::default(),
            lapin::types::FieldTable::default(),
        )
        .await
        .expect("consume")
}

/// The next delivery, `handler` run inside its span, then settled as a
/// worker does: `Ok` acks; `Err` nacks with requeue the first time and
/// rejects (no requeue: to the dead-letter exchange) once the broker
/// redelivered it.
async fn process_next<T, E: std::fmt::Display>(
    consumer: &mut tracebridge::amqp::Consumer,
    handler: impl AsyncFnOnce(&Delivery) -> Result<T, E>,
) -> Result<T, E> {
    let delivery = consumer
        .next()
        .await
        .expect("not cancelled")
        .expect("received");
    let result = delivery.in_span(handler(&delivery)).await;
    match &result {
        Ok(_) => delivery.ack(BasicAckOptions::default()).await,
        Err(_) if !delivery.redelivered => {
            delivery
                .nack(BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                })
                .await
        }
        Err(_) => delivery.reject(BasicRejectOptions { requeue: false }).await,
    }
    .expect("settled");
    result
}

/// Whether `span` is a Kafka batch's process span.
fn is_batch(span: &SpanData) -> bool {
    attr(span, "messaging.batch.message_count").is_some()
}

/// Every span kind of both transports under `conventions`: Kafka send,
/// process, commit, batch process; RabbitMQ publish, process, ack,
/// receive.
async fn every_span_kind(conventions: Conventions) -> spans::Capture {
    let cap = spans::capture();
    let instrumentation = cap.instrumentation().with_conventions(conventions);
    let topic = common::unique("conv");
    common::kafka::create_topic(&topic, 1).await;
    let producer = kafka_producer(&instrumentation);
    for key in ["k-1", "k-2"] {
        producer
            .send(
                FutureRecord::to(&topic).key(key).payload("{}"),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("delivered");
    }
    let (consumer, _) = kafka_consumer(&topic);
    let tracing = ConsumerTracing::default().with_instrumentation(instrumentation.clone());
    kafka_process_and_commit(&tracing, &consumer).await;
    // The second message as a batch of one.
    let batch = [within("a Kafka batch", consumer.recv())
        .await
        .expect("received")];
    tracing.process_batch(&consumer, &batch, async {}).await;

    let rabbit = Rabbit::new("conv").await;
    let publisher = amqp_publisher(&rabbit.conn, &instrumentation).await;
    publish(&publisher, &rabbit, "m-1").await;
    let mut consumer = consume_queue(&rabbit.conn, &instrumentation, &rabbit.queue).await;
    within(
        "a RabbitMQ delivery",
        process_next(&mut consumer, async |_| Ok::<_, std::io::Error>(())),
    )
    .await
    .expect("handled");
    drop(consumer);
    publish(&publisher, &rabbit, "m-2").await;
    let receiver = amqp_channel(&rabbit.conn, &instrumentation).await;
    let got = loop {
        if let Some(got) = receiver
            .basic_get(
                rabbit.queue.as_str().into(),
                BasicGetOptions { no_ack: false },
            )
            .await
            .expect("basic.get")
        {
            break got.delivery;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    got.ack(BasicAckOptions::default()).await.expect("ack");
    rabbit.delete().await;
    cap
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_span_follows_its_versions_table() {
    for version in SemconvVersion::ALL {
        let cap = every_span_kind(Conventions::new(version)).await;
        let spans = cap.spans();
        let kinds: BTreeSet<String> = spans.iter().map(|s| format!("{:?}", s.span_kind)).collect();
        assert_eq!(
            kinds.len(),
            3,
            "PRODUCER, CONSUMER and CLIENT spans: {kinds:?}"
        );
        let names: Vec<&str> = spans.iter().map(|s| s.name.as_ref()).collect();
        for kind in [
            "send ", "process ", "commit ", "publish ", "ack", "receive ",
        ] {
            assert!(
                names.iter().any(|n| n.starts_with(kind)),
                "a {kind:?} span among {names:?}"
            );
        }
        assert!(
            spans
                .iter()
                .any(|s| s.span_kind == SpanKind::Consumer && is_batch(s)),
            "a Kafka batch process span among {names:?}"
        );
        let forbidden: Vec<&str> = match version {
            SemconvVersion::V1_45 => V1_44_ONLY.iter().chain(&PRE_1_26_ONLY).copied().collect(),
            SemconvVersion::V1_44 => V1_45_ONLY.iter().chain(&PRE_1_26_ONLY).copied().collect(),
            SemconvVersion::Pre1_26 => V1_45_ONLY
                .iter()
                .chain(&SINCE_1_26)
                .chain(&[
                    "messaging.kafka.offset",
                    "messaging.rabbitmq.message.delivery_tag",
                ])
                .copied()
                .collect(),
        };
        for span in &spans {
            for key in keys_of(span) {
                assert!(
                    !forbidden.contains(&key),
                    "{} under {}: {key} belongs to another version",
                    span.name,
                    version.as_str()
                );
            }
        }
        let process = |prefix: &str| {
            spans
                .iter()
                .find(|s| {
                    s.span_kind == SpanKind::Consumer && s.name.starts_with(prefix) && !is_batch(s)
                })
                .unwrap_or_else(|| {
                    panic!(
                        "a {prefix} process span: {:?}",
                        spans
                            .iter()
                            .map(|s| (s.name.clone(), s.span_kind.clone()))
                            .collect::<Vec<_>>()
                    )
                })
                .clone()
        };
        let kafka = process("process tb-conv-");
        assert!(!kafka.name.contains(':'), "{}", kafka.name);
        assert_eq!(
            keys_of(&kafka),
            kafka_process_keys(version),
            "Kafka process span under {}",
            version.as_str()
        );
        let amqp = spans
            .iter()
            .find(|s| s.span_kind == SpanKind::Consumer && s.name.contains(':'))
            .expect("the RabbitMQ process span");
        assert_eq!(
            keys_of(amqp),
            amqp_process_keys(version),
            "RabbitMQ process span under {}",
            version.as_str()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messaging_dup_adds_the_pre_1_26_keys_to_every_span() {
    let cap = every_span_kind(Conventions {
        version: SemconvVersion::V1_45,
        duplicate_pre_1_26: true,
    })
    .await;
    let spans = cap.spans();
    let kafka = spans
        .iter()
        .find(|s| s.span_kind == SpanKind::Consumer && !s.name.contains(':') && !is_batch(s))
        .expect("the Kafka process span");
    let want: BTreeSet<&str> = kafka_process_keys(SemconvVersion::V1_45)
        .union(&kafka_process_keys(SemconvVersion::Pre1_26))
        .copied()
        .collect();
    assert_eq!(keys_of(kafka), want);
    // The old partition stays an integer, the new one a string.
    assert_eq!(
        attr(kafka, "messaging.kafka.destination.partition"),
        Some(Value::I64(0))
    );
    assert_eq!(
        attr(kafka, "messaging.destination.partition.id"),
        Some(Value::from("0"))
    );
    for span in &spans {
        assert!(
            keys_of(span).contains("messaging.operation"),
            "{}: the pre-1.26 operation",
            span.name
        );
    }
}

/// A metric's data points as (attributes, count or sum), with its unit
/// and histogram bounds.
struct Points {
    unit: String,
    bounds: Vec<f64>,
    points: Vec<(BTreeSet<(String, String)>, u64)>,
}

fn points(cap: &spans::Capture, name: &str) -> Points {
    use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
    cap.meters.force_flush().expect("flush metrics");
    let finished = cap.metrics.get_finished_metrics().expect("metrics");
    // Cumulative: the last export holds everything.
    let last = finished.last().expect("an export");
    let metric = last
        .scope_metrics()
        .flat_map(|sm| sm.metrics())
        .find(|m| m.name() == name)
        .unwrap_or_else(|| panic!("no metric {name}"));
    let labels = |attrs: &mut dyn Iterator<Item = &KeyValue>| -> BTreeSet<(String, String)> {
        attrs
            .map(|kv| (kv.key.to_string(), kv.value.as_str().into_owned()))
            .collect()
    };
    let mut out = Points {
        unit: metric.unit().to_owned(),
        bounds: Vec::new(),
        points: Vec::new(),
    };
    match metric.data() {
        AggregatedMetrics::F64(MetricData::Histogram(h)) => {
            for p in h.data_points() {
                out.bounds = p.bounds().collect();
                out.points.push((labels(&mut p.attributes()), p.count()));
            }
        }
        AggregatedMetrics::U64(MetricData::Sum(s)) => {
            for p in s.data_points() {
                out.points.push((labels(&mut p.attributes()), p.value()));
            }
        }
        other => panic!("{name}: unexpected data {other:?}"),
    }
    out
}

fn labels(pairs: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_four_instruments_count_every_send_and_consume() {
    const N: usize = 5;
    let cap = spans::capture();
    let instrumentation = cap.instrumentation();
    let topic = common::unique("metrics");
    common::kafka::create_topic(&topic, 1).await;
    let producer = kafka_producer(&instrumentation);
    for i in 0..N {
        producer
            .send(
                FutureRecord::to(&topic).key(&format!("k{i}")).payload("{}"),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("delivered");
    }
    let (consumer, group) = kafka_consumer(&topic);
    let tracing = ConsumerTracing::default().with_instrumentation(instrumentation.clone());
    for _ in 0..N {
        kafka_process_and_commit(&tracing, &consumer).await;
    }
    let rabbit = Rabbit::new("metrics").await;
    let publisher = amqp_publisher(&rabbit.conn, &instrumentation).await;
    for i in 0..N {
        publish(&publisher, &rabbit, &format!("m{i}")).await;
    }
    let mut amqp = consume_queue(&rabbit.conn, &instrumentation, &rabbit.queue).await;
    for _ in 0..N {
        within(
            "a RabbitMQ delivery",
            process_next(&mut amqp, async |_| Ok::<_, std::io::Error>(())),
        )
        .await
        .expect("handled");
    }

    let (kafka_host, kafka_port) = common::kafka_server();
    // The test broker's URL, as the metrics should name it.
    let amqp_uri: lapin::uri::AMQPUri = common::amqp_url().parse().expect("an AMQP URL");
    let amqp_host = amqp_uri.authority.host.clone();
    let amqp_port = amqp_uri.authority.port.to_string();
    let kafka_port = kafka_port.to_string();
    let amqp_destination = format!("{}:{ROUTING_KEY}", rabbit.exchange);
    let amqp_delivery = format!("{}:{ROUTING_KEY}:{}", rabbit.exchange, rabbit.queue);
    let kafka_base = [
        ("messaging.system.name", "kafka"),
        ("messaging.destination.name", topic.as_str()),
        ("server.address", kafka_host.as_str()),
        ("server.port", kafka_port.as_str()),
    ];
    let with = |base: &[(&'static str, &str)], more: &[(&'static str, &str)]| {
        let mut all: Vec<(&str, &str)> = base.to_vec();
        all.extend_from_slice(more);
        labels(&all)
    };
    let amqp_base = [
        ("messaging.system.name", "rabbitmq"),
        ("server.address", amqp_host.as_str()),
        ("server.port", amqp_port.as_str()),
    ];

    let kafka_op = |name: &'static str, kind: &'static str, grouped: bool| {
        let mut more = vec![
            ("messaging.operation.name", name),
            ("messaging.operation.type", kind),
        ];
        if grouped {
            more.push(("messaging.consumer.group.name", group.as_str()));
        }
        with(&kafka_base, &more)
    };
    let amqp_op = |name: &'static str, kind: &'static str, destination: &str| {
        with(
            &amqp_base,
            &[
                ("messaging.operation.name", name),
                ("messaging.operation.type", kind),
                ("messaging.destination.name", destination),
            ],
        )
    };

    let sent = points(&cap, "messaging.client.sent.messages");
    assert_eq!(sent.unit, "{message}");
    let kafka_send = kafka_op("send", "send", false);
    let amqp_send = amqp_op("publish", "send", &amqp_destination);
    assert_eq!(
        sorted(sent.points.clone()),
        sorted(vec![
            (kafka_send.clone(), N as u64),
            (amqp_send.clone(), N as u64)
        ])
    );

    let consumed = points(&cap, "messaging.client.consumed.messages");
    assert_eq!(consumed.unit, "{message}");
    let kafka_poll = kafka_op("poll", "receive", true);
    let amqp_receive = amqp_op("receive", "receive", &amqp_delivery);
    assert_eq!(
        sorted(consumed.points),
        sorted(vec![(kafka_poll, N as u64), (amqp_receive, N as u64)])
    );

    let spec_buckets = tracebridge::DURATION_BUCKETS.to_vec();
    let process = points(&cap, "messaging.process.duration");
    assert_eq!(
        (process.unit.as_str(), &process.bounds),
        ("s", &spec_buckets)
    );
    let kafka_process = kafka_op("process", "process", true);
    let amqp_process = amqp_op("process", "process", &amqp_delivery);
    assert_eq!(
        sorted(process.points),
        sorted(vec![(kafka_process, N as u64), (amqp_process, N as u64)])
    );

    let operations = points(&cap, "messaging.client.operation.duration");
    assert_eq!(
        (operations.unit.as_str(), &operations.bounds),
        ("s", &spec_buckets)
    );
    let kafka_commit = kafka_op("commit", "settle", true);
    let amqp_ack = amqp_op("ack", "settle", &amqp_delivery);
    assert_eq!(
        sorted(operations.points),
        sorted(vec![
            (kafka_send, N as u64),
            (amqp_send, N as u64),
            (kafka_commit, N as u64),
            (amqp_ack, N as u64),
        ])
    );
    rabbit.delete().await;
}

fn sorted(
    mut points: Vec<(BTreeSet<(String, String)>, u64)>,
) -> Vec<(BTreeSet<(String, String)>, u64)> {
    points.sort();
    points
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rabbitmq_dead_letter_continues_the_trace_with_its_death_count() {
    use lapin::ExchangeKind;
    use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
    use lapin::types::{AMQPValue, FieldTable, LongString};
    let cap = spans::capture();
    let instrumentation = cap.instrumentation();
    let conn = common::amqp::connect().await;
    let channel = conn.create_channel().await.expect("channel");
    let (dlx, dlq, work) = (
        common::unique("dlx"),
        common::unique("dlq"),
        common::unique("work"),
    );
    channel
        .exchange_declare(
            dlx.as_str().into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions {
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("declare the DLX");
    for (queue, arguments) in [
        (&dlq, FieldTable::default()),
        (&work, {
            let mut args = FieldTable::default();
            args.insert(
                "x-dead-letter-exchange".into(),
                AMQPValue::LongString(LongString::from(dlx.as_str())),
            );
            args
        }),
    ] {
        channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    auto_delete: true,
                    ..Default::default()
                },
                arguments,
            )
            .await
            .expect("declare a queue");
    }
    channel
        .queue_bind(
            dlq.as_str().into(),
            dlx.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind the DLQ");

    publish_to_queue(&conn, &instrumentation, &work).await;

    // The worker requeues once, then rejects into the DLX.
    let mut worker = consume_queue(&conn, &instrumentation, &work).await;
    for attempt in 1..=2 {
        let outcome = within(
            "a delivery of the failing message",
            process_next(&mut worker, async |_| {
                Err::<(), _>(std::io::Error::other("declined"))
            }),
        )
        .await;
        assert!(outcome.is_err(), "attempt {attempt} fails");
    }
    let mut dead = consume_queue(&conn, &instrumentation, &dlq).await;
    within(
        "the dead letter",
        process_next(&mut dead, async |_| Ok::<_, std::io::Error>(())),
    )
    .await
    .expect("handled");

    let publish = cap
        .spans()
        .into_iter()
        .find(|s| s.span_kind == SpanKind::Producer)
        .expect("the publish span");
    let processes: Vec<SpanData> = cap
        .spans()
        .into_iter()
        .filter(|s| s.span_kind == SpanKind::Consumer)
        .collect();
    assert_eq!(
        processes.len(),
        3,
        "two failed deliveries and the dead letter"
    );
    for process in &processes {
        assert_eq!(
            trace_id(process),
            trace_id(&publish),
            "{}: one trace",
            process.name
        );
    }
    let (first, redelivery, dead_letter) = (&processes[0], &processes[1], &processes[2]);
    assert_eq!(
        attr(first, tracebridge::attributes::REDELIVERED_ATTRIBUTE),
        None
    );
    assert_eq!(
        attr(redelivery, tracebridge::attributes::REDELIVERED_ATTRIBUTE),
        Some(Value::Bool(true))
    );
    assert!(dead_letter.name.ends_with(&dlq), "{}", dead_letter.name);
    assert_eq!(
        attr(dead_letter, tracebridge::attributes::DEATH_COUNT_ATTRIBUTE),
        Some(Value::I64(1))
    );
    assert_eq!(
        attr(dead_letter, tracebridge::attributes::REASON_ATTRIBUTE),
        Some(Value::from("rejected"))
    );
    let _ = channel
        .queue_delete(work.as_str().into(), Default::default())
        .await;
    let _ = channel
        .queue_delete(dlq.as_str().into(), Default::default())
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relays_metrics_page_shows_the_four_instruments_by_their_prometheus_names() {
    use common::flow::{RelaySetup, Seen, Until, drain_amqp, kafka_to_amqp, send_kafka};
    const N: usize = 20;
    let bootstrap = common::kafka_bootstrap();
    let topic = common::unique("prom");
    common::kafka::create_topic(&topic, 1).await;
    let rabbit = Rabbit::new("prom").await;
    let setup = RelaySetup::new(
        16,
        &bootstrap,
        &kafka_to_amqp("prom", &topic, &rabbit.exchange),
    );
    let relay = setup.start();
    relay.wait_ready(Duration::from_secs(60)).await;
    send_kafka(&bootstrap, &topic, 0, N).await;
    let mut seen = Seen::new();
    drain_amqp(
        &rabbit.channel,
        &rabbit.queue,
        &mut seen,
        N,
        Until::Arrived,
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(seen.len(), N, "every message relayed");
    // The process span (and its histogram) ends after the sink's confirm.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, page) = common::http_get(relay.listen, "/metrics").await;
    relay.stop();
    assert_eq!(status, 200);
    let value = |name: &str, labels: &[&str]| -> f64 {
        page.lines()
            .filter(|l| l.starts_with(&format!("{name}{{")))
            .find(|l| labels.iter().all(|want| l.contains(want)))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} with {labels:?} in:\n{page}"))
    };
    let n = N as f64;
    let kafka = "messaging_system_name=\"kafka\"";
    let rabbitmq = "messaging_system_name=\"rabbitmq\"";
    let topic_label = format!("messaging_destination_name=\"{topic}\"");
    assert_eq!(
        value(
            "messaging_client_consumed_messages_total",
            &[kafka, &topic_label, "messaging_operation_name=\"poll\""]
        ),
        n
    );
    assert_eq!(
        value(
            "messaging_process_duration_seconds_count",
            &[kafka, &topic_label, "messaging_operation_name=\"process\""]
        ),
        n
    );
    assert_eq!(
        value(
            "messaging_client_sent_messages_total",
            &[rabbitmq, "messaging_operation_name=\"publish\""]
        ),
        n
    );
    assert_eq!(
        value(
            "messaging_client_operation_duration_seconds_bucket",
            &[
                rabbitmq,
                "messaging_operation_name=\"publish\"",
                "le=\"+Inf\""
            ]
        ),
        n
    );
    for name in [
        "messaging_client_operation_duration_seconds",
        "messaging_process_duration_seconds",
    ] {
        assert!(page.contains(&format!("# TYPE {name} histogram")), "{name}");
    }
    for name in [
        "messaging_client_sent_messages_total",
        "messaging_client_consumed_messages_total",
    ] {
        assert!(page.contains(&format!("# TYPE {name} counter")), "{name}");
    }
    // Its own series are still there.
    assert!(page.contains("tracebridge_relay_"), "{page}");
    rabbit.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_queue_redelivery_records_its_delivery_count() {
    use lapin::options::QueueDeclareOptions;
    use lapin::types::{AMQPValue, FieldTable, LongString};
    let cap = spans::capture();
    let instrumentation = cap.instrumentation();
    let conn = common::amqp::connect().await;
    let channel = conn.create_channel().await.expect("channel");
    let queue = common::unique("quorum");
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from("quorum")),
    );
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            arguments,
        )
        .await
        .expect("declare a quorum queue");
    publish_to_queue(&conn, &instrumentation, &queue).await;
    let mut consumer = consume_queue(&conn, &instrumentation, &queue).await;
    // Fails once (requeued), then succeeds.
    let failed = within(
        "the first delivery",
        process_next(&mut consumer, async |_| {
            Err::<(), _>(std::io::Error::other("busy"))
        }),
    )
    .await;
    assert!(failed.is_err());
    within(
        "the redelivery",
        process_next(&mut consumer, async |_| Ok::<_, std::io::Error>(())),
    )
    .await
    .expect("handled");
    let processes: Vec<SpanData> = cap
        .spans()
        .into_iter()
        .filter(|s| s.span_kind == SpanKind::Consumer)
        .collect();
    assert_eq!(processes.len(), 2);
    assert_eq!(
        attr(
            &processes[0],
            tracebridge::attributes::DELIVERY_COUNT_ATTRIBUTE
        ),
        None,
        "a first delivery has no count"
    );
    assert_eq!(
        attr(
            &processes[1],
            tracebridge::attributes::DELIVERY_COUNT_ATTRIBUTE
        ),
        Some(Value::I64(1)),
        "the redelivery counts the failed delivery"
    );
    assert_eq!(trace_id(&processes[0]), trace_id(&processes[1]));
    let _ = channel
        .queue_delete(queue.as_str().into(), Default::default())
        .await;
}
