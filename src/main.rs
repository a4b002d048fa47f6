//! The `tracebridge` command line.

use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

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
        /// How long to wait for the message to come back.
        #[arg(long, default_value = "30", value_name = "SECONDS")]
        timeout: u64,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Demo { brokers, timeout } => {
            let guard = tracebridge::telemetry::init("tracebridge-demo");
            let outcome = smoke::run(&brokers, Duration::from_secs(timeout))
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
    }
}
