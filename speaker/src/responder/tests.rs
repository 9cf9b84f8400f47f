//! Every answering rule, on frames built byte by byte as a client would send them.

use super::*;
use crate::wire::ethernet::Frame;
use proptest::prelude::*;

const CLIENT: Mac = Mac([0x02, 0, 0, 0, 0, 0x01]);
const OURS: Mac = Mac([0x02, 0, 0, 0, 0, 0x0a]);
const OTHER: Mac = Mac([0x02, 0, 0, 0, 0, 0x0b]);

fn vip4() -> Ipv4Addr {
    Ipv4Addr::new(198, 51, 100, 7)
}
fn vip6() -> Ipv6Addr {
    "fd42:f1b::7".parse().unwrap()
}
fn client6() -> Ipv6Addr {
    "fd42:f1b::1".parse().unwrap()
}

fn table() -> Table {
    let mut t = Table::default();
    t.insert(v4(vip4()), BTreeSet::from(["eth0".to_string()]));
    t.insert(v6(vip6()), BTreeSet::from(["eth0".to_string()]));
    t
}

fn eth0() -> Iface {
    Iface { name: "eth0".into(), mac: OURS }
}

fn arp_request(eth_dst: Mac, src: Mac, spa: Ipv4Addr, tpa: Ipv4Addr, vlan: Option<u16>) -> Vec<u8> {
    frames::arp_frame(eth_dst, src, vlan, &arp::Repr { op: arp::Op::Request, sha: src, spa, tha: Mac::ZERO, tpa })
}

fn ns(eth_dst: Mac, src: Ipv6Addr, dst: Ipv6Addr, target: Ipv6Addr, hop_limit: u8) -> Vec<u8> {
    let sll = if src.is_unspecified() { None } else { Some(CLIENT) };
    let mut f = frames::ndp_frame(
        eth_dst,
        CLIENT,
        None,
        src,
        dst,
        &icmpv6::Repr::NeighborSolicit { target, source_lladdr: sll },
    );
    f[14 + 7] = hop_limit;
    f
}

fn multicast_ns(target: Ipv6Addr) -> Vec<u8> {
    let sn = solicited_node(&target);
    ns(Mac::ipv6_multicast(&sn), client6(), sn, target, 255)
}

#[test]
fn arp_request_for_an_announced_ip_is_answered_from_the_interface_mac() {
    let req = arp_request(Mac::BROADCAST, CLIENT, Ipv4Addr::new(198, 51, 100, 1), vip4(), None);
    let r = respond(&table(), &eth0(), &req).unwrap();
    assert_eq!(r.ip, v4(vip4()));
    let f = Frame::new_checked(&r.frame[..]).unwrap();
    assert_eq!((f.dst(), f.src()), (CLIENT, OURS));
    let a = arp::Repr::parse(&arp::Packet::new_checked(f.payload()).unwrap()).unwrap();
    assert_eq!(
        (a.op, a.sha, a.spa, a.tha, a.tpa),
        (arp::Op::Reply, OURS, vip4(), CLIENT, Ipv4Addr::new(198, 51, 100, 1))
    );
}

#[test]
fn unicast_arp_refresh_is_answered() {
    let req = arp_request(OURS, CLIENT, Ipv4Addr::new(198, 51, 100, 1), vip4(), None);
    assert!(respond(&table(), &eth0(), &req).is_ok());
}

#[test]
fn a_request_that_came_in_tagged_on_this_interface_is_left_to_the_vlan_interface() {
    // On a trunk, a request from VLAN 42 arrives on eth0 with its tag (the socket puts
    // it back): eth0.42 answers it if the IP is announced there; eth0 never does, or
    // its reply would land in the native VLAN or on a VLAN this node has no address in.
    for req in [
        arp_request(Mac::BROADCAST, CLIENT, Ipv4Addr::new(198, 51, 100, 1), vip4(), Some(42)),
        arp_request(OURS, CLIENT, Ipv4Addr::new(198, 51, 100, 1), vip4(), Some(0)),
    ] {
        assert_eq!(respond(&table(), &eth0(), &req), Err(DropReason::VlanTagged));
    }
    let claim = frames::gratuitous_arp(OTHER, vip4(), Some(42));
    assert_eq!(conflict(&table(), &eth0(), &claim[0]), None, "defended by eth0.42, untagged there");
}

