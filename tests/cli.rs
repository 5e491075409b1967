//! The `pureflash-operator` binary, as users run it.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{Backend, PATIENCE, TestDb, spec, unique_cluster};
use testkit::pfs::PfsSim;
use testkit::zookeeper::ZooKeeper;

fn operator() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pureflash-operator"));
    command.env_remove("RUST_LOG");
    for (key, _) in std::env::vars() {
        if key.starts_with("PUREFLASH_") {
            command.env_remove(key);
        }
    }
    command
}

fn run(command: &mut Command) -> (bool, String, String) {
    let output = command.output().expect("run pureflash-operator");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The DB URL comes from a Secret through `PUREFLASH_DB`: `--help` (run in the operator's
/// container by someone debugging) must not print its password with the variable.
#[test]
fn help_never_shows_the_db_password() {
    for subcommand in ["run", "sync"] {
        let (ok, help, stderr) = run(operator()
            .args([subcommand, "--help"])
            .env("PUREFLASH_DB", "mysql://pf:s3cret-pw@db:3306/s5"));
        assert!(ok, "{stderr}");
        assert!(help.contains("PUREFLASH_DB"), "{help}");
        assert!(
            !help.contains("s3cret-pw"),
            "{subcommand} --help shows the password: {help}"
        );
    }
}

async fn once_on_an_empty_db(backend: Backend) {
    let zk = ZooKeeper::shared();
    let cluster = unique_cluster("cli-once");
    // The DB first: a first start of the shared server costs seconds of CPU, which the stores'
    // short sessions must not have to live through.
    let db = TestDb::new(backend).await;
    let mut stores = Vec::new();
    for id in 1..=3 {
        // Sessions that outlast a loaded machine's stalls: the two stores up must read OK.
        stores.push(
            PfsSim::start(
                spec(&zk.connect_string(), &cluster, id)
                    .with_session_timeout(Duration::from_secs(15)),
            )
            .await
            .unwrap(),
        );
    }
    stores[2].crash().await;
    let (ok, stdout, stderr) = run(operator().args([
        "sync",
        "--once",
        "--zk",
        &zk.connect_string(),
        "--cluster",
        &cluster,
        "--db",
        &db.url,
    ]));
    assert!(ok, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stdout.contains("stores: 3 (2 OK, 1 OFFLINE); trays: 6 (4 online); ports: 6"),
        "{stdout}"
    );
    assert!(stdout.contains("t_store: 3 inserted"), "{stdout}");
    assert!(
        !stdout.contains("pf-secret"),
        "the summary must not show the DB password: {stdout}"
    );
    let statuses: Vec<String> = db.stores().await.into_iter().map(|s| s.2).collect();
    assert_eq!(statuses, ["OK", "OK", "OFFLINE"]);
    assert_eq!(db.trays().await.len(), 6);
    assert_eq!(db.ports().await.len(), 6);

    // A second run finds nothing to do.
    let (ok, stdout, _) = run(operator().args([
        "sync",
        "--once",
        "--zk",
        &zk.connect_string(),
        "--cluster",
        &cluster,
        "--db",
        &db.url,
    ]));
    assert!(ok);
    assert!(stdout.contains("t_store: 0 inserted, 0 updated; t_tray: 0 inserted, 0 updated; t_port: 0 inserted, 0 updated, 0 deleted"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_on_an_empty_sqlite_db() {
    once_on_an_empty_db(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_on_an_empty_mariadb_db() {
    once_on_an_empty_db(Backend::MariaDb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_flag_comes_from_the_environment_and_sqlite_is_created_in_wal_mode() {
    let zk = ZooKeeper::shared();
    let cluster = unique_cluster("cli-env");
    let _store = PfsSim::start(spec(&zk.connect_string(), &cluster, 1))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new").with_extension("db");
    let (ok, stdout, stderr) = run(operator()
        .arg("sync")
        .env("PUREFLASH_ZK", zk.connect_string())
        .env("PUREFLASH_CLUSTER", &cluster)
        .env("PUREFLASH_DB", format!("sqlite://{}", path.display()))
        .env("PUREFLASH_RESYNC_INTERVAL", "1m")
        .env("PUREFLASH_ZK_SESSION_TIMEOUT", "3s")
        .env("PUREFLASH_ONCE", "true"));
    assert!(ok, "{stdout}\n{stderr}");
    assert!(path.exists(), "the SQLite file is created");
    let mode = Command::new("python3")
        .args(["-c", "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('pragma journal_mode').fetchone()[0])"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&mode.stdout).trim(), "wal");
}

#[test]
fn a_bad_db_url_is_one_clear_line_without_the_password() {
    for (url, expected) in [
        (
            "postgres://pf:hunter2@db/s5",
            "unsupported scheme \"postgres\"",
        ),
        ("mysql://pf:hunter2@127.0.0.1:3306", "no database named"),
        ("pureflash.db", "expected sqlite://PATH"),
    ] {
        let (ok, _, stderr) = run(operator().args(["sync", "--once", "--db", url]));
        assert!(!ok);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.starts_with("error: invalid --db URL"), "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
        assert!(!stderr.contains("hunter2"), "{stderr}");
    }
}

#[test]
fn bad_flags_are_refused_by_the_parser() {
    let (ok, _, stderr) = run(operator().args(["sync", "--resync-interval", "soon"]));
    assert!(!ok);
    assert!(stderr.contains("--resync-interval"), "{stderr}");
    let (ok, _, stderr) = run(operator().args(["sync", "--cluster", "a/b", "--once"]));
    assert!(!ok);
    assert!(stderr.contains("invalid cluster name"), "{stderr}");
    // A typo in the connect string is an error at once, not a connection retried forever.
    let (ok, _, stderr) = run(operator().args(["sync", "--zk", "127.0.0.1:21a81"]));
    assert!(!ok);
    assert!(stderr.contains("\"21a81\" is not a port"), "{stderr}");
    let (ok, _, stderr) = run(operator().args(["sync", "--resync-interval", "100000000y"]));
    assert!(!ok);
    assert!(stderr.contains("at most 365d"), "{stderr}");
}

#[test]
fn with_json_logs_the_exit_reason_is_json_too_whatever_the_filter() {
    let (ok, _, stderr) = run(operator().args([
        "--log-format",
        "json",
        "--log",
        "off",
        "sync",
        "--cluster",
        "a/b",
        "--once",
    ]));
    assert!(!ok);
    let records: Vec<serde_json::Value> = stderr
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}")))
        .collect();
    let last = records.last().expect("the exit reason is logged");
    assert_eq!(last["level"], "ERROR", "{stderr}");
    let error = last["fields"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("invalid cluster name"), "{stderr}");
}

#[test]
fn unreachable_zookeeper_is_a_clear_error() {
    let port = testkit::free_port();
    let (ok, _, stderr) = run(operator().args([
        "sync",
        "--once",
        "--zk",
        &format!("127.0.0.1:{port}"),
        "--zk-session-timeout",
        "1s",
        "--db",
        "sqlite::memory:",
    ]));
    assert!(!ok);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(&format!(
            "error: cannot connect to ZooKeeper at 127.0.0.1:{port}"
        )),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_db_is_a_clear_error() {
    let zk = ZooKeeper::shared();
    let cluster = unique_cluster("cli-no-db");
    let _store = PfsSim::start(spec(&zk.connect_string(), &cluster, 1))
        .await
        .unwrap();
    let port = testkit::free_port();
    let (ok, _, stderr) = run(operator().args([
        "sync",
        "--once",
        "--zk",
        &zk.connect_string(),
        "--cluster",
        &cluster,
        "--db",
        &format!("mysql://pf:hunter2@127.0.0.1:{port}/s5"),
    ]));
    assert!(!ok);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: cannot connect to the metadata DB mysql://pf:***@127.0.0.1"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"));
}

/// `pureflash-operator sync` on `zk`/`cluster` into `db`, with `extra` flags; stderr piped.
fn spawn_sync(zk: &ZooKeeper, cluster: &str, db: &TestDb, extra: &[&str]) -> Child {
    let zk = zk.connect_string();
    operator()
        .args(["sync", "--zk", &zk, "--cluster", cluster, "--db", &db.url])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits until the process catches SIGTERM (its handler is installed), so that a signal sent
/// next tests the handling rather than the default action, however slow the start.
fn wait_until_sigterm_is_caught(child: &Child) {
    const SIGTERM_BIT: u64 = 1 << (libc::SIGTERM - 1);
    let status = format!("/proc/{}/status", child.id());
    let since = Instant::now();
    loop {
        let caught = std::fs::read_to_string(&status)
            .ok()
            .and_then(|status| {
                let mask = status.lines().find_map(|l| l.strip_prefix("SigCgt:"))?;
                u64::from_str_radix(mask.trim(), 16).ok()
            })
            .is_some_and(|mask| mask & SIGTERM_BIT != 0);
        if caught {
            return;
        }
        assert!(
            since.elapsed() < PATIENCE,
            "the process never caught SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn sigterm(child: &Child) {
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
}

/// Waits for the process to exit, failing past `within`; its exit status and stderr.
fn wait_for_exit(child: &mut Child, within: Duration) -> (std::process::ExitStatus, String) {
    let since = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(since.elapsed() < within, "no exit within {within:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    (status, stderr)
}

/// Sends SIGTERM and asserts the process exits 0 within `within`; returns its stderr.
fn sigterm_and_wait_for_exit_0(child: &mut Child, within: Duration) -> String {
    sigterm(child);
    let (status, stderr) = wait_for_exit(child, within);
    assert!(status.success(), "exit status {status}\n{stderr}");
    stderr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_follows_changes_and_sigterm_closes_the_session() {
    let zk = ZooKeeper::start();
    let cluster = unique_cluster("cli-run");
    let mut store = PfsSim::start(spec(&zk.connect_string(), &cluster, 1))
        .await
        .unwrap();
    let db = TestDb::new(Backend::Sqlite).await;
    let mut child = spawn_sync(&zk, &cluster, &db, &["--zk-session-timeout", "30s"]);
    wait_for!(db, "OK", |s, _t, _p| s.len() == 1 && s[0].2 == "OK");
    store.crash().await;
    wait_for!(db, "OFFLINE", |s, _t, _p| s[0].2 == "OFFLINE");
    assert!(
        testkit::eventually(PATIENCE, async || zk.metric("zk_global_sessions")
            == Some(1))
        .await,
        "only the operator's session is left: {:?}",
        zk.metric("zk_global_sessions")
    );

    let stderr = sigterm_and_wait_for_exit_0(&mut child, PATIENCE);
    assert!(stderr.contains("SIGTERM received"), "{stderr}");
    // Closed, not left to expire: gone well before its 30 s timeout.
    let gone = testkit::eventually(Duration::from_secs(10), async || {
        zk.metric("zk_global_sessions") == Some(0)
    })
    .await;
    assert!(
        gone,
        "the operator's ZooKeeper session outlived the process"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_data_is_logged_once_and_the_rest_synced() {
    let zk = ZooKeeper::shared();
    let cluster = unique_cluster("cli-malformed");
    let good = PfsSim::start(spec(&zk.connect_string(), &cluster, 1))
        .await
        .unwrap();
    let bad = PfsSim::start(spec(&zk.connect_string(), &cluster, 2))
        .await
        .unwrap();
    let client = zookeeper_client::Client::connect(&zk.connect_string())
        .await
        .unwrap();
    let persistent =
        zookeeper_client::CreateMode::Persistent.with_acls(zookeeper_client::Acls::anyone_all());
    client
        .create(&format!("/pureflash/{cluster}/stores/x1"), b"", &persistent)
        .await
        .unwrap();
    let capacity = format!(
        "{}/trays/{}/capacity",
        bad.spec().store_path(),
        bad.spec().trays[0].uuid
    );
    client.set_data(&capacity, b"abc", None).await.unwrap();
    let db = TestDb::new(Backend::Sqlite).await;
    let mut child = operator()
        .args([
            "sync",
            "--zk",
            &zk.connect_string(),
            "--cluster",
            &cluster,
            "--db",
            &db.url,
            "--resync-interval",
            "200ms",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for!(db, "good data", |s, t, _p| s.len() == 2 && t.len() == 3);
    tokio::time::sleep(Duration::from_millis(1000)).await; // several resync periods
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(child.wait().unwrap().success());
    let x1: Vec<&str> = stderr.lines().filter(|l| l.contains("dir=x1")).collect();
    assert_eq!(x1.len(), 1, "{stderr}");
    assert!(x1[0].contains("not a store id"), "{stderr}");
    // Quoted as the error quotes it: a bare "abc" may be part of a session id's hex.
    let abc: Vec<&str> = stderr.lines().filter(|l| l.contains("\"abc\"")).collect();
    assert_eq!(abc.len(), 1, "{stderr}");
    assert!(
        abc[0].contains("store=2") && abc[0].contains("capacity"),
        "{stderr}"
    );
    drop(good);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_refuses_a_cluster_zookeeper_does_not_have() {
    let zk = ZooKeeper::shared();
    let db = TestDb::new(Backend::Sqlite).await;
    let (ok, stdout, stderr) = run(operator().args([
        "sync",
        "--once",
        "--zk",
        &zk.connect_string(),
        "--cluster",
        "no-such-cluster",
        "--db",
        &db.url,
    ]));
    assert!(!ok, "{stdout}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.contains("has no /pureflash/no-such-cluster/stores: is the cluster name right?"),
        "{stderr}"
    );
}

#[test]
fn the_readme_configuration_reference_is_generated_from_the_cli() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    for command in ["run", "sync"] {
        let (ok, table, stderr) = run(operator().args(["reference", command]));
        assert!(ok, "{stderr}");
        let begin = format!(
            "<!-- reference:{command} (generated: pureflash-operator reference {command}) -->\n"
        );
        let end = format!("<!-- /reference:{command} -->");
        let start = readme.find(&begin).expect("reference begin marker") + begin.len();
        let stop = readme[start..].find(&end).expect("reference end marker") + start;
        assert!(
            readme[start..stop] == table,
            "the README's `{command}` flags are stale; replace them with `pureflash-operator reference {command}`:\n{table}"
        );
    }
    let (ok, _, stderr) = run(operator().args(["reference", "nope"]));
    assert!(!ok);
    assert_eq!(
        stderr.trim(),
        "error: no command \"nope\" (try run or sync)"
    );
}

/// SIGTERM while ZooKeeper does not answer: a reload in progress would wait until the client
/// gives the connection up (here ~13 s into a 20 s session); the process exits promptly
/// instead, and likewise with ZooKeeper plainly down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_zookeeper_is_frozen_or_down_exits_promptly() {
    for down in [false, true] {
        sigterm_without_zookeeper(down).await;
    }
}

/// `--once` whose write gets no answer (the DB's host stalls mid-transaction) gives up after
/// the pass timeout (30 s) with an error, and its summary says a write timed out, which may
/// or may not have committed, rather than leaving it out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_tells_a_write_that_timed_out() {
    use sqlx::Connection;
    use testkit::proxy::{Proxy, ProxyMode};
    let zk = ZooKeeper::shared();
    let cluster = unique_cluster("cli-once-timeout");
    let db = TestDb::new(Backend::MariaDb).await;
    let mut store = PfsSim::start(
        spec(&zk.connect_string(), &cluster, 1).with_session_timeout(Duration::from_secs(15)),
    )
    .await
    .unwrap();
    // user:password@host:port/db: the operator reaches the DB through the proxy.
    let (credentials, rest) = db.url.rsplit_once('@').unwrap();
    let (server, database) = rest.split_once('/').unwrap();
    let proxy = Proxy::start(server).await;
    let proxied = format!("{credentials}@{}/{database}", proxy.address());
    let once = |url: &str| {
        let mut command = operator();
        command.args([
            "sync",
            "--once",
            "--zk",
            &zk.connect_string(),
            "--cluster",
            &cluster,
            "--db",
            url,
        ]);
        command
    };
    let (ok, stdout, stderr) = run(&mut once(&proxied));
    assert!(ok, "stdout:\n{stdout}\nstderr:\n{stderr}");
    store.crash().await;
    // The write waits on a table another client keeps from writers, and the DB's answer
    // (a lock wait timeout, 20 s) never comes back: the proxy stalls meanwhile.
    let mut locker = support::lock_t_store(&db.url, support::TableLock::Read).await;
    let child = once(&proxied)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let waiting = support::a_write_waits_on(&mut locker).await;
    assert!(waiting, "the write never queued behind the lock");
    proxy.set_mode(ProxyMode::Stall);
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    locker.close().await.unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(
        !output.status.success(),
        "a write that timed out is no success: {stdout}"
    );
    assert!(stderr.contains("30s"), "{stderr}");
    assert!(
        stdout.contains("t_store: 0 inserted, 0 updated;")
            // The store's row and its two trays' go OFFLINE.
            && stdout.contains("then a write of 3 rows timed out after 30s"),
        "{stdout}"
    );
}

/// SIGTERM lets the transaction in progress finish, which a table another client keeps locked
/// makes wait for the pass timeout (30 s); a second signal stops the process at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_stops_a_sync_waiting_on_a_locked_table() {
    use sqlx::Connection;
    let zk = ZooKeeper::shared();
    let cluster = unique_cluster("cli-second-signal");
    // The DB first: starting MariaDB blocks this thread for seconds, which would stall the
    // store's 1 s session.
    let db = TestDb::new(Backend::MariaDb).await;
    let mut store = PfsSim::start(spec(&zk.connect_string(), &cluster, 1))
        .await
        .unwrap();
    let mut child = spawn_sync(zk, &cluster, &db, &["--resync-interval", "1h"]);
    wait_for!(db, "OK", |s, _t, _p| s.len() == 1 && s[0].2 == "OK");
    let mut locker = support::lock_t_store(&db.url, support::TableLock::Write).await;
    // The crash is written in a pass that now waits on the lock.
    store.crash().await;
    let waiting = support::a_write_waits_on(&mut locker).await;
    assert!(waiting, "the crash's write never queued behind the lock");
    sigterm(&child);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "the first SIGTERM waits for the transaction in progress"
    );
    sigterm(&child);
    // Well before the write would give the lock up (it waits up to 20 s).
    let (status, stderr) = wait_for_exit(&mut child, Duration::from_secs(10));
    assert_eq!(status.code(), Some(130), "{status}\n{stderr}");
    locker.close().await.unwrap();
}

/// `--once` stopped by SIGTERM while ZooKeeper does not answer its reads: it exits at once,
/// having written nothing, with one clear line and exit code 1 (a Job stopped so did not
/// succeed), instead of dying by the signal or waiting out the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_stopped_before_writing_exits_at_once_with_an_error() {
    let zk = ZooKeeper::start();
    let cluster = unique_cluster("cli-once-term");
    let _store = PfsSim::start(spec(&zk.connect_string(), &cluster, 1))
        .await
        .unwrap();
    let db = TestDb::new(Backend::Sqlite).await;
    zk.freeze(true);
    let mut child = spawn_sync(
        &zk,
        &cluster,
        &db,
        &["--once", "--zk-session-timeout", "20s"],
    );
    wait_until_sigterm_is_caught(&child);
    tokio::time::sleep(Duration::from_millis(500)).await;
    sigterm(&child);
    // Well before the 20 s session would be given up.
    let (status, stderr) = wait_for_exit(&mut child, Duration::from_secs(10));
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr
            .lines()
            .last()
            .is_some_and(|l| l == "error: stopped by a signal before anything was written"),
        "{stderr}"
    );
    zk.freeze(false);
    // Not even the tables were created.
    let written = db
        .try_query::<support::StoreRow>("select id, mngt_ip, status from t_store")
        .await;
    assert!(written.is_err(), "{written:?}");
}

async fn sigterm_without_zookeeper(down: bool) {
    let zk = ZooKeeper::start();
    let cluster = unique_cluster("cli-zk-down");
    let _store = PfsSim::start(spec(&zk.connect_string(), &cluster, 1))
        .await
        .unwrap();
    let db = TestDb::new(Backend::Sqlite).await;
    let mut child = spawn_sync(
        &zk,
        &cluster,
        &db,
        &["--zk-session-timeout", "20s", "--resync-interval", "200ms"],
    );
    wait_for!(db, "OK", |s, _t, _p| s.len() == 1 && s[0].2 == "OK");
    if down {
        zk.stop();
    } else {
        // Frozen: with a reload every 200 ms, one is soon waiting on an unanswered read.
        zk.freeze(true);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Well before the 20 s session would be given up.
    sigterm_and_wait_for_exit_0(&mut child, Duration::from_secs(10));
    if !down {
        zk.freeze(false);
    }
}

/// The start of `run` may wait long for the API server (the CRD check, up to 30 s): a SIGTERM
/// then stops it cleanly, as at any other time.
#[test]
fn sigterm_while_the_api_server_does_not_answer_exits_0() {
    // An "API server" that takes connections and never answers.
    let api = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let kubeconfig = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        kubeconfig.path(),
        format!(
            "apiVersion: v1
kind: Config
clusters: [{{name: silent, cluster: {{server: 'http://{}'}}}}]
users: [{{name: u, user: {{token: t}}}}]
contexts: [{{name: c, context: {{cluster: silent, user: u}}}}]
current-context: c
",
            api.local_addr().unwrap()
        ),
    )
    .unwrap();
    let admin = format!("127.0.0.1:{}", testkit::free_port());
    let mut child = operator()
        .args([
            "run",
            "--zk",
            "127.0.0.1:1",
            "--cluster",
            "c1",
            "--admin-address",
            &admin,
        ])
        .arg("--kubeconfig")
        .arg(kubeconfig.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The CRD check has asked (an operator that exited instead fails here, not hangs).
    api.set_nonblocking(true).unwrap();
    let since = Instant::now();
    let _held = loop {
        match api.accept() {
            Ok((held, _)) => break held,
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(error) => panic!("accept: {error}"),
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the operator exited ({status}) before asking the API server");
        }
        assert!(
            since.elapsed() < PATIENCE,
            "the operator never asked the API server"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    wait_until_sigterm_is_caught(&child);
    let stderr = sigterm_and_wait_for_exit_0(&mut child, Duration::from_secs(10));
    assert!(
        stderr.contains("stopped before the operator started"),
        "{stderr}"
    );
}
