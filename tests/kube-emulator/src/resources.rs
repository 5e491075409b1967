//! What the emulator serves: the built-in resource types, the ones CustomResourceDefinitions
//! add, and the facts about each that the API conventions depend on (scope, names, status
//! subresource, list merge keys, supported field selectors, printer columns, schema).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::schema::{Cause, Schema};
use crate::table::{self, Column};

/// How the items of one list field merge (strategic merge patch and server-side apply).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListType {
    /// Items are identified by these keys (`x-kubernetes-list-type: map` with its
    /// `x-kubernetes-list-map-keys`). For built-in types the first key is the `patchMergeKey`,
    /// the only one strategic merge patch merges by (Service ports merge by `port` alone in a
    /// strategic merge patch, by `port` and `protocol` in server-side apply).
    Map(Vec<String>),
    /// Items are scalars merged as a set (`x-kubernetes-list-type: set`).
    Set,
}

/// List merge semantics by field path; a path names a list field, with `[]` for "inside the
/// items of a list": `spec.containers`, `spec.containers[].env`. Unlisted lists are atomic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListKeys {
    lists: BTreeMap<String, ListType>,
    /// Defaults of key fields, by list path: server-side apply identifies an item that omits
    /// one (a Service port without `protocol`) as if it had the default (`TCP`).
    key_defaults: BTreeMap<String, Map<String, Value>>,
}

impl ListKeys {
    pub fn get(&self, path: &str) -> Option<&ListType> {
        self.lists.get(path)
    }

    fn with(mut self, path: &str, list: ListType) -> Self {
        self.lists.insert(path.to_owned(), list);
        self
    }

    fn key_default(mut self, path: &str, key: &str, default: Value) -> Self {
        self.key_defaults
            .entry(path.to_owned())
            .or_default()
            .insert(key.to_owned(), default);
        self
    }

    /// Fills in the defaulted key fields an applied configuration omits, so that its items
    /// are identified like the stored (defaulted) ones.
    pub fn default_keys(&self, object: &mut Value) {
        for (path, defaults) in &self.key_defaults {
            let segments: Vec<&str> = path.split('.').collect();
            fill_key_defaults(object, &segments, defaults);
        }
    }

    fn keyed(self, path: &str, keys: &[&str]) -> Self {
        self.with(
            path,
            ListType::Map(keys.iter().map(|k| (*k).to_owned()).collect()),
        )
    }

    /// Lists every object's metadata has.
    fn metadata() -> Self {
        ListKeys::default()
            .keyed("metadata.ownerReferences", &["uid"])
            .with("metadata.finalizers", ListType::Set)
    }

    /// Reads `x-kubernetes-list-type` / `x-kubernetes-list-map-keys` from a CRD schema.
    fn from_schema(schema: &Value) -> Self {
        let mut keys = Self::metadata();
        collect_schema_lists(schema, String::new(), &mut keys);
        keys
    }
}

fn fill_key_defaults(value: &mut Value, path: &[&str], defaults: &Map<String, Value>) {
    let Some((segment, rest)) = path.split_first() else {
        for item in value.as_array_mut().into_iter().flatten() {
            if let Value::Object(item) = item {
                for (key, default) in defaults {
                    item.entry(key.clone()).or_insert_with(|| default.clone());
                }
            }
        }
        return;
    };
    let (field, each_item) = match segment.strip_suffix("[]") {
        Some(field) => (field, true),
        None => (*segment, false),
    };
    let Some(child) = value.get_mut(field) else {
        return;
    };
    if each_item {
        for item in child.as_array_mut().into_iter().flatten() {
            fill_key_defaults(item, rest, defaults);
        }
    } else {
        fill_key_defaults(child, rest, defaults);
    }
}

