//! BGPPeers, BGPAdvertisements and Communities, validated, and what one node
//! advertises to each of its peers. Pure: the speaker dials and sends; this
//! decides. Every invalid object is reported with the field at fault and left
//! out; the others keep working.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use ipnet::IpNet;
use kube::ResourceExt;

use crate::range::{Family, IpRange};
use crate::selector::{Labels, Selector, any_matches, parse_all};

/// Default hold time (RFC 4271's suggestion, MetalLB's default).
pub const DEFAULT_HOLD_TIME: Duration = Duration::from_secs(90);
/// Default wait between connection attempts.
pub const DEFAULT_CONNECT_TIME: Duration = Duration::from_secs(10);

/// Where a peer's TCP MD5 password comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Password {
    /// `spec.password`.
    Literal(String),
    /// `spec.passwordSecret`: the Secret's name (in ferrolb's namespace), key `password`.
    Secret(String),
}

/// A valid BGPPeer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BgpPeer {
    /// The object's name.
    pub name: String,
    /// `spec.myASN`.
    pub my_asn: u32,
    /// `spec.peerASN`.
    pub peer_asn: u32,
    /// `spec.peerAddress`.
    pub address: IpAddr,
    /// `spec.peerPort` (179).
    pub port: u16,
    /// `spec.sourceAddress`.
    pub source: Option<IpAddr>,
    /// `spec.holdTime`.
    pub hold_time: Duration,
    /// `spec.keepaliveTime` (default: a third of the negotiated hold time).
    pub keepalive: Option<Duration>,
    /// `spec.connectTime`.
    pub connect_time: Duration,
    /// `spec.routerID`.
    pub router_id: Option<Ipv4Addr>,
    /// `spec.nodeSelectors`.
    pub node_selectors: Vec<Selector>,
    /// `spec.password` / `spec.passwordSecret`.
    pub password: Option<Password>,
    /// `spec.ebgpMultiHop`.
    pub multihop: bool,
    /// `spec.enableGracefulRestart`.
    pub graceful_restart: bool,
    /// `spec.disableMP`.
    pub disable_mp: bool,
    /// `spec.bfdProfile`, resolved.
    pub bfd: Option<BfdProfile>,
}

/// BFD profiles by name: valid ones, or why not.
pub type BfdProfiles = BTreeMap<String, Result<BfdProfile, String>>;

/// A valid BFDProfile: the timers of a BFD session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BfdProfile {
    /// The object's name.
    pub name: String,
    /// `spec.receiveInterval` (300 ms).
    pub receive_interval: Duration,
    /// `spec.transmitInterval` (300 ms).
    pub transmit_interval: Duration,
    /// `spec.detectMultiplier` (3).
    pub detect_multiplier: u8,
    /// `spec.passiveMode`.
    pub passive: bool,
    /// `spec.minimumTtl` (254): multi-hop sessions only.
    pub minimum_ttl: u8,
}

impl BfdProfile {
    /// Parse a BFDProfile; the error names the field at fault.
    pub fn parse(p: &ferrolb_crds::BFDProfile) -> Result<BfdProfile, String> {
        let s = &p.spec;
        let ms = |field: &str, v: Option<u32>, default: u32| -> Result<Duration, String> {
            let v = v.unwrap_or(default);
            if (10..=60_000).contains(&v) {
                Ok(Duration::from_millis(u64::from(v)))
            } else {
                Err(format!("{field} {v}: must be 10-60000 (milliseconds)"))
            }
        };
        let receive_interval = ms("spec.receiveInterval", s.receive_interval, 300)?;
        let transmit_interval = ms("spec.transmitInterval", s.transmit_interval, 300)?;
        ms("spec.echoInterval", s.echo_interval, 50)?;
        let detect_multiplier = match s.detect_multiplier.unwrap_or(3) {
            v @ 2..=255 => v as u8,
            v => return Err(format!("spec.detectMultiplier {v}: must be 2-255")),
        };
        let minimum_ttl = match s.minimum_ttl.unwrap_or(254) {
            v @ 1..=254 => v as u8,
            v => return Err(format!("spec.minimumTtl {v}: must be 1-254")),
        };
        if s.echo_mode == Some(true) {
            return Err("spec.echoMode: the echo function is not supported by ferrolb; set it to false or remove it \
                        (asynchronous mode detects failures in transmitInterval x detectMultiplier)"
                .into());
        }
        Ok(BfdProfile {
            name: p.name_any(),
            receive_interval,
            transmit_interval,
            detect_multiplier,
            passive: s.passive_mode.unwrap_or(false),
            minimum_ttl,
        })
    }

