//! Benchmark of `pureflash-operator run` at scale: a real ZooKeeper, the Kubernetes API
//! emulator, and the release operator binary as its own process.
//!
//!     cargo bench --bench controller             # 100 and 1000 stores, about 5 minutes
//!     cargo bench --bench controller -- 3000     # other sizes
//!
//! Per size N (N PureFlashStores in one namespace, N stores registered in ZooKeeper):
//! (a) operator start → every store's status reads Online, and the API requests that took;
//! (b) steady state: API requests per reconcile over three requeue periods (10 s each), by verb
//!     and resource, from the emulator's audit log and the operator's reconcile counter;
//! (c) one store's `alive` deleted → its status reads Offline; created again → Online
//!     (p50/p95/max over 25 trials after 5 warm-up, each on another store);
//! (e) mass offline: every Pod is marked Running (its pfs counts for the recovery freeze), then
//!     the ZooKeeper session holding every `alive` closes at once → all N statuses read Offline
//!     (recovery frozen, no Pod deleted); every `alive` registered again → all N Online. Wall
//!     time and the operator's CPU time for each wave.
//! (f) takeover: a new operator process (a new leader) starts with every store's Pod and
//!     ConfigMap in place; the API requests until it has reconciled every store once, and how
//!     long that took.
//!
//! The stores' Pods are not run (no node agent: they stay Pending until (e) sets their status
//! as a kubelet would), so recovery never acts and every figure is the controller's own work. The operator authenticates with a token, so the
//! emulator audits its requests and only its requests. The emulator runs on a runtime thread of
//! its own; it is the API server in every figure, so absolute times include its costs too.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher;
use kube::{Client, Config, ResourceExt};
use kube_emulator::Emulator;
use pureflash_operator::crd::{Phase, PureFlashStore};
use serde_json::json;
use testkit::zookeeper::ZooKeeper;
use tokio::sync::Notify;
use zookeeper_client::{self as zk, Acls, CreateMode};

use common::{median, operator, populate, register_alive, stats, stop};

const CRD: &str = include_str!("../crds/pureflashstore.yaml");
const TOKEN: &str = "bench-operator-token";
const OPERATOR_USER: &str = "bench-operator";
const NODE: &str = "bench-node";
const REQUEUE: Duration = Duration::from_secs(10);
const TRIALS: usize = 25;
const WARMUP: usize = 5;

fn main() {
    let sizes: Vec<u32> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![100, 1000]
    } else {
        sizes
    };
    let api_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("emulator")
        .enable_all()
        .build()
        .expect("emulator runtime");
    let emulator = api_runtime
        .block_on(Emulator::start())
        .expect("emulator starts");
    emulator.add_token(TOKEN, OPERATOR_USER, &["system:masters"]);
    // As on a real cluster, the disruption controller is not part of the API's write path: it
    // trails the Pods and coalesces their changes.
    emulator.set_disruption_lag(Some(kube_emulator::CLUSTER_DISRUPTION_LAG));
    let bench_runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("benchmark runtime");
    let report = bench_runtime.block_on(async {
        eprintln!("starting ZooKeeper…");
        let zk = ZooKeeper::start_for_benchmark();
        let client = setup(&emulator).await;
        let mut report = String::new();
        for stores in sizes {
            report += &one_size(&emulator, &client, &zk, stores).await;
        }
        report
    });
    println!("\n{report}");
}

/// The CRD and the node every store runs on.
async fn setup(emulator: &Emulator) -> Client {
    let config = Config::from_custom_kubeconfig(
        Kubeconfig::from_yaml(&emulator.kubeconfig()).expect("kubeconfig"),
        &KubeConfigOptions::default(),
    )
    .await
    .expect("config");
    let client = Client::try_from(config).expect("client");
    let crd: CustomResourceDefinition = serde_yaml::from_str(CRD).expect("the CRD parses");
    Api::<CustomResourceDefinition>::all(client.clone())
        .create(&PostParams::default(), &crd)
        .await
        .expect("CRD created");
    let nodes: Api<Node> = Api::all(client.clone());
    let node = serde_json::from_value(json!({"metadata": {"name": NODE}})).expect("node");
    nodes
        .create(&PostParams::default(), &node)
        .await
        .expect("node created");
    nodes
        .patch_status(
            NODE,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"addresses": [
                {"type": "InternalIP", "address": "10.0.0.1"},
                {"type": "Hostname", "address": NODE},
            ]}})),
        )
        .await
        .expect("node status");
    client
}

