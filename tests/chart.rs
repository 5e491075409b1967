//! The Helm chart (`charts/pureflash-operator`) rendered by a real Helm (tools/install-kube-clients puts
//! one in .dev/bin): lint, what each values set renders, the values schema, and the plain
//! manifests in deploy/ kept equal to a fresh render.

mod helm;

use std::path::Path;
use std::process::Command;

use helm::{ROOT, chart, helm, parse, run};
use serde_json::{Value, json};

fn try_render(release_namespace: &str, sets: &[&str]) -> Result<String, String> {
    helm::template("pf", release_namespace, sets)
}

/// The rendered objects.
fn render(sets: &[&str]) -> Vec<Value> {
    let text = try_render("pureflash", sets).unwrap_or_else(|e| panic!("helm template: {e}"));
    parse(&text)
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in {:#?}", kinds(objects)))
}

fn kinds(objects: &[Value]) -> Vec<String> {
    let mut kinds: Vec<String> = objects
        .iter()
        .map(|o| {
            format!(
                "{}/{}",
                o["kind"].as_str().unwrap(),
                o["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    kinds.sort();
    kinds
}

fn container(objects: &[Value]) -> &Value {
    &find(objects, "Deployment", "pf-pureflash-operator")["spec"]["template"]["spec"]["containers"]
        [0]
}

fn env<'a>(container: &'a Value, name: &str) -> Option<&'a Value> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
}

/// Rules as (apiGroup, resource, verbs) triples, for exact comparison.
fn rules(role: &Value) -> Vec<(String, String, Vec<String>)> {
    let mut out = Vec::new();
    for rule in role["rules"].as_array().expect("rules") {
        let strings = |field: &str| -> Vec<String> {
            rule[field]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_owned())
                .collect()
        };
        for group in strings("apiGroups") {
            for resource in strings("resources") {
                out.push((group.clone(), resource, strings("verbs")));
            }
        }
    }
    out.sort();
    out
}

fn rule(group: &str, resource: &str, verbs: &[&str]) -> (String, String, Vec<String>) {
    (
        group.to_owned(),
        resource.to_owned(),
        verbs.iter().map(|v| (*v).to_owned()).collect(),
    )
}

/// Exactly what the operator calls (see the chart's `storeRules`).
fn store_rules() -> Vec<(String, String, Vec<String>)> {
    let mut rules = vec![
        // delete: OwnerReferencesPermissionEnforcement lets only who may delete an object set
        // its owner references.
        rule(
            "",
            "configmaps",
            &["list", "watch", "create", "patch", "delete"],
        ),
        rule(
            "",
            "pods",
            &["get", "list", "watch", "create", "patch", "delete"],
        ),
        // The pfs Pods' readiness gate.
        rule("", "pods/status", &["patch"]),
        // A rollout's replacement of a serving pfs.
        rule("", "pods/eviction", &["create"]),
        // create: an apply that creates its object is authorized as a create too.
        rule(
            "policy",
            "poddisruptionbudgets",
            &["list", "watch", "create", "patch", "delete"],
        ),
        rule("events.k8s.io", "events", &["create", "patch"]),
        rule("pureflash.io", "pureflashstores", &["list", "watch"]),
        rule("pureflash.io", "pureflashstores/status", &["patch"]),
        // Owner references with blockOwnerDeletion, where OwnerReferencesPermissionEnforcement
        // admits them only from who may update the owner's finalizers.
        rule("pureflash.io", "pureflashstores/finalizers", &["update"]),
    ];
    rules.sort();
    rules
}

#[test]
fn the_chart_carries_the_crd_unchanged() {
    let top = std::fs::read_to_string(Path::new(ROOT).join("crds/pureflashstore.yaml")).unwrap();
    let in_chart = std::fs::read_to_string(chart().join("crds/pureflashstore.yaml")).unwrap();
    assert!(
        top == in_chart,
        "charts/pureflash-operator/crds/pureflashstore.yaml differs from crds/pureflashstore.yaml: copy it over"
    );
}

#[test]
fn the_chart_lints_clean_with_every_values_set() {
    for sets in [
        &[][..],
        &["watchNamespace=storage"],
        &[
            "database.enabled=true",
            "database.existingSecret=pf-db",
            "metrics.serviceMonitor.enabled=true",
            "metrics.prometheusRule.enabled=true",
        ],
        &["replicaCount=1", "podDisruptionBudget.enabled=false"],
    ] {
        let mut command = helm();
        command.arg("lint").arg("--strict").arg(chart());
        for set in sets {
            command.args(["--set", set]);
        }
        let (ok, stdout, stderr) = run(command);
        assert!(ok, "helm lint {sets:?}:\n{stdout}{stderr}");
    }
}

#[test]
fn defaults_render_an_ha_deployment_with_cluster_wide_least_privilege() {
    let objects = render(&[]);
    assert_eq!(
        kinds(&objects),
        [
            "ClusterRole/pf-pureflash-operator-pureflash",
            "ClusterRoleBinding/pf-pureflash-operator-pureflash",
            "Deployment/pf-pureflash-operator",
            "PodDisruptionBudget/pf-pureflash-operator",
            "Role/pf-pureflash-operator-leader-election",
            "Role/pf-pureflash-operator-pureflash-node-leases",
            "RoleBinding/pf-pureflash-operator-leader-election",
            "RoleBinding/pf-pureflash-operator-pureflash-node-leases",
            "Service/pf-pureflash-operator-metrics",
            "ServiceAccount/pf-pureflash-operator",
        ]
    );
    for object in &objects {
        let labels = &object["metadata"]["labels"];
        for label in [
            "app.kubernetes.io/name",
            "app.kubernetes.io/instance",
            "app.kubernetes.io/version",
            "app.kubernetes.io/managed-by",
            "helm.sh/chart",
        ] {
            assert!(labels[label].is_string(), "{label} missing on {object}");
        }
    }

    let deployment = find(&objects, "Deployment", "pf-pureflash-operator");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "pf-pureflash-operator");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert!(
        pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
            ["topologyKey"]
            == "kubernetes.io/hostname"
    );
    let container = container(&objects);
    assert_eq!(container["image"], "pureflash/pureflash-operator:0.1.0");
    assert_eq!(container["args"][0], "run");
    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["capabilities"]["drop"][0], "ALL");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/livez");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert!(container["resources"]["requests"]["memory"].is_string());
    assert_eq!(
        env(container, "PUREFLASH_ZK").unwrap()["value"],
        "zookeeper:2181"
    );
    assert_eq!(
        env(container, "PUREFLASH_LEASE_NAME").unwrap()["value"],
        "pf-pureflash-operator"
    );
    assert_eq!(
        env(container, "POD_NAMESPACE").unwrap()["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    assert!(env(container, "PUREFLASH_DB").is_none());
    assert_eq!(
        env(container, "PUREFLASH_DISRUPTION_BUDGET").unwrap()["value"],
        "true"
    );
    assert_eq!(
        env(container, "PUREFLASH_MAX_UNAVAILABLE_NODES").unwrap()["value"],
        "1"
    );

    let mut cluster_rules = store_rules();
    cluster_rules.push(rule("", "nodes", &["get"]));
    cluster_rules.sort();
    assert_eq!(
        rules(find(
            &objects,
            "ClusterRole",
            "pf-pureflash-operator-pureflash"
        )),
        cluster_rules
    );
    let lease_role = find(&objects, "Role", "pf-pureflash-operator-leader-election");
    assert_eq!(lease_role["metadata"]["namespace"], "pureflash");
    assert_eq!(
        rules(lease_role),
        [
            rule("coordination.k8s.io", "leases", &["create"]),
            rule("coordination.k8s.io", "leases", &["get", "update"])
        ]
    );
    // Read and renewed: only the operator's own Lease.
    assert_eq!(
        lease_role["rules"][0]["resourceNames"],
        json!(["pf-pureflash-operator"])
    );
    assert!(lease_role["rules"][1].get("resourceNames").is_none());
    // Node Leases are read, only there.
    let node_leases = find(
        &objects,
        "Role",
        "pf-pureflash-operator-pureflash-node-leases",
    );
    assert_eq!(node_leases["metadata"]["namespace"], "kube-node-lease");
    assert_eq!(
        rules(node_leases),
        [rule("coordination.k8s.io", "leases", &["get"])]
    );
    let binding = find(
        &objects,
        "ClusterRoleBinding",
        "pf-pureflash-operator-pureflash",
    );
    assert_eq!(binding["subjects"][0]["kind"], "ServiceAccount");
    assert_eq!(binding["subjects"][0]["namespace"], "pureflash");
}

#[test]
fn a_watch_namespace_confines_the_store_rules_to_a_role_there() {
    let objects = render(&["watchNamespace=storage"]);
    let role = find(&objects, "Role", "pf-pureflash-operator");
    assert_eq!(role["metadata"]["namespace"], "storage");
    assert_eq!(rules(role), store_rules());
    let binding = find(&objects, "RoleBinding", "pf-pureflash-operator");
    assert_eq!(binding["metadata"]["namespace"], "storage");
    assert_eq!(binding["subjects"][0]["namespace"], "pureflash");
    assert_eq!(
        rules(find(
            &objects,
            "ClusterRole",
            "pf-pureflash-operator-pureflash"
        )),
        [rule("", "nodes", &["get"])]
    );
    assert_eq!(
        env(container(&objects), "PUREFLASH_WATCH_NAMESPACE").unwrap()["value"],
        "storage"
    );
}

#[test]
fn database_and_monitoring_values_render_their_objects() {
    let objects = render(&[
        "database.enabled=true",
        "database.existingSecret=pf-db",
        "metrics.serviceMonitor.enabled=true",
        "metrics.prometheusRule.enabled=true",
    ]);
    let db = env(container(&objects), "PUREFLASH_DB").unwrap();
    assert_eq!(db["valueFrom"]["secretKeyRef"]["name"], "pf-db");
    assert_eq!(db["valueFrom"]["secretKeyRef"]["key"], "url");
    let monitor = find(&objects, "ServiceMonitor", "pf-pureflash-operator");
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
    let service = find(&objects, "Service", "pf-pureflash-operator-metrics");
    assert_eq!(service["spec"]["ports"][0]["name"], "metrics");
    let alerts: Vec<&str> =
        find(&objects, "PrometheusRule", "pf-pureflash-operator")["spec"]["groups"][0]["rules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["alert"].as_str().unwrap())
            .collect();
    assert_eq!(
        alerts,
        [
            "PureFlashStoreOffline",
            "PureFlashRecoveryFrozen",
            "PureFlashRolloutStuck",
            "PureFlashDuplicateStoreId",
            "PureFlashOperatorZooKeeperDown",
            "PureFlashOperatorViewUntrusted",
            "PureFlashStoreUnreadable",
            "PureFlashOperatorNoLeader",
            "PureFlashOperatorClockSkew"
        ]
    );
}

#[test]
fn bad_values_are_refused_with_a_clear_message() {
    for (sets, message) in [
        (&["database.enabled=true"][..], "/database/existingSecret"),
        (&["replicaCount=-1"], "/replicaCount"),
        // A digest in the tag would land in the version label, where the API refuses it.
        (&["image.tag=0.1.0@sha256:0123"], "/image/tag"),
        (&["image.digest=0123"], "/image/digest"),
        // The API refuses such a Lease name with every request: no replica would ever lead.
        (
            &["leaderElection.leaseName=PureFlash_Lease"],
            "/leaderElection/leaseName",
        ),
        (&["metrics.port=0"], "/metrics/port"),
        (&["log.format=xml"], "/log/format"),
        (&["recovery.freezeShare=2"], "/recovery/freezeShare"),
        (
            &["storeDisruptionBudget.maxUnavailableNodes=-1"],
            "/storeDisruptionBudget/maxUnavailableNodes",
        ),
        (
            &["storeDisruptionBudget.enabled=maybe"],
            "/storeDisruptionBudget/enabled",
        ),
        (&["recovery.startGrace=soon"], "/recovery/startGrace"),
        // Values the operator would refuse at start, crash-looping the Deployment.
        (&["recovery.startGrace=0s"], "/recovery/startGrace"),
        (
            &["zookeeper.resyncInterval=0.0m"],
            "/zookeeper/resyncInterval",
        ),
        (
            &["leaderElection.leaseDuration=500ms"],
            "/leaderElection/leaseDuration",
        ),
        (
            &["leaderElection.leaseDuration=0.5s"],
            "/leaderElection/leaseDuration",
        ),
        // Over the operator's 24h limit, which the schema's patterns cannot express.
        (
            &["leaderElection.leaseDuration=25h"],
            "leaderElection.leaseDuration \"25h\" is over 24h",
        ),
        (
            &["leaderElection.leaseDuration=23h 60m 0.5s"],
            "is over 24h",
        ),
        // Under the operator's 1s, in forms the schema's patterns let through.
        (
            &["leaderElection.leaseDuration=0.01m"],
            "leaderElection.leaseDuration \"0.01m\" is under 1s",
        ),
        (&["leaderElection.leaseDuration=500ms 400ms"], "is under 1s"),
        // Prometheus reads these, and knows no `min` or fractions.
        (
            &[
                "metrics.prometheusRule.enabled=true",
                "metrics.prometheusRule.storeOfflineFor=5min",
            ],
            "/metrics/prometheusRule/storeOfflineFor",
        ),
        (
            &[
                "metrics.serviceMonitor.enabled=true",
                "metrics.serviceMonitor.interval=1.5m",
            ],
            "/metrics/serviceMonitor/interval",
        ),
        (
            &["zookeeper.resyncInterval=366d"],
            "zookeeper.resyncInterval \"366d\" is over 365d",
        ),
        (
            &["requeueInterval=8761h"],
            "requeueInterval \"8761h\" is over 365d",
        ),
        (&["zookeeper.connect="], "/zookeeper/connect"),
        (&["zookeeper.connect=zk:65536"], "/zookeeper/connect"),
        (
            &["zookeeper.connectFromPods=zk:0"],
            "/zookeeper/connectFromPods",
        ),
        (&["zookeeper.clusterName=.."], "/zookeeper/clusterName"),
        (&["recovery.freezeShare=1.5"], "/recovery/freezeShare"),
        (&["replicas=3"], "'replicas' not allowed"),
        (
            &[
                "metrics.serviceMonitor.enabled=true",
                "metrics.service.enabled=false",
            ],
            "metrics.service.enabled",
        ),
    ] {
        let error = try_render("pureflash", sets).expect_err(&format!("{sets:?} rendered"));
        assert!(error.contains(message), "{sets:?}: {error}");
    }
    // The edges that are fine.
    for set in [
        "leaderElection.leaseDuration=1s",
        "leaderElection.leaseDuration=1500ms",
        "leaderElection.leaseDuration=1m 30s",
        "leaderElection.leaseDuration=24h",
        "leaderElection.leaseDuration=1d",
        "leaderElection.leaseDuration=1439m 60s",
        "recovery.stablePeriod=365d",
        // Set by Helm when the chart is another chart's dependency.
        "global.imageRegistry=registry.example",
        "recovery.startGrace=0.5s",
        "zookeeper.resyncInterval=10ms",
        // `--set` passes a fraction as a string.
        "recovery.freezeShare=0.3",
        "recovery.freezeShare=1",
        "replicaCount=0",
        "leaderElection.leaseName=pureflash.lease-1",
    ] {
        try_render("pureflash", &[set]).unwrap_or_else(|error| panic!("{set}: {error}"));
    }
}

/// The schema's rules for the ZooKeeper settings are the operator's: a value one refuses, the
/// other refuses, so that a typo fails `helm install` rather than crash-looping the Deployment.
#[test]
fn the_schema_refuses_the_zookeeper_settings_the_operator_refuses() {
    for connect in [
        "zk:2181",
        "tcp://zk-0:2181,zk-1:2181/pureflash",
        "[fd00::1]:2181,zk-1",
        "zk/pf/x",
        "zk:2181/",
        "zk:65535",
        "zk:65536",
        "zk:0",
        "zk:x",
        ":2181",
        "tcp+tls://zk:2181",
        "zk:2181/pf/",
        "zk:2181//pf",
        "zk:2181/pf/..",
        // pfs.conf holds what pfs Pods are given as it is: what its parser reads as syntax
        // is refused, in either value (the pfs one is derived from `connect` by default).
        "zk:2181/pure flash",
        "z#k:2181",
        "zk;1:2181",
        "zk:2181/a\"b",
        "zk\\1:2181",
        "zk:2181/a\u{7}b",
        "zk:2181/a\u{E000}",
        "zk:2181/a\u{1F600}",
        "zk:2181/été",
    ] {
        let operator = pureflash_operator::cli::parse_connect_string(connect)
            .and_then(|_| pureflash_operator::cli::pfs_connect_string_of(connect));
        // connectFromPods loses its `tcp://` in the chart, so the operator's rule applies too.
        for value in ["connect", "connectFromPods"] {
            let escaped = connect.replace('\\', "\\\\").replace(',', "\\,");
            let set = format!("zookeeper.{value}={escaped}");
            let chart = try_render("pureflash", &[&set]);
            assert_eq!(
                chart.is_ok(),
                operator.is_ok(),
                "{value} {connect:?}: chart {chart:?}, operator {operator:?}"
            );
        }
    }
    for cluster in [
        "cluster1",
        "...",
        ".a",
        "..b",
        ".",
        "..",
        "a/b",
        "a\u{7}b",
        "prod eu",
        "prod;eu",
        "c#1",
        " c1",
        "c1 ",
        "a\"b",
        "c\u{E000}",
        "c\u{FFF0}",
        "c\u{1F600}",
        "été",
    ] {
        let operator = pureflash_operator::zk::layout::ClusterLayout::new(cluster);
        let chart = try_render("pureflash", &[&format!("zookeeper.clusterName={cluster}")]);
        assert_eq!(
            chart.is_ok(),
            operator.is_ok(),
            "{cluster:?}: chart {chart:?}, operator {operator:?}"
        );
    }
}

#[test]
fn every_environment_variable_the_chart_sets_is_one_the_operator_reads() {
    let help = Command::new(env!("CARGO_BIN_EXE_pureflash-operator"))
        .args(["run", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    let objects = render(&[
        "database.enabled=true",
        "database.existingSecret=pf-db",
        "zookeeper.connectFromPods=10.0.0.1:2181",
    ]);
    for entry in container(&objects)["env"].as_array().unwrap() {
        let name = entry["name"].as_str().unwrap();
        if name == "POD_NAME" || name == "POD_NAMESPACE" {
            continue; // downward API: identity and Lease namespace defaults
        }
        // `[env: NAME=value]`, or `[env: NAME]` for one whose value help keeps to itself.
        assert!(
            help.contains(&format!("[env: {name}=")) || help.contains(&format!("[env: {name}]")),
            "the chart sets {name}, which `pureflash-operator run` does not read"
        );
    }
}

/// pfs Pods resolve names in their store's namespace, not the operator's: a bare Service name
/// in `zookeeper.connect` reaches them qualified by the release namespace.
#[test]
fn pfs_pods_get_a_zookeeper_address_they_can_resolve() {
    let pfs_zookeeper = |sets: &[&str]| {
        let rendered = env(container(&render(sets)), "PUREFLASH_PFS_ZK").expect("PUREFLASH_PFS_ZK")
            ["value"]
            .as_str()
            .unwrap()
            .to_owned();
        // As the operator will take it at start.
        if let Err(error) = pureflash_operator::cli::parse_pfs_connect_string(&rendered) {
            panic!("{sets:?} renders {rendered:?}, which the operator refuses: {error}");
        }
        rendered
    };
    assert_eq!(pfs_zookeeper(&[]), "zookeeper.pureflash.svc:2181");
    assert_eq!(
        pfs_zookeeper(&["zookeeper.connect=zk:2181\\,zk-b:2182/pf"]),
        "zk.pureflash.svc:2181,zk-b.pureflash.svc:2182/pf"
    );
    // pfs's client takes no scheme; a chroot after a server without a port is a chroot.
    assert_eq!(
        pfs_zookeeper(&["zookeeper.connect=tcp://zk:2181\\,tcp://zk-b:2182/pf"]),
        "zk.pureflash.svc:2181,zk-b.pureflash.svc:2182/pf"
    );
    assert_eq!(
        pfs_zookeeper(&["zookeeper.connect=zookeeper/pf/x"]),
        "zookeeper.pureflash.svc/pf/x"
    );
    assert_eq!(
        pfs_zookeeper(&["zookeeper.connect=tcp://zk-0.zk.storage.svc:2181"]),
        "zk-0.zk.storage.svc:2181"
    );
    for kept in [
        "zk-0.zk.storage.svc:2181",
        "10.0.0.1:2181\\,10.0.0.2:2181",
        "localhost:2181",
    ] {
        let connect = format!("zookeeper.connect={kept}");
        assert_eq!(pfs_zookeeper(&[&connect]), kept.replace("\\", ""));
    }
    assert_eq!(
        pfs_zookeeper(&["zookeeper.connectFromPods=192.168.1.5:2181"]),
        "192.168.1.5:2181"
    );
    assert_eq!(
        pfs_zookeeper(&["zookeeper.connectFromPods=tcp://192.168.1.5:2181/pf"]),
        "192.168.1.5:2181/pf"
    );
}

/// Where another budget covers the pfs Pods, the operator is told to keep none (and to delete
/// the ones it kept).
#[test]
fn the_store_disruption_budget_can_be_turned_off() {
    let objects = render(&[
        "storeDisruptionBudget.enabled=false",
        "storeDisruptionBudget.maxUnavailableNodes=0",
    ]);
    let container = container(&objects);
    assert_eq!(
        env(container, "PUREFLASH_DISRUPTION_BUDGET").unwrap()["value"],
        "false"
    );
    assert_eq!(
        env(container, "PUREFLASH_MAX_UNAVAILABLE_NODES").unwrap()["value"],
        "0"
    );
}

/// Counts from a values file are YAML numbers, which Go templates print as floats (`1e+06`);
/// the operator reads integers.
#[test]
fn large_counts_from_a_values_file_render_as_integers() {
    let values = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        values.path(),
        "recovery:\n  freezeMinOffline: 1000000\n  maxRestartsInFlight: 2000000\nrollout:\n  maxUnavailable: 3000000\nstoreDisruptionBudget:\n  maxUnavailableNodes: 4000000\nreconcileConcurrency: 60000\n",
    )
    .unwrap();
    let mut command = helm();
    command
        .arg("template")
        .arg("pf")
        .arg(chart())
        .args(["--namespace", "pureflash", "-f"])
        .arg(values.path());
    let (ok, rendered, stderr) = run(command);
    assert!(ok, "{stderr}");
    let objects = parse(&rendered);
    let container = container(&objects);
    for (name, value) in [
        ("PUREFLASH_FREEZE_MIN_OFFLINE", "1000000"),
        ("PUREFLASH_MAX_RESTARTS_IN_FLIGHT", "2000000"),
        ("PUREFLASH_MAX_UNAVAILABLE", "3000000"),
        ("PUREFLASH_MAX_UNAVAILABLE_NODES", "4000000"),
        ("PUREFLASH_RECONCILE_CONCURRENCY", "60000"),
    ] {
        assert_eq!(env(container, name).unwrap()["value"], value, "{name}");
    }
}

#[test]
fn deploy_manifests_are_the_chart_rendered_with_defaults() {
    let committed =
        std::fs::read_to_string(Path::new(ROOT).join("deploy/pureflash-operator.yaml")).unwrap();
    let mut command = helm();
    command
        .arg("template")
        .arg("pureflash-operator")
        .arg(chart())
        .args(["--namespace", "pureflash-system"]);
    let (ok, fresh, stderr) = run(command);
    assert!(ok, "{stderr}");
    let body: String = committed
        .lines()
        .skip_while(|l| l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(
        body == fresh,
        "deploy/pureflash-operator.yaml is stale: run tools/render-deploy"
    );
}

/// The shipped PureFlashStores run side by side as the operator judges claims: no store of
/// the samples or the kind dev stack is kept without a Pod by another's disk or management
/// address (stores created together are ordered by name, as here).
#[test]
fn shipped_stores_claim_no_disk_or_address_of_another() {
    use pureflash_operator::controller::claims;
    use pureflash_operator::crd::PureFlashStore;
    use serde::Deserialize;
    for manifest in [
        "deploy/samples/pureflashstore.yaml",
        "deploy/dev/stores.yaml",
    ] {
        let text = std::fs::read_to_string(Path::new(ROOT).join(manifest)).unwrap();
        let stores: Vec<PureFlashStore> = serde_yaml::Deserializer::from_str(&text)
            .map(|document| {
                let mut store = PureFlashStore::deserialize(document).unwrap();
                store.metadata.namespace = Some("storage".into());
                store.metadata.uid = store.metadata.name.clone();
                store
            })
            .collect();
        assert!(stores.len() >= 3, "{manifest}");
        for store in &stores {
            let name = store.metadata.name.as_deref().unwrap();
            let others = stores.iter().map(|s| (s, claims::InUse::default()));
            let held = claims::device_held_elsewhere(store, claims::InUse::default(), others);
            assert_eq!(held, None, "{manifest}: {name}");
            // Every node has an address of its own to default to.
            let node_ip = format!("192.0.2.{}", store.spec.node_name.len());
            let held = claims::address_held_elsewhere(
                store,
                Some(node_ip.as_str()),
                |_, _, _| false,
                &stores,
            );
            assert_eq!(held, None, "{manifest}: {name}");
        }
    }
}

/// kubectl against an emulator: (success, stdout + stderr).
fn kubectl(kubeconfig: &Path, args: &[&str], input: Option<&str>) -> (bool, String) {
    use std::io::Write;
    let mut child = kube_emulator::kubectl()
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        // Discovery cached per emulator, not per address an earlier emulator may have had.
        .env("KUBECACHEDIR", kubeconfig.with_extension("cache"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl runs (tools/install-deps installs one in .dev/bin)");
    if let Some(input) = input {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    let output = child.wait_with_output().unwrap();
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

// Multi-threaded: kubectl blocks this test's thread while the emulator serves it on another.
/// A release name as long as Helm allows (53 characters).
const LONG_RELEASE: &str = "a-release-named-as-long-as-helm-allows-for-a-releases";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rendering_and_deploy_manifest_is_accepted_by_the_api() {
    let emulator = kube_emulator::Emulator::start().await.unwrap();
    let kubeconfig = tempfile::NamedTempFile::new().unwrap();
    emulator.write_kubeconfig(kubeconfig.path()).unwrap();
    let kubeconfig = kubeconfig.path();
    let apply = |args: &[&str], input: Option<&str>| {
        let (ok, output) = kubectl(kubeconfig, args, input);
        assert!(ok, "kubectl {args:?} refused:\n{output}");
        output
    };
    apply(&["apply", "-f", &format!("{ROOT}/crds/")], None);
    apply(
        &[
            "apply",
            "-f",
            &format!("{ROOT}/tests/fixtures/monitoring-crds.yaml"),
        ],
        None,
    );
    for namespace in ["pureflash", "storage", "pureflash-system"] {
        apply(&["create", "namespace", namespace], None);
    }
    // Every values set, each as its own release.
    for (release, sets) in [
        ("a", &[][..]),
        ("b", &["watchNamespace=storage"]),
        (
            "c",
            &[
                "database.enabled=true",
                "database.existingSecret=pf-db",
                "metrics.serviceMonitor.enabled=true",
                "metrics.prometheusRule.enabled=true",
            ],
        ),
        (
            "d",
            &["replicaCount=1", "podDisruptionBudget.enabled=false"],
        ),
        // Names at their longest (Helm allows 53 characters), an image pinned by digest.
        (
            LONG_RELEASE,
            &[
                "replicaCount=0",
                "image.tag=v0.1.0-rc.1_build.7",
                "image.digest=sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            ],
        ),
    ] {
        let rendered = helm::template(release, "pureflash", sets).unwrap();
        let output = apply(&["apply", "-f", "-"], Some(&rendered));
        assert_eq!(
            output.lines().count(),
            parse(&rendered).len(),
            "one line per object created:\n{output}"
        );
    }
    let deployments = apply(&["get", "deployments", "-n", "pureflash"], None);
    for release in ["a", "b", "c", "d"] {
        assert!(
            deployments.contains(&format!("{release}-pureflash-operator")),
            "{deployments}"
        );
    }
    // The release's full name, cut to the 63 characters of a name.
    let long_fullname = format!("{LONG_RELEASE}-pureflash-operator")[..63].to_owned();
    let image = apply(
        &[
            "get",
            "deployment",
            "-n",
            "pureflash",
            &long_fullname,
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}",
        ],
        None,
    );
    assert_eq!(
        image,
        "pureflash/pureflash-operator:v0.1.0-rc.1_build.7@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    );

    // The plain manifests, the samples and the kind dev stack.
    apply(
        &[
            "apply",
            "-f",
            &format!("{ROOT}/deploy/pureflash-operator.yaml"),
        ],
        None,
    );
    apply(
        &[
            "apply",
            "-n",
            "storage",
            "-f",
            &format!("{ROOT}/deploy/samples/pureflashstore.yaml"),
        ],
        None,
    );
    let stores = apply(&["get", "pfstores", "-n", "storage"], None);
    assert_eq!(stores.lines().count(), 4, "{stores}");
    apply(&["apply", "-k", &format!("{ROOT}/deploy/dev")], None);
    apply(
        &[
            "apply",
            "-n",
            "pureflash-dev",
            "-f",
            &format!("{ROOT}/deploy/dev/stores.yaml"),
        ],
        None,
    );
    let stores = apply(&["get", "pfstores", "-n", "pureflash-dev"], None);
    assert_eq!(stores.lines().count(), 4, "{stores}");
    let dev = apply(
        &[
            "get",
            "statefulsets,services,configmaps,secrets",
            "-n",
            "pureflash-dev",
        ],
        None,
    );
    for object in ["zookeeper", "mariadb", "mariadb-initdb"] {
        assert!(dev.contains(object), "{object} missing:\n{dev}");
    }
}

/// The install notes, as `helm install` prints them (rendered client-side, no cluster).
fn notes(sets: &[&str]) -> String {
    let mut command = helm();
    command.args(["install", "pf"]).arg(chart()).args([
        "--namespace",
        "pureflash",
        "--dry-run=client",
    ]);
    for set in sets {
        command.args(["--set", set]);
    }
    let (ok, stdout, stderr) = run(command);
    assert!(ok, "helm install --dry-run: {stderr}");
    let (_, notes) = stdout
        .split_once("NOTES:")
        .unwrap_or_else(|| panic!("no notes in {stdout}"));
    notes.to_owned()
}

/// A store made as the notes say lands where the operator looks: with one watched namespace,
/// the sample (which names none) is applied there, not in kubectl's current namespace.
#[test]
fn the_notes_create_the_sample_store_where_the_operator_watches() {
    let sample = "-f deploy/samples/pureflashstore.yaml";
    assert!(
        notes(&["watchNamespace=storage"]).contains(&format!("kubectl apply -n storage {sample}")),
        "the sample goes to the watched namespace"
    );
    assert!(notes(&[]).contains(&format!("kubectl apply {sample}")));
}

/// A fractional duration the operator cannot take exactly fails `helm install`, rather than
/// crash-looping the Deployment; one it takes renders.
#[test]
fn the_chart_takes_the_fractional_durations_the_operator_takes() {
    for duration in [
        "0.5h",
        "0.125h",
        "0.333h",
        "1.001d",
        "1.5d",
        "1.5m",
        "0.123456789m",
        "0.999999999m",
        "1.5s",
        "2.50s",
        "0.5000000000s",
        "0.0001us",
        "0.5ns",
        "1m 0.5s",
    ] {
        let operator = pureflash_operator::cli::parse_duration(duration);
        let chart = try_render("pureflash", &[&format!("recovery.startGrace={duration}")]);
        assert_eq!(
            chart.is_ok(),
            operator.is_ok(),
            "{duration:?}: chart {chart:?}, operator {operator:?}"
        );
    }
}
