//! `pureflash-operator sync`: the ZooKeeper mirror plus the DB sync, standalone.

use std::fmt::Write as _;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::cli::SyncArgs;
use crate::dbsync::{self, CLOSE_TIMEOUT, DbSyncConfig, DbSyncStatus};
use crate::metadb::{DbError, DbRows, DbUrl, MetaDb, Plan, plan};
use crate::zk::mirror::{self, MirrorConfig};
use crate::zk::{ClusterLayout, ClusterView, Mirror};

pub async fn run(args: SyncArgs) -> Result<(), crate::Error> {
    let layout = ClusterLayout::new(&args.zk.cluster)?;
    let db_url: DbUrl = args.db.db.parse()?;
    let config = MirrorConfig {
        connect: args.zk.connect.clone(),
        layout,
        session_timeout: args.zk.session_timeout,
        resync_interval: args.zk.resync_interval,
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    if args.once {
        return run_once(&config, &db_url, &shutdown).await;
    }

    info!(zk = %config.connect, cluster = config.layout.cluster(), db = %db_url, "starting sync");
    let mirror = Mirror::spawn(config.clone(), shutdown.clone());
    let (status, _) = watch::channel(DbSyncStatus::default());
    let db = MetaDb::open(&db_url);
    dbsync::run(
        db,
        mirror.snapshots(),
        DbSyncConfig::new(config.resync_interval),
        status,
        shutdown.clone(),
    )
    .await;
    shutdown.cancel();
    mirror.join().await.map_err(crate::Error::MirrorFailed)
}

/// Reads of the DB `--once` plans on before it gives up on a DB that keeps changing.
const ONCE_ATTEMPTS: usize = 3;

/// `--once`: load, write, summarize. Every failure is an error (and a non-zero exit). A signal
/// before the write transaction begins ends it (nothing written, the session closed, an
/// error); one during the write lets that transaction finish.
async fn run_once(
    config: &MirrorConfig,
    db_url: &DbUrl,
    shutdown: &CancellationToken,
) -> Result<(), crate::Error> {
    // Stopped, nothing is synced: not a success (a Job must not read as done).
    let Some(view) = mirror::load_once(config, shutdown).await? else {
        return Err(crate::Error::Interrupted);
    };
    if !view.stores_dir {
        return Err(crate::Error::NoStoresDirectory {
            zk: config.connect.clone(),
            path: config.layout.stores().to_owned(),
        });
    }
    let db = MetaDb::open(db_url);
    // The rows are read in one transaction and written in another: a write that did not find
    // the rows it planned on (another writer changed them between) is planned again on a
    // fresh read. Every attempt's writes commit, and all of them are reported, against the
    // first read (a later read finds an earlier attempt's writes there) — also when a later
    // attempt fails or times out (each step is bounded on its own), or a signal comes between
    // two attempts.
    let mut first_read: Option<DbRows> = None;
    let mut plans = Vec::new();
    // A write that timed out: it may have committed or not (the commit may be what was slow).
    let mut unsettled: Option<Plan> = None;
    // Whether a signal stopped it after something was written.
    let outcome: Result<bool, crate::Error> = async {
        within_pass(db.ensure_schema()).await?;
        for _ in 0..ONCE_ATTEMPTS {
            let rows = within_pass(db.load_rows()).await?;
            if shutdown.is_cancelled() {
                return match first_read {
                    None => Err(crate::Error::Interrupted),
                    Some(_) => Ok(true),
                };
            }
            let plan = plan(&view, &rows);
            let matched = match within_pass(db.apply(&plan)).await {
                Ok(matched) => matched,
                Err(error @ DbError::TimedOut(_)) => {
                    first_read.get_or_insert(rows);
                    unsettled = Some(plan);
                    return Err(error.into());
                }
                // Rolled back: nothing of this attempt was written.
                Err(error @ DbError::KeyTaken { .. }) => {
                    first_read.get_or_insert(rows);
                    warn!(%error, "the metadata DB changed while it was written; reading it again");
                    continue;
                }
                Err(error) => return Err(error.into()),
            };
            first_read.get_or_insert(rows);
            plans.push(plan);
            if matched {
                return Ok(false);
            }
            warn!("the metadata DB changed while it was written; reading it again");
        }
        Err(crate::Error::DbKeptChanging(ONCE_ATTEMPTS))
    }
    .await;
    // Bounded: the pool checks each connection as it comes back, with no timeout of its own.
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, db.close()).await;
    if let Some(rows) = &first_read {
        print!(
            "{}",
            summary(
                config,
                &db_url.to_string(),
                &view,
                rows,
                &plans,
                unsettled.as_ref()
            )
        );
    }
    match outcome? {
        true => Err(crate::Error::InterruptedAfterWriting),
        false => Ok(()),
    }
}

