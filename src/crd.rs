//! The `PureFlashStore` custom resource: one store (`pfs` daemon), its disks, its identity in
//! ZooKeeper, how it is run and how it is recovered. The types here generate the CRD
//! (`pureflash-operator crd` > `crds/pureflashstore.yaml`); every field's doc comment becomes
//! its schema description, and validation lives in the schema (types, ranges, patterns) and in
//! CEL rules, so the API server rejects bad specs before the operator sees them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// Default pfs image (PureFlash's published image).
pub const DEFAULT_IMAGE: &str = "pureflash/pureflash:1.9.1";

/// An IPv4 address (the metadata DB's port column holds 16 characters).
const IPV4: &str = r"^((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])$";
/// A DNS subdomain, as the API server requires of `pod.spec.nodeName` and
/// `pod.spec.priorityClassName`.
const DNS_SUBDOMAIN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// A device path below `/dev`: segments of the characters udev's stable names use (`:` in
/// by-path names, `+` and `@` in some by-id ones), none of them empty, `.` or `..`.
const DEVICE: &str =
    r"^/dev(/([A-Za-z0-9_:+@-]|\.[A-Za-z0-9_:+@-]|\.\.[A-Za-z0-9._:+@-])[A-Za-z0-9._:+@-]*)+$";

/// A pfs.conf setting's value: one line pfs reads as written (see `settings`). The inner
/// class leaves out control characters, `\`, `#`, `;`, `"` and U+FFFE/U+FFFF; the first and
/// last characters are no spaces either.
const SETTING_VALUE: &str = concat!(
    r#"^(?:[^ \x00-\x1f\x7f\\#;"\x{FFFE}\x{FFFF}]"#,
    r#"(?:[^\x00-\x1f\x7f\\#;"\x{FFFE}\x{FFFF}]*[^ \x00-\x1f\x7f\\#;"\x{FFFE}\x{FFFF}])?)?$"#,
);

/// A toleration's key: empty (every key), or a Kubernetes qualified name: an optional DNS
/// subdomain prefix and `/`, then at most 63 letters, digits, `-`, `_` and `.`, starting and
/// ending alphanumeric.
const TAINT_KEY: &str = r"^(([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$";

