//! The per-message steps the overhead benchmarks measure, shared by the
//! criterion timings (`overhead.rs`) and the instruction counts
//! (`instructions.rs`), so both measure the same code.
//!
//! Per side (Kafka produce and consume, AMQP publish and consume):
//! * `raw`: what an untraced client does with the headers;
//! * `sdk-span-floor`: the SDK's own cost for a span of the same kind with
//!   the same attributes, no propagation — what any OpenTelemetry
//!   instrumentation pays;
//! * `traced`: what tracebridge's wrapper does (the span started with
//!   `start_span_lazy`, as the wrappers do), the message sampled;
//! * `traced-unsampled`: the same under `parentbased_traceidratio` with an
//!   unsampled parent — the fate of 90–95 % of messages in production at
//!   the seeds' advised 5–10 % head sampling. The context must still
//!   travel (same trace id, sampled flag off).
#![allow(dead_code)]

use std::hint::black_box;

use lapin::types::{AMQPValue, FieldTable};
use opentelemetry::Context;
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, TraceContextExt, TraceFlags, TraceId, TraceState,
};
use opentelemetry_sdk::trace::SdkTracerProvider;
use rdkafka::message::{Header, Headers, OwnedHeaders};
use tracebridge::Instrumentation;
use tracebridge::ParentPolicy;
use tracebridge::amqp::{AmqpHeaderExtractor, AmqpHeaderInjector};
use tracebridge::kafka::{KafkaHeaderIndex, KafkaHeaderInjector};
use tracebridge::propagation::Propagation;
use tracebridge::semconv::{
    AttributePolicy, AttributeRules, Conventions, Destination, Endpoint, MessagingAttributes,
    Operation,
};

/// The benchmarks' rules: the default version, keys recorded (as before the
/// policy existed, so figures compare).
static RULES: std::sync::LazyLock<AttributeRules> = std::sync::LazyLock::new(|| AttributeRules {
    conventions: Conventions::default(),
    policy: AttributePolicy::record_all(),
});

/// One named per-message step.
pub struct Scenario {
    pub name: &'static str,
    pub step: Box<dyn FnMut()>,
}

fn scenario(name: &'static str, step: impl FnMut() + 'static) -> Scenario {
    Scenario {
        name,
        step: Box::new(step),
    }
}

/// `{side}/sdk-span-floor`: the SDK alone starts and ends a `kind` span
/// named `span_name` with `attributes`, the way any OpenTelemetry
/// instrumentation would (builder, attributes given at start).
fn floor(
    name: &'static str,
    provider: &SdkTracerProvider,
    span_name: &'static str,
    kind: SpanKind,
    attributes: impl Fn() -> Vec<opentelemetry::KeyValue> + 'static,
) -> Scenario {
    let tracer = opentelemetry::trace::TracerProvider::tracer(provider, "floor");
    scenario(name, move || {
        let span = opentelemetry::trace::Tracer::span_builder(&tracer, span_name)
            .with_kind(kind.clone())
            .with_attributes(attributes())
            .start(&tracer);
        drop(black_box(span));
    })
}

/// `{side}/sdk-unsampled-floor`: what any OpenTelemetry instrumentation
/// pays the SDK and API for a message head sampling dropped upstream — the
/// sampler's decision under the unsampled parent, the (non-recording)
/// span in a context as propagation needs it (and, consuming, the remote
/// parent's context the span starts under), its span context read, the
/// span ended — and nothing else: no attributes, no headers read or
/// written.
fn unsampled_floor(
    name: &'static str,
    provider: &SdkTracerProvider,
    span_name: &'static str,
    kind: SpanKind,
) -> Scenario {
    let tracer = opentelemetry::trace::TracerProvider::tracer(provider, "floor");
    let sent = parent(false);
    let remote = sent.span().span_context().clone();
    scenario(name, move || {
        // A consumer has only the headers' span context: its parent
        // context is built per message (a producer's is at hand).
        let received;
        let parent = if kind == SpanKind::Consumer {
            received = Context::new().with_remote_span_context(black_box(&remote).clone());
            &received
        } else {
            &sent
        };
        let span = opentelemetry::trace::Tracer::span_builder(&tracer, span_name)
            .with_kind(kind.clone())
            .start_with_context(&tracer, parent);
        let cx = parent.with_span(span);
        black_box(cx.span().span_context().trace_id());
        cx.span().end();
        drop(black_box(cx));
    })
}

