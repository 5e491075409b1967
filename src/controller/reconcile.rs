//! One reconcile of one `PureFlashStore`: observe (the resource, its Pod, its node, the
//! ZooKeeper snapshot, the rest of the cluster) → decide (pfs.conf and Pod, recovery verdict,
//! status — all pure) → act (ConfigMap, Pod, the restart, the status) → report (Events,
//! metrics). Never branches on why it was called.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tokio::sync::{Mutex, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::backoff::Backoff;
use crate::clock::ClusterClock;
use crate::controller::announce;
use crate::controller::budget;
use crate::controller::cache_loaded;
use crate::controller::claims::{self, claim_order};
use crate::controller::events::{EventType, Record, Recorder};
use crate::controller::pods::{self, Environment, LeaseSighting};
use crate::controller::status::{self, DbState, Facts, Restart};
use crate::crd::{PureFlashStore, PureFlashStoreStatus, RESTART_ANNOTATION};
use crate::dbsync::DbSyncStatus;
use crate::leader::TermDeadline;
use crate::metrics::{Metrics, ReasonLabels, ResultLabels, StoreLabels};
use crate::recovery::{
    self, ClusterFacts, History, KnownPod, NodeHealth, Observation, PodFacts, Policy, Predecessor,
    RestartReason, Verdict,
};
use crate::rollout::{self, AliveNode, HoldReason, RollObservation, RollPolicy, RollVerdict};
use crate::zk::{LivenessProbe, Snapshot, StoreId};

/// The field manager of every write the operator makes.
pub const MANAGER: &str = "pureflash-operator";

/// Operator-wide settings of the controller.
#[derive(Clone, Debug)]
pub struct Settings {
    /// PureFlash cluster name (pfs.conf `[cluster] name`).
    pub cluster: String,
    /// ZooKeeper as pfs Pods reach it (pfs.conf `[zookeeper] ip`).
    pub pfs_zookeeper: String,
    /// How long pfs gets to register after its container starts.
    pub start_grace: Duration,
    /// Restarts freeze when more than this share of stores is offline at once…
    pub freeze_share: f64,
    /// …and at least this many.
    pub freeze_min_offline: usize,
    /// At most this many restarts in flight cluster-wide.
    pub max_in_flight: usize,
    /// A serving store's Pod is replaced for a changed spec only while fewer than this many
    /// other stores are unavailable.
    pub max_unavailable: usize,
    /// How long a restart counts as in flight.
    pub in_flight_window: Duration,
    /// How long a store must stay back after a restart before its backoff starts over.
    pub stable_period: Duration,
    /// Safety-net requeue of every store.
    pub requeue: Duration,
    /// Reconciles running at once (0: unbounded).
    pub concurrency: u16,
    /// Keep a PodDisruptionBudget over each namespace's pfs Pods (see [`super::budget`]).
    pub disruption_budget: bool,
    /// Nodes whose stores evictions may take down at once.
    pub max_unavailable_nodes: usize,
}

/// What every reconcile shares.
pub struct Context {
    /// API access (this replica leads while reconciles run).
    pub client: Client,
    /// The operator's disruption budgets as last watched (`None` without
    /// `--disruption-budget`): a rollout the cached budget plainly refuses waits without
    /// asking the API.
    pub budgets: Option<Store<k8s_openapi::api::policy::v1::PodDisruptionBudget>>,
    /// The same API without kube's retries of a 429, which for an eviction is a disruption
    /// budget's refusal: a rollout holds on it, rather than waiting minutes under its lock.
    pub eviction_client: Client,
    pub settings: Settings,
    /// The ZooKeeper mirror's latest snapshot.
    pub snapshots: watch::Receiver<Arc<Snapshot>>,
    /// Asks ZooKeeper itself whether a store is alive: the last look before a kill.
    pub liveness: LivenessProbe,
    /// Every PureFlashStore, for the cluster-wide rails.
    pub stores: Store<PureFlashStore>,
    /// The operator's Pods and ConfigMaps as its watches last saw them. A reconcile reads these
    /// instead of the API; it asks the API itself only where a stale answer could do harm (a
    /// Pod that seems missing, the Pod of a store that may be restarted).
    pub pods: Store<Pod>,
    pub config_maps: Store<ConfigMap>,
    /// Serializes Pod creates by node and by store id (see [`CreateLocks`]).
    pub creates: Arc<CreateLocks>,
    /// Node InternalIPs, read from the API at most once per [`NODE_ADDRESS_TTL`].
    pub node_addresses: NodeAddresses,
    /// Nodes known out of contact, for the stores the cluster freeze holds.
    pub node_readiness: NodeReadiness,
    /// The statuses this term wrote that the PureFlashStore cache may not show yet.
    pub written: WrittenStatuses,
    /// Events are recorded through one recorder so repeats become series.
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// The metadata DB sync's progress, when `--db` is given.
    pub db: Option<watch::Receiver<DbSyncStatus>>,
    /// Reads of node Leases taken during stores' offline episodes.
    pub lease_sightings: LeaseSightings,
    /// When this term saw pfs containers (re)start (see [`ContainerStarts`]).
    pub container_starts: ContainerStarts,
    /// Grows with every event of the Pod watch, once the Pod cache has taken it in.
    pub pods_generation: Arc<AtomicU64>,
    /// The Pod cache holds its first full list.
    pub pods_loaded: Arc<AtomicBool>,
    /// The last count of stores offline while their pfs runs, and what it was counted on.
    pub offline_count: OfflineCount,
    /// Restarts made during this leadership term. The lock serializes recovery decisions so
    /// the in-flight cap holds even when reconciles run concurrently.
    pub restarts: Mutex<TermRestarts>,
    /// Pods replaced for a changed spec during this term, and when; kept while the replacement
    /// settles (the Pod cache may not show the deletion yet). The lock serializes rollout
    /// decisions so `max_unavailable` holds even when reconciles run concurrently.
    pub rolls: Mutex<Replaced>,
    /// Stores waiting for others, woken as those become available.
    pub waiting: WaitingStores,
    /// Consecutive failed reconciles per store, spacing out their retries: an API server that
    /// fails or throttles is not answered with more load.
    pub failures: std::sync::Mutex<HashMap<ObjectRef<PureFlashStore>, Backoff>>,
    /// When each store's Pod that stopped for good may next be replaced.
    pub stopped_pods: Arc<StoppedPodReplacements>,
    /// Cancelled when this replica may no longer write ([`super::Term::writes_end`]): at once
    /// when it loses the Lease (another replica may lead already), at the end of the stop
    /// grace on a shutdown.
    pub term: CancellationToken,
    /// Until when the Lease holds for sure, by the election's own count.
    pub term_deadline: TermDeadline,
    /// Writes [`Context::leading`] cut off under way ([`super::Term::dropped_writes`]).
    pub dropped_writes: Arc<std::sync::atomic::AtomicUsize>,
    /// Cancelled when the term starts stopping: no new restart is begun from then on.
    pub draining: CancellationToken,
    /// "Now" for everything written to or compared with status: the API server's time, shared
    /// by every replica (see [`crate::clock`]).
    pub clock: ClusterClock,
}

impl Context {
    /// Called before every write: fails once the term has ended.
    fn still_leading(&self) -> Result<(), Error> {
        if self.term.is_cancelled() || !self.term_deadline.holds() {
            Err(Error::TermEnded)
        } else {
            Ok(())
        }
    }

    /// Runs one write unless, or until, the term ends: a write still under way then (the
    /// client retries throttled requests for a long while) is dropped, so it cannot land after
    /// the next leader's. The term's end is both the news of it (which needs the election's
    /// and the run's tasks to have run) and its deadline passing on this replica's own clock.
    /// The outer error is [`Error::TermEnded`]; the inner one the write's.
    pub(super) async fn leading<T, E>(
        &self,
        write: impl Future<Output = Result<T, E>>,
    ) -> Result<Result<T, E>, Error> {
        self.still_leading()?;
        let ended = async {
            tokio::select! {
                _ = self.term.cancelled() => {}
                _ = self.term_deadline.lapsed() => {}
            }
        };
        unless_ended(write, ended, &self.dropped_writes)
            .await
            .ok_or(Error::TermEnded)
    }
}

/// Runs `write` unless `ended` comes first (looked at first each time). A write cut off so is
/// counted in `dropped`: its request may be on the wire, or queued at the API server, and the
/// Lease is kept a moment longer before it is released (see `run_command`).
async fn unless_ended<T>(
    write: impl Future<Output = T>,
    ended: impl Future<Output = ()>,
    dropped: &std::sync::atomic::AtomicUsize,
) -> Option<T> {
    let ended_first = tokio::select! {
        biased;
        () = ended => true,
        result = write => return Some(result),
    };
    if ended_first {
        dropped.fetch_add(1, Ordering::SeqCst);
    }
    None
}

/// Stores that wait for other stores to become available, and the stores that keep them
/// waiting: rollouts held for other stores' sake, and recoveries held by the cluster-wide rails
/// (restarts in flight, the freeze), which lift as other stores come back.
///
/// Nothing about a waiting store changes when another store becomes available again, so
/// without help it would have to poll. Instead, the reconcile of a store last seen unavailable
/// that finds it available wakes the longest-waiting store: that one acts or, still held, goes
/// to the back of the line. A slow poll ([`HELD_RECHECK`]) stays as the safety net for a lost
/// wake-up (and for rails that lift with time, like the in-flight window).
pub struct WaitingStores {
    wake: mpsc::UnboundedSender<ObjectRef<PureFlashStore>>,
    state: std::sync::Mutex<WaitingState>,
}

#[derive(Default)]
struct WaitingState {
    /// Waiting stores, longest-waiting first.
    held: VecDeque<ObjectRef<PureFlashStore>>,
    /// Stores whose last reconcile found them unavailable.
    unavailable: HashSet<ObjectRef<PureFlashStore>>,
    /// The waiting stores whose rollout a disruption budget refused.
    budget_held: HashSet<ObjectRef<PureFlashStore>>,
    /// Namespaces whose budget allowed more while none of their stores waited for it: the
    /// next store there to be held by the budget is woken at once (it may have judged the
    /// budget just before it allowed more, and registered as waiting just after).
    budget_credit: HashSet<String>,
}

impl WaitingStores {
    /// `wake` reconciles the store sent to it.
    pub fn new(wake: mpsc::UnboundedSender<ObjectRef<PureFlashStore>>) -> WaitingStores {
        WaitingStores {
            wake,
            state: std::sync::Mutex::default(),
        }
    }

    /// Records whether `store` waits for others now, and whether for a disruption budget.
    fn set_waiting(&self, store: &ObjectRef<PureFlashStore>, held: bool, by_budget: bool) {
        let mut state = self.state.lock().expect("waiting stores");
        let position = state.held.iter().position(|s| s == store);
        if held
            && by_budget
            && let Some(namespace) = &store.namespace
            && state.budget_credit.remove(namespace)
        {
            // Registered and woken at once, as `budget_allows_more` would have.
            if let Some(at) = position {
                state.held.remove(at);
            }
            state.budget_held.remove(store);
            let _ = self.wake.send(store.clone());
            return;
        }
        if held && by_budget {
            state.budget_held.insert(store.clone());
        } else {
            state.budget_held.remove(store);
        }
        match (held, position) {
            (true, None) => state.held.push_back(store.clone()),
            (false, Some(at)) => {
                state.held.remove(at);
            }
            _ => {}
        }
    }

    /// Records whether `store` is available; becoming so wakes the longest-waiting store.
    fn observe(&self, store: &ObjectRef<PureFlashStore>, available: bool) {
        let mut state = self.state.lock().expect("waiting stores");
        if !available {
            state.unavailable.insert(store.clone());
            return;
        }
        if !state.unavailable.remove(store) {
            return;
        }
        if let Some(at) = state.held.iter().position(|s| s != store)
            && let Some(next) = state.held.remove(at)
        {
            state.budget_held.remove(&next);
            let _ = self.wake.send(next);
        }
    }

    /// The disruption budget of `namespace` allows `more` disruptions than it did: wakes as
    /// many of the longest-waiting stores there whose rollout a budget refused (no other store
    /// needs to come back for that: a budget's status trails the Pods it counts); with none
    /// waiting, the next one to be held there.
    pub fn budget_allows_more(&self, namespace: &str, more: usize) {
        let mut state = self.state.lock().expect("waiting stores");
        let WaitingState {
            held,
            budget_held,
            budget_credit,
            ..
        } = &mut *state;
        let mut woken = 0;
        while woken < more
            && let Some(at) = held
                .iter()
                .position(|s| s.namespace.as_deref() == Some(namespace) && budget_held.contains(s))
            && let Some(next) = held.remove(at)
        {
            budget_held.remove(&next);
            let _ = self.wake.send(next);
            woken += 1;
        }
        if woken == 0 {
            budget_credit.insert(namespace.to_owned());
        }
    }

    /// Forgets stores for which `keep` is false (deleted ones).
    pub fn retain(&self, mut keep: impl FnMut(&ObjectRef<PureFlashStore>) -> bool) {
        let mut state = self.state.lock().expect("waiting stores");
        state.held.retain(|s| keep(s));
        state.unavailable.retain(|s| keep(s));
        state.budget_held.retain(|s| keep(s));
    }
}

/// Statuses this term wrote that the PureFlashStore cache may not show yet.
///
/// A reconcile starts from the cached PureFlashStore, and the watch may not have delivered the
/// status the previous reconcile wrote — or may deliver the operator's own earlier writes one by
/// one. Until the cache shows the version the last write produced, the last written status is
/// the truth: while the cache shows a version that write superseded, and for
/// [`UNSEEN_VERSION_TRUST`] while it shows a version this term did not write (someone's
/// metadata or spec change, made before or after the write: within a term only the leader
/// writes status, so the written one stands either way). Without this, a quick second
/// reconcile would announce the same phase change twice, move an offline timer it already
/// recorded, or honour a manual restart token a second time. resourceVersions are only
/// compared for equality, as the API conventions allow.
///
/// Every status write is conditioned on the version its status was computed from
/// ([`Baseline::version`]): a write computed from a view someone has since written over — a
/// former leader's write queued at the API server, or this leader's own from a lagging cache —
/// is refused with 409 instead of undoing the newer one.
#[derive(Default)]
pub struct WrittenStatuses {
    by_store: std::sync::Mutex<HashMap<ObjectRef<PureFlashStore>, Written>>,
}

struct Written {
    /// The store object written to: one recreated under the same name is another store.
    uid: Option<String>,
    /// Versions older than `status`: the ones written over, and earlier writes' results.
    superseded: Vec<String>,
    status: PureFlashStoreStatus,
    /// The version the write of `status` produced, if the API said.
    result: Option<String>,
    written_at: std::time::Instant,
}

/// Bounds the memory of one store's superseded versions (a cache this far behind is rare).
const SUPERSEDED_MAX: usize = 16;

/// How long a written status outranks a cached version this term did not write. A watch lags
/// by far less; past this the cache is the truth again, whatever happened.
pub const UNSEEN_VERSION_TRUST: Duration = Duration::from_secs(60);

/// A store's status as a reconcile starts from it, and the version a write of the next status
/// must find on the server.
#[derive(Clone, Debug, PartialEq)]
pub struct Baseline {
    pub status: PureFlashStoreStatus,
    /// `None` when no version is known (the API did not say): the write is unconditional.
    pub version: Option<String>,
}

impl WrittenStatuses {
    /// The store's current status: the cached one, unless this term has written over it.
    pub fn current(&self, store: &PureFlashStore) -> Baseline {
        self.current_at(store, std::time::Instant::now())
    }

    fn current_at(&self, store: &PureFlashStore, now: std::time::Instant) -> Baseline {
        let key = ObjectRef::from_obj(store);
        let mut by_store = self.by_store.lock().expect("written statuses");
        let cached = store.resource_version();
        let as_cached = || Baseline {
            status: store.status.clone().unwrap_or_default(),
            version: cached.clone(),
        };
        let Some(written) = by_store.get(&key) else {
            return as_cached();
        };
        if written.uid != store.metadata.uid {
            by_store.remove(&key);
            return as_cached();
        }
        let shows_the_write = cached.is_some() && cached == written.result;
        if !shows_the_write {
            // The cache lags behind the write: the write's result is the latest version known.
            if cached
                .as_ref()
                .is_some_and(|v| written.superseded.contains(v))
            {
                return Baseline {
                    status: written.status.clone(),
                    version: written.result.clone(),
                };
            }
            // A version this term did not write: someone's change to the spec or metadata
            // (status stands as written), or a status write that raced this term's. Writing
            // on it either succeeds on the latest version or is refused and retried.
            if now.saturating_duration_since(written.written_at) < UNSEEN_VERSION_TRUST {
                return Baseline {
                    status: written.status.clone(),
                    version: cached,
                };
            }
        }
        by_store.remove(&key);
        as_cached()
    }

    /// `status` was written over `store` as the cache showed it; the API answered with
    /// version `result` (`None` if it did not say).
    pub fn wrote(
        &self,
        store: &PureFlashStore,
        status: &PureFlashStoreStatus,
        result: Option<String>,
    ) {
        let Some(based_on) = store.resource_version() else {
            return;
        };
        let mut by_store = self.by_store.lock().expect("written statuses");
        let fresh = || Written {
            uid: store.metadata.uid.clone(),
            superseded: Vec::new(),
            status: PureFlashStoreStatus::default(),
            result: None,
            written_at: std::time::Instant::now(),
        };
        let written = by_store
            .entry(ObjectRef::from_obj(store))
            .or_insert_with(fresh);
        if written.uid != store.metadata.uid {
            // A store recreated under the same name: nothing of the old one's memory holds.
            *written = fresh();
        }
        // The earlier write's result is superseded by this one.
        for version in [Some(based_on), written.result.take()]
            .into_iter()
            .flatten()
        {
            if !written.superseded.contains(&version) {
                written.superseded.push(version);
            }
        }
        let excess = written.superseded.len().saturating_sub(SUPERSEDED_MAX);
        written.superseded.drain(..excess);
        written.status = status.clone();
        written.result = result;
        written.written_at = std::time::Instant::now();
    }

    /// Forgets stores for which `keep` is false (deleted ones).
    pub fn retain(&self, mut keep: impl FnMut(&ObjectRef<PureFlashStore>) -> bool) {
        self.by_store
            .lock()
            .expect("written statuses")
            .retain(|key, _| keep(key));
    }
}

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("cannot render pfs.conf: {0}")]
    Render(#[from] pods::RenderError),
    #[error("{0}")]
    Invalid(String),
    #[error("this replica no longer leads: the write is left to the new leader")]
    TermEnded,
    #[error("the Kubernetes API did not answer within {0:?} while other stores' restarts waited")]
    SlowApi(Duration),
    /// The store changed since the status was computed (409 on the version precondition).
    #[error(
        "the PureFlashStore changed since its status was computed; recomputing from the latest version"
    )]
    StaleStatus,
}

impl Error {
    /// A bounded label for metrics and Events.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Kube(_) => "KubernetesApi",
            Error::Render(_) => "ConfigInvalid",
            Error::Invalid(_) => "SpecInvalid",
            Error::TermEnded => "TermEnded",
            Error::SlowApi(_) => "KubernetesApi",
            Error::StaleStatus => "Conflict",
        }
    }
}

/// The grace period a restart deletes a pfs Pod with: the kubelet sends SIGTERM, then SIGKILL
/// once it has passed (the kubelet's floor is 1 s), and removes the Pod only when
/// the container is dead. A force delete (grace 0) would remove the Pod at once while its
/// kubelet still gave the container the Pod's full termination grace, a hung pfs holding its
/// disks and id meanwhile, and its replacement would start next to it. The replacement is made
/// once the Pod is gone, as for any store without one.
const KILL_GRACE_SECONDS: u32 = 1;

/// How long an API call made while holding the cluster-wide restart lock may take: every other
/// offline store's reconcile waits on that lock, and the client retries a throttled call for
/// minutes. A call cut short fails the reconcile, which is retried with backoff.
const UNDER_RESTART_LOCK: Duration = Duration::from_secs(10);

/// How long a restart waits for the dry run of a Pod like its running one (see the restart
/// path): it holds the cluster-wide restart lock meanwhile.
const SAME_POD_DRY_RUN: Duration = Duration::from_secs(3);

