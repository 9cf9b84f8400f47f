//! The speaker's Prometheus metrics; one registry per process, passed down.

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

use crate::responder::DropReason;

/// Every speaker metric.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// 1 per (service, protocol, node, ip) this node announces.
    pub announced: IntGaugeVec,
    /// ARP requests and NS received per target IP.
    pub requests: IntCounterVec,
    /// Replies sent per IP.
    pub responses: IntCounterVec,
    /// Gratuitous ARP/NA frames sent per IP.
    pub gratuitous: IntCounterVec,
    /// Frames not answered, by reason.
    pub dropped: IntCounterVec,
    /// Live speakers seen.
    pub members: IntGauge,
    /// IPs this node took over.
    pub takeovers: IntCounter,
    /// Heartbeat datagrams sent.
    pub heartbeats_sent: IntCounter,
    /// Heartbeats accepted.
    pub heartbeats_received: IntCounter,
    /// Bytes of memberlist datagrams sent and received (UDP payload).
    pub heartbeat_bytes_sent: IntCounter,
    pub heartbeat_bytes_received: IntCounter,
    /// This speaker's observers and subjects on the heartbeat rings.
    pub ring: IntGaugeVec,
    /// Datagrams on the memberlist port not accepted, by reason.
    pub heartbeats_rejected: IntCounterVec,
    /// Times a peer was judged dead by heartbeats.
    pub peers_dead: IntCounter,
    /// The speakers this one sends heartbeats to (the Lease members), by what heartbeats say of them.
    pub peers: IntGaugeVec,
    /// Interfaces answered on now; 0 tells the peers this node cannot announce.
    pub interfaces: IntGauge,
    /// Membership Lease renewals that failed (the speaker keeps announcing).
    pub lease_renewal_failures: IntCounter,
    /// Assigned IPs by who announces them in this speaker's plan (`self`, `other`, `none`).
    pub planned: IntGaugeVec,
    /// Nodes that may announce at all, as this speaker sees them.
    pub usable_nodes: IntGauge,
    /// Frames in which another host claimed an IP this node announces.
    pub ip_conflicts: IntCounter,
    /// API requests that failed or timed out, by kind.
    pub api_failures: IntCounterVec,
    /// 1 per BGP peer whose session is Established.
    pub bgp_session_up: IntGaugeVec,
    /// Prefixes each BGP peer has from this node.
    pub bgp_announced_prefixes: IntGaugeVec,
    /// 1 per Service IP this node advertises to at least one Established BGP peer.
    pub bgp_advertised: IntGaugeVec,
    /// UPDATE messages sent to each BGP peer.
    pub bgp_updates: IntCounterVec,
    /// 1 per BGP peer whose BFD session is Up.
    pub bfd_session_up: IntGaugeVec,
    /// BFD control packets received from / sent to each peer.
    pub bfd_control_packet_input: IntCounterVec,
    pub bfd_control_packet_output: IntCounterVec,
    /// Times each peer's BFD session came Up / left Up.
    pub bfd_session_up_events: IntCounterVec,
    pub bfd_session_down_events: IntCounterVec,
}

/// What heartbeats say of a member (the `state` label of `ferrolb_memberlist_peers`).
pub const PEER_STATES: [&str; 4] = ["alive", "dead", "unheard", "mismatched"];

/// Reasons a memberlist datagram is not accepted (the `reason` label).
pub const HEARTBEAT_REJECT_REASONS: [&str; 7] =
    ["malformed", "bad_tag", "from_self", "replay", "stale", "not_member", "legacy"];

