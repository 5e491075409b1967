//! Conformance of the emulator through the real `kube::Client`. Each expectation is what the
//! Kubernetes API documentation specifies (API concepts, API conventions, CRD and server-side
//! apply pages); the page is named where the behaviour is subtle.

mod common;

use std::time::Duration;

use common::{Bed, api_error, widget};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Namespace, Pod};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions, WatchEvent,
    WatchParams,
};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use kube_emulator::{Action, Matcher};
use serde_json::json;

fn config_map(name: &str, labels: serde_json::Value) -> ConfigMap {
    serde_json::from_value(
        json!({"metadata": {"name": name, "labels": labels}, "data": {"k": "v"}}),
    )
    .unwrap()
}

fn pod(name: &str, node: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"nodeName": node, "containers": [{"name": "pfs", "image": "pfs:1", "env": [{"name": "A", "value": "1"}]}]},
    }))
    .unwrap()
}

#[tokio::test]
async fn discovery_reports_version_1_33_and_crd_resources() {
    let bed = Bed::start().await;
    let version = bed.client.apiserver_version().await.unwrap();
    assert_eq!(
        (version.major.as_str(), version.minor.as_str()),
        ("1", "33")
    );
    bed.install_widgets().await;
    let discovery = kube::discovery::Discovery::new(bed.client.clone())
        .run()
        .await
        .unwrap();
    let (resource, caps) = discovery
        .groups()
        .flat_map(|g| g.recommended_resources())
        .find(|(r, _)| r.plural == "widgets")
        .expect("widgets discovered after the CRD is created");
    assert_eq!(
        (
            resource.group.as_str(),
            resource.version.as_str(),
            resource.kind.as_str()
        ),
        ("test.pureflash.io", "v1alpha1", "Widget")
    );
    assert_eq!(caps.scope, kube::discovery::Scope::Namespaced);
    assert!(caps.subresources.iter().any(|(r, _)| r.plural == "status"));
}

#[tokio::test]
async fn create_generate_name_and_already_exists() {
    let bed = Bed::start().await;
    let ns = bed.namespace("create").await;
    let maps: Api<ConfigMap> = Api::namespaced(bed.client.clone(), &ns);
    let generated: ConfigMap =
        serde_json::from_value(json!({"metadata": {"generateName": "cfg-"}})).unwrap();
    let created = maps
        .create(&PostParams::default(), &generated)
        .await
        .unwrap();
    let name = created.name_any();
    // generateName: the prefix plus five random characters (API conventions, idempotency).
    assert!(name.starts_with("cfg-") && name.len() == 9, "{name}");
    assert!(created.uid().is_some() && created.metadata.creation_timestamp.is_some());
    assert!(created.resource_version().is_some());

    maps.create(&PostParams::default(), &config_map("c", json!({})))
        .await
        .unwrap();
    let error = api_error(
        maps.create(&PostParams::default(), &config_map("c", json!({})))
            .await,
    );
    assert_eq!((error.code, error.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(error.message, "configmaps \"c\" already exists");
    let missing = api_error(maps.get("nope").await);
    assert_eq!(
        (
            missing.code,
            missing.reason.as_str(),
            missing.message.as_str()
        ),
        (404, "NotFound", "configmaps \"nope\" not found")
    );
    let no_namespace: Api<ConfigMap> = Api::namespaced(bed.client.clone(), "absent");
    assert_eq!(
        api_error(
            no_namespace
                .create(&PostParams::default(), &config_map("c", json!({})))
                .await
        )
        .code,
        404
    );
}

#[tokio::test]
async fn list_selectors_and_pagination() {
    let bed = Bed::start().await;
    let ns = bed.namespace("list").await;
    let maps: Api<ConfigMap> = Api::namespaced(bed.client.clone(), &ns);
    for (name, labels) in [
        ("a", json!({"tier": "db", "env": "prod"})),
        ("b", json!({"tier": "web"})),
        ("c", json!({"tier": "db"})),
    ] {
        maps.create(&PostParams::default(), &config_map(name, labels))
            .await
            .unwrap();
    }
    let names = |list: kube::core::ObjectList<ConfigMap>| {
        list.items.iter().map(|c| c.name_any()).collect::<Vec<_>>()
    };
    assert_eq!(
        names(
            maps.list(&ListParams::default().labels("tier=db"))
                .await
                .unwrap()
        ),
        ["a", "c"]
    );
    assert_eq!(
        names(
            maps.list(&ListParams::default().labels("tier in (web),env!=prod"))
                .await
                .unwrap()
        ),
        ["b"]
    );
    assert_eq!(
        names(
            maps.list(&ListParams::default().labels("!env"))
                .await
                .unwrap()
        ),
        ["b", "c"]
    );
    assert_eq!(
        names(
            maps.list(&ListParams::default().fields("metadata.name=c"))
                .await
                .unwrap()
        ),
        ["c"]
    );
    let unsupported = api_error(maps.list(&ListParams::default().fields("data.k=v")).await);
    assert_eq!(
        (unsupported.code, unsupported.message.as_str()),
        (400, "field label not supported: data.k")
    );

    // Pagination: limit + continue (API concepts, "Retrieving large results sets in chunks").
    let first = maps.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(names(first.clone()), ["a", "b"]);
    let token = first.metadata.continue_.clone().expect("continue token");
    assert_eq!(first.metadata.remaining_item_count, Some(1));
    let second = maps
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(names(second.clone()), ["c"]);
    assert!(second.metadata.continue_.is_none());

    let pods: Api<Pod> = Api::namespaced(bed.client.clone(), &ns);
    pods.create(&PostParams::default(), &pod("p1", "node-a"))
        .await
        .unwrap();
    pods.create(&PostParams::default(), &pod("p2", "node-b"))
        .await
        .unwrap();
    let on_a = pods
        .list(&ListParams::default().fields("spec.nodeName=node-a"))
        .await
        .unwrap();
    assert_eq!(
        on_a.items.iter().map(|p| p.name_any()).collect::<Vec<_>>(),
        ["p1"]
    );
}

#[tokio::test]
async fn optimistic_concurrency_and_no_op_updates() {
    let bed = Bed::start().await;
    let ns = bed.namespace("occ").await;
    let leases: Api<Lease> = Api::namespaced(bed.client.clone(), &ns);
    let lease: Lease = serde_json::from_value(
        json!({"metadata": {"name": "leader"}, "spec": {"holderIdentity": "a"}}),
    )
    .unwrap();
    let created = leases.create(&PostParams::default(), &lease).await.unwrap();
    let mut first = created.clone();
    first.spec.as_mut().unwrap().holder_identity = Some("b".into());
    let updated = leases
        .replace("leader", &PostParams::default(), &first)
        .await
        .unwrap();
    assert_ne!(updated.resource_version(), created.resource_version());
    // The second writer still holds the old resourceVersion: 409 Conflict (API concepts,
    // "Resource versions": updates are rejected when the version does not match).
    let mut second = created.clone();
    second.spec.as_mut().unwrap().holder_identity = Some("c".into());
    let conflict = api_error(
        leases
            .replace("leader", &PostParams::default(), &second)
            .await,
    );
    assert_eq!((conflict.code, conflict.reason.as_str()), (409, "Conflict"));
    assert!(
        conflict.message.contains("the object has been modified"),
        "{}",
        conflict.message
    );
    // Writing what is already stored changes nothing, not even the resourceVersion.
    let again = leases
        .replace("leader", &PostParams::default(), &updated)
        .await
        .unwrap();
    assert_eq!(again.resource_version(), updated.resource_version());
    // A Lease written without a version is refused (its strategy's AllowUnconditionalUpdate
    // is false): 422, the field named.
    let mut blind = updated.clone();
    blind.metadata.resource_version = None;
    blind.spec.as_mut().unwrap().holder_identity = Some("d".into());
    let refused = api_error(
        leases
            .replace("leader", &PostParams::default(), &blind)
            .await,
    );
    assert_eq!((refused.code, refused.reason.as_str()), (422, "Invalid"));
    assert!(
        refused.message.contains("metadata.resourceVersion"),
        "{}",
        refused.message
    );
}

#[tokio::test]
async fn status_subresource_generation_and_observed_fields() {
    let bed = Bed::start().await;
    bed.install_widgets().await;
    let ns = bed.namespace("status").await;
    let widgets = bed.widgets(&ns);
    let created = widgets
        .create(&PostParams::default(), &widget("w", 1))
        .await
        .unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    assert_eq!(
        created.data["spec"]["pullPolicy"], "IfNotPresent",
        "schema defaults are applied"
    );
    assert!(
        created.data.get("status").is_none(),
        "status is dropped on create when it is a subresource"
    );
    // Except a Node's, which its kubelet registers it with.
    use k8s_openapi::api::core::v1::Node;
    let nodes: Api<Node> = Api::all(bed.client.clone());
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": "status-node"},
        "status": {"addresses": [{"type": "InternalIP", "address": "10.1.2.3"}]},
    }))
    .unwrap();
    let node = nodes.create(&PostParams::default(), &node).await.unwrap();
    assert_eq!(
        node.status.and_then(|s| s.addresses).unwrap()[0].address,
        "10.1.2.3"
    );
    nodes
        .delete("status-node", &DeleteParams::default())
        .await
        .unwrap();

    // Status written through the main resource is ignored; spec changes bump generation.
    let patched = widgets
        .patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"nodeName": "node-b"}, "status": {"phase": "Online"}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.metadata.generation, Some(2));
    assert!(patched.data.get("status").is_none());
    // Through /status only status changes, and generation does not move.
    let status = widgets
        .patch_status("w", &PatchParams::default(), &Patch::Merge(json!({"spec": {"nodeName": "x"}, "status": {"phase": "Online", "observedGeneration": 2}})))
        .await
        .unwrap();
    assert_eq!(status.data["status"]["phase"], "Online");
    assert_eq!(status.data["spec"]["nodeName"], "node-b");
    assert_eq!(status.metadata.generation, Some(2));
    // A status apply pinned to a version the object has moved past is refused.
    let apply_status = |version: &str| {
        Patch::Apply(
            json!({"apiVersion": "test.pureflash.io/v1alpha1", "kind": "Widget",
            "metadata": {"name": "w", "resourceVersion": version},
            "status": {"phase": "Offline"}}),
        )
    };
    let error = api_error(
        widgets
            .patch_status(
                "w",
                &PatchParams::apply("op").force(),
                &apply_status(&patched.resource_version().unwrap()),
            )
            .await,
    );
    assert_eq!(error.code, 409);
    let applied = widgets
        .patch_status(
            "w",
            &PatchParams::apply("op").force(),
            &apply_status(&status.resource_version().unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(applied.data["status"]["phase"], "Offline");
    // A custom resource update must carry a resourceVersion.
    let mut without_rv = widget("w", 1);
    without_rv.metadata.resource_version = None;
    let error = api_error(
        widgets
            .replace("w", &PostParams::default(), &without_rv)
            .await,
    );
    assert_eq!(error.code, 422);
}

#[tokio::test]
async fn crd_schemas_and_cel_rules_are_enforced() {
    let bed = Bed::start().await;
    bed.install_widgets().await;
    let ns = bed.namespace("schema").await;
    let widgets = bed.widgets(&ns);
    let mut bad = widget("bad", 0);
    bad.data["spec"]["devices"] = json!([{"path": "sda"}]);
    bad.data["spec"]["pullPolicy"] = json!("Sometimes");
    let error = api_error(widgets.create(&PostParams::default(), &bad).await);
    assert_eq!((error.code, error.reason.as_str()), (422, "Invalid"));
    let causes: Vec<(String, String)> = error
        .details
        .unwrap()
        .causes
        .into_iter()
        .map(|c| (c.field, c.reason))
        .collect();
    assert!(
        causes.contains(&("spec.id".into(), "FieldValueInvalid".into())),
        "{causes:?}"
    );
    assert!(
        causes.contains(&("spec.devices[0].path".into(), "FieldValueInvalid".into())),
        "{causes:?}"
    );
    assert!(
        causes.contains(&("spec.pullPolicy".into(), "FieldValueNotSupported".into())),
        "{causes:?}"
    );

    let mut missing = widget("missing", 1);
    missing.data["spec"]
        .as_object_mut()
        .unwrap()
        .remove("devices");
    let error = api_error(widgets.create(&PostParams::default(), &missing).await);
    assert!(
        error.message.contains("spec.devices: Required value"),
        "{}",
        error.message
    );

    let mut rule = widget("rule", 1);
    rule.data["spec"]["minRestarts"] = json!(9);
    let error = api_error(widgets.create(&PostParams::default(), &rule).await);
    assert!(
        error
            .message
            .contains("maxRestarts must not be below minRestarts"),
        "{}",
        error.message
    );

    // Transition rule `self == oldSelf`: create succeeds, changing the id does not.
    widgets
        .create(&PostParams::default(), &widget("w", 7))
        .await
        .unwrap();
    let error = api_error(
        widgets
            .patch(
                "w",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"id": 8}})),
            )
            .await,
    );
    assert_eq!(error.code, 422);
    assert!(
        error
            .message
            .contains("spec.id: Invalid value: 8: id is immutable"),
        "{}",
        error.message
    );

    // Unknown fields: pruned with a warning by default, rejected under Strict validation.
    let mut unknown = widget("unknown", 2);
    unknown.data["spec"]["bogus"] = json!(1);
    let stored = widgets
        .create(&PostParams::default(), &unknown)
        .await
        .unwrap();
    assert!(stored.data["spec"].get("bogus").is_none());
}

