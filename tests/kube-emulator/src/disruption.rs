//! Voluntary disruptions: what the disruption controller keeps in a policy/v1
//! PodDisruptionBudget's status, and the rules of the Pods' eviction subresource that consults
//! it. Pure code: `state` runs the controller after every write to the Pods or budgets of a
//! namespace (and once a second for the budgets whose evictions are due to expire), and serves
//! evictions under its lock, so that two evictions never both spend the last disruption.
//!
//! - [`budget_status`]: `pkg/controller/disruption` (kube-controller-manager): which Pods a
//!   budget covers, how many are expected and healthy, how many may be disrupted, the
//!   `DisruptionAllowed` condition, the evictions not yet seen through (`disruptedPods`), and
//!   the fail-safe (`SyncFailed`, no disruption) when the expected count cannot be known;
//! - [`can_ignore_budget`], [`evicts_unhealthy`], [`check_and_decrement`],
//!   [`disruption_target`]: `pkg/registry/core/pod/storage/eviction.go` (kube-apiserver).
//!
//! Not emulated: the controller's Events (`NoPods`, `UnmanagedPods`, `NotDeleted`…), and its
//! reset of a stale `DisruptionTarget` condition on a Pod whose deletion never came (an
//! eviction here adds the condition and deletes under one lock).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value, json};

use crate::errors::ApiError;
use crate::meta;
use crate::selectors::{LabelSelector, go_quote, label_selector_text};

/// How long an eviction counts against a budget before the Pod is seen terminating
/// (`DeletionTimeout`): past it, the controller assumes the deletion will not come.
pub const DELETION_TIMEOUT: Duration = Duration::from_secs(2 * 60);

/// `MaxDisruptedPodSize`: evictions are refused while this many are not seen through.
const MAX_DISRUPTED_PODS: usize = 2000;

/// The condition the controller keeps on every budget.
pub const DISRUPTION_ALLOWED: &str = "DisruptionAllowed";

/// The message of a refused eviction (`429 TooManyRequests`).
pub const REFUSED: &str = "Cannot evict pod as it would violate the pod's disruption budget.";

/// The answer to a Pod covered by several budgets (a `500`, reason unset).
pub const SEVERAL_BUDGETS: &str = "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.";

fn text<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn labels(object: &Value) -> BTreeMap<String, String> {
    object
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|labels| {
            labels
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `budget` covers `pod` (`metav1.LabelSelectorAsSelector`): in its namespace, by its
/// selector. In policy/v1 an empty selector (`{}`) selects every Pod of the namespace; an
/// unset one selects none, and so does one that does not parse.
pub fn selects(budget: &Value, pod: &Value) -> bool {
    selector_of(budget).is_some_and(|selector| selector.selects(pod))
}

/// A budget's selector, parsed once for all the Pods it is matched against; `None` selects
/// nothing (unset, or not parsable).
pub fn selector_of(budget: &Value) -> Option<BudgetSelector<'_>> {
    let selector = budget.pointer("/spec/selector").filter(|s| s.is_object())?;
    let parsed = LabelSelector::parse(&label_selector_text(selector)).ok()?;
    Some(BudgetSelector {
        namespace: text(budget, "/metadata/namespace"),
        parsed,
    })
}

/// A budget's parsed selector with its namespace.
pub struct BudgetSelector<'a> {
    namespace: &'a str,
    parsed: LabelSelector,
}

impl BudgetSelector<'_> {
    pub fn selects(&self, pod: &Value) -> bool {
        text(pod, "/metadata/namespace") == self.namespace && self.parsed.matches(&labels(pod))
    }
}

/// `IsPodReady`: its `Ready` condition is `True`.
pub fn is_ready(pod: &Value) -> bool {
    condition(pod, "Ready").is_some_and(|c| c["status"] == "True")
}

fn condition<'a>(pod: &'a Value, kind: &str) -> Option<&'a Value> {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|c| c["type"] == kind)
}

fn terminating(pod: &Value) -> bool {
    pod.pointer("/metadata/deletionTimestamp")
        .is_some_and(|t| !t.is_null())
}

fn phase(pod: &Value) -> &str {
    text(pod, "/status/phase")
}

/// The owner reference that is a Pod's controller (`metav1.GetControllerOf`).
pub fn controller_of(object: &Value) -> Option<&Value> {
    object
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|owner| owner["controller"] == true)
}

