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
/// after its time to live; about 100 bytes per entry (1M entries: see
/// BENCHMARKS.md).
///
/// Up to sixteen shards, each a hash map plus a queue in insertion order: the
/// queue's front is the oldest entry, so both the bound (evict the oldest)
/// and the time to live (drop expired fronts) cost O(1) per insert. A
/// general cache (moka 0.12) was measured at 330 bytes per entry, over
/// the 256 MiB-per-million budget.
pub struct MemoryStore {
    shards: Box<[std::sync::Mutex<Shard>]>,
    max_per_shard: usize,
    ttl: Duration,
}

const SHARDS: usize = 16;
/// Below this many entries per shard, fewer shards: a hash's uneven spread
/// would otherwise evict well before the bound is reached.
const MIN_PER_SHARD: usize = 1024;

#[derive(Default)]
struct Shard {
    entries: std::collections::HashMap<[u8; 16], Entry>,
    /// Keys in insertion order, with the time each was inserted; a key
    /// re-recorded later is also further back (the stale copy is skipped).
    order: std::collections::VecDeque<([u8; 16], std::time::Instant)>,
}

#[derive(Clone, Copy)]
struct Entry {
    trace_id: TraceId,
    span_id: SpanId,
    flags: TraceFlags,
    recorded: std::time::Instant,
}

impl Shard {
    /// Drops the front while it is expired or the shard is over `max`.
    fn trim(&mut self, max: usize, ttl: Duration, now: std::time::Instant) {
        while let Some(&(key, at)) = self.order.front() {
            let over = self.entries.len() > max || self.order.len() > 2 * max.max(1);
            if !over && now.duration_since(at) < ttl {
                break;
            }
            self.order.pop_front();
            // Only if this queue slot is the entry's latest recording.
            if self.entries.get(&key).is_some_and(|e| e.recorded == at) {
                self.entries.remove(&key);
            }
        }
    }
}

/// The memory store's key for `id`: SHA-256, truncated to 16 bytes. A
/// fixed-size key saves a heap allocation per entry (ids may be 256
/// bytes); a cryptographic hash means no one can craft ids that collide
/// into another request's trace.
fn memory_key(id: &RequestId) -> [u8; 16] {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(id.as_str().as_bytes());
    let mut key = [0u8; 16];
    key.copy_from_slice(&digest[..16]);
    key
}

impl MemoryStore {
    /// At most `max_entries`, each kept for `ttl` after it was recorded.
    pub fn new(max_entries: u64, ttl: Duration) -> Self {
        let max = usize::try_from(max_entries).unwrap_or(usize::MAX).max(1);
        // Small bounds get one shard (exact); large ones up to SHARDS, each
        // holding its share, rounded down so the total stays within.
        let shards = (max / MIN_PER_SHARD).clamp(1, SHARDS);
        Self {
            shards: (0..shards).map(|_| std::sync::Mutex::default()).collect(),
            max_per_shard: max / shards,
            ttl,
        }
    }

    fn shard(&self, key: &[u8; 16]) -> std::sync::MutexGuard<'_, Shard> {
        let shard = &self.shards[usize::from(key[0]) % self.shards.len()];
        // A panic while holding the lock cannot leave a shard half-updated
        // in a way that matters for a cache: keep using it.
        shard
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Entries held now (expired ones dropped first).
    pub fn entry_count(&self) -> u64 {
        let now = std::time::Instant::now();
        self.shards
            .iter()
            .map(|shard| {
                let mut shard = shard
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                shard.trim(self.max_per_shard, self.ttl, now);
                shard.entries.len() as u64
            })
            .sum()
    }
}

impl CorrelationStore for MemoryStore {
    async fn record(&self, id: &RequestId, context: &SpanContext) -> Result<(), StoreError> {
        if context.is_valid() {
            let key = memory_key(id);
            let now = std::time::Instant::now();
            let mut shard = self.shard(&key);
            shard.entries.insert(
                key,
                Entry {
                    trace_id: context.trace_id(),
                    span_id: context.span_id(),
                    flags: context.trace_flags(),
                    recorded: now,
                },
            );
            shard.order.push_back((key, now));
            shard.trim(self.max_per_shard, self.ttl, now);
        }
        Ok(())
    }

    async fn lookup(&self, id: &RequestId) -> Result<Option<SpanContext>, StoreError> {
        let key = memory_key(id);
        let shard = self.shard(&key);
        Ok(shard
            .entries
            .get(&key)
            .filter(|e| e.recorded.elapsed() < self.ttl)
            .map(|e| SpanContext::new(e.trace_id, e.span_id, e.flags, true, TraceState::default())))
    }
}