/// A PureFlash store: one `pfs` daemon on one node, with its disks. The operator runs it in a
/// Pod configured from this spec, mirrors its ZooKeeper registration into the status, and
/// restarts it when it goes offline while its process keeps running.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "pureflash.io",
    version = "v1alpha1",
    kind = "PureFlashStore",
    plural = "pureflashstores",
    singular = "pureflashstore",
    namespaced,
    shortname = "pfstore",
    shortname = "pfstores",
    category = "pureflash",
    status = "PureFlashStoreStatus",
    derive = "PartialEq",
    // The Pod and ConfigMap are named `<name>-pfs` and `<name>-pfs-conf`, at most 253 characters.
    validation = Rule::new("size(self.metadata.name) <= 244").message("metadata.name must be at most 244 characters: the store's ConfigMap is named <name>-pfs-conf"),
    selectable = ".spec.storeId",
    selectable = ".spec.nodeName",
    printcolumn = r#"{"name": "STORE-ID", "type": "integer", "jsonPath": ".spec.storeId", "description": "Store id in ZooKeeper and t_store"}"#,
    printcolumn = r#"{"name": "PHASE", "type": "string", "jsonPath": ".status.phase"}"#,
    printcolumn = r#"{"name": "ALIVE", "type": "boolean", "jsonPath": ".status.alive", "description": "The store's alive node exists in ZooKeeper"}"#,
    printcolumn = r#"{"name": "MNGT-IP", "type": "string", "jsonPath": ".status.mngtIp"}"#,
    printcolumn = r#"{"name": "TRAYS", "type": "string", "jsonPath": ".status.traysOnline", "description": "Trays online/the spec's trays"}"#,
    printcolumn = r#"{"name": "RESTARTS", "type": "integer", "jsonPath": ".status.restartCount", "description": "Restarts made by the operator"}"#,
    printcolumn = r#"{"name": "AGE", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct PureFlashStoreSpec {
    /// The store's id: `[afs] id` in pfs.conf, its directory under `/pureflash/<cluster>/stores`,
    /// and `t_store.id`. It never changes: volumes reference it.
    #[x_kube(validation = Rule::new("self == oldSelf").message("storeId is immutable: create a new PureFlashStore for a new store"))]
    #[schemars(range(min = 1, max = 2147483647))]
    pub store_id: i32,

    /// The node with the store's disks; the pfs Pod always runs there. It never changes: the
    /// trays are disks in that node, and pfs started elsewhere under the same id would serve
    /// other disks as this store.
    #[x_kube(validation = Rule::new("self == oldSelf").message("nodeName is immutable: the store's trays are disks in that node; disks moved to another node make a new PureFlashStore"))]
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN))]
    pub node_name: String,

    /// The disks (trays) pfs serves, in pfs.conf order (`[tray.0]`, `[tray.1]`, …); pfs reads
    /// at most 32.
    #[schemars(length(min = 1, max = 32))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["device"]))]
    pub trays: Vec<TraySpec>,

    /// Management address (`[afs] mngt_ip`). Defaults to the node's first IPv4 InternalIP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = IPV4))]
    pub mngt_ip: Option<String>,

    /// Data-path addresses (`[port.N] ip`), each once; pfs reads at most 4. Defaults to the
    /// node's first IPv4 InternalIP.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 4), inner(regex(pattern = IPV4)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub ports: Vec<String>,

    /// Replication addresses (`[rep_port.N] ip`), each once; pfs reads at most 4. Defaults to
    /// the node's first IPv4 InternalIP.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 4), inner(regex(pattern = IPV4)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub rep_ports: Vec<String>,

    /// The pfs container image.
    #[serde(default = "default_image")]
    #[schemars(length(min = 1), regex(pattern = r"^\S(.*\S)?$"))]
    pub image: String,

    /// When to pull the image.
    #[serde(default)]
    pub image_pull_policy: PullPolicy,

    /// CPU and memory for the pfs container (requests and limits; no `claims`: the Pod has
    /// no resource claims they could name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("!has(self.claims)").message("resources.claims is not supported: the pfs Pod declares no resource claims"))]
    pub resources: Option<ResourceRequirements>,

    /// The PriorityClass of the pfs Pod. A storage daemon is best kept from being preempted
    /// or evicted first under node pressure: `system-node-critical` suits it where the
    /// cluster lets this namespace use it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN))]
    pub priority_class_name: Option<String>,

    /// Taints the pfs Pod tolerates, besides the two it always does (NoExecute
    /// `node.kubernetes.io/not-ready` and `node.kubernetes.io/unreachable`: the store's disks
    /// are on its node, so it could run nowhere else). A node tainted NoExecute (a dedicated
    /// storage node, say) refuses a Pod that does not tolerate the taint.
    /// Each is checked here as the API server checks a Pod's, so that a wrong one is refused
    /// when the store is applied, not when its Pod is made.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[schemars(extend("items" = {
        "type": "object",
        "description": "A taint the pfs Pod tolerates: one matching <key, value, effect> with <operator>.",
        "properties": {
            "key": {
                "type": "string",
                "maxLength": 317,
                "pattern": TAINT_KEY,
                "description": "The taint key (a qualified name); empty: every key, with operator Exists."
            },
            "operator": {
                "type": "string",
                "enum": ["", "Equal", "Exists"],
                "description": "Equal (the default, also when empty) matches the value; Exists matches any value."
            },
            "value": {
                "type": "string",
                "maxLength": 63,
                "pattern": "^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$",
                "description": "The taint value (a label value); none with operator Exists."
            },
            "effect": {
                "type": "string",
                "enum": ["", "NoSchedule", "PreferNoSchedule", "NoExecute"],
                "description": "The taint effect matched; empty: every effect."
            },
            "tolerationSeconds": {
                "type": "integer",
                "format": "int64",
                "description": "How long a NoExecute taint is tolerated before the Pod is evicted; unset: for ever."
            }
        },
        "x-kubernetes-validations": [
            {
                "rule": "(has(self.key) && self.key != '') || (has(self.operator) && self.operator == 'Exists')",
                "message": "a toleration without a key must have operator Exists (it then tolerates every taint)"
            },
            {
                "rule": "!has(self.operator) || self.operator != 'Exists' || !has(self.value) || self.value == ''",
                "message": "a toleration with operator Exists takes no value"
            },
            {
                "rule": "!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
                "message": "tolerationSeconds needs effect NoExecute"
            },
            {
                "rule": "!has(self.key) || !self.key.matches('^[^/]{254,}/')",
                "message": "a toleration key's prefix (before '/') is a DNS subdomain of at most 253 characters"
            }
        ]
    }))]
    pub tolerations: Vec<Toleration>,

    /// Extra pfs.conf settings, by section and key (`engine: {name: aio}`,
    /// `afs: {meta_size: "10737418240"}`). The operator owns `[cluster]`, `[zookeeper]`,
    /// `[afs] id/mngt_ip`, `[tray.N]`, `[port.N]` and `[rep_port.N]`.
    /// Names and values are written into pfs.conf as they are, so they are confined to what a
    /// line of it can hold: a newline in a value would add lines of its own (a second `id=`),
    /// and pfs's parser reads a trailing `\` as "continued on the next line", `#` and `;` as
    /// the start of a comment, and `"` as the start of a quoted value, so values hold none of
    /// these; nor control characters or U+FFFE/U+FFFF (pfs skips such a line whole), nor
    /// leading or trailing spaces (pfs trims them off).
    /// Values are at most 256 characters, so that the largest pfs.conf fits the 1 MiB a
    /// ConfigMap may hold.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend(
        "maxProperties" = 32,
        "additionalProperties" = {
            "type": "object",
            "maxProperties": 64,
            "additionalProperties": {"type": "string", "maxLength": 256, "pattern": SETTING_VALUE},
            "x-kubernetes-validations": [{
                "rule": "self.all(k, k.matches('^[A-Za-z0-9_.-]{1,64}$'))",
                "message": "settings keys are pfs.conf names: letters, digits, '_', '.', '-' (at most 64)"
            }]
        }
    ))]
    #[x_kube(validation = Rule::new("self.all(s, s.matches('^[A-Za-z0-9_.-]{1,64}$'))").message("settings sections are pfs.conf section names: letters, digits, '_', '.', '-' (at most 64)"))]
    #[x_kube(validation = Rule::new("self.all(s, s != 'cluster' && s != 'zookeeper' && !s.startsWith('tray.') && !s.startsWith('port.') && !s.startsWith('rep_port.'))").message("settings may not set the [cluster], [zookeeper], [tray.N], [port.N] or [rep_port.N] sections: the operator owns them"))]
    #[x_kube(validation = Rule::new("!('afs' in self) || (!('id' in self.afs) && !('mngt_ip' in self.afs))").message("settings may not set [afs] id or mngt_ip: use storeId and mngtIp"))]
    pub settings: BTreeMap<String, BTreeMap<String, String>>,

    /// How the operator restarts this store when it goes offline.
    #[serde(default)]
    pub recovery: RecoverySpec,
}

