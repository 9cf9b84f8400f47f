//! The answering logic: one received frame, the table of announced IPs and the
//! receiving interface in; a reply frame, or the reason there is none, out.
//! Pure, so every rule is tested on byte arrays without privileges.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::frames;
use crate::wire::ethernet::{ETHERTYPE_ARP, ETHERTYPE_IPV6, Frame};
use crate::wire::{self, Mac, arp, icmpv6, ipv6, solicited_node};

/// Why a received frame got no answer. Every drop is counted by reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DropReason {
    /// Not a frame, or a header that does not parse.
    Malformed,
    /// Addressed to another host's MAC (bridges flood; promiscuous sockets see it).
    NotForUs,
    /// Sent by this interface itself.
    OwnFrame,
    /// Neither ARP nor IPv6.
    NotArpOrIpv6,
    /// IPv6, but not ICMPv6 NDP.
    NotNdp,
    /// An ARP reply, an NA or a gratuitous announcement by someone else.
    NotARequest,
    /// The target IP is not announced by this node.
    NotAnnounced,
    /// Announced, but not on the interface the request came in on.
    WrongInterface,
    /// NDP with a hop limit other than 255 (may have crossed a router).
    BadHopLimit,
    /// NDP with a wrong checksum.
    BadChecksum,
    /// A request whose sender hardware address is broadcast or multicast: a reply
    /// to it would be broadcast.
    BadSender,
    /// Another host claims an IP this node announces on this interface (an ARP
    /// packet or NA from a foreign MAC): defended, see [`conflict`].
    IpConflict,
    /// Came in with an 802.1Q tag on this interface (a trunk): the VLAN's own
    /// interface (`eth0.10`) answers it if the IP is announced there; this one
    /// never does.
    VlanTagged,
}

impl DropReason {
    /// Label value for `ferrolb_layer2_dropped_total{reason}`.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::NotForUs => "not_for_us",
            DropReason::OwnFrame => "own_frame",
            DropReason::NotArpOrIpv6 => "not_arp_or_ipv6",
            DropReason::NotNdp => "not_ndp",
            DropReason::NotARequest => "not_a_request",
            DropReason::NotAnnounced => "not_announced",
            DropReason::WrongInterface => "wrong_interface",
            DropReason::BadHopLimit => "bad_hop_limit",
            DropReason::BadChecksum => "bad_checksum",
            DropReason::BadSender => "bad_sender",
            DropReason::IpConflict => "ip_conflict",
            DropReason::VlanTagged => "vlan_tagged",
        }
    }

    /// Every reason, for pre-registering metrics.
    pub const ALL: [DropReason; 13] = [
        DropReason::Malformed,
        DropReason::NotForUs,
        DropReason::OwnFrame,
        DropReason::NotArpOrIpv6,
        DropReason::NotNdp,
        DropReason::NotARequest,
        DropReason::NotAnnounced,
        DropReason::WrongInterface,
        DropReason::BadHopLimit,
        DropReason::BadChecksum,
        DropReason::BadSender,
        DropReason::IpConflict,
        DropReason::VlanTagged,
    ];

    /// Whether a frame dropped for this reason was still a valid request for an
    /// announced IP (counted in `requests_received`).
    pub fn valid_request(self) -> bool {
        self == DropReason::WrongInterface
    }
}

/// An interface the speaker answers on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Iface {
    /// Name (`eth0`).
    pub name: String,
    /// Its MAC: replies come from it.
    pub mac: Mac,
}

/// Announced IPs and the interfaces each is announced on. Lookups are hash lookups.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    ips: HashMap<IpAddr, BTreeSet<String>>,
}

impl Table {
    /// Announce `ip` on `ifaces`.
    pub fn insert(&mut self, ip: IpAddr, ifaces: BTreeSet<String>) {
        self.ips.insert(ip, ifaces);
    }
    /// Stop announcing `ip`.
    pub fn remove(&mut self, ip: &IpAddr) -> Option<BTreeSet<String>> {
        self.ips.remove(ip)
    }
    /// Interfaces `ip` is announced on.
    pub fn get(&self, ip: &IpAddr) -> Option<&BTreeSet<String>> {
        self.ips.get(ip)
    }
    /// Every announced IP.
    pub fn ips(&self) -> impl Iterator<Item = &IpAddr> {
        self.ips.keys()
    }
    /// Number of announced IPs.
    pub fn len(&self) -> usize {
        self.ips.len()
    }
    /// Whether nothing is announced.
    pub fn is_empty(&self) -> bool {
        self.ips.is_empty()
    }
    fn check(&self, ip: IpAddr, iface: &str) -> Result<(), DropReason> {
        match self.ips.get(&ip) {
            None => Err(DropReason::NotAnnounced),
            Some(set) if !set.contains(iface) => Err(DropReason::WrongInterface),
            Some(_) => Ok(()),
        }
    }
}

