//! Test fixtures that read like sentences: `StoreView::test(3).with_trays(2).dead()`.

use std::sync::Arc;

use crate::metadb::{DbRows, PortKey, PortRow, StoreRow, TrayRow};
use crate::zk::{ClusterView, Field, StoreId, StoreView, TrayUuid, TrayView};

/// The `n`th test tray uuid.
pub fn uuid(n: u32) -> TrayUuid {
    format!("00000000-0000-4000-8000-{n:012}")
        .parse()
        .expect("valid uuid")
}

impl StoreView {
    /// A registered, alive store `id` at 10.0.x.y with no trays or ports.
    pub fn test(id: u32) -> Self {
        let mut store = StoreView::new(StoreId::new(id).expect("valid id"));
        store.mngt_ip = Field::Valid(
            format!("10.0.{}.{}", id / 256, id % 256)
                .parse()
                .expect("ip"),
        );
        store.state = Field::Valid("OK".into());
        store.alive = true;
        store
    }

    pub fn at(mut self, ip: &str) -> Self {
        self.mngt_ip = Field::Valid(ip.parse().expect("ip"));
        self
    }

    pub fn without_ip(mut self) -> Self {
        self.mngt_ip = Field::Missing;
        self
    }

    pub fn dead(mut self) -> Self {
        self.alive = false;
        self
    }

    /// Marked as a store ZooKeeper refused to read.
    pub fn refused(mut self) -> Self {
        self.unreadable = Some(format!("ZooKeeper refused to read store {}", self.id));
        self
    }

    /// Adds `n` online trays numbered `id*100 + i`.
    pub fn with_trays(mut self, n: u32) -> Self {
        for i in 0..n {
            let number = self.id.get() * 100 + i;
            self.trays
                .insert(uuid(number), TrayView::test(&format!("/dev/nvme{i}n1")));
        }
        self
    }

    pub fn with_tray(mut self, uuid: TrayUuid, tray: TrayView) -> Self {
        self.trays.insert(uuid, tray);
        self
    }

    pub fn with_port(mut self, ip: &str) -> Self {
        self.ports.insert(ip.parse().expect("ip"));
        self
    }

    pub fn with_rep_port(mut self, ip: &str) -> Self {
        self.rep_ports.insert(ip.parse().expect("ip"));
        self
    }
}

impl TrayView {
    /// An online 1 TB tray with 64 MiB objects.
    pub fn test(device: &str) -> Self {
        TrayView {
            devname: Field::Valid(device.to_owned()),
            capacity: Field::Valid(1_000_000_000_000),
            object_size: Field::Valid(64 << 20),
            free_size: Field::Valid(900_000_000_000),
            state: Field::Valid("OK".into()),
            online: true,
        }
    }

    pub fn offline(mut self) -> Self {
        self.online = false;
        self
    }
}

/// A cluster view of these stores.
pub fn view(stores: impl IntoIterator<Item = StoreView>) -> ClusterView {
    ClusterView {
        stores: stores.into_iter().map(|s| (s.id, Arc::new(s))).collect(),
        malformed_dirs: Default::default(),
        stores_dir: true,
    }
}

pub fn store_row(ip: &str, status: &str) -> StoreRow {
    StoreRow {
        mngt_ip: ip.to_owned(),
        status: status.to_owned(),
    }
}

pub fn tray_row(store_id: i64, device: &str, status: &str) -> TrayRow {
    TrayRow {
        device: device.to_owned(),
        status: status.to_owned(),
        raw_capacity: 1_000_000_000_000,
        object_size: 64 << 20,
        store_id,
    }
}

pub fn port_key(ip: &str, purpose: i64) -> PortKey {
    PortKey {
        ip_addr: ip.to_owned(),
        purpose,
    }
}

pub fn port_row(store_id: i64) -> PortRow {
    PortRow {
        store_id: Some(store_id),
        status: "OK".to_owned(),
    }
}

impl DbRows {
    /// What the DB holds after syncing `view` into an empty DB.
    pub fn synced_from(view: &ClusterView) -> DbRows {
        let mut rows = DbRows::default();
        rows.apply(&crate::metadb::plan(view, &rows))
            .expect("plan applies");
        rows
    }
}