async fn under_restart_lock<T, E>(
    call: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, Error>
where
    Error: From<E>,
{
    tokio::time::timeout(UNDER_RESTART_LOCK, call)
        .await
        .map_err(|_| Error::SlowApi(UNDER_RESTART_LOCK))?
        .map_err(Error::from)
}

fn policy(store: &PureFlashStore, settings: &Settings) -> Policy {
    let recovery = &store.spec.recovery;
    let seconds = |s: u32| SignedDuration::from_secs(i64::from(s));
    Policy {
        enabled: recovery.enabled,
        offline_grace: seconds(recovery.offline_grace_period_seconds),
        backoff_initial: seconds(recovery.backoff_initial_seconds),
        backoff_max: seconds(recovery.backoff_max_seconds),
        max_restarts_per_hour: recovery.max_restarts_per_hour,
        start_grace: SignedDuration::try_from(settings.start_grace).unwrap_or(SignedDuration::MAX),
        freeze_share: settings.freeze_share,
        freeze_min_offline: settings.freeze_min_offline,
        max_in_flight: settings.max_in_flight,
        in_flight_window: SignedDuration::try_from(settings.in_flight_window)
            .unwrap_or(SignedDuration::MAX),
        stable_period: SignedDuration::try_from(settings.stable_period)
            .unwrap_or(SignedDuration::MAX),
    }
}

fn roll_policy(settings: &Settings) -> RollPolicy {
    RollPolicy {
        max_unavailable: settings.max_unavailable,
        settle: SignedDuration::try_from(settings.start_grace).unwrap_or(SignedDuration::MAX),
    }
}

/// Pods replaced this term for a changed spec or a restart, and not yet settled.
type Replaced = HashMap<ObjectRef<PureFlashStore>, Replacement>;

/// A Pod this term deleted to replace it, or tried to.
#[derive(Clone, Debug)]
pub struct Replacement {
    pub at: Timestamp,
    /// The uid of the Pod deleted.
    pub uid: Option<String>,
    /// The delete was accepted. Otherwise it did not answer in time, and may land or not: the
    /// store counts as unavailable for the other stores' rollouts all the same, but its own
    /// rollout is not taken for under way (its new pfs.conf would reach a Pod that may run).
    pub confirmed: bool,
}

/// How many stores other than `store` are not [`rollout::available`], and the first few names
/// in order. A store whose Pod this term replaced or restarted counts as unavailable while the
/// (possibly lagging) Pod cache still shows the replaced Pod.
fn unavailable_others(
    ctx: &Context,
    store: &PureFlashStore,
    (all, aside): (&[Arc<PureFlashStore>], &HashSet<&str>),
    snapshot: &Snapshot,
    replaced: &Replaced,
    now: Timestamp,
) -> (usize, Vec<String>) {
    const NAMED: usize = 3;
    let policy = roll_policy(&ctx.settings);
    let me = ObjectRef::from_obj(store);
    let mut count = 0;
    let mut names: Vec<String> = Vec::new();
    for other in all.iter().filter(|s| !stands_aside(aside, s)) {
        let key = ObjectRef::from_obj(other.as_ref());
        if key == me {
            continue;
        }
        let namespace = other.namespace().unwrap_or_default();
        let pod = ctx
            .pods
            .get(&ObjectRef::new(&pods::pod_name(other)).within(&namespace))
            .map(|pod| ctx.container_starts.apply(pod_facts(&pod).0));
        // The cache may still show a Pod this term replaced; once it shows the successor, the
        // successor is judged on its own.
        let replaced_in_cache = replaced.get(&key).is_some_and(|replacement| {
            pod.as_ref()
                .is_some_and(|pod| Some(&pod.uid) == replacement.uid.as_ref())
        });
        // A store that has never been online, and that ZooKeeper has no directory for, holds
        // no data (a new store whose pfs is still starting, one no Pod can be made for):
        // rolling another store takes nothing more away while it is down. One that was online
        // once counts even with its directory gone (deleted by a tool): its disks hold data.
        let registered = other
            .status
            .as_ref()
            .is_some_and(|s| s.last_online_time.is_some())
            || view_of(snapshot, other.spec.store_id).is_some();
        let unavailable = replaced_in_cache
            || (registered
                && !rollout::available(
                    alive_node(snapshot, other.spec.store_id),
                    pod.as_ref(),
                    now,
                    &policy,
                ));
        if unavailable {
            count += 1;
            let name = other.name_any();
            let at = names.partition_point(|n| *n < name);
            if at < NAMED {
                names.insert(at, name);
                names.truncate(NAMED);
            }
        }
    }
    (count, names)
}

/// Another running store (not standing aside) that holds an address `store` would register
/// under (see [`claims::address_held_elsewhere`]).
fn address_held(
    ctx: &Context,
    store: &PureFlashStore,
    all: &[Arc<PureFlashStore>],
    aside: &HashSet<&str>,
    node_ip: Option<&str>,
) -> Option<claims::AddressHeld> {
    let uses = |s: &PureFlashStore, role: claims::AddressRole, address: &str| {
        let namespace = s.namespace().unwrap_or_default();
        ctx.config_maps
            .get(&ObjectRef::new(&pods::config_map_name(s)).within(&namespace))
            // Parsed only where the text holds the address at all: a node may carry many
            // stores, and this is asked of each of them.
            .and_then(|map| {
                conf_text(&map).map(|conf| {
                    conf.contains(address) && claims::conf_registers(conf, role, address)
                })
            })
            .unwrap_or(false)
    };
    // A store whose pfs runs under its addresses already claims nothing new: every other
    // store has been kept off them since. Looked at first, as it is the case of every settled
    // store, and the full look asks every store of its node.
    let namespace = store.namespace().unwrap_or_default();
    let runs = ctx
        .pods
        .get(&ObjectRef::new(&pods::pod_name(store)).within(&namespace))
        .is_some_and(|pod| owned_by(&pod, store) && pod.metadata.deletion_timestamp.is_none());
    if runs
        && claims::spec_addresses(store, node_ip)
            .iter()
            .all(|(role, address)| uses(store, *role, address))
    {
        return None;
    }
    claims::address_held_elsewhere(
        store,
        node_ip,
        uses,
        all.iter()
            .filter(|s| !stands_aside(aside, s))
            .map(AsRef::as_ref),
    )
}

/// Whether a store has had its pfs online under its id, and has not stood aside since: the
/// data registered under the id is on its disks. Told by its status, which every replica
/// reads alike and which outlives its Pods (a restart leaves it without one for a moment).
fn has_served_its_id(store: &PureFlashStore) -> bool {
    store.status.as_ref().is_some_and(|status| {
        status.last_online_time.is_some()
            && status
                .condition("Ready", "False")
                .is_none_or(|ready| ready.reason != status::DUPLICATE_STORE_ID)
    })
}

/// The order in which stores claim a store id: one that has served it first (a store found
/// later with an older creation time, restored from a backup or newly in the operator's
/// sight, must not stop the one whose disks hold the id's data), then by creation.
fn id_claim_order(store: &PureFlashStore) -> (bool, claims::ClaimOrder<'_>) {
    (!has_served_its_id(store), claim_order(store))
}

/// The PureFlashStore that owns `store_id`: of all claiming it, the first in
/// [`id_claim_order`] (a total order every replica agrees on).
fn first_claimant<'a>(
    stores: impl Iterator<Item = &'a PureFlashStore>,
    store_id: i32,
) -> Option<&'a PureFlashStore> {
    stores
        .filter(|s| s.spec.store_id == store_id)
        .min_by_key(|s| id_claim_order(s))
}

/// Another store that holds one of `store`'s trays (see [`claims`]). Only stores on the same
/// node are looked at, with their Pods and ConfigMaps as the caches have them.
fn device_held(
    ctx: &Context,
    store: &PureFlashStore,
    all: &[Arc<PureFlashStore>],
    aside: &HashSet<&str>,
) -> Option<claims::DeviceHeld> {
    // A store whose running Pod already serves exactly its trays claims nothing new: every
    // other store has been kept off those disks by that Pod since it was made. Looked at
    // first, as it is the case of every settled store, and the full look is one pass over
    // the caches.
    let own_pod = ctx.pods.get(
        &ObjectRef::new(&pods::pod_name(store)).within(&store.namespace().unwrap_or_default()),
    );
    if own_pod.as_deref().is_some_and(|pod| {
        pod.metadata.deletion_timestamp.is_none()
            // This store's own, made for this node (not one left under the name by a store
            // deleted and made anew).
            && owned_by(pod, store)
            && pod.spec.as_ref().and_then(|spec| spec.node_name.as_deref())
                == Some(store.spec.node_name.as_str())
            && pod
                .annotations()
                .get(claims::DEVICES_ANNOTATION)
                .is_some_and(|devices| claims::serves_exactly(devices, store))
    }) {
        return None;
    }
    let owned = |s: &PureFlashStore| {
        let namespace = s.namespace().unwrap_or_default();
        (
            ctx.pods
                .get(&ObjectRef::new(&pods::pod_name(s)).within(&namespace)),
            ctx.config_maps
                .get(&ObjectRef::new(&pods::config_map_name(s)).within(&namespace)),
        )
    };
    let neighbours: Vec<_> = all
        .iter()
        .filter(|s| s.spec.node_name == store.spec.node_name && !stands_aside(aside, s))
        .map(|s| (s, owned(s)))
        .collect();
    // Pods of ours on the node that no running store owns: left by a store deleted or standing
    // aside, their pfs may still run (garbage collection, and its grace, take their time).
    let namespace = store.namespace().unwrap_or_default();
    let running_pods: HashSet<(String, String)> = neighbours
        .iter()
        .map(|(s, _)| (s.namespace().unwrap_or_default(), pods::pod_name(s)))
        .chain([(namespace, pods::pod_name(store))])
        .collect();
    let cached_pods = ctx.pods.state();
    let left: Vec<(String, &str)> = cached_pods
        .iter()
        .filter(|pod| {
            pod.spec.as_ref().and_then(|spec| spec.node_name.as_deref())
                == Some(store.spec.node_name.as_str())
                && !running_pods.contains(&(pod.namespace().unwrap_or_default(), pod.name_any()))
                // One stopped for good runs nothing, ever again: nobody replaces it either.
                && pods::stopped_for_good(pod).is_none()
        })
        .filter_map(|pod| {
            let devices = pod.annotations().get(claims::DEVICES_ANNOTATION)?;
            Some((
                format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any()),
                devices.as_str(),
            ))
        })
        .collect();
    let left_pods = left.iter().map(|(pod, devices)| (pod.as_str(), *devices));
    if let Some(held) = claims::device_of_left_pod(store, left_pods) {
        return Some(held);
    }
    // No other store on its node: nothing to share.
    if !neighbours
        .iter()
        .any(|(s, _)| s.metadata.uid != store.metadata.uid)
    {
        return None;
    }
    let own = (own_pod, owned(store).1);
    claims::device_held_elsewhere(
        store,
        in_use(&own),
        neighbours
            .iter()
            .map(|(s, objects)| (s.as_ref(), in_use(objects))),
    )
}

fn conf_text(map: &ConfigMap) -> Option<&str> {
    map.data.as_ref()?.get(pods::CONF_FILE).map(String::as_str)
}

/// Whether the store is the Pod's controlling owner.
fn owned_by(pod: &Pod, store: &PureFlashStore) -> bool {
    store.metadata.uid.is_some()
        && pod.owner_references().iter().any(|owner| {
            owner.controller == Some(true) && Some(&owner.uid) == store.metadata.uid.as_ref()
        })
}

/// What the cached Pod and ConfigMap of a store say it may be serving.
fn in_use((pod, map): &(Option<Arc<Pod>>, Option<Arc<ConfigMap>>)) -> claims::InUse<'_> {
    claims::InUse {
        conf: map.as_deref().and_then(conf_text),
        pod_devices: pod.as_deref().and_then(|pod| {
            pod.annotations()
                .get(claims::DEVICES_ANNOTATION)
                .map(String::as_str)
        }),
    }
}

/// The uids of the stores that stand aside because another store claims their id first. They
/// run nothing, so the cluster-wide rails (offline share, unavailable stores) leave them out.
/// Usually empty; one pass, no allocation per store.
fn standing_aside(all: &[Arc<PureFlashStore>]) -> HashSet<&str> {
    let mut first: HashMap<i32, &PureFlashStore> = HashMap::with_capacity(all.len());
    let mut aside = HashSet::new();
    for store in all {
        let store = store.as_ref();
        let loser = match first.entry(store.spec.store_id) {
            std::collections::hash_map::Entry::Vacant(entry) => {
                entry.insert(store);
                continue;
            }
            std::collections::hash_map::Entry::Occupied(mut entry) => {
                if id_claim_order(store) < id_claim_order(entry.get()) {
                    entry.insert(store)
                } else {
                    store
                }
            }
        };
        if let Some(uid) = loser.metadata.uid.as_deref() {
            aside.insert(uid);
        }
    }
    aside
}

/// Whether recovery has set `store` aside from the cluster freeze, by the last decision its
/// status records (see [`recovery::freeze_standing`]).
fn set_aside_from_freeze(store: &PureFlashStore) -> bool {
    store
        .status
        .as_ref()
        .and_then(|status| status.last_decision.as_deref())
        .is_some_and(recovery::sets_aside_from_freeze)
}

/// How `store` counts for the cluster freeze ([`recovery::freeze_standing`]), its Pod as
/// cached.
fn freeze_standing(ctx: &Context, store: &PureFlashStore, snapshot: &Snapshot) -> Option<bool> {
    let set_aside = set_aside_from_freeze(store);
    // An alive store's Pod is not looked up: in a mass outage this runs for every store. Nor
    // is one ZooKeeper refuses to read: not known offline, and a refusal (an ACL) says nothing
    // of a network fault, which is what the freeze guards against.
    if alive(snapshot, store.spec.store_id)
        || view_of(snapshot, store.spec.store_id).is_some_and(|s| !s.is_known())
    {
        return recovery::freeze_standing(true, set_aside, KnownPod::NotLoaded);
    }
    if !ctx.pods_loaded.load(Ordering::SeqCst) {
        return recovery::freeze_standing(false, set_aside, KnownPod::NotLoaded);
    }
    let namespace = store.namespace().unwrap_or_default();
    let pod = ctx
        .pods
        .get(&ObjectRef::new(&pods::pod_name(store)).within(&namespace))
        .map(|pod| ctx.container_starts.apply(pod_facts(&pod).0));
    recovery::freeze_standing(false, set_aside, KnownPod::Loaded(pod.as_ref()))
}

/// The stores the cluster freeze counts, by uid: those it takes its share of, and those of
/// them offline while their pfs runs.
#[derive(Debug, Default)]
pub struct FreezeCount {
    pub counted: HashSet<String>,
    pub offline: HashSet<String>,
}

impl FreezeCount {
    /// The cluster facts of the count, with `store` counted as `fresh` says (its Pod as just
    /// read) rather than as cached.
    fn with(&self, store: &PureFlashStore, fresh: Option<Option<bool>>) -> (usize, usize) {
        let uid = store.metadata.uid.as_ref();
        let cached_counted = uid.is_some_and(|uid| self.counted.contains(uid));
        let cached_offline = uid.is_some_and(|uid| self.offline.contains(uid));
        let (counted, offline) = match fresh {
            Some(standing) => (standing.is_some(), standing == Some(true)),
            None => (cached_counted, cached_offline),
        };
        (
            self.counted.len() - usize::from(cached_counted) + usize::from(counted),
            self.offline.len() - usize::from(cached_offline) + usize::from(offline),
        )
    }
}

/// The cluster freeze's count, kept between reconciles together with what it was taken on:
/// in a mass outage every offline store's reconcile asks, and looking afresh each time would
/// cost O(stores²) under the restart lock.
#[derive(Default)]
pub struct OfflineCount(std::sync::Mutex<Option<(CountedOn, Arc<FreezeCount>)>>);

/// What the count depends on: the view, the Pod cache, and which stores are counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct CountedOn {
    view_version: u64,
    pods_generation: u64,
    pods_loaded: bool,
    /// Order-independent digest of the counted stores' uids and whether recovery set each
    /// aside, and how many there are.
    stores_digest: u64,
    stores: usize,
}

/// The cluster freeze's count of the `running` stores ([`freeze_standing`]), and whether `me`
/// is one of the stores looked at. Counted again only when the view, the Pod cache or the
/// stores changed since the last time.
fn offline_stores<'a, I>(
    ctx: &Context,
    running: impl Fn() -> I,
    snapshot: &Snapshot,
    me: Option<&PureFlashStore>,
) -> (Arc<FreezeCount>, bool)
where
    I: Iterator<Item = &'a Arc<PureFlashStore>>,
{
    use std::hash::{Hash, Hasher};
    // Read before the stores are looked at: a Pod event landing meanwhile makes the next
    // reconcile look again.
    let pods_generation = ctx.pods_generation.load(Ordering::SeqCst);
    let pods_loaded = ctx.pods_loaded.load(Ordering::SeqCst);
    let (mut stores_digest, mut stores, mut includes_me) = (0u64, 0usize, false);
    for store in running() {
        // Fixed keys: digests taken by different reconciles compare.
        let mut hasher = std::hash::DefaultHasher::new();
        store.metadata.uid.hash(&mut hasher);
        set_aside_from_freeze(store).hash(&mut hasher);
        stores_digest = stores_digest.wrapping_add(hasher.finish());
        stores += 1;
        includes_me |= me.is_some_and(|me| {
            store.metadata.name == me.metadata.name
                && store.metadata.namespace == me.metadata.namespace
        });
    }
    let on = CountedOn {
        view_version: snapshot.version,
        pods_generation,
        pods_loaded,
        stores_digest,
        stores,
    };
    let mut last = ctx.offline_count.0.lock().expect("offline count");
    let count = match &*last {
        Some((was_on, count)) if *was_on == on => Arc::clone(count),
        _ => {
            let mut count = FreezeCount::default();
            for store in running() {
                let Some(offline) = freeze_standing(ctx, store, snapshot) else {
                    continue;
                };
                let uid = store.metadata.uid.clone().unwrap_or_default();
                if offline {
                    count.offline.insert(uid.clone());
                }
                count.counted.insert(uid);
            }
            let count = Arc::new(count);
            *last = Some((on, Arc::clone(&count)));
            count
        }
    };
    (count, includes_me)
}

fn stands_aside(aside: &HashSet<&str>, store: &PureFlashStore) -> bool {
    !aside.is_empty()
        && store
            .metadata
            .uid
            .as_deref()
            .is_some_and(|uid| aside.contains(uid))
}

/// A store whose id `holder` claimed first: says so in its status and Events, and removes a
/// Pod of its own (a second pfs under one id would wait for the holder's `alive` and take the
/// id over, with other disks, whenever the holder's session drops).
async fn stand_aside(
    ctx: &Context,
    store: &PureFlashStore,
    baseline: &Baseline,
    previous: &PureFlashStoreStatus,
    holder: &PureFlashStore,
    pods: &Api<Pod>,
) -> Result<Action, Error> {
    let holder = format!(
        "{}/{}",
        holder.namespace().unwrap_or_default(),
        holder.name_any()
    );
    // Not run, it waits for no one: a wake meant for a store that does must not come here.
    ctx.waiting
        .set_waiting(&ObjectRef::from_obj(store), false, false);
    ctx.metrics.observe_duplicate(&StoreLabels {
        namespace: store.namespace().unwrap_or_default(),
        name: store.name_any(),
        store_id: store.spec.store_id.to_string(),
    });
    let status = status::duplicate(
        previous,
        store.spec.store_id,
        &holder,
        ctx.clock.now(),
        store.metadata.generation,
    );
    if status != *previous {
        let namespace = store.namespace().unwrap_or_default();
        let stores: Api<PureFlashStore> = Api::namespaced(ctx.client.clone(), &namespace);
        let result = ctx
            .leading(apply_status(
                &stores,
                &store.name_any(),
                baseline.version.as_deref(),
                &status,
            ))
            .await??;
        ctx.written.wrote(store, &status, result);
        if status::duplicate_is_news(previous, &status) {
            warn!(store = %store.name_any(), %namespace, %holder, "duplicate storeId: store not run");
            record(
                ctx,
                store,
                EventType::Warning,
                status::DUPLICATE_STORE_ID,
                "Observe",
                status.conditions[0].message.clone(),
            )
            .await;
        }
    }
    let pod_name = pods::pod_name(store);
    if let Some(pod) = pods.get_opt(&pod_name).await?
        && pod.metadata.deletion_timestamp.is_none()
    {
        let params = delete_exactly(pod.uid(), None);
        match ctx.leading(pods.delete(&pod_name, &params)).await? {
            Ok(_) => {
                record(
                    ctx,
                    store,
                    EventType::Warning,
                    status::DUPLICATE_STORE_ID,
                    "Delete",
                    format!(
                        "pod {pod_name} deleted: storeId {} belongs to {holder}",
                        store.spec.store_id
                    ),
                )
                .await;
            }
            Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {}
            Err(error) => return Err(error.into()),
        }
    }
    // Nothing about this store changes when the holder goes: look again now and then.
    Ok(Action::requeue(HELD_RECHECK))
}

/// Deletes the Pod with this uid and no other (one recreated under its name since is left
/// alone: 409), with the Pod's own grace period unless `grace_seconds` is given.
fn delete_exactly(uid: Option<String>, grace_seconds: Option<u32>) -> DeleteParams {
    DeleteParams {
        grace_period_seconds: grace_seconds,
        preconditions: Some(Preconditions {
            uid,
            resource_version: None,
        }),
        ..DeleteParams::default()
    }
}

/// Whether the operator's budget over `pod`'s namespace, as last watched, refuses its
/// eviction for sure ([`budget::refuses`]).
fn cached_budget_refuses(ctx: &Context, pod: &Pod) -> bool {
    let Some(budgets) = &ctx.budgets else {
        return false;
    };
    let key = ObjectRef::new(budget::BUDGET_NAME).within(&pod.namespace().unwrap_or_default());
    budgets
        .get(&key)
        .is_some_and(|budget| budget::refuses(&budget, pod))
}

/// Evicts `pod` through the eviction API (with its own grace period). A 429 that
/// [`budget_refusal`] recognizes is a disruption budget's no.
async fn evict_exactly(client: &Client, pod: &Pod) -> Result<(), kube::Error> {
    let text = client.request_text(eviction_request(pod)?).await?;
    // The API server answers some refusals as a `Failure` Status in a success (several
    // budgets over one Pod: code 500): a failure all the same.
    match serde_json::from_str::<kube::core::Status>(&text) {
        Ok(status) if status.is_failure() => Err(kube::Error::Api(Box::new(status))),
        _ => Ok(()),
    }
}

/// The eviction of this very Pod (a uid precondition: one recreated under its name since is
/// not evicted). Not its resourceVersion: the API server spends the budget's disruption
/// before the delete checks preconditions, so a cached version gone stale would spend it for
/// nothing, for the two minutes the disruption controller waits for the Pod to go. Strict
/// field validation: a misnamed field fails rather than being dropped (kube's
/// `Api::evict` sends its delete options under a name the API server ignores).
fn eviction_request(pod: &Pod) -> Result<http::Request<Vec<u8>>, kube::Error> {
    let namespace = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let eviction = json!({
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": name, "namespace": namespace},
        "deleteOptions": {"preconditions": {"uid": pod.uid()}},
    });
    http::Request::post(format!(
        "/api/v1/namespaces/{namespace}/pods/{name}/eviction?fieldValidation=Strict"
    ))
    .header(http::header::CONTENT_TYPE, "application/json")
    .body(serde_json::to_vec(&eviction).map_err(kube::Error::SerdeError)?)
    .map_err(kube::Error::HttpError)
}

