//! A store's status from what was observed and decided: the ZooKeeper view of the store, its
//! Pod, the recovery decision and any restart just made. Pure code with `now` passed in.
//!
//! The status only changes when something in it changes (conditions keep their
//! `lastTransitionTime`, `lastObservedTime` moves only with the observation), so an idle store
//! is never written.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::controller::pods::ForeignPfs;
use crate::crd::{Phase, PureFlashStoreStatus, TrayStatus, UnfinishedRestart};
use crate::recovery::{
    self, Decision, History, PodFacts, Policy, Predecessor, RestartReason, SkipReason, Verdict,
};
use crate::rollout::HoldReason;
use crate::zk::StoreView;

/// The metadata DB sync as this replica sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DbState {
    /// No `--db`: the operator does not maintain the DB.
    NotConfigured,
    /// The last pass succeeded.
    Synced,
    /// Not yet synced since start (or waiting for a trusted view).
    Pending,
    /// The last pass failed.
    Failing(String),
    /// Passes succeed, but the store's rows do not follow ZooKeeper: why.
    Held(String),
}

/// A restart made in this reconcile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Restart {
    pub at: Timestamp,
    /// The manual-restart token honoured, for a manual restart.
    pub manual_token: Option<String>,
    /// It finishes the restart recorded last ([`Decision::finishes`]): not counted again.
    pub finishing: bool,
}

/// Everything the status is computed from.
pub struct Facts<'a> {
    pub now: Timestamp,
    pub generation: Option<i64>,
    pub previous: &'a PureFlashStoreStatus,
    pub view_trusted: bool,
    /// ZooKeeper has no stores directory for the cluster (what makes a view of a connected,
    /// synced session untrusted for stores: see `Snapshot::knows_stores`).
    pub no_stores_dir: bool,
    /// Why the operator's ZooKeeper view is not trusted, if it is not ([`Health::distrust`]).
    ///
    /// [`Health::distrust`]: crate::zk::Health::distrust
    pub view_distrust: Option<String>,
    /// The store as ZooKeeper shows it (None: not registered).
    pub store: Option<&'a StoreView>,
    /// The trays the spec lists.
    pub spec_trays: usize,
    pub pod_name: &'a str,
    pub pod: Option<&'a PodFacts>,
    pub pod_ready: bool,
    /// Why the pfs container is not running, if it waits (`ContainerCreating`, `ErrImagePull`…).
    pub pod_waiting: Option<&'a str>,
    pub decision: &'a Decision,
    pub restart: Option<&'a Restart>,
    pub policy: &'a Policy,
    /// The store's `pureflash.io/recovery-paused` annotation is set.
    pub recovery_paused: bool,
    pub db: &'a DbState,
    /// Why the Pod still runs an older configuration, if it is held back.
    pub rollout_held: Option<&'a HoldReason>,
    /// Why no pfs.conf can be rendered for the store, if it cannot.
    pub config_error: Option<&'a str>,
    /// A write of the store's ConfigMap or Pod that failed in this reconcile, if one did.
    pub write_error: Option<&'a str>,
    /// Another Pod runs pfs for the store's id, so none is created.
    pub foreign_pfs: Option<&'a ForeignPfs>,
    /// The store's node, when it is cordoned and so gets no Pod.
    pub cordoned_node: Option<&'a str>,
    /// `--max-unavailable`, for the held rollout's message.
    pub max_unavailable: usize,
}

/// The PodReady reason of a store whose node is cordoned, and so has no Pod.
pub const NODE_CORDONED: &str = "NodeCordoned";

/// How often trays' `freeSize` alone rewrites a status. pfs updates `free_size` as data is
/// written; a status write per update per store would load the API server with thousands of
/// writes a second for a figure nothing decides on. Any other change writes it at once.
pub const FREE_SIZE_REFRESH: jiff::SignedDuration = jiff::SignedDuration::from_secs(60);

fn time(at: Timestamp) -> Time {
    Time(at)
}

/// Sets one condition, keeping its transition time when its status did not change.
fn condition(
    previous: &[Condition],
    kind: &str,
    status: &str,
    reason: &str,
    message: String,
    facts: &Facts<'_>,
) -> Condition {
    condition_at(
        previous,
        (kind, status, reason),
        message,
        facts.now,
        facts.generation,
    )
}

fn condition_at(
    previous: &[Condition],
    (kind, status, reason): (&str, &str, &str),
    message: String,
    now: Timestamp,
    generation: Option<i64>,
) -> Condition {
    let since = previous
        .iter()
        .find(|c| c.type_ == kind && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| time(now));
    Condition {
        type_: kind.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message,
        last_transition_time: since,
        observed_generation: generation,
    }
}

/// The Ready condition reason of a store whose storeId another PureFlashStore claimed first.
pub const DUPLICATE_STORE_ID: &str = "DuplicateStoreId";

/// Whether standing aside as `status` ([`duplicate`]) says something `previous` did not:
/// told once per holder, not again for a status rewritten for another reason (a spec edit's
/// `observedGeneration`, say).
pub fn duplicate_is_news(previous: &PureFlashStoreStatus, status: &PureFlashStoreStatus) -> bool {
    let told = |status: &PureFlashStoreStatus| {
        status
            .conditions
            .iter()
            .find(|c| c.reason == DUPLICATE_STORE_ID)
            .map(|c| c.message.clone())
    };
    told(status).is_some_and(|now| told(previous) != Some(now))
}

/// The status of a store that is not run because `holder` (`namespace/name`) claimed its
/// storeId first. What ZooKeeper shows under that id is the holder's, so none of it is
/// mirrored here; the restart history stays.
pub fn duplicate(
    previous: &PureFlashStoreStatus,
    store_id: i32,
    holder: &str,
    now: Timestamp,
    generation: Option<i64>,
) -> PureFlashStoreStatus {
    let ready = condition_at(
        &previous.conditions,
        ("Ready", "False", DUPLICATE_STORE_ID),
        format!(
            "storeId {store_id} belongs to PureFlashStore {holder}, which has been online under it or was created earlier: this store is not run while that one exists"
        ),
        now,
        generation,
    );
    let status = PureFlashStoreStatus {
        phase: Some(Phase::Pending),
        observed_generation: generation,
        conditions: vec![ready],
        last_observed_time: previous.last_observed_time.clone(),
        restart_count: previous.restart_count,
        last_restart_time: previous.last_restart_time.clone(),
        recent_restarts: previous.recent_restarts.clone(),
        recovery_attempts: previous.recovery_attempts,
        last_manual_restart: previous.last_manual_restart.clone(),
        ..PureFlashStoreStatus::default()
    };
    if status == *previous {
        return status;
    }
    PureFlashStoreStatus {
        last_observed_time: Some(time(now)),
        ..status
    }
}

/// Whether the `alive` that stands is the one of the pfs the Pod replaced, whose session has
/// not expired yet, while the new pfs runs and waits for it: the store looks alive, but what
/// stands behind it is gone. Only within the start grace: a session older than the Pod that
/// lives on belongs to a pfs that still serves (one running outside Kubernetes, say, when the
/// operator adopts a store), and the store is online through it.
fn alive_of_predecessor(facts: &Facts<'_>) -> bool {
    let (Some(store), Some(pod)) = (facts.store, facts.pod) else {
        return false;
    };
    pod.starting(facts.policy, facts.now)
        && store.alive
        && pod.container_restarts == 0
        && matches!(pod.predecessor, Predecessor::Session(old) if store.alive_session == Some(old))
}

fn phase(facts: &Facts<'_>, alive: bool, in_flight: bool) -> Phase {
    if !facts.view_trusted {
        return Phase::Unknown;
    }
    if alive && alive_of_predecessor(facts) {
        return Phase::Starting;
    }
    if alive {
        return Phase::Online;
    }
    if in_flight {
        return Phase::Recovering;
    }
    // The store was up and went down: it stays Offline, not Pending ("not running yet"), while
    // its Pod is missing, going away (stuck, maybe) or not running. Known from the last status
    // (alive, or already Offline or being recovered, before a ZooKeeper blip too), or from a
    // pfs container that has run before and is crash-looping now.
    let was_up = facts.previous.alive == Some(true)
        || matches!(
            last_trusted_phase(facts.previous),
            Some(Phase::Offline | Phase::Recovering)
        );
    // Without a Pod (or with one going away) a store never up waits for one, as when first
    // applied.
    let Some(pod) = facts.pod.filter(|p| !p.terminating) else {
        return if was_up {
            Phase::Offline
        } else {
            Phase::Pending
        };
    };
    let was_up = was_up || pod.container_restarts > 0;
    let running = pod.phase == "Running" && pod.running_since.is_some();
    if pod.starting(facts.policy, facts.now) {
        Phase::Starting
    } else if running || was_up {
        Phase::Offline
    } else {
        Phase::Pending
    }
}

/// When time alone next changes the phase `status` holds, with nothing else happening:
/// `Starting` ends with the start grace of the Pod's pfs, `Recovering` with the in-flight
/// window of the last restart (after either the store reads `Offline` if it is still down).
/// No ZooKeeper or Pod event comes then, so the reconcile must be scheduled for it: a store
/// whose new pfs never registers would otherwise read `Starting` until the next periodic look.
pub fn phase_changes_at(
    status: &PureFlashStoreStatus,
    pod: Option<&PodFacts>,
    policy: &Policy,
    now: Timestamp,
) -> Option<Timestamp> {
    let at = match status.phase? {
        Phase::Online if status.condition("TraysOnline", "False").is_some() => {
            trays_registering_until(status, pod, policy)?
        }
        Phase::Starting => pod?.start_grace_ends(policy)?,
        Phase::Recovering => status
            .last_restart_time
            .as_ref()?
            .0
            .checked_add(policy.in_flight_window)
            .ok()?,
        _ => return None,
    };
    (at > now).then_some(at)
}

/// How long after its `alive` appears a store's trays may still be coming online (or the start
/// grace, if shorter): pfs creates `alive` before its trays' `online` nodes, and the view may
/// see them apart.
pub const TRAYS_SETTLE: jiff::SignedDuration = jiff::SignedDuration::from_secs(10);

/// Until when an alive store's pfs may still be registering its trays: its container started
/// less than the start grace ago, or the store came online (`lastOnlineTime`: a ZooKeeper blip
/// in between does not count) less than [`TRAYS_SETTLE`] (or the start grace) ago. Trays
/// missing meanwhile are not yet a degraded store.
fn trays_registering_until(
    status: &PureFlashStoreStatus,
    pod: Option<&PodFacts>,
    policy: &Policy,
) -> Option<Timestamp> {
    let settled = status.last_online_time.as_ref().and_then(|online| {
        let settle = TRAYS_SETTLE.min(policy.start_grace.max(jiff::SignedDuration::ZERO));
        online.0.saturating_add(settle).ok()
    });
    settled.max(pod.and_then(|pod| pod.start_grace_ends(policy)))
}

