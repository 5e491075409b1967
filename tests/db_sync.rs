//! Scenarios of the ZooKeeper → metadata DB sync, each on SQLite and on MariaDB, against a real
//! ZooKeeper and simulated `pfs` stores. Every scenario asserts what the tables contain.
//!
//! The first group are the Java conductor's known failures (design.md §4 and the issue): each
//! one is a passing test here.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use pureflash_operator::metadb::{DbRows, DbUrl, MetaDb, WriteFence, plan};
use pureflash_operator::zk::ClusterView;
use support::{
    Backend, PATIENCE, PortRow, Running, StoreRow, TestDb, TrayRow, delete_tree, spec,
    unique_cluster,
};
use testkit::pfs::{PfsSim, PfsSpec};
use testkit::zookeeper::ZooKeeper;
use zookeeper_client as zk;

/// A period long enough that only the event path can explain a change seen in a test.
const NO_RESYNC: Duration = Duration::from_secs(3600);
/// A period short enough that drift repair shows within a test.
const FAST_RESYNC: Duration = Duration::from_millis(500);

/// Generates `sqlite::<name>` and `mariadb::<name>` tests from one scenario function.
macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    testkit::init_test_logging();
                    super::$name(super::Backend::Sqlite).await
                }
            )*
        }
        mod mariadb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    testkit::init_test_logging();
                    super::$name(super::Backend::MariaDb).await
                }
            )*
        }
    };
}

scenarios!(
    new_store_gets_exactly_the_conductors_rows,
    crash_goes_offline_and_restart_comes_back,
    hang_and_session_expiry_go_offline,
    tray_transitions_are_all_followed,
    rapid_flaps_end_in_the_right_state,
    wiped_tables_are_rebuilt_without_restarting_anything,
    dropped_tables_are_recreated,
    edited_rows_are_repaired,
    zookeeper_restart_keeps_tracking,
    malformed_store_next_to_good_ones,
    store_created_atomically_is_synced,
    nothing_changed_means_nothing_written,
    vanished_store_is_marked_offline_not_deleted,
    an_unreadable_store_keeps_its_rows_and_the_rest_is_synced,
    mngt_ip_taken_over_does_not_wedge_the_sync,
    an_address_another_writer_spelt_differently_is_handed_over,
    redeployed_store_takes_over_from_its_dead_predecessor,
    tray_uuids_differing_in_case_are_one_row,
    a_tray_row_another_writer_padded_is_the_trays_row,
    a_port_row_another_writer_padded_is_the_ports_row,
    a_device_name_a_latin1_table_refuses_costs_only_its_tray,
    db_outage_converges_when_it_returns,
    a_wrong_cluster_name_touches_nothing,
    a_closed_write_fence_commits_nothing,
    a_plan_rehoming_hundreds_of_rows_applies_exactly,
    random_cluster_histories_apply_exactly_through_sql,
    nulls_in_tables_made_without_not_null_are_repaired,
    a_row_another_writer_inserted_first_is_taken_over_at_once,
);

/// Syncs the one store of `cluster` (2 trays, 2 ports) into `db`, stops, and reads the rows.
async fn synced_once(db: &TestDb, cluster: &str) -> (Vec<StoreRow>, Vec<TrayRow>, Vec<PortRow>) {
    let sync = Running::start(&zk(), cluster, &db.url, NO_RESYNC);
    wait_for!(db, "store 1 synced", |s, t, p| s.len() == 1
        && t.len() == 2
        && p.len() == 2);
    sync.stop().await;
    (db.stores().await, db.trays().await, db.ports().await)
}

fn zk() -> String {
    ZooKeeper::shared().connect_string()
}

async fn new_store_gets_exactly_the_conductors_rows(backend: Backend) {
    let db = TestDb::new(backend).await;
    let cluster = unique_cluster("new-store");
    let sync = Running::start(&zk(), &cluster, &db.url, NO_RESYNC);
    sync.wait_trusted().await;
    let store = PfsSim::start(spec(&zk(), &cluster, 7)).await.unwrap();
    let s = store.spec().clone();
    // Rows appear as pfs registers node by node; wait for the registered end state.
    wait_for!(db, "store 7 rows", |stores, trays, ports| stores.len() == 1
        && stores[0].2 == "OK"
        && trays.len() == 2
        && trays.iter().all(|t| t.2 == "OK")
        && ports.len() == 2);
    assert_eq!(
        db.stores().await,
        vec![(7, s.mngt_ip.clone(), "OK".to_owned())]
    );
    let expected_trays: Vec<_> = s
        .trays
        .iter()
        .map(|t| {
            (
                t.uuid.clone(),
                t.device.clone(),
                "OK".to_owned(),
                t.capacity as i64,
                t.object_size as i64,
                7,
            )
        })
        .collect();
    assert_eq!(db.trays().await, expected_trays);
    assert_eq!(
        db.ports().await,
        vec![
            (s.ports[0].clone(), 0, Some(7), "OK".to_owned()),
            (s.rep_ports[0].clone(), 1, Some(7), "OK".to_owned())
        ]
    );
    // name, sn and model stay NULL, as the conductor leaves them.
    let nulls: Vec<(Option<String>, Option<String>, Option<String>)> =
        db.query("select name, sn, model from t_store").await;
    assert_eq!(nulls, vec![(None, None, None)]);
    sync.stop().await;
}

/// The nodes of `stores` stores, store `i` holding the trays, address and ports that store
/// `i + shift` (mod `stores`) has in an unshifted cluster; `extra_ports` more ports each.
fn shifted_cluster(stores: u32, shift: u32, extra_ports: u32) -> ClusterView {
    let mut nodes: Vec<(String, String, Vec<u8>)> = Vec::new();
    for i in 1..=stores {
        let dir = i.to_string();
        let j = (i - 1 + shift) % stores + 1;
        let mut node = |rel: String, data: &str| nodes.push((dir.clone(), rel, data.into()));
        node("mngt_ip".into(), &format!("10.1.{}.{}", j / 256, j % 256));
        node("alive".into(), "");
        for t in 0..2 {
            let tray = format!("trays/{j:08x}-0000-4000-8000-{t:012x}");
            node(tray.clone(), "");
            node(format!("{tray}/devname"), &format!("/dev/nvme{t}n1"));
            node(format!("{tray}/capacity"), "4096000");
            node(format!("{tray}/object_size"), "65536");
            node(format!("{tray}/online"), "");
        }
        node(format!("ports/10.2.{}.{}", j / 256, j % 256), "");
        node(format!("rep_ports/10.3.{}.{}", j / 256, j % 256), "");
        for p in 0..extra_ports {
            node(format!("ports/10.{}.{}.{}", 4 + p, j / 256, j % 256), "");
        }
    }
    ClusterView::from_nodes(
        nodes
            .iter()
            .map(|(dir, rel, data)| (dir.as_str(), rel.as_str(), data.as_slice())),
    )
}

/// A plan that moves every address, tray and port of 300 stores to another store and deletes
/// as many ports: hundreds of rows per kind of statement, batched several to a statement, in
/// one transaction. The tables read back exactly as the plan's model says, and a new plan
/// against them is empty.
async fn a_plan_rehoming_hundreds_of_rows_applies_exactly(backend: Backend) {
    let db = TestDb::new(backend).await;
    let meta = MetaDb::open(&db.url.parse::<DbUrl>().unwrap());
    meta.ensure_schema().await.unwrap();
    let before = shifted_cluster(300, 0, 1);
    assert!(
        meta.apply(&plan(&before, &DbRows::default()))
            .await
            .unwrap()
    );
    let rows = meta.load_rows().await.unwrap();

    let after = shifted_cluster(300, 1, 0);
    let rehoming = plan(&after, &rows);
    assert!(
        rehoming.store_vacates.len() >= 300
            && rehoming.tray_updates.len() >= 600
            && rehoming.port_updates.len() >= 600
            && rehoming.port_deletes.len() >= 300,
        "a plan of hundreds of rows per statement kind: {} vacates, {} tray updates, {} port updates, {} port deletes",
        rehoming.store_vacates.len(),
        rehoming.tray_updates.len(),
        rehoming.port_updates.len(),
        rehoming.port_deletes.len()
    );
    let mut expected = rows.clone();
    expected.apply(&rehoming).unwrap();
    assert!(
        meta.apply(&rehoming).await.unwrap(),
        "every statement matched its rows"
    );
    let read_back = meta.load_rows().await.unwrap();
    assert!(
        read_back == expected,
        "the tables differ from the plan's model"
    );
    assert!(plan(&after, &read_back).is_empty(), "converged");
    meta.close().await;
}

/// One store of a generated cluster state: drawn from small pools, so that stores collide on
/// addresses, tray uuids and ports, come and go, and change every field the tables hold.
#[derive(Clone, Debug)]
struct GeneratedStore {
    dir: String,
    mngt_ip: Option<usize>,
    alive: bool,
    /// (uuid index, device index, online, capacity readable)
    trays: Vec<(usize, u8, bool, bool)>,
    ports: Vec<usize>,
    rep_ports: Vec<usize>,
}

const GENERATED_IPS: [&str; 5] = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5"];

fn generated_store() -> impl proptest::strategy::Strategy<Value = GeneratedStore> {
    use proptest::prelude::*;
    (
        prop_oneof![9 => (1u32..7).prop_map(|id| id.to_string()), 1 => Just("x1".to_owned())],
        proptest::option::weighted(0.9, 0..GENERATED_IPS.len()),
        any::<bool>(),
        proptest::collection::vec(
            (0usize..6, 0u8..3, any::<bool>(), prop::bool::weighted(0.9)),
            0..3,
        ),
        proptest::collection::vec(0..GENERATED_IPS.len(), 0..3),
        proptest::collection::vec(0..GENERATED_IPS.len(), 0..2),
    )
        .prop_map(
            |(dir, mngt_ip, alive, trays, ports, rep_ports)| GeneratedStore {
                dir,
                mngt_ip,
                alive,
                trays,
                ports,
                rep_ports,
            },
        )
}