    /// All the profiles of a namespace, each valid or with why not.
    pub fn parse_all(profiles: &[ferrolb_crds::BFDProfile]) -> BfdProfiles {
        profiles.iter().map(|p| (p.name_any(), BfdProfile::parse(p))).collect()
    }
}

impl BgpPeer {
    /// Internal BGP: both sides in one AS.
    pub fn internal(&self) -> bool {
        self.my_asn == self.peer_asn
    }

    /// Whether the speaker of a node with `labels` peers with this router.
    pub fn selects_node(&self, labels: &Labels) -> bool {
        any_matches(&self.node_selectors, labels)
    }

    /// Whether prefixes of `family` go over this peer's session: its own family always;
    /// the other over multiprotocol BGP unless `disableMP`.
    pub fn carries(&self, family: Family) -> bool {
        Family::of(&self.address) == family || !self.disable_mp
    }

    /// Parse a BGPPeer of `namespace`, with the BFD profiles there; the error names the
    /// field at fault.
    pub fn parse(p: &ferrolb_crds::BGPPeer, namespace: &str, bfd_profiles: &BfdProfiles) -> Result<BgpPeer, String> {
        let s = &p.spec;
        let ip = |field: &str, v: &str| -> Result<IpAddr, String> {
            v.trim().parse().map_err(|_| format!("{field} {v:?} is not an IP address"))
        };
        let asn = |field: &str, v: u32| -> Result<u32, String> {
            if v == 0 || v == u32::from(u16::MAX) || v == u32::MAX || v == AS_TRANS {
                Err(format!("{field} {v} is reserved"))
            } else {
                Ok(v)
            }
        };
        let duration =
            |field: &str, v: &Option<String>, default: Option<Duration>| -> Result<Option<Duration>, String> {
                match v {
                    None => Ok(default),
                    Some(v) => parse_go_duration(v).map(Some).map_err(|why| format!("{field} {v:?}: {why}")),
                }
            };
        let hold_time = duration("spec.holdTime", &s.hold_time, Some(DEFAULT_HOLD_TIME))?.unwrap_or(DEFAULT_HOLD_TIME);
        if !hold_time.is_zero() && hold_time < Duration::from_secs(3) {
            return Err(format!("spec.holdTime {hold_time:?}: must be 0 or at least 3s (RFC 4271)"));
        }
        if hold_time > Duration::from_secs(65535) {
            return Err(format!("spec.holdTime {hold_time:?}: at most 65535s"));
        }
        let keepalive = duration("spec.keepaliveTime", &s.keepalive_time, None)?;
        if let Some(k) = keepalive
            && !hold_time.is_zero()
            && k >= hold_time
        {
            return Err(format!("spec.keepaliveTime {k:?} must be shorter than spec.holdTime {hold_time:?}"));
        }
        let connect_time =
            duration("spec.connectTime", &s.connect_time, Some(DEFAULT_CONNECT_TIME))?.unwrap_or(DEFAULT_CONNECT_TIME);
        if connect_time < Duration::from_millis(100) || connect_time > Duration::from_secs(65535) {
            return Err(format!("spec.connectTime {connect_time:?}: must be between 100ms and 65535s"));
        }
        let address = ip("spec.peerAddress", &s.peer_address)?;
        let source = s.source_address.as_deref().map(|v| ip("spec.sourceAddress", v)).transpose()?;
        if let Some(src) = source
            && Family::of(&src) != Family::of(&address)
        {
            return Err(format!("spec.sourceAddress {src} is not of the family of spec.peerAddress {address}"));
        }
        let router_id = match s.router_id.as_deref() {
            None => None,
            Some(v) => match ip("spec.routerID", v)? {
                IpAddr::V4(id) if !id.is_unspecified() => Some(id),
                other => return Err(format!("spec.routerID {other}: must be a non-zero IPv4 address")),
            },
        };
        let password = match (&s.password, &s.password_secret) {
            (Some(_), Some(_)) => return Err("spec.password and spec.passwordSecret are mutually exclusive".into()),
            (Some(p), None) => Some(Password::Literal(p.clone())),
            (None, Some(r)) => {
                if let Some(ns) = r.namespace.as_deref().filter(|ns| *ns != namespace) {
                    return Err(format!(
                        "spec.passwordSecret.namespace {ns:?}: the speakers read Secrets of {namespace:?} only"
                    ));
                }
                Some(Password::Secret(r.name.clone()))
            }
            (None, None) => None,
        };
        if let Some(Password::Literal(p)) = &password
            && (p.is_empty() || p.len() > 80)
        {
            return Err("spec.password: 1-80 bytes (TCP MD5 keys are at most 80)".into());
        }
        let bfd = match &s.bfd_profile {
            None => None,
            Some(b) => match bfd_profiles.get(b) {
                None => {
                    return Err(format!(
                        "spec.bfdProfile {b:?}: no BFDProfile of that name in {namespace:?}; create it, or remove the \
                         field to peer without BFD (failures are then found by the hold timer)"
                    ));
                }
                Some(Err(why)) => return Err(format!("spec.bfdProfile {b:?}: the BFDProfile is invalid: {why}")),
                Some(Ok(_)) if s.ebgp_multi_hop => {
                    return Err(format!(
                        "spec.bfdProfile {b:?}: BFD over several hops (RFC 5883) is not supported with \
                         spec.ebgpMultiHop; remove one of them"
                    ));
                }
                Some(Ok(profile)) => Some(profile.clone()),
            },
        };
        Ok(BgpPeer {
            name: p.name_any(),
            my_asn: asn("spec.myASN", s.my_asn)?,
            peer_asn: asn("spec.peerASN", s.peer_asn)?,
            address,
            port: s.peer_port.unwrap_or(179),
            source,
            hold_time,
            keepalive,
            connect_time,
            router_id,
            node_selectors: parse_all("spec.nodeSelectors", &s.node_selectors)?,
            password,
            multihop: s.ebgp_multi_hop,
            graceful_restart: s.enable_graceful_restart,
            disable_mp: s.disable_mp,
            bfd,
        })
    }
}

