//! `/healthz` (the process answers), `/readyz` (every route's loop is
//! running and its AMQP sinks are connected) and `/metrics` (Prometheus text) on `relay.listen`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::sync::watch;

use super::stats::{RelayMetrics, RouteStats};

/// What the endpoints read.
pub(crate) struct Health {
    pub(crate) metrics: Arc<RelayMetrics>,
    pub(crate) routes: Vec<(String, Arc<RouteStats>)>,
}

/// Binds `listen` and serves until `shutdown`; returns the bound address.
pub(crate) async fn serve(
    listen: SocketAddr,
    health: Arc<Health>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(health);
    tokio::spawn(async move {
        let stop = async move {
            let _ = shutdown.wait_for(|stopping| *stopping).await;
        };
        if let Err(err) = axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
        {
            tracing::error!(stage = "http", error = %err, "health/metrics server stopped");
        }
    });
    Ok(bound)
}

async fn readyz(State(health): State<Arc<Health>>) -> impl IntoResponse {
    let down: Vec<String> = health
        .routes
        .iter()
        .filter(|(_, stats)| !stats.is_ready())
        .map(|(name, stats)| {
            if let Some(why) = stats.died() {
                format!("{name} (its loop died: {why})")
            } else if let Some(poison) = stats.poisoned() {
                format!("{name} (stopped at a message it can never send or dead-letter: {poison})")
            } else if !stats.is_running() {
                format!("{name} (source not consuming)")
            } else if !stats.is_consuming() {
                format!("{name} (source holds no partition)")
            } else if stats.is_sink_down() {
                format!("{name} (sink reconnecting)")
            } else if stats.is_dead_letter_down() {
                format!("{name} (dead letter reconnecting)")
            } else if let Some(why) = stats.stalled() {
                format!("{name} (makes no progress: {why})")
            } else {
                format!("{name} (not ready)")
            }
        })
        .collect();
    if down.is_empty() {
        (StatusCode::OK, "ready\n".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", down.join(", ")),
        )
    }
}

async fn metrics(State(health): State<Arc<Health>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        health.metrics.render(),
    )
}
