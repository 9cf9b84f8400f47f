//! BGP mode end to end, the way it ships: the chart-installed speakers peer with a
//! real router (FRR's zebra and bgpd, or BIRD 2) in a namespace between the nodes'
//! segment and an outside client, whose only way to a VIP is the routes they
//! advertise. Runs as root.

use std::net::SocketAddr;
use std::time::Duration;

use ferrolb_e2e::client::{ClientHost, Prober, url};
use ferrolb_e2e::harness::Harness;
use ferrolb_e2e::router::{BGP_POOL_V4, BGP_POOL_V6, Daemon, NODE_ASN, ROUTER_ASN, ROUTER_V4, RouterState};
use ferrolb_e2e::sandbox::{Families, NS, Options};
use ferrolb_e2e::wait::eventually;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, DeleteParams};
use serde_json::{Value, json};

fn apply(h: &Harness, obj: Value) {
    h.sb().kubectl_apply(&obj.to_string()).expect("kubectl apply");
}

fn router(h: &Harness) -> &RouterState {
    h.sb().state.router.as_ref().expect("the sandbox has a router")
}

fn outside(h: &Harness) -> ClientHost {
    ClientHost::new(&router(h).outside_netns, "eth0")
}

/// The node addresses the router's kernel route for `ip` goes to.
fn hops(h: &Harness, ip: &str) -> Vec<String> {
    router(h).next_hops(ip).iter().map(|a| a.to_string()).collect()
}

/// Wait until the router's route for `ip` goes to exactly the nodes `want` (indices from 1).
fn until_hops(h: &Harness, ip: &str, want: &[usize]) {
    let st = &h.sb().state;
    let v6 = ip.contains(':');
    let mut expected: Vec<String> = want
        .iter()
        .map(|i| {
            let n = &st.nodes[i - 1].interfaces[0];
            if v6 { n.ipv6.clone() } else { n.ipv4.clone() }
        })
        .collect();
    expected.sort_by_key(|a| a.parse::<std::net::IpAddr>().unwrap());
    eventually(&format!("{ip} via nodes {want:?}"), Duration::from_secs(30), || {
        (hops(h, ip) == expected).then_some(())
    });
}

fn pod(h: &Harness, name: &str, node: &str) {
    apply(
        h,
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default", "labels": {"app": "web"}},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "any", "ports": [{"containerPort": 8080}]}]}}),
    );
}

fn service(h: &Harness, name: &str, policy: &str) {
    apply(
        h,
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
            "spec": {"type": "LoadBalancer", "externalTrafficPolicy": policy, "ipFamilyPolicy": "RequireDualStack",
                "ipFamilies": ["IPv4", "IPv6"], "selector": {"app": "web"},
                "ports": [{"port": 80, "targetPort": 8080}]}}),
    );
}

fn ips(h: &Harness, name: &str) -> (String, String) {
    let api: Api<Service> = Api::namespaced(h.sb().client.clone(), "default");
    eventually(&format!("{name} gets both IPs"), Duration::from_secs(30), || {
        let s = h.rt.block_on(api.get_opt(name)).ok()??;
        let ips: Vec<String> = ferrolb_model::ingress_ips(&s).iter().map(|i| i.to_string()).collect();
        let v4 = ips.iter().find(|i| !i.contains(':'))?.clone();
        let v6 = ips.iter().find(|i| i.contains(':'))?.clone();
        Some((v4, v6))
    })
}

fn bgp_sandbox(daemon: Daemon) -> Harness {
    let h = Harness::up(&Options { nodes: 3, families: Families::Dual, bgp: Some(daemon), ..Options::default() });
    apply(
        &h,
        json!({"apiVersion": "ferrolb.io/v1beta2", "kind": "BGPPeer", "metadata": {"name": "router", "namespace": NS},
            "spec": {"myASN": NODE_ASN, "peerASN": ROUTER_ASN, "peerAddress": ROUTER_V4,
                "holdTime": "9s", "connectTime": "1s"}}),
    );
    apply(
        &h,
        json!({"apiVersion": "ferrolb.io/v1beta1", "kind": "IPAddressPool", "metadata": {"name": "bgp", "namespace": NS},
            "spec": {"addresses": [BGP_POOL_V4, BGP_POOL_V6]}}),
    );
    apply(
        &h,
        json!({"apiVersion": "ferrolb.io/v1beta1", "kind": "Community", "metadata": {"name": "site", "namespace": NS},
            "spec": {"communities": [{"name": "edge", "value": "large:64513:1:2"}]}}),
    );
    apply(
        &h,
        json!({"apiVersion": "ferrolb.io/v1beta1", "kind": "BGPAdvertisement", "metadata": {"name": "bgp", "namespace": NS},
            "spec": {"ipAddressPools": ["bgp"], "communities": ["64513:100", "edge"]}}),
    );
    eventually("every node's session Established at the router", Duration::from_secs(30), || {
        (router(&h).established() == 3).then_some(())
    });
    h
}

