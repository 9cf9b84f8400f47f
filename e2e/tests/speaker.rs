//! The real `ferrolb-speaker` binaries in node namespaces, the controller, and
//! the emulator reachable on the bridge; real `arping`/`ndisc6` from the client.
//! Runs as root (as `.ci/run` does).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ferrolb_common::http::ListenAddr;
use ferrolb_controller::ProcessState;
use ferrolb_controller::settings::Settings;
use ferrolb_crds::ServiceL2Status;
use ferrolb_e2e::client::ClientHost;
use ferrolb_e2e::sandbox::{create, metric_sum};
use ferrolb_e2e::topology::{Host, Topology, privileged};
use ferrolb_e2e::wait::eventually;
use ferrolb_emulator::{Config, Emulator, write_kubeconfig};
use k8s_openapi::api::core::v1::Service;
use kube::Client;
use kube::api::{Api, PostParams};
use serde_json::json;

const NS: &str = "ferrolb-system";

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn speaker_binary() -> PathBuf {
    let status = Command::new(env!("CARGO"))
        .args(["build", "-q", "-p", "ferrolb-speaker", "--bin", "ferrolb-speaker"])
        .status()
        .expect("cargo");
    assert!(status.success(), "building the speaker failed");
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().join("ferrolb-speaker")
}