/// Every scenario, each with its own state, on `provider` (always-on) and
/// `ratio_provider` (`parentbased_traceidratio` 0.1).
pub fn all(provider: &SdkTracerProvider, ratio_provider: &SdkTracerProvider) -> Vec<Scenario> {
    let mut all = Vec::new();
    for (sampled, provider) in [(true, provider), (false, ratio_provider)] {
        let instrumentation = Instrumentation::from_sdk(provider, None)
            .with_conventions(RULES.conventions)
            .with_attribute_policy(RULES.policy.clone());
        all.extend(kafka(&instrumentation, provider, sampled));
        all.extend(amqp(&instrumentation, provider, sampled));
    }
    all.extend(metrics());
    all
}

/// `metrics/{send,process}`: what the spec's messaging metrics add to a
/// message when a meter provider records them (the traced scenarios above
/// have none, as with `telemetry::init` and no OTLP endpoint): a send's
/// duration and count; a consumed message's count, queue time and
/// processing time — each through its series, found as the clients find
/// it (see `tracebridge`'s `metrics.rs`).
fn metrics() -> Vec<Scenario> {
    use opentelemetry::metrics::MeterProvider as _;
    use std::time::{Duration, Instant};
    use tracebridge::{MessagingMetrics, SeriesOf};
    let meters = opentelemetry_sdk::metrics::SdkMeterProvider::builder()
        .with_reader(opentelemetry_sdk::metrics::ManualReader::builder().build())
        .build();
    let metrics = MessagingMetrics::new(&meters.meter("bench"));
    let endpoint = Endpoint::from_servers("127.0.0.1:9092", Some("bench"));
    let destination = Destination::kafka("orders");
    let send = {
        let (metrics, endpoint, destination) =
            (metrics.clone(), endpoint.clone(), destination.clone());
        scenario("metrics/send", move || {
            let started = Instant::now();
            let series = metrics.series(
                SeriesOf {
                    operation: Operation::Send,
                    destination: &destination,
                    group: None,
                    endpoint: &endpoint,
                    extra: None,
                },
                &RULES,
            );
            series.record_send(started, None);
            black_box(series);
        })
    };
    let process = scenario("metrics/process", move || {
        let started = Instant::now();
        let of = |operation| SeriesOf {
            operation,
            destination: &destination,
            group: Some("billing"),
            endpoint: &endpoint,
            extra: None,
        };
        let process = metrics.series(of(Operation::Process), &RULES);
        process.count_consumed();
        process.record_queue_time(Duration::from_millis(3));
        process.record_process(started, None);
        black_box(process);
        // Held for the provider's life: the scenario owns it.
        let _ = &meters;
    });
    vec![send, process]
}

/// The scenario's name for a sampled or an unsampled message.
fn traced_name(sampled: bool, name: &'static str, unsampled: &'static str) -> &'static str {
    if sampled { name } else { unsampled }
}

/// A consuming side's traced step, as both wrappers do it: extract the
/// message's context, start its process span (attributes only if it
/// records), end it.
fn process(
    name: &'static str,
    instrumentation: &Instrumentation,
    destination: Destination,
    extract: impl Fn() -> tracebridge::propagation::ExtractedContext + 'static,
    attributes: impl Fn() -> Vec<opentelemetry::KeyValue> + 'static,
) -> Scenario {
    let instrumentation = instrumentation.clone();
    scenario(name, move || {
        let cx = instrumentation.start_process_span_lazy(
            Operation::Process.shared_span_name(&destination),
            ParentPolicy::Join,
            &extract(),
            &attributes,
        );
        cx.span().end();
        black_box(cx);
    })
}

/// The parent a producer sends under: none (a sampled root) or an
/// unsampled remote context (the message is one the head sampler dropped).
fn parent(sampled: bool) -> Context {
    if sampled {
        return Context::new();
    }
    Context::new().with_remote_span_context(SpanContext::new(
        TraceId::from(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736),
        SpanId::from(0x00f0_67aa_0ba9_02b7),
        TraceFlags::default(),
        true,
        TraceState::default(),
    ))
}

