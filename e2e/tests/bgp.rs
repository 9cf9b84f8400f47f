//! BGP mode end to end, the way it ships: the chart-installed speakers peer with a
//! real router (FRR's zebra and bgpd, or BIRD 2) in a namespace between the nodes'
//! segment and an outside client, whose only way to a VIP is the routes they
//! advertise. Runs as root.

use std::net::SocketAddr;
use std::time::Duration;

use ferrolb_e2e::client::{ClientHost, Prober, url};
use ferrolb_e2e::harness::Harness;
use ferrolb_e2e::router::{
    BGP_POOL_V4, BGP_POOL_V6, Daemon, NODE_ASN, ROUTER_ASN, ROUTER_V4, RouterState, set_node_link,
};
use ferrolb_e2e::sandbox::{Families, NS, Options};
use ferrolb_e2e::wait::{eventually, until};
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

/// Wait until Service `name`'s `ferrolb.io/Announced` condition is True with `message`.
fn until_announced(h: &Harness, name: &str, message: &str) {
    let api: Api<Service> = Api::namespaced(h.sb().client.clone(), "default");
    eventually(&format!("{name}: Announced, {message}"), Duration::from_secs(30), || {
        let s = h.rt.block_on(api.get_opt(name)).ok()??;
        let c = s.status?.conditions?.into_iter().find(|c| c.type_ == "ferrolb.io/Announced")?;
        (c.status == "True" && c.message == message).then_some(())
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

/// BGPPeer `router` with `extra` fields over the sandbox's.
fn peer(h: &Harness, extra: Value) {
    let mut spec = json!({"myASN": NODE_ASN, "peerASN": ROUTER_ASN, "peerAddress": ROUTER_V4,
        "holdTime": "9s", "connectTime": "1s"});
    for (k, v) in extra.as_object().into_iter().flatten() {
        spec[k] = v.clone();
    }
    apply(
        h,
        json!({"apiVersion": "ferrolb.io/v1beta2", "kind": "BGPPeer", "metadata": {"name": "router", "namespace": NS},
            "spec": spec}),
    );
}

fn bgp_sandbox(daemon: Daemon) -> Harness {
    bgp_sandbox_with(daemon, json!({}), 3, Value::Null)
}

/// A sandbox with a `daemon` router, the peer (with `extra`), pool, community and
/// advertisement; returns once `sessions` sessions are Established at the router.
fn bgp_sandbox_with(daemon: Daemon, extra: Value, sessions: usize, values: Value) -> Harness {
    let h =
        Harness::up(&Options { nodes: 3, families: Families::Dual, bgp: Some(daemon), values, ..Options::default() });
    peer(&h, extra);
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
    eventually(&format!("{sessions} sessions Established at the router"), Duration::from_secs(30), || {
        (router(&h).established() == sessions).then_some(())
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
    // The controller says so, from the speakers' ServiceBGPStatuses.
    until_announced(&h, "web", "advertised over BGP by node-1, node-2, node-3");
    until_announced(&h, "loc", "advertised over BGP by node-1, node-2");
    let statuses: Api<ferrolb_crds::ServiceBGPStatus> = Api::namespaced(h.sb().client.clone(), NS);
    let st1 = h.rt.block_on(statuses.get("default.web.node-1")).unwrap().status.unwrap();
    assert_eq!((st1.node.as_str(), st1.peers.as_slice()), ("node-1", &["router".to_string()][..]));
    // The advertisement's communities, literal and by alias, reach the router.
    let (community, large, _) = router(&h).attributes("ipv4", &format!("{web4}/32")).expect("the router has the route");
    let (want_c, want_l) = match daemon {
        Daemon::Frr | Daemon::Gobgp => ("64513:100", "64513:1:2"),
        Daemon::Bird => ("(64513,100)", "(64513, 1, 2)"),
    };
    assert_eq!((community.as_str(), large.as_str()), (want_c, want_l));
    // The speakers' metrics say so.
    let st = &h.sb().state;
    eventually("node-1's metrics: session up, the VIP advertised", Duration::from_secs(10), || {
        let text = st.speaker_metrics("node-1");
        let up = text.lines().any(|l| l == "ferrolb_bgp_session_up{peer=\"router\"} 1");
        let vip = text.lines().any(|l| l == format!("ferrolb_bgp_advertised{{ip=\"{web4}\"}} 1"));
        // At least the End-of-RIB and one announcement per family.
        let updates = text.lines().any(|l| {
            l.strip_prefix("ferrolb_bgp_updates_total{peer=\"router\"} ")
                .and_then(|v| v.parse::<f64>().ok())
                .is_some_and(|v| v >= 3.0)
        });
        (up && vip && updates).then_some(())
    });
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
    let web2 = h.rt.block_on(pods.get("web-2")).unwrap().status.and_then(|s| s.pod_ip).expect("web-2's IP");
    h.rt.block_on(pods.delete("web-2", &DeleteParams::default())).unwrap();
    until_hops(&h, &loc4, &[1]);
    // kube-proxy reprograms each node a moment after the EndpointSlice changes (the
    // sandbox's as the real one): the probes below start once no node sends to web-2.
    until("no node's kube-proxy DNATs to web-2", Duration::from_secs(10), || {
        h.sb().state.nodes.iter().all(|n| {
            h.sb()
                .state
                .node_exec(&n.name, &["nft", "list", "ruleset"])
                .is_some_and(|r| !r.contains(&format!("{web2}:")))
        })
    });
    until_announced(&h, "loc", "advertised over BGP by node-1");
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

/// With graceful restart agreed, a speaker that stops keeps its routes at the router
/// (stale) and its forwarding in place until the next one is back: no connection from
/// outside fails across the restart, and the new session takes over the routes.
fn graceful_restart_keeps_traffic_flowing(daemon: Daemon) {
    // The speakers' own forwarding: the nftables table a stopping speaker leaves for the
    // next one (with kube-proxy, kube-proxy forwards whatever the speaker does).
    let h = bgp_sandbox_with(
        daemon,
        json!({"enableGracefulRestart": true}),
        3,
        json!({"speaker": {"forwarding": "nodeport"}}),
    );
    pod(&h, "web-1", "node-1");
    service(&h, "web", "Cluster");
    let (web4, _) = ips(&h, "web");
    until_hops(&h, &web4, &[1, 2, 3]);
    // The routes come before web-1 serves (Cluster advertises without endpoints): the
    // probes start once every node forwards to it (its NodePort answers from outside).
    let api: Api<Service> = Api::namespaced(h.sb().client.clone(), "default");
    let node_port = eventually("web's NodePort", Duration::from_secs(10), || {
        h.rt.block_on(api.get("web")).ok()?.spec?.ports?.first()?.node_port
    });
    for n in &h.sb().state.nodes {
        let url = url(&n.interfaces[0].ipv4, u16::try_from(node_port).unwrap());
        eventually(&format!("{} forwards to web-1", n.name), Duration::from_secs(20), || {
            outside(&h).curl(&url, Duration::from_secs(2))
        });
    }
    let target: SocketAddr = format!("{web4}:80").parse().unwrap();
    let outside_ns = format!("/run/netns/{}", router(&h).outside_netns);
    let prober = Prober::start(&outside_ns, target, Duration::from_millis(20), Duration::from_secs(1)).unwrap();
    eventually("the prober connects", Duration::from_secs(10), || prober.results().iter().any(|p| p.ok).then_some(()));
    let stop_at = prober.now();
    h.sb().kill_pod("speaker/node-3", "-TERM", true).unwrap();
    let gone_at = prober.now();
    // The speaker is gone and its session down, yet the router still routes to it.
    eventually("the router sees node-3's session down", Duration::from_secs(10), || {
        (router(&h).established() == 2).then_some(())
    });
    let kept = hops(&h, &web4);
    assert_eq!(
        kept.len(),
        3,
        "graceful restart keeps node-3's route while its speaker is away: {kept:?}\n{}",
        router(&h).diagnostics()
    );
    let down = prober.now();
    eventually("probes while node-3's speaker is away", Duration::from_secs(10), || {
        (prober.results().iter().filter(|p| p.at > down).count() >= 25).then_some(())
    });
    let start_at = prober.now();
    h.sb().start_pod("speaker/node-3").unwrap();
    eventually("node-3's session back", Duration::from_secs(30), || (router(&h).established() == 3).then_some(()));
    let back_at = prober.now();
    until_hops(&h, &web4, &[1, 2, 3]);
    let probes = prober.stop();
    let failed: Vec<Duration> = probes.iter().filter(|p| !p.ok).map(|p| p.at).collect();
    assert!(
        failed.is_empty(),
        "{} of {} connections failed across node-3's speaker restart, started at {failed:?}; SIGTERM at {stop_at:?}, \
         exited by {gone_at:?}, started again at {start_at:?}, session back by {back_at:?}",
        failed.len(),
        probes.len()
    );
}

#[test]
fn frr_keeps_the_routes_of_a_gracefully_restarting_speaker() {
    graceful_restart_keeps_traffic_flowing(Daemon::Frr);
}

#[test]
fn bird_keeps_the_routes_of_a_gracefully_restarting_speaker() {
    graceful_restart_keeps_traffic_flowing(Daemon::Bird);
}

/// The notes of the `reason` Events on BGPPeer `router`.
fn peer_events(h: &Harness, reason: &str) -> Vec<String> {
    let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(h.sb().client.clone(), NS);
    let list = h.rt.block_on(api.list(&Default::default())).unwrap();
    list.items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("router"))
        .filter(|e| e.reason.as_deref() == Some(reason))
        .filter_map(|e| e.note)
        .collect()
}

/// A peer's TCP MD5 password comes from its Secret: missing, the speakers say so and do
/// not dial; wrong, the router drops every segment and the event says to check the
/// password; right, every session comes up.
fn password_from_a_secret(daemon: Daemon) {
    let h = bgp_sandbox_with(daemon, json!({"passwordSecret": {"name": "router-md5"}}), 0, Value::Null);
    router(&h).set_password(Some("s3cret")).unwrap();
    let missing = eventually("an event names the missing Secret", Duration::from_secs(20), || {
        peer_events(&h, "BGPSessionDown").into_iter().find(|n| n.contains("\"router-md5\" does not exist"))
    });
    assert!(missing.starts_with("node node-"), "{missing}");
    let secret = |pw: &str| {
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "router-md5", "namespace": NS},
            "type": "kubernetes.io/basic-auth", "stringData": {"password": pw}})
    };
    apply(&h, secret("wrong"));
    eventually("an event says to check the password", Duration::from_secs(30), || {
        peer_events(&h, "BGPSessionDown").into_iter().find(|n| n.contains("check the password"))
    });
    assert_eq!(router(&h).established(), 0, "no session with the wrong password");
    apply(&h, secret("s3cret"));
    eventually("every session up with the right password", Duration::from_secs(30), || {
        (router(&h).established() == 3).then_some(())
    });
    eventually("an event says Established", Duration::from_secs(10), || {
        peer_events(&h, "BGPSessionEstablished").into_iter().next()
    });
}

#[test]
fn frr_peers_only_with_the_password_of_the_secret() {
    password_from_a_secret(Daemon::Frr);
}

#[test]
fn bird_peers_only_with_the_password_of_the_secret() {
    password_from_a_secret(Daemon::Bird);
}

/// GoBGP keeps routes in its RIB only (no kernel table, so no traffic through it): its
/// RIB has a path from every node for a Cluster Service and from the endpoint nodes for
/// a Local one, follows the endpoints, and carries the communities.
#[test]
fn gobgp_learns_routes_from_every_eligible_node() {
    let h = bgp_sandbox(Daemon::Gobgp);
    pod(&h, "web-1", "node-1");
    pod(&h, "web-2", "node-2");
    service(&h, "web", "Cluster");
    service(&h, "loc", "Local");
    let (web4, web6) = ips(&h, "web");
    let (loc4, _) = ips(&h, "loc");
    until_hops(&h, &web4, &[1, 2, 3]);
    until_hops(&h, &web6, &[1, 2, 3]);
    until_hops(&h, &loc4, &[1, 2]);
    let (community, large, _) = router(&h).attributes("ipv4", &format!("{web4}/32")).expect("the RIB has the route");
    assert_eq!((community.as_str(), large.as_str()), ("64513:100", "64513:1:2"));
    let pods: Api<Pod> = Api::namespaced(h.sb().client.clone(), "default");
    h.rt.block_on(pods.delete("web-2", &DeleteParams::default())).unwrap();
    until_hops(&h, &loc4, &[1]);
}

/// The Valid condition of BGPPeer `router`: (status, message).
fn peer_valid(h: &Harness) -> Option<(String, String)> {
    let api: Api<ferrolb_crds::BGPPeer> = Api::namespaced(h.sb().client.clone(), NS);
    let p = h.rt.block_on(api.get_opt("router")).ok()??;
    let c = p.status?.conditions.into_iter().find(|c| c.type_ == "Valid")?;
    Some((c.status, c.message))
}

/// BFD beside every session: a peer naming a BFDProfile that does not exist yet is
/// Valid=False (and unused) until it does; then BFD comes up at the router and in the
/// speakers' metrics, and a node whose link goes down loses its next hop in well under
/// a second, where the 90 s hold timer alone would keep it for a minute and a half.
fn bfd_finds_a_failed_node(daemon: Daemon) {
    let h = bgp_sandbox_with(daemon, json!({"bfdProfile": "fast", "holdTime": "90s"}), 0, Value::Null);
    let refused = eventually("the peer is Valid=False for its missing profile", Duration::from_secs(20), || {
        peer_valid(&h).filter(|(s, _)| s == "False")
    });
    assert!(refused.1.contains("spec.bfdProfile \"fast\": no BFDProfile"), "{refused:?}");
    assert_eq!(router(&h).established(), 0, "a peer without its profile is not used");
    apply(
        &h,
        json!({"apiVersion": "ferrolb.io/v1beta1", "kind": "BFDProfile", "metadata": {"name": "fast", "namespace": NS},
            "spec": {"receiveInterval": 100, "transmitInterval": 100, "detectMultiplier": 3}}),
    );
    eventually("3 sessions Established", Duration::from_secs(30), || (router(&h).established() == 3).then_some(()));
    let st = &h.sb().state;
    let node_v4 = |i: usize| st.nodes[i - 1].interfaces[0].ipv4.parse::<std::net::IpAddr>().unwrap();
    eventually("BFD Up at the router with every node", Duration::from_secs(30), || {
        (router(&h).bfd_up() == vec![node_v4(1), node_v4(2), node_v4(3)]).then_some(())
    });
    eventually("node-1's metrics: BFD up, packets both ways", Duration::from_secs(10), || {
        let text = st.speaker_metrics("node-1");
        let value = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{name}{{peer=\"router\"}} ")))
                .and_then(|v| v.parse::<f64>().ok())
        };
        let up = value("ferrolb_bfd_session_up") == Some(1.0);
        let both = value("ferrolb_bfd_control_packet_input_total").is_some_and(|v| v > 0.0)
            && value("ferrolb_bfd_control_packet_output_total").is_some_and(|v| v > 0.0);
        (up && both).then_some(())
    });
    pod(&h, "web-1", "node-1");
    service(&h, "web", "Cluster");
    let (web4, _) = ips(&h, "web");
    until_hops(&h, &web4, &[1, 2, 3]);
    // node-3's link goes down: the router's BFD session times out (3 x 100 ms) and it
    // tears the BGP session down with the routes. The hold timer would take 90 s.
    let ns3 = st.nodes[2].netns.clone();
    let cut = std::time::Instant::now();
    set_node_link(&ns3, false);
    let expected: Vec<String> = vec![node_v4(1).to_string(), node_v4(2).to_string()];
    eventually("node-3's next hop gone by BFD", Duration::from_secs(10), || {
        (hops(&h, &web4) == expected).then_some(())
    });
    let took = cut.elapsed();
    set_node_link(&ns3, true);
    until_hops(&h, &web4, &[1, 2, 3]);
    // node-3's speaker found the path down too, and tore its side of the session down.
    eventually("node-3's metrics: one BFD down event, BFD up again", Duration::from_secs(20), || {
        let text = st.speaker_metrics("node-3");
        let down = text.lines().any(|l| {
            l.strip_prefix("ferrolb_bfd_session_down_events_total{peer=\"router\"} ")
                .and_then(|v| v.parse::<f64>().ok())
                .is_some_and(|v| v >= 1.0)
        });
        let up = text.lines().any(|l| l == "ferrolb_bfd_session_up{peer=\"router\"} 1");
        (down && up).then_some(())
    });
    eprintln!("{daemon:?}: node-3's next hop removed {} ms after its link went down", took.as_millis());
}

#[test]
fn frr_drops_a_failed_node_by_bfd() {
    bfd_finds_a_failed_node(Daemon::Frr);
}

#[test]
fn bird_drops_a_failed_node_by_bfd() {
    bfd_finds_a_failed_node(Daemon::Bird);
}
