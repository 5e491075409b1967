//! What a store's pfs should run as: its pfs.conf, the ConfigMap holding it, and the Pod.
//! Pure code: the same spec always renders the same bytes, so an unchanged store never rolls.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{Resource, ResourceExt};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::crd::PureFlashStore;
use crate::recovery::{NodeHealth, Predecessor};

/// Where pfs reads its configuration inside the container.
pub const CONF_DIR: &str = "/etc/pureflash";
pub const CONF_FILE: &str = "pfs.conf";
/// The pfs binary in PureFlash's image.
pub const PFS_BINARY: &str = "/opt/pureflash/pfs";
/// Pod annotation: hash of everything the running pfs was started with.
pub const CONFIG_HASH_ANNOTATION: &str = "pureflash.io/config-hash";
/// Pod annotation: the [`Predecessor`] session, recorded when the operator creates the Pod.
pub const PREDECESSOR_ANNOTATION: &str = "pureflash.io/predecessor-session";
use super::claims::{self, ADDRESSES_ANNOTATION, AddressRole, DEVICES_ANNOTATION};
/// Pod label: the store id.
pub const STORE_ID_LABEL: &str = "pureflash.io/store-id";
/// The container name.
pub const CONTAINER: &str = "pfs";
/// The label selector of every Pod and ConfigMap the operator makes.
pub const OWNED_SELECTOR: &str = "app.kubernetes.io/managed-by=pureflash-operator";
/// The Pod readiness gate the operator sets: a pfs Pod is Ready only while its store serves
/// (see [`serving_patch`]), so that PodDisruptionBudgets, `kubectl drain` and anything else
/// that counts ready Pods counts stores that serve, not containers that merely run.
pub const SERVING_GATE: &str = "pureflash.io/serving";

/// Inputs of pfs.conf that do not come from the store's spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Environment {
    /// PureFlash cluster name (`[cluster] name`).
    pub cluster: String,
    /// ZooKeeper connect string as pfs Pods reach it (`[zookeeper] ip`).
    pub zookeeper: String,
    /// The node's first IPv4 InternalIP: the default management, data and replication address.
    pub node_ip: Option<String>,
}

/// Why a pfs.conf cannot be rendered yet.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error(
        "node {node} has no IPv4 InternalIP to default mngtIp/ports/repPorts from; set them in the spec"
    )]
    NoNodeAddress { node: String },
    #[error(
        "node {node} does not exist: a pod bound to it would never run; fix spec.nodeName, or wait for the node to register"
    )]
    NodeNotFound { node: String },
    #[error(
        "settings.{section}.{key} cannot be written into pfs.conf (names: letters, digits, '_', '.', '-'; values: one line without control characters, '\\', '#', ';' or '\"')"
    )]
    UnwritableSetting { section: String, key: String },
    #[error(
        "tray {} on node {} is {} {}: two pfs on one disk would corrupt it, so this store gets no Pod while that one has it",
        .0.device,
        .0.node,
        if .0.in_use { "served by" } else { "claimed first by" },
        .0.holder
    )]
    DeviceHeld(super::claims::DeviceHeld),
    #[error(
        "{} address {} is {}'s too: {}, so two stores cannot register under one (stores on one node share its address by default); give this store its own spec.{}",
        match .0.role { AddressRole::Management => "management", AddressRole::Port => "port", AddressRole::ReplicationPort => "replication port" },
        .0.address,
        .0.holder,
        match .0.role { AddressRole::Management => "t_store.mngt_ip is unique", _ => "t_port holds an address once per purpose" },
        .0.role.field()
    )]
    AddressHeld(super::claims::AddressHeld),
    #[error(
        "spec.{field} {value:?} cannot be written into pfs.conf (one line without control characters, '\\', '#', ';' or '\"')"
    )]
    UnwritableValue { field: &'static str, value: String },
    #[error(
        "spec.{field} lists {count} entries but pfs reads at most {max} (the rest would never be registered)"
    )]
    TooMany {
        field: &'static str,
        count: usize,
        max: usize,
    },
    #[error(
        "settings.{section}.{key} is the operator's to write (the [cluster], [zookeeper], [tray.N], [port.N] and [rep_port.N] sections, [afs] id and mngt_ip): use the spec's fields"
    )]
    ReservedSetting { section: String, key: String },
    #[error(
        "spec.{field} is {spec} but the store's pod was made for {running}: a store's node and id never change (an installed CRD older than this operator lets them); restore it, or delete the store and create it anew"
    )]
    IdentityChanged {
        field: &'static str,
        spec: String,
        running: String,
    },
}

/// The store's Pod made for another node or store id than the spec names now. The CRD's
/// rules make both immutable; this holds where they were not enforced (a CRD installed before
/// the rule, a server without CEL): replacing the Pod would start pfs on another host's disks
/// under the store's id, or register the store's disks as another store.
pub fn identity_changed(store: &PureFlashStore, pod: &Pod) -> Option<RenderError> {
    // A Pod on its way out, or another object's (a store deleted and created anew under its
    // name: the old one's Pod lingers until collected), says nothing of this store's.
    let owned_by_another = pod
        .owner_references()
        .iter()
        .any(|owner| owner.controller == Some(true) && Some(&owner.uid) != store.uid().as_ref());
    if pod.metadata.deletion_timestamp.is_some() || owned_by_another {
        return None;
    }
    let node = pod.spec.as_ref().and_then(|spec| spec.node_name.as_deref());
    if let Some(node) = node.filter(|node| *node != store.spec.node_name) {
        return Some(RenderError::IdentityChanged {
            field: "nodeName",
            spec: store.spec.node_name.clone(),
            running: format!("node {node}"),
        });
    }
    let id = pod.labels().get(STORE_ID_LABEL);
    let spec_id = store.spec.store_id.to_string();
    if let Some(id) = id.filter(|id| **id != spec_id) {
        return Some(RenderError::IdentityChanged {
            field: "storeId",
            spec: spec_id,
            running: format!("store id {id}"),
        });
    }
    None
}

/// Whether pfs.conf's `[section] key` is one the operator writes itself. The CRD's rules say
/// so too; this holds where they were not enforced (a server without CEL validation, an older
/// CRD): a second `id=` under `[afs]` could make pfs register as another store.
fn is_reserved_setting(section: &str, key: &str) -> bool {
    matches!(section, "cluster" | "zookeeper")
        || ["tray.", "port.", "rep_port."]
            .iter()
            .any(|prefix| section.starts_with(prefix))
        || (section == "afs" && matches!(key, "id" | "mngt_ip"))
}

/// The most `[tray.N]` sections pfs reads (its `MAX_TRAY_COUNT`): it stops at the first
/// missing one or at this many.
pub const MAX_TRAYS: usize = 32;
/// The most `[port.N]`, and `[rep_port.N]`, sections pfs reads (its `MAX_PORT_COUNT`).
pub const MAX_PORTS: usize = 4;

/// Whether a settings value can stand in pfs.conf as it is. pfs reads its conf with a
/// Ceph-style parser: a line break starts a line of its own (a second `id=`), a trailing `\`
/// joins the next line (the next section's header) onto the value, `#` and `;` start a comment
/// that silently cuts the value short, and `"` starts a quoted value (with `\` escapes). It
/// also skips, whole, a line holding a NUL or a noncharacter its UTF-8 check refuses (U+FFFE,
/// U+FFFF), so those and the other ASCII control characters are kept out too.
pub(crate) fn is_conf_value(value: &str) -> bool {
    !value.chars().any(|c| {
        c.is_ascii_control() || matches!(c, '\\' | '#' | ';' | '"' | '\u{FFFE}' | '\u{FFFF}')
    })
}

/// Whether a settings section or key can stand in pfs.conf as it is.
fn is_conf_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Whether `pod` asks for no more of any resource than `replaced` does, requests and limits
/// alike, as a ResourceQuota counts them: a quota that takes `replaced` takes `pod` in its
/// place. `replaced` was admitted, `pod` not yet: a request left unset is taken as its limit
/// (the API server's default), and a resource `replaced` was given that `pod` does not name (a
/// LimitRange's default, which may have been raised since) counts as more, as does a quantity
/// that does not parse.
pub fn asks_no_more_than(pod: &Pod, replaced: &Pod) -> bool {
    let (asked, had) = (resource_totals(pod), resource_totals(replaced));
    had.keys().all(|key| asked.contains_key(key))
        && asked.iter().all(
            |(key, asked)| match (asked, had.get(key).cloned().flatten()) {
                (Some(asked), Some(had)) => *asked <= had,
                _ => false,
            },
        )
}

/// A Pod's requests (`false`) and limits (`true`) per resource: its containers' summed, or its
/// largest init container's if more. `None`: a quantity did not parse.
fn resource_totals(pod: &Pod) -> BTreeMap<(bool, String), Option<kube_quantity::ParsedQuantity>> {
    use kube_quantity::ParsedQuantity;
    type Totals = BTreeMap<(bool, String), Option<ParsedQuantity>>;
    let of = |container: &k8s_openapi::api::core::v1::Container| -> Totals {
        let mut asks = Totals::new();
        let Some(resources) = &container.resources else {
            return asks;
        };
        let parse = |quantity: &k8s_openapi::apimachinery::pkg::api::resource::Quantity| {
            ParsedQuantity::try_from(quantity.clone()).ok()
        };
        for (name, limit) in resources.limits.iter().flatten() {
            asks.insert((true, name.clone()), parse(limit));
            asks.insert((false, name.clone()), parse(limit));
        }
        for (name, request) in resources.requests.iter().flatten() {
            asks.insert((false, name.clone()), parse(request));
        }
        asks
    };
    let spec = pod.spec.as_ref();
    // Summed from the first quantity: kube_quantity's default (zero) added to a quantity of
    // another format loses its scale.
    let mut totals = Totals::new();
    for asks in spec.into_iter().flat_map(|spec| &spec.containers).map(of) {
        for (key, quantity) in asks {
            totals
                .entry(key)
                .and_modify(|total| {
                    *total = total
                        .take()
                        .zip(quantity.clone())
                        .map(|(sum, more)| sum + more);
                })
                .or_insert(quantity);
        }
    }
    let init = spec
        .into_iter()
        .flat_map(|spec| spec.init_containers.iter().flatten());
    for asks in init.map(of) {
        for (key, quantity) in asks {
            let total = totals.entry(key).or_insert_with(|| quantity.clone());
            *total = total
                .take()
                .zip(quantity)
                .map(|(total, init)| total.max(init));
        }
    }
    totals
}

