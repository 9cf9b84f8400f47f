//! MetalLB's layer-2 e2e scenarios, ported: each builds a sandbox (real
//! controller and speakers in network namespaces) and drives it as a user
//! would, through the API and the client namespace. Runs as root.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use ferrolb_e2e::harness::Harness;
use ferrolb_e2e::sandbox::{NS, Options, metric_sum};
use ferrolb_e2e::wait::eventually;
use ferrolb_model::testing::{self, SvcBuilder};
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Client, Resource};
use serde_json::{Value, json};

/// The sandbox, with the helpers below.
struct Env {
    h: Harness,
    client: Client,
}

impl std::ops::Deref for Env {
    type Target = Harness;
    fn deref(&self) -> &Harness {
        &self.h
    }
}

fn env(nodes: usize) -> Env {
    let h = Harness::up(&Options { nodes, ..Options::default() });
    let client = h.sb().client.clone();
    Env { h, client }
}

impl Env {
    fn create<K>(&self, api: Api<K>, v: Value)
    where
        K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + serde::Serialize,
    {
        self.rt.block_on(ferrolb_e2e::sandbox::create(&api, v)).unwrap();
    }

    fn pool(&self, name: &str, spec: Value) {
        self.create(
            Api::<ferrolb_crds::IPAddressPool>::namespaced(self.client.clone(), NS),
            json!({"apiVersion": "ferrolb.io/v1beta1", "kind": "IPAddressPool", "metadata": {"name": name}, "spec": spec}),
        );
    }

    fn adv(&self, name: &str, spec: Value) {
        self.create(
            Api::<ferrolb_crds::L2Advertisement>::namespaced(self.client.clone(), NS),
            json!({"apiVersion": "ferrolb.io/v1beta1", "kind": "L2Advertisement", "metadata": {"name": name}, "spec": spec}),
        );
    }

    fn pod(&self, name: &str, node: &str, app: &str, ports: &[u16]) {
        let ports: Vec<Value> = ports.iter().map(|p| json!({"containerPort": p})).collect();
        self.create(
            Api::<Pod>::namespaced(self.client.clone(), "default"),
            json!({"metadata": {"name": name, "labels": {"app": app}}, "spec": {"nodeName": node, "containers": [{"name": "c", "image": "any", "ports": ports}]}}),
        );
    }

    fn svc(&self, svc: SvcBuilder) {
        self.create(Api::<Service>::namespaced(self.client.clone(), "default"), svc.json());
    }

    fn ips(&self, svc: &str) -> Vec<String> {
        let s = self.rt.block_on(Api::<Service>::namespaced(self.client.clone(), "default").get_opt(svc)).unwrap();
        s.map(|s| ferrolb_model::ingress_ips(&s).iter().map(|i| i.to_string()).collect()).unwrap_or_default()
    }

    /// The reason of `svc`'s `ferrolb.io/Allocated` condition.
    fn allocated_reason(&self, svc: &str) -> Option<String> {
        let s = self.rt.block_on(Api::<Service>::namespaced(self.client.clone(), "default").get_opt(svc)).ok()??;
        let c = s.status?.conditions?.into_iter().find(|c| c.type_ == "ferrolb.io/Allocated")?;
        Some(c.reason)
    }

    fn wait_ip(&self, svc: &str) -> String {
        eventually(&format!("{svc} gets an IP"), Duration::from_secs(20), || self.ips(svc).first().cloned())
    }

    fn holder(&self, svc: &str) -> Option<String> {
        let api: Api<ferrolb_crds::ServiceL2Status> = Api::namespaced(self.client.clone(), NS);
        self.rt
            .block_on(api.get_opt(&format!("default.{svc}")))
            .ok()
            .flatten()?
            .status
            .map(|s| s.node)
            .filter(|n| !n.is_empty())
    }

    /// The announcing node once the status and the answering MAC agree (speakers settle at start).
    fn stable_holder(&self, svc: &str, ip: &str) -> String {
        eventually(&format!("{svc} announced consistently"), Duration::from_secs(20), || {
            let h = self.holder(svc)?;
            (self.answering_node(ip).as_deref() == Some(h.as_str()) && self.holder(svc).as_deref() == Some(h.as_str()))
                .then_some(h)
        })
    }

