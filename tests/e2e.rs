//! End-to-end tests on the test bed (see `harness`): by default the API emulator with its node
//! agent; a real cluster when `PUREFLASH_E2E_KUBECONFIG` is set.
//!
//! Each test's runtime has four workers on a two-core machine: the emulator, its node agent
//! and the test's proxies run on it, and the test blocks a worker now and then (kubectl, a
//! ZooKeeper restart); with two, they would all share one meanwhile.

mod harness;

use harness::{Harness, pfs_conf, start_emulated, wait_for};
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
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

    // A graceful delete of a pfs that does not stop (hung again: SIGTERM stays pending), then
    // the delete asked again with a shorter grace period, as the operator's restart does: the
    // kubelet honours the shorter one, kills the process and removes the Pod.
    harness.signal_pod("store-3", libc::SIGSTOP);
    pods.delete("store-3", &DeleteParams::default().grace_period(60))
        .await
        .unwrap();
    wait_for("store-3 terminating", async || {
        let pod = pods.get_opt("store-3").await.ok()??;
        pod.metadata.deletion_timestamp.map(|_| ())
    })
    .await;
    // The kubelet is waiting out the 60 s by now.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let shortened = std::time::Instant::now();
    pods.delete("store-3", &DeleteParams::default().grace_period(1))
        .await
        .unwrap();
    wait_for("pod gone after graceful deletion", async || {
        pods.get_opt("store-3").await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(
        shortened.elapsed() < std::time::Duration::from_secs(20),
        "the shorter grace period was honoured: gone {:?} after it was asked for",
        shortened.elapsed()
    );
    harness.finish().await;
}

/// An operator that does not exit on SIGTERM (here: stopped) fails the test at its end, within
/// a bounded wait, and is SIGKILLed rather than left running.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_operator_that_ignores_sigterm_fails_the_test_and_is_killed() {
    let mut harness = Harness::start("stuck").await;
    harness.install_crd(
        include_str!("../crds/pureflashstore.yaml"),
        "pureflashstores.pureflash.io",
    );
    let replica = harness.start_operator(&[]);
    wait_for("the operator serving /livez", async || {
        let (code, _) = harness.admin_get(replica, "/livez")?;
        (code == 200).then_some(())
    })
    .await;
    let pid = harness.operator_pid(replica);
    harness.signal_operator(replica, libc::SIGSTOP);
    let started = std::time::Instant::now();
    let finished = tokio::spawn(harness.finish_within(std::time::Duration::from_secs(2))).await;
    let took = started.elapsed();
    let panic = finished.expect_err("finish fails the test").into_panic();
    let message = panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default();
    assert!(
        message.contains("operators did not stop gracefully")
            && message.contains(&format!("pid {pid} still ran 2s after SIGTERM: SIGKILLed")),
        "{message}"
    );
    assert!(
        took < std::time::Duration::from_secs(20),
        "finish took {took:?}"
    );
    // A failing harness keeps its logs for a look; this failure was the test's own doing.
    if let Some(logs) = message
        .rsplit_once("(logs: ")
        .and_then(|(_, rest)| rest.strip_suffix(')'))
    {
        let _ = std::fs::remove_dir_all(logs);
    }
    // SAFETY: kill(2) with signal 0 only checks whether the pid exists.
    let exists = unsafe { libc::kill(i32::try_from(pid).unwrap(), 0) } == 0;
    assert!(!exists, "the stuck operator (pid {pid}) still exists");
}

/// A Pod with one container `container` running `image` (no volumes), on the harness's node.
fn plain_pod(name: &str, node: &str, container: &str, image: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "nodeName": node,
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": container,
                "image": image,
                // Exits at once (a missing pfs.conf): nothing registers anywhere.
                "command": ["/opt/pureflash/pfs", "-c", "/nonexistent/pfs.conf"],
            }],
        },
    }))
    .expect("valid pod")
}

