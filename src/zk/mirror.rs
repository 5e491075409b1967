//! The ZooKeeper mirror: the one task that owns the session, the persistent recursive watch on
//! `/pureflash/<cluster>/stores` and the [`ClusterView`] built from it.
//!
//! It publishes a versioned [`Snapshot`] (a `watch` channel: readers never touch the network
//! and always see a complete view) and typed [`ViewEvent`]s (a `broadcast` channel, for
//! subscribers that want to know *which* store changed). It never writes to ZooKeeper.
//!
//! How the view stays equal to ZooKeeper:
//! - the watch is armed before every full reload (again after a reconnect), so a change made
//!   while reloading arrives as an event afterwards and is applied on top (events are
//!   idempotent: existence is set from the event, data is re-read);
//! - events are handled in batches; data reads for a batch are pipelined on the session and
//!   applied in event order, which ZooKeeper's per-session ordering makes equal to the final
//!   state;
//! - a full reload runs after every (re)connect, because events during a disconnection can be
//!   lost (ZOOKEEPER-4698), after every session expiry (new session, new watch), and every
//!   `resync_interval` as a safety net;
//! - [`Health`] says whether the view can be trusted right now: only when the session is
//!   connected, a reload finished since it connected, and no read failed since. A node
//!   ZooKeeper will not let us read (an ACL, most likely) is never taken for a node that is
//!   gone — a store read as gone would be marked OFFLINE and its pfs restarted — but costs
//!   only its own store the trust ([`StoreView::unreadable`], [`Snapshot::knows_store`]):
//!   one locked-down store must not blind the operator to all the others.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use zookeeper_client::{
    self as zk, AddWatchMode, EventType, MultiReadResult, SessionState, WatchedEvent,
};

use crate::backoff::Backoff;
use crate::zk::layout::{ClusterLayout, Location, StoreId, StoreNode, TrayField};
use crate::zk::view::{ClusterView, NodeUpdate, Problem, StoreView, Touched, owned_by_a_session};

/// How many store reads a full reload keeps in flight at once.
const RELOAD_CONCURRENCY: usize = 512;
/// The most watch events handled as one batch (one round of pipelined reads, one publish).
const MAX_EVENT_BATCH: usize = 4096;
/// The longest the batches of a backlog larger than [`MAX_EVENT_BATCH`] are applied without
/// publishing (see [`Publisher::hold`]): a storm that never lets up is still published.
const MAX_HOLD: Duration = Duration::from_secs(1);

/// Trays read per multi-read of a reload. ZooKeeper refuses a request larger than its
/// `jute.maxbuffer` (1 MB by default) by dropping the connection: a store listing thousands of
/// trays (bad data, most likely) read in one request would fail every reload of the cluster.
/// At seven reads per tray and paths of about 100 bytes, a chunk stays near 45 kB.
const TRAYS_PER_READ: usize = 64;
/// Capacity of the event channel; a subscriber that falls further behind gets `Lagged` and
/// should re-read the snapshot.
const EVENT_CHANNEL_CAPACITY: usize = 4096;

/// Where and how to mirror.
#[derive(Clone, Debug)]
pub struct MirrorConfig {
    /// ZooKeeper connect string, `host:port[,host:port…]`.
    pub connect: String,
    pub layout: ClusterLayout,
    /// Session timeout asked of ZooKeeper (the server clamps it to its min/max).
    pub session_timeout: Duration,
    /// Period of the safety-net full reload.
    pub resync_interval: Duration,
}

/// The mirror's ZooKeeper session, as far as decisions based on the view are concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionStatus {
    /// No session yet, or establishing a new one after expiry.
    Connecting,
    Connected,
    /// Session alive but the connection is lost; the view may be missing changes.
    Disconnected,
    /// The session expired; a new one is being established.
    Expired,
    /// Shut down.
    Closed,
}

impl SessionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionStatus::Connecting => "connecting",
            SessionStatus::Connected => "connected",
            SessionStatus::Disconnected => "disconnected",
            SessionStatus::Expired => "expired",
            SessionStatus::Closed => "closed",
        }
    }
}

/// Whether the view can be trusted, and since when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    pub session: SessionStatus,
    /// A full reload finished since the session last (re)connected.
    pub synced: bool,
    /// When the last full reload finished.
    pub last_full_sync: Option<SystemTime>,
    /// Sessions established so far; grows after every expiry.
    pub sessions: u64,
    /// Why the view may lack the state of a node despite the session: ZooKeeper refused to
    /// list the stores directory, or a read of a changed node failed other than by a refusal
    /// (a refusal within a store costs only that store its trust: see
    /// [`StoreView::unreadable`]). Cleared by the next full reload that succeeds.
    pub read_failure: Option<String>,
    /// Why the last attempt at a session came to nothing: ZooKeeper unreachable, the watch
    /// refused, the session expired. Cleared by the next full reload that succeeds.
    pub session_failure: Option<String>,
    /// Why the last session was abandoned, if it was: a reason that lasts (the watch refused),
    /// which retrying will not change. Cleared by the next full reload that succeeds.
    pub abandoned: Option<String>,
}

impl Health {
    /// True when decisions may be taken on the view: connected, fully reloaded since, and no
    /// node left unread.
    pub fn is_trusted(&self) -> bool {
        self.session == SessionStatus::Connected && self.synced && self.read_failure.is_none()
    }

    /// Why the view is not trusted, in words for a status message or a probe; None when it is.
    pub fn distrust(&self) -> Option<String> {
        if self.session != SessionStatus::Connected {
            let session = self.session.as_str();
            return Some(match &self.session_failure {
                Some(failure) => format!("no ZooKeeper session ({session}; {failure})"),
                None => format!("no ZooKeeper session ({session})"),
            });
        }
        if let Some(failure) = &self.read_failure {
            return Some(failure.clone());
        }
        (!self.synced).then(|| "not fully reloaded since the ZooKeeper session connected".into())
    }

    /// [`Self::distrust`] in words that stay the same through an outage, for what is written
    /// per store (conditions): the session's state and the last connect error change with the
    /// attempts, and a link that keeps dropping goes from "disconnected" to "not reloaded yet"
    /// and back; each change would rewrite every store's status. A session abandoned for a
    /// reason that lasts is said, as retrying will not change it, and so is a failed read (the
    /// first one stands until a reload succeeds).
    pub fn distrust_summary(&self) -> Option<String> {
        if self.is_trusted() {
            return None;
        }
        if let Some(why) = &self.abandoned {
            return Some(format!(
                "no ZooKeeper session: the last one was abandoned: {why}"
            ));
        }
        if self.session == SessionStatus::Connected
            && let Some(failure) = &self.read_failure
        {
            return Some(failure.clone());
        }
        Some("the operator's ZooKeeper session is down, or not reloaded since it reconnected (the operator's log says why)".into())
    }
}

/// One published state of the mirror.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Grows by one with every published change of the view or the health.
    pub version: u64,
    pub view: ClusterView,
    pub health: Health,
}

impl Snapshot {
    /// Whether the view can say which stores are alive: trusted, and the stores directory
    /// exists. Without it nothing is registered under the cluster name (a wrong name, most
    /// likely, or a wiped ensemble), and every store would read as gone: to be marked
    /// offline, and its pfs restarted.
    pub fn knows_stores(&self) -> bool {
        self.health.is_trusted() && self.view.stores_dir
    }

    /// Whether the view can say whether store `id` is alive: it [knows the
    /// stores](Self::knows_stores) and could read every node of this one.
    pub fn knows_store(&self, id: StoreId) -> bool {
        self.knows_stores() && self.view.get(id).is_none_or(StoreView::is_known)
    }
}

/// What changed, for subscribers that react per store. The snapshot holds the data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ViewEvent {
    /// Store `id` appeared or changed in snapshot `version`.
    StoreChanged {
        id: StoreId,
        version: u64,
    },
    /// Store `id`'s directory is gone as of snapshot `version`.
    StoreRemoved {
        id: StoreId,
        version: u64,
    },
    /// The malformed store directories, or the existence of `stores/` itself, changed.
    DirectoriesChanged {
        version: u64,
    },
    HealthChanged {
        health: Health,
        version: u64,
    },
}

/// Handle to the running mirror task.
pub struct Mirror {
    snapshots: watch::Receiver<Arc<Snapshot>>,
    events: broadcast::Sender<ViewEvent>,
    probe: LivenessProbe,
    task: JoinHandle<()>,
}

