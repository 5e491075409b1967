//! Kinds served by two API groups from one storage. The API server keeps one internal object
//! and converts it to and from every version it serves; for Events that internal object is the
//! core Event, and events.k8s.io/v1 is a view of it (`pkg/apis/events/v1/conversion.go`). So
//! an Event written through either API is one object, with one resourceVersion, listed and
//! watched through both, and `kubectl describe` (which lists core Events) shows the ones that
//! controllers record through events.k8s.io.
//!
//! The emulator stores Events as core/v1 JSON: [`to_storage`] converts what a write through
//! events.k8s.io/v1 carries, [`to_version`] renders a stored object as the version a request
//! addresses. Field selectors are evaluated on the stored form too, as the API server evaluates
//! them on internal objects: [`field_label`] maps events.k8s.io's labels to the core ones
//! (`AddFieldLabelConversionsForEvent`) and [`selectable_field`] computes the core Event's
//! `source` (`ToSelectableFields`). Pure code.
//!
//! Field mapping (events.k8s.io/v1 ↔ core/v1): `regarding` ↔ `involvedObject`, `note` ↔
//! `message`, `reportingController` ↔ `reportingComponent`, `deprecatedSource` ↔ `source`,
//! `deprecatedFirstTimestamp` ↔ `firstTimestamp`, `deprecatedLastTimestamp` ↔
//! `lastTimestamp`, `deprecatedCount` ↔ `count`; `metadata`, `eventTime`, `series`, `action`,
//! `reason`, `related`, `reportingInstance` and `type` keep their names. Fields neither
//! version has are dropped, as decoding into the typed object drops them.

use serde_json::{Map, Value, json};

use crate::resources::ResourceType;
use crate::selectors;

/// The group of the new Events API.
pub const EVENTS_GROUP: &str = "events.k8s.io";

/// `(events.k8s.io/v1 name, core/v1 name)` of the fields that were renamed.
const RENAMED: [(&str, &str); 7] = [
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

/// Fields both versions have under the same name.
const SHARED: [&str; 8] = [
    "eventTime",
    "series",
    "action",
    "reason",
    "related",
    "reportingInstance",
    "type",
    "metadata",
];

/// Where objects of `group`'s `plural` are stored: `(group, plural)`, except events.k8s.io
/// Events, which are core Events.
pub fn storage_key(group: &str, plural: &str) -> (String, String) {
    if group == EVENTS_GROUP && plural == "events" {
        return (String::new(), "events".to_owned());
    }
    (group.to_owned(), plural.to_owned())
}

fn type_of(object: &Value) -> (&str, &str) {
    let text = |key: &str| object.get(key).and_then(Value::as_str).unwrap_or_default();
    (text("apiVersion"), text("kind"))
}

fn is_events_v1(object: &Value) -> bool {
    type_of(object) == ("events.k8s.io/v1", "Event")
}

fn is_core_event(object: &Value) -> bool {
    type_of(object) == ("v1", "Event")
}

/// Whether `object` is stored in another form than it is written in, or is normalized when
/// stored (every Event).
pub fn converts(object: &Value) -> bool {
    is_events_v1(object) || is_core_event(object)
}

/// Whether `rt` serves objects in another form than the stored one, or adds zero values to
/// them (both Event APIs).
pub fn renders(rt: &ResourceType) -> bool {
    rt.kind == "Event" && (rt.group.is_empty() || rt.group == EVENTS_GROUP)
}

/// An object as it is stored, from the form it was written in (its `apiVersion` says which):
/// events.k8s.io/v1 Events become core/v1 Events, and Events lose the zero values that
/// [`to_version`] adds (as their typed form omits empty fields). Other objects are stored as
/// written.
pub fn to_storage(object: Value) -> Value {
    if is_events_v1(&object) {
        return canonical_event(events_v1_to_core(object));
    }
    if is_core_event(&object) {
        return canonical_event(object);
    }
    object
}

/// A stored (or already rendered) object as `rt`'s version serves it. Events are converted
/// when the version differs, and carry the zero values the API server's typed objects always
/// serialize (`involvedObject: {}`, `eventTime: null`…), so that typed clients find every
/// field they require.
pub fn to_version(rt: &ResourceType, object: &Value) -> Value {
    let mut object = object.clone();
    if renders(rt) {
        let new_api = rt.group == EVENTS_GROUP;
        if new_api && is_core_event(&object) {
            object = core_to_events_v1(object);
        } else if !new_api && is_events_v1(&object) {
            object = events_v1_to_core(object);
        }
        if let Some(map) = object.as_object_mut() {
            if new_api {
                fill_events_v1_zero_values(map);
            } else {
                fill_core_zero_values(map);
            }
        }
    }
    if object.is_object() {
        object["apiVersion"] = json!(rt.api_version());
        object["kind"] = json!(rt.kind);
    }
    object
}

/// `Convert_v1_Event_To_core_Event`.
fn events_v1_to_core(object: Value) -> Value {
    let Value::Object(mut from) = object else {
        return object;
    };
    let mut to = Map::new();
    to.insert("apiVersion".into(), json!("v1"));
    to.insert("kind".into(), json!("Event"));
    for field in SHARED {
        if let Some(value) = from.remove(field) {
            to.insert(field.into(), value);
        }
    }
    for (new, core) in RENAMED {
        if let Some(value) = from.remove(new) {
            to.insert(core.into(), value);
        }
    }
    Value::Object(to)
}

/// `Convert_core_Event_To_v1_Event`.
fn core_to_events_v1(object: Value) -> Value {
    let Value::Object(mut from) = object else {
        return object;
    };
    let mut to = Map::new();
    to.insert("apiVersion".into(), json!("events.k8s.io/v1"));
    to.insert("kind".into(), json!("Event"));
    for field in SHARED {
        if let Some(value) = from.remove(field) {
            to.insert(field.into(), value);
        }
    }
    for (new, core) in RENAMED {
        if let Some(value) = from.remove(core) {
            to.insert(new.into(), value);
        }
    }
    Value::Object(to)
}

/// Whether a value is what Go's `omitempty` (or a zero `metav1.Time`, serialized as `null`)
/// leaves out of a typed Event.
fn is_zero(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Object(map) => map.is_empty(),
        Value::Number(n) => n.as_f64() == Some(0.0),
        _ => false,
    }
}

