//! The ZooKeeper mirror against a real ZooKeeper and simulated `pfs` stores.

mod support;

use std::time::Duration;

use pureflash_operator::zk::{Field, Mirror, SessionStatus, StoreId, ViewEvent};
use support::{PATIENCE, delete_tree, mirror_config, spec, unique_cluster};
use testkit::eventually;
use testkit::pfs::{PfsSim, PfsSpec};
use testkit::proxy::{Proxy, ProxyMode};
use testkit::zookeeper::ZooKeeper;
use tokio_util::sync::CancellationToken;
use zookeeper_client as zk;

/// ZooKeeper's op code of `AddWatch` (3.6+).
const ADD_WATCH: i32 = 106;

fn id(n: u32) -> StoreId {
    StoreId::new(n).unwrap()
}

async fn trusted(mirror: &Mirror) {
    assert!(
        eventually(PATIENCE, async || mirror.snapshot().health.is_trusted()).await,
        "mirror never trusted"
    );
}

/// Waits until `check` holds on the mirror's view.
async fn until(
    mirror: &Mirror,
    what: &str,
    check: impl Fn(&pureflash_operator::zk::ClusterView) -> bool,
) {
    let ok = eventually(PATIENCE, async || check(&mirror.snapshot().view)).await;
    assert!(
        ok,
        "timed out waiting for {what}; view: {:#?}",
        mirror.snapshot().view
    );
}

/// A mirror of `cluster` with no timed reload in a test's time (so only events and reconnects
/// explain what it sees), and the token that stops it.
fn follow(zk: &ZooKeeper, cluster: &str) -> (Mirror, CancellationToken) {
    let shutdown = CancellationToken::new();
    let config = mirror_config(&zk.connect_string(), cluster, Duration::from_secs(3600));
    (Mirror::spawn(config, shutdown.clone()), shutdown)
}

