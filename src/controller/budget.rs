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
//! - stores are down on as many nodes or fewer: the budget guards only the other nodes' stores
//!   (its selector names them), which may lose only what the remaining nodes allow;
//! - down on more nodes than that: it guards every store, and none may be evicted.
//!
//! Down means what the disruption controller counts: the store's Pod is missing, terminating
//! or not `Ready`, and a pfs Pod is Ready only while its store serves (the
//! [`super::pods::SERVING_GATE`] readiness gate). So a Pod the budget guards is down only on a
//! node beyond the allowance, and the default `unhealthyPodEvictionPolicy` (IfHealthyBudget)
//! keeps it: not proven to serve is not proven down (a pfs restarted in place may serve before
//! it is proven to).
//!
//! The budget names the stores that are down ([`DOWN_ANNOTATION`]): a drain refused for them
//! says, in `kubectl describe pdb`, what it waits for.
//!
//! A budget over Pods owned by stores, which have no scale subresource, can only be an integer
//! `minAvailable` (the disruption controller refuses `maxUnavailable` for them). It names the
//! guarded stores by their instance label (unique per namespace, unlike store ids, which a
//! duplicate may share), so that a Pod no store counts (one left by an orphaning delete) is not
//! counted healthy for them.
//!
//! [`plan`] decides (pure); [`keep`] applies while the replica leads.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::pods::{self, INSTANCE_LABEL};
use super::reconcile::{Context, Error, MANAGER};
use crate::backoff::Backoff;
use crate::crd::PureFlashStore;

/// The budget's name in each namespace with stores.
pub const BUDGET_NAME: &str = "pureflash-stores";
/// The budget's annotation naming the stores that are down, by node: what a refused eviction
/// waits for (`kubectl describe pdb pureflash-stores`). Absent while every store serves.
pub const DOWN_ANNOTATION: &str = "pureflash.io/down-stores";
/// At most this many stores are named in [`DOWN_ANNOTATION`]; the rest are counted.
const DOWN_NAMED: usize = 20;
/// How long changes are gathered before the budgets are looked at: a hundred stores applied
/// together make one write, not a hundred.
const GATHER: Duration = Duration::from_millis(250);
/// The safety net: budgets are looked at this often even when nothing seems to change.
const RECHECK: Duration = Duration::from_secs(60);

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
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BudgetedStore<'a> {
    pub namespace: &'a str,
    /// Its Pods' [`INSTANCE_LABEL`].
    pub instance: String,
    /// Another [`INSTANCE_LABEL`] its Pod carries, made by an operator that cut names over 63
    /// characters to 63 (where [`pods::instance`] now ends them in a hash): guarded alike,
    /// unless another store of the namespace has it too (it could be that store's Pod).
    pub legacy_instance: Option<String>,
    pub node: &'a str,
    /// Its Pod is missing, terminating or not Ready.
    pub down: bool,
}

