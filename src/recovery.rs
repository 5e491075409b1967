//! The restart decision for one store at one instant.
//!
//! A `pfs` daemon can drop out of ZooKeeper (its `alive` node vanishes) while its process keeps
//! running, and only a "kill -9 and restart" brings it back. This module owns the judgement of
//! when that restart is due: the grace periods, the backoff, the hourly budget, the cluster-wide
//! rails against restarting half the cluster at once, and the bookkeeping that must survive a
//! reconcile (`offline_since`, `attempts`).
//!
//! It is pure on purpose and must not do I/O: no clock, no Kubernetes, no ZooKeeper. The
//! controller gathers the facts into an [`Observation`], calls [`decide`], writes the returned
//! bookkeeping to the store's status and carries out the [`Verdict`]. That keeps every safety
//! rail testable against an injected clock.

use jiff::{SignedDuration, Timestamp};

/// The window of the restart budget ([`Policy::max_restarts_per_hour`]).
const BUDGET_WINDOW: SignedDuration = SignedDuration::from_hours(1);

/// Recovery settings of one store (from its spec) and of the operator (flags).
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    /// Automatic restarts are allowed at all. A manual restart does not need it.
    pub enabled: bool,
    /// How long the store must be offline (with its Pod running) before a restart.
    pub offline_grace: SignedDuration,
    /// The delay after a restart before the next one, while the store stays offline.
    pub backoff_initial: SignedDuration,
    /// The cap of the doubling backoff.
    pub backoff_max: SignedDuration,
    /// Restarts allowed within any one hour, and in a row without the store staying back for
    /// the stable period; at either limit recovery stops (see [`budget_spent`]).
    pub max_restarts_per_hour: u32,
    /// How long a pfs Pod must have been running before its store is expected to be registered.
    pub start_grace: SignedDuration,
    /// Restarts are frozen cluster-wide when more than this share (0.0–1.0) of the stores are
    /// offline at once…
    pub freeze_share: f64,
    /// …and at least this many are: one store down in a cluster of two is a stuck daemon, not
    /// a ZooKeeper outage.
    pub freeze_min_offline: usize,
    /// At most this many restarts in flight cluster-wide.
    pub max_in_flight: usize,
    /// A restart counts as in flight until its store is alive again or this long has passed.
    pub in_flight_window: SignedDuration,
    /// A restart proves it worked only once this long has passed with the store back: a store
    /// that drops out again sooner is flapping, and its backoff keeps growing.
    pub stable_period: SignedDuration,
}

/// The store's Pod as observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodFacts {
    /// `metadata.uid`, for the precondition of the delete.
    pub uid: String,
    /// `status.phase`: Pending, Running, Succeeded, Failed, Unknown.
    pub phase: String,
    /// `metadata.deletionTimestamp` is set.
    pub terminating: bool,
    /// That `deletionTimestamp`: when its grace period ends and its kubelet is due to have
    /// killed the containers.
    pub stop_due: Option<Timestamp>,
    /// When the pfs container started running (its `state.running.startedAt`), if it runs.
    pub running_since: Option<Timestamp>,
    /// How often the kubelet restarted the pfs container in place (`restartCount`).
    pub container_restarts: i32,
    /// Whose `alive` stood when the operator created the Pod.
    pub predecessor: Predecessor,
}

/// How long past its grace period a terminating Pod may stay before it counts as stuck: its
/// kubelet out of contact, or a container that does not die (pfs stuck in the kernel on a dead
/// disk). Its store gets no new Pod meanwhile, and says so.
pub const STOP_OVERDUE_AFTER: SignedDuration = SignedDuration::from_secs(60);

impl PodFacts {
    /// When a terminating Pod counts as stuck (see [`STOP_OVERDUE_AFTER`]).
    pub fn stop_overdue_at(&self) -> Option<Timestamp> {
        self.stop_due.filter(|_| self.terminating).map(|due| {
            due.saturating_add(STOP_OVERDUE_AFTER)
                .unwrap_or(Timestamp::MAX)
        })
    }

    /// Whether its pfs container runs and started less than the start grace ago: pfs may
    /// still be registering.
    pub fn starting(&self, policy: &Policy, now: Timestamp) -> bool {
        self.start_grace_ends(policy).is_some_and(|end| now < end)
    }

    /// When the start grace of its running pfs container ends (None: it does not run).
    pub fn start_grace_ends(&self, policy: &Policy) -> Option<Timestamp> {
        let since = self.running_since.filter(|_| self.phase == "Running")?;
        Some(
            since
                .saturating_add(policy.start_grace)
                .unwrap_or(Timestamp::MAX),
        )
    }
}

/// The ZooKeeper session that owned the store's `alive` when its Pod was created. `pfs` does
/// not close its session when stopped, so a new Pod's store can look alive on the strength of
/// the old process until that session expires; an `alive` owned by any other session is the
/// new pfs's own.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Predecessor {
    /// Not recorded: the Pod predates the record, or `alive`'s owner was not read yet.
    #[default]
    Unknown,
    /// No `alive` stood: any `alive` now comes from the new pfs.
    NoSession,
    /// `alive` was owned by this session, the old pfs's.
    Session(i64),
}

/// Whether the node a store's Pod is bound to is in contact with Kubernetes (its `Ready`
/// condition). A node that stopped reporting shows its Pods as they were when it fell silent,
/// and a delete does not reach it: the Pod would only stay terminating, its process going on
/// until the kubelet is back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NodeHealth {
    /// Not read, or not readable: no rule depends on it.
    #[default]
    Unknown,
    /// `Ready` is `True`.
    Ready,
    /// `Ready` is `True`, but whether the kubelet is still in contact is not confirmed yet:
    /// it has not renewed the node's Lease since the store went offline, as far as the operator
    /// has looked. Out of contact from `silent_at` if it does not renew by then.
    Unconfirmed {
        /// When the Lease's duration will have passed without a renewal.
        silent_at: Timestamp,
    },
    /// `Ready` is `False` or `Unknown`, the Node object does not exist, or its kubelet has not
    /// renewed the node's Lease for the Lease's duration since the store went offline.
    NotReady,
}

/// What the store's status remembers across reconciles and leaders.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct History {
    /// When the current offline episode began, as far as a trusted view could tell.
    pub offline_since: Option<Timestamp>,
    /// The last restart, automatic or manual.
    pub last_restart: Option<Timestamp>,
    /// Restart times, any age (the function only counts the last hour).
    pub recent_restarts: Vec<Timestamp>,
    /// Consecutive restarts that did not bring the store back (drives the backoff).
    pub attempts: u32,
    /// Token of the last manual restart request already honoured.
    pub last_manual_restart: Option<String>,
    /// The last restart, recorded but maybe not carried out yet: the Pod it kills.
    pub unfinished: Option<Unfinished>,
    /// Since when the store has been alive without a break, as the last status showed it
    /// (None: it was not alive then).
    pub back_since: Option<Timestamp>,
}

/// A restart recorded before its Pod was killed. While that Pod is still there (the
/// delete failed, or the leader stopped in between), the restart is not done: it is finished
/// rather than decided, and counted, again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unfinished {
    /// The uid of the Pod the restart kills.
    pub pod_uid: String,
    pub reason: RestartReason,
}

/// The rest of the cluster, for the cluster-wide rails.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterFacts {
    /// Stores the freeze's share is taken of ([`freeze_standing`]; this one included).
    pub stores: usize,
    /// How many of the managed stores are offline now while their pfs runs
    /// ([`offline_while_running`]; this one included).
    pub offline: usize,
    /// Restarts in flight on other stores.
    pub restarts_in_flight: usize,
}

/// Everything [`decide`] looks at, gathered by the controller at one instant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observation {
    /// The instant of the decision (the controller's clock, injected).
    pub now: Timestamp,
    /// The operator's ZooKeeper view is connected and fully resynced since (re)connecting.
    pub view_trusted: bool,
    /// The store's `alive` node exists (None: the store is not in ZooKeeper at all — treat as
    /// offline).
    pub alive: Option<bool>,
    /// The store's Pod, if there is one.
    pub pod: Option<PodFacts>,
    /// The health of the node the Pod is bound to.
    pub node: NodeHealth,
    /// A Pod can be made for the store: its pfs.conf renders (its node has an address), and
    /// the API would not refuse the Pod its spec makes.
    pub pod_renderable: bool,
    /// The store's recovery status as last written.
    pub history: History,
    /// Annotation `pureflash.io/recovery-paused: "true"`.
    pub paused: bool,
    /// Annotation `pureflash.io/restart` value (a token; a restart is requested when it differs
    /// from `history.last_manual_restart`).
    pub manual_restart: Option<String>,
    /// The cluster-wide facts.
    pub cluster: ClusterFacts,
}

/// Why a restart happens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RestartReason {
    /// The store stayed offline past every grace period and safety rail.
    Offline,
    /// A human asked for it through the `pureflash.io/restart` annotation.
    Manual,
}

impl RestartReason {
    /// The reason as an Event reason or metric label.
    pub fn as_str(&self) -> &'static str {
        match self {
            RestartReason::Offline => "Offline",
            RestartReason::Manual => "Manual",
        }
    }
}

/// Why nothing is done now (a fixed list: these become Event reasons and metric labels).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SkipReason {
    /// The ZooKeeper view is disconnected or not resynced: its "offline" may be stale.
    ViewUntrusted,
    /// The policy disables automatic recovery.
    RecoveryDisabled,
    /// The store carries `pureflash.io/recovery-paused: "true"`.
    RecoveryPaused,
    /// The store has no Pod (creating it is the controller's job, not a restart).
    PodMissing,
    /// The Pod is already being deleted.
    PodTerminating,
    /// The Pod has been terminating for longer than [`STOP_OVERDUE_AFTER`] past its grace
    /// period: its kubelet has not confirmed that its pfs stopped.
    PodStuckTerminating,
    /// The Pod's node is not ready: its Pod status is stale and a kill would not reach pfs.
    NodeNotReady,
    /// The Pod's node reads ready, but its kubelet has not been seen in contact since the
    /// store went offline yet.
    AwaitingNodeContact,
    /// The Pod or its pfs container is not running, so a kill would not help.
    PodNotRunning,
    /// The pfs container started too recently to be expected in ZooKeeper.
    PodStarting,
    /// The store has not been offline for the grace period yet.
    WithinGracePeriod,
    /// The last restart was too recent for the current backoff.
    BackingOff,
    /// The hourly restart budget is used up.
    RestartBudgetExhausted,
    /// Too large a share of the cluster is offline to trust restarts.
    ClusterFrozen,
    /// Enough restarts are in flight elsewhere already.
    TooManyInFlight,
    /// No pfs.conf can be rendered for the store (its node has no InternalIP, or is gone): a
    /// killed Pod could not be recreated.
    ConfigInvalid,
}

impl SkipReason {
    /// Every reason, in declaration order.
    pub const ALL: [SkipReason; 16] = [
        SkipReason::ViewUntrusted,
        SkipReason::RecoveryDisabled,
        SkipReason::RecoveryPaused,
        SkipReason::PodMissing,
        SkipReason::PodTerminating,
        SkipReason::PodStuckTerminating,
        SkipReason::NodeNotReady,
        SkipReason::AwaitingNodeContact,
        SkipReason::PodNotRunning,
        SkipReason::PodStarting,
        SkipReason::WithinGracePeriod,
        SkipReason::BackingOff,
        SkipReason::RestartBudgetExhausted,
        SkipReason::ClusterFrozen,
        SkipReason::TooManyInFlight,
        SkipReason::ConfigInvalid,
    ];

    /// The reason as an Event reason or metric label (its CamelCase name).
    pub fn as_str(&self) -> &'static str {
        match self {
            SkipReason::ViewUntrusted => "ViewUntrusted",
            SkipReason::RecoveryDisabled => "RecoveryDisabled",
            SkipReason::RecoveryPaused => "RecoveryPaused",
            SkipReason::PodMissing => "PodMissing",
            SkipReason::PodTerminating => "PodTerminating",
            SkipReason::PodStuckTerminating => "PodStuckTerminating",
            SkipReason::NodeNotReady => "NodeNotReady",
            SkipReason::AwaitingNodeContact => "AwaitingNodeContact",
            SkipReason::PodNotRunning => "PodNotRunning",
            SkipReason::PodStarting => "PodStarting",
            SkipReason::WithinGracePeriod => "WithinGracePeriod",
            SkipReason::BackingOff => "BackingOff",
            SkipReason::RestartBudgetExhausted => "RestartBudgetExhausted",
            SkipReason::ClusterFrozen => "ClusterFrozen",
            SkipReason::TooManyInFlight => "TooManyInFlight",
            SkipReason::ConfigInvalid => "ConfigInvalid",
        }
    }
}

