//! Whole frames the speaker sends: ARP replies, gratuitous ARP, and Neighbor
//! Advertisements (solicited and unsolicited). Pure builders over `wire`.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::wire::ethernet::{self, ETHERTYPE_ARP, ETHERTYPE_IPV6, Frame};
use crate::wire::{Mac, arp, icmpv6, ipv6};

/// The all-nodes multicast address.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

fn eth(dst: Mac, src: Mac, vlan: Option<u16>, ethertype: u16, payload_len: usize) -> (Vec<u8>, usize) {
    let repr = ethernet::Repr { dst, src, vlan, ethertype };
    let h = repr.header_len();
    // Ethernet frames are at least 60 bytes before the FCS; pad short ones.
    let mut buf = vec![0u8; (h + payload_len).max(60)];
    repr.emit(&mut Frame::new_unchecked(&mut buf[..]));
    (buf, h)
}

/// An ARP frame.
pub fn arp_frame(eth_dst: Mac, src_mac: Mac, vlan: Option<u16>, repr: &arp::Repr) -> Vec<u8> {
    let (mut buf, h) = eth(eth_dst, src_mac, vlan, ETHERTYPE_ARP, arp::LEN);
    repr.emit(&mut arp::Packet::new_unchecked(&mut buf[h..h + arp::LEN]));
    buf
}

/// The reply to an ARP request for `ip`, from `mac`.
pub fn arp_reply(mac: Mac, ip: Ipv4Addr, to_mac: Mac, to_ip: Ipv4Addr, vlan: Option<u16>) -> Vec<u8> {
    arp_frame(to_mac, mac, vlan, &arp::Repr { op: arp::Op::Reply, sha: mac, spa: ip, tha: to_mac, tpa: to_ip })
}

/// Gratuitous ARP request and reply announcing `ip` at `mac` (both forms, as clients differ).
pub fn gratuitous_arp(mac: Mac, ip: Ipv4Addr, vlan: Option<u16>) -> [Vec<u8>; 2] {
    [
        arp_frame(
            Mac::BROADCAST,
            mac,
            vlan,
            &arp::Repr { op: arp::Op::Request, sha: mac, spa: ip, tha: Mac::ZERO, tpa: ip },
        ),
        arp_frame(
            Mac::BROADCAST,
            mac,
            vlan,
            &arp::Repr { op: arp::Op::Reply, sha: mac, spa: ip, tha: Mac::BROADCAST, tpa: ip },
        ),
    ]
}

/// An IPv6 frame carrying one NDP message, hop limit 255 as NDP requires.
pub fn ndp_frame(
    eth_dst: Mac,
    src_mac: Mac,
    vlan: Option<u16>,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    msg: &icmpv6::Repr,
) -> Vec<u8> {
    let len = msg.buffer_len();
    let (mut buf, h) = eth(eth_dst, src_mac, vlan, ETHERTYPE_IPV6, ipv6::HEADER_LEN + len);
    let ip = ipv6::Repr { src, dst, next_header: ipv6::NEXT_ICMPV6, hop_limit: 255, payload_len: len as u16 };
    let mut p = ipv6::Packet::new_unchecked(&mut buf[h..h + ipv6::HEADER_LEN + len]);
    ip.emit(&mut p);
    msg.emit(&src, &dst, &mut icmpv6::Packet::new_unchecked(p.payload_mut()));
    buf
}

/// The solicited NA answering an NS for `target` from `to` (at `to_mac`).
pub fn neighbor_advert(mac: Mac, target: Ipv6Addr, to_mac: Mac, to: Ipv6Addr, vlan: Option<u16>) -> Vec<u8> {
    let msg = icmpv6::Repr::NeighborAdvert {
        router: false,
        solicited: true,
        override_: true,
        target,
        target_lladdr: Some(mac),
    };
    ndp_frame(to_mac, mac, vlan, target, to, &msg)
}

/// The unsolicited NA (override set) announcing `target` at `mac` to all nodes.
pub fn unsolicited_advert(mac: Mac, target: Ipv6Addr, vlan: Option<u16>) -> Vec<u8> {
    let msg = icmpv6::Repr::NeighborAdvert {
        router: false,
        solicited: false,
        override_: true,
        target,
        target_lladdr: Some(mac),
    };
    ndp_frame(Mac::ipv6_multicast(&ALL_NODES), mac, vlan, target, ALL_NODES, &msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac() -> Mac {
        "02:00:00:00:00:0a".parse().unwrap()
    }

    #[test]
    fn arp_reply_is_addressed_to_the_asker() {
        let f = arp_reply(
            mac(),
            Ipv4Addr::new(198, 51, 100, 7),
            Mac([2, 0, 0, 0, 0, 1]),
            Ipv4Addr::new(198, 51, 100, 1),
            None,
        );
        assert_eq!(f.len(), 60, "padded to the Ethernet minimum");
        let e = Frame::new_checked(&f[..]).unwrap();
        assert_eq!((e.dst(), e.src(), e.ethertype()), (Mac([2, 0, 0, 0, 0, 1]), mac(), ETHERTYPE_ARP));
        let a = arp::Repr::parse(&arp::Packet::new_checked(e.payload()).unwrap()).unwrap();
        assert_eq!(
            (a.op, a.sha, a.spa, a.tpa),
            (arp::Op::Reply, mac(), Ipv4Addr::new(198, 51, 100, 7), Ipv4Addr::new(198, 51, 100, 1))
        );
    }

    #[test]
    fn gratuitous_arp_comes_in_both_forms() {
        let [req, rep] = gratuitous_arp(mac(), Ipv4Addr::new(198, 51, 100, 7), Some(10));
        for (f, op) in [(req, arp::Op::Request), (rep, arp::Op::Reply)] {
            let e = Frame::new_checked(&f[..]).unwrap();
            assert_eq!((e.dst(), e.vlan()), (Mac::BROADCAST, Some(10)));
            let a = arp::Repr::parse(&arp::Packet::new_checked(e.payload()).unwrap()).unwrap();
            assert_eq!((a.op, a.spa, a.tpa), (op, Ipv4Addr::new(198, 51, 100, 7), Ipv4Addr::new(198, 51, 100, 7)));
        }
    }

    #[test]
    fn unsolicited_na_goes_to_all_nodes_with_override() {
        let vip: Ipv6Addr = "fd42:f1b::7".parse().unwrap();
        let f = unsolicited_advert(mac(), vip, None);
        let e = Frame::new_checked(&f[..]).unwrap();
        assert_eq!(e.dst(), Mac([0x33, 0x33, 0, 0, 0, 1]));
        let ip = ipv6::Packet::new_checked(e.payload()).unwrap();
        assert_eq!((ip.hop_limit(), ip.src(), ip.dst()), (255, vip, ALL_NODES));
        let msg =
            icmpv6::Repr::parse(&ip.src(), &ip.dst(), &icmpv6::Packet::new_checked(ip.payload()).unwrap()).unwrap();
        assert_eq!(
            msg,
            icmpv6::Repr::NeighborAdvert {
                router: false,
                solicited: false,
                override_: true,
                target: vip,
                target_lladdr: Some(mac())
            }
        );
    }
}
