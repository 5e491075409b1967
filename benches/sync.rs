//! Benchmark of `pureflash-operator sync` against a real ZooKeeper and a real MariaDB.
//!
//!     cargo bench --bench sync                # everything (a–d), a few minutes
//!     cargo bench --bench sync -- latency     # (a) + (b)
//!     cargo bench --bench sync -- initial     # (c)
//!     cargo bench --bench sync -- footprint   # (d)
//!     cargo bench --bench sync -- repair      # (e)
//!
//! (a) store session closed → its t_store row reads OFFLINE; (b) `alive` created → row reads
//! OK; both p50/p95/max over 25 trials, at 10 and 200 stores. (c) `sync --once` wall time into
//! an empty DB at 100, 1000 and 3000 stores × 4 trays × 2 ports (median of 3). (d) peak RSS
//! and threads of a running `sync` at 100 and 1000 stores. (e) `sync --once` repairing a DB
//! where every tray and port row names the wrong store and as many stale ports as real ones
//! stand (rows another tool re-keyed), at 1000 and 3000 stores (median of 3): the
//! row-by-row statements of a plan.
//!
//! The operator runs as its own process (the release binary); the benchmark owns ZooKeeper
//! and MariaDB (started like the tests do) and reads the DB with plain SQL, polling without
//! sleeps, so latencies include one poll round trip (~0.1–0.3 ms).

mod common;

use std::time::{Duration, Instant};

use sqlx::MySqlPool;
use testkit::mariadb::MariaDb;
use testkit::zookeeper::ZooKeeper;
use zookeeper_client::{self as zk, Acls, AddWatchMode, CreateMode};

use common::{TRAYS, median, operator, populate, stats, stop};

const TRIALS: usize = 25;
/// Untimed trials first, so JIT and caches are warm.
const WARMUP: usize = 5;

#[tokio::main]
async fn main() {
    let which: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wants = |part: &str| which.is_empty() || which.iter().any(|w| w == part || w == "all");
    eprintln!("starting ZooKeeper and MariaDB…");
    let zk = ZooKeeper::start_for_benchmark();
    let db = MariaDb::start();
    let mut report = String::new();
    if wants("latency") {
        for stores in [10, 200] {
            report += &latency(&zk, &db, stores).await;
        }
    }
    if wants("initial") {
        report += &initial_sync(&zk, &db).await;
    }
    if wants("footprint") {
        report += &footprint(&zk, &db).await;
    }
    if wants("repair") {
        report += &repair(&zk, &db).await;
    }
    println!("\n{report}");
}

async fn count_status(pool: &MySqlPool, status: &str) -> i64 {
    sqlx::query_scalar::<_, i64>("select count(*) from t_store where status = ?")
        .bind(status)
        .fetch_one(pool)
        .await
        .unwrap_or(0)
}

async fn store_status(pool: &MySqlPool, id: i64) -> Option<String> {
    sqlx::query_scalar::<_, String>("select status from t_store where id = ?")
        .bind(id)
        .fetch_optional(pool)
        .await
        .ok()
        .flatten()
}

async fn wait_status(pool: &MySqlPool, id: i64, status: &str) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if store_status(pool, id).await.as_deref() == Some(status) {
            return Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "store {id} never became {status}"
        );
    }
}