#[tokio::test]
async fn patches_merge_json_strategic() {
    let bed = Bed::start().await;
    let ns = bed.namespace("patch").await;
    let pods: Api<Pod> = Api::namespaced(bed.client.clone(), &ns);
    pods.create(&PostParams::default(), &pod("p", "node-a"))
        .await
        .unwrap();
    // Strategic merge: containers merge by name (patchMergeKey), so the image alone changes;
    // replacing the list would have dropped the container's env.
    let patched = pods
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"containers": [{"name": "pfs", "image": "pfs:2"}]}})),
        )
        .await
        .unwrap();
    let container = &patched.spec.unwrap().containers[0];
    assert_eq!(container.image.as_deref(), Some("pfs:2"));
    assert_eq!(
        container
            .env
            .as_ref()
            .unwrap()
            .iter()
            .map(|e| e.name.as_str())
            .collect::<Vec<_>>(),
        ["A"]
    );
    // Env merges by name too, but a Pod's spec is immutable beyond its images.
    let error = api_error(
        pods.patch("p", &PatchParams::default(), &Patch::Strategic(json!({"spec": {"containers": [{"name": "pfs", "env": [{"name": "B", "value": "2"}]}]}})))
            .await,
    );
    assert_eq!((error.code, error.reason.as_str()), (422, "Invalid"));
    assert!(
        error.message.contains("pod updates may not change fields"),
        "{}",
        error.message
    );

    let maps: Api<ConfigMap> = Api::namespaced(bed.client.clone(), &ns);
    maps.create(&PostParams::default(), &config_map("c", json!({"a": "1"})))
        .await
        .unwrap();
    let merged = maps
        .patch(
            "c",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"a": null, "b": "2"}}})),
        )
        .await
        .unwrap();
    assert_eq!(
        merged.labels().clone(),
        std::collections::BTreeMap::from([("b".to_owned(), "2".to_owned())])
    );
    let json_patch: json_patch::Patch =
        serde_json::from_value(json!([{"op": "add", "path": "/data/x", "value": "y"}])).unwrap();
    let patched = maps
        .patch("c", &PatchParams::default(), &Patch::<()>::Json(json_patch))
        .await
        .unwrap();
    assert_eq!(patched.data.unwrap()["x"], "y");
    let failing: json_patch::Patch =
        serde_json::from_value(json!([{"op": "test", "path": "/data/x", "value": "z"}])).unwrap();
    assert_eq!(
        api_error(
            maps.patch("c", &PatchParams::default(), &Patch::<()>::Json(failing))
                .await
        )
        .code,
        422
    );

    // Strategic merge patch is not supported for custom resources (415).
    bed.install_widgets().await;
    let widgets = bed.widgets(&ns);
    widgets
        .create(&PostParams::default(), &widget("w", 1))
        .await
        .unwrap();
    let error = api_error(
        widgets
            .patch(
                "w",
                &PatchParams::default(),
                &Patch::Strategic(json!({"spec": {"nodeName": "x"}})),
            )
            .await,
    );
    assert_eq!(error.code, 415);
}

#[tokio::test]
async fn server_side_apply_owns_fields_and_reports_conflicts() {
    let bed = Bed::start().await;
    let ns = bed.namespace("ssa").await;
    let maps: Api<ConfigMap> = Api::namespaced(bed.client.clone(), &ns);
    let config = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"owned": "1"}});
    let created = maps
        .patch("c", &PatchParams::apply("operator"), &Patch::Apply(&config))
        .await
        .unwrap();
    let managers: Vec<(String, String)> = created
        .metadata
        .managed_fields
        .clone()
        .unwrap()
        .into_iter()
        .map(|m| (m.manager.unwrap(), m.operation.unwrap()))
        .collect();
    assert_eq!(managers, [("operator".to_owned(), "Apply".to_owned())]);

    // Another applier setting a different value conflicts (409 with one cause per field).
    let other = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"owned": "2"}});
    let conflict = api_error(
        maps.patch(
            "c",
            &PatchParams::apply("someone-else"),
            &Patch::Apply(&other),
        )
        .await,
    );
    assert_eq!((conflict.code, conflict.reason.as_str()), (409, "Conflict"));
    assert!(
        conflict.message.contains("conflict with \"operator\"")
            || conflict.message.contains("- operator: .data.owned"),
        "{}",
        conflict.message
    );
    // Forcing takes the field over.
    let forced = maps
        .patch(
            "c",
            &PatchParams::apply("someone-else").force(),
            &Patch::Apply(&other),
        )
        .await
        .unwrap();
    assert_eq!(forced.data.unwrap()["owned"], "2");
    // Re-applying unchanged configuration is a no-op.
    let before = maps.get("c").await.unwrap();
    let again = maps
        .patch(
            "c",
            &PatchParams::apply("someone-else").force(),
            &Patch::Apply(&other),
        )
        .await
        .unwrap();
    assert_eq!(again.resource_version(), before.resource_version());
    // Fields the applier drops are removed.
    let dropped =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {}});
    let after = maps
        .patch(
            "c",
            &PatchParams::apply("someone-else").force(),
            &Patch::Apply(&dropped),
        )
        .await
        .unwrap();
    assert!(after.data.clone().unwrap_or_default().is_empty());

    // A resourceVersion in the applied configuration is a precondition, on the object and on
    // its status alike: a stale one is refused whole, the current one is applied.
    let stale = before.resource_version().unwrap();
    let current = after.resource_version().unwrap();
    let pinned = |version: &str| {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "c", "resourceVersion": version}, "data": {"late": "1"}})
    };
    let error = api_error(
        maps.patch(
            "c",
            &PatchParams::apply("someone-else").force(),
            &Patch::Apply(pinned(&stale)),
        )
        .await,
    );
    assert_eq!((error.code, error.reason.as_str()), (409, "Conflict"));
    assert!(
        error.message.contains("the object has been modified"),
        "{}",
        error.message
    );
    assert!(
        maps.get("c")
            .await
            .unwrap()
            .data
            .unwrap_or_default()
            .is_empty()
    );
    let applied = maps
        .patch(
            "c",
            &PatchParams::apply("someone-else").force(),
            &Patch::Apply(pinned(&current)),
        )
        .await
        .unwrap();
    assert_ne!(applied.resource_version().unwrap(), current);
    assert_eq!(applied.data.unwrap()["late"], "1");
}

#[tokio::test]
async fn delete_preconditions_finalizers_and_graceful_pods() {
    let bed = Bed::start().await;
    let ns = bed.namespace("delete").await;
    let maps: Api<ConfigMap> = Api::namespaced(bed.client.clone(), &ns);
    maps.create(&PostParams::default(), &config_map("c", json!({})))
        .await
        .unwrap();
    let wrong_uid = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some("nope".into()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    let error = api_error(maps.delete("c", &wrong_uid).await);
    assert_eq!(error.code, 409);
    assert!(
        error
            .message
            .contains("Precondition failed: UID in precondition: nope"),
        "{}",
        error.message
    );

    // Finalizers: delete sets deletionTimestamp; removing the last finalizer deletes.
    let mut guarded = config_map("f", json!({}));
    guarded.metadata.finalizers = Some(vec!["test/hold".into()]);
    maps.create(&PostParams::default(), &guarded).await.unwrap();
    maps.delete("f", &DeleteParams::default()).await.unwrap();
    let terminating = maps.get("f").await.unwrap();
    assert!(terminating.metadata.deletion_timestamp.is_some());
    maps.patch(
        "f",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert_eq!(api_error(maps.get("f").await).code, 404);

    // A bound pod is deleted gracefully (deletionTimestamp + grace period) unless grace is 0.
    let pods: Api<Pod> = Api::namespaced(bed.client.clone(), &ns);
    let created = pods
        .create(&PostParams::default(), &pod("p", "node-a"))
        .await
        .unwrap();
    pods.delete("p", &DeleteParams::default()).await.unwrap();
    let pending = pods.get("p").await.unwrap();
    assert_eq!(pending.metadata.deletion_grace_period_seconds, Some(30));
    let force = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: created.uid(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    pods.delete("p", &force).await.unwrap();
    assert_eq!(api_error(pods.get("p").await).code, 404);

    // A pod a finalizer holds: a deletion asked again changes nothing (no longer grace, no
    // new resourceVersion); a force delete shortens it to 0, and the pod goes with the
    // finalizer.
    let mut held = pod("h", "node-a");
    held.metadata.finalizers = Some(vec!["test/hold".into()]);
    pods.create(&PostParams::default(), &held).await.unwrap();
    pods.delete("h", &DeleteParams::default()).await.unwrap();
    let first = pods.get("h").await.unwrap();
    assert_eq!(first.metadata.deletion_grace_period_seconds, Some(30));
    let longer = DeleteParams {
        grace_period_seconds: Some(60),
        ..DeleteParams::default()
    };
    pods.delete("h", &longer).await.unwrap();
    pods.delete("h", &DeleteParams::default()).await.unwrap();
    let again = pods.get("h").await.unwrap();
    assert_eq!(
        again.metadata.deletion_timestamp,
        first.metadata.deletion_timestamp
    );
    assert_eq!(again.resource_version(), first.resource_version());
    // A shorter grace counts from the first request (`rest.BeforeDelete`): the timestamp
    // moves back by the grace taken off, not forward from now.
    let first_at = first.metadata.deletion_timestamp.as_ref().unwrap().0;
    pods.delete("h", &DeleteParams::default().grace_period(10))
        .await
        .unwrap();
    let shorter = pods.get("h").await.unwrap();
    assert_eq!(shorter.metadata.deletion_grace_period_seconds, Some(10));
    assert_eq!(
        shorter.metadata.deletion_timestamp.unwrap().0,
        first_at - jiff::SignedDuration::from_secs(20)
    );
    pods.delete("h", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    let forced = pods.get("h").await.unwrap();
    assert_eq!(forced.metadata.deletion_grace_period_seconds, Some(0));
    assert_eq!(
        forced.metadata.deletion_timestamp.unwrap().0,
        first_at - jiff::SignedDuration::from_secs(30)
    );
    pods.patch(
        "h",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert_eq!(api_error(pods.get("h").await).code, 404);

    // An unbound pod goes at once.
    pods.create(&PostParams::default(), &pod("q", ""))
        .await
        .unwrap();
    pods.delete("q", &DeleteParams::default()).await.unwrap();
    assert_eq!(api_error(pods.get("q").await).code, 404);
}

/// A ConfigMap named `owned` whose controller is `owner`.
fn owned_by(owner: &kube::api::DynamicObject) -> ConfigMap {
    let mut owned = config_map("owned", json!({}));
    owned.metadata.owner_references = Some(vec![
        owner
            .controller_owner_ref(&common::widget_resource())
            .unwrap(),
    ]);
    owned
}

#[tokio::test]
async fn owner_references_are_garbage_collected() {
    let bed = Bed::start().await;
    bed.install_widgets().await;
    let ns = bed.namespace("gc").await;
    let widgets = bed.widgets(&ns);
    let owner = widgets
        .create(&PostParams::default(), &widget("w", 1))
        .await
        .unwrap();
    let maps: Api<ConfigMap> = Api::namespaced(bed.client.clone(), &ns);
    maps.create(&PostParams::default(), &owned_by(&owner))
        .await
        .unwrap();
    widgets.delete("w", &DeleteParams::default()).await.unwrap();
    assert_eq!(
        api_error(maps.get("owned").await).code,
        404,
        "dependents go with their owner"
    );
    // One controller at most, each owner named in full (ValidateOwnerReferences).
    let reference = |uid: &str| json!({"apiVersion": "v1", "kind": "Widget", "name": uid, "uid": uid, "controller": true});
    let two_controllers: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "two", "ownerReferences": [reference("a"), reference("b")]},
    }))
    .unwrap();
    let refused = api_error(maps.create(&PostParams::default(), &two_controllers).await);
    assert_eq!(refused.code, 422);
    assert!(
        refused
            .message
            .contains("Only one reference can have Controller set to true"),
        "{}",
        refused.message
    );
}

/// `propagationPolicy: Orphan` on an owner a finalizer holds: its dependents lose the
/// reference at once (the garbage collector's `orphan` finalizer does not wait for the others)
/// and stay when the owner finally goes. Marking the owner for deletion bumps its generation.
#[tokio::test]
async fn an_owner_held_by_a_finalizer_orphans_its_dependents_at_once() {
    let bed = Bed::start().await;
    bed.install_widgets().await;
    let ns = bed.namespace("gc-orphan").await;
    let widgets = bed.widgets(&ns);
    let mut held = widget("w", 1);
    held.metadata.finalizers = Some(vec!["test.example.com/hold".into()]);
    let owner = widgets.create(&PostParams::default(), &held).await.unwrap();
    let generation = owner.metadata.generation.unwrap();
    let maps: Api<ConfigMap> = Api::namespaced(bed.client.clone(), &ns);
    maps.create(&PostParams::default(), &owned_by(&owner))
        .await
        .unwrap();

    widgets.delete("w", &DeleteParams::orphan()).await.unwrap();
    let deleting = widgets.get("w").await.unwrap();
    assert!(deleting.metadata.deletion_timestamp.is_some());
    assert_eq!(deleting.metadata.generation, Some(generation + 1));
    let orphaned = maps.get("owned").await.unwrap();
    assert!(
        orphaned
            .metadata
            .owner_references
            .as_ref()
            .is_none_or(Vec::is_empty),
        "{:?}",
        orphaned.metadata.owner_references
    );

    widgets
        .patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
    assert_eq!(api_error(widgets.get("w").await).code, 404);
    assert!(maps.get("owned").await.is_ok(), "orphaned, not collected");
}

#[tokio::test]
async fn namespace_deletion_removes_its_content() {
    let bed = Bed::start().await;
    let ns = bed.namespace("doomed").await;
    let maps: Api<ConfigMap> = Api::namespaced(bed.client.clone(), &ns);
    maps.create(&PostParams::default(), &config_map("c", json!({})))
        .await
        .unwrap();
    let namespaces: Api<Namespace> = Api::all(bed.client.clone());
    namespaces
        .delete(&ns, &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(api_error(namespaces.get(&ns).await).code, 404);
    assert_eq!(api_error(maps.get("c").await).code, 404);
}

#[tokio::test]
async fn watches_resume_bookmark_expire_and_time_out() {
    let bed = Bed::start().await;
    let ns = bed.namespace("watch").await;
    let maps: Api<ConfigMap> = Api::namespaced(bed.client.clone(), &ns);
    let created = maps
        .create(&PostParams::default(), &config_map("a", json!({})))
        .await
        .unwrap();
    let rv = created.resource_version().unwrap();
    maps.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "2"}})),
    )
    .await
    .unwrap();
    maps.delete("a", &DeleteParams::default()).await.unwrap();

    // Resuming at a resourceVersion replays exactly what happened after it.
    let events: Vec<String> = maps
        .watch(&WatchParams::default().timeout(1), &rv)
        .await
        .unwrap()
        .take(2)
        .map_ok(|e| {
            match e {
                WatchEvent::Added(_) => "ADDED",
                WatchEvent::Modified(_) => "MODIFIED",
                WatchEvent::Deleted(_) => "DELETED",
                WatchEvent::Bookmark(_) => "BOOKMARK",
                WatchEvent::Error(_) => "ERROR",
            }
            .to_owned()
        })
        .try_collect()
        .await
        .unwrap();
    assert_eq!(events, ["MODIFIED", "DELETED"]);

    // After compaction an old resourceVersion is 410 Gone (API concepts, "410 Gone responses").
    bed.emulator.compact();
    let mut stream = maps
        .watch(&WatchParams::default().timeout(5), &rv)
        .await
        .unwrap()
        .boxed();
    match stream.next().await {
        Some(Ok(WatchEvent::Error(status))) => {
            assert_eq!((status.code, status.reason.as_str()), (410, "Expired"))
        }
        other => panic!("expected 410, got {other:?}"),
    }

    // Bookmarks when asked; the stream ends at timeoutSeconds.
    let current = bed.emulator.resource_version().to_string();
    let started = std::time::Instant::now();
    let events: Vec<WatchEvent<ConfigMap>> = maps
        // Bookmarks come every 2 s: two chances before the stream ends, on a slow machine too.
        .watch(&WatchParams::default().timeout(5), &current)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert!(
        events.iter().any(|e| matches!(e, WatchEvent::Bookmark(_))),
        "bookmarks were requested"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "timeoutSeconds ends the watch"
    );
}

