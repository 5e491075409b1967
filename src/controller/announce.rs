//! What one reconcile announces: the Events a store's status change is told with, and the
//! recovery skips counted in metrics. Pure, decided from the status before and after;
//! `reconcile` writes them.
//!
//! The rule throughout: news once, not on every reconcile, and a ZooKeeper blip (a phase of
//! Unknown in between) is no news about the store itself.

use crate::controller::events::EventType;
use crate::controller::status;
use crate::crd::{Phase, PureFlashStoreStatus};
use crate::recovery::{SkipReason, Verdict};
use crate::rollout::{self, HoldReason};

/// One Event to write about the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announcement {
    pub kind: EventType,
    /// From the operator's fixed list, in PascalCase.
    pub reason: String,
    pub action: &'static str,
    pub note: String,
}

/// What a reconcile announces.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Announcements {
    pub events: Vec<Announcement>,
    /// A recovery decision that held the store back, counted once, as it changes.
    pub skip_counted: Option<SkipReason>,
    /// The store just went Offline (for the log).
    pub went_offline: bool,
}

/// What else the announcements depend on.
pub struct Circumstances<'a> {
    /// The recovery verdict of this reconcile.
    pub verdict: &'a Verdict,
    /// Why a rollout holds the store's Pod back, if it does.
    pub roll_held: Option<&'a HoldReason>,
    /// This reconcile restarted the store (its status is the one recording the restart).
    pub restarted_now: bool,
    /// The rollout's bound on unavailable stores, for its messages.
    pub max_unavailable: usize,
    /// The trays the spec lists (what TraysOnline counts against).
    pub spec_trays: usize,
}

