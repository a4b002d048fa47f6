//! Correlation by request id through the relay, against real brokers and a
//! real Redis: messages from producers that were never instrumented land
//! in the trace of the request they belong to.
#![cfg(all(feature = "kafka", feature = "amqp"))]

mod common;

use std::time::Duration;

use common::amqp::{ROUTING_KEY, Rabbit};
use common::spans::{self, attr, span_id, trace_id};
use opentelemetry::Value;
use opentelemetry::trace::{SpanKind, TraceId};
use opentelemetry_sdk::trace::SpanData;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use tracebridge::correlate::{RequestId, derive_trace_id};
use tracebridge::relay::Relay;

const WAIT: Duration = Duration::from_secs(30);
const KEY: &str = "correlation-test-key";
const OUTCOME: &str = "tracebridge.correlation.outcome";
const CONVERSATION: &str = "messaging.message.conversation_id";

/// One Kafka → RabbitMQ route with `correlation` as its
/// `[route.correlation]` body, and the test's own topic and queue.
struct Setup {
    topic: String,
    rabbit: Rabbit,
    cap: spans::Capture,
}

impl Setup {
    async fn new(prefix: &str) -> Self {
        let topic = common::unique(prefix);
        common::kafka::create_topic(&topic, 1).await;
        Self {
            topic,
            rabbit: Rabbit::new(prefix).await,
            cap: spans::capture(),
        }
    }

    /// A relay in consumer group `group` with this correlation.
    async fn relay(&self, group: &str, correlation: &str) -> Relay {
        self.start(&format!(
            r#"[[route]]
name = "legacy"
from = {{ kafka = "k", topic = "{}", group = "{group}" }}
to = {{ amqp = "r", exchange = "{}", routing_key = "{ROUTING_KEY}" }}

[route.correlation]
{correlation}
"#,
            self.topic, self.rabbit.exchange
        ))
        .await
    }

    /// A relay running `routes` against the test brokers (`k`, `r`).
    async fn start(&self, routes: &str) -> Relay {
        Relay::start(common::relay_config(routes), self.cap.instrumentation())
            .await
            .expect("relay starts")
    }

