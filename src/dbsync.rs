//! The loop that keeps the metadata DB equal to the ZooKeeper view.
//!
//! - Event-driven: every new snapshot is planned against a cache of the DB's rows and the plan
//!   is applied in one transaction, so a store's `alive` disappearing reaches t_store within
//!   one ZooKeeper event plus one commit. Liveness changes are planned in time proportional to
//!   the change ([`plan_fast`]), not to the cluster, unless liveness decides who owns a key
//!   several stores register.
//! - Periodic: every `resync_interval` the three tables are re-read and re-planned, which
//!   repairs any drift (a wiped table, another writer's wrong rows) without touching `pfs`.
//! - Quiet: an empty plan writes nothing; the cache means no reads either between periods.
//! - Careful: nothing is written while the view is not trusted (ZooKeeper disconnected, or not
//!   reloaded since reconnecting).
//! - Patient with other writers: a pass whose statements miss the rows they expected re-reads
//!   the tables soon, and with backoff when that keeps happening. Events in between are planned
//!   against the cache: they neither re-read the tables nor wait for the re-read.
//! - Stubborn: any DB error drops the cache and retries with backoff; the view is kept, and the
//!   first pass after the DB returns writes whatever changed meanwhile. A pass that gets no
//!   answer within `pass_timeout` (a table locked by another client, a DB host that vanished
//!   without resetting the connection) is such an error too, and its connections are replaced.
//!   So are a SQLite file's when the file at its path is another one (deleted, or a backup
//!   restored over it), noticed at the next re-read, which writes it whole again.
//!
//! On shutdown it finishes the transaction in progress (within `pass_timeout`) and returns,
//! unless its caller aborts it first: the operator gives a leadership term's tasks 15 s on
//! SIGTERM and none once the Lease is lost. A transaction is all or nothing: one aborted before
//! its COMMIT went out is rolled back, but one whose COMMIT was on its way may still land, after
//! the next leader's first writes even. What it wrote then was ZooKeeper's truth of a moment
//! ago; the next leader re-reads the tables once `pass_timeout` after it starts, by when such a
//! COMMIT has landed or been abandoned, and repairs it. (One from a writer frozen meanwhile, a
//! stopped process or a paused VM, may land later still: the periodic re-read repairs that.)

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::backoff::Backoff;
use crate::metadb::{DbError, DbRows, MetaDb, Note, plan, plan_fast};
use crate::zk::Snapshot;

/// Settings of the sync loop.
#[derive(Clone, Debug)]
pub struct DbSyncConfig {
    /// Period of the full re-read of the tables (drift repair).
    pub resync_interval: Duration,
    /// First retry delay after a DB error; doubles up to `retry_max`.
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// The longest one pass (read, plan, write) may take before it is abandoned as failed.
    pub pass_timeout: Duration,
}

/// The default [`DbSyncConfig::pass_timeout`]: a full pass over 3000 stores takes under a
/// second, so this is only ever reached by a DB that does not answer.
pub const PASS_TIMEOUT: Duration = Duration::from_secs(30);

pub use crate::metadb::CLOSE_TIMEOUT;

impl DbSyncConfig {
    pub fn new(resync_interval: Duration) -> Self {
        DbSyncConfig {
            resync_interval,
            retry_initial: Duration::from_millis(200),
            retry_max: Duration::from_secs(10),
            pass_timeout: PASS_TIMEOUT,
        }
    }
}

/// What the loop has done so far; published after every pass.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DbSyncStatus {
    /// Snapshot version the DB last matched.
    pub synced_version: Option<u64>,
    pub last_success: Option<SystemTime>,
    /// The last error, cleared by the next success.
    pub last_error: Option<String>,
    /// Passes failed since the last success (one called off because the term ended does not
    /// count: the DB did not fail it).
    pub failed_in_a_row: u32,
    /// Passes that wrote something, and rows written in all.
    pub write_passes: u64,
    pub rows_written: u64,
    pub errors: u64,
    /// Stores whose rows the last full plan could not make follow ZooKeeper (a key another
    /// store won, a value that does not fit its column, rows kept for an unreadable store), by
    /// t_store id, with why (the first such note). Passes may succeed all the same.
    pub held: Arc<BTreeMap<i64, String>>,
    /// Why the tables as a whole do not follow ZooKeeper although passes succeed: nothing
    /// could be written, or another writer keeps undoing the writes.
    pub behind: Option<String>,
}

