//! The sampler through a real `SdkTracerProvider`, and the random flag and
//! `ot` members through tracebridge's consume → send path.

use std::str::FromStr;

use opentelemetry::Context;
use opentelemetry::trace::{
    Link, SpanContext, SpanId, SpanKind, TraceContextExt, TraceFlags, TraceId, TraceState,
    Tracer as _, TracerProvider as _,
};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, ShouldSample};

use super::*;
use crate::propagation::{HeaderReader, HeaderVec, Transport};
use crate::{Instrumentation, ParentPolicy, Propagation};

/// A trace id whose last 56 bits are `randomness`.
fn trace_id(randomness: u64) -> TraceId {
    TraceId::from((0xabcd_u128 << 64) | u128::from(randomness))
}

fn parent(trace_id: TraceId, flags: u8, trace_state: &str) -> Context {
    Context::new().with_remote_span_context(SpanContext::new(
        trace_id,
        SpanId::from(9),
        TraceFlags::new(flags),
        true,
        TraceState::from_str(trace_state).unwrap(),
    ))
}

fn decide(
    sampler: &ProbabilitySampler,
    cx: Option<&Context>,
    trace_id: TraceId,
    links: &[Link],
) -> (bool, String) {
    let result = sampler.should_sample(cx, trace_id, "s", &SpanKind::Consumer, &[], links);
    let sampled = matches!(
        result.decision,
        opentelemetry_sdk::trace::SamplingDecision::RecordAndSample
    );
    (sampled, result.trace_state.header())
}

/// 10 %: `th:e666`, so randomness from 0xe6660000000000 up is kept.
#[test]
fn a_new_trace_is_decided_by_its_randomness_and_carries_th_and_rv() {
    let sampler = ProbabilitySampler::new(0.1).unwrap();
    let kept = trace_id(0xe6_6600_0000_0000);
    assert_eq!(
        decide(&sampler, None, kept, &[]),
        (true, "ot=rv:e6660000000000;th:e666".to_owned())
    );
    let dropped = trace_id(0xe6_65ff_ffff_ffff);
    assert_eq!(
        decide(&sampler, None, dropped, &[]),
        (false, "ot=rv:e665ffffffffff".to_owned())
    );
    // An explicit rv decides instead of the id, and is never overwritten.
    let with_rv = parent(dropped, 0, "ot=rv:ffffffffffffff");
    let bare = sampler.clone().ignoring_parent();
    assert_eq!(
        decide(&bare, Some(&with_rv), dropped, &[]),
        (true, "ot=rv:ffffffffffffff;th:e666".to_owned())
    );
}

#[test]
fn a_child_follows_its_parent_and_keeps_only_a_consistent_threshold() {
    let sampler = ProbabilitySampler::new(0.1).unwrap();
    let id = trace_id(0x80_0000_0000_0000);
    // Sampled at 25 % (th:c) but randomness 0x80… is below c0…: the
    // threshold contradicts the flag, so it is erased; the decision stays.
    let inconsistent = parent(id, 0x03, "ot=th:c;rv:80000000000000,v=1");
    assert_eq!(
        decide(&sampler, Some(&inconsistent), id, &[]),
        (true, "ot=rv:80000000000000,v=1".to_owned())
    );
    let consistent = parent(id, 0x03, "ot=th:8;rv:80000000000000,v=1");
    assert_eq!(
        decide(&sampler, Some(&consistent), id, &[]),
        (true, "ot=th:8;rv:80000000000000,v=1".to_owned())
    );
    // Unsampled parent: dropped, its state carried on unchanged.
    let unsampled = parent(id, 0x02, "ot=th:c;rv:80000000000000");
    assert_eq!(
        decide(&sampler, Some(&unsampled), id, &[]),
        (false, "ot=th:c;rv:80000000000000".to_owned())
    );
}

/// A service at 10 % keeps every trace a service at 1 % kept, whatever the
/// order of the hops: the consistency TraceIdRatioBased never promised
/// across languages.
#[test]
fn ratios_keep_nested_sets_of_traces() {
    let one = ProbabilitySampler::new(0.01).unwrap().ignoring_parent();
    let ten = ProbabilitySampler::new(0.1).unwrap().ignoring_parent();
    let mut kept = (0, 0);
    for i in 0..20_000u64 {
        let id = trace_id(i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 8);
        let (at_one, _) = decide(&one, None, id, &[]);
        let (at_ten, _) = decide(&ten, None, id, &[]);
        assert!(!at_one || at_ten, "kept at 1 % but not at 10 %: {id}");
        kept.0 += usize::from(at_one);
        kept.1 += usize::from(at_ten);
    }
    assert!((150..=250).contains(&kept.0), "{kept:?}");
    assert!((1_800..=2_200).contains(&kept.1), "{kept:?}");
}

