//! A loopback TCP proxy that can stall or sever the connections through it.
//!
//! ZooKeeper expires a session when no heartbeat reaches it for the session timeout. A client
//! behind a stalled proxy keeps running but cannot reach the server: exactly a `pfs` process
//! that hangs (SIGSTOP, GC-like pause, network blip), without stopping the test process.

use std::net::SocketAddr;

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
    /// A flaky link: each connection carries the server's first `answers` answers (strictly,
    /// reads from the server: a ZooKeeper client waits for each answer before its next step
    /// while it connects); the client's next request is swallowed and the connection closed.
    /// Connections past as many answers already are closed at once. With 2, a ZooKeeper client
    /// gets its session's connect answer and first ping answer, declares itself reconnected,
    /// and loses the connection with its first request.
    Flaky { answers: u32 },
}

/// A running proxy from a local port to `target`.
pub struct Proxy {
    local: SocketAddr,
    mode: watch::Sender<ProxyMode>,
    task: JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `target` (`host:port[,host:port…]`).
    pub async fn start(target: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let local = listener.local_addr().expect("proxy address");
        let (mode, _) = watch::channel(ProxyMode::Forward);
        let target = target.to_owned();
        let modes = mode.clone();
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
                tokio::spawn(pump(client, target.clone(), modes));
            }
        });
        Proxy { local, mode, task }
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
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.mode.send_replace(ProxyMode::Sever);
        self.task.abort();
    }
}

/// Moves bytes between `client` and a new connection to `target` while the mode allows.
async fn pump(mut client: TcpStream, target: String, mut modes: watch::Receiver<ProxyMode>) {
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
    let mut answered = 0;
    loop {
        let mode = *modes.borrow_and_update();
        match mode {
            ProxyMode::Sever => return,
            ProxyMode::Flaky { answers } if answered > answers => return,
            _ => {}
        }
        let forwarding = matches!(mode, ProxyMode::Forward | ProxyMode::Flaky { .. });
        tokio::select! {
            changed = modes.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            read = client_read.read(&mut up), if forwarding => match read {
                Ok(0) | Err(_) => return,
                Ok(_) if matches!(mode, ProxyMode::Flaky { answers } if answered >= answers) => return,
                Ok(n) => if server_write.write_all(&up[..n]).await.is_err() { return },
            },
            read = server_read.read(&mut down), if forwarding => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if client_write.write_all(&down[..n]).await.is_err() {
                        return;
                    }
                    answered += 1;
                }
            },
        }
    }
}