/// The announcements of a status going from `previous` to `status`.
pub fn announcements(
    previous: &PureFlashStoreStatus,
    status: &PureFlashStoreStatus,
    circumstances: &Circumstances<'_>,
) -> Announcements {
    let mut out = Announcements::default();
    let mut offline_at_once = false;
    let mut event = |kind, reason: &str, action, note: String| {
        out.events.push(Announcement {
            kind,
            reason: reason.to_owned(),
            action,
            note,
        })
    };
    let verdict = circumstances.verdict;

    // Back from an untrusted view, the phase is the news only if it is not the one before the
    // view was lost: a ZooKeeper blip does not bring a store online, nor take it offline again.
    let before = match status.phase {
        Some(Phase::Unknown) => previous.phase,
        _ => status::last_trusted_phase(previous),
    };
    if before != status.phase {
        match status.phase {
            Some(Phase::Online) => event(
                EventType::Normal,
                "StoreOnline",
                "Observe",
                "the store's alive node exists in ZooKeeper".into(),
            ),
            Some(Phase::Offline) => event(
                EventType::Warning,
                "StoreOffline",
                "Observe",
                "the store is not alive in ZooKeeper".into(),
            ),
            // Seen offline and restarted in one look (no grace period, or a manual restart
            // landing as it went down): the outage is news all the same. (Not the outage a
            // restart of a live store brings about, seen by a later look.)
            Some(Phase::Recovering)
                if circumstances.restarted_now
                    && matches!(before, Some(Phase::Online | Phase::Starting)) =>
            {
                event(
                    EventType::Warning,
                    "StoreOffline",
                    "Observe",
                    "the store is not alive in ZooKeeper".into(),
                );
                offline_at_once = true;
            }
            // A store seen for the first time while the view loads is not news.
            Some(Phase::Unknown) if previous.phase.is_some() => {
                // Why, as the Alive condition says it (a lost session, or no stores directory).
                let why = status
                    .condition("Alive", "Unknown")
                    .map_or("the operator's ZooKeeper view cannot be trusted", |c| {
                        c.message.as_str()
                    });
                event(
                    EventType::Warning,
                    "ViewUntrusted",
                    "Observe",
                    format!("{why}: no decision is taken"),
                );
                // The last decision stands through an untrusted view, so the skip is counted
                // here, once per store and outage, as its Event is written.
                if *verdict == Verdict::Skip(SkipReason::ViewUntrusted) {
                    out.skip_counted = Some(SkipReason::ViewUntrusted);
                }
            }
            _ => {}
        }
    }

    // The Pod a restart just killed going away is that restart under way, not recovery held
    // back.
    let own_kill_ending = *verdict == Verdict::Skip(SkipReason::PodTerminating)
        && previous
            .last_decision
            .as_deref()
            .is_some_and(|last| last.starts_with("Restart"));
    if previous.last_decision != status.last_decision
        && !own_kill_ending
        && let Verdict::Skip(reason) | Verdict::Wait { reason, .. } = verdict
    {
        out.skip_counted = Some(*reason);
        let kind = match reason {
            SkipReason::ClusterFrozen
            | SkipReason::RestartBudgetExhausted
            | SkipReason::TooManyInFlight
            | SkipReason::NodeNotReady
            | SkipReason::PodStuckTerminating => EventType::Warning,
            _ => EventType::Normal,
        };
        let note = match verdict {
            Verdict::Wait { until, .. } => format!(
                "recovery waits until {}: {}",
                until.strftime("%Y-%m-%dT%H:%M:%SZ"),
                reason.as_str()
            ),
            _ => format!("recovery does not act: {}", reason.as_str()),
        };
        // An untrusted view is the phase's Event (ViewUntrusted) already.
        if *reason != SkipReason::ViewUntrusted {
            event(
                kind,
                &format!("Recovery{}", reason.as_str()),
                "Recover",
                note,
            );
        }
    }

    // An Online store short of trays: the phase does not show it. Told once, as the
    // TraysOnline condition turns to TraysOffline while the store is Online: a tray of a store
    // that stays alive going offline, or a store (back) online without all its trays once its
    // pfs has had the time to register them (TraysRegistering until then: a starting pfs
    // creates `alive` before its trays' `online` nodes). Not their return.
    //
    // Back from a ZooKeeper blip (the condition read Unknown meanwhile), the trays the status
    // kept from before it tell, counted as TraysOnline counts them: a tray lost during the
    // blip is told, one offline since before it is not told again.
    let trays_offline = status
        .conditions
        .iter()
        .find(|c| c.type_ == "TraysOnline" && c.reason == "TraysOffline")
        .filter(|_| status.phase == Some(Phase::Online));
    let told_before = match previous.phase {
        Some(Phase::Online) => previous
            .conditions
            .iter()
            .any(|c| c.type_ == "TraysOnline" && c.reason == "TraysOffline"),
        Some(Phase::Unknown) if status::last_trusted_phase(previous) == Some(Phase::Online) => {
            let online = previous.trays.iter().filter(|tray| tray.online).count();
            online < circumstances.spec_trays || online == 0
        }
        _ => false,
    };
    if let Some(offline) = trays_offline
        && !told_before
    {
        event(
            EventType::Warning,
            "TraysOffline",
            "Observe",
            offline.message.clone(),
        );
    }

    // Once per hold: not again when a ZooKeeper blip (ViewUntrusted) interrupted it, but when
    // a hold of another kind (paused, offline) turns into one for other stores.
    let held_before = previous.conditions.iter().any(|c| {
        c.type_ == "UpToDate"
            && c.status == "False"
            && (c.reason == rollout::OTHERS_UNAVAILABLE
                || c.reason == rollout::DISRUPTION_BUDGET
                || c.reason == "ViewUntrusted")
    });
    if let Some(hold @ (HoldReason::OthersUnavailable { .. } | HoldReason::DisruptionBudget { .. })) =
        circumstances.roll_held
        && !held_before
    {
        event(
            EventType::Normal,
            "RolloutHeld",
            "Roll",
            hold.detail(circumstances.max_unavailable),
        );
    }
    // Once per refusal, as the condition shows it.
    let refused_before = previous
        .conditions
        .iter()
        .any(|c| c.type_ == "UpToDate" && c.reason == "ReplacementRefused");
    if let Some(hold @ HoldReason::ReplacementRefused { .. }) = circumstances.roll_held
        && !refused_before
    {
        event(
            EventType::Warning,
            "RolloutRefused",
            "Roll",
            hold.message(circumstances.max_unavailable),
        );
    }

    out.went_offline = offline_at_once
        || (status.phase == Some(Phase::Offline) && previous.phase != Some(Phase::Offline));
    out
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    use super::*;

    fn cond(type_: &str, status: &str, reason: &str, message: &str) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message: message.into(),
            last_transition_time: Time(Timestamp::UNIX_EPOCH),
            observed_generation: None,
        }
    }

    fn trays_online() -> Condition {
        cond("TraysOnline", "True", "AllTraysOnline", "2/2 trays online")
    }

    fn trays_offline() -> Condition {
        cond(
            "TraysOnline",
            "False",
            "TraysOffline",
            "1/2 trays online; offline: /dev/sdb (t2)",
        )
    }

    fn trays_registering() -> Condition {
        cond(
            "TraysOnline",
            "False",
            "TraysRegistering",
            "0/2 trays online; 2 of the spec's trays not registered by pfs (pfs started or registered a moment ago and may still be bringing them online)",
        )
    }

    fn trays_unknown() -> Condition {
        cond("TraysOnline", "Unknown", "ViewUntrusted", "not known")
    }

    fn with(phase: Option<Phase>, conditions: Vec<Condition>) -> PureFlashStoreStatus {
        PureFlashStoreStatus {
            phase,
            alive: phase.map(|p| p == Phase::Online),
            conditions,
            ..Default::default()
        }
    }

    /// Through an untrusted view, as `status::compute` writes it (the trays kept).
    fn blind(before: &PureFlashStoreStatus) -> PureFlashStoreStatus {
        PureFlashStoreStatus {
            phase: Some(Phase::Unknown),
            phase_before_unknown: status::last_trusted_phase(before),
            conditions: vec![
                trays_unknown(),
                cond(
                    "Alive",
                    "Unknown",
                    "NoStoresDirectory",
                    "no stores directory",
                ),
            ],
            ..before.clone()
        }
    }

    fn tray(online: bool) -> crate::crd::TrayStatus {
        crate::crd::TrayStatus {
            online,
            ..Default::default()
        }
    }

    fn told(previous: &PureFlashStoreStatus, status: &PureFlashStoreStatus) -> Announcements {
        told_with(previous, status, &Verdict::Healthy, None)
    }

    fn told_with(
        previous: &PureFlashStoreStatus,
        status: &PureFlashStoreStatus,
        verdict: &Verdict,
        roll_held: Option<&HoldReason>,
    ) -> Announcements {
        let circumstances = Circumstances {
            verdict,
            roll_held,
            restarted_now: matches!(verdict, Verdict::Restart(_)),
            max_unavailable: 1,
            spec_trays: 2,
        };
        announcements(previous, status, &circumstances)
    }

    fn reasons(told: &Announcements) -> Vec<&str> {
        told.events.iter().map(|e| e.reason.as_str()).collect()
    }

    #[test]
    fn phase_changes_are_told_once() {
        let pending = with(Some(Phase::Pending), vec![]);
        let online = with(Some(Phase::Online), vec![trays_online()]);
        let offline = with(Some(Phase::Offline), vec![]);
        assert_eq!(reasons(&told(&pending, &online)), ["StoreOnline"]);
        assert_eq!(reasons(&told(&online, &online)), Vec::<&str>::new());
        let down = told(&online, &offline);
        assert_eq!(reasons(&down), ["StoreOffline"]);
        assert!(down.went_offline);
        assert!(!told(&offline, &offline).went_offline);
        assert_eq!(reasons(&told(&offline, &online)), ["StoreOnline"]);
        // Offline and restarted in the same look.
        let recovering = with(Some(Phase::Recovering), vec![]);
        let restart = Verdict::Restart(crate::recovery::RestartReason::Offline);
        let at_once = told_with(&online, &recovering, &restart, None);
        assert_eq!(reasons(&at_once), ["StoreOffline"]);
        assert!(at_once.went_offline);
        let later = told_with(&offline, &recovering, &restart, None);
        assert_eq!(reasons(&later), Vec::<&str>::new());
        // A live store restarted by hand, its pfs seen gone by a later look: the restart's
        // own doing, no news.
        let gone = told(&online, &recovering);
        assert_eq!(reasons(&gone), Vec::<&str>::new());
        assert!(!gone.went_offline);
    }

    #[test]
    fn a_zookeeper_blip_is_told_once_and_is_no_news_about_the_store() {
        let online = with(Some(Phase::Online), vec![trays_online()]);
        let lost = blind(&online);
        let going = told_with(
            &online,
            &lost,
            &Verdict::Skip(SkipReason::ViewUntrusted),
            None,
        );
        assert_eq!(reasons(&going), ["ViewUntrusted"]);
        assert_eq!(
            going.events[0].note,
            "no stores directory: no decision is taken"
        );
        assert_eq!(going.skip_counted, Some(SkipReason::ViewUntrusted));
        // Still blind: nothing again.
        let still = told_with(
            &lost,
            &lost,
            &Verdict::Skip(SkipReason::ViewUntrusted),
            None,
        );
        assert_eq!(still, Announcements::default());
        // Back as it was: nothing.
        assert_eq!(told(&lost, &online), Announcements::default());
        // Back with the store gone offline meanwhile: that is news.
        let offline = with(Some(Phase::Offline), vec![]);
        assert_eq!(reasons(&told(&lost, &offline)), ["StoreOffline"]);
        // A store first seen while the view loads: no news at all.
        let first = with(None, vec![]);
        assert_eq!(told(&first, &blind(&first)), Announcements::default());
    }

    #[test]
    fn trays_going_offline_under_a_live_store_are_told_once() {
        let online = with(Some(Phase::Online), vec![trays_online()]);
        let degraded = with(Some(Phase::Online), vec![trays_offline()]);
        let told_degraded = told(&online, &degraded);
        assert_eq!(reasons(&told_degraded), ["TraysOffline"]);
        assert_eq!(
            told_degraded.events[0].note,
            "1/2 trays online; offline: /dev/sdb (t2)"
        );
        assert_eq!(told_degraded.events[0].kind, EventType::Warning);
        // Not again, not for their return.
        assert_eq!(told(&degraded, &degraded), Announcements::default());
        assert_eq!(told(&degraded, &online), Announcements::default());
        // Not while the pfs may still be registering them, but once it has had the time.
        let registering = with(Some(Phase::Online), vec![trays_registering()]);
        assert_eq!(told(&online, &registering), Announcements::default());
        assert_eq!(reasons(&told(&registering, &degraded)), ["TraysOffline"]);
        // Not for a store coming online whose trays follow; for one without them.
        let offline = with(Some(Phase::Offline), vec![]);
        assert_eq!(reasons(&told(&offline, &registering)), ["StoreOnline"]);
        assert_eq!(
            reasons(&told(&offline, &degraded)),
            ["StoreOnline", "TraysOffline"]
        );
        assert_eq!(told(&registering, &online), Announcements::default());
    }

    /// The gap this module closed: trays lost while the view was untrusted were never told,
    /// the status before being Unknown rather than Online.
    #[test]
    fn trays_lost_during_a_zookeeper_blip_are_told_when_the_view_is_back() {
        let online = PureFlashStoreStatus {
            trays: vec![tray(true), tray(true)],
            ..with(Some(Phase::Online), vec![trays_online()])
        };
        let degraded = PureFlashStoreStatus {
            trays: vec![tray(true), tray(false)],
            ..with(Some(Phase::Online), vec![trays_offline()])
        };
        assert_eq!(reasons(&told(&blind(&online), &degraded)), ["TraysOffline"]);
        assert_eq!(told(&blind(&online), &online), Announcements::default());
        // Offline since before the blip: told then, not again.
        assert_eq!(told(&blind(&degraded), &degraded), Announcements::default());
        // A tray node left from a replaced disk, offline for good, is not counted.
        let with_leftover = PureFlashStoreStatus {
            trays: vec![tray(true), tray(true), tray(false)],
            ..online.clone()
        };
        assert_eq!(
            reasons(&told(&blind(&with_leftover), &degraded)),
            ["TraysOffline"]
        );
        // A store that was offline before the blip and comes back degraded is coming online,
        // without all its trays.
        let offline = with(Some(Phase::Offline), vec![]);
        assert_eq!(
            reasons(&told(&blind(&offline), &degraded)),
            ["StoreOnline", "TraysOffline"]
        );
    }

    /// Every reason recovery holds back for is an Event (`Recovery<reason>`) and a count,
    /// once, as the decision turns to it; a warning where someone has to look.
    #[test]
    fn every_skip_reason_is_told_and_counted_once() {
        let offline = with(Some(Phase::Offline), vec![]);
        let until: Timestamp = "2026-12-06T18:00:00Z".parse().unwrap();
        let warnings = [
            SkipReason::ClusterFrozen,
            SkipReason::RestartBudgetExhausted,
            SkipReason::TooManyInFlight,
            SkipReason::NodeNotReady,
            SkipReason::PodStuckTerminating,
        ];
        for reason in SkipReason::ALL {
            // An untrusted view is told by the phase's ViewUntrusted Event (see the blip test).
            if reason == SkipReason::ViewUntrusted {
                continue;
            }
            let held = PureFlashStoreStatus {
                last_decision: Some(reason.as_str().into()),
                ..offline.clone()
            };
            for verdict in [Verdict::Skip(reason), Verdict::Wait { until, reason }] {
                let first = told_with(&offline, &held, &verdict, None);
                let expected = format!("Recovery{}", reason.as_str());
                assert_eq!(reasons(&first), [expected.as_str()], "{verdict:?}");
                assert_eq!(first.skip_counted, Some(reason), "{verdict:?}");
                let kind = if warnings.contains(&reason) {
                    EventType::Warning
                } else {
                    EventType::Normal
                };
                assert_eq!(first.events[0].kind, kind, "{verdict:?}");
                assert!(first.events[0].note.contains(reason.as_str()));
                assert_eq!(
                    told_with(&held, &held, &verdict, None),
                    Announcements::default(),
                    "{verdict:?} told again"
                );
            }
        }
    }

    #[test]
    fn a_held_recovery_is_told_and_counted_once_per_decision() {
        let offline = with(Some(Phase::Offline), vec![]);
        let frozen = PureFlashStoreStatus {
            last_decision: Some("ClusterFrozen".into()),
            ..offline.clone()
        };
        let verdict = Verdict::Skip(SkipReason::ClusterFrozen);
        let first = told_with(&offline, &frozen, &verdict, None);
        assert_eq!(reasons(&first), ["RecoveryClusterFrozen"]);
        assert_eq!(first.events[0].kind, EventType::Warning);
        assert_eq!(first.skip_counted, Some(SkipReason::ClusterFrozen));
        assert_eq!(
            told_with(&frozen, &frozen, &verdict, None),
            Announcements::default()
        );

        let until: Timestamp = "2026-12-06T18:00:00Z".parse().unwrap();
        let waiting = PureFlashStoreStatus {
            last_decision: Some("WithinGracePeriod".into()),
            ..offline.clone()
        };
        let wait = Verdict::Wait {
            until,
            reason: SkipReason::WithinGracePeriod,
        };
        // The Pod a restart killed going away is the restart under way: not told, not
        // counted; stuck, it is a warning.
        let restarted = PureFlashStoreStatus {
            last_decision: Some("RestartOffline".into()),
            ..offline.clone()
        };
        let terminating = PureFlashStoreStatus {
            last_decision: Some("PodTerminating".into()),
            ..offline.clone()
        };
        let going = Verdict::Skip(SkipReason::PodTerminating);
        assert_eq!(
            told_with(&restarted, &terminating, &going, None),
            Announcements::default()
        );
        assert_eq!(
            reasons(&told_with(&frozen, &terminating, &going, None)),
            ["RecoveryPodTerminating"]
        );
        let stuck = PureFlashStoreStatus {
            last_decision: Some("PodStuckTerminating".into()),
            ..offline.clone()
        };
        let stuck_told = told_with(
            &terminating,
            &stuck,
            &Verdict::Skip(SkipReason::PodStuckTerminating),
            None,
        );
        assert_eq!(reasons(&stuck_told), ["RecoveryPodStuckTerminating"]);
        assert_eq!(stuck_told.events[0].kind, EventType::Warning);

        let told_wait = told_with(&frozen, &waiting, &wait, None);
        assert_eq!(reasons(&told_wait), ["RecoveryWithinGracePeriod"]);
        assert_eq!(told_wait.events[0].kind, EventType::Normal);
        assert_eq!(
            told_wait.events[0].note,
            "recovery waits until 2026-12-06T18:00:00Z: WithinGracePeriod"
        );
    }

    #[test]
    fn a_rollout_hold_and_a_refused_replacement_are_told_once() {
        let online = with(Some(Phase::Online), vec![trays_online()]);
        let others = HoldReason::OthersUnavailable {
            count: 2,
            names: vec!["a".into(), "b".into()],
        };
        let held = with(
            Some(Phase::Online),
            vec![
                trays_online(),
                cond("UpToDate", "False", rollout::OTHERS_UNAVAILABLE, ""),
            ],
        );
        assert_eq!(
            reasons(&told_with(&online, &held, &Verdict::Healthy, Some(&others),)),
            ["RolloutHeld"]
        );
        assert_eq!(
            told_with(&held, &held, &Verdict::Healthy, Some(&others)),
            Announcements::default()
        );
        // Held before for another reason (paused): waiting for other stores is news.
        let paused = with(
            Some(Phase::Online),
            vec![cond("UpToDate", "False", "RecoveryPaused", "")],
        );
        assert_eq!(
            reasons(&told_with(&paused, &held, &Verdict::Healthy, Some(&others),)),
            ["RolloutHeld"]
        );
        // Back from a ZooKeeper blip: not told again.
        let blip = with(
            Some(Phase::Online),
            vec![cond("UpToDate", "False", "ViewUntrusted", "")],
        );
        assert_eq!(
            told_with(&blip, &held, &Verdict::Healthy, Some(&others)),
            Announcements::default()
        );
        // A disruption budget's refusal: told once too, with the API's word.
        let budget = HoldReason::DisruptionBudget {
            why: "Cannot evict pod as it would violate the pod's disruption budget.".into(),
        };
        let budget_held = with(
            Some(Phase::Online),
            vec![
                trays_online(),
                cond("UpToDate", "False", rollout::DISRUPTION_BUDGET, ""),
            ],
        );
        let told = told_with(&online, &budget_held, &Verdict::Healthy, Some(&budget));
        assert_eq!(reasons(&told), ["RolloutHeld"]);
        assert!(
            told.events[0]
                .note
                .contains("violate the pod's disruption budget"),
            "{}",
            told.events[0].note
        );
        assert_eq!(
            told_with(&budget_held, &budget_held, &Verdict::Healthy, Some(&budget)),
            Announcements::default()
        );

        let refused = HoldReason::ReplacementRefused {
            why: "exceeded quota".into(),
        };
        let refusing = with(
            Some(Phase::Online),
            vec![cond("UpToDate", "False", "ReplacementRefused", "")],
        );
        let first = told_with(&online, &refusing, &Verdict::Healthy, Some(&refused));
        assert_eq!(reasons(&first), ["RolloutRefused"]);
        assert_eq!(first.events[0].kind, EventType::Warning);
        // Held for another reason before: the refusal is still news.
        assert_eq!(
            reasons(&told_with(
                &held,
                &refusing,
                &Verdict::Healthy,
                Some(&refused),
            )),
            ["RolloutRefused"]
        );
        assert_eq!(
            told_with(&refusing, &refusing, &Verdict::Healthy, Some(&refused),),
            Announcements::default()
        );
    }
}
