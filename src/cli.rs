//! The command line: one clap struct, every flag also read from a `PUREFLASH_*` environment
//! variable, grouped by what it configures.

use std::io::IsTerminal;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

use crate::sync_command;

#[derive(Debug, Parser)]
#[command(
    name = "pureflash-operator",
    version,
    about = "Runs and heals PureFlash storage clusters"
)]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Mirror ZooKeeper store liveness into the metadata DB (t_store, t_tray, t_port), without
    /// Kubernetes: what the PureFlash conductor's cluster manager does, event-driven and with
    /// periodic drift repair.
    Sync(SyncArgs),
    /// Run the operator: reconcile PureFlashStores into pfs Pods, mirror ZooKeeper into their
    /// status, restart stores that went offline (safely), keep the metadata DB in sync.
    Run(Box<RunArgs>),
    /// Print the PureFlashStore CustomResourceDefinition (what `crds/pureflashstore.yaml` holds).
    Crd,
    /// Print a command's flags as a Markdown table (the README's configuration reference).
    #[command(hide = true)]
    Reference {
        /// `run` or `sync`.
        command: String,
    },
}

/// Kubernetes access.
#[derive(Clone, Debug, Args)]
pub struct KubeArgs {
    /// Kubeconfig to use; without it, `KUBECONFIG`, `~/.kube/config`, then the in-cluster
    /// service account.
    #[arg(long, env = "PUREFLASH_KUBECONFIG")]
    pub kubeconfig: Option<std::path::PathBuf>,
    /// Namespace whose PureFlashStores to manage; empty: every namespace.
    #[arg(
        long = "namespace",
        env = "PUREFLASH_WATCH_NAMESPACE",
        default_value = "",
        value_parser = parse_watch_namespace
    )]
    pub namespace: String,
}

/// Leader election (only the leader writes).
#[derive(Clone, Debug, Args)]
pub struct LeaseArgs {
    /// Name of the coordination.k8s.io Lease.
    #[arg(
        long,
        env = "PUREFLASH_LEASE_NAME",
        default_value = "pureflash-operator",
        value_parser = parse_object_name
    )]
    pub lease_name: String,
    /// Namespace of the Lease (default: the Pod's namespace from `POD_NAMESPACE`, else `default`).
    #[arg(long, env = "PUREFLASH_LEASE_NAMESPACE", value_parser = parse_namespace)]
    pub lease_namespace: Option<String>,
    /// This replica's identity in the Lease (default: `POD_NAME`, else the hostname and a random suffix).
    #[arg(long, env = "PUREFLASH_IDENTITY")]
    pub identity: Option<String>,
    /// Lease duration, at least 1s: a standby takes over this long after it last saw the leader renew.
    #[arg(long, env = "PUREFLASH_LEASE_DURATION", default_value = "15s", value_parser = parse_lease_duration)]
    pub lease_duration: Duration,
    /// A leader whose ZooKeeper view stays untrusted this long (cut off from ZooKeeper while
    /// other replicas may not be) stops and releases the Lease; a replica whose view is
    /// trusted takes it first (one that cannot see ZooKeeper either waits a lease duration).
    #[arg(long, env = "PUREFLASH_UNTRUSTED_HANDOVER", default_value = "60s", value_parser = parse_duration)]
    pub untrusted_handover: Duration,
}

