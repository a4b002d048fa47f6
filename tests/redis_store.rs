//! The Redis correlation store against a real Redis (`REDIS_URL`, default
//! the local one `scripts/brokers.sh up` starts): round trip, keys with a
//! time to live, expiry, and what another writer's value means.

use std::time::Duration;

use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
use tracebridge::correlate::{CorrelationStore, RedisStore, RequestId};

fn url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn id(prefix: &str) -> RequestId {
    RequestId::new(format!("{prefix}-{}", uuid::Uuid::new_v4()).as_bytes()).expect("usable")
}

fn context() -> SpanContext {
    SpanContext::new(
        TraceId::from(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736_u128),
        SpanId::from(0x00f0_67aa_0ba9_02b7_u64),
        TraceFlags::SAMPLED,
        false,
        TraceState::default(),
    )
}

async fn raw(command: &mut redis::Cmd) -> redis::Value {
    let client = redis::Client::open(url()).expect("URL");
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "Redis at {} does not answer ({e}); run scripts/brokers.sh up",
                url()
            )
        });
    command.query_async(&mut connection).await.expect("command")
}

#[tokio::test]
async fn records_with_a_ttl_and_finds_the_context_again() {
    let store = RedisStore::new(
        &url(),
        "tbtest:",
        Duration::from_secs(30),
        Duration::from_secs(2),
    )
    .expect("URL");
    let request = id("rt");
    store.record(&request, &context()).await.expect("recorded");
    let found = store
        .lookup(&request)
        .await
        .expect("looked up")
        .expect("found");
    assert_eq!(
        (found.trace_id(), found.span_id()),
        (context().trace_id(), context().span_id())
    );
    assert!(found.is_remote() && found.is_sampled());

    let key = format!("tbtest:{}", request.as_str());
    let stored = raw(redis::cmd("GET").arg(&key)).await;
    assert_eq!(
        stored,
        redis::Value::BulkString(b"4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_vec())
    );
    let redis::Value::Int(ttl_ms) = raw(redis::cmd("PTTL").arg(&key)).await else {
        panic!("PTTL is an integer");
    };
    assert!(
        (1..=30_000).contains(&ttl_ms),
        "key expires: {ttl_ms} ms left"
    );
    raw(redis::cmd("DEL").arg(&key)).await;
}

#[tokio::test]
async fn an_expired_or_foreign_value_is_a_miss() {
    let store = RedisStore::new(
        &url(),
        "tbtest:",
        Duration::from_millis(150),
        Duration::from_secs(2),
    )
    .expect("URL");
    let request = id("exp");
    store.record(&request, &context()).await.expect("recorded");
    assert!(store.lookup(&request).await.expect("looked up").is_some());
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        store.lookup(&request).await.expect("looked up").is_none(),
        "expired"
    );

    let foreign = id("foreign");
    raw(redis::cmd("SET")
        .arg(format!("tbtest:{}", foreign.as_str()))
        .arg("not a context")
        .arg("PX")
        .arg(5000))
    .await;
    assert!(store.lookup(&foreign).await.expect("no error").is_none());
}
