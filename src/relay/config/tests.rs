//! Config reading: every accepted shape, and each kind of mistake reported
//! with its location.

use super::env::expand_env;
use super::*;
use crate::propagation::Format;

const FULL: &str = r#"
[relay]
listen = "127.0.0.1:9464"
max_in_flight = 256
shutdown_timeout = "20s"

[kafka.main]
bootstrap_servers = "127.0.0.1:9092"
properties = { "security.protocol" = "PLAINTEXT", "sasl.password" = "${KAFKA_SECRET:-hunter2}" }

[amqp.rabbit]
url = "amqp://guest:${AMQP_PASSWORD:-guest}@127.0.0.1:5672/%2f"

[[route]]
name = "k2a"
from = { kafka = "main", topic = "orders", group = "tb" }
to = { amqp = "rabbit", exchange = "fulfillment", routing_key = "order.created" }
propagation = { mode = "join", extract = ["tracecontext", "baggage", "b3"], inject = ["tracecontext", "baggage"] }
retry = { attempts = 3, backoff = "50ms" }
dead_letter = { amqp = "rabbit", exchange = "tracebridge.dlx" }

[[route]]
name = "a2k"
from = { amqp = "rabbit", queue = "billing" }
to = { kafka = "main", topic = "billing" }
key_mapping = "message_id"

[[route]]
name = "k2k"
from = { kafka = "main", topic = "a" }
to = { kafka = "main", topic = "b", key_from = "header:x-order" }
propagation = { mode = "link" }

[[route]]
name = "a2a"
from = { amqp = "rabbit", queue = "in" }
to = { amqp = "rabbit", exchange = "out", routing_key_from = "header:x-route" }
"#;

fn parse(text: &str) -> Result<RelayConfig, ConfigErrors> {
    RelayConfig::parse(text, "relay.toml", |name| match name {
        "AMQP_PASSWORD" => Some("s3cret".into()),
        _ => None,
    })
}

fn problems(text: &str) -> Vec<String> {
    parse(text)
        .expect_err("the config must be rejected")
        .problems
}

#[test]
fn all_four_directions_parse_with_their_options() {
    let config = parse(FULL).expect("valid");
    assert_eq!(config.max_in_flight, 256);
    assert_eq!(config.shutdown_timeout, Duration::from_secs(20));
    assert_eq!(config.routes.len(), 4);

    let k2a = &config.routes[0];
    assert!(
        matches!(&k2a.source, Source::Kafka { topic, group, .. } if topic == "orders" && group == "tb")
    );
    assert!(
        matches!(&k2a.sink, Sink::Amqp { exchange, routing_key: KeySource::Fixed(rk), .. }
        if exchange == "fulfillment" && rk == "order.created")
    );
    assert_eq!(
        k2a.propagation.extract_formats(),
        [Format::TraceContext, Format::Baggage, Format::B3]
    );
    assert_eq!((k2a.attempts, k2a.backoff), (3, Duration::from_millis(50)));
    assert!(
        matches!(&k2a.dead_letter, Some(Sink::Amqp { exchange, .. }) if exchange == "tracebridge.dlx")
    );

    let a2k = &config.routes[1];
    assert!(matches!(&a2k.source, Source::Amqp { queue, .. } if queue == "billing"));
    assert_eq!(a2k.key_mapping, KeyMapping::MessageId);
    assert_eq!(a2k.mode, ParentPolicy::Join);

    let k2k = &config.routes[2];
    assert_eq!(k2k.mode, ParentPolicy::Link);
    assert!(matches!(&k2k.sink, Sink::Kafka { key: KeySource::Header(h), .. } if h == "x-order"));
    assert!(
        matches!(
            &a2k.sink,
            Sink::Kafka {
                key: KeySource::SourceKey,
                ..
            }
        ),
        "default key"
    );
    assert!(
        matches!(&k2k.source, Source::Kafka { group, .. } if group == "tracebridge-k2k"),
        "default group"
    );

    let a2a = &config.routes[3];
    assert!(
        matches!(&a2a.sink, Sink::Amqp { routing_key: KeySource::Header(h), .. } if h == "x-route")
    );
}

