//! The PureFlash metadata DB: the only module that talks SQL.
//!
//! - [`rows`]: t_store / t_tray / t_port rows as plain data, and the constraint-checked model of
//!   applying a plan to them;
//! - [`plan`]: the pure diff `plan(view, rows) -> Plan`;
//! - [`sql`]: the statements, written once for both backends;
//! - [`url`]: parsing `--db`;
//! - [`MetaDb`] (here): the connection pool and transactions.

pub mod plan;
pub mod rows;
pub mod sql;
pub mod url;

use std::sync::Arc;
use std::time::Duration;

use sqlx::mysql::MySqlPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection, MySql, MySqlPool, Sqlite, SqlitePool};

pub use plan::{Note, Plan, Precedence, plan, plan_after, plan_fast};
pub use rows::{DbRows, PortKey, PortRow, STATUS_OFFLINE, STATUS_OK, StoreRow, TrayRow};
pub use url::{BadDbUrl, DbUrl};

use sql::{Sql, UnreadableCells};

/// The longest a stop (or the reopening of a replaced SQLite file) waits for the pool to
/// close: it checks each connection as it comes back, with no timeout of its own, and a dead
/// DB must not hold the exit up.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);

/// How long to wait for a pooled connection before reporting the DB unreachable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// Run on every new MariaDB connection:
/// - autocommit on, whatever the server's default (`autocommit=0` in a my.cnf): a plan of one
///   statement runs without BEGIN and COMMIT, and would otherwise never be committed;
/// - a statement waits at most 20 s for a lock (a `LOCK TABLES` or a long transaction of
///   another client) before it fails. The server's defaults are a day and 50 s; a sync pass is
///   abandoned sooner anyway, and this makes the server give up too instead of keeping the
///   abandoned statement waiting;
/// - an idle session ends after at most 2 minutes (the server's default is 8 hours): a pass
///   abandoned while the network between us was cut leaves its session on the server idle
///   inside its transaction, holding its row locks, and every later pass would wait on them
///   in vain until the server dropped it. Pooled connections are tested before use, so one
///   the server closed is simply replaced;
/// - tables created by this session are InnoDB whatever the server's default engine: with
///   MyISAM or Aria a failed transaction would leave its first statements applied, and the
///   foreign key of t_tray would be ignored.
const SESSION_SETTINGS: &str = "set session autocommit = 1, lock_wait_timeout = 20, \
     innodb_lock_wait_timeout = 20, wait_timeout = least(@@session.wait_timeout, 120), \
     default_storage_engine = InnoDB";

/// Pooled MariaDB connections idle longer than this are closed, well before the 120 s
/// `wait_timeout` of [`SESSION_SETTINGS`]: the pool looks for them only every `idle_timeout`,
/// so one may idle up to twice this long.
const IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(50);

/// A failed DB operation, naming what was being done.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot connect to the metadata DB {db}: {source}")]
    Connect { db: String, source: sqlx::Error },
    #[error("cannot create or check table {table}: {source}")]
    Schema {
        table: &'static str,
        source: sqlx::Error,
    },
    #[error("cannot read {table}: {source}")]
    Load {
        table: &'static str,
        source: sqlx::Error,
    },
    #[error("cannot {step}: {source}")]
    Apply {
        step: &'static str,
        source: sqlx::Error,
    },
    /// A row the pass meant to write under a key (an insert, or an address moved to) was
    /// written meanwhile by another writer (the Java conductor running alongside, say): the
    /// pass was planned on a picture of the tables older than that row, and is rolled back.
    #[error("cannot {step}: a row already holds one of its unique keys ({source})")]
    KeyTaken {
        step: &'static str,
        source: sqlx::Error,
    },
    #[error("cannot commit the transaction: {0}")]
    Commit(sqlx::Error),
    #[error("the metadata DB did not answer within {}s (locked, or the connection is dead); its connections are replaced", .0.as_secs_f64())]
    TimedOut(Duration),
    /// The write fence closed: this writer may no longer write (its leadership term ended).
    #[error("not written: {0}")]
    Fenced(&'static str),
}

/// Says whether writes may still go out, and if not, why; asked right before the first
/// statement and again right before COMMIT (see [`MetaDb::fenced_by`]).
pub type WriteFence = Arc<dyn Fn() -> Result<(), &'static str> + Send + Sync>;

enum Pool {
    Sqlite(SqlitePool),
    MySql(MySqlPool),
}