impl Mirror {
    /// Starts the mirror task. It runs until `shutdown` is cancelled, then closes its session.
    pub fn spawn(config: MirrorConfig, shutdown: CancellationToken) -> Mirror {
        let publisher = Publisher::new(config.layout.stores());
        let (snapshots, events) = (publisher.snapshots.subscribe(), publisher.events.clone());
        let (session, sessions) = watch::channel(None);
        let probe = LivenessProbe {
            session: sessions,
            layout: config.layout.clone(),
            failed: Arc::default(),
        };
        let task = tokio::spawn(run(config, publisher, session, shutdown));
        Mirror {
            snapshots,
            events,
            probe,
            task,
        }
    }

    /// Asks ZooKeeper itself, through the mirror's session, whether a store is alive.
    pub fn probe(&self) -> LivenessProbe {
        self.probe.clone()
    }

    /// The latest snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshots.borrow().clone()
    }

    /// A receiver that is notified of every new snapshot.
    pub fn snapshots(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.snapshots.clone()
    }

    /// Typed events from now on.
    pub fn events(&self) -> broadcast::Receiver<ViewEvent> {
        self.events.subscribe()
    }

    /// Resolves when the mirror's task has ended: after a shutdown, or unexpectedly.
    pub fn ended(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut snapshots = self.snapshots.clone();
        async move { while snapshots.changed().await.is_ok() {} }
    }

    /// Waits for the task to finish (after shutdown it has closed its session); an error says
    /// how it failed (a panic), so that the process does not exit as if all went well.
    pub async fn join(self) -> Result<(), String> {
        self.task.await.map_err(|error| {
            warn!(%error, "ZooKeeper mirror task failed");
            error.to_string()
        })
    }
}

/// Asks ZooKeeper, through the mirror's current session, whether a store's `alive` stands now:
/// for a decision that must not rest on the view alone, a kill above all. The view may
/// lag: the server the session is on can be behind its leader, or cut off from it, and still
/// answer (for up to `syncLimit` ticks) without sending the events it has not seen.
#[derive(Clone, Debug)]
pub struct LivenessProbe {
    session: watch::Receiver<Option<zk::Client>>,
    layout: ClusterLayout,
    /// The last question ZooKeeper could not answer, and when: for a while after, the next ones
    /// fail at once instead of each waiting out its timeout (restarts are decided one at a
    /// time, and would queue behind every wait).
    failed: Arc<std::sync::Mutex<Option<RecentFailure>>>,
}

/// A question ZooKeeper could not answer: when, why, and through which session (a new session
/// is asked afresh).
#[derive(Debug)]
struct RecentFailure {
    at: Instant,
    why: String,
    session: i64,
}

/// How long after a question ZooKeeper could not answer the next ones fail at once.
const FAILED_RECENTLY_FOR: Duration = Duration::from_secs(5);

/// Why a [`LivenessProbe`] has no answer.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("the operator has no ZooKeeper session")]
    NoSession,
    #[error("ZooKeeper did not answer within {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    #[error("cannot ask ZooKeeper about {path}: {source}")]
    Zk { path: String, source: zk::Error },
    #[error("ZooKeeper failed a question moments ago: {0}")]
    FailedRecently(String),
}

impl LivenessProbe {
    /// Whether store `id`'s ephemeral `alive` exists as ZooKeeper's leader has it: the server
    /// first catches up with the leader (`sync`), then answers. A persistent `alive` is no
    /// proof of life, as in the view.
    pub async fn alive(&self, id: StoreId, timeout: Duration) -> Result<bool, ProbeError> {
        // A clone for this one question: the session closes once the mirror drops its own
        // and every question has ended.
        let client = self.session.borrow().clone().ok_or(ProbeError::NoSession)?;
        let session = client.session_id().0;
        if let Some(failed) = self.failed.lock().expect("probe lock").as_ref()
            && failed.session == session
            && failed.at.elapsed() < FAILED_RECENTLY_FOR
        {
            return Err(ProbeError::FailedRecently(failed.why.clone()));
        }
        let stores = self.layout.stores();
        let alive = self.layout.node(id, &StoreNode::Alive);
        // Sent together: the server answers a session's read only after the sync before it.
        let ask = futures::future::join(client.sync(stores), client.check_stat(&alive));
        let answer = match tokio::time::timeout(timeout, ask).await {
            Err(_) => Err(ProbeError::Timeout(timeout)),
            Ok((Err(source), _)) => Err(ProbeError::Zk {
                path: stores.to_owned(),
                source,
            }),
            Ok((_, Err(source))) => Err(ProbeError::Zk {
                path: alive,
                source,
            }),
            // As the view has it: only a session's own ephemeral is proof of life.
            Ok((Ok(()), Ok(stat))) => {
                Ok(stat.is_some_and(|stat| owned_by_a_session(stat.ephemeral_owner)))
            }
        };
        if let Err(error) = &answer {
            *self.failed.lock().expect("probe lock") = Some(RecentFailure {
                at: Instant::now(),
                why: error.to_string(),
                session,
            });
        }
        answer
    }
}

/// Why the mirror could not do something.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error("cannot connect to ZooKeeper at {connect}: {}", describe_connect_error(source, *timeout))]
    Connect {
        connect: String,
        timeout: Duration,
        source: zk::Error,
    },
    #[error(
        "cannot watch {path} in ZooKeeper: {source}{}",
        watch_error_hint(source)
    )]
    Watch { path: String, source: zk::Error },
    #[error("cannot read {path} from ZooKeeper: {source}")]
    Read { path: String, source: zk::Error },
    /// ZooKeeper answered, but refused this one node (the request as a whole went through).
    #[error("ZooKeeper refused to read {path}: {source} (check the ACLs of the stores tree)")]
    Refused { path: String, source: zk::Error },
    /// A store [`Refused`](Self::Refused) where no earlier reading of it can stand in.
    #[error("{reason}")]
    StoreUnreadable { reason: String },
}

impl MirrorError {
    /// A refusal retrying will not change: the watch refused by the server (too old for
    /// persistent watches, or the ACLs), or the credentials.
    fn is_lasting(&self) -> bool {
        matches!(
            self,
            MirrorError::Watch {
                source: zk::Error::Unimplemented
                    | zk::Error::NoAuth
                    | zk::Error::AuthFailed
                    // A request the client refuses to send: it refuses it again next time.
                    | zk::Error::BadArguments(_),
                ..
            }
        )
    }
}

/// What a user can do about a refused watch.
fn watch_error_hint(error: &zk::Error) -> &'static str {
    match error {
        zk::Error::Unimplemented => {
            " (persistent recursive watches need ZooKeeper 3.6 or later on every server)"
        }
        zk::Error::NoAuth => " (check the ACLs of the stores tree)",
        _ => "",
    }
}

fn describe_connect_error(error: &zk::Error, timeout: Duration) -> String {
    match error {
        zk::Error::Timeout => format!(
            "no server answered within the session timeout ({})",
            humantime::format_duration(timeout)
        ),
        other => other.to_string(),
    }
}

/// Connects, reads the whole `stores/` tree once, and closes the session (for `sync --once`).
/// Loads the whole tree once in a session of its own; `None` if `shutdown` came first.
pub async fn load_once(
    config: &MirrorConfig,
    shutdown: &CancellationToken,
) -> Result<Option<ClusterView>, MirrorError> {
    let client = tokio::select! {
        biased;
        _ = shutdown.cancelled() => return Ok(None),
        client = connect(config) => client?,
    };
    let view = tokio::select! {
        biased;
        _ = shutdown.cancelled() => None,
        view = load_tree(&client, &config.layout) => Some(view),
    };
    close(client).await;
    let view = view.transpose()?;
    // One load has no earlier reading to keep for a store it cannot read: it fails, rather
    // than passing for a load of the whole cluster.
    let unreadable = view
        .iter()
        .flat_map(|view| view.stores.values())
        .find_map(|store| store.unreadable.clone());
    if let Some(reason) = unreadable {
        return Err(MirrorError::StoreUnreadable { reason });
    }
    Ok(view)
}

async fn connect(config: &MirrorConfig) -> Result<zk::Client, MirrorError> {
    zk::Client::connector()
        .with_session_timeout(config.session_timeout)
        .connect(&config.connect)
        .await
        .map_err(|source| MirrorError::Connect {
            connect: config.connect.clone(),
            timeout: config.session_timeout,
            source,
        })
}

/// Drops the client and waits (briefly) until its session is really closed on the server, so a
/// process that exits next does not leave the session to expire.
async fn close(client: zk::Client) {
    let mut state = client.state_watcher();
    drop(client);
    let closed = async { while !state.changed().await.is_terminated() {} };
    let _ = tokio::time::timeout(Duration::from_secs(2), closed).await;
}