/// A store's phase changes, with when the benchmark's watch saw each.
type Changes = Vec<(Option<Phase>, Instant)>;

/// Every store's phase changes as the benchmark's own watch saw them.
struct Phases {
    by_name: Mutex<HashMap<String, Changes>>,
    changed: Notify,
    api: Api<PureFlashStore>,
}

impl Phases {
    fn watch(client: Client, namespace: &str) -> Arc<Phases> {
        let api: Api<PureFlashStore> = Api::namespaced(client, namespace);
        let phases = Arc::new(Phases {
            by_name: Mutex::default(),
            changed: Notify::new(),
            api: api.clone(),
        });
        let writer = Arc::clone(&phases);
        tokio::spawn(async move {
            let mut events = std::pin::pin!(watcher(api, watcher::Config::default()));
            while let Some(event) = events.next().await {
                let store = match event {
                    Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s)) => s,
                    Ok(_) => continue,
                    Err(error) => {
                        eprintln!("benchmark watch: {error}");
                        continue;
                    }
                };
                let phase = store.status.as_ref().and_then(|s| s.phase);
                let mut by_name = writer.by_name.lock().expect("phases lock");
                let changes = by_name.entry(store.name_any()).or_default();
                if changes.last().is_none_or(|(last, _)| *last != phase) {
                    changes.push((phase, Instant::now()));
                    writer.changed.notify_waiters();
                }
            }
        });
        phases
    }

    fn count(&self, phase: Phase) -> usize {
        let by_name = self.by_name.lock().expect("phases lock");
        by_name
            .values()
            .filter(|changes| changes.last().is_some_and(|(p, _)| *p == Some(phase)))
            .count()
    }

    /// When the first store read `phase` after `since`, if one has.
    fn first_reached(&self, phase: Phase, since: Instant) -> Option<Instant> {
        let by_name = self.by_name.lock().expect("phases lock");
        by_name
            .values()
            .filter_map(|changes| {
                changes
                    .iter()
                    .find_map(|(p, at)| (*p == Some(phase) && *at >= since).then_some(*at))
            })
            .min()
    }

    /// When `name` first read `phase` after `since` (waits for it).
    async fn reached(&self, name: &str, phase: Phase, since: Instant, limit: Duration) -> Instant {
        let reached = self
            .until(limit, || {
                let by_name = self.by_name.lock().expect("phases lock");
                by_name
                    .get(name)?
                    .iter()
                    .find_map(|(p, at)| (*p == Some(phase) && *at >= since).then_some(*at))
            })
            .await;
        match reached {
            Some(at) => at,
            None => {
                let now = self.api.get(name).await.ok().and_then(|s| s.status);
                panic!("{name} never read {phase:?} (the API says {now:?})")
            }
        }
    }

    async fn until<T>(&self, limit: Duration, check: impl Fn() -> Option<T>) -> Option<T> {
        let deadline = Instant::now() + limit;
        loop {
            let changed = self.changed.notified();
            if let Some(value) = check() {
                return Some(value);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            let _ = tokio::time::timeout(left.min(Duration::from_millis(200)), changed).await;
        }
    }
}

