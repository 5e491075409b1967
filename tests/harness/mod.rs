//! The end-to-end harness: real ZooKeeper, real MariaDB, a Kubernetes API (the in-repo
//! emulator with its node agent, or a real cluster), and the operator binary as a separate
//! process; plus the helpers tests need (deadlines, DB rows, store faults, ZooKeeper
//! restarts). Every test gets a fresh namespace and its own PureFlash cluster name, and
//! cleans up after itself.
//!
//! Against a real cluster (kind, k3d…), set:
//! - `PUREFLASH_E2E_KUBECONFIG`: the cluster's kubeconfig (the emulator and node agent are
//!   then not used);
//! - `PUREFLASH_E2E_ZK`: a ZooKeeper reachable from this machine, and
//!   `PUREFLASH_E2E_ZK_IN_CLUSTER`: the same ZooKeeper as pods reach it (default: the same);
//! - `PUREFLASH_E2E_PFS_IMAGE`: the pfs simulator image (tests/testkit/Dockerfile), loaded into
//!   the cluster (`kind load docker-image`);
//! - `PUREFLASH_E2E_NODE`: the node pfs Pods run on (default: the first node).
//!
//! The README section "End-to-end tests on kind" walks through it.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use kube_emulator::Emulator;
use serde_json::json;
use testkit::mariadb::MariaDb;
use testkit::node_agent::{NodeAgent, NodeAgentConfig};
use testkit::zookeeper::ZooKeeper;
use zookeeper_client as zk;

/// How long any wait in an e2e test may take before it is a failure (a liveness bound, not a
/// performance target). Longer on a real cluster: its kubelets renew their node Leases every
/// 10 s (the emulated node every 500 ms), which a restart waits to see, and its ZooKeeper may
/// tick slower than the tests' own.
pub fn deadline() -> Duration {
    if std::env::var_os("PUREFLASH_E2E_KUBECONFIG").is_some() {
        Duration::from_secs(180)
    } else {
        Duration::from_secs(60)
    }
}

/// The image the node agent maps to the pfs simulator in emulated mode.
pub const EMULATED_PFS_IMAGE: &str = "pureflash/pfs-sim:e2e";

/// The Kubernetes side of a test.
enum Cluster {
    Emulated {
        emulator: Emulator,
        agent: Option<NodeAgent>,
        work: tempfile::TempDir,
    },
    Real,
}

/// Where ZooKeeper comes from.
enum ZooKeeperAccess {
    Owned(ZooKeeper),
    External {
        from_host: String,
        from_pods: String,
    },
}

pub struct Harness {
    cluster: Cluster,
    pub client: Client,
    kubeconfig: PathBuf,
    _kubeconfig_file: Option<tempfile::NamedTempFile>,
    zookeeper: ZooKeeperAccess,
    /// This test's namespace (created fresh).
    pub namespace: String,
    /// This test's PureFlash cluster name (unique, so tests can share a ZooKeeper).
    pub pf_cluster: String,
    node: String,
    operators: Vec<Operator>,
    /// Operator logs; kept (not deleted) when the test fails.
    logs: Option<tempfile::TempDir>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        if let Some(logs) = self.logs.take() {
            let kept = logs.keep();
            eprintln!("operator logs kept in {}", kept.display());
            print_log_tails(&kept);
        }
        // What the simulated containers printed (a pfs that exits says why on stderr).
        if let Cluster::Emulated { work, .. } = &self.cluster {
            print_log_tails(work.path());
        }
        if let Some(server) = self.zookeeper_server() {
            print_log_tail(&server.log_path());
        }
        // A real cluster outlives the test: its namespace would keep privileged pfs Pods
        // running (some stopped with SIGSTOP). The emulator goes with the test.
        if !self.is_emulated() {
            for operator in &mut self.operators {
                if let Some(mut child) = operator.child.take() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
            let namespace = self.namespace.clone();
            let (ok, _, stderr) =
                self.kubectl(&["delete", "namespace", &namespace, "--wait=false"], None);
            if !ok {
                eprintln!("could not delete test namespace {namespace}: {stderr}");
            }
        }
    }
}

/// Prints the last lines of every `*.log` file under `dir`, for a failed test's output.
fn print_log_tails(dir: &Path) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            print_log_tails(&path);
            continue;
        }
        if path.extension().is_some_and(|ext| ext == "log") {
            print_log_tail(&path);
        }
    }
}