fn collect_schema_lists(schema: &Value, path: String, keys: &mut ListKeys) {
    if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
        for (name, property) in properties {
            if path.is_empty() && name == "metadata" {
                continue;
            }
            let child = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}.{name}")
            };
            collect_schema_lists(property, child, keys);
        }
    }
    if let Some(items) = schema.get("items") {
        match schema.get("x-kubernetes-list-type").and_then(Value::as_str) {
            Some("map") => {
                let map_keys = schema
                    .get("x-kubernetes-list-map-keys")
                    .and_then(Value::as_array)
                    .map(|keys| {
                        keys.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default();
                keys.lists.insert(path.clone(), ListType::Map(map_keys));
            }
            Some("set") => {
                keys.lists.insert(path.clone(), ListType::Set);
            }
            _ => {}
        }
        collect_schema_lists(items, format!("{path}[]"), keys);
    }
    if let Some(values) = schema.get("additionalProperties").filter(|v| v.is_object()) {
        collect_schema_lists(values, format!("{path}.*"), keys);
    }
}

/// One served resource type (one group/version/plural).
#[derive(Clone, Debug)]
pub struct ResourceType {
    /// `""` for the core group.
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub singular: String,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub namespaced: bool,
    pub status_subresource: bool,
    /// Whether `metadata.generation` counts changes of the object's spec (custom resources,
    /// and the built-in kinds whose strategies set it).
    pub tracks_generation: bool,
    /// Field selector paths supported besides `metadata.name` and `metadata.namespace`.
    pub field_selectors: Vec<String>,
    pub list_keys: ListKeys,
    pub columns: Vec<Column>,
    /// The CRD's structural schema, for custom resources.
    pub schema: Option<Arc<Schema>>,
    /// The same schema as written in the CRD, for `/openapi/v3`.
    pub open_api_schema: Option<Value>,
    /// The CRD that defines this type, for custom resources.
    pub crd: Option<String>,
}

impl ResourceType {
    /// `v1` or `group/version`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Where objects of this type are stored: every served version shares one storage, and so
    /// do the kinds served in two groups (events.k8s.io Events are core Events, see `convert`).
    pub fn storage_key(&self) -> (String, String) {
        crate::convert::storage_key(&self.group, &self.plural)
    }

    /// Whether strategic merge patches are accepted (built-in types only, as upstream).
    pub fn is_builtin(&self) -> bool {
        self.crd.is_none()
    }

    /// The path of this resource's collection, e.g. `/api/v1/namespaces/ns/pods`.
    pub fn collection_path(&self, namespace: Option<&str>) -> String {
        let prefix = if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        };
        match namespace {
            Some(ns) if self.namespaced => format!("{prefix}/namespaces/{ns}/{}", self.plural),
            _ => format!("{prefix}/{}", self.plural),
        }
    }

    /// Whether objects of this type have the `eviction` subresource (core Pods).
    pub fn has_eviction(&self) -> bool {
        self.group.is_empty() && self.plural == "pods"
    }

    pub fn supports_field(&self, path: &str) -> bool {
        path == "metadata.name"
            || (self.namespaced && path == "metadata.namespace")
            || self.field_selectors.iter().any(|f| f == path)
    }
}

struct Builtin {
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    short_names: &'static [&'static str],
    categories: &'static [&'static str],
    namespaced: bool,
    status: bool,
    generation: bool,
    fields: &'static [&'static str],
}

