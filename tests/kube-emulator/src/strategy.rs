//! What the API server's registry strategies do to built-in kinds when they are created or
//! updated: defaulting, server-assigned values (Service cluster IPs and node ports), and the
//! validation that catches manifest mistakes before anything is stored (a Deployment whose
//! selector does not match its template, a RoleBinding with a bad roleRef, an Event that breaks
//! events.k8s.io/v1's rules…). Pure code: `state`
//! supplies what other objects already hold ([`Allocated`]).
//!
//! Messages are the API server's (`pkg/apis/*/validation`); bad values are printed the way a
//! 1.33 server prints them, in Go syntax. Custom resources are checked by their CRD's schema
//! instead (`schema`), and CRDs by `state`.
//!
//! Not emulated: most field validation of pod templates and Services (only what a chart is
//! likely to get wrong is checked), Deployment selector immutability, the Deployment and
//! StatefulSet controllers (their status stays as created; `disruption` has the
//! PodDisruptionBudget controller), Service
//! dual-stack, the validation of StatefulSet claim templates (1.34 validates them as
//! PersistentVolumeClaims).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use base64::Engine;
use serde_json::{Map, Value, json};

use crate::convert::{self, EVENTS_GROUP};
use crate::errors::ApiError;
use crate::meta;
use crate::rbac::RBAC_GROUP;
use crate::resources::ResourceType;
use crate::schema::Cause;
use crate::selectors::{LabelSelector, go_quote, label_selector_text};

/// The name rule of a kind (`metadata.name`).
pub fn check_name(rt: &ResourceType, name: &str) -> Option<Cause> {
    let field = "metadata.name";
    match (rt.group.as_str(), rt.kind.as_str()) {
        ("", "Namespace") => meta::check_label_name(name, field),
        // Service names become DNS labels.
        ("", "Service") => meta::check_dns1035_label(name, field),
        // Its pods' host names are `<name>-<ordinal>`, DNS labels.
        ("apps", "StatefulSet") => meta::check_label_name(name, field),
        (RBAC_GROUP, _) => meta::check_path_segment_name(name, field),
        _ => meta::check_subdomain(name, field),
    }
}

/// Type-specific preparation of a new (`old` is `None`) or updated built-in object; Services
/// go through [`prepare_service`].
pub fn prepare(rt: &ResourceType, object: &mut Value, old: Option<&Value>) -> Result<(), ApiError> {
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let invalid = |causes: Vec<Cause>| -> Result<(), ApiError> {
        if causes.is_empty() {
            Ok(())
        } else {
            Err(ApiError::invalid(&rt.kind, &rt.group, &name, &causes))
        }
    };
    match (rt.group.as_str(), rt.kind.as_str(), old) {
        ("", "Secret", _) => prepare_secret(object),
        ("", "ConfigMap", _) => invalid(check_config_map(object))?,
        ("coordination.k8s.io", "Lease", _) => invalid(check_lease(object))?,
        ("", "Pod", None) => {
            let mut causes = check_pod_resources(object)?;
            causes.extend(check_pod_tolerations(object));
            invalid(causes)?;
            default_pod(object);
        }
        ("", "Pod", Some(old)) => {
            // Defaults apply to an update's body too, before it is compared with the Pod.
            if let Some(spec) = object.get_mut("spec") {
                default_pod_spec(spec);
            }
            let mut causes = check_pod_tolerations(object);
            causes.extend(check_pod_update(object, old));
            invalid(causes)?;
        }
        ("", "Namespace", None) => {
            object["spec"] = json!({"finalizers": ["kubernetes"]});
            object["status"] = json!({"phase": "Active"});
        }
        ("apps", "Deployment", _) => {
            if old.is_none() {
                object["status"] = json!({});
            }
            default_deployment(object);
            invalid(check_deployment(object))?;
        }
        ("apps", "StatefulSet", _) => {
            if old.is_none() {
                // `StatefulSetStatus{}`: its counts without `omitempty` show as zeros.
                object["status"] = json!({"replicas": 0, "availableReplicas": 0});
            }
            default_stateful_set(object);
            let mut causes = check_stateful_set(object);
            if let Some(old) = old {
                causes.extend(check_stateful_set_update(object, old));
            }
            invalid(causes)?;
        }
        ("policy", "PodDisruptionBudget", _) => {
            if old.is_none() {
                // A new budget allows no disruption until the disruption controller counts pods.
                object["status"] = json!({"disruptionsAllowed": 0, "currentHealthy": 0, "desiredHealthy": 0, "expectedPods": 0});
            }
            invalid(check_pod_disruption_budget(object))?;
        }
        ("" | EVENTS_GROUP, "Event", _) => {
            invalid(check_event(object, old, rt.group == EVENTS_GROUP))?;
        }
        (RBAC_GROUP, "Role" | "ClusterRole", _) => {
            invalid(check_rules(object, rt.kind == "Role"))?;
        }
        (RBAC_GROUP, "RoleBinding" | "ClusterRoleBinding", _) => {
            default_binding(object);
            invalid(check_binding(object, old, rt.kind == "RoleBinding"))?;
        }
        _ => {}
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Go-syntax bad values (a 1.33 API server prints non-scalar values with `%#v`)

fn go_string_slice(values: &[String]) -> String {
    let quoted: Vec<String> = values.iter().map(|v| go_quote(v)).collect();
    format!("[]string{{{}}}", quoted.join(", "))
}

fn go_string_map(map: Option<&Map<String, Value>>) -> String {
    match map {
        None => "map[string]string(nil)".to_owned(),
        Some(map) => {
            let entries: Vec<String> = map
                .iter()
                .map(|(k, v)| {
                    format!(
                        "{}:{}",
                        go_quote(k),
                        go_quote(v.as_str().unwrap_or_default())
                    )
                })
                .collect();
            format!("map[string]string{{{}}}", entries.join(", "))
        }
    }
}

fn strings_at(value: &Value, key: &str) -> Vec<String> {
    value
        .get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect()
}

fn text_at<'a>(value: &'a Value, key: &str) -> &'a str {
    value.get(key).and_then(Value::as_str).unwrap_or_default()
}

fn cause(reason: &str, field: &str, message: String) -> Cause {
    Cause {
        reason: reason.into(),
        message,
        field: field.into(),
    }
}

fn required(field: &str, detail: &str) -> Cause {
    let message = if detail.is_empty() {
        "Required value".to_owned()
    } else {
        format!("Required value: {detail}")
    };
    cause("FieldValueRequired", field, message)
}

fn invalid_value(field: &str, value: &str, detail: &str) -> Cause {
    cause(
        "FieldValueInvalid",
        field,
        format!("Invalid value: {value}: {detail}"),
    )
}

fn not_supported(field: &str, value: &str, supported: &[&str]) -> Cause {
    let supported: Vec<String> = supported.iter().map(|s| go_quote(s)).collect();
    cause(
        "FieldValueNotSupported",
        field,
        format!(
            "Unsupported value: {}: supported values: {}",
            go_quote(value),
            supported.join(", ")
        ),
    )
}

// ---------------------------------------------------------------------------------------------
// Secrets and Pods

fn prepare_secret(secret: &mut Value) {
    if let Some(Value::Object(strings)) =
        secret.as_object_mut().and_then(|o| o.remove("stringData"))
    {
        let data = secret
            .as_object_mut()
            .expect("object")
            .entry("data")
            .or_insert_with(|| json!({}));
        for (key, value) in strings {
            let encoded = base64::engine::general_purpose::STANDARD
                .encode(value.as_str().unwrap_or_default());
            data[key] = json!(encoded);
        }
    }
    if secret.get("type").is_none() {
        secret["type"] = json!("Opaque");
    }
}

/// The defaults the API server gives a new Pod (the fields our tests and the operator read).
fn default_pod(pod: &mut Value) {
    if let Some(spec) = pod.get_mut("spec") {
        default_pod_spec(spec);
    }
    pod["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"});
}

/// `SetDefaults_PodSpec` and `SetDefaults_Container`, for pods and pod templates.
fn default_pod_spec(spec: &mut Value) {
    let Some(spec) = spec.as_object_mut() else {
        return;
    };
    spec.entry("restartPolicy").or_insert(json!("Always"));
    spec.entry("terminationGracePeriodSeconds")
        .or_insert(json!(30));
    spec.entry("dnsPolicy").or_insert(json!("ClusterFirst"));
    spec.entry("schedulerName")
        .or_insert(json!("default-scheduler"));
    spec.entry("securityContext").or_insert(json!({}));
    if let Some(containers) = spec.get_mut("containers").and_then(Value::as_array_mut) {
        for container in containers.iter_mut().filter_map(Value::as_object_mut) {
            let image = container
                .get("image")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let latest = !image.contains(':') || image.ends_with(":latest");
            container
                .entry("imagePullPolicy")
                .or_insert(json!(if latest { "Always" } else { "IfNotPresent" }));
            container
                .entry("terminationMessagePath")
                .or_insert(json!("/dev/termination-log"));
            container
                .entry("terminationMessagePolicy")
                .or_insert(json!("File"));
            container.entry("resources").or_insert(json!({}));
        }
    }
}

/// A pod's containers and node cannot change once created (image excepted).
/// `ValidateLeaseSpec`: a positive duration, no negative transition count, and a preferred
/// holder only with a strategy.
fn check_lease(lease: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let spec = lease.get("spec").unwrap_or(&Value::Null);
    if let Some(duration) = spec.get("leaseDurationSeconds").and_then(Value::as_i64)
        && duration <= 0
    {
        causes.push(invalid_value(
            "spec.leaseDurationSeconds",
            &duration.to_string(),
            "must be greater than 0",
        ));
    }
    if let Some(transitions) = spec.get("leaseTransitions").and_then(Value::as_i64)
        && transitions < 0
    {
        causes.push(invalid_value(
            "spec.leaseTransitions",
            &transitions.to_string(),
            "must be greater than or equal to 0",
        ));
    }
    let set = |field: &str| {
        spec.get(field)
            .and_then(Value::as_str)
            .is_some_and(|v| !v.is_empty())
    };
    if set("preferredHolder") && !set("strategy") {
        causes.push(cause(
            "FieldValueForbidden",
            "spec.preferredHolder",
            "Forbidden: preferredHolder is only allowed if strategy is set".into(),
        ));
    }
    causes
}

/// `ValidateConfigMap`: keys are config keys, and the data takes at most 1 MiB.
fn check_config_map(map: &Value) -> Vec<Cause> {
    const MAX_SIZE: usize = 1024 * 1024;
    let mut causes = Vec::new();
    let mut size = 0;
    for part in ["data", "binaryData"] {
        let Some(entries) = map.get(part).and_then(Value::as_object) else {
            continue;
        };
        for (key, value) in entries {
            let key_ok = !key.is_empty()
                && key.len() <= 253
                && key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !key_ok {
                causes.push(invalid_value(
                    &format!("{part}[{key}]"),
                    &go_quote(key),
                    "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
                ));
            }
            let text = value.as_str().unwrap_or_default();
            size += match part {
                // Counted decoded, as stored.
                "binaryData" => base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .map_or(text.len(), |bytes| bytes.len()),
                _ => text.len(),
            };
        }
    }
    if size > MAX_SIZE {
        causes.push(cause(
            "FieldValueTooLong",
            "",
            format!("Too long: must have at most {MAX_SIZE} bytes"),
        ));
    }
    causes
}

