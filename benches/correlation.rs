//! The in-memory correlation store: inserts and lookups per second, and the
//! memory 1M entries take, against a plain `HashMap` in the same run.
//!
//! ```sh
//! cargo bench --bench correlation      # TB_BENCH_ENTRIES=1000000 by default
//! ```
//!
//! * `memory store`: tracebridge's [`MemoryStore`] (bounded, TTL, sharded,
//!   thread-safe), through the `CorrelationStore` trait the relay uses;
//! * `plain HashMap`: `std::collections::HashMap<String, (u128, u64, u8)>`,
//!   single-threaded, no bound, no expiry — the floor.
//!
//! Request ids are 36-character UUID-like strings. Memory is the growth of
//! the process's resident set while the map fills (VmRSS from
//! /proc/self/status), each map built and dropped in turn.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
use tracebridge::correlate::{CorrelationStore, MemoryStore, RequestId};

fn entries() -> usize {
    std::env::var("TB_BENCH_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

fn rss_bytes() -> u64 {
    support::proc_status_kib("VmRSS") * 1024
}

fn request_id(i: usize) -> RequestId {
    let text = format!("{:08x}-{:04x}-4000-8000-{:012x}", i, i % 65_536, i * 7919);
    RequestId::new(text.as_bytes()).expect("usable id")
}

fn context(i: usize) -> SpanContext {
    SpanContext::new(
        TraceId::from(i as u128 + 1),
        SpanId::from(i as u64 + 1),
        TraceFlags::SAMPLED,
        false,
        TraceState::default(),
    )
}

struct Measured {
    inserts_per_sec: f64,
    lookups_per_sec: f64,
    rss_growth: u64,
}

fn rate(n: usize, elapsed: Duration) -> f64 {
    n as f64 / elapsed.as_secs_f64()
}

fn memory_store(ids: &[RequestId], runtime: &tokio::runtime::Runtime) -> Measured {
    let before = rss_bytes();
    let store = MemoryStore::new(ids.len() as u64, Duration::from_secs(3600));
    let measured = runtime.block_on(async {
        let started = Instant::now();
        for (i, id) in ids.iter().enumerate() {
            store
                .record(id, &context(i))
                .await
                .expect("memory never fails");
        }
        let inserts = rate(ids.len(), started.elapsed());
        let started = Instant::now();
        let mut found = 0usize;
        for id in ids {
            found += usize::from(
                store
                    .lookup(id)
                    .await
                    .expect("memory never fails")
                    .is_some(),
            );
        }
        let lookups = rate(ids.len(), started.elapsed());
        assert!(
            found * 100 >= ids.len() * 99,
            "only {found} of {} found",
            ids.len()
        );
        (inserts, lookups)
    });
    let rss_growth = rss_bytes().saturating_sub(before);
    assert!(store.entry_count() <= ids.len() as u64);
    drop(store);
    Measured {
        inserts_per_sec: measured.0,
        lookups_per_sec: measured.1,
        rss_growth,
    }
}

fn plain_map(ids: &[RequestId]) -> Measured {
    let before = rss_bytes();
    let mut map: HashMap<String, (u128, u64, u8)> = HashMap::new();
    let started = Instant::now();
    for (i, id) in ids.iter().enumerate() {
        map.insert(id.as_str().to_owned(), (i as u128 + 1, i as u64 + 1, 1));
    }
    let inserts = rate(ids.len(), started.elapsed());
    let started = Instant::now();
    let found = ids
        .iter()
        .filter(|id| map.contains_key(id.as_str()))
        .count();
    let lookups = rate(ids.len(), started.elapsed());
    assert_eq!(found, ids.len());
    let rss_growth = rss_bytes().saturating_sub(before);
    drop(map);
    Measured {
        inserts_per_sec: inserts,
        lookups_per_sec: lookups,
        rss_growth,
    }
}

fn main() {
    let n = entries();
    let ids: Vec<RequestId> = (0..n).map(request_id).collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    // The store first: its resident-set growth is then measured on a heap
    // no earlier map has warmed up.
    let store = memory_store(&ids, &runtime);
    let baseline = plain_map(&ids);
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!("correlation store, {n} entries (36-byte request ids)");
    println!(
        "  plain HashMap : {:>10.0} inserts/s {:>10.0} lookups/s {:>7.1} MiB ({:.0} B/entry)",
        baseline.inserts_per_sec,
        baseline.lookups_per_sec,
        mib(baseline.rss_growth),
        baseline.rss_growth as f64 / n as f64
    );
    println!(
        "  memory store  : {:>10.0} inserts/s {:>10.0} lookups/s {:>7.1} MiB ({:.0} B/entry)",
        store.inserts_per_sec,
        store.lookups_per_sec,
        mib(store.rss_growth),
        store.rss_growth as f64 / n as f64
    );
    println!(
        "  ratio (store / HashMap): inserts {:.2}, lookups {:.2}, memory {:.2}",
        store.inserts_per_sec / baseline.inserts_per_sec,
        store.lookups_per_sec / baseline.lookups_per_sec,
        store.rss_growth as f64 / baseline.rss_growth.max(1) as f64
    );
    let target = 256 * 1024 * 1024;
    println!(
        "  target: 1M entries within 256 MiB -> {}",
        if store.rss_growth as f64 * 1_000_000.0 / n as f64 <= target as f64 {
            "met"
        } else {
            "NOT met"
        }
    );
}
