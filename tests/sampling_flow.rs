//! The flow of issue 25, measured against the real brokers: a Python
//! producer (the OpenTelemetry Python SDK, `parentbased_traceidratio` at
//! 10 %) → Kafka → the relay → RabbitMQ → a library consumer that sends on
//! → Kafka → a library consumer. Every Rust process has its own tracer
//! provider and sampler at 10 %: today's `ParentBased(TraceIdRatioBased)`,
//! or tracebridge's consistent `ProbabilitySampler`. Each message's chain of
//! contexts is read back hop by hop (the `traceparent` each hop wrote, the
//! process span each handler ran in), and the report counts:
//!
//! * partial traces: hops of one trace that disagree on being kept;
//! * new traces (`link` mode) kept while the trace they link to was
//!   dropped, and dropped while it was kept;
//! * the share of traces kept.
//!
//! `TRACEBRIDGE_SAMPLING_FLOW_MESSAGES` sets the messages per scenario
//! (default 1 000; docs/sampling.md reports a run of 10 000).
#![cfg(all(feature = "kafka", feature = "amqp"))]

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::amqp::{ROUTING_KEY, Rabbit};
use opentelemetry::Context;
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use rdkafka::Message as _;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::producer::FutureRecord;
use tracebridge::kafka::ConsumerTracing;
use tracebridge::relay::Relay;
use tracebridge::sampling::ProbabilitySampler;
use tracebridge::{Instrumentation, ParentPolicy};

const RATIO: f64 = 0.1;

/// Which samplers the Rust processes run.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Samplers {
    /// `parentbased_traceidratio`, the SDK's.
    Today,
    /// `parentbased_probability`, tracebridge's (link sampling on).
    Consistent,
}

/// Where a new trace starts.
#[derive(Clone, Copy, Debug)]
enum Mode {
    /// Every hop joins the producer's trace.
    Join,
    /// The relay starts a new trace linked to the producer's.
    RelayLinks,
    /// The first library consumer starts a new trace linked to the relay's.
    ConsumerLinks,
}

fn provider(samplers: Samplers) -> SdkTracerProvider {
    let builder = SdkTracerProvider::builder();
    match samplers {
        Samplers::Today => builder.with_sampler(Sampler::ParentBased(Box::new(
            Sampler::TraceIdRatioBased(RATIO),
        ))),
        Samplers::Consistent => {
            builder.with_sampler(ProbabilitySampler::new(RATIO).expect("ratio"))
        }
    }
    .build()
}

/// One hop's context: trace id and sampled flag.
#[derive(Clone, Debug, PartialEq)]
struct Hop {
    trace_id: String,
    sampled: bool,
    /// The W3C Level 2 random flag.
    random: bool,
}

impl Hop {
    fn of_traceparent(traceparent: &str) -> Hop {
        let flags = u8::from_str_radix(&traceparent[53..55], 16).expect("flags");
        Hop {
            trace_id: traceparent[3..35].to_owned(),
            sampled: flags & 1 == 1,
            random: flags & 2 == 2,
        }
    }

    fn of_current() -> Hop {
        let cx = Context::current();
        let span = cx.span();
        let sc = span.span_context();
        // As tracebridge writes it: the flag, or an `rv` equal to the
        // id's last 56 bits (a trace the consistent sampler started).
        let trace_id = sc.trace_id().to_string();
        let rv_is_the_id = sc.trace_state().get("ot").is_some_and(|ot| {
            ot.split(';')
                .any(|m| m == format!("rv:{}", &trace_id[18..]))
        });
        Hop {
            sampled: sc.is_sampled(),
            random: sc.trace_flags().to_u8() & 2 == 2 || rv_is_the_id,
            trace_id,
        }
    }
}

/// What one scenario measured.
#[derive(Debug, Default)]
struct Report {
    messages: usize,
    traces: usize,
    partial: usize,
    kept: usize,
    new_traces: usize,
    kept_linking_dropped: usize,
    dropped_linking_kept: usize,
    /// Hops (after Python's, which always sets it) without the random flag.
    hops_without_random_flag: usize,
}

/// Each message's hops, in order: Python's send, the relay's send, the
/// first consumer's process span, its send, the last consumer's process
/// span.
fn measure(chains: &BTreeMap<usize, Vec<Hop>>) -> Report {
    let mut report = Report {
        messages: chains.len(),
        ..Report::default()
    };
    let mut traces: BTreeMap<&str, Vec<bool>> = BTreeMap::new();
    for chain in chains.values() {
        for (i, hop) in chain.iter().enumerate() {
            traces.entry(&hop.trace_id).or_default().push(hop.sampled);
            report.hops_without_random_flag += usize::from(!hop.random);
            // A hop in another trace than the one before starts a new
            // trace linked to it.
            if i > 0 && hop.trace_id != chain[i - 1].trace_id {
                report.new_traces += 1;
                let linked = chain[i - 1].sampled;
                report.kept_linking_dropped += usize::from(hop.sampled && !linked);
                report.dropped_linking_kept += usize::from(!hop.sampled && linked);
            }
        }
    }
    report.traces = traces.len();
    for decisions in traces.values() {
        let kept = decisions.iter().filter(|s| **s).count();
        report.partial += usize::from(kept != 0 && kept != decisions.len());
        report.kept += usize::from(kept == decisions.len());
    }
    report
}

