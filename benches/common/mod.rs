//! What the benchmarks share: a ZooKeeper populated the way `pfs` registers, the operator
//! binary as a process, and percentile arithmetic.

#![allow(dead_code)] // each benchmark uses a part

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use zookeeper_client::{self as zk, Acls, CreateMode};

/// Trays per store in [`populate`].
pub const TRAYS: u32 = 4;

/// Creates `count` stores (ids `1..=count`) with every node `pfs` writes. Each store's `alive`
/// and trays' `online` belong to `owner` unless the store is in `skip_alive`.
pub async fn populate(
    admin: &zk::Client,
    owner: &zk::Client,
    cluster: &str,
    count: u32,
    skip_alive: &[u32],
) {
    let persistent = CreateMode::Persistent.with_acls(Acls::anyone_all());
    let stores = format!("/pureflash/{cluster}/stores");
    admin.mkdir(&stores, &persistent).await.unwrap();
    let mut persistent_nodes: Vec<(String, Vec<u8>)> = Vec::new();
    for id in 1..=count {
        let base = format!("{stores}/{id}");
        let (hi, lo) = (id / 256, id % 256);
        persistent_nodes.push((base.clone(), vec![]));
        persistent_nodes.push((
            format!("{base}/mngt_ip"),
            format!("10.10.{hi}.{lo}").into_bytes(),
        ));
        persistent_nodes.push((format!("{base}/trays"), vec![]));
        for t in 0..TRAYS {
            let tray = tray_path(cluster, id, t);
            persistent_nodes.push((tray.clone(), vec![]));
            for (field, value) in [
                ("devname", format!("/dev/nvme{t}n1")),
                ("capacity", "1000204886016".into()),
                ("object_size", "67108864".into()),
                ("free_size", "999000000000".into()),
                ("state", String::new()),
            ] {
                persistent_nodes.push((format!("{tray}/{field}"), value.into_bytes()));
            }
        }
        persistent_nodes.push((format!("{base}/ports"), vec![]));
        persistent_nodes.push((format!("{base}/ports/10.20.{hi}.{lo}"), vec![]));
        persistent_nodes.push((format!("{base}/rep_ports"), vec![]));
        persistent_nodes.push((format!("{base}/rep_ports/10.30.{hi}.{lo}"), vec![]));
        persistent_nodes.push((format!("{base}/state"), b"OK".to_vec()));
    }
    // Parents come before children in the list; creating in waves of one depth keeps that order
    // while pipelining each wave.
    let depth = |path: &str| path.matches('/').count();
    let mut depths: Vec<usize> = persistent_nodes.iter().map(|(p, _)| depth(p)).collect();
    depths.sort_unstable();
    depths.dedup();
    for d in depths {
        let wave: Vec<_> = persistent_nodes
            .iter()
            .filter(|(p, _)| depth(p) == d)
            .collect();
        for chunk in wave.chunks(2000) {
            let results = futures::future::join_all(
                chunk
                    .iter()
                    .map(|(p, data)| admin.create(p, data, &persistent)),
            )
            .await;
            for r in results {
                r.map(|_| ())
                    .or_else(|e| {
                        if e == zk::Error::NodeExists {
                            Ok(())
                        } else {
                            Err(e)
                        }
                    })
                    .unwrap();
            }
        }
    }
    let alive: Vec<u32> = (1..=count).filter(|id| !skip_alive.contains(id)).collect();
    register_alive(owner, cluster, &alive).await;
}

/// Creates the `alive` node of each store in `ids` and the `online` node of each of its trays,
/// as ephemerals of `owner`'s session (the stores' nodes must exist).
pub async fn register_alive(owner: &zk::Client, cluster: &str, ids: &[u32]) {
    let ephemeral = CreateMode::Ephemeral.with_acls(Acls::anyone_all());
    let mut nodes: Vec<String> = Vec::new();
    for &id in ids {
        for t in 0..TRAYS {
            nodes.push(format!("{}/online", tray_path(cluster, id, t)));
        }
        nodes.push(format!("/pureflash/{cluster}/stores/{id}/alive"));
    }
    for chunk in nodes.chunks(2000) {
        for r in
            futures::future::join_all(chunk.iter().map(|p| owner.create(p, b"", &ephemeral))).await
        {
            r.unwrap();
        }
    }
}

fn tray_path(cluster: &str, id: u32, tray: u32) -> String {
    format!("/pureflash/{cluster}/stores/{id}/trays/{id:08x}-0000-4000-8000-{tray:012x}")
}

pub fn operator(args: &[&str]) -> Command {
    // PUREFLASH_BENCH_BINARY measures another build (say, the last release) the same way.
    let binary = std::env::var("PUREFLASH_BENCH_BINARY")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_pureflash-operator").to_owned());
    let mut command = Command::new(binary);
    // PUREFLASH_BENCH_LOG=pureflash_operator=debug shows where the time goes.
    let log = std::env::var("PUREFLASH_BENCH_LOG").unwrap_or_else(|_| "warn".into());
    command
        .args(args)
        .env("PUREFLASH_LOG", log)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    command
}

pub struct Stats {
    pub p50: f64,
    pub p95: f64,
    pub max: f64,
}

pub fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let at = |q: f64| ms(samples[((samples.len() as f64 - 1.0) * q).round() as usize]);
    Stats {
        p50: at(0.5),
        p95: at(0.95),
        max: ms(*samples.last().unwrap()),
    }
}

pub fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

/// Graceful stop, as Kubernetes would.
pub fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}