/// Cluster and Local Services reach the router with the right next hops and
/// attributes, follow endpoints, carry traffic from outside over IPv4 and IPv6, and
/// a stopping speaker withdraws before it goes, without a failed connection.
fn advertise_follow_and_withdraw(daemon: Daemon) {
    let h = bgp_sandbox(daemon);
    pod(&h, "web-1", "node-1");
    pod(&h, "web-2", "node-2");
    service(&h, "web", "Cluster");
    service(&h, "loc", "Local");
    let (web4, web6) = ips(&h, "web");
    let (loc4, _) = ips(&h, "loc");
    // Cluster: every node advertises; Local: the nodes with a ready endpoint.
    until_hops(&h, &web4, &[1, 2, 3]);
    until_hops(&h, &web6, &[1, 2, 3]);
    until_hops(&h, &loc4, &[1, 2]);
    // The advertisement's communities, literal and by alias, reach the router.
    let (community, large, _) = router(&h).attributes("ipv4", &format!("{web4}/32")).expect("the router has the route");
    let (want_c, want_l) = match daemon {
        Daemon::Frr => ("64513:100", "64513:1:2"),
        Daemon::Bird => ("(64513,100)", "(64513, 1, 2)"),
    };
    assert_eq!((community.as_str(), large.as_str()), (want_c, want_l));
    // From outside, through the router, over both families.
    let out = outside(&h);
    for ip in [&web4, &web6, &loc4] {
        let body = eventually(&format!("curl {ip} from outside"), Duration::from_secs(20), || {
            out.curl(&url(ip, 80), Duration::from_secs(2))
        });
        assert!(body.contains("web-"), "{body}");
    }
    // Local follows its endpoints: web-2 gone, node-2 withdraws.
    let pods: Api<Pod> = Api::namespaced(h.sb().client.clone(), "default");
    h.rt.block_on(pods.delete("web-2", &DeleteParams::default())).unwrap();
    until_hops(&h, &loc4, &[1]);
    assert_eq!(hops(&h, &web4).len(), 3, "Cluster Services stay on every node");
    // A speaker stopping (SIGTERM, as in a rolling upgrade) withdraws first: the
    // router drops its next hop, and no connection from outside fails meanwhile.
    let target: SocketAddr = format!("{web4}:80").parse().unwrap();
    let outside_ns = format!("/run/netns/{}", router(&h).outside_netns);
    let prober = Prober::start(&outside_ns, target, Duration::from_millis(20), Duration::from_secs(1)).unwrap();
    eventually("the prober connects", Duration::from_secs(10), || prober.results().iter().any(|p| p.ok).then_some(()));
    h.sb().kill_pod("speaker/node-3", "-TERM", true).unwrap();
    until_hops(&h, &web4, &[1, 2]);
    let settle = prober.now();
    eventually("probes after the withdrawal", Duration::from_secs(10), || {
        (prober.results().iter().filter(|p| p.at > settle).count() >= 10).then_some(())
    });
    let probes = prober.stop();
    let failed = probes.iter().filter(|p| !p.ok).count();
    assert_eq!(failed, 0, "{failed} of {} connections failed while node-3's speaker stopped", probes.len());
}

#[test]
fn frr_routes_to_every_eligible_node_and_loses_a_stopping_one() {
    advertise_follow_and_withdraw(Daemon::Frr);
}

#[test]
fn bird_routes_to_every_eligible_node_and_loses_a_stopping_one() {
    advertise_follow_and_withdraw(Daemon::Bird);
}
