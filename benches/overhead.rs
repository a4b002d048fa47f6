//! Per-message cost of tracing, next to a raw baseline measured in the same
//! run: `*/raw` does what an untraced client does with headers; `*/traced`
//! adds what tracebridge does (span with semconv attributes, inject or
//! extract, end). The difference is the overhead per message.

mod support;

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use lapin::types::{AMQPValue, FieldTable};
use opentelemetry::Context;
use opentelemetry::trace::{SpanKind, TraceContextExt};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use tracebridge::Instrumentation;
use tracebridge::ParentPolicy;
use tracebridge::amqp::{AmqpHeaderExtractor, AmqpHeaderInjector};
use tracebridge::kafka::{KafkaHeaderExtractor, KafkaHeaderInjector};
use tracebridge::propagation::Propagation;
use tracebridge::semconv::{Destination, Endpoint, MessagingAttributes, Operation, Stability};

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

fn kafka(c: &mut Criterion) {
    let provider = support::provider();
    let instrumentation =
        Instrumentation::from_sdk(&provider, None).with_stability(Stability::Stable);
    let propagation = Propagation::default();
    let endpoint = Endpoint::from_servers("127.0.0.1:9092", Some("bench"));
    let destination = Destination::kafka("orders");

    let mut group = c.benchmark_group("kafka/produce");
    group.bench_function("raw", |b| b.iter(|| black_box(app_headers())));
    // The SDK's own cost for a span with the same attributes, no propagation:
    // what any OpenTelemetry instrumentation pays, tracebridge or not.
    let sdk_tracer = opentelemetry::trace::TracerProvider::tracer(&provider, "floor");
    group.bench_function("sdk-span-floor", |b| {
        b.iter(|| {
            let attributes = endpoint
                .apply(
                    MessagingAttributes::new(Operation::Send, &destination, Stability::Stable)
                        .kafka_key(Some(b"order-1")),
                )
                .into_vec();
            let span = opentelemetry::trace::Tracer::span_builder(&sdk_tracer, "send orders")
                .with_kind(SpanKind::Producer)
                .with_attributes(attributes)
                .start(&sdk_tracer);
            drop(black_box(span));
        })
    });
    group.bench_function("traced", |b| {
        b.iter(|| {
            let attributes = endpoint
                .apply(
                    MessagingAttributes::new(Operation::Send, &destination, Stability::Stable)
                        .kafka_key(Some(b"order-1")),
                )
                .into_vec();
            let cx = instrumentation.start_span(
                Operation::Send.span_name(&destination),
                SpanKind::Producer,
                &Context::new(),
                attributes,
                Vec::new(),
            );
            let mut injector = KafkaHeaderInjector::new(Some(app_headers()));
            propagation.inject(&cx, &mut injector);
            let headers = injector.finish();
            cx.span().end();
            black_box(headers)
        })
    });
    group.finish();

    // A record as a traced producer leaves it.
    let mut injector = KafkaHeaderInjector::new(Some(app_headers()));
    let cx = instrumentation.start_span(
        "send orders",
        SpanKind::Producer,
        &Context::new(),
        vec![],
        vec![],
    );
    propagation.inject(&cx, &mut injector);
    let received = injector.finish();

    let mut group = c.benchmark_group("kafka/consume");
    group.bench_function("raw", |b| {
        b.iter(|| {
            // An untraced consumer still looks at its headers.
            let found = black_box(&received)
                .iter()
                .find(|h| h.key == "x-request-id")
                .and_then(|h| h.value)
                .map(<[u8]>::len);
            black_box(found)
        })
    });
    group.bench_function("traced", |b| {
        b.iter(|| {
            let extracted = propagation.extract(&KafkaHeaderExtractor(black_box(&received)));
            let attributes = endpoint
                .apply(
                    MessagingAttributes::new(Operation::Process, &destination, Stability::Stable)
                        .consumer_group("billing")
                        .partition(0)
                        .kafka_offset(42)
                        .kafka_key(Some(b"order-1")),
                )
                .into_vec();
            let cx = instrumentation.start_process_span(
                Operation::Process.span_name(&destination),
                ParentPolicy::Join,
                &extracted,
                attributes,
            );
            cx.span().end();
            black_box(cx)
        })
    });
    group.finish();
    let _ = received.count();
    let _ = provider.shutdown();
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

fn amqp(c: &mut Criterion) {
    let provider = support::provider();
    let instrumentation =
        Instrumentation::from_sdk(&provider, None).with_stability(Stability::Stable);
    let propagation = Propagation::default();
    let endpoint = Endpoint::from_servers("127.0.0.1:5672", None);
    let publish_to = Destination::rabbitmq("fulfillment", "order.created");
    let delivered = Destination::rabbitmq_queue("fulfillment", "order.created", "shipping");

    let mut group = c.benchmark_group("amqp/publish");
    group.bench_function("raw", |b| b.iter(|| black_box(amqp_app_headers())));
    group.bench_function("traced", |b| {
        b.iter(|| {
            let attributes = endpoint
                .apply(
                    MessagingAttributes::new(Operation::Send, &publish_to, Stability::Stable)
                        .message_id(Some("m-1")),
                )
                .into_vec();
            let cx = instrumentation.start_span(
                Operation::Send.span_name(&publish_to),
                SpanKind::Producer,
                &Context::new(),
                attributes,
                Vec::new(),
            );
            let mut headers = amqp_app_headers();
            propagation.inject(&cx, &mut AmqpHeaderInjector(&mut headers));
            cx.span().end();
            black_box(headers)
        })
    });
    group.finish();

    let mut received = amqp_app_headers();
    let cx = instrumentation.start_span(
        "publish",
        SpanKind::Producer,
        &Context::new(),
        vec![],
        vec![],
    );
    propagation.inject(&cx, &mut AmqpHeaderInjector(&mut received));

    let mut group = c.benchmark_group("amqp/consume");
    group.bench_function("raw", |b| {
        b.iter(|| black_box(black_box(&received).inner().get("x-request-id").is_some()))
    });
    group.bench_function("traced", |b| {
        b.iter(|| {
            let extracted = propagation.extract(&AmqpHeaderExtractor(black_box(&received)));
            let attributes = endpoint
                .apply(
                    MessagingAttributes::new(Operation::Process, &delivered, Stability::Stable)
                        .delivery_tag(7)
                        .message_id(Some("m-1")),
                )
                .into_vec();
            let cx = instrumentation.start_process_span(
                Operation::Process.span_name(&delivered),
                ParentPolicy::Join,
                &extracted,
                attributes,
            );
            cx.span().end();
            black_box(cx)
        })
    });
    group.finish();
    let _ = provider.shutdown();
}

criterion_group!(benches, kafka, amqp);
criterion_main!(benches);
