//! The rows of t_store, t_tray and t_port as plain data, and a model of how a [`Plan`] changes
//! them, constraints included.
//!
//! The model serves twice: the DB sync keeps its cache of the DB current with it after each
//! committed transaction, and the plan's tests use it to prove that every plan applies without
//! violating a key, a unique index or a foreign key, in the order the SQL runs.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use crate::metadb::plan::Plan;

/// `status` value of a live store, online tray or registered port.
pub const STATUS_OK: &str = "OK";
/// `status` value of a store or tray that is not live.
pub const STATUS_OFFLINE: &str = "OFFLINE";

/// `t_port.purpose` of a data port (`ports/` in ZooKeeper).
pub const PURPOSE_DATA: i64 = 0;
/// `t_port.purpose` of a replication port (`rep_ports/` in ZooKeeper).
pub const PURPOSE_REPLICATION: i64 = 1;

/// Column widths of PureFlash's schema that ZooKeeper data has to fit.
pub const MNGT_IP_WIDTH: usize = 32;
pub const DEVICE_WIDTH: usize = 96;
pub const PORT_IP_WIDTH: usize = 16;

/// The columns of a t_store row the operator owns (name, sn and model are left alone).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreRow {
    pub mngt_ip: String,
    pub status: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrayRow {
    pub device: String,
    pub status: String,
    pub raw_capacity: i64,
    pub object_size: i64,
    pub store_id: i64,
}

/// t_port's primary key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortKey {
    pub ip_addr: String,
    pub purpose: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortRow {
    pub store_id: Option<i64>,
    pub status: String,
}

/// The contents of the three tables, keyed by primary key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DbRows {
    pub stores: BTreeMap<i64, StoreRow>,
    pub trays: BTreeMap<String, TrayRow>,
    pub ports: BTreeMap<PortKey, PortRow>,
}

/// A plan step the tables would refuse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConstraintError {
    #[error("t_store: duplicate id {0}")]
    DuplicateStore(i64),
    #[error("t_store: no row with id {0}")]
    NoSuchStore(i64),
    #[error(
        "t_store: mngt_ip {0:?} already used by another row (spelling aside, as MariaDB compares)"
    )]
    DuplicateMngtIp(String),
    #[error("t_tray: duplicate uuid {0} (letter case aside, as MariaDB compares)")]
    DuplicateTray(String),
    #[error("t_tray: no row with uuid {0}")]
    NoSuchTray(String),
    #[error("t_tray: store_id {0} has no t_store row")]
    TrayWithoutStore(i64),
    #[error("t_port: duplicate key {0}")]
    DuplicatePort(PortKey),
    #[error("t_port: no row with key {0}")]
    NoSuchPort(PortKey),
}

impl fmt::Display for PortKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({}, purpose {})", self.ip_addr, self.purpose)
    }
}

