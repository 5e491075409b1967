//! The ZooKeeper layout that `pfs` writes: building and parsing every path under
//! `/pureflash/<cluster>`, and the typed identifiers found in it.
//!
//! Pure code: no I/O. The mirror uses [`ClusterLayout::locate`] to turn an event path into
//! "which store directory, which node in it", and [`StoreNode::parse`] to know what a node is.
//!
//! ```text
//! /pureflash/<cluster>/
//!   conductors/conductor<seq>
//!   stores/<store_id>/{mngt_ip, state, alive}
//!   stores/<store_id>/trays/<uuid>/{devname, capacity, object_size, free_size, state, online}
//!   stores/<store_id>/ports/<ip>
//!   stores/<store_id>/rep_ports/<ip>
//!   shared_disks/<uuid>/…
//! ```

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use crate::zk::DataError;

/// PureFlash's default cluster name.
pub const DEFAULT_CLUSTER: &str = "cluster1";

/// A store id: the name of a directory under `stores/`, and `t_store.id` in the metadata DB.
///
/// Only the canonical decimal form `pfs` writes is accepted (`7`, never `07` or `+7`), so one
/// directory maps to one id and back. The upper bound is the DB column's: `t_store.id` is a
/// signed 32-bit `integer` in MariaDB.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StoreId(u32);

impl StoreId {
    pub const MAX: u32 = i32::MAX as u32;

    pub fn new(id: u32) -> Result<Self, DataError> {
        if (1..=Self::MAX).contains(&id) {
            Ok(StoreId(id))
        } else {
            Err(DataError::BadStoreId {
                value: id.to_string(),
            })
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

impl FromStr for StoreId {
    type Err = DataError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || DataError::BadStoreId {
            value: crate::zk::view::excerpt(s),
        };
        let canonical =
            !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && !s.starts_with('0');
        if !canonical {
            return Err(bad());
        }
        let id: u32 = s.parse().map_err(|_| bad())?;
        StoreId::new(id).map_err(|_| bad())
    }
}

impl fmt::Display for StoreId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A tray (disk) uuid in the canonical hyphenated 8-4-4-4-12 form, kept exactly as written so
/// that `t_tray.uuid` matches what the conductor would store.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TrayUuid(String);

impl TrayUuid {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for TrayUuid {
    type Err = DataError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // `uuid` also accepts the simple, braced and URN forms; only the 36-character one is
        // hyphenated, which is what pfs writes.
        if s.len() == 36 && uuid::Uuid::try_parse(s).is_ok() {
            Ok(TrayUuid(s.to_owned()))
        } else {
            Err(DataError::BadTrayUuid {
                value: crate::zk::view::excerpt(s),
            })
        }
    }
}

impl fmt::Display for TrayUuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A data node of a tray directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TrayField {
    Devname,
    Capacity,
    ObjectSize,
    FreeSize,
    State,
}

impl TrayField {
    pub const ALL: [TrayField; 5] = [
        TrayField::Devname,
        TrayField::Capacity,
        TrayField::ObjectSize,
        TrayField::FreeSize,
        TrayField::State,
    ];

    pub fn name(self) -> &'static str {
        match self {
            TrayField::Devname => "devname",
            TrayField::Capacity => "capacity",
            TrayField::ObjectSize => "object_size",
            TrayField::FreeSize => "free_size",
            TrayField::State => "state",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        TrayField::ALL.into_iter().find(|f| f.name() == name)
    }
}

/// What a node inside `stores/<id>/` is, from its path relative to that directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreNode {
    /// The store directory itself (relative path `""`).
    Root,
    MngtIp,
    State,
    /// The ephemeral liveness node.
    Alive,
    Trays,
    Tray(TrayUuid),
    TrayField(TrayUuid, TrayField),
    /// The ephemeral per-tray liveness node.
    TrayOnline(TrayUuid),
    Ports,
    Port(IpAddr),
    RepPorts,
    RepPort(IpAddr),
}

impl StoreNode {
    /// Parses a path relative to a store directory (`""`, `"alive"`, `"trays/<uuid>/capacity"`…).
    ///
    /// Anything `pfs` does not write is an error naming what is wrong, so it can be reported
    /// against the store without affecting the rest of it.
    pub fn parse(rel: &str) -> Result<StoreNode, DataError> {
        let unexpected = || DataError::UnexpectedNode;
        if rel.is_empty() {
            return Ok(StoreNode::Root);
        }
        let mut parts = rel.split('/');
        let first = parts.next().unwrap_or_default();
        let second = parts.next();
        let third = parts.next();
        if parts.next().is_some() {
            return Err(unexpected());
        }
        let node = match (first, second, third) {
            ("mngt_ip", None, None) => StoreNode::MngtIp,
            ("state", None, None) => StoreNode::State,
            ("alive", None, None) => StoreNode::Alive,
            ("trays", None, None) => StoreNode::Trays,
            ("trays", Some(uuid), None) => StoreNode::Tray(uuid.parse()?),
            ("trays", Some(uuid), Some("online")) => StoreNode::TrayOnline(uuid.parse()?),
            ("trays", Some(uuid), Some(field)) => {
                let field = TrayField::from_name(field).ok_or_else(unexpected)?;
                StoreNode::TrayField(uuid.parse()?, field)
            }
            ("ports", None, None) => StoreNode::Ports,
            ("ports", Some(ip), None) => StoreNode::Port(parse_ip(ip)?),
            ("rep_ports", None, None) => StoreNode::RepPorts,
            ("rep_ports", Some(ip), None) => StoreNode::RepPort(parse_ip(ip)?),
            _ => return Err(unexpected()),
        };
        Ok(node)
    }