/// A core Event without its empty fields (metadata is kept as written).
fn canonical_event(object: Value) -> Value {
    let Value::Object(map) = object else {
        return object;
    };
    let mut canonical = Map::new();
    for (key, mut value) in map {
        if key != "metadata" {
            if let Value::Object(inner) = &mut value {
                inner.retain(|_, v| !is_zero(v));
            }
            if is_zero(&value) {
                continue;
            }
        }
        canonical.insert(key, value);
    }
    Value::Object(canonical)
}

/// What core/v1 `Event` always serializes: its struct fields and its two fields without
/// `omitempty` (`reportingComponent`, `reportingInstance`); zero times are `null`.
fn fill_core_zero_values(map: &mut Map<String, Value>) {
    for (key, zero) in [
        ("involvedObject", json!({})),
        ("source", json!({})),
        ("firstTimestamp", Value::Null),
        ("lastTimestamp", Value::Null),
        ("eventTime", Value::Null),
        ("reportingComponent", json!("")),
        ("reportingInstance", json!("")),
    ] {
        map.entry(key).or_insert(zero);
    }
}

/// What events.k8s.io/v1 `Event` always serializes (`eventTime` is required; zero times are
/// `null`).
fn fill_events_v1_zero_values(map: &mut Map<String, Value>) {
    for (key, zero) in [
        ("eventTime", Value::Null),
        ("regarding", json!({})),
        ("deprecatedSource", json!({})),
        ("deprecatedFirstTimestamp", Value::Null),
        ("deprecatedLastTimestamp", Value::Null),
    ] {
        map.entry(key).or_insert(zero);
    }
}

/// The stored form's name of a field selector label of `rt` (which `rt` is known to support):
/// events.k8s.io's `regarding.*` and `reportingController` select on the core fields.
pub fn field_label(rt: &ResourceType, label: &str) -> String {
    if rt.group == EVENTS_GROUP && rt.kind == "Event" {
        if let Some(rest) = label.strip_prefix("regarding.") {
            return format!("involvedObject.{rest}");
        }
        if label == "reportingController" {
            return "reportingComponent".to_owned();
        }
    }
    label.to_owned()
}

