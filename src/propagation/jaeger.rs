//! The Jaeger `uber-trace-id` codec.
//!
//! `opentelemetry-jaeger-propagator` is deprecated and stops at
//! OpenTelemetry 0.32, yet legacy services keep sending this header, so a
//! relay must still read and write it. This is that crate's propagator
//! (0.32.0) written for the OpenTelemetry line tracebridge uses, behaviour
//! for behaviour: `tests/jaeger-compat` proves it byte-equal to the old
//! crate with a property test, which is why this file imports nothing but
//! `opentelemetry` (that test compiles it on its own).
//!
//! Wire format: `{trace-id}:{span-id}:{parent-span-id}:{flags}`, ids in hex
//! (shorter ids are zero-padded), `%3A` accepted for `:`, flags `1` sampled
//! and `2` debug; `uberctx-*` headers become the trace state.

use std::borrow::Cow;
use std::str::FromStr;

use opentelemetry::Context;
use opentelemetry::propagation::text_map_propagator::FieldIter;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};

/// The header carrying the span context.
const HEADER: &str = "uber-trace-id";
/// Headers with this prefix carry baggage, read into the trace state.
const BAGGAGE_PREFIX: &str = "uberctx-";
/// Jaeger's deprecated parent-span field, always written as `0`.
const DEPRECATED_PARENT_SPAN: &str = "0";
/// Jaeger's debug flag, kept in the trace flags as the old crate does.
const TRACE_FLAG_DEBUG: TraceFlags = TraceFlags::new(0x04);

/// Reads and writes `uber-trace-id` (see the module docs).
#[derive(Clone, Debug)]
pub(crate) struct JaegerPropagator {
    fields: [String; 1],
}

impl Default for JaegerPropagator {
    fn default() -> Self {
        Self::new()
    }
}

impl JaegerPropagator {
    /// The propagator for the standard header names.
    pub(crate) fn new() -> Self {
        Self {
            fields: [HEADER.to_owned()],
        }
    }

    /// The span context in `extractor`, or `None` when the header is absent
    /// or unusable.
    pub(crate) fn extract_span_context(&self, extractor: &dyn Extractor) -> Option<SpanContext> {
        let mut header_value = Cow::from(extractor.get(HEADER).unwrap_or(""));
        if !header_value.contains(':') {
            header_value = Cow::from(header_value.replace("%3A", ":"));
        }
        let parts = header_value.split_terminator(':').collect::<Vec<&str>>();
        if parts.len() != 4 {
            return None;
        }
        let trace_id = trace_id(parts[0])?;
        let span_id = span_id(parts[1])?;
        let flags = trace_flags(parts[3])?;
        let state = trace_state(extractor)?;
        Some(SpanContext::new(trace_id, span_id, flags, true, state))
    }
}

fn trace_id(hex: &str) -> Option<TraceId> {
    if hex.len() > 32 {
        return None;
    }
    TraceId::from_hex(hex).ok()
}

fn span_id(hex: &str) -> Option<SpanId> {
    match hex.len() {
        16 => SpanId::from_hex(hex).ok(),
        17.. => None,
        _ => SpanId::from_hex(&format!("{hex:0>16}")).ok(),
    }
}

fn trace_flags(flag: &str) -> Option<TraceFlags> {
    if flag.len() > 2 {
        return None;
    }
    let flag = u8::from_str(flag).ok()?;
    Some(match (flag & 0x01 == 0x01, flag & 0x02 == 0x02) {
        (true, true) => TraceFlags::SAMPLED | TRACE_FLAG_DEBUG,
        (true, false) => TraceFlags::SAMPLED,
        (false, _) => TraceFlags::default(),
    })
}

fn trace_state(extractor: &dyn Extractor) -> Option<TraceState> {
    let baggage = extractor
        .keys()
        .into_iter()
        .filter(|key| key.starts_with(BAGGAGE_PREFIX))
        .filter_map(|key| {
            extractor
                .get(key)
                .map(|value| (key.to_string(), value.to_string()))
        });
    TraceState::from_key_value(baggage).ok()
}

impl TextMapPropagator for JaegerPropagator {
    fn inject_context(&self, cx: &Context, injector: &mut dyn Injector) {
        let span = cx.span();
        let span_context = span.span_context();
        if !span_context.is_valid() {
            return;
        }
        let flag: u8 = match (
            span_context.is_sampled(),
            span_context.trace_flags() & TRACE_FLAG_DEBUG == TRACE_FLAG_DEBUG,
        ) {
            (true, true) => 0x03,
            (true, false) => 0x01,
            (false, _) => 0x00,
        };
        injector.set(
            HEADER,
            format!(
                "{}:{}:{DEPRECATED_PARENT_SPAN}:{flag:x}",
                span_context.trace_id(),
                span_context.span_id(),
            ),
        );
    }

    fn extract_with_context(&self, cx: &Context, extractor: &dyn Extractor) -> Context {
        self.extract_span_context(extractor)
            .map(|sc| cx.with_remote_span_context(sc))
            .unwrap_or_else(|| cx.clone())
    }

    fn fields(&self) -> FieldIter<'_> {
        FieldIter::new(self.fields.as_ref())
    }
}