/// Names of the objects a store owns.
pub fn pod_name(store: &PureFlashStore) -> String {
    format!("{}-pfs", store.name_any())
}

pub fn config_map_name(store: &PureFlashStore) -> String {
    format!("{}-pfs-conf", store.name_any())
}

/// pfs.conf: byte-stable (fixed section order, sorted extra settings), one key per line.
pub fn pfs_conf(store: &PureFlashStore, env: &Environment) -> Result<String, RenderError> {
    let spec = &store.spec;
    let node_ip = || {
        env.node_ip
            .clone()
            .ok_or_else(|| RenderError::NoNodeAddress {
                node: spec.node_name.clone(),
            })
    };
    let mngt_ip = match &spec.mngt_ip {
        Some(ip) => ip.clone(),
        None => node_ip()?,
    };
    let or_node = |ips: &[String]| -> Result<Vec<String>, RenderError> {
        if ips.is_empty() {
            Ok(vec![node_ip()?])
        } else {
            Ok(ips.to_vec())
        }
    };
    let ports = or_node(&spec.ports)?;
    let rep_ports = or_node(&spec.rep_ports)?;
    // The CRD's schema says the same; this holds where an older CRD let such a spec through.
    for (field, count, max) in [
        ("trays", spec.trays.len(), MAX_TRAYS),
        ("ports", ports.len(), MAX_PORTS),
        ("repPorts", rep_ports.len(), MAX_PORTS),
    ] {
        if count > max {
            return Err(RenderError::TooMany { field, count, max });
        }
    }
    // The CRD's patterns say the same; this holds where an older CRD let such a spec through.
    let values = std::iter::once(("mngtIp", &mngt_ip))
        .chain(
            spec.trays
                .iter()
                .map(|tray| ("trays[].device", &tray.device)),
        )
        .chain(ports.iter().map(|ip| ("ports[]", ip)))
        .chain(rep_ports.iter().map(|ip| ("repPorts[]", ip)));
    for (field, value) in values {
        if !is_conf_value(value) {
            return Err(RenderError::UnwritableValue {
                field,
                value: value.clone(),
            });
        }
    }
    // The CRD's schema says the same; this holds where an older CRD let such a spec through.
    for (section, keys) in &spec.settings {
        for (key, value) in keys {
            if !is_conf_name(section) || !is_conf_name(key) || !is_conf_value(value) {
                return Err(RenderError::UnwritableSetting {
                    section: section.clone(),
                    key: key.clone(),
                });
            }
            if is_reserved_setting(section, key) {
                return Err(RenderError::ReservedSetting {
                    section: section.clone(),
                    key: key.clone(),
                });
            }
        }
    }

    let empty = BTreeMap::new();
    let mut conf = String::new();
    let _ = writeln!(
        conf,
        "# Generated by pureflash-operator for PureFlashStore {}/{}; do not edit.",
        store.namespace().unwrap_or_default(),
        store.name_any()
    );
    let _ = writeln!(conf, "[cluster]\nname={}", env.cluster);
    let _ = writeln!(conf, "[zookeeper]\nip={}", env.zookeeper);
    let _ = writeln!(conf, "[afs]\nmngt_ip={mngt_ip}\nid={}", spec.store_id);
    for (key, value) in spec.settings.get("afs").unwrap_or(&empty) {
        let _ = writeln!(conf, "{key}={value}");
    }
    for (index, tray) in spec.trays.iter().enumerate() {
        let _ = writeln!(conf, "[tray.{index}]\ndev={}", tray.device);
    }
    for (index, ip) in ports.iter().enumerate() {
        let _ = writeln!(conf, "[port.{index}]\nip={ip}");
    }
    for (index, ip) in rep_ports.iter().enumerate() {
        let _ = writeln!(conf, "[rep_port.{index}]\nip={ip}");
    }
    for (section, keys) in spec
        .settings
        .iter()
        .filter(|(section, _)| *section != "afs")
    {
        let _ = writeln!(conf, "[{section}]");
        for (key, value) in keys {
            let _ = writeln!(conf, "{key}={value}");
        }
    }
    Ok(conf)
}

/// Everything a running pfs depends on, hashed: when it changes, the Pod is rolled.
pub fn config_hash(store: &PureFlashStore, conf: &str) -> String {
    let spec = &store.spec;
    let mut hasher = Sha256::new();
    for part in [
        conf,
        &spec.image,
        spec.image_pull_policy.as_str(),
        &spec.node_name,
    ] {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    hasher.update(serde_json::to_vec(&spec.resources).unwrap_or_default());
    // Added to the Pod later than the rest: hashed only when set, so that the Pods of stores
    // without them are not rolled by an operator upgrade.
    if let Some(class) = &spec.priority_class_name {
        hasher.update(b"\0priorityClassName\0");
        hasher.update(class.as_bytes());
    }
    if !spec.tolerations.is_empty() {
        hasher.update(b"\0tolerations\0");
        hasher.update(serde_json::to_vec(&spec.tolerations).unwrap_or_default());
    }
    let digest = hasher.finalize();
    digest.iter().take(8).fold(String::new(), |mut hex, byte| {
        let _ = write!(hex, "{byte:02x}");
        hex
    })
}

/// Pod and ConfigMap label: the store's name (as far as a label value holds it).
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";

/// The store's [`INSTANCE_LABEL`] value: its name where a label value holds it (63
/// characters); a longer one is cut to 52 and ends in a hash of the whole name, so that two
/// stores whose names differ only past the cut (`…-disk-0001`, `…-disk-0002`) keep labels of
/// their own, which the disruption budget tells their Pods apart by.
pub fn instance(store: &PureFlashStore) -> String {
    let name = store.name_any();
    if name.len() <= 63 {
        return name;
    }
    let digest = Sha256::digest(name.as_bytes());
    let hash = digest.iter().take(5).fold(String::new(), |mut hex, byte| {
        let _ = write!(hex, "{byte:02x}");
        hex
    });
    // Names are ASCII (a DNS subdomain): the cut falls between characters.
    let prefix = name[..52].trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    format!("{prefix}-{hash}")
}

fn labels(store: &PureFlashStore) -> BTreeMap<String, String> {
    let instance = instance(store);
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "pfs".to_owned()),
        ("app.kubernetes.io/component".to_owned(), "store".to_owned()),
        (INSTANCE_LABEL.to_owned(), instance),
        (
            "app.kubernetes.io/managed-by".to_owned(),
            "pureflash-operator".to_owned(),
        ),
        (STORE_ID_LABEL.to_owned(), store.spec.store_id.to_string()),
    ])
}

fn owner(store: &PureFlashStore) -> serde_json::Value {
    let owner = store.controller_owner_ref(&()).map(|mut owner| {
        owner.block_owner_deletion = Some(true);
        owner
    });
    json!([owner])
}

/// The owner references that make `pod` the store's, when it lacks them: its own with the
/// store's controller reference added. A Pod left behind by an orphaning delete of an earlier
/// store of the same name has none, and kept as it is it would outlive this store too, a
/// privileged pfs holding the disks and the id. `None` when the store owns it already, or when
/// another controller does (not the store's to take).
pub fn adoption(pod: &Pod, store: &PureFlashStore) -> Option<Vec<OwnerReference>> {
    // Asked at every reconcile: the common answer (owned) costs no allocation.
    let owners = pod.owner_references();
    if owners.iter().any(|owner| owner.controller == Some(true)) {
        return None;
    }
    let mut mine = store.controller_owner_ref(&())?;
    mine.block_owner_deletion = Some(true);
    let mut adopted: Vec<OwnerReference> = owners
        .iter()
        .filter(|owner| owner.uid != mine.uid)
        .cloned()
        .collect();
    adopted.push(mine);
    Some(adopted)
}

/// The ConfigMap holding pfs.conf (server-side applied).
pub fn config_map(store: &PureFlashStore, conf: &str) -> ConfigMap {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": config_map_name(store),
            "namespace": store.namespace(),
            "labels": labels(store),
            "ownerReferences": owner(store),
        },
        "data": {CONF_FILE: conf},
    }))
    .expect("a valid ConfigMap")
}

/// Whether `existing` already holds everything `desired` sets (its data, labels and owner), so
/// that applying `desired` would change nothing and the write can be skipped. What others added
/// (more labels, more keys) does not matter: an apply would leave it too.
pub fn config_map_up_to_date(existing: &ConfigMap, desired: &ConfigMap) -> bool {
    fn contains<K: Ord, V: PartialEq>(
        have: Option<&BTreeMap<K, V>>,
        want: Option<&BTreeMap<K, V>>,
    ) -> bool {
        want.into_iter()
            .flatten()
            .all(|(key, value)| have.and_then(|have| have.get(key)) == Some(value))
    }
    let owners_present = desired.owner_references().iter().all(|want| {
        existing.owner_references().iter().any(|have| {
            have.uid == want.uid
                && have.controller == want.controller
                && have.block_owner_deletion == want.block_owner_deletion
        })
    });
    existing.metadata.deletion_timestamp.is_none()
        && contains(existing.data.as_ref(), desired.data.as_ref())
        && contains(
            existing.metadata.labels.as_ref(),
            desired.metadata.labels.as_ref(),
        )
        && owners_present
}

/// The pfs Pod: on the store's node, host network, privileged (pfs drives the disks directly),
/// the pfs.conf mounted where pfs reads it, `/dev` from the host.
/// The [`PREDECESSOR_ANNOTATION`] value: `none`, or the session id in hex as ZooKeeper's own
/// tools print it (`0x…`). `None` when there is nothing to record.
pub fn predecessor_annotation(predecessor: Predecessor) -> Option<String> {
    match predecessor {
        Predecessor::Unknown => None,
        Predecessor::NoSession => Some("none".into()),
        Predecessor::Session(id) => Some(format!("{id:#x}")),
    }
}

/// Reads a [`PREDECESSOR_ANNOTATION`] value; anything unreadable is `Unknown`, which only
/// makes the judgement slower, never wrong.
pub fn parse_predecessor(value: Option<&str>) -> Predecessor {
    match value {
        Some("none") => Predecessor::NoSession,
        Some(hex) => hex
            .strip_prefix("0x")
            .and_then(|digits| u64::from_str_radix(digits, 16).ok())
            .map_or(Predecessor::Unknown, |id| {
                Predecessor::Session(id.cast_signed())
            }),
        None => Predecessor::Unknown,
    }
}

