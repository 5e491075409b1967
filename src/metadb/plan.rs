//! The pure diff from the ZooKeeper view to the metadata DB: `plan(view, rows) -> Plan`.
//!
//! The rules, PureFlash's own where it has them:
//! - t_store: one row per store that has a usable mngt_ip (or already has a row), status `OK`
//!   when `alive` exists, else `OFFLINE`. A store that vanished from ZooKeeper keeps its row,
//!   marked `OFFLINE`: volumes reference it, so rows are never deleted.
//! - mngt_ip is unique: when two stores claim one address the lower id keeps it; a row whose
//!   address now belongs to another store gets [`vacated_mngt_ip`]; address swaps and chains go
//!   through that placeholder first so no statement ever collides.
//! - t_tray: one row per tray of a store with a row; `OK` when `online` exists, else `OFFLINE`.
//!   A tray row ZooKeeper no longer lists is marked `OFFLINE`, never deleted. Fields that cannot
//!   be read keep their DB value; a new row is inserted once device, capacity and object size
//!   are all known.
//! - t_port: exactly the `ports` (purpose 0) and `rep_ports` (purpose 1) of every store in the
//!   view with a row, status `OK`; any other row is deleted. (Nothing references t_port, and a
//!   store's tree is deleted node by node, so "keep the ports of a vanished store" would depend
//!   on how the deletions happened to be batched.)
//! - Nothing to change, nothing planned: an empty plan means zero writes.
//!
//! Anything that had to be resolved or skipped is a [`Note`], for the logs.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::metadb::rows::{
    DEVICE_WIDTH, DbRows, MNGT_IP_WIDTH, PORT_IP_WIDTH, PURPOSE_DATA, PURPOSE_REPLICATION, PortKey,
    PortRow, STATUS_OFFLINE, STATUS_OK, StoreRow, TrayRow, vacated_mngt_ip,
};
use crate::zk::{ClusterView, StoreId, StoreView};

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