/// What the controller should do about the store now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Store alive: nothing to do.
    Healthy,
    /// Kill the pfs now (delete its Pod with a short grace period and a uid precondition) and
    /// recreate the Pod once it is gone.
    Restart(RestartReason),
    /// Not now; look again at `until` (a timer, not a failure). `until` is always after `now`.
    Wait {
        /// The instant at which the blocking rule stops applying.
        until: Timestamp,
        /// The rule that blocks until then.
        reason: SkipReason,
    },
    /// Not acting, for `reason`, until something changes.
    Skip(SkipReason),
}

/// The outcome of [`decide`]: the verdict and the bookkeeping to write back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// What to do now.
    pub verdict: Verdict,
    /// The `offline_since` the status must now hold.
    pub offline_since: Option<Timestamp>,
    /// The `attempts` the status must now hold.
    pub attempts: u32,
    /// A `Restart` verdict finishes [`History::unfinished`] instead of making a new restart:
    /// nothing is counted again (a manual request it also answers is still recorded as
    /// honoured).
    pub finishes: bool,
    /// The unfinished restart the status must now hold.
    pub unfinished: Option<Unfinished>,
}

/// Decides what to do about one store at `observation.now`.
///
/// The rules are tried in a fixed order and the first that applies decides:
///
/// 1. An untrusted ZooKeeper view decides nothing (`Skip(ViewUntrusted)`), not even a manual
///    restart: after a disconnect every store may look offline.
/// 2. A store for which no Pod can be made (its pfs.conf does not render) is not restarted,
///    not even by hand: its Pod could not be recreated (`Skip(ConfigInvalid)`). Otherwise a
///    pending manual restart is honoured unless the Pod is already terminating: a human's
///    explicit request bypasses every other rail, and applies to an alive store too (a request
///    made while the store is healthy must not lie in wait for its next outage). An
///    unfinished manual restart whose Pod is still there is still pending.
/// 3. An alive store is `Healthy`.
/// 4. to 8. Recovery disabled or paused, then a Pod that is missing, terminating or not running
///    are skipped: killing them would not help.
/// 9. and 10. The pfs container's start grace, then the store's offline grace, are waited out.
/// 11. The hourly restart budget stops recovery once used up.
/// 12. The backoff since the last restart is waited out. Neither applies to finishing an
///     unfinished restart: it is the restart they already counted.
/// 13. and 14. The cluster-wide rails: freeze when too many stores are offline at once (more
///     likely a ZooKeeper or network problem than a stuck daemon), and cap restarts in flight.
/// 15. A Pod whose node is not ready is skipped: a kill would not reach it. One whose kubelet
///     has not been seen in contact since the store went offline is waited for, briefly.
/// 16. Otherwise the store is restarted.
///
/// The bookkeeping is returned with the verdict. An untrusted view leaves it untouched; a trusted
/// one clears `offline_since` and `attempts` when the store is alive, starts `offline_since` at
/// `now` when an offline episode begins, and counts each new restart in `attempts`. An
/// unfinished restart is kept while its Pod is there and it still applies (manual, or the
/// store still offline); a new restart of a Pod becomes the unfinished one.
pub fn decide(observation: &Observation, policy: &Policy) -> Decision {
    // A store found offline, whose status still shows it back since a moment at least the
    // stable period after its last restart, stayed back: its backoff starts over now, as an
    // alive reconcile within that stretch would have started it (none may have come).
    let relapsed;
    let observation = if observation.view_trusted
        && observation.alive != Some(true)
        && observation.history.attempts > 0
        && observation.history.back_since.is_some()
        && stayed_back(&observation.history, policy, observation.now)
    {
        relapsed = Observation {
            history: History {
                attempts: 0,
                ..observation.history.clone()
            },
            ..observation.clone()
        };
        &relapsed
    } else {
        observation
    };
    let history = &observation.history;
    let (verdict, offline_since) = if !observation.view_trusted {
        (
            Verdict::Skip(SkipReason::ViewUntrusted),
            history.offline_since,
        )
    } else if observation.alive == Some(true) {
        // A manual restart is a human decision: it applies to a healthy store too.
        let verdict = manual_verdict(observation).unwrap_or(Verdict::Healthy);
        (verdict, None)
    } else {
        let since = history.offline_since.unwrap_or(observation.now);
        (offline_verdict(observation, policy, since), Some(since))
    };
    let finishing = finishing(observation);
    // Whatever asks for it now (a manual request meanwhile, say), a restart of the Pod an
    // unfinished one kills is that same restart: it kills once and is counted once.
    let finishes = matches!(verdict, Verdict::Restart(_)) && finishing.is_some();
    let unfinished = if !observation.view_trusted {
        history.unfinished.clone()
    } else if let Verdict::Restart(reason) = verdict {
        observation.pod.as_ref().map(|pod| Unfinished {
            pod_uid: pod.uid.clone(),
            reason,
        })
    } else {
        finishing
            .filter(|u| u.reason == RestartReason::Manual || observation.alive != Some(true))
            .cloned()
    };
    let attempts = if observation.view_trusted && observation.alive == Some(true) {
        // A store that is back starts its backoff over, but only once it has stayed back for the
        // stable period; a manual restart of a healthy store is no failed attempt.
        if stayed_back(history, policy, observation.now) {
            0
        } else {
            history.attempts
        }
    } else {
        match verdict {
            Verdict::Restart(_) if !finishes => history.attempts.saturating_add(1),
            _ => history.attempts,
        }
    };
    Decision {
        verdict,
        offline_since,
        attempts,
        finishes,
        unfinished,
    }
}

/// The unfinished restart, if its Pod is still there and not going away already.
fn finishing(observation: &Observation) -> Option<&Unfinished> {
    let unfinished = observation.history.unfinished.as_ref()?;
    observation
        .pod
        .as_ref()
        .is_some_and(|pod| pod.uid == unfinished.pod_uid && !pod.terminating)
        .then_some(unfinished)
}

/// No restart, or the store has been back for the stable period since the last one: alive
/// without a break since a moment at least that long after the restart and before now. A
/// store seen back only now (no unbroken stretch known yet) has not stayed back, however old
/// the last restart: one that returns by itself long after recovery gave up on it, then drops
/// out again, is still flapping.
fn stayed_back(history: &History, policy: &Policy, now: Timestamp) -> bool {
    let Some(last_restart) = history.last_restart else {
        return true;
    };
    let back_since = history.back_since.unwrap_or(now).max(last_restart);
    now.duration_since(back_since) >= policy.stable_period
}

/// The verdict for a Pod that is being deleted, if it is: nothing to kill, and no new Pod
/// until it is gone.
fn terminating(pod: &PodFacts, now: Timestamp) -> Option<Verdict> {
    let stuck = pod.stop_overdue_at().is_some_and(|at| now >= at);
    pod.terminating.then_some(Verdict::Skip(if stuck {
        SkipReason::PodStuckTerminating
    } else {
        SkipReason::PodTerminating
    }))
}

/// The verdict for a pending manual restart request, if there is one. Deleting a Pod that is
/// already going away would only race the kubelet.
fn manual_verdict(observation: &Observation) -> Option<Verdict> {
    if !manual_restart_requested(observation) {
        return None;
    }
    Some(if !observation.pod_renderable {
        Verdict::Skip(SkipReason::ConfigInvalid)
    } else if let Some(terminating) = observation
        .pod
        .as_ref()
        .and_then(|pod| terminating(pod, observation.now))
    {
        terminating
    } else {
        Verdict::Restart(RestartReason::Manual)
    })
}

/// Rules 4 to 16, for a store that a trusted view sees offline since `offline_since`.
fn offline_verdict(
    observation: &Observation,
    policy: &Policy,
    offline_since: Timestamp,
) -> Verdict {
    let now = observation.now;
    let history = &observation.history;
    let pod = observation.pod.as_ref();

    if !observation.pod_renderable {
        return Verdict::Skip(SkipReason::ConfigInvalid);
    }
    if let Some(verdict) = manual_verdict(observation) {
        return verdict;
    }
    if !policy.enabled {
        return Verdict::Skip(SkipReason::RecoveryDisabled);
    }
    if observation.paused {
        return Verdict::Skip(SkipReason::RecoveryPaused);
    }
    let Some(pod) = pod else {
        return Verdict::Skip(SkipReason::PodMissing);
    };
    if let Some(terminating) = terminating(pod, now) {
        return terminating;
    }
    // A container that is not running (image pull, CrashLoopBackOff, ...) is not the stuck
    // process this recovery is for; Kubernetes already restarts it.
    let running_since = match pod.running_since {
        Some(since) if pod.phase == "Running" => since,
        _ => return Verdict::Skip(SkipReason::PodNotRunning),
    };
    if let Some(wait) = wait_until(
        now,
        running_since,
        policy.start_grace,
        SkipReason::PodStarting,
    ) {
        return wait;
    }
    // The grace runs while the pfs does: a store offline since before its container started
    // (its node drained, its Pod recreated, a restart just made) gives that pfs the whole
    // grace to register, as its spec asks, not what is left of it.
    if let Some(wait) = wait_until(
        now,
        offline_since.max(running_since),
        policy.offline_grace,
        SkipReason::WithinGracePeriod,
    ) {
        return wait;
    }
    // The budget is a Skip, not a Wait: hitting it means restarts are not helping, which the
    // RecoveryFrozen condition says. The store is looked at again when enough restarts have
    // aged out (`budget_frees_at`; spent in a row, that frees nothing), when it comes back, or
    // when a human restarts it.
    let finishing = finishing(observation).is_some_and(|u| u.reason == RestartReason::Offline);
    if !finishing && budget_spent(history, now, policy) {
        return Verdict::Skip(SkipReason::RestartBudgetExhausted);
    }
    if !finishing && let Some(last_restart) = history.last_restart {
        let delay = backoff(policy, history.attempts);
        if let Some(wait) = wait_until(now, last_restart, delay, SkipReason::BackingOff) {
            return wait;
        }
    }
    // A node known to be out of contact holds the restart before the cluster freeze does, so
    // that the store is set aside from the freeze (`freeze_standing`) while it holds: a node
    // that died with most of the stores on it must not keep recovery frozen for the stores
    // elsewhere until it returns. (Known only where the controller read the node: for a
    // restart otherwise due, and for a store the freeze holds.)
    if observation.node == NodeHealth::NotReady {
        return Verdict::Skip(SkipReason::NodeNotReady);
    }
    if cluster_frozen(&observation.cluster, policy) {
        return Verdict::Skip(SkipReason::ClusterFrozen);
    }
    if observation.cluster.restarts_in_flight >= policy.max_in_flight {
        return Verdict::Skip(SkipReason::TooManyInFlight);
    }
    // Last, so the controller reads the node only for a restart otherwise due. Whatever the
    // Pod says about its container is what the kubelet last reported; a pfs on a node out of
    // contact is killed, if at all, when its kubelet is back, and a restart made now would only
    // spend the budget and an in-flight slot. The node coming back is the restart then.
    match observation.node {
        NodeHealth::NotReady => Verdict::Skip(SkipReason::NodeNotReady),
        // A kubelet in contact renews within a quarter of its Lease's duration: the controller
        // looks again well before `silent_at`, and that renewal is the restart.
        NodeHealth::Unconfirmed { silent_at } => Verdict::Wait {
            until: silent_at,
            reason: SkipReason::AwaitingNodeContact,
        },
        NodeHealth::Ready | NodeHealth::Unknown => Verdict::Restart(RestartReason::Offline),
    }
}

/// A manual restart is pending while the annotation holds a token not yet honoured, or while
/// the Pod an honoured one kills is still there.
fn manual_restart_requested(observation: &Observation) -> bool {
    observation
        .manual_restart
        .as_ref()
        .is_some_and(|token| observation.history.last_manual_restart.as_ref() != Some(token))
        || finishing(observation).is_some_and(|u| u.reason == RestartReason::Manual)
}