/// The shared store: request id → context as Redis keys with a time to
/// live, so several relay instances correlate each other's messages.
///
/// Never blocks the relay for long: each command is bounded by `timeout`,
/// and after a failure no connection is attempted for a second (commands
/// fail at once meanwhile), so an outage costs one timeout per second, not
/// one per message.
pub struct RedisStore {
    client: redis::Client,
    /// For messages: the URL with its password replaced.
    redacted_url: String,
    prefix: String,
    ttl: Duration,
    timeout: Duration,
    connection: tokio::sync::Mutex<Connection>,
}

/// The Redis connection's state.
enum Connection {
    Open(redis::aio::MultiplexedConnection),
    /// Not connected; the next attempt not before this instant.
    Closed {
        retry_at: tokio::time::Instant,
    },
}

/// How long a failed Redis stays untried.
const REDIS_RETRY_AFTER: Duration = Duration::from_secs(1);

impl RedisStore {
    /// A store at `url` (`redis://[user:password@]host:port[/db]`); keys
    /// are `{prefix}{request id}` and live `ttl`. Connects lazily: a Redis
    /// that is down at start is an outage like any other, not a failure.
    pub fn new(
        url: &str,
        prefix: &str,
        ttl: Duration,
        timeout: Duration,
    ) -> Result<Self, StoreError> {
        let redacted_url = crate::redact::redact_url(url);
        let client = redis::Client::open(url)
            .map_err(|e| StoreError(format!("{redacted_url} is not a Redis URL: {e}")))?;
        Ok(Self {
            client,
            redacted_url,
            prefix: prefix.to_owned(),
            ttl,
            timeout,
            connection: tokio::sync::Mutex::new(Connection::Closed {
                retry_at: tokio::time::Instant::now(),
            }),
        })
    }

    /// The URL, password redacted.
    pub fn redacted_url(&self) -> &str {
        &self.redacted_url
    }

    async fn connection(&self) -> Result<redis::aio::MultiplexedConnection, StoreError> {
        let mut state = self.connection.lock().await;
        match &*state {
            Connection::Open(open) => Ok(open.clone()),
            Connection::Closed { retry_at } if tokio::time::Instant::now() < *retry_at => {
                Err(StoreError(format!(
                    "{} is unreachable (retrying within 1s)",
                    self.redacted_url
                )))
            }
            Connection::Closed { .. } => {
                let connected = tokio::time::timeout(
                    self.timeout,
                    self.client.get_multiplexed_async_connection(),
                )
                .await;
                match connected {
                    Ok(Ok(open)) => {
                        *state = Connection::Open(open.clone());
                        Ok(open)
                    }
                    Ok(Err(err)) => {
                        *state = closed();
                        Err(StoreError(format!(
                            "connecting to {}: {err}",
                            self.redacted_url
                        )))
                    }
                    Err(_) => {
                        *state = closed();
                        Err(StoreError(format!(
                            "connecting to {}: no answer within {:?}",
                            self.redacted_url, self.timeout
                        )))
                    }
                }
            }
        }
    }

    /// Runs `command`; on failure drops the connection so the next command
    /// reconnects (after [`REDIS_RETRY_AFTER`]).
    async fn run<T: redis::FromRedisValue>(&self, command: redis::Cmd) -> Result<T, StoreError> {
        let mut connection = self.connection().await?;
        let result =
            tokio::time::timeout(self.timeout, command.query_async::<T>(&mut connection)).await;
        let error = match result {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(err)) => format!("{}: {err}", self.redacted_url),
            Err(_) => format!("{}: no answer within {:?}", self.redacted_url, self.timeout),
        };
        *self.connection.lock().await = closed();
        Err(StoreError(error))
    }

    fn key(&self, id: &RequestId) -> String {
        format!("{}{}", self.prefix, id.as_str())
    }
}

fn closed() -> Connection {
    Connection::Closed {
        retry_at: tokio::time::Instant::now() + REDIS_RETRY_AFTER,
    }
}

impl CorrelationStore for RedisStore {
    async fn record(&self, id: &RequestId, context: &SpanContext) -> Result<(), StoreError> {
        if !context.is_valid() {
            return Ok(());
        }
        let mut command = redis::cmd("SET");
        command
            .arg(self.key(id))
            .arg(encode(context))
            .arg("PX")
            .arg(
                u64::try_from(self.ttl.as_millis())
                    .unwrap_or(u64::MAX)
                    .max(1),
            );
        self.run::<()>(command).await
    }

    async fn lookup(&self, id: &RequestId) -> Result<Option<SpanContext>, StoreError> {
        let mut command = redis::cmd("GET");
        command.arg(self.key(id));
        let value: Option<String> = self.run(command).await?;
        // A value that is not ours (another writer, a corrupted key) is a miss.
        Ok(value.as_deref().and_then(decode))
    }
}

