//! ferrolb's BGP session (its pure state machine over TCP, messages by
//! netgauze-bgp-pkt) against a real router: FRR's bgpd (Debian's FRR 8.4) in a network
//! namespace, peering over a veth with ferrolb's side in another. Not yet the speaker
//! (its CRDs and its use of these sessions come next): this proves the wire and the
//! state machine against the daemon operators run. Runs as root.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use ferrolb_bgp::driver::{Endpoint, Status, run};
use ferrolb_bgp::session::{Config, State};
use ferrolb_bgp::update::{Peering, Route};
use ferrolb_e2e::topology::{Netns, privileged, unique_suffix};
use ferrolb_e2e::wait::eventually;
use serde_json::Value;
use tokio::sync::watch;

/// Two namespaces joined by a veth: ferrolb's side (203.0.113.2, fd42:f1b:bb::2) and
/// the router's (203.0.113.1, fd42:f1b:bb::1), which runs bgpd with `config`.
struct Lab {
    speaker: Netns,
    router: Netns,
    dir: tempfile::TempDir,
}

impl Lab {
    fn new(config: &str) -> Lab {
        assert!(privileged(), "network tests need root (CI runs .ci/run as root)");
        let sfx = unique_suffix();
        let speaker = Netns::create(&format!("flbbgs{sfx}")).unwrap();
        let router = Netns::create(&format!("flbbgr{sfx}")).unwrap();
        speaker
            .exec(&["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", &router.name])
            .unwrap();
        for (ns, last) in [(&speaker, 2), (&router, 1)] {
            ns.exec(&["ip", "addr", "add", &format!("203.0.113.{last}/24"), "dev", "eth0"]).unwrap();
            ns.exec(&["ip", "addr", "add", &format!("fd42:f1b:bb::{last}/64"), "dev", "eth0", "nodad"]).unwrap();
            ns.exec(&["ip", "link", "set", "eth0", "up"]).unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("bgpd.conf"), config).unwrap();
        let d = dir.path().display().to_string();
        router
            .exec(&[
                "/usr/lib/frr/bgpd",
                "-d",
                "-S",
                "-Z",
                "-n",
                "-f",
                &format!("{d}/bgpd.conf"),
                "-i",
                &format!("{d}/bgpd.pid"),
                "--vty_socket",
                &d,
                "--log",
                &format!("file:{d}/bgpd.log"),
            ])
            .expect("bgpd (Debian package frr)");
        Lab { speaker, router, dir }
    }

    /// `vtysh -c command` against the router's bgpd, as JSON.
    fn vtysh(&self, command: &str) -> Option<Value> {
        let d = self.dir.path().display().to_string();
        let out = self.router.exec(&["vtysh", "--vty_socket", &d, "-c", command]).ok()?;
        serde_json::from_str(&out).ok()
    }

    /// Run a session from ferrolb's side until the returned stop sender says so.
    fn session(&self, peer: IpAddr, cfg: Config, peering: Peering, routes: Vec<Route>) -> Running {
        let (routes_tx, routes_rx) = watch::channel(routes);
        let (stop_tx, stop_rx) = watch::channel(false);
        let (status_tx, status_rx) = watch::channel(Status { state: State::Idle, last_down: None, advertised: 0 });
        let endpoint = Endpoint { peer: SocketAddr::new(peer, 179), source: None };
        let thread = ferrolb_e2e::netns::in_netns(&self.speaker.path(), move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(run(endpoint, cfg, peering, routes_rx, stop_rx, status_tx));
        })
        .unwrap();
        Running { routes: routes_tx, stop: stop_tx, status: status_rx, thread: Some(thread) }
    }
}

struct Running {
    routes: watch::Sender<Vec<Route>>,
    stop: watch::Sender<bool>,
    status: watch::Receiver<Status>,
    thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
}

