//! BGP mode: one session per BGPPeer selected for this node, each advertising the
//! prefixes [`ferrolb_model::bgp::node_routes`] gives it. Sessions are started,
//! kept, restarted (a changed spec) and stopped (a peer gone or no longer
//! selecting this node: Cease, and the router withdraws) as the config changes;
//! at shutdown each ends as its peer allows: without a NOTIFICATION where graceful
//! restart was agreed (the router keeps the routes until the speaker is back),
//! with Cease elsewhere (the router withdraws at once, before the node stops
//! forwarding).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use ferrolb_bgp::bfd_io::{self, Bfd};
use ferrolb_bgp::driver::{self, Endpoint, Status, Stop};
use ferrolb_bgp::session::{Config as SessionConfig, State};
use ferrolb_bgp::update::{Peering, Route};
use ferrolb_model::bgp::{Advertised, BgpPeer, Candidate, CommunityValue, NodeRoutes, Password};
use ferrolb_model::range::Family;
use ferrolb_model::{ingress_ips, is_ours};
use ipnet::IpNet;
use kube::ResourceExt;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::metrics::Metrics;
use crate::plan::{Snapshot, ready_nodes};

/// Restart time offered with graceful restart: how long a router keeps our routes
/// while the speaker restarts (a rolling upgrade takes seconds).
pub const RESTART_TIME: Duration = Duration::from_secs(120);

/// This node's addresses, for router ID and next hops.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeAddrs {
    /// First IPv4 InternalIP.
    pub v4: Option<Ipv4Addr>,
    /// First IPv6 InternalIP.
    pub v6: Option<std::net::Ipv6Addr>,
}

impl NodeAddrs {
    /// From a Node's `status.addresses`.
    pub fn of(node: &k8s_openapi::api::core::v1::Node) -> NodeAddrs {
        let mut out = NodeAddrs::default();
        let addrs = node.status.as_ref().and_then(|s| s.addresses.as_ref()).cloned().unwrap_or_default();
        for a in addrs.iter().filter(|a| a.type_ == "InternalIP") {
            match a.address.parse::<IpAddr>() {
                Ok(IpAddr::V4(v4)) if out.v4.is_none() => out.v4 = Some(v4),
                Ok(IpAddr::V6(v6)) if out.v6.is_none() => out.v6 = Some(v6),
                _ => {}
            }
        }
        out
    }
}

/// Everything a session is made from: a change to any of it restarts the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSpec {
    pub endpoint: Endpoint,
    pub config: SessionConfig,
    pub peering: Peering,
    /// The BFD session beside it (the peer's BFDProfile), if any.
    pub bfd: Option<ferrolb_bgp::bfd::Config>,
}

/// The session towards `peer` from the node at `addrs` (named `node`), with the
/// password read from its Secret when it names one.
pub fn session_spec(peer: &BgpPeer, node: &str, addrs: &NodeAddrs, password: Option<String>) -> SessionSpec {
    let family = Family::of(&peer.address);
    let router_id = peer.router_id.or(addrs.v4).unwrap_or_else(|| router_id_of(node));
    SessionSpec {
        endpoint: Endpoint {
            peer: SocketAddr::new(peer.address, peer.port),
            source: peer.source,
            password,
            ttl: match (peer.internal(), peer.multihop) {
                (_, true) => Some(255),
                (false, false) => Some(1),
                (true, false) => None,
            },
        },
        config: SessionConfig {
            local_asn: peer.my_asn,
            peer_asn: peer.peer_asn,
            router_id,
            hold_time: peer.hold_time,
            keepalive: peer.keepalive,
            connect_retry: peer.connect_time,
            ipv4: peer.carries(Family::V4),
            ipv6: peer.carries(Family::V6),
            graceful_restart: peer.graceful_restart.then_some(RESTART_TIME),
        },
        peering: Peering {
            local_asn: peer.my_asn,
            internal: peer.internal(),
            // The driver puts the session's own local address in for its family.
            next_hop_v4: if family == Family::V4 { peer.source.and_then(v4) } else { None }.or(addrs.v4),
            next_hop_v6: if family == Family::V6 { peer.source.and_then(v6) } else { None }.or(addrs.v6),
        },
        bfd: peer.bfd.as_ref().map(|b| ferrolb_bgp::bfd::Config {
            transmit_interval: b.transmit_interval,
            receive_interval: b.receive_interval,
            detect_mult: b.detect_multiplier,
            passive: b.passive,
        }),
    }
}