fn generated_view(stores: &[GeneratedStore]) -> ClusterView {
    let mut nodes: Vec<(String, String, Vec<u8>)> = Vec::new();
    for store in stores {
        let mut node = |rel: String, data: &str| nodes.push((store.dir.clone(), rel, data.into()));
        if let Some(ip) = store.mngt_ip {
            node("mngt_ip".into(), GENERATED_IPS[ip]);
        }
        if store.alive {
            node("alive".into(), "");
        }
        for (uuid, device, online, readable) in &store.trays {
            let tray = format!("trays/{uuid:08x}-0000-4000-8000-000000000000");
            node(tray.clone(), "");
            node(format!("{tray}/devname"), &format!("/dev/sd{device}"));
            node(
                format!("{tray}/capacity"),
                if *readable { "4096000" } else { "abc" },
            );
            node(format!("{tray}/object_size"), "65536");
            if *online {
                node(format!("{tray}/online"), "");
            }
        }
        for ip in &store.ports {
            node(format!("ports/{}", GENERATED_IPS[*ip]), "");
        }
        for ip in &store.rep_ports {
            node(format!("rep_ports/{}", GENERATED_IPS[*ip]), "");
        }
    }
    ClusterView::from_nodes(
        nodes
            .iter()
            .map(|(dir, rel, data)| (dir.as_str(), rel.as_str(), data.as_slice())),
    )
}

/// Histories of generated cluster states (stores colliding on addresses, trays and ports,
/// appearing, vanishing, malformed), each state planned against the tables as the DB reads them
/// back and applied through real SQL: every statement applies (no constraint the plan's model
/// misses), the tables read back as the model says, and a new plan is empty.
async fn random_cluster_histories_apply_exactly_through_sql(backend: Backend) {
    use proptest::strategy::{Strategy, ValueTree};
    let db = TestDb::new(backend).await;
    let meta = MetaDb::open(&db.url.parse::<DbUrl>().unwrap());
    meta.ensure_schema().await.unwrap();
    let histories =
        proptest::collection::vec(proptest::collection::vec(generated_store(), 0..6), 1..5);
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let cases = match backend {
        Backend::Sqlite => 200,
        Backend::MariaDb => 60,
    };
    for case in 0..cases {
        let history = histories.new_tree(&mut runner).unwrap().current();
        for table in ["t_port", "t_tray", "t_store"] {
            db.execute(&format!("delete from {table}")).await;
        }
        for (step, stores) in history.iter().enumerate() {
            let view = generated_view(stores);
            let rows = meta.load_rows().await.unwrap();
            let plan = plan(&view, &rows);
            let mut expected = rows.clone();
            expected.apply(&plan).unwrap_or_else(|e| {
                panic!("case {case} step {step}: the model refuses: {e}\n{history:#?}")
            });
            let matched = meta.apply(&plan).await.unwrap_or_else(|e| {
                panic!("case {case} step {step}: {e}\n{plan:#?}\n{history:#?}")
            });
            assert!(
                matched,
                "case {case} step {step}: a statement missed its row\n{history:#?}"
            );
            let read_back = meta.load_rows().await.unwrap();
            assert!(
                read_back == expected,
                "case {case} step {step}: the tables differ from the model\n{read_back:#?}\n{expected:#?}\n{history:#?}"
            );
            assert!(
                pureflash_operator::metadb::plan(&view, &read_back).is_empty(),
                "case {case} step {step}: not converged\n{history:#?}"
            );
        }
    }
    meta.close().await;
}

/// A leader's DB sync asks its term before the first statement and again before COMMIT: a
/// term that ended meanwhile rolls the transaction back, and nothing is written until the
/// fence opens again.
async fn a_closed_write_fence_commits_nothing(backend: Backend) {
    let db = TestDb::new(backend).await;
    let cluster = unique_cluster("fence");
    let _first = PfsSim::start(spec(&zk(), &cluster, 1)).await.unwrap();
    // How many more checks the fence lets through, and how many it was asked.
    let allowed = Arc::new(AtomicU32::new(u32::MAX));
    let asked = Arc::new(AtomicU32::new(0));
    let fence: WriteFence = {
        let (allowed, asked) = (Arc::clone(&allowed), Arc::clone(&asked));
        Arc::new(move || {
            asked.fetch_add(1, Ordering::SeqCst);
            allowed
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .map(|_| ())
                .map_err(|_| "the test's fence is closed")
        })
    };
    let handle = MetaDb::open(&db.url.parse::<DbUrl>().unwrap()).fenced_by(fence);
    let mut sync = Running::start_on(&zk(), &cluster, handle, NO_RESYNC, |config| {
        config.retry_initial = Duration::from_millis(50);
        config.retry_max = Duration::from_millis(200);
    });
    sync.wait_synced().await;
    assert_eq!(db.stores().await.len(), 1);
    let no_store_2 = async || {
        assert_eq!(db.stores().await.len(), 1, "store 2 was not written");
        assert_eq!(db.trays().await.len(), 2, "nor its trays");
        assert_eq!(db.ports().await.len(), 2, "nor its ports");
    };

    // Closed: a new store is seen, and not written.
    allowed.store(0, Ordering::SeqCst);
    let _second = PfsSim::start(spec(&zk(), &cluster, 2)).await.unwrap();
    let registered = testkit::eventually(PATIENCE, async || {
        let snapshot = sync.snapshot();
        snapshot.view.stores.len() == 2
            && snapshot
                .view
                .stores
                .values()
                .all(|s| s.alive && s.trays_online() == 2)
            && sync
                .status
                .borrow()
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains("the test's fence is closed"))
    })
    .await;
    assert!(registered, "{:?}", *sync.status.borrow());
    no_store_2().await;
    assert_eq!(
        sync.status.borrow().errors,
        0,
        "a closed fence is no failure of the DB"
    );

    // Closing between the first statement and COMMIT: the retry's transaction (store 2's
    // rows, all of them now) passes the first check, fails the second, and is rolled back.
    let before = asked.load(Ordering::SeqCst);
    allowed.store(1, Ordering::SeqCst);
    let asked_twice = testkit::eventually(PATIENCE, async || {
        asked.load(Ordering::SeqCst) >= before + 2
    })
    .await;
    assert!(asked_twice, "the fence was not asked again before COMMIT");
    no_store_2().await;

    allowed.store(u32::MAX, Ordering::SeqCst);
    wait_for!(db, "store 2 written once the fence opens", |s, t, p| s
        .len()
        == 2
        && t.len() == 4
        && p.len() == 4);

    // One row to write runs in a transaction too, so the fence is asked before COMMIT: a lone
    // statement stuck behind another client's lock would commit after the term ended.
    let before = asked.load(Ordering::SeqCst);
    allowed.store(1, Ordering::SeqCst);
    _second.tray_offline(0).await.unwrap();
    let asked_twice = testkit::eventually(PATIENCE, async || {
        asked.load(Ordering::SeqCst) >= before + 2
    })
    .await;
    assert!(asked_twice, "a one-row write was not fenced before COMMIT");
    let trays = db.trays().await;
    assert!(
        trays.len() == 4 && trays.iter().all(|t| t.2 == "OK"),
        "the tray's row was written past the closed fence: {trays:?}"
    );
    allowed.store(u32::MAX, Ordering::SeqCst);
    wait_for!(db, "the tray offline once the fence opens", |_s, t, _p| t
        .iter()
        .filter(|t| t.2 == "OFFLINE")
        .count()
        == 1);
    sync.stop().await;
}

async fn crash_goes_offline_and_restart_comes_back(backend: Backend) {
    let db = TestDb::new(backend).await;
    let cluster = unique_cluster("crash");
    let mut store = PfsSim::start(spec(&zk(), &cluster, 1)).await.unwrap();
    let _other = PfsSim::start(spec(&zk(), &cluster, 2)).await.unwrap();
    let sync = Running::start(&zk(), &cluster, &db.url, NO_RESYNC);
    wait_for!(db, "both OK", |stores, _t, _p| stores
        .iter()
        .filter(|s| s.2 == "OK")
        .count()
        == 2);

    store.crash().await;
    wait_for!(db, "store 1 OFFLINE", |stores, trays, _p| stores.len() == 2
        && stores[0].2 == "OFFLINE"
        && trays.iter().filter(|t| t.5 == 1).count() == 2
        && trays.iter().filter(|t| t.5 == 1).all(|t| t.2 == "OFFLINE"));
    assert_eq!(db.stores().await[1].2, "OK", "the other store is untouched");

    store.restart().await.unwrap();
    wait_for!(db, "store 1 OK again", |stores, trays, _p| stores.len()
        == 2
        && stores[0].2 == "OK"
        && trays.len() == 4
        && trays.iter().all(|t| t.2 == "OK"));
    sync.stop().await;
}

async fn hang_and_session_expiry_go_offline(backend: Backend) {
    let db = TestDb::new(backend).await;
    let cluster = unique_cluster("hang");
    let mut store = PfsSim::start(spec(&zk(), &cluster, 3)).await.unwrap();
    let sync = Running::start(&zk(), &cluster, &db.url, NO_RESYNC);
    wait_for!(db, "OK", |stores, _t, _p| stores.len() == 1
        && stores[0].2 == "OK");
    store.lose_session().await;
    wait_for!(db, "OFFLINE after expiry", |stores, _t, _p| stores[0].2
        == "OFFLINE");
    // Still running, never re-registering: the row stays OFFLINE until someone restarts it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(db.store_status(3).await.as_deref(), Some("OFFLINE"));
    store.restart().await.unwrap();
    wait_for!(db, "OK after the restart", |stores, _t, _p| stores[0].2
        == "OK");
    sync.stop().await;
}

async fn tray_transitions_are_all_followed(backend: Backend) {
    let db = TestDb::new(backend).await;
    let cluster = unique_cluster("tray");
    let store = PfsSim::start(spec(&zk(), &cluster, 4)).await.unwrap();
    let uuid = store.spec().trays[1].uuid.clone();
    let sync = Running::start(&zk(), &cluster, &db.url, NO_RESYNC);
    wait_for!(db, "trays OK", |_s, trays, _p| trays.len() == 2
        && trays.iter().all(|t| t.2 == "OK"));
    for round in 0..4 {
        store.tray_offline(1).await.unwrap();
        wait_for!(db, "tray OFFLINE", |stores, trays, _p| trays
            .iter()
            .any(|t| t.0 == uuid && t.2 == "OFFLINE")
            && stores[0].2 == "OK");
        store.tray_online(1).await.unwrap();
        wait_for!(db, "tray OK", |_s, trays, _p| trays.len() == 2
            && trays.iter().all(|t| t.2 == "OK"));
        tracing::info!(round, "tray transition round done");
    }
    sync.stop().await;
}

