//! What every conformance test needs: an emulator, a `kube::Client` on it, a kubeconfig for
//! `kubectl`, the test CRD, and clients that authenticate with a token (to be authorized by
//! RBAC) instead of being the administrator.
#![allow(dead_code)] // each test file uses a different subset

use kube::api::{Api, DynamicObject, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, Config};
use kube_emulator::Emulator;
use serde_json::{Value, json};

pub const WIDGETS_CRD: &str = include_str!("../fixtures/widgets-crd.yaml");
/// What a Helm chart for the operator renders: every kind it installs, in namespace `pf`.
pub const CHART_MANIFESTS: &str = include_str!("../fixtures/chart-manifests.yaml");

pub struct Bed {
    pub emulator: Emulator,
    pub client: Client,
    pub kubeconfig: tempfile::NamedTempFile,
}

impl Bed {
    pub async fn start() -> Bed {
        let emulator = Emulator::start().await.expect("emulator starts");
        let kubeconfig = tempfile::NamedTempFile::new().expect("temp file");
        emulator
            .write_kubeconfig(kubeconfig.path())
            .expect("kubeconfig written");
        let config = Config::from_custom_kubeconfig(
            Kubeconfig::from_yaml(&emulator.kubeconfig()).expect("valid kubeconfig"),
            &KubeConfigOptions::default(),
        )
        .await
        .expect("config");
        let client = Client::try_from(config).expect("client");
        Bed {
            emulator,
            client,
            kubeconfig,
        }
    }

    /// Creates a fresh namespace for one test.
    pub async fn namespace(&self, name: &str) -> String {
        let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(self.client.clone());
        let ns = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        namespaces
            .create(&PostParams::default(), &ns)
            .await
            .expect("namespace created");
        name.to_owned()
    }

    /// Installs the test CRD through the API.
    pub async fn install_widgets(&self) {
        let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> = Api::all(self.client.clone());
        let crd = serde_yaml::from_str(WIDGETS_CRD).expect("fixture parses");
        crds.create(&PostParams::default(), &crd)
            .await
            .expect("CRD created");
    }

    /// A client whose requests carry `token` (see `Emulator::add_token`), authorized by RBAC.
    /// It does not retry, so that every request shows in the audit log once.
    pub async fn client_with_token(&self, token: &str) -> Client {
        let mut config = Config::from_custom_kubeconfig(
            Kubeconfig::from_yaml(&self.emulator.kubeconfig_with_token(token))
                .expect("valid kubeconfig"),
            &KubeConfigOptions::default(),
        )
        .await
        .expect("config");
        config.default_retry = false;
        Client::try_from(config).expect("client")
    }

    /// The administrator's client without kube's retries of `429`, `503` and `504`: a refused
    /// eviction (429) is seen as the server answered it.
    pub async fn client_without_retry(&self) -> Client {
        let mut config = Config::from_custom_kubeconfig(
            Kubeconfig::from_yaml(&self.emulator.kubeconfig()).expect("valid kubeconfig"),
            &KubeConfigOptions::default(),
        )
        .await
        .expect("config");
        config.default_retry = false;
        Client::try_from(config).expect("client")
    }

    pub fn widgets(&self, namespace: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), namespace, &widget_resource())
    }

    /// Runs kubectl against the emulator; returns (success, stdout, stderr).
    pub fn kubectl(&self, args: &[&str]) -> (bool, String, String) {
        self.kubectl_with_input(args, None)
    }

    pub fn kubectl_with_input(&self, args: &[&str], input: Option<&str>) -> (bool, String, String) {
        run_kubectl(self.kubeconfig.path(), args, input)
    }

    /// Starts kubectl as the holder of `token` on a thread of its own, for a command that waits
    /// on the cluster (`kubectl drain`) while the test plays the rest of it and follows its
    /// requests in the audit log; join the handle for (success, stdout, stderr).
    pub fn spawn_kubectl_as(
        &self,
        token: &str,
        args: &[&str],
    ) -> std::thread::JoinHandle<(bool, String, String)> {
        let kubeconfig = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(
            kubeconfig.path(),
            self.emulator.kubeconfig_with_token(token),
        )
        .expect("kubeconfig written");
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        std::thread::spawn(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run_kubectl(kubeconfig.path(), &args, None)
        })
    }

    /// Runs kubectl as the holder of `token`.
    pub fn kubectl_as(&self, token: &str, args: &[&str]) -> (bool, String, String) {
        let kubeconfig = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(
            kubeconfig.path(),
            self.emulator.kubeconfig_with_token(token),
        )
        .expect("kubeconfig written");
        run_kubectl(kubeconfig.path(), args, None)
    }
}

/// Runs kubectl with `kubeconfig`; returns (success, stdout, stderr).
fn run_kubectl(
    kubeconfig: &std::path::Path,
    args: &[&str],
    input: Option<&str>,
) -> (bool, String, String) {
    use std::io::Write;
    let mut command = kube_emulator::kubectl();
    command.arg("--kubeconfig").arg(kubeconfig).args(args);
    command.env("KUBECACHEDIR", kubeconfig.with_extension("cache"));
    command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = command
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
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

pub fn widget_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("test.pureflash.io", "v1alpha1", "Widget"),
        "widgets",
    )
}

/// A valid Widget.
pub fn widget(name: &str, id: i64) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "test.pureflash.io/v1alpha1",
        "kind": "Widget",
        "metadata": {"name": name},
        "spec": {"id": id, "nodeName": "node-a", "devices": [{"path": "/dev/nvme0n1"}]},
    }))
    .unwrap()
}

/// The API error of a failed call.
pub fn api_error<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> kube::core::Status {
    match result {
        Err(kube::Error::Api(status)) => *status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

pub fn data(object: &DynamicObject) -> &Value {
    &object.data
}