async fn run(mode: Mode, samplers: Samplers, messages: usize) -> Report {
    let first = common::unique("flow-in");
    let last = common::unique("flow-out");
    common::kafka::create_topic(&first, 1).await;
    common::kafka::create_topic(&last, 1).await;
    let rabbit = Rabbit::new("flow").await;
    let relay_mode = if matches!(mode, Mode::RelayLinks) {
        "link"
    } else {
        "join"
    };
    let relay_provider = provider(samplers);
    let relay = Relay::start(
        common::relay_config(&format!(
            r#"[[route]]
name = "flow"
from = {{ kafka = "k", topic = "{first}", group = "{first}-relay" }}
to = {{ amqp = "r", exchange = "{exchange}", routing_key = "{ROUTING_KEY}" }}
propagation = {{ mode = "{relay_mode}" }}"#,
            exchange = rabbit.exchange,
        )),
        Instrumentation::from_sdk(&relay_provider, None),
    )
    .await
    .expect("relay starts");

    // Each message's five hops, each written by the worker that saw it.
    let chains: Arc<Mutex<BTreeMap<usize, [Option<Hop>; 5]>>> = Arc::default();

    // The first library consumer: RabbitMQ in, Kafka out.
    let first_provider = provider(samplers);
    let first_instrumentation = Instrumentation::from_sdk(&first_provider, None);
    let policy = if matches!(mode, Mode::ConsumerLinks) {
        ParentPolicy::Link
    } else {
        ParentPolicy::Join
    };
    let mut consumer = {
        use lapin::options::{BasicConsumeOptions, BasicQosOptions};
        let channel =
            tracebridge::amqp::Channel::from(rabbit.conn.create_channel().await.expect("channel"))
                .with_server(&common::amqp_url())
                .with_instrumentation(first_instrumentation.clone())
                .with_parent_policy(policy);
        channel
            .basic_qos(200, BasicQosOptions::default())
            .await
            .expect("qos");
        channel
            .basic_consume(
                rabbit.queue.as_str().into(),
                common::unique("flow").as_str().into(),
                BasicConsumeOptions::default(),
                Default::default(),
            )
            .await
            .expect("consume")
    };
    let producer = common::traced::kafka_producer(first_instrumentation);
    let first_chains = chains.clone();
    let last_topic = last.clone();
    let first_worker = tokio::spawn(async move {
        use futures::StreamExt as _;
        for _ in 0..messages {
            let delivery = consumer.next().await.expect("open").expect("delivery");
            let relay_sent = delivery
                .properties
                .headers()
                .as_ref()
                .and_then(|h| h.inner().get("traceparent").cloned());
            let Some(lapin::types::AMQPValue::LongString(relay_sent)) = relay_sent else {
                panic!("the relay wrote no traceparent");
            };
            let payload = String::from_utf8(delivery.data.clone()).expect("text");
            let index: usize = payload
                .split(' ')
                .next()
                .and_then(|i| i.parse().ok())
                .expect("index");
            let work = async {
                let processed = Hop::of_current();
                producer
                    .send(
                        FutureRecord::<(), _>::to(&last_topic).payload(&payload),
                        Duration::from_secs(30),
                    )
                    .await
                    .map_err(|(e, _)| e)
                    .expect("delivered");
                Ok::<_, std::convert::Infallible>(processed)
            };
            let Ok(processed) = delivery.in_span(work).await;
            delivery.ack(Default::default()).await.expect("ack");
            let mut chains = first_chains.lock().unwrap();
            let chain = chains.entry(index).or_default();
            chain[1] = Some(Hop::of_traceparent(&relay_sent.to_string()));
            chain[2] = Some(processed);
        }
    });

    // The last library consumer: Kafka in.
    let last_provider = provider(samplers);
    let tracing = ConsumerTracing::default()
        .with_instrumentation(Instrumentation::from_sdk(&last_provider, None));
    let reader: StreamConsumer = {
        let mut config = common::kafka::config();
        config
            .set("group.id", common::unique("flow-last"))
            .set("auto.offset.reset", "earliest");
        config.create().expect("consumer")
    };
    reader.subscribe(&[&last]).expect("subscribe");
    let last_chains = chains.clone();
    let last_worker = tokio::spawn(async move {
        for _ in 0..messages {
            let message = reader.recv().await.expect("record");
            let header = common::kafka::header_text(&message, "traceparent")
                .expect("the first consumer wrote a traceparent");
            let payload = String::from_utf8_lossy(message.payload().expect("payload")).into_owned();
            let mut fields = payload.split(' ');
            let index: usize = fields.next().and_then(|i| i.parse().ok()).expect("index");
            let python = Hop {
                trace_id: fields.next().expect("trace id").to_owned(),
                sampled: fields.next() == Some("1"),
                // The Python SDK 1.45 writes it on every trace it starts.
                random: true,
            };
            let work = async { Ok::<_, std::convert::Infallible>(Hop::of_current()) };
            let Ok(processed) = tracing.process(&reader, &message, work).await;
            let mut chains = last_chains.lock().unwrap();
            let chain = chains.entry(index).or_default();
            chain[0] = Some(python);
            chain[3] = Some(Hop::of_traceparent(&header));
            chain[4] = Some(processed);
        }
    });

    // The Python producer, its sampler from the standard variables.
    let python =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".brokers/python/bin/python");
    assert!(
        python.exists(),
        "{} is missing: `scripts/brokers.sh up` installs the Python peer",
        python.display()
    );
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/python_producer.py");
    let (bootstrap, topic) = (common::kafka_bootstrap(), first.clone());
    let status = tokio::task::spawn_blocking(move || {
        std::process::Command::new(&python)
            .arg(&script)
            .arg(bootstrap)
            .arg(topic)
            .arg(messages.to_string())
            .env("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
            .env("OTEL_TRACES_SAMPLER_ARG", RATIO.to_string())
            .env("OTEL_TRACES_EXPORTER", "none")
            .status()
            .expect("python runs")
    })
    .await
    .expect("joined");
    assert!(status.success(), "the Python producer failed: {status}");

    let wait = Duration::from_secs(120 + messages as u64 / 20);
    tokio::time::timeout(wait, first_worker)
        .await
        .expect("the first consumer in time")
        .expect("first consumer");
    tokio::time::timeout(wait, last_worker)
        .await
        .expect("the last consumer in time")
        .expect("last consumer");
    assert!(relay.shutdown().await, "drained");
    rabbit.delete().await;
    let chains = std::mem::take(&mut *chains.lock().unwrap());
    assert_eq!(chains.len(), messages, "every message arrived");
    let chains = chains
        .into_iter()
        .map(|(index, hops)| {
            let hops: Vec<Hop> = hops
                .into_iter()
                .map(|hop| hop.unwrap_or_else(|| panic!("message {index}: a hop is missing")))
                .collect();
            (index, hops)
        })
        .collect();
    measure(&chains)
}