impl DbSyncStatus {
    /// Why store `id`'s rows do not follow ZooKeeper, if they do not and passes succeed.
    pub fn held_back(&self, id: i64) -> Option<&str> {
        self.behind
            .as_deref()
            .or_else(|| self.held.get(&id).map(String::as_str))
    }
}

/// The stores `notes` leave out of step with ZooKeeper (see [`DbSyncStatus::held`]), and why
/// nothing at all was written, if so.
fn held_by(notes: &[Note]) -> (BTreeMap<i64, String>, Option<String>) {
    let mut held = BTreeMap::new();
    let mut behind = None;
    for note in notes {
        let store = match note {
            Note::MngtIpClaimedTwice { ignored, .. }
            | Note::TrayClaimedTwice { ignored, .. }
            | Note::PortClaimedTwice { ignored, .. } => *ignored,
            Note::TooLong { store, .. }
            | Note::NotAscii { store, .. }
            | Note::RowsKept { store }
            | Note::KeyHeldByUnreadable { store, .. } => *store,
            Note::HeldByUnreadable { .. } => {
                behind.get_or_insert_with(|| note.to_string());
                continue;
            }
            // Resolved: the rows follow ZooKeeper.
            Note::MngtIpTaken { .. } | Note::TrayListedTwice { .. } => continue,
        };
        held.entry(store).or_insert_with(|| note.to_string());
    }
    (held, behind)
}

/// The outcome of one pass.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PassReport {
    pub writes: usize,
    /// Conflicts resolved and values skipped, when the pass planned in full (the event-driven
    /// fast path does not recompute them; it runs only where they cannot have changed).
    pub notes: Option<Vec<Note>>,
    /// Some statement did not find the rows it expected (another writer changed them since
    /// they were read, or undoes our writes): the cache holds what the plan meant the tables to
    /// hold, and they should be re-read soon ([`run`] backs off when this repeats).
    pub stale: bool,
}

/// What the sync believes the DB holds.
pub struct DbCache {
    /// The three tables as last read or written.
    pub rows: DbRows,
    /// The snapshot `rows` are in sync with, if any: then the next plan can be incremental.
    in_sync_with: Option<Arc<Snapshot>>,
}

