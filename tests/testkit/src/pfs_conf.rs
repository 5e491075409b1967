//! `pfs.conf`, the real `pfs` daemon's configuration file, read the way `pfs -c <file>` reads
//! it, into a [`PfsSpec`] for the simulator.
//!
//! Sections used: `[cluster] name`, `[zookeeper] ip`, `[afs] mngt_ip` and `id`, `[tray.N] dev`,
//! `[port.N] ip`, `[rep_port.N] ip`. Everything else (engine, meta_size, replicator…) is for
//! the data path, which the simulator does not have, and is ignored — except the simulator's
//! own section, which a real `pfs` ignores in turn: `[pfs_sim] hang_after = <duration>` (see
//! [`PfsSpec::hang_after`]), `start_delay = <duration>` ([`PfsSpec::start_delay`]) and
//! `session_timeout = <duration>` (the real `pfs` asks for 3 s; a
//! longer one stands in for the C client, which never gives up a session on its own and so
//! keeps it across a ZooKeeper restart that the Rust client would call an expiry).

use ini::Ini;

use crate::pfs::{PfsSpec, TraySpec};

/// Bytes a simulated disk reports (a real `pfs` asks the device).
const TRAY_CAPACITY: u64 = 1_000_204_886_016;
const OBJECT_SIZE: u64 = 64 << 20;

/// Reads a pfs.conf. Errors name the missing or bad setting.
pub fn spec_from_conf(text: &str) -> Result<PfsSpec, String> {
    let conf = Ini::load_from_str(text).map_err(|e| format!("pfs.conf: {e}"))?;
    let get = |section: &str, key: &str| {
        conf.section(Some(section))
            .and_then(|s| s.get(key))
            .map(str::trim)
    };
    let zk = get("zookeeper", "ip").ok_or("pfs.conf: [zookeeper] ip is required")?;
    let cluster = get("cluster", "name").unwrap_or("cluster1");
    let id_text = get("afs", "id").ok_or("pfs.conf: [afs] id is required")?;
    let store_id: u32 = id_text
        .parse()
        .map_err(|_| format!("pfs.conf: [afs] id {id_text:?} is not a number"))?;
    let mngt_ip = get("afs", "mngt_ip").ok_or("pfs.conf: [afs] mngt_ip is required")?;

    // `[tray.N]`, `[port.N]`, `[rep_port.N]` in N order.
    let numbered = |prefix: &str, key: &str| -> Result<Vec<(u32, String)>, String> {
        let mut entries = Vec::new();
        for (name, properties) in conf.iter() {
            let Some(n) = name
                .and_then(|n| n.strip_prefix(prefix))
                .and_then(|n| n.strip_prefix('.'))
            else {
                continue;
            };
            let n: u32 = n
                .parse()
                .map_err(|_| format!("pfs.conf: section [{prefix}.{n}] is not numbered"))?;
            let value = properties
                .get(key)
                .ok_or_else(|| format!("pfs.conf: [{prefix}.{n}] {key} is required"))?;
            entries.push((n, value.trim().to_owned()));
        }
        entries.sort();
        Ok(entries)
    };
    let trays = numbered("tray", "dev")?
        .into_iter()
        .map(|(n, device)| TraySpec {
            uuid: format!("{store_id:08x}-0000-4000-8000-{n:012x}"),
            device,
            capacity: TRAY_CAPACITY,
            object_size: OBJECT_SIZE,
            free_size: TRAY_CAPACITY,
        })
        .collect();
    let ips = |prefix: &str| -> Result<Vec<String>, String> {
        Ok(numbered(prefix, "ip")?
            .into_iter()
            .map(|(_, ip)| ip)
            .collect())
    };
    let mut spec = PfsSpec::new(zk, cluster, store_id).with_mngt_ip(mngt_ip);
    spec.trays = trays;
    spec.ports = ips("port")?;
    spec.rep_ports = ips("rep_port")?;
    let duration = |key: &str| -> Result<Option<std::time::Duration>, String> {
        get("pfs_sim", key)
            .map(|text| {
                humantime::parse_duration(text).map_err(|e| {
                    format!("pfs.conf: [pfs_sim] {key} {text:?} is not a duration: {e}")
                })
            })
            .transpose()
    };
    spec.hang_after = duration("hang_after")?;
    spec.start_delay = duration("start_delay")?;
    if let Some(timeout) = duration("session_timeout")? {
        spec.session_timeout = timeout;
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONF: &str = "
[cluster]
name=cluster7
[zookeeper]
ip=127.0.0.1:2181
[afs]
mngt_ip=10.1.2.3
id=12
meta_size=10737418240
[engine]
name=aio
[tray.1]
dev=/dev/nvme1n1
[tray.0]
dev=/dev/nvme0n1
[port.0]
ip=10.2.0.3
[rep_port.0]
ip=10.3.0.3
";

    #[test]
    fn reads_what_pfs_reads() {
        let spec = spec_from_conf(CONF).unwrap();
        assert_eq!(
            (
                spec.cluster.as_str(),
                spec.zk.as_str(),
                spec.store_id,
                spec.mngt_ip.as_str()
            ),
            ("cluster7", "127.0.0.1:2181", 12, "10.1.2.3")
        );
        let devices: Vec<&str> = spec.trays.iter().map(|t| t.device.as_str()).collect();
        assert_eq!(devices, ["/dev/nvme0n1", "/dev/nvme1n1"]);
        assert_eq!(spec.trays[1].uuid, "0000000c-0000-4000-8000-000000000001");
        assert_eq!(spec.ports, ["10.2.0.3"]);
        assert_eq!(spec.rep_ports, ["10.3.0.3"]);
        assert_eq!(spec.hang_after, None);
    }

    #[test]
    fn reads_the_fault_injection_setting() {
        let spec = spec_from_conf(&format!(
            "{CONF}[pfs_sim]\nhang_after = 1500ms\nsession_timeout=20s\nstart_delay=4s\n"
        ))
        .unwrap();
        assert_eq!(
            spec.hang_after,
            Some(std::time::Duration::from_millis(1500))
        );
        assert_eq!(spec.session_timeout, std::time::Duration::from_secs(20));
        assert_eq!(spec.start_delay, Some(std::time::Duration::from_secs(4)));
        assert!(
            spec_from_conf(&format!("{CONF}[pfs_sim]\nhang_after=soon\n"))
                .unwrap_err()
                .contains("[pfs_sim] hang_after \"soon\" is not a duration")
        );
    }

    #[test]
    fn missing_settings_are_named() {
        assert_eq!(
            spec_from_conf("[afs]\nid=1\nmngt_ip=1.1.1.1").unwrap_err(),
            "pfs.conf: [zookeeper] ip is required"
        );
        assert!(
            spec_from_conf("[zookeeper]\nip=x\n[afs]\nid=one\nmngt_ip=1.1.1.1")
                .unwrap_err()
                .contains("not a number")
        );
        assert!(
            spec_from_conf("[zookeeper]\nip=x\n[afs]\nid=1\nmngt_ip=1.1.1.1\n[tray.0]\nsize=1")
                .unwrap_err()
                .contains("[tray.0] dev")
        );
    }
}