impl DbRows {
    /// Applies `plan` step by step, in the order the SQL runs, checking every constraint as the
    /// database does after each statement. On error the rows are left partly changed, as a
    /// rolled-back transaction would *not* be: callers discard them.
    pub fn apply(&mut self, plan: &Plan) -> Result<(), ConstraintError> {
        // The unique index on mngt_ip, built only when some step touches it: how many rows hold
        // each address as MariaDB compares them ([`mngt_ip_key`]). A count, not a set, because
        // SQLite may already hold spellings MariaDB would call one address; moving one of them
        // away must leave the other counted.
        let touches_ips = !plan.store_vacates.is_empty()
            || !plan.store_inserts.is_empty()
            || plan.store_updates.iter().any(|u| u.mngt_ip.is_some());
        let mut ips: HashMap<String, usize> = HashMap::new();
        if touches_ips {
            for row in self.stores.values() {
                *ips.entry(mngt_ip_key(&row.mngt_ip).into_owned())
                    .or_default() += 1;
            }
        }
        fn take(ips: &mut HashMap<String, usize>, ip: &str) -> Result<(), ConstraintError> {
            let held = ips.entry(mngt_ip_key(ip).into_owned()).or_default();
            if *held > 0 {
                return Err(ConstraintError::DuplicateMngtIp(ip.to_owned()));
            }
            *held = 1;
            Ok(())
        }
        fn set_ip(
            stores: &mut BTreeMap<i64, StoreRow>,
            ips: &mut HashMap<String, usize>,
            id: i64,
            ip: &str,
        ) -> Result<(), ConstraintError> {
            let row = stores
                .get_mut(&id)
                .ok_or(ConstraintError::NoSuchStore(id))?;
            let old = mngt_ip_key(&row.mngt_ip);
            // Another spelling of the row's own address collides with nothing but itself.
            if old != mngt_ip_key(ip) {
                take(ips, ip)?;
                if let Some(held) = ips.get_mut(old.as_ref()) {
                    *held = held.saturating_sub(1);
                }
            }
            row.mngt_ip = ip.to_owned();
            Ok(())
        }

        for &id in &plan.store_vacates {
            set_ip(&mut self.stores, &mut ips, id, &vacated_mngt_ip(id))?;
        }
        // The address updates run as multi-row statements, whose rows the database updates
        // (and checks against the unique index) in any order: each target must be free before
        // the statement, not merely by the time its row comes.
        let mut targets: HashSet<Cow<'_, str>> = HashSet::new();
        for update in &plan.store_updates {
            let Some(ip) = &update.mngt_ip else { continue };
            let key = mngt_ip_key(ip);
            let own = self
                .stores
                .get(&update.id)
                .is_some_and(|row| mngt_ip_key(&row.mngt_ip) == key);
            if !own && (ips.get(key.as_ref()).is_some_and(|&held| held > 0) || !targets.insert(key))
            {
                return Err(ConstraintError::DuplicateMngtIp(ip.clone()));
            }
        }
        for update in &plan.store_updates {
            if let Some(ip) = &update.mngt_ip {
                set_ip(&mut self.stores, &mut ips, update.id, ip)?;
            }
            let row = self
                .stores
                .get_mut(&update.id)
                .ok_or(ConstraintError::NoSuchStore(update.id))?;
            if let Some(status) = update.status {
                row.status = status.to_owned();
            }
        }
        for (id, row) in &plan.store_inserts {
            if self.stores.contains_key(id) {
                return Err(ConstraintError::DuplicateStore(*id));
            }
            take(&mut ips, &row.mngt_ip)?;
            self.stores.insert(*id, row.clone());
        }

        for update in &plan.tray_updates {
            let row = self
                .trays
                .get_mut(&update.uuid)
                .ok_or_else(|| ConstraintError::NoSuchTray(update.uuid.clone()))?;
            if let Some(store_id) = update.store_id {
                if !self.stores.contains_key(&store_id) {
                    return Err(ConstraintError::TrayWithoutStore(store_id));
                }
                row.store_id = store_id;
            }
            if let Some(device) = &update.device {
                row.device = device.clone();
            }
            if let Some(status) = update.status {
                row.status = status.to_owned();
            }
            if let Some(raw_capacity) = update.raw_capacity {
                row.raw_capacity = raw_capacity;
            }
            if let Some(object_size) = update.object_size {
                row.object_size = object_size;
            }
        }
        // MariaDB's t_tray primary key ignores letter case and trailing spaces: model the
        // stricter backend.
        let mut uuids: HashSet<String> = if plan.tray_inserts.is_empty() {
            HashSet::new()
        } else {
            self.trays
                .keys()
                .map(|u| collation_key(u).into_owned())
                .collect()
        };
        for (uuid, row) in &plan.tray_inserts {
            if !uuids.insert(collation_key(uuid).into_owned()) {
                return Err(ConstraintError::DuplicateTray(uuid.clone()));
            }
            if !self.stores.contains_key(&row.store_id) {
                return Err(ConstraintError::TrayWithoutStore(row.store_id));
            }
            self.trays.insert(uuid.clone(), row.clone());
        }

        for key in &plan.port_deletes {
            self.ports
                .remove(key)
                .ok_or_else(|| ConstraintError::NoSuchPort(key.clone()))?;
        }
        for (key, row) in &plan.port_updates {
            let existing = self
                .ports
                .get_mut(key)
                .ok_or_else(|| ConstraintError::NoSuchPort(key.clone()))?;
            *existing = row.clone();
        }
        // So does t_port's (ip_addr, purpose).
        let mut port_keys: HashSet<(String, i64)> = if plan.port_inserts.is_empty() {
            HashSet::new()
        } else {
            self.ports
                .keys()
                .map(|k| (collation_key(&k.ip_addr).into_owned(), k.purpose))
                .collect()
        };
        for (key, row) in &plan.port_inserts {
            let collated = (collation_key(&key.ip_addr).into_owned(), key.purpose);
            if !port_keys.insert(collated) || self.ports.insert(key.clone(), row.clone()).is_some()
            {
                return Err(ConstraintError::DuplicatePort(key.clone()));
            }
        }
        Ok(())
    }

    /// Number of rows per table, for summaries.
    pub fn counts(&self) -> (usize, usize, usize) {
        (self.stores.len(), self.trays.len(), self.ports.len())
    }
}

/// The mngt_ip given to a t_store row whose address now belongs to another store.
///
/// t_store.mngt_ip is `unique not null`, and the row cannot be deleted (volumes and replicas
/// reference the store), so the displaced row gets a value that is unique by construction
/// (it contains the row's own id), fits the column, and is plainly not an address.
pub fn vacated_mngt_ip(id: i64) -> String {
    format!("vacated:{id}")
}

/// The form of an mngt_ip that t_store's unique index compares: ASCII letters lowercased,
/// trailing spaces dropped.
///
/// MariaDB compares `varchar` keys in the table's collation, which by default (`latin1_swedish_ci`,
/// `utf8mb4_general_ci`, …) ignores letter case and pads with spaces, so `FD00::7` and
/// `fd00::7 ` are the same key there. The plan writes canonical addresses (lowercase IPv6), but
/// another writer (jconductor copies ZooKeeper's spelling) may have left any spelling, and a
/// plan that missed the match would insert a second copy: a duplicate-key error that fails
/// every pass. Comparing this coarsely is harmless where the DB is stricter (SQLite compares
/// bytes; a `_bin` or NO PAD collation): two spellings of one address are one address, and the
/// worst it costs there is a placeholder written where none was needed.
pub fn mngt_ip_key(ip: &str) -> Cow<'_, str> {
    collation_key(ip)
}

/// A `varchar` key as MariaDB's default collations compare it: ASCII letters lowercased,
/// trailing spaces dropped (see [`mngt_ip_key`]; t_tray's uuid primary key compares alike).
pub fn collation_key(key: &str) -> Cow<'_, str> {
    let key = key.trim_end_matches(' ');
    if key.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(key.to_ascii_lowercase())
    } else {
        Cow::Borrowed(key)
    }
}
