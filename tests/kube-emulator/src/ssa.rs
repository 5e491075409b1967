//! Server-side apply and field ownership (`metadata.managedFields`, `FieldsV1`), after
//! sigs.k8s.io/structured-merge-diff as the API server uses it. Pure code.
//!
//! A field set is a tree keyed the way `fieldsV1` is: `f:<field>` for object fields,
//! `k:<json of the key fields>` for items of a list merged by key, `v:<json>` for items of a
//! set, and `.` for "the item itself". A leaf (empty subtree) is a value someone set.
//!
//! - Apply: the applier owns exactly the fields of its configuration; a field whose value would
//!   change and that another manager owns is a conflict (409) unless `force`, which takes the
//!   field over; fields the applier owned before and no longer sets are removed from the object
//!   unless another manager still owns them.
//! - Update (create, PUT, other patches): the writer takes ownership of every field whose value
//!   it changed, and nobody keeps ownership of removed fields.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::resources::{ListKeys, ListType};

/// A set of fields, as a tree of `fieldsV1` keys.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSet(BTreeMap<String, FieldSet>);

impl FieldSet {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The `fieldsV1` JSON.
    pub fn to_json(&self) -> Value {
        Value::Object(
            self.0
                .iter()
                .map(|(k, v)| (k.clone(), v.to_json()))
                .collect(),
        )
    }

    pub fn from_json(value: &Value) -> FieldSet {
        match value {
            Value::Object(map) => FieldSet(
                map.iter()
                    .map(|(k, v)| (k.clone(), FieldSet::from_json(v)))
                    .collect(),
            ),
            _ => FieldSet::default(),
        }
    }

    /// Every leaf, as its path of keys.
    pub fn leaves(&self) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        self.collect_leaves(&mut Vec::new(), &mut out);
        out
    }

    fn collect_leaves(&self, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        for (key, child) in &self.0 {
            prefix.push(key.clone());
            if child.is_empty() {
                out.push(prefix.clone());
            } else {
                child.collect_leaves(prefix, out);
            }
            prefix.pop();
        }
    }

    pub fn contains(&self, path: &[String]) -> bool {
        match path.split_first() {
            None => true,
            Some((first, rest)) => self.0.get(first).is_some_and(|child| child.contains(rest)),
        }
    }

    /// Removes a leaf and any parent left empty.
    pub fn remove(&mut self, path: &[String]) {
        let Some((first, rest)) = path.split_first() else {
            return;
        };
        if rest.is_empty() {
            self.0.remove(first);
            return;
        }
        if let Some(child) = self.0.get_mut(first) {
            child.remove(rest);
            if child.is_empty() {
                self.0.remove(first);
            }
        }
    }

    pub fn insert(&mut self, path: &[String]) {
        let mut node = self;
        for key in path {
            node = node.0.entry(key.clone()).or_default();
        }
    }
}

/// The fields `value` sets, with list merge semantics from `keys`.
pub fn fields_of(value: &Value, keys: &ListKeys) -> FieldSet {
    let mut set = FieldSet::default();
    if let Value::Object(map) = value {
        for (name, child) in map {
            if matches!(name.as_str(), "apiVersion" | "kind") {
                continue;
            }
            if name == "metadata" {
                let metadata = metadata_fields(child, keys);
                if !metadata.is_empty() {
                    set.0.insert("f:metadata".into(), metadata);
                }
                continue;
            }
            set.0
                .insert(format!("f:{name}"), value_fields(child, name, keys));
        }
    }
    set
}

/// Only the user-owned parts of metadata: labels, annotations, finalizers, ownerReferences.
fn metadata_fields(metadata: &Value, keys: &ListKeys) -> FieldSet {
    let mut set = FieldSet::default();
    if let Value::Object(map) = metadata {
        for name in ["labels", "annotations", "finalizers", "ownerReferences"] {
            if let Some(child) = map.get(name) {
                set.0.insert(
                    format!("f:{name}"),
                    value_fields(child, &format!("metadata.{name}"), keys),
                );
            }
        }
    }
    set
}