/// Owns the published state; every change goes out through [`Publisher::publish`].
struct Publisher {
    /// `/pureflash/<cluster>/stores`, for messages.
    stores_path: String,
    /// A missing stores directory was reported (and not yet seen back).
    warned_no_stores_dir: bool,
    version: u64,
    view: ClusterView,
    health: Health,
    snapshots: watch::Sender<Arc<Snapshot>>,
    events: broadcast::Sender<ViewEvent>,
    /// While a backlog of events is applied batch by batch: what it changed so far, published
    /// at once when it is all applied.
    held: Option<Held>,
}

/// Changes applied but not yet published, and since when.
struct Held {
    since: Instant,
    stores: Vec<StoreId>,
    dirs_changed: bool,
}

impl Publisher {
    fn new(stores_path: &str) -> Publisher {
        let health = Health {
            session: SessionStatus::Connecting,
            synced: false,
            last_full_sync: None,
            sessions: 0,
            read_failure: None,
            session_failure: None,
            abandoned: None,
        };
        let initial = Arc::new(Snapshot {
            version: 0,
            view: ClusterView::default(),
            health: health.clone(),
        });
        Publisher {
            stores_path: stores_path.to_owned(),
            warned_no_stores_dir: false,
            version: 0,
            view: ClusterView::default(),
            health,
            snapshots: watch::channel(initial).0,
            events: broadcast::channel(EVENT_CHANNEL_CAPACITY).0,
            held: None,
        }
    }

    /// Applies what follows without publishing it, until [`Publisher::release`]. For a
    /// backlog of events larger than one batch, after a full reload most of all: the events
    /// queued while it read are older than what it read, and a batch of them published alone
    /// would roll the view back (an `alive` deleted and created again before the reload read
    /// it, its deletion in one batch and its creation in the next, would read as the store
    /// going offline and coming back). A change of health is published at once all the same,
    /// with everything held so far: losing trust must not wait.
    fn hold(&mut self) {
        self.held.get_or_insert_with(|| Held {
            since: Instant::now(),
            stores: Vec::new(),
            dirs_changed: false,
        });
    }

    /// How long changes have been held, if they are.
    fn held_for(&self) -> Option<Duration> {
        self.held.as_ref().map(|held| held.since.elapsed())
    }

    /// Publishes what was held, and publishes as it goes again.
    fn release(&mut self) {
        if let Some(held) = self.held.take() {
            self.publish_stores(held.stores, held.dirs_changed, false);
        }
    }

    /// Publishes `stores` as changed or removed, as the view has them now.
    fn publish_stores(
        &mut self,
        mut stores: Vec<StoreId>,
        dirs_changed: bool,
        health_changed: bool,
    ) {
        stores.sort_unstable();
        stores.dedup();
        let (removed, changed): (Vec<StoreId>, Vec<StoreId>) = stores
            .into_iter()
            .partition(|id| !self.view.stores.contains_key(id));
        self.publish(&changed, &removed, dirs_changed, health_changed);
    }

    /// Records why the last attempt at a session came to nothing.
    fn set_session_failure(&mut self, failure: String) {
        let mut health = self.health.clone();
        health.session_failure = Some(failure);
        self.set_health(health);
    }

    /// Records why the last session was abandoned; as lasting, if retrying will not change it.
    fn set_abandoned(&mut self, error: &MirrorError) {
        let mut health = self.health.clone();
        health.session_failure = Some(format!("the last session was abandoned: {error}"));
        if error.is_lasting() {
            health.abandoned = Some(error.to_string());
        }
        self.set_health(health);
    }

    fn clear_abandoned(&mut self) {
        if self.health.abandoned.is_some() {
            let mut health = self.health.clone();
            health.abandoned = None;
            self.set_health(health);
        }
    }

    fn set_session(&mut self, session: SessionStatus) {
        let mut health = self.health.clone();
        // Only staying connected keeps the view synced; any other transition needs a reload.
        health.synced &= session == SessionStatus::Connected && self.health.session == session;
        health.session = session;
        self.set_health(health);
    }

    fn set_health(&mut self, health: Health) {
        if health != self.health {
            self.health = health;
            self.publish(&[], &[], false, true);
        }
    }

    /// Records a node that could not be read: the view is not trusted until a full reload
    /// reads everything.
    fn set_read_failure(&mut self, failure: String) {
        if self.note_read_failure(failure) {
            self.publish(&[], &[], false, true);
        }
    }

    /// [`Self::set_read_failure`] without publishing it: for the caller's next publish, which
    /// then carries the changes read with it and the distrust together. Whether it is news.
    fn note_read_failure(&mut self, failure: String) -> bool {
        // The first failure stands for the rest: one publish, one warning.
        if self.health.read_failure.is_some() {
            return false;
        }
        warn!(%failure, "the ZooKeeper view is not trusted until a full reload reads every node");
        self.health.read_failure = Some(failure);
        true
    }

    fn replace_view(&mut self, fresh: ClusterView) {
        let (changed, dirs_changed) = self.view.replace_with(fresh);
        if !changed.is_empty() {
            info!(
                stores = self.view.stores.len(),
                changed = changed.len(),
                "full reload changed the view"
            );
        }
        let (removed, changed): (Vec<StoreId>, Vec<StoreId>) = changed
            .into_iter()
            // A changed store missing now was there before.
            .partition(|id| !self.view.stores.contains_key(id));
        let mut health = self.health.clone();
        health.synced = true;
        health.last_full_sync = Some(SystemTime::now());
        if health.read_failure.take().is_some() {
            info!("every node of the stores tree read again");
        }
        health.session_failure = None;
        health.abandoned = None;
        let health_changed = health != self.health;
        self.health = health;
        self.publish(&changed, &removed, dirs_changed, health_changed);
    }

    fn publish(
        &mut self,
        changed: &[StoreId],
        removed: &[StoreId],
        dirs_changed: bool,
        health_changed: bool,
    ) {
        if changed.is_empty() && removed.is_empty() && !dirs_changed && !health_changed {
            return;
        }
        if let Some(held) = &mut self.held {
            let stores = changed.iter().chain(removed);
            if !health_changed {
                held.stores.extend(stores);
                held.dirs_changed |= dirs_changed;
                return;
            }
            // Published now, with what was held (holding goes on from here).
            let mut all = std::mem::take(&mut held.stores);
            all.extend(stores);
            let dirs_changed = std::mem::take(&mut held.dirs_changed) || dirs_changed;
            let held = self.held.take();
            self.publish_stores(all, dirs_changed, true);
            self.held = held;
            return;
        }
        log_problem_changes(&self.snapshots.borrow().view, &self.view, changed);
        // Only a loaded view can say the directory is missing.
        if self.health.synced && self.view.stores_dir == self.warned_no_stores_dir {
            self.warned_no_stores_dir = !self.view.stores_dir;
            if self.warned_no_stores_dir {
                warn!(path = %self.stores_path, "ZooKeeper has no stores directory: nothing is synced until it exists (is the cluster name right?)");
            } else {
                info!(path = %self.stores_path, "stores directory present");
            }
        }
        self.version += 1;
        let version = self.version;
        self.snapshots.send_replace(Arc::new(Snapshot {
            version,
            view: self.view.clone(),
            health: self.health.clone(),
        }));
        // Sending fails only when nobody listens, which is fine.
        for &id in changed {
            let _ = self.events.send(ViewEvent::StoreChanged { id, version });
        }
        for &id in removed {
            let _ = self.events.send(ViewEvent::StoreRemoved { id, version });
        }
        if dirs_changed {
            let _ = self.events.send(ViewEvent::DirectoriesChanged { version });
        }
        if health_changed {
            let _ = self.events.send(ViewEvent::HealthChanged {
                health: self.health.clone(),
                version,
            });
        }
    }
}

/// The mirror's task ended without closing (it panicked): its last view must not pass for
/// trusted, or decisions would go on being taken on a picture nobody updates any more.
impl Drop for Publisher {
    fn drop(&mut self) {
        if self.health.session != SessionStatus::Closed {
            tracing::error!(
                "ZooKeeper mirror ended unexpectedly; its view is not trusted any more"
            );
            self.set_session(SessionStatus::Closed);
        }
    }
}