/// Recovery settings shared by every store.
#[derive(Clone, Debug, Args)]
pub struct RecoveryArgs {
    /// How long pfs gets to register in ZooKeeper after its container starts.
    #[arg(long, env = "PUREFLASH_START_GRACE", default_value = "30s", value_parser = parse_duration)]
    pub start_grace: Duration,
    /// Freeze all restarts when more than this share of the stores is offline at once while
    /// their pfs runs (a ZooKeeper or network fault is more likely than that many stuck
    /// daemons).
    #[arg(long, env = "PUREFLASH_FREEZE_SHARE", default_value_t = 0.5, value_parser = parse_share)]
    pub freeze_share: f64,
    /// …and at least this many stores are offline (a lone stuck store is always recovered).
    #[arg(long, env = "PUREFLASH_FREEZE_MIN_OFFLINE", default_value_t = 2)]
    pub freeze_min_offline: usize,
    /// At most this many restarts in flight at once, cluster-wide (at least 1: to stop
    /// restarts, disable recovery in the stores' specs or pause it per store).
    #[arg(long, env = "PUREFLASH_MAX_RESTARTS_IN_FLIGHT", default_value_t = 1, value_parser = parse_at_least_one)]
    pub max_restarts_in_flight: usize,
    /// A changed spec replaces a serving store's Pod only while fewer than this many other
    /// stores are unavailable (offline, not running, or not yet registered by their new pfs),
    /// and by an eviction its disruption budgets allow; stores that serve nothing are replaced
    /// at once; 0: a serving store's Pod is replaced only by a manual restart.
    #[arg(long, env = "PUREFLASH_MAX_UNAVAILABLE", default_value_t = 1)]
    pub max_unavailable: usize,
    /// Keep a PodDisruptionBudget (`pureflash-stores`) over each namespace's pfs Pods, so that
    /// evictions (`kubectl drain`) take down the stores of at most `--max-unavailable-nodes`
    /// nodes at once; `false` where another budget covers the pfs Pods (two budgets over one
    /// Pod make its evictions fail): the budgets an earlier run kept are then deleted.
    #[arg(long, env = "PUREFLASH_DISRUPTION_BUDGET", default_value_t = true, action = clap::ArgAction::Set)]
    pub disruption_budget: bool,
    /// Evictions may take down the stores of this many nodes at once (a node's stores go down
    /// together in its drain); 0: no serving pfs is evicted at all.
    #[arg(long, env = "PUREFLASH_MAX_UNAVAILABLE_NODES", default_value_t = 1)]
    pub max_unavailable_nodes: usize,
    /// How long a restart counts as in flight if its store does not come back.
    #[arg(long, env = "PUREFLASH_RESTART_WINDOW", default_value = "3m", value_parser = parse_duration)]
    pub restart_window: Duration,
    /// How long a store must stay back after a restart before its backoff (and its count of
    /// restarts in a row, which maxRestartsPerHour bounds) starts over; one that drops out
    /// again sooner is flapping and waits longer each time.
    #[arg(long, env = "PUREFLASH_STABLE_PERIOD", default_value = "10m", value_parser = parse_duration)]
    pub stable_period: Duration,
}

#[derive(Clone, Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub kube: KubeArgs,
    #[command(flatten)]
    pub zk: ZkArgs,
    /// ZooKeeper connect string as pfs Pods reach it, written into pfs.conf (default: --zk,
    /// without tcp:// prefixes).
    #[arg(long, env = "PUREFLASH_PFS_ZK", value_parser = parse_pfs_connect_string)]
    pub pfs_zk: Option<String>,
    /// Metadata DB URL to keep in sync (the leader does it); none: no DB sync.
    #[arg(long, env = "PUREFLASH_DB", hide_env_values = true)]
    pub db: Option<String>,
    #[command(flatten)]
    pub lease: LeaseArgs,
    #[command(flatten)]
    pub recovery: RecoveryArgs,
    /// Address of /livez, /readyz and /metrics; `[::]` serves IPv6 and IPv4 (IPv4 alone where
    /// the host has no IPv6).
    #[arg(long, env = "PUREFLASH_ADMIN_ADDRESS", default_value = "[::]:8080")]
    pub admin_address: std::net::SocketAddr,
    /// Every store is reconciled at least this often, events or not.
    #[arg(long, env = "PUREFLASH_REQUEUE_INTERVAL", default_value = "5m", value_parser = parse_duration)]
    pub requeue_interval: Duration,
    /// At most this many stores are reconciled at once (0: no limit). Bounds the requests in
    /// flight to the API server, and so its connections, when every store wakes at once.
    #[arg(long, env = "PUREFLASH_RECONCILE_CONCURRENCY", default_value_t = 16)]
    pub reconcile_concurrency: u16,
}

fn parse_share(text: &str) -> Result<f64, String> {
    let share: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    if (0.0..=1.0).contains(&share) {
        Ok(share)
    } else {
        Err("must be between 0 and 1".into())
    }
}

fn parse_at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(count) => Ok(count),
        Err(_) => Err(format!("{text:?} is not a whole number")),
    }
}

/// A Kubernetes object name (a DNS-1123 subdomain), checked at start: the API server refuses
/// any other with every request, which would leave the operator retrying without end.
fn parse_object_name(text: &str) -> Result<String, String> {
    // Its parts are not held to a label's 63 characters, only the whole to 253.
    if text.len() <= 253 && text.split('.').all(is_dns_label_text) {
        Ok(text.to_owned())
    } else {
        Err("must be lowercase letters, digits, '-' and '.', start and end with a letter or digit, at most 253 characters".into())
    }
}

