//! Patches: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and strategic merge patch (the
//! built-in types' `patchStrategy`/`patchMergeKey` semantics, with the `$patch`,
//! `$retainKeys`, `$setElementOrder` and `$deleteFromPrimitiveList` directives kubectl sends).
//! Pure code.

use serde_json::{Map, Value};

use crate::resources::{ListKeys, ListType};

/// RFC 7386: objects merge recursively, `null` deletes, anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    json_patch::merge(target, patch);
}

/// RFC 6902 operations; the error text is the one the API server would return in a 422/400.
pub fn json_patch(target: &mut Value, patch: &Value) -> Result<(), String> {
    let operations: json_patch::Patch = serde_json::from_value(patch.clone())
        .map_err(|e| format!("the JSON patch is invalid: {e}"))?;
    json_patch::patch(target, &operations).map_err(|e| e.to_string())
}

/// Strategic merge patch of `target` with `patch`; `keys` says which lists merge by key.
pub fn strategic_merge(target: &mut Value, patch: &Value, keys: &ListKeys) -> Result<(), String> {
    let Value::Object(patch) = patch else {
        return Err("a strategic merge patch must be a JSON object".into());
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(target) = target else {
        unreachable!("made an object above")
    };
    merge_map(target, patch, "", keys)
}

fn child_path(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn merge_map(
    target: &mut Map<String, Value>,
    patch: &Map<String, Value>,
    path: &str,
    keys: &ListKeys,
) -> Result<(), String> {
    match patch.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            *target = patch
                .iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            return Ok(());
        }
        Some("delete") => {
            target.clear();
            return Ok(());
        }
        Some("merge") | None => {}
        Some(other) => return Err(format!("unknown patch type: {other:?} in {path}")),
    }
    let mut orders = Vec::new();
    for (key, value) in patch {
        if let Some(field) = key.strip_prefix("$setElementOrder/") {
            orders.push((field.to_owned(), value.clone()));
            continue;
        }
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Value::Array(remove)) = (target.get_mut(field), value)
            {
                list.retain(|item| !remove.contains(item));
            }
            continue;
        }
        if key.starts_with('$') {
            continue;
        }
        let field_path = child_path(path, key);
        match value {
            Value::Null => {
                target.remove(key);
            }
            Value::Object(patch_child) => match target.get_mut(key) {
                Some(Value::Object(existing)) => {
                    merge_map(existing, patch_child, &field_path, keys)?
                }
                _ => {
                    let mut fresh = Map::new();
                    merge_map(&mut fresh, patch_child, &field_path, keys)?;
                    if patch_child.get("$patch").and_then(Value::as_str) != Some("delete") {
                        target.insert(key.clone(), Value::Object(fresh));
                    } else {
                        target.remove(key);
                    }
                }
            },
            Value::Array(items) => {
                let merged = match (keys.get(&field_path), target.remove(key)) {
                    (Some(ListType::Map(merge_keys)), Some(Value::Array(existing))) => {
                        merge_keyed_list(existing, items, merge_keys, &field_path, keys)?
                    }
                    (Some(ListType::Map(merge_keys)), _) => {
                        merge_keyed_list(Vec::new(), items, merge_keys, &field_path, keys)?
                    }
                    (Some(ListType::Set), Some(Value::Array(mut existing))) => {
                        for item in items {
                            if !existing.contains(item) {
                                existing.push(item.clone());
                            }
                        }
                        existing
                    }
                    _ => items.iter().filter(|i| !is_directive(i)).cloned().collect(),
                };
                target.insert(key.clone(), Value::Array(merged));
            }
            scalar => {
                target.insert(key.clone(), scalar.clone());
            }
        }
    }
    for (field, order) in orders {
        if let (Some(Value::Array(list)), Value::Array(order)) = (target.get_mut(&field), order) {
            apply_order(list, &order);
        }
    }
    if let Some(Value::Array(retain)) = patch.get("$retainKeys") {
        target.retain(|k, _| retain.iter().any(|r| r.as_str() == Some(k)));
    }
    Ok(())
}

fn is_directive(item: &Value) -> bool {
    item.get("$patch").is_some()
}

fn key_of<'a>(item: &'a Value, merge_keys: &[String]) -> Vec<Option<&'a Value>> {
    merge_keys.iter().map(|k| item.get(k)).collect()
}

fn merge_keyed_list(
    mut existing: Vec<Value>,
    patch: &[Value],
    list_keys: &[String],
    path: &str,
    keys: &ListKeys,
) -> Result<Vec<Value>, String> {
    // A strategic merge patch has one merge key, the list's first key (`patchMergeKey`): two
    // Service ports with the same number and different protocols are the same item to it.
    let merge_keys = &list_keys[..list_keys.len().min(1)];
    if patch
        .iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        return Ok(patch.iter().filter(|i| !is_directive(i)).cloned().collect());
    }
    let item_path = format!("{path}[]");
    for item in patch {
        let Value::Object(patch_item) = item else {
            return Err(format!(
                "{path}: items of a list merged by {merge_keys:?} must be objects"
            ));
        };
        let key = key_of(item, merge_keys);
        if key.iter().all(Option::is_none) {
            return Err(format!(
                "{path}: item has none of the merge keys {merge_keys:?}"
            ));
        }
        let position = existing.iter().position(|e| key_of(e, merge_keys) == key);
        if patch_item.get("$patch").and_then(Value::as_str) == Some("delete") {
            existing.retain(|e| key_of(e, merge_keys) != key);
            continue;
        }
        match position {
            Some(i) => {
                let Value::Object(target) = &mut existing[i] else {
                    unreachable!("keyed items are objects")
                };
                merge_map(target, patch_item, &item_path, keys)?;
            }
            None => {
                let mut fresh = Map::new();
                merge_map(&mut fresh, patch_item, &item_path, keys)?;
                existing.push(Value::Object(fresh));
            }
        }
    }
    Ok(existing)
}

