//! The UPDATE messages that advertise and withdraw service prefixes: IPv4 in the
//! classic NLRI with NEXT_HOP, IPv6 in MP_REACH_NLRI/MP_UNREACH_NLRI (RFC 4760);
//! ORIGIN IGP; an AS_PATH of this speaker's AS towards an external peer and empty
//! towards an internal one; LOCAL_PREF towards internal peers only (RFC 4271 §5.1.5);
//! standard (RFC 1997) and large (RFC 8092) communities. Prefixes with the same
//! attributes share an UPDATE, at most [`MAX_PREFIXES`] to a message, so every
//! message stays under BGP's 4096 bytes.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use netgauze_bgp_pkt::BgpMessage;
use netgauze_bgp_pkt::community::{Community, LargeCommunity};
use netgauze_bgp_pkt::nlri::{Ipv4Unicast, Ipv4UnicastAddress, Ipv6Unicast, Ipv6UnicastAddress};
use netgauze_bgp_pkt::path_attribute::{
    As4PathSegment, AsPath, AsPathSegmentType, Communities, LargeCommunities, LocalPreference, MpReach, MpUnreach,
    NextHop, Origin, PathAttribute, PathAttributeValue,
};
use netgauze_bgp_pkt::update::BgpUpdateMessage;

/// Prefixes in one UPDATE: 400 IPv6 /128s take 400 x 17 bytes, well under 4096.
pub const MAX_PREFIXES: usize = 200;

/// One advertised prefix and its attributes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Route {
    /// The prefix (a service IP as /32 or /128, or its aggregate).
    pub prefix: IpNet,
    /// Standard communities (RFC 1997), as 32-bit values.
    pub communities: Vec<u32>,
    /// Large communities (RFC 8092).
    pub large_communities: Vec<(u32, u32, u32)>,
    /// LOCAL_PREF, sent to internal peers only.
    pub local_pref: Option<u32>,
}

/// Whom the UPDATEs go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peering {
    /// This speaker's AS.
    pub local_asn: u32,
    /// Same AS as the peer (internal BGP).
    pub internal: bool,
    /// The next hop for IPv4 prefixes (this node's address towards the peer).
    pub next_hop_v4: Option<Ipv4Addr>,
    /// The next hop for IPv6 prefixes.
    pub next_hop_v6: Option<Ipv6Addr>,
}

fn attr(optional: bool, transitive: bool, extended: bool, v: PathAttributeValue) -> PathAttribute {
    PathAttribute::from(optional, transitive, false, extended, v).expect("flags chosen per RFC 4271 for each attribute")
}

/// The attributes every advertised route carries, and its own.
fn attributes(p: &Peering, r: &Route) -> Vec<PathAttribute> {
    let path = if p.internal {
        AsPath::As4PathSegments(Box::new([]))
    } else {
        AsPath::As4PathSegments(Box::new([As4PathSegment::new(AsPathSegmentType::AsSequence, vec![p.local_asn])]))
    };
    let mut out = vec![
        attr(false, true, false, PathAttributeValue::Origin(Origin::IGP)),
        attr(false, true, false, PathAttributeValue::AsPath(path)),
    ];
    if let (true, Some(lp)) = (p.internal, r.local_pref) {
        out.push(attr(false, true, false, PathAttributeValue::LocalPreference(LocalPreference::new(lp))));
    }
    if !r.communities.is_empty() {
        let c: Vec<Community> = r.communities.iter().map(|v| Community::new(*v)).collect();
        out.push(attr(true, true, true, PathAttributeValue::Communities(Communities::new(c))));
    }
    if !r.large_communities.is_empty() {
        let c: Vec<LargeCommunity> =
            r.large_communities.iter().map(|(a, b, c)| LargeCommunity::new(*a, *b, *c)).collect();
        out.push(attr(true, true, true, PathAttributeValue::LargeCommunities(LargeCommunities::new(c))));
    }
    out
}

fn v4(net: ipnet::Ipv4Net) -> Option<Ipv4UnicastAddress> {
    Some(Ipv4UnicastAddress::new(None, Ipv4Unicast::from_net(net).ok()?))
}

fn v6(net: ipnet::Ipv6Net) -> Option<Ipv6UnicastAddress> {
    Some(Ipv6UnicastAddress::new(None, Ipv6Unicast::from_net(net).ok()?))
}

/// What routes sharing an UPDATE have in common: family (IPv4?), communities, large
/// communities, LOCAL_PREF.
type Shared = (bool, Vec<u32>, Vec<(u32, u32, u32)>, Option<u32>);