#[tokio::test]
async fn watches_see_objects_enter_and_leave_a_selection() {
    let bed = Bed::start().await;
    let ns = bed.namespace("sel").await;
    let maps: Api<ConfigMap> = Api::namespaced(bed.client.clone(), &ns);
    let mut stream = maps
        .watch(&WatchParams::default().labels("app=x").timeout(10), "0")
        .await
        .unwrap()
        .boxed();
    maps.create(
        &PostParams::default(),
        &config_map("c", json!({"app": "y"})),
    )
    .await
    .unwrap();
    maps.patch(
        "c",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "x"}}})),
    )
    .await
    .unwrap();
    maps.patch(
        "c",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "z"}}})),
    )
    .await
    .unwrap();
    let first = stream.next().await.unwrap().unwrap();
    let second = stream.next().await.unwrap().unwrap();
    assert!(
        matches!(first, WatchEvent::Added(_)),
        "entering the selection is ADDED: {first:?}"
    );
    assert!(
        matches!(second, WatchEvent::Deleted(_)),
        "leaving it is DELETED: {second:?}"
    );
}

#[tokio::test]
async fn a_runtime_watcher_survives_dropped_streams_and_compaction() {
    let bed = Bed::start().await;
    let ns = bed.namespace("runtime").await;
    let maps: Api<ConfigMap> = Api::namespaced(bed.client.clone(), &ns);
    let mut events = watcher::watcher(maps.clone(), watcher::Config::default()).boxed();
    let mut names = std::collections::BTreeSet::new();
    maps.create(&PostParams::default(), &config_map("one", json!({})))
        .await
        .unwrap();
    let next_named = async |events: &mut futures::stream::BoxStream<
        '_,
        Result<watcher::Event<ConfigMap>, watcher::Error>,
    >,
                            names: &mut std::collections::BTreeSet<String>,
                            want: &str| {
        tokio::time::timeout(Duration::from_secs(20), async {
            while !names.contains(want) {
                if let Some(Ok(watcher::Event::Apply(cm) | watcher::Event::InitApply(cm))) =
                    events.next().await
                {
                    names.insert(cm.name_any());
                }
            }
        })
        .await
        .expect("watcher delivered the object");
    };
    next_named(&mut events, &mut names, "one").await;
    bed.emulator.drop_watches();
    maps.create(&PostParams::default(), &config_map("two", json!({})))
        .await
        .unwrap();
    next_named(&mut events, &mut names, "two").await;
    bed.emulator.compact();
    bed.emulator.drop_watches();
    maps.create(&PostParams::default(), &config_map("three", json!({})))
        .await
        .unwrap();
    next_named(&mut events, &mut names, "three").await;
}

#[tokio::test]
async fn injected_faults_are_served_then_clear() {
    let bed = Bed::start().await;
    let ns = bed.namespace("faults").await;
    let maps: Api<ConfigMap> = Api::namespaced(bed.client.clone(), &ns);
    maps.create(&PostParams::default(), &config_map("c", json!({})))
        .await
        .unwrap();
    let patch = Patch::Merge(json!({"data": {"k": "2"}}));
    bed.emulator.faults().inject(
        Matcher::verb("patch").on("configmaps"),
        Action::Fail(500),
        2,
    );
    assert_eq!(
        api_error(maps.patch("c", &PatchParams::default(), &patch).await).code,
        500
    );
    assert_eq!(
        api_error(maps.patch("c", &PatchParams::default(), &patch).await).code,
        500
    );
    maps.patch("c", &PatchParams::default(), &patch)
        .await
        .expect("the third patch goes through");
    // kube::Client retries 429 by default, honouring Retry-After: a throttled request is
    // invisible to it. A client without retries sees the 429 itself.
    bed.emulator.faults().inject(
        Matcher::verb("get").on("configmaps").named("c"),
        Action::Fail(429),
        1,
    );
    maps.get("c").await.expect("a 429 is retried by the client");
    let mut config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::from_yaml(&bed.emulator.kubeconfig()).unwrap(),
        &Default::default(),
    )
    .await
    .unwrap();
    config.default_retry = false;
    let no_retry: Api<ConfigMap> = Api::namespaced(kube::Client::try_from(config).unwrap(), &ns);
    bed.emulator.faults().inject(
        Matcher::verb("get").on("configmaps").named("c"),
        Action::Fail(429),
        1,
    );
    let throttled = api_error(no_retry.get("c").await);
    assert_eq!(
        (throttled.code, throttled.reason.as_str()),
        (429, "TooManyRequests")
    );
    bed.emulator
        .faults()
        .inject(Matcher::verb("update"), Action::Fail(409), 1);
    let current = maps.get("c").await.unwrap();
    assert_eq!(
        api_error(maps.replace("c", &PostParams::default(), &current).await).code,
        409
    );
    bed.emulator.faults().inject(
        Matcher::verb("get"),
        Action::Delay(Duration::from_millis(300)),
        1,
    );
    let started = std::time::Instant::now();
    maps.get("c").await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));
}

// ---------------------------------------------------------------------------------------------
// Events: core/v1 and events.k8s.io/v1 are two views of one stored object (API reference,
// events.k8s.io/v1 Event: "deprecatedSource", "deprecatedCount"… are the core fields; the API
// server converts between the versions and stores each Event once).

use k8s_openapi::api::events::v1::Event as NewEvent;
use kube::runtime::events::{Event as Recorded, EventType, Recorder, Reporter};

fn operator_recorder(bed: &Bed) -> Recorder {
    Recorder::new(
        bed.client.clone(),
        Reporter {
            controller: "pureflash.io/operator".into(),
            instance: Some("operator-0".into()),
        },
    )
}

fn restarted() -> Recorded {
    Recorded {
        type_: EventType::Warning,
        reason: "Restarted".into(),
        note: Some("pod deleted to recover the store".into()),
        action: "Recover".into(),
        secondary: None,
    }
}

#[tokio::test]
async fn events_recorded_through_events_k8s_io_are_core_events() {
    let bed = Bed::start().await;
    let ns = bed.namespace("events").await;
    let pods: Api<Pod> = Api::namespaced(bed.client.clone(), &ns);
    let pod = pods
        .create(&PostParams::default(), &pod("p", ""))
        .await
        .unwrap();
    let uid = pod.uid().unwrap();
    // kube-rs's Recorder: a create through events.k8s.io/v1, then a merge patch of its series.
    let recorder = operator_recorder(&bed);
    recorder
        .publish(&restarted(), &pod.object_ref(&()))
        .await
        .unwrap();
    recorder
        .publish(&restarted(), &pod.object_ref(&()))
        .await
        .unwrap();

    // What `kubectl describe` asks for: core Events about the object, by field selector.
    let core: Api<Event> = Api::namespaced(bed.client.clone(), &ns);
    let about_pod = format!(
        "involvedObject.name=p,involvedObject.namespace={ns},involvedObject.kind=Pod,involvedObject.uid={uid}"
    );
    let listed = core
        .list(&ListParams::default().fields(&about_pod))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1, "one event, its series patched");
    let event = &listed.items[0];
    assert_eq!(
        event.message.as_deref(),
        Some("pod deleted to recover the store")
    );
    assert_eq!(
        (
            event.reason.as_deref(),
            event.type_.as_deref(),
            event.action.as_deref()
        ),
        (Some("Restarted"), Some("Warning"), Some("Recover"))
    );
    assert_eq!(
        (
            event.reporting_component.as_deref(),
            event.reporting_instance.as_deref()
        ),
        (Some("pureflash.io/operator"), Some("operator-0"))
    );
    assert_eq!(event.involved_object.uid.as_deref(), Some(uid.as_str()));
    assert_eq!(event.series.as_ref().and_then(|s| s.count), Some(2));
    assert!(event.event_time.is_some());
    assert_eq!(event.count, None, "singleton-style events carry no count");
    assert_eq!(event.first_timestamp, None);

    // The same object through events.k8s.io: same name, same resourceVersion.
    let new_api: Api<NewEvent> = Api::namespaced(bed.client.clone(), &ns);
    let same = new_api.get(&event.name_any()).await.unwrap();
    assert_eq!(
        same.metadata.resource_version,
        event.metadata.resource_version
    );
    assert_eq!(same.note, event.message);
    assert_eq!(
        same.regarding.as_ref().and_then(|r| r.uid.as_deref()),
        Some(uid.as_str())
    );
    assert_eq!(
        same.reporting_controller.as_deref(),
        Some("pureflash.io/operator")
    );

    // Field selectors of each version, on the one object.
    for selector in [
        "reason=Restarted,type=Warning",
        "reportingComponent=pureflash.io/operator",
        // No source: the reporting controller stands in (ToSelectableFields).
        "source=pureflash.io/operator",
        "involvedObject.apiVersion=v1",
    ] {
        let found = core.list(&ListParams::default().fields(selector)).await;
        assert_eq!(found.unwrap().items.len(), 1, "core {selector}");
    }
    for (selector, expected) in [
        ("regarding.name=p,regarding.kind=Pod", 1),
        (&*format!("regarding.uid={uid}"), 1),
        (
            "reportingController=pureflash.io/operator,reason=Restarted",
            1,
        ),
        ("regarding.kind=Node", 0),
        ("type!=Warning", 0),
    ] {
        let found = new_api.list(&ListParams::default().fields(selector)).await;
        assert_eq!(
            found.unwrap().items.len(),
            expected,
            "events.k8s.io {selector}"
        );
    }
    // Each version has its own field labels.
    for (error, label) in [
        (
            api_error(
                new_api
                    .list(&ListParams::default().fields("involvedObject.name=p"))
                    .await,
            ),
            "involvedObject.name",
        ),
        (
            api_error(
                new_api
                    .list(&ListParams::default().fields("source=x"))
                    .await,
            ),
            "source",
        ),
        (
            api_error(
                core.list(&ListParams::default().fields("regarding.name=p"))
                    .await,
            ),
            "regarding.name",
        ),
    ] {
        assert_eq!(
            (error.code, error.message),
            (400, format!("field label not supported: {label}"))
        );
    }
}

#[tokio::test]
async fn core_events_read_through_events_k8s_io() {
    let bed = Bed::start().await;
    let ns = bed.namespace("events").await;
    let core: Api<Event> = Api::namespaced(bed.client.clone(), &ns);
    let event: Event = serde_json::from_value(json!({
        "metadata": {"generateName": "w."},
        "involvedObject": {"apiVersion": "test.pureflash.io/v1alpha1", "kind": "Widget", "name": "w", "namespace": ns, "uid": "u-1"},
        "reason": "Killing", "message": "Stopping container pfs", "type": "Normal",
        "source": {"component": "kubelet", "host": "node-a"},
        "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": "2026-01-01T00:05:00Z", "count": 3,
    }))
    .unwrap();
    let created = core.create(&PostParams::default(), &event).await.unwrap();
    let new_api: Api<NewEvent> = Api::namespaced(bed.client.clone(), &ns);
    let listed = new_api
        .list(&ListParams::default().fields("regarding.name=w,reason=Killing"))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);
    let seen = &listed.items[0];
    assert_eq!(seen.metadata.name, created.metadata.name);
    assert_eq!(
        seen.metadata.resource_version,
        created.metadata.resource_version
    );
    assert_eq!(seen.note.as_deref(), Some("Stopping container pfs"));
    assert_eq!(
        seen.regarding
            .as_ref()
            .map(|r| (r.kind.as_deref(), r.uid.as_deref())),
        Some((Some("Widget"), Some("u-1")))
    );
    let source = seen.deprecated_source.as_ref().unwrap();
    assert_eq!(
        (source.component.as_deref(), source.host.as_deref()),
        (Some("kubelet"), Some("node-a"))
    );
    assert_eq!(seen.deprecated_count, Some(3));
    assert_eq!(
        seen.deprecated_first_timestamp, created.first_timestamp,
        "firstTimestamp"
    );
    assert_eq!(seen.deprecated_last_timestamp, created.last_timestamp);
    assert_eq!(seen.event_time, None);

    // events.k8s.io/v1 holds updates to its own rules (`ValidateEventUpdate`): what an Event
    // says is immutable there, only its series and metadata may change.
    let rejected = api_error(
        new_api
            .patch(
                &created.name_any(),
                &PatchParams::default(),
                &Patch::Merge(json!({"note": "Stopped container pfs", "deprecatedCount": 4})),
            )
            .await,
    );
    assert_eq!(rejected.code, 422);
    assert_eq!(
        rejected.message,
        format!(
            "Event.events.k8s.io \"{}\" is invalid: [message: Invalid value: \"Stopped container pfs\": field is immutable, count: Invalid value: 4: field is immutable]",
            created.name_any()
        )
    );
    // A write through events.k8s.io is a write of the core Event.
    let patched = new_api
        .patch(
            &created.name_any(),
            &PatchParams::default(),
            &Patch::Merge(
                json!({"series": {"count": 4, "lastObservedTime": "2026-01-01T00:06:00.000000Z"}}),
            ),
        )
        .await
        .unwrap();
    let core_view = core.get(&created.name_any()).await.unwrap();
    assert_eq!(core_view.series.as_ref().and_then(|s| s.count), Some(4));
    assert_eq!(core_view.message.as_deref(), Some("Stopping container pfs"));
    assert_eq!(
        core_view.metadata.resource_version,
        patched.metadata.resource_version
    );
    // core/v1 keeps the legacy rules: a controller may still rewrite its message and count.
    let patched = core
        .patch(
            &created.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({"message": "Stopped container pfs", "count": 4})),
        )
        .await
        .unwrap();
    let seen = new_api.get(&created.name_any()).await.unwrap();
    assert_eq!(seen.note.as_deref(), Some("Stopped container pfs"));
    assert_eq!(seen.deprecated_count, Some(4));
    let core_view = core.get(&created.name_any()).await.unwrap();
    assert_eq!(
        core_view.metadata.resource_version,
        patched.metadata.resource_version
    );
    // A PUT of what was read, unchanged, is no write.
    let replaced = core
        .replace(&created.name_any(), &PostParams::default(), &core_view)
        .await
        .unwrap();
    assert_eq!(
        replaced.metadata.resource_version,
        core_view.metadata.resource_version
    );
    new_api
        .delete(&created.name_any(), &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(api_error(core.get(&created.name_any()).await).code, 404);
}

