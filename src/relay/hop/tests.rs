//! The hop against scripted sinks, no broker: each way a message's hop can
//! end, with the sends it made, the waits between them, its span and the
//! route's counters.

use std::sync::Mutex;

use opentelemetry::trace::{SpanKind, Status};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use rdkafka::message::{Header, OwnedHeaders};
use tokio::time::Instant;

use super::*;
use crate::relay::message::{InboundHeaders, Origin};
use crate::relay::settle::count_outcome;
use crate::relay::stats::RelayMetrics;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

/// One send a scripted sink was asked to make.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Sent {
    dead_letter: bool,
    minimal: bool,
    reason: Vec<(&'static str, String)>,
    at: Instant,
    /// What the sink's PRODUCER span was asked to add.
    annotations: Vec<KeyValue>,
}

/// A sink that answers each send with the next scripted result (the last
/// one repeats) and records what it was asked.
struct ScriptedSink {
    script: Mutex<Vec<Result<(), SendError>>>,
    sent: Mutex<Vec<Sent>>,
}

impl ScriptedSink {
    fn new(script: Vec<Result<(), SendError>>) -> Arc<Self> {
        Arc::new(Self {
            script: Mutex::new(script),
            sent: Mutex::default(),
        })
    }

    fn sent(&self) -> Vec<Sent> {
        self.sent.lock().expect("sent").clone()
    }
}

impl SinkClient for ScriptedSink {
    fn send<'a>(
        &'a self,
        parent: &'a Context,
        _message: &'a Inbound,
        dress: Dress<'a>,
    ) -> BoxFuture<'a, Result<(), SendError>> {
        self.sent.lock().expect("sent").push(Sent {
            dead_letter: matches!(dress, Dress::DeadLetter { .. }),
            minimal: dress.is_minimal(),
            reason: dress.reason().to_vec(),
            at: Instant::now(),
            annotations: instrument::send_annotations(parent),
        });
        let mut script = self.script.lock().expect("script");
        let answer = if script.len() > 1 {
            script.remove(0)
        } else {
            script[0].clone()
        };
        Box::pin(std::future::ready(answer))
    }
}

fn transient() -> Result<(), SendError> {
    Err(SendError::transient(
        "broker_down",
        "connection refused".into(),
    ))
}

fn permanent() -> Result<(), SendError> {
    Err(SendError::permanent(
        "message_too_large",
        "its headers take 200000 bytes".into(),
    ))
}

/// A Kafka record carrying a sampled W3C context.
fn message() -> Inbound {
    let traceparent = format!("00-{TRACE_ID}-{PARENT_ID}-01");
    Inbound {
        headers: InboundHeaders::Kafka(OwnedHeaders::new().insert(Header {
            key: "traceparent",
            value: Some(traceparent.as_bytes()),
        })),
        payload: Some(b"{}".to_vec()),
        kafka_key: Some(b"m1".to_vec()),
        timestamp_ms: None,
        origin: Origin::Kafka {
            topic: "orders".into(),
            partition: 2,
            offset: 41,
            group: "g".into(),
        },
    }
}

struct Case {
    name: &'static str,
    attempts: u32,
    sink: Vec<Result<(), SendError>>,
    /// None: the route has no dead-letter destination.
    dead_letter: Option<Vec<Result<(), SendError>>>,
    outcome: HopOutcome,
    /// Sends to the sink, then to the dead-letter destination.
    sink_sends: usize,
    dead_letter_sends: Vec<(bool, bool)>,
    /// The span's `error.type`, when it records a failure.
    error_type: Option<&'static str>,
    /// published, retried, dead_lettered, failed.
    counters: [u64; 4],
    poisoned: bool,
}

