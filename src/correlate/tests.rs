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
