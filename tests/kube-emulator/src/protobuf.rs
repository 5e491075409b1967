//! Request bodies in Kubernetes protobuf, for the built-in objects kubectl's typed commands
//! send that way (`kubectl create namespace|configmap|secret`), and policy/v1 `Eviction`s as
//! client-go's typed clients send them when set to protobuf (`kubectl drain` sends JSON). The
//! messages are declared here with the field tags of k8s.io/api's generated.proto; only the
//! fields those objects use.
//! Responses are always JSON (clients accept it and decode by Content-Type).

use std::collections::BTreeMap;

use base64::Engine;
use prost::Message;
use serde_json::{Map, Value, json};

/// Protobuf-encoded objects start with this, then a `runtime.Unknown`.
const MAGIC: &[u8] = b"k8s\0";

#[derive(Clone, PartialEq, Message)]
struct TypeMeta {
    #[prost(string, optional, tag = "1")]
    api_version: Option<String>,
    #[prost(string, optional, tag = "2")]
    kind: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct Unknown {
    #[prost(message, optional, tag = "1")]
    type_meta: Option<TypeMeta>,
    #[prost(bytes = "vec", optional, tag = "2")]
    raw: Option<Vec<u8>>,
}

#[derive(Clone, PartialEq, Message)]
struct OwnerReference {
    #[prost(string, optional, tag = "1")]
    kind: Option<String>,
    #[prost(string, optional, tag = "3")]
    name: Option<String>,
    #[prost(string, optional, tag = "4")]
    uid: Option<String>,
    #[prost(string, optional, tag = "5")]
    api_version: Option<String>,
    #[prost(bool, optional, tag = "6")]
    controller: Option<bool>,
    #[prost(bool, optional, tag = "7")]
    block_owner_deletion: Option<bool>,
}

#[derive(Clone, PartialEq, Message)]
struct ObjectMeta {
    #[prost(string, optional, tag = "1")]
    name: Option<String>,
    #[prost(string, optional, tag = "2")]
    generate_name: Option<String>,
    #[prost(string, optional, tag = "3")]
    namespace: Option<String>,
    #[prost(string, optional, tag = "5")]
    uid: Option<String>,
    #[prost(string, optional, tag = "6")]
    resource_version: Option<String>,
    #[prost(btree_map = "string, string", tag = "11")]
    labels: BTreeMap<String, String>,
    #[prost(btree_map = "string, string", tag = "12")]
    annotations: BTreeMap<String, String>,
    #[prost(message, repeated, tag = "13")]
    owner_references: Vec<OwnerReference>,
    #[prost(string, repeated, tag = "14")]
    finalizers: Vec<String>,
}

#[derive(Clone, PartialEq, Message)]
struct NamespaceSpec {
    #[prost(string, repeated, tag = "1")]
    finalizers: Vec<String>,
}

#[derive(Clone, PartialEq, Message)]
struct Namespace {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
    #[prost(message, optional, tag = "2")]
    spec: Option<NamespaceSpec>,
}

#[derive(Clone, PartialEq, Message)]
struct ConfigMap {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
    #[prost(btree_map = "string, string", tag = "2")]
    data: BTreeMap<String, String>,
    #[prost(btree_map = "string, bytes", tag = "3")]
    binary_data: BTreeMap<String, Vec<u8>>,
    #[prost(bool, optional, tag = "4")]
    immutable: Option<bool>,
}

#[derive(Clone, PartialEq, Message)]
struct Secret {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
    #[prost(btree_map = "string, bytes", tag = "2")]
    data: BTreeMap<String, Vec<u8>>,
    #[prost(string, optional, tag = "3")]
    type_: Option<String>,
    #[prost(btree_map = "string, string", tag = "4")]
    string_data: BTreeMap<String, String>,
    #[prost(bool, optional, tag = "5")]
    immutable: Option<bool>,
}

#[derive(Clone, PartialEq, Message)]
struct Preconditions {
    #[prost(string, optional, tag = "1")]
    uid: Option<String>,
    #[prost(string, optional, tag = "2")]
    resource_version: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct DeleteOptions {
    #[prost(int64, optional, tag = "1")]
    grace_period_seconds: Option<i64>,
    #[prost(message, optional, tag = "2")]
    preconditions: Option<Preconditions>,
    #[prost(bool, optional, tag = "3")]
    orphan_dependents: Option<bool>,
    #[prost(string, optional, tag = "4")]
    propagation_policy: Option<String>,
    #[prost(string, repeated, tag = "5")]
    dry_run: Vec<String>,
}

/// policy/v1 (and v1beta1) `Eviction`.
#[derive(Clone, PartialEq, Message)]
struct Eviction {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
    #[prost(message, optional, tag = "2")]
    delete_options: Option<DeleteOptions>,
}

fn delete_options_json(options: DeleteOptions) -> Value {
    let mut out = Map::new();
    if let Some(grace) = options.grace_period_seconds {
        out.insert("gracePeriodSeconds".into(), json!(grace));
    }
    if let Some(preconditions) = options.preconditions {
        let mut map = Map::new();
        if let Some(uid) = preconditions.uid {
            map.insert("uid".into(), json!(uid));
        }
        if let Some(version) = preconditions.resource_version {
            map.insert("resourceVersion".into(), json!(version));
        }
        out.insert("preconditions".into(), Value::Object(map));
    }
    if let Some(orphan) = options.orphan_dependents {
        out.insert("orphanDependents".into(), json!(orphan));
    }
    if let Some(policy) = options.propagation_policy.filter(|p| !p.is_empty()) {
        out.insert("propagationPolicy".into(), json!(policy));
    }
    if !options.dry_run.is_empty() {
        out.insert("dryRun".into(), json!(options.dry_run));
    }
    Value::Object(out)
}

fn base64(bytes: &[u8]) -> Value {
    json!(base64::engine::general_purpose::STANDARD.encode(bytes))
}

fn metadata_json(meta: Option<ObjectMeta>) -> Value {
    let meta = meta.unwrap_or_default();
    let mut out = Map::new();
    let mut put = |key: &str, value: Option<Value>| {
        if let Some(value) = value {
            out.insert(key.into(), value);
        }
    };
    // Go's protobuf encoder writes empty strings; JSON would have omitted them.
    let text = |value: Option<String>| value.filter(|v| !v.is_empty()).map(Value::from);
    put("name", text(meta.name));
    put("generateName", text(meta.generate_name));
    put("namespace", text(meta.namespace));
    put("uid", text(meta.uid));
    put("resourceVersion", text(meta.resource_version));
    put(
        "labels",
        (!meta.labels.is_empty()).then(|| json!(meta.labels)),
    );
    put(
        "annotations",
        (!meta.annotations.is_empty()).then(|| json!(meta.annotations)),
    );
    put(
        "finalizers",
        (!meta.finalizers.is_empty()).then(|| json!(meta.finalizers)),
    );
    let owners: Vec<Value> = meta
        .owner_references
        .into_iter()
        .map(|o| json!({"apiVersion": o.api_version, "kind": o.kind, "name": o.name, "uid": o.uid, "controller": o.controller, "blockOwnerDeletion": o.block_owner_deletion}))
        .collect();
    put(
        "ownerReferences",
        (!owners.is_empty()).then(|| json!(owners)),
    );
    Value::Object(out)
}

/// Decodes a protobuf request body into the JSON object it stands for.
pub fn decode(bytes: &[u8]) -> Result<Value, String> {
    let body = bytes
        .strip_prefix(MAGIC)
        .ok_or("not a Kubernetes protobuf message (missing the k8s magic prefix)")?;
    let unknown = Unknown::decode(body).map_err(|e| format!("invalid protobuf envelope: {e}"))?;
    let type_meta = unknown.type_meta.unwrap_or_default();
    let (api_version, kind) = (
        type_meta.api_version.unwrap_or_default(),
        type_meta.kind.unwrap_or_default(),
    );
    let raw = unknown.raw.unwrap_or_default();
    let bad = |e: prost::DecodeError| format!("invalid protobuf {kind}: {e}");
    let mut object = match (api_version.as_str(), kind.as_str()) {
        ("v1", "Namespace") => {
            let ns = Namespace::decode(raw.as_slice()).map_err(bad)?;
            let mut object = json!({"metadata": metadata_json(ns.metadata)});
            if let Some(spec) = ns.spec.filter(|s| !s.finalizers.is_empty()) {
                object["spec"] = json!({"finalizers": spec.finalizers});
            }
            object
        }
        ("v1", "ConfigMap") => {
            let cm = ConfigMap::decode(raw.as_slice()).map_err(bad)?;
            let mut object = json!({"metadata": metadata_json(cm.metadata)});
            if !cm.data.is_empty() {
                object["data"] = json!(cm.data);
            }
            if !cm.binary_data.is_empty() {
                object["binaryData"] = Value::Object(
                    cm.binary_data
                        .iter()
                        .map(|(k, v)| (k.clone(), base64(v)))
                        .collect(),
                );
            }
            if let Some(immutable) = cm.immutable {
                object["immutable"] = json!(immutable);
            }
            object
        }
        ("v1", "Secret") => {
            let secret = Secret::decode(raw.as_slice()).map_err(bad)?;
            let mut object = json!({"metadata": metadata_json(secret.metadata)});
            if !secret.data.is_empty() {
                object["data"] = Value::Object(
                    secret
                        .data
                        .iter()
                        .map(|(k, v)| (k.clone(), base64(v)))
                        .collect(),
                );
            }
            if !secret.string_data.is_empty() {
                object["stringData"] = json!(secret.string_data);
            }
            if let Some(kind) = secret.type_ {
                object["type"] = json!(kind);
            }
            if let Some(immutable) = secret.immutable {
                object["immutable"] = json!(immutable);
            }
            object
        }
        ("policy/v1" | "policy/v1beta1", "Eviction") => {
            let eviction = Eviction::decode(raw.as_slice()).map_err(bad)?;
            let mut object = json!({"metadata": metadata_json(eviction.metadata)});
            if let Some(options) = eviction.delete_options {
                object["deleteOptions"] = delete_options_json(options);
            }
            object
        }
        _ => {
            return Err(format!(
                "protobuf is not supported for {api_version} {kind}; send JSON"
            ));
        }
    };
    object["apiVersion"] = json!(api_version);
    object["kind"] = json!(kind);
    Ok(object)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
        let unknown = Unknown {
            type_meta: Some(TypeMeta {
                api_version: Some(api_version.into()),
                kind: Some(kind.into()),
            }),
            raw: Some(raw),
        };
        [MAGIC, unknown.encode_to_vec().as_slice()].concat()
    }

