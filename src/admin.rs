//! The admin HTTP endpoint: `/livez` (the process serves), `/readyz` (the ZooKeeper view has
//! been fully loaded and the resource caches synced), `/metrics` (OpenMetrics text).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// Binds the admin address: done before anything else starts, so that a taken port is a clear
/// startup error rather than probes failing against a process that logs nothing.
pub async fn bind(address: SocketAddr) -> Result<tokio::net::TcpListener, crate::Error> {
    tokio::net::TcpListener::bind(address)
        .await
        .map_err(|error| {
            crate::Error::Usage(format!(
                "cannot listen on {address} (--admin-address): {error}"
            ))
        })
}

/// Serves on `listener` until `shutdown`. `ready` says whether `/readyz` answers 200, and why
/// not otherwise.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    ready: watch::Receiver<Result<(), String>>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.borrow().clone();
                async move {
                    match ready {
                        Ok(()) => (StatusCode::OK, "ok".to_owned()),
                        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let text = metrics.encode();
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        text,
                    )
                        .into_response()
                }
            }),
        );
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}
