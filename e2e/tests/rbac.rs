//! The chart's RBAC against what the binaries really call: the sandbox's emulator
//! records every request with the caller's address (the controller runs in the
//! control-plane namespace, each speaker in its node's), a scenario exercises
//! allocation, announcement, failover and shutdown, and then every call must be
//! allowed by that component's roles, and every permission granted must be used.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ferrolb_e2e::sandbox::{NS, Sandbox, pool_and_advertisement};
use ferrolb_e2e::topology::privileged;
use ferrolb_e2e::wait::eventually;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

type Perm = (String, String, String);

fn chart_rbac() -> (BTreeSet<Perm>, BTreeSet<Perm>) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(root.join("target/tools/venv/bin/python"))
        .arg(root.join("charts/ferrolb/tests/rbac_json.py"))
        .output()
        .expect("venv python (scripts/install-deps)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let set = |c: &str| -> BTreeSet<Perm> {
        v[c].as_array()
            .unwrap()
            .iter()
            .map(|p| (p[0].as_str().unwrap().into(), p[1].as_str().unwrap().into(), p[2].as_str().unwrap().into()))
            .collect()
    };
    (set("controller"), set("speaker"))
}

#[test]
fn rbac_grants_exactly_what_the_binaries_call() {
    assert!(privileged(), "network tests need root (CI runs .ci/run as root)");
    let (ctl_rules, spk_rules) = chart_rbac();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sb = rt.block_on(Sandbox::up(2, dir.path())).expect("sandbox");
    let c = sb.client.clone();
    rt.block_on(async {
        pool_and_advertisement(&c, "p", &["198.51.100.100/30"], "all").await.unwrap();
        let svcs: Api<Service> = Api::namespaced(c.clone(), "default");
        for name in ["web", "gone"] {
            svcs.create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": name},
                "spec": {"type": "LoadBalancer", "selector": {"app": "web"}, "ports": [{"port": 80}]}}))
                .unwrap(),
            )
            .await
            .unwrap();
        }
    });
    let st = sb.state.clone();
    let holder_of = |svc: &str| {
        let api: Api<ferrolb_crds::ServiceL2Status> = Api::namespaced(c.clone(), NS);
        rt.block_on(api.get_opt(&format!("default.{svc}"))).ok().flatten()?.status.map(|s| s.node)
    };
    let holder = eventually("web announced", Duration::from_secs(20), || holder_of("web"));
    eventually("gone announced", Duration::from_secs(20), || holder_of("gone"));
    // A Service that stops being a LoadBalancer: the controller clears what it wrote, the
    // announcer removes its status.
    rt.block_on(Api::<Service>::namespaced(c.clone(), "default").delete("gone", &DeleteParams::default())).unwrap();
    eventually("gone's status removed", Duration::from_secs(20), || holder_of("gone").is_none().then_some(()));
    // Failover and graceful shutdown of a speaker and of the controller.
    assert!(Command::new("kill").args(["-TERM", &st.pids.speakers[&holder].to_string()]).status().unwrap().success());
    eventually("web moved", Duration::from_secs(20), || holder_of("web").filter(|h| *h != holder));
    let emulator = sb.emulator.clone();
    let _g = rt.enter();
    drop(sb); // SIGTERM to everything: Lease releases and status removal are recorded too.

    let cp: std::net::IpAddr = "198.51.100.3".parse().unwrap();
    let nodes: BTreeSet<std::net::IpAddr> = st.nodes.iter().map(|n| n.interfaces[0].ipv4.parse().unwrap()).collect();
    let mut ctl_used: BTreeSet<Perm> = BTreeSet::new();
    let mut spk_used: BTreeSet<Perm> = BTreeSet::new();
    for a in emulator.access_log() {
        let perm = (a.group.clone(), a.resource.clone(), a.verb.clone());
        match a.peer {
            Some(ip) if ip == cp => ctl_used.insert(perm),
            Some(ip) if nodes.contains(&ip) => spk_used.insert(perm),
            _ => false,
        };
    }
    assert!(!ctl_used.is_empty() && !spk_used.is_empty(), "both components were seen");
    for (who, used, rules) in [("controller", &ctl_used, &ctl_rules), ("speaker", &spk_used, &spk_rules)] {
        let denied: Vec<&Perm> = used.difference(rules).collect();
        assert!(denied.is_empty(), "{who} calls what its RBAC does not grant: {denied:?}");
        // Real code paths this scenario does not reach: kube's event Recorder patches an
        // event when the same one repeats (its series count).
        let rare: BTreeSet<Perm> = [("events.k8s.io", "events", "patch")]
            .iter()
            .map(|(g, r, v)| (g.to_string(), r.to_string(), v.to_string()))
            .collect();
        let unused: Vec<&Perm> = rules.difference(used).filter(|p| !rare.contains(*p)).collect();
        assert!(unused.is_empty(), "{who}'s RBAC grants what it never calls: {unused:?}");
    }
}
