//! `pureflash-operator run`: the operator. Every replica keeps a warm ZooKeeper view and serves
//! health and metrics; the replica holding the Lease also runs the controller and the metadata
//! DB sync, and stops both the moment it stops leading.
//!
//! On shutdown the order matters: the leader first stops its term (the controller and the DB
//! sync, within [`TERM_STOP_GRACE`]), still renewing the Lease meanwhile, and only then releases
//! it — so a standby never takes over while the old leader is still writing.

use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::cli::RunArgs;
use crate::clock::ClusterClock;
use crate::controller::{self, Settings, Term};
use crate::crd::PureFlashStore;
use crate::dbsync::{self, DbSyncConfig, DbSyncStatus};
use crate::leader::{self, LeaseConfig};
use crate::metadb::{DbUrl, MetaDb};
use crate::metrics::Metrics;
use crate::zk::mirror::MirrorConfig;
use crate::zk::{ClusterLayout, Mirror};

/// How long a term's tasks get to finish what they are doing once their term is over; then they
/// are aborted. Within the chart's 45 s termination grace period, with room for a Lease request
/// under way to land and the Lease to be released afterwards (at most 5 s each) and the
/// ZooKeeper session to close.
const TERM_STOP_GRACE: Duration = Duration::from_secs(15);

/// How long the startup check of the CRD waits for the API server.
const CRD_CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a stop waits for the admin server's open connections (a client that sent half a
/// request, or stopped reading a response, would hold it until the Pod is killed).
const ADMIN_STOP_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn run(args: RunArgs) -> Result<(), crate::Error> {
    // First: a signal during the start (the CRD check may wait for the API server for long)
    // stops the process cleanly, not by the signal's default action.
    let shutdown = CancellationToken::new();
    // A second signal cuts the stop short: the term's work under way is abandoned, and the
    // Lease still released.
    let hurry = CancellationToken::new();
    tokio::spawn(crate::sync_command::cancel_on_signals(
        shutdown.clone(),
        Some(hurry.clone()),
    ));
    let layout = ClusterLayout::new(&args.zk.cluster)?;
    let pfs_zookeeper = match &args.pfs_zk {
        Some(given) => given.clone(),
        None => crate::cli::pfs_connect_string_of(&args.zk.connect).map_err(|error| {
            crate::Error::Usage(format!(
                "--zk {} cannot be given to pfs: {error}; set --pfs-zk to the connect string pfs Pods use",
                args.zk.connect
            ))
        })?,
    };
    let db_url: Option<DbUrl> = args.db.as_deref().map(str::parse).transpose()?;
    let kube_config = kube_config(&args).await?;
    let client = kube_client(kube_config.clone())?;
    let eviction_client = eviction_client(kube_config.clone())?;
    let namespace = Some(args.kube.namespace.clone()).filter(|ns| !ns.is_empty());
    let admin_listener = crate::admin::bind(args.admin_address).await?;
    tokio::select! {
        checked = check_crd(&client, &namespace) => checked?,
        _ = shutdown.cancelled() => {
            info!("stopped before the operator started");
            return Ok(());
        }
    }
    let identity = args
        .lease
        .identity
        .clone()
        .filter(|identity| !identity.trim().is_empty())
        .or_else(|| std::env::var("POD_NAME").ok())
        .filter(|identity| !identity.trim().is_empty())
        .unwrap_or_else(default_identity);
    let lease_namespace = args
        .lease
        .lease_namespace
        .clone()
        .or_else(|| std::env::var("POD_NAMESPACE").ok())
        .unwrap_or_else(|| "default".into());

    // Before anything is spawned: a startup error returns with nothing left running.
    let lease = LeaseConfig::new(
        &args.lease.lease_name,
        &lease_namespace,
        &identity,
        args.lease.lease_duration,
    );
    // Bounded so that a stop fits a Pod's termination grace whatever the lease duration.
    let aborted_settle = lease.renew_every.min(Duration::from_secs(5));
    let lease_client = leader::lease_client(kube_config, &lease).map_err(|e| {
        crate::Error::Kube(format!(
            "cannot build a Kubernetes client for the Lease: {e}"
        ))
    })?;

    let metrics = Arc::new(Metrics::new());
    // Kept across leadership terms (see `controller::Term::stopped_pods`).
    let stopped_pods = Arc::new(controller::StoppedPodReplacements::default());
    let mirror_config = MirrorConfig {
        connect: args.zk.connect.clone(),
        layout,
        session_timeout: args.zk.session_timeout,
        resync_interval: args.zk.resync_interval,
    };
    info!(zk = %mirror_config.connect, cluster = mirror_config.layout.cluster(), %identity, "starting the operator");
    // Not `shutdown`: the term's last reconciles, finishing within its stop grace, must still
    // see a trusted view, or they would write every store Unknown on their way out.
    let mirror_stop = CancellationToken::new();
    let mirror = Mirror::spawn(mirror_config.clone(), mirror_stop.clone());
    // The mirror ends by itself only if it failed: then this replica stops (its view is
    // marked untrusted already, so nothing was decided on it meanwhile).
    let mirror_gone = CancellationToken::new();
    tokio::spawn({
        let (ended, gone) = (mirror.ended(), mirror_gone.clone());
        async move {
            ended.await;
            gone.cancel();
        }
    });
    const MIRROR_GONE: &str = "the ZooKeeper mirror stopped unexpectedly";

    let (leading_tx, mut leading) = watch::channel(false);
    let (lease_answered_tx, lease_answered) = watch::channel(false);
    let (cache_synced_tx, cache_synced) = watch::channel(false);
    let (ready_tx, ready_rx) = watch::channel(readiness(Readiness::default()));
    tokio::spawn(track_readiness(
        mirror.snapshots(),
        lease_answered,
        leading.clone(),
        cache_synced,
        shutdown.clone(),
        ready_tx,
        Arc::clone(&metrics),
    ));
    // Serving until the Lease is released, not only until the signal: probes and the last
    // metrics still answer while the term stops (a liveness probe refused meanwhile could have
    // the kubelet kill the operator before it has released the Lease).
    let admin_stop = CancellationToken::new();
    let _admin_stops_on_return = admin_stop.clone().drop_guard();
    let admin = tokio::spawn(crate::admin::serve(
        admin_listener,
        Arc::clone(&metrics),
        ready_rx,
        admin_stop.clone(),
    ));

    // Every replica keeps in step with the API server's clock, so that it is known before the
    // replica first leads (see `crate::clock`).
    let clock = ClusterClock::default();
    tokio::spawn(crate::clock::follow(
        client.clone(),
        clock.clone(),
        Arc::clone(&metrics),
        shutdown.clone(),
    ));

    // A replica campaigns on a warm view. A restarted leader finds the Lease still its own and
    // would lead at once, writing every store `Unknown` until its first load is done; a lone
    // replica would do the same on every start. Bounded: with ZooKeeper down someone must
    // still lead, and say `Unknown`; a lease period is what a standby's takeover takes anyway.
    await_first_load(
        mirror.snapshots(),
        args.lease.lease_duration,
        &shutdown,
        &mirror_gone,
    )
    .await;

    // Not `shutdown`: the Lease is released only once the term has stopped (below).
    let election_stop = CancellationToken::new();
    if shutdown.is_cancelled() {
        // Stopped while loading: not a candidate at all.
        election_stop.cancel();
    }
    let term_deadline = leader::TermDeadline::default();
    let (sees_zookeeper_tx, sees_zookeeper) = watch::channel(false);
    let mut sees_steadily = sees_zookeeper.clone();
    tokio::spawn(track_trust(
        mirror.snapshots(),
        sees_zookeeper_tx,
        args.lease.untrusted_handover / 2,
        tokio::time::Instant::now() + args.lease.lease_duration,
    ));
    let (resign_tx, resign) = watch::channel(0u64);
    let (resigned_tx, mut resigned) = watch::channel(0u64);
    let election = tokio::spawn(leader::run(
        lease_client,
        lease,
        leading_tx,
        lease_answered_tx,
        term_deadline.clone(),
        leader::Candidacy {
            sees_zookeeper,
            resign,
            resigned: resigned_tx,
        },
        election_stop.clone(),
    ));

    let settings = Settings {
        cluster: args.zk.cluster.clone(),
        pfs_zookeeper,
        start_grace: args.recovery.start_grace,
        freeze_share: args.recovery.freeze_share,
        freeze_min_offline: args.recovery.freeze_min_offline,
        max_in_flight: args.recovery.max_restarts_in_flight,
        max_unavailable: args.recovery.max_unavailable,
        in_flight_window: args.recovery.restart_window,
        stable_period: args.recovery.stable_period,
        requeue: args.requeue_interval,
        concurrency: args.reconcile_concurrency,
        disruption_budget: args.recovery.disruption_budget,
        max_unavailable_nodes: args.recovery.max_unavailable_nodes,
    };
    // Why this replica stops on its own, if it does.
    let mut fatal: Option<String> = None;
    // How long a term goes on without a trusted view before it hands the Lease over. Doubled
    // (up to 16 times) for a term begun while still blind after handing over, which happens
    // when no replica sees ZooKeeper: leadership then changes hands less and less often.
    let handover_base = args.lease.untrusted_handover;
    let mut handover_after = handover_base;
    let mut handed_over_blind = false;
    let mut trust_tracked = true;
    'terms: loop {
        while !*leading.borrow_and_update() {
            metrics.leader.set(0);
            tokio::select! {
                _ = shutdown.cancelled() => break 'terms,
                // Seeing ZooKeeper steadily since handing over: the next blind spell is
                // counted afresh.
                changed = sees_steadily.changed(), if trust_tracked => match changed {
                    Ok(()) => handed_over_blind &= !*sees_steadily.borrow_and_update(),
                    Err(_) => trust_tracked = false,
                },
                _ = mirror_gone.cancelled() => {
                    if !shutdown.is_cancelled() {
                        fatal = Some(MIRROR_GONE.to_owned());
                    }
                    break 'terms;
                }
                changed = leading.changed() => if changed.is_err() {
                    if !shutdown.is_cancelled() {
                        fatal = Some("the leader election stopped".to_owned());
                    }
                    break 'terms;
                },
            }
        }
        metrics.leader.set(1);
        await_cluster_time(&clock, &shutdown, &leading).await;
        if shutdown.is_cancelled() {
            break 'terms;
        }
        if !*leading.borrow() {
            // Lost while waiting: nothing was started.
            continue 'terms;
        }
        // What the term's tasks check before they write: this term, not whichever holds.
        let this_term = term_deadline.pinned();
        let term_stop = shutdown.child_token();
        // The controller's writes end with the term's stop when the Lease is lost, else at
        // the end of the stop grace (see `stop_term`).
        let writes_end = CancellationToken::new();
        let dropped_writes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        // Cancelled when one of the term's tasks ends (returns or panics) before the term is
        // stopped: leading on with it gone would hold the Lease while nothing acts.
        let term_ended = CancellationToken::new();
        let spawn = |task| tokio::spawn(watched(task, term_stop.clone(), term_ended.clone()));
        let mut tasks = Vec::new();
        let db_status = db_url.as_ref().map(|url| {
            let (status_tx, status_rx) = watch::channel(DbSyncStatus::default());
            let deadline = this_term.clone();
            let db = MetaDb::open(url).fenced_by(Arc::new(move || {
                if deadline.holds() {
                    Ok(())
                } else {
                    Err("this replica's leadership term is over, or not confirmed since it stalled")
                }
            }));
            let config = DbSyncConfig::new(args.zk.resync_interval);
            tasks.push(spawn(Box::pin(dbsync::run(
                db,
                mirror.snapshots(),
                config,
                status_tx,
                term_stop.clone(),
            ))));
            tasks.push(spawn(Box::pin(count_db_progress(
                status_rx.clone(),
                Arc::clone(&metrics),
                term_stop.clone(),
            ))));
            status_rx
        });
        let term = Term {
            client: client.clone(),
            eviction_client: eviction_client.clone(),
            namespace: namespace.clone(),
            settings: settings.clone(),
            identity: identity.clone(),
            snapshots: mirror.snapshots(),
            events: mirror.events(),
            liveness: mirror.probe(),
            metrics: Arc::clone(&metrics),
            db: db_status,
            cache_synced: cache_synced_tx.clone(),
            clock: clock.clone(),
            writes_end: writes_end.clone(),
            term_deadline: this_term.clone(),
            stopped_pods: Arc::clone(&stopped_pods),
            dropped_writes: Arc::clone(&dropped_writes),
        };
        tasks.push(spawn(Box::pin(controller::run(term, term_stop.clone()))));
        let mut election_gone = false;
        let mut handing_over = false;
        let blind_now = !*sees_steadily.borrow();
        handover_after = if handed_over_blind && blind_now {
            (handover_after * 2).min(handover_base * 16)
        } else {
            handover_base
        };
        handed_over_blind = false;
        let blind = blind_for(sees_steadily.clone(), handover_after);
        let mut blind = std::pin::pin!(blind);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                // Cut off from ZooKeeper (the others may well not be): this term decides
                // nothing, and a replica that can see ZooKeeper could.
                () = &mut blind => {
                    warn!(
                        untrusted_for = ?handover_after,
                        "the ZooKeeper view has not been trusted for too long while leading: stopping, to hand the lease to a replica that can see ZooKeeper"
                    );
                    handing_over = true;
                    break;
                }
                _ = term_ended.cancelled() => {
                    // The DB sync ends when the mirror's snapshots do: name the cause.
                    fatal = Some(if mirror_gone.is_cancelled() {
                        MIRROR_GONE
                    } else {
                        "the controller or the DB sync stopped while leading"
                    }.to_owned());
                    break;
                }
                _ = mirror_gone.cancelled() => {
                    if !shutdown.is_cancelled() {
                        fatal = Some(MIRROR_GONE.to_owned());
                    }
                    break;
                }
                changed = leading.changed() => {
                    if changed.is_err() {
                        election_gone = true;
                        fatal = Some("the leader election stopped while leading".to_owned());
                        break;
                    }
                    // Leading again, but in a later term: this one's tasks acted on a
                    // world another leader may have changed since.
                    if !*leading.borrow() || !this_term.is_latest_term() {
                        break;
                    }
                }
            }
        }
        let lost = !*leading.borrow() || election_gone || !this_term.is_latest_term();
        if lost {
            metrics.leader.set(0);
        }
        // Another replica may lead soon after we lost the Lease: the term stops at once, so
        // that nothing of it (a DB transaction, say) lands after the new leader's writes; the
        // controller's writes are held back already. Otherwise (shutdown, a failed task) the
        // Lease is still ours: the term gets time to finish what it is writing.
        let grace = if lost {
            Duration::ZERO
        } else {
            TERM_STOP_GRACE
        };
        if let Some(why) = &fatal {
            error!(%why, "stopping this replica");
        } else if lost {
            warn!("no longer the leader: stopping the controller and the DB sync at once");
        }
        let aborted = stop_term(
            &term_stop,
            &writes_end,
            leading.clone(),
            tasks,
            grace,
            &hurry,
        )
        .await;
        // A standby exports no per-store picture, and is not ready as a leader any more; the
        // controller clears both when it stops by itself, not when it was aborted.
        metrics.retain_stores(|_| false);
        cache_synced_tx.send_replace(false);
        let dropped = dropped_writes.load(std::sync::atomic::Ordering::SeqCst);
        if aborted > 0 {
            warn!(
                aborted,
                ?grace,
                "the term's tasks did not stop in time; aborted them"
            );
        }
        if (aborted > 0 || dropped > 0) && !lost {
            // What they had sent may still land (a request queued at the API server, a DB
            // COMMIT on its way, a write the term's end cut off under way): the Lease is kept
            // (and renewed) a little longer before it is released or handed over, so that it
            // lands before a successor's writes, as it would after a crash (a successor waits
            // out a lease duration, and a write in flight has at most a third of it).
            debug!(
                aborted,
                dropped, "letting what the term sent land before the Lease goes"
            );
            tokio::time::sleep(aborted_settle).await;
        }
        if shutdown.is_cancelled() || fatal.is_some() {
            break;
        }
        if handing_over {
            // The term has stopped: now the Lease goes (if the election still holds it, even
            // in a term begun since), and this replica is a candidate again behind those that
            // can see ZooKeeper (`leader::Candidate`). No term starts before the election
            // has done so.
            handed_over_blind = true;
            metrics.leader.set(0);
            resign_tx.send_modify(|asked| *asked += 1);
            let asked = *resign_tx.borrow();
            tokio::select! {
                _ = shutdown.cancelled() => break,
                done = resigned.wait_for(|done| *done >= asked) => if done.is_err() {
                    fatal.get_or_insert("the leader election stopped".to_owned());
                    break;
                },
            }
        }
    }
    shutdown.cancel();
    // Nothing acts on our leadership any more: now a standby may take over at once (and may
    // say so in its own gauge meanwhile).
    metrics.leader.set(0);
    election_stop.cancel();
    if let Err(error) = election.await {
        fatal.get_or_insert(format!("the leader election failed: {error}"));
    }
    admin_stop.cancel();
    let mut admin = admin;
    if tokio::time::timeout(ADMIN_STOP_TIMEOUT, &mut admin)
        .await
        .is_err()
    {
        warn!("the admin server's connections did not close within {ADMIN_STOP_TIMEOUT:?}; closed");
        admin.abort();
    }
    mirror_stop.cancel();
    if let Err(why) = mirror.join().await {
        fatal.get_or_insert(format!("the ZooKeeper mirror failed: {why}"));
    }
    match fatal {
        None => {
            info!("operator stopped");
            Ok(())
        }
        Some(why) => Err(crate::Error::Stopped(why)),
    }
}

