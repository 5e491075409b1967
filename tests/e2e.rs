//! End-to-end tests on the test bed (see `harness`): by default the API emulator with its node
//! agent; a real cluster when `PUREFLASH_E2E_KUBECONFIG` is set.

mod harness;

use harness::{Harness, pfs_conf, wait_for};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use serde_json::json;

const WIDGETS_CRD: &str = include_str!("kube-emulator/tests/fixtures/widgets-crd.yaml");

/// A pfs Pod as the operator will run one: host network, privileged, the pfs.conf from a
/// ConfigMap at /etc/pureflash/pfs.conf.
fn pfs_pod(name: &str, node: &str, image: &str, config_map: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "pfs"}},
        "spec": {
            "nodeName": node,
            "hostNetwork": true,
            "restartPolicy": "Always",
            "containers": [{
                "name": "pfs",
                "image": image,
                "command": ["/opt/pureflash/pfs", "-c", "/etc/pureflash/pfs.conf"],
                "env": [{"name": "PFS_SIM_SESSION_TIMEOUT", "value": "2s"}],
                "securityContext": {"privileged": true},
                "volumeMounts": [{"name": "conf", "mountPath": "/etc/pureflash"}],
            }],
            "volumes": [{"name": "conf", "configMap": {"name": config_map}}],
        },
    }))
    .expect("valid pod")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke_a_pfs_pod_runs_registers_and_dies_with_its_pod() {
    let harness = Harness::start("smoke").await;

    // kubectl talks to the API: a CRD applied, its resource served.
    harness.install_crd(WIDGETS_CRD, "widgets.test.pureflash.io");
    let (ok, _, stderr) = harness.kubectl(&["get", "widgets", "-A"], None);
    assert!(ok, "the CRD's resource is served: {stderr}");

    // A pfs Pod with its pfs.conf ConfigMap, created through the API.
    let config_maps: Api<ConfigMap> = Api::namespaced(harness.client.clone(), &harness.namespace);
    let conf: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "store-7-conf"},
        "data": {"pfs.conf": pfs_conf(&harness.pf_cluster, &harness.zk_for_pods(), 7)},
    }))
    .unwrap();
    config_maps
        .create(&PostParams::default(), &conf)
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(harness.client.clone(), &harness.namespace);
    pods.create(
        &PostParams::default(),
        &pfs_pod(
            "store-7",
            harness.node(),
            &harness.pfs_image(),
            "store-7-conf",
        ),
    )
    .await
    .unwrap();

    // The simulator registers in the real ZooKeeper under the store id of its pfs.conf …
    wait_for("store 7 alive in ZooKeeper", async || {
        harness.store_alive(7).await.then_some(())
    })
    .await;
    let zk = harness.zk_client().await;
    let (mngt_ip, _) = zk
        .get_data(&format!(
            "/pureflash/{}/stores/7/mngt_ip",
            harness.pf_cluster
        ))
        .await
        .unwrap();
    assert_eq!(mngt_ip, b"10.8.0.7");
    // … and the Pod reads Running and Ready.
    let running = wait_for("pod Running", async || {
        let pod = pods.get("store-7").await.ok()?;
        let status = pod.status.clone()?;
        let ready = status
            .conditions
            .as_ref()?
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        (status.phase.as_deref() == Some("Running") && ready).then_some(pod)
    })
    .await;
    let container = &running
        .status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0];
    assert_eq!((container.restart_count, container.ready), (0, true));

    // Deleting it with grace 0 kills the process: ZooKeeper sees the session go.
    let force = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: running.uid(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    pods.delete("store-7", &force).await.unwrap();
    wait_for("store 7 session gone", async || {
        (!harness.store_alive(7).await).then_some(())
    })
    .await;
    assert!(pods.get_opt("store-7").await.unwrap().is_none());
    harness.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_restart_on_exit_stop_gracefully_and_hang_like_pfs() {
    let harness = Harness::start("lifecycle").await;
    let config_maps: Api<ConfigMap> = Api::namespaced(harness.client.clone(), &harness.namespace);
    let conf: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "conf"},
        "data": {"pfs.conf": pfs_conf(&harness.pf_cluster, &harness.zk_for_pods(), 3)},
    }))
    .unwrap();
    config_maps
        .create(&PostParams::default(), &conf)
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(harness.client.clone(), &harness.namespace);
    pods.create(
        &PostParams::default(),
        &pfs_pod("store-3", harness.node(), &harness.pfs_image(), "conf"),
    )
    .await
    .unwrap();
    wait_for("store 3 alive", async || {
        harness.store_alive(3).await.then_some(())
    })
    .await;

    // A crashed process is restarted (restartPolicy Always) and counted. It reads its
    // ConfigMap as changed meanwhile: the kubelet updates a running Pod's ConfigMap volumes
    // (within about a minute on a node; before a restart here).
    let first_session = harness.alive_owner(3).await.expect("alive");
    let changed = pfs_conf(&harness.pf_cluster, &harness.zk_for_pods(), 3)
        .replace("mngt_ip=10.8.0.3", "mngt_ip=10.8.1.3");
    config_maps
        .patch(
            "conf",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"pfs.conf": changed}})),
        )
        .await
        .unwrap();
    harness.signal_pod("store-3", libc::SIGKILL);
    let restarted = wait_for("restartCount 1 and Running", async || {
        let pod = pods.get("store-3").await.ok()?;
        let status = pod.status?.container_statuses?.into_iter().next()?;
        (status.restart_count == 1 && status.ready).then_some(())
    })
    .await;
    let () = restarted;
    // The restarted pfs waits for the old session to expire, then registers again.
    wait_for("store 3 alive in a new session", async || {
        harness
            .alive_owner(3)
            .await
            .filter(|owner| *owner != first_session)
            .map(|_| ())
    })
    .await;

    if harness.is_emulated() {
        let zk = harness.zk_client().await;
        let path = format!("/pureflash/{}/stores/3/mngt_ip", harness.pf_cluster);
        let (mngt_ip, _) = zk.get_data(&path).await.unwrap();
        assert_eq!(mngt_ip, b"10.8.1.3", "registered from the changed pfs.conf");
    }

    // A hang: the process lives, its session expires, and like pfs it never re-registers.
    // Once registered: stopped halfway through, it would start over when resumed.
    wait_for("store 3 fully registered", async || {
        harness.store_registered(3).await.then_some(())
    })
    .await;
    harness.signal_pod("store-3", libc::SIGSTOP);
    wait_for("store 3 offline while hung", async || {
        (!harness.store_alive(3).await).then_some(())
    })
    .await;
    harness.signal_pod("store-3", libc::SIGCONT);
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let status = pods.get("store-3").await.unwrap().status.unwrap();
    let restarts = status.container_statuses.as_ref().unwrap()[0].restart_count;
    assert_eq!(
        restarts, 1,
        "the pfs process that was hung is still the one running (no exit of its own)"
    );
    assert!(
        !harness.store_alive(3).await,
        "a resumed pfs does not re-register"
    );
    assert_eq!(
        status.phase.as_deref(),
        Some("Running"),
        "the Pod still looks fine: only ZooKeeper knows"
    );

    // A graceful delete: SIGTERM, then the kubelet removes the Pod.
    pods.delete("store-3", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("pod gone after graceful deletion", async || {
        pods.get_opt("store-3").await.ok()?.is_none().then_some(())
    })
    .await;
    harness.finish().await;
}