fn value_fields(value: &Value, path: &str, keys: &ListKeys) -> FieldSet {
    match value {
        Value::Object(map) => {
            let mut set = FieldSet::default();
            for (name, child) in map {
                set.0.insert(
                    format!("f:{name}"),
                    value_fields(child, &format!("{path}.{name}"), keys),
                );
            }
            set
        }
        Value::Array(items) => match keys.get(path) {
            Some(ListType::Map(merge_keys)) => {
                let mut set = FieldSet::default();
                for item in items {
                    let mut item_set = value_fields(item, &format!("{path}[]"), keys);
                    for key in merge_keys {
                        item_set.0.remove(&format!("f:{key}"));
                    }
                    item_set.0.insert(".".into(), FieldSet::default());
                    set.0.insert(item_key(item, merge_keys), item_set);
                }
                set
            }
            Some(ListType::Set) => FieldSet(
                items
                    .iter()
                    .map(|item| (format!("v:{item}"), FieldSet::default()))
                    .collect(),
            ),
            None => FieldSet::default(),
        },
        _ => FieldSet::default(),
    }
}

fn item_key(item: &Value, merge_keys: &[String]) -> String {
    let key: Map<String, Value> = merge_keys
        .iter()
        .filter_map(|k| item.get(k).map(|v| (k.clone(), v.clone())))
        .collect();
    format!("k:{}", Value::Object(key))
}

/// The value at a field-set path, if present (`.` refers to the list item itself).
fn value_at<'a>(value: &'a Value, path: &[String]) -> Option<&'a Value> {
    let Some((first, rest)) = path.split_first() else {
        return Some(value);
    };
    let next = if first == "." {
        Some(value)
    } else if let Some(field) = first.strip_prefix("f:") {
        value.get(field)
    } else if let Some(key) = first.strip_prefix("k:") {
        let key: Map<String, Value> = serde_json::from_str(key).ok()?;
        value
            .as_array()?
            .iter()
            .find(|item| key.iter().all(|(k, v)| item.get(k) == Some(v)))
    } else if let Some(item) = first.strip_prefix("v:") {
        let item: Value = serde_json::from_str(item).ok()?;
        value.as_array()?.iter().find(|v| **v == item)
    } else {
        None
    };
    value_at(next?, rest)
}

/// Removes the value at a field-set path from `value`.
fn remove_at(value: &mut Value, path: &[String]) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    if rest.is_empty() || rest == ["."] {
        if let Some(field) = first.strip_prefix("f:") {
            if let Value::Object(map) = value {
                map.remove(field);
            }
        } else if let Value::Array(items) = value {
            if let Some(key) = first
                .strip_prefix("k:")
                .and_then(|k| serde_json::from_str::<Map<String, Value>>(k).ok())
            {
                items.retain(|item| !key.iter().all(|(k, v)| item.get(k) == Some(v)));
            } else if let Some(item) = first
                .strip_prefix("v:")
                .and_then(|v| serde_json::from_str::<Value>(v).ok())
            {
                items.retain(|v| *v != item);
            }
        }
        return;
    }
    let next = if let Some(field) = first.strip_prefix("f:") {
        value.get_mut(field)
    } else if let Some(key) = first
        .strip_prefix("k:")
        .and_then(|k| serde_json::from_str::<Map<String, Value>>(k).ok())
    {
        value.as_array_mut().and_then(|items| {
            items
                .iter_mut()
                .find(|item| key.iter().all(|(k, v)| item.get(k) == Some(v)))
        })
    } else {
        None
    };
    if let Some(next) = next {
        remove_at(next, rest);
        // A map left empty goes too, as structured-merge-diff's removal leaves no empty map
        // behind (a struct with required fields would otherwise stay, invalid).
        if let (Some(field), Value::Object(map)) = (first.strip_prefix("f:"), &mut *value)
            && map
                .get(field)
                .is_some_and(|v| v.as_object().is_some_and(Map::is_empty))
        {
            map.remove(field);
        }
    }
}