fn v4(ip: IpAddr) -> Option<Ipv4Addr> {
    match ip {
        IpAddr::V4(a) => Some(a),
        IpAddr::V6(_) => None,
    }
}

fn v6(ip: IpAddr) -> Option<std::net::Ipv6Addr> {
    match ip {
        IpAddr::V6(a) => Some(a),
        IpAddr::V4(_) => None,
    }
}

/// A BGP identifier for a node without IPv4: a stable hash of its name, never 0.
fn router_id_of(node: &str) -> Ipv4Addr {
    let h = node.bytes().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
    Ipv4Addr::from(h | 0x0100_0000)
}

/// The UPDATE-level routes of one peer.
pub fn routes(prefixes: &BTreeMap<IpNet, Advertised>) -> Vec<Route> {
    prefixes
        .iter()
        .map(|(prefix, a)| Route {
            prefix: *prefix,
            communities: a
                .communities
                .iter()
                .filter_map(|c| match c {
                    CommunityValue::Standard(v) => Some(*v),
                    CommunityValue::Large(..) => None,
                })
                .collect(),
            large_communities: a
                .communities
                .iter()
                .filter_map(|c| match c {
                    CommunityValue::Large(x, y, z) => Some((*x, *y, *z)),
                    CommunityValue::Standard(_) => None,
                })
                .collect(),
            local_pref: a.local_pref,
        })
        .collect()
}

/// Where a peer's password is, resolved: `Err` names what is missing.
pub fn password_of(peer: &BgpPeer, secrets: &BTreeMap<String, Option<String>>) -> Result<Option<String>, String> {
    match &peer.password {
        None => Ok(None),
        Some(Password::Literal(p)) => Ok(Some(p.clone())),
        Some(Password::Secret(name)) => match secrets.get(name) {
            Some(Some(p)) => Ok(Some(p.clone())),
            Some(None) => Err(format!(
                "spec.passwordSecret {name:?} has no key \"password\" (a kubernetes.io/basic-auth Secret); the session is not started"
            )),
            None => Err(format!(
                "spec.passwordSecret {name:?} does not exist (or is not of type kubernetes.io/basic-auth); the session is not started"
            )),
        },
    }
}

/// The sessions wanted: peer name → session and its routes.
pub type Wanted = BTreeMap<String, (SessionSpec, Vec<Route>)>;

struct Running {
    spec: SessionSpec,
    routes: watch::Sender<Vec<Route>>,
    stop: watch::Sender<Stop>,
    status: watch::Receiver<Status>,
    /// The BFD session's status and counts, and the counts last put in the metrics.
    bfd: Option<(watch::Receiver<bfd_io::Status>, std::sync::Arc<bfd_io::Counters>)>,
    bfd_reported: [u64; 4],
    /// UPDATEs sent, as last put in the metrics.
    updates_reported: u64,
    task: JoinHandle<()>,
}

/// The sessions of this node.
pub struct Sessions {
    running: BTreeMap<String, Running>,
    /// The BFD thread, started with the first session that has a BFD profile.
    bfd: Option<Bfd>,
    /// Sessions told to end, until they have.
    ending: Vec<JoinHandle<()>>,
    metrics: Metrics,
    changed: std::sync::Arc<Notify>,
}

impl Sessions {
    /// No sessions yet; `changed` is poked when a session's state changes.
    pub fn new(metrics: Metrics, changed: std::sync::Arc<Notify>) -> Sessions {
        Sessions { running: BTreeMap::new(), bfd: None, ending: Vec::new(), metrics, changed }
    }