fn messages() -> usize {
    common::sampling_messages(1_000)
}

/// Today's and the consistent samplers through `mode`; prints both.
async fn compare(mode: Mode) -> (Report, Report) {
    let messages = messages();
    let today = run(mode, Samplers::Today, messages).await;
    let consistent = run(mode, Samplers::Consistent, messages).await;
    eprintln!(
        "{mode:?}, {messages} messages:\n  today's:    {today:?}\n  consistent: {consistent:?}"
    );
    (today, consistent)
}

/// The share kept is the producer's 10 %, within what chance allows at
/// this many messages (five standard deviations).
fn assert_kept_share(report: &Report, what: &str) {
    let n = report.messages as f64;
    let kept_roots = report.kept as f64 / report.traces as f64;
    let slack = 5.0 * (RATIO * (1.0 - RATIO) / n).sqrt();
    assert!(
        (kept_roots - RATIO).abs() <= slack,
        "{what}: {:.2} % of traces kept, not 10 % ± {:.2} ({report:?})",
        kept_roots * 100.0,
        slack * 100.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_mode_keeps_or_drops_each_journey_whole() {
    let (today, consistent) = compare(Mode::Join).await;
    for (report, what) in [(&today, "today's"), (&consistent, "consistent")] {
        assert_eq!(
            report.hops_without_random_flag, 0,
            "{what}: Python's random flag at every hop ({report:?})"
        );
        assert_eq!(report.partial, 0, "{what}: partial traces ({report:?})");
        assert_eq!(
            report.new_traces, 0,
            "{what}: one trace a message ({report:?})"
        );
        assert_kept_share(report, what);
    }
}

/// In `link` mode: the consistent sampler's new traces agree with their
/// links and carry the random flag; today's decide on their own and start
/// without the flag.
fn assert_links_followed(today: &Report, consistent: &Report) {
    assert_eq!(consistent.partial, 0, "{consistent:?}");
    assert_eq!(consistent.new_traces, consistent.messages, "{consistent:?}");
    assert_eq!(
        (
            consistent.kept_linking_dropped,
            consistent.dropped_linking_kept
        ),
        (0, 0),
        "{consistent:?}"
    );
    assert_eq!(consistent.hops_without_random_flag, 0, "{consistent:?}");
    assert!(
        today.kept_linking_dropped > 0 && today.dropped_linking_kept > 0,
        "{today:?}"
    );
    assert!(today.hops_without_random_flag > 0, "{today:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_mode_at_the_relay_never_keeps_a_link_to_a_dropped_trace() {
    let (today, consistent) = compare(Mode::RelayLinks).await;
    assert_links_followed(&today, &consistent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_mode_at_a_consumer_never_keeps_a_link_to_a_dropped_trace() {
    let (today, consistent) = compare(Mode::ConsumerLinks).await;
    assert_links_followed(&today, &consistent);
}