/// Whether an eviction's error is a disruption budget's refusal (429 with a `DisruptionBudget`
/// cause: none allowed now, or the budget's status not caught up with its spec), not the API
/// server shedding load (a 429 of its priority and fairness).
fn budget_refusal(status: &kube::core::Status) -> bool {
    status.code == 429
        && status.details.as_ref().is_some_and(|details| {
            details
                .causes
                .iter()
                .any(|c| c.reason == "DisruptionBudget")
        })
}

/// The Pod's state as recovery and status need it. Borrows what it reads: rollouts call it for
/// every store.
fn pod_facts(pod: &Pod) -> (PodFacts, bool, Option<String>) {
    let status = pod.status.as_ref();
    let state = status
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|all| all.iter().find(|c| c.name == pods::CONTAINER))
        .and_then(|c| c.state.as_ref());
    // `startedAt` is the kubelet's, stamped by its node's clock: a node running behind would
    // make a fresh pfs look older than it is and cut its start grace short. No container of the
    // Pod started before the API server created it, by the server's clock.
    let created = pod.metadata.creation_timestamp.as_ref().map(|t| t.0);
    let running_since = state
        .and_then(|s| s.running.as_ref())
        .and_then(|r| r.started_at.as_ref())
        .map(|t| created.map_or(t.0, |created| created.max(t.0)));
    let waiting = state
        .and_then(|s| s.waiting.as_ref())
        .and_then(|w| w.reason.clone());
    // Whether pfs's container is ready. Not the Pod's Ready condition, which also waits for the
    // operator's own serving gate (`pods::SERVING_GATE`), set from this store's status: the
    // status would wait for itself. A kubelet always writes both; Ready alone is read only
    // where ContainersReady is missing.
    let ready = pods::condition_true(pod, "ContainersReady")
        .or_else(|| pods::condition_true(pod, "Ready"))
        .unwrap_or(false);
    let container_restarts = status
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|all| all.iter().find(|c| c.name == pods::CONTAINER))
        .map_or(0, |c| c.restart_count);
    let facts = PodFacts {
        uid: pod.uid().unwrap_or_default(),
        phase: status
            .and_then(|s| s.phase.clone())
            .unwrap_or_else(|| "Pending".into()),
        terminating: pod.metadata.deletion_timestamp.is_some(),
        stop_due: pod.metadata.deletion_timestamp.as_ref().map(|t| t.0),
        running_since,
        container_restarts,
        predecessor: pods::parse_predecessor(
            pod.annotations()
                .get(pods::PREDECESSOR_ANNOTATION)
                .map(String::as_str),
        ),
    };
    (facts, ready, waiting)
}

/// What a rollout reads of the Pod's node.
#[derive(Clone, Copy, Debug, Default)]
struct NodeFacts {
    out_of_contact: bool,
    cordoned: bool,
}

/// When this term saw each Pod's pfs container (re)start. `startedAt` is stamped by the node's
/// clock: a node running behind makes a pfs the kubelet just restarted in place look older
/// than it is, and cuts its start grace short (a new Pod is bounded by its creationTimestamp,
/// see [`pod_facts`]; a restart in place has no such bound). A start this term witnessed (the
/// container seen not running, or with fewer restarts, before) is timed by the operator's
/// clock too, and the later of the two counts. Starts before the term are taken as stamped.
#[derive(Default)]
pub struct ContainerStarts {
    by_pod: std::sync::Mutex<HashMap<String, SeenContainer>>,
}

/// A Pod's pfs container as last seen.
#[derive(Clone, Copy, Debug)]
struct SeenContainer {
    restarts: i32,
    /// The start stamp of the last run seen running (its `running_since`).
    run: Option<Timestamp>,
    /// When that run was first seen, if its start was witnessed.
    witnessed: Option<Timestamp>,
}

impl ContainerStarts {
    /// Records what `facts` shows at `now`; returns them with the witnessed start applied. A
    /// run is told by its start stamp: a run not seen before is a start witnessed (unless it is
    /// the first thing this term sees of the Pod), and an answer older than one seen already (a
    /// cache behind a read from the API) changes nothing.
    fn observe(&self, facts: PodFacts, now: Timestamp) -> PodFacts {
        if facts.uid.is_empty() {
            return facts;
        }
        let restarts = facts.container_restarts;
        let run = facts.running_since;
        self.lock()
            .entry(facts.uid.clone())
            .and_modify(|seen| {
                if restarts < seen.restarts {
                    return;
                }
                seen.restarts = restarts;
                if run.is_some() && run != seen.run {
                    seen.run = run;
                    seen.witnessed = Some(now);
                }
            })
            .or_insert(SeenContainer {
                restarts,
                run,
                witnessed: None,
            });
        self.apply(facts)
    }

    /// `facts` with the witnessed start of its container's run applied, if there is one.
    fn apply(&self, mut facts: PodFacts) -> PodFacts {
        let seen = self.lock().get(&facts.uid).copied();
        if let Some(seen) = seen
            && let Some(witnessed) = seen.witnessed
            && seen.run.is_some()
            && seen.run == facts.running_since
            && let Some(since) = &mut facts.running_since
        {
            *since = (*since).max(witnessed);
        }
        facts
    }

    /// Forgets the Pods `keep` rejects (gone from the cache).
    pub fn retain(&self, mut keep: impl FnMut(&str) -> bool) {
        self.lock().retain(|uid, _| keep(uid));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, SeenContainer>> {
        self.by_pod.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// How often, at most, a due restart looks again at a node whose kubelet has not been seen in
/// contact since the store went offline (kubelets renew their Lease every 10 s by default).
const NODE_CONTACT_RECHECK: SignedDuration = SignedDuration::from_secs(2);

/// Whether a store with this verdict may be restarted automatically later in its offline
/// episode without anything but time passing or other stores changing: its node's Lease is
/// read ahead for it.
fn takes_a_lease_sighting(verdict: &Verdict) -> bool {
    use recovery::SkipReason as Why;
    match verdict {
        Verdict::Wait { .. } => true,
        Verdict::Skip(reason) => matches!(
            reason,
            Why::ClusterFrozen | Why::TooManyInFlight | Why::RestartBudgetExhausted
        ),
        Verdict::Healthy | Verdict::Restart(_) => false,
    }
}

/// When each store's Pod that stopped for good may next be replaced. The first replacement is
/// at once; until a replacement has run, each next one waits twice as long, up to
/// [`STOPPED_POD_RETRY_MAX`]: a node that refuses every Pod at admission (full, short of its
/// requests, shutting down) would otherwise have it replaced at the API's pace.
#[derive(Default)]
pub struct StoppedPodReplacements {
    by_store: std::sync::Mutex<HashMap<ObjectRef<PureFlashStore>, (Backoff, std::time::Instant)>>,
}

/// The first and longest wait between replacements of a store's stopped Pod.
pub const STOPPED_POD_RETRY_INITIAL: Duration = Duration::from_secs(2);
pub const STOPPED_POD_RETRY_MAX: Duration = Duration::from_secs(300);

impl StoppedPodReplacements {
    /// How long until `store`'s stopped Pod may be replaced; `None`: now.
    pub fn due_in(
        &self,
        store: &ObjectRef<PureFlashStore>,
        now: std::time::Instant,
    ) -> Option<Duration> {
        let mut by_store = self.by_store.lock().expect("stopped pods");
        forget_another_object(&mut by_store, store);
        let (_, next) = by_store.get(store)?;
        let left = next.saturating_duration_since(now);
        (!left.is_zero()).then_some(left)
    }

    /// `store`'s stopped Pod was just replaced.
    pub fn replaced(&self, store: ObjectRef<PureFlashStore>, now: std::time::Instant) {
        let mut by_store = self.by_store.lock().expect("stopped pods");
        forget_another_object(&mut by_store, &store);
        let (backoff, next) = by_store.entry(store).or_insert_with(|| {
            (
                Backoff::new(STOPPED_POD_RETRY_INITIAL, STOPPED_POD_RETRY_MAX),
                now,
            )
        });
        *next = now + backoff.next_delay();
    }

    /// `store`'s Pod runs: the next replacement, if any, is at once again.
    pub fn ran(&self, store: &ObjectRef<PureFlashStore>) {
        self.by_store.lock().expect("stopped pods").remove(store);
    }

    /// Keeps only the stores for which `keep` holds.
    pub fn retain(&self, mut keep: impl FnMut(&ObjectRef<PureFlashStore>) -> bool) {
        self.by_store
            .lock()
            .expect("stopped pods")
            .retain(|store, _| keep(store));
    }
}

/// Drops what `map` holds for a store of `store`'s name that is another object (deleted and
/// created again under its name): [`ObjectRef`]s compare by name alone, and a store made anew
/// must not inherit its predecessor's backoff.
fn forget_another_object<V>(
    map: &mut HashMap<ObjectRef<PureFlashStore>, V>,
    store: &ObjectRef<PureFlashStore>,
) {
    if map
        .get_key_value(store)
        .is_some_and(|(held, _)| held.extra.uid != store.extra.uid)
    {
        map.remove(store);
    }
}

/// Per store, a read of its node's Lease taken during its current offline episode: what the
/// read made when its restart is due is compared with, to tell whether the kubelet is in
/// contact ([`pods::node_health`]). Keyed like [`TermRestarts`]: a store recreated under its
/// name starts afresh.
#[derive(Default)]
pub struct LeaseSightings {
    by_store: std::sync::Mutex<HashMap<ObjectRef<PureFlashStore>, NodeSighting>>,
}

struct NodeSighting {
    uid: Option<String>,
    node: String,
    /// The episode it was taken in: when it began (the later of the store going offline and
    /// its last restart), as the status says. Matched by value, never compared with this
    /// replica's clock: the status may have been written by another replica's.
    episode: Timestamp,
    sighting: LeaseSighting,
}

impl LeaseSightings {
    /// The sighting of `node`'s Lease taken for `store` in the episode that began at `episode`.
    pub fn of_episode(
        &self,
        store: &PureFlashStore,
        node: &str,
        episode: Timestamp,
    ) -> Option<LeaseSighting> {
        let by_store = self.by_store.lock().expect("lease sightings");
        by_store
            .get(&ObjectRef::from_obj(store))
            .filter(|seen| {
                seen.uid == store.metadata.uid && seen.node == node && seen.episode == episode
            })
            .map(|seen| seen.sighting.clone())
    }

    pub fn record(
        &self,
        store: &PureFlashStore,
        node: &str,
        episode: Timestamp,
        sighting: LeaseSighting,
    ) {
        self.by_store.lock().expect("lease sightings").insert(
            ObjectRef::from_obj(store),
            NodeSighting {
                uid: store.metadata.uid.clone(),
                node: node.to_owned(),
                episode,
                sighting,
            },
        );
    }

    /// Keeps only the stores for which `keep` holds.
    pub fn retain(&self, mut keep: impl FnMut(&ObjectRef<PureFlashStore>) -> bool) {
        self.by_store
            .lock()
            .expect("lease sightings")
            .retain(|store, _| keep(store));
    }
}

/// When this term restarted each store. An entry holds only for the store object it was made
/// for: one recreated under the same name has no restart behind it.
#[derive(Default)]
pub struct TermRestarts {
    by_store: HashMap<ObjectRef<PureFlashStore>, TermRestart>,
}

/// One restart of this term.
struct TermRestart {
    /// The store object it was made for.
    uid: Option<String>,
    at: Timestamp,
    /// The session of the `alive` standing when the pfs was killed (a store restarted while
    /// up): until that session expires, its `alive` is the killed pfs's, not a new one's.
    killed_session: Option<i64>,
}

impl TermRestarts {
    fn get(&self, store: &PureFlashStore) -> Option<&TermRestart> {
        if self.by_store.is_empty() {
            return None;
        }
        self.by_store
            .get(&ObjectRef::from_obj(store))
            .filter(|restart| restart.uid == store.metadata.uid)
    }

    /// When this term restarted `store`, if it did.
    pub fn of(&self, store: &PureFlashStore) -> Option<Timestamp> {
        self.get(store).map(|restart| restart.at)
    }

    /// Whether `store` is up again after this term's restart of it, by its `alive` now: not
    /// while that is still the one of the session its restart killed.
    fn alive_after(&self, store: &PureFlashStore, alive: AliveNode) -> bool {
        let killed = self.get(store).and_then(|restart| restart.killed_session);
        alive.exists && !(killed.is_some() && alive.session == killed)
    }

    pub fn record(&mut self, store: &PureFlashStore, at: Timestamp, killed_session: Option<i64>) {
        self.by_store.insert(
            ObjectRef::from_obj(store),
            TermRestart {
                uid: store.metadata.uid.clone(),
                at,
                killed_session,
            },
        );
    }

    /// Keeps only the stores for which `keep` holds.
    pub fn retain(&mut self, mut keep: impl FnMut(&ObjectRef<PureFlashStore>) -> bool) {
        self.by_store.retain(|store, _| keep(store));
    }
}

/// Restarts in flight among the `running` stores other than `store`: each one's last restart
/// (this term's, or its status's) still awaiting its store. No allocation unless this term
/// restarted some.
fn restarts_in_flight<'a>(
    running: impl Iterator<Item = &'a PureFlashStore>,
    store: &PureFlashStore,
    restarted_this_term: &TermRestarts,
    policy: &Policy,
    current: &Snapshot,
    now: Timestamp,
) -> usize {
    running
        .filter(|s| {
            s.metadata.name != store.metadata.name
                || s.metadata.namespace != store.metadata.namespace
        })
        .filter(|s| {
            let status = s.status.as_ref();
            let last = restarted_this_term.of(s).or(status
                .and_then(|s| s.last_restart_time.as_ref())
                .map(|t| t.0));
            recovery::in_flight(
                policy,
                last,
                status.and_then(|s| s.offline_since.as_ref()).map(|t| t.0),
                status
                    .and_then(|s| s.last_online_time.as_ref())
                    .map(|t| t.0),
                // A store restarted while up reads alive until its killed pfs's session
                // expires: its restart is in flight all the same.
                restarted_this_term.alive_after(s, alive_node(current, s.spec.store_id)),
                now,
            )
        })
        .count()
}

/// The store's entry in the view: `storeId` as ZooKeeper's directory name has it.
fn view_of(snapshot: &Snapshot, store_id: i32) -> Option<&crate::zk::StoreView> {
    snapshot.view.get(zk_store_id(store_id)?)
}

/// The spec's `storeId` as a ZooKeeper store id (`None` for one the schema refuses).
fn zk_store_id(store_id: i32) -> Option<StoreId> {
    StoreId::new(u32::try_from(store_id).ok()?).ok()
}

fn alive(snapshot: &Snapshot, store_id: i32) -> bool {
    alive_node(snapshot, store_id).exists
}

/// Whether the view can say whether the store with this `storeId` is alive (see
/// [`Snapshot::knows_store`]).
fn knows_store(snapshot: &Snapshot, store_id: i32) -> bool {
    match zk_store_id(store_id) {
        Some(id) => snapshot.knows_store(id),
        None => snapshot.knows_stores(),
    }
}

/// The store's `alive` as ZooKeeper shows it; absent for a store ZooKeeper refused to read,
/// whatever it showed before: counted out of what is available, not taken for a restart.
fn alive_node(snapshot: &Snapshot, store_id: i32) -> AliveNode {
    let known = view_of(snapshot, store_id).filter(|s| s.is_known());
    known.map_or(AliveNode::default(), |s| AliveNode {
        exists: s.alive,
        session: s.alive_session,
    })
}

/// What a Pod created now records about the `alive` it must not take for its own.
fn predecessor(snapshot: &Snapshot, store_id: i32) -> Predecessor {
    if !snapshot.health.is_trusted() || view_of(snapshot, store_id).is_some_and(|s| !s.is_known()) {
        return Predecessor::Unknown;
    }
    match alive_node(snapshot, store_id) {
        AliveNode { exists: false, .. } => Predecessor::NoSession,
        AliveNode {
            session: Some(session),
            ..
        } => Predecessor::Session(session),
        AliveNode { session: None, .. } => Predecessor::Unknown,
    }
}

/// What of the DB sync's state the stores' `DbSynced` conditions show, to tell which stores a
/// change of it concerns: its kind (Pending, Synced or Failing, whatever the error), and which
/// stores' rows are held back.
pub(crate) struct DbSeen {
    kind: std::mem::Discriminant<DbState>,
    behind: bool,
    held: Arc<BTreeMap<i64, String>>,
}

/// The stores a change of the DB sync's state concerns.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum DbWake {
    Nobody,
    Everyone,
    /// Those of these store ids.
    Stores(BTreeSet<i64>),
}

impl DbSeen {
    pub(crate) fn of(db: &watch::Receiver<DbSyncStatus>) -> DbSeen {
        let status = db.borrow();
        DbSeen {
            kind: std::mem::discriminant(&db_kind_of(&status)),
            behind: status.behind.is_some(),
            held: Arc::clone(&status.held),
        }
    }

    pub(crate) fn wake(&self, earlier: &DbSeen) -> DbWake {
        if self.kind != earlier.kind || self.behind != earlier.behind {
            return DbWake::Everyone;
        }
        if Arc::ptr_eq(&self.held, &earlier.held) {
            return DbWake::Nobody;
        }
        let changed = |a: &BTreeMap<i64, String>, b: &BTreeMap<i64, String>| {
            a.iter()
                .filter(|(id, why)| b.get(id) != Some(why))
                .map(|(id, _)| *id)
                .collect::<Vec<_>>()
        };
        let ids: BTreeSet<i64> = changed(&self.held, &earlier.held)
            .into_iter()
            .chain(changed(&earlier.held, &self.held))
            .collect();
        if ids.is_empty() {
            DbWake::Nobody
        } else {
            DbWake::Stores(ids)
        }
    }
}

/// How many passes in a row must fail before the stores' `DbSynced` says the sync fails. A
/// lone failure (a deadlock with another writer of the tables, a dropped connection) is
/// retried within a second; shown, it would cost every store two status writes for nothing.
/// A refused connection fails three within about a second (the retries start 200 ms apart);
/// a DB that does not answer, within three connect or pass timeouts. (A sync that keeps
/// failing some passes between successes shows in `pureflash_db_sync_errors_total`.)
pub(crate) const FAILED_PASSES_SHOWN: u32 = 3;

/// The sync's state as every store shares it.
fn db_kind_of(status: &DbSyncStatus) -> DbState {
    match (&status.last_error, status.last_success) {
        (Some(error), _) if status.failed_in_a_row >= FAILED_PASSES_SHOWN => {
            DbState::Failing(error.clone())
        }
        (_, Some(_)) => DbState::Synced,
        (_, None) => DbState::Pending,
    }
}

/// The sync's state as store `store_id`'s `DbSynced` shows it.
fn db_state(db: Option<&watch::Receiver<DbSyncStatus>>, store_id: i32) -> DbState {
    let Some(db) = db else {
        return DbState::NotConfigured;
    };
    let status = db.borrow();
    match db_kind_of(&status) {
        DbState::Synced => match status.held_back(i64::from(store_id)) {
            Some(why) => DbState::Held(why.to_owned()),
            None => DbState::Synced,
        },
        other => other,
    }
}

/// How often a store waiting for others (a held rollout or recovery) looks again if no wake-up
/// came.
const HELD_RECHECK: Duration = Duration::from_secs(15);

/// How often a store whose Pod is terminating looks again.
const TERMINATING_RECHECK: Duration = Duration::from_secs(5);

/// How often a rollout the API refused is tried again (as a dry run) without any change of
/// the store.
const REFUSED_RECHECK: Duration = Duration::from_secs(60);
/// How soon a store whose Pod another one running pfs for its id keeps from being created
/// looks again: that Pod's going wakes no store.
const FOREIGN_POD_RECHECK: Duration = Duration::from_secs(15);

/// How long a node's InternalIP is reused before it is read again: a changed address reaches
/// pfs.conf (and rolls the Pod) within this time.
pub const NODE_ADDRESS_TTL: Duration = Duration::from_secs(60);

/// Pod creates serialized by node and by store id, with the Pods this term created that the
/// Pod cache may not show yet. Two stores created at once, naming one disk or one id, may
/// each reconcile before the caches show the other store or its new Pod: the second create
/// then finds the first one's Pod here (see [`pods::in_the_way`]), and two pfs never get one
/// disk. Only the leader creates, and a new term starts on freshly listed caches.
#[derive(Default)]
pub struct CreateLocks {
    by_key: std::sync::Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// Pods created, and when, until the cache shows them (or [`UNSEEN_CREATE_KEPT`] has
    /// passed: one deleted before the cache saw it).
    unseen: std::sync::Mutex<Vec<(std::time::Instant, Arc<Pod>)>>,
}

/// How long a Pod created is kept in [`CreateLocks`] at most, waiting for the cache to show it.
const UNSEEN_CREATE_KEPT: Duration = Duration::from_secs(30);

impl CreateLocks {
    /// Locks the store's id, then its node (always in that order, so no two creates wait on
    /// each other).
    async fn lock(
        &self,
        store: &PureFlashStore,
    ) -> (
        tokio::sync::OwnedMutexGuard<()>,
        tokio::sync::OwnedMutexGuard<()>,
    ) {
        let id = self.slot(format!("id/{}", store.spec.store_id));
        let node = self.slot(format!("node/{}", store.spec.node_name));
        (id.lock_owned().await, node.lock_owned().await)
    }

    fn slot(&self, key: String) -> Arc<Mutex<()>> {
        let mut by_key = self.by_key.lock().expect("create locks");
        // Dropped once nobody holds or waits for them: a lock per key ever seen would grow
        // with every store and node that ever was.
        by_key.retain(|_, lock| Arc::strong_count(lock) > 1);
        Arc::clone(by_key.entry(key).or_default())
    }

    /// Records a Pod just created (under the locks).
    fn created(&self, pod: Pod) {
        self.unseen
            .lock()
            .expect("created pods")
            .push((std::time::Instant::now(), Arc::new(pod)));
    }