    /// Run exactly the sessions of `wanted` (peer → session and routes): start the new,
    /// restart the changed, end (Cease) the others; hand every session its routes.
    pub fn apply(&mut self, wanted: Wanted) {
        let gone: Vec<String> = self
            .running
            .iter()
            .filter(|(name, r)| wanted.get(*name).is_none_or(|(spec, _)| *spec != r.spec))
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            if let Some(r) = self.running.remove(&name) {
                tracing::info!(peer = %name, "BGP session ends (peer removed, changed or no longer selecting this node)");
                r.stop.send_replace(Stop::Withdraw);
                self.ending.push(r.task);
                self.metrics.bgp_session_up.with_label_values(&[&name]).set(0);
                self.metrics.bgp_announced_prefixes.with_label_values(&[&name]).set(0);
                if r.bfd.is_some() {
                    self.metrics.bfd_session_up.with_label_values(&[&name]).set(0);
                }
            }
        }
        self.ending.retain(|t| !t.is_finished());
        for (name, (spec, routes)) in wanted {
            match self.running.get(&name) {
                Some(r) => {
                    r.routes.send_if_modified(|cur| {
                        let changed = *cur != routes;
                        *cur = routes;
                        changed
                    });
                }
                None => {
                    tracing::info!(peer = %name, address = %spec.endpoint.peer, "BGP session starts");
                    let bfd = spec.bfd.and_then(|config| {
                        let thread = self.bfd_thread()?;
                        let peer = spec.endpoint.peer.ip();
                        Some(thread.add(bfd_io::Spec { peer, source: spec.endpoint.source, config }))
                    });
                    let running = self.start(spec, routes, bfd);
                    self.running.insert(name, running);
                }
            }
        }
        self.report();
    }

    /// The BFD thread, started on first use; `None` (logged) if it cannot start.
    fn bfd_thread(&mut self) -> Option<&Bfd> {
        if self.bfd.is_none() {
            match Bfd::spawn() {
                Ok(b) => self.bfd = Some(b),
                Err(e) => tracing::error!(error = %e, "the BFD thread cannot start; sessions run without BFD"),
            }
        }
        self.bfd.as_ref()
    }

    /// Start one session (and hand it its BFD session).
    fn start(&self, spec: SessionSpec, routes: Vec<Route>, bfd: Option<bfd_io::Handle>) -> Running {
        let (routes_tx, routes_rx) = watch::channel(routes);
        let (stop_tx, stop_rx) = watch::channel(Stop::Run);
        let (status_tx, mut status_rx) =
            watch::channel(Status { state: State::Idle, last_down: None, advertised: 0, updates_sent: 0 });
        let changed = self.changed.clone();
        let mut watch_status = status_rx.clone();
        let bfd_seen = bfd.as_ref().map(|h| (h.status.clone(), h.counters.clone()));
        let mut watch_bfd = bfd_seen.as_ref().map(|(s, _)| s.clone());
        let ended_how = stop_rx.clone();
        let run = driver::run(
            spec.endpoint.clone(),
            spec.config.clone(),
            spec.peering,
            routes_rx,
            stop_rx,
            status_tx,
            watch_bfd.clone(),
        );
        let task = tokio::spawn(async move {
            let notify = async move {
                loop {
                    let bfd_changed = async {
                        match watch_bfd.as_mut() {
                            Some(b) => b.changed().await,
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        r = watch_status.changed() => if r.is_err() { break },
                        r = bfd_changed => if r.is_err() { watch_bfd = None },
                    }
                    changed.notify_one();
                }
            };
            tokio::select! {
                _ = run => {}
                _ = notify => {}
            }
            // BGP first (its Cease), then BFD: AdminDown, or silence for a restart the
            // peer is to ride out with graceful restart.
            if let Some(h) = bfd {
                let restart = *ended_how.borrow() == Stop::Restart;
                h.stop(if restart { bfd_io::Stop::Silent } else { bfd_io::Stop::AdminDown });
            }
        });
        status_rx.mark_changed();
        Running {
            spec,
            routes: routes_tx,
            stop: stop_tx,
            status: status_rx,
            bfd: bfd_seen,
            bfd_reported: [0; 4],
            updates_reported: 0,
            task,
        }
    }

    /// Refresh the session metrics; the peers whose session is Established.
    pub fn report(&mut self) -> BTreeSet<String> {
        let mut up = BTreeSet::new();
        for (name, r) in &mut self.running {
            if let Some((status, counters)) = &r.bfd {
                use std::sync::atomic::Ordering::Relaxed;
                let m = &self.metrics;
                let bfd_up = status.borrow().state == ferrolb_bgp::bfd::State::Up;
                m.bfd_session_up.with_label_values(&[name]).set(i64::from(bfd_up));
                let now = [&counters.received, &counters.sent, &counters.ups, &counters.downs].map(|c| c.load(Relaxed));
                let vecs = [
                    &m.bfd_control_packet_input,
                    &m.bfd_control_packet_output,
                    &m.bfd_session_up_events,
                    &m.bfd_session_down_events,
                ];
                for ((v, n), last) in vecs.iter().zip(now).zip(r.bfd_reported.iter_mut()) {
                    v.with_label_values(&[name]).inc_by(n.saturating_sub(*last));
                    *last = n;
                }
            }
            let s = r.status.borrow();
            let est = s.state == State::Established;
            if est {
                up.insert(name.clone());
            }
            self.metrics.bgp_session_up.with_label_values(&[name]).set(i64::from(est));
            self.metrics.bgp_announced_prefixes.with_label_values(&[name]).set(s.advertised as i64);
            let updates = &self.metrics.bgp_updates;
            updates.with_label_values(&[name]).inc_by(s.updates_sent.saturating_sub(r.updates_reported));
            r.updates_reported = s.updates_sent;
        }
        up
    }

    /// Why each session that is not up last went down.
    pub fn down_reasons(&self) -> BTreeMap<String, String> {
        self.running
            .iter()
            .filter_map(|(n, r)| {
                let s = r.status.borrow();
                if s.state == State::Established { None } else { Some((n.clone(), s.last_down.clone()?)) }
            })
            .collect()
    }

    /// End every session, each as its peer allows, and wait (at most `within`) until
    /// they have: with graceful restart agreed, without a NOTIFICATION (the routers keep
    /// the routes while this speaker restarts); otherwise with Cease, so the routers
    /// withdraw the routes, and then [`DRAIN`] more, while this node still forwards,
    /// for their forwarding tables to follow (found in the sandbox: a router's kernel
    /// still sent a new connection to the node a few milliseconds after the Cease).
    /// Whether a session was kept for a restart: the routers still send this node
    /// traffic, and its forwarding must stay for the next speaker.
    pub async fn shutdown(mut self, within: Duration) -> bool {
        let mut kept = false;
        let mut withdrawn = false;
        // Each session's channels stay open until it has ended.
        let mut stopping: Vec<Running> = Vec::new();
        for (name, r) in std::mem::take(&mut self.running) {
            let restart = r.spec.config.graceful_restart.is_some() && r.status.borrow().state == State::Established;
            let how = if restart { Stop::Restart } else { Stop::Withdraw };
            kept |= restart;
            withdrawn |= !restart && r.status.borrow().advertised > 0;
            tracing::info!(peer = %name, ?how, "ending BGP session for shutdown");
            r.stop.send_replace(how);
            stopping.push(r);
        }
        let tasks = stopping.iter_mut().map(|r| &mut r.task).chain(self.ending.iter_mut());
        if tokio::time::timeout(within, futures::future::join_all(tasks)).await.is_err() {
            tracing::warn!("BGP sessions did not end in time");
        }
        drop(stopping);
        if withdrawn {
            tokio::time::sleep(DRAIN).await;
        }
        kept
    }
}

