//! A `pfs` store daemon as ZooKeeper sees it (design.md §2), quirks included.
//!
//! Written from the layout description, not from the operator's code, so a mistake in the
//! operator's reading of the layout cannot hide behind the same mistake here.
//!
//! Each session of the simulator talks to ZooKeeper through its own [`Proxy`], which is how
//! the failure modes are made without touching the server:
//! - [`PfsSim::crash`]: the session is closed; `alive` and every `online` go at once.
//! - [`PfsSim::kill`]: `kill -9`: the connection is cut and the session left to expire, so the
//!   ephemerals go only after the session timeout.
//! - [`PfsSim::hang`] / [`PfsSim::resume`]: no traffic while the "process" lives on; once the
//!   session has expired, resuming does not bring it back and — the real `pfs` quirk — nothing
//!   re-registers. [`PfsSim::lose_session`] does both.
//! - [`PfsSim::restart`]: a new session registers again, retrying every second while the old
//!   `alive` still exists (after a kill, until the old session expires).

use std::time::{Duration, Instant};

use zookeeper_client::{self as zk, Acls, CreateMode, SessionState};

use crate::proxy::{Proxy, ProxyMode};

/// One disk of a simulated store.
#[derive(Clone, Debug)]
pub struct TraySpec {
    pub uuid: String,
    pub device: String,
    pub capacity: u64,
    pub object_size: u64,
    pub free_size: u64,
}

/// What a simulated store registers, and how.
#[derive(Clone, Debug)]
pub struct PfsSpec {
    /// The real ZooKeeper (`host:port`); the simulator connects through its own proxy.
    pub zk: String,
    pub cluster: String,
    pub store_id: u32,
    pub mngt_ip: String,
    pub trays: Vec<TraySpec>,
    pub ports: Vec<String>,
    pub rep_ports: Vec<String>,
    /// Session timeout asked of ZooKeeper (`pfs` asks for 3 s).
    pub session_timeout: Duration,
    /// Delay between attempts to create `alive` while an old one exists (`pfs`: 1 s).
    pub alive_retry: Duration,
    /// Give up registering after this long (a real `pfs` retries forever).
    pub alive_wait_limit: Duration,
    /// Fault injection for the `pfs-sim` binary: hang (no traffic, process alive) this long
    /// after registering, as a `pfs` stuck on a disk does.
    pub hang_after: Option<Duration>,
    /// For the `pfs-sim` binary: wait this long after starting before registering, as a `pfs`
    /// that takes its time opening its disks does.
    pub start_delay: Option<Duration>,
}

impl PfsSpec {
    /// Store `store_id` with two trays, one data port and one replication port, on addresses
    /// derived from the id (so stores of one test never collide).
    pub fn new(zk: &str, cluster: &str, store_id: u32) -> PfsSpec {
        let (hi, lo) = (store_id / 256 % 256, store_id % 256);
        PfsSpec {
            zk: zk.to_owned(),
            cluster: cluster.to_owned(),
            store_id,
            mngt_ip: format!("10.10.{hi}.{lo}"),
            trays: Vec::new(),
            ports: vec![format!("10.20.{hi}.{lo}")],
            rep_ports: vec![format!("10.30.{hi}.{lo}")],
            session_timeout: Duration::from_millis(3000),
            alive_retry: Duration::from_secs(1),
            alive_wait_limit: Duration::from_secs(60),
            hang_after: None,
            start_delay: None,
        }
        .with_trays(2)
    }

    /// Replaces the trays by `n` trays with ids derived from the store id.
    pub fn with_trays(mut self, n: u32) -> PfsSpec {
        self.trays = (0..n)
            .map(|i| TraySpec {
                uuid: format!("{:08x}-0000-4000-8000-{:012x}", self.store_id, i),
                device: format!("/dev/nvme{i}n1"),
                capacity: 1_000_204_886_016,
                object_size: 64 << 20,
                free_size: 1_000_000_000_000 - u64::from(i),
            })
            .collect();
        self
    }

    pub fn with_session_timeout(mut self, timeout: Duration) -> PfsSpec {
        self.session_timeout = timeout;
        self
    }

    pub fn with_mngt_ip(mut self, ip: &str) -> PfsSpec {
        self.mngt_ip = ip.to_owned();
        self
    }