/// `ValidateEventCreate` for events.k8s.io/v1 (API reference, Event v1 events.k8s.io: "note …
/// must be at most 1kB in size", "eventTime is the time when this Event was first observed. It
/// is required."): a new-API Event names its reporter and action, has an eventTime, a known
/// type, a real series, short texts, and none of the deprecated fields.
#[tokio::test]
async fn events_k8s_io_holds_new_events_to_its_rules() {
    let bed = Bed::start().await;
    let ns = bed.namespace("events").await;
    let new_api: Api<NewEvent> = Api::namespaced(bed.client.clone(), &ns);
    let good = json!({
        "metadata": {"name": "store-1.1"},
        "eventTime": "2026-01-01T00:00:00.000000Z",
        "regarding": {"kind": "PureFlashStore", "name": "store-1", "namespace": ns},
        "reportingController": "pureflash-operator", "reportingInstance": "operator-0",
        "action": "Restart", "reason": "StoreRestarted", "type": "Warning",
        "note": "x".repeat(1024),
    });
    let with = |changes: serde_json::Value| -> NewEvent {
        let mut event = good.clone();
        for (key, value) in changes.as_object().unwrap() {
            if value.is_null() {
                event.as_object_mut().unwrap().remove(key);
            } else {
                event[key] = value.clone();
            }
        }
        serde_json::from_value(event).unwrap()
    };
    let invalid = async |event: NewEvent| -> String {
        let error = api_error(new_api.create(&PostParams::default(), &event).await);
        assert_eq!((error.code, error.reason.as_str()), (422, "Invalid"));
        error.message
    };
    let head = "Event.events.k8s.io \"store-1.1\" is invalid: ";
    assert_eq!(
        invalid(with(json!({"note": "x".repeat(1025)}))).await,
        format!("{head}message: Invalid value: \"\": can have at most 1024 characters")
    );
    assert_eq!(
        invalid(with(json!({"eventTime": null}))).await,
        format!("{head}eventTime: Required value")
    );
    assert_eq!(
        invalid(with(
            json!({"series": {"count": 1, "lastObservedTime": "2026-01-01T00:00:01.000000Z"}})
        ))
        .await,
        format!("{head}series.count: Invalid value: \"\": should be at least 2")
    );
    assert_eq!(
        invalid(with(
            json!({"action": null, "reportingInstance": "i".repeat(129)})
        ))
        .await,
        format!(
            "{head}[reportingInstance: Invalid value: \"\": can have at most 128 characters, action: Required value]"
        )
    );
    assert_eq!(
        invalid(with(json!({"type": "Error", "deprecatedCount": 2}))).await,
        format!(
            "{head}[type: Invalid value: \"\": has invalid value: Error, deprecatedCount: Invalid value: \"\": needs to be unset]"
        )
    );
    assert!(
        invalid(with(json!({"reportingController": "pureflash operator"})))
            .await
            .starts_with(&format!(
                "{head}reportingController: Invalid value: \"pureflash operator\""
            )),
    );

    // What passes is stored; its series may grow, nothing else changes.
    let created = new_api
        .create(&PostParams::default(), &with(json!({})))
        .await
        .unwrap();
    assert_eq!(created.note.map(|n| n.len()), Some(1024));
    let series = json!({"series": {"count": 2, "lastObservedTime": "2026-01-01T00:00:05.000000Z"}});
    new_api
        .patch("store-1.1", &PatchParams::default(), &Patch::Merge(series))
        .await
        .unwrap();
    let error = api_error(
        new_api
            .patch(
                "store-1.1",
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"eventTime": "2026-01-01T00:00:09.000000Z", "reason": "Other"}),
                ),
            )
            .await,
    );
    assert_eq!(
        error.message,
        format!(
            "{head}[reason: Invalid value: \"Other\": field is immutable, eventTime: Invalid value: \"2026-01-01T00:00:09.000000Z\": field is immutable]"
        )
    );
}

#[tokio::test]
async fn event_watches_through_either_api_see_every_write() {
    let bed = Bed::start().await;
    let ns = bed.namespace("events").await;
    let core: Api<Event> = Api::namespaced(bed.client.clone(), &ns);
    let new_api: Api<NewEvent> = Api::namespaced(bed.client.clone(), &ns);
    let mut new_watch = new_api
        .watch(&WatchParams::default().timeout(10), "0")
        .await
        .unwrap()
        .boxed();
    let mut core_watch = core
        .watch(
            &WatchParams::default()
                .fields("involvedObject.name=w")
                .timeout(10),
            "0",
        )
        .await
        .unwrap()
        .boxed();
    /// (type, resourceVersion, the note or message)
    fn seen_new(event: WatchEvent<NewEvent>) -> (&'static str, String, String) {
        match event {
            WatchEvent::Added(e) => (
                "ADDED",
                e.resource_version().unwrap(),
                e.note.unwrap_or_default(),
            ),
            WatchEvent::Modified(e) => (
                "MODIFIED",
                e.resource_version().unwrap(),
                e.note.unwrap_or_default(),
            ),
            WatchEvent::Deleted(e) => (
                "DELETED",
                e.resource_version().unwrap(),
                e.note.unwrap_or_default(),
            ),
            other => panic!("unexpected {other:?}"),
        }
    }
    fn seen_core(event: WatchEvent<Event>) -> (&'static str, String, String) {
        match event {
            WatchEvent::Added(e) => (
                "ADDED",
                e.resource_version().unwrap(),
                e.message.unwrap_or_default(),
            ),
            WatchEvent::Modified(e) => (
                "MODIFIED",
                e.resource_version().unwrap(),
                e.message.unwrap_or_default(),
            ),
            WatchEvent::Deleted(e) => (
                "DELETED",
                e.resource_version().unwrap(),
                e.message.unwrap_or_default(),
            ),
            other => panic!("unexpected {other:?}"),
        }
    }

    // Created through core/v1.
    let event: Event = serde_json::from_value(json!({
        "metadata": {"name": "w.1"},
        "involvedObject": {"kind": "Widget", "name": "w", "namespace": ns},
        "reason": "Degraded", "message": "tray 1 is slow", "type": "Warning",
    }))
    .unwrap();
    let created = core.create(&PostParams::default(), &event).await.unwrap();
    let rv = created.resource_version().unwrap();
    let expected = ("ADDED", rv, "tray 1 is slow".to_owned());
    assert_eq!(
        seen_new(new_watch.try_next().await.unwrap().unwrap()),
        expected
    );
    assert_eq!(
        seen_core(core_watch.try_next().await.unwrap().unwrap()),
        expected
    );

    // Patched through events.k8s.io/v1 (its series: the rest is immutable there).
    let patched = new_api
        .patch(
            "w.1",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"series": {"count": 2, "lastObservedTime": "2026-01-01T00:01:00.000000Z"}}),
            ),
        )
        .await
        .unwrap();
    let expected = (
        "MODIFIED",
        patched.resource_version().unwrap(),
        "tray 1 is slow".to_owned(),
    );
    assert_eq!(
        seen_new(new_watch.try_next().await.unwrap().unwrap()),
        expected
    );
    assert_eq!(
        seen_core(core_watch.try_next().await.unwrap().unwrap()),
        expected
    );

    // Re-aimed at another object (through core/v1, where that is allowed): it leaves the core
    // watch's selection.
    core.patch(
        "w.1",
        &PatchParams::default(),
        &Patch::Merge(json!({"involvedObject": {"name": "w2"}})),
    )
    .await
    .unwrap();
    assert_eq!(
        seen_new(new_watch.try_next().await.unwrap().unwrap()).0,
        "MODIFIED"
    );
    assert_eq!(
        seen_core(core_watch.try_next().await.unwrap().unwrap()).0,
        "DELETED"
    );

    // Deleted through core/v1.
    core.delete("w.1", &DeleteParams::default()).await.unwrap();
    assert_eq!(
        seen_new(new_watch.try_next().await.unwrap().unwrap()).0,
        "DELETED"
    );
    assert!(
        new_api
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

// ---------------------------------------------------------------------------------------------
// Authentication and RBAC authorization (kubernetes.io/docs/reference/access-authn-authz/rbac/
// and authorization/): a token's requests are allowed only by the rules bound to its user.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Node, Secret, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube_emulator::AuditRecord;

const OP: &str = "system:serviceaccount:pf:op";

/// Creates an object as the administrator.
async fn admin_create<K>(bed: &Bed, namespace: Option<&str>, object: serde_json::Value) -> K
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(bed.client.clone(), namespace.unwrap_or("default"));
    api.create(
        &PostParams::default(),
        &serde_json::from_value(object).unwrap(),
    )
    .await
    .unwrap()
}

async fn admin_create_cluster<K>(bed: &Bed, object: serde_json::Value) -> K
where
    K: kube::Resource<Scope = k8s_openapi::ClusterResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::all(bed.client.clone());
    api.create(
        &PostParams::default(),
        &serde_json::from_value(object).unwrap(),
    )
    .await
    .unwrap()
}

fn service_account_subject(namespace: &str, name: &str) -> serde_json::Value {
    json!([{"kind": "ServiceAccount", "name": name, "namespace": namespace}])
}

fn forbidden(status: &kube::core::Status) -> (u16, &str, &str) {
    (status.code, status.reason.as_str(), status.message.as_str())
}

/// The ServiceAccount `pf/op`, and a Role granting it what the RBAC page's examples grant:
/// reading pods and patching their status.
async fn service_account_with_pod_reader(bed: &Bed) {
    bed.namespace("pf").await;
    bed.namespace("other").await;
    admin_create::<ServiceAccount>(bed, Some("pf"), json!({"metadata": {"name": "op"}})).await;
    admin_create::<Role>(
        bed,
        Some("pf"),
        json!({
            "metadata": {"name": "pod-reader"},
            "rules": [
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": [""], "resources": ["pods/status"], "verbs": ["patch"]},
            ],
        }),
    )
    .await;
    admin_create::<RoleBinding>(bed, Some("pf"), json!({
        "metadata": {"name": "op-pod-reader"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
        "subjects": service_account_subject("pf", "op"),
    }))
    .await;
    for namespace in ["pf", "other"] {
        let pods: Api<Pod> = Api::namespaced(bed.client.clone(), namespace);
        pods.create(&PostParams::default(), &pod("p", ""))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_role_binding_grants_a_service_account_its_role_in_its_namespace() {
    let bed = Bed::start().await;
    service_account_with_pod_reader(&bed).await;
    let token = bed.emulator.service_account_token("pf", "op");
    let client = bed.client_with_token(&token).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "pf");

    let listed = pods.list(&ListParams::default()).await.unwrap();
    assert_eq!(
        listed
            .items
            .iter()
            .map(|p| p.name_any())
            .collect::<Vec<_>>(),
        ["p"]
    );
    pods.get("p").await.unwrap();
    let mut events = pods
        .watch(&WatchParams::default().timeout(1), "0")
        .await
        .unwrap()
        .boxed();
    assert!(matches!(
        events.next().await,
        Some(Ok(WatchEvent::Added(_)))
    ));
    let status = Patch::Merge(json!({"status": {"phase": "Running"}}));
    pods.patch_status("p", &PatchParams::default(), &status)
        .await
        .unwrap();

    // Everything else is denied with the API server's 403 (responsewriters.Forbidden).
    let elsewhere: Api<Pod> = Api::namespaced(client.clone(), "other");
    let error = api_error(elsewhere.list(&ListParams::default()).await);
    assert_eq!(
        forbidden(&error),
        (
            403,
            "Forbidden",
            "pods is forbidden: User \"system:serviceaccount:pf:op\" cannot list resource \"pods\" in API group \"\" in the namespace \"other\""
        )
    );
    let error = api_error(pods.delete("p", &DeleteParams::default()).await);
    assert_eq!(
        forbidden(&error),
        (
            403,
            "Forbidden",
            "pods \"p\" is forbidden: User \"system:serviceaccount:pf:op\" cannot delete resource \"pods\" in API group \"\" in the namespace \"pf\""
        )
    );
    let details = error.details.unwrap();
    assert_eq!(
        (
            details.name.as_str(),
            details.kind.as_str(),
            details.group.as_str()
        ),
        ("p", "pods", "")
    );
    let error = api_error(
        pods.patch(
            "p",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})),
        )
        .await,
    );
    assert_eq!(
        error.message,
        "pods \"p\" is forbidden: User \"system:serviceaccount:pf:op\" cannot patch resource \"pods\" in API group \"\" in the namespace \"pf\""
    );
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "pf");
    let error = api_error(secrets.list(&ListParams::default()).await);
    assert_eq!(
        error.message,
        "secrets is forbidden: User \"system:serviceaccount:pf:op\" cannot list resource \"secrets\" in API group \"\" in the namespace \"pf\""
    );
    let everywhere: Api<Pod> = Api::all(client.clone());
    let error = api_error(everywhere.list(&ListParams::default()).await);
    assert_eq!(
        error.message,
        "pods is forbidden: User \"system:serviceaccount:pf:op\" cannot list resource \"pods\" in API group \"\" at the cluster scope"
    );

    // Every request made with the token, in order, as authorization saw it.
    let record = |verb: &str,
                  resource: &str,
                  subresource: Option<&str>,
                  namespace: Option<&str>,
                  name: Option<&str>,
                  allowed: bool| AuditRecord {
        user: OP.into(),
        verb: verb.into(),
        api_group: String::new(),
        resource: resource.into(),
        subresource: subresource.map(Into::into),
        namespace: namespace.map(Into::into),
        name: name.map(Into::into),
        allowed,
    };
    assert_eq!(
        bed.emulator.audit(),
        [
            record("list", "pods", None, Some("pf"), None, true),
            record("get", "pods", None, Some("pf"), Some("p"), true),
            record("watch", "pods", None, Some("pf"), None, true),
            record("patch", "pods", Some("status"), Some("pf"), Some("p"), true),
            record("list", "pods", None, Some("other"), None, false),
            record("delete", "pods", None, Some("pf"), Some("p"), false),
            record("patch", "pods", None, Some("pf"), Some("p"), false),
            record("list", "secrets", None, Some("pf"), None, false),
            record("list", "pods", None, None, None, false),
        ]
    );
}

