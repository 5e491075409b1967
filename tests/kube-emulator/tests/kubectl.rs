//! Conformance of the emulator through the real `kubectl` (on every machine; its dispatcher
//! picks the 1.33 binary from `/version`). Expected outputs are kubectl's documented behaviour.

mod common;

use common::{Bed, WIDGETS_CRD};

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
