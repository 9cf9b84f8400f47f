//! Coming from MetalLB, the way an operator switches: a cluster in the state MetalLB
//! leaves (its CRDs, `metallb.io` objects and Services with the IPs it assigned),
//! then ferrolb installed by its chart with `metallbCompat` on, RBAC enforced. No IP
//! changes at any moment; the client reaches the Service again through ferrolb's
//! announcement; MetalLB's annotation, metric names and alerts keep working; what
//! ferrolb cannot honour is a Warning on the MetalLB object. The outage is measured by
//! the `migration` bench, printed here. Runs as root.

use std::net::SocketAddr;
use std::time::Duration;

use ferrolb_e2e::client::{Prober, url};
use ferrolb_e2e::harness::Harness;
use ferrolb_e2e::metallb::{self, Assigned, Capture, IngressLog, epoch};
use ferrolb_e2e::prometheus::{prometheus, query};
use ferrolb_e2e::router::{BGP_POOL_V4, Daemon, NODE_ASN, ROUTER_ASN, ROUTER_V4};
use ferrolb_e2e::sandbox::{Families, Options};
use ferrolb_e2e::wait::eventually;
use k8s_openapi::api::core::v1::Service;
use kube::ResourceExt;
use kube::api::Api;
use serde_json::json;

/// MetalLB's layer-2 configuration, as its documentation's examples write it, with a
/// BGPPeer on a VRF (which ferrolb lacks) that selects no node.
const L2_OBJECTS: &str = "apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: first-pool, namespace: metallb-system}
spec:
  addresses: [198.51.100.100-198.51.100.110, 'fd42:f1b::100/124']
---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: tiny, namespace: metallb-system}
spec:
  addresses: [198.51.100.120/32]
  autoAssign: false
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: {name: example, namespace: metallb-system}
spec:
  ipAddressPools: [first-pool, tiny]
---
apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata: {name: vrf-peer, namespace: metallb-system}
spec:
  myASN: 64513
  peerASN: 64512
  peerAddress: 203.0.113.254
  vrf: red
  nodeSelectors:
  - matchLabels: {example.com/bgp: 'true'}
";

fn services() -> Vec<Assigned> {
    vec![
        Assigned { name: "web", ips: vec!["198.51.100.105", "fd42:f1b::10a"], pool: "first-pool" },
        Assigned { name: "api", ips: vec!["198.51.100.103"], pool: "first-pool" },
        Assigned { name: "full", ips: vec!["198.51.100.120"], pool: "tiny" },
    ]
}

/// The state MetalLB leaves (`objects`, the Services of `want`, a backend Pod on
/// node-1), and a watch on the Services' IPs from then on.
fn metallb_state(h: &Harness, objects: &str, want: &[Assigned]) -> IngressLog {
    let client = h.sb().client.clone();
    h.rt.block_on(async {
        metallb::install(&client, objects).await?;
        metallb::assigned_services(&client, want).await
    })
    .expect("the state MetalLB leaves");
    backend(h);
    let _g = h.rt.enter();
    IngressLog::start(&client)
}

fn backend(h: &Harness) {
    h.sb()
        .kubectl_apply(
            &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-1", "namespace": "default",
                "labels": {"app": "web"}}, "spec": {"nodeName": "node-1",
                "containers": [{"name": "c", "image": "any", "ports": [{"containerPort": 8080}]}]}})
            .to_string(),
        )
        .unwrap();
}

/// Every ingress each Service showed is the one MetalLB gave it.
fn assert_no_ip_changed(log: &IngressLog, want: &[Assigned]) {
    let seen = log.seen();
    assert!(!seen.is_empty());
    for (name, ips) in seen {
        let Some(a) = want.iter().find(|a| a.name == name) else { continue };
        let mut ips = ips.clone();
        let mut expected: Vec<String> = a.ips.iter().map(|s| s.to_string()).collect();
        ips.sort();
        expected.sort();
        assert_eq!(ips, expected, "{name} showed other IPs at some moment");
    }
}

