//! The Kubernetes side: reconciling `PureFlashStore`s into a pfs ConfigMap and Pod, a status
//! that mirrors ZooKeeper, and automated recovery.
//!
//! - [`announce`]: which Events and counted skips a status change is told with (pure);
//! - [`budget`]: the PodDisruptionBudget over each namespace's pfs Pods;
//! - [`claims`]: which store may serve a disk another store names too (pure);
//! - [`events`]: Events stamped with the API server's time, repeats folded into series;
//! - [`pods`]: what the pfs Pod and its pfs.conf should be (pure);
//! - [`status`]: what the status should say (pure);
//! - `reconcile`: observe → decide → act → report for one store.

pub mod announce;
pub mod budget;
pub mod claims;
pub mod events;
pub mod pods;
pub mod reconcile;
pub mod status;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::Api;
use kube::runtime::reflector::{self as cache, ObjectRef};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::clock::ClusterClock;
use crate::crd::PureFlashStore;
use crate::dbsync::DbSyncStatus;
use crate::leader::TermDeadline;
use crate::metrics::Metrics;
use crate::zk::{LivenessProbe, Snapshot, ViewEvent};

/// How long the ZooKeeper view must stay untrusted before every store is woken to say so
/// (`Unknown`). A ZooKeeper server restarted or a connection moved to another server costs the
/// view its trust until the reload after the reconnection, a second or two: waking all stores
/// for it would write each one's status twice (Unknown, then back) and an Event each, thousands
/// of writes per routine ZooKeeper restart. Nothing is decided meanwhile all the same: every
/// reconcile that runs checks the trust itself, and a store reconciled for its own reasons
/// then reads Unknown at once. Comparable to the lag of a status behind the view when many
/// stores change at once.
const UNTRUSTED_WAKE_DELAY: Duration = Duration::from_secs(3);
pub use reconcile::{Context, MANAGER, Settings, StoppedPodReplacements};

/// Where the controller works and with what.
pub struct Term {
    pub client: Client,
    /// For evictions alone: it does not retry a 429 (see [`Context::eviction_client`]).
    pub eviction_client: Client,
    /// `None`: every namespace.
    pub namespace: Option<String>,
    pub settings: Settings,
    pub identity: String,
    pub snapshots: watch::Receiver<Arc<Snapshot>>,
    pub events: broadcast::Receiver<ViewEvent>,
    /// Asks ZooKeeper itself, before a store is killed.
    pub liveness: LivenessProbe,
    pub metrics: Arc<Metrics>,
    pub db: Option<watch::Receiver<DbSyncStatus>>,
    /// Set once the PureFlashStore, Pod and ConfigMap caches have their first full list (for
    /// `/readyz`).
    pub cache_synced: watch::Sender<bool>,
    /// The API server's time, in which status times are written and compared.
    pub clock: ClusterClock,
    /// Cancelled once this replica may no longer write: when it loses the Lease, at once; on
    /// a shutdown, only once the reconciles under way have had their grace to finish (it
    /// still holds the Lease meanwhile), so a restart half done is not left without its Pod.
    pub writes_end: CancellationToken,
    /// Until when the term holds for sure: checked before each write too, as `writes_end`
    /// is cancelled only once the news of a lost Lease has gone round.
    pub term_deadline: TermDeadline,
    /// When each store's stopped Pod may next be replaced: kept by the replica across its
    /// terms, so that a Lease that flaps does not start the spacing over.
    pub stopped_pods: Arc<reconcile::StoppedPodReplacements>,
    /// Writes to the API cut off under way by the term's end: sent, they may still land.
    pub dropped_writes: Arc<std::sync::atomic::AtomicUsize>,
}

fn api<K>(client: &Client, namespace: &Option<String>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Waits until `cache` holds its first full list (`Err`: its reflector is gone).
///
/// Re-polled on a short timer: with kube-runtime 5.0 a lone `wait_until_ready()` can miss its
/// wake-up and stay pending after the cache became ready (seen against the emulator with an
/// empty list); asking again sees the readiness at once.
pub(crate) async fn cache_loaded<K>(
    cache: &cache::Store<K>,
) -> Result<(), cache::store::WriterDropped>
where
    K: kube::runtime::reflector::Lookup + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    loop {
        if let Ok(result) =
            tokio::time::timeout(Duration::from_millis(100), cache.wait_until_ready()).await
        {
            return result;
        }
    }
}

