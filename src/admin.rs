//! The admin HTTP endpoint: `/livez` (the process serves), `/readyz` (the ZooKeeper view has
//! been fully loaded and the resource caches synced, and no stop is under way), `/metrics`
//! (OpenMetrics text).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
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
///
/// The unspecified IPv6 address (the default) serves IPv6 and IPv4 alike, so probes reach the
/// operator on single-stack clusters of either family and on dual-stack ones. A host without
/// IPv6 at all (booted with `ipv6.disable=1`) cannot bind it: there the IPv4 wildcard on the
/// same port serves instead.
pub async fn bind(address: SocketAddr) -> Result<tokio::net::TcpListener, crate::Error> {
    let error = match tokio::net::TcpListener::bind(address).await {
        Ok(listener) => return Ok(listener),
        Err(error) => error,
    };
    // A port taken or not ours to bind is the answer for IPv4 too, and the error to report.
    let no_ipv6 = !matches!(
        error.kind(),
        std::io::ErrorKind::AddrInUse | std::io::ErrorKind::PermissionDenied
    );
    if address.ip() == IpAddr::V6(Ipv6Addr::UNSPECIFIED) && no_ipv6 {
        let ipv4 = SocketAddr::from((Ipv4Addr::UNSPECIFIED, address.port()));
        if let Ok(listener) = tokio::net::TcpListener::bind(ipv4).await {
            tracing::info!(%address, %error, serving = %ipv4, "no IPv6 here: the admin endpoint serves IPv4 only");
            return Ok(listener);
        }
    }
    Err(crate::Error::Usage(format!(
        "cannot listen on {address} (--admin-address): {error}"
    )))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_default_wildcard_serves_ipv4_clients_too() {
        let listener = bind("[::]:0".parse().unwrap()).await.expect("bind");
        let port = listener.local_addr().unwrap().port();
        let accepted = tokio::spawn(async move { listener.accept().await.map(|_| ()) });
        tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port))
            .await
            .expect("an IPv4 client reaches the admin endpoint");
        accepted.await.unwrap().expect("accepted");
    }

    #[tokio::test]
    async fn a_taken_port_is_a_clear_error() {
        let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = taken.local_addr().unwrap();
        let error = bind(address)
            .await
            .expect_err("the port is taken")
            .to_string();
        assert!(
            error.contains(&format!("cannot listen on {address} (--admin-address)")),
            "{error}"
        );
    }
}
