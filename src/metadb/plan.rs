//! The pure diff from the ZooKeeper view to the metadata DB: `plan(view, rows) -> Plan`.
//!
//! The rules, PureFlash's own where it has them:
//! - t_store: one row per store that has a usable mngt_ip (or already has a row), status `OK`
//!   when `alive` exists, else `OFFLINE`. A store that vanished from ZooKeeper keeps its row,
//!   marked `OFFLINE`: volumes reference it, so rows are never deleted.
//! - A key several stores register — an mngt_ip (t_store's unique index), a tray uuid, a port —
//!   goes to one of them, by the same rule for all three (`Claim`): a live store before a dead
//!   one, then the store the DB already names (so ownership does not flip back and forth), then
//!   the lowest id. Liveness comes first because of redeploys: a `pfs` recreated under a new
//!   store id registers the host's address, disks and ports again, while the old store
//!   directory keeps its persistent nodes and only loses `alive`; the live store must get the
//!   rows. Every losing claim is a [`Note`].
//! - A row whose address now belongs to another store gets [`vacated_mngt_ip`]; address swaps
//!   and chains go through that placeholder first so no statement ever collides. Addresses are
//!   compared as MariaDB's unique index compares them ([`mngt_ip_key`]: letter case and
//!   trailing spaces aside), so a row another writer spelt `FD00::7` is the row of `fd00::7`:
//!   it steps aside when another store takes that address, and keeps its spelling when its own
//!   store still holds it.
//! - t_tray: one row per tray of a store with a row; `OK` when `online` exists, else `OFFLINE`.
//!   A tray row ZooKeeper no longer lists is marked `OFFLINE`, never deleted. Fields that cannot
//!   be read keep their DB value; a new row is inserted once device, capacity and object size
//!   are all known. Uuids are compared without regard to letter case, as MariaDB's primary key
//!   compares them, and new rows get the lowercase form ([`tray_key`]).
//! - t_port: exactly the `ports` (purpose 0) and `rep_ports` (purpose 1) of every store in the
//!   view with a row, status `OK`; any other row of purpose 0 or 1 is deleted, those of vanished
//!   stores included. (Nothing references t_port, and a store's tree is deleted node by node, so
//!   "keep the ports of a vanished store" would depend on how the deletions happened to be
//!   batched.) Rows of any other purpose are someone else's and left alone.
//! - A store ZooKeeper refuses to read (an ACL) is unknown, not vanished: its rows are left
//!   out of the plan, so kept as they are, and so are those of a store registering a key one
//!   of them holds ([`Note::KeyHeldByUnreadable`]).
//! - Nothing to change, nothing planned: an empty plan means zero writes.
//!
//! Anything that had to be resolved or skipped is a [`Note`], for the logs.

use std::borrow::Cow;
use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::IpAddr;

use crate::metadb::rows::{
    DEVICE_WIDTH, DbRows, MNGT_IP_WIDTH, PORT_IP_WIDTH, PURPOSE_DATA, PURPOSE_REPLICATION, PortKey,
    PortRow, STATUS_OFFLINE, STATUS_OK, StoreRow, TrayRow, collation_key, mngt_ip_key,
    vacated_mngt_ip,
};
use crate::zk::{ClusterView, StoreId, StoreView, TrayUuid, TrayView};

/// Changes to some columns of one t_store row; `None` leaves a column as it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreUpdate {
    pub id: i64,
    pub mngt_ip: Option<String>,
    pub status: Option<&'static str>,
}

/// Changes to some columns of one t_tray row; `None` leaves a column as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrayUpdate {
    pub uuid: String,
    pub device: Option<String>,
    pub status: Option<&'static str>,
    pub raw_capacity: Option<i64>,
    pub object_size: Option<i64>,
    pub store_id: Option<i64>,
}

impl TrayUpdate {
    fn is_noop(&self) -> bool {
        self.device.is_none()
            && self.status.is_none()
            && self.raw_capacity.is_none()
            && self.object_size.is_none()
            && self.store_id.is_none()
    }
}

/// Why the store that kept a contested key won over another claimant (see `Claim`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precedence {
    /// The keeper is alive and the other store is not.
    Alive,
    /// Both equally alive; the DB already gave the key to the keeper.
    HoldsRow,
    /// Nothing else told them apart; the keeper has the lower id.
    LowerId,
}

impl fmt::Display for Precedence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precedence::Alive => "it is alive and the other is not",
            Precedence::HoldsRow => "the DB already gives it to that store",
            Precedence::LowerId => "it has the lower id",
        })
    }
}

/// Something the plan resolved or had to skip.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Note {
    /// Two stores registered the same mngt_ip in ZooKeeper; `ignored` gets no address from it.
    MngtIpClaimedTwice {
        ip: String,
        kept: i64,
        ignored: i64,
        why: Precedence,
    },
    /// Row `displaced` held `ip`, which store `by` now uses; the row keeps a placeholder.
    MngtIpTaken { ip: String, by: i64, displaced: i64 },
    /// Two stores registered the same tray uuid (letter case aside).
    TrayClaimedTwice {
        uuid: String,
        kept: i64,
        ignored: i64,
        why: Precedence,
    },
    /// One store lists a tray uuid twice, in different letter case; the first is used.
    TrayListedTwice { store: i64, uuid: String },
    /// Two stores registered the same port.
    PortClaimedTwice {
        key: PortKey,
        kept: i64,
        ignored: i64,
        why: Precedence,
    },
    /// A value from ZooKeeper does not fit its column.
    TooLong {
        store: i64,
        column: &'static str,
        value: String,
    },
    /// A device name that is not ASCII: PureFlash's tables are often latin1, where MariaDB in
    /// strict mode refuses it (ERROR 1366) and with it the whole pass.
    NotAscii {
        store: i64,
        column: &'static str,
        value: String,
    },
    /// A store ZooKeeper refuses to read ([`StoreView::unreadable`]): its rows are left as
    /// they are.
    RowsKept { store: i64 },
    /// A readable store registers `key`, which a row left as it is (see
    /// [`Note::RowsKept`]) holds: its own rows are left as they are too, until that row's
    /// store can be read.
    KeyHeldByUnreadable { store: i64, key: String },
    /// Nothing is written: what the readable stores need collides with a row of a store
    /// ZooKeeper refuses to read, which cannot be moved aside while its store is unknown.
    HeldByUnreadable { conflict: String },
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Note::MngtIpClaimedTwice {
                ip,
                kept,
                ignored,
                why,
            } => {
                write!(
                    f,
                    "stores {kept} and {ignored} both register mngt_ip {ip}; store {kept} keeps it: {why}"
                )
            }
            Note::MngtIpTaken { ip, by, displaced } => write!(
                f,
                "mngt_ip {ip} now belongs to store {by}; t_store row {displaced} gets placeholder {:?}",
                vacated_mngt_ip(*displaced)
            ),
            Note::TrayClaimedTwice {
                uuid,
                kept,
                ignored,
                why,
            } => {
                write!(
                    f,
                    "stores {kept} and {ignored} both register tray {uuid}; store {kept} keeps it: {why}"
                )
            }
            Note::TrayListedTwice { store, uuid } => {
                write!(
                    f,
                    "store {store} lists tray {uuid} twice, in different letter case; the first is used"
                )
            }
            Note::PortClaimedTwice {
                key,
                kept,
                ignored,
                why,
            } => {
                write!(
                    f,
                    "stores {kept} and {ignored} both register port {key}; store {kept} keeps it: {why}"
                )
            }
            Note::TooLong {
                store,
                column,
                value,
            } => {
                write!(
                    f,
                    "store {store}: {value:?} does not fit {column}; not written"
                )
            }
            Note::NotAscii {
                store,
                column,
                value,
            } => {
                write!(
                    f,
                    "store {store}: {value:?} is not ASCII, which a latin1 {column} refuses; not written"
                )
            }
            Note::RowsKept { store } => write!(
                f,
                "ZooKeeper refuses to read store {store}: its rows are left as they are"
            ),
            Note::KeyHeldByUnreadable { store, key } => write!(
                f,
                "store {store} registers {key}, which a row of a store ZooKeeper refuses to read holds: store {store}'s rows are left as they are until it can be read"
            ),
            Note::HeldByUnreadable { conflict } => write!(
                f,
                "nothing written: the readable stores need a key a row of a store ZooKeeper refuses to read holds ({conflict}); fix the store's ACL (or the row)"
            ),
        }
    }
}

/// The writes that make the DB equal to the view, in the order they must run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// t_store rows whose mngt_ip is moved to [`vacated_mngt_ip`] before any other write.
    pub store_vacates: Vec<i64>,
    pub store_updates: Vec<StoreUpdate>,
    pub store_inserts: Vec<(i64, StoreRow)>,
    pub tray_updates: Vec<TrayUpdate>,
    pub tray_inserts: Vec<(String, TrayRow)>,
    pub port_deletes: Vec<PortKey>,
    /// Full new contents of existing t_port rows.
    pub port_updates: Vec<(PortKey, PortRow)>,
    pub port_inserts: Vec<(PortKey, PortRow)>,
    /// Conflicts resolved and values skipped; not writes.
    pub notes: Vec<Note>,
}

impl Plan {
    /// Number of rows written.
    pub fn write_count(&self) -> usize {
        self.store_vacates.len()
            + self.store_updates.len()
            + self.store_inserts.len()
            + self.tray_updates.len()
            + self.tray_inserts.len()
            + self.port_deletes.len()
            + self.port_updates.len()
            + self.port_inserts.len()
    }

    /// Number of existing t_store rows changed. Not the statements: a row that steps aside to
    /// its placeholder address and also changes status is two statements but one row.
    pub fn store_rows_updated(&self) -> usize {
        let ids: BTreeSet<i64> = (self.store_vacates.iter().copied())
            .chain(self.store_updates.iter().map(|u| u.id))
            .collect();
        ids.len()
    }

    /// True when there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.write_count() == 0
    }
}

fn row_id(id: StoreId) -> i64 {
    i64::from(id.get())
}

fn status(live: bool) -> &'static str {
    if live { STATUS_OK } else { STATUS_OFFLINE }
}

/// Computes the writes that make `rows` equal to what `view` says.
///
/// A store ZooKeeper refuses to read ([`StoreView::unreadable`]) is unknown, not gone: its
/// rows (its t_store row, the t_tray and t_port rows naming it) are left out of the planning
/// and so left as they are, whatever was last read of it; so are the rows of a store that
/// registers a key one of those rows holds. Should a plan still collide with a kept row,
/// nothing is written (a [`Note::HeldByUnreadable`]) rather than a plan the DB would refuse.
pub fn plan(view: &ClusterView, rows: &DbRows) -> Plan {
    let unreadable: BTreeSet<i64> = view
        .stores
        .values()
        .filter(|store| !store.is_known())
        .map(|store| row_id(store.id))
        .collect();
    if unreadable.is_empty() {
        return plan_readable(view, rows);
    }
    let mut notes: Vec<Note> = unreadable
        .iter()
        .map(|&store| Note::RowsKept { store })
        .collect();
    // A readable store registering a key a kept row holds (a pfs redeployed under a new id on
    // the same host, say) cannot have it while that row's store is unknown: its rows are kept
    // as they are too, and so on, as they hold keys of their own.
    let mut kept = unreadable;
    loop {
        let held = HeldKeys::of(rows, &kept);
        let blocked: Vec<(i64, String)> = view
            .stores
            .values()
            .filter(|store| !kept.contains(&row_id(store.id)))
            .filter_map(|store| Some((row_id(store.id), held.claimed_by(store)?)))
            .collect();
        if blocked.is_empty() {
            break;
        }
        for (store, key) in blocked {
            kept.insert(store);
            notes.push(Note::KeyHeldByUnreadable { store, key });
        }
    }
    let mut planned_view = view.clone();
    planned_view
        .stores
        .retain(|id, _| !kept.contains(&row_id(*id)));
    let mut planned_rows = rows.clone();
    planned_rows.stores.retain(|id, _| !kept.contains(id));
    planned_rows
        .trays
        .retain(|_, row| !kept.contains(&row.store_id));
    planned_rows
        .ports
        .retain(|_, row| row.store_id.is_none_or(|id| !kept.contains(&id)));
    let mut plan = plan_readable(&planned_view, &planned_rows);
    // A safety net: a kept row can still hold a key the plan writes in ways the claims above
    // do not see (a row another writer left naming no store).
    if let Err(conflict) = rows.clone().apply(&plan) {
        plan = Plan::default();
        plan.notes.push(Note::HeldByUnreadable {
            conflict: conflict.to_string(),
        });
    }
    plan.notes.extend(notes);
    plan
}

