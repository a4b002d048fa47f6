//! Request-id sources and the derive policy, table-driven.

use super::*;

#[derive(Default)]
struct Msg {
    headers: Vec<(&'static str, Vec<u8>)>,
    correlation_id: Option<&'static str>,
    message_id: Option<&'static str>,
    key: Option<Vec<u8>>,
    body: Option<Vec<u8>>,
}

impl MessageFields for Msg {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .rev()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }
    fn correlation_id(&self) -> Option<&str> {
        self.correlation_id
    }
    fn message_id(&self) -> Option<&str> {
        self.message_id
    }
    fn key(&self) -> Option<&[u8]> {
        self.key.as_deref()
    }
    fn body(&self) -> Option<&[u8]> {
        self.body.as_deref()
    }
}

fn id(s: &str) -> Option<RequestId> {
    RequestId::new(s.as_bytes())
}

#[test]
fn sources_parse_and_bad_ones_are_named() {
    let extractor: RequestIdExtractor =
        "header:X-Request-Id, correlation_id,message_id,key,json:/meta/requestId"
            .parse()
            .unwrap();
    assert_eq!(
        extractor.sources(),
        [
            RequestIdSource::Header("X-Request-Id".into()),
            RequestIdSource::CorrelationId,
            RequestIdSource::MessageId,
            RequestIdSource::Key,
            RequestIdSource::JsonPointer("/meta/requestId".into()),
        ]
    );
    for bad in ["header:", "json:meta", "body", ""] {
        let err = bad.parse::<RequestIdSource>().unwrap_err();
        assert!(
            err.to_string().contains("is not a request id source"),
            "{bad}: {err}"
        );
    }
}

