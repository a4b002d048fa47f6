//! The relay records only the messaging metrics its config names
//! (`[telemetry] metrics`): the others cost nothing and never reach the
//! meter provider.
#![cfg(all(feature = "kafka", feature = "amqp"))]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::spans;
use rdkafka::producer::FutureRecord;
use tracebridge::MessagingMetric;
use tracebridge::relay::Relay;

#[tokio::test]
async fn only_the_metrics_named_are_recorded() {
    let from = common::unique("metrics-in");
    let to = common::unique("metrics-out");
    common::kafka::create_topic(&from, 1).await;
    common::kafka::create_topic(&to, 1).await;
    let cap = spans::capture();
    let mut config = common::relay_config(&format!(
        r#"[[route]]
name = "k2k"
from = {{ kafka = "k", topic = "{from}", group = "{from}-relay" }}
to = {{ kafka = "k", topic = "{to}" }}"#
    ));
    config.metrics = vec![MessagingMetric::SentMessages];
    let relay = Relay::start(config, cap.instrumentation())
        .await
        .expect("relay starts");
    common::kafka::producer()
        .send(
            FutureRecord::<str, str>::to(&from).key("k").payload("p"),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .expect("delivered");
    let stats = relay.stats()[0].1.clone();
    common::within("the relayed message", async {
        while stats.published.get() < 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(relay.shutdown().await);
    cap.meters.force_flush().expect("flush");
    let names: BTreeSet<String> = cap
        .metrics
        .get_finished_metrics()
        .expect("metrics")
        .iter()
        .flat_map(|rm| rm.scope_metrics())
        .flat_map(|sm| sm.metrics())
        .map(|m| m.name().to_owned())
        .collect();
    assert_eq!(
        names,
        BTreeSet::from(["messaging.client.sent.messages".to_owned()]),
        "only the metric named"
    );
}