/// Brings the DB in line with `snapshot` once: reads the tables when there is no cache (or
/// `reload`), plans (incrementally when the cache is in sync with an earlier snapshot), applies
/// in one transaction, and keeps the cache equal to what the DB now holds — or, after a stale
/// pass, to what it would hold had no other writer interfered. On an error the cache is gone.
pub async fn sync_pass(
    db: &MetaDb,
    snapshot: &Arc<Snapshot>,
    cache: &mut Option<DbCache>,
    reload: bool,
) -> Result<PassReport, DbError> {
    let (mut current, read_now) = match cache.take() {
        Some(current) if !reload => (current, false),
        _ => {
            let rows = db.load_rows().await?;
            let current = DbCache {
                rows,
                in_sync_with: None,
            };
            (current, true)
        }
    };
    let planning = std::time::Instant::now();
    let fast = current
        .in_sync_with
        .as_ref()
        .and_then(|prev| plan_fast(&prev.view, &snapshot.view, &current.rows));
    // A full plan is also what an event needs when it changes keys or ownership, and its notes
    // are then logged at once (a redeployed store taking over an address, say), not only at
    // the next periodic re-read.
    let (plan, full) = match fast {
        Some(fast) => (fast, false),
        None => (plan(&snapshot.view, &current.rows), true),
    };
    let planned_in = planning.elapsed();
    let mut report = PassReport {
        writes: plan.write_count(),
        notes: full.then(|| plan.notes.clone()),
        stale: false,
    };
    if !plan.is_empty() {
        // The cache is dropped (left `None`) unless the transaction commits and matches it.
        let applying = std::time::Instant::now();
        let matched = match db.apply(&plan).await {
            Ok(matched) => matched,
            // Planned on the cache, the pass lacked a row another writer wrote since the last
            // read (the Java conductor running alongside, say): a race, not a failure of the
            // DB. Nothing was written, and the cache is dropped, so the next pass (due at once:
            // a stale one) reads the tables and plans on them. Planned on rows just read, the
            // refusal is the DB's answer to the plan, and fails the pass like any other.
            Err(error @ DbError::KeyTaken { .. }) if !read_now => {
                debug!(%error, "another writer wrote a row first; re-reading the DB");
                report.writes = 0;
                report.stale = true;
                return Ok(report);
            }
            Err(error) => return Err(error),
        };
        debug!(
            writes = plan.write_count(),
            full,
            plan_us = planned_in.as_micros() as u64,
            apply_us = applying.elapsed().as_micros() as u64,
            "plan applied"
        );
        if let Err(error) = current.rows.apply(&plan) {
            warn!(%error, "plan does not fit the cached rows; re-reading the DB");
            report.stale = true;
            return Ok(report);
        }
        // A statement that missed its rows leaves the cache as the plan meant the tables to be,
        // not dropped: the next event is planned against it without reading anything, so while
        // another writer keeps interfering, reads happen only as often as `run` schedules the
        // re-read, and a real change (a store's `alive`) is still written at once.
        report.stale = !matched;
    }
    current.in_sync_with = Some(Arc::clone(snapshot));
    *cache = Some(current);
    Ok(report)
}

