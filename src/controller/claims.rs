//! Which store may serve a disk (pure). Two pfs on one disk write each other's metadata: a
//! store whose trays name a device of its node that another store holds gets no Pod until that
//! store lets it go.
//!
//! A store holds a device first by use: its Pod was made to serve it (the Pod's
//! [`DEVICES_ANNOTATION`]), or its pfs.conf as applied lists it (its ConfigMap, which a pfs the
//! kubelet restarts in place reads anew). Among stores that only ask for it in their spec, the
//! one created first holds it. So a store whose spec is changed to take
//! a disk another store serves waits for that store's own spec change to roll out, whatever
//! their ages, and never stops the one that serves.
//!
//! The addresses a store registers under are held the same way, by use (its applied pfs.conf)
//! then by creation: its management address (`t_store.mngt_ip` is unique) and its port and
//! replication port addresses (`t_port` holds an address once per purpose). Stores sharing a
//! node share its address by default, so each of them but the first needs addresses of its own.

use std::cmp::Ordering;

use jiff::Timestamp;
use kube::ResourceExt;

use crate::crd::PureFlashStore;

/// The Pod annotation naming the devices its pfs was made to serve, comma-separated (a device
/// path holds no comma): a Pod runs on what it was made from until it is gone, whatever its
/// ConfigMap says meanwhile.
pub const DEVICES_ANNOTATION: &str = "pureflash.io/devices";

/// The Pod annotation naming the addresses its pfs was made to register under, as
/// `role=address` pairs separated by commas (`mngt=10.0.0.1,port=10.0.0.1,rep=10.0.0.1`): the
/// create-time check of a node's Pods reads it, as it reads [`DEVICES_ANNOTATION`].
pub const ADDRESSES_ANNOTATION: &str = "pureflash.io/addresses";

/// What a store's pfs may be serving now, as far as the API tells.
#[derive(Clone, Copy, Debug, Default)]
pub struct InUse<'a> {
    /// Its pfs.conf as applied (its ConfigMap's).
    pub conf: Option<&'a str>,
    /// Its Pod's [`DEVICES_ANNOTATION`] (Pods made before it was written have none).
    pub pod_devices: Option<&'a str>,
}

impl InUse<'_> {
    fn serves(&self, device: &str) -> bool {
        self.pod_devices
            .is_some_and(|devices| devices.split(',').any(|d| d == device))
            // Read only where the text holds the device at all: a node may carry many stores.
            || self.conf.is_some_and(|conf| {
                conf.contains(device) && served_devices(conf).contains(&device)
            })
    }
}

/// Another store holding one of a store's trays.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceHeld {
    pub device: String,
    pub node: String,
    /// What holds it: `PureFlashStore namespace/name`, or a Pod left by a store that is gone.
    pub holder: String,
    /// Its pfs.conf as applied lists the device (else it only asks for it first).
    pub in_use: bool,
}

/// A store's place in [`claim_order`]: earlier sorts first.
pub type ClaimOrder<'a> = (bool, Option<Timestamp>, Option<&'a str>, Option<&'a str>);

/// The order in which stores claim what only one of them may have (a storeId, a device): by
/// creation; a store without a creation time (not persisted yet) comes last; namespace and name
/// break ties, so that every replica agrees.
pub fn claim_order(store: &PureFlashStore) -> ClaimOrder<'_> {
    let created = store.metadata.creation_timestamp.as_ref().map(|t| t.0);
    (
        created.is_none(),
        created,
        store.metadata.namespace.as_deref(),
        store.metadata.name.as_deref(),
    )
}

/// The values of `key` in the sections of a pfs.conf that `section` accepts, in order.
fn conf_values<'a>(
    conf: &'a str,
    section: impl Fn(&str) -> bool,
    key: &'a str,
) -> impl Iterator<Item = &'a str> {
    let mut inside = false;
    conf.lines().map(str::trim).filter_map(move |line| {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = section(name);
            None
        } else if inside {
            let (name, value) = line.split_once('=')?;
            (name == key).then(|| value.trim())
        } else {
            None
        }
    })
}

