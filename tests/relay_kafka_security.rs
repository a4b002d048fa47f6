//! Kafka over TLS and SASL/SCRAM, against a real broker with those
//! listeners (`scripts/brokers.sh kafka-secure up`: a node of its own, a
//! test CA, a SCRAM-SHA-512 user): the relay reads over TLS and writes over
//! SASL_SSL, reads over SASL_PLAINTEXT and writes over TLS, every message
//! in its origin trace; a wrong SCRAM password leaves the route not ready,
//! says why in the log, and never prints the password.
#![cfg(feature = "kafka")]

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::flow::{
    RelayProcess, Seen, Tally, Until, brokers_script, drain_kafka, kafka_reader, relay_file,
    send_kafka,
};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};

/// What `scripts/brokers.sh kafka-secure up` prints: listener addresses,
/// the CA file, the SCRAM user and password. Started once for the tests
/// of this file (they run at the same time).
fn secure_node() -> HashMap<String, String> {
    static NODE: std::sync::OnceLock<HashMap<String, String>> = std::sync::OnceLock::new();
    NODE.get_or_init(|| {
        brokers_script(&["kafka-secure", "up"])
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    })
    .clone()
}

async fn create_topics(bootstrap: &str, topics: &[&str]) {
    let admin: AdminClient<_> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin");
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| NewTopic::new(t, 1, TopicReplication::Fixed(1)))
        .collect();
    for result in admin
        .create_topics(&new, &AdminOptions::new())
        .await
        .expect("create topics")
    {
        result.expect("created");
    }
}

/// The `[kafka.NAME]` tables of the secure node's listeners.
fn clusters(node: &HashMap<String, String>, password: &str) -> String {
    let ca = &node["CA"];
    let user = &node["USER"];
    format!(
        r#"
[kafka.tls]
bootstrap_servers = "{ssl}"
properties = {{ "security.protocol" = "SSL", "ssl.ca.location" = "{ca}" }}

[kafka.scram_tls]
bootstrap_servers = "{sasl_ssl}"
properties = {{ "security.protocol" = "SASL_SSL", "ssl.ca.location" = "{ca}", "sasl.mechanism" = "SCRAM-SHA-512", "sasl.username" = "{user}", "sasl.password" = "{password}" }}

[kafka.scram]
bootstrap_servers = "{sasl}"
properties = {{ "security.protocol" = "SASL_PLAINTEXT", "sasl.mechanism" = "SCRAM-SHA-512", "sasl.username" = "{user}", "sasl.password" = "{password}" }}
"#,
        ssl = node["SSL"],
        sasl_ssl = node["SASL_SSL"],
        sasl = node["SASL_PLAINTEXT"],
    )
}

/// The relay process with `routes` (a window of 64); its folder lives as
/// long as the first value.
fn start_relay(routes: &str) -> (tempfile::TempDir, RelayProcess) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let port = common::flow::free_port();
    let config = relay_file(
        dir.path(),
        port,
        64,
        &common::kafka_bootstrap(),
        routes,
        common::flow::RECORD_ALL,
    );
    let relay = RelayProcess::start(&config, port, &dir.path().join("spans.jsonl"));
    (dir, relay)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_reads_and_writes_kafka_over_tls_and_scram() {
    let node = secure_node();
    let plain = node["PLAINTEXT"].clone();
    let [a, b, c, d] = ["sec-a", "sec-b", "sec-c", "sec-d"].map(common::unique);
    create_topics(&plain, &[&a, &b, &c, &d]).await;
    let routes = format!(
        r#"name = "tls-to-scram"
from = {{ kafka = "tls", topic = "{a}", group = "{a}-relay" }}
to = {{ kafka = "scram_tls", topic = "{b}" }}

[[route]]
name = "scram-to-tls"
from = {{ kafka = "scram", topic = "{c}", group = "{c}-relay" }}
to = {{ kafka = "tls", topic = "{d}" }}
{}"#,
        clusters(&node, &node["PASSWORD"])
    );
    let (_dir, relay) = start_relay(&routes);
    let mut origins = send_kafka(&plain, &a, 0, 20).await;
    let more = send_kafka(&plain, &c, 20, 20).await;
    let mut seen = Seen::new();
    drain_kafka(
        &kafka_reader(&plain, &b),
        &mut seen,
        20,
        Until::Arrived,
        Duration::from_secs(60),
    )
    .await;
    drain_kafka(
        &kafka_reader(&plain, &d),
        &mut seen,
        40,
        Until::Arrived,
        Duration::from_secs(60),
    )
    .await;
    let (status, body) = relay.readyz().await;
    relay.stop();
    origins.extend(more);
    Tally::of(&origins, &seen).assert_whole("TLS and SCRAM", 0);
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_scram_password_is_not_ready_says_why_and_is_never_printed() {
    const WRONG: &str = "Wr0ng-Scram-Pa55";
    let node = secure_node();
    let topic = common::unique("sec-wrong");
    create_topics(&node["PLAINTEXT"], &[&topic]).await;
    let routes = format!(
        r#"name = "wrong"
from = {{ kafka = "scram", topic = "{topic}", group = "{topic}-relay" }}
to = {{ kafka = "tls", topic = "{topic}-out" }}
{}"#,
        clusters(&node, WRONG)
    );
    let (_dir, relay) = start_relay(&routes);
    let started = Instant::now();
    let mut said = false;
    while started.elapsed() < Duration::from_secs(30) && !said {
        tokio::time::sleep(Duration::from_millis(500)).await;
        said = relay.log_lines().iter().any(|l| {
            l.contains("Authentication failed") || l.contains("SASL authentication error")
        });
    }
    let (status, body) = relay.readyz().await;
    let log = relay.log_lines().join("\n");
    relay.stop();
    assert!(said, "the log says the authentication failed:\n{log}");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("wrong (source holds no partition)"), "{body}");
    assert!(
        !log.contains(WRONG),
        "the password is never printed:\n{log}"
    );
}