    /// Follows the Pod watch, after the cache took `event` in: a Pod created is forgotten
    /// once the cache shows it (or it was seen deleted).
    pub fn saw(&self, event: &kube::runtime::watcher::Event<Pod>, cache: &Store<Pod>) {
        use kube::runtime::watcher::Event;
        let mut unseen = self.unseen.lock().expect("created pods");
        if unseen.is_empty() {
            return;
        }
        match event {
            Event::Apply(pod) | Event::Delete(pod) => {
                unseen.retain(|(_, created)| created.uid() != pod.uid());
            }
            // A relist shown all at once (its Pods were buffered until now).
            Event::InitDone => unseen.retain(|(_, created)| {
                cache
                    .get(&ObjectRef::from_obj(created.as_ref()))
                    .is_none_or(|cached| cached.uid() != created.uid())
            }),
            Event::Init | Event::InitApply(_) => {}
        }
    }

    /// The Pods created that the cache does not show yet. One deleted before the cache saw
    /// it is kept [`UNSEEN_CREATE_KEPT`] at most.
    fn unseen(&self) -> Vec<Arc<Pod>> {
        let mut unseen = self.unseen.lock().expect("created pods");
        unseen.retain(|(at, _)| at.elapsed() < UNSEEN_CREATE_KEPT);
        unseen.iter().map(|(_, pod)| Arc::clone(pod)).collect()
    }
}

/// Whether `snapshot` lets a Pod be made for the store: a Pod records whose `alive` it
/// replaces, which only a trusted view that could read the store can tell.
fn view_allows_create(snapshot: &Snapshot, store: &PureFlashStore) -> bool {
    snapshot.health.is_trusted()
        && view_of(snapshot, store.spec.store_id).is_none_or(|s| s.is_known())
}

/// What stands in the way of the store's new Pod (see [`pods::in_the_way`]): among the Pods
/// the cache shows, and those this term created that it does not show yet.
fn pod_in_the_way(
    ctx: &Context,
    store: &PureFlashStore,
    addresses: &[(claims::AddressRole, &str)],
) -> Option<pods::ForeignPfs> {
    let unseen = ctx.creates.unseen();
    let cached = ctx.pods.state();
    pods::in_the_way(
        store,
        addresses,
        cached.iter().chain(&unseen).map(AsRef::as_ref),
    )
}

/// Node InternalIPs, so that thousands of stores on a few nodes do not read the same Node on
/// every reconcile. One read per node at a time: the reconciles of a start wait for the first
/// read of their node instead of all asking at once. Only found addresses are kept: a node
/// without one, or that does not exist, is asked again each time.
#[derive(Default)]
pub struct NodeAddresses {
    by_node: std::sync::Mutex<HashMap<String, Arc<NodeAddress>>>,
}

/// A node's InternalIP and when it was read; locked while it is being read.
type NodeAddress = Mutex<Option<(String, std::time::Instant)>>;

/// How long a node read for the cluster freeze is taken as current.
const NODE_READINESS_TTL: Duration = Duration::from_secs(10);

/// Whether nodes are out of contact with Kubernetes (not Ready, or gone), read for the stores
/// the cluster freeze holds. In a mass outage every frozen store asks, on each recheck: each
/// node is read once per [`NODE_READINESS_TTL`] instead. A stale answer errs safely either way:
/// a node out of contact holds its stores' restarts anyway, and one read as in contact leaves
/// its stores to the freeze, as before it was read.
#[derive(Default)]
pub struct NodeReadiness {
    by_node: std::sync::Mutex<HashMap<String, (std::time::Instant, bool)>>,
}

impl NodeReadiness {
    /// Forgets nodes for which `keep` is false (no store is placed there any more).
    pub fn retain(&self, mut keep: impl FnMut(&str) -> bool) {
        self.by_node
            .lock()
            .expect("node readiness")
            .retain(|node, _| keep(node));
    }

    /// Whether `node` is out of contact, as read less than [`NODE_READINESS_TTL`] ago. A node
    /// that cannot be read is not known to be: false, and asked again next time.
    async fn out_of_contact(&self, client: &Client, node: &str, now: Timestamp) -> bool {
        if let Some((read_at, out)) = self.by_node.lock().expect("node readiness").get(node)
            && read_at.elapsed() < NODE_READINESS_TTL
        {
            return *out;
        }
        let nodes: Api<Node> = Api::all(client.clone());
        // Asked under the restart lock: bounded like every call made there.
        let out = match under_restart_lock(nodes.get_opt(node)).await {
            Ok(found) => {
                pods::node_health(found.as_ref(), None, None, now).0 == NodeHealth::NotReady
            }
            Err(error) => {
                debug!(%node, %error, "node not read; its stores stay with the cluster freeze");
                return false;
            }
        };
        self.by_node
            .lock()
            .expect("node readiness")
            .insert(node.to_owned(), (std::time::Instant::now(), out));
        out
    }
}

/// What a read of a store's Node found.
#[derive(Clone, Debug, PartialEq, Eq)]
enum NodeLookup {
    /// No such Node: a Pod bound to it never runs, and is garbage-collected.
    Missing,
    /// Its first IPv4 InternalIP, if it has one.
    Found(Option<String>),
}

impl NodeAddresses {
    /// Forgets nodes for which `keep` is false (no store is placed there any more).
    pub fn retain(&self, mut keep: impl FnMut(&str) -> bool) {
        self.by_node
            .lock()
            .expect("node addresses")
            .retain(|node, _| keep(node));
    }

    /// Reads `node`, or answers from what was read less than `ttl` ago. A Node that cannot be
    /// read (the API server failing for a moment, a permission taken away) is answered with
    /// its last address read, however old: the store's status goes on following ZooKeeper
    /// rather than freezing until the read succeeds. It is read again at the next lookup.
    async fn lookup(
        &self,
        client: &Client,
        node: &str,
        ttl: Duration,
    ) -> Result<NodeLookup, kube::Error> {
        let slot = Arc::clone(
            self.by_node
                .lock()
                .expect("node addresses")
                .entry(node.to_owned())
                .or_default(),
        );
        let mut known = slot.lock().await;
        if let Some((address, read_at)) = known.as_ref()
            && read_at.elapsed() < ttl
        {
            return Ok(NodeLookup::Found(Some(address.clone())));
        }
        let nodes: Api<Node> = Api::all(client.clone());
        let found = match nodes.get_opt(node).await {
            Ok(found) => found,
            // Only a failure that passes: one that lasts (a permission taken away) is the
            // reconcile's error, told in a ReconcileFailed Event.
            Err(error) if is_transient(&error) => {
                let Some((address, _)) = known.as_ref() else {
                    return Err(error);
                };
                debug!(%node, %error, %address, "node not read; its last address read serves");
                return Ok(NodeLookup::Found(Some(address.clone())));
            }
            Err(error) => return Err(error),
        };
        let Some(found) = found else {
            *known = None;
            return Ok(NodeLookup::Missing);
        };
        let address = found
            .status
            .and_then(|status| first_ipv4_internal_ip(status.addresses?));
        *known = address
            .clone()
            .map(|address| (address, std::time::Instant::now()));
        Ok(NodeLookup::Found(address))
    }
}

/// Whether `error` is the API server failing for a moment (unavailable, throttling, a
/// timeout, a lost connection) rather than an answer about the request.
fn is_transient(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(status) => status.code == 429 || status.code >= 500,
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

/// The node's first IPv4 InternalIP. A dual-stack node whose primary family is IPv6 lists an
/// IPv6 one first, which pfs's addresses cannot be (the metadata DB's port column holds 16
/// characters, and the CRD takes IPv4 alone for the addresses a spec gives).
fn first_ipv4_internal_ip(
    addresses: Vec<k8s_openapi::api::core::v1::NodeAddress>,
) -> Option<String> {
    addresses
        .into_iter()
        .filter(|a| a.type_ == "InternalIP")
        .find(|a| a.address.parse::<std::net::Ipv4Addr>().is_ok())
        .map(|a| a.address)
}

async fn record(
    ctx: &Context,
    store: &PureFlashStore,
    kind: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let record = Record {
        kind,
        reason,
        action,
        note,
    };
    if let Ok(Err(error)) = ctx
        .leading(ctx.recorder.publish(&store.object_ref(&()), record))
        .await
    {
        debug!(%error, reason, "could not record an Event");
    }
}

/// Reconciles one store.
pub async fn reconcile(store: Arc<PureFlashStore>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let result = reconcile_inner(&store, &ctx).await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(Error::StaleStatus) => "conflict",
        // Not a failure: this replica stopped leading (or is stopping) meanwhile.
        Err(Error::TermEnded) => "term_ended",
        Err(_) => "error",
    };
    if result.is_ok() {
        ctx.failures
            .lock()
            .expect("failures")
            .remove(&ObjectRef::from_obj(store.as_ref()));
    }
    ctx.metrics
        .reconciles
        .get_or_create(&ResultLabels { result: outcome })
        .inc();
    ctx.metrics
        .reconcile_duration
        .observe(started.elapsed().as_secs_f64());
    result
}

/// The store, as the cache has it by now, is being deleted or gone (or is another object of
/// its name). A reconcile runs on the version it was queued with; one that began before the
/// deletion must not write a ConfigMap or Pod afterwards, bringing back what the garbage
/// collector or the user removed. The deletion itself wakes the store again.
fn deleted_meanwhile(ctx: &Context, store: &PureFlashStore) -> bool {
    ctx.stores
        .get(&ObjectRef::from_obj(store))
        .is_none_or(|latest| {
            latest.metadata.deletion_timestamp.is_some() || latest.uid() != store.uid()
        })
}

async fn reconcile_inner(store: &PureFlashStore, ctx: &Context) -> Result<Action, Error> {
    owned_caches_loaded(ctx).await?;
    let namespace = store
        .namespace()
        .ok_or_else(|| Error::Invalid("a PureFlashStore is namespaced".into()))?;
    let name = store.name_any();
    // A store being deleted (waiting on finalizers, or on its Pod's graceful end in a
    // foreground deletion) is left to the garbage collector: a ConfigMap or Pod written now
    // would bring back a pfs the user is removing, or be collected and written again in a loop.
    if store.metadata.deletion_timestamp.is_some() || deleted_meanwhile(ctx, store) {
        debug!(store = %name, %namespace, "being deleted; nothing to do");
        return Ok(Action::await_change());
    }
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &namespace);
    let stores: Api<PureFlashStore> = Api::namespaced(ctx.client.clone(), &namespace);
    let apply = PatchParams::apply(MANAGER).force();
    let snapshot = ctx.snapshots.borrow().clone();
    let trusted = knows_store(&snapshot, store.spec.store_id);
    let view = view_of(&snapshot, store.spec.store_id);
    let baseline = ctx.written.current(store);
    let manual_token = store
        .annotations()
        .get(RESTART_ANNOTATION)
        .map(String::as_str);
    let token_taken = status::token_honoured_at_creation(&baseline.status, manual_token);
    let previous = token_taken.as_ref().unwrap_or(&baseline.status);
    // A write that fails (a Pod refused by a quota or admission, a ConfigMap write that errs)
    // does not end the reconcile: the status is still written, so that a store left without
    // its Pod does not read Online, and the error is returned after it, to be retried.
    let mut failed_write: Option<Error> = None;

    // One store id, one pfs: a store whose id another PureFlashStore claimed first is not run.
    let all = ctx.stores.state();
    let aside = standing_aside(&all);
    if stands_aside(&aside, store)
        && let Some(holder) = first_claimant(all.iter().map(AsRef::as_ref), store.spec.store_id)
    {
        return stand_aside(ctx, store, &baseline, previous, holder, &pods).await;
    }

    // The pfs.conf and its ConfigMap. The node is read even when the spec gives every
    // address: a Pod bound to a node that does not exist (a misspelt nodeName) never runs,
    // and is garbage-collected only to be made again.
    let needs_address = store.spec.mngt_ip.is_none()
        || store.spec.ports.is_empty()
        || store.spec.rep_ports.is_empty();
    let node = match ctx
        .node_addresses
        .lookup(&ctx.client, &store.spec.node_name, NODE_ADDRESS_TTL)
        .await
    {
        Ok(node) => node,
        Err(error) if needs_address => return Err(error.into()),
        // Only asked to be sure it exists: not known this time, and not held against it.
        Err(error) => {
            debug!(store = %name, node = %store.spec.node_name, %error, "node not read");
            NodeLookup::Found(None)
        }
    };
    let node_ip = match &node {
        NodeLookup::Found(address) => address.clone(),
        NodeLookup::Missing => None,
    };
    let env = Environment {
        cluster: ctx.settings.cluster.clone(),
        zookeeper: ctx.settings.pfs_zookeeper.clone(),
        node_ip,
    };
    // What the store's Pod registers under (none known while its node's address is not: then
    // its pfs.conf cannot be rendered, and no Pod is made).
    let addresses = claims::spec_addresses(store, env.node_ip.as_deref());
    // A store whose pfs.conf cannot be rendered (its node is gone, or has no InternalIP) keeps
    // its ConfigMap and Pod as they are and gets no new ones, but its status still follows
    // ZooKeeper and the Pod.
    //
    // Nor does a store whose node or id differs from its Pod's (see `pods::identity_changed`):
    // its Pod is neither rolled nor restarted, both of which would make it anew from the spec.
    let identity_changed = ctx
        .pods
        .get(&ObjectRef::new(&pods::pod_name(store)).within(&namespace))
        .and_then(|pod| pods::identity_changed(store, &pod));
    let identity_mismatch = identity_changed.is_some();
    // Nor one whose trays name a disk another store on its node holds (see `claims`).
    let conf = match identity_changed {
        Some(error) => Err(error),
        None if node == NodeLookup::Missing => Err(pods::RenderError::NodeNotFound {
            node: store.spec.node_name.clone(),
        }),
        None => match device_held(ctx, store, &all, &aside) {
            Some(held) => Err(pods::RenderError::DeviceHeld(held)),
            None => match address_held(ctx, store, &all, &aside, env.node_ip.as_deref()) {
                Some(held) => Err(pods::RenderError::AddressHeld(held)),
                None => pods::pfs_conf(store, &env),
            },
        },
    };
    let (rendered, config_error) = match conf {
        Ok(conf) => (
            Some((
                pods::config_hash(store, &conf),
                pods::config_map(store, &conf),
            )),
            None,
        ),
        Err(error) => {
            // Announced once per cause: the status keeps saying it (UpToDate).
            let reported = status::config_invalid_message(&error.to_string());
            let announced = previous
                .conditions
                .iter()
                .any(|c| c.type_ == "UpToDate" && c.message == reported);
            if !announced {
                warn!(store = %name, %namespace, %error, "no pfs.conf for the store");
                record(
                    ctx,
                    store,
                    EventType::Warning,
                    "ConfigInvalid",
                    "Render",
                    error.to_string(),
                )
                .await;
            }
            (None, Some(error.to_string()))
        }
    };
    let config_map_name = pods::config_map_name(store);
    let cached_map = ctx
        .config_maps
        .get(&ObjectRef::new(&config_map_name).within(&namespace));
    let map_stale = rendered.as_ref().is_some_and(|(_, config_map)| {
        !cached_map.is_some_and(|existing| pods::config_map_up_to_date(&existing, config_map))
    });

