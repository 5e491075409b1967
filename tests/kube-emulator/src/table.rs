//! `meta.k8s.io/v1` Table rendering (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`),
//! what `kubectl get` asks for. Pure code.
//!
//! This module owns the column definitions and the cell values of every table the emulator
//! serves:
//! - built-in kinds follow the API server's internal printers (`pkg/printers/internalversion`);
//!   like the server, the wide columns (`priority > 0`) are always filled and kubectl hides them
//!   unless `-o wide`;
//! - custom resources follow the apiextensions table convertor: `additionalPrinterColumns`
//!   evaluated with client-go's JSONPath, first result only, `null` when nothing is found
//!   (kubectl shows `<none>`);
//! - ages are `apimachinery/pkg/util/duration.HumanDuration` of the time since a timestamp.

use std::borrow::Cow;
use std::time::{Duration, UNIX_EPOCH};

use serde_json::{Map, Value, json};

/// One column of a table: a CRD's `additionalPrinterColumns` entry, or a built-in column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    /// OpenAPI type: `string`, `integer`, `number`, `boolean`, `date`.
    pub type_: String,
    pub format: String,
    pub description: String,
    /// 0 = shown by default; > 0 = only with `-o wide`.
    pub priority: i64,
    /// For CRD columns, a simple JSONPath such as `.status.phase` or `.spec.trays[0].device`;
    /// `None` for built-in columns computed in code.
    pub json_path: Option<String>,
}

/// The columns the API server shows for a built-in kind (`group` is `""` for core).
pub fn builtin_columns(group: &str, kind: &str) -> Vec<Column> {
    printer(group, kind)
        .columns
        .iter()
        .map(Spec::column)
        .collect()
}

/// The columns for a custom resource from its CRD version's `additionalPrinterColumns`.
pub fn crd_columns(additional_printer_columns: &[Value]) -> Vec<Column> {
    let mut columns = vec![NAME.column()];
    if additional_printer_columns.is_empty() {
        // apiextensions' serveDefaultColumnsIfEmpty.
        columns.push(Column {
            name: "Age".to_owned(),
            type_: "date".to_owned(),
            format: String::new(),
            description: CREATION_TIMESTAMP_DESCRIPTION.to_owned(),
            priority: 0,
            json_path: Some(".metadata.creationTimestamp".to_owned()),
        });
    } else {
        columns.extend(additional_printer_columns.iter().map(crd_column));
    }
    columns
}

fn crd_column(definition: &Value) -> Column {
    let field = |key: &str| text(&definition[key]).to_owned();
    let json_path = field("jsonPath");
    let description = match text(&definition["description"]) {
        "" => format!("Custom resource definition column (in JSONPath format): {json_path}"),
        description => description.to_owned(),
    };
    Column {
        name: field("name"),
        type_: field("type"),
        format: field("format"),
        description,
        priority: definition["priority"].as_i64().unwrap_or(0),
        json_path: Some(json_path),
    }
}

/// What each row carries besides its cells (`?includeObject=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IncludeObject {
    None,
    /// `PartialObjectMetadata` (the default).
    Metadata,
    Object,
}

/// Renders a Table of `objects` (full objects of kind `kind` in `group`) with `columns`.
/// `now` is the current time as Unix seconds (ages are relative to it); `resource_version` goes
/// into the table's list metadata.
pub fn render(
    group: &str,
    kind: &str,
    columns: &[Column],
    objects: &[Value],
    include: IncludeObject,
    resource_version: &str,
    now: u64,
) -> Value {
    let paths: Vec<Option<Option<jsonpath::Path>>> = columns
        .iter()
        .map(|c| c.json_path.as_deref().map(jsonpath::parse))
        .collect();
    let rows: Vec<Value> = objects
        .iter()
        .map(|object| {
            let cells = row_cells(group, kind, columns, &paths, object, now);
            row(group, kind, cells, object, include)
        })
        .collect();
    let mut metadata = Map::new();
    if !resource_version.is_empty() {
        metadata.insert("resourceVersion".to_owned(), resource_version.into());
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": columns.iter().map(column_definition).collect::<Vec<_>>(),
        "rows": rows,
    })
}

fn column_definition(column: &Column) -> Value {
    json!({
        "name": column.name,
        "type": column.type_,
        "format": column.format,
        "description": column.description,
        "priority": column.priority,
    })
}

/// The cells of one object: JSONPath columns are evaluated, the others are looked up by name
/// among the kind's built-in cells (a column the kind does not know renders as `null`).
fn row_cells(
    group: &str,
    kind: &str,
    columns: &[Column],
    paths: &[Option<Option<jsonpath::Path>>],
    object: &Value,
    now: u64,
) -> Vec<Value> {
    let printer = printer(group, kind);
    let builtin = (printer.cells)(object, now);
    columns
        .iter()
        .zip(paths)
        .map(|(column, path)| match path {
            // A path the evaluator cannot parse makes the real convertor fail the column.
            Some(path) => path
                .as_ref()
                .and_then(|p| p.find(object).first().copied())
                .map_or(Value::Null, |value| typed_cell(&column.type_, value, now)),
            None => printer
                .columns
                .iter()
                .position(|spec| spec.name == column.name)
                .and_then(|i| builtin.get(i).cloned())
                .unwrap_or(Value::Null),
        })
        .collect()
}

fn row(
    group: &str,
    kind: &str,
    cells: Vec<Value>,
    object: &Value,
    include: IncludeObject,
) -> Value {
    let mut row = Map::new();
    row.insert("cells".to_owned(), Value::Array(cells));
    if (group, kind) == ("", "Pod")
        && let Some(conditions) = pod_row_conditions(object)
    {
        row.insert("conditions".to_owned(), conditions);
    }
    match include {
        IncludeObject::None => {}
        IncludeObject::Metadata => {
            let metadata = object.get("metadata").cloned().unwrap_or_else(|| json!({}));
            let partial = json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": metadata,
            });
            row.insert("object".to_owned(), partial);
        }
        IncludeObject::Object => {
            row.insert("object".to_owned(), object.clone());
        }
    }
    Value::Object(row)
}

/// The cell for a value found by a CRD column's JSONPath (apiextensions' cellForJSONValue).
fn typed_cell(type_: &str, value: &Value, now: u64) -> Value {
    match (type_, value) {
        // client-go's JSONPath printer renders a nil result this way.
        ("string", Value::Null) => "<no value>".into(),
        ("string", Value::String(s)) => s.as_str().into(),
        ("string", other) => other.to_string().into(),
        ("integer", Value::Number(n)) => n
            .as_i64()
            // Go converts float64 to int64 by truncation.
            .or_else(|| n.as_f64().map(|f| f as i64))
            .map_or(Value::Null, Value::from),
        ("number", Value::Number(_)) | ("boolean", Value::Bool(_)) => value.clone(),
        ("date", Value::String(s)) => age_of_text(s, now).into(),
        _ => Value::Null,
    }
}

// ---------------------------------------------------------------------------------------------
// Built-in printers

const NAME_DESCRIPTION: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
const CREATION_TIMESTAMP_DESCRIPTION: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";

/// A built-in column definition.
struct Spec {
    name: &'static str,
    type_: &'static str,
    format: &'static str,
    description: &'static str,
    priority: i64,
}

impl Spec {
    fn column(&self) -> Column {
        Column {
            name: self.name.to_owned(),
            type_: self.type_.to_owned(),
            format: self.format.to_owned(),
            description: self.description.to_owned(),
            priority: self.priority,
            json_path: None,
        }
    }
}

const fn shown(name: &'static str, description: &'static str) -> Spec {
    Spec {
        name,
        type_: "string",
        format: "",
        description,
        priority: 0,
    }
}

const fn wide(name: &'static str, description: &'static str) -> Spec {
    Spec {
        name,
        type_: "string",
        format: "",
        description,
        priority: 1,
    }
}

const NAME: Spec = Spec {
    name: "Name",
    type_: "string",
    format: "name",
    description: NAME_DESCRIPTION,
    priority: 0,
};
const AGE: Spec = shown("Age", CREATION_TIMESTAMP_DESCRIPTION);

/// A built-in kind's columns and the function computing its cells, one per column, in order.
struct Printer {
    columns: &'static [Spec],
    cells: fn(&Value, u64) -> Vec<Value>,
}

fn printer(group: &str, kind: &str) -> &'static Printer {
    match (group, kind) {
        ("", "Pod") => &POD,
        ("", "Namespace") => &NAMESPACE,
        ("", "ConfigMap") => &CONFIG_MAP,
        ("", "Secret") => &SECRET,
        ("", "Event") => &CORE_EVENT,
        ("events.k8s.io", "Event") => &EVENTS_V1_EVENT,
        ("", "Node") => &NODE,
        ("coordination.k8s.io", "Lease") => &LEASE,
        ("", "ServiceAccount") => &SERVICE_ACCOUNT,
        ("", "Service") => &SERVICE,
        ("apps", "Deployment") => &DEPLOYMENT,
        ("apps", "StatefulSet") => &STATEFUL_SET,
        ("policy", "PodDisruptionBudget") => &POD_DISRUPTION_BUDGET,
        ("rbac.authorization.k8s.io", "RoleBinding") => &ROLE_BINDING,
        ("rbac.authorization.k8s.io", "ClusterRoleBinding") => &CLUSTER_ROLE_BINDING,
        ("apiextensions.k8s.io", "CustomResourceDefinition")
        | ("rbac.authorization.k8s.io", "Role" | "ClusterRole") => &DEFAULT_TABLE_CONVERTOR,
        _ => &DEFAULT,
    }
}

const DEFAULT: Printer = Printer {
    columns: &[NAME, AGE],
    cells: default_cells,
};

fn default_cells(object: &Value, now: u64) -> Vec<Value> {
    vec![name(object), creation_age(object, now)]
}

fn name(object: &Value) -> Value {
    text(&object["metadata"]["name"]).into()
}

fn creation_age(object: &Value, now: u64) -> Value {
    age(&object["metadata"]["creationTimestamp"], now).into()
}

const NAMESPACE: Printer = Printer {
    columns: &[NAME, shown("Status", "The status of the namespace"), AGE],
    cells: namespace_cells,
};

fn namespace_cells(namespace: &Value, now: u64) -> Vec<Value> {
    // The server defaults an unset phase to Active (SetDefaults_NamespaceStatus).
    let phase = non_empty(text(&namespace["status"]["phase"])).unwrap_or("Active");
    vec![name(namespace), phase.into(), creation_age(namespace, now)]
}

const CONFIG_MAP: Printer = Printer {
    columns: &[
        NAME,
        shown("Data", "Data contains the configuration data."),
        AGE,
    ],
    cells: config_map_cells,
};

fn config_map_cells(config_map: &Value, now: u64) -> Vec<Value> {
    let keys = key_count(&config_map["data"]) + key_count(&config_map["binaryData"]);
    vec![name(config_map), keys.into(), creation_age(config_map, now)]
}

