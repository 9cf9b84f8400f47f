//! The Helm chart as an operator installs it: rendered with Helm's own engine
//! (`charts/ferrolb/tests/render.py`, helm-python-sdk in the venv
//! `scripts/install-deps` makes) and applied with real kubectl.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::Context;
use serde::Deserialize;
use serde_json::Value;

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `helm template RELEASE charts/ferrolb -n NAMESPACE` with `values`, as one YAML stream.
pub fn render(release: &str, namespace: &str, values: &Value) -> anyhow::Result<String> {
    let python = root().join("target/tools/venv/bin/python");
    anyhow::ensure!(python.is_file(), "{} missing: run scripts/install-deps", python.display());
    let out = Command::new(&python)
        .arg(root().join("charts/ferrolb/tests/render.py"))
        .args([release, namespace, &values.to_string()])
        .output()
        .context("running Helm's engine")?;
    anyhow::ensure!(out.status.success(), "rendering the chart: {}", String::from_utf8_lossy(&out.stderr).trim());
    Ok(String::from_utf8(out.stdout)?)
}

/// The objects of a YAML stream.
pub fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .filter_map(|d| Value::deserialize(d).ok())
        .filter(|v| v.is_object())
        .collect()
}

/// `kubectl apply -f -` of `yaml` with `kubeconfig`.
pub fn apply(kubeconfig: &Path, yaml: &str) -> anyhow::Result<()> {
    let (ok, err) = apply_reporting(kubeconfig, yaml)?;
    anyhow::ensure!(ok, "kubectl apply: {}", err.trim());
    Ok(())
}

/// `kubectl apply -f -` of `yaml`: whether it succeeded, and what kubectl printed on
/// its error output (denials, and warnings either way).
pub fn apply_reporting(kubeconfig: &Path, yaml: &str) -> anyhow::Result<(bool, String)> {
    // kubectl before 1.29 validates client-side from OpenAPI v2, which the emulator does not serve.
    let validate: &[&str] = if kubectl_minor() < 29 { &["--validate=false"] } else { &[] };
    kubectl_with_stdin(kubeconfig, &[&["apply", "-f", "-"], validate].concat(), yaml)
}

/// `kubectl delete -f -` of `yaml`, as `helm uninstall` removes a release's objects.
pub fn delete(kubeconfig: &Path, yaml: &str) -> anyhow::Result<()> {
    let (ok, err) = kubectl_with_stdin(kubeconfig, &["delete", "--ignore-not-found", "--wait=false", "-f", "-"], yaml)?;
    anyhow::ensure!(ok, "kubectl delete: {}", err.trim());
    Ok(())
}

/// Run kubectl with `args`, `input` on its standard input: whether it succeeded, and
/// its error output.
fn kubectl_with_stdin(kubeconfig: &Path, args: &[&str], input: &str) -> anyhow::Result<(bool, String)> {
    let mut child = Command::new("kubectl")
        .env("KUBECONFIG", kubeconfig)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("kubectl")?;
    child.stdin.take().context("stdin")?.write_all(input.as_bytes())?;
    let out = child.wait_with_output()?;
    Ok((out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned()))
}

/// kubectl with `args` against `kubeconfig`, its discovery cache under `home` (so that
/// a run never reads another emulator's cached discovery).
pub fn kubectl_command(kubeconfig: &Path, home: &Path, args: &[&str]) -> Command {
    let mut c = Command::new("kubectl");
    c.env("KUBECONFIG", kubeconfig).env("HOME", home).args(args);
    c
}

/// Run [`kubectl_command`]: whether it succeeded, and its output (stdout, then stderr).
pub fn kubectl_run(kubeconfig: &Path, home: &Path, args: &[&str]) -> anyhow::Result<(bool, String)> {
    let out = kubectl_command(kubeconfig, home, args).output().context("kubectl runs")?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Ok((out.status.success(), text))
}

/// The minor version of the kubectl on PATH (0 when it cannot say).
pub fn kubectl_minor() -> u32 {
    let Ok(out) = Command::new("kubectl").args(["version", "--client", "-o", "json"]).output() else { return 0 };
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v["clientVersion"]["minor"].as_str().unwrap_or("0").trim_end_matches('+').parse().unwrap_or(0)
}

/// Merge `overlay` into `base` (objects key by key, anything else replaced), as Helm
/// merges `--set` and values files over the chart's values.
pub fn merge(base: &mut Value, overlay: &Value) {
    match (base, overlay) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                merge(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (b, o) => *b = o.clone(),
    }
}

/// A `--set key.path=value` as a values object (`true`/`false`/numbers typed, as Helm does).
pub fn set_value(assignment: &str) -> anyhow::Result<Value> {
    let (path, raw) = assignment.split_once('=').with_context(|| format!("--set {assignment:?}: want key=value"))?;
    anyhow::ensure!(!path.is_empty(), "--set {assignment:?}: empty key");
    let mut v: Value = match raw {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ => raw.parse::<i64>().map(Value::from).unwrap_or_else(|_| Value::from(raw)),
    };
    for key in path.rsplit('.') {
        anyhow::ensure!(!key.is_empty(), "--set {assignment:?}: empty key segment");
        v = Value::Object([(key.to_string(), v)].into_iter().collect());
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_merge_and_set_as_helm_does() {
        let mut v = json!({"speaker": {"forwarding": "nodeport", "memberlist": {"enabled": true, "port": 7946}}});
        merge(&mut v, &set_value("speaker.memberlist.enabled=false").unwrap());
        merge(&mut v, &set_value("controller.replicas=2").unwrap());
        merge(&mut v, &set_value("log.level=debug").unwrap());
        assert_eq!(
            v,
            json!({"speaker": {"forwarding": "nodeport", "memberlist": {"enabled": false, "port": 7946}},
                   "controller": {"replicas": 2}, "log": {"level": "debug"}})
        );
        assert!(set_value("nothing").is_err());
        assert!(set_value("a..b=1").is_err());
    }
}
