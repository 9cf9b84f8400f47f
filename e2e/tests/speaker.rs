//! The speakers as the chart installs them (in the sandbox: chart-rendered Pods,
//! run from the image when there is one), with Lease-only failure detection, seen
//! from the client namespace with real `arping`, `ndisc6`, `ping` and `curl`: the
//! announcing node's MAC, nodeport forwarding, metrics, `externalTrafficPolicy:
//! Local` following its endpoint, events, a named interface that appears and
//! disappears, graceful and crash failover, and no move back when a node returns.
//! Runs as root (as `.ci/run` does).

use std::time::{Duration, Instant};

use ferrolb_crds::ServiceL2Status;
use ferrolb_e2e::harness::Harness;
use ferrolb_e2e::sandbox::{NS, Options, create, metric_sum};
use ferrolb_e2e::wait::eventually;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::Client;
use kube::api::Api;
use serde_json::json;

fn holder(rt: &tokio::runtime::Runtime, client: &Client, svc: &str) -> Option<String> {
    let api: Api<ServiceL2Status> = Api::namespaced(client.clone(), NS);
    rt.block_on(api.get_opt(&format!("default.{svc}"))).ok().flatten()?.status.map(|s| s.node).filter(|n| !n.is_empty())
}

fn ingress(rt: &tokio::runtime::Runtime, client: &Client, svc: &str) -> Option<String> {
    let api: Api<Service> = Api::namespaced(client.clone(), "default");
    let s = rt.block_on(api.get(svc)).ok()?;
    ferrolb_model::ingress_ips(&s).first().map(|i| i.to_string())
}

/// A backend Pod `name` labelled `app` on `node` (the sandbox's kubelet stand-in serves it).
fn pod(rt: &tokio::runtime::Runtime, client: &Client, name: &str, app: &str, node: &str) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    rt.block_on(create(
        &pods,
        json!({"metadata": {"name": name, "labels": {"app": app}},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "any", "ports": [{"containerPort": 8080}]}]}}),
    ))
    .unwrap();
}

