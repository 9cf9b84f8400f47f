//! The speaker's data path on real links: its packet sockets (with the BPF
//! filter) and responder inside node namespaces on a bridge, answering the
//! real `arping` and `ndisc6` and the client kernel's own neighbour discovery.
//! Runs as root (as `.ci/run` does).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferrolb_e2e::netns::in_netns;
use ferrolb_e2e::topology::{Topology, privileged};
use ferrolb_e2e::wait::until as eventually;
use ferrolb_speaker::l2::io::SysIo;
use ferrolb_speaker::l2::{Announcer, GratuitousTiming, Note};
use ferrolb_speaker::responder::{DropReason, Iface, respond};
use ferrolb_speaker::wire::Mac;
use ferrolb_speaker::wire::ethernet::Frame;
use ferrolb_speaker_sys::{PacketSocket, if_mac};

const VIP4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 100);

fn vip6() -> Ipv6Addr {
    "fd42:f1b::100".parse().unwrap()
}

#[derive(Default)]
struct Seen {
    answered_dst_macs: Vec<Mac>,
    drops: Vec<DropReason>,
}

/// The speaker's announcer and responder for the VIPs on `eth0` inside a node namespace:
/// gratuitous burst on takeover, solicited-node group joined, requests answered.
struct Responder {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
    thread: Option<std::thread::JoinHandle<std::io::Result<std::io::Result<()>>>>,
}

impl Responder {
    fn start(netns_path: &str) -> Responder {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (s2, seen2) = (stop.clone(), seen.clone());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let h = in_netns(netns_path, move || -> std::io::Result<()> {
            let sock = Arc::new(PacketSocket::open("eth0")?);
            let iface = Iface { name: "eth0".into(), mac: Mac(if_mac("eth0")?) };
            let mut io = SysIo::default();
            io.add(sock.clone());
            let mut announcer = Announcer::new(io, GratuitousTiming::default());
            let now = Instant::now();
            let _ = announcer.set_interfaces(vec![iface.clone()], now);
            let on = BTreeSet::from(["eth0".to_string()]);
            let desired = BTreeMap::from([(IpAddr::V4(VIP4), on.clone()), (IpAddr::V6(vip6()), on)]);
            for note in announcer.apply(&desired, now) {
                if let Note::Failed { what, .. } = note {
                    return Err(std::io::Error::other(what));
                }
            }
            let _ = ready_tx.send(());
            let mut buf = vec![0u8; 9000];
            while !s2.load(Ordering::SeqCst) {
                let wait =
                    announcer.next_due().map(|d| d.saturating_duration_since(Instant::now())).unwrap_or(Duration::MAX);
                if let Some(n) = sock.recv_timeout(&mut buf, wait.min(Duration::from_millis(50)))? {
                    match respond(announcer.table(), &iface, &buf[..n]) {
                        Ok(reply) => {
                            sock.send(&reply.frame)?;
                            let dst = Frame::new_checked(&buf[..n]).map(|f| f.dst()).unwrap_or_default();
                            seen2.lock().unwrap().answered_dst_macs.push(dst);
                        }
                        Err(r) => seen2.lock().unwrap().drops.push(r),
                    }
                }
                for note in announcer.tick(Instant::now()) {
                    if let Note::Failed { what, .. } = note {
                        return Err(std::io::Error::other(what));
                    }
                }
            }
            Ok(())
        })
        .expect("enter the node namespace");
        ready_rx.recv_timeout(Duration::from_secs(5)).expect("responder started");
        Responder { stop, seen, thread: Some(h) }
    }

    fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap().expect("entered the namespace").expect("responder ran without I/O errors");
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

#[test]
fn real_clients_resolve_the_vip_through_the_responder() {
    assert!(privileged(), "network tests need root (CI runs .ci/run as root)");
    let topo = Topology::new(2).expect("topology");
    let (n1, n2, client) = (&topo.nodes[0], &topo.nodes[1], &topo.client);
    let r1 = Responder::start(&n1.netns.path());

    // arping (iputils) learns node-1's MAC for the IPv4 VIP.
    let out = client
        .netns
        .exec(&["arping", "-c", "1", "-w", "3", "-I", "eth0", &VIP4.to_string()])
        .expect("arping got a reply");
    assert!(out.to_lowercase().contains(&n1.mac), "arping did not see {}: {out}", n1.mac);
    // An IP nobody announces stays unanswered.
    assert!(client.netns.exec(&["arping", "-c", "1", "-w", "1", "-I", "eth0", "198.51.100.101"]).is_err());

    // ndisc6 learns it for the IPv6 VIP.
    let out = client
        .netns
        .exec(&["ndisc6", "-1", "-r", "3", "-w", "500", &vip6().to_string(), "eth0"])
        .expect("ndisc6 got an answer");
    assert!(out.to_lowercase().contains(&n1.mac), "ndisc6 did not see {}: {out}", n1.mac);

    // The client kernel's own neighbour unreachability detection sends a unicast NS.
    client.netns.exec(&["sysctl", "-qw", "net.ipv6.neigh.eth0.delay_first_probe_time=1"]).unwrap();
    client
        .netns
        .exec(&["ip", "-6", "neigh", "replace", &vip6().to_string(), "lladdr", &n1.mac, "dev", "eth0", "nud", "stale"])
        .unwrap();
    let _ = client.netns.exec(&["ping", "-6", "-c", "1", "-W", "1", &vip6().to_string()]);
    eventually("unicast NS answered (entry REACHABLE)", Duration::from_secs(6), || {
        client
            .netns
            .exec(&["ip", "-6", "neigh", "show", &vip6().to_string(), "dev", "eth0"])
            .unwrap_or_default()
            .contains("REACHABLE")
    });
    let n1_mac: Mac = n1.mac.parse().unwrap();
    assert!(r1.seen.lock().unwrap().answered_dst_macs.contains(&n1_mac), "a unicast NS reached and was answered");

    // The client kernel resolves the IPv4 VIP itself (gratuitous ARP only updates entries).
    let _ = client.netns.exec(&["ping", "-c", "1", "-W", "1", &VIP4.to_string()]);
    eventually("IPv4 entry for node-1", Duration::from_secs(3), || {
        client
            .netns
            .exec(&["ip", "neigh", "show", &VIP4.to_string(), "dev", "eth0"])
            .unwrap_or_default()
            .contains(&n1.mac)
    });

    // Takeover: node-2 starts answering and announces; the client's entries move to node-2.
    r1.stop();
    let r2 = Responder::start(&n2.netns.path());
    eventually("IPv4 entry moved to node-2", Duration::from_secs(3), || {
        client
            .netns
            .exec(&["ip", "neigh", "show", &VIP4.to_string(), "dev", "eth0"])
            .unwrap_or_default()
            .contains(&n2.mac)
    });
    eventually("IPv6 entry moved to node-2", Duration::from_secs(3), || {
        client
            .netns
            .exec(&["ip", "-6", "neigh", "show", &vip6().to_string(), "dev", "eth0"])
            .unwrap_or_default()
            .contains(&n2.mac)
    });
    let out = client.netns.exec(&["arping", "-c", "1", "-w", "3", "-I", "eth0", &VIP4.to_string()]).unwrap();
    assert!(out.to_lowercase().contains(&n2.mac), "{out}");
    // The filter let only ARP and NS through: nothing the responder saw was data traffic.
    let seen = r2.seen.lock().unwrap().drops.clone();
    assert!(!seen.contains(&DropReason::NotArpOrIpv6) && !seen.contains(&DropReason::NotNdp), "{seen:?}");
    r2.stop();
}