/// How long a stopping speaker keeps forwarding after its routes were withdrawn.
pub const DRAIN: Duration = Duration::from_secs(1);

/// What `node` advertises to each of its peers, from the snapshot: every IP of a
/// Service ferrolb handles (class `lb_class`) whose pool a BGPAdvertisement covers,
/// while the node is usable (network available, not excluded unless
/// `ignore_exclude`); for `externalTrafficPolicy: Local`, only while the node has a
/// ready endpoint of the Service. Every node decides for itself: in BGP mode all
/// eligible nodes advertise, and the routers spread traffic over them.
pub fn node_routes(
    snap: &Snapshot,
    node: &str,
    lb_class: Option<&str>,
    ignore_exclude: bool,
) -> (NodeRoutes, NodeAddrs) {
    let cfg = &snap.config;
    let Some(me) = snap.nodes.iter().find(|n| n.name_any() == node) else {
        return (NodeRoutes::default(), NodeAddrs::default());
    };
    let view = ferrolb_model::announce::NodeView::of(me);
    let usable = !view.network_unavailable && !ferrolb_model::announce::excluded(&view.labels, ignore_exclude);
    let mut candidates = Vec::new();
    for svc in snap.services.iter().filter(|s| is_ours(s, lb_class)) {
        let local = svc.spec.as_ref().and_then(|s| s.external_traffic_policy.as_deref()) == Some("Local");
        let allowed = !local || ready_nodes(svc, &snap.slices).contains(node);
        for ip in ingress_ips(svc) {
            if let Some(pool) = cfg.pool_of(&ip) {
                candidates.push(Candidate { ip, pool: &pool.name, pool_labels: &pool.labels, allowed });
            }
        }
    }
    let routes =
        ferrolb_model::bgp::node_routes(&cfg.bgp_peers, &cfg.bgp_advertisements, &view.labels, usable, candidates);
    (routes, NodeAddrs::of(me))
}