fn time_of(value: &Value) -> Option<SystemTime> {
    value
        .as_str()
        .and_then(|at| humantime::parse_rfc3339(at).ok())
}

// ---------------------------------------------------------------------------------------------
// The disruption controller

/// `intstr.GetScaledValueFromIntOrPercent` rounding up: a number as is, `N%` of `total`.
fn scaled(value: &Value, total: i64) -> Result<i64, String> {
    match value {
        Value::Number(n) => n
            .as_i64()
            .ok_or_else(|| format!("invalid value for IntOrString: invalid value {n}")),
        Value::String(s) => {
            let percent: i64 = s
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| {
                    "invalid value for IntOrString: invalid type: string is not a percentage"
                        .to_owned()
                })?;
            Ok((percent * total + 99).div_euclid(100))
        }
        _ => Err("nil value for IntOrString".to_owned()),
    }
}

/// `getExpectedScale`: the sum of the scales of the covered Pods' controllers. Pods without a
/// controller are left out (the real controller warns with an `UnmanagedPods` Event); a
/// controller that cannot be found, or that has no scale, fails the sync. `scale_of` reads a
/// controller reference's scale: `Ok(None)` when no such object exists (with that uid),
/// `Err` with the lookup's error when its kind has no scale subresource or is not served.
fn expected_scale(
    pods: &[&Value],
    scale_of: &dyn Fn(&Value) -> Result<Option<i64>, String>,
) -> Result<i64, String> {
    let mut scales: BTreeMap<String, i64> = BTreeMap::new();
    for pod in pods {
        let Some(controller) = controller_of(pod) else {
            continue;
        };
        let uid = text(controller, "/uid").to_owned();
        if scales.contains_key(&uid) {
            continue;
        }
        match scale_of(controller)? {
            Some(scale) => {
                scales.insert(uid, scale);
            }
            None => {
                return Err(format!(
                    "found no controllers for pod {}",
                    go_quote(text(pod, "/metadata/name"))
                ));
            }
        }
    }
    Ok(scales.values().sum())
}

/// `getExpectedPodCount`: (expected Pods, desired healthy Pods). An integer `minAvailable`
/// counts the covered Pods themselves; `maxUnavailable` and a percentage count their
/// controllers' scales.
fn expected_and_desired(
    spec: &Value,
    pods: &[&Value],
    scale_of: &dyn Fn(&Value) -> Result<Option<i64>, String>,
) -> Result<(i64, i64), String> {
    let set = |key: &str| spec.get(key).filter(|v| !v.is_null());
    if let Some(max_unavailable) = set("maxUnavailable") {
        let expected = expected_scale(pods, scale_of)?;
        let unavailable = scaled(max_unavailable, expected)?;
        return Ok((expected, (expected - unavailable).max(0)));
    }
    match set("minAvailable") {
        Some(Value::Number(n)) => Ok((pods.len() as i64, n.as_i64().unwrap_or_default())),
        Some(min_available) => {
            let expected = expected_scale(pods, scale_of)?;
            Ok((expected, scaled(min_available, expected)?))
        }
        None => Ok((0, 0)),
    }
}

/// `apimeta.SetStatusCondition`: the condition of `kind` takes these values; its
/// `lastTransitionTime` moves only when its status changes.
fn set_condition(
    conditions: &mut Vec<Value>,
    kind: &str,
    status: &str,
    reason: &str,
    message: &str,
    observed_generation: i64,
    now: SystemTime,
) {
    let mut condition =
        json!({"type": kind, "status": status, "reason": reason, "message": message});
    if observed_generation != 0 {
        condition["observedGeneration"] = json!(observed_generation);
    }
    match conditions.iter_mut().find(|c| c["type"] == kind) {
        Some(existing) => {
            condition["lastTransitionTime"] = if existing["status"] == status {
                existing["lastTransitionTime"].clone()
            } else {
                json!(meta::timestamp(now))
            };
            *existing = condition;
        }
        None => {
            condition["lastTransitionTime"] = json!(meta::timestamp(now));
            conditions.push(condition);
        }
    }
}