/// A resource quantity in nano-units (`500m` is 500_000_000), exactly, as
/// `resource.ParseQuantity` reads it; `None` if it does not parse (or is absurdly large).
fn quantity(text: &str) -> Option<i128> {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let (negative, number) = match number.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, number.strip_prefix('+').unwrap_or(number)),
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty()
        || !whole
            .chars()
            .chain(fraction.chars())
            .all(|c| c.is_ascii_digit())
    {
        return None;
    }
    // The digits as an integer, and the power of ten that scales them to nano-units.
    let digits: i128 = format!("{whole}{fraction}").parse().ok()?;
    let mut ten_power = 9 - i32::try_from(fraction.len()).ok()?;
    let mut binary = 1i128;
    match suffix {
        "" => {}
        "n" => ten_power -= 9,
        "u" => ten_power -= 6,
        "m" => ten_power -= 3,
        "k" => ten_power += 3,
        "M" => ten_power += 6,
        "G" => ten_power += 9,
        "T" => ten_power += 12,
        "P" => ten_power += 15,
        "E" => ten_power += 18,
        "Ki" => binary = 1 << 10,
        "Mi" => binary = 1 << 20,
        "Gi" => binary = 1 << 30,
        "Ti" => binary = 1 << 40,
        "Pi" => binary = 1 << 50,
        "Ei" => binary = 1 << 60,
        exponent => ten_power += exponent.strip_prefix(['e', 'E'])?.parse::<i32>().ok()?,
    }
    let scaled = if ten_power >= 0 {
        digits.checked_mul(10i128.checked_pow(ten_power.unsigned_abs())?)?
    } else {
        // Below a nano-unit: rounded up, as the API server does.
        let divisor = 10i128.checked_pow(ten_power.unsigned_abs())?;
        (digits + divisor - 1) / divisor
    };
    let value = scaled.checked_mul(binary)?;
    Some(if negative { -value } else { value })
}

/// A Pod's container resources: every quantity must parse (the request is refused whole when
/// one does not, as decoding fails), and no request may exceed its limit
/// (`ValidateResourceRequirements`).
fn check_pod_resources(pod: &Value) -> Result<Vec<Cause>, ApiError> {
    let mut causes = Vec::new();
    for kind in ["initContainers", "containers"] {
        let containers = pod
            .pointer(&format!("/spec/{kind}"))
            .and_then(Value::as_array)
            .map_or(&[][..], Vec::as_slice);
        for (index, container) in containers.iter().enumerate() {
            let read = |part: &str| -> Result<BTreeMap<String, (String, i128)>, ApiError> {
                let Some(list) = container
                    .pointer(&format!("/resources/{part}"))
                    .and_then(Value::as_object)
                else {
                    return Ok(BTreeMap::new());
                };
                list.iter()
                    .map(|(name, value)| {
                        let text = match value {
                            Value::String(text) => text.clone(),
                            other => other.to_string(),
                        };
                        let parsed = quantity(&text).ok_or_else(|| {
                            ApiError::bad_request(format!(
                                "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$' (spec.{kind}[{index}].resources.{part}.{name}: {text:?})"
                            ))
                        })?;
                        Ok((name.clone(), (text, parsed)))
                    })
                    .collect()
            };
            let requests = read("requests")?;
            let limits = read("limits")?;
            for (name, (text, requested)) in &requests {
                if let Some((limit_text, limit)) = limits.get(name)
                    && requested > limit
                {
                    causes.push(invalid_value(
                        &format!("spec.{kind}[{index}].resources.requests"),
                        &go_quote(text),
                        &format!("must be less than or equal to {name} limit of {limit_text}"),
                    ));
                }
            }
        }
    }
    Ok(causes)
}

/// A Pod's tolerations, as `ValidateTolerations` checks them: a key is a qualified name; no
/// key takes operator Exists; `tolerationSeconds` takes effect NoExecute; operator Equal (or
/// none) takes a label value, Exists none, and there is no other; an effect is one of the
/// three.
fn check_pod_tolerations(pod: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let tolerations = pod
        .pointer("/spec/tolerations")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    for (index, toleration) in tolerations.iter().enumerate() {
        let field = |name: &str| format!("spec.tolerations[{index}].{name}");
        let text = |name: &str| toleration.get(name).and_then(Value::as_str).unwrap_or("");
        let (key, operator, value, effect) =
            (text("key"), text("operator"), text("value"), text("effect"));
        if !key.is_empty() && !crate::meta::qualified_name_ok(key) {
            causes.push(invalid_value(
                &field("key"),
                &go_quote(key),
                "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')",
            ));
        }
        if key.is_empty() && operator != "Exists" {
            causes.push(invalid_value(
                &field("operator"),
                &go_quote(operator),
                "operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
            ));
        }
        if toleration
            .get("tolerationSeconds")
            .is_some_and(|s| !s.is_null())
            && effect != "NoExecute"
        {
            causes.push(invalid_value(
                &field("effect"),
                &go_quote(effect),
                "effect must be 'NoExecute' when `tolerationSeconds` is set",
            ));
        }
        match operator {
            "" | "Equal" if !crate::meta::label_value_ok(value) => causes.push(invalid_value(
                &field("operator"),
                &go_quote(value),
                "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')",
            )),
            "" | "Equal" => {}
            "Exists" if !value.is_empty() => causes.push(invalid_value(
                &field("operator"),
                &toleration.to_string(),
                "value must be empty when `operator` is 'Exists'",
            )),
            "Exists" => {}
            other => causes.push(not_supported(&field("operator"), other, &["Equal", "Exists"])),
        }
        if !effect.is_empty() && !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute")
        {
            causes.push(not_supported(
                &field("effect"),
                effect,
                &["NoExecute", "NoSchedule", "PreferNoSchedule"],
            ));
        }
    }
    causes
}

/// `value` without empty lists, empty objects and nulls: the API server compares decoded
/// objects, where those read as absent.
fn without_empty(value: Value) -> Value {
    match value {
        Value::Object(fields) => Value::Object(
            fields
                .into_iter()
                .map(|(key, value)| (key, without_empty(value)))
                .filter(|(_, value)| !is_empty(value))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(without_empty).collect()),
        other => other,
    }
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Array(items) => items.is_empty(),
        Value::Object(fields) => fields.is_empty(),
        _ => false,
    }
}

/// `ValidatePodUpdate`: a Pod's spec is immutable but for its images, its active deadline,
/// added tolerations, its grace period, scheduling gates, and a node name set once (binding).
fn check_pod_update(pod: &Value, old: &Value) -> Vec<Cause> {
    let bound = old
        .pointer("/spec/nodeName")
        .is_some_and(|n| !n.as_str().unwrap_or_default().is_empty());
    let mutable_removed = |spec: Option<&Value>| {
        let mut spec = spec.cloned().unwrap_or(Value::Null);
        if let Some(fields) = spec.as_object_mut() {
            for mutable in [
                "activeDeadlineSeconds",
                "terminationGracePeriodSeconds",
                "tolerations",
                "schedulingGates",
            ] {
                fields.remove(mutable);
            }
            if !bound {
                fields.remove("nodeName");
            }
            for kind in ["containers", "initContainers"] {
                for container in fields
                    .get_mut(kind)
                    .and_then(Value::as_array_mut)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_object_mut)
                {
                    container.remove("image");
                }
            }
        }
        spec
    };
    let tolerations = |pod: &Value| {
        pod.pointer("/spec/tolerations")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let new_tolerations = tolerations(pod);
    let only_added = tolerations(old)
        .iter()
        .all(|kept| new_tolerations.contains(kept));
    if without_empty(mutable_removed(pod.get("spec")))
        != without_empty(mutable_removed(old.get("spec")))
        || !only_added
    {
        return vec![cause("FieldValueForbidden", "spec", "Forbidden: pod updates may not change fields other than `spec.containers[*].image`, `spec.initContainers[*].image`, `spec.activeDeadlineSeconds`, `spec.tolerations` (only additions to existing tolerations), `spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)".into())];
    }
    Vec::new()
}

// ---------------------------------------------------------------------------------------------
// Deployments

/// `SetDefaults_Deployment` (apps/v1) and the pod defaults of its template.
fn default_deployment(deployment: &mut Value) {
    if !deployment.get("spec").is_some_and(Value::is_object) {
        deployment["spec"] = json!({});
    }
    let spec = deployment["spec"].as_object_mut().expect("made an object");
    spec.entry("replicas").or_insert(json!(1));
    spec.entry("revisionHistoryLimit").or_insert(json!(10));
    spec.entry("progressDeadlineSeconds").or_insert(json!(600));
    let strategy = spec.entry("strategy").or_insert_with(|| json!({}));
    if strategy.get("type").is_none() {
        strategy["type"] = json!("RollingUpdate");
    }
    if strategy["type"] == "RollingUpdate" {
        if !strategy.get("rollingUpdate").is_some_and(Value::is_object) {
            strategy["rollingUpdate"] = json!({});
        }
        let rolling = strategy["rollingUpdate"]
            .as_object_mut()
            .expect("made an object");
        rolling.entry("maxUnavailable").or_insert(json!("25%"));
        rolling.entry("maxSurge").or_insert(json!("25%"));
    }
    if let Some(pod_spec) = spec.get_mut("template").and_then(|t| t.get_mut("spec")) {
        default_pod_spec(pod_spec);
    }
}

/// `ValidateDeploymentSpec`: a selector that is set, not empty, and matches the template.
fn check_deployment(deployment: &Value) -> Vec<Cause> {
    let spec = deployment.get("spec").unwrap_or(&Value::Null);
    let mut causes = check_selector(spec, "deployment");
    causes.extend(check_containers(spec));
    causes
}

/// The selector of a workload's `spec` and its template's labels: the selector is required and
/// not empty, and it must select the template's labels. Without a selector,
/// `LabelSelectorAsSelector` selects nothing, so the labels do not match either.
fn check_selector(spec: &Value, kind: &str) -> Vec<Cause> {
    let mut causes = Vec::new();
    let template_labels = spec
        .pointer("/template/metadata/labels")
        .and_then(Value::as_object);
    let labels: BTreeMap<String, String> = template_labels
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
        .collect();
    let matches = match spec.get("selector").filter(|s| s.is_object()) {
        None => {
            causes.push(required("spec.selector", ""));
            false
        }
        Some(selector) => {
            let match_labels = selector.get("matchLabels").and_then(Value::as_object);
            let expressions = selector.get("matchExpressions").and_then(Value::as_array);
            if match_labels.is_none_or(Map::is_empty) && expressions.is_none_or(Vec::is_empty) {
                let value = format!(
                    "v1.LabelSelector{{MatchLabels:{}, MatchExpressions:{}}}",
                    go_string_map(match_labels),
                    match expressions {
                        None => "[]v1.LabelSelectorRequirement(nil)",
                        Some(_) => "[]v1.LabelSelectorRequirement{}",
                    }
                );
                causes.push(invalid_value(
                    "spec.selector",
                    &value,
                    &format!("empty selector is invalid for {kind}"),
                ));
                // An empty selector selects everything: no mismatch to report.
                true
            } else {
                LabelSelector::parse(&label_selector_text(selector))
                    .is_ok_and(|parsed| parsed.matches(&labels))
            }
        }
    };
    if !matches {
        causes.push(invalid_value(
            "spec.template.metadata.labels",
            &go_string_map(template_labels),
            "`selector` does not match template `labels`",
        ));
    }
    causes
}

/// A pod template needs containers (`ValidatePodSpec`).
fn check_containers(spec: &Value) -> Option<Cause> {
    spec.pointer("/template/spec/containers")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty)
        .then(|| required("spec.template.spec.containers", ""))
}

// ---------------------------------------------------------------------------------------------
// StatefulSets

