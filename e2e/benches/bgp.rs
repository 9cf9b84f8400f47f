//! BGP mode in a 3-node sandbox with a real router (FRR: zebra and bgpd, routes in
//! its kernel table) between the nodes and an outside client:
//!
//! 1. how long until the router stops sending a node traffic: a speaker stopping
//!    (SIGTERM: it withdraws) against a node whose link goes down, found by the hold
//!    timer (3 s here; MetalLB's FRR mode defaults to 90 s) or by BFD at 50 ms x 3 and
//!    at MetalLB's BFDProfile defaults, 300 ms x 3 (the router's bfdd at 50 ms);
//! 2. failed connections from outside (a TCP connection to the VIP every 10 ms) while
//!    `helm upgrade` rolls every speaker, with graceful restart and without (SIGTERM
//!    withdrawal);
//! 3. how flows spread over the nodes (ECMP, the router hashing by ports): connections
//!    to a `Local` Service with one endpoint per node, so each answer names its node;
//! 4. many Services: time from creating them until the router has every prefix, and
//!    the speaker's memory.
//!
//! Under `cargo test` (no `--bench`) each runs small (2 trials, 300 flows, 100
//! Services); `scripts/bench` runs 20 trials, 3,000 flows and 2,000 Services (at
//! 10,000 the speakers, each planning over every Service on every event, outlast
//! their liveness probe and are restarted: issue 14's planner work comes first).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ferrolb_e2e::bench::{Row, print_table};
use ferrolb_e2e::client::{Prober, outages};
use ferrolb_e2e::router::{BGP_POOL_V4, Daemon, NODE_ASN, OUTSIDE_V4, ROUTER_ASN, ROUTER_V4, RouterState};
use ferrolb_e2e::sandbox::{NS, Options, Sandbox, create};
use ferrolb_e2e::topology::privileged;
use ferrolb_e2e::wait::eventually;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

/// Wait until the router routes `ip` to `n` next hops; how long that took.
fn until_hops(router: &RouterState, ip: &str, n: usize, within: Duration) -> Duration {
    let t = Instant::now();
    while router.next_hops(ip).len() != n {
        assert!(t.elapsed() < within, "{ip}: {:?} after {within:?}, want {n} next hops", router.next_hops(ip));
        std::thread::sleep(Duration::from_millis(2));
    }
    t.elapsed()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// GET / over `flows` new connections from the outside client; the answering node of each.
fn spread(outside_ns: &str, target: SocketAddr, flows: usize) -> BTreeMap<String, usize> {
    let path = format!("/run/netns/{outside_ns}");
    ferrolb_e2e::netns::in_netns(&path, move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut counts: BTreeMap<String, usize> = BTreeMap::new();
            for _ in 0..flows {
                let answer = tokio::time::timeout(Duration::from_secs(2), async {
                    let mut s = tokio::net::TcpStream::connect(target).await.ok()?;
                    s.write_all(b"GET / HTTP/1.0\r\nHost: vip\r\n\r\n").await.ok()?;
                    let mut body = String::new();
                    s.read_to_string(&mut body).await.ok()?;
                    body.split_whitespace().skip_while(|w| *w != "on").nth(1).map(str::to_string)
                })
                .await
                .ok()
                .flatten()
                .unwrap_or_else(|| "failed".into());
                *counts.entry(answer).or_default() += 1;
            }
            counts
        })
    })
    .expect("thread in the outside namespace")
    .join()
    .expect("spread thread")
    .expect("namespace entered")
}

fn rss_kib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