/// Keeps `sees` equal to whether the ZooKeeper view is trusted, for the election: false at
/// once, true again only once trust has held for `settle` (a link that keeps dropping, trusted
/// for moments after each reload, is not a view to lead on). A first load done by
/// `first_load_by` (when the replica stands for leader without one) counts at once: a replica
/// just started has no record of dropping, and is the standby a rolling update leaves the
/// Lease to.
async fn track_trust(
    mut snapshots: watch::Receiver<Arc<crate::zk::Snapshot>>,
    sees: watch::Sender<bool>,
    settle: Duration,
    first_load_by: tokio::time::Instant,
) {
    tokio::select! {
        loaded = wait_for_trust(&mut snapshots, true) => {
            if loaded.is_err() {
                return;
            }
            sees.send_replace(true);
        }
        () = tokio::time::sleep_until(first_load_by) => {}
    }
    loop {
        let untrusted = wait_for_trust(&mut snapshots, false).await;
        sees.send_if_modified(|seen| std::mem::replace(seen, false));
        if untrusted.is_err() {
            return;
        }
        match trust_settles(&mut snapshots, settle).await {
            Some(true) => {
                sees.send_if_modified(|seen| !std::mem::replace(seen, true));
            }
            Some(false) => {}
            None => return,
        }
    }
}