async fn one_size(emulator: &Emulator, client: &Client, zk_server: &ZooKeeper, n: u32) -> String {
    eprintln!("{n} stores: registering in ZooKeeper and creating the PureFlashStores…");
    let namespace = format!("bench-{n}");
    let cluster = format!("ctl{n}");
    let admin = zk::Client::connect(&zk_server.connect_string())
        .await
        .expect("ZooKeeper");
    let owner = zk::Client::connect(&zk_server.connect_string())
        .await
        .expect("ZooKeeper");
    populate(&admin, &owner, &cluster, n, &[]).await;

    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": namespace}})).expect("namespace"),
        )
        .await
        .expect("namespace created");
    let stores: Api<PureFlashStore> = Api::namespaced(client.clone(), &namespace);
    for chunk in (1..=n).collect::<Vec<_>>().chunks(50) {
        let created = futures::future::join_all(chunk.iter().map(|id| {
            let store: PureFlashStore = serde_json::from_value(json!({
                "apiVersion": "pureflash.io/v1alpha1",
                "kind": "PureFlashStore",
                "metadata": {"name": format!("store-{id}")},
                "spec": {
                    "storeId": id,
                    "nodeName": NODE,
                    // One node holds them all here, so each store has disks and addresses
                    // of its own.
                    "mngtIp": format!("10.8.{}.{}", id / 250, id % 250 + 1),
                    "ports": [format!("10.9.{}.{}", id / 250, id % 250 + 1)],
                    "repPorts": [format!("10.10.{}.{}", id / 250, id % 250 + 1)],
                    "trays": (0..4).map(|t| json!({"device": format!("/dev/disk/by-id/store-{id}-{t}")})).collect::<Vec<_>>(),
                },
            }))
            .expect("a PureFlashStore");
            let stores = stores.clone();
            async move { stores.create(&PostParams::default(), &store).await }
        }))
        .await;
        for result in created {
            result.expect("PureFlashStore created");
        }
    }
    let phases = Phases::watch(client.clone(), &namespace);
    phases
        .until(Duration::from_secs(60), || {
            (phases.by_name.lock().expect("phases lock").len() == n as usize).then_some(())
        })
        .await
        .expect("the benchmark's watch sees every store");

    // (a) Start → every store Online.
    let kubeconfig = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(kubeconfig.path(), emulator.kubeconfig_with_token(TOKEN)).expect("kubeconfig");
    // A new operator process, its admin address, and the audit position it starts from.
    let launch = || {
        let admin_address = format!("127.0.0.1:{}", testkit::free_port());
        let audited_before = operator_requests(emulator).len();
        let process = KillOnDrop(start_operator(
            kubeconfig.path().to_str().expect("utf-8 path"),
            zk_server,
            &cluster,
            &namespace,
            &admin_address,
        ));
        (process, admin_address, audited_before, Instant::now())
    };
    let (mut process, admin_address, audited_before, started) = launch();
    phases
        .until(Duration::from_secs(600), || {
            (phases.count(Phase::Online) == n as usize).then_some(())
        })
        .await
        .unwrap_or_else(|| panic!("not every store became Online"));
    let all_online = started.elapsed();
    let startup_requests = operator_requests(emulator)[audited_before..].to_vec();
    let repeated = repeated_events(client, &namespace).await;

    // (b) Steady state: requests per reconcile.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let requests_before = operator_requests(emulator);
    let reconciles_before = reconciles(&admin_address).await;
    tokio::time::sleep(3 * REQUEUE).await;
    let requests = operator_requests(emulator)[requests_before.len()..].to_vec();
    let reconciled = reconciles(&admin_address).await - reconciles_before;

    // (c) alive deleted → Offline, created → Online.
    let ephemeral = CreateMode::Ephemeral.with_acls(Acls::anyone_all());
    let mut offline = Vec::new();
    let mut online = Vec::new();
    for trial in 0..WARMUP + TRIALS {
        let id = 1 + (trial as u32 * 37) % n;
        let name = format!("store-{id}");
        let alive = format!("/pureflash/{cluster}/stores/{id}/alive");
        let t0 = Instant::now();
        admin.delete(&alive, None).await.expect("alive deleted");
        let t_offline = phases
            .reached(&name, Phase::Offline, t0, Duration::from_secs(30))
            .await;
        let t1 = Instant::now();
        owner
            .create(&alive, b"", &ephemeral)
            .await
            .expect("alive created");
        let t_online = phases
            .reached(&name, Phase::Online, t1, Duration::from_secs(30))
            .await;
        if trial >= WARMUP {
            offline.push(t_offline.saturating_duration_since(t0));
            online.push(t_online.saturating_duration_since(t1));
        }
    }

    // (e) Mass offline and back.
    mark_pods_running(client, &namespace, n).await;
    let operator_pid = process.0.id();
    let audited_before = operator_requests(emulator).len();
    let (cpu_before, t0) = (cpu_time(operator_pid), Instant::now());
    drop(owner);
    phases
        .until(Duration::from_secs(600), || {
            (phases.count(Phase::Offline) == n as usize).then_some(())
        })
        .await
        .unwrap_or_else(|| panic!("not every store became Offline"));
    let mass_offline = (
        t0.elapsed(),
        cpu_time(operator_pid) - cpu_before,
        first_after(&phases, Phase::Offline, t0),
    );
    let deleted = operator_requests(emulator)[audited_before..]
        .iter()
        .filter(|r| *r == "delete pods")
        .count();
    let owner = zk::Client::connect(&zk_server.connect_string())
        .await
        .expect("ZooKeeper");
    let (cpu_before, t0) = (cpu_time(operator_pid), Instant::now());
    register_alive(&owner, &cluster, &(1..=n).collect::<Vec<_>>()).await;
    phases
        .until(Duration::from_secs(600), || {
            (phases.count(Phase::Online) == n as usize).then_some(())
        })
        .await
        .unwrap_or_else(|| panic!("not every store became Online again"));
    let mass_online = (
        t0.elapsed(),
        cpu_time(operator_pid) - cpu_before,
        first_after(&phases, Phase::Online, t0),
    );
    stop(&mut process.0);

    // (f) Takeover: what a new leader asks of the API before it has looked at every store.
    let (mut process, admin_address, audited_before, started) = launch();
    let deadline = Instant::now() + Duration::from_secs(300);
    let takeover = loop {
        let done = reconciles_if_up(&admin_address).await >= u64::from(n);
        if done {
            break started.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "the new leader did not reconcile every store"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let takeover_requests = operator_requests(emulator)[audited_before..].to_vec();
    stop(&mut process.0);

    let mut out = format!("## {n} stores\n");
    out += &format!(
        "(a) operator start -> all {n} Online: {:.2} s, {} API requests ({:.1} per store)\n",
        all_online.as_secs_f64(),
        startup_requests.len(),
        startup_requests.len() as f64 / f64::from(n),
    );
    out += &breakdown(&startup_requests);
    out += &format!("    Events repeated during the start (reason: count): {repeated}\n");
    out += &format!(
        "(b) steady state over {} s: {reconciled} reconciles, {} API requests, {:.2} per reconcile\n",
        (3 * REQUEUE).as_secs(),
        requests.len(),
        requests.len() as f64 / reconciled.max(1) as f64,
    );
    out += &breakdown(&requests);
    for (what, samples) in [
        ("(c) alive deleted -> Offline", offline),
        ("    alive created -> Online ", online),
    ] {
        let s = stats(samples.clone());
        out += &format!(
            "{what}: p50 {:.2} ms  p95 {:.2} ms  max {:.2} ms  (median {:.2} ms)\n",
            s.p50,
            s.p95,
            s.max,
            median(samples).as_secs_f64() * 1000.0
        );
    }
    out += &format!(
        "(e) all {n} alive gone at once -> all Offline: {:.2} s (first {:.2} s), operator CPU {:.2} s, pods deleted {deleted}\n",
        mass_offline.0.as_secs_f64(),
        mass_offline.2.as_secs_f64(),
        mass_offline.1.as_secs_f64(),
    );
    out += &format!(
        "    all {n} alive back -> all Online: {:.2} s (first {:.2} s), operator CPU {:.2} s\n",
        mass_online.0.as_secs_f64(),
        mass_online.2.as_secs_f64(),
        mass_online.1.as_secs_f64(),
    );
    out += &format!(
        "(f) takeover: a new operator reconciled all {n} in {:.2} s with {} API requests ({:.2} per store)\n",
        takeover.as_secs_f64(),
        takeover_requests.len(),
        takeover_requests.len() as f64 / f64::from(n),
    );
    out += &breakdown(&takeover_requests);
    eprint!("{out}");
    out
}

/// Sets every Pod of `namespace` Running with its pfs container started, as a kubelet would,
/// and waits until the operator has seen it in each store (PodReady).
async fn mark_pods_running(client: &Client, namespace: &str, n: u32) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let listed = pods.list(&Default::default()).await.expect("pods listed");
    assert_eq!(listed.items.len(), n as usize, "one Pod per store");
    // Started now, as a kubelet stamps it: the operator's start grace (`--start-grace`, 30 s)
    // runs from then (from when the operator sees it, whatever the stamp says).
    let started = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now());
    let running = |_: &Pod| {
        Patch::Merge(json!({"status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": started}],
            "containerStatuses": [{
                "name": pureflash_operator::controller::pods::CONTAINER,
                "image": "pfs", "imageID": "", "ready": true, "restartCount": 0,
                "state": {"running": {"startedAt": started}},
            }],
        }}))
    };
    let params = PatchParams::default();
    for chunk in listed.items.chunks(50) {
        for result in futures::future::join_all(chunk.iter().map(|pod| {
            let (pods, params, patch) = (&pods, &params, running(pod));
            async move {
                pods.patch_status(pod.metadata.name.as_deref().expect("named"), params, &patch)
                    .await
            }
        }))
        .await
        {
            result.expect("Pod status patched");
        }
    }
    let stores: Api<PureFlashStore> = Api::namespaced(client.clone(), namespace);
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let listed = stores
            .list(&Default::default())
            .await
            .expect("stores listed");
        let ready = listed
            .items
            .iter()
            .filter(|s| {
                s.status.as_ref().is_some_and(|status| {
                    status
                        .conditions
                        .iter()
                        .any(|c| c.type_ == "PodReady" && c.status == "True")
                })
            })
            .count();
        if ready == n as usize {
            // Every pfs past its start grace, so that offline reads Offline, not Starting:
            // each was seen Running by now, and its grace runs 30 s from then at the latest.
            tokio::time::sleep(Duration::from_secs(31)).await;
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the operator saw {ready} of {n} Pods ready"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// CPU time (user + system) the process `pid` has used so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/<pid>/stat");
    // Fields after the command name (which may hold spaces) follow its closing parenthesis;
    // utime and stime are the 14th and 15th fields of the whole line.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("stat format")
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    // SAFETY: sysconf reads a constant of the running system.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Duration::from_secs_f64(ticks as f64 / per_second as f64)
}