#[test]
fn the_first_usable_source_wins_in_the_configured_order() {
    let msg = Msg {
        headers: vec![("x-request-id", b"from-header".to_vec())],
        correlation_id: Some("from-correlation"),
        key: Some(b"from-key".to_vec()),
        body: Some(br#"{"request_id":"from-body"}"#.to_vec()),
        ..Default::default()
    };
    for (sources, expected) in [
        ("header:x-request-id,key", "from-header"),
        ("key,header:x-request-id", "from-key"),
        ("message_id,correlation_id", "from-correlation"),
        ("json:/request_id,key", "from-body"),
        ("header:X-REQUEST-ID", "from-header"),
    ] {
        let extractor: RequestIdExtractor = sources.parse().unwrap();
        assert_eq!(extractor.extract(&msg), id(expected), "{sources}");
    }
}

#[test]
fn unusable_values_mean_no_id_never_an_error() {
    let long = "x".repeat(MAX_REQUEST_ID_LEN + 1);
    let cases: Vec<(Msg, &str, &str)> = vec![
        (
            Msg {
                body: Some(b"not json".to_vec()),
                ..Default::default()
            },
            "json:/request_id",
            "a body that is not JSON",
        ),
        (
            Msg {
                body: Some(br#"{"other":1}"#.to_vec()),
                ..Default::default()
            },
            "json:/request_id",
            "a missing field",
        ),
        (
            Msg {
                body: Some(br#"{"request_id":{"nested":true}}"#.to_vec()),
                ..Default::default()
            },
            "json:/request_id",
            "an object, not a value",
        ),
        (
            Msg {
                headers: vec![("x-request-id", long.into_bytes())],
                ..Default::default()
            },
            "header:x-request-id",
            "over 256 bytes",
        ),
        (
            Msg {
                headers: vec![("x-request-id", vec![0xff, 0xfe])],
                ..Default::default()
            },
            "header:x-request-id",
            "not UTF-8",
        ),
        (
            Msg {
                headers: vec![("x-request-id", b"  ".to_vec())],
                ..Default::default()
            },
            "header:x-request-id",
            "blank",
        ),
        (
            Msg::default(),
            "key,correlation_id,message_id",
            "nothing present",
        ),
    ];
    for (msg, sources, why) in cases {
        let extractor: RequestIdExtractor = sources.parse().unwrap();
        assert_eq!(extractor.extract(&msg), None, "{why}");
    }
    let numeric = Msg {
        body: Some(br#"{"meta":{"requestId":42}}"#.to_vec()),
        ..Default::default()
    };
    let extractor: RequestIdExtractor = "json:/meta/requestId".parse().unwrap();
    assert_eq!(extractor.extract(&numeric), id("42"), "numbers are ids too");
}

#[test]
fn derived_trace_ids_are_stable_keyed_and_distinct() {
    let r1 = id("R-1").unwrap();
    let r2 = id("R-2").unwrap();
    let a = derive_trace_id(b"secret", &r1);
    assert_eq!(
        a,
        derive_trace_id(b"secret", &r1),
        "same key and id: same trace"
    );
    assert_ne!(
        a,
        derive_trace_id(b"secret", &r2),
        "another id: another trace"
    );
    assert_ne!(
        a,
        derive_trace_id(b"other-key", &r1),
        "another key: another trace"
    );
    assert_ne!(a, TraceId::INVALID);
    // RFC 4231 test case 2: HMAC-SHA256("Jefe", "what do ya want for nothing?").
    let known = derive_trace_id(b"Jefe", &id("what do ya want for nothing?").unwrap());
    assert_eq!(known.to_string(), "5bdcc146bf60754e6a042426089575c7");
}

mod resolution {
    use std::sync::Arc;
    use std::time::Duration;

    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

    use crate::correlate::{
        Correlator, Fallback, MemoryStore, Outcome, Policy, RedisStore, RequestId,
        RequestIdExtractor, Store, derive_trace_id,
    };

    const KEY: &[u8] = b"test-key";

    fn correlator(policy: Policy, fallback: Fallback, store: Store) -> Correlator {
        Correlator::new(
            RequestIdExtractor::default(),
            policy,
            fallback,
            Some(Arc::from(KEY)),
            Arc::new(store),
        )
        .expect("key given")
    }

    fn memory() -> Store {
        Store::Memory(MemoryStore::new(100, Duration::from_secs(60)))
    }

    fn id(s: &str) -> RequestId {
        RequestId::new(s.as_bytes()).expect("usable")
    }

    fn carried() -> SpanContext {
        SpanContext::new(
            TraceId::from(0xa11ce_u128),
            SpanId::from(0xb0b_u64),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        )
    }

    #[tokio::test]
    async fn a_carried_context_is_recorded_then_joined_by_a_message_without_one() {
        let c = correlator(Policy::Join, Fallback::Root, memory());
        let recorded = c.resolve(&id("R"), Some(&carried())).await;
        assert_eq!(recorded.outcome, Outcome::Recorded);
        assert!(recorded.parent().is_none() && recorded.store_error.is_none());

        let joined = c.resolve(&id("R"), None).await;
        assert!(
            matches!(joined.outcome, Outcome::Joined(_)),
            "{:?}",
            joined.outcome
        );
        let parent = joined.parent().cloned().expect("parent");
        assert_eq!(
            (parent.trace_id(), parent.span_id()),
            (carried().trace_id(), carried().span_id())
        );
        assert!(!joined.fell_back);
    }

    #[tokio::test]
    async fn link_policy_links_instead_of_parenting() {
        let c = correlator(Policy::Link, Fallback::Root, memory());
        c.resolve(&id("R"), Some(&carried())).await;
        let linked = c.resolve(&id("R"), None).await;
        assert!(
            matches!(linked.outcome, Outcome::Linked(_)),
            "{:?}",
            linked.outcome
        );
        assert!(linked.parent().is_none());
        assert_eq!(
            linked.link().cloned().expect("link").trace_id(),
            carried().trace_id()
        );
    }

    #[tokio::test]
    async fn a_miss_falls_back_as_configured_and_says_so() {
        let derive = correlator(Policy::Join, Fallback::Derive, memory());
        let derived = derive.resolve(&id("unknown"), None).await;
        assert!(
            matches!(derived.outcome, Outcome::Derived(_)),
            "{:?}",
            derived.outcome
        );
        assert!(derived.fell_back);
        assert_eq!(
            derived
                .parent()
                .cloned()
                .expect("derived parent")
                .trace_id(),
            derive_trace_id(KEY, &id("unknown"))
        );

        let root = correlator(Policy::Link, Fallback::Root, memory());
        let rooted = root.resolve(&id("unknown"), None).await;
        assert_eq!(rooted.outcome, Outcome::Root);
        assert!(rooted.fell_back && rooted.parent().is_none() && rooted.link().is_none());
    }

    #[tokio::test]
    async fn derive_is_stateless_and_per_id() {
        let one = correlator(Policy::Derive, Fallback::Root, memory());
        let two = correlator(Policy::Derive, Fallback::Root, memory());
        let a1 = one
            .resolve(&id("R-1"), None)
            .await
            .parent()
            .cloned()
            .expect("parent");
        let a2 = two
            .resolve(&id("R-1"), None)
            .await
            .parent()
            .cloned()
            .expect("parent");
        let b = one
            .resolve(&id("R-2"), None)
            .await
            .parent()
            .cloned()
            .expect("parent");
        assert_eq!(
            a1.trace_id(),
            a2.trace_id(),
            "same id, separate correlators"
        );
        assert_eq!(a1.span_id(), a2.span_id());
        assert_ne!(a1.trace_id(), b.trace_id());
        assert!(a1.is_sampled() && a1.is_remote());
    }

    #[tokio::test]
    async fn a_store_outage_degrades_to_the_fallback_with_the_error() {
        let down = RedisStore::new(
            "redis://127.0.0.1:1",
            "t:",
            Duration::from_secs(60),
            Duration::from_millis(200),
        )
        .expect("URL");
        let c = correlator(Policy::Join, Fallback::Derive, Store::Redis(Box::new(down)));
        let recorded = c.resolve(&id("R"), Some(&carried())).await;
        assert_eq!(recorded.outcome, Outcome::Recorded);
        assert!(recorded.store_error.is_some());
        let resolved = c.resolve(&id("R"), None).await;
        assert!(
            matches!(resolved.outcome, Outcome::Derived(_)),
            "{:?}",
            resolved.outcome
        );
        assert!(resolved.fell_back);
        assert!(
            resolved
                .store_error
                .expect("error")
                .0
                .contains("127.0.0.1:1")
        );
    }

    #[test]
    fn deriving_without_a_key_is_refused() {
        for (policy, fallback) in [
            (Policy::Derive, Fallback::Root),
            (Policy::Join, Fallback::Derive),
        ] {
            let store = Arc::new(memory());
            assert!(
                Correlator::new(
                    RequestIdExtractor::default(),
                    policy,
                    fallback,
                    None,
                    store.clone()
                )
                .is_err()
            );
            assert!(
                Correlator::new(
                    RequestIdExtractor::default(),
                    policy,
                    fallback,
                    Some(Arc::from(&b""[..])),
                    store
                )
                .is_err()
            );
        }
        let store = Arc::new(memory());
        assert!(
            Correlator::new(
                RequestIdExtractor::default(),
                Policy::Join,
                Fallback::Root,
                None,
                store
            )
            .is_ok()
        );
    }
}