    /// Sends with the instrumented producer: context + `x-request-id`.
    async fn send_instrumented(&self, request_id: &str, body: &str) {
        common::traced::kafka_producer(self.cap.instrumentation())
            .send(
                FutureRecord::<str, str>::to(&self.topic)
                    .payload(body)
                    .headers(OwnedHeaders::new().insert(Header {
                        key: "x-request-id",
                        value: Some(request_id),
                    })),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("delivered");
    }

    /// Sends like a legacy producer: plain rdkafka, no trace headers, the
    /// request id in `x-request-id` when given.
    async fn send_uninstrumented(&self, request_id: Option<&str>, body: &str) {
        let mut headers = OwnedHeaders::new();
        if let Some(id) = request_id {
            headers = headers.insert(Header {
                key: "x-request-id",
                value: Some(id),
            });
        }
        common::kafka::producer()
            .send(
                FutureRecord::<str, str>::to(&self.topic)
                    .payload(body)
                    .headers(headers),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("delivered");
    }

    /// Receives `n` deliveries at the end of the route with a traced
    /// consumer (so their CONSUMER spans are captured); returns the bodies.
    async fn receive(&self, n: usize) -> Vec<String> {
        use futures::StreamExt as _;
        let mut consumer =
            common::traced::amqp_consumer(&self.rabbit, self.cap.instrumentation(), false).await;
        let mut bodies = Vec::new();
        for _ in 0..n {
            let delivery = tokio::time::timeout(WAIT, consumer.next())
                .await
                .expect("a delivery within the wait")
                .expect("open")
                .expect("received");
            bodies.push(String::from_utf8_lossy(&delivery.data).into_owned());
            delivery
                .ack(lapin::options::BasicAckOptions::default())
                .await
                .expect("ack");
        }
        bodies
    }

    /// The relay's process spans, in the order they ended.
    fn relay_spans(&self) -> Vec<SpanData> {
        self.cap.named(&format!("process {}", self.topic))
    }

    fn relay_span(&self, outcome: &str) -> SpanData {
        let mut found: Vec<SpanData> = self
            .relay_spans()
            .into_iter()
            .filter(|s| attr(s, OUTCOME) == Some(Value::from(outcome.to_owned())))
            .collect();
        assert_eq!(
            found.len(),
            1,
            "one relay span with outcome {outcome}: {:#?}",
            self.relay_spans()
        );
        found.remove(0)
    }

    /// The end consumer's span for the message the relay published under
    /// `relay_process`.
    fn downstream_of(&self, relay_process: &SpanData) -> SpanData {
        let publish = self
            .cap
            .named(&format!("publish {}:{ROUTING_KEY}", self.rabbit.exchange))
            .into_iter()
            .find(|s| s.parent_span_id == span_id(relay_process))
            .expect("the relay's publish span");
        self.cap
            .named(&format!(
                "process {}:{ROUTING_KEY}:{}",
                self.rabbit.exchange, self.rabbit.queue
            ))
            .into_iter()
            .find(|s| s.parent_span_id == span_id(&publish))
            .expect("the downstream consumer's span, child of the relay's publish")
    }

    async fn finish(self) {
        self.rabbit.delete().await;
    }
}

fn derived(id: &str) -> TraceId {
    derive_trace_id(
        KEY.as_bytes(),
        &RequestId::new(id.as_bytes()).expect("usable id"),
    )
}

#[tokio::test]
async fn join_puts_an_uninstrumented_message_and_its_consumer_into_the_original_trace() {
    let s = Setup::new("corr-join").await;
    let relay = s
        .relay(&format!("{}-g", s.topic), r#"policy = "join""#)
        .await;
    let request = common::unique("R");
    s.send_instrumented(&request, "A").await;
    assert_eq!(s.receive(1).await, ["A"], "A relayed before B is sent");
    s.send_uninstrumented(Some(&request), "B").await;
    assert_eq!(s.receive(1).await, ["B"]);
    let stats = relay.stats()[0].1.clone();
    assert!(relay.shutdown().await);

    let origin = s.cap.one(&format!("send {}", s.topic));
    let a = s.relay_span("recorded");
    let b = s.relay_span("joined");
    assert_eq!(trace_id(&a), trace_id(&origin));
    assert_eq!(trace_id(&b), trace_id(&origin), "B joined A's trace");
    assert_eq!(
        b.parent_span_id,
        span_id(&origin),
        "under the context A carried"
    );
    assert_eq!(b.span_kind, SpanKind::Consumer);
    assert!(b.links.is_empty());
    for span in [&a, &b] {
        assert_eq!(attr(span, CONVERSATION), Some(Value::from(request.clone())));
    }
    assert_eq!(attr(&b, "tracebridge.correlation.fallback"), None);
    let downstream = s.downstream_of(&b);
    assert_eq!(
        trace_id(&downstream),
        trace_id(&origin),
        "B's consumer is in A's trace too"
    );
    assert_eq!(
        (
            stats.correlation.recorded.get(),
            stats.correlation.hits.get(),
            stats.correlation.misses.get()
        ),
        (1, 1, 0)
    );
    s.finish().await;
}

#[tokio::test]
async fn link_gives_the_uninstrumented_message_its_own_trace_linked_to_the_original() {
    let s = Setup::new("corr-link").await;
    let relay = s
        .relay(
            &format!("{}-g", s.topic),
            "policy = \"link\"\nfallback = \"root\"",
        )
        .await;
    let request = common::unique("R");
    s.send_instrumented(&request, "A").await;
    s.receive(1).await;
    s.send_uninstrumented(Some(&request), "B").await;
    s.receive(1).await;
    assert!(relay.shutdown().await);

    let origin = s.cap.one(&format!("send {}", s.topic));
    let b = s.relay_span("linked");
    assert_ne!(trace_id(&b), trace_id(&origin), "a trace of its own");
    assert_eq!(
        b.parent_span_id,
        opentelemetry::trace::SpanId::INVALID,
        "a root"
    );
    let links: Vec<_> = b
        .links
        .iter()
        .map(|l| (l.span_context.trace_id(), l.span_context.span_id()))
        .collect();
    assert_eq!(links, [(trace_id(&origin), span_id(&origin))]);
    assert_eq!(trace_id(&s.downstream_of(&b)), trace_id(&b));
    s.finish().await;
}

#[tokio::test]
async fn a_json_pointer_finds_the_id_and_a_non_json_body_is_relayed_uncorrelated() {
    let s = Setup::new("corr-json").await;
    let relay = s
        .relay(
            &format!("{}-g", s.topic),
            &format!(
                "request_id = [\"json:/meta/requestId\"]\npolicy = \"derive\"\nkey = \"{KEY}\""
            ),
        )
        .await;
    let request = common::unique("J");
    let json = format!(r#"{{"meta":{{"requestId":"{request}"}},"amount":5}}"#);
    s.send_uninstrumented(None, &json).await;
    s.send_uninstrumented(None, "not json {").await;
    let mut bodies = s.receive(2).await;
    bodies.sort();
    let mut expected = vec![json.clone(), "not json {".to_owned()];
    expected.sort();
    assert_eq!(bodies, expected, "both relayed");
    let stats = relay.stats()[0].1.clone();
    assert!(relay.shutdown().await);

    let from_json = s.relay_span("derived");
    assert_eq!(trace_id(&from_json), derived(&request));
    assert_eq!(attr(&from_json, CONVERSATION), Some(Value::from(request)));
    let plain: Vec<SpanData> = s
        .relay_spans()
        .into_iter()
        .filter(|sp| attr(sp, OUTCOME).is_none())
        .collect();
    assert_eq!(plain.len(), 1, "the non-JSON message: no correlation");
    assert_eq!(attr(&plain[0], CONVERSATION), None);
    assert!(
        plain[0].status == opentelemetry::trace::Status::Unset,
        "no error"
    );
    assert_eq!((stats.published.get(), stats.dead_lettered.get()), (2, 0));
    s.finish().await;
}

#[tokio::test]
async fn derive_puts_one_request_id_in_one_trace_across_relays_without_a_store() {
    let s = Setup::new("corr-derive").await;
    let config = format!("policy = \"derive\"\nkey = \"{KEY}\"");
    let (one, two) = (common::unique("D1"), common::unique("D2"));

    // Two relays started separately, sharing nothing: each its own group,
    // its own (empty) memory store.
    let first = s.relay(&common::unique("first"), &config).await;
    s.send_uninstrumented(Some(&one), "1").await;
    s.receive(1).await;
    assert!(first.shutdown().await);
    let second = s.relay(&common::unique("second"), &config).await;
    // The second relay's group reads the topic from the start: `1` again,
    // then `1` and `2` sent now.
    s.send_uninstrumented(Some(&one), "1 again").await;
    s.send_uninstrumented(Some(&two), "2").await;
    s.receive(3).await;
    assert!(second.shutdown().await);

    let spans = s.relay_spans();
    let traces_of = |id: &str| -> Vec<TraceId> {
        spans
            .iter()
            .filter(|sp| attr(sp, CONVERSATION) == Some(Value::from(id.to_owned())))
            .map(trace_id)
            .collect()
    };
    let first_id = traces_of(&one);
    assert_eq!(first_id.len(), 3, "{spans:#?}");
    assert!(
        first_id.iter().all(|t| *t == derived(&one)),
        "one trace for {one} in both relays"
    );
    assert_eq!(traces_of(&two), [derived(&two)]);
    assert_ne!(derived(&one), derived(&two));
    s.finish().await;
}

#[tokio::test]
async fn after_the_ttl_a_message_falls_back_as_configured() {
    let s = Setup::new("corr-ttl").await;
    let relay = s
        .relay(
            &format!("{}-g", s.topic),
            &format!("policy = \"join\"\nfallback = \"derive\"\nkey = \"{KEY}\"\nttl = \"300ms\""),
        )
        .await;
    let request = common::unique("T");
    s.send_instrumented(&request, "A").await;
    s.receive(1).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    s.send_uninstrumented(Some(&request), "B").await;
    s.receive(1).await;
    let stats = relay.stats()[0].1.clone();
    assert!(relay.shutdown().await);

    let b = s.relay_span("derived");
    assert_eq!(trace_id(&b), derived(&request));
    assert_eq!(
        attr(&b, "tracebridge.correlation.fallback"),
        Some(true.into())
    );
    assert_eq!(
        (stats.correlation.hits.get(), stats.correlation.misses.get()),
        (0, 1)
    );
    s.finish().await;
}

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

#[tokio::test]
async fn relays_sharing_redis_join_each_others_messages() {
    let s = Setup::new("corr-redis").await;
    let group = format!("{}-shared", s.topic);
    let config = format!(
        "policy = \"join\"\nfallback = \"root\"\nstore = \"{}\"\nttl = \"1m\"",
        redis_url()
    );
    let request = common::unique("S");

    // One consumer group; relay 1 alone takes A, then relay 2 alone takes B.
    let first = s.relay(&group, &config).await;
    s.send_instrumented(&request, "A").await;
    s.receive(1).await;
    assert!(first.shutdown().await);
    let second = s.relay(&group, &config).await;
    s.send_uninstrumented(Some(&request), "B").await;
    assert_eq!(
        s.receive(1).await,
        ["B"],
        "relay 2 did not re-read A: the group committed it"
    );
    let stats = second.stats()[0].1.clone();
    assert!(second.shutdown().await);

    let origin = s.cap.one(&format!("send {}", s.topic));
    let b = s.relay_span("joined");
    assert_eq!(trace_id(&b), trace_id(&origin), "joined through Redis");
    assert_eq!(b.parent_span_id, span_id(&origin));
    assert_eq!(
        (
            stats.correlation.hits.get(),
            stats.correlation.store_errors.get()
        ),
        (1, 0)
    );
    s.finish().await;
}

/// A redis-server of the test's own on a free port (never the machine's).
struct OwnRedis {
    child: std::process::Child,
    port: u16,
}

impl OwnRedis {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/brokers.sh up installs it)");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, port }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test]
async fn a_redis_outage_degrades_to_the_fallback_and_messages_keep_flowing() {
    let mut redis = OwnRedis::start();
    let s = Setup::new("corr-outage").await;
    let relay = s
        .relay(
            &format!("{}-g", s.topic),
            &format!(
                "policy = \"join\"\nfallback = \"derive\"\nkey = \"{KEY}\"\nstore = \"redis://127.0.0.1:{}\"\nstore_timeout = \"200ms\"",
                redis.port
            ),
        )
        .await;
    let request = common::unique("O");
    s.send_instrumented(&request, "A").await;
    s.receive(1).await;
    redis.stop();
    s.send_uninstrumented(Some(&request), "B").await;
    s.send_uninstrumented(Some(&request), "C").await;
    assert_eq!(
        s.receive(2).await,
        ["B", "C"],
        "relayed while Redis is down"
    );
    let stats = relay.stats()[0].1.clone();
    let (status, body) = common::http_get(relay.listen_addr(), "/readyz").await;
    let (_, metrics) = common::http_get(relay.listen_addr(), "/metrics").await;
    assert!(relay.shutdown().await);

    assert_eq!(status, 200, "still ready: {body}");
    assert_eq!(stats.published.get(), 3);
    assert!(
        stats.correlation.store_errors.get() >= 2,
        "{}",
        stats.correlation.store_errors.get()
    );
    assert!(
        metrics.lines().any(|l| l
            .starts_with("tracebridge_correlation_store_errors_total{route=\"legacy\"} ")
            && !l.ends_with(" 0")),
        "{metrics}"
    );
    for outcome in ["derived"] {
        let spans: Vec<_> = s
            .relay_spans()
            .into_iter()
            .filter(|sp| attr(sp, OUTCOME) == Some(Value::from(outcome)))
            .collect();
        assert_eq!(spans.len(), 2);
        for span in spans {
            assert_eq!(trace_id(&span), derived(&request));
            let error = attr(&span, "tracebridge.correlation.store_error")
                .expect("the store error on the span");
            assert!(
                error
                    .as_str()
                    .contains(&format!("127.0.0.1:{}", redis.port)),
                "{error}"
            );
        }
    }
    s.finish().await;
}

#[tokio::test]
async fn the_memory_store_size_is_a_metric() {
    let s = Setup::new("corr-size").await;
    let relay = s.relay(&format!("{}-g", s.topic), "max_entries = 10").await;
    for i in 0..3 {
        s.send_instrumented(&format!("{}-{i}", s.topic), "A").await;
    }
    s.receive(3).await;
    let (_, metrics) = common::http_get(relay.listen_addr(), "/metrics").await;
    assert!(relay.shutdown().await);
    assert!(
        metrics
            .lines()
            .any(|l| l == "tracebridge_correlation_store_entries{store=\"memory-0\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l == "tracebridge_correlation_recorded_total{route=\"legacy\"} 3"),
        "{metrics}"
    );
    s.finish().await;
}

#[tokio::test]
async fn amqp_to_kafka_joins_by_the_correlation_id_property() {
    use lapin::BasicProperties;
    use lapin::options::BasicPublishOptions;

    let s = Setup::new("corr-a2k").await;
    let relay = s
        .start(&format!(
            r#"[[route]]
name = "a2k"
from = {{ amqp = "r", queue = "{}" }}
to = {{ kafka = "k", topic = "{}" }}

[route.correlation]
request_id = ["correlation_id"]
policy = "join"
"#,
            s.rabbit.queue, s.topic
        ))
        .await;
    let stats = relay.stats()[0].1.clone();
    let request = common::unique("C");

    let publisher = common::traced::amqp_channel(&s.rabbit.conn, s.cap.instrumentation()).await;
    let confirmation = publisher
        .basic_publish(
            s.rabbit.exchange.as_str().into(),
            ROUTING_KEY.into(),
            BasicPublishOptions::default(),
            b"A",
            BasicProperties::default().with_correlation_id(request.as_str().into()),
        )
        .await
        .expect("published")
        .await
        .expect("confirmed");
    assert!(confirmation.is_ack(), "{confirmation:?}");
    wait_for(|| stats.published.get() == 1).await;

    // The legacy side: plain lapin, only the correlation_id property.
    let channel = s.rabbit.conn.create_channel().await.expect("channel");
    channel
        .basic_publish(
            s.rabbit.exchange.as_str().into(),
            ROUTING_KEY.into(),
            BasicPublishOptions::default(),
            b"B",
            BasicProperties::default().with_correlation_id(request.as_str().into()),
        )
        .await
        .expect("published");
    wait_for(|| stats.published.get() == 2).await;
    assert!(relay.shutdown().await);

    let origin = s
        .cap
        .one(&format!("publish {}:{ROUTING_KEY}", s.rabbit.exchange));
    let relay_name = format!(
        "process {}:{ROUTING_KEY}:{}",
        s.rabbit.exchange, s.rabbit.queue
    );
    let joined: Vec<SpanData> = s
        .cap
        .named(&relay_name)
        .into_iter()
        .filter(|sp| attr(sp, OUTCOME) == Some(Value::from("joined")))
        .collect();
    assert_eq!(joined.len(), 1, "{:#?}", s.cap.named(&relay_name));
    assert_eq!(trace_id(&joined[0]), trace_id(&origin));
    assert_eq!(joined[0].parent_span_id, span_id(&origin));
    assert_eq!(attr(&joined[0], CONVERSATION), Some(Value::from(request)));
    s.finish().await;
}

async fn wait_for(mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + WAIT;
    while !done() {
        assert!(std::time::Instant::now() < deadline, "not within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