/// What an update may change in a StatefulSet's spec (`ValidateStatefulSetUpdate`).
const STATEFUL_SET_MUTABLE: [&str; 6] = [
    "replicas",
    "ordinals",
    "template",
    "updateStrategy",
    "persistentVolumeClaimRetentionPolicy",
    "minReadySeconds",
];

/// `SetDefaults_StatefulSet` (apps/v1), the pod defaults of its template, and what its claim
/// templates get as PersistentVolumeClaims: their type (`apiVersion`, `kind`),
/// `SetDefaults_PersistentVolumeClaimSpec` (`volumeMode`) and `SetDefaults_PersistentVolumeClaim`
/// (`status.phase`). GitOps tools famously see these as drift from the manifest.
fn default_stateful_set(set: &mut Value) {
    if !set.get("spec").is_some_and(Value::is_object) {
        set["spec"] = json!({});
    }
    let spec = set["spec"].as_object_mut().expect("made an object");
    if spec
        .get("podManagementPolicy")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        spec.insert("podManagementPolicy".into(), json!("OrderedReady"));
    }
    let strategy = spec.entry("updateStrategy").or_insert_with(|| json!({}));
    if !strategy.is_object() {
        *strategy = json!({});
    }
    if strategy
        .get("type")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        strategy["type"] = json!("RollingUpdate");
        if strategy.get("rollingUpdate").is_none_or(Value::is_null) {
            strategy["rollingUpdate"] = json!({});
        }
    }
    // Only a RollingUpdate strategy's (possibly just defaulted) rollingUpdate gets a partition.
    if strategy["type"] == "RollingUpdate"
        && let Some(rolling) = strategy
            .get_mut("rollingUpdate")
            .and_then(Value::as_object_mut)
    {
        rolling.entry("partition").or_insert(json!(0));
    }
    let retention = spec
        .entry("persistentVolumeClaimRetentionPolicy")
        .or_insert_with(|| json!({}));
    if !retention.is_object() {
        *retention = json!({});
    }
    for when in ["whenDeleted", "whenScaled"] {
        if retention
            .get(when)
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            retention[when] = json!("Retain");
        }
    }
    spec.entry("replicas").or_insert(json!(1));
    spec.entry("revisionHistoryLimit").or_insert(json!(10));
    if let Some(pod_spec) = spec.get_mut("template").and_then(|t| t.get_mut("spec")) {
        default_pod_spec(pod_spec);
    }
    for claim in spec
        .get_mut("volumeClaimTemplates")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object_mut)
    {
        claim.entry("apiVersion").or_insert(json!("v1"));
        claim
            .entry("kind")
            .or_insert(json!("PersistentVolumeClaim"));
        let claim_spec = claim.entry("spec").or_insert_with(|| json!({}));
        if let Some(claim_spec) = claim_spec.as_object_mut() {
            claim_spec
                .entry("volumeMode")
                .or_insert(json!("Filesystem"));
        }
        let status = claim.entry("status").or_insert_with(|| json!({}));
        if let Some(status) = status.as_object_mut() {
            status.entry("phase").or_insert(json!("Pending"));
        }
    }
}

/// `ValidateNonnegativeField`.
fn check_nonnegative(value: Option<&Value>, field: &str) -> Option<Cause> {
    let number = value.and_then(Value::as_i64)?;
    (number < 0).then(|| {
        invalid_value(
            field,
            &number.to_string(),
            "must be greater than or equal to 0",
        )
    })
}

/// `ValidateStatefulSetSpec` (1.33), plus the pod template's containers, which API servers
/// check from 1.34 on (a StatefulSet without containers can never run a pod).
fn check_stateful_set(set: &Value) -> Vec<Cause> {
    let spec = set.get("spec").unwrap_or(&Value::Null);
    let text = |value: Option<&Value>| value.and_then(Value::as_str).unwrap_or_default().to_owned();
    let mut causes = Vec::new();
    match text(spec.get("podManagementPolicy")).as_str() {
        "" => causes.push(required("spec.podManagementPolicy", "")),
        "OrderedReady" | "Parallel" => {}
        other => causes.push(invalid_value(
            "spec.podManagementPolicy",
            &go_quote(other),
            "must be 'OrderedReady' or 'Parallel'",
        )),
    }
    let strategy = spec.get("updateStrategy").unwrap_or(&Value::Null);
    let rolling = strategy.get("rollingUpdate").filter(|r| r.is_object());
    let go_rolling = |rolling: &Value| {
        format!(
            "apps.RollingUpdateStatefulSetStrategy{{Partition:{}, MaxUnavailable:{}}}",
            rolling
                .get("partition")
                .and_then(Value::as_i64)
                .unwrap_or(0),
            // A pointer prints as its address (a placeholder here).
            if rolling.get("maxUnavailable").is_some_and(|m| !m.is_null()) {
                "(*intstr.IntOrString)(0xc000a1c000)"
            } else {
                "(*intstr.IntOrString)(nil)"
            }
        )
    };
    match text(strategy.get("type")).as_str() {
        "" => causes.push(required("spec.updateStrategy", "")),
        "OnDelete" => {
            if let Some(rolling) = rolling {
                causes.push(invalid_value(
                    "spec.updateStrategy.rollingUpdate",
                    &go_rolling(rolling),
                    "only allowed for updateStrategy 'RollingUpdate'",
                ));
            }
        }
        "RollingUpdate" => {
            if let Some(rolling) = rolling {
                causes.extend(check_nonnegative(
                    rolling.get("partition"),
                    "spec.updateStrategy.rollingUpdate.partition",
                ));
            }
        }
        other => causes.push(invalid_value(
            "spec.updateStrategy",
            &format!(
                "apps.StatefulSetUpdateStrategy{{Type:{}, RollingUpdate:{}}}",
                go_quote(other),
                if rolling.is_some() {
                    "(*apps.RollingUpdateStatefulSetStrategy)(0xc000a1c000)"
                } else {
                    "(*apps.RollingUpdateStatefulSetStrategy)(nil)"
                }
            ),
            "must be 'RollingUpdate' or 'OnDelete'",
        )),
    }
    if let Some(retention) = spec
        .get("persistentVolumeClaimRetentionPolicy")
        .filter(|r| r.is_object())
    {
        for when in ["whenDeleted", "whenScaled"] {
            let value = text(retention.get(when));
            if value != "Retain" && value != "Delete" {
                causes.push(not_supported(
                    &format!("spec.persistentVolumeClaimRetentionPolicy.{when}"),
                    &value,
                    &["Retain", "Delete"],
                ));
            }
        }
    }
    // Optional; when set, it becomes the pods' `subdomain`, a DNS-1123 label.
    let service_name = text(spec.get("serviceName"));
    if !service_name.is_empty() {
        causes.extend(meta::check_label_name(&service_name, "spec.serviceName"));
    }
    causes.extend(check_nonnegative(spec.get("replicas"), "spec.replicas"));
    causes.extend(check_nonnegative(
        spec.get("minReadySeconds"),
        "spec.minReadySeconds",
    ));
    causes.extend(check_nonnegative(
        spec.pointer("/ordinals/start"),
        "spec.ordinals.start",
    ));
    causes.extend(check_selector(spec, "statefulset"));
    causes.extend(check_containers(spec));
    let pod_spec = spec.pointer("/template/spec").unwrap_or(&Value::Null);
    let restart_policy = text(pod_spec.get("restartPolicy"));
    if restart_policy != "Always" {
        causes.push(not_supported(
            "spec.template.spec.restartPolicy",
            &restart_policy,
            &["Always"],
        ));
    }
    if pod_spec
        .get("activeDeadlineSeconds")
        .is_some_and(|a| !a.is_null())
    {
        causes.push(cause(
            "FieldValueForbidden",
            "spec.template.spec.activeDeadlineSeconds",
            "Forbidden: activeDeadlineSeconds in StatefulSet is not Supported".into(),
        ));
    }
    causes
}

/// A spec without the fields an update may change, nor empty values (`Semantic.DeepEqual`
/// holds nil and empty lists and maps equal).
fn immutable_stateful_set_spec(set: &Value) -> Value {
    fn without_empty(value: &Value) -> Option<Value> {
        match value {
            Value::Null => None,
            Value::Array(items) if items.is_empty() => None,
            Value::Object(map) if map.is_empty() => None,
            Value::Array(items) => Some(Value::Array(
                items
                    .iter()
                    .map(|item| without_empty(item).unwrap_or(Value::Null))
                    .collect(),
            )),
            Value::Object(map) => {
                let kept: Map<String, Value> = map
                    .iter()
                    .filter_map(|(k, v)| without_empty(v).map(|v| (k.clone(), v)))
                    .collect();
                (!kept.is_empty()).then_some(Value::Object(kept))
            }
            other => Some(other.clone()),
        }
    }
    let mut spec = set.get("spec").cloned().unwrap_or(Value::Null);
    if let Some(map) = spec.as_object_mut() {
        for field in STATEFUL_SET_MUTABLE {
            map.remove(field);
        }
    }
    without_empty(&spec).unwrap_or(Value::Null)
}

/// `ValidateStatefulSetUpdate`: only some of the spec may change.
fn check_stateful_set_update(set: &Value, old: &Value) -> Option<Cause> {
    (immutable_stateful_set_spec(set) != immutable_stateful_set_spec(old)).then(|| {
        cause(
            "FieldValueForbidden",
            "spec",
            "Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden".into(),
        )
    })
}

// ---------------------------------------------------------------------------------------------
// PodDisruptionBudgets

/// An `intstr.IntOrString` as a 1.33 server prints it in a message (`%#v` of the struct).
fn go_int_or_string(value: &Value) -> String {
    match value {
        Value::String(s) => format!(
            "intstr.IntOrString{{Type:1, IntVal:0, StrVal:{}}}",
            go_quote(s)
        ),
        other => format!(
            "intstr.IntOrString{{Type:0, IntVal:{}, StrVal:\"\"}}",
            other.as_i64().unwrap_or_default()
        ),
    }
}

/// `ValidatePositiveIntOrPercent` and `IsNotMoreThan100Percent`: a count of at least 0, or a
/// percentage of at most 100%.
fn check_int_or_percent(value: Option<&Value>, field: &str) -> Vec<Cause> {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Vec::new();
    };
    match value {
        Value::String(text) => match text.strip_suffix('%').map(str::parse::<u64>) {
            Some(Ok(percent)) if percent > 100 => vec![invalid_value(
                field,
                &go_int_or_string(value),
                "must not be greater than 100%",
            )],
            Some(Ok(_)) if text.bytes().next().is_some_and(|b| b.is_ascii_digit()) => Vec::new(),
            _ => vec![invalid_value(
                field,
                &go_int_or_string(value),
                "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')",
            )],
        },
        _ => check_nonnegative(Some(value), field).into_iter().collect(),
    }
}

