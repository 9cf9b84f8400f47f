//! ARP reply latency: the speaker's responder answering for a VIP, next to the
//! node's kernel answering for an address of its own, on the same link, in one
//! run. The client is the real `arping`, whose per-reply times are collected.
//! Needs root. Run with `cargo bench -p ferrolb-e2e --bench arp_latency`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ferrolb_e2e::topology::{Host, Topology, privileged};
use ferrolb_speaker::announce::{Announcer, Timing};
use ferrolb_speaker::responder::{Iface, respond};
use ferrolb_speaker::sys::{PacketSocket, SysIo, if_mac, in_netns};

const VIP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 100);

/// Per-reply round trips in ms, as arping reports them, for `n` single probes.
fn probe(client: &Host, target: Ipv4Addr, n: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let text =
            client.netns.exec(&["arping", "-c", "1", "-w", "2", "-I", "eth0", &target.to_string()]).unwrap_or_default();
        if let Some(ms) = text
            .lines()
            .find(|l| l.contains("reply from"))
            .and_then(|l| l.split_whitespace().find_map(|w| w.strip_suffix("ms")))
        {
            if let Ok(v) = ms.parse::<f64>() {
                out.push(v);
            }
        }
    }
    out.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    out
}

fn pct(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    if !privileged() {
        eprintln!("arp_latency needs root (network namespaces); skipped");
        return;
    }
    let quick = !std::env::args().any(|a| a == "--bench");
    let n = if quick { 10 } else { 300 };
    let topo = Topology::new(1).expect("topology");
    let node = &topo.nodes[0];
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let h = in_netns(&node.netns.path(), move || -> std::io::Result<()> {
        let sock = Arc::new(PacketSocket::open_blocking("eth0")?);
        let iface = Iface { name: "eth0".into(), mac: if_mac("eth0")? };
        let mut io = SysIo::default();
        io.add(sock.clone());
        let mut a = Announcer::new(io, Timing::default());
        a.set_interfaces(vec![iface.clone()], Instant::now());
        a.apply(&BTreeMap::from([(IpAddr::V4(VIP), BTreeSet::from(["eth0".to_string()]))]), Instant::now());
        let _ = ready_tx.send(());
        let mut buf = vec![0u8; 9000];
        while !s2.load(Ordering::SeqCst) {
            if let Some(len) = sock.recv_timeout(&mut buf, Duration::from_millis(50))?
                && let Ok(r) = respond(a.table(), &iface, &buf[..len])
            {
                sock.send(&r.frame)?;
            }
        }
        Ok(())
    })
    .expect("netns");
    ready_rx.recv_timeout(Duration::from_secs(5)).expect("responder up");
    // Interleave the two so that machine load affects both alike.
    let mut kernel = Vec::new();
    let mut ours = Vec::new();
    for _ in 0..10 {
        kernel.extend(probe(&topo.client, node.ipv4, n / 10));
        ours.extend(probe(&topo.client, VIP, n / 10));
    }
    kernel.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    ours.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    stop.store(true, Ordering::SeqCst);
    let _ = h.join();
    println!(
        "{:<28} {:>7} {:>10} {:>10} {:>10}",
        "ARP reply latency (arping)", "replies", "p50 ms", "p99 ms", "max ms"
    );
    for (name, v) in [("kernel, node's own address", &kernel), ("ferrolb responder, VIP", &ours)] {
        println!("{name:<28} {:>7} {:>10.3} {:>10.3} {:>10.3}", v.len(), pct(v, 0.5), pct(v, 0.99), pct(v, 1.0));
    }
    println!(
        "ratio ferrolb/kernel: p50 {:.2}x, p99 {:.2}x",
        pct(&ours, 0.5) / pct(&kernel, 0.5),
        pct(&ours, 0.99) / pct(&kernel, 0.99)
    );
}