/// `AS_TRANS` (RFC 6793): reserved, never a speaker's own AS.
const AS_TRANS: u32 = 23456;

/// A Go duration (`metav1.Duration`'s text): `90s`, `1m30s`, `500ms`, `1.5h`.
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err("empty duration".into());
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_len);
        let n: f64 = num.parse().map_err(|_| format!("{s:?} is not a duration such as 90s or 1m30s"))?;
        let unit_len = tail.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(format!("{s:?}: unknown unit {unit:?} (ns, us, ms, s, m, h)")),
        };
        total += n * scale;
        rest = tail;
    }
    if !total.is_finite() || total > 1e9 {
        return Err(format!("{s:?} is too long"));
    }
    Ok(Duration::from_secs_f64(total))
}

/// A community value: standard (RFC 1997) or large (RFC 8092).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CommunityValue {
    /// `65000:100`, as the 32-bit value.
    Standard(u32),
    /// `large:65000:1:2`.
    Large(u32, u32, u32),
}

/// Parse `65000:100` or `large:65000:1:2`.
pub fn parse_community(s: &str) -> Result<CommunityValue, String> {
    let parts: Vec<&str> = s.trim().split(':').collect();
    match parts.as_slice() {
        [a, b] => {
            let half = |v: &str| v.parse::<u16>().map_err(|_| format!("{s:?}: {v:?} is not a number 0-65535"));
            Ok(CommunityValue::Standard((u32::from(half(a)?) << 16) | u32::from(half(b)?)))
        }
        ["large", a, b, c] => {
            let full = |v: &str| v.parse::<u32>().map_err(|_| format!("{s:?}: {v:?} is not a number 0-4294967295"));
            Ok(CommunityValue::Large(full(a)?, full(b)?, full(c)?))
        }
        _ => Err(format!("{s:?} is neither a community (65000:100) nor a large one (large:65000:1:2)")),
    }
}