async fn rapid_flaps_end_in_the_right_state(backend: Backend) {
    let db = TestDb::new(backend).await;
    let cluster = unique_cluster("flap");
    let mut store = PfsSim::start(spec(&zk(), &cluster, 5)).await.unwrap();
    let sync = Running::start(&zk(), &cluster, &db.url, NO_RESYNC);
    wait_for!(db, "OK", |stores, _t, _p| stores.len() == 1
        && stores[0].2 == "OK");
    for _ in 0..20 {
        store.crash().await;
        store.restart().await.unwrap();
    }
    wait_for!(
        db,
        "OK after 20 flaps ending alive",
        |stores, trays, _p| stores.len() == 1
            && stores[0].2 == "OK"
            && trays.len() == 2
            && trays.iter().all(|t| t.2 == "OK")
    );
    // And it stays OK (no late event undoes it).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(db.store_status(5).await.as_deref(), Some("OK"));

    for _ in 0..20 {
        store.restart().await.unwrap();
        store.crash().await;
    }
    wait_for!(
        db,
        "OFFLINE after 20 flaps ending dead",
        |stores, _t, _p| stores[0].2 == "OFFLINE"
    );
    sync.stop().await;
}

async fn wiped_tables_are_rebuilt_without_restarting_anything(backend: Backend) {
    let db = TestDb::new(backend).await;
    let cluster = unique_cluster("wipe");
    let mut stores = Vec::new();
    for id in 1..=3 {
        stores.push(PfsSim::start(spec(&zk(), &cluster, id)).await.unwrap());
    }
    stores[2].crash().await;
    let sync = Running::start(&zk(), &cluster, &db.url, FAST_RESYNC);
    wait_for!(db, "initial sync", |s, t, p| s.len() == 3
        && t.len() == 6
        && p.len() == 6);
    let before = (db.stores().await, db.trays().await, db.ports().await);
    db.execute("delete from t_port").await;
    db.execute("delete from t_tray").await;
    db.execute("delete from t_store").await;
    wait_for!(db, "rebuilt", |s, t, p| s.len() == 3
        && t.len() == 6
        && p.len() == 6);
    assert_eq!(
        (db.stores().await, db.trays().await, db.ports().await),
        before
    );
    sync.stop().await;
}

async fn dropped_tables_are_recreated(backend: Backend) {
    let db = TestDb::new(backend).await;
    let cluster = unique_cluster("drop");
    let _store = PfsSim::start(spec(&zk(), &cluster, 1)).await.unwrap();
    let sync = Running::start(&zk(), &cluster, &db.url, FAST_RESYNC);
    wait_for!(db, "initial sync", |s, t, p| s.len() == 1
        && t.len() == 2
        && p.len() == 2);
    db.execute("drop table t_port").await;
    db.execute("drop table t_tray").await;
    wait_for!(db, "recreated", |s, t, p| s.len() == 1
        && t.len() == 2
        && p.len() == 2);
    sync.stop().await;
}

async fn edited_rows_are_repaired(backend: Backend) {
    let db = TestDb::new(backend).await;
    let cluster = unique_cluster("edit");
    let _store = PfsSim::start(spec(&zk(), &cluster, 1)).await.unwrap();
    let sync = Running::start(&zk(), &cluster, &db.url, FAST_RESYNC);
    wait_for!(db, "initial sync", |s, t, p| s.len() == 1
        && t.len() == 2
        && p.len() == 2);
    let before = (db.stores().await, db.trays().await, db.ports().await);
    // What a confused second writer (the conductor's flapping bug) might leave behind.
    db.execute("update t_store set status = 'OFFLINE'").await;
    db.execute("update t_tray set status = 'OFFLINE', raw_capacity = 1")
        .await;
    db.execute("update t_port set store_id = 99").await;
    db.execute(
        "insert into t_port (ip_addr, store_id, purpose, status) values ('10.99.0.1', 1, 0, 'OK')",
    )
    .await;
    wait_for!(db, "repaired", |s, t, p| (s.clone(), t.clone(), p.clone())
        == before);
    sync.stop().await;
}

async fn zookeeper_restart_keeps_tracking(backend: Backend) {
    let zk = ZooKeeper::start();
    let db = TestDb::new(backend).await;
    let cluster = unique_cluster("zk-restart");
    let mut store = PfsSim::start(spec(&zk.connect_string(), &cluster, 1))
        .await
        .unwrap();
    // Store 3's session outlives the outage (the server restores sessions with their timeout
    // afresh): it is up all along, and its row must say so throughout.
    let _lasting = PfsSim::start(
        PfsSpec::new(&zk.connect_string(), &cluster, 3)
            .with_session_timeout(Duration::from_secs(30)),
    )
    .await
    .unwrap();
    let mut sync = Running::start(&zk.connect_string(), &cluster, &db.url, NO_RESYNC);
    let status_of = |stores: &[StoreRow], id: i64| {
        stores
            .iter()
            .find(|s| s.0 == id)
            .map(|s| s.2.clone())
            .unwrap_or_default()
    };
    wait_for!(db, "OK", |stores, _t, _p| stores.len() == 2
        && stores.iter().all(|s| s.2 == "OK"));
    sync.wait_synced().await;

    db.audit_writes().await;
    zk.stop();
    tokio::time::sleep(Duration::from_secs(10)).await;
    // A view that cannot be trusted writes nothing: not the stores it can no longer see
    // OFFLINE.
    assert_eq!(db.audited_writes().await, 0, "written during the outage");
    tokio::task::block_in_place(|| zk.start_again());
    // Store 1's session died with the outage and (as pfs) it does not re-register.
    wait_for!(
        db,
        "OFFLINE once ZooKeeper is back",
        |stores, _t, _p| status_of(&stores, 1) == "OFFLINE"
    );
    assert_eq!(
        status_of(&db.stores().await, 3),
        "OK",
        "store 3 kept its session"
    );
    store.restart().await.unwrap();
    wait_for!(
        db,
        "OK after the store restarts",
        |stores, _t, _p| status_of(&stores, 1) == "OK"
    );
    let _second = PfsSim::start(spec(&zk.connect_string(), &cluster, 2))
        .await
        .unwrap();
    wait_for!(db, "a new store after the outage", |stores, _t, _p| stores
        .len()
        == 3
        && status_of(&stores, 2) == "OK");
    store.crash().await;
    wait_for!(db, "and the next crash", |stores, _t, _p| status_of(
        &stores, 1
    ) == "OFFLINE");
    assert_eq!(status_of(&db.stores().await, 3), "OK");
    sync.stop().await;
}

async fn malformed_store_next_to_good_ones(backend: Backend) {
    let db = TestDb::new(backend).await;
    let cluster = unique_cluster("malformed");
    let good = PfsSim::start(spec(&zk(), &cluster, 1)).await.unwrap();
    let bad = PfsSim::start(spec(&zk(), &cluster, 2)).await.unwrap();
    let client = zk::Client::connect(&zk()).await.unwrap();
    let persistent = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
    let x1 = format!("/pureflash/{cluster}/stores/x1");
    client.create(&x1, b"", &persistent).await.unwrap();
    client
        .create(&format!("{x1}/mngt_ip"), b"10.66.0.1", &persistent)
        .await
        .unwrap();
    let bad_tray = &bad.spec().trays[0];
    let capacity = format!(
        "{}/trays/{}/capacity",
        bad.spec().store_path(),
        bad_tray.uuid
    );
    client.set_data(&capacity, b"abc", None).await.unwrap();

    let sync = Running::start(&zk(), &cluster, &db.url, NO_RESYNC);
    wait_for!(db, "good data synced", |stores, trays, ports| stores.len()
        == 2
        && trays.len() == 3
        && ports.len() == 4);
    assert!(
        db.trays().await.iter().all(|t| t.0 != bad_tray.uuid),
        "no row from a tray without a capacity"
    );
    // Later changes of the malformed store are still followed.
    let mut bad = bad;
    bad.crash().await;
    wait_for!(db, "bad store OFFLINE", |stores, _t, _p| stores[1].2
        == "OFFLINE"
        && stores[0].2 == "OK");
    client
        .set_data(&capacity, b"1000204886016", None)
        .await
        .unwrap();
    wait_for!(db, "fixed tray inserted", |_s, trays, _p| trays.len() == 4);
    drop(good);
    sync.stop().await;
}

async fn store_created_atomically_is_synced(backend: Backend) {
    let db = TestDb::new(backend).await;
    let cluster = unique_cluster("atomic");
    let sync = Running::start(&zk(), &cluster, &db.url, NO_RESYNC);
    sync.wait_trusted().await;
    let _store = PfsSim::start_atomically(spec(&zk(), &cluster, 11))
        .await
        .unwrap();
    wait_for!(db, "atomic store", |stores, trays, ports| stores.len() == 1
        && stores[0].2 == "OK"
        && trays.len() == 2
        && trays.iter().all(|t| t.2 == "OK")
        && ports.len() == 2);
    sync.stop().await;
}

async fn nothing_changed_means_nothing_written(backend: Backend) {
    let db = TestDb::new(backend).await;
    let cluster = unique_cluster("quiet");
    let stores: Vec<PfsSim> =
        futures::future::try_join_all((1..=5).map(|id| PfsSim::start(spec(&zk(), &cluster, id))))
            .await
            .unwrap();
    let mut sync = Running::start(&zk(), &cluster, &db.url, Duration::from_millis(200));
    wait_for!(db, "initial sync", |s, t, p| s.len() == 5
        && t.len() == 10
        && p.len() == 10);
    sync.wait_synced().await;
    db.audit_writes().await;
    let passes_before = sync.status.borrow().last_success;
    let version_before = sync.status.borrow().synced_version;
    // Several full resync periods of ZooKeeper and the DB, while pfs keeps updating what the
    // tables do not hold (its trays' free sizes), as a busy store does all the time.
    let churn_until = std::time::Instant::now() + Duration::from_millis(1500);
    let mut free = 1u64 << 30;
    while std::time::Instant::now() < churn_until {
        for store in &stores {
            store.set_free_size(0, free).await.unwrap();
        }
        free -= 4096;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        sync.status.borrow().last_success > passes_before,
        "the periodic pass must have run"
    );
    assert!(
        sync.status.borrow().synced_version > version_before,
        "the sync must have seen the free-size changes"
    );
    assert_eq!(
        db.audited_writes().await,
        0,
        "rows written although nothing changed"
    );
    sync.stop().await;
}

