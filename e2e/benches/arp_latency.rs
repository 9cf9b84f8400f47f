//! ARP reply latency: the speaker's responder (the library, in a thread of this
//! process) answering for a VIP, next to the node's kernel answering for an address
//! of its own, on the same link, in one run: timed by a tcpdump capture on the client
//! and by `arping`'s own timer. Then bounded floods from the client: UDP data to the
//! VIP (the BPF filter should keep the responder idle) and ARP requests (replies/s).
//! The same capture times neighbor solicitations to advertisements for an IPv6 VIP.
//! Needs root. Run with `cargo bench -p ferrolb-e2e --bench arp_latency`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ferrolb_e2e::bench::{Row, cpu_time, print_table};
use ferrolb_e2e::topology::{Host, Topology, privileged};
use ferrolb_speaker::announce::{Announcer, Timing};
use ferrolb_speaker::responder::{Iface, respond};
use ferrolb_speaker::sys::{PacketSocket, SysIo, if_mac, in_netns};

const VIP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 100);
const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd42, 0xf1b, 0, 0, 0, 0, 0, 0x100);

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
        let eth0 = BTreeSet::from(["eth0".to_string()]);
        a.apply(&BTreeMap::from([(IpAddr::V4(VIP), eth0.clone()), (IpAddr::V6(VIP6), eth0)]), Instant::now());
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
    let (cap_kernel, cap_ours) = capture_latency(&topo.client, node.ipv4, n);
    let (ndp_kernel, ndp_ours) = ndp_capture_latency(&topo.client, node.ipv6, n);
    let floods = floods(&topo.client, node.ipv4, quick);
    stop.store(true, Ordering::SeqCst);
    let _ = h.join();
    print_table(
        "ARP reply latency, request to reply as captured by tcpdump on the client",
        "µs",
        &[Row::new("kernel, node's own address (baseline)", cap_kernel), Row::new("ferrolb responder, VIP", cap_ours)],
        Some("kernel, node's own address (baseline)"),
    );
    print_table(
        "NDP reply latency, NS to NA as captured by tcpdump on the client (ndisc6 probes)",
        "µs",
        &[Row::new("kernel, node's own address (baseline)", ndp_kernel), Row::new("ferrolb responder, VIP", ndp_ours)],
        Some("kernel, node's own address (baseline)"),
    );
    println!("{floods}");
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

/// Run `probe` while tcpdump captures `filter` on the client's eth0 with nanosecond
/// timestamps; returns the capture's text.
fn captured(client: &Host, filter: &str, probe: impl FnOnce()) -> String {
    use std::io::{BufRead, BufReader, Read};
    let mut dump = client
        .netns
        .command("tcpdump")
        .args(["-i", "eth0", "-n", "-l", "-tt", "--time-stamp-precision=nano", filter])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("tcpdump");
    let mut err = BufReader::new(dump.stderr.take().expect("stderr"));
    let mut line = String::new();
    while err.read_line(&mut line).unwrap_or(0) > 0 && !line.contains("listening on") {
        line.clear();
    }
    // Read the capture as it comes, so that a full pipe never stalls tcpdump.
    let mut stdout = dump.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        out
    });
    probe();
    let _ = std::process::Command::new("kill").args(["-INT", &dump.id().to_string()]).status();
    let _ = dump.wait();
    reader.join().unwrap_or_default()
}

/// Request-to-reply times (µs) from a tcpdump capture in the client namespace while
/// arping probes the node's own address and the VIP, interleaved.
fn capture_latency(client: &Host, node_ip: Ipv4Addr, n: usize) -> (Vec<f64>, Vec<f64>) {
    let out = captured(client, "arp", || {
        for _ in 0..10 {
            for target in [node_ip, VIP] {
                for _ in 0..n / 10 {
                    let _ = client.netns.exec(&["arping", "-c", "1", "-w", "1", "-I", "eth0", &target.to_string()]);
                }
            }
        }
    });
    let mut asked: BTreeMap<String, f64> = BTreeMap::new();
    let (mut kernel, mut ours) = (Vec::new(), Vec::new());
    for l in out.lines() {
        let w: Vec<&str> = l.split_whitespace().collect();
        let Some(ts) = w.first().and_then(|t| t.parse::<f64>().ok()) else { continue };
        match (w.get(2), w.get(3)) {
            (Some(&"Request"), Some(&"who-has")) => {
                if let Some(ip) = w.get(4) {
                    asked.insert(ip.to_string(), ts);
                }
            }
            (Some(&"Reply"), Some(ip)) => {
                if let Some(t0) = asked.remove(*ip) {
                    let us = (ts - t0) * 1e6;
                    if *ip == VIP.to_string() {
                        ours.push(us);
                    } else if *ip == node_ip.to_string() {
                        kernel.push(us);
                    }
                }
            }
            _ => {}
        }
    }
    (kernel, ours)
}