fn cases() -> Vec<Case> {
    let gone = "connection refused".to_owned();
    let too_large = "its headers take 200000 bytes".to_owned();
    vec![
        Case {
            name: "delivered at the first attempt",
            attempts: 3,
            sink: vec![Ok(())],
            dead_letter: None,
            outcome: HopOutcome::Delivered { attempts: 1 },
            sink_sends: 1,
            dead_letter_sends: vec![],
            error_type: None,
            counters: [1, 0, 0, 0],
            poisoned: false,
        },
        Case {
            name: "delivered after two transient failures",
            attempts: 3,
            sink: vec![transient(), transient(), Ok(())],
            dead_letter: Some(vec![Ok(())]),
            outcome: HopOutcome::Delivered { attempts: 3 },
            sink_sends: 3,
            dead_letter_sends: vec![],
            error_type: None,
            counters: [1, 2, 0, 0],
            poisoned: false,
        },
        Case {
            name: "dead-lettered when every attempt failed",
            attempts: 3,
            sink: vec![transient()],
            dead_letter: Some(vec![Ok(())]),
            outcome: HopOutcome::DeadLettered {
                attempts: 3,
                error: gone.clone(),
            },
            sink_sends: 3,
            dead_letter_sends: vec![(true, false)],
            error_type: Some("broker_down"),
            counters: [0, 2, 1, 0],
            poisoned: false,
        },
        Case {
            name: "dead-lettered at once when the message can never be sent",
            attempts: 3,
            sink: vec![permanent()],
            dead_letter: Some(vec![Ok(())]),
            outcome: HopOutcome::DeadLettered {
                attempts: 1,
                error: too_large.clone(),
            },
            sink_sends: 1,
            dead_letter_sends: vec![(true, false)],
            error_type: Some("message_too_large"),
            counters: [0, 0, 1, 0],
            poisoned: false,
        },
        Case {
            name: "a minimal dead letter when the full one cannot be carried",
            attempts: 1,
            sink: vec![permanent()],
            dead_letter: Some(vec![permanent(), Ok(())]),
            outcome: HopOutcome::DeadLettered {
                attempts: 1,
                error: too_large.clone(),
            },
            sink_sends: 1,
            dead_letter_sends: vec![(true, false), (true, true)],
            error_type: Some("message_too_large"),
            counters: [0, 0, 1, 0],
            poisoned: false,
        },
        Case {
            name: "poisoned when not even the minimal dead letter can ever be sent",
            attempts: 3,
            sink: vec![permanent()],
            dead_letter: Some(vec![permanent(), permanent()]),
            outcome: HopOutcome::Poisoned {
                error: format!("{too_large}; dead-lettering failed too: {too_large}"),
            },
            sink_sends: 1,
            dead_letter_sends: vec![(true, false), (true, true)],
            error_type: Some("message_too_large"),
            counters: [0, 0, 0, 0],
            poisoned: true,
        },
        Case {
            name: "failed when the dead-letter destination fails too",
            attempts: 2,
            sink: vec![transient()],
            dead_letter: Some(vec![transient()]),
            outcome: HopOutcome::Failed {
                error: format!("{gone}; dead-lettering failed too: {gone}"),
            },
            sink_sends: 2,
            dead_letter_sends: vec![(true, false)],
            error_type: Some("broker_down"),
            counters: [0, 0, 0, 1],
            poisoned: false,
        },
        Case {
            name: "failed (to be retried) without a dead-letter destination",
            attempts: 2,
            sink: vec![transient()],
            dead_letter: None,
            outcome: HopOutcome::Failed {
                error: gone.clone(),
            },
            sink_sends: 2,
            dead_letter_sends: vec![],
            error_type: Some("broker_down"),
            counters: [0, 0, 0, 1],
            poisoned: false,
        },
        Case {
            name: "poisoned: never sendable and no dead-letter destination",
            attempts: 3,
            sink: vec![permanent()],
            dead_letter: None,
            outcome: HopOutcome::Poisoned {
                error: too_large.clone(),
            },
            sink_sends: 1,
            dead_letter_sends: vec![],
            error_type: Some("message_too_large"),
            counters: [0, 0, 0, 0],
            poisoned: true,
        },
    ]
}

fn attribute<'s>(span: &'s SpanData, key: &str) -> Option<&'s opentelemetry::Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| &kv.value)
}