    /// The path of this node relative to its store directory; the inverse of [`Self::parse`].
    pub fn relative_path(&self) -> String {
        match self {
            StoreNode::Root => String::new(),
            StoreNode::MngtIp => "mngt_ip".into(),
            StoreNode::State => "state".into(),
            StoreNode::Alive => "alive".into(),
            StoreNode::Trays => "trays".into(),
            StoreNode::Tray(uuid) => format!("trays/{uuid}"),
            StoreNode::TrayField(uuid, field) => format!("trays/{uuid}/{}", field.name()),
            StoreNode::TrayOnline(uuid) => format!("trays/{uuid}/online"),
            StoreNode::Ports => "ports".into(),
            StoreNode::Port(ip) => format!("ports/{ip}"),
            StoreNode::RepPorts => "rep_ports".into(),
            StoreNode::RepPort(ip) => format!("rep_ports/{ip}"),
        }
    }

    /// Whether the node's data means something (as opposed to nodes whose existence is the
    /// information). The mirror reads data only for these.
    pub fn carries_data(&self) -> bool {
        matches!(
            self,
            StoreNode::MngtIp | StoreNode::State | StoreNode::TrayField(..)
        )
    }
}

fn parse_ip(s: &str) -> Result<IpAddr, DataError> {
    s.parse().map_err(|_| DataError::BadIp {
        value: crate::zk::view::excerpt(s),
    })
}

/// Where a ZooKeeper path falls relative to a cluster's `stores/` directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location<'a> {
    /// `/pureflash/<cluster>/stores` itself.
    Stores,
    /// A node inside one store directory: the directory's name and the path relative to it.
    InStore { dir: &'a str, rel: &'a str },
    /// Not under `stores/`.
    Elsewhere,
}

/// The longest cluster name taken, in characters (as the chart's schema counts them).
pub const MAX_CLUSTER_NAME: usize = 255;

/// Whether ZooKeeper refuses `c` in a path: control characters, the private-use area and the
/// last sixteen of the Basic Multilingual Plane (refused by the client before sending), and
/// anything beyond that plane (surrogate pairs to the Java server, which refuses them). A path
/// holding one fails every request, so it is refused where it is configured.
pub fn refused_in_paths(c: char) -> bool {
    c.is_control() || matches!(u32::from(c), 0xE000..=0xF8FF | 0xFFF0..)
}

/// Every path of one cluster's tree, built from its name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterLayout {
    cluster: String,
    root: String,
    stores: String,
}