/// One step of `--once` (a read, or a write transaction), bounded like a pass of the sync.
async fn within_pass<T>(work: impl Future<Output = Result<T, DbError>>) -> Result<T, DbError> {
    tokio::time::timeout(dbsync::PASS_TIMEOUT, work)
        .await
        .unwrap_or(Err(DbError::TimedOut(dbsync::PASS_TIMEOUT)))
}

/// The `--once` report: what ZooKeeper holds, what was wrong in it, and what was written by
/// the `plans` applied one after the other, with what each resolved; and the write that timed
/// out after them, if one did, which may or may not have landed.
pub fn summary(
    config: &MirrorConfig,
    db: &str,
    view: &ClusterView,
    before: &DbRows,
    plans: &[Plan],
    unsettled: Option<&Plan>,
) -> String {
    let mut out = String::new();
    let stores = view.stores.len();
    let alive = view.alive_count();
    let trays: usize = view.stores.values().map(|s| s.trays.len()).sum();
    let online: usize = view.stores.values().map(|s| s.trays_online()).sum();
    let ports: usize = view
        .stores
        .values()
        .map(|s| s.ports.len() + s.rep_ports.len())
        .sum();
    let _ = writeln!(
        out,
        "ZooKeeper {} cluster {}:",
        config.connect,
        config.layout.cluster()
    );
    let _ = writeln!(
        out,
        "  stores: {stores} ({alive} OK, {} OFFLINE); trays: {trays} ({online} online); ports: {ports}",
        stores - alive
    );
    for (dir, error) in view.malformed_dirs.iter() {
        let _ = writeln!(out, "  skipped store directory {dir:?}: {error}");
    }
    for store in view.stores.values() {
        for problem in store.problems() {
            let _ = writeln!(
                out,
                "  store {}: {}: {}",
                store.id, problem.path, problem.error
            );
        }
    }
    // Every attempt's writes committed, and what one resolved (a row moved aside) a later
    // one may no longer need to: each attempt's notes are told, once.
    let mut told = std::collections::BTreeSet::new();
    for note in plans.iter().flat_map(|plan| &plan.notes) {
        let note = note.to_string();
        if told.insert(note.clone()) {
            let _ = writeln!(out, "  resolved: {note}");
        }
    }
    let (s, t, p) = before.counts();
    let _ = writeln!(
        out,
        "metadata DB {db} (before: {s} t_store, {t} t_tray, {p} t_port rows):"
    );
    let total = |count: fn(&Plan) -> usize| plans.iter().map(count).sum::<usize>();
    let _ = writeln!(
        out,
        "  t_store: {} inserted, {} updated; t_tray: {} inserted, {} updated; t_port: {} inserted, {} updated, {} deleted",
        total(|p| p.store_inserts.len()),
        total(Plan::store_rows_updated),
        total(|p| p.tray_inserts.len()),
        total(|p| p.tray_updates.len()),
        total(|p| p.port_inserts.len()),
        total(|p| p.port_updates.len()),
        total(|p| p.port_deletes.len()),
    );
    if let Some(plan) = unsettled {
        let _ = writeln!(
            out,
            "  then a write of {} rows timed out after {}: it may or may not have committed (run again: a run writes only what the DB lacks)",
            plan.write_count(),
            humantime::format_duration(dbsync::PASS_TIMEOUT)
        );
    }
    out
}

/// Cancels `shutdown` on SIGTERM or SIGINT; a second one ends the process at once.
///
/// The handlers are installed when this is called, not when the returned task first runs: a
/// signal in between would otherwise end the process unannounced (a `--once` Job stopped so
/// would not say that nothing was written).
pub(crate) fn cancel_on_signal(shutdown: CancellationToken) -> impl Future<Output = ()> {
    cancel_on_signals(shutdown, None)
}