/// A valid BGPAdvertisement.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BgpAdvertisement {
    /// The object's name.
    pub name: String,
    /// `spec.aggregationLength` (32).
    pub aggregation_v4: u8,
    /// `spec.aggregationLengthV6` (128).
    pub aggregation_v6: u8,
    /// `spec.localPref`.
    pub local_pref: Option<u32>,
    /// `spec.communities`, resolved.
    pub communities: BTreeSet<CommunityValue>,
    /// Pools by name.
    pub pools: Vec<String>,
    /// Pools by label.
    pub pool_selectors: Vec<Selector>,
    /// Nodes that advertise (empty: all).
    pub node_selectors: Vec<Selector>,
    /// Peers by name (empty: all of the node's).
    pub peers: Vec<String>,
}

impl BgpAdvertisement {
    /// Whether the advertisement covers the pool `pool` with `labels` (none named and
    /// none selected: every pool).
    pub fn covers(&self, pool: &str, labels: &Labels) -> bool {
        (self.pools.is_empty() && self.pool_selectors.is_empty())
            || self.pools.iter().any(|p| p == pool)
            || self.pool_selectors.iter().any(|s| s.matches(labels))
    }

    /// Whether a node with `labels` advertises for it.
    pub fn selects_node(&self, labels: &Labels) -> bool {
        any_matches(&self.node_selectors, labels)
    }

    /// The prefix `ip` is advertised as.
    pub fn prefix_of(&self, ip: IpAddr) -> IpNet {
        let len = match ip {
            IpAddr::V4(_) => self.aggregation_v4,
            IpAddr::V6(_) => self.aggregation_v6,
        };
        IpNet::new(ip, len).expect("lengths are checked at parse").trunc()
    }

    /// Parse a BGPAdvertisement, resolving community aliases; the error names the field.
    pub fn parse(
        a: &ferrolb_crds::BGPAdvertisement,
        aliases: &BTreeMap<String, CommunityValue>,
    ) -> Result<BgpAdvertisement, String> {
        let s = &a.spec;
        let aggregation_v4 = s.aggregation_length.unwrap_or(32);
        if aggregation_v4 > 32 {
            return Err(format!("spec.aggregationLength {aggregation_v4}: at most 32"));
        }
        let aggregation_v6 = s.aggregation_length_v6.unwrap_or(128);
        if aggregation_v6 > 128 {
            return Err(format!("spec.aggregationLengthV6 {aggregation_v6}: at most 128"));
        }
        let mut communities = BTreeSet::new();
        for (i, c) in s.communities.iter().enumerate() {
            let v = match aliases.get(c.trim()) {
                Some(v) => *v,
                None if c.contains(':') => parse_community(c).map_err(|e| format!("spec.communities[{i}] {e}"))?,
                None => return Err(format!("spec.communities[{i}] {c:?}: no Community defines this alias")),
            };
            communities.insert(v);
        }
        Ok(BgpAdvertisement {
            name: a.name_any(),
            aggregation_v4,
            aggregation_v6,
            local_pref: s.local_pref,
            communities,
            pools: s.ip_address_pools.clone(),
            pool_selectors: parse_all("spec.ipAddressPoolSelectors", &s.ip_address_pool_selectors)?,
            node_selectors: parse_all("spec.nodeSelectors", &s.node_selectors)?,
            peers: s.peers.clone(),
        })
    }

