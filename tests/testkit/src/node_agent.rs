//! A kwok-style kubelet for the API emulator: Pods bound to its node are "run" as local
//! processes, configured from the Pod exactly as a container would be, and their status is
//! reported through the API.
//!
//! - Images map to local programs ([`ImageRule`]): the program stands in for the image's
//!   entrypoint; a container's `command[1..]` and `args` follow it. An unmapped image waits in
//!   `ErrImagePull`.
//! - Volumes (configMap, secret, emptyDir; hostPath and others as empty directories) are
//!   written under a per-pod directory, and every argument or environment value that names a
//!   path under a mount is rewritten to the file's real location: a container's view of its
//!   filesystem, without a chroot.
//! - Environment: `value`, `fieldRef`, `configMapKeyRef`, `secretKeyRef`, `envFrom`.
//! - Readiness like the kubelet's: `ContainersReady` says whether every container runs, and
//!   `Ready` also needs each of the Pod's `readinessGates` to have its condition `True` in the
//!   status (written by a controller); otherwise `Ready` is `False` with reason
//!   `ReadinessGatesNotReady`. A change of such a condition is reported at once. Status writes
//!   are strategic merge patches of the conditions the kubelet owns, merged by `type`: other
//!   writers' conditions (a readiness gate's, `DisruptionTarget`) stay.
//! - Lifecycle like the kubelet: Running once started; an exited process restarts per
//!   `restartPolicy` with `restartCount` + 1 after a growing back-off (CrashLoopBackOff
//!   between); a graceful delete sends SIGTERM, waits the grace period (1 s at the least, the
//!   kubelet's floor), SIGKILLs, and once the processes are gone deletes the Pod with grace 0
//!   and a uid precondition. A Pod removed from the API at once (a force delete, grace 0) is
//!   stopped the same way with its own `terminationGracePeriodSeconds`, as the kubelet does:
//!   its processes may outlive it, next to a new Pod of the same name.
//! - Eviction ([`NodeAgent::evict_pod`]), as the kubelet's eviction manager does under node
//!   pressure: the containers are killed and the Pod is left in phase `Failed`, reason
//!   `Evicted`; like every Pod in a terminal phase it is never run again.
//! - Admission ([`NodeAgent::refuse_new_pods`]): while set, a new Pod is not run but left
//!   `Failed` with the given reason, as the kubelet does with a Pod it cannot admit
//!   (`OutOfcpu`, `OutOfpods`, a node shutting down).
//! - A node cut off from the API server ([`NodeAgent::set_reachable`]): its processes go on and
//!   exited containers still restart, but it sees no Pod changes (a Pod deleted meanwhile keeps
//!   running) and posts no status until it is reachable again; then it catches up, reports
//!   every Pod and its node `Ready`, as a kubelet does after a partition.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime};

use base64::Engine;
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Node, Pod, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::process::signal;

/// Which local program runs a container image.
#[derive(Clone, Debug)]
pub struct ImageRule {
    /// An image repository (`ghcr.io/pureflash/pfs-sim`, matching any tag or digest), an exact
    /// image reference, or `*` for every image.
    pub image: String,
    /// The program and its leading arguments.
    pub command: Vec<String>,
}

impl ImageRule {
    fn matches(&self, image: &str) -> bool {
        self.image == "*"
            || self.image == image
            || image
                .strip_prefix(&self.image)
                .is_some_and(|rest| rest.starts_with(':') || rest.starts_with('@'))
    }
}

/// Settings of one simulated node.
#[derive(Clone, Debug)]
pub struct NodeAgentConfig {
    pub node_name: String,
    pub images: Vec<ImageRule>,
    /// Where pod directories (volumes, logs) are made.
    pub work_dir: PathBuf,
    /// The node's address; host-network pods get it as their pod IP.
    pub node_ip: String,
    /// First and longest wait before restarting a container that exited.
    pub restart_backoff: (Duration, Duration),
    /// How often the node's Lease in `kube-node-lease` is renewed. Like a kubelet's (every
    /// 10 s of a 40 s Lease), the Lease's duration is four times this, in whole seconds.
    pub lease_renew: Duration,
    /// The node's clock − the machine's, in milliseconds: the times it writes (Lease renewals,
    /// container start and finish) follow it. A kubelet's clock is in step with its cluster's,
    /// so a test that sets the emulator's clock apart sets this to the same offset.
    pub clock_offset_ms: i64,
}

impl NodeAgentConfig {
    pub fn new(node_name: &str, work_dir: &Path) -> NodeAgentConfig {
        NodeAgentConfig {
            node_name: node_name.to_owned(),
            images: Vec::new(),
            work_dir: work_dir.to_owned(),
            node_ip: "127.0.0.1".into(),
            restart_backoff: (Duration::from_millis(500), Duration::from_secs(5)),
            lease_renew: Duration::from_millis(500),
            clock_offset_ms: 0,
        }
    }

    /// What the node's clock says.
    pub fn now(&self) -> SystemTime {
        let magnitude = Duration::from_millis(self.clock_offset_ms.unsigned_abs());
        if self.clock_offset_ms >= 0 {
            SystemTime::now() + magnitude
        } else {
            SystemTime::now() - magnitude
        }
    }

    pub fn run_image(mut self, image: &str, command: &[&str]) -> NodeAgentConfig {
        self.images.push(ImageRule {
            image: image.to_owned(),
            command: command.iter().map(|c| (*c).to_owned()).collect(),
        });
        self
    }
}

/// The shortest grace the kubelet gives a terminating Pod's containers to stop: its pod
/// workers pass the Pod's grace as an override, at least 1 s (`calculateEffectiveGracePeriod`),
/// which replaces the 2 s floor of `killContainer`.
const MINIMUM_GRACE_SECONDS: i64 = 1;

/// Container processes by pod, for tests that act on them directly (`SIGSTOP` a store).
type Processes = std::sync::Arc<std::sync::Mutex<HashMap<(String, String), Vec<u32>>>>;

/// A running node agent.
pub struct NodeAgent {
    shutdown: CancellationToken,
    task: JoinHandle<()>,
    processes: Processes,
    reachable: watch::Sender<bool>,
    evictions: mpsc::UnboundedSender<Eviction>,
    refusal: watch::Sender<Option<Refusal>>,
}