/// UPDATEs advertising `routes` to a peer; routes of a family without a next hop, or
/// whose prefix BGP cannot carry (multicast, broadcast), are left out.
pub fn announce(p: &Peering, routes: &[Route]) -> Vec<BgpMessage> {
    // Group by everything but the prefix.
    let mut groups: BTreeMap<Shared, Vec<IpNet>> = BTreeMap::new();
    for r in routes {
        let key = (r.prefix.addr().is_ipv4(), r.communities.clone(), r.large_communities.clone(), r.local_pref);
        groups.entry(key).or_default().push(r.prefix);
    }
    let mut out = Vec::new();
    for ((is_v4, communities, large_communities, local_pref), prefixes) in groups {
        let sample = Route { prefix: prefixes[0], communities, large_communities, local_pref };
        for chunk in prefixes.chunks(MAX_PREFIXES) {
            let mut attrs = attributes(p, &sample);
            if is_v4 {
                let Some(nh) = p.next_hop_v4 else { continue };
                let nlri: Vec<_> =
                    chunk.iter().filter_map(|n| if let IpNet::V4(n) = n { v4(*n) } else { None }).collect();
                if nlri.is_empty() {
                    continue;
                }
                attrs.push(attr(false, true, false, PathAttributeValue::NextHop(NextHop::new(nh))));
                out.push(BgpMessage::Update(BgpUpdateMessage::new(vec![], attrs, nlri)));
            } else {
                let Some(nh) = p.next_hop_v6 else { continue };
                let nlri: Vec<_> =
                    chunk.iter().filter_map(|n| if let IpNet::V6(n) = n { v6(*n) } else { None }).collect();
                if nlri.is_empty() {
                    continue;
                }
                let reach = MpReach::Ipv6Unicast { next_hop_global: nh, next_hop_local: None, nlri: nlri.into() };
                attrs.push(attr(true, false, true, PathAttributeValue::MpReach(reach)));
                out.push(BgpMessage::Update(BgpUpdateMessage::new(vec![], attrs, vec![])));
            }
        }
    }
    out
}

/// UPDATEs withdrawing `prefixes`.
pub fn withdraw(prefixes: &[IpNet]) -> Vec<BgpMessage> {
    let (mut four, mut six) = (Vec::new(), Vec::new());
    for p in prefixes {
        match p {
            IpNet::V4(n) => four.extend(v4(*n)),
            IpNet::V6(n) => six.extend(v6(*n)),
        }
    }
    let mut out = Vec::new();
    for chunk in four.chunks(MAX_PREFIXES) {
        out.push(BgpMessage::Update(BgpUpdateMessage::new(chunk.to_vec(), vec![], vec![])));
    }
    for chunk in six.chunks(MAX_PREFIXES) {
        let unreach = MpUnreach::Ipv6Unicast { nlri: chunk.to_vec().into() };
        let attrs = vec![attr(true, false, true, PathAttributeValue::MpUnreach(unreach))];
        out.push(BgpMessage::Update(BgpUpdateMessage::new(vec![], attrs, vec![])));
    }
    out
}

