//! ferrolb's BGP session (its pure state machine over TCP, messages by
//! netgauze-bgp-pkt) against real routers: FRR's bgpd (Debian's FRR 8.4) and BIRD
//! (Debian's 2.0.12), each in a network namespace, peering over a veth with ferrolb's
//! side in another. Not yet the speaker (its CRDs and its use of these sessions come
//! next): this proves the wire and the state machine against the daemons operators
//! run. Runs as root.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use ferrolb_bgp::driver::{Endpoint, Status, Stop, run};
use ferrolb_bgp::session::{Config, State};
use ferrolb_bgp::update::{Peering, Route};
use ferrolb_e2e::topology::{Netns, privileged, unique_suffix};
use ferrolb_e2e::wait::eventually;
use serde_json::Value;
use tokio::sync::watch;

/// Two namespaces joined by a veth: ferrolb's side (203.0.113.2, fd42:f1b:bb::2) and
/// the router's (203.0.113.1, fd42:f1b:bb::1), which runs FRR or BIRD in AS 64512.
struct Lab {
    speaker: Netns,
    router: Netns,
    dir: tempfile::TempDir,
    kind: Router,
    /// The TCP MD5 password ferrolb's side signs with.
    password: Option<String>,
    /// The TTL of ferrolb's side's segments.
    ttl: Option<u32>,
}

/// The routing daemon on the router's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Router {
    Frr,
    /// FRR whose IPv4 neighbor has `password md5-secret`.
    FrrWithPassword,
    /// FRR at 198.51.100.2 with ferrolb's side two hops away (`ebgp-multihop 2`).
    FrrMultihop,
    Bird,
}

/// A prefix as the router has it from ferrolb.
#[derive(Debug, Default, PartialEq, Eq)]
struct Seen {
    next_hop: String,
    as_path: String,
    communities: String,
    large_communities: String,
}

impl Lab {
    fn new(router_kind: Router) -> Lab {
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
        let d = dir.path().display().to_string();
        match router_kind {
            Router::Frr | Router::FrrWithPassword | Router::FrrMultihop => {
                let config = match router_kind {
                    Router::FrrWithPassword => FRR_MD5,
                    Router::FrrMultihop => FRR_MULTIHOP,
                    _ => FRR,
                };
                std::fs::write(dir.path().join("bgpd.conf"), config).unwrap();
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
            }
            Router::Bird => {
                std::fs::write(dir.path().join("bird.conf"), BIRD).unwrap();
                router
                    .exec(&[
                        "bird",
                        "-c",
                        &format!("{d}/bird.conf"),
                        "-s",
                        &format!("{d}/bird.ctl"),
                        "-P",
                        &format!("{d}/bird.pid"),
                    ])
                    .expect("bird (Debian package bird2)");
            }
        }
        Lab { speaker, router, dir, kind: router_kind, password: None, ttl: None }
    }

    /// The route the router has for `prefix` (`ipv4` or `ipv6` family), if any.
    fn seen(&self, family: &str, prefix: &str) -> Option<Seen> {
        match self.kind {
            Router::Frr | Router::FrrWithPassword | Router::FrrMultihop => {
                let v = self.vtysh(&format!("show bgp {family} unicast {prefix} json"))?;
                let p = v["paths"].as_array()?.first()?.clone();
                let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
                Some(Seen {
                    next_hop: s(&p["nexthops"][0]["ip"]),
                    as_path: s(&p["aspath"]["string"]),
                    communities: s(&p["community"]["string"]),
                    large_communities: s(&p["largeCommunity"]["string"]),
                })
            }
            Router::Bird => {
                let out = self.birdc(&format!("show route all for {prefix}"))?;
                let exact = out.lines().any(|l| l.starts_with(prefix));
                let attr = |name: &str| {
                    out.lines()
                        .find_map(|l| l.trim().strip_prefix(name).map(|v| v.trim_start_matches(':').trim().to_string()))
                        .unwrap_or_default()
                };
                exact.then(|| Seen {
                    next_hop: attr("BGP.next_hop"),
                    as_path: attr("BGP.as_path"),
                    communities: attr("BGP.community"),
                    large_communities: attr("BGP.large_community"),
                })
            }
        }
    }