fn app_headers() -> OwnedHeaders {
    OwnedHeaders::new()
        .insert(Header {
            key: "content-type",
            value: Some("application/json"),
        })
        .insert(Header {
            key: "x-request-id",
            value: Some("req-0001"),
        })
}

fn kafka(
    instrumentation: &Instrumentation,
    provider: &SdkTracerProvider,
    sampled: bool,
) -> Vec<Scenario> {
    let propagation = Propagation::default();
    let endpoint = Endpoint::from_servers("127.0.0.1:9092", Some("bench"));
    let destination = Destination::kafka("orders");
    let send_attributes = {
        let (endpoint, destination) = (endpoint.clone(), destination.clone());
        move || {
            endpoint
                .apply(
                    MessagingAttributes::new(Operation::Send, &destination, &RULES)
                        .kafka_key(Some(b"order-1")),
                )
                .into_vec()
        }
    };
    let mut out = Vec::new();
    let produce = {
        let (instrumentation, propagation, destination) = (
            instrumentation.clone(),
            propagation.clone(),
            destination.clone(),
        );
        let send_attributes = send_attributes.clone();
        let parent = parent(sampled);
        move || {
            let cx = instrumentation.start_span_lazy(
                Operation::Send.shared_span_name(&destination),
                SpanKind::Producer,
                &parent,
                Vec::new(),
                &send_attributes,
            );
            let mut injector = KafkaHeaderInjector::new(Some(app_headers()));
            propagation.inject(&cx, &mut injector);
            let headers = injector.finish();
            cx.span().end();
            black_box(headers);
        }
    };
    if sampled {
        out.push(scenario("kafka/produce/raw", || {
            black_box(app_headers());
        }));
        out.push(floor(
            "kafka/produce/sdk-span-floor",
            provider,
            "send orders",
            SpanKind::Producer,
            send_attributes,
        ));
        out.push(scenario("kafka/produce/traced", produce));
    } else {
        out.push(unsampled_floor(
            "kafka/produce/sdk-unsampled-floor",
            provider,
            "send orders",
            SpanKind::Producer,
        ));
        out.push(scenario("kafka/produce/traced-unsampled", produce));
    }

    // A record as a traced producer leaves it, sampled or not.
    let mut injector = KafkaHeaderInjector::new(Some(app_headers()));
    let cx = instrumentation.start_span(
        "send orders",
        SpanKind::Producer,
        &parent(sampled),
        vec![],
        vec![],
    );
    propagation.inject(&cx, &mut injector);
    let received = injector.finish();
    if sampled {
        let received = received.clone();
        out.push(scenario("kafka/consume/raw", move || {
            // An untraced consumer still looks at its headers.
            let found = black_box(&received)
                .iter()
                .find(|h| h.key == "x-request-id")
                .and_then(|h| h.value)
                .map(<[u8]>::len);
            black_box(found);
        }));
    }
    let process_attributes = move || {
        endpoint
            .apply(
                MessagingAttributes::new(Operation::Process, &destination, &RULES)
                    .consumer_group("billing")
                    .partition(0)
                    .kafka_offset(42)
                    .kafka_key(Some(b"order-1")),
            )
            .into_vec()
    };
    if sampled {
        out.push(floor(
            "kafka/consume/sdk-span-floor",
            provider,
            "process orders",
            SpanKind::Consumer,
            process_attributes.clone(),
        ));
    }
    if !sampled {
        out.push(unsampled_floor(
            "kafka/consume/sdk-unsampled-floor",
            provider,
            "process orders",
            SpanKind::Consumer,
        ));
    }
    out.push(process(
        traced_name(
            sampled,
            "kafka/consume/traced",
            "kafka/consume/traced-unsampled",
        ),
        instrumentation,
        Destination::kafka("orders"),
        move || propagation.extract(&KafkaHeaderIndex::new(black_box(&received))),
        process_attributes,
    ));
    out
}