fn trusted(snapshots: &mut watch::Receiver<Arc<crate::zk::Snapshot>>) -> bool {
    snapshots.borrow_and_update().health.is_trusted()
}

/// Waits until the view's trust is `want`; an error once the mirror is gone.
async fn wait_for_trust(
    snapshots: &mut watch::Receiver<Arc<crate::zk::Snapshot>>,
    want: bool,
) -> Result<(), watch::error::RecvError> {
    while trusted(snapshots) != want {
        snapshots.changed().await?;
    }
    Ok(())
}

/// Waits until the view is trusted, then whether it stays so for `settle` (`Some(true)`) or is
/// lost before (`Some(false)`); `None` once the mirror is gone.
async fn trust_settles(
    snapshots: &mut watch::Receiver<Arc<crate::zk::Snapshot>>,
    settle: Duration,
) -> Option<bool> {
    wait_for_trust(snapshots, true).await.ok()?;
    let deadline = tokio::time::Instant::now() + settle;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => return Some(true),
            changed = snapshots.changed() => {
                changed.ok()?;
                if !trusted(snapshots) {
                    return Some(false);
                }
            }
        }
    }
}

/// Resolves once `sees` (see [`track_trust`]) has been false for `patience` without a break,
/// from when this is first polled at the earliest: moments of trust too short to settle count
/// as blind, as they do for the election. Never once its sender is gone.
async fn blind_for(mut sees: watch::Receiver<bool>, patience: Duration) {
    loop {
        let blind = sees.wait_for(|sees| !*sees).await.is_ok();
        let seeing_again = blind
            && tokio::select! {
                () = tokio::time::sleep(patience) => return,
                seen = sees.wait_for(|sees| *sees) => seen.is_ok(),
            };
        if !seeing_again {
            return std::future::pending().await;
        }
    }
}