/// Whether [`decide`] could restart the store for some state of its Pod: the view is trusted
/// and the store is not alive, a manual restart is pending, or the last restart may be
/// unfinished. A reconcile reads the Pod of such a store from the API rather than from its
/// watch cache, so that no restart is ever decided on a cached Pod that has since been
/// replaced.
pub fn may_restart(
    view_trusted: bool,
    alive: Option<bool>,
    manual_restart: Option<&str>,
    history: &History,
) -> bool {
    view_trusted
        && (alive != Some(true)
            || history.unfinished.is_some()
            || manual_restart
                .is_some_and(|token| history.last_manual_restart.as_deref() != Some(token)))
}

/// `Wait` while `now` is before `start + period`; at that instant exactly the rule lets go.
fn wait_until(
    now: Timestamp,
    start: Timestamp,
    period: SignedDuration,
    reason: SkipReason,
) -> Option<Verdict> {
    let until = saturating_add(start, period);
    (now < until).then_some(Verdict::Wait { until, reason })
}

/// `t + d`, pinned to the ends of time instead of failing, so that an absurd policy value (a
/// grace of `SignedDuration::MAX`) means "never" rather than a panic.
fn saturating_add(t: Timestamp, d: SignedDuration) -> Timestamp {
    t.checked_add(d).unwrap_or(if d.is_negative() {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    })
}

/// When a spent restart budget allows a restart again: once enough of the hour's restarts
/// have aged out of it. `None` while it is not spent.
pub fn budget_frees_at(
    restarts: &[Timestamp],
    now: Timestamp,
    policy: &Policy,
) -> Option<Timestamp> {
    let budget = usize::try_from(policy.max_restarts_per_hour).unwrap_or(usize::MAX);
    let mut within: Vec<Timestamp> = restarts
        .iter()
        .copied()
        .filter(|&t| now.duration_since(t) < BUDGET_WINDOW)
        .collect();
    if within.len() < budget {
        return None;
    }
    within.sort();
    // The oldest `len - budget + 1` must go for one more to fit (none, with a budget of 0).
    let last_to_go = within.get(within.len() - budget)?;
    last_to_go.checked_add(BUDGET_WINDOW).ok()
}

/// Whether the restart budget is spent: `max_restarts_per_hour` restarts within the last hour,
/// or as many in a row, none of which kept the store back for the stable period. The first
/// ends as the restarts age out. The second is terminal: with the backoff at its cap, a store
/// that never comes back would otherwise be killed every `backoff_max` for good, as many times
/// an hour as the budget allows; it ends only when the store comes back and stays back (by
/// itself, or after a manual restart).
pub fn budget_spent(history: &History, now: Timestamp, policy: &Policy) -> bool {
    let budget = usize::try_from(policy.max_restarts_per_hour).unwrap_or(usize::MAX);
    spent_in_a_row(history.attempts, policy)
        || restarts_within_hour(&history.recent_restarts, now) >= budget
}

/// Whether `attempts` restarts in a row have spent the budget (see [`budget_spent`]).
pub fn spent_in_a_row(attempts: u32, policy: &Policy) -> bool {
    attempts >= policy.max_restarts_per_hour
}

/// Restarts at most an hour old, the hour's start excluded (`t > now - 1h`).
fn restarts_within_hour(restarts: &[Timestamp], now: Timestamp) -> usize {
    restarts
        .iter()
        .filter(|&&t| now.duration_since(t) < BUDGET_WINDOW)
        .count()
}

/// Whether a store counts as offline for the cluster freeze: not alive in ZooKeeper while its
/// pfs runs (its Pod's pfs container runs and the Pod is not being deleted). That is the
/// symptom a ZooKeeper or network fault gives every store it reaches, and the one recovery
/// acts on. A store whose pfs does not run at all (its node died and its Pod was evicted, its
/// Pod is pending or gone, its container crash-loops) is down for a reason of its own, which
/// no restart by this recovery answers: counted, one long-dead node in a small cluster would
/// freeze recovery at the next stuck pfs.
///
/// Until the Pod cache holds its first full list (a new leader's list may be slow; reconciles
/// wait for it, and this holds for a count taken before), what runs is not known: a store not alive then counts, so
/// the freeze fails closed rather than open in the very moment a fault took many stores at
/// once.
pub fn offline_while_running(alive: bool, pod: KnownPod<'_>) -> bool {
    match pod {
        _ if alive => false,
        KnownPod::NotLoaded => true,
        KnownPod::Loaded(pod) => {
            pod.is_some_and(|pod| !pod.terminating && pod.running_since.is_some())
        }
    }
}

/// How a store counts for the cluster freeze: `None`, not at all; `Some(offline)`, among the
/// stores the share is taken of, and whether as [`offline_while_running`]. The share is taken
/// of the stores that could be among the offline ones: alive, or with their pfs running (or
/// not known yet, before the Pod cache has listed). Left out are stores whose pfs does not run
/// (new ones pending, ones no Pod can be made for): counted as up, a partition cutting off
/// every running pfs would stay under the share. Left out too are stores recovery has set
/// aside for a reason of their own (`set_aside`: their node not ready, their Pod stuck
/// terminating, their recovery paused or disabled, their budget spent): a node dead for days
/// would otherwise freeze a small cluster at the next stuck pfs.
pub fn freeze_standing(alive: bool, set_aside: bool, pod: KnownPod<'_>) -> Option<bool> {
    if set_aside {
        return None;
    }
    if alive {
        return Some(false);
    }
    match pod {
        KnownPod::NotLoaded => Some(true),
        KnownPod::Loaded(pod) => {
            offline_while_running(false, KnownPod::Loaded(pod)).then_some(true)
        }
    }
}

/// The verdicts (as written in a store's status) that set a store aside from the cluster
/// freeze (see [`freeze_standing`]).
pub fn sets_aside_from_freeze(last_decision: &str) -> bool {
    [
        SkipReason::NodeNotReady,
        SkipReason::PodStuckTerminating,
        SkipReason::RecoveryPaused,
        SkipReason::RecoveryDisabled,
        SkipReason::RestartBudgetExhausted,
    ]
    .iter()
    .any(|reason| reason.as_str() == last_decision)
}

/// What is known of a store's Pod: nothing yet (the Pod cache has not listed once), or the
/// Pod as listed (`None`: there is none).
#[derive(Clone, Copy, Debug)]
pub enum KnownPod<'a> {
    NotLoaded,
    Loaded(Option<&'a PodFacts>),
}

/// More than `freeze_share` of the stores, and at least `freeze_min_offline` of them, are
/// offline while their pfs runs. Exactly at the share is not frozen.
pub fn cluster_frozen(cluster: &ClusterFacts, policy: &Policy) -> bool {
    if cluster.stores == 0 || cluster.offline < policy.freeze_min_offline {
        return false;
    }
    let share = cluster.offline as f64 / cluster.stores as f64;
    // A NaN share limit is a broken flag; a safety rail fails closed.
    policy.freeze_share.is_nan() || share > policy.freeze_share
}

/// The wait after the last restart when `attempts` consecutive restarts have not brought the
/// store back for good: backoff_initial after the first, doubled for each further one, capped at
/// backoff_max (no overflow on big attempts).
///
/// So `attempts = 1` waits `backoff_initial`, `attempts = 2` twice that, and so on; `attempts =
/// 0` (the last restart worked, but the store went away again) also waits `backoff_initial`.
/// Negative durations count as zero, and the cap wins over an initial delay above it.
pub fn backoff(policy: &Policy, attempts: u32) -> SignedDuration {
    let cap = policy.backoff_max.max(SignedDuration::ZERO);
    let mut delay = policy.backoff_initial.clamp(SignedDuration::ZERO, cap);
    // Doubling stops at the cap, so this runs a few dozen times at most whatever `attempts` is.
    for _ in 1..attempts {
        if delay.is_zero() || delay >= cap {
            break;
        }
        delay = delay.checked_mul(2).map_or(cap, |doubled| doubled.min(cap));
    }
    delay
}