/// `ValidateLabelSelector` of a selector object at `field`: its labels, and each expression's
/// operator and values.
fn check_label_selector(selector: Option<&Value>, field: &str) -> Vec<Cause> {
    let Some(selector) = selector.filter(|s| s.is_object()) else {
        return Vec::new();
    };
    let mut causes: Vec<Cause> = selector
        .get("matchLabels")
        .map(|labels| meta::check_labels_and_annotations(&json!({ "labels": labels })))
        .unwrap_or_default()
        .into_iter()
        .map(|c| Cause {
            field: format!("{field}.matchLabels"),
            ..c
        })
        .collect();
    for (index, expression) in selector
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let path = format!("{field}.matchExpressions[{index}]");
        let values = expression
            .get("values")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        match text_at(expression, "operator") {
            "In" | "NotIn" if values == 0 => causes.push(required(
                &format!("{path}.values"),
                "must be specified when `operator` is 'In' or 'NotIn'",
            )),
            "Exists" | "DoesNotExist" if values > 0 => causes.push(cause(
                "FieldValueForbidden",
                &format!("{path}.values"),
                "Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'"
                    .into(),
            )),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => causes.push(invalid_value(
                &format!("{path}.operator"),
                &go_quote(other),
                "not a valid selector operator",
            )),
        }
        let key = text_at(expression, "key");
        if !meta::qualified_name_ok(key) {
            causes.push(invalid_value(
                &format!("{path}.key"),
                &go_quote(key),
                "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')",
            ));
        }
    }
    causes
}

/// `ValidatePodDisruptionBudgetSpec`: minAvailable and maxUnavailable exclude each other and
/// are counts or percentages, the selector is valid, and the unhealthy Pod eviction policy is
/// one of the two.
fn check_pod_disruption_budget(budget: &Value) -> Vec<Cause> {
    let spec = budget.get("spec").unwrap_or(&Value::Null);
    let mut causes = check_both_availabilities(spec);
    causes.extend(check_int_or_percent(
        spec.get("minAvailable"),
        "spec.minAvailable",
    ));
    causes.extend(check_int_or_percent(
        spec.get("maxUnavailable"),
        "spec.maxUnavailable",
    ));
    causes.extend(check_label_selector(spec.get("selector"), "spec.selector"));
    if let Some(policy) = spec
        .get("unhealthyPodEvictionPolicy")
        .and_then(Value::as_str)
        && !matches!(policy, "AlwaysAllow" | "IfHealthyBudget")
    {
        causes.push(not_supported(
            "spec.unhealthyPodEvictionPolicy",
            policy,
            &["AlwaysAllow", "IfHealthyBudget"],
        ));
    }
    causes
}

/// minAvailable and maxUnavailable cannot be both set.
fn check_both_availabilities(spec: &Value) -> Vec<Cause> {
    let set = |key: &str| spec.get(key).is_some_and(|v| !v.is_null());
    if !(set("minAvailable") && set("maxUnavailable")) {
        return Vec::new();
    }
    // The server prints the spec struct, whose pointer fields show as addresses (which differ
    // from one request to the next; these are placeholders).
    let pointer = |key: &str, type_: &str| {
        if set(key) {
            format!("(*{type_})(0xc000a1c000)")
        } else {
            format!("(*{type_})(nil)")
        }
    };
    let value = format!(
        "policy.PodDisruptionBudgetSpec{{MinAvailable:{}, Selector:{}, MaxUnavailable:{}, UnhealthyPodEvictionPolicy:{}}}",
        pointer("minAvailable", "intstr.IntOrString"),
        pointer("selector", "v1.LabelSelector"),
        pointer("maxUnavailable", "intstr.IntOrString"),
        pointer(
            "unhealthyPodEvictionPolicy",
            "policy.UnhealthyPodEvictionPolicyType"
        ),
    );
    vec![invalid_value(
        "spec",
        &value,
        "minAvailable and maxUnavailable cannot be both set",
    )]
}

// ---------------------------------------------------------------------------------------------
// RBAC

/// `ValidatePolicyRule` for each rule of a Role (namespaced) or ClusterRole.
fn check_rules(role: &Value, namespaced: bool) -> Vec<Cause> {
    let mut causes = Vec::new();
    for (i, rule) in role
        .get("rules")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let path = format!("rules[{i}]");
        if strings_at(rule, "verbs").is_empty() {
            causes.push(required(
                &format!("{path}.verbs"),
                "verbs must contain at least one value",
            ));
        }
        let urls = strings_at(rule, "nonResourceURLs");
        if !urls.is_empty() {
            let field = format!("{path}.nonResourceURLs");
            if namespaced {
                causes.push(invalid_value(
                    &field,
                    &go_string_slice(&urls),
                    "namespaced rules cannot apply to non-resource URLs",
                ));
            }
            if ["apiGroups", "resources", "resourceNames"]
                .iter()
                .any(|key| !strings_at(rule, key).is_empty())
            {
                causes.push(invalid_value(
                    &field,
                    &go_string_slice(&urls),
                    "rules cannot apply to both regular resources and non-resource URLs",
                ));
            }
            continue;
        }
        if strings_at(rule, "apiGroups").is_empty() {
            causes.push(required(
                &format!("{path}.apiGroups"),
                "resource rules must supply at least one api group",
            ));
        }
        if strings_at(rule, "resources").is_empty() {
            causes.push(required(
                &format!("{path}.resources"),
                "resource rules must supply at least one resource",
            ));
        }
    }
    causes
}

/// `SetDefaults_RoleBinding`, `SetDefaults_ClusterRoleBinding`, `SetDefaults_Subject`.
fn default_binding(binding: &mut Value) {
    if let Some(role_ref) = binding.get_mut("roleRef").and_then(Value::as_object_mut) {
        let empty = role_ref
            .get("apiGroup")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty);
        if empty {
            role_ref.insert("apiGroup".into(), json!(RBAC_GROUP));
        }
    }
    for subject in binding
        .get_mut("subjects")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object_mut)
    {
        let empty = subject
            .get("apiGroup")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty);
        let kind = subject
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if empty && matches!(kind, "User" | "Group") {
            subject.insert("apiGroup".into(), json!(RBAC_GROUP));
        }
    }
}

/// `ValidateRoleBinding`/`ValidateClusterRoleBinding`, and on update the immutable roleRef.
fn check_binding(binding: &Value, old: Option<&Value>, namespaced: bool) -> Vec<Cause> {
    let mut causes = Vec::new();
    let role_ref = binding.get("roleRef").unwrap_or(&Value::Null);
    let api_group = text_at(role_ref, "apiGroup");
    if api_group != RBAC_GROUP {
        causes.push(not_supported("roleRef.apiGroup", api_group, &[RBAC_GROUP]));
    }
    let kind = text_at(role_ref, "kind");
    let kinds: &[&str] = if namespaced {
        &["Role", "ClusterRole"]
    } else {
        &["ClusterRole"]
    };
    if !kinds.contains(&kind) {
        causes.push(not_supported("roleRef.kind", kind, kinds));
    }
    let name = text_at(role_ref, "name");
    if name.is_empty() {
        causes.push(required("roleRef.name", ""));
    } else if let Some(bad) = meta::check_path_segment_name(name, "roleRef.name") {
        causes.push(bad);
    }
    for (i, subject) in binding
        .get("subjects")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        causes.extend(check_subject(
            subject,
            namespaced,
            &format!("subjects[{i}]"),
        ));
    }
    if let Some(old) = old {
        let old_ref = old.get("roleRef").unwrap_or(&Value::Null);
        if ["apiGroup", "kind", "name"]
            .iter()
            .any(|key| text_at(old_ref, key) != text_at(role_ref, key))
        {
            let value = format!(
                "rbac.RoleRef{{APIGroup:{}, Kind:{}, Name:{}}}",
                go_quote(api_group),
                go_quote(kind),
                go_quote(name)
            );
            causes.push(invalid_value("roleRef", &value, "cannot change roleRef"));
        }
    }
    causes
}

/// `ValidateRoleBindingSubject`.
fn check_subject(subject: &Value, namespaced: bool, path: &str) -> Vec<Cause> {
    let mut causes = Vec::new();
    let name = text_at(subject, "name");
    if name.is_empty() {
        causes.push(required(&format!("{path}.name"), ""));
    }
    let api_group = text_at(subject, "apiGroup");
    match text_at(subject, "kind") {
        "ServiceAccount" => {
            if !name.is_empty()
                && let Some(bad) = meta::check_subdomain(name, &format!("{path}.name"))
            {
                causes.push(bad);
            }
            if !api_group.is_empty() {
                causes.push(not_supported(&format!("{path}.apiGroup"), api_group, &[""]));
            }
            if !namespaced && text_at(subject, "namespace").is_empty() {
                causes.push(required(&format!("{path}.namespace"), ""));
            }
        }
        "User" | "Group" => {
            if api_group != RBAC_GROUP {
                causes.push(not_supported(
                    &format!("{path}.apiGroup"),
                    api_group,
                    &[RBAC_GROUP],
                ));
            }
        }
        other => causes.push(not_supported(
            &format!("{path}.kind"),
            other,
            &["ServiceAccount", "User", "Group"],
        )),
    }
    causes
}

// ---------------------------------------------------------------------------------------------
// Services

/// The cluster's service CIDR (kubeadm's default is 10.96.0.0/12; a /16 is plenty here).
const SERVICE_NETWORK: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 0);
const SERVICE_PREFIX: u32 = 16;
const SERVICE_CIDR: &str = "10.96.0.0/16";
/// The start of the range's lower band, reserved for addresses chosen by users: dynamic
/// allocation takes the upper band first (the API server's `ServiceIPStaticSubrange`).
const STATIC_CLUSTER_IPS: u32 = 256;
const NODE_PORTS: std::ops::RangeInclusive<u64> = 30000..=32767;
/// The same split for node ports (`ServiceNodePortStaticSubrange`): min(max(16, 2768/32), 128).
const STATIC_NODE_PORTS: u64 = 86;

/// What the other Services already hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Allocated {
    pub cluster_ips: BTreeSet<String>,
    pub node_ports: BTreeSet<u64>,
}

impl Allocated {
    /// What `services` hold.
    pub fn by<'a>(services: impl Iterator<Item = &'a Value>) -> Allocated {
        let mut allocated = Allocated::default();
        for service in services {
            let spec = service.get("spec").unwrap_or(&Value::Null);
            for ip in strings_at(spec, "clusterIPs") {
                if ip != "None" {
                    allocated.cluster_ips.insert(ip);
                }
            }
            for port in spec
                .get("ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(node_port) = port.get("nodePort").and_then(Value::as_u64) {
                    allocated.node_ports.insert(node_port);
                }
            }
        }
        allocated
    }
}

fn service_type(spec: &Value) -> &str {
    text_at(spec, "type")
}

fn needs_cluster_ip(spec: &Value) -> bool {
    service_type(spec) != "ExternalName"
}

fn needs_node_ports(spec: &Value) -> bool {
    match service_type(spec) {
        "NodePort" => true,
        "LoadBalancer" => spec.get("allocateLoadBalancerNodePorts") != Some(&json!(false)),
        _ => false,
    }
}

/// Defaulting, allocation and validation of a Service (`SetDefaults_Service`, the Service
/// REST storage's IP and port allocators, `ValidateService`). `allocated` is what the other
/// Services hold.
pub fn prepare_service(
    service: &mut Value,
    old: Option<&Value>,
    allocated: &Allocated,
) -> Result<(), ApiError> {
    let name = service
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let fail = |causes: Vec<Cause>| ApiError::invalid("Service", "", &name, &causes);
    if !service.get("spec").is_some_and(Value::is_object) {
        service["spec"] = json!({});
    }
    if old.is_none() {
        service["status"] = json!({"loadBalancer": {}});
    }
    let old_spec = old.and_then(|o| o.get("spec")).filter(|s| s.is_object());
    let spec = &mut service["spec"];
    default_service(spec);
    match old_spec {
        Some(old_spec) => keep_allocated_values(spec, old_spec),
        // A client that sets only the singular field means the plural too.
        None => {
            let ip = text_at(spec, "clusterIP").to_owned();
            if !ip.is_empty() && strings_at(spec, "clusterIPs").is_empty() {
                spec["clusterIPs"] = json!([ip]);
            }
        }
    }
    let causes = check_service(spec, old_spec);
    if !causes.is_empty() {
        return Err(fail(causes));
    }
    allocate_cluster_ip(spec, old_spec, allocated).map_err(|c| fail(vec![c]))?;
    allocate_node_ports(spec, old_spec, allocated).map_err(|c| fail(vec![c]))?;
    Ok(())
}

