//! RabbitMQ closes every connection (as a restart or a network cut would):
//! the relay reconnects its AMQP source and sink with backoff and goes on,
//! and the messages sent after the cut arrive in their traces.
#![cfg(all(feature = "kafka", feature = "amqp"))]

mod common;

use std::time::Duration;

use common::amqp::{ROUTING_KEY, Rabbit};
use common::spans::{self, trace_id};
use rdkafka::consumer::Consumer;
use rdkafka::producer::FutureRecord;
use tracebridge::kafka::ConsumerTracing;
use tracebridge::relay::{Relay, RelayConfig};

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_reconnects_its_amqp_source_and_sink_after_the_broker_drops_them() {
    // Closing connections needs the broker's own CLI on this machine: a
    // test that cannot run fails, it never passes without running.
    common::flow::require_local_rabbitmq("relay_reconnect");
    let topic_in = common::unique("rc-in");
    let topic_out = common::unique("rc-out");
    common::kafka::create_topic(&topic_in, 1).await;
    common::kafka::create_topic(&topic_out, 1).await;
    let rabbit = Rabbit::new("rc").await;
    let queue_in = rabbit.queue.clone();
    let text = format!(
        r#"[relay]
listen = "127.0.0.1:0"
[kafka.k]
bootstrap_servers = "{k}"
[amqp.r]
url = "{a}"
[[route]]
name = "to-amqp"
from = {{ kafka = "k", topic = "{topic_in}" }}
to = {{ amqp = "r", exchange = "{x}", routing_key = "{ROUTING_KEY}" }}
retry = {{ attempts = 10, backoff = "100ms" }}
[[route]]
name = "to-kafka"
from = {{ amqp = "r", queue = "{q}" }}
to = {{ kafka = "k", topic = "{topic_out}" }}
"#,
        k = common::kafka_bootstrap(),
        a = common::amqp_url(),
        x = rabbit.exchange,
        q = queue_in,
    );
    let cap = spans::capture();
    let relay = Relay::start(
        RelayConfig::parse(&text, "t", |_| None).unwrap(),
        cap.instrumentation(),
    )
    .await
    .expect("relay starts");

    // The AMQP source route consumes its own queue; the Kafka -> AMQP route
    // publishes into the same exchange, so a message goes Kafka -> AMQP ->
    // Kafka through both routes: both the AMQP sink and source are used.
    let producer = common::traced::kafka_producer(cap.instrumentation());
    let mut config = common::kafka::config();
    config
        .set("group.id", common::unique("rc"))
        .set("auto.offset.reset", "earliest");
    let out: rdkafka::consumer::StreamConsumer = config.create().expect("consumer");
    out.subscribe(&[&topic_out]).expect("subscribe");
    let tracing = ConsumerTracing::default().with_instrumentation(cap.instrumentation());

    for round in ["before", "after"] {
        if round == "after" {
            common::flow::rabbitmqctl(&["close_all_connections", "tracebridge reconnect test"]);
        }
        producer
            .send(
                FutureRecord::to(&topic_in).key(round).payload(round),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("delivered");
        let message = tokio::time::timeout(WAIT, out.recv())
            .await
            .unwrap_or_else(|_| panic!("the {round} message did not come through within {WAIT:?}"))
            .expect("received");
        let key = tracing
            .process(&out, &message, async {
                Ok::<_, std::convert::Infallible>(
                    rdkafka::Message::key(&message).map(<[u8]>::to_vec),
                )
            })
            .await
            .unwrap_or_else(|never| match never {});
        assert_eq!(key.as_deref(), Some(round.as_bytes()));
    }
    // Source and sink are back: every route ready again (the sink was
    // marked down while it reconnected).
    for (route, stats) in relay.stats() {
        assert!(stats.is_ready(), "{route} ready after reconnecting");
    }
    assert_eq!(
        common::http_get(relay.listen_addr(), "/readyz").await,
        (200, "ready\n".to_owned())
    );
    assert!(relay.shutdown().await, "drained");

    // Both messages are each one trace from the origin send to the end.
    let sends = cap.named(&format!("send {topic_in}"));
    let ends = cap.named(&format!("process {topic_out}"));
    assert_eq!((sends.len(), ends.len()), (2, 2));
    for end in &ends {
        assert!(
            sends.iter().any(|s| trace_id(s) == trace_id(end)),
            "end-to-end trace kept"
        );
    }
    // The test's own connections were closed too: reconnect to clean up.
    let cleanup = Rabbit::new("rc-cleanup").await;
    for queue in [&rabbit.queue, &cleanup.queue] {
        let _ = cleanup
            .channel
            .queue_delete(queue.as_str().into(), Default::default())
            .await;
    }
    for exchange in [&rabbit.exchange, &cleanup.exchange] {
        let _ = cleanup
            .channel
            .exchange_delete(exchange.as_str().into(), Default::default())
            .await;
    }
}