/// A reply to send, and the IP it answers for (for per-IP counters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The announced IP the request asked for.
    pub ip: IpAddr,
    /// The frame to send back out of the receiving interface.
    pub frame: Vec<u8>,
}

/// The IP a request asks about, when it is a request at all; used to count requests per IP.
pub fn requested_ip(frame: &[u8]) -> Option<IpAddr> {
    let f = Frame::new_checked(frame).ok()?;
    match f.ethertype() {
        ETHERTYPE_ARP => Some(IpAddr::V4(arp::Packet::new_checked(f.payload()).ok()?.tpa())),
        ETHERTYPE_IPV6 => {
            let ip = ipv6::Packet::new_checked(f.payload()).ok()?;
            let m = icmpv6::Packet::new_checked(ip.payload()).ok()?;
            (m.msg_type() == icmpv6::NEIGHBOR_SOLICIT).then(|| m.target().map(IpAddr::V6))?
        }
        _ => None,
    }
}

/// Decide the answer to one frame received on `iface`.
pub fn respond(table: &Table, iface: &Iface, frame: &[u8]) -> Result<Reply, DropReason> {
    let f = Frame::new_checked(frame).map_err(|_| DropReason::Malformed)?;
    if f.src() == iface.mac {
        return Err(DropReason::OwnFrame);
    }
    if f.vlan().is_some() {
        return Err(DropReason::VlanTagged);
    }
    let dst = f.dst();
    match f.ethertype() {
        ETHERTYPE_ARP => {
            if dst != Mac::BROADCAST && dst != iface.mac {
                return Err(DropReason::NotForUs);
            }
            let a = arp::Repr::parse(&arp::Packet::new_checked(f.payload()).map_err(|_| DropReason::Malformed)?)
                .map_err(|_| DropReason::Malformed)?;
            if a.op != arp::Op::Request || a.spa == a.tpa {
                return Err(DropReason::NotARequest);
            }
            if a.sha.is_multicast() || f.src().is_multicast() {
                return Err(DropReason::BadSender);
            }
            table.check(IpAddr::V4(a.tpa), &iface.name)?;
            // Reply to the asker's hardware address (fall back to the frame's source).
            let to = if a.sha == Mac::ZERO { f.src() } else { a.sha };
            Ok(Reply { ip: IpAddr::V4(a.tpa), frame: frames::arp_reply(iface.mac, a.tpa, to, a.spa, f.vlan()) })
        }
        ETHERTYPE_IPV6 => {
            if !dst.is_multicast() && dst != iface.mac {
                return Err(DropReason::NotForUs);
            }
            let ip = ipv6::Packet::new_checked(f.payload()).map_err(|_| DropReason::Malformed)?;
            if ip.next_header() != ipv6::NEXT_ICMPV6 {
                return Err(DropReason::NotNdp);
            }
            let msg_buf = icmpv6::Packet::new_checked(ip.payload()).map_err(|_| DropReason::Malformed)?;
            if msg_buf.msg_type() != icmpv6::NEIGHBOR_SOLICIT && msg_buf.msg_type() != icmpv6::NEIGHBOR_ADVERT {
                return Err(DropReason::NotNdp);
            }
            if ip.hop_limit() != 255 {
                return Err(DropReason::BadHopLimit);
            }
            let (src, ipdst) = (ip.src(), ip.dst());
            let msg = icmpv6::Repr::parse(&src, &ipdst, &msg_buf).map_err(|e| match e {
                wire::Error::Checksum => DropReason::BadChecksum,
                _ => DropReason::Malformed,
            })?;
            let icmpv6::Repr::NeighborSolicit { target, source_lladdr } = msg else {
                return Err(DropReason::NotARequest);
            };
            if f.src().is_multicast() || source_lladdr.is_some_and(|m| m.is_multicast()) {
                return Err(DropReason::BadSender);
            }
            // Multicast NS go to the target's solicited-node group; unicast ones (NUD) to the target.
            if ipdst != solicited_node(&target) && ipdst != target {
                return Err(DropReason::NotForUs);
            }
            table.check(IpAddr::V6(target), &iface.name)?;
            let frame = if src.is_unspecified() {
                // Duplicate address detection by another host: defend the address to all nodes.
                frames::unsolicited_advert(iface.mac, target, f.vlan())
            } else {
                let to_mac = source_lladdr.unwrap_or(f.src());
                frames::neighbor_advert(iface.mac, target, to_mac, src, f.vlan())
            };
            Ok(Reply { ip: IpAddr::V6(target), frame })
        }
        _ => Err(DropReason::NotArpOrIpv6),
    }
}