#[test]
fn following_links_decides_a_new_trace_by_what_it_links_to() {
    let sampler = ProbabilitySampler::new(0.000_001)
        .unwrap()
        .following_links();
    let link = |flags| {
        Link::with_context(SpanContext::new(
            trace_id(5),
            SpanId::from(1),
            TraceFlags::new(flags),
            true,
            TraceState::default(),
        ))
    };
    // A trace the ratio would drop is kept when one linked context is sampled…
    let id = trace_id(1);
    assert!(decide(&sampler, None, id, &[link(0), link(1)]).0);
    // …and one the ratio would keep is dropped when none is.
    let id = trace_id(0xff_ffff_ffff_ffff);
    let (sampled, state) = decide(&sampler, None, id, &[link(0), link(2)]);
    assert!(!sampled);
    assert!(
        !state.contains("th:"),
        "probability unknown: no th ({state})"
    );
    // Without links, the ratio.
    assert!(decide(&sampler, None, id, &[]).0);
}

/// What a library consumer's next send writes, for a context that arrived
/// with each flags byte and `ot` members: the random flag and every `ot`
/// member as they arrived, sampled or not.
#[test]
fn the_random_flag_and_ot_members_survive_a_consume_and_send() {
    for sampler in [
        None,
        Some(ProbabilitySampler::new(0.1).unwrap()),
        Some(ProbabilitySampler::new(0.1).unwrap().ignoring_parent()),
    ] {
        let exporter = InMemorySpanExporter::default();
        let mut builder = SdkTracerProvider::builder().with_simple_exporter(exporter);
        if let Some(sampler) = sampler.clone() {
            builder = builder.with_sampler(sampler);
        }
        let provider = builder.build();
        let instrumentation = Instrumentation::from_sdk(&provider, None);
        let propagation = Propagation::default();
        // Randomness ff…fe is kept at any ratio, so even the bare sampler
        // keeps every sampled context here, and th:0 stays consistent. (An
        // rv equal to the id's own bits would add the random flag: see
        // the next test.)
        for flags in ["00", "01", "02", "03", "ff", "fe"] {
            let traceparent =
                format!("00-4bf92f3577b34da6a3ffffffffffffff-00f067aa0ba902b7-{flags}");
            let mut headers = HeaderVec::new(Transport::Kafka);
            headers.push("traceparent", traceparent.as_str());
            headers.push("tracestate", "ot=th:0;rv:fffffffffffffe;x:y,vendor=1");
            let extracted = propagation.extract(&headers);
            let process = instrumentation.start_process_span_lazy(
                "orders process",
                ParentPolicy::Join,
                &extracted,
                Vec::new,
            );
            let send = instrumentation.start_span(
                "orders send",
                SpanKind::Producer,
                &process,
                Vec::new(),
                Vec::new(),
            );
            let mut out = HeaderVec::new(Transport::Kafka);
            propagation.inject(&send, &mut out);
            let written =
                String::from_utf8(out.header_bytes("traceparent").unwrap().to_vec()).unwrap();
            let arrived = u8::from_str_radix(flags, 16).unwrap();
            let sent = u8::from_str_radix(&written[53..], 16).unwrap();
            let why = format!("sampler {sampler:?}, flags {flags}: wrote {written}");
            assert_eq!(sent & 0x02, arrived & 0x02, "random flag: {why}");
            let bare = sampler
                .as_ref()
                .is_some_and(|s| format!("{s:?}").contains("follow_parent: false"));
            if !bare {
                assert_eq!(sent & 0x01, arrived & 0x01, "sampled flag: {why}");
            }
            let state =
                String::from_utf8(out.header_bytes("tracestate").unwrap().to_vec()).unwrap();
            // The bare sampler decides afresh and writes its own threshold.
            let th = if bare { "th:e666" } else { "th:0" };
            assert!(
                state.contains(th) && state.contains("rv:fffffffffffffe") && state.contains("x:y"),
                "ot members: {why}: {state}"
            );
            assert!(state.contains("vendor=1"), "{why}: {state}");
        }
        let _ = provider.shutdown();
    }
}

/// A root the sampler starts, through the SDK: `th` and `rv` on what it
/// keeps, so a consistent sampler in the next process decides alike.
#[test]
fn a_provider_with_the_sampler_writes_th_and_rv_on_new_traces() {
    let provider = SdkTracerProvider::builder()
        .with_sampler(ProbabilitySampler::new(0.5).unwrap())
        .build();
    let tracer = provider.tracer("t");
    let (mut kept, mut total) = (0, 0);
    for _ in 0..2_000 {
        let span = tracer.start("root");
        let cx = Context::new().with_span(span);
        let span_context = cx.span().span_context().clone();
        total += 1;
        let state = span_context.trace_state().header();
        let rv = Randomness::of_trace_id(span_context.trace_id()).to_string();
        assert!(state.contains(&format!("rv:{rv}")), "{state}");
        if span_context.is_sampled() {
            kept += 1;
            assert!(state.contains("th:8"), "{state}");
        }
    }
    assert!((850..=1_150).contains(&kept), "{kept} of {total}");
}