const SECRET: Printer = Printer {
    columns: &[
        NAME,
        shown(
            "Type",
            "Used to facilitate programmatic handling of secret data.",
        ),
        shown("Data", "Data contains the secret data."),
        AGE,
    ],
    cells: secret_cells,
};

fn secret_cells(secret: &Value, now: u64) -> Vec<Value> {
    // The server defaults the type (SetDefaults_Secret) and merges stringData into data.
    let secret_type = non_empty(text(&secret["type"])).unwrap_or("Opaque");
    let data = secret["data"].as_object();
    let extra = secret["stringData"].as_object().map_or(0, |more| {
        more.keys()
            .filter(|k| data.is_none_or(|d| !d.contains_key(*k)))
            .count()
    });
    let keys = key_count(&secret["data"]) + extra;
    vec![
        name(secret),
        secret_type.into(),
        keys.into(),
        creation_age(secret, now),
    ]
}

const LEASE: Printer = Printer {
    columns: &[
        NAME,
        shown(
            "Holder",
            "holderIdentity contains the identity of the holder of a current lease.",
        ),
        AGE,
    ],
    cells: lease_cells,
};

fn lease_cells(lease: &Value, now: u64) -> Vec<Value> {
    vec![
        name(lease),
        text(&lease["spec"]["holderIdentity"]).into(),
        creation_age(lease, now),
    ]
}

/// Kinds without a printer of their own (CRDs, Roles, ClusterRoles) get the API server's
/// generic default table convertor: the name and the creation time.
const DEFAULT_TABLE_CONVERTOR: Printer = Printer {
    columns: &[
        NAME,
        Spec {
            name: "Created At",
            type_: "date",
            format: "",
            description: CREATION_TIMESTAMP_DESCRIPTION,
            priority: 0,
        },
    ],
    cells: created_at_cells,
};

fn created_at_cells(object: &Value, _now: u64) -> Vec<Value> {
    let created = match &object["metadata"]["creationTimestamp"] {
        Value::String(t) if !t.is_empty() => rfc3339_utc(t).unwrap_or_else(|| t.clone()),
        // Go's zero time, which is what the default convertor prints for an unset timestamp.
        _ => "0001-01-01T00:00:00Z".to_owned(),
    };
    vec![name(object), created.into()]
}

const SERVICE_ACCOUNT: Printer = Printer {
    columns: &[
        NAME,
        shown(
            "Secrets",
            "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use. Pods are only limited to this list if this service account has a \"kubernetes.io/enforce-mountable-secrets\" annotation set to \"true\". The \"kubernetes.io/enforce-mountable-secrets\" annotation is deprecated since v1.32. Prefer separate namespaces to isolate access to mounted secrets. This field should not be used to find auto-generated service account token secrets for use outside of pods. Instead, tokens can be requested directly using the TokenRequest API, or service account token secrets can be manually created. More info: https://kubernetes.io/docs/concepts/configuration/secret",
        ),
        AGE,
    ],
    cells: service_account_cells,
};

fn service_account_cells(account: &Value, now: u64) -> Vec<Value> {
    vec![
        name(account),
        items(&account["secrets"]).len().into(),
        creation_age(account, now),
    ]
}

// --- Services

const SERVICE: Printer = Printer {
    columns: &[
        NAME,
        shown(
            "Type",
            "type determines how the Service is exposed. Defaults to ClusterIP. Valid options are ExternalName, ClusterIP, NodePort, and LoadBalancer. \"ClusterIP\" allocates a cluster-internal IP address for load-balancing to endpoints. Endpoints are determined by the selector or if that is not specified, by manual construction of an Endpoints object or EndpointSlice objects. If clusterIP is \"None\", no virtual IP is allocated and the endpoints are published as a set of endpoints rather than a virtual IP. \"NodePort\" builds on ClusterIP and allocates a port on every node which routes to the same endpoints as the clusterIP. \"LoadBalancer\" builds on NodePort and creates an external load-balancer (if supported in the current cloud) which routes to the same endpoints as the clusterIP. \"ExternalName\" aliases this service to the specified externalName. Several other fields do not apply to ExternalName services. More info: https://kubernetes.io/docs/concepts/services-networking/service/#publishing-services-service-types",
        ),
        shown(
            "Cluster-IP",
            "clusterIP is the IP address of the service and is usually assigned randomly. If an address is specified manually, is in-range (as per system configuration), and is not in use, it will be allocated to the service; otherwise creation of the service will fail. This field may not be changed through updates unless the type field is also being changed to ExternalName (which requires this field to be blank) or the type field is being changed from ExternalName (in which case this field may optionally be specified, as describe above).  Valid values are \"None\", empty string (\"\"), or a valid IP address. Setting this to \"None\" makes a \"headless service\" (no virtual IP), which is useful when direct endpoint connections are preferred and proxying is not required.  Only applies to types ClusterIP, NodePort, and LoadBalancer. If this field is specified when creating a Service of type ExternalName, creation will fail. This field will be wiped when updating a Service to type ExternalName. More info: https://kubernetes.io/docs/concepts/services-networking/service/#virtual-ips-and-service-proxies",
        ),
        shown(
            "External-IP",
            "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.  These IPs are not managed by Kubernetes.  The user is responsible for ensuring that traffic arrives at a node with this IP.  A common example is external load-balancers that are not part of the Kubernetes system.",
        ),
        shown(
            "Port(s)",
            "The list of ports that are exposed by this service. More info: https://kubernetes.io/docs/concepts/services-networking/service/#virtual-ips-and-service-proxies",
        ),
        AGE,
        wide(
            "Selector",
            "Route service traffic to pods with label keys and values matching this selector. If empty or not present, the service is assumed to have an external process managing its endpoints, which Kubernetes will not modify. Only applies to types ClusterIP, NodePort, and LoadBalancer. Ignored if type is ExternalName. More info: https://kubernetes.io/docs/concepts/services-networking/service/",
        ),
    ],
    cells: service_cells,
};

fn service_cells(service: &Value, now: u64) -> Vec<Value> {
    let spec = &service["spec"];
    let cluster_ip = items(&spec["clusterIPs"])
        .first()
        .map_or("<none>", |ip| text(ip));
    vec![
        name(service),
        text(&spec["type"]).into(),
        cluster_ip.into(),
        service_external_ip(service).into(),
        or_none(&service_ports(spec)),
        creation_age(service, now),
        format_labels(&spec["selector"]).into(),
    ]
}

/// `getServiceExternalIP` (the wide form: load-balancer addresses are not shortened).
fn service_external_ip(service: &Value) -> String {
    let spec = &service["spec"];
    let external: Vec<&str> = items(&spec["externalIPs"]).iter().map(text).collect();
    match text(&spec["type"]) {
        "ClusterIP" | "NodePort" if external.is_empty() => "<none>".to_owned(),
        "ClusterIP" | "NodePort" => external.join(","),
        "LoadBalancer" => {
            let mut balancers: Vec<&str> = items(&service["status"]["loadBalancer"]["ingress"])
                .iter()
                .filter_map(|i| {
                    non_empty(text(&i["ip"])).or_else(|| non_empty(text(&i["hostname"])))
                })
                .collect();
            balancers.sort_unstable();
            balancers.dedup();
            balancers.extend(external);
            if balancers.is_empty() {
                "<pending>".to_owned()
            } else {
                balancers.join(",")
            }
        }
        "ExternalName" => text(&spec["externalName"]).to_owned(),
        _ => "<unknown>".to_owned(),
    }
}