/// The Pod running the store's pfs. `predecessor` is recorded in an annotation, which is why
/// the Pod is only ever created, never applied over an existing one.
pub fn pod(store: &PureFlashStore, hash: &str, predecessor: Predecessor) -> Pod {
    let spec = &store.spec;
    let mut container = json!({
        "name": CONTAINER,
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy.as_str(),
        "command": [PFS_BINARY, "-c", format!("{CONF_DIR}/{CONF_FILE}")],
        "securityContext": {"privileged": true},
        "volumeMounts": [
            {"name": "conf", "mountPath": CONF_DIR, "readOnly": true},
            {"name": "dev", "mountPath": "/dev"},
        ],
    });
    if let Some(resources) = &spec.resources {
        container["resources"] = serde_json::to_value(resources).expect("resources serialize");
    }
    let devices: Vec<&str> = spec.trays.iter().map(|t| t.device.as_str()).collect();
    let mut annotations = json!({
        CONFIG_HASH_ANNOTATION: hash,
        DEVICES_ANNOTATION: devices.join(","),
    });
    if let Some(session) = predecessor_annotation(predecessor) {
        annotations[PREDECESSOR_ANNOTATION] = session.into();
    }
    // As a DaemonSet's Pods do: the store's disks are on this node, so a Pod evicted from it
    // (by default 300 s after the node stops reporting) could run nowhere else, and a pfs that
    // kept its ZooKeeper session through the silence would be killed for nothing. Recovery
    // decides about a silent node's store once it reports again.
    let mut tolerations = vec![
        json!({"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"}),
        json!({"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"}),
    ];
    tolerations.extend(
        spec.tolerations
            .iter()
            .map(|toleration| serde_json::to_value(toleration).expect("tolerations serialize")),
    );
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name(store),
            "namespace": store.namespace(),
            "labels": labels(store),
            "annotations": annotations,
            "ownerReferences": owner(store),
        },
        "spec": {
            "nodeName": spec.node_name,
            "hostNetwork": true,
            "dnsPolicy": "ClusterFirstWithHostNet",
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            // pfs never calls the Kubernetes API: no token in a privileged Pod.
            "automountServiceAccountToken": false,
            "tolerations": tolerations,
            "readinessGates": [{"conditionType": SERVING_GATE}],
            "containers": [container],
            "volumes": [
                {"name": "conf", "configMap": {"name": config_map_name(store)}},
                {"name": "dev", "hostPath": {"path": "/dev"}},
            ],
        },
    });
    if let Some(class) = &spec.priority_class_name {
        pod["spec"]["priorityClassName"] = class.as_str().into();
    }
    serde_json::from_value(pod).expect("a valid Pod")
}

/// What of `pod` a reconcile of its store reads: all of it but its resourceVersion and the
/// two conditions that follow the store itself, its [`SERVING_GATE`] (the operator's own
/// write) and `Ready` (the kubelet's echo of it). A Pod event that changes only those is the
/// echo of the operator's own gate write, and need not wake the store again: a thousand
/// stores going offline together would otherwise be reconciled twice each.
pub fn wake_fingerprint(pod: &Pod) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut seen = pod.clone();
    seen.metadata.resource_version = None;
    seen.metadata.managed_fields = None;
    if let Some(conditions) = seen
        .status
        .as_mut()
        .and_then(|status| status.conditions.as_mut())
    {
        conditions.retain(|c| c.type_ != SERVING_GATE && c.type_ != "Ready");
    }
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(&seen)
        .expect("a Pod serializes")
        .hash(&mut hasher);
    hasher.finish()
}

/// Whether `pod`'s condition `kind` is `True`; `None` when the Pod has no such condition.
pub fn condition_true(pod: &Pod, kind: &str) -> Option<bool> {
    pod.status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .and_then(|all| all.iter().find(|c| c.type_ == kind))
        .map(|c| c.status == "True")
}

/// The pods/status patch that sets `pod`'s [`SERVING_GATE`] condition to `serving`, at `now`;
/// `None` when nothing needs writing: the Pod has no such gate (made by an older operator, it
/// gets one when next replaced), or its condition already says so. A condition not written yet
/// counts as not serving, as the kubelet counts it, so a new Pod costs no write until it serves.
/// The Pod's uid goes along as a precondition (as the kubelet's own status patches carry it):
/// a patch computed for a Pod since replaced under its name fails instead of marking the new
/// one.
pub fn serving_patch(pod: &Pod, serving: bool, now: jiff::Timestamp) -> Option<serde_json::Value> {
    let gated = pod
        .spec
        .as_ref()
        .and_then(|spec| spec.readiness_gates.as_ref())
        .is_some_and(|gates| gates.iter().any(|gate| gate.condition_type == SERVING_GATE));
    let says_serving = condition_true(pod, SERVING_GATE) == Some(true);
    if !gated || says_serving == serving {
        return None;
    }
    let (status, reason, message) = if serving {
        (
            "True",
            "StoreServing",
            "the store is alive in ZooKeeper, registered by this pod's pfs",
        )
    } else {
        (
            "False",
            "StoreNotServing",
            "the store is not alive in ZooKeeper, or not yet registered by this pod's pfs",
        )
    };
    Some(json!({
        "metadata": {"uid": pod.uid()},
        "status": {"conditions": [{
            "type": SERVING_GATE,
            "status": status,
            "reason": reason,
            "message": message,
            "lastTransitionTime": now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        }]},
    }))
}

/// Why `pod` has stopped for good, if it has: a Pod in a terminal phase (`Failed`,
/// `Succeeded`) never runs again, whatever its restart policy. The kubelet evicted it under node
/// pressure, refused it at admission (`OutOfcpu`…), or stopped it for a node shutdown; it is
/// replaced as a missing Pod is. A Pod already terminating is on its way out anyway.
pub fn stopped_for_good(pod: &Pod) -> Option<String> {
    if pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let status = pod.status.as_ref()?;
    let phase = status.phase.as_deref()?;
    if !matches!(phase, "Failed" | "Succeeded") {
        return None;
    }
    let detail = [status.reason.as_deref(), status.message.as_deref()]
        .into_iter()
        .flatten()
        .map(str::trim)
        .filter(|text| !text.is_empty())
        .collect::<Vec<_>>()
        .join(": ");
    Some(if detail.is_empty() {
        phase.to_owned()
    } else {
        format!("{phase}, {detail}")
    })
}

/// Another Pod of this operator's that runs pfs for the store's id: `namespace/name`. Such a
/// Pod is left from a store deleted with its dependents orphaned and created again under
/// another name (a Pod of the same name is adopted instead), or from a store of another id
/// changed to this one. A second pfs under one id would take the id over, with its own disks,
/// whenever the first one's session drops; and recovery would kill the wrong one. A Pod on
/// its way out counts until it is gone: its kubelet removes it only once its pfs is dead (a
/// Pod force-deleted is gone at once, and cannot be seen). Pods whose pfs ended for good do
/// not count.
pub fn foreign_pfs<'a>(
    store: &PureFlashStore,
    candidates: impl IntoIterator<Item = &'a Pod>,
) -> Option<ForeignPfs> {
    let id = store.spec.store_id.to_string();
    others_running_pfs(store, candidates)
        .filter(|pod| pod.labels().get(STORE_ID_LABEL) == Some(&id))
        .map(|pod| ForeignPfs::of(pod, None))
        // The same one named each time, whatever order the cache lists them in.
        .min()
}

/// What stands in the way of a store's new Pod among `candidates`, the operator's Pods (as
/// cached, and those created that the cache may not show yet): a Pod that runs pfs for the
/// store's id ([`foreign_pfs`]), or one on its node, not its own, whose pfs serves one of its
/// trays ([`DEVICES_ANNOTATION`]) or registers under one of the addresses it would
/// (`addresses`, see [`ADDRESSES_ANNOTATION`]), whatever the stores' claims say: two pfs on
/// one disk would corrupt it, two under one address take each other's rows.
pub fn in_the_way<'a>(
    store: &PureFlashStore,
    addresses: &[(AddressRole, &str)],
    candidates: impl IntoIterator<Item = &'a Pod> + Clone,
) -> Option<ForeignPfs> {
    if let Some(found) = foreign_pfs(store, candidates.clone()) {
        return Some(found);
    }
    others_running_pfs(store, candidates)
        .filter(|pod| {
            pod.spec.as_ref().and_then(|spec| spec.node_name.as_deref())
                == Some(store.spec.node_name.as_str())
        })
        .filter_map(|pod| {
            let devices = pod
                .annotations()
                .get(DEVICES_ANNOTATION)
                .map_or("", String::as_str);
            if let Some(tray) = store
                .spec
                .trays
                .iter()
                .find(|tray| devices.split(',').any(|d| d == tray.device))
            {
                return Some(ForeignPfs::of(pod, Some(tray.device.clone())));
            }
            let (role, address) =
                claims::shared_address(pod.annotations().get(ADDRESSES_ANNOTATION)?, addresses)?;
            Some(ForeignPfs {
                address: Some((role, address.to_owned())),
                ..ForeignPfs::of(pod, None)
            })
        })
        .min()
}

/// `pod` with the [`ADDRESSES_ANNOTATION`] of `addresses`.
pub fn registering_under(mut pod: Pod, addresses: &[(AddressRole, &str)]) -> Pod {
    pod.metadata.annotations.get_or_insert_default().insert(
        ADDRESSES_ANNOTATION.to_owned(),
        claims::addresses_annotation(addresses),
    );
    pod
}

/// The Pods among `candidates` that are not the store's own (by name, or by owner) and whose
/// pfs may run: on its way out, a Pod's pfs runs until its kubelet has stopped it; one that
/// ended for good runs none.
fn others_running_pfs<'a>(
    store: &PureFlashStore,
    candidates: impl IntoIterator<Item = &'a Pod>,
) -> impl Iterator<Item = &'a Pod> {
    let own_name = pod_name(store);
    let namespace = store.namespace();
    let uid = store.uid();
    candidates.into_iter().filter(move |pod| {
        let own = (pod.namespace() == namespace && pod.name_any() == own_name)
            || pod
                .owner_references()
                .iter()
                .any(|owner| Some(&owner.uid) == uid.as_ref());
        !own && stopped_for_good(pod).is_none()
    })
}