/// The keys some rows hold, compared as MariaDB compares them: what no store may be given
/// while those rows are kept as they are.
struct HeldKeys {
    mngt_ips: BTreeSet<String>,
    trays: BTreeSet<String>,
    ports: BTreeSet<(String, i64)>,
}

impl HeldKeys {
    /// The keys of the rows of `stores`: their t_store rows, and the t_tray and t_port rows
    /// naming them.
    fn of(rows: &DbRows, stores: &BTreeSet<i64>) -> HeldKeys {
        HeldKeys {
            mngt_ips: stores
                .iter()
                .filter_map(|id| rows.stores.get(id))
                .map(|row| mngt_ip_key(&row.mngt_ip).into_owned())
                .collect(),
            trays: rows
                .trays
                .iter()
                .filter(|(_, row)| stores.contains(&row.store_id))
                .map(|(uuid, _)| collation_key(uuid).into_owned())
                .collect(),
            ports: rows
                .ports
                .iter()
                .filter(|(_, row)| row.store_id.is_some_and(|id| stores.contains(&id)))
                .map(|(key, _)| (collation_key(&key.ip_addr).into_owned(), key.purpose))
                .collect(),
        }
    }

    /// A key `store` registers that these rows hold, named for the logs.
    fn claimed_by(&self, store: &StoreView) -> Option<String> {
        if let Some(ip) = store.mngt_ip.valid() {
            let ip = ip.to_string();
            if self.mngt_ips.contains(mngt_ip_key(&ip).as_ref()) {
                return Some(format!("mngt_ip {ip}"));
            }
        }
        if let Some(uuid) = store
            .trays
            .keys()
            .find(|uuid| self.trays.contains(tray_key(uuid).as_ref()))
        {
            return Some(format!("tray {uuid}"));
        }
        let ports = store.ports.iter().map(|ip| (ip, PURPOSE_DATA));
        let rep_ports = store.rep_ports.iter().map(|ip| (ip, PURPOSE_REPLICATION));
        ports.chain(rep_ports).find_map(|(ip, purpose)| {
            let ip_addr = ip.to_string();
            let held = self
                .ports
                .contains(&(collation_key(&ip_addr).into_owned(), purpose));
            held.then(|| format!("port {}", PortKey { ip_addr, purpose }))
        })
    }
}

/// [`plan`] for a view whose every store could be read.
fn plan_readable(view: &ClusterView, rows: &DbRows) -> Plan {
    let mut plan = Plan::default();
    let finals = plan_stores(view, rows, &mut plan);
    plan_trays(view, rows, &finals, &mut plan);
    plan_ports(view, rows, &finals, &mut plan);
    plan
}

/// The plan for `next` when `rows` already hold what `prev` says (`plan(prev, rows)` is empty,
/// as after any successful pass) — the event-driven case: [`plan_fast`] where it applies, else
/// the full [`plan`]. Either way the writes equal `plan(next, rows)`'s (a property test checks
/// it).
pub fn plan_after(prev: &ClusterView, next: &ClusterView, rows: &DbRows) -> Plan {
    plan_fast(prev, next, rows).unwrap_or_else(|| plan(next, rows))
}

/// The event-driven plan when it can be made without the full one; `None` when the full
/// [`plan`] is needed.
///
/// When every store that changed between the two views changed only in liveness (`alive`, a
/// tray's `online`) or in data the DB does not hold (`free_size`, `state`), no key moved, so
/// only those stores' status columns can need writing: they are planned directly, in time
/// proportional to the change instead of the cluster. More cases need the full plan, because
/// there liveness decides more than a status:
/// - a store whose `alive` flipped while another store registers one of its keys (its mngt_ip,
///   a tray, a port), or while its mngt_ip cannot be read (it claims its row's address): a
///   live claimant beats a dead one, so the owner may change;
/// - a listed tray of a store with a row that has no row under its lowercase uuid, unless its
///   data cannot make one and no row is spelt otherwise (the full plan finds such a row).
///
/// The fast plan carries no [`Note`]s: nothing it covers can add or resolve a conflict.
pub fn plan_fast(prev: &ClusterView, next: &ClusterView, rows: &DbRows) -> Option<Plan> {
    // Which rows an unreadable store keeps is the full plan's to work out.
    let unreadable = |view: &ClusterView| view.stores.values().any(|s| !s.is_known());
    if unreadable(prev) || unreadable(next) {
        return None;
    }
    let mut fast = Plan::default();
    // Whether a flipped store shares a key: the first few flips scan the cluster; past them an
    // index of every key is built once and looked up, so that when every pfs loses its session
    // at once the check stays linear in the cluster (a scan per flip was quadratic).
    let mut flips = 0;
    let mut claims: Option<KeyClaims<'_>> = None;
    // Whether any t_tray row is spelt otherwise than its key (found once, when needed).
    let mut odd_spellings: Option<bool> = None;
    for id in next.changed_since(prev) {
        let (old, new) = (prev.get(id)?, next.get(id)?);
        if !same_keys(old, new) {
            return None;
        }
        if old.alive != new.alive {
            // Without a readable address a store claims its row's, which the keys below do
            // not show: rare enough to leave to the full plan.
            if new.mngt_ip.valid().is_none() && rows.stores.contains_key(&row_id(id)) {
                return None;
            }
            flips += 1;
            let shared = if flips <= SCANNED_FLIPS {
                shares_a_key(next, rows, new)
            } else {
                claims
                    .get_or_insert_with(|| KeyClaims::of(next, rows))
                    .shared(new)
            };
            if shared {
                return None;
            }
        }
        let store_id = row_id(id);
        let Some(row) = rows.stores.get(&store_id) else {
            // In sync with `prev` and uncontested: no row then, none now, and no trays either.
            continue;
        };
        if row.status != status(new.alive) {
            fast.store_updates.push(StoreUpdate {
                id: store_id,
                mngt_ip: None,
                status: Some(status(new.alive)),
            });
        }
        let mut seen: BTreeSet<Cow<'_, str>> = BTreeSet::new();
        for (uuid, tray) in &new.trays {
            let key = tray_key(uuid);
            let Some(row) = rows.trays.get(key.as_ref()) else {
                // No row, and none due: its data cannot make one (and did not change), unless a
                // row spelt otherwise is its row, which the full plan finds.
                let spelt_otherwise = *odd_spellings.get_or_insert_with(|| {
                    rows.trays.keys().any(|k| collation_key(k) != k.as_str())
                });
                if can_have_row(tray) || spelt_otherwise {
                    return None;
                }
                continue;
            };
            // In sync with `prev`, a tray row belongs to the store that won its uuid.
            let update = row.store_id == store_id && row.status != status(tray.online);
            // The full plan uses the first of a store's case variants of one uuid.
            if seen.insert(key.clone()) && update {
                fast.tray_updates.push(TrayUpdate {
                    uuid: key.into_owned(),
                    status: Some(status(tray.online)),
                    ..TrayUpdate::default()
                });
            }
        }
    }
    Some(fast)
}

/// Whether a tray's data can make a t_tray row (what `plan_trays` requires of one to insert).
fn can_have_row(tray: &TrayView) -> bool {
    tray.devname
        .valid()
        .is_some_and(|device| device.len() <= DEVICE_WIDTH && device.is_ascii())
        && tray.capacity.valid().is_some()
        && tray.object_size.valid().is_some()
}

/// Whether two states of a store agree on everything the plan derives keys, ownership,
/// conflicts and non-status columns from (liveness aside, which [`plan_fast`] checks itself).
fn same_keys(a: &StoreView, b: &StoreView) -> bool {
    a.mngt_ip == b.mngt_ip
        && a.ports == b.ports
        && a.rep_ports == b.rep_ports
        && unparsed_ports(a).eq(unparsed_ports(b))
        && a.trays.len() == b.trays.len()
        && a.trays.iter().zip(&b.trays).all(|((ua, ta), (ub, tb))| {
            ua == ub
                && ta.devname == tb.devname
                && ta.capacity == tb.capacity
                && ta.object_size == tb.object_size
        })
}

/// The ports and rep_ports `store` lists under names that are not IP addresses as this
/// program reads them (`fe80::1%eth0` with a zone, `010.0.0.1` with leading zeros), with the
/// purpose of each: pfs and the Java conductor may well use them, so their rows are kept.
fn unparsed_ports(store: &StoreView) -> impl Iterator<Item = (&str, i64)> {
    store.unexpected.keys().filter_map(|path| {
        let (dir, name) = path.split_once('/')?;
        let purpose = match dir {
            "ports" => PURPOSE_DATA,
            "rep_ports" => PURPOSE_REPLICATION,
            _ => return None,
        };
        (!name.contains('/')).then_some((name, purpose))
    })
}

/// Up to this many liveness flips in one plan are checked by scanning the cluster; building
/// [`KeyClaims`] costs about three scans.
const SCANNED_FLIPS: usize = 3;

/// Whether another store in `view` registers one of `store`'s keys: its mngt_ip (or, having no
/// readable one, holds it in its row), one of its tray uuids (in any letter case) or one of
/// its ports. A superset of the conflicts the full plan resolves (it also counts values too
/// long for their column), which is what [`plan_fast`] needs: one pass over the stores, cheap
/// comparisons, no allocation per store.
fn shares_a_key(view: &ClusterView, rows: &DbRows, store: &StoreView) -> bool {
    let ip = store.mngt_ip.valid();
    let trays: Vec<Cow<'_, str>> = store.trays.keys().map(tray_key).collect();
    let same_ip = |other: &StoreView| match (ip, other.mngt_ip.valid()) {
        (None, _) => false,
        (Some(ip), Some(other)) => ip == other,
        (Some(ip), None) => held_address(rows, other).is_some_and(|held| held == ip.to_string()),
    };
    view.stores.values().any(|other| {
        other.id != store.id
            && (same_ip(other)
                || !other.ports.is_disjoint(&store.ports)
                || !other.rep_ports.is_disjoint(&store.rep_ports)
                || other
                    .trays
                    .keys()
                    .any(|uuid| trays.contains(&tray_key(uuid))))
    })
}

/// The address a store without a readable mngt_ip claims: its row's.
fn held_address<'a>(rows: &'a DbRows, store: &StoreView) -> Option<Cow<'a, str>> {
    rows.stores
        .get(&row_id(store.id))
        .map(|row| mngt_ip_key(&row.mngt_ip))
}

/// Which stores register each key of `view` (mngt_ip, tray uuid in any letter case, port):
/// what [`shares_a_key`] tells, by lookups.
struct KeyClaims<'a> {
    ips: HashMap<&'a IpAddr, Claimants>,
    /// Addresses held in their rows by stores without a readable mngt_ip.
    held_ips: HashMap<Cow<'a, str>, Claimants>,
    trays: HashMap<Cow<'a, str>, Claimants>,
    ports: HashMap<&'a IpAddr, Claimants>,
    rep_ports: HashMap<&'a IpAddr, Claimants>,
}

/// The first store to register a key, and whether another one does too.
#[derive(Clone, Copy)]
struct Claimants {
    first: StoreId,
    shared: bool,
}