/// `makePortString`: `80/TCP`, `80:30080/TCP` with a node port.
fn service_ports(spec: &Value) -> String {
    items(&spec["ports"])
        .iter()
        .map(|port| {
            let number = port["port"].as_i64().unwrap_or(0);
            let protocol = text(&port["protocol"]);
            match port["nodePort"].as_i64().filter(|p| *p > 0) {
                Some(node_port) => format!("{number}:{node_port}/{protocol}"),
                None => format!("{number}/{protocol}"),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// `labels.FormatLabels`: `a=b,c=d` sorted, `<none>` when empty.
fn format_labels(labels: &Value) -> String {
    let pairs: Vec<String> = labels
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", text(v)))
        .collect();
    if pairs.is_empty() {
        "<none>".to_owned()
    } else {
        pairs.join(",")
    }
}

// --- Workloads

const DEPLOYMENT: Printer = Printer {
    columns: &[
        NAME,
        shown("Ready", "Number of the pod with ready state"),
        shown(
            "Up-to-date",
            "Total number of non-terminating pods targeted by this deployment that have the desired template spec.",
        ),
        shown(
            "Available",
            "Total number of available non-terminating pods (ready for at least minReadySeconds) targeted by this deployment.",
        ),
        AGE,
        wide("Containers", "Names of each container in the template."),
        wide(
            "Images",
            "Images referenced by each container in the template.",
        ),
        wide(
            "Selector",
            "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment. It must match the pod template's labels.",
        ),
    ],
    cells: deployment_cells,
};

fn deployment_cells(deployment: &Value, now: u64) -> Vec<Value> {
    let status = &deployment["status"];
    let count = |value: &Value| value.as_i64().unwrap_or(0);
    let containers = items(&deployment["spec"]["template"]["spec"]["containers"]);
    let names: Vec<&str> = containers.iter().map(|c| text(&c["name"])).collect();
    let images: Vec<&str> = containers.iter().map(|c| text(&c["image"])).collect();
    vec![
        name(deployment),
        format!(
            "{}/{}",
            count(&status["readyReplicas"]),
            count(&deployment["spec"]["replicas"])
        )
        .into(),
        count(&status["updatedReplicas"]).into(),
        count(&status["availableReplicas"]).into(),
        creation_age(deployment, now),
        names.join(",").into(),
        images.join(",").into(),
        crate::selectors::label_selector_text(&deployment["spec"]["selector"]).into(),
    ]
}

const STATEFUL_SET: Printer = Printer {
    columns: &[
        NAME,
        shown("Ready", "Number of the pod with ready state"),
        AGE,
        wide("Containers", "Names of each container in the template."),
        wide(
            "Images",
            "Images referenced by each container in the template.",
        ),
    ],
    cells: stateful_set_cells,
};

/// `printStatefulSet`: ready replicas over desired ones.
fn stateful_set_cells(set: &Value, now: u64) -> Vec<Value> {
    let count = |value: &Value| value.as_i64().unwrap_or(0);
    let containers = items(&set["spec"]["template"]["spec"]["containers"]);
    let names: Vec<&str> = containers.iter().map(|c| text(&c["name"])).collect();
    let images: Vec<&str> = containers.iter().map(|c| text(&c["image"])).collect();
    vec![
        name(set),
        format!(
            "{}/{}",
            count(&set["status"]["readyReplicas"]),
            count(&set["spec"]["replicas"])
        )
        .into(),
        creation_age(set, now),
        names.join(",").into(),
        images.join(",").into(),
    ]
}

const POD_DISRUPTION_BUDGET: Printer = Printer {
    columns: &[
        NAME,
        shown(
            "Min Available",
            "The minimum number of pods that must be available.",
        ),
        shown(
            "Max Unavailable",
            "The maximum number of pods that may be unavailable.",
        ),
        Spec {
            name: "Allowed Disruptions",
            type_: "integer",
            format: "",
            description: "Calculated number of pods that may be disrupted at this time.",
            priority: 0,
        },
        AGE,
    ],
    cells: pod_disruption_budget_cells,
};

fn pod_disruption_budget_cells(budget: &Value, now: u64) -> Vec<Value> {
    // IntOrString.String(): the number or the percentage; `N/A` when unset.
    let int_or_string = |value: &Value| match value {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        _ => "N/A".to_owned(),
    };
    vec![
        name(budget),
        int_or_string(&budget["spec"]["minAvailable"]).into(),
        int_or_string(&budget["spec"]["maxUnavailable"]).into(),
        budget["status"]["disruptionsAllowed"]
            .as_i64()
            .unwrap_or(0)
            .into(),
        creation_age(budget, now),
    ]
}

// --- RBAC

const ROLE_BINDING: Printer = Printer {
    columns: &[
        NAME,
        shown(
            "Role",
            "RoleRef can reference a Role in the current namespace or a ClusterRole in the global namespace. If the RoleRef cannot be resolved, the Authorizer must return an error.",
        ),
        AGE,
        wide("Users", "Users in the roleBinding"),
        wide("Groups", "Groups in the roleBinding"),
        wide("ServiceAccounts", "ServiceAccounts in the roleBinding"),
    ],
    cells: binding_cells,
};

const CLUSTER_ROLE_BINDING: Printer = Printer {
    columns: &[
        NAME,
        shown(
            "Role",
            "RoleRef can only reference a ClusterRole in the global namespace. If the RoleRef cannot be resolved, the Authorizer must return an error.",
        ),
        AGE,
        wide("Users", "Users in the clusterRoleBinding"),
        wide("Groups", "Groups in the clusterRoleBinding"),
        wide(
            "ServiceAccounts",
            "ServiceAccounts in the clusterRoleBinding",
        ),
    ],
    cells: binding_cells,
};

/// `Kind/name` of the role, then the subjects by kind (`rbac.SubjectsStrings`).
fn binding_cells(binding: &Value, now: u64) -> Vec<Value> {
    let role_ref = &binding["roleRef"];
    let subjects = items(&binding["subjects"]);
    let of_kind = |kind: &str| -> Value {
        subjects
            .iter()
            .filter(|s| text(&s["kind"]) == kind)
            .map(|s| match kind {
                "ServiceAccount" => format!("{}/{}", text(&s["namespace"]), text(&s["name"])),
                _ => text(&s["name"]).to_owned(),
            })
            .collect::<Vec<_>>()
            .join(", ")
            .into()
    };
    vec![
        name(binding),
        format!("{}/{}", text(&role_ref["kind"]), text(&role_ref["name"])).into(),
        creation_age(binding, now),
        of_kind("User"),
        of_kind("Group"),
        of_kind("ServiceAccount"),
    ]
}

// --- Pods

const POD: Printer = Printer {
    columns: &[
        NAME,
        shown(
            "Ready",
            "The aggregate readiness state of this pod for accepting traffic.",
        ),
        shown(
            "Status",
            "The aggregate status of the containers in this pod.",
        ),
        shown(
            "Restarts",
            "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
        ),
        AGE,
        wide(
            "IP",
            "podIP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.",
        ),
        wide(
            "Node",
            "NodeName indicates in which node this pod is scheduled.",
        ),
        wide(
            "Nominated Node",
            "nominatedNodeName is set only when this pod preempts other pods on the node, but it cannot be scheduled right away as preemption victims receive their graceful termination periods.",
        ),
        wide(
            "Readiness Gates",
            "If specified, all readiness gates will be evaluated for pod readiness.",
        ),
    ],
    cells: pod_cells,
};

fn pod_cells(pod: &Value, now: u64) -> Vec<Value> {
    let summary = summarize_pod(pod);
    let restarts = match summary.restarts.last {
        Some(last) if summary.restarts.count != 0 => {
            format!(
                "{} ({} ago)",
                summary.restarts.count,
                human_duration(nanos(now) - last)
            )
        }
        _ => summary.restarts.count.to_string(),
    };
    let status = &pod["status"];
    let ip = items(&status["podIPs"])
        .first()
        .map(|ip| text(&ip["ip"]))
        // v1 → internal conversion fills podIPs from podIP.
        .unwrap_or_else(|| text(&status["podIP"]));
    vec![
        name(pod),
        format!("{}/{}", summary.ready, summary.total).into(),
        summary.reason.into(),
        restarts.into(),
        creation_age(pod, now),
        or_none(ip),
        or_none(text(&pod["spec"]["nodeName"])),
        or_none(text(&status["nominatedNodeName"])),
        readiness_gates(pod).into(),
    ]
}

/// Restart count and the latest `lastState.terminated.finishedAt` of some containers.
#[derive(Default)]
struct Restarts {
    count: i64,
    last: Option<i128>,
}

impl Restarts {
    fn add(&mut self, container_status: &Value) {
        self.count += container_status["restartCount"].as_i64().unwrap_or(0);
        let finished = &container_status["lastState"]["terminated"]["finishedAt"];
        if let Some(finished) = finished.as_str().and_then(parse_timestamp) {
            self.last = self.last.max(Some(finished));
        }
    }
}

/// What printPod derives from the container statuses.
struct PodSummary {
    ready: usize,
    total: usize,
    reason: String,
    restarts: Restarts,
}

fn summarize_pod(pod: &Value) -> PodSummary {
    let spec = &pod["spec"];
    let status = &pod["status"];
    let phase = text(&status["phase"]);
    let mut reason = non_empty(text(&status["reason"]))
        .unwrap_or(phase)
        .to_owned();
    let gated = items(&status["conditions"])
        .iter()
        .any(|c| text(&c["type"]) == "PodScheduled" && text(&c["reason"]) == "SchedulingGated");
    if gated {
        reason = "SchedulingGated".to_owned();
    }
    // Sidecars (init containers with restartPolicy Always) count as regular containers.
    let sidecars: Vec<&str> = items(&spec["initContainers"])
        .iter()
        .filter(|c| text(&c["restartPolicy"]) == "Always")
        .map(|c| text(&c["name"]))
        .collect();
    let mut summary = PodSummary {
        ready: 0,
        total: items(&spec["containers"]).len() + sidecars.len(),
        reason,
        restarts: Restarts::default(),
    };
    let (initializing, sidecar_restarts) = scan_init_containers(pod, &sidecars, &mut summary);
    if !initializing || condition_status(status, "Initialized") == Some("True") {
        summary.restarts = sidecar_restarts;
        scan_containers(status, &mut summary);
    }
    if !pod["metadata"]["deletionTimestamp"].is_null() {
        if text(&status["reason"]) == "NodeLost" {
            summary.reason = "Unknown".to_owned();
        } else if phase != "Succeeded" && phase != "Failed" {
            summary.reason = "Terminating".to_owned();
        }
    }
    summary
}

/// Walks the init containers up to the first one still initializing; returns whether one is,
/// and the restarts of the sidecars seen.
fn scan_init_containers(
    pod: &Value,
    sidecars: &[&str],
    summary: &mut PodSummary,
) -> (bool, Restarts) {
    let declared = items(&pod["spec"]["initContainers"]).len();
    let mut sidecar_restarts = Restarts::default();
    for (i, container) in items(&pod["status"]["initContainerStatuses"])
        .iter()
        .enumerate()
    {
        summary.restarts.add(container);
        let is_sidecar = sidecars.contains(&text(&container["name"]));
        if is_sidecar {
            sidecar_restarts.add(container);
        }
        let state = &container["state"];
        let terminated = &state["terminated"];
        if terminated.is_object() && terminated["exitCode"].as_i64().unwrap_or(0) == 0 {
            continue;
        }
        if is_sidecar && container["started"] == true {
            if container["ready"] == true {
                summary.ready += 1;
            }
            continue;
        }
        summary.reason = init_container_reason(i, declared, state);
        return (true, sidecar_restarts);
    }
    (false, sidecar_restarts)
}

fn init_container_reason(index: usize, declared: usize, state: &Value) -> String {
    let waiting_reason = text(&state["waiting"]["reason"]);
    if state["terminated"].is_object() {
        format!("Init:{}", terminated_reason(&state["terminated"]))
    } else if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" {
        format!("Init:{waiting_reason}")
    } else {
        format!("Init:{index}/{declared}")
    }
}

fn terminated_reason(terminated: &Value) -> String {
    let signal = terminated["signal"].as_i64().unwrap_or(0);
    match text(&terminated["reason"]) {
        "" if signal != 0 => format!("Signal:{signal}"),
        "" => format!("ExitCode:{}", terminated["exitCode"].as_i64().unwrap_or(0)),
        reason => reason.to_owned(),
    }
}

/// Walks the app containers last to first, so the first container's state wins the reason.
fn scan_containers(status: &Value, summary: &mut PodSummary) {
    let mut has_running = false;
    for container in items(&status["containerStatuses"]).iter().rev() {
        summary.restarts.add(container);
        let state = &container["state"];
        let waiting_reason = text(&state["waiting"]["reason"]);
        if !waiting_reason.is_empty() {
            summary.reason = waiting_reason.to_owned();
        } else if state["terminated"].is_object() {
            summary.reason = terminated_reason(&state["terminated"]);
        } else if container["ready"] == true && state["running"].is_object() {
            has_running = true;
            summary.ready += 1;
        }
    }
    if summary.reason == "Completed" && has_running {
        let ready = condition_status(status, "Ready") == Some("True");
        summary.reason = if ready { "Running" } else { "NotReady" }.to_owned();
    }
}

/// `true/total` readiness gates, or `<none>` without gates.
fn readiness_gates(pod: &Value) -> String {
    let gates = items(&pod["spec"]["readinessGates"]);
    if gates.is_empty() {
        return "<none>".to_owned();
    }
    let passed = gates
        .iter()
        .filter(|gate| {
            condition_status(&pod["status"], text(&gate["conditionType"])) == Some("True")
        })
        .count();
    format!("{passed}/{}", gates.len())
}

/// Completed pods are flagged so clients can hide them (printPod's row conditions).
fn pod_row_conditions(pod: &Value) -> Option<Value> {
    let (reason, message) = match text(&pod["status"]["phase"]) {
        "Succeeded" => ("Succeeded", "The pod has completed successfully."),
        "Failed" => ("Failed", "The pod failed."),
        _ => return None,
    };
    Some(json!([{"type": "Completed", "status": "True", "reason": reason, "message": message}]))
}

/// The status of the first condition of this type.
fn condition_status<'a>(status: &'a Value, condition_type: &str) -> Option<&'a str> {
    items(&status["conditions"])
        .iter()
        .find(|c| text(&c["type"]) == condition_type)
        .map(|c| text(&c["status"]))
}

// --- Events

const EVENT_COLUMNS: &[Spec] = &[
    shown(
        "Last Seen",
        "The time at which the most recent occurrence of this event was recorded.",
    ),
    shown(
        "Type",
        "Type of this event (Normal, Warning), new types could be added in the future",
    ),
    shown(
        "Reason",
        "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.",
    ),
    shown("Object", "The object that this event is about."),
    wide(
        "Subobject",
        "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement, such as desiredState.manifest.containers[2].",
    ),
    wide(
        "Source",
        "The component reporting this event. Should be a short machine understandable string.",
    ),
    shown(
        "Message",
        "A human-readable description of the status of this operation.",
    ),
    wide(
        "First Seen",
        "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)",
    ),
    wide("Count", "The number of times this event has occurred."),
    Spec {
        name: "Name",
        type_: "string",
        format: "name",
        description: NAME_DESCRIPTION,
        priority: 1,
    },
];

const CORE_EVENT: Printer = Printer {
    columns: EVENT_COLUMNS,
    cells: core_event_cells,
};
const EVENTS_V1_EVENT: Printer = Printer {
    columns: EVENT_COLUMNS,
    cells: events_v1_event_cells,
};

/// Where an Event version keeps what the printer reads (events.k8s.io renamed the fields).
struct EventFields {
    involved_object: &'static str,
    message: &'static str,
    source: &'static str,
    first_timestamp: &'static str,
    last_timestamp: &'static str,
    count: &'static str,
    reporting_controller: &'static str,
}

fn core_event_cells(event: &Value, now: u64) -> Vec<Value> {
    let fields = EventFields {
        involved_object: "involvedObject",
        message: "message",
        source: "source",
        first_timestamp: "firstTimestamp",
        last_timestamp: "lastTimestamp",
        count: "count",
        reporting_controller: "reportingComponent",
    };
    event_cells(&fields, event, now)
}

fn events_v1_event_cells(event: &Value, now: u64) -> Vec<Value> {
    let fields = EventFields {
        involved_object: "regarding",
        message: "note",
        source: "deprecatedSource",
        first_timestamp: "deprecatedFirstTimestamp",
        last_timestamp: "deprecatedLastTimestamp",
        count: "deprecatedCount",
        reporting_controller: "reportingController",
    };
    event_cells(&fields, event, now)
}

fn event_cells(fields: &EventFields, event: &Value, now: u64) -> Vec<Value> {
    let first_seen = match &event[fields.first_timestamp] {
        t if is_unset(t) => age(&event["eventTime"], now),
        t => age(t, now),
    };
    let mut last_seen = match &event[fields.last_timestamp] {
        t if is_unset(t) => first_seen.clone(),
        t => age(t, now),
    };
    let mut count = event[fields.count].as_i64().unwrap_or(0);
    let series = &event["series"];
    if series.is_object() {
        last_seen = age(&series["lastObservedTime"], now);
        count = series["count"].as_i64().unwrap_or(0);
    } else if count == 0 {
        count = 1; // singleton events of the new API carry no count
    }
    let involved = &event[fields.involved_object];
    let kind = text(&involved["kind"]).to_lowercase();
    let object = match text(&involved["name"]) {
        "" => kind,
        involved_name => format!("{kind}/{involved_name}"),
    };
    let source = event_source(
        &event[fields.source],
        text(&event[fields.reporting_controller]),
        text(&event["reportingInstance"]),
    );
    vec![
        last_seen.into(),
        text(&event["type"]).into(),
        text(&event["reason"]).into(),
        object.into(),
        text(&involved["fieldPath"]).into(),
        source.into(),
        text(&event[fields.message]).trim().into(),
        first_seen.into(),
        count.into(),
        name(event),
    ]
}

/// `component, host`, each falling back to the reporting controller and instance.
fn event_source(source: &Value, controller: &str, instance: &str) -> String {
    let component = non_empty(text(&source["component"])).unwrap_or(controller);
    match non_empty(text(&source["host"])).unwrap_or(instance) {
        "" => component.to_owned(),
        host => format!("{component}, {host}"),
    }
}

// --- Nodes

const NODE: Printer = Printer {
    columns: &[
        NAME,
        shown("Status", "The status of the node"),
        shown("Roles", "The roles of the node"),
        AGE,
        shown("Version", "Kubelet Version reported by the node."),
        wide("Internal-IP", "List of addresses reachable to the node."),
        wide("External-IP", "List of addresses reachable to the node."),
        wide(
            "OS-Image",
            "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).",
        ),
        wide(
            "Kernel-Version",
            "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).",
        ),
        wide(
            "Container-Runtime",
            "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).",
        ),
    ],
    cells: node_cells,
};

const NODE_ROLE_PREFIX: &str = "node-role.kubernetes.io/";
const NODE_ROLE_LABEL: &str = "kubernetes.io/role";

fn node_cells(node: &Value, now: u64) -> Vec<Value> {
    let info = &node["status"]["nodeInfo"];
    let known = |key: &str| {
        non_empty(text(&info[key]))
            .unwrap_or("<unknown>")
            .to_owned()
    };
    vec![
        name(node),
        node_status(node).into(),
        node_roles(node).into(),
        creation_age(node, now),
        text(&info["kubeletVersion"]).into(),
        node_address(node, "InternalIP"),
        node_address(node, "ExternalIP"),
        known("osImage").into(),
        known("kernelVersion").into(),
        known("containerRuntimeVersion").into(),
    ]
}

/// `Ready`/`NotReady` from the last Ready condition (`Unknown` without one), plus
/// `SchedulingDisabled` for cordoned nodes.
fn node_status(node: &Value) -> String {
    let ready = items(&node["status"]["conditions"])
        .iter()
        .rev()
        .find(|c| text(&c["type"]) == "Ready");
    let mut status = match ready {
        Some(condition) if text(&condition["status"]) == "True" => "Ready",
        Some(_) => "NotReady",
        None => "Unknown",
    }
    .to_owned();
    if node["spec"]["unschedulable"] == true {
        status.push_str(",SchedulingDisabled");
    }
    status
}

/// Roles from `node-role.kubernetes.io/<role>` and `kubernetes.io/role=<role>` labels.
fn node_roles(node: &Value) -> String {
    let mut roles: Vec<&str> = node["metadata"]["labels"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(key, value)| match key.strip_prefix(NODE_ROLE_PREFIX) {
            Some(role) => non_empty(role),
            None if key == NODE_ROLE_LABEL => non_empty(text(value)),
            None => None,
        })
        .collect();
    roles.sort_unstable();
    roles.dedup();
    if roles.is_empty() {
        "<none>".to_owned()
    } else {
        roles.join(",")
    }
}

fn node_address(node: &Value, address_type: &str) -> Value {
    let address = items(&node["status"]["addresses"])
        .iter()
        .find(|a| text(&a["type"]) == address_type)
        .map_or("", |a| text(&a["address"]));
    or_none(address)
}

// --- Small JSON helpers: absent or mistyped fields read as empty, as Go's zero values do.

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or("")
}