/// Whether a section name is `<prefix>N` (pfs's numbered sections: `tray.0`, `port.1`).
fn numbered(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix)
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The devices a pfs.conf serves: the `dev` of each `[tray.N]` section.
pub fn served_devices(conf: &str) -> Vec<&str> {
    conf_values(conf, |name| numbered(name, "tray."), "dev").collect()
}

/// What a store registers an address as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum AddressRole {
    /// `[afs] mngt_ip`: its `t_store` row's `mngt_ip`.
    Management,
    /// `[port.N] ip`: a `t_port` row of purpose 0.
    Port,
    /// `[rep_port.N] ip`: a `t_port` row of purpose 1.
    ReplicationPort,
}

impl AddressRole {
    const ALL: [AddressRole; 3] = [
        AddressRole::Management,
        AddressRole::Port,
        AddressRole::ReplicationPort,
    ];

    /// The spec field that gives the addresses of this role.
    pub fn field(self) -> &'static str {
        match self {
            AddressRole::Management => "mngtIp",
            AddressRole::Port => "ports",
            AddressRole::ReplicationPort => "repPorts",
        }
    }

    /// The role's name in [`ADDRESSES_ANNOTATION`].
    fn tag(self) -> &'static str {
        match self {
            AddressRole::Management => "mngt",
            AddressRole::Port => "port",
            AddressRole::ReplicationPort => "rep",
        }
    }

    /// What the role's address is, in words.
    pub fn describe(self) -> &'static str {
        match self {
            AddressRole::Management => "management",
            AddressRole::Port => "port",
            AddressRole::ReplicationPort => "replication port",
        }
    }

    /// The addresses a store's spec gives for this role; empty: its node's.
    fn given(self, store: &PureFlashStore) -> &[String] {
        match self {
            AddressRole::Management => store.spec.mngt_ip.as_slice(),
            AddressRole::Port => &store.spec.ports,
            AddressRole::ReplicationPort => &store.spec.rep_ports,
        }
    }
}

/// The [`ADDRESSES_ANNOTATION`] of a Pod registering under `addresses`.
pub fn addresses_annotation(addresses: &[(AddressRole, &str)]) -> String {
    let pairs: Vec<String> = addresses
        .iter()
        .map(|(role, address)| format!("{}={address}", role.tag()))
        .collect();
    pairs.join(",")
}

/// The first of `mine` that an [`ADDRESSES_ANNOTATION`] value also registers, in the same role.
pub fn shared_address<'a>(
    annotation: &str,
    mine: &[(AddressRole, &'a str)],
) -> Option<(AddressRole, &'a str)> {
    let theirs: Vec<(&str, &str)> = annotation
        .split(',')
        .filter_map(|pair| pair.split_once('='))
        .collect();
    mine.iter()
        .find(|(role, address)| theirs.contains(&(role.tag(), *address)))
        .copied()
}

/// Whether a pfs.conf registers `address` as `role`.
pub fn conf_registers(conf: &str, role: AddressRole, address: &str) -> bool {
    let (section, key): (fn(&str) -> bool, &str) = match role {
        AddressRole::Management => (|name| name == "afs", "mngt_ip"),
        AddressRole::Port => (|name| numbered(name, "port."), "ip"),
        AddressRole::ReplicationPort => (|name| numbered(name, "rep_port."), "ip"),
    };
    conf_values(conf, section, key).any(|value| value == address)
}

/// The addresses `store` registers under, by role, its node's address `node_ip` standing in
/// for a field left empty (none then, when it is not known).
pub fn spec_addresses<'a>(
    store: &'a PureFlashStore,
    node_ip: Option<&'a str>,
) -> Vec<(AddressRole, &'a str)> {
    let mut addresses = Vec::new();
    for role in AddressRole::ALL {
        match role.given(store) {
            [] => addresses.extend(node_ip.map(|ip| (role, ip))),
            given => addresses.extend(given.iter().map(|ip| (role, ip.as_str()))),
        }
    }
    addresses
}

