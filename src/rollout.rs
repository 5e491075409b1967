//! When a store's Pod may be replaced to apply a changed spec (a rolling update).
//!
//! Replacing a pfs Pod takes its store out of the PureFlash cluster until the new pfs has
//! registered. A change applied to every store at once (a new image, a new pfs setting) must
//! therefore not replace every Pod at once: that would take all replicas of every volume down
//! together. This module owns that judgement. A store that serves nothing (its Pod is not
//! running, or ZooKeeper says it is offline) is replaced at once, since a new configuration may
//! be exactly what brings it back; a serving store is replaced only while fewer than
//! `max_unavailable` other stores are unavailable, offline or still settling after their own
//! replacement, the way a PodDisruptionBudget guards voluntary disruptions.
//!
//! Pure on purpose, like `recovery`: the controller gathers the facts, calls [`decide`] and
//! carries out the [`RollVerdict`].

use jiff::{SignedDuration, Timestamp};

use crate::recovery::{PodFacts, Predecessor};

/// Rolling-update settings (operator-wide).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RollPolicy {
    /// Serving stores are replaced only while fewer than this many other stores are unavailable.
    pub max_unavailable: usize,
    /// When it cannot be told whose session `alive` belongs to, a store counts as available
    /// again only once its pfs container has run this long with the store alive: `pfs` does
    /// not close its session on SIGTERM, so for up to a session timeout after a replacement
    /// the old session's `alive` still stands for the new Pod.
    pub settle: SignedDuration,
}

/// The store's `alive` node as the ZooKeeper view has it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AliveNode {
    pub exists: bool,
    /// The session owning it, when known.
    pub session: Option<i64>,
}

/// Whether the standing `alive` is known to be this Pod's pfs's own: its container has not
/// been restarted in place (a restarted container's old session may linger just the same)
/// and `alive` is owned by another session than the one the Pod was created after.
pub fn registered_by(pod: &PodFacts, alive: AliveNode) -> bool {
    alive.exists
        && pod.container_restarts == 0
        && match (pod.predecessor, alive.session) {
            (Predecessor::NoSession, _) => true,
            (Predecessor::Session(old), Some(now)) => old != now,
            _ => false,
        }
}

/// Whether a store serves the PureFlash cluster now, for the other stores' rollouts.
///
/// Available means: alive in ZooKeeper, its Pod running and not being deleted, its pfs
/// container running (after a crash the kubelet shows it terminated, its restart count not
/// raised yet, while the dead pfs's session still holds `alive`), and `alive` either
/// [`registered_by`] the Pod's pfs or standing since the container has run for
/// [`RollPolicy::settle`].
pub fn available(
    alive: AliveNode,
    pod: Option<&PodFacts>,
    now: Timestamp,
    policy: &RollPolicy,
) -> bool {
    alive.exists
        && pod.is_some_and(|pod| {
            pod.phase == "Running"
                && !pod.terminating
                && pod.running_since.is_some()
                && (registered_by(pod, alive)
                    || pod
                        .running_since
                        .is_some_and(|since| now.duration_since(since) >= policy.settle))
        })
}

/// How long until a store that is not [`available`] only for lack of proof that `alive` is its
/// own becomes available by time alone; `None` when time will not change the answer.
pub fn settles_in(
    alive: AliveNode,
    pod: Option<&PodFacts>,
    now: Timestamp,
    policy: &RollPolicy,
) -> Option<SignedDuration> {
    let pod = pod.filter(|pod| pod.phase == "Running" && !pod.terminating)?;
    if !alive.exists || registered_by(pod, alive) {
        return None;
    }
    let left = policy
        .settle
        .checked_sub(now.duration_since(pod.running_since?))?;
    left.is_positive().then_some(left)
}