fn conditions_of(status: &Map<String, Value>) -> Vec<Value> {
    status
        .get("conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// `UpdateDisruptionAllowedCondition`: `True`/`SufficientPods` while a disruption is allowed,
/// `False`/`InsufficientPods` otherwise.
fn update_disruption_allowed(status: &mut Map<String, Value>, now: SystemTime) {
    let allowed = status
        .get("disruptionsAllowed")
        .and_then(Value::as_i64)
        .unwrap_or_default();
    let generation = status
        .get("observedGeneration")
        .and_then(Value::as_i64)
        .unwrap_or_default();
    let mut conditions = conditions_of(status);
    let (state, reason) = if allowed > 0 {
        ("True", "SufficientPods")
    } else {
        ("False", "InsufficientPods")
    };
    set_condition(
        &mut conditions,
        DISRUPTION_ALLOWED,
        state,
        reason,
        "",
        generation,
        now,
    );
    status.insert("conditions".into(), Value::Array(conditions));
}

/// The status the disruption controller gives `budget` (its `trySync`, or its `failSafe` when
/// the expected count cannot be known). `pods`: the Pods of the budget's namespace.
pub fn budget_status(
    budget: &Value,
    pods: &[&Value],
    scale_of: &dyn Fn(&Value) -> Result<Option<i64>, String>,
    now: SystemTime,
) -> Value {
    let old = budget
        .get("status")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let selector = selector_of(budget);
    let covered: Vec<&Value> = pods
        .iter()
        .copied()
        .filter(|pod| selector.as_ref().is_some_and(|s| s.selects(pod)))
        .collect();
    let spec = budget.get("spec").unwrap_or(&Value::Null);
    let (expected, desired) = match expected_and_desired(spec, &covered, scale_of) {
        Ok(counts) => counts,
        Err(error) => {
            // failSafe: whatever else the status says, no disruption until the next sync works.
            let mut status = old;
            status.insert("disruptionsAllowed".into(), json!(0));
            let generation = status
                .get("observedGeneration")
                .and_then(Value::as_i64)
                .unwrap_or_default();
            let mut conditions = conditions_of(&status);
            set_condition(
                &mut conditions,
                DISRUPTION_ALLOWED,
                "False",
                "SyncFailed",
                &error,
                generation,
                now,
            );
            status.insert("conditions".into(), Value::Array(conditions));
            for count in [
                "disruptionsAllowed",
                "currentHealthy",
                "desiredHealthy",
                "expectedPods",
            ] {
                status.entry(count).or_insert(json!(0));
            }
            return Value::Object(status);
        }
    };
    // buildDisruptedPodMap: evictions of covered Pods not yet terminating, within the timeout.
    let recorded = old.get("disruptedPods").and_then(Value::as_object);
    let mut disrupted = Map::new();
    for pod in covered.iter().filter(|pod| !terminating(pod)) {
        let name = text(pod, "/metadata/name");
        let Some(at) = recorded.and_then(|r| r.get(name)) else {
            continue;
        };
        if time_of(at).is_some_and(|at| at + DELETION_TIMEOUT >= now) {
            disrupted.insert(name.to_owned(), at.clone());
        }
    }
    // countHealthyPods: Ready, not terminating, not being evicted.
    let healthy = covered
        .iter()
        .filter(|pod| !terminating(pod))
        .filter(|pod| {
            disrupted
                .get(text(pod, "/metadata/name"))
                .and_then(time_of)
                .is_none_or(|at| at + DELETION_TIMEOUT <= now)
        })
        .filter(|pod| is_ready(pod))
        .count() as i64;
    // Nothing is allowed while no Pod is expected, so that a budget whose Pods are not yet
    // counted is safe.
    let allowed = if expected <= 0 {
        0
    } else {
        (healthy - desired).max(0)
    };
    let mut status = Map::new();
    status.insert("currentHealthy".into(), json!(healthy));
    status.insert("desiredHealthy".into(), json!(desired));
    status.insert("expectedPods".into(), json!(expected));
    status.insert("disruptionsAllowed".into(), json!(allowed));
    if !disrupted.is_empty() {
        status.insert("disruptedPods".into(), Value::Object(disrupted));
    }
    let generation = budget
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or_default();
    if generation != 0 {
        status.insert("observedGeneration".into(), json!(generation));
    }
    if let Some(conditions) = old.get("conditions") {
        status.insert("conditions".into(), conditions.clone());
    }
    update_disruption_allowed(&mut status, now);
    Value::Object(status)
}

/// Whether a budget's status lists evictions that will expire (the controller rechecks it).
pub fn has_disrupted_pods(budget: &Value) -> bool {
    budget
        .pointer("/status/disruptedPods")
        .and_then(Value::as_object)
        .is_some_and(|pods| !pods.is_empty())
}

// ---------------------------------------------------------------------------------------------
// The eviction subresource

/// `canIgnorePDB`: a Pod that is done (`Succeeded`, `Failed`), not yet running (`Pending`) or
/// already terminating disrupts nothing more when evicted; it is deleted without a budget.
pub fn can_ignore_budget(pod: &Value) -> bool {
    matches!(phase(pod), "Succeeded" | "Failed" | "Pending") || terminating(pod)
}

/// `shouldEnforceResourceVersion`: the delete of an evicted Pod that is not done nor
/// terminating is conditional on the version the eviction looked at.
pub fn enforces_resource_version(pod: &Value) -> bool {
    !matches!(phase(pod), "Succeeded" | "Failed") && !terminating(pod)
}

/// Whether a Pod that is not Ready may go without spending the budget: always under
/// `unhealthyPodEvictionPolicy: AlwaysAllow`; under `IfHealthyBudget` (the default) only while
/// the budget has its desired healthy Pods (and desires some).
pub fn evicts_unhealthy(budget: &Value, pod: &Value) -> bool {
    if is_ready(pod) {
        return false;
    }
    if text(budget, "/spec/unhealthyPodEvictionPolicy") == "AlwaysAllow" {
        return true;
    }
    let count = |key: &str| {
        budget
            .pointer(&format!("/status/{key}"))
            .and_then(Value::as_i64)
            .unwrap_or_default()
    };
    count("currentHealthy") >= count("desiredHealthy") && count("desiredHealthy") > 0
}

/// `429` with the budget's reason as a `DisruptionBudget` cause.
fn refused(retry_after: u64, cause: String) -> ApiError {
    ApiError::too_many_requests_because(REFUSED, retry_after, &[("DisruptionBudget", &cause)])
}

/// `createTooManyRequestsError`: the budget's status is behind its spec, or the Pod changed
/// under the eviction; the client should retry (in 10 s).
pub fn still_being_processed(budget_name: &str) -> ApiError {
    refused(
        10,
        format!("The disruption budget {budget_name} is still being processed by the server."),
    )
}

/// `checkAndDecrement`: the budget's status after evicting `pod_name`, or why the eviction is
/// refused. The disruption is spent at once, and recorded in `disruptedPods` (unless a dry
/// run) so that the controller does not count the Pod healthy until it terminates.
pub fn check_and_decrement(
    budget: &Value,
    pod_name: &str,
    dry_run: bool,
    now: SystemTime,
) -> Result<Value, ApiError> {
    let name = text(budget, "/metadata/name");
    let mut status = budget
        .get("status")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let count = |status: &Map<String, Value>, key: &str| {
        status.get(key).and_then(Value::as_i64).unwrap_or_default()
    };
    let generation = budget
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or_default();
    if count(&status, "observedGeneration") < generation {
        return Err(still_being_processed(name));
    }
    let allowed = count(&status, "disruptionsAllowed");
    if allowed < 0 {
        return Err(ApiError::forbidden(
            "policy",
            "poddisruptionbudget",
            name,
            "pdb disruptions allowed is negative",
        ));
    }
    let disrupted = status
        .get("disruptedPods")
        .and_then(Value::as_object)
        .map_or(0, Map::len);
    if disrupted > MAX_DISRUPTED_PODS {
        return Err(ApiError::forbidden(
            "policy",
            "poddisruptionbudget",
            name,
            "DisruptedPods map too big - too many evictions not confirmed by PDB controller",
        ));
    }
    if allowed == 0 {
        return Err(refused(
            0,
            format!(
                "The disruption budget {name} needs {} healthy pods and has {} currently",
                count(&status, "desiredHealthy"),
                count(&status, "currentHealthy")
            ),
        ));
    }
    status.insert("disruptionsAllowed".into(), json!(allowed - 1));
    if allowed == 1 {
        update_disruption_allowed(&mut status, now);
    }
    if !dry_run {
        let pods = status.entry("disruptedPods").or_insert_with(|| json!({}));
        if !pods.is_object() {
            *pods = json!({});
        }
        pods[pod_name] = json!(meta::timestamp(now));
    }
    Ok(Value::Object(status))
}

/// The Pod with the `DisruptionTarget` condition an eviction adds before deleting it
/// (`PodDisruptionConditions`, on since 1.26), or `None` when it has it already
/// (`UpdatePodCondition`: the transition time stays while the status does).
pub fn disruption_target(pod: &Value, now: SystemTime) -> Option<Value> {
    let mut condition = json!({
        "type": "DisruptionTarget", "status": "True", "lastProbeTime": null,
        "lastTransitionTime": meta::timestamp(now),
        "reason": "EvictionByEvictionAPI", "message": "Eviction API: evicting",
    });
    let mut pod = pod.clone();
    if !pod.get("status").is_some_and(Value::is_object) {
        pod["status"] = json!({});
    }
    let status = pod["status"].as_object_mut().expect("made an object");
    let conditions = status.entry("conditions").or_insert_with(|| json!([]));
    if !conditions.is_array() {
        *conditions = json!([]);
    }
    let conditions = conditions.as_array_mut().expect("made an array");
    match conditions
        .iter_mut()
        .find(|c| c["type"] == "DisruptionTarget")
    {
        Some(existing) => {
            if existing["status"] == "True" {
                condition["lastTransitionTime"] = existing["lastTransitionTime"].clone();
            }
            let same = ["status", "reason", "message", "lastTransitionTime"]
                .iter()
                .all(|key| {
                    existing.get(*key).unwrap_or(&Value::Null)
                        == condition.get(*key).unwrap_or(&Value::Null)
                });
            if same {
                return None;
            }
            *existing = condition;
        }
        None => conditions.push(condition),
    }
    Some(pod)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, ready: bool) -> Value {
        json!({
            "metadata": {"name": name, "namespace": "ns", "labels": {"app": "pfs"},
                         "ownerReferences": [{"apiVersion": "test.pureflash.io/v1alpha1", "kind": "Widget", "name": "w", "uid": "w-uid", "controller": true}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
        })
    }

    fn budget(spec: Value) -> Value {
        json!({"metadata": {"name": "pfs", "namespace": "ns", "generation": 1}, "spec": spec, "status": {}})
    }

    fn no_scale(_: &Value) -> Result<Option<i64>, String> {
        Err("widgets.test.pureflash.io does not implement the scale subresource".into())
    }

    #[test]
    fn selectors_of_policy_v1() {
        let pod = pod("a", true);
        assert!(
            selects(&budget(json!({"selector": {}})), &pod),
            "empty: all"
        );
        assert!(!selects(&budget(json!({})), &pod), "unset: none");
        assert!(selects(
            &budget(json!({"selector": {"matchLabels": {"app": "pfs"}}})),
            &pod
        ));
        assert!(!selects(
            &budget(json!({"selector": {"matchLabels": {"app": "db"}}})),
            &pod
        ));
        let mut elsewhere = budget(json!({"selector": {}}));
        elsewhere["metadata"]["namespace"] = json!("other");
        assert!(!selects(&elsewhere, &pod));
    }

    #[test]
    fn an_integer_min_available_counts_the_pods() {
        let now = SystemTime::now();
        let (a, b, c) = (pod("a", true), pod("b", true), pod("c", false));
        let budget =
            budget(json!({"minAvailable": 1, "selector": {"matchLabels": {"app": "pfs"}}}));
        let status = budget_status(&budget, &[&a, &b, &c], &no_scale, now);
        assert_eq!(
            (
                &status["expectedPods"],
                &status["currentHealthy"],
                &status["desiredHealthy"],
                &status["disruptionsAllowed"],
                &status["observedGeneration"]
            ),
            (&json!(3), &json!(2), &json!(1), &json!(1), &json!(1))
        );
        let condition = &status["conditions"][0];
        assert_eq!(
            (
                &condition["type"],
                &condition["status"],
                &condition["reason"]
            ),
            (
                &json!("DisruptionAllowed"),
                &json!("True"),
                &json!("SufficientPods")
            )
        );
        // A Pod being deleted is no longer healthy, nor one being evicted.
        let mut deleting = a.clone();
        deleting["metadata"]["deletionTimestamp"] = json!(meta::timestamp(now));
        let mut evicting = budget.clone();
        evicting["status"] = status.clone();
        evicting["status"]["disruptedPods"] = json!({"b": meta::timestamp(now)});
        let after = budget_status(&evicting, &[&deleting, &b, &c], &no_scale, now);
        assert_eq!(after["currentHealthy"], 0);
        assert_eq!(after["disruptionsAllowed"], 0);
        assert_eq!(after["disruptedPods"], json!({"b": meta::timestamp(now)}));
        assert_eq!(after["conditions"][0]["reason"], "InsufficientPods");
        // An eviction never seen through expires.
        let later = budget_status(
            &evicting,
            &[&a, &b, &c],
            &no_scale,
            now + DELETION_TIMEOUT * 2,
        );
        assert!(later.get("disruptedPods").is_none());
        assert_eq!(later["currentHealthy"], 2);
    }

    #[test]
    fn max_unavailable_needs_a_scalable_controller() {
        let now = SystemTime::now();
        let (a, b) = (pod("a", true), pod("b", true));
        let failing = budget(json!({"maxUnavailable": 1, "selector": {}}));
        let status = budget_status(&failing, &[&a, &b], &no_scale, now);
        assert_eq!(status["disruptionsAllowed"], 0);
        let condition = &status["conditions"][0];
        assert_eq!(
            (
                &condition["status"],
                &condition["reason"],
                &condition["message"]
            ),
            (
                &json!("False"),
                &json!("SyncFailed"),
                &json!("widgets.test.pureflash.io does not implement the scale subresource")
            )
        );
        assert!(status.get("observedGeneration").is_none(), "not observed");
        let three = |_: &Value| Ok(Some(3));
        let scaled = budget_status(&failing, &[&a, &b], &three, now);
        assert_eq!(
            (
                &scaled["expectedPods"],
                &scaled["desiredHealthy"],
                &scaled["disruptionsAllowed"]
            ),
            (&json!(3), &json!(2), &json!(0))
        );
        let percent = budget(json!({"minAvailable": "50%", "selector": {}}));
        let halves = budget_status(&percent, &[&a, &b], &three, now);
        assert_eq!(
            (&halves["desiredHealthy"], &halves["disruptionsAllowed"]),
            (&json!(2), &json!(0))
        );
        let missing = |_: &Value| Ok(None);
        assert_eq!(
            budget_status(&percent, &[&a], &missing, now)["conditions"][0]["message"],
            "found no controllers for pod \"a\""
        );
    }

    #[test]
    fn evictions_spend_the_budget_or_are_refused() {
        let now = SystemTime::now();
        let mut budget = budget(json!({"minAvailable": 1, "selector": {}}));
        budget["status"] = json!({"observedGeneration": 1, "disruptionsAllowed": 1, "currentHealthy": 2, "desiredHealthy": 1, "expectedPods": 2});
        let status = check_and_decrement(&budget, "a", false, now).unwrap();
        assert_eq!(status["disruptionsAllowed"], 0);
        assert_eq!(status["disruptedPods"]["a"], meta::timestamp(now));
        assert_eq!(status["conditions"][0]["reason"], "InsufficientPods");
        budget["status"] = status;
        let refused = check_and_decrement(&budget, "b", false, now).unwrap_err();
        assert_eq!((refused.code, refused.reason), (429, "TooManyRequests"));
        assert_eq!(
            refused.status()["details"]["causes"],
            json!([{"reason": "DisruptionBudget", "message": "The disruption budget pfs needs 1 healthy pods and has 2 currently"}])
        );
        budget["metadata"]["generation"] = json!(2);
        let behind = check_and_decrement(&budget, "b", false, now).unwrap_err();
        assert_eq!(behind.retry_after, Some(10));
    }

    #[test]
    fn unhealthy_pods_by_policy() {
        let mut budget = budget(json!({"minAvailable": 2, "selector": {}}));
        budget["status"] = json!({"currentHealthy": 1, "desiredHealthy": 2});
        let unready = pod("a", false);
        assert!(!evicts_unhealthy(&budget, &unready), "IfHealthyBudget");
        assert!(!evicts_unhealthy(&budget, &pod("b", true)));
        budget["spec"]["unhealthyPodEvictionPolicy"] = json!("AlwaysAllow");
        assert!(evicts_unhealthy(&budget, &unready));
        budget["spec"]["unhealthyPodEvictionPolicy"] = json!("IfHealthyBudget");
        budget["status"]["currentHealthy"] = json!(2);
        assert!(evicts_unhealthy(&budget, &unready));
    }

    #[test]
    fn the_disruption_target_condition_is_added_once() {
        let now = SystemTime::now();
        let marked = disruption_target(&pod("a", true), now).unwrap();
        let conditions = marked["status"]["conditions"].as_array().unwrap();
        assert_eq!(conditions.len(), 2);
        assert_eq!(conditions[1]["reason"], "EvictionByEvictionAPI");
        assert!(disruption_target(&marked, now + Duration::from_secs(5)).is_none());
        assert!(can_ignore_budget(&json!({"status": {"phase": "Pending"}})));
        assert!(!can_ignore_budget(&marked));
    }
}