/// How long after `since` the first store read `phase`.
fn first_after(phases: &Phases, phase: Phase, since: Instant) -> Duration {
    phases
        .first_reached(phase, since)
        .map_or(Duration::ZERO, |at| at.saturating_duration_since(since))
}

/// The operator process, killed if the benchmark fails half-way.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_operator(
    kubeconfig: &str,
    zk_server: &ZooKeeper,
    cluster: &str,
    namespace: &str,
    admin_address: &str,
) -> Child {
    let zk = zk_server.connect_string();
    let requeue = format!("{}s", REQUEUE.as_secs());
    operator(&[
        "run",
        "--kubeconfig",
        kubeconfig,
        "--zk",
        &zk,
        "--cluster",
        cluster,
        "--namespace",
        namespace,
        "--lease-namespace",
        namespace,
        "--identity",
        "bench",
        "--admin-address",
        admin_address,
        "--requeue-interval",
        &requeue,
    ])
    .spawn()
    .expect("operator starts")
}

/// The operator's requests so far, as `verb resource[/subresource]`.
fn operator_requests(emulator: &Emulator) -> Vec<String> {
    emulator
        .audit()
        .into_iter()
        .filter(|r| r.user == OPERATOR_USER)
        .map(|r| {
            let group = if r.api_group.is_empty() {
                String::new()
            } else {
                format!(".{}", r.api_group)
            };
            match r.subresource {
                Some(sub) => format!("{} {}{group}/{sub}", r.verb, r.resource),
                None => format!("{} {}{group}", r.verb, r.resource),
            }
        })
        .collect()
}