/// Why new Pods are refused at admission: the status `reason` and `message` they get.
pub type Refusal = (String, String);

/// A Pod to evict: namespace, name, and the message its status gets.
type Eviction = (String, String, String);

impl NodeAgent {
    /// Registers the Node and starts running the Pods bound to it.
    pub async fn start(client: Client, config: NodeAgentConfig) -> kube::Result<NodeAgent> {
        register_node(&client, &config).await?;
        std::fs::create_dir_all(&config.work_dir).map_err(|e| kube::Error::Service(Box::new(e)))?;
        let shutdown = CancellationToken::new();
        let processes = Processes::default();
        let (reachable, reachable_now) = watch::channel(true);
        let (evictions, evictions_rx) = mpsc::unbounded_channel();
        let (refusal, refusal_rx) = watch::channel(None);
        tokio::spawn(renew_lease(
            client.clone(),
            config.clone(),
            shutdown.clone(),
            reachable_now.clone(),
        ));
        let task = tokio::spawn(run(
            client,
            config,
            shutdown.clone(),
            processes.clone(),
            reachable_now,
            evictions_rx,
            refusal_rx,
        ));
        Ok(NodeAgent {
            shutdown,
            task,
            processes,
            reachable,
            evictions,
            refusal,
        })
    }

    /// Cuts the node off from the API server (`false`) or reconnects it (`true`). What the
    /// control plane makes of a silent node (its `Ready` condition going `Unknown`) is the
    /// caller's to play: the agent is the kubelet, not the node lifecycle controller.
    pub fn set_reachable(&self, reachable: bool) {
        self.reachable.send_replace(reachable);
    }

    /// Sends `signal` to the processes of a pod's containers, as an administrator on the node
    /// would (`SIGSTOP` hangs a store, `SIGCONT` resumes it, `SIGKILL` crashes it). Returns
    /// whether the pod has running processes here.
    pub fn signal_pod(&self, namespace: &str, pod: &str, sig: i32) -> bool {
        let processes = self.processes.lock().expect("processes lock");
        let pids = processes
            .get(&(namespace.to_owned(), pod.to_owned()))
            .cloned()
            .unwrap_or_default();
        for pid in &pids {
            signal(*pid, sig);
        }
        !pids.is_empty()
    }

    /// The processes of a pod's containers, while it has any running here.
    pub fn pids(&self, namespace: &str, pod: &str) -> Vec<u32> {
        let processes = self.processes.lock().expect("processes lock");
        processes
            .get(&(namespace.to_owned(), pod.to_owned()))
            .cloned()
            .unwrap_or_default()
    }

    /// Evicts a pod as the kubelet does under node pressure: its containers are killed and it
    /// is left `Failed` with reason `Evicted` and `message`, never to run again. What becomes
    /// of the Pod object is up to its controller.
    pub fn evict_pod(&self, namespace: &str, pod: &str, message: &str) {
        let _ = self
            .evictions
            .send((namespace.to_owned(), pod.to_owned(), message.to_owned()));
    }

    /// Refuses every new Pod at admission with `reason` and `message` (`None`: admits again).
    /// Pods already running are left alone.
    pub fn refuse_new_pods(&self, refusal: Option<(&str, &str)>) {
        self.refusal
            .send_replace(refusal.map(|(reason, message)| (reason.to_owned(), message.to_owned())));
    }

    /// Stops the agent; every container process is killed, as when a node loses power.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}

async fn register_node(client: &Client, config: &NodeAgentConfig) -> kube::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": config.node_name, "labels": {"kubernetes.io/hostname": config.node_name, "kubernetes.io/os": "linux", "type": "kwok"}},
    }))
    .expect("valid node");
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e),
    }
    let now = crate_time(config.now());
    let status = json!({"status": {
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kwok-style node agent is posting ready status", "lastHeartbeatTime": now, "lastTransitionTime": now}],
        "addresses": [{"type": "InternalIP", "address": config.node_ip}, {"type": "Hostname", "address": config.node_name}],
        "nodeInfo": {"kubeletVersion": "v1.33.0", "kubeProxyVersion": "v1.33.0", "containerRuntimeVersion": "emulator://1", "operatingSystem": "linux", "architecture": "amd64", "osImage": "node agent", "kernelVersion": "", "machineID": "", "systemUUID": "", "bootID": ""},
        "capacity": {"cpu": "32", "memory": "128Gi", "pods": "110"},
        "allocatable": {"cpu": "32", "memory": "128Gi", "pods": "110"},
    }});
    nodes
        .patch_status(
            &config.node_name,
            &PatchParams::default(),
            &Patch::Merge(&status),
        )
        .await?;
    Ok(())
}

