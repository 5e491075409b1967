//! A real ZooKeeper server (Debian's `zookeeper` package) for tests.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::process::{ServerProcess, clean_up_at_exit, require};

/// Ticks of 200 ms make session timeouts start at 400 ms (and default to at most 4 s), so expiry
/// tests are quick.
const TICK_MS: u32 = 200;
/// A session may ask for up to a minute: tests that restart the server give some simulated
/// stores a session that outlives the restart.
const MAX_SESSION_MS: u32 = 60_000;

/// A standalone ZooKeeper on 127.0.0.1, in its own temporary data directory.
#[derive(Debug)]
pub struct ZooKeeper {
    dir: TempDir,
    port: u16,
    process: Mutex<Option<ServerProcess>>,
    /// JVM flags: quick start-up for tests, the JVM's defaults for benchmarks.
    jvm: &'static [&'static str],
    /// The class run: the standalone server, or a member of a quorum (of one).
    main: &'static str,
}

const STANDALONE: &str = "org.apache.zookeeper.server.ZooKeeperServerMain";
const QUORUM_MEMBER: &str = "org.apache.zookeeper.server.quorum.QuorumPeerMain";

/// Tests start many short-lived servers: favour start-up time over peak speed. Their data is
/// thrown away, so the transaction log is not fsynced: on a busy CI disk one fsync can stall
/// every reply for longer than a 3 s session's connection timeout, and the test then sees a
/// disk hiccup instead of the behaviour it asserts.
const JVM_FOR_TESTS: &[&str] = &[
    "-Xmx256m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-Dzookeeper.forceSync=no",
];
/// Benchmarks measure the server as it runs in production: default JIT and collector.
const JVM_FOR_BENCHMARKS: &[&str] = &["-Xmx512m"];

impl ZooKeeper {
    /// Starts a server and waits until it answers `ruok`.
    pub fn start() -> ZooKeeper {
        Self::start_with(JVM_FOR_TESTS)
    }

    /// Starts a server with the JVM's default JIT and collector, for benchmarks.
    pub fn start_for_benchmark() -> ZooKeeper {
        Self::start_with(JVM_FOR_BENCHMARKS)
    }

    /// Starts the one member of a quorum, with server id `server_id`: unlike a standalone
    /// server's, its session ids start with its id (`id << 56`), so from an id of 128 or more
    /// they read negative as an `i64`, as in ensembles numbered that way.
    pub fn start_as_quorum_member(server_id: u8) -> ZooKeeper {
        let (quorum_port, election_port) = (crate::free_port(), crate::free_port());
        Self::start_with_config(
            JVM_FOR_TESTS,
            QUORUM_MEMBER,
            Some(server_id),
            &format!(
                "standaloneEnabled=false\ninitLimit=10\nsyncLimit=5\n\
                 server.{server_id}=127.0.0.1:{quorum_port}:{election_port}:participant\n"
            ),
        )
    }

    fn start_with(jvm: &'static [&'static str]) -> ZooKeeper {
        Self::start_with_config(jvm, STANDALONE, None, "")
    }

    fn start_with_config(
        jvm: &'static [&'static str],
        main: &'static str,
        server_id: Option<u8>,
        extra: &str,
    ) -> ZooKeeper {
        let dir = tempfile::Builder::new()
            .prefix("pf-test-zk-")
            .tempdir()
            .expect("temp dir");
        let port = crate::free_port();
        let data = dir.path().join("data");
        let config = format!(
            "tickTime={TICK_MS}\nminSessionTimeout={}\nmaxSessionTimeout={MAX_SESSION_MS}\ndataDir={}\nclientPort={port}\nclientPortAddress=127.0.0.1\n\
             4lw.commands.whitelist=*\nadmin.enableServer=false\nmaxClientCnxns=0\n{extra}",
            2 * TICK_MS,
            data.display(),
        );
        std::fs::write(dir.path().join("zoo.cfg"), config).expect("write zoo.cfg");
        if let Some(id) = server_id {
            std::fs::create_dir_all(&data).expect("data dir");
            std::fs::write(data.join("myid"), format!("{id}\n")).expect("write myid");
        }
        let zk = ZooKeeper {
            dir,
            port,
            process: Mutex::new(None),
            jvm,
            main,
        };
        zk.start_again();
        zk
    }

    /// One server per test binary, for tests that do not stop it (use a unique cluster name).
    pub fn shared() -> &'static ZooKeeper {
        static SHARED: OnceLock<ZooKeeper> = OnceLock::new();
        SHARED.get_or_init(|| {
            let zk = ZooKeeper::start();
            let pid = zk
                .process
                .lock()
                .unwrap()
                .as_ref()
                .and_then(ServerProcess::pid)
                .expect("running");
            clean_up_at_exit(pid, zk.dir.path().to_owned());
            zk
        })
    }

    /// `127.0.0.1:<port>`
    pub fn connect_string(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The server's own log (stdout and stderr), for a failed test's output.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("zookeeper.log")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (SIGKILL). Its data stays; [`Self::start_again`] brings it back.
    pub fn stop(&self) {
        if let Some(process) = self.process.lock().unwrap().take() {
            process.kill();
        }
    }

    /// Freezes the server (SIGSTOP) or thaws it (SIGCONT): connections stay open and nothing is
    /// answered, as with a stalled host or a partition that drops packets. Clients notice only
    /// by their own timeouts.
    pub fn freeze(&self, frozen: bool) {
        let slot = self.process.lock().unwrap();
        let pid = slot
            .as_ref()
            .and_then(ServerProcess::pid)
            .expect("ZooKeeper runs");
        crate::process::signal(pid, if frozen { libc::SIGSTOP } else { libc::SIGCONT });
    }

    /// (Re)starts the server on the same port and data directory and waits until it serves.
    pub fn start_again(&self) {
        let mut slot = self.process.lock().unwrap();
        if slot.as_ref().is_some_and(ServerProcess::is_running) {
            return;
        }
        let java = require("java", "default-jre-headless");
        let jar = PathBuf::from("/usr/share/java/zookeeper.jar");
        assert!(
            jar.exists(),
            "{} not found: install Debian's zookeeper package (tools/install-deps does it)",
            jar.display()
        );
        let mut command = Command::new(java);
        command
            .args(self.jvm)
            .arg("-cp")
            .arg("/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar")
            .arg(self.main)
            .arg(self.dir.path().join("zoo.cfg"));
        let process = ServerProcess::spawn(command, &self.dir.path().join("zookeeper.log"));
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.answers_ruok() {
            assert!(
                process.is_running(),
                "ZooKeeper exited; see {}",
                self.dir.path().join("zookeeper.log").display()
            );
            assert!(
                Instant::now() < deadline,
                "ZooKeeper did not start within 60 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        *slot = Some(process);
    }

    pub fn is_running(&self) -> bool {
        self.process
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(ServerProcess::is_running)
    }

    /// A value of the server's `mntr` report, e.g. `zk_global_sessions`.
    pub fn metric(&self, key: &str) -> Option<i64> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        stream.write_all(b"mntr").ok()?;
        let mut report = String::new();
        stream.read_to_string(&mut report).ok()?;
        report.lines().find_map(|line| {
            line.strip_prefix(key)?
                .strip_prefix('\t')?
                .trim()
                .parse()
                .ok()
        })
    }

    fn answers_ruok(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        let mut reply = String::new();
        stream.write_all(b"ruok").is_ok()
            && stream.read_to_string(&mut reply).is_ok()
            && reply == "imok"
    }
}
