//! The PodDisruptionBudget over each namespace's pfs Pods: voluntary evictions (`kubectl
//! drain`, node upgrades, the cluster autoscaler) take down the stores of at most
//! `--max-unavailable-nodes` nodes at once. Without it, draining two nodes together stops every
//! volume with replicas on both.
//!
//! A node is the unit: its stores share its fate (its drain takes them all, its reboot stops
//! them all), so once one of its stores is down the others there may go too, while every other
//! node's are kept. Kubernetes has no such budget, so it is one budget reshaped as stores go
//! down and come back (as Rook does for Ceph's OSDs):
//!
//! - every store serves: at most `--max-unavailable-nodes` stores may be evicted;
//! - stores are down on as many nodes or fewer: those nodes' stores are left out of the
//!   budget (its selector excludes their store ids), and the others may lose only what the
//!   remaining nodes allow;
//! - down on more nodes than that: no store that serves may be evicted.
//!
//! A budget over Pods owned by stores, which have no scale subresource, can only be an integer
//! `minAvailable` (the disruption controller refuses `maxUnavailable` for them). A Pod is
//! healthy only while its store serves (the [`super::pods::SERVING_GATE`] readiness gate), and
//! an unhealthy one may always be evicted (`unhealthyPodEvictionPolicy: AlwaysAllow`): it
//! serves nothing to protect, and a drain must not hang on a store that is down anyway. A
//! store is down once its status says `Ready=False` (not `Unknown`: an untrusted view is no
//! news about the stores).
//!
//! [`plan`] decides (pure); [`keep`] applies while the replica leads.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::reflector::Store;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::pods::STORE_ID_LABEL;
use super::reconcile::{Context, Error, MANAGER};
use crate::crd::PureFlashStore;

/// The budget's name in each namespace with stores.
pub const BUDGET_NAME: &str = "pureflash-stores";
/// How long store changes are gathered before the budgets are looked at: a hundred stores
/// applied together make one write, not a hundred.
const GATHER: Duration = Duration::from_millis(250);
/// The safety net: budgets are looked at this often even when nothing seems to change.
const RECHECK: Duration = Duration::from_secs(60);
/// How soon a failed write is tried again.
const RETRY: Duration = Duration::from_secs(5);

/// What to do about one namespace's budget.
#[derive(Clone, Debug, PartialEq)]
pub enum BudgetChange {
    /// Create it, or bring it to this (server-side apply).
    Apply(Box<PodDisruptionBudget>),
    /// The namespace has no stores left: the budget goes (only the one seen, by its uid).
    Delete {
        namespace: String,
        uid: Option<String>,
    },
}

/// What the budget needs to know of a store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BudgetedStore<'a> {
    pub store_id: i32,
    pub node: &'a str,
    /// Its status says it does not serve (`Ready=False`).
    pub down: bool,
}