fn default_image() -> String {
    DEFAULT_IMAGE.to_owned()
}

/// One disk.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TraySpec {
    /// Device path on the node, e.g. `/dev/nvme1n1`, or a stable name such as
    /// `/dev/disk/by-id/nvme-…` or `/dev/disk/by-path/pci-0000:3b:00.0-nvme-1`. No `.` or `..`
    /// segments.
    #[schemars(regex(pattern = DEVICE), length(max = 96))]
    pub device: String,
}

/// Image pull policy of the pfs container.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
pub enum PullPolicy {
    Always,
    #[default]
    IfNotPresent,
    Never,
}

impl PullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// Automated recovery: when the store has been OFFLINE in ZooKeeper for longer than the grace
/// period while its Pod keeps running, its pfs is killed (the `kill -9`: the Pod deleted with a
/// 1 s grace period, SIGKILL within seconds) and the Pod recreated once the kill is done.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.backoffMaxSeconds >= self.backoffInitialSeconds").message("backoffMaxSeconds must not be below backoffInitialSeconds"))]
pub struct RecoverySpec {
    /// Restart the store automatically. Off: the operator only reports.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// How long the store must be offline, with its Pod running, before it is restarted.
    #[serde(default = "default_grace")]
    #[schemars(range(min = 0, max = 86400))]
    pub offline_grace_period_seconds: u32,
    /// Wait after a restart that did not bring the store back, doubled per attempt.
    #[serde(default = "default_backoff_initial")]
    #[schemars(range(min = 1, max = 86400))]
    pub backoff_initial_seconds: u32,
    /// The longest wait between restarts.
    #[serde(default = "default_backoff_max")]
    #[schemars(range(min = 1, max = 86400))]
    pub backoff_max_seconds: u32,
    /// Automatic restarts allowed within any hour (manual ones are not counted), and in a row
    /// without the store staying back for the stable period. At the hourly limit recovery
    /// stops until they age out; at the limit in a row it stops for good, until the store
    /// comes back and stays back (by itself, or after a manual restart). The RecoveryFrozen
    /// condition says which.
    #[serde(default = "default_max_restarts")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_restarts_per_hour: u32,
}