/// A field path as conflicts are reported: `.spec.containers[name="pfs"].image`.
pub fn display_path(path: &[String]) -> String {
    let mut out = String::new();
    for key in path {
        if key == "." {
            continue;
        }
        if let Some(field) = key.strip_prefix("f:") {
            out.push('.');
            out.push_str(field);
        } else if let Some(json) = key.strip_prefix("k:") {
            let fields: Map<String, Value> = serde_json::from_str(json).unwrap_or_default();
            let parts: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(json) = key.strip_prefix("v:") {
            out.push_str(&format!("[={json}]"));
        }
    }
    out
}

/// One `metadata.managedFields` entry.
#[derive(Clone, Debug, PartialEq)]
pub struct Managed {
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: String,
    pub api_version: String,
    pub time: String,
    pub subresource: Option<String>,
    pub fields: FieldSet,
}

impl Managed {
    fn to_json(&self) -> Value {
        let mut entry = json!({
            "manager": self.manager,
            "operation": self.operation,
            "apiVersion": self.api_version,
            "time": self.time,
            "fieldsType": "FieldsV1",
            "fieldsV1": self.fields.to_json(),
        });
        if let Some(subresource) = &self.subresource {
            entry["subresource"] = json!(subresource);
        }
        entry
    }

    fn same_owner(&self, manager: &str, operation: &str, subresource: Option<&str>) -> bool {
        self.manager == manager
            && self.operation == operation
            && self.subresource.as_deref() == subresource
    }
}

pub fn read_managed(object: &Value) -> Vec<Managed> {
    let entries = object
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let text = |e: &Value, k: &str| {
        e.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    entries
        .iter()
        .map(|e| Managed {
            manager: text(e, "manager"),
            operation: text(e, "operation"),
            api_version: text(e, "apiVersion"),
            time: text(e, "time"),
            subresource: e
                .get("subresource")
                .and_then(Value::as_str)
                .map(str::to_owned),
            fields: FieldSet::from_json(e.get("fieldsV1").unwrap_or(&Value::Null)),
        })
        .collect()
}

pub fn write_managed(object: &mut Value, managed: &[Managed]) {
    let entries: Vec<Value> = managed
        .iter()
        .filter(|m| !m.fields.is_empty())
        .map(Managed::to_json)
        .collect();
    if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        if entries.is_empty() {
            metadata.remove("managedFields");
        } else {
            metadata.insert("managedFields".into(), Value::Array(entries));
        }
    }
}

/// Who writes, for managed-fields bookkeeping.
#[derive(Clone, Copy, Debug)]
pub struct Writer<'a> {
    pub manager: &'a str,
    pub api_version: &'a str,
    pub time: &'a str,
    /// `Some("status")` for writes through the status subresource.
    pub subresource: Option<&'a str>,
}

/// Records a non-apply write: `writer` owns every field whose value it changed; removed fields
/// are owned by nobody. Updates `new`'s managedFields from `old`'s.
pub fn record_update(old: Option<&Value>, new: &mut Value, writer: Writer<'_>, keys: &ListKeys) {
    let mut managed = old.map(read_managed).unwrap_or_default();
    let new_fields = fields_of(new, keys);
    let old_fields = old.map(|o| fields_of(o, keys)).unwrap_or_default();
    let changed: Vec<Vec<String>> = new_fields
        .leaves()
        .into_iter()
        .filter(|leaf| old.is_none_or(|o| value_at(o, leaf) != value_at(new, leaf)))
        .collect();
    let removed: Vec<Vec<String>> = old_fields
        .leaves()
        .into_iter()
        .filter(|leaf| !new_fields.contains(leaf))
        .collect();
    for entry in &mut managed {
        for leaf in changed.iter().chain(&removed) {
            entry.fields.remove(leaf);
        }
    }
    if !changed.is_empty() {
        let index = match managed
            .iter()
            .position(|m| m.same_owner(writer.manager, "Update", writer.subresource))
        {
            Some(i) => i,
            None => {
                managed.push(Managed {
                    manager: writer.manager.to_owned(),
                    operation: "Update".into(),
                    api_version: writer.api_version.to_owned(),
                    time: writer.time.to_owned(),
                    subresource: writer.subresource.map(str::to_owned),
                    fields: FieldSet::default(),
                });
                managed.len() - 1
            }
        };
        let entry = &mut managed[index];
        entry.time = writer.time.to_owned();
        entry.api_version = writer.api_version.to_owned();
        for leaf in &changed {
            entry.fields.insert(leaf);
        }
    }
    write_managed(new, &managed);
}