#[test]
fn switching_from_metallb_in_layer_2_keeps_every_ip() {
    let mut h = Harness::up(&Options {
        nodes: 2,
        rbac: true,
        start_components: false,
        values: json!({"metallbCompat": {"enabled": true, "metrics": true}}),
        ..Options::default()
    });
    let client = h.sb().client.clone();
    let want = services();
    let log = metallb_state(&h, L2_OBJECTS, &want);
    let capture = Capture::start(&h.sb().state).expect("tcpdump on the client");
    let vip: SocketAddr = "198.51.100.105:80".parse().unwrap();
    let prober = Prober::start(
        &format!("/run/netns/{}", h.sb().state.client_netns),
        vip,
        Duration::from_millis(10),
        Duration::from_millis(200),
    )
    .expect("prober");
    // MetalLB's speakers stop answering now; ferrolb's Pods start.
    let t0 = epoch();
    let at = prober.now();
    {
        let (rt, sb) = h.parts();
        rt.block_on(sb.start_components()).expect("ferrolb starts");
    }
    let client_host = h.sb().state.client();
    eventually("the client reaches web through ferrolb", Duration::from_secs(60), || {
        client_host.curl(&url("198.51.100.105", 80), Duration::from_secs(2)).filter(|b| b.contains("web-1"))
    });
    eventually("the client reaches web over IPv6", Duration::from_secs(30), || {
        client_host.curl(&url("fd42:f1b::10a", 80), Duration::from_secs(2)).filter(|b| b.contains("web-1"))
    });
    let probes = prober.stop();
    let first_ok =
        probes.iter().filter(|p| p.at >= at && p.ok).map(|p| (p.done - at).as_secs_f64() * 1e3).reduce(f64::min);
    let garp = capture.first_announcement("198.51.100.105", t0).map(|t| (t - t0) * 1e3);
    println!("ferrolb's Pods start -> first gratuitous ARP {garp:?} ms, first TCP connection {first_ok:?} ms");
    if std::env::var_os("FERROLB_DEBUG_CAPTURE").is_some() {
        println!("{}", capture.since(t0).join("\n"));
        println!("t0 {t0}");
        for f in ["speaker-node-1.log", "speaker-node-2.log"] {
            println!("{f}:\n{}", std::fs::read_to_string(h.sb().state.run_dir.join(f)).unwrap_or_default());
        }
    }
    assert!(garp.is_some(), "the client saw ferrolb's gratuitous ARP");
    assert!(capture.first_announcement("fd42:f1b::10a", t0).is_some(), "and its unsolicited NA");

    // Both Services settled on ferrolb's side with MetalLB's IPs and annotation.
    let api: Api<Service> = Api::namespaced(client.clone(), "default");
    for a in &want {
        let s = eventually(&format!("{} allocated by ferrolb", a.name), Duration::from_secs(30), || {
            let s = h.rt.block_on(api.get_opt(a.name)).ok()??;
            let c = s.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "ferrolb.io/Allocated")?;
            (c.status == "True" && s.annotations().contains_key("ferrolb.io/ip-allocated-from-pool")).then_some(s)
        });
        assert_eq!(s.annotations().get("metallb.io/ip-allocated-from-pool").map(String::as_str), Some(a.pool));
    }
    assert_no_ip_changed(&log, &want);

    // What ferrolb cannot honour is said on the MetalLB object.
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), metallb::NS);
    eventually("a Warning on the BGPPeer naming spec.vrf", Duration::from_secs(30), || {
        let list = h.rt.block_on(events.list(&Default::default())).ok()?;
        list.items
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("MetalLBNotHonoured")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("vrf-peer")
                    && e.note.as_deref() == Some("spec.vrf: ignored: ferrolb has no such field")
            })
            .then_some(())
    });

    // MetalLB's metric names, as its dashboards and alerts read them.
    let st = &h.sb().state;
    let ctl = eventually("the controller's MetalLB metrics", Duration::from_secs(30), || {
        let m = st.controller_leader_metrics();
        m.contains("metallb_allocator_addresses_in_use_total{pool=\"first-pool\"} 3").then_some(m)
    });
    assert!(ctl.contains("metallb_allocator_addresses_total{pool=\"first-pool\"} 27"), "{ctl}");
    assert!(ctl.contains("metallb_k8s_client_config_loaded_bool 1"), "{ctl}");
    assert!(ctl.contains("metallb_k8s_client_config_stale_bool 0"), "{ctl}");
    let holder = st.node_of_mac(&st.answering_mac("198.51.100.105").expect("someone answers")).unwrap();
    let spk = st.speaker_metrics(&holder);
    assert!(
        spk.contains(&format!(
            "metallb_speaker_announced{{ip=\"198.51.100.105\",node=\"{holder}\",protocol=\"layer2\",service=\"default/web\"}} 1"
        )),
        "{spk}"
    );
    assert!(spk.contains("metallb_layer2_requests_received{ip=\"198.51.100.105\"}"), "{spk}");

    // MetalLB's own alerts, in a real Prometheus scraping ferrolb as job "metallb":
    // pool tiny is full, first-pool is not, the configuration is loaded.
    let rules = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/metallb/alerts.yaml");
    let check = std::process::Command::new("promtool").args(["check", "rules"]).arg(&rules).output().unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));
    let dir = tempfile::tempdir().unwrap();
    let targets: Vec<String> = st
        .controller_targets()
        .into_iter()
        .chain(st.nodes.iter().map(|n| format!("{}:7473", n.interfaces[0].ipv4)))
        .map(|t| format!("'{t}'"))
        .collect();
    let config = format!(
        "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nrule_files: ['{}']\nscrape_configs:\n  - job_name: metallb\n    static_configs: [{{targets: [{}]}}]\n",
        rules.display(),
        targets.join(", ")
    );
    let cp = st.control_plane_netns.clone();
    let _prom = prometheus(&cp, dir.path(), &config);
    let alerts = |name: &str| -> Option<Vec<String>> {
        let r = query(&cp, &format!("ALERTS{{alertname=\"{name}\"}}"))?;
        let mut pools: Vec<String> = r.iter().map(|a| a["metric"]["pool"].as_str().unwrap_or("").to_string()).collect();
        pools.sort();
        Some(pools)
    };
    eventually("MetalLBAddressPoolExhausted for pool tiny", Duration::from_secs(30), || {
        (alerts("MetalLBAddressPoolExhausted")? == ["tiny"]).then_some(())
    });
    assert_eq!(alerts("MetalLBAddressPoolUsage95Percent").unwrap(), ["tiny"]);
    // The loaded gauge is scraped (so the absence of MetalLBConfigNotLoaded means something).
    let loaded = query(&cp, "metallb_k8s_client_config_loaded_bool == 1").unwrap();
    assert_eq!(loaded.len(), targets.len(), "every target: {loaded:?}");
    assert_eq!(alerts("MetalLBConfigNotLoaded").unwrap(), Vec::<String>::new());
    assert_eq!(alerts("MetalLBStaleConfig").unwrap(), Vec::<String>::new());
}