#[test]
fn the_environment_selects_the_sampler_by_its_specification_names() {
    let env = |sampler: &'static str, arg: Option<&'static str>| {
        move |name: &str| match name {
            "OTEL_TRACES_SAMPLER" => Some(sampler.to_owned()),
            "OTEL_TRACES_SAMPLER_ARG" => arg.map(str::to_owned),
            _ => None,
        }
    };
    let probability = |found| match found {
        SamplerFromEnv::Probability { sampler, warning } => (format!("{sampler:?}"), warning),
        SamplerFromEnv::Sdk => panic!("expected a probability sampler"),
    };
    let (sampler, warning) = probability(sampler_from_env(env("probability", Some("0.25"))));
    assert!(
        sampler.contains("follow_parent: false") && warning.is_none(),
        "{sampler}"
    );
    let (sampler, warning) = probability(sampler_from_env(env("parentbased_probability", None)));
    assert!(
        sampler.contains("Threshold(0)") && sampler.contains("follow_parent: true"),
        "{sampler}"
    );
    assert!(warning.is_none());
    for bad in ["abc", "1.5", "0", "NaN"] {
        let (sampler, warning) =
            probability(sampler_from_env(env("parentbased_probability", Some(bad))));
        assert!(sampler.contains("Threshold(0)"), "{bad}: {sampler}");
        let warning = warning.unwrap();
        assert!(
            warning.contains("OTEL_TRACES_SAMPLER_ARG") && warning.contains("sampling every trace"),
            "{warning}"
        );
    }
    for sdk in ["parentbased_traceidratio", "traceidratio", "always_on", ""] {
        assert!(
            matches!(sampler_from_env(env(sdk, Some("0.1"))), SamplerFromEnv::Sdk),
            "{sdk}"
        );
    }
}

/// A consumer in `link` mode starts a new trace that the consistent
/// sampler keeps exactly when the message's context was sampled (at a
/// ratio that would keep almost none); without link sampling, the ratio
/// decides. A `join` span follows its parent either way.
#[test]
fn link_mode_spans_are_decided_by_their_link() {
    let provider = SdkTracerProvider::builder()
        .with_sampler(ProbabilitySampler::new(0.000_001).unwrap())
        .build();
    let sampled_in_link_mode = |instrumentation: &Instrumentation, flags: &str| {
        let mut headers = HeaderVec::new(Transport::Kafka);
        let traceparent = format!("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-{flags}");
        headers.push("traceparent", traceparent.as_str());
        let extracted = Propagation::default().extract(&headers);
        let cx = instrumentation.start_process_span_lazy(
            "orders process",
            ParentPolicy::Link,
            &extracted,
            Vec::new,
        );
        let span = cx.span();
        assert_ne!(
            span.span_context().trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736",
            "link mode starts a new trace"
        );
        span.span_context().is_sampled()
    };
    let linked = Instrumentation::from_sdk(&provider, None);
    for _ in 0..50 {
        assert!(
            sampled_in_link_mode(&linked, "01"),
            "kept with its sampled link"
        );
        assert!(
            !sampled_in_link_mode(&linked, "00"),
            "dropped with its dropped link"
        );
    }
    let by_ratio = Instrumentation::from_sdk(&provider, None).with_link_sampling(false);
    let kept = (0..50)
        .filter(|_| sampled_in_link_mode(&by_ratio, "01"))
        .count();
    assert_eq!(kept, 0, "at one in a million, the ratio keeps none");
    let _ = provider.shutdown();
}

/// A trace the consistent sampler starts leaves with the random flag
/// (`03` kept, `02` dropped): its `rv` is its id's own randomness. One the
/// SDK's sampler starts has no `rv` and leaves as the SDK made it.
#[test]
fn a_new_trace_leaves_with_the_random_flag_when_its_rv_is_its_id() {
    let flags_of_new_traces = |provider: &SdkTracerProvider| {
        let instrumentation = Instrumentation::from_sdk(provider, None);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let cx = instrumentation.start_span(
                "orders send",
                SpanKind::Producer,
                &Context::new(),
                Vec::new(),
                Vec::new(),
            );
            let mut out = HeaderVec::new(Transport::Kafka);
            Propagation::default().inject(&cx, &mut out);
            let written =
                String::from_utf8(out.header_bytes("traceparent").unwrap().to_vec()).unwrap();
            seen.insert(written[53..].to_owned());
        }
        seen.into_iter().collect::<Vec<_>>()
    };
    let consistent = SdkTracerProvider::builder()
        .with_sampler(ProbabilitySampler::new(0.5).unwrap())
        .build();
    assert_eq!(flags_of_new_traces(&consistent), ["02", "03"]);
    let sdk = SdkTracerProvider::builder()
        .with_sampler(opentelemetry_sdk::trace::Sampler::TraceIdRatioBased(0.5))
        .build();
    assert_eq!(flags_of_new_traces(&sdk), ["00", "01"]);

    // The same rule on a context that arrives: `rv` equal to the id's last
    // 56 bits says those bits are random, and the flag says it again.
    let mut headers = HeaderVec::new(Transport::Kafka);
    headers.push(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    );
    headers.push("tracestate", "ot=rv:ce929d0e0e4736");
    let extracted = Propagation::default().extract(&headers);
    let mut out = HeaderVec::new(Transport::Kafka);
    Propagation::default().inject(extracted.context(), &mut out);
    assert_eq!(out.header_bytes("traceparent").unwrap()[53..], *b"03");
}