/// Server-side apply of `config` by `writer` onto `live` (`None`: the object is being created).
/// Returns the new object with its managedFields, or the conflicts as
/// `(other manager, field path)` when not `force`d.
pub fn apply(
    live: Option<&Value>,
    config: &Value,
    writer: Writer<'_>,
    force: bool,
    keys: &ListKeys,
) -> Result<Value, Vec<(String, String)>> {
    let base = live.cloned().unwrap_or_else(|| json!({}));
    let mut managed = read_managed(&base);
    let applied = fields_of(config, keys);

    let mut conflicts = Vec::new();
    for leaf in applied.leaves() {
        let current = value_at(&base, &leaf);
        if current.is_none() || current == value_at(config, &leaf) {
            continue;
        }
        for entry in managed
            .iter_mut()
            .filter(|m| !m.same_owner(writer.manager, "Apply", writer.subresource))
        {
            if entry.fields.contains(&leaf) {
                if force {
                    entry.fields.remove(&leaf);
                } else {
                    conflicts.push((entry.manager.clone(), display_path(&leaf)));
                }
            }
        }
    }
    if !conflicts.is_empty() {
        conflicts.sort();
        conflicts.dedup();
        return Err(conflicts);
    }

    let mut merged = base.clone();
    merge_applied(&mut merged, config, "", keys);

    // Fields this applier set last time and no longer sets go, unless someone else owns them.
    let previous = managed
        .iter()
        .position(|m| m.same_owner(writer.manager, "Apply", writer.subresource))
        .map(|i| managed.remove(i));
    if let Some(previous) = &previous {
        for leaf in previous.fields.leaves() {
            let owned_elsewhere = managed.iter().any(|m| m.fields.contains(&leaf));
            if !applied.contains(&leaf) && !owned_elsewhere {
                remove_at(&mut merged, &leaf);
            }
        }
    }
    managed.push(Managed {
        manager: writer.manager.to_owned(),
        operation: "Apply".into(),
        api_version: writer.api_version.to_owned(),
        time: writer.time.to_owned(),
        subresource: writer.subresource.map(str::to_owned),
        fields: applied,
    });
    write_managed(&mut merged, &managed);
    Ok(merged)
}