/// As [`cancel_on_signal`], but a second signal cancels `hurry` (when given) instead of ending
/// the process, and only a third one ends it: the operator then cuts its stop short yet still
/// releases its Lease, so that a standby takes over at once rather than a lease duration later.
pub(crate) fn cancel_on_signals(
    shutdown: CancellationToken,
    hurry: Option<CancellationToken>,
) -> impl Future<Output = ()> {
    use tokio::signal::unix::{Signal, SignalKind, signal};
    let install = |kind: SignalKind, name: &str| {
        signal(kind)
            .inspect_err(|error| tracing::warn!(%error, "cannot listen for {name}"))
            .ok()
    };
    let mut terminate = install(SignalKind::terminate(), "SIGTERM");
    let mut interrupt = install(SignalKind::interrupt(), "SIGINT");
    async fn received(signal: &mut Option<Signal>) {
        match signal {
            Some(signal) => {
                signal.recv().await;
            }
            None => std::future::pending().await,
        }
    }
    async move {
        tokio::select! {
            _ = received(&mut terminate) => info!("SIGTERM received; stopping once the work under way is done"),
            _ = received(&mut interrupt) => info!("SIGINT received; stopping once the work under way is done"),
        }
        shutdown.cancel();
        // The handlers stay installed: without this a second signal would do nothing while a
        // transaction waits out its timeout. Asked twice, the process stops at once (a
        // database rolls back what a closed connection left unfinished).
        tokio::select! {
            _ = received(&mut terminate) => {}
            _ = received(&mut interrupt) => {}
        }
        if let Some(hurry) = hurry {
            tracing::warn!(
                "second signal received; stopping without waiting for work under way (a third exits at once)"
            );
            hurry.cancel();
            tokio::select! {
                _ = received(&mut terminate) => {}
                _ = received(&mut interrupt) => {}
            }
        }
        tracing::warn!("signal received again; exiting without waiting");
        std::process::exit(130);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::fixtures::view;
    use crate::zk::StoreView;

    #[test]
    fn a_row_that_steps_aside_and_goes_offline_counts_once() {
        let config = MirrorConfig {
            connect: "zk:2181".into(),
            layout: ClusterLayout::new("cluster1").unwrap(),
            session_timeout: Duration::from_secs(3),
            resync_interval: Duration::from_secs(60),
        };
        // Store 1 held the address; store 2 has it now and store 1 is gone.
        let before = DbRows::synced_from(&view([StoreView::test(1).at("10.5.5.5")]));
        let now = view([StoreView::test(2).at("10.5.5.5")]);
        let plan = plan(&now, &before);
        assert_eq!(plan.store_vacates, vec![1]);
        assert_eq!(plan.store_updates.len(), 1);
        let text = summary(
            &config,
            "sqlite://x.db",
            &now,
            &before,
            std::slice::from_ref(&plan),
            None,
        );
        assert!(text.contains("t_store: 1 inserted, 1 updated;"), "{text}");
        assert!(!text.contains("timed out"), "{text}");
        assert!(
            text.contains("resolved: mngt_ip 10.5.5.5 now belongs to store 2"),
            "{text}"
        );
        // A second attempt (the first one's rows did not all match) adds its writes; what
        // the first one resolved is told, once, though the second had nothing left to resolve.
        let again = Plan {
            notes: Vec::new(),
            ..plan.clone()
        };
        let text = summary(
            &config,
            "sqlite://x.db",
            &now,
            &before,
            &[plan.clone(), again, plan.clone()],
            None,
        );
        assert!(text.contains("t_store: 3 inserted, 3 updated;"), "{text}");
        assert_eq!(text.matches("resolved:").count(), 1, "{text}");
        // A write that timed out is neither counted nor left out: it is told as unsettled.
        let text = summary(&config, "sqlite://x.db", &now, &before, &[], Some(&plan));
        assert!(text.contains("t_store: 0 inserted, 0 updated;"), "{text}");
        assert!(
            text.contains(&format!(
                "then a write of {} rows timed out after 30s: it may or may not have committed",
                plan.write_count()
            )),
            "{text}"
        );
    }
}