#[test]
fn speakers_announce_fail_over_and_respect_advertisements() {
    // Lease-only failure detection (speaker.memberlist.enabled=false): this test covers
    // the path without heartbeats.
    let opts = Options {
        nodes: 2,
        heartbeats: false,
        speaker_lease_seconds: 3,
        values: serde_json::json!({"speaker": {"forwarding": "nodeport"}}),
        ..Options::default()
    };
    let h = Harness::up(&opts);
    let (rt, sb) = (&h.rt, h.sb());
    let client = sb.client.clone();
    let topo_nodes: Vec<(String, String)> =
        sb.topo.nodes.iter().map(|n| (n.netns.name.clone(), n.mac.clone())).collect();
    let probe = sb.state.client();

    rt.block_on(async {
        let pools: Api<ferrolb_crds::IPAddressPool> = Api::namespaced(client.clone(), NS);
        create(&pools, json!({"apiVersion": "ferrolb.io/v1beta1", "kind": "IPAddressPool", "metadata": {"name": "public"},
            "spec": {"addresses": ["198.51.100.100-198.51.100.110", "fd42:f1b::100-fd42:f1b::110"]}})).await.unwrap();
        create(&pools, json!({"apiVersion": "ferrolb.io/v1beta1", "kind": "IPAddressPool", "metadata": {"name": "named"},
            "spec": {"addresses": ["198.51.100.130/32", "fd42:f1b::130/128"], "autoAssign": false}})).await.unwrap();
        create(&Api::<ferrolb_crds::L2Advertisement>::namespaced(client.clone(), NS),
            json!({"apiVersion": "ferrolb.io/v1beta1", "kind": "L2Advertisement", "metadata": {"name": "named"},
                   "spec": {"ipAddressPools": ["named"], "interfaces": ["nope0"]}})).await.unwrap();
        create(&pools, json!({"apiVersion": "ferrolb.io/v1beta1", "kind": "IPAddressPool", "metadata": {"name": "hidden"},
            "spec": {"addresses": ["198.51.100.120/32"], "autoAssign": false}})).await.unwrap();
        create(&Api::<ferrolb_crds::L2Advertisement>::namespaced(client.clone(), NS),
            json!({"apiVersion": "ferrolb.io/v1beta1", "kind": "L2Advertisement", "metadata": {"name": "public"}, "spec": {"ipAddressPools": ["public"]}})).await.unwrap();
    });
    let names = ["node-1", "node-2"];
    let mac_of = |name: &str| topo_nodes[names.iter().position(|n| *n == name).unwrap()].1.clone();
    let netns_of = |i: usize| topo_nodes[i].0.clone();
    for (i, node) in names.iter().enumerate() {
        pod(rt, &client, &format!("web-{}", i + 1), "web", node);
    }

    rt.block_on(async {
        let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
        create(&svcs, json!({"metadata": {"name": "web"}, "spec": {"type": "LoadBalancer", "ports": [{"port": 80, "targetPort": 8080}], "selector": {"app": "web"}}})).await.unwrap();
        create(&svcs, json!({"metadata": {"name": "web6"}, "spec": {"type": "LoadBalancer", "ipFamilies": ["IPv6"], "ports": [{"port": 80}], "selector": {"app": "web"}}})).await.unwrap();
        create(&svcs, json!({"metadata": {"name": "named", "annotations": {"ferrolb.io/address-pool": "named"}},
            "spec": {"type": "LoadBalancer", "ipFamilyPolicy": "PreferDualStack", "ports": [{"port": 80}], "selector": {"app": "web"}}})).await.unwrap();
        create(&svcs, json!({"metadata": {"name": "hidden", "annotations": {"ferrolb.io/address-pool": "hidden"}},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 80}], "selector": {"app": "web"}}})).await.unwrap();
    });
    let vip = eventually("web's IP", Duration::from_secs(20), || ingress(rt, &client, "web"));
    assert_eq!(vip, "198.51.100.100");
    let first = eventually("a node announces web", Duration::from_secs(20), || holder(rt, &client, "web"));
    let mac = eventually("arping answer", Duration::from_secs(10), || probe.answering_mac(&vip));
    assert_eq!(mac, mac_of(&first), "the MAC the client learns is the announcing node's");

    // nodeport forwarding: the VIP's traffic reaches a backend through the announcing node.
    let body = eventually("curl through the VIP", Duration::from_secs(10), || {
        probe.curl(&format!("http://{vip}/"), Duration::from_secs(2))
    });
    assert!(body.starts_with("web-"), "a backend answered: {body}");

    // Only the announcing speaker exports the announcement; it counted the requests it answered.
    let scrape = |i: usize| sb.state.speaker_metrics(names[i]);
    let holder_idx = names.iter().position(|n| *n == first).unwrap();
    let m = eventually("holder metrics", Duration::from_secs(10), || {
        Some(scrape(holder_idx)).filter(|m| m.contains("ferrolb_speaker_announced"))
    });
    assert!(
        m.lines().any(|l| l.starts_with("ferrolb_speaker_announced{")
            && l.contains("ip=\"198.51.100.100\"")
            && l.ends_with(" 1")),
        "{m}"
    );
    assert!(m.lines().any(|l| l.starts_with("ferrolb_layer2_responses_sent_total{ip=\"198.51.100.100\"}")), "{m}");
    assert!(m.lines().any(|l| l.starts_with("ferrolb_layer2_gratuitous_sent_total{ip=\"198.51.100.100\"}")), "{m}");
    assert!(m.contains("ferrolb_speaker_members 2"), "{m}");
    let other_m = scrape(1 - holder_idx);
    assert!(
        !other_m.lines().any(|l| l.starts_with("ferrolb_speaker_announced{") && l.contains("198.51.100.100")),
        "{other_m}"
    );

    // externalTrafficPolicy: Local is announced from the node with the ready endpoint, and follows it.
    pod(rt, &client, "local-a", "local", "node-2");
    rt.block_on(async {
        let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
        create(
            &svcs,
            json!({"metadata": {"name": "local"}, "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local",
            "ports": [{"port": 80, "targetPort": 8080}], "selector": {"app": "local"}}}),
        )
        .await
        .unwrap();
    });
    eventually("Local announced from node-2", Duration::from_secs(20), || {
        holder(rt, &client, "local").filter(|h| h == "node-2")
    });
    let local_vip = ingress(rt, &client, "local").unwrap();
    eventually("Local answered by node-2", Duration::from_secs(10), || {
        probe.answering_mac(&local_vip).filter(|m| *m == mac_of("node-2"))
    });
    // The endpoint moves: its Pod on node-2 goes, one on node-1 comes.
    pod(rt, &client, "local-b", "local", "node-1");
    rt.block_on(Api::<Pod>::namespaced(client.clone(), "default").delete("local-a", &Default::default())).unwrap();
    eventually("Local moved to node-1 with its endpoint", Duration::from_secs(20), || {
        holder(rt, &client, "local").filter(|h| h == "node-1")
    });

    let vip6 = eventually("web6's IP", Duration::from_secs(20), || ingress(rt, &client, "web6"));
    assert_eq!(vip6, "fd42:f1b::100");
    let owner6 = eventually("a node announces web6", Duration::from_secs(20), || holder(rt, &client, "web6"));
    let mac6 = eventually("ndisc6 answer", Duration::from_secs(10), || probe.answering_mac(&vip6));
    assert_eq!(mac6, mac_of(&owner6));

    // Events: the announcer says where; a named interface that does not exist is reported.
    let reasons = |svc: &str| -> Vec<String> {
        let api: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), "default");
        let lp = kube::api::ListParams::default().fields(&format!("involvedObject.name={svc}"));
        rt.block_on(api.list(&lp)).map(|l| l.items.into_iter().filter_map(|e| e.reason).collect()).unwrap_or_default()
    };
    eventually("nodeAssigned event", Duration::from_secs(10), || {
        reasons("web").contains(&"nodeAssigned".to_string()).then_some(())
    });
    eventually("AnnounceFailed event", Duration::from_secs(20), || {
        reasons("named").contains(&"AnnounceFailed".to_string()).then_some(())
    });
    assert_eq!(probe.answering_mac("198.51.100.130"), None, "announced on no interface");

    // Allocated from a pool no advertisement selects: nobody answers.
    let hidden = eventually("hidden's IP", Duration::from_secs(20), || ingress(rt, &client, "hidden"));
    assert_eq!(hidden, "198.51.100.120");
    assert_eq!(probe.answering_mac(&hidden), None);

    // The client's kernel resolves both VIPs itself (so failover must update its entries),
    // and its unicast neighbour probe (NUD) is answered by the speaker.
    let c = |args: &[&str]| sb.state.client_exec(args);
    let _ = c(&["ping", "-c", "1", "-W", "1", &vip]);
    c(&["sysctl", "-qw", "net.ipv6.neigh.eth0.delay_first_probe_time=1"]).unwrap();
    c(&["ip", "-6", "neigh", "replace", &vip6, "lladdr", &mac_of(&owner6), "dev", "eth0", "nud", "stale"]).unwrap();
    let _ = c(&["ping", "-6", "-c", "1", "-W", "1", &vip6]);
    let neigh = |ip: &str| c(&["ip", "neigh", "show", ip, "dev", "eth0"]).unwrap_or_default();
    eventually("unicast NS answered: IPv6 entry REACHABLE", Duration::from_secs(6), || {
        neigh(&vip6).contains("REACHABLE").then_some(())
    });
    eventually("IPv4 entry learned", Duration::from_secs(3), || neigh(&vip).contains(&mac_of(&first)).then_some(()));

    // Graceful failover: SIGTERM the announcer; the other node answers.
    let idx = names.iter().position(|n| *n == first).unwrap();
    let other = names[1 - idx];
    let t0 = Instant::now();
    // The node goes down (its kubelet with it): nothing restarts the speaker meanwhile.
    let pid = sb.signal_pod(&format!("speaker/{first}"), "-TERM", true).unwrap();
    eventually("arping answered by the other node after SIGTERM", Duration::from_secs(10), || {
        probe.answering_mac(&vip).filter(|m| *m == mac_of(other))
    });
    let graceful = t0.elapsed();
    // Gratuitous ARP moved the client's existing entry; nothing had to expire.
    eventually("client neighbour entry moved", Duration::from_secs(3), || {
        neigh(&vip).contains(&mac_of(other)).then_some(())
    });
    eventually("the stopped speaker ended", Duration::from_secs(10), || {
        (!ferrolb_e2e::sandbox::process_running(pid)).then_some(())
    });
    eventually("status names the new holder", Duration::from_secs(10), || {
        holder(rt, &client, "web").filter(|h| h == other)
    });

    // The first node returns: non-revertive, the IP stays.
    sb.start_pod(&format!("speaker/{first}")).unwrap();
    // Witness: the returned speaker counts both members and has planned IPs held by the
    // other node (web among them: the other node holds every announced IP now).
    eventually("the returned speaker plans with both members", Duration::from_secs(15), || {
        let m = scrape(idx);
        let elsewhere = metric_sum(&m, "ferrolb_speaker_planned_ips", Some(("announcer", "other")));
        (m.contains("ferrolb_speaker_members 2") && elsewhere >= 1.0).then_some(())
    });
    assert_eq!(holder(rt, &client, "web").as_deref(), Some(other), "no second move when a node returns");
    assert_eq!(probe.answering_mac(&vip), Some(mac_of(other)));

    // Crash (SIGKILL): the survivor takes over after the Lease expires (3 s).
    let t1 = Instant::now();
    sb.signal_pod(&format!("speaker/{other}"), "-KILL", true).unwrap();
    eventually("arping answered by the survivor after SIGKILL", Duration::from_secs(15), || {
        probe.answering_mac(&vip).filter(|m| *m == mac_of(&first))
    });
    let crash = t1.elapsed();
    // Last (it adds an interface every announcement uses): the named interface appears (a macvlan, which filters multicast it has not joined):
    // the speakers see the link change, and the holder answers on it with its MAC, for IPv4
    // and, because it joined the solicited-node group, for IPv6.
    let t_link = Instant::now();
    for i in 0..2 {
        let ns = netns_of(i);
        ferrolb_e2e::sandbox::netns_exec(
            &ns,
            &["ip", "link", "add", "nope0", "link", "eth0", "type", "macvlan", "mode", "bridge"],
        )
        .unwrap();
        ferrolb_e2e::sandbox::netns_exec(&ns, &["ip", "link", "set", "nope0", "up"]).unwrap();
    }
    let named_holder = eventually("named announced", Duration::from_secs(20), || holder(rt, &client, "named"));
    let hidx = names.iter().position(|n| *n == named_holder).unwrap();
    let mv_mac = ferrolb_e2e::sandbox::netns_exec(&netns_of(hidx), &["cat", "/sys/class/net/nope0/address"])
        .unwrap()
        .trim()
        .to_lowercase();
    let got =
        eventually("arping on the new interface", Duration::from_secs(10), || probe.answering_mac("198.51.100.130"));
    assert_eq!(got, mv_mac);
    eprintln!("new interface announced within {:?}", t_link.elapsed());
    let got6 =
        eventually("ndisc6 through the macvlan", Duration::from_secs(10), || probe.answering_mac("fd42:f1b::130"));
    assert_eq!(got6, mv_mac);
    // The interface disappears while announced: the speaker goes on with the others.
    ferrolb_e2e::sandbox::netns_exec(&netns_of(hidx), &["ip", "link", "del", "nope0"]).unwrap();
    eventually("named no longer answered", Duration::from_secs(10), || {
        probe.answering_mac("198.51.100.130").is_none().then_some(())
    });
    assert_eq!(probe.answering_mac(&vip), Some(mac_of(&first)), "web still answered");
    eprintln!("failover: SIGTERM {graceful:?}, SIGKILL {crash:?} (lease 3 s)");
}