    /// Why the router last took the session to ferrolb's `peer` down, as it says it.
    fn last_error(&self, peer: &str) -> Option<String> {
        match self.kind {
            Router::Frr | Router::FrrWithPassword | Router::FrrMultihop => {
                let v = self.vtysh(&format!("show bgp neighbors {peer} json"))?;
                let r = v[peer]["lastNotificationReason"].as_str()?.to_string();
                (v[peer]["bgpState"] != "Established").then_some(r)
            }
            Router::Bird => {
                let name = if peer.contains(':') { "ferrolb6" } else { "ferrolb4" };
                let out = self.birdc(&format!("show protocols all {name}"))?;
                out.lines().find_map(|l| l.trim().strip_prefix("Last error:").map(|e| e.trim().to_string()))
            }
        }
    }

    /// `birdc command` against the router's BIRD.
    fn birdc(&self, command: &str) -> Option<String> {
        let sock = self.dir.path().join("bird.ctl").display().to_string();
        let mut args = vec!["birdc", "-s", &sock];
        args.extend(command.split(' '));
        self.router.exec(&args).ok()
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
        let (stop_tx, stop_rx) = watch::channel(Stop::Run);
        let (status_tx, status_rx) =
            watch::channel(Status { state: State::Idle, last_down: None, advertised: 0, updates_sent: 0 });
        let endpoint =
            Endpoint { peer: SocketAddr::new(peer, 179), source: None, password: self.password.clone(), ttl: self.ttl };
        let thread = ferrolb_e2e::netns::in_netns(&self.speaker.path(), move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(run(endpoint, cfg, peering, routes_rx, stop_rx, status_tx, None));
        })
        .unwrap();
        Running { routes: routes_tx, stop: stop_tx, status: status_rx, thread: Some(thread) }
    }
}

struct Running {
    routes: watch::Sender<Vec<Route>>,
    stop: watch::Sender<Stop>,
    status: watch::Receiver<Status>,
    thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
}