#[test]
fn multicast_and_unicast_ns_get_a_solicited_na() {
    for req in [multicast_ns(vip6()), ns(OURS, client6(), vip6(), vip6(), 255)] {
        let r = respond(&table(), &eth0(), &req).unwrap();
        let f = Frame::new_checked(&r.frame[..]).unwrap();
        assert_eq!((f.dst(), f.src()), (CLIENT, OURS));
        let ip = ipv6::Packet::new_checked(f.payload()).unwrap();
        assert_eq!((ip.src(), ip.dst(), ip.hop_limit()), (vip6(), client6(), 255));
        let na =
            icmpv6::Repr::parse(&ip.src(), &ip.dst(), &icmpv6::Packet::new_checked(ip.payload()).unwrap()).unwrap();
        assert_eq!(
            na,
            icmpv6::Repr::NeighborAdvert {
                router: false,
                solicited: true,
                override_: true,
                target: vip6(),
                target_lladdr: Some(OURS)
            }
        );
    }
}

#[test]
fn dad_probe_for_our_address_is_defended_to_all_nodes() {
    let target = vip6();
    let sn = solicited_node(&target);
    let req = ns(Mac::ipv6_multicast(&sn), Ipv6Addr::UNSPECIFIED, sn, target, 255);
    let r = respond(&table(), &eth0(), &req).unwrap();
    let f = Frame::new_checked(&r.frame[..]).unwrap();
    let ip = ipv6::Packet::new_checked(f.payload()).unwrap();
    assert_eq!(ip.dst(), frames::ALL_NODES);
}

#[test]
fn drop_reasons() {
    let t = table();
    let i = eth0();
    let other_ip = Ipv4Addr::new(198, 51, 100, 99);
    let mut bad_sum = multicast_ns(vip6());
    bad_sum[14 + 40 + 2] ^= 0xff;
    let cases: Vec<(&str, Vec<u8>, DropReason)> = vec![
        ("empty", vec![], DropReason::Malformed),
        (
            "truncated arp",
            arp_request(Mac::BROADCAST, CLIENT, Ipv4Addr::new(198, 51, 100, 1), vip4(), None)[..30].to_vec(),
            DropReason::Malformed,
        ),
        (
            "own frame",
            arp_request(Mac::BROADCAST, OURS, Ipv4Addr::new(198, 51, 100, 1), vip4(), None),
            DropReason::OwnFrame,
        ),
        (
            "other host's mac",
            arp_request(OTHER, CLIENT, Ipv4Addr::new(198, 51, 100, 1), vip4(), None),
            DropReason::NotForUs,
        ),
        (
            "ip not announced",
            arp_request(Mac::BROADCAST, CLIENT, Ipv4Addr::new(198, 51, 100, 1), other_ip, None),
            DropReason::NotAnnounced,
        ),
        (
            "arp reply",
            frames::arp_reply(CLIENT, Ipv4Addr::new(198, 51, 100, 1), OURS, vip4(), None),
            DropReason::NotARequest,
        ),
        (
            "someone else's gratuitous arp",
            frames::gratuitous_arp(CLIENT, vip4(), None)[0].clone(),
            DropReason::NotARequest,
        ),
        ("ns hop limit 64", ns(OURS, client6(), vip6(), vip6(), 64), DropReason::BadHopLimit),
        ("ns bad checksum", bad_sum, DropReason::BadChecksum),
        ("ns for another target", multicast_ns("fd42:f1b::99".parse().unwrap()), DropReason::NotAnnounced),
        ("na from someone", frames::unsolicited_advert(CLIENT, vip6(), None), DropReason::NotARequest),
        (
            "ipv4 data",
            {
                let mut f = arp_request(OURS, CLIENT, Ipv4Addr::new(198, 51, 100, 1), vip4(), None);
                f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
                f
            },
            DropReason::NotArpOrIpv6,
        ),
        (
            "ipv6 tcp",
            {
                let mut f = ns(OURS, client6(), vip6(), vip6(), 255);
                f[14 + 6] = 6;
                f
            },
            DropReason::NotNdp,
        ),
        ("ns to unicast mac of another host", ns(OTHER, client6(), vip6(), vip6(), 255), DropReason::NotForUs),
    ];
    for (what, frame, want) in cases {
        assert_eq!(respond(&t, &i, &frame).unwrap_err(), want, "{what}");
    }
    let eth1 = Iface { name: "eth1".into(), mac: OURS };
    let req = arp_request(Mac::BROADCAST, CLIENT, Ipv4Addr::new(198, 51, 100, 1), vip4(), None);
    assert_eq!(respond(&t, &eth1, &req).unwrap_err(), DropReason::WrongInterface);
}

