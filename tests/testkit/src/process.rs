//! Server processes owned by tests: killed on drop, and for shared servers at process exit.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, Once};

/// A spawned server process; SIGKILLed on drop.
#[derive(Debug)]
pub struct ServerProcess {
    child: Mutex<Option<Child>>,
}

impl ServerProcess {
    /// Spawns `command` with stdout and stderr appended to `log`.
    pub fn spawn(mut command: Command, log: &Path) -> ServerProcess {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("open server log");
        let err = out.try_clone().expect("clone log handle");
        command.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
        ServerProcess {
            child: Mutex::new(Some(child)),
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.lock().unwrap().as_ref().map(Child::id)
    }

    /// True while the process runs.
    pub fn is_running(&self) -> bool {
        let mut guard = self.child.lock().unwrap();
        match guard.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGKILL and reap.
    pub fn kill(&self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Directories and processes of shared servers, cleaned up when the test binary exits.
static AT_EXIT: Mutex<Vec<(u32, PathBuf)>> = Mutex::new(Vec::new());
static REGISTER: Once = Once::new();

/// Kills `pid` and removes `dir` when this process exits (shared servers are never dropped).
pub fn clean_up_at_exit(pid: u32, dir: PathBuf) {
    REGISTER.call_once(|| {
        // SAFETY: `atexit` only stores the function pointer; `run_at_exit` is a plain
        // `extern "C" fn()` that does not unwind.
        #[allow(unsafe_code)]
        unsafe {
            libc::atexit(run_at_exit);
        }
    });
    AT_EXIT.lock().unwrap().push((pid, dir));
}

#[allow(unsafe_code)]
extern "C" fn run_at_exit() {
    let Ok(entries) = AT_EXIT.lock() else { return };
    for (pid, dir) in entries.iter() {
        // SAFETY: kill(2) on a pid this process spawned and never reaped.
        unsafe {
            libc::kill(*pid as libc::pid_t, libc::SIGKILL);
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Fails with a message that says how to get the missing program.
pub fn require(program: &str, package: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/bin", "/sbin", "/bin"] {
        let path = Path::new(dir).join(program);
        if path.exists() {
            return path;
        }
    }
    panic!("{program} not found: install Debian's {package} package (tools/install-deps does it)");
}

/// Sends `signal` (e.g. `libc::SIGTERM`) to a process this test bed started.
pub fn signal(pid: u32, signal: i32) {
    // SAFETY: kill(2) has no memory effects; a stale pid at worst signals nothing we own.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}
