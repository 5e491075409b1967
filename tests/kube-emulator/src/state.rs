//! The API server's state and the semantics of every verb: storage with resourceVersions, the
//! event history watches resume from, optimistic concurrency, generation, the status
//! subresource, finalizers, graceful pod deletion, namespace termination, owner-reference
//! garbage collection, CRD registration, the RBAC policy the stored RBAC objects make up, and
//! the disruption controller and Pod evictions (their rules are in `disruption`). Type-specific
//! rules of built-in kinds are in `strategy`. No HTTP here: `server` parses requests into calls.
//!
//! One mutex guards it all; no call awaits, so the lock is never held across an `.await`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use serde_json::{Map, Value, json};
use tokio::sync::broadcast;

use crate::convert;
use crate::disruption;
use crate::errors::{ApiError, Subject};
use crate::merge;
use crate::meta;
use crate::rbac::{Policy, RBAC_GROUP};
use crate::resources::{self, ResourceType};
use crate::schema::Cause;
use crate::selectors::{FieldSelector, LabelSelector, go_quote};
use crate::ssa;
use crate::strategy;

/// Where objects of one resource live: `(group, plural)`.
pub type StorageKey = (String, String);
/// `(namespace or "", name)`.
pub type ObjectKey = (String, String);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, as watches see it.
#[derive(Debug)]
pub struct Event {
    pub rv: u64,
    pub storage: StorageKey,
    pub kind: EventType,
    pub object: Arc<Value>,
    /// The object before a modification, so watches with selectors can tell an object that
    /// stopped matching (sent as DELETED) from one that never did.
    pub previous: Option<Arc<Value>>,
}

/// How strictly unknown fields are treated (`?fieldValidation=`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FieldValidation {
    Ignore,
    #[default]
    Warn,
    Strict,
}

/// Per-request options of writes.
#[derive(Clone, Debug, Default)]
pub struct WriteOptions {
    /// `?fieldManager=`, else derived from the User-Agent.
    pub field_manager: String,
    pub dry_run: bool,
    pub field_validation: FieldValidation,
    /// `?force=true` (server-side apply).
    pub force: bool,
}

/// A write's result: the object, the HTTP code, and `Warning` headers.
#[derive(Debug)]
pub struct Outcome {
    pub object: Value,
    pub code: u16,
    pub warnings: Vec<String>,
}

/// `DeleteOptions`, from the body or query.
#[derive(Clone, Debug, Default)]
pub struct DeleteOptions {
    pub grace_period_seconds: Option<u64>,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    /// `Orphan` keeps dependents; anything else deletes them (background).
    pub orphan: bool,
    pub dry_run: bool,
}

/// A policy/v1 `Eviction` of a Pod: the name it gives and its `deleteOptions`.
#[derive(Clone, Debug, Default)]
pub struct Eviction {
    pub name: String,
    pub delete_options: DeleteOptions,
}

/// Patch body kinds, by Content-Type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchType {
    Merge,
    Json,
    Strategic,
    Apply,
}

/// Which part of an object a write addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Main,
    Status,
}

/// What to list or watch.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    pub namespace: Option<String>,
    pub labels: Option<LabelSelector>,
    pub fields: Option<FieldSelector>,
}

impl Selection {
    pub fn matches(&self, object: &Value) -> bool {
        let namespace = object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if self.namespace.as_deref().is_some_and(|ns| ns != namespace) {
            return false;
        }
        if let Some(labels) = &self.labels {
            let map: BTreeMap<String, String> = object
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                        .collect()
                })
                .unwrap_or_default();
            if !labels.matches(&map) {
                return false;
            }
        }
        // Fields are read from the stored form (events.k8s.io selectors are converted to it).
        self.fields
            .as_ref()
            .is_none_or(|f| f.matches_with(object, convert::selectable_field))
    }
}

/// Every served type, by (group, version, plural).
#[derive(Default)]
pub struct Registry {
    types: BTreeMap<(String, String, String), Arc<ResourceType>>,
}

impl Registry {
    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceType>> {
        self.types
            .get(&(group.to_owned(), version.to_owned(), plural.to_owned()))
            .cloned()
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<ResourceType>> {
        self.types.values()
    }

    fn add(&mut self, rt: ResourceType) {
        self.types.insert(
            (rt.group.clone(), rt.version.clone(), rt.plural.clone()),
            Arc::new(rt),
        );
    }

    fn remove_crd(&mut self, crd: &str) {
        self.types.retain(|_, rt| rt.crd.as_deref() != Some(crd));
    }
}

/// The whole server state.
pub struct State {
    pub registry: Registry,
    objects: HashMap<StorageKey, BTreeMap<ObjectKey, Arc<Value>>>,
    rv: u64,
    history: VecDeque<Arc<Event>>,
    history_limit: usize,
    /// A watch must start at or after this resourceVersion; older ones get 410.
    oldest_watchable: u64,
    events: broadcast::Sender<Arc<Event>>,
    /// What the server's clock says (creation, deletion and managed-field times).
    pub clock: meta::Clock,
    /// Set while the disruption controller writes budget statuses: its own writes do not
    /// start it again.
    syncing_budgets: bool,
    /// How far the disruption controller trails the changes it reacts to (see
    /// [`State::set_disruption_lag`]); `None`: it syncs within the write that changed things.
    disruption_lag: Option<Duration>,
    /// Namespaces changed since the disruption controller's last sync (with a lag).
    disruption_pending: std::collections::BTreeSet<String>,
    /// Wakes the disruption controller's task when a namespace becomes pending.
    pub disruption_wake: Arc<tokio::sync::Notify>,
}

/// A patch (apply included) carries no preconditions: the patch handler's
/// `DefaultUpdatedObjectInfo` has none. A uid it sets (the kubelet's status patches put one in
/// as a guard) is caught by validation as a change of an immutable field, a 422, where an
/// update's uid is a precondition (409, see `State::write`).
fn uid_unchanged(
    rt: &ResourceType,
    name: &str,
    new: &Value,
    existing: &Value,
) -> Result<(), ApiError> {
    let uid = meta_str(new, "uid");
    if uid.is_empty() || uid == meta_str(existing, "uid") {
        return Ok(());
    }
    Err(ApiError::invalid(
        &rt.kind,
        &rt.group,
        name,
        &[Cause {
            reason: "FieldValueInvalid".into(),
            message: format!("Invalid value: \"{uid}\": field is immutable"),
            field: "metadata.uid".into(),
        }],
    ))
}

fn subject<'a>(rt: &'a ResourceType, name: &'a str) -> Subject<'a> {
    Subject {
        group: &rt.group,
        resource: &rt.plural,
        name,
    }
}

fn meta_str<'a>(object: &'a Value, field: &str) -> &'a str {
    object
        .get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn metadata_mut(object: &mut Value) -> &mut Map<String, Value> {
    if !object.get("metadata").is_some_and(Value::is_object) {
        object["metadata"] = json!({});
    }
    object["metadata"]
        .as_object_mut()
        .expect("metadata is an object")
}