impl<'a> BudgetedStore<'a> {
    /// `None` for a store being deleted: its Pod goes with it.
    pub fn of(store: &'a PureFlashStore) -> Option<BudgetedStore<'a>> {
        store
            .meta()
            .deletion_timestamp
            .is_none()
            .then(|| BudgetedStore {
                store_id: store.spec.store_id,
                node: store.spec.node_name.as_str(),
                down: store
                    .status
                    .as_ref()
                    .is_some_and(|status| status.condition("Ready", "False").is_some()),
            })
    }
}

/// The budget for a namespace's `stores` (at least one).
pub fn desired(
    namespace: &str,
    stores: &[BudgetedStore<'_>],
    max_unavailable_nodes: usize,
) -> PodDisruptionBudget {
    let down_nodes: BTreeSet<&str> = stores.iter().filter(|s| s.down).map(|s| s.node).collect();
    let (left_out, min_available): (BTreeSet<i32>, usize) =
        if down_nodes.is_empty() || down_nodes.len() > max_unavailable_nodes {
            let spare = if down_nodes.is_empty() {
                max_unavailable_nodes
            } else {
                0
            };
            (BTreeSet::new(), stores.len().saturating_sub(spare))
        } else {
            let (left_out, kept): (Vec<&BudgetedStore<'_>>, Vec<_>) = stores
                .iter()
                .partition(|store| down_nodes.contains(store.node));
            let spare = max_unavailable_nodes - down_nodes.len();
            (
                left_out.iter().map(|store| store.store_id).collect(),
                kept.len().saturating_sub(spare),
            )
        };
    let mut selector = json!({"matchLabels": {
        "app.kubernetes.io/name": "pfs",
        "app.kubernetes.io/component": "store",
        "app.kubernetes.io/managed-by": "pureflash-operator",
    }});
    if !left_out.is_empty() {
        let ids: Vec<String> = left_out.iter().map(i32::to_string).collect();
        selector["matchExpressions"] =
            json!([{"key": STORE_ID_LABEL, "operator": "NotIn", "values": ids}]);
    }
    serde_json::from_value(json!({
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {
            "name": BUDGET_NAME,
            "namespace": namespace,
            "labels": {
                "app.kubernetes.io/name": "pfs",
                "app.kubernetes.io/managed-by": "pureflash-operator",
            },
        },
        "spec": {
            "minAvailable": i32::try_from(min_available).unwrap_or(i32::MAX),
            "selector": selector,
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }))
    .expect("a valid PodDisruptionBudget")
}

/// Whether `existing` already holds what `desired` sets (labels others added do not matter:
/// an apply would leave them too).
pub fn up_to_date(existing: &PodDisruptionBudget, desired: &PodDisruptionBudget) -> bool {
    let spec = |budget: &PodDisruptionBudget| {
        budget.spec.as_ref().map(|spec| {
            (
                spec.min_available.clone(),
                spec.max_unavailable.clone(),
                spec.selector.clone(),
                spec.unhealthy_pod_eviction_policy.clone(),
            )
        })
    };
    let labels = existing.labels();
    spec(existing) == spec(desired)
        && desired
            .labels()
            .iter()
            .all(|(key, value)| labels.get(key) == Some(value))
}

/// The writes that bring the budgets (`budgets`: the operator's, as last seen) in line with
/// `stores`, namespace by namespace, in the order of their names.
pub fn plan<'a>(
    stores: impl IntoIterator<Item = &'a PureFlashStore>,
    budgets: impl IntoIterator<Item = &'a PodDisruptionBudget>,
    max_unavailable_nodes: usize,
) -> Vec<BudgetChange> {
    let mut by_namespace: BTreeMap<String, Vec<BudgetedStore<'a>>> = BTreeMap::new();
    for store in stores {
        if let Some(budgeted) = BudgetedStore::of(store) {
            by_namespace
                .entry(store.namespace().unwrap_or_default())
                .or_default()
                .push(budgeted);
        }
    }
    let existing: BTreeMap<String, &PodDisruptionBudget> = budgets
        .into_iter()
        .filter(|budget| budget.name_any() == BUDGET_NAME)
        .map(|budget| (budget.namespace().unwrap_or_default(), budget))
        .collect();
    let mut changes = Vec::new();
    for (namespace, stores) in &by_namespace {
        let wanted = desired(namespace, stores, max_unavailable_nodes);
        if !existing
            .get(namespace)
            .is_some_and(|budget| up_to_date(budget, &wanted))
        {
            changes.push(BudgetChange::Apply(Box::new(wanted)));
        }
    }
    for (namespace, budget) in existing {
        if !by_namespace.contains_key(&namespace) && budget.meta().deletion_timestamp.is_none() {
            changes.push(BudgetChange::Delete {
                namespace,
                uid: budget.uid(),
            });
        }
    }
    changes
}

/// Keeps the budgets in line with the stores until `stop`, writing only while the term lasts.
/// `budget_events` is the budgets' reflector stream (it fills `budgets` as it is polled);
/// `stores_changed` ticks whenever the store cache changes. Starts once both caches are
/// loaded: an empty cache would read as "no stores" and delete every budget.
pub async fn keep(
    ctx: Arc<Context>,
    stores: Store<PureFlashStore>,
    budgets: Store<PodDisruptionBudget>,
    budget_events: impl Stream<Item = ()> + Send,
    mut stores_changed: watch::Receiver<()>,
    stop: CancellationToken,
) {
    let mut budget_events = std::pin::pin!(budget_events);
    let loaded = async {
        super::cache_loaded(&stores).await?;
        super::cache_loaded(&budgets).await
    };
    let mut loaded = std::pin::pin!(loaded);
    // The budgets' stream is polled all along, or their cache would never load.
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            result = &mut loaded => match result {
                Ok(()) => break,
                Err(_) => return,
            },
            event = budget_events.next() => if event.is_none() { return },
        }
    }
    let mut next_look = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep_until(next_look) => {}
            event = budget_events.next() => {
                if event.is_none() { return }
                next_look = next_look.min(tokio::time::Instant::now() + GATHER);
                continue;
            }
            changed = stores_changed.changed() => {
                if changed.is_err() { return }
                next_look = next_look.min(tokio::time::Instant::now() + GATHER);
                continue;
            }
        }
        let (all_stores, all_budgets) = (stores.state(), budgets.state());
        let changes = plan(
            all_stores.iter().map(AsRef::as_ref),
            all_budgets.iter().map(AsRef::as_ref),
            ctx.settings.max_unavailable_nodes,
        );
        next_look = tokio::time::Instant::now() + RECHECK;
        for change in changes {
            match write(&ctx, change).await {
                Ok(()) => {}
                Err(Error::TermEnded) => return,
                Err(error) => {
                    warn!(%error, "PodDisruptionBudget not written; trying again");
                    next_look = tokio::time::Instant::now() + RETRY;
                }
            }
        }
    }
}