/// Logs bad data when it appears (once, not on every event) and when it is fixed.
fn log_problem_changes(old: &ClusterView, new: &ClusterView, changed: &[StoreId]) {
    if !Arc::ptr_eq(&old.malformed_dirs, &new.malformed_dirs) {
        for (dir, error) in new.malformed_dirs.iter() {
            if !old.malformed_dirs.contains_key(dir) {
                warn!(dir = %dir, %error, "skipping store directory: not a store id");
            }
        }
    }
    for &id in changed {
        let before = old.get(id).map(|s| s.problems()).unwrap_or_default();
        let Some(store) = new.get(id) else { continue };
        match (
            old.get(id).and_then(|s| s.unreadable.as_ref()),
            &store.unreadable,
        ) {
            (None, Some(reason)) => {
                warn!(store = %id, %reason, "the store's state is unknown until ZooKeeper lets it be read in full (tried again at each full reload); nothing is decided on it meanwhile");
            }
            (Some(_), None) => info!(store = %id, "store readable again"),
            _ => {}
        }
        let after = store.problems();
        // A set: a store with thousands of junk nodes must not cost a quadratic comparison
        // on each of its events.
        let known: std::collections::HashSet<&Problem> = before.iter().collect();
        for problem in after.iter().filter(|p| !known.contains(p)) {
            warn!(store = %id, path = %problem.path, error = %problem.error, "malformed store data; the rest of the store is still mirrored");
        }
        if after.is_empty() && !before.is_empty() {
            info!(store = %id, "store data readable again");
        }
    }
}

/// How a session ended.
enum SessionEnd {
    Shutdown,
    Expired,
    Failed(MirrorError),
}

/// The session the [`LivenessProbe`] asks through; emptied however the mirror task ends (a
/// panic too), so that no probe keeps an abandoned session open.
struct SessionSlot(watch::Sender<Option<zk::Client>>);

impl SessionSlot {
    fn set(&self, client: Option<&zk::Client>) {
        self.0.send_replace(client.cloned());
    }
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        self.0.send_replace(None);
    }
}

async fn run(
    config: MirrorConfig,
    mut publisher: Publisher,
    session: watch::Sender<Option<zk::Client>>,
    shutdown: CancellationToken,
) {
    let session = SessionSlot(session);
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        if publisher.health.session != SessionStatus::Expired {
            publisher.set_session(SessionStatus::Connecting);
        }
        let connected = tokio::select! {
            _ = shutdown.cancelled() => break,
            connected = connect(&config) => connected,
        };
        let client = match connected {
            Ok(client) => client,
            Err(error) => {
                let delay = backoff.next_delay();
                warn!(%error, retry_in = ?delay, "ZooKeeper unreachable");
                publisher.set_session_failure(error.to_string());
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(delay) => continue,
                }
            }
        };
        publisher.health.sessions += 1;
        info!(connect = %config.connect, session = %client.session_id(), timeout = ?client.session_timeout(), "ZooKeeper session established");
        session.set(Some(&client));
        let served = serve_session(&client, &config, &mut publisher, &shutdown, &mut backoff).await;
        session.set(None);
        // Whatever a backlog had applied is published with the session's end, untrusted: it
        // may be part of a run of events, older than what the view showed before.
        match served {
            SessionEnd::Shutdown => {
                publisher.set_session(SessionStatus::Closed);
                publisher.release();
                close(client).await;
                break;
            }
            SessionEnd::Expired => {
                warn!("ZooKeeper session expired; starting a new one and reloading everything");
                publisher.set_session_failure("the last session expired".into());
                publisher.set_session(SessionStatus::Expired);
                publisher.release();
            }
            SessionEnd::Failed(error) => {
                let delay = backoff.next_delay();
                warn!(%error, retry_in = ?delay, "ZooKeeper session abandoned");
                publisher.set_abandoned(&error);
                drop(client);
                publisher.set_session(SessionStatus::Connecting);
                publisher.release();
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
    publisher.set_session(SessionStatus::Closed);
    info!("ZooKeeper mirror stopped");
}

/// Serves one session: watch, reload, then follow events until the session ends.
async fn serve_session(
    client: &zk::Client,
    config: &MirrorConfig,
    publisher: &mut Publisher,
    shutdown: &CancellationToken,
    backoff: &mut Backoff,
) -> SessionEnd {
    let stores = config.layout.stores();
    let mut watcher = match arm_first_watch(client, stores, shutdown).await {
        Ok(watcher) => watcher,
        Err(end) => return end,
    };
    // Whatever had the last session abandoned, this one's watch is armed.
    publisher.clear_abandoned();
    publisher.set_session(SessionStatus::Connected);
    let mut connected = true;
    // When the next full reload is due: now, right after (re)connecting.
    let mut reload_at = Instant::now();
    // After a failed reload, not before its backoff, reconnection or not: a reload that
    // breaks the connection (a request the server refuses) must not be retried at once.
    let mut retry_at: Option<Instant> = None;
    // Events that were queued when a reload returned, applied before anything else.
    let mut pending: VecDeque<WatchedEvent> = VecDeque::new();
    loop {
        if connected && reload_at <= Instant::now() {
            // Reads wait for a lost connection to come back or the session to expire; a
            // shutdown does not.
            let reload =
                distrust_while_disconnected(client, publisher, load_tree(client, &config.layout));
            let loaded = tokio::select! {
                _ = shutdown.cancelled() => return SessionEnd::Shutdown,
                loaded = reload => loaded,
            };
            match loaded {
                Ok(fresh) => {
                    // The events queued now reached the client before the reload's last read
                    // answered: they are as old as its reads, or older. Applied all before
                    // anything is published again, however many: a part of them applied
                    // (a node deleted, not yet its re-creation that the reload saw) would
                    // publish a state older than the reload's as trusted.
                    while !pending.back().is_some_and(is_terminal) {
                        match watcher.changed().now_or_never() {
                            Some(event) => pending.push_back(event),
                            None => break,
                        }
                    }
                    // Among them a connection lost (and maybe found again) before or while
                    // the reload read: the server dropped the watch with it, so changes after
                    // the reads may never be told. Not trusted until the watch is armed again
                    // and a reload follows, which those events bring.
                    if connection_lost_in(&pending) {
                        publisher.set_session(SessionStatus::Disconnected);
                    }
                    publisher.replace_view(fresh);
                    backoff.reset();
                    retry_at = None;
                    reload_at = Instant::now() + config.resync_interval;
                }
                Err(error) => {
                    let delay = backoff.next_delay();
                    warn!(%error, retry_in = ?delay, "full reload from ZooKeeper failed");
                    if let MirrorError::Refused { .. } = error {
                        publisher.set_read_failure(error.to_string());
                    }
                    reload_at = Instant::now() + delay;
                    retry_at = Some(reload_at);
                }
            }
        }
        let reload_deadline = connected.then_some(reload_at);
        let reload_due = async move {
            match reload_deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let first = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return SessionEnd::Shutdown,
            _ = reload_due => None,
            () = std::future::ready(()), if !pending.is_empty() => pending.pop_front(),
            event = watcher.changed() => Some(event),
            // A backlog held for publishing and no event queued any more: it is all applied.
            () = std::future::ready(()), if publisher.held.is_some() => {
                publisher.release();
                None
            }
        };
        if let Some(first) = first {
            let mut batch = vec![first];
            // Polling the watcher again after a terminal session event panics (and none
            // is pending behind one).
            while batch.len() < MAX_EVENT_BATCH && !batch.last().is_some_and(is_terminal) {
                let next = match pending.pop_front() {
                    Some(event) => Some(event),
                    None => watcher.changed().now_or_never(),
                };
                match next {
                    Some(event) => batch.push(event),
                    None => break,
                }
            }
            // More events queued than one batch takes: the whole backlog is published
            // as one (within a bound), not batch by batch; the events queued at a reload
            // whatever their number.
            let backlog = !pending.is_empty()
                || (batch.len() == MAX_EVENT_BATCH
                    && !batch.last().is_some_and(is_terminal)
                    && publisher.held_for().is_none_or(|held| held < MAX_HOLD));
            if backlog {
                publisher.hold();
            }
            let applied = tokio::select! {
                _ = shutdown.cancelled() => return SessionEnd::Shutdown,
                applied = apply_batch(client, &config.layout, batch, publisher) => applied,
            };
            if !backlog {
                publisher.release();
            }
            match applied {
                BatchOutcome::Applied { reread_failed } => {
                    // Not before a failed reload's backoff: a node that stays unreadable
                    // must not bring a full reload with each of its events.
                    if reread_failed {
                        reload_at = retry_at.map_or(Instant::now(), |at| at.max(Instant::now()));
                    }
                }
                BatchOutcome::Disconnected => {
                    connected = false;
                }
                BatchOutcome::Reconnected => {
                    // zookeeper-client 0.11.2 does not send persistent watches again on a
                    // reconnect within the session (`resend_watches` never picks
                    // SetWatches2), and the server forgot them with the old connection:
                    // the watch is armed anew, before the reload. The old watcher goes
                    // once the new one is registered, so no RemoveWatches is sent.
                    match arm_watch(client, stores, shutdown).await {
                        Ok(armed) => {
                            watcher = armed;
                            // What the old watcher still had queued is older than the reload
                            // that follows, which supersedes it (a session event left in it
                            // would only distrust the view again).
                            pending.retain(is_terminal);
                            connected = true;
                            reload_at =
                                retry_at.map_or(Instant::now(), |at| at.max(Instant::now()));
                        }
                        // Lost again before the server answered: the old watcher tells of
                        // the next reconnection (session events reach every watcher), and
                        // the watch is armed then. The session itself is still good.
                        Err(ArmFailure::ConnectionLost) => {
                            info!("ZooKeeper connection lost again while re-arming the watch");
                            publisher.set_session(SessionStatus::Disconnected);
                            connected = false;
                        }
                        Err(failure) => return failure.ends_session(stores),
                    }
                }
                BatchOutcome::Terminated(SessionState::Expired) => return SessionEnd::Expired,
                BatchOutcome::Terminated(state) => {
                    return SessionEnd::Failed(MirrorError::Watch {
                        path: stores.to_owned(),
                        source: if state == SessionState::AuthFailed {
                            zk::Error::AuthFailed
                        } else {
                            zk::Error::ClientClosed
                        },
                    });
                }
            }
        }
    }
}

/// Why the watch could not be armed.
enum ArmFailure {
    Shutdown,
    /// The connection dropped before the server answered; the session may well live on.
    ConnectionLost,
    Expired,
    Failed(zk::Error),
}

impl ArmFailure {
    /// How the session ends when there is no watch to go on with.
    fn ends_session(self, stores: &str) -> SessionEnd {
        let source = match self {
            ArmFailure::Shutdown => return SessionEnd::Shutdown,
            ArmFailure::Expired => return SessionEnd::Expired,
            ArmFailure::ConnectionLost => zk::Error::ConnectionLoss,
            ArmFailure::Failed(source) => source,
        };
        SessionEnd::Failed(MirrorError::Watch {
            path: stores.to_owned(),
            source,
        })
    }
}

/// Arms the persistent recursive watch on `stores/`.
async fn arm_watch(
    client: &zk::Client,
    stores: &str,
    shutdown: &CancellationToken,
) -> Result<zk::PersistentWatcher, ArmFailure> {
    let armed = tokio::select! {
        _ = shutdown.cancelled() => return Err(ArmFailure::Shutdown),
        armed = client.watch(stores, AddWatchMode::PersistentRecursive) => armed,
    };
    armed.map_err(|error| {
        // Told by the session, not the error: a connection reset or a response timeout fail
        // the request with a custom error, not `ConnectionLoss`, yet leave the session to
        // reconnect like a clean close does.
        let transport = matches!(
            error,
            zk::Error::ConnectionLoss | zk::Error::Custom(_) | zk::Error::Timeout
        );
        match client.state() {
            SessionState::Expired => ArmFailure::Expired,
            state if state.is_terminated() => ArmFailure::Failed(error),
            // Reconnected already, or reconnecting.
            state if transport || !is_connected(state) => ArmFailure::ConnectionLost,
            // The server refused it: a new session will not change its mind soon.
            _ => ArmFailure::Failed(error),
        }
    })
}

/// Arms the watch of a session that has none yet: a connection lost meanwhile is waited out
/// (the session reconnects by itself) and the watch armed on the next connection.
async fn arm_first_watch(
    client: &zk::Client,
    stores: &str,
    shutdown: &CancellationToken,
) -> Result<zk::PersistentWatcher, SessionEnd> {
    loop {
        match arm_watch(client, stores, shutdown).await {
            Ok(watcher) => return Ok(watcher),
            // Tried again once the state moves on: connected, the request goes through; ended,
            // it fails at once and `arm_watch` tells how.
            Err(ArmFailure::ConnectionLost) => {
                info!("ZooKeeper connection lost while arming the watch; waiting to reconnect");
                let mut states = client.state_watcher();
                let state = states.state();
                if !is_connected(state) && !state.is_terminated() {
                    tokio::select! {
                        _ = shutdown.cancelled() => return Err(SessionEnd::Shutdown),
                        _ = states.changed() => {}
                    }
                }
            }
            Err(failure) => return Err(failure.ends_session(stores)),
        }
    }
}

/// Whether `events` tell of the connection lost (or the session ended).
fn connection_lost_in<'a>(events: impl IntoIterator<Item = &'a WatchedEvent>) -> bool {
    events
        .into_iter()
        .any(|event| event.event_type == EventType::Session && !is_connected(event.session_state))
}

