//! `tracebridge demo`: one request's journey across Kafka and RabbitMQ as
//! ONE trace, against the local brokers, in this one process.
//!
//! * "checkout" sends order events with tracebridge's `FutureProducer` to
//!   Kafka `orders`;
//! * the relay (`bridge-config/demo.toml`) moves them to RabbitMQ exchange
//!   `fulfillment`, recording each order's request id → context;
//! * "legacy billing" (plain rdkafka, never instrumented) sends charges to
//!   Kafka `billing` with only `x-request-id`; the relay joins each into
//!   its order's trace;
//! * "fulfillment" consumes both on a traced `Channel`, works in nested
//!   spans and logs with trace ids; one order fails (error, nack, then
//!   reject into the dead-letter queue).
//!
//! Then the span file is read back and every order's trace checked.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use futures::StreamExt as _;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions, BasicRejectOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions, QueuePurgeOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, ConnectionProperties, ExchangeKind};
use opentelemetry::trace::{SpanKind, TraceContextExt as _, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use tracebridge::Instrumentation;
use tracebridge::kafka::producer::FutureProducer;
use tracebridge::relay::{Relay, RelayConfig};
use tracebridge::traces::{Kind, Options, SpanRecord, Traces};

/// Names from `bridge-config/demo.toml`.
const ORDERS_TOPIC: &str = "orders";
const BILLING_TOPIC: &str = "billing";
const EXCHANGE: &str = "fulfillment";
const WORK_QUEUE: &str = "fulfillment.work";
const DEAD_EXCHANGE: &str = "fulfillment.dlx";
const DEAD_QUEUE: &str = "fulfillment.dead";
/// The order that fails in the worker.
pub(crate) const FAILING_ORDER: usize = 2;
const ITEMS: [&str; 3] = ["teapot", "kettle", "mug"];

/// What the demo runs against and where it writes.
pub(crate) struct Settings {
    pub(crate) kafka: String,
    pub(crate) amqp: String,
    /// The relay's config; `None` when a relay runs elsewhere (compose).
    pub(crate) config: Option<PathBuf>,
    pub(crate) orders: usize,
    /// Create the topics, exchanges and queues, then stop.
    pub(crate) setup_only: bool,
    pub(crate) timeout: Duration,
}

/// The services' tracer providers (each its own `service.name`), and the
/// relay's instrumentation.
pub(crate) struct Services {
    pub(crate) checkout: SdkTracerProvider,
    pub(crate) relay: Instrumentation,
    pub(crate) fulfillment: SdkTracerProvider,
}

/// One order as the demo follows it.
#[derive(Debug, Default, Clone)]
struct Progress {
    /// The worker saw the order (so the relay recorded its request id).
    order_seen: bool,
    order_processed: bool,
    billing_processed: bool,
    dead_lettered: bool,
}

type Board = Arc<Mutex<HashMap<String, Progress>>>;

fn say(text: &str) {
    eprintln!("[demo] {text}");
}

/// Runs the flow; returns each order's request id and trace id.
pub(crate) async fn run(
    settings: &Settings,
    services: Services,
) -> anyhow::Result<Vec<(String, String)>> {
    let run_id = format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis()
    );
    let mut kafka = ClientConfig::new();
    kafka
        .set("bootstrap.servers", &settings.kafka)
        .set("message.timeout.ms", "10000");
    say(
        "creating topics orders, billing; exchanges fulfillment, fulfillment.dlx; queues fulfillment.work, fulfillment.dead",
    );
    for topic in [ORDERS_TOPIC, BILLING_TOPIC] {
        tracebridge::kafka::create_topic(&kafka, topic, 1)
            .await
            .with_context(|| format!("creating Kafka topic {topic} at {}", settings.kafka))?;
    }
    let amqp = Connection::connect(&settings.amqp, ConnectionProperties::default())
        .await
        .with_context(|| {
            format!(
                "connecting to RabbitMQ at {}",
                tracebridge::redact::redact_url(&settings.amqp)
            )
        })?;
    declare_queues(&amqp).await?;
    if settings.setup_only {
        say("setup done");
        return Ok(Vec::new());
    }

    let relay = match &settings.config {
        Some(path) => {
            let config = RelayConfig::load(path).map_err(|e| anyhow!("{e}"))?;
            say(&format!(
                "starting the relay ({} routes from {})",
                config.routes.len(),
                path.display()
            ));
            Some(
                Relay::start(config, services.relay)
                    .await
                    .context("starting the relay")?,
            )
        }
        None => {
            say("using the relay that runs beside the demo (--external-relay)");
            None
        }
    };

    let board: Board = Arc::default();
    let channel = tracebridge::amqp::Channel::from(amqp.create_channel().await?)
        .with_server(&settings.amqp)
        .with_instrumentation(Instrumentation::from_sdk(&services.fulfillment, None));
    let worker = tokio::spawn(worker(
        channel,
        amqp.create_channel().await?,
        services.fulfillment.tracer("fulfillment"),
        board.clone(),
    ));

    say(&format!(
        "checkout: sending {} orders to Kafka topic {ORDERS_TOPIC}",
        settings.orders
    ));
    let producer: FutureProducer = kafka.create().context("creating the checkout producer")?;
    let producer =
        producer.with_instrumentation(Instrumentation::from_sdk(&services.checkout, None));
    let checkout_tracer = services.checkout.tracer("checkout");
    let mut ids = Vec::new();
    for n in 1..=settings.orders {
        let request_id = format!("req-{run_id}-{n}");
        // On the board before it is sent: the worker may see it at once.
        board
            .lock()
            .map_err(|_| anyhow!("board lock"))?
            .insert(request_id.clone(), Progress::default());
        let trace_id = checkout(&producer, &checkout_tracer, &request_id, n).await?;
        ids.push((request_id, trace_id));
    }

    // A billing message must come after its order reached the relay's
    // store: the worker seeing the order proves the relay recorded it.
    let seen = board.clone();
    wait_until(settings.timeout, "the worker to see every order", || {
        seen.lock()
            .map(|b| b.values().all(|p| p.order_seen))
            .unwrap_or(false)
    })
    .await?;

    say(&format!(
        "legacy billing: sending {} charges to Kafka topic {BILLING_TOPIC} with only x-request-id",
        ids.len()
    ));
    let legacy: rdkafka::producer::FutureProducer = kafka
        .create()
        .context("creating the legacy billing producer")?;
    for (request_id, _) in &ids {
        let body =
            serde_json::json!({ "request_id": request_id, "amount_cents": 4200 }).to_string();
        legacy
            .send(
                FutureRecord::<str, str>::to(BILLING_TOPIC)
                    .payload(&body)
                    .headers(OwnedHeaders::new().insert(Header {
                        key: "x-request-id",
                        value: Some(request_id.as_str()),
                    })),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| anyhow!("legacy billing send failed: {e}"))?;
    }

    let failing = ids.get(FAILING_ORDER - 1).map(|(id, _)| id.clone());
    let watched = board.clone();
    let waited = wait_until(
        settings.timeout,
        "every order and charge to be processed",
        || {
            watched
                .lock()
                .map(|b| {
                    b.iter().all(|(id, p)| {
                        p.billing_processed
                            && (p.order_processed
                                || (Some(id) == failing.as_ref() && p.dead_lettered))
                    })
                })
                .unwrap_or(false)
        },
    )
    .await;
    worker.abort();
    if let Some(relay) = relay {
        say("stopping the relay");
        relay.shutdown().await;
    }
    if let Err(err) = waited {
        let board = board.lock().map(|b| format!("{b:#?}")).unwrap_or_default();
        bail!("{err}\nprogress: {board}");
    }
    Ok(ids)
}