async fn vanished_store_is_marked_offline_not_deleted(backend: Backend) {
    let db = TestDb::new(backend).await;
    let cluster = unique_cluster("vanish");
    let mut store = PfsSim::start(spec(&zk(), &cluster, 1)).await.unwrap();
    let sync = Running::start(&zk(), &cluster, &db.url, FAST_RESYNC);
    wait_for!(db, "OK", |s, t, p| s.len() == 1
        && t.len() == 2
        && p.len() == 2
        && s[0].2 == "OK");
    // Removed while its pfs still runs (its `alive` with the rest): the disappearance itself,
    // not a session's end, takes the store offline.
    let client = zk::Client::connect(&zk()).await.unwrap();
    delete_tree(&client, &store.spec().store_path()).await;
    // Stores and trays are referenced by volumes and replicas: kept, OFFLINE. Ports follow
    // ZooKeeper exactly.
    let kept = |s: &[StoreRow], t: &[TrayRow], p: &[PortRow]| {
        s.len() == 1
            && s[0].2 == "OFFLINE"
            && t.len() == 2
            && t.iter().all(|t| t.2 == "OFFLINE")
            && p.is_empty()
    };
    wait_for!(db, "kept, OFFLINE", |s, t, p| kept(&s, &t, &p));
    // And so they stay through full reloads of ZooKeeper and the tables.
    let passes_before = sync.status.borrow().last_success;
    tokio::time::sleep(FAST_RESYNC * 4).await;
    assert!(sync.status.borrow().last_success > passes_before);
    let (s, t, p) = (db.stores().await, db.trays().await, db.ports().await);
    assert!(kept(&s, &t, &p), "{s:?} {t:?} {p:?}");
    store.crash().await;
    sync.stop().await;
}

/// A store ZooKeeper refuses to read (an ACL on its directory) is unknown, not gone: its rows
/// stay as they are, even once its pfs is down, while the other store is synced as ever. Its
/// ACL fixed, the next reload reads it and its rows follow.
async fn an_unreadable_store_keeps_its_rows_and_the_rest_is_synced(backend: Backend) {
    let db = TestDb::new(backend).await;
    let cluster = unique_cluster("acl");
    let mut one = PfsSim::start(spec(&zk(), &cluster, 1)).await.unwrap();
    let mut two = PfsSim::start(spec(&zk(), &cluster, 2)).await.unwrap();
    let mut sync = Running::start(&zk(), &cluster, &db.url, FAST_RESYNC);
    wait_for!(db, "both synced", |s, t, p| s.len() == 2
        && s.iter().all(|s| s.2 == "OK")
        && t.len() == 4
        && p.len() == 4);
    let rows_of_one = |s: &[StoreRow], t: &[TrayRow], p: &[PortRow]| {
        (
            s.iter().filter(|s| s.0 == 1).cloned().collect::<Vec<_>>(),
            t.iter().filter(|t| t.5 == 1).cloned().collect::<Vec<_>>(),
            p.iter()
                .filter(|p| p.2 == Some(1))
                .cloned()
                .collect::<Vec<_>>(),
        )
    };
    let before = rows_of_one(&db.stores().await, &db.trays().await, &db.ports().await);

    let client = zk::Client::connect(&zk()).await.unwrap();
    let dir = one.spec().store_path();
    let write_only = [zk::Acl::new(
        zk::Permission::WRITE | zk::Permission::ADMIN,
        zk::AuthId::anyone(),
    )];
    client.set_acl(&dir, &write_only, None).await.unwrap();
    // A reload meets the refusal (the sync holds the store's rows back) before anything else
    // happens.
    let refused = testkit::eventually(PATIENCE, async || {
        sync.status
            .borrow()
            .held
            .get(&1)
            .is_some_and(|why| why.contains("refuses"))
    })
    .await;
    assert!(
        refused,
        "store 1's rows held back: {:?}",
        sync.status.borrow().held
    );
    one.crash().await;
    two.crash().await;
    wait_for!(db, "store 2 OFFLINE", |s, t, _p| s.len() == 2
        && s[1].2 == "OFFLINE"
        && t.iter().filter(|t| t.5 == 2).count() == 2
        && t.iter().filter(|t| t.5 == 2).all(|t| t.2 == "OFFLINE"));
    tokio::time::sleep(FAST_RESYNC * 3).await;
    let kept = rows_of_one(&db.stores().await, &db.trays().await, &db.ports().await);
    assert_eq!(
        kept, before,
        "the unreadable store's rows are left as they were"
    );
    // And the sync's status says so, for the store's DbSynced condition.
    let held = sync.status.borrow().held.clone();
    assert!(
        held.get(&1).is_some_and(|why| why.contains("refuses")),
        "{held:?}"
    );
    assert!(!held.contains_key(&2), "{held:?}");

    client
        .set_acl(&dir, &zk::Acls::anyone_all(), None)
        .await
        .unwrap();
    wait_for!(db, "store 1 OFFLINE once readable", |s, t, _p| s.len() == 2
        && s[0].2 == "OFFLINE"
        && t.iter().filter(|t| t.5 == 1).count() == 2
        && t.iter().filter(|t| t.5 == 1).all(|t| t.2 == "OFFLINE"));
    sync.wait_synced().await;
    assert_eq!(sync.status.borrow().held_back(1), None);
    sync.stop().await;
}

async fn mngt_ip_taken_over_does_not_wedge_the_sync(backend: Backend) {
    let db = TestDb::new(backend).await;
    let cluster = unique_cluster("ip-move");
    let mut old = PfsSim::start(spec(&zk(), &cluster, 1).with_mngt_ip("10.77.0.1"))
        .await
        .unwrap();
    let sync = Running::start(&zk(), &cluster, &db.url, NO_RESYNC);
    wait_for!(db, "store 1", |s, _t, _p| s.len() == 1);
    // Store 1's host is redeployed as store 2 with the same address; store 1's tree goes.
    old.crash().await;
    let client = zk::Client::connect(&zk()).await.unwrap();
    delete_tree(&client, &old.spec().store_path()).await;
    let mut new = PfsSim::start(spec(&zk(), &cluster, 2).with_mngt_ip("10.77.0.1"))
        .await
        .unwrap();
    wait_for!(db, "store 2 owns the address", |s, _t, _p| s
        == vec![
            (1, "vacated:1".to_owned(), "OFFLINE".to_owned()),
            (2, "10.77.0.1".to_owned(), "OK".to_owned())
        ]);
    // And the sync keeps going.
    new.crash().await;
    wait_for!(db, "store 2 OFFLINE", |s, _t, _p| s[1].2 == "OFFLINE");
    sync.stop().await;
}

/// jconductor, running beside the sync, writes a new store's rows first: between the sync's
/// last read and its insert. The insert's duplicate key is that race, not a failure of the DB:
/// the sync re-reads at once and takes the rows over, counting no error and waiting out no
/// backoff (which would hold back every other store's writes meanwhile).
async fn a_row_another_writer_inserted_first_is_taken_over_at_once(backend: Backend) {
    let db = TestDb::new(backend).await;
    let cluster = unique_cluster("insert-race");
    let _first = PfsSim::start(spec(&zk(), &cluster, 1)).await.unwrap();
    let handle = MetaDb::open(&db.url.parse::<DbUrl>().unwrap());
    // A failed pass is retried only after longer than the test waits.
    let mut sync = Running::start_on(&zk(), &cluster, handle, NO_RESYNC, |config| {
        config.retry_initial = PATIENCE * 2;
        config.retry_max = PATIENCE * 2;
    });
    sync.wait_synced().await;
    let second = spec(&zk(), &cluster, 2);
    db.execute(&format!(
        "insert into t_store (id, mngt_ip, status) values (2, '{}', 'OFFLINE')",
        second.mngt_ip
    ))
    .await;
    let second = PfsSim::start(second).await.unwrap();
    wait_for!(db, "store 2's row taken over", |s, t, p| s.len() == 2
        && s[1].2 == "OK"
        && t.len() == 4
        && p.len() == 4);
    assert_eq!(
        sync.status.borrow().errors,
        0,
        "{:?}",
        *sync.status.borrow()
    );
    drop(second);
    sync.stop().await;
}

/// jconductor writes mngt_ip as ZooKeeper spells it (`FD00::7`), the operator canonically
/// (`fd00::7`); MariaDB's unique index, in a case-insensitive PAD SPACE collation, holds both
/// for one key, and so does a trailing space. A store taking over such an address must move the
/// old row aside first: inserting beside it would be a duplicate key, in every pass, and no
/// status would ever reach the DB again.
async fn an_address_another_writer_spelt_differently_is_handed_over(backend: Backend) {
    let db = TestDb::new(backend).await;
    for (_, ddl) in pureflash_operator::metadb::sql::CREATE_TABLES {
        db.execute(ddl).await;
    }
    db.execute(
        "insert into t_store (id, mngt_ip, status) values (3, 'FD00::7', 'OK'), (4, '10.80.0.4 ', 'OK')",
    )
    .await;
    let cluster = unique_cluster("ip-spelling");
    // Stores 3 and 4 still register those addresses, but are dead; 7 and 8 now have them.
    for (id, ip) in [(3, "FD00::7"), (4, "10.80.0.4")] {
        let mut old = PfsSim::start(spec(&zk(), &cluster, id).with_mngt_ip(ip))
            .await
            .unwrap();
        old.crash().await;
    }
    let _seven = PfsSim::start(spec(&zk(), &cluster, 7).with_mngt_ip("fd00::7"))
        .await
        .unwrap();
    let _eight = PfsSim::start(spec(&zk(), &cluster, 8).with_mngt_ip("10.80.0.4"))
        .await
        .unwrap();
    let mut sync = Running::start(&zk(), &cluster, &db.url, NO_RESYNC);
    wait_for!(db, "the addresses handed over", |s, t, p| s
        == vec![
            (3, "vacated:3".to_owned(), "OFFLINE".to_owned()),
            (4, "vacated:4".to_owned(), "OFFLINE".to_owned()),
            (7, "fd00::7".to_owned(), "OK".to_owned()),
            (8, "10.80.0.4".to_owned(), "OK".to_owned()),
        ]
        && t.len() == 8
        && p.len() == 8);
    sync.wait_synced().await;
    let status = sync.status.borrow().clone();
    assert_eq!((status.errors, status.last_error), (0, None));
    sync.stop().await;
}