const BUILTINS: &[Builtin] = &[
    Builtin {
        group: "",
        version: "v1",
        kind: "Namespace",
        plural: "namespaces",
        short_names: &["ns"],
        categories: &[],
        namespaced: false,
        status: true,
        generation: false,
        fields: &["status.phase"],
    },
    Builtin {
        group: "",
        version: "v1",
        kind: "Pod",
        plural: "pods",
        short_names: &["po"],
        categories: &["all"],
        namespaced: true,
        status: true,
        generation: false,
        fields: &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
    },
    Builtin {
        group: "",
        version: "v1",
        kind: "ConfigMap",
        plural: "configmaps",
        short_names: &["cm"],
        categories: &[],
        namespaced: true,
        status: false,
        generation: false,
        fields: &[],
    },
    Builtin {
        group: "",
        version: "v1",
        kind: "Secret",
        plural: "secrets",
        short_names: &[],
        categories: &[],
        namespaced: true,
        status: false,
        generation: false,
        fields: &["type"],
    },
    Builtin {
        group: "",
        version: "v1",
        kind: "Event",
        plural: "events",
        short_names: &["ev"],
        categories: &[],
        namespaced: true,
        status: false,
        generation: false,
        fields: &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
    },
    Builtin {
        group: "",
        version: "v1",
        kind: "Node",
        plural: "nodes",
        short_names: &["no"],
        categories: &[],
        namespaced: false,
        status: true,
        generation: false,
        fields: &["spec.unschedulable"],
    },
    Builtin {
        group: "events.k8s.io",
        version: "v1",
        kind: "Event",
        plural: "events",
        short_names: &["ev"],
        categories: &[],
        namespaced: true,
        status: false,
        generation: false,
        // The labels `AddFieldLabelConversionsForEvent` (events/v1) maps to the core ones.
        fields: &[
            "regarding.kind",
            "regarding.namespace",
            "regarding.name",
            "regarding.uid",
            "regarding.apiVersion",
            "regarding.resourceVersion",
            "regarding.fieldPath",
            "reason",
            "reportingController",
            "type",
        ],
    },
    Builtin {
        group: "coordination.k8s.io",
        version: "v1",
        kind: "Lease",
        plural: "leases",
        short_names: &[],
        categories: &[],
        namespaced: true,
        status: false,
        generation: false,
        fields: &[],
    },
    Builtin {
        group: "apiextensions.k8s.io",
        version: "v1",
        kind: "CustomResourceDefinition",
        plural: "customresourcedefinitions",
        short_names: &["crd", "crds"],
        categories: &["api-extensions"],
        namespaced: false,
        status: true,
        generation: true,
        fields: &[],
    },
    Builtin {
        group: "",
        version: "v1",
        kind: "ServiceAccount",
        plural: "serviceaccounts",
        short_names: &["sa"],
        categories: &[],
        namespaced: true,
        status: false,
        generation: false,
        fields: &[],
    },
    Builtin {
        group: "",
        version: "v1",
        kind: "Service",
        plural: "services",
        short_names: &["svc"],
        categories: &["all"],
        namespaced: true,
        status: true,
        generation: false,
        fields: &["spec.clusterIP", "spec.type"],
    },
    Builtin {
        group: "apps",
        version: "v1",
        kind: "Deployment",
        plural: "deployments",
        short_names: &["deploy"],
        categories: &["all"],
        namespaced: true,
        status: true,
        generation: true,
        fields: &[],
    },
    Builtin {
        group: "apps",
        version: "v1",
        kind: "StatefulSet",
        plural: "statefulsets",
        short_names: &["sts"],
        categories: &["all"],
        namespaced: true,
        status: true,
        generation: true,
        fields: &[],
    },
    Builtin {
        group: "policy",
        version: "v1",
        kind: "PodDisruptionBudget",
        plural: "poddisruptionbudgets",
        short_names: &["pdb"],
        categories: &[],
        namespaced: true,
        status: true,
        generation: true,
        fields: &[],
    },
    Builtin {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        kind: "Role",
        plural: "roles",
        short_names: &[],
        categories: &[],
        namespaced: true,
        status: false,
        generation: false,
        fields: &[],
    },
    Builtin {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        kind: "RoleBinding",
        plural: "rolebindings",
        short_names: &[],
        categories: &[],
        namespaced: true,
        status: false,
        generation: false,
        fields: &[],
    },
    Builtin {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        kind: "ClusterRole",
        plural: "clusterroles",
        short_names: &[],
        categories: &[],
        namespaced: false,
        status: false,
        generation: false,
        fields: &[],
    },
    Builtin {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        kind: "ClusterRoleBinding",
        plural: "clusterrolebindings",
        short_names: &[],
        categories: &[],
        namespaced: false,
        status: false,
        generation: false,
        fields: &[],
    },
];

