//! The demo (`tools/demo`): on one machine, a real ZooKeeper, the Kubernetes API emulator with a
//! simulated node running pfs simulators as its Pods, and the operator; then one store hangs
//! (SIGSTOP: its ZooKeeper session expires while the process lives, the situation people fix by
//! hand with `kill -9`) and `kubectl get pfstores` shows it go Offline and come back Online
//! after the operator's automatic restart.
//!
//! Built and run by tools/demo; it expects `pureflash-operator` and `pfs-sim` next to its own
//! directory (target/<profile>/). `--keep` leaves everything running until Ctrl-C, for your own
//! `kubectl --kubeconfig <printed path> …`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube_emulator::Emulator;
use testkit::node_agent::{NodeAgent, NodeAgentConfig};
use testkit::zookeeper::ZooKeeper;

#[derive(Debug, Parser)]
#[command(about = "pureflash-operator demo: a store hangs and the operator brings it back")]
struct Args {
    /// Keep everything running after the demo, until Ctrl-C.
    #[arg(long)]
    keep: bool,
    /// Stores to run.
    #[arg(long, default_value_t = 3)]
    stores: u32,
}

const NAMESPACE: &str = "pureflash";
const NODE: &str = "demo-node";
const CLUSTER: &str = "demo";

/// A child process killed when the demo ends.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let bin_dir = std::env::current_exe()?
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .ok_or("cannot locate target/<profile>/")?;
    let operator_bin = require(&bin_dir, "pureflash-operator")?;
    let pfs_sim = require(&bin_dir, "pfs-sim")?;
    let work = tempfile::Builder::new()
        .prefix("pureflash-demo-")
        .tempdir()?;

    step("starting ZooKeeper");
    let zookeeper = ZooKeeper::start();
    say(&format!("ZooKeeper on {}", zookeeper.connect_string()));

    step("starting the Kubernetes API emulator and a simulated node");
    let emulator = Emulator::start().await?;
    let kubeconfig = work.path().join("kubeconfig");
    emulator.write_kubeconfig(&kubeconfig)?;
    say(&format!(
        "API on {}; try: {} --kubeconfig {} get pfstores -n {NAMESPACE}",
        emulator.url(),
        kube_emulator::kubectl().get_program().to_string_lossy(),
        kubeconfig.display()
    ));
    let config = kube::Config::from_custom_kubeconfig(
        Kubeconfig::from_yaml(&emulator.kubeconfig())?,
        &KubeConfigOptions::default(),
    )
    .await?;
    let client = kube::Client::try_from(config)?;
    let sim = pfs_sim.to_str().ok_or("non UTF-8 path")?;
    let agent = NodeAgent::start(
        client,
        NodeAgentConfig::new(NODE, &work.path().join("node"))
            .run_image("pureflash/pureflash", &[sim]),
    )
    .await?;

    let kubectl = Kubectl(kubeconfig.clone());
    step("kubectl apply -f crds/ and the PureFlashStores");
    let crd = concat!(env!("CARGO_MANIFEST_DIR"), "/crds/pureflashstore.yaml");
    kubectl.run(&["apply", "-f", crd], None)?;
    kubectl.run(&["create", "namespace", NAMESPACE], None)?;
    kubectl.run(
        &["apply", "-n", NAMESPACE, "-f", "-"],
        Some(&stores_manifest(args.stores)),
    )?;

    step("starting the operator");
    let log = std::fs::File::create(work.path().join("operator.log"))?;
    let admin = format!("127.0.0.1:{}", testkit::free_port());
    let zk = zookeeper.connect_string();
    let _operator = Process(
        Command::new(&operator_bin)
            .args(["run", "--kubeconfig"])
            .arg(&kubeconfig)
            .args(["--zk", &zk, "--cluster", CLUSTER, "--namespace", NAMESPACE])
            .args(["--lease-namespace", NAMESPACE, "--admin-address", &admin])
            // Demo timings: seconds instead of minutes.
            .args(["--start-grace", "3s", "--zk-session-timeout", "4s"])
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?,
    );
    say(&format!(
        "operator log: {}; metrics: http://{admin}/metrics",
        work.path().join("operator.log").display()
    ));

    let mut table = Table::default();
    step("waiting for every store to register in ZooKeeper");
    table
        .watch(&kubectl, Duration::from_secs(60), |rows| {
            rows.len() == args.stores as usize && rows.iter().all(|r| r.phase == "Online")
        })
        .await?;

    let victim = "store-2";
    step(&format!(
        "hanging {victim}: SIGSTOP its pfs (the process lives, its ZooKeeper session expires)"
    ));
    if !agent.signal_pod(NAMESPACE, &format!("{victim}-pfs"), libc::SIGSTOP) {
        return Err(format!("{victim}'s pfs is not running").into());
    }
    table
        .watch(&kubectl, Duration::from_secs(60), |rows| {
            rows.iter()
                .any(|r| r.name == victim && r.phase == "Offline")
        })
        .await?;
    step(&format!(
        "{victim} is OFFLINE; after its grace period the operator kills its pfs (deletes its Pod) and recreates the Pod"
    ));
    table
        .watch(&kubectl, Duration::from_secs(90), |rows| {
            rows.iter()
                .any(|r| r.name == victim && r.phase == "Online" && r.restarts == "1")
        })
        .await?;
    step(&format!(
        "{victim} is back Online after one automatic restart"
    ));
    let describe = kubectl.run(&["describe", "pfstore", "-n", NAMESPACE, victim], None)?;
    if let Some(events) = describe.split("Events:").nth(1) {
        println!("Events of {victim}:{events}");
    }

    if args.keep {
        step("running until Ctrl-C");
        tokio::signal::ctrl_c().await?;
    }
    agent.stop().await;
    Ok(())
}