    // The Pod: created when missing, rolled when what pfs runs on changed. Read from the cache
    // unless the cache says it is missing (it may just lag a create) or the store may be
    // restarted (that decision is taken on the Pod as the API has it now).
    let pod_name = pods::pod_name(store);
    let history = status::history_of(previous);
    let restart_possible = recovery::may_restart(
        trusted,
        view.map(|s| s.alive),
        store
            .annotations()
            .get(RESTART_ANNOTATION)
            .map(String::as_str),
        &history,
    );
    let cached_pod = ctx
        .pods
        .get(&ObjectRef::new(&pod_name).within(&namespace))
        .filter(|_| !restart_possible);
    let mut pod = match cached_pod {
        Some(pod) => Some(Pod::clone(&pod)),
        None => pods.get_opt(&pod_name).await?,
    };
    // A Pod running an older configuration is replaced when the rest of the cluster can spare
    // its store. Until then its pfs.conf stays as it is too: a pfs restarted in place by the
    // kubelet must not pick up half of a change.
    let outdated = pod.as_ref().filter(|existing| {
        rendered.as_ref().is_some_and(|(hash, _)| {
            existing.annotations().get(pods::CONFIG_HASH_ANNOTATION) != Some(hash)
        })
    });
    // Only outdated Pods take the lock: it serializes rollout decisions, not every reconcile.
    let mut rolls = match outdated {
        Some(_) => Some(ctx.rolls.lock().await),
        None => None,
    };
    let decide_roll = |existing: &Pod, rolls: &mut Replaced, node: NodeFacts| {
        let now = ctx.clock.now();
        let roll_policy = roll_policy(&ctx.settings);
        rolls.retain(|_, replacement| now.duration_since(replacement.at) < roll_policy.settle);
        let replaced_already = rolls
            .get(&ObjectRef::from_obj(store))
            .is_some_and(|replacement| replacement.confirmed && replacement.uid == existing.uid());
        if replaced_already {
            // The cache still shows the Pod this term deleted: the rollout is under way.
            return None;
        }
        let (facts, _, waiting) = pod_facts(existing);
        let facts = ctx.container_starts.apply(facts);
        let container_exited = facts.phase == "Running"
            && facts.running_since.is_none()
            && waiting.is_none()
            && existing.status.as_ref().is_some_and(|status| {
                status.container_statuses.iter().flatten().any(|c| {
                    c.name == pods::CONTAINER
                        && c.state
                            .as_ref()
                            .is_some_and(|state| state.terminated.is_some())
                })
            });
        // The world as it is now, not as it was when this reconcile began: it may have
        // waited for the lock behind many others.
        let current = ctx.snapshots.borrow().clone();
        let (count, names) = unavailable_others(ctx, store, (&all, &aside), &current, rolls, now);
        let running = || all.iter().filter(|s| !stands_aside(&aside, s));
        let (freeze, _) = offline_stores(ctx, running, &current, None);
        let cluster = ClusterFacts {
            stores: freeze.counted.len().max(1),
            offline: freeze.offline.len(),
            restarts_in_flight: 0,
        };
        let store_policy = policy(store, &ctx.settings);
        Some(rollout::decide(
            &RollObservation {
                view_trusted: knows_store(&current, store.spec.store_id),
                alive: alive(&current, store.spec.store_id),
                pod: &facts,
                unavailable_others: &names,
                unavailable_count: count,
                paused: crate::crd::recovery_paused(store),
                cluster_frozen: recovery::cluster_frozen(&cluster, &store_policy),
                offline_since: previous.offline_since.as_ref().map(|t| t.0),
                offline_grace: store_policy.offline_grace,
                node_out_of_contact: node.out_of_contact,
                node_cordoned: node.cordoned,
                container_exited,
                now,
            },
            &roll_policy,
        ))
    };
    let mut roll = match (outdated, rolls.as_mut()) {
        (Some(existing), Some(rolls)) => decide_roll(existing, rolls, NodeFacts::default()),
        _ => None,
    };
    // Where the operator's budget, as last watched, plainly allows no disruption, the
    // rollout waits without asking (no dry run, Node read or eviction): with every store's spec
    // changed under a budget that allows nothing, each would ask every 15 s. Its allowing
    // more wakes the store (see `budget::keep`).
    if let (Some(RollVerdict::Roll(rollout::RollReason::WithinBudget)), Some(existing)) =
        (&roll, outdated)
        && cached_budget_refuses(ctx, existing)
    {
        roll = Some(RollVerdict::Hold(HoldReason::DisruptionBudget {
            why: format!(
                "the {} PodDisruptionBudget allows no disruption now",
                budget::BUDGET_NAME
            ),
        }));
    }
    // A successor the API would refuse is not worth the running Pod: its create is tried as a
    // dry run first (validation, quota and admission run, nothing is stored). A running pfs's
    // node is read too: a kubelet out of contact would not get the delete, and would act on it
    // whenever it reports again. Not under the lock: an admission webhook may take its time,
    // and recovery's restarts wait for the lock. So the rollout is decided again once it is
    // back, on the world as it is then.
    if let (Some(RollVerdict::Roll(_)), Some((hash, _)), Some(existing)) =
        (&roll, &rendered, outdated)
    {
        drop(rolls.take());
        let successor = pods::pod(store, hash, Predecessor::Unknown);
        let refusal = refusal_of(&pods, &successor, Some(existing)).await?;
        // Read whatever the first verdict: a Pod that was not running may be by the second.
        let node_name = existing.spec.as_ref().and_then(|s| s.node_name.as_deref());
        let node = match node_name {
            Some(node_name) => {
                let nodes: Api<Node> = Api::all(ctx.client.clone());
                match nodes.get_opt(node_name).await {
                    Ok(node) => NodeFacts {
                        out_of_contact: pods::node_out_of_contact(node.as_ref()),
                        cordoned: node.as_ref().is_some_and(pods::cordoned),
                    },
                    // Not known to be in contact: held, and looked at again soon.
                    Err(error) => {
                        warn!(store = %name, %namespace, %error, node = node_name, "the node of a pod to replace could not be read; the rollout waits");
                        NodeFacts {
                            out_of_contact: true,
                            cordoned: false,
                        }
                    }
                }
            }
            None => NodeFacts::default(),
        };
        let mut relocked = ctx.rolls.lock().await;
        roll = match refusal {
            Some(why) => {
                warn!(store = %name, %namespace, %why, "a changed spec makes a pod the API refuses; the running pod is kept");
                Some(RollVerdict::Hold(HoldReason::ReplacementRefused { why }))
            }
            None => decide_roll(existing, &mut relocked, node),
        };
        rolls = Some(relocked);
    }
    // The lock serializes deciding and deleting; nothing else this reconcile writes waits for
    // it (recovery's restarts take it too).
    if !matches!(roll, Some(RollVerdict::Roll(_))) {
        drop(rolls.take());
    }
    let mut roll_held = match &roll {
        Some(RollVerdict::Hold(hold)) => Some(hold.clone()),
        _ => None,
    };
    // The new pfs.conf is written when nothing runs the old one any more: right away, or once
    // a rolled Pod is deleted (the old pfs, restarted in place, must not read half a change).
    let mut map_current = !map_stale;
    let apply_map = async || -> Result<(), Error> {
        if let Some((_, config_map)) = rendered.as_ref().filter(|_| map_stale) {
            ctx.leading(maps.patch(&config_map_name, &apply, &Patch::Apply(config_map)))
                .await??;
        }
        Ok(())
    };
    let rolling = matches!(roll, Some(RollVerdict::Roll(_)));
    // Looked at again before the first write: the reads above take a while.
    if deleted_meanwhile(ctx, store) {
        return Ok(Action::await_change());
    }
    // Not for a store without a Pod: its pfs.conf is written where its Pod is created, under
    // the create locks and once nothing is in its way. Written before, it would count as the
    // use of its disks and address (see `claims`) by a store that may never get to serve
    // them, ahead of the store that serves them.
    if roll_held.is_none() && !rolling && pod.is_some() {
        map_current = keep_going(apply_map().await, &mut failed_write)?.is_some();
    }
    if let (Some(RollVerdict::Roll(reason)), Some(existing), Some((hash, _))) =
        (&roll, &pod, &rendered)
    {
        // The Pod as judged, not just this Pod: one that started running since the cache
        // showed it (a verdict of PodNotRunning) has to be judged again.
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: existing.uid(),
                resource_version: existing.resource_version(),
            }),
            ..DeleteParams::default()
        };
        let mut old_pod_stays = false;
        // A serving pfs is evicted: the disruption budgets covering it (the operator's, whose
        // reshaping lags what it counts, and any of the cluster's) decide atomically with a
        // drain's evictions. One that serves nothing goes as it is: it disrupts nothing.
        let removal = async {
            match reason {
                rollout::RollReason::WithinBudget => {
                    evict_exactly(&ctx.eviction_client, existing).await
                }
                rollout::RollReason::PodNotRunning => {
                    pods.delete(&pod_name, &params).await.map(drop)
                }
            }
        };
        // Bounded: every restart waits for the lock meanwhile. One that took too long may
        // still land: until the cache tells, the store counts as unavailable for the other
        // rollouts, and its own is judged again.
        let deleted = under_restart_lock(ctx.leading(removal)).await;
        if let (Err(Error::SlowApi(_)), Some(rolls)) = (&deleted, rolls.as_mut()) {
            rolls.insert(
                ObjectRef::from_obj(store),
                Replacement {
                    at: ctx.clock.now(),
                    uid: existing.uid(),
                    confirmed: false,
                },
            );
        }
        match deleted? {
            Ok(_) => {
                if let Some(mut rolls) = rolls.take() {
                    rolls.insert(
                        ObjectRef::from_obj(store),
                        Replacement {
                            at: ctx.clock.now(),
                            uid: existing.uid(),
                            confirmed: true,
                        },
                    );
                }
                ctx.metrics
                    .rolls
                    .get_or_create(&ReasonLabels {
                        reason: reason.as_str(),
                    })
                    .inc();
                let why = match reason {
                    rollout::RollReason::PodNotRunning => "its pod was not running".to_owned(),
                    rollout::RollReason::WithinBudget => format!(
                        "fewer than {} other stores are unavailable (--max-unavailable)",
                        ctx.settings.max_unavailable
                    ),
                };
                info!(store = %name, %namespace, why, "replacing the pfs pod for a changed spec");
                record(
                    ctx,
                    store,
                    EventType::Normal,
                    "PodRolled",
                    "Roll",
                    format!(
                        "pfs configuration changed (hash {hash}); pod {pod_name} is replaced ({why})"
                    ),
                )
                .await
            }
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            // Refused by a budget: held like a rollout waiting for other stores (one coming
            // back wakes it), the old Pod and its pfs.conf as they are.
            Err(kube::Error::Api(status)) if budget_refusal(&status) => {
                let held_before = previous
                    .conditions
                    .iter()
                    .any(|c| c.type_ == "UpToDate" && c.reason == rollout::DISRUPTION_BUDGET);
                if held_before {
                    debug!(store = %name, %namespace, pod = %pod_name, why = %status.message, "a disruption budget still refuses the eviction of the pod to replace");
                } else {
                    info!(store = %name, %namespace, pod = %pod_name, why = %status.message, "a disruption budget refuses the eviction of the pod to replace; the rollout waits");
                }
                roll_held = Some(HoldReason::DisruptionBudget {
                    why: status.message.clone(),
                });
                old_pod_stays = true;
            }
            // Changed or replaced since it was judged: judged again at the next reconcile (its
            // change wakes the store), and until then its pfs.conf stays as it is.
            Err(kube::Error::Api(status)) if status.code == 409 => {
                debug!(store = %name, %namespace, pod = %pod_name, "the pod changed since the rollout was decided; deciding again");
                old_pod_stays = true;
            }
            // The old Pod stays, and so does its pfs.conf.
            Err(error) => {
                failed_write.get_or_insert(error.into());
                old_pod_stays = true;
            }
        }
        drop(rolls.take());
        if !old_pod_stays {
            map_current = keep_going(apply_map().await, &mut failed_write)?.is_some();
            pod = pods.get_opt(&pod_name).await?;
        }
    }
    drop(rolls);
    // A Pod records whose `alive` it replaces, which only a trusted view can tell; without one
    // the Pod waits (a pfs could not register then anyway), and the view becoming trusted
    // wakes every store (the store readable again, this one).
    let view_now = ctx.snapshots.borrow().clone();
    let can_create = view_allows_create(&view_now, store) && rendered.is_some();
    // A Pod stopped for good (evicted, refused at admission, shut down with its node) is
    // never run again by its kubelet: it is deleted and replaced as a missing one is. No pfs
    // runs in it, so no recovery rail applies; a terminal Pod is deleted at once. Replacements
    // are spaced out until a replacement runs (a node refusing every Pod would loop).
    let mut replaced_stopped: Option<String> = None;
    let mut replacement_due_in: Option<Duration> = None;
    let report_replaced = async |note: Option<String>| {
        if let Some(note) = note {
            record(
                ctx,
                store,
                EventType::Warning,
                "PodReplaced",
                "Replace",
                note,
            )
            .await;
        }
    };
    if let Some((stopped, why)) = pod
        .as_ref()
        .filter(|_| can_create)
        .and_then(|p| pods::stopped_for_good(p).map(|why| (p, why)))
    {
        let key = ObjectRef::from_obj(store);
        match ctx.stopped_pods.due_in(&key, std::time::Instant::now()) {
            Some(left) => {
                debug!(store = %name, %namespace, ?left, %why, "pfs pod stopped for good; replacing it later");
                replacement_due_in = Some(left);
            }
            None => {
                let mut stopped_pod_stays = false;
                match ctx
                    .leading(pods.delete(&pod_name, &delete_exactly(stopped.uid(), None)))
                    .await?
                {
                    Ok(_) => {
                        ctx.stopped_pods.replaced(key, std::time::Instant::now());
                        ctx.metrics.stopped_pods_replaced.inc();
                        info!(store = %name, %namespace, pod = %pod_name, %why, "replacing a pfs pod that stopped for good");
                        replaced_stopped = Some(format!(
                            "pod {pod_name} stopped for good ({why}): deleted, for a new pod to replace it"
                        ));
                    }
                    // Gone or replaced meanwhile: what is there now is read below.
                    Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {}
                    // The stopped Pod stays, and is deleted at the retry.
                    Err(error) => {
                        failed_write.get_or_insert(error.into());
                        stopped_pod_stays = true;
                    }
                }
                if !stopped_pod_stays {
                    pod = match pods.get_opt(&pod_name).await {
                        Ok(pod) => pod,
                        Err(error) => {
                            report_replaced(replaced_stopped.take()).await;
                            return Err(error.into());
                        }
                    };
                }
            }
        }
    }
    // Not while another Pod runs pfs for this id (see `pods::foreign_pfs`). Its going wakes
    // no store: looked at again shortly.
    let mut foreign_pfs = if pod.is_none() {
        pods::foreign_pfs(store, ctx.pods.state().iter().map(AsRef::as_ref))
    } else {
        None
    };
    let mut created_now = pod.is_none() && can_create && foreign_pfs.is_none();
    // Nor on a cordoned node (a drain, maintenance, a node the autoscaler removes), where
    // the scheduler would place no new Pod either: a drained node stays drained, and the
    // disruption budget holds across drains of several nodes at once (a pfs made anew on its
    // drained node would serve again, let the next node's drain through, then go down with
    // its node). The store comes back once the node is uncordoned. Whoever deleted the Pod
    // (an eviction, recovery's own kill, a person): a Pod made there would not be evicted by
    // a drain under way, which lists the node's Pods once. The Node is read fresh: a drain
    // cordons right before it evicts.
    let mut node_cordoned = false;
    if created_now {
        let nodes: Api<Node> = Api::all(ctx.client.clone());
        match nodes.get_opt(&store.spec.node_name).await {
            Ok(Some(node)) if pods::cordoned(&node) => {
                node_cordoned = true;
                created_now = false;
            }
            Ok(_) => {}
            // The create goes ahead: a store left without its Pod is the worse mistake.
            Err(error) => {
                warn!(store = %name, node = %store.spec.node_name, %error, "the node could not be read to see whether it is cordoned; the pod is created");
            }
        }
    }
    if node_cordoned
        && previous
            .condition("PodReady", "False")
            .is_none_or(|c| c.reason != status::NODE_CORDONED)
    {
        info!(store = %name, %namespace, node = %store.spec.node_name, "the store's node is cordoned; its pod is created once it is uncordoned");
    }
    // Held until the create is done and recorded, so that the next create on the node or of
    // the id finds this one's Pod.
    let mut create_locks = None;
    let mut view_now = view_now;
    if created_now {
        let locks = ctx.creates.lock(store).await;
        // The lock may have been a wait behind other creates: the view is read again (a pfs
        // that registered meanwhile is what the new Pod replaces).
        view_now = ctx.snapshots.borrow().clone();
        if let Some(found) = pod_in_the_way(ctx, store, &addresses) {
            foreign_pfs = Some(found);
            created_now = false;
        } else if !view_allows_create(&view_now, store) {
            created_now = false;
        } else {
            create_locks = Some(locks);
        }
    }
    if let Some(other) = &foreign_pfs
        && previous
            .condition("PodReady", "False")
            .is_none_or(|c| c.reason != "ForeignPod")
    {
        warn!(store = %name, %namespace, pod = %other.pod, device = ?other.device, terminating = other.terminating, "another pod runs pfs for the store's id or serves one of its disks; none is created");
    }
    // A new Pod runs the current spec, held rollout or not, and so does its pfs.conf: one
    // started on the previous pfs.conf under the new hash would never be rolled.
    if created_now && !map_current {
        map_current = keep_going(apply_map().await, &mut failed_write)?.is_some();
        created_now = map_current;
        if !created_now {
            drop(create_locks.take());
        }
    }
    if let (true, Some((hash, _))) = (created_now, &rendered) {
        // A restart still recorded while its Pod is gone: the restart's own kill leaves the
        // Pod until its kubelet has stopped pfs, but someone may have force-deleted it
        // instead, its pfs dying on its node still, able to register yet. Which it was is not
        // told: a store offline now tells nothing about whose `alive` comes next.
        let predecessor = if previous.unfinished_restart.is_some() {
            Predecessor::Unknown
        } else {
            predecessor(&view_now, store.spec.store_id)
        };
        // Looked at again right before: the ConfigMap's write above takes a while.
        if deleted_meanwhile(ctx, store) {
            return Ok(Action::await_change());
        }
        let made = pods::registering_under(pods::pod(store, hash, predecessor), &addresses);
        let created = create_pod(ctx, &pods, &made).await;
        if let Ok(Some(made)) = &created {
            ctx.creates.created(made.clone());
        }
        drop(create_locks.take());
        // Written once the new Pod is asked for (an Event write may be throttled for long),
        // and also when that failed: the old Pod is gone either way.
        report_replaced(replaced_stopped.take()).await;
        match keep_going(created, &mut failed_write)? {
            // One was created meanwhile (by a former leader, say): it is what there is.
            Some(None) => {
                created_now = false;
                pod = pods.get_opt(&pod_name).await?;
            }
            Some(Some(created)) => {
                pod = Some(created);
                record(
                    ctx,
                    store,
                    EventType::Normal,
                    "PodCreated",
                    "Create",
                    format!("pod {pod_name} created on node {}", store.spec.node_name),
                )
                .await;
            }
            None => created_now = false,
        }
    }
    // A Pod found without its owner (left by an orphaning delete) is taken over: a store
    // deleted later must take its pfs along.
    if let Some(found) = pod
        .as_ref()
        // Not one made for another node or id: taken over, it would be rolled or restarted
        // from this spec, elsewhere or under another id.
        .filter(|p| !created_now && p.metadata.deletion_timestamp.is_none() && !identity_mismatch)
        .filter(|p| pods::adoption(p, store).is_some())
        .cloned()
        && let Some(adopted) =
            keep_going(adopt(ctx, &pods, store, found).await, &mut failed_write)?.flatten()
    {
        pod = Some(adopted);
        info!(store = %name, %namespace, pod = %pod_name, "adopted a pfs pod that had no owner");
        record(
            ctx,
            store,
            EventType::Normal,
            "PodAdopted",
            "Adopt",
            format!("pod {pod_name} had no owner; the store owns it now"),
        )
        .await;
    }
    // Replaced by someone else meanwhile: the replacement is still what happened.
    report_replaced(replaced_stopped).await;
    let observed_pod = pod.as_ref().map(pod_facts).map(|(facts, ready, waiting)| {
        let facts = ctx.container_starts.observe(facts, ctx.clock.now());
        (facts, ready, waiting)
    });
    if observed_pod
        .as_ref()
        .is_some_and(|(facts, _, _)| facts.phase == "Running")
    {
        ctx.stopped_pods.ran(&ObjectRef::from_obj(store));
    }
    let (facts, pod_ready, pod_waiting) = match &observed_pod {
        Some((facts, ready, waiting)) => (Some(facts.clone()), *ready, waiting.clone()),
        None => (None, false, None),
    };

    // Recovery: decided and acted on under one lock, so the in-flight cap holds. Only a store
    // that may be restarted takes it (and counts the cluster): for the others the decision
    // cannot be a restart, and they must not queue behind a restart's API writes.
    let policy = policy(store, &ctx.settings);
    let annotations = store.annotations();
    let mut restarts = if restart_possible {
        Some(ctx.restarts.lock().await)
    } else {
        None
    };
    // A term being stopped lets what is under way finish, but starts no restart: one begun now
    // might be cut off between its kill and its new Pod. The next leader decides.
    if restarts.is_some() && ctx.draining.is_cancelled() {
        return Err(Error::TermEnded);
    }
    // The lock may have been a long wait behind other stores' restarts: the clock and the
    // cluster-wide counts are taken now. This store's own facts (and so whether its Pod was
    // read from the API) came from the view at the start; if they changed meanwhile, the
    // decision is taken again on fresh reads (requeued at once below).
    // In whole seconds, as status times go over the wire (metav1.Time): a time written from
    // here reads back equal to the one kept in memory meanwhile (this term's restarts, the
    // Lease sighting of an offline episode).
    let now = ctx.clock.now();
    let now = Timestamp::from_second(now.as_second()).unwrap_or(now);
    let current = ctx.snapshots.borrow().clone();
    if knows_store(&current, store.spec.store_id) != trusted
        || alive(&current, store.spec.store_id) != alive(&snapshot, store.spec.store_id)
    {
        return Ok(Action::requeue(Duration::ZERO));
    }
    let me = ObjectRef::from_obj(store);
    // Who stands aside is known from the start (by uid, which the fresh listing shares).
    let all = ctx.stores.state();
    let running = || all.iter().filter(|s| !stands_aside(&aside, s));
    let cluster = match &restarts {
        None => ClusterFacts {
            stores: 1,
            offline: 0,
            restarts_in_flight: 0,
        },
        Some(restarts) => {
            // This store as its Pod was just read, the others as cached.
            let (count, includes_me) = offline_stores(ctx, running, &current, Some(store));
            let fresh = includes_me.then(|| {
                recovery::freeze_standing(
                    alive(&current, store.spec.store_id),
                    set_aside_from_freeze(store),
                    KnownPod::Loaded(facts.as_ref()),
                )
            });
            let (stores, offline) = count.with(store, fresh);
            ClusterFacts {
                stores: stores.max(1),
                offline,
                restarts_in_flight: restarts_in_flight(
                    running().map(AsRef::as_ref),
                    store,
                    restarts,
                    &policy,
                    &current,
                    now,
                ),
            }
        }
    };
    let mut observation = Observation {
        now,
        view_trusted: trusted,
        alive: view.map(|s| s.alive),
        pod: facts.clone(),
        // Read below, only if it would decide.
        node: NodeHealth::Unknown,
        // A Pod the API would refuse cannot be made either: a restart would leave the store
        // without one.
        pod_renderable: rendered.is_some()
            && !matches!(roll_held, Some(HoldReason::ReplacementRefused { .. })),
        history: History {
            last_restart: restarts
                .as_ref()
                .and_then(|restarts| restarts.of(store))
                .or(history.last_restart),
            ..history
        },
        paused: crate::crd::recovery_paused(store),
        // A manual restart waits while another Pod runs pfs for the store's id: it would make
        // the second one. The store has no Pod meanwhile (PodMissing).
        manual_restart: annotations
            .get(RESTART_ANNOTATION)
            .filter(|_| foreign_pfs.is_none())
            .cloned(),
        cluster,
    };
    let mut decision = recovery::decide(&observation, &policy);
    // An automatic restart needs the node of the Pod in contact: a silent node's Pods show what
    // its kubelet last reported, and a delete would not reach the container. The Node and
    // its kubelet's Lease are read fresh like the Pod, and only now: every other rule is decided
    // without them.
    // The kubelet is in contact if it renewed the node's Lease since the store went offline
    // (or was last restarted): judged against a read of the Lease taken since.
    let contact_since = decision.offline_since.map(|offline| {
        observation
            .history
            .last_restart
            .map_or(offline, |r| r.max(offline))
    });
    let pod_node = pod.as_ref().map(|existing| {
        existing
            .spec
            .as_ref()
            .and_then(|spec| spec.node_name.clone())
            .unwrap_or_else(|| store.spec.node_name.clone())
    });
    // A store the cluster freeze holds is looked at for its node too: one out of contact sets
    // the store aside from the freeze (NodeNotReady), so that a node that died with most of
    // the stores does not keep recovery frozen for the others until it returns.
    if decision.verdict == Verdict::Skip(recovery::SkipReason::ClusterFrozen)
        && let Some(node_name) = &pod_node
        && ctx
            .node_readiness
            .out_of_contact(&ctx.client, node_name, ctx.clock.now())
            .await
    {
        observation.node = NodeHealth::NotReady;
        decision = recovery::decide(&observation, &policy);
    }
    if decision.verdict == Verdict::Restart(RestartReason::Offline)
        && let (Some(node_name), Some(since)) = (&pod_node, contact_since)
    {
        let nodes: Api<Node> = Api::all(ctx.client.clone());
        let leases: Api<Lease> = Api::namespaced(ctx.client.clone(), pods::NODE_LEASE_NAMESPACE);
        let (node, lease) = under_restart_lock(futures::future::try_join(
            nodes.get_opt(node_name),
            leases.get_opt(node_name),
        ))
        .await?;
        let read_at = ctx.clock.now();
        let sighting = ctx.lease_sightings.of_episode(store, node_name, since);
        let (health, new_sighting) =
            pods::node_health(node.as_ref(), lease.as_ref(), sighting.as_ref(), read_at);
        if let Some(new_sighting) = new_sighting {
            ctx.lease_sightings
                .record(store, node_name, since, new_sighting);
        }
        observation.node = health;
        decision = recovery::decide(&observation, &policy);
    }
    // Like a rollout, a restart first asks whether the API would take its new Pod: one made
    // of a changed spec (its rollout held: paused, frozen, waiting for others), or the same
    // Pod as before, which a namespace's Pod Security level raised or an admission webhook
    // added since may refuse now. A store is not left without its pfs for a Pod that cannot
    // be made.
    if matches!(decision.verdict, Verdict::Restart(_))
        && !created_now
        && !matches!(roll_held, Some(HoldReason::ReplacementRefused { .. }))
        && let Some((hash, _)) = &rendered
    {
        let successor = pods::pod(store, hash, Predecessor::Unknown);
        let refusal = if roll_held.is_some() {
            under_restart_lock(refusal_of(&pods, &successor, pod.as_ref())).await?
        } else {
            // The same Pod as the running one, which the API took once: asked briefly, under
            // the restart lock as it is, and an answer that does not come, or is no refusal
            // (a timeout, a 5xx), is no reason to keep a hung pfs.
            let refusal = refusal_of(&pods, &successor, pod.as_ref());
            match tokio::time::timeout(SAME_POD_DRY_RUN, refusal).await {
                Ok(Ok(refusal)) => refusal,
                Ok(Err(error)) => {
                    debug!(store = %name, %namespace, %error, "the restart's dry run failed; restarting");
                    None
                }
                Err(_) => {
                    debug!(store = %name, %namespace, "the restart's dry run did not answer in time; restarting");
                    None
                }
            }
        };
        if let Some(why) = refusal {
            warn!(store = %name, %namespace, %why, "the restart's new pod would be refused; the running pod is kept");
            roll_held = Some(HoldReason::ReplacementRefused { why });
            observation.pod_renderable = false;
            decision = recovery::decide(&observation, &policy);
        }
    }
    // A Pod this reconcile created is the restart's new Pod (a manual restart of a store that had
    // none), not one it has yet to kill.
    if created_now {
        decision.unfinished = None;
    }
    // Before any further await (the node read above comes only with a restart, which never
    // waits for others): a store that becomes available meanwhile must find this one waiting.
    let waits_for_others = matches!(
        roll_held,
        Some(HoldReason::OthersUnavailable { .. } | HoldReason::DisruptionBudget { .. })
    ) || matches!(
        decision.verdict,
        Verdict::Skip(recovery::SkipReason::TooManyInFlight | recovery::SkipReason::ClusterFrozen)
    );
    ctx.waiting.set_waiting(
        &ObjectRef::from_obj(store),
        waits_for_others,
        matches!(roll_held, Some(HoldReason::DisruptionBudget { .. })),
    );
    let db = db_state(ctx.db.as_ref(), store.spec.store_id);
    let write_error = failed_write.as_ref().map(ToString::to_string);
    let compute = |restart: Option<&Restart>, pod: Option<&PodFacts>| {
        status::compute(&Facts {
            now,
            generation: store.metadata.generation,
            previous,
            view_trusted: trusted,
            no_stores_dir: snapshot.health.is_trusted() && !snapshot.view.stores_dir,
            view_distrust: snapshot.health.distrust_summary(),
            store: view,
            spec_trays: store.spec.trays.len(),
            pod_name: &pod_name,
            pod,
            pod_ready,
            pod_waiting: pod_waiting.as_deref(),
            decision: &decision,
            restart,
            policy: &policy,
            recovery_paused: observation.paused,
            db: &db,
            rollout_held: roll_held.as_ref().filter(|_| restart.is_none()),
            config_error: config_error.as_deref(),
            write_error: write_error.as_deref(),
            foreign_pfs: foreign_pfs.as_ref(),
            cordoned_node: node_cordoned.then_some(store.spec.node_name.as_str()),
            max_unavailable: ctx.settings.max_unavailable,
        })
    };

    // Checked again here: the reads above may have been long, and the term may have begun
    // stopping meanwhile.
    if matches!(decision.verdict, Verdict::Restart(_)) && ctx.draining.is_cancelled() {
        return Err(Error::TermEnded);
    }
    let new_status = if let Verdict::Restart(reason) = decision.verdict {
        let manual_token = (reason == RestartReason::Manual)
            .then(|| observation.manual_restart.clone())
            .flatten();
        let restart = Restart {
            at: now,
            manual_token,
            finishing: decision.finishes,
        };
        // The node read above, and the status write below, may take seconds: a view that lost
        // trust meanwhile, or an offline store whose pfs registered again, is not restarted on
        // the earlier observation. The reconcile requeued at once decides again.
        let changed_meanwhile = || {
            let latest = ctx.snapshots.borrow().clone();
            !knows_store(&latest, store.spec.store_id)
                || (reason == RestartReason::Offline && alive(&latest, store.spec.store_id))
        };
        let call_off = |failed_write: Option<Error>| {
            info!(store = %name, %namespace, "restart called off: the store's state changed while it was prepared");
            failed_write.map_or(Ok(Action::requeue(Duration::ZERO)), Err)
        };
        if changed_meanwhile() {
            return call_off(failed_write);
        }
        // The view may lag ZooKeeper: the server the operator's session is on can be behind
        // its leader, or cut off from it and not dropping its clients yet, and sends no events
        // meanwhile. Before a pfs is killed for being offline, ZooKeeper itself is asked.
        if reason == RestartReason::Offline
            && let Some(retry_in) = unconfirmed_offline(ctx, store).await
        {
            return failed_write.map_or(Ok(Action::requeue(retry_in)), Err);
        }
        // The question may have taken a while: the term may have begun stopping meanwhile.
        if ctx.draining.is_cancelled() {
            return Err(Error::TermEnded);
        }
        // Record first, act second: a leader that dies in between has written that it restarted
        // and which Pod it kills, so its successor finishes that restart instead of making
        // another. A restart being finished is recorded already, and is written all the same:
        // the write's version precondition is what proves the status it was decided from is
        // still the latest (a former leader's late write may have settled that restart, and a
        // finishing restart skips the grace, the backoff and the budget).
        let recorded = compute(Some(&restart), facts.as_ref());
        // Should the write land after this gives up, the restart stands recorded and the next
        // reconcile finishes it.
        let result = under_restart_lock(ctx.leading(apply_status(
            &stores,
            &name,
            baseline.version.as_deref(),
            &recorded,
        )))
        .await??;
        ctx.written.wrote(store, &recorded, result);
        // Other stores count the restart in flight from now, as its recorded status says,
        // whatever happens to the kill (a failure below must not leave it uncounted until the
        // store cache shows that status).
        if let Some(restarts) = restarts.as_mut() {
            let standing = alive_node(&ctx.snapshots.borrow(), store.spec.store_id);
            restarts.record(
                store,
                now,
                standing.exists.then_some(standing.session).flatten(),
            );
        }
        // A Pod this reconcile just created starts a fresh pfs: that is the restart asked for
        // (a manual one; an automatic one needs a running Pod), not a Pod to kill.
        let to_kill = facts.as_ref().filter(|_| !created_now);
        // Taken before the last look, as a rollout may hold it through slow calls: nothing
        // but the delete itself stands between that look and the kill.
        let mut rolls = match to_kill {
            Some(_) => {
                Some(under_restart_lock(async { Ok::<_, Error>(ctx.rolls.lock().await) }).await?)
            }
            None => None,
        };
        // Called off after the write, the restart stays recorded as unfinished: the next
        // reconcile finishes it only if it still holds.
        if changed_meanwhile() {
            return call_off(failed_write);
        }
        drop(restarts);
        // Whether the delete killed the pfs (asked its kubelet to).
        let mut killed = false;
        if let (Some(old), Some(mut rolls)) = (to_kill, rolls.take()) {
            // The Pod as it was read and judged, and no later version of it: one whose
            // container the kubelet restarted in place since runs a fresh pfs, and is judged
            // again.
            let mut kill = delete_exactly(Some(old.uid.clone()), Some(KILL_GRACE_SECONDS));
            if let Some(preconditions) = kill.preconditions.as_mut() {
                preconditions.resource_version = pod.as_ref().and_then(|p| p.resource_version());
            }
            // Other stores' rollouts count this one unavailable from the delete on, until the
            // Pod cache moves on; the lock is held through the delete so that none of them
            // decides in between.
            let deleted = ctx.leading(pods.delete(&pod_name, &kill)).await?;
            match deleted {
                Ok(_) => killed = true,
                // Gone already, or replaced since (another Pod has the name now, left as it
                // is): either way the store's Pod is made by the path that makes missing ones.
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                // A precondition: another Pod has the name now, or this one changed since it
                // was read.
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    let there = pods.get_opt(&pod_name).await?;
                    if there.as_ref().and_then(|p| p.uid()) == Some(old.uid.clone()) {
                        return call_off(failed_write);
                    }
                }
                // The restart is recorded but not done: the error is reported and, once the
                // backoff has passed, the next reconcile tries again. The Pod is not counted
                // as replaced: it may well still run, and a rollout held for it must go on
                // holding its new pfs.conf back (counted replaced, the next reconcile would
                // take the rollout for under way and apply the ConfigMap to the old Pod).
                // Should the delete have gone through all the same, the Pod cache shows it
                // gone within moments.
                Err(error) => return Err(error.into()),
            }
            rolls.insert(
                me.clone(),
                Replacement {
                    at: now,
                    uid: Some(old.uid.clone()),
                    confirmed: true,
                },
            );
        }
        let restarted_note = killed.then(|| {
            let offline_for = decision
                .offline_since
                .map(|since| now.duration_since(since).as_secs())
                .unwrap_or(0);
            let finishing = if decision.finishes {
                " (finishing the restart recorded earlier)"
            } else {
                ""
            };
            let why = match reason {
                RestartReason::Offline => format!(
                    "store {} offline in ZooKeeper for {offline_for}s while pod {pod_name} was running",
                    store.spec.store_id
                ),
                RestartReason::Manual => {
                    format!("restart requested by the {RESTART_ANNOTATION} annotation")
                }
            };
            ctx.metrics
                .restarts
                .get_or_create(&ReasonLabels {
                    reason: reason.as_str(),
                })
                .inc();
            info!(store = %name, %namespace, reason = reason.as_str(), "restarted pfs");
            format!(
                "{why}: pod {pod_name} killed (deleted with a {KILL_GRACE_SECONDS}s grace period){finishing}; \
                 its replacement is created once the kubelet has stopped it"
            )
        });
        // The store going offline is news even when it is restarted in the same look. Written
        // only now, with the restart lock released: an Event write the API server throttles
        // must not hold up other stores' restarts.
        let circumstances = announce::Circumstances {
            verdict: &decision.verdict,
            roll_held: None,
            restarted_now: true,
            max_unavailable: ctx.settings.max_unavailable,
            spec_trays: store.spec.trays.len(),
        };
        report_transitions(ctx, store, previous, &recorded, &circumstances).await;
        if let Some(note) = restarted_note {
            record(
                ctx,
                store,
                EventType::Warning,
                "StoreRestarted",
                "Restart",
                note,
            )
            .await;
        }
        None
    } else {
        drop(restarts);
        Some(compute(None, facts.as_ref()))
    };

    if let Some(new_status) = &new_status {
        if new_status != previous {
            let result = ctx
                .leading(apply_status(
                    &stores,
                    &name,
                    baseline.version.as_deref(),
                    new_status,
                ))
                .await??;
            ctx.written.wrote(store, new_status, result);
        }
        let circumstances = announce::Circumstances {
            verdict: &decision.verdict,
            roll_held: roll_held.as_ref(),
            restarted_now: false,
            max_unavailable: ctx.settings.max_unavailable,
            spec_trays: store.spec.trays.len(),
        };
        report_transitions(ctx, store, previous, new_status, &circumstances).await;
    }
    // A store on the way to an automatic restart has its node's Lease read once the episode
    // began, so that its restart, when due, can tell a kubelet in contact at once.
    if let (Some(node_name), Some(since)) = (&pod_node, contact_since)
        && takes_a_lease_sighting(&decision.verdict)
        && ctx
            .lease_sightings
            .of_episode(store, node_name, since)
            .is_none()
    {
        let leases: Api<Lease> = Api::namespaced(ctx.client.clone(), pods::NODE_LEASE_NAMESPACE);
        match leases.get_opt(node_name).await {
            Ok(lease) => ctx.lease_sightings.record(
                store,
                node_name,
                since,
                LeaseSighting::of(lease.as_ref(), ctx.clock.now()),
            ),
            // The restart, when due, takes one then.
            Err(error) => debug!(store = %name, node = %node_name, %error, "node lease not read"),
        }
    }
    let labels = StoreLabels {
        namespace: namespace.clone(),
        name: name.clone(),
        store_id: store.spec.store_id.to_string(),
    };
    // A reconcile that restarted the store wrote its status on the way: the gauges follow at
    // the next one (requeued at once), not zeroed meanwhile.
    if trusted && let Some(status) = &new_status {
        let condition = |kind: &str, value: &str| status.condition(kind, value);
        // The gauges are the conditions: a spec that cannot be rendered holds the rollout
        // (UpToDate=False, ConfigInvalid) as surely as another store's absence does.
        // Alive as the Alive condition has it: an `alive` left by the replaced pfs's session
        // (PredecessorSession) is not the store up again.
        let alive = condition("Alive", "True").is_some();
        ctx.metrics.observe_store(
            &labels,
            alive,
            view.filter(|_| alive).map_or(0, |s| s.trays_online()),
            condition("RecoveryFrozen", "True").map(|c| c.reason.as_str()),
            condition("UpToDate", "False").is_some(),
        );
    } else if !trusted {
        ctx.metrics.forget_liveness(&labels);
    }

    // Whether this store serves, for the rollouts held on its account. A new pfs registering
    // changes `alive`, which wakes this reconcile; a Pod that can only settle by time is looked
    // at again when it has.
    let roll_policy = roll_policy(&ctx.settings);
    // A store ZooKeeper refuses to read counts as unavailable, as other stores' rollouts count
    // it: recorded so, its being read again wakes them.
    let alive_now = alive_node(&snapshot, store.spec.store_id);
    if snapshot.knows_stores() {
        let available = rollout::available(alive_now, facts.as_ref(), now, &roll_policy);
        ctx.waiting.observe(&ObjectRef::from_obj(store), available);
        // The Pod's serving gate follows the same answer. Not on a view untrusted about this
        // store (what the Pod last said stands: a store ZooKeeper refuses to read is not
        // known to be down), nor for a Pod on its way out or not the store's own.
        let gated_pod = pod.as_ref().filter(|pod| {
            trusted
                && pod.metadata.deletion_timestamp.is_none()
                && owned_by(pod, store)
                && !matches!(decision.verdict, Verdict::Restart(_))
        });
        if let Some(patch) = gated_pod.and_then(|pod| pods::serving_patch(pod, available, now)) {
            keep_going(
                mark_serving(ctx, &pods, &pod_name, &patch).await,
                &mut failed_write,
            )?;
        }
    }
    let settles_in = rollout::settles_in(alive_now, facts.as_ref(), now, &roll_policy)
        .and_then(|left| Duration::try_from(left).ok());
    let requeue = match decision.verdict {
        // Nodes are not watched: the kubelet's next renewal is seen at the next look. A kubelet
        // renews every quarter of its Lease's duration (`until` is at most one duration away),
        // so looking that often sees a renewal well within the duration, as it must count.
        Verdict::Wait {
            until,
            reason: recovery::SkipReason::AwaitingNodeContact,
        } => Duration::try_from(
            (until.duration_since(now) / 4)
                .clamp(SignedDuration::from_millis(100), NODE_CONTACT_RECHECK),
        )
        .unwrap_or(NODE_CONTACT_RECHECK.unsigned_abs()),
        Verdict::Wait { until, .. } => Duration::try_from(
            until
                .duration_since(now)
                .max(SignedDuration::from_millis(100)),
        )
        .unwrap_or(ctx.settings.requeue),
        // A restart: look again soon, to see the Pod go and make the new one.
        Verdict::Restart(_) => Duration::from_secs(1),
        // Woken when another store becomes available; this is the safety net.
        _ if waits_for_others
            || matches!(
                roll_held,
                Some(
                    HoldReason::ClusterFrozen
                        | HoldReason::WithinGracePeriod
                        // Nodes are not watched.
                        | HoldReason::NodeUnreachable
                        | HoldReason::NodeCordoned
                )
            ) =>
        {
            spread(HELD_RECHECK, store)
        }
        // Looked at again when enough of the hour's restarts have aged out.
        Verdict::Skip(recovery::SkipReason::RestartBudgetExhausted) => {
            recovery::budget_frees_at(&observation.history.recent_restarts, now, &policy)
                .and_then(|at| Duration::try_from(at.duration_since(now)).ok())
                .map_or(ctx.settings.requeue, |left| {
                    ctx.settings.requeue.min(left + Duration::from_millis(50))
                })
        }
        // Nodes are not watched: a node that reports again, or is uncordoned, is seen at the
        // next look.
        Verdict::Skip(recovery::SkipReason::NodeNotReady) => spread(HELD_RECHECK, store),
        _ if node_cordoned => spread(HELD_RECHECK, store),
        _ if config_error.is_some() => spread(HELD_RECHECK, store),
        // What made the API refuse may change without the store changing (a namespace's Pod
        // Security level, a LimitRange, an admission policy): asked again, not too often, as
        // each ask is a dry-run create.
        _ if matches!(roll_held, Some(HoldReason::ReplacementRefused { .. })) => {
            spread(REFUSED_RECHECK, store)
        }
        _ => spread(ctx.settings.requeue, store),
    };
    let requeue = match settles_in {
        Some(left) => requeue.min(left + Duration::from_millis(50)),
        None => requeue,
    };
    // A Pod going away wakes its store when it is gone. Should that event be missed (a watch
    // that relists reports no deletions) the store would wait without a Pod: it looks again
    // soon, which also sees the Pod become stuck.
    let requeue = if facts.as_ref().is_some_and(|pod| pod.terminating) {
        requeue.min(TERMINATING_RECHECK)
    } else {
        requeue
    };
    let requeue = if foreign_pfs.is_some() {
        requeue.min(FOREIGN_POD_RECHECK)
    } else {
        requeue
    };
    let requeue = match replacement_due_in {
        Some(left) => requeue.min(left + Duration::from_millis(50)),
        None => requeue,
    };
    // A free-size change held back is written when due, whatever else happens meanwhile.
    let free_sizes_due_in = new_status
        .as_ref()
        .filter(|_| trusted)
        .and_then(|status| status::free_sizes_due(status, view))
        .and_then(|due| Duration::try_from(due.duration_since(now)).ok());
    let requeue = match free_sizes_due_in {
        Some(left) => requeue.min(left + Duration::from_millis(50)),
        None => requeue,
    };
    // Starting and Recovering end by time alone.
    let phase_changes_in = status::phase_changes_at(
        new_status.as_ref().unwrap_or(previous),
        facts.as_ref(),
        &policy,
        now,
    )
    .and_then(|at| Duration::try_from(at.duration_since(now)).ok());
    let requeue = match phase_changes_in {
        Some(left) => requeue.min(left + Duration::from_millis(50)),
        None => requeue,
    };
    if let Some(error) = failed_write {
        return Err(error);
    }
    Ok(Action::requeue(requeue.min(ctx.settings.requeue)))
}