/// The previous status, when `status` differs from it only in trays' free sizes and the
/// previous observation is younger than [`FREE_SIZE_REFRESH`].
fn free_sizes_damped(
    facts: &Facts<'_>,
    status: &PureFlashStoreStatus,
) -> Option<PureFlashStoreStatus> {
    let previous = facts.previous;
    let observed = previous.last_observed_time.as_ref()?.0;
    let recent = facts.now
        < observed
            .saturating_add(FREE_SIZE_REFRESH)
            .unwrap_or(Timestamp::MAX);
    if !facts.view_trusted || !recent || status.trays.len() != previous.trays.len() {
        return None;
    }
    let mut damped = status.clone();
    for (tray, before) in damped.trays.iter_mut().zip(&previous.trays) {
        tray.free_size = before.free_size;
    }
    damped.last_observed_time = previous.last_observed_time.clone();
    (damped == *previous).then_some(damped)
}

/// When the free sizes `store` reports, which `status` (as computed) holds back, are due to be
/// written: [`FREE_SIZE_REFRESH`] after the status's observation. The reconcile looks again
/// then, so a change held back is written within that time even if nothing else happens.
pub fn free_sizes_due(
    status: &PureFlashStoreStatus,
    store: Option<&StoreView>,
) -> Option<Timestamp> {
    let store = store?;
    let observed = status.last_observed_time.as_ref()?.0;
    let held = status.trays.len() == store.trays.len()
        && status
            .trays
            .iter()
            .zip(store.trays.values())
            .any(|(shown, tray)| shown.free_size != tray.free_size.valid().map(|v| *v as i64));
    held.then(|| {
        observed
            .saturating_add(FREE_SIZE_REFRESH)
            .unwrap_or(Timestamp::MAX)
    })
}

/// TraysOnline: whether every tray of the spec is online in ZooKeeper. A store can be alive
/// and serve none of its disks (a failed disk, a tray pfs could not open), which Ready, about
/// the daemon, does not say.
fn trays_condition(
    facts: &Facts<'_>,
    status: &PureFlashStoreStatus,
    alive: &Condition,
) -> Condition {
    let previous = &facts.previous.conditions;
    // Alive as the Alive condition has it: an `alive` still owned by the replaced pfs's
    // session is not the store's, nor are its trays.
    let store = match facts.store {
        Some(store) if facts.view_trusted && alive.status == "True" => store,
        // Not known, not registered, or not alive: as the Alive condition says.
        _ => {
            let status = if alive.status == "Unknown" {
                "Unknown"
            } else {
                "False"
            };
            return condition(
                previous,
                "TraysOnline",
                status,
                &alive.reason,
                alive.message.clone(),
                facts,
            );
        }
    };
    // Counted, not matched by device: pfs may register a tray under another name for the same
    // disk (a resolved by-id link). A tray node left from a replaced disk, offline for good,
    // does not hold the condition down once the spec's count is online.
    let expected = facts.spec_trays;
    let online = store.trays_online();
    if online >= expected && online > 0 {
        return condition(
            previous,
            "TraysOnline",
            "True",
            "AllTraysOnline",
            format!("{online}/{expected} trays online"),
            facts,
        );
    }
    let mut message = format!("{online}/{expected} trays online");
    let offline: Vec<String> = store
        .trays
        .iter()
        .filter(|(_, tray)| !tray.online)
        .map(|(uuid, tray)| match tray.devname.valid() {
            Some(device) => format!("{device} ({uuid})"),
            None => uuid.to_string(),
        })
        .collect();
    if !offline.is_empty() {
        message.push_str(&format!("; offline: {}", offline.join(", ")));
    }
    let unregistered = expected.saturating_sub(store.trays.len());
    if unregistered > 0 {
        message.push_str(&format!(
            "; {unregistered} of the spec's trays not registered by pfs"
        ));
    }
    let registering = trays_registering_until(status, facts.pod, facts.policy)
        .is_some_and(|until| facts.now < until);
    let reason = if registering {
        message.push_str(
            " (pfs started or registered a moment ago and may still be bringing them online)",
        );
        "TraysRegistering"
    } else {
        "TraysOffline"
    };
    condition(previous, "TraysOnline", "False", reason, message, facts)
}

/// The status to start from when the store's status was never written (no
/// `observedGeneration`) while it carries a restart token: that token taken as honoured. Such
/// a store has asked this operator for no restart yet; its token came with it (a manifest
/// exported with `kubectl get -o yaml`, a GitOps repository, a restored backup), and acting on
/// it would kill the pfs it is about to adopt, past every rail. `None`: start from
/// the status as it is.
pub fn token_honoured_at_creation(
    previous: &PureFlashStoreStatus,
    manual_token: Option<&str>,
) -> Option<PureFlashStoreStatus> {
    let token = manual_token?;
    (previous.observed_generation.is_none()
        && previous.last_manual_restart.as_deref() != Some(token))
    .then(|| PureFlashStoreStatus {
        last_manual_restart: Some(token.to_owned()),
        ..previous.clone()
    })
}

/// The phase `status` last had on a trusted view: its phase, or while that is Unknown, the one
/// before (for a status written before `phaseBeforeUnknown` existed: Online if it was alive).
pub fn last_trusted_phase(status: &PureFlashStoreStatus) -> Option<Phase> {
    match status.phase {
        Some(Phase::Unknown) => status
            .phase_before_unknown
            .or((status.alive == Some(true)).then_some(Phase::Online)),
        phase => phase,
    }
}

/// The reason recovery is held for this store, if it is (for RecoveryFrozen).
fn frozen(verdict: &Verdict) -> Option<(&'static str, String)> {
    let Verdict::Skip(reason) = verdict else {
        return None;
    };
    let message = match reason {
        SkipReason::ClusterFrozen => {
            "too many stores are offline at once (likely a ZooKeeper or network fault): restarts are frozen"
        }
        SkipReason::RestartBudgetExhausted => {
            "maxRestartsPerHour reached: no automatic restart until older restarts age out; annotate pureflash.io/restart to force one"
        }
        SkipReason::RecoveryPaused => {
            "recovery paused by the pureflash.io/recovery-paused annotation"
        }
        SkipReason::RecoveryDisabled => "spec.recovery.enabled is false",
        SkipReason::ConfigInvalid => {
            "the store's pod could not be recreated (see its UpToDate condition: no pfs.conf can be rendered, or the API would refuse the pod its spec makes), so it is not restarted"
        }
        SkipReason::PodStuckTerminating => {
            "the pod has been terminating for over a minute past its grace period: its kubelet has not confirmed that pfs stopped (the node out of contact, or pfs stuck in the kernel on a dead disk), and no new pod is made until it is gone; force-delete it only once the node or the process is known to be dead"
        }
        SkipReason::NodeNotReady => {
            "the pod's node is out of contact with Kubernetes (not Ready, or its kubelet has not renewed the node's Lease in kube-node-lease for the Lease's duration since the store went offline): a restart waits until it reports again"
        }
        _ => return None,
    };
    Some((reason.as_str(), message.to_owned()))
}

/// The budget spent by restarts in a row (see [`recovery::budget_spent`]): terminal, which
/// its message says, rather than the hourly limit's "until older restarts age out".
fn budget_spent_in_a_row(facts: &Facts<'_>) -> Option<(&'static str, String)> {
    let spent = facts.decision.verdict == Verdict::Skip(SkipReason::RestartBudgetExhausted)
        && recovery::spent_in_a_row(facts.decision.attempts, facts.policy);
    spent.then(|| {
        (
            SkipReason::RestartBudgetExhausted.as_str(),
            format!(
                "{} restarts in a row have not kept the store back for {}s (maxRestartsPerHour {}): no automatic restart until it comes back and stays back; annotate pureflash.io/restart to try one",
                facts.decision.attempts,
                facts.policy.stable_period.as_secs(),
                facts.policy.max_restarts_per_hour
            ),
        )
    })
}

/// A hold a human set on the store's recovery, for RecoveryFrozen whatever the verdict: the
/// decision meets it only once the store is offline, but a store paused or disabled while up
/// is held all the same, and whoever set the hold looks for it before the store goes down.
fn standing_hold(facts: &Facts<'_>) -> Option<(&'static str, String)> {
    let reason = if !facts.policy.enabled {
        SkipReason::RecoveryDisabled
    } else if facts.recovery_paused {
        SkipReason::RecoveryPaused
    } else {
        return None;
    };
    frozen(&Verdict::Skip(reason))
}

/// The UpToDate message of a store whose pfs.conf cannot be rendered.
pub fn config_invalid_message(error: &str) -> String {
    format!("no pfs.conf can be rendered: {error}")
}

/// What the status remembers for recovery: the reading back of what [`compute`] writes, by
/// this leader's next reconcile or by the next leader's first.
pub fn history_of(status: &PureFlashStoreStatus) -> History {
    History {
        offline_since: status.offline_since.as_ref().map(|t| t.0),
        last_restart: status.last_restart_time.as_ref().map(|t| t.0),
        recent_restarts: status.recent_restarts.iter().map(|t| t.0).collect(),
        attempts: status.recovery_attempts,
        last_manual_restart: status.last_manual_restart.clone(),
        unfinished: status
            .unfinished_restart
            .as_ref()
            .map(|u| recovery::Unfinished {
                pod_uid: u.pod_uid.clone(),
                reason: if u.manual {
                    RestartReason::Manual
                } else {
                    RestartReason::Offline
                },
            }),
        // The Alive condition turns True when the store registers and keeps its transition
        // time while it stays registered (an untrusted view makes it Unknown: a stretch it
        // cannot vouch for ends there).
        back_since: status
            .condition("Alive", "True")
            .map(|c| c.last_transition_time.0),
    }
}