/// A SERVER span for the checkout request, and the order sent under it.
async fn checkout(
    producer: &FutureProducer,
    checkout: &SdkTracer,
    request_id: &str,
    n: usize,
) -> anyhow::Result<String> {
    let span = checkout
        .span_builder("POST /checkout")
        .with_kind(SpanKind::Server)
        .with_attributes([
            KeyValue::new("http.request.method", "POST"),
            KeyValue::new("http.route", "/checkout"),
        ])
        .start(checkout);
    let cx = Context::new().with_span(span);
    let trace_id = cx.span().span_context().trace_id().to_string();
    let body = serde_json::json!({
        "request_id": request_id,
        "order_id": n,
        "item": ITEMS[n % ITEMS.len()],
        "fail": n == FAILING_ORDER,
    })
    .to_string();
    let send = producer.send(
        FutureRecord::<str, str>::to(ORDERS_TOPIC)
            .key(request_id)
            .payload(&body)
            .headers(OwnedHeaders::new().insert(Header {
                key: "x-request-id",
                value: Some(request_id),
            })),
        Duration::from_secs(10),
    );
    // Sent under the request's span (`with_context` of anyhow is another).
    let sent = opentelemetry::trace::FutureExt::with_context(send, cx.clone()).await;
    cx.span().end();
    sent.map_err(|(e, _)| anyhow!("checkout could not send order {n}: {e}"))?;
    Ok(trace_id)
}

