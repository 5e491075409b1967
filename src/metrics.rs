//! Every metric the operator exports, in one registry, with bounded labels (reasons come from
//! fixed lists; stores are labelled by namespace, name and id).

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `ok`, `error`, `conflict` (a status write refused as stale) or `term_ended` (this
    /// replica stopped leading meanwhile).
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreLabels {
    pub namespace: String,
    pub name: String,
    pub store_id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HeldLabels {
    pub namespace: String,
    pub name: String,
    pub store_id: String,
    /// One of [`HELD_REASONS`].
    pub reason: &'static str,
}

/// Why recovery can be held for a store (the RecoveryFrozen condition's reasons).
pub const HELD_REASONS: [&str; 7] = [
    "ClusterFrozen",
    "RestartBudgetExhausted",
    "RecoveryPaused",
    "RecoveryDisabled",
    "NodeNotReady",
    "ConfigInvalid",
    "PodStuckTerminating",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: &'static str,
}

/// The operator's metrics.
pub struct Metrics {
    registry: Registry,
    pub reconciles: Family<ResultLabels, Counter>,
    pub reconcile_duration: Histogram,
    pub store_alive: Family<StoreLabels, Gauge>,
    pub trays_online: Family<StoreLabels, Gauge>,
    pub recovery_held: Family<HeldLabels, Gauge>,
    pub rollout_held: Family<StoreLabels, Gauge>,
    pub duplicate_id: Family<StoreLabels, Gauge>,
    /// Stores with per-store series, so they can be dropped when the store goes or this
    /// replica stops leading (a standby must not export stale store gauges).
    stores_exported: Mutex<HashSet<StoreLabels>>,
    pub restarts: Family<ReasonLabels, Counter>,
    /// Pods replaced for a changed spec, by [`crate::rollout::RollReason`].
    pub rolls: Family<ReasonLabels, Counter>,
    /// pfs Pods replaced because they had stopped for good (evicted, rejected, shut down).
    pub stopped_pods_replaced: Counter,
    pub recovery_skipped: Family<ReasonLabels, Counter>,
    pub zookeeper_session: Family<StateLabels, Gauge>,
    /// 1 while the ZooKeeper view may be decided on (see [`crate::zk::Health::is_trusted`]).
    pub zookeeper_view_trusted: Gauge,
    pub zookeeper_unreadable_stores: Gauge,
    pub db_rows_written: Counter,
    pub db_sync_errors: Counter,
    pub leader: Gauge,
    /// Server time − this replica's time (see [`crate::clock`]).
    pub api_clock_offset: Gauge<f64, AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("pureflash");
        let metrics = Metrics {
            reconciles: Family::default(),
            reconcile_duration: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            store_alive: Family::default(),
            trays_online: Family::default(),
            recovery_held: Family::default(),
            rollout_held: Family::default(),
            duplicate_id: Family::default(),
            stores_exported: Mutex::default(),
            restarts: Family::default(),
            rolls: Family::default(),
            stopped_pods_replaced: Counter::default(),
            recovery_skipped: Family::default(),
            zookeeper_session: Family::default(),
            zookeeper_view_trusted: Gauge::default(),
            zookeeper_unreadable_stores: Gauge::default(),
            db_rows_written: Counter::default(),
            db_sync_errors: Counter::default(),
            leader: Gauge::default(),
            api_clock_offset: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "reconcile",
            "Reconciles of PureFlashStores, by result",
            metrics.reconciles.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time one reconcile takes",
            metrics.reconcile_duration.clone(),
        );
        registry.register(
            "store_alive",
            "1 while the store is alive: its alive node exists in ZooKeeper and belongs to the running pfs (the Alive condition)",
            metrics.store_alive.clone(),
        );
        registry.register(
            "store_trays_online",
            "Trays whose online node exists, while the store is alive (0 otherwise)",
            metrics.trays_online.clone(),
        );
        registry.register(
            "store_recovery_held",
            "1 while the store's recovery is held, by reason (the RecoveryFrozen condition)",
            metrics.recovery_held.clone(),
        );
        registry.register(
            "store_rollout_held",
            "1 while the store's pod does not run its current spec and is not being replaced to (the UpToDate condition is False: a held rollout, or a spec no pod can be made of)",
            metrics.rollout_held.clone(),
        );
        registry.register(
            "store_duplicate_id",
            "1 while the store runs nothing because an earlier PureFlashStore has its storeId",
            metrics.duplicate_id.clone(),
        );
        registry.register(
            "pod_rolls",
            "pfs Pods replaced for a changed spec, by reason (PodNotRunning, WithinBudget)",
            metrics.rolls.clone(),
        );
        registry.register(
            "stopped_pods_replaced",
            "pfs Pods replaced because they had stopped for good (Failed: evicted, refused at admission, node shutdown)",
            metrics.stopped_pods_replaced.clone(),
        );
        registry.register(
            "store_restarts",
            "pfs killed and their Pods recreated by the operator, by reason",
            metrics.restarts.clone(),
        );
        registry.register(
            "recovery_skipped",
            "Recovery decisions that did not restart an offline store, by reason",
            metrics.recovery_skipped.clone(),
        );
        registry.register(
            "zookeeper_session",
            "1 for the operator's current ZooKeeper session state",
            metrics.zookeeper_session.clone(),
        );
        registry.register(
            "zookeeper_view_trusted",
            "1 while the operator's ZooKeeper view is connected and reloaded since, with no read failed since; nothing is decided while 0 (a store ZooKeeper refuses to read costs only itself the trust: see zookeeper_unreadable_stores)",
            metrics.zookeeper_view_trusted.clone(),
        );
        registry.register(
            "zookeeper_unreadable_stores",
            "Stores ZooKeeper refuses to let the operator read (an ACL, most likely); their state is unknown and nothing is decided on them",
            metrics.zookeeper_unreadable_stores.clone(),
        );
        registry.register(
            "db_sync_rows_written",
            "Rows written to the metadata DB",
            metrics.db_rows_written.clone(),
        );
        registry.register(
            "db_sync_errors",
            "Failed metadata DB sync passes",
            metrics.db_sync_errors.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica is the leader",
            metrics.leader.clone(),
        );
        registry.register(
            "api_clock_offset_seconds",
            "How far the API server's clock is ahead of this replica's (status times are kept in the server's)",
            metrics.api_clock_offset.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }

    /// Records the ZooKeeper session state (one state at 1, the others at 0).
    pub fn set_session(&self, state: &'static str) {
        for known in [
            "connecting",
            "connected",
            "disconnected",
            "expired",
            "closed",
        ] {
            self.zookeeper_session
                .get_or_create(&StateLabels { state: known })
                .set(i64::from(known == state));
        }
    }

    /// Sets the per-store gauges: alive, trays online, why recovery is held (if it is), and
    /// whether a rollout waits.
    pub fn observe_store(
        &self,
        labels: &StoreLabels,
        alive: bool,
        trays_online: usize,
        held: Option<&str>,
        rollout_held: bool,
    ) {
        self.duplicate_id.get_or_create(labels).set(0);
        self.rollout_held
            .get_or_create(labels)
            .set(i64::from(rollout_held));
        self.store_alive.get_or_create(labels).set(i64::from(alive));
        self.trays_online
            .get_or_create(labels)
            .set(i64::try_from(trays_online).unwrap_or(i64::MAX));
        for reason in HELD_REASONS {
            self.recovery_held
                .get_or_create(&held_labels(labels, reason))
                .set(i64::from(held == Some(reason)));
        }
        self.stores_exported
            .lock()
            .expect("metrics lock")
            .insert(labels.clone());
    }

    /// Drops a store's gauges of what ZooKeeper says (alive, trays online) while the view
    /// cannot be trusted: a frozen last value would tell an alert the store is still up.
    /// `pureflash_zookeeper_session` and the `ViewUntrusted` alert say why they are gone.
    pub fn forget_liveness(&self, labels: &StoreLabels) {
        self.store_alive.remove(labels);
        self.trays_online.remove(labels);
    }

    /// A store standing aside for another with its storeId: only that is exported for it (what
    /// ZooKeeper says of the id is the other store's).
    pub fn observe_duplicate(&self, labels: &StoreLabels) {
        self.remove_store_series(labels);
        self.duplicate_id.get_or_create(labels).set(1);
        self.stores_exported
            .lock()
            .expect("metrics lock")
            .insert(labels.clone());
    }

    fn remove_store_series(&self, labels: &StoreLabels) {
        self.store_alive.remove(labels);
        self.trays_online.remove(labels);
        self.rollout_held.remove(labels);
        for reason in HELD_REASONS {
            self.recovery_held.remove(&held_labels(labels, reason));
        }
    }

    /// Drops the per-store series of every store `keep` rejects.
    pub fn retain_stores(&self, keep: impl Fn(&StoreLabels) -> bool) {
        let mut exported = self.stores_exported.lock().expect("metrics lock");
        exported.retain(|labels| {
            if keep(labels) {
                return true;
            }
            self.remove_store_series(labels);
            self.duplicate_id.remove(labels);
            false
        });
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

fn held_labels(store: &StoreLabels, reason: &'static str) -> HeldLabels {
    HeldLabels {
        namespace: store.namespace.clone(),
        name: store.name.clone(),
        store_id: store.store_id.clone(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_exported_with_their_labels() {
        let metrics = Metrics::new();
        metrics
            .reconciles
            .get_or_create(&ResultLabels { result: "ok" })
            .inc();
        metrics
            .restarts
            .get_or_create(&ReasonLabels { reason: "Offline" })
            .inc();
        metrics
            .store_alive
            .get_or_create(&StoreLabels {
                namespace: "pf".into(),
                name: "s1".into(),
                store_id: "1".into(),
            })
            .set(1);
        metrics.set_session("connected");
        metrics.zookeeper_view_trusted.set(1);
        metrics.leader.set(1);
        let text = metrics.encode();
        for line in [
            "pureflash_reconcile_total{result=\"ok\"} 1",
            "pureflash_store_restarts_total{reason=\"Offline\"} 1",
            "pureflash_store_alive{namespace=\"pf\",name=\"s1\",store_id=\"1\"} 1",
            "pureflash_zookeeper_session{state=\"connected\"} 1",
            "pureflash_zookeeper_session{state=\"expired\"} 0",
            "pureflash_zookeeper_view_trusted 1",
            "pureflash_leader 1",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }

    #[test]
    fn store_series_are_set_together_and_dropped_together() {
        let metrics = Metrics::new();
        let store = |name: &str| StoreLabels {
            namespace: "pf".into(),
            name: name.into(),
            store_id: "1".into(),
        };
        metrics.observe_store(&store("s1"), false, 1, Some("ClusterFrozen"), false);
        metrics.observe_store(&store("s2"), true, 2, None, true);
        metrics.observe_duplicate(&store("s3"));
        let text = metrics.encode();
        for line in [
            "pureflash_store_rollout_held{namespace=\"pf\",name=\"s2\",store_id=\"1\"} 1",
            "pureflash_store_duplicate_id{namespace=\"pf\",name=\"s3\",store_id=\"1\"} 1",
            "pureflash_store_duplicate_id{namespace=\"pf\",name=\"s1\",store_id=\"1\"} 0",
            "pureflash_store_alive{namespace=\"pf\",name=\"s1\",store_id=\"1\"} 0",
            "pureflash_store_trays_online{namespace=\"pf\",name=\"s2\",store_id=\"1\"} 2",
            "pureflash_store_recovery_held{namespace=\"pf\",name=\"s1\",store_id=\"1\",reason=\"ClusterFrozen\"} 1",
            "pureflash_store_recovery_held{namespace=\"pf\",name=\"s1\",store_id=\"1\",reason=\"RecoveryPaused\"} 0",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        assert!(
            !text.contains("pureflash_store_alive{namespace=\"pf\",name=\"s3\""),
            "a duplicate's id is another store's: {text}"
        );
        metrics.retain_stores(|labels| labels.name == "s2");
        let text = metrics.encode();
        assert!(!text.contains("name=\"s1\""), "{text}");
        assert!(!text.contains("name=\"s3\""), "{text}");
        assert!(text.contains("name=\"s2\""), "{text}");
        metrics.retain_stores(|_| false);
        assert!(!metrics.encode().contains("name=\"s2\""));
    }
}