/// `SetDefaults_Service`, and the IP family fields a single-stack IPv4 cluster sets.
fn default_service(spec: &mut Value) {
    let map = spec.as_object_mut().expect("made an object");
    map.entry("type").or_insert(json!("ClusterIP"));
    map.entry("sessionAffinity").or_insert(json!("None"));
    let type_ = map["type"].as_str().unwrap_or_default().to_owned();
    let has_external_ips = map
        .get("externalIPs")
        .and_then(Value::as_array)
        .is_some_and(|ips| !ips.is_empty());
    for port in map
        .get_mut("ports")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object_mut)
    {
        port.entry("protocol").or_insert(json!("TCP"));
        let unset = match port.get("targetPort") {
            None | Some(Value::Null) => true,
            Some(target) => target == 0 || target == "",
        };
        if unset && let Some(number) = port.get("port").cloned() {
            port.insert("targetPort".into(), number);
        }
    }
    let externally_accessible = matches!(type_.as_str(), "NodePort" | "LoadBalancer")
        || (type_ == "ClusterIP" && has_external_ips);
    if externally_accessible {
        map.entry("externalTrafficPolicy")
            .or_insert(json!("Cluster"));
    }
    if matches!(type_.as_str(), "ClusterIP" | "NodePort" | "LoadBalancer") {
        map.entry("internalTrafficPolicy")
            .or_insert(json!("Cluster"));
    }
    if type_ == "LoadBalancer" {
        map.entry("allocateLoadBalancerNodePorts")
            .or_insert(json!(true));
    }
    if type_ == "ExternalName" {
        // These do not apply, and are wiped when a Service becomes an ExternalName.
        for field in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
            map.remove(field);
        }
    } else {
        let headless_without_selector = map.get("clusterIP") == Some(&json!("None"))
            && map
                .get("selector")
                .and_then(Value::as_object)
                .is_none_or(Map::is_empty);
        map.entry("ipFamilyPolicy")
            .or_insert(json!(if headless_without_selector {
                "RequireDualStack"
            } else {
                "SingleStack"
            }));
        map.entry("ipFamilies").or_insert(json!(["IPv4"]));
    }
    if type_ != "NodePort" && type_ != "LoadBalancer" {
        for port in map
            .get_mut("ports")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
            .filter_map(Value::as_object_mut)
        {
            port.remove("nodePort");
        }
    }
}

/// `patchAllocatedValues` and `NormalizeClusterIPs` on update: a client that leaves out what
/// the server allocated (kubectl apply, a PUT of the manifest) keeps it.
fn keep_allocated_values(spec: &mut Value, old: &Value) {
    if needs_cluster_ip(spec) && needs_cluster_ip(old) {
        if text_at(spec, "clusterIP").is_empty() {
            spec["clusterIP"] = json!(text_at(old, "clusterIP"));
        }
        if strings_at(spec, "clusterIPs").is_empty() && !strings_at(old, "clusterIPs").is_empty() {
            spec["clusterIPs"] = old["clusterIPs"].clone();
        }
        // A changed singular field with the plural left as it was changes both.
        if text_at(spec, "clusterIP") != text_at(old, "clusterIP")
            && strings_at(spec, "clusterIPs") == strings_at(old, "clusterIPs")
        {
            spec["clusterIPs"] = json!([text_at(spec, "clusterIP")]);
        }
    }
    if needs_node_ports(spec) && needs_node_ports(old) {
        let key = |port: &Value| (port.get("port").cloned(), port.get("protocol").cloned());
        let old_ports: Vec<(_, u64)> = old
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|p| Some((key(p), p.get("nodePort")?.as_u64()?)))
            .collect();
        for port in spec
            .get_mut("ports")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if port.get("nodePort").is_none()
                && let Some((_, node_port)) = old_ports.iter().find(|(k, _)| *k == key(port))
            {
                port["nodePort"] = json!(node_port);
            }
        }
    }
}

/// What `ValidateService` checks that a manifest is likely to get wrong.
fn check_service(spec: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut causes = Vec::new();
    let type_ = service_type(spec);
    const TYPES: [&str; 4] = ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
    if !TYPES.contains(&type_) {
        causes.push(not_supported("spec.type", type_, &TYPES));
    }
    let headless = text_at(spec, "clusterIP") == "None";
    let ports = spec
        .get("ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if ports.is_empty() && type_ != "ExternalName" && !headless {
        causes.push(required("spec.ports", ""));
    }
    for (i, port) in ports.iter().enumerate() {
        if ports.len() > 1 && text_at(port, "name").is_empty() {
            causes.push(required(&format!("spec.ports[{i}].name"), ""));
        }
        let number = port.get("port").and_then(Value::as_i64).unwrap_or(0);
        if !(1..=65535).contains(&number) {
            causes.push(invalid_value(
                &format!("spec.ports[{i}].port"),
                &number.to_string(),
                "must be between 1 and 65535, inclusive",
            ));
        }
    }
    let ips = strings_at(spec, "clusterIPs");
    let ip = text_at(spec, "clusterIP");
    if !ip.is_empty() && ips.first().is_some_and(|first| first != ip) {
        causes.push(invalid_value(
            "spec.clusterIPs",
            &go_string_slice(&ips),
            "first value must match `clusterIP`",
        ));
    }
    if ip.is_empty() && !ips.is_empty() && type_ != "ExternalName" {
        causes.push(invalid_value(
            "spec.clusterIPs",
            &go_string_slice(&ips),
            "must be empty when `clusterIP` is not specified",
        ));
    }
    // Allocated addresses stay (unless the Service becomes or stops being an ExternalName).
    if let Some(old) = old
        && needs_cluster_ip(spec)
        && needs_cluster_ip(old)
    {
        let old_ips = strings_at(old, "clusterIPs");
        let both_headless = old_ips.first().is_some_and(|ip| ip == "None") && headless;
        if !both_headless && !old_ips.is_empty() && ips.first() != old_ips.first() {
            causes.push(invalid_value(
                "spec.clusterIPs[0]",
                &go_string_slice(&ips),
                "may not change once set",
            ));
        }
    }
    causes
}

fn in_service_network(ip: Ipv4Addr) -> bool {
    let mask = u32::MAX << (32 - SERVICE_PREFIX);
    let network = u32::from(SERVICE_NETWORK);
    let address = u32::from(ip);
    // The network and broadcast addresses are never handed out.
    address & mask == network && address != network && address != network | !mask
}

/// Assigns a cluster IP when none was asked for; checks the one asked for otherwise.
fn allocate_cluster_ip(
    spec: &mut Value,
    old: Option<&Value>,
    allocated: &Allocated,
) -> Result<(), Cause> {
    if !needs_cluster_ip(spec) {
        return Ok(());
    }
    let requested = text_at(spec, "clusterIP").to_owned();
    if requested == "None" {
        spec["clusterIPs"] = json!(["None"]);
        return Ok(());
    }
    if requested.is_empty() {
        let size = 1u32 << (32 - SERVICE_PREFIX);
        let network = u32::from(SERVICE_NETWORK);
        let free = (STATIC_CLUSTER_IPS..size - 1)
            .chain(1..STATIC_CLUSTER_IPS)
            .map(|offset| Ipv4Addr::from(network + offset).to_string())
            .find(|ip| !allocated.cluster_ips.contains(ip));
        let Some(ip) = free else {
            return Err(cause(
                "InternalError",
                "spec.clusterIPs",
                "Internal error occurred: failed to allocate a serviceIP: range is full".into(),
            ));
        };
        spec["clusterIP"] = json!(ip);
        spec["clusterIPs"] = json!([ip]);
        return Ok(());
    }
    let kept = old.is_some_and(|old| text_at(old, "clusterIP") == requested);
    if kept {
        return Ok(());
    }
    let ips = strings_at(spec, "clusterIPs");
    let failed = |why: String| {
        invalid_value(
            "spec.clusterIPs",
            &go_string_slice(&ips),
            &format!("failed to allocate IP {requested}: {why}"),
        )
    };
    let Ok(address) = requested.parse::<Ipv4Addr>() else {
        return Err(invalid_value(
            "spec.clusterIPs[0]",
            &go_quote(&requested),
            "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
        ));
    };
    if !in_service_network(address) {
        return Err(failed(format!(
            "the provided IP ({requested}) is not in the valid range. The range of valid IPs is {SERVICE_CIDR}"
        )));
    }
    if allocated.cluster_ips.contains(&requested) {
        return Err(failed("provided IP is already allocated".to_owned()));
    }
    Ok(())
}