/// `{trace id}-{span id}-{flags}` in lowercase hex, as in `traceparent`.
fn encode(context: &SpanContext) -> String {
    format!(
        "{}-{}-{:02x}",
        context.trace_id(),
        context.span_id(),
        context.trace_flags().to_u8()
    )
}

fn decode(value: &str) -> Option<SpanContext> {
    let mut parts = value.split('-');
    let trace_id = TraceId::from_hex(parts.next()?).ok()?;
    let span_id = SpanId::from_hex(parts.next()?).ok()?;
    let flags = u8::from_str_radix(parts.next()?, 16).ok()?;
    let context = SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(flags),
        true,
        TraceState::default(),
    );
    (parts.next().is_none() && context.is_valid()).then_some(context)
}

/// One configured store, whichever kind (the trait's `async fn`s are not
/// object-safe, so the relay holds this instead of a trait object).
pub enum Store {
    /// In this process.
    Memory(MemoryStore),
    /// Shared through Redis (boxed: its client is large, and a store is
    /// built once).
    Redis(Box<RedisStore>),
}

impl Store {
    /// Entries held, for the memory store (Redis counts its own).
    pub fn entry_count(&self) -> Option<u64> {
        match self {
            Store::Memory(memory) => Some(memory.entry_count()),
            Store::Redis(_) => None,
        }
    }
}

impl CorrelationStore for Store {
    async fn record(&self, id: &RequestId, context: &SpanContext) -> Result<(), StoreError> {
        match self {
            Store::Memory(s) => s.record(id, context).await,
            Store::Redis(s) => s.record(id, context).await,
        }
    }

    async fn lookup(&self, id: &RequestId) -> Result<Option<SpanContext>, StoreError> {
        match self {
            Store::Memory(s) => s.lookup(id).await,
            Store::Redis(s) => s.lookup(id).await,
        }
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

    #[test]
    fn redis_values_round_trip_and_foreign_values_are_misses() {
        let original = context(0xabc, 0xdef);
        let decoded = decode(&encode(&original)).expect("decodes");
        assert_eq!(
            (decoded.trace_id(), decoded.span_id(), decoded.trace_flags()),
            (
                original.trace_id(),
                original.span_id(),
                original.trace_flags()
            )
        );
        assert!(decoded.is_remote());
        for foreign in ["", "x", "00-00-01", &format!("{}-extra", encode(&original))] {
            assert!(decode(foreign).is_none(), "{foreign:?}");
        }
    }

    #[tokio::test]
    async fn an_unreachable_redis_fails_fast_and_says_where() {
        // Port 1 on loopback: nothing listens, the connect is refused.
        let store = RedisStore::new(
            "redis://:secret@127.0.0.1:1",
            "t:",
            Duration::from_secs(60),
            Duration::from_millis(200),
        )
        .expect("valid URL");
        let err = store.lookup(&id("R")).await.expect_err("unreachable");
        assert!(err.0.contains("127.0.0.1:1"), "{err}");
        assert!(!err.0.contains("secret"), "password leaked: {err}");
        let started = std::time::Instant::now();
        let again = store
            .record(&id("R"), &context(1, 1))
            .await
            .expect_err("still down");
        assert!(again.0.contains("retrying"), "{again}");
        assert!(
            started.elapsed() < Duration::from_millis(50),
            "no second connect within the retry delay"
        );
    }

    #[tokio::test]
    async fn a_small_bound_keeps_exactly_that_many_newest_entries() {
        let store = MemoryStore::new(10, Duration::from_secs(60));
        for i in 0..25u64 {
            store
                .record(&id(&format!("R-{i}")), &context(u128::from(i) + 1, i + 1))
                .await
                .unwrap();
        }
        assert_eq!(store.entry_count(), 10, "at the bound, not below it");
        for i in 15..25u64 {
            assert!(
                store
                    .lookup(&id(&format!("R-{i}")))
                    .await
                    .unwrap()
                    .is_some(),
                "R-{i} kept"
            );
        }
        assert!(
            store.lookup(&id("R-14")).await.unwrap().is_none(),
            "the oldest went first"
        );
    }

    #[tokio::test]
    async fn re_recording_an_id_keeps_one_entry_with_the_newest_context() {
        let store = MemoryStore::new(10, Duration::from_secs(60));
        for i in 0..30u64 {
            store
                .record(&id("same"), &context(u128::from(i) + 1, i + 1))
                .await
                .unwrap();
        }
        assert_eq!(store.entry_count(), 1);
        let found = store.lookup(&id("same")).await.unwrap().expect("kept");
        assert_eq!(found.trace_id(), TraceId::from(30u128));
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
