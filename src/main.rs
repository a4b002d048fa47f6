//! The `tracebridge` command line: the relay daemon, its config check, and
//! the demo.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use tracebridge::relay::config::{KeySource, Sink, Source};
use tracebridge::relay::{Relay, RelayConfig};

// The binary's allocator, chosen by measurement (BENCHMARKS.md); the
// library leaves the choice to the programs that link it.
#[cfg(all(feature = "mimalloc", not(feature = "jemalloc")))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

mod demo;
mod memory;

/// tracebridge: keeps distributed traces whole across Kafka and RabbitMQ.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Runs the relay: every route of the config moves messages from its
    /// source to its sink, each message kept in its trace, at-least-once.
    /// SIGTERM or Ctrl-C stops taking messages, drains those in flight and
    /// exits 0 within the configured shutdown_timeout.
    Run {
        /// The relay's TOML configuration (see bridge-config/relay.toml).
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
    /// Validates a configuration and prints the routes it would run;
    /// exits non-zero, listing every problem with its line, when invalid.
    Check {
        /// The relay's TOML configuration.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
    /// Draws the traces of an OTLP/JSON span file (tracebridge's, or the
    /// OpenTelemetry Collector file exporter's) as trees in the terminal.
    Traces {
        /// The span file (one OTLP/JSON request per line); `-` for stdin.
        file: PathBuf,
        /// Only this trace.
        #[arg(long, value_name = "ID")]
        trace_id: Option<String>,
        /// Only traces with a span of this service.
        #[arg(long, value_name = "NAME")]
        service: Option<String>,
        /// Only traces with an error.
        #[arg(long)]
        errors: bool,
        /// At most this many traces, earliest first.
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        /// Draw the traces that links join (a link-mode hop and its
        /// origin, a batch and its producers, a correlated message
        /// and its request) together, as one journey.
        #[arg(long)]
        journeys: bool,
    },
    /// The whole story on the local brokers: checkout → Kafka `orders` →
    /// relay → RabbitMQ `fulfillment` → worker, plus a legacy billing
    /// producer joined by request id and one failing order; prints every
    /// order's trace tree and exits non-zero if any trace came out broken.
    Demo {
        /// Kafka bootstrap servers.
        #[arg(
            long,
            env = "KAFKA_BOOTSTRAP_SERVERS",
            default_value = "127.0.0.1:9092"
        )]
        kafka: String,
        /// AMQP URL.
        #[arg(
            long,
            env = "AMQP_URL",
            default_value = "amqp://guest:guest@127.0.0.1:5672/%2f",
            hide_env_values = true
        )]
        amqp: String,
        /// The relay's configuration.
        #[arg(long, default_value = "bridge-config/demo.toml", value_name = "FILE")]
        config: PathBuf,
        /// Start no relay here: one runs beside the demo (docker compose).
        #[arg(long)]
        external_relay: bool,
        /// Only create the topics, exchanges and queues, then exit.
        #[arg(long)]
        setup_only: bool,
        /// Orders to send (order 2 fails in the worker).
        #[arg(long, default_value = "3", value_name = "N")]
        orders: usize,
        /// Where the span file and the logs go (replaced on each run).
        #[arg(long, default_value = "target/demo", value_name = "DIR")]
        out: PathBuf,
        /// How long each stage may take, in seconds.
        #[arg(long, default_value = "60", value_name = "SECONDS")]
        timeout: u64,
        /// Jaeger's query service: when OTEL_EXPORTER_OTLP_ENDPOINT sends
        /// the spans to a collector, the demo reads its traces back from
        /// here and checks them as it checks the span file.
        #[arg(
            long,
            env = "TRACEBRIDGE_JAEGER_URL",
            default_value = "http://localhost:16686",
            value_name = "URL"
        )]
        jaeger: String,
    },
}