/// The Services whose IPs this node advertises to at least one peer in `up`, each
/// with those peers.
pub fn services_advertised(
    services: &[std::sync::Arc<k8s_openapi::api::core::v1::Service>],
    routes: &NodeRoutes,
    up: &BTreeSet<String>,
) -> BTreeMap<ferrolb_model::ServiceKey, BTreeSet<String>> {
    let mut out: BTreeMap<ferrolb_model::ServiceKey, BTreeSet<String>> = BTreeMap::new();
    for svc in services {
        for ip in ingress_ips(svc) {
            let Some(peers) = routes.ips.get(&ip) else { continue };
            let live: BTreeSet<String> = peers.intersection(up).cloned().collect();
            if !live.is_empty() {
                out.entry(ferrolb_model::ServiceKey::of(svc)).or_default().extend(live);
            }
        }
    }
    out
}

/// What one pass gives the sessions: per selected peer, the session and its routes;
/// the peers left out for want of their password Secret, with why.
pub fn wanted(
    node: &str,
    addrs: &NodeAddrs,
    peers: &[BgpPeer],
    routes_of: &NodeRoutes,
    secrets: &BTreeMap<String, Option<String>>,
) -> (Wanted, BTreeMap<String, String>) {
    let mut out = BTreeMap::new();
    let mut refused = BTreeMap::new();
    for (name, prefixes) in &routes_of.peers {
        let Some(peer) = peers.iter().find(|p| &p.name == name) else { continue };
        match password_of(peer, secrets) {
            Ok(pw) => {
                out.insert(name.clone(), (session_spec(peer, node, addrs, pw), routes(prefixes)));
            }
            Err(why) => {
                refused.insert(name.clone(), why);
            }
        }
    }
    (out, refused)
}

/// What each peer's session was last reported as: `None` up, `Some(why)` down.
pub type Reported = BTreeMap<String, Option<String>>;