/// A namespace name (a DNS-1123 label).
fn parse_namespace(text: &str) -> Result<String, String> {
    if is_dns_label(text) {
        Ok(text.to_owned())
    } else {
        Err("must be lowercase letters, digits and '-', start and end with a letter or digit, at most 63 characters".into())
    }
}

/// The namespace to watch, or empty for all.
fn parse_watch_namespace(text: &str) -> Result<String, String> {
    if text.is_empty() {
        Ok(String::new())
    } else {
        parse_namespace(text)
    }
}

fn is_dns_label(text: &str) -> bool {
    text.len() <= 63 && is_dns_label_text(text)
}

/// Lowercase letters, digits and '-', starting and ending with a letter or digit.
fn is_dns_label_text(text: &str) -> bool {
    let bytes = text.as_bytes();
    let alphanumeric = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    bytes.first().is_some_and(alphanumeric)
        && bytes.last().is_some_and(alphanumeric)
        && bytes.iter().all(|b| alphanumeric(b) || *b == b'-')
}

/// ZooKeeper: where the PureFlash cluster registers its stores.
#[derive(Clone, Debug, Args)]
pub struct ZkArgs {
    /// ZooKeeper connect string, `host:port[,host:port…][/chroot]`.
    #[arg(long = "zk", env = "PUREFLASH_ZK", default_value = "127.0.0.1:2181", value_parser = parse_connect_string)]
    pub connect: String,
    /// PureFlash cluster name: the stores live under `/pureflash/<cluster>/stores`.
    #[arg(long, env = "PUREFLASH_CLUSTER", default_value = crate::zk::layout::DEFAULT_CLUSTER)]
    pub cluster: String,
    /// Session timeout to ask ZooKeeper for (the server clamps it to its own bounds).
    #[arg(long = "zk-session-timeout", env = "PUREFLASH_ZK_SESSION_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub session_timeout: Duration,
    /// Period of the full reload of ZooKeeper and of the DB drift repair (`500ms`, `2s`, `1m`).
    #[arg(long, env = "PUREFLASH_RESYNC_INTERVAL", default_value = "60s", value_parser = parse_duration)]
    pub resync_interval: Duration,
}

/// The metadata DB.
#[derive(Clone, Debug, Args)]
pub struct DbArgs {
    /// Metadata DB URL: `sqlite:///abs/path.db` (created if missing, WAL mode), `sqlite::memory:`,
    /// or `mysql://user:pass@host:port/s5` for PureFlash's MariaDB.
    #[arg(
        long,
        env = "PUREFLASH_DB",
        hide_env_values = true,
        default_value = "sqlite://pureflash.db"
    )]
    pub db: String,
}

#[derive(Clone, Debug, Args)]
pub struct SyncArgs {
    #[command(flatten)]
    pub zk: ZkArgs,
    #[command(flatten)]
    pub db: DbArgs,
    /// Load ZooKeeper once, write the DB once, print a summary and exit.
    #[arg(long, env = "PUREFLASH_ONCE")]
    pub once: bool,
}

/// Logging.
#[derive(Clone, Debug, Args)]
pub struct LogArgs {
    /// Log filter, `tracing` syntax (`info`, `pureflash_operator=debug,info`). The ZooKeeper
    /// client's own messages are quiet unless asked for (`zookeeper_client=info`).
    #[arg(
        long = "log",
        env = "PUREFLASH_LOG",
        default_value = "info,zookeeper_client=warn",
        global = true
    )]
    pub filter: String,
    /// Log format: `text` for people, `json` for log collectors.
    #[arg(
        long = "log-format",
        env = "PUREFLASH_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    pub format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The longest period or timeout accepted: past any sensible setting, and far from the limits
/// of the clock arithmetic that schedules it.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Parses `500ms`, `2s`, `1m`, `1h 30m`; zero is refused (every duration here is a period or
/// a timeout), and so is more than a year.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text).map_err(|error| match error {
        // humantime's word for a fraction it cannot take exactly, as well as for a number too
        // large for it.
        humantime::DurationError::NumberOverflow if text.contains('.') => format!(
            "{text:?}: a fraction must come to whole seconds for h and d (0.5h), to whole \
             nanoseconds for the other units (1.5s), and is not taken for ns"
        ),
        error => format!("{error} (examples: 500ms, 2s, 1m)"),
    })?;
    if duration.is_zero() {
        return Err("must be greater than zero".into());
    }
    if duration > MAX_DURATION {
        return Err("must be at most 365d".into());
    }
    Ok(duration)
}