/// Something the plan resolved or had to skip.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Note {
    /// Two stores registered the same mngt_ip in ZooKeeper; the lower id keeps it.
    MngtIpClaimedTwice { ip: String, kept: i64, ignored: i64 },
    /// Row `displaced` held `ip`, which store `by` now uses; the row keeps a placeholder.
    MngtIpTaken { ip: String, by: i64, displaced: i64 },
    /// Two stores registered the same tray uuid; the lower id keeps it.
    TrayClaimedTwice {
        uuid: String,
        kept: i64,
        ignored: i64,
    },
    /// Two stores registered the same port; the lower id keeps it.
    PortClaimedTwice {
        key: PortKey,
        kept: i64,
        ignored: i64,
    },
    /// A value from ZooKeeper does not fit its column.
    TooLong {
        store: i64,
        column: &'static str,
        value: String,
    },
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Note::MngtIpClaimedTwice { ip, kept, ignored } => {
                write!(
                    f,
                    "stores {kept} and {ignored} both register mngt_ip {ip}; store {kept} keeps it"
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
            } => {
                write!(
                    f,
                    "stores {kept} and {ignored} both register tray {uuid}; store {kept} keeps it"
                )
            }
            Note::PortClaimedTwice { key, kept, ignored } => {
                write!(
                    f,
                    "stores {kept} and {ignored} both register port {key}; store {kept} keeps it"
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
pub fn plan(view: &ClusterView, rows: &DbRows) -> Plan {
    let mut plan = Plan::default();
    let finals = plan_stores(view, rows, &mut plan);
    plan_trays(view, rows, &finals, &mut plan);
    plan_ports(view, rows, &finals, &mut plan);
    plan
}

/// The plan for `next` when `rows` already hold what `prev` says (`plan(prev, rows)` is empty,
/// as after any successful pass) — the event-driven case.
///
/// When every store that changed between the two views changed only in liveness (`alive`, a
/// tray's `online`) or in data the DB does not hold (`free_size`, `state`), nothing that decides
/// keys, ownership or conflicts moved, so only those stores' status columns can need writing:
/// they are planned directly, in time proportional to the change instead of the cluster. Any
/// other change is planned in full. Either way the writes equal `plan(next, rows)`'s (a property
/// test checks it); only the fast path carries no [`Note`]s.
pub fn plan_after(prev: &ClusterView, next: &ClusterView, rows: &DbRows) -> Plan {
    let mut fast = Plan::default();
    for id in next.changed_since(prev) {
        let (Some(old), Some(new)) = (prev.get(id), next.get(id)) else {
            return plan(next, rows);
        };
        if !same_keys(old, new) {
            return plan(next, rows);
        }
        let store_id = row_id(id);
        if let Some(row) = rows.stores.get(&store_id)
            && row.status != status(new.alive)
        {
            fast.store_updates.push(StoreUpdate {
                id: store_id,
                mngt_ip: None,
                status: Some(status(new.alive)),
            });
        }
        for (uuid, tray) in &new.trays {
            // In sync with `prev`, a tray row belongs to the store that won its uuid.
            if let Some(row) = rows.trays.get(uuid.as_str())
                && row.store_id == store_id
                && row.status != status(tray.online)
            {
                fast.tray_updates.push(TrayUpdate {
                    uuid: uuid.to_string(),
                    status: Some(status(tray.online)),
                    ..TrayUpdate::default()
                });
            }
        }
    }
    fast
}

/// Whether two states of a store agree on everything the plan derives keys, ownership,
/// conflicts and non-status columns from.
fn same_keys(a: &StoreView, b: &StoreView) -> bool {
    a.mngt_ip == b.mngt_ip
        && a.ports == b.ports
        && a.rep_ports == b.rep_ports
        && a.trays.len() == b.trays.len()
        && a.trays.iter().zip(&b.trays).all(|((ua, ta), (ub, tb))| {
            ua == ub
                && ta.devname == tb.devname
                && ta.capacity == tb.capacity
                && ta.object_size == tb.object_size
        })
}

/// Plans t_store and returns every row as it will be after the plan.
fn plan_stores(view: &ClusterView, rows: &DbRows, plan: &mut Plan) -> BTreeMap<i64, StoreRow> {
    // Addresses the stores in ZooKeeper want; stores iterate in id order, so the lowest wins.
    let mut claimed: BTreeMap<String, i64> = BTreeMap::new();
    let mut wanted: BTreeMap<i64, String> = BTreeMap::new();
    for store in view.stores.values() {
        let id = row_id(store.id);
        let Some(ip) = store.mngt_ip.valid().map(|ip| ip.to_string()) else {
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
        match claimed.get(&ip) {
            Some(&kept) => plan.notes.push(Note::MngtIpClaimedTwice {
                ip,
                kept,
                ignored: id,
            }),
            None => {
                claimed.insert(ip.clone(), id);
                wanted.insert(id, ip);
            }
        }
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
            (Some(ip), _) => ip.clone(),
            (None, Some(row)) => match claimed.get(&row.mngt_ip) {
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

    let holder_of: BTreeMap<&str, i64> = finals
        .iter()
        .map(|(id, row)| (row.mngt_ip.as_str(), *id))
        .collect();
    for (&id, want) in &finals {
        let Some(have) = rows.stores.get(&id) else {
            plan.store_inserts.push((id, want.clone()));
            continue;
        };
        let mut mngt_ip = (have.mngt_ip != want.mngt_ip).then(|| want.mngt_ip.clone());
        if mngt_ip.is_some()
            && holder_of
                .get(have.mngt_ip.as_str())
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
    let mut wants: BTreeMap<String, TrayWant> = BTreeMap::new();
    for store in view.stores.values() {
        let store_id = row_id(store.id);
        if !finals.contains_key(&store_id) {
            continue; // no t_store row for the foreign key
        }
        for (uuid, tray) in &store.trays {
            if let Some(kept) = wants.get(uuid.as_str()) {
                plan.notes.push(Note::TrayClaimedTwice {
                    uuid: uuid.to_string(),
                    kept: kept.store_id,
                    ignored: store_id,
                });
                continue;
            }
            let device = tray.devname.valid().and_then(|device| {
                if device.len() > DEVICE_WIDTH {
                    plan.notes.push(Note::TooLong {
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
                uuid.to_string(),
                TrayWant {
                    device,
                    raw_capacity: size(tray.capacity.valid()),
                    object_size: size(tray.object_size.valid()),
                    status: status(tray.online),
                    store_id,
                },
            );
        }
    }

    let listed: BTreeSet<String> = wants.keys().cloned().collect();
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
    for (uuid, have) in &rows.trays {
        if !listed.contains(uuid) && have.status != STATUS_OFFLINE {
            plan.tray_updates.push(TrayUpdate {
                uuid: uuid.clone(),
                status: Some(STATUS_OFFLINE),
                ..TrayUpdate::default()
            });
        }
    }
}

fn plan_ports(
    view: &ClusterView,
    rows: &DbRows,
    finals: &BTreeMap<i64, StoreRow>,
    plan: &mut Plan,
) {
    let mut wants: BTreeMap<PortKey, i64> = BTreeMap::new();
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
            let key = PortKey { ip_addr, purpose };
            match wants.get(&key) {
                Some(&kept) => plan.notes.push(Note::PortClaimedTwice {
                    key,
                    kept,
                    ignored: store_id,
                }),
                None => {
                    wants.insert(key, store_id);
                }
            }
        }
    }
    plan.port_deletes.extend(
        rows.ports
            .keys()
            .filter(|key| !wants.contains_key(*key))
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
    fn duplicate_claims_keep_the_lowest_id() {
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
            ignored: 8
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
            ignored: 8
        }));
        assert!(plan.notes.contains(&Note::PortClaimedTwice {
            key: port_key("10.9.9.9", 0),
            kept: 3,
            ignored: 8
        }));
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

        const IPS: [&str; 5] = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5"];

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
                prop::collection::btree_map(0u32..6, arb_tray(), 0..3),
                prop::collection::btree_set(0..IPS.len(), 0..3),
                prop::collection::btree_set(0..IPS.len(), 0..2),
            )
                .prop_map(|(id, ip, alive, trays, ports, rep_ports)| {
                    let mut store = StoreView::test(id);
                    store.mngt_ip =
                        ip.map_or(Field::Missing, |i| Field::Valid(IPS[i].parse().unwrap()));
                    store.alive = alive;
                    store.trays = trays.into_iter().map(|(n, t)| (uuid(n), t)).collect();
                    store.ports = ports.into_iter().map(|i| IPS[i].parse().unwrap()).collect();
                    store.rep_ports = rep_ports
                        .into_iter()
                        .map(|i| IPS[i].parse().unwrap())
                        .collect();
                    store
                })
        }

        /// Rows a real DB could hold: unique addresses, trays pointing at existing stores.
        fn arb_rows() -> impl Strategy<Value = DbRows> {
            (
                prop::collection::btree_map(0i64..8, (0..IPS.len() + 2, any::<bool>()), 0..6),
                prop::collection::btree_map(0u32..6, (0usize..6, any::<bool>()), 0..4),
                prop::collection::btree_map(
                    (0..IPS.len(), 0i64..2),
                    (0i64..8, any::<bool>()),
                    0..5,
                ),
            )
                .prop_map(|(stores, trays, ports)| {
                    let mut rows = DbRows::default();
                    let mut used = std::collections::BTreeSet::new();
                    for (id, (ip, ok)) in stores {
                        let ip = IPS
                            .get(ip)
                            .map_or_else(|| format!("old-{id}"), |s| s.to_string());
                        if used.insert(ip.clone()) {
                            rows.stores
                                .insert(id, store_row(&ip, if ok { "OK" } else { "ERROR" }));
                        }
                    }
                    let ids: Vec<i64> = rows.stores.keys().copied().collect();
                    for (n, (owner, ok)) in trays {
                        if let Some(&store_id) = ids.get(owner % ids.len().max(1)) {
                            let mut row =
                                tray_row(store_id, "/dev/old", if ok { "OK" } else { "OFFLINE" });
                            row.raw_capacity = 5;
                            rows.trays.insert(uuid(n).to_string(), row);
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
            (1u32..7, 0u8..9, 0u32..6, any::<bool>())
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
                                store.trays.insert(uuid(n), TrayView::test("/dev/new"));
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

            /// The event-driven plan writes exactly what the full plan writes.
            #[test]
            fn plan_after_equals_the_full_plan(
                stores in prop::collection::vec(arb_store(), 0..6),
                rows in arb_rows(),
                changes in prop::collection::vec(arb_change(), 1..4),
            ) {
                let prev = view(stores);
                let mut synced = rows.clone();
                synced.apply(&plan(&prev, &rows)).unwrap();
                let next = changes.into_iter().fold(prev.clone(), |v, c| mutate(&v, c));
                prop_assert_eq!(writes(plan_after(&prev, &next, &synced)), writes(plan(&next, &synced)));
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
                // Nothing is ever deleted from t_store or t_tray.
                prop_assert!(rows.stores.keys().all(|id| after.stores.contains_key(id)));
                prop_assert!(rows.trays.keys().all(|u| after.trays.contains_key(u)));
                for (id, row) in &after.stores {
                    let live = u32::try_from(*id).ok().and_then(|n| StoreId::new(n).ok()).and_then(|sid| v.get(sid)).is_some_and(|s| s.alive);
                    prop_assert_eq!(&row.status, if live { "OK" } else { "OFFLINE" });
                }
                // A tray no store with a row lists is OFFLINE; a listed one belongs to the
                // lowest such store.
                for (uuid, tray) in &after.trays {
                    let owners: Vec<i64> = v.stores.values()
                        .filter(|s| after.stores.contains_key(&i64::from(s.id.get())) && s.trays.keys().any(|u| u.as_str() == uuid))
                        .map(|s| i64::from(s.id.get()))
                        .collect();
                    match owners.first() {
                        None => prop_assert_eq!(&tray.status, "OFFLINE"),
                        Some(&owner) => prop_assert_eq!(tray.store_id, owner),
                    }
                }
                // Every port row is one a store with a row lists (t_port equals ZooKeeper).
                for (key, port) in &after.ports {
                    let ip: std::net::IpAddr = key.ip_addr.parse().unwrap();
                    let owner = port.store_id.and_then(|id| u32::try_from(id).ok()).and_then(|n| StoreId::new(n).ok()).and_then(|sid| v.get(sid));
                    let listed = owner.is_some_and(|s| {
                        after.stores.contains_key(&i64::from(s.id.get()))
                            && if key.purpose == 0 { s.ports.contains(&ip) } else { s.rep_ports.contains(&ip) }
                    });
                    prop_assert!(listed, "port row {key} {port:?} is not in ZooKeeper");
                }
                for store in v.stores.values() {
                    let id = i64::from(store.id.get());
                    let Some(row) = after.stores.get(&id) else { continue };
                    if let Some(ip) = store.mngt_ip.valid() {
                        // Either the store got its address or a lower id holds it.
                        let ip = ip.to_string();
                        prop_assert!(row.mngt_ip == ip || v.stores.values().any(|o| o.id < store.id && o.mngt_ip.valid().map(|i| i.to_string()) == Some(ip.clone())));
                    }
                    for (uuid, tray) in &store.trays {
                        if let Some(t) = after.trays.get(uuid.as_str()) && t.store_id == id {
                            prop_assert_eq!(&t.status, if tray.online { "OK" } else { "OFFLINE" });
                        }
                    }
                    for (key, port) in &after.ports {
                        if port.store_id == Some(id) {
                            let ip: std::net::IpAddr = key.ip_addr.parse().unwrap();
                            let listed = if key.purpose == 0 { store.ports.contains(&ip) } else { store.rep_ports.contains(&ip) };
                            prop_assert!(listed, "port {key} of store {id} is not in ZooKeeper");
                        }
                    }
                }
            }
        }
    }
}