/// What a store's rollout observes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RollObservation<'a> {
    /// The operator's ZooKeeper view is connected and resynced.
    pub view_trusted: bool,
    /// The store is alive in that view.
    pub alive: bool,
    /// The store's Pod, which runs an older configuration.
    pub pod: &'a PodFacts,
    /// Other stores that are not [`available`], by name (for the message), at most a few.
    pub unavailable_others: &'a [String],
    /// How many other stores are not available in all.
    pub unavailable_count: usize,
    /// The store carries the recovery-paused annotation: someone works on it by hand.
    pub paused: bool,
    /// Recovery restarts are frozen cluster-wide: so many stores are offline at once that a
    /// ZooKeeper or network fault is the likelier cause.
    pub cluster_frozen: bool,
    /// Since when the store has been offline, as its status has it (`None`: not recorded yet,
    /// it has just gone).
    pub offline_since: Option<Timestamp>,
    /// The store's `offlineGracePeriodSeconds`.
    pub offline_grace: SignedDuration,
    /// The Pod's node is not known to be in contact (see
    /// [`crate::controller::pods::node_out_of_contact`]; a Node that could not be read is not
    /// known to be). Read (fresh) only for a Pod that would be replaced otherwise.
    pub node_out_of_contact: bool,
    /// The Pod's node is cordoned (`spec.unschedulable`): read with the above.
    pub node_cordoned: bool,
    /// The pfs container has just exited and shows no reason to wait yet: its kubelet is
    /// about to restart it, or to say it waits (`CrashLoopBackOff`). A moment, not a Pod that
    /// does not run: judged as the running Pod it was.
    pub container_exited: bool,
    pub now: Timestamp,
}

/// Why a Pod is replaced now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RollReason {
    /// The Pod is not running: replacing it disrupts nothing.
    PodNotRunning,
    /// The store serves, and the cluster can spare it.
    WithinBudget,
}

impl RollReason {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            RollReason::PodNotRunning => "PodNotRunning",
            RollReason::WithinBudget => "WithinBudget",
        }
    }
}

/// The condition reason of a rollout held for other stores' sake.
pub const OTHERS_UNAVAILABLE: &str = "OtherStoresUnavailable";

/// The condition reason of a rollout held by a disruption budget.
pub const DISRUPTION_BUDGET: &str = "DisruptionBudget";

/// Why a Pod keeps its old configuration for now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HoldReason {
    /// The Pod is being deleted already; its successor gets the new configuration.
    PodTerminating,
    /// The ZooKeeper view cannot tell whether the store serves.
    ViewUntrusted,
    /// The store's recovery is paused by hand: its running pfs is left alone.
    RecoveryPaused,
    /// The store is offline while restarts are frozen cluster-wide: replacing its running pfs
    /// would be the restart the freeze withholds.
    ClusterFrozen,
    /// The store has been offline for less than its grace period: a pfs whose session
    /// expired may still serve the clients it has, and recovery would not kill it yet either.
    WithinGracePeriod,
    /// The store is offline past its grace period while its pfs runs: replacing the Pod is a
    /// kill, which is recovery's to make, with its rails (backoff, budget, restarts in flight,
    /// node contact, recovery enabled). Its restart makes the new Pod from the changed spec.
    AwaitingRecovery,
    /// The Pod's node is out of contact (gone, `Ready=Unknown`, or the Pod's phase `Unknown`):
    /// a delete would not reach its pfs, which may well serve meanwhile, and would kill it
    /// whenever the node reports again, whatever the other stores are doing by then.
    NodeUnreachable,
    /// The Pod's node is cordoned (a drain, maintenance): no new Pod is made there until it is
    /// uncordoned, so the replacement would leave the store without one meanwhile.
    NodeCordoned,
    /// `max_unavailable` other stores are unavailable.
    OthersUnavailable {
        count: usize,
        /// A few of them, for the message.
        names: Vec<String>,
    },
    /// The API refuses the Pod the spec makes (a dry run of its create failed: invalid
    /// resources, a quota, an admission policy, a Pod Security level raised since the running
    /// Pod was made): the running Pod is not deleted, by a rollout or a restart, for a
    /// successor that could not be created.
    ReplacementRefused {
        /// The API's message.
        why: String,
    },
    /// The serving Pod's eviction was refused (429) by a disruption budget covering it, or
    /// would be by the operator's own as last watched (not asked then): the
    /// operator's own (another node's stores are down, or being drained), or one of the
    /// cluster's. Rollouts evict rather than delete, so that a drain and a rollout never both
    /// take the last disruption the budget allows.
    DisruptionBudget {
        /// The API's message.
        why: String,
    },
}