impl Metrics {
    /// Create and register.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let announced = IntGaugeVec::new(
            Opts::new("ferrolb_speaker_announced", "1 for each Service IP this node announces."),
            &["service", "protocol", "node", "ip"],
        )
        .expect("static definition");
        let per_ip = |n: &str, h: &str| IntCounterVec::new(Opts::new(n, h), &["ip"]).expect("static definition");
        let requests = per_ip(
            "ferrolb_layer2_requests_received_total",
            "ARP requests and neighbor solicitations received for an IP.",
        );
        let responses =
            per_ip("ferrolb_layer2_responses_sent_total", "ARP replies and neighbor advertisements sent for an IP.");
        let gratuitous =
            per_ip("ferrolb_layer2_gratuitous_sent_total", "Gratuitous ARP and unsolicited NA frames sent for an IP.");
        let dropped = IntCounterVec::new(
            Opts::new("ferrolb_layer2_dropped_total", "Received frames not answered, by reason."),
            &["reason"],
        )
        .expect("static definition");
        for r in DropReason::ALL {
            dropped.with_label_values(&[r.as_str()]);
        }
        let members = IntGauge::new("ferrolb_speaker_members", "Speakers whose membership Lease is current.")
            .expect("static definition");
        let takeovers = IntCounter::new("ferrolb_speaker_takeovers_total", "IPs this node started announcing.")
            .expect("static definition");
        let heartbeats_sent =
            IntCounter::new("ferrolb_memberlist_heartbeats_sent_total", "Heartbeat datagrams sent to other speakers.")
                .expect("static definition");
        let heartbeats_received =
            IntCounter::new("ferrolb_memberlist_heartbeats_received_total", "Authenticated heartbeats accepted.")
                .expect("static definition");
        let heartbeat_bytes_sent =
            IntCounter::new("ferrolb_memberlist_sent_bytes_total", "Bytes of memberlist datagrams sent (UDP payload).")
                .expect("static definition");
        let heartbeat_bytes_received = IntCounter::new(
            "ferrolb_memberlist_received_bytes_total",
            "Bytes of memberlist datagrams received (UDP payload), accepted or not.",
        )
        .expect("static definition");
        let ring = IntGaugeVec::new(
            Opts::new(
                "ferrolb_memberlist_ring",
                "This speaker's place on the heartbeat rings: role=observers (the members its heartbeats go to) and \
                 role=subjects (the members it watches).",
            ),
            &["role"],
        )
        .expect("static definition");
        for role in ["observers", "subjects"] {
            ring.with_label_values(&[role]);
        }
        let heartbeats_rejected = IntCounterVec::new(
            Opts::new("ferrolb_memberlist_heartbeats_rejected_total", "Memberlist datagrams not accepted, by reason."),
            &["reason"],
        )
        .expect("static definition");
        for r in HEARTBEAT_REJECT_REASONS {
            heartbeats_rejected.with_label_values(&[r]);
        }
        let peers_dead =
            IntCounter::new("ferrolb_memberlist_peers_dead_total", "Times a peer was judged dead by heartbeats.")
                .expect("static definition");
        let peers = IntGaugeVec::new(
            Opts::new(
                "ferrolb_memberlist_peers",
                "Speakers with a current Lease this one sends heartbeats to, by what heartbeats say: alive, dead, or \
                 unheard (no heartbeat from it or about it yet; their failure is then detected by Lease expiry only).",
            ),
            &["state"],
        )
        .expect("static definition");
        for st in PEER_STATES {
            peers.with_label_values(&[st]);
        }
        let interfaces = IntGauge::new(
            "ferrolb_speaker_interfaces",
            "Interfaces this speaker answers on; 0 means it cannot announce and its peers take its IPs.",
        )
        .expect("static definition");
        let lease_renewal_failures = IntCounter::new(
            "ferrolb_speaker_lease_renewal_failures_total",
            "Membership Lease renewals that failed; the speaker keeps announcing (fail-static).",
        )
        .expect("static definition");
        let planned = IntGaugeVec::new(
            Opts::new(
                "ferrolb_speaker_planned_ips",
                "Assigned IPs in this speaker's plan, by announcer: self, other, or none (no eligible node).",
            ),
            &["announcer"],
        )
        .expect("static definition");
        for a in ["self", "other", "none"] {
            planned.with_label_values(&[a]);
        }
        let usable_nodes = IntGauge::new(
            "ferrolb_speaker_usable_nodes",
            "Nodes that may announce (speaker alive, network available, not excluded), as this speaker sees them.",
        )
        .expect("static definition");
        let ip_conflicts = IntCounter::new(
            "ferrolb_speaker_ip_conflicts_total",
            "ARP packets and neighbor advertisements in which another host claimed an IP this node announces.",
        )
        .expect("static definition");
        let api_failures = IntCounterVec::new(
            Opts::new(
                "ferrolb_speaker_api_failures_total",
                "API requests of the speaker that failed or got no answer within 10 s, by kind.",
            ),
            &["kind"],
        )
        .expect("static definition");
        for k in crate::api::KINDS {
            api_failures.with_label_values(&[k]);
        }
        let per_peer = |n: &str, h: &str| IntGaugeVec::new(Opts::new(n, h), &["peer"]).expect("static definition");
        let bgp_session_up =
            per_peer("ferrolb_bgp_session_up", "1 while the BGP session with the peer is Established, else 0.");
        let bgp_announced_prefixes =
            per_peer("ferrolb_bgp_announced_prefixes", "Prefixes the BGP peer has from this node now.");
        let bgp_advertised = IntGaugeVec::new(
            Opts::new(
                "ferrolb_bgp_advertised",
                "1 for each Service IP this node advertises to at least one Established BGP peer.",
            ),
            &["ip"],
        )
        .expect("static definition");
        let bfd_session_up =
            per_peer("ferrolb_bfd_session_up", "1 while the BFD session with the BGP peer is Up, else 0.");
        let per_peer_counter =
            |n: &str, h: &str| IntCounterVec::new(Opts::new(n, h), &["peer"]).expect("static definition");
        let bfd_control_packet_input =
            per_peer_counter("ferrolb_bfd_control_packet_input_total", "BFD control packets received from the peer.");
        let bfd_control_packet_output =
            per_peer_counter("ferrolb_bfd_control_packet_output_total", "BFD control packets sent to the peer.");
        let bfd_session_up_events =
            per_peer_counter("ferrolb_bfd_session_up_events_total", "Times the BFD session with the peer came Up.");
        let bfd_session_down_events = per_peer_counter(
            "ferrolb_bfd_session_down_events_total",
            "Times the BFD session with the peer left Up (the BGP session is torn down with it).",
        );
        let bgp_updates = per_peer_counter(
            "ferrolb_bgp_updates_total",
            "BGP UPDATE messages sent to the peer (announcements, withdrawals, End-of-RIB).",
        );
        for c in [
            Box::new(announced.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(bgp_updates.clone()),
            Box::new(bfd_session_up.clone()),
            Box::new(bfd_control_packet_input.clone()),
            Box::new(bfd_control_packet_output.clone()),
            Box::new(bfd_session_up_events.clone()),
            Box::new(bfd_session_down_events.clone()),
            Box::new(bgp_advertised.clone()),
            Box::new(bgp_session_up.clone()),
            Box::new(bgp_announced_prefixes.clone()),
            Box::new(api_failures.clone()),
            Box::new(ip_conflicts.clone()),
            Box::new(planned.clone()),
            Box::new(usable_nodes.clone()),
            Box::new(interfaces.clone()),
            Box::new(lease_renewal_failures.clone()),
            Box::new(requests.clone()),
            Box::new(responses.clone()),
            Box::new(gratuitous.clone()),
            Box::new(dropped.clone()),
            Box::new(members.clone()),
            Box::new(takeovers.clone()),
            Box::new(heartbeats_sent.clone()),
            Box::new(heartbeats_received.clone()),
            Box::new(heartbeat_bytes_sent.clone()),
            Box::new(heartbeat_bytes_received.clone()),
            Box::new(ring.clone()),
            Box::new(heartbeats_rejected.clone()),
            Box::new(peers_dead.clone()),
            Box::new(peers.clone()),
        ] {
            registry.register(c).expect("unique names");
        }
        Metrics {
            registry,
            announced,
            requests,
            responses,
            gratuitous,
            dropped,
            members,
            takeovers,
            heartbeats_sent,
            heartbeats_received,
            heartbeat_bytes_sent,
            heartbeat_bytes_received,
            ring,
            heartbeats_rejected,
            peers_dead,
            peers,
            interfaces,
            lease_renewal_failures,
            planned,
            usable_nodes,
            ip_conflicts,
            api_failures,
            bgp_session_up,
            bgp_announced_prefixes,
            bgp_advertised,
            bgp_updates,
            bfd_session_up,
            bfd_control_packet_input,
            bfd_control_packet_output,
            bfd_session_up_events,
            bfd_session_down_events,
        }
    }

    /// Remove one IP's per-IP series (`ferrolb_layer2_*{ip}`): it is no longer announced.
    pub fn forget_ip(&self, ip: &str) {
        for vec in [&self.requests, &self.responses, &self.gratuitous] {
            let _ = vec.remove_label_values(&[ip]);
        }
    }

    /// Remove the per-IP series (`ferrolb_layer2_*{ip}`) of every IP `keep` refuses:
    /// cardinality follows what is announced now, not everything ever announced.
    pub fn forget_ips(&self, keep: impl Fn(&str) -> bool) {
        for vec in [&self.requests, &self.responses, &self.gratuitous] {
            let ips: Vec<String> = prometheus::core::Collector::collect(vec)
                .iter()
                .flat_map(|mf| mf.get_metric().iter())
                .filter_map(|m| m.get_label().iter().find(|l| l.name() == "ip").map(|l| l.value().to_string()))
                .filter(|ip| !keep(ip))
                .collect();
            for ip in ips {
                let _ = vec.remove_label_values(&[&ip]);
            }
        }
    }

    /// Text exposition.
    pub fn render(&self) -> String {
        let mut s = String::new();
        prometheus::TextEncoder::new().encode_utf8(&self.registry.gather(), &mut s).expect("text encoding cannot fail");
        s
    }

    /// [`Metrics::render`] with MetalLB's names too (`--metallb-metrics`); `loaded`: the
    /// configuration is read.
    pub fn render_with_metallb_names(&self, loaded: bool) -> String {
        let mut s = String::new();
        prometheus::TextEncoder::new()
            .encode_utf8(&ferrolb_common::metallb::with_metallb_names(self.registry.gather(), loaded), &mut s)
            .expect("text encoding cannot fail");
        s
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
