//! The transport: one port that serves both plain HTTP and HTTPS, told apart by the first byte
//! a client sends (a TLS handshake starts with 0x16), HTTP/1.1 either way.
//!
//! Both are needed because kubectl (client-go's `clientcmd`) sends a kubeconfig's credentials
//! only to an `https` server: the administrator's kubeconfig, without credentials, uses `http`;
//! a kubeconfig with a bearer token uses `https`. The certificate is a fixed self-signed one
//! for 127.0.0.1, ::1 and localhost (`tls/`, test infrastructure only: it guards nothing, and
//! kubeconfigs skip its verification).

use std::sync::Arc;

use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

const CERTIFICATE: &str = include_str!("tls/certificate.pem");
const PRIVATE_KEY: &str = include_str!("tls/private-key.pem");
/// The first byte of every TLS connection (a handshake record); HTTP starts with a method name.
const TLS_HANDSHAKE: u8 = 0x16;

fn tls_acceptor() -> TlsAcceptor {
    let certificate =
        CertificateDer::from_pem_slice(CERTIFICATE.as_bytes()).expect("the built-in certificate");
    let key =
        PrivateKeyDer::from_pem_slice(PRIVATE_KEY.as_bytes()).expect("the built-in private key");
    let mut config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_no_client_auth()
        .with_single_cert(vec![certificate], key)
        .expect("the built-in certificate matches its key");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsAcceptor::from(Arc::new(config))
}

/// Serves `app` on `listener` until `stop` fires (or its sender is dropped). Each connection
/// is served by its own task, so a slow client never holds up the others. Once stopped, open
/// connections end gracefully, as with `axum::serve`'s graceful shutdown: requests in flight
/// finish, idle keep-alive connections close.
pub async fn serve(listener: TcpListener, app: Router, mut stop: oneshot::Receiver<()>) {
    let tls = tls_acceptor();
    // Dropped when this returns, which is what connections watch for.
    let (_stopping, stopped) = watch::channel(());
    loop {
        let stream = tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::debug!(%error, "accept failed");
                    continue;
                }
            },
        };
        let (app, tls, stopped) = (app.clone(), tls.clone(), stopped.clone());
        tokio::spawn(async move {
            if let Err(error) = connection(stream, app, tls, stopped).await {
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }
}

async fn connection(
    stream: TcpStream,
    app: Router,
    tls: TlsAcceptor,
    stopped: watch::Receiver<()>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let _ = stream.set_nodelay(true);
    let mut first = [0u8; 1];
    let read = stream.peek(&mut first).await?;
    if read == 1 && first[0] == TLS_HANDSHAKE {
        let stream = tls.accept(stream).await?;
        serve_http(stream, app, stopped).await?;
    } else {
        serve_http(stream, app, stopped).await?;
    }
    Ok(())
}

/// HTTP/1.1 on one connection, plain or TLS, until it closes or the server stops.
async fn serve_http<Io>(
    io: Io,
    app: Router,
    mut stopped: watch::Receiver<()>,
) -> Result<(), hyper::Error>
where
    Io: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut http = hyper::server::conn::http1::Builder::new();
    // Without a timer the default header timeout is off anyway; say so instead of warning.
    http.header_read_timeout(None);
    let connection = http
        .serve_connection(TokioIo::new(io), TowerToHyperService::new(app))
        .with_upgrades();
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => return result,
        // The sender is gone: the server stopped.
        _ = stopped.changed() => connection.as_mut().graceful_shutdown(),
    }
    connection.await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_certificate_loads() {
        tls_acceptor();
    }
}