impl<'a> KeyClaims<'a> {
    fn of(view: &'a ClusterView, rows: &'a DbRows) -> KeyClaims<'a> {
        fn claim<K: Eq + std::hash::Hash>(map: &mut HashMap<K, Claimants>, key: K, id: StoreId) {
            map.entry(key)
                .and_modify(|c| c.shared |= c.first != id)
                .or_insert(Claimants {
                    first: id,
                    shared: false,
                });
        }
        let mut claims = KeyClaims {
            ips: HashMap::new(),
            held_ips: HashMap::new(),
            trays: HashMap::new(),
            ports: HashMap::new(),
            rep_ports: HashMap::new(),
        };
        for store in view.stores.values() {
            match store.mngt_ip.valid() {
                Some(ip) => claim(&mut claims.ips, ip, store.id),
                None => {
                    if let Some(held) = held_address(rows, store) {
                        claim(&mut claims.held_ips, held, store.id);
                    }
                }
            }
            for uuid in store.trays.keys() {
                claim(&mut claims.trays, tray_key(uuid), store.id);
            }
            for port in &store.ports {
                claim(&mut claims.ports, port, store.id);
            }
            for port in &store.rep_ports {
                claim(&mut claims.rep_ports, port, store.id);
            }
        }
        claims
    }

    /// Whether another store registers one of `store`'s keys.
    fn shared(&self, store: &StoreView) -> bool {
        let shared = |c: Option<&Claimants>| c.is_some_and(|c| c.shared);
        // Only stores with a readable address flip here (the others go to the full plan).
        let held_by_another = |ip: &IpAddr| {
            !self.held_ips.is_empty() && self.held_ips.contains_key(ip.to_string().as_str())
        };
        store
            .mngt_ip
            .valid()
            .is_some_and(|ip| shared(self.ips.get(ip)) || held_by_another(ip))
            || store
                .trays
                .keys()
                .any(|uuid| shared(self.trays.get(&tray_key(uuid))))
            || store.ports.iter().any(|p| shared(self.ports.get(p)))
            || store
                .rep_ports
                .iter()
                .any(|p| shared(self.rep_ports.get(p)))
    }
}

/// The t_tray key of a ZooKeeper tray uuid: lowercase, without trailing spaces. MariaDB's
/// primary key on t_tray ignores letter case and trailing spaces ([`collation_key`]), so two
/// spellings of one uuid are one row there; treating them as one everywhere keeps a plan from
/// inserting both (a duplicate-key error that would fail every pass) and makes SQLite hold
/// what MariaDB holds.
pub fn tray_key(uuid: &TrayUuid) -> Cow<'_, str> {
    collation_key(uuid.as_str())
}

/// How strongly a store claims a key (mngt_ip, tray uuid, port) that several stores register;
/// the smallest claim wins. The field order is the precedence:
/// 1. a live store before a dead one: after a redeploy under a new id, the old directory still
///    registers the host's address, disks and ports, and must not keep them from the live one;
/// 2. then the store the DB already gives the key to, so that the owner does not flip back and
///    forth between two equally live (or equally dead) stores;
/// 3. then the lowest id, so the result does not depend on anything else.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Claim {
    dead: bool,
    not_in_db: bool,
    id: i64,
}

impl Claim {
    fn new(alive: bool, in_db: bool, id: i64) -> Self {
        Claim {
            dead: !alive,
            not_in_db: !in_db,
            id,
        }
    }

    /// Why `self`, the winner, beat `loser`.
    fn precedence_over(&self, loser: &Claim) -> Precedence {
        if self.dead != loser.dead {
            Precedence::Alive
        } else if self.not_in_db != loser.not_in_db {
            Precedence::HoldsRow
        } else {
            Precedence::LowerId
        }
    }
}

/// The claims on one key: the best so far (with its value) and every other.
struct Claims<V> {
    winner: Claim,
    value: V,
    losers: Vec<Claim>,
}

/// Claims collected per key, decided once all are in (so every loser's note names the final
/// winner).
struct Contest<K, V>(BTreeMap<K, Claims<V>>);

impl<K: Ord, V> Contest<K, V> {
    fn new() -> Self {
        Contest(BTreeMap::new())
    }

    /// Records a claim. Returns false, ignoring it, when the same store already claimed `key`
    /// (a tray uuid listed twice in different letter case): its first claim stands.
    fn claim(&mut self, key: K, claim: Claim, value: V) -> bool {
        match self.0.entry(key) {
            Entry::Vacant(entry) => {
                entry.insert(Claims {
                    winner: claim,
                    value,
                    losers: Vec::new(),
                });
                true
            }
            Entry::Occupied(mut entry) => {
                let claims = entry.get_mut();
                if claims.winner.id == claim.id || claims.losers.iter().any(|l| l.id == claim.id) {
                    return false;
                }
                if claim < claims.winner {
                    claims
                        .losers
                        .push(std::mem::replace(&mut claims.winner, claim));
                    claims.value = value;
                } else {
                    claims.losers.push(claim);
                }
                true
            }
        }
    }
}

/// Plans t_store and returns every row as it will be after the plan.
fn plan_stores(view: &ClusterView, rows: &DbRows, plan: &mut Plan) -> BTreeMap<i64, StoreRow> {
    let mut contest: Contest<String, ()> = Contest::new();
    for store in view.stores.values() {
        let id = row_id(store.id);
        let Some(ip) = store.mngt_ip.valid().map(|ip| ip.to_string()) else {
            // An address that cannot be read now (malformed, or being rewritten) is no reason
            // to give the row's away: the store claims the one its row holds, as held.
            if let Some(row) = rows.stores.get(&id) {
                let held = mngt_ip_key(&row.mngt_ip).into_owned();
                contest.claim(held, Claim::new(store.alive, true, id), ());
            }
            continue;
        };
        if ip.len() > MNGT_IP_WIDTH {
            plan.notes.push(Note::TooLong {
                store: id,
                column: "t_store.mngt_ip",
                value: ip,
            });
            continue;
        }
        let in_db = rows
            .stores
            .get(&id)
            .is_some_and(|row| mngt_ip_key(&row.mngt_ip) == ip.as_str());
        // `ip` is canonical (no uppercase, no spaces), so it is its own `mngt_ip_key`.
        contest.claim(ip, Claim::new(store.alive, in_db, id), ());
    }
    // Address (as `mngt_ip_key`) -> the store that gets it, and the reverse.
    let mut claimed: BTreeMap<String, i64> = BTreeMap::new();
    let mut wanted: BTreeMap<i64, String> = BTreeMap::new();
    for (ip, claims) in contest.0 {
        for loser in &claims.losers {
            plan.notes.push(Note::MngtIpClaimedTwice {
                ip: ip.clone(),
                kept: claims.winner.id,
                ignored: loser.id,
                why: claims.winner.precedence_over(loser),
            });
        }
        wanted.insert(claims.winner.id, ip.clone());
        claimed.insert(ip, claims.winner.id);
    }

    let ids: BTreeSet<i64> = rows
        .stores
        .keys()
        .copied()
        .chain(view.stores.keys().map(|id| row_id(*id)))
        .collect();
    let mut finals = BTreeMap::new();
    for id in ids {
        let live = view_store(view, id).is_some_and(|s| s.alive);
        let mngt_ip = match (wanted.get(&id), rows.stores.get(&id)) {
            // The row already holds its address, in a spelling MariaDB finds equal: leave it.
            (Some(ip), Some(row)) if mngt_ip_key(&row.mngt_ip) == ip.as_str() => {
                row.mngt_ip.clone()
            }
            (Some(ip), _) => ip.clone(),
            (None, Some(row)) => match claimed.get(mngt_ip_key(&row.mngt_ip).as_ref()) {
                Some(&by) => {
                    plan.notes.push(Note::MngtIpTaken {
                        ip: row.mngt_ip.clone(),
                        by,
                        displaced: id,
                    });
                    vacated_mngt_ip(id)
                }
                None => row.mngt_ip.clone(),
            },
            // Not registered far enough to have a row yet.
            (None, None) => continue,
        };
        finals.insert(
            id,
            StoreRow {
                mngt_ip,
                status: status(live).to_owned(),
            },
        );
    }

    let holder_of: BTreeMap<Cow<'_, str>, i64> = finals
        .iter()
        .map(|(id, row)| (mngt_ip_key(&row.mngt_ip), *id))
        .collect();
    for (&id, want) in &finals {
        let Some(have) = rows.stores.get(&id) else {
            plan.store_inserts.push((id, want.clone()));
            continue;
        };
        let mut mngt_ip = (have.mngt_ip != want.mngt_ip).then(|| want.mngt_ip.clone());
        if mngt_ip.is_some()
            && holder_of
                .get(mngt_ip_key(&have.mngt_ip).as_ref())
                .is_some_and(|&holder| holder != id)
        {
            // Another row will take this address: step aside first, whatever the update order.
            plan.store_vacates.push(id);
            if want.mngt_ip == vacated_mngt_ip(id) {
                mngt_ip = None;
            }
        }
        let status = (have.status != want.status).then(|| {
            if want.status == STATUS_OK {
                STATUS_OK
            } else {
                STATUS_OFFLINE
            }
        });
        if mngt_ip.is_some() || status.is_some() {
            plan.store_updates.push(StoreUpdate {
                id,
                mngt_ip,
                status,
            });
        }
    }
    finals
}

/// The store a row id refers to; rows may hold ids no store directory can have.
fn view_store(view: &ClusterView, id: i64) -> Option<&StoreView> {
    let id = StoreId::new(u32::try_from(id).ok()?).ok()?;
    view.get(id)
}

/// What one tray's row should say; `None` where ZooKeeper's value is missing or unreadable.
struct TrayWant {
    device: Option<String>,
    raw_capacity: Option<i64>,
    object_size: Option<i64>,
    status: &'static str,
    store_id: i64,
}

fn plan_trays(
    view: &ClusterView,
    rows: &DbRows,
    finals: &BTreeMap<i64, StoreRow>,
    plan: &mut Plan,
) {
    // Rows spelt otherwise (uppercase letters, trailing spaces: another writer copied
    // ZooKeeper's spelling, or padded it), by their key: such a row is the tray's row,
    // addressed by its own spelling so that the statements match it on SQLite too. Where
    // SQLite holds several spellings, the canonical one, else the first, is the tray's; the
    // others are rows nothing lists.
    let mut spelt: BTreeMap<String, &str> = BTreeMap::new();
    for uuid in rows.trays.keys() {
        let key = collation_key(uuid);
        if key != uuid.as_str() {
            spelt.entry(key.into_owned()).or_insert(uuid);
        }
    }
    let mut contest: Contest<String, (&TrayView, i64)> = Contest::new();
    for store in view.stores.values() {
        let store_id = row_id(store.id);
        if !finals.contains_key(&store_id) {
            continue; // no t_store row for the foreign key
        }
        for (uuid, tray) in &store.trays {
            let lower = tray_key(uuid);
            let key = match spelt.get(lower.as_ref()) {
                Some(&row_key) if !rows.trays.contains_key(lower.as_ref()) => row_key.to_owned(),
                _ => lower.into_owned(),
            };
            let in_db = rows
                .trays
                .get(&key)
                .is_some_and(|row| row.store_id == store_id);
            let claim = Claim::new(store.alive, in_db, store_id);
            if !contest.claim(key, claim, (tray, store_id)) {
                plan.notes.push(Note::TrayListedTwice {
                    store: store_id,
                    uuid: uuid.to_string(),
                });
            }
        }
    }

    let mut wants: BTreeMap<String, TrayWant> = BTreeMap::new();
    for (uuid, claims) in contest.0 {
        for loser in &claims.losers {
            plan.notes.push(Note::TrayClaimedTwice {
                uuid: uuid.clone(),
                kept: claims.winner.id,
                ignored: loser.id,
                why: claims.winner.precedence_over(loser),
            });
        }
        let (tray, store_id) = claims.value;
        let device = tray.devname.valid().and_then(|device| {
            if device.len() > DEVICE_WIDTH {
                plan.notes.push(Note::TooLong {
                    store: store_id,
                    column: "t_tray.device",
                    value: device.clone(),
                });
                None
            } else if !device.is_ascii() {
                plan.notes.push(Note::NotAscii {
                    store: store_id,
                    column: "t_tray.device",
                    value: device.clone(),
                });
                None
            } else {
                Some(device.clone())
            }
        });
        let size = |value: Option<&u64>| value.map(|&v| v as i64); // parse bounds them to i64
        wants.insert(
            uuid,
            TrayWant {
                device,
                raw_capacity: size(tray.capacity.valid()),
                object_size: size(tray.object_size.valid()),
                status: status(tray.online),
                store_id,
            },
        );
    }

    for (uuid, have) in &rows.trays {
        if !wants.contains_key(uuid) && have.status != STATUS_OFFLINE {
            plan.tray_updates.push(TrayUpdate {
                uuid: uuid.clone(),
                status: Some(STATUS_OFFLINE),
                ..TrayUpdate::default()
            });
        }
    }
    for (uuid, want) in wants {
        match rows.trays.get(&uuid) {
            None => {
                if let (Some(device), Some(raw_capacity), Some(object_size)) =
                    (want.device, want.raw_capacity, want.object_size)
                {
                    let row = TrayRow {
                        device,
                        status: want.status.to_owned(),
                        raw_capacity,
                        object_size,
                        store_id: want.store_id,
                    };
                    plan.tray_inserts.push((uuid, row));
                }
            }
            Some(have) => {
                let differs = |want: Option<i64>, have: i64| want.filter(|w| *w != have);
                let update = TrayUpdate {
                    device: want.device.filter(|d| *d != have.device),
                    status: (have.status != want.status).then_some(want.status),
                    raw_capacity: differs(want.raw_capacity, have.raw_capacity),
                    object_size: differs(want.object_size, have.object_size),
                    store_id: (have.store_id != want.store_id).then_some(want.store_id),
                    uuid,
                };
                if !update.is_noop() {
                    plan.tray_updates.push(update);
                }
            }
        }
    }
}