impl HoldReason {
    /// The condition reason.
    pub fn as_str(&self) -> &'static str {
        match self {
            HoldReason::PodTerminating => "PodTerminating",
            HoldReason::ViewUntrusted => "ViewUntrusted",
            HoldReason::RecoveryPaused => "RecoveryPaused",
            HoldReason::ClusterFrozen => "ClusterFrozen",
            HoldReason::WithinGracePeriod => "WithinGracePeriod",
            HoldReason::AwaitingRecovery => "AwaitingRecovery",
            HoldReason::NodeUnreachable => "NodeUnreachable",
            HoldReason::NodeCordoned => "NodeCordoned",
            HoldReason::OthersUnavailable { .. } => OTHERS_UNAVAILABLE,
            HoldReason::ReplacementRefused { .. } => "ReplacementRefused",
            HoldReason::DisruptionBudget { .. } => DISRUPTION_BUDGET,
        }
    }

    /// What a person reads in the condition. It names no other store: the set of unavailable
    /// stores moves while a rollout proceeds, and a message that moved with it would rewrite
    /// every held store's status at each step.
    pub fn message(&self, max_unavailable: usize) -> String {
        match self {
            HoldReason::PodTerminating => {
                "the pod is being deleted; its successor runs the new configuration".into()
            }
            HoldReason::ViewUntrusted => {
                "the ZooKeeper view cannot tell whether the store serves: the pod is not replaced"
                    .into()
            }
            HoldReason::RecoveryPaused => {
                "recovery of this store is paused (pureflash.io/recovery-paused): its running pod is not replaced; remove the annotation, or annotate pureflash.io/restart to replace it now".into()
            }
            HoldReason::ClusterFrozen => {
                "the store is offline while restarts are frozen cluster-wide (too many stores offline at once): its running pod is not replaced until the freeze lifts".into()
            }
            HoldReason::WithinGracePeriod => {
                "the store is offline for less than its grace period (recovery.offlineGracePeriodSeconds): its running pfs, which may still serve, is not replaced yet".into()
            }
            HoldReason::AwaitingRecovery => {
                "the store is offline while its pfs runs: its pod is replaced not by the rollout but by recovery's restart, which makes it from the changed spec once recovery's rules allow (the RecoveryFrozen condition says what holds it); with recovery disabled, annotate pureflash.io/restart to replace it".into()
            }
            HoldReason::NodeUnreachable => {
                "the pod's node is out of contact (gone, or Ready Unknown), or could not be read: a delete would not reach its pfs, and would kill it whenever the node reports again, so the pod is replaced once the node reports".into()
            }
            HoldReason::NodeCordoned => {
                "the pod's node is cordoned: no new pod is made there until it is uncordoned, so the running one is kept and replaced once the node is uncordoned".into()
            }
            HoldReason::OthersUnavailable { .. } => format!(
                "a changed spec waits to replace the pod of this serving store: other stores are unavailable and at most {max_unavailable} may be (--max-unavailable); the RolloutHeld Event names them"
            ),
            HoldReason::ReplacementRefused { why } => format!(
                "the pod the spec makes would be refused (a changed spec, or a policy added since the running pod was made), so the running one is kept: {why}"
            ),
            HoldReason::DisruptionBudget { .. } => {
                "a changed spec waits to replace the pod of this serving store: a disruption budget refuses its eviction (a drain under way, stores of another node down, --max-unavailable-nodes, or another budget over the pod: kubectl get pdb; the pureflash-stores budget's pureflash.io/down-stores annotation names the stores that are down)".into()
            }
        }
    }

    /// The condition message with the other stores named, for the Event.
    pub fn detail(&self, max_unavailable: usize) -> String {
        match self {
            HoldReason::OthersUnavailable { count, names } => {
                let more = count.saturating_sub(names.len());
                let listed = names.join(", ");
                let listed = if more > 0 {
                    format!("{listed} and {more} more")
                } else {
                    listed
                };
                format!(
                    "a changed spec waits to replace the pod of this serving store: {count} other store(s) unavailable ({listed}), at most {max_unavailable} may be (--max-unavailable)"
                )
            }
            HoldReason::DisruptionBudget { why } => {
                format!("{}: {why}", self.message(max_unavailable))
            }
            other => other.message(max_unavailable),
        }
    }
}