fn is_connected(state: SessionState) -> bool {
    matches!(
        state,
        SessionState::SyncConnected | SessionState::ConnectedReadOnly
    )
}

fn is_terminal(event: &WatchedEvent) -> bool {
    event.event_type == EventType::Session && event.session_state.is_terminated()
}

enum BatchOutcome {
    /// Node events applied; `reread_failed` when some data could not be read (reload needed).
    Applied {
        reread_failed: bool,
    },
    Disconnected,
    Reconnected,
    Terminated(SessionState),
}

/// One node event resolved to a view update; `read` indexes the pipelined data read, if any.
struct Step {
    /// The store directory, or `None` for `stores/` itself.
    dir: Option<String>,
    rel: String,
    deleted: bool,
    read: Option<usize>,
    /// The node is the store's `alive` or a tray's `online`, read for its owner.
    owner_read: Option<usize>,
}

/// Applies a batch of watch events: issues every needed data read at once, then applies the
/// results in event order and publishes one snapshot.
async fn apply_batch(
    client: &zk::Client,
    layout: &ClusterLayout,
    batch: Vec<WatchedEvent>,
    publisher: &mut Publisher,
) -> BatchOutcome {
    let mut steps = Vec::with_capacity(batch.len());
    let mut reads = Vec::new();
    let mut owner_reads = Vec::new();
    // One read per node, shared by its events: all are sent once the batch is drained, so
    // each would read the same, and a node rewritten thousands of times in a batch would
    // otherwise hold as many copies of its data at once.
    let mut read_of: HashMap<&str, usize> = HashMap::new();
    let mut owner_read_of: HashMap<&str, usize> = HashMap::new();
    // Every session change, in order: a disconnection and the reconnection after it may both
    // sit in one batch, and the disconnection must still cost the view its trust.
    let mut session_changes = Vec::new();
    for event in &batch {
        match event.event_type {
            EventType::Session => session_changes.push(event.session_state),
            EventType::NodeCreated | EventType::NodeDataChanged | EventType::NodeDeleted => {
                let deleted = event.event_type == EventType::NodeDeleted;
                let (dir, rel) = match layout.locate(&event.path) {
                    Location::InStore { dir, rel } => (dir, rel),
                    Location::Stores => {
                        steps.push(Step {
                            dir: None,
                            rel: String::new(),
                            deleted,
                            read: None,
                            owner_read: None,
                        });
                        continue;
                    }
                    Location::Elsewhere => continue,
                };
                // The data nodes are read for their data; `alive` and `online` for their owner.
                let node = StoreNode::parse(rel);
                let readable = !deleted && dir.parse::<StoreId>().is_ok();
                let read =
                    (readable && node.as_ref().is_ok_and(StoreNode::carries_data)).then(|| {
                        *read_of.entry(&event.path).or_insert_with(|| {
                            reads.push(client.get_data(&event.path));
                            reads.len() - 1
                        })
                    });
                let ephemeral = matches!(node, Ok(StoreNode::Alive | StoreNode::TrayOnline(_)));
                let owner_read = (readable && ephemeral).then(|| {
                    *owner_read_of.entry(&event.path).or_insert_with(|| {
                        owner_reads.push(client.get_data(&event.path));
                        owner_reads.len() - 1
                    })
                });
                steps.push(Step {
                    dir: Some(dir.to_owned()),
                    rel: rel.to_owned(),
                    deleted,
                    read,
                    owner_read,
                });
            }
            // A recursive watch never sends these; nothing to do if one comes.
            EventType::NodeChildrenChanged => {}
        }
    }
    // The connection was lost somewhere in this batch: what follows the gap may miss events,
    // so none of it is published as trusted (a reconnection in the batch brings a reload).
    if session_changes.iter().any(|&state| !is_connected(state)) {
        publisher.set_session(SessionStatus::Disconnected);
    }
    // Whose session a new `alive` belongs to is read with the data: a store is published
    // alive together with its owner, never first as alive for an unknown session (which reads
    // as no restart proven, and lets a persistent `alive` pass for life for a moment). The
    // reads go out together, so waiting for both costs no extra round trip. Like the data
    // reads they may show a later state, whose events then follow.
    let (results, owners) = distrust_while_disconnected(
        client,
        publisher,
        futures::future::join(
            futures::future::join_all(reads),
            futures::future::join_all(owner_reads),
        ),
    )
    .await;
    debug!(
        events = batch.len(),
        reads = results.len() + owners.len(),
        "watch events"
    );
    let mut reread_failed = false;
    // The first node that could not be read, recorded with what the batch changed, in one
    // publish (published on its own first, it would swallow the changes' news).
    let mut unread: Option<String> = None;
    let mut touched = Vec::new();
    let mut dirs_changed = false;
    for step in &steps {
        let Some(dir) = &step.dir else {
            dirs_changed |= publisher.view.set_stores_dir(!step.deleted) == Touched::Directories;
            continue;
        };
        let update = match step.read.map(|i| &results[i]) {
            None if step.deleted => NodeUpdate::Deleted,
            None => NodeUpdate::Present(&[]),
            Some(Ok((data, _))) => NodeUpdate::Present(data),
            Some(Err(zk::Error::NoNode)) => NodeUpdate::Deleted,
            Some(Err(error)) => {
                if let Some(id) = refused_store(dir, error) {
                    let reason = reread_failure(layout, dir, &step.rel, error);
                    if let Touched::Store(id) = publisher.view.mark_unreadable(id, reason) {
                        touched.push(id);
                    }
                    continue;
                }
                debug!(%error, %dir, rel = %step.rel, "could not read node data; will reload");
                unread = unread.or_else(|| Some(reread_failure(layout, dir, &step.rel, error)));
                reread_failed = true;
                continue;
            }
        };
        let owner = match step.owner_read.map(|i| &owners[i]) {
            None => None,
            Some(Ok((_, stat))) => Some(NodeUpdate::Ephemeral(stat.ephemeral_owner)),
            Some(Err(zk::Error::NoNode)) => Some(NodeUpdate::Deleted),
            Some(Err(error)) => {
                // Present, owner unknown: published so (no proof of a restart) until a reload.
                let reason = reread_failure(layout, dir, &step.rel, error);
                match refused_store(dir, error) {
                    Some(id) => {
                        if let Touched::Store(id) = publisher.view.mark_unreadable(id, reason) {
                            touched.push(id);
                        }
                    }
                    None => {
                        debug!(%error, %dir, "could not read alive's owner; will reload");
                        unread = unread.or(Some(reason));
                        reread_failed = true;
                    }
                }
                None
            }
        };
        for update in [Some(update), owner].into_iter().flatten() {
            match publisher.view.apply(dir, &step.rel, update) {
                Touched::Store(id) => touched.push(id),
                Touched::Directories => dirs_changed = true,
                Touched::Nothing => {}
            }
        }
    }
    // One publish, with the distrust in it: no snapshot with a node left unread goes out
    // trusted, not even for a moment.
    let distrusted = unread.is_some_and(|unread| publisher.note_read_failure(unread));
    publisher.publish_stores(touched, dirs_changed, distrusted);

    apply_session_changes(
        publisher,
        &session_changes,
        BatchOutcome::Applied { reread_failed },
    )
}