    /// `/pureflash/<cluster>/stores/<id>`
    pub fn store_path(&self) -> String {
        format!("/pureflash/{}/stores/{}", self.cluster, self.store_id)
    }
}

/// A failure of the simulator, with the ZooKeeper path involved.
#[derive(Debug)]
pub struct RegisterError {
    pub path: String,
    pub error: zk::Error,
}

impl std::fmt::Display for RegisterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pfs simulator: {}: {}", self.path, self.error)
    }
}

impl std::error::Error for RegisterError {}

/// A running simulated store: its current session and that session's proxy.
pub struct PfsSim {
    spec: PfsSpec,
    session: Option<(Proxy, zk::Client)>,
}

impl PfsSim {
    /// Starts a store the way `pfs` does: connect, write the persistent nodes, then `alive`
    /// (retrying while an old one exists) and every tray's `online`.
    pub async fn start(spec: PfsSpec) -> Result<PfsSim, RegisterError> {
        let mut sim = PfsSim {
            spec,
            session: None,
        };
        sim.restart().await?;
        Ok(sim)
    }

    /// Starts a store whose whole tree, `alive` included, is created in one multi-op: a store
    /// that appears between two reads of a one-shot watcher.
    pub async fn start_atomically(spec: PfsSpec) -> Result<PfsSim, RegisterError> {
        let (proxy, client) = connect(&spec).await?;
        let stores = format!("/pureflash/{}/stores", spec.cluster);
        client
            .mkdir(&stores, &persistent())
            .await
            .map_err(at(&stores))?;
        let base = spec.store_path();
        let (persistent, ephemeral) = (persistent(), ephemeral());
        let mut writer = client.new_multi_writer();
        let mut add = |path: String, data: &[u8], options: &zk::CreateOptions<'_>| {
            writer.add_create(&path, data, options).map_err(at(&path))
        };
        add(base.clone(), b"", &persistent)?;
        add(
            format!("{base}/mngt_ip"),
            spec.mngt_ip.as_bytes(),
            &persistent,
        )?;
        add(format!("{base}/trays"), b"", &persistent)?;
        for tray in &spec.trays {
            let t = format!("{base}/trays/{}", tray.uuid);
            add(t.clone(), b"", &persistent)?;
            for (name, data) in tray_data(tray) {
                add(format!("{t}/{name}"), data.as_bytes(), &persistent)?;
            }
            add(format!("{t}/online"), b"", &ephemeral)?;
        }
        add(format!("{base}/ports"), b"", &persistent)?;
        for ip in &spec.ports {
            add(format!("{base}/ports/{ip}"), b"", &persistent)?;
        }
        add(format!("{base}/rep_ports"), b"", &persistent)?;
        for ip in &spec.rep_ports {
            add(format!("{base}/rep_ports/{ip}"), b"", &persistent)?;
        }
        add(format!("{base}/state"), b"OK", &persistent)?;
        add(format!("{base}/alive"), b"", &ephemeral)?;
        writer.commit().await.map_err(|e| RegisterError {
            path: base.clone(),
            error: e.into(),
        })?;
        Ok(PfsSim {
            spec,
            session: Some((proxy, client)),
        })
    }

    pub fn spec(&self) -> &PfsSpec {
        &self.spec
    }

    /// The current session's state, `None` when the "process" is not running.
    pub fn session_state(&self) -> Option<SessionState> {
        self.session.as_ref().map(|(_, client)| client.state())
    }

    /// The current session's id (what ZooKeeper records as `alive`'s `ephemeralOwner`).
    pub fn session_id(&self) -> Option<i64> {
        self.session
            .as_ref()
            .map(|(_, client)| client.session_id().0)
    }

    /// Crash with the session closed: the server deletes the ephemerals at once.
    pub async fn crash(&mut self) {
        if let Some((proxy, client)) = self.session.take() {
            let mut state = client.state_watcher();
            drop(client);
            let _ = tokio::time::timeout(Duration::from_secs(5), async {
                while !state.changed().await.is_terminated() {}
            })
            .await;
            drop(proxy);
        }
    }

    /// `kill -9`: the connection is cut and the session is left to expire on the server.
    pub async fn kill(&mut self) {
        if let Some((proxy, client)) = self.session.take() {
            proxy.set_mode(ProxyMode::Sever);
            drop(proxy); // stops listening too: no reconnect can send a close
            drop(client);
        }
    }

    /// Stops all traffic; the process keeps running. The session expires after its timeout.
    pub fn hang(&self) {
        if let Some((proxy, _)) = &self.session {
            proxy.set_mode(ProxyMode::Stall);
        }
    }

    /// Lets traffic flow again. If the session expired meanwhile it stays dead: `pfs` only logs
    /// the expiry and never re-creates `alive`.
    pub fn resume(&self) {
        if let Some((proxy, _)) = &self.session {
            proxy.set_mode(ProxyMode::Forward);
        }
    }

    /// Hangs until the session has expired, then resumes: a live process that is OFFLINE for
    /// good. Returns once the client itself knows its session is gone.
    pub async fn lose_session(&mut self) {
        self.hang();
        let deadline = Instant::now() + self.spec.session_timeout * 4 + Duration::from_secs(10);
        while self.session_state().is_some_and(|s| !s.is_terminated()) {
            assert!(
                Instant::now() < deadline,
                "store {}: session did not expire",
                self.spec.store_id
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.resume();
    }

    /// (Re)starts with a new session and registers; the old session, if any, is abandoned the
    /// way a restarted process abandons it (left to expire unless already gone).
    ///
    /// A session lost before registration completed (a ZooKeeper server stalled past the
    /// session timeout while this store waited for its old `alive` to go) is replaced and the
    /// registration starts over, within [`PfsSpec::alive_wait_limit`]: the process that was
    /// started is the one that registers. Only a session lost after registration stays lost.
    pub async fn restart(&mut self) -> Result<(), RegisterError> {
        self.kill().await;
        let deadline = Instant::now() + self.spec.alive_wait_limit;
        loop {
            let (proxy, client) = connect(&self.spec).await?;
            match register(&client, &self.spec).await {
                Ok(()) => {
                    self.session = Some((proxy, client));
                    return Ok(());
                }
                Err(error) if client.state().is_terminated() && Instant::now() < deadline => {
                    eprintln!(
                        "pfs-sim: store {}: {error}; registering again in a new session",
                        self.spec.store_id
                    );
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Deletes tray `index`'s `online` node (the disk failed; the store lives on).
    pub async fn tray_offline(&self, index: usize) -> Result<(), RegisterError> {
        let path = self.tray_path(index, "online");
        match self.client().delete(&path, None).await {
            Ok(()) | Err(zk::Error::NoNode) => Ok(()),
            Err(error) => Err(RegisterError { path, error }),
        }
    }

    /// Re-creates tray `index`'s `online` node in the current session.
    pub async fn tray_online(&self, index: usize) -> Result<(), RegisterError> {
        let path = self.tray_path(index, "online");
        match self.client().create(&path, b"", &ephemeral()).await {
            Ok(_) | Err(zk::Error::NodeExists) => Ok(()),
            Err(error) => Err(RegisterError { path, error }),
        }
    }

    /// Updates tray `index`'s `free_size`, as a running `pfs` does.
    pub async fn set_free_size(&self, index: usize, free: u64) -> Result<(), RegisterError> {
        let path = self.tray_path(index, "free_size");
        self.client()
            .set_data(&path, free.to_string().as_bytes(), None)
            .await
            .map(|_| ())
            .map_err(at(&path))
    }

    fn tray_path(&self, index: usize, node: &str) -> String {
        format!(
            "{}/trays/{}/{node}",
            self.spec.store_path(),
            self.spec.trays[index].uuid
        )
    }

    fn client(&self) -> &zk::Client {
        &self
            .session
            .as_ref()
            .expect("the simulated pfs is not running")
            .1
    }
}

fn persistent() -> zk::CreateOptions<'static> {
    CreateMode::Persistent.with_acls(Acls::anyone_all())
}

fn ephemeral() -> zk::CreateOptions<'static> {
    CreateMode::Ephemeral.with_acls(Acls::anyone_all())
}

fn at(path: &str) -> impl FnOnce(zk::Error) -> RegisterError + '_ {
    move |error| RegisterError {
        path: path.to_owned(),
        error,
    }
}

fn tray_data(tray: &TraySpec) -> [(&'static str, String); 5] {
    [
        ("devname", tray.device.clone()),
        ("capacity", tray.capacity.to_string()),
        ("object_size", tray.object_size.to_string()),
        ("free_size", tray.free_size.to_string()),
        // pfs creates a tray's state node without data.
        ("state", String::new()),
    ]
}

async fn connect(spec: &PfsSpec) -> Result<(Proxy, zk::Client), RegisterError> {
    let proxy = Proxy::start(&spec.zk).await;
    let client = zk::Client::connector()
        .with_session_timeout(spec.session_timeout)
        .connect(&proxy.address())
        .await
        .map_err(|error| RegisterError {
            path: spec.zk.clone(),
            error,
        })?;
    Ok((proxy, client))
}

/// Creates or overwrites a persistent node.
async fn put(client: &zk::Client, path: &str, data: &[u8]) -> Result<(), RegisterError> {
    match answered(client, async || {
        client.create(path, data, &persistent()).await
    })
    .await
    {
        Ok(_) => Ok(()),
        Err(zk::Error::NodeExists) => {
            answered(client, async || client.set_data(path, data, None).await)
                .await
                .map(|_| ())
                .map_err(at(path))
        }
        Err(error) => Err(RegisterError {
            path: path.to_owned(),
            error,
        }),
    }
}

/// Runs `request` until ZooKeeper answers it. A request cut off by a lost connection (the
/// server was slow to reply, the socket dropped) is sent again while the session lives, as
/// every ZooKeeper client must: the session, and with it the ephemerals, survive a reconnect.
/// A lost reply does not say whether the request was applied, so each request sent through
/// here is one whose repetition is harmless or recognised by the caller.
async fn answered<T>(
    client: &zk::Client,
    mut request: impl AsyncFnMut() -> Result<T, zk::Error>,
) -> Result<T, zk::Error> {
    loop {
        match request().await {
            Err(zk::Error::ConnectionLoss | zk::Error::Timeout | zk::Error::Custom(_))
                if !client.state().is_terminated() =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            result => return result,
        }
    }
}

/// Whether `path` is an ephemeral node of `client`'s own session: a create whose reply was
/// lost may have been applied.
async fn owned_by_session(client: &zk::Client, path: &str) -> bool {
    answered(client, async || client.check_stat(path).await)
        .await
        .ok()
        .flatten()
        .is_some_and(|stat| stat.ephemeral_owner == client.session_id().0)
}

/// Registration in `pfs` order: persistent nodes, then `alive`, then each tray's `online`.
async fn register(client: &zk::Client, spec: &PfsSpec) -> Result<(), RegisterError> {
    let base = spec.store_path();
    answered(client, async || client.mkdir(&base, &persistent()).await)
        .await
        .map_err(at(&base))?;
    put(client, &format!("{base}/mngt_ip"), spec.mngt_ip.as_bytes()).await?;
    put(client, &format!("{base}/trays"), b"").await?;
    for tray in &spec.trays {
        let t = format!("{base}/trays/{}", tray.uuid);
        put(client, &t, b"").await?;
        for (name, data) in tray_data(tray) {
            put(client, &format!("{t}/{name}"), data.as_bytes()).await?;
        }
    }
    for (dir, ips) in [("ports", &spec.ports), ("rep_ports", &spec.rep_ports)] {
        put(client, &format!("{base}/{dir}"), b"").await?;
        for ip in ips {
            put(client, &format!("{base}/{dir}/{ip}"), b"").await?;
        }
    }
    put(client, &format!("{base}/state"), b"OK").await?;

    let alive = format!("{base}/alive");
    let deadline = Instant::now() + spec.alive_wait_limit;
    loop {
        match answered(client, async || {
            client.create(&alive, b"", &ephemeral()).await
        })
        .await
        {
            Ok(_) => break,
            Err(zk::Error::NodeExists) if owned_by_session(client, &alive).await => break,
            Err(zk::Error::NodeExists) if Instant::now() < deadline => {
                tokio::time::sleep(spec.alive_retry).await
            }
            Err(error) => return Err(RegisterError { path: alive, error }),
        }
    }
    for tray in &spec.trays {
        let online = format!("{base}/trays/{}/online", tray.uuid);
        match answered(client, async || {
            client.create(&online, b"", &ephemeral()).await
        })
        .await
        {
            Ok(_) | Err(zk::Error::NodeExists) => {}
            Err(error) => {
                return Err(RegisterError {
                    path: online,
                    error,
                });
            }
        }
    }
    Ok(())
}