    /// Why the aggregation length does not fit `range` of pool `pool`: every aggregate
    /// that holds an address of the pool must lie inside the pool, or the routers would
    /// send this cluster traffic for addresses it does not own.
    pub fn aggregation_misfit(&self, pool: &str, range: &IpRange) -> Option<String> {
        let (len, bits, field) = match range.family {
            Family::V4 => (self.aggregation_v4, 32u32, "spec.aggregationLength"),
            Family::V6 => (self.aggregation_v6, 128u32, "spec.aggregationLengthV6"),
        };
        let host_bits = bits - u32::from(len);
        let block: u128 = if host_bits >= 128 { u128::MAX } else { (1u128 << host_bits) - 1 };
        let aligned = range.start & block == 0 && (range.end & block) == block;
        (!aligned).then(|| {
            format!(
                "{field} {len}: IPAddressPool {pool} range {range} does not fill whole /{len} prefixes, so the \
                 aggregate would claim addresses outside the pool"
            )
        })
    }
}

/// The attributes of one advertised prefix.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Advertised {
    /// Communities of every advertisement that gives this prefix.
    pub communities: BTreeSet<CommunityValue>,
    /// The highest LOCAL_PREF among them.
    pub local_pref: Option<u32>,
}

/// What a node advertises to each of its peers: peer name → prefix → attributes,
/// and the IPs advertised (to at least one peer) with the peers of each.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeRoutes {
    /// Per peer, its prefixes.
    pub peers: BTreeMap<String, BTreeMap<IpNet, Advertised>>,
    /// Per advertised IP, the peers it goes to.
    pub ips: BTreeMap<IpAddr, BTreeSet<String>>,
}

/// One of the node's Service IPs to consider: its pool and labels, and whether this
/// node may advertise it under the Service's traffic policy (`Cluster`: always;
/// `Local`: only with a ready endpoint here).
#[derive(Debug, Clone)]
pub struct Candidate<'a> {
    /// The IP.
    pub ip: IpAddr,
    /// Its pool.
    pub pool: &'a str,
    /// That pool's labels.
    pub pool_labels: &'a Labels,
    /// The policy allows this node.
    pub allowed: bool,
}