/// The store a refused read makes unreadable. A refusal (an ACL, most likely) is the store's
/// own: the rest of the view stays trusted, and the store is read in full again by the next
/// periodic reload (an ACL is not changed back within seconds; reloading the whole cluster
/// until it is would cost every store a read every few seconds).
fn refused_store(dir: &str, error: &zk::Error) -> Option<StoreId> {
    if *error == zk::Error::NoAuth {
        dir.parse().ok()
    } else {
        None
    }
}

/// What to record of a failed re-read. Every failure leaves the view missing a node's state
/// until a full reload reads it: a refusal (an ACL) for its store while the session goes on
/// (see [`refused_store`]), but any other failure (a timeout, a malformed answer: a request
/// that failed without the session noticing) for the whole view, as it is not tied to the
/// node. A lost connection or session brings its own reload, which clears the record again.
fn reread_failure(layout: &ClusterLayout, dir: &str, rel: &str, error: &zk::Error) -> String {
    let path = format!("{}/{dir}/{rel}", layout.stores());
    if *error == zk::Error::NoAuth {
        refusal(&path, error)
    } else {
        format!("could not read {path} from ZooKeeper: {error}")
    }
}

/// Why a store is unreadable ([`StoreView::unreadable`]), worded alike whether a reload or an
/// event's read met the refusal: a store marked by one and found so by the other is no change.
fn refusal(path: &str, error: &zk::Error) -> String {
    format!("ZooKeeper refused to read {path}: {error} (check the ACLs of the store's nodes)")
}

/// Awaits `work` (reads). A read sent while the connection is down waits for it to come back,
/// or for the session to expire: for that long the view would pass for trusted while events go
/// unseen. So the session is published as disconnected as soon as it is; the session events
/// that follow in the watch stream bring the reconnection and the reload.
///
/// Any change of the session state while the work runs counts as a disconnection, even when
/// the state reads connected again by the time it is looked at: the state channel keeps only
/// the latest state, so a quick drop and reconnect shows as one change to connected — and the
/// server forgot the watch with the old connection. What was read across it is not trusted
/// until the reconnection's own reload.
async fn distrust_while_disconnected<T>(
    client: &zk::Client,
    publisher: &mut Publisher,
    work: impl Future<Output = T>,
) -> T {
    let mut state = client.state_watcher();
    if !is_connected(state.state()) {
        publisher.set_session(SessionStatus::Disconnected);
    }
    let mut work = std::pin::pin!(work);
    loop {
        tokio::select! {
            done = &mut work => {
                // A change that came with the last answer counts too.
                if state.changed().now_or_never().is_some() {
                    publisher.set_session(SessionStatus::Disconnected);
                }
                return done;
            }
            _ = state.changed() => publisher.set_session(SessionStatus::Disconnected),
        }
    }
}

/// Publishes a batch's session changes in order; the outcome is the last one's.
fn apply_session_changes(
    publisher: &mut Publisher,
    changes: &[SessionState],
    mut outcome: BatchOutcome,
) -> BatchOutcome {
    for &state in changes {
        match state {
            state if state.is_terminated() => return BatchOutcome::Terminated(state),
            SessionState::Disconnected => {
                warn!(
                    "ZooKeeper connection lost; the view is not trusted until reconnected and reloaded"
                );
                publisher.set_session(SessionStatus::Disconnected);
                outcome = BatchOutcome::Disconnected;
            }
            SessionState::SyncConnected | SessionState::ConnectedReadOnly => {
                info!("ZooKeeper connection re-established; reloading");
                publisher.set_session(SessionStatus::Connected);
                outcome = BatchOutcome::Reconnected;
            }
            _ => {}
        }
    }
    outcome
}

/// Reads the whole `stores/` tree: one listing, then per store one multi-read of its top level
/// and one of its trays, with up to [`RELOAD_CONCURRENCY`] stores in flight. Each store's view
/// is built as soon as its reads return, so no copy of the raw tree is ever held.
async fn load_tree(
    client: &zk::Client,
    layout: &ClusterLayout,
) -> Result<ClusterView, MirrorError> {
    let stores = layout.stores();
    let mut view = ClusterView::default();
    // The server catches up with ZooKeeper's leader first: one that is behind, or was cut off
    // from it without dropping its clients yet, would otherwise serve its stale copy (a new
    // session may land on any server). Requests of one session are answered in order, so the
    // listing sent right behind the sync waits for it: no extra round trip.
    let (synced, listed) =
        futures::future::join(client.sync(stores), client.list_children(stores)).await;
    match synced {
        Ok(()) | Err(zk::Error::NoNode) => {}
        Err(source) => {
            return Err(MirrorError::Read {
                path: stores.to_owned(),
                source,
            });
        }
    }
    let dirs = match listed {
        Ok(dirs) => {
            view.stores_dir = true;
            dirs
        }
        Err(zk::Error::NoNode) => Vec::new(),
        Err(source @ zk::Error::NoAuth) => {
            return Err(MirrorError::Refused {
                path: stores.to_owned(),
                source,
            });
        }
        Err(source) => {
            return Err(MirrorError::Read {
                path: stores.to_owned(),
                source,
            });
        }
    };
    let mut in_flight = FuturesUnordered::new();
    for dir in dirs {
        let Ok(id) = dir.parse::<StoreId>() else {
            view.apply(&dir, "", NodeUpdate::Present(&[]));
            continue;
        };
        if in_flight.len() >= RELOAD_CONCURRENCY
            && let Some((id, store)) = in_flight.next().await
        {
            insert_store(&mut view, id, store)?;
        }
        in_flight.push(read_store(client, layout, id).map(move |store| (id, store)));
    }
    while let Some((id, store)) = in_flight.next().await {
        insert_store(&mut view, id, store)?;
    }
    Ok(view)
}