#[test]
fn requested_ip_is_read_for_counting() {
    assert_eq!(
        requested_ip(&arp_request(Mac::BROADCAST, CLIENT, Ipv4Addr::new(198, 51, 100, 1), vip4(), None)),
        Some(v4(vip4()))
    );
    assert_eq!(requested_ip(&multicast_ns(vip6())), Some(v6(vip6())));
    assert_eq!(requested_ip(&[0u8; 10]), None);
}

proptest! {
    // `PROPTEST_CASES=1000000 cargo test -p ferrolb-speaker fuzz_` runs these as a
    // fuzzing campaign (scripts/fuzz); CI runs the default budget.
    #[test]
    fn fuzz_arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = respond(&table(), &eth0(), &bytes);
        let _ = requested_ip(&bytes);
        if let Some(c) = conflict(&table(), &eth0(), &bytes) {
            let _ = c.defense(&eth0());
        }
        if let Ok(f) = Frame::new_checked(&bytes[..]) {
            let _ = arp::Packet::new_checked(f.payload()).map(|p| arp::Repr::parse(&p));
            if let Ok(ip) = ipv6::Packet::new_checked(f.payload()) {
                let _ = icmpv6::Packet::new_checked(ip.payload()).map(|m| icmpv6::Repr::parse(&ip.src(), &ip.dst(), &m));
            }
        }
    }

    #[test]
    fn fuzz_mutated_requests_never_panic(pos in 0usize..90, val in any::<u8>(), cut in 0usize..90, v6req in any::<bool>()) {
        let mut f = if v6req { multicast_ns(vip6()) } else { arp_request(Mac::BROADCAST, CLIENT, Ipv4Addr::new(198, 51, 100, 1), vip4(), None) };
        let p = pos % f.len();
        f[p] = val;
        f.truncate(f.len() - cut % f.len());
        let _ = respond(&table(), &eth0(), &f);
        let _ = conflict(&table(), &eth0(), &f);
    }

    #[test]
    fn arp_round_trips(op in any::<bool>(), sha in any::<[u8; 6]>(), spa in any::<u32>(), tha in any::<[u8; 6]>(), tpa in any::<u32>()) {
        let r = arp::Repr { op: if op { arp::Op::Request } else { arp::Op::Reply }, sha: Mac(sha), spa: spa.into(), tha: Mac(tha), tpa: tpa.into() };
        let mut buf = [0u8; arp::LEN];
        r.emit(&mut arp::Packet::new_unchecked(&mut buf[..]));
        prop_assert_eq!(arp::Repr::parse(&arp::Packet::new_checked(&buf[..]).unwrap()).unwrap(), r);
    }

    #[test]
    fn ndp_round_trips(src in any::<u128>(), dst in any::<u128>(), target in any::<u128>(), mac in any::<[u8; 6]>(),
                       advert in any::<bool>(), flags in any::<[bool; 3]>(), with_opt in any::<bool>()) {
        let target = Ipv6Addr::from(target & !(0xffu128 << 120)); // not multicast
        let opt = with_opt.then_some(Mac(mac));
        let r = if advert {
            icmpv6::Repr::NeighborAdvert { router: flags[0], solicited: flags[1], override_: flags[2], target, target_lladdr: opt }
        } else {
            icmpv6::Repr::NeighborSolicit { target, source_lladdr: opt }
        };
        let (s, d) = (Ipv6Addr::from(src | 1), Ipv6Addr::from(dst));
        let mut buf = vec![0u8; r.buffer_len()];
        r.emit(&s, &d, &mut icmpv6::Packet::new_unchecked(&mut buf[..]));
        prop_assert_eq!(icmpv6::Repr::parse(&s, &d, &icmpv6::Packet::new_checked(&buf[..]).unwrap()).unwrap(), r);
    }

    #[test]
    fn ethernet_round_trips(dst in any::<[u8; 6]>(), src in any::<[u8; 6]>(), vlan in proptest::option::of(0u16..4096), et in any::<u16>()) {
        prop_assume!(et != crate::wire::ethernet::ETHERTYPE_VLAN);
        let r = crate::wire::ethernet::Repr { dst: Mac(dst), src: Mac(src), vlan, ethertype: et };
        let mut buf = vec![0u8; r.header_len()];
        r.emit(&mut Frame::new_unchecked(&mut buf[..]));
        prop_assert_eq!(crate::wire::ethernet::Repr::parse(&Frame::new_checked(&buf[..]).unwrap()).unwrap(), r);
    }
}

