//! `pfs-sim`: simulated `pfs` store daemons for demos and benchmarks.
//!
//! Registers stores `--store-id .. --store-id + --count - 1` in ZooKeeper exactly as `pfs` does
//! and keeps their sessions until killed. Like `pfs`, SIGTERM aborts without closing the
//! sessions: the stores go OFFLINE when the sessions expire.

use std::time::Duration;

use clap::Parser;
use testkit::pfs::{PfsSim, PfsSpec};

#[derive(Debug, Parser)]
#[command(about = "Simulated PureFlash pfs store daemons (ZooKeeper registration only)")]
struct Args {
    /// ZooKeeper connect string (one server).
    #[arg(long, env = "PFS_SIM_ZK", default_value = "127.0.0.1:2181")]
    zk: String,
    /// Cluster name.
    #[arg(long, default_value = "cluster1")]
    cluster: String,
    /// First store id.
    #[arg(long, default_value_t = 1)]
    store_id: u32,
    /// Number of stores to simulate.
    #[arg(long, default_value_t = 1)]
    count: u32,
    /// Trays per store.
    #[arg(long, default_value_t = 2)]
    trays: u32,
    /// Session timeout asked of ZooKeeper.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    session_timeout: Duration,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let mut stores = Vec::new();
    for id in args.store_id..args.store_id + args.count {
        let spec = PfsSpec::new(&args.zk, &args.cluster, id)
            .with_trays(args.trays)
            .with_session_timeout(args.session_timeout);
        match PfsSim::start(spec).await {
            Ok(store) => stores.push(store),
            Err(error) => {
                eprintln!("pfs-sim: store {id}: {error}");
                std::process::exit(1);
            }
        }
    }
    println!(
        "pfs-sim: {} store(s) registered in /pureflash/{}/stores",
        stores.len(),
        args.cluster
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    for store in &mut stores {
        store.kill().await;
    }
}