/// The session changes worth an Event since `reported`: (peer, up, why). A session
/// that has not yet been up or down (dialing for the first time) is not reported; a
/// reason repeated is reported once.
pub fn transitions(
    reported: &mut Reported,
    up: &BTreeSet<String>,
    down: &BTreeMap<String, String>,
) -> Vec<(String, bool, Option<String>)> {
    let mut out = Vec::new();
    let mut now: Reported = BTreeMap::new();
    for p in up {
        now.insert(p.clone(), None);
    }
    for (p, why) in down {
        now.insert(p.clone(), Some(why.clone()));
    }
    for (p, state) in &now {
        if reported.get(p) != Some(state) {
            out.push((p.clone(), state.is_none(), state.clone()));
        }
    }
    // Peers neither up nor down (dialing) keep their last report.
    for (p, state) in now {
        reported.insert(p, state);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn each_change_of_a_session_is_reported_once() {
        let mut rep = Reported::new();
        let up: BTreeSet<String> = ["r1".to_string()].into();
        let down: BTreeMap<String, String> = [("r2".to_string(), "hold timer expired".to_string())].into();
        assert_eq!(transitions(&mut rep, &up, &down).len(), 2);
        assert!(transitions(&mut rep, &up, &down).is_empty());
        let flipped = transitions(&mut rep, &BTreeSet::new(), &[("r1".to_string(), "Cease".to_string())].into());
        assert_eq!(flipped, vec![("r1".to_string(), false, Some("Cease".to_string()))]);
    }

    use super::*;

    fn peer(internal: bool, multihop: bool) -> BgpPeer {
        BgpPeer {
            name: "r1".into(),
            my_asn: 64512,
            peer_asn: if internal { 64512 } else { 64513 },
            address: "198.51.100.1".parse().unwrap(),
            port: 179,
            source: None,
            hold_time: Duration::from_secs(9),
            keepalive: None,
            connect_time: Duration::from_secs(1),
            router_id: None,
            node_selectors: vec![],
            password: None,
            multihop,
            graceful_restart: true,
            disable_mp: false,
            bfd: None,
        }
    }

    #[test]
    fn sessions_take_ttl_router_id_and_next_hops_from_peer_and_node() {
        let addrs = NodeAddrs { v4: Some("198.51.100.11".parse().unwrap()), v6: Some("fd42:f1b::11".parse().unwrap()) };
        let s = session_spec(&peer(false, false), "n1", &addrs, None);
        assert_eq!(s.endpoint.ttl, Some(1));
        assert_eq!(s.config.router_id, addrs.v4.unwrap());
        assert_eq!((s.config.ipv4, s.config.ipv6), (true, true));
        assert_eq!(s.config.graceful_restart, Some(RESTART_TIME));
        assert_eq!((s.peering.next_hop_v4, s.peering.next_hop_v6), (addrs.v4, addrs.v6));
        assert_eq!(session_spec(&peer(false, true), "n1", &addrs, None).endpoint.ttl, Some(255));
        assert_eq!(session_spec(&peer(true, false), "n1", &addrs, None).endpoint.ttl, None);
        let v6_only = session_spec(&peer(false, false), "n1", &NodeAddrs::default(), None);
        assert_ne!(v6_only.config.router_id, Ipv4Addr::UNSPECIFIED);
        assert_eq!(v6_only.config.router_id, router_id_of("n1"));
    }

    #[test]
    fn a_missing_password_secret_is_named() {
        let mut p = peer(false, false);
        p.password = Some(Password::Secret("bgp-pw".into()));
        let none = BTreeMap::new();
        assert!(password_of(&p, &none).unwrap_err().contains("\"bgp-pw\" does not exist"));
        let nokey = [("bgp-pw".to_string(), None)].into();
        assert!(password_of(&p, &nokey).unwrap_err().contains("no key"));
        let ok = [("bgp-pw".to_string(), Some("s3cret".to_string()))].into();
        assert_eq!(password_of(&p, &ok), Ok(Some("s3cret".into())));
    }

    #[test]
    fn attributes_split_into_standard_and_large_communities() {
        let net: IpNet = "198.51.100.7/32".parse().unwrap();
        let a = Advertised {
            communities: [CommunityValue::Standard(7), CommunityValue::Large(1, 2, 3)].into(),
            local_pref: Some(100),
        };
        let r = routes(&[(net, a)].into());
        assert_eq!(r[0].communities, vec![7]);
        assert_eq!(r[0].large_communities, vec![(1, 2, 3)]);
        assert_eq!(r[0].local_pref, Some(100));
    }
}