async fn raw_client(zk: &ZooKeeper) -> zk::Client {
    zk::Client::connect(&zk.connect_string()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loads_existing_stores_and_follows_every_change() {
    testkit::init_test_logging();
    let zk = ZooKeeper::shared();
    let cluster = unique_cluster("mirror-follow");
    let mut stores = Vec::new();
    for n in 1..=3 {
        stores.push(
            PfsSim::start(spec(&zk.connect_string(), &cluster, n))
                .await
                .unwrap(),
        );
    }
    let (mirror, shutdown) = follow(zk, &cluster);
    let mut events = mirror.events();
    trusted(&mirror).await;

    let snapshot = mirror.snapshot();
    assert_eq!(snapshot.view.stores.len(), 3);
    let store = snapshot.view.get(id(2)).unwrap();
    let expected = stores[1].spec();
    assert!(store.alive);
    assert_eq!(
        store.alive_session,
        stores[1].session_id(),
        "alive's owner is the session that registered it"
    );
    assert_eq!(
        store.mngt_ip,
        Field::Valid(expected.mngt_ip.parse().unwrap())
    );
    assert_eq!(store.state, Field::Valid("OK".into()));
    assert_eq!(store.trays.len(), 2);
    for tray in &expected.trays {
        let view = &store.trays[&tray.uuid.parse().unwrap()];
        assert_eq!(view.devname, Field::Valid(tray.device.clone()));
        assert_eq!(view.capacity, Field::Valid(tray.capacity));
        assert_eq!(view.object_size, Field::Valid(tray.object_size));
        assert_eq!(view.free_size, Field::Valid(tray.free_size));
        assert!(view.online);
    }
    assert_eq!(
        store
            .ports
            .iter()
            .map(|ip| ip.to_string())
            .collect::<Vec<_>>(),
        expected.ports
    );
    assert_eq!(
        store
            .rep_ports
            .iter()
            .map(|ip| ip.to_string())
            .collect::<Vec<_>>(),
        expected.rep_ports
    );

    // Crash: alive goes, and the trays' online with it (ZooKeeper deletes a session's
    // ephemerals together, but their events may arrive in more than one watch batch); an
    // event names the store.
    stores[0].crash().await;
    until(&mirror, "store 1 not alive, no tray online", |v| {
        let store = v.get(id(1)).unwrap();
        !store.alive && store.trays_online() == 0
    })
    .await;
    let event = tokio::time::timeout(PATIENCE, async {
        loop {
            match events.recv().await.unwrap() {
                ViewEvent::StoreChanged { id: changed, .. } if changed == id(1) => break changed,
                _ => continue,
            }
        }
    })
    .await
    .expect("an event about store 1");
    assert_eq!(event, id(1));

    // ZooKeeper itself, asked through the mirror's session, agrees.
    let probe = mirror.probe();
    assert!(!probe.alive(id(1), PATIENCE).await.unwrap(), "crashed");
    assert!(probe.alive(id(2), PATIENCE).await.unwrap(), "running");
    assert!(
        !probe.alive(id(42), PATIENCE).await.unwrap(),
        "never registered"
    );

    // Restart, tray offline/online, free size updates.
    let crashed_session = mirror.snapshot().view.get(id(1)).unwrap().alive_session;
    assert_eq!(crashed_session, None, "no alive, no owner");
    let old_session = stores[0].session_id();
    // A store is published alive together with its owner, never as alive for an unknown one
    // first (which would read as "no restart proven").
    let mut watched = mirror.snapshots();
    let ownerless_alive = tokio::spawn(async move {
        while watched.changed().await.is_ok() {
            let snapshot = watched.borrow_and_update().clone();
            let store = snapshot.view.get(id(1)).unwrap();
            if store.alive {
                return store.alive_session;
            }
        }
        None
    });
    stores[0].restart().await.unwrap();
    let new_session = stores[0].session_id();
    assert_ne!(new_session, old_session);
    until(
        &mirror,
        "store 1 alive again, owned by its new session",
        |v| {
            let store = v.get(id(1)).unwrap();
            store.alive && store.alive_session == new_session
        },
    )
    .await;
    assert_eq!(
        ownerless_alive.await.unwrap(),
        new_session,
        "first published alive with its owner"
    );
    stores[2].tray_offline(1).await.unwrap();
    until(&mirror, "tray offline", |v| {
        v.get(id(3)).unwrap().trays_online() == 1
    })
    .await;
    stores[2].tray_online(1).await.unwrap();
    until(&mirror, "tray online", |v| {
        v.get(id(3)).unwrap().trays_online() == 2
    })
    .await;
    stores[2].set_free_size(0, 12345).await.unwrap();
    let uuid = stores[2].spec().trays[0].uuid.parse().unwrap();
    until(&mirror, "free size", |v| {
        v.get(id(3)).unwrap().trays[&uuid].free_size == Field::Valid(12345)
    })
    .await;

    // A new store appears, and one is deleted outright.
    let _four = PfsSim::start(spec(&zk.connect_string(), &cluster, 4))
        .await
        .unwrap();
    until(&mirror, "store 4", |v| {
        v.get(id(4)).is_some_and(|s| s.alive && s.trays.len() == 2)
    })
    .await;
    stores[1].crash().await;
    let client = raw_client(zk).await;
    let base = stores[1].spec().store_path();
    delete_tree(&client, &base).await;
    until(&mirror, "store 2 removed", |v| v.get(id(2)).is_none()).await;

    shutdown.cancel();
    mirror.join().await.expect("the mirror task ends cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_data_is_reported_and_the_rest_is_mirrored() {
    testkit::init_test_logging();
    let zk = ZooKeeper::shared();
    let cluster = unique_cluster("mirror-malformed");
    let good = PfsSim::start(spec(&zk.connect_string(), &cluster, 1))
        .await
        .unwrap();
    let bad = PfsSim::start(spec(&zk.connect_string(), &cluster, 2))
        .await
        .unwrap();
    let client = raw_client(zk).await;
    let stores = format!("/pureflash/{cluster}/stores");
    let persistent = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
    client
        .create(&format!("{stores}/x1"), b"", &persistent)
        .await
        .unwrap();
    client
        .create(&format!("{stores}/x1/mngt_ip"), b"10.9.9.9", &persistent)
        .await
        .unwrap();
    let capacity = format!(
        "{}/trays/{}/capacity",
        bad.spec().store_path(),
        bad.spec().trays[0].uuid
    );
    client.set_data(&capacity, b"abc", None).await.unwrap();
    client
        .create(
            &format!("{}/surprise", bad.spec().store_path()),
            b"",
            &persistent,
        )
        .await
        .unwrap();

    let (mirror, shutdown) = follow(zk, &cluster);
    trusted(&mirror).await;
    let view = mirror.snapshot().view.clone();
    assert_eq!(view.malformed_dirs.keys().collect::<Vec<_>>(), ["x1"]);
    assert!(view.get(id(1)).unwrap().problems().is_empty());
    let problems: Vec<String> = view
        .get(id(2))
        .unwrap()
        .problems()
        .iter()
        .map(|p| p.path.clone())
        .collect();
    assert_eq!(
        problems,
        [
            format!("trays/{}/capacity", bad.spec().trays[0].uuid),
            "surprise".to_owned()
        ]
    );
    assert!(view.get(id(2)).unwrap().alive);

    // Fixing the data by hand is followed by the watch.
    client.set_data(&capacity, b"4096", None).await.unwrap();
    client
        .delete(&format!("{}/surprise", bad.spec().store_path()), None)
        .await
        .unwrap();
    delete_tree(&client, &format!("{stores}/x1")).await;
    until(&mirror, "problems gone", |v| {
        v.malformed_dirs.is_empty() && v.get(id(2)).unwrap().problems().is_empty()
    })
    .await;

    // A persistent `alive` (a tool's, not a pfs session's) is no proof of life: not in the
    // view, and not to the probe either, from its first publish on.
    let mut watched = mirror.snapshots();
    let seen_alive = tokio::spawn(async move {
        while watched.changed().await.is_ok() {
            let snapshot = watched.borrow_and_update().clone();
            if snapshot.view.get(id(3)).is_some_and(|s| s.alive) {
                return true;
            }
            if snapshot
                .view
                .get(id(3))
                .is_some_and(|s| !s.problems().is_empty())
            {
                return false;
            }
        }
        false
    });
    client
        .create(&format!("{stores}/3"), b"", &persistent)
        .await
        .unwrap();
    client
        .create(&format!("{stores}/3/alive"), b"", &persistent)
        .await
        .unwrap();
    until(&mirror, "store 3's persistent alive reported", |v| {
        v.get(id(3)).is_some_and(|s| !s.problems().is_empty())
    })
    .await;
    assert!(!seen_alive.await.unwrap(), "never published alive");
    assert!(!mirror.probe().alive(id(3), PATIENCE).await.unwrap());

    // Likewise a persistent tray `online`: the tray is not online, whether the node is seen
    // created or read by a full load.
    let tray = "5f0e6c3a-1b2d-4c8e-9f00-000000000003";
    let online = format!("trays/{tray}/online");
    for rel in ["trays".to_owned(), format!("trays/{tray}"), online.clone()] {
        client
            .create(&format!("{stores}/3/{rel}"), b"", &persistent)
            .await
            .unwrap();
    }
    let persistent_online = |v: &pureflash_operator::zk::ClusterView| {
        v.get(id(3)).is_some_and(|s| {
            s.trays.len() == 1
                && s.trays_online() == 0
                && s.problems().iter().any(|p| p.path == online)
        })
    };
    until(
        &mirror,
        "store 3's persistent tray online reported",
        persistent_online,
    )
    .await;
    let (loaded, loaded_shutdown) = follow(zk, &cluster);
    trusted(&loaded).await;
    assert!(persistent_online(&loaded.snapshot().view));
    loaded_shutdown.cancel();
    loaded.join().await.expect("the mirror task ends cleanly");
    drop(good);
    shutdown.cancel();
    mirror.join().await.expect("the mirror task ends cleanly");
}

/// A node ZooKeeper refuses to read (an ACL) is never taken for a missing one: a store read
/// as gone would be marked OFFLINE and its pfs restarted. Its store is unreadable instead, with
/// the node named and its last reading kept, while the rest of the view stays trusted; a
/// reload that reads it in full again clears the mark.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_zookeeper_refuses_to_read_makes_its_store_unreadable_not_gone() {
    testkit::init_test_logging();
    let zk = ZooKeeper::shared();
    let cluster = unique_cluster("mirror-refused");
    let stores = [
        PfsSim::start(spec(&zk.connect_string(), &cluster, 1))
            .await
            .unwrap(),
        PfsSim::start(spec(&zk.connect_string(), &cluster, 2))
            .await
            .unwrap(),
    ];
    // ZooKeeper does not tell a watcher of changes to a node it may not read: the timed
    // reload (or a reconnection's) is what meets the refusal.
    let shutdown = CancellationToken::new();
    let config = mirror_config(&zk.connect_string(), &cluster, Duration::from_secs(1));
    let mirror = Mirror::spawn(config.clone(), shutdown.clone());
    let mut events = mirror.events();
    trusted(&mirror).await;
    let client = raw_client(zk).await;
    let store_2 = format!("/pureflash/{cluster}/stores/2");
    let state = format!("{store_2}/state");
    let write_only = [zk::Acl::new(
        zk::Permission::WRITE | zk::Permission::ADMIN,
        zk::AuthId::anyone(),
    )];
    client.set_acl(&state, &write_only, None).await.unwrap();
    client.set_data(&state, b"ERROR", None).await.unwrap();
    until(&mirror, "store 2 unreadable, the refused node named", |v| {
        v.get(id(2))
            .and_then(|s| s.unreadable.as_ref())
            .is_some_and(|why| why.contains(&state))
    })
    .await;
    // Reloads go on meeting the refusal; none of them drops the store or costs the others
    // their trust. Two full ones complete meanwhile.
    let reloaded_at = mirror.snapshot().health.last_full_sync;
    for _ in 0..2 {
        let since = mirror.snapshot().health.last_full_sync;
        assert!(
            eventually(PATIENCE, async || mirror.snapshot().health.last_full_sync
                > since)
            .await,
            "no full reload since {reloaded_at:?}"
        );
    }
    let snapshot = mirror.snapshot();
    assert!(snapshot.health.is_trusted(), "{:?}", snapshot.health);
    assert!(snapshot.knows_store(id(1)));
    assert!(!snapshot.knows_store(id(2)));
    let kept = snapshot
        .view
        .get(id(2))
        .expect("store 2 is still in the view");
    assert!(kept.alive);
    assert_eq!(kept.state, Field::Valid("OK".into()), "the last value read");
    // The readable store is still followed, event by event.
    let [mut one, _two] = stores;
    one.crash().await;
    until(&mirror, "store 1 offline", |v| {
        v.get(id(1)).is_some_and(|s| !s.alive)
    })
    .await;
    assert!(mirror.snapshot().knows_store(id(1)));
    loop {
        match events.try_recv() {
            Ok(event) => assert!(
                !matches!(event, ViewEvent::StoreRemoved { .. }),
                "no store was taken for gone: {event:?}"
            ),
            Err(tokio::sync::broadcast::error::TryRecvError::Empty) => break,
            Err(error) => panic!("events missed, so not all checked: {error}"),
        }
    }

    // A store directory that cannot be listed fails a one-shot load (`sync --once`) with
    // the path named, rather than loading the cluster without it.
    client.set_acl(&store_2, &write_only, None).await.unwrap();
    let error = pureflash_operator::zk::mirror::load_once(&config, &CancellationToken::new())
        .await
        .expect_err("a refused store directory fails the load");
    assert!(
        error
            .to_string()
            .contains(&format!("refused to read {store_2}")),
        "{error}"
    );

    // The ACLs fixed, the next reload reads everything and the view is trusted again.
    for path in [&store_2, &state] {
        client
            .set_acl(path, &zk::Acls::anyone_all(), None)
            .await
            .unwrap();
    }
    until(&mirror, "store 2 read in full again", |v| {
        v.get(id(2)).is_some_and(|s| s.is_known())
    })
    .await;
    let snapshot = mirror.snapshot();
    assert!(snapshot.knows_store(id(2)));
    assert_eq!(
        snapshot.view.get(id(2)).unwrap().state,
        Field::Valid("ERROR".into())
    );
    shutdown.cancel();
    mirror.join().await.expect("the mirror task ends cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_created_in_one_atomic_step_is_seen() {
    testkit::init_test_logging();
    let zk = ZooKeeper::shared();
    let cluster = unique_cluster("mirror-atomic");
    let (mirror, shutdown) = follow(zk, &cluster);
    trusted(&mirror).await;
    let sim = PfsSim::start_atomically(spec(&zk.connect_string(), &cluster, 9))
        .await
        .unwrap();
    until(&mirror, "atomic store", |v| {
        v.get(id(9)).is_some_and(|s| {
            s.alive && s.trays_online() == 2 && s.ports.len() == 1 && s.mngt_ip.valid().is_some()
        })
    })
    .await;
    drop(sim);
    shutdown.cancel();
    mirror.join().await.expect("the mirror task ends cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zookeeper_restart_is_survived_and_untrusted_meanwhile() {
    testkit::init_test_logging();
    let zk = ZooKeeper::start();
    let cluster = unique_cluster("mirror-zk-restart");
    let mut store = PfsSim::start(spec(&zk.connect_string(), &cluster, 1))
        .await
        .unwrap();
    let (mirror, shutdown) = follow(&zk, &cluster);
    trusted(&mirror).await;

    zk.stop();
    assert!(
        eventually(PATIENCE, async || !mirror.snapshot().health.is_trusted()).await,
        "the view must not be trusted while ZooKeeper is down"
    );
    // Asked for a store's liveness meanwhile, it has no answer: never "offline".
    let probe = mirror.probe();
    let asked = probe.alive(id(1), Duration::from_secs(1)).await;
    assert!(asked.is_err(), "{asked:?}");
    tokio::time::sleep(Duration::from_secs(10)).await;
    let health = mirror.snapshot().health.clone();
    assert!(
        matches!(
            health.session,
            SessionStatus::Disconnected | SessionStatus::Expired | SessionStatus::Connecting
        ),
        "{health:?}"
    );
    tokio::task::block_in_place(|| zk.start_again());
    trusted(&mirror).await;

    // The store's 1 s session could not survive 10 s without a server; as the real pfs, it does
    // not re-register. Whatever ZooKeeper says now is what the mirror must say.
    until(&mirror, "store 1 offline after its session expired", |v| {
        v.get(id(1)).is_some_and(|s| !s.alive)
    })
    .await;
    assert!(!probe.alive(id(1), PATIENCE).await.unwrap());
    store.restart().await.unwrap();
    until(&mirror, "store 1 tracked after the restart", |v| {
        v.get(id(1)).is_some_and(|s| s.alive)
    })
    .await;
    assert!(
        probe.alive(id(1), PATIENCE).await.unwrap(),
        "through the new session"
    );
    store.crash().await;
    until(&mirror, "and its next crash", |v| {
        v.get(id(1)).is_some_and(|s| !s.alive)
    })
    .await;
    assert!(mirror.snapshot().health.sessions >= 1);
    shutdown.cancel();
    mirror.join().await.expect("the mirror task ends cleanly");
}

/// A server restart shorter than the session: the client reconnects in the same session, and
/// changes must keep arriving as events (zookeeper-client 0.11.2 forgets to resend persistent
/// watches on reconnect). The resync timer is an hour: only the watch can tell.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_keep_arriving_after_a_reconnect_within_the_session() {
    testkit::init_test_logging();
    let zk = ZooKeeper::start();
    let cluster = unique_cluster("mirror-zk-reconnect");
    let long_session = |id| {
        PfsSpec::new(&zk.connect_string(), &cluster, id)
            .with_session_timeout(Duration::from_secs(30))
    };
    let mut store = PfsSim::start(long_session(1)).await.unwrap();
    let shutdown = CancellationToken::new();
    let mut config = mirror_config(&zk.connect_string(), &cluster, Duration::from_secs(3600));
    config.session_timeout = Duration::from_secs(30);
    let mirror = Mirror::spawn(config, shutdown.clone());
    trusted(&mirror).await;
    let session = mirror.snapshot().health.sessions;

    zk.stop();
    assert!(
        eventually(PATIENCE, async || !mirror.snapshot().health.is_trusted()).await,
        "the view must not be trusted while ZooKeeper is down"
    );
    tokio::task::block_in_place(|| zk.start_again());
    trusted(&mirror).await;
    assert_eq!(
        mirror.snapshot().health.sessions,
        session,
        "the session outlives a short restart"
    );
    until(&mirror, "store 1 alive after the restart", |v| {
        v.get(id(1)).is_some_and(|s| s.alive)
    })
    .await;

    store.crash().await;
    until(&mirror, "store 1 offline, told by the watch", |v| {
        v.get(id(1)).is_some_and(|s| !s.alive)
    })
    .await;
    let _second = PfsSim::start(long_session(2)).await.unwrap();
    until(&mirror, "store 2 appearing, told by the watch", |v| {
        v.get(id(2)).is_some_and(|s| s.alive)
    })
    .await;
    shutdown.cancel();
    mirror.join().await.expect("the mirror task ends cleanly");
}

/// A flaky link to ZooKeeper: each reconnection drops again while the watch is being armed
/// anew on it (the AddWatch request is in flight). The session lives on through that (it is the
/// connection, not the session, that failed), and once the link holds the watch is armed and
/// changes arrive again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_lost_again_while_the_watch_is_rearmed_keeps_the_session() {
    testkit::init_test_logging();
    let zk = ZooKeeper::shared();
    let cluster = unique_cluster("mirror-flaky-link");
    let mut store = PfsSim::start(spec(&zk.connect_string(), &cluster, 1))
        .await
        .unwrap();
    let link = Proxy::start(&zk.connect_string()).await;
    // From the start: the session's first watch cannot be armed either.
    link.set_mode(ProxyMode::CloseOnZkRequest { op_code: ADD_WATCH });
    let shutdown = CancellationToken::new();
    let mut config = mirror_config(&link.address(), &cluster, Duration::from_secs(3600));
    config.session_timeout = Duration::from_secs(30);
    let mirror = Mirror::spawn(config, shutdown.clone());
    assert!(
        eventually(PATIENCE, async || link.closed_on_request() >= 3).await,
        "the first watch was never armed on the flaky link"
    );
    assert!(!mirror.snapshot().health.is_trusted());
    link.set_mode(ProxyMode::Forward);
    trusted(&mirror).await;
    let session = mirror.snapshot().health.sessions;
    assert_eq!(
        session, 1,
        "the first watch is armed within the first session"
    );
    let closed_before = link.closed_on_request();

    // Drop the connection, then let reconnections through but not the watch's AddWatch.
    link.set_mode(ProxyMode::Sever);
    assert!(
        eventually(PATIENCE, async || !mirror.snapshot().health.is_trusted()).await,
        "the view must not be trusted while the link is down"
    );
    link.set_mode(ProxyMode::CloseOnZkRequest { op_code: ADD_WATCH });
    assert!(
        eventually(PATIENCE, async || link.closed_on_request()
            >= closed_before + 3)
        .await,
        "the watch was never re-armed on the flaky link"
    );
    link.set_mode(ProxyMode::Forward);
    trusted(&mirror).await;
    assert_eq!(
        mirror.snapshot().health.sessions,
        session,
        "a dropped connection is no reason for a new session"
    );

    store.crash().await;
    until(&mirror, "store 1 offline, told by the watch", |v| {
        v.get(id(1)).is_some_and(|s| !s.alive)
    })
    .await;
    let _second = PfsSim::start(spec(&zk.connect_string(), &cluster, 2))
        .await
        .unwrap();
    until(&mirror, "store 2 appearing, told by the watch", |v| {
        v.get(id(2)).is_some_and(|s| s.alive)
    })
    .await;
    shutdown.cancel();
    mirror.join().await.expect("the mirror task ends cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_store_goes_offline_and_stays_offline() {
    testkit::init_test_logging();
    let zk = ZooKeeper::shared();
    let cluster = unique_cluster("mirror-hang");
    let mut store = PfsSim::start(spec(&zk.connect_string(), &cluster, 5))
        .await
        .unwrap();
    let (mirror, shutdown) = follow(zk, &cluster);
    trusted(&mirror).await;
    assert!(mirror.snapshot().view.get(id(5)).unwrap().alive);
    store.lose_session().await;
    until(&mirror, "store 5 offline", |v| !v.get(id(5)).unwrap().alive).await;
    // The process is back and talking, but (like pfs) it never re-creates alive.
    assert!(store.session_state().is_some());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!mirror.snapshot().view.get(id(5)).unwrap().alive);
    shutdown.cancel();
    mirror.join().await.expect("the mirror task ends cleanly");
}

/// In an ensemble whose servers have ids of 128 or more, every session id reads negative: a
/// store registered through one is alive, its `alive` owned by its session, and goes offline
/// when that session ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_registered_through_a_server_with_a_high_id_is_alive() {
    testkit::init_test_logging();
    let zk = tokio::task::spawn_blocking(|| ZooKeeper::start_as_quorum_member(201))
        .await
        .unwrap();
    let cluster = unique_cluster("mirror-high-id");
    // A quorum member serves once it has elected itself.
    let mut store = loop {
        match PfsSim::start(spec(&zk.connect_string(), &cluster, 3)).await {
            Ok(store) => break store,
            Err(error) => {
                tracing::info!(%error, "waiting for the quorum");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let (mirror, shutdown) = follow(&zk, &cluster);
    trusted(&mirror).await;
    let view = mirror.snapshot().view.clone();
    let registered = view.get(id(3)).unwrap();
    let session = registered
        .alive_session
        .expect("alive is owned by a session");
    assert!(session < 0, "a session of server 201: {session:#x}");
    assert!(registered.alive, "{registered:#?}");
    assert!(
        registered.trays.len() == 2 && registered.trays.values().all(|tray| tray.online),
        "{registered:#?}"
    );
    assert_eq!(registered.problems(), []);
    // The probe asked before a restart says the same.
    assert!(
        mirror
            .probe()
            .alive(id(3), Duration::from_secs(5))
            .await
            .unwrap()
    );
    store.crash().await;
    until(&mirror, "store 3 offline", |v| !v.get(id(3)).unwrap().alive).await;
    shutdown.cancel();
    mirror.join().await.expect("the mirror task ends cleanly");
}

/// A child of a store's `trays/` whose name is no tray uuid, a long one: reported, and the
/// store and the cluster are mirrored all the same (read seven times over in one request, its
/// name broke the connection at every reload, and nothing was trusted again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_junk_tray_name_is_reported_without_wedging_the_mirror() {
    testkit::init_test_logging();
    let zk = ZooKeeper::shared();
    let cluster = unique_cluster("mirror-junk-tray");
    let store = PfsSim::start(spec(&zk.connect_string(), &cluster, 1))
        .await
        .unwrap();
    let client = raw_client(zk).await;
    let persistent = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
    let junk = "x".repeat(150_000);
    client
        .create(
            &format!("{}/trays/{junk}", store.spec().store_path()),
            b"",
            &persistent,
        )
        .await
        .unwrap();
    let (mirror, shutdown) = follow(zk, &cluster);
    trusted(&mirror).await;
    let view = mirror.snapshot().view.clone();
    let registered = view.get(id(1)).unwrap();
    assert!(registered.alive);
    assert_eq!(registered.trays.len(), store.spec().trays.len());
    let problems: Vec<String> = registered
        .problems()
        .iter()
        .map(|p| p.path.clone())
        .collect();
    assert_eq!(problems, [format!("trays/{junk}")]);
    shutdown.cancel();
    mirror.join().await.expect("the mirror task ends cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mirror_closes_its_session_on_shutdown() {
    let zk = ZooKeeper::shared();
    let cluster = unique_cluster("mirror-close");
    let (mirror, shutdown) = follow(zk, &cluster);
    trusted(&mirror).await;
    let snapshots = mirror.snapshots();
    shutdown.cancel();
    mirror.join().await.expect("the mirror task ends cleanly");
    assert_eq!(snapshots.borrow().health.session, SessionStatus::Closed);
}

/// A store listing thousands of trays (bad data, most likely) is read in requests ZooKeeper
/// accepts: read in one, it broke the connection at every reload, and the view never became
/// trusted, the other stores included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_with_thousands_of_trays_does_not_wedge_the_mirror() {
    const TRAYS: usize = 2500;
    testkit::init_test_logging();
    let zk = ZooKeeper::shared();
    let cluster = unique_cluster("mirror-big");
    let _good = PfsSim::start(spec(&zk.connect_string(), &cluster, 1))
        .await
        .unwrap();
    let client = raw_client(zk).await;
    let persistent = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
    let trays = format!("/pureflash/{cluster}/stores/2/trays");
    client.mkdir(&trays, &persistent).await.unwrap();
    let names: Vec<String> = (0..TRAYS)
        .map(|n| format!("{trays}/00000002-0000-4000-8000-{n:012}"))
        .collect();
    for chunk in names.chunks(250) {
        futures::future::try_join_all(
            chunk
                .iter()
                .map(|path| client.create(path, &[], &persistent)),
        )
        .await
        .unwrap();
    }
    let (mirror, shutdown) = follow(zk, &cluster);
    trusted(&mirror).await;
    let view = &mirror.snapshot().view;
    assert!(view.get(id(1)).is_some_and(|store| store.alive));
    assert_eq!(view.get(id(2)).map(|store| store.trays.len()), Some(TRAYS));
    shutdown.cancel();
    mirror.join().await.expect("the mirror task ends cleanly");
}
