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
        // No Pod serves web here: announced, and the plugin says connections are refused.
        (web.contains("node-1")
            && web.contains(" announced; NoReadyEndpoint: ")
            && row(&out, "late").contains("PoolExhausted"))
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

/// MetalLB's configuration (written from its documented examples), converted by
/// `kubectl ferrolb migrate` and applied with real kubectl through ferrolb's webhook:
/// the pool serves a Service, and what does not carry over is reported.
#[test]
fn kubectl_ferrolb_migrate_turns_metallb_objects_into_ferrolb_ones() {
    let built: PathBuf = build_binaries(&["kubectl-ferrolb"]).unwrap().join("kubectl-ferrolb");
    let plugin_dir = tempfile::tempdir().unwrap();
    std::fs::copy(&built, plugin_dir.path().join("kubectl-ferrolb")).unwrap();
    let h = Harness::up(&Options { nodes: 1, ..Options::default() });
    let sb = h.sb();
    let metallb = plugin_dir.path().join("metallb.yaml");
    std::fs::write(
        &metallb,
        "apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: production, namespace: metallb-system}
spec:
  addresses: [198.51.100.100/32]
  avoidBuggyIPs: true
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: {name: l2, namespace: metallb-system}
spec: {ipAddressPools: [production]}
---
apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata: {name: router, namespace: metallb-system}
spec: {myASN: 64512, peerASN: 64513, peerAddress: 203.0.113.1, bfdProfile: fast, vrf: red}
---
apiVersion: metallb.io/v1beta1
kind: BFDProfile
metadata: {name: fast, namespace: metallb-system}
spec: {receiveInterval: 100}
",
    )
    .unwrap();
    let path = format!("{}:{}", plugin_dir.path().display(), std::env::var("PATH").unwrap_or_default());
    let out = Command::new("kubectl")
        .env("KUBECONFIG", &sb.state.kubeconfig)
        .env("PATH", &path)
        .args(["ferrolb", "migrate", "-f", metallb.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(
        report.contains("BGPPeer metallb-system/router: spec.vrf: not carried over: ferrolb has no such field"),
        "{report}"
    );
    let manifest = String::from_utf8_lossy(&out.stdout).into_owned();
    sb.kubectl_apply(&manifest).expect("the migrated objects pass ferrolb's webhook");
    sb.kubectl_apply(&serde_json::to_string(&svc("web").selector(&[("app", "web")]).json()).unwrap()).unwrap();
    let api: kube::Api<k8s_openapi::api::core::v1::Service> = kube::Api::namespaced(sb.client.clone(), "default");
    eventually("web gets the migrated pool's IP", Duration::from_secs(30), || {
        let s = h.rt.block_on(api.get_opt("web")).ok()??;
        (ferrolb_model::ingress_ips(&s).iter().map(|i| i.to_string()).collect::<Vec<_>>() == ["198.51.100.100"])
            .then_some(())
    });
    let pool: ferrolb_crds::IPAddressPool =
        h.rt.block_on(kube::Api::namespaced(sb.client.clone(), NS).get("production")).unwrap();
    assert!(pool.spec.avoid_buggy_ips, "fields carried over");
    // The BGP objects too, the peer valid with its BFD profile.
    let peers: kube::Api<ferrolb_crds::BGPPeer> = kube::Api::namespaced(sb.client.clone(), NS);
    eventually("the migrated BGPPeer is Valid", Duration::from_secs(30), || {
        let p = h.rt.block_on(peers.get_opt("router")).ok()??;
        assert_eq!(p.spec.bfd_profile.as_deref(), Some("fast"));
        p.status?.conditions.iter().any(|c| c.type_ == "Valid" && c.status == "True").then_some(())
    });
}