/// The metadata DB behind one interface, whichever the backend.
pub struct MetaDb {
    pool: Pool,
    source: DbUrl,
    url: String,
    fence: Option<WriteFence>,
    /// What the last read found unreadable, so that cells left in place (rows whose key cannot
    /// be read) are warned about when they change, not on every re-read.
    unreadable: std::sync::Mutex<UnreadableCells>,
    /// The SQLite file the pool's connections opened, once the schema is known to be in it.
    opened_file: std::sync::Mutex<Option<FileIdentity>>,
    /// A look at the SQLite file is under way (and maybe stuck: one at a time, then).
    looking_at_file: Arc<std::sync::atomic::AtomicBool>,
}

/// A file as the filesystem knows it, whatever its name: (device, inode).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileIdentity(u64, u64);

impl FileIdentity {
    /// The file at `path` now, looked up off the runtime's threads and within a few seconds:
    /// a hung mount blocks a `stat` for good, and must not take a worker (nor the sync task,
    /// which could then not be stopped) with it. `None` when the answer did not come, or an
    /// earlier look (`busy`) has not ended: a stuck one is not joined by more.
    async fn of(
        path: &std::path::Path,
        busy: &Arc<std::sync::atomic::AtomicBool>,
    ) -> Option<std::io::Result<FileIdentity>> {
        use std::os::unix::fs::MetadataExt;
        use std::sync::atomic::Ordering;
        if busy.swap(true, Ordering::AcqRel) {
            return None;
        }
        let (path, done) = (path.to_owned(), Arc::clone(busy));
        let lookup = tokio::task::spawn_blocking(move || {
            let found = std::fs::metadata(path)
                .map(|metadata| FileIdentity(metadata.dev(), metadata.ino()));
            done.store(false, Ordering::Release);
            found
        });
        tokio::time::timeout(CLOSE_TIMEOUT, lookup).await.ok()?.ok()
    }
}

impl MetaDb {
    /// Sets up a pool for `url` without connecting yet: the first operation connects, so an
    /// unreachable DB is an error of that operation (retried by the caller), not of start-up.
    /// A SQLite file is created if missing and put in WAL mode so other tools can read while
    /// the operator writes.
    pub fn open(url: &DbUrl) -> MetaDb {
        MetaDb {
            pool: Self::pool(url),
            source: url.clone(),
            url: url.to_string(),
            fence: None,
            unreadable: Default::default(),
            opened_file: Default::default(),
            looking_at_file: Default::default(),
        }
    }

    /// Makes every [`MetaDb::apply`] ask `fence` before its first statement (once it holds a
    /// connection) and before its COMMIT, and roll back when it says no. A leader checks its
    /// term this way: the news that the term ended may reach the sync's task late (after a
    /// stall of the whole process the sync can run before the election does), and a
    /// transaction committed then would land on top of the new leader's.
    pub fn fenced_by(mut self, fence: WriteFence) -> MetaDb {
        self.fence = Some(fence);
        self
    }

    fn check_fence(&self) -> Result<(), DbError> {
        match &self.fence {
            Some(fence) => fence().map_err(DbError::Fenced),
            None => Ok(()),
        }
    }

    /// Drops every pooled connection for new ones, after an operation was abandoned: a
    /// connection left inside a statement (waiting on a lock, or on a peer that vanished
    /// without a reset) would hold up the next one, and the pool would test it on release by a
    /// ping that may never be answered. The old pool closes in the background. An in-memory
    /// SQLite database lives in its one connection, and is kept.
    pub fn replace_connections(&mut self) {
        if matches!(self.source, DbUrl::Sqlite { path: None }) {
            return;
        }
        let old = std::mem::replace(&mut self.pool, Self::pool(&self.source));
        tokio::spawn(async move {
            match old {
                Pool::Sqlite(pool) => pool.close().await,
                Pool::MySql(pool) => pool.close().await,
            }
        });
    }