/// The value a field selector compares for `field` of a stored object: the value at its JSON
/// path, except a core Event's `source`, which is `source.component` or, when that is empty,
/// the reporting controller (`pkg/registry/core/event` `ToSelectableFields`).
pub fn selectable_field(object: &Value, field: &str) -> String {
    if field == "source" && is_core_event(object) {
        let component = selectors::field_value(object, "source.component");
        if component.is_empty() {
            return selectors::field_value(object, "reportingComponent");
        }
        return component;
    }
    selectors::field_value(object, field)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::builtins;

    fn rt(group: &str, kind: &str) -> ResourceType {
        builtins()
            .into_iter()
            .find(|r| r.group == group && r.kind == kind)
            .unwrap()
    }

    fn recorded() -> Value {
        // What kube-rs's `Recorder` sends for a repeated event (a series), through events.k8s.io.
        json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "s1.17f", "namespace": "pf", "resourceVersion": "7"},
            "eventTime": "2026-01-01T00:00:00.000000Z",
            "series": {"count": 2, "lastObservedTime": "2026-01-01T00:01:00.000000Z"},
            "reportingController": "pureflash.io/operator", "reportingInstance": "op-0",
            "action": "Recover", "reason": "Restarted", "type": "Warning", "note": "pod deleted",
            "regarding": {"apiVersion": "pureflash.io/v1", "kind": "PureFlashStore", "name": "s1", "namespace": "pf", "uid": "u1"},
            "related": {"kind": "Pod", "name": "s1-pfs", "namespace": "pf"},
            "deprecatedCount": 0,
            "deprecatedFirstTimestamp": null,
        })
    }

    #[test]
    fn events_v1_is_stored_as_a_core_event() {
        let stored = to_storage(recorded());
        assert_eq!(
            stored,
            json!({
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"name": "s1.17f", "namespace": "pf", "resourceVersion": "7"},
                "eventTime": "2026-01-01T00:00:00.000000Z",
                "series": {"count": 2, "lastObservedTime": "2026-01-01T00:01:00.000000Z"},
                "reportingComponent": "pureflash.io/operator", "reportingInstance": "op-0",
                "action": "Recover", "reason": "Restarted", "type": "Warning", "message": "pod deleted",
                "involvedObject": {"apiVersion": "pureflash.io/v1", "kind": "PureFlashStore", "name": "s1", "namespace": "pf", "uid": "u1"},
                "related": {"kind": "Pod", "name": "s1-pfs", "namespace": "pf"},
            })
        );
        // Back through events.k8s.io: what was written, and the zero values of the typed form.
        let mut expected = recorded();
        expected["deprecatedSource"] = json!({});
        expected["deprecatedLastTimestamp"] = Value::Null;
        expected.as_object_mut().unwrap().remove("deprecatedCount");
        assert_eq!(to_version(&rt(EVENTS_GROUP, "Event"), &stored), expected);
        // Through core/v1: the core names, and its zero values.
        let core = to_version(&rt("", "Event"), &stored);
        assert_eq!(core["message"], "pod deleted");
        assert_eq!(core["reportingComponent"], "pureflash.io/operator");
        assert_eq!(core["involvedObject"]["kind"], "PureFlashStore");
        assert_eq!(core["source"], json!({}));
        assert_eq!(core["firstTimestamp"], Value::Null);
        assert!(core.get("note").is_none() && core.get("regarding").is_none());
    }

    #[test]
    fn core_events_read_through_events_v1() {
        let core = json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": "w.1", "namespace": "pf"},
            "involvedObject": {"kind": "Pod", "name": "p", "namespace": "pf", "fieldPath": ""},
            "reason": "Killing", "message": "Stopping container", "type": "Normal",
            "source": {"component": "kubelet", "host": "node-a"},
            "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": "2026-01-01T00:05:00Z", "count": 3,
            "reportingComponent": "", "reportingInstance": "", "eventTime": null,
        });
        let stored = to_storage(core.clone());
        assert!(
            stored.get("eventTime").is_none(),
            "zero values are not stored"
        );
        assert!(stored["involvedObject"].get("fieldPath").is_none());
        let new_api = to_version(&rt(EVENTS_GROUP, "Event"), &stored);
        assert_eq!(
            new_api,
            json!({
                "apiVersion": "events.k8s.io/v1", "kind": "Event",
                "metadata": {"name": "w.1", "namespace": "pf"},
                "regarding": {"kind": "Pod", "name": "p", "namespace": "pf"},
                "reason": "Killing", "note": "Stopping container", "type": "Normal",
                "deprecatedSource": {"component": "kubelet", "host": "node-a"},
                "deprecatedFirstTimestamp": "2026-01-01T00:00:00Z",
                "deprecatedLastTimestamp": "2026-01-01T00:05:00Z", "deprecatedCount": 3,
                "eventTime": null,
            })
        );
        // A round trip through either version stores the same object.
        assert_eq!(to_storage(new_api), stored);
        assert_eq!(to_storage(to_version(&rt("", "Event"), &stored)), stored);
    }

    #[test]
    fn other_kinds_are_stored_as_written() {
        let map = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": ""}});
        assert!(!converts(&map));
        assert_eq!(to_storage(map.clone()), map);
        assert_eq!(to_version(&rt("", "ConfigMap"), &map), map);
        assert_eq!(
            storage_key("apps", "deployments"),
            ("apps".to_owned(), "deployments".to_owned())
        );
    }

    #[test]
    fn field_selectors_use_the_core_fields() {
        let new_api = rt(EVENTS_GROUP, "Event");
        assert_eq!(
            field_label(&new_api, "regarding.name"),
            "involvedObject.name"
        );
        assert_eq!(
            field_label(&new_api, "reportingController"),
            "reportingComponent"
        );
        assert_eq!(field_label(&new_api, "reason"), "reason");
        assert_eq!(
            field_label(&rt("", "Event"), "involvedObject.name"),
            "involvedObject.name"
        );
        let stored = to_storage(recorded());
        assert_eq!(selectable_field(&stored, "involvedObject.uid"), "u1");
        assert_eq!(
            selectable_field(&stored, "source"),
            "pureflash.io/operator",
            "the reporting controller when there is no source"
        );
        let kubelet = json!({"apiVersion": "v1", "kind": "Event", "source": {"component": "kubelet"}, "reportingComponent": "x"});
        assert_eq!(selectable_field(&kubelet, "source"), "kubelet");
    }
}