#[tokio::test(start_paused = true)]
async fn every_way_a_hop_ends() {
    const BACKOFF: Duration = Duration::from_millis(100);
    for case in cases() {
        let name = case.name;
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let metrics = RelayMetrics::new().expect("registry");
        let stats = metrics.route("r");
        let sink = ScriptedSink::new(case.sink);
        let dead_letter = case.dead_letter.map(ScriptedSink::new);
        let hop = Hop {
            route: "r".into(),
            mode: ParentPolicy::Join,
            propagation: Propagation::default(),
            attempts: case.attempts,
            backoff: BACKOFF,
            source_endpoint: Endpoint::from_servers("broker-1:9092", Some("tracebridge")),
            sink: sink.clone(),
            dead_letter: dead_letter.clone().map(|d| d as Arc<dyn SinkClient>),
            instrumentation: Instrumentation::from_sdk(&provider, None),
            correlation: None,
            stats: stats.clone(),
        };
        let message = message();

        let outcome = hop.relay(&message).await;
        count_outcome(&hop, &stats, &message, &outcome);

        assert_eq!(outcome, case.outcome, "{name}");
        // Sends and the waits between them: backoff, then twice as long.
        let sent = sink.sent();
        assert_eq!(sent.len(), case.sink_sends, "{name}: sends to the sink");
        for (i, pair) in sent.windows(2).enumerate() {
            let waited = pair[1].at - pair[0].at;
            assert_eq!(
                waited,
                BACKOFF * (1 << i),
                "{name}: wait before attempt {}",
                i + 2
            );
        }
        // Each attempt's PRODUCER span is numbered.
        for (i, send) in sent.iter().enumerate() {
            assert_eq!(
                send.annotations,
                vec![KeyValue::new(
                    crate::dead_letter::SEND_ATTEMPT_ATTRIBUTE,
                    i as i64 + 1
                )],
                "{name}: attempt {}",
                i + 1
            );
        }
        let dead_letters = dead_letter.as_ref().map(|d| d.sent()).unwrap_or_default();
        // The dead letter's PRODUCER span says why, and after how many.
        for letter in &dead_letters {
            let error = match &case.outcome {
                HopOutcome::DeadLettered { error, .. } => error.clone(),
                HopOutcome::Failed { error } | HopOutcome::Poisoned { error } => error
                    .split("; dead-lettering failed too")
                    .next()
                    .unwrap_or_default()
                    .to_owned(),
                other => panic!("{name}: a dead letter with outcome {other:?}"),
            };
            assert_eq!(
                letter.annotations,
                vec![
                    KeyValue::new(crate::dead_letter::REASON_ATTRIBUTE, error),
                    KeyValue::new(crate::dead_letter::ATTEMPTS_ATTRIBUTE, sent.len() as i64),
                ],
                "{name}: dead-letter span"
            );
        }
        let dressed: Vec<(bool, bool)> = dead_letters
            .iter()
            .map(|s| (s.dead_letter, s.minimal))
            .collect();
        assert_eq!(
            dressed, case.dead_letter_sends,
            "{name}: dead letters (dressed, minimal)"
        );
        for letter in &dead_letters {
            let reason: std::collections::BTreeMap<_, _> = letter.reason.iter().cloned().collect();
            assert_eq!(
                reason.get(DEAD_LETTER_ROUTE).map(String::as_str),
                Some("r"),
                "{name}"
            );
            assert_eq!(
                reason.get(DEAD_LETTER_SOURCE).map(String::as_str),
                Some("kafka orders[2]@41"),
                "{name}"
            );
            assert_eq!(
                reason.get(DEAD_LETTER_ATTEMPTS),
                Some(&sent.len().to_string()),
                "{name}"
            );
            assert!(reason.contains_key(DEAD_LETTER_ERROR), "{name}");
        }

        // One CONSUMER span, in the message's trace, child of its context.
        provider.force_flush().expect("flush");
        let spans = exporter.get_finished_spans().expect("spans");
        assert_eq!(spans.len(), 1, "{name}: {spans:#?}");
        let span = &spans[0];
        assert_eq!(span.span_kind, SpanKind::Consumer, "{name}");
        assert_eq!(span.name, "process orders", "{name}");
        assert_eq!(span.span_context.trace_id().to_string(), TRACE_ID, "{name}");
        assert_eq!(span.parent_span_id.to_string(), PARENT_ID, "{name}");
        assert_eq!(
            attribute(span, ROUTE_ATTRIBUTE).map(|v| v.as_str().into_owned()),
            Some("r".to_owned()),
            "{name}"
        );
        // The library consumer's attributes, built by the same function.
        for (key, value) in [
            ("server.address", "broker-1"),
            ("messaging.client.id", "tracebridge"),
        ] {
            assert_eq!(
                attribute(span, key).map(|v| v.as_str().into_owned()),
                Some(value.to_owned()),
                "{name}: {key}"
            );
        }
        assert_eq!(
            attribute(span, "server.port"),
            Some(&opentelemetry::Value::I64(9092)),
            "{name}"
        );
        match case.error_type {
            None => assert_eq!(span.status, Status::Unset, "{name}"),
            Some(error_type) => {
                assert!(matches!(span.status, Status::Error { .. }), "{name}");
                assert_eq!(
                    attribute(span, "error.type").map(|v| v.as_str().into_owned()),
                    Some(error_type.to_owned()),
                    "{name}"
                );
            }
        }

        let counters = [
            stats.published.get(),
            stats.retried.get(),
            stats.dead_lettered.get(),
            stats.failed.get(),
        ];
        assert_eq!(
            counters, case.counters,
            "{name}: published, retried, dead_lettered, failed"
        );
        assert_eq!(stats.is_poisoned(), case.poisoned, "{name}");
    }
}

