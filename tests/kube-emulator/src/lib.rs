//! kube-emulator: a stateful Kubernetes API server emulator for pureflash-operator's tests.
//!
//! No real API server can be installed on the project's machines, so the operator is developed
//! against this one. It speaks real HTTP on loopback to the real `kube::Client` and the real
//! `kubectl`, and follows the API conventions for what it serves (see the README of the test
//! bed and this crate's conformance tests). Test infrastructure only: never shipped.
//!
//! Crate map:
//! - [`transport`]: one port for HTTP and HTTPS;
//! - [`server`]: HTTP routing, content negotiation, watch streams, discovery;
//! - [`auth`] (bearer tokens, audit log) and [`rbac`] (the authorizer): who may do what;
//! - [`state`]: storage and the semantics of every verb;
//! - [`strategy`]: the built-in kinds' defaults, allocations and validation;
//! - [`disruption`]: the disruption controller (PodDisruptionBudget status) and the rules of
//!   Pod evictions;
//! - [`resources`]: built-in types and the types CRDs add;
//! - [`convert`]: kinds served by two groups from one storage (core and events.k8s.io Events);
//! - [`schema`]: CRD structural schemas — defaulting, pruning, validation, CEL rules;
//! - [`merge`] (patches) and [`ssa`] (server-side apply, managed fields);
//! - [`selectors`], [`table`], [`meta`], [`errors`]: the conventions' details;
//! - [`faults`]: failure injection for tests.

pub mod auth;
pub mod convert;
pub mod disruption;
pub mod errors;
pub mod faults;
pub mod merge;
pub mod meta;
pub mod openapi;
pub mod protobuf;
pub mod rbac;
pub mod resources;
pub mod schema;
pub mod selectors;
pub mod server;
pub mod ssa;
pub mod state;
pub mod strategy;
pub mod table;
pub mod transport;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub use auth::AuditRecord;
pub use faults::{Action, Matcher};

/// The kubectl that drives the emulator (and a real cluster in the end-to-end tests):
/// `$KUBECTL`, else the repository's pinned `.dev/bin/kubectl` (tools/install-kube-clients,
/// which tools/install-deps runs), else `kubectl` on the PATH.
pub fn kubectl() -> std::process::Command {
    let pinned = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.dev/bin/kubectl");
    let program = std::env::var_os("KUBECTL")
        .map(std::path::PathBuf::from)
        .or_else(|| pinned.canonicalize().ok())
        .unwrap_or_else(|| "kubectl".into());
    std::process::Command::new(program)
}

