//! 802.1Q-tagged requests on a trunk, with the speakers as the chart installs them.
//! The kernel strips a received frame's VLAN tag into out-of-band data; a speaker
//! that did not read it answered a request from VLAN 10 untagged, into the native
//! VLAN. Here the client sends ARP requests and neighbor solicitations tagged with
//! VLAN 10 (and one untagged ARP request as a control) and captures what comes back
//! on its trunk: only the control is answered, and the holder counts the tagged ones
//! as `vlan_tagged` (left to a VLAN 10 interface, which these nodes do not have).
//!
//! A real `eth0.10` cannot be made on this machine: its kernel has no 802.1Q support
//! (`CONFIG_VLAN_8021Q` unset, no bridge VLAN filtering). The second test stands a
//! veth named `eth0.10` on a segment of its own in for it: to a packet socket, a VLAN
//! device is an Ethernet interface that carries its VLAN's frames untagged, which is
//! what a veth on a separate bridge carries.

use std::io::Read;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::process::{Command, Stdio};
use std::time::Duration;

use ferrolb_crds::ServiceL2Status;
use ferrolb_e2e::harness::Harness;
use ferrolb_e2e::sandbox::{NS, Options, dual_stack_web, metric_sum};
use ferrolb_e2e::wait::eventually;
use ferrolb_speaker::wire::{Mac, arp, icmpv6, solicited_node};
use kube::api::Api;

const VIP4: &str = "198.51.100.100";
const VIP6: &str = "fd42:f1b::100";