/// Whether a restart at `last_restart` is still in flight at `now` for a store that is not alive.
///
/// It is while the store is not alive, the restart is younger than `in_flight_window`, and it
/// belongs to the current offline episode: made at or after `offline_since`, or made while the
/// store was up (`last_online`, when it last came online, is older than the restart) that has
/// not come online since. The latter is a restart of a store that was up (a manual one): the
/// killed pfs's `alive` node outlives it until that session expires. A restart the store came
/// online after brought it back; a later episode is another. The controller sums this over the other
/// stores into [`ClusterFacts::restarts_in_flight`].
pub fn in_flight(
    policy: &Policy,
    last_restart: Option<Timestamp>,
    offline_since: Option<Timestamp>,
    last_online: Option<Timestamp>,
    alive: bool,
    now: Timestamp,
) -> bool {
    let Some(last_restart) = last_restart else {
        return false;
    };
    !alive
        && now.duration_since(last_restart) < policy.in_flight_window
        && (offline_since.is_none_or(|since| last_restart >= since)
            || last_online.is_some_and(|online| online < last_restart))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The instant every test looks from unless it moves the clock.
    const NOW: Timestamp = Timestamp::constant(1_750_000_000, 0);

    fn secs(n: i64) -> SignedDuration {
        SignedDuration::from_secs(n)
    }

    fn ago(n: i64) -> Timestamp {
        NOW - secs(n)
    }

    fn later(n: i64) -> Timestamp {
        NOW + secs(n)
    }

    /// Offline grace 60 s, start grace 120 s, backoff 30 s doubling up to 600 s, 3 restarts an
    /// hour, frozen above half the stores offline, one restart in flight for up to 300 s.
    fn policy() -> Policy {
        Policy {
            enabled: true,
            offline_grace: secs(60),
            backoff_initial: secs(30),
            backoff_max: secs(600),
            max_restarts_per_hour: 3,
            start_grace: secs(120),
            freeze_share: 0.5,
            freeze_min_offline: 1,
            max_in_flight: 1,
            in_flight_window: secs(300),
            stable_period: secs(600),
        }
    }

    /// An observation under construction; each method reads as part of a sentence.
    #[derive(Clone)]
    struct Obs(Observation);

    impl Obs {
        /// A store a trusted view sees alive, its Pod running for a day, in a calm cluster of 10.
        fn alive() -> Obs {
            Obs(Observation {
                now: NOW,
                view_trusted: true,
                alive: Some(true),
                pod: Some(PodFacts {
                    uid: "pod-1".to_string(),
                    phase: "Running".to_string(),
                    terminating: false,
                    stop_due: None,
                    running_since: Some(ago(86_400)),
                    container_restarts: 0,
                    predecessor: Predecessor::Unknown,
                }),
                node: NodeHealth::Ready,
                pod_renderable: true,
                history: History {
                    offline_since: None,
                    last_restart: None,
                    recent_restarts: Vec::new(),
                    attempts: 0,
                    last_manual_restart: None,
                    unfinished: None,
                    back_since: None,
                },
                paused: false,
                manual_restart: None,
                cluster: ClusterFacts {
                    stores: 10,
                    offline: 0,
                    restarts_in_flight: 0,
                },
            })
        }

        /// A store whose `alive` node just vanished: no offline episode recorded yet.
        fn just_went_offline() -> Obs {
            let mut obs = Obs::alive();
            obs.0.alive = Some(false);
            obs.0.cluster.offline = 1;
            obs
        }

        /// A store offline since `t` (as recorded in its status).
        fn offline_since(t: Timestamp) -> Obs {
            Obs::just_went_offline().remembering_offline_since(t)
        }

        /// A store offline for an hour, past every rail: due for a restart.
        fn due() -> Obs {
            Obs::offline_since(ago(3_600))
        }

        /// The status still holds an offline episode that began at `t`.
        fn remembering_offline_since(mut self, t: Timestamp) -> Obs {
            self.0.history.offline_since = Some(t);
            self
        }

        fn untrusted(mut self) -> Obs {
            self.0.view_trusted = false;
            self
        }

        fn not_in_zookeeper(mut self) -> Obs {
            self.0.alive = None;
            self
        }

        fn pod_mut(&mut self) -> &mut PodFacts {
            self.0.pod.as_mut().expect("the fixture has a Pod")
        }

        fn pod_running_since(mut self, t: Timestamp) -> Obs {
            self.pod_mut().running_since = Some(t);
            self
        }

        fn without_pod(mut self) -> Obs {
            self.0.pod = None;
            self
        }

        fn pod_terminating(mut self) -> Obs {
            self.pod_mut().terminating = true;
            self
        }

        fn pod_in_phase(mut self, phase: &str) -> Obs {
            self.pod_mut().phase = phase.to_string();
            self
        }

        fn on_node(mut self, node: NodeHealth) -> Obs {
            self.0.node = node;
            self
        }

        fn container_not_running(mut self) -> Obs {
            self.pod_mut().running_since = None;
            self
        }

        /// Restarted at these instants; the latest is `last_restart`.
        fn restarted_at(mut self, times: &[Timestamp]) -> Obs {
            self.0.history.recent_restarts = times.to_vec();
            self.0.history.last_restart = times.iter().copied().max();
            self
        }

        /// The last restart was recorded for the Pod `pod_uid` (the fixture's is `pod-1`).
        fn unfinished(mut self, pod_uid: &str, reason: RestartReason) -> Obs {
            self.0.history.unfinished = Some(Unfinished {
                pod_uid: pod_uid.to_string(),
                reason,
            });
            self
        }

        fn after_attempts(mut self, attempts: u32) -> Obs {
            self.0.history.attempts = attempts;
            self
        }

        fn paused(mut self) -> Obs {
            self.0.paused = true;
            self
        }

        fn manual_restart(mut self, token: &str) -> Obs {
            self.0.manual_restart = Some(token.to_string());
            self
        }

        fn honoured(mut self, token: &str) -> Obs {
            self.0.history.last_manual_restart = Some(token.to_string());
            self
        }

        fn stores_offline(mut self, offline: usize, stores: usize) -> Obs {
            self.0.cluster.offline = offline;
            self.0.cluster.stores = stores;
            self
        }

        fn in_flight_elsewhere(mut self, restarts: usize) -> Obs {
            self.0.cluster.restarts_in_flight = restarts;
            self
        }

        fn decide(&self) -> Decision {
            self.decide_with(&policy())
        }

        fn decide_with(&self, policy: &Policy) -> Decision {
            decide(&self.0, policy)
        }

        fn verdict(&self) -> Verdict {
            self.decide().verdict
        }

        fn verdict_with(&self, policy: &Policy) -> Verdict {
            self.decide_with(policy).verdict
        }
    }

    fn wait(until: Timestamp, reason: SkipReason) -> Verdict {
        Verdict::Wait { until, reason }
    }

    const RESTART: Verdict = Verdict::Restart(RestartReason::Offline);
    const MANUAL: Verdict = Verdict::Restart(RestartReason::Manual);

    fn skip(reason: SkipReason) -> Verdict {
        Verdict::Skip(reason)
    }

    // --- Bookkeeping ---

    #[test]
    fn an_untrusted_view_leaves_the_bookkeeping_alone() {
        for obs in [
            Obs::alive(),
            Obs::alive().not_in_zookeeper(),
            Obs::just_went_offline(),
            Obs::offline_since(ago(100)).after_attempts(2),
            Obs::alive().after_attempts(3),
        ] {
            let obs = obs.untrusted();
            let decision = obs.decide();
            assert_eq!(decision.verdict, skip(SkipReason::ViewUntrusted));
            assert_eq!(decision.offline_since, obs.0.history.offline_since);
            assert_eq!(decision.attempts, obs.0.history.attempts);
        }
    }

    #[test]
    fn an_untrusted_view_does_not_reset_an_alive_store() {
        let decision = Obs::alive()
            .remembering_offline_since(ago(500))
            .after_attempts(1)
            .untrusted()
            .decide();
        assert_eq!(decision.offline_since, Some(ago(500)));
        assert_eq!(decision.attempts, 1);
    }

    #[test]
    fn an_alive_store_clears_offline_since_and_attempts() {
        let obs = Obs::alive()
            .remembering_offline_since(ago(500))
            .after_attempts(4);
        assert_eq!(
            obs.decide(),
            Decision {
                verdict: Verdict::Healthy,
                offline_since: None,
                attempts: 0,
                finishes: false,
                unfinished: None,
            }
        );
    }

    #[test]
    fn an_offline_episode_starts_now() {
        let decision = Obs::just_went_offline().decide();
        assert_eq!(decision.offline_since, Some(NOW));
    }

    #[test]
    fn a_store_missing_from_zookeeper_counts_as_offline() {
        let decision = Obs::alive().not_in_zookeeper().decide();
        assert_eq!(decision.offline_since, Some(NOW));
        assert_eq!(
            decision.verdict,
            wait(later(60), SkipReason::WithinGracePeriod)
        );
        assert_eq!(Obs::due().not_in_zookeeper().verdict(), RESTART);
    }

    #[test]
    fn an_offline_episode_keeps_its_start() {
        let decision = Obs::offline_since(ago(30)).decide();
        assert_eq!(decision.offline_since, Some(ago(30)));
    }

    #[test]
    fn a_restart_counts_an_attempt() {
        let decision = Obs::due().after_attempts(2).decide();
        assert_eq!(decision.verdict, RESTART);
        assert_eq!(decision.attempts, 3);

        let decision = Obs::offline_since(NOW).manual_restart("a").decide();
        assert_eq!(decision.verdict, MANUAL);
        assert_eq!(decision.attempts, 1);
    }

    #[test]
    fn waiting_or_skipping_keeps_the_attempts() {
        let waiting = Obs::offline_since(ago(10)).after_attempts(2).decide();
        assert!(matches!(waiting.verdict, Verdict::Wait { .. }));
        assert_eq!(waiting.attempts, 2);

        let skipping = Obs::due().paused().after_attempts(2).decide();
        assert_eq!(skipping.verdict, skip(SkipReason::RecoveryPaused));
        assert_eq!(skipping.attempts, 2);
    }

    #[test]
    fn attempts_saturate_instead_of_overflowing() {
        let decision = Obs::offline_since(NOW)
            .manual_restart("a")
            .after_attempts(u32::MAX)
            .decide();
        assert_eq!(decision.attempts, u32::MAX);
    }

    // --- Rules 1 to 3: trust, health, manual restarts ---

    #[test]
    fn an_untrusted_view_beats_a_manual_restart() {
        let obs = Obs::due().manual_restart("a").untrusted();
        assert_eq!(obs.verdict(), skip(SkipReason::ViewUntrusted));
    }

    #[test]
    fn an_alive_store_is_healthy_whatever_else_holds() {
        let obs = Obs::alive()
            .without_pod()
            .paused()
            .stores_offline(10, 10)
            .restarted_at(&[NOW]);
        assert_eq!(obs.verdict(), Verdict::Healthy);
    }

    #[test]
    fn a_manual_restart_applies_to_an_alive_store_too() {
        assert_eq!(Obs::alive().manual_restart("a").verdict(), MANUAL);
        assert_eq!(
            Obs::alive().manual_restart("a").honoured("a").verdict(),
            Verdict::Healthy
        );
        assert_eq!(
            Obs::alive().manual_restart("a").decide().attempts,
            0,
            "a healthy store has no failed attempts"
        );
    }

    #[test]
    fn a_manual_restart_is_honoured() {
        assert_eq!(Obs::due().manual_restart("a").verdict(), MANUAL);
    }

    #[test]
    fn a_manual_restart_is_honoured_once() {
        let obs = Obs::offline_since(ago(10))
            .manual_restart("a")
            .honoured("a");
        assert_eq!(
            obs.verdict(),
            wait(later(50), SkipReason::WithinGracePeriod)
        );
        // A new token is a new request.
        let obs = obs.manual_restart("b");
        assert_eq!(obs.verdict(), MANUAL);
    }

    #[test]
    fn a_manual_restart_bypasses_every_rail_but_trust_and_termination() {
        let disabled = Policy {
            enabled: false,
            ..policy()
        };
        let blocked = [
            (Obs::due().paused(), policy()),
            (Obs::due(), disabled),
            (Obs::due().without_pod(), policy()),
            (Obs::due().pod_in_phase("Pending"), policy()),
            (Obs::due().container_not_running(), policy()),
            (Obs::due().pod_running_since(ago(5)), policy()),
            (Obs::just_went_offline(), policy()),
            (
                Obs::due().restarted_at(&[ago(30), ago(20), ago(10)]),
                policy(),
            ),
            (Obs::due().restarted_at(&[ago(1)]), policy()),
            (Obs::due().stores_offline(10, 10), policy()),
            (Obs::due().in_flight_elsewhere(5), policy()),
        ];
        for (obs, policy) in blocked {
            assert_ne!(obs.verdict_with(&policy), MANUAL, "{:?}", obs.0);
            let obs = obs.manual_restart("a");
            assert_eq!(obs.verdict_with(&policy), MANUAL, "{:?}", obs.0);
        }
    }

    #[test]
    fn a_manual_restart_bypasses_all_rails_at_once() {
        let obs = Obs::just_went_offline()
            .paused()
            .pod_running_since(ago(1))
            .restarted_at(&[ago(3), ago(2), ago(1)])
            .stores_offline(10, 10)
            .in_flight_elsewhere(9)
            .manual_restart("a");
        let disabled = Policy {
            enabled: false,
            ..policy()
        };
        assert_eq!(obs.verdict_with(&disabled), MANUAL);
    }

    #[test]
    fn a_terminating_pod_beats_a_manual_restart() {
        let obs = Obs::due().pod_terminating().manual_restart("a");
        assert_eq!(obs.verdict(), skip(SkipReason::PodTerminating));
    }

    #[test]
    fn a_manual_restart_without_a_pod_still_restarts() {
        // The controller then has nothing to delete and only recreates the Pod.
        assert_eq!(
            Obs::due().without_pod().manual_restart("a").verdict(),
            MANUAL
        );
    }

    // --- Rules 4 to 8: switches and the Pod ---

    #[test]
    fn disabled_recovery_skips() {
        let disabled = Policy {
            enabled: false,
            ..policy()
        };
        assert_eq!(
            Obs::due().verdict_with(&disabled),
            skip(SkipReason::RecoveryDisabled)
        );
    }

    #[test]
    fn disabled_beats_paused() {
        let disabled = Policy {
            enabled: false,
            ..policy()
        };
        assert_eq!(
            Obs::due().paused().verdict_with(&disabled),
            skip(SkipReason::RecoveryDisabled)
        );
    }

    #[test]
    fn paused_recovery_skips() {
        assert_eq!(
            Obs::due().paused().verdict(),
            skip(SkipReason::RecoveryPaused)
        );
    }

    #[test]
    fn paused_beats_a_missing_pod() {
        let obs = Obs::due().paused().without_pod();
        assert_eq!(obs.verdict(), skip(SkipReason::RecoveryPaused));
    }

    #[test]
    fn a_missing_pod_skips() {
        assert_eq!(
            Obs::due().without_pod().verdict(),
            skip(SkipReason::PodMissing)
        );
    }

    #[test]
    fn a_terminating_pod_skips() {
        assert_eq!(
            Obs::due().pod_terminating().verdict(),
            skip(SkipReason::PodTerminating)
        );
    }

    #[test]
    fn a_pod_terminating_long_past_its_grace_is_stuck() {
        let due = NOW - SignedDuration::from_secs(10);
        let mut obs = Obs::due().pod_terminating();
        obs.pod_mut().stop_due = Some(due);
        assert_eq!(obs.verdict(), skip(SkipReason::PodTerminating));
        let mut overdue = Obs::due().pod_terminating();
        overdue.pod_mut().stop_due = Some(NOW - STOP_OVERDUE_AFTER);
        assert_eq!(overdue.verdict(), skip(SkipReason::PodStuckTerminating));
        // A manual restart waits all the same, and says why.
        let manual = overdue.manual_restart("a");
        assert_eq!(manual.verdict(), skip(SkipReason::PodStuckTerminating));
    }

    #[test]
    fn terminating_beats_not_running() {
        let obs = Obs::due().pod_terminating().pod_in_phase("Failed");
        assert_eq!(obs.verdict(), skip(SkipReason::PodTerminating));
    }

    #[test]
    fn a_pod_that_is_not_running_skips() {
        for phase in ["Pending", "Succeeded", "Failed", "Unknown", "running", ""] {
            assert_eq!(
                Obs::due().pod_in_phase(phase).verdict(),
                skip(SkipReason::PodNotRunning),
                "phase {phase:?}"
            );
        }
    }

    #[test]
    fn a_running_pod_whose_container_is_not_running_skips() {
        // ContainerCreating, CrashLoopBackOff, an image pull: the phase can say Running anyway.
        assert_eq!(
            Obs::due().container_not_running().verdict(),
            skip(SkipReason::PodNotRunning)
        );
    }

    #[test]
    fn not_running_beats_the_grace_periods() {
        let obs = Obs::just_went_offline().pod_in_phase("Pending");
        assert_eq!(obs.verdict(), skip(SkipReason::PodNotRunning));
    }

    // --- Rules 9 and 10: grace periods ---

    #[test]
    fn a_pod_that_just_started_waits_for_the_start_grace() {
        let obs = Obs::due().pod_running_since(ago(119));
        assert_eq!(obs.verdict(), wait(later(1), SkipReason::PodStarting));
    }

    #[test]
    fn the_start_grace_ends_exactly_at_its_instant() {
        assert_eq!(Obs::due().pod_running_since(ago(120)).verdict(), RESTART);
    }

    #[test]
    fn a_container_started_in_the_future_waits() {
        // Clock skew between the node and the operator must not shorten the grace.
        let obs = Obs::due().pod_running_since(later(10));
        assert_eq!(obs.verdict(), wait(later(130), SkipReason::PodStarting));
    }

    #[test]
    fn a_store_offline_for_less_than_the_grace_waits() {
        let obs = Obs::offline_since(ago(59));
        assert_eq!(obs.verdict(), wait(later(1), SkipReason::WithinGracePeriod));
    }

    #[test]
    fn the_offline_grace_ends_exactly_at_its_instant() {
        assert_eq!(Obs::offline_since(ago(60)).verdict(), RESTART);
    }

    #[test]
    fn a_store_that_just_went_offline_waits_the_whole_grace() {
        assert_eq!(
            Obs::just_went_offline().verdict(),
            wait(later(60), SkipReason::WithinGracePeriod)
        );
    }

    #[test]
    fn the_start_grace_beats_the_offline_grace() {
        let obs = Obs::just_went_offline().pod_running_since(ago(100));
        assert_eq!(obs.verdict(), wait(later(20), SkipReason::PodStarting));
    }

    #[test]
    fn an_endless_grace_waits_until_the_end_of_time_without_panicking() {
        let endless = Policy {
            offline_grace: SignedDuration::MAX,
            ..policy()
        };
        assert_eq!(
            Obs::due().verdict_with(&endless),
            wait(Timestamp::MAX, SkipReason::WithinGracePeriod)
        );
    }

    #[test]
    fn a_negative_grace_does_not_delay() {
        let negative = Policy {
            offline_grace: SignedDuration::MIN,
            start_grace: secs(-5),
            ..policy()
        };
        let obs = Obs::just_went_offline().pod_running_since(NOW);
        assert_eq!(obs.verdict_with(&negative), RESTART);
    }

    // --- Rule 11: the hourly budget ---

    #[test]
    fn a_spent_budget_skips() {
        let obs = Obs::due().restarted_at(&[ago(3_000), ago(2_000), ago(1_000)]);
        assert_eq!(obs.verdict(), skip(SkipReason::RestartBudgetExhausted));
    }

    #[test]
    fn a_restart_exactly_an_hour_old_no_longer_counts() {
        let obs = Obs::due().restarted_at(&[ago(3_600), ago(2_000), ago(1_000)]);
        assert_eq!(obs.verdict(), RESTART);
    }

    #[test]
    fn a_restart_just_under_an_hour_old_still_counts() {
        let obs = Obs::due().restarted_at(&[ago(3_599), ago(2_000), ago(1_000)]);
        assert_eq!(obs.verdict(), skip(SkipReason::RestartBudgetExhausted));
    }

    #[test]
    fn old_restarts_do_not_count() {
        let old: Vec<Timestamp> = (0..50).map(|i| ago(3_600 + i * 60)).collect();
        assert_eq!(Obs::due().restarted_at(&old).verdict(), RESTART);
    }

    #[test]
    fn a_budget_of_zero_allows_no_automatic_restart() {
        let none = Policy {
            max_restarts_per_hour: 0,
            ..policy()
        };
        assert_eq!(
            Obs::due().verdict_with(&none),
            skip(SkipReason::RestartBudgetExhausted)
        );
    }

    #[test]
    fn a_spent_budget_says_when_it_frees() {
        let restarts = [ago(3_000), ago(1_000), ago(100)];
        // Three within the hour, three allowed: the oldest must go first.
        assert_eq!(
            budget_frees_at(&restarts, NOW, &policy()),
            Some(ago(3_000) + SignedDuration::from_hours(1))
        );
        // One more allowed: not spent.
        let four = Policy {
            max_restarts_per_hour: 4,
            ..policy()
        };
        assert_eq!(budget_frees_at(&restarts, NOW, &four), None);
        // Two allowed: the two oldest must go.
        let two = Policy {
            max_restarts_per_hour: 2,
            ..policy()
        };
        assert_eq!(
            budget_frees_at(&restarts, NOW, &two),
            Some(ago(1_000) + SignedDuration::from_hours(1))
        );
        // None allowed: never.
        let none = Policy {
            max_restarts_per_hour: 0,
            ..policy()
        };
        assert_eq!(budget_frees_at(&restarts, NOW, &none), None);
        // Restarts older than the hour do not count.
        assert_eq!(budget_frees_at(&[ago(4_000)], NOW, &policy()), None);
    }

    #[test]
    fn the_budget_beats_the_backoff() {
        let obs = Obs::due().restarted_at(&[ago(3), ago(2), ago(1)]);
        assert_eq!(obs.verdict(), skip(SkipReason::RestartBudgetExhausted));
    }

    // --- Rule 12: backoff ---

    #[test]
    fn a_recent_restart_backs_off() {
        let obs = Obs::due().restarted_at(&[ago(29)]);
        assert_eq!(obs.verdict(), wait(later(1), SkipReason::BackingOff));
    }

    #[test]
    fn the_backoff_ends_exactly_at_its_instant() {
        assert_eq!(Obs::due().restarted_at(&[ago(30)]).verdict(), RESTART);
    }

    #[test]
    fn the_backoff_grows_with_the_attempts() {
        let roomy = Policy {
            max_restarts_per_hour: 100,
            ..policy()
        };
        let obs = Obs::due().restarted_at(&[ago(100)]).after_attempts(3);
        assert_eq!(
            obs.verdict_with(&roomy),
            wait(later(20), SkipReason::BackingOff)
        );
        let obs = obs.after_attempts(40);
        assert_eq!(
            obs.verdict_with(&roomy),
            wait(later(500), SkipReason::BackingOff)
        );
    }

    #[test]
    fn the_backoff_beats_the_cluster_rails() {
        let obs = Obs::due()
            .restarted_at(&[ago(10)])
            .stores_offline(10, 10)
            .in_flight_elsewhere(5);
        assert_eq!(obs.verdict(), wait(later(20), SkipReason::BackingOff));
    }

    #[test]
    fn backoff_doubles_per_attempt() {
        let expected = [30, 30, 60, 120, 240, 480, 600, 600];
        for (attempts, secs_expected) in (0u32..).zip(expected) {
            assert_eq!(backoff(&policy(), attempts), secs(secs_expected));
        }
    }

    #[test]
    fn backoff_is_capped_without_overflow() {
        for attempts in [40, 63, 64, 1_000, u32::MAX] {
            assert_eq!(backoff(&policy(), attempts), secs(600));
        }
        let huge = Policy {
            backoff_initial: SignedDuration::MAX,
            backoff_max: SignedDuration::MAX,
            ..policy()
        };
        assert_eq!(backoff(&huge, 40), SignedDuration::MAX);
        let big_cap = Policy {
            backoff_initial: secs(1),
            backoff_max: SignedDuration::MAX,
            ..policy()
        };
        assert_eq!(backoff(&big_cap, 11), secs(1_024));
        assert_eq!(backoff(&big_cap, u32::MAX), SignedDuration::MAX);
    }

    #[test]
    fn backoff_keeps_to_the_cap_and_to_zero() {
        let initial_above_cap = Policy {
            backoff_initial: secs(900),
            ..policy()
        };
        assert_eq!(backoff(&initial_above_cap, 0), secs(600));
        let zero = Policy {
            backoff_initial: SignedDuration::ZERO,
            ..policy()
        };
        assert_eq!(backoff(&zero, u32::MAX), SignedDuration::ZERO);
        let negative = Policy {
            backoff_initial: secs(-30),
            backoff_max: secs(-1),
            ..policy()
        };
        assert_eq!(backoff(&negative, 3), SignedDuration::ZERO);
    }

    // --- Rules 13 and 14: cluster-wide rails ---

    #[test]
    fn a_cluster_with_too_many_stores_offline_is_frozen() {
        let obs = Obs::due().stores_offline(6, 10);
        assert_eq!(obs.verdict(), skip(SkipReason::ClusterFrozen));
    }

    #[test]
    fn exactly_the_freeze_share_is_not_frozen() {
        assert_eq!(Obs::due().stores_offline(5, 10).verdict(), RESTART);
        let quarter = Policy {
            freeze_share: 0.25,
            ..policy()
        };
        assert_eq!(
            Obs::due().stores_offline(1, 4).verdict_with(&quarter),
            RESTART
        );
        assert_eq!(
            Obs::due().stores_offline(2, 4).verdict_with(&quarter),
            skip(SkipReason::ClusterFrozen)
        );
    }

    #[test]
    fn freeze_share_extremes() {
        let never = Policy {
            freeze_share: 1.0,
            ..policy()
        };
        assert_eq!(
            Obs::due().stores_offline(10, 10).verdict_with(&never),
            RESTART
        );
        let always = Policy {
            freeze_share: 0.0,
            ..policy()
        };
        assert_eq!(
            Obs::due().stores_offline(1, 10).verdict_with(&always),
            skip(SkipReason::ClusterFrozen)
        );
        let broken = Policy {
            freeze_share: f64::NAN,
            ..policy()
        };
        assert_eq!(
            Obs::due().verdict_with(&broken),
            skip(SkipReason::ClusterFrozen)
        );
    }

    #[test]
    fn a_lone_offline_store_does_not_freeze_a_small_cluster() {
        let two = Policy {
            freeze_min_offline: 2,
            ..policy()
        };
        assert_eq!(
            Obs::due().stores_offline(1, 1).verdict_with(&two),
            RESTART,
            "one store, offline: still recovered"
        );
        assert_eq!(Obs::due().stores_offline(1, 2).verdict_with(&two), RESTART);
        assert_eq!(
            Obs::due().stores_offline(2, 3).verdict_with(&two),
            skip(SkipReason::ClusterFrozen)
        );
    }

    #[test]
    fn a_cluster_without_stores_is_not_frozen() {
        assert_eq!(Obs::due().stores_offline(0, 0).verdict(), RESTART);
    }

    #[test]
    fn too_many_restarts_in_flight_skip() {
        assert_eq!(
            Obs::due().in_flight_elsewhere(1).verdict(),
            skip(SkipReason::TooManyInFlight)
        );
        let two = Policy {
            max_in_flight: 2,
            ..policy()
        };
        assert_eq!(
            Obs::due().in_flight_elsewhere(1).verdict_with(&two),
            RESTART
        );
        let none = Policy {
            max_in_flight: 0,
            ..policy()
        };
        assert_eq!(
            Obs::due().verdict_with(&none),
            skip(SkipReason::TooManyInFlight)
        );
    }

    #[test]
    fn a_frozen_cluster_beats_restarts_in_flight() {
        let obs = Obs::due().stores_offline(9, 10).in_flight_elsewhere(3);
        assert_eq!(obs.verdict(), skip(SkipReason::ClusterFrozen));
    }

    #[test]
    fn a_store_past_every_rail_restarts() {
        assert_eq!(
            Obs::due().decide(),
            Decision {
                verdict: RESTART,
                offline_since: Some(ago(3_600)),
                attempts: 1,
                finishes: false,
                unfinished: Some(Unfinished {
                    pod_uid: "pod-1".into(),
                    reason: RestartReason::Offline,
                }),
            }
        );
    }

    #[test]
    fn a_store_whose_pod_cannot_be_made_is_never_restarted() {
        let unrenderable = |obs: Obs| {
            let mut obs = obs;
            obs.0.pod_renderable = false;
            obs
        };
        assert_eq!(
            unrenderable(Obs::due()).verdict(),
            skip(SkipReason::ConfigInvalid)
        );
        assert_eq!(
            unrenderable(Obs::due().manual_restart("now")).verdict(),
            skip(SkipReason::ConfigInvalid)
        );
        assert_eq!(
            unrenderable(Obs::alive().manual_restart("now")).verdict(),
            skip(SkipReason::ConfigInvalid)
        );
        // Nothing to hold for a healthy store.
        assert_eq!(unrenderable(Obs::alive()).verdict(), Verdict::Healthy);
        // The request waits: it is honoured once a Pod can be made again.
        let decision = unrenderable(Obs::due().manual_restart("now")).decide();
        assert_eq!(decision.attempts, 0);
    }

    // --- Unfinished restarts ---

    #[test]
    fn a_restart_whose_pod_is_still_there_is_finished_not_counted_again() {
        // Recorded a second ago, the budget spent by it: the backoff and the budget counted
        // this very restart.
        let obs = Obs::due()
            .restarted_at(&[ago(1)])
            .after_attempts(1)
            .unfinished("pod-1", RestartReason::Offline);
        let mut tight = policy();
        tight.max_restarts_per_hour = 1;
        let decision = decide(&obs.0, &tight);
        assert_eq!(decision.verdict, RESTART);
        assert!(decision.finishes);
        assert_eq!(decision.attempts, 1);
        assert_eq!(decision.unfinished, obs.0.history.unfinished);
        // The other rails still hold it.
        for held in [
            obs.clone().paused(),
            obs.clone().stores_offline(6, 10),
            obs.clone().on_node(NodeHealth::NotReady),
        ] {
            let decision = held.decide();
            assert!(
                !matches!(decision.verdict, Verdict::Restart(_)),
                "{decision:?}"
            );
            assert_eq!(decision.unfinished, held.0.history.unfinished);
        }
    }

    #[test]
    fn a_manual_request_meanwhile_is_answered_by_the_unfinished_restart() {
        let obs = Obs::due()
            .restarted_at(&[ago(1)])
            .after_attempts(1)
            .unfinished("pod-1", RestartReason::Offline)
            .manual_restart("new");
        let decision = obs.decide();
        assert_eq!(decision.verdict, MANUAL);
        assert!(decision.finishes);
        assert_eq!(decision.attempts, 1);
        assert_eq!(
            decision.unfinished,
            Some(Unfinished {
                pod_uid: "pod-1".into(),
                reason: RestartReason::Manual,
            })
        );
    }

    #[test]
    fn a_restart_whose_pod_is_gone_or_going_is_done() {
        let recorded = || Obs::due().restarted_at(&[ago(1)]).after_attempts(1);
        for done in [
            recorded().unfinished("pod-0", RestartReason::Offline),
            recorded()
                .unfinished("pod-1", RestartReason::Offline)
                .pod_terminating(),
            recorded()
                .unfinished("pod-1", RestartReason::Offline)
                .without_pod(),
        ] {
            let decision = done.decide();
            assert!(
                !matches!(decision.verdict, Verdict::Restart(_)),
                "{decision:?}"
            );
            assert!(!decision.finishes);
            assert_eq!(decision.unfinished, None);
        }
    }

    #[test]
    fn an_unfinished_recovery_restart_of_a_store_back_online_is_dropped() {
        let decision = Obs::alive()
            .restarted_at(&[ago(1)])
            .unfinished("pod-1", RestartReason::Offline)
            .decide();
        assert_eq!(decision.verdict, Verdict::Healthy);
        assert_eq!(decision.unfinished, None);
    }

    #[test]
    fn an_unfinished_manual_restart_is_finished_even_for_a_healthy_store() {
        let obs = Obs::alive()
            .manual_restart("t1")
            .honoured("t1")
            .restarted_at(&[ago(1)])
            .unfinished("pod-1", RestartReason::Manual);
        assert!(may_restart_for(&obs.0));
        let decision = obs.decide();
        assert_eq!(decision.verdict, MANUAL);
        assert!(decision.finishes);
        assert_eq!(decision.unfinished, obs.0.history.unfinished);
    }

    #[test]
    fn an_untrusted_view_keeps_an_unfinished_restart() {
        let obs = Obs::due()
            .unfinished("pod-1", RestartReason::Offline)
            .untrusted();
        let decision = obs.decide();
        assert_eq!(decision.verdict, skip(SkipReason::ViewUntrusted));
        assert_eq!(decision.unfinished, obs.0.history.unfinished);
    }

    // --- Rule 15: the node ---

    #[test]
    fn a_due_restart_on_a_node_that_is_not_ready_skips() {
        assert_eq!(
            Obs::due().on_node(NodeHealth::NotReady).verdict(),
            skip(SkipReason::NodeNotReady)
        );
        assert_eq!(Obs::due().on_node(NodeHealth::Ready).verdict(), RESTART);
        // Not read (or unreadable): no obstacle.
        assert_eq!(Obs::due().on_node(NodeHealth::Unknown).verdict(), RESTART);
    }

    #[test]
    fn a_due_restart_on_a_node_not_yet_seen_in_contact_waits_until_it_would_be_silent() {
        let silent_at = NOW + SignedDuration::from_secs(25);
        assert_eq!(
            Obs::due()
                .on_node(NodeHealth::Unconfirmed { silent_at })
                .verdict(),
            Verdict::Wait {
                until: silent_at,
                reason: SkipReason::AwaitingNodeContact
            }
        );
    }

    #[test]
    fn the_node_is_asked_about_only_when_a_restart_is_otherwise_due_or_frozen() {
        // Every earlier rule decides without it, so the controller reads the node only then.
        for obs in [
            Obs::due().container_not_running(),
            Obs::due().pod_in_phase("Pending"),
            Obs::due().pod_terminating(),
            Obs::just_went_offline(),
            Obs::due().paused(),
        ] {
            let without = obs.clone().on_node(NodeHealth::Unknown).verdict();
            assert_ne!(without, RESTART);
            assert_eq!(obs.on_node(NodeHealth::NotReady).verdict(), without);
        }
    }

    /// The freeze (and the in-flight limit) hold a store whose node is out of contact as
    /// NodeNotReady, which sets it aside from the freeze: a node that died holding most of the
    /// stores does not keep the freeze up for the others.
    #[test]
    fn a_node_out_of_contact_holds_before_the_freeze_and_sets_the_store_aside() {
        let frozen = Obs::due().stores_offline(6, 10);
        assert_eq!(frozen.verdict(), skip(SkipReason::ClusterFrozen));
        let on_dead_node = frozen.on_node(NodeHealth::NotReady);
        assert_eq!(on_dead_node.verdict(), skip(SkipReason::NodeNotReady));
        assert!(sets_aside_from_freeze(SkipReason::NodeNotReady.as_str()));
        assert_eq!(
            Obs::due()
                .in_flight_elsewhere(1)
                .on_node(NodeHealth::NotReady)
                .verdict(),
            skip(SkipReason::NodeNotReady)
        );
        // Not known to be out of contact: the freeze holds it as before.
        for node in [
            NodeHealth::Ready,
            NodeHealth::Unknown,
            NodeHealth::Unconfirmed {
                silent_at: later(5),
            },
        ] {
            assert_eq!(
                Obs::due().stores_offline(6, 10).on_node(node).verdict(),
                skip(SkipReason::ClusterFrozen)
            );
        }
    }

    #[test]
    fn a_not_ready_node_does_not_hold_a_manual_restart() {
        // A human asked: the Pod object is replaced now, the kubelet does the rest when back.
        assert_eq!(
            Obs::due()
                .manual_restart("now")
                .on_node(NodeHealth::NotReady)
                .verdict(),
            MANUAL
        );
    }

    // --- in_flight ---

    /// A restart of a store that was up: its killed pfs's `alive` node goes only when that
    /// session expires. In flight until the store comes online again.
    #[test]
    fn a_restart_of_a_store_that_was_up_is_in_flight_once_it_drops_out() {
        assert!(in_flight(
            &policy(),
            Some(ago(20)),
            Some(ago(17)),
            Some(ago(900)),
            false,
            NOW
        ));
        // Back online after it, and down again: another episode.
        assert!(!in_flight(
            &policy(),
            Some(ago(20)),
            Some(ago(10)),
            Some(ago(15)),
            false,
            NOW
        ));
    }

    #[test]
    fn no_restart_is_not_in_flight() {
        assert!(!in_flight(&policy(), None, Some(ago(10)), None, false, NOW));
    }

    #[test]
    fn a_recent_restart_of_an_offline_store_is_in_flight() {
        assert!(in_flight(
            &policy(),
            Some(ago(299)),
            Some(ago(400)),
            None,
            false,
            NOW
        ));
        assert!(in_flight(&policy(), Some(ago(299)), None, None, false, NOW));
    }

    #[test]
    fn a_restart_of_an_alive_store_is_not_in_flight() {
        assert!(!in_flight(&policy(), Some(ago(10)), None, None, true, NOW));
    }

    #[test]
    fn a_restart_leaves_flight_exactly_at_the_window() {
        assert!(!in_flight(
            &policy(),
            Some(ago(300)),
            Some(ago(400)),
            None,
            false,
            NOW
        ));
    }

    #[test]
    fn a_restart_from_an_earlier_episode_is_not_in_flight() {
        assert!(!in_flight(
            &policy(),
            Some(ago(20)),
            Some(ago(19)),
            Some(ago(19)),
            false,
            NOW
        ));
        assert!(in_flight(
            &policy(),
            Some(ago(20)),
            Some(ago(20)),
            Some(ago(19)),
            false,
            NOW
        ));
    }

    // --- Labels ---

    #[test]
    fn all_lists_every_reason_once() {
        // A new reason does not compile here until it has its place in the list.
        let place = |reason: SkipReason| match reason {
            SkipReason::ViewUntrusted => 0,
            SkipReason::RecoveryDisabled => 1,
            SkipReason::RecoveryPaused => 2,
            SkipReason::PodMissing => 3,
            SkipReason::PodTerminating => 4,
            SkipReason::PodStuckTerminating => 5,
            SkipReason::NodeNotReady => 6,
            SkipReason::AwaitingNodeContact => 7,
            SkipReason::PodNotRunning => 8,
            SkipReason::PodStarting => 9,
            SkipReason::WithinGracePeriod => 10,
            SkipReason::BackingOff => 11,
            SkipReason::RestartBudgetExhausted => 12,
            SkipReason::ClusterFrozen => 13,
            SkipReason::TooManyInFlight => 14,
            SkipReason::ConfigInvalid => 15,
        };
        for (index, reason) in SkipReason::ALL.into_iter().enumerate() {
            assert_eq!(place(reason), index, "{reason:?}");
        }
    }

    #[test]
    fn labels_are_the_camel_case_names() {
        for reason in SkipReason::ALL {
            assert_eq!(reason.as_str(), format!("{reason:?}"));
        }
        for reason in [RestartReason::Offline, RestartReason::Manual] {
            assert_eq!(reason.as_str(), format!("{reason:?}"));
        }
        assert_eq!(SkipReason::ViewUntrusted.as_str(), "ViewUntrusted");
        assert_eq!(RestartReason::Manual.as_str(), "Manual");
    }

    // --- Sequences against an injected clock ---

    /// One store over time, with the controller's side played faithfully: write the bookkeeping
    /// back, and on a restart record it and bring up a new Pod.
    struct Store {
        obs: Observation,
        policy: Policy,
        /// Seconds a new pfs container takes to start after a restart.
        startup: i64,
        restarts: Vec<Timestamp>,
    }

    impl Store {
        fn new(obs: Obs, policy: Policy) -> Store {
            Store {
                obs: obs.0,
                policy,
                startup: 1,
                restarts: Vec::new(),
            }
        }

        fn step(&mut self, now: Timestamp) -> Verdict {
            self.obs.now = now;
            let decision = decide(&self.obs, &self.policy);
            let history = &mut self.obs.history;
            history.offline_since = decision.offline_since;
            history.attempts = decision.attempts;
            history.unfinished = decision.unfinished.clone();
            // As the status's Alive condition keeps it: True from when the store is seen alive,
            // ended by anything else, an untrusted view (Unknown) included.
            history.back_since = match (self.obs.view_trusted, self.obs.alive) {
                (true, Some(true)) => history.back_since.or(Some(now)),
                _ => None,
            };
            if let Verdict::Restart(reason) = decision.verdict {
                history.last_restart = Some(now);
                history.recent_restarts.push(now);
                if reason == RestartReason::Manual {
                    history.last_manual_restart = self.obs.manual_restart.clone();
                }
                // The restart's new Pod.
                if let Some(pod) = self.obs.pod.as_mut() {
                    pod.uid = format!("pod-{}", self.restarts.len() + 2);
                    pod.running_since = Some(now + secs(self.startup));
                }
                self.restarts.push(now);
            }
            decision.verdict
        }

        /// Steps second by second from `from` to `to` included.
        fn run(&mut self, from: i64, to: i64) {
            for s in from..=to {
                self.step(later(s));
            }
        }
    }

    #[test]
    fn a_store_goes_offline_waits_restarts_and_comes_back() {
        let mut store = Store::new(Obs::alive(), policy());
        assert_eq!(store.step(NOW), Verdict::Healthy);

        store.obs.alive = Some(false);
        assert_eq!(
            store.step(later(1)),
            wait(later(61), SkipReason::WithinGracePeriod)
        );
        assert_eq!(store.obs.history.offline_since, Some(later(1)));
        assert_eq!(
            store.step(later(60)),
            wait(later(61), SkipReason::WithinGracePeriod)
        );
        assert_eq!(store.step(later(61)), RESTART);
        assert_eq!(store.obs.history.attempts, 1);

        // The new container is starting: no second restart on its heels.
        assert_eq!(
            store.step(later(62)),
            wait(later(182), SkipReason::PodStarting)
        );

        store.obs.alive = Some(true);
        assert_eq!(store.step(later(70)), Verdict::Healthy);
        assert_eq!(store.obs.history.offline_since, None);
        // Back (since 70), but not yet for the stable period: a relapse would wait longer.
        assert_eq!(store.obs.history.attempts, 1);
        assert_eq!(store.step(later(669)), Verdict::Healthy);
        assert_eq!(store.obs.history.attempts, 1);
        assert_eq!(store.step(later(670)), Verdict::Healthy);
        assert_eq!(store.obs.history.attempts, 0);
        assert_eq!(store.restarts, [later(61)]);
    }

    #[test]
    fn a_store_that_stays_offline_backs_off_until_the_budget_is_spent_for_good() {
        let quick_start = Policy {
            start_grace: secs(10),
            ..policy()
        };
        let mut store = Store::new(Obs::offline_since(NOW), quick_start);
        store.run(0, 3_599);
        // The grace, then the grace again for each new pfs from its start (1 s after its
        // restart; longer than the backoffs of 30 s and 60 s), then the budget of 3 is spent.
        assert_eq!(store.restarts, [later(60), later(121), later(182)]);
        assert_eq!(store.obs.history.attempts, 3);
        // Three in a row that did not bring it back: no more, however long it stays offline
        // (the first restart aging out of the hour changes nothing).
        store.run(3_600, 20_000);
        assert_eq!(store.restarts.len(), 3);
        assert_eq!(
            store.step(later(20_001)),
            skip(SkipReason::RestartBudgetExhausted)
        );

        // It comes back (a human fixed its disk) and stays for the stable period, then drops
        // out again: a new episode with fresh attempts.
        store.obs.alive = Some(true);
        store.run(20_100, 20_700);
        assert_eq!(store.obs.history.attempts, 0);
        store.obs.alive = Some(false);
        store.run(20_701, 20_780);
        assert_eq!(store.restarts[3..], [later(20_761)]);
        assert_eq!(store.obs.history.attempts, 1);
    }

    #[test]
    fn a_pfs_started_after_its_store_went_offline_gets_the_whole_grace() {
        let quick_start = Policy {
            start_grace: secs(10),
            ..policy()
        };
        // Offline for an hour (its node drained, say); its new Pod's pfs has run for 30 s, past
        // the start grace: the 60 s grace counts from its start.
        let obs = Obs::due().pod_running_since(ago(30));
        assert_eq!(
            obs.verdict_with(&quick_start),
            wait(later(30), SkipReason::WithinGracePeriod)
        );
        let obs = Obs::due().pod_running_since(ago(60));
        assert_eq!(obs.verdict_with(&quick_start), RESTART);
        // A store that went offline while its pfs ran counts from then, as ever.
        let obs = Obs::offline_since(ago(20)).pod_running_since(ago(3_600));
        assert_eq!(
            obs.verdict_with(&quick_start),
            wait(later(40), SkipReason::WithinGracePeriod)
        );
    }

    #[test]
    fn restarts_in_a_row_spend_the_budget_whenever_they_were() {
        // Three attempts, none within the hour: spent all the same.
        let obs = Obs::due().restarted_at(&[ago(7_200)]).after_attempts(3);
        assert_eq!(obs.verdict(), skip(SkipReason::RestartBudgetExhausted));
        assert!(budget_spent(&obs.0.history, NOW, &policy()));
        // One fewer: restarted (its backoff, 120 s after the last, long over).
        let obs = obs.after_attempts(2);
        assert_eq!(obs.verdict(), RESTART);
        // A human still can.
        let obs = Obs::due().after_attempts(3).manual_restart("fix-1");
        assert_eq!(obs.verdict(), Verdict::Restart(RestartReason::Manual));
    }

    #[test]
    fn a_store_that_flaps_right_after_a_restart_backs_off() {
        let no_grace = Policy {
            offline_grace: SignedDuration::ZERO,
            start_grace: SignedDuration::ZERO,
            max_restarts_per_hour: 10,
            ..policy()
        };
        let mut store = Store::new(Obs::just_went_offline(), no_grace);
        assert_eq!(store.step(NOW), RESTART);
        // Each relapse within the stable period doubles the wait.
        for (restarted_at, relapse_at, next_restart) in [(0, 10, 30), (30, 40, 90), (90, 100, 210)]
        {
            store.obs.alive = Some(true);
            assert_eq!(store.step(later(restarted_at + 5)), Verdict::Healthy);
            store.obs.alive = Some(false);
            assert_eq!(
                store.step(later(relapse_at)),
                wait(later(next_restart), SkipReason::BackingOff)
            );
            assert_eq!(store.step(later(next_restart)), RESTART);
        }
        assert_eq!(store.obs.history.attempts, 4);
    }

    #[test]
    fn a_relapse_after_the_stable_period_waits_the_initial_backoff_only() {
        let no_grace = Policy {
            offline_grace: SignedDuration::ZERO,
            start_grace: SignedDuration::ZERO,
            backoff_initial: secs(700),
            backoff_max: secs(3_000),
            max_restarts_per_hour: 10,
            ..policy()
        };
        let mut store = Store::new(Obs::just_went_offline().after_attempts(3), no_grace);
        assert_eq!(store.step(NOW), RESTART);
        store.obs.alive = Some(true);
        assert_eq!(store.step(later(1)), Verdict::Healthy);
        assert_eq!(store.step(later(601)), Verdict::Healthy);
        assert_eq!(store.obs.history.attempts, 0);
        store.obs.alive = Some(false);
        // The backoff starts over, yet still keeps its initial distance from the last restart.
        assert_eq!(
            store.step(later(602)),
            wait(later(700), SkipReason::BackingOff)
        );
    }

    /// No alive reconcile came within the stable stretch (a long requeue): the drop itself
    /// tells that the store stayed back, by its status's `Alive` transition time.
    #[test]
    fn a_relapse_seen_only_when_it_drops_still_starts_the_backoff_over() {
        let no_grace = Policy {
            offline_grace: SignedDuration::ZERO,
            start_grace: SignedDuration::ZERO,
            backoff_initial: secs(10),
            backoff_max: secs(3_000),
            max_restarts_per_hour: 10,
            ..policy()
        };
        let mut store = Store::new(Obs::just_went_offline().after_attempts(5), no_grace);
        assert_eq!(store.step(NOW), RESTART);
        assert_eq!(store.obs.history.attempts, 6);
        // Back at 10 s, seen alive once then; the next look finds it gone at 650 s, past the
        // stable period (600 s) since it came back.
        store.obs.alive = Some(true);
        assert_eq!(store.step(later(10)), Verdict::Healthy);
        store.obs.alive = Some(false);
        let at = |t| Observation {
            now: later(t),
            ..store.obs.clone()
        };
        let decision = decide(&at(650), &store.policy);
        // The initial backoff (10 s after the last restart, long past): restarted at once,
        // the first attempt of a new run.
        assert_eq!(decision.verdict, RESTART);
        assert_eq!(decision.attempts, 1);
        // Back for less than the stable period: still flapping, the backoff goes on.
        let decision = decide(&at(300), &store.policy);
        assert_eq!(decision.attempts, 6);
        assert_eq!(decision.verdict, wait(later(320), SkipReason::BackingOff));
    }

    #[test]
    fn a_view_untrusted_meanwhile_starts_the_stable_period_over() {
        let no_grace = Policy {
            offline_grace: SignedDuration::ZERO,
            start_grace: SignedDuration::ZERO,
            ..policy()
        };
        let mut store = Store::new(Obs::just_went_offline(), no_grace);
        assert_eq!(store.step(NOW), RESTART);
        store.obs.alive = Some(true);
        store.run(1, 500);
        assert_eq!(store.obs.history.attempts, 1);
        // Nothing can vouch for the store while the view is untrusted.
        store.obs.view_trusted = false;
        assert_eq!(store.step(later(501)), skip(SkipReason::ViewUntrusted));
        store.obs.view_trusted = true;
        store.run(502, 1_101);
        assert_eq!(
            store.obs.history.attempts, 1,
            "back (for sure) only since 502"
        );
        store.step(later(1_102));
        assert_eq!(store.obs.history.attempts, 0);
    }

    #[test]
    fn a_store_back_for_a_moment_long_after_its_last_restart_is_still_flapping() {
        let no_grace = Policy {
            offline_grace: SignedDuration::ZERO,
            start_grace: SignedDuration::ZERO,
            backoff_initial: secs(300),
            backoff_max: secs(3_000),
            max_restarts_per_hour: 10,
            ..policy()
        };
        let mut store = Store::new(Obs::just_went_offline().after_attempts(3), no_grace);
        assert_eq!(store.step(NOW), RESTART);
        assert_eq!(store.obs.history.attempts, 4);
        // Long after the restart, far past the stable period, the store returns by itself for
        // a moment only: it has not stayed back, and its backoff goes on from where it was.
        store.obs.alive = Some(true);
        assert_eq!(store.step(later(1_000)), Verdict::Healthy);
        assert_eq!(store.obs.history.attempts, 4);
        store.obs.alive = Some(false);
        assert_eq!(
            store.step(later(1_010)),
            wait(later(2_400), SkipReason::BackingOff)
        );
    }

    #[test]
    fn an_untrusted_spell_neither_starts_nor_resets_the_timer() {
        let mut store = Store::new(Obs::offline_since(NOW), policy());
        assert_eq!(
            store.step(later(10)),
            wait(later(60), SkipReason::WithinGracePeriod)
        );

        // The view drops; meanwhile ZooKeeper (stale) says alive, then offline.
        store.obs.view_trusted = false;
        store.obs.alive = Some(true);
        assert_eq!(store.step(later(20)), skip(SkipReason::ViewUntrusted));
        store.obs.alive = Some(false);
        assert_eq!(store.step(later(90)), skip(SkipReason::ViewUntrusted));
        assert_eq!(store.obs.history.offline_since, Some(NOW));
        assert!(store.restarts.is_empty());

        // Trusted again: the episode that began at NOW is long past its grace.
        store.obs.view_trusted = true;
        assert_eq!(store.step(later(100)), RESTART);
    }

    #[test]
    fn an_untrusted_view_does_not_start_an_episode() {
        let mut store = Store::new(Obs::just_went_offline().untrusted(), policy());
        store.run(0, 100);
        assert_eq!(store.obs.history.offline_since, None);
        store.obs.view_trusted = true;
        assert_eq!(
            store.step(later(101)),
            wait(later(161), SkipReason::WithinGracePeriod)
        );
    }

    #[test]
    fn a_manual_restart_happens_once_per_token() {
        let mut store = Store::new(Obs::offline_since(NOW).manual_restart("t1"), policy());
        assert_eq!(store.step(NOW), MANUAL);
        assert_eq!(store.obs.history.last_manual_restart.as_deref(), Some("t1"));
        assert_eq!(
            store.step(later(1)),
            wait(later(121), SkipReason::PodStarting)
        );
        store.obs.manual_restart = Some("t2".to_string());
        assert_eq!(store.step(later(2)), MANUAL);
        assert_eq!(store.restarts, [NOW, later(2)]);
        assert_eq!(store.obs.history.attempts, 2);
    }

    // --- Properties over a grid ---

    /// Whether every automatic rail lets a restart through, checked as one conjunction rather
    /// than as the ordered rules of [`decide`].
    /// Finishing an unfinished restart passes the budget and the backoff (which counted it).
    fn all_rails_pass(
        obs: &Observation,
        policy: &Policy,
        offline_since: Timestamp,
        finishing: bool,
    ) -> bool {
        let now = obs.now;
        let history = &obs.history;
        let pod_ready = obs.pod.as_ref().is_some_and(|pod| {
            !pod.terminating
                && pod.phase == "Running"
                && pod
                    .running_since
                    .is_some_and(|since| now.duration_since(since) >= policy.start_grace)
        });
        let running_since = obs
            .pod
            .as_ref()
            .and_then(|pod| pod.running_since)
            .unwrap_or(Timestamp::MIN);
        let in_hour = history
            .recent_restarts
            .iter()
            .filter(|&&t| t > now - SignedDuration::from_hours(1))
            .count();
        let backed_off = history
            .last_restart
            .is_none_or(|last| now.duration_since(last) >= backoff(policy, history.attempts));
        let cluster = &obs.cluster;
        let frozen = cluster.stores > 0
            && cluster.offline >= policy.freeze_min_offline
            && cluster.offline as f64 / cluster.stores as f64 > policy.freeze_share;
        policy.enabled
            && !obs.paused
            && pod_ready
            && matches!(obs.node, NodeHealth::Ready | NodeHealth::Unknown)
            && now.duration_since(offline_since.max(running_since)) >= policy.offline_grace
            && (finishing || in_hour < policy.max_restarts_per_hour as usize)
            && (finishing || history.attempts < policy.max_restarts_per_hour)
            && (finishing || backed_off)
            && !frozen
            && cluster.restarts_in_flight < policy.max_in_flight
    }

    /// Every observation of `grid` once per value, varied by `apply`.
    fn vary<T>(grid: Vec<Obs>, values: &[T], apply: impl Fn(Obs, &T) -> Obs) -> Vec<Obs> {
        grid.iter()
            .flat_map(|obs| values.iter().map(|value| apply(obs.clone(), value)))
            .collect()
    }

    /// Offline stores around every boundary of every rule, in every combination.
    fn grid() -> Vec<Obs> {
        let grid = vec![Obs::just_went_offline().honoured("old")];
        let grid = vary(
            grid,
            &[None, Some(0), Some(59), Some(60), Some(3_600)],
            |obs, age| match age {
                Some(age) => obs.remembering_offline_since(ago(*age)),
                None => obs,
            },
        );
        let pods = [
            "just started",
            "starting",
            "past its start grace",
            "running for a day",
            "without a running container",
            "pending",
            "terminating",
            "missing",
        ];
        let grid = vary(grid, &pods, |obs, pod| match *pod {
            "just started" => obs.pod_running_since(NOW),
            "starting" => obs.pod_running_since(ago(119)),
            "past its start grace" => obs.pod_running_since(ago(120)),
            "without a running container" => obs.container_not_running(),
            "pending" => obs.pod_in_phase("Pending"),
            "terminating" => obs.pod_terminating(),
            "missing" => obs.without_pod(),
            _ => obs,
        });
        let restart_histories = [
            vec![],
            vec![ago(0)],
            vec![ago(29)],
            vec![ago(30)],
            vec![ago(60)],
            vec![ago(3_600)],
            vec![ago(2_000), ago(1_000), ago(60)],
            vec![ago(3_600), ago(2_000), ago(1_000)],
        ];
        let grid = vary(grid, &restart_histories, |obs, restarts| {
            obs.restarted_at(restarts)
        });
        let grid = vary(grid, &[0, 1, 40], |obs, attempts| {
            obs.after_attempts(*attempts)
        });
        let grid = vary(
            grid,
            &[(1, 0), (5, 0), (6, 0), (1, 1)],
            |obs, (offline, in_flight)| {
                obs.stores_offline(*offline, 10)
                    .in_flight_elsewhere(*in_flight)
            },
        );
        let grid = vary(
            grid,
            &[None, Some("old"), Some("new")],
            |obs, token| match token {
                Some(token) => obs.manual_restart(token),
                None => obs,
            },
        );
        let grid = vary(grid, &[false, true], |obs, paused| {
            if *paused { obs.paused() } else { obs }
        });
        let grid = vary(
            grid,
            &[
                NodeHealth::Ready,
                NodeHealth::Unknown,
                NodeHealth::Unconfirmed {
                    silent_at: NOW + SignedDuration::from_secs(10),
                },
                NodeHealth::NotReady,
            ],
            |obs, node| obs.on_node(*node),
        );
        let grid = vary(
            grid,
            &[
                None,
                Some(("pod-1", RestartReason::Offline)),
                Some(("pod-1", RestartReason::Manual)),
                Some(("pod-0", RestartReason::Offline)),
            ],
            |obs, unfinished| match unfinished {
                Some((pod, reason)) => obs.unfinished(pod, *reason),
                None => obs,
            },
        );
        vary(grid, &[true, false], |obs, trusted| {
            if *trusted { obs } else { obs.untrusted() }
        })
    }

    fn may_restart_for(obs: &Observation) -> bool {
        may_restart(
            obs.view_trusted,
            obs.alive,
            obs.manual_restart.as_deref(),
            &obs.history,
        )
    }

    /// The other side of [`may_restart`]: a store it rules out is never restarted, whatever
    /// its Pod, history or cluster.
    #[test]
    fn an_alive_store_without_a_new_manual_request_never_restarts() {
        let alive = grid().into_iter().map(|obs| {
            let mut obs = obs.0;
            obs.alive = Some(true);
            obs
        });
        for obs in alive {
            let decision = decide(&obs, &policy());
            if !may_restart_for(&obs) {
                assert!(
                    !matches!(decision.verdict, Verdict::Restart(_)),
                    "{obs:?} -> {decision:?}"
                );
            }
        }
    }

    #[test]
    fn only_stores_offline_while_their_pfs_runs_count_for_the_freeze() {
        let running = Obs::alive().0.pod.unwrap();
        assert!(offline_while_running(
            false,
            KnownPod::Loaded(Some(&running))
        ));
        assert!(
            !offline_while_running(true, KnownPod::Loaded(Some(&running))),
            "alive"
        );
        let terminating = PodFacts {
            terminating: true,
            stop_due: None,
            ..running.clone()
        };
        let not_running = PodFacts {
            phase: "Pending".into(),
            running_since: None,
            ..running.clone()
        };
        // Evicted from a dead node, waiting to be scheduled or pulled, crash-looping, gone.
        for pod in [Some(&terminating), Some(&not_running), None] {
            assert!(
                !offline_while_running(false, KnownPod::Loaded(pod)),
                "{pod:?}"
            );
        }
        // Before the Pod cache has listed once, every store not alive counts: the freeze
        // fails closed. An alive store never counts.
        assert!(offline_while_running(false, KnownPod::NotLoaded));
        assert!(!offline_while_running(true, KnownPod::NotLoaded));
        // A Pod whose node stopped reporting still shows its container running: its pfs may
        // well run, cut off like the others.
        let unknown = PodFacts {
            phase: "Unknown".into(),
            ..running
        };
        assert!(offline_while_running(
            false,
            KnownPod::Loaded(Some(&unknown))
        ));
    }

    #[test]
    fn the_freeze_share_is_taken_of_the_stores_that_could_be_offline_with_their_pfs_running() {
        let running = Obs::alive().0.pod.unwrap();
        let pending = PodFacts {
            phase: "Pending".into(),
            running_since: None,
            ..running.clone()
        };
        let loaded = |pod| KnownPod::Loaded(pod);
        assert_eq!(
            freeze_standing(true, false, loaded(Some(&running))),
            Some(false)
        );
        assert_eq!(
            freeze_standing(false, false, loaded(Some(&running))),
            Some(true)
        );
        assert_eq!(
            freeze_standing(false, false, KnownPod::NotLoaded),
            Some(true)
        );
        // No pfs runs: neither up nor down for the share.
        assert_eq!(freeze_standing(false, false, loaded(Some(&pending))), None);
        assert_eq!(freeze_standing(false, false, loaded(None)), None);
        assert_eq!(freeze_standing(true, false, loaded(None)), Some(false));
        // Set aside by recovery for a reason of its own: not counted, whatever its Pod shows.
        assert_eq!(freeze_standing(false, true, loaded(Some(&running))), None);
        assert_eq!(freeze_standing(true, true, loaded(Some(&running))), None);
        for reason in [
            "NodeNotReady",
            "PodStuckTerminating",
            "RecoveryPaused",
            "RecoveryDisabled",
            "RestartBudgetExhausted",
        ] {
            assert!(sets_aside_from_freeze(reason), "{reason}");
        }
        for reason in [
            "ClusterFrozen",
            "WithinGracePeriod",
            "BackingOff",
            "TooManyInFlight",
            "RestartOffline",
            "PodStarting",
        ] {
            assert!(!sets_aside_from_freeze(reason), "{reason}");
        }
    }

    #[test]
    fn properties_hold_over_a_grid() {
        let disabled = Policy {
            enabled: false,
            ..policy()
        };
        let grid = grid();
        assert_eq!(grid.len(), 5 * 8 * 8 * 3 * 4 * 3 * 2 * 4 * 4 * 2);
        for policy in [policy(), disabled] {
            for obs in &grid {
                check_properties(&obs.0, &policy);
            }
        }
    }

    fn check_properties(obs: &Observation, policy: &Policy) {
        let decision = decide(obs, policy);
        let history = &obs.history;
        let context = format!("{obs:?} -> {decision:?}");
        if matches!(decision.verdict, Verdict::Restart(_)) {
            assert!(may_restart_for(obs), "{context}");
        }

        if !obs.view_trusted {
            assert_eq!(
                decision.verdict,
                skip(SkipReason::ViewUntrusted),
                "{context}"
            );
            assert_eq!(decision.offline_since, history.offline_since, "{context}");
            assert_eq!(decision.attempts, history.attempts, "{context}");
            return;
        }
        let offline_since = history.offline_since.unwrap_or(obs.now);
        assert_eq!(decision.offline_since, Some(offline_since), "{context}");

        let restarted = matches!(decision.verdict, Verdict::Restart(_));
        let expected_attempts = history.attempts + u32::from(restarted && !decision.finishes);
        assert_eq!(decision.attempts, expected_attempts, "{context}");

        // An unfinished restart is finished only for the Pod it was recorded for, and is
        // forgotten once that Pod is gone; a new restart of a Pod is the unfinished one.
        let finishing = history.unfinished.as_ref().filter(|u| {
            obs.pod
                .as_ref()
                .is_some_and(|pod| pod.uid == u.pod_uid && !pod.terminating)
        });
        assert_eq!(
            decision.finishes,
            restarted && finishing.is_some(),
            "{context}"
        );
        if restarted {
            let Verdict::Restart(reason) = decision.verdict else {
                unreachable!()
            };
            let expected = obs.pod.as_ref().map(|pod| Unfinished {
                pod_uid: pod.uid.clone(),
                reason,
            });
            assert_eq!(decision.unfinished, expected, "{context}");
        } else if finishing.is_none() {
            assert_eq!(decision.unfinished, None, "{context}");
        }

        let manual = obs.manual_restart.as_deref() == Some("new")
            || finishing.is_some_and(|u| u.reason == RestartReason::Manual);
        let terminating = obs.pod.as_ref().is_some_and(|pod| pod.terminating);
        if manual {
            let expected = if terminating {
                skip(SkipReason::PodTerminating)
            } else {
                MANUAL
            };
            assert_eq!(decision.verdict, expected, "{context}");
            return;
        }
        // Without a manual request, an automatic restart happens exactly when every rail passes.
        let rails = all_rails_pass(obs, policy, offline_since, finishing.is_some());
        assert_eq!(decision.verdict == RESTART, rails, "{context}");

        if let Verdict::Wait { until, reason } = decision.verdict {
            assert!(until > obs.now, "{context}");
            // The timer is not spurious: at `until`, the same facts (with the bookkeeping written
            // back) no longer wait for that rule, and never for an earlier instant.
            let mut at_until = obs.clone();
            at_until.now = until;
            at_until.history.offline_since = decision.offline_since;
            // A node still silent by then is out of contact (as the controller would find it).
            if let NodeHealth::Unconfirmed { silent_at } = at_until.node
                && silent_at <= until
            {
                at_until.node = NodeHealth::NotReady;
            }
            let again = decide(&at_until, policy);
            if let Verdict::Wait {
                until: next,
                reason: next_reason,
            } = again.verdict
            {
                assert_ne!(next_reason, reason, "{context}");
                assert!(next > until, "{context}");
            }
        }
    }
}