async fn redeployed_store_takes_over_from_its_dead_predecessor(backend: Backend) {
    let db = TestDb::new(backend).await;
    let cluster = unique_cluster("redeploy");
    let mut old = PfsSim::start(spec(&zk(), &cluster, 1).with_mngt_ip("10.78.0.1"))
        .await
        .unwrap();
    // Events only: the hand-over must not wait for a periodic re-read.
    let sync = Running::start(&zk(), &cluster, &db.url, NO_RESYNC);
    wait_for!(db, "store 1", |s, t, p| s.len() == 1
        && s[0].2 == "OK"
        && t.len() == 2
        && p.len() == 2);
    // design.md §1: the container is recreated and pfs comes back under a new store id, on the
    // same host (address, disks, ports). Store 1's directory stays with its persistent nodes;
    // only `alive` and the trays' `online` went with the old session.
    old.crash().await;
    wait_for!(db, "store 1 OFFLINE", |s, _t, _p| s[0].2 == "OFFLINE");
    let mut redeployed = spec(&zk(), &cluster, 2).with_mngt_ip("10.78.0.1");
    redeployed.trays = old.spec().trays.clone();
    redeployed.ports = old.spec().ports.clone();
    redeployed.rep_ports = old.spec().rep_ports.clone();
    let mut new = PfsSim::start(redeployed).await.unwrap();
    wait_for!(db, "store 2 owns the host", |s, t, p| s
        == vec![
            (1, "vacated:1".to_owned(), "OFFLINE".to_owned()),
            (2, "10.78.0.1".to_owned(), "OK".to_owned())
        ]
        && t.len() == 2
        && t.iter().all(|t| t.5 == 2 && t.2 == "OK")
        && p.len() == 2
        && p.iter().all(|p| p.2 == Some(2)));

    // Both dead: the rows stay with store 2 (no flip back to the lower id), OFFLINE.
    new.crash().await;
    wait_for!(db, "store 2 OFFLINE, still the owner", |s, t, p| s
        == vec![
            (1, "vacated:1".to_owned(), "OFFLINE".to_owned()),
            (2, "10.78.0.1".to_owned(), "OFFLINE".to_owned())
        ]
        && t.len() == 2
        && t.iter().all(|t| t.5 == 2 && t.2 == "OFFLINE")
        && p.len() == 2
        && p.iter().all(|p| p.2 == Some(2)));

    // Whichever store is alive owns the host: the old one, restarted, takes it back.
    old.restart().await.unwrap();
    wait_for!(db, "store 1 owns the host again", |s, t, p| s
        == vec![
            (1, "10.78.0.1".to_owned(), "OK".to_owned()),
            (2, "vacated:2".to_owned(), "OFFLINE".to_owned())
        ]
        && t.len() == 2
        && t.iter().all(|t| t.5 == 1 && t.2 == "OK")
        && p.len() == 2
        && p.iter().all(|p| p.2 == Some(1)));
    sync.stop().await;
}

async fn tray_uuids_differing_in_case_are_one_row(backend: Backend) {
    let db = TestDb::new(backend).await;
    let cluster = unique_cluster("tray-case");
    // One uuid to MariaDB's case-insensitive primary key, two to ZooKeeper.
    let upper = "0000000A-0000-4000-8000-00000000000B";
    let lower = upper.to_ascii_lowercase();
    let mut one = spec(&zk(), &cluster, 1);
    one.trays[0].uuid = upper.to_owned();
    let mut two = spec(&zk(), &cluster, 2);
    two.trays[0].uuid = lower.clone();
    let _one = PfsSim::start(one).await.unwrap();
    let _two = PfsSim::start(two).await.unwrap();
    let mut sync = Running::start(&zk(), &cluster, &db.url, NO_RESYNC);
    // Everything else is written; the uuid is one row, lowercase, of the lower id.
    wait_for!(db, "synced", |s, t, p| s.len() == 2
        && s.iter().all(|s| s.2 == "OK")
        && t.len() == 3
        && p.len() == 4);
    let trays = db.trays().await;
    let row = trays.iter().find(|t| t.0.eq_ignore_ascii_case(upper));
    assert_eq!(row.map(|t| (t.0.as_str(), t.5)), Some((lower.as_str(), 1)));
    sync.wait_synced().await;
    assert!(sync.status.borrow().last_error.is_none());
    sync.stop().await;
}

/// A t_tray row whose uuid another writer left with a trailing space is, to MariaDB's primary
/// key, the tray's own row: inserting the tray beside it would be a duplicate key in every
/// pass. It is taken for the tray's row, on both backends.
async fn a_tray_row_another_writer_padded_is_the_trays_row(backend: Backend) {
    let db = TestDb::new(backend).await;
    for (_, ddl) in pureflash_operator::metadb::sql::CREATE_TABLES {
        db.execute(ddl).await;
    }
    let cluster = unique_cluster("tray-padded");
    let store = spec(&zk(), &cluster, 1);
    let padded = format!("{} ", store.trays[0].uuid);
    db.execute(&format!(
        "insert into t_store (id, mngt_ip, status) values (1, '{}', 'OFFLINE')",
        store.mngt_ip
    ))
    .await;
    db.execute(&format!(
        "insert into t_tray (uuid, device, status, raw_capacity, object_size, store_id) \
         values ('{padded}', '/dev/old', 'OFFLINE', 5, 5, 1)"
    ))
    .await;
    let _store = PfsSim::start(store).await.unwrap();
    let mut sync = Running::start(&zk(), &cluster, &db.url, NO_RESYNC);
    wait_for!(db, "synced", |s, t, p| s.len() == 1
        && s[0].2 == "OK"
        && t.len() == 2
        && t.iter().all(|t| t.2 == "OK" && t.5 == 1)
        && p.len() == 2);
    sync.wait_synced().await;
    let status = sync.status.borrow().clone();
    assert_eq!((status.errors, status.last_error), (0, None));
    sync.stop().await;
}

/// Likewise a t_port row: here one another writer copied from a store that registers the
/// address padded (a name this program does not read as an address, whose row is kept), while
/// another store registers the address itself. Inserting it beside the padded row would be a
/// duplicate key on MariaDB in every pass, and no store's liveness would reach the DB.
async fn a_port_row_another_writer_padded_is_the_ports_row(backend: Backend) {
    let db = TestDb::new(backend).await;
    for (_, ddl) in pureflash_operator::metadb::sql::CREATE_TABLES {
        db.execute(ddl).await;
    }
    let cluster = unique_cluster("port-padded");
    let first = PfsSim::start(spec(&zk(), &cluster, 1)).await.unwrap();
    let second = PfsSim::start(spec(&zk(), &cluster, 2)).await.unwrap();
    let port = first.spec().ports[0].clone();
    let padded = format!("{port} ");
    let client = zk::Client::connect(&zk()).await.unwrap();
    let persistent = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
    client
        .create(
            &format!("{}/ports/{padded}", second.spec().store_path()),
            b"",
            &persistent,
        )
        .await
        .unwrap();
    for store in [&first, &second] {
        db.execute(&format!(
            "insert into t_store (id, mngt_ip, status) values ({}, '{}', 'OFFLINE')",
            store.spec().store_id,
            store.spec().mngt_ip
        ))
        .await;
    }
    db.execute(&format!(
        "insert into t_port (ip_addr, purpose, status, store_id) values ('{padded}', 0, 'OK', 2)"
    ))
    .await;
    let mut sync = Running::start(&zk(), &cluster, &db.url, NO_RESYNC);
    wait_for!(db, "synced", |s, _t, p| s.len() == 2
        && s.iter().all(|s| s.2 == "OK")
        && p.len() == 4);
    sync.wait_synced().await;
    let status = sync.status.borrow().clone();
    assert_eq!((status.errors, status.last_error), (0, None));
    // One row for the address, whatever its spelling, and it is the registering store's.
    let rows: Vec<PortRow> = db
        .ports()
        .await
        .into_iter()
        .filter(|p| p.0.trim_end() == port && p.1 == 0)
        .collect();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].2, Some(1));
    sync.stop().await;
}

async fn a_device_name_a_latin1_table_refuses_costs_only_its_tray(backend: Backend) {
    let db = TestDb::new(backend).await;
    let cluster = unique_cluster("not-ascii");
    let mut odd = spec(&zk(), &cluster, 1);
    odd.trays[0].device = "/dev/диск".to_owned();
    let _odd = PfsSim::start(odd).await.unwrap();
    let _good = PfsSim::start(spec(&zk(), &cluster, 2)).await.unwrap();
    let mut sync = Running::start(&zk(), &cluster, &db.url, NO_RESYNC);
    // Both stores, every port, and every tray but the one whose device cannot be written.
    wait_for!(db, "synced", |s, t, p| s.len() == 2
        && s.iter().all(|s| s.2 == "OK")
        && t.len() == 3
        && p.len() == 4);
    sync.wait_synced().await;
    assert!(sync.status.borrow().last_error.is_none());
    assert!(db.trays().await.iter().all(|t| t.1.is_ascii()));
    sync.stop().await;
}

async fn db_outage_converges_when_it_returns(backend: Backend) {
    let cluster = unique_cluster("db-outage");
    // A private server, so stopping it does not disturb other tests. Started (seconds of CPU)
    // before the store, whose short session must not starve meanwhile, and off the runtime's
    // workers, as are its stop and start below.
    let server = match backend {
        Backend::MariaDb => Some(tokio::task::block_in_place(|| {
            let server = testkit::mariadb::MariaDb::start();
            server.admin_sql("create database pf");
            server
        })),
        Backend::Sqlite => None,
    };
    let mut store = PfsSim::start(spec(&zk(), &cluster, 1)).await.unwrap();
    match server {
        Some(server) => {
            let db = TestDb::mysql(server.url("pf"));
            let mut sync = Running::start(&zk(), &cluster, &db.url, NO_RESYNC);
            wait_for!(db, "OK", |s, _t, _p| s.len() == 1 && s[0].2 == "OK");
            tokio::task::block_in_place(|| server.stop());
            store.crash().await;
            let errors_before = sync.status.borrow().errors;
            assert!(
                testkit::eventually(PATIENCE, async || sync.status.borrow().errors
                    > errors_before)
                .await,
                "the outage must be noticed"
            );
            let _second = PfsSim::start(spec(&zk(), &cluster, 2)).await.unwrap();
            tokio::time::sleep(Duration::from_secs(2)).await;
            tokio::task::block_in_place(|| server.start_again());
            wait_for!(db, "converged after the outage", |s, t, _p| s.len() == 2
                && s[0].2 == "OFFLINE"
                && s[1].2 == "OK"
                && t.len() == 4);
            sync.wait_synced().await;
            assert!(sync.status.borrow().last_error.is_none());
            sync.stop().await;
        }
        None => {
            // SQLite's outage: another process holds an exclusive lock.
            let db = TestDb::new(backend).await;
            let sync = Running::start(&zk(), &cluster, &db.url, NO_RESYNC);
            wait_for!(db, "OK", |s, _t, _p| s.len() == 1 && s[0].2 == "OK");
            let path = db.url.trim_start_matches("sqlite://").to_owned();
            let mut locker = std::process::Command::new("python3")
                .arg("-c")
                .arg("import sqlite3,sys; c=sqlite3.connect(sys.argv[1], isolation_level=None); c.execute('begin exclusive'); print('locked', flush=True); sys.stdin.readline()")
                .arg(&path)
                // Held until told, not for a fixed time: a write attempted late would
                // otherwise wait the lock out within SQLite's busy timeout and never fail.
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let mut line = String::new();
            std::io::BufRead::read_line(
                &mut std::io::BufReader::new(locker.stdout.as_mut().unwrap()),
                &mut line,
            )
            .unwrap();
            assert_eq!(line.trim(), "locked");
            store.crash().await;
            let errors_before = sync.status.borrow().errors;
            assert!(
                testkit::eventually(PATIENCE, async || sync.status.borrow().errors
                    > errors_before)
                .await,
                "the locked DB must be noticed"
            );
            drop(locker.stdin.take());
            locker.wait().unwrap();
            wait_for!(db, "OFFLINE once the lock is gone", |s, _t, _p| s[0].2
                == "OFFLINE");
            sync.stop().await;
        }
    }
}

