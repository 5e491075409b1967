//! A loopback TCP proxy that can stall or sever the connections through it.
//!
//! ZooKeeper expires a session when no heartbeat reaches it for the session timeout. A client
//! behind a stalled proxy keeps running but cannot reach the server: exactly a `pfs` process
//! that hangs (SIGSTOP, GC-like pause, network blip), without stopping the test process.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the proxy does with traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyMode {
    /// Pass bytes both ways.
    Forward,
    /// Accept connections but move no bytes: the peer sees silence, not a reset.
    Stall,
    /// Close every connection and refuse new ones (closed right after accept).
    Sever,
    /// Forward ZooKeeper traffic, but close the connection instead of passing on a request
    /// with this op code (`AddWatch` is 106): the request is in flight when the connection
    /// goes. Only connections made in this mode are looked into (their requests are framed
    /// from the first byte); those made before are closed when it is set.
    CloseOnZkRequest { op_code: i32 },
}

/// A running proxy from a local port to `target`.
pub struct Proxy {
    local: SocketAddr,
    mode: watch::Sender<ProxyMode>,
    task: JoinHandle<()>,
    closed_on_request: Arc<AtomicUsize>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `target` (`host:port[,host:port…]`).
    pub async fn start(target: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let local = listener.local_addr().expect("proxy address");
        let (mode, _) = watch::channel(ProxyMode::Forward);
        let target = target.to_owned();
        let modes = mode.clone();
        let closed_on_request = Arc::new(AtomicUsize::new(0));
        let closed = Arc::clone(&closed_on_request);
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let modes = modes.subscribe();
                if *modes.borrow() == ProxyMode::Sever {
                    drop(client);
                    continue;
                }
                tokio::spawn(pump(client, target.clone(), modes, Arc::clone(&closed)));
            }
        });
        Proxy {
            local,
            mode,
            task,
            closed_on_request,
        }
    }

    /// The address clients connect to.
    pub fn address(&self) -> String {
        self.local.to_string()
    }

    pub fn set_mode(&self, mode: ProxyMode) {
        self.mode.send_replace(mode);
    }

    pub fn mode(&self) -> ProxyMode {
        *self.mode.borrow()
    }

    /// Connections closed so far by [`ProxyMode::CloseOnZkRequest`] on its request.
    pub fn closed_on_request(&self) -> usize {
        self.closed_on_request.load(Ordering::Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.mode.send_replace(ProxyMode::Sever);
        self.task.abort();
    }
}

/// Moves bytes between `client` and a new connection to `target` while the mode allows.
async fn pump(
    mut client: TcpStream,
    target: String,
    mut modes: watch::Receiver<ProxyMode>,
    closed_on_request: Arc<AtomicUsize>,
) {
    // A stalled proxy does not even connect upstream until traffic may flow.
    while *modes.borrow_and_update() == ProxyMode::Stall {
        if modes.changed().await.is_err() {
            return;
        }
    }
    if *modes.borrow() == ProxyMode::Sever {
        return;
    }
    // A ZooKeeper connect string may list several servers: the first that answers serves.
    let mut server = None;
    for candidate in target.split(',') {
        if let Ok(stream) = TcpStream::connect(candidate.trim()).await {
            server = Some(stream);
            break;
        }
    }
    let Some(mut server) = server else { return };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_read, mut client_write) = client.split();
    let (mut server_read, mut server_write) = server.split();
    let mut up = vec![0u8; 64 * 1024];
    let mut down = vec![0u8; 64 * 1024];
    let closing_on = |mode: ProxyMode| match mode {
        ProxyMode::CloseOnZkRequest { op_code } => Some(op_code),
        _ => None,
    };
    // Requests are framed only on connections made in that mode, from their first byte.
    let framing = closing_on(*modes.borrow()).is_some();
    let mut requests = ZkRequests::default();
    loop {
        let mode = *modes.borrow_and_update();
        match mode {
            ProxyMode::Sever => return,
            // Frames of a connection made before cannot be told apart any more.
            ProxyMode::CloseOnZkRequest { .. } if !framing => return,
            _ => {}
        }
        let forwarding = matches!(
            mode,
            ProxyMode::Forward | ProxyMode::CloseOnZkRequest { .. }
        );
        // A mode change is seen before any bytes: what a client sends after the proxy is set
        // to `Sever` (a dropped ZooKeeper client's CloseSession, on a simulated kill -9) must
        // never get through. Bytes are read only once no change is pending, so bytes read
        // were sent before any change still unseen; the mode is looked at again before they
        // are passed on all the same.
        let severed = |modes: &watch::Receiver<ProxyMode>| *modes.borrow() == ProxyMode::Sever;
        tokio::select! {
            biased;
            changed = modes.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            read = client_read.read(&mut up), if forwarding => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if severed(&modes) {
                        return;
                    }
                    if framing && requests.feed(&up[..n], closing_on(mode)) {
                        closed_on_request.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    if server_write.write_all(&up[..n]).await.is_err() {
                        return;
                    }
                }
            },
            read = server_read.read(&mut down), if forwarding => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if severed(&modes) || client_write.write_all(&down[..n]).await.is_err() {
                        return;
                    }
                }
            },
        }
    }
}

