//! `/openapi/v3`: the documents kubectl reads before writing. kubectl looks for the
//! `fieldValidation` parameter on a resource's operations to decide that the server validates
//! (and then sends `fieldValidation=Strict` instead of validating client-side), and reads
//! custom resources' schemas from here. Built-in kinds get an open schema: the emulator does
//! not carry the built-in types' full OpenAPI.

use serde_json::{Value, json};

use crate::resources::ResourceType;

/// `/openapi/v3`: one entry per group-version, each with its document's URL.
pub fn root<'a>(types: impl Iterator<Item = &'a ResourceType>) -> Value {
    let mut paths = serde_json::Map::new();
    let mut group_versions: Vec<(String, String)> = types
        .map(|rt| (rt.group.clone(), rt.version.clone()))
        .collect();
    group_versions.sort();
    group_versions.dedup();
    for (group, version) in group_versions {
        let path = gv_path(&group, &version);
        paths.insert(
            path.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={}", 0)}),
        );
    }
    json!({"paths": paths})
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

fn query_parameter(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "query", "description": description, "schema": {"type": "string", "uniqueItems": true}})
}

fn schema_name(rt: &ResourceType) -> String {
    let group = if rt.group.is_empty() {
        "core".to_owned()
    } else {
        rt.group.clone()
    };
    format!("{group}.{}.{}", rt.version, rt.kind)
}

/// The OpenAPI v3 document of one group-version.
pub fn group_version<'a>(types: impl Iterator<Item = &'a ResourceType>) -> Value {
    let mut paths = serde_json::Map::new();
    let mut schemas = serde_json::Map::new();
    let write_parameters = || {
        json!([
            query_parameter(
                "dryRun",
                "When present, indicates that modifications should not be persisted."
            ),
            query_parameter(
                "fieldManager",
                "A name associated with the actor or entity that is making these changes."
            ),
            query_parameter(
                "fieldValidation",
                "Ignore, Warn or Strict: how to treat unknown or duplicate fields."
            )
        ])
    };
    for rt in types {
        let gvk = json!({"group": rt.group, "version": rt.version, "kind": rt.kind});
        let reference = json!({"$ref": format!("#/components/schemas/{}", schema_name(rt))});
        let body = json!({"content": {"*/*": {"schema": reference}}, "required": true});
        let ok = json!({"200": {"description": "OK", "content": {"application/json": {"schema": reference}}}});
        let operation = |action: &str, with_body: bool, write: bool| {
            let mut op = json!({"x-kubernetes-action": action, "x-kubernetes-group-version-kind": gvk, "responses": ok});
            if with_body {
                op["requestBody"] = body.clone();
            }
            if write {
                op["parameters"] = write_parameters();
            }
            op
        };
        let collection = rt.collection_path(Some("{namespace}"));
        paths.insert(
            collection.clone(),
            json!({"get": operation("list", false, false), "post": operation("post", true, true)}),
        );
        paths.insert(
            format!("{collection}/{{name}}"),
            json!({"get": operation("get", false, false), "put": operation("put", true, true), "patch": operation("patch", true, true), "delete": operation("delete", false, false)}),
        );
        if rt.status_subresource {
            paths.insert(format!("{collection}/{{name}}/status"), json!({"get": operation("get", false, false), "put": operation("put", true, true), "patch": operation("patch", true, true)}));
        }
        let mut schema = match &rt.crd {
            Some(_) => rt
                .open_api_schema
                .clone()
                .unwrap_or_else(|| json!({"type": "object"})),
            None => json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
        };
        schema["x-kubernetes-group-version-kind"] = json!([gvk]);
        schemas.insert(schema_name(rt), schema);
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": format!("v{}.{}.0", crate::server::VERSION.0, crate::server::VERSION.1)},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}