/// The new status.
pub fn compute(facts: &Facts<'_>) -> PureFlashStoreStatus {
    let previous = facts.previous;
    let mut status = previous.clone();
    status.observed_generation = facts.generation;
    status.pod_name = Some(facts.pod_name.to_owned());
    status.offline_since = facts.decision.offline_since.map(time);
    status.recovery_attempts = facts.decision.attempts;
    status.unfinished_restart =
        facts
            .decision
            .unfinished
            .as_ref()
            .map(|unfinished| UnfinishedRestart {
                pod_uid: unfinished.pod_uid.clone(),
                manual: unfinished.reason == RestartReason::Manual,
            });

    if facts.view_trusted {
        match facts.store {
            Some(store) => {
                status.store_id = Some(store.id.get() as i32);
                status.alive = Some(store.alive);
                status.zk_state = store.state.valid().cloned();
                status.mngt_ip = store.mngt_ip.valid().map(ToString::to_string);
                status.trays = store
                    .trays
                    .iter()
                    .map(|(uuid, tray)| TrayStatus {
                        uuid: uuid.to_string(),
                        device: tray.devname.valid().cloned(),
                        capacity: tray.capacity.valid().map(|v| *v as i64),
                        object_size: tray.object_size.valid().map(|v| *v as i64),
                        free_size: tray.free_size.valid().map(|v| *v as i64),
                        online: tray.online,
                    })
                    .collect();
                // Out of the spec's trays, as the TraysOnline condition counts them: a disk
                // pfs could not register shows as missing, and a tray node left from a
                // replaced disk does not read as a degraded store.
                let expected = facts.spec_trays;
                status.trays_online =
                    Some(format!("{}/{expected}", store.trays_online().min(expected)));
                status.ports = store.ports.iter().map(ToString::to_string).collect();
                status.rep_ports = store.rep_ports.iter().map(ToString::to_string).collect();
            }
            None => {
                status.store_id = None;
                status.alive = Some(false);
                status.zk_state = None;
                status.mngt_ip = None;
                status.trays.clear();
                status.trays_online = None;
                status.ports.clear();
                status.rep_ports.clear();
            }
        }
    }

    if let Some(restart) = facts.restart {
        if !restart.finishing {
            status.restart_count = previous.restart_count.saturating_add(1);
            // The hourly budget limits what recovery does on its own: a human's restart is
            // not one more sign that restarts do not help, nor does it use up recovery's.
            if restart.manual_token.is_none() {
                status.recent_restarts.push(time(restart.at));
            }
        }
        // Finishing one recorded earlier (its kill called off, or its leader gone) counts
        // nothing again, but the kill is now: what is timed from the restart (in flight, its
        // backoff, Recovering) is timed from this, by a next leader too.
        status.last_restart_time = Some(time(restart.at));
        if let Some(token) = &restart.manual_token {
            status.last_manual_restart = Some(token.clone());
        }
    }
    // Only the last hour's restarts matter (maxRestartsPerHour).
    let hour_ago = facts
        .now
        .saturating_sub(jiff::SignedDuration::from_hours(1))
        .unwrap_or(Timestamp::MIN);
    status.recent_restarts.retain(|t| t.0 > hour_ago);

    let alive = facts.view_trusted && status.alive == Some(true);
    let in_flight = recovery::in_flight(
        facts.policy,
        status.last_restart_time.as_ref().map(|t| t.0),
        facts.decision.offline_since,
        previous.last_online_time.as_ref().map(|t| t.0),
        alive,
        facts.now,
    );
    status.phase = Some(phase(facts, alive, in_flight));
    if status.phase == Some(Phase::Online) && last_trusted_phase(previous) != Some(Phase::Online) {
        status.last_online_time = Some(time(facts.now));
    }
    status.phase_before_unknown = match status.phase {
        Some(Phase::Unknown) => last_trusted_phase(previous),
        _ => None,
    };
    // An untrusted view decides nothing: the last decision stands (and is not announced again
    // when the view is back).
    status.last_decision = match &facts.decision.verdict {
        Verdict::Skip(SkipReason::ViewUntrusted) => previous.last_decision.clone(),
        Verdict::Healthy => None,
        Verdict::Restart(reason) => Some(format!("Restart{}", reason.as_str())),
        Verdict::Wait { reason, .. } | Verdict::Skip(reason) => Some(reason.as_str().to_owned()),
    };

    let conditions = &previous.conditions;
    let alive_condition = match (facts.view_trusted, facts.store, alive) {
        (false, _, _) if facts.no_stores_dir => condition(
            conditions,
            "Alive",
            "Unknown",
            "NoStoresDirectory",
            "ZooKeeper has no stores directory for the operator's cluster name: no pfs has registered under it (is the cluster name right?), so no store is taken for offline".into(),
            facts,
        ),
        (false, Some(store), _) if store.unreadable.is_some() => condition(
            conditions,
            "Alive",
            "Unknown",
            "StoreUnreadable",
            format!(
                "{}; the store's state is unknown, and nothing is decided on it, until it can be read (tried again at each full reload of the operator's view)",
                store.unreadable.as_deref().unwrap_or_default()
            ),
            facts,
        ),
        (false, _, _) => condition(
            conditions,
            "Alive",
            "Unknown",
            "ViewUntrusted",
            match &facts.view_distrust {
                Some(why) => format!("the operator's ZooKeeper view cannot be trusted: {why}; nothing is decided on it meanwhile"),
                None => "the operator's ZooKeeper view is not connected, not resynced since, or a read of it failed (see the operator log)".into(),
            },
            facts,
        ),
        (true, None, _) => condition(
            conditions,
            "Alive",
            "False",
            "NotRegistered",
            "the store is not registered in ZooKeeper".into(),
            facts,
        ),
        (true, Some(_), true) if alive_of_predecessor(facts) => condition(
            conditions,
            "Alive",
            "False",
            "PredecessorSession",
            "the alive node still belongs to the replaced pfs's session; the new pfs registers once it expires".into(),
            facts,
        ),
        (true, Some(_), true) => condition(
            conditions,
            "Alive",
            "True",
            "StoreAlive",
            "the store's alive node exists".into(),
            facts,
        ),
        (true, Some(_), false) => condition(
            conditions,
            "Alive",
            "False",
            "StoreOffline",
            "the store's alive node does not exist".into(),
            facts,
        ),
    };
    let pod_condition = match (facts.pod, facts.pod_ready) {
        (None, _) if let Some(other) = facts.foreign_pfs => condition(
            conditions,
            "PodReady",
            "False",
            "ForeignPod",
            if let Some(device) = &other.device {
                format!(
                    "pod {} is not created: pod {}, which this store does not own, serves {device}, one of this store's trays, on its node (two pfs on one disk would corrupt it); created once no other pod serves it",
                    facts.pod_name, other.pod
                )
            } else if let Some((role, address)) = &other.address {
                format!(
                    "pod {} is not created: pod {}, which this store does not own, registers under {address}, the {} address this store would register under (two stores cannot share one); created once no other pod uses it",
                    facts.pod_name,
                    other.pod,
                    role.describe()
                )
            } else if other.terminating {
                format!(
                    "pod {} is not created: pod {}, which this store does not own, runs pfs for its store id and is terminating; created once its pfs has stopped and it is gone",
                    facts.pod_name, other.pod
                )
            } else {
                format!(
                    "pod {} is not created: pod {}, which this store does not own, runs pfs for its store id (left from a store deleted with --cascade=orphan?); delete that pod, or name this store as the pod's store was so that it is adopted",
                    facts.pod_name, other.pod
                )
            },
            facts,
        ),
        (None, _) if let Some(node) = facts.cordoned_node => condition(
            conditions,
            "PodReady",
            "False",
            NODE_CORDONED,
            format!(
                "pod {} is not created: node {node} is cordoned (a drain, maintenance), where no new pod is made; created once it is uncordoned",
                facts.pod_name
            ),
            facts,
        ),
        (None, _) if let Some(error) = facts.write_error => condition(
            conditions,
            "PodReady",
            "False",
            "PodCreateFailed",
            format!(
                "pod {} does not exist, and a write to create it failed: {error}",
                facts.pod_name
            ),
            facts,
        ),
        (None, _) => condition(
            conditions,
            "PodReady",
            "False",
            "PodMissing",
            format!("pod {} does not exist", facts.pod_name),
            facts,
        ),
        (Some(pod), _) if pod.terminating => condition(
            conditions,
            "PodReady",
            "False",
            "PodTerminating",
            format!("pod {} is being deleted", facts.pod_name),
            facts,
        ),
        (Some(_), true) => condition(
            conditions,
            "PodReady",
            "True",
            "PodReady",
            format!("pod {} is ready", facts.pod_name),
            facts,
        ),
        (Some(pod), false) => {
            let reason = facts.pod_waiting.unwrap_or(if pod.phase == "Running" {
                "ContainerNotReady"
            } else {
                "PodNotRunning"
            });
            condition(
                conditions,
                "PodReady",
                "False",
                reason,
                format!("pod {} is {}", facts.pod_name, pod.phase),
                facts,
            )
        }
    };
    let db_condition = match facts.db {
        DbState::NotConfigured => condition(
            conditions,
            "DbSynced",
            "Unknown",
            "NotConfigured",
            "the operator runs without --db".into(),
            facts,
        ),
        // A new leadership term's sync has not finished its first pass yet: what the last
        // term found stands until it has (a leader change is no news about the DB), unless the
        // last term ran without a DB, which is no news about this one.
        DbState::Pending => match conditions
            .iter()
            .find(|c| c.type_ == "DbSynced" && c.reason != "NotConfigured")
        {
            Some(known) => Condition {
                observed_generation: facts.generation,
                ..known.clone()
            },
            None => condition(
                conditions,
                "DbSynced",
                "Unknown",
                "Pending",
                "the metadata DB has not been synced yet".into(),
                facts,
            ),
        },
        DbState::Synced => condition(
            conditions,
            "DbSynced",
            "True",
            "Synced",
            "t_store, t_tray and t_port follow ZooKeeper".into(),
            facts,
        ),
        DbState::Failing(error) => condition(
            conditions,
            "DbSynced",
            "False",
            "SyncFailing",
            error.clone(),
            facts,
        ),
        DbState::Held(why) => condition(
            conditions,
            "DbSynced",
            "False",
            "RowsHeld",
            format!("the store's rows do not follow ZooKeeper: {why}"),
            facts,
        ),
    };
    let last_frozen = conditions
        .iter()
        .find(|c| c.type_ == "RecoveryFrozen")
        // A human's hold lifted meanwhile no longer holds, whatever the view.
        .filter(|c| !matches!(c.reason.as_str(), "RecoveryDisabled" | "RecoveryPaused"));
    let held = budget_spent_in_a_row(facts)
        .or_else(|| frozen(&facts.decision.verdict))
        .or_else(|| standing_hold(facts));
    let frozen_condition = match held {
        // Nothing is decided while the view is untrusted: what held recovery still holds it.
        None if !facts.view_trusted && last_frozen.is_some() => Condition {
            observed_generation: facts.generation,
            ..last_frozen.cloned().expect("checked")
        },
        // A store first seen while the view is untrusted: whether recovery would act is not
        // known yet.
        None if !facts.view_trusted => condition(
            conditions,
            "RecoveryFrozen",
            "Unknown",
            "ViewUntrusted",
            "the operator's ZooKeeper view cannot be trusted yet: nothing is decided".into(),
            facts,
        ),
        Some((reason, message)) => {
            condition(conditions, "RecoveryFrozen", "True", reason, message, facts)
        }
        None => condition(
            conditions,
            "RecoveryFrozen",
            "False",
            "RecoveryActive",
            "automated recovery acts on this store".into(),
            facts,
        ),
    };
    let trays_condition = trays_condition(facts, &status, &alive_condition);
    let ready = alive_condition.status == "True" && pod_condition.status == "True";
    let ready_condition = if ready {
        condition(
            conditions,
            "Ready",
            "True",
            "StoreOnline",
            "the store is alive and its pod is ready".into(),
            facts,
        )
    } else if alive_condition.status == "False" || pod_condition.status != "True" {
        let (reason, message) = if alive_condition.status == "False" {
            (
                alive_condition.reason.clone(),
                alive_condition.message.clone(),
            )
        } else {
            (pod_condition.reason.clone(), pod_condition.message.clone())
        };
        condition(conditions, "Ready", "False", &reason, message, facts)
    } else {
        // Whether the store is alive is not known: neither is whether it is ready.
        condition(
            conditions,
            "Ready",
            "Unknown",
            &alive_condition.reason,
            alive_condition.message.clone(),
            facts,
        )
    };
    let up_to_date_condition = match facts.rollout_held {
        _ if let Some(error) = facts.config_error => condition(
            conditions,
            "UpToDate",
            "False",
            "ConfigInvalid",
            config_invalid_message(error),
            facts,
        ),
        Some(hold) => condition(
            conditions,
            "UpToDate",
            "False",
            hold.as_str(),
            hold.message(facts.max_unavailable),
            facts,
        ),
        None => condition(
            conditions,
            "UpToDate",
            "True",
            "Applied",
            "the pod runs, or is being replaced to run, the current spec".into(),
            facts,
        ),
    };
    status.conditions = vec![
        ready_condition,
        alive_condition,
        trays_condition,
        pod_condition,
        db_condition,
        frozen_condition,
        up_to_date_condition,
    ];

    if let Some(unchanged) = free_sizes_damped(facts, &status) {
        return unchanged;
    }
    // The observation time moves only when what was observed changed, so an idle store is
    // never rewritten; and only on a trusted view: it says when the ZooKeeper state shown was
    // read, which an untrusted view (the status says Unknown) does not renew.
    let mut observed = status.clone();
    observed.last_observed_time = previous.last_observed_time.clone();
    if facts.view_trusted && (observed != *previous || previous.last_observed_time.is_none()) {
        status.last_observed_time = Some(time(facts.now));
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recovery::{Predecessor, RestartReason, decide};
    use jiff::SignedDuration;

    fn t(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    fn policy() -> Policy {
        Policy {
            enabled: true,
            offline_grace: SignedDuration::from_secs(30),
            backoff_initial: SignedDuration::from_secs(10),
            backoff_max: SignedDuration::from_secs(600),
            max_restarts_per_hour: 6,
            start_grace: SignedDuration::from_secs(20),
            freeze_share: 0.5,
            freeze_min_offline: 2,
            max_in_flight: 1,
            in_flight_window: SignedDuration::from_secs(180),
            stable_period: SignedDuration::from_secs(600),
        }
    }

    fn running_pod(since: Timestamp) -> PodFacts {
        PodFacts {
            uid: "u".into(),
            phase: "Running".into(),
            terminating: false,
            stop_due: None,
            running_since: Some(since),
            container_restarts: 0,
            predecessor: Predecessor::Unknown,
        }
    }

    #[derive(Clone)]
    struct Case {
        now: Timestamp,
        trusted: bool,
        no_stores_dir: bool,
        view_distrust: Option<String>,
        store: Option<StoreView>,
        pod: Option<PodFacts>,
        ready: bool,
        previous: PureFlashStoreStatus,
        decision: Decision,
        restart: Option<Restart>,
        rollout_held: Option<HoldReason>,
        db: DbState,
        config_error: Option<String>,
        write_error: Option<String>,
        foreign_pfs: Option<ForeignPfs>,
        cordoned_node: Option<&'static str>,
        policy: Policy,
        paused: bool,
    }

    impl Case {
        fn alive_at(now: Timestamp) -> Case {
            Case {
                now,
                trusted: true,
                no_stores_dir: false,
                view_distrust: None,
                store: Some(StoreView::test(7).with_trays(2)),
                pod: Some(running_pod(t(0))),
                ready: true,
                previous: PureFlashStoreStatus::default(),
                decision: Decision {
                    verdict: Verdict::Healthy,
                    offline_since: None,
                    attempts: 0,
                    finishes: false,
                    unfinished: None,
                },
                restart: None,
                rollout_held: None,
                db: DbState::Synced,
                config_error: None,
                write_error: None,
                foreign_pfs: None,
                cordoned_node: None,
                policy: policy(),
                paused: false,
            }
        }

        fn status(&self) -> PureFlashStoreStatus {
            compute(&Facts {
                now: self.now,
                generation: Some(3),
                previous: &self.previous,
                view_trusted: self.trusted,
                no_stores_dir: self.no_stores_dir,
                view_distrust: self.view_distrust.clone(),
                store: self.store.as_ref(),
                spec_trays: 2,
                pod_name: "store-7-pfs",
                pod: self.pod.as_ref(),
                pod_ready: self.ready,
                pod_waiting: None,
                decision: &self.decision,
                restart: self.restart.as_ref(),
                policy: &self.policy,
                recovery_paused: self.paused,
                db: &self.db,
                rollout_held: self.rollout_held.as_ref(),
                config_error: self.config_error.as_deref(),
                write_error: self.write_error.as_deref(),
                foreign_pfs: self.foreign_pfs.as_ref(),
                cordoned_node: self.cordoned_node,
                max_unavailable: 1,
            })
        }
    }

    fn condition_of<'a>(status: &'a PureFlashStoreStatus, kind: &str) -> &'a Condition {
        status.conditions.iter().find(|c| c.type_ == kind).unwrap()
    }

    #[test]
    fn a_store_whose_pod_cannot_be_created_says_why_and_stops_reading_online() {
        let mut case = Case::alive_at(t(100));
        case.previous = case.status();
        assert_eq!(case.previous.phase, Some(Phase::Online));
        // The Pod is gone with its pfs, and the API refuses the new one.
        case.store = Some(StoreView::test(7).with_trays(2).dead());
        case.pod = None;
        case.ready = false;
        case.write_error = Some("pods \"store-7-pfs\" is forbidden: exceeded quota".into());
        let status = case.status();
        // Without a Pod a store that was up is Offline (Pending says it never ran).
        assert_eq!(status.phase, Some(Phase::Offline));
        assert_eq!(status.alive, Some(false));
        let pod_ready = condition_of(&status, "PodReady");
        assert_eq!(
            (pod_ready.status.as_str(), pod_ready.reason.as_str()),
            ("False", "PodCreateFailed")
        );
        assert!(
            pod_ready.message.contains("exceeded quota"),
            "{}",
            pod_ready.message
        );
        // A write that failed while the Pod stands says nothing about the Pod.
        case.pod = Some(running_pod(t(0)));
        case.ready = true;
        let status = case.status();
        assert_eq!(condition_of(&status, "PodReady").reason, "PodReady");
    }

    #[test]
    fn a_pod_left_by_another_store_is_named_and_what_to_do_said() {
        let mut case = Case::alive_at(t(100));
        case.store = Some(StoreView::test(7).with_trays(2).dead());
        case.pod = None;
        case.ready = false;
        case.foreign_pfs = Some(ForeignPfs {
            pod: "pf/old-pfs".into(),
            terminating: false,
            device: None,
            address: None,
        });
        let status = case.status();
        let pod_ready = condition_of(&status, "PodReady");
        assert_eq!(pod_ready.reason, "ForeignPod");
        assert!(
            pod_ready.message.contains("pod pf/old-pfs"),
            "{}",
            pod_ready.message
        );
        assert!(
            pod_ready.message.contains("delete that pod"),
            "{}",
            pod_ready.message
        );
        // Already deleted: there is nothing to do but wait, and it says so.
        case.foreign_pfs.as_mut().unwrap().terminating = true;
        let status = case.status();
        let pod_ready = condition_of(&status, "PodReady");
        assert_eq!(pod_ready.reason, "ForeignPod");
        assert!(
            pod_ready.message.contains("is terminating"),
            "{}",
            pod_ready.message
        );
        assert!(
            !pod_ready.message.contains("delete"),
            "{}",
            pod_ready.message
        );
        // Found serving one of its disks right before the create.
        case.foreign_pfs = Some(ForeignPfs {
            pod: "pf/other-pfs".into(),
            terminating: false,
            device: Some("/dev/sdb".into()),
            address: None,
        });
        let status = case.status();
        let pod_ready = condition_of(&status, "PodReady");
        assert_eq!(pod_ready.reason, "ForeignPod");
        assert!(
            pod_ready.message.contains("pod pf/other-pfs")
                && pod_ready.message.contains("serves /dev/sdb"),
            "{}",
            pod_ready.message
        );
    }

    #[test]
    fn a_pod_registering_under_the_stores_address_is_named() {
        let mut case = Case::alive_at(t(100));
        case.store = None;
        case.pod = None;
        case.ready = false;
        case.foreign_pfs = Some(ForeignPfs {
            pod: "pf/other-pfs".into(),
            terminating: false,
            device: None,
            address: Some((
                crate::controller::claims::AddressRole::Management,
                "10.0.0.1".into(),
            )),
        });
        let pod_ready = condition_of(&case.status(), "PodReady").clone();
        assert_eq!(pod_ready.reason, "ForeignPod");
        assert!(
            pod_ready
                .message
                .contains("pod pf/other-pfs, which this store does not own, registers under 10.0.0.1, the management address"),
            "{}",
            pod_ready.message
        );
    }

    #[test]
    fn a_store_without_a_pfs_conf_says_why_in_up_to_date() {
        let mut case = Case::alive_at(t(100));
        case.config_error = Some("node n has no InternalIP".into());
        let status = case.status();
        let up_to_date = condition_of(&status, "UpToDate");
        assert_eq!(
            (up_to_date.status.as_str(), up_to_date.reason.as_str()),
            ("False", "ConfigInvalid")
        );
        assert!(up_to_date.message.contains("node n has no InternalIP"));
        // The rest still mirrors ZooKeeper and the Pod.
        assert_eq!(status.phase, Some(Phase::Online));
        assert_eq!(condition_of(&status, "Ready").status, "True");
    }

    #[test]
    fn a_new_terms_db_sync_not_done_yet_leaves_the_last_known_db_condition() {
        let mut case = Case::alive_at(t(100));
        case.db = DbState::Pending;
        let first = case.status();
        assert_eq!(condition_of(&first, "DbSynced").status, "Unknown");
        assert_eq!(condition_of(&first, "DbSynced").reason, "Pending");

        case.db = DbState::Synced;
        case.previous = first;
        let synced = case.status();
        assert_eq!(condition_of(&synced, "DbSynced").status, "True");

        // Leadership moves: the new term's sync has not finished a pass.
        let mut next_term = Case::alive_at(t(500));
        next_term.db = DbState::Pending;
        next_term.previous = synced.clone();
        let kept = next_term.status();
        assert_eq!(
            condition_of(&kept, "DbSynced"),
            condition_of(&synced, "DbSynced")
        );
        next_term.db = DbState::Failing("connection refused".into());
        let failing = next_term.status();
        assert_eq!(condition_of(&failing, "DbSynced").status, "False");
        assert_eq!(
            condition_of(&failing, "DbSynced").last_transition_time,
            time(t(500))
        );
    }

    #[test]
    fn a_store_whose_rows_are_held_back_says_why() {
        let mut case = Case::alive_at(t(100));
        case.db = DbState::Held("stores 3 and 4 both register tray u".into());
        let status = case.status();
        let db = condition_of(&status, "DbSynced");
        assert_eq!(
            (db.status.as_str(), db.reason.as_str()),
            ("False", "RowsHeld")
        );
        assert!(db.message.contains("stores 3 and 4 both register tray u"));
        // The store itself is fine.
        assert_eq!(condition_of(&status, "Ready").status, "True");
    }

    #[test]
    fn a_db_given_after_running_without_one_is_pending_until_its_first_pass() {
        let mut without = Case::alive_at(t(100));
        without.db = DbState::NotConfigured;
        let before = without.status();
        assert_eq!(condition_of(&before, "DbSynced").reason, "NotConfigured");

        let mut with_db = Case::alive_at(t(200));
        with_db.db = DbState::Pending;
        with_db.previous = before;
        let pending = with_db.status();
        let condition = condition_of(&pending, "DbSynced");
        assert_eq!(
            (condition.status.as_str(), condition.reason.as_str()),
            ("Unknown", "Pending")
        );
    }

    #[test]
    fn an_alive_store_is_online_and_ready_with_its_zookeeper_data() {
        let status = Case::alive_at(t(100)).status();
        assert_eq!(status.phase, Some(Phase::Online));
        assert_eq!(status.alive, Some(true));
        assert_eq!(status.store_id, Some(7));
        assert_eq!(status.mngt_ip.as_deref(), Some("10.0.0.7"));
        assert_eq!(status.trays_online.as_deref(), Some("2/2"));
        assert_eq!(status.observed_generation, Some(3));
        assert_eq!(condition_of(&status, "Ready").status, "True");
        assert_eq!(condition_of(&status, "DbSynced").status, "True");
        assert_eq!(condition_of(&status, "RecoveryFrozen").status, "False");
        let kinds: Vec<&str> = status.conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "Ready",
                "Alive",
                "TraysOnline",
                "PodReady",
                "DbSynced",
                "RecoveryFrozen",
                "UpToDate"
            ]
        );
        assert_eq!(condition_of(&status, "UpToDate").status, "True");
    }

    #[test]
    fn an_alive_left_by_the_replaced_pfs_is_not_the_store_online() {
        // The new container started 10 s ago (the start grace is 20 s).
        let mut case = Case::alive_at(t(10));
        case.store.as_mut().unwrap().alive_session = Some(0x51);
        case.pod.as_mut().unwrap().predecessor = Predecessor::Session(0x51);
        let waiting = case.status();
        assert_eq!(waiting.phase, Some(Phase::Starting));
        assert_eq!(
            waiting.alive,
            Some(true),
            "ALIVE still says what ZooKeeper has"
        );
        let alive = condition_of(&waiting, "Alive");
        assert_eq!(
            (alive.status.as_str(), alive.reason.as_str()),
            ("False", "PredecessorSession")
        );
        assert_eq!(condition_of(&waiting, "Ready").status, "False");
        // Nor are the replaced pfs's trays the store's.
        let trays = condition_of(&waiting, "TraysOnline");
        assert_eq!(
            (trays.status.as_str(), trays.reason.as_str()),
            ("False", "PredecessorSession")
        );

        // The new pfs registered under its own session.
        case.store.as_mut().unwrap().alive_session = Some(0x52);
        assert_eq!(case.status().phase, Some(Phase::Online));
        // Owner unknown, or a container restarted in place: no claim either way, as before.
        case.store.as_mut().unwrap().alive_session = None;
        assert_eq!(case.status().phase, Some(Phase::Online));
        case.store.as_mut().unwrap().alive_session = Some(0x51);
        case.pod.as_mut().unwrap().container_restarts = 1;
        assert_eq!(case.status().phase, Some(Phase::Online));
        case.pod.as_mut().unwrap().container_restarts = 0;
        assert_eq!(case.status().phase, Some(Phase::Starting));
        // Past the start grace, or with a Pod that does not run, the old session is a pfs that
        // still serves (adopting a store whose pfs runs outside Kubernetes).
        case.now = t(20);
        assert_eq!(case.status().phase, Some(Phase::Online));
        case.now = t(10);
        case.pod.as_mut().unwrap().phase = "Pending".into();
        case.pod.as_mut().unwrap().running_since = None;
        assert_eq!(case.status().phase, Some(Phase::Online));
    }

    #[test]
    fn a_held_rollout_says_why_and_keeps_its_transition_time() {
        let mut case = Case::alive_at(t(100));
        case.rollout_held = Some(HoldReason::OthersUnavailable {
            count: 1,
            names: vec!["store-2".into()],
        });
        let held = case.status();
        let condition = condition_of(&held, "UpToDate");
        assert_eq!(condition.status, "False");
        assert_eq!(condition.reason, "OtherStoresUnavailable");
        assert!(
            condition.message.contains("--max-unavailable"),
            "{}",
            condition.message
        );
        assert_eq!(
            held.phase,
            Some(Phase::Online),
            "a held rollout is not an outage"
        );
        assert_eq!(condition_of(&held, "Ready").status, "True");

        case.previous = held.clone();
        case.now = t(200);
        assert_eq!(case.status(), held, "still held: nothing to write");

        case.rollout_held = None;
        let applied = case.status();
        let condition = condition_of(&applied, "UpToDate");
        assert_eq!(condition.status, "True");
        assert_eq!(condition.last_transition_time, Time(t(200)));
    }

    #[test]
    fn nothing_changes_when_nothing_changed() {
        let first = Case::alive_at(t(100)).status();
        let mut later = Case::alive_at(t(500));
        later.previous = first.clone();
        assert_eq!(
            later.status(),
            first,
            "same observation, same status: no write"
        );
    }

    #[test]
    fn transitions_keep_times_of_unchanged_conditions() {
        let online = Case::alive_at(t(100)).status();
        let mut offline = Case::alive_at(t(200));
        offline.previous = online.clone();
        offline.store = Some(StoreView::test(7).with_trays(2).dead());
        offline.decision = decide_now(&offline);
        let status = offline.status();
        assert_eq!(status.phase, Some(Phase::Offline));
        assert_eq!(
            condition_of(&status, "Alive").last_transition_time.0,
            t(200)
        );
        assert_eq!(
            condition_of(&status, "PodReady").last_transition_time.0,
            t(100),
            "unchanged condition keeps its time"
        );
        assert_eq!(status.offline_since.as_ref().map(|t| t.0), Some(t(200)));
        assert_eq!(
            status.last_observed_time.as_ref().map(|t| t.0),
            Some(t(200))
        );
    }

    fn decide_now(case: &Case) -> Decision {
        decide(
            &recovery::Observation {
                now: case.now,
                view_trusted: case.trusted,
                alive: case.store.as_ref().map(|s| s.alive),
                pod: case.pod.clone(),
                node: recovery::NodeHealth::Unknown,
                pod_renderable: true,
                history: history_of(&case.previous),
                paused: false,
                manual_restart: None,
                cluster: recovery::ClusterFacts {
                    stores: 10,
                    offline: 1,
                    restarts_in_flight: 0,
                },
            },
            &policy(),
        )
    }

    #[test]
    fn an_untrusted_view_is_unknown_and_keeps_the_last_observation() {
        let online = Case::alive_at(t(100)).status();
        let mut blind = Case::alive_at(t(200));
        blind.previous = online.clone();
        blind.trusted = false;
        blind.store = None;
        blind.decision = Decision {
            verdict: Verdict::Skip(SkipReason::ViewUntrusted),
            offline_since: None,
            attempts: 0,
            finishes: false,
            unfinished: None,
        };
        let status = blind.status();
        assert_eq!(status.phase, Some(Phase::Unknown));
        assert_eq!(
            status.alive,
            Some(true),
            "the last observation stays; the phase says it is not current"
        );
        assert_eq!(condition_of(&status, "Alive").status, "Unknown");
        assert_eq!(condition_of(&status, "Ready").status, "Unknown");
        assert_eq!(condition_of(&status, "Ready").reason, "ViewUntrusted");
        assert_eq!(
            status.last_observed_time, online.last_observed_time,
            "nothing was observed meanwhile"
        );
        // Trusted again, the store is observed anew.
        let mut seen = Case::alive_at(t(300));
        seen.previous = status;
        assert_eq!(seen.status().last_observed_time, Some(time(t(300))));
    }

    #[test]
    fn a_budget_spent_in_a_row_says_it_is_terminal_and_the_hourly_one_says_it_ages_out() {
        let spent = |attempts| {
            let mut case = Case::alive_at(t(100));
            case.store = Some(StoreView::test(7).dead());
            case.decision = Decision {
                verdict: Verdict::Skip(SkipReason::RestartBudgetExhausted),
                offline_since: Some(t(50)),
                attempts,
                finishes: false,
                unfinished: None,
            };
            condition_of(&case.status(), "RecoveryFrozen").clone()
        };
        // The test policy allows 6.
        let in_a_row = spent(6);
        assert_eq!(
            (in_a_row.status.as_str(), in_a_row.reason.as_str()),
            ("True", "RestartBudgetExhausted")
        );
        assert!(
            in_a_row
                .message
                .starts_with("6 restarts in a row have not kept the store back for 600s"),
            "{}",
            in_a_row.message
        );
        let hourly = spent(2);
        assert_eq!(hourly.reason, "RestartBudgetExhausted");
        assert!(hourly.message.contains("age out"), "{}", hourly.message);
    }

    #[test]
    fn an_untrusted_view_leaves_the_recovery_decision_and_its_condition_as_they_were() {
        let mut frozen = Case::alive_at(t(100));
        frozen.store = Some(StoreView::test(7).dead());
        frozen.decision = Decision {
            verdict: Verdict::Skip(SkipReason::RestartBudgetExhausted),
            offline_since: Some(t(50)),
            attempts: 6,
            finishes: false,
            unfinished: None,
        };
        let held = frozen.status();
        assert_eq!(condition_of(&held, "RecoveryFrozen").status, "True");

        let mut blind = Case::alive_at(t(200));
        blind.previous = held.clone();
        blind.trusted = false;
        blind.store = None;
        blind.decision = Decision {
            verdict: Verdict::Skip(SkipReason::ViewUntrusted),
            offline_since: Some(t(50)),
            attempts: 6,
            finishes: false,
            unfinished: None,
        };
        let status = blind.status();
        assert_eq!(status.last_decision, held.last_decision);
        assert_eq!(
            condition_of(&status, "RecoveryFrozen"),
            condition_of(&held, "RecoveryFrozen")
        );
        // With a pod not ready, the store is known not to be ready.
        blind.ready = false;
        assert_eq!(condition_of(&blind.status(), "Ready").status, "False");
    }

    #[test]
    fn a_token_a_store_is_created_with_is_not_a_restart_request() {
        let fresh = PureFlashStoreStatus::default();
        let taken = token_honoured_at_creation(&fresh, Some("t1")).unwrap();
        assert_eq!(taken.last_manual_restart.as_deref(), Some("t1"));
        assert_eq!(token_honoured_at_creation(&fresh, None), None);
        // Once the status was written, a token is a request.
        let written = PureFlashStoreStatus {
            observed_generation: Some(1),
            ..fresh.clone()
        };
        assert_eq!(token_honoured_at_creation(&written, Some("t2")), None);
        // Honoured already: nothing to change.
        assert_eq!(token_honoured_at_creation(&taken, Some("t1")), None);
    }

    /// A connected, synced view without the cluster's stores directory (a wrong cluster name,
    /// a wiped ensemble) knows nothing of any store: Unknown, saying why, not Offline.
    #[test]
    fn no_stores_directory_is_unknown_not_offline() {
        let mut case = Case::alive_at(t(100));
        case.previous.phase = Some(Phase::Online);
        case.previous.alive = Some(true);
        case.trusted = false;
        case.no_stores_dir = true;
        case.store = None;
        case.decision.verdict = Verdict::Skip(SkipReason::ViewUntrusted);
        let status = case.status();
        assert_eq!(status.phase, Some(Phase::Unknown));
        assert_eq!(status.phase_before_unknown, Some(Phase::Online));
        let alive = status.condition("Alive", "Unknown").unwrap();
        assert_eq!(alive.reason, "NoStoresDirectory");
        assert!(
            alive.message.contains("is the cluster name right?"),
            "{}",
            alive.message
        );
    }

    /// An untrusted view's Alive condition says why it is not trusted, when the mirror knows:
    /// a ZooKeeper 3.5 server refusing the watch is then read in `kubectl describe`.
    #[test]
    fn an_untrusted_view_says_why() {
        let mut case = Case::alive_at(t(100));
        case.trusted = false;
        case.decision.verdict = Verdict::Skip(SkipReason::ViewUntrusted);
        let alive = case.status().condition("Alive", "Unknown").unwrap().clone();
        assert_eq!(alive.reason, "ViewUntrusted");
        assert!(
            alive.message.contains("see the operator log"),
            "{}",
            alive.message
        );
        case.view_distrust = Some("no ZooKeeper session (connecting; cannot watch x)".into());
        let alive = case.status().condition("Alive", "Unknown").unwrap().clone();
        assert_eq!(alive.reason, "ViewUntrusted");
        assert!(
            alive
                .message
                .contains("cannot be trusted: no ZooKeeper session (connecting; cannot watch x)"),
            "{}",
            alive.message
        );
    }

    /// A new pfs that never registers reads Starting only until its start grace ends, and a
    /// restart Recovering only for the in-flight window: the reconcile is scheduled for then.
    #[test]
    fn starting_and_recovering_end_by_time_and_say_when() {
        let mut case = Case::alive_at(t(105));
        case.store = Some(StoreView::test(7).with_trays(2).dead());
        case.pod = Some(running_pod(t(100)));
        case.decision.verdict = Verdict::Wait {
            reason: SkipReason::PodStarting,
            until: t(120),
        };
        let starting = case.status();
        assert_eq!(starting.phase, Some(Phase::Starting));
        let pod = case.pod.as_ref();
        assert_eq!(
            phase_changes_at(&starting, pod, &policy(), t(105)),
            Some(t(120))
        );
        case.now = t(121);
        case.previous = starting;
        let after = case.status();
        assert_eq!(after.phase, Some(Phase::Offline));
        assert_eq!(phase_changes_at(&after, pod, &policy(), t(121)), None);

        let mut recovering = after.clone();
        recovering.phase = Some(Phase::Recovering);
        recovering.last_restart_time = Some(time(t(100)));
        assert_eq!(
            phase_changes_at(&recovering, pod, &policy(), t(121)),
            Some(t(280))
        );
        assert_eq!(phase_changes_at(&recovering, pod, &policy(), t(280)), None);
    }

    /// A store ZooKeeper refuses to read is Unknown with the refused node named, whatever its
    /// last reading said (alive here: not Online, which nobody can vouch for now).
    #[test]
    fn an_unreadable_store_is_unknown_and_says_which_node() {
        let mut case = Case::alive_at(t(100));
        case.previous.phase = Some(Phase::Online);
        case.previous.alive = Some(true);
        case.trusted = false;
        let mut store = StoreView::test(7).with_trays(2);
        store.unreadable =
            Some("ZooKeeper refused to read /pureflash/c/stores/7/state: NoAuth".into());
        case.store = Some(store);
        case.decision.verdict = Verdict::Skip(SkipReason::ViewUntrusted);
        let status = case.status();
        assert_eq!(status.phase, Some(Phase::Unknown));
        let alive = status.condition("Alive", "Unknown").unwrap();
        assert_eq!(alive.reason, "StoreUnreadable");
        assert!(
            alive.message.contains("/stores/7/state"),
            "{}",
            alive.message
        );
        let ready = status.condition("Ready", "Unknown").unwrap();
        assert_eq!(ready.reason, "StoreUnreadable");
    }

    /// Offline, then a ZooKeeper blip, then the same: back to Offline (not Pending, which would
    /// say the store never ran), and `phaseBeforeUnknown` lives only while the phase is Unknown.
    #[test]
    fn a_zookeeper_blip_does_not_make_an_offline_store_pending() {
        let offline = Decision {
            verdict: Verdict::Skip(SkipReason::PodNotRunning),
            offline_since: Some(t(50)),
            attempts: 0,
            finishes: false,
            unfinished: None,
        };
        let stuck = PodFacts {
            phase: "Pending".into(),
            running_since: None,
            ..running_pod(t(0))
        };
        let mut down = Case::alive_at(t(100));
        down.store = Some(StoreView::test(7).dead());
        down.pod = Some(stuck);
        down.ready = false;
        down.previous.phase = Some(Phase::Offline);
        down.previous.alive = Some(false);
        down.decision = offline.clone();
        let before = down.status();
        assert_eq!(before.phase, Some(Phase::Offline));
        assert_eq!(before.phase_before_unknown, None);

        let mut blind = Case::alive_at(t(200));
        blind.previous = before.clone();
        blind.trusted = false;
        blind.decision = Decision {
            verdict: Verdict::Skip(SkipReason::ViewUntrusted),
            ..offline.clone()
        };
        blind.pod = down.pod.clone();
        blind.ready = false;
        let during = blind.status();
        assert_eq!(during.phase, Some(Phase::Unknown));
        assert_eq!(during.phase_before_unknown, Some(Phase::Offline));
        // Still blind a while later: the phase before the blip is kept, not Unknown.
        blind.previous = during.clone();
        let still = blind.status();
        assert_eq!(still.phase_before_unknown, Some(Phase::Offline));
        assert_eq!(last_trusted_phase(&still), Some(Phase::Offline));

        down.now = t(300);
        down.previous = still;
        let after = down.status();
        assert_eq!(after.phase, Some(Phase::Offline));
        assert_eq!(after.phase_before_unknown, None);
        assert_eq!(last_trusted_phase(&after), Some(Phase::Offline));
    }

    /// A manual restart of an Online store: the killed pfs's `alive` node goes only when its
    /// session expires, after the restart. Recovering, not Offline, while the new pfs starts.
    #[test]
    fn a_restarted_store_that_was_up_is_recovering_once_its_old_session_expires() {
        let mut case = Case::alive_at(t(1010));
        case.store = Some(StoreView::test(7).dead());
        case.pod = Some(PodFacts {
            phase: "Pending".into(),
            running_since: None,
            ..running_pod(t(1001))
        });
        case.ready = false;
        case.previous.phase = Some(Phase::Online);
        case.previous.alive = Some(true);
        case.previous.last_online_time = Some(time(t(500)));
        case.previous.last_restart_time = Some(time(t(1000)));
        case.decision = Decision {
            verdict: Verdict::Skip(SkipReason::PodNotRunning),
            offline_since: Some(t(1004)),
            attempts: 0,
            finishes: false,
            unfinished: None,
        };
        let recovering = case.status();
        assert_eq!(recovering.phase, Some(Phase::Recovering));
        assert_eq!(recovering.last_online_time, Some(time(t(500))));

        // The new pfs registers: online again, and the restart is done.
        let mut back = Case::alive_at(t(1020));
        back.previous = recovering;
        let online = back.status();
        assert_eq!(online.phase, Some(Phase::Online));
        assert_eq!(online.last_online_time, Some(time(t(1020))));
        // It hangs a moment later: a new episode, Offline, not the restart still in flight.
        case.now = t(1030);
        case.previous = online;
        case.decision.offline_since = Some(t(1028));
        assert_eq!(case.status().phase, Some(Phase::Offline));
    }

    /// An alive store with a tray offline, or with fewer trays registered than its spec
    /// lists, is Online and Ready (its daemon serves), but not TraysOnline.
    #[test]
    fn trays_online_says_which_trays_do_not_serve() {
        let mut case = Case::alive_at(t(100));
        let status = case.status();
        let trays = condition_of(&status, "TraysOnline");
        assert_eq!(
            (
                trays.status.as_str(),
                trays.reason.as_str(),
                trays.message.as_str()
            ),
            ("True", "AllTraysOnline", "2/2 trays online")
        );

        case.store = Some(StoreView::test(7).with_trays(1).with_tray(
            crate::fixtures::uuid(9),
            crate::zk::TrayView::test("/dev/sdz").offline(),
        ));
        case.previous = status;
        case.now = t(200);
        let degraded = case.status();
        assert_eq!(degraded.phase, Some(Phase::Online));
        assert_eq!(condition_of(&degraded, "Ready").status, "True");
        let trays = condition_of(&degraded, "TraysOnline");
        assert_eq!(
            (trays.status.as_str(), trays.reason.as_str()),
            ("False", "TraysOffline")
        );
        assert_eq!(
            trays.message,
            format!(
                "1/2 trays online; offline: /dev/sdz ({})",
                crate::fixtures::uuid(9)
            )
        );
        assert_eq!(trays.last_transition_time.0, t(200));

        // A tray node left from a replaced disk, offline for good, next to the spec's two.
        case.store = Some(StoreView::test(7).with_trays(2).with_tray(
            crate::fixtures::uuid(9),
            crate::zk::TrayView::test("/dev/old").offline(),
        ));
        let replaced = case.status();
        assert_eq!(condition_of(&replaced, "TraysOnline").status, "True");
        // The TRAYS column counts as the condition does.
        assert_eq!(replaced.trays_online.as_deref(), Some("2/2"));

        // A tray the spec lists that pfs never registered.
        case.store = Some(StoreView::test(7).with_trays(1));
        let unregistered = case.status();
        assert_eq!(unregistered.trays_online.as_deref(), Some("1/2"));
        let missing = condition_of(&unregistered, "TraysOnline").clone();
        assert_eq!(missing.status, "False");
        assert_eq!(
            missing.message,
            "1/2 trays online; 1 of the spec's trays not registered by pfs"
        );

        // Not alive, or not known: as the Alive condition says.
        case.store = Some(StoreView::test(7).with_trays(2).dead());
        let down = case.status();
        assert_eq!(
            (
                condition_of(&down, "TraysOnline").status.as_str(),
                condition_of(&down, "TraysOnline").reason.as_str()
            ),
            ("False", "StoreOffline")
        );
        case.trusted = false;
        assert_eq!(
            condition_of(&case.status(), "TraysOnline").status,
            "Unknown"
        );
    }

    /// pfs creates `alive` before its trays' `online` nodes: trays missing while it has just
    /// started, or just come online, are TraysRegistering (and a reconcile is timed for its
    /// end), not yet a degraded store.
    #[test]
    fn trays_missing_right_after_a_start_are_registering_until_the_pfs_has_had_the_time() {
        let trays = |status: &PureFlashStoreStatus| {
            let trays = condition_of(status, "TraysOnline");
            (trays.status.clone(), trays.reason.clone())
        };
        let registering = ("False".to_owned(), "TraysRegistering".to_owned());
        let offline = ("False".to_owned(), "TraysOffline".to_owned());
        // Started at 100 (start grace 20 s), online at 105.
        let mut case = Case::alive_at(t(105));
        case.pod = Some(running_pod(t(100)));
        case.store = Some(StoreView::test(7).with_trays(1));
        let starting = case.status();
        assert_eq!(starting.phase, Some(Phase::Online));
        assert_eq!(trays(&starting), registering);
        let pod = case.pod.clone();
        assert_eq!(
            phase_changes_at(&starting, pod.as_ref(), &policy(), t(105)),
            Some(t(120))
        );
        case.previous = starting;
        case.now = t(120);
        let degraded = case.status();
        assert_eq!(trays(&degraded), offline);
        assert_eq!(
            condition_of(&degraded, "TraysOnline")
                .last_transition_time
                .0,
            t(105)
        );
        assert_eq!(
            phase_changes_at(&degraded, pod.as_ref(), &policy(), t(120)),
            None
        );

        // A pfs that registers long after it started: its trays get TRAYS_SETTLE.
        case.previous = PureFlashStoreStatus {
            phase: Some(Phase::Offline),
            alive: Some(false),
            ..Default::default()
        };
        case.now = t(300);
        let late = case.status();
        assert_eq!(trays(&late), registering);
        assert_eq!(
            phase_changes_at(&late, pod.as_ref(), &policy(), t(300)),
            Some(t(310))
        );
        case.previous = late;
        case.now = t(310);
        let late_degraded = case.status();
        assert_eq!(trays(&late_degraded), offline);

        // A ZooKeeper blip is not the store coming online again.
        case.previous = late_degraded;
        case.trusted = false;
        case.decision.verdict = Verdict::Skip(SkipReason::ViewUntrusted);
        case.now = t(320);
        let blind = case.status();
        assert_eq!(blind.phase, Some(Phase::Unknown));
        case.previous = blind;
        case.trusted = true;
        case.decision.verdict = Verdict::Healthy;
        case.now = t(321);
        assert_eq!(trays(&case.status()), offline);
    }

    /// pfs updates free_size as data is written: alone, it rewrites the status at most once a
    /// minute; with anything else, at once.
    #[test]
    fn free_size_alone_is_written_at_most_once_a_minute() {
        let with_free = |free: u64| {
            let mut store = StoreView::test(7).with_trays(2);
            for tray in store.trays.values_mut() {
                tray.free_size = crate::zk::Field::Valid(free);
            }
            store
        };
        let mut case = Case::alive_at(t(100));
        case.store = Some(with_free(1000));
        let first = case.status();
        assert_eq!(first.last_observed_time, Some(time(t(100))));

        assert_eq!(free_sizes_due(&first, case.store.as_ref()), None);
        case.previous = first.clone();
        case.now = t(130);
        case.store = Some(with_free(900));
        assert_eq!(case.status(), first, "30 s later: nothing to write");
        assert_eq!(
            free_sizes_due(&first, case.store.as_ref()),
            Some(t(160)),
            "looked at again when due"
        );

        case.now = t(161);
        let refreshed = case.status();
        assert_eq!(refreshed.trays[0].free_size, Some(900));
        assert_eq!(refreshed.last_observed_time, Some(time(t(161))));

        // With another change, at once.
        case.now = t(130);
        let mut store = with_free(900);
        store.trays.values_mut().next().unwrap().online = false;
        case.store = Some(store);
        let changed = case.status();
        assert_eq!(changed.trays[0].free_size, Some(900));
        assert!(!changed.trays[0].online);
        assert_eq!(changed.last_observed_time, Some(time(t(130))));
    }

    #[test]
    fn a_status_from_before_phase_before_unknown_reads_online_if_it_was_alive() {
        let status = PureFlashStoreStatus {
            phase: Some(Phase::Unknown),
            alive: Some(true),
            ..PureFlashStoreStatus::default()
        };
        assert_eq!(last_trusted_phase(&status), Some(Phase::Online));
        let status = PureFlashStoreStatus {
            alive: Some(false),
            ..status
        };
        assert_eq!(last_trusted_phase(&status), None);
    }

    #[test]
    fn a_manual_restart_is_counted_but_spends_no_budget() {
        let mut case = Case::alive_at(t(1000));
        case.previous.restart_count = 1;
        case.previous.recent_restarts = vec![time(t(500))];
        case.decision.verdict = Verdict::Restart(RestartReason::Manual);
        case.restart = Some(Restart {
            at: t(1000),
            manual_token: Some("t1".into()),
            finishing: false,
        });
        let status = case.status();
        assert_eq!(status.restart_count, 2);
        assert_eq!(status.recent_restarts, vec![time(t(500))]);
        assert_eq!(status.last_restart_time, Some(time(t(1000))));
        case.decision.verdict = Verdict::Restart(RestartReason::Offline);
        case.restart = Some(Restart {
            at: t(1000),
            manual_token: None,
            finishing: false,
        });
        assert_eq!(
            case.status().recent_restarts,
            vec![time(t(500)), time(t(1000))]
        );
    }

    #[test]
    fn finishing_a_restart_counts_nothing_again_but_honours_a_new_token() {
        let mut case = Case::alive_at(t(1000));
        case.store = Some(StoreView::test(7).dead());
        case.previous.restart_count = 3;
        case.previous.last_restart_time = Some(time(t(990)));
        case.previous.recent_restarts = vec![time(t(990))];
        case.previous.last_manual_restart = Some("t1".into());
        case.decision = Decision {
            verdict: Verdict::Restart(RestartReason::Manual),
            offline_since: Some(t(900)),
            attempts: 2,
            finishes: true,
            unfinished: Some(recovery::Unfinished {
                pod_uid: "u".into(),
                reason: RestartReason::Manual,
            }),
        };
        case.restart = Some(Restart {
            at: t(1000),
            manual_token: Some("t2".into()),
            finishing: true,
        });
        let status = case.status();
        assert_eq!(status.restart_count, 3);
        assert_eq!(status.recent_restarts, vec![time(t(990))]);
        // The kill is now: what is timed from it starts again.
        assert_eq!(status.last_restart_time, Some(time(t(1000))));
        assert_eq!(status.last_manual_restart.as_deref(), Some("t2"));
        assert_eq!(
            status.unfinished_restart,
            Some(UnfinishedRestart {
                pod_uid: "u".into(),
                manual: true
            })
        );
    }

    #[test]
    fn a_restart_is_recorded_and_the_store_is_recovering() {
        let mut case = Case::alive_at(t(1000));
        case.store = Some(StoreView::test(7).dead());
        case.previous.offline_since = Some(time(t(900)));
        case.decision = Decision {
            verdict: Verdict::Restart(RestartReason::Offline),
            offline_since: Some(t(900)),
            attempts: 1,
            finishes: false,
            unfinished: None,
        };
        case.restart = Some(Restart {
            at: t(1000),
            manual_token: None,
            finishing: false,
        });
        case.previous.recent_restarts = vec![time(t(-5000)), time(t(500))];
        let status = case.status();
        assert_eq!(status.phase, Some(Phase::Recovering));
        assert_eq!(status.restart_count, 1);
        assert_eq!(
            status.last_restart_time.as_ref().map(|t| t.0),
            Some(t(1000))
        );
        assert_eq!(
            status
                .recent_restarts
                .iter()
                .map(|t| t.0)
                .collect::<Vec<_>>(),
            [t(500), t(1000)],
            "older than an hour dropped"
        );
        assert_eq!(status.recovery_attempts, 1);
        assert_eq!(status.last_decision.as_deref(), Some("RestartOffline"));
    }

    /// What a restart writes is what the next reconcile (this leader's, or a new leader's
    /// with nothing in memory) reads back, and decides from as its writer would.
    #[test]
    fn a_recorded_restart_reads_back_and_is_not_made_twice() {
        let mut case = Case::alive_at(t(1000));
        case.store = Some(StoreView::test(7).dead());
        case.previous.offline_since = Some(time(t(900)));
        case.previous.recent_restarts = vec![time(t(500))];
        case.previous.recovery_attempts = 1;
        case.decision = Decision {
            verdict: Verdict::Restart(RestartReason::Offline),
            offline_since: Some(t(900)),
            attempts: 2,
            finishes: false,
            unfinished: Some(recovery::Unfinished {
                pod_uid: "killed".into(),
                reason: RestartReason::Offline,
            }),
        };
        case.restart = Some(Restart {
            at: t(1000),
            manual_token: None,
            finishing: false,
        });
        let recorded = case.status();
        assert_eq!(
            history_of(&recorded),
            History {
                offline_since: Some(t(900)),
                last_restart: Some(t(1000)),
                recent_restarts: vec![t(500), t(1000)],
                attempts: 2,
                last_manual_restart: None,
                unfinished: Some(recovery::Unfinished {
                    pod_uid: "killed".into(),
                    reason: RestartReason::Offline,
                }),
                back_since: None,
            }
        );
        // A moment later, the store still offline: the restart is in flight, not made anew,
        // and the offline timer runs on from where it began.
        let mut next = Case::alive_at(t(1002));
        next.store = Some(StoreView::test(7).dead());
        next.pod = Some(running_pod(t(1001)));
        next.previous = recorded;
        let decision = decide_now(&next);
        assert!(
            !matches!(decision.verdict, Verdict::Restart(_)),
            "{decision:?}"
        );
        assert_eq!(decision.offline_since, Some(t(900)));

        // A manual restart's token reads back too: it is not honoured twice.
        let mut manual = Case::alive_at(t(1000));
        manual.decision = Decision {
            verdict: Verdict::Restart(RestartReason::Manual),
            offline_since: None,
            attempts: 0,
            finishes: false,
            unfinished: Some(recovery::Unfinished {
                pod_uid: "u".into(),
                reason: RestartReason::Manual,
            }),
        };
        manual.restart = Some(Restart {
            at: t(1000),
            manual_token: Some("t1".into()),
            finishing: false,
        });
        let history = history_of(&manual.status());
        assert_eq!(history.last_manual_restart.as_deref(), Some("t1"));
        assert_eq!(
            history.unfinished.map(|u| u.reason),
            Some(RestartReason::Manual)
        );
        assert!(history.recent_restarts.is_empty(), "not recovery's budget");
    }

    #[test]
    fn a_store_registered_since_reads_back_when_it_came_back() {
        let up = Case::alive_at(t(100)).status();
        let history = history_of(&up);
        assert_eq!(history.back_since, Some(t(100)));
        // A view that cannot vouch for it ends the stretch.
        let mut blind = Case::alive_at(t(200));
        blind.previous = up;
        blind.trusted = false;
        blind.store = None;
        blind.decision.verdict = Verdict::Skip(SkipReason::ViewUntrusted);
        assert_eq!(history_of(&blind.status()).back_since, None);
    }

    #[test]
    fn a_store_that_was_up_reads_offline_while_its_pfs_does_not_run() {
        // Not alive, start grace long over for a container that runs.
        let down = |previous_phase: Option<Phase>, pod: Option<PodFacts>| {
            let mut case = Case::alive_at(t(500));
            case.store = Some(StoreView::test(7).dead());
            case.ready = false;
            case.pod = pod;
            case.previous.phase = previous_phase;
            case.previous.alive = Some(false);
            case.decision = Decision {
                verdict: Verdict::Skip(SkipReason::PodNotRunning),
                offline_since: Some(t(100)),
                attempts: 0,
                finishes: false,
                unfinished: None,
            };
            case.status().phase
        };
        let crashed = PodFacts {
            running_since: None,
            container_restarts: 3,
            ..running_pod(t(0))
        };
        // A crash loop: Starting while the restarted container runs, Offline while it waits,
        // never Pending (which says the Pod has not run yet).
        assert_eq!(
            down(Some(Phase::Starting), Some(crashed.clone())),
            Some(Phase::Offline)
        );
        let pending = PodFacts {
            phase: "Pending".into(),
            running_since: None,
            ..running_pod(t(0))
        };
        assert_eq!(
            down(Some(Phase::Recovering), Some(pending.clone())),
            Some(Phase::Offline)
        );
        // Without a Pod, or with one going away (stuck, maybe), it is still the store that was
        // up and went down.
        assert_eq!(down(Some(Phase::Offline), None), Some(Phase::Offline));
        let going = PodFacts {
            terminating: true,
            ..running_pod(t(0))
        };
        assert_eq!(
            down(Some(Phase::Recovering), Some(going.clone())),
            Some(Phase::Offline)
        );
        assert_eq!(down(None, Some(going)), Some(Phase::Pending));
        assert_eq!(down(None, None), Some(Phase::Pending));
        // Never up: a fresh Pod that is still being scheduled or pulled.
        assert_eq!(down(None, Some(pending.clone())), Some(Phase::Pending));
        assert_eq!(
            down(Some(Phase::Pending), Some(pending)),
            Some(Phase::Pending)
        );
    }

    #[test]
    fn standing_aside_is_told_once_per_holder() {
        let online = Case::alive_at(t(100)).status();
        let aside = duplicate(&online, 7, "pf/first", t(110), Some(3));
        assert!(duplicate_is_news(&online, &aside));
        let again = duplicate(&aside, 7, "pf/first", t(120), Some(4));
        assert_ne!(again, aside);
        assert!(!duplicate_is_news(&aside, &again));
        let other_holder = duplicate(&again, 7, "pf/other", t(130), Some(4));
        assert!(duplicate_is_news(&again, &other_holder));
    }

    #[test]
    fn a_store_paused_or_disabled_while_up_says_recovery_is_held() {
        let frozen = |case: &Case| {
            let c = condition_of(&case.status(), "RecoveryFrozen").clone();
            (c.status, c.reason)
        };
        let held = |reason: &str| ("True".to_owned(), reason.to_owned());
        let mut case = Case::alive_at(t(100));
        case.paused = true;
        assert_eq!(frozen(&case), held("RecoveryPaused"));
        case.policy.enabled = false;
        assert_eq!(frozen(&case), held("RecoveryDisabled"));

        // Offline, a hold the verdict found first is the one shown.
        case.store = Some(StoreView::test(7).dead());
        case.decision.offline_since = Some(t(50));
        case.decision.verdict = Verdict::Skip(SkipReason::ConfigInvalid);
        assert_eq!(frozen(&case), held("ConfigInvalid"));

        // Lifted while the view cannot be trusted: no longer held, and not known to be free
        // of the other holds either.
        case.previous = case.status();
        case.decision.verdict = Verdict::Skip(SkipReason::RecoveryDisabled);
        case.previous = case.status();
        case.policy.enabled = true;
        case.paused = false;
        case.trusted = false;
        case.decision.verdict = Verdict::Skip(SkipReason::ViewUntrusted);
        assert_eq!(
            frozen(&case),
            ("Unknown".to_owned(), "ViewUntrusted".to_owned())
        );
        // Set while the view cannot be trusted: held.
        case.paused = true;
        assert_eq!(frozen(&case), held("RecoveryPaused"));
        // Lifted while up: recovery acts.
        case.trusted = true;
        case.store = Some(StoreView::test(7).with_trays(2));
        case.decision.verdict = Verdict::Healthy;
        case.decision.offline_since = None;
        case.previous = case.status();
        case.paused = false;
        assert_eq!(
            frozen(&case),
            ("False".to_owned(), "RecoveryActive".to_owned())
        );
    }

    #[test]
    fn a_store_first_seen_on_an_untrusted_view_says_recovery_is_undecided() {
        let mut case = Case::alive_at(t(100));
        case.trusted = false;
        case.decision.verdict = Verdict::Skip(SkipReason::ViewUntrusted);
        let frozen = condition_of(&case.status(), "RecoveryFrozen").clone();
        assert_eq!(
            (frozen.status.as_str(), frozen.reason.as_str()),
            ("Unknown", "ViewUntrusted")
        );
        // Trusted, recovery acts.
        case.previous = case.status();
        case.trusted = true;
        case.decision.verdict = Verdict::Healthy;
        let acting = condition_of(&case.status(), "RecoveryFrozen").clone();
        assert_eq!(
            (acting.status.as_str(), acting.reason.as_str()),
            ("False", "RecoveryActive")
        );
    }

    #[test]
    fn pending_starting_and_frozen() {
        let mut pending = Case::alive_at(t(100));
        pending.store = None;
        pending.pod = None;
        pending.ready = false;
        pending.decision = Decision {
            verdict: Verdict::Skip(SkipReason::PodMissing),
            offline_since: Some(t(100)),
            attempts: 0,
            finishes: false,
            unfinished: None,
        };
        let status = pending.status();
        assert_eq!(status.phase, Some(Phase::Pending));
        assert_eq!(condition_of(&status, "Alive").reason, "NotRegistered");
        assert_eq!(condition_of(&status, "PodReady").reason, "PodMissing");

        let mut starting = Case::alive_at(t(10));
        starting.store = Some(StoreView::test(7).dead());
        starting.pod = Some(running_pod(t(0)));
        starting.decision = Decision {
            verdict: Verdict::Wait {
                until: t(20),
                reason: SkipReason::PodStarting,
            },
            offline_since: Some(t(10)),
            attempts: 0,
            finishes: false,
            unfinished: None,
        };
        assert_eq!(starting.status().phase, Some(Phase::Starting));

        let mut frozen = Case::alive_at(t(500));
        frozen.store = Some(StoreView::test(7).dead());
        frozen.decision = Decision {
            verdict: Verdict::Skip(SkipReason::ClusterFrozen),
            offline_since: Some(t(100)),
            attempts: 0,
            finishes: false,
            unfinished: None,
        };
        let status = frozen.status();
        assert_eq!(status.phase, Some(Phase::Offline));
        let condition = condition_of(&status, "RecoveryFrozen");
        assert_eq!(
            (condition.status.as_str(), condition.reason.as_str()),
            ("True", "ClusterFrozen")
        );
    }

    /// The status is a fixpoint: computed again from its own output with nothing new observed,
    /// it is the same. (A store that went offline while its Pod was not running once read
    /// Offline, then Pending on the next reconcile.)
    #[test]
    fn the_status_does_not_change_when_nothing_new_is_observed() {
        let not_running = |phase: &str| PodFacts {
            uid: "u".into(),
            phase: phase.into(),
            terminating: false,
            stop_due: None,
            running_since: None,
            container_restarts: 0,
            predecessor: Predecessor::Unknown,
        };
        let pods = [
            None,
            Some(running_pod(t(0))),
            Some(running_pod(t(95))),
            Some(not_running("Pending")),
            Some(not_running("Failed")),
        ];
        let verdicts = [
            Verdict::Healthy,
            Verdict::Skip(SkipReason::PodNotRunning),
            Verdict::Skip(SkipReason::ClusterFrozen),
            Verdict::Wait {
                until: t(130),
                reason: SkipReason::WithinGracePeriod,
            },
        ];
        let mut cases = Vec::new();
        for alive in [true, false] {
            for pod in &pods {
                for verdict in &verdicts {
                    for trusted in [true, false] {
                        cases.push((alive, pod.clone(), *verdict, trusted));
                    }
                }
            }
        }
        for (alive, pod, verdict, trusted) in cases {
            let mut case = Case::alive_at(t(100));
            case.trusted = trusted;
            case.store = Some(if alive {
                StoreView::test(7).with_trays(2)
            } else {
                StoreView::test(7).with_trays(2).dead()
            });
            case.ready = alive && pod.is_some();
            case.pod = pod;
            case.decision = Decision {
                verdict,
                offline_since: (!alive).then_some(t(90)),
                attempts: 0,
                finishes: false,
                unfinished: None,
            };
            // From a store seen alive before, then again from what that gave.
            case.previous = Case::alive_at(t(50)).status();
            let first = case.status();
            case.previous = first.clone();
            let second = case.status();
            assert_eq!(first, second, "alive {alive}, trusted {trusted}");
            // Nor with time alone, but where the reconcile scheduled a look for it (the
            // phase's end by time): the reconciles of a store that nothing happens to write
            // nothing, however long it runs.
            let changes_at = phase_changes_at(&first, case.pod.as_ref(), &case.policy, case.now);
            for later in [1, 60, 3_600] {
                let mut later_case = Case {
                    now: t(100 + later),
                    ..case.clone()
                };
                later_case.previous = first.clone();
                let status = later_case.status();
                assert!(
                    status == first || changes_at.is_some_and(|at| at <= later_case.now),
                    "alive {alive}, trusted {trusted}, {verdict:?}, {}s later:\n{first:#?}\n{status:#?}",
                    later
                );
            }
        }
    }

    #[test]
    fn a_duplicate_shows_only_that_it_is_one_and_keeps_its_history() {
        let mirrored = PureFlashStoreStatus {
            phase: Some(Phase::Online),
            alive: Some(true),
            mngt_ip: Some("10.0.0.7".into()),
            restart_count: 2,
            ..PureFlashStoreStatus::default()
        };
        let now = Timestamp::constant(1_750_000_000, 0);
        let status = duplicate(&mirrored, 7, "pf/store-a", now, Some(3));
        assert_eq!(status.phase, Some(Phase::Pending));
        assert_eq!(status.alive, None, "the id's liveness is the holder's");
        assert_eq!(status.mngt_ip, None);
        assert_eq!(status.restart_count, 2);
        assert_eq!(status.observed_generation, Some(3));
        let ready = condition_of(&status, "Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", DUPLICATE_STORE_ID)
        );
        assert!(
            ready
                .message
                .contains("storeId 7 belongs to PureFlashStore pf/store-a")
        );
        // Nothing changed, nothing to write: not even the observation time moves.
        let later = now + SignedDuration::from_secs(60);
        assert_eq!(duplicate(&status, 7, "pf/store-a", later, Some(3)), status);
    }
}
