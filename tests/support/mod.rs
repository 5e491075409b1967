//! Shared helpers of the integration tests: an independent reader of the metadata DB, and a
//! running mirror + DB sync to drive scenarios against.
#![allow(dead_code)] // each test binary uses a different subset

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use pureflash_operator::dbsync::{self, DbSyncConfig, DbSyncStatus};
use pureflash_operator::metadb::{DbUrl, MetaDb};
use pureflash_operator::zk::{ClusterLayout, Mirror, MirrorConfig, Snapshot};
use sqlx::{MySqlPool, SqlitePool};
use testkit::mariadb::MariaDb;
use testkit::pfs::PfsSpec;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long any "eventually" in these tests may take before it is a failure. Generous: these
/// are liveness checks, not performance measurements (those are in the benchmark).
pub const PATIENCE: Duration = Duration::from_secs(30);

/// A cluster name no other test uses, so tests can share one ZooKeeper.
pub fn unique_cluster(test: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{test}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Which metadata DB a scenario runs on.
#[derive(Clone, Copy, Debug)]
pub enum Backend {
    Sqlite,
    MariaDb,
}

/// One metadata DB for a test: its URL and an independent reader (plain SQL, not the code
/// under test).
pub struct TestDb {
    pub url: String,
    pub pool: ReaderPool,
    _dir: Option<tempfile::TempDir>,
}

pub enum ReaderPool {
    Sqlite(SqlitePool),
    MySql(MySqlPool),
}

pub type StoreRow = (i64, String, String);
pub type TrayRow = (String, String, String, i64, i64, i64);
pub type PortRow = (String, i64, Option<i64>, String);

impl TestDb {
    pub async fn new(backend: Backend) -> TestDb {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::Builder::new()
                    .prefix("pf-test-sqlite-")
                    .tempdir()
                    .unwrap();
                let path = dir.path().join("meta.db");
                let url = format!("sqlite://{}", path.display());
                let options = sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(&path)
                    .create_if_missing(true);
                let pool = sqlx::sqlite::SqlitePoolOptions::new()
                    .max_connections(2)
                    .connect_lazy_with(options);
                TestDb {
                    url,
                    pool: ReaderPool::Sqlite(pool),
                    _dir: Some(dir),
                }
            }
            Backend::MariaDb => {
                // Off the runtime's thread: starting the server (the first time) and creating
                // a database run programs, seconds during which a single-threaded runtime
                // would drive none of the test's simulated stores, whose 1 s sessions expire.
                let url = tokio::task::spawn_blocking(|| MariaDb::shared().new_database("pf"))
                    .await
                    .expect("creating a MariaDB database");
                Self::mysql(url)
            }
        }
    }

    /// The SQLite file, for a SQLite test DB.
    pub fn sqlite_path(&self) -> Option<std::path::PathBuf> {
        self.url.strip_prefix("sqlite://").map(Into::into)
    }

    /// A SQLite reader whose connections open the file now at its path (one deleted or
    /// replaced since would otherwise still be read through those opened before), and never
    /// create it.
    pub fn reopen_sqlite_reader(&mut self) {
        let path = self.sqlite_path().expect("a SQLite test DB");
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(false);
        self.pool = ReaderPool::Sqlite(
            sqlx::sqlite::SqlitePoolOptions::new()
                .max_connections(2)
                .connect_lazy_with(options),
        );
    }

    /// A reader for a MariaDB database at `url` (which must exist).
    pub fn mysql(url: String) -> TestDb {
        let pool = sqlx::mysql::MySqlPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(2))
            .connect_lazy(&url)
            .unwrap();
        TestDb {
            url,
            pool: ReaderPool::MySql(pool),
            _dir: None,
        }
    }

    pub async fn stores(&self) -> Vec<StoreRow> {
        self.query("select id, mngt_ip, status from t_store order by id")
            .await
    }

    pub async fn trays(&self) -> Vec<TrayRow> {
        self.query("select uuid, device, status, raw_capacity, object_size, store_id from t_tray order by uuid").await
    }

    pub async fn ports(&self) -> Vec<PortRow> {
        self.query(
            "select ip_addr, purpose, store_id, status from t_port order by ip_addr, purpose",
        )
        .await
    }

    /// Status of store `id`'s row, if there is one (and the table exists).
    pub async fn store_status(&self, id: i64) -> Option<String> {
        self.try_query::<StoreRow>("select id, mngt_ip, status from t_store order by id")
            .await
            .ok()?
            .into_iter()
            .find(|r| r.0 == id)
            .map(|r| r.2)
    }

    pub async fn query<T>(&self, sql: &'static str) -> Vec<T>
    where
        T: Send
            + Unpin
            + for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>
            + for<'r> sqlx::FromRow<'r, sqlx::mysql::MySqlRow>,
    {
        self.try_query(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    pub async fn try_query<T>(&self, sql: &'static str) -> Result<Vec<T>, sqlx::Error>
    where
        T: Send
            + Unpin
            + for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>
            + for<'r> sqlx::FromRow<'r, sqlx::mysql::MySqlRow>,
    {
        match &self.pool {
            ReaderPool::Sqlite(pool) => sqlx::query_as(sql).fetch_all(pool).await,
            ReaderPool::MySql(pool) => sqlx::query_as(sql).fetch_all(pool).await,
        }
    }

    pub async fn execute(&self, sql: &str) {
        let result = match &self.pool {
            ReaderPool::Sqlite(pool) => sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
                .execute(pool)
                .await
                .map(|_| ()),
            ReaderPool::MySql(pool) => sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
                .execute(pool)
                .await
                .map(|_| ()),
        };
        result.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// Counts every row written to the three tables from now on, with triggers.
    pub async fn audit_writes(&self) {
        self.execute("create table pf_audit (tbl varchar(16) not null)")
            .await;
        for table in ["t_store", "t_tray", "t_port"] {
            for op in ["insert", "update", "delete"] {
                let sql = match self.pool {
                    ReaderPool::Sqlite(_) => format!(
                        "create trigger audit_{table}_{op} after {op} on {table} begin insert into pf_audit values ('{table}'); end"
                    ),
                    ReaderPool::MySql(_) => format!(
                        "create trigger audit_{table}_{op} after {op} on {table} for each row insert into pf_audit values ('{table}')"
                    ),
                };
                self.execute(&sql).await;
            }
        }
    }

    pub async fn audited_writes(&self) -> i64 {
        let rows: Vec<(i64,)> = self.query("select count(*) from pf_audit").await;
        rows[0].0
    }
}

/// The mirror and the DB sync running in this process against one cluster and one DB.
pub struct Running {
    pub mirror: Mirror,
    pub status: watch::Receiver<DbSyncStatus>,
    shutdown: CancellationToken,
    sync: JoinHandle<()>,
}

pub fn mirror_config(zk: &str, cluster: &str, resync: Duration) -> MirrorConfig {
    MirrorConfig {
        connect: zk.to_owned(),
        layout: ClusterLayout::new(cluster).unwrap(),
        session_timeout: Duration::from_secs(2),
        resync_interval: resync,
    }
}

impl Running {
    pub fn start(zk: &str, cluster: &str, db_url: &str, resync: Duration) -> Running {
        Self::start_with(zk, cluster, db_url, resync, |_| {})
    }

    /// Like [`Self::start`], with the sync's settings adjusted by `adjust`.
    pub fn start_with(
        zk: &str,
        cluster: &str,
        db_url: &str,
        resync: Duration,
        adjust: impl FnOnce(&mut DbSyncConfig),
    ) -> Running {
        let db = MetaDb::open(&db_url.parse::<DbUrl>().unwrap());
        Self::start_on(zk, cluster, db, resync, adjust)
    }

    /// Like [`Self::start_with`], on a DB handle set up by the caller.
    pub fn start_on(
        zk: &str,
        cluster: &str,
        db: MetaDb,
        resync: Duration,
        adjust: impl FnOnce(&mut DbSyncConfig),
    ) -> Running {
        let shutdown = CancellationToken::new();
        let mirror = Mirror::spawn(mirror_config(zk, cluster, resync), shutdown.clone());
        let (status_tx, status) = watch::channel(DbSyncStatus::default());
        let mut config = DbSyncConfig::new(resync);
        config.retry_max = Duration::from_secs(1);
        adjust(&mut config);
        let sync = tokio::spawn(dbsync::run(
            db,
            mirror.snapshots(),
            config,
            status_tx,
            shutdown.clone(),
        ));
        Running {
            mirror,
            status,
            shutdown,
            sync,
        }
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.mirror.snapshot()
    }

    /// Waits until the DB matches the current view of a trusted mirror.
    pub async fn wait_synced(&mut self) {
        let ok = testkit::eventually(PATIENCE, async || {
            let snapshot = self.mirror.snapshot();
            snapshot.health.is_trusted()
                && self.status.borrow().synced_version == Some(snapshot.version)
        })
        .await;
        assert!(
            ok,
            "DB sync did not catch up: {:?} / {:?}",
            self.mirror.snapshot().health,
            *self.status.borrow()
        );
    }

    /// Waits until the mirror's view is trusted (for clusters with nothing to sync yet).
    pub async fn wait_trusted(&self) {
        let ok = testkit::eventually(PATIENCE, async || {
            self.mirror.snapshot().health.is_trusted()
        })
        .await;
        assert!(
            ok,
            "mirror never trusted: {:?}",
            self.mirror.snapshot().health
        );
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.sync.await.unwrap();
        self.mirror
            .join()
            .await
            .expect("the mirror task ends cleanly");
    }
}

/// A store spec with a short session so expiry scenarios are quick (2 s: a loaded machine can
/// stall a 1 s session's pings past its expiry, and pfs-sim, like pfs, never registers again).
pub fn spec(zk: &str, cluster: &str, id: u32) -> PfsSpec {
    PfsSpec::new(zk, cluster, id).with_session_timeout(Duration::from_secs(2))
}

/// Polls the DB until `check` accepts what it reads; panics with the last reading otherwise.
#[macro_export]
macro_rules! wait_for {
    ($db:expr, $what:literal, |$stores:ident, $trays:ident, $ports:ident| $check:expr) => {{
        let db = &$db;
        let deadline = std::time::Instant::now() + $crate::support::PATIENCE;
        // The check sees only complete readings: a failed query (the tables not made yet, a
        // connection the DB dropped) is read again, not taken for empty tables.
        loop {
            let last;
            let reading = async {
                Ok::<_, String>((
                    db.try_query::<$crate::support::StoreRow>("select id, mngt_ip, status from t_store order by id").await.map_err(|e| e.to_string())?,
                    db.try_query::<$crate::support::TrayRow>("select uuid, device, status, raw_capacity, object_size, store_id from t_tray order by uuid").await.map_err(|e| e.to_string())?,
                    db.try_query::<$crate::support::PortRow>("select ip_addr, purpose, store_id, status from t_port order by ip_addr, purpose").await.map_err(|e| e.to_string())?,
                ))
            }
            .await;
            match reading {
                Ok(($stores, $trays, $ports)) => {
                    if $check {
                        break;
                    }
                    last = format!("t_store {:?}\nt_tray {:?}\nt_port {:?}", $stores, $trays, $ports);
                }
                Err(error) => last = format!("the DB could not be read: {error}"),
            }
            if std::time::Instant::now() > deadline {
                panic!("timed out waiting for {}:\n{}", $what, last);
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }};
}

/// Deletes `path` and everything below it (what an administrator removing a store does).
pub async fn delete_tree(client: &zookeeper_client::Client, path: &str) {
    use zookeeper_client::Error;
    let children = match client.list_children(path).await {
        Ok(children) => children,
        Err(Error::NoNode) => return,
        Err(e) => panic!("{path}: {e}"),
    };
    for child in children {
        Box::pin(delete_tree(client, &format!("{path}/{child}"))).await;
    }
    match client.delete(path, None).await {
        Ok(()) | Err(Error::NoNode) => {}
        Err(e) => panic!("{path}: {e}"),
    }
}

/// How [`lock_t_store`] locks the table.
pub enum TableLock {
    /// Others may read it, not write it.
    Read,
    /// Others may neither read nor write it.
    Write,
}

/// A MariaDB connection of its own holding t_store locked on the test DB at `url`, until it is
/// closed or unlocks.
pub async fn lock_t_store(url: &str, lock: TableLock) -> sqlx::mysql::MySqlConnection {
    use sqlx::Connection;
    let mut locker = sqlx::mysql::MySqlConnection::connect(url).await.unwrap();
    let statement = match lock {
        TableLock::Read => "lock tables t_store read",
        TableLock::Write => "lock tables t_store write",
    };
    sqlx::query(statement).execute(&mut locker).await.unwrap();
    locker
}

/// Whether, within [`PATIENCE`], another client's statement comes to wait on the table lock
/// `locker` holds.
pub async fn a_write_waits_on(locker: &mut sqlx::mysql::MySqlConnection) -> bool {
    testkit::eventually(PATIENCE, async || {
        let waiting: (i64,) = sqlx::query_as(
            "select count(*) from information_schema.processlist \
             where db = database() and state like 'Waiting for table%lock%'",
        )
        .fetch_one(&mut *locker)
        .await
        .unwrap();
        waiting.0 > 0
    })
    .await
}