#[test]
fn a_request_from_a_broadcast_or_multicast_sender_is_dropped_not_answered_to_all() {
    let mcast = Mac([0x01, 0, 0x5e, 0, 0, 1]);
    for sender in [Mac::BROADCAST, mcast] {
        let req = frames::arp_frame(
            Mac::BROADCAST,
            CLIENT,
            None,
            &arp::Repr {
                op: arp::Op::Request,
                sha: sender,
                spa: Ipv4Addr::new(198, 51, 100, 1),
                tha: Mac::ZERO,
                tpa: vip4(),
            },
        );
        assert_eq!(respond(&table(), &eth0(), &req), Err(DropReason::BadSender), "sha {sender:?}");
        let req = arp_request(Mac::BROADCAST, sender, Ipv4Addr::new(198, 51, 100, 1), vip4(), None);
        assert_eq!(respond(&table(), &eth0(), &req), Err(DropReason::BadSender), "frame source {sender:?}");
    }
    let sn = solicited_node(&vip6());
    let ns = frames::ndp_frame(
        Mac::ipv6_multicast(&sn),
        CLIENT,
        None,
        client6(),
        sn,
        &icmpv6::Repr::NeighborSolicit { target: vip6(), source_lladdr: Some(mcast) },
    );
    assert_eq!(respond(&table(), &eth0(), &ns), Err(DropReason::BadSender));
    assert!(!DropReason::BadSender.valid_request() && DropReason::WrongInterface.valid_request());
}

#[test]
fn another_host_claiming_an_announced_ip_is_a_conflict_and_the_defense_reclaims_it() {
    let t = table();
    // A gratuitous ARP (request and reply forms) for the VIP from another MAC.
    for op in [arp::Op::Request, arp::Op::Reply] {
        let garp = frames::arp_frame(
            Mac::BROADCAST,
            OTHER,
            None,
            &arp::Repr { op, sha: OTHER, spa: vip4(), tha: Mac::ZERO, tpa: vip4() },
        );
        assert_eq!(conflict(&t, &eth0(), &garp), Some(Conflict { ip: v4(vip4()), mac: OTHER, vlan: None }));
        assert_eq!(respond(&t, &eth0(), &garp), Err(DropReason::NotARequest), "not answered as a request");
    }
    // An unsolicited NA, and an NS sent from the VIP, by another host.
    let na = frames::unsolicited_advert(OTHER, vip6(), None);
    assert_eq!(conflict(&t, &eth0(), &na), Some(Conflict { ip: v6(vip6()), mac: OTHER, vlan: None }));
    let ns_from_vip = frames::ndp_frame(
        Mac::ipv6_multicast(&solicited_node(&client6())),
        OTHER,
        None,
        vip6(),
        solicited_node(&client6()),
        &icmpv6::Repr::NeighborSolicit { target: client6(), source_lladdr: Some(OTHER) },
    );
    assert_eq!(conflict(&t, &eth0(), &ns_from_vip).map(|c| c.mac), Some(OTHER));
    // Not conflicts: our own announcement, a request for the VIP, a DAD probe, an IP
    // not announced here, an ARP probe (from 0.0.0.0).
    let ours = frames::gratuitous_arp(OURS, vip4(), None);
    let not_ours = frames::gratuitous_arp(OTHER, Ipv4Addr::new(198, 51, 100, 99), None);
    let probe = frames::arp_frame(
        Mac::BROADCAST,
        OTHER,
        None,
        &arp::Repr { op: arp::Op::Request, sha: OTHER, spa: Ipv4Addr::UNSPECIFIED, tha: Mac::ZERO, tpa: vip4() },
    );
    let dad =
        ns(Mac::ipv6_multicast(&solicited_node(&vip6())), Ipv6Addr::UNSPECIFIED, solicited_node(&vip6()), vip6(), 255);
    for f in [&ours[0], &ours[1], &not_ours[0], &probe, &dad, &multicast_ns(vip6())] {
        assert_eq!(conflict(&t, &eth0(), f), None);
    }
    let other_iface = Iface { name: "eth1".into(), mac: Mac([0x02, 0, 0, 0, 0, 0x0c]) };
    assert_eq!(
        conflict(&t, &other_iface, &frames::gratuitous_arp(OTHER, vip4(), None)[0]),
        None,
        "not announced on eth1"
    );
    // The defense: this interface's gratuitous ARP, on the VLAN the claim came from.
    let c = Conflict { ip: v4(vip4()), mac: OTHER, vlan: Some(10) };
    let d = c.defense(&eth0());
    assert_eq!(d, frames::gratuitous_arp(OURS, vip4(), Some(10)).to_vec());
    assert_eq!(
        Conflict { ip: v6(vip6()), mac: OTHER, vlan: None }.defense(&eth0()),
        vec![frames::unsolicited_advert(OURS, vip6(), None)]
    );
}
