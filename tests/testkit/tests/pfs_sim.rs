//! The `pfs-sim` binary, as the node agent and a container run it: `pfs-sim -c pfs.conf`.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use testkit::zookeeper::ZooKeeper;
use zookeeper_client as zk;

fn conf(zk: &str, cluster: &str, id: u32) -> String {
    format!(
        "[cluster]\nname={cluster}\n[zookeeper]\nip={zk}\n[afs]\nmngt_ip=10.8.0.{id}\nid={id}\n[engine]\nname=aio\n\
         [tray.0]\ndev=/dev/nvme0n1\n[tray.1]\ndev=/dev/nvme1n1\n[port.0]\nip=10.9.0.{id}\n[rep_port.0]\nip=10.10.0.{id}\n"
    )
}

/// A running pfs-sim, SIGKILLed and reaped when dropped: a failed assertion leaks no process.
struct PfsSimProcess(Child);

impl PfsSimProcess {
    /// SIGKILL (nothing closes the session) and reap.
    fn kill(&mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }

    fn is_running(&mut self) -> bool {
        self.0.try_wait().unwrap().is_none()
    }
}

impl Drop for PfsSimProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(conf_path: &std::path::Path) -> PfsSimProcess {
    PfsSimProcess(
        Command::new(env!("CARGO_BIN_EXE_pfs-sim"))
            .args(["-c", conf_path.to_str().unwrap(), "--session-timeout", "1s"])
            .stdout(Stdio::null())
            .spawn()
            .expect("pfs-sim starts"),
    )
}

async fn exists(client: &zk::Client, path: &str) -> bool {
    client.check_stat(path).await.unwrap().is_some()
}

async fn until(mut check: impl AsyncFnMut() -> bool, what: &str) {
    assert!(
        testkit::eventually(Duration::from_secs(20), async || check().await).await,
        "timed out: {what}"
    );
}

#[tokio::test]
async fn a_conf_file_registers_the_store_and_a_kill_lets_the_session_expire() {
    let server = ZooKeeper::shared();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pfs.conf");
    std::fs::write(&path, conf(&server.connect_string(), "simcli", 7)).unwrap();
    let client = zk::Client::connect(&server.connect_string()).await.unwrap();
    let base = "/pureflash/simcli/stores/7";

    let mut child = start(&path);
    until(
        async || exists(&client, &format!("{base}/alive")).await,
        "alive",
    )
    .await;
    let (mngt_ip, _) = client.get_data(&format!("{base}/mngt_ip")).await.unwrap();
    assert_eq!(mngt_ip, b"10.8.0.7");
    let mut trays = client
        .list_children(&format!("{base}/trays"))
        .await
        .unwrap();
    trays.sort();
    assert_eq!(
        trays,
        [
            "00000007-0000-4000-8000-000000000000",
            "00000007-0000-4000-8000-000000000001"
        ]
    );
    let (device, _) = client
        .get_data(&format!("{base}/trays/{}/devname", trays[1]))
        .await
        .unwrap();
    assert_eq!(device, b"/dev/nvme1n1");
    assert!(exists(&client, &format!("{base}/trays/{}/online", trays[0])).await);
    assert_eq!(
        client
            .list_children(&format!("{base}/ports"))
            .await
            .unwrap(),
        ["10.9.0.7"]
    );
    assert_eq!(
        client
            .list_children(&format!("{base}/rep_ports"))
            .await
            .unwrap(),
        ["10.10.0.7"]
    );

    // SIGKILL: nothing closes the session, ZooKeeper expires it.
    child.kill();
    until(
        async || !exists(&client, &format!("{base}/alive")).await,
        "alive gone after expiry",
    )
    .await;

    // A restart registers again under the same identity.
    let mut child = start(&path);
    until(
        async || exists(&client, &format!("{base}/alive")).await,
        "alive again",
    )
    .await;
    child.kill();
}

#[tokio::test]
async fn hang_after_keeps_the_process_but_lets_the_session_expire() {
    let server = ZooKeeper::shared();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pfs.conf");
    let text = conf(&server.connect_string(), "simhang", 8) + "[pfs_sim]\nhang_after=500ms\n";
    std::fs::write(&path, text).unwrap();
    let client = zk::Client::connect(&server.connect_string()).await.unwrap();
    let alive = "/pureflash/simhang/stores/8/alive";

    let mut child = start(&path);
    until(async || exists(&client, alive).await, "alive").await;
    until(
        async || !exists(&client, alive).await,
        "alive gone after the hang",
    )
    .await;
    assert!(child.is_running(), "pfs-sim still runs");
    child.kill();
}

#[test]
fn a_bad_conf_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pfs.conf");
    std::fs::write(&path, "[afs]\nid=1\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_pfs-sim"))
        .args(["-c", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stderr).trim(),
        "pfs-sim: pfs.conf: [zookeeper] ip is required"
    );
}

/// A simulated `kill -9` never closes the session (the dropped client's CloseSession must not
/// get through the severed proxy): the store's `alive` stays until ZooKeeper expires it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_leaves_the_session_to_expire_every_time() {
    let server = ZooKeeper::shared();
    let client = zk::Client::connect(&server.connect_string()).await.unwrap();
    let cluster = format!("simkill{}", std::process::id());
    for id in 1..=20 {
        let spec = testkit::pfs::PfsSpec::new(&server.connect_string(), &cluster, id)
            .with_session_timeout(Duration::from_secs(4));
        let alive = format!("{}/alive", spec.store_path());
        let mut store = testkit::pfs::PfsSim::start(spec).await.unwrap();
        store.kill().await;
        // A closed session's ephemerals go at once; an abandoned one's only on expiry.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            exists(&client, &alive).await,
            "store {id}: alive went at once: the kill closed the session"
        );
    }
}