impl Running {
    fn status(&self) -> Status {
        self.status.borrow().clone()
    }
    fn stop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            t.join().unwrap().unwrap();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

fn cfg(peer_asn: u32, ipv4: bool, ipv6: bool) -> Config {
    Config {
        local_asn: 64513,
        peer_asn,
        router_id: Ipv4Addr::new(203, 0, 113, 2),
        hold_time: Duration::from_secs(9),
        keepalive: None,
        connect_retry: Duration::from_secs(1),
        ipv4,
        ipv6,
    }
}

fn route(prefix: &str) -> Route {
    Route {
        prefix: prefix.parse().unwrap(),
        communities: vec![(64512 << 16) | 100],
        large_communities: vec![(64512, 1, 2)],
        local_pref: None,
    }
}

const FRR: &str = "frr defaults datacenter\nhostname r\nrouter bgp 64512\n bgp router-id 203.0.113.1\n \
    no bgp ebgp-requires-policy\n neighbor 203.0.113.2 remote-as 64513\n neighbor fd42:f1b:bb::2 remote-as 64513\n \
    address-family ipv6 unicast\n  neighbor fd42:f1b:bb::2 activate\n exit-address-family\n";

fn peering() -> Peering {
    Peering {
        local_asn: 64513,
        internal: false,
        next_hop_v4: Some(Ipv4Addr::new(203, 0, 113, 2)),
        next_hop_v6: Some("fd42:f1b:bb::2".parse().unwrap()),
    }
}

#[test]
fn frr_learns_advertised_prefixes_with_communities_and_loses_withdrawn_ones() {
    let lab = Lab::new(FRR);
    let mut v4 = lab.session(
        "203.0.113.1".parse().unwrap(),
        cfg(64512, true, false),
        peering(),
        vec![route("198.51.100.100/32"), route("198.51.100.101/32")],
    );
    let mut v6 = lab.session(
        "fd42:f1b:bb::1".parse().unwrap(),
        cfg(64512, false, true),
        peering(),
        vec![route("fd42:f1b::100/128")],
    );
    eventually("both sessions Established", Duration::from_secs(20), || {
        (v4.status().state == State::Established && v6.status().state == State::Established).then_some(())
    });
    // The router has the prefixes, from ferrolb's address, with the communities.
    let path = |family: &str, prefix: &str| -> Option<Value> {
        let v = lab.vtysh(&format!("show bgp {family} unicast {prefix} json"))?;
        v["paths"].as_array()?.first().cloned()
    };
    let p =
        eventually("198.51.100.100/32 at the router", Duration::from_secs(10), || path("ipv4", "198.51.100.100/32"));
    assert_eq!(p["nexthops"][0]["ip"], "203.0.113.2", "{p}");
    assert_eq!(p["community"]["string"], "64512:100", "{p}");
    assert_eq!(p["largeCommunity"]["string"], "64512:1:2", "{p}");
    assert_eq!(p["aspath"]["string"], "64513", "{p}");
    let p6 =
        eventually("fd42:f1b::100/128 at the router", Duration::from_secs(10), || path("ipv6", "fd42:f1b::100/128"));
    assert_eq!(p6["nexthops"][0]["ip"], "fd42:f1b:bb::2", "{p6}");
    // A withdrawn prefix leaves the router's table; the other stays.
    v4.routes.send_replace(vec![route("198.51.100.101/32")]);
    eventually("198.51.100.100/32 withdrawn", Duration::from_secs(10), || {
        path("ipv4", "198.51.100.100/32").is_none().then_some(())
    });
    assert!(path("ipv4", "198.51.100.101/32").is_some());
    // A stop says goodbye with Cease / Administrative Shutdown.
    v4.stop();
    let n = eventually("the router saw the Cease", Duration::from_secs(10), || {
        let v = lab.vtysh("show bgp neighbors 203.0.113.2 json")?;
        let r = v["203.0.113.2"]["lastNotificationReason"].as_str()?.to_string();
        (v["203.0.113.2"]["bgpState"] != "Established").then_some(r)
    });
    assert!(n.contains("Cease/Administrative Shutdown"), "{n}");
    v6.stop();
}

#[test]
fn a_wrong_peer_as_is_refused_with_bad_peer_as_at_both_ends() {
    let lab = Lab::new(FRR);
    // ferrolb expects AS 64999; the router is 64512.
    let s = lab.session(
        "203.0.113.1".parse().unwrap(),
        cfg(64999, true, false),
        peering(),
        vec![route("198.51.100.100/32")],
    );
    // (Until bgpd listens, the dial is refused.)
    let down = eventually("ferrolb refuses the OPEN", Duration::from_secs(20), || {
        s.status().last_down.filter(|d| d.starts_with("sent NOTIFICATION"))
    });
    assert_eq!(down, "sent NOTIFICATION 2/2: the peer's AS is 64512, the BGPPeer says 64999");
    // FRR records a NOTIFICATION received before Established only in its log.
    let log = lab.dir.path().join("bgpd.log");
    eventually("the router got Bad Peer AS", Duration::from_secs(10), || {
        let text = std::fs::read_to_string(&log).ok()?;
        text.contains("NOTIFICATION: received from neighbor 203.0.113.2 2/2 (OPEN Message Error/Bad Peer AS)")
            .then_some(())
    });
    assert_ne!(s.status().state, State::Established);
}