/// Another host claiming an IP this node announces (RFC 5227's conflict; RFC 4861's
/// duplicate address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conflict {
    /// The announced IP.
    pub ip: IpAddr,
    /// The other host's MAC.
    pub mac: Mac,
    /// The VLAN the claim came in on (the defense goes out on it).
    pub vlan: Option<u16>,
}

impl Conflict {
    /// The announcement that defends the IP: gratuitous ARP (request and reply) or an
    /// unsolicited NA with the override flag, from `iface`.
    pub fn defense(&self, iface: &Iface) -> Vec<Vec<u8>> {
        match self.ip {
            IpAddr::V4(ip) => frames::gratuitous_arp(iface.mac, ip, self.vlan).to_vec(),
            IpAddr::V6(ip) => vec![frames::unsolicited_advert(iface.mac, ip, self.vlan)],
        }
    }
}

/// Whether `frame`, received on `iface`, is another host claiming an IP this node
/// announces there: an ARP packet (request, reply or gratuitous) whose sender IP is
/// it, a Neighbor Advertisement for it, or a Neighbor Solicitation sent from it, by a
/// MAC not this interface's. Probes (ARP from 0.0.0.0, DAD from ::) are not claims:
/// they are answered as requests.
pub fn conflict(table: &Table, iface: &Iface, frame: &[u8]) -> Option<Conflict> {
    let f = Frame::new_checked(frame).ok()?;
    if f.src() == iface.mac || f.vlan().is_some() {
        return None;
    }
    let vlan = f.vlan();
    let claim = |ip: IpAddr, mac: Mac| {
        let ours = table.check(ip, &iface.name).is_ok();
        (ours && mac != iface.mac && mac != Mac::ZERO).then_some(Conflict { ip, mac, vlan })
    };
    match f.ethertype() {
        ETHERTYPE_ARP => {
            let a = arp::Repr::parse(&arp::Packet::new_checked(f.payload()).ok()?).ok()?;
            claim(IpAddr::V4(a.spa), a.sha)
        }
        ETHERTYPE_IPV6 => {
            let ip = ipv6::Packet::new_checked(f.payload()).ok()?;
            if ip.next_header() != ipv6::NEXT_ICMPV6 || ip.hop_limit() != 255 {
                return None;
            }
            let (src, dst) = (ip.src(), ip.dst());
            let msg = icmpv6::Repr::parse(&src, &dst, &icmpv6::Packet::new_checked(ip.payload()).ok()?).ok()?;
            match msg {
                icmpv6::Repr::NeighborAdvert { target, target_lladdr, .. } => {
                    claim(IpAddr::V6(target), target_lladdr.unwrap_or(f.src()))
                }
                icmpv6::Repr::NeighborSolicit { source_lladdr, .. } if !src.is_unspecified() => {
                    claim(IpAddr::V6(src), source_lladdr.unwrap_or(f.src()))
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// Convenience for tests and the sys layer: an IPv4 address as `IpAddr`.
pub fn v4(a: Ipv4Addr) -> IpAddr {
    IpAddr::V4(a)
}

/// Convenience: an IPv6 address as `IpAddr`.
pub fn v6(a: Ipv6Addr) -> IpAddr {
    IpAddr::V6(a)
}

#[cfg(test)]
mod tests;