fn yes() -> bool {
    true
}
fn default_grace() -> u32 {
    30
}
fn default_backoff_initial() -> u32 {
    10
}
fn default_backoff_max() -> u32 {
    600
}
fn default_max_restarts() -> u32 {
    6
}

impl Default for RecoverySpec {
    fn default() -> Self {
        RecoverySpec {
            enabled: true,
            offline_grace_period_seconds: default_grace(),
            backoff_initial_seconds: default_backoff_initial(),
            backoff_max_seconds: default_backoff_max(),
            max_restarts_per_hour: default_max_restarts(),
        }
    }
}

/// A restart recorded in the status before its Pod is killed.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct UnfinishedRestart {
    /// The uid of the Pod the restart kills.
    pub pod_uid: String,
    /// Asked for with the `pureflash.io/restart` annotation (else decided by recovery).
    #[serde(default)]
    pub manual: bool,
}

/// The lifecycle phase shown by `kubectl get pfstores`.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// The Pod is not running yet (being created, scheduled, pulled).
    Pending,
    /// The Pod runs; pfs has not registered yet.
    Starting,
    /// `alive` exists in ZooKeeper.
    Online,
    /// Not alive in ZooKeeper although its Pod runs (or has been waiting to run).
    Offline,
    /// The operator restarted the store and waits for it to come back.
    Recovering,
    /// The operator's own ZooKeeper view cannot be trusted right now: nothing is known.
    Unknown,
}

/// One disk as ZooKeeper reports it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TrayStatus {
    pub uuid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<i64>,
    /// Bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_size: Option<i64>,
    /// Bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_size: Option<i64>,
    /// The tray's `online` node exists.
    pub online: bool,
}