impl ClusterLayout {
    /// The layout of `/pureflash/<cluster>`. A cluster name is one non-empty path segment that
    /// pfs can read from its pfs.conf (`[cluster] name`) as it is: pfs trims the value, reads
    /// `#` and `;` as the start of a comment, `"` as a quote and `\` as an escape, so a name
    /// holding them would register its stores under another name than the operator watches.
    pub fn new(cluster: &str) -> Result<Self, LayoutError> {
        // Every path of a reload's batched reads holds the name: one of thousands of bytes
        // would make a batch larger than ZooKeeper takes (jute.maxbuffer), at every reload.
        let valid = !cluster.is_empty()
            && cluster.chars().count() <= MAX_CLUSTER_NAME
            && cluster != "."
            && cluster != ".."
            && !cluster.contains(['/', '#', ';', '"', '\\'])
            && cluster.trim_matches(' ') == cluster
            && !cluster.chars().any(refused_in_paths);
        if !valid {
            return Err(LayoutError::BadClusterName(cluster.to_owned()));
        }
        let root = format!("/pureflash/{cluster}");
        let stores = format!("{root}/stores");
        Ok(ClusterLayout {
            cluster: cluster.to_owned(),
            root,
            stores,
        })
    }

    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// `/pureflash/<cluster>`
    pub fn root(&self) -> &str {
        &self.root
    }

    /// `/pureflash/<cluster>/conductors`
    pub fn conductors(&self) -> String {
        format!("{}/conductors", self.root)
    }

    /// `/pureflash/<cluster>/shared_disks`
    pub fn shared_disks(&self) -> String {
        format!("{}/shared_disks", self.root)
    }

    /// `/pureflash/<cluster>/stores`
    pub fn stores(&self) -> &str {
        &self.stores
    }

    /// `/pureflash/<cluster>/stores/<dir>`, for any directory name (valid store id or not).
    pub fn store_dir(&self, dir: &str) -> String {
        format!("{}/{dir}", self.stores)
    }

    /// `/pureflash/<cluster>/stores/<id>`
    pub fn store(&self, id: StoreId) -> String {
        self.store_dir(&id.to_string())
    }

    /// The absolute path of `node` in store `id`.
    pub fn node(&self, id: StoreId, node: &StoreNode) -> String {
        self.in_store_dir(&id.to_string(), &node.relative_path())
    }

    /// `/pureflash/<cluster>/stores/<dir>/<rel>` (or the directory itself for an empty `rel`).
    pub fn in_store_dir(&self, dir: &str, rel: &str) -> String {
        if rel.is_empty() {
            self.store_dir(dir)
        } else {
            format!("{}/{dir}/{rel}", self.stores)
        }
    }