/// Merges an applied configuration into the object: objects recursively, keyed lists by key,
/// sets as sets, everything else replaced.
fn merge_applied(target: &mut Value, config: &Value, path: &str, keys: &ListKeys) {
    match (target, config) {
        (Value::Object(target), Value::Object(config)) => {
            for (name, value) in config {
                let child = if path.is_empty() {
                    name.clone()
                } else {
                    format!("{path}.{name}")
                };
                match target.get_mut(name) {
                    Some(existing) => merge_applied(existing, value, &child, keys),
                    None => {
                        target.insert(name.clone(), value.clone());
                    }
                }
            }
        }
        (Value::Array(target), Value::Array(config)) => match keys.get(path) {
            Some(ListType::Map(merge_keys)) => {
                for item in config {
                    let key: Vec<Option<&Value>> = merge_keys.iter().map(|k| item.get(k)).collect();
                    match target
                        .iter_mut()
                        .find(|t| merge_keys.iter().map(|k| t.get(k)).collect::<Vec<_>>() == key)
                    {
                        Some(existing) => merge_applied(existing, item, &format!("{path}[]"), keys),
                        None => target.push(item.clone()),
                    }
                }
            }
            Some(ListType::Set) => {
                for item in config {
                    if !target.contains(item) {
                        target.push(item.clone());
                    }
                }
            }
            None => *target = config.clone(),
        },
        (target, config) => *target = config.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::builtins;

    fn pod_keys() -> ListKeys {
        builtins()
            .into_iter()
            .find(|r| r.plural == "pods")
            .unwrap()
            .list_keys
    }

    fn by(manager: &str) -> Writer<'_> {
        Writer {
            manager,
            api_version: "v1",
            time: "2026-01-01T00:00:00Z",
            subresource: None,
        }
    }

    fn owners(object: &Value) -> Vec<(String, String)> {
        read_managed(object)
            .into_iter()
            .map(|m| (m.manager, m.operation))
            .collect()
    }

    #[test]
    fn field_sets_use_the_fields_v1_keys() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"app": "x"}},
            "spec": {"containers": [{"name": "pfs", "image": "i", "ports": [{"containerPort": 80, "protocol": "TCP"}]}]}});
        assert_eq!(
            fields_of(&pod, &pod_keys()).to_json(),
            json!({"f:metadata": {"f:labels": {"f:app": {}}},
                   "f:spec": {"f:containers": {"k:{\"name\":\"pfs\"}": {".": {}, "f:image": {},
                       "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}}}}}}})
        );
    }

    #[test]
    fn apply_creates_merges_and_removes_what_the_applier_dropped() {
        let keys = pod_keys();
        let first = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "labels": {"a": "1"}}, "data": {"x": "1", "y": "2"}});
        let created = apply(None, &first, by("op"), false, &keys).unwrap();
        assert_eq!(created["data"], json!({"x": "1", "y": "2"}));
        assert_eq!(owners(&created), [("op".to_owned(), "Apply".to_owned())]);

        let second = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"x": "3"}});
        let updated = apply(Some(&created), &second, by("op"), false, &keys).unwrap();
        assert_eq!(
            updated["data"],
            json!({"x": "3"}),
            "y was dropped from the configuration"
        );
        assert!(
            updated["metadata"]
                .get("labels")
                .is_none_or(|l| l.get("a").is_none())
        );
    }

    #[test]
    fn a_map_whose_fields_the_applier_all_dropped_goes_with_them() {
        let keys = pod_keys();
        let first = json!({"apiVersion": "v1", "kind": "X", "metadata": {"name": "c"}, "status": {"phase": "A", "restart": {"podUid": "u", "manual": false}}});
        let created = apply(None, &first, by("op"), false, &keys).unwrap();
        let second = json!({"apiVersion": "v1", "kind": "X", "metadata": {"name": "c"}, "status": {"phase": "B"}});
        let updated = apply(Some(&created), &second, by("op"), false, &keys).unwrap();
        assert_eq!(updated["status"], json!({"phase": "B"}));
    }

    #[test]
    fn apply_conflicts_with_other_owners_unless_forced() {
        let keys = pod_keys();
        let config = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"x": "1"}});
        let created = apply(None, &config, by("op"), false, &keys).unwrap();
        // Someone edits x with a plain update: ownership moves to them.
        let mut edited = created.clone();
        edited["data"]["x"] = json!("edited");
        record_update(Some(&created), &mut edited, by("kubectl-edit"), &keys);
        assert_eq!(
            owners(&edited),
            [("kubectl-edit".to_owned(), "Update".to_owned())]
        );

        let err = apply(Some(&edited), &config, by("op"), false, &keys).unwrap_err();
        assert_eq!(err, [("kubectl-edit".to_owned(), ".data.x".to_owned())]);
        let forced = apply(Some(&edited), &config, by("op"), true, &keys).unwrap();
        assert_eq!(forced["data"]["x"], "1");
        assert_eq!(owners(&forced), [("op".to_owned(), "Apply".to_owned())]);

        // Applying the same value another manager set is shared ownership, not a conflict.
        let same = apply(
            Some(&edited),
            &json!({"metadata": {"name": "c"}, "data": {"x": "edited"}}),
            by("other"),
            false,
            &keys,
        )
        .unwrap();
        assert_eq!(owners(&same).len(), 2);
    }

    #[test]
    fn dropped_fields_owned_by_someone_else_stay() {
        let keys = pod_keys();
        let a = apply(
            None,
            &json!({"metadata": {"name": "c"}, "data": {"x": "1"}}),
            by("a"),
            false,
            &keys,
        )
        .unwrap();
        let b = apply(
            Some(&a),
            &json!({"metadata": {"name": "c"}, "data": {"x": "1"}}),
            by("b"),
            false,
            &keys,
        )
        .unwrap();
        let a_again = apply(
            Some(&b),
            &json!({"metadata": {"name": "c"}}),
            by("a"),
            false,
            &keys,
        )
        .unwrap();
        assert_eq!(a_again["data"]["x"], "1", "b still owns it");
    }

    #[test]
    fn keyed_lists_merge_and_items_can_be_dropped() {
        let keys = pod_keys();
        let config = |containers: Value| json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": containers}});
        let created = apply(
            None,
            &config(json!([{"name": "a", "image": "1"}, {"name": "b", "image": "1"}])),
            by("op"),
            false,
            &keys,
        )
        .unwrap();
        let updated = apply(
            Some(&created),
            &config(json!([{"name": "a", "image": "2"}])),
            by("op"),
            false,
            &keys,
        )
        .unwrap();
        assert_eq!(
            updated["spec"]["containers"],
            json!([{"name": "a", "image": "2"}])
        );
        assert_eq!(
            display_path(&[
                "f:spec".into(),
                "f:containers".into(),
                "k:{\"name\":\"a\"}".into(),
                "f:image".into()
            ]),
            ".spec.containers[name=\"a\"].image"
        );
    }
}