/// A disruption controller lag like a real cluster's (see [`Emulator::set_disruption_lag`]):
/// kube-controller-manager writes at most 20 requests a second by default, so a budget's
/// status follows its Pods some tens of milliseconds later at best.
pub const CLUSTER_DISRUPTION_LAG: Duration = Duration::from_millis(100);

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
        let state = state::State::new(HISTORY);
        let clock = state.clock.clone();
        let shared = Arc::new(server::Shared {
            state: Mutex::new(state),
            faults: faults::Faults::default(),
            tokens: auth::Tokens::default(),
            audit: auth::AuditLog::default(),
            bookmark_interval: Duration::from_secs(2),
        });
        let handler_state = Arc::clone(&shared);
        let app = axum::Router::new().fallback(move |request| {
            let shared = Arc::clone(&handler_state);
            let clock = clock.clone();
            async move {
                let mut response = server::handle(shared, request).await;
                // Stamped by the server's own clock (hyper would stamp the machine's).
                let date = httpdate::fmt_http_date(clock.now());
                if let Ok(date) = axum::http::HeaderValue::from_str(&date) {
                    response
                        .headers_mut()
                        .insert(axum::http::header::DATE, date);
                }
                response
            }
        });
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(transport::serve(listener, app, stopped));
        let wake = Arc::clone(&shared.state.lock().expect("state lock").disruption_wake);
        tokio::spawn(run_disruption_controller(Arc::downgrade(&shared), wake));
        Ok(Emulator {
            address,
            shared,
            stop: Some(stop),
        })
    }

    /// Makes the disruption controller trail Pod and budget changes by `lag`, coalescing what
    /// changes meanwhile, as a real cluster's does (`None`, the default: budget statuses are
    /// synced within the write that changed them). See [`state::State::set_disruption_lag`].
    pub fn set_disruption_lag(&self, lag: Option<Duration>) {
        self.shared
            .state
            .lock()
            .expect("state lock")
            .set_disruption_lag(lag);
    }

    /// Sets the server's clock `offset_ms` milliseconds ahead of the machine's (behind when
    /// negative): the timestamps it sets from now on and the `Date` of its answers follow it.
    pub fn set_clock_offset_ms(&self, offset_ms: i64) {
        self.shared
            .state
            .lock()
            .expect("state lock")
            .clock
            .set_offset_ms(offset_ms);
    }

    /// `http://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// `https://127.0.0.1:<port>`: the same port over TLS, with a self-signed certificate.
    /// Clients that send credentials (kubectl does only over https) use this one.
    pub fn https_url(&self) -> String {
        format!("https://{}", self.address)
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// A kubeconfig pointing at this emulator (context `emulator`, namespace `default`). It
    /// carries no credentials: its requests are the administrator's, allowed everything.
    pub fn kubeconfig(&self) -> String {
        self.kubeconfig_for(&format!("server: {}", self.url()), "{}")
    }

    /// The same kubeconfig whose user authenticates with `token` (see [`Emulator::add_token`]),
    /// so that its requests are authorized by RBAC. It uses [`Emulator::https_url`], without
    /// verifying the certificate, because kubectl sends credentials to https servers only.
    pub fn kubeconfig_with_token(&self, token: &str) -> String {
        let token = serde_json::to_string(token).expect("a string serializes");
        self.kubeconfig_for(
            &format!(
                "server: {}\n    insecure-skip-tls-verify: true",
                self.https_url()
            ),
            &format!("{{token: {token}}}"),
        )
    }

    fn kubeconfig_for(&self, cluster: &str, user: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: emulator\n  cluster:\n    {cluster}\ncontexts:\n- name: emulator\n  context:\n    cluster: emulator\n    user: emulator\n    namespace: default\ncurrent-context: emulator\nusers:\n- name: emulator\n  user: {user}\n"
        )
    }

    /// Registers a bearer token for `user` in `groups` (and `system:authenticated`, which every
    /// authenticated user is in). Requests with the token are authorized by RBAC: they may do
    /// what the stored Roles and ClusterRoles bound to the user, one of its groups, or (for a
    /// ServiceAccount user name) its ServiceAccount allow. A user in `system:masters` may do
    /// everything.
    pub fn add_token(&self, token: &str, user: &str, groups: &[&str]) {
        self.shared.tokens.add(token, user, groups);
    }

    /// Registers and returns a new token of the ServiceAccount `namespace/name`: user
    /// `system:serviceaccount:<namespace>:<name>`, groups `system:serviceaccounts`,
    /// `system:serviceaccounts:<namespace>` and `system:authenticated`. Like a real
    /// ServiceAccount token it authenticates only while the ServiceAccount exists (401 before
    /// it is created and after it is deleted).
    pub fn service_account_token(&self, namespace: &str, name: &str) -> String {
        let token = format!("kube-emulator.{}", uuid::Uuid::new_v4().simple());
        self.shared
            .tokens
            .add_service_account(&token, namespace, name);
        token
    }

    /// Every resource request made with a registered token so far, in order, with whether RBAC
    /// allowed it (requests refused before authorization, with 401, count as not allowed).
    pub fn audit(&self) -> Vec<AuditRecord> {
        self.shared.audit.records()
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

/// The disruption controller's own task, until the emulator is gone: once a second, the
/// budgets recording evictions are synced again (see
/// [`state::State::recheck_disruption_budgets`]); and when it lags (see
/// [`Emulator::set_disruption_lag`]), woken by a namespace's first change since its last sync,
/// it waits out the lag, then syncs every namespace changed by then.
async fn run_disruption_controller(
    shared: std::sync::Weak<server::Shared>,
    wake: Arc<tokio::sync::Notify>,
) {
    let mut recheck = tokio::time::interval(Duration::from_secs(1));
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let woken = tokio::select! {
            _ = recheck.tick() => false,
            () = wake.notified() => true,
        };
        let Some(strong) = shared.upgrade() else {
            return;
        };
        let lag = {
            let mut state = strong.state.lock().expect("state lock");
            if !woken {
                state.recheck_disruption_budgets();
                continue;
            }
            state.disruption_lag()
        };
        drop(strong);
        tokio::time::sleep(lag.unwrap_or_default()).await;
        let Some(strong) = shared.upgrade() else {
            return;
        };
        strong
            .state
            .lock()
            .expect("state lock")
            .sync_pending_disruption_budgets();
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