/// End-of-RIB markers (RFC 4724) for the families in use: after the initial routes.
pub fn end_of_rib(ipv4: bool, ipv6: bool) -> Vec<BgpMessage> {
    let mut out = Vec::new();
    if ipv4 {
        out.push(BgpMessage::Update(BgpUpdateMessage::new(vec![], vec![], vec![])));
    }
    if ipv6 {
        let unreach = MpUnreach::Ipv6Unicast { nlri: Box::new([]) };
        out.push(BgpMessage::Update(BgpUpdateMessage::new(
            vec![],
            vec![attr(true, false, true, PathAttributeValue::MpUnreach(unreach))],
            vec![],
        )));
    }
    out
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use netgauze_bgp_pkt::codec::BgpCodec;
    use tokio_util::codec::{Decoder, Encoder};

    use super::*;

    fn peering(internal: bool) -> Peering {
        Peering {
            local_asn: 64513,
            internal,
            next_hop_v4: Some(Ipv4Addr::new(203, 0, 113, 2)),
            next_hop_v6: Some("fd42:f1b:bb::2".parse().unwrap()),
        }
    }

    fn route(p: &str, communities: Vec<u32>, local_pref: Option<u32>) -> Route {
        Route { prefix: p.parse().unwrap(), communities, large_communities: vec![(64512, 7, 9)], local_pref }
    }

    /// Encode and decode again, as the peer would see it.
    fn roundtrip(m: BgpMessage) -> (usize, BgpUpdateMessage) {
        let mut b = BytesMut::new();
        BgpCodec::new(true).encode(m, &mut b).unwrap();
        let len = b.len();
        match BgpCodec::new(true).decode(&mut b).unwrap().unwrap().0 {
            BgpMessage::Update(u) => (len, u),
            other => panic!("{other:?}"),
        }
    }

    fn has(u: &BgpUpdateMessage, f: impl Fn(&PathAttributeValue) -> bool) -> bool {
        u.path_attributes().iter().any(|a| f(a.value()))
    }

    #[test]
    fn ebgp_ipv4_carries_next_hop_as_path_and_communities_but_no_local_pref() {
        let msgs = announce(&peering(false), &[route("198.51.100.100/32", vec![0xfc00_0064], Some(200))]);
        assert_eq!(msgs.len(), 1);
        let (_, u) = roundtrip(msgs[0].clone());
        assert_eq!(u.nlri().len(), 1);
        assert!(has(
            &u,
            |v| matches!(v, PathAttributeValue::NextHop(n) if n.next_hop() == Ipv4Addr::new(203, 0, 113, 2))
        ));
        assert!(has(
            &u,
            |v| matches!(v, PathAttributeValue::Communities(c) if c.communities()[0].value() == 0xfc00_0064)
        ));
        assert!(has(&u, |v| matches!(v, PathAttributeValue::LargeCommunities(_))));
        assert!(has(&u, |v| matches!(v, PathAttributeValue::AsPath(AsPath::As4PathSegments(s)) if s.len() == 1)));
        assert!(!has(&u, |v| matches!(v, PathAttributeValue::LocalPreference(_))), "LOCAL_PREF is for internal peers");
    }

    #[test]
    fn ibgp_ipv6_goes_in_mp_reach_with_local_pref_and_an_empty_as_path() {
        let msgs = announce(&peering(true), &[route("fd42:f1b::100/128", vec![], Some(200))]);
        let (_, u) = roundtrip(msgs[0].clone());
        assert!(u.nlri().is_empty());
        assert!(has(
            &u,
            |v| matches!(v, PathAttributeValue::MpReach(MpReach::Ipv6Unicast { next_hop_global, nlri, .. })
            if next_hop_global.to_string() == "fd42:f1b:bb::2" && nlri.len() == 1)
        ));
        assert!(has(&u, |v| matches!(v, PathAttributeValue::LocalPreference(l) if l.metric() == 200)));
        assert!(has(&u, |v| matches!(v, PathAttributeValue::AsPath(AsPath::As4PathSegments(s)) if s.is_empty())));
    }

    #[test]
    fn many_prefixes_split_into_messages_under_4096_bytes_and_withdraw_alike() {
        let routes: Vec<Route> = (0..450u32)
            .map(|i| route(&format!("fd42:f1b::{:x}/128", 0x1000 + i), vec![1, 2, 3], None))
            .chain((0..450u32).map(|i| route(&format!("198.51.{}.{}/32", 100 + i / 250, i % 250), vec![], None)))
            .collect();
        let msgs = announce(&peering(false), &routes);
        assert_eq!(msgs.len(), 6, "450 of each family, 200 to a message");
        let mut total = 0;
        for m in msgs {
            let (len, u) = roundtrip(m);
            assert!(len <= 4096, "{len} bytes");
            total += u.nlri().len();
            for a in u.path_attributes() {
                if let PathAttributeValue::MpReach(MpReach::Ipv6Unicast { nlri, .. }) = a.value() {
                    total += nlri.len();
                }
            }
        }
        assert_eq!(total, 900);
        let prefixes: Vec<IpNet> = routes.iter().map(|r| r.prefix).collect();
        let w = withdraw(&prefixes);
        assert_eq!(w.len(), 6);
        assert!(w.into_iter().all(|m| roundtrip(m).0 <= 4096));
    }

    #[test]
    fn a_family_without_a_next_hop_is_left_out_and_end_of_rib_is_per_family() {
        let p = Peering { next_hop_v6: None, ..peering(false) };
        assert!(announce(&p, &[route("fd42:f1b::100/128", vec![], None)]).is_empty());
        let eor = end_of_rib(true, true);
        assert_eq!(eor.len(), 2);
        assert!(eor.into_iter().all(|m| matches!(m, BgpMessage::Update(u) if u.end_of_rib().is_some())));
    }
}
