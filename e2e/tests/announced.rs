//! `ferrolb.io/Announced` tells the truth, in the sandbox with the chart-installed
//! controller and speakers: True only while a speaker announces the IP (and ARP says
//! so, from that node), and otherwise False with the cause to fix. Runs as root.

use std::time::Duration;

use ferrolb_crds::API_VERSION;
use ferrolb_e2e::harness::Harness;
use ferrolb_e2e::sandbox::{NS, Options};
use ferrolb_e2e::wait::eventually;
use k8s_openapi::api::core::v1::Service;
use kube::api::Api;
use serde_json::{Value, json};

fn apply(h: &Harness, obj: Value) {
    h.sb().kubectl_apply(&obj.to_string()).expect("kubectl apply");
}

fn advertisement(h: &Harness, spec: Value) {
    apply(
        h,
        json!({"apiVersion": API_VERSION, "kind": "L2Advertisement", "metadata": {"name": "l2", "namespace": NS}, "spec": spec}),
    );
}

/// Wait until Service `name`'s Announced condition has `status` and `reason`; its message.
fn until_announced(h: &Harness, name: &str, status: &str, reason: &str) -> String {
    let api: Api<Service> = Api::namespaced(h.sb().client.clone(), "default");
    eventually(&format!("{name}: Announced={status} ({reason})"), Duration::from_secs(30), || {
        let s = h.rt.block_on(api.get_opt(name)).ok()??;
        let c = s.status?.conditions?.into_iter().find(|c| c.type_ == "ferrolb.io/Announced")?;
        (c.status == status && c.reason == reason).then_some(c.message)
    })
}

#[test]
fn announced_is_true_only_while_a_speaker_announces_and_says_why_not() {
    let h = Harness::up(&Options { nodes: 2, families: ferrolb_e2e::sandbox::Families::V4, ..Options::default() });
    apply(
        &h,
        json!({"apiVersion": API_VERSION, "kind": "IPAddressPool", "metadata": {"name": "p", "namespace": NS},
            "spec": {"addresses": ["198.51.100.100/31"]}}),
    );
    // An advertisement whose node selector matches no node.
    advertisement(&h, json!({"nodeSelectors": [{"matchLabels": {"zone": "nowhere"}}]}));
    apply(
        &h,
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
            "spec": {"type": "LoadBalancer", "selector": {"app": "web"}, "ports": [{"port": 80}]}}),
    );
    let msg = until_announced(&h, "web", "False", "NoEligibleNode");
    assert_eq!(msg, "no node matches the nodeSelectors of L2Advertisement l2");
    assert!(h.sb().state.arp_replies("198.51.100.100", 1).is_empty(), "and indeed nobody answers");

    // Fixed: the speaker that announces is named, and ARP agrees.
    advertisement(&h, json!({"ipAddressPools": ["p"]}));
    let msg = until_announced(&h, "web", "True", "Announced");
    let holder = msg.strip_prefix("announced by ").expect("names the node").to_string();
    let st = &h.sb().state;
    let answering: Vec<String> =
        st.arp_replies("198.51.100.100", 1).into_iter().map(|m| st.node_of_mac(&m).unwrap_or(m)).collect();
    assert_eq!(answering, [holder]);

    // externalTrafficPolicy Local without a ready endpoint anywhere: not announced, and why.
    apply(
        &h,
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "local", "namespace": "default"},
            "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local", "selector": {"app": "none"}, "ports": [{"port": 80}]}}),
    );
    let msg = until_announced(&h, "local", "False", "NoReadyEndpoint");
    assert!(msg.contains("externalTrafficPolicy is Local and none of the nodes that may announce it"), "{msg}");
    assert!(msg.ends_with("(reported by node-1)"), "the first node that could, reports: {msg}");

    // An advertisement naming an interface no node has: the chosen node says so.
    apply(
        &h,
        json!({"apiVersion": API_VERSION, "kind": "IPAddressPool", "metadata": {"name": "q", "namespace": NS},
            "spec": {"addresses": ["198.51.100.110/32"]}}),
    );
    apply(
        &h,
        json!({"apiVersion": API_VERSION, "kind": "L2Advertisement", "metadata": {"name": "named", "namespace": NS},
            "spec": {"ipAddressPools": ["q"], "interfaces": ["nope9"]}}),
    );
    apply(
        &h,
        json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "named", "namespace": "default", "annotations": {"ferrolb.io/address-pool": "q"}},
            "spec": {"type": "LoadBalancer", "selector": {"app": "web"}, "ports": [{"port": 80}]}}),
    );
    let msg = until_announced(&h, "named", "False", "InterfaceMissing");
    assert!(msg.contains("has none of the interfaces the L2Advertisement names (nope9)"), "{msg}");
    assert!(h.sb().state.arp_replies("198.51.100.110", 1).is_empty());

    // Every speaker gone (their nodes' kubelets with them): their reports are stale once
    // their Leases run out (3 s here).
    for n in ["node-1", "node-2"] {
        h.sb().kill_pod(&format!("speaker/{n}"), "-KILL", true).unwrap();
    }
    let msg = until_announced(&h, "web", "False", "NoLiveSpeaker");
    assert!(msg.starts_with("no speaker is running on the nodes that may announce it"), "{msg}");
    h.sb().start_pod("speaker/node-1").unwrap();
    h.sb().start_pod("speaker/node-2").unwrap();
    until_announced(&h, "web", "True", "Announced");
}
