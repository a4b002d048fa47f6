//! Counts of what happened to the spans this process made: ended, exported,
//! failed to export. The SDK's batch processor drops spans silently when its
//! bounded queue is full (a slow or dead collector); `ended − exported −
//! export_failed` is what was dropped or is still queued (at most the queue
//! size, 2048), so a growing gap is visible in the relay's `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry::Context;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};

static ENDED: AtomicU64 = AtomicU64::new(0);
static EXPORTED: AtomicU64 = AtomicU64::new(0);
static EXPORT_FAILED: AtomicU64 = AtomicU64::new(0);

/// A snapshot of the span counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SpanCounts {
    /// Spans that ended (and were handed to the processor).
    pub ended: u64,
    /// Spans the exporter delivered.
    pub exported: u64,
    /// Spans in batches the exporter failed to deliver.
    pub export_failed: u64,
}

impl SpanCounts {
    /// Ended spans neither exported nor failed: dropped by the full queue
    /// or still waiting in it.
    pub fn not_exported(&self) -> u64 {
        self.ended
            .saturating_sub(self.exported)
            .saturating_sub(self.export_failed)
    }
}

/// The counts so far, for this process (spans installed by
/// [`super::init`]).
pub fn span_counts() -> SpanCounts {
    SpanCounts {
        ended: ENDED.load(Ordering::Relaxed),
        exported: EXPORTED.load(Ordering::Relaxed),
        export_failed: EXPORT_FAILED.load(Ordering::Relaxed),
    }
}

/// Counts ended spans, then hands them to the wrapped processor.
#[derive(Debug)]
pub(crate) struct CountingProcessor<P>(pub(crate) P);

impl<P: SpanProcessor> SpanProcessor for CountingProcessor<P> {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.0.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if span.span_context.is_sampled() {
            ENDED.fetch_add(1, Ordering::Relaxed);
        }
        self.0.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.0.set_resource(resource);
    }
}

/// Counts the spans of every batch by its export outcome.
#[derive(Debug)]
pub(crate) struct CountingExporter<E>(pub(crate) E);

impl<E: SpanExporter> SpanExporter for CountingExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len() as u64;
        let result = self.0.export(batch).await;
        match &result {
            Ok(()) => EXPORTED.fetch_add(n, Ordering::Relaxed),
            Err(_) => EXPORT_FAILED.fetch_add(n, Ordering::Relaxed),
        };
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.0.set_resource(resource);
    }
}
