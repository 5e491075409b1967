//! A real MariaDB server (Debian's `mariadb-server` package) for tests.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::process::{ServerProcess, clean_up_at_exit, require};

/// The account tests connect with (password authentication, as in production).
pub const USER: &str = "pf";
pub const PASSWORD: &str = "pf-secret";

/// A MariaDB server on 127.0.0.1, in its own temporary data directory.
#[derive(Debug)]
pub struct MariaDb {
    dir: TempDir,
    port: u16,
    process: Mutex<Option<ServerProcess>>,
}

impl MariaDb {
    /// Initializes a data directory, starts the server and creates the test account.
    pub fn start() -> MariaDb {
        let dir = tempfile::Builder::new()
            .prefix("pf-test-mariadb-")
            .tempdir()
            .expect("temp dir");
        let install = require("mariadb-install-db", "mariadb-server");
        let output = Command::new(install)
            .arg("--no-defaults")
            .arg("--user=root")
            .arg(format!("--datadir={}", dir.path().join("data").display()))
            .arg("--auth-root-authentication-method=normal")
            .arg("--skip-test-db")
            .output()
            .expect("run mariadb-install-db");
        assert!(
            output.status.success(),
            "mariadb-install-db failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let db = MariaDb {
            dir,
            port: crate::free_port(),
            process: Mutex::new(None),
        };
        db.start_again();
        db.admin_sql(&format!(
            "create user '{USER}'@'%' identified by '{PASSWORD}'; grant all on *.* to '{USER}'@'%'; \
             create user '{USER}'@'localhost' identified by '{PASSWORD}'; grant all on *.* to '{USER}'@'localhost';"
        ));
        db
    }

    /// One server per test binary; give each test its own database with [`Self::new_database`].
    pub fn shared() -> &'static MariaDb {
        static SHARED: OnceLock<MariaDb> = OnceLock::new();
        SHARED.get_or_init(|| {
            let db = MariaDb::start();
            let pid = db
                .process
                .lock()
                .unwrap()
                .as_ref()
                .and_then(ServerProcess::pid)
                .expect("running");
            clean_up_at_exit(pid, db.dir.path().to_owned());
            db
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `mysql://pf:…@127.0.0.1:<port>/<database>`
    pub fn url(&self, database: &str) -> String {
        format!(
            "mysql://{USER}:{PASSWORD}@127.0.0.1:{}/{database}",
            self.port
        )
    }

    /// Creates a database with a unique name starting with `prefix`; returns its URL.
    pub fn new_database(&self, prefix: &str) -> String {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "{prefix}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        self.admin_sql(&format!("create database `{name}`"));
        self.url(&name)
    }

    /// Runs SQL as root through the server's socket; panics with the server's message on error.
    pub fn admin_sql(&self, sql: &str) -> String {
        let client = require("mariadb", "mariadb-client");
        let output = Command::new(client)
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.socket().display()))
            .arg("-uroot")
            .arg("--batch")
            .arg("--skip-column-names")
            .arg("-e")
            .arg(sql)
            .output()
            .expect("run mariadb client");
        assert!(
            output.status.success(),
            "SQL failed: {sql}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Runs an SQL script as root in `database`, fed on stdin as `mariadb < file.sql` would be,
    /// so client commands such as `DELIMITER` (trigger bodies) work; panics on the first error.
    pub fn run_script(&self, database: &str, script: &str) {
        use std::io::Write;
        let client = require("mariadb", "mariadb-client");
        let mut child = Command::new(client)
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.socket().display()))
            .arg("-uroot")
            .arg("--batch")
            .arg(database)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run mariadb client");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .expect("write the script");
        let output = child.wait_with_output().expect("wait for mariadb client");
        assert!(
            output.status.success(),
            "SQL script failed in {database}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Kills the server (SIGKILL; InnoDB recovers on restart). Data stays.
    pub fn stop(&self) {
        if let Some(process) = self.process.lock().unwrap().take() {
            process.kill();
        }
    }

    /// (Re)starts the server on the same port and data directory and waits until it answers.
    pub fn start_again(&self) {
        let mut slot = self.process.lock().unwrap();
        if slot.as_ref().is_some_and(ServerProcess::is_running) {
            return;
        }
        let mut command = Command::new(require("mariadbd", "mariadb-server"));
        command
            .arg("--no-defaults")
            .arg("--user=root")
            .arg(format!(
                "--datadir={}",
                self.dir.path().join("data").display()
            ))
            .arg(format!("--socket={}", self.socket().display()))
            .arg(format!(
                "--pid-file={}",
                self.dir.path().join("mariadb.pid").display()
            ))
            .arg(format!("--port={}", self.port))
            .arg("--bind-address=127.0.0.1")
            .arg("--skip-log-bin")
            .arg("--innodb-buffer-pool-size=64M")
            .arg("--skip-name-resolve");
        let process = ServerProcess::spawn(command, &self.dir.path().join("mariadb.log"));
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.answers_ping() {
            assert!(
                process.is_running(),
                "MariaDB exited; see {}",
                self.dir.path().join("mariadb.log").display()
            );
            assert!(
                Instant::now() < deadline,
                "MariaDB did not start within 60 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        *slot = Some(process);
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("mariadb.sock")
    }

    fn answers_ping(&self) -> bool {
        Command::new(require("mariadb-admin", "mariadb-client"))
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.socket().display()))
            .arg("-uroot")
            .arg("--connect-timeout=1")
            .arg("ping")
            .output()
            .is_ok_and(|o| o.status.success())
    }
}