fn amqp_app_headers() -> FieldTable {
    let mut table = FieldTable::default();
    table.insert(
        "content-type".into(),
        AMQPValue::LongString("application/json".into()),
    );
    table.insert(
        "x-request-id".into(),
        AMQPValue::LongString("req-0001".into()),
    );
    table
}

fn amqp(
    instrumentation: &Instrumentation,
    provider: &SdkTracerProvider,
    sampled: bool,
) -> Vec<Scenario> {
    let propagation = Propagation::default();
    let endpoint = Endpoint::from_servers("127.0.0.1:5672", None);
    let publish_to = Destination::rabbitmq("fulfillment", "order.created");
    let delivered = Destination::rabbitmq_queue("fulfillment", "order.created", "shipping");
    let publish_attributes = {
        let (endpoint, publish_to) = (endpoint.clone(), publish_to.clone());
        move || {
            endpoint
                .apply(
                    MessagingAttributes::new(Operation::Send, &publish_to, &RULES)
                        .message_id(Some("m-1")),
                )
                .into_vec()
        }
    };
    let process_attributes = {
        let (endpoint, delivered) = (endpoint.clone(), delivered.clone());
        move || {
            endpoint
                .apply(
                    MessagingAttributes::new(Operation::Process, &delivered, &RULES)
                        .delivery_tag(7)
                        .message_id(Some("m-1")),
                )
                .into_vec()
        }
    };
    let mut out = Vec::new();
    if sampled {
        out.push(scenario("amqp/publish/raw", || {
            black_box(amqp_app_headers());
        }));
        out.push(floor(
            "amqp/publish/sdk-span-floor",
            provider,
            "publish fulfillment:order.created",
            SpanKind::Producer,
            publish_attributes.clone(),
        ));
        out.push(floor(
            "amqp/consume/sdk-span-floor",
            provider,
            "process fulfillment:order.created:shipping",
            SpanKind::Consumer,
            process_attributes.clone(),
        ));
    }
    let publish = {
        let (instrumentation, propagation) = (instrumentation.clone(), propagation.clone());
        let parent = parent(sampled);
        move || {
            let cx = instrumentation.start_span_lazy(
                Operation::Send.shared_span_name(&publish_to),
                SpanKind::Producer,
                &parent,
                Vec::new(),
                &publish_attributes,
            );
            let mut headers = amqp_app_headers();
            propagation.inject(&cx, &mut AmqpHeaderInjector(&mut headers));
            cx.span().end();
            black_box(headers);
        }
    };
    out.push(scenario(
        traced_name(
            sampled,
            "amqp/publish/traced",
            "amqp/publish/traced-unsampled",
        ),
        publish,
    ));

    let mut received = amqp_app_headers();
    let cx = instrumentation.start_span(
        "publish",
        SpanKind::Producer,
        &parent(sampled),
        vec![],
        vec![],
    );
    propagation.inject(&cx, &mut AmqpHeaderInjector(&mut received));
    if sampled {
        let received = received.clone();
        out.push(scenario("amqp/consume/raw", move || {
            black_box(black_box(&received).inner().get("x-request-id").is_some());
        }));
    }
    out.push(process(
        traced_name(
            sampled,
            "amqp/consume/traced",
            "amqp/consume/traced-unsampled",
        ),
        instrumentation,
        delivered,
        move || propagation.extract(&AmqpHeaderExtractor(black_box(&received))),
        process_attributes,
    ));
    out
}

/// Checks what the unsampled scenarios rely on: the context still travels
/// with the same trace id and the sampled flag off.
pub fn assert_unsampled_context_travels(ratio_provider: &SdkTracerProvider) {
    let instrumentation = Instrumentation::from_sdk(ratio_provider, None);
    let cx = instrumentation.start_span(
        "send orders",
        SpanKind::Producer,
        &parent(false),
        vec![],
        vec![],
    );
    let mut injector = KafkaHeaderInjector::new(None);
    Propagation::default().inject(&cx, &mut injector);
    let headers = injector.finish();
    let traceparent = headers
        .iter()
        .find(|h| h.key == "traceparent")
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .expect("an unsampled message still carries its traceparent");
    assert!(
        traceparent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-")
            && traceparent.ends_with("-00"),
        "same trace id, sampled flag off: {traceparent}"
    );
}