impl<'a> BudgetedStore<'a> {
    /// `store` with `pod`, its Pod if it has one; `None` for a store being deleted (its Pod
    /// goes with it).
    pub fn of(store: &'a PureFlashStore, pod: Option<&Pod>) -> Option<BudgetedStore<'a>> {
        let ready = |pod: &Pod| {
            pod.metadata.deletion_timestamp.is_none()
                && pods::condition_true(pod, "Ready") == Some(true)
        };
        if store.meta().deletion_timestamp.is_some() {
            return None;
        }
        let instance = pods::instance(store);
        Some(BudgetedStore {
            namespace: store.metadata.namespace.as_deref().unwrap_or_default(),
            legacy_instance: pod
                .and_then(|pod| pod.labels().get(INSTANCE_LABEL))
                .filter(|label| **label != instance)
                .cloned(),
            instance,
            node: store.spec.node_name.as_str(),
            down: !pod.is_some_and(ready),
        })
    }
}

/// The budget for one namespace's `stores` (at least one).
pub fn desired(
    namespace: &str,
    stores: &[BudgetedStore<'_>],
    max_unavailable_nodes: usize,
) -> PodDisruptionBudget {
    let down_nodes: BTreeSet<&str> = stores.iter().filter(|s| s.down).map(|s| s.node).collect();
    let (guarded, spare): (Vec<&BudgetedStore<'_>>, usize) = if down_nodes.is_empty() {
        (stores.iter().collect(), max_unavailable_nodes)
    } else if down_nodes.len() > max_unavailable_nodes {
        (stores.iter().collect(), 0)
    } else {
        (
            stores
                .iter()
                .filter(|store| !down_nodes.contains(store.node))
                .collect(),
            max_unavailable_nodes - down_nodes.len(),
        )
    };
    // A label two stores' Pods could carry names neither: it might be the other's.
    let mut carried: BTreeMap<&str, usize> = BTreeMap::new();
    for store in stores {
        let labels = [
            Some(store.instance.as_str()),
            store.legacy_instance.as_deref(),
        ];
        for label in labels.into_iter().flatten() {
            *carried.entry(label).or_default() += 1;
        }
    }
    let instances: BTreeSet<&str> = guarded
        .iter()
        .flat_map(|store| {
            let legacy = store
                .legacy_instance
                .as_deref()
                .filter(|label| carried.get(label) == Some(&1));
            [Some(store.instance.as_str()), legacy]
        })
        .flatten()
        .collect();
    let mut selector = json!({"matchLabels": {
        "app.kubernetes.io/name": "pfs",
        "app.kubernetes.io/component": "store",
        "app.kubernetes.io/managed-by": "pureflash-operator",
    }});
    // `In` needs values: guarding nothing, it selects no Pod (every pfs Pod has the label).
    selector["matchExpressions"] = if instances.is_empty() {
        json!([{"key": INSTANCE_LABEL, "operator": "DoesNotExist"}])
    } else {
        json!([{"key": INSTANCE_LABEL, "operator": "In", "values": instances}])
    };
    let min_available = guarded.len().saturating_sub(spare);
    let mut budget: PodDisruptionBudget = serde_json::from_value(json!({
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
            "unhealthyPodEvictionPolicy": "IfHealthyBudget",
        },
    }))
    .expect("a valid PodDisruptionBudget");
    if let Some(down) = down_stores(stores) {
        budget
            .annotations_mut()
            .insert(DOWN_ANNOTATION.to_owned(), down);
    }
    budget
}

/// The [`DOWN_ANNOTATION`] value: `node: store, store; node: store`, nodes and stores in
/// order, at most [`DOWN_NAMED`] stores named; `None` when none is down.
fn down_stores(stores: &[BudgetedStore<'_>]) -> Option<String> {
    let mut down: Vec<(&str, &str)> = stores
        .iter()
        .filter(|store| store.down)
        .map(|store| (store.node, store.instance.as_str()))
        .collect();
    if down.is_empty() {
        return None;
    }
    down.sort_unstable();
    let mut by_node: Vec<(&str, Vec<&str>)> = Vec::new();
    for (node, instance) in down.iter().take(DOWN_NAMED) {
        match by_node.last_mut() {
            Some((last, instances)) if last == node => instances.push(instance),
            _ => by_node.push((node, vec![instance])),
        }
    }
    let mut text = by_node
        .iter()
        .map(|(node, instances)| format!("{node}: {}", instances.join(", ")))
        .collect::<Vec<_>>()
        .join("; ");
    if down.len() > DOWN_NAMED {
        text.push_str(&format!(" (and {} more)", down.len() - DOWN_NAMED));
    }
    Some(text)
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
        && existing.annotations().get(DOWN_ANNOTATION) == desired.annotations().get(DOWN_ANNOTATION)
}

/// The writes that bring the budgets (`budgets`: the operator's, as last seen) in line with
/// `stores`, namespace by namespace, in the order of their names.
pub fn plan<'a>(
    stores: impl IntoIterator<Item = BudgetedStore<'a>>,
    budgets: impl IntoIterator<Item = &'a PodDisruptionBudget>,
    max_unavailable_nodes: usize,
) -> Vec<BudgetChange> {
    let mut by_namespace: BTreeMap<&str, Vec<BudgetedStore<'a>>> = BTreeMap::new();
    for store in stores {
        by_namespace.entry(store.namespace).or_default().push(store);
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
            .get(*namespace)
            .is_some_and(|budget| up_to_date(budget, &wanted))
        {
            changes.push(BudgetChange::Apply(Box::new(wanted)));
        }
    }
    for (namespace, budget) in existing {
        if !by_namespace.contains_key(namespace.as_str())
            && budget.meta().deletion_timestamp.is_none()
        {
            changes.push(BudgetChange::Delete {
                namespace,
                uid: budget.uid(),
            });
        }
    }
    changes
}

/// Whether `budget` (the operator's, as last watched) refuses the eviction of `pod` for sure:
/// its status, caught up with its spec, allows no disruption, and it selects the Pod, which
/// counts as healthy (Ready). Anything less certain is `false`: the API server decides.
pub fn refuses(budget: &PodDisruptionBudget, pod: &Pod) -> bool {
    // Not caught up with its spec, it says nothing yet.
    let Some(status) = &budget.status else {
        return false;
    };
    if status.observed_generation < budget.metadata.generation
        || status.disruptions_allowed.unwrap_or(0) > 0
    {
        return false;
    }
    if pod.metadata.deletion_timestamp.is_some() || pods::condition_true(pod, "Ready") != Some(true)
    {
        return false;
    }
    budget
        .spec
        .as_ref()
        .and_then(|spec| spec.selector.clone())
        .and_then(|selector| kube::core::Selector::try_from(selector).ok())
        .is_some_and(|selector| {
            use kube::core::SelectorExt;
            selector.matches(pod.labels())
        })
}

/// What each namespace's budget allowed when last seen, to tell when it allows more: a rollout
/// it refused may go then, though no store came back (its status trails the Pods it counts).
#[derive(Debug, Default)]
pub struct Allowances(BTreeMap<String, i32>);

impl Allowances {
    /// The namespaces whose budget (the operator's, among `budgets`) allows more disruptions
    /// than when last seen, with how many more (`usize::MAX`: the budget is gone).
    pub fn rose<'a>(
        &mut self,
        budgets: impl IntoIterator<Item = &'a PodDisruptionBudget>,
    ) -> Vec<(String, usize)> {
        let now: BTreeMap<String, i32> = budgets
            .into_iter()
            .filter(|budget| budget.name_any() == BUDGET_NAME)
            .map(|budget| (budget.namespace().unwrap_or_default(), allowed(budget)))
            .collect();
        let mut rose: Vec<(String, usize)> = now
            .iter()
            .filter_map(|(namespace, allowed)| {
                let before = self.0.get(namespace).copied().unwrap_or(0).max(0);
                let more = usize::try_from(allowed.saturating_sub(before))
                    .ok()
                    .filter(|&n| n > 0)?;
                Some((namespace.clone(), more))
            })
            .collect();
        rose.extend(
            self.0
                .keys()
                .filter(|namespace| !now.contains_key(*namespace))
                .map(|namespace| (namespace.clone(), usize::MAX)),
        );
        self.0 = now;
        rose
    }
}