#[tokio::test]
async fn cluster_roles_bound_in_a_namespace_or_cluster_wide() {
    let bed = Bed::start().await;
    bed.install_widgets().await;
    service_account_with_pod_reader(&bed).await;
    for namespace in ["pf", "other"] {
        bed.widgets(namespace)
            .create(&PostParams::default(), &widget("w", 1))
            .await
            .unwrap();
    }
    admin_create_cluster::<Node>(&bed, json!({"metadata": {"name": "node-1"}})).await;
    // A ClusterRole bound by a RoleBinding: its rules, in the binding's namespace only.
    admin_create_cluster::<ClusterRole>(&bed, json!({
        "metadata": {"name": "widget-status"},
        "rules": [{"apiGroups": ["test.pureflash.io"], "resources": ["widgets", "widgets/status"], "verbs": ["get", "list", "patch"]}],
    }))
    .await;
    admin_create::<RoleBinding>(&bed, Some("pf"), json!({
        "metadata": {"name": "op-widget-status"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "widget-status"},
        "subjects": service_account_subject("pf", "op"),
    }))
    .await;
    // A ClusterRoleBinding: everywhere, cluster-scoped resources included.
    admin_create_cluster::<ClusterRole>(
        &bed,
        json!({
            "metadata": {"name": "node-getter"},
            "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}],
        }),
    )
    .await;
    admin_create_cluster::<ClusterRoleBinding>(&bed, json!({
        "metadata": {"name": "op-node-getter"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "node-getter"},
        "subjects": service_account_subject("pf", "op"),
    }))
    .await;
    let client = bed
        .client_with_token(&bed.emulator.service_account_token("pf", "op"))
        .await;

    let widgets = |namespace: &str| {
        Api::<kube::api::DynamicObject>::namespaced_with(
            client.clone(),
            namespace,
            &common::widget_resource(),
        )
    };
    let status = Patch::Merge(json!({"status": {"phase": "Online"}}));
    widgets("pf")
        .patch_status("w", &PatchParams::default(), &status)
        .await
        .unwrap();
    let error = api_error(
        widgets("other")
            .patch_status("w", &PatchParams::default(), &status)
            .await,
    );
    assert_eq!(
        error.message,
        "widgets.test.pureflash.io \"w\" is forbidden: User \"system:serviceaccount:pf:op\" cannot patch resource \"widgets/status\" in API group \"test.pureflash.io\" in the namespace \"other\""
    );
    let all_widgets =
        Api::<kube::api::DynamicObject>::all_with(client.clone(), &common::widget_resource());
    let error = api_error(all_widgets.list(&ListParams::default()).await);
    assert_eq!(
        error.message,
        "widgets.test.pureflash.io is forbidden: User \"system:serviceaccount:pf:op\" cannot list resource \"widgets\" in API group \"test.pureflash.io\" at the cluster scope"
    );

    let nodes: Api<Node> = Api::all(client.clone());
    nodes.get("node-1").await.unwrap();
    let error = api_error(nodes.list(&ListParams::default()).await);
    assert_eq!(
        error.message,
        "nodes is forbidden: User \"system:serviceaccount:pf:op\" cannot list resource \"nodes\" in API group \"\" at the cluster scope"
    );
    let error = api_error(nodes.delete("node-1", &DeleteParams::default()).await);
    assert_eq!(
        error.message,
        "nodes \"node-1\" is forbidden: User \"system:serviceaccount:pf:op\" cannot delete resource \"nodes\" in API group \"\" at the cluster scope"
    );

    // Users and groups, from tokens registered for them.
    bed.emulator.add_token("alice-token", "alice", &["ops"]);
    let alice: Api<Node> = Api::all(bed.client_with_token("alice-token").await);
    assert_eq!(api_error(alice.get("node-1").await).code, 403);
    admin_create_cluster::<ClusterRoleBinding>(&bed, json!({
        "metadata": {"name": "ops-node-getter"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "node-getter"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "ops"}],
    }))
    .await;
    alice
        .get("node-1")
        .await
        .expect("bound through the group ops");

    // A binding to a role that does not exist is reported in the denial.
    admin_create::<RoleBinding>(
        &bed,
        Some("pf"),
        json!({
            "metadata": {"name": "dangling"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "missing"},
            "subjects": service_account_subject("pf", "op"),
        }),
    )
    .await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "pf");
    assert_eq!(
        api_error(secrets.list(&ListParams::default()).await).message,
        "secrets is forbidden: User \"system:serviceaccount:pf:op\" cannot list resource \"secrets\" in API group \"\" in the namespace \"pf\": RBAC: role.rbac.authorization.k8s.io \"missing\" not found"
    );
}

#[tokio::test]
async fn resource_names_allow_only_requests_that_name_the_object() {
    let bed = Bed::start().await;
    service_account_with_pod_reader(&bed).await;
    // The leader-election pattern: create any lease, but read and renew only the leader's.
    admin_create::<Role>(&bed, Some("pf"), json!({
        "metadata": {"name": "leader"},
        "rules": [
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": ["leader"], "verbs": ["get", "update", "list", "watch"]},
        ],
    }))
    .await;
    admin_create::<RoleBinding>(
        &bed,
        Some("pf"),
        json!({
            "metadata": {"name": "op-leader"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "leader"},
            "subjects": service_account_subject("pf", "op"),
        }),
    )
    .await;
    let leases: Api<Lease> = Api::namespaced(
        bed.client_with_token(&bed.emulator.service_account_token("pf", "op"))
            .await,
        "pf",
    );
    let lease = |name: &str| -> Lease {
        serde_json::from_value(
            json!({"metadata": {"name": name}, "spec": {"holderIdentity": "op-1"}}),
        )
        .unwrap()
    };
    let created = leases
        .create(&PostParams::default(), &lease("leader"))
        .await
        .unwrap();
    leases
        .create(&PostParams::default(), &lease("other"))
        .await
        .unwrap();
    leases
        .replace("leader", &PostParams::default(), &created)
        .await
        .unwrap();
    assert_eq!(
        api_error(leases.get("other").await).message,
        "leases.coordination.k8s.io \"other\" is forbidden: User \"system:serviceaccount:pf:op\" cannot get resource \"leases\" in API group \"coordination.k8s.io\" in the namespace \"pf\""
    );
    // A list names nothing, unless its field selector names the object.
    assert_eq!(
        api_error(leases.list(&ListParams::default()).await).code,
        403
    );
    let named = leases
        .list(&ListParams::default().fields("metadata.name=leader"))
        .await
        .unwrap();
    assert_eq!(named.items.len(), 1);
    let audit = bed.emulator.audit();
    let last = audit.last().unwrap();
    assert_eq!(
        (last.verb.as_str(), last.name.as_deref(), last.allowed),
        ("list", Some("leader"), true)
    );
}

#[tokio::test]
async fn tokens_authenticate_and_requests_without_one_are_the_administrators() {
    let bed = Bed::start().await;
    bed.namespace("pf").await;
    // A token nobody registered: 401 with the API server's Status, even for discovery.
    let stranger = bed.client_with_token("nobody-knows-me").await;
    let pods: Api<Pod> = Api::namespaced(stranger.clone(), "pf");
    let error = api_error(pods.list(&ListParams::default()).await);
    assert_eq!(
        (error.code, error.reason.as_str(), error.message.as_str()),
        (401, "Unauthorized", "Unauthorized")
    );
    assert!(stranger.apiserver_version().await.is_err());

    // A ServiceAccount's token authenticates only while the ServiceAccount exists.
    let token = bed.emulator.service_account_token("pf", "op");
    let op = bed.client_with_token(&token).await;
    let pods: Api<Pod> = Api::namespaced(op.clone(), "pf");
    assert_eq!(api_error(pods.list(&ListParams::default()).await).code, 401);
    let accounts: Api<ServiceAccount> = Api::namespaced(bed.client.clone(), "pf");
    accounts
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "op"}})).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(api_error(pods.list(&ListParams::default()).await).code, 403);
    // Any authenticated user may read discovery and the version (system:discovery).
    op.apiserver_version().await.unwrap();
    let discovery = kube::discovery::Discovery::new(op.clone())
        .run()
        .await
        .unwrap();
    assert!(discovery.has_group("rbac.authorization.k8s.io"));
    accounts
        .delete("op", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(api_error(pods.list(&ListParams::default()).await).code, 401);

    // system:masters may do anything, as on a real cluster.
    bed.emulator
        .add_token("root", "kubernetes-admin", &["system:masters"]);
    let root: Api<Secret> = Api::namespaced(bed.client_with_token("root").await, "pf");
    root.list(&ListParams::default()).await.unwrap();

    // No token: the tests' administrator, never audited.
    let before = bed.emulator.audit().len();
    let secrets: Api<Secret> = Api::namespaced(bed.client.clone(), "pf");
    secrets.list(&ListParams::default()).await.unwrap();
    let nodes: Api<Node> = Api::all(bed.client.clone());
    nodes.list(&ListParams::default()).await.unwrap();
    assert_eq!(bed.emulator.audit().len(), before);
    assert!(
        bed.emulator
            .audit()
            .iter()
            .all(|r| r.user == OP || r.user == "kubernetes-admin"),
        "{:?}",
        bed.emulator.audit()
    );
}

// ---------------------------------------------------------------------------------------------
// The kinds a chart installs (API reference: core/v1 ServiceAccount and Service, apps/v1
// Deployment, policy/v1 PodDisruptionBudget, rbac.authorization.k8s.io/v1).

#[tokio::test]
async fn services_get_cluster_ips_that_stay() {
    let bed = Bed::start().await;
    let ns = bed.namespace("svc").await;
    let services: Api<Service> = Api::namespaced(bed.client.clone(), &ns);
    let service = |name: &str, spec: serde_json::Value| -> Service {
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap()
    };
    let metrics = services
        .create(
            &PostParams::default(),
            &service(
                "metrics",
                json!({"selector": {"app": "op"}, "ports": [{"name": "metrics", "port": 8080}]}),
            ),
        )
        .await
        .unwrap();
    let spec = metrics.spec.clone().unwrap();
    let ip: std::net::Ipv4Addr = spec.cluster_ip.clone().unwrap().parse().unwrap();
    assert_eq!(
        ip.octets()[..2],
        [10, 96],
        "allocated from the service CIDR"
    );
    assert_eq!(spec.cluster_ips, Some(vec![ip.to_string()]));
    assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
    let port = &spec.ports.unwrap()[0];
    assert_eq!(port.protocol.as_deref(), Some("TCP"));
    assert_eq!(
        port.target_port,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(8080))
    );

    // The address is taken; asking for it again fails like the allocator does.
    let error = api_error(
        services
            .create(
                &PostParams::default(),
                &service(
                    "copy",
                    json!({"clusterIP": ip.to_string(), "ports": [{"port": 80}]}),
                ),
            )
            .await,
    );
    assert_eq!(
        (error.code, error.message.as_str()),
        (422, format!("Service \"copy\" is invalid: spec.clusterIPs: Invalid value: []string{{\"{ip}\"}}: failed to allocate IP {ip}: provided IP is already allocated").as_str())
    );
    let headless = services
        .create(
            &PostParams::default(),
            &service(
                "peers",
                json!({"clusterIP": "None", "selector": {"app": "pfs"}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(
        headless.spec.unwrap().cluster_ips,
        Some(vec!["None".to_owned()])
    );

    // A manifest written back without the allocated address keeps it; changing it is refused.
    let mut replaced = service(
        "metrics",
        json!({"selector": {"app": "op"}, "ports": [{"name": "metrics", "port": 9090}]}),
    );
    replaced.metadata.resource_version = metrics.resource_version();
    let replaced = services
        .replace("metrics", &PostParams::default(), &replaced)
        .await
        .unwrap();
    assert_eq!(replaced.spec.unwrap().cluster_ip, Some(ip.to_string()));
    let error = api_error(
        services
            .patch(
                "metrics",
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"spec": {"clusterIP": "10.96.0.200", "clusterIPs": ["10.96.0.200"]}}),
                ),
            )
            .await,
    );
    assert!(
        error.message.ends_with("may not change once set"),
        "{}",
        error.message
    );

    // Server-side apply identifies ports by port and protocol, protocol defaulting to TCP.
    let applied = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80}]}});
    let first = services
        .patch("web", &PatchParams::apply("chart"), &Patch::Apply(&applied))
        .await
        .unwrap();
    let again = services
        .patch("web", &PatchParams::apply("chart"), &Patch::Apply(&applied))
        .await
        .unwrap();
    assert_eq!(again.resource_version(), first.resource_version());
    assert_eq!(again.spec.unwrap().ports.unwrap().len(), 1);
    // A strategic merge patch merges ports by port.
    let patched = services
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"ports": [{"port": 80, "targetPort": 8080}]}})),
        )
        .await
        .unwrap();
    let ports = patched.spec.unwrap().ports.unwrap();
    assert_eq!((ports.len(), ports[0].name.as_deref()), (1, Some("http")));
    let by_ip = services
        .list(&ListParams::default().fields(&format!("spec.clusterIP={ip}")))
        .await
        .unwrap();
    assert_eq!(
        by_ip.items.iter().map(|s| s.name_any()).collect::<Vec<_>>(),
        ["metrics"]
    );
}

