//! The operator end to end: `pureflash-operator run` as a separate process against the test bed
//! (API emulator + node agent running the pfs simulator, or a real cluster), real ZooKeeper and
//! MariaDB.

mod harness;
mod support;

use harness::{Harness, store_manifest, wait_for};
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::{Resource, ResourceExt};
use pureflash_operator::crd::{Phase, PureFlashStore};

const CRD: &str = include_str!("../crds/pureflashstore.yaml");

/// Installs the CRD with kubectl, as users do.
fn install_crd(harness: &Harness) {
    let (ok, stdout, stderr) = harness.kubectl(&["apply", "-f", "-"], Some(CRD));
    assert!(
        ok,
        "kubectl apply -f crds/pureflashstore.yaml: {stdout}{stderr}"
    );
}

fn apply(harness: &Harness, manifest: &str) {
    let (ok, stdout, stderr) = harness.kubectl(
        &["apply", "-n", &harness.namespace, "-f", "-"],
        Some(manifest),
    );
    assert!(ok, "kubectl apply: {stdout}{stderr}");
}

async fn wait_phase(
    harness: &Harness,
    stores: &Api<PureFlashStore>,
    name: &str,
    want: Phase,
) -> PureFlashStore {
    wait_for(
        &format!(
            "{name} {want:?} (operator log: {})",
            harness.logs().display()
        ),
        async || {
            let store = stores.get_opt(name).await.ok().flatten()?;
            (store.status.as_ref()?.phase == Some(want)).then_some(store)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_runs_goes_online_and_its_db_row_reads_ok() {
    let mut harness = Harness::start("online").await;
    install_crd(&harness);
    let db_url = harness.database();
    harness.start_operator(&["--db", &db_url]);
    apply(
        &harness,
        &store_manifest("store-1", 1, harness.node(), &harness.pfs_image(), 5),
    );
    let stores: Api<PureFlashStore> = Api::namespaced(harness.client.clone(), &harness.namespace);
    let online = wait_phase(&harness, &stores, "store-1", Phase::Online).await;
    let status = online.status.clone().unwrap();
    assert_eq!(status.alive, Some(true));
    assert_eq!(status.mngt_ip.as_deref(), Some("10.8.0.1"));
    assert_eq!(status.trays_online.as_deref(), Some("2/2"));
    assert_eq!(status.restart_count, 0);
    assert!(
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    );

    // What users see.
    let (ok, stdout, _) = harness.kubectl(&["get", "pfstores", "-n", &harness.namespace], None);
    assert!(ok);
    let header: Vec<&str> = stdout.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME", "STORE-ID", "PHASE", "ALIVE", "MNGT-IP", "TRAYS", "RESTARTS", "AGE"
        ]
    );
    let row: Vec<&str> = stdout.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(
        &row[..7],
        ["store-1", "1", "Online", "true", "10.8.0.1", "2/2", "0"]
    );

    // The pod and its config belong to the store.
    let pods: Api<Pod> = Api::namespaced(harness.client.clone(), &harness.namespace);
    let pod = pods.get("store-1-pfs").await.unwrap();
    assert_eq!(
        pod.owner_references()[0].uid,
        online.meta().uid.clone().unwrap()
    );

    // And the metadata DB says OK.
    let db = support::TestDb::mysql(db_url);
    wait_for("t_store row OK", async || {
        let rows = db
            .try_query::<support::StoreRow>("select id, mngt_ip, status from t_store")
            .await
            .ok()?;
        (rows == [(1, "10.8.0.1".to_owned(), "OK".to_owned())]).then_some(())
    })
    .await;
    harness.finish().await;
}