/// An administrator deletes the SQLite file while the sync runs (to start afresh), later
/// restores an old copy over it: either way the tables are written into the file now at the
/// path within a resync period, not into the unlinked one the sync's connections still hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_file_deleted_or_replaced_is_rewritten_at_its_path() {
    testkit::init_test_logging();
    let mut db = TestDb::new(Backend::Sqlite).await;
    let path = db.sqlite_path().unwrap();
    let cluster = unique_cluster("sqlite-file");
    let _store = PfsSim::start(spec(&zk(), &cluster, 1)).await.unwrap();
    let sync = Running::start(&zk(), &cluster, &db.url, FAST_RESYNC);
    wait_for!(db, "initial sync", |s, t, p| s.len() == 1
        && t.len() == 2
        && p.len() == 2);
    let synced = (db.stores().await, db.trays().await, db.ports().await);

    // An old copy, from before the store existed: tables, no rows.
    let backup = path.with_file_name("backup.db");
    db.execute(&format!("vacuum into '{}'", backup.display()))
        .await;
    {
        use sqlx::Connection;
        let url = format!("sqlite://{}", backup.display());
        let mut copy = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::raw_sql("delete from t_port; delete from t_tray; delete from t_store")
            .execute(&mut copy)
            .await
            .unwrap();
        copy.close().await.unwrap();
    }

    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.clone().into_os_string();
        file.push(suffix);
        let _ = std::fs::remove_file(file);
    }
    db.reopen_sqlite_reader();
    wait_for!(db, "rows in a new file at the path", |s, t, p| (
        s.clone(),
        t.clone(),
        p.clone()
    ) == synced);

    std::fs::rename(&backup, &path).unwrap();
    db.reopen_sqlite_reader();
    wait_for!(db, "rows in the restored copy", |s, t, p| (
        s.clone(),
        t.clone(),
        p.clone()
    ) == synced);
    sync.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_waits_for_an_unreachable_db_at_start() {
    testkit::init_test_logging();
    let cluster = unique_cluster("db-late");
    // The server's first start (seconds of CPU) off the runtime's workers and before the
    // store, whose short session must not starve meanwhile.
    let server = tokio::task::block_in_place(|| {
        let server = testkit::mariadb::MariaDb::start();
        server.admin_sql("create database pf");
        server.stop();
        server
    });
    let _store = PfsSim::start(spec(&zk(), &cluster, 1)).await.unwrap();
    let db = TestDb::mysql(server.url("pf"));
    let sync = Running::start(&zk(), &cluster, &db.url, NO_RESYNC);
    assert!(testkit::eventually(PATIENCE, async || sync.status.borrow().errors > 0).await);
    tokio::task::block_in_place(|| server.start_again());
    wait_for!(db, "synced once the DB is up", |s, t, p| s.len() == 1
        && t.len() == 2
        && p.len() == 2);
    sync.stop().await;
}

/// A server configured not to autocommit (some DBAs set `autocommit=0` in my.cnf) and to drop
/// connections idle for two seconds: a one-row write (a tray going offline) must still be
/// committed, and the first write after an idle spell must not fail on a dropped connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_unhelpful_defaults_loses_no_write() {
    testkit::init_test_logging();
    // A private server: its global settings would disturb other tests. No autocommit, idle
    // connections dropped after 2 s, and a non-transactional default engine.
    let server = testkit::mariadb::MariaDb::start();
    server.admin_sql(
        "create database pf; set global autocommit = 0; set global wait_timeout = 2; \
         set global default_storage_engine = MyISAM",
    );
    // Read through a fresh client session each time: a pooled reader would itself sit in
    // the transaction autocommit=0 opens, and see a snapshot.
    let tray_states = || {
        if server.admin_sql("show tables from pf").contains("t_tray") {
            server.admin_sql("select status from pf.t_tray order by uuid")
        } else {
            String::new()
        }
    };
    let cluster = unique_cluster("no-autocommit");
    let store = PfsSim::start(spec(&zk(), &cluster, 1)).await.unwrap();
    let db_url = server.url("pf");
    let sync = Running::start(&zk(), &cluster, &db_url, NO_RESYNC);
    assert!(
        testkit::eventually(PATIENCE, async || tray_states() == "OK\nOK\n").await,
        "synced: {:?}",
        tray_states()
    );
    // The server drops the sync's idle connections.
    tokio::time::sleep(Duration::from_secs(4)).await;
    store.tray_offline(0).await.unwrap();
    assert!(
        testkit::eventually(PATIENCE, async || tray_states().contains("OFFLINE")).await,
        "the one-row write is committed: {:?}",
        tray_states()
    );
    assert_eq!(
        sync.status.borrow().errors,
        0,
        "no pass failed on a dropped connection"
    );
    sync.stop().await;
    assert_eq!(tray_states().matches("OFFLINE").count(), 1);
    assert_eq!(
        server.admin_sql(
            "select table_name, engine from information_schema.tables \
             where table_schema = 'pf' order by table_name"
        ),
        "t_port\tInnoDB\nt_store\tInnoDB\nt_tray\tInnoDB\n",
        "the tables are transactional"
    );
}

/// jconductor's database with an account that may only read and write rows (no CREATE): the
/// tables exist, so the sync must not need more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_least_privilege_account_syncs_into_existing_tables() {
    testkit::init_test_logging();
    let server = testkit::mariadb::MariaDb::shared();
    let owner = TestDb::new(Backend::MariaDb).await;
    for (_, ddl) in pureflash_operator::metadb::sql::CREATE_TABLES {
        owner.execute(ddl).await;
    }
    let database = owner.url.rsplit('/').next().unwrap().to_owned();
    let user = format!("dml_{database}");
    for host in ["%", "localhost"] {
        server.admin_sql(&format!(
            "create user '{user}'@'{host}' identified by 'dml-secret'; \
             grant select, insert, update, delete on `{database}`.* to '{user}'@'{host}';"
        ));
    }
    let db = TestDb::mysql(format!(
        "mysql://{user}:dml-secret@127.0.0.1:{}/{database}",
        server.port()
    ));
    // The account really lacks CREATE, even for a table that exists (MariaDB's ERROR 1142).
    let denied = db
        .try_query::<(i64,)>(pureflash_operator::metadb::sql::CREATE_TABLES[0].1)
        .await
        .unwrap_err()
        .to_string();
    assert!(denied.contains("1142"), "{denied}");

    let cluster = unique_cluster("dml-only");
    let _store = PfsSim::start(spec(&zk(), &cluster, 1)).await.unwrap();
    let mut sync = Running::start(&zk(), &cluster, &db.url, FAST_RESYNC);
    wait_for!(db, "synced", |s, t, p| s.len() == 1
        && s[0].2 == "OK"
        && t.len() == 2
        && p.len() == 2);
    sync.wait_synced().await;
    let status = sync.status.borrow().clone();
    assert_eq!((status.errors, status.last_error), (0, None));
    sync.stop().await;
}

async fn a_wrong_cluster_name_touches_nothing(backend: Backend) {
    let db = TestDb::new(backend).await;
    let cluster = unique_cluster("right");
    let _stores: Vec<PfsSim> =
        futures::future::try_join_all((1..=2).map(|id| PfsSim::start(spec(&zk(), &cluster, id))))
            .await
            .unwrap();
    let right = Running::start(&zk(), &cluster, &db.url, NO_RESYNC);
    wait_for!(db, "synced", |s, t, p| s.len() == 2
        && t.len() == 4
        && p.len() == 4);
    right.stop().await;
    db.audit_writes().await;

    // A typo in the cluster name: ZooKeeper has no such stores directory.
    let typo = unique_cluster("typo");
    let mut wrong = Running::start(&zk(), &typo, &db.url, Duration::from_millis(200));
    assert!(testkit::eventually(PATIENCE, async || wrong.snapshot().health.is_trusted()).await);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        db.audited_writes().await,
        0,
        "nothing may be written for a cluster ZooKeeper does not have"
    );

    // Once the directory exists (and is empty), its truth is that no store is registered.
    let client = zk::Client::connect(&zk()).await.unwrap();
    let persistent = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
    client
        .mkdir(&format!("/pureflash/{typo}/stores"), &persistent)
        .await
        .unwrap();
    wait_for!(db, "an empty cluster synced", |s, t, p| s.len() == 2
        && s.iter().all(|s| s.2 == "OFFLINE")
        && t.len() == 4
        && t.iter().all(|t| t.2 == "OFFLINE")
        && p.is_empty());
    wrong.wait_synced().await;
    wrong.stop().await;
}