#[test]
fn environment_variables_are_expanded_and_secrets_never_printed() {
    let config = parse(FULL).expect("valid");
    let Source::Amqp { broker, .. } = &config.routes[1].source else {
        panic!()
    };
    assert_eq!(broker.url, "amqp://guest:s3cret@127.0.0.1:5672/%2f");
    assert_eq!(broker.redacted_url(), "amqp://***@127.0.0.1:5672/%2f");
    let printed = format!("{config:?}");
    assert!(!printed.contains("s3cret"), "{printed}");
    assert!(
        !printed.contains("hunter2"),
        "default secrets are secrets too: {printed}"
    );
    let Source::Kafka { broker, .. } = &config.routes[0].source else {
        panic!()
    };
    assert_eq!(broker.properties["sasl.password"], "hunter2");
}

#[test]
fn a_missing_variable_without_default_names_it_and_its_line() {
    let text = FULL.replace("${AMQP_PASSWORD:-guest}", "${RABBIT_PASSWORD}");
    let problems = problems(&text);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with("relay.toml:12: environment variable RABBIT_PASSWORD is not set"),
        "{problems:?}"
    );
}

#[test]
fn an_unknown_key_is_rejected_with_its_line() {
    let text = FULL.replace("max_in_flight = 256", "max_in_flite = 256");
    let problems = problems(&text);
    assert!(problems[0].starts_with("relay.toml:4:"), "{problems:?}");
    assert!(problems[0].contains("max_in_flite"), "{problems:?}");
}