#[tokio::test]
async fn deployments_and_budgets_track_generation_and_have_a_status_subresource() {
    let bed = Bed::start().await;
    let ns = bed.namespace("apps").await;
    let deployments: Api<Deployment> = Api::namespaced(bed.client.clone(), &ns);
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "op"},
        "spec": {"selector": {"matchLabels": {"app": "op"}},
                 "template": {"metadata": {"labels": {"app": "op"}}, "spec": {"containers": [
                     {"name": "op", "image": "op:1", "env": [{"name": "A", "value": "1"}]}]}}},
    }))
    .unwrap();
    let created = deployments
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    let spec = created.spec.clone();
    assert_eq!(
        (
            spec.replicas,
            spec.revision_history_limit,
            spec.progress_deadline_seconds
        ),
        (Some(1), Some(10), Some(600))
    );
    // Strategic merge patch: containers by name, their env by name.
    let patched = deployments
        .patch(
            "op",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [
            {"name": "op", "image": "op:2", "env": [{"name": "B", "value": "2"}]}]}}}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.metadata.generation, Some(2));
    let container = &patched.spec.template.spec.unwrap().containers[0];
    assert_eq!(container.image.as_deref(), Some("op:2"));
    assert_eq!(container.env.as_ref().unwrap().len(), 2);
    let status = deployments
        .patch_status(
            "op",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"replicas": 1, "readyReplicas": 1, "observedGeneration": 2}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(
        status.metadata.generation,
        Some(2),
        "status writes do not count"
    );
    assert_eq!(status.status.unwrap().ready_replicas, Some(1));
    let ignored = deployments
        .patch(
            "op",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"readyReplicas": 5}})),
        )
        .await
        .unwrap();
    assert_eq!(
        ignored.status.unwrap().ready_replicas,
        Some(1),
        "status through the main resource is ignored"
    );
    let mut mismatched = deployment.clone();
    mismatched.metadata.name = Some("bad".into());
    mismatched.spec.template.metadata.as_mut().unwrap().labels =
        Some([("app".to_owned(), "other".to_owned())].into());
    let error = api_error(
        deployments
            .create(&PostParams::default(), &mismatched)
            .await,
    );
    assert_eq!(
        (error.code, error.message.as_str()),
        (
            422,
            "Deployment.apps \"bad\" is invalid: spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"other\"}: `selector` does not match template `labels`"
        )
    );

    let budgets: Api<PodDisruptionBudget> = Api::namespaced(bed.client.clone(), &ns);
    let budget: PodDisruptionBudget = serde_json::from_value(json!({
        "metadata": {"name": "op"}, "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "op"}}},
    }))
    .unwrap();
    let created = budgets
        .create(&PostParams::default(), &budget)
        .await
        .unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    assert_eq!(created.status.unwrap().disruptions_allowed, Some(0));
    let status = budgets
        .patch_status("op", &PatchParams::default(), &Patch::Merge(json!({"status": {"disruptionsAllowed": 1, "currentHealthy": 2, "desiredHealthy": 1, "expectedPods": 2}})))
        .await
        .unwrap();
    assert_eq!(status.status.unwrap().disruptions_allowed, Some(1));
}

#[tokio::test]
async fn stateful_sets_are_defaulted_track_generation_and_keep_their_identity() {
    let bed = Bed::start().await;
    let ns = bed.namespace("apps").await;
    let sets: Api<StatefulSet> = Api::namespaced(bed.client.clone(), &ns);
    let manifest = json!({
        "metadata": {"name": "pfs"},
        "spec": {"serviceName": "pfs", "replicas": 3,
                 "selector": {"matchLabels": {"app": "pfs"}},
                 "template": {"metadata": {"labels": {"app": "pfs"}}, "spec": {"containers": [
                     {"name": "pfs", "image": "pfs:1", "env": [{"name": "A", "value": "1"}]}]}},
                 "volumeClaimTemplates": [{"metadata": {"name": "data"},
                     "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Gi"}}}}]},
    });
    let set: StatefulSet = serde_json::from_value(manifest.clone()).unwrap();
    let created = sets.create(&PostParams::default(), &set).await.unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    let spec = created.spec.clone();
    assert_eq!(
        (
            spec.pod_management_policy.as_deref(),
            spec.revision_history_limit,
            spec.replicas
        ),
        (Some("OrderedReady"), Some(10), Some(3))
    );
    let strategy = spec.update_strategy.unwrap();
    assert_eq!(
        (
            strategy.type_.as_deref(),
            strategy.rolling_update.and_then(|r| r.partition)
        ),
        (Some("RollingUpdate"), Some(0))
    );
    let retention = spec.persistent_volume_claim_retention_policy.unwrap();
    assert_eq!(
        (
            retention.when_deleted.as_deref(),
            retention.when_scaled.as_deref()
        ),
        (Some("Retain"), Some("Retain"))
    );
    let claim = &spec.volume_claim_templates.unwrap()[0];
    assert_eq!(
        claim.spec.as_ref().unwrap().volume_mode.as_deref(),
        Some("Filesystem")
    );
    assert_eq!(
        claim.status.as_ref().unwrap().phase.as_deref(),
        Some("Pending")
    );
    let status = created.status.unwrap();
    assert_eq!((status.replicas, status.available_replicas), (0, Some(0)));

    // Strategic merge patch of the template: containers and their env merge by name.
    let patched = sets
        .patch(
            "pfs",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [
            {"name": "pfs", "image": "pfs:2", "env": [{"name": "B", "value": "2"}]}]}}}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.metadata.generation, Some(2));
    let container = &patched.spec.template.spec.unwrap().containers[0];
    assert_eq!(
        (
            container.image.as_deref(),
            container.env.as_ref().unwrap().len()
        ),
        (Some("pfs:2"), 2)
    );
    // The status subresource, as the controller writes it; generation does not move.
    let status = sets
        .patch_status(
            "pfs",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"replicas": 3, "readyReplicas": 3, "availableReplicas": 3, "observedGeneration": 2}})),
        )
        .await
        .unwrap();
    assert_eq!(status.metadata.generation, Some(2));
    assert_eq!(status.status.unwrap().ready_replicas, Some(3));

    // Server-side apply of the manifest again (what a chart upgrade does): nothing moves.
    let mut applied = manifest.clone();
    applied["apiVersion"] = json!("apps/v1");
    applied["kind"] = json!("StatefulSet");
    applied["spec"]["template"]["spec"]["containers"][0]["image"] = json!("pfs:2");
    applied["spec"]["template"]["spec"]["containers"][0]["env"] =
        json!([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]);
    let again = sets
        .patch(
            "pfs",
            &PatchParams::apply("helm").force(),
            &Patch::Apply(&applied),
        )
        .await
        .unwrap();
    assert_eq!(again.metadata.generation, Some(2));

    // Its identity may not change: the claim templates are one atomic list, and immutable.
    let error = api_error(
        sets.patch(
            "pfs",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"volumeClaimTemplates": [{"metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "20Gi"}}}}]}})),
        )
        .await,
    );
    assert_eq!(
        (error.code, error.message.as_str()),
        (
            422,
            "StatefulSet.apps \"pfs\" is invalid: spec: Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden"
        )
    );
    let error = api_error(
        sets.patch(
            "pfs",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"serviceName": "other"}})),
        )
        .await,
    );
    assert_eq!(error.code, 422);
    let scaled = sets
        .patch(
            "pfs",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 5, "updateStrategy": {"type": "OnDelete", "rollingUpdate": null}}})),
        )
        .await
        .unwrap();
    assert_eq!(scaled.spec.replicas, Some(5));

    // serviceName is optional; the selector must select the template.
    let mut headless = set.clone();
    headless.metadata.name = Some("solo".into());
    headless.spec.service_name = None;
    sets.create(&PostParams::default(), &headless)
        .await
        .unwrap();
    let mut mismatched = set.clone();
    mismatched.metadata.name = Some("bad".into());
    mismatched.spec.template.metadata.as_mut().unwrap().labels =
        Some([("app".to_owned(), "other".to_owned())].into());
    let error = api_error(sets.create(&PostParams::default(), &mismatched).await);
    assert_eq!(
        (error.code, error.message.as_str()),
        (
            422,
            "StatefulSet.apps \"bad\" is invalid: spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"other\"}: `selector` does not match template `labels`"
        )
    );
}

// ---------------------------------------------------------------------------------------------
// Server-side apply that creates needs `create` too (API concepts, "Patch and apply": "if the
// object does not exist, it is created… the requester needs the create permission").

#[tokio::test]
async fn an_apply_creates_only_with_create_permission() {
    let bed = Bed::start().await;
    bed.namespace("pf").await;
    admin_create::<ServiceAccount>(&bed, Some("pf"), json!({"metadata": {"name": "op"}})).await;
    admin_create::<Role>(
        &bed,
        Some("pf"),
        json!({"metadata": {"name": "patcher"},
               "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["patch"]}]}),
    )
    .await;
    admin_create::<RoleBinding>(
        &bed,
        Some("pf"),
        json!({
            "metadata": {"name": "op-patcher"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "patcher"},
            "subjects": service_account_subject("pf", "op"),
        }),
    )
    .await;
    admin_create::<ConfigMap>(
        &bed,
        Some("pf"),
        json!({"metadata": {"name": "existing"}, "data": {"a": "1"}}),
    )
    .await;
    let token = bed.emulator.service_account_token("pf", "op");
    let maps: Api<ConfigMap> = Api::namespaced(bed.client_with_token(&token).await, "pf");
    let apply = |name: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"b": "2"}});
    let params = PatchParams::apply("pureflash-operator");

    // Patching an existing object needs patch only.
    let existing = maps
        .patch("existing", &params, &Patch::Apply(apply("existing")))
        .await
        .unwrap();
    assert_eq!(
        existing.data.unwrap().get("b").map(String::as_str),
        Some("2")
    );

    // Creating by apply needs create too: 403, nothing created, both decisions audited.
    let before = bed.emulator.audit().len();
    let error = api_error(
        maps.patch("settings", &params, &Patch::Apply(apply("settings")))
            .await,
    );
    assert_eq!(
        forbidden(&error),
        (403, "Forbidden", "configmaps \"settings\" is forbidden: ")
    );
    let details = error.details.unwrap();
    assert_eq!(
        (details.name.as_str(), details.kind.as_str()),
        ("settings", "configmaps")
    );
    let records: Vec<(String, Option<String>, bool)> = bed.emulator.audit()[before..]
        .iter()
        .map(|r| (r.verb.clone(), r.name.clone(), r.allowed))
        .collect();
    assert_eq!(
        records,
        [
            ("patch".to_owned(), Some("settings".to_owned()), true),
            ("create".to_owned(), Some("settings".to_owned()), false),
        ]
    );
    let admin_maps: Api<ConfigMap> = Api::namespaced(bed.client.clone(), "pf");
    assert_eq!(api_error(admin_maps.get("settings").await).code, 404);
    // Other patches of a missing object are 404, whatever the permissions.
    let error = api_error(
        maps.patch(
            "settings",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"b": "2"}})),
        )
        .await,
    );
    assert_eq!(error.code, 404);
    // An invalid object is refused as such before the create is authorized.
    let error = api_error(
        maps.patch("Bad_Name", &params, &Patch::Apply(apply("Bad_Name")))
            .await,
    );
    assert_eq!(error.code, 422);

    // With create too, the apply creates it (201).
    let role: Api<Role> = Api::namespaced(bed.client.clone(), "pf");
    role.patch(
        "patcher",
        &PatchParams::default(),
        &Patch::Merge(json!({"rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["patch", "create"]}]})),
    )
    .await
    .unwrap();
    let created = maps
        .patch("settings", &params, &Patch::Apply(apply("settings")))
        .await
        .unwrap();
    assert_eq!(
        created.metadata.managed_fields.unwrap()[0]
            .operation
            .as_deref(),
        Some("Apply")
    );
    let last = bed.emulator.audit().last().cloned().unwrap();
    assert_eq!(
        (
            last.verb.as_str(),
            last.resource.as_str(),
            last.name.as_deref(),
            last.allowed
        ),
        ("create", "configmaps", Some("settings"), true)
    );
}

#[tokio::test]
async fn rbac_objects_keep_their_lists_atomic_and_role_refs_fixed() {
    let bed = Bed::start().await;
    let ns = bed.namespace("rbac").await;
    let roles: Api<ClusterRole> = Api::all(bed.client.clone());
    let role = |rules: serde_json::Value| json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "op"}, "rules": rules});
    roles
        .patch(
            "op",
            &PatchParams::apply("chart"),
            &Patch::Apply(&role(json!([
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]},
                {"apiGroups": [""], "resources": ["nodes"], "verbs": ["list"]},
            ]))),
        )
        .await
        .unwrap();
    let applied = roles
        .patch(
            "op",
            &PatchParams::apply("chart"),
            &Patch::Apply(&role(json!([
                {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]},
            ]))),
        )
        .await
        .unwrap();
    let rules = applied.rules.unwrap();
    assert_eq!(rules.len(), 1, "rules are replaced wholesale");
    assert_eq!(rules[0].resources, Some(vec!["secrets".to_owned()]));

    let bindings: Api<RoleBinding> = Api::namespaced(bed.client.clone(), &ns);
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "op"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "op"},
        "subjects": [{"kind": "ServiceAccount", "name": "op"}, {"kind": "User", "name": "alice", "apiGroup": "rbac.authorization.k8s.io"}],
    }))
    .unwrap();
    bindings
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    let error = api_error(
        bindings
            .patch(
                "op",
                &PatchParams::default(),
                &Patch::Merge(json!({"roleRef": {"name": "other"}})),
            )
            .await,
    );
    assert_eq!(
        (error.code, error.message.as_str()),
        (
            422,
            "RoleBinding.rbac.authorization.k8s.io \"op\" is invalid: roleRef: Invalid value: rbac.RoleRef{APIGroup:\"rbac.authorization.k8s.io\", Kind:\"ClusterRole\", Name:\"other\"}: cannot change roleRef"
        )
    );
    let accounts: Api<ServiceAccount> = Api::namespaced(bed.client.clone(), &ns);
    accounts
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "op"}})).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        accounts
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );
}

#[tokio::test]
async fn one_port_serves_http_and_https_until_the_emulator_is_dropped() {
    let bed = Bed::start().await;
    // The same address over TLS (what a kubeconfig with a token uses), for the administrator too.
    let mut config = kube::Config::new(bed.emulator.https_url().parse().unwrap());
    config.accept_invalid_certs = true;
    config.default_retry = false;
    let over_tls = kube::Client::try_from(config).unwrap();
    over_tls.apiserver_version().await.unwrap();
    let maps: Api<ConfigMap> = Api::namespaced(over_tls.clone(), "default");
    maps.list(&ListParams::default()).await.unwrap();
    let mut config = kube::Config::new(bed.emulator.url().parse().unwrap());
    config.default_retry = false;
    let plain: Api<ConfigMap> = Api::namespaced(kube::Client::try_from(config).unwrap(), "default");
    plain.list(&ListParams::default()).await.unwrap();
    // Dropped, the emulator closes even the connections clients keep alive.
    drop(bed);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(plain.list(&ListParams::default()).await.is_err());
    assert!(maps.list(&ListParams::default()).await.is_err());
}