/// PureFlash's own database (`deploy/dev/init_s5metadb.sql`, what jconductor runs on): t_tray's
/// foreign key to t_store is enforced, views over t_tray and t_port feed the conductor's replica
/// placement, a volume has replicas on the stores, and a trigger watches t_replica. The sync
/// must work inside it, keep those views truthful through a crash, a redeploy and a removal, and
/// leave every other table as it found it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pureflash_own_database_with_volumes_on_the_stores() {
    testkit::init_test_logging();
    let server = testkit::mariadb::MariaDb::shared();
    let url = server.new_database("s5");
    let database = url.rsplit('/').next().unwrap().to_owned();
    // The script creates and enters database `s5`; here it loads into a scratch database.
    let script = include_str!("../deploy/dev/init_s5metadb.sql");
    let retargeted: Vec<&str> = script
        .lines()
        .filter(|line| {
            let statement = line.trim().trim_end_matches(';').trim();
            statement != "create database s5" && statement != "use s5"
        })
        .collect();
    assert_eq!(
        retargeted.len() + 2,
        script.lines().count(),
        "the script's `create database s5` / `use s5` lines moved"
    );
    server.run_script(&database, &retargeted.join("\n"));

    let cluster = unique_cluster("s5");
    let mut one = PfsSim::start(spec(&zk(), &cluster, 1).with_mngt_ip("10.79.0.1"))
        .await
        .unwrap();
    let mut two = PfsSim::start(spec(&zk(), &cluster, 2).with_mngt_ip("10.79.0.2"))
        .await
        .unwrap();
    let (s1, s2) = (one.spec().clone(), two.spec().clone());
    let db = TestDb::mysql(url.clone());
    // A volume with one shard, replicated on store 1's first tray and store 2's first tray.
    db.execute(
        "insert into t_volume(id, name, size, iops, cbs, bw, tenant_id, status) \
         values (100, 'vol1', 1073741824, 0, 0, 0, 0, 'OK')",
    )
    .await;
    db.execute(
        "insert into t_shard(id, volume_id, shard_index, primary_rep_index, status) \
         values (1000, 100, 0, 0, 'OK')",
    )
    .await;
    for (index, store) in [&s1, &s2].into_iter().enumerate() {
        db.execute(&format!(
            "insert into t_replica(replica_index, volume_id, shard_id, store_id, tray_uuid, status) \
             values ({index}, 100, 1000, {}, '{}', 'OK')",
            store.store_id, store.trays[0].uuid
        ))
        .await;
    }
    let others = "checksum table t_tenant, t_quotaset, t_volume, t_shard, t_replica, t_snapshot";
    let untouched = server.admin_sql(&format!("use `{database}`; {others}"));

    let mut sync = Running::start(&zk(), &cluster, &url, FAST_RESYNC);
    wait_for!(db, "both stores", |s, t, p| s.len() == 2
        && s.iter().all(|s| s.2 == "OK")
        && t.len() == 4
        && t.iter().all(|t| t.2 == "OK")
        && p.len() == 4);
    let capacity =
        |spec: &testkit::pfs::PfsSpec| spec.trays.iter().map(|t| t.capacity as i64).sum();
    let total_sizes: Vec<(i64, i64)> = db
        .query(
            "select store_id, cast(total_size as signed) from v_store_total_size order by store_id",
        )
        .await;
    assert_eq!(total_sizes, vec![(1, capacity(&s1)), (2, capacity(&s2))]);
    let replica_ports: Vec<(i64, Option<String>, Option<String>)> = db
        .query("select store_id, data_ports, rep_ports from v_replica_ext order by store_id")
        .await;
    assert_eq!(
        replica_ports,
        vec![
            (1, Some(s1.ports[0].clone()), Some(s1.rep_ports[0].clone())),
            (2, Some(s2.ports[0].clone()), Some(s2.rep_ports[0].clone())),
        ]
    );

    // A crashed store leaves the capacity the conductor places replicas on.
    one.crash().await;
    wait_for!(db, "store 1 OFFLINE", |s, t, _p| s.len() == 2
        && s[0].2 == "OFFLINE"
        && t.iter().filter(|t| t.5 == 1).count() == 2
        && t.iter().filter(|t| t.5 == 1).all(|t| t.2 == "OFFLINE"));
    let total_sizes: Vec<(i64, i64)> = db
        .query(
            "select store_id, cast(total_size as signed) from v_store_total_size order by store_id",
        )
        .await;
    assert_eq!(total_sizes, vec![(2, capacity(&s2))]);

    // Redeployed on the same host under a new id: its disks move to store 3, which the foreign
    // key lets them do only once store 3's row exists.
    let mut redeployed = spec(&zk(), &cluster, 3).with_mngt_ip("10.79.0.1");
    redeployed.trays = s1.trays.clone();
    redeployed.ports = s1.ports.clone();
    redeployed.rep_ports = s1.rep_ports.clone();
    let _three = PfsSim::start(redeployed).await.unwrap();
    wait_for!(db, "store 3 owns store 1's host", |s, t, p| s
        == vec![
            (1, "vacated:1".to_owned(), "OFFLINE".to_owned()),
            (2, "10.79.0.2".to_owned(), "OK".to_owned()),
            (3, "10.79.0.1".to_owned(), "OK".to_owned()),
        ]
        && t.iter().filter(|t| t.5 == 3).count() == 2
        && t.iter().all(|t| t.2 == "OK")
        && p.iter().filter(|p| p.2 == Some(3)).count() == 2);

    // Store 2 is removed from ZooKeeper: its rows stay (t_tray and the replica reference it),
    // OFFLINE; only its ports go.
    two.crash().await;
    let client = zk::Client::connect(&zk()).await.unwrap();
    delete_tree(&client, &format!("/pureflash/{cluster}/stores/2")).await;
    wait_for!(db, "store 2 OFFLINE, kept", |s, t, p| s.len() == 3
        && s[1].2 == "OFFLINE"
        && t.iter().filter(|t| t.5 == 2).count() == 2
        && t.iter().filter(|t| t.5 == 2).all(|t| t.2 == "OFFLINE")
        && p.len() == 2
        && p.iter().all(|p| p.2 == Some(3)));

    // Drift in the conductor's tables is repaired by the periodic pass.
    db.execute("update t_store set status = 'OK' where id = 2")
        .await;
    db.execute("delete from t_port").await;
    wait_for!(db, "drift repaired", |s, _t, p| s[1].2 == "OFFLINE"
        && p.len() == 2);
    sync.wait_synced().await;
    assert_eq!(sync.status.borrow().last_error, None);
    assert_eq!(
        server.admin_sql(&format!("use `{database}`; {others}")),
        untouched,
        "volumes, shards, replicas and tenants are not the sync's to touch"
    );
    sync.stop().await;
}

/// A table another client keeps locked (a `LOCK TABLES` left open, a dump): statements wait on
/// the server, not fail. The sync must say so within its pass timeout, stay stoppable, and
/// write what changed once the lock is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_locked_by_another_client_is_reported_and_synced_once_released() {
    use sqlx::Connection;
    testkit::init_test_logging();
    let db = TestDb::new(Backend::MariaDb).await;
    let cluster = unique_cluster("locked");
    let mut store = PfsSim::start(spec(&zk(), &cluster, 1)).await.unwrap();
    let pass_timeout = Duration::from_secs(1);
    let sync = Running::start_with(&zk(), &cluster, &db.url, NO_RESYNC, |config| {
        config.pass_timeout = pass_timeout;
    });
    wait_for!(db, "store 1 OK", |s, t, p| s.len() == 1
        && s[0].2 == "OK"
        && t.len() == 2
        && p.len() == 2);

    let mut locker = support::lock_t_store(&db.url, support::TableLock::Write).await;
    store.crash().await;
    let noticed = testkit::eventually(PATIENCE, async || {
        sync.status
            .borrow()
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("did not answer"))
    })
    .await;
    assert!(noticed, "{:?}", *sync.status.borrow());
    sqlx::query("unlock tables")
        .execute(&mut locker)
        .await
        .unwrap();
    wait_for!(db, "OFFLINE once the lock is gone", |s, _t, _p| s[0].2
        == "OFFLINE");
    assert!(
        testkit::eventually(PATIENCE, async || sync.status.borrow().last_error.is_none()).await
    );

    // Locked again, with a change waiting: stopping takes at most one pass timeout.
    sqlx::query("lock tables t_store write")
        .execute(&mut locker)
        .await
        .unwrap();
    store.restart().await.unwrap();
    let errors = sync.status.borrow().errors;
    assert!(testkit::eventually(PATIENCE, async || sync.status.borrow().errors > errors).await);
    let stopping = std::time::Instant::now();
    tokio::time::timeout(pass_timeout * 5, sync.stop())
        .await
        .expect("the sync stops while the table stays locked");
    assert!(stopping.elapsed() < pass_timeout * 5);
    locker.close().await.unwrap();
}

/// A COMMIT of the previous writer (a deposed leader's, say) that lands after the first pass
/// read the tables is repaired once that writer's pass would have timed out, not a resync
/// interval later: the tables are read again `pass_timeout` after the start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_previous_writers_late_commit_is_repaired_within_a_pass_timeout() {
    testkit::init_test_logging();
    let db = TestDb::new(Backend::Sqlite).await;
    let cluster = unique_cluster("late-commit");
    let _store = PfsSim::start(spec(&zk(), &cluster, 1)).await.unwrap();
    let pass_timeout = Duration::from_secs(10);
    let started = std::time::Instant::now();
    let sync = Running::start_with(&zk(), &cluster, &db.url, NO_RESYNC, |config| {
        config.pass_timeout = pass_timeout;
    });
    wait_for!(db, "store 1 OK", |s, t, p| s.len() == 1
        && s[0].2 == "OK"
        && t.len() == 2
        && p.len() == 2);
    // The late COMMIT: store 1 OFFLINE, while ZooKeeper has it alive.
    db.execute("update t_store set status = 'OFFLINE'").await;
    assert!(
        started.elapsed() < pass_timeout,
        "the first pass took longer than the pass timeout; the scenario did not happen"
    );
    wait_for!(db, "store 1 OK again", |s, _t, _p| s.len() == 1
        && s[0].2 == "OK");
    assert!(started.elapsed() >= pass_timeout, "repaired by what, then?");
    sync.stop().await;
}