/// A safety-net recheck `period`, shortened by up to a fifth by a fraction of the store's own
/// (its uid's): stores reconciled together (all of them, after a ZooKeeper reconnect or a
/// takeover) do not all look again in the same instant, period after period, but spread out
/// over a fifth of it. Shortened only, so that `--requeue-interval` stays the longest any store
/// goes unexamined.
fn spread(period: Duration, store: &PureFlashStore) -> Duration {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    store.metadata.uid.hash(&mut hasher);
    store.metadata.name.hash(&mut hasher);
    // In [0, 1): the top 53 bits, as an f64 holds them exactly.
    let fraction = (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64;
    period.mul_f64(1.0 - fraction / 5.0)
}

/// Why the API would refuse to create `pod` in place of `replaced`, if it would: a dry run of
/// its create under a generated name (the real one is taken by the Pod it is to replace) runs
/// validation and admission. A quota's refusal holds only a Pod that asks for more than the one
/// it replaces (which the quota still counts); errors that say nothing about the Pod
/// (unavailable, throttled) are returned as errors.
async fn refusal_of(
    pods: &Api<Pod>,
    pod: &Pod,
    replaced: Option<&Pod>,
) -> Result<Option<String>, Error> {
    let mut probe = pod.clone();
    let name = probe.metadata.name.take().unwrap_or_default();
    probe.metadata.generate_name = Some(format!("{name}-"));
    let params = PostParams {
        dry_run: true,
        field_manager: Some(MANAGER.to_owned()),
    };
    match pods.create(&params, &probe).await {
        Ok(_) => Ok(None),
        // A ResourceQuota still counts the Pod to be replaced: a successor that asks for no
        // more than it fits once it is gone. One that asks for more may not: it would leave
        // the store without a Pod, so it is held like any other refusal.
        Err(kube::Error::Api(status))
            if status.code == 403
                && status.message.contains("exceeded quota")
                && replaced.is_some_and(|replaced| pods::asks_no_more_than(pod, replaced)) =>
        {
            Ok(None)
        }
        Err(kube::Error::Api(status)) if matches!(status.code, 400 | 403 | 422) => {
            Ok(Some(with_name(&status.message, &name)))
        }
        Err(error) => Err(error.into()),
    }
}

/// `message` about the dry run's Pod, with the name the server generated for it (`p-x7k2q`)
/// read as the real one (`p`), quoted or not (admission webhooks word their denials as they
/// like): a message that changed with every try would rewrite the status, and so wake the
/// store again, at each reconcile.
fn with_name(message: &str, name: &str) -> String {
    /// The API server keeps at most this much of a generateName (63 less the suffix)…
    const KEPT_PREFIX: usize = 58;
    /// …and appends this many random characters.
    const SUFFIX: usize = 5;
    let is_name_byte =
        |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.';
    let prefix = format!("{name}-");
    // Names are ASCII (DNS subdomains), so any byte length is a character boundary.
    let generated = &prefix[..prefix.len().min(KEPT_PREFIX)];
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find(generated) {
        let after = &rest[at + generated.len()..];
        let bytes = after.as_bytes();
        // A name ends where no name character follows, or at a sentence's full stop.
        let ends_at = |i: usize| match bytes.get(i) {
            None => true,
            Some(b'.') => bytes.get(i + 1).is_none_or(|&next| !is_name_byte(next)),
            Some(&next) => !is_name_byte(next),
        };
        let whole_name = bytes.get(..SUFFIX).is_some_and(|suffix| {
            suffix
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        }) && ends_at(SUFFIX);
        // Not preceded by a name character either: `xp-…` is not about `p`.
        let starts_a_name = rest.as_bytes()[..at]
            .last()
            .is_none_or(|&before| !is_name_byte(before));
        if whole_name && starts_a_name {
            out.push_str(&rest[..at]);
            out.push_str(name);
            rest = &after[SUFFIX..];
        } else {
            out.push_str(&rest[..at + generated.len()]);
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Writes `status` if the store is still at `based_on` (the baseline's version); answers the
/// version the write produced.
async fn apply_status(
    stores: &Api<PureFlashStore>,
    name: &str,
    based_on: Option<&str>,
    status: &PureFlashStoreStatus,
) -> Result<Option<String>, Error> {
    let mut metadata = json!({"name": name});
    if let Some(version) = based_on {
        // In an applied configuration, a resourceVersion is a precondition.
        metadata["resourceVersion"] = json!(version);
    }
    let body = json!({
        "apiVersion": "pureflash.io/v1alpha1",
        "kind": "PureFlashStore",
        "metadata": metadata,
        "status": status,
    });
    let written = stores
        .patch_status(
            name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(body),
        )
        .await;
    match written {
        Ok(written) => Ok(written.resource_version()),
        Err(kube::Error::Api(status)) if status.code == 409 => Err(Error::StaleStatus),
        Err(error) => Err(error.into()),
    }
}

/// How long ZooKeeper may take to confirm that a store is offline before a restart.
const LIVENESS_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Asks ZooKeeper itself, its leader caught up with, whether the store the view has offline is
/// offline; `None` if it is. Otherwise the restart is called off, said so (an Event, the
/// `recovery_skipped` metric) and looked at again after the delay returned: soon when the view
/// just lags (its events follow), later when ZooKeeper could not answer.
async fn unconfirmed_offline(ctx: &Context, store: &PureFlashStore) -> Option<Duration> {
    // An id the schema refuses is never in ZooKeeper either: nothing to ask.
    let id = zk_store_id(store.spec.store_id)?;
    let (note, retry_in) = match ctx.liveness.alive(id, LIVENESS_PROBE_TIMEOUT).await {
        Ok(false) => return None,
        Ok(true) => (
            format!(
                "restart called off: ZooKeeper has store {id} alive, the operator's view lags behind it"
            ),
            Duration::from_secs(1),
        ),
        Err(error) => (
            format!(
                "restart called off: ZooKeeper could not confirm that store {id} is offline: {error}"
            ),
            Duration::from_secs(5),
        ),
    };
    warn!(store = %store.name_any(), namespace = ?store.namespace(), "{note}");
    ctx.metrics
        .recovery_skipped
        .get_or_create(&ReasonLabels {
            reason: "Unconfirmed",
        })
        .inc();
    // Written under the cluster-wide restart lock: a slow Event does not hold it long.
    let event = record(
        ctx,
        store,
        EventType::Warning,
        "RecoveryUnconfirmed",
        "Restart",
        note,
    );
    let _ = tokio::time::timeout(Duration::from_secs(2), event).await;
    Some(retry_in)
}

/// Writes what a status change is announced with (see [`announce`]).
async fn report_transitions(
    ctx: &Context,
    store: &PureFlashStore,
    previous: &PureFlashStoreStatus,
    status: &PureFlashStoreStatus,
    circumstances: &announce::Circumstances<'_>,
) {
    let told = announce::announcements(previous, status, circumstances);
    if let Some(reason) = told.skip_counted {
        ctx.metrics
            .recovery_skipped
            .get_or_create(&ReasonLabels {
                reason: reason.as_str(),
            })
            .inc();
    }
    for event in told.events {
        record(
            ctx,
            store,
            event.kind,
            &event.reason,
            event.action,
            event.note,
        )
        .await;
    }
    if told.went_offline {
        warn!(store = %store.name_any(), "store offline");
    }
}

/// Waits until the Pod and ConfigMap caches hold their first full list.
///
/// A term's first reconciles start while those lists are still loading. The caches are not
/// only a saving of requests: what other stores' Pods and ConfigMaps hold is read from them
/// alone (a Pod left running pfs for the store's id, a disk another store serves), and read
/// half-loaded they would let a second pfs start for an id or on a disk. The reflectors are
/// driven by the controller alongside the reconciles, so waiting here does not stop them.
async fn owned_caches_loaded(ctx: &Context) -> Result<(), Error> {
    const WARN_AFTER: Duration = Duration::from_secs(30);
    // Not past the start of the term's end: once it begins to stop, the controller no longer
    // polls its watches, and these caches stay as they are. A cache whose reflector is gone:
    // so is the term.
    let both = async {
        tokio::select! {
            loaded = async {
                cache_loaded(&ctx.pods).await?;
                cache_loaded(&ctx.config_maps).await
            } => loaded.map_err(|_| Error::TermEnded),
            () = ctx.draining.cancelled() => Err(Error::TermEnded),
        }
    };
    tokio::pin!(both);
    match tokio::time::timeout(WARN_AFTER, &mut both).await {
        Ok(loaded) => loaded,
        Err(_) => {
            warn!(
                "the Pod and ConfigMap caches have not loaded within {WARN_AFTER:?} (may the operator list them?); reconciles wait for them"
            );
            both.await
        }
    }
}

/// A failed write the reconcile goes on after: the first one is kept in `failed`, to be
/// returned once the status is written. A term that ended stops the reconcile at once.
fn keep_going<T>(result: Result<T, Error>, failed: &mut Option<Error>) -> Result<Option<T>, Error> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(Error::TermEnded) => Err(Error::TermEnded),
        Err(error) => {
            failed.get_or_insert(error);
            Ok(None)
        }
    }
}

/// Writes a Pod's serving gate condition (`patch`, from [`pods::serving_patch`]). A Pod gone or
/// replaced meanwhile (its uid precondition fails) needs nothing: its successor's own reconcile
/// decides about that one.
async fn mark_serving(
    ctx: &Context,
    pods: &Api<Pod>,
    pod_name: &str,
    patch: &serde_json::Value,
) -> Result<(), Error> {
    match ctx
        .leading(pods.patch_status(pod_name, &PatchParams::default(), &Patch::Strategic(patch)))
        .await?
    {
        Ok(_) => Ok(()),
        // A patch carries no preconditions: the uid it sets is refused by validation as a
        // change of an immutable field (422).
        Err(kube::Error::Api(status))
            if status.code == 404
                || (status.code == 422 && status.message.contains("metadata.uid")) =>
        {
            Ok(())
        }
        // Not the store's failure (its status and recovery go on): an operator run with an
        // older chart's RBAC, whose gated Pods then never read Ready.
        Err(kube::Error::Api(status)) if status.code == 403 => {
            warn!(pod = %pod_name, error = %status.message, "the pod's serving gate cannot be written (RBAC for pods/status patch?); it reads not Ready, so disruption budgets count it down");
            Ok(())
        }
        Err(error) => Err(error.into()),
    }
}

/// Makes `found` the store's Pod by its owner references, at the version it was read at;
/// `None` when there is nothing to adopt any more (gone, owned meanwhile). A Pod that changed
/// since (a cache behind) is read again and tried once more: without an owner, its changes
/// wake no store, so a conflict left for later would wait for the periodic requeue.
async fn adopt(
    ctx: &Context,
    pods: &Api<Pod>,
    store: &PureFlashStore,
    mut found: Pod,
) -> Result<Option<Pod>, Error> {
    let name = found.name_any();
    for attempt in 0..2 {
        let Some(owners) = pods::adoption(&found, store) else {
            return Ok(None);
        };
        let patch = json!({"metadata": {
            "resourceVersion": found.resource_version(),
            "ownerReferences": owners,
        }});
        match ctx
            .leading(pods.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)))
            .await?
        {
            Ok(adopted) => return Ok(Some(adopted)),
            Err(kube::Error::Api(status)) if status.code == 404 => return Ok(None),
            Err(kube::Error::Api(status)) if status.code == 409 && attempt == 0 => {
                match pods.get_opt(&name).await? {
                    Some(again) if again.metadata.deletion_timestamp.is_none() => found = again,
                    _ => return Ok(None),
                }
            }
            Err(error) => return Err(error.into()),
        }
    }
    unreachable!("the second attempt returns")
}

/// Creates a store's Pod; `None` when one exists already. Never an apply: applied onto a Pod
/// that exists after all (created by a former leader meanwhile, or kept by a finalizer after a
/// delete) it would merge into that Pod, stamping the current configuration hash and
/// predecessor on a pfs started with others, and its image change would be taken in place.
async fn create_pod(ctx: &Context, pods: &Api<Pod>, pod: &Pod) -> Result<Option<Pod>, Error> {
    let params = PostParams {
        dry_run: false,
        field_manager: Some(MANAGER.to_owned()),
    };
    match ctx.leading(pods.create(&params, pod)).await? {
        Ok(created) => Ok(Some(created)),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(None),
        Err(error) => Err(error.into()),
    }
}

/// Retries of a failing store's reconcile start this soon and back off to this.
const RETRY_INITIAL: Duration = Duration::from_secs(2);
const RETRY_MAX: Duration = Duration::from_secs(120);

/// A status write refused for a stale version is retried this much sooner than a failure: the
/// watch delivers the newer version within milliseconds, and the store's status waits on it.
const STALE_STATUS_SPEEDUP: u32 = 8;

/// Requeue after a failed reconcile, later after each consecutive failure.
pub fn error_policy(store: Arc<PureFlashStore>, error: &Error, ctx: Arc<Context>) -> Action {
    if let Error::TermEnded = error {
        // A term that really ended takes its controller with it, requeue and all. But the
        // deadline may have lapsed only to be met by a renewal landing at that very moment
        // (after a stall, say): the term goes on, and this store must still be looked at
        // again soon, the ZooKeeper change that woke it being told only once.
        return Action::requeue(RETRY_INITIAL);
    }
    let retry_in = {
        let mut failures = ctx.failures.lock().expect("failures");
        let key = ObjectRef::from_obj(store.as_ref());
        forget_another_object(&mut failures, &key);
        failures
            .entry(key)
            .or_insert_with(|| Backoff::new(RETRY_INITIAL, RETRY_MAX))
            .next_delay()
    };
    if let Error::StaleStatus = error {
        // Not a failure to show users: someone (a user's edit, a former leader's late write)
        // changed the store after the cache this status came from. Still backed off, should
        // the cache never catch up.
        debug!(store = %store.name_any(), "status based on a stale version; recomputing");
        return Action::requeue(retry_in / STALE_STATUS_SPEEDUP);
    }
    warn!(store = %store.name_any(), category = error.category(), %error, "reconcile failed; retrying");
    // Users see failures where they look (kubectl describe); the recorder folds repeats into
    // the first failure's Event series and cuts long messages to the API's limit.
    let note = error.to_string();
    tokio::spawn(async move {
        record(
            &ctx,
            &store,
            EventType::Warning,
            "ReconcileFailed",
            "Reconcile",
            note,
        )
        .await;
    });
    Action::requeue(retry_in)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{Phase, PureFlashStoreSpec};

    #[tokio::test]
    async fn a_node_the_api_fails_to_read_for_a_moment_is_answered_with_its_last_address() {
        use kube::api::PostParams;
        use kube_emulator::{Action, Emulator, Matcher};

        let emulator = Emulator::start().await.unwrap();
        let client = Client::try_from(kube::Config::new(emulator.url().parse().unwrap())).unwrap();
        let nodes: Api<Node> = Api::all(client.clone());
        for (name, address) in [("n1", "10.0.0.1"), ("n2", "10.0.0.2")] {
            let node: Node = serde_json::from_value(serde_json::json!({
                "metadata": {"name": name},
                "status": {"addresses": [{"type": "InternalIP", "address": address}]},
            }))
            .unwrap();
            nodes.create(&PostParams::default(), &node).await.unwrap();
        }
        let addresses = NodeAddresses::default();
        let found = |address: &str| NodeLookup::Found(Some(address.to_owned()));
        let lookup = async |node: &str| addresses.lookup(&client, node, Duration::ZERO).await;
        assert_eq!(lookup("n1").await.unwrap(), found("10.0.0.1"));

        let failing = || Matcher::verb("get").on("nodes");
        emulator.faults().inject(failing(), Action::Fail(500), 2);
        assert_eq!(lookup("n1").await.unwrap(), found("10.0.0.1"));
        // Never read: nothing to answer with.
        assert!(lookup("n2").await.is_err());
        assert_eq!(emulator.faults().pending(), 0);
        // Refused, not failing for a moment (a permission taken away): the error is told.
        emulator.faults().inject(failing(), Action::Fail(403), 1);
        assert!(lookup("n1").await.is_err());
        // Read again once the API answers: a changed address is seen.
        let mut n1 = nodes.get("n1").await.unwrap();
        n1.status.as_mut().unwrap().addresses.as_mut().unwrap()[0].address = "10.0.0.9".into();
        nodes
            .replace_status("n1", &PostParams::default(), &n1)
            .await
            .unwrap();
        assert_eq!(lookup("n1").await.unwrap(), found("10.0.0.9"));
        // Gone is gone, not answered from memory.
        nodes.delete("n1", &Default::default()).await.unwrap();
        assert_eq!(lookup("n1").await.unwrap(), NodeLookup::Missing);
    }

    #[test]
    fn an_eviction_names_the_pod_by_uid_and_refuses_unknown_fields() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "s-1-pfs", "namespace": "pf", "uid": "u-1",
                "resourceVersion": "41"},
        }))
        .unwrap();
        let request = eviction_request(&pod).unwrap();
        assert_eq!(request.method(), http::Method::POST);
        assert_eq!(
            request.uri().to_string(),
            "/api/v1/namespaces/pf/pods/s-1-pfs/eviction?fieldValidation=Strict"
        );
        let body: serde_json::Value = serde_json::from_slice(request.body()).unwrap();
        assert_eq!(
            body,
            json!({
                "apiVersion": "policy/v1",
                "kind": "Eviction",
                "metadata": {"name": "s-1-pfs", "namespace": "pf"},
                "deleteOptions": {"preconditions": {"uid": "u-1"}},
            })
        );
    }

    #[test]
    fn only_a_429_with_a_budget_cause_is_a_budget_refusal() {
        let status = |code: u16, causes: serde_json::Value| {
            serde_json::from_value::<kube::core::Status>(json!({
                "status": "Failure", "code": code, "reason": "TooManyRequests",
                "message": "Cannot evict pod as it would violate the pod's disruption budget.",
                "details": {"causes": causes},
            }))
            .unwrap()
        };
        let budget = json!([{"reason": "DisruptionBudget",
            "message": "The disruption budget pfs needs 2 healthy pods and has 2 currently"}]);
        assert!(budget_refusal(&status(429, budget.clone())));
        // The API server shedding load (priority and fairness): no cause.
        assert!(!budget_refusal(&status(429, json!([]))));
        assert!(!budget_refusal(&status(500, budget)));
    }

    #[test]
    fn a_pod_is_the_stores_own_only_under_its_controlling_owner_reference() {
        let store: PureFlashStore = serde_json::from_value(serde_json::json!({
            "apiVersion": "pureflash.io/v1alpha1",
            "kind": "PureFlashStore",
            "metadata": {"name": "s", "namespace": "pf", "uid": "now"},
            "spec": {"storeId": 1, "nodeName": "n", "trays": [{"device": "/dev/sda"}]},
        }))
        .unwrap();
        let pod = |uid: &str, controller: bool| -> Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "s-pfs", "ownerReferences": [{
                    "apiVersion": "pureflash.io/v1alpha1", "kind": "PureFlashStore",
                    "name": "s", "uid": uid, "controller": controller,
                }]},
            }))
            .unwrap()
        };
        assert!(owned_by(&pod("now", true), &store));
        assert!(
            !owned_by(&pod("before", true), &store),
            "the store deleted and made anew"
        );
        assert!(!owned_by(&pod("now", false), &store));
    }

    #[test]
    fn a_change_of_the_db_sync_wakes_the_stores_it_concerns() {
        let (tx, rx) = watch::channel(DbSyncStatus::default());
        let seen = |tx: &watch::Sender<DbSyncStatus>, change: &dyn Fn(&mut DbSyncStatus)| {
            let before = DbSeen::of(&rx);
            tx.send_modify(|s| change(s));
            DbSeen::of(&rx).wake(&before)
        };
        // Pending to synced: every store's condition.
        assert_eq!(
            seen(&tx, &|s| s.last_success =
                Some(std::time::SystemTime::now())),
            DbWake::Everyone
        );
        // Another pass, nothing else: nobody.
        assert_eq!(seen(&tx, &|s| s.rows_written += 3), DbWake::Nobody);
        // A store held back, another's reason changed, one let go: those.
        tx.send_modify(|s| {
            s.held = Arc::new(BTreeMap::from([(1, "a".into()), (2, "b".into())]));
        });
        assert_eq!(
            seen(&tx, &|s| {
                s.held = Arc::new(BTreeMap::from([(2, "c".into()), (3, "d".into())]));
            }),
            DbWake::Stores(BTreeSet::from([1, 2, 3]))
        );
        // The same held stores published anew: nobody.
        assert_eq!(
            seen(&tx, &|s| {
                s.held = Arc::new(BTreeMap::from([(2, "c".into()), (3, "d".into())]));
            }),
            DbWake::Nobody
        );
        // Every store behind, or failing: everyone.
        assert_eq!(
            seen(&tx, &|s| s.behind = Some("x".into())),
            DbWake::Everyone
        );
        // A failed pass or two (retried at once): nobody. Failing on: everyone.
        let fail = |s: &mut DbSyncStatus| {
            s.last_error = Some("x".into());
            s.failed_in_a_row += 1;
        };
        for _ in 1..FAILED_PASSES_SHOWN {
            assert_eq!(seen(&tx, &fail), DbWake::Nobody);
        }
        let db = Some(&rx);
        assert!(!matches!(db_state(db, 2), DbState::Failing(_)));
        assert_eq!(seen(&tx, &fail), DbWake::Everyone);
        assert!(matches!(db_state(db, 2), DbState::Failing(_)));
        tx.send_modify(|s| {
            s.last_error = None;
            s.failed_in_a_row = 0;
            s.behind = None;
        });
        assert_eq!(db_state(db, 2), DbState::Held("c".into()));
        assert_eq!(db_state(db, 7), DbState::Synced);
    }

    #[test]
    fn stores_look_again_at_times_of_their_own_within_the_period() {
        let store = |uid: usize| -> PureFlashStore {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "pureflash.io/v1alpha1",
                "kind": "PureFlashStore",
                "metadata": {"name": format!("store-{uid}"), "namespace": "ns", "uid": format!("uid-{uid}")},
                "spec": {"storeId": 1, "nodeName": "n", "trays": [{"device": "/dev/sdb"}]},
            }))
            .unwrap()
        };
        let period = Duration::from_secs(300);
        let rechecks: Vec<Duration> = (0..1000).map(|i| spread(period, &store(i))).collect();
        assert!(
            rechecks
                .iter()
                .all(|r| *r <= period && *r > period.mul_f64(0.8))
        );
        // Each store keeps its own; together they cover the fifth of the period evenly.
        assert_eq!(spread(period, &store(7)), rechecks[7]);
        let in_tenths = |low: f64, high: f64| {
            rechecks
                .iter()
                .filter(|r| {
                    let f = r.as_secs_f64() / period.as_secs_f64();
                    f > 1.0 - high && f <= 1.0 - low
                })
                .count()
        };
        for tenth in 0..2 {
            let low = f64::from(tenth) / 10.0;
            let count = in_tenths(low, low + 0.1);
            assert!((400..=600).contains(&count), "{count} in {low}..");
        }
    }

    #[test]
    fn a_refusal_names_the_pod_not_the_dry_runs_generated_name() {
        assert_eq!(
            with_name(
                "Pod \"store-1-pfs-x7k2q\" is invalid: spec.containers[0].resources.requests: Invalid value: \"8Gi\"",
                "store-1-pfs"
            ),
            "Pod \"store-1-pfs\" is invalid: spec.containers[0].resources.requests: Invalid value: \"8Gi\""
        );
        assert_eq!(
            with_name("pods \"p-abcde\" is forbidden: violates PodSecurity", "p"),
            "pods \"p\" is forbidden: violates PodSecurity"
        );
        assert_eq!(with_name("no name here", "p"), "no name here");
        // Unquoted, as admission webhooks (Kyverno, say) write it, and more than once.
        assert_eq!(
            with_name(
                "admission webhook denied the request: policy Pod/pf/store-1-pfs-x7k2q for resource violation: store-1-pfs-x7k2q needs a label",
                "store-1-pfs"
            ),
            "admission webhook denied the request: policy Pod/pf/store-1-pfs for resource violation: store-1-pfs needs a label"
        );
        // At the end of a sentence.
        assert_eq!(
            with_name("denied: pod store-1-pfs-x7k2q.", "store-1-pfs"),
            "denied: pod store-1-pfs."
        );
        // A long name: the server keeps the first 58 characters of the generateName.
        let long = format!("{}-pfs", "s".repeat(60));
        let generated = format!("{}x7k2q", &format!("{long}-")[..58]);
        assert_eq!(
            with_name(&format!("pods \"{generated}\" is forbidden"), &long),
            format!("pods \"{long}\" is forbidden")
        );
        // Other objects whose names begin alike stay as they are.
        for untouched in [
            "configmap store-1-pfs-conf is missing",
            "pod store-1-pfs-x7k2q9 is other",
            "pod xstore-1-pfs-x7k2q is other",
            "pod store-1-pfs-x7K2q is other",
            "pod store-1-pfs-x7",
        ] {
            assert_eq!(with_name(untouched, "store-1-pfs"), untouched);
        }
    }

    #[test]
    fn a_pfs_runs_no_longer_than_its_pod_exists_whatever_the_kubelets_clock() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        let at = |second: i64| Time(Timestamp::from_second(1_790_000_000 + second).unwrap());
        let pod = |created: Option<Time>, started: Time| -> Pod {
            serde_json::from_value(json!({
                "metadata": {"name": "store-1-pfs", "uid": "u1", "creationTimestamp": created},
                "status": {"phase": "Running", "containerStatuses": [{
                    "name": pods::CONTAINER, "image": "pfs", "imageID": "", "ready": true,
                    "restartCount": 0, "state": {"running": {"startedAt": started}},
                }]},
            }))
            .unwrap()
        };
        // The node's clock runs 25 s behind the API server's.
        let behind = pod_facts(&pod(Some(at(100)), at(80))).0;
        assert_eq!(behind.running_since, Some(at(100).0));
        let in_step = pod_facts(&pod(Some(at(100)), at(103))).0;
        assert_eq!(in_step.running_since, Some(at(103).0));
        let unknown_creation = pod_facts(&pod(None, at(80))).0;
        assert_eq!(unknown_creation.running_since, Some(at(80).0));
    }

    #[test]
    fn a_store_made_anew_under_its_name_does_not_inherit_its_predecessors_backoff() {
        let store = |uid: &str| -> ObjectRef<PureFlashStore> {
            let mut key = ObjectRef::new("s").within("pf");
            key.extra.uid = Some(uid.into());
            key
        };
        let replacements = StoppedPodReplacements::default();
        let now = std::time::Instant::now();
        replacements.replaced(store("old"), now);
        replacements.replaced(store("old"), now);
        assert!(replacements.due_in(&store("old"), now).is_some());
        assert_eq!(replacements.due_in(&store("new"), now), None);
        // Replaced anew, it starts from the first delay.
        replacements.replaced(store("new"), now);
        assert_eq!(
            replacements.due_in(&store("new"), now),
            Some(STOPPED_POD_RETRY_INITIAL)
        );
    }

    /// A pfs the kubelet restarted in place on a node whose clock runs behind gets its whole
    /// start grace: the start this term saw is timed by its own clock too.
    #[test]
    fn a_witnessed_container_start_is_timed_by_the_operators_clock_too() {
        let at = |second: i64| Timestamp::from_second(1_790_000_000 + second).unwrap();
        let of = |uid: &str, restarts: i32, started: Option<i64>| PodFacts {
            uid: uid.into(),
            phase: "Running".into(),
            terminating: false,
            stop_due: None,
            running_since: started.map(at),
            container_restarts: restarts,
            predecessor: Default::default(),
        };
        let facts = |restarts, started| of("u1", restarts, started);
        let since = |facts: PodFacts| facts.running_since;
        let starts = ContainerStarts::default();
        // First seen running: its start was not witnessed, and stands as stamped.
        assert_eq!(
            since(starts.observe(facts(0, Some(100)), at(200))),
            Some(at(100))
        );
        // Restarted in place at 210 by the API server's clock; the node stamps 150.
        assert_eq!(
            since(starts.observe(facts(1, Some(150)), at(210))),
            Some(at(210))
        );
        assert_eq!(
            since(starts.observe(facts(1, Some(150)), at(230))),
            Some(at(210))
        );
        assert_eq!(since(starts.apply(facts(1, Some(150)))), Some(at(210)));
        // A later run not yet observed is not given this run's witnessed start.
        assert_eq!(since(starts.apply(facts(2, Some(140)))), Some(at(140)));
        // A cached answer from before the run started changes nothing: the run, back in the
        // next answer, is not witnessed again.
        assert_eq!(since(starts.observe(facts(1, None), at(240))), None);
        assert_eq!(
            since(starts.observe(facts(1, Some(150)), at(245))),
            Some(at(210))
        );
        // The next run, on a node ahead, keeps its own stamp.
        assert_eq!(
            since(starts.observe(facts(2, Some(300)), at(250))),
            Some(at(300))
        );
        // An answer older than one seen changes nothing.
        assert_eq!(
            since(starts.observe(facts(1, Some(150)), at(270))),
            Some(at(150))
        );
        assert_eq!(since(starts.apply(facts(2, Some(300)))), Some(at(300)));
        // A Pod first seen not running: its first run is witnessed.
        assert_eq!(since(starts.observe(of("u2", 0, None), at(300))), None);
        assert_eq!(
            since(starts.observe(of("u2", 0, Some(280)), at(310))),
            Some(at(310))
        );
        // Gone from the cache: forgotten.
        starts.retain(|uid| uid != "u2");
        assert_eq!(since(starts.apply(of("u2", 0, Some(280)))), Some(at(280)));
    }

    #[tokio::test(start_paused = true)]
    async fn calls_under_the_restart_lock_give_up_at_their_limit() {
        let started = tokio::time::Instant::now();
        let stuck = under_restart_lock(std::future::pending::<Result<(), kube::Error>>()).await;
        assert!(
            matches!(stuck, Err(Error::SlowApi(limit)) if limit == UNDER_RESTART_LOCK),
            "{stuck:?}"
        );
        assert_eq!(started.elapsed(), UNDER_RESTART_LOCK);
        let answered = under_restart_lock(async { Ok::<_, kube::Error>(7) }).await;
        assert_eq!(answered.unwrap(), 7);
    }

    #[test]
    fn stopped_pods_are_replaced_at_once_then_spaced_out_until_one_runs() {
        let replacements = StoppedPodReplacements::default();
        let key = ObjectRef::new("store-1").within("storage");
        let t0 = std::time::Instant::now();
        assert_eq!(replacements.due_in(&key, t0), None, "the first one at once");
        replacements.replaced(key.clone(), t0);
        assert_eq!(
            replacements.due_in(&key, t0),
            Some(STOPPED_POD_RETRY_INITIAL)
        );
        let t1 = t0 + STOPPED_POD_RETRY_INITIAL;
        assert_eq!(replacements.due_in(&key, t1), None);
        replacements.replaced(key.clone(), t1);
        assert_eq!(
            replacements.due_in(&key, t1),
            Some(STOPPED_POD_RETRY_INITIAL * 2),
            "refused again: twice as long"
        );
        let mut t = t1;
        for _ in 0..20 {
            t += STOPPED_POD_RETRY_MAX;
            replacements.replaced(key.clone(), t);
        }
        assert_eq!(replacements.due_in(&key, t), Some(STOPPED_POD_RETRY_MAX));
        let other = ObjectRef::new("store-2").within("storage");
        assert_eq!(replacements.due_in(&other, t), None, "per store");
        replacements.ran(&key);
        assert_eq!(replacements.due_in(&key, t), None, "it ran: at once again");
    }

    #[test]
    fn a_stores_default_address_is_its_nodes_first_ipv4_internal_ip() {
        let address = |type_: &str, address: &str| k8s_openapi::api::core::v1::NodeAddress {
            type_: type_.into(),
            address: address.into(),
        };
        let dual_stack = vec![
            address("Hostname", "node-a"),
            address("ExternalIP", "203.0.113.7"),
            address("InternalIP", "fd00::7"),
            address("InternalIP", "10.0.0.7"),
            address("InternalIP", "10.0.0.8"),
        ];
        assert_eq!(
            first_ipv4_internal_ip(dual_stack).as_deref(),
            Some("10.0.0.7")
        );
        let ipv6_only = vec![address("InternalIP", "fd00::7")];
        assert_eq!(first_ipv4_internal_ip(ipv6_only), None);
    }

    #[test]
    fn the_first_created_store_owns_its_id() {
        let claim = |name: &str, namespace: &str, id: i32, created: Option<i64>| {
            let mut store = store("1", None);
            store.metadata.name = Some(name.into());
            store.metadata.namespace = Some(namespace.into());
            store.spec.store_id = id;
            store.metadata.creation_timestamp = created.map(|secs| {
                k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    Timestamp::from_second(secs).unwrap(),
                )
            });
            store
        };
        let name = |s: Option<&PureFlashStore>| s.map(|s| s.name_any());
        let stores = [
            claim("late", "a", 7, Some(200)),
            claim("early", "b", 7, Some(100)),
            claim("other-id", "a", 8, Some(50)),
            claim("unsaved", "a", 7, None),
        ];
        assert_eq!(name(first_claimant(stores.iter(), 7)), Some("early".into()));
        assert_eq!(
            name(first_claimant(stores.iter(), 8)),
            Some("other-id".into())
        );
        assert_eq!(name(first_claimant(stores.iter(), 9)), None);
        // Created in the same second: namespace, then name decide, the same on every replica.
        let tied = [
            claim("b", "ns-2", 7, Some(100)),
            claim("z", "ns-1", 7, Some(100)),
            claim("a", "ns-2", 7, Some(100)),
        ];
        assert_eq!(name(first_claimant(tied.iter(), 7)), Some("z".into()));
        assert_eq!(
            name(first_claimant(tied.iter().rev(), 7)),
            Some("z".into()),
            "the order of the cache does not matter"
        );
        let unsaved = [claim("x", "a", 7, None), claim("y", "a", 7, Some(100))];
        assert_eq!(name(first_claimant(unsaved.iter(), 7)), Some("y".into()));

        // Those that are not first stand aside, whatever order the cache lists them in.
        let all: Vec<Arc<PureFlashStore>> = stores
            .iter()
            .cloned()
            .map(|mut s| {
                s.metadata.uid = s.metadata.name.clone();
                Arc::new(s)
            })
            .collect();
        for listing in [all.clone(), all.iter().rev().cloned().collect()] {
            let aside = standing_aside(&listing);
            let mut names: Vec<&str> = aside.iter().copied().collect();
            names.sort_unstable();
            assert_eq!(names, ["late", "unsaved"]);
            assert!(stands_aside(&aside, &all[0]));
            assert!(!stands_aside(&aside, &all[1]));
        }
        assert!(
            standing_aside(&all[1..3]).is_empty(),
            "no duplicates, nobody aside"
        );

        // A store that has served the id keeps it from an older one found later, until it
        // stands aside.
        let mut served = all.clone();
        let late = Arc::make_mut(&mut served[0]);
        let mut status = PureFlashStoreStatus {
            last_online_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                Timestamp::from_second(300).unwrap(),
            )),
            ..Default::default()
        };
        late.status = Some(status.clone());
        assert_eq!(
            name(first_claimant(served.iter().map(AsRef::as_ref), 7)),
            Some("late".into())
        );
        let aside = standing_aside(&served);
        let mut names: Vec<&str> = aside.iter().copied().collect();
        names.sort_unstable();
        assert_eq!(names, ["early", "unsaved"]);
        status = status::duplicate(
            &status,
            7,
            "b/early",
            Timestamp::from_second(400).unwrap(),
            None,
        );
        Arc::make_mut(&mut served[0]).status = Some(status);
        assert_eq!(
            name(first_claimant(served.iter().map(AsRef::as_ref), 7)),
            Some("early".into())
        );
    }

    /// A write the term's end cuts off is counted (it may land still); one that finished, or
    /// never began, is not.
    #[tokio::test]
    async fn a_write_cut_off_by_the_terms_end_is_counted() {
        let dropped = std::sync::atomic::AtomicUsize::new(0);
        let done = unless_ended(async { 7 }, std::future::pending(), &dropped).await;
        assert_eq!((done, dropped.load(Ordering::SeqCst)), (Some(7), 0));
        let cut = unless_ended(std::future::pending::<i32>(), async {}, &dropped).await;
        assert_eq!((cut, dropped.load(Ordering::SeqCst)), (None, 1));
        // The end is looked at first: a write ready at the same moment is not made (and is
        // counted all the same: a cut-off write is not told from one never begun).
        let both = unless_ended(async { 7 }, async {}, &dropped).await;
        assert_eq!((both, dropped.load(Ordering::SeqCst)), (None, 2));
    }

    #[test]
    fn a_store_becoming_available_wakes_the_longest_held_rollout_once() {
        let (wake, mut woken) = mpsc::unbounded_channel();
        let held = WaitingStores::new(wake);
        let store = |name: &str| ObjectRef::<PureFlashStore>::new(name).within("pf");
        let (a, b, rolled) = (store("a"), store("b"), store("rolled"));
        held.set_waiting(&a, true, false);
        held.set_waiting(&b, true, false);
        held.set_waiting(&a, true, false);

        // Available all along (like the held stores themselves): wakes nobody.
        held.observe(&a, true);
        held.observe(&b, true);
        assert!(woken.try_recv().is_err());

        // Replaced, then back: the longest-held store is woken, once.
        held.observe(&rolled, false);
        assert!(woken.try_recv().is_err());
        held.observe(&rolled, true);
        assert_eq!(woken.try_recv().unwrap(), a);
        held.observe(&rolled, true);
        assert!(woken.try_recv().is_err());

        // Still held when woken: `a` goes to the back of the line.
        held.set_waiting(&a, true, false);
        held.observe(&rolled, false);
        held.observe(&rolled, true);
        assert_eq!(woken.try_recv().unwrap(), b);

        // A store no longer held, or deleted, is not woken.
        held.set_waiting(&b, false, false);
        held.retain(|s| *s != a);
        held.observe(&rolled, false);
        held.observe(&rolled, true);
        assert!(woken.try_recv().is_err());
    }

    #[test]
    fn a_budget_allowing_more_wakes_the_longest_budget_held_store_of_its_namespace() {
        let (wake, mut woken) = mpsc::unbounded_channel();
        let held = WaitingStores::new(wake);
        let (others, first, second, elsewhere) = (
            ObjectRef::<PureFlashStore>::new("others").within("pf"),
            ObjectRef::<PureFlashStore>::new("first").within("pf"),
            ObjectRef::<PureFlashStore>::new("second").within("pf"),
            ObjectRef::<PureFlashStore>::new("elsewhere").within("other"),
        );
        held.set_waiting(&elsewhere, true, true);
        held.set_waiting(&others, true, false);
        held.set_waiting(&first, true, true);
        held.set_waiting(&second, true, true);

        // Not a store held for others, nor one of another namespace: the first budget-held.
        held.budget_allows_more("pf", 1);
        assert_eq!(woken.try_recv().unwrap(), first);
        assert!(woken.try_recv().is_err());
        held.budget_allows_more("pf", 1);
        assert_eq!(woken.try_recv().unwrap(), second);
        held.budget_allows_more("pf", 1);
        assert!(woken.try_recv().is_err());

        // Held for others now: not woken by the budget.
        held.set_waiting(&elsewhere, true, false);
        held.budget_allows_more("other", 1);
        assert!(woken.try_recv().is_err());
        // More was allowed while none waited for it: the next store held there by the budget
        // (which judged it before) is woken as it registers, once.
        held.set_waiting(&elsewhere, true, false);
        assert!(woken.try_recv().is_err(), "not held by the budget");
        held.set_waiting(&elsewhere, true, true);
        assert_eq!(woken.try_recv().unwrap(), elsewhere);
        held.set_waiting(&elsewhere, true, true);
        assert!(woken.try_recv().is_err());
        held.budget_allows_more("other", 1);
        assert_eq!(woken.try_recv().unwrap(), elsewhere);
        assert!(woken.try_recv().is_err());
        // In "pf" too, where the third rise found no one.
        held.set_waiting(&first, true, true);
        assert_eq!(woken.try_recv().unwrap(), first);

        // Two more allowed: two woken, longest-held first (`others` has waited, for other
        // stores, since the start); gone: every one held there.
        for store in [&first, &second, &others] {
            held.set_waiting(store, true, true);
        }
        held.budget_allows_more("pf", 2);
        assert_eq!(woken.try_recv().unwrap(), others);
        assert_eq!(woken.try_recv().unwrap(), first);
        assert!(woken.try_recv().is_err());
        held.set_waiting(&first, true, true);
        held.budget_allows_more("pf", usize::MAX);
        assert_eq!(woken.try_recv().unwrap(), second);
        assert_eq!(woken.try_recv().unwrap(), first);
        assert!(woken.try_recv().is_err());
    }

    fn store(version: &str, phase: Option<Phase>) -> PureFlashStore {
        let spec: PureFlashStoreSpec = serde_json::from_value(
            json!({"storeId": 1, "nodeName": "n", "trays": [{"device": "/dev/sda"}]}),
        )
        .unwrap();
        let mut store = PureFlashStore::new("store-1", spec);
        store.metadata.namespace = Some("pf".into());
        store.metadata.resource_version = Some(version.into());
        store.status = Some(PureFlashStoreStatus {
            phase,
            ..PureFlashStoreStatus::default()
        });
        store
    }

    fn status(phase: Phase) -> PureFlashStoreStatus {
        PureFlashStoreStatus {
            phase: Some(phase),
            ..PureFlashStoreStatus::default()
        }
    }

    #[test]
    fn a_cache_that_still_shows_the_written_over_version_reads_as_the_written_status() {
        let written = WrittenStatuses::default();
        let seen = store("10", Some(Phase::Pending));
        assert_eq!(
            written.current(&seen),
            Baseline {
                status: status(Phase::Pending),
                version: Some("10".into())
            }
        );
        written.wrote(&seen, &status(Phase::Online), Some("11".into()));
        assert_eq!(
            written.current(&seen),
            Baseline {
                status: status(Phase::Online),
                version: Some("11".into())
            },
            "the next write is based on the write's result, not on the lagging cache"
        );
        // Written again from the same stale version: the latest write counts.
        written.wrote(&seen, &status(Phase::Offline), Some("12".into()));
        assert_eq!(written.current(&seen).status.phase, Some(Phase::Offline));
        assert_eq!(written.current(&seen).version.as_deref(), Some("12"));
    }

    #[test]
    fn the_operators_own_earlier_writes_arriving_late_do_not_count() {
        let written = WrittenStatuses::default();
        // Written Unknown over version 10 (result 11), then Online over a stale 10 (result 12).
        written.wrote(
            &store("10", None),
            &status(Phase::Unknown),
            Some("11".into()),
        );
        written.wrote(
            &store("10", None),
            &status(Phase::Online),
            Some("12".into()),
        );
        // The watch now delivers version 11, the first write: still superseded.
        let first_write = store("11", Some(Phase::Unknown));
        assert_eq!(
            written.current(&first_write).status.phase,
            Some(Phase::Online)
        );
        assert_eq!(written.current(&first_write).version.as_deref(), Some("12"));
        // Version 12 is the last write itself.
        let last_write = store("12", Some(Phase::Online));
        assert_eq!(
            written.current(&last_write).status.phase,
            Some(Phase::Online)
        );
    }

    #[test]
    fn a_cache_that_shows_the_write_is_the_truth_again() {
        let written = WrittenStatuses::default();
        written.wrote(
            &store("10", None),
            &status(Phase::Online),
            Some("11".into()),
        );
        assert_eq!(
            written
                .current(&store("11", Some(Phase::Online)))
                .status
                .phase,
            Some(Phase::Online)
        );
        // The memory is gone, even if an old version were seen again.
        assert_eq!(written.current(&store("10", None)).status.phase, None);
    }

    #[test]
    fn a_version_this_term_did_not_write_does_not_undo_a_write() {
        // Someone's metadata edit (11) landed between the read (10) and the write (12) that
        // recorded a restart: the cache's 11 still has the status before the restart.
        let written = WrittenStatuses::default();
        let mut restarted = status(Phase::Recovering);
        restarted.last_manual_restart = Some("token-1".into());
        written.wrote(
            &store("10", Some(Phase::Online)),
            &restarted,
            Some("12".into()),
        );
        let edited = store("11", Some(Phase::Online));
        let now = std::time::Instant::now();
        let seen = written.current_at(&edited, now);
        assert_eq!(seen.status.last_manual_restart.as_deref(), Some("token-1"));
        // Written on 11: the write lands if 11 is still the latest, else it is refused.
        assert_eq!(seen.version.as_deref(), Some("11"));
        // A watch lags far less than this: past it the cache is the truth again.
        let much_later = now + UNSEEN_VERSION_TRUST + Duration::from_secs(1);
        assert_eq!(
            written.current_at(&edited, much_later).status.phase,
            Some(Phase::Online)
        );
        assert_eq!(written.current(&edited).status.last_manual_restart, None);
    }

    #[test]
    fn a_store_recreated_under_the_same_name_does_not_inherit_the_old_ones_status() {
        let written = WrittenStatuses::default();
        written.wrote(
            &store("10", None),
            &status(Phase::Recovering),
            Some("11".into()),
        );
        let mut recreated = store("20", None);
        recreated.metadata.uid = Some("another-uid".into());
        assert_eq!(written.current(&recreated).status.phase, None);
    }

    #[test]
    fn a_store_restarted_while_up_is_not_up_again_while_its_killed_session_stands() {
        let mut restarts = TermRestarts::default();
        let mut up = store("10", None);
        up.metadata.uid = Some("uid".into());
        let alive = |session| AliveNode {
            exists: true,
            session: Some(session),
        };
        // Not restarted this term: alive is alive.
        assert!(restarts.alive_after(&up, alive(7)));
        restarts.record(&up, Timestamp::from_second(1_000).unwrap(), Some(7));
        assert!(
            !restarts.alive_after(&up, alive(7)),
            "the killed pfs's alive"
        );
        assert!(restarts.alive_after(&up, alive(8)), "a new pfs's");
        assert!(!restarts.alive_after(&up, AliveNode::default()));
        // Restarted while offline: whatever registers is the new pfs.
        restarts.record(&up, Timestamp::from_second(1_000).unwrap(), None);
        assert!(restarts.alive_after(&up, alive(7)));
    }

    #[test]
    fn a_store_recreated_under_the_same_name_has_no_restart_behind_it() {
        let mut restarts = TermRestarts::default();
        let mut old = store("10", None);
        old.metadata.uid = Some("old-uid".into());
        let at = Timestamp::from_second(1_000).unwrap();
        restarts.record(&old, at, None);
        assert_eq!(restarts.of(&old), Some(at));
        let mut recreated = store("20", None);
        recreated.metadata.uid = Some("new-uid".into());
        assert_eq!(restarts.of(&recreated), None);
        let mut other = store("10", None);
        other.metadata.name = Some("store-2".into());
        other.metadata.uid = Some("old-uid".into());
        assert_eq!(restarts.of(&other), None);
        restarts.retain(|s| s.name != "store-1");
        assert_eq!(restarts.of(&old), None);
    }

    #[test]
    fn a_version_superseded_long_ago_still_reads_as_the_write() {
        let written = WrittenStatuses::default();
        written.wrote(
            &store("10", None),
            &status(Phase::Online),
            Some("11".into()),
        );
        let later = std::time::Instant::now() + UNSEEN_VERSION_TRUST * 2;
        assert_eq!(
            written.current_at(&store("10", None), later).status.phase,
            Some(Phase::Online)
        );
    }

    #[test]
    fn the_memory_of_one_store_is_bounded() {
        let written = WrittenStatuses::default();
        for version in 0..100 {
            written.wrote(
                &store(&version.to_string(), None),
                &status(Phase::Online),
                None,
            );
        }
        let by_store = written.by_store.lock().unwrap();
        let kept = &by_store.values().next().unwrap().superseded;
        assert_eq!(kept.len(), SUPERSEDED_MAX);
        assert_eq!(kept.last().map(String::as_str), Some("99"));
    }

    #[test]
    fn other_stores_are_not_confused_and_deleted_ones_are_forgotten() {
        let written = WrittenStatuses::default();
        let one = store("10", None);
        let mut two = store("10", None);
        two.metadata.name = Some("store-2".into());
        written.wrote(&one, &status(Phase::Online), None);
        assert_eq!(written.current(&two).status.phase, None);
        written.retain(|s| s.name != "store-1");
        assert_eq!(written.current(&one).status.phase, None);
    }
}