/// Every answer carries a `Date` header (RFC 9110 §6.6.1: an origin server with a clock sends
/// one), and the timestamps the server sets come from the same clock; a test may set that clock
/// apart from the machine's, to play a cluster whose clock differs from its clients'.
#[tokio::test]
async fn the_server_clock_stamps_answers_and_objects() {
    fn date_of(response: &http::Response<kube::client::Body>) -> std::time::SystemTime {
        let date = response
            .headers()
            .get(http::header::DATE)
            .expect("a Date header")
            .to_str()
            .unwrap();
        httpdate::parse_http_date(date).expect("an HTTP date")
    }
    fn seconds_apart(a: std::time::SystemTime, b: std::time::SystemTime) -> f64 {
        match a.duration_since(b) {
            Ok(d) => d.as_secs_f64(),
            Err(e) => -e.duration().as_secs_f64(),
        }
    }
    let bed = Bed::start().await;
    let version = || {
        http::Request::get("/version")
            .body(kube::client::Body::empty())
            .unwrap()
    };
    let answer = bed.client.send(version()).await.unwrap();
    let skew = seconds_apart(date_of(&answer), std::time::SystemTime::now());
    assert!(skew.abs() < 2.0, "in step with the machine: {skew}");

    bed.emulator.set_clock_offset_ms(-90_000);
    let answer = bed.client.send(version()).await.unwrap();
    let skew = seconds_apart(date_of(&answer), std::time::SystemTime::now());
    assert!((-92.0..=-88.0).contains(&skew), "90 s behind: {skew}");
    let ns = bed.namespace("clock").await;
    let maps: Api<ConfigMap> = Api::namespaced(bed.client.clone(), &ns);
    let created = maps
        .create(&PostParams::default(), &config_map("stamped", json!({})))
        .await
        .unwrap();
    let created_at = created.creation_timestamp().expect("creationTimestamp").0;
    let behind = jiff::Timestamp::now()
        .duration_since(created_at)
        .as_secs_f64();
    assert!(
        (88.0..=92.0).contains(&behind),
        "created 90 s ago by the machine's clock: {behind}"
    );
}

// ---------------------------------------------------------------------------------------------
// PodDisruptionBudgets and the eviction subresource (kubernetes.io/docs/concepts/workloads/pods/
// disruptions/, /docs/concepts/scheduling-eviction/api-eviction/ and
// /docs/tasks/run-application/configure-pdb/): the disruption controller keeps each budget's
// status as Pods come, go and change, and evictions spend it.

use kube::api::EvictParams;
use kube::core::response::StatusSummary;

const REFUSED: &str = "Cannot evict pod as it would violate the pod's disruption budget.";

/// A Pod of `owner`'s (its controller, a Widget: a custom resource without a scale
/// subresource, as the operator's stores are), labelled `app: pfs`, bound to node-a, and
/// reported Running, Ready or not, as its kubelet would.
async fn store_pod(pods: &Api<Pod>, name: &str, owner: &kube::api::DynamicObject, ready: bool) {
    let mut pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": "pfs"}},
        "spec": {"nodeName": "node-a", "containers": [{"name": "pfs", "image": "pfs:1"}]},
    }))
    .unwrap();
    pod.metadata.owner_references = Some(vec![
        owner
            .controller_owner_ref(&common::widget_resource())
            .unwrap(),
    ]);
    pods.create(&PostParams::default(), &pod).await.unwrap();
    set_ready(pods, name, ready).await;
}

/// What a kubelet reports of a running Pod: phase Running, and whether it is Ready.
async fn set_ready(pods: &Api<Pod>, name: &str, ready: bool) {
    let status = if ready { "True" } else { "False" };
    let patch = json!({"status": {"phase": "Running", "conditions": [
        {"type": "ContainersReady", "status": status}, {"type": "Ready", "status": status}]}});
    pods.patch_status(name, &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .unwrap();
}

async fn create_budget(
    budgets: &Api<PodDisruptionBudget>,
    name: &str,
    spec: serde_json::Value,
) -> PodDisruptionBudget {
    let budget = serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap();
    budgets
        .create(&PostParams::default(), &budget)
        .await
        .unwrap()
}

/// (expectedPods, currentHealthy, desiredHealthy, disruptionsAllowed) of a budget's status.
fn counts(budget: &PodDisruptionBudget) -> (i32, i32, i32, i32) {
    let status = budget.status.clone().unwrap_or_default();
    (
        status.expected_pods.unwrap_or_default(),
        status.current_healthy.unwrap_or_default(),
        status.desired_healthy.unwrap_or_default(),
        status.disruptions_allowed.unwrap_or_default(),
    )
}

/// The `DisruptionAllowed` condition of a budget's status: (status, reason, message).
fn disruption_allowed(budget: &PodDisruptionBudget) -> (String, String, String) {
    let conditions = budget.status.clone().unwrap_or_default().conditions;
    let condition = conditions
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "DisruptionAllowed")
        .expect("the controller's condition");
    (condition.status, condition.reason, condition.message)
}

/// The condition of `kind` on a Pod: (status, reason, message).
fn pod_condition(pod: &Pod, kind: &str) -> Option<(String, String, String)> {
    pod.status
        .clone()
        .unwrap_or_default()
        .conditions
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == kind)
        .map(|c| {
            (
                c.status,
                c.reason.unwrap_or_default(),
                c.message.unwrap_or_default(),
            )
        })
}

/// A namespace with the widgets CRD installed and a Widget `w` to own its Pods; the Pods and
/// budgets APIs there, through a client that does not retry a refused eviction.
async fn budget_bed(
    name: &str,
) -> (
    Bed,
    kube::api::DynamicObject,
    Api<Pod>,
    Api<PodDisruptionBudget>,
) {
    let bed = Bed::start().await;
    bed.install_widgets().await;
    let ns = bed.namespace(name).await;
    let owner = bed
        .widgets(&ns)
        .create(&PostParams::default(), &widget("w", 1))
        .await
        .unwrap();
    let client = bed.client_without_retry().await;
    let pods = Api::namespaced(client.clone(), &ns);
    let budgets = Api::namespaced(client, &ns);
    (bed, owner, pods, budgets)
}

#[tokio::test]
async fn the_disruption_controller_keeps_each_budgets_status() {
    let (bed, owner, pods, budgets) = budget_bed("budgets").await;
    let created = create_budget(
        &budgets,
        "pfs",
        json!({"minAvailable": 2, "selector": {"matchLabels": {"app": "pfs"}}, "unhealthyPodEvictionPolicy": "AlwaysAllow"}),
    )
    .await;
    // As created (nothing observed yet), then as the controller counted: no Pod yet.
    assert_eq!(counts(&created), (0, 0, 0, 0));
    assert_eq!(created.status.as_ref().unwrap().observed_generation, None);
    let synced = budgets.get("pfs").await.unwrap();
    assert_ne!(synced.resource_version(), created.resource_version());
    assert_eq!(synced.status.as_ref().unwrap().observed_generation, Some(1));
    assert_eq!(counts(&synced), (0, 0, 2, 0));
    assert_eq!(
        disruption_allowed(&synced),
        ("False".into(), "InsufficientPods".into(), String::new())
    );
    let controller = synced
        .managed_fields()
        .iter()
        .find(|m| m.manager.as_deref() == Some("kube-controller-manager"))
        .expect("the controller's status writes are managed");
    assert_eq!(controller.subresource.as_deref(), Some("status"));

    // Its writes are seen by watches, as any write is.
    let mut watch = budgets
        .watch(&WatchParams::default(), &synced.resource_version().unwrap())
        .await
        .unwrap()
        .boxed();
    for name in ["p0", "p1", "p2"] {
        store_pod(&pods, name, &owner, true).await;
    }
    let budget = budgets.get("pfs").await.unwrap();
    assert_eq!(counts(&budget), (3, 3, 2, 1));
    assert_eq!(
        disruption_allowed(&budget),
        ("True".into(), "SufficientPods".into(), String::new())
    );
    let allowed_seen = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(event) = watch.try_next().await.unwrap() {
            if let WatchEvent::Modified(seen) = event
                && counts(&seen).3 == 1
            {
                return seen;
            }
        }
        panic!("the watch ended")
    })
    .await
    .expect("the controller's write is watched");
    assert_eq!(allowed_seen.resource_version(), budget.resource_version());

    // A Pod that is not Ready is not healthy; one outside the selector is not counted.
    set_ready(&pods, "p2", false).await;
    pods.create(&PostParams::default(), &pod("other", "node-a"))
        .await
        .unwrap();
    assert_eq!(counts(&budgets.get("pfs").await.unwrap()), (3, 2, 2, 0));
    // A new spec is observed at once.
    let patched = budgets
        .patch(
            "pfs",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"minAvailable": 1}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.metadata.generation, Some(2));
    let budget = budgets.get("pfs").await.unwrap();
    assert_eq!(budget.status.as_ref().unwrap().observed_generation, Some(2));
    assert_eq!(counts(&budget), (3, 2, 1, 1));
    // A status written by anyone else is put right by the controller.
    let written = budgets
        .patch_status(
            "pfs",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"disruptionsAllowed": 5}})),
        )
        .await
        .unwrap();
    assert_eq!(counts(&written).3, 5);
    assert_eq!(counts(&budgets.get("pfs").await.unwrap()).3, 1);

    // In policy/v1 an empty selector covers every Pod of the namespace.
    let everything =
        create_budget(&budgets, "all", json!({"minAvailable": 0, "selector": {}})).await;
    assert_eq!(everything.metadata.generation, Some(1));
    assert_eq!(counts(&budgets.get("all").await.unwrap()), (4, 2, 0, 2));
    // Neither minAvailable nor maxUnavailable: nothing is defaulted, and the disruption
    // controller, which then expects no Pod, allows nothing.
    let bare = create_budget(&budgets, "none", json!({"selector": {}})).await;
    assert_eq!(bare.spec.unwrap().min_available, None);
    let counted = budgets.get("none").await.unwrap();
    assert_eq!(counts(&counted).3, 0);

    // maxUnavailable (or a percentage) counts the Pods' controllers' scales; a controller
    // without a scale subresource fails the sync, and the fail-safe allows nothing.
    create_budget(
        &budgets,
        "max",
        json!({"maxUnavailable": 1, "selector": {"matchLabels": {"app": "pfs"}}}),
    )
    .await;
    let failing = budgets.get("max").await.unwrap();
    assert_eq!(counts(&failing).3, 0);
    assert_eq!(
        disruption_allowed(&failing),
        (
            "False".into(),
            "SyncFailed".into(),
            "widgets.test.pureflash.io does not implement the scale subresource".into()
        )
    );
    assert_eq!(failing.status.as_ref().unwrap().observed_generation, None);

    // A StatefulSet has one: a percentage of its replicas.
    let ns = pods.namespace().unwrap_or_default();
    let sets: Api<StatefulSet> = Api::namespaced(bed.client.clone(), ns);
    let set = sets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "db"},
                "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "db"}},
                         "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "db", "image": "db:1"}]}}},
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let mut db: Pod = serde_json::from_value(json!({
        "metadata": {"name": "db-0", "labels": {"app": "db"}},
        "spec": {"nodeName": "node-a", "containers": [{"name": "db", "image": "db:1"}]},
    }))
    .unwrap();
    db.metadata.owner_references = Some(vec![set.controller_owner_ref(&()).unwrap()]);
    pods.create(&PostParams::default(), &db).await.unwrap();
    set_ready(&pods, "db-0", true).await;
    create_budget(
        &budgets,
        "db",
        json!({"minAvailable": "50%", "selector": {"matchLabels": {"app": "db"}}}),
    )
    .await;
    assert_eq!(counts(&budgets.get("db").await.unwrap()), (4, 1, 2, 0));

    // What the API server validates.
    let both = serde_json::from_value(
        json!({"metadata": {"name": "both"}, "spec": {"minAvailable": 1, "maxUnavailable": 1}}),
    )
    .unwrap();
    let refused = api_error(budgets.create(&PostParams::default(), &both).await);
    assert_eq!(refused.code, 422);
    assert!(
        refused
            .message
            .ends_with("minAvailable and maxUnavailable cannot be both set"),
        "{}",
        refused.message
    );
    let policy = serde_json::from_value(json!({"metadata": {"name": "policy"}, "spec": {"minAvailable": 1, "unhealthyPodEvictionPolicy": "Never"}})).unwrap();
    let refused = api_error(budgets.create(&PostParams::default(), &policy).await);
    assert_eq!(
        (refused.code, refused.message.as_str()),
        (
            422,
            "PodDisruptionBudget.policy \"policy\" is invalid: spec.unhealthyPodEvictionPolicy: Unsupported value: \"Never\": supported values: \"AlwaysAllow\", \"IfHealthyBudget\""
        )
    );
}

