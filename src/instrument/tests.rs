//! The recorder under each set-up an application may have.

use std::cell::Cell;

use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
use opentelemetry_sdk::trace::{InMemorySpanExporter, Sampler};

use super::*;
use tracing_subscriber::layer::SubscriberExt as _;

fn parent(sampled: bool) -> Context {
    let flags = if sampled {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    Context::new().with_remote_span_context(SpanContext::new(
        TraceId::from(7),
        SpanId::from(9),
        flags,
        true,
        TraceState::default(),
    ))
}

/// Under the advised parent-based ratio sampler, a message whose parent
/// was not sampled builds no attribute, and its context still travels:
/// same trace, sampled flag off. A sampled parent's span gets them all.
#[test]
fn attributes_are_built_only_for_spans_that_record() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            0.1,
        ))))
        .with_simple_exporter(exporter.clone())
        .build();
    let instrumentation = Instrumentation::from_sdk(&provider, None);
    for sampled in [false, true] {
        let built = Cell::new(false);
        let cx = instrumentation.start_span_lazy(
            "send orders",
            SpanKind::Producer,
            &parent(sampled),
            Vec::new(),
            || {
                built.set(true);
                vec![KeyValue::new("messaging.system", "kafka")]
            },
        );
        let span = cx.span();
        let context = span.span_context();
        assert_eq!(
            built.get(),
            sampled,
            "attributes built: sampled = {sampled}"
        );
        assert_eq!(context.trace_id(), TraceId::from(7), "the trace goes on");
        assert_eq!(context.is_sampled(), sampled);
        assert!(context.is_valid() && context.span_id() != SpanId::from(9));
        span.end();
    }
    let _ = provider.force_flush();
    let spans = exporter.get_finished_spans().expect("spans");
    assert_eq!(spans.len(), 1, "only the sampled span is exported");
    assert!(
        spans[0]
            .attributes
            .iter()
            .any(|kv| kv.key.as_str() == "messaging.system")
    );
}

/// An application whose subscriber has a tracing-opentelemetry layer (and
/// no global provider): tracebridge's spans go through that layer, with
/// their name, kind, parent, links and attributes, and a span that runs
/// work carries its ids as `tracing` fields.
#[test]
fn spans_go_through_the_applications_tracing_layer() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("the-application")));
    let instrumentation = Instrumentation::global();
    let producer = SpanContext::new(
        TraceId::from(0x42),
        SpanId::from(0x7),
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    );
    let mut headers = crate::propagation::HeaderVec::new(crate::propagation::Transport::Kafka);
    headers.push(
        "traceparent",
        format!("00-{}-{}-01", producer.trace_id(), producer.span_id()),
    );
    let extracted = crate::propagation::Propagation::default().extract(&headers);
    let (trace_id, span_id) = tracing::subscriber::with_default(subscriber, || {
        let cx = instrumentation.start_process_span_lazy(
            "process orders",
            ParentPolicy::Join,
            &extracted,
            || vec![KeyValue::new("messaging.system.name", "kafka")],
        );
        let log_span = cx
            .get::<recorder::LogSpan>()
            .expect("a tracing span")
            .0
            .clone();
        assert!(!log_span.is_disabled());
        let ids = cx.span().span_context().clone();
        cx.span().end();
        drop(cx);
        drop(log_span);
        (ids.trace_id(), ids.span_id())
    });
    let spans = exporter.get_finished_spans().expect("spans");
    assert_eq!(spans.len(), 1, "{spans:?}");
    let span = &spans[0];
    assert_eq!(span.name, "process orders");
    assert_eq!(span.span_kind, SpanKind::Consumer);
    assert_eq!(span.span_context.trace_id(), trace_id);
    assert_eq!(span.span_context.span_id(), span_id);
    assert_eq!(trace_id, TraceId::from(0x42), "joined the producer's trace");
    assert_eq!(span.parent_span_id, SpanId::from(0x7));
    assert_eq!(span.links.len(), 1);
    let attribute = |key: &str| {
        span.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value.to_string())
    };
    assert_eq!(attribute("messaging.system.name").as_deref(), Some("kafka"));
    assert_eq!(
        attribute("trace_id").as_deref(),
        Some(trace_id.to_string().as_str()),
        "the ids are fields of the tracing span (for log lines)"
    );
    assert_eq!(
        attribute("code.file.path"),
        None,
        "no source location: the span is a message's, not a place in tracebridge"
    );
}