fn items(value: &Value) -> &[Value] {
    value.as_array().map_or(&[], Vec::as_slice)
}

fn key_count(value: &Value) -> usize {
    value.as_object().map_or(0, Map::len)
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

fn or_none(s: &str) -> Value {
    non_empty(s).unwrap_or("<none>").into()
}

fn is_unset(timestamp: &Value) -> bool {
    timestamp.is_null() || timestamp == ""
}

// ---------------------------------------------------------------------------------------------
// Time

const NANOS_PER_SECOND: i128 = 1_000_000_000;
const NANOS_PER_MINUTE: i128 = 60 * NANOS_PER_SECOND;
const NANOS_PER_HOUR: i128 = 60 * NANOS_PER_MINUTE;

fn nanos(unix_seconds: u64) -> i128 {
    i128::from(unix_seconds) * NANOS_PER_SECOND
}

/// `translateTimestampSince`: the age of a timestamp, `<unknown>` when unset.
fn age(timestamp: &Value, now: u64) -> String {
    match timestamp {
        Value::Null => "<unknown>".to_owned(),
        Value::String(text) => age_of_text(text, now),
        _ => "<invalid>".to_owned(),
    }
}

/// The age of an RFC 3339 timestamp; empty (or `null`, as query parameters say it) is unset.
fn age_of_text(timestamp: &str, now: u64) -> String {
    if timestamp.is_empty() || timestamp == "null" {
        return "<unknown>".to_owned();
    }
    parse_timestamp(timestamp).map_or_else(
        || "<invalid>".to_owned(),
        |t| human_duration(nanos(now) - t),
    )
}

/// Parses an RFC 3339 timestamp into nanoseconds since the Unix epoch.
fn parse_timestamp(timestamp: &str) -> Option<i128> {
    let (utc, offset_seconds) = to_utc_form(timestamp)?;
    let since_epoch = humantime::parse_rfc3339(&utc)
        .ok()?
        .duration_since(UNIX_EPOCH)
        .ok()?;
    Some(
        i128::try_from(since_epoch.as_nanos()).ok()?
            - i128::from(offset_seconds) * NANOS_PER_SECOND,
    )
}

/// humantime reads only UTC: a `±hh:mm` suffix becomes `Z` and is returned in seconds.
fn to_utc_form(timestamp: &str) -> Option<(Cow<'_, str>, i64)> {
    let split = timestamp
        .len()
        .checked_sub(6)
        .filter(|&i| timestamp.is_char_boundary(i));
    let Some((local, offset)) = split.map(|i| timestamp.split_at(i)) else {
        return Some((timestamp.into(), 0));
    };
    let bytes = offset.as_bytes();
    let sign = match bytes[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return Some((timestamp.into(), 0)),
    };
    let digits_ok = [1, 2, 4, 5].iter().all(|&i| bytes[i].is_ascii_digit());
    if !digits_ok || bytes[3] != b':' {
        return None;
    }
    let hours: i64 = offset[1..3].parse().ok()?;
    let minutes: i64 = offset[4..6].parse().ok()?;
    Some((
        format!("{local}Z").into(),
        sign * (hours * 3600 + minutes * 60),
    ))
}

/// A timestamp reformatted as Go's `time.RFC3339` in UTC.
fn rfc3339_utc(timestamp: &str) -> Option<String> {
    let seconds = u64::try_from(parse_timestamp(timestamp)?.div_euclid(NANOS_PER_SECOND)).ok()?;
    Some(humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(seconds)).to_string())
}

