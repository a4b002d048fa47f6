//! The `tracebridge` binary as operators run it: `check` on broken configs,
//! and SIGTERM with messages in flight followed by a restart (SIGKILL is
//! `relay_sigkill.rs`).
#![cfg(all(feature = "kafka", feature = "amqp"))]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::amqp::Rabbit;
use common::flow::{
    BIN, RelayProcess, RelaySetup, Seen, Tally, Until, drain_amqp, kafka_to_amqp, send_kafka,
};

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write config");
    path
}

fn check(config: &Path) -> (bool, String) {
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(config)
        .output()
        .expect("run tracebridge check");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn check_reports_broken_configs_precisely_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let good = r#"[kafka.k]
bootstrap_servers = "127.0.0.1:9092"
[amqp.r]
url = "amqp://guest:guest@127.0.0.1:5672/%2f"
[[route]]
name = "r1"
from = { kafka = "k", topic = "t" }
to = { amqp = "r", exchange = "x" }
"#;
    let (ok, out) = check(&write(dir.path(), "good.toml", good));
    assert!(ok, "{out}");
    assert!(out.contains("valid, 1 route(s)"), "{out}");
    assert!(!out.contains("guest:guest"), "no secrets printed: {out}");

    let cases = [
        (
            "unknown.toml",
            good.replace("topic = \"t\"", "topik = \"t\""),
            ":7: unknown field `topik`",
        ),
        (
            "duration.toml",
            format!("[relay]\nshutdown_timeout = \"soon\"\n{good}"),
            ":2: invalid value: string \"soon\", expected a duration",
        ),
        (
            "reference.toml",
            good.replace("amqp = \"r\", exchange", "amqp = \"rabbit\", exchange"),
            ":8: route[0] (r1): to.amqp: no [amqp.rabbit] section is defined",
        ),
        (
            "env.toml",
            good.replace("guest:guest", "guest:${NOT_SET_ANYWHERE}"),
            ":4: environment variable NOT_SET_ANYWHERE is not set",
        ),
    ];
    for (name, text, expected) in cases {
        let path = write(dir.path(), name, &text);
        let (ok, out) = check(&path);
        assert!(!ok, "{name} must be rejected");
        assert!(
            out.contains(&format!("{}{expected}", path.display())),
            "{name}: expected {expected:?} in:\n{out}"
        );
    }
    // Properties that contradict the relay's guarantees, a route into its
    // own source, and librdkafka's own validation — all reported at once.
    let guarded = good
        .replace(
            "bootstrap_servers = \"127.0.0.1:9092\"",
            "bootstrap_servers = \"127.0.0.1:9092\"\nproperties = { \"enable.auto.commit\" = \"yes-please\", \"acks\" = \"0\", \"group.id\" = \"g\", \"enable.idempotence\" = \"false\", \"ssl.key.password\" = \"Pa55-w0rd-xyz\" }",
        )
        .replace(
            "to = { amqp = \"r\", exchange = \"x\" }",
            "to = { kafka = \"k\", topic = \"t\" }",
        );
    let path = write(dir.path(), "guarded.toml", &guarded);
    let (ok, out) = check(&path);
    assert!(!ok, "{out}");
    for expected in [
        "kafka.k.properties.\"enable.auto.commit\": `yes-please`: must stay false",
        "kafka.k.properties.\"acks\": `0`: must be `all`",
        "kafka.k.properties.\"group.id\": set the route's `from.group` instead",
        "kafka.k.properties.\"enable.idempotence\": `false`: must stay true",
        "kafka.k.properties.\"enable.auto.commit\": librdkafka rejects it",
        "route[0] (r1): to: writes to the route's own source",
    ] {
        assert!(out.contains(expected), "expected {expected:?} in:\n{out}");
    }
    assert!(
        !out.contains("Pa55-w0rd-xyz"),
        "the secret is never printed:\n{out}"
    );

    let (ok, out) = check(&dir.path().join("missing.toml"));
    assert!(!ok);
    assert!(out.contains("cannot read"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_messages_in_flight_exits_0_and_a_restart_duplicates_nothing() {
    const MESSAGES: usize = 2000;
    let bootstrap = common::kafka_bootstrap();
    let topic = common::unique("term");
    common::kafka::create_topic(&topic, 3).await;
    let rabbit = Rabbit::new("term").await;
    let origins = send_kafka(&bootstrap, &topic, 0, MESSAGES).await;
    let setup = RelaySetup::new(
        256,
        &bootstrap,
        &kafka_to_amqp("flow", &topic, &rabbit.exchange),
    );
    let wait = Duration::from_secs(120);
    let mut seen = Seen::new();

    let relay = setup.start();
    drain_amqp(
        &rabbit.channel,
        &rabbit.queue,
        &mut seen,
        1,
        Until::Arrived,
        wait,
    )
    .await;
    relay.stop();
    drain_amqp(
        &rabbit.channel,
        &rabbit.queue,
        &mut seen,
        MESSAGES,
        Until::Empty,
        wait,
    )
    .await;
    let first_run = seen.len();

    // A graceful stop drains and commits what it delivered: the second run
    // starts exactly where the first stopped.
    let relay = setup.start();
    drain_amqp(
        &rabbit.channel,
        &rabbit.queue,
        &mut seen,
        MESSAGES,
        Until::Arrived,
        wait,
    )
    .await;
    relay.stop();
    drain_amqp(
        &rabbit.channel,
        &rabbit.queue,
        &mut seen,
        usize::MAX,
        Until::Empty,
        wait,
    )
    .await;
    eprintln!("SIGTERM: the first run delivered {first_run}");
    Tally::of(&origins, &seen).assert_whole("SIGTERM then restart", 0);
    rabbit.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_never_answers_delays_sigterm_a_few_seconds_and_every_line_is_json() {
    // Accepts connections and never answers: the worst collector there is.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let collector = listener.local_addr().expect("address");
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    let bootstrap = common::kafka_bootstrap();
    let topic = common::unique("hang");
    common::kafka::create_topic(&topic, 1).await;
    let rabbit = Rabbit::new("hang").await;
    let origins = send_kafka(&bootstrap, &topic, 0, 50).await;
    let setup = RelaySetup::new(
        64,
        &bootstrap,
        &kafka_to_amqp("hang", &topic, &rabbit.exchange),
    );
    let endpoint = format!("http://{collector}");
    let relay = RelayProcess::start_with_env(
        &setup.config,
        setup.port,
        &setup.spans,
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str())],
    );
    let mut seen = Seen::new();
    let wait = Duration::from_secs(60);
    drain_amqp(
        &rabbit.channel,
        &rabbit.queue,
        &mut seen,
        50,
        Until::Arrived,
        wait,
    )
    .await;
    let stopping = std::time::Instant::now();
    let log = relay.log.clone();
    relay.stop();
    let took = stopping.elapsed();
    assert!(
        took < Duration::from_secs(8),
        "SIGTERM took {took:?} with a hanging collector"
    );
    Tally::of(&origins, &seen).assert_whole("hanging collector", 0);
    let text = std::fs::read_to_string(&log).expect("the relay's log");
    for line in text.lines() {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_ok_and(|v| v.is_object()),
            "a line the relay printed is not JSON: {line:?}"
        );
    }
    rabbit.delete().await;
}

/// Every property librdkafka itself marks sensitive, and an AMQP URL whose
/// user name is a token: `check` (valid or not, librdkafka's own errors
/// included) prints none of their values; a non-loopback `listen` is
/// warned about.
#[test]
fn check_never_prints_a_secret_and_warns_of_a_public_listen() {
    let dir = tempfile::tempdir().unwrap();
    let properties: Vec<String> = tracebridge::relay::config::KAFKA_SENSITIVE_PROPERTIES
        .iter()
        .enumerate()
        .map(|(i, name)| format!("\"{name}\" = \"SeCrEt-{i}-value\""))
        .collect();
    assert!(
        tracebridge::relay::config::KAFKA_SENSITIVE_PROPERTIES
            .iter()
            .all(|name| tracebridge::relay::config::is_secret_key(name)),
        "every sensitive property is a secret key"
    );
    let text = format!(
        r#"[relay]
listen = "0.0.0.0:9464"
[kafka.k]
bootstrap_servers = "127.0.0.1:9092"
properties = {{ {} }}
[amqp.r]
url = "amqp://SeCrEt-token-user:SeCrEt-password@127.0.0.1:5672/%2f"
[[route]]
name = "r1"
from = {{ kafka = "k", topic = "t" }}
to = {{ amqp = "r", exchange = "x", routing_key = "k" }}
"#,
        properties.join(", ")
    );
    let (_, out) = check(&write(dir.path(), "secrets.toml", &text));
    assert!(!out.contains("SeCrEt"), "a secret printed:\n{out}");
    assert!(
        out.contains("librdkafka rejects it"),
        "librdkafka's errors are in: {out}"
    );

    let public = "[relay]\nlisten = \"0.0.0.0:9464\"\n[kafka.k]\nbootstrap_servers = \"127.0.0.1:9092\"\n[[route]]\nname = \"r1\"\nfrom = { kafka = \"k\", topic = \"a\" }\nto = { kafka = \"k\", topic = \"b\" }\n";
    let (ok, out) = check(&write(dir.path(), "public.toml", public));
    assert!(ok, "{out}");
    assert!(
        out.contains("warning: [relay] listen = \"0.0.0.0:9464\" is not a loopback address"),
        "{out}"
    );
}
