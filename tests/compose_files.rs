//! docker-compose.yml, the collector config, the Dockerfile and the relay
//! configs they use: parsed, cross-checked, every referenced file present;
//! and the native stack (scripts/stack.sh) held to the same collector and
//! Jaeger configs and versions as the compose file.
#![cfg(all(feature = "kafka", feature = "amqp"))]

use std::path::Path;

use serde_yaml::Value;
use tracebridge::relay::RelayConfig;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn yaml(path: &str) -> Value {
    let text = std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{path} is not YAML: {e}"))
}

fn keys(value: &Value) -> Vec<String> {
    value
        .as_mapping()
        .map(|m| {
            m.keys()
                .filter_map(|k| k.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn compose_has_every_service_wired_in_order_and_its_files_exist() {
    let compose = yaml("docker-compose.yml");
    let services = &compose["services"];
    let names = keys(services);
    for expected in [
        "kafka",
        "rabbitmq",
        "redis",
        "otel-collector",
        "jaeger",
        "relay",
        "demo",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "service {expected} missing: {names:?}"
        );
    }
    assert!(
        services["kafka"]["image"]
            .as_str()
            .is_some_and(|i| i.starts_with("apache/kafka:"))
    );
    assert_eq!(
        services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"].as_str(),
        Some("broker,controller"),
        "KRaft"
    );
    assert!(
        services["rabbitmq"]["image"]
            .as_str()
            .is_some_and(|i| i.contains("management"))
    );
    assert!(
        services["otel-collector"]["image"]
            .as_str()
            .is_some_and(|i| i.contains("opentelemetry-collector-contrib"))
    );
    for traced in ["relay", "demo"] {
        let endpoint = services[traced]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"].as_str();
        // HTTP/protobuf, the default OTLP protocol, is served on 4318.
        assert_eq!(
            endpoint,
            Some("http://otel-collector:4318"),
            "{traced} exports to the collector"
        );
        assert_eq!(
            services[traced]["build"].as_str(),
            Some("."),
            "{traced} is built from the Dockerfile"
        );
    }
    for healthy in ["kafka", "rabbitmq", "redis", "relay"] {
        assert!(
            !services[healthy]["healthcheck"]["test"].is_null(),
            "{healthy} has a healthcheck"
        );
    }
    // Every depends_on names a service, with a condition compose knows.
    for name in &names {
        for (dependency, spec) in services[name.as_str()]["depends_on"]
            .as_mapping()
            .into_iter()
            .flatten()
        {
            let dependency = dependency.as_str().expect("a name");
            assert!(
                names.iter().any(|n| n == dependency),
                "{name} depends on unknown {dependency}"
            );
            let condition = spec["condition"].as_str().unwrap_or_default();
            assert!(
                [
                    "service_started",
                    "service_healthy",
                    "service_completed_successfully"
                ]
                .contains(&condition),
                "{name} -> {dependency}: {condition:?}"
            );
            if condition == "service_healthy" {
                assert!(
                    !services[dependency]["healthcheck"].is_null(),
                    "{dependency} must have a healthcheck"
                );
            }
        }
    }
    // Every bind-mounted config file is in the repository.
    for name in &names {
        for volume in services[name.as_str()]["volumes"]
            .as_sequence()
            .into_iter()
            .flatten()
        {
            let source = volume
                .as_str()
                .and_then(|v| v.split(':').next())
                .unwrap_or_default();
            if source.starts_with("./") && !source.starts_with("./target/") {
                assert!(
                    root().join(source).is_file(),
                    "{name} mounts missing {source}"
                );
            }
        }
    }
    assert!(root().join("Dockerfile").is_file());
}

#[test]
fn the_collector_pipelines_use_only_defined_components() {
    let collector = yaml("bridge-config/otel-collector.yaml");
    let pipelines = &collector["service"]["pipelines"];
    assert!(!pipelines["traces"].is_null(), "a traces pipeline");
    for pipeline in keys(pipelines) {
        for section in ["receivers", "processors", "exporters"] {
            let defined = keys(&collector[section]);
            for used in pipelines[pipeline.as_str()][section]
                .as_sequence()
                .into_iter()
                .flatten()
            {
                let used = used.as_str().expect("a name");
                assert!(
                    defined.iter().any(|d| d == used),
                    "{pipeline}.{section}: {used} is not defined"
                );
            }
        }
    }
    let exporters = keys(&pipelines["traces"]);
    assert!(exporters.iter().any(|k| k == "exporters"));
    let traces_out: Vec<&str> = pipelines["traces"]["exporters"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        traces_out.contains(&"otlp_grpc/jaeger") && traces_out.contains(&"file"),
        "{traces_out:?}"
    );
    // Jaeger's OTLP port, where bridge-config/stack/jaeger.yaml listens.
    assert_eq!(
        collector["exporters"]["otlp_grpc/jaeger"]["endpoint"].as_str(),
        Some("${env:TRACEBRIDGE_JAEGER_HOST:-jaeger}:14317")
    );
    let jaeger = yaml("bridge-config/stack/jaeger.yaml");
    assert_eq!(
        jaeger["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"].as_str(),
        Some("0.0.0.0:14317")
    );
    // Tail sampling sits between the memory limiter and the batch.
    let processors: Vec<&str> = pipelines["traces"]["processors"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(processors, ["memory_limiter", "tail_sampling", "batch"]);
    let policies: Vec<&str> = collector["processors"]["tail_sampling"]["policies"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|p| p["type"].as_str())
        .collect();
    assert_eq!(policies, ["status_code", "latency", "probabilistic"]);
}

/// A `NAME=VALUE` line of scripts/stack.sh, with `$ROOT/` taken off.
fn stack_setting(script: &str, name: &str) -> String {
    script
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{name}=")))
        .map(|value| value.trim_start_matches("$ROOT/").to_owned())
        .unwrap_or_else(|| panic!("scripts/stack.sh sets no {name}"))
}

/// The first volume's source path of a compose service.
fn mounted(service: &Value) -> String {
    let volume = service["volumes"][0].as_str().expect("a volume");
    volume
        .split(':')
        .next()
        .expect("a source")
        .trim_start_matches("./")
        .to_owned()
}

/// The tag of a compose service's image.
fn image_tag(service: &Value) -> &str {
    let image = service["image"].as_str().expect("an image");
    image.rsplit_once(':').expect("a tag").1
}

#[test]
fn the_native_stack_runs_the_same_configs_and_versions_as_compose() {
    let script = std::fs::read_to_string(root().join("scripts/stack.sh")).expect("stack.sh");
    let compose = yaml("docker-compose.yml");
    let services = &compose["services"];

    let collector_config = stack_setting(&script, "COLLECTOR_CONFIG");
    assert_eq!(mounted(&services["otel-collector"]), collector_config);
    let jaeger_config = stack_setting(&script, "JAEGER_CONFIG");
    assert_eq!(mounted(&services["jaeger"]), jaeger_config);

    // The collector: the image's release is the one the manifest builds.
    let manifest = yaml(&stack_setting(&script, "MANIFEST"));
    let built = manifest["dist"]["version"].as_str().expect("dist.version");
    assert_eq!(image_tag(&services["otel-collector"]), built);
    for (kind, modules) in [
        ("receivers", "receiver"),
        ("processors", "processor"),
        ("exporters", "exporter"),
        ("extensions", "extension"),
    ] {
        let gomods: Vec<&str> = manifest[kind]
            .as_sequence()
            .into_iter()
            .flatten()
            .filter_map(|m| m["gomod"].as_str())
            .collect();
        assert!(
            gomods
                .iter()
                .all(|gomod| gomod.contains(&format!(" v{built}"))),
            "every {kind} module at {built}"
        );
        // Every component the config names is built in.
        let collector = yaml(&collector_config);
        for name in keys(&collector[kind]) {
            let component = name.split('/').next().expect("a type");
            // `otlp_grpc` is the otlp exporter's new name.
            let component = if component == "otlp_grpc" {
                "otlp"
            } else {
                component
            };
            let module = format!("{}{modules} ", component.replace('_', ""));
            assert!(
                gomods
                    .iter()
                    .any(|gomod| gomod.contains(&format!("/{module}"))),
                "{kind}: {name} is not in the builder manifest"
            );
        }
    }

    // Jaeger: v2.x is tagged v1.(x+63) for Go.
    let module_version = stack_setting(&script, "JAEGER_VERSION");
    let minor = |version: &str, major: &str| -> u32 {
        let rest = version
            .strip_prefix(major)
            .unwrap_or_else(|| panic!("{version}"));
        rest.split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .expect("a minor")
    };
    assert_eq!(
        minor(image_tag(&services["jaeger"]), "2.") + 63,
        minor(&module_version, "v1."),
        "compose's Jaeger image and the module scripts/stack.sh builds"
    );
}

#[test]
fn the_relay_configs_in_bridge_config_are_valid() {
    for file in [
        "bridge-config/relay.toml",
        "bridge-config/demo.toml",
        "bridge-config/compose.toml",
    ] {
        let text = std::fs::read_to_string(root().join(file)).expect("readable");
        let config = RelayConfig::parse(&text, file, |_| None).unwrap_or_else(|e| panic!("{e}"));
        assert!(!config.routes.is_empty(), "{file}");
    }
}

#[test]
fn the_dockerfile_copies_only_what_exists() {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).expect("Dockerfile");
    for line in dockerfile
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        let parts: Vec<&str> = line.split_whitespace().collect();
        for source in &parts[1..parts.len() - 1] {
            assert!(
                root().join(source).exists(),
                "Dockerfile copies missing {source}"
            );
        }
    }
}