/// A Pod [`foreign_pfs`] or [`in_the_way`] found.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ForeignPfs {
    /// `namespace/name`.
    pub pod: String,
    /// Deleted already, its pfs not yet stopped: waiting is all there is to do.
    pub terminating: bool,
    /// The store's tray its pfs serves, when that is what is in the way.
    pub device: Option<String>,
    /// The address, of the store's, that its pfs registers under, when that is what is in the
    /// way. (Neither: it runs pfs for the store's id.)
    pub address: Option<(AddressRole, String)>,
}

impl ForeignPfs {
    fn of(pod: &Pod, device: Option<String>) -> ForeignPfs {
        ForeignPfs {
            pod: format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any()),
            terminating: pod.metadata.deletion_timestamp.is_some(),
            device,
            address: None,
        }
    }
}

/// Where kubelets renew their node's Lease (every 10 s by default).
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

/// What one read of a node's Lease showed, kept to tell later whether its kubelet renewed it
/// since. Renew times are the node's clock: they are only compared with each other, never
/// with the operator's clock, so no clock skew between them matters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseSighting {
    /// The Lease's `renewTime` (None: no Lease, or never renewed).
    pub renewed: Option<jiff::Timestamp>,
    /// When the read returned, in the API server's time as the operator reckons it
    /// ([`crate::clock`]); only compared with later reads of the same operator.
    pub read_at: jiff::Timestamp,
}

impl LeaseSighting {
    pub fn of(lease: Option<&Lease>, read_at: jiff::Timestamp) -> LeaseSighting {
        LeaseSighting {
            renewed: renew_time(lease),
            read_at,
        }
    }
}

fn renew_time(lease: Option<&Lease>) -> Option<jiff::Timestamp> {
    lease
        .and_then(|lease| lease.spec.as_ref())
        .and_then(|spec| spec.renew_time.as_ref())
        .map(|time| time.0)
}

/// How long a kubelet's Lease holds when it does not say (the kubelet's default).
const DEFAULT_NODE_LEASE_DURATION: jiff::SignedDuration = jiff::SignedDuration::from_secs(40);

/// Whether the kubelet of `node` is out of contact with the API server, so that a Pod deleted
/// there would stay terminating until it reports again: the Node is gone, or the node
/// lifecycle controller has marked it `Ready=Unknown` (after 40 s of silence by default, 50 s
/// from Kubernetes 1.32). The control plane's word, in its own time: the kubelet's Lease,
/// renewed in the node's time, would hold a node whose clock is behind for good. A node
/// reporting `Ready=False` is in contact: its kubelet carries out a delete.
pub fn node_out_of_contact(node: Option<&Node>) -> bool {
    let Some(node) = node else {
        return true;
    };
    node.status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .and_then(|conditions| conditions.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|ready| ready.status == "Unknown")
}

/// Taints that mark a node on its way out without a cordon: the cluster autoscaler's and
/// Karpenter's (older and newer key) before they drain and remove it, and the taint a cordon
/// becomes.
const LEAVING_TAINTS: &[&str] = &[
    "node.kubernetes.io/unschedulable",
    "ToBeDeletedByClusterAutoscaler",
    "karpenter.sh/disrupted",
    "karpenter.sh/disruption",
];

/// Whether `node` is cordoned (`kubectl cordon`, a drain) or tainted as on its way out by the
/// cluster autoscaler or Karpenter (which do not cordon): the scheduler places no new Pod
/// there, and neither does the operator, whose Pods name their node and would bypass it.
pub fn cordoned(node: &Node) -> bool {
    let Some(spec) = node.spec.as_ref() else {
        return false;
    };
    spec.unschedulable == Some(true)
        || spec.taints.iter().flatten().any(|taint| {
            LEAVING_TAINTS.contains(&taint.key.as_str())
                && matches!(taint.effect.as_str(), "NoSchedule" | "NoExecute")
        })
}