/// Runs the sync until `shutdown`; publishes progress on `status`.
pub async fn run(
    mut db: MetaDb,
    mut snapshots: watch::Receiver<Arc<Snapshot>>,
    config: DbSyncConfig,
    status: watch::Sender<DbSyncStatus>,
    shutdown: CancellationToken,
) {
    let mut cache: Option<DbCache> = None;
    let mut schema_ready = false;
    let mut reload_at = Instant::now();
    let mut retry_at: Option<Instant> = None;
    let mut backoff = Backoff::new(config.retry_initial, config.retry_max);
    let mut known_notes: BTreeSet<String> = BTreeSet::new();
    // What the last full plan's notes hold back (see `DbSyncStatus::held`).
    let mut held: BTreeMap<i64, String> = BTreeMap::new();
    let mut held_behind: Option<String> = None;
    let mut waiting_logged = false;
    // Re-reads in a row whose writes did not match the rows just read: once is a race with
    // another writer, again means a writer that keeps undoing ours or rows the plan cannot
    // address, and re-reading at once would spin. Only the re-read at `reload_at` reads the
    // tables (a pass without a cache waits for it), so this backoff bounds the reads whatever
    // the rate of ZooKeeper events; passes in between plan against the cache.
    let mut stale_passes = Backoff::new(config.retry_initial, config.resync_interval);
    let mut stale_in_a_row = 0u32;
    // A transaction of the previous writer (the last leader, or a sync killed before this one)
    // whose COMMIT was on its way may land after this one's first pass read the tables: by
    // the time its own pass timed out and dropped its connection, unless it was frozen. The
    // tables are read again then, rather than a resync interval later.
    let mut late_commits_read_at = Some(Instant::now() + config.pass_timeout);
    loop {
        let snapshot = snapshots.borrow_and_update().clone();
        let now = Instant::now();
        if let Some(at) = late_commits_read_at.filter(|at| *at <= now) {
            reload_at = reload_at.min(at);
            late_commits_read_at = None;
        }
        // Looked at with each re-read, not each event: a file replaced in between is written
        // whole again then, from the view.
        if now >= reload_at
            && let Some(what) = db.reopen_if_file_replaced().await
        {
            warn!(
                db = db.url(),
                "{what} while the sync had it open; writing the tables into the file now at its path"
            );
            cache = None;
            schema_ready = false;
            reload_at = now;
        }
        let retry_pending = retry_at.is_some_and(|at| at > now);
        let writable = writable(&snapshot);
        if let Err(reason) = writable {
            if !waiting_logged {
                info!(
                    session = snapshot.health.session.as_str(),
                    "not writing the DB: {reason}"
                );
                waiting_logged = true;
            }
        } else if !retry_pending && (cache.is_some() || now >= reload_at) {
            // (Without a cache a pass has to read the tables, so it waits for the re-read.)
            waiting_logged = false;
            let reload = now >= reload_at;
            let pass = async {
                if !schema_ready {
                    db.ensure_schema().await?;
                    schema_ready = true;
                }
                sync_pass(&db, &snapshot, &mut cache, reload).await
            };
            let result = match tokio::time::timeout(config.pass_timeout, pass).await {
                Ok(result) => result,
                Err(_) => {
                    // Dropped mid-statement: whatever it was waiting for, the transaction is
                    // rolled back, and its connection must not be the next pass's.
                    db.replace_connections();
                    Err(DbError::TimedOut(config.pass_timeout))
                }
            };
            match result {
                Ok(report) => {
                    if status.borrow().last_error.is_some() {
                        info!(db = db.url(), "metadata DB reachable again; in sync");
                    }
                    backoff.reset();
                    retry_at = None;
                    if reload {
                        reload_at = now + config.resync_interval;
                    }
                    // Only a pass that read the tables counts, either way: one planned against the
                    // cache proves nothing about them, and while a re-read is scheduled its
                    // mismatch is for that re-read to look at. Except a pass that left no cache
                    // (its plan did not fit the rows it planned on): the next event cannot be
                    // planned without reading the tables, so the re-read comes soon, with the
                    // stale backoff when this repeats.
                    let dropped_cache = cache.is_none();
                    if report.stale && (reload || stale_in_a_row == 0 || dropped_cache) {
                        stale_in_a_row += 1;
                        reload_at = Instant::now();
                        if stale_in_a_row == 1 {
                            debug!("DB rows differed from the cache; re-reading");
                        } else {
                            let delay = stale_passes.next_delay();
                            if stale_in_a_row == 2 {
                                warn!(retry_in = ?delay, "DB rows keep differing from what was just read and written (another writer, or rows no statement can address); re-reading with backoff");
                            }
                            reload_at += delay;
                        }
                    } else if !report.stale && reload {
                        stale_in_a_row = 0;
                        stale_passes.reset();
                    }
                    if let Some(notes) = &report.notes {
                        log_new_notes(notes, &mut known_notes);
                    }
                    if report.writes > 0 {
                        debug!(
                            writes = report.writes,
                            version = snapshot.version,
                            "metadata DB updated"
                        );
                    }
                    // Notes come with full plans only; a fast one changes none of them.
                    if let Some(notes) = &report.notes {
                        (held, held_behind) = held_by(notes);
                    }
                    let behind = held_behind.clone().or_else(|| {
                        (stale_in_a_row >= 2).then(|| {
                            "the tables keep differing from what was just read and written (another writer undoing the writes?)".to_owned()
                        })
                    });
                    status.send_modify(|s| {
                        // A stale pass wrote, but did not confirm the DB matches the view; nor
                        // does any pass until a re-read finds the tables as expected.
                        if stale_in_a_row == 0 {
                            s.synced_version = Some(snapshot.version);
                        }
                        if *s.held != held {
                            s.held = Arc::new(held.clone());
                        }
                        s.behind = behind;
                        s.last_success = Some(SystemTime::now());
                        s.last_error = None;
                        s.failed_in_a_row = 0;
                        if report.writes > 0 {
                            s.write_passes += 1;
                            s.rows_written += report.writes as u64;
                        }
                    });
                }
                // The term is ending (its stop follows): the pass was called off before it
                // committed anything. Said in the status, but no failure of the DB: not
                // logged as one, nor counted in the errors.
                Err(error @ DbError::Fenced(_)) => {
                    cache = None;
                    debug!(%error, "metadata DB pass called off: this replica may no longer write");
                    retry_at = Some(Instant::now() + backoff.next_delay());
                    reload_at = Instant::now();
                    status.send_modify(|s| s.last_error = Some(error.to_string()));
                }
                Err(error) => {
                    cache = None;
                    schema_ready = false;
                    let delay = backoff.next_delay();
                    warn!(%error, retry_in = ?delay, "metadata DB sync failed");
                    retry_at = Some(Instant::now() + delay);
                    // Without a cache the retry has to read the tables: it is the re-read.
                    reload_at = Instant::now();
                    status.send_modify(|s| {
                        s.last_error = Some(error.to_string());
                        s.errors += 1;
                        s.failed_in_a_row = s.failed_in_a_row.saturating_add(1);
                    });
                }
            }
        }

        // Untrusted: only a new snapshot can change anything. Otherwise also wake for the
        // re-read (periodic, or after a stale pass), or after an error for the retry, which
        // (having no cache) also waits for the re-read to be due.
        let wake_at = writable.is_ok().then(|| {
            let due = retry_at.map_or(reload_at, |at| at.max(reload_at));
            late_commits_read_at.map_or(due, |at| at.min(due))
        });
        let timer = async {
            match wake_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        // Shutdown first: a snapshot published meanwhile must not start another pass.
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            changed = snapshots.changed() => {
                if changed.is_err() {
                    break; // the mirror is gone
                }
            }
            _ = timer => {}
        }
    }
    if tokio::time::timeout(CLOSE_TIMEOUT, db.close())
        .await
        .is_err()
    {
        warn!("the metadata DB's connections did not close within {CLOSE_TIMEOUT:?}; left behind");
    }
    info!("metadata DB sync stopped");
}