impl Running {
    fn status(&self) -> Status {
        self.status.borrow().clone()
    }
    fn stop(&mut self) {
        self.end(Stop::Withdraw);
    }
    fn end(&mut self, how: Stop) {
        let _ = self.stop.send(how);
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
        graceful_restart: None,
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

const BIRD: &str = "router id 203.0.113.1;\nprotocol device {}\n\
    protocol bgp ferrolb4 { local 203.0.113.1 as 64512; neighbor 203.0.113.2 as 64513; ipv4 { import all; export none; }; }\n\
    protocol bgp ferrolb6 { local fd42:f1b:bb::1 as 64512; neighbor fd42:f1b:bb::2 as 64513; ipv6 { import all; export none; }; }\n";

const FRR_MD5: &str = "frr defaults datacenter\nhostname r\nrouter bgp 64512\n bgp router-id 203.0.113.1\n \
    no bgp ebgp-requires-policy\n neighbor 203.0.113.2 remote-as 64513\n neighbor 203.0.113.2 password md5-secret\n";

const FRR_MULTIHOP: &str = "frr defaults datacenter\nhostname r\nrouter bgp 64512\n bgp router-id 198.51.100.2\n \
    no bgp ebgp-requires-policy\n neighbor 203.0.113.2 remote-as 64513\n neighbor 203.0.113.2 ebgp-multihop 2\n";

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

/// Both families come up; the router has the prefixes with ferrolb's next hop, AS
/// path and communities; a withdrawn prefix leaves its table while the other stays;
/// a stop reaches it as Cease / Administrative Shutdown.
fn advertise_withdraw_and_stop(router: Router) {
    let lab = Lab::new(router);
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
    let p = eventually("198.51.100.100/32 at the router", Duration::from_secs(10), || {
        lab.seen("ipv4", "198.51.100.100/32")
    });
    let (community, large) = match router {
        Router::Frr | Router::FrrWithPassword | Router::FrrMultihop => ("64512:100", "64512:1:2"),
        Router::Bird => ("(64512,100)", "(64512, 1, 2)"),
    };
    assert_eq!(
        p,
        Seen {
            next_hop: "203.0.113.2".into(),
            as_path: "64513".into(),
            communities: community.into(),
            large_communities: large.into()
        }
    );
    let p6 = eventually("fd42:f1b::100/128 at the router", Duration::from_secs(10), || {
        lab.seen("ipv6", "fd42:f1b::100/128")
    });
    assert!(p6.next_hop.starts_with("fd42:f1b:bb::2"), "{p6:?}");
    // A withdrawn prefix leaves the router's table; the other stays.
    v4.routes.send_replace(vec![route("198.51.100.101/32")]);
    eventually("198.51.100.100/32 withdrawn", Duration::from_secs(10), || {
        lab.seen("ipv4", "198.51.100.100/32").is_none().then_some(())
    });
    assert!(lab.seen("ipv4", "198.51.100.101/32").is_some());
    // A stop says goodbye with Cease / Administrative Shutdown.
    v4.stop();
    let n = eventually("the router saw the Cease", Duration::from_secs(10), || lab.last_error("203.0.113.2"));
    let want = match router {
        Router::Frr | Router::FrrWithPassword | Router::FrrMultihop => "Cease/Administrative Shutdown",
        Router::Bird => "Received: Administrative shutdown",
    };
    assert!(n.contains(want), "{n}");
    v6.stop();
}

#[test]
fn frr_learns_advertised_prefixes_with_communities_and_loses_withdrawn_ones() {
    advertise_withdraw_and_stop(Router::Frr);
}

#[test]
fn bird_learns_advertised_prefixes_with_communities_and_loses_withdrawn_ones() {
    advertise_withdraw_and_stop(Router::Bird);
}

#[test]
fn a_wrong_peer_as_is_refused_with_bad_peer_as_at_both_ends() {
    let lab = Lab::new(Router::Frr);
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

/// TCP MD5 (RFC 2385): with the router's password the session comes up and carries
/// routes; with another, the router's kernel drops every segment, the session never
/// comes up, and ferrolb says to check the password.
#[test]
fn a_tcp_md5_password_must_match_the_routers() {
    let mut lab = Lab::new(Router::FrrWithPassword);
    lab.password = Some("md5-secret".into());
    let s = lab.session(
        "203.0.113.1".parse().unwrap(),
        cfg(64512, true, false),
        peering(),
        vec![route("198.51.100.100/32")],
    );
    eventually("Established with the password", Duration::from_secs(20), || {
        (s.status().state == State::Established).then_some(())
    });
    eventually("the route at the router", Duration::from_secs(10), || lab.seen("ipv4", "198.51.100.100/32"));
    drop(s);

    let mut lab = Lab::new(Router::FrrWithPassword);
    lab.password = Some("not-the-secret".into());
    let s = lab.session(
        "203.0.113.1".parse().unwrap(),
        cfg(64512, true, false),
        peering(),
        vec![route("198.51.100.100/32")],
    );
    let down = eventually("the dial times out", Duration::from_secs(20), || {
        s.status().last_down.filter(|d| d.contains("timed out"))
    });
    assert!(down.contains("check the password on both sides"), "{down}");
    assert_ne!(s.status().state, State::Established);
    assert!(lab.seen("ipv4", "198.51.100.100/32").is_none());
}

/// Graceful restart (RFC 4724): a session that offered it and ends without a
/// NOTIFICATION (a speaker restarting) leaves its routes at the router, marked stale,
/// and the next session's routes and End-of-RIB make them fresh again. Without it,
/// the same end takes the routes away at once.
#[test]
fn a_graceful_restart_keeps_the_routes_at_the_router() {
    let lab = Lab::new(Router::Frr);
    let stale = |lab: &Lab| -> Option<bool> {
        let v = lab.vtysh("show bgp ipv4 unicast 198.51.100.100/32 json")?;
        let p = v["paths"].as_array()?.first()?.clone();
        Some(p["stale"].as_bool().unwrap_or(false))
    };
    let gr = Config { graceful_restart: Some(Duration::from_secs(60)), ..cfg(64512, true, false) };
    let peer: IpAddr = "203.0.113.1".parse().unwrap();
    let mut s = lab.session(peer, gr.clone(), peering(), vec![route("198.51.100.100/32")]);
    eventually("advertised", Duration::from_secs(20), || (stale(&lab) == Some(false)).then_some(()));
    s.end(Stop::Restart);
    eventually("kept, stale, while ferrolb restarts", Duration::from_secs(10), || {
        (stale(&lab) == Some(true)).then_some(())
    });
    let _back = lab.session(peer, gr, peering(), vec![route("198.51.100.100/32")]);
    eventually("fresh again after the new session's End-of-RIB", Duration::from_secs(20), || {
        (stale(&lab) == Some(false)).then_some(())
    });
    drop(_back);

    // Without graceful restart, the same end withdraws at once.
    let lab = Lab::new(Router::Frr);
    let mut s = lab.session(peer, cfg(64512, true, false), peering(), vec![route("198.51.100.100/32")]);
    eventually("advertised", Duration::from_secs(20), || stale(&lab).map(|_| ()));
    s.end(Stop::Restart);
    eventually("gone", Duration::from_secs(10), || stale(&lab).is_none().then_some(()));
}

/// A router that asks for our routes again (ROUTE-REFRESH, RFC 2918, sent by FRR's
/// `clear bgp ... soft in`) gets them again: its count of UPDATEs received from
/// ferrolb grows, and the session stays up.
#[test]
fn a_route_refresh_gets_every_route_again() {
    let lab = Lab::new(Router::Frr);
    let peer: IpAddr = "203.0.113.1".parse().unwrap();
    let s = lab.session(peer, cfg(64512, true, false), peering(), vec![route("198.51.100.100/32")]);
    eventually("advertised", Duration::from_secs(20), || lab.seen("ipv4", "198.51.100.100/32"));
    let stats = |lab: &Lab| -> Option<(u64, u64)> {
        let v = lab.vtysh("show bgp neighbors 203.0.113.2 json")?;
        let m = &v["203.0.113.2"]["messageStats"];
        Some((m["updatesRecv"].as_u64()?, m["routeRefreshSent"].as_u64()?))
    };
    let (updates, refreshes) = stats(&lab).expect("FRR's counters");
    let d = lab.dir.path().display().to_string();
    lab.router.exec(&["vtysh", "--vty_socket", &d, "-c", "clear bgp ipv4 unicast 203.0.113.2 soft in"]).unwrap();
    eventually("FRR asked and got the routes again", Duration::from_secs(10), || {
        let (u, r) = stats(&lab)?;
        (r > refreshes && u > updates).then_some(())
    });
    assert_eq!(s.status().state, State::Established);
    assert!(lab.seen("ipv4", "198.51.100.100/32").is_some());
}

/// eBGP multihop: with the router two hops away (a forwarding namespace between), a
/// session sent with TTL 1 (an external peer expected on the link) never reaches it,
/// and one sent with TTL 255 (multihop) comes up.
#[test]
fn an_external_peer_two_hops_away_needs_multihop() {
    let mut lab = Lab::new(Router::FrrMultihop);
    // Move the router behind a middle namespace: speaker 203.0.113.2 - .1 middle
    // 198.51.100.1 - 198.51.100.2 router.
    let middle = Netns::create(&format!("flbbgm{}", unique_suffix())).unwrap();
    lab.router.exec(&["ip", "link", "set", "eth0", "netns", &middle.name]).unwrap();
    middle.exec(&["ip", "link", "set", "eth0", "up"]).unwrap();
    middle.exec(&["ip", "addr", "add", "203.0.113.1/24", "dev", "eth0"]).unwrap();
    middle
        .exec(&["ip", "link", "add", "eth1", "type", "veth", "peer", "name", "eth0", "netns", &lab.router.name])
        .unwrap();
    middle.exec(&["ip", "addr", "add", "198.51.100.1/24", "dev", "eth1"]).unwrap();
    middle.exec(&["ip", "link", "set", "eth1", "up"]).unwrap();
    middle.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]).unwrap();
    lab.router.exec(&["ip", "addr", "add", "198.51.100.2/24", "dev", "eth0"]).unwrap();
    lab.router.exec(&["ip", "link", "set", "eth0", "up"]).unwrap();
    lab.router.exec(&["ip", "route", "add", "default", "via", "198.51.100.1"]).unwrap();
    lab.speaker.exec(&["ip", "route", "add", "default", "via", "203.0.113.1"]).unwrap();
    let peer: IpAddr = "198.51.100.2".parse().unwrap();

    lab.ttl = Some(1);
    let one = lab.session(peer, cfg(64512, true, false), peering(), vec![route("203.0.113.100/32")]);
    let down = eventually("TTL 1 dies on the way", Duration::from_secs(20), || one.status().last_down);
    assert!(down.starts_with("connection:"), "{down}");
    assert_ne!(one.status().state, State::Established);
    drop(one);

    lab.ttl = Some(255);
    let multi = lab.session(peer, cfg(64512, true, false), peering(), vec![route("203.0.113.100/32")]);
    eventually("Established two hops away", Duration::from_secs(20), || {
        (multi.status().state == State::Established).then_some(())
    });
    let seen = eventually("the route at the router", Duration::from_secs(10), || lab.seen("ipv4", "203.0.113.100/32"));
    assert_eq!(seen.next_hop, "203.0.113.2");
    drop(multi);
    drop(middle);
}