fn finalizers(object: &Value) -> usize {
    object
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len)
}

/// The part of an object `generation` tracks: everything but metadata (and status when it is
/// a subresource).
fn spec_part(object: &Value, status_subresource: bool) -> Value {
    let mut part = object.clone();
    if let Some(map) = part.as_object_mut() {
        map.remove("metadata");
        if status_subresource {
            map.remove("status");
        }
    }
    part
}

/// The object without what changes on every write, to detect no-op writes.
fn content(object: &Value) -> Value {
    let mut content = object.clone();
    if let Some(metadata) = content.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.remove("resourceVersion");
        metadata.remove("managedFields");
    }
    content
}

impl State {
    pub fn new(history_limit: usize) -> State {
        let mut registry = Registry::default();
        for rt in resources::builtins() {
            registry.add(rt);
        }
        let (events, _) = broadcast::channel(65536);
        let mut state = State {
            registry,
            objects: HashMap::new(),
            rv: 1,
            history: VecDeque::new(),
            history_limit,
            oldest_watchable: 1,
            events,
            clock: meta::Clock::default(),
            syncing_budgets: false,
            disruption_lag: None,
            disruption_pending: std::collections::BTreeSet::new(),
            disruption_wake: Arc::new(tokio::sync::Notify::new()),
        };
        for namespace in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let rt = state
                .registry
                .lookup("", "v1", "namespaces")
                .expect("built-in");
            let body =
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}});
            let options = WriteOptions {
                field_manager: "kube-apiserver".into(),
                ..WriteOptions::default()
            };
            state
                .create(&rt, None, body, &options)
                .expect("bootstrap namespace");
        }
        state
    }

    pub fn current_rv(&self) -> u64 {
        self.rv
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.events.subscribe()
    }

    /// Forgets all history: watches from any earlier resourceVersion now get 410.
    pub fn compact(&mut self) {
        self.history.clear();
        self.rv += 1;
        self.oldest_watchable = self.rv;
    }

    /// History events after `rv` for a resuming watch, or 410 when they are gone.
    pub fn events_since(&self, rv: u64) -> Result<Vec<Arc<Event>>, ApiError> {
        if rv < self.oldest_watchable.saturating_sub(1) {
            return Err(ApiError::expired(rv, self.oldest_watchable));
        }
        Ok(self.history.iter().filter(|e| e.rv > rv).cloned().collect())
    }

    /// Renders a stored object as `rt`'s version (all versions share storage; events.k8s.io
    /// Events are converted from the stored core Events).
    fn render(rt: &ResourceType, object: &Value) -> Value {
        convert::to_version(rt, object)
    }

    /// The stored objects of `rt`'s storage, in their stored form (core/v1 for Events).
    pub fn objects(&self, rt: &ResourceType) -> impl Iterator<Item = &Arc<Value>> {
        self.objects
            .get(&rt.storage_key())
            .into_iter()
            .flat_map(|m| m.values())
    }

    fn stored(&self, rt: &ResourceType, namespace: &str, name: &str) -> Option<&Arc<Value>> {
        self.objects
            .get(&rt.storage_key())
            .and_then(|m| m.get(&(namespace.to_owned(), name.to_owned())))
    }

    /// A stored object in the form `rt` serves it, for writes through `rt` to start from (stored
    /// objects of kinds without conversion are shared, not copied).
    fn current(&self, rt: &ResourceType, namespace: &str, name: &str) -> Option<Arc<Value>> {
        let stored = self.stored(rt, namespace, name)?;
        Some(if convert::renders(rt) {
            Arc::new(Self::render(rt, stored))
        } else {
            Arc::clone(stored)
        })
    }

    fn namespace_of(rt: &ResourceType, namespace: Option<&str>) -> String {
        if rt.namespaced {
            namespace.unwrap_or_default().to_owned()
        } else {
            String::new()
        }
    }

    pub fn get(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        let ns = Self::namespace_of(rt, namespace);
        self.stored(rt, &ns, name)
            .map(|o| Self::render(rt, o))
            .ok_or_else(|| ApiError::not_found(subject(rt, name)))
    }

    /// A List of the selected objects, paginated by `limit`/`continue`.
    pub fn list(
        &self,
        rt: &ResourceType,
        selection: &Selection,
        limit: Option<usize>,
        continue_after: Option<&ObjectKey>,
    ) -> Value {
        let mut items: Vec<(ObjectKey, Value)> = self
            .objects
            .get(&rt.storage_key())
            .into_iter()
            .flat_map(|m| m.iter())
            .filter(|(key, _)| continue_after.is_none_or(|after| *key > after))
            .filter(|(_, o)| selection.matches(o))
            .map(|(key, o)| (key.clone(), Self::render(rt, o)))
            .collect();
        let mut metadata = json!({"resourceVersion": self.rv.to_string()});
        if let Some(limit) = limit.filter(|l| *l > 0 && items.len() > *l) {
            let remaining = items.len() - limit;
            items.truncate(limit);
            let last = &items[limit - 1].0;
            let token = base64::engine::general_purpose::STANDARD.encode(
                serde_json::to_vec(&json!({"ns": last.0, "name": last.1, "rv": self.rv}))
                    .unwrap_or_default(),
            );
            metadata["continue"] = json!(token);
            metadata["remainingItemCount"] = json!(remaining);
        }
        json!({
            "kind": format!("{}List", rt.kind),
            "apiVersion": rt.api_version(),
            "metadata": metadata,
            "items": items.into_iter().map(|(_, o)| o).collect::<Vec<_>>(),
        })
    }

    /// Stores a change. `object` and `previous` may be in any served form: they are stored (and
    /// sent to watches) in the stored form; the result is `object` as `rt` serves it.
    fn commit(
        &mut self,
        rt: &ResourceType,
        kind: EventType,
        object: Value,
        previous: Option<Arc<Value>>,
    ) -> Value {
        self.rv += 1;
        let mut object = convert::to_storage(object);
        let previous = previous.map(|p| {
            if convert::converts(&p) {
                Arc::new(convert::to_storage((*p).clone()))
            } else {
                p
            }
        });
        metadata_mut(&mut object).insert("resourceVersion".into(), json!(self.rv.to_string()));
        let key = (
            meta_str(&object, "namespace").to_owned(),
            meta_str(&object, "name").to_owned(),
        );
        let namespace = key.0.clone();
        let stored = Arc::new(object.clone());
        let storage = self.objects.entry(rt.storage_key()).or_default();
        match kind {
            EventType::Deleted => {
                storage.remove(&key);
            }
            _ => {
                storage.insert(key, Arc::clone(&stored));
            }
        }
        let event = Arc::new(Event {
            rv: self.rv,
            storage: rt.storage_key(),
            kind,
            object: stored,
            previous,
        });
        self.history.push_back(Arc::clone(&event));
        while self.history.len() > self.history_limit {
            if let Some(dropped) = self.history.pop_front() {
                self.oldest_watchable = dropped.rv + 1;
            }
        }
        let _ = self.events.send(event);
        let rendered = Self::render(rt, &object);
        // The disruption controller reacts to every change of a namespace's Pods and budgets
        // (as its informers make it): before anyone can read the state again, or, with a lag,
        // once per namespace for all the changes of that while.
        if !self.syncing_budgets
            && matches!(
                (rt.group.as_str(), rt.plural.as_str()),
                ("", "pods") | ("policy", "poddisruptionbudgets")
            )
        {
            self.disruption_changed(namespace);
        }
        rendered
    }

    /// Defaulting, pruning and validation of a custom resource; warnings for pruned fields.
    fn check_custom(
        rt: &ResourceType,
        object: &mut Value,
        old: Option<&Value>,
        validation: FieldValidation,
    ) -> Result<Vec<String>, ApiError> {
        let Some(schema) = &rt.schema else {
            return Ok(Vec::new());
        };
        schema.apply_defaults(object);
        let pruned = schema.prune(object);
        let name = meta_str(object, "name").to_owned();
        if validation == FieldValidation::Strict && !pruned.is_empty() {
            let fields: Vec<String> = pruned
                .iter()
                .map(|p| format!("unknown field \"{p}\""))
                .collect();
            return Err(ApiError::bad_request(format!(
                "{kind} in version \"{version}\" cannot be handled as a {kind}: strict decoding error: {}",
                fields.join(", "),
                kind = rt.kind,
                version = rt.version
            )));
        }
        let causes = schema.validate(object, old);
        if !causes.is_empty() {
            return Err(ApiError::invalid(&rt.kind, &rt.group, &name, &causes));
        }
        Ok(if validation == FieldValidation::Warn {
            pruned
                .iter()
                .map(|p| format!("unknown field \"{p}\""))
                .collect()
        } else {
            Vec::new()
        })
    }

    /// Type-specific preparation of a new or updated object (what each registry strategy does).
    fn prepare(
        &self,
        rt: &ResourceType,
        object: &mut Value,
        old: Option<&Value>,
    ) -> Result<(), ApiError> {
        let name = meta_str(object, "name").to_owned();
        match (rt.group.as_str(), rt.kind.as_str()) {
            ("", "Service") => {
                // What the other Services hold: this one may keep what it has.
                let namespace = meta_str(object, "namespace").to_owned();
                let others = self.objects(rt).filter(|s| {
                    meta_str(s, "namespace") != namespace || meta_str(s, "name") != name
                });
                let allocated = strategy::Allocated::by(others.map(|s| s.as_ref()));
                strategy::prepare_service(object, old, &allocated)?;
            }
            ("apiextensions.k8s.io", "CustomResourceDefinition") => {
                resources::from_crd(object)
                    .map_err(|causes| ApiError::invalid(&rt.kind, &rt.group, &name, &causes))?;
                let names = object
                    .pointer("/spec/names")
                    .cloned()
                    .unwrap_or(Value::Null);
                let storage: Vec<Value> = object
                    .pointer("/spec/versions")
                    .and_then(Value::as_array)
                    .map(|v| {
                        v.iter()
                            .filter(|v| v.get("storage") == Some(&json!(true)))
                            .filter_map(|v| v.get("name").cloned())
                            .collect()
                    })
                    .unwrap_or_default();
                let now = meta::timestamp(self.clock.now());
                object["status"] = json!({
                    "acceptedNames": names,
                    "storedVersions": storage,
                    "conditions": [
                        {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": now},
                        {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": now},
                    ],
                });
            }
            _ => strategy::prepare(rt, object, old)?,
        }
        let metadata = object.get("metadata").unwrap_or(&Value::Null);
        let mut causes = meta::check_labels_and_annotations(metadata);
        causes.extend(meta::check_owner_references(metadata));
        if !causes.is_empty() {
            return Err(ApiError::invalid(&rt.kind, &rt.group, &name, &causes));
        }
        Ok(())
    }

    /// The RBAC policy in force: the bootstrap policy and the stored RBAC objects.
    pub fn rbac_policy(&self) -> Policy {
        let mut policy = Policy::new();
        let stored = |plural: &str| -> Vec<Arc<Value>> {
            self.registry
                .lookup(RBAC_GROUP, "v1", plural)
                .map(|rt| self.objects(&rt).cloned().collect())
                .unwrap_or_default()
        };
        for role in stored("roles") {
            policy.add_role(&role);
        }
        for cluster_role in stored("clusterroles") {
            policy.add_cluster_role(&cluster_role);
        }
        for binding in stored("rolebindings") {
            policy.add_role_binding(&binding);
        }
        for binding in stored("clusterrolebindings") {
            policy.add_cluster_role_binding(&binding);
        }
        policy
    }

    /// Whether the ServiceAccount `namespace/name` exists (its tokens authenticate only then).
    pub fn service_account_exists(&self, namespace: &str, name: &str) -> bool {
        self.registry
            .lookup("", "v1", "serviceaccounts")
            .is_some_and(|rt| self.stored(&rt, namespace, name).is_some())
    }

    /// Registers or refreshes the types a CRD serves.
    fn register_crd(&mut self, crd: &Value) {
        let name = meta_str(crd, "name").to_owned();
        self.registry.remove_crd(&name);
        if let Ok(types) = resources::from_crd(crd) {
            for rt in types {
                self.registry.add(rt);
            }
        }
    }

    pub fn create(
        &mut self,
        rt: &ResourceType,
        namespace: Option<&str>,
        body: Value,
        options: &WriteOptions,
    ) -> Result<Outcome, ApiError> {
        self.create_with(rt, namespace, body, options, None)
    }

    /// Creation; `applied` carries the managedFields of a server-side apply that creates.
    fn create_with(
        &mut self,
        rt: &ResourceType,
        namespace: Option<&str>,
        mut body: Value,
        options: &WriteOptions,
        applied: Option<Vec<ssa::Managed>>,
    ) -> Result<Outcome, ApiError> {
        if !body.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request must be a JSON object",
            ));
        }
        if let Some(api_version) = body.get("apiVersion").and_then(Value::as_str)
            && api_version != rt.api_version()
        {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({api_version}) does not match the expected API version ({})",
                rt.api_version()
            )));
        }
        let ns = Self::namespace_of(rt, namespace);
        let body_ns = meta_str(&body, "namespace").to_owned();
        if rt.namespaced && !body_ns.is_empty() && body_ns != ns {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        let mut name = meta_str(&body, "name").to_owned();
        if name.is_empty() {
            let prefix = meta_str(&body, "generateName").to_owned();
            if prefix.is_empty() {
                return Err(ApiError::invalid(
                    &rt.kind,
                    &rt.group,
                    "",
                    &[Cause {
                        reason: "FieldValueRequired".into(),
                        message: "Required value: name or generateName is required".into(),
                        field: "metadata.name".into(),
                    }],
                ));
            }
            name = loop {
                let candidate = meta::generate_name(&prefix);
                if self.stored(rt, &ns, &candidate).is_none() {
                    break candidate;
                }
            };
        }
        if let Some(cause) = strategy::check_name(rt, &name) {
            return Err(ApiError::invalid(&rt.kind, &rt.group, &name, &[cause]));
        }
        if rt.namespaced {
            match self.stored(
                &self
                    .registry
                    .lookup("", "v1", "namespaces")
                    .expect("built-in"),
                "",
                &ns,
            ) {
                None => {
                    return Err(ApiError::not_found(Subject {
                        group: "",
                        resource: "namespaces",
                        name: &ns,
                    }));
                }
                Some(namespace) if namespace.pointer("/metadata/deletionTimestamp").is_some() => {
                    return Err(ApiError {
                        code: 403,
                        reason: "Forbidden",
                        message: format!(
                            "{} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                            rt.plural
                        ),
                        details: None,
                        retry_after: None,
                    });
                }
                Some(_) => {}
            }
        }
        if self.stored(rt, &ns, &name).is_some() {
            return Err(ApiError::already_exists(subject(rt, &name)));
        }
        // A Pod's status is set by its strategy; a Node's is kept as given ("Nodes allow *all*
        // fields, including status, to be set on create": a kubelet registers its node so).
        if rt.status_subresource
            && !(rt.group.is_empty() && matches!(rt.kind.as_str(), "Pod" | "Node"))
            && let Some(map) = body.as_object_mut()
        {
            map.remove("status");
        }
        body["apiVersion"] = json!(rt.api_version());
        body["kind"] = json!(rt.kind);
        {
            let metadata = metadata_mut(&mut body);
            metadata.insert("name".into(), json!(name));
            if rt.namespaced {
                metadata.insert("namespace".into(), json!(ns));
            } else {
                metadata.remove("namespace");
            }
            for server_owned in [
                "uid",
                "resourceVersion",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "managedFields",
                "selfLink",
            ] {
                metadata.remove(server_owned);
            }
        }
        self.prepare(rt, &mut body, None)?;
        let warnings = Self::check_custom(rt, &mut body, None, options.field_validation)?;
        let now = self.clock.now();
        {
            let metadata = metadata_mut(&mut body);
            metadata.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
            metadata.insert("creationTimestamp".into(), json!(meta::timestamp(now)));
            if rt.tracks_generation {
                metadata.insert("generation".into(), json!(1));
            }
        }
        let time = meta::timestamp(now);
        let api_version = rt.api_version();
        match applied {
            Some(managed) => ssa::write_managed(&mut body, &managed),
            None => ssa::record_update(
                None,
                &mut body,
                ssa::Writer {
                    manager: &options.field_manager,
                    api_version: &api_version,
                    time: &time,
                    subresource: None,
                },
                &rt.list_keys,
            ),
        }
        if options.dry_run {
            return Ok(Outcome {
                object: Self::render(rt, &body),
                code: 201,
                warnings,
            });
        }
        let object = self.commit(rt, EventType::Added, body, None);
        if rt.kind == "CustomResourceDefinition" {
            self.register_crd(&object);
        }
        Ok(Outcome {
            object,
            code: 201,
            warnings,
        })
    }

    /// PUT: replace (the main resource or its status).
    pub fn update(
        &mut self,
        rt: &ResourceType,
        namespace: Option<&str>,
        name: &str,
        body: Value,
        part: Part,
        options: &WriteOptions,
    ) -> Result<Outcome, ApiError> {
        let ns = Self::namespace_of(rt, namespace);
        let existing = self
            .current(rt, &ns, name)
            .ok_or_else(|| ApiError::not_found(subject(rt, name)))?;
        if !body.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request must be a JSON object",
            ));
        }
        let body_name = meta_str(&body, "name");
        if !body_name.is_empty() && body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let requested_rv = meta_str(&body, "resourceVersion").to_owned();
        // Custom resources, CRDs and Leases refuse an update that names no version
        // (`AllowUnconditionalUpdate` is false in their strategies): a Lease written blind
        // could take over from a leader it never saw.
        let unconditional_refused = rt.crd.is_some()
            || matches!(
                (rt.group.as_str(), rt.plural.as_str()),
                ("coordination.k8s.io", "leases")
                    | ("apiextensions.k8s.io", "customresourcedefinitions")
            );
        if requested_rv.is_empty() && unconditional_refused {
            return Err(ApiError::invalid(
                &rt.kind,
                &rt.group,
                name,
                &[Cause {
                    reason: "FieldValueInvalid".into(),
                    message: "Invalid value: 0x0: must be specified for an update".into(),
                    field: "metadata.resourceVersion".into(),
                }],
            ));
        }
        self.write(rt, &existing, body, part, &requested_rv, options, None)
    }

    /// PATCH of any kind; a server-side apply to a missing object creates it.
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &mut self,
        rt: &ResourceType,
        namespace: Option<&str>,
        name: &str,
        patch_type: PatchType,
        patch: Value,
        part: Part,
        options: &WriteOptions,
    ) -> Result<Outcome, ApiError> {
        let ns = Self::namespace_of(rt, namespace);
        let existing = self.current(rt, &ns, name);
        if patch_type == PatchType::Apply {
            if options.field_manager.is_empty() {
                return Err(ApiError::bad_request(
                    "PATCH, application/apply-patch+yaml requires fieldManager to be set",
                ));
            }
            for required in ["apiVersion", "kind"] {
                if patch
                    .get(required)
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    return Err(ApiError::bad_request(format!("{required} must be set")));
                }
            }
            let patch_name = meta_str(&patch, "name");
            if patch_name != name {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({patch_name}) does not match the name on the URL ({name})"
                )));
            }
            // Items of keyed lists are identified by their defaulted keys, as stored.
            let mut patch = patch;
            rt.list_keys.default_keys(&mut patch);
            // A resourceVersion in the applied configuration is a precondition, as in any
            // update: the registry refuses a write whose version is not the stored one.
            let requested_rv = meta_str(&patch, "resourceVersion").to_owned();
            let time = meta::timestamp(self.clock.now());
            let api_version = rt.api_version();
            let writer = ssa::Writer {
                manager: &options.field_manager,
                api_version: &api_version,
                time: &time,
                subresource: (part == Part::Status).then_some("status"),
            };
            if let Some(existing) = &existing {
                uid_unchanged(rt, name, &patch, existing)?;
            }
            let applied = ssa::apply(
                existing.as_deref(),
                &patch,
                writer,
                options.force,
                &rt.list_keys,
            )
            .map_err(|conflicts| ApiError::apply_conflicts(subject(rt, name), &conflicts))?;
            return match existing {
                // Subresources never create on update (`StatusREST.Update` passes
                // forceAllowCreate=false).
                None if part == Part::Status => Err(ApiError::not_found(subject(rt, name))),
                None => {
                    let managed = ssa::read_managed(&applied);
                    self.create_with(rt, namespace, applied, options, Some(managed))
                }
                Some(existing) => self.write(
                    rt,
                    &existing,
                    applied,
                    part,
                    &requested_rv,
                    options,
                    Some(()),
                ),
            };
        }
        let existing = existing.ok_or_else(|| ApiError::not_found(subject(rt, name)))?;
        let mut patched = (*existing).clone();
        match patch_type {
            PatchType::Merge => merge::merge_patch(&mut patched, &patch),
            PatchType::Json => merge::json_patch(&mut patched, &patch).map_err(|e| ApiError {
                code: 422,
                reason: "Invalid",
                message: e,
                details: None,
                retry_after: None,
            })?,
            PatchType::Strategic => {
                if !rt.is_builtin() {
                    return Err(ApiError::unsupported_media_type(
                        "application/strategic-merge-patch+json",
                    ));
                }
                merge::strategic_merge(&mut patched, &patch, &rt.list_keys)
                    .map_err(ApiError::bad_request)?;
            }
            PatchType::Apply => unreachable!("handled above"),
        }
        let requested_rv =
            if meta_str(&patched, "resourceVersion") != meta_str(&existing, "resourceVersion") {
                meta_str(&patched, "resourceVersion").to_owned()
            } else {
                String::new()
            };
        uid_unchanged(rt, name, &patched, &existing)?;
        self.write(rt, &existing, patched, part, &requested_rv, options, None)
    }

    /// The common path of every write to an existing object. `applied` marks a server-side
    /// apply, whose result already carries its managedFields.
    #[allow(clippy::too_many_arguments)]
    fn write(
        &mut self,
        rt: &ResourceType,
        existing: &Arc<Value>,
        body: Value,
        part: Part,
        requested_rv: &str,
        options: &WriteOptions,
        applied: Option<()>,
    ) -> Result<Outcome, ApiError> {
        let name = meta_str(existing, "name").to_owned();
        if !requested_rv.is_empty() && requested_rv != meta_str(existing, "resourceVersion") {
            return Err(ApiError::stale(subject(rt, &name)));
        }
        let body_uid = meta_str(&body, "uid");
        if !body_uid.is_empty() && body_uid != meta_str(existing, "uid") {
            return Err(ApiError::conflict(
                subject(rt, &name),
                &format!(
                    "Precondition failed: UID in precondition: {body_uid}, UID in object meta: {}",
                    meta_str(existing, "uid")
                ),
            ));
        }
        let mut new = match part {
            Part::Status => {
                let mut new = (**existing).clone();
                new["status"] = body.get("status").cloned().unwrap_or(Value::Null);
                if new["status"].is_null() {
                    new.as_object_mut().expect("object").remove("status");
                }
                if applied.is_some() {
                    ssa::write_managed(&mut new, &ssa::read_managed(&body));
                }
                new
            }
            Part::Main => {
                let mut new = body;
                if rt.status_subresource {
                    match existing.get("status") {
                        Some(status) => new["status"] = status.clone(),
                        None => {
                            new.as_object_mut().expect("object").remove("status");
                        }
                    }
                }
                new
            }
        };
        new["apiVersion"] = json!(rt.api_version());
        new["kind"] = json!(rt.kind);
        {
            let old_meta = existing
                .get("metadata")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            let metadata = metadata_mut(&mut new);
            for immutable in [
                "name",
                "namespace",
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
            ] {
                match old_meta.get(immutable) {
                    Some(value) => metadata.insert(immutable.into(), value.clone()),
                    None => metadata.remove(immutable),
                };
            }
            if applied.is_none() {
                match old_meta.get("managedFields") {
                    Some(managed) => metadata.insert("managedFields".into(), managed.clone()),
                    None => metadata.remove("managedFields"),
                };
            }
        }
        self.prepare(rt, &mut new, Some(existing))?;
        let warnings = Self::check_custom(rt, &mut new, Some(existing), options.field_validation)?;
        if let Some(generation) = existing
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            && spec_part(&new, rt.status_subresource) != spec_part(existing, rt.status_subresource)
        {
            metadata_mut(&mut new).insert("generation".into(), json!(generation + 1));
        }
        if applied.is_none() {
            let time = meta::timestamp(self.clock.now());
            let api_version = rt.api_version();
            let writer = ssa::Writer {
                manager: &options.field_manager,
                api_version: &api_version,
                time: &time,
                subresource: (part == Part::Status).then_some("status"),
            };
            ssa::record_update(Some(existing), &mut new, writer, &rt.list_keys);
        }
        // A write that changes nothing is not a write: same resourceVersion, no event. Compared
        // as stored (an Event read through either API is one stored object).
        let unchanged = if convert::converts(&new) || convert::converts(existing) {
            content(&convert::to_storage(new.clone()))
                == content(&convert::to_storage((**existing).clone()))
        } else {
            content(&new) == content(existing)
        };
        if unchanged {
            return Ok(Outcome {
                object: Self::render(rt, existing),
                code: 200,
                warnings,
            });
        }
        if options.dry_run {
            return Ok(Outcome {
                object: Self::render(rt, &new),
                code: 200,
                warnings,
            });
        }
        let finished = new.pointer("/metadata/deletionTimestamp").is_some()
            && finalizers(&new) == 0
            && !self.pod_still_terminating(rt, &new);
        if finished {
            let object = self.remove(rt, new, Some(Arc::clone(existing)), false);
            return Ok(Outcome {
                object,
                code: 200,
                warnings,
            });
        }
        let object = self.commit(rt, EventType::Modified, new, Some(Arc::clone(existing)));
        if rt.kind == "CustomResourceDefinition" {
            self.register_crd(&object);
        }
        Ok(Outcome {
            object,
            code: 200,
            warnings,
        })
    }

    /// A bound pod being deleted gracefully is removed by its kubelet, not by finalizers.
    fn pod_still_terminating(&self, rt: &ResourceType, pod: &Value) -> bool {
        rt.kind == "Pod"
            && rt.group.is_empty()
            && pod
                .pointer("/metadata/deletionGracePeriodSeconds")
                .and_then(Value::as_u64)
                .is_some_and(|g| g > 0)
    }

    pub fn delete(
        &mut self,
        rt: &ResourceType,
        namespace: Option<&str>,
        name: &str,
        options: &DeleteOptions,
    ) -> Result<Outcome, ApiError> {
        let ns = Self::namespace_of(rt, namespace);
        let existing = self
            .stored(rt, &ns, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(subject(rt, name)))?;
        if let Some(uid) = &options.uid
            && uid != meta_str(&existing, "uid")
        {
            return Err(ApiError::conflict(
                subject(rt, name),
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta_str(&existing, "uid")
                ),
            ));
        }
        if let Some(rv) = &options.resource_version
            && rv != meta_str(&existing, "resourceVersion")
        {
            return Err(ApiError::conflict(
                subject(rt, name),
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    meta_str(&existing, "resourceVersion")
                ),
            ));
        }
        if options.dry_run {
            return Ok(Outcome {
                object: Self::render(rt, &existing),
                code: 200,
                warnings: Vec::new(),
            });
        }
        let now = self.clock.now();
        let is_pod = rt.kind == "Pod" && rt.group.is_empty();
        let bound = is_pod
            && existing
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .is_some_and(|n| !n.is_empty());
        let finished_phase = matches!(
            existing.pointer("/status/phase").and_then(Value::as_str),
            Some("Succeeded" | "Failed")
        );
        let grace = if is_pod && bound && !finished_phase {
            options
                .grace_period_seconds
                .or_else(|| {
                    existing
                        .pointer("/spec/terminationGracePeriodSeconds")
                        .and_then(Value::as_u64)
                })
                .unwrap_or(30)
        } else {
            0
        };
        let terminating = existing.pointer("/metadata/deletionTimestamp").is_some();
        let current_grace = existing
            .pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_u64);

        if rt.kind == "Namespace" && rt.group.is_empty() {
            let mut object = (*existing).clone();
            if !terminating {
                metadata_mut(&mut object)
                    .insert("deletionTimestamp".into(), json!(meta::timestamp(now)));
                object["status"]["phase"] = json!("Terminating");
                object = self.commit(rt, EventType::Modified, object, Some(Arc::clone(&existing)));
            }
            self.terminate_namespace(name);
            let object = self.get(rt, None, name).unwrap_or(object);
            return Ok(Outcome {
                object,
                code: 200,
                warnings: Vec::new(),
            });
        }

        if finalizers(&existing) > 0 || (grace > 0 && current_grace.is_none_or(|g| grace < g)) {
            let mut object = (*existing).clone();
            let metadata = metadata_mut(&mut object);
            // Marking an object for deletion bumps a set generation (`rest.BeforeDelete`):
            // a store held by a finalizer reads observedGeneration < generation.
            if !terminating
                && let Some(generation) = metadata
                    .get("generation")
                    .and_then(Value::as_i64)
                    .filter(|g| *g > 0)
            {
                metadata.insert("generation".into(), json!(generation + 1));
            }
            // A deletion in progress is only ever shortened: a longer grace asked again
            // changes nothing, a shorter one (a force delete, 0) moves it closer.
            let shortens = !terminating || current_grace.is_none_or(|g| grace < g);
            // Shortened, a deletion still counts from when it was first asked for
            // (`rest.BeforeDelete`): its timestamp moves back by the grace taken off.
            let asked_at = existing
                .pointer("/metadata/deletionTimestamp")
                .and_then(Value::as_str)
                .and_then(|at| humantime::parse_rfc3339(at).ok())
                .zip(current_grace)
                .map_or(now, |(at, grace)| at - Duration::from_secs(grace));
            if shortens {
                metadata.insert(
                    "deletionTimestamp".into(),
                    json!(meta::timestamp(asked_at + Duration::from_secs(grace))),
                );
                metadata.insert("deletionGracePeriodSeconds".into(), json!(grace));
            }
            if grace == 0 && finalizers(&object) == 0 {
                let object = self.remove(rt, object, Some(Arc::clone(&existing)), options.orphan);
                return Ok(Outcome {
                    object,
                    code: 200,
                    warnings: Vec::new(),
                });
            }
            // Asked again with nothing to change: no write, no new resourceVersion.
            if object == *existing {
                return Ok(Outcome {
                    object: Self::render(rt, &existing),
                    code: 200,
                    warnings: Vec::new(),
                });
            }
            let uid = meta_str(&object, "uid").to_owned();
            let object = self.commit(rt, EventType::Modified, object, Some(existing));
            // Orphaning does not wait for the other finalizers: the garbage collector's
            // `orphan` finalizer takes the owner references off the dependents while the
            // owner is still held (and is removed at once, as here it is never shown).
            if options.orphan {
                self.collect_garbage(&uid, true);
            }
            return Ok(Outcome {
                object,
                code: 200,
                warnings: Vec::new(),
            });
        }
        if grace > 0 && terminating {
            // Already terminating with an equal or shorter grace period: nothing changes.
            return Ok(Outcome {
                object: Self::render(rt, &existing),
                code: 200,
                warnings: Vec::new(),
            });
        }
        let object = self.remove(rt, (*existing).clone(), Some(existing), options.orphan);
        Ok(Outcome {
            object,
            code: 200,
            warnings: Vec::new(),
        })
    }

    /// Removes an object for good, then lets its dependents and namespace follow.
    fn remove(
        &mut self,
        rt: &ResourceType,
        object: Value,
        previous: Option<Arc<Value>>,
        orphan: bool,
    ) -> Value {
        let uid = meta_str(&object, "uid").to_owned();
        let removed = self.commit(rt, EventType::Deleted, object, previous);
        if rt.kind == "CustomResourceDefinition" {
            self.drop_crd(&removed);
        }
        self.collect_garbage(&uid, orphan);
        self.finish_namespaces();
        removed
    }

    /// Owner-reference garbage collection: dependents go too (or lose the reference, orphaned).
    fn collect_garbage(&mut self, owner_uid: &str, orphan: bool) {
        let types: Vec<Arc<ResourceType>> = self.registry.all().cloned().collect();
        let mut seen = std::collections::HashSet::new();
        for rt in types {
            if !seen.insert(rt.storage_key()) {
                continue;
            }
            let dependents: Vec<Arc<Value>> = self
                .objects(&rt)
                .filter(|o| {
                    o.pointer("/metadata/ownerReferences")
                        .and_then(Value::as_array)
                        .is_some_and(|refs| {
                            refs.iter()
                                .any(|r| r.get("uid").and_then(Value::as_str) == Some(owner_uid))
                        })
                })
                .cloned()
                .collect();
            for dependent in dependents {
                let ns = meta_str(&dependent, "namespace").to_owned();
                let name = meta_str(&dependent, "name").to_owned();
                if orphan {
                    let mut object = (*dependent).clone();
                    if let Some(refs) = object
                        .pointer_mut("/metadata/ownerReferences")
                        .and_then(Value::as_array_mut)
                    {
                        refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(owner_uid));
                    }
                    self.commit(&rt, EventType::Modified, object, Some(dependent));
                } else {
                    let _ = self.delete(&rt, Some(&ns), &name, &DeleteOptions::default());
                }
            }
        }
    }

    /// Deletes everything in a terminating namespace (each object by its own rules, once).
    fn terminate_namespace(&mut self, namespace: &str) {
        let types: Vec<Arc<ResourceType>> = self
            .registry
            .all()
            .filter(|rt| rt.namespaced)
            .cloned()
            .collect();
        let mut seen = std::collections::HashSet::new();
        for rt in types {
            if !seen.insert(rt.storage_key()) {
                continue;
            }
            let names: Vec<String> = self
                .objects(&rt)
                .filter(|o| meta_str(o, "namespace") == namespace)
                .map(|o| meta_str(o, "name").to_owned())
                .collect();
            for name in names {
                let _ = self.delete(&rt, Some(namespace), &name, &DeleteOptions::default());
            }
        }
        self.finish_namespaces();
    }

    /// Removes terminating namespaces that have become empty.
    fn finish_namespaces(&mut self) {
        let Some(namespaces) = self.registry.lookup("", "v1", "namespaces") else {
            return;
        };
        let terminating: Vec<Arc<Value>> = self
            .objects(&namespaces)
            .filter(|n| n.pointer("/metadata/deletionTimestamp").is_some())
            .cloned()
            .collect();
        for namespace in terminating {
            let name = meta_str(&namespace, "name").to_owned();
            let empty = self
                .objects
                .iter()
                .all(|(_, objects)| objects.keys().all(|(ns, _)| *ns != name));
            if empty {
                self.commit(
                    &namespaces,
                    EventType::Deleted,
                    (*namespace).clone(),
                    Some(namespace),
                );
            }
        }
    }

    /// A CRD is gone: its types stop being served and their objects are deleted.
    fn drop_crd(&mut self, crd: &Value) {
        let name = meta_str(crd, "name").to_owned();
        let types: Vec<Arc<ResourceType>> = self
            .registry
            .all()
            .filter(|rt| rt.crd.as_deref() == Some(name.as_str()))
            .cloned()
            .collect();
        if let Some(rt) = types.first() {
            let objects: Vec<Arc<Value>> = self.objects(rt).cloned().collect();
            for object in objects {
                self.commit(rt, EventType::Deleted, (*object).clone(), Some(object));
            }
        }
        self.registry.remove_crd(&name);
    }
}