/// Whether the DB may be written from `snapshot`, or why not.
fn writable(snapshot: &Snapshot) -> Result<(), &'static str> {
    if !snapshot.health.is_trusted() {
        Err("waiting for a trusted ZooKeeper view (connected, fully reloaded, every node readable)")
    } else if !snapshot.view.stores_dir {
        // An empty view would mark every store OFFLINE and delete every port: with a wrong
        // cluster name that is a disaster, and with no stores directory nothing is known.
        Err("ZooKeeper has no stores directory for this cluster")
    } else {
        Ok(())
    }
}

/// Logs each resolved conflict or skipped value once, when it first appears.
fn log_new_notes(notes: &[Note], known: &mut BTreeSet<String>) {
    let current: BTreeSet<String> = notes.iter().map(Note::to_string).collect();
    for note in current.difference(known) {
        warn!(note = %note, "metadata DB sync");
    }
    *known = current;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadb::Precedence;

    #[test]
    fn the_stores_a_plan_leaves_out_of_step_are_told_with_why() {
        let notes = [
            Note::MngtIpTaken {
                ip: "10.0.0.1".into(),
                by: 1,
                displaced: 2,
            },
            Note::TrayClaimedTwice {
                uuid: "u".into(),
                kept: 3,
                ignored: 4,
                why: Precedence::Alive,
            },
            Note::TooLong {
                store: 4,
                column: "t_tray.device",
                value: "x".into(),
            },
            Note::KeyHeldByUnreadable {
                store: 5,
                key: "t_port 10.0.0.5".into(),
            },
            Note::TrayListedTwice {
                store: 6,
                uuid: "v".into(),
            },
        ];
        let (held, behind) = held_by(&notes);
        assert_eq!(held.keys().copied().collect::<Vec<_>>(), vec![4, 5]);
        // The first note of a store says why.
        assert_eq!(held[&4], notes[1].to_string());
        assert_eq!(behind, None);

        let nothing_written = Note::HeldByUnreadable {
            conflict: "t_store mngt_ip 10.0.0.9".into(),
        };
        let (held, behind) = held_by(std::slice::from_ref(&nothing_written));
        assert!(held.is_empty());
        assert_eq!(behind, Some(nothing_written.to_string()));
        let status = DbSyncStatus {
            behind,
            ..DbSyncStatus::default()
        };
        assert_eq!(
            status.held_back(1),
            Some(nothing_written.to_string().as_str())
        );
    }
}