async fn write(ctx: &Context, change: BudgetChange) -> Result<(), Error> {
    match change {
        BudgetChange::Apply(budget) => {
            let namespace = budget.namespace().unwrap_or_default();
            let api: Api<PodDisruptionBudget> = Api::namespaced(ctx.client.clone(), &namespace);
            let params = PatchParams::apply(MANAGER).force();
            ctx.leading(api.patch(BUDGET_NAME, &params, &Patch::Apply(&*budget)))
                .await??;
            let min_available = budget
                .spec
                .as_ref()
                .and_then(|spec| spec.min_available.clone())
                .map(|value| match value {
                    IntOrString::Int(n) => n.to_string(),
                    IntOrString::String(text) => text,
                })
                .unwrap_or_default();
            info!(%namespace, %min_available, "PodDisruptionBudget {BUDGET_NAME} applied");
        }
        BudgetChange::Delete { namespace, uid } => {
            let api: Api<PodDisruptionBudget> = Api::namespaced(ctx.client.clone(), &namespace);
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid,
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match ctx.leading(api.delete(BUDGET_NAME, &params)).await? {
                Ok(_) => {
                    info!(%namespace, "PodDisruptionBudget {BUDGET_NAME} deleted: no stores left")
                }
                // Gone already, or replaced by a newer one the next look judges.
                Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409) => {}
                Err(error) => return Err(error.into()),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use proptest::prelude::*;
    use serde_json::json;

    fn store(namespace: &str, id: i32, node: &str, ready: Option<&str>) -> PureFlashStore {
        let mut store: PureFlashStore = serde_json::from_value(json!({
            "apiVersion": "pureflash.io/v1alpha1",
            "kind": "PureFlashStore",
            "metadata": {"name": format!("s{id}"), "namespace": namespace, "uid": format!("uid-{id}")},
            "spec": {"storeId": id, "nodeName": node, "trays": [{"device": "/dev/sdb"}]},
        }))
        .expect("a store");
        if let Some(ready) = ready {
            store.status = Some(
                serde_json::from_value(json!({"conditions": [{
                    "type": "Ready", "status": ready, "reason": "R", "message": "",
                    "lastTransitionTime": "2026-12-07T10:00:00Z",
                }]}))
                .expect("a status"),
            );
        }
        store
    }

    /// (namespace, minAvailable, store ids left out).
    fn shape(change: &BudgetChange) -> (String, i32, Vec<String>) {
        let BudgetChange::Apply(budget) = change else {
            panic!("an apply: {change:?}")
        };
        let spec = budget.spec.as_ref().expect("spec");
        let Some(IntOrString::Int(n)) = spec.min_available else {
            panic!("an integer minAvailable")
        };
        let left_out = spec
            .selector
            .as_ref()
            .and_then(|s| s.match_expressions.as_ref())
            .map(|all| {
                assert_eq!(all.len(), 1);
                assert_eq!(all[0].key, STORE_ID_LABEL);
                assert_eq!(all[0].operator, "NotIn");
                all[0].values.clone().unwrap_or_default()
            })
            .unwrap_or_default();
        (budget.namespace().expect("namespace"), n, left_out)
    }

    fn ids(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|id| (*id).to_owned()).collect()
    }

    #[test]
    fn while_every_store_serves_max_unavailable_nodes_stores_may_go() {
        let stores = [
            store("a", 1, "n1", Some("True")),
            store("a", 2, "n2", None),
            store("a", 3, "n3", Some("True")),
            store("b", 4, "n1", Some("True")),
        ];
        let shapes: Vec<_> = plan(&stores, [], 1).iter().map(shape).collect();
        assert_eq!(
            shapes,
            [("a".into(), 2, ids(&[])), ("b".into(), 0, ids(&[]))]
        );
        assert_eq!(shape(&plan(&stores, [], 2)[0]), ("a".into(), 1, ids(&[])));
        // 0: no serving store is evicted at all.
        assert_eq!(shape(&plan(&stores, [], 0)[0]), ("a".into(), 3, ids(&[])));
    }

    #[test]
    fn a_node_with_a_store_down_may_lose_the_rest_and_the_other_nodes_nothing() {
        let stores = [
            store("a", 1, "n1", Some("False")),
            store("a", 2, "n1", Some("True")),
            store("a", 3, "n2", Some("True")),
            store("a", 4, "n3", Some("True")),
        ];
        // Store 2 may follow store 1 (its node's drain goes on), stores 3 and 4 stay.
        assert_eq!(
            shape(&plan(&stores, [], 1)[0]),
            ("a".into(), 2, ids(&["1", "2"]))
        );
        // Room for one more node.
        assert_eq!(
            shape(&plan(&stores, [], 2)[0]),
            ("a".into(), 1, ids(&["1", "2"]))
        );
        // Down on more nodes than allowed: nothing that serves goes.
        let mut more = stores.clone();
        more[2] = store("a", 3, "n2", Some("False"));
        assert_eq!(shape(&plan(&more, [], 1)[0]), ("a".into(), 4, ids(&[])));
        assert_eq!(
            shape(&plan(&more, [], 2)[0]),
            ("a".into(), 1, ids(&["1", "2", "3"]))
        );
        // An untrusted view (Unknown) is no news about a store.
        let mut unknown = stores.clone();
        unknown[0] = store("a", 1, "n1", Some("Unknown"));
        assert_eq!(shape(&plan(&unknown, [], 1)[0]), ("a".into(), 3, ids(&[])));
    }

    #[test]
    fn the_budget_selects_the_operators_pfs_pods_and_lets_unhealthy_ones_go() {
        let stores = [
            store("a", 1, "n1", Some("False")),
            store("a", 2, "n2", Some("True")),
        ];
        let BudgetChange::Apply(budget) = &plan(&stores, [], 1)[0] else {
            panic!("an apply")
        };
        let spec = budget.spec.clone().expect("spec");
        assert_eq!(
            spec.max_unavailable, None,
            "refused for pods without a scale"
        );
        assert_eq!(
            spec.unhealthy_pod_eviction_policy.as_deref(),
            Some("AlwaysAllow")
        );
        let selector = spec.selector.expect("selector");
        // Matched against the labels every pfs Pod carries (pods.rs).
        let pod_of = |store: &PureFlashStore| {
            super::super::pods::pod(store, "hash", crate::recovery::Predecessor::NoSession)
        };
        let selects = |pod: &k8s_openapi::api::core::v1::Pod| {
            let labels = pod.labels();
            let matched = selector
                .match_labels
                .iter()
                .flatten()
                .all(|(key, value)| labels.get(key) == Some(value));
            let excluded = selector.match_expressions.iter().flatten().any(|e| {
                labels
                    .get(&e.key)
                    .is_some_and(|v| e.values.iter().flatten().any(|x| x == v))
            });
            matched && !excluded
        };
        assert!(!selects(&pod_of(&stores[0])), "store 1's node is left out");
        assert!(selects(&pod_of(&stores[1])));
    }

    #[test]
    fn a_store_being_deleted_no_longer_counts() {
        let mut going = store("a", 2, "n2", Some("False"));
        going.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
        let stores = [store("a", 1, "n1", Some("True")), going];
        assert_eq!(shape(&plan(&stores, [], 1)[0]), ("a".into(), 0, ids(&[])));
    }

    #[test]
    fn a_budget_in_line_is_not_written_and_one_out_of_line_is() {
        let stores = [store("a", 1, "n1", None), store("a", 2, "n2", None)];
        let BudgetChange::Apply(current) = plan(&stores, [], 1).remove(0) else {
            panic!("an apply")
        };
        let mut current = *current;
        current.metadata.uid = Some("pdb-uid".into());
        current
            .labels_mut()
            .insert("added-by".into(), "someone".into());
        assert_eq!(plan(&stores, [&current], 1), []);
        let three = [
            stores[0].clone(),
            stores[1].clone(),
            store("a", 3, "n3", None),
        ];
        assert_eq!(
            shape(&plan(&three, [&current], 1)[0]),
            ("a".into(), 2, ids(&[]))
        );
        let mut edited = current.clone();
        edited
            .spec
            .as_mut()
            .expect("spec")
            .unhealthy_pod_eviction_policy = None;
        assert_eq!(plan(&stores, [&edited], 1).len(), 1);
    }

    #[test]
    fn a_namespace_without_stores_loses_its_budget_and_only_ours_is_touched() {
        let stores = [store("gone", 1, "n1", None)];
        let BudgetChange::Apply(ours) = plan(&stores, [], 1).remove(0) else {
            panic!("an apply")
        };
        let mut ours = *ours;
        ours.metadata.uid = Some("pdb-uid".into());
        let mut other = ours.clone();
        other.metadata.name = Some("someone-elses".into());
        assert_eq!(
            plan([], [&ours, &other], 1),
            [BudgetChange::Delete {
                namespace: "gone".into(),
                uid: Some("pdb-uid".into())
            }]
        );
        // Already on its way out: nothing more to do.
        ours.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
        assert_eq!(plan([], [&ours], 1), []);
    }

    /// Whether the eviction API lets a Pod of `stores[index]` (serving) go under `budget`, as
    /// the disruption controller counts: Pods the selector leaves out are not guarded; a
    /// guarded one goes while more guarded Pods are healthy than `minAvailable`.
    fn evictable(stores: &[BudgetedStore<'_>], index: usize, budget: &PodDisruptionBudget) -> bool {
        let spec = budget.spec.as_ref().expect("spec");
        let left_out: Vec<String> = spec
            .selector
            .as_ref()
            .and_then(|s| s.match_expressions.clone())
            .into_iter()
            .flatten()
            .flat_map(|e| e.values.unwrap_or_default())
            .collect();
        let guarded = |store: &BudgetedStore<'_>| !left_out.contains(&store.store_id.to_string());
        if !guarded(&stores[index]) {
            return true;
        }
        let healthy = stores.iter().filter(|s| guarded(s) && !s.down).count();
        let Some(IntOrString::Int(min)) = spec.min_available else {
            panic!("an integer minAvailable")
        };
        healthy > usize::try_from(min).expect("not negative")
    }

    proptest! {
        /// Whatever is down where: a serving store may be evicted exactly when the nodes with
        /// a store down, its own added, are no more than allowed.
        #[test]
        fn an_eviction_is_allowed_exactly_while_few_enough_nodes_are_down(
            layout in proptest::collection::vec((0..5usize, any::<bool>()), 1..12),
            max_nodes in 0..4usize,
        ) {
            let nodes = ["n0", "n1", "n2", "n3", "n4"];
            let stores: Vec<BudgetedStore<'_>> = layout
                .iter()
                .zip(1..)
                .map(|(&(node, down), store_id)| BudgetedStore { store_id, node: nodes[node], down })
                .collect();
            let budget = desired("a", &stores, max_nodes);
            let down: BTreeSet<&str> = stores.iter().filter(|s| s.down).map(|s| s.node).collect();
            for (index, store) in stores.iter().enumerate().filter(|(_, s)| !s.down) {
                let mut after = down.clone();
                after.insert(store.node);
                prop_assert_eq!(
                    evictable(&stores, index, &budget),
                    after.len() <= max_nodes,
                    "store {} on {}, down on {:?}", store.store_id, store.node, down
                );
            }
        }
    }
}
