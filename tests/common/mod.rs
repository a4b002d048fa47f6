//! Shared test harness: broker addresses from the environment (local
//! defaults), unique names, topic creation, and connection checks that FAIL
//! with instructions instead of skipping.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

pub mod flow;
pub mod raw_amqp;
pub mod traced;

/// `KAFKA_BOOTSTRAP_SERVERS`, default the local Apache Kafka.
pub fn kafka_bootstrap() -> String {
    std::env::var("KAFKA_BOOTSTRAP_SERVERS")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "127.0.0.1:9092".to_owned())
}

/// `AMQP_URL`, default the local RabbitMQ.
pub fn amqp_url() -> String {
    std::env::var("AMQP_URL")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// A name no other test (or earlier run) uses.
/// Messages per scenario of the sampling measurements
/// (`TRACEBRIDGE_SAMPLING_FLOW_MESSAGES`), `default` when unset.
#[allow(dead_code)] // only the sampling tests measure at a chosen size
pub fn sampling_messages(default: usize) -> usize {
    std::env::var("TRACEBRIDGE_SAMPLING_FLOW_MESSAGES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

pub fn unique(prefix: &str) -> String {
    format!("tb-{prefix}-{}", uuid::Uuid::new_v4().simple())
}

const BROKERS_HINT: &str = "start the test brokers with `scripts/brokers.sh up` \
     (or point KAFKA_BOOTSTRAP_SERVERS / AMQP_URL at running ones)";

#[cfg(feature = "kafka")]
pub mod kafka {
    use super::*;
    use rdkafka::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::producer::FutureProducer;

    /// A record's header `name` as text (lossy), when present.
    #[allow(dead_code)] // not every test binary reads headers this way
    pub fn header_text(record: &impl rdkafka::Message, name: &str) -> Option<String> {
        use rdkafka::message::Headers as _;
        record.headers().and_then(|h| {
            h.iter()
                .find(|h| h.key == name)
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        })
    }

    /// Client config pointing at the test broker.
    pub fn config() -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", kafka_bootstrap());
        config
    }

    pub fn producer() -> FutureProducer {
        config()
            .set("message.timeout.ms", "10000")
            .create()
            .expect("creating a Kafka producer")
    }

    /// A consumer in a fresh group that reads from the beginning.
    pub fn consumer(group: &str) -> rdkafka::consumer::StreamConsumer {
        config()
            .set("group.id", group)
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .set("session.timeout.ms", "6000")
            .create()
            .expect("creating a Kafka consumer")
    }

    /// Fails the test, saying how to start a broker, when none answers.
    pub fn require_broker() {
        let probe: BaseConsumer = config().create().expect("creating a Kafka client");
        if let Err(err) = probe.fetch_metadata(None, Duration::from_secs(10)) {
            panic!(
                "no Kafka broker answers at {} ({err}); {BROKERS_HINT}",
                kafka_bootstrap()
            );
        }
    }

    /// Creates a topic on the test broker (its default replication factor;
    /// the test broker, like most production clusters, creates no topic on
    /// first use).
    pub async fn create_topic(name: &str, partitions: i32) {
        require_broker();
        create_topic_at(&kafka_bootstrap(), name, partitions).await;
    }

    /// Creates a topic on the cluster at `bootstrap`.
    pub async fn create_topic_at(bootstrap: &str, name: &str, partitions: i32) {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", bootstrap);
        tracebridge::kafka::create_topic(&config, name, partitions)
            .await
            .unwrap_or_else(|e| panic!("creating topic {name} at {bootstrap}: {e}"));
    }
}

#[cfg(feature = "amqp")]
pub mod amqp {
    use super::*;
    use lapin::{Connection, ConnectionProperties};

    /// Connects to the test RabbitMQ, retrying briefly; fails the test with
    /// instructions when it does not answer.
    pub async fn connect() -> Connection {
        let url = amqp_url();
        let mut last_error = None;
        for attempt in 0..5u32 {
            match Connection::connect(&url, ConnectionProperties::default()).await {
                Ok(conn) => return conn,
                Err(err) => {
                    last_error = Some(err);
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt + 1))).await;
                }
            }
        }
        panic!(
            "no RabbitMQ answers at {} ({}); {BROKERS_HINT}",
            tracebridge::relay::config::redact_url(&url),
            last_error.map(|e| e.to_string()).unwrap_or_default()
        );
    }

    /// A connection, a channel, and a direct exchange bound to a queue with
    /// routing key `rk`, all uniquely named; [`Rabbit::delete`] removes them.
    pub struct Rabbit {
        pub conn: Connection,
        pub channel: lapin::Channel,
        pub exchange: String,
        pub queue: String,
    }

    pub const ROUTING_KEY: &str = "rk";

    impl Rabbit {
        pub async fn new(prefix: &str) -> Self {
            Self::declare(prefix, false).await
        }

        /// Like [`Rabbit::new`], but the exchange, queue and binding survive
        /// a broker restart (`rabbitmqctl stop_app` / `start_app`).
        pub async fn durable(prefix: &str) -> Self {
            Self::declare(prefix, true).await
        }

        async fn declare(prefix: &str, durable: bool) -> Self {
            use lapin::ExchangeKind;
            use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
            use lapin::types::FieldTable;
            let conn = connect().await;
            let channel = conn.create_channel().await.expect("channel");
            let exchange = unique(&format!("{prefix}-x"));
            let queue = unique(&format!("{prefix}-q"));
            channel
                .exchange_declare(
                    exchange.as_str().into(),
                    ExchangeKind::Direct,
                    ExchangeDeclareOptions {
                        durable,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await
                .expect("declare exchange");
            channel
                .queue_declare(
                    queue.as_str().into(),
                    QueueDeclareOptions {
                        durable,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await
                .expect("declare queue");
            channel
                .queue_bind(
                    queue.as_str().into(),
                    exchange.as_str().into(),
                    ROUTING_KEY.into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .expect("bind queue");
            Self {
                conn,
                channel,
                exchange,
                queue,
            }
        }

        /// A new connection and channel, after the broker closed the old
        /// ones (a restart under the test).
        pub async fn reconnect(&mut self) {
            self.conn = connect().await;
            self.channel = self.conn.create_channel().await.expect("channel");
        }

        /// A lapin consumer on the queue, on its own channel.
        pub async fn consumer(&self) -> lapin::Consumer {
            use lapin::options::{BasicConsumeOptions, BasicQosOptions};
            use lapin::types::FieldTable;
            let channel = self.conn.create_channel().await.expect("channel");
            channel
                .basic_qos(100, BasicQosOptions::default())
                .await
                .expect("qos");
            channel
                .basic_consume(
                    self.queue.as_str().into(),
                    unique("tag").as_str().into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .expect("consume")
        }

        /// The next message in the queue (`basic.get`, acked), waiting up
        /// to a minute for one.
        #[allow(dead_code)] // not every test binary reads a queue this way
        pub async fn get_one(&self) -> lapin::message::BasicGetMessage {
            use lapin::options::BasicGetOptions;
            let started = std::time::Instant::now();
            loop {
                if let Some(message) = self
                    .channel
                    .basic_get(self.queue.as_str().into(), BasicGetOptions { no_ack: true })
                    .await
                    .expect("basic.get")
                {
                    return message;
                }
                assert!(
                    started.elapsed() < std::time::Duration::from_secs(60),
                    "nothing arrived in {} within a minute",
                    self.queue
                );
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }

        pub async fn delete(self) {
            use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
            let _ = self
                .channel
                .queue_delete(self.queue.as_str().into(), QueueDeleteOptions::default())
                .await;
            let _ = self
                .channel
                .exchange_delete(
                    self.exchange.as_str().into(),
                    ExchangeDeleteOptions::default(),
                )
                .await;
            let _ = self.conn.close(200, "test done".into()).await;
        }
    }
}

/// Span capture for assertions: a provider with a synchronous in-memory
/// exporter, so a span is visible as soon as it ends.
pub mod spans {
    use opentelemetry::Value;
    use opentelemetry::trace::{SpanId, TraceId};
    use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
    use tracebridge::Instrumentation;

    pub struct Capture {
        pub exporter: InMemorySpanExporter,
        pub provider: SdkTracerProvider,
        pub metrics: InMemoryMetricExporter,
        pub meters: SdkMeterProvider,
    }

    pub fn capture() -> Capture {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let metrics = InMemoryMetricExporter::default();
        let meters = SdkMeterProvider::builder()
            .with_reader(PeriodicReader::builder(metrics.clone()).build())
            .build();
        Capture {
            exporter,
            provider,
            metrics,
            meters,
        }
    }

    impl Capture {
        /// The default conventions; keys and request ids recorded as is,
        /// so a span's whole attribute set can be asserted (the default
        /// policy leaves them out: tests/attribute_policy.rs).
        pub fn instrumentation(&self) -> Instrumentation {
            Instrumentation::new(&self.provider, Some(&self.meters))
                .with_attribute_policy(tracebridge::semconv::AttributePolicy::record_all())
        }

        /// How many values the f64 histogram `name` recorded, summed over
        /// its data points.
        pub fn histogram_count(&self, name: &str) -> u64 {
            use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
            self.meters.force_flush().expect("flush metrics");
            let mut count = 0;
            for rm in self.metrics.get_finished_metrics().expect("metrics") {
                for sm in rm.scope_metrics() {
                    for metric in sm.metrics().filter(|m| m.name() == name) {
                        if let AggregatedMetrics::F64(MetricData::Histogram(h)) = metric.data() {
                            count = h.data_points().map(|dp| dp.count()).sum::<u64>().max(count);
                        }
                    }
                }
            }
            count
        }

        pub fn spans(&self) -> Vec<SpanData> {
            self.exporter.get_finished_spans().expect("finished spans")
        }

        /// Every finished span with this name.
        pub fn named(&self, name: &str) -> Vec<SpanData> {
            self.spans()
                .into_iter()
                .filter(|s| s.name == name)
                .collect()
        }

        /// The one finished span with this name.
        pub fn one(&self, name: &str) -> SpanData {
            let mut found = self.named(name);
            assert_eq!(
                found.len(),
                1,
                "expected exactly one span {name:?}, have: {:?}",
                self.spans()
                    .iter()
                    .map(|s| s.name.to_string())
                    .collect::<Vec<_>>()
            );
            found.remove(0)
        }
    }

    pub fn attr(span: &SpanData, key: &str) -> Option<Value> {
        span.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value.clone())
    }

    pub fn trace_id(span: &SpanData) -> TraceId {
        span.span_context.trace_id()
    }

    pub fn span_id(span: &SpanData) -> SpanId {
        span.span_context.span_id()
    }
}

/// Host and port the tests expect in `server.address` / `server.port`.
pub fn kafka_server() -> (String, i64) {
    let endpoint = tracebridge::semconv::Endpoint::from_servers(&kafka_bootstrap(), None);
    (
        endpoint.address.expect("a host").to_string(),
        i64::from(endpoint.port.expect("a port")),
    )
}

/// A log writer for `TelemetryBuilder::with_log_writer` that keeps what was
/// written, for assertions on JSON log lines.
#[derive(Clone, Default)]
pub struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Captured {
    pub fn bytes(&self) -> Vec<u8> {
        self.0.lock().unwrap().clone()
    }

    /// Every line, parsed as JSON.
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        String::from_utf8(self.bytes())
            .expect("UTF-8 logs")
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("log line {l:?}: {e}")))
            .collect()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Every span in an OTLP/JSON lines file, each with `_service` added
/// (the resource's `service.name`).
pub fn read_span_file(path: &std::path::Path) -> Vec<serde_json::Value> {
    use serde_json::Value;
    let text = std::fs::read_to_string(path).expect("span file written");
    let mut out = Vec::new();
    for line in text.lines() {
        let request: Value = serde_json::from_str(line).expect("each line is JSON");
        for rs in request["resourceSpans"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let service = rs["resource"]["attributes"]
                .as_array()
                .and_then(|attrs| attrs.iter().find(|kv| kv["key"] == "service.name"))
                .map(|kv| kv["value"]["stringValue"].clone())
                .unwrap_or(Value::Null);
            for ss in rs["scopeSpans"].as_array().cloned().unwrap_or_default() {
                for mut span in ss["spans"].as_array().cloned().unwrap_or_default() {
                    span["_service"] = service.clone();
                    out.push(span);
                }
            }
        }
    }
    out
}

/// A GET on the relay's HTTP endpoint: status and body.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    try_http_get(addr, path)
        .await
        .unwrap_or_else(|e| panic!("GET http://{addr}{path}: {e}"))
}

/// [`http_get`] that reports a relay not (yet) listening as an error.
pub async fn try_http_get(
    addr: std::net::SocketAddr,
    path: &str,
) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: relay\r\n\r\n").as_bytes())
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// A relay configuration with `routes` against the test brokers, named
/// `k` (Kafka) and `r` (AMQP); health and metrics on a free port.
#[cfg(all(feature = "kafka", feature = "amqp"))]
pub fn relay_config(routes: &str) -> tracebridge::relay::RelayConfig {
    let text = format!(
        r#"
[relay]
listen = "127.0.0.1:0"
max_in_flight = 64
shutdown_timeout = "10s"

[kafka.k]
bootstrap_servers = "{}"

[amqp.r]
url = "{}"

# The tests assert keys and request ids on the relay's spans; the default
# leaves both out (tests/attribute_policy.rs checks each mode).
[telemetry]
record_message_keys = "as-is"
record_request_ids = "as-is"

{routes}
"#,
        kafka_bootstrap(),
        amqp_url()
    );
    tracebridge::relay::RelayConfig::parse(&text, "test.toml", |_| None)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// How long a test waits for something a broker should do at once.
#[allow(dead_code)] // not every test binary waits
pub const WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// `fut`, or a panic naming `what` after [`WAIT`].
#[allow(dead_code)]
pub async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("{what} did not happen within {WAIT:?}"))
}