/// The health of a store's node as recovery sees it `now`, from the Node, its Lease as just
/// read, and `sighting`: a read of the Lease taken during the store's current offline episode
/// (since it went offline, or was last restarted), if any. Returns the sighting to keep when it
/// is a new one.
/// - not ready when the node does not exist, or its `Ready` condition is `False` or `Unknown`;
/// - no Lease at all: the `Ready` condition decides (ready when `True`, unknown when absent);
/// - the Lease shows the same renewal as the sighting: unconfirmed until the Lease's duration
///   has passed since the sighting, not ready from then on. The node lifecycle controller marks
///   a silent node `Unknown` only after its grace period (40–50 s), later than a store's
///   default offline grace of 30 s: the Lease tells first. A kubelet in contact renews it every
///   quarter of its duration (10 s by default), so a store's grace usually shows a renewal;
/// - renewed since a sighting at most one Lease duration old: in contact, so the `Ready`
///   condition decides. A renewal seen against an older sighting may itself be old (the store
///   was held meanwhile, and the node may have gone silent since): a new sighting is taken and
///   the node is unconfirmed until the next renewal, at most a quarter of a duration away;
/// - no sighting yet (a new leader, or an episode's first look at it): this read is the
///   sighting, and the node is unconfirmed likewise.
///
/// Renew times are the node's clock and are only compared with each other; durations are
/// measured on the operator's clock between its own reads. No clock skew matters.
pub fn node_health(
    node: Option<&Node>,
    lease: Option<&Lease>,
    sighting: Option<&LeaseSighting>,
    now: jiff::Timestamp,
) -> (NodeHealth, Option<LeaseSighting>) {
    let Some(node) = node else {
        return (NodeHealth::NotReady, None);
    };
    let ready = node
        .status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .and_then(|conditions| conditions.iter().find(|c| c.type_ == "Ready"));
    let by_condition = match ready.map(|c| c.status.as_str()) {
        Some("True") => NodeHealth::Ready,
        Some(_) => return (NodeHealth::NotReady, None),
        None => NodeHealth::Unknown,
    };
    let Some(lease) = lease else {
        return (by_condition, None);
    };
    let duration = lease
        .spec
        .as_ref()
        .and_then(|spec| spec.lease_duration_seconds)
        .filter(|secs| *secs > 0)
        .map_or(DEFAULT_NODE_LEASE_DURATION, |secs| {
            jiff::SignedDuration::from_secs(i64::from(secs))
        });
    let fresh = || {
        let sighting = LeaseSighting::of(Some(lease), now);
        let silent_at = now + duration;
        (NodeHealth::Unconfirmed { silent_at }, Some(sighting))
    };
    let Some(sighting) = sighting else {
        return fresh();
    };
    let silent_at = sighting.read_at + duration;
    if renew_time(Some(lease)) == sighting.renewed {
        if now >= silent_at {
            (NodeHealth::NotReady, None)
        } else {
            (NodeHealth::Unconfirmed { silent_at }, None)
        }
    } else if now <= silent_at {
        (by_condition, None)
    } else {
        fresh()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pods_in_a_terminal_phase_have_stopped_for_good() {
        let pod_in = |phase: Option<&str>, reason: Option<&str>, message: Option<&str>| -> Pod {
            serde_json::from_value(json!({
                "metadata": {"name": "store-1-pfs"},
                "status": {"phase": phase, "reason": reason, "message": message},
            }))
            .unwrap()
        };
        for phase in [None, Some("Pending"), Some("Running"), Some("Unknown")] {
            assert_eq!(
                stopped_for_good(&pod_in(phase, None, None)),
                None,
                "{phase:?}"
            );
        }
        assert_eq!(
            stopped_for_good(&pod_in(
                Some("Failed"),
                Some("Evicted"),
                Some("The node was low on resource: memory. ")
            ))
            .as_deref(),
            Some("Failed, Evicted: The node was low on resource: memory.")
        );
        assert_eq!(
            stopped_for_good(&pod_in(Some("Failed"), Some("OutOfcpu"), None)).as_deref(),
            Some("Failed, OutOfcpu")
        );
        assert_eq!(
            stopped_for_good(&pod_in(Some("Succeeded"), None, Some(""))).as_deref(),
            Some("Succeeded")
        );
        let mut terminating = pod_in(Some("Failed"), Some("Evicted"), None);
        terminating.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
        );
        assert_eq!(stopped_for_good(&terminating), None, "on its way out");
        assert_eq!(stopped_for_good(&Pod::default()), None, "no status yet");
    }
    use crate::crd::PureFlashStoreSpec;

    fn store(spec: serde_json::Value) -> PureFlashStore {
        let spec: PureFlashStoreSpec = serde_json::from_value(spec).unwrap();
        let mut store = PureFlashStore::new("store-7", spec);
        store.metadata.namespace = Some("pf".into());
        store.metadata.uid = Some("uid-7".into());
        store
    }

    #[test]
    fn long_names_keep_instance_labels_of_their_own() {
        let named = |name: &str| {
            let mut store =
                store(json!({"storeId": 1, "nodeName": "n", "trays": [{"device": "/dev/sdb"}]}));
            store.metadata.name = Some(name.into());
            store
        };
        assert_eq!(instance(&named("store-7")), "store-7");
        let exactly = "s".repeat(63);
        assert_eq!(instance(&named(&exactly)), exactly);
        let prefix = format!("{}-", "a".repeat(70));
        let (one, two) = (
            named(&format!("{prefix}0001")),
            named(&format!("{prefix}0002")),
        );
        let (first, second) = (instance(&one), instance(&two));
        assert_ne!(first, second, "names differing past the cut");
        for label in [&first, &second] {
            assert!(label.len() <= 63, "{label}");
            assert!(label.starts_with(&"a".repeat(52)), "{label}");
        }
        // A cut before a separator leaves no trailing one.
        let dotted = named(&format!("{}.{}", "b".repeat(51), "c".repeat(30)));
        assert!(
            instance(&dotted).starts_with(&format!("{}-", "b".repeat(51))),
            "{}",
            instance(&dotted)
        );
    }

    fn env() -> Environment {
        Environment {
            cluster: "cluster1".into(),
            zookeeper: "zk-0:2181,zk-1:2181".into(),
            node_ip: Some("192.168.1.7".into()),
        }
    }

    #[test]
    fn another_pod_running_pfs_for_the_id_is_found() {
        let store =
            store(json!({"storeId": 7, "nodeName": "n1", "trays": [{"device": "/dev/sdb"}]}));
        let own = pod(&store, "h", Predecessor::NoSession);
        let renamed = |name: &str, namespace: &str| {
            let mut pod = own.clone();
            pod.metadata.name = Some(name.into());
            pod.metadata.namespace = Some(namespace.into());
            pod.metadata.owner_references = None;
            pod
        };
        // Its own Pod, even orphaned (adopted), is no other.
        assert_eq!(foreign_pfs(&store, [&own]), None);
        assert_eq!(foreign_pfs(&store, [&renamed("store-7-pfs", "pf")]), None);
        // Left from a store of another name, or in another namespace.
        let found = |pod: &str, terminating| {
            Some(ForeignPfs {
                pod: pod.into(),
                terminating,
                device: None,
                address: None,
            })
        };
        assert_eq!(
            foreign_pfs(&store, [&own, &renamed("old-pfs", "pf")]),
            found("pf/old-pfs", false)
        );
        assert_eq!(
            foreign_pfs(&store, [&renamed("store-7-pfs", "other")]),
            found("other/store-7-pfs", false)
        );
        // On its way out: its pfs runs until its kubelet has stopped it.
        let mut leaving = renamed("old-pfs", "pf");
        leaving.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
        );
        assert_eq!(foreign_pfs(&store, [&leaving]), found("pf/old-pfs", true));
        // Another id, or ended for good: no pfs of this id runs in it.
        let mut other_id = renamed("old-pfs", "pf");
        other_id
            .labels_mut()
            .insert(STORE_ID_LABEL.into(), "8".into());
        let mut ended = renamed("old-pfs", "pf");
        ended.status = Some(k8s_openapi::api::core::v1::PodStatus {
            phase: Some("Failed".into()),
            ..Default::default()
        });
        assert_eq!(foreign_pfs(&store, [&other_id, &ended]), None);
    }

    /// A Pod of the node registering under an address the store's would use, in the same
    /// role, is in the way of its new Pod: found right before the create, whatever the caches
    /// said of the other store's pfs.conf.
    #[test]
    fn a_pod_registering_under_the_stores_address_is_in_the_way_of_its_new_pod() {
        let spec = |id: u32, node: &str, device: &str| json!({"storeId": id, "nodeName": node, "trays": [{"device": device}]});
        let seven = store(spec(7, "n1", "/dev/sdb"));
        let mine = [
            (AddressRole::Management, "10.0.0.1"),
            (AddressRole::Port, "10.0.0.1"),
            (AddressRole::ReplicationPort, "10.0.1.7"),
        ];
        let mut other = store(spec(8, "n1", "/dev/sdc"));
        other.metadata.name = Some("eight".into());
        other.metadata.uid = Some("uid-eight".into());
        let made = |addresses: &[(AddressRole, &str)]| {
            registering_under(pod(&other, "h", Predecessor::NoSession), addresses)
        };
        let own_addresses = made(&[
            (AddressRole::Management, "10.0.0.8"),
            (AddressRole::Port, "10.0.0.8"),
            (AddressRole::ReplicationPort, "10.0.0.1"),
        ]);
        assert_eq!(
            own_addresses.annotations()[ADDRESSES_ANNOTATION],
            "mngt=10.0.0.8,port=10.0.0.8,rep=10.0.0.1"
        );
        assert_eq!(
            in_the_way(&seven, &mine, [&own_addresses]),
            None,
            "another role's address is no clash"
        );
        let sharing = made(&[
            (AddressRole::Management, "10.0.0.8"),
            (AddressRole::Port, "10.0.0.1"),
        ]);
        assert_eq!(
            in_the_way(&seven, &mine, [&sharing]),
            Some(ForeignPfs {
                pod: "pf/eight-pfs".into(),
                terminating: false,
                device: None,
                address: Some((AddressRole::Port, "10.0.0.1".into())),
            })
        );
        // On another node, or made before Pods carried their addresses: not told here.
        let mut elsewhere = sharing.clone();
        elsewhere.spec.as_mut().unwrap().node_name = Some("n2".into());
        assert_eq!(in_the_way(&seven, &mine, [&elsewhere]), None);
        let unannotated = pod(&other, "h", Predecessor::NoSession);
        assert_eq!(in_the_way(&seven, &mine, [&unannotated]), None);
    }

    #[test]
    fn a_pod_serving_one_of_the_stores_disks_is_in_the_way_of_its_new_pod() {
        let spec = |id: u32, node: &str, device: &str| json!({"storeId": id, "nodeName": node, "trays": [{"device": "/dev/sdc"}, {"device": device}]});
        let seven = store(spec(7, "n1", "/dev/sdb"));
        let named = |spec, name: &str| {
            let mut other = store(spec);
            other.metadata.name = Some(name.into());
            other.metadata.uid = Some(format!("uid-{name}"));
            pod(&other, "h", Predecessor::NoSession)
        };
        let on_sdb = named(spec(8, "n1", "/dev/sdb"), "eight");
        let in_the_way_of = |pods: &[&Pod]| in_the_way(&seven, &[], pods.iter().copied());
        assert_eq!(
            in_the_way_of(&[&on_sdb]),
            Some(ForeignPfs {
                pod: "pf/eight-pfs".into(),
                terminating: false,
                device: Some("/dev/sdc".into()),
                address: None,
            })
        );
        // Another node's disks are its own, whatever their names.
        assert_eq!(
            in_the_way_of(&[&named(spec(8, "n2", "/dev/sdb"), "eight")]),
            None
        );
        // A pfs that ended for good serves nothing; one on its way out still does.
        let mut ended = on_sdb.clone();
        ended.status = Some(k8s_openapi::api::core::v1::PodStatus {
            phase: Some("Failed".into()),
            ..Default::default()
        });
        assert_eq!(in_the_way_of(&[&ended]), None);
        let mut leaving = on_sdb.clone();
        leaving.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
        );
        assert!(in_the_way_of(&[&leaving]).is_some_and(|found| found.terminating));
        // Its own Pod (by name, or by owner) is not in its way; no overlap, nothing in the way.
        let own = pod(&seven, "h", Predecessor::NoSession);
        let mut own_renamed = own.clone();
        own_renamed.metadata.name = Some("renamed-pfs".into());
        assert_eq!(in_the_way_of(&[&own, &own_renamed]), None);
        let elsewhere = named(
            json!({"storeId": 8, "nodeName": "n1", "trays": [{"device": "/dev/sdd"}]}),
            "eight",
        );
        assert_eq!(in_the_way_of(&[&elsewhere]), None);
        // One running pfs for the store's id is in its way wherever it runs.
        let same_id = named(
            json!({"storeId": 7, "nodeName": "n2", "trays": [{"device": "/dev/sdd"}]}),
            "old",
        );
        assert_eq!(
            in_the_way_of(&[&elsewhere, &same_id]).map(|found| (found.pod, found.device)),
            Some(("pf/old-pfs".into(), None))
        );
    }

    #[test]
    fn a_pod_made_for_another_node_or_id_is_told() {
        let spec = json!({"storeId": 7, "nodeName": "n1", "trays": [{"device": "/dev/sdb"}]});
        let store = store(spec.clone());
        let made = pod(&store, "h", Predecessor::NoSession);
        assert_eq!(identity_changed(&store, &made), None);
        // Not scheduled yet (no nodeName), or made before the label: nothing to tell.
        assert_eq!(identity_changed(&store, &Pod::default()), None);
        // Left by an earlier store of the name (another uid), or on its way out.
        let moved_spec = json!({"storeId": 7, "nodeName": "n2", "trays": [{"device": "/dev/sdb"}]});
        let mut successor = self::store(moved_spec.clone());
        successor.metadata.uid = Some("uid-other".into());
        assert_eq!(identity_changed(&successor, &made), None);
        let mut leaving = made.clone();
        leaving.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
        );
        assert_eq!(identity_changed(&self::store(moved_spec), &leaving), None);
        // Without an owner (orphaned), it still counts: it would be adopted.
        let mut orphan = made.clone();
        orphan.metadata.owner_references = None;
        assert!(identity_changed(&successor, &orphan).is_some());

        let mut moved = spec.clone();
        moved["nodeName"] = json!("n2");
        let error = identity_changed(&self::store(moved), &made).unwrap();
        assert_eq!(
            error,
            RenderError::IdentityChanged {
                field: "nodeName",
                spec: "n2".into(),
                running: "node n1".into(),
            }
        );
        assert!(error.to_string().starts_with(
            "spec.nodeName is n2 but the store's pod was made for node n1: a store's node and id never change"
        ));

        let mut renumbered = spec;
        renumbered["storeId"] = json!(8);
        let error = identity_changed(&self::store(renumbered), &made).unwrap();
        assert!(
            error
                .to_string()
                .starts_with("spec.storeId is 8 but the store's pod was made for store id 7"),
            "{error}"
        );
    }

    /// The schema's limits keep the largest pfs.conf within the 1 MiB a ConfigMap may hold.
    #[test]
    fn the_largest_spec_the_schema_admits_makes_a_config_map_the_api_accepts() {
        use kube::CustomResourceExt;
        let crd = serde_json::to_value(PureFlashStore::crd()).unwrap();
        let settings_schema = crd
            .pointer("/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/settings")
            .unwrap();
        let limit = |pointer: &str| settings_schema.pointer(pointer).unwrap().as_u64().unwrap();
        let (sections, keys, value_length) = (
            limit("/maxProperties"),
            limit("/additionalProperties/maxProperties"),
            limit("/additionalProperties/additionalProperties/maxLength"),
        );
        let value = "v".repeat(value_length as usize);
        let settings: serde_json::Map<String, serde_json::Value> = (0..sections)
            .map(|section| {
                let keys: serde_json::Map<String, serde_json::Value> = (0..keys)
                    .map(|key| (format!("{key:0>64}"), json!(value)))
                    .collect();
                (format!("section{section:0>57}"), json!(keys))
            })
            .collect();
        let spec_schema = crd
            .pointer("/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties")
            .unwrap();
        let max_items = |field: &str| spec_schema[field]["maxItems"].as_u64().unwrap() as usize;
        assert_eq!(max_items("trays"), MAX_TRAYS);
        assert_eq!(
            (max_items("ports"), max_items("repPorts")),
            (MAX_PORTS, MAX_PORTS)
        );
        let trays: Vec<_> = (0..MAX_TRAYS)
            .map(|n| json!({"device": format!("/dev/{n:0>91}")}))
            .collect();
        let ips: Vec<_> = (0..MAX_PORTS).map(|n| format!("255.255.255.{n}")).collect();
        let largest = store(json!({
            "storeId": 2147483647, "nodeName": "n".repeat(253), "mngtIp": "255.255.255.255",
            "trays": trays, "ports": ips, "repPorts": ips, "settings": settings,
        }));
        let conf = pfs_conf(&largest, &env()).unwrap();
        let map = config_map(&largest, &conf);
        let size: usize = map
            .data
            .iter()
            .flatten()
            .map(|(key, value)| key.len() + value.len())
            .sum();
        assert!(size < 1024 * 1024, "{size} bytes");
    }

    #[test]
    fn pfs_conf_is_what_pfs_reads_in_a_fixed_order() {
        let store = store(json!({
            "storeId": 7, "nodeName": "node-a",
            "trays": [{"device": "/dev/nvme0n1"}, {"device": "/dev/nvme1n1"}],
            "repPorts": ["10.2.0.7"],
            "settings": {"engine": {"name": "aio"}, "afs": {"meta_size": "10737418240"}, "replicator": {"conn_type": "tcp"}},
        }));
        assert_eq!(
            pfs_conf(&store, &env()).unwrap(),
            "# Generated by pureflash-operator for PureFlashStore pf/store-7; do not edit.\n\
             [cluster]\nname=cluster1\n[zookeeper]\nip=zk-0:2181,zk-1:2181\n\
             [afs]\nmngt_ip=192.168.1.7\nid=7\nmeta_size=10737418240\n\
             [tray.0]\ndev=/dev/nvme0n1\n[tray.1]\ndev=/dev/nvme1n1\n\
             [port.0]\nip=192.168.1.7\n[rep_port.0]\nip=10.2.0.7\n\
             [engine]\nname=aio\n[replicator]\nconn_type=tcp\n"
        );
    }

    #[test]
    fn more_trays_or_ports_than_pfs_reads_are_refused() {
        let devices = |n: usize| -> Vec<serde_json::Value> {
            (0..n)
                .map(|i| json!({"device": format!("/dev/sd{i}")}))
                .collect()
        };
        let ips = |n: usize| -> Vec<String> { (0..n).map(|i| format!("10.0.0.{i}")).collect() };
        let at_most = store(
            json!({"storeId": 7, "nodeName": "n", "trays": devices(MAX_TRAYS),
            "ports": ips(MAX_PORTS), "repPorts": ips(MAX_PORTS)}),
        );
        assert!(pfs_conf(&at_most, &env()).is_ok());
        for (spec, field) in [
            (
                json!({"storeId": 7, "nodeName": "n", "trays": devices(MAX_TRAYS + 1)}),
                "trays",
            ),
            (
                json!({"storeId": 7, "nodeName": "n", "trays": devices(1), "ports": ips(MAX_PORTS + 1)}),
                "ports",
            ),
            (
                json!({"storeId": 7, "nodeName": "n", "trays": devices(1), "repPorts": ips(MAX_PORTS + 1)}),
                "repPorts",
            ),
        ] {
            assert!(
                matches!(pfs_conf(&store(spec), &env()), Err(RenderError::TooMany { field: f, .. }) if f == field),
                "{field}"
            );
        }
    }

    #[test]
    fn a_setting_that_would_add_lines_of_its_own_is_refused() {
        for settings in [
            json!({"engine": {"name": "aio\n[afs]\nid=7"}}),
            json!({"engine": {"name": "aio\rid=7"}}),
            // A trailing backslash would join the next section's header onto the value.
            json!({"afs": {"meta_size": "10\\"}}),
            json!({"engine": {"name": "aio # comment"}}),
            json!({"engine": {"name": "aio;x"}}),
            json!({"engine": {"name": "\"aio"}}),
            json!({"engine": {"na=me": "aio"}}),
            json!({"eng]ine": {"name": "aio"}}),
            json!({"engine": {"": "aio"}}),
            json!({"engine": {"name": "a\u{0}io"}}),
            json!({"engine": {"name": "a\tio"}}),
            json!({"engine": {"name": "aio\u{FFFF}"}}),
        ] {
            let store = store(
                json!({"storeId": 7, "nodeName": "n", "trays": [{"device": "/dev/sda"}], "settings": settings.clone()}),
            );
            assert!(
                matches!(
                    pfs_conf(&store, &env()),
                    Err(RenderError::UnwritableSetting { .. })
                ),
                "{settings}"
            );
        }
        let fine = store(
            json!({"storeId": 7, "nodeName": "n", "trays": [{"device": "/dev/sda"}], "settings": {"replicator": {"conn_type": "rdma", "max.io-depth_2": "x = y, z/w:1"}}}),
        );
        assert!(pfs_conf(&fine, &env()).is_ok());
    }

    #[test]
    fn a_pod_asks_no_more_than_another_when_no_resource_total_grows() {
        let pod = |requests: serde_json::Value, limits: serde_json::Value| -> Pod {
            serde_json::from_value(json!({"spec": {"containers": [
                {"name": "pfs", "resources": {"requests": requests, "limits": limits}},
                {"name": "side", "resources": {"requests": {"cpu": "100m"}}},
            ]}}))
            .unwrap()
        };
        let running = pod(
            json!({"cpu": "1", "memory": "4Gi"}),
            json!({"memory": "4Gi"}),
        );
        let same_in_other_units = pod(
            json!({"cpu": "1000m", "memory": "4096Mi"}),
            json!({"memory": "4Gi"}),
        );
        assert!(asks_no_more_than(&same_in_other_units, &running));
        let smaller = pod(
            json!({"cpu": "500m", "memory": "1Gi"}),
            json!({"memory": "2Gi"}),
        );
        assert!(asks_no_more_than(&smaller, &running));
        let more_memory = pod(
            json!({"cpu": "1", "memory": "8Gi"}),
            json!({"memory": "4Gi"}),
        );
        assert!(!asks_no_more_than(&more_memory, &running));
        let a_new_limit = pod(
            json!({"cpu": "1", "memory": "4Gi"}),
            json!({"memory": "4Gi", "cpu": "1"}),
        );
        assert!(!asks_no_more_than(&a_new_limit, &running));
        let unreadable = pod(json!({"cpu": "lots"}), json!({}));
        assert!(!asks_no_more_than(&unreadable, &running));
        // A request left unset is its limit once admitted.
        let limits_only = pod(json!({"cpu": "1"}), json!({"memory": "8Gi"}));
        assert!(!asks_no_more_than(&limits_only, &running));
        let within = pod(json!({"cpu": "1"}), json!({"memory": "4Gi"}));
        assert!(asks_no_more_than(&within, &running));
        // What the running Pod was given that the new one does not name (a LimitRange's
        // default, which may be higher now) is not known to fit.
        let without_memory = pod(json!({"cpu": "1"}), json!({}));
        assert!(!asks_no_more_than(&without_memory, &running));
        // An init container counts if it asks for more than the containers together.
        let mut with_init = within.clone();
        with_init.spec.as_mut().unwrap().init_containers = Some(vec![
            serde_json::from_value(
                json!({"name": "init", "resources": {"requests": {"cpu": "2"}}}),
            )
            .unwrap(),
        ]);
        assert!(!asks_no_more_than(&with_init, &running));
    }

    /// The CRD's patterns keep these out; a store applied under an older CRD may not have been.
    #[test]
    fn a_device_or_address_that_would_add_lines_of_its_own_is_refused() {
        for (spec, field) in [
            (
                json!({"storeId": 7, "nodeName": "n", "trays": [{"device": "/dev/sdb\n[afs]\nid=9"}]}),
                "trays[].device",
            ),
            (
                json!({"storeId": 7, "nodeName": "n", "trays": [{"device": "/dev/sdb"}], "mngtIp": "10.0.0.1;x"}),
                "mngtIp",
            ),
            (
                json!({"storeId": 7, "nodeName": "n", "trays": [{"device": "/dev/sdb"}], "ports": ["10.0.0.1#"]}),
                "ports[]",
            ),
            (
                json!({"storeId": 7, "nodeName": "n", "trays": [{"device": "/dev/sdb"}], "repPorts": ["10.0.0.1\r"]}),
                "repPorts[]",
            ),
        ] {
            assert!(
                matches!(
                    pfs_conf(&store(spec.clone()), &env()),
                    Err(RenderError::UnwritableValue { field: f, .. }) if f == field
                ),
                "{spec}"
            );
        }
    }

    #[test]
    fn a_setting_the_operator_writes_itself_is_refused() {
        for settings in [
            json!({"afs": {"id": "9"}}),
            json!({"afs": {"mngt_ip": "10.0.0.9"}}),
            json!({"cluster": {"name": "other"}}),
            json!({"zookeeper": {"ip": "zk-other:2181"}}),
            json!({"tray.0": {"dev": "/dev/sdz"}}),
            json!({"port.1": {"ip": "10.0.0.9"}}),
            json!({"rep_port.0": {"ip": "10.0.0.9"}}),
        ] {
            let store = store(
                json!({"storeId": 7, "nodeName": "n", "trays": [{"device": "/dev/sda"}], "settings": settings.clone()}),
            );
            assert!(
                matches!(
                    pfs_conf(&store, &env()),
                    Err(RenderError::ReservedSetting { .. })
                ),
                "{settings}"
            );
        }
        // Other keys of those sections' neighbours are the user's.
        let fine = store(
            json!({"storeId": 7, "nodeName": "n", "trays": [{"device": "/dev/sda"}], "settings": {"afs": {"meta_size": "1G"}, "trays": {"x": "1"}, "portal": {"y": "2"}}}),
        );
        assert!(pfs_conf(&fine, &env()).is_ok());
    }

    #[test]
    fn addresses_need_the_node_ip_unless_given() {
        let given = store(
            json!({"storeId": 1, "nodeName": "n", "trays": [{"device": "/dev/sdb"}], "mngtIp": "10.0.0.1", "ports": ["10.0.1.1"], "repPorts": ["10.0.2.1"]}),
        );
        let no_node = Environment {
            node_ip: None,
            ..env()
        };
        assert!(
            pfs_conf(&given, &no_node)
                .unwrap()
                .contains("mngt_ip=10.0.0.1")
        );
        let defaulted =
            store(json!({"storeId": 1, "nodeName": "n", "trays": [{"device": "/dev/sdb"}]}));
        assert_eq!(
            pfs_conf(&defaulted, &no_node),
            Err(RenderError::NoNodeAddress { node: "n".into() })
        );
    }

    #[test]
    fn the_hash_changes_with_what_pfs_runs_on_and_nothing_else() {
        let a = store(json!({"storeId": 1, "nodeName": "n", "trays": [{"device": "/dev/sdb"}]}));
        let conf = pfs_conf(&a, &env()).unwrap();
        let hash = config_hash(&a, &conf);
        assert_eq!(hash.len(), 16);
        assert_eq!(
            hash,
            config_hash(&a.clone(), &pfs_conf(&a, &env()).unwrap()),
            "byte-stable"
        );
        let mut recovery_changed = a.clone();
        recovery_changed.spec.recovery.offline_grace_period_seconds = 99;
        assert_eq!(
            config_hash(&recovery_changed, &conf),
            hash,
            "recovery settings do not roll the pod"
        );
        let mut image_changed = a.clone();
        image_changed.spec.image = "pureflash/pureflash:2".into();
        assert_ne!(config_hash(&image_changed, &conf), hash);
        let mut tray_added = a.clone();
        tray_added
            .spec
            .trays
            .push(serde_json::from_value(json!({"device": "/dev/sdc"})).unwrap());
        assert_ne!(
            config_hash(&tray_added, &pfs_conf(&tray_added, &env()).unwrap()),
            hash
        );
        let mut prioritized = a.clone();
        prioritized.spec.priority_class_name = Some("system-node-critical".into());
        assert_ne!(config_hash(&prioritized, &conf), hash);
        let mut tolerant = a.clone();
        tolerant.spec.tolerations =
            vec![serde_json::from_value(json!({"key": "storage", "operator": "Exists"})).unwrap()];
        assert_ne!(config_hash(&tolerant, &conf), hash);
        // Pinned: an operator upgrade that changed it would roll every store's Pod.
        assert_eq!(hash, "364fc0435034113e");
    }

    #[test]
    fn the_pod_takes_the_specs_priority_class_and_extra_tolerations() {
        let store = store(json!({
            "storeId": 7, "nodeName": "node-a", "trays": [{"device": "/dev/sdb"}],
            "priorityClassName": "system-node-critical",
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "storage", "effect": "NoExecute"}],
        }));
        let pod = serde_json::to_value(pod(&store, "abc", Predecessor::NoSession)).unwrap();
        assert_eq!(pod["spec"]["priorityClassName"], "system-node-critical");
        let keys: Vec<&str> = pod["spec"]["tolerations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["key"].as_str().unwrap())
            .collect();
        assert_eq!(
            keys,
            [
                "node.kubernetes.io/not-ready",
                "node.kubernetes.io/unreachable",
                "dedicated"
            ]
        );
        assert_eq!(pod["spec"]["tolerations"][2]["value"], "storage");
    }

    #[test]
    fn a_pod_without_a_controller_is_adopted_and_one_with_a_controller_is_not() {
        let store =
            store(json!({"storeId": 7, "nodeName": "node-a", "trays": [{"device": "/dev/sdb"}]}));
        let with_owners = |owners: serde_json::Value| -> Pod {
            serde_json::from_value(json!({
                "metadata": {"name": "store-7-pfs", "ownerReferences": owners},
            }))
            .unwrap()
        };
        let reference = |uid: &str, controller: Option<bool>| json!({"apiVersion": "v1", "kind": "Thing", "name": "t", "uid": uid, "controller": controller});
        let uids = |owners: Vec<OwnerReference>| -> Vec<(String, Option<bool>)> {
            owners.into_iter().map(|o| (o.uid, o.controller)).collect()
        };

        let orphan = adoption(&with_owners(json!([])), &store).expect("adopted");
        assert_eq!(uids(orphan.clone()), [("uid-7".to_owned(), Some(true))]);
        assert_eq!(orphan[0].kind, "PureFlashStore");
        assert_eq!(orphan[0].block_owner_deletion, Some(true));
        // Other owners stay; the store's own reference without controller is made one.
        let shared = with_owners(json!([reference("other", None), reference("uid-7", None)]));
        assert_eq!(
            uids(adoption(&shared, &store).expect("adopted")),
            [("other".to_owned(), None), ("uid-7".to_owned(), Some(true))]
        );
        // Owned already, or controlled by something else: nothing to write.
        let owned = with_owners(serde_json::to_value(&orphan).unwrap());
        assert_eq!(adoption(&owned, &store), None);
        let foreign = with_owners(json!([reference("earlier-store", Some(true))]));
        assert_eq!(adoption(&foreign, &store), None);
    }

    #[test]
    fn the_pod_runs_pfs_on_its_node_with_its_conf() {
        let store = store(
            json!({"storeId": 7, "nodeName": "node-a", "trays": [{"device": "/dev/sdb"}, {"device": "/dev/sdc"}], "resources": {"limits": {"memory": "4Gi"}}}),
        );
        let pod = serde_json::to_value(pod(&store, "abc", Predecessor::Session(-2))).unwrap();
        assert_eq!(
            pod["metadata"]["annotations"][DEVICES_ANNOTATION],
            "/dev/sdb,/dev/sdc"
        );
        assert_eq!(pod["metadata"]["name"], "store-7-pfs");
        assert_eq!(pod["metadata"]["labels"][STORE_ID_LABEL], "7");
        assert_eq!(
            pod["metadata"]["annotations"][CONFIG_HASH_ANNOTATION],
            "abc"
        );
        assert_eq!(
            pod["metadata"]["annotations"][PREDECESSOR_ANNOTATION],
            "0xfffffffffffffffe"
        );
        assert_eq!(pod["metadata"]["ownerReferences"][0]["uid"], "uid-7");
        assert_eq!(pod["metadata"]["ownerReferences"][0]["controller"], true);
        assert_eq!(pod["spec"]["nodeName"], "node-a");
        assert_eq!(pod["spec"]["hostNetwork"], true);
        assert_eq!(pod["spec"]["automountServiceAccountToken"], false);
        let container = &pod["spec"]["containers"][0];
        assert_eq!(
            container["command"],
            json!(["/opt/pureflash/pfs", "-c", "/etc/pureflash/pfs.conf"])
        );
        assert_eq!(container["securityContext"]["privileged"], true);
        assert_eq!(container["resources"]["limits"]["memory"], "4Gi");
        assert_eq!(
            pod["spec"]["volumes"][0]["configMap"]["name"],
            "store-7-pfs-conf"
        );
        // A silent node does not get its store's only possible Pod evicted.
        let tolerated: Vec<(&str, &str)> = pod["spec"]["tolerations"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["operator"] == "Exists" && t.get("tolerationSeconds").is_none())
            .map(|t| (t["key"].as_str().unwrap(), t["effect"].as_str().unwrap()))
            .collect();
        assert_eq!(
            tolerated,
            [
                ("node.kubernetes.io/not-ready", "NoExecute"),
                ("node.kubernetes.io/unreachable", "NoExecute")
            ]
        );
        // Ready only while the store serves.
        assert_eq!(
            pod["spec"]["readinessGates"],
            json!([{"conditionType": "pureflash.io/serving"}])
        );
        let cm = serde_json::to_value(config_map(&store, "x")).unwrap();
        assert_eq!(cm["data"]["pfs.conf"], "x");
    }

    #[test]
    fn only_the_gate_and_its_ready_echo_leave_a_pod_the_same_to_its_store() {
        let store =
            store(json!({"storeId": 7, "nodeName": "n", "trays": [{"device": "/dev/sdb"}]}));
        let mut before = pod(&store, "abc", Predecessor::NoSession);
        before.status = Some(
            serde_json::from_value(json!({"phase": "Running", "conditions": [
                {"type": "ContainersReady", "status": "True"},
                {"type": "Ready", "status": "False"},
            ]}))
            .unwrap(),
        );
        let mut gated = before.clone();
        gated.metadata.resource_version = Some("42".into());
        gated.status.as_mut().unwrap().conditions = Some(
            serde_json::from_value(json!([
                {"type": "ContainersReady", "status": "True"},
                {"type": "Ready", "status": "True"},
                {"type": SERVING_GATE, "status": "True"},
            ]))
            .unwrap(),
        );
        assert_eq!(wake_fingerprint(&before), wake_fingerprint(&gated));
        let mut crashed = gated.clone();
        crashed
            .status
            .as_mut()
            .unwrap()
            .conditions
            .as_mut()
            .unwrap()[0]
            .status = "False".into();
        assert_ne!(wake_fingerprint(&gated), wake_fingerprint(&crashed));
        let mut going = gated.clone();
        going.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at("2026-12-07T10:00:00Z")),
        );
        assert_ne!(wake_fingerprint(&gated), wake_fingerprint(&going));
    }

    #[test]
    fn the_serving_gate_is_written_only_when_it_changes() {
        let store =
            store(json!({"storeId": 7, "nodeName": "n", "trays": [{"device": "/dev/sdb"}]}));
        let mut new_pod = pod(&store, "abc", Predecessor::NoSession);
        new_pod.metadata.uid = Some("pod-uid".into());
        let now = at("2026-12-07T10:00:00Z");
        // Not written yet counts as not serving: a new Pod costs no write until it serves.
        assert_eq!(serving_patch(&new_pod, false, now), None);
        let patch = serving_patch(&new_pod, true, now).expect("marked serving");
        assert_eq!(patch["metadata"]["uid"], "pod-uid", "a precondition");
        let condition = &patch["status"]["conditions"][0];
        assert_eq!(condition["type"], SERVING_GATE);
        assert_eq!(condition["status"], "True");
        assert_eq!(condition["lastTransitionTime"], "2026-12-07T10:00:00Z");
        let mut serving = new_pod.clone();
        serving.status = Some(
            serde_json::from_value(json!({"conditions": [
                {"type": "Ready", "status": "True"},
                {"type": SERVING_GATE, "status": "True"},
            ]}))
            .unwrap(),
        );
        assert_eq!(serving_patch(&serving, true, now), None);
        let stopped = serving_patch(&serving, false, now).expect("marked not serving");
        assert_eq!(stopped["status"]["conditions"][0]["status"], "False");
        assert_eq!(
            stopped["status"]["conditions"].as_array().map(Vec::len),
            Some(1),
            "only its own condition: the kubelet's are merged by type, not replaced"
        );
        // A Pod made before the gate existed: its Ready does not wait for the condition.
        let mut ungated = serving.clone();
        ungated.spec.as_mut().unwrap().readiness_gates = None;
        assert_eq!(serving_patch(&ungated, false, now), None);
    }

    #[test]
    fn a_node_is_ready_only_while_its_ready_condition_is_true() {
        let node = |conditions: serde_json::Value| -> Node {
            serde_json::from_value(
                json!({"metadata": {"name": "n"}, "status": {"conditions": conditions}}),
            )
            .unwrap()
        };
        let ready = |status: &str| {
            node(json!([
                {"type": "MemoryPressure", "status": "False"},
                {"type": "Ready", "status": status},
            ]))
        };
        let now = at("2026-12-05T10:00:00Z");
        let health = |node: Option<&Node>| node_health(node, None, None, now).0;
        assert_eq!(health(Some(&ready("True"))), NodeHealth::Ready);
        assert_eq!(health(Some(&ready("False"))), NodeHealth::NotReady);
        // What the node lifecycle controller sets when the kubelet stops reporting.
        assert_eq!(health(Some(&ready("Unknown"))), NodeHealth::NotReady);
        assert_eq!(health(None), NodeHealth::NotReady);
        let no_ready = node(json!([{"type": "MemoryPressure", "status": "False"}]));
        assert_eq!(health(Some(&no_ready)), NodeHealth::Unknown);
        let no_status: Node = serde_json::from_value(json!({"metadata": {"name": "n"}})).unwrap();
        assert_eq!(health(Some(&no_status)), NodeHealth::Unknown);
    }

    fn ready_node(status: &str) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": "n"},
            "status": {"conditions": [{"type": "Ready", "status": status}]},
        }))
        .unwrap()
    }

    fn lease(renewed: &str, seconds: i32) -> Lease {
        serde_json::from_value(json!({
            "metadata": {"name": "n", "namespace": NODE_LEASE_NAMESPACE},
            "spec": {"holderIdentity": "n", "leaseDurationSeconds": seconds, "renewTime": renewed},
        }))
        .unwrap()
    }

    fn at(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn a_kubelet_is_out_of_contact_when_its_node_is_gone_or_marked_unknown() {
        assert!(!node_out_of_contact(Some(&ready_node("True"))));
        // Not ready, but reporting it: a delete reaches it.
        assert!(!node_out_of_contact(Some(&ready_node("False"))));
        assert!(node_out_of_contact(Some(&ready_node("Unknown"))));
        assert!(node_out_of_contact(None));
        let no_status: Node = serde_json::from_value(json!({"metadata": {"name": "n"}})).unwrap();
        assert!(!node_out_of_contact(Some(&no_status)));
    }

    #[test]
    fn a_kubelet_silent_since_the_store_went_offline_is_out_of_contact_before_the_node_says_so() {
        let node = ready_node("True");
        // Read just after the store went offline: the node's clock is an hour behind.
        let sighting = LeaseSighting::of(
            Some(&lease("2026-12-05T08:59:55.000000Z", 40)),
            at("2026-12-05T10:00:01Z"),
        );
        let health = |renewed: &str, now: &str| {
            node_health(
                Some(&node),
                Some(&lease(renewed, 40)),
                Some(&sighting),
                at(now),
            )
        };
        // Renewed since: in contact, whatever the clocks say.
        assert_eq!(
            health("2026-12-05T09:00:05.000000Z", "2026-12-05T10:00:30Z"),
            (NodeHealth::Ready, None)
        );
        // Not renewed since: still Ready (the node lifecycle controller has not noticed), but
        // unconfirmed for the Lease's duration after the sighting, out of contact from then on.
        assert_eq!(
            health("2026-12-05T08:59:55.000000Z", "2026-12-05T10:00:30Z"),
            (
                NodeHealth::Unconfirmed {
                    silent_at: at("2026-12-05T10:00:41Z")
                },
                None
            )
        );
        assert_eq!(
            health("2026-12-05T08:59:55.000000Z", "2026-12-05T10:05:00Z"),
            (NodeHealth::NotReady, None)
        );
        // A node that reads not Ready is out of contact at once, renewed or not.
        assert_eq!(
            node_health(
                Some(&ready_node("Unknown")),
                Some(&lease("2026-12-05T09:00:05.000000Z", 40)),
                Some(&sighting),
                at("2026-12-05T10:00:30Z")
            )
            .0,
            NodeHealth::NotReady
        );
        // No Lease now: the Ready condition alone decides. A Lease appearing is a renewal.
        assert_eq!(
            node_health(
                Some(&node),
                None,
                Some(&sighting),
                at("2026-12-05T10:00:30Z")
            )
            .0,
            NodeHealth::Ready
        );
        let before_any_lease = LeaseSighting::of(None, at("2026-12-05T10:00:01Z"));
        assert_eq!(
            node_health(
                Some(&node),
                Some(&lease("2026-12-05T08:59:55.000000Z", 40)),
                Some(&before_any_lease),
                at("2026-12-05T10:00:02Z")
            )
            .0,
            NodeHealth::Ready
        );
    }

    #[test]
    fn without_a_sighting_or_with_an_old_one_the_next_renewal_is_waited_for() {
        let node = ready_node("True");
        let now = at("2026-12-05T10:10:00Z");
        let current = lease("2026-12-05T10:09:55.000000Z", 40);
        let taken_now = LeaseSighting::of(Some(&current), now);
        let unconfirmed = (
            NodeHealth::Unconfirmed {
                silent_at: at("2026-12-05T10:10:40Z"),
            },
            Some(taken_now.clone()),
        );
        // A new leader has none: this read is the sighting.
        assert_eq!(
            node_health(Some(&node), Some(&current), None, now),
            unconfirmed
        );
        // One taken minutes ago (the store was held meanwhile): the renewal seen since may be
        // old, and the node silent since; it is taken again.
        let old = LeaseSighting::of(
            Some(&lease("2026-12-05T10:00:00.000000Z", 40)),
            at("2026-12-05T10:00:01Z"),
        );
        assert_eq!(
            node_health(Some(&node), Some(&current), Some(&old), now),
            unconfirmed
        );
        // The next renewal, then, is contact.
        assert_eq!(
            node_health(
                Some(&node),
                Some(&lease("2026-12-05T10:10:05.000000Z", 40)),
                Some(&taken_now),
                at("2026-12-05T10:10:06Z")
            ),
            (NodeHealth::Ready, None)
        );
        // No Lease and no sighting: nothing to wait for.
        assert_eq!(
            node_health(Some(&node), None, None, now),
            (NodeHealth::Ready, None)
        );
    }

    #[test]
    fn a_lease_without_a_duration_holds_for_the_kubelets_default() {
        let node = ready_node("True");
        let lease = lease("2026-12-05T10:00:00.000000Z", 0);
        let read_at = at("2026-12-05T10:00:00Z");
        let sighting = LeaseSighting::of(Some(&lease), read_at);
        let health = |secs: i64| {
            node_health(
                Some(&node),
                Some(&lease),
                Some(&sighting),
                read_at + jiff::SignedDuration::from_secs(secs),
            )
            .0
        };
        assert_eq!(
            health(39),
            NodeHealth::Unconfirmed {
                silent_at: read_at + jiff::SignedDuration::from_secs(40)
            }
        );
        assert_eq!(health(40), NodeHealth::NotReady);
    }

    #[test]
    fn the_predecessor_session_survives_the_annotation() {
        for predecessor in [
            Predecessor::NoSession,
            Predecessor::Session(0x1000_0a3f_5c00_0002),
            Predecessor::Session(i64::MIN),
            Predecessor::Session(-1),
        ] {
            let value = predecessor_annotation(predecessor);
            assert_eq!(
                parse_predecessor(value.as_deref()),
                predecessor,
                "{value:?}"
            );
        }
        assert_eq!(predecessor_annotation(Predecessor::Unknown), None);
        for unreadable in [
            None,
            Some(""),
            Some("0x"),
            Some("12"),
            Some("0xzz"),
            Some("0x1ffffffffffffffff"),
        ] {
            assert_eq!(
                parse_predecessor(unreadable),
                Predecessor::Unknown,
                "{unreadable:?}"
            );
        }
        let store =
            store(json!({"storeId": 7, "nodeName": "n", "trays": [{"device": "/dev/sda"}]}));
        let unknown = pod(&store, "abc", Predecessor::Unknown);
        assert!(!unknown.annotations().contains_key(PREDECESSOR_ANNOTATION));
    }

    #[test]
    fn a_config_map_holding_what_the_operator_sets_needs_no_write() {
        let store =
            store(json!({"storeId": 7, "nodeName": "n", "trays": [{"device": "/dev/sda"}]}));
        let desired = config_map(&store, "conf");
        assert!(config_map_up_to_date(&desired, &desired));

        // What others add survives an apply anyway.
        let mut extended = desired.clone();
        extended
            .labels_mut()
            .insert("team".into(), "storage".into());
        extended
            .data
            .get_or_insert_default()
            .insert("notes".into(), "x".into());
        assert!(config_map_up_to_date(&extended, &desired));
    }

    #[test]
    fn a_config_map_missing_anything_the_operator_sets_is_written() {
        let store =
            store(json!({"storeId": 7, "nodeName": "n", "trays": [{"device": "/dev/sda"}]}));
        let desired = config_map(&store, "conf");
        type Change = fn(&mut ConfigMap);
        let variants: [(&str, Change); 7] = [
            ("other conf", |cm| {
                cm.data
                    .get_or_insert_default()
                    .insert(CONF_FILE.into(), "edited".into());
            }),
            ("no data", |cm| cm.data = None),
            ("label changed", |cm| {
                cm.labels_mut().insert(STORE_ID_LABEL.into(), "8".into());
            }),
            ("label missing", |cm| {
                cm.labels_mut().remove("app.kubernetes.io/managed-by");
            }),
            ("no owner", |cm| cm.metadata.owner_references = None),
            ("owner not controller", |cm| {
                for owner in cm.owner_references_mut() {
                    owner.controller = None;
                }
            }),
            ("being deleted", |cm| {
                cm.metadata.deletion_timestamp =
                    Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                        jiff::Timestamp::UNIX_EPOCH,
                    ));
            }),
        ];
        for (what, change) in variants {
            let mut existing = desired.clone();
            change(&mut existing);
            assert!(!config_map_up_to_date(&existing, &desired), "{what}");
        }
    }
}