/// Wakes every store for the view's trust: at once when `trusted`, else once it has been
/// lost for [`UNTRUSTED_WAKE_DELAY`] (`untrusted_wake` holds when; cleared when trusted).
fn wake_for_trust(
    trusted: bool,
    untrusted_wake: &mut Option<tokio::time::Instant>,
    all: &mpsc::UnboundedSender<()>,
) {
    if trusted {
        *untrusted_wake = None;
        let _ = all.send(());
    } else {
        untrusted_wake.get_or_insert(tokio::time::Instant::now() + UNTRUSTED_WAKE_DELAY);
    }
}

/// Runs the controller for one leadership term: until `stop`, after which no reconcile starts
/// and those under way finish (writing until [`Term::writes_end`]).
pub async fn run(term: Term, stop: CancellationToken) {
    let Term {
        client,
        eviction_client,
        namespace,
        settings,
        identity,
        snapshots,
        mut events,
        liveness,
        metrics,
        db,
        cache_synced,
        clock,
        writes_end,
        term_deadline,
        stopped_pods,
        dropped_writes,
    } = term;
    let owned = watcher::Config::default().labels(pods::OWNED_SELECTOR);
    // The owned Pods and ConfigMaps are cached as well as watched: reconciles read them from
    // memory. Their managedFields are dropped on the way in (never read, and most of the bytes).
    let (pods, pod_writer) = cache::store::<Pod>();
    let pods_generation = Arc::new(AtomicU64::new(0));
    let pods_loaded = Arc::new(AtomicBool::new(false));
    let (bump, loaded) = (Arc::clone(&pods_generation), Arc::clone(&pods_loaded));
    // Every change of the Pod or store cache, for the disruption budgets.
    let (budget_inputs, budget_inputs_rx) = watch::channel(());
    let budget_inputs = Arc::new(budget_inputs);
    let pods_changed = Arc::clone(&budget_inputs);
    let creates = Arc::new(reconcile::CreateLocks::default());
    let (created, cached) = (Arc::clone(&creates), pods.clone());
    let pod_events = cache::reflector(
        pod_writer,
        watcher(api::<Pod>(&client, &namespace), owned.clone())
            .modify(|pod| pod.managed_fields_mut().clear())
            .default_backoff(),
    )
    // After the cache took the event in.
    .inspect(move |event| {
        if let Ok(event) = event {
            if matches!(event, watcher::Event::InitDone) {
                loaded.store(true, Ordering::SeqCst);
            }
            created.saw(event, &cached);
            pods_changed.send_replace(());
        }
        bump.fetch_add(1, Ordering::SeqCst);
    })
    // The cache and the budgets have every change; the stores are not woken by the echoes of
    // the operator's own serving-gate writes (see `pods::wake_fingerprint`).
    .filter({
        let mut seen: HashMap<String, u64> = HashMap::new();
        move |event| {
            let wakes = match event {
                Ok(watcher::Event::Init) => {
                    seen.clear();
                    true
                }
                Ok(watcher::Event::InitApply(pod)) => {
                    seen.insert(pod.uid().unwrap_or_default(), pods::wake_fingerprint(pod));
                    true
                }
                Ok(watcher::Event::Apply(pod)) => {
                    let print = pods::wake_fingerprint(pod);
                    seen.insert(pod.uid().unwrap_or_default(), print) != Some(print)
                }
                Ok(watcher::Event::Delete(pod)) => {
                    seen.remove(&pod.uid().unwrap_or_default());
                    true
                }
                _ => true,
            };
            std::future::ready(wakes)
        }
    })
    .touched_objects();
    let pod_events = without_errors("pods", pod_events);
    let (config_maps, config_map_writer) = cache::store::<ConfigMap>();
    let config_map_events = cache::reflector(
        config_map_writer,
        watcher(api::<ConfigMap>(&client, &namespace), owned)
            .modify(|map| map.managed_fields_mut().clear())
            .default_backoff(),
    )
    .touched_objects();
    let config_map_events = without_errors("configmaps", config_map_events);
    let (store_cache, store_writer) = cache::store::<PureFlashStore>();
    let stores_changed = Arc::clone(&budget_inputs);
    let store_events = cache::reflector(
        store_writer,
        watcher(
            api::<PureFlashStore>(&client, &namespace),
            watcher::Config::default(),
        )
        .default_backoff(),
    )
    .inspect(move |event| {
        if event.is_ok() {
            stores_changed.send_replace(());
        }
    })
    .applied_objects();
    let store_events = without_errors("pureflashstores", store_events);
    let controller = Controller::for_stream(store_events, store_cache)
        .owns_stream(pod_events)
        .owns_stream(config_map_events)
        .with_config(
            kube::runtime::controller::Config::default().concurrency(settings.concurrency),
        );
    let stores = controller.store();
    cache_synced.send_replace(false);
    let (ready_stores, ready_pods, ready_maps) =
        (stores.clone(), pods.clone(), config_maps.clone());
    // Ready once reconciles can act: they wait for all three caches. Not once the term is
    // over: this task may outlive an aborted controller, and the next term's readiness is the
    // next term's to tell (the stop clears it after cancelling `writes_end`, so a term seen
    // going on here within the watch's lock cannot be one already cleared for).
    let term_over = writes_end.clone();
    let cache_watch = tokio::spawn(async move {
        let loaded = async {
            cache_loaded(&ready_stores).await?;
            cache_loaded(&ready_pods).await?;
            cache_loaded(&ready_maps).await
        };
        if loaded.await.is_err() {
            return; // the controller is gone
        }
        info!("PureFlashStore, Pod and ConfigMap caches synced");
        cache_synced.send_if_modified(|synced| {
            let set = !term_over.is_cancelled() && !*synced;
            *synced |= set;
            set
        });
    });

    // The ZooKeeper view wakes the store it concerns within milliseconds; a change of the
    // view's trust (disconnect, resync) wakes them all, a loss of trust only once it has lasted
    // UNTRUSTED_WAKE_DELAY.
    let (one_tx, one_rx) = mpsc::unbounded_channel::<ObjectRef<PureFlashStore>>();
    let waiting = reconcile::WaitingStores::new(one_tx.clone());
    let (all_tx, all_rx) = mpsc::unbounded_channel::<()>();
    let forwarder_stores = stores.clone();
    let forwarder_stop = stop.clone();
    let mut forwarder_db = db.clone();
    // What the stores were last woken for: the view as it is now (the controller's start
    // reconciles every store anyway).
    let forwarder_snapshots = snapshots.clone();
    let forwarder = tokio::spawn(async move {
        let mut trusted = forwarder_snapshots.borrow().health.is_trusted();
        // When every store is to be woken for a loss of trust (see UNTRUSTED_WAKE_DELAY).
        let mut untrusted_wake: Option<tokio::time::Instant> = None;
        let mut db_seen = forwarder_db.as_ref().map(reconcile::DbSeen::of);
        loop {
            let event = tokio::select! {
                _ = forwarder_stop.cancelled() => return,
                event = events.recv() => event,
                () = async {
                    match untrusted_wake {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => {
                    untrusted_wake = None;
                    let _ = all_tx.send(());
                    continue;
                }
                // The DB sync's state is the stores' DbSynced condition: a change of its kind
                // (not of its error message) wakes them all, a store's rows held back or let go
                // wake that store.
                Ok(()) = async {
                    match forwarder_db.as_mut() {
                        Some(db) => db.changed().await,
                        None => std::future::pending().await,
                    }
                } => {
                    let (Some(db), Some(seen)) = (forwarder_db.as_ref(), db_seen.as_mut()) else {
                        continue;
                    };
                    let now = reconcile::DbSeen::of(db);
                    match now.wake(seen) {
                        reconcile::DbWake::Nobody => {}
                        reconcile::DbWake::Everyone => {
                            let _ = all_tx.send(());
                        }
                        reconcile::DbWake::Stores(ids) => {
                            for store in forwarder_stores
                                .state_filter(|s| ids.contains(&i64::from(s.spec.store_id)))
                            {
                                let _ = one_tx.send(ObjectRef::from_obj(store.as_ref()));
                            }
                        }
                    }
                    *seen = now;
                    continue;
                }
            };
            match event {
                Ok(ViewEvent::StoreChanged { id, .. } | ViewEvent::StoreRemoved { id, .. }) => {
                    // Filtered under the cache's lock: only the (one, usually) match is
                    // cloned, not every store, for every ZooKeeper event.
                    for store in forwarder_stores
                        .state_filter(|s| i64::from(s.spec.store_id) == i64::from(id.get()))
                    {
                        let _ = one_tx.send(ObjectRef::from_obj(store.as_ref()));
                    }
                }
                // Only a change of trust matters to every store (a periodic reload only moves
                // the last-sync time). Regained, it wakes them at once; lost, only if it is not
                // regained within UNTRUSTED_WAKE_DELAY.
                Ok(ViewEvent::HealthChanged { health, .. }) => {
                    if trusted != health.is_trusted() {
                        trusted = health.is_trusted();
                        wake_for_trust(trusted, &mut untrusted_wake, &all_tx);
                    }
                }
                // Store events were missed, and maybe a change of trust: the snapshot has it
                // all. Trusted, every store is woken now; else once trust returns (or the delay
                // is up), which covers the missed stores too.
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    trusted = forwarder_snapshots.borrow().health.is_trusted();
                    wake_for_trust(trusted, &mut untrusted_wake, &all_tx);
                }
                // The stores directory may have come or gone, which decides whether the
                // view knows the stores at all (`Snapshot::knows_stores`).
                Ok(ViewEvent::DirectoriesChanged { .. }) => {
                    let _ = all_tx.send(());
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    let one = futures::stream::unfold(
        one_rx,
        |mut rx| async move { rx.recv().await.map(|r| (r, rx)) },
    );
    let all = futures::stream::unfold(
        all_rx,
        |mut rx| async move { rx.recv().await.map(|r| (r, rx)) },
    );

    // Filled (and read by rollouts) only while the operator keeps the budgets.
    let (budget_cache, budget_writer) = cache::store::<PodDisruptionBudget>();
    let budgets_kept = settings.disruption_budget.then(|| budget_cache.clone());
    let context = Arc::new(Context {
        budgets: budgets_kept,
        recorder: events::Recorder::new(client.clone(), MANAGER, &identity, clock.clone()),
        client,
        eviction_client,
        settings,
        snapshots,
        liveness,
        stores,
        pods,
        creates,
        pods_generation,
        pods_loaded,
        offline_count: reconcile::OfflineCount::default(),
        config_maps,
        node_addresses: reconcile::NodeAddresses::default(),
        node_readiness: reconcile::NodeReadiness::default(),
        written: reconcile::WrittenStatuses::default(),
        metrics,
        db,
        lease_sightings: reconcile::LeaseSightings::default(),
        container_starts: reconcile::ContainerStarts::default(),
        restarts: tokio::sync::Mutex::default(),
        rolls: tokio::sync::Mutex::new(HashMap::new()),
        waiting,
        failures: std::sync::Mutex::default(),
        stopped_pods,
        term: writes_end,
        term_deadline,
        dropped_writes,
        draining: stop.clone(),
        clock,
    });
    // What is kept per store goes within a minute of the store's deletion: its metrics and this
    // term's memory of it. When the term ends, all per-store metrics go (a standby must not
    // export a stale picture).
    let pruned = Arc::clone(&context);
    let prune_stop = stop.clone();
    let pruner = tokio::spawn(async move {
        // Not before the caches hold their first lists: empty, they would have every store
        // look deleted (wiping what is kept across terms, such as stopped Pods' replacement
        // spacing).
        let loaded = async {
            cache_loaded(&pruned.stores).await?;
            cache_loaded(&pruned.pods).await
        };
        tokio::select! {
            _ = prune_stop.cancelled() => return,
            loaded = loaded => if loaded.is_err() { return },
        }
        let mut tick = tokio::time::interval_at(
            tokio::time::Instant::now() + Duration::from_secs(60),
            Duration::from_secs(60),
        );
        loop {
            tokio::select! {
                _ = prune_stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            let stores = pruned.stores.state();
            let present: std::collections::HashSet<ObjectRef<PureFlashStore>> = stores
                .iter()
                .map(|s| ObjectRef::from_obj(s.as_ref()))
                .collect();
            let nodes: std::collections::HashSet<&str> =
                stores.iter().map(|s| s.spec.node_name.as_str()).collect();
            pruned.node_addresses.retain(|node| nodes.contains(node));
            pruned.node_readiness.retain(|node| nodes.contains(node));
            // A store recreated under its name with another id exports under the new id only.
            let ids: std::collections::HashMap<ObjectRef<PureFlashStore>, String> = stores
                .iter()
                .map(|s| (ObjectRef::from_obj(s.as_ref()), s.spec.store_id.to_string()))
                .collect();
            pruned.metrics.retain_stores(|labels| {
                ids.get(&ObjectRef::new(&labels.name).within(&labels.namespace))
                    == Some(&labels.store_id)
            });
            pruned.written.retain(|store| present.contains(store));
            pruned
                .lease_sightings
                .retain(|store| present.contains(store));
            pruned.waiting.retain(|store| present.contains(store));
            let pod_uids: std::collections::HashSet<String> = pruned
                .pods
                .state()
                .iter()
                .filter_map(|pod| pod.metadata.uid.clone())
                .collect();
            pruned.container_starts.retain(|uid| pod_uids.contains(uid));
            pruned.stopped_pods.retain(|store| present.contains(store));
            pruned
                .failures
                .lock()
                .expect("failures")
                .retain(|store, _| present.contains(store));
            pruned
                .restarts
                .lock()
                .await
                .retain(|store| present.contains(store));
            pruned
                .rolls
                .lock()
                .await
                .retain(|store, _| present.contains(store));
        }
    });
    let budgets_removed = (!context.settings.disruption_budget).then(|| {
        tokio::spawn(budget::remove_all(
            Arc::clone(&context),
            namespace.clone(),
            stop.clone(),
        ))
    });
    let budgets = context.settings.disruption_budget.then(|| {
        let budget_events = cache::reflector(
            budget_writer,
            watcher(
                api::<PodDisruptionBudget>(&context.client, &namespace),
                watcher::Config::default().labels(pods::OWNED_SELECTOR),
            )
            .default_backoff(),
        );
        let budget_events = without_errors("poddisruptionbudgets", budget_events).map(drop);
        tokio::spawn(budget::keep(
            Arc::clone(&context),
            budget_cache,
            budget_events,
            budget_inputs_rx,
            stop.clone(),
        ))
    });
    let term_metrics = Arc::clone(&context.metrics);
    info!(
        namespace = namespace.as_deref().unwrap_or("(all)"),
        "controller started"
    );
    let shutdown = stop.clone();
    controller
        .reconcile_on(one)
        .reconcile_all_on(all)
        .graceful_shutdown_on(async move { shutdown.cancelled().await })
        .run(reconcile::reconcile, reconcile::error_policy, context)
        .for_each(|result| async move {
            if let Err(error) = result {
                match error {
                    kube::runtime::controller::Error::ObjectNotFound(_) => {}
                    other => warn!(error = %other, "controller"),
                }
            }
        })
        .await;
    forwarder.abort();
    cache_watch.abort();
    for task in budgets.into_iter().chain(budgets_removed) {
        task.abort();
    }
    let _ = pruner.await;
    // Only now: reconciles finishing during the graceful shutdown still set store gauges.
    term_metrics.retain_stores(|_| false);
    info!("controller stopped");
}

/// `events` with its errors logged, not passed on. Each watch retries on its own backoff
/// (`default_backoff`); the controller's trigger streams share one, and an error from any of
/// them (a watch the API server dropped, a relist refused) would pause them all, ZooKeeper's
/// wakes included, for up to 30 s.
fn without_errors<T>(
    watch: &'static str,
    events: impl futures::Stream<Item = Result<T, watcher::Error>>,
) -> impl futures::Stream<Item = Result<T, watcher::Error>> {
    events.filter(move |event| {
        if let Err(error) = event {
            warn!(watch, %error, "watch failed; retrying with backoff");
        }
        std::future::ready(event.is_ok())
    })
}