/// What the operator observes and has done; written only through the status subresource.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PureFlashStoreStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// While the phase is Unknown: the phase before it. Back from a ZooKeeper blip with nothing
    /// changed, the store returns to it without an Event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase_before_unknown: Option<Phase>,
    /// The store id as registered in ZooKeeper.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = -2147483648, max = 2147483647))]
    pub store_id: Option<i32>,
    /// The store's `alive` node exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alive: Option<bool>,
    /// The store's `state` node in ZooKeeper.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zk_state: Option<String>,
    /// Management address registered in ZooKeeper.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mngt_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trays: Vec<TrayStatus>,
    /// Trays online out of those the spec lists, e.g. `1/2` (a tray node pfs left registered
    /// beyond them, such as one of a replaced disk, does not count).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trays_online: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rep_ports: Vec<String>,
    /// The pfs Pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    /// Restarts made by the operator (recovery and manual), over the store's life.
    #[serde(default)]
    #[schemars(range(max = 4294967295u32))]
    pub restart_count: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_restart_time: Option<Time>,
    /// When the store last came online (its phase turned Online; a ZooKeeper blip does not
    /// count). A restart it has not come online since is still in flight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_online_time: Option<Time>,
    /// Since when the store is offline in ZooKeeper (kept across operator restarts and leader
    /// changes, so the grace period is never restarted by them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offline_since: Option<Time>,
    /// When the ZooKeeper state in this status was observed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_observed_time: Option<Time>,
    /// The spec generation this status reflects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Automatic restart times within the last hour (for maxRestartsPerHour).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_restarts: Vec<Time>,
    /// Consecutive restarts that did not bring the store back (drives the backoff).
    #[serde(default)]
    #[schemars(range(max = 4294967295u32))]
    pub recovery_attempts: u32,
    /// The last `pureflash.io/restart` annotation value acted upon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_manual_restart: Option<String>,
    /// The last restart, from when it is recorded until its Pod is seen gone: a reconcile that
    /// still finds that Pod finishes the restart instead of deciding, and counting, another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unfinished_restart: Option<UnfinishedRestart>,
    /// The reason of the last recovery decision that was not "healthy" (Events are recorded
    /// when it changes, not on every reconcile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_decision: Option<String>,
    /// Ready, Alive, PodReady, TraysOnline, DbSynced, RecoveryFrozen, UpToDate (False while a
    /// changed spec waits to replace the Pod of a serving store).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

impl PureFlashStoreStatus {
    /// The condition of type `kind`, if it has status `status` (`True`, `False`, `Unknown`).
    pub fn condition(&self, kind: &str, status: &str) -> Option<&Condition> {
        self.conditions
            .iter()
            .find(|c| c.type_ == kind && c.status == status)
    }
}

/// Annotation that pauses automated recovery of one store (`"true"`).
pub const PAUSE_ANNOTATION: &str = "pureflash.io/recovery-paused";

/// Whether the store's recovery is paused by [`PAUSE_ANNOTATION`]. Any value but a spelled-out
/// no (`false`, `no`, `0`, empty; in any case) pauses: someone who set the annotation meant to
/// keep automation off the store, and a `True` or `yes` read as "not paused" would restart a
/// store under repair.
pub fn recovery_paused(store: &PureFlashStore) -> bool {
    use kube::ResourceExt;
    store
        .annotations()
        .get(PAUSE_ANNOTATION)
        .is_some_and(|value| {
            !matches!(
                value.trim().to_ascii_lowercase().as_str(),
                "false" | "no" | "0" | ""
            )
        })
}
/// Annotation that requests one restart: any new value (e.g. a timestamp) triggers it once.
pub const RESTART_ANNOTATION: &str = "pureflash.io/restart";

