//! kube-emulator: a stateful Kubernetes API server emulator for pureflash-operator's tests.
//!
//! No real API server can be installed on the project's machines, so the operator is developed
//! against this one. It speaks real HTTP on loopback to the real `kube::Client` and the real
//! `kubectl`, and follows the API conventions for what it serves (see the README of the test
//! bed and this crate's conformance tests). Test infrastructure only: never shipped.
//!
//! Crate map:
//! - [`server`]: HTTP routing, content negotiation, watch streams, discovery;
//! - [`state`]: storage and the semantics of every verb;
//! - [`resources`]: built-in types and the types CRDs add;
//! - [`schema`]: CRD structural schemas — defaulting, pruning, validation, CEL rules;
//! - [`merge`] (patches) and [`ssa`] (server-side apply, managed fields);
//! - [`selectors`], [`table`], [`meta`], [`errors`]: the conventions' details;
//! - [`faults`]: failure injection for tests.

pub mod errors;
pub mod faults;
pub mod merge;
pub mod meta;
pub mod openapi;
pub mod protobuf;
pub mod resources;
pub mod schema;
pub mod selectors;
pub mod server;
pub mod ssa;
pub mod state;
pub mod table;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub use faults::{Action, Matcher};

/// How many past events a watch can resume from before it gets `410 Gone`.
const HISTORY: usize = 50_000;

/// A running emulator.
pub struct Emulator {
    address: SocketAddr,
    shared: Arc<server::Shared>,
    stop: Option<oneshot::Sender<()>>,
}

impl Emulator {
    /// Serves on a free port of 127.0.0.1.
    pub async fn start() -> std::io::Result<Emulator> {
        Self::start_on("127.0.0.1:0".parse().expect("valid address")).await
    }

    /// Serves on `address` until dropped.
    pub async fn start_on(address: SocketAddr) -> std::io::Result<Emulator> {
        let listener = TcpListener::bind(address).await?;
        let address = listener.local_addr()?;
        let shared = Arc::new(server::Shared {
            state: Mutex::new(state::State::new(HISTORY)),
            faults: faults::Faults::default(),
            bookmark_interval: Duration::from_secs(2),
        });
        let handler_state = Arc::clone(&shared);
        let app = axum::Router::new()
            .fallback(move |request| server::handle(Arc::clone(&handler_state), request));
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(Emulator {
            address,
            shared,
            stop: Some(stop),
        })
    }

    /// `http://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// A kubeconfig pointing at this emulator (context `emulator`, namespace `default`).
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: emulator\n  cluster:\n    server: {url}\ncontexts:\n- name: emulator\n  context:\n    cluster: emulator\n    user: emulator\n    namespace: default\ncurrent-context: emulator\nusers:\n- name: emulator\n  user: {{}}\n",
            url = self.url()
        )
    }

    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, self.kubeconfig())
    }

    /// Failure injection: `emulator.faults().inject(Matcher::verb("patch").on("pods"), Action::Fail(500), 2)`.
    pub fn faults(&self) -> &faults::Faults {
        &self.shared.faults
    }

    /// Forgets the event history: any watch resuming from an earlier resourceVersion gets 410.
    pub fn compact(&self) {
        self.shared.state.lock().expect("state lock").compact();
    }

    /// Ends every open watch stream.
    pub fn drop_watches(&self) {
        self.shared.faults.drop_watches();
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.state.lock().expect("state lock").current_rv()
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
