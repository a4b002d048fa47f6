//! The `tracebridge` command line: the relay daemon, its config check, and
//! the demo.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use tracebridge::relay::config::{Sink, Source};
use tracebridge::relay::{Relay, RelayConfig};

mod smoke;

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
    /// Sends one traced message through Kafka and checks that the consumer
    /// side continues the producer's trace (spans go to the span file or
    /// the collector named by OTEL_EXPORTER_OTLP_ENDPOINT).
    Demo {
        /// Kafka bootstrap servers.
        #[arg(
            long,
            env = "KAFKA_BOOTSTRAP_SERVERS",
            default_value = "127.0.0.1:9092"
        )]
        brokers: String,
        /// How long to wait for the message to come back, in seconds.
        #[arg(long, default_value = "30", value_name = "SECONDS")]
        timeout: u64,
    },
}

fn main() -> ExitCode {
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
        Command::Demo { brokers, timeout } => runtime.block_on(demo(&brokers, timeout)),
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
    writeln!(
        out,
        "  listen {}, max_in_flight {}, shutdown_timeout {:?}",
        config.listen, config.max_in_flight, config.shutdown_timeout
    )?;
    for route in &config.routes {
        let dead_letter = route
            .dead_letter
            .as_ref()
            .map(describe_sink)
            .unwrap_or_else(|| "none (a message no sink takes is retried)".into());
        writeln!(
            out,
            "  route {}: {} -> {} | mode {:?}, extract {:?}, inject {:?}, {} attempt(s) from {:?}, dead letters: {}",
            route.name,
            describe_source(&route.source),
            describe_sink(&route.sink),
            route.mode,
            route.propagation.extract_formats(),
            route.propagation.inject_formats(),
            route.attempts,
            route.backoff,
            dead_letter,
        )?;
    }
    print_out(&out);
    Ok(())
}

/// Prints to stdout; a closed pipe (`| head`) is not an error worth a panic.
fn print_out(text: &str) {
    use std::io::Write as _;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

fn describe_source(source: &Source) -> String {
    match source {
        Source::Kafka {
            broker,
            topic,
            group,
        } => format!("kafka {} topic {topic} (group {group})", broker.name),
        Source::Amqp { broker, queue } => format!("amqp {} queue {queue}", broker.name),
    }
}

fn describe_sink(sink: &Sink) -> String {
    match sink {
        Sink::Kafka { broker, topic, key } => {
            format!("kafka {} topic {topic} key {key:?}", broker.name)
        }
        Sink::Amqp {
            broker,
            exchange,
            routing_key,
        } => format!(
            "amqp {} exchange {exchange:?} routing key {routing_key:?}",
            broker.name
        ),
    }
}

async fn run(path: &std::path::Path) -> anyhow::Result<()> {
    // Registered before anything else: a SIGTERM during start-up must still
    // mean "drain and exit 0", not the default "die".
    let signals = ShutdownSignals::register()?;
    let config = RelayConfig::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let telemetry = tracebridge::telemetry::init(&config.service_name);
    let relay = Relay::start(config, tracebridge::Instrumentation::global())
        .await
        .context("starting the relay")?;
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

async fn demo(brokers: &str, timeout: u64) -> anyhow::Result<()> {
    let guard = tracebridge::telemetry::init("tracebridge-demo");
    let outcome = smoke::run(brokers, Duration::from_secs(timeout))
        .await
        .context("the Kafka smoke run failed")?;
    let spans_file = guard.spans_file().map(|p| p.display().to_string());
    drop(guard);
    println!(
        "checkout trace {} -> consumer trace {} (parent span {}): {}",
        outcome.producer_trace_id,
        outcome.consumer_trace_id,
        outcome.consumer_parent_span_id,
        if outcome.joined() {
            "one trace"
        } else {
            "BROKEN"
        }
    );
    if let Some(path) = spans_file {
        println!("spans written to {path}");
    }
    if !outcome.joined() {
        bail!("the consumer did not continue the producer's trace");
    }
    Ok(())
}
