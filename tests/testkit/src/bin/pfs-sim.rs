//! `pfs-sim`: simulated `pfs` store daemons for tests, demos and benchmarks.
//!
//! `pfs-sim -c /etc/pureflash/pfs.conf` runs one store configured like the real `pfs`;
//! `pfs-sim --zk … --store-id N --count M` registers stores N..N+M-1. Either way the stores
//! register in ZooKeeper exactly as `pfs` does and keep their sessions until the process is
//! killed. Like `pfs`, SIGTERM aborts without closing the sessions: the stores go OFFLINE only
//! when the sessions expire.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use testkit::pfs::{PfsSim, PfsSpec};

#[derive(Debug, Parser)]
#[command(about = "Simulated PureFlash pfs store daemons (ZooKeeper registration only)")]
struct Args {
    /// A pfs.conf, as the real `pfs -c` takes; replaces the store flags below.
    #[arg(short = 'c', long = "conf")]
    conf: Option<PathBuf>,
    /// ZooKeeper connect string.
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
    /// Session timeout asked of ZooKeeper (default: pfs.conf's `[pfs_sim] session_timeout`, else
    /// 3 s as `pfs` asks).
    #[arg(long, env = "PFS_SIM_SESSION_TIMEOUT", value_parser = humantime::parse_duration)]
    session_timeout: Option<Duration>,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let specs: Vec<PfsSpec> = match &args.conf {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .unwrap_or_else(|e| fail(&format!("{}: {e}", path.display())));
            let spec = testkit::pfs_conf::spec_from_conf(&text).unwrap_or_else(|e| fail(&e));
            vec![match args.session_timeout {
                Some(timeout) => spec.with_session_timeout(timeout),
                None => spec,
            }]
        }
        None => (args.store_id..args.store_id + args.count)
            .map(|id| {
                let spec = PfsSpec::new(&args.zk, &args.cluster, id).with_trays(args.trays);
                match args.session_timeout {
                    Some(timeout) => spec.with_session_timeout(timeout),
                    None => spec,
                }
            })
            .collect(),
    };
    let cluster = specs.first().map(|s| s.cluster.clone()).unwrap_or_default();
    if let Some(delay) = specs.iter().filter_map(|s| s.start_delay).max() {
        println!("pfs-sim: waiting {delay:?} before registering ([pfs_sim] start_delay)");
        tokio::time::sleep(delay).await;
    }
    let mut stores = Vec::new();
    for spec in specs {
        let id = spec.store_id;
        match PfsSim::start(spec).await {
            Ok(store) => stores.push(store),
            Err(error) => fail(&format!("store {id}: {error}")),
        }
    }
    println!(
        "pfs-sim: {} store(s) registered in /pureflash/{cluster}/stores",
        stores.len()
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    let hang_after = stores.iter().filter_map(|s| s.spec().hang_after).min();
    let hang = async {
        match hang_after {
            Some(delay) => tokio::time::sleep(delay).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = hang => {
            println!("pfs-sim: hanging as configured ([pfs_sim] hang_after)");
            for store in stores.iter().filter(|s| s.spec().hang_after.is_some()) {
                store.hang();
            }
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
    }
    for store in &mut stores {
        store.kill().await;
    }
}

fn fail(message: &str) -> ! {
    eprintln!("pfs-sim: {message}");
    std::process::exit(2);
}