    /// A metric of every speaker (with `label`), one value per node.
    fn speaker_metrics(&self, name: &str, label: Option<(&str, &str)>) -> Vec<f64> {
        let st = &self.sb().state;
        st.nodes.iter().map(|n| metric_sum(&st.speaker_metrics(&n.name), name, label)).collect()
    }

    fn client_exec(&self, args: &[&str]) -> Option<String> {
        self.sb().state.client_exec(args)
    }

    /// The node whose MAC answers ARP (or NDP, for IPv6) for `ip`.
    fn answering_node(&self, ip: &str) -> Option<String> {
        let st = &self.sb().state;
        st.answering_mac(ip).and_then(|mac| st.node_of_mac(&mac))
    }

    fn curl(&self, ip: &str, port: u16) -> Option<String> {
        self.sb().state.client().curl(&ferrolb_e2e::client::url(ip, port), Duration::from_secs(2))
    }

    fn patch_node(&self, node: &str, status: bool, v: Value) {
        let api: Api<Node> = Api::all(self.client.clone());
        let pp = PatchParams::default();
        if status {
            self.rt.block_on(api.patch_status(node, &pp, &Patch::Merge(v))).unwrap();
        } else {
            self.rt.block_on(api.patch(node, &pp, &Patch::Merge(v))).unwrap();
        }
    }
}

/// A LoadBalancer Service `name` selecting `app: name`, port 80 to the pods' 8080.
fn svc(name: &str) -> SvcBuilder {
    testing::svc(name).target_port(8080)
}

const POOL_V4: &str = "198.51.100.100-198.51.100.150";