/// The first of `store`'s trays that another store holds before it, if any. `mine` is what the
/// store itself may be serving; `others` are the other stores that run (not standing aside),
/// with theirs.
pub fn device_held_elsewhere<'a>(
    store: &PureFlashStore,
    mine: InUse<'_>,
    others: impl IntoIterator<Item = (&'a PureFlashStore, InUse<'a>)>,
) -> Option<DeviceHeld> {
    let node = store.spec.node_name.as_str();
    let uid = store.metadata.uid.as_deref();
    let mut held: Option<(&PureFlashStore, DeviceHeld)> = None;
    for (other, theirs) in others {
        if other.spec.node_name != node
            || (uid.is_some() && other.metadata.uid.as_deref() == uid)
            || (uid.is_none()
                && other.name_any() == store.name_any()
                && other.namespace() == store.namespace())
        {
            continue;
        }
        for tray in &store.spec.trays {
            let device = tray.device.as_str();
            let asks = other.spec.trays.iter().any(|t| t.device == device);
            let uses = theirs.serves(device);
            if !asks && !uses {
                continue;
            }
            // Use comes first, then creation.
            let ahead = match (uses, mine.serves(device)) {
                (true, false) => true,
                (false, true) => false,
                _ => claim_order(other).cmp(&claim_order(store)) == Ordering::Less,
            };
            if !ahead {
                continue;
            }
            let found = DeviceHeld {
                device: device.to_owned(),
                node: node.to_owned(),
                holder: format!(
                    "PureFlashStore {}/{}",
                    other.namespace().unwrap_or_default(),
                    other.name_any()
                ),
                in_use: uses,
            };
            // Reported the same way on every pass: the earliest such store.
            if held
                .as_ref()
                .is_none_or(|(first, _)| claim_order(other) < claim_order(first))
            {
                held = Some((other, found));
            }
            break;
        }
    }
    held.map(|(_, found)| found)
}

/// Another store holding an address a store would register under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressHeld {
    pub role: AddressRole,
    pub address: String,
    /// `PureFlashStore namespace/name`.
    pub holder: String,
}

/// The store that holds an address `store` would register under, if another does (see the
/// module doc). `node_ip` is the default on the store's node; `uses(s, role, address)` tells
/// whether a store's pfs.conf as applied registers `address` as `role` (what a pfs it runs,
/// or the kubelet restarts in place, uses: it outlasts a restart's Pod). A store using the
/// address holds it first, whatever the ages, then the one created first.
pub fn address_held_elsewhere<'a>(
    store: &PureFlashStore,
    node_ip: Option<&str>,
    uses: impl Fn(&PureFlashStore, AddressRole, &str) -> bool,
    others: impl IntoIterator<Item = &'a PureFlashStore>,
) -> Option<AddressHeld> {
    let mine = spec_addresses(store, node_ip);
    if mine.is_empty() {
        return None;
    }
    let uid = store.metadata.uid.as_deref();
    let is_me = |other: &PureFlashStore| {
        (uid.is_some() && other.metadata.uid.as_deref() == uid)
            || (other.metadata.name == store.metadata.name
                && other.metadata.namespace == store.metadata.namespace)
    };
    let i_use: Vec<bool> = mine
        .iter()
        .map(|(role, address)| uses(store, *role, address))
        .collect();
    let mut held: Option<(&PureFlashStore, AddressHeld)> = None;
    for other in others {
        if is_me(other) {
            continue;
        }
        let same_node = other.spec.node_name == store.spec.node_name;
        for ((role, address), i_use) in mine.iter().zip(&i_use) {
            let asks = match role.given(other) {
                // Its node's default: known here only for this store's node (another node's
                // is that node's own address).
                [] => same_node && node_ip == Some(*address),
                given => given.iter().any(|ip| ip == address),
            };
            // One that only used it before (its spec changed since) is looked for on this
            // store's node alone: its applied pfs.conf is read from a cache per store.
            let uses_it = (asks || same_node) && uses(other, *role, address);
            if !asks && !uses_it {
                continue;
            }
            let ahead = match (uses_it, *i_use) {
                (true, false) => true,
                (false, true) => false,
                _ => claim_order(other).cmp(&claim_order(store)) == Ordering::Less,
            };
            if !ahead {
                continue;
            }
            // Reported the same way on every pass: the earliest such store.
            if held
                .as_ref()
                .is_none_or(|(first, _)| claim_order(other) < claim_order(first))
            {
                held = Some((
                    other,
                    AddressHeld {
                        role: *role,
                        address: (*address).to_owned(),
                        holder: format!(
                            "PureFlashStore {}/{}",
                            other.namespace().unwrap_or_default(),
                            other.name_any()
                        ),
                    },
                ));
            }
            break;
        }
    }
    held.map(|(_, found)| found)
}