/// A sink that behaves as the real ones do — a PRODUCER span per send
/// under the hop's context, with the annotations it carries, its context
/// written into the outgoing headers — failing the first `failures` sends.
struct TracingSink {
    instrumentation: Instrumentation,
    failures: Mutex<u32>,
    /// The outgoing headers of the send that succeeded.
    wire: Mutex<Option<crate::propagation::HeaderVec>>,
}

impl SinkClient for TracingSink {
    fn send<'a>(
        &'a self,
        parent: &'a Context,
        message: &'a Inbound,
        _dress: Dress<'a>,
    ) -> BoxFuture<'a, Result<(), SendError>> {
        let cx = self.instrumentation.start_span(
            "send downstream",
            SpanKind::Producer,
            parent,
            instrument::send_annotations(parent),
            Vec::new(),
        );
        // The incoming headers, with the hop's trace headers replaced.
        let mut wire = crate::propagation::HeaderVec::new(crate::propagation::Transport::Kafka);
        use crate::propagation::HeaderReader;
        for name in message.headers.header_names() {
            if let Some(value) = message.headers.header_bytes(name) {
                wire.push(name, value);
            }
        }
        Propagation::default().inject(&cx, &mut wire);
        let mut failures = self.failures.lock().expect("failures");
        let answer = if *failures > 0 {
            *failures -= 1;
            instrument::record_failure(&cx, "broker_down", "connection refused".into());
            transient()
        } else {
            *self.wire.lock().expect("wire") = Some(wire);
            Ok(())
        };
        cx.span().end();
        Box::pin(std::future::ready(answer))
    }
}

#[tokio::test(start_paused = true)]
async fn a_message_sent_at_the_third_attempt_is_one_trace_with_three_numbered_sends() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let instrumentation = Instrumentation::from_sdk(&provider, None);
    let sink = Arc::new(TracingSink {
        instrumentation: instrumentation.clone(),
        failures: Mutex::new(2),
        wire: Mutex::default(),
    });
    let metrics = RelayMetrics::new().expect("registry");
    let hop = Hop {
        route: "r".into(),
        mode: ParentPolicy::Join,
        propagation: Propagation::default(),
        attempts: 5,
        backoff: Duration::from_millis(10),
        source_endpoint: Endpoint::default(),
        sink: sink.clone(),
        dead_letter: None,
        instrumentation,
        correlation: None,
        stats: metrics.route("r"),
    };
    assert_eq!(
        hop.relay(&message()).await,
        HopOutcome::Delivered { attempts: 3 }
    );
    provider.force_flush().expect("flush");
    let spans = exporter.get_finished_spans().expect("spans");
    let process: Vec<&SpanData> = spans
        .iter()
        .filter(|s| s.span_kind == SpanKind::Consumer)
        .collect();
    assert_eq!(process.len(), 1, "one process span");
    let process = process[0];
    assert_eq!(process.span_context.trace_id().to_string(), TRACE_ID);
    let sends: Vec<&SpanData> = spans
        .iter()
        .filter(|s| s.span_kind == SpanKind::Producer)
        .collect();
    assert_eq!(sends.len(), 3, "a PRODUCER span per attempt");
    for (i, send) in sends.iter().enumerate() {
        assert_eq!(send.parent_span_id, process.span_context.span_id());
        assert_eq!(
            attribute(send, crate::dead_letter::SEND_ATTEMPT_ATTRIBUTE),
            Some(&opentelemetry::Value::I64(i as i64 + 1))
        );
        let failed = matches!(send.status, Status::Error { .. });
        assert_eq!(failed, i < 2, "attempt {} failed: {failed}", i + 1);
    }
    let wire = sink.wire.lock().expect("wire").clone().expect("delivered");
    let traceparents = wire.all("traceparent");
    assert_eq!(traceparents.len(), 1, "one traceparent on the wire");
    let delivered = sends[2].span_context.span_id().to_string();
    assert_eq!(
        std::str::from_utf8(traceparents[0]).expect("text"),
        format!("00-{TRACE_ID}-{delivered}-01"),
        "downstream is a child of the attempt that delivered, in the origin trace"
    );
}