// ---------------------------------------------------------------------------------------------
// The disruption controller and Pod evictions (their rules are in `disruption`)

impl State {
    fn builtin(&self, group: &str, plural: &str) -> Arc<ResourceType> {
        self.registry.lookup(group, "v1", plural).expect("built-in")
    }

    /// The stored objects of `rt` in `namespace`.
    fn objects_in<'a>(
        &'a self,
        rt: &ResourceType,
        namespace: &'a str,
    ) -> impl Iterator<Item = &'a Arc<Value>> {
        self.objects
            .get(&rt.storage_key())
            .into_iter()
            .flat_map(move |objects| {
                objects
                    .range((namespace.to_owned(), String::new())..)
                    .take_while(move |((ns, _), _)| ns == namespace)
                    .map(|(_, object)| object)
            })
    }

    /// The disruption controller's sync of the budgets of `namespace`: each status it would
    /// change is written through the status subresource, as `kube-controller-manager` (a new
    /// resourceVersion, a watch event), as the real controller's `UpdateStatus` is.
    fn sync_disruption_budgets(&mut self, namespace: &str) {
        let budgets_rt = self.builtin("policy", "poddisruptionbudgets");
        let pods_rt = self.builtin("", "pods");
        let budgets: Vec<Arc<Value>> = self.objects_in(&budgets_rt, namespace).cloned().collect();
        if budgets.is_empty() {
            return;
        }
        let pods: Vec<Arc<Value>> = self.objects_in(&pods_rt, namespace).cloned().collect();
        let pods: Vec<&Value> = pods.iter().map(|pod| pod.as_ref()).collect();
        let now = self.clock.now();
        let scale_of = |owner: &Value| self.controller_scale(namespace, owner);
        let updates: Vec<(Arc<Value>, Value)> = budgets
            .into_iter()
            .filter_map(|budget| {
                let status = disruption::budget_status(&budget, &pods, &scale_of, now);
                (budget.get("status") != Some(&status)).then_some((budget, status))
            })
            .collect();
        let options = WriteOptions {
            field_manager: "kube-controller-manager".into(),
            ..WriteOptions::default()
        };
        self.syncing_budgets = true;
        for (budget, status) in updates {
            let body = json!({ "status": status });
            if let Err(error) =
                self.write(&budgets_rt, &budget, body, Part::Status, "", &options, None)
            {
                tracing::warn!(
                    budget = meta_str(&budget, "name"),
                    namespace,
                    error = %error.message,
                    "disruption controller: status not written"
                );
            }
        }
        self.syncing_budgets = false;
    }

    /// Makes the disruption controller trail the changes it reacts to by `lag` (`None`: sync
    /// within each write, the default, which tests of its rules read at once). The real one runs
    /// in kube-controller-manager, behind its informers and its client's rate limit (20
    /// requests a second by default): budget statuses lag, and a burst of Pod changes makes one
    /// status write, not one per change.
    pub fn set_disruption_lag(&mut self, lag: Option<Duration>) {
        self.disruption_lag = lag;
        if lag.is_none() {
            self.sync_pending_disruption_budgets();
        }
    }

    /// The lag the disruption controller trails changes by, if any.
    pub fn disruption_lag(&self) -> Option<Duration> {
        self.disruption_lag
    }

    /// Syncs the budgets of the namespaces changed since the last sync.
    pub fn sync_pending_disruption_budgets(&mut self) {
        for namespace in std::mem::take(&mut self.disruption_pending) {
            self.sync_disruption_budgets(&namespace);
        }
    }

    /// The disruption controller's recheck: budgets that record evictions are synced again, so
    /// that an eviction whose Pod never terminated stops counting once it expires. The
    /// emulator calls this every second.
    pub fn recheck_disruption_budgets(&mut self) {
        let budgets_rt = self.builtin("policy", "poddisruptionbudgets");
        let namespaces: std::collections::BTreeSet<String> = self
            .objects(&budgets_rt)
            .filter(|budget| disruption::has_disrupted_pods(budget))
            .map(|budget| meta_str(budget, "namespace").to_owned())
            .collect();
        for namespace in namespaces {
            self.disruption_changed(namespace);
        }
    }

    /// Something the disruption controller watches changed in `namespace`: its budgets are
    /// synced now, or once the lag is over when there is one.
    fn disruption_changed(&mut self, namespace: String) {
        if self.disruption_lag.is_some() {
            if self.disruption_pending.insert(namespace) {
                self.disruption_wake.notify_one();
            }
        } else {
            self.sync_disruption_budgets(&namespace);
        }
    }

    /// The scale of a Pod's controller, as the disruption controller reads it through the scale
    /// subresource: `Ok(None)` when no such object (with that uid) exists; `Err` with the
    /// lookup's error when its kind is not served or has no scale subresource.
    fn controller_scale(&self, namespace: &str, owner: &Value) -> Result<Option<i64>, String> {
        let text = |key: &str| owner.get(key).and_then(Value::as_str).unwrap_or_default();
        let (api_version, kind) = (text("apiVersion"), text("kind"));
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let rt = self
            .registry
            .all()
            .find(|rt| rt.group == group && rt.version == version && rt.kind == kind)
            .cloned()
            .ok_or_else(|| {
                format!(
                    "no matches for kind {} in version {}",
                    go_quote(kind),
                    go_quote(api_version)
                )
            })?;
        let replicas = match (rt.group.as_str(), rt.kind.as_str()) {
            ("apps", "Deployment" | "StatefulSet") => Some("/spec/replicas".to_owned()),
            _ => rt
                .crd
                .as_deref()
                .and_then(|crd| self.crd_spec_replicas(crd, &rt.version)),
        };
        let Some(pointer) = replicas else {
            let resource = if rt.group.is_empty() {
                rt.plural.clone()
            } else {
                format!("{}.{}", rt.plural, rt.group)
            };
            return Err(format!(
                "{resource} does not implement the scale subresource"
            ));
        };
        Ok(self
            .stored(&rt, namespace, text("name"))
            .filter(|object| meta_str(object, "uid") == text("uid"))
            .map(|object| {
                object
                    .pointer(&pointer)
                    .and_then(Value::as_i64)
                    .unwrap_or_default()
            }))
    }

    /// Where a CRD version's scale subresource reads the replicas (`specReplicasPath`, as a
    /// JSON pointer), if it has one.
    fn crd_spec_replicas(&self, crd: &str, version: &str) -> Option<String> {
        let crds = self.builtin("apiextensions.k8s.io", "customresourcedefinitions");
        let path = self
            .stored(&crds, "", crd)?
            .pointer("/spec/versions")?
            .as_array()?
            .iter()
            .find(|v| v.get("name").and_then(Value::as_str) == Some(version))?
            .pointer("/subresources/scale/specReplicasPath")?
            .as_str()?
            .trim_start_matches('.')
            .replace('.', "/");
        Some(format!("/{path}"))
    }

    /// `POST …/pods/{name}/eviction`, as the API server's eviction REST serves it. A Pod that is
    /// done, pending or terminating is deleted without consulting any budget; otherwise the one
    /// budget covering it decides (several: 500): a Pod that is not Ready may go as its
    /// `unhealthyPodEvictionPolicy` says, any other only while a disruption is allowed, which
    /// it then spends (429 when none is). The evicted Pod gets the `DisruptionTarget`
    /// condition and is deleted with the eviction's `deleteOptions` (gracefully when bound: its
    /// kubelet removes it). The answer's code (201).
    pub fn evict(
        &mut self,
        namespace: &str,
        name: &str,
        eviction: &Eviction,
    ) -> Result<u16, ApiError> {
        if eviction.name != name {
            return Err(ApiError::bad_request(
                "name in URL does not match name in Eviction object",
            ));
        }
        let pods_rt = self.builtin("", "pods");
        let pod = self
            .stored(&pods_rt, namespace, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(subject(&pods_rt, name)))?;
        let mut options = eviction.delete_options.clone();
        if disruption::can_ignore_budget(&pod) {
            // Conditional on the version looked at, unless the Pod is done or terminating.
            if disruption::enforces_resource_version(&pod) && options.resource_version.is_none() {
                options.resource_version = Some(meta_str(&pod, "resourceVersion").to_owned());
            }
            self.delete_evicted(&pods_rt, namespace, name, options)?;
            return Ok(201);
        }
        let budgets_rt = self.builtin("policy", "poddisruptionbudgets");
        let budgets: Vec<Arc<Value>> = self
            .objects_in(&budgets_rt, namespace)
            .filter(|budget| disruption::selects(budget, &pod))
            .cloned()
            .collect();
        match budgets.as_slice() {
            [] => {}
            [budget] if disruption::evicts_unhealthy(budget, &pod) => {
                // Conditional on the Pod not having become Ready since it was looked at.
                options.resource_version = Some(meta_str(&pod, "resourceVersion").to_owned());
            }
            [budget] => {
                let status = disruption::check_and_decrement(
                    budget,
                    name,
                    options.dry_run,
                    self.clock.now(),
                )?;
                if !options.dry_run {
                    let write = WriteOptions {
                        field_manager: "kube-apiserver".into(),
                        ..WriteOptions::default()
                    };
                    let body = json!({ "status": status });
                    self.write(&budgets_rt, budget, body, Part::Status, "", &write, None)?;
                }
            }
            _ => return Err(ApiError::failure(500, disruption::SEVERAL_BUDGETS)),
        }
        self.delete_evicted(&pods_rt, namespace, name, options)?;
        Ok(201)
    }

    /// `addConditionAndDeletePod`: unless a dry run, the Pod gets the `DisruptionTarget`
    /// condition (an update of the Pod's status, checked against the delete's preconditions,
    /// that leaves its managed fields alone); then it is deleted.
    fn delete_evicted(
        &mut self,
        pods_rt: &ResourceType,
        namespace: &str,
        name: &str,
        mut options: DeleteOptions,
    ) -> Result<(), ApiError> {
        if !options.dry_run {
            let pod = self
                .stored(pods_rt, namespace, name)
                .cloned()
                .ok_or_else(|| ApiError::not_found(subject(pods_rt, name)))?;
            let conflict = |why: String| {
                let pod = Subject {
                    group: "",
                    resource: "Pod",
                    name,
                };
                ApiError::conflict(pod, &why)
            };
            let (uid, version) = (meta_str(&pod, "uid"), meta_str(&pod, "resourceVersion"));
            if let Some(wanted) = options.uid.as_deref().filter(|u| !u.is_empty())
                && wanted != uid
            {
                return Err(conflict(format!(
                    "the UID in the precondition ({wanted}) does not match the UID in record ({uid}). The object might have been deleted and then recreated"
                )));
            }
            if let Some(wanted) = options
                .resource_version
                .as_deref()
                .filter(|v| !v.is_empty())
                && wanted != version
            {
                return Err(conflict(format!(
                    "the ResourceVersion in the precondition ({wanted}) does not match the ResourceVersion in record ({version}). The object might have been modified"
                )));
            }
            if let Some(marked) = disruption::disruption_target(&pod, self.clock.now()) {
                let marked = self.commit(pods_rt, EventType::Modified, marked, Some(pod));
                // The delete is conditional on the version this update made.
                if options.resource_version.is_some() {
                    options.resource_version =
                        Some(meta_str(&marked, "resourceVersion").to_owned());
                }
            }
        }
        self.delete(pods_rt, Some(namespace), name, &options)
            .map(drop)
    }
}