/// Prints the last lines of one log file.
fn print_log_tail(path: &Path) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(60).collect();
    eprintln!("--- last lines of {} ---", path.display());
    for line in tail.into_iter().rev() {
        eprintln!("{line}");
    }
}

/// One operator replica.
struct Operator {
    child: Option<Child>,
    admin: String,
}

fn unique(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id() % 100_000,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The pfs simulator binary built by `cargo test --workspace` (testkit's `pfs-sim`).
pub fn pfs_sim_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>");
    let binary = profile_dir.join("pfs-sim");
    assert!(
        binary.exists(),
        "{} not found: run the tests with `cargo test --workspace` (or `cargo build -p testkit --bin pfs-sim`)",
        binary.display()
    );
    binary
}

impl Harness {
    /// Starts everything for one test: the API (emulated unless `PUREFLASH_E2E_KUBECONFIG`),
    /// ZooKeeper, a fresh namespace.
    pub async fn start(test: &str) -> Harness {
        Self::start_with_cluster_clock(test, 0).await
    }

    /// Like [`Harness::start`], with the emulated cluster's clock (the API server's and the
    /// node's) `offset_ms` milliseconds ahead of this machine's, where the operator runs. A real
    /// cluster keeps its own clock: there the offset is whatever it is, and tests hold anyway.
    pub async fn start_with_cluster_clock(test: &str, offset_ms: i64) -> Harness {
        testkit::init_test_logging();
        let namespace = unique(test);
        let pf_cluster = unique(test);
        let (cluster, client, kubeconfig, kubeconfig_file, node) =
            match std::env::var("PUREFLASH_E2E_KUBECONFIG") {
                Ok(path) => {
                    let config = Config::from_custom_kubeconfig(
                        Kubeconfig::read_from(&path).expect("readable kubeconfig"),
                        &KubeConfigOptions::default(),
                    )
                    .await
                    .expect("usable kubeconfig");
                    let client = Client::try_from(config).expect("client");
                    let node = match std::env::var("PUREFLASH_E2E_NODE") {
                        Ok(node) => node,
                        Err(_) => {
                            let nodes: Api<Node> = Api::all(client.clone());
                            let list = nodes
                                .list(&ListParams::default())
                                .await
                                .expect("list nodes");
                            list.items
                                .first()
                                .and_then(|n| n.metadata.name.clone())
                                .expect("the cluster has a node")
                        }
                    };
                    (Cluster::Real, client, PathBuf::from(path), None, node)
                }
                Err(_) => {
                    let emulator = Emulator::start().await.expect("emulator starts");
                    emulator.set_clock_offset_ms(offset_ms);
                    // Budget statuses trail the Pods, as on a real cluster.
                    emulator.set_disruption_lag(Some(kube_emulator::CLUSTER_DISRUPTION_LAG));
                    let file = tempfile::NamedTempFile::new().expect("temp file");
                    emulator.write_kubeconfig(file.path()).expect("kubeconfig");
                    let config = Config::from_custom_kubeconfig(
                        Kubeconfig::from_yaml(&emulator.kubeconfig()).expect("kubeconfig"),
                        &KubeConfigOptions::default(),
                    )
                    .await
                    .expect("config");
                    let client = Client::try_from(config).expect("client");
                    let work = tempfile::Builder::new()
                        .prefix("pf-e2e-node-")
                        .tempdir()
                        .expect("work dir");
                    let node = "node-1".to_owned();
                    let sim = pfs_sim_binary();
                    let mut agent_config = NodeAgentConfig::new(&node, work.path())
                        .run_image("pureflash/pfs-sim", &[sim.to_str().expect("utf-8 path")])
                        .run_image("pureflash/pureflash", &[sim.to_str().expect("utf-8 path")]);
                    agent_config.clock_offset_ms = offset_ms;
                    let agent = NodeAgent::start(client.clone(), agent_config)
                        .await
                        .expect("node agent starts");
                    let path = file.path().to_owned();
                    (
                        Cluster::Emulated {
                            emulator,
                            agent: Some(agent),
                            work,
                        },
                        client,
                        path,
                        Some(file),
                        node,
                    )
                }
            };
        let zookeeper = match std::env::var("PUREFLASH_E2E_ZK") {
            Ok(from_host) => {
                let from_pods = std::env::var("PUREFLASH_E2E_ZK_IN_CLUSTER")
                    .unwrap_or_else(|_| from_host.clone());
                ZooKeeperAccess::External {
                    from_host,
                    from_pods,
                }
            }
            Err(_) => ZooKeeperAccess::Owned(ZooKeeper::start()),
        };
        // A real cluster's pods would be sent to their own node's loopback: every store test
        // would then time out waiting for a pfs that can never register.
        if matches!(cluster, Cluster::Real) {
            let from_pods = match &zookeeper {
                ZooKeeperAccess::External { from_pods, .. } => from_pods.as_str(),
                ZooKeeperAccess::Owned(_) => panic!(
                    "on a real cluster set PUREFLASH_E2E_ZK (a ZooKeeper this machine reaches) and PUREFLASH_E2E_ZK_IN_CLUSTER (the same as pods reach it): see the README's \"End-to-end tests on kind\""
                ),
            };
            // host:port[,host:port…], hosts as names, IPv4 or [IPv6].
            let loopback = from_pods.split(',').any(|server| {
                let host = server
                    .rsplit_once(':')
                    .map_or(server, |(host, _)| host)
                    .trim_matches(['[', ']']);
                host == "localhost"
                    || host
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            });
            assert!(
                !loopback,
                "PUREFLASH_E2E_ZK_IN_CLUSTER ({from_pods}) is a loopback address, which pods cannot reach: give ZooKeeper's address as pods see it"
            );
        }
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let ns = serde_json::from_value(
            json!({"metadata": {"name": namespace, "labels": {"pureflash.io/e2e": "true"}}}),
        )
        .expect("namespace");
        namespaces
            .create(&PostParams::default(), &ns)
            .await
            .expect("test namespace created");
        Harness {
            cluster,
            client,
            kubeconfig,
            _kubeconfig_file: kubeconfig_file,
            zookeeper,
            namespace,
            pf_cluster,
            node,
            operators: Vec::new(),
            logs: Some(
                tempfile::Builder::new()
                    .prefix("pf-e2e-logs-")
                    .tempdir()
                    .expect("log dir"),
            ),
        }
    }

    pub fn is_emulated(&self) -> bool {
        matches!(self.cluster, Cluster::Emulated { .. })
    }

    /// The emulator, for fault injection (emulated mode only).
    pub fn emulator(&self) -> Option<&Emulator> {
        match &self.cluster {
            Cluster::Emulated { emulator, .. } => Some(emulator),
            Cluster::Real => None,
        }
    }

    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The node pfs Pods are placed on.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Installs a CRD as users do (`kubectl apply`), and waits until its resource is served.
    /// Server-side: tests running at once on one real cluster apply the same CRD, and a
    /// client-side apply that saw none would fail on another's create. The CRD stays (it is
    /// cluster-wide, and other tests may use it).
    pub fn install_crd(&self, manifest: &str, name: &str) {
        let (ok, stdout, stderr) = self.kubectl(
            &["apply", "--server-side", "--force-conflicts", "-f", "-"],
            Some(manifest),
        );
        assert!(ok, "kubectl apply of CRD {name}: {stdout}{stderr}");
        let (ok, stdout, stderr) = self.kubectl(
            &[
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                &format!("crd/{name}"),
            ],
            None,
        );
        assert!(ok, "CRD {name} never established: {stdout}{stderr}");
    }

    /// The image that runs the pfs simulator here.
    pub fn pfs_image(&self) -> String {
        match self.cluster {
            Cluster::Emulated { .. } => EMULATED_PFS_IMAGE.to_owned(),
            Cluster::Real => std::env::var("PUREFLASH_E2E_PFS_IMAGE")
                .unwrap_or_else(|_| "pureflash/pfs-sim:dev".into()),
        }
    }

    /// ZooKeeper as this test process reaches it.
    pub fn zk(&self) -> String {
        match &self.zookeeper {
            ZooKeeperAccess::Owned(server) => server.connect_string(),
            ZooKeeperAccess::External { from_host, .. } => from_host.clone(),
        }
    }

    /// ZooKeeper as pods reach it.
    pub fn zk_for_pods(&self) -> String {
        match &self.zookeeper {
            ZooKeeperAccess::Owned(server) => server.connect_string(),
            ZooKeeperAccess::External { from_pods, .. } => from_pods.clone(),
        }
    }

    /// The owned ZooKeeper server, to stop and restart it (emulated mode, or no external ZK).
    pub fn zookeeper_server(&self) -> Option<&ZooKeeper> {
        match &self.zookeeper {
            ZooKeeperAccess::Owned(server) => Some(server),
            ZooKeeperAccess::External { .. } => None,
        }
    }

    /// A new MariaDB database for this test; returns its URL.
    pub fn database(&self) -> String {
        MariaDb::shared().new_database("e2e")
    }

    pub async fn zk_client(&self) -> zk::Client {
        zk::Client::connect(&self.zk())
            .await
            .expect("ZooKeeper reachable")
    }

    /// Whether store `id` of this test's cluster has its `alive` node.
    pub async fn store_alive(&self, id: u32) -> bool {
        self.alive_stat(id).await.is_some()
    }

    /// Whether store `id` finished registering: its `alive` and every tray's `online` exist,
    /// all in one session. A pfs stopped before the last `online` is still registering, and
    /// one whose session expires then starts over in a new session (the simulator does, as a
    /// failed start would be restarted), unlike a registered one, which never comes back.
    /// `false` also when ZooKeeper does not answer: callers poll.
    pub async fn store_registered(&self, id: u32) -> bool {
        let Ok(client) = zk::Client::connect(&self.zk()).await else {
            return false;
        };
        let base = format!("/pureflash/{}/stores/{id}", self.pf_cluster);
        let Ok(Some(alive)) = client.check_stat(&format!("{base}/alive")).await else {
            return false;
        };
        let Ok(trays) = client.list_children(&format!("{base}/trays")).await else {
            return false;
        };
        for tray in trays {
            match client
                .check_stat(&format!("{base}/trays/{tray}/online"))
                .await
            {
                Ok(Some(online)) if online.ephemeral_owner == alive.ephemeral_owner => {}
                _ => return false,
            }
        }
        true
    }

    /// The session that owns store `id`'s `alive` node, if it exists.
    pub async fn alive_owner(&self, id: u32) -> Option<i64> {
        Some(self.alive_stat(id).await?.ephemeral_owner)
    }

    /// The `alive` node's stat, as ZooKeeper answers it: a failed read (a connection lost on a
    /// loaded machine) is asked again, never taken for "no node".
    async fn alive_stat(&self, id: u32) -> Option<zk::Stat> {
        let path = format!("/pureflash/{}/stores/{id}/alive", self.pf_cluster);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let answer = match zk::Client::connect(&self.zk()).await {
                Ok(client) => client.check_stat(&path).await.map_err(|e| e.to_string()),
                Err(error) => Err(error.to_string()),
            };
            match answer {
                Ok(stat) => return stat,
                Err(error) => {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "ZooKeeper did not answer for {path}: {error}"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// Runs kubectl against this test's API.
    pub fn kubectl(&self, args: &[&str], input: Option<&str>) -> (bool, String, String) {
        use std::io::Write;
        let mut child = kube_emulator::kubectl()
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            // Discovery cached per test: emulators of earlier tests may have had this one's
            // address, with other resources.
            .env("KUBECACHEDIR", self.logs().join("kubectl-cache"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl runs (tools/install-deps installs one in .dev/bin)");
        if let Some(input) = input {
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(input.as_bytes())
                .expect("write stdin");
        }
        drop(child.stdin.take());
        let output = child.wait_with_output().expect("kubectl output");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// Signals the pfs process of `pod` as someone on its node would: `SIGSTOP` hangs the
    /// store (its session expires while the process lives), `SIGCONT` resumes it, `SIGKILL`
    /// crashes it. On a real cluster this goes through `kubectl exec` (the simulator image runs
    /// pfs-sim under tini, so it is not PID 1 and can be stopped).
    pub fn signal_pod(&self, pod: &str, signal: i32) {
        match &self.cluster {
            Cluster::Emulated { agent, .. } => {
                let agent = agent.as_ref().expect("node agent running");
                assert!(
                    agent.signal_pod(&self.namespace, pod, signal),
                    "pod {pod} has no running process"
                );
            }
            Cluster::Real => {
                let name = match signal {
                    libc::SIGSTOP => "STOP",
                    libc::SIGCONT => "CONT",
                    libc::SIGKILL => "KILL",
                    libc::SIGTERM => "TERM",
                    other => panic!("unsupported signal {other}"),
                };
                let (ok, _, stderr) = self.kubectl(
                    &[
                        "exec",
                        "-n",
                        &self.namespace,
                        pod,
                        "--",
                        "pkill",
                        &format!("-{name}"),
                        "pfs-sim",
                    ],
                    None,
                );
                assert!(ok, "kubectl exec pkill failed: {stderr}");
            }
        }
    }

    /// Evicts a pod as the kubelet does under node pressure (its containers killed, the Pod
    /// left `Failed`, reason `Evicted`). Needs the emulator: a real kubelet evicts only under
    /// real pressure.
    pub fn evict_pod(&self, pod: &str, message: &str) {
        let Cluster::Emulated { agent, .. } = &self.cluster else {
            panic!("evict_pod needs the emulated cluster");
        };
        let agent = agent.as_ref().expect("node agent running");
        agent.evict_pod(&self.namespace, pod, message);
    }

    /// Whether any of the processes a pod's containers run now is still running later: a
    /// check of the node's processes, made where the node agent runs them (`None` on a real
    /// cluster, whose nodes a test cannot look into).
    pub fn pod_processes(&self, pod: &str) -> Option<impl Fn() -> bool + use<>> {
        let Cluster::Emulated { agent, .. } = &self.cluster else {
            return None;
        };
        let pids = agent
            .as_ref()
            .expect("node agent running")
            .pids(&self.namespace, pod);
        assert!(!pids.is_empty(), "pod {pod} has no running process");
        Some(move || pids.iter().any(|pid| testkit::node_agent::alive(*pid)))
    }

    /// Has the pfs node's kubelet refuse every new Pod at admission with `reason` and
    /// `message`, or admit them again (`None`). Needs the emulator.
    pub fn refuse_new_pods(&self, refusal: Option<(&str, &str)>) {
        let Cluster::Emulated { agent, .. } = &self.cluster else {
            panic!("refuse_new_pods needs the emulated cluster");
        };
        agent
            .as_ref()
            .expect("node agent running")
            .refuse_new_pods(refusal);
    }

    /// Cuts the pfs node's kubelet (the node agent) off from the API server, or reconnects it:
    /// cut off, it stops watching, reporting and renewing its node Lease while its processes go
    /// on; reconnected, it reports its node and Pods again, and any unreachable taint goes.
    /// Needs the emulator: a real cluster's kubelet cannot be silenced through its API.
    pub async fn set_node_reachable(&self, reachable: bool) {
        let Cluster::Emulated { agent, .. } = &self.cluster else {
            panic!("set_node_reachable needs the emulated cluster");
        };
        let agent = agent.as_ref().expect("node agent running");
        if !reachable {
            agent.set_reachable(false);
            return;
        }
        let nodes: Api<Node> = Api::all(self.client.clone());
        nodes
            .patch(
                &self.node,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"taints": null}})),
            )
            .await
            .expect("untaint the node");
        agent.set_reachable(true);
    }

    /// What the node lifecycle controller does once a silent node's grace period (40–50 s)
    /// has passed: the node's `Ready` turns `Unknown`, it is tainted unreachable, and its Pods'
    /// `Ready` turns `False`.
    pub async fn mark_node_unreachable(&self) {
        self.mark_unreachable(&self.node).await;
    }

    /// [`Self::mark_node_unreachable`] for any node (one the test made, with no agent).
    pub async fn mark_unreachable(&self, node: &str) {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let params = PatchParams::default();
        let now = jiff::Timestamp::now()
            .strftime("%Y-%m-%dT%H:%M:%SZ")
            .to_string();
        let silent = json!({
            "type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown",
            "message": "Kubelet stopped posting node status.",
            "lastHeartbeatTime": now, "lastTransitionTime": now,
        });
        nodes
            .patch_status(
                node,
                &params,
                &Patch::Merge(json!({"status": {"conditions": [silent]}})),
            )
            .await
            .expect("node Ready=Unknown");
        let taint = json!({"key": "node.kubernetes.io/unreachable", "effect": "NoExecute", "timeAdded": now});
        nodes
            .patch(
                node,
                &params,
                &Patch::Merge(json!({"spec": {"taints": [taint]}})),
            )
            .await
            .expect("taint the node");
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let on_node = ListParams::default().fields(&format!("spec.nodeName={node}"));
        for pod in pods.list(&on_node).await.expect("list pods") {
            let mut conditions = pod
                .status
                .and_then(|status| status.conditions)
                .unwrap_or_default();
            for condition in conditions.iter_mut().filter(|c| c.type_ == "Ready") {
                condition.status = "False".into();
            }
            let name = pod.metadata.name.expect("pod name");
            pods.patch_status(
                &name,
                &params,
                &Patch::Merge(json!({"status": {"conditions": conditions}})),
            )
            .await
            .expect("pod Ready=False");
        }
    }

    /// Starts one operator replica as a separate process, managing this test's namespace and
    /// PureFlash cluster, with timings scaled for tests; `extra` adds or overrides flags.
    /// Returns the replica's index. Its log is `operator-<index>.log` in [`Self::logs`].
    pub fn start_operator(&mut self, extra: &[&str]) -> usize {
        let kubeconfig = self.kubeconfig.clone();
        self.start_operator_as(&kubeconfig, extra)
    }

    /// Like [`Self::start_operator`], with another identity's kubeconfig (a ServiceAccount's).
    pub fn start_operator_as(&mut self, kubeconfig: &Path, extra: &[&str]) -> usize {
        let index = self.operators.len();
        let admin = format!("127.0.0.1:{}", testkit::free_port());
        let identity = format!("replica-{index}");
        let kubeconfig = kubeconfig.display().to_string();
        let zk = self.zk();
        let pfs_zk = self.zk_for_pods();
        let mut args: Vec<&str> = vec![
            "run",
            "--kubeconfig",
            &kubeconfig,
            "--zk",
            &zk,
            "--pfs-zk",
            &pfs_zk,
            "--cluster",
            &self.pf_cluster,
            "--namespace",
            &self.namespace,
            "--lease-namespace",
            &self.namespace,
            "--identity",
            &identity,
            "--admin-address",
            &admin,
            "--zk-session-timeout",
            "4s",
            "--resync-interval",
            "5s",
            "--start-grace",
            "3s",
            "--lease-duration",
            "3s",
            "--requeue-interval",
            "10s",
            "--log",
            "info,pureflash_operator=debug,zookeeper_client=warn",
        ];
        // `extra` is `--flag value` pairs; a flag given here replaces the default above.
        for pair in extra.chunks(2) {
            match args.iter().position(|arg| *arg == pair[0]) {
                Some(at) if pair.len() == 2 => args[at + 1] = pair[1],
                _ => args.extend_from_slice(pair),
            }
        }
        let log_path = self.logs().join(format!("operator-{index}.log"));
        let log = std::fs::File::create(&log_path).expect("operator log");
        let child = Command::new(env!("CARGO_BIN_EXE_pureflash-operator"))
            .args(&args)
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("operator starts");
        eprintln!(
            "operator replica {index}: pid {}, admin http://{admin}, log {}",
            child.id(),
            log_path.display()
        );
        self.operators.push(Operator {
            child: Some(child),
            admin,
        });
        index
    }

    /// The process id of replica `index`, while it runs.
    pub fn operator_pid(&self, index: usize) -> u32 {
        self.operators[index]
            .child
            .as_ref()
            .expect("replica running")
            .id()
    }

    /// The admin address (`/metrics`, `/readyz`) of replica `index`.
    pub fn admin(&self, index: usize) -> &str {
        &self.operators[index].admin
    }

    /// Kills replica `index` (SIGKILL: no lease release, no cleanup).
    pub fn kill_operator(&mut self, index: usize) {
        if let Some(mut child) = self.operators[index].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends `signal` to replica `index`: `SIGSTOP` freezes it as a long GC pause or a
    /// suspended VM would (its connections stay open), `SIGCONT` resumes it.
    pub fn signal_operator(&self, index: usize, signal: i32) {
        let child = self.operators[index]
            .child
            .as_ref()
            .expect("replica running");
        let pid = i32::try_from(child.id()).expect("pid");
        // SAFETY: kill(2) with a pid this harness spawned and has not reaped.
        assert_eq!(
            unsafe { libc::kill(pid, signal) },
            0,
            "signal replica {index}"
        );
    }

    /// Stops replica `index` gracefully (SIGTERM) and waits for it, up to
    /// [`OPERATOR_EXIT_PATIENCE`]: one that is still running then is SIGKILLed and the test
    /// fails.
    pub async fn stop_operator(&mut self, index: usize) -> std::process::ExitStatus {
        let mut child = self.operators[index].child.take().expect("replica running");
        terminate(&child);
        let deadline = tokio::time::Instant::now() + OPERATOR_EXIT_PATIENCE;
        match wait_exit(&mut child, deadline, OPERATOR_EXIT_PATIENCE).await {
            Ok(status) => status,
            Err(error) => panic!(
                "operator replica {index} did not stop gracefully: {error} (its log: {})",
                self.logs().join(format!("operator-{index}.log")).display()
            ),
        }
    }

    /// Waits for replica `index` to exit on its own (a startup error) and returns its status.
    pub async fn wait_operator_exit(&mut self, index: usize) -> std::process::ExitStatus {
        let child = self.operators[index]
            .child
            .as_mut()
            .expect("replica running");
        let deadline = std::time::Instant::now() + self::deadline();
        loop {
            if let Some(status) = child.try_wait().expect("operator status") {
                self.operators[index].child = None;
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "operator replica {index} did not exit"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Where operator logs go.
    pub fn logs(&self) -> &Path {
        self.logs
            .as_ref()
            .expect("logs until the harness is dropped")
            .path()
    }

    /// The replica's log so far.
    pub fn operator_log(&self, index: usize) -> String {
        std::fs::read_to_string(self.logs().join(format!("operator-{index}.log")))
            .unwrap_or_default()
    }

    /// Fetches `path` from replica `index`'s admin endpoint: (HTTP code, body).
    pub fn admin_get(&self, index: usize, path: &str) -> Option<(u16, String)> {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(self.admin(index)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let code = response.split_whitespace().nth(1)?.parse().ok()?;
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        Some((code, body))
    }

    /// Deletes the test namespace and stops what the harness started.
    /// An operator that has not exited [`OPERATOR_EXIT_PATIENCE`] after its SIGTERM is
    /// SIGKILLed, and the test fails once the rest is cleaned up.
    pub async fn finish(self) {
        self.finish_within(OPERATOR_EXIT_PATIENCE).await;
    }

    /// [`Self::finish`], with operators given `patience` to exit after their SIGTERM.
    pub async fn finish_within(mut self, patience: Duration) {
        let mut running: Vec<(usize, Child)> = self
            .operators
            .iter_mut()
            .enumerate()
            .filter_map(|(index, operator)| Some((index, operator.child.take()?)))
            .collect();
        for (_, child) in &running {
            terminate(child);
        }
        // One deadline for all: they were all told at once.
        let deadline = tokio::time::Instant::now() + patience;
        let mut stuck = Vec::new();
        for (index, child) in &mut running {
            if let Err(error) = wait_exit(child, deadline, patience).await {
                stuck.push(format!("replica {index}: {error}"));
            }
        }
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let _ = namespaces
            .delete(&self.namespace, &DeleteParams::default())
            .await;
        if let Cluster::Emulated { agent, .. } = &mut self.cluster
            && let Some(agent) = agent.take()
        {
            agent.stop().await;
        }
        assert!(
            stuck.is_empty(),
            "operators did not stop gracefully: {} (logs: {})",
            stuck.join("; "),
            self.logs().display()
        );
    }
}

/// How long an operator may take to exit after SIGTERM (it releases its Lease and ends its
/// ZooKeeper session: a second or two) before that is a failure.
pub const OPERATOR_EXIT_PATIENCE: Duration = Duration::from_secs(30);

/// Sends SIGTERM to `child`.
fn terminate(child: &Child) {
    let pid = i32::try_from(child.id()).expect("pid");
    // SAFETY: kill(2) with a pid this harness spawned and has not reaped.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
}

/// Waits for `child` to exit, polling rather than blocking (a blocking wait would hold a
/// runtime worker that the in-process emulator needs meanwhile), until `deadline`, `patience`
/// after its SIGTERM; then SIGKILLs and reaps it, and says so.
async fn wait_exit(
    child: &mut Child,
    deadline: tokio::time::Instant,
    patience: Duration,
) -> Result<std::process::ExitStatus, String> {
    let pid = child.id();
    let why = loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(None) => break format!("still ran {patience:?} after SIGTERM"),
            Err(error) => break format!("could not be waited for ({error})"),
        }
    };
    let _ = child.kill();
    // A SIGKILLed process exits at once; reaped the same way, with a bound of its own.
    let reap_deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let reaped = loop {
        match child.try_wait() {
            Ok(Some(_)) => break "SIGKILLed",
            Ok(None) if tokio::time::Instant::now() < reap_deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            _ => break "SIGKILLed, and not even that ended it",
        }
    };
    Err(format!("pid {pid} {why}: {reaped}"))
}

/// The tests (of tests/operator.rs, then tests/e2e.rs) that need the emulator: its node agent
/// (a real kubelet cannot be silenced, made to evict or to refuse Pods through the API), or its
/// power to hold a request or inject faults. On a real cluster they fail, saying what they
/// need: the README's real-cluster command `--skip`s each of them, and those of
/// [`OWNED_ZOOKEEPER_ONLY`].
pub const EMULATOR_ONLY: &[&str] = &[
    "an_evicted_pod_is_replaced_and_the_store_comes_back",
    "replacements_of_pods_a_node_refuses_are_spaced_out",
    "a_store_on_a_silent_node_is_restarted_once_the_node_is_back",
    "a_serving_store_on_a_node_out_of_contact_is_rolled_once_the_node_reports",
    "a_leader_stopped_gracefully_releases_the_lease_even_after_a_conflict",
    "the_admin_endpoint_answers_until_the_lease_is_released",
    "a_store_whose_new_pod_is_refused_says_why_and_recovers_once_allowed",
    "a_former_leaders_late_status_write_does_not_undo_its_successors",
    "a_standby_writes_nothing_but_its_bids_for_the_lease",
    "a_drain_waits_for_other_nodes_and_a_drained_node_gets_no_pods_until_uncordoned",
    "a_rollout_evicts_and_waits_while_the_disruption_budget_refuses",
    "a_node_that_died_with_most_stores_does_not_freeze_recovery_elsewhere",
    // tests/e2e.rs
    "the_node_agent_retries_a_failed_status_write",
    "a_deleted_pods_late_status_write_does_not_land_on_its_successor",
];
/// The tests that need a ZooKeeper the harness owns (one they can stop), which a real cluster's
/// (`PUREFLASH_E2E_ZK`, external) is not.
pub const OWNED_ZOOKEEPER_ONLY: &[&str] =
    &["zookeeper_down_means_unknown_and_no_restart_then_recovery_resumes"];

/// A harness for a test that needs the emulator (one of [`EMULATOR_ONLY`]); on a real cluster
/// the test fails, saying so, rather than pass without testing anything.
pub async fn start_emulated(test: &str, name: &str) -> Harness {
    assert!(
        EMULATOR_ONLY.contains(&name),
        "{name} is not in EMULATOR_ONLY"
    );
    let harness = Harness::start(test).await;
    if !harness.is_emulated() {
        harness.finish().await;
        panic!(
            "{name} needs the API emulator (its node agent or its fault injection), which a real \
             cluster does not have: exclude it with `--skip {name}` (the README's \
             \"End-to-end tests on kind\" skips every such test)"
        );
    }
    harness
}

/// Polls `check` until it returns `Some`, or fails the test naming `what`.
pub async fn wait_for<T>(what: &str, check: impl AsyncFnMut() -> Option<T>) -> T {
    wait_for_within(what, deadline(), check).await
}

/// [`wait_for`] with its own patience, for a wait that sits out timers of its own (backoffs,
/// session expiries) adding up to a good part of [`deadline`].
pub async fn wait_for_within<T>(
    what: &str,
    patience: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = std::time::Instant::now() + patience;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {patience:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A pfs.conf as the operator will generate it (cluster, ZooKeeper, identity, disks, ports).
pub fn pfs_conf(cluster: &str, zk: &str, store_id: u32) -> String {
    format!(
        "[cluster]\nname={cluster}\n[zookeeper]\nip={zk}\n[afs]\nmngt_ip=10.8.0.{store_id}\nid={store_id}\n\
         [tray.0]\ndev=/dev/nvme0n1\n[port.0]\nip=10.9.0.{store_id}\n[rep_port.0]\nip=10.10.0.{store_id}\n"
    )
}

impl Drop for Operator {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A PureFlashStore manifest for store `id` on `node`, with its own addresses (so several
/// stores on one simulated node do not share a management IP) and quick recovery timings.
pub fn store_manifest(name: &str, id: u32, node: &str, image: &str, grace_seconds: u32) -> String {
    format!(
        "apiVersion: pureflash.io/v1alpha1
kind: PureFlashStore
metadata:
  name: {name}
spec:
  storeId: {id}
  nodeName: {node}
  image: {image}
  mngtIp: 10.8.0.{id}
  ports: [10.9.0.{id}]
  repPorts: [10.10.0.{id}]
  trays:
    - device: /dev/disk/by-id/store-{id}-0
    - device: /dev/disk/by-id/store-{id}-1
  recovery:
    offlineGracePeriodSeconds: {grace_seconds}
    backoffInitialSeconds: 2
    backoffMaxSeconds: 8
"
    )
}