/// Assigns node ports to the ports of NodePort and LoadBalancer Services that have none;
/// checks the ones asked for.
fn allocate_node_ports(
    spec: &mut Value,
    old: Option<&Value>,
    allocated: &Allocated,
) -> Result<(), Cause> {
    if !needs_node_ports(spec) {
        return Ok(());
    }
    let held: BTreeSet<u64> = old
        .and_then(|o| o.get("ports"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("nodePort").and_then(Value::as_u64))
        .collect();
    let mut taken = allocated.node_ports.clone();
    let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) else {
        return Ok(());
    };
    for (i, port) in ports.iter_mut().enumerate() {
        if let Some(requested) = port.get("nodePort").and_then(Value::as_u64) {
            if held.contains(&requested) {
                taken.insert(requested);
                continue;
            }
            let field = format!("spec.ports[{i}].nodePort");
            if !NODE_PORTS.contains(&requested) {
                return Err(invalid_value(
                    &field,
                    &requested.to_string(),
                    &format!(
                        "provided port is not in the valid range. The range of valid ports is {}-{}",
                        NODE_PORTS.start(),
                        NODE_PORTS.end()
                    ),
                ));
            }
            if !taken.insert(requested) {
                return Err(invalid_value(
                    &field,
                    &requested.to_string(),
                    "provided port is already allocated",
                ));
            }
        }
    }
    for port in ports.iter_mut() {
        if port.get("nodePort").is_some() {
            continue;
        }
        let dynamic = NODE_PORTS.start() + STATIC_NODE_PORTS..=*NODE_PORTS.end();
        let static_band = *NODE_PORTS.start()..NODE_PORTS.start() + STATIC_NODE_PORTS;
        let Some(free) = dynamic.chain(static_band).find(|p| !taken.contains(p)) else {
            return Err(cause(
                "InternalError",
                "spec.ports",
                "Internal error occurred: failed to allocate a nodePort: range is full".into(),
            ));
        };
        taken.insert(free);
        port["nodePort"] = json!(free);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Events (`pkg/apis/core/validation/events.go`)

const REPORTING_INSTANCE_LENGTH_LIMIT: usize = 128;
const ACTION_LENGTH_LIMIT: usize = 128;
const REASON_LENGTH_LIMIT: usize = 128;
const NOTE_LENGTH_LIMIT: usize = 1024;

/// `ValidateEventCreate` / `ValidateEventUpdate`. Both APIs validate the one internal (core)
/// Event, so the checks run on the stored form and name its fields; a write through
/// events.k8s.io/v1 (`strict`) is held to the new API's rules, a core/v1 write only to the
/// legacy ones.
fn check_event(object: &Value, old: Option<&Value>, strict: bool) -> Vec<Cause> {
    let event = convert::to_storage(object.clone());
    let mut causes = legacy_event_causes(&event, strict);
    if !strict {
        return causes;
    }
    let unset = |field: &str| invalid_value(field, "\"\"", "needs to be unset");
    match old {
        None => {
            causes.extend(event_series_causes(&event));
            if event.get("eventTime").is_none() {
                causes.push(required("eventTime", ""));
            }
            let kind = text_at(&event, "type");
            if kind != "Normal" && kind != "Warning" {
                causes.push(invalid_value(
                    "type",
                    "\"\"",
                    &format!("has invalid value: {kind}"),
                ));
            }
            for (core, field) in [
                ("firstTimestamp", "deprecatedFirstTimestamp"),
                ("lastTimestamp", "deprecatedLastTimestamp"),
                ("count", "deprecatedCount"),
                ("source", "deprecatedSource"),
            ] {
                if event.get(core).is_some() {
                    causes.push(unset(field));
                }
            }
        }
        Some(old) => {
            let old = convert::to_storage(old.clone());
            if event.get("series") != old.get("series") {
                causes.extend(event_series_causes(&event));
            }
            for field in [
                "involvedObject",
                "reason",
                "message",
                "source",
                "firstTimestamp",
                "lastTimestamp",
                "count",
                "type",
                "eventTime",
                "action",
                "related",
                "reportingComponent",
                "reportingInstance",
            ] {
                let new_value = event.get(field);
                if new_value != old.get(field) {
                    let shown = match new_value {
                        Some(Value::String(text)) => go_quote(text),
                        Some(value) => value.to_string(),
                        None => "\"\"".to_owned(),
                    };
                    causes.push(invalid_value(
                        immutable_event_field_path(field),
                        &shown,
                        "field is immutable",
                    ));
                }
            }
        }
    }
    causes
}

/// The path `ValidateEventUpdate` reports an immutable field under (the internal names, except
/// the reporting controller's).
fn immutable_event_field_path(field: &str) -> &str {
    match field {
        "reportingComponent" => "reportingController",
        other => other,
    }
}

/// `validateV1EventSeries`.
fn event_series_causes(event: &Value) -> Vec<Cause> {
    let Some(series) = event.get("series") else {
        return Vec::new();
    };
    let mut causes = Vec::new();
    if series.get("count").and_then(Value::as_i64).unwrap_or(0) < 2 {
        causes.push(invalid_value(
            "series.count",
            "\"\"",
            "should be at least 2",
        ));
    }
    if series.get("lastObservedTime").is_none_or(Value::is_null) {
        causes.push(required("series.lastObservedTime", ""));
    }
    causes
}

/// `legacyValidateEvent`: an Event with an `eventTime` (a "new" Event, whichever API wrote it)
/// must name its reporter and action and keep its texts short; one without only has to sit
/// in its object's namespace.
fn legacy_event_causes(event: &Value, strict: bool) -> Vec<Cause> {
    let mut causes = Vec::new();
    let namespace = event
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let involved_namespace = event
        .pointer("/involvedObject/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mismatch = || {
        invalid_value(
            "involvedObject.namespace",
            &go_quote(involved_namespace),
            "does not match event.namespace",
        )
    };
    if event.get("eventTime").is_none() {
        let matches = if involved_namespace.is_empty() {
            namespace.is_empty() || namespace == "default"
        } else {
            namespace == involved_namespace
        };
        if !matches {
            causes.push(mismatch());
        }
        return causes;
    }
    if involved_namespace.is_empty() && namespace != "default" && namespace != "kube-system" {
        causes.push(mismatch());
    }
    let controller_field = if strict {
        "reportingController"
    } else {
        "reportingComponent"
    };
    let controller = text_at(event, "reportingComponent");
    if controller.is_empty() {
        causes.push(required(controller_field, ""));
    }
    if !meta::qualified_name_ok(controller) {
        causes.push(invalid_value(
            controller_field,
            &go_quote(controller),
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')",
        ));
    }
    let mut limited = |field: &str, path: &str, limit: usize, needed: bool| {
        let text = text_at(event, field);
        if needed && text.is_empty() {
            causes.push(required(path, ""));
        }
        if text.len() > limit {
            causes.push(invalid_value(
                path,
                "\"\"",
                &format!("can have at most {limit} characters"),
            ));
        }
    };
    limited(
        "reportingInstance",
        "reportingInstance",
        REPORTING_INSTANCE_LENGTH_LIMIT,
        true,
    );
    limited("action", "action", ACTION_LENGTH_LIMIT, true);
    limited("reason", "reason", REASON_LENGTH_LIMIT, true);
    limited("message", "message", NOTE_LENGTH_LIMIT, false);
    causes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pods_spec_changes_only_where_the_api_allows() {
        let pod = |node: &str, image: &str, tolerations: Value, env: Value| {
            json!({"spec": {"nodeName": node, "tolerations": tolerations,
                "containers": [{"name": "c", "image": image, "env": env}]}})
        };
        let old = pod("n", "a:1", json!([{"key": "k"}]), json!([]));
        assert!(
            check_pod_update(
                &pod("n", "a:2", json!([{"key": "k"}, {"key": "l"}]), json!([])),
                &old
            )
            .is_empty()
        );
        for changed in [
            pod("n", "a:1", json!([]), json!([])),
            pod("n", "a:1", json!([{"key": "k"}]), json!([{"name": "E"}])),
            pod("m", "a:1", json!([{"key": "k"}]), json!([])),
        ] {
            assert_eq!(check_pod_update(&changed, &old).len(), 1, "{changed}");
        }
        // An empty list reads as no list.
        let mut unset = pod("n", "a:1", json!([{"key": "k"}]), json!([]));
        unset["spec"]["containers"][0]
            .as_object_mut()
            .unwrap()
            .remove("env");
        assert!(check_pod_update(&unset, &old).is_empty());
        let unbound = pod("", "a:1", json!([]), json!([]));
        assert!(check_pod_update(&pod("n", "a:1", json!([]), json!([])), &unbound).is_empty());
    }

    #[test]
    fn leases_have_a_positive_duration() {
        assert!(check_lease(&json!({"spec": {"holderIdentity": "a", "leaseDurationSeconds": 15, "leaseTransitions": 0}})).is_empty());
        assert_eq!(
            check_lease(&json!({"spec": {"leaseDurationSeconds": 0}}))[0].field,
            "spec.leaseDurationSeconds"
        );
        assert_eq!(
            check_lease(&json!({"spec": {"leaseTransitions": -1}}))[0].field,
            "spec.leaseTransitions"
        );
        assert_eq!(
            check_lease(&json!({"spec": {"preferredHolder": "b"}}))[0].field,
            "spec.preferredHolder"
        );
    }

    #[test]
    fn config_maps_hold_config_keys_and_at_most_a_mebibyte() {
        assert!(check_config_map(&json!({"data": {"pfs.conf": "x", "a-b_c": ""}})).is_empty());
        let bad_key = check_config_map(&json!({"data": {"a/b": "x"}}));
        assert_eq!(bad_key[0].field, "data[a/b]");
        let big = "x".repeat(600 * 1024);
        let too_big = check_config_map(&json!({"data": {"a": big, "b": big}}));
        assert_eq!(
            too_big[0].message,
            "Too long: must have at most 1048576 bytes"
        );
    }

    #[test]
    fn pod_resources_parse_and_requests_stay_within_limits() {
        const NANO: i128 = 1_000_000_000;
        assert_eq!(quantity("4Gi"), Some(4 * (1 << 30) * NANO));
        assert_eq!(quantity("500m"), Some(NANO / 2));
        assert_eq!(quantity("1e3"), Some(1000 * NANO));
        assert_eq!(quantity("2"), Some(2 * NANO));
        assert_eq!(
            quantity("0.7"),
            quantity("700m"),
            "exact, not floating point"
        );
        assert_eq!(quantity("1.5Gi"), Some(3 * (1 << 29) * NANO));
        assert_eq!(quantity("4GB"), None);
        assert_eq!(quantity("."), None);
        let pod = |requests: Value, limits: Value| json!({"spec": {"containers": [{"name": "c", "resources": {"requests": requests, "limits": limits}}]}});
        assert!(
            check_pod_resources(&pod(
                json!({"memory": "1Gi", "cpu": "500m"}),
                json!({"memory": "1Gi", "cpu": 1})
            ))
            .unwrap()
            .is_empty()
        );
        let causes =
            check_pod_resources(&pod(json!({"memory": "8Gi"}), json!({"memory": "4Gi"}))).unwrap();
        assert_eq!(causes.len(), 1);
        assert_eq!(causes[0].field, "spec.containers[0].resources.requests");
        assert_eq!(
            causes[0].message,
            "Invalid value: \"8Gi\": must be less than or equal to memory limit of 4Gi"
        );
        let error = check_pod_resources(&pod(json!({"memory": "4GB"}), json!({}))).unwrap_err();
        assert_eq!(error.code, 400);
        assert!(
            error.message.contains("quantities must match"),
            "{}",
            error.message
        );
    }
    /// The tolerations `ValidateTolerations` takes and those it refuses, with its messages.
    #[test]
    fn pod_tolerations_are_validated_as_the_api_server_does() {
        let pod = |toleration: Value| json!({"spec": {"tolerations": [toleration]}});
        for fine in [
            json!({"key": "dedicated", "operator": "Equal", "value": "storage", "effect": "NoSchedule"}),
            json!({"key": "dedicated", "value": "storage"}),
            json!({"operator": "Exists"}),
            json!({"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30}),
        ] {
            assert!(
                check_pod_tolerations(&pod(fine.clone())).is_empty(),
                "{fine}"
            );
        }
        for (bad, field, message) in [
            (
                json!({"key": "a", "operator": "In"}),
                "spec.tolerations[0].operator",
                "Unsupported value: \"In\": supported values: \"Equal\", \"Exists\"",
            ),
            (
                json!({"key": "a", "effect": "NoRun"}),
                "spec.tolerations[0].effect",
                "Unsupported value: \"NoRun\": supported values: \"NoExecute\", \"NoSchedule\", \"PreferNoSchedule\"",
            ),
            (
                json!({"value": "x"}),
                "spec.tolerations[0].operator",
                "Invalid value: \"\": operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
            ),
            (
                json!({"key": "a", "operator": "Exists", "value": "x"}),
                "spec.tolerations[0].operator",
                "value must be empty when `operator` is 'Exists'",
            ),
            (
                json!({"key": "a", "effect": "NoSchedule", "tolerationSeconds": 5}),
                "spec.tolerations[0].effect",
                "Invalid value: \"NoSchedule\": effect must be 'NoExecute' when `tolerationSeconds` is set",
            ),
            (
                json!({"key": "bad key"}),
                "spec.tolerations[0].key",
                "Invalid value: \"bad key\": name part must consist of",
            ),
            (
                json!({"key": "a", "value": "x y"}),
                "spec.tolerations[0].operator",
                "Invalid value: \"x y\": a valid label must be",
            ),
        ] {
            let causes = check_pod_tolerations(&pod(bad.clone()));
            assert_eq!(causes.len(), 1, "{bad}: {causes:?}");
            assert_eq!(causes[0].field, field, "{bad}");
            assert!(
                causes[0].message.contains(message),
                "{bad}: {}",
                causes[0].message
            );
        }
    }

    use crate::resources::builtins;

    fn rt(kind: &str) -> ResourceType {
        builtins().into_iter().find(|r| r.kind == kind).unwrap()
    }

    fn messages(error: ApiError) -> String {
        error.message
    }

    #[test]
    fn names_by_kind() {
        assert!(check_name(&rt("Service"), "1svc").is_some(), "DNS-1035");
        assert!(check_name(&rt("ConfigMap"), "1cm").is_none());
        assert!(check_name(&rt("ClusterRole"), "system:pureflash:operator").is_none());
        assert!(check_name(&rt("ConfigMap"), "system:x").is_some());
    }

    #[test]
    fn services_get_defaults_and_a_cluster_ip() {
        let mut service = json!({"metadata": {"name": "metrics"}, "spec": {"selector": {"app": "op"}, "ports": [{"port": 8080}]}});
        prepare_service(&mut service, None, &Allocated::default()).unwrap();
        let spec = &service["spec"];
        assert_eq!(spec["type"], "ClusterIP");
        assert_eq!(spec["clusterIP"], "10.96.1.0");
        assert_eq!(spec["clusterIPs"], json!(["10.96.1.0"]));
        assert_eq!(
            spec["ports"],
            json!([{"port": 8080, "protocol": "TCP", "targetPort": 8080}])
        );
        assert_eq!(
            (
                &spec["sessionAffinity"],
                &spec["ipFamilyPolicy"],
                &spec["ipFamilies"],
                &spec["internalTrafficPolicy"]
            ),
            (
                &json!("None"),
                &json!("SingleStack"),
                &json!(["IPv4"]),
                &json!("Cluster")
            )
        );
        assert_eq!(service["status"], json!({"loadBalancer": {}}));

        // The next Service gets the next free address.
        let allocated = Allocated::by([&service].into_iter());
        let mut second = json!({"metadata": {"name": "web"}, "spec": {"ports": [{"port": 80, "targetPort": "http"}]}});
        prepare_service(&mut second, None, &allocated).unwrap();
        assert_eq!(second["spec"]["clusterIP"], "10.96.1.1");
        assert_eq!(second["spec"]["ports"][0]["targetPort"], "http");

        // Headless services keep "None".
        let mut headless = json!({"metadata": {"name": "peers"}, "spec": {"clusterIP": "None", "selector": {"app": "pfs"}}});
        prepare_service(&mut headless, None, &allocated).unwrap();
        assert_eq!(headless["spec"]["clusterIPs"], json!(["None"]));
    }

    #[test]
    fn requested_cluster_ips_are_checked() {
        let taken = Allocated {
            cluster_ips: BTreeSet::from(["10.96.0.10".to_owned()]),
            node_ports: BTreeSet::new(),
        };
        let mut dns = json!({"metadata": {"name": "dns"}, "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 53}]}});
        assert_eq!(
            messages(prepare_service(&mut dns, None, &taken).unwrap_err()),
            "Service \"dns\" is invalid: spec.clusterIPs: Invalid value: []string{\"10.96.0.10\"}: failed to allocate IP 10.96.0.10: provided IP is already allocated"
        );
        let mut outside = json!({"metadata": {"name": "dns"}, "spec": {"clusterIP": "10.97.0.1", "ports": [{"port": 53}]}});
        assert!(
            messages(prepare_service(&mut outside, None, &taken).unwrap_err())
                .contains("is not in the valid range")
        );
        let mut chosen = json!({"metadata": {"name": "dns"}, "spec": {"clusterIP": "10.96.0.11", "ports": [{"port": 53}]}});
        prepare_service(&mut chosen, None, &taken).unwrap();
        assert_eq!(chosen["spec"]["clusterIPs"], json!(["10.96.0.11"]));
    }

    #[test]
    fn updates_keep_allocated_values_and_may_not_change_them() {
        let mut service = json!({"metadata": {"name": "web"}, "spec": {"type": "NodePort", "ports": [{"port": 80}]}});
        prepare_service(&mut service, None, &Allocated::default()).unwrap();
        assert_eq!(service["spec"]["ports"][0]["nodePort"], 30086);
        // The manifest applied again, without what the server allocated.
        let mut again = json!({"metadata": {"name": "web"}, "spec": {"type": "NodePort", "ports": [{"port": 80}]}});
        prepare_service(&mut again, Some(&service), &Allocated::default()).unwrap();
        assert_eq!(again["spec"]["clusterIP"], service["spec"]["clusterIP"]);
        assert_eq!(again["spec"]["clusterIPs"], service["spec"]["clusterIPs"]);
        assert_eq!(again["spec"]["ports"][0]["nodePort"], 30086);
        let mut moved = again.clone();
        moved["spec"]["clusterIP"] = json!("10.96.0.99");
        assert_eq!(
            messages(
                prepare_service(&mut moved, Some(&service), &Allocated::default()).unwrap_err()
            ),
            "Service \"web\" is invalid: spec.clusterIPs[0]: Invalid value: []string{\"10.96.0.99\"}: may not change once set"
        );
        // Back to ClusterIP: node ports go.
        let mut cluster_ip = again.clone();
        cluster_ip["spec"]["type"] = json!("ClusterIP");
        prepare_service(&mut cluster_ip, Some(&again), &Allocated::default()).unwrap();
        assert!(cluster_ip["spec"]["ports"][0].get("nodePort").is_none());
    }

    #[test]
    fn cluster_ip_fields_must_agree() {
        let mut mismatched = json!({"metadata": {"name": "x"}, "spec": {"clusterIP": "10.96.0.5", "clusterIPs": ["10.96.0.6"], "ports": [{"port": 80}]}});
        assert_eq!(
            messages(prepare_service(&mut mismatched, None, &Allocated::default()).unwrap_err()),
            "Service \"x\" is invalid: spec.clusterIPs: Invalid value: []string{\"10.96.0.6\"}: first value must match `clusterIP`"
        );
        let mut plural_only = json!({"metadata": {"name": "x"}, "spec": {"clusterIPs": ["10.96.0.6"], "ports": [{"port": 80}]}});
        assert!(
            messages(prepare_service(&mut plural_only, None, &Allocated::default()).unwrap_err())
                .ends_with("must be empty when `clusterIP` is not specified")
        );
    }

    #[test]
    fn service_validation() {
        let mut no_ports = json!({"metadata": {"name": "x"}, "spec": {}});
        assert_eq!(
            messages(prepare_service(&mut no_ports, None, &Allocated::default()).unwrap_err()),
            "Service \"x\" is invalid: spec.ports: Required value"
        );
        let mut unnamed = json!({"metadata": {"name": "x"}, "spec": {"type": "Weird", "ports": [{"port": 80}, {"port": 0, "name": "b"}]}});
        let message =
            messages(prepare_service(&mut unnamed, None, &Allocated::default()).unwrap_err());
        assert!(message.contains("spec.type: Unsupported value: \"Weird\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\""), "{message}");
        assert!(
            message.contains("spec.ports[0].name: Required value"),
            "{message}"
        );
        assert!(
            message.contains(
                "spec.ports[1].port: Invalid value: 0: must be between 1 and 65535, inclusive"
            ),
            "{message}"
        );
    }

    fn deployment(selector: Value, labels: Value) -> Value {
        json!({"metadata": {"name": "op"}, "spec": {"selector": selector, "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "op", "image": "op:1"}]}}}})
    }

    #[test]
    fn deployments_are_defaulted_and_their_selector_checked() {
        let mut good = deployment(
            json!({"matchLabels": {"app": "op"}}),
            json!({"app": "op", "x": "y"}),
        );
        prepare(&rt("Deployment"), &mut good, None).unwrap();
        assert_eq!(good["spec"]["replicas"], 1);
        assert_eq!(
            good["spec"]["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
        );
        assert_eq!(good["spec"]["template"]["spec"]["restartPolicy"], "Always");
        assert_eq!(
            good["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"],
            "IfNotPresent"
        );
        assert_eq!(good["status"], json!({}));

        let mut mismatch = deployment(
            json!({"matchLabels": {"app": "op"}}),
            json!({"app": "other"}),
        );
        assert_eq!(
            messages(prepare(&rt("Deployment"), &mut mismatch, None).unwrap_err()),
            "Deployment.apps \"op\" is invalid: spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"other\"}: `selector` does not match template `labels`"
        );
        let mut empty = deployment(json!({}), json!({"app": "op"}));
        assert_eq!(
            messages(prepare(&rt("Deployment"), &mut empty, None).unwrap_err()),
            "Deployment.apps \"op\" is invalid: spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string(nil), MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: empty selector is invalid for deployment"
        );
        let mut missing = deployment(Value::Null, json!({"app": "op"}));
        missing["spec"].as_object_mut().unwrap().remove("selector");
        missing["spec"]["template"]["spec"]["containers"] = json!([]);
        assert_eq!(
            messages(prepare(&rt("Deployment"), &mut missing, None).unwrap_err()),
            "Deployment.apps \"op\" is invalid: [spec.selector: Required value, spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"op\"}: `selector` does not match template `labels`, spec.template.spec.containers: Required value]"
        );
        let mut expressions = deployment(
            json!({"matchExpressions": [{"key": "app", "operator": "In", "values": ["op", "operator"]}]}),
            json!({"app": "operator"}),
        );
        prepare(&rt("Deployment"), &mut expressions, None).unwrap();
    }

    fn stateful_set(spec: Value) -> Value {
        let mut set = json!({"metadata": {"name": "pfs"}, "spec": {
            "selector": {"matchLabels": {"app": "pfs"}},
            "template": {"metadata": {"labels": {"app": "pfs"}}, "spec": {"containers": [{"name": "pfs", "image": "pfs:1"}]}},
        }});
        for (key, value) in spec.as_object().unwrap() {
            set["spec"][key] = value.clone();
        }
        set
    }

    #[test]
    fn stateful_sets_get_the_api_servers_defaults() {
        let mut set = stateful_set(json!({
            "serviceName": "pfs",
            "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}],
        }));
        prepare(&rt("StatefulSet"), &mut set, None).unwrap();
        let spec = &set["spec"];
        assert_eq!(
            (
                &spec["replicas"],
                &spec["revisionHistoryLimit"],
                &spec["podManagementPolicy"]
            ),
            (&json!(1), &json!(10), &json!("OrderedReady"))
        );
        assert_eq!(
            spec["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
        );
        assert_eq!(
            spec["persistentVolumeClaimRetentionPolicy"],
            json!({"whenDeleted": "Retain", "whenScaled": "Retain"})
        );
        assert_eq!(spec["template"]["spec"]["restartPolicy"], "Always");
        assert_eq!(
            spec["template"]["spec"]["containers"][0]["imagePullPolicy"],
            "IfNotPresent"
        );
        assert_eq!(
            spec["volumeClaimTemplates"],
            json!([{"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data"},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}, "volumeMode": "Filesystem"},
                    "status": {"phase": "Pending"}}])
        );
        assert_eq!(
            set["status"],
            json!({"replicas": 0, "availableReplicas": 0})
        );

        // What is given stays; an explicit RollingUpdate without parameters gets none.
        let mut given = stateful_set(json!({
            "replicas": 0, "podManagementPolicy": "Parallel",
            "updateStrategy": {"type": "RollingUpdate"},
            "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Delete"},
        }));
        prepare(&rt("StatefulSet"), &mut given, None).unwrap();
        assert_eq!(given["spec"]["replicas"], 0);
        assert_eq!(given["spec"]["podManagementPolicy"], "Parallel");
        assert_eq!(
            given["spec"]["updateStrategy"],
            json!({"type": "RollingUpdate"})
        );
        assert_eq!(
            given["spec"]["persistentVolumeClaimRetentionPolicy"],
            json!({"whenDeleted": "Delete", "whenScaled": "Retain"})
        );
        let mut on_delete = stateful_set(json!({"updateStrategy": {"type": "OnDelete"}}));
        prepare(&rt("StatefulSet"), &mut on_delete, None).unwrap();
        assert_eq!(
            on_delete["spec"]["updateStrategy"],
            json!({"type": "OnDelete"})
        );
    }

    #[test]
    fn stateful_set_validation() {
        let check =
            |mut set: Value| messages(prepare(&rt("StatefulSet"), &mut set, None).unwrap_err());
        let mut mismatch = stateful_set(json!({}));
        mismatch["spec"]["template"]["metadata"]["labels"] = json!({"app": "other"});
        assert_eq!(
            check(mismatch),
            "StatefulSet.apps \"pfs\" is invalid: spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"other\"}: `selector` does not match template `labels`"
        );
        let mut no_selector = stateful_set(json!({}));
        no_selector["spec"]
            .as_object_mut()
            .unwrap()
            .remove("selector");
        no_selector["spec"]["template"]["spec"]["containers"] = json!([]);
        assert_eq!(
            check(no_selector),
            "StatefulSet.apps \"pfs\" is invalid: [spec.selector: Required value, spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"pfs\"}: `selector` does not match template `labels`, spec.template.spec.containers: Required value]"
        );
        assert_eq!(
            check(stateful_set(json!({"selector": {}}))),
            "StatefulSet.apps \"pfs\" is invalid: spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string(nil), MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: empty selector is invalid for statefulset"
        );
        let mut many = stateful_set(json!({
            "podManagementPolicy": "Ordered", "updateStrategy": {"type": "Rolling"},
            "persistentVolumeClaimRetentionPolicy": {"whenScaled": "Keep"},
            "serviceName": "PFS", "replicas": -1,
        }));
        many["spec"]["template"]["spec"]["restartPolicy"] = json!("OnFailure");
        assert_eq!(
            check(many),
            "StatefulSet.apps \"pfs\" is invalid: [spec.podManagementPolicy: Invalid value: \"Ordered\": must be 'OrderedReady' or 'Parallel', spec.updateStrategy: Invalid value: apps.StatefulSetUpdateStrategy{Type:\"Rolling\", RollingUpdate:(*apps.RollingUpdateStatefulSetStrategy)(nil)}: must be 'RollingUpdate' or 'OnDelete', spec.persistentVolumeClaimRetentionPolicy.whenScaled: Unsupported value: \"Keep\": supported values: \"Retain\", \"Delete\", spec.serviceName: Invalid value: \"PFS\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?'), spec.replicas: Invalid value: -1: must be greater than or equal to 0, spec.template.spec.restartPolicy: Unsupported value: \"OnFailure\": supported values: \"Always\"]"
        );
        assert_eq!(
            check(stateful_set(
                json!({"updateStrategy": {"type": "OnDelete", "rollingUpdate": {"partition": 2}}})
            )),
            "StatefulSet.apps \"pfs\" is invalid: spec.updateStrategy.rollingUpdate: Invalid value: apps.RollingUpdateStatefulSetStrategy{Partition:2, MaxUnavailable:(*intstr.IntOrString)(nil)}: only allowed for updateStrategy 'RollingUpdate'"
        );
        assert_eq!(
            check(stateful_set(
                json!({"updateStrategy": {"rollingUpdate": {"partition": -1}}})
            )),
            "StatefulSet.apps \"pfs\" is invalid: spec.updateStrategy.rollingUpdate.partition: Invalid value: -1: must be greater than or equal to 0"
        );
        // A name that is not a DNS label (its pods' host names would not be).
        assert!(check_name(&rt("StatefulSet"), "pfs.a").is_some());
        assert!(check_name(&rt("Deployment"), "pfs.a").is_none());
        // serviceName is optional.
        let mut headless = stateful_set(json!({}));
        prepare(&rt("StatefulSet"), &mut headless, None).unwrap();
        assert!(headless["spec"].get("serviceName").is_none());
    }

    #[test]
    fn stateful_set_updates_change_only_what_may_change() {
        let mut set = stateful_set(
            json!({"serviceName": "pfs", "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"]}}]}),
        );
        prepare(&rt("StatefulSet"), &mut set, None).unwrap();
        // The manifest again, without what the server defaulted; then scaled, re-templated.
        let mut again = stateful_set(
            json!({"serviceName": "pfs", "replicas": 3, "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"]}}]}),
        );
        again["spec"]["template"]["spec"]["containers"][0]["image"] = json!("pfs:2");
        again["spec"]["updateStrategy"] = json!({"type": "OnDelete"});
        again["spec"]["persistentVolumeClaimRetentionPolicy"] = json!({"whenDeleted": "Delete"});
        prepare(&rt("StatefulSet"), &mut again, Some(&set)).unwrap();
        let forbidden = "StatefulSet.apps \"pfs\" is invalid: spec: Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden";
        for (field, value) in [
            ("serviceName", json!("other")),
            ("podManagementPolicy", json!("Parallel")),
            ("selector", json!({"matchLabels": {"app": "pfs", "x": "y"}})),
            (
                "volumeClaimTemplates",
                json!([{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteMany"]}}]),
            ),
        ] {
            let mut changed = again.clone();
            changed["spec"][field] = value;
            if field == "selector" {
                changed["spec"]["template"]["metadata"]["labels"]["x"] = json!("y");
            }
            assert_eq!(
                messages(prepare(&rt("StatefulSet"), &mut changed, Some(&set)).unwrap_err()),
                forbidden,
                "{field}"
            );
        }
    }

    #[test]
    fn pod_disruption_budgets() {
        let mut budget = json!({"metadata": {"name": "pfs"}, "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "pfs"}}}});
        prepare(&rt("PodDisruptionBudget"), &mut budget, None).unwrap();
        assert_eq!(budget["status"]["disruptionsAllowed"], 0);
        budget["spec"]["maxUnavailable"] = json!("50%");
        let message = messages(
            prepare(&rt("PodDisruptionBudget"), &mut budget, Some(&json!({}))).unwrap_err(),
        );
        assert!(message.starts_with("PodDisruptionBudget.policy \"pfs\" is invalid: spec: Invalid value: policy.PodDisruptionBudgetSpec{MinAvailable:(*intstr.IntOrString)(0x"), "{message}");
        assert!(message.ends_with("UnhealthyPodEvictionPolicy:(*policy.UnhealthyPodEvictionPolicyType)(nil)}: minAvailable and maxUnavailable cannot be both set"), "{message}");

        // Neither: nothing is defaulted (policy/v1 has no defaulting for the spec); the
        // disruption controller then expects no Pod and allows nothing.
        let mut bare = json!({"metadata": {"name": "pfs"}, "spec": {"selector": {}}});
        prepare(&rt("PodDisruptionBudget"), &mut bare, None).unwrap();
        assert!(bare["spec"].get("minAvailable").is_none());

        let mut wrong = json!({"metadata": {"name": "pfs"}, "spec": {
            "maxUnavailable": "150%",
            "selector": {"matchExpressions": [{"key": "app", "operator": "Equals", "values": ["pfs"]}, {"key": "tier", "operator": "In"}]},
            "unhealthyPodEvictionPolicy": "Never",
        }});
        let message = messages(prepare(&rt("PodDisruptionBudget"), &mut wrong, None).unwrap_err());
        assert_eq!(
            message,
            "PodDisruptionBudget.policy \"pfs\" is invalid: [spec.maxUnavailable: Invalid value: intstr.IntOrString{Type:1, IntVal:0, StrVal:\"150%\"}: must not be greater than 100%, spec.selector.matchExpressions[0].operator: Invalid value: \"Equals\": not a valid selector operator, spec.selector.matchExpressions[1].values: Required value: must be specified when `operator` is 'In' or 'NotIn', spec.unhealthyPodEvictionPolicy: Unsupported value: \"Never\": supported values: \"AlwaysAllow\", \"IfHealthyBudget\"]"
        );
        let mut negative = json!({"metadata": {"name": "pfs"}, "spec": {"minAvailable": -1}});
        let message =
            messages(prepare(&rt("PodDisruptionBudget"), &mut negative, None).unwrap_err());
        assert!(
            message.ends_with(
                "spec.minAvailable: Invalid value: -1: must be greater than or equal to 0"
            ),
            "{message}"
        );
        let mut half = json!({"metadata": {"name": "pfs"}, "spec": {"minAvailable": "half"}});
        let message = messages(prepare(&rt("PodDisruptionBudget"), &mut half, None).unwrap_err());
        assert!(message.contains("spec.minAvailable: Invalid value: intstr.IntOrString{Type:1, IntVal:0, StrVal:\"half\"}: a valid percent string"), "{message}");
    }

    #[test]
    fn role_rules_are_validated() {
        let mut role = json!({"metadata": {"name": "r"}, "rules": [
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]},
            {"resources": ["pods"], "verbs": []},
            {"nonResourceURLs": ["/healthz"], "verbs": ["get"]},
        ]});
        assert_eq!(
            messages(prepare(&rt("Role"), &mut role, None).unwrap_err()),
            "Role.rbac.authorization.k8s.io \"r\" is invalid: [rules[1].verbs: Required value: verbs must contain at least one value, rules[1].apiGroups: Required value: resource rules must supply at least one api group, rules[2].nonResourceURLs: Invalid value: []string{\"/healthz\"}: namespaced rules cannot apply to non-resource URLs]"
        );
        let mut cluster_role = json!({"metadata": {"name": "r"}, "rules": [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]});
        prepare(&rt("ClusterRole"), &mut cluster_role, None).unwrap();
    }

    #[test]
    fn bindings_are_defaulted_and_validated() {
        let mut binding = json!({"metadata": {"name": "b", "namespace": "pf"}, "roleRef": {"kind": "Role", "name": "r"},
            "subjects": [{"kind": "User", "name": "alice"}, {"kind": "ServiceAccount", "name": "op"}]});
        prepare(&rt("RoleBinding"), &mut binding, None).unwrap();
        assert_eq!(binding["roleRef"]["apiGroup"], RBAC_GROUP);
        assert_eq!(binding["subjects"][0]["apiGroup"], RBAC_GROUP);
        assert!(binding["subjects"][1].get("apiGroup").is_none());

        let mut changed = binding.clone();
        changed["roleRef"]["name"] = json!("other");
        assert_eq!(
            messages(prepare(&rt("RoleBinding"), &mut changed, Some(&binding)).unwrap_err()),
            "RoleBinding.rbac.authorization.k8s.io \"b\" is invalid: roleRef: Invalid value: rbac.RoleRef{APIGroup:\"rbac.authorization.k8s.io\", Kind:\"Role\", Name:\"other\"}: cannot change roleRef"
        );

        let mut cluster = json!({"metadata": {"name": "b"}, "roleRef": {"apiGroup": "rbac", "kind": "Role", "name": ""},
            "subjects": [{"kind": "ServiceAccount", "name": "op"}, {"kind": "Robot", "name": "r2"}]});
        assert_eq!(
            messages(prepare(&rt("ClusterRoleBinding"), &mut cluster, None).unwrap_err()),
            "ClusterRoleBinding.rbac.authorization.k8s.io \"b\" is invalid: [roleRef.apiGroup: Unsupported value: \"rbac\": supported values: \"rbac.authorization.k8s.io\", roleRef.kind: Unsupported value: \"Role\": supported values: \"ClusterRole\", roleRef.name: Required value, subjects[0].namespace: Required value, subjects[1].kind: Unsupported value: \"Robot\": supported values: \"ServiceAccount\", \"User\", \"Group\"]"
        );
    }
}