/// With a lag, as on a real cluster, a budget's status trails the Pods: a new budget is "still
/// being processed" (evictions get 429), and a burst of Pod changes makes one status write.
#[tokio::test]
async fn a_lagging_disruption_controller_coalesces_and_evictions_wait_for_it() {
    let (bed, owner, pods, budgets) = budget_bed("lagging").await;
    // Long enough for the writes below to land within one lag on a busy machine.
    bed.emulator
        .set_disruption_lag(Some(Duration::from_secs(1)));
    for name in ["p0", "p1", "p2"] {
        store_pod(&pods, name, &owner, true).await;
    }
    let created = create_budget(
        &budgets,
        "pfs",
        json!({"minAvailable": 2, "selector": {"matchLabels": {"app": "pfs"}}}),
    )
    .await;
    let unobserved = budgets.get("pfs").await.unwrap();
    assert_eq!(unobserved.resource_version(), created.resource_version());
    let Err(kube::Error::Api(refused)) = pods.evict("p0", &EvictParams::default()).await else {
        panic!("an eviction before the budget is observed is refused");
    };
    assert_eq!(refused.code, 429);
    let causes = format!("{:?}", refused.details);
    assert!(causes.contains("still being processed"), "{causes}");
    // The budget once `done` says it is, within 5 s.
    let budget_once = async |what: &str, done: &dyn Fn(&PodDisruptionBudget) -> bool| {
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let budget = budgets.get("pfs").await.unwrap();
                if done(&budget) {
                    return budget;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{what}"))
    };
    let synced = budget_once("the budget is synced after the lag", &|budget| {
        budget.status.as_ref().and_then(|s| s.observed_generation) == Some(1)
    })
    .await;
    assert_eq!(counts(&synced), (3, 3, 2, 1));

    // Two Pods turn unready together: the status does not move at once, then moves once.
    let before: u64 = synced.resource_version().unwrap().parse().unwrap();
    set_ready(&pods, "p1", false).await;
    set_ready(&pods, "p2", false).await;
    assert_eq!(counts(&budgets.get("pfs").await.unwrap()), (3, 3, 2, 1));
    let moved = budget_once("the status follows after the lag", &|budget| {
        counts(budget) != (3, 3, 2, 1)
    })
    .await;
    assert_eq!(counts(&moved), (3, 1, 2, 0));
    let after: u64 = moved.resource_version().unwrap().parse().unwrap();
    // The two Pod writes and one status write.
    assert_eq!(after - before, 3, "one status write for both changes");

    // Without the lag, statuses follow within each write again.
    bed.emulator.set_disruption_lag(None);
    set_ready(&pods, "p1", true).await;
    assert_eq!(counts(&budgets.get("pfs").await.unwrap()), (3, 2, 2, 0));
}

#[tokio::test]
async fn evictions_spend_the_budget_and_are_refused_past_it() {
    let (_bed, owner, pods, budgets) = budget_bed("evictions").await;
    for name in ["p0", "p1", "p2"] {
        store_pod(&pods, name, &owner, true).await;
    }
    create_budget(
        &budgets,
        "pfs",
        json!({"minAvailable": 2, "selector": {"matchLabels": {"app": "pfs"}}}),
    )
    .await;
    assert_eq!(counts(&budgets.get("pfs").await.unwrap()), (3, 3, 2, 1));

    let evicted = pods.evict("p0", &EvictParams::default()).await.unwrap();
    assert_eq!(
        (evicted.status, evicted.code),
        (Some(StatusSummary::Success), 201)
    );
    // Marked as disrupted by the eviction, then deleted gracefully: its kubelet removes it.
    let p0 = pods.get("p0").await.unwrap();
    assert!(p0.metadata.deletion_timestamp.is_some());
    assert_eq!(p0.metadata.deletion_grace_period_seconds, Some(30));
    assert_eq!(
        pod_condition(&p0, "DisruptionTarget"),
        Some((
            "True".into(),
            "EvictionByEvictionAPI".into(),
            "Eviction API: evicting".into()
        ))
    );
    let budget = budgets.get("pfs").await.unwrap();
    assert_eq!(counts(&budget), (3, 2, 2, 0));
    assert_eq!(
        budget.status.unwrap().disrupted_pods,
        None,
        "a terminating Pod is no longer an eviction in flight"
    );

    // No disruption left: 429, with the budget's numbers as the cause.
    let refused = api_error(pods.evict("p1", &EvictParams::default()).await);
    assert_eq!(
        (
            refused.code,
            refused.reason.as_str(),
            refused.message.as_str()
        ),
        (429, "TooManyRequests", REFUSED)
    );
    let causes = refused.details.unwrap().causes;
    assert_eq!(
        (causes[0].reason.as_str(), causes[0].message.as_str()),
        (
            "DisruptionBudget",
            "The disruption budget pfs needs 2 healthy pods and has 2 currently"
        )
    );
    let p1 = pods.get("p1").await.unwrap();
    assert!(p1.metadata.deletion_timestamp.is_none());
    assert_eq!(pod_condition(&p1, "DisruptionTarget"), None);

    // A Pod already terminating goes without consulting the budget.
    let again = pods.evict("p0", &EvictParams::default()).await.unwrap();
    assert_eq!(again.code, 201);
    let missing = api_error(pods.evict("nope", &EvictParams::default()).await);
    assert_eq!(
        (missing.code, missing.message.as_str()),
        (404, "pods \"nope\" not found")
    );

    // A dry run answers as the eviction would, and changes nothing.
    store_pod(&pods, "p3", &owner, true).await;
    let before = budgets.get("pfs").await.unwrap();
    assert_eq!(counts(&before), (4, 3, 2, 1));
    let dry_run = EvictParams {
        post_options: PostParams {
            dry_run: true,
            ..PostParams::default()
        },
        ..EvictParams::default()
    };
    assert_eq!(pods.evict("p3", &dry_run).await.unwrap().code, 201);
    let p3 = pods.get("p3").await.unwrap();
    assert!(p3.metadata.deletion_timestamp.is_none());
    assert_eq!(pod_condition(&p3, "DisruptionTarget"), None);
    assert_eq!(
        budgets.get("pfs").await.unwrap().resource_version(),
        before.resource_version()
    );
}

#[tokio::test]
async fn a_pod_that_is_not_ready_goes_as_the_unhealthy_pod_eviction_policy_says() {
    let (_bed, owner, pods, budgets) = budget_bed("unhealthy").await;
    store_pod(&pods, "p0", &owner, true).await;
    store_pod(&pods, "p1", &owner, true).await;
    store_pod(&pods, "p2", &owner, false).await;
    create_budget(
        &budgets,
        "pfs",
        json!({"minAvailable": 2, "selector": {"matchLabels": {"app": "pfs"}}}),
    )
    .await;
    assert_eq!(counts(&budgets.get("pfs").await.unwrap()), (3, 2, 2, 0));
    // IfHealthyBudget (the default): while the budget has its healthy Pods, a Pod that is not
    // Ready goes without spending a disruption.
    assert_eq!(
        pods.evict("p2", &EvictParams::default())
            .await
            .unwrap()
            .code,
        201
    );
    assert!(
        pods.get("p2")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some()
    );
    assert_eq!(counts(&budgets.get("pfs").await.unwrap()), (3, 2, 2, 0));
    // Below its healthy Pods, it is refused like any other.
    set_ready(&pods, "p1", false).await;
    let refused = api_error(pods.evict("p1", &EvictParams::default()).await);
    assert_eq!(refused.code, 429);
    assert_eq!(
        refused.details.unwrap().causes[0].message,
        "The disruption budget pfs needs 2 healthy pods and has 1 currently"
    );
    // AlwaysAllow: a Pod that is not Ready always goes, and spends nothing; a Ready one does not.
    budgets
        .patch(
            "pfs",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"unhealthyPodEvictionPolicy": "AlwaysAllow"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        pods.evict("p1", &EvictParams::default())
            .await
            .unwrap()
            .code,
        201
    );
    assert_eq!(counts(&budgets.get("pfs").await.unwrap()), (3, 1, 2, 0));
    assert_eq!(
        api_error(pods.evict("p0", &EvictParams::default()).await).code,
        429
    );
}

#[tokio::test]
async fn one_budget_per_pod_and_one_eviction_per_disruption() {
    let (_bed, owner, pods, budgets) = budget_bed("concurrent").await;
    for name in ["p0", "p1", "p2"] {
        store_pod(&pods, name, &owner, true).await;
    }
    create_budget(
        &budgets,
        "pfs",
        json!({"minAvailable": 2, "selector": {"matchLabels": {"app": "pfs"}}}),
    )
    .await;
    // One disruption allowed, two evictions at once: one goes, the other is refused.
    let ep = EvictParams::default();
    let (first, second) = tokio::join!(pods.evict("p0", &ep), pods.evict("p1", &ep));
    let mut codes = [first, second].map(|result| match result {
        Ok(status) => status.code,
        Err(kube::Error::Api(status)) => status.code,
        Err(other) => panic!("{other}"),
    });
    codes.sort_unstable();
    assert_eq!(codes, [201, 429]);
    assert_eq!(counts(&budgets.get("pfs").await.unwrap()), (3, 2, 2, 0));

    // Two budgets over one Pod: the eviction subresource does not support it.
    create_budget(
        &budgets,
        "pfs-too",
        json!({"minAvailable": 0, "selector": {}}),
    )
    .await;
    let several = api_error(pods.evict("p2", &EvictParams::default()).await);
    assert_eq!(
        (
            several.code,
            several.reason.as_str(),
            several.message.as_str()
        ),
        (
            500,
            "",
            "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support."
        )
    );
    // A Pod not yet running (Pending) or done (Succeeded) is deleted without any budget.
    let mut pending: Pod = serde_json::from_value(json!({
        "metadata": {"name": "pending", "labels": {"app": "pfs"}},
        "spec": {"nodeName": "node-a", "containers": [{"name": "pfs", "image": "pfs:1"}]},
    }))
    .unwrap();
    pending.metadata.owner_references = Some(vec![
        owner
            .controller_owner_ref(&common::widget_resource())
            .unwrap(),
    ]);
    pods.create(&PostParams::default(), &pending).await.unwrap();
    assert_eq!(
        pods.evict("pending", &EvictParams::default())
            .await
            .unwrap()
            .code,
        201
    );
    let pending = pods.get("pending").await.unwrap();
    assert!(
        pending.metadata.deletion_timestamp.is_some(),
        "bound: graceful"
    );
    assert!(pod_condition(&pending, "DisruptionTarget").is_some());
    pods.patch_status(
        "p2",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Succeeded"}})),
    )
    .await
    .unwrap();
    pods.evict("p2", &EvictParams::default()).await.unwrap();
    assert_eq!(api_error(pods.get("p2").await).code, 404, "done: at once");
}

/// Evictions as `kubectl drain` sends them, with `deleteOptions` (kube's `EvictParams` sends
/// its options under a field the API server does not know, so they are raw requests here).
#[tokio::test]
async fn evictions_take_delete_options_and_a_failed_one_still_counts_for_a_while() {
    let (bed, owner, pods, budgets) = budget_bed("options").await;
    for name in ["p0", "p1", "p2"] {
        store_pod(&pods, name, &owner, true).await;
    }
    create_budget(
        &budgets,
        "pfs",
        json!({"minAvailable": 1, "selector": {"matchLabels": {"app": "pfs"}}}),
    )
    .await;
    let client = bed.client_without_retry().await;
    let evict = |name: &str, body: serde_json::Value| {
        let request =
            http::Request::post(format!("/api/v1/namespaces/options/pods/{name}/eviction"))
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(serde_json::to_vec(&body).unwrap())
                .unwrap();
        let client = client.clone();
        async move { client.request::<kube::core::Status>(request).await }
    };
    let eviction = |name: &str, options: serde_json::Value| json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name}, "deleteOptions": options});
    // gracePeriodSeconds 0: gone at once.
    let done = evict("p0", eviction("p0", json!({"gracePeriodSeconds": 0})))
        .await
        .unwrap();
    assert_eq!(done.code, 201);
    assert_eq!(api_error(pods.get("p0").await).code, 404);
    assert_eq!(counts(&budgets.get("pfs").await.unwrap()), (2, 2, 1, 1));

    let refused = api_error(evict("p1", eviction("other", json!({}))).await);
    assert_eq!(
        (refused.code, refused.message.as_str()),
        (400, "name in URL does not match name in Eviction object")
    );
    // A precondition that does not hold fails the delete after the budget was spent, as with
    // the API server: the eviction counts until the controller gives up on it (2 minutes).
    let uid = pods.get("p1").await.unwrap().uid().unwrap();
    let conflict = api_error(
        evict(
            "p1",
            eviction("p1", json!({"preconditions": {"uid": "not-the-uid"}})),
        )
        .await,
    );
    assert_eq!(
        (conflict.code, conflict.message),
        (
            409,
            format!(
                "Operation cannot be fulfilled on Pod \"p1\": the UID in the precondition (not-the-uid) does not match the UID in record ({uid}). The object might have been deleted and then recreated"
            )
        )
    );
    assert!(
        pods.get("p1")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_none()
    );
    let spent = budgets.get("pfs").await.unwrap();
    assert_eq!(counts(&spent), (2, 1, 1, 0));
    assert!(
        spent
            .status
            .unwrap()
            .disrupted_pods
            .unwrap()
            .contains_key("p1")
    );
    bed.emulator.set_clock_offset_ms(3 * 60 * 1000);
    let recovered = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let budget = budgets.get("pfs").await.unwrap();
            if counts(&budget) == (2, 2, 1, 1) {
                return budget;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the expired eviction is forgotten");
    assert_eq!(recovered.status.unwrap().disrupted_pods, None);

    // What kube's EvictParams sends: the API server warns of the field it does not know (and
    // refuses it under strict field validation), and ignores it.
    let kube_body = serde_json::to_vec(
        &json!({"metadata": {"name": "p2"}, "delete_options": {"gracePeriodSeconds": 0}}),
    )
    .unwrap();
    let post = |query: &str| {
        http::Request::post(format!(
            "/api/v1/namespaces/options/pods/p2/eviction{query}"
        ))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(kube::client::Body::from(kube_body.clone()))
        .unwrap()
    };
    let strict = client.send(post("?fieldValidation=Strict")).await.unwrap();
    assert_eq!(strict.status(), 400);
    let warned = client.send(post("")).await.unwrap();
    assert_eq!(warned.status(), 201);
    assert_eq!(
        warned.headers().get("Warning").unwrap(),
        "299 - \"unknown field \\\"delete_options\\\"\""
    );
    let p2 = pods.get("p2").await.unwrap();
    assert_eq!(
        p2.metadata.deletion_grace_period_seconds,
        Some(30),
        "the options were not read"
    );

    // Only create: the subresource answers nothing else.
    let get = http::Request::get("/api/v1/namespaces/options/pods/p1/eviction")
        .body(Vec::new())
        .unwrap();
    assert_eq!(
        api_error(client.request::<kube::core::Status>(get).await).code,
        405
    );
}

#[tokio::test]
async fn discovery_lists_the_eviction_subresource_as_kubectl_drain_expects() {
    let bed = Bed::start().await;
    let core = bed.client.list_core_api_resources("v1").await.unwrap();
    let eviction = core
        .resources
        .iter()
        .find(|r| r.name == "pods/eviction")
        .expect("pods/eviction is discovered");
    assert_eq!(
        (
            eviction.group.as_deref(),
            eviction.version.as_deref(),
            eviction.kind.as_str(),
            eviction.namespaced,
            eviction.verbs.clone()
        ),
        (
            Some("policy"),
            Some("v1"),
            "Eviction",
            true,
            vec!["create".to_owned()]
        )
    );
}

#[tokio::test]
async fn evictions_need_create_on_pods_eviction() {
    let bed = Bed::start().await;
    service_account_with_pod_reader(&bed).await;
    let token = bed.emulator.service_account_token("pf", "op");
    let client = bed.client_with_token(&token).await;
    let pods: Api<Pod> = Api::namespaced(client, "pf");
    let denied = api_error(pods.evict("p", &EvictParams::default()).await);
    assert_eq!(
        forbidden(&denied),
        (
            403,
            "Forbidden",
            "pods \"p\" is forbidden: User \"system:serviceaccount:pf:op\" cannot create resource \"pods/eviction\" in API group \"\" in the namespace \"pf\""
        )
    );
    admin_create::<Role>(
        &bed,
        Some("pf"),
        json!({"metadata": {"name": "evictor"}, "rules": [
            {"apiGroups": [""], "resources": ["pods/eviction"], "verbs": ["create"]}]}),
    )
    .await;
    admin_create::<RoleBinding>(
        &bed,
        Some("pf"),
        json!({
            "metadata": {"name": "op-evictor"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "evictor"},
            "subjects": service_account_subject("pf", "op"),
        }),
    )
    .await;
    assert_eq!(
        pods.evict("p", &EvictParams::default()).await.unwrap().code,
        201
    );
    let last = bed.emulator.audit().pop().unwrap();
    assert_eq!(
        (
            last.verb.as_str(),
            last.resource.as_str(),
            last.subresource.as_deref(),
            last.allowed
        ),
        ("create", "pods", Some("eviction"), true)
    );
    assert_eq!(api_error(pods.get("p").await).code, 404, "unbound: at once");
}