fn main() {
    if !privileged() {
        eprintln!("bgp needs root (network namespaces); skipped");
        return;
    }
    let quick = !std::env::args().any(|a| a == "--bench");
    // FERROLB_BENCH_SECTIONS=1,4 runs only those parts (default: all).
    let sections = std::env::var("FERROLB_BENCH_SECTIONS").unwrap_or_else(|_| "1,2,3,4".into());
    let run = |n: &str| sections.split(',').any(|s| s.trim() == n);
    let (trials, flows, services) = if quick { (2, 300, 100) } else { (20, 3000, 2_000) };
    // FERROLB_BENCH_SERVICES overrides the count of section 4.
    let services = std::env::var("FERROLB_BENCH_SERVICES").ok().and_then(|v| v.parse().ok()).unwrap_or(services);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = Options {
        nodes: 3,
        bgp: Some(Daemon::Frr),
        values: serde_json::json!({"speaker": {"forwarding": "nodeport"}}),
        ..Options::default()
    };
    let mut sb = rt.block_on(Sandbox::up_opts(&opts, dir.path())).expect("sandbox");
    let c = sb.client.clone();
    let peer_with = |gr: bool, bfd: Option<&str>| {
        let mut p = json!({"apiVersion": "ferrolb.io/v1beta2", "kind": "BGPPeer", "metadata": {"name": "router", "namespace": NS},
            "spec": {"myASN": NODE_ASN, "peerASN": ROUTER_ASN, "peerAddress": ROUTER_V4, "holdTime": "3s",
                     "keepaliveTime": "1s", "connectTime": "1s", "enableGracefulRestart": gr}});
        if let Some(b) = bfd {
            p["spec"]["bfdProfile"] = json!(b);
        }
        p
    };
    let peer = |gr: bool| peer_with(gr, None);
    rt.block_on(async {
        for (name, ms) in [("fast", 50), ("metallb-default", 300)] {
            create(
                &Api::<ferrolb_crds::BFDProfile>::namespaced(c.clone(), NS),
                json!({"apiVersion": "ferrolb.io/v1beta1", "kind": "BFDProfile", "metadata": {"name": name},
                       "spec": {"receiveInterval": ms, "transmitInterval": ms, "detectMultiplier": 3}}),
            )
            .await?;
        }
        create(&Api::<ferrolb_crds::BGPPeer>::namespaced(c.clone(), NS), peer(false)).await?;
        create(
            &Api::<ferrolb_crds::IPAddressPool>::namespaced(c.clone(), NS),
            json!({"apiVersion": "ferrolb.io/v1beta1", "kind": "IPAddressPool", "metadata": {"name": "bgp"},
                   "spec": {"addresses": [BGP_POOL_V4, "fd42:f1b:3::/114"]}}),
        )
        .await?;
        create(
            &Api::<ferrolb_crds::BGPAdvertisement>::namespaced(c.clone(), NS),
            json!({"apiVersion": "ferrolb.io/v1beta1", "kind": "BGPAdvertisement", "metadata": {"name": "bgp"}, "spec": {}}),
        )
        .await?;
        for i in 1..=3 {
            create(
                &Api::<Pod>::namespaced(c.clone(), "default"),
                json!({"metadata": {"name": format!("web-{i}"), "labels": {"app": "web"}},
                       "spec": {"nodeName": format!("node-{i}"), "containers": [{"name": "c", "image": "any", "ports": [{"containerPort": 8080}]}]}}),
            )
            .await?;
        }
        create(
            &Api::<Service>::namespaced(c.clone(), "default"),
            json!({"metadata": {"name": "web"}, "spec": {"type": "LoadBalancer", "selector": {"app": "web"},
                   "externalTrafficPolicy": "Local", "ports": [{"port": 80, "targetPort": 8080}]}}),
        )
        .await
        .map(|_| ())
    })
    .expect("peer, pool, advertisement, pods and Service");
    let st = sb.state.clone();
    let router = st.router.clone().expect("router");
    let svcs: Api<Service> = Api::namespaced(c.clone(), "default");
    let vip = eventually("web gets an IP", Duration::from_secs(30), || {
        ferrolb_model::ingress_ips(&rt.block_on(svcs.get("web")).ok()?).first().map(|i| i.to_string())
    });
    until_hops(&router, &vip, 3, Duration::from_secs(60));
    let target: SocketAddr = format!("{vip}:80").parse().expect("VIP");

    // 1. Until the router stops sending a node traffic.
    let (mut withdraw, mut hold) = (Vec::new(), Vec::new());
    let link_of = |node: &str| {
        let ns = st.nodes.iter().find(|n| n.name == node).expect("node").netns.clone();
        move |state: &str| ferrolb_e2e::router::set_node_link(&ns, state == "up")
    };
    for i in 0..if run("1") { trials } else { 0 } {
        let node = format!("node-{}", 3 - i % 3);
        let key = format!("speaker/{node}");
        let t = Instant::now();
        sb.signal_pod(&key, "-TERM", true).expect("SIGTERM");
        until_hops(&router, &vip, 2, Duration::from_secs(10));
        withdraw.push(ms(t.elapsed()));
        sb.start_pod(&key).expect("start");
        until_hops(&router, &vip, 3, Duration::from_secs(60));
        let link = link_of(&node);
        let t = Instant::now();
        link("down");
        until_hops(&router, &vip, 2, Duration::from_secs(30));
        hold.push(ms(t.elapsed()));
        link("up");
        until_hops(&router, &vip, 3, Duration::from_secs(60));
    }
    // The same link failures with BFD: the peer names a profile, every session restarts.
    let mut bfd_rows = Vec::new();
    let profiles: &[(&str, &str)] = if run("1") {
        &[
            ("fast", "node link down: BFD 50 ms x 3"),
            ("metallb-default", "node link down: BFD 300 ms x 3 (MetalLB's default)"),
        ]
    } else {
        &[]
    };
    for &(profile, name) in profiles {
        let peers: Api<ferrolb_crds::BGPPeer> = Api::namespaced(c.clone(), NS);
        let p = peer_with(false, Some(profile));
        rt.block_on(peers.patch("router", &PatchParams::apply("bench").force(), &Patch::Apply(p))).expect("peer");
        let mut times = Vec::new();
        for i in 0..trials {
            eventually("BFD up with every node", Duration::from_secs(60), || {
                (router.bfd_up().len() == 3).then_some(())
            });
            until_hops(&router, &vip, 3, Duration::from_secs(60));
            let link = link_of(&format!("node-{}", 3 - i % 3));
            let t = Instant::now();
            link("down");
            until_hops(&router, &vip, 2, Duration::from_secs(30));
            times.push(ms(t.elapsed()));
            link("up");
        }
        bfd_rows.push(Row::new(name, times));
    }
    if run("1") {
        let mut rows = vec![
            Row::new("speaker SIGTERM: Cease, withdrawn at once (baseline)", withdraw),
            Row::new("node link down: hold timer (holdTime 3s, keepalive 1s)", hold),
        ];
        rows.extend(bfd_rows);
        print_table(
            "Router stops sending a node traffic (FRR's kernel next hop removed), 3 nodes",
            "ms",
            &rows,
            Some("speaker SIGTERM: Cease, withdrawn at once (baseline)"),
        );
        println!("(not run: a node failure with MetalLB's FRR-mode default hold time, 90 s, and no BFD)");
        // Back to the plain peer for the sections below.
        let peers: Api<ferrolb_crds::BGPPeer> = Api::namespaced(c.clone(), NS);
        rt.block_on(peers.patch("router", &PatchParams::apply("bench").force(), &Patch::Apply(peer(false))))
            .expect("peer");
        eventually("sessions up again", Duration::from_secs(60), || (router.established() == 3).then_some(()));
        until_hops(&router, &vip, 3, Duration::from_secs(60));
    }

    // 2. Rolling every speaker, with and without graceful restart.
    let mut roll_rows = Vec::new();
    let mut refresh = 20;
    let outside_ns = format!("/run/netns/{}", router.outside_netns);
    let modes: &[(bool, &str)] =
        if run("2") { &[(false, "SIGTERM withdrawal (Cease)"), (true, "graceful restart (routes kept)")] } else { &[] };
    for &(gr, name) in modes {
        let peers: Api<ferrolb_crds::BGPPeer> = Api::namespaced(c.clone(), NS);
        rt.block_on(peers.patch("router", &PatchParams::apply("bench").force(), &Patch::Apply(peer(gr))))
            .expect("peer");
        eventually("sessions up again", Duration::from_secs(30), || (router.established() == 3).then_some(()));
        until_hops(&router, &vip, 3, Duration::from_secs(60));
        let (mut failed, mut longest) = (Vec::new(), Vec::new());
        for _ in 0..(trials / 2).max(1) {
            let prober =
                Prober::start(&outside_ns, target, Duration::from_millis(10), Duration::from_secs(1)).expect("prober");
            std::thread::sleep(Duration::from_millis(300));
            let rolled = rt.block_on(sb.upgrade(&json!({"speaker": {"refreshInterval": refresh}}))).expect("upgrade");
            assert_eq!(rolled.len(), 3, "every speaker rolled: {rolled:?}");
            until_hops(&router, &vip, 3, Duration::from_secs(60));
            std::thread::sleep(Duration::from_millis(500));
            let probes = prober.stop();
            let f = probes.iter().filter(|p| !p.ok).count() as f64;
            let l = outages(&probes).into_iter().map(|(_, d)| ms(d)).fold(0.0, f64::max);
            eprintln!("{name}: {} probes, {f} failed, longest outage {l:.0} ms", probes.len());
            failed.push(f);
            longest.push(l);
            refresh = if refresh == 20 { 30 } else { 20 };
        }
        roll_rows.push(Row::new(&format!("{name}: failed connections"), failed));
        roll_rows.push(Row::new(&format!("{name}: longest outage ms"), longest));
    }
    if run("2") {
        print_table(
            "Rolling upgrade of 3 speakers (helm upgrade) under outside traffic (a connection every 10 ms)",
            "",
            &roll_rows,
            None,
        );
    }

    // 3. ECMP spread.
    let counts = if run("3") { spread(&router.outside_netns, target, flows) } else { BTreeMap::new() };
    if run("3") {
        println!(
            "\nECMP spread of {flows} connections from {OUTSIDE_V4} to {vip} (Local Service, one endpoint per node)"
        );
        println!("| node | connections | share |");
        println!("|---|---|---|");
        for (node, n) in &counts {
            println!("| {node} | {n} | {:.1} % |", 100.0 * *n as f64 / flows as f64);
        }
    }
    if !run("4") {
        return;
    }

    // 4. Many Services.
    let before = sb.pid("speaker/node-1").map(rss_kib).unwrap_or(f64::NAN);
    let count_v6 = || {
        let out = ferrolb_e2e::client::netns_exec(&router.netns, &["ip", "-6", "route", "show", "proto", "bgp"])
            .unwrap_or_default();
        out.lines().filter(|l| l.starts_with("fd42:f1b:3:")).count()
    };
    let t = Instant::now();
    rt.block_on(async {
        for i in 0..services {
            create(
                &Api::<Service>::namespaced(c.clone(), "default"),
                json!({"metadata": {"name": format!("many-{i}")}, "spec": {"type": "LoadBalancer", "ipFamilies": ["IPv6"],
                       "allocateLoadBalancerNodePorts": false,
                       "selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}}),
            )
            .await?;
        }
        Ok::<_, anyhow::Error>(())
    })
    .expect("Services");
    let created = t.elapsed();
    let deadline = Duration::from_secs(if quick { 120 } else { 1800 });
    while count_v6() < services {
        assert!(t.elapsed() < deadline, "the router has {} of {services} prefixes after {deadline:?}", count_v6());
        std::thread::sleep(Duration::from_millis(200));
    }
    let all = t.elapsed();
    let after = sb.pid("speaker/node-1").map(rss_kib).unwrap_or(f64::NAN);
    println!("\n{services} IPv6 Services advertised by 3 nodes");
    println!("| measure | value |");
    println!("|---|---|");
    println!("| creating the Services (API) | {:.1} s |", created.as_secs_f64());
    println!("| from the first create until the router's kernel has every prefix | {:.1} s |", all.as_secs_f64());
    println!("| speaker RSS (node-1) before / after | {:.1} MiB / {:.1} MiB |", before / 1024.0, after / 1024.0);
}