fn main() -> ExitCode {
    memory::cap_malloc_arenas();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("tracebridge: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Check { config } => check(&config),
        Command::Run { config } => runtime.block_on(run(&config)),
        Command::Demo {
            kafka,
            amqp,
            config,
            external_relay,
            setup_only,
            orders,
            out,
            timeout,
            jaeger,
        } => {
            let settings = demo::Settings {
                kafka,
                amqp,
                config: (!external_relay).then_some(config),
                orders: orders.max(FAILING_ORDER_MIN),
                setup_only,
                timeout: Duration::from_secs(timeout),
            };
            runtime.block_on(run_demo(&settings, &out, &jaeger))
        }
        Command::Traces {
            file,
            trace_id,
            service,
            errors,
            limit,
            journeys,
        } => traces(
            &file,
            &tracebridge::traces::Options {
                trace_id,
                service,
                errors,
                limit,
                journeys,
            },
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("tracebridge: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn check(path: &std::path::Path) -> anyhow::Result<()> {
    use std::fmt::Write as _;
    let config = RelayConfig::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut out = String::new();
    writeln!(
        out,
        "{}: valid, {} route(s)",
        path.display(),
        config.routes.len()
    )?;
    // In the file's own words and values, so it reads like the config.
    writeln!(
        out,
        "  [relay] listen = \"{}\", max_in_flight = {}, max_in_flight_bytes = {}, shutdown_timeout = \"{}\"",
        config.listen,
        config.max_in_flight,
        config.max_in_flight_bytes,
        humantime::format_duration(config.shutdown_timeout)
    )?;
    if !config.listen.ip().is_loopback() {
        writeln!(
            out,
            "  warning: [relay] listen = \"{}\" is not a loopback address: /metrics, /readyz and /healthz have no authentication; bind 127.0.0.1 or keep the port behind a firewall",
            config.listen
        )?;
    }
    let rules = &config.attribute_rules;
    let captured: Vec<String> = rules
        .policy
        .captured()
        .iter()
        .map(|(name, _)| format!("\"{name}\""))
        .collect();
    writeln!(
        out,
        "  [telemetry] semconv_version = \"{}\"{}, record_message_keys = \"{}\", record_request_ids = \"{}\", capture_headers = [{}]",
        rules.conventions.version.as_str(),
        if rules.conventions.duplicate_pre_1_26 {
            " (+ pre-1.26 keys: messaging/dup)"
        } else {
            ""
        },
        rules.policy.message_keys().as_str(),
        rules.policy.request_ids().as_str(),
        captured.join(", ")
    )?;
    for route in &config.routes {
        let formats = |formats: &[tracebridge::Format]| {
            let names: Vec<String> = formats
                .iter()
                .map(|f| format!("\"{}\"", f.name()))
                .collect();
            format!("[{}]", names.join(", "))
        };
        writeln!(out, "  [[route]] name = \"{}\"", route.name)?;
        writeln!(out, "    from = {}", describe_source(&route.source))?;
        writeln!(out, "    to = {}", describe_sink(&route.sink))?;
        writeln!(
            out,
            "    propagation = {{ mode = \"{}\", extract = {}, inject = {} }}",
            route.mode.as_str(),
            formats(route.propagation.extract_formats()),
            formats(route.propagation.inject_formats()),
        )?;
        writeln!(
            out,
            "    retry = {{ attempts = {}, backoff = \"{}\" }}",
            route.attempts,
            humantime::format_duration(route.backoff)
        )?;
        match &route.dead_letter {
            Some(dead_letter) => writeln!(out, "    dead_letter = {}", describe_sink(dead_letter))?,
            None => writeln!(
                out,
                "    dead_letter: none (a message that can never be sent stops the route; transient failures are retried)"
            )?,
        }
        if let Some(c) = &route.correlation {
            let sources: Vec<String> = c
                .request_id
                .sources()
                .iter()
                .map(|s| format!("\"{}\"", describe_request_id_source(s)))
                .collect();
            writeln!(
                out,
                "    correlation = {{ request_id = [{}], policy = \"{}\", fallback = \"{}\", store = {:?} }}",
                sources.join(", "),
                format!("{:?}", c.policy).to_lowercase(),
                format!("{:?}", c.fallback).to_lowercase(),
                c.store
            )?;
        }
    }
    print_out(&out);
    Ok(())
}

fn traces(file: &std::path::Path, options: &tracebridge::traces::Options) -> anyhow::Result<()> {
    use std::io::IsTerminal as _;
    let traces = if file == std::path::Path::new("-") {
        tracebridge::traces::Traces::read(std::io::stdin().lock(), options)
    } else {
        let opened = std::fs::File::open(file)
            .with_context(|| format!("cannot open span file {}", file.display()))?;
        tracebridge::traces::Traces::read(std::io::BufReader::new(opened), options)
    }
    .with_context(|| format!("reading {}", file.display()))?;
    print_out(&traces.render(options, std::io::stdout().is_terminal()));
    Ok(())
}

/// How to run this binary again from here: `./target/release/tracebridge`
/// after `make demo`, the bare name when it is not under the current
/// directory (installed on the PATH).
fn this_binary() -> String {
    let exe = std::env::current_exe().ok();
    let cwd = std::env::current_dir().ok();
    match (exe, cwd) {
        (Some(exe), Some(cwd)) => match exe.strip_prefix(&cwd) {
            Ok(relative) => format!("./{}", relative.display()),
            Err(_) => "tracebridge".to_owned(),
        },
        _ => "tracebridge".to_owned(),
    }
}

/// Prints to stdout; a closed pipe (`| head`) is not an error worth a panic.
fn print_out(text: &str) {
    use std::io::Write as _;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

fn describe_request_id_source(source: &tracebridge::correlate::RequestIdSource) -> String {
    use tracebridge::correlate::RequestIdSource as S;
    match source {
        S::Header(name) => format!("header:{name}"),
        S::CorrelationId => "correlation_id".into(),
        S::MessageId => "message_id".into(),
        S::Key => "key".into(),
        S::JsonPointer(pointer) => format!("json:{pointer}"),
    }
}

fn describe_source(source: &Source) -> String {
    match source {
        Source::Kafka {
            broker,
            topic,
            group,
        } => format!(
            "{{ kafka = \"{}\", topic = \"{topic}\", group = \"{group}\" }}",
            broker.name
        ),
        Source::Amqp { broker, queue } => {
            format!("{{ amqp = \"{}\", queue = \"{queue}\" }}", broker.name)
        }
    }
}

/// `key = "…"`, `key_from = "…"`, or nothing for the default.
fn describe_key(name: &str, key: &KeySource, default: &KeySource) -> String {
    if key == default {
        return String::new();
    }
    match key {
        KeySource::Fixed(fixed) => format!(", {name} = \"{fixed}\""),
        KeySource::SourceKey => format!(", {name}_from = \"source_key\""),
        KeySource::Header(header) => format!(", {name}_from = \"header:{header}\""),
    }
}

fn describe_sink(sink: &Sink) -> String {
    match sink {
        Sink::Kafka { broker, topic, key } => format!(
            "{{ kafka = \"{}\", topic = \"{topic}\"{} }}",
            broker.name,
            describe_key("key", key, &KeySource::SourceKey)
        ),
        Sink::Amqp {
            broker,
            exchange,
            routing_key,
        } => format!(
            "{{ amqp = \"{}\", exchange = \"{exchange}\"{} }}",
            broker.name,
            describe_key("routing_key", routing_key, &KeySource::Fixed(String::new()))
        ),
    }
}

async fn run(path: &std::path::Path) -> anyhow::Result<()> {
    // Registered before anything else: a SIGTERM during start-up must still
    // mean "drain and exit 0", not the default "die".
    let signals = ShutdownSignals::register()?;
    let config = RelayConfig::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let telemetry = tracebridge::telemetry::TelemetryBuilder::new(&config.service_name)
        .with_prometheus(tracebridge::telemetry::PrometheusBridge::new("messaging."))
        .init();
    // A client library's error may quote a configured value verbatim.
    let secrets = config.secrets();
    // The providers set up above, directly (no per-span lookup), under the
    // config's conventions, so the spans' schema URL names them too.
    let instrumentation = match telemetry.provider() {
        Some(provider) => tracebridge::Instrumentation::from_sdk_with_rules(
            provider,
            telemetry
                .meter_provider()
                .map(|meters| meters as &dyn opentelemetry::metrics::MeterProvider),
            config.attribute_rules.clone(),
        ),
        None => tracebridge::Instrumentation::global()
            .with_conventions(config.attribute_rules.conventions)
            .with_attribute_policy(config.attribute_rules.policy.clone()),
    };
    let relay = Relay::start(config, instrumentation).await.map_err(|err| {
        anyhow::anyhow!(
            "starting the relay: {}",
            tracebridge::redact::redact_secrets(&format!("{err:#}"), &secrets)
        )
    })?;
    tracing::info!(config = %path.display(), "relay running");
    signals.recv().await;
    tracing::info!("shutdown requested: draining messages in flight");
    let drained = relay.shutdown().await;
    drop(telemetry);
    if !drained {
        bail!("shutdown timeout reached with messages in flight (they will be redelivered)");
    }
    Ok(())
}

/// SIGTERM and SIGINT (Ctrl-C), listened to from the moment they are
/// registered.
struct ShutdownSignals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn register() -> anyhow::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                term: signal(SignalKind::terminate()).context("listening for SIGTERM")?,
                int: signal(SignalKind::interrupt()).context("listening for SIGINT")?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    async fn recv(mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
        #[cfg(not(unix))]
        {
            let _ = &mut self;
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// The demo needs the failing order to exist.
const FAILING_ORDER_MIN: usize = 2;

async fn run_demo(
    settings: &demo::Settings,
    out: &std::path::Path,
    jaeger: &str,
) -> anyhow::Result<()> {
    use std::io::IsTerminal as _;
    use tracebridge::telemetry::{SpanTarget, TelemetryBuilder, span_targets_from_env};
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let spans = out.join("spans.jsonl");
    let logs = out.join("logs.jsonl");
    for file in [&spans, &logs] {
        match std::fs::remove_file(file) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                return Err(err).with_context(|| format!("removing {}", file.display()));
            }
            _ => {}
        }
    }
    // Always the span file (the view reads it); a collector too when the
    // environment names one (scripts/stack.sh, docker compose).
    let mut targets = vec![SpanTarget::File(spans.clone())];
    let to_collector = std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_some();
    if to_collector {
        targets.extend(
            span_targets_from_env(|name| std::env::var(name).ok())?
                .into_iter()
                .filter(|t| matches!(t, SpanTarget::Otlp(_))),
        );
    }
    let log_file =
        std::fs::File::create(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let mut guard = TelemetryBuilder::new("tracebridge")
        .with_targets(targets)
        .with_log_writer(std::sync::Mutex::new(log_file))
        .try_init()?;
    let checkout = guard.service_provider("checkout")?;
    let fulfillment = guard.service_provider("fulfillment")?;
    let relay = match guard.provider() {
        Some(provider) => tracebridge::Instrumentation::from_sdk(provider, None),
        None => tracebridge::Instrumentation::global(),
    };
    let services = demo::Services {
        checkout,
        relay,
        fulfillment,
    };
    let ran = demo::run(settings, services).await;
    // Flushes every service's spans into the file before it is read.
    drop(guard);
    let ids = ran?;
    if settings.setup_only {
        return Ok(());
    }

    // Read once; drawn and checked for this run's orders only (the topics
    // may hold earlier runs' messages).
    let opened =
        std::fs::File::open(&spans).with_context(|| format!("opening {}", spans.display()))?;
    let view =
        tracebridge::traces::Traces::read(std::io::BufReader::new(opened), &Default::default())
            .with_context(|| format!("reading {}", spans.display()))?;
    let colour = std::io::stdout().is_terminal();
    let mut problems = Vec::new();
    let mut span_total = 0;
    for (index, (request_id, trace_id)) in ids.iter().enumerate() {
        let options = tracebridge::traces::Options {
            trace_id: Some(trace_id.clone()),
            ..Default::default()
        };
        print_out(&view.render_trees(&options, colour));
        let verdict = demo::verify(
            &view,
            request_id,
            trace_id,
            index + 1 == demo::FAILING_ORDER,
        );
        span_total += verdict.spans;
        problems.extend(verdict.problems);
    }
    if to_collector && problems.is_empty() {
        let tail = demo::TailSampling::from_env(|name| std::env::var(name).ok())?;
        problems.extend(demo::verify_in_jaeger(jaeger, &ids, &tail).await?);
    }
    let joined = problems.is_empty();
    print_out(&format!(
        "\n{} orders sent, {} traces, {:.1} spans per trace, every hop joined: {}\n\
         spans: {}  (view again: {} traces {})\nlogs:  {}\n",
        ids.len(),
        ids.len(),
        span_total as f64 / ids.len().max(1) as f64,
        if joined { "yes" } else { "NO" },
        spans.display(),
        this_binary(),
        spans.display(),
        logs.display(),
    ));
    if !joined {
        bail!("broken traces:\n  {}", problems.join("\n  "));
    }
    Ok(())
}