/// 1, 2, 6: ETP=Cluster reachable over IPv4, IPv6 and dual stack, pools by range and CIDR;
/// ServiceL2Status names the node whose MAC the client learns, and goes with the Service.
#[test]
fn cluster_policy_reachable_in_every_family_and_status_follows() {
    let e = env(2);
    e.pool("range", json!({"addresses": [POOL_V4], "serviceAllocation": {"priority": 1}}));
    e.pool(
        "cidr",
        json!({"addresses": ["198.51.100.160/28", "fd42:f1b::100/124"], "serviceAllocation": {"priority": 2}}),
    );
    e.adv("all", json!({}));
    e.pod("web-a", "node-1", "v4", &[8080]);
    e.svc(svc("v4"));
    e.svc(svc("v6").families("SingleStack", &["IPv6"]).selector(&[("app", "v4")]));
    e.svc(svc("dual").policy("RequireDualStack").selector(&[("app", "v4")]));
    assert_eq!(e.wait_ip("v4"), "198.51.100.100", "range pool first (priority)");
    let v6 = e.wait_ip("v6");
    assert!(v6.starts_with("fd42:f1b::10"), "{v6}");
    let dual =
        eventually("dual gets two IPs", Duration::from_secs(20), || Some(e.ips("dual")).filter(|i| i.len() == 2));
    assert!(dual[0].starts_with("198.51.100.16") && dual[1].starts_with("fd42:f1b::10"), "{dual:?} from the CIDR pool");
    for (svc, ip) in
        [("v4", "198.51.100.100".to_string()), ("v6", v6.clone()), ("dual", dual[0].clone()), ("dual", dual[1].clone())]
    {
        let body = eventually(&format!("curl {ip}"), Duration::from_secs(15), || e.curl(&ip, 80));
        assert_eq!(body.trim(), "web-a on node-1");
        // The speakers may still settle right after start (an IP moving once): the
        // witness is the status and the answering MAC naming the same node.
        eventually(&format!("{svc} {ip}: status and MAC agree"), Duration::from_secs(10), || {
            let holder = e.holder(svc)?;
            (e.answering_node(&ip).as_deref() == Some(holder.as_str())).then_some(())
        });
    }
    let out = Command::new("kubectl")
        .env("KUBECONFIG", &e.sb().state.kubeconfig)
        .args(["get", "svc", "v4", "--no-headers"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("198.51.100.100"));
    e.rt.block_on(Api::<Service>::namespaced(e.client.clone(), "default").delete("v4", &DeleteParams::default()))
        .unwrap();
    eventually("status gone with the Service", Duration::from_secs(10), || e.holder("v4").is_none().then_some(()));
    eventually("VIP no longer answered", Duration::from_secs(10), || {
        e.answering_node("198.51.100.100").is_none().then_some(())
    });
}

/// 3: ETP=Local: announced from a node with a backend, and every request lands there.
#[test]
fn local_policy_keeps_traffic_on_the_announcing_node() {
    let e = env(3);
    e.pool("p", json!({"addresses": [POOL_V4]}));
    e.adv("all", json!({}));
    e.pod("loc-2", "node-2", "loc", &[8080]);
    e.pod("loc-3", "node-3", "loc", &[8080]);
    e.svc(svc("loc").local());
    let ip = e.wait_ip("loc");
    let holder = e.stable_holder("loc", &ip);
    assert!(holder == "node-2" || holder == "node-3", "announced from a node with a backend, not {holder}");
    for _ in 0..6 {
        let body = eventually("curl", Duration::from_secs(10), || e.curl(&ip, 80));
        assert!(body.trim().ends_with(&format!("on {holder}")), "{body} landed off {holder}");
    }
    // Deleting that node's Pod stops its server and removes its endpoint: the announcement
    // follows the remaining backend, and so does the traffic.
    let gone = if holder == "node-2" { "loc-2" } else { "loc-3" };
    let other = if holder == "node-2" { "node-3" } else { "node-2" };
    e.rt.block_on(Api::<Pod>::namespaced(e.client.clone(), "default").delete(gone, &DeleteParams::default())).unwrap();
    eventually("announcement follows the remaining backend", Duration::from_secs(20), || {
        (e.holder("loc").as_deref() == Some(other)).then_some(())
    });
    let body = eventually("curl lands on the remaining backend", Duration::from_secs(15), || {
        e.curl(&ip, 80).filter(|b| b.contains(other))
    });
    assert!(!body.contains(gone));
}

/// 4: TCP and UDP ports of one Service both work.
#[test]
fn tcp_and_udp_ports_both_work() {
    let e = env(2);
    e.pool("p", json!({"addresses": [POOL_V4]}));
    e.adv("all", json!({}));
    e.pod("dns-1", "node-1", "dns", &[5353]);
    e.svc(svc("dns").ports(&[(53, "TCP"), (53, "UDP")]).target_port(5353));
    let ip = e.wait_ip("dns");
    let body = eventually("tcp", Duration::from_secs(15), || e.curl(&ip, 53));
    assert_eq!(body.trim(), "dns-1 on node-1");
    let reply = eventually("udp echo", Duration::from_secs(15), || {
        // One datagram back; `cat` reads it whole (bash's `read` would take one byte of it).
        let script = format!("exec 3<>/dev/udp/{ip}/53; echo ping >&3; timeout 1 cat <&3; true");
        let out = e.client_exec(&["bash", "-c", &script])?;
        out.contains("dns-1 on node-1").then_some(out)
    });
    assert_eq!(reply, "dns-1 on node-1\nping\n", "the echo came back through the VIP");
}

/// 5: NetworkUnavailable or the exclusion label moves the announcement; non-revertive:
/// it does not come back when the condition clears.
#[test]
fn unavailable_or_excluded_nodes_lose_the_ip_and_do_not_take_it_back() {
    let e = env(2);
    e.pool("p", json!({"addresses": [POOL_V4]}));
    e.adv("all", json!({}));
    e.svc(svc("web"));
    let ip = e.wait_ip("web");
    let first = e.stable_holder("web", &ip);
    let other = if first == "node-1" { "node-2" } else { "node-1" };
    e.patch_node(&first, true, json!({"status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "NetworkUnavailable", "status": "True"}]}}));
    eventually("moved off the unavailable node", Duration::from_secs(15), || {
        (e.answering_node(&ip).as_deref() == Some(other)).then_some(())
    });
    // The new holder is recorded (ServiceL2Status) before the condition clears.
    eventually("status names the new holder", Duration::from_secs(10), || {
        (e.holder("web").as_deref() == Some(other)).then_some(())
    });
    e.patch_node(&first, true, json!({"status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "NetworkUnavailable", "status": "False"}]}}));
    // Witness: every speaker counts the returned node as usable again.
    eventually("speakers see the node usable again", Duration::from_secs(15), || {
        e.speaker_metrics("ferrolb_speaker_usable_nodes", None).iter().all(|n| *n == 2.0).then_some(())
    });
    assert_eq!(e.holder("web").as_deref(), Some(other), "non-revertive: it stays");
    assert_eq!(e.answering_node(&ip).as_deref(), Some(other), "non-revertive: it still answers");
    e.patch_node(
        other,
        false,
        json!({"metadata": {"labels": {"node.kubernetes.io/exclude-from-external-load-balancers": ""}}}),
    );
    eventually("moved off the excluded node", Duration::from_secs(15), || {
        (e.answering_node(&ip).as_deref() == Some(first.as_str())).then_some(())
    });
}

/// 7: two Services sharing one IP are announced from the same node.
#[test]
fn services_sharing_an_ip_are_announced_together() {
    let e = env(3);
    e.pool("p", json!({"addresses": [POOL_V4]}));
    e.adv("all", json!({}));
    let shared = |name: &str| {
        svc(name)
            .annotation("ferrolb.io/allow-shared-ip", "k")
            .annotation("ferrolb.io/loadBalancerIPs", "198.51.100.120")
    };
    e.svc(shared("a"));
    e.svc(shared("b").ports(&[(443, "TCP")]));
    assert_eq!(e.wait_ip("a"), "198.51.100.120");
    assert_eq!(e.wait_ip("b"), "198.51.100.120");
    // Witness: both announced by the node that answers (speakers may still be joining,
    // and an IP moves as a whole while they do).
    eventually("a and b announced by the node that answers", Duration::from_secs(20), || {
        let ha = e.holder("a")?;
        (e.holder("b").as_ref() == Some(&ha) && e.answering_node("198.51.100.120").as_ref() == Some(&ha)).then_some(())
    });
}

/// 9, 13: pools requested by annotation (autoAssign true and false); another class gets nothing.
#[test]
fn pool_annotation_and_foreign_class() {
    let e = env(1);
    e.pool("auto", json!({"addresses": [POOL_V4]}));
    e.pool("manual", json!({"addresses": ["198.51.100.170/31"], "autoAssign": false}));
    e.adv("all", json!({}));
    e.svc(svc("foreign").class("other.example/lb"));
    e.svc(svc("plain"));
    e.svc(svc("wants-manual").annotation("metallb.universe.tf/address-pool", "manual"));
    e.svc(svc("wants-auto").annotation("ferrolb.io/address-pool", "auto"));
    let (plain, auto) = (e.wait_ip("plain"), e.wait_ip("wants-auto"));
    let mut both = [plain.clone(), auto.clone()];
    both.sort();
    assert_eq!(both, ["198.51.100.100", "198.51.100.101"], "both from the auto-assigning pool");
    assert_eq!(e.wait_ip("wants-manual"), "198.51.100.170", "autoAssign: false serves only on request");
    eventually("wants-manual answered", Duration::from_secs(15), || e.answering_node("198.51.100.170"));
    // Witness: `foreign` was created first, and the controller handles Services in the
    // order the watch delivers them; the three created after it have their IPs.
    assert!(e.ips("foreign").is_empty(), "another implementation's Service gets no IP");
}

/// 10: nodeSelectors: only selected nodes announce; labelling a node makes it eligible.
#[test]
fn node_selectors_choose_the_announcers() {
    let e = env(2);
    e.pool("p", json!({"addresses": [POOL_V4]}));
    e.adv("edge", json!({"nodeSelectors": [{"matchLabels": {"edge": "true"}}]}));
    e.svc(svc("web"));
    let ip = e.wait_ip("web");
    // Witness: every speaker planned the IP and found no node to announce it.
    eventually("speakers plan the IP with no announcer", Duration::from_secs(15), || {
        let none = e.speaker_metrics("ferrolb_speaker_planned_ips", Some(("announcer", "none")));
        none.iter().all(|n| *n == 1.0).then_some(())
    });
    assert_eq!(e.answering_node(&ip), None, "no node selected yet");
    e.patch_node("node-2", false, json!({"metadata": {"labels": {"edge": "true"}}}));
    eventually("node-2 announces once labelled", Duration::from_secs(15), || {
        (e.answering_node(&ip).as_deref() == Some("node-2")).then_some(())
    });
}

/// 8, 12: metrics agree with the pool and the announcer; stopping the announcing speaker
/// moves the IP, and the client-visible outage is printed.
#[test]
fn metrics_and_speaker_failover() {
    let e = env(2);
    e.pool("p", json!({"addresses": ["198.51.100.100/30"]}));
    e.adv("all", json!({}));
    e.pod("web-1", "node-1", "web", &[8080]);
    e.pod("web-2", "node-2", "web", &[8080]);
    e.svc(svc("web"));
    let ip = e.wait_ip("web");
    let holder = e.stable_holder("web", &ip);
    eventually("curl", Duration::from_secs(15), || e.curl(&ip, 80));
    let st = &e.sb().state;
    let scrape = |node: &str| st.speaker_metrics(node);
    let other = if holder == "node-1" { "node-2" } else { "node-1" };
    let m = eventually("holder metrics", Duration::from_secs(10), || {
        Some(scrape(&holder)).filter(|m| m.contains("ferrolb_layer2_responses_sent_total{ip="))
    });
    assert!(
        m.lines().any(|l| l.starts_with("ferrolb_speaker_announced{") && l.contains(&format!("ip=\"{ip}\""))),
        "{m}"
    );
    assert!(
        !scrape(other).lines().any(|l| l.starts_with("ferrolb_speaker_announced{")),
        "only the announcer exports the announcement"
    );
    let cm = st.controller_leader_metrics();
    assert!(cm.lines().any(|l| l == "ferrolb_allocator_addresses{pool=\"p\"} 4"), "{cm}");
    assert!(cm.lines().any(|l| l == "ferrolb_allocator_addresses_in_use{pool=\"p\"} 1"), "{cm}");

    // Scenario 12: stop the announcing speaker while the client keeps connecting.
    let t0 = Instant::now();
    e.sb().signal_pod(&format!("speaker/{holder}"), "-TERM", true).unwrap();
    let mut last_fail = None;
    let moved = loop {
        let ok = e.curl(&ip, 80).is_some();
        if !ok {
            last_fail = Some(t0.elapsed());
        }
        if ok && e.holder("web").as_deref() == Some(other) {
            break t0.elapsed();
        }
        assert!(t0.elapsed() < Duration::from_secs(15), "no takeover");
    };
    println!("speaker SIGTERM: takeover seen after {moved:?}; last failed request at {last_fail:?}");
    let ids: BTreeSet<String> = (0..4).filter_map(|_| e.curl(&ip, 80)).collect();
    assert!(!ids.is_empty());
}

/// 14: the controller restarted several times moves no IP; pending Services stay pending.
#[test]
fn controller_restarts_move_nothing() {
    let e = env(1);
    e.pool("p", json!({"addresses": ["198.51.100.100/31"]}));
    e.adv("all", json!({}));
    e.svc(svc("a"));
    let a = e.wait_ip("a");
    e.svc(svc("b"));
    let b = e.wait_ip("b");
    e.svc(svc("c"));
    // Witness: the controller says why c has no address.
    eventually("c is refused for exhaustion", Duration::from_secs(15), || {
        e.allocated_reason("c").filter(|r| r == "PoolExhausted")
    });
    assert!(e.ips("c").is_empty(), "the pool has two addresses");
    let state_file = e.sb().state.run_dir.join("state.json");
    e.sb().write_state(&state_file).unwrap();
    let bin = std::env::current_exe().unwrap().parent().unwrap().parent().unwrap().join("ferrolb-sandbox");
    let sandbox = |args: &[&str]| Command::new(&bin).arg("--state-file").arg(&state_file).args(args).output().unwrap();
    for _ in 0..3 {
        // `stop` ends the controller's container (SIGTERM) and keeps it stopped; `start`
        // lets the kubelet start it again once it has seen it end.
        let out = sandbox(&["stop", "controller"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let out = sandbox(&["start", "controller"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        // Witness: the new controller leads, replayed a and b, and reconciled c as pending.
        eventually("the new controller leads and holds c pending", Duration::from_secs(20), || {
            let st = &e.sb().state;
            let leading = st.controller_metric("ferrolb_controller_leader", None) == 1.0;
            (leading && st.controller_metric("ferrolb_controller_services_pending", None) == 1.0).then_some(())
        });
        assert_eq!(e.ips("a"), vec![a.clone()]);
        assert_eq!(e.ips("b"), vec![b.clone()]);
        assert!(e.ips("c").is_empty());
    }
}

/// `preferredNodeSelectors`: the preferred node announces; when its speaker goes, another
/// stands in; when it returns, the IP goes back to it. Whichever node the hash would
/// pick, preferring the other one moves the IP there.
#[test]
fn preferred_nodes_announce_and_others_stand_in() {
    let e = env(2);
    e.pool("p", json!({"addresses": [POOL_V4]}));
    e.adv("all", json!({}));
    e.svc(svc("web"));
    let ip = e.wait_ip("web");
    let natural = e.stable_holder("web", &ip);
    let preferred = if natural == "node-1" { "node-2" } else { "node-1" };
    // Preferences take effect from their own advertisement, which covers the pool too.
    e.patch_node(preferred, false, json!({"metadata": {"labels": {"role": "edge"}}}));
    e.adv(
        "prefer-edge",
        json!({"preferredNodeSelectors": [{"weight": 100, "preference": {"matchLabels": {"role": "edge"}}}]}),
    );
    eventually("the preferred node announces", Duration::from_secs(20), || {
        (e.holder("web").as_deref() == Some(preferred) && e.answering_node(&ip).as_deref() == Some(preferred))
            .then_some(())
    });
    // Its node goes down: the other node stands in.
    let key = format!("speaker/{preferred}");
    e.sb().kill_pod(&key, "-TERM", true).unwrap();
    eventually("the other node stands in", Duration::from_secs(20), || {
        (e.answering_node(&ip).as_deref() == Some(natural.as_str())).then_some(())
    });
    // It returns: the IP goes back to it.
    e.sb().start_pod(&key).unwrap();
    eventually("the preferred node announces again", Duration::from_secs(20), || {
        (e.holder("web").as_deref() == Some(preferred) && e.answering_node(&ip).as_deref() == Some(preferred))
            .then_some(())
    });
}

/// 11: two NICs per node: an advertisement naming `eth1` answers only there, with its MAC.
#[test]
fn interface_selection_with_two_nics() {
    let e = env(2);
    let eth1_macs = e.sb().topo.add_second_network("eth1").expect("second network");
    e.pool("second", json!({"addresses": ["203.0.113.100-203.0.113.110"]}));
    e.adv("eth1-only", json!({"ipAddressPools": ["second"], "interfaces": ["eth1"]}));
    e.svc(svc("nic"));
    let ip = e.wait_ip("nic");
    assert_eq!(ip, "203.0.113.100");
    let holder = eventually("announced", Duration::from_secs(20), || e.holder("nic"));
    let idx: usize = holder.trim_start_matches("node-").parse::<usize>().unwrap() - 1;
    let mac_on = |iface: &str| -> Option<String> {
        ferrolb_e2e::client::ClientHost::new(&e.sb().state.client_netns, iface).answering_mac(&ip)
    };
    let got = eventually("answer on eth1", Duration::from_secs(15), || mac_on("eth1"));
    assert_eq!(got, eth1_macs[idx], "answered with the selected NIC's MAC");
    assert_eq!(mac_on("eth0"), None, "not answered on the other NIC");
    let api: Api<ferrolb_crds::ServiceL2Status> = Api::namespaced(e.client.clone(), NS);
    let st = e.rt.block_on(api.get("default.nic")).unwrap().status.unwrap();
    assert_eq!(st.interfaces.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(), ["eth1"]);
}
