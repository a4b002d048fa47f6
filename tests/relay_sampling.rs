//! Sampling that holds across the relay, against the real brokers: a
//! context that arrives with W3C Trace Context Level 2 flags and `ot`
//! members in `tracestate` leaves each hop (AMQP → Kafka → AMQP, the relay
//! under the specification's consistent sampler) with the random flag, the
//! sampled flag and every `ot` member as they arrived — sampled or not.
//! Before, the relay wrote `01` for the Java agent's `03` and `00` for an
//! unsampled `02`.
#![cfg(all(feature = "kafka", feature = "amqp"))]

mod common;

use std::time::Duration;

use common::amqp::{ROUTING_KEY, Rabbit};
use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracebridge::relay::Relay;
use tracebridge::sampling::ProbabilitySampler;

const WAIT: Duration = Duration::from_secs(60);
/// Every `ot` member a consistent sampler upstream may have written, and a
/// member of another vendor: all must arrive as they left.
const TRACESTATE: &str = "ot=th:0;rv:ffffffffffffff;x:y,vendor=1";

/// One message a flags byte: its trace id, sent as `…-{flags}`.
fn traceparent(flags: u8) -> (String, String) {
    let trace_id = format!("4bf92f3577b34da6a3ce929d0e0e47{flags:02x}");
    (
        trace_id.clone(),
        format!("00-{trace_id}-00f067aa0ba902b7-{flags:02x}"),
    )
}

fn long_string(table: &FieldTable, name: &str) -> Option<String> {
    match table.inner().get(&ShortString::from(name)) {
        Some(AMQPValue::LongString(value)) => Some(value.to_string()),
        _ => None,
    }
}

