//! tracebridge's Jaeger codec against the crate it replaces: the same
//! headers out for every span context, the same span context (or none) in
//! for every header, generated near the format's edges.

// Only the tests use it.
#[cfg(test)]
#[path = "../../../src/propagation/jaeger.rs"]
mod jaeger;

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use old_opentelemetry::propagation::TextMapPropagator as _;
    use old_opentelemetry::trace::TraceContextExt as _;
    use opentelemetry::propagation::TextMapPropagator as _;
    use opentelemetry::trace::TraceContextExt as _;
    use proptest::prelude::*;

    use super::jaeger::JaegerPropagator;

    type Headers = HashMap<String, String>;

    // The deprecated crate is the point of the comparison.
    #[allow(deprecated)]
    fn old() -> opentelemetry_jaeger_propagator::Propagator {
        opentelemetry_jaeger_propagator::Propagator::new()
    }

    /// What a span context is made of, the same in both versions' terms.
    fn ours(headers: &Headers) -> String {
        let cx =
            JaegerPropagator::new().extract_with_context(&opentelemetry::Context::new(), headers);
        let span = cx.span();
        let sc = span.span_context();
        format!(
            "{}-{}-{:02x}-{}-[{}]",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8(),
            sc.is_remote(),
            sc.trace_state().header()
        )
    }

    fn theirs(headers: &Headers) -> String {
        let cx = old().extract_with_context(&old_opentelemetry::Context::new(), headers);
        let span = cx.span();
        let sc = span.span_context();
        format!(
            "{}-{}-{:02x}-{}-[{}]",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8(),
            sc.is_remote(),
            sc.trace_state().header()
        )
    }

    /// An id-like field: hex of any length around the limits, with the
    /// characters a parser may trip on.
    fn field(max: usize) -> impl Strategy<Value = String> {
        prop_oneof![
            proptest::string::string_regex(&format!("[0-9a-f]{{0,{max}}}")).unwrap(),
            proptest::string::string_regex(&format!("[0-9a-fA-F+\\- gé%]{{0,{max}}}")).unwrap(),
            Just(String::new()),
            Just("0".repeat(max.min(32))),
        ]
    }

    fn flags() -> impl Strategy<Value = String> {
        prop_oneof![
            (0u16..300).prop_map(|n| n.to_string()),
            proptest::string::string_regex("[0-9+\\-x ]{0,3}").unwrap(),
        ]
    }

    /// `uber-trace-id` values: four fields (or not), `:` or `%3A`.
    fn header_value() -> impl Strategy<Value = String> {
        let separator = prop_oneof![Just(":"), Just("%3A"), Just("%3a")];
        let well_formed = (
            proptest::string::string_regex("[0-9a-f]{1,32}").unwrap(),
            proptest::string::string_regex("[0-9a-f]{1,16}").unwrap(),
            0u8..4,
        )
            .prop_map(|(t, s, f)| format!("{t}:{s}:0:{f}"));
        prop_oneof![
            4 => well_formed,
            4 => (field(34), field(18), field(18), flags(), separator, any::<bool>()).prop_map(
                |(t, s, p, f, sep, trailing)| {
                    let mut v = [t, s, p, f].join(sep);
                    if trailing {
                        v.push_str(sep);
                    }
                    v
                }
            ),
            1 => proptest::collection::vec(field(20), 0..7).prop_map(|parts| parts.join(":")),
            1 => any::<String>(),
        ]
    }

    fn headers() -> impl Strategy<Value = Headers> {
        let baggage = proptest::collection::vec(
            (
                prop_oneof![
                    3 => proptest::string::string_regex("uberctx-[a-z0-9_*/\\-]{1,8}").unwrap(),
                    1 => proptest::string::string_regex("(uberctx-|uberctx|other-)[a-zA-Z0-9_*/\\-]{0,8}")
                        .unwrap(),
                ],
                prop_oneof![
                    3 => proptest::string::string_regex("[a-z0-9]{1,8}").unwrap(),
                    1 => proptest::string::string_regex("[a-z0-9 ,=;]{0,8}").unwrap(),
                ],
            ),
            0..3,
        );
        (proptest::option::weighted(0.95, header_value()), baggage).prop_map(|(value, baggage)| {
            let mut headers: Headers = baggage.into_iter().collect();
            if let Some(value) = value {
                headers.insert("uber-trace-id".into(), value);
            }
            headers
        })
    }

    fn inject_ours(trace_id: u128, span_id: u64, flags: u8) -> Headers {
        let sc = opentelemetry::trace::SpanContext::new(
            opentelemetry::trace::TraceId::from(trace_id),
            opentelemetry::trace::SpanId::from(span_id),
            opentelemetry::trace::TraceFlags::new(flags),
            false,
            opentelemetry::trace::TraceState::default(),
        );
        let mut headers = Headers::new();
        JaegerPropagator::new().inject_context(
            &opentelemetry::Context::new().with_remote_span_context(sc),
            &mut headers,
        );
        headers
    }

    fn inject_theirs(trace_id: u128, span_id: u64, flags: u8) -> Headers {
        let sc = old_opentelemetry::trace::SpanContext::new(
            old_opentelemetry::trace::TraceId::from(trace_id),
            old_opentelemetry::trace::SpanId::from(span_id),
            old_opentelemetry::trace::TraceFlags::new(flags),
            false,
            old_opentelemetry::trace::TraceState::default(),
        );
        let mut headers = Headers::new();
        old().inject_context(
            &old_opentelemetry::Context::new().with_remote_span_context(sc),
            &mut headers,
        );
        headers
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(20_000))]

        #[test]
        fn extracts_what_the_old_crate_extracts(headers in headers()) {
            prop_assert_eq!(ours(&headers), theirs(&headers), "headers {:?}", headers);
        }

        #[test]
        fn injects_what_the_old_crate_injects(
            trace_id in prop_oneof![Just(0u128), any::<u128>(), 0u128..=u64::MAX as u128],
            span_id in prop_oneof![Just(0u64), any::<u64>(), 0u64..=0xffff],
            flags in any::<u8>(),
        ) {
            prop_assert_eq!(inject_ours(trace_id, span_id, flags), inject_theirs(trace_id, span_id, flags));
        }
    }

    /// The generators reach both outcomes: headers the old crate accepts
    /// and ones it rejects (a generator that only made garbage would prove
    /// nothing).
    #[test]
    fn the_generated_headers_cover_valid_and_invalid_contexts() {
        use proptest::strategy::ValueTree;
        use proptest::test_runner::TestRunner;
        let mut runner = TestRunner::deterministic();
        let (mut valid, mut invalid, mut with_state) = (0, 0, 0);
        for _ in 0..5_000 {
            let headers = headers().new_tree(&mut runner).unwrap().current();
            let cx = old().extract_with_context(&old_opentelemetry::Context::new(), &headers);
            let span = cx.span();
            let sc = span.span_context();
            if sc.is_valid() {
                valid += 1;
                if !sc.trace_state().header().is_empty() {
                    with_state += 1;
                }
            } else {
                invalid += 1;
            }
        }
        assert!(
            valid > 250 && invalid > 250 && with_state > 20,
            "valid {valid}, invalid {invalid}, with trace state {with_state}"
        );
    }

    /// Known values from the old crate's own tests.
    #[test]
    fn known_headers() {
        let mut headers = Headers::new();
        headers.insert(
            "uber-trace-id".into(),
            "4d0000000000000016:17c29:0:3".into(),
        );
        assert_eq!(
            ours(&headers),
            "000000000000004d0000000000000016-0000000000017c29-05-true-[]"
        );
        assert_eq!(ours(&headers), theirs(&headers));
        assert_eq!(
            inject_ours(0x4d_0000_0000_0000_0016, 0x17c29, 0x05)["uber-trace-id"],
            "000000000000004d0000000000000016:0000000000017c29:0:3"
        );
    }
}