/// Runs one of a leadership term's tasks, telling `ended` if it ends (returns or panics)
/// before `stop` ended the term.
async fn watched(
    task: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
    stop: CancellationToken,
    ended: CancellationToken,
) {
    struct EndsTerm {
        stop: CancellationToken,
        ended: CancellationToken,
    }
    impl Drop for EndsTerm {
        // Runs on a panic's unwinding too.
        fn drop(&mut self) {
            if !self.stop.is_cancelled() {
                self.ended.cancel();
            }
        }
    }
    let _ends_term = EndsTerm { stop, ended };
    task.await;
}

/// Waits until the mirror's view is trusted (its first full load done), for at most
/// `patience`, or until the process stops.
async fn await_first_load(
    mut snapshots: watch::Receiver<Arc<crate::zk::Snapshot>>,
    patience: Duration,
    shutdown: &CancellationToken,
    mirror_gone: &CancellationToken,
) {
    let loaded = async {
        while !snapshots.borrow_and_update().health.is_trusted() {
            if snapshots.changed().await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = mirror_gone.cancelled() => {}
        _ = loaded => {}
        _ = tokio::time::sleep(patience) => warn!(
            waited = ?patience,
            "the ZooKeeper view is not loaded yet: standing for leader all the same"
        ),
    }
}

/// Waits (boundedly) for the API server's time: a term's status times are written in it. The
/// first answers come in well before a replica wins the Lease, so this wait is for a server
/// that answers the Lease but not `/version` — then the term goes on in this replica's time.
async fn await_cluster_time(
    clock: &ClusterClock,
    shutdown: &CancellationToken,
    leading: &watch::Receiver<bool>,
) {
    const PATIENCE: Duration = Duration::from_secs(10);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while clock.offset().is_none() && *leading.borrow() {
        if tokio::time::Instant::now() >= deadline {
            warn!(
                waited = ?PATIENCE,
                "the API server's time is not known yet: leading in this replica's own time"
            );
            return;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
}

/// Ends a leadership term: cancels `stop` and waits for the term's tasks, aborting those still
/// running after `grace` (so that neither a new term nor the release of the Lease waits forever).
/// `writes_end` is cancelled once they are done or out of time, at once without a grace: until
/// then a reconcile under way may finish what it writes (a restart's new Pod). Should
/// `leading` turn false during the grace (the Lease lost), the grace is over: writes end and
/// the tasks still running (a DB transaction, say) are aborted, as when no grace was given;
/// likewise once `hurry` is cancelled (a second stop signal). Returns how many were aborted; either way, none of them runs any more when this returns.
async fn stop_term(
    stop: &CancellationToken,
    writes_end: &CancellationToken,
    mut leading: watch::Receiver<bool>,
    tasks: Vec<JoinHandle<()>>,
    grace: Duration,
    hurry: &CancellationToken,
) -> usize {
    stop.cancel();
    if grace.is_zero() {
        writes_end.cancel();
    }
    let lost = CancellationToken::new();
    let lease_guard = {
        let (writes_end, lost) = (writes_end.clone(), lost.clone());
        tokio::spawn(async move {
            tokio::select! {
                // Lost, or the election gone: either way no longer the leader.
                _ = leading.wait_for(|leading| !*leading) => {
                    writes_end.cancel();
                    lost.cancel();
                }
                _ = writes_end.cancelled() => {}
            }
        })
    };
    let deadline = tokio::time::Instant::now() + grace;
    let mut aborted = 0;
    for mut task in tasks {
        let outcome = tokio::select! {
            // A task that has finished counts as finished, lost Lease or not.
            biased;
            outcome = tokio::time::timeout_at(deadline, &mut task) => outcome.ok(),
            _ = lost.cancelled() => None,
            _ = hurry.cancelled() => None,
        };
        match outcome {
            Some(Ok(())) => {}
            Some(Err(error)) => error!(%error, "a task of the leadership term failed"),
            None => {
                // Out of time, or the Lease lost: nothing of the term may write any more,
                // whatever it is at.
                writes_end.cancel();
                task.abort();
                // An aborted task stops at its next await; wait for that, so that it has
                // really stopped (and dropped whatever it was writing) before we go on.
                let _ = task.await;
                aborted += 1;
            }
        }
    }
    writes_end.cancel();
    let _ = lease_guard.await;
    aborted
}

/// What `/readyz` depends on.
#[derive(Clone, Copy, Debug, Default)]
struct Readiness {
    /// The ZooKeeper view has been loaded (once is enough: a later disconnect shows in the
    /// stores' status, not as a restart of the operator by its liveness machinery).
    view_loaded: bool,
    /// A Lease request has been answered: this replica can take part in the election.
    lease_answered: bool,
    leading: bool,
    /// The leader's PureFlashStore, Pod and ConfigMap caches have synced.
    cache_synced: bool,
    /// A stop was asked for: the replica is on its way out (it may still lead, and answer
    /// `/livez`, until its Lease is released).
    stopping: bool,
}

/// `/readyz`: ready once the ZooKeeper view has been loaded and the Lease answered, and, on the
/// leader, once its PureFlashStore, Pod and ConfigMap caches have synced too (a standby has no cache: a warm view
/// is all it needs to take over). A replica that cannot reach its Lease (RBAC, a wrong lease
/// namespace) could never take over: taken for ready, a rolling update would replace the
/// working leader with it.
fn readiness(state: Readiness) -> Result<(), String> {
    if state.stopping {
        Err("stopping".into())
    } else if !state.view_loaded {
        Err("the ZooKeeper view has not been loaded yet".into())
    } else if !state.lease_answered {
        Err("no Lease request has succeeded yet: this replica cannot take part in the leader election (see the log)".into())
    } else if state.leading && !state.cache_synced {
        Err("leading, but the PureFlashStore, Pod and ConfigMap caches have not synced yet".into())
    } else {
        Ok(())
    }
}

/// Keeps `/readyz` and the ZooKeeper session metric current.
async fn track_readiness(
    mut snapshots: watch::Receiver<Arc<crate::zk::Snapshot>>,
    mut lease_answered: watch::Receiver<bool>,
    mut leading: watch::Receiver<bool>,
    mut cache_synced: watch::Receiver<bool>,
    stop: CancellationToken,
    ready: watch::Sender<Result<(), String>>,
    metrics: Arc<Metrics>,
) {
    let mut view_loaded = false;
    loop {
        let (health, unreadable) = {
            let snapshot = snapshots.borrow_and_update();
            let unreadable = snapshot
                .view
                .stores
                .values()
                .filter(|s| !s.is_known())
                .count();
            (snapshot.health.clone(), unreadable)
        };
        metrics.set_session(health.session.as_str());
        metrics
            .zookeeper_view_trusted
            .set(i64::from(health.is_trusted()));
        metrics
            .zookeeper_unreadable_stores
            .set(i64::try_from(unreadable).unwrap_or(i64::MAX));
        view_loaded |= health.last_full_sync.is_some();
        // Read once: a stop between two reads would be neither told nor waited for.
        let stopping = stop.is_cancelled();
        let state = readiness(Readiness {
            view_loaded,
            lease_answered: *lease_answered.borrow_and_update(),
            leading: *leading.borrow_and_update(),
            cache_synced: *cache_synced.borrow_and_update(),
            stopping,
        })
        .map_err(|why| match health.distrust() {
            Some(distrust) if !view_loaded => format!("{why}: {distrust}"),
            _ => why,
        });
        ready.send_if_modified(|current| {
            let changed = *current != state;
            *current = state;
            changed
        });
        let closed = tokio::select! {
            changed = snapshots.changed() => changed.is_err(),
            changed = lease_answered.changed() => changed.is_err(),
            changed = leading.changed() => changed.is_err(),
            changed = cache_synced.changed() => changed.is_err(),
            // Once: a stopped replica's readiness does not change again.
            () = stop.cancelled(), if !stopping => false,
        };
        if closed {
            return;
        }
    }
}

/// The metadata DB sync's progress as metrics (its status carries running totals).
async fn count_db_progress(
    mut status: watch::Receiver<DbSyncStatus>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let mut counted = DbSyncStatus::default();
    loop {
        let current = status.borrow_and_update().clone();
        metrics
            .db_rows_written
            .inc_by(current.rows_written.saturating_sub(counted.rows_written));
        metrics
            .db_sync_errors
            .inc_by(current.errors.saturating_sub(counted.errors));
        counted = current;
        tokio::select! {
            _ = stop.cancelled() => return,
            changed = status.changed() => if changed.is_err() { return },
        }
    }
}

fn default_identity() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "pureflash-operator".into());
    format!("{host}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

async fn kube_config(args: &RunArgs) -> Result<Config, crate::Error> {
    let config = match &args.kube.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path).map_err(|e| {
                crate::Error::Kube(format!("cannot read kubeconfig {}: {e}", path.display()))
            })?;
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .map_err(|e| {
                    crate::Error::Kube(format!("invalid kubeconfig {}: {e}", path.display()))
                })?
        }
        None => Config::infer().await.map_err(|e| {
            crate::Error::Kube(format!(
                "no Kubernetes configuration found (kubeconfig or in-cluster): {e}"
            ))
        })?,
    };
    Ok(config)
}