/// Events recorded more than once (a series), by reason: each one the same news told twice.
async fn repeated_events(client: &Client, namespace: &str) -> String {
    let events: Api<Event> = Api::namespaced(client.clone(), namespace);
    let mut by_reason: BTreeMap<String, usize> = BTreeMap::new();
    for event in events
        .list(&Default::default())
        .await
        .expect("events listed")
        .items
    {
        if event.series.is_some() {
            *by_reason
                .entry(event.reason.unwrap_or_default())
                .or_default() += 1;
        }
    }
    if by_reason.is_empty() {
        return "none".into();
    }
    by_reason
        .iter()
        .map(|(reason, count)| format!("{reason}: {count}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Requests counted by kind, one line each.
fn breakdown(requests: &[String]) -> String {
    let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
    for request in requests {
        *by_kind.entry(request).or_default() += 1;
    }
    by_kind
        .iter()
        .map(|(kind, count)| format!("      {kind:<44} {count}\n"))
        .collect()
}

/// `pureflash_reconcile_total`, or 0 while the admin endpoint is not up yet.
async fn reconciles_if_up(admin_address: &str) -> u64 {
    match tokio::net::TcpStream::connect(admin_address).await {
        Ok(_) => reconciles(admin_address).await,
        Err(_) => 0,
    }
}

/// `pureflash_reconcile_total`, all results.
async fn reconciles(admin_address: &str) -> u64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(admin_address)
        .await
        .expect("admin endpoint");
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .expect("metrics request");
    let mut body = String::new();
    stream
        .read_to_string(&mut body)
        .await
        .expect("metrics response");
    body.lines()
        .filter(|l| l.starts_with("pureflash_reconcile_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}
