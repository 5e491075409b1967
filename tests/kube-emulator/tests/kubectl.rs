//! Conformance of the emulator through the real `kubectl` (on every machine; its dispatcher
//! picks the 1.33 binary from `/version`). Expected outputs are kubectl's documented behaviour.

mod common;

use common::{Bed, CHART_MANIFESTS, WIDGETS_CRD};

const WIDGET: &str = "apiVersion: test.pureflash.io/v1alpha1
kind: Widget
metadata:
  name: w1
spec:
  id: 3
  nodeName: node-a
  devices:
    - path: /dev/nvme0n1
";

fn ok(result: (bool, String, String)) -> String {
    let (success, stdout, stderr) = result;
    assert!(
        success,
        "kubectl failed:\nstdout: {stdout}\nstderr: {stderr}"
    );
    stdout
}

fn failed(result: (bool, String, String)) -> String {
    let (success, stdout, stderr) = result;
    assert!(!success, "kubectl should have failed:\nstdout: {stdout}");
    stderr
}

/// The header row of `kubectl get` output, split on whitespace.
fn header(output: &str) -> Vec<String> {
    output
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_version_and_api_resources() {
    let bed = Bed::start().await;
    let version = ok(bed.kubectl(&["version", "-o", "json"]));
    let version: serde_json::Value = serde_json::from_str(&version).unwrap();
    assert_eq!(version["serverVersion"]["minor"], "33");
    ok(bed.kubectl_with_input(&["apply", "-f", "-"], Some(WIDGETS_CRD)));
    let resources = ok(bed.kubectl(&["api-resources", "--api-group=test.pureflash.io"]));
    let row = resources
        .lines()
        .find(|l| l.starts_with("widgets"))
        .unwrap_or_else(|| panic!("{resources}"));
    assert!(
        row.contains("wd,wds")
            && row.contains("test.pureflash.io/v1alpha1")
            && row.contains("true")
            && row.contains("Widget"),
        "{row}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_get_describe_delete_a_custom_resource() {
    let bed = Bed::start().await;
    assert!(
        ok(bed.kubectl_with_input(&["apply", "-f", "-"], Some(WIDGETS_CRD))).contains(
            "customresourcedefinition.apiextensions.k8s.io/widgets.test.pureflash.io created"
        )
    );
    assert!(
        ok(bed.kubectl_with_input(&["apply", "-f", "-"], Some(WIDGET)))
            .contains("widget.test.pureflash.io/w1 created")
    );
    assert!(
        ok(bed.kubectl_with_input(&["apply", "-f", "-"], Some(WIDGET)))
            .contains("widget.test.pureflash.io/w1 unchanged")
    );
    let changed = WIDGET.replace("node-a", "node-b");
    assert!(
        ok(bed.kubectl_with_input(&["apply", "-f", "-"], Some(&changed)))
            .contains("widget.test.pureflash.io/w1 configured")
    );

    // Printer columns: NAME first, then the CRD's columns; priority 1 only with -o wide.
    let get = ok(bed.kubectl(&["get", "widgets"]));
    assert_eq!(header(&get), ["NAME", "ID", "PHASE", "AGE"]);
    let row: Vec<&str> = get.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(&row[..2], ["w1", "3"]);
    assert_eq!(
        header(&ok(bed.kubectl(&["get", "wd", "-o", "wide"]))),
        ["NAME", "ID", "PHASE", "NODE", "AGE"]
    );
    assert!(
        ok(bed.kubectl(&["get", "pureflash-test"])).contains("w1"),
        "categories select the resource"
    );
    ok(bed.kubectl(&[
        "patch",
        "wd",
        "w1",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Online"}}"#,
    ]));
    assert!(ok(bed.kubectl(&["get", "wd", "w1", "--no-headers"])).contains("Online"));

    let describe = ok(bed.kubectl(&["describe", "widget", "w1"]));
    for expected in [
        "Name:         w1",
        "Namespace:    default",
        "Kind:         Widget",
        "Node Name:",
        "node-b",
        "Phase:  Online",
    ] {
        assert!(
            describe.contains(expected),
            "{expected:?} missing from:\n{describe}"
        );
    }
    let yaml = ok(bed.kubectl(&["get", "wd", "w1", "-o", "yaml"]));
    assert!(
        yaml.contains("pullPolicy: IfNotPresent"),
        "defaults are visible: {yaml}"
    );

    assert!(
        ok(bed.kubectl(&["delete", "widget", "w1"]))
            .contains("widget.test.pureflash.io \"w1\" deleted")
    );
    let gone = failed(bed.kubectl(&["get", "widget", "w1"]));
    assert!(
        gone.contains("Error from server (NotFound): widgets.test.pureflash.io \"w1\" not found"),
        "{gone}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_specs_are_rejected_with_the_api_servers_messages() {
    let bed = Bed::start().await;
    ok(bed.kubectl_with_input(&["apply", "-f", "-"], Some(WIDGETS_CRD)));
    let bad = WIDGET
        .replace("id: 3", "id: 0")
        .replace("/dev/nvme0n1", "sda");
    let error = failed(bed.kubectl_with_input(&["apply", "-f", "-"], Some(&bad)));
    assert!(error.contains("The Widget \"w1\" is invalid"), "{error}");
    assert!(
        error.contains(
            "spec.id: Invalid value: 0: spec.id in body should be greater than or equal to 1"
        ),
        "{error}"
    );
    assert!(error.contains("spec.devices[0].path: Invalid value: \"sda\": spec.devices[0].path in body should match '^/dev/'"), "{error}");
    let unknown = WIDGET.replace("nodeName: node-a", "nodeName: node-a\n  surprise: 1");
    let error = failed(bed.kubectl_with_input(&["apply", "-f", "-"], Some(&unknown)));
    assert!(
        error.contains("strict decoding error: unknown field \"spec.surprise\""),
        "{error}"
    );
    ok(bed.kubectl_with_input(&["apply", "-f", "-"], Some(WIDGET)));
    let error = failed(bed.kubectl_with_input(
        &["apply", "-f", "-"],
        Some(&WIDGET.replace("id: 3", "id: 4")),
    ));
    assert!(
        error.contains("spec.id: Invalid value: 4: id is immutable"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn built_in_objects_with_typed_kubectl_commands() {
    let bed = Bed::start().await;
    assert!(ok(bed.kubectl(&["create", "namespace", "demo"])).contains("namespace/demo created"));
    ok(bed.kubectl(&[
        "create",
        "configmap",
        "cfg",
        "-n",
        "demo",
        "--from-literal=a=b",
        "--from-literal=c=d",
    ]));
    ok(bed.kubectl(&[
        "create",
        "secret",
        "generic",
        "s",
        "-n",
        "demo",
        "--from-literal=p=q",
    ]));
    let maps = ok(bed.kubectl(&["get", "cm", "-n", "demo"]));
    assert_eq!(header(&maps), ["NAME", "DATA", "AGE"]);
    assert!(
        maps.lines()
            .nth(1)
            .unwrap()
            .split_whitespace()
            .take(2)
            .eq(["cfg", "2"]),
        "{maps}"
    );
    let secret = ok(bed.kubectl(&[
        "get",
        "secret",
        "s",
        "-n",
        "demo",
        "-o",
        "jsonpath={.data.p}",
    ]));
    assert_eq!(secret, "cQ==", "stored base64-encoded");
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  namespace: demo\nspec:\n  containers:\n  - name: c\n    image: busybox:1\n";
    ok(bed.kubectl_with_input(&["apply", "-f", "-"], Some(pod)));
    ok(bed.kubectl_with_input(
        &["apply", "-f", "-"],
        Some(&pod.replace("busybox:1", "busybox:2")),
    ));
    let pods = ok(bed.kubectl(&["get", "pods", "-n", "demo"]));
    assert_eq!(
        header(&pods),
        ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    );
    assert!(pods.contains("0/1") && pods.contains("Pending"), "{pods}");
    assert!(
        ok(bed.kubectl(&[
            "get",
            "pod",
            "p",
            "-n",
            "demo",
            "-o",
            "jsonpath={.spec.containers[0].image}"
        ]))
        .contains("busybox:2")
    );
    ok(bed.kubectl(&["label", "pod", "p", "-n", "demo", "tier=db"]));
    assert!(
        ok(bed.kubectl(&["get", "pods", "-n", "demo", "-l", "tier=db", "-o", "name"]))
            .contains("pod/p")
    );
    assert!(ok(bed.kubectl(&["describe", "pod", "p", "-n", "demo"])).contains("busybox:2"));
    ok(bed.kubectl(&["delete", "namespace", "demo"]));
    assert!(failed(bed.kubectl(&["get", "namespace", "demo"])).contains("NotFound"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_apply_and_dry_run_through_kubectl() {
    let bed = Bed::start().await;
    ok(bed.kubectl_with_input(&["apply", "--server-side", "-f", "-"], Some(WIDGETS_CRD)));
    ok(bed.kubectl_with_input(
        &["apply", "--server-side", "--field-manager=alice", "-f", "-"],
        Some(WIDGET),
    ));
    let conflict = failed(bed.kubectl_with_input(
        &["apply", "--server-side", "--field-manager=bob", "-f", "-"],
        Some(&WIDGET.replace("node-a", "node-b")),
    ));
    assert!(
        conflict.contains("conflict") && conflict.contains("alice"),
        "{conflict}"
    );
    ok(bed.kubectl_with_input(
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=bob",
            "-f",
            "-",
        ],
        Some(&WIDGET.replace("node-a", "node-b")),
    ));
    let managed = ok(bed.kubectl(&["get", "wd", "w1", "--show-managed-fields", "-o", "yaml"]));
    assert!(
        managed.contains("manager: bob") && managed.contains("operation: Apply"),
        "{managed}"
    );
    ok(bed.kubectl_with_input(
        &["apply", "--dry-run=server", "-f", "-"],
        Some(&WIDGET.replace("name: w1", "name: w2")),
    ));
    assert!(
        failed(bed.kubectl(&["get", "wd", "w2"])).contains("NotFound"),
        "dry run stores nothing"
    );
}

/// The lines of `kubectl get` output, each split on whitespace.
fn rows(output: &str) -> Vec<Vec<String>> {
    output
        .lines()
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect()
}

/// The row of `output` whose first cell is `name`.
fn row(output: &str, name: &str) -> Vec<String> {
    rows(output)
        .into_iter()
        .find(|r| r.first().is_some_and(|first| first == name))
        .unwrap_or_else(|| panic!("no row {name} in:\n{output}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chart_applies_and_its_kinds_print() {
    let bed = Bed::start().await;
    ok(bed.kubectl(&["create", "namespace", "pf"]));
    // `kubectl apply` names each object `<resource>.<group>/<name>` and says what it did.
    let kinds = [
        "serviceaccount",
        "service",
        "deployment.apps",
        "poddisruptionbudget.policy",
        "clusterrole.rbac.authorization.k8s.io",
        "clusterrolebinding.rbac.authorization.k8s.io",
        "role.rbac.authorization.k8s.io",
        "rolebinding.rbac.authorization.k8s.io",
    ];
    let created = ok(bed.kubectl_with_input(&["apply", "-f", "-"], Some(CHART_MANIFESTS)));
    for kind in kinds {
        let name = if kind == "service" {
            "pureflash-operator-metrics"
        } else {
            "pureflash-operator"
        };
        assert!(
            created.contains(&format!("{kind}/{name} created")),
            "{kind}: {created}"
        );
    }
    // Applying again changes nothing. kubectl still reports the budget "configured": its
    // `selector` has patch strategy `replace`, so kubectl's patch for it is never empty.
    let again = ok(bed.kubectl_with_input(&["apply", "-f", "-"], Some(CHART_MANIFESTS)));
    assert_eq!(
        again.matches(" unchanged").count(),
        kinds.len() - 1,
        "{again}"
    );
    assert!(
        again.contains("poddisruptionbudget.policy/pureflash-operator configured"),
        "{again}"
    );

    // Default columns of each kind (the API server's printers).
    let deployments = ok(bed.kubectl(&["get", "deploy", "-n", "pf"]));
    assert_eq!(
        header(&deployments),
        ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    );
    assert_eq!(
        row(&deployments, "pureflash-operator")[1..4],
        ["0/2", "0", "0"]
    );
    let services = ok(bed.kubectl(&["get", "svc", "-n", "pf"]));
    assert_eq!(
        header(&services),
        [
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE"
        ]
    );
    let service = row(&services, "pureflash-operator-metrics");
    assert_eq!(
        (
            service[1].as_str(),
            service[3].as_str(),
            service[4].as_str()
        ),
        ("ClusterIP", "<none>", "8080/TCP")
    );
    let cluster_ip: std::net::Ipv4Addr = service[2].parse().expect("an IPv4 cluster IP");
    assert_eq!(cluster_ip.octets()[..2], [10, 96], "from the service CIDR");
    assert_eq!(
        ok(bed.kubectl(&[
            "get",
            "svc",
            "pureflash-operator-metrics",
            "-n",
            "pf",
            "-o",
            "jsonpath={.spec.clusterIPs[0]} {.spec.ports[0].protocol} {.spec.ports[0].targetPort}"
        ])),
        format!("{cluster_ip} TCP metrics")
    );
    let accounts = ok(bed.kubectl(&["get", "sa", "-n", "pf"]));
    assert_eq!(header(&accounts), ["NAME", "SECRETS", "AGE"]);
    assert_eq!(row(&accounts, "pureflash-operator")[1], "0");
    let budgets = ok(bed.kubectl(&["get", "pdb", "-n", "pf"]));
    assert_eq!(
        header(&budgets),
        [
            "NAME",
            "MIN",
            "AVAILABLE",
            "MAX",
            "UNAVAILABLE",
            "ALLOWED",
            "DISRUPTIONS",
            "AGE"
        ]
    );
    assert_eq!(row(&budgets, "pureflash-operator")[1..4], ["N/A", "1", "0"]);
    let roles = ok(bed.kubectl(&["get", "role", "-n", "pf"]));
    assert_eq!(header(&roles), ["NAME", "CREATED", "AT"]);
    let bindings = ok(bed.kubectl(&["get", "rolebinding", "-n", "pf", "-o", "wide"]));
    assert_eq!(
        header(&bindings),
        ["NAME", "ROLE", "AGE", "USERS", "GROUPS", "SERVICEACCOUNTS"]
    );
    assert_eq!(
        row(&bindings, "pureflash-operator")[1],
        "Role/pureflash-operator"
    );
    let cluster_bindings = ok(bed.kubectl(&["get", "clusterrolebinding", "-o", "wide"]));
    let binding = row(&cluster_bindings, "pureflash-operator");
    assert_eq!(
        (binding[1].as_str(), binding.last().unwrap().as_str()),
        ("ClusterRole/pureflash-operator", "pf/pureflash-operator")
    );

    // Several kinds at once, by short name, as `<resource>.<group>/<name>`.
    let everything = ok(bed.kubectl(&["get", "deploy,svc,sa,pdb,role,rolebinding", "-n", "pf"]));
    for name in [
        "deployment.apps/pureflash-operator",
        "service/pureflash-operator-metrics",
        "serviceaccount/pureflash-operator",
        "poddisruptionbudget.policy/pureflash-operator",
        "role.rbac.authorization.k8s.io/pureflash-operator",
        "rolebinding.rbac.authorization.k8s.io/pureflash-operator",
    ] {
        assert!(
            everything.contains(name),
            "{name} missing from:\n{everything}"
        );
    }
    // The `all` category has Pods, Services and Deployments, not the rest.
    let all = ok(bed.kubectl(&["get", "all", "-n", "pf", "-o", "name"]));
    assert!(
        all.contains("service/pureflash-operator-metrics")
            && all.contains("deployment.apps/pureflash-operator"),
        "{all}"
    );
    assert!(
        !all.contains("serviceaccount") && !all.contains("poddisruptionbudget"),
        "{all}"
    );

    let resources = ok(bed.kubectl(&["api-resources"]));
    for (name, short_names, api_version, namespaced, kind) in [
        ("serviceaccounts", "sa", "v1", "true", "ServiceAccount"),
        ("services", "svc", "v1", "true", "Service"),
        ("deployments", "deploy", "apps/v1", "true", "Deployment"),
        (
            "poddisruptionbudgets",
            "pdb",
            "policy/v1",
            "true",
            "PodDisruptionBudget",
        ),
    ] {
        assert_eq!(
            row(&resources, name),
            [name, short_names, api_version, namespaced, kind],
            "{resources}"
        );
    }
    for (name, namespaced, kind) in [
        ("roles", "true", "Role"),
        ("rolebindings", "true", "RoleBinding"),
        ("clusterroles", "false", "ClusterRole"),
        ("clusterrolebindings", "false", "ClusterRoleBinding"),
    ] {
        assert_eq!(
            row(&resources, name),
            [name, "rbac.authorization.k8s.io/v1", namespaced, kind],
            "{resources}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_mistakes_are_rejected_like_the_api_server_does() {
    let bed = Bed::start().await;
    ok(bed.kubectl(&["create", "namespace", "pf"]));
    let mismatched = CHART_MANIFESTS.replace(
        "    metadata:\n      labels:\n        app.kubernetes.io/name: pureflash-operator",
        "    metadata:\n      labels:\n        app.kubernetes.io/name: pureflash",
    );
    let error = failed(bed.kubectl_with_input(&["apply", "-f", "-"], Some(&mismatched)));
    assert!(
        error.contains("The Deployment \"pureflash-operator\" is invalid: spec.template.metadata.labels: Invalid value: map[string]string{\"app.kubernetes.io/instance\":\"pf\", \"app.kubernetes.io/name\":\"pureflash\"}: `selector` does not match template `labels`"),
        "{error}"
    );
    let no_group = "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: r\n  namespace: pf\nrules:\n- resources: [pods]\n  verbs: [get]\n";
    let error = failed(bed.kubectl_with_input(&["apply", "-f", "-"], Some(no_group)));
    assert!(
        error.contains("The Role \"r\" is invalid: rules[0].apiGroups: Required value: resource rules must supply at least one api group"),
        "{error}"
    );
    let binding = "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: b\n  namespace: pf\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: Role\n  name: r\nsubjects:\n- kind: ServiceAccount\n  name: op\n";
    ok(bed.kubectl_with_input(&["apply", "-f", "-"], Some(binding)));
    let error = failed(bed.kubectl_with_input(
        &["apply", "-f", "-"],
        Some(&binding.replace("name: r\n", "name: other\n")),
    ));
    assert!(error.contains("cannot change roleRef"), "{error}");
    // events.k8s.io/v1 Events: a note past 1 kB and a count of the deprecated kind.
    let event = format!(
        "apiVersion: events.k8s.io/v1\nkind: Event\nmetadata:\n  name: e\n  namespace: pf\neventTime: \"2026-01-01T00:00:00.000000Z\"\nregarding:\n  kind: Pod\n  name: p\n  namespace: pf\nreportingController: pureflash-operator\nreportingInstance: op-0\naction: Restart\nreason: StoreRestarted\ntype: Warning\ndeprecatedCount: 2\nnote: {}\n",
        "x".repeat(1025)
    );
    let error = failed(bed.kubectl_with_input(&["create", "-f", "-"], Some(&event)));
    assert!(
        error.contains("The Event \"e\" is invalid: \n* message: Invalid value: \"\": can have at most 1024 characters\n* deprecatedCount: Invalid value: \"\": needs to be unset"),
        "{error}"
    );
}

/// Admin-applied RBAC for the ServiceAccount `pf/op` (kubernetes.io/docs/reference/
/// access-authn-authz/rbac): a Role for pods in `pf`, a ClusterRole for ConfigMaps bound in `pf`
/// only, and a ClusterRole for getting nodes bound cluster-wide. (`kubectl patch
/// --subresource=status` reads the subresource before patching it, hence `get` on it.)
const RBAC: &str = "apiVersion: v1
kind: ServiceAccount
metadata:
  name: op
  namespace: pf
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: pod-reader
  namespace: pf
rules:
- apiGroups: [\"\"]
  resources: [pods]
  verbs: [get, list, watch]
- apiGroups: [\"\"]
  resources: [pods/status]
  verbs: [get, patch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: op-pod-reader
  namespace: pf
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: pod-reader
subjects:
- kind: ServiceAccount
  name: op
  namespace: pf
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: config-reader
rules:
- apiGroups: [\"\"]
  resources: [configmaps]
  verbs: [get, list]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: op-config-reader
  namespace: pf
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: config-reader
subjects:
- kind: ServiceAccount
  name: op
  namespace: pf
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: node-getter
rules:
- apiGroups: [\"\"]
  resources: [nodes]
  verbs: [get]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: op-node-getter
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: node-getter
subjects:
- kind: ServiceAccount
  name: op
  namespace: pf
";

const OBJECTS: &str = "apiVersion: v1
kind: Node
metadata:
  name: node-1
---
apiVersion: v1
kind: Pod
metadata:
  name: p
  namespace: pf
spec:
  containers:
  - name: c
    image: busybox:1
---
apiVersion: v1
kind: Pod
metadata:
  name: q
  namespace: other
spec:
  containers:
  - name: c
    image: busybox:1
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: pf
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: other
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_through_kubectl_with_a_service_account_token() {
    let bed = Bed::start().await;
    ok(bed.kubectl(&["create", "namespace", "pf"]));
    ok(bed.kubectl(&["create", "namespace", "other"]));
    ok(bed.kubectl_with_input(&["apply", "-f", "-"], Some(RBAC)));
    ok(bed.kubectl_with_input(&["apply", "-f", "-"], Some(OBJECTS)));
    let token = bed.emulator.service_account_token("pf", "op");
    let user = "User \"system:serviceaccount:pf:op\"";

    // The Role: pods in its namespace, and only what it lists.
    assert_eq!(
        ok(bed.kubectl_as(&token, &["get", "pods", "-n", "pf", "-o", "name"])),
        "pod/p\n"
    );
    ok(bed.kubectl_as(&token, &["get", "pod", "p", "-n", "pf"]));
    ok(bed.kubectl_as(
        &token,
        &[
            "patch",
            "pod",
            "p",
            "-n",
            "pf",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"phase":"Running"}}"#,
        ],
    ));
    let cases = [
        (
            vec!["get", "pods", "-n", "other"],
            format!(
                "Error from server (Forbidden): pods is forbidden: {user} cannot list resource \"pods\" in API group \"\" in the namespace \"other\""
            ),
        ),
        (
            vec!["delete", "pod", "p", "-n", "pf"],
            format!(
                "Error from server (Forbidden): pods \"p\" is forbidden: {user} cannot delete resource \"pods\" in API group \"\" in the namespace \"pf\""
            ),
        ),
        (
            vec!["get", "secrets", "-n", "pf"],
            format!(
                "Error from server (Forbidden): secrets is forbidden: {user} cannot list resource \"secrets\" in API group \"\" in the namespace \"pf\""
            ),
        ),
        (
            vec!["label", "pod", "p", "-n", "pf", "tier=db"],
            format!(
                "Error from server (Forbidden): pods \"p\" is forbidden: {user} cannot patch resource \"pods\" in API group \"\" in the namespace \"pf\""
            ),
        ),
        // The ClusterRole bound by a RoleBinding grants only in the binding's namespace.
        (
            vec!["get", "configmap", "settings", "-n", "other"],
            format!(
                "Error from server (Forbidden): configmaps \"settings\" is forbidden: {user} cannot get resource \"configmaps\" in API group \"\" in the namespace \"other\""
            ),
        ),
        // The ClusterRoleBinding grants getting nodes, not listing or deleting them.
        (
            vec!["get", "nodes"],
            format!(
                "Error from server (Forbidden): nodes is forbidden: {user} cannot list resource \"nodes\" in API group \"\" at the cluster scope"
            ),
        ),
        (
            vec!["delete", "node", "node-1"],
            format!(
                "Error from server (Forbidden): nodes \"node-1\" is forbidden: {user} cannot delete resource \"nodes\" in API group \"\" at the cluster scope"
            ),
        ),
    ];
    for (args, expected) in cases {
        let error = failed(bed.kubectl_as(&token, &args));
        assert_eq!(error.trim_end(), expected, "kubectl {args:?}");
    }
    assert!(ok(bed.kubectl_as(&token, &["get", "configmaps", "-n", "pf"])).contains("settings"));
    assert!(ok(bed.kubectl_as(&token, &["get", "node", "node-1"])).contains("node-1"));

    // A token nobody registered: 401, which kubectl reports as not being logged in (its
    // discovery client words the reason itself: "the server has asked for the client to
    // provide credentials").
    let error = failed(bed.kubectl_as("not-a-token", &["get", "pods", "-n", "pf"]));
    assert!(
        error.contains("error: You must be logged in to the server ("),
        "{error}"
    );
    // Without a token, the administrator may do everything.
    ok(bed.kubectl(&["get", "secrets", "-n", "pf"]));
    ok(bed.kubectl(&["delete", "pod", "p", "-n", "pf", "--grace-period=0"]));
    assert!(
        bed.emulator
            .audit()
            .iter()
            .any(|r| r.verb == "delete" && !r.allowed)
    );
    assert!(
        bed.emulator
            .audit()
            .iter()
            .all(|r| r.user == "system:serviceaccount:pf:op")
    );
}

const STATEFUL_SET: &str = "apiVersion: v1
kind: Service
metadata:
  name: pfs
  namespace: store
spec:
  clusterIP: None
  selector:
    app: pfs
  ports:
  - name: rpc
    port: 49162
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: pfs
  namespace: store
spec:
  serviceName: pfs
  replicas: 3
  selector:
    matchLabels:
      app: pfs
  template:
    metadata:
      labels:
        app: pfs
    spec:
      containers:
      - name: pfs
        image: pureflash/pfs:1.9
        volumeMounts:
        - name: data
          mountPath: /var/lib/pfs
  volumeClaimTemplates:
  - metadata:
      name: data
    spec:
      accessModes: [ReadWriteOnce]
      resources:
        requests:
          storage: 10Gi
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stateful_sets_apply_print_and_keep_their_claims() {
    let bed = Bed::start().await;
    ok(bed.kubectl(&["create", "namespace", "store"]));
    let created = ok(bed.kubectl_with_input(&["apply", "-f", "-"], Some(STATEFUL_SET)));
    assert!(
        created.contains("service/pfs created") && created.contains("statefulset.apps/pfs created"),
        "{created}"
    );
    // Applying again changes nothing. kubectl still reports the set "configured", as with a
    // real API server (kubernetes/kubernetes#66450): `volumeClaimTemplates` is an atomic list,
    // and the live one has the server's defaults, so kubectl's patch always carries it.
    let version = || {
        ok(bed.kubectl(&[
            "get",
            "sts",
            "pfs",
            "-n",
            "store",
            "-o",
            "jsonpath={.metadata.resourceVersion}/{.metadata.generation}",
        ]))
    };
    let before = version();
    let again = ok(bed.kubectl_with_input(&["apply", "-f", "-"], Some(STATEFUL_SET)));
    assert!(
        again.contains("service/pfs unchanged")
            && again.contains("statefulset.apps/pfs configured"),
        "{again}"
    );
    assert_eq!(version(), before, "a no-op write");
    assert!(before.ends_with("/1"), "{before}");

    let sets = ok(bed.kubectl(&["get", "sts", "-n", "store"]));
    assert_eq!(header(&sets), ["NAME", "READY", "AGE"]);
    assert_eq!(row(&sets, "pfs")[1], "0/3");
    let wide = ok(bed.kubectl(&["get", "statefulsets", "-n", "store", "-o", "wide"]));
    assert_eq!(
        header(&wide),
        ["NAME", "READY", "AGE", "CONTAINERS", "IMAGES"]
    );
    assert_eq!(row(&wide, "pfs")[3..], ["pfs", "pureflash/pfs:1.9"]);
    assert_eq!(
        ok(bed.kubectl(&[
            "get",
            "sts",
            "pfs",
            "-n",
            "store",
            "-o",
            "jsonpath={.spec.podManagementPolicy} {.spec.updateStrategy.rollingUpdate.partition} {.spec.volumeClaimTemplates[0].kind} {.spec.volumeClaimTemplates[0].spec.volumeMode}"
        ])),
        "OrderedReady 0 PersistentVolumeClaim Filesystem"
    );
    let all = ok(bed.kubectl(&["get", "all", "-n", "store", "-o", "name"]));
    assert!(
        all.contains("statefulset.apps/pfs") && all.contains("service/pfs"),
        "{all}"
    );
    let resources = ok(bed.kubectl(&["api-resources", "--api-group=apps"]));
    assert_eq!(
        row(&resources, "statefulsets"),
        ["statefulsets", "sts", "apps/v1", "true", "StatefulSet"]
    );
    let described = ok(bed.kubectl(&["describe", "sts", "pfs", "-n", "store"]));
    assert!(
        described.contains("Volume Claims:") && described.contains("Name:          data"),
        "{described}"
    );

    // A new image rolls through the template; the claims are the set's identity.
    let upgraded = STATEFUL_SET.replace("pfs:1.9", "pfs:2.0");
    assert!(
        ok(bed.kubectl_with_input(&["apply", "-f", "-"], Some(&upgraded)))
            .contains("statefulset.apps/pfs configured")
    );
    let error = failed(bed.kubectl_with_input(
        &["apply", "-f", "-"],
        Some(&upgraded.replace("storage: 10Gi", "storage: 20Gi")),
    ));
    assert!(
        error.contains("The StatefulSet \"pfs\" is invalid: spec: Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden"),
        "{error}"
    );
    let error = failed(bed.kubectl_with_input(
        &["apply", "-f", "-"],
        Some(&STATEFUL_SET.replace(
            "name: pfs\n  namespace: store\nspec:\n  serviceName",
            "name: pfs.store\n  namespace: store\nspec:\n  serviceName",
        )),
    ));
    assert!(
        error.contains("The StatefulSet \"pfs.store\" is invalid: metadata.name: Invalid value: \"pfs.store\": a lowercase RFC 1123 label"),
        "{error}"
    );
}

/// `kubectl describe`'s Events table row (`Type Reason Age From Message`) of `reason`.
fn event_row(described: &str, reason: &str) -> String {
    let events = described
        .split_once("Events:")
        .unwrap_or_else(|| panic!("no Events section in:\n{described}"))
        .1;
    events
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(reason))
        .unwrap_or_else(|| panic!("no {reason} event in:\n{events}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_lists_events_recorded_through_either_api() {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, ListParams};
    use kube::runtime::events::{Event, EventType, Recorder, Reporter};
    use kube::{Resource, ResourceExt};

    let bed = Bed::start().await;
    ok(bed.kubectl(&["create", "namespace", "pf"]));
    ok(bed.kubectl_with_input(&["apply", "-f", "-"], Some(WIDGETS_CRD)));
    ok(bed.kubectl_with_input(&["apply", "-n", "pf", "-f", "-"], Some(WIDGET)));
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: store-1-pfs\n  namespace: pf\nspec:\n  containers:\n  - name: pfs\n    image: pfs:1\n";
    ok(bed.kubectl_with_input(&["apply", "-f", "-"], Some(pod)));
    // Before anything is recorded.
    let described = ok(bed.kubectl(&["describe", "pod", "store-1-pfs", "-n", "pf"]));
    assert_eq!(
        described
            .lines()
            .last()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["Events:", "<none>"],
        "{described}"
    );

    // The operator records through events.k8s.io (kube-rs's Recorder), about its custom
    // resource and a pod; the pod's event twice, as a series.
    let recorder = Recorder::new(
        bed.client.clone(),
        Reporter {
            controller: "pureflash.io/operator".into(),
            instance: Some("operator-0".into()),
        },
    );
    let pods: Api<Pod> = Api::namespaced(bed.client.clone(), "pf");
    let pod = pods.get("store-1-pfs").await.unwrap();
    let restarted = Event {
        type_: EventType::Warning,
        reason: "Restarted".into(),
        note: Some("pod deleted to recover the store".into()),
        action: "Recover".into(),
        secondary: None,
    };
    recorder
        .publish(&restarted, &pod.object_ref(&()))
        .await
        .unwrap();
    recorder
        .publish(&restarted, &pod.object_ref(&()))
        .await
        .unwrap();
    let widget = bed.widgets("pf").get("w1").await.unwrap();
    let reference = widget.object_ref(&common::widget_resource());
    recorder
        .publish(
            &Event {
                type_: EventType::Normal,
                reason: "Reconciled".into(),
                note: Some("3 trays ready".into()),
                action: "Reconcile".into(),
                secondary: None,
            },
            &reference,
        )
        .await
        .unwrap();

    // `kubectl describe` lists core Events about the object (by name, namespace, kind, uid).
    let described = ok(bed.kubectl(&["describe", "pod", "store-1-pfs", "-n", "pf"]));
    let line = event_row(&described, "Restarted");
    assert!(
        line.contains("Warning")
            && line.contains("(x2 over")
            && line.contains("pureflash.io/operator")
            && line.ends_with("pod deleted to recover the store"),
        "{line}"
    );
    let described = ok(bed.kubectl(&["describe", "widget", "w1", "-n", "pf"]));
    let line = event_row(&described, "Reconciled");
    assert!(
        line.contains("Normal")
            && line.contains("pureflash.io/operator")
            && line.ends_with("3 trays ready"),
        "{line}"
    );
    assert!(!described.contains("Restarted"), "only the widget's events");

    // `kubectl get events` is the core API: the recorded events are there.
    let events = ok(bed.kubectl(&["get", "events", "-n", "pf"]));
    assert_eq!(
        header(&events),
        ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    );
    assert!(
        events
            .lines()
            .any(|l| l.contains("Restarted") && l.contains("pod/store-1-pfs")),
        "{events}"
    );
    assert!(
        events
            .lines()
            .any(|l| l.contains("Reconciled") && l.contains("widget/w1")),
        "{events}"
    );
    let selected = ok(bed.kubectl(&[
        "get",
        "events",
        "-n",
        "pf",
        "--field-selector",
        "involvedObject.kind=Widget,type=Normal",
        "-o",
        "name",
    ]));
    assert_eq!(selected.lines().count(), 1, "{selected}");

    // The reverse: a core Event (as kubelets and client-go's old recorder write them) shows
    // through events.k8s.io, and in describe next to the other one.
    let uid = pod.uid().unwrap();
    let core_event = format!(
        "apiVersion: v1\nkind: Event\nmetadata:\n  name: store-1-pfs.killing\n  namespace: pf\ninvolvedObject:\n  apiVersion: v1\n  kind: Pod\n  name: store-1-pfs\n  namespace: pf\n  uid: {uid}\nreason: Killing\nmessage: Stopping container pfs\ntype: Normal\nsource:\n  component: kubelet\n  host: node-a\nfirstTimestamp: \"2026-01-01T00:00:00Z\"\nlastTimestamp: \"2026-01-01T00:00:00Z\"\ncount: 1\n"
    );
    ok(bed.kubectl_with_input(&["create", "-f", "-"], Some(&core_event)));
    let new_api = ok(bed.kubectl(&["get", "events.events.k8s.io", "-n", "pf", "-o", "wide"]));
    assert!(
        new_api.lines().any(|l| l.contains("Killing")
            && l.contains("kubelet, node-a")
            && l.contains("Stopping container pfs")),
        "{new_api}"
    );
    assert_eq!(
        ok(bed.kubectl(&[
            "get",
            "events.v1.events.k8s.io",
            "store-1-pfs.killing",
            "-n",
            "pf",
            "-o",
            "jsonpath={.note}|{.regarding.uid}|{.deprecatedSource.component}"
        ])),
        format!("Stopping container pfs|{uid}|kubelet")
    );
    let described = ok(bed.kubectl(&["describe", "pod", "store-1-pfs", "-n", "pf"]));
    // describe's From column is the source's component (or the reporting controller).
    let line = event_row(&described, "Killing");
    assert!(
        line.contains(" kubelet ") && line.ends_with("Stopping container pfs"),
        "{line}"
    );
    assert!(event_row(&described, "Restarted").contains("(x2 over"));
    let through_new: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(bed.client.clone(), "pf");
    let listed = through_new
        .list(&ListParams::default().fields(&format!("regarding.uid={uid}")))
        .await
        .unwrap();
    let mut reasons: Vec<String> = listed
        .items
        .iter()
        .filter_map(|e| e.reason.clone())
        .collect();
    reasons.sort();
    assert_eq!(reasons, ["Killing", "Restarted"]);
    assert!(
        listed
            .items
            .iter()
            .all(|e| e.name_any().starts_with("store-1-pfs."))
    );
}

/// A budget over the store Pods of the drain tests: two of three must stay, and a Pod that is
/// not Ready may always go (what the operator asks for).
const STORE_BUDGET: &str = "apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: pfs
  namespace: drain
spec:
  minAvailable: 2
  unhealthyPodEvictionPolicy: AlwaysAllow
  selector:
    matchLabels:
      app: pfs
";

/// `kubectl cordon`, `kubectl drain` (evicting through the eviction subresource, retrying a
/// refusal of the budget every 5 s, and waiting for the Pods to be gone), `kubectl get pdb` and
/// `kubectl describe pdb` (kubernetes.io/docs/tasks/administer-cluster/safely-drain-node/).
/// The test plays the kubelets (a terminating Pod is removed) and the operator (a replacement
/// Pod on the other node).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_evicts_within_the_budget_and_retries_past_it() {
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::{Node, Pod};
    use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
    use kube::runtime::{WatchStreamExt, watcher};
    use kube::{Resource, ResourceExt};
    use serde_json::json;

    let bed = Bed::start().await;
    ok(bed.kubectl(&["create", "namespace", "drain"]));
    ok(bed.kubectl_with_input(&["apply", "-f", "-"], Some(WIDGETS_CRD)));
    ok(bed.kubectl_with_input(&["apply", "-n", "drain", "-f", "-"], Some(WIDGET)));
    let nodes: Api<Node> = Api::all(bed.client.clone());
    for node in ["node-a", "node-b"] {
        let node = serde_json::from_value(json!({"metadata": {"name": node}})).unwrap();
        nodes.create(&PostParams::default(), &node).await.unwrap();
    }
    let owner = bed.widgets("drain").get("w1").await.unwrap();
    let pods: Api<Pod> = Api::namespaced(bed.client.clone(), "drain");
    let store_pod = |name: &str, node: &str| {
        let mut pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"app": "pfs"}},
            "spec": {"nodeName": node, "containers": [{"name": "pfs", "image": "pfs:1"}],
                     "volumes": [{"name": "scratch", "emptyDir": {}}]},
        }))
        .unwrap();
        pod.metadata.owner_references = Some(vec![
            owner
                .controller_owner_ref(&common::widget_resource())
                .unwrap(),
        ]);
        let (pods, name) = (pods.clone(), name.to_owned());
        async move {
            pods.create(&PostParams::default(), &pod).await.unwrap();
            // Running and Ready, as its kubelet would report it.
            let status = json!({"status": {"phase": "Running", "conditions": [
                {"type": "ContainersReady", "status": "True"}, {"type": "Ready", "status": "True"}]}});
            pods.patch_status(&name, &PatchParams::default(), &Patch::Strategic(status))
                .await
                .unwrap();
        }
    };
    store_pod("p0", "node-a").await;
    store_pod("p1", "node-a").await;
    store_pod("p2", "node-b").await;
    assert!(
        ok(bed.kubectl_with_input(&["apply", "-f", "-"], Some(STORE_BUDGET)))
            .contains("poddisruptionbudget.policy/pfs created")
    );
    let budgets = ok(bed.kubectl(&["get", "pdb", "-n", "drain"]));
    assert_eq!(row(&budgets, "pfs")[1..4], ["2", "N/A", "1"]);
    let described = ok(bed.kubectl(&["describe", "pdb", "pfs", "-n", "drain"]));
    for line in [
        "Min available:  2",
        "Selector:       app=pfs",
        "Allowed disruptions:  1",
        "Current:              3",
        "Desired:              2",
        "Total:                3",
    ] {
        assert!(
            described.contains(line),
            "{line:?} missing from:\n{described}"
        );
    }

    // The kubelets: a terminating Pod's containers stop at once, and it is removed.
    let kubelet = {
        let pods = pods.clone();
        tokio::spawn(async move {
            let mut seen = watcher(pods.clone(), watcher::Config::default())
                .applied_objects()
                .boxed();
            while let Some(Ok(pod)) = seen.next().await {
                if pod.metadata.deletion_timestamp.is_some() {
                    let removal = DeleteParams {
                        grace_period_seconds: Some(0),
                        preconditions: Some(Preconditions {
                            uid: pod.uid(),
                            resource_version: None,
                        }),
                        ..DeleteParams::default()
                    };
                    let _ = pods.delete(&pod.name_any(), &removal).await;
                }
            }
        })
    };

    assert_eq!(
        ok(bed.kubectl(&["cordon", "node-a"])).trim(),
        "node/node-a cordoned"
    );
    let cordoned = nodes.get("node-a").await.unwrap();
    assert_eq!(cordoned.spec.unwrap().unschedulable, Some(true));

    // A server-side dry run evicts nothing.
    let dry_run = ok(bed.kubectl(&[
        "drain",
        "node-a",
        "--ignore-daemonsets",
        "--delete-emptydir-data",
        "--dry-run=server",
    ]));
    assert!(
        dry_run.contains("evicting pod drain/p0 (server dry run)")
            && dry_run.contains("node/node-a drained (server dry run)"),
        "{dry_run}"
    );
    assert!(
        pods.get("p0")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_none()
    );

    // Both Pods of node-a are evicted at once: one within the budget, the other refused until
    // a replacement on node-b is Ready. kubectl runs as an administrator with a token, so that
    // its evictions show in the audit log.
    bed.emulator
        .add_token("drainer-token", "drainer", &["system:masters"]);
    let drain = bed.spawn_kubectl_as(
        "drainer-token",
        &[
            "drain",
            "node-a",
            "--ignore-daemonsets",
            "--delete-emptydir-data",
            "--timeout=60s",
        ],
    );
    let first_gone = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        loop {
            let evicted: std::collections::BTreeSet<String> = bed
                .emulator
                .audit()
                .into_iter()
                .filter(|r| r.subresource.as_deref() == Some("eviction"))
                .filter_map(|r| r.name)
                .collect();
            let gone = [
                pods.get_opt("p0").await.unwrap().is_none(),
                pods.get_opt("p1").await.unwrap().is_none(),
            ];
            if evicted.len() == 2 {
                match gone {
                    [true, false] => return "p0",
                    [false, true] => return "p1",
                    _ => {}
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("both Pods of node-a are asked for, and one is evicted and removed");
    // The other's eviction, asked for, is answered before the replacement comes.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let other = if first_gone == "p0" { "p1" } else { "p0" };
    assert!(
        pods.get(other)
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_none()
    );
    store_pod("p3", "node-b").await;
    let (success, stdout, stderr) = tokio::task::spawn_blocking(move || drain.join().unwrap())
        .await
        .unwrap();
    assert!(success, "drain failed:\nstdout: {stdout}\nstderr: {stderr}");
    for line in [
        "node/node-a already cordoned".to_owned(),
        format!("evicting pod drain/{first_gone}"),
        format!("pod/{first_gone} evicted"),
        format!("pod/{other} evicted"),
        "node/node-a drained".to_owned(),
    ] {
        assert!(stdout.contains(&line), "{line:?} missing from:\n{stdout}");
    }
    assert!(
        stderr.contains(&format!(
            "error when evicting pods/\"{other}\" -n \"drain\" (will retry after 5s): Cannot evict pod as it would violate the pod's disruption budget."
        )),
        "{stderr}"
    );
    assert!(pods.get_opt(other).await.unwrap().is_none());
    let budgets = ok(bed.kubectl(&["get", "pdb", "pfs", "-n", "drain"]));
    assert_eq!(row(&budgets, "pfs")[1..4], ["2", "N/A", "0"]);
    assert_eq!(
        ok(bed.kubectl(&["uncordon", "node-a"])).trim(),
        "node/node-a uncordoned"
    );
    kubelet.abort();
}