/// The CRD as YAML, as `crds/pureflashstore.yaml` holds it.
pub fn crd_yaml() -> String {
    use kube::CustomResourceExt;
    let header = "# Generated by `pureflash-operator crd` from src/crd.rs; do not edit.\n";
    format!(
        "{header}{}",
        serde_yaml::to_string(&PureFlashStore::crd()).expect("the CRD serializes")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    #[test]
    fn the_committed_crd_is_the_generated_one() {
        let committed = include_str!("../crds/pureflashstore.yaml");
        assert!(
            committed == crd_yaml(),
            "crds/pureflashstore.yaml is stale: run `cargo run -- crd > crds/pureflashstore.yaml`"
        );
    }

    #[test]
    fn any_pause_value_but_a_spelled_out_no_pauses() {
        let with = |value: Option<&str>| {
            let mut store: PureFlashStore = serde_json::from_value(serde_json::json!({
                "apiVersion": "pureflash.io/v1alpha1",
                "kind": "PureFlashStore",
                "metadata": {"name": "s"},
                "spec": {"storeId": 1, "nodeName": "n", "trays": [{"device": "/dev/sda"}]},
            }))
            .unwrap();
            if let Some(value) = value {
                store
                    .metadata
                    .annotations
                    .get_or_insert_default()
                    .insert(PAUSE_ANNOTATION.into(), value.into());
            }
            recovery_paused(&store)
        };
        for paused in ["true", "True", "TRUE", "yes", "1", "until friday"] {
            assert!(with(Some(paused)), "{paused}");
        }
        for going_on in ["false", "False", "no", "0", "", " "] {
            assert!(!with(Some(going_on)), "{going_on:?}");
        }
        assert!(!with(None));
    }

    #[test]
    fn names_columns_and_scope() {
        let crd = PureFlashStore::crd();
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some("pureflashstores.pureflash.io")
        );
        let names = &crd.spec.names;
        assert_eq!(
            names.short_names.as_deref(),
            Some(&["pfstore".to_owned(), "pfstores".to_owned()][..])
        );
        assert_eq!(
            names.categories.as_deref(),
            Some(&["pureflash".to_owned()][..])
        );
        assert_eq!(crd.spec.scope, "Namespaced");
        let columns: Vec<&str> = crd.spec.versions[0]
            .additional_printer_columns
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(
            columns,
            [
                "STORE-ID", "PHASE", "ALIVE", "MNGT-IP", "TRAYS", "RESTARTS", "AGE"
            ]
        );
        assert!(
            crd.spec.versions[0]
                .subresources
                .as_ref()
                .unwrap()
                .status
                .is_some()
        );
    }

    /// The schema as the API server enforces it (the test bed's validator, the one the e2e
    /// tests run against): what it lets through can make a Pod, what it refuses says why.
    #[test]
    fn the_schema_takes_stable_device_names_and_refuses_specs_no_pod_could_run() {
        let crd = serde_json::to_value(PureFlashStore::crd()).unwrap();
        let schema = kube_emulator::schema::Schema::compile(
            &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"],
        )
        .unwrap();
        let refusals = |spec: serde_json::Value| -> Vec<String> {
            let mut object = serde_json::json!({
                "apiVersion": "pureflash.io/v1alpha1",
                "kind": "PureFlashStore",
                "metadata": {"name": "s", "namespace": "n"},
                "spec": spec,
            });
            schema.apply_defaults(&mut object);
            schema.prune(&mut object);
            schema
                .validate(&object, None)
                .into_iter()
                .map(|cause| format!("{}: {}", cause.field, cause.message))
                .collect()
        };
        let with = |field: &str, value: serde_json::Value| {
            let mut spec = serde_json::json!(
                {"storeId": 1, "nodeName": "node-a.example", "trays": [{"device": "/dev/sdb"}]}
            );
            spec[field] = value;
            spec
        };
        for device in [
            "/dev/sdb",
            "/dev/disk/by-path/pci-0000:3b:00.0-nvme-1",
            "/dev/disk/by-id/usb-SanDisk_Ultra_4C530001-0:0",
            "/dev/disk/by-id/md-uuid-1a2b3c4d:5e6f7a8b",
            "/dev/mapper/vg0-lv_pf+1",
            "/dev/.hidden",
            "/dev/..x",
        ] {
            let spec = with("trays", serde_json::json!([{ "device": device }]));
            assert_eq!(refusals(spec), Vec::<String>::new(), "{device}");
        }
        for device in [
            "/dev/../etc/shadow",
            "/dev/./sdb",
            "/dev/",
            "/dev//sdb",
            "/dev/sdb/",
            "/devices/sdb",
            "/dev/disk/by-label/My Disk",
        ] {
            let spec = with("trays", serde_json::json!([{ "device": device }]));
            let refusals = refusals(spec);
            assert!(
                refusals.len() == 1 && refusals[0].starts_with("spec.trays[0].device: "),
                "{device}: {refusals:?}"
            );
        }
        let cases = [
            (
                with("nodeName", "Node_A".into()),
                "spec.nodeName: Invalid value: \"Node_A\": spec.nodeName in body should match",
            ),
            (
                with("ports", serde_json::json!(["10.0.0.5", "10.0.0.5"])),
                "spec.ports[1]: Duplicate value: \"10.0.0.5\"",
            ),
            (
                with("repPorts", serde_json::json!(["10.0.1.5", "10.0.1.5"])),
                "spec.repPorts[1]: Duplicate value: \"10.0.1.5\"",
            ),
            (
                with(
                    "resources",
                    serde_json::json!({"claims": [{"name": "gpu"}], "limits": {"memory": "4Gi"}}),
                ),
                "resources.claims is not supported",
            ),
            // The API server refuses a container image with surrounding whitespace.
            (
                with("image", " pureflash/pureflash:1.9.1".into()),
                "spec.image: Invalid value",
            ),
            (
                with("image", "pureflash/pureflash:1.9.1\n".into()),
                "spec.image: Invalid value",
            ),
        ];
        for (spec, refusal) in cases {
            let refusals = refusals(spec.clone());
            assert!(
                refusals.len() == 1 && refusals[0].contains(refusal),
                "{spec}: expected {refusal:?} in {refusals:?}"
            );
        }
        let spec = with(
            "resources",
            serde_json::json!({"limits": {"memory": "4Gi"}}),
        );
        assert_eq!(refusals(spec), Vec::<String>::new());

        // Tolerations as the API server takes them in a Pod.
        for toleration in [
            serde_json::json!({"key": "dedicated", "operator": "Equal", "value": "storage", "effect": "NoSchedule"}),
            serde_json::json!({"key": "dedicated", "value": "storage"}),
            serde_json::json!({"operator": "Exists"}),
            serde_json::json!({"key": "example.com/storage", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30}),
            serde_json::json!({"key": "node.kubernetes.io/disk-pressure", "operator": "Exists", "effect": ""}),
            serde_json::json!({"key": "", "operator": "Exists"}),
            serde_json::json!({"key": "dedicated", "operator": "", "value": "storage"}),
        ] {
            let spec = with("tolerations", serde_json::json!([toleration]));
            assert_eq!(refusals(spec), Vec::<String>::new(), "{toleration}");
        }
        for (toleration, refusal) in [
            (
                serde_json::json!({"key": "a", "operator": "In"}),
                "spec.tolerations[0].operator: Unsupported value: \"In\"",
            ),
            (
                serde_json::json!({"key": "a", "effect": "NoRun"}),
                "spec.tolerations[0].effect: Unsupported value: \"NoRun\"",
            ),
            (
                serde_json::json!({"value": "x"}),
                "a toleration without a key must have operator Exists",
            ),
            (
                serde_json::json!({"key": "", "operator": "", "value": "x"}),
                "a toleration without a key must have operator Exists",
            ),
            (
                serde_json::json!({"key": "a", "operator": "Exists", "value": "x"}),
                "a toleration with operator Exists takes no value",
            ),
            (
                serde_json::json!({"key": "a", "effect": "NoSchedule", "tolerationSeconds": 5}),
                "tolerationSeconds needs effect NoExecute",
            ),
            (
                serde_json::json!({"key": "bad key"}),
                "spec.tolerations[0].key: Invalid value",
            ),
            (
                serde_json::json!({"key": "a", "value": "x y"}),
                "spec.tolerations[0].value: Invalid value",
            ),
            (
                serde_json::json!({"key": format!("{}.example/storage", "a".repeat(250))}),
                "a toleration key's prefix (before '/') is a DNS subdomain of at most 253 characters",
            ),
        ] {
            let spec = with("tolerations", serde_json::json!([toleration]));
            // (A schema error comes with word that the rules were not checked, as from the
            // API server.)
            let refusals = refusals(spec);
            assert!(
                refusals
                    .first()
                    .is_some_and(|first| first.contains(refusal)),
                "{toleration}: expected {refusal:?} in {refusals:?}"
            );
        }
    }

    #[test]
    fn defaults_fill_an_minimal_spec() {
        let spec: PureFlashStoreSpec = serde_json::from_value(
            serde_json::json!({"storeId": 1, "nodeName": "n", "trays": [{"device": "/dev/sdb"}]}),
        )
        .unwrap();
        assert_eq!(spec.image, DEFAULT_IMAGE);
        assert_eq!(spec.image_pull_policy, PullPolicy::IfNotPresent);
        assert_eq!(spec.recovery, RecoverySpec::default());
        assert!(spec.recovery.enabled);
    }
}