#[test]
fn requests_tagged_with_another_vlan_are_not_answered_into_the_native_one() {
    let h = Harness::up(&Options { nodes: 2, ..Options::default() });
    let st = h.sb().state.clone();
    let c = h.sb().client.clone();
    h.rt.block_on(dual_stack_web(&c, VIP4, VIP6)).unwrap();
    let statuses: Api<ServiceL2Status> = Api::namespaced(c.clone(), NS);
    let holder = eventually("web announced", Duration::from_secs(30), || {
        h.rt.block_on(statuses.get_opt("default.web")).ok().flatten()?.status.map(|s| s.node).filter(|n| !n.is_empty())
    });
    eventually("the holder answers untagged requests", Duration::from_secs(20), || {
        (!st.arp_replies(VIP4, 1).is_empty()).then_some(())
    });
    let client = &st.client_netns;
    let me: Mac = h.sb().topo.client.mac.parse().expect("a MAC");
    let (vip4, vip6): (Ipv4Addr, Ipv6Addr) = (VIP4.parse().unwrap(), VIP6.parse().unwrap());
    let client4 = Ipv4Addr::new(198, 51, 100, 2);
    let client6: Ipv6Addr = "fd42:f1b::2".parse().unwrap();
    let arp_req = |vlan| {
        ferrolb_speaker::frames::arp_frame(
            Mac::BROADCAST,
            me,
            vlan,
            &arp::Repr { op: arp::Op::Request, sha: me, spa: client4, tha: Mac::ZERO, tpa: vip4 },
        )
    };
    let sn = solicited_node(&vip6);
    let ns_tagged = ferrolb_speaker::frames::ndp_frame(
        Mac::ipv6_multicast(&sn),
        me,
        Some(10),
        client6,
        sn,
        &icmpv6::Repr::NeighborSolicit { target: vip6, source_lladdr: Some(me) },
    );
    let tagged = vec![arp_req(Some(10)), arp_req(Some(10)), arp_req(Some(10)), ns_tagged];
    let control = arp_req(None);

    // Capture the client's trunk while it asks.
    let mut dump = Command::new("ip")
        .args(["netns", "exec", client, "tcpdump", "-l", "-e", "-n", "-i", "eth0", "arp or icmp6 or vlan"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tcpdump");
    let mut err = dump.stderr.take().unwrap();
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    while !String::from_utf8_lossy(&seen).contains("listening on") {
        assert_eq!(
            err.read(&mut byte).expect("tcpdump stderr"),
            1,
            "tcpdump ended: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.push(byte[0]);
    }
    let captured = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let reader = {
        let (mut stdout, captured) = (dump.stdout.take().unwrap(), captured.clone());
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                captured.lock().unwrap().push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
        })
    };
    let before =
        metric_sum(&st.speaker_metrics(&holder), "ferrolb_layer2_dropped_total", Some(("reason", "vlan_tagged")));
    let frames: Vec<Vec<u8>> = tagged.into_iter().chain([control]).collect();
    ferrolb_e2e::netns::in_netns(&format!("/run/netns/{client}"), move || -> std::io::Result<()> {
        let s = ferrolb_speaker_sys::PacketSocket::open("eth0")?;
        for f in &frames {
            s.send(f)?;
        }
        Ok(())
    })
    .expect("enter the client namespace")
    .join()
    .expect("thread")
    .expect("netns")
    .expect("send the requests");
    // Witnesses: the holder counted the four tagged requests, and the control, sent
    // last and answered by the same thread in order, came back: any reply to a tagged
    // request would have come before it.
    eventually("the holder saw the tagged requests", Duration::from_secs(10), || {
        let now =
            metric_sum(&st.speaker_metrics(&holder), "ferrolb_layer2_dropped_total", Some(("reason", "vlan_tagged")));
        (now >= before + 4.0).then_some(())
    });
    eventually("the untagged control is answered", Duration::from_secs(5), || {
        captured.lock().unwrap().lines().any(|l| l.contains("is-at") && l.contains(VIP4)).then_some(())
    });
    let _ = Command::new("kill").arg(dump.id().to_string()).status();
    let _ = dump.wait();
    let _ = reader.join();
    let out = captured.lock().unwrap().clone();
    // Answers are unicast to the client; the holder's periodic gratuitous ARP and
    // unsolicited NAs (broadcast, all-nodes) are not answers.
    let to_me = format!("> {}", h.sb().topo.client.mac.to_lowercase());
    let answers = |l: &&str| l.contains(&to_me);
    let arp_replies: Vec<&str> =
        out.lines().filter(answers).filter(|l| l.contains("is-at") && l.contains(VIP4)).collect();
    let na: Vec<&str> =
        out.lines().filter(answers).filter(|l| l.contains("neighbor advertisement") && l.contains(VIP6)).collect();
    assert_eq!(arp_replies.len(), 1, "only the untagged control is answered: {arp_replies:?}");
    assert!(!arp_replies[0].contains("vlan"), "{arp_replies:?}");
    assert!(na.is_empty(), "the tagged solicitation is not answered: {na:?}");
}

/// An advertisement that names only the VLAN interface: the VIPs are answered there
/// (ARP and NDP, with that interface's MAC) and not on the native segment.
#[test]
fn an_advertisement_naming_the_vlan_interface_answers_only_there() {
    let h = Harness::up(&Options { nodes: 2, ..Options::default() });
    let c = h.sb().client.clone();
    let macs = h.sb().topo.add_second_network("eth0.10").expect("the VLAN 10 stand-in");
    let (vip4, vip6) = ("203.0.113.100", "fd42:f1b:10::100");
    let objects = [
        serde_json::json!({"apiVersion": ferrolb_crds::API_VERSION, "kind": "IPAddressPool", "metadata": {"name": "vlan10", "namespace": NS},
            "spec": {"addresses": [format!("{vip4}/32"), format!("{vip6}/128")], "autoAssign": false}}),
        serde_json::json!({"apiVersion": ferrolb_crds::API_VERSION, "kind": "L2Advertisement", "metadata": {"name": "vlan10", "namespace": NS},
            "spec": {"ipAddressPools": ["vlan10"], "interfaces": ["eth0.10"]}}),
        serde_json::json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web10", "namespace": "default", "annotations": {"ferrolb.io/address-pool": "vlan10"}},
            "spec": {"type": "LoadBalancer", "ipFamilyPolicy": "RequireDualStack", "ipFamilies": ["IPv4", "IPv6"],
                     "ports": [{"port": 80}]}}),
    ];
    let stream: Vec<String> = objects.iter().map(|o| o.to_string()).collect();
    h.sb().kubectl_apply(&stream.join("\n---\n")).expect("kubectl apply");
    let statuses: Api<ServiceL2Status> = Api::namespaced(c, NS);
    let holder = eventually("web10 announced", Duration::from_secs(30), || {
        h.rt.block_on(statuses.get_opt("default.web10"))
            .ok()
            .flatten()?
            .status
            .map(|s| s.node)
            .filter(|n| !n.is_empty())
    });
    let idx: usize = holder.trim_start_matches("node-").parse::<usize>().unwrap() - 1;
    let st = &h.sb().state;
    let on_vlan = ferrolb_e2e::client::ClientHost::new(&st.client_netns, "eth0.10");
    for vip in [vip4, vip6] {
        let got =
            eventually(&format!("{vip} answered on VLAN 10"), Duration::from_secs(15), || on_vlan.answering_mac(vip));
        assert_eq!(got, macs[idx], "{vip}: answered with the holder's eth0.10 MAC");
        assert_eq!(st.client().answering_mac(vip), None, "{vip}: not answered on the native segment");
    }
}