async fn declare_queues(amqp: &Connection) -> anyhow::Result<()> {
    let channel = amqp.create_channel().await?;
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .exchange_declare(
            EXCHANGE.into(),
            ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        )
        .await?;
    channel
        .exchange_declare(
            DEAD_EXCHANGE.into(),
            ExchangeKind::Fanout,
            durable,
            FieldTable::default(),
        )
        .await?;
    let mut args = FieldTable::default();
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(DEAD_EXCHANGE.into()),
    );
    let queue = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .queue_declare(WORK_QUEUE.into(), queue, args)
        .await
        .context("declaring fulfillment.work")?;
    channel
        .queue_declare(DEAD_QUEUE.into(), queue, FieldTable::default())
        .await?;
    channel
        .queue_bind(
            WORK_QUEUE.into(),
            EXCHANGE.into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_bind(
            DEAD_QUEUE.into(),
            DEAD_EXCHANGE.into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    // Leftovers of an interrupted earlier run would only confuse this one.
    for name in [WORK_QUEUE, DEAD_QUEUE] {
        channel
            .queue_purge(name.into(), QueuePurgeOptions::default())
            .await?;
    }
    Ok(())
}

/// Why the worker fails an order.
#[derive(Debug, thiserror::Error)]
#[error("payment declined for {0}")]
struct Declined(String);

/// The fulfillment worker: orders and charges from `fulfillment.work`,
/// and the dead letters from `fulfillment.dead`.
async fn worker(
    channel: tracebridge::amqp::Channel,
    dead: lapin::Channel,
    tracer: SdkTracer,
    board: Board,
) -> anyhow::Result<()> {
    channel.basic_qos(8, Default::default()).await?;
    let mut consumer = channel
        .basic_consume(
            WORK_QUEUE.into(),
            "demo-fulfillment".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    loop {
        if let Ok(next) = tokio::time::timeout(Duration::from_millis(200), consumer.next()).await {
            let Some(delivery) = next else {
                return Ok(());
            };
            let delivery = delivery?;
            match delivery.in_span(handle(&delivery, &tracer, &board)).await {
                Ok(()) => delivery.ack(BasicAckOptions::default()).await?,
                // Retried once, then to the dead-letter exchange.
                Err(_) if !delivery.redelivered => {
                    delivery
                        .nack(BasicNackOptions {
                            requeue: true,
                            ..Default::default()
                        })
                        .await?
                }
                Err(_) => {
                    delivery
                        .reject(BasicRejectOptions { requeue: false })
                        .await?
                }
            };
        }
        if let Some(message) = dead
            .basic_get(DEAD_QUEUE.into(), BasicGetOptions { no_ack: true })
            .await?
        {
            let body: serde_json::Value =
                serde_json::from_slice(&message.delivery.data).unwrap_or_default();
            if let Some(id) = body["request_id"].as_str()
                && let Ok(mut board) = board.lock()
                && let Some(progress) = board.get_mut(id)
            {
                progress.dead_lettered = true;
                say(&format!(
                    "fulfillment: order {} is in the dead-letter queue {DEAD_QUEUE}",
                    body["order_id"]
                ));
            }
        }
    }
}

/// One delivery: an order (reserve, pack) or a charge (record), in nested
/// spans, with logs that carry the trace id.
async fn handle(
    delivery: &lapin::message::Delivery,
    tracer: &SdkTracer,
    board: &Board,
) -> Result<(), Declined> {
    let body: serde_json::Value = serde_json::from_slice(&delivery.data).unwrap_or_default();
    let request_id = body["request_id"].as_str().unwrap_or("unknown").to_owned();
    let is_order = delivery.routing_key.as_str().starts_with("order.");
    if is_order
        && let Ok(mut board) = board.lock()
        && let Some(progress) = board.get_mut(&request_id)
    {
        progress.order_seen = true;
    }
    let steps: &[&str] = if is_order {
        &["reserve stock", "pack parcel"]
    } else {
        &["record payment"]
    };
    let parent = Context::current();
    for step in steps {
        let span = tracer
            .span_builder(*step)
            .with_kind(SpanKind::Internal)
            .with_attributes([KeyValue::new("app.request_id", request_id.clone())])
            .start_with_context(tracer, &parent);
        let cx = parent.with_span(span);
        {
            let _attached = cx.clone().attach();
            tracing::info!(request_id = %request_id, step, "fulfillment step");
        }
        tokio::time::sleep(Duration::from_millis(3)).await;
        cx.span().end();
    }
    if is_order && body["fail"].as_bool() == Some(true) {
        tracing::warn!(request_id = %request_id, redelivered = delivery.redelivered, "payment declined");
        return Err(Declined(request_id));
    }
    if let Ok(mut board) = board.lock()
        && let Some(progress) = board.get_mut(&request_id)
    {
        if is_order {
            progress.order_processed = true;
        } else {
            progress.billing_processed = true;
        }
    }
    Ok(())
}

async fn wait_until(
    limit: Duration,
    what: &str,
    mut done: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + limit;
    while !done() {
        if tokio::time::Instant::now() > deadline {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// What the span file shows about one order's trace.
pub(crate) struct Verdict {
    pub(crate) spans: usize,
    pub(crate) problems: Vec<String>,
}

/// Checks that an order's trace holds every hop: the checkout request, the
/// relay's hop of the order AND of the legacy charge (joined by request
/// id), and the worker's processing of both.
pub(crate) fn verify(traces: &Traces, request_id: &str, trace_id: &str, failing: bool) -> Verdict {
    let options = Options {
        trace_id: Some(trace_id.to_owned()),
        ..Options::default()
    };
    let spans: Vec<&SpanRecord> = traces.selected(&options).into_iter().flatten().collect();
    let has = |service: &str, kind: Kind, name: &str| {
        spans
            .iter()
            .any(|s| s.service == service && s.kind == kind && s.name.contains(name))
    };
    let mut problems = Vec::new();
    for (service, kind, name, what) in [
        (
            "checkout",
            Kind::Server,
            "POST /checkout",
            "the checkout request",
        ),
        ("checkout", Kind::Producer, ORDERS_TOPIC, "the order's send"),
        (
            "tracebridge",
            Kind::Consumer,
            ORDERS_TOPIC,
            "the relay's hop of the order",
        ),
        (
            "tracebridge",
            Kind::Consumer,
            BILLING_TOPIC,
            "the relay's hop of the legacy charge (joined by request id)",
        ),
        (
            "fulfillment",
            Kind::Consumer,
            WORK_QUEUE,
            "the worker's processing",
        ),
        (
            "fulfillment",
            Kind::Internal,
            "",
            "the worker's nested spans",
        ),
    ] {
        if !has(service, kind, name) {
            problems.push(format!("{request_id}: {what} is not in trace {trace_id}"));
        }
    }
    let consumed = spans
        .iter()
        .filter(|s| s.service == "fulfillment" && s.kind == Kind::Consumer)
        .count();
    if consumed < 2 {
        problems.push(format!("{request_id}: the worker processed {consumed} message(s) in this trace, expected the order and the charge"));
    }
    if failing && !spans.iter().any(|s| s.error.is_some()) {
        problems.push(format!("{request_id}: the failing order shows no error"));
    }
    Verdict {
        spans: spans.len(),
        problems,
    }
}

/// What the collector's tail sampling does, as the environment that
/// configured it says (`bridge-config/otel-collector.yaml` reads the same
/// variables, with the same defaults).
pub(crate) struct TailSampling {
    /// `TRACEBRIDGE_TAIL_SAMPLE_PERCENT`: at 100, every trace must arrive.
    keeps_everything: bool,
    /// `TRACEBRIDGE_TAIL_DECISION_WAIT`: nothing arrives before it passed.
    decision_wait: Duration,
}

impl TailSampling {
    pub(crate) fn from_env(get: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let percent = get("TRACEBRIDGE_TAIL_SAMPLE_PERCENT").unwrap_or_else(|| "10".into());
        let percent: f64 = percent.trim().parse().map_err(|_| {
            anyhow!("TRACEBRIDGE_TAIL_SAMPLE_PERCENT={percent:?} is not a number of percent")
        })?;
        let wait = get("TRACEBRIDGE_TAIL_DECISION_WAIT").unwrap_or_else(|| "30s".into());
        let decision_wait = humantime::parse_duration(wait.trim()).map_err(|e| {
            anyhow!("TRACEBRIDGE_TAIL_DECISION_WAIT={wait:?} is not a duration (like 30s): {e}")
        })?;
        Ok(Self {
            keeps_everything: percent >= 100.0,
            decision_wait,
        })
    }
}

/// Reads every order's trace back from Jaeger (through the collector's
/// tail sampling) and checks it as the span file's: the failing order's
/// trace (an error: always kept) and every trace Jaeger holds must be
/// whole; a trace may be missing only when sampling keeps a share.
pub(crate) async fn verify_in_jaeger(
    url: &str,
    ids: &[(String, String)],
    tail: &TailSampling,
) -> anyhow::Result<Vec<String>> {
    let query = tracebridge::traces::jaeger::JaegerQuery::new(url);
    let trace_ids: Vec<String> = ids.iter().map(|(_, trace)| trace.clone()).collect();
    // The collector holds a trace for decision_wait, then batches it out.
    let limit = tail.decision_wait + Duration::from_secs(20);
    say(&format!(
        "reading the {} traces back from Jaeger at {url} (the collector decides \
         {:?} after a trace's first span; waiting up to {limit:?})",
        ids.len(),
        tail.decision_wait
    ));
    let started = tokio::time::Instant::now();
    let mut settled_once = false;
    let mut next_note = Duration::from_secs(10);
    loop {
        let traces = query.traces(&trace_ids).await?;
        let mut problems = Vec::new();
        let mut kept = 0;
        for (index, (request_id, trace_id)) in ids.iter().enumerate() {
            let failing = index + 1 == FAILING_ORDER;
            let options = Options {
                trace_id: Some(trace_id.clone()),
                ..Options::default()
            };
            if traces.selected(&options).is_empty() {
                if failing {
                    problems.push(format!(
                        "{request_id}: its trace {trace_id} holds an error but is not in Jaeger: tail sampling must keep every error"
                    ));
                } else if tail.keeps_everything {
                    problems.push(format!(
                        "{request_id}: its trace {trace_id} is not in Jaeger, though TRACEBRIDGE_TAIL_SAMPLE_PERCENT keeps every trace"
                    ));
                }
                continue;
            }
            kept += 1;
            problems.extend(
                verify(&traces, request_id, trace_id, failing)
                    .problems
                    .into_iter()
                    .map(|p| format!("in Jaeger: {p}")),
            );
        }
        let elapsed = started.elapsed();
        if problems.is_empty() {
            // A kept trace may land a batch after the error's: look once more.
            if settled_once {
                say(&format!(
                    "Jaeger holds {kept} of {} traces after {elapsed:.1?} (tail sampling keeps \
                     every error, every slow trace, a share of the rest), each one whole",
                    ids.len()
                ));
                return Ok(Vec::new());
            }
            settled_once = true;
            tokio::time::sleep(Duration::from_secs(2)).await;
            continue;
        }
        if elapsed > limit {
            return Ok(problems);
        }
        if elapsed > next_note {
            say(&format!(
                "  {elapsed:.0?}: {kept} of {} traces in Jaeger so far",
                ids.len()
            ));
            next_note += Duration::from_secs(10);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
