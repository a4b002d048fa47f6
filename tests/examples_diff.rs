//! The before/after worker pairs under `examples/` differ by the lines the
//! docs promise: a worker that keeps its own OpenTelemetry provider and
//! `tracing` subscriber takes tracebridge in at most three changed lines
//! for Kafka and five for RabbitMQ, Cargo.toml's `tracebridge = "0.2"`
//! included; one with no telemetry yet, one line more (`telemetry::init`). Changed lines are counted as a user types them: the lines the
//! diff inserts (a line replaced is one), after rustfmt; the examples' own
//! `//!` headers, which explain them, are not the worker's code.

/// The Cargo.toml line every pair adds.
const CARGO_TOML_LINES: usize = 1;

fn code(path: &str) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines()
        .skip_while(|line| line.starts_with("//!"))
        .map(str::to_owned)
        .collect()
}

/// (inserted, deleted) lines of the shortest line diff from `before` to
/// `after` (longest common subsequence).
fn diff(before: &[String], after: &[String]) -> (usize, usize) {
    let (n, m) = (before.len(), after.len());
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if before[i] == after[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let common = lcs[0][0];
    (m - common, n - common)
}

fn changed_lines(before: &str, after: &str) -> usize {
    let (before, after) = (code(before), code(after));
    let (inserted, deleted) = diff(&before, &after);
    assert!(
        deleted <= inserted,
        "a change removes no more than it writes ({deleted} deleted, {inserted} inserted)"
    );
    inserted + CARGO_TOML_LINES
}

#[test]
fn the_kafka_worker_takes_tracebridge_in_three_lines() {
    let changed = changed_lines(
        "examples/kafka_worker_before.rs",
        "examples/kafka_worker.rs",
    );
    assert!(changed <= 3, "{changed} changed lines");
    assert_eq!(changed, 3, "the docs say three");
}

#[test]
fn the_rabbitmq_worker_takes_tracebridge_in_five_lines_at_most() {
    let changed = changed_lines("examples/amqp_worker_before.rs", "examples/amqp_worker.rs");
    assert!(changed <= 5, "{changed} changed lines");
    assert_eq!(changed, 3, "the docs say three");
}

#[test]
fn a_worker_with_no_telemetry_takes_one_line_more() {
    let changed = changed_lines(
        "examples/plain_worker_before.rs",
        "examples/plain_worker.rs",
    );
    assert_eq!(changed, 4, "the Kafka worker's three and `telemetry::init`");
}

#[test]
fn the_counter_sees_every_change() {
    let a: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
    let b: Vec<String> = ["a", "x", "c", "d"].map(String::from).to_vec();
    assert_eq!(diff(&a, &b), (2, 1));
    assert_eq!(diff(&a, &a), (0, 0));
}