async fn wait_count(pool: &MySqlPool, status: &str, count: i64, limit: Duration) {
    let deadline = Instant::now() + limit;
    while count_status(pool, status).await != count {
        assert!(Instant::now() < deadline, "never {count} rows {status}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// (a) and (b) at `stores` stores: store 1's alive toggled by a session of its own.
async fn latency(zk_server: &ZooKeeper, db: &MariaDb, stores: u32) -> String {
    let cluster = format!("lat{stores}");
    let admin = zk::Client::connect(&zk_server.connect_string())
        .await
        .unwrap();
    populate(&admin, &admin, &cluster, stores, &[1]).await;
    let name = format!("lat{stores}");
    db.admin_sql(&format!("create database {name}"));
    let url = db.url(&name);
    let mut sync = operator(&[
        "sync",
        "--zk",
        &zk_server.connect_string(),
        "--cluster",
        &cluster,
        "--db",
        &url,
    ])
    .spawn()
    .unwrap();
    let pool = MySqlPool::connect(&url).await.unwrap();
    wait_count(&pool, "OK", i64::from(stores) - 1, Duration::from_secs(60)).await;
    wait_status(&pool, 1, "OFFLINE").await;

    let alive = format!("/pureflash/{cluster}/stores/1/alive");
    let ephemeral = CreateMode::Ephemeral.with_acls(Acls::anyone_all());
    // An independent observer of the same node: when ZooKeeper itself published the change.
    let observer = zk::Client::connect(&zk_server.connect_string())
        .await
        .unwrap();
    let mut seen = observer
        .watch(&alive, AddWatchMode::Persistent)
        .await
        .unwrap();
    let mut offline = Trials::default();
    let mut online = Trials::default();
    for trial in 0..WARMUP + TRIALS {
        let session = zk::Client::connector()
            .with_session_timeout(Duration::from_secs(3))
            .connect(&zk_server.connect_string())
            .await
            .unwrap();
        let mut state = session.state_watcher();
        let t0 = Instant::now();
        session.create(&alive, b"", &ephemeral).await.unwrap();
        seen.changed().await;
        let t_zk = Instant::now();
        let t_db = wait_status(&pool, 1, "OK").await;
        if trial >= WARMUP {
            online.push(t0, t_zk, t_db);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        let t0 = Instant::now();
        drop(session); // the session's close request goes out now
        seen.changed().await;
        let t_zk = Instant::now();
        let t_db = wait_status(&pool, 1, "OFFLINE").await;
        if trial >= WARMUP {
            offline.push(t0, t_zk, t_db);
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while !state.changed().await.is_terminated() {}
        })
        .await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop(&mut sync);
    format!(
        "(a) session closed -> t_store OFFLINE, {stores} stores, {TRIALS} trials:\n{}\
         (b) alive created  -> t_store OK,      {stores} stores, {TRIALS} trials:\n{}",
        offline.report(),
        online.report()
    )
}

/// Latency samples split at the moment an independent ZooKeeper client saw the change.
#[derive(Default)]
struct Trials {
    total: Vec<Duration>,
    zookeeper: Vec<Duration>,
    operator: Vec<Duration>,
}

impl Trials {
    fn push(&mut self, t0: Instant, t_zk: Instant, t_db: Instant) {
        self.total.push(t_db - t0);
        self.zookeeper.push(t_zk - t0);
        self.operator.push(t_db.saturating_duration_since(t_zk));
    }

    fn report(&self) -> String {
        let line = |name: &str, samples: &[Duration]| {
            let s = stats(samples.to_vec());
            format!(
                "    {name:<36} p50 {:>6.2} ms   p95 {:>6.2} ms   max {:>6.2} ms\n",
                s.p50, s.p95, s.max
            )
        };
        line("end to end", &self.total)
            + &line("ZooKeeper (change -> observer event)", &self.zookeeper)
            + &line("operator (observer event -> row)", &self.operator)
    }
}

/// Runs `sync --once` of `cluster` into `url`; it must succeed.
fn sync_once(zk_server: &ZooKeeper, cluster: &str, url: &str) {
    let status = operator(&[
        "sync",
        "--once",
        "--zk",
        &zk_server.connect_string(),
        "--cluster",
        cluster,
        "--db",
        url,
    ])
    .status()
    .unwrap();
    assert!(status.success(), "sync --once: {status}");
}

/// `median 235 ms (runs: 235, 246, 224)`.
fn median_of_runs(median: Duration, runs: &[Duration]) -> String {
    let ms = |d: &Duration| format!("{:.0}", d.as_secs_f64() * 1000.0);
    let runs: Vec<String> = runs.iter().map(ms).collect();
    format!("median {} ms (runs: {})", ms(&median), runs.join(", "))
}

/// (c): `sync --once` into an empty database, median of 3, at 100 / 1000 / 3000 stores.
async fn initial_sync(zk_server: &ZooKeeper, db: &MariaDb) -> String {
    let mut out = String::new();
    let mut medians = Vec::new();
    for stores in [100u32, 1000, 3000] {
        let cluster = format!("init{stores}");
        let admin = zk::Client::connect(&zk_server.connect_string())
            .await
            .unwrap();
        let started = Instant::now();
        populate(&admin, &admin, &cluster, stores, &[]).await;
        eprintln!("{stores} stores registered in {:?}", started.elapsed());
        let mut runs = Vec::new();
        for run in 0..3 {
            let name = format!("init{stores}_{run}");
            db.admin_sql(&format!("create database {name}"));
            let url = db.url(&name);
            let t0 = Instant::now();
            sync_once(zk_server, &cluster, &url);
            let elapsed = t0.elapsed();
            let pool = MySqlPool::connect(&url).await.unwrap();
            assert_eq!(
                count_status(&pool, "OK").await,
                i64::from(stores),
                "every store synced"
            );
            let trays: i64 = sqlx::query_scalar("select count(*) from t_tray")
                .fetch_one(&pool)
                .await
                .unwrap();
            assert_eq!(trays, i64::from(stores * TRAYS));
            pool.close().await;
            runs.push(elapsed);
        }
        let m = median(runs.clone());
        medians.push((stores, m));
        out += &format!(
            "(c) initial sync, {stores} stores x {TRAYS} trays x 2 ports into an empty DB: {}\n",
            median_of_runs(m, &runs)
        );
    }
    let (_, m1000) = medians[1];
    let (_, m3000) = medians[2];
    out += &format!(
        "    ratio 3000/1000 stores: {:.2}\n",
        m3000.as_secs_f64() / m1000.as_secs_f64()
    );
    out
}

/// (e): `sync --once` into a DB whose every tray and port row names the wrong store, beside
/// as many stale ports, median of 3, at 1000 and 3000 stores.
async fn repair(zk_server: &ZooKeeper, db: &MariaDb) -> String {
    let mut out = String::new();
    let mut medians = Vec::new();
    for stores in [1000u32, 3000] {
        let cluster = format!("repair{stores}");
        let admin = zk::Client::connect(&zk_server.connect_string())
            .await
            .unwrap();
        populate(&admin, &admin, &cluster, stores, &[]).await;
        // What the DB reads when it is right.
        let reference = format!("repair{stores}_ref");
        db.admin_sql(&format!("create database {reference}"));
        sync_once(zk_server, &cluster, &db.url(&reference));
        let mut runs = Vec::new();
        for run in 0..3 {
            let name = format!("repair{stores}_{run}");
            db.admin_sql(&format!("create database {name}"));
            let url = db.url(&name);
            sync_once(zk_server, &cluster, &url);
            db.admin_sql(&format!(
                "use {name}; \
                 update t_tray set store_id = store_id % {stores} + 1; \
                 update t_port set store_id = store_id + 100000; \
                 insert into t_port (ip_addr, store_id, purpose, status) \
                   select concat('s', ip_addr), store_id, purpose, status from t_port"
            ));
            let t0 = Instant::now();
            sync_once(zk_server, &cluster, &url);
            let elapsed = t0.elapsed();
            let differences = db.admin_sql(&format!(
                "select \
                   (select count(*) from {name}.t_tray a left join {reference}.t_tray b \
                      on a.uuid = b.uuid and a.store_id = b.store_id where b.uuid is null), \
                   (select count(*) from {name}.t_port a left join {reference}.t_port b \
                      on a.ip_addr = b.ip_addr and a.purpose = b.purpose and a.store_id = b.store_id \
                      where b.ip_addr is null), \
                   (select count(*) from {name}.t_port)"
            ));
            assert_eq!(
                differences.trim(),
                format!("0\t0\t{}", stores * 2),
                "every row repaired"
            );
            runs.push(elapsed);
        }
        let m = median(runs.clone());
        medians.push(m);
        out += &format!(
            "(e) repair, {stores} stores: {} tray and {} port rows re-homed, {} stale ports deleted: {}\n",
            stores * TRAYS,
            stores * 2,
            stores * 2,
            median_of_runs(m, &runs)
        );
    }
    out += &format!(
        "    ratio 3000/1000 stores: {:.2}\n",
        medians[1].as_secs_f64() / medians[0].as_secs_f64()
    );
    out
}

/// (d): peak RSS and threads of a running `sync` at 100 and 1000 stores.
async fn footprint(zk_server: &ZooKeeper, db: &MariaDb) -> String {
    let mut out = String::new();
    for stores in [100u32, 1000] {
        let cluster = format!("fp{stores}");
        let admin = zk::Client::connect(&zk_server.connect_string())
            .await
            .unwrap();
        populate(&admin, &admin, &cluster, stores, &[]).await;
        let name = format!("fp{stores}");
        db.admin_sql(&format!("create database {name}"));
        let url = db.url(&name);
        let mut sync = operator(&[
            "sync",
            "--zk",
            &zk_server.connect_string(),
            "--cluster",
            &cluster,
            "--db",
            &url,
            "--resync-interval",
            "1s",
        ])
        .spawn()
        .unwrap();
        let pool = MySqlPool::connect(&url).await.unwrap();
        wait_count(&pool, "OK", i64::from(stores), Duration::from_secs(120)).await;
        // A few resync periods of steady state, then churn: every store goes OFFLINE and back.
        tokio::time::sleep(Duration::from_secs(3)).await;
        drop(admin);
        wait_count(&pool, "OFFLINE", i64::from(stores), Duration::from_secs(60)).await;
        let admin = zk::Client::connect(&zk_server.connect_string())
            .await
            .unwrap();
        let ephemeral = CreateMode::Ephemeral.with_acls(Acls::anyone_all());
        let paths: Vec<String> = (1..=stores)
            .map(|id| format!("/pureflash/{cluster}/stores/{id}/alive"))
            .collect();
        for chunk in paths.chunks(1000) {
            for created in
                futures::future::join_all(chunk.iter().map(|p| admin.create(p, b"", &ephemeral)))
                    .await
            {
                created.unwrap();
            }
        }
        wait_count(&pool, "OK", i64::from(stores), Duration::from_secs(60)).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let status = std::fs::read_to_string(format!("/proc/{}/status", sync.id())).unwrap();
        let field = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .map(|v| v.trim().to_owned())
                .unwrap_or_default()
        };
        out += &format!(
            "(d) sync at {stores} stores (after full sync, 1 s resyncs, all stores OFFLINE and back): peak RSS {}, RSS {}, threads {}\n",
            field("VmHWM:"),
            field("VmRSS:"),
            field("Threads:")
        );
        stop(&mut sync);
    }
    out
}