fn require(dir: &Path, name: &str) -> Result<PathBuf, String> {
    let path = dir.join(name);
    if path.exists() {
        Ok(path)
    } else {
        Err(format!(
            "{} not found: run the demo with tools/demo (it builds it)",
            path.display()
        ))
    }
}

fn step(text: &str) {
    println!("\n==> {text}");
}

fn say(text: &str) {
    println!("    {text}");
}

fn stores_manifest(count: u32) -> String {
    (1..=count)
        .map(|id| {
            format!(
                "apiVersion: pureflash.io/v1alpha1
kind: PureFlashStore
metadata:
  name: store-{id}
spec:
  storeId: {id}
  nodeName: {NODE}
  mngtIp: 10.8.0.{id}
  ports: [10.9.0.{id}]
  repPorts: [10.10.0.{id}]
  # One simulated node carries every store here, so each names disks of its own.
  trays:
    - device: /dev/disk/by-id/store-{id}-0
    - device: /dev/disk/by-id/store-{id}-1
  recovery:
    offlineGracePeriodSeconds: 5
"
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

struct Kubectl(PathBuf);

impl Kubectl {
    fn run(&self, args: &[&str], input: Option<&str>) -> Result<String, String> {
        use std::io::Write;
        let mut child = kube_emulator::kubectl()
            .arg("--kubeconfig")
            .arg(&self.0)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("kubectl: {e}"))?;
        if let Some(input) = input {
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(input.as_bytes())
                .map_err(|e| e.to_string())?;
        }
        drop(child.stdin.take());
        let output = child.wait_with_output().map_err(|e| e.to_string())?;
        if !output.status.success() {
            return Err(format!(
                "kubectl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

/// One row of `kubectl get pfstores`.
struct Row {
    name: String,
    phase: String,
    restarts: String,
}

/// Prints `kubectl get pfstores` whenever it changes (AGE aside).
#[derive(Default)]
struct Table {
    last: String,
    started: Option<Instant>,
}

impl Table {
    async fn watch(
        &mut self,
        kubectl: &Kubectl,
        limit: Duration,
        done: impl Fn(&[Row]) -> bool,
    ) -> Result<(), String> {
        let started = *self.started.get_or_insert_with(Instant::now);
        let deadline = Instant::now() + limit;
        loop {
            let text = kubectl.run(&["get", "pfstores", "-n", NAMESPACE], None)?;
            let rows: Vec<Row> = text
                .lines()
                .skip(1)
                .filter_map(|line| {
                    let cells: Vec<&str> = line.split_whitespace().collect();
                    (cells.len() >= 7).then(|| Row {
                        name: cells[0].to_owned(),
                        phase: cells[2].to_owned(),
                        restarts: cells[6].to_owned(),
                    })
                })
                .collect();
            let without_age: String = text
                .lines()
                .map(|l| {
                    let mut cells: Vec<&str> = l.split_whitespace().collect();
                    cells.pop();
                    cells.join(" ")
                })
                .collect::<Vec<_>>()
                .join("\n");
            if without_age != self.last {
                self.last = without_age;
                println!(
                    "[+{:>4.1}s] kubectl get pfstores",
                    started.elapsed().as_secs_f64()
                );
                for line in text.lines() {
                    println!("    {line}");
                }
            }
            if done(&rows) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("gave up after {limit:?}"));
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}
