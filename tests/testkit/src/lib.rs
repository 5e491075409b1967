//! Test bed for pureflash-operator. Never part of the shipped binary.
//!
//! - [`zookeeper::ZooKeeper`] and [`mariadb::MariaDb`]: real servers from Debian's packages,
//!   started on free loopback ports in temporary directories, stoppable and restartable with
//!   their data kept; `shared()` instances live for one test binary and are killed at exit.
//! - [`pfs::PfsSim`]: a `pfs` store daemon as far as ZooKeeper can tell (design.md §2),
//!   including its quirks: it waits while an old `alive` exists and never re-registers after
//!   its session expires. It can crash, be killed, hang, restart, flap, and take trays offline.
//! - [`proxy::Proxy`]: a loopback TCP proxy that can stall or sever connections; the simulator
//!   talks to ZooKeeper through one, which is how a hang (no heartbeats, process alive) is made.

pub mod mariadb;
pub mod node_agent;
pub mod pfs;
pub mod pfs_conf;
pub mod process;
pub mod proxy;
pub mod zookeeper;

use std::net::TcpListener;
use std::time::{Duration, Instant};

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// Polls `condition` every 10 ms until it holds or `timeout` passes; returns whether it held.
pub async fn eventually(timeout: Duration, mut condition: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Sends `tracing` output of the code under test to the test's captured output (once).
pub fn init_test_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "pureflash_operator=debug,testkit=debug,warn".into()),
        )
        .with_test_writer()
        .try_init();
}