fn start_speaker(bin: &Path, node: &Host, name: &str, kubeconfig: &Path, logs: &Path) -> Proc {
    let log = std::fs::File::create(logs.join(format!("{name}.log"))).unwrap();
    Proc(
        node.netns
            .command(bin.to_str().unwrap())
            .args(["--node-name", name, "--namespace", NS, "--lease-duration", "3", "--metrics-addr", "127.0.0.1:7473"])
            .args(["--forwarding", "nodeport"])
            // Lease-only failure detection: this test covers the path without heartbeats.
            .args(["--memberlist-port", "0"])
            .env("KUBECONFIG", kubeconfig)
            .env("FERROLB_LOG", "info,ferrolb_speaker=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

/// A stand-in for the Service's pods behind this node's NodePort: answers with the node's name.
fn serve_node_port(node: &Host, name: &str, port: u16) {
    let name = name.to_string();
    let listener =
        ferrolb_e2e::netns::in_netns(&node.netns.path(), move || std::net::TcpListener::bind(("0.0.0.0", port)))
            .unwrap()
            .join()
            .unwrap()
            .unwrap()
            .unwrap();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for mut c in listener.incoming().flatten() {
            let mut buf = [0u8; 1024];
            let _ = c.read(&mut buf);
            let _ = write!(c, "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nhello from {name}\n");
        }
    });
}

/// What the client host sees.
fn client_of(host: &Host) -> ClientHost {
    ClientHost::new(&host.netns.name, "eth0")
}

fn holder(rt: &tokio::runtime::Runtime, client: &Client, svc: &str) -> Option<String> {
    let api: Api<ServiceL2Status> = Api::namespaced(client.clone(), NS);
    rt.block_on(api.get_opt(&format!("default.{svc}"))).ok().flatten()?.status.map(|s| s.node).filter(|n| !n.is_empty())
}

fn ingress(rt: &tokio::runtime::Runtime, client: &Client, svc: &str) -> Option<String> {
    let api: Api<Service> = Api::namespaced(client.clone(), "default");
    let s = rt.block_on(api.get(svc)).ok()?;
    ferrolb_model::ingress_ips(&s).first().map(|i| i.to_string())
}

#[test]
fn speakers_announce_fail_over_and_respect_advertisements() {
    assert!(privileged(), "network tests need root (CI runs .ci/run as root)");
    let bin = speaker_binary();
    let topo = Topology::new(2).expect("topology");
    let probe = client_of(&topo.client);
    let logs = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().worker_threads(2).build().unwrap();

    // The emulator listens on the control plane's bridge address, from inside its namespace.
    let emu = Emulator::new(Config::default());
    let std_listener = ferrolb_e2e::netns::in_netns(&topo.control_plane.netns.path(), || {
        std::net::TcpListener::bind("198.51.100.3:0")
    })
    .unwrap()
    .join()
    .unwrap()
    .unwrap()
    .unwrap();
    std_listener.set_nonblocking(true).unwrap();
    let port = std_listener.local_addr().unwrap().port();
    let server = emu.clone();
    rt.spawn(async move {
        let l = tokio::net::TcpListener::from_std(std_listener).unwrap();
        server.serve(l).await
    });
    let kubeconfig = logs.path().join("kubeconfig");
    write_kubeconfig(&kubeconfig, &format!("http://198.51.100.3:{port}")).unwrap();
    let client = {
        let _guard = rt.enter();
        Client::new(emu.router(), "default")
    };

    rt.block_on(async {
        let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> = Api::all(client.clone());
        for crd in ferrolb_crds::crds() {
            crds.create(&PostParams::default(), &crd).await.unwrap();
        }
        create(&Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone()), json!({"metadata": {"name": NS}})).await.unwrap();
        for i in 1..=2 {
            create(&Api::<k8s_openapi::api::core::v1::Node>::all(client.clone()),
                json!({"metadata": {"name": format!("node-{i}"), "labels": {"kubernetes.io/hostname": format!("node-{i}")}}})).await.unwrap();
        }
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
    let state = ProcessState::new();
    let (_stop_ctl, stop_rx) = tokio::sync::watch::channel(false);
    let settings = Settings {
        namespace: NS.into(),
        lb_class: None,
        identity: "controller".into(),
        leader_elect: false,
        lease_duration: Duration::from_secs(15),
        metrics_addr: ListenAddr::Exact(([127, 0, 0, 1], 0).into()),
    };
    rt.spawn(ferrolb_controller::leadership::run(client.clone(), settings, state, stop_rx));

    let names = ["node-1", "node-2"];
    let mut speakers: Vec<Option<Proc>> = topo
        .nodes
        .iter()
        .zip(names)
        .map(|(n, name)| Some(start_speaker(&bin, n, name, &kubeconfig, logs.path())))
        .collect();
    let mac_of = |name: &str| topo.nodes[names.iter().position(|n| *n == name).unwrap()].mac.clone();

    rt.block_on(async {
        let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
        create(&svcs, json!({"metadata": {"name": "web"}, "spec": {"type": "LoadBalancer", "ports": [{"port": 80}], "selector": {"app": "web"}}})).await.unwrap();
        create(&svcs, json!({"metadata": {"name": "web6"}, "spec": {"type": "LoadBalancer", "ipFamilies": ["IPv6"], "ports": [{"port": 80}], "selector": {"app": "web"}}})).await.unwrap();
        create(&svcs, json!({"metadata": {"name": "named", "annotations": {"ferrolb.io/address-pool": "named"}},
            "spec": {"type": "LoadBalancer", "ipFamilyPolicy": "PreferDualStack", "ports": [{"port": 80}], "selector": {"app": "web"}}})).await.unwrap();
        create(&svcs, json!({"metadata": {"name": "hidden", "annotations": {"ferrolb.io/address-pool": "hidden"}},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 80}], "selector": {"app": "web"}}})).await.unwrap();
    });
    let vip = eventually("web's IP", Duration::from_secs(20), || ingress(&rt, &client, "web"));
    assert_eq!(vip, "198.51.100.100");
    let first = eventually("a node announces web", Duration::from_secs(20), || holder(&rt, &client, "web"));
    let mac = eventually("arping answer", Duration::from_secs(10), || probe.answering_mac(&vip));
    assert_eq!(mac, mac_of(&first), "the MAC the client learns is the announcing node's");

    // nodeport forwarding: the VIP's traffic reaches the announcing node's NodePort.
    let node_port = rt
        .block_on(Api::<Service>::namespaced(client.clone(), "default").get("web"))
        .unwrap()
        .spec
        .unwrap()
        .ports
        .unwrap()[0]
        .node_port
        .unwrap() as u16;
    for (node, name) in topo.nodes.iter().zip(names) {
        serve_node_port(node, name, node_port);
    }
    let body = eventually("curl through the VIP", Duration::from_secs(10), || {
        probe.curl(&format!("http://{vip}/"), Duration::from_secs(2))
    });
    assert_eq!(body.trim(), format!("hello from {first}"));

    // Only the announcing speaker exports the announcement; it counted the requests it answered.
    let scrape = |i: usize| {
        topo.nodes[i]
            .netns
            .exec(&["curl", "-s", "--max-time", "2", "http://127.0.0.1:7473/metrics"])
            .unwrap_or_default()
    };
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
    rt.block_on(async {
        let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
        create(&svcs, json!({"metadata": {"name": "local"}, "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local",
            "ports": [{"port": 80}], "selector": {"app": "local"}}})).await.unwrap();
        let slices: Api<k8s_openapi::api::discovery::v1::EndpointSlice> = Api::namespaced(client.clone(), "default");
        create(&slices, json!({"metadata": {"name": "local-1", "labels": {"kubernetes.io/service-name": "local"}}, "addressType": "IPv4",
            "endpoints": [{"addresses": ["198.51.100.50"], "nodeName": "node-2", "conditions": {"ready": true}}]})).await.unwrap();
    });
    eventually("Local announced from node-2", Duration::from_secs(20), || {
        holder(&rt, &client, "local").filter(|h| h == "node-2")
    });
    let local_vip = ingress(&rt, &client, "local").unwrap();
    eventually("Local answered by node-2", Duration::from_secs(10), || {
        probe.answering_mac(&local_vip).filter(|m| *m == mac_of("node-2"))
    });
    rt.block_on(async {
        let slices: Api<k8s_openapi::api::discovery::v1::EndpointSlice> = Api::namespaced(client.clone(), "default");
        slices
            .patch(
                "local-1",
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(json!({"endpoints": [
            {"addresses": ["198.51.100.51"], "nodeName": "node-1", "conditions": {"ready": true}}]})),
            )
            .await
            .unwrap();
    });
    eventually("Local moved to node-1 with its endpoint", Duration::from_secs(20), || {
        holder(&rt, &client, "local").filter(|h| h == "node-1")
    });

    let vip6 = eventually("web6's IP", Duration::from_secs(20), || ingress(&rt, &client, "web6"));
    assert_eq!(vip6, "fd42:f1b::100");
    let owner6 = eventually("a node announces web6", Duration::from_secs(20), || holder(&rt, &client, "web6"));
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
    let hidden = eventually("hidden's IP", Duration::from_secs(20), || ingress(&rt, &client, "hidden"));
    assert_eq!(hidden, "198.51.100.120");
    assert_eq!(probe.answering_mac(&hidden), None);

    // The client's kernel resolves both VIPs itself (so failover must update its entries),
    // and its unicast neighbour probe (NUD) is answered by the speaker.
    let c = &topo.client.netns;
    let _ = c.exec(&["ping", "-c", "1", "-W", "1", &vip]);
    c.exec(&["sysctl", "-qw", "net.ipv6.neigh.eth0.delay_first_probe_time=1"]).unwrap();
    c.exec(&["ip", "-6", "neigh", "replace", &vip6, "lladdr", &mac_of(&owner6), "dev", "eth0", "nud", "stale"])
        .unwrap();
    let _ = c.exec(&["ping", "-6", "-c", "1", "-W", "1", &vip6]);
    let neigh = |ip: &str| c.exec(&["ip", "neigh", "show", ip, "dev", "eth0"]).unwrap_or_default();
    eventually("unicast NS answered: IPv6 entry REACHABLE", Duration::from_secs(6), || {
        neigh(&vip6).contains("REACHABLE").then_some(())
    });
    eventually("IPv4 entry learned", Duration::from_secs(3), || neigh(&vip).contains(&mac_of(&first)).then_some(()));

    // Graceful failover: SIGTERM the announcer; the other node answers.
    let idx = names.iter().position(|n| *n == first).unwrap();
    let other = names[1 - idx];
    let pid = speakers[idx].as_ref().unwrap().0.id().to_string();
    let t0 = Instant::now();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    eventually("arping answered by the other node after SIGTERM", Duration::from_secs(10), || {
        probe.answering_mac(&vip).filter(|m| *m == mac_of(other))
    });
    let graceful = t0.elapsed();
    // Gratuitous ARP moved the client's existing entry; nothing had to expire.
    eventually("client neighbour entry moved", Duration::from_secs(3), || {
        neigh(&vip).contains(&mac_of(other)).then_some(())
    });
    let _ = speakers[idx].take().map(|mut p| p.0.wait());
    eventually("status names the new holder", Duration::from_secs(10), || {
        holder(&rt, &client, "web").filter(|h| h == other)
    });

    // The first node returns: non-revertive, the IP stays.
    speakers[idx] = Some(start_speaker(&bin, &topo.nodes[idx], first.as_str(), &kubeconfig, logs.path()));
    // Witness: the returned speaker counts both members and has planned IPs held by the
    // other node (web among them: the other node holds every announced IP now).
    eventually("the returned speaker plans with both members", Duration::from_secs(15), || {
        let m = scrape(idx);
        let elsewhere = metric_sum(&m, "ferrolb_speaker_planned_ips", Some(("announcer", "other")));
        (m.contains("ferrolb_speaker_members 2") && elsewhere >= 1.0).then_some(())
    });
    assert_eq!(holder(&rt, &client, "web").as_deref(), Some(other), "no second move when a node returns");
    assert_eq!(probe.answering_mac(&vip), Some(mac_of(other)));

    // Crash (SIGKILL): the survivor takes over after the Lease expires (3 s).
    let oidx = 1 - idx;
    let t1 = Instant::now();
    speakers[oidx].take();
    eventually("arping answered by the survivor after SIGKILL", Duration::from_secs(15), || {
        probe.answering_mac(&vip).filter(|m| *m == mac_of(&first))
    });
    let crash = t1.elapsed();
    // Last (it adds an interface every announcement uses): the named interface appears (a macvlan, which filters multicast it has not joined):
    // the speakers see the link change, and the holder answers on it with its MAC, for IPv4
    // and, because it joined the solicited-node group, for IPv6.
    let t_link = Instant::now();
    for n in &topo.nodes {
        n.netns.exec(&["ip", "link", "add", "nope0", "link", "eth0", "type", "macvlan", "mode", "bridge"]).unwrap();
        n.netns.exec(&["ip", "link", "set", "nope0", "up"]).unwrap();
    }
    let named_holder = eventually("named announced", Duration::from_secs(20), || holder(&rt, &client, "named"));
    let hidx = names.iter().position(|n| *n == named_holder).unwrap();
    let mv_mac = topo.nodes[hidx].netns.exec(&["cat", "/sys/class/net/nope0/address"]).unwrap().trim().to_lowercase();
    let got =
        eventually("arping on the new interface", Duration::from_secs(10), || probe.answering_mac("198.51.100.130"));
    assert_eq!(got, mv_mac);
    eprintln!("new interface announced within {:?}", t_link.elapsed());
    let got6 =
        eventually("ndisc6 through the macvlan", Duration::from_secs(10), || probe.answering_mac("fd42:f1b::130"));
    assert_eq!(got6, mv_mac);
    // The interface disappears while announced: the speaker goes on with the others.
    topo.nodes[hidx].netns.exec(&["ip", "link", "del", "nope0"]).unwrap();
    eventually("named no longer answered", Duration::from_secs(10), || {
        probe.answering_mac("198.51.100.130").is_none().then_some(())
    });
    assert_eq!(probe.answering_mac(&vip), Some(mac_of(&first)), "web still answered");
    eprintln!("failover: SIGTERM {graceful:?}, SIGKILL {crash:?} (lease 3 s)");
    drop(speakers);
    drop(rt);
}