/// Keeps the node's Lease in `kube-node-lease` renewed while the node is in contact, as the
/// kubelet's heartbeat does.
async fn renew_lease(
    client: Client,
    config: NodeAgentConfig,
    shutdown: CancellationToken,
    reachable: watch::Receiver<bool>,
) {
    let leases: Api<Lease> = Api::namespaced(client, "kube-node-lease");
    let params = PatchParams::apply("kubelet").force();
    let duration_seconds = (config.lease_renew * 4).as_secs_f64().ceil().max(1.0) as i32;
    loop {
        if *reachable.borrow() {
            let now = humantime::format_rfc3339_micros(config.now()).to_string();
            let lease = json!({
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": config.node_name, "namespace": "kube-node-lease"},
                "spec": {"holderIdentity": config.node_name, "leaseDurationSeconds": duration_seconds, "renewTime": now},
            });
            if let Err(error) = leases
                .patch(&config.node_name, &params, &Patch::Apply(&lease))
                .await
            {
                debug!(%error, "node lease renewal failed");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(config.lease_renew) => {}
        }
    }
}

fn crate_time(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

/// What the agent tells a pod's task.
enum PodSignal {
    Updated(Box<Pod>),
    /// The Pod is gone from the API (force-deleted): kill now.
    Deleted,
    /// Evicted with this message: kill now, report `Failed`.
    Evict(String),
}

async fn run(
    client: Client,
    config: NodeAgentConfig,
    shutdown: CancellationToken,
    processes: Processes,
    mut reachable: watch::Receiver<bool>,
    mut evictions: mpsc::UnboundedReceiver<Eviction>,
    refusal: watch::Receiver<Option<Refusal>>,
) {
    let pods: Api<Pod> = Api::all(client.clone());
    let watch_config =
        watcher::Config::default().fields(&format!("spec.nodeName={}", config.node_name));
    let mut events = watcher::watcher(pods, watch_config).boxed();
    let mut tasks: HashMap<String, (mpsc::UnboundedSender<PodSignal>, JoinHandle<()>)> =
        HashMap::new();
    let mut seen_in_relist: Option<HashSet<String>> = None;
    // (namespace, name) → uid of the Pods this node runs, for evictions by name.
    let mut uids: HashMap<(String, String), String> = HashMap::new();
    loop {
        if !*reachable.borrow_and_update() {
            // Cut off: no Pod changes reach the node until it is back.
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = reachable.wait_for(|reachable| *reachable) => {}
            }
            if let Err(error) = register_node(&client, &config).await {
                warn!(%error, "node agent could not report its node ready again");
            }
        }
        let event = tokio::select! {
            Ok(()) = reachable.changed() => continue,
            _ = shutdown.cancelled() => break,
            Some((namespace, name, message)) = evictions.recv() => {
                let task = uids.get(&(namespace, name)).and_then(|uid| tasks.get(uid));
                if let Some((sender, _)) = task {
                    let _ = sender.send(PodSignal::Evict(message));
                }
                continue;
            }
            event = events.next() => event,
        };
        let Some(event) = event else { break };
        let event = match event {
            Ok(event) => event,
            Err(error) => {
                debug!(%error, "node agent watch error (retrying)");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        match event {
            Event::Init => seen_in_relist = Some(HashSet::new()),
            Event::InitApply(pod) | Event::Apply(pod) => {
                let uid = pod.uid().unwrap_or_default();
                uids.insert(
                    (pod.namespace().unwrap_or_default(), pod.name_any()),
                    uid.clone(),
                );
                if let Some(seen) = seen_in_relist.as_mut() {
                    seen.insert(uid.clone());
                }
                tasks.retain(|_, (_, task)| !task.is_finished());
                match tasks.get(&uid) {
                    Some((sender, _)) => {
                        let _ = sender.send(PodSignal::Updated(Box::new(pod)));
                    }
                    // A Pod in a terminal phase is never run again.
                    None if pod.metadata.deletion_timestamp.is_none() && !is_terminal(&pod) => {
                        let refused = refusal.borrow().clone();
                        if let Some((reason, message)) = refused {
                            // Retried on its own: the node goes on meanwhile.
                            let (client, config) = (client.clone(), config.clone());
                            tokio::spawn(async move {
                                reject(&client, &pod, &reason, &message, &config).await;
                            });
                            continue;
                        }
                        let (sender, receiver) = mpsc::unbounded_channel();
                        let task = tokio::spawn(run_pod(
                            client.clone(),
                            config.clone(),
                            pod,
                            receiver,
                            processes.clone(),
                            reachable.clone(),
                        ));
                        tasks.insert(uid, (sender, task));
                    }
                    // Being deleted, and nothing of it runs here (deleted before it was run,
                    // or while the agent was down): nothing to stop, it is removed.
                    None if pod.metadata.deletion_timestamp.is_some() => {
                        let client = client.clone();
                        tokio::spawn(async move { remove_stopped(&client, &pod).await });
                    }
                    None => {}
                }
            }
            Event::InitDone => {
                if let Some(seen) = seen_in_relist.take() {
                    for (uid, (sender, _)) in &tasks {
                        if !seen.contains(uid) {
                            let _ = sender.send(PodSignal::Deleted);
                        }
                    }
                }
            }
            Event::Delete(pod) => {
                if let Some((sender, _)) = tasks.get(&pod.uid().unwrap_or_default()) {
                    let _ = sender.send(PodSignal::Deleted);
                }
            }
        }
    }
    // Power off: the pods' channels close, and their processes are killed at once.
    for (_, (sender, task)) in tasks {
        drop(sender);
        let _ = task.await;
    }
}

/// Removes a Pod whose containers are stopped, as the kubelet's status manager does once it
/// can be deleted: with grace 0, and only that very Pod (uid precondition).
async fn remove_stopped(client: &Client, pod: &Pod) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: pod.uid(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    let (pods, name, params) = (&pods, &pod.name_any(), &params);
    write_for_pod(
        client,
        pod,
        "the final delete of the pod",
        None,
        move || async move { pods.delete(name, params).await.map(drop) },
    )
    .await;
}

/// What the kubelet writes of a Pod it cannot admit: `Failed`, never run.
async fn reject(client: &Client, pod: &Pod, reason: &str, message: &str, config: &NodeAgentConfig) {
    info!(pod = %pod.name_any(), reason, "node agent: refusing pod at admission");
    let pods: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
    let status = json!({
        // A precondition, as the kubelet's status patches carry: never another Pod's status.
        "metadata": {"uid": pod.uid()},
        "status": {
            "phase": "Failed", "reason": reason, "message": message,
            "startTime": crate_time(config.now()),
        },
    });
    let (pods, name, status) = (&pods, &pod.name_any(), &status);
    write_for_pod(client, pod, "refusing the pod", None, move || async move {
        pods.patch_status(name, &PatchParams::default(), &Patch::Merge(status))
            .await
            .map(drop)
    })
    .await;
}

/// The first wait before a failed write about a Pod is tried again; it doubles up to
/// [`POD_WRITE_RETRY_MAX`], for [`POD_WRITE_PATIENCE`] at most.
const POD_WRITE_RETRY_FIRST: Duration = Duration::from_millis(50);
const POD_WRITE_RETRY_MAX: Duration = Duration::from_secs(1);
const POD_WRITE_PATIENCE: Duration = Duration::from_secs(10);

/// Makes a write about `pod` (its status, its final delete), retrying a failure as the
/// kubelet's status manager does: after a short, growing wait, for a bounded time, while that
/// very Pod (its uid) still exists and, when `reachable` is given, the node is in contact (a
/// node cut off reports again once back). `write` must be guarded by the Pod's uid, so that it
/// never lands on a new Pod of the same name.
async fn write_for_pod<Write>(
    client: &Client,
    pod: &Pod,
    what: &str,
    reachable: Option<&watch::Receiver<bool>>,
    mut write: impl FnMut() -> Write,
) where
    Write: Future<Output = Result<(), kube::Error>>,
{
    let name = pod.name_any();
    let uid = pod.uid().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
    let deadline = Instant::now() + POD_WRITE_PATIENCE;
    let mut wait = POD_WRITE_RETRY_FIRST;
    loop {
        let error = match write().await {
            Ok(()) => return,
            Err(error) => error,
        };
        // Gone, or another Pod of that name now (a uid precondition failed): nothing to write.
        let gone = match &error {
            kube::Error::Api(status) if status.code == 404 => true,
            _ => match pods.get_opt(&name).await {
                Ok(found) => found.is_none_or(|found| found.uid().as_deref() != Some(&uid)),
                Err(_) => false,
            },
        };
        if gone {
            debug!(%error, pod = %name, %uid, "node agent: {what}: the pod is gone");
            return;
        }
        if reachable.is_some_and(|reachable| !*reachable.borrow()) {
            debug!(%error, pod = %name, "node agent: {what} failed; cut off now");
            return;
        }
        if Instant::now() + wait > deadline {
            warn!(%error, pod = %name, "node agent: {what} failed; giving up after {POD_WRITE_PATIENCE:?}");
            return;
        }
        debug!(%error, pod = %name, "node agent: {what} failed; retrying in {wait:?}");
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(POD_WRITE_RETRY_MAX);
    }
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// One container's process and history.
struct ContainerRun {
    spec: Container,
    pid: Option<u32>,
    /// Bumped at each start, so exits of earlier processes are recognised as such.
    generation: u64,
    restart_count: i32,
    started_at: Option<String>,
    waiting: Option<(String, String)>,
    last_terminated: Option<Value>,
    /// The last process's end, while its restart is due: as the kubelet, the container's state
    /// until it backs off (then its last state), and counted as a restart only once the next
    /// process starts.
    exited: Option<Value>,
    terminated: Option<Value>,
    restart_at: Option<Instant>,
    backoff: Duration,
}

/// A process exit: container index, generation, exit code.
type Exit = (usize, u64, i32);

struct PodRun {
    client: Client,
    config: NodeAgentConfig,
    pod: Pod,
    dir: PathBuf,
    /// Mount path in the container → real directory.
    mounts: Vec<(String, PathBuf)>,
    containers: Vec<ContainerRun>,
    exits: mpsc::UnboundedSender<Exit>,
    start_time: String,
    processes: Processes,
    reachable: watch::Receiver<bool>,
    /// Why the kubelet stopped the Pod for good: `(reason, message)` of its status.
    stopped: Option<(String, String)>,
}

async fn run_pod(
    client: Client,
    config: NodeAgentConfig,
    pod: Pod,
    mut signals: mpsc::UnboundedReceiver<PodSignal>,
    processes: Processes,
    reachable: watch::Receiver<bool>,
) {
    let mut reconnected = reachable.clone();
    let uid = pod.uid().unwrap_or_default();
    let (exits, mut exited) = mpsc::unbounded_channel();
    let containers = pod
        .spec
        .as_ref()
        .map(|s| s.containers.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|spec| ContainerRun {
            spec,
            pid: None,
            generation: 0,
            restart_count: 0,
            started_at: None,
            waiting: Some(("ContainerCreating".into(), String::new())),
            last_terminated: None,
            exited: None,
            terminated: None,
            restart_at: None,
            backoff: config.restart_backoff.0,
        })
        .collect();
    let dir = config.work_dir.join(&uid);
    let start_time = crate_time(config.now());
    let mut run = PodRun {
        client,
        config,
        pod,
        dir,
        mounts: Vec::new(),
        containers,
        exits,
        start_time,
        processes,
        reachable,
        stopped: None,
    };
    info!(pod = %run.pod.name_any(), namespace = %run.pod.namespace().unwrap_or_default(), "node agent: starting pod");

    // Volumes first; like the kubelet, retry until their sources exist.
    loop {
        match run.materialize_volumes(false).await {
            Ok(()) => break,
            Err(reason) => {
                debug!(%reason, "volumes not ready");
                run.report().await;
                tokio::select! {
                    signal = signals.recv() => if !run.on_signal(signal, &mut signals).await { return },
                    _ = tokio::time::sleep(Duration::from_millis(300)) => {}
                }
            }
        }
    }
    for index in 0..run.containers.len() {
        run.start(index).await;
    }
    run.report().await;
    loop {
        let next_restart = run.containers.iter().filter_map(|c| c.restart_at).min();
        let restart_due = async {
            match next_restart {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            signal = signals.recv() => if !run.on_signal(signal, &mut signals).await { return },
            Some((index, generation, code)) = exited.recv() => run.on_exit(index, generation, code).await,
            Ok(()) = reconnected.changed() => {
                if *reconnected.borrow_and_update() {
                    // What happened while cut off is reported now.
                    run.report().await;
                }
            }
            _ = restart_due => {
                let now = Instant::now();
                if run.containers.iter().any(|c| c.restart_at.is_some_and(|at| at <= now))
                    && let Err(error) = run.materialize_volumes(true).await
                {
                    debug!(%error, "volumes not refreshed; the containers read what they had");
                }
                for index in 0..run.containers.len() {
                    if run.containers[index].restart_at.is_some_and(|at| at <= now) {
                        run.containers[index].restart_at = None;
                        run.start(index).await;
                    }
                }
                run.report().await;
            }
        }
    }
}

impl PodRun {
    fn namespace(&self) -> String {
        self.pod.namespace().unwrap_or_default()
    }

    /// Handles a signal; false when the pod's life here is over. `signals`: the ones that
    /// may come while the containers are being stopped.
    async fn on_signal(
        &mut self,
        signal: Option<PodSignal>,
        signals: &mut mpsc::UnboundedReceiver<PodSignal>,
    ) -> bool {
        match signal {
            // The agent stops: the node loses power.
            None => {
                self.kill_all(libc::SIGKILL);
                self.forget_processes();
                false
            }
            // Gone from the API at once: the kubelet still stops the containers gracefully,
            // with the Pod's own grace period (a force delete does not make it a SIGKILL).
            Some(PodSignal::Deleted) => {
                let grace = self
                    .pod
                    .spec
                    .as_ref()
                    .and_then(|spec| spec.termination_grace_period_seconds)
                    .unwrap_or(30);
                let _ = self.stop_containers(grace, signals).await;
                false
            }
            Some(PodSignal::Evict(message)) => {
                info!(pod = %self.pod.name_any(), "node agent: evicting pod");
                self.kill_all(libc::SIGKILL);
                self.forget_processes();
                let now = crate_time(self.config.now());
                for container in &mut self.containers {
                    container.restart_at = None;
                    container.waiting = None;
                    container.terminated = Some(json!({
                        "exitCode": 137, "reason": "Error",
                        "startedAt": container.started_at, "finishedAt": now,
                    }));
                }
                self.stopped = Some(("Evicted".into(), message));
                self.report().await;
                false
            }
            Some(PodSignal::Updated(pod)) => {
                self.pod = *pod;
                if self.pod.metadata.deletion_timestamp.is_some() {
                    self.terminate(signals).await;
                    return false;
                }
                // The stored Ready is not what the Pod's conditions make it (a controller
                // wrote a readiness gate's condition, or another writer changed Ready): put
                // right now, as the kubelet's `NeedToReconcilePodReadiness` does on an update.
                if self.ready_stale() {
                    self.report().await;
                }
                true
            }
        }
    }

    fn forget_processes(&mut self) {
        let pids: Vec<u32> = self
            .containers
            .iter_mut()
            .filter_map(|c| c.pid.take())
            .collect();
        let key = (self.namespace(), self.pod.name_any());
        let mut processes = self.processes.lock().expect("processes lock");
        // Not those of a new Pod of the same name that started meanwhile.
        if processes.get(&key).is_some_and(|listed| *listed == pids) {
            processes.remove(&key);
        }
    }

    fn kill_all(&mut self, sig: i32) {
        for container in &self.containers {
            if let Some(pid) = container.pid {
                signal(pid, sig);
            }
        }
    }

    /// Graceful deletion: the containers stopped, then the Pod removed.
    async fn terminate(&mut self, signals: &mut mpsc::UnboundedReceiver<PodSignal>) {
        let grace = self
            .pod
            .metadata
            .deletion_grace_period_seconds
            .unwrap_or(30);
        // Not from a node that lost its power meanwhile.
        if self.stop_containers(grace, signals).await {
            remove_stopped(&self.client, &self.pod).await;
        }
    }

    /// Stops the containers as the kubelet does: SIGTERM, the grace period (at least the
    /// kubelet's 1 s floor) for them to exit, SIGKILL, and then waits until they are gone. A
    /// deletion asked again meanwhile with a shorter grace period (the API server takes it)
    /// shortens the wait, as it does the kubelet's; an eviction ends it, and so does the agent
    /// stopping (the node losing power), after which this returns false.
    async fn stop_containers(
        &mut self,
        grace_seconds: i64,
        signals: &mut mpsc::UnboundedReceiver<PodSignal>,
    ) -> bool {
        let grace_of =
            |seconds: i64| Duration::from_secs(seconds.max(MINIMUM_GRACE_SECONDS) as u64);
        let grace = grace_of(grace_seconds);
        info!(pod = %self.pod.name_any(), grace = grace.as_secs(), "node agent: stopping pod");
        self.kill_all(libc::SIGTERM);
        let mut deadline = Instant::now() + grace;
        let running = |run: &Self| run.containers.iter().any(|c| c.pid.is_some_and(alive));
        let mut listening = true;
        while running(self) && Instant::now() < deadline {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                signal = signals.recv(), if listening => match signal {
                    Some(PodSignal::Updated(pod)) => {
                        if let Some(seconds) = pod.metadata.deletion_grace_period_seconds {
                            deadline = deadline.min(Instant::now() + grace_of(seconds));
                        }
                        self.pod = *pod;
                    }
                    Some(PodSignal::Evict(_)) => deadline = Instant::now(),
                    Some(PodSignal::Deleted) => {}
                    None => {
                        listening = false;
                        deadline = Instant::now();
                    }
                },
            }
        }
        self.kill_all(libc::SIGKILL);
        while running(self) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.forget_processes();
        listening
    }

    /// Writes the Pod's ConfigMap and Secret volumes from their sources, and where each
    /// container mounts them. `refresh`: the kubelet updating the volumes of a running Pod
    /// (before a container restarts in place here, so that it reads what it would read on a
    /// node, where the kubelet does it within about a minute): a volume mounted through a
    /// `subPath` is never updated, and one whose source is gone keeps its files.
    async fn materialize_volumes(&mut self, refresh: bool) -> Result<(), String> {
        let namespace = self.namespace();
        let spec = self.pod.spec.clone().unwrap_or_default();
        let by_sub_path: std::collections::BTreeSet<&str> = spec
            .containers
            .iter()
            .flat_map(|c| c.volume_mounts.as_deref().unwrap_or_default())
            .filter(|m| m.sub_path.as_deref().is_some_and(|s| !s.is_empty()))
            .map(|m| m.name.as_str())
            .collect();
        let mut volume_dirs = BTreeMap::new();
        for volume in spec.volumes.clone().unwrap_or_default() {
            let dir = self.dir.join("volumes").join(&volume.name);
            if refresh && by_sub_path.contains(volume.name.as_str()) {
                volume_dirs.insert(volume.name.clone(), dir);
                continue;
            }
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            let files: BTreeMap<String, Vec<u8>> = if let Some(source) = &volume.config_map {
                let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &namespace);
                match api.get_opt(&source.name).await.map_err(|e| e.to_string())? {
                    Some(cm) => {
                        let mut files: BTreeMap<String, Vec<u8>> = cm
                            .data
                            .unwrap_or_default()
                            .into_iter()
                            .map(|(k, v)| (k, v.into_bytes()))
                            .collect();
                        files.extend(
                            cm.binary_data
                                .unwrap_or_default()
                                .into_iter()
                                .map(|(k, v)| (k, v.0)),
                        );
                        select_items(
                            files,
                            source
                                .items
                                .as_deref()
                                .unwrap_or_default()
                                .iter()
                                .map(|i| (i.key.clone(), i.path.clone()))
                                .collect(),
                        )
                    }
                    None if source.optional == Some(true) || refresh => BTreeMap::new(),
                    None => return Err(format!("configmap \"{}\" not found", source.name)),
                }
            } else if let Some(source) = &volume.secret {
                let name = source.secret_name.clone().unwrap_or_default();
                let api: Api<Secret> = Api::namespaced(self.client.clone(), &namespace);
                match api.get_opt(&name).await.map_err(|e| e.to_string())? {
                    Some(secret) => {
                        let files = secret
                            .data
                            .unwrap_or_default()
                            .into_iter()
                            .map(|(k, v)| (k, v.0))
                            .collect();
                        select_items(
                            files,
                            source
                                .items
                                .as_deref()
                                .unwrap_or_default()
                                .iter()
                                .map(|i| (i.key.clone(), i.path.clone()))
                                .collect(),
                        )
                    }
                    None if source.optional == Some(true) || refresh => BTreeMap::new(),
                    None => return Err(format!("secret \"{name}\" not found")),
                }
            } else {
                BTreeMap::new()
            };
            for (path, content) in files {
                let file = dir.join(&path);
                if let Some(parent) = file.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
                }
                std::fs::write(&file, content).map_err(|e| e.to_string())?;
            }
            volume_dirs.insert(volume.name.clone(), dir);
        }
        self.mounts.clear();
        for container in &spec.containers {
            for mount in container.volume_mounts.as_deref().unwrap_or_default() {
                if let Some(dir) = volume_dirs.get(&mount.name) {
                    let target = match mount.sub_path.as_deref().filter(|s| !s.is_empty()) {
                        Some(sub) => dir.join(sub),
                        None => dir.clone(),
                    };
                    self.mounts.push((mount.mount_path.clone(), target));
                }
            }
        }
        // Longest mount paths first, so nested mounts win.
        self.mounts
            .sort_by_key(|(path, _)| std::cmp::Reverse(path.len()));
        Ok(())
    }

    /// A path as the container sees it → where the file really is.
    fn translate(&self, text: &str) -> String {
        for (mount_path, dir) in &self.mounts {
            let mount = mount_path.trim_end_matches('/');
            if text == mount {
                return dir.display().to_string();
            }
            if let Some(rest) = text.strip_prefix(mount).and_then(|r| r.strip_prefix('/')) {
                return dir.join(rest).display().to_string();
            }
        }
        text.to_owned()
    }

    async fn environment(&self, container: &Container) -> Result<Vec<(String, String)>, String> {
        let namespace = self.namespace();
        let mut env = vec![
            ("PATH".to_owned(), std::env::var("PATH").unwrap_or_default()),
            ("HOSTNAME".to_owned(), self.pod.name_any()),
        ];
        let config_maps: Api<ConfigMap> = Api::namespaced(self.client.clone(), &namespace);
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &namespace);
        for source in container.env_from.as_deref().unwrap_or_default() {
            let prefix = source.prefix.clone().unwrap_or_default();
            if let Some(r) = &source.config_map_ref
                && let Some(cm) = config_maps
                    .get_opt(&r.name)
                    .await
                    .map_err(|e| e.to_string())?
            {
                env.extend(
                    cm.data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (format!("{prefix}{k}"), v)),
                );
            }
            if let Some(r) = &source.secret_ref
                && let Some(secret) = secrets.get_opt(&r.name).await.map_err(|e| e.to_string())?
            {
                env.extend(secret.data.unwrap_or_default().into_iter().map(|(k, v)| {
                    (
                        format!("{prefix}{k}"),
                        String::from_utf8_lossy(&v.0).into_owned(),
                    )
                }));
            }
        }
        for var in container.env.as_deref().unwrap_or_default() {
            let value = match (&var.value, &var.value_from) {
                (Some(value), _) => value.clone(),
                (None, Some(from)) => {
                    if let Some(field) = &from.field_ref {
                        self.field(&field.field_path)
                    } else if let Some(key) = &from.config_map_key_ref {
                        let cm = config_maps
                            .get_opt(&key.name)
                            .await
                            .map_err(|e| e.to_string())?;
                        match cm
                            .and_then(|cm| cm.data)
                            .and_then(|d| d.get(&key.key).cloned())
                        {
                            Some(value) => value,
                            None if key.optional == Some(true) => continue,
                            None => {
                                return Err(format!(
                                    "configmap {}/{} not found",
                                    key.name, key.key
                                ));
                            }
                        }
                    } else if let Some(key) = &from.secret_key_ref {
                        let secret = secrets
                            .get_opt(&key.name)
                            .await
                            .map_err(|e| e.to_string())?;
                        match secret
                            .and_then(|s| s.data)
                            .and_then(|d| d.get(&key.key).cloned())
                        {
                            Some(value) => String::from_utf8_lossy(&value.0).into_owned(),
                            None if key.optional == Some(true) => continue,
                            None => {
                                return Err(format!("secret {}/{} not found", key.name, key.key));
                            }
                        }
                    } else {
                        String::new()
                    }
                }
                (None, None) => String::new(),
            };
            env.push((var.name.clone(), self.translate(&value)));
        }
        Ok(env)
    }

    /// A `fieldRef` value.
    fn field(&self, path: &str) -> String {
        let pod = serde_json::to_value(&self.pod).unwrap_or_default();
        let value = match path {
            "status.podIP" | "status.hostIP" => return self.pod_ip(),
            _ => pod
                .pointer(&format!("/{}", path.replace('.', "/")))
                .cloned()
                .unwrap_or(Value::Null),
        };
        match value {
            Value::String(s) => s,
            Value::Null => String::new(),
            other => other.to_string(),
        }
    }

    fn pod_ip(&self) -> String {
        let host_network = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.host_network)
            .unwrap_or(false);
        if host_network {
            self.config.node_ip.clone()
        } else {
            // A stable fake pod address from the uid.
            let uid = self.pod.uid().unwrap_or_default();
            let byte = |i: usize| uid.as_bytes().get(i).copied().unwrap_or(0) as u32;
            format!("10.244.{}.{}", byte(0) % 250, byte(1) % 250 + 2)
        }
    }

    /// Starts container `index` (or records why it cannot start).
    async fn start(&mut self, index: usize) {
        let spec = self.containers[index].spec.clone();
        let image = spec.image.clone().unwrap_or_default();
        let Some(rule) = self
            .config
            .images
            .iter()
            .find(|r| r.matches(&image))
            .cloned()
        else {
            self.containers[index].waiting = Some((
                "ErrImagePull".into(),
                format!("the node agent has no program for image {image:?}"),
            ));
            return;
        };
        let env = match self.environment(&spec).await {
            Ok(env) => env,
            Err(message) => {
                self.containers[index].waiting =
                    Some(("CreateContainerConfigError".into(), message));
                self.containers[index].restart_at = Some(Instant::now() + Duration::from_secs(1));
                return;
            }
        };
        let mut argv: Vec<String> = rule.command.clone();
        argv.extend(
            spec.command
                .as_deref()
                .unwrap_or_default()
                .iter()
                .skip(1)
                .map(|a| self.translate(a)),
        );
        argv.extend(
            spec.args
                .as_deref()
                .unwrap_or_default()
                .iter()
                .map(|a| self.translate(a)),
        );
        let Some((program, args)) = argv.split_first() else {
            return;
        };
        let log = self.dir.join(format!("{}.log", spec.name));
        let _ = std::fs::create_dir_all(&self.dir);
        let output = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log);
        let mut command = tokio::process::Command::new(program);
        command
            .args(args)
            .env_clear()
            .envs(env)
            .stdin(Stdio::null())
            .current_dir(&self.dir)
            // A test that panics never stops its agent: its processes end with the runtime
            // (which drops the task waiting on them) instead of outliving the test run.
            .kill_on_drop(true);
        if let Ok(out) = output {
            let err = out.try_clone().ok();
            command.stdout(out);
            if let Some(err) = err {
                command.stderr(err);
            }
        }
        let container = &mut self.containers[index];
        match command.spawn() {
            Ok(mut child) => {
                container.generation += 1;
                container.pid = child.id();
                container.started_at = Some(crate_time(self.config.now()));
                container.waiting = None;
                container.terminated = None;
                if let Some(exited) = container.exited.take() {
                    container.restart_count += 1;
                    container.last_terminated = Some(exited);
                }
                let (exits, generation) = (self.exits.clone(), container.generation);
                tokio::spawn(async move {
                    let code = match child.wait().await {
                        Ok(status) => status.code().unwrap_or_else(|| {
                            128 + std::os::unix::process::ExitStatusExt::signal(&status)
                                .unwrap_or(9)
                        }),
                        Err(_) => 255,
                    };
                    let _ = exits.send((index, generation, code));
                });
                info!(container = %spec.name, program = %program, pid = ?container.pid, "node agent: container started");
            }
            Err(error) => {
                warn!(%error, program = %program, "node agent: cannot start container");
                container.waiting = Some(("RunContainerError".into(), error.to_string()));
                container.restart_at = Some(Instant::now() + container.backoff);
            }
        }
    }

    async fn on_exit(&mut self, index: usize, generation: u64, code: i32) {
        let policy = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.clone())
            .unwrap_or_else(|| "Always".into());
        let backoff_max = self.config.restart_backoff.1;
        let container = &mut self.containers[index];
        if generation != container.generation {
            return;
        }
        container.pid = None;
        let terminated = json!({
            "exitCode": code,
            "reason": if code == 0 { "Completed" } else { "Error" },
            "startedAt": container.started_at,
            "finishedAt": crate_time(self.config.now()),
            "containerID": format!("emulator://{}-{}", container.spec.name, generation),
        });
        let restart = policy == "Always" || (policy == "OnFailure" && code != 0);
        info!(container = %container.spec.name, code, restart, "node agent: container exited");
        if restart {
            // The kubelet restarts a container the first time at once (its state shows the
            // end meanwhile), later ones after a back-off (CrashLoopBackOff); the count grows
            // as the next process starts.
            container.exited = Some(terminated);
            if container.restart_count == 0 && container.last_terminated.is_none() {
                container.restart_at = Some(Instant::now());
            } else {
                container.waiting = Some((
                    "CrashLoopBackOff".into(),
                    format!(
                        "back-off {:?} restarting failed container",
                        container.backoff
                    ),
                ));
                container.restart_at = Some(Instant::now() + container.backoff);
                container.backoff = (container.backoff * 2).min(backoff_max);
            }
        } else {
            container.terminated = Some(terminated);
        }
        self.report().await;
    }

    /// Records which processes run this pod's containers.
    fn publish_processes(&self) {
        let key = (self.namespace(), self.pod.name_any());
        let pids: Vec<u32> = self.containers.iter().filter_map(|c| c.pid).collect();
        let mut processes = self.processes.lock().expect("processes lock");
        if pids.is_empty() {
            processes.remove(&key);
        } else {
            processes.insert(key, pids);
        }
    }

    /// The Pod's readiness gates and the status of each one's condition, if it has one.
    fn readiness_gates(&self) -> Vec<(String, Option<String>)> {
        let conditions = self
            .pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_deref())
            .unwrap_or_default();
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.readiness_gates.as_deref())
            .unwrap_or_default()
            .iter()
            .map(|gate| {
                let status = conditions
                    .iter()
                    .find(|c| c.type_ == gate.condition_type)
                    .map(|c| c.status.clone());
                (gate.condition_type.clone(), status)
            })
            .collect()
    }

    /// Whether the stored `Ready` condition differs, in status or message, from the one the
    /// Pod's containers and readiness gates make now.
    fn ready_stale(&self) -> bool {
        let status = self.pod.status.as_ref();
        let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
        let [_, (ready, _, message)] = self.readiness(phase);
        let stored = status
            .and_then(|s| s.conditions.as_deref())
            .and_then(|all| all.iter().find(|c| c.type_ == "Ready"));
        stored.is_none_or(|c| (c.status == "True") != ready || c.message != message)
    }

    /// The `ContainersReady` and `Ready` conditions as the kubelet generates them (status,
    /// reason, message): `GenerateContainersReadyCondition` and `GeneratePodReadyCondition`.
    fn readiness(&self, phase: &str) -> [(bool, Option<String>, Option<String>); 2] {
        let unready: Vec<&str> = self
            .containers
            .iter()
            .filter(|c| c.pid.is_none() || c.waiting.is_some())
            .map(|c| c.spec.name.as_str())
            .collect();
        let containers = match phase {
            "Succeeded" => (false, Some("PodCompleted".to_owned()), None),
            "Failed" => (false, Some("PodFailed".to_owned()), None),
            _ if self.containers.is_empty() => (false, None, None),
            _ if !unready.is_empty() => (
                false,
                Some("ContainersNotReady".to_owned()),
                Some(format!(
                    "containers with unready status: [{}]",
                    unready.join(" ")
                )),
            ),
            _ => (true, None, None),
        };
        if !containers.0 {
            return [containers.clone(), containers];
        }
        let gates: Vec<String> = self
            .readiness_gates()
            .into_iter()
            .filter_map(|(gate, status)| match status.as_deref() {
                None => Some(format!(
                    "corresponding condition of pod readiness gate \"{gate}\" does not exist."
                )),
                Some("True") => None,
                Some(other) => Some(format!(
                    "the status of pod readiness gate \"{gate}\" is not \"True\", but {other}"
                )),
            })
            .collect();
        let ready = if gates.is_empty() {
            (true, None, None)
        } else {
            (
                false,
                Some("ReadinessGatesNotReady".to_owned()),
                Some(gates.join(", ")),
            )
        };
        [containers, ready]
    }

    /// Posts the pod's status, like the kubelet's status manager (not while cut off).
    async fn report(&self) {
        self.publish_processes();
        if !*self.reachable.borrow() {
            return;
        }
        let now = crate_time(self.config.now());
        let statuses: Vec<Value> = self
            .containers
            .iter()
            .map(|c| {
                let (state, last) = if let Some(terminated) = &c.terminated {
                    (
                        json!({"terminated": terminated}),
                        c.last_terminated.as_ref(),
                    )
                } else if let Some((reason, message)) = &c.waiting {
                    (
                        json!({"waiting": {"reason": reason, "message": message}}),
                        c.exited.as_ref().or(c.last_terminated.as_ref()),
                    )
                } else if let Some(exited) = c.exited.as_ref().filter(|_| c.pid.is_none()) {
                    (json!({"terminated": exited}), c.last_terminated.as_ref())
                } else {
                    (
                        json!({"running": {"startedAt": c.started_at}}),
                        c.last_terminated.as_ref(),
                    )
                };
                let running = c.pid.is_some() && c.waiting.is_none();
                let mut status = json!({
                    "name": c.spec.name,
                    "image": c.spec.image,
                    "imageID": format!("emulator://{}", c.spec.image.clone().unwrap_or_default()),
                    "ready": running,
                    "started": running,
                    "restartCount": c.restart_count,
                    "state": state,
                    "lastState": last.map_or(json!({}), |t| json!({"terminated": t})),
                });
                if running {
                    status["containerID"] =
                        json!(format!("emulator://{}-{}", c.spec.name, c.generation));
                }
                status
            })
            .collect();
        let finished = self.containers.iter().all(|c| c.terminated.is_some());
        let phase = if finished {
            if self
                .containers
                .iter()
                .all(|c| c.terminated.as_ref().and_then(|t| t["exitCode"].as_i64()) == Some(0))
            {
                "Succeeded"
            } else {
                "Failed"
            }
        } else if self.containers.iter().any(|c| c.generation > 0) {
            "Running"
        } else {
            "Pending"
        };
        // A condition's transition time moves only when its status does
        // (`updateLastTransitionTime`); reason and message are set or cleared (null), as the
        // patch merges into the stored condition of the same type.
        let known = self
            .pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        let condition =
            |kind: &str, (ok, reason, message): (bool, Option<String>, Option<String>)| {
                let status = if ok { "True" } else { "False" };
                let since = known
                    .iter()
                    .find(|c| c.type_ == kind && c.status == status)
                    .and_then(|c| c.last_transition_time.as_ref())
                    .map_or_else(|| now.clone(), |t| crate_time(SystemTime::from(t.0)));
                json!({"type": kind, "status": status, "lastProbeTime": null, "lastTransitionTime": since, "reason": reason, "message": message})
            };
        let [containers_ready, ready] = self.readiness(phase);
        let ip = self.pod_ip();
        let mut status = json!({
            // A precondition, as the kubelet's status patches carry: a task of a Pod deleted
            // meanwhile never writes over a new Pod of the same name.
            "metadata": {"uid": self.pod.uid()},
            "status": {
            "phase": phase,
            "conditions": [
                condition("PodScheduled", (true, None, None)),
                condition("Initialized", (true, None, None)),
                condition("ContainersReady", containers_ready),
                condition("Ready", ready),
            ],
            "hostIP": self.config.node_ip, "hostIPs": [{"ip": self.config.node_ip}],
            "podIP": ip, "podIPs": [{"ip": ip}],
            "startTime": self.start_time,
            "containerStatuses": statuses,
        }});
        if let Some((reason, message)) = &self.stopped {
            status["status"]["reason"] = json!(reason);
            status["status"]["message"] = json!(message);
        }
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace());
        let (pods, name, status) = (&pods, &self.pod.name_any(), &status);
        write_for_pod(
            &self.client,
            &self.pod,
            "the status update",
            Some(&self.reachable),
            move || async move {
                pods.patch_status(name, &PatchParams::default(), &Patch::Strategic(status))
                    .await
                    .map(drop)
            },
        )
        .await;
    }
}

fn select_items(
    files: BTreeMap<String, Vec<u8>>,
    items: Vec<(String, String)>,
) -> BTreeMap<String, Vec<u8>> {
    if items.is_empty() {
        return files;
    }
    items
        .into_iter()
        .filter_map(|(key, path)| files.get(&key).map(|content| (path, content.clone())))
        .collect()
}

/// Whether a process runs (exists and is not a zombie).
pub fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
}

/// Decodes base64 as secrets carry it (for callers building secrets by hand).
pub fn decode_base64(text: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap_or_default()
}