/// A request that gets no answer fails after this long (kube's default is never). Longer than
/// a watch's server-side timeout (290 s), so quiet watches are not cut; a stalled request is.
const API_READ_TIMEOUT: Duration = Duration::from_secs(295);

fn kube_client(mut config: Config) -> Result<Client, crate::Error> {
    config.read_timeout = Some(API_READ_TIMEOUT);
    // Counted from each request, not from when its pooled connection went idle.
    config.reset_reader_on_write = true;
    let url = config.cluster_url.to_string();
    Client::try_from(config)
        .map_err(|e| crate::Error::Kube(format!("cannot build a Kubernetes client for {url}: {e}")))
}

/// The client for Pod evictions. A 429 there is a disruption budget's no, which kube's default
/// client retries for minutes (with the rollout lock held all along); a rollout holds instead,
/// and asks again when another store comes back or at its next look.
fn eviction_client(mut config: Config) -> Result<Client, crate::Error> {
    config.default_retry = false;
    kube_client(config)
}

/// The CRD must be installed; say how if it is not.
async fn check_crd(client: &Client, namespace: &Option<String>) -> Result<(), crate::Error> {
    check_crd_within(client, namespace, CRD_CHECK_TIMEOUT).await
}

async fn check_crd_within(
    client: &Client,
    namespace: &Option<String>,
    timeout: Duration,
) -> Result<(), crate::Error> {
    let api: Api<PureFlashStore> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    // Bounded well within the chart's startup probe (60 s), which nothing answers yet: an API
    // server that accepts connections but does not answer is a clear startup error, not a
    // container killed by its probe without a word.
    let listed = tokio::time::timeout(timeout, api.list(&ListParams::default().limit(1)))
        .await
        .map_err(|_| {
            crate::Error::Kube(format!(
                "the API server did not answer a list of PureFlashStores within {}s",
                timeout.as_secs()
            ))
        })?;
    match listed {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Err(crate::Error::CrdMissing),
        Err(error) => Err(crate::Error::Kube(format!(
            "cannot list PureFlashStores: {error}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(trusted: bool) -> Arc<crate::zk::Snapshot> {
        use crate::zk::{ClusterView, Health, SessionStatus, Snapshot};
        Arc::new(Snapshot {
            version: 0,
            view: ClusterView::default(),
            health: Health {
                session: if trusted {
                    SessionStatus::Connected
                } else {
                    SessionStatus::Disconnected
                },
                synced: trusted,
                last_full_sync: None,
                sessions: 1,
                read_failure: None,
                session_failure: None,
                abandoned: None,
            },
        })
    }

    /// The handover's clock, on what the election is told of the view: untrusted time counts
    /// on through moments of trust shorter than the settle time, and starts over after a
    /// longer one.
    #[tokio::test(start_paused = true)]
    async fn blind_time_counts_through_short_moments_of_trust() {
        let patience = Duration::from_secs(60);
        let clock = |trusted: bool| {
            let (tx, rx) = watch::channel(snapshot(trusted));
            let (sees_tx, sees) = watch::channel(false);
            let first_load_by = tokio::time::Instant::now() + Duration::from_secs(15);
            tokio::spawn(track_trust(rx, sees_tx, patience / 2, first_load_by));
            (tx, tokio::spawn(blind_for(sees, patience)))
        };
        let started = tokio::time::Instant::now();
        let (tx, blind) = clock(true);
        tokio::time::sleep(Duration::from_secs(40)).await;
        tx.send_replace(snapshot(false));
        // A reconnection trusted for 20 s, then lost again: still the same blind spell.
        tokio::time::sleep(Duration::from_secs(20)).await;
        tx.send_replace(snapshot(true));
        tokio::time::sleep(Duration::from_secs(20)).await;
        tx.send_replace(snapshot(false));
        blind.await.unwrap();
        assert_eq!(started.elapsed(), Duration::from_secs(100));

        // A first load (which counts at once), then lost: counted from the loss.
        let started = tokio::time::Instant::now();
        let (tx, blind) = clock(false);
        tokio::time::sleep(Duration::from_secs(10)).await;
        tx.send_replace(snapshot(true));
        tokio::time::sleep(Duration::from_secs(40)).await;
        tx.send_replace(snapshot(false));
        blind.await.unwrap();
        assert_eq!(started.elapsed(), Duration::from_secs(110));

        // Trusted for good: never. (Trust after a loss counts once settled, as above.)
        let (tx, blind) = clock(false);
        tx.send_replace(snapshot(true));
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert!(!blind.is_finished());
        blind.abort();
    }

    /// What the election is told of the view: untrusted at once, trusted only once it has
    /// held for the settle time.
    #[tokio::test(start_paused = true)]
    async fn the_election_sees_zookeeper_only_once_trust_has_settled() {
        let settle = Duration::from_secs(30);
        let (tx, rx) = watch::channel(snapshot(false));
        let (sees_tx, sees) = watch::channel(false);
        let first_load_by = tokio::time::Instant::now() + Duration::from_secs(15);
        tokio::spawn(track_trust(rx, sees_tx, settle, first_load_by));
        tokio::time::sleep(Duration::from_secs(1)).await;
        tx.send_replace(snapshot(true));
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert!(*sees.borrow(), "the first load counts at once");
        tx.send_replace(snapshot(false));
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert!(!*sees.borrow(), "untrusted at once");
        // Trusted for moments: still blind.
        for _ in 0..3 {
            tx.send_replace(snapshot(true));
            tokio::time::sleep(Duration::from_secs(20)).await;
            tx.send_replace(snapshot(false));
            tokio::time::sleep(Duration::from_secs(1)).await;
            assert!(!*sees.borrow());
        }
        tx.send_replace(snapshot(true));
        tokio::time::sleep(Duration::from_secs(29)).await;
        assert!(!*sees.borrow());
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(*sees.borrow(), "settled");
        tx.send_replace(snapshot(false));
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert!(!*sees.borrow());

        // A replica that stood for leader without a first load (its link dropping since it
        // started) has that trust settle too.
        let (tx, rx) = watch::channel(snapshot(false));
        let (sees_tx, sees) = watch::channel(false);
        let first_load_by = tokio::time::Instant::now() + Duration::from_secs(15);
        tokio::spawn(track_trust(rx, sees_tx, settle, first_load_by));
        tokio::time::sleep(Duration::from_secs(16)).await;
        tx.send_replace(snapshot(true));
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert!(!*sees.borrow(), "not settled yet");
        tokio::time::sleep(Duration::from_secs(11)).await;
        assert!(*sees.borrow());
    }

    #[tokio::test]
    async fn the_crd_check_tells_a_missing_crd_from_a_silent_api_server() {
        use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
        use kube::api::PostParams;
        use kube_emulator::{Action, Emulator, Matcher};

        let emulator = Emulator::start().await.unwrap();
        let client = Client::try_from(kube::Config::new(emulator.url().parse().unwrap())).unwrap();
        let check = || check_crd_within(&client, &None, Duration::from_secs(1));
        assert!(matches!(check().await, Err(crate::Error::CrdMissing)));

        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        let crd: CustomResourceDefinition = serde_yaml::from_str(&crate::crd::crd_yaml()).unwrap();
        crds.create(&PostParams::default(), &crd).await.unwrap();
        check().await.expect("installed");

        // Accepts the request and never answers.
        emulator.faults().inject(
            Matcher::verb("list").on("pureflashstores"),
            Action::Delay(Duration::from_secs(3600)),
            1,
        );
        let error = check().await.expect_err("no answer").to_string();
        assert!(
            error.contains("the API server did not answer a list of PureFlashStores within 1s"),
            "{error}"
        );
    }

    /// What a reconcile under way at the stop sees: may it still write?
    fn finishing_task(
        stop: &CancellationToken,
        writes_end: &CancellationToken,
        work: Duration,
    ) -> (JoinHandle<()>, Arc<std::sync::Mutex<Option<bool>>>) {
        let could_write = Arc::new(std::sync::Mutex::new(None));
        let seen = Arc::clone(&could_write);
        let (stop, writes_end) = (stop.clone(), writes_end.clone());
        let task = tokio::spawn(async move {
            stop.cancelled().await;
            tokio::time::sleep(work).await;
            *seen.lock().unwrap() = Some(!writes_end.is_cancelled());
        });
        (task, could_write)
    }

    #[tokio::test]
    async fn a_stopping_term_may_write_until_its_tasks_are_done_or_out_of_time() {
        // Shutdown: the grace lets a reconcile under way finish, writing.
        let (stop, writes_end) = (CancellationToken::new(), CancellationToken::new());
        let (task, could_write) = finishing_task(&stop, &writes_end, Duration::from_millis(50));
        let (_leading_tx, leading) = watch::channel(true);
        let aborted = stop_term(
            &stop,
            &writes_end,
            leading.clone(),
            vec![task],
            Duration::from_secs(5),
            &CancellationToken::new(),
        )
        .await;
        assert_eq!(aborted, 0);
        assert_eq!(*could_write.lock().unwrap(), Some(true));
        assert!(writes_end.is_cancelled(), "no writes once the term is over");

        // Out of time: writes end before the task is aborted.
        let (stop, writes_end) = (CancellationToken::new(), CancellationToken::new());
        let (task, could_write) = finishing_task(&stop, &writes_end, Duration::from_secs(60));
        let aborted = stop_term(
            &stop,
            &writes_end,
            leading.clone(),
            vec![task],
            Duration::from_millis(50),
            &CancellationToken::new(),
        )
        .await;
        assert_eq!(aborted, 1);
        assert_eq!(
            *could_write.lock().unwrap(),
            None,
            "aborted before it wrote"
        );
        assert!(writes_end.is_cancelled());

        // The Lease lost: no grace, and no write from the moment the term stops.
        let (stop, writes_end) = (CancellationToken::new(), CancellationToken::new());
        let (task, could_write) = finishing_task(&stop, &writes_end, Duration::ZERO);
        let watcher = {
            let writes_end = writes_end.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                stop.cancelled().await;
                writes_end.is_cancelled()
            })
        };
        stop_term(
            &stop,
            &writes_end,
            leading.clone(),
            vec![task],
            Duration::ZERO,
            &CancellationToken::new(),
        )
        .await;
        assert!(watcher.await.unwrap(), "writes ended with the stop");
        assert_ne!(*could_write.lock().unwrap(), Some(true));

        // The Lease lost during a shutdown's grace: the grace is over then, not at its end.
        let (stop, writes_end) = (CancellationToken::new(), CancellationToken::new());
        let (leading_tx, leading) = watch::channel(true);
        let (task, could_write) = finishing_task(&stop, &writes_end, Duration::from_secs(30));
        let lose = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            leading_tx.send_replace(false);
            leading_tx
        });
        let started = tokio::time::Instant::now();
        let aborted = stop_term(
            &stop,
            &writes_end,
            leading,
            vec![task],
            Duration::from_secs(60),
            &CancellationToken::new(),
        )
        .await;
        assert_eq!(aborted, 1, "stopped at the loss, not at the grace's end");
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(
            *could_write.lock().unwrap(),
            None,
            "aborted before it wrote"
        );
        assert!(writes_end.is_cancelled());
        drop(lose.await);

        // A second stop signal during the grace: over at once, the Lease still ours (to be
        // released next).
        let (stop, writes_end) = (CancellationToken::new(), CancellationToken::new());
        let (_leading_tx, leading) = watch::channel(true);
        let (task, could_write) = finishing_task(&stop, &writes_end, Duration::from_secs(30));
        let hurry = CancellationToken::new();
        tokio::spawn({
            let hurry = hurry.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                hurry.cancel();
            }
        });
        let started = tokio::time::Instant::now();
        let aborted = stop_term(
            &stop,
            &writes_end,
            leading,
            vec![task],
            Duration::from_secs(60),
            &hurry,
        )
        .await;
        assert_eq!(aborted, 1, "stopped when hurried, not at the grace's end");
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(*could_write.lock().unwrap(), None);
        assert!(writes_end.is_cancelled());
    }

    #[tokio::test]
    async fn a_term_task_that_panics_or_returns_while_leading_ends_the_term() {
        let stop = CancellationToken::new();
        let ended = CancellationToken::new();
        let panics = tokio::spawn(watched(
            Box::pin(async { panic!("a bug in a reconcile") }),
            stop.clone(),
            ended.clone(),
        ));
        assert!(panics.await.unwrap_err().is_panic());
        assert!(ended.is_cancelled());

        let ended = CancellationToken::new();
        watched(Box::pin(async {}), stop.clone(), ended.clone()).await;
        assert!(ended.is_cancelled(), "returned on its own");
    }

    #[tokio::test]
    async fn a_term_task_stopped_with_its_term_does_not() {
        let stop = CancellationToken::new();
        let ended = CancellationToken::new();
        let task = {
            let told = stop.clone();
            tokio::spawn(watched(
                Box::pin(async move { told.cancelled().await }),
                stop.clone(),
                ended.clone(),
            ))
        };
        let straggler = tokio::spawn(watched(
            Box::pin(std::future::pending()),
            stop.clone(),
            ended.clone(),
        ));
        // Without grace the straggler is aborted (the other may or may not be, by timing).
        assert!(
            stop_term(
                &stop,
                &CancellationToken::new(),
                watch::channel(true).1,
                vec![task, straggler],
                Duration::ZERO,
                &CancellationToken::new()
            )
            .await
                >= 1
        );
        assert!(!ended.is_cancelled());
    }

    #[tokio::test]
    async fn a_term_stops_gracefully_and_stragglers_are_aborted() {
        let stop = CancellationToken::new();
        let finished = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let polite = {
            let (stop, finished) = (stop.clone(), Arc::clone(&finished));
            tokio::spawn(async move {
                stop.cancelled().await;
                // Finishing what it was doing takes a moment.
                tokio::task::yield_now().await;
                finished.store(true, std::sync::atomic::Ordering::SeqCst);
            })
        };
        let held = Arc::new(());
        let stubborn = {
            let held = Arc::clone(&held);
            tokio::spawn(async move {
                let _held = held;
                std::future::pending::<()>().await;
            })
        };
        let aborted = stop_term(
            &stop,
            &CancellationToken::new(),
            watch::channel(true).1,
            vec![polite, stubborn],
            Duration::from_millis(50),
            &CancellationToken::new(),
        )
        .await;
        assert_eq!(aborted, 1);
        assert!(finished.load(std::sync::atomic::Ordering::SeqCst));
        assert!(stop.is_cancelled());
        assert_eq!(
            Arc::strong_count(&held),
            1,
            "the aborted task has stopped and dropped what it held"
        );
    }

    #[test]
    fn ready_needs_the_view_the_lease_and_on_the_leader_the_cache() {
        let all = Readiness {
            view_loaded: true,
            lease_answered: true,
            leading: true,
            cache_synced: true,
            stopping: false,
        };
        assert_eq!(readiness(all), Ok(()));
        // On its way out: no longer ready, whatever else holds (a Service stops sending it
        // scrapes, a rollout counts it gone).
        let stopping = Readiness {
            stopping: true,
            ..all
        };
        assert_eq!(readiness(stopping), Err("stopping".into()));
        assert!(readiness(Readiness::default()).is_err());
        let no_view = Readiness {
            view_loaded: false,
            ..all
        };
        assert!(readiness(no_view).unwrap_err().contains("ZooKeeper view"));
        let no_lease = Readiness {
            lease_answered: false,
            leading: false,
            ..all
        };
        assert!(readiness(no_lease).unwrap_err().contains("Lease"));
        let standby = Readiness {
            leading: false,
            cache_synced: false,
            ..all
        };
        assert_eq!(readiness(standby), Ok(()));
        let syncing = Readiness {
            cache_synced: false,
            ..all
        };
        assert!(
            readiness(syncing)
                .unwrap_err()
                .contains("caches have not synced")
        );
    }
}