fn without_scheme(server: &str) -> &str {
    server.strip_prefix("tcp://").unwrap_or(server)
}

/// Checks a ZooKeeper connect string as the ZooKeeper client reads it —
/// `[tcp://]host[:port][,…][/chroot]`, IPv6 hosts in brackets — so that a typo is a clear
/// error at start rather than a connection retried forever. TLS (`tcp+tls://`) is refused:
/// the client is built without it.
pub fn parse_connect_string(text: &str) -> Result<String, String> {
    if text.trim().is_empty() {
        return Err("no server given (example: zk-0:2181,zk-1:2181/pureflash)".into());
    }
    if text.contains("tcp+tls://") {
        return Err("ZooKeeper over TLS (tcp+tls://) is not supported".into());
    }
    // The chroot follows the last server.
    let (servers, last) = text.rsplit_once(',').unwrap_or(("", text));
    let last = without_scheme(last);
    let (last, chroot) = match last.find('/') {
        Some(slash) => (&last[..slash], Some(&last[slash..])),
        None => (last, None),
    };
    let servers = servers
        .split(',')
        .filter(|_| !servers.is_empty())
        .chain([last]);
    for server in servers {
        let address = without_scheme(server);
        let (host, port) = match address.strip_prefix('[') {
            Some(bracketed) => {
                let (host, rest) = bracketed
                    .split_once(']')
                    .ok_or_else(|| format!("{server:?}: an IPv6 address lacks its closing ']'"))?;
                match rest {
                    "" => (host, None),
                    _ => (
                        host,
                        Some(rest.strip_prefix(':').ok_or_else(|| {
                            format!("{server:?}: expected ':port' after the IPv6 address")
                        })?),
                    ),
                }
            }
            None => match address.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (address, None),
            },
        };
        if host.is_empty() {
            return Err(format!("{server:?}: no host (example: zk-0:2181)"));
        }
        if let Some(port) = port
            && !port.is_empty()
            && !port.parse::<u16>().is_ok_and(|p| p > 0)
        {
            return Err(format!("{server:?}: {port:?} is not a port (1-65535)"));
        }
    }
    if let Some(chroot) = chroot
        && chroot != "/"
        && chroot[1..].split('/').any(|name| {
            name.is_empty()
                || name == "."
                || name == ".."
                || name.contains(crate::zk::layout::refused_in_paths)
        })
    {
        return Err(format!("chroot {chroot:?}: must be /name[/name…]"));
    }
    Ok(text.to_owned())
}

/// A connect string as pfs's own ZooKeeper client reads it: host:port pairs and a chroot,
/// without the `tcp://` prefixes only the operator's client knows.
pub fn parse_pfs_connect_string(text: &str) -> Result<String, String> {
    if text.contains("://") {
        return Err("pfs reads host:port[,host:port…][/chroot], without a scheme".into());
    }
    // Written into pfs.conf as it is: what pfs's parser reads as syntax (a comment, a quote,
    // a line break) would cut it short or add lines.
    if text.contains(char::is_whitespace) || !crate::controller::pods::is_conf_value(text) {
        return Err(
            "pfs.conf cannot hold whitespace, control characters, '\\', '#', ';' or '\"' here"
                .into(),
        );
    }
    parse_connect_string(text)
}

/// The connect string pfs is given when `--pfs-zk` is not: the operator's own, without the
/// `tcp://` prefixes only the operator's client reads.
pub fn pfs_connect_string_of(operator: &str) -> Result<String, String> {
    let servers: Vec<&str> = operator.split(',').map(without_scheme).collect();
    parse_pfs_connect_string(&servers.join(","))
}

/// A lease duration: the Lease publishes whole seconds, and a lease of less than one second
/// would not survive one slow request.
pub fn parse_lease_duration(text: &str) -> Result<Duration, String> {
    let duration = parse_duration(text)?;
    if duration < Duration::from_secs(1) {
        return Err("must be at least 1s (the Lease counts whole seconds)".into());
    }
    // A day is far past any sensible takeover time, and keeps the timing arithmetic in range.
    if duration > Duration::from_secs(24 * 3600) {
        return Err("must be at most 24h (a standby waits this long to take over)".into());
    }
    Ok(duration)
}

