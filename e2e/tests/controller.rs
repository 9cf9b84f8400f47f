//! The controller as the chart installs it (two replicas, in the sandbox each Pod
//! with a network of its own and run from the image when there is one), driven with
//! real kubectl as an operator would and scraped as Prometheus would: one replica
//! leads, allocates, reports in the pool's status, Events and `kubectl describe`
//! and exports its metrics; on SIGTERM it gives its leader Lease back, exits 0, and
//! the standby leads at once. Runs as root.

use std::process::Command;
use std::time::Duration;

use ferrolb_e2e::harness::Harness;
use ferrolb_e2e::sandbox::{NS, Options, netns_exec};
use ferrolb_e2e::wait::eventually;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;

const SETUP: &str = "apiVersion: ferrolb.io/v1beta1
kind: IPAddressPool
metadata:
  name: public
  namespace: ferrolb-system
spec:
  addresses: [198.51.100.10-198.51.100.20]
---
apiVersion: ferrolb.io/v1beta1
kind: L2Advertisement
metadata:
  name: all
  namespace: ferrolb-system
";

const SERVICE: &str = "apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: default
spec:
  type: LoadBalancer
  selector: {app: web}
  ports: [{port: 80}]
";

#[test]
fn the_controller_allocates_reports_and_shuts_down_cleanly() {
    let h = Harness::up(&Options { nodes: 1, ..Options::default() });
    let (rt, sb) = (&h.rt, h.sb());
    let st = sb.state.clone();
    let kubectl = |args: &[&str]| {
        let out = Command::new("kubectl").env("KUBECONFIG", &st.kubeconfig).args(args).output().unwrap();
        assert!(out.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let http = |target: &str, path: &str| {
        let url = format!("http://{target}{path}");
        netns_exec(&st.control_plane_netns, &["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", &url])
    };
    let targets = st.controller_targets();
    assert_eq!(targets.len(), 2, "the chart's two replicas");
    for t in &targets {
        // Ready as the leader and as the standby.
        eventually("readyz", Duration::from_secs(30), || http(t, "/readyz").filter(|c| c == "200"));
        assert_eq!(http(t, "/healthz").as_deref(), Some("200"));
    }

    sb.kubectl_apply(SETUP).unwrap();
    sb.kubectl_apply(SERVICE).unwrap();
    let row = eventually("EXTERNAL-IP", Duration::from_secs(30), || {
        let out = kubectl(&["get", "svc", "web", "--no-headers"]);
        out.contains("198.51.100.10").then_some(out)
    });
    assert!(row.contains("LoadBalancer"), "{row}");
    eventually("pool status", Duration::from_secs(30), || {
        let jsonpath = "jsonpath={.status.assignedIPv4}/{.status.availableIPv4}";
        (kubectl(&["-n", NS, "get", "ippool", "public", "-o", jsonpath]) == "1/10").then_some(())
    });
    let events = kubectl(&["get", "events.events.k8s.io", "-o", "jsonpath={.items[*].reason}"]);
    assert!(events.contains("IPAllocated"), "{events}");
    let described = kubectl(&["describe", "svc", "web"]);
    assert!(described.contains("IPAllocated") && described.contains("198.51.100.10"), "{described}");

    let text = st.controller_leader_metrics();
    for line in [
        "ferrolb_allocator_addresses{pool=\"public\"} 11",
        "ferrolb_allocator_addresses_in_use{pool=\"public\"} 1",
        "ferrolb_allocator_ipv4_addresses_in_use{pool=\"public\"} 1",
        "ferrolb_allocator_ipv6_addresses{pool=\"public\"} 0",
        "ferrolb_config_stale{pool=\"public\"} 0",
        "ferrolb_controller_leader 1",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in:\n{text}");
    }
    assert!(text.contains("ferrolb_allocator_allocation_duration_seconds_count"), "{text}");
    assert!(text.contains("ferrolb_k8s_client_updates_total"), "{text}");

    // SIGTERM to the leader (its Pod deleted, its node draining): it gives the Lease back
    // and exits 0; the standby leads.
    let holder = || kubectl(&["-n", NS, "get", "lease", "ferrolb-controller", "-o", "jsonpath={.spec.holderIdentity}"]);
    let leader = holder();
    let (key, standby) = match leader.as_str() {
        "ferrolb-controller-0" => ("controller", "ferrolb-controller-1"),
        "ferrolb-controller-1" => ("controller-1", "ferrolb-controller-0"),
        other => panic!("an unexpected leader {other:?}"),
    };
    sb.kill_pod(key, "-TERM", true).unwrap();
    eventually("the standby leads", Duration::from_secs(10), || (holder() == standby).then_some(()));
    eventually("the new leader reports", Duration::from_secs(20), || {
        let m = st.controller_leader_metrics();
        m.lines().any(|l| l == "ferrolb_allocator_addresses_in_use{pool=\"public\"} 1").then_some(())
    });
    let pods: Api<Pod> = Api::namespaced(sb.client.clone(), NS);
    let code = eventually("the kubelet reports the exit", Duration::from_secs(10), || {
        let p = rt.block_on(pods.get(&leader)).ok()?;
        let c = serde_json::to_value(p.status?.container_statuses?.first()?).ok()?;
        c["state"]["terminated"]["exitCode"].as_i64()
    });
    assert_eq!(code, 0, "a clean exit");
}