/// MetalLB's BGP configuration, read in compat mode: the router learns the IP MetalLB
/// assigned from every node.
#[test]
fn switching_from_metallb_in_bgp_mode_keeps_the_ip_and_the_router_learns_it() {
    let mut h = Harness::up(&Options {
        nodes: 2,
        families: Families::V4,
        rbac: true,
        start_components: false,
        bgp: Some(Daemon::Frr),
        values: json!({"metallbCompat": {"enabled": true}}),
        ..Options::default()
    });
    let objects = format!(
        "apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata: {{name: router, namespace: metallb-system}}
spec: {{myASN: {NODE_ASN}, peerASN: {ROUTER_ASN}, peerAddress: {ROUTER_V4}, holdTime: 9s, connectTime: 1s}}
---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {{name: bgp-pool, namespace: metallb-system}}
spec: {{addresses: ['{BGP_POOL_V4}']}}
---
apiVersion: metallb.io/v1beta1
kind: BGPAdvertisement
metadata: {{name: bgp, namespace: metallb-system}}
spec: {{ipAddressPools: [bgp-pool]}}
"
    );
    let want = vec![Assigned { name: "web", ips: vec!["203.0.113.70"], pool: "bgp-pool" }];
    let log = metallb_state(&h, &objects, &want);
    {
        let (rt, sb) = h.parts();
        rt.block_on(sb.start_components()).expect("ferrolb starts");
    }
    let router = h.sb().state.router.clone().expect("a router");
    let nodes: Vec<String> = h.sb().state.nodes.iter().map(|n| n.interfaces[0].ipv4.clone()).collect();
    eventually("the router routes 203.0.113.70 via both nodes", Duration::from_secs(60), || {
        let mut hops: Vec<String> = router.next_hops("203.0.113.70").iter().map(|a| a.to_string()).collect();
        hops.sort();
        (hops == nodes).then_some(())
    });
    let outside = ferrolb_e2e::client::ClientHost::new(&router.outside_netns, "eth0");
    eventually("the outside client reaches web", Duration::from_secs(30), || {
        outside.curl(&url("203.0.113.70", 80), Duration::from_secs(2)).filter(|b| b.contains("web-1"))
    });
    assert_no_ip_changed(&log, &want);
}