/// Bounded floods from the client: UDP data to the VIP (which the BPF filter should
/// keep away from the responder) and ARP requests (answered per second), each with
/// this process's CPU (the responder thread is the only busy one here).
fn floods(client: &Host, node_ip: Ipv4Addr, quick: bool) -> String {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/flood.py");
    let count = if quick { "20000" } else { "300000" };
    let run = |args: &[&str]| -> (serde_json::Value, f64) {
        let before = cpu_time(std::process::id()).unwrap_or_default();
        let out = client.netns.command("python3").arg(&script).args(args).output().expect("python3");
        let after = cpu_time(std::process::id()).unwrap_or_default();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        (v, (after - before).as_secs_f64())
    };
    let src = "198.51.100.2";
    let (data, data_cpu) = run(&["udp", &VIP.to_string(), count]);
    let (arp_ours, ours_cpu) = run(&["arp", "eth0", &VIP.to_string(), src, count]);
    let (arp_kernel, _) = run(&["arp", "eth0", &node_ip.to_string(), src, count]);
    let secs = |v: &serde_json::Value| v["seconds"].as_f64().unwrap_or(f64::NAN);
    let rate = |v: &serde_json::Value| v["replies"].as_f64().unwrap_or(0.0) / secs(v);
    format!(
        "\nFloods from the client (bounded by count and 20 s):\n\
         - UDP to the VIP: {} datagrams in {:.2} s ({:.0}/s); responder process CPU {:.1}% of a core\n\
         - ARP requests for the VIP: {} sent, {} answered by ferrolb in {:.2} s ({:.0} replies/s); CPU {:.1}% of a core\n\
         - ARP requests for the node's own address: {} sent, {} answered by the kernel ({:.0} replies/s); \
         ferrolb/kernel {:.2}x",
        data["sent"],
        secs(&data),
        data["sent"].as_f64().unwrap_or(0.0) / secs(&data),
        100.0 * data_cpu / secs(&data),
        arp_ours["sent"],
        arp_ours["replies"],
        secs(&arp_ours),
        rate(&arp_ours),
        100.0 * ours_cpu / secs(&arp_ours),
        arp_kernel["sent"],
        arp_kernel["replies"],
        rate(&arp_kernel),
        rate(&arp_ours) / rate(&arp_kernel)
    )
}

/// Neighbor solicitation to advertisement times (µs) from a capture in the client
/// namespace while ndisc6 probes the node's own IPv6 address and the IPv6 VIP.
fn ndp_capture_latency(client: &Host, node_ip: Ipv6Addr, n: usize) -> (Vec<f64>, Vec<f64>) {
    let out = captured(client, "icmp6", || {
        for _ in 0..10 {
            for target in [node_ip, VIP6] {
                for _ in 0..n / 10 {
                    let _ = client.netns.exec(&["ndisc6", "-1", "-r", "1", "-w", "500", &target.to_string(), "eth0"]);
                }
            }
        }
    });
    let mut asked: BTreeMap<String, f64> = BTreeMap::new();
    let (mut kernel, mut ours) = (Vec::new(), Vec::new());
    for l in out.lines() {
        let Some(ts) = l.split_whitespace().next().and_then(|t| t.parse::<f64>().ok()) else { continue };
        let after = |marker: &str| -> Option<String> {
            let rest = l.split(marker).nth(1)?;
            Some(rest.split([',', ' ']).find(|w| !w.is_empty())?.to_string())
        };
        if let Some(ip) = after("neighbor solicitation, who has ") {
            asked.insert(ip, ts);
        } else if let Some(ip) = after("neighbor advertisement, tgt is ")
            && let Some(t0) = asked.remove(&ip)
        {
            let us = (ts - t0) * 1e6;
            if ip == VIP6.to_string() {
                ours.push(us);
            } else if ip == node_ip.to_string() {
                kernel.push(us);
            }
        }
    }
    (kernel, ours)
}