    #[test]
    fn decodes_what_kubectl_create_sends() {
        let meta = ObjectMeta {
            name: Some("demo".into()),
            labels: BTreeMap::from([("a".into(), "b".into())]),
            ..ObjectMeta::default()
        };
        let ns = Namespace {
            metadata: Some(meta.clone()),
            spec: None,
        };
        assert_eq!(
            decode(&envelope("v1", "Namespace", ns.encode_to_vec())).unwrap(),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "demo", "labels": {"a": "b"}}})
        );
        let cm = ConfigMap {
            metadata: Some(meta.clone()),
            data: BTreeMap::from([("k".into(), "v".into())]),
            ..ConfigMap::default()
        };
        assert_eq!(
            decode(&envelope("v1", "ConfigMap", cm.encode_to_vec())).unwrap()["data"],
            json!({"k": "v"})
        );
        let secret = Secret {
            metadata: Some(meta),
            data: BTreeMap::from([("k".into(), b"v".to_vec())]),
            type_: Some("Opaque".into()),
            ..Secret::default()
        };
        let decoded = decode(&envelope("v1", "Secret", secret.encode_to_vec())).unwrap();
        assert_eq!(
            (decoded["data"]["k"].as_str(), decoded["type"].as_str()),
            (Some("dg=="), Some("Opaque"))
        );
        let eviction = Eviction {
            metadata: Some(ObjectMeta {
                name: Some("p".into()),
                namespace: Some("ns".into()),
                ..ObjectMeta::default()
            }),
            delete_options: Some(DeleteOptions {
                grace_period_seconds: Some(5),
                dry_run: vec!["All".into()],
                ..DeleteOptions::default()
            }),
        };
        assert_eq!(
            decode(&envelope("policy/v1", "Eviction", eviction.encode_to_vec())).unwrap(),
            json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "p", "namespace": "ns"},
                   "deleteOptions": {"gracePeriodSeconds": 5, "dryRun": ["All"]}})
        );
        assert!(
            decode(&envelope("v1", "Pod", vec![]))
                .unwrap_err()
                .contains("send JSON")
        );
        assert!(decode(b"nope").is_err());
    }
}
