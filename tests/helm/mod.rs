//! A real Helm for the tests (tools/install-kube-clients puts one in .dev/bin), and the chart's
//! rendered objects.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_json::Value;

pub const ROOT: &str = env!("CARGO_MANIFEST_DIR");

pub fn chart() -> PathBuf {
    Path::new(ROOT).join("charts/pureflash-operator")
}

/// Helm: `$HELM`, else `.dev/bin/helm` (tools/install-kube-clients), else `helm` on the PATH.
pub fn helm() -> Command {
    let local = Path::new(ROOT).join(".dev/bin/helm");
    let program = std::env::var_os("HELM")
        .map(PathBuf::from)
        .or_else(|| local.exists().then_some(local))
        .unwrap_or_else(|| PathBuf::from("helm"));
    let mut command = Command::new(&program);
    // Helm keeps caches and config under HOME; tests must not depend on a user's.
    let home = std::env::temp_dir().join("pureflash-chart-tests-helm-home");
    command
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"));
    command
}

/// Runs Helm: (success, stdout, stderr).
pub fn run(mut command: Command) -> (bool, String, String) {
    let output = command.output().unwrap_or_else(|e| {
        panic!(
            "cannot run helm ({e}): install it with tools/install-kube-clients (tools/install-deps does)"
        )
    });
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `helm template <release>` into `namespace` with `--set` values; Err(stderr) when Helm refuses.
pub fn template(release: &str, namespace: &str, sets: &[&str]) -> Result<String, String> {
    let mut command = helm();
    command
        .arg("template")
        .arg(release)
        .arg(chart())
        .args(["--namespace", namespace]);
    for set in sets {
        command.args(["--set", set]);
    }
    let (ok, stdout, stderr) = run(command);
    if ok { Ok(stdout) } else { Err(stderr) }
}

/// The objects of a multi-document YAML.
pub fn parse(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .filter_map(|doc| {
            let value = Value::deserialize(doc).expect("rendered YAML parses");
            (!value.is_null()).then_some(value)
        })
        .collect()
}