#[test]
fn a_bad_duration_is_rejected_with_its_line() {
    let text = FULL.replace(r#"backoff = "50ms""#, r#"backoff = "fifty""#);
    let problems = problems(&text);
    assert!(problems[0].starts_with("relay.toml:19:"), "{problems:?}");
    assert!(problems[0].contains("fifty"), "{problems:?}");
}

#[test]
fn unknown_keys_and_bad_values_are_all_reported_each_with_its_line() {
    let text = FULL
        .replace("max_in_flight = 256", "max_in_flite = 256")
        .replace(r#"backoff = "50ms""#, r#"backoff = "fifty""#)
        .replace(r#"key_mapping = "message_id""#, "key_mapping = 7")
        .replace(r#"url = "amqp://"#, r#"uri = "amqp://"#);
    let problems = problems(&text);
    let expect = [
        "relay.toml:4: unknown field `max_in_flite`",
        "relay.toml:19: ",
        "relay.toml:26: ",
        "relay.toml:12: unknown field `uri`",
    ];
    for needle in expect {
        assert!(
            problems.iter().any(|p| p.starts_with(needle)),
            "missing {needle:?} in {problems:#?}"
        );
    }
    assert!(
        problems.iter().any(|p| p.contains("fifty")),
        "{problems:#?}"
    );
    // The blanked `url` leaves [amqp.rabbit] without one: that is reported
    // once, as missing, and nothing is made up about the routes using it.
    assert!(
        problems.iter().any(|p| p.contains("missing field `url`")),
        "{problems:#?}"
    );
    assert_eq!(problems.len(), 5, "{problems:#?}");
}

#[test]
fn a_bad_value_in_a_required_key_is_reported_once() {
    let text = FULL.replace(r#"name = "a2k""#, "name = 5");
    let problems = problems(&text);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(problems[0].starts_with("relay.toml:23: "), "{problems:#?}");
}

#[test]
fn a_syntax_error_stops_reading_at_its_line() {
    let text = FULL.replace("max_in_flight = 256", "max_in_flight = = 256");
    let problems = problems(&text);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(problems[0].starts_with("relay.toml:4:"), "{problems:#?}");
}

#[test]
fn every_librdkafka_property_it_rejects_is_named() {
    let text = FULL.replace(
        r#""security.protocol" = "PLAINTEXT""#,
        r#""security.protocol" = "carrier-pigeon", "no.such.property" = "1", "linger.ms" = "soon""#,
    );
    let problems = problems(&text);
    for key in ["security.protocol", "no.such.property", "linger.ms"] {
        let needle =
            format!("relay.toml:7: kafka.main.properties.\"{key}\": librdkafka rejects it");
        assert!(
            problems.iter().any(|p| p.starts_with(&needle)),
            "missing {needle:?} in {problems:#?}"
        );
    }
    assert!(
        !problems.iter().any(|p| p.contains("hunter2")),
        "{problems:#?}"
    );
}

#[test]
fn a_missing_broker_reference_is_reported_where_it_is_used() {
    let text = FULL.replace(
        r#"to = { kafka = "main", topic = "billing" }"#,
        r#"to = { kafka = "backup", topic = "billing" }"#,
    );
    let problems = problems(&text);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with(
            "relay.toml:25: route[1] (a2k): to.kafka: no [kafka.backup] section is defined"
        ),
        "{problems:?}"
    );
}

#[test]
fn every_shape_problem_is_reported_at_once() {
    let text = r#"
[amqp.rabbit]
url = "http://example.com"

[kafka.main]
bootstrap_servers = "b:9092"

[[route]]
name = "r"
from = { kafka = "main" }
to = { amqp = "rabbit", topic = "t", routing_key = "a", routing_key_from = "source_key" }
retry = { attempts = 0 }
propagation = { mode = "ambient" }

[[route]]
name = "r"
from = { kafka = "main", amqp = "rabbit", topic = "t" }
to = { kafka = "main", topic = "t" }
"#;
    let problems = problems(text);
    let expect = [
        "amqp.rabbit.url: `http://example.com` is not an amqp://",
        "route[0] (r): from.topic: a Kafka source needs a topic",
        "route[0] (r): to.topic: not used by an AMQP destination",
        "route[0] (r): to.routing_key: give `to.routing_key` or `to.routing_key_from`, not both",
        "route[0] (r): retry.attempts: must be at least 1",
        "route[0] (r): propagation.mode: `ambient` means nothing in the relay",
        "route[1] (r): name: another route is already called `r`",
        "route[1] (r): from: names both `kafka` and `amqp`",
    ];
    for needle in expect {
        assert!(
            problems.iter().any(|p| p.contains(needle)),
            "missing {needle:?} in {problems:#?}"
        );
    }
}

#[test]
fn empty_names_loops_and_guarded_properties_are_reported_together() {
    let text = r#"
[kafka.main]
bootstrap_servers = ""
properties = { "acks" = "1", "enable.auto.commit" = "true", "bootstrap.servers" = "x:1" }

[amqp.rabbit]
url = "amqp://guest:guest@h/%2f"

[[route]]
name = "empty"
from = { kafka = "main", topic = " " }
to = { kafka = "main", topic = "" }

[[route]]
name = "loop"
from = { amqp = "rabbit", queue = "q" }
to = { amqp = "rabbit", exchange = "", routing_key = "q" }
"#;
    let problems = problems(text);
    let expect = [
        "kafka.main.bootstrap_servers: is empty",
        "kafka.main.properties.\"acks\": `1`: must be `all`",
        "kafka.main.properties.\"enable.auto.commit\": `true`: must stay false",
        "kafka.main.properties.\"bootstrap.servers\": set `bootstrap_servers` instead",
        "route[0] (empty): from.topic: a Kafka source needs a topic (missing or empty)",
        "route[0] (empty): to.topic: a Kafka destination needs a topic (missing or empty)",
        "route[1] (loop): to: writes to the route's own source",
    ];
    for needle in expect {
        assert!(
            problems.iter().any(|p| p.contains(needle)),
            "missing {needle:?} in {problems:#?}"
        );
    }
}

#[test]
fn env_expansion_keeps_dollars_and_reports_unclosed_braces() {
    let out = expand_env("a $$ b ${X:-y} $z", "f", |_| None).unwrap();
    assert_eq!(out, "a $ b y $z");
    let err = expand_env("a\n${X", "f", |_| None).unwrap_err();
    assert_eq!(
        err.problems,
        vec!["f:2: `${` is not closed by `}`".to_owned()]
    );
}

const ROUTE: &str = r#"
[kafka.k]
bootstrap_servers = "127.0.0.1:9092"

[amqp.r]
url = "amqp://127.0.0.1"

[[route]]
name = "legacy"
from = { kafka = "k", topic = "billing" }
to = { amqp = "r", exchange = "x", routing_key = "rk" }
"#;

#[test]
fn correlation_reads_every_key_and_defaults_the_rest() {
    let config = parse(&format!(
        r#"{ROUTE}
[route.correlation]
request_id = ["header:x-request-id", "json:/meta/requestId", "key"]
policy = "link"
fallback = "root"
store = "redis://:${{AMQP_PASSWORD}}@127.0.0.1:6379/2"
ttl = "10m"
store_timeout = "100ms"
"#
    ))
    .expect("valid");
    let c = config.routes[0].correlation.as_ref().expect("configured");
    assert_eq!(c.request_id.sources().len(), 3);
    assert_eq!((c.policy, c.fallback), (Policy::Link, Fallback::Root));
    assert_eq!(
        c.store,
        StoreSpec::Redis {
            url: "redis://:s3cret@127.0.0.1:6379/2".into(),
            ttl: Duration::from_secs(600),
            timeout: Duration::from_millis(100),
        }
    );
    let printed = format!("{c:?}");
    assert!(!printed.contains("s3cret"), "{printed}");

    let defaults = parse(&format!("{ROUTE}\n[route.correlation]\nkey = \"k3y\"\n")).expect("valid");
    let d = defaults.routes[0].correlation.as_ref().expect("configured");
    assert_eq!(d.request_id, RequestIdExtractor::default());
    assert_eq!(
        (d.policy, d.fallback),
        (Policy::Join, Fallback::Derive),
        "a key makes derive the fallback"
    );
    assert_eq!(
        d.store,
        StoreSpec::Memory {
            max_entries: 100_000,
            ttl: Duration::from_secs(3600)
        }
    );
    assert!(!format!("{d:?}").contains("k3y"));
    assert!(parse(ROUTE).expect("valid").routes[0].correlation.is_none());

    let local = parse(&format!(
        "{ROUTE}\n[route.correlation]\nstore = \"redis\"\n"
    ))
    .expect("valid");
    assert!(matches!(
        &local.routes[0].correlation.as_ref().expect("configured").store,
        StoreSpec::Redis { url, .. } if url == "redis://127.0.0.1:6379"
    ));
}

#[test]
fn correlation_mistakes_are_reported_together() {
    let found = problems(&format!(
        r#"{ROUTE}
[route.correlation]
request_id = []
policy = "derive"
ttl = "0s"
max_entries = 0
"#
    ));
    for expected in [
        "route[0] (legacy): correlation.request_id: name at least one source",
        "route[0] (legacy): correlation.key: `derive` needs a secret key",
        "route[0] (legacy): correlation.ttl: must be longer than 0s",
        "route[0] (legacy): correlation.max_entries: must be at least 1",
    ] {
        assert!(
            found.iter().any(|p| p.contains(expected)),
            "{expected} not in {found:#?}"
        );
    }
    let bad_store = problems(&format!(
        "{ROUTE}\n[route.correlation]\nstore = \"mysql://u:pw@h\"\n"
    ));
    assert!(
        bad_store[0].contains("`mysql://***@h` is not \"memory\", \"redis\" or a redis:// URL"),
        "{bad_store:?}"
    );
    let bad_source = problems(&format!(
        "{ROUTE}\n[route.correlation]\nrequest_id = [\"body\"]\n"
    ));
    assert!(
        bad_source[0].contains("`body` is not a request id source"),
        "{bad_source:?}"
    );
    let bad_policy = problems(&format!(
        "{ROUTE}\n[route.correlation]\npolicy = \"guess\"\n"
    ));
    assert!(bad_policy[0].contains("guess"), "{bad_policy:?}");
    let keyless_journey = problems(&format!(
        "{ROUTE}\n[route.correlation]\njourney_sampling = true\n"
    ));
    assert!(
        keyless_journey[0].contains("correlation.key: `journey_sampling` needs a secret key"),
        "{keyless_journey:?}"
    );
}

#[test]
fn the_telemetry_table_sets_conventions_and_policy() {
    use crate::semconv::{SemconvVersion, Treatment};
    let config = parse(&format!(
        "{FULL}\n[telemetry]\nsemconv_version = \"1.44\"\nrecord_message_keys = \"hashed\"\n\
         record_request_ids = \"as-is\"\ncapture_headers = [\"X-Tenant\"]\n\
         attribute_hash_key = \"0123456789abcdef-secret\"\n"
    ))
    .expect("valid");
    let rules = &config.attribute_rules;
    assert_eq!(rules.conventions.version, SemconvVersion::V1_44);
    assert_eq!(rules.policy.message_keys(), Treatment::Hashed);
    assert_eq!(rules.policy.request_ids(), Treatment::AsIs);
    assert_eq!(rules.policy.captured()[0].0, "x-tenant");
    // The key is a secret: never in an error message.
    assert!(
        config
            .secrets()
            .contains(&"0123456789abcdef-secret".to_owned())
    );
    // Nothing set: the safe defaults.
    let default = parse(FULL).expect("valid");
    assert_eq!(
        default.attribute_rules.policy.message_keys(),
        Treatment::Omitted
    );
}

#[test]
fn telemetry_mistakes_are_each_named() {
    let found = problems(&format!(
        "{FULL}\n[telemetry]\nsemconv_version = \"1.99\"\nrecord_message_keys = \"hashed\"\n"
    ));
    assert!(
        found.iter().any(
            |p| p.contains("telemetry.semconv_version") && p.contains("1.45, 1.44 or pre-1.26")
        ),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|p| p.contains("message keys are to be hashed but no hash key is set")),
        "{found:?}"
    );
    let found = problems(&format!(
        "{FULL}\n[telemetry]\nrecord_request_ids = \"hash\"\nattribute_hash_key = \"short\"\n"
    ));
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("relay.toml:40:") && p.contains("unknown variant `hash`")),
        "{found:?}"
    );
    let short = found
        .iter()
        .find(|p| p.contains("telemetry.attribute_hash_key"))
        .expect("the short key is named");
    assert!(
        short.contains("has 5 bytes") && !short.contains("\"short\""),
        "{short}"
    );
}

/// `[telemetry] metrics` names the metrics kept; an unknown name is a
/// problem that names the known ones.
#[test]
fn telemetry_metrics_are_chosen_by_name() {
    use crate::MessagingMetric;
    let base = r#"
[kafka.k]
bootstrap_servers = "127.0.0.1:9092"
[[route]]
name = "r"
from = { kafka = "k", topic = "a" }
to = { kafka = "k", topic = "b" }
"#;
    let all = RelayConfig::parse(base, "t.toml", |_| None).expect("valid");
    assert_eq!(all.metrics, MessagingMetric::ALL.to_vec());
    let some = RelayConfig::parse(
        &format!("{base}[telemetry]\nmetrics = [\"messaging.process.duration\"]\n"),
        "t.toml",
        |_| None,
    )
    .expect("valid");
    assert_eq!(some.metrics, vec![MessagingMetric::ProcessDuration]);
    let err = RelayConfig::parse(
        &format!("{base}[telemetry]\nmetrics = [\"messaging.bogus\"]\n"),
        "t.toml",
        |_| None,
    )
    .expect_err("unknown metric");
    let text = err.to_string();
    assert!(
        text.contains("unknown metric `messaging.bogus`")
            && text.contains("messaging.client.sent.messages"),
        "{text}"
    );
}

#[test]
fn an_instance_id_is_kafka_letters_and_group_instance_id_is_refused_in_properties() {
    let with = |relay: &str, properties: &str| {
        format!(
            r#"[relay]
{relay}
[kafka.main]
bootstrap_servers = "127.0.0.1:9092"
properties = {{ {properties} }}
[amqp.rabbit]
url = "amqp://127.0.0.1:5672"
[[route]]
name = "k2a"
from = {{ kafka = "main", topic = "orders", group = "tb" }}
to = {{ amqp = "rabbit", exchange = "x", routing_key = "k" }}
"#
        )
    };
    let config = parse(&with(r#"instance_id = "relay-0.eu_1""#, "")).expect("valid");
    assert_eq!(config.instance_id.as_deref(), Some("relay-0.eu_1"));
    assert_eq!(parse(&with("", "")).expect("valid").instance_id, None);
    let found = problems(&with(
        r#"instance_id = "relay 0""#,
        r#""group.instance.id" = "a""#,
    ));
    assert_eq!(found.len(), 2, "{found:?}");
    for expected in [
        "relay.instance_id: `relay 0` has ' '; only ASCII letters",
        "\"group.instance.id\": set `[relay] instance_id` instead",
    ] {
        assert!(
            found.iter().any(|p| p.contains(expected)),
            "{expected}: {found:?}"
        );
    }
    assert!(
        problems(&with(r#"instance_id = """#, ""))
            .iter()
            .any(|p| p.contains("must not be empty"))
    );
}

/// Configurations that would lose, loop or fail at run time: each refused
/// by `check` with its reason (issue 24's list, and more).
#[test]
fn every_config_that_can_lose_loop_or_fail_is_refused_with_its_reason() {
    let file = |relay: &str, properties: &str, routes: &str| {
        format!(
            r#"[relay]
{relay}
[kafka.k]
bootstrap_servers = "localhost:9092"
properties = {{ {properties} }}
[kafka.same]
bootstrap_servers = "127.0.0.1:9092"
[amqp.r]
url = "amqp://guest:guest@localhost:5672/%2f"
{routes}
"#
        )
    };
    let route = |name: &str, from: &str, to: &str, extra: &str| {
        format!("[[route]]\nname = \"{name}\"\nfrom = {from}\nto = {to}\n{extra}\n")
    };
    let k = |topic: &str| format!(r#"{{ kafka = "k", topic = "{topic}" }}"#);
    let alias = |topic: &str| format!(r#"{{ kafka = "same", topic = "{topic}" }}"#);
    let queue = |q: &str| format!(r#"{{ amqp = "r", queue = "{q}" }}"#);
    let long = "x".repeat(300);
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "a new group would skip the backlog",
            file(
                "",
                r#""auto.offset.reset" = "latest""#,
                &route("a", &k("in"), &k("out"), ""),
            ),
            "\"auto.offset.reset\": `latest`: must stay `earliest`",
        ),
        (
            "A → B and B → A",
            file(
                "",
                "",
                &(route("a", &k("one"), &k("two"), "") + &route("b", &k("two"), &k("one"), "")),
            ),
            "routes `a` → `b` → `a` form a cycle",
        ),
        (
            "a cycle through a second name for the same cluster",
            file(
                "",
                "",
                &(route("a", &k("one"), &alias("two"), "")
                    + &route("b", &alias("two"), &k("one"), "")),
            ),
            "routes `a` → `b` → `a` form a cycle",
        ),
        (
            "three routes in a ring",
            file(
                "",
                "",
                &(route("a", &k("1"), &k("2"), "")
                    + &route("b", &k("2"), &k("3"), "")
                    + &route("c", &k("3"), &k("1"), "")),
            ),
            "routes `a` → `b` → `c` → `a` form a cycle",
        ),
        (
            "a route into its own source through an alias",
            file("", "", &route("a", &k("in"), &alias("in"), "")),
            "writes to the route's own source (Kafka topic `in`)",
        ),
        (
            "the default exchange into the route's own queue",
            file(
                "",
                "",
                &route(
                    "a",
                    &queue("q"),
                    r#"{ amqp = "r", exchange = "", routing_key = "q" }"#,
                    "",
                ),
            ),
            "writes to the route's own source (AMQP queue `q`)",
        ),
        (
            "a dead letter into the route's own source, by another name",
            file(
                "",
                "",
                &route(
                    "a",
                    &k("in"),
                    &k("out"),
                    &format!("dead_letter = {}", alias("in")),
                ),
            ),
            "dead_letter: writes to the route's own source (Kafka topic `in`)",
        ),
        (
            "a dead letter into another route's source",
            file(
                "",
                "",
                &(route(
                    "a",
                    &k("in"),
                    &k("out"),
                    &format!("dead_letter = {}", k("other")),
                ) + &route("b", &k("other"), &k("elsewhere"), "")),
            ),
            "dead_letter: writes to the source of route `b` (Kafka topic `other`)",
        ),
        (
            "a 300-byte exchange name",
            file(
                "",
                "",
                &route(
                    "a",
                    &k("in"),
                    &format!(r#"{{ amqp = "r", exchange = "{long}", routing_key = "k" }}"#),
                    "",
                ),
            ),
            "to.exchange: the exchange name has 300 bytes; the broker allows 255",
        ),
        (
            "a 300-byte routing key",
            file(
                "",
                "",
                &route(
                    "a",
                    &k("in"),
                    &format!(r#"{{ amqp = "r", exchange = "x", routing_key = "{long}" }}"#),
                    "",
                ),
            ),
            "to.routing_key: the routing key name has 300 bytes; the broker allows 255",
        ),
        (
            "a 300-byte queue",
            file("", "", &route("a", &queue(&long), &k("out"), "")),
            "from.queue: the queue name has 300 bytes; the broker allows 255",
        ),
        (
            "a topic Kafka cannot name",
            file("", "", &route("a", &k("in"), &k("orders by day"), "")),
            "to.topic: the topic name `orders by day` has ' '",
        ),
        (
            "a 250-character topic",
            file("", "", &route("a", &k(&"t".repeat(250)), &k("out"), "")),
            "from.topic: the topic name has 250 bytes; the broker allows 249",
        ),
        (
            "a window no AMQP prefetch can hold",
            file(
                "max_in_flight = 100000000",
                "",
                &route("a", &k("in"), &k("out"), ""),
            ),
            "relay.max_in_flight: 100000000 is outside 1 to 65535",
        ),
        (
            "a byte budget of 10 GiB a route",
            file(
                "max_in_flight_bytes = 10737418240",
                "",
                &route("a", &k("in"), &k("out"), ""),
            ),
            "relay.max_in_flight_bytes: 10737418240 is outside 1 to 1073741824",
        ),
        (
            "one static member id for every route",
            file(
                "",
                r#""group.instance.id" = "x""#,
                &route("a", &k("in"), &k("out"), ""),
            ),
            "\"group.instance.id\": set `[relay] instance_id` instead",
        ),
        (
            "idempotence off",
            file(
                "",
                r#""enable.idempotence" = "false""#,
                &route("a", &k("in"), &k("out"), ""),
            ),
            "\"enable.idempotence\": `false`: must stay true",
        ),
    ];
    for (what, text, expected) in &cases {
        let found = problems(text);
        assert!(
            found.iter().any(|p| p.contains(expected)),
            "{what}: expected {expected:?} among {found:?}"
        );
    }
    // One problem does not hide the others: an unknown key, a cycle and a
    // reset in one file are all listed.
    let all = file(
        "max_in_flght = 3",
        r#""auto.offset.reset" = "latest""#,
        &(route("a", &k("one"), &k("two"), "") + &route("b", &k("two"), &k("one"), "")),
    );
    let found = problems(&all);
    for expected in ["max_in_flght", "auto.offset.reset", "form a cycle"] {
        assert!(
            found.iter().any(|p| p.contains(expected)),
            "{expected}: {found:?}"
        );
    }
    // And a valid file with the same shape passes.
    parse(&file("", "", &route("a", &k("one"), &k("two"), ""))).expect("valid");
}