/// One route per `(name, rest)` from `topic` to a RabbitMQ queue of its
/// own, each in its own consumer group, `rest` the TOML after its `to`:
/// the relay's configuration, and the queues by route name.
async fn routes_from(
    topic: &str,
    routes: &[(&'static str, String)],
) -> (String, Vec<(&'static str, Rabbit)>) {
    let mut config = String::new();
    let mut queues = Vec::new();
    for (name, rest) in routes {
        let rabbit = Rabbit::new(name).await;
        config.push_str(&format!(
            r#"
[[route]]
name = "{name}"
from = {{ kafka = "k", topic = "{topic}", group = "{topic}-{name}" }}
to = {{ amqp = "r", exchange = "{exchange}", routing_key = "{ROUTING_KEY}" }}
{rest}
"#,
            exchange = rabbit.exchange,
        ));
        queues.push((*name, rabbit));
    }
    (config, queues)
}

/// The relay running `config` in-process, its spans decided by the
/// consistent sampler at 10 % (its own provider, as a relay process has).
async fn consistent_relay(config: tracebridge::relay::RelayConfig) -> Relay {
    let provider = SdkTracerProvider::builder()
        .with_sampler(ProbabilitySampler::new(0.1).expect("ratio"))
        .build();
    Relay::start(
        config,
        tracebridge::Instrumentation::from_sdk(&provider, None),
    )
    .await
    .expect("relay starts")
}

/// Sends one record to `topic` with these headers, as an uninstrumented
/// producer would.
async fn send_raw(
    producer: &rdkafka::producer::FutureProducer,
    topic: &str,
    payload: &str,
    headers: &[(&str, &str)],
) {
    let headers = headers.iter().fold(
        rdkafka::message::OwnedHeaders::new(),
        |all, (key, value)| {
            all.insert(rdkafka::message::Header {
                key,
                value: Some(value.as_bytes()),
            })
        },
    );
    producer
        .send(
            rdkafka::producer::FutureRecord::<(), _>::to(topic)
                .payload(payload)
                .headers(headers),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .expect("delivered");
}

/// What a hop wrote: the `traceparent` and `tracestate` it sent on.
/// Returns the flags the message arrived with (its trace id's last byte).
fn check_hop(hop: &str, traceparent: Option<String>, tracestate: Option<String>) -> u8 {
    let traceparent = traceparent.unwrap_or_else(|| panic!("{hop}: no traceparent"));
    let flags = u8::from_str_radix(&traceparent[33..35], 16).expect("hex");
    let (trace_id, _) = self::traceparent(flags);
    assert_eq!(&traceparent[3..35], trace_id, "{hop}: one trace");
    assert_eq!(
        &traceparent[53..],
        format!("{:02x}", flags & 0x03),
        "{hop}: flags {flags:02x} arrived, {traceparent} left (sampled and random as they came, \
         undefined bits zero)"
    );
    let tracestate = tracestate.unwrap_or_else(|| panic!("{hop}: no tracestate"));
    for member in ["th:0", "rv:ffffffffffffff", "x:y", "vendor=1"] {
        assert!(
            tracestate.contains(member),
            "{hop}: {member} lost from {tracestate}"
        );
    }
    flags
}

#[tokio::test]
async fn level_2_flags_and_ot_members_survive_amqp_kafka_amqp() {
    let source = Rabbit::new("l2-src").await;
    let back = Rabbit::new("l2-back").await;
    let topic = common::unique("l2");
    common::kafka::create_topic(&topic, 1).await;
    let relay = consistent_relay(common::relay_config(&format!(
        r#"[[route]]
name = "out"
from = {{ amqp = "r", queue = "{source_queue}" }}
to = {{ kafka = "k", topic = "{topic}" }}

[[route]]
name = "back"
from = {{ kafka = "k", topic = "{topic}", group = "{topic}-relay" }}
to = {{ amqp = "r", exchange = "{back_exchange}", routing_key = "{ROUTING_KEY}" }}"#,
        source_queue = source.queue,
        back_exchange = back.exchange,
    )))
    .await;

    // 03: the Java agent's sampled-and-random; 02: random, not sampled;
    // 01 and 00: Level 1 peers; ff: undefined bits set.
    let all_flags = [0x03u8, 0x02, 0x01, 0x00, 0xff];
    for flags in all_flags {
        let (_, traceparent) = traceparent(flags);
        let mut headers = FieldTable::default();
        headers.insert(
            "traceparent".into(),
            AMQPValue::LongString(traceparent.into()),
        );
        headers.insert(
            "tracestate".into(),
            AMQPValue::LongString(TRACESTATE.into()),
        );
        source
            .channel
            .basic_publish(
                source.exchange.as_str().into(),
                ROUTING_KEY.into(),
                BasicPublishOptions::default(),
                b"{}",
                BasicProperties::default().with_headers(headers),
            )
            .await
            .expect("published")
            .await
            .expect("routed");
    }

    let reader = common::flow::kafka_reader(&common::kafka_bootstrap(), &topic);
    let mut seen = Vec::new();
    for _ in all_flags {
        let record = tokio::time::timeout(WAIT, reader.recv())
            .await
            .expect("a record in time")
            .expect("a record");
        let header = |name: &str| common::kafka::header_text(&record, name);
        seen.push(check_hop(
            "AMQP → Kafka",
            header("traceparent"),
            header("tracestate"),
        ));
    }
    for _ in all_flags {
        let message = back.get_one().await;
        let headers = message
            .delivery
            .properties
            .headers()
            .clone()
            .unwrap_or_default();
        seen.push(check_hop(
            "Kafka → AMQP",
            long_string(&headers, "traceparent"),
            long_string(&headers, "tracestate"),
        ));
    }
    seen.sort_unstable();
    let mut expected: Vec<u8> = all_flags.iter().chain(&all_flags).copied().collect();
    expected.sort_unstable();
    assert_eq!(seen, expected, "each message once at each hop");
    assert!(relay.shutdown().await, "drained");
    for rabbit in [source, back] {
        rabbit.delete().await;
    }
}

/// The relay in `link` mode under the consistent sampler at 10 %: each new
/// trace is kept exactly when the message's context was sampled, so no
/// kept trace links to a dropped one and no dropped trace to a kept one.
/// The same route with `link_sampling = false` is the control: decided by
/// the ratio, about half the traces disagree with their links.
#[tokio::test]
async fn link_mode_keeps_a_new_trace_exactly_when_its_link_was_kept() {
    use rdkafka::producer::FutureProducer;

    const MESSAGES: usize = 200;
    let linked = Rabbit::new("l2-linked").await;
    let by_ratio = Rabbit::new("l2-ratio").await;
    let topic = common::unique("l2-link");
    common::kafka::create_topic(&topic, 1).await;
    let relay = consistent_relay(common::relay_config(&format!(
        r#"[[route]]
name = "linked"
from = {{ kafka = "k", topic = "{topic}", group = "{topic}-linked" }}
to = {{ amqp = "r", exchange = "{linked}", routing_key = "{ROUTING_KEY}" }}
propagation = {{ mode = "link" }}

[[route]]
name = "by-ratio"
from = {{ kafka = "k", topic = "{topic}", group = "{topic}-ratio" }}
to = {{ amqp = "r", exchange = "{by_ratio}", routing_key = "{ROUTING_KEY}" }}
propagation = {{ mode = "link", link_sampling = false }}"#,
        linked = linked.exchange,
        by_ratio = by_ratio.exchange,
    )))
    .await;

    // Half the messages sampled upstream, half not; random trace ids.
    let producer: FutureProducer = common::kafka::config().create().expect("producer");
    for i in 0..MESSAGES {
        let flags = if i.is_multiple_of(2) { "01" } else { "00" };
        let traceparent = format!(
            "00-{}-00f067aa0ba902b7-{flags}",
            uuid::Uuid::new_v4().simple()
        );
        let payload = i.to_string();
        send_raw(
            &producer,
            &topic,
            &payload,
            &[("traceparent", &traceparent)],
        )
        .await;
    }

    // Per route: how many new traces disagree with the context they link to.
    let mut disagreeing = Vec::new();
    for rabbit in [&linked, &by_ratio] {
        let mut disagree = 0;
        let mut kept = 0;
        for _ in 0..MESSAGES {
            let message = rabbit.get_one().await;
            let index: usize = std::str::from_utf8(&message.delivery.data)
                .expect("text")
                .parse()
                .expect("index");
            let headers = message
                .delivery
                .properties
                .headers()
                .clone()
                .unwrap_or_default();
            let traceparent = long_string(&headers, "traceparent").expect("traceparent");
            let sampled = u8::from_str_radix(&traceparent[53..55], 16).expect("flags") & 1 == 1;
            kept += usize::from(sampled);
            disagree += usize::from(sampled != index.is_multiple_of(2));
        }
        disagreeing.push((rabbit.queue.clone(), disagree, kept));
    }
    assert!(relay.shutdown().await, "drained");
    let [(_, linked_disagree, linked_kept), (_, ratio_disagree, _)] = disagreeing[..] else {
        unreachable!()
    };
    assert_eq!(
        linked_disagree, 0,
        "link_sampling: every new trace kept exactly when its link was ({disagreeing:?})"
    );
    assert_eq!(linked_kept, MESSAGES / 2, "{disagreeing:?}");
    assert!(
        ratio_disagree >= MESSAGES / 4,
        "the control decides by the ratio and disagrees often ({disagreeing:?})"
    );
    for rabbit in [linked, by_ratio] {
        rabbit.delete().await;
    }
}

/// Journeys decided together: messages without a context of their own,
/// three per request id, through correlation routes under the consistent
/// sampler at 10 %. With `journey_sampling`, every trace of one request is
/// kept or dropped alike — the new traces of `root` (the store has nothing
/// for the id) and the spans under `derive`'s made-up parent, which
/// otherwise are always kept. The control route without it mixes them.
#[tokio::test]
async fn journey_sampling_decides_one_request_s_traces_together() {
    use std::collections::BTreeMap;

    use rdkafka::producer::FutureProducer;

    const REQUESTS: usize = 100;
    const PER_REQUEST: usize = 3;
    let topic = common::unique("l2-journey");
    common::kafka::create_topic(&topic, 1).await;
    let journey = |placement: &str, on: bool| {
        format!(
            "[route.correlation]\nkey = \"journey-test-key\"\n{placement}\njourney_sampling = {on}"
        )
    };
    let (config, queues) = routes_from(
        &topic,
        &[
            ("root-journey", journey(r#"fallback = "root""#, true)),
            ("derive-journey", journey(r#"policy = "derive""#, true)),
            ("root-control", journey(r#"fallback = "root""#, false)),
        ],
    )
    .await;
    let relay = consistent_relay(common::relay_config(&config)).await;

    let producer: FutureProducer = common::kafka::config().create().expect("producer");
    for round in 0..PER_REQUEST {
        for request in 0..REQUESTS {
            let id = format!("{topic}-req-{request}");
            send_raw(
                &producer,
                &topic,
                &round.to_string(),
                &[("x-request-id", &id)],
            )
            .await;
        }
    }

    // Per route: each request's decisions, and how many requests mixed.
    let mut report = Vec::new();
    for (name, rabbit) in &queues {
        let mut decisions: BTreeMap<String, Vec<bool>> = BTreeMap::new();
        for _ in 0..REQUESTS * PER_REQUEST {
            let message = rabbit.get_one().await;
            let headers = message
                .delivery
                .properties
                .headers()
                .clone()
                .unwrap_or_default();
            let id = long_string(&headers, "x-request-id").expect("request id carried");
            let traceparent = long_string(&headers, "traceparent").expect("traceparent");
            let sampled = u8::from_str_radix(&traceparent[53..55], 16).expect("flags") & 1 == 1;
            decisions.entry(id).or_default().push(sampled);
        }
        let mixed = decisions
            .values()
            .filter(|d| d.iter().any(|s| *s) && d.iter().any(|s| !*s))
            .count();
        let kept = decisions.values().filter(|d| d.iter().all(|s| *s)).count();
        report.push((*name, mixed, kept));
    }
    assert!(relay.shutdown().await, "drained");
    eprintln!("(route, requests with mixed decisions, requests kept whole): {report:?}");
    for (name, mixed, kept) in &report[..2] {
        assert_eq!(*mixed, 0, "{name}: one decision per request ({report:?})");
        // 10 % of 100 requests: a binomial's 99.99 % range.
        assert!(
            (1..=25).contains(kept),
            "{name}: about 10 % kept ({report:?})"
        );
    }
    let (_, control_mixed, _) = report[2];
    assert!(
        control_mixed >= 5,
        "the control decides each trace on its own and mixes ({report:?})"
    );
    for (_, rabbit) in queues {
        rabbit.delete().await;
    }
}

/// The OpenTelemetry Java agent's own `traceparent` through the relay
/// (Kafka → AMQP) and a library worker behind it (AMQP → Kafka): `03` when
/// the agent's sampler keeps the trace, `02` when it drops it, leave both as
/// they came. Before, the relay wrote `01` and `00`.
#[tokio::test]
async fn the_java_agent_s_random_flag_survives_the_relay() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let agent = root.join(".brokers/java-peer/opentelemetry-javaagent-2.33.0.jar");
    assert!(
        agent.exists(),
        "{} is missing: `scripts/brokers.sh up` fetches the Java agent (it needs java and mvn)",
        agent.display()
    );
    let kafka_libs = root.join(".brokers/kafka-4.1.1/libs");
    assert!(
        kafka_libs.exists(),
        "{} is missing: `scripts/brokers.sh up` fetches Kafka's jars",
        kafka_libs.display()
    );
    // The producer, compiled against kafka-clients from Kafka's jars.
    let classes = root.join("target/java-peer");
    std::fs::create_dir_all(&classes).expect("a folder for the classes");
    let classpath = format!("{}/*", kafka_libs.display());
    let compiled = std::process::Command::new("javac")
        .arg("-d")
        .arg(&classes)
        .args(["-cp", &classpath])
        .arg(root.join("tests/fixtures/JavaProducer.java"))
        .status()
        .expect("javac runs");
    assert!(compiled.success(), "javac failed");

    let topic = common::unique("l2-java");
    common::kafka::create_topic(&topic, 1).await;
    let out = Rabbit::new("l2-java").await;
    let relay = consistent_relay(common::relay_config(&format!(
        r#"[[route]]
name = "java"
from = {{ kafka = "k", topic = "{topic}", group = "{topic}-relay" }}
to = {{ amqp = "r", exchange = "{exchange}", routing_key = "{ROUTING_KEY}" }}"#,
        exchange = out.exchange,
    )))
    .await;

    // Three records kept by the agent's sampler, then three it drops.
    for sampler in ["parentbased_always_on", "parentbased_always_off"] {
        let status = std::process::Command::new("java")
            .arg(format!("-javaagent:{}", agent.display()))
            .args([
                &format!("-Dotel.traces.sampler={sampler}"),
                "-Dotel.traces.exporter=none",
                "-Dotel.metrics.exporter=none",
                "-Dotel.logs.exporter=none",
                "-Dotel.javaagent.logging=none",
                "-Xshare:off",
            ])
            .args(["-cp", &format!("{}:{classpath}", classes.display())])
            .args(["JavaProducer", &common::kafka_bootstrap(), &topic, "3"])
            .status()
            .expect("java runs");
        assert!(
            status.success(),
            "the Java producer ({sampler}) failed: {status}"
        );
    }

    // A worker behind the relay, on tracebridge's clients with the same
    // sampler: it consumes each message and sends it on to Kafka.
    let onward = common::unique("l2-java-onward");
    common::kafka::create_topic(&onward, 1).await;
    let worker_provider = SdkTracerProvider::builder()
        .with_sampler(ProbabilitySampler::new(0.1).expect("ratio"))
        .build();
    let worker = tracebridge::Instrumentation::from_sdk(&worker_provider, None);
    let mut consumer = common::traced::amqp_consumer(&out, worker.clone(), false).await;
    let producer = common::traced::kafka_producer(worker);
    let mut relayed = Vec::new();
    for _ in 0..6 {
        use futures::StreamExt as _;
        let delivery = common::within("a relayed message", consumer.next())
            .await
            .expect("open")
            .expect("delivery");
        let headers = delivery.properties.headers().clone().unwrap_or_default();
        let traceparent = long_string(&headers, "traceparent").expect("traceparent");
        relayed.push(traceparent[53..].to_owned());
        let send = async {
            producer
                .send(
                    tracebridge::kafka::producer::FutureRecord::<(), _>::to(&onward).payload("p"),
                    Duration::from_secs(10),
                )
                .await
                .map_err(|(e, _)| e)
        };
        delivery.in_span(send).await.expect("sent on");
        delivery.ack(Default::default()).await.expect("acked");
    }
    assert!(relay.shutdown().await, "drained");
    let expected = ["03", "03", "03", "02", "02", "02"];
    assert_eq!(
        relayed, expected,
        "the agent wrote 03 (kept) and 02 (dropped); the relay must pass both on"
    );
    // The worker's next send, read raw from Kafka.
    let reader = common::flow::kafka_reader(&common::kafka_bootstrap(), &onward);
    let mut sent_on = Vec::new();
    for _ in 0..6 {
        let record = tokio::time::timeout(WAIT, reader.recv())
            .await
            .expect("a record in time")
            .expect("a record");
        let traceparent = common::kafka::header_text(&record, "traceparent")
            .expect("the worker wrote a traceparent");
        sent_on.push(traceparent[53..].to_owned());
    }
    assert_eq!(
        sent_on, expected,
        "the library worker's next send keeps them too"
    );
    out.delete().await;
}

/// Correlated messages under the consistent sampler at 10 %: a message
/// with its own context and a request id (recorded), then a message with
/// only the id. `join` puts the second under the first's context, so it
/// follows its decision (no partial trace); `link` starts a new trace that
/// link sampling keeps exactly when the first was kept. The control `link`
/// route without link sampling decides by the ratio and disagrees often.
#[tokio::test]
async fn correlated_messages_follow_the_decision_of_the_context_they_are_placed_by() {
    use std::collections::BTreeMap;

    use rdkafka::producer::FutureProducer;

    // `TRACEBRIDGE_SAMPLING_FLOW_MESSAGES` as in tests/sampling_flow.rs
    // (docs/sampling.md reports a run of 10 000).
    let requests = common::sampling_messages(200);
    let topic = common::unique("l2-corr");
    common::kafka::create_topic(&topic, 1).await;
    let correlated = |policy: &str, link_sampling: bool| {
        format!(
            "propagation = {{ link_sampling = {link_sampling} }}\n\n[route.correlation]\npolicy = \"{policy}\"\nfallback = \"root\""
        )
    };
    let (config, queues) = routes_from(
        &topic,
        &[
            ("corr-join", correlated("join", true)),
            ("corr-link", correlated("link", true)),
            ("corr-link-ratio", correlated("link", false)),
        ],
    )
    .await;
    let relay = consistent_relay(common::relay_config(&config)).await;

    let producer: FutureProducer = common::kafka::config().create().expect("producer");
    // The instrumented messages, half sampled upstream; then, once each
    // route has recorded them, the ones with only the request id.
    let mut origin: BTreeMap<String, (String, bool)> = BTreeMap::new();
    for request in 0..requests {
        let id = format!("{topic}-req-{request}");
        let trace_id = uuid::Uuid::new_v4().simple().to_string();
        let sampled = request % 2 == 0;
        let traceparent = format!("00-{trace_id}-00f067aa0ba902b7-0{}", u8::from(sampled) + 2);
        send_raw(
            &producer,
            &topic,
            "p",
            &[("x-request-id", &id), ("traceparent", &traceparent)],
        )
        .await;
        origin.insert(id, (trace_id, sampled));
    }
    for (_, rabbit) in &queues {
        for _ in 0..requests {
            rabbit.get_one().await;
        }
    }
    for request in 0..requests {
        let id = format!("{topic}-req-{request}");
        send_raw(&producer, &topic, "p", &[("x-request-id", &id)]).await;
    }

    // Per route: correlated messages in another trace than their origin,
    // and those whose decision differs from their origin's.
    let mut report = Vec::new();
    for (name, rabbit) in &queues {
        let (mut other_trace, mut disagree) = (0, 0);
        for _ in 0..requests {
            let message = rabbit.get_one().await;
            let headers = message
                .delivery
                .properties
                .headers()
                .clone()
                .unwrap_or_default();
            let id = long_string(&headers, "x-request-id").expect("request id");
            let traceparent = long_string(&headers, "traceparent").expect("traceparent");
            let (origin_trace, origin_sampled) = &origin[&id];
            let sampled = u8::from_str_radix(&traceparent[53..55], 16).expect("flags") & 1 == 1;
            other_trace += usize::from(traceparent[3..35] != **origin_trace);
            disagree += usize::from(sampled != *origin_sampled);
        }
        report.push((*name, other_trace, disagree));
    }
    assert!(relay.shutdown().await, "drained");
    eprintln!(
        "(route, correlated messages in another trace, decisions unlike their origin's): {report:?}"
    );
    assert_eq!(
        report[0],
        ("corr-join", 0, 0),
        "join: in the origin's trace, its decision"
    );
    assert_eq!(
        report[1],
        ("corr-link", requests, 0),
        "link: new traces, the origin's decision"
    );
    assert!(
        report[2].2 >= requests / 4,
        "the control disagrees often: {report:?}"
    );
    for (_, rabbit) in queues {
        rabbit.delete().await;
    }
}