    /// Whether the SQLite file was deleted or replaced (`rm`, a restore from a backup) since
    /// the pool's connections opened it: they would go on reading and writing the old file,
    /// unlinked and seen by no one else, for as long as they live. If so, closes them (first:
    /// an old connection closing after a new one opened could checkpoint into, or delete, the
    /// new file's WAL) and opens the file at its path afresh, creating it when it is gone, and
    /// says what happened. The caller then has to check the schema and re-read the tables.
    pub async fn reopen_if_file_replaced(&mut self) -> Option<&'static str> {
        let DbUrl::Sqlite { path: Some(path) } = &self.source else {
            return None;
        };
        let opened = self.opened_file()?;
        let what = match FileIdentity::of(path, &self.looking_at_file).await? {
            Ok(now) if now == opened => return None,
            Ok(_) => "the SQLite file was replaced by another",
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                "the SQLite file was deleted"
            }
            // Unreadable for now (permissions changed, a stale mount), or no answer (above):
            // what the connections do with it will tell.
            Err(_) => return None,
        };
        // Bounded: a connection stuck on the old file (a hung mount) must not stop the sync.
        // Given up on, it is left behind; a new connection finding that file's WAL at the old
        // path is still safer than writing into an unlinked file for good.
        if tokio::time::timeout(CLOSE_TIMEOUT, self.close())
            .await
            .is_err()
        {
            tracing::warn!(db = %self.url, "the connections to the replaced SQLite file did not close within {CLOSE_TIMEOUT:?}; left behind");
        }
        self.pool = Self::pool(&self.source);
        *self.opened_file.lock().unwrap_or_else(|e| e.into_inner()) = None;
        Some(what)
    }

    fn opened_file(&self) -> Option<FileIdentity> {
        *self.opened_file.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn pool(url: &DbUrl) -> Pool {
        match url {
            DbUrl::Sqlite { path } => {
                let options = SqliteConnectOptions::new()
                    .busy_timeout(Duration::from_secs(5))
                    .foreign_keys(true);
                let (options, pool) = match path {
                    Some(path) => (
                        options
                            .filename(path)
                            .create_if_missing(true)
                            .journal_mode(SqliteJournalMode::Wal)
                            .synchronous(SqliteSynchronous::Normal),
                        SqlitePoolOptions::new()
                            .max_connections(2)
                            .test_before_acquire(false),
                    ),
                    // Every connection to `:memory:` is its own database: keep exactly one, forever.
                    None => (
                        options.in_memory(true),
                        SqlitePoolOptions::new()
                            .max_connections(1)
                            .idle_timeout(None)
                            .max_lifetime(None),
                    ),
                };
                Pool::Sqlite(
                    pool.acquire_timeout(ACQUIRE_TIMEOUT)
                        .connect_lazy_with(options),
                )
            }
            DbUrl::MySql { options, .. } => Pool::MySql(
                // A ping before each use: the server (`wait_timeout`) or a proxy may have closed
                // a connection while it idled, and a pass that found out by failing would wait
                // out a retry's backoff (an event's write made late). A round trip is cheap
                // beside a pass's own.
                // Idle ones are closed by the pool before the server's 2 minute
                // `wait_timeout` (above) closes them, which it logs as aborted connections.
                MySqlPoolOptions::new()
                    .max_connections(2)
                    .test_before_acquire(true)
                    .idle_timeout(IDLE_TIMEOUT)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            sqlx::query(SESSION_SETTINGS)
                                .execute(conn)
                                .await
                                .map(|_| ())
                        })
                    })
                    .connect_lazy_with((**options).clone()),
            ),
        }
    }

    /// The URL, password redacted.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Creates the three tables where missing and checks their columns.
    pub async fn ensure_schema(&self) -> Result<(), DbError> {
        match &self.pool {
            Pool::Sqlite(pool) => {
                Sql::<Sqlite>::ensure_schema(&mut *self.acquire(pool).await?).await?;
                if let DbUrl::Sqlite { path: Some(path) } = &self.source
                    && self.opened_file().is_none()
                    && let Some(Ok(identity)) = FileIdentity::of(path, &self.looking_at_file).await
                {
                    *self.opened_file.lock().unwrap_or_else(|e| e.into_inner()) = Some(identity);
                }
                Ok(())
            }
            Pool::MySql(pool) => Sql::<MySql>::ensure_schema(&mut *self.acquire(pool).await?).await,
        }
    }

    /// Reads t_store, t_tray and t_port whole, in one transaction so they agree.
    pub async fn load_rows(&self) -> Result<DbRows, DbError> {
        match &self.pool {
            Pool::Sqlite(pool) => {
                let mut conn = self.acquire(pool).await?;
                let mut tx = conn.begin().await.map_err(|e| self.connect_error(e))?;
                let (rows, unreadable) = Sql::<Sqlite>::load(&mut tx).await?;
                tx.commit().await.map_err(DbError::Commit)?;
                self.report_unreadable(unreadable);
                Ok(rows)
            }
            Pool::MySql(pool) => {
                let mut conn = self.acquire(pool).await?;
                let mut tx = conn.begin().await.map_err(|e| self.connect_error(e))?;
                let (rows, unreadable) = Sql::<MySql>::load(&mut tx).await?;
                tx.commit().await.map_err(DbError::Commit)?;
                self.report_unreadable(unreadable);
                Ok(rows)
            }
        }
    }

    fn report_unreadable(&self, now: UnreadableCells) {
        let mut last = self.unreadable.lock().unwrap_or_else(|e| e.into_inner());
        if now.any() && now != *last {
            tracing::warn!(
                t_store = now.t_store,
                t_tray = now.t_tray,
                t_port = now.t_port,
                "cells of the wrong type or not UTF-8 in the metadata DB (another writer's): rows whose key cannot be read are left alone, other cells are rewritten where ZooKeeper has their value"
            );
        }
        *last = now;
    }

    /// Runs `plan` in one transaction: all of it or none of it. Returns whether every statement
    /// matched the rows the plan expected (false: the caller's picture of the DB was stale; the
    /// writes still made those rows right). [`DbError::KeyTaken`]: none of it was written.
    pub async fn apply(&self, plan: &Plan) -> Result<bool, DbError> {
        self.apply_once(plan).await.map_err(|error| match error {
            DbError::Apply { step, source }
                if source
                    .as_database_error()
                    .is_some_and(|e| e.is_unique_violation()) =>
            {
                DbError::KeyTaken { step, source }
            }
            error => error,
        })
    }

    async fn apply_once(&self, plan: &Plan) -> Result<bool, DbError> {
        if plan.is_empty() {
            return Ok(true);
        }
        // One row is one statement, atomic on its own: skip BEGIN and COMMIT round trips. Not
        // for a fenced writer: a statement queued behind another client's row lock (up to
        // MariaDB's lock wait timeout) would still commit after the term ended and this task
        // was dropped, while an uncommitted transaction dies with its connection. The fence
        // is asked once a connection is in hand: getting one may take seconds (a ping, a
        // reconnect after the server dropped an idle one).
        if plan.write_count() == 1 && self.fence.is_none() {
            return match &self.pool {
                Pool::Sqlite(pool) => {
                    let mut conn = self.acquire(pool).await?;
                    self.check_fence()?;
                    Sql::<Sqlite>::apply(&mut conn, plan).await
                }
                Pool::MySql(pool) => {
                    let mut conn = self.acquire(pool).await?;
                    self.check_fence()?;
                    Sql::<MySql>::apply(&mut conn, plan).await
                }
            };
        }
        match &self.pool {
            Pool::Sqlite(pool) => {
                let mut conn = self.acquire(pool).await?;
                self.check_fence()?;
                let mut tx = conn.begin().await.map_err(|e| self.connect_error(e))?;
                let matched = Sql::<Sqlite>::apply(&mut tx, plan).await?;
                // Dropping `tx` rolls it back.
                self.check_fence()?;
                tx.commit().await.map_err(DbError::Commit)?;
                Ok(matched)
            }
            Pool::MySql(pool) => {
                let mut conn = self.acquire(pool).await?;
                self.check_fence()?;
                let mut tx = conn.begin().await.map_err(|e| self.connect_error(e))?;
                let matched = Sql::<MySql>::apply(&mut tx, plan).await?;
                self.check_fence()?;
                tx.commit().await.map_err(DbError::Commit)?;
                Ok(matched)
            }
        }
    }

    /// Closes the pool, waiting for connections to finish.
    pub async fn close(&self) {
        match &self.pool {
            Pool::Sqlite(pool) => pool.close().await,
            Pool::MySql(pool) => pool.close().await,
        }
    }

    async fn acquire<DB: sqlx::Database>(
        &self,
        pool: &sqlx::Pool<DB>,
    ) -> Result<sqlx::pool::PoolConnection<DB>, DbError> {
        match pool.acquire().await {
            Ok(conn) => Ok(conn),
            // The pool only says it timed out; one direct attempt tells why (refused, auth…).
            Err(sqlx::Error::PoolTimedOut) => {
                let options = pool.connect_options();
                let direct = options.connect();
                let cause = match tokio::time::timeout(ACQUIRE_TIMEOUT, direct).await {
                    Ok(Err(cause)) => cause,
                    Ok(Ok(conn)) => {
                        let _ = conn.close().await;
                        sqlx::Error::PoolTimedOut
                    }
                    Err(_) => sqlx::Error::PoolTimedOut,
                };
                Err(self.connect_error(cause))
            }
            Err(other) => Err(self.connect_error(other)),
        }
    }

    fn connect_error(&self, source: sqlx::Error) -> DbError {
        DbError::Connect {
            db: self.url.clone(),
            source,
        }
    }
}