/// Logs go to stderr (stdout carries command output such as the `--once` summary).
pub fn init_logging(args: &LogArgs) {
    let filter = EnvFilter::try_new(&args.filter).unwrap_or_else(|error| {
        eprintln!(
            "warning: invalid --log filter {:?} ({error}); using \"info\"",
            args.filter
        );
        EnvFilter::new("info")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match args.format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// The flags of subcommand `name` as a Markdown table: flag, environment variable, default,
/// and the first line of its help. The README's configuration reference is this output, and a
/// test keeps the two equal.
pub fn flags_reference(name: &str) -> Option<String> {
    let mut root = <Cli as clap::CommandFactory>::command();
    root.build(); // propagates the global flags (--log, --log-format) to the subcommands
    let command = root.find_subcommand(name)?;
    let mut table = String::from("| flag | environment | default | meaning |\n|---|---|---|---|\n");
    for arg in command.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if matches!(long, "help" | "version") {
            continue;
        }
        let env = arg
            .get_env()
            .map(|e| format!("`{}`", e.to_string_lossy()))
            .unwrap_or_default();
        let defaults: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .collect();
        let default = match defaults.join(",") {
            joined if joined.is_empty() => String::new(),
            joined => format!("`{joined}`"),
        };
        let help = arg
            .get_help()
            .map(|h| h.to_string().replace('\n', " ").replace('|', "\\|"))
            .unwrap_or_default();
        table.push_str(&format!("| `--{long}` | {env} | {default} | {help} |\n"));
    }
    Some(table)
}

/// Runs the chosen command.
pub async fn run(cli: Cli) -> Result<(), crate::Error> {
    match cli.command {
        Command::Sync(args) => sync_command::run(args).await,
        Command::Run(args) => crate::run_command::run(*args).await,
        Command::Crd => {
            print!("{}", crate::crd::crd_yaml());
            Ok(())
        }
        Command::Reference { command } => match flags_reference(&command) {
            Some(table) => {
                print!("{table}");
                Ok(())
            }
            None => Err(crate::Error::Usage(format!(
                "no command {command:?} (try run or sync)"
            ))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn verify_cli() {
        Cli::command().debug_assert();
    }

    #[test]
    fn names_are_checked_as_the_api_server_checks_them() {
        for name in [
            "pureflash-operator",
            "a",
            "lease.example.com",
            &"a".repeat(253),
        ] {
            assert_eq!(parse_object_name(name).as_deref(), Ok(name), "{name}");
        }
        for name in [
            "",
            "PureFlash_Lease",
            "-a",
            "a-",
            "a..b",
            ".a",
            &"a".repeat(254),
        ] {
            assert!(parse_object_name(name).is_err(), "{name}");
        }
        for name in ["pureflash", "ns-1", &"n".repeat(63)] {
            assert_eq!(parse_namespace(name).as_deref(), Ok(name), "{name}");
        }
        for name in ["", "a.b", "Ns", "ns-", &"n".repeat(64)] {
            assert!(parse_namespace(name).is_err(), "{name}");
        }
        assert_eq!(parse_watch_namespace("").as_deref(), Ok(""));
        assert!(parse_watch_namespace("Pure").is_err());

        let refused = Cli::try_parse_from([
            "pureflash-operator",
            "run",
            "--lease-name",
            "PureFlash_Lease",
        ])
        .unwrap_err()
        .to_string();
        assert!(refused.contains("--lease-name"), "{refused}");
    }

    #[test]
    fn sync_flags_and_defaults() {
        let cli = Cli::try_parse_from(["pureflash-operator", "sync"]).unwrap();
        let Command::Sync(args) = cli.command else {
            panic!("sync")
        };
        assert_eq!(args.zk.connect, "127.0.0.1:2181");
        assert_eq!(args.zk.cluster, "cluster1");
        assert_eq!(args.zk.resync_interval, Duration::from_secs(60));
        assert!(!args.once);

        let cli = Cli::try_parse_from([
            "pureflash-operator",
            "sync",
            "--zk",
            "10.0.0.1:2181,10.0.0.2:2181",
            "--cluster",
            "c2",
            "--db",
            "sqlite:///tmp/x.db",
            "--resync-interval",
            "500ms",
            "--once",
        ])
        .unwrap();
        let Command::Sync(args) = cli.command else {
            panic!("sync")
        };
        assert_eq!(args.zk.connect, "10.0.0.1:2181,10.0.0.2:2181");
        assert_eq!(args.zk.resync_interval, Duration::from_millis(500));
        assert_eq!(args.db.db, "sqlite:///tmp/x.db");
        assert!(args.once);
    }

    #[test]
    fn restarts_in_flight_are_at_least_one() {
        let parse = |value: &str| {
            Cli::try_parse_from([
                "pureflash-operator",
                "run",
                "--max-restarts-in-flight",
                value,
            ])
        };
        let Command::Run(args) = parse("3").unwrap().command else {
            panic!("run")
        };
        assert_eq!(args.recovery.max_restarts_in_flight, 3);
        // 0 would hold every restart for ever, silently (TooManyInFlight).
        assert!(
            parse("0")
                .unwrap_err()
                .to_string()
                .contains("must be at least 1")
        );
        assert!(parse("-1").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").unwrap_err().contains("examples"));
        assert!(
            Cli::try_parse_from(["pureflash-operator", "sync", "--resync-interval", "fast"])
                .is_err()
        );
        assert_eq!(parse_lease_duration("1s"), Ok(Duration::from_secs(1)));
        assert!(
            parse_lease_duration("500ms")
                .unwrap_err()
                .contains("at least 1s")
        );
        assert!(
            parse_lease_duration("25h")
                .unwrap_err()
                .contains("at most 24h")
        );
        assert_eq!(parse_duration("365d"), Ok(MAX_DURATION));
        assert_eq!(parse_duration("0.5h"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        for inexact in ["0.333h", "1.001d", "0.5ns"] {
            let error = parse_duration(inexact).unwrap_err();
            assert!(
                error.contains("a fraction must come to whole"),
                "{inexact}: {error}"
            );
        }
        assert!(
            parse_duration("100000000y")
                .unwrap_err()
                .contains("at most 365d")
        );
    }

    #[test]
    fn connect_strings() {
        for good in [
            "127.0.0.1:2181",
            "zk-0:2181,zk-1:2181,zk-2",
            "zk-0.zk.storage.svc:2181/pureflash",
            "zk-0:2181,zk-1:2181/pf/a",
            "[::1]:2181,[fe80::1]",
            "tcp://zk:2181,tcp://zk-b:2182",
            "localhost",
            "zk:2181/",
        ] {
            assert_eq!(parse_connect_string(good).as_deref(), Ok(good), "{good}");
        }
        for (bad, why) in [
            ("", "no server"),
            ("/pf", "no host"),
            ("127.0.0.1:21a81", "not a port"),
            ("zk:0", "not a port"),
            ("zk:70000", "not a port"),
            ("zk-0:2181,,zk-1:2181", "no host"),
            (":2181", "no host"),
            ("[::1:2181", "closing ']'"),
            ("[::1]2181", "expected ':port'"),
            ("zk:2181/pf/", "chroot"),
            ("zk:2181/pf//a", "chroot"),
            ("zk:2181/./pf", "chroot"),
            ("zk:2181/a/../b", "chroot"),
            ("zk:2181/a\tb", "chroot"),
            ("tcp+tls://zk:2181", "TLS"),
        ] {
            let error = parse_connect_string(bad).unwrap_err();
            assert!(error.contains(why), "{bad:?}: {error}");
        }
        assert!(
            Cli::try_parse_from(["pureflash-operator", "sync", "--zk", "127.0.0.1:21a81"]).is_err()
        );
        assert!(parse_pfs_connect_string("zk-0:2181,zk-1:2181/pf").is_ok());
        assert!(
            parse_pfs_connect_string("tcp://zk:2181")
                .unwrap_err()
                .contains("scheme")
        );
        for unwritable in ["zk-0:2181#x", "zk-0:2181;x", "zk-0:2181 x", "\"zk-0:2181"] {
            assert!(
                parse_pfs_connect_string(unwritable).is_err(),
                "{unwritable}"
            );
        }
        // The operator's own, without its client's schemes, is pfs's default.
        assert_eq!(
            pfs_connect_string_of("tcp://zk-0:2181,zk-1:2181,tcp://[::1]:2181/pf").as_deref(),
            Ok("zk-0:2181,zk-1:2181,[::1]:2181/pf")
        );
    }
}