/// `$setElementOrder`: listed items first, in the given order; the rest keep their order.
fn apply_order(list: &mut [Value], order: &[Value]) {
    let rank = |item: &Value| {
        order.iter().position(|o| match o {
            Value::Object(keys) => keys.iter().all(|(k, v)| item.get(k) == Some(v)),
            scalar => item == scalar,
        })
    };
    list.sort_by_key(|item| rank(item).unwrap_or(usize::MAX));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::builtins;
    use serde_json::json;

    fn pod_keys() -> ListKeys {
        builtins()
            .into_iter()
            .find(|r| r.plural == "pods")
            .unwrap()
            .list_keys
    }

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut doc = json!({"a": {"b": 1, "c": 2}, "d": [1, 2]});
        merge_patch(&mut doc, &json!({"a": {"b": null, "e": 3}, "d": [3]}));
        assert_eq!(doc, json!({"a": {"c": 2, "e": 3}, "d": [3]}));
    }

    #[test]
    fn json_patch_operations_and_errors() {
        let mut doc = json!({"spec": {"x": 1}});
        json_patch(&mut doc, &json!([{"op": "replace", "path": "/spec/x", "value": 2}, {"op": "add", "path": "/spec/y", "value": [1]}])).unwrap();
        assert_eq!(doc, json!({"spec": {"x": 2, "y": [1]}}));
        assert!(
            json_patch(
                &mut doc,
                &json!([{"op": "test", "path": "/spec/x", "value": 3}])
            )
            .is_err()
        );
        assert!(
            json_patch(&mut doc, &json!({"op": "add"}))
                .unwrap_err()
                .contains("invalid")
        );
    }

    #[test]
    fn strategic_merge_merges_containers_by_name() {
        let mut pod = json!({"spec": {"containers": [
            {"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}]},
            {"name": "b", "image": "b:1"}
        ]}});
        let patch = json!({"spec": {"containers": [
            {"name": "a", "image": "a:2", "env": [{"name": "Y", "value": "2"}]},
            {"name": "c", "image": "c:1"},
            {"name": "b", "$patch": "delete"}
        ]}});
        strategic_merge(&mut pod, &patch, &pod_keys()).unwrap();
        assert_eq!(
            pod,
            json!({"spec": {"containers": [
                {"name": "a", "image": "a:2", "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]},
                {"name": "c", "image": "c:1"}
            ]}})
        );
    }

    #[test]
    fn strategic_merge_uses_the_patch_merge_key_only() {
        let keys = builtins()
            .into_iter()
            .find(|r| r.plural == "services")
            .unwrap()
            .list_keys;
        let mut service = json!({"spec": {"ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]}});
        let patch = json!({"spec": {"ports": [{"port": 80, "targetPort": 9090}, {"port": 443, "name": "https"}]}});
        strategic_merge(&mut service, &patch, &keys).unwrap();
        assert_eq!(
            service["spec"]["ports"],
            json!([{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 9090}, {"port": 443, "name": "https"}])
        );
    }

    #[test]
    fn strategic_merge_directives_kubectl_sends() {
        let mut pod = json!({"metadata": {"labels": {"a": "1", "b": "2"}, "finalizers": ["x"]}, "spec": {"containers": [{"name": "a"}, {"name": "b"}], "tolerations": [{"key": "k"}]}});
        let patch = json!({
            "metadata": {"labels": {"b": null}, "finalizers": ["y"]},
            "spec": {
                "$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
                "containers": [{"name": "a", "image": "i"}],
                "tolerations": [{"key": "t"}]
            }
        });
        strategic_merge(&mut pod, &patch, &pod_keys()).unwrap();
        assert_eq!(
            pod["metadata"],
            json!({"labels": {"a": "1"}, "finalizers": ["x", "y"]})
        );
        assert_eq!(
            pod["spec"]["containers"],
            json!([{"name": "b"}, {"name": "a", "image": "i"}])
        );
        assert_eq!(
            pod["spec"]["tolerations"],
            json!([{"key": "t"}]),
            "lists without a merge key are replaced"
        );

        strategic_merge(
            &mut pod,
            &json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["x"]}}),
            &pod_keys(),
        )
        .unwrap();
        assert_eq!(pod["metadata"]["finalizers"], json!(["y"]));
        strategic_merge(
            &mut pod,
            &json!({"spec": {"$patch": "replace", "containers": []}}),
            &pod_keys(),
        )
        .unwrap();
        assert_eq!(pod["spec"], json!({"containers": []}));
        strategic_merge(
            &mut pod,
            &json!({"spec": {"$retainKeys": ["x"], "x": 1}}),
            &pod_keys(),
        )
        .unwrap();
        assert_eq!(pod["spec"], json!({"x": 1}));
    }
}