/// Merge keys of the built-in types' lists that the operator and its tests use
/// (`patchMergeKey` and `listMapKey` tags in k8s.io/api). Role rules and binding subjects are
/// atomic lists, replaced wholesale.
fn builtin_list_keys(kind: &str) -> ListKeys {
    let keys = ListKeys::metadata();
    match kind {
        "Pod" => pod_spec_keys(keys, "spec").keyed("status.conditions", &["type"]),
        // A StatefulSet's `volumeClaimTemplates` is atomic (`+listType=atomic`, no patch
        // strategy): patches and applies replace the whole list.
        "Deployment" | "StatefulSet" => {
            pod_spec_keys(keys, "spec.template.spec").keyed("status.conditions", &["type"])
        }
        "Service" => keys
            .keyed("spec.ports", &["port", "protocol"])
            .key_default("spec.ports", "protocol", json!("TCP"))
            .keyed("status.conditions", &["type"]),
        "Node" => keys
            .keyed("status.conditions", &["type"])
            .keyed("status.addresses", &["type"]),
        "Namespace" | "CustomResourceDefinition" | "PodDisruptionBudget" => {
            keys.keyed("status.conditions", &["type"])
        }
        _ => keys,
    }
}

/// The keyed lists of a pod spec at `spec` (a Pod's `spec`, a template's `spec.template.spec`).
fn pod_spec_keys(mut keys: ListKeys, spec: &str) -> ListKeys {
    keys = keys
        .keyed(&format!("{spec}.volumes"), &["name"])
        .keyed(&format!("{spec}.imagePullSecrets"), &["name"]);
    for containers in ["containers", "initContainers", "ephemeralContainers"] {
        let containers = format!("{spec}.{containers}");
        keys = keys
            .keyed(&containers, &["name"])
            .keyed(&format!("{containers}[].env"), &["name"])
            .keyed(
                &format!("{containers}[].ports"),
                &["containerPort", "protocol"],
            )
            .keyed(&format!("{containers}[].volumeMounts"), &["mountPath"]);
    }
    keys
}

/// The built-in types.
pub fn builtins() -> Vec<ResourceType> {
    BUILTINS
        .iter()
        .map(|b| ResourceType {
            group: b.group.to_owned(),
            version: b.version.to_owned(),
            kind: b.kind.to_owned(),
            plural: b.plural.to_owned(),
            singular: b.kind.to_lowercase(),
            short_names: b.short_names.iter().map(|s| (*s).to_owned()).collect(),
            categories: b.categories.iter().map(|s| (*s).to_owned()).collect(),
            namespaced: b.namespaced,
            status_subresource: b.status,
            tracks_generation: b.generation,
            field_selectors: b.fields.iter().map(|s| (*s).to_owned()).collect(),
            list_keys: builtin_list_keys(b.kind),
            columns: table::builtin_columns(b.group, b.kind),
            schema: None,
            open_api_schema: None,
            crd: None,
        })
        .collect()
}