/// An image the node agent has no program for: its container waits in `ErrImagePull`, and the
/// agent reports the Pod once.
const UNMAPPED_IMAGE: &str = "example.invalid/nothing:1";

/// The node agent retries a status write that fails, as the kubelet's status manager does: a
/// Pod it reports once is not left without a status by one failed patch.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_node_agent_retries_a_failed_status_write() {
    use kube_emulator::{Action, Matcher};

    let harness = start_emulated(
        "status-retry",
        "the_node_agent_retries_a_failed_status_write",
    )
    .await;
    let faults = harness.emulator().expect("emulated").faults();
    faults.inject(
        Matcher::verb("patch")
            .on("pods")
            .named("flaky")
            .subresource("status"),
        Action::Fail(500),
        3,
    );
    let pods: Api<Pod> = Api::namespaced(harness.client.clone(), &harness.namespace);
    pods.create(
        &PostParams::default(),
        &plain_pod("flaky", harness.node(), "only", UNMAPPED_IMAGE),
    )
    .await
    .unwrap();
    wait_for("the pod's ErrImagePull reported", async || {
        let status = pods.get("flaky").await.ok()?.status?;
        let waiting = status.container_statuses?.first()?.state.clone()?.waiting?;
        (waiting.reason.as_deref() == Some("ErrImagePull")).then_some(())
    })
    .await;
    assert_eq!(faults.pending(), 0, "every failure met a write");
    harness.finish().await;
}

/// A status write of a Pod deleted meanwhile (held up at the API server, here) is refused by
/// its uid precondition, as the kubelet's are: it never lands on a new Pod of the same name.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deleted_pods_late_status_write_does_not_land_on_its_successor() {
    use kube_emulator::{Action, Matcher};

    let harness = start_emulated(
        "late-status",
        "a_deleted_pods_late_status_write_does_not_land_on_its_successor",
    )
    .await;
    let faults = harness.emulator().expect("emulated").faults();
    // Long enough for the delete, the create and the second Pod's report on a loaded machine:
    // a write served before them would test nothing (asserted below).
    let held = std::time::Duration::from_secs(15);
    faults.inject(
        Matcher::verb("patch")
            .on("pods")
            .named("twin")
            .subresource("status"),
        Action::Delay(held),
        1,
    );
    let pods: Api<Pod> = Api::namespaced(harness.client.clone(), &harness.namespace);
    // The first Pod runs a program (its status: Running, container `first`).
    pods.create(
        &PostParams::default(),
        &plain_pod("twin", harness.node(), "first", &harness.pfs_image()),
    )
    .await
    .unwrap();
    wait_for("the first pod's status write held", async || {
        (faults.pending() == 0).then_some(())
    })
    .await;
    let arrived = std::time::Instant::now();
    let force = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    pods.delete("twin", &force).await.unwrap();
    let second = pods
        .create(
            &PostParams::default(),
            &plain_pod("twin", harness.node(), "second", UNMAPPED_IMAGE),
        )
        .await
        .unwrap();
    let container = async || {
        let pod = pods.get("twin").await.ok()?;
        let status = pod.status?;
        let first = status.container_statuses?.first()?.clone();
        Some((pod.metadata.uid?, status.phase?, first.name))
    };
    wait_for("the second pod reported", async || {
        container().await.filter(|(_, _, name)| name == "second")
    })
    .await;
    assert!(
        arrived.elapsed() < held,
        "the second pod was reported only after the first's write was served"
    );
    // The first Pod's write is served now (and whatever its task writes after it).
    tokio::time::sleep(
        (arrived + held + std::time::Duration::from_secs(2))
            .saturating_duration_since(std::time::Instant::now()),
    )
    .await;
    assert_eq!(
        container().await,
        Some((
            second.uid().unwrap(),
            "Pending".to_owned(),
            "second".to_owned()
        )),
        "the second pod's status is its own"
    );
    harness.finish().await;
}