/// Splits a ZooKeeper client's byte stream into requests (4-byte big-endian length, then the
/// body; after the connect request, every body starts with its xid and op code).
#[derive(Default)]
struct ZkRequests {
    buffer: Vec<u8>,
    connected: bool,
}

impl ZkRequests {
    /// Takes in bytes read from the client; true when they complete a request with op code
    /// `close_on` (the connection is to be closed; nothing read here is passed on then, which
    /// is all the same to a request that cannot be answered anyway).
    fn feed(&mut self, bytes: &[u8], close_on: Option<i32>) -> bool {
        self.buffer.extend_from_slice(bytes);
        loop {
            let Some(length) = self.buffer.get(..4) else {
                return false;
            };
            let length = u32::from_be_bytes(length.try_into().expect("4 bytes")) as usize;
            if self.buffer.len() < 4 + length {
                return false;
            }
            let body: Vec<u8> = self.buffer.drain(..4 + length).skip(4).collect();
            if !std::mem::replace(&mut self.connected, true) {
                continue;
            }
            let op_code = body
                .get(4..8)
                .map(|b| i32::from_be_bytes(b.try_into().expect("4 bytes")));
            if op_code.is_some() && op_code == close_on {
                return true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Proxy, ProxyMode, ZkRequests};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// What a client sends once the proxy is set to `Sever` never reaches the server, however
    /// soon after it is sent (a killed pfs's CloseSession must not close its session).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nothing_sent_after_sever_gets_through() {
        let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = server.local_addr().unwrap().to_string();
        for round in 0..200 {
            let proxy = Proxy::start(&target).await;
            let mut client = tokio::net::TcpStream::connect(proxy.address())
                .await
                .unwrap();
            let (mut upstream, _) = server.accept().await.unwrap();
            client.write_all(b"before").await.unwrap();
            let mut before = [0u8; 6];
            upstream.read_exact(&mut before).await.unwrap();
            assert_eq!(&before, b"before");

            proxy.set_mode(ProxyMode::Sever);
            client.write_all(b"after").await.unwrap();
            let mut rest = Vec::new();
            let _ = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                upstream.read_to_end(&mut rest),
            )
            .await
            .expect("the severed connection is closed");
            assert_eq!(
                String::from_utf8_lossy(&rest),
                "",
                "round {round}: passed on after Sever"
            );
        }
    }

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut framed = (body.len() as u32).to_be_bytes().to_vec();
        framed.extend_from_slice(body);
        framed
    }

    fn request(xid: i32, op_code: i32) -> Vec<u8> {
        let mut body = xid.to_be_bytes().to_vec();
        body.extend_from_slice(&op_code.to_be_bytes());
        body.extend_from_slice(b"/some/path");
        frame(&body)
    }

    #[test]
    fn finds_a_request_by_op_code_across_reads_but_never_the_connect_request() {
        let mut stream = frame(&[0, 0, 0, 0, 0, 0, 0, 106, 1, 2, 3]);
        stream.extend(request(1, 12));
        stream.extend(request(-2, 11));
        stream.extend(request(2, 106));
        let mut requests = ZkRequests::default();
        let split = stream.len() - 3;
        assert!(!requests.feed(&stream[..split], Some(106)));
        assert!(requests.feed(&stream[split..], Some(106)));

        let mut requests = ZkRequests::default();
        assert!(!requests.feed(&stream, Some(49)));
        assert!(requests.buffer.is_empty());
    }
}
