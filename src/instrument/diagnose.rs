//! Saying so, once, when tracebridge would record into nothing.
//!
//! A library that records through the application's providers can find
//! none: the application installed no tracer provider, or installed one of
//! another `opentelemetry` version (each version keeps its own global), or
//! gave its `tracing-opentelemetry` layer no tracer. Every span would then
//! vanish without a word; instead the first traced operation says what is
//! wrong and how to fix it — once per problem and process.

use std::sync::atomic::{AtomicBool, Ordering};

/// The OpenTelemetry line tracebridge is built for (checked against
/// Cargo.toml by a test).
pub(crate) const OPENTELEMETRY_LINE: &str = "0.33";
/// The `tracing-opentelemetry` line that bridges to it.
pub(crate) const TRACING_OPENTELEMETRY_LINE: &str = "0.34";

/// Why spans would go nowhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Problem {
    /// The global tracer provider is the no-op one and no
    /// `tracing-opentelemetry` layer of our line is in the subscriber.
    NoProvider,
    /// A `tracing-opentelemetry` layer is there, but its tracer makes no
    /// spans (`tracing_opentelemetry::layer()` without `.with_tracer`).
    LayerWithoutTracer,
}

static NO_PROVIDER: AtomicBool = AtomicBool::new(false);
static LAYER_WITHOUT_TRACER: AtomicBool = AtomicBool::new(false);

impl Problem {
    fn reported(self) -> &'static AtomicBool {
        match self {
            Problem::NoProvider => &NO_PROVIDER,
            Problem::LayerWithoutTracer => &LAYER_WITHOUT_TRACER,
        }
    }

    /// What is wrong and the fix.
    pub(crate) fn message(self) -> String {
        match self {
            Problem::NoProvider => format!(
                "tracebridge records nothing: no OpenTelemetry {OPENTELEMETRY_LINE} tracer provider \
                 is installed and the tracing subscriber has no tracing-opentelemetry \
                 {TRACING_OPENTELEMETRY_LINE} layer, so message spans go nowhere and traces break \
                 at this hop. Fix: install your provider with \
                 `opentelemetry::global::set_tracer_provider(provider.clone())`, or add \
                 `tracing_opentelemetry::layer().with_tracer(provider.tracer(\"my-service\"))` to \
                 your subscriber, or call `tracebridge::telemetry::init(\"my-service\")` in a \
                 service with no telemetry of its own. If you did install one, it belongs to \
                 another opentelemetry version, whose global tracebridge cannot see: \
                 `cargo tree -i opentelemetry --depth 0` names the version in your build, or \
                 lists them when there are several; tracebridge {version} needs opentelemetry \
                 {OPENTELEMETRY_LINE}.x and tracing-opentelemetry {TRACING_OPENTELEMETRY_LINE}.x",
                version = env!("CARGO_PKG_VERSION"),
            ),
            Problem::LayerWithoutTracer => format!(
                "tracebridge records nothing: the tracing-opentelemetry layer in your subscriber \
                 has no tracer, so message spans go nowhere. Fix: build it with \
                 `tracing_opentelemetry::layer().with_tracer(provider.tracer(\"my-service\"))` \
                 (tracing-opentelemetry {TRACING_OPENTELEMETRY_LINE}, opentelemetry \
                 {OPENTELEMETRY_LINE})"
            ),
        }
    }
}

/// Reports `problem` unless it was reported before: as a `tracing` warning
/// (target `tracebridge`), and on stderr when no subscriber would show it.
pub(crate) fn warn_once(problem: Problem) {
    if problem.reported().swap(true, Ordering::Relaxed) {
        return;
    }
    let message = problem.message();
    if tracing::dispatcher::has_been_set() {
        tracing::warn!(target: "tracebridge", problem = ?problem, "{message}");
    } else {
        eprintln!("WARN tracebridge: {message}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lines the messages name are the ones Cargo.toml builds with.
    #[test]
    fn the_named_versions_are_the_dependencies() {
        let manifest = include_str!("../../Cargo.toml");
        let version_of = |name: &str| {
            manifest
                .lines()
                .find(|line| line.starts_with(&format!("{name} = ")))
                .and_then(|line| line.split("version = \"").nth(1).or(line.split('"').nth(1)))
                .and_then(|rest| rest.split('"').next())
                .unwrap_or_else(|| panic!("{name} in Cargo.toml"))
                .to_owned()
        };
        assert_eq!(version_of("opentelemetry"), OPENTELEMETRY_LINE);
        assert_eq!(
            version_of("tracing-opentelemetry"),
            TRACING_OPENTELEMETRY_LINE
        );
    }

    #[test]
    fn messages_say_the_fix() {
        let message = Problem::NoProvider.message();
        for needle in [
            "set_tracer_provider",
            "tracing_opentelemetry::layer()",
            "telemetry::init",
            "cargo tree -i opentelemetry --depth 0",
            OPENTELEMETRY_LINE,
        ] {
            assert!(message.contains(needle), "{needle} in {message}");
        }
        assert!(
            Problem::LayerWithoutTracer
                .message()
                .contains("with_tracer")
        );
    }
}