    /// Splits an absolute path into its store directory and the path inside it.
    pub fn locate<'a>(&self, path: &'a str) -> Location<'a> {
        let Some(rest) = path.strip_prefix(self.stores.as_str()) else {
            return Location::Elsewhere;
        };
        if rest.is_empty() {
            return Location::Stores;
        }
        let Some(rest) = rest.strip_prefix('/') else {
            return Location::Elsewhere; // e.g. `stores2`
        };
        match rest.split_once('/') {
            Some((dir, rel)) => Location::InStore { dir, rel },
            None => Location::InStore { dir: rest, rel: "" },
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LayoutError {
    #[error(
        "invalid cluster name {0:?}: it must be one non-empty ZooKeeper path segment of at most 255 characters, without '#', ';', '\"', '\\', spaces at either end (pfs.conf could not hold it) or characters ZooKeeper refuses in paths (control, private-use, U+FFF0 and above)"
    )]
    BadClusterName(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: &str = "3f2a9c1e-5b7d-4e8f-9a0b-1c2d3e4f5a6b";

    fn layout() -> ClusterLayout {
        ClusterLayout::new("cluster1").unwrap()
    }

    #[test]
    fn builds_every_documented_path() {
        let l = layout();
        let id = StoreId::new(7).unwrap();
        let uuid: TrayUuid = UUID.parse().unwrap();
        assert_eq!(l.root(), "/pureflash/cluster1");
        assert_eq!(l.conductors(), "/pureflash/cluster1/conductors");
        assert_eq!(l.shared_disks(), "/pureflash/cluster1/shared_disks");
        assert_eq!(l.stores(), "/pureflash/cluster1/stores");
        assert_eq!(l.store(id), "/pureflash/cluster1/stores/7");
        let cases = [
            (StoreNode::Root, "/pureflash/cluster1/stores/7".to_owned()),
            (
                StoreNode::MngtIp,
                "/pureflash/cluster1/stores/7/mngt_ip".to_owned(),
            ),
            (
                StoreNode::State,
                "/pureflash/cluster1/stores/7/state".to_owned(),
            ),
            (
                StoreNode::Alive,
                "/pureflash/cluster1/stores/7/alive".to_owned(),
            ),
            (
                StoreNode::Trays,
                "/pureflash/cluster1/stores/7/trays".to_owned(),
            ),
            (
                StoreNode::Tray(uuid.clone()),
                format!("/pureflash/cluster1/stores/7/trays/{UUID}"),
            ),
            (
                StoreNode::TrayOnline(uuid.clone()),
                format!("/pureflash/cluster1/stores/7/trays/{UUID}/online"),
            ),
            (
                StoreNode::Ports,
                "/pureflash/cluster1/stores/7/ports".to_owned(),
            ),
            (
                StoreNode::Port("10.0.0.1".parse().unwrap()),
                "/pureflash/cluster1/stores/7/ports/10.0.0.1".to_owned(),
            ),
            (
                StoreNode::RepPorts,
                "/pureflash/cluster1/stores/7/rep_ports".to_owned(),
            ),
            (
                StoreNode::RepPort("10.1.0.1".parse().unwrap()),
                "/pureflash/cluster1/stores/7/rep_ports/10.1.0.1".to_owned(),
            ),
        ];
        for (node, path) in cases {
            assert_eq!(l.node(id, &node), path, "{node:?}");
        }
        for field in TrayField::ALL {
            let node = StoreNode::TrayField(uuid.clone(), field);
            assert_eq!(
                l.node(id, &node),
                format!("/pureflash/cluster1/stores/7/trays/{UUID}/{}", field.name())
            );
        }
    }

    #[test]
    fn every_node_round_trips_through_its_path() {
        let l = layout();
        let id = StoreId::new(42).unwrap();
        let uuid: TrayUuid = UUID.parse().unwrap();
        let mut nodes = vec![
            StoreNode::Root,
            StoreNode::MngtIp,
            StoreNode::State,
            StoreNode::Alive,
            StoreNode::Trays,
            StoreNode::Tray(uuid.clone()),
            StoreNode::TrayOnline(uuid.clone()),
            StoreNode::Ports,
            StoreNode::Port("192.168.1.5".parse().unwrap()),
            StoreNode::RepPorts,
            StoreNode::RepPort("fd00::5".parse().unwrap()),
        ];
        nodes.extend(TrayField::ALL.map(|f| StoreNode::TrayField(uuid.clone(), f)));
        for node in nodes {
            let path = l.node(id, &node);
            let Location::InStore { dir, rel } = l.locate(&path) else {
                panic!("{path} not located")
            };
            assert_eq!(dir, "42");
            assert_eq!(StoreNode::parse(rel).unwrap(), node, "{path}");
        }
    }

    #[test]
    fn locate_separates_stores_from_the_rest() {
        let l = layout();
        assert_eq!(l.locate("/pureflash/cluster1/stores"), Location::Stores);
        assert_eq!(
            l.locate("/pureflash/cluster1/stores/x1"),
            Location::InStore { dir: "x1", rel: "" }
        );
        assert_eq!(
            l.locate("/pureflash/cluster1/stores/3/trays/u/capacity"),
            Location::InStore {
                dir: "3",
                rel: "trays/u/capacity"
            }
        );
        assert_eq!(
            l.locate("/pureflash/cluster1/storesX/3"),
            Location::Elsewhere
        );
        assert_eq!(
            l.locate("/pureflash/cluster1/conductors/conductor01"),
            Location::Elsewhere
        );
        assert_eq!(
            l.locate("/pureflash/cluster2/stores/3"),
            Location::Elsewhere
        );
    }

    #[test]
    fn store_ids_accept_only_the_canonical_decimal_form() {
        assert_eq!("1".parse::<StoreId>().unwrap().get(), 1);
        assert_eq!("2147483647".parse::<StoreId>().unwrap().get(), 2147483647);
        for bad in [
            "",
            "0",
            "01",
            "+1",
            "-1",
            "x1",
            "1x",
            " 1",
            "2147483648",
            "99999999999",
            "١",
        ] {
            assert_eq!(
                bad.parse::<StoreId>(),
                Err(DataError::BadStoreId {
                    value: bad.to_owned()
                }),
                "{bad:?} must be rejected"
            );
        }
    }

    #[test]
    fn tray_uuids_must_be_hyphenated() {
        assert_eq!(UUID.parse::<TrayUuid>().unwrap().as_str(), UUID);
        let upper = UUID.to_uppercase();
        assert_eq!(
            upper.parse::<TrayUuid>().unwrap().as_str(),
            upper,
            "kept exactly as written"
        );
        for bad in [
            "",
            "nope",
            "3f2a9c1e5b7d4e8f9a0b1c2d3e4f5a6b",
            "{3f2a9c1e-5b7d-4e8f-9a0b-1c2d3e4f5a6b}",
            "3f2a9c1e-5b7d-4e8f-9a0b-1c2d3e4f5a6z",
        ] {
            assert!(bad.parse::<TrayUuid>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn unknown_and_malformed_nodes_are_typed_errors() {
        assert_eq!(StoreNode::parse("surprise"), Err(DataError::UnexpectedNode));
        assert_eq!(
            StoreNode::parse("alive/child"),
            Err(DataError::UnexpectedNode)
        );
        assert_eq!(
            StoreNode::parse(&format!("trays/{UUID}/colour")),
            Err(DataError::UnexpectedNode)
        );
        assert_eq!(
            StoreNode::parse(&format!("trays/{UUID}/online/x")),
            Err(DataError::UnexpectedNode)
        );
        assert_eq!(
            StoreNode::parse("trays/not-a-uuid"),
            Err(DataError::BadTrayUuid {
                value: "not-a-uuid".into()
            })
        );
        assert_eq!(
            StoreNode::parse("ports/10.0.0.300"),
            Err(DataError::BadIp {
                value: "10.0.0.300".into()
            })
        );
        assert_eq!(
            StoreNode::parse("rep_ports/host"),
            Err(DataError::BadIp {
                value: "host".into()
            })
        );
    }

    #[test]
    fn only_data_nodes_are_read() {
        let uuid: TrayUuid = UUID.parse().unwrap();
        assert!(StoreNode::MngtIp.carries_data());
        assert!(StoreNode::TrayField(uuid.clone(), TrayField::Capacity).carries_data());
        assert!(!StoreNode::Alive.carries_data());
        assert!(!StoreNode::TrayOnline(uuid).carries_data());
        assert!(!StoreNode::Port("10.0.0.1".parse().unwrap()).carries_data());
    }

    #[test]
    fn cluster_names_are_one_segment() {
        assert!(ClusterLayout::new("cluster1").is_ok());
        assert!(ClusterLayout::new("prod eu-1.a_b").is_ok());
        assert!(ClusterLayout::new(&"c".repeat(MAX_CLUSTER_NAME)).is_ok());
        for bad in [
            "",
            "a/b",
            ".",
            "..",
            "bad\n",
            "prod;eu",
            "c#1",
            " c1",
            "c1 ",
            "a\"b",
            "a\\b",
            "c\u{E000}",
            "c\u{F8FF}",
            "c\u{FFF0}",
            "c\u{1F600}",
            &"c".repeat(256),
        ] {
            assert_eq!(
                ClusterLayout::new(bad),
                Err(LayoutError::BadClusterName(bad.into()))
            );
        }
    }
}