/// The disruptions `budget` allows as the API server's eviction reads it: none until its
/// status has observed its spec.
fn allowed(budget: &PodDisruptionBudget) -> i32 {
    let Some(status) = budget.status.as_ref() else {
        return 0;
    };
    if status.observed_generation < budget.metadata.generation {
        return 0;
    }
    status.disruptions_allowed.unwrap_or(0)
}

/// Keeps the budgets in line with the stores until `stop`, writing only while the term lasts.
/// `budget_events` is the budgets' reflector stream (it fills `budgets` as it is polled);
/// `changed` ticks whenever the store or Pod cache changes. Starts once all three caches are
/// loaded: an empty store cache would read as "no stores" and delete every budget, an empty
/// Pod cache as every store down.
pub async fn keep(
    ctx: Arc<Context>,
    budgets: Store<PodDisruptionBudget>,
    budget_events: impl Stream<Item = ()> + Send,
    mut changed: watch::Receiver<()>,
    stop: CancellationToken,
) {
    let mut budget_events = std::pin::pin!(budget_events);
    let loaded = async {
        super::cache_loaded(&ctx.stores).await?;
        super::cache_loaded(&ctx.pods).await?;
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
    // After a failed write, no look before this (changes do not hurry a retry).
    let mut retry_at: Option<tokio::time::Instant> = None;
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(300));
    let mut allowances = Allowances::default();
    // What the budgets allow as loaded: rises while loading were not compared.
    for (namespace, more) in allowances.rose(budgets.state().iter().map(AsRef::as_ref)) {
        ctx.waiting.budget_allows_more(&namespace, more);
    }
    loop {
        let soon = |retry_at: Option<tokio::time::Instant>| {
            let gathered = tokio::time::Instant::now() + GATHER;
            retry_at.map_or(gathered, |at| at.max(gathered))
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep_until(next_look) => {}
            event = budget_events.next() => {
                if event.is_none() { return }
                for (namespace, more) in allowances.rose(budgets.state().iter().map(AsRef::as_ref)) {
                    ctx.waiting.budget_allows_more(&namespace, more);
                }
                next_look = next_look.min(soon(retry_at));
                continue;
            }
            result = changed.changed() => {
                if result.is_err() { return }
                next_look = next_look.min(soon(retry_at));
                continue;
            }
        }
        let (stores, budget_list) = (ctx.stores.state(), budgets.state());
        let budgeted = stores.iter().filter_map(|store| {
            let pod = ctx.pods.get(
                &ObjectRef::new(&pods::pod_name(store))
                    .within(store.metadata.namespace.as_deref().unwrap_or_default()),
            );
            BudgetedStore::of(store, pod.as_deref())
        });
        let changes = plan(
            budgeted,
            budget_list.iter().map(AsRef::as_ref),
            ctx.settings.max_unavailable_nodes,
        );
        next_look = tokio::time::Instant::now() + RECHECK;
        // Every namespace is written, whatever another's write did: one that keeps refusing
        // (an admission policy, a quota) must not leave the others' budgets stale.
        let mut failed = Vec::new();
        for change in changes {
            let namespace = match &change {
                BudgetChange::Apply(budget) => budget.namespace().unwrap_or_default(),
                BudgetChange::Delete { namespace, .. } => namespace.clone(),
            };
            match write(&ctx, change).await {
                Ok(()) => {}
                Err(Error::TermEnded) => return,
                Err(error) => failed.push((namespace, error)),
            }
        }
        if failed.is_empty() {
            retry_at = None;
            backoff.reset();
        } else {
            let wait = backoff.next_delay();
            for (namespace, error) in &failed {
                warn!(%namespace, %error, retry_in = ?wait, "PodDisruptionBudget not written; trying again");
            }
            next_look = tokio::time::Instant::now() + wait;
            retry_at = Some(next_look);
        }
    }
}

