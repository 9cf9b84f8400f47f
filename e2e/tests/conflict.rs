//! An IP conflict, end to end, with the speakers as the chart installs them: a host
//! on the segment configures a Service's VIP and announces it (real `arping -U` for
//! IPv4; an unsolicited Neighbor Advertisement with the override flag for IPv6). The
//! holding speaker re-announces at once, so a neighbour's kernel cache points back at
//! the holder instead of the other host; the conflict is counted and raises a
//! Warning Event on the Service naming the other host's MAC. Announcement refreshes
//! are set to an hour here, so only the defense can have won the cache back.

use std::process::Command;
use std::time::Duration;

use ferrolb_crds::ServiceL2Status;
use ferrolb_crds::conditions::event;
use ferrolb_e2e::harness::Harness;
use ferrolb_e2e::sandbox::{NS, Options, dual_stack_web};
use ferrolb_e2e::wait::eventually;
use kube::api::Api;
use serde_json::json;

const VIP4: &str = "198.51.100.100";
const VIP6: &str = "fd42:f1b::100";

fn ip(netns: &str, args: &[&str]) -> String {
    let out = Command::new("ip").args(["-n", netns]).args(args).output().expect("ip");
    assert!(out.status.success(), "ip -n {netns} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The MAC `netns`'s kernel has for `addr` (any state but FAILED/INCOMPLETE).
fn neighbour(netns: &str, addr: &str) -> Option<String> {
    let out = ip(netns, &["-j", "neigh", "show", "to", addr]);
    let v: serde_json::Value = serde_json::from_str(&out).ok()?;
    v.as_array()?.iter().find_map(|e| e["lladdr"].as_str().map(str::to_lowercase))
}

#[test]
fn a_host_that_claims_a_vip_is_answered_with_a_defense_and_reported() {
    let values = json!({"speaker": {"refreshInterval": 3600}});
    let h = Harness::up(&Options { nodes: 2, values, ..Options::default() });
    let (rt, sb) = (&h.rt, h.sb());
    let c = sb.client.clone();
    rt.block_on(dual_stack_web(&c, VIP4, VIP6)).unwrap();
    let statuses: Api<ServiceL2Status> = Api::namespaced(c.clone(), NS);
    let holder = eventually("web announced", Duration::from_secs(30), || {
        rt.block_on(statuses.get_opt("default.web")).ok().flatten()?.status.map(|s| s.node).filter(|n| !n.is_empty())
    });
    let st = &sb.state;
    let node = |name: &str| st.nodes.iter().find(|n| n.name == name).expect("node").clone();
    let holder_mac = node(&holder).interfaces[0].mac.to_lowercase();
    let observer = st.nodes.iter().find(|n| n.name != holder).expect("two nodes").netns.clone();
    let (client, client_if) = (st.client_netns.clone(), st.client_interface.clone());
    let impostor_mac = sb.topo.client.mac.to_lowercase();
    let metric = |name: &str| st.speaker_metric(&holder, name);

    // The observer resolves both VIPs the ordinary way (its kernel, by ping). With a
    // TTL of 1: the holder, a router in kube-proxy mode (`ip_forward`), would otherwise
    // forward the echo on towards the VIP itself and hold it until the VIP resolves,
    // which happens when the impostor claims it: the impostor then answers the
    // observer, and its ARP request (from the VIP, for the observer's address) poisons
    // the observer's cache after ferrolb's defence, as it would on a real network.
    for (vip, v6) in [(VIP4, false), (VIP6, true)] {
        eventually("the observer's kernel resolves the VIP to the holder", Duration::from_secs(20), || {
            let mut ping = Command::new("ip");
            ping.args(["netns", "exec", &observer, "ping", "-c", "1", "-W", "1", "-t", "1"]);
            if v6 {
                ping.arg("-6");
            }
            let _ = ping.arg(vip).output();
            (neighbour(&observer, vip).as_deref() == Some(holder_mac.as_str())).then_some(())
        });
    }

    // IPv4: the client configures the VIP and announces it with arping -U.
    let before = metric("ferrolb_speaker_ip_conflicts_total");
    ip(&client, &["addr", "add", &format!("{VIP4}/32"), "dev", &client_if]);
    let out = Command::new("ip")
        .args(["netns", "exec", &client, "arping", "-U", "-c", "1", "-I", &client_if, "-s", VIP4, VIP4])
        .output()
        .expect("arping");
    assert!(out.status.success() || out.stdout.is_empty(), "arping -U: {}", String::from_utf8_lossy(&out.stderr));
    eventually("the holder sees the conflict", Duration::from_secs(10), || {
        (metric("ferrolb_speaker_ip_conflicts_total") > before).then_some(())
    });
    eventually("the observer's ARP cache points at the holder again", Duration::from_secs(5), || {
        (neighbour(&observer, VIP4).as_deref() == Some(holder_mac.as_str())).then_some(())
    });

    // IPv6: an unsolicited NA with the override flag, from the client's MAC.
    let before = metric("ferrolb_speaker_ip_conflicts_total");
    let mac: ferrolb_speaker::wire::Mac = impostor_mac.parse().expect("a MAC");
    let na = ferrolb_speaker::frames::unsolicited_advert(mac, VIP6.parse().expect("literal"), None);
    let iface = client_if.clone();
    ferrolb_e2e::netns::in_netns(&format!("/run/netns/{client}"), move || {
        ferrolb_speaker_sys::PacketSocket::open(&iface).and_then(|s| s.send(&na))
    })
    .expect("enter the client namespace")
    .join()
    .expect("thread")
    .expect("netns")
    .expect("send the NA");
    eventually("the holder sees the IPv6 conflict", Duration::from_secs(10), || {
        (metric("ferrolb_speaker_ip_conflicts_total") > before).then_some(())
    });
    eventually("the observer's NDP cache points at the holder again", Duration::from_secs(5), || {
        (neighbour(&observer, VIP6).as_deref() == Some(holder_mac.as_str())).then_some(())
    });

    // The Service says who took its IP.
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(c.clone(), "default");
    let notes = eventually("a Warning Event on the Service names the other host", Duration::from_secs(15), || {
        let list = rt.block_on(events.list(&Default::default())).ok()?;
        let notes: Vec<String> = list
            .items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some(event::IP_CONFLICT) && e.type_.as_deref() == Some("Warning"))
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("web"))
            .filter_map(|e| e.note)
            .collect();
        (notes.iter().any(|n| n.contains(VIP4)) && notes.iter().any(|n| n.contains(VIP6))).then_some(notes)
    });
    assert!(notes.iter().all(|n| n.contains(&impostor_mac)), "{notes:?}");
}
