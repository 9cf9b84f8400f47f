//! The Helm chart, rendered and linted with Helm's own engine and every manifest
//! validated against the Kubernetes schemas: `charts/ferrolb/tests/check_chart.py`,
//! run with the venv `scripts/install-deps` creates in `target/tools/venv`.

use std::path::Path;
use std::process::Command;

use ferrolb_e2e::kubelet::{Lookup, PodInfo, launch};
use ferrolb_e2e::sandbox::NS;
use ferrolb_e2e::topology::{Netns, privileged, unique_suffix};
use k8s_openapi::api::core::v1::Container;

#[test]
fn chart_renders_lints_and_validates() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = root.join("target/tools/venv/bin/python");
    assert!(python.is_file(), "{} missing: run scripts/install-deps (as .ci/run does)", python.display());
    let out =
        Command::new(&python).arg(root.join("charts/ferrolb/tests/check_chart.py")).output().expect("python runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("{text}");
    assert!(out.status.success(), "chart checks failed:\n{text}");
    assert!(text.contains(" passed, 0 failed"), "{text}");
}

/// The chart rendered by Helm's engine into a YAML stream (`helm template`'s output).
fn render(values: &serde_json::Value) -> Vec<serde_json::Value> {
    use serde::Deserialize;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = root.join("target/tools/venv/bin/python");
    let out = Command::new(&python)
        .arg(root.join("charts/ferrolb/tests/render.py"))
        .args(["ferrolb", NS, &values.to_string()])
        .output()
        .expect("python runs");
    assert!(out.status.success(), "render: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .filter_map(|d| serde_json::Value::deserialize(d).ok())
        .filter(|v| v.is_object())
        .collect()
}

/// Secrets and ConfigMaps of a rendered release, as the kubelet would read them, and
/// the heartbeat key's Secret the controller creates at its start (the chart renders
/// none: `--memberlist-secret-name`).
struct Rendered(Vec<serde_json::Value>);

impl Lookup for Rendered {
    fn secret(&self, name: &str, key: &str) -> Option<String> {
        use base64::Engine;
        if (name, key) == ("ferrolb-memberlist", "secretkey") {
            return Some("made-by-the-controller-0123456789abcdef".into());
        }
        let s = self.0.iter().find(|d| d["kind"] == "Secret" && d["metadata"]["name"] == name)?;
        let b = base64::engine::general_purpose::STANDARD.decode(s["data"][key].as_str()?).ok()?;
        String::from_utf8(b).ok()
    }
    fn config_map(&self, name: &str, key: &str) -> Option<String> {
        let c = self.0.iter().find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == name)?;
        c["data"][key].as_str().map(String::from)
    }
}

/// Both binaries accept the arguments and environment the chart gives them, as a
/// kubelet expands them: started with exactly those, each gets past its flags and
/// stops only where it needs the cluster (exit 1, not clap's usage error 2). The
/// chart once passed `--metrics-addr=:7472`, which both binaries refused.
#[test]
fn the_binaries_accept_the_arguments_the_chart_renders() {
    assert!(privileged(), "runs the binaries in a network namespace of their own (CI runs as root)");
    let (controller, speaker) = ferrolb_e2e::sandbox::binaries().unwrap();
    let ns = Netns::create(&format!("flb{}ck", unique_suffix())).unwrap();
    let all_on = serde_json::json!({
        "loadBalancerClass": "example.com/lb", "log": {"format": "json", "level": "debug"},
        "speaker": {"forwarding": "nodeport", "revertive": true, "leaseDuration": 9, "refreshInterval": 10,
                    "excludeInterfaces": ["lo", "veth*"]},
        "controller": {"leaderElect": false, "leaseDuration": 4},
    });
    let off = serde_json::json!({"speaker": {"memberlist": {"enabled": false}}});
    for values in [serde_json::json!({}), all_on, off] {
        let docs = render(&values);
        let objects = Rendered(docs.clone());
        for (kind, suffix, bin) in [("Deployment", "controller", &controller), ("DaemonSet", "speaker", &speaker)] {
            let workload = docs
                .iter()
                .find(|d| d["kind"] == kind && d["metadata"]["name"] == format!("ferrolb-{suffix}"))
                .unwrap_or_else(|| panic!("the chart renders a {kind} ferrolb-{suffix}"));
            let container: Container =
                serde_json::from_value(workload["spec"]["template"]["spec"]["containers"][0].clone()).unwrap();
            let pod = PodInfo {
                name: format!("ferrolb-{suffix}-abcde"),
                namespace: NS.into(),
                node_name: "node-1".into(),
                ..Default::default()
            };
            let l = launch(&container, &pod, &objects, None).unwrap_or_else(|e| panic!("{kind} {values}: {e}"));
            assert_eq!(Path::new(&l.program).file_name(), bin.file_name(), "the container runs the binary");
            let out = ns
                .command(bin.to_str().unwrap())
                .args(&l.args)
                .env_clear()
                .envs(l.env.iter().cloned())
                .env("KUBECONFIG", "/nonexistent/ferrolb-kubeconfig")
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(
                out.status.code(),
                Some(1),
                "{kind} with {values}: {:?} must fail only for want of a cluster:\n{stderr}",
                l.args
            );
        }
    }
}