/// Adds what was read of store `id`. A store ZooKeeper refused to read is added as unreadable
/// (see [`StoreView::unreadable`]); any other failure fails the reload.
fn insert_store(
    view: &mut ClusterView,
    id: StoreId,
    read: Result<Option<StoreView>, MirrorError>,
) -> Result<(), MirrorError> {
    match read {
        Ok(Some(store)) => {
            view.stores.insert(id, Arc::new(store));
        }
        Ok(None) => {}
        Err(MirrorError::Refused { path, source }) => {
            let reason = refusal(&path, &source);
            view.stores
                .insert(id, Arc::new(StoreView::unreadable(id, reason)));
        }
        Err(error) => return Err(error),
    }
    Ok(())
}

/// Reads one store: a multi-read of its top level, then one of all its trays. `None` if the
/// store went away meanwhile.
async fn read_store(
    client: &zk::Client,
    layout: &ClusterLayout,
    id: StoreId,
) -> Result<Option<StoreView>, MirrorError> {
    let path = layout.store(id);
    let read_error = |source| MirrorError::Read {
        path: path.clone(),
        source,
    };
    let mut reader = NodeReader::new(client);
    reader.children(path.clone()).map_err(read_error)?;
    for data in ["mngt_ip", "state", "alive"] {
        reader.data(format!("{path}/{data}")).map_err(read_error)?;
    }
    for dir in ["trays", "ports", "rep_ports"] {
        reader
            .children(format!("{path}/{dir}"))
            .map_err(read_error)?;
    }
    let mut results = reader.commit().await.map_err(read_error)?.into_iter();
    let Some(children) = children_of(results.next())? else {
        return Ok(None);
    };
    let mngt_ip = data_of(results.next())?;
    let state = data_of(results.next())?;
    let alive_owner = match results.next() {
        Some((_, MultiReadResult::Data { stat, .. })) => Some(stat.ephemeral_owner),
        other => {
            refused(other)?;
            None
        }
    };
    let trays = children_of(results.next())?.unwrap_or_default();
    let ports = children_of(results.next())?.unwrap_or_default();
    let rep_ports = children_of(results.next())?.unwrap_or_default();

    let mut store = StoreView::new(id);
    for child in &children {
        let data = match child.as_str() {
            "mngt_ip" => mngt_ip.as_deref(),
            "state" => state.as_deref(),
            "alive" => {
                // Listed, then gone when read (the reads come after the listing): gone, as
                // its deletion's event, queued behind this reload, says too.
                if let Some(owner) = alive_owner {
                    store.set_ephemeral(child, owner);
                }
                continue;
            }
            _ => Some(&[][..]),
        };
        if let Some(data) = data {
            store.set(child, data);
        }
    }
    for (kind, names) in [("ports", &ports), ("rep_ports", &rep_ports)] {
        for name in names {
            store.set(&format!("{kind}/{name}"), &[]);
        }
    }
    // A child of `trays/` that names no tray is reported as it is: what is below it tells
    // nothing, and is not read (a name can be as long as a request allows: read seven times
    // over, it would make the request one ZooKeeper refuses, at every reload).
    let (trays, junk): (Vec<&String>, Vec<&String>) = trays
        .iter()
        .partition(|tray| StoreNode::parse(&format!("trays/{tray}")).is_ok());
    for tray in junk {
        store.set(&format!("trays/{tray}"), &[]);
    }
    for chunk in trays.chunks(TRAYS_PER_READ) {
        let mut reader = NodeReader::new(client);
        for tray in chunk {
            let tray_path = format!("{path}/trays/{tray}");
            reader.children(tray_path.clone()).map_err(read_error)?;
            for field in TrayField::ALL {
                reader
                    .data(format!("{tray_path}/{}", field.name()))
                    .map_err(read_error)?;
            }
            // For its owner, as `alive`'s.
            reader
                .data(format!("{tray_path}/online"))
                .map_err(read_error)?;
        }
        let mut results = reader.commit().await.map_err(read_error)?.into_iter();
        for tray in chunk {
            let children = children_of(results.next())?;
            let mut fields = Vec::with_capacity(TrayField::ALL.len());
            for _ in TrayField::ALL {
                fields.push(data_of(results.next())?);
            }
            let online_owner = match results.next() {
                Some((_, MultiReadResult::Data { stat, .. })) => Some(stat.ephemeral_owner),
                other => {
                    refused(other)?;
                    None
                }
            };
            let Some(children) = children else { continue }; // deleted meanwhile
            store.set(&format!("trays/{tray}"), &[]);
            for child in &children {
                if child == "online" {
                    // Gone when read: gone (as `alive` above).
                    if let Some(owner) = online_owner {
                        store.set_ephemeral(&format!("trays/{tray}/online"), owner);
                    }
                    continue;
                }
                let data = match TrayField::ALL.iter().position(|f| f.name() == child) {
                    Some(i) => fields[i].as_deref(),
                    None => Some(&[][..]),
                };
                if let Some(data) = data {
                    store.set(&format!("trays/{tray}/{child}"), data);
                }
            }
        }
    }
    Ok(Some(store))
}

/// A multi-read that remembers the path of each read, so that a node ZooKeeper refuses is
/// named in the error.
struct NodeReader<'a> {
    reader: zk::MultiReader<'a>,
    paths: Vec<String>,
}

/// One read's answer, with its path.
type NodeResult = (String, MultiReadResult);

impl<'a> NodeReader<'a> {
    fn new(client: &'a zk::Client) -> Self {
        NodeReader {
            reader: client.new_multi_reader(),
            paths: Vec::new(),
        }
    }

    fn children(&mut self, path: String) -> Result<(), zk::Error> {
        self.reader.add_get_children(&path)?;
        self.paths.push(path);
        Ok(())
    }

    fn data(&mut self, path: String) -> Result<(), zk::Error> {
        self.reader.add_get_data(&path)?;
        self.paths.push(path);
        Ok(())
    }

    async fn commit(mut self) -> Result<Vec<NodeResult>, zk::Error> {
        let results = self.reader.commit().await?;
        Ok(self.paths.into_iter().zip(results).collect())
    }
}

/// A read's answer that is neither the expected kind nor "no such node": ZooKeeper refused
/// the node (an ACL, most likely). Never taken for a missing node.
fn refused(result: Option<NodeResult>) -> Result<(), MirrorError> {
    match result {
        Some((path, MultiReadResult::Error { err })) if err != zk::Error::NoNode => {
            Err(MirrorError::Refused { path, source: err })
        }
        _ => Ok(()),
    }
}

/// The children a read listed; `None` if the node does not exist.
fn children_of(result: Option<NodeResult>) -> Result<Option<Vec<String>>, MirrorError> {
    match result {
        Some((_, MultiReadResult::Children { children })) => Ok(Some(children)),
        other => refused(other).map(|()| None),
    }
}

