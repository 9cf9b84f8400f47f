//! `kubectl ferrolb`, found by real kubectl's plugin discovery on `PATH`, against
//! the sandbox: per Service where it is and why (announced, pending with the
//! allocator's reason, not announced for lack of an advertisement), and per pool
//! its validity and usage. Runs as root.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use ferrolb_e2e::harness::Harness;
use ferrolb_e2e::sandbox::{NS, Options, build_binaries};
use ferrolb_e2e::wait::eventually;
use ferrolb_model::testing::svc;

const CONFIG: &str = "apiVersion: ferrolb.io/v1beta1
kind: IPAddressPool
metadata: {name: public, namespace: ferrolb-system}
spec: {addresses: [198.51.100.100/32]}
---
apiVersion: ferrolb.io/v1beta1
kind: IPAddressPool
metadata: {name: hidden, namespace: ferrolb-system}
spec: {addresses: [198.51.100.120/32], autoAssign: false}
---
apiVersion: ferrolb.io/v1beta1
kind: L2Advertisement
metadata: {name: public, namespace: ferrolb-system}
spec: {ipAddressPools: [public]}
";

#[test]
fn kubectl_ferrolb_shows_where_each_service_is_and_why() {
    // Installed as a user would: the binary alone in a directory on PATH.
    let built: PathBuf = build_binaries(&["kubectl-ferrolb"]).unwrap().join("kubectl-ferrolb");
    let plugin_dir = tempfile::tempdir().unwrap();
    std::fs::copy(&built, plugin_dir.path().join("kubectl-ferrolb")).unwrap();
    let plugins = plugin_dir.path().to_path_buf();
    // Without the admission webhook, so that an overlapping pool is stored and judged at run time.
    let h = Harness::up(&Options {
        nodes: 1,
        values: serde_json::json!({"webhook": {"enabled": false}}),
        ..Options::default()
    });
    let sb = h.sb();
    let path = format!("{}:{}", plugins.display(), std::env::var("PATH").unwrap_or_default());
    let kubectl = |args: &[&str]| {
        let out = Command::new("kubectl")
            .env("KUBECONFIG", &sb.state.kubeconfig)
            .env("PATH", &path)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(kubectl(&["plugin", "list"]).contains("kubectl-ferrolb"), "kubectl finds the plugin");

    sb.kubectl_apply(CONFIG).unwrap();
    sb.kubectl_apply(&svc("web").target_port(8080).json().to_string()).unwrap();
    sb.kubectl_apply(&svc("late").json().to_string()).unwrap();
    let hidden = svc("hidden").annotation("ferrolb.io/address-pool", "hidden");
    sb.kubectl_apply(&hidden.json().to_string()).unwrap();

    let row = |out: &str, name: &str| -> String {
        out.lines().find(|l| l.split_whitespace().nth(1) == Some(name)).unwrap_or_default().to_string()
    };
    let out = eventually("every Service settled", Duration::from_secs(30), || {
        let out = kubectl(&["ferrolb", "status", "-n", "default"]);
        let web = row(&out, "web");
        (web.contains("node-1") && web.ends_with("announced") && row(&out, "late").contains("PoolExhausted"))
            .then_some(out)
    });
    let header = out.lines().next().unwrap_or_default();
    assert!(header.starts_with("NAMESPACE") && header.contains("ANNOUNCED BY"), "{out}");
    let web = row(&out, "web");
    assert!(web.contains("198.51.100.100") && web.contains("public") && web.contains("eth0"), "{out}");
    let late = row(&out, "late");
    assert!(late.contains("<pending>") && late.contains("pending: PoolExhausted: no free IPv4 address"), "{out}");
    let hidden = row(&out, "hidden");
    assert!(hidden.contains("198.51.100.120") && hidden.contains("not announced: NoL2Advertisement"), "{out}");
    // One Service, by name.
    let one = kubectl(&["ferrolb", "status", "-n", "default", "web"]);
    assert_eq!(one.lines().count(), 2, "{one}");

    // A newcomer overlapping public is invalid; usage per pool.
    let overlap = "apiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: aaa, namespace: ferrolb-system}\nspec: {addresses: [198.51.100.96/28]}\n";
    sb.kubectl_apply(overlap).unwrap();
    let pools = eventually("aaa judged", Duration::from_secs(20), || {
        let out = kubectl(&["ferrolb", "pools", "--ferrolb-namespace", NS]);
        row_of(&out, "aaa").contains("Overlap").then_some(out)
    });
    let public = row_of(&pools, "public");
    assert!(public.contains("True") && public.contains("1/1") && public.contains("198.51.100.100"), "{pools}");
    assert!(row_of(&pools, "aaa").contains("False"), "{pools}");
}

fn row_of(out: &str, name: &str) -> String {
    out.lines().find(|l| l.split_whitespace().next() == Some(name)).unwrap_or_default().to_string()
}