/// SQLite lets a primary key other than an integer one hold NULL, so another tool can leave
/// t_tray and t_port rows no statement can address. They are left alone, and do not stop the
/// sync of everything else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_without_a_key_left_by_another_tool_are_skipped() {
    testkit::init_test_logging();
    let db = TestDb::new(Backend::Sqlite).await;
    for (_, ddl) in pureflash_operator::metadb::sql::CREATE_TABLES {
        db.execute(ddl).await;
    }
    db.execute("insert into t_store (id, mngt_ip, status) values (90, '10.90.0.1', 'OK')")
        .await;
    db.execute(
        "insert into t_tray (uuid, device, status, raw_capacity, object_size, store_id) \
         values (null, '/dev/sdz', 'OK', 1, 1, 90)",
    )
    .await;
    db.execute(
        "insert into t_port (ip_addr, store_id, purpose, status) values (null, 90, 0, 'OK')",
    )
    .await;
    let cluster = unique_cluster("null-keys");
    let _store = PfsSim::start(spec(&zk(), &cluster, 1)).await.unwrap();
    let mut sync = Running::start(&zk(), &cluster, &db.url, NO_RESYNC);
    sync.wait_synced().await;
    assert_eq!(sync.status.borrow().last_error, None);
    // Settled: no pass keeps trying to write the keyless rows.
    let settled = sync.status.borrow().clone();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(*sync.status.borrow(), settled);
    let stores = db.stores().await;
    assert_eq!(stores.len(), 2);
    assert_eq!(stores[0].2, "OK");
    // Store 90 is in no ZooKeeper directory: OFFLINE, as any vanished store.
    assert_eq!(
        stores[1],
        (90, "10.90.0.1".to_owned(), "OFFLINE".to_owned())
    );
    let keyless: Vec<(i64,)> = db
        .query("select (select count(*) from t_tray where uuid is null) + (select count(*) from t_port where ip_addr is null)")
        .await;
    assert_eq!(keyless, vec![(2,)]);
    let trays: Vec<(i64,)> = db
        .query("select count(*) from t_tray where store_id = 1 and status = 'OK'")
        .await;
    assert_eq!(trays, vec![(2,)]);
    sync.stop().await;
}

/// SQLite keeps whatever type another tool writes into a cell: text in an integer column, text
/// that is not UTF-8, a blob. Such cells must not make the tables unreadable (which would fail
/// every pass for good): rows with an unreadable key are left alone like NULL keys, and every
/// other unreadable cell is rewritten where ZooKeeper says what it should be.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cells_of_the_wrong_type_left_by_another_tool_are_repaired() {
    testkit::init_test_logging();
    let db = TestDb::new(Backend::Sqlite).await;
    let cluster = unique_cluster("odd-cells");
    let _store = PfsSim::start(spec(&zk(), &cluster, 1)).await.unwrap();
    let (stores, trays, ports) = synced_once(&db, &cluster).await;

    // Every column of store 1's rows spoilt (but the tray's store_id, a foreign key), and rows
    // of keys no statement can address.
    db.execute("update t_store set mngt_ip = cast(x'ff00' as text), status = x'4f4b'")
        .await;
    db.execute(
        "update t_tray set device = cast(x'c3' as text), status = 7, \
         raw_capacity = 'abc', object_size = 1.5",
    )
    .await;
    db.execute("update t_port set store_id = 'one', status = x'00'")
        .await;
    db.execute(
        "insert into t_tray (uuid, device, status, raw_capacity, object_size, store_id) \
         values (cast(x'ff' as text), '/dev/sdz', 'OK', 1, 1, 1)",
    )
    .await;
    db.execute(
        "insert into t_port (ip_addr, store_id, purpose, status) values ('10.9.9.9', 1, 'zero', 'OK')",
    )
    .await;

    let mut sync = Running::start(&zk(), &cluster, &db.url, NO_RESYNC);
    sync.wait_synced().await;
    assert_eq!(sync.status.borrow().last_error, None);
    let settled = sync.status.borrow().clone();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(*sync.status.borrow(), settled, "a pass keeps rewriting");
    assert_eq!(db.stores().await, stores);
    let unaddressable: Vec<(i64,)> = db
        .query(
            "select (select count(*) from t_tray where typeof(uuid) = 'text' and uuid = cast(x'ff' as text)) \
             + (select count(*) from t_port where purpose = 'zero')",
        )
        .await;
    assert_eq!(unaddressable, vec![(2,)]);
    let repaired: Vec<TrayRow> = db
        .query(
            "select uuid, device, status, raw_capacity, object_size, store_id from t_tray \
             where uuid != cast(x'ff' as text) order by uuid",
        )
        .await;
    assert_eq!(repaired, trays);
    let repaired: Vec<PortRow> = db
        .query(
            "select ip_addr, purpose, store_id, status from t_port \
             where purpose != 'zero' order by ip_addr, purpose",
        )
        .await;
    assert_eq!(repaired, ports);
    sync.stop().await;
}

/// Tables another tool made without PureFlash's NOT NULLs, holding NULLs: repaired like any
/// other cell the sync would not write, on both backends. On SQLite a NULL once read as `0` or
/// `""`, equal to what ZooKeeper says of a tray of capacity 0, and stayed; on MariaDB it failed
/// the read of its table, every pass.
async fn nulls_in_tables_made_without_not_null_are_repaired(backend: Backend) {
    let db = TestDb::new(backend).await;
    for (_, ddl) in pureflash_operator::metadb::sql::CREATE_TABLES {
        db.execute(&ddl.replace(" not null", "")).await;
    }
    let cluster = unique_cluster("nulls");
    let mut empty_tray = spec(&zk(), &cluster, 1);
    empty_tray.trays[1].capacity = 0;
    let _store = PfsSim::start(empty_tray).await.unwrap();
    let (stores, trays, ports) = synced_once(&db, &cluster).await;
    assert!(trays.iter().any(|tray| tray.3 == 0), "{trays:?}");

    db.execute("update t_store set status = null").await;
    // Every tray's capacity, and the rest of the row only where it is not 0: the tray of
    // capacity 0 has nothing else its row would be rewritten for.
    db.execute("update t_tray set raw_capacity = null").await;
    db.execute(
        "update t_tray set device = null, status = null, object_size = null \
         where device = '/dev/nvme0n1'",
    )
    .await;
    db.execute("update t_port set status = null").await;
    let mut sync = Running::start(&zk(), &cluster, &db.url, NO_RESYNC);
    sync.wait_synced().await;
    assert_eq!(sync.status.borrow().last_error, None);
    // Read back as Rust values, a NULL may look like 0 or "" (SQLite's reading): counted.
    let nulls: Vec<(i64,)> = db
        .query(
            "select (select count(*) from t_store where status is null) \
             + (select count(*) from t_tray where device is null or status is null \
                or raw_capacity is null or object_size is null) \
             + (select count(*) from t_port where status is null)",
        )
        .await;
    assert_eq!(nulls, vec![(0,)]);
    assert_eq!(db.stores().await, stores);
    assert_eq!(db.trays().await, trays);
    assert_eq!(db.ports().await, ports);
    sync.stop().await;
}

/// On MariaDB a cell that does not decode means a column of another type than PureFlash's
/// schema: the error names the type instead of skipping rows the plan would then insert again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mariadb_column_of_another_type_is_a_clear_error() {
    testkit::init_test_logging();
    let db = TestDb::new(Backend::MariaDb).await;
    for (table, ddl) in pureflash_operator::metadb::sql::CREATE_TABLES {
        let ddl = if table == "t_port" {
            ddl.replace("purpose int,", "purpose int unsigned,")
        } else {
            ddl.to_owned()
        };
        db.execute(&ddl).await;
    }
    db.execute(
        "insert into t_port (ip_addr, store_id, purpose, status) values ('10.9.9.9', 1, 0, 'OK')",
    )
    .await;
    let cluster = unique_cluster("unsigned");
    let _store = PfsSim::start(spec(&zk(), &cluster, 1)).await.unwrap();
    let sync = Running::start(&zk(), &cluster, &db.url, NO_RESYNC);
    let error =
        testkit::eventually(PATIENCE, async || sync.status.borrow().last_error.is_some()).await;
    assert!(error, "no error: {:?}", *sync.status.borrow());
    let error = sync.status.borrow().last_error.clone().unwrap();
    assert!(
        error.contains("cannot read t_port")
            && error
                .contains("the column's type is INT UNSIGNED, where PureFlash's schema has BIGINT"),
        "{error}"
    );
    sync.stop().await;
}

/// Another tool silently undoes one of our writes every time (here a trigger that drops it):
/// every pass that re-reads the tables plans that write again and finds it missed its row
/// ("stale"), so the re-reads back off. ZooKeeper events in between must not re-read the tables
/// and retry it (a busy cluster's `free_size` updates would otherwise drive a full re-read
/// each), yet a real change must still be written at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_another_tool_keeps_undoing_is_retried_with_backoff_not_per_event() {
    testkit::init_test_logging();
    let db = TestDb::new(Backend::Sqlite).await;
    for (_, ddl) in pureflash_operator::metadb::sql::CREATE_TABLES {
        db.execute(ddl).await;
    }
    // Store 90 is in no ZooKeeper directory, so the sync marks it OFFLINE, which never sticks.
    db.execute("insert into t_store (id, mngt_ip, status) values (90, '10.90.0.1', 'OK')")
        .await;
    db.execute("create table pf_vetoed (n integer)").await;
    db.execute(
        "create trigger veto before update on t_store when old.id = 90 \
         begin insert into pf_vetoed values (1); select raise(ignore); end",
    )
    .await;
    let vetoed = async || db.query::<(i64,)>("select count(*) from pf_vetoed").await[0].0;

    let cluster = unique_cluster("vetoed");
    let one = PfsSim::start(spec(&zk(), &cluster, 1)).await.unwrap();
    let mut two = PfsSim::start(spec(&zk(), &cluster, 2)).await.unwrap();
    // Re-reads 40 ms, 80 ms, … apart: the 11th is followed by a pause of 20.48 s, in which
    // the events below must pass, on a loaded machine too.
    let sync = Running::start_with(&zk(), &cluster, &db.url, NO_RESYNC, |config| {
        config.retry_initial = Duration::from_millis(40);
    });
    // The 11th comes some 20 s in.
    assert!(testkit::eventually(PATIENCE * 2, async || vetoed().await >= 11).await);
    let before = vetoed().await;
    let started = std::time::Instant::now();
    for free in 0..30 {
        one.set_free_size(0, 1_000_000 + free).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    two.crash().await;
    wait_for!(db, "store 2 OFFLINE", |s, _t, _p| s
        .iter()
        .any(|s| s.0 == 2 && s.2 == "OFFLINE"));
    let elapsed = started.elapsed();
    let retried = vetoed().await - before;
    assert!(
        elapsed < Duration::from_secs(15),
        "too slow to tell event passes from the backed-off re-read: {elapsed:?}"
    );
    assert_eq!(
        retried, 0,
        "30 free_size events and a crash re-read the tables and retried the undone write {retried} times"
    );
    // The undone write is still retried, by the backed-off re-read.
    assert!(testkit::eventually(PATIENCE, async || vetoed().await > before).await);
    let status = sync.status.borrow().clone();
    assert_eq!(status.last_error, None, "a stale pass is not an error");
    assert_eq!(
        status.synced_version, None,
        "the DB never matched the view: row 90 stays OK"
    );
    sync.stop().await;
}