/// The resource types a CRD serves (one per served version), or why the CRD is invalid.
pub fn from_crd(crd: &Value) -> Result<Vec<ResourceType>, Vec<Cause>> {
    let invalid = |field: &str, message: &str| {
        vec![Cause {
            reason: "FieldValueRequired".into(),
            message: message.into(),
            field: field.into(),
        }]
    };
    let spec = crd
        .get("spec")
        .ok_or_else(|| invalid("spec", "Required value"))?;
    let text = |v: &Value, key: &str| {
        v.get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let group = text(spec, "group");
    let names = spec.get("names").cloned().unwrap_or(Value::Null);
    let plural = text(&names, "plural");
    let kind = text(&names, "kind");
    if group.is_empty() {
        return Err(invalid("spec.group", "Required value"));
    }
    if plural.is_empty() {
        return Err(invalid("spec.names.plural", "Required value"));
    }
    if kind.is_empty() {
        return Err(invalid("spec.names.kind", "Required value"));
    }
    let name = crd
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if name != format!("{plural}.{group}") {
        return Err(vec![Cause {
            reason: "FieldValueInvalid".into(),
            message: format!(
                "Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"
            ),
            field: "metadata.name".into(),
        }]);
    }
    let scope = text(spec, "scope");
    if scope != "Namespaced" && scope != "Cluster" {
        return Err(vec![Cause {
            reason: "FieldValueNotSupported".into(),
            message: format!(
                "Unsupported value: \"{scope}\": supported values: \"Cluster\", \"Namespaced\""
            ),
            field: "spec.scope".into(),
        }]);
    }
    let strings = |v: &Value, key: &str| -> Vec<String> {
        v.get(key)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    let versions = spec
        .get("versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if versions.is_empty() {
        return Err(invalid(
            "spec.versions",
            "Required value: must have exactly one version marked as storage version",
        ));
    }
    let mut served = Vec::new();
    for (i, version) in versions.iter().enumerate() {
        if !version
            .get("served")
            .and_then(Value::as_bool)
            .unwrap_or(false)
        {
            continue;
        }
        let open_api = version.pointer("/schema/openAPIV3Schema").cloned().unwrap_or_else(|| serde_json::json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}));
        let schema = Schema::compile(&open_api).map_err(|causes| {
            causes
                .into_iter()
                .map(|c| Cause {
                    field: format!(
                        "spec.versions[{i}].schema.openAPIV3Schema{}{}",
                        if c.field.is_empty() { "" } else { "." },
                        c.field
                    ),
                    ..c
                })
                .collect::<Vec<_>>()
        })?;
        let columns = version
            .get("additionalPrinterColumns")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let selectable = version
            .get("selectableFields")
            .and_then(Value::as_array)
            .map(|fields| {
                fields
                    .iter()
                    .filter_map(|f| f.get("jsonPath").and_then(Value::as_str))
                    .map(|p| p.trim_start_matches('.').to_owned())
                    .collect()
            })
            .unwrap_or_default();
        served.push(ResourceType {
            group: group.clone(),
            version: text(version, "name"),
            kind: kind.clone(),
            plural: plural.clone(),
            singular: Some(text(&names, "singular"))
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| kind.to_lowercase()),
            short_names: strings(&names, "shortNames"),
            categories: strings(&names, "categories"),
            namespaced: scope == "Namespaced",
            status_subresource: version.pointer("/subresources/status").is_some(),
            tracks_generation: true,
            field_selectors: selectable,
            list_keys: ListKeys::from_schema(&open_api),
            columns: table::crd_columns(&columns),
            schema: Some(Arc::new(schema)),
            open_api_schema: Some(open_api),
            crd: Some(name.to_owned()),
        });
    }
    Ok(served)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn list_keys_come_from_the_schema() {
        let schema = json!({
            "type": "object",
            "properties": {
                "spec": {"type": "object", "properties": {
                    "trays": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["device"],
                              "items": {"type": "object", "properties": {"tags": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}}}}},
                    "ports": {"type": "array", "items": {"type": "string"}}
                }}
            }
        });
        let keys = ListKeys::from_schema(&schema);
        assert_eq!(
            keys.get("spec.trays"),
            Some(&ListType::Map(vec!["device".into()]))
        );
        assert_eq!(keys.get("spec.trays[].tags"), Some(&ListType::Set));
        assert_eq!(keys.get("spec.ports"), None, "atomic");
        assert_eq!(
            keys.get("metadata.ownerReferences"),
            Some(&ListType::Map(vec!["uid".into()]))
        );
    }

    #[test]
    fn the_kinds_a_chart_installs() {
        let find = |plural: &str| builtins().into_iter().find(|r| r.plural == plural).unwrap();
        /// (plural, group, kind, namespaced, short names, categories, status subresource)
        type Expected = (
            &'static str,
            &'static str,
            &'static str,
            bool,
            &'static [&'static str],
            &'static [&'static str],
            bool,
        );
        let expected: [Expected; 10] = [
            (
                "serviceaccounts",
                "",
                "ServiceAccount",
                true,
                &["sa"],
                &[],
                false,
            ),
            ("services", "", "Service", true, &["svc"], &["all"], true),
            ("pods", "", "Pod", true, &["po"], &["all"], true),
            (
                "deployments",
                "apps",
                "Deployment",
                true,
                &["deploy"],
                &["all"],
                true,
            ),
            (
                "statefulsets",
                "apps",
                "StatefulSet",
                true,
                &["sts"],
                &["all"],
                true,
            ),
            (
                "poddisruptionbudgets",
                "policy",
                "PodDisruptionBudget",
                true,
                &["pdb"],
                &[],
                true,
            ),
            (
                "roles",
                "rbac.authorization.k8s.io",
                "Role",
                true,
                &[],
                &[],
                false,
            ),
            (
                "rolebindings",
                "rbac.authorization.k8s.io",
                "RoleBinding",
                true,
                &[],
                &[],
                false,
            ),
            (
                "clusterroles",
                "rbac.authorization.k8s.io",
                "ClusterRole",
                false,
                &[],
                &[],
                false,
            ),
            (
                "clusterrolebindings",
                "rbac.authorization.k8s.io",
                "ClusterRoleBinding",
                false,
                &[],
                &[],
                false,
            ),
        ];
        for (plural, group, kind, namespaced, short, categories, status) in expected {
            let rt = find(plural);
            assert_eq!(
                (
                    rt.group.as_str(),
                    rt.kind.as_str(),
                    rt.namespaced,
                    rt.status_subresource
                ),
                (group, kind, namespaced, status),
                "{plural}"
            );
            assert_eq!(rt.short_names, short, "{plural}");
            assert_eq!(rt.categories, categories, "{plural}");
        }
        assert!(find("deployments").tracks_generation);
        assert!(find("poddisruptionbudgets").tracks_generation);
        assert!(!find("services").tracks_generation);
        assert!(find("services").supports_field("spec.clusterIP"));
        let deployments = find("deployments");
        assert_eq!(
            deployments.list_keys.get("spec.template.spec.containers"),
            Some(&ListType::Map(vec!["name".into()]))
        );
        assert_eq!(find("roles").list_keys.get("rules"), None, "atomic");
        let stateful_sets = find("statefulsets");
        assert!(stateful_sets.tracks_generation);
        assert_eq!(
            stateful_sets
                .list_keys
                .get("spec.template.spec.containers[].env"),
            Some(&ListType::Map(vec!["name".into()]))
        );
        assert_eq!(
            stateful_sets.list_keys.get("spec.volumeClaimTemplates"),
            None,
            "atomic"
        );
    }

    #[test]
    fn both_event_apis_share_the_core_storage() {
        let events: Vec<ResourceType> = builtins()
            .into_iter()
            .filter(|r| r.kind == "Event")
            .collect();
        assert_eq!(events.len(), 2);
        for rt in &events {
            assert_eq!(rt.storage_key(), ("".to_owned(), "events".to_owned()));
        }
        let new_api = events.iter().find(|r| !r.group.is_empty()).unwrap();
        assert!(new_api.supports_field("regarding.fieldPath"));
        assert!(!new_api.supports_field("involvedObject.name"));
        assert!(!new_api.supports_field("source"));
    }

    #[test]
    fn applied_service_ports_get_their_default_protocol() {
        let services = builtins()
            .into_iter()
            .find(|r| r.plural == "services")
            .unwrap();
        assert_eq!(
            services.list_keys.get("spec.ports"),
            Some(&ListType::Map(vec!["port".into(), "protocol".into()]))
        );
        let mut applied =
            json!({"spec": {"ports": [{"port": 80}, {"port": 53, "protocol": "UDP"}]}});
        services.list_keys.default_keys(&mut applied);
        assert_eq!(
            applied["spec"]["ports"],
            json!([{"port": 80, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}])
        );
        let mut no_ports = json!({"spec": {}});
        services.list_keys.default_keys(&mut no_ports);
        assert_eq!(no_ports, json!({"spec": {}}));
    }

    #[test]
    fn pods_merge_containers_by_name() {
        let pods = builtins().into_iter().find(|r| r.plural == "pods").unwrap();
        assert_eq!(
            pods.list_keys.get("spec.containers[].env"),
            Some(&ListType::Map(vec!["name".into()]))
        );
        assert!(pods.supports_field("spec.nodeName"));
        assert!(!pods.supports_field("spec.containers"));
        assert_eq!(
            pods.collection_path(Some("ns")),
            "/api/v1/namespaces/ns/pods"
        );
    }
}
