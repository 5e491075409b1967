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

/// A TCP port on 127.0.0.1 that is free, for a server the test starts.
///
/// Taken below the kernel's ephemeral range, never from it: a port the kernel handed out
/// (`bind(0)`, what `free_port` once did) can be handed out again to any other socket of the
/// machine between this check and the server's bind, whereas below the range only a server
/// asking for that very port can take it. Each port is given out once per process, starting
/// at a place of the range set by the process id, so that two test binaries seldom meet.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static GIVEN: AtomicU32 = AtomicU32::new(0);
    let (low, high) = unassigned_ports();
    let span = u32::from(high - low);
    let start = std::process::id().wrapping_mul(7919) % span;
    loop {
        let given = GIVEN.fetch_add(1, Ordering::Relaxed);
        assert!(given < span, "no free port left in {low}..{high}");
        let port = low + ((start + given) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Ports outside the kernel's ephemeral range (`ip_local_port_range`) that tests take for
/// their servers: below it from 15000 (clear of the well-known ones), else above it.
fn unassigned_ports() -> (u16, u16) {
    const LOW: u16 = 15000;
    let (ephemeral_low, ephemeral_high) =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|range| {
                let mut bounds = range.split_whitespace().map(|b| b.parse::<u16>().ok());
                Some((bounds.next()??, bounds.next()??))
            })
            .unwrap_or((32768, 60999));
    if ephemeral_low > LOW + 1000 {
        (LOW, ephemeral_low)
    } else if ephemeral_high < 64535 {
        (ephemeral_high + 1, 65535)
    } else {
        // Nearly all of the space is ephemeral: no range avoids it; back to the old odds.
        (LOW - 5000, LOW)
    }
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
