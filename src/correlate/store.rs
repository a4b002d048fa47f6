//! Where the relay remembers, per request id, the trace context last seen
//! carrying it — so a later message with the same id but no context (from
//! an uninstrumented producer) can be put into that trace.

use std::future::Future;
use std::time::Duration;

use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

use super::RequestId;

/// A store failed (e.g. Redis unreachable); the caller degrades to its
/// fallback policy and the message goes on.
#[derive(Debug, thiserror::Error)]
#[error("correlation store: {0}")]
pub struct StoreError(pub String);

/// Request id → the context last seen carrying it.
pub trait CorrelationStore: Send + Sync {
    /// Remembers `context` for `id` (replacing what was there).
    fn record(
        &self,
        id: &RequestId,
        context: &SpanContext,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The context last recorded for `id`, as a remote parent.
    fn lookup(
        &self,
        id: &RequestId,
    ) -> impl Future<Output = Result<Option<SpanContext>, StoreError>> + Send;
}

/// The in-process store (the default): bounded in entries, each forgotten
/// after its time to live. Memory per entry is not measured yet (the
/// correlation issue's benchmark will).
pub struct MemoryStore {
    cache: moka::sync::Cache<String, (TraceId, SpanId, TraceFlags)>,
}

impl MemoryStore {
    /// At most `max_entries`, each kept for `ttl` after it was recorded.
    pub fn new(max_entries: u64, ttl: Duration) -> Self {
        Self {
            cache: moka::sync::Cache::builder()
                .max_capacity(max_entries)
                .time_to_live(ttl)
                .build(),
        }
    }

    /// Entries held now (after pending evictions are applied).
    pub fn entry_count(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }
}

impl CorrelationStore for MemoryStore {
    async fn record(&self, id: &RequestId, context: &SpanContext) -> Result<(), StoreError> {
        if context.is_valid() {
            self.cache.insert(
                id.as_str().to_owned(),
                (context.trace_id(), context.span_id(), context.trace_flags()),
            );
        }
        Ok(())
    }

    async fn lookup(&self, id: &RequestId) -> Result<Option<SpanContext>, StoreError> {
        Ok(self
            .cache
            .get(id.as_str())
            .map(|(trace_id, span_id, flags)| {
                SpanContext::new(trace_id, span_id, flags, true, TraceState::default())
            }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(trace: u128, span: u64) -> SpanContext {
        SpanContext::new(
            TraceId::from(trace),
            SpanId::from(span),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        )
    }

    fn id(s: &str) -> RequestId {
        RequestId::new(s.as_bytes()).unwrap()
    }

    #[tokio::test]
    async fn records_and_finds_the_last_context_per_id() {
        let store = MemoryStore::new(100, Duration::from_secs(60));
        store.record(&id("R-1"), &context(1, 1)).await.unwrap();
        store.record(&id("R-1"), &context(2, 2)).await.unwrap();
        let found = store.lookup(&id("R-1")).await.unwrap().expect("recorded");
        assert_eq!(
            (found.trace_id(), found.span_id()),
            (TraceId::from(2u128), SpanId::from(2u64))
        );
        assert!(found.is_remote(), "a stored context is a remote parent");
        assert!(found.is_sampled());
        assert!(store.lookup(&id("R-2")).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn invalid_contexts_are_not_recorded() {
        let store = MemoryStore::new(100, Duration::from_secs(60));
        store
            .record(&id("R"), &SpanContext::empty_context())
            .await
            .unwrap();
        assert!(store.lookup(&id("R")).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn the_store_stays_within_its_bound() {
        let store = MemoryStore::new(50, Duration::from_secs(60));
        for i in 0..500u64 {
            store
                .record(&id(&format!("R-{i}")), &context(u128::from(i) + 1, i + 1))
                .await
                .unwrap();
        }
        assert!(store.entry_count() <= 50, "{} entries", store.entry_count());
    }

    #[tokio::test]
    async fn entries_expire_after_their_time_to_live() {
        let store = MemoryStore::new(100, Duration::from_millis(50));
        store.record(&id("R"), &context(1, 1)).await.unwrap();
        assert!(store.lookup(&id("R")).await.unwrap().is_some());
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert!(store.lookup(&id("R")).await.unwrap().is_none(), "expired");
    }
}