fn plan_ports(
    view: &ClusterView,
    rows: &DbRows,
    finals: &BTreeMap<i64, StoreRow>,
    plan: &mut Plan,
) {
    // Rows spelt otherwise (an uppercase IPv6 address, trailing spaces), by their key as
    // MariaDB compares it: such a row is the port's row, as for trays (see `plan_trays`).
    let mut spelt: BTreeMap<(Cow<'_, str>, i64), &PortKey> = BTreeMap::new();
    for key in rows.ports.keys() {
        let collated = collation_key(&key.ip_addr);
        if collated != key.ip_addr.as_str() {
            spelt.entry((collated, key.purpose)).or_insert(key);
        }
    }
    let mut contest: Contest<PortKey, ()> = Contest::new();
    for store in view.stores.values() {
        let store_id = row_id(store.id);
        if !finals.contains_key(&store_id) {
            continue;
        }
        let ports = store.ports.iter().map(|ip| (ip, PURPOSE_DATA));
        let rep_ports = store.rep_ports.iter().map(|ip| (ip, PURPOSE_REPLICATION));
        for (ip, purpose) in ports.chain(rep_ports) {
            let ip_addr = ip.to_string();
            if ip_addr.len() > PORT_IP_WIDTH {
                plan.notes.push(Note::TooLong {
                    store: store_id,
                    column: "t_port.ip_addr",
                    value: ip_addr,
                });
                continue;
            }
            let mut key = PortKey { ip_addr, purpose };
            if !rows.ports.contains_key(&key)
                && let Some(&row_key) = spelt.get(&(Cow::Borrowed(key.ip_addr.as_str()), purpose))
            {
                key = row_key.clone();
            }
            let in_db = rows
                .ports
                .get(&key)
                .is_some_and(|row| row.store_id == Some(store_id));
            contest.claim(key, Claim::new(store.alive, in_db, store_id), ());
        }
    }
    let mut wants: BTreeMap<PortKey, i64> = BTreeMap::new();
    for (key, claims) in contest.0 {
        for loser in &claims.losers {
            plan.notes.push(Note::PortClaimedTwice {
                key: key.clone(),
                kept: claims.winner.id,
                ignored: loser.id,
                why: claims.winner.precedence_over(loser),
            });
        }
        wants.insert(key, claims.winner.id);
    }
    // Rows of the purposes pfs registers follow ZooKeeper exactly; any other purpose is
    // someone else's. A port registered under a name this program does not read as an address
    // is still registered: its row is kept (compared as MariaDB compares keys).
    let unparsed: BTreeSet<(Cow<'_, str>, i64)> = view
        .stores
        .values()
        .filter(|store| finals.contains_key(&row_id(store.id)))
        .flat_map(|store| unparsed_ports(store))
        .map(|(name, purpose)| (collation_key(name), purpose))
        .collect();
    plan.port_deletes.extend(
        rows.ports
            .keys()
            .filter(|key| {
                !wants.contains_key(*key)
                    && matches!(key.purpose, PURPOSE_DATA | PURPOSE_REPLICATION)
                    && !unparsed.contains(&(collation_key(&key.ip_addr), key.purpose))
            })
            .cloned(),
    );
    for (key, store_id) in wants {
        let want = PortRow {
            store_id: Some(store_id),
            status: STATUS_OK.to_owned(),
        };
        match rows.ports.get(&key) {
            None => plan.port_inserts.push((key, want)),
            Some(have) if *have != want => plan.port_updates.push((key, want)),
            Some(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{port_key, port_row, store_row, tray_row, uuid, view};
    use crate::metadb::rows::ConstraintError;
    use crate::zk::{Field, StoreView, TrayView};

    /// Plans, checks the plan applies cleanly in SQL order, and returns it with the new rows.
    fn plan_and_apply(view: &ClusterView, rows: &DbRows) -> (Plan, DbRows) {
        let plan = plan(view, rows);
        let mut after = rows.clone();
        after
            .apply(&plan)
            .unwrap_or_else(|e| panic!("plan violates a constraint: {e}\n{plan:#?}"));
        assert!(
            super::plan(view, &after).is_empty(),
            "one plan must converge: {:#?}",
            super::plan(view, &after)
        );
        (plan, after)
    }

    #[test]
    fn nothing_in_nothing_out() {
        assert!(plan(&ClusterView::default(), &DbRows::default()).is_empty());
    }

    #[test]
    fn a_new_store_gets_the_rows_the_conductor_would_write() {
        let u = uuid(1);
        let v = view([StoreView::test(3)
            .at("192.168.0.3")
            .with_tray(u.clone(), TrayView::test("/dev/nvme1n1"))
            .with_tray(uuid(2), TrayView::test("/dev/nvme2n1").offline())
            .with_port("10.1.0.3")
            .with_rep_port("10.2.0.3")]);
        let (plan, rows) = plan_and_apply(&v, &DbRows::default());
        assert_eq!(
            plan.store_inserts,
            vec![(3, store_row("192.168.0.3", "OK"))]
        );
        assert_eq!(rows.trays[u.as_str()], tray_row(3, "/dev/nvme1n1", "OK"));
        assert_eq!(
            rows.trays[uuid(2).as_str()],
            tray_row(3, "/dev/nvme2n1", "OFFLINE")
        );
        assert_eq!(
            rows.ports,
            BTreeMap::from([
                (port_key("10.1.0.3", 0), port_row(3)),
                (port_key("10.2.0.3", 1), port_row(3))
            ])
        );
        assert!(plan.notes.is_empty());
    }

    #[test]
    fn an_unchanged_view_plans_zero_writes() {
        let v = view((1..=50).map(|id| {
            StoreView::test(id)
                .with_trays(4)
                .with_port(&format!("10.9.0.{id}"))
        }));
        let rows = DbRows::synced_from(&v);
        assert_eq!(rows.counts(), (50, 200, 50));
        assert!(plan(&v, &rows).is_empty());
    }

    #[test]
    fn alive_gone_is_one_status_update() {
        let before = view([StoreView::test(1).with_trays(2), StoreView::test(2)]);
        let rows = DbRows::synced_from(&before);
        let after = view([StoreView::test(1).with_trays(2).dead(), StoreView::test(2)]);
        let (plan, rows) = plan_and_apply(&after, &rows);
        assert_eq!(plan.write_count(), 1);
        assert_eq!(
            plan.store_updates,
            vec![StoreUpdate {
                id: 1,
                mngt_ip: None,
                status: Some(STATUS_OFFLINE)
            }]
        );
        assert_eq!(rows.stores[&1].status, "OFFLINE");
        assert_eq!(
            rows.trays.values().filter(|t| t.status == "OK").count(),
            2,
            "tray liveness is its own node"
        );
    }

    #[test]
    fn tray_offline_is_one_tray_update() {
        let rows = DbRows::synced_from(&view([StoreView::test(1).with_trays(2)]));
        let u = uuid(100);
        let mut store = StoreView::test(1).with_trays(2);
        store.trays.get_mut(&u).unwrap().online = false;
        let (plan, rows) = plan_and_apply(&view([store]), &rows);
        assert_eq!(
            plan.tray_updates,
            vec![TrayUpdate {
                uuid: u.to_string(),
                status: Some(STATUS_OFFLINE),
                ..Default::default()
            }]
        );
        assert_eq!(rows.trays[u.as_str()].status, "OFFLINE");
    }

    #[test]
    fn a_vanished_store_goes_offline_and_keeps_its_rows() {
        let rows = DbRows::synced_from(&view([
            StoreView::test(1).with_trays(2).with_port("10.9.0.1"),
            StoreView::test(2),
        ]));
        let (plan, after) = plan_and_apply(&view([StoreView::test(2)]), &rows);
        assert_eq!(after.stores[&1], store_row("10.0.0.1", "OFFLINE"));
        assert!(
            after
                .trays
                .values()
                .all(|t| t.status == "OFFLINE" && t.store_id == 1)
        );
        assert_eq!(
            (after.stores.len(), after.trays.len()),
            (2, 2),
            "stores and trays are never deleted"
        );
        assert_eq!(
            plan.port_deletes,
            vec![port_key("10.9.0.1", 0)],
            "ports follow ZooKeeper exactly"
        );
    }

    /// An unreadable store is unknown, not vanished: its rows stay exactly as they are, what
    /// was last read of it included, while the other stores are synced as ever.
    #[test]
    fn an_unreadable_store_keeps_its_rows_and_the_rest_is_synced() {
        let rows = DbRows::synced_from(&view([
            StoreView::test(1).with_trays(2).with_port("10.9.0.1"),
            StoreView::test(2).with_trays(1),
        ]));
        // Store 1 refused and never read since this view began (no data), store 2 gone dead.
        let refused = StoreView::new(StoreId::new(1).unwrap()).refused();
        let next = view([refused.clone(), StoreView::test(2).with_trays(1).dead()]);
        let (plan, after) = plan_and_apply(&next, &rows);
        assert_eq!(after.stores[&1], rows.stores[&1]);
        assert!(
            after
                .trays
                .values()
                .filter(|t| t.store_id == 1)
                .all(|t| t.status == "OK")
        );
        assert!(after.ports.contains_key(&port_key("10.9.0.1", 0)));
        assert_eq!(after.stores[&2].status, "OFFLINE", "the rest is synced");
        assert!(plan.notes.contains(&Note::RowsKept { store: 1 }));
        // The event-driven plan leaves it to the full one.
        assert_eq!(plan_fast(&view([StoreView::test(1)]), &next, &rows), None);
        assert_eq!(plan_after(&view([StoreView::test(1)]), &next, &rows), plan);

        // A readable store registering the unreadable one's address (a pfs redeployed under a
        // new id on the same host): the row cannot be moved aside while its store is unknown,
        // so the newcomer gets no row yet; the rest is synced all the same.
        let taking = view([
            refused,
            StoreView::test(2).with_trays(1).dead(),
            StoreView::test(3).at("10.0.0.1").with_port("10.9.0.3"),
        ]);
        let (plan, after) = plan_and_apply(&taking, &rows);
        assert!(!after.stores.contains_key(&3));
        assert_eq!(after.stores[&1], rows.stores[&1]);
        assert_eq!(after.stores[&2].status, "OFFLINE");
        assert!(
            plan.notes.contains(&Note::KeyHeldByUnreadable {
                store: 3,
                key: "mngt_ip 10.0.0.1".into()
            }),
            "{:?}",
            plan.notes
        );
        // So is one registering a tray or a port of the unreadable store's.
        let tray = view([
            StoreView::new(StoreId::new(1).unwrap()).refused(),
            StoreView::test(4).with_tray(uuid(100), TrayView::test("/dev/x")),
            StoreView::test(5).with_port("10.9.0.1"),
        ]);
        let (plan, after) = plan_and_apply(&tray, &rows);
        assert!(!after.stores.contains_key(&4) && !after.stores.contains_key(&5));
        let held: Vec<_> = plan
            .notes
            .iter()
            .filter(|note| matches!(note, Note::KeyHeldByUnreadable { .. }))
            .collect();
        assert_eq!(held.len(), 2, "{:?}", plan.notes);
    }

    /// A port pfs registers under a name this program does not parse as an address (a zone
    /// suffix, leading zeros) is reported, and its row, another writer's, is kept.
    #[test]
    fn a_port_named_unparsably_keeps_its_row() {
        let mut rows = DbRows::synced_from(&view([StoreView::test(1).with_port("10.9.0.1")]));
        rows.ports.insert(port_key("fe80::1%eth0", 0), port_row(1));
        rows.ports.insert(port_key("010.0.0.1", 1), port_row(1));
        let mut store = StoreView::test(1).with_port("10.9.0.1");
        store.set("ports/fe80::1%eth0", b"");
        store.set("rep_ports/010.0.0.1", b"");
        assert_eq!(store.problems().len(), 2, "reported");
        let (plan, after) = plan_and_apply(&view([store.clone()]), &rows);
        assert!(plan.port_deletes.is_empty(), "{plan:?}");
        assert_eq!(after.ports.len(), 3);
        // Gone from ZooKeeper: its row goes too, which the event-driven plan leaves to the
        // full one.
        let before = store.clone();
        store.remove("rep_ports/010.0.0.1");
        let (plan, _) = plan_and_apply(&view([store.clone()]), &after);
        assert_eq!(plan.port_deletes, vec![port_key("010.0.0.1", 1)]);
        assert_eq!(plan_fast(&view([before]), &view([store]), &after), None);
    }

    /// MariaDB's t_port key ignores letter case and trailing spaces: a row spelt otherwise is
    /// the port's row, taken over where it is. An insert of the port's own spelling next to it
    /// would fail every pass (the row kept for a store that registers that very spelling).
    #[test]
    fn a_port_row_spelt_otherwise_is_the_ports_row() {
        let mut rows = DbRows::synced_from(&view([StoreView::test(1), StoreView::test(2)]));
        rows.ports.insert(port_key("10.9.0.1 ", 0), port_row(2));
        rows.ports.insert(port_key("FD00::7", 1), port_row(1));
        let mut padded = StoreView::test(2);
        padded.set("ports/10.9.0.1 ", b"");
        let registers = StoreView::test(1)
            .with_port("10.9.0.1")
            .with_rep_port("fd00::7");
        let (plan, after) = plan_and_apply(&view([registers, padded]), &rows);
        assert!(plan.port_inserts.is_empty(), "{plan:?}");
        assert!(plan.port_deletes.is_empty(), "{plan:?}");
        assert_eq!(
            plan.port_updates,
            vec![(port_key("10.9.0.1 ", 0), port_row(1))]
        );
        assert_eq!(after.ports[&port_key("FD00::7", 1)], port_row(1));
        // The table model refuses what MariaDB refuses.
        let mut duplicate = Plan::default();
        duplicate
            .port_inserts
            .push((port_key("10.9.0.1", 0), port_row(1)));
        assert!(after.clone().apply(&duplicate).is_err());
    }

    #[test]
    fn port_rows_of_other_purposes_are_left_alone() {
        let mut rows = DbRows::synced_from(&view([StoreView::test(1).with_port("10.9.0.1")]));
        rows.ports.insert(port_key("10.9.0.1", 7), port_row(1));
        rows.ports.insert(port_key("10.9.0.5", -1), port_row(42));
        let (plan, after) = plan_and_apply(&view([StoreView::test(1)]), &rows);
        assert_eq!(plan.port_deletes, vec![port_key("10.9.0.1", 0)]);
        assert_eq!(after.ports.len(), 2);
    }

    #[test]
    fn a_tray_zookeeper_stops_listing_goes_offline() {
        let rows = DbRows::synced_from(&view([StoreView::test(1).with_trays(2)]));
        let (_, after) = plan_and_apply(&view([StoreView::test(1).with_trays(1)]), &rows);
        assert_eq!(after.trays[uuid(101).as_str()].status, "OFFLINE");
        assert_eq!(after.trays[uuid(100).as_str()].status, "OK");
    }

    #[test]
    fn ports_follow_the_store_exactly() {
        let rows = DbRows::synced_from(&view([StoreView::test(1)
            .with_port("10.9.0.1")
            .with_port("10.9.0.2")]));
        let (plan, after) = plan_and_apply(
            &view([StoreView::test(1)
                .with_port("10.9.0.2")
                .with_rep_port("10.9.0.2")]),
            &rows,
        );
        assert_eq!(plan.port_deletes, vec![port_key("10.9.0.1", 0)]);
        assert_eq!(
            after.ports.keys().cloned().collect::<Vec<_>>(),
            vec![port_key("10.9.0.2", 0), port_key("10.9.0.2", 1)]
        );
    }

    #[test]
    fn a_port_moving_to_another_store_is_reassigned() {
        let rows = DbRows::synced_from(&view([
            StoreView::test(1).with_port("10.9.0.9"),
            StoreView::test(2),
        ]));
        let (plan, after) = plan_and_apply(
            &view([StoreView::test(1), StoreView::test(2).with_port("10.9.0.9")]),
            &rows,
        );
        assert_eq!(
            plan.port_updates,
            vec![(port_key("10.9.0.9", 0), port_row(2))]
        );
        assert!(plan.port_deletes.is_empty());
        assert_eq!(after.ports[&port_key("10.9.0.9", 0)], port_row(2));
    }

    #[test]
    fn unreadable_tray_data_blocks_the_insert_but_not_status() {
        let u = uuid(7);
        let mut bad = TrayView::test("/dev/sdb");
        bad.capacity = Field::Invalid(crate::zk::DataError::NotANumber {
            value: "abc".into(),
        });
        let v = view([
            StoreView::test(1).with_tray(u.clone(), bad.clone()),
            StoreView::test(2).with_trays(1),
        ]);
        let (_, rows) = plan_and_apply(&v, &DbRows::default());
        assert!(!rows.trays.contains_key(u.as_str()), "no capacity, no row");
        assert_eq!(rows.stores.len(), 2, "the rest is synced");
        assert_eq!(rows.trays.len(), 1);

        // A row that already exists keeps its capacity but follows `online`.
        let mut rows = rows;
        rows.trays
            .insert(u.to_string(), tray_row(1, "/dev/sdb", "OK"));
        let v = view([
            StoreView::test(1).with_tray(u.clone(), bad.offline()),
            StoreView::test(2).with_trays(1),
        ]);
        let (plan, after) = plan_and_apply(&v, &rows);
        assert_eq!(
            plan.tray_updates,
            vec![TrayUpdate {
                uuid: u.to_string(),
                status: Some(STATUS_OFFLINE),
                ..Default::default()
            }]
        );
        assert_eq!(after.trays[u.as_str()].raw_capacity, 1_000_000_000_000);
    }

    #[test]
    fn a_store_without_an_address_gets_no_row_until_it_has_one() {
        let registering = view([StoreView::test(4)
            .without_ip()
            .with_trays(1)
            .with_port("10.9.0.4")]);
        assert!(
            plan(&registering, &DbRows::default()).is_empty(),
            "no t_store row, so no tray or port rows either"
        );

        let rows = DbRows::synced_from(&view([StoreView::test(4)]));
        let (_, after) = plan_and_apply(&view([StoreView::test(4).without_ip().dead()]), &rows);
        assert_eq!(
            after.stores[&4],
            store_row("10.0.0.4", "OFFLINE"),
            "existing row keeps its address, follows alive"
        );
    }

    #[test]
    fn an_address_taken_from_a_vanished_store_displaces_its_row() {
        let rows = DbRows::synced_from(&view([StoreView::test(1).at("10.5.5.5")]));
        let (plan, after) = plan_and_apply(&view([StoreView::test(2).at("10.5.5.5")]), &rows);
        assert_eq!(plan.store_vacates, vec![1]);
        assert_eq!(after.stores[&1], store_row("vacated:1", "OFFLINE"));
        assert_eq!(after.stores[&2], store_row("10.5.5.5", "OK"));
        assert_eq!(
            plan.notes,
            vec![Note::MngtIpTaken {
                ip: "10.5.5.5".into(),
                by: 2,
                displaced: 1
            }]
        );
        assert!(plan.notes[0].to_string().contains("vacated:1"));
    }

    /// MariaDB's unique index on mngt_ip ignores letter case and trailing spaces; jconductor
    /// writes ZooKeeper's spelling, the plan the canonical one.
    #[test]
    fn an_address_spelt_differently_in_the_db_is_the_same_address() {
        // Row 3 was written as `FD00::7`; store 3's directory still says so, but it is dead, and
        // store 7 now has the address. Row 3 must step aside before row 7 is inserted.
        let mut rows = DbRows::default();
        rows.stores.insert(3, store_row("FD00::7", "OK"));
        let v = view([
            StoreView::test(3).at("FD00::7").dead(),
            StoreView::test(7).at("fd00::7"),
        ]);
        let (plan, after) = plan_and_apply(&v, &rows);
        assert_eq!(plan.store_vacates, vec![3]);
        assert_eq!(after.stores[&3], store_row("vacated:3", "OFFLINE"));
        assert_eq!(after.stores[&7], store_row("fd00::7", "OK"));
        assert!(plan.notes.contains(&Note::MngtIpTaken {
            ip: "FD00::7".into(),
            by: 7,
            displaced: 3
        }));

        // The same with a trailing space, which MariaDB's PAD SPACE collations ignore.
        let mut rows = DbRows::default();
        rows.stores.insert(3, store_row("10.5.5.5 ", "OK"));
        let v = view([
            StoreView::test(3).at("10.5.5.5").dead(),
            StoreView::test(7).at("10.5.5.5"),
        ]);
        let (_, after) = plan_and_apply(&v, &rows);
        assert_eq!(after.stores[&3], store_row("vacated:3", "OFFLINE"));
        assert_eq!(after.stores[&7], store_row("10.5.5.5", "OK"));

        // A row whose own store holds the address keeps it, in its spelling, and so wins the
        // address over an equally live newcomer (it is the store the DB gives it to).
        let mut rows = DbRows::default();
        rows.stores.insert(3, store_row("FD00::7", "OK"));
        let v = view([
            StoreView::test(3).at("fd00::7"),
            StoreView::test(2).at("fd00::7"),
        ]);
        let (plan, after) = plan_and_apply(&v, &rows);
        assert!(plan.is_empty(), "{plan:#?}");
        assert_eq!(after, rows);
        assert!(plan.notes.contains(&Note::MngtIpClaimedTwice {
            ip: "fd00::7".into(),
            kept: 3,
            ignored: 2,
            why: Precedence::HoldsRow
        }));
    }

    #[test]
    fn two_stores_swapping_addresses_never_collide() {
        let rows = DbRows::synced_from(&view([
            StoreView::test(1).at("10.5.5.1"),
            StoreView::test(2).at("10.5.5.2"),
        ]));
        let (plan, after) = plan_and_apply(
            &view([
                StoreView::test(1).at("10.5.5.2"),
                StoreView::test(2).at("10.5.5.1"),
            ]),
            &rows,
        );
        assert_eq!(plan.store_vacates, vec![1, 2]);
        assert_eq!(after.stores[&1].mngt_ip, "10.5.5.2");
        assert_eq!(after.stores[&2].mngt_ip, "10.5.5.1");
    }

    #[test]
    fn a_chain_of_moves_never_collides() {
        let rows = DbRows::synced_from(&view(
            (1..=4).map(|id| StoreView::test(id).at(&format!("10.5.5.{id}"))),
        ));
        let moved = view((1..=4).map(|id| StoreView::test(id).at(&format!("10.5.5.{}", id + 1))));
        let (_, after) = plan_and_apply(&moved, &rows);
        assert_eq!(after.stores[&4].mngt_ip, "10.5.5.5");
    }

    #[test]
    fn address_moves_that_work_only_in_one_row_order_are_refused() {
        // Store 2 leaves 10.5.5.2 and store 1 takes it: fine one row after the other, in this
        // order only. A multi-row UPDATE picks its own order, so the model refuses it; a plan
        // sets store 2 aside first.
        let rows = DbRows::synced_from(&view([
            StoreView::test(1).at("10.5.5.1"),
            StoreView::test(2).at("10.5.5.2"),
        ]));
        let moves = |vacates: Vec<i64>| Plan {
            store_vacates: vacates,
            store_updates: vec![
                StoreUpdate {
                    id: 2,
                    mngt_ip: Some("10.5.5.3".into()),
                    status: None,
                },
                StoreUpdate {
                    id: 1,
                    mngt_ip: Some("10.5.5.2".into()),
                    status: None,
                },
            ],
            ..Plan::default()
        };
        assert_eq!(
            rows.clone().apply(&moves(vec![])),
            Err(ConstraintError::DuplicateMngtIp("10.5.5.2".into()))
        );
        let mut after = rows.clone();
        after.apply(&moves(vec![2])).expect("applies in any order");
        assert_eq!(after.stores[&1].mngt_ip, "10.5.5.2");
        assert_eq!(after.stores[&2].mngt_ip, "10.5.5.3");
        let (plan, _) = plan_and_apply(
            &view([
                StoreView::test(1).at("10.5.5.2"),
                StoreView::test(2).at("10.5.5.3"),
            ]),
            &rows,
        );
        assert_eq!(plan.store_vacates, vec![2]);
    }

    #[test]
    fn two_updates_taking_one_address_are_refused() {
        let rows = DbRows::synced_from(&view([
            StoreView::test(1).at("10.5.5.1"),
            StoreView::test(2).at("10.5.5.2"),
        ]));
        let plan = Plan {
            store_updates: [1, 2]
                .map(|id| StoreUpdate {
                    id,
                    mngt_ip: Some("10.5.5.9".into()),
                    status: None,
                })
                .into(),
            ..Plan::default()
        };
        assert_eq!(
            rows.clone().apply(&plan),
            Err(ConstraintError::DuplicateMngtIp("10.5.5.9".into()))
        );
    }

    #[test]
    fn equal_claims_keep_the_lowest_id() {
        let u = uuid(1);
        let v = view([
            StoreView::test(3)
                .at("10.5.5.5")
                .with_tray(u.clone(), TrayView::test("/dev/a"))
                .with_port("10.9.9.9"),
            StoreView::test(8)
                .at("10.5.5.5")
                .with_tray(u.clone(), TrayView::test("/dev/b"))
                .with_port("10.9.9.9"),
        ]);
        let (plan, rows) = plan_and_apply(&v, &DbRows::default());
        assert_eq!(
            rows.stores.keys().copied().collect::<Vec<_>>(),
            vec![3],
            "store 8 has no usable address"
        );
        assert_eq!(rows.trays[u.as_str()].store_id, 3);
        assert!(plan.notes.contains(&Note::MngtIpClaimedTwice {
            ip: "10.5.5.5".into(),
            kept: 3,
            ignored: 8,
            why: Precedence::LowerId
        }));

        // With distinct addresses the tray and port conflicts surface as well.
        let v = view([
            StoreView::test(3)
                .with_tray(u.clone(), TrayView::test("/dev/a"))
                .with_port("10.9.9.9"),
            StoreView::test(8)
                .with_tray(u.clone(), TrayView::test("/dev/b"))
                .with_port("10.9.9.9"),
        ]);
        let (plan, rows) = plan_and_apply(&v, &DbRows::default());
        assert_eq!(rows.trays[u.as_str()].store_id, 3);
        assert_eq!(rows.ports[&port_key("10.9.9.9", 0)], port_row(3));
        assert!(plan.notes.contains(&Note::TrayClaimedTwice {
            uuid: u.to_string(),
            kept: 3,
            ignored: 8,
            why: Precedence::LowerId
        }));
        assert!(plan.notes.contains(&Note::PortClaimedTwice {
            key: port_key("10.9.9.9", 0),
            kept: 3,
            ignored: 8,
            why: Precedence::LowerId
        }));
    }

    /// design.md §1: a `pfs` recreated under a new store id registers the same host address,
    /// disks and ports; the old directory keeps its persistent nodes but has no `alive`.
    fn redeployed(id: u32, alive: bool) -> StoreView {
        let store = StoreView::test(id)
            .at("10.5.5.5")
            .with_tray(uuid(1), TrayView::test("/dev/nvme0n1"))
            .with_tray(uuid(2), TrayView::test("/dev/nvme1n1"))
            .with_port("10.6.6.6")
            .with_rep_port("10.7.7.7");
        if alive {
            store
        } else {
            let mut store = store.dead();
            store.trays.values_mut().for_each(|t| t.online = false);
            store
        }
    }

    #[test]
    fn a_redeployed_store_takes_over_from_its_dead_predecessor() {
        let rows = DbRows::synced_from(&view([redeployed(1, true)]));
        let v = view([redeployed(1, false), redeployed(2, true)]);
        let (plan, after) = plan_and_apply(&v, &rows);
        assert_eq!(after.stores[&1], store_row("vacated:1", "OFFLINE"));
        assert_eq!(after.stores[&2], store_row("10.5.5.5", "OK"));
        assert_eq!(
            (plan.store_vacates.len(), plan.store_updates.len()),
            (1, 1),
            "row 1 steps aside and goes OFFLINE"
        );
        assert_eq!(plan.store_rows_updated(), 1, "one row, two statements");
        assert!(
            after
                .trays
                .values()
                .all(|t| t.store_id == 2 && t.status == "OK")
        );
        assert_eq!(
            after.ports,
            BTreeMap::from([
                (port_key("10.6.6.6", 0), port_row(2)),
                (port_key("10.7.7.7", 1), port_row(2))
            ])
        );
        // The losing store is still reported, with the reason.
        let alive = Precedence::Alive;
        for note in [
            Note::MngtIpClaimedTwice {
                ip: "10.5.5.5".into(),
                kept: 2,
                ignored: 1,
                why: alive,
            },
            Note::MngtIpTaken {
                ip: "10.5.5.5".into(),
                by: 2,
                displaced: 1,
            },
            Note::TrayClaimedTwice {
                uuid: uuid(1).to_string(),
                kept: 2,
                ignored: 1,
                why: alive,
            },
            Note::PortClaimedTwice {
                key: port_key("10.7.7.7", 1),
                kept: 2,
                ignored: 1,
                why: alive,
            },
        ] {
            assert!(plan.notes.contains(&note), "{note} missing: {plan:#?}");
        }
        assert!(
            plan.notes[0]
                .to_string()
                .ends_with("store 2 keeps it: it is alive and the other is not"),
            "{}",
            plan.notes[0]
        );

        // The new store crashes too: both dead, the rows stay where they are (no flip back to
        // the lower id), only the status follows.
        let v = view([redeployed(1, false), redeployed(2, false)]);
        let (plan, after) = plan_and_apply(&v, &after);
        assert_eq!(after.stores[&2], store_row("10.5.5.5", "OFFLINE"));
        assert!(after.trays.values().all(|t| t.store_id == 2));
        assert_eq!(plan.store_updates.len(), 1);
        assert!(plan.notes.contains(&Note::MngtIpClaimedTwice {
            ip: "10.5.5.5".into(),
            kept: 2,
            ignored: 1,
            why: Precedence::HoldsRow,
        }));

        // Whichever is alive owns the host.
        let (_, after) = plan_and_apply(&view([redeployed(1, true), redeployed(2, false)]), &after);
        assert_eq!(after.stores[&1], store_row("10.5.5.5", "OK"));
        assert_eq!(after.stores[&2], store_row("vacated:2", "OFFLINE"));
        assert!(after.trays.values().all(|t| t.store_id == 1));
        assert!(after.ports.values().all(|p| p.store_id == Some(1)));
    }

    #[test]
    fn a_store_whose_address_cannot_be_read_keeps_its_row_s() {
        // Store 9 is the leftover directory of an earlier deployment that registered the same
        // address; live store 1 holds it.
        let live_1 = || {
            StoreView::test(1)
                .at("10.0.0.5")
                .with_trays(1)
                .with_port("10.1.0.5")
        };
        let leftover_9 = || StoreView::test(9).at("10.0.0.5").dead();
        let mut rows = DbRows::default();
        rows.apply(&plan(&view([live_1(), leftover_9()]), &rows))
            .unwrap();
        assert_eq!(rows.stores[&1], store_row("10.0.0.5", "OK"));
        assert!(!rows.stores.contains_key(&9));
        // Store 1's mngt_ip turns unreadable (bad data, or rewritten by a tool) while it lives:
        // nothing moves, and no row appears for the leftover.
        let unreadable = view([live_1().without_ip(), leftover_9()]);
        let p = plan(&unreadable, &rows);
        assert_eq!(p.write_count(), 0, "{p:#?}");
        // Dead and unreadable, it still holds what the DB gives it over an equally dead
        // claimant.
        let both_dead = view([live_1().without_ip().dead(), leftover_9()]);
        let mut after = rows.clone();
        after.apply(&plan(&both_dead, &rows)).unwrap();
        assert_eq!(after.stores[&1], store_row("10.0.0.5", "OFFLINE"));
        assert!(!after.stores.contains_key(&9));
        // A live claimant does take it from a dead store that cannot say its address, also
        // when that store's death is the one change (the event-driven plan).
        let contested = |alive_1: bool| {
            let store_1 = live_1().without_ip();
            view([
                if alive_1 { store_1 } else { store_1.dead() },
                StoreView::test(9).at("10.0.0.5"),
            ])
        };
        rows.apply(&plan(&contested(true), &rows)).unwrap();
        assert_eq!(
            rows.stores[&1],
            store_row("10.0.0.5", "OK"),
            "equally live: held"
        );
        let taken = plan_after(&contested(true), &contested(false), &rows);
        assert_eq!(taken, plan(&contested(false), &rows));
        let mut after = rows.clone();
        after.apply(&taken).unwrap();
        assert_eq!(after.stores[&9], store_row("10.0.0.5", "OK"));
        assert_eq!(after.stores[&1], store_row("vacated:1", "OFFLINE"));
    }

    #[test]
    fn many_flips_at_once_are_planned_fast_unless_a_flipped_store_shares_a_key() {
        let stores = |alive: bool| {
            (1..=20).map(move |id| {
                let store = StoreView::test(id)
                    .with_tray(uuid(id), TrayView::test("/dev/a"))
                    .with_port(&format!("10.1.0.{id}"));
                if alive { store } else { store.dead() }
            })
        };
        let prev = view(stores(true));
        let rows = DbRows::synced_from(&prev);
        let next = view(stores(false));
        let fast = plan_fast(&prev, &next, &rows).expect("no key is shared");
        assert_eq!(fast.store_updates.len(), 20);
        let applied = |plan: &Plan| {
            let mut after = rows.clone();
            after.apply(plan).unwrap();
            after
        };
        assert_eq!(applied(&fast), applied(&plan(&next, &rows)));
        assert!(
            applied(&fast)
                .stores
                .values()
                .all(|s| s.status == "OFFLINE")
        );

        // The last store to flip also registers, in capitals, a tray of store 1's: past the
        // flips checked by scanning, the index must see it.
        let shared: TrayUuid = uuid(1).to_string().to_uppercase().parse().unwrap();
        let with_shared = |alive: bool| {
            view(stores(alive).map(|store| {
                if store.id.get() == 20 {
                    store.with_tray(shared.clone(), TrayView::test("/dev/b"))
                } else {
                    store
                }
            }))
        };
        let prev = with_shared(true);
        let rows = DbRows::synced_from(&prev);
        assert_eq!(plan_fast(&prev, &with_shared(false), &rows), None);
    }

    #[test]
    fn a_redeploy_seen_as_events_is_planned_in_full() {
        // Store 2 registers its persistent nodes first and `alive` last, as pfs does: until
        // then store 1, dead, keeps everything; `alive` appearing alone must hand it all over.
        let rows = DbRows::synced_from(&view([redeployed(1, true)]));
        let registering = view([redeployed(1, false), redeployed(2, false)]);
        let rows = {
            let mut after = rows.clone();
            after.apply(&plan(&registering, &rows)).unwrap();
            after
        };
        assert_eq!(
            rows.stores.len(),
            1,
            "store 2 has no address of its own yet"
        );
        let live = view([redeployed(1, false), redeployed(2, true)]);
        let fast = plan_after(&registering, &live, &rows);
        assert_eq!(fast, plan(&live, &rows));
        let mut after = rows;
        after.apply(&fast).unwrap();
        assert_eq!(after.stores[&2], store_row("10.5.5.5", "OK"));
        assert!(after.trays.values().all(|t| t.store_id == 2));
    }

    #[test]
    fn equally_live_claimants_leave_the_key_where_the_db_has_it() {
        let u = uuid(1);
        let mut rows = DbRows::default();
        rows.stores.insert(8, store_row("10.5.5.5", "OK"));
        // Store 3 has a row of its own (only stores with a row can own trays and ports).
        rows.stores.insert(3, store_row("10.3.3.3", "OK"));
        rows.trays
            .insert(u.to_string(), tray_row(8, "/dev/a", "OK"));
        rows.ports.insert(port_key("10.9.9.9", 0), port_row(8));
        let v = view([
            StoreView::test(3)
                .at("10.5.5.5")
                .with_tray(u.clone(), TrayView::test("/dev/a"))
                .with_port("10.9.9.9"),
            StoreView::test(8)
                .at("10.5.5.5")
                .with_tray(u.clone(), TrayView::test("/dev/a"))
                .with_port("10.9.9.9"),
        ]);
        let (plan, after) = plan_and_apply(&v, &rows);
        assert!(plan.is_empty(), "{plan:#?}");
        assert_eq!(after, rows);
        assert!(plan.notes.iter().all(|n| matches!(
            n,
            Note::MngtIpClaimedTwice {
                kept: 8,
                ignored: 3,
                why: Precedence::HoldsRow,
                ..
            } | Note::TrayClaimedTwice {
                kept: 8,
                ignored: 3,
                why: Precedence::HoldsRow,
                ..
            } | Note::PortClaimedTwice {
                kept: 8,
                ignored: 3,
                why: Precedence::HoldsRow,
                ..
            }
        )));
        assert_eq!(plan.notes.len(), 3);
    }

    fn spelt(uuid: &str) -> TrayUuid {
        uuid.parse().expect("valid uuid")
    }

    #[test]
    fn tray_uuids_differing_in_case_are_one_row() {
        let lower = "0000000a-0000-4000-8000-00000000000b";
        let upper = "0000000A-0000-4000-8000-00000000000B";
        // Two stores: one row, under the lowercase key, which MariaDB would also accept.
        let v = view([
            StoreView::test(1).with_tray(spelt(upper), TrayView::test("/dev/a")),
            StoreView::test(2).with_tray(spelt(lower), TrayView::test("/dev/b")),
        ]);
        let (plan, after) = plan_and_apply(&v, &DbRows::default());
        assert_eq!(after.trays.keys().collect::<Vec<_>>(), vec![lower]);
        assert_eq!(after.trays[lower].store_id, 1);
        assert!(plan.notes.contains(&Note::TrayClaimedTwice {
            uuid: lower.into(),
            kept: 1,
            ignored: 2,
            why: Precedence::LowerId
        }));

        // One store listing both spellings: the first is used, once.
        let v = view([StoreView::test(1)
            .with_tray(spelt(upper), TrayView::test("/dev/a"))
            .with_tray(spelt(lower), TrayView::test("/dev/b"))]);
        let (plan, after) = plan_and_apply(&v, &DbRows::default());
        assert_eq!(after.trays.len(), 1);
        assert_eq!(after.trays[lower].device, "/dev/a");
        assert_eq!(
            plan.notes,
            vec![Note::TrayListedTwice {
                store: 1,
                uuid: lower.into()
            }]
        );

        // A row another writer spelt in uppercase is that tray's row: updated where it is,
        // never inserted again (a duplicate key on MariaDB).
        let mut rows = DbRows::synced_from(&view([StoreView::test(1)]));
        rows.trays
            .insert(upper.into(), tray_row(1, "/dev/a", "OFFLINE"));
        let v = view([StoreView::test(1).with_tray(spelt(lower), TrayView::test("/dev/a"))]);
        let (plan, after) = plan_and_apply(&v, &rows);
        assert!(plan.tray_inserts.is_empty());
        assert_eq!(
            plan.tray_updates,
            vec![TrayUpdate {
                uuid: upper.into(),
                status: Some(STATUS_OK),
                ..Default::default()
            }]
        );
        assert_eq!(after.trays.len(), 1);
        // The fast path finds it too (by planning in full).
        let dead_tray =
            view([StoreView::test(1).with_tray(spelt(lower), TrayView::test("/dev/a").offline())]);
        assert_eq!(
            plan_after(&v, &dead_tray, &after),
            super::plan(&dead_tray, &after)
        );
    }

    #[test]
    fn values_wider_than_their_column_are_skipped_with_a_note() {
        let v = view([StoreView::test(1)
            .at("2001:db8:1234:5678:9abc:def0:1234:5678")
            .with_port("2001:db8::1:2:3:4")
            .with_tray(
                uuid(1),
                TrayView::test(&format!("/dev/{}", "x".repeat(100))),
            )]);
        let (plan, rows) = plan_and_apply(&v, &DbRows::default());
        assert!(rows.stores.is_empty());
        assert!(plan.notes.iter().any(|n| matches!(
            n,
            Note::TooLong {
                column: "t_store.mngt_ip",
                ..
            }
        )));

        let v = view(
            [StoreView::test(1).with_port("2001:db8::1:2:3:4").with_tray(
                uuid(1),
                TrayView::test(&format!("/dev/{}", "x".repeat(100))),
            )],
        );
        let (plan, rows) = plan_and_apply(&v, &DbRows::default());
        assert!(rows.ports.is_empty() && rows.trays.is_empty());
        assert_eq!(plan.notes.len(), 2);
    }

    #[test]
    fn a_device_name_a_latin1_column_refuses_is_left_out_with_a_note() {
        let v = view([StoreView::test(1).with_tray(uuid(1), TrayView::test("/dev/диск"))]);
        let (plan, rows) = plan_and_apply(&v, &DbRows::default());
        assert_eq!(rows.stores.len(), 1, "the rest of the store is written");
        assert!(rows.trays.is_empty(), "a new tray row needs its device");
        let not_ascii = |plan: &Plan| {
            plan.notes.iter().any(|n| {
                matches!(
                    n,
                    Note::NotAscii {
                        store: 1,
                        column: "t_tray.device",
                        ..
                    }
                )
            })
        };
        assert!(not_ascii(&plan));
        // An existing row keeps its device and follows everything else.
        let mut before = rows.clone();
        before
            .trays
            .insert(uuid(1).as_str().to_owned(), tray_row(1, "/dev/sdb", "OK"));
        let offline =
            view([StoreView::test(1).with_tray(uuid(1), TrayView::test("/dev/диск").offline())]);
        let (plan, after) = plan_and_apply(&offline, &before);
        assert!(not_ascii(&plan));
        let tray = &after.trays[uuid(1).as_str()];
        assert_eq!(
            (tray.device.as_str(), tray.status.as_str()),
            ("/dev/sdb", "OFFLINE")
        );
    }

    #[test]
    fn foreign_rows_with_odd_ids_are_only_marked_offline() {
        let mut rows = DbRows::default();
        for (id, ip) in [
            (0, "10.7.0.0"),
            (-5, "10.7.0.5"),
            (5_000_000_000, "10.7.0.9"),
        ] {
            rows.stores.insert(id, store_row(ip, "OK"));
        }
        let (plan, after) = plan_and_apply(&ClusterView::default(), &rows);
        assert_eq!(plan.store_updates.len(), 3);
        assert!(after.stores.values().all(|r| r.status == "OFFLINE"));
    }

    #[test]
    fn the_constraint_model_rejects_what_sql_would() {
        let mut rows = DbRows::synced_from(&view([StoreView::test(1), StoreView::test(2)]));
        let clash = Plan {
            store_updates: vec![StoreUpdate {
                id: 1,
                mngt_ip: Some("10.0.0.2".into()),
                status: None,
            }],
            ..Plan::default()
        };
        assert_eq!(
            rows.apply(&clash),
            Err(ConstraintError::DuplicateMngtIp("10.0.0.2".into()))
        );
        // MariaDB's unique index ignores letter case and trailing spaces...
        rows.stores.insert(5, store_row("FD00::5", "OK"));
        for spelling in ["fd00::5", "fd00::5 "] {
            let again = Plan {
                store_inserts: vec![(9, store_row(spelling, "OK"))],
                ..Plan::default()
            };
            assert_eq!(
                rows.apply(&again),
                Err(ConstraintError::DuplicateMngtIp(spelling.into()))
            );
        }
        // ...so a row may change the spelling of its own address, and nothing else collides.
        let respelt = Plan {
            store_updates: vec![StoreUpdate {
                id: 5,
                mngt_ip: Some("fd00::5".into()),
                status: None,
            }],
            ..Plan::default()
        };
        assert_eq!(rows.apply(&respelt), Ok(()));
        assert_eq!(rows.stores[&5].mngt_ip, "fd00::5");
        let orphan = Plan {
            tray_inserts: vec![("t".into(), tray_row(9, "/dev/x", "OK"))],
            ..Plan::default()
        };
        assert_eq!(
            rows.apply(&orphan),
            Err(ConstraintError::TrayWithoutStore(9))
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        const IPS: [&str; 6] = [
            "10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "fd00::6",
        ];

        /// Tray uuid `n`, spelt in uppercase when `upper` (the same uuid to MariaDB).
        fn cased_uuid(n: u32, upper: bool) -> TrayUuid {
            let head = if upper { "0000000A" } else { "0000000a" };
            spelt(&format!("{head}-0000-4000-8000-{n:012}"))
        }

        fn arb_uuid() -> impl Strategy<Value = TrayUuid> {
            (0u32..6, prop::bool::weighted(0.2)).prop_map(|(n, upper)| cased_uuid(n, upper))
        }

        fn arb_tray() -> impl Strategy<Value = TrayView> {
            (any::<bool>(), 0u8..4, any::<bool>()).prop_map(|(online, dev, readable)| {
                let mut tray = TrayView::test(&format!("/dev/sd{dev}"));
                tray.online = online;
                if !readable {
                    tray.capacity = Field::Invalid(crate::zk::DataError::Empty);
                }
                tray
            })
        }

        fn arb_store() -> impl Strategy<Value = StoreView> {
            (
                1u32..7,
                prop::option::of(0..IPS.len()),
                any::<bool>(),
                prop::collection::btree_map(arb_uuid(), arb_tray(), 0..3),
                prop::collection::btree_set(0..IPS.len(), 0..3),
                prop::collection::btree_set(0..IPS.len(), 0..2),
            )
                .prop_map(|(id, ip, alive, trays, ports, rep_ports)| {
                    let mut store = StoreView::test(id);
                    store.mngt_ip =
                        ip.map_or(Field::Missing, |i| Field::Valid(IPS[i].parse().unwrap()));
                    store.alive = alive;
                    store.trays = trays;
                    store.ports = ports.into_iter().map(|i| IPS[i].parse().unwrap()).collect();
                    store.rep_ports = rep_ports
                        .into_iter()
                        .map(|i| IPS[i].parse().unwrap())
                        .collect();
                    store
                })
        }

        /// Rows a real DB could hold: unique addresses, trays pointing at existing stores.
        /// Addresses are sometimes spelt as another writer might (uppercase, a trailing space):
        /// one address to MariaDB, and SQLite may even hold several spellings of it.
        fn arb_rows() -> impl Strategy<Value = DbRows> {
            (
                prop::collection::btree_map(
                    0i64..8,
                    (0..IPS.len() + 2, 0u8..4, any::<bool>()),
                    0..6,
                ),
                prop::collection::btree_map(
                    (arb_uuid(), prop::bool::weighted(0.2)),
                    (0usize..6, any::<bool>()),
                    0..4,
                ),
                prop::collection::btree_map(
                    (0..IPS.len(), 0i64..2),
                    (0i64..8, any::<bool>()),
                    0..5,
                ),
            )
                .prop_map(|(stores, trays, ports)| {
                    let mut rows = DbRows::default();
                    let mut used = std::collections::BTreeSet::new();
                    for (id, (ip, spelling, ok)) in stores {
                        let ip = IPS.get(ip).map_or_else(
                            || format!("old-{id}"),
                            |s| match spelling {
                                0 => s.to_ascii_uppercase(),
                                1 => format!("{s} "),
                                _ => s.to_string(),
                            },
                        );
                        if used.insert(ip.clone()) {
                            rows.stores
                                .insert(id, store_row(&ip, if ok { "OK" } else { "ERROR" }));
                        }
                    }
                    let ids: Vec<i64> = rows.stores.keys().copied().collect();
                    // Both spellings of one uuid only on SQLite, but the plan must cope.
                    for ((uuid, padded), (owner, ok)) in trays {
                        if let Some(&store_id) = ids.get(owner % ids.len().max(1)) {
                            let mut row =
                                tray_row(store_id, "/dev/old", if ok { "OK" } else { "OFFLINE" });
                            row.raw_capacity = 5;
                            let spelling = if padded {
                                format!("{uuid} ")
                            } else {
                                uuid.to_string()
                            };
                            rows.trays.insert(spelling, row);
                        }
                    }
                    for ((ip, purpose), (store_id, ok)) in ports {
                        let row = PortRow {
                            store_id: Some(store_id),
                            status: if ok { "OK" } else { "X" }.into(),
                        };
                        rows.ports.insert(port_key(IPS[ip], purpose), row);
                    }
                    rows
                })
        }

        /// A change to one store: liveness only, or anything.
        fn arb_change() -> impl Strategy<Value = (u32, u8, u32, bool)> {
            (1u32..7, 0u8..10, 0u32..6, any::<bool>())
        }

        fn mutate(view: &ClusterView, (id, kind, n, flag): (u32, u8, u32, bool)) -> ClusterView {
            let mut next = view.clone();
            let Ok(id) = StoreId::new(id) else {
                return next;
            };
            match kind {
                0 | 1 => {
                    if let Some(store) = next.stores.get_mut(&id) {
                        let store = std::sync::Arc::make_mut(store);
                        if kind == 0 {
                            store.alive = flag;
                        } else if let Some(tray) = {
                            let count = store.trays.len().max(1);
                            store.trays.values_mut().nth(n as usize % count)
                        } {
                            tray.online = flag;
                        }
                    }
                }
                2 => {
                    if let Some(store) = next.stores.get_mut(&id) {
                        let store = std::sync::Arc::make_mut(store);
                        if let Some(tray) = store.trays.values_mut().next() {
                            tray.free_size = Field::Valid(u64::from(n));
                            tray.state = Field::Valid("X".into());
                        }
                    }
                }
                3 => {
                    next.stores.remove(&id);
                }
                9 => {
                    next.mark_unreadable(id, "refused".into());
                }
                4 => {
                    if let Some(store) = next.stores.get_mut(&id) {
                        std::sync::Arc::make_mut(store).mngt_ip = if flag {
                            Field::Missing
                        } else {
                            Field::Valid(IPS[n as usize % IPS.len()].parse().unwrap())
                        };
                    }
                }
                _ => {
                    if let Some(store) = next.stores.get_mut(&id) {
                        let store = std::sync::Arc::make_mut(store);
                        let ip: std::net::IpAddr = IPS[n as usize % IPS.len()].parse().unwrap();
                        let toggle = |set: &mut std::collections::BTreeSet<std::net::IpAddr>| {
                            if !set.remove(&ip) {
                                set.insert(ip);
                            }
                        };
                        match kind {
                            5 => {
                                store
                                    .trays
                                    .insert(cased_uuid(n, flag), TrayView::test("/dev/new"));
                            }
                            6 => toggle(&mut store.ports),
                            7 => toggle(&mut store.rep_ports),
                            _ => {
                                if let Some(tray) = store.trays.values_mut().next() {
                                    tray.devname = Field::Valid(format!("/dev/sd{n}"));
                                }
                            }
                        }
                    }
                }
            }
            next
        }

        fn writes(mut plan: Plan) -> Plan {
            plan.notes.clear();
            plan.store_updates.sort_by_key(|u| u.id);
            plan.tray_updates.sort_by(|a, b| a.uuid.cmp(&b.uuid));
            plan
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            /// The event-driven plan writes exactly what the full plan writes (with enough
            /// changes to pass the flips it checks by scanning).
            #[test]
            fn plan_after_equals_the_full_plan(
                stores in prop::collection::vec(arb_store(), 0..8),
                rows in arb_rows(),
                changes in prop::collection::vec(arb_change(), 1..10),
            ) {
                let prev = view(stores);
                let mut synced = rows.clone();
                synced.apply(&plan(&prev, &rows)).unwrap();
                let next = changes.into_iter().fold(prev.clone(), |v, c| mutate(&v, c));
                prop_assert_eq!(writes(plan_after(&prev, &next, &synced)), writes(plan(&next, &synced)));
            }

            /// Stores ZooKeeper refuses to read keep every row of theirs as it is; the plan
            /// still applies in SQL order and converges.
            #[test]
            fn unreadable_stores_keep_their_rows(
                stores in prop::collection::vec(arb_store(), 0..6),
                rows in arb_rows(),
                refused in prop::collection::vec(1u32..7, 1..3),
            ) {
                let mut v = view(stores);
                for id in refused {
                    v.mark_unreadable(StoreId::new(id).unwrap(), "refused".into());
                }
                let unknown: BTreeSet<i64> = v.stores.values().filter(|s| !s.is_known()).map(|s| row_id(s.id)).collect();
                let (plan, after) = plan_and_apply(&v, &rows);
                prop_assert!(
                    !plan.notes.iter().any(|note| matches!(note, Note::HeldByUnreadable { .. })),
                    "the claims leave the safety net nothing to catch: {:?}",
                    plan.notes
                );
                for id in &unknown {
                    prop_assert_eq!(after.stores.get(id), rows.stores.get(id));
                }
                for (key, row) in rows.trays.iter().filter(|(_, row)| unknown.contains(&row.store_id)) {
                    prop_assert_eq!(after.trays.get(key), Some(row));
                }
                for (key, row) in rows.ports.iter().filter(|(_, row)| row.store_id.is_some_and(|id| unknown.contains(&id))) {
                    prop_assert_eq!(after.ports.get(key), Some(row));
                }
            }

            /// Any view over any consistent DB: the plan applies without a constraint error in
            /// SQL order, one plan converges, and the result says what ZooKeeper says.
            #[test]
            fn every_plan_applies_converges_and_mirrors_the_view(
                stores in prop::collection::vec(arb_store(), 0..6),
                rows in arb_rows(),
            ) {
                let v = view(stores);
                let (_, after) = plan_and_apply(&v, &rows);
                let alive = |id: i64| view_store(&v, id).is_some_and(|s| s.alive);
                // A key several stores register goes to a live one before a dead one, then to
                // the one the DB gave it to, then to the lowest id.
                let beats = |winner: i64, loser: i64, held: &dyn Fn(i64) -> bool| {
                    if alive(winner) != alive(loser) {
                        alive(winner)
                    } else if held(winner) != held(loser) {
                        held(winner)
                    } else {
                        winner < loser
                    }
                };
                let has_row = |s: &&std::sync::Arc<StoreView>| after.stores.contains_key(&row_id(s.id));
                // Nothing is ever deleted from t_store or t_tray.
                prop_assert!(rows.stores.keys().all(|id| after.stores.contains_key(id)));
                prop_assert!(rows.trays.keys().all(|u| after.trays.contains_key(u)));
                for (id, row) in &after.stores {
                    prop_assert_eq!(&row.status, if alive(*id) { "OK" } else { "OFFLINE" });
                }
                // Addresses: a store without its own is beaten by the row that has it.
                // Spelling aside, as MariaDB's unique index compares them.
                let is = |row: &StoreRow, ip: &str| mngt_ip_key(&row.mngt_ip) == ip;
                for store in v.stores.values() {
                    let id = row_id(store.id);
                    let Some(ip) = store.mngt_ip.valid().map(|ip| ip.to_string()) else { continue };
                    let holders = after.stores.values().filter(|row| is(row, &ip)).count();
                    prop_assert_eq!(holders, 1, "{} rows hold {}, which store {} registers", holders, ip, id);
                    if after.stores.get(&id).is_some_and(|row| is(row, &ip)) {
                        continue;
                    }
                    let holder = after.stores.iter().find(|(_, row)| is(row, &ip)).map(|(id, _)| *id);
                    prop_assert!(holder.is_some(), "nobody got {ip}, which store {id} registers");
                    let holder = holder.unwrap();
                    // The holder registers it, or registers no readable address and held it.
                    let claims = |s: i64| view_store(&v, s).is_some_and(|st| match st.mngt_ip.valid() {
                        Some(i) => i.to_string() == ip,
                        None => rows.stores.get(&s).is_some_and(|row| is(row, &ip)),
                    });
                    prop_assert!(claims(holder), "store {holder} got {ip} without claiming it");
                    let held = |s: i64| rows.stores.get(&s).is_some_and(|row| is(row, &ip));
                    prop_assert!(beats(holder, id, &held), "store {holder} got {ip} over store {id}");
                }
                // Trays: one row per uuid (letter case aside), owned by the best claimant and
                // following its `online`; any other row is OFFLINE.
                for (key, tray) in &after.trays {
                    let same = |a: &str, b: &str| collation_key(a) == collation_key(b);
                    let claimants: Vec<i64> = v.stores.values().filter(has_row)
                        .filter(|s| s.trays.keys().any(|u| same(u.as_str(), key)))
                        .map(|s| row_id(s.id))
                        .collect();
                    let canonical = collation_key(key).into_owned();
                    let chosen = if after.trays.contains_key(&canonical) {
                        &canonical
                    } else {
                        after.trays.keys().find(|k| same(k, key)).unwrap()
                    };
                    if claimants.is_empty() || key != chosen {
                        prop_assert_eq!(&tray.status, "OFFLINE");
                        continue;
                    }
                    let owner = tray.store_id;
                    prop_assert!(claimants.contains(&owner), "tray {key} given to store {owner}, not a claimant");
                    let held = |s: i64| rows.trays.get(key).is_some_and(|row| row.store_id == s);
                    for &other in &claimants {
                        prop_assert!(other == owner || beats(owner, other, &held), "tray {key}: store {owner} over {other}");
                    }
                    let (_, listed) = view_store(&v, owner).unwrap().trays.iter().find(|(u, _)| same(u.as_str(), key)).unwrap();
                    prop_assert_eq!(&tray.status, if listed.online { "OK" } else { "OFFLINE" });
                }
                // Ports: exactly the ones stores with a row register, each owned by the best
                // claimant.
                for store in v.stores.values().filter(has_row) {
                    for (ips, purpose) in [(&store.ports, 0), (&store.rep_ports, 1)] {
                        for ip in ips {
                            prop_assert!(after.ports.contains_key(&port_key(&ip.to_string(), purpose)));
                        }
                    }
                }
                for key in rows.ports.keys().filter(|key| !matches!(key.purpose, 0 | 1)) {
                    prop_assert!(after.ports.contains_key(key), "port row {} deleted", key);
                }
                for (key, port) in &after.ports {
                    if !matches!(key.purpose, 0 | 1) {
                        // Not pfs's: left as it was.
                        prop_assert_eq!(rows.ports.get(key), Some(port), "port row {} changed", key);
                        continue;
                    }
                    let ip: std::net::IpAddr = key.ip_addr.parse().unwrap();
                    let claimants: Vec<i64> = v.stores.values().filter(has_row)
                        .filter(|s| if key.purpose == 0 { s.ports.contains(&ip) } else { s.rep_ports.contains(&ip) })
                        .map(|s| row_id(s.id))
                        .collect();
                    let owner = port.store_id.unwrap_or(-1);
                    prop_assert!(claimants.contains(&owner), "port row {key} {port:?} is not in ZooKeeper");
                    let held = |s: i64| rows.ports.get(key).is_some_and(|row| row.store_id == Some(s));
                    for &other in &claimants {
                        prop_assert!(other == owner || beats(owner, other, &held), "port {key}: store {owner} over {other}");
                    }
                }
            }
        }
    }
}
