//! The sandbox's controller-manager stand-in driven by real kubectl against the
//! emulator: `create deployment`, `rollout status`, `set image` (a rolling update),
//! `scale` (to zero and back) and `delete` (garbage collection through owner
//! references). The test plays the kubelet: it marks each new Pod running and ready,
//! which is all the controllers read.

use std::time::Duration;

use ferrolb_emulator::{Config, Emulator};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;

struct Cluster {
    kubeconfig: std::path::PathBuf,
    home: tempfile::TempDir,
    client: Client,
}

impl Cluster {
    fn ok(&self, args: &[&str]) -> String {
        let (ok, text) = ferrolb_e2e::chart::kubectl_run(&self.kubeconfig, self.home.path(), args)
            .expect("kubectl runs (Debian's kubernetes-client; .ci/run installs it)");
        assert!(ok, "kubectl {args:?}: {text}");
        text
    }
}

async fn cluster() -> Cluster {
    let emu = Emulator::new(Config::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serving = emu.clone();
    tokio::spawn(async move { serving.serve(listener).await });
    let home = tempfile::tempdir().unwrap();
    let kubeconfig = home.path().join("kubeconfig");
    ferrolb_emulator::write_kubeconfig(&kubeconfig, &format!("http://{addr}")).unwrap();
    let client = Client::new(emu.router(), "default");
    let (_stop_tx, stop) = tokio::sync::watch::channel(false);
    tokio::spawn(ferrolb_e2e::workloads::run_workloads(client.clone(), "ferrolb-system".into(), stop));
    std::mem::forget(_stop_tx);
    // The kubelet's part: every Pod runs and is ready as soon as it exists.
    let pods: Api<Pod> = Api::all(client.clone());
    let kubelet = client.clone();
    tokio::spawn(async move {
        let mut ip = 10u8;
        loop {
            for p in pods.list(&ListParams::default()).await.map(|l| l.items).unwrap_or_default() {
                if p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running") {
                    continue;
                }
                ip = ip.wrapping_add(1);
                let status = json!({"status": {"phase": "Running", "podIP": format!("198.51.100.{ip}"),
                    "conditions": [{"type": "Ready", "status": "True"}]}});
                let api: Api<Pod> = Api::namespaced(kubelet.clone(), &p.namespace().unwrap_or_default());
                let _ = api.patch_status(&p.name_any(), &PatchParams::default(), &Patch::Merge(status)).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    Cluster { kubeconfig, home, client }
}

/// Wait for `f` to hold (the witness), up to 60 s.
async fn until<F: AsyncFn() -> bool>(what: &str, f: F) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !f().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn pods_of(client: &Client, app: &str) -> Vec<Pod> {
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let lp = ListParams::default().labels(&format!("app={app}"));
    api.list(&lp).await.unwrap().items.into_iter().filter(|p| p.metadata.deletion_timestamp.is_none()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_roll_scale_and_cascade_as_kubectl_expects() {
    let c = cluster().await;
    c.ok(&["create", "deployment", "hello", "--image=registry.example/hello:1", "--replicas=2", "--port=8080"]);
    let out = c.ok(&["rollout", "status", "deployment/hello", "--timeout=60s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    let pods = pods_of(&c.client, "hello").await;
    assert_eq!(pods.len(), 2);
    let sets: Api<ReplicaSet> = Api::namespaced(c.client.clone(), "default");
    let rs = sets.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(rs.len(), 1);
    let deploy = Api::<Deployment>::namespaced(c.client.clone(), "default").get("hello").await.unwrap();
    assert_eq!(rs[0].owner_references()[0].uid, deploy.uid().unwrap(), "the ReplicaSet is the Deployment's");
    for p in &pods {
        assert_eq!(p.owner_references()[0].uid, rs[0].uid().unwrap(), "{} is the ReplicaSet's", p.name_any());
    }
    let table = c.ok(&["get", "deploy", "hello"]);
    assert!(table.lines().nth(1).is_some_and(|l| l.contains("2/2")), "{table}");

    // A rolling update: a second ReplicaSet takes over, the first is scaled to zero.
    c.ok(&["set", "image", "deployment/hello", "hello=registry.example/hello:2"]);
    let out = c.ok(&["rollout", "status", "deployment/hello", "--timeout=60s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    until("the old Pods to go", async || {
        let pods = pods_of(&c.client, "hello").await;
        pods.len() == 2
            && pods.iter().all(|p| {
                p.spec.as_ref().is_some_and(|s| s.containers[0].image.as_deref() == Some("registry.example/hello:2"))
            })
    })
    .await;
    let rs = sets.list(&ListParams::default()).await.unwrap().items;
    let counts: Vec<i32> = rs.iter().map(|r| r.spec.as_ref().and_then(|s| s.replicas).unwrap_or(-1)).collect();
    assert_eq!(rs.len(), 2, "{counts:?}");
    assert!(counts.contains(&0) && counts.contains(&2), "{counts:?}");

    // Scale to nothing and back.
    c.ok(&["scale", "deployment", "hello", "--replicas=0"]);
    until("no Pods", async || pods_of(&c.client, "hello").await.is_empty()).await;
    c.ok(&["scale", "deployment", "hello", "--replicas=1"]);
    until("one Pod", async || pods_of(&c.client, "hello").await.len() == 1).await;
    let out = c.ok(&["rollout", "status", "deployment/hello", "--timeout=60s"]);
    assert!(out.contains("successfully rolled out"), "{out}");

    let events = c.ok(&["get", "events"]);
    assert!(events.contains("ScalingReplicaSet") && events.contains("SuccessfulCreate"), "{events}");

    // Deleting the Deployment deletes what it owns.
    c.ok(&["delete", "deployment", "hello"]);
    until("the ReplicaSets to go", async || sets.list(&ListParams::default()).await.unwrap().items.is_empty()).await;
    until("the Pods to go", async || pods_of(&c.client, "hello").await.is_empty()).await;
}

/// A DaemonSet, applied with kubectl: one Pod on every node its `nodeSelector`
/// admits, `rollout status` after a new image (Pods replaced one at a time), a node
/// that stops matching loses its Pod, and deletion cascades.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_sets_put_a_pod_on_each_admitted_node() {
    let c = cluster().await;
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(c.client.clone());
    for (name, role) in [("node-1", "edge"), ("node-2", "edge"), ("node-3", "core")] {
        let n = serde_json::from_value(json!({"metadata": {"name": name, "labels": {"role": role}}})).unwrap();
        nodes.create(&Default::default(), &n).await.unwrap();
    }
    let ds = json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent", "namespace": "default"},
        "spec": {"selector": {"matchLabels": {"app": "agent"}},
                 "template": {"metadata": {"labels": {"app": "agent"}},
                              "spec": {"nodeSelector": {"role": "edge"},
                                       "containers": [{"name": "agent", "image": "registry.example/agent:1"}]}}}});
    let file = c.home.path().join("ds.json");
    std::fs::write(&file, ds.to_string()).unwrap();
    c.ok(&["apply", "-f", file.to_str().unwrap()]);
    let out = c.ok(&["rollout", "status", "ds/agent", "--timeout=60s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    let on = |pods: &[Pod]| -> Vec<String> {
        let mut n: Vec<String> = pods.iter().filter_map(|p| p.spec.as_ref()?.node_name.clone()).collect();
        n.sort();
        n
    };
    assert_eq!(on(&pods_of(&c.client, "agent").await), ["node-1", "node-2"]);

    c.ok(&["set", "image", "ds/agent", "agent=registry.example/agent:2"]);
    let out = c.ok(&["rollout", "status", "ds/agent", "--timeout=60s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    until("every Pod runs the new image", async || {
        let pods = pods_of(&c.client, "agent").await;
        on(&pods) == ["node-1", "node-2"]
            && pods.iter().all(|p| {
                p.spec.as_ref().is_some_and(|s| s.containers[0].image.as_deref() == Some("registry.example/agent:2"))
            })
    })
    .await;

    c.ok(&["label", "node", "node-2", "role=core", "--overwrite"]);
    until("node-2's Pod goes", async || on(&pods_of(&c.client, "agent").await) == ["node-1"]).await;
    let table = c.ok(&["get", "ds", "agent"]);
    assert!(table.lines().nth(1).is_some_and(|l| l.split_whitespace().nth(1) == Some("1")), "DESIRED 1: {table}");

    c.ok(&["delete", "ds", "agent"]);
    until("the DaemonSet's Pods go", async || pods_of(&c.client, "agent").await.is_empty()).await;
}