/// Whether a Pod's [`DEVICES_ANNOTATION`] names exactly the store's trays, in order.
pub fn serves_exactly(devices: &str, store: &PureFlashStore) -> bool {
    devices
        .split(',')
        .eq(store.spec.trays.iter().map(|tray| tray.device.as_str()))
}

/// The first of `store`'s trays that a pfs Pod of no running store serves: one left by a
/// store that was deleted (garbage collection and pfs's own end take their time) or stands
/// aside. `pods` are such Pods on the store's node, by `namespace/name`, with their
/// [`DEVICES_ANNOTATION`].
pub fn device_of_left_pod<'a>(
    store: &PureFlashStore,
    pods: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Option<DeviceHeld> {
    pods.into_iter()
        .filter_map(|(pod, devices)| {
            let device = store
                .spec
                .trays
                .iter()
                .find(|tray| devices.split(',').any(|d| d == tray.device))?;
            Some(DeviceHeld {
                device: device.device.clone(),
                node: store.spec.node_name.clone(),
                holder: format!("Pod {pod}, left by a store that is gone"),
                in_use: true,
            })
        })
        // The same one named on every pass, whatever the cache's order.
        .min_by(|a, b| a.holder.cmp(&b.holder))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_management_address_is_held_by_the_store_using_it_then_by_the_first_created() {
        let on = |name: &str, node: &str, mngt_ip: Option<&str>, created| {
            let mut store = store(name, node, &["/dev/sdb"], Some(created));
            store.metadata.uid = Some(format!("uid-{name}"));
            store.spec.mngt_ip = mngt_ip.map(Into::into);
            // Ports of its own: only the management address is looked at here.
            store.spec.ports = vec![format!("10.1.0.{created}")];
            store.spec.rep_ports = vec![format!("10.2.0.{created}")];
            store
        };
        let first = on("first", "n1", None, 1);
        let second = on("second", "n1", None, 2);
        let management = |uses: fn(&PureFlashStore) -> bool| {
            move |s: &PureFlashStore, role: AddressRole, _: &str| {
                role == AddressRole::Management && uses(s)
            }
        };
        let none_use = management(|_| false);
        let held = |store,
                    uses: &dyn Fn(&PureFlashStore, AddressRole, &str) -> bool,
                    others: &[&PureFlashStore]| {
            address_held_elsewhere(store, Some("10.0.0.1"), uses, others.iter().copied())
                .map(|held| (held.role, held.address, held.holder))
        };
        // Both default to the node's address: the first created holds it.
        assert_eq!(
            held(&second, &none_use, &[&first, &second]),
            Some((
                AddressRole::Management,
                "10.0.0.1".into(),
                "PureFlashStore pf/first".into()
            ))
        );
        assert_eq!(held(&first, &none_use, &[&first, &second]), None);
        // Whatever the ages, the one whose pfs.conf has it keeps it.
        let second_uses = management(|s| s.name_any() == "second");
        assert_eq!(held(&second, &second_uses, &[&first, &second]), None);
        assert_eq!(
            held(&first, &second_uses, &[&first, &second]).map(|(_, _, holder)| holder),
            Some("PureFlashStore pf/second".into())
        );
        // Both use it (they ran so before): the first created keeps it, through its restarts.
        let both_use = management(|_| true);
        assert_eq!(held(&first, &both_use, &[&first, &second]), None);
        assert!(held(&second, &both_use, &[&first, &second]).is_some());
        // An older store whose spec now asks for a running store's address waits for it.
        let older = on("older", "n1", Some("10.0.0.1"), 0);
        assert_eq!(
            held(&older, &second_uses, &[&older, &second]).map(|(_, _, holder)| holder),
            Some("PureFlashStore pf/second".into())
        );
        // Its own address, or a default on another node: nothing shared.
        let own = on("own", "n1", Some("10.0.0.9"), 0);
        assert_eq!(held(&second, &none_use, &[&own]), None);
        let elsewhere = on("elsewhere", "n2", None, 0);
        assert_eq!(held(&second, &none_use, &[&elsewhere]), None);
        // The same address given on another node is shared all the same.
        let given = on("given", "n2", Some("10.0.0.1"), 0);
        assert_eq!(
            held(&second, &none_use, &[&given]).map(|(_, _, holder)| holder),
            Some("PureFlashStore pf/given".into())
        );
    }

    /// Stores on one node with management addresses of their own still share the node's
    /// address for their ports by default: `t_port` holds it once per purpose.
    #[test]
    fn port_addresses_are_held_like_the_management_address() {
        let on = |name: &str, created, mngt_ip: &str| {
            let mut store = store(name, "n1", &["/dev/sdb"], Some(created));
            store.spec.mngt_ip = Some(mngt_ip.into());
            store
        };
        let first = on("first", 1, "10.0.1.1");
        let mut second = on("second", 2, "10.0.1.2");
        let none_use = |_: &PureFlashStore, _: AddressRole, _: &str| false;
        let held = |store: &PureFlashStore, others: &[&PureFlashStore]| {
            address_held_elsewhere(store, Some("10.0.0.1"), none_use, others.iter().copied())
                .map(|held| (held.role, held.address))
        };
        assert_eq!(
            held(&second, &[&first]),
            Some((AddressRole::Port, "10.0.0.1".into()))
        );
        second.spec.ports = vec!["10.0.2.2".into()];
        assert_eq!(
            held(&second, &[&first]),
            Some((AddressRole::ReplicationPort, "10.0.0.1".into()))
        );
        second.spec.rep_ports = vec!["10.0.3.2".into()];
        assert_eq!(held(&second, &[&first]), None);
        // A port address is one role's: the same address as another's management address
        // or replication port is no clash (t_port's key is the address and its purpose).
        second.spec.ports = vec!["10.0.1.1".into(), "10.0.0.1".into()];
        assert_eq!(
            held(&second, &[&first]),
            Some((AddressRole::Port, "10.0.0.1".into()))
        );
        second.spec.ports = vec!["10.0.1.1".into()];
        assert_eq!(held(&second, &[&first]), None);
        // What a store's applied pfs.conf registers holds, whatever its spec says now.
        let first_conf =
            "[afs]\nmngt_ip=10.0.1.1\nid=1\n[port.0]\nip=10.0.0.1\n[rep_port.0]\nip=10.0.0.1\n";
        let conf_uses = |s: &PureFlashStore, role: AddressRole, address: &str| {
            s.name_any() == "first" && conf_registers(first_conf, role, address)
        };
        let mut moved = first.clone();
        moved.spec.ports = vec!["10.0.2.1".into()];
        moved.spec.rep_ports = vec!["10.0.3.1".into()];
        let older = on("older", 0, "10.0.1.0");
        assert_eq!(
            address_held_elsewhere(&older, Some("10.0.0.1"), conf_uses, [&moved])
                .map(|held| (held.role, held.holder)),
            Some((AddressRole::Port, "PureFlashStore pf/first".into()))
        );
    }

    #[test]
    fn the_addresses_of_a_pfs_conf_are_read_from_their_sections() {
        let conf = "[cluster]\nname=c\n[afs]\nid=7\nmngt_ip=10.0.0.7\n[port.0]\nip=10.0.0.8\n[port.1]\nip=10.0.0.9\n[rep_port.0]\nip=10.0.1.8\n[replicator]\nip=10.0.0.1\n";
        assert!(conf_registers(conf, AddressRole::Management, "10.0.0.7"));
        assert!(!conf_registers(conf, AddressRole::Management, "10.0.0.8"));
        assert!(conf_registers(conf, AddressRole::Port, "10.0.0.9"));
        assert!(!conf_registers(conf, AddressRole::Port, "10.0.1.8"));
        assert!(conf_registers(
            conf,
            AddressRole::ReplicationPort,
            "10.0.1.8"
        ));
        assert!(!conf_registers(conf, AddressRole::Port, "10.0.0.1"));
        assert!(!conf_registers(
            "[engine]\nmngt_ip=10.0.0.7\n",
            AddressRole::Management,
            "10.0.0.7"
        ));
    }

    fn store(name: &str, node: &str, devices: &[&str], created: Option<i64>) -> PureFlashStore {
        let trays: Vec<_> = devices.iter().map(|d| json!({"device": d})).collect();
        let mut store: PureFlashStore = serde_json::from_value(json!({
            "apiVersion": "pureflash.io/v1alpha1",
            "kind": "PureFlashStore",
            "metadata": {"name": name, "namespace": "pf", "uid": name},
            "spec": {"storeId": 1, "nodeName": node, "trays": trays},
        }))
        .unwrap();
        store.metadata.creation_timestamp = created.map(|s| {
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::from_second(s).unwrap())
        });
        store
    }

    fn applied(conf: &str) -> InUse<'_> {
        InUse {
            conf: Some(conf),
            pod_devices: None,
        }
    }

    fn conf(devices: &[&str]) -> String {
        let mut conf = "[cluster]\nname=c\n[afs]\nid=1\n".to_owned();
        for (n, device) in devices.iter().enumerate() {
            conf += &format!("[tray.{n}]\ndev={device}\n");
        }
        conf + "[engine]\ndev=/dev/not-a-tray\n"
    }

    #[test]
    fn the_served_devices_are_the_trays_only() {
        assert_eq!(
            served_devices(&conf(&["/dev/sda", "/dev/sdb"])),
            ["/dev/sda", "/dev/sdb"]
        );
        assert!(served_devices("").is_empty());
        assert!(served_devices("[tray.x]\ndev=/dev/sda\n").is_empty());
    }

    #[test]
    fn a_device_in_use_is_held_by_its_user_whatever_the_ages() {
        let old = store("old", "n1", &["/dev/sda", "/dev/sdb"], Some(100));
        let young = store("young", "n1", &["/dev/sdb"], Some(200));
        let young_conf = conf(&["/dev/sdb"]);
        let old_conf = conf(&["/dev/sda"]);
        // The old store's spec took the young one's disk: it waits, the young one serves on.
        let held =
            device_held_elsewhere(&old, applied(&old_conf), [(&young, applied(&young_conf))]);
        assert_eq!(
            held,
            Some(DeviceHeld {
                device: "/dev/sdb".into(),
                node: "n1".into(),
                holder: "PureFlashStore pf/young".into(),
                in_use: true,
            })
        );
        assert_eq!(
            device_held_elsewhere(&young, applied(&young_conf), [(&old, applied(&old_conf))]),
            None
        );
        // Once the young store's own change has rolled out (its conf no longer lists the
        // disk, its spec neither), the old one may have it.
        let moved = store("young", "n1", &["/dev/sdc"], Some(200));
        let moved_conf = conf(&["/dev/sdc"]);
        assert_eq!(
            device_held_elsewhere(&old, applied(&old_conf), [(&moved, applied(&moved_conf))]),
            None
        );
        // Its spec alone, changed but not rolled out yet, still holds the disk it serves.
        assert!(
            device_held_elsewhere(&old, applied(&old_conf), [(&moved, applied(&young_conf))])
                .is_some()
        );
    }

    #[test]
    fn a_pod_serves_what_it_was_made_for_until_it_is_gone() {
        let old = store("old", "n1", &["/dev/sdb"], Some(100));
        // The young store's spec and ConfigMap moved off the disk, but its Pod, made before,
        // still runs on it (being replaced, say).
        let young = store("young", "n1", &["/dev/sdc"], Some(200));
        let young_conf = conf(&["/dev/sdc"]);
        let in_use = InUse {
            conf: Some(&young_conf),
            pod_devices: Some("/dev/sda,/dev/sdb"),
        };
        let held = device_held_elsewhere(&old, InUse::default(), [(&young, in_use)]);
        assert_eq!(
            held.map(|h| (h.device, h.in_use)),
            Some(("/dev/sdb".into(), true))
        );
        let replaced = InUse {
            conf: Some(&young_conf),
            pod_devices: Some("/dev/sdc"),
        };
        assert_eq!(
            device_held_elsewhere(&old, InUse::default(), [(&young, replaced)]),
            None
        );
        // A device path is matched whole, not as a prefix.
        let longer = InUse {
            conf: None,
            pod_devices: Some("/dev/sdb1"),
        };
        assert_eq!(
            device_held_elsewhere(&old, InUse::default(), [(&young, longer)]),
            None
        );
    }

    #[test]
    fn between_stores_that_only_ask_the_first_created_holds() {
        let first = store("first", "n1", &["/dev/sda"], Some(100));
        let second = store("second", "n1", &["/dev/sda"], Some(200));
        let unsaved = store("unsaved", "n1", &["/dev/sda"], None);
        let held = device_held_elsewhere(
            &second,
            InUse::default(),
            [(&first, InUse::default()), (&unsaved, InUse::default())],
        );
        assert_eq!(
            held.map(|h| (h.holder, h.in_use)),
            Some(("PureFlashStore pf/first".into(), false))
        );
        assert_eq!(
            device_held_elsewhere(
                &first,
                InUse::default(),
                [(&second, InUse::default()), (&unsaved, InUse::default())]
            ),
            None
        );
        assert!(
            device_held_elsewhere(&unsaved, InUse::default(), [(&first, InUse::default())])
                .is_some()
        );
        // Both in use (stores from before this rule): the first created holds it; the other's
        // Pod is not touched, only never made again.
        let used = conf(&["/dev/sda"]);
        assert!(
            device_held_elsewhere(&second, applied(&used), [(&first, applied(&used))]).is_some()
        );
        assert_eq!(
            device_held_elsewhere(&first, applied(&used), [(&second, applied(&used))]),
            None
        );
    }

    #[test]
    fn other_nodes_other_disks_and_the_store_itself_do_not_count() {
        let me = store("me", "n1", &["/dev/sda"], Some(200));
        let elsewhere = store("elsewhere", "n2", &["/dev/sda"], Some(100));
        let other_disk = store("other-disk", "n1", &["/dev/sdb"], Some(100));
        let used = conf(&["/dev/sda"]);
        assert_eq!(
            device_held_elsewhere(
                &me,
                applied(&used),
                [
                    (&elsewhere, applied(&used)),
                    (&other_disk, InUse::default()),
                    (&me, applied(&used))
                ]
            ),
            None
        );
    }

    #[test]
    fn a_pod_left_by_a_store_that_is_gone_holds_what_it_serves() {
        let me = store("me", "n1", &["/dev/sda", "/dev/sdb"], Some(300));
        assert_eq!(
            device_of_left_pod(&me, [("pf/x-pfs", "/dev/sdc"), ("pf/y-pfs", "/dev/sda1")]),
            None
        );
        let forward = device_of_left_pod(&me, [("pf/y-pfs", "/dev/sdb"), ("pf/x-pfs", "/dev/sda")]);
        let backward =
            device_of_left_pod(&me, [("pf/x-pfs", "/dev/sda"), ("pf/y-pfs", "/dev/sdb")]);
        assert_eq!(forward, backward);
        let held = forward.unwrap();
        assert_eq!((held.device.as_str(), held.in_use), ("/dev/sda", true));
        assert!(held.holder.starts_with("Pod pf/x-pfs"), "{}", held.holder);
    }

    #[test]
    fn a_pod_serves_exactly_the_trays_it_names() {
        let two = store("s", "n1", &["/dev/sda", "/dev/sdb"], Some(1));
        assert!(serves_exactly("/dev/sda,/dev/sdb", &two));
        assert!(!serves_exactly("/dev/sda", &two));
        assert!(!serves_exactly("/dev/sda,/dev/sdb,/dev/sdc", &two));
        assert!(!serves_exactly("", &two));
    }

    #[test]
    fn the_holder_named_is_the_same_whatever_the_order() {
        let me = store("me", "n1", &["/dev/sda", "/dev/sdb"], Some(300));
        let a = store("a", "n1", &["/dev/sdb"], Some(100));
        let b = store("b", "n1", &["/dev/sda"], Some(200));
        let forward = device_held_elsewhere(
            &me,
            InUse::default(),
            [(&a, InUse::default()), (&b, InUse::default())],
        );
        let backward = device_held_elsewhere(
            &me,
            InUse::default(),
            [(&b, InUse::default()), (&a, InUse::default())],
        );
        assert_eq!(forward, backward);
        assert_eq!(forward.unwrap().holder, "PureFlashStore pf/a");
    }
}