/// The rollout verdict for a store whose Pod runs an older configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RollVerdict {
    Roll(RollReason),
    Hold(HoldReason),
}

/// Decides whether the Pod of a store whose configuration changed is replaced now.
pub fn decide(observation: &RollObservation<'_>, policy: &RollPolicy) -> RollVerdict {
    let pod = observation.pod;
    if pod.terminating {
        return RollVerdict::Hold(HoldReason::PodTerminating);
    }
    // Pending, Failed, Succeeded, or a container that does not run (crash-looping, waiting
    // for an image): no pfs runs, so replacing the Pod kills nothing, and recovery, which
    // leaves such a Pod to its kubelet, would never replace it. The changed spec may well be
    // its fix. `Unknown` (the node is unreachable) is not among them: its pfs may well serve.
    if matches!(pod.phase.as_str(), "Pending" | "Failed" | "Succeeded")
        || (pod.phase == "Running" && pod.running_since.is_none() && !observation.container_exited)
    {
        return RollVerdict::Roll(RollReason::PodNotRunning);
    }
    if !observation.view_trusted {
        return RollVerdict::Hold(HoldReason::ViewUntrusted);
    }
    // From here the Pod runs a pfs: replacing it is a kill, so recovery's hand-brakes apply.
    if observation.paused {
        return RollVerdict::Hold(HoldReason::RecoveryPaused);
    }
    // Its node out of contact: a delete would not reach its pfs (alive or not, it may serve),
    // but would stay pending, to kill it whenever the node reports again.
    if pod.phase == "Unknown" || observation.node_out_of_contact {
        return RollVerdict::Hold(HoldReason::NodeUnreachable);
    }
    if observation.node_cordoned {
        return RollVerdict::Hold(HoldReason::NodeCordoned);
    }
    if !observation.alive {
        if observation.cluster_frozen {
            return RollVerdict::Hold(HoldReason::ClusterFrozen);
        }
        // Not replaced on a blip: several stores whose sessions a network fault expired
        // together would otherwise all be replaced at once.
        let since = observation.offline_since.unwrap_or(observation.now);
        if observation.now.duration_since(since) < observation.offline_grace {
            return RollVerdict::Hold(HoldReason::WithinGracePeriod);
        }
        // Nor after it by the rollout: that would kill several such stores together, past
        // every rail of recovery's (at most so many restarts in flight, node contact…).
        return RollVerdict::Hold(HoldReason::AwaitingRecovery);
    }
    if observation.unavailable_count >= policy.max_unavailable {
        return RollVerdict::Hold(HoldReason::OthersUnavailable {
            count: observation.unavailable_count,
            names: observation.unavailable_others.to_vec(),
        });
    }
    RollVerdict::Roll(RollReason::WithinBudget)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Timestamp = Timestamp::constant(1_750_000_000, 0);

    fn policy() -> RollPolicy {
        RollPolicy {
            max_unavailable: 1,
            settle: SignedDuration::from_secs(30),
        }
    }

    fn pod(phase: &str, running_for: Option<i64>) -> PodFacts {
        PodFacts {
            uid: "uid-1".into(),
            phase: phase.into(),
            terminating: false,
            stop_due: None,
            running_since: running_for.map(|secs| NOW - SignedDuration::from_secs(secs)),
            container_restarts: 0,
            predecessor: Predecessor::Unknown,
        }
    }

    const ALIVE: AliveNode = AliveNode {
        exists: true,
        session: None,
    };
    const GONE: AliveNode = AliveNode {
        exists: false,
        session: None,
    };

    fn owned_by(session: i64) -> AliveNode {
        AliveNode {
            exists: true,
            session: Some(session),
        }
    }

    fn observe<'a>(alive: bool, pod: &'a PodFacts, others: &'a [String]) -> RollObservation<'a> {
        RollObservation {
            view_trusted: true,
            alive,
            pod,
            unavailable_others: others,
            unavailable_count: others.len(),
            paused: false,
            cluster_frozen: false,
            // Offline long past its grace, where it is offline.
            offline_since: Some(NOW - SignedDuration::from_secs(3_600)),
            offline_grace: SignedDuration::from_secs(30),
            node_out_of_contact: false,
            node_cordoned: false,
            container_exited: false,
            now: NOW,
        }
    }

    #[test]
    fn an_offline_store_is_not_replaced_within_its_grace_period() {
        let running = pod("Running", Some(300));
        let just_gone = |since: Option<i64>| RollObservation {
            offline_since: since.map(|ago| NOW - SignedDuration::from_secs(ago)),
            ..observe(false, &running, &[])
        };
        for since in [None, Some(0), Some(29)] {
            assert_eq!(
                decide(&just_gone(since), &policy()),
                RollVerdict::Hold(HoldReason::WithinGracePeriod),
                "offline since {since:?}"
            );
        }
        assert_eq!(
            decide(&just_gone(Some(30)), &policy()),
            RollVerdict::Hold(HoldReason::AwaitingRecovery)
        );
        // A crash-looping container runs no pfs: replaced at once, frozen or not (recovery
        // never replaces such a Pod).
        let crash_looping = pod("Running", None);
        for frozen in [false, true] {
            let observation = RollObservation {
                cluster_frozen: frozen,
                ..just_gone(Some(0))
            };
            let observation = RollObservation {
                pod: &crash_looping,
                ..observation
            };
            assert_eq!(
                decide(&observation, &policy()),
                RollVerdict::Roll(RollReason::PodNotRunning),
                "frozen {frozen}"
            );
        }
        // A Pod that runs no pfs serves nothing to wait for.
        let pending = pod("Pending", None);
        assert_eq!(
            decide(
                &RollObservation {
                    offline_since: None,
                    ..observe(false, &pending, &[])
                },
                &policy()
            ),
            RollVerdict::Roll(RollReason::PodNotRunning)
        );
        let hold = HoldReason::WithinGracePeriod;
        assert_eq!(hold.as_str(), "WithinGracePeriod");
        assert_eq!(hold.detail(1), hold.message(1));
    }

    #[test]
    fn a_serving_store_rolls_when_every_other_store_is_available() {
        let running = pod("Running", Some(300));
        assert_eq!(
            decide(&observe(true, &running, &[]), &policy()),
            RollVerdict::Roll(RollReason::WithinBudget)
        );
    }

    #[test]
    fn a_serving_store_waits_while_another_store_is_unavailable() {
        let running = pod("Running", Some(300));
        let others = ["store-2".to_owned()];
        let verdict = decide(&observe(true, &running, &others), &policy());
        assert_eq!(
            verdict,
            RollVerdict::Hold(HoldReason::OthersUnavailable {
                count: 1,
                names: others.to_vec(),
            })
        );
        let RollVerdict::Hold(hold) = verdict else {
            unreachable!()
        };
        assert_eq!(hold.as_str(), "OtherStoresUnavailable");
        assert!(hold.detail(1).contains("store-2"), "{}", hold.detail(1));
        let other_step = HoldReason::OthersUnavailable {
            count: 2,
            names: vec!["store-3".into(), "store-4".into()],
        };
        assert_eq!(
            hold.message(1),
            other_step.message(1),
            "the condition message does not move with the rollout"
        );

        // A larger budget lets it go.
        let two = RollPolicy {
            max_unavailable: 2,
            ..policy()
        };
        assert_eq!(
            decide(&observe(true, &running, &others), &two),
            RollVerdict::Roll(RollReason::WithinBudget)
        );
        // A budget of zero never replaces a serving store.
        let zero = RollPolicy {
            max_unavailable: 0,
            ..policy()
        };
        assert!(matches!(
            decide(&observe(true, &running, &[]), &zero),
            RollVerdict::Hold(HoldReason::OthersUnavailable { count: 0, .. })
        ));
    }

    #[test]
    fn a_store_that_serves_nothing_rolls_at_once() {
        let others = ["store-2".to_owned(), "store-3".to_owned()];
        for phase in ["Pending", "Failed", "Succeeded"] {
            let not_running = pod(phase, None);
            assert_eq!(
                decide(&observe(true, &not_running, &others), &policy()),
                RollVerdict::Roll(RollReason::PodNotRunning),
                "{phase}"
            );
            // Even with an untrusted view: a Pod that does not run serves nothing.
            let untrusted = RollObservation {
                view_trusted: false,
                ..observe(false, &not_running, &others)
            };
            assert_eq!(
                decide(&untrusted, &policy()),
                RollVerdict::Roll(RollReason::PodNotRunning)
            );
        }
        // A container that does not run: even paused, or on an untrusted view.
        let crash_looping = pod("Running", None);
        for (paused, view_trusted) in [(false, true), (true, true), (false, false)] {
            let observation = RollObservation {
                paused,
                view_trusted,
                ..observe(true, &crash_looping, &others)
            };
            assert_eq!(
                decide(&observation, &policy()),
                RollVerdict::Roll(RollReason::PodNotRunning),
                "paused {paused}, trusted {view_trusted}"
            );
        }
    }

    #[test]
    fn a_running_pfs_of_an_offline_store_is_left_to_recovery() {
        let running = pod("Running", Some(300));
        let others = ["store-2".to_owned()];
        assert_eq!(
            decide(&observe(false, &running, &others), &policy()),
            RollVerdict::Hold(HoldReason::AwaitingRecovery)
        );
    }

    #[test]
    fn a_running_pfs_is_not_replaced_against_recoverys_hand_brakes() {
        let running = pod("Running", Some(300));
        let paused = |alive| RollObservation {
            paused: true,
            ..observe(alive, &running, &[])
        };
        for alive in [true, false] {
            assert_eq!(
                decide(&paused(alive), &policy()),
                RollVerdict::Hold(HoldReason::RecoveryPaused),
                "paused, alive {alive}"
            );
        }
        let frozen = |alive| RollObservation {
            cluster_frozen: true,
            ..observe(alive, &running, &[])
        };
        assert_eq!(
            decide(&frozen(false), &policy()),
            RollVerdict::Hold(HoldReason::ClusterFrozen),
            "an offline store's replacement is the restart the freeze withholds"
        );
        assert_eq!(
            decide(&frozen(true), &policy()),
            RollVerdict::Roll(RollReason::WithinBudget),
            "a serving store is guarded by the budget instead"
        );
        // A Pod that runs no pfs is replaced all the same: that kills nothing.
        let pending = pod("Pending", None);
        let held_back = RollObservation {
            paused: true,
            cluster_frozen: true,
            ..observe(false, &pending, &[])
        };
        assert_eq!(
            decide(&held_back, &policy()),
            RollVerdict::Roll(RollReason::PodNotRunning)
        );
        for hold in [
            HoldReason::RecoveryPaused,
            HoldReason::ClusterFrozen,
            HoldReason::AwaitingRecovery,
        ] {
            assert_eq!(hold.detail(1), hold.message(1));
            assert!(!hold.message(1).is_empty());
        }
    }

    #[test]
    fn a_pod_on_an_unreachable_node_is_not_taken_for_one_that_runs_nothing() {
        let unknown = pod("Unknown", Some(300));
        for alive in [true, false] {
            assert_eq!(
                decide(&observe(alive, &unknown, &[]), &policy()),
                RollVerdict::Hold(HoldReason::NodeUnreachable),
                "alive {alive}"
            );
        }
    }

    /// Real clusters never set phase `Unknown` any more: a silent node shows in the Node's
    /// `Ready` condition, the Pod reading `Running` still.
    #[test]
    fn a_serving_pfs_on_a_node_out_of_contact_is_not_replaced() {
        let running = pod("Running", Some(300));
        for alive in [true, false] {
            let observation = RollObservation {
                node_out_of_contact: true,
                ..observe(alive, &running, &[])
            };
            assert_eq!(
                decide(&observation, &policy()),
                RollVerdict::Hold(HoldReason::NodeUnreachable),
                "alive {alive}"
            );
        }
        // A Pod that runs no pfs is replaced all the same: nothing is killed.
        let pending = pod("Pending", None);
        let observation = RollObservation {
            node_out_of_contact: true,
            ..observe(true, &pending, &[])
        };
        assert_eq!(
            decide(&observation, &policy()),
            RollVerdict::Roll(RollReason::PodNotRunning)
        );
    }

    /// A drained node's Pods are not made anew until it is uncordoned: a serving pfs there is
    /// kept meanwhile, and one that runs nothing is replaced (its successor waiting).
    #[test]
    fn a_serving_pfs_on_a_cordoned_node_is_not_replaced() {
        let running = pod("Running", Some(300));
        for alive in [true, false] {
            let observation = RollObservation {
                node_cordoned: true,
                ..observe(alive, &running, &[])
            };
            assert_eq!(
                decide(&observation, &policy()),
                RollVerdict::Hold(HoldReason::NodeCordoned),
                "alive {alive}"
            );
        }
        let pending = pod("Pending", None);
        let observation = RollObservation {
            node_cordoned: true,
            ..observe(true, &pending, &[])
        };
        assert_eq!(
            decide(&observation, &policy()),
            RollVerdict::Roll(RollReason::PodNotRunning)
        );
    }

    /// A container seen between its exit and its kubelet's restart (or CrashLoopBackOff) is
    /// not yet a Pod that does not run: a paused store's pfs, restarted in place, is left alone.
    #[test]
    fn a_container_that_just_exited_is_judged_as_the_running_pod_it_was() {
        let exited = pod("Running", None);
        let observation = RollObservation {
            paused: true,
            container_exited: true,
            ..observe(true, &exited, &[])
        };
        assert_eq!(
            decide(&observation, &policy()),
            RollVerdict::Hold(HoldReason::RecoveryPaused)
        );
        // Once it waits (CrashLoopBackOff), it does not run.
        let waiting = RollObservation {
            container_exited: false,
            ..observation
        };
        assert_eq!(
            decide(&waiting, &policy()),
            RollVerdict::Roll(RollReason::PodNotRunning)
        );
    }

    #[test]
    fn nothing_rolls_on_an_untrusted_view_or_a_terminating_pod() {
        let running = pod("Running", Some(300));
        let untrusted = RollObservation {
            view_trusted: false,
            ..observe(false, &running, &[])
        };
        assert_eq!(
            decide(&untrusted, &policy()),
            RollVerdict::Hold(HoldReason::ViewUntrusted)
        );
        let terminating = PodFacts {
            terminating: true,
            stop_due: None,
            ..pod("Running", Some(300))
        };
        assert_eq!(
            decide(&observe(false, &terminating, &[]), &policy()),
            RollVerdict::Hold(HoldReason::PodTerminating)
        );
    }

    #[test]
    fn without_knowing_whose_alive_it_is_a_store_is_available_once_settled() {
        let policy = policy();
        let settled = pod("Running", Some(30));
        assert!(available(ALIVE, Some(&settled), NOW, &policy));
        assert!(!available(GONE, Some(&settled), NOW, &policy), "offline");
        assert!(!available(ALIVE, None, NOW, &policy), "no pod");
        // Just replaced: the old session's alive may still be standing for it.
        let young = pod("Running", Some(29));
        assert!(!available(ALIVE, Some(&young), NOW, &policy), "settling");
        assert_eq!(
            settles_in(ALIVE, Some(&young), NOW, &policy),
            Some(SignedDuration::from_secs(1))
        );
        assert_eq!(settles_in(ALIVE, Some(&settled), NOW, &policy), None);
        assert_eq!(
            settles_in(GONE, Some(&young), NOW, &policy),
            None,
            "time will not do"
        );
        let terminating = PodFacts {
            terminating: true,
            stop_due: None,
            ..settled.clone()
        };
        assert!(!available(ALIVE, Some(&terminating), NOW, &policy));
        assert!(!available(ALIVE, Some(&pod("Pending", None)), NOW, &policy));
        assert!(
            !available(ALIVE, Some(&pod("Running", None)), NOW, &policy),
            "running without a start time: not known to have settled"
        );
    }

    #[test]
    fn an_alive_owned_by_a_new_session_proves_the_new_pfs_at_once() {
        let policy = policy();
        let replacing = |predecessor| PodFacts {
            predecessor,
            ..pod("Running", Some(1))
        };
        let after_old_session = replacing(Predecessor::Session(7));
        assert!(
            !available(owned_by(7), Some(&after_old_session), NOW, &policy),
            "the old pfs's session still holds alive"
        );
        assert!(available(
            owned_by(8),
            Some(&after_old_session),
            NOW,
            &policy
        ));
        assert_eq!(
            settles_in(owned_by(8), Some(&after_old_session), NOW, &policy),
            None
        );
        assert!(
            !available(ALIVE, Some(&after_old_session), NOW, &policy),
            "owner unknown: wait as long as it takes to settle"
        );
        let after_none = replacing(Predecessor::NoSession);
        assert!(available(owned_by(7), Some(&after_none), NOW, &policy));
        assert!(available(ALIVE, Some(&after_none), NOW, &policy));
        assert!(!available(GONE, Some(&after_none), NOW, &policy));

        // Restarted in place, the container's previous session may linger just the same.
        let restarted_in_place = PodFacts {
            container_restarts: 1,
            ..after_none.clone()
        };
        assert!(!available(
            owned_by(8),
            Some(&restarted_in_place),
            NOW,
            &policy
        ));
        assert!(available(
            owned_by(8),
            Some(&PodFacts {
                running_since: Some(NOW - SignedDuration::from_secs(30)),
                ..restarted_in_place
            }),
            NOW,
            &policy
        ));
        // Nor does a new session help a Pod that does not run.
        let pending = PodFacts {
            phase: "Pending".into(),
            ..after_none.clone()
        };
        assert!(!available(owned_by(8), Some(&pending), NOW, &policy));
        let terminating = PodFacts {
            terminating: true,
            stop_due: None,
            ..after_none
        };
        assert!(!available(owned_by(8), Some(&terminating), NOW, &policy));
        // Its container crashed, the kubelet not restarted it yet (its count is raised when
        // it does): the dead pfs's session holds `alive` for a while still.
        let crashed = PodFacts {
            running_since: None,
            ..replacing(Predecessor::Session(7))
        };
        assert!(!available(owned_by(8), Some(&crashed), NOW, &policy));
    }

    #[test]
    fn the_event_names_a_few_and_counts_the_rest() {
        let hold = HoldReason::OthersUnavailable {
            count: 7,
            names: vec!["a".into(), "b".into(), "c".into()],
        };
        let detail = hold.detail(1);
        assert!(
            detail.contains("7 other store(s) unavailable (a, b, c and 4 more)"),
            "{detail}"
        );
    }
}