/// The data a read returned; `None` if the node does not exist.
fn data_of(result: Option<NodeResult>) -> Result<Option<Vec<u8>>, MirrorError> {
    match result {
        Some((_, MultiReadResult::Data { data, .. })) => Ok(Some(data)),
        other => refused(other).map(|()| None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The health says why it is not trusted, the last session's failure included, until a
    /// full reload succeeds; a refused watch says what would make ZooKeeper accept it.
    #[test]
    fn an_untrusted_health_says_why_until_a_reload_succeeds() {
        let mut publisher = Publisher::new("/pureflash/c/stores");
        assert_eq!(
            publisher.health.distrust().as_deref(),
            Some("no ZooKeeper session (connecting)")
        );
        let refused = MirrorError::Watch {
            path: "/pureflash/c/stores".into(),
            source: zk::Error::Unimplemented,
        };
        publisher.set_abandoned(&refused);
        let why = publisher.health.distrust().unwrap();
        assert!(
            why.starts_with("no ZooKeeper session (connecting; the last session was abandoned: cannot watch /pureflash/c/stores")
                && why.contains("ZooKeeper 3.6 or later"),
            "{why}"
        );
        publisher.set_session(SessionStatus::Connected);
        assert_eq!(
            publisher.health.distrust().as_deref(),
            Some("not fully reloaded since the ZooKeeper session connected")
        );
        publisher.replace_view(ClusterView::default());
        assert_eq!(publisher.health.distrust(), None);
        assert_eq!(publisher.health.session_failure, None);
        publisher.set_session(SessionStatus::Disconnected);
        assert_eq!(
            publisher.health.distrust().as_deref(),
            Some("no ZooKeeper session (disconnected)")
        );
    }

    /// What is written per store says why in words that stay the same through an outage
    /// (each change would rewrite every store's status), a refused watch included.
    #[test]
    fn the_summary_of_an_untrusted_health_stays_the_same_through_an_outage() {
        let mut publisher = Publisher::new("/pureflash/c/stores");
        publisher.set_session(SessionStatus::Connected);
        publisher.replace_view(ClusterView::default());
        assert_eq!(publisher.health.distrust_summary(), None);
        publisher.set_session(SessionStatus::Disconnected);
        let first = publisher.health.distrust_summary();
        publisher.set_session_failure("the last session expired".into());
        publisher.set_session(SessionStatus::Expired);
        assert_eq!(publisher.health.distrust_summary(), first);
        publisher.set_session_failure("cannot connect to ZooKeeper at zk:2181: timeout".into());
        publisher.set_session(SessionStatus::Connecting);
        assert_eq!(publisher.health.distrust_summary(), first);
        assert!(
            publisher
                .health
                .distrust()
                .is_some_and(|why| why.contains("cannot connect")),
            "the detail is /readyz's"
        );
        let refused = MirrorError::Watch {
            path: "/pureflash/c/stores".into(),
            source: zk::Error::Unimplemented,
        };
        publisher.set_abandoned(&refused);
        let lasting = publisher.health.distrust_summary().unwrap();
        assert!(lasting.contains("ZooKeeper 3.6 or later"), "{lasting}");
        publisher.set_session_failure("cannot connect to ZooKeeper at zk:2181: timeout".into());
        assert_eq!(
            publisher.health.distrust_summary().as_deref(),
            Some(lasting.as_str())
        );
        // A watch armed again clears it.
        publisher.clear_abandoned();
        assert_eq!(publisher.health.distrust_summary(), first);
        // A link that keeps dropping: connected but not reloaded reads the same.
        publisher.set_session(SessionStatus::Connected);
        assert_eq!(publisher.health.distrust_summary(), first);
        publisher.set_session(SessionStatus::Disconnected);
        assert_eq!(publisher.health.distrust_summary(), first);
        // A session ended by what passes is no lasting reason.
        publisher.set_abandoned(&MirrorError::Watch {
            path: "/pureflash/c/stores".into(),
            source: zk::Error::ClientClosed,
        });
        assert_eq!(publisher.health.distrust_summary(), first);
        publisher.set_abandoned(&refused);
        publisher.set_session(SessionStatus::Connected);
        publisher.replace_view(ClusterView::default());
        assert_eq!(publisher.health.abandoned, None);
        assert_eq!(publisher.health.distrust_summary(), None);
    }

    /// A reload that returns with a lost connection's events queued behind it (the watch
    /// went with the connection) publishes its view untrusted; the events bring the reload
    /// that is trusted.
    #[test]
    fn a_reload_with_a_lost_connection_queued_behind_it_is_not_trusted() {
        let session = |state| {
            // (Made as the client makes one: the type is not to be built field by field.)
            let mut event = WatchedEvent::new(EventType::NodeCreated, "");
            event.event_type = EventType::Session;
            event.session_state = state;
            event
        };
        let node = WatchedEvent::new(EventType::NodeDeleted, "/pureflash/c/stores/1/alive");
        assert!(!connection_lost_in([
            &node,
            &session(SessionState::SyncConnected)
        ]));
        assert!(connection_lost_in([
            &node,
            &session(SessionState::Disconnected),
            &session(SessionState::SyncConnected)
        ]));
        assert!(connection_lost_in([&session(SessionState::Expired)]));

        // What the loop then does: the reload's view is published untrusted; the events'
        // reconnection brings the reload that is trusted (see the test below).
        let mut publisher = Publisher::new("/pureflash/c/stores");
        publisher.set_session(SessionStatus::Connected);
        publisher.set_session(SessionStatus::Disconnected);
        publisher.replace_view(ClusterView::default());
        assert!(!publisher.health.is_trusted());
    }

    #[test]
    fn a_disconnection_costs_trust_even_when_the_reconnection_comes_in_the_same_batch() {
        let mut publisher = Publisher::new("/pureflash/c/stores");
        publisher.set_session(SessionStatus::Connected);
        publisher.replace_view(ClusterView::default());
        assert!(publisher.health.is_trusted());
        let outcome = apply_session_changes(
            &mut publisher,
            &[SessionState::Disconnected, SessionState::SyncConnected],
            BatchOutcome::Applied {
                reread_failed: false,
            },
        );
        assert!(matches!(outcome, BatchOutcome::Reconnected), "reload due");
        assert_eq!(publisher.health.session, SessionStatus::Connected);
        assert!(
            !publisher.health.is_trusted(),
            "events may have been lost while disconnected: untrusted until reloaded"
        );
        publisher.replace_view(ClusterView::default());
        assert!(publisher.health.is_trusted());
    }

    #[test]
    fn a_mirror_that_ends_without_closing_leaves_no_trusted_view_behind() {
        let mut publisher = Publisher::new("/pureflash/c/stores");
        let snapshots = publisher.snapshots.subscribe();
        publisher.set_session(SessionStatus::Connected);
        publisher.replace_view(ClusterView::default());
        assert!(snapshots.borrow().health.is_trusted());
        drop(publisher); // as when the task panics
        let last = snapshots.borrow().clone();
        assert_eq!(last.health.session, SessionStatus::Closed);
        assert!(!last.health.is_trusted());
    }

    /// Applies `rel` of store `dir` to the publisher's view and publishes it as a batch would.
    fn apply_node(publisher: &mut Publisher, dir: &str, rel: &str, update: NodeUpdate<'_>) {
        if let Touched::Store(id) = publisher.view.apply(dir, rel, update) {
            publisher.publish_stores(vec![id], false, false);
        }
    }

    #[test]
    fn a_held_backlog_is_published_once_all_applied_and_a_lost_trust_at_once() {
        let mut publisher = Publisher::new("/pureflash/c/stores");
        publisher.set_session(SessionStatus::Connected);
        let mut reloaded = ClusterView {
            stores_dir: true,
            ..ClusterView::default()
        };
        reloaded.apply("1", "alive", NodeUpdate::Present(b""));
        publisher.replace_view(reloaded);
        let mut events = publisher.events.subscribe();
        let snapshots = publisher.snapshots.subscribe();
        let version = snapshots.borrow().version;
        let alive = |snapshots: &watch::Receiver<Arc<Snapshot>>| {
            snapshots
                .borrow()
                .view
                .stores
                .values()
                .filter(|s| s.alive)
                .count()
        };

        // Queued before the reload read it: store 1's alive deleted and created again, the
        // two events in different batches. The deletion alone is never published.
        publisher.hold();
        apply_node(&mut publisher, "1", "alive", NodeUpdate::Deleted);
        assert_eq!(snapshots.borrow().version, version, "nothing published yet");
        apply_node(&mut publisher, "1", "alive", NodeUpdate::Present(b""));
        apply_node(&mut publisher, "2", "alive", NodeUpdate::Present(b""));
        assert_eq!(snapshots.borrow().version, version);
        publisher.release();
        assert_eq!(snapshots.borrow().version, version + 1, "one publish");
        assert_eq!(alive(&snapshots), 2);
        let mut told = Vec::new();
        while let Ok(ViewEvent::StoreChanged { id, .. }) = events.try_recv() {
            told.push(id.get());
        }
        assert_eq!(told, [1, 2]);

        // Trust lost in the middle of a backlog: published at once, with what was held.
        publisher.hold();
        apply_node(&mut publisher, "3", "alive", NodeUpdate::Present(b""));
        publisher.set_session(SessionStatus::Disconnected);
        assert_eq!(snapshots.borrow().version, version + 2);
        assert!(!snapshots.borrow().health.is_trusted());
        assert_eq!(alive(&snapshots), 3);
        // Held on after that, until released.
        apply_node(&mut publisher, "4", "alive", NodeUpdate::Present(b""));
        assert_eq!(snapshots.borrow().version, version + 2);
        publisher.release();
        assert_eq!(alive(&snapshots), 4);
        publisher.release();
        assert_eq!(
            snapshots.borrow().version,
            version + 3,
            "nothing more to publish"
        );
    }

    #[test]
    fn a_terminal_session_event_ends_the_batch() {
        let mut publisher = Publisher::new("/pureflash/c/stores");
        publisher.set_session(SessionStatus::Connected);
        let outcome = apply_session_changes(
            &mut publisher,
            &[SessionState::Disconnected, SessionState::Expired],
            BatchOutcome::Applied {
                reread_failed: false,
            },
        );
        assert!(matches!(
            outcome,
            BatchOutcome::Terminated(SessionState::Expired)
        ));
    }
}