/// `duration.HumanDuration`: ~2-3 significant figures (`45s`, `5m3s`, `3h5m`, `2d5h`, `2y30d`).
fn human_duration(elapsed_nanos: i128) -> String {
    // Integer division truncates toward zero like Go's int(d.Seconds()).
    let seconds = elapsed_nanos / NANOS_PER_SECOND;
    if seconds < -1 {
        // Beyond the two seconds of tolerated clock skew.
        return "<invalid>".to_owned();
    }
    if seconds < 0 {
        return "0s".to_owned();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = elapsed_nanos / NANOS_PER_MINUTE;
    if minutes < 10 {
        return with_remainder(minutes, "m", seconds % 60, "s");
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = elapsed_nanos / NANOS_PER_HOUR;
    let days = hours / 24;
    let years = days / 365;
    match hours {
        h if h < 8 => with_remainder(hours, "h", minutes % 60, "m"),
        h if h < 48 => format!("{hours}h"),
        h if h < 24 * 8 => with_remainder(days, "d", hours % 24, "h"),
        h if h < 24 * 365 * 2 => format!("{days}d"),
        h if h < 24 * 365 * 8 => with_remainder(years, "y", days % 365, "d"),
        _ => format!("{years}y"),
    }
}

fn with_remainder(major: i128, major_unit: &str, minor: i128, minor_unit: &str) -> String {
    if minor == 0 {
        format!("{major}{major_unit}")
    } else {
        format!("{major}{major_unit}{minor}{minor_unit}")
    }
}

// ---------------------------------------------------------------------------------------------
// JSONPath

/// The subset of client-go's JSONPath that printer columns use: `.a.b`, `.a[0]`, `.a[-1]`,
/// `.a[*].b`, `.*`, `['a']`, escaped dots (`.labels.app\.kubernetes\.io/name`) and filters
/// such as `[?(@.type=="Ready")]` with `==`, `!=`, `<`, `<=`, `>`, `>=` or bare existence.
/// Like client-go, `['a.b']` means `.a.b` (dots need `\.` to be part of a key), and `[]` means
/// `[0]`. Missing keys and out-of-range indices yield no result rather than an error.
mod jsonpath {
    use std::cmp::Ordering;

    use serde_json::Value;

    /// A parsed path.
    #[derive(Debug)]
    pub(super) struct Path {
        steps: Vec<Step>,
    }

    #[derive(Debug)]
    enum Step {
        Field(String),
        Wildcard,
        Index(i64),
        Filter(Filter),
    }

    #[derive(Debug)]
    struct Filter {
        left: Vec<Step>,
        /// `None` tests that the left side exists.
        comparison: Option<(Comparison, Value)>,
    }

    #[derive(Clone, Copy, Debug)]
    enum Comparison {
        Equal,
        NotEqual,
        Less,
        LessOrEqual,
        Greater,
        GreaterOrEqual,
    }

    /// Parses a path; `None` for syntax outside the supported subset.
    pub(super) fn parse(path: &str) -> Option<Path> {
        parse_steps(path).map(|steps| Path { steps })
    }

    impl Path {
        /// Every value the path reaches, in document order.
        pub(super) fn find<'v>(&self, root: &'v Value) -> Vec<&'v Value> {
            apply(&self.steps, vec![root])
        }
    }

    fn apply<'v>(steps: &[Step], mut values: Vec<&'v Value>) -> Vec<&'v Value> {
        for step in steps {
            values = values.into_iter().flat_map(|v| step.apply(v)).collect();
        }
        values
    }

    impl Step {
        fn apply<'v>(&self, value: &'v Value) -> Vec<&'v Value> {
            match (self, value) {
                (Step::Field(name), _) if name.is_empty() => vec![value],
                (Step::Field(name), Value::Object(map)) => map.get(name).into_iter().collect(),
                (Step::Wildcard, Value::Object(map)) => map.values().collect(),
                (Step::Wildcard, Value::Array(items)) => items.iter().collect(),
                (Step::Index(index), Value::Array(items)) => {
                    let position = if *index < 0 {
                        items.len() as i64 + index
                    } else {
                        *index
                    };
                    usize::try_from(position)
                        .ok()
                        .and_then(|i| items.get(i))
                        .into_iter()
                        .collect()
                }
                (Step::Filter(filter), Value::Array(items)) => {
                    items.iter().filter(|item| filter.accepts(item)).collect()
                }
                _ => Vec::new(),
            }
        }
    }

    impl Filter {
        fn accepts(&self, item: &Value) -> bool {
            let lefts = apply(&self.left, vec![item]);
            match (&self.comparison, lefts.as_slice()) {
                (None, found) => !found.is_empty(),
                (Some((comparison, right)), [left]) => comparison.accepts(left, right),
                // client-go compares exactly one value; none skips the item.
                _ => false,
            }
        }
    }

    impl Comparison {
        /// Values of the same JSON type compare (booleans only for equality); others do not.
        fn accepts(self, left: &Value, right: &Value) -> bool {
            match (left, right) {
                (Value::String(l), Value::String(r)) => self.holds(l.cmp(r)),
                (Value::Number(l), Value::Number(r)) => {
                    let ordering = l
                        .as_f64()
                        .zip(r.as_f64())
                        .and_then(|(l, r)| l.partial_cmp(&r));
                    ordering.is_some_and(|o| self.holds(o))
                }
                (Value::Bool(l), Value::Bool(r)) => {
                    matches!(self, Comparison::Equal | Comparison::NotEqual) && self.holds(l.cmp(r))
                }
                _ => false,
            }
        }

        fn holds(self, ordering: Ordering) -> bool {
            match self {
                Comparison::Equal => ordering.is_eq(),
                Comparison::NotEqual => ordering.is_ne(),
                Comparison::Less => ordering.is_lt(),
                Comparison::LessOrEqual => ordering.is_le(),
                Comparison::Greater => ordering.is_gt(),
                Comparison::GreaterOrEqual => ordering.is_ge(),
            }
        }
    }

    fn is_terminator(c: char) -> bool {
        matches!(
            c,
            ' ' | '\t' | '\r' | '\n' | '.' | ',' | '[' | ']' | '$' | '@' | '{' | '}'
        )
    }

    fn parse_steps(path: &str) -> Option<Vec<Step>> {
        let mut steps = Vec::new();
        let mut rest = path;
        while let Some(c) = rest.chars().next() {
            rest = match c {
                // The root and current-object markers, and blanks, are skipped as client-go does.
                ' ' | '\t' | '$' | '@' => &rest[1..],
                '.' if rest.starts_with("..") => return None, // recursive descent
                '.' => {
                    let (name, after) = field_name(&rest[1..]);
                    steps.push(if name == "*" {
                        Step::Wildcard
                    } else {
                        Step::Field(name)
                    });
                    after
                }
                '[' => {
                    let (bracket, after) = bracket(&rest[1..])?;
                    steps.extend(parse_bracket(bracket)?);
                    after
                }
                _ => return None,
            };
        }
        Some(steps)
    }

    /// Reads a field name up to a terminator; a backslash makes the next character literal
    /// (and, as in client-go, every backslash is dropped).
    fn field_name(input: &str) -> (String, &str) {
        let mut name = String::new();
        let mut chars = input.char_indices();
        while let Some((i, c)) = chars.next() {
            if c == '\\' {
                if let Some((_, escaped)) = chars.next().filter(|(_, e)| *e != '\\') {
                    name.push(escaped);
                }
            } else if is_terminator(c) {
                return (name, &input[i..]);
            } else {
                name.push(c);
            }
        }
        (name, "")
    }

    /// Splits `...]rest` after a `[`; a filter's brackets end at its `)]` outside quotes.
    fn bracket(input: &str) -> Option<(&str, &str)> {
        let end = if input.starts_with("?(") {
            filter_end(input)?
        } else {
            input.find(']')?
        };
        Some((&input[..end], &input[end + 1..]))
    }

    fn filter_end(input: &str) -> Option<usize> {
        let mut quote = None;
        for (i, c) in input.char_indices() {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '"' | '\'') => quote = Some(c),
                (None, ')') if input[i + 1..].starts_with(']') => return Some(i + 1),
                _ => {}
            }
        }
        None
    }

    fn parse_bracket(content: &str) -> Option<Vec<Step>> {
        if let Some(filter) = content.strip_prefix("?(").and_then(|f| f.strip_suffix(')')) {
            return Some(vec![Step::Filter(parse_filter(filter)?)]);
        }
        if let Some(key) = content
            .strip_prefix('\'')
            .and_then(|k| k.strip_suffix('\''))
        {
            // client-go re-parses a quoted key as `.key`, so its dots still split.
            return parse_steps(&format!(".{key}"));
        }
        match content {
            "*" | ":" => Some(vec![Step::Wildcard]),
            "" => Some(vec![Step::Index(0)]),
            index => index.parse().ok().map(|i| vec![Step::Index(i)]),
        }
    }

    /// `@.path OP literal`, split at the first operator character as client-go does.
    fn parse_filter(filter: &str) -> Option<Filter> {
        let Some(operator_start) = filter.find(['!', '<', '>', '=']) else {
            return Some(Filter {
                left: parse_steps(filter)?,
                comparison: None,
            });
        };
        let (left, rest) = filter.split_at(operator_start);
        let operator_len = rest
            .find(|c| !matches!(c, '!' | '<' | '>' | '='))
            .unwrap_or(rest.len());
        let (operator, right) = rest.split_at(operator_len);
        let comparison = match operator {
            "==" => Comparison::Equal,
            "!=" => Comparison::NotEqual,
            "<" => Comparison::Less,
            "<=" => Comparison::LessOrEqual,
            ">" => Comparison::Greater,
            ">=" => Comparison::GreaterOrEqual,
            _ => return None,
        };
        Some(Filter {
            left: parse_steps(left)?,
            comparison: Some((comparison, literal(right.trim())?)),
        })
    }

    /// A quoted string, `true`/`false`, or a number.
    fn literal(text: &str) -> Option<Value> {
        let quoted = ['"', '\'']
            .into_iter()
            .find_map(|q| text.strip_prefix(q)?.strip_suffix(q));
        if let Some(inner) = quoted {
            return Some(Value::String(
                inner.replace("\\\"", "\"").replace("\\'", "'"),
            ));
        }
        match text {
            "true" => Some(Value::Bool(true)),
            "false" => Some(Value::Bool(false)),
            number => serde_json::from_str::<serde_json::Number>(number)
                .ok()
                .map(Value::Number),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000;

    /// An RFC 3339 timestamp `seconds_ago` before NOW.
    fn ago(seconds_ago: u64) -> String {
        humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(NOW - seconds_ago))
            .to_string()
    }

    fn cells_of(group: &str, kind: &str, object: Value) -> Vec<Value> {
        let table = render(
            group,
            kind,
            &builtin_columns(group, kind),
            &[object],
            IncludeObject::None,
            "1",
            NOW,
        );
        table["rows"][0]["cells"].as_array().unwrap().clone()
    }

    fn crd_cells(columns: Value, object: Value) -> Vec<Value> {
        let columns = crd_columns(columns.as_array().unwrap());
        let table = render(
            "example.com",
            "Widget",
            &columns,
            &[object],
            IncludeObject::None,
            "1",
            NOW,
        );
        table["rows"][0]["cells"].as_array().unwrap().clone()
    }

    fn column(name: &str, type_: &str, json_path: &str) -> Value {
        json!({"name": name, "type": type_, "jsonPath": json_path})
    }

    #[test]
    fn human_duration_follows_apimachinery() {
        let cases: &[(i128, &str)] = &[
            (-3, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (45, "45s"),
            (119, "119s"),
            (120, "2m"),
            (303, "5m3s"),
            (600, "10m"),
            (179 * 60 + 59, "179m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 5 * 60 + 9, "3h5m"),
            (8 * 3600, "8h"),
            (47 * 3600, "47h"),
            (48 * 3600, "2d"),
            (53 * 3600, "2d5h"),
            (8 * 86400, "8d"),
            (729 * 86400, "729d"),
            (730 * 86400, "2y"),
            (760 * 86400, "2y30d"),
            (8 * 365 * 86400, "8y"),
        ];
        for (seconds, expected) in cases {
            assert_eq!(
                human_duration(seconds * NANOS_PER_SECOND),
                *expected,
                "{seconds}s"
            );
        }
        // Sub-second skew into the future still reads as now.
        assert_eq!(human_duration(-NANOS_PER_SECOND / 2), "0s");
    }

    #[test]
    fn timestamps_parse_with_fractions_and_offsets() {
        let base = parse_timestamp("2023-11-14T22:13:20Z").unwrap();
        assert_eq!(base, nanos(NOW));
        assert_eq!(
            parse_timestamp("2023-11-14T22:13:20.5Z").unwrap(),
            base + NANOS_PER_SECOND / 2
        );
        assert_eq!(parse_timestamp("2023-11-15T00:13:20+02:00").unwrap(), base);
        assert_eq!(parse_timestamp("2023-11-14T20:13:20-02:00").unwrap(), base);
        assert_eq!(parse_timestamp("yesterday"), None);
        assert_eq!(parse_timestamp("2023-11-14T22:13:20+2:000"), None);
        assert_eq!(
            rfc3339_utc("2023-11-15T00:13:20.25+02:00").unwrap(),
            "2023-11-14T22:13:20Z"
        );
    }

    #[test]
    fn ages_of_unset_and_bad_timestamps() {
        assert_eq!(age(&Value::Null, NOW), "<unknown>");
        assert_eq!(age(&json!(""), NOW), "<unknown>");
        assert_eq!(age(&json!("garbage"), NOW), "<invalid>");
        assert_eq!(age(&json!(5), NOW), "<invalid>");
        assert_eq!(age(&json!(ago(90)), NOW), "90s");
        assert_eq!(age(&json!(ago(0) + "x"), NOW), "<invalid>");
    }

    #[test]
    fn crd_columns_default_to_age() {
        let columns = crd_columns(&[]);
        assert_eq!(columns.len(), 2);
        assert_eq!(
            (columns[0].name.as_str(), columns[0].format.as_str()),
            ("Name", "name")
        );
        assert_eq!(columns[0].json_path, None);
        assert_eq!(columns[1].name, "Age");
        assert_eq!(columns[1].type_, "date");
        assert_eq!(
            columns[1].json_path.as_deref(),
            Some(".metadata.creationTimestamp")
        );
    }

    #[test]
    fn crd_columns_from_printer_columns() {
        let columns = crd_columns(&[
            json!({"name": "Phase", "type": "string", "jsonPath": ".status.phase", "description": "The phase"}),
            json!({"name": "Size", "type": "integer", "format": "int64", "priority": 1, "jsonPath": ".spec.size"}),
        ]);
        let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["Name", "Phase", "Size"]);
        assert_eq!(columns[1].description, "The phase");
        assert_eq!(
            columns[2].description,
            "Custom resource definition column (in JSONPath format): .spec.size"
        );
        assert_eq!(
            (columns[2].format.as_str(), columns[2].priority),
            ("int64", 1)
        );
        assert_eq!(columns[2].json_path.as_deref(), Some(".spec.size"));
    }

    #[test]
    fn table_envelope_and_column_definitions() {
        let columns = crd_columns(&[]);
        let table = render(
            "example.com",
            "Widget",
            &columns,
            &[],
            IncludeObject::Metadata,
            "42",
            NOW,
        );
        assert_eq!(table["kind"], "Table");
        assert_eq!(table["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(table["metadata"], json!({"resourceVersion": "42"}));
        assert_eq!(table["rows"], json!([]));
        assert_eq!(
            table["columnDefinitions"][1],
            json!({"name": "Age", "type": "date", "format": "", "description": CREATION_TIMESTAMP_DESCRIPTION, "priority": 0})
        );
        let unversioned = render("", "Pod", &[], &[], IncludeObject::None, "", NOW);
        assert_eq!(unversioned["metadata"], json!({}));
    }

    #[test]
    fn include_object_variants() {
        let object = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w", "uid": "u1"}, "spec": {}});
        let columns = crd_columns(&[]);
        let render_with = |include| {
            render(
                "example.com",
                "Widget",
                &columns,
                std::slice::from_ref(&object),
                include,
                "1",
                NOW,
            )
        };
        assert_eq!(
            render_with(IncludeObject::Metadata)["rows"][0]["object"],
            json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": {"name": "w", "uid": "u1"}})
        );
        assert_eq!(
            render_with(IncludeObject::Object)["rows"][0]["object"],
            object
        );
        let bare = render_with(IncludeObject::None);
        // The default Age column is a JSONPath column: no timestamp, no value.
        assert_eq!(bare["rows"][0], json!({"cells": ["w", null]}));
    }

    #[test]
    fn crd_cells_by_type() {
        let columns = json!([
            column("Phase", "string", ".status.phase"),
            column("Replicas", "integer", ".spec.replicas"),
            column("Ratio", "number", ".spec.ratio"),
            column("Enabled", "boolean", ".spec.enabled"),
            column("Started", "date", ".status.startTime"),
            column("Truncated", "integer", ".spec.ratio"),
            column("Mistyped", "boolean", ".status.phase"),
        ]);
        let widget = json!({
            "metadata": {"name": "w1", "creationTimestamp": ago(10)},
            "spec": {"replicas": 3, "ratio": 2.5, "enabled": true},
            "status": {"phase": "Ready", "startTime": ago(303)},
        });
        assert_eq!(
            crd_cells(columns, widget),
            [
                json!("w1"),
                json!("Ready"),
                json!(3),
                json!(2.5),
                json!(true),
                json!("5m3s"),
                json!(2),
                Value::Null
            ]
        );
    }

    #[test]
    fn crd_cells_for_missing_values_are_null() {
        let columns = json!([
            column("Phase", "string", ".status.phase"),
            column("Device", "string", ".spec.trays[5].device"),
            column("Started", "date", ".status.startTime"),
            column("Broken", "string", ".spec..device"),
        ]);
        let cells = crd_cells(
            columns,
            json!({"metadata": {"name": "w1"}, "spec": {"trays": []}}),
        );
        assert_eq!(
            cells,
            [
                json!("w1"),
                Value::Null,
                Value::Null,
                Value::Null,
                Value::Null
            ]
        );
    }

    #[test]
    fn crd_string_cells_print_like_client_go() {
        let columns = json!([
            column("Count", "string", ".spec.count"),
            column("Flag", "string", ".spec.flag"),
            column("Object", "string", ".spec.selector"),
            column("List", "string", ".spec.list"),
            column("Nil", "string", ".spec.nothing"),
            column("BadDate", "date", ".spec.when"),
            column("NoDate", "date", ".spec.never"),
        ]);
        let widget = json!({"spec": {
            "count": 7, "flag": false, "selector": {"a": "x"}, "list": [1, "two"],
            "nothing": null, "when": "tomorrow", "never": "",
        }});
        let cells = crd_cells(columns, widget);
        assert_eq!(
            cells[1..],
            [
                json!("7"),
                json!("false"),
                json!(r#"{"a":"x"}"#),
                json!(r#"[1,"two"]"#),
                json!("<no value>"),
                json!("<invalid>"),
                json!("<unknown>")
            ]
        );
    }

    #[test]
    fn crd_jsonpath_arrays_take_the_first_result() {
        let columns = json!([
            column("First", "string", ".spec.trays[0].device"),
            column("Last", "string", ".spec.trays[-1].device"),
            column("Any", "string", ".spec.trays[*].device"),
            column("Empty", "string", ".spec.trays[].device"),
            column("Wild", "string", ".spec.trays.*.device"),
        ]);
        let widget = json!({"spec": {"trays": [{"device": "/dev/a"}, {"device": "/dev/b"}, {"device": "/dev/c"}]}});
        assert_eq!(
            crd_cells(columns, widget)[1..],
            ["/dev/a", "/dev/c", "/dev/a", "/dev/a", "/dev/a"]
        );
    }

    #[test]
    fn crd_jsonpath_filters() {
        let columns = json!([
            column(
                "Ready",
                "string",
                r#".status.conditions[?(@.type=="Ready")].status"#
            ),
            column(
                "NotReady",
                "string",
                ".status.conditions[?(@.type != 'Ready')].type"
            ),
            column("Big", "string", ".status.conditions[?(@.weight>=2)].type"),
            column("Reasoned", "string", ".status.conditions[?(@.reason)].type"),
            column(
                "Nobody",
                "string",
                r#".status.conditions[?(@.type=="Gone")].status"#
            ),
        ]);
        let widget = json!({"status": {"conditions": [
            {"type": "Synced", "status": "True", "weight": 1},
            {"type": "Ready", "status": "False", "weight": 2, "reason": "Waiting"},
        ]}});
        assert_eq!(
            crd_cells(columns, widget)[1..],
            [
                json!("False"),
                json!("Synced"),
                json!("Ready"),
                json!("Ready"),
                Value::Null
            ]
        );
    }

    #[test]
    fn crd_jsonpath_keys_with_dots() {
        let columns = json!([
            column(
                "Escaped",
                "string",
                r".metadata.labels.app\.kubernetes\.io/name"
            ),
            column("Quoted", "string", ".metadata.annotations['note']"),
            column(
                "QuotedDots",
                "string",
                ".metadata.labels['app.kubernetes.io/name']"
            ),
        ]);
        let widget = json!({"metadata": {
            "labels": {"app.kubernetes.io/name": "flash"},
            "annotations": {"note": "hi"},
        }});
        // client-go splits the dots of a quoted key, so that column finds nothing.
        assert_eq!(
            crd_cells(columns, widget)[1..],
            [json!("flash"), json!("hi"), Value::Null]
        );
    }

    #[test]
    fn jsonpath_roots_and_identity() {
        let object = json!({"a": {"b": 1}});
        let find = |path: &str| {
            jsonpath::parse(path).map(|p| p.find(&object).into_iter().cloned().collect::<Vec<_>>())
        };
        assert_eq!(find("$.a.b"), Some(vec![json!(1)]));
        assert_eq!(find(" .a .b"), Some(vec![json!(1)]));
        assert_eq!(find("."), Some(vec![object.clone()]));
        assert_eq!(find(".a[1:2]"), None);
        assert_eq!(find(".a[?(@.x=@.y)]"), None);
        assert_eq!(find(".a[?(@.x=="), None);
    }

    fn pod(status: Value) -> Value {
        json!({
            "metadata": {"name": "p1", "creationTimestamp": ago(3 * 3600)},
            "spec": {"containers": [{"name": "main"}, {"name": "side"}], "nodeName": "n1"},
            "status": status,
        })
    }

    fn running(name: &str, ready: bool, restarts: i64) -> Value {
        json!({"name": name, "ready": ready, "restartCount": restarts, "state": {"running": {"startedAt": ago(60)}}})
    }

    #[test]
    fn pod_columns() {
        let columns = builtin_columns("", "Pod");
        let shown: Vec<(&str, i64)> = columns
            .iter()
            .map(|c| (c.name.as_str(), c.priority))
            .collect();
        assert_eq!(
            shown,
            [
                ("Name", 0),
                ("Ready", 0),
                ("Status", 0),
                ("Restarts", 0),
                ("Age", 0),
                ("IP", 1),
                ("Node", 1),
                ("Nominated Node", 1),
                ("Readiness Gates", 1)
            ]
        );
        assert!(columns.iter().all(|c| c.json_path.is_none()));
        assert_eq!(columns[0].format, "name");
    }

    #[test]
    fn running_pod_cells() {
        let cells = cells_of(
            "",
            "Pod",
            pod(json!({
                "phase": "Running",
                "podIPs": [{"ip": "10.0.0.7"}],
                "containerStatuses": [running("main", true, 0), running("side", false, 0)],
            })),
        );
        assert_eq!(
            cells,
            [
                "p1", "1/2", "Running", "0", "3h", "10.0.0.7", "n1", "<none>", "<none>"
            ]
        );
    }

    #[test]
    fn crash_looping_pod_shows_reason_and_last_restart() {
        let crashing = json!({
            "name": "main", "ready": false, "restartCount": 2,
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(300)}},
        });
        let cells = cells_of(
            "",
            "Pod",
            pod(
                json!({"phase": "Running", "podIP": "10.0.0.8", "containerStatuses": [crashing, running("side", true, 1)]}),
            ),
        );
        assert_eq!(
            cells[1..6],
            ["1/2", "CrashLoopBackOff", "3 (5m ago)", "3h", "10.0.0.8"]
        );
    }

    #[test]
    fn terminated_containers_report_reason_signal_or_exit_code() {
        let terminated = |state: Value| {
            let statuses = json!([{"name": "main", "state": {"terminated": state}}]);
            cells_of(
                "",
                "Pod",
                pod(json!({"phase": "Running", "containerStatuses": statuses})),
            )[2]
            .clone()
        };
        assert_eq!(
            terminated(json!({"reason": "OOMKilled", "exitCode": 137})),
            "OOMKilled"
        );
        assert_eq!(
            terminated(json!({"signal": 9, "exitCode": 137})),
            "Signal:9"
        );
        assert_eq!(terminated(json!({"exitCode": 3})), "ExitCode:3");
    }

    #[test]
    fn completed_pods_carry_row_conditions() {
        let done = json!({"name": "main", "state": {"terminated": {"reason": "Completed", "exitCode": 0}}});
        let object = pod(json!({"phase": "Succeeded", "containerStatuses": [done]}));
        let table = render(
            "",
            "Pod",
            &builtin_columns("", "Pod"),
            &[object],
            IncludeObject::None,
            "1",
            NOW,
        );
        let row = &table["rows"][0];
        assert_eq!(row["cells"][2], "Completed");
        assert_eq!(
            row["conditions"],
            json!([{"type": "Completed", "status": "True", "reason": "Succeeded", "message": "The pod has completed successfully."}])
        );
        let failed = pod(json!({"phase": "Failed"}));
        let table = render(
            "",
            "Pod",
            &builtin_columns("", "Pod"),
            &[failed],
            IncludeObject::None,
            "1",
            NOW,
        );
        assert_eq!(table["rows"][0]["conditions"][0]["reason"], "Failed");
    }

    #[test]
    fn completed_container_beside_a_running_one() {
        let done = json!({"name": "main", "state": {"terminated": {"reason": "Completed", "exitCode": 0}}});
        let statuses = json!([done, running("side", true, 0)]);
        let ready = json!([{"type": "Ready", "status": "True"}]);
        let with = |conditions: Value| {
            let status = json!({"phase": "Running", "containerStatuses": statuses, "conditions": conditions});
            cells_of("", "Pod", pod(status))[2].clone()
        };
        assert_eq!(with(ready), "Running");
        assert_eq!(with(json!([])), "NotReady");
    }

    #[test]
    fn terminating_and_lost_pods() {
        let mut object =
            pod(json!({"phase": "Running", "containerStatuses": [running("main", true, 0)]}));
        object["metadata"]["deletionTimestamp"] = json!(ago(5));
        assert_eq!(cells_of("", "Pod", object.clone())[2], "Terminating");
        object["status"]["reason"] = json!("NodeLost");
        assert_eq!(cells_of("", "Pod", object.clone())[2], "Unknown");
        object["status"] = json!({"phase": "Succeeded"});
        assert_eq!(cells_of("", "Pod", object)[2], "Succeeded");
    }

    #[test]
    fn pending_pod_with_gates_and_nomination() {
        let mut object = pod(json!({
            "phase": "Pending",
            "nominatedNodeName": "n2",
            "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"},
                {"type": "example.com/ready", "status": "True"},
            ],
        }));
        object["spec"]["nodeName"] = Value::Null;
        object["spec"]["readinessGates"] =
            json!([{"conditionType": "example.com/ready"}, {"conditionType": "other"}]);
        let cells = cells_of("", "Pod", object);
        assert_eq!(cells[1..3], ["0/2", "SchedulingGated"]);
        assert_eq!(cells[5..], ["<none>", "<none>", "n2", "1/2"]);
    }

    #[test]
    fn init_containers_progress() {
        let spec = json!({"initContainers": [{"name": "a"}, {"name": "b"}], "containers": [{"name": "main"}]});
        let status_with = |init: Value| {
            let object = json!({"metadata": {"name": "p"}, "spec": spec, "status": {"phase": "Pending", "initContainerStatuses": init}});
            cells_of("", "Pod", object)[1..4].to_vec()
        };
        let done =
            json!({"name": "a", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}});
        let waiting = json!({"name": "b", "state": {"waiting": {"reason": "PodInitializing"}}});
        assert_eq!(
            status_with(json!([done, waiting])),
            ["0/1", "Init:1/2", "0"]
        );
        let crashing = json!({"name": "b", "restartCount": 4, "state": {"waiting": {"reason": "CrashLoopBackOff"}}});
        assert_eq!(
            status_with(json!([done, crashing])),
            ["0/1", "Init:CrashLoopBackOff", "4"]
        );
        let failed = json!({"name": "b", "state": {"terminated": {"exitCode": 2}}});
        assert_eq!(
            status_with(json!([done, failed])),
            ["0/1", "Init:ExitCode:2", "0"]
        );
    }

    #[test]
    fn sidecars_count_as_containers() {
        let object = json!({
            "metadata": {"name": "p"},
            "spec": {"initContainers": [{"name": "proxy", "restartPolicy": "Always"}], "containers": [{"name": "main"}]},
            "status": {
                "phase": "Running",
                "conditions": [{"type": "Initialized", "status": "True"}],
                "initContainerStatuses": [{
                    "name": "proxy", "started": true, "ready": true, "restartCount": 1,
                    "state": {"running": {}}, "lastState": {"terminated": {"finishedAt": ago(7200)}},
                }],
                "containerStatuses": [running("main", true, 0)],
            },
        });
        assert_eq!(
            cells_of("", "Pod", object)[1..4],
            ["2/2", "Running", "1 (120m ago)"]
        );
    }

    #[test]
    fn namespace_config_map_and_secret_cells() {
        let meta = json!({"name": "x", "creationTimestamp": ago(45)});
        let namespace = json!({"metadata": meta, "status": {"phase": "Terminating"}});
        assert_eq!(
            cells_of("", "Namespace", namespace),
            ["x", "Terminating", "45s"]
        );
        assert_eq!(
            cells_of("", "Namespace", json!({"metadata": meta})),
            ["x", "Active", "45s"]
        );
        let config_map =
            json!({"metadata": meta, "data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}});
        assert_eq!(
            cells_of("", "ConfigMap", config_map),
            [json!("x"), json!(3), json!("45s")]
        );
        let secret = json!({"metadata": meta, "type": "kubernetes.io/tls", "data": {"tls.crt": "", "tls.key": ""}, "stringData": {"tls.key": "k", "extra": "e"}});
        assert_eq!(
            cells_of("", "Secret", secret),
            [
                json!("x"),
                json!("kubernetes.io/tls"),
                json!(3),
                json!("45s")
            ]
        );
        assert_eq!(
            cells_of("", "Secret", json!({"metadata": meta})),
            [json!("x"), json!("Opaque"), json!(0), json!("45s")]
        );
    }

    #[test]
    fn lease_and_crd_cells() {
        let meta = json!({"name": "x", "creationTimestamp": "2023-11-14T22:13:20.123+01:00"});
        let lease = json!({"metadata": meta, "spec": {"holderIdentity": "pod-a_1234"}});
        // 3599.877s: ages truncate.
        assert_eq!(
            cells_of("coordination.k8s.io", "Lease", lease),
            ["x", "pod-a_1234", "59m"]
        );
        let crd = json!({"metadata": meta});
        assert_eq!(
            cells_of("apiextensions.k8s.io", "CustomResourceDefinition", crd),
            ["x", "2023-11-14T21:13:20Z"]
        );
        let unset = json!({"metadata": {"name": "y"}});
        assert_eq!(
            cells_of("apiextensions.k8s.io", "CustomResourceDefinition", unset)[1],
            "0001-01-01T00:00:00Z"
        );
        let columns = builtin_columns("apiextensions.k8s.io", "CustomResourceDefinition");
        assert_eq!(
            (columns[1].name.as_str(), columns[1].type_.as_str()),
            ("Created At", "date")
        );
    }

    #[test]
    fn other_kinds_get_name_and_age() {
        let columns = builtin_columns("apps", "DaemonSet");
        assert_eq!(
            columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
            ["Name", "Age"]
        );
        let object = json!({"metadata": {"name": "s", "creationTimestamp": ago(600)}});
        assert_eq!(cells_of("apps", "DaemonSet", object), ["s", "10m"]);
    }

    #[test]
    fn stateful_set_columns_and_cells() {
        let columns = builtin_columns("apps", "StatefulSet");
        assert_eq!(
            columns
                .iter()
                .map(|c| (c.name.as_str(), c.priority))
                .collect::<Vec<_>>(),
            [
                ("Name", 0),
                ("Ready", 0),
                ("Age", 0),
                ("Containers", 1),
                ("Images", 1)
            ]
        );
        let set = json!({
            "metadata": {"name": "pfs", "creationTimestamp": ago(120)},
            "spec": {"replicas": 3, "template": {"spec": {"containers": [
                {"name": "pfs", "image": "pureflash/pfs:1.9"}, {"name": "exporter", "image": "exp:2"}]}}},
            "status": {"replicas": 3, "readyReplicas": 2, "availableReplicas": 2},
        });
        assert_eq!(
            cells_of("apps", "StatefulSet", set),
            [
                "pfs",
                "2/3",
                "2m",
                "pfs,exporter",
                "pureflash/pfs:1.9,exp:2"
            ]
        );
        let new = json!({"metadata": {"name": "new", "creationTimestamp": ago(5)}, "spec": {"replicas": 1}, "status": {"replicas": 0, "availableReplicas": 0}});
        assert_eq!(cells_of("apps", "StatefulSet", new)[1], "0/1");
    }

    #[test]
    fn unknown_builtin_column_renders_null() {
        let mut columns = builtin_columns("", "Namespace");
        columns.push(Column {
            name: "Bogus".to_owned(),
            type_: "string".to_owned(),
            format: String::new(),
            description: String::new(),
            priority: 0,
            json_path: None,
        });
        let table = render(
            "",
            "Namespace",
            &columns,
            &[json!({"metadata": {"name": "n"}})],
            IncludeObject::None,
            "1",
            NOW,
        );
        assert_eq!(table["rows"][0]["cells"][3], Value::Null);
    }

    #[test]
    fn core_event_cells() {
        let event = json!({
            "metadata": {"name": "p1.17a"},
            "involvedObject": {"kind": "Pod", "name": "p1", "fieldPath": "spec.containers{main}"},
            "reason": "BackOff",
            "message": "  Back-off restarting failed container\n",
            "type": "Warning",
            "source": {"component": "kubelet", "host": "n1"},
            "firstTimestamp": ago(600),
            "lastTimestamp": ago(30),
            "count": 5,
        });
        assert_eq!(
            cells_of("", "Event", event),
            [
                json!("30s"),
                json!("Warning"),
                json!("BackOff"),
                json!("pod/p1"),
                json!("spec.containers{main}"),
                json!("kubelet, n1"),
                json!("Back-off restarting failed container"),
                json!("10m"),
                json!(5),
                json!("p1.17a")
            ]
        );
    }

    #[test]
    fn new_style_core_event_uses_event_time_and_series() {
        let event = json!({
            "metadata": {"name": "e"},
            "involvedObject": {"kind": "Node"},
            "eventTime": "2023-11-14T22:03:20.000000Z",
            "series": {"count": 4, "lastObservedTime": ago(20)},
            "reportingComponent": "operator",
            "reportingInstance": "operator-0",
        });
        let cells = cells_of("", "Event", event);
        assert_eq!(cells[0], "20s");
        assert_eq!(cells[3], "node");
        assert_eq!(cells[5], "operator, operator-0");
        assert_eq!(cells[7], "10m");
        assert_eq!(cells[8], 4);
        let singleton =
            json!({"metadata": {"name": "e"}, "eventTime": ago(5), "reportingComponent": "op"});
        let cells = cells_of("", "Event", singleton);
        assert_eq!(
            (cells[0].clone(), cells[5].clone(), cells[8].clone()),
            (json!("5s"), json!("op"), json!(1))
        );
    }

    #[test]
    fn events_v1_event_cells() {
        let event = json!({
            "metadata": {"name": "e1"},
            "regarding": {"kind": "Pool", "name": "pool-a"},
            "note": "Provisioned",
            "reason": "Created",
            "type": "Normal",
            "eventTime": ago(120),
            "reportingController": "pureflash.io/operator",
            "deprecatedCount": 2,
        });
        let cells = cells_of("events.k8s.io", "Event", event);
        assert_eq!(cells[..4], ["2m", "Normal", "Created", "pool/pool-a"]);
        assert_eq!(
            cells[5..],
            [
                json!("pureflash.io/operator"),
                json!("Provisioned"),
                json!("2m"),
                json!(2),
                json!("e1")
            ]
        );
        assert_eq!(
            builtin_columns("events.k8s.io", "Event"),
            builtin_columns("", "Event")
        );
    }

    #[test]
    fn node_cells_and_status() {
        let node = json!({
            "metadata": {
                "name": "n1",
                "creationTimestamp": ago(3 * 86400),
                "labels": {"node-role.kubernetes.io/control-plane": "", "kubernetes.io/role": "worker", "node-role.kubernetes.io/": "x"},
            },
            "spec": {"unschedulable": true},
            "status": {
                "conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True"}],
                "addresses": [{"type": "Hostname", "address": "n1"}, {"type": "InternalIP", "address": "192.0.2.1"}],
                "nodeInfo": {"kubeletVersion": "v1.31.0", "osImage": "Debian", "kernelVersion": "6.1"},
            },
        });
        assert_eq!(
            cells_of("", "Node", node),
            [
                "n1",
                "Ready,SchedulingDisabled",
                "control-plane,worker",
                "3d",
                "v1.31.0",
                "192.0.2.1",
                "<none>",
                "Debian",
                "6.1",
                "<unknown>"
            ]
        );
        let not_ready = json!({"status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}});
        assert_eq!(node_status(&not_ready), "NotReady");
        assert_eq!(node_status(&json!({})), "Unknown");
        assert_eq!(node_roles(&json!({})), "<none>");
    }

    fn column_names(group: &str, kind: &str) -> Vec<(String, i64)> {
        builtin_columns(group, kind)
            .into_iter()
            .map(|c| (c.name, c.priority))
            .collect()
    }

    #[test]
    fn service_account_and_service_cells() {
        let account = json!({"metadata": {"name": "op", "creationTimestamp": ago(60)}, "secrets": [{"name": "s"}]});
        assert_eq!(
            cells_of("", "ServiceAccount", account),
            [json!("op"), json!(1), json!("60s")]
        );
        assert_eq!(
            column_names("", "Service"),
            [
                ("Name", 0),
                ("Type", 0),
                ("Cluster-IP", 0),
                ("External-IP", 0),
                ("Port(s)", 0),
                ("Age", 0),
                ("Selector", 1)
            ]
            .map(|(n, p)| (n.to_owned(), p))
        );
        let service = json!({
            "metadata": {"name": "metrics", "creationTimestamp": ago(7200)},
            "spec": {"type": "ClusterIP", "clusterIP": "10.96.1.0", "clusterIPs": ["10.96.1.0"], "selector": {"b": "2", "a": "1"},
                     "ports": [{"port": 8080, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}]},
        });
        assert_eq!(
            cells_of("", "Service", service),
            [
                "metrics",
                "ClusterIP",
                "10.96.1.0",
                "<none>",
                "8080/TCP,53/UDP",
                "120m",
                "a=1,b=2"
            ]
        );
        let node_port = json!({"metadata": {"name": "web"}, "spec": {"type": "NodePort", "clusterIPs": ["10.96.1.1"], "externalIPs": ["192.0.2.9"], "ports": [{"port": 80, "nodePort": 30086, "protocol": "TCP"}]}});
        let cells = cells_of("", "Service", node_port);
        assert_eq!(cells[3..5], ["192.0.2.9", "80:30086/TCP"]);
        assert_eq!(cells[6], "<none>");
        let balancer = json!({"metadata": {"name": "lb"}, "spec": {"type": "LoadBalancer", "clusterIPs": ["10.96.1.2"], "ports": []},
                              "status": {"loadBalancer": {}}});
        let cells = cells_of("", "Service", balancer);
        assert_eq!(cells[3..5], ["<pending>", "<none>"]);
        let external = json!({"metadata": {"name": "db"}, "spec": {"type": "ExternalName", "externalName": "db.example.com"}});
        assert_eq!(
            cells_of("", "Service", external)[2..4],
            ["<none>", "db.example.com"]
        );
    }

    #[test]
    fn deployment_and_budget_cells() {
        assert_eq!(
            column_names("apps", "Deployment"),
            [
                ("Name", 0),
                ("Ready", 0),
                ("Up-to-date", 0),
                ("Available", 0),
                ("Age", 0),
                ("Containers", 1),
                ("Images", 1),
                ("Selector", 1)
            ]
            .map(|(n, p)| (n.to_owned(), p))
        );
        let deployment = json!({
            "metadata": {"name": "op", "creationTimestamp": ago(30)},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "op"}},
                     "template": {"spec": {"containers": [{"name": "op", "image": "op:1"}, {"name": "sidecar", "image": "s:2"}]}}},
            "status": {"readyReplicas": 1, "updatedReplicas": 2},
        });
        assert_eq!(
            cells_of("apps", "Deployment", deployment),
            [
                json!("op"),
                json!("1/2"),
                json!(2),
                json!(0),
                json!("30s"),
                json!("op,sidecar"),
                json!("op:1,s:2"),
                json!("app=op")
            ]
        );
        let budget = json!({"metadata": {"name": "pfs", "creationTimestamp": ago(5)}, "spec": {"maxUnavailable": "50%"}, "status": {"disruptionsAllowed": 1}});
        assert_eq!(
            cells_of("policy", "PodDisruptionBudget", budget),
            [
                json!("pfs"),
                json!("N/A"),
                json!("50%"),
                json!(1),
                json!("5s")
            ]
        );
    }

    #[test]
    fn rbac_cells() {
        assert_eq!(
            column_names("rbac.authorization.k8s.io", "Role"),
            [("Name".to_owned(), 0), ("Created At".to_owned(), 0)]
        );
        let role =
            json!({"metadata": {"name": "reader", "creationTimestamp": "2026-01-02T03:04:05Z"}});
        assert_eq!(
            cells_of("rbac.authorization.k8s.io", "ClusterRole", role),
            ["reader", "2026-01-02T03:04:05Z"]
        );
        let binding = json!({
            "metadata": {"name": "op", "creationTimestamp": ago(90)},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
            "subjects": [
                {"kind": "User", "name": "alice"}, {"kind": "User", "name": "bob"},
                {"kind": "Group", "name": "ops"},
                {"kind": "ServiceAccount", "name": "op", "namespace": "pf"},
            ],
        });
        assert_eq!(
            cells_of("rbac.authorization.k8s.io", "RoleBinding", binding.clone()),
            [
                "op",
                "ClusterRole/view",
                "90s",
                "alice, bob",
                "ops",
                "pf/op"
            ]
        );
        assert_eq!(
            cells_of("rbac.authorization.k8s.io", "ClusterRoleBinding", binding)[..2],
            ["op", "ClusterRole/view"]
        );
    }

    #[test]
    fn odd_objects_render_without_panicking() {
        for (group, kind) in [
            ("", "Pod"),
            ("", "Namespace"),
            ("", "ConfigMap"),
            ("", "Secret"),
            ("", "Event"),
            ("events.k8s.io", "Event"),
            ("", "Node"),
            ("coordination.k8s.io", "Lease"),
            ("apiextensions.k8s.io", "CustomResourceDefinition"),
            ("", "ServiceAccount"),
            ("", "Service"),
            ("apps", "Deployment"),
            ("policy", "PodDisruptionBudget"),
            ("rbac.authorization.k8s.io", "Role"),
            ("rbac.authorization.k8s.io", "ClusterRole"),
            ("rbac.authorization.k8s.io", "RoleBinding"),
            ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
            ("x", "Y"),
        ] {
            for object in [
                json!(null),
                json!([1, 2]),
                json!({"metadata": 5, "spec": "x", "status": [1]}),
            ] {
                let cells = cells_of(group, kind, object);
                assert_eq!(cells.len(), builtin_columns(group, kind).len());
            }
        }
    }
}