/// With `--disruption-budget=false`: deletes the budgets an earlier run kept (a stale one
/// would freeze as it was, or stand beside the budget the user made instead, which fails every
/// eviction of the Pods both select). Once, when the term starts; retried with backoff until
/// it succeeds or the term ends.
pub async fn remove_all(ctx: Arc<Context>, namespace: Option<String>, stop: CancellationToken) {
    let api: Api<PodDisruptionBudget> = match &namespace {
        Some(namespace) => Api::namespaced(ctx.client.clone(), namespace),
        None => Api::all(ctx.client.clone()),
    };
    let params = kube::api::ListParams::default().labels(pods::OWNED_SELECTOR);
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(300));
    loop {
        let listed = match api.list(&params).await {
            Ok(listed) => Ok(listed.items),
            Err(error) => Err(Error::from(error)),
        };
        let result = match listed {
            Ok(budgets) => {
                let mut result = Ok(());
                for budget in budgets.iter().filter(|b| b.name_any() == BUDGET_NAME) {
                    let change = BudgetChange::Delete {
                        namespace: budget.namespace().unwrap_or_default(),
                        uid: budget.uid(),
                    };
                    if let Err(error) = write(&ctx, change).await {
                        result = Err(error);
                    }
                }
                result
            }
            Err(error) => Err(error),
        };
        match result {
            Ok(()) | Err(Error::TermEnded) => return,
            Err(error) => {
                let wait = backoff.next_delay();
                warn!(%error, retry_in = ?wait, "PodDisruptionBudgets of an earlier run not deleted; trying again");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
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

    fn store(namespace: &str, name: &str, node: &str) -> PureFlashStore {
        serde_json::from_value(json!({
            "apiVersion": "pureflash.io/v1alpha1",
            "kind": "PureFlashStore",
            "metadata": {"name": name, "namespace": namespace, "uid": format!("uid-{name}")},
            "spec": {"storeId": 1, "nodeName": node, "trays": [{"device": "/dev/sdb"}]},
        }))
        .expect("a store")
    }

    fn budgeted<'a>(
        namespace: &'a str,
        name: &str,
        node: &'a str,
        down: bool,
    ) -> BudgetedStore<'a> {
        BudgetedStore {
            namespace,
            instance: name.to_owned(),
            legacy_instance: None,
            node,
            down,
        }
    }

    /// (namespace, minAvailable, the instances it guards).
    fn shape(change: &BudgetChange) -> (String, i32, Vec<String>) {
        let BudgetChange::Apply(budget) = change else {
            panic!("an apply: {change:?}")
        };
        let spec = budget.spec.as_ref().expect("spec");
        let Some(IntOrString::Int(n)) = spec.min_available else {
            panic!("an integer minAvailable")
        };
        let expressions = spec
            .selector
            .as_ref()
            .and_then(|s| s.match_expressions.clone())
            .expect("expressions");
        assert_eq!(expressions.len(), 1);
        assert_eq!(expressions[0].key, INSTANCE_LABEL);
        let guarded = match expressions[0].operator.as_str() {
            "In" => expressions[0].values.clone().expect("values"),
            "DoesNotExist" => vec![],
            other => panic!("operator {other}"),
        };
        (budget.namespace().expect("namespace"), n, guarded)
    }

    fn names(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| (*name).to_owned()).collect()
    }

    #[test]
    fn a_budget_allowing_more_is_told_once_and_only_once_observed() {
        let seen = |namespace: &str, name: &str, generation: i64, observed: i64, allowed: i32| {
            serde_json::from_value::<PodDisruptionBudget>(json!({
                "metadata": {"name": name, "namespace": namespace, "generation": generation},
                "status": {"observedGeneration": observed, "disruptionsAllowed": allowed,
                    "currentHealthy": 0, "desiredHealthy": 0, "expectedPods": 0},
            }))
            .unwrap()
        };
        let ours = |namespace: &str, generation: i64, observed: i64, allowed: i32| {
            seen(namespace, BUDGET_NAME, generation, observed, allowed)
        };
        // What is seen, one look after another, and what rose by how much since the last.
        type Look<'a> = (Vec<PodDisruptionBudget>, Vec<(&'a str, usize)>);
        let looks: Vec<Look<'_>> = vec![
            (vec![ours("a", 1, 1, 0)], vec![]),
            // Another budget of the namespace is not the operator's.
            (vec![ours("a", 1, 1, 0), seen("a", "mine", 1, 1, 3)], vec![]),
            // A new spec not observed yet allows nothing, whatever the old status said.
            (vec![ours("a", 2, 1, 1)], vec![]),
            (vec![ours("a", 2, 2, 1)], vec![("a", 1)]),
            (vec![ours("a", 2, 2, 1)], vec![]),
            (vec![ours("a", 2, 2, 0)], vec![]),
            (vec![ours("a", 2, 2, 0), ours("b", 1, 1, 2)], vec![("b", 2)]),
            // From 2 to 3: one more.
            (vec![ours("a", 2, 2, 0), ours("b", 1, 1, 3)], vec![("b", 1)]),
            // Gone: nothing limits the evictions there any more.
            (vec![ours("a", 2, 2, 0)], vec![("b", usize::MAX)]),
            (vec![ours("a", 2, 2, 0)], vec![]),
        ];
        let mut allowances = Allowances::default();
        for (look, (budgets, expected)) in looks.iter().enumerate() {
            let expected: Vec<(String, usize)> = expected
                .iter()
                .map(|(namespace, more)| ((*namespace).to_owned(), *more))
                .collect();
            assert_eq!(allowances.rose(budgets), expected, "look {look}");
        }
    }

    #[test]
    fn while_every_store_serves_max_unavailable_nodes_stores_may_go() {
        let stores = || {
            [
                budgeted("a", "s1", "n1", false),
                budgeted("a", "s2", "n2", false),
                budgeted("a", "s3", "n3", false),
                budgeted("b", "s4", "n1", false),
            ]
        };
        let shapes: Vec<_> = plan(stores(), [], 1).iter().map(shape).collect();
        assert_eq!(
            shapes,
            [
                ("a".into(), 2, names(&["s1", "s2", "s3"])),
                ("b".into(), 0, names(&["s4"]))
            ]
        );
        assert_eq!(shape(&plan(stores(), [], 2)[0]).1, 1);
        // 0: no serving store is evicted at all.
        assert_eq!(shape(&plan(stores(), [], 0)[0]).1, 3);
    }

    #[test]
    fn a_node_with_a_store_down_may_lose_the_rest_and_the_other_nodes_nothing() {
        let stores = |down_on_n2: bool| {
            [
                budgeted("a", "s1", "n1", true),
                budgeted("a", "s2", "n1", false),
                budgeted("a", "s3", "n2", down_on_n2),
                budgeted("a", "s4", "n3", false),
            ]
        };
        // Store 2 may follow store 1 (its node's drain goes on), stores 3 and 4 stay.
        assert_eq!(
            shape(&plan(stores(false), [], 1)[0]),
            ("a".into(), 2, names(&["s3", "s4"]))
        );
        // Room for one more node.
        assert_eq!(
            shape(&plan(stores(false), [], 2)[0]),
            ("a".into(), 1, names(&["s3", "s4"]))
        );
        // Down on more nodes than allowed: every store guarded, none may go.
        assert_eq!(
            shape(&plan(stores(true), [], 1)[0]),
            ("a".into(), 4, names(&["s1", "s2", "s3", "s4"]))
        );
        assert_eq!(
            shape(&plan(stores(true), [], 2)[0]),
            ("a".into(), 1, names(&["s4"]))
        );
        // Every store on the nodes that are down: nothing left to guard.
        let alone = [
            budgeted("a", "s1", "n1", true),
            budgeted("a", "s2", "n1", false),
        ];
        assert_eq!(shape(&plan(alone, [], 1)[0]), ("a".into(), 0, names(&[])));
    }

    #[test]
    fn a_store_is_down_while_its_pod_is_missing_terminating_or_not_ready() {
        let s1 = store("a", "s1", "n1");
        let mut pod = pods::pod(&s1, "hash", crate::recovery::Predecessor::NoSession);
        assert!(BudgetedStore::of(&s1, None).expect("counted").down);
        assert!(
            BudgetedStore::of(&s1, Some(&pod)).expect("counted").down,
            "no status yet"
        );
        pod.status = Some(
            serde_json::from_value(json!({"conditions": [{"type": "Ready", "status": "True"}]}))
                .expect("status"),
        );
        let up = BudgetedStore::of(&s1, Some(&pod)).expect("counted");
        assert!(!up.down);
        assert_eq!(
            (up.namespace, up.instance.as_str(), up.node),
            ("a", "s1", "n1")
        );
        pod.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
        assert!(BudgetedStore::of(&s1, Some(&pod)).expect("counted").down);
        // A store being deleted is not counted: its Pod goes with it.
        let mut going = store("a", "s2", "n1");
        going.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
        assert_eq!(BudgetedStore::of(&going, None), None);
    }

    #[test]
    fn the_budget_selects_the_guarded_stores_pfs_pods_and_keeps_unproven_ones() {
        let s1 = store("a", "s1", "n1");
        let s2 = store("a", "s2", "n2");
        let stores = [
            BudgetedStore::of(&s1, None).expect("counted"),
            budgeted("a", "s2", "n2", false),
        ];
        let BudgetChange::Apply(budget) = &plan(stores, [], 1)[0] else {
            panic!("an apply")
        };
        let spec = budget.spec.clone().expect("spec");
        assert_eq!(
            spec.max_unavailable, None,
            "refused for pods without a scale"
        );
        assert_eq!(
            spec.unhealthy_pod_eviction_policy.as_deref(),
            Some("IfHealthyBudget")
        );
        let selector = spec.selector.expect("selector");
        // Matched against the labels every pfs Pod carries (pods.rs).
        let pod_of = |store: &PureFlashStore| {
            pods::pod(store, "hash", crate::recovery::Predecessor::NoSession)
        };
        let selects = |pod: &Pod| {
            let labels = pod.labels();
            selector
                .match_labels
                .iter()
                .flatten()
                .all(|(key, value)| labels.get(key) == Some(value))
                && selector.match_expressions.iter().flatten().all(|e| {
                    labels
                        .get(&e.key)
                        .is_some_and(|v| e.values.iter().flatten().any(|x| x == v))
                })
        };
        assert!(
            !selects(&pod_of(&s1)),
            "store 1's node is down: not guarded"
        );
        assert!(selects(&pod_of(&s2)));
    }

    #[test]
    fn a_budget_in_line_is_not_written_and_one_out_of_line_is() {
        let two = || {
            [
                budgeted("a", "s1", "n1", false),
                budgeted("a", "s2", "n2", false),
            ]
        };
        let BudgetChange::Apply(current) = plan(two(), [], 1).remove(0) else {
            panic!("an apply")
        };
        let mut current = *current;
        current.metadata.uid = Some("pdb-uid".into());
        current
            .labels_mut()
            .insert("added-by".into(), "someone".into());
        assert_eq!(plan(two(), [&current], 1), []);
        let mut three = two().to_vec();
        three.push(budgeted("a", "s3", "n3", false));
        assert_eq!(
            shape(&plan(three, [&current], 1)[0]),
            ("a".into(), 2, names(&["s1", "s2", "s3"]))
        );
        let mut edited = current.clone();
        edited
            .spec
            .as_mut()
            .expect("spec")
            .unhealthy_pod_eviction_policy = None;
        assert_eq!(plan(two(), [&edited], 1).len(), 1);
    }

    #[test]
    fn a_long_named_store_is_guarded_by_its_label_and_by_the_one_its_older_pod_carries() {
        let prefix = "x".repeat(70);
        let (one, two) = (
            store("a", &format!("{prefix}-0001"), "n1"),
            store("a", &format!("{prefix}-0002"), "n2"),
        );
        // Made by an older operator: labelled with the name cut to 63.
        let old_pod = |store: &PureFlashStore| {
            let mut pod = pods::pod(store, "hash", crate::recovery::Predecessor::NoSession);
            pod.labels_mut()
                .insert(INSTANCE_LABEL.into(), store.name_any()[..63].to_owned());
            pod
        };
        let guarded = |stores: &[BudgetedStore<'_>]| -> Vec<String> {
            let budget = desired("a", stores, 0);
            let selector = budget.spec.expect("spec").selector.expect("selector");
            selector.match_expressions.expect("expressions")[0]
                .values
                .clone()
                .unwrap_or_default()
        };
        fn serving(store: BudgetedStore<'_>) -> BudgetedStore<'_> {
            BudgetedStore {
                down: false,
                ..store
            }
        }
        let (pod_one, pod_two) = (old_pod(&one), old_pod(&two));
        let first = serving(BudgetedStore::of(&one, Some(&pod_one)).expect("counted"));
        let mut expected = vec![first.instance.clone(), one.name_any()[..63].to_owned()];
        expected.sort();
        assert_eq!(guarded(std::slice::from_ref(&first)), expected);
        // Both carry the same cut label: it names neither (it could be the other's Pod).
        let second = serving(BudgetedStore::of(&two, Some(&pod_two)).expect("counted"));
        let mut expected = vec![first.instance.clone(), second.instance.clone()];
        expected.sort();
        assert_eq!(guarded(&[first, second]), expected);
        // A Pod labelled as its store is now: nothing more.
        let new_pod = pods::pod(&one, "hash", crate::recovery::Predecessor::NoSession);
        assert_eq!(
            BudgetedStore::of(&one, Some(&new_pod))
                .expect("counted")
                .legacy_instance,
            None
        );
    }

    #[test]
    fn a_cached_budget_refuses_only_what_it_surely_refuses() {
        let (s1, s2) = (store("a", "s1", "n1"), store("a", "s2", "n1"));
        let ready = |store: &PureFlashStore, ready: bool| {
            let mut pod = pods::pod(store, "hash", crate::recovery::Predecessor::NoSession);
            pod.status = Some(
                serde_json::from_value(json!({"conditions": [
                    {"type": "Ready", "status": if ready { "True" } else { "False" }}]}))
                .expect("status"),
            );
            pod
        };
        // Guards store 1 alone.
        let mut budget = desired(
            "a",
            &[
                budgeted("a", &pods::instance(&s1), "n1", false),
                budgeted("a", &pods::instance(&s2), "n2", true),
            ],
            1,
        );
        budget.metadata.generation = Some(2);
        let status = |observed: i64, allowed: i32| {
            serde_json::from_value(json!({"observedGeneration": observed,
                "disruptionsAllowed": allowed, "currentHealthy": 1, "desiredHealthy": 1,
                "expectedPods": 1}))
            .expect("status")
        };
        assert!(!refuses(&budget, &ready(&s1, true)), "no status yet");
        budget.status = Some(status(2, 0));
        assert!(refuses(&budget, &ready(&s1, true)));
        assert!(
            !refuses(&budget, &ready(&s2, true)),
            "not selected: its node is the one down"
        );
        assert!(
            !refuses(&budget, &ready(&s1, false)),
            "an unhealthy pod goes by the unhealthy pod eviction policy"
        );
        budget.status = Some(status(1, 0));
        assert!(
            !refuses(&budget, &ready(&s1, true)),
            "not caught up with its spec"
        );
        budget.status = Some(status(2, 1));
        assert!(!refuses(&budget, &ready(&s1, true)));
    }

    #[test]
    fn the_budget_names_the_stores_that_are_down_by_node() {
        let down_of = |stores: &[BudgetedStore<'_>]| {
            desired("a", stores, 1)
                .annotations()
                .get(DOWN_ANNOTATION)
                .cloned()
        };
        let serving = [
            budgeted("a", "s1", "n1", false),
            budgeted("a", "s2", "n2", false),
        ];
        assert_eq!(down_of(&serving), None);
        let some_down = [
            budgeted("a", "s3", "n2", true),
            budgeted("a", "s1", "n1", false),
            budgeted("a", "s2", "n2", true),
            budgeted("a", "s9", "far", true),
            budgeted("a", "s4", "n2", false),
        ];
        assert_eq!(down_of(&some_down).as_deref(), Some("far: s9; n2: s2, s3"));
        let many: Vec<BudgetedStore<'_>> = (0..25)
            .map(|i| budgeted("a", &format!("s{i:02}"), "n1", true))
            .collect();
        let named = down_of(&many).expect("named");
        assert!(named.starts_with("n1: s00, s01,"), "{named}");
        assert!(named.ends_with("s19 (and 5 more)"), "{named}");

        // A store going down elsewhere on a node already down changes no shape, but the
        // annotation: the budget is written again.
        let BudgetChange::Apply(current) = plan(some_down.clone(), [], 1).remove(0) else {
            panic!("an apply")
        };
        assert_eq!(plan(some_down.clone(), [&*current], 1), []);
        let mut more = some_down.to_vec();
        more[4].down = true;
        let changes = plan(more, [&*current], 1);
        assert_eq!(changes.len(), 1);
        assert_eq!(shape(&changes[0]), shape(&BudgetChange::Apply(current)));
    }

    #[test]
    fn a_namespace_without_stores_loses_its_budget_and_only_ours_is_touched() {
        let BudgetChange::Apply(ours) =
            plan([budgeted("gone", "s1", "n1", false)], [], 1).remove(0)
        else {
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

    /// Whether the eviction API lets the Pod of `stores[index]` go under `budget`, as the
    /// apiserver and the disruption controller count: a Pod the selector does not name is not
    /// guarded; a guarded healthy one goes while more guarded Pods are healthy than
    /// `minAvailable`; a guarded unhealthy one (IfHealthyBudget) while at least that many are.
    fn evictable(stores: &[BudgetedStore<'_>], index: usize, budget: &PodDisruptionBudget) -> bool {
        let spec = budget.spec.as_ref().expect("spec");
        let expression = &spec
            .selector
            .as_ref()
            .expect("selector")
            .match_expressions
            .as_ref()
            .expect("expressions")[0];
        let guarded = |store: &BudgetedStore<'_>| {
            expression.operator == "In"
                && expression
                    .values
                    .iter()
                    .flatten()
                    .any(|name| *name == store.instance)
        };
        if !guarded(&stores[index]) {
            return true;
        }
        let healthy = stores.iter().filter(|s| guarded(s) && !s.down).count();
        let Some(IntOrString::Int(min)) = spec.min_available else {
            panic!("an integer minAvailable")
        };
        let min = usize::try_from(min).expect("not negative");
        assert_eq!(
            spec.unhealthy_pod_eviction_policy.as_deref(),
            Some("IfHealthyBudget")
        );
        if stores[index].down {
            healthy >= min && min > 0
        } else {
            healthy > min
        }
    }

    proptest! {
        /// Whatever is down where: a store's Pod may be evicted exactly when the nodes with a
        /// store down, its own added, are no more than allowed.
        #[test]
        fn an_eviction_is_allowed_exactly_while_few_enough_nodes_are_down(
            layout in proptest::collection::vec((0..5usize, any::<bool>()), 1..12),
            max_nodes in 0..4usize,
        ) {
            let nodes = ["n0", "n1", "n2", "n3", "n4"];
            let stores: Vec<BudgetedStore<'_>> = layout
                .iter()
                .enumerate()
                .map(|(i, &(node, down))| budgeted("a", &format!("s{i}"), nodes[node], down))
                .collect();
            let budget = desired("a", &stores, max_nodes);
            let down: BTreeSet<&str> = stores.iter().filter(|s| s.down).map(|s| s.node).collect();
            for (index, store) in stores.iter().enumerate() {
                let mut after = down.clone();
                after.insert(store.node);
                prop_assert_eq!(
                    evictable(&stores, index, &budget),
                    after.len() <= max_nodes,
                    "{} on {} (down: {}), down on {:?}", store.instance, store.node, store.down, down
                );
            }
        }
    }
}