/// With neither a layer nor a global provider, the span is the no-op
/// tracer's: the message's own context goes on (the trace is not cut), and
/// the recorder tells (tests/no_provider.rs checks the warning).
#[test]
fn with_nothing_installed_the_context_still_travels() {
    let instrumentation = Instrumentation::global();
    let cx = instrumentation.start_span_lazy(
        "send orders",
        SpanKind::Producer,
        &parent(true),
        Vec::new(),
        Vec::new,
    );
    let span = cx.span();
    assert!(!span.is_recording());
    assert_eq!(span.span_context().trace_id(), TraceId::from(7));
}

/// A provider handed in is used even where a tracing layer exists.
#[test]
fn a_provider_handed_in_wins_over_the_tracing_layer() {
    let layer_spans = InMemorySpanExporter::default();
    let layer_provider = SdkTracerProvider::builder()
        .with_simple_exporter(layer_spans.clone())
        .build();
    let given_spans = InMemorySpanExporter::default();
    let given = SdkTracerProvider::builder()
        .with_simple_exporter(given_spans.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(layer_provider.tracer("app")));
    let instrumentation = Instrumentation::from_sdk(&given, None);
    tracing::subscriber::with_default(subscriber, || {
        let cx = instrumentation.start_span(
            "send orders",
            SpanKind::Producer,
            &Context::new(),
            Vec::new(),
            Vec::new(),
        );
        cx.span().end();
    });
    assert_eq!(given_spans.get_finished_spans().unwrap().len(), 1);
    assert!(layer_spans.get_finished_spans().unwrap().is_empty());
}

/// Each metric can be turned off: only those chosen reach the meter
/// provider, and with none chosen nothing builds metric attributes.
#[test]
fn metrics_turned_off_are_not_recorded() {
    use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
    let exporter = InMemoryMetricExporter::default();
    let meters = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(exporter.clone()).build())
        .build();
    let tracers = SdkTracerProvider::builder().build();
    let destination = crate::semconv::Destination::kafka("orders");
    let endpoint = crate::semconv::Endpoint::default();
    let instrumentation = Instrumentation::from_sdk(&tracers, Some(&meters))
        .with_metrics([MessagingMetric::SentMessages]);
    instrumentation
        .time_send(&destination, &endpoint)
        .finish(None);
    instrumentation.metrics().count_consumed(1, &[]);
    let process = instrumentation.series(
        crate::semconv::Operation::Process,
        &destination,
        None,
        &endpoint,
    );
    instrumentation.record_queue_time(
        &Context::new(),
        Some(std::time::SystemTime::now()),
        &process,
    );
    meters.force_flush().expect("flush");
    let names: std::collections::BTreeSet<String> = exporter
        .get_finished_metrics()
        .expect("metrics")
        .iter()
        .flat_map(|rm| rm.scope_metrics())
        .flat_map(|sm| sm.metrics())
        .map(|m| m.name().to_owned())
        .collect();
    assert_eq!(
        names,
        ["messaging.client.sent.messages".to_owned()].into(),
        "only the metric kept"
    );

    let none = Instrumentation::from_sdk(&tracers, Some(&meters)).with_metrics([]);
    assert!(!none.metrics().enabled());
    assert!(
        !none
            .series(
                crate::semconv::Operation::Send,
                &destination,
                None,
                &endpoint
            )
            .records(),
        "no series (and no attribute) built for no metric"
    );
    for metric in MessagingMetric::ALL {
        assert_eq!(MessagingMetric::from_name(metric.name()), Some(metric));
    }
}