/// The routes of the node with `labels` (`usable`: not excluded, network available):
/// each candidate IP to each peer selected for the node and named (or not restricted)
/// by an advertisement that covers the IP's pool and selects the node.
pub fn node_routes<'a>(
    cfg_peers: &[BgpPeer],
    adverts: &[BgpAdvertisement],
    labels: &Labels,
    usable: bool,
    candidates: impl IntoIterator<Item = Candidate<'a>>,
) -> NodeRoutes {
    let mut out = NodeRoutes::default();
    let peers: Vec<&BgpPeer> = cfg_peers.iter().filter(|p| p.selects_node(labels)).collect();
    for p in &peers {
        out.peers.insert(p.name.clone(), BTreeMap::new());
    }
    if !usable {
        return out;
    }
    for c in candidates.into_iter().filter(|c| c.allowed) {
        for a in adverts.iter().filter(|a| a.covers(c.pool, c.pool_labels) && a.selects_node(labels)) {
            let prefix = a.prefix_of(c.ip);
            for p in peers.iter().filter(|p| a.peers.is_empty() || a.peers.contains(&p.name)) {
                if !p.carries(Family::of(&c.ip)) {
                    continue;
                }
                let attrs = out.peers.entry(p.name.clone()).or_default().entry(prefix).or_default();
                attrs.communities.extend(a.communities.iter().copied());
                attrs.local_pref = attrs.local_pref.max(a.local_pref);
                out.ips.entry(c.ip).or_default().insert(p.name.clone());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrolb_crds::{BGPAdvertisementSpec, BGPPeerSpec};

    fn peer(spec: BGPPeerSpec) -> Result<BgpPeer, String> {
        BgpPeer::parse(&ferrolb_crds::BGPPeer::new("r1", spec), "ferrolb-system", &BfdProfiles::new())
    }

    fn profile(spec: ferrolb_crds::BFDProfileSpec) -> Result<BfdProfile, String> {
        BfdProfile::parse(&ferrolb_crds::BFDProfile::new("fast", spec))
    }

    #[test]
    fn bfd_profiles_default_as_metallb_and_name_bad_fields() {
        use ferrolb_crds::BFDProfileSpec;
        let p = profile(BFDProfileSpec::default()).unwrap();
        assert_eq!(
            (p.receive_interval, p.transmit_interval, p.detect_multiplier, p.passive, p.minimum_ttl),
            (Duration::from_millis(300), Duration::from_millis(300), 3, false, 254)
        );
        let bad = |spec: BFDProfileSpec, field: &str| {
            let e = profile(spec).unwrap_err();
            assert!(e.contains(field), "{e} does not name {field}");
        };
        bad(BFDProfileSpec { receive_interval: Some(5), ..Default::default() }, "spec.receiveInterval");
        bad(BFDProfileSpec { transmit_interval: Some(60_001), ..Default::default() }, "spec.transmitInterval");
        bad(BFDProfileSpec { detect_multiplier: Some(1), ..Default::default() }, "spec.detectMultiplier");
        bad(BFDProfileSpec { detect_multiplier: Some(256), ..Default::default() }, "spec.detectMultiplier");
        bad(BFDProfileSpec { minimum_ttl: Some(255), ..Default::default() }, "spec.minimumTtl");
        bad(BFDProfileSpec { echo_mode: Some(true), ..Default::default() }, "spec.echoMode");
        assert!(profile(BFDProfileSpec { echo_mode: Some(false), ..Default::default() }).is_ok());
    }

    #[test]
    fn a_peer_takes_its_bfd_profile_or_says_why_not() {
        use ferrolb_crds::BFDProfileSpec;
        let fast = BFDProfileSpec { receive_interval: Some(50), transmit_interval: Some(50), ..Default::default() };
        let profiles = BfdProfile::parse_all(&[
            ferrolb_crds::BFDProfile::new("fast", fast),
            ferrolb_crds::BFDProfile::new("echo", BFDProfileSpec { echo_mode: Some(true), ..Default::default() }),
        ]);
        let with = |name: &str, multihop: bool| {
            let spec = BGPPeerSpec { bfd_profile: Some(name.into()), ebgp_multi_hop: multihop, ..base() };
            BgpPeer::parse(&ferrolb_crds::BGPPeer::new("r1", spec), "ferrolb-system", &profiles)
        };
        let p = with("fast", false).unwrap();
        assert_eq!(p.bfd.map(|b| b.transmit_interval), Some(Duration::from_millis(50)));
        let missing = with("slow", false).unwrap_err();
        assert!(missing.contains("spec.bfdProfile \"slow\": no BFDProfile"), "{missing}");
        let invalid = with("echo", false).unwrap_err();
        assert!(invalid.contains("spec.bfdProfile \"echo\"") && invalid.contains("spec.echoMode"), "{invalid}");
        assert!(with("fast", true).unwrap_err().contains("spec.ebgpMultiHop"));
    }

    fn base() -> BGPPeerSpec {
        BGPPeerSpec { my_asn: 64512, peer_asn: 64513, peer_address: "198.51.100.1".into(), ..Default::default() }
    }

    #[test]
    fn go_durations_parse_as_kubernetes_writes_them() {
        assert_eq!(parse_go_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_go_duration("0"), Ok(Duration::ZERO));
        assert!(parse_go_duration("90").is_err());
        assert!(parse_go_duration("1d").unwrap_err().contains("unknown unit"));
        assert!(parse_go_duration("").is_err());
        assert!(parse_go_duration("9999999999h").is_err());
    }

    #[test]
    fn a_peer_takes_defaults_and_every_bad_field_is_named() {
        let p = peer(base()).unwrap();
        assert_eq!(
            (p.port, p.hold_time, p.connect_time, p.internal()),
            (179, DEFAULT_HOLD_TIME, DEFAULT_CONNECT_TIME, false)
        );
        let bad = |f: fn(&mut BGPPeerSpec), field: &str| {
            let mut s = base();
            f(&mut s);
            let e = peer(s).unwrap_err();
            assert!(e.contains(field), "{e} does not name {field}");
        };
        bad(|s| s.peer_address = "router".into(), "spec.peerAddress");
        bad(|s| s.my_asn = 23456, "spec.myASN");
        bad(|s| s.peer_asn = 0, "spec.peerASN");
        bad(|s| s.hold_time = Some("2s".into()), "spec.holdTime");
        bad(|s| s.hold_time = Some("soon".into()), "spec.holdTime");
        bad(
            |s| {
                s.hold_time = Some("9s".into());
                s.keepalive_time = Some("9s".into())
            },
            "spec.keepaliveTime",
        );
        bad(|s| s.source_address = Some("fd42:f1b::11".into()), "spec.sourceAddress");
        bad(|s| s.router_id = Some("fd42:f1b::1".into()), "spec.routerID");
        bad(|s| s.bfd_profile = Some("fast".into()), "spec.bfdProfile");
        bad(
            |s| {
                s.password = Some("a".into());
                s.password_secret = Some(ferrolb_crds::SecretReference { name: "s".into(), namespace: None })
            },
            "spec.passwordSecret",
        );
        bad(
            |s| {
                s.password_secret =
                    Some(ferrolb_crds::SecretReference { name: "s".into(), namespace: Some("x".into()) })
            },
            "spec.passwordSecret.namespace",
        );
        bad(
            |s| {
                s.node_selectors = vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
                    match_labels: Some([("bad key!".to_string(), "v".to_string())].into()),
                    ..Default::default()
                }]
            },
            "spec.nodeSelectors",
        );
    }

    #[test]
    fn communities_parse_standard_large_and_aliases() {
        assert_eq!(parse_community("65535:65282"), Ok(CommunityValue::Standard(0xffff_ff02)));
        assert_eq!(parse_community("large:64512:1:2"), Ok(CommunityValue::Large(64512, 1, 2)));
        assert!(parse_community("65536:1").is_err());
        assert!(parse_community("1:2:3").is_err());
        let aliases = [("no-advertise".to_string(), CommunityValue::Standard(0xffff_ff02))].into();
        let adv = |c: &[&str]| {
            let spec =
                BGPAdvertisementSpec { communities: c.iter().map(|s| s.to_string()).collect(), ..Default::default() };
            BgpAdvertisement::parse(&ferrolb_crds::BGPAdvertisement::new("a", spec), &aliases)
        };
        let a = adv(&["no-advertise", "64512:7"]).unwrap();
        assert_eq!(a.communities.len(), 2);
        assert!(adv(&["unknown"]).unwrap_err().contains("spec.communities[0]"));
        assert!(adv(&["64512:70000"]).unwrap_err().contains("spec.communities[0]"));
    }

    #[test]
    fn aggregation_must_fill_whole_prefixes_of_the_pool() {
        let a = BgpAdvertisement { aggregation_v4: 24, aggregation_v6: 120, ..Default::default() };
        let r = |s: &str| crate::range::parse_range(s).unwrap();
        assert_eq!(a.aggregation_misfit("p", &r("198.51.100.0/24")), None);
        assert_eq!(a.aggregation_misfit("p", &r("198.51.100.0/23")), None);
        assert!(a.aggregation_misfit("p", &r("198.51.100.0/25")).unwrap().contains("spec.aggregationLength 24"));
        assert!(a.aggregation_misfit("p", &r("198.51.100.10-198.51.100.20")).is_some());
        assert!(a.aggregation_misfit("p", &r("fd42:f1b::/121")).unwrap().contains("spec.aggregationLengthV6"));
        assert_eq!(a.prefix_of("198.51.100.77".parse().unwrap()).to_string(), "198.51.100.0/24");
        let all = BgpAdvertisement { aggregation_v4: 0, aggregation_v6: 0, ..Default::default() };
        assert!(all.aggregation_misfit("p", &r("0.0.0.0/0")).is_none());
    }

    fn sel(k: &str, v: &str) -> Selector {
        Selector::parse(&k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
            match_labels: Some([(k.to_string(), v.to_string())].into()),
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn routes_go_to_selected_peers_of_selected_nodes_and_merge_attributes() {
        let mut r1 = peer(base()).unwrap();
        r1.node_selectors = vec![sel("rack", "a")];
        let mut r2 = peer(base()).unwrap();
        r2.name = "r2".into();
        r2.disable_mp = true;
        let a = BgpAdvertisement {
            name: "a".into(),
            aggregation_v4: 32,
            aggregation_v6: 128,
            communities: [CommunityValue::Standard(1)].into(),
            local_pref: Some(50),
            ..Default::default()
        };
        let b = BgpAdvertisement {
            name: "b".into(),
            aggregation_v4: 24,
            aggregation_v6: 128,
            pools: vec!["p".into()],
            peers: vec!["r1".into()],
            communities: [CommunityValue::Large(1, 2, 3)].into(),
            local_pref: Some(200),
            ..Default::default()
        };
        let labels: Labels = [("rack".to_string(), "a".to_string())].into();
        let none = Labels::new();
        let cands = || {
            vec![
                Candidate { ip: "198.51.100.7".parse().unwrap(), pool: "p", pool_labels: &none, allowed: true },
                Candidate { ip: "fd42:f1b::7".parse().unwrap(), pool: "q", pool_labels: &none, allowed: true },
                Candidate { ip: "198.51.100.8".parse().unwrap(), pool: "p", pool_labels: &none, allowed: false },
            ]
        };
        let got = node_routes(&[r1.clone(), r2.clone()], &[a.clone(), b.clone()], &labels, true, cands());
        let net = |s: &str| s.parse::<IpNet>().unwrap();
        let r1_routes = &got.peers["r1"];
        assert_eq!(r1_routes.len(), 3, "{r1_routes:?}");
        assert_eq!(r1_routes[&net("198.51.100.0/24")].local_pref, Some(200));
        assert_eq!(r1_routes[&net("198.51.100.7/32")].communities, a.communities);
        // r2 has IPv4 only (disableMP) and is not named by b.
        assert_eq!(got.peers["r2"].keys().copied().collect::<Vec<_>>(), vec![net("198.51.100.7/32")]);
        // A node outside r1's selector peers with r2 only; an unusable node advertises nothing.
        let other = node_routes(&[r1.clone(), r2.clone()], &[a.clone(), b.clone()], &none, true, cands());
        assert_eq!(other.peers.keys().collect::<Vec<_>>(), vec!["r2"]);
        let down = node_routes(&[r1, r2], &[a, b], &labels, false, cands());
        assert!(down.peers.values().all(|r| r.is_empty()) && down.ips.is_empty());
        assert!(!got.ips.contains_key(&"198.51.100.8".parse::<IpAddr>().unwrap()));
    }
}
