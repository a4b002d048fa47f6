//! JSON-lines logs that carry the `trace_id` and `span_id` of the span they
//! were written in, so a log line leads straight to its trace.
//!
//! The ids come from the current `tracing` span (bridged to OpenTelemetry by
//! tracing-opentelemetry) or, outside any `tracing` span, from the current
//! OpenTelemetry context — where tracebridge's wrappers run a handler.

use std::io::Write;
use std::sync::OnceLock;

use opentelemetry::trace::TraceContextExt;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Dispatch, Event, Subscriber};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

/// A `tracing_subscriber` layer writing one JSON line per event —
/// `{"timestamp","level","target","message",<fields>,"span","trace_id","span_id"}`
/// — whose `trace_id` / `span_id` are those of the span the event was
/// written in, so a log line leads straight to its trace. Add it to your
/// own subscriber:
///
/// ```
/// use tracing_subscriber::layer::SubscriberExt as _;
///
/// let subscriber = tracing_subscriber::registry()
///     // .with(tracing_opentelemetry::layer().with_tracer(…)) — your spans
///     .with(tracebridge::telemetry::JsonLogLayer::new(std::io::stdout));
/// tracing::subscriber::with_default(subscriber, || tracing::info!("ready"));
/// ```
///
/// The ids come from the current `tracing` span (bridged to OpenTelemetry
/// by a `tracing-opentelemetry` layer) or, outside any, from the current
/// OpenTelemetry context — where tracebridge runs a message's handler.
/// A line that cannot be written is dropped; logging never fails the
/// application.
pub struct JsonLogLayer<W> {
    make_writer: W,
    dispatch: OnceLock<tracing::dispatcher::WeakDispatch>,
}

impl<W> JsonLogLayer<W>
where
    W: for<'w> MakeWriter<'w> + 'static,
{
    /// Writes to what `make_writer` makes (`std::io::stdout`,
    /// `std::io::stderr`, a `Mutex<File>`, …).
    pub fn new(make_writer: W) -> Self {
        Self {
            make_writer,
            dispatch: OnceLock::new(),
        }
    }
}

impl<W> std::fmt::Debug for JsonLogLayer<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonLogLayer").finish_non_exhaustive()
    }
}

impl<S, W> Layer<S> for JsonLogLayer<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + 'static,
{
    fn on_register_dispatch(&self, subscriber: &Dispatch) {
        let _ = self.dispatch.set(subscriber.downgrade());
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut line = Map::new();
        let mut timestamp = String::new();
        if SystemTime
            .format_time(&mut Writer::new(&mut timestamp))
            .is_ok()
        {
            line.insert("timestamp".into(), Value::String(timestamp));
        }
        let metadata = event.metadata();
        line.insert("level".into(), Value::String(metadata.level().to_string()));
        line.insert("target".into(), Value::String(metadata.target().to_owned()));
        event.record(&mut JsonVisitor(&mut line));

        let span = ctx.event_span(event);
        let otel_cx = match (&span, self.dispatch.get().and_then(|d| d.upgrade())) {
            (Some(span), Some(dispatch)) => {
                line.insert("span".into(), Value::String(span.name().to_owned()));
                tracing_opentelemetry::get_otel_context(&span.id(), &dispatch)
            }
            _ => None,
        }
        .unwrap_or_else(opentelemetry::Context::current);
        let otel_span = otel_cx.span();
        let span_context = otel_span.span_context();
        if span_context.is_valid() {
            line.insert(
                "trace_id".into(),
                Value::String(span_context.trace_id().to_string()),
            );
            line.insert(
                "span_id".into(),
                Value::String(span_context.span_id().to_string()),
            );
        }

        if let Ok(mut bytes) = serde_json::to_vec(&line) {
            bytes.push(b'\n');
            // A log that cannot be written must not take the process down.
            let _ = self.make_writer.make_writer_for(metadata).write_all(&bytes);
        }
    }
}

struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl Visit for JsonVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().to_owned(), Value::String(value.to_owned()));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), Value::Bool(value));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0
            .insert(field.name().to_owned(), Value::String(value.to_string()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), Value::String(format!("{value:?}")));
    }
}
