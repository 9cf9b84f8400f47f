//! ARP and NDP reply latency of the real speaker binary in the sandbox (one node,
//! the controller and the emulator running), answering for a dual-stack Service's
//! VIPs, next to the node's kernel answering for its own addresses on the same link,
//! interleaved in one run: timed by a tcpdump capture on the client, and by
//! `arping`'s own timer. Then bounded floods from the client: UDP data to the VIP
//! (the BPF filter should keep the speaker idle) and ARP requests (replies/s), with
//! the speaker process's CPU. Needs root.
//! Run with `cargo bench -p ferrolb-e2e --bench arp_latency`.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::process::Command;
use std::time::Duration;

use ferrolb_e2e::bench::{Row, cpu_time, pct, print_table};
use ferrolb_e2e::sandbox::{Options, Sandbox, State, create, pool_and_advertisement};
use ferrolb_e2e::topology::privileged;
use ferrolb_e2e::wait::eventually;
use k8s_openapi::api::core::v1::Service;
use kube::api::Api;
use serde_json::json;

const VIP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 100);
const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd42, 0xf1b, 0, 0, 0, 0, 0, 0x100);
/// Addresses nobody answers for, probed to mark the end of a capture.
const MARKER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 99);
const MARKER6: Ipv6Addr = Ipv6Addr::new(0xfd42, 0xf1b, 0, 0, 0, 0, 0, 0x99);

/// One ARP request from the client; arping's output (empty when nobody answered).
fn arping(client: &State, target: &str, wait_s: &str) -> String {
    client.client_exec(&["arping", "-c", "1", "-w", wait_s, "-I", &client.client_interface, target]).unwrap_or_default()
}

/// One neighbor solicitation from the client; ndisc6's output (empty when unanswered).
fn ndisc6(client: &State, target: &str) -> String {
    client.client_exec(&["ndisc6", "-1", "-r", "1", "-w", "500", target, &client.client_interface]).unwrap_or_default()
}

/// Per-reply round trips in ms, as arping reports them, for `n` single probes.
fn probe(client: &State, target: Ipv4Addr, n: usize) -> Vec<f64> {
    (0..n)
        .filter_map(|_| {
            let text = arping(client, &target.to_string(), "2");
            let line = text.lines().find(|l| l.contains("reply from"))?;
            line.split_whitespace().find_map(|w| w.strip_suffix("ms"))?.parse::<f64>().ok()
        })
        .collect()
}

fn main() {
    if !privileged() {
        eprintln!("arp_latency needs root (network namespaces); skipped");
        return;
    }
    let quick = !std::env::args().any(|a| a == "--bench");
    let n = if quick { 10 } else { 300 };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let sb = rt.block_on(Sandbox::up_opts(&Options { nodes: 1, ..Options::default() }, dir.path())).expect("sandbox");
    let c = sb.client.clone();
    rt.block_on(async {
        pool_and_advertisement(&c, "p", &[&format!("{VIP}/32"), &format!("{VIP6}/128")], "all").await?;
        create(
            &Api::<Service>::namespaced(c.clone(), "default"),
            json!({"metadata": {"name": "web"}, "spec": {"type": "LoadBalancer", "ipFamilyPolicy": "RequireDualStack",
                   "selector": {"app": "web"}, "ports": [{"port": 80}]}}),
        )
        .await
    })
    .expect("pool and Service");
    let st = &sb.state;
    let client = st;
    let node = &st.nodes[0].interfaces[0];
    let node_ip: Ipv4Addr = node.ipv4.parse().expect("node IPv4");
    let node_ip6: Ipv6Addr = node.ipv6.parse().expect("node IPv6");
    eventually("the speaker answers ARP and NDP for the VIPs", Duration::from_secs(30), || {
        let arp = arping(client, &VIP.to_string(), "1").contains("reply from");
        let ndp = ndisc6(client, &VIP6.to_string()).contains("Target link-layer address");
        (arp && ndp).then_some(())
    });
    let speaker = sb.pid(&format!("speaker/{}", st.nodes[0].name)).expect("the speaker runs");
    // Interleave the two so that machine load affects both alike.
    let mut kernel = Vec::new();
    let mut ours = Vec::new();
    for _ in 0..10 {
        kernel.extend(probe(client, node_ip, n / 10));
        ours.extend(probe(client, VIP, n / 10));
    }
    kernel.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    ours.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    let (cap_kernel, cap_ours, arp_unpaired) = capture_latency(client, node_ip, n);
    let (ndp_kernel, ndp_ours, ndp_unpaired) = ndp_capture_latency(client, node_ip6, n);
    let floods = floods(client, node_ip, speaker, quick);
    drop(sb);
    print_table(
        "ARP reply latency, request to reply as captured by tcpdump on the client",
        "µs",
        &[Row::new("kernel, node's own address (baseline)", cap_kernel), Row::new("ferrolb speaker, VIP", cap_ours)],
        Some("kernel, node's own address (baseline)"),
    );
    println!("requests without a reply in the capture: {arp_unpaired:?}");
    print_table(
        "NDP reply latency, NS to NA as captured by tcpdump on the client (ndisc6 probes)",
        "µs",
        &[Row::new("kernel, node's own address (baseline)", ndp_kernel), Row::new("ferrolb speaker, VIP", ndp_ours)],
        Some("kernel, node's own address (baseline)"),
    );
    println!("solicitations without an advertisement in the capture: {ndp_unpaired:?}");
    println!("{floods}");
    println!(
        "{:<28} {:>7} {:>10} {:>10} {:>10}",
        "ARP reply latency (arping)", "replies", "p50 ms", "p99 ms", "max ms"
    );
    for (name, v) in [("kernel, node's own address", &kernel), ("ferrolb speaker, VIP", &ours)] {
        println!("{name:<28} {:>7} {:>10.3} {:>10.3} {:>10.3}", v.len(), pct(v, 0.5), pct(v, 0.99), pct(v, 1.0));
    }
    println!(
        "ratio ferrolb/kernel: p50 {:.2}x, p99 {:.2}x",
        pct(&ours, 0.5) / pct(&kernel, 0.5),
        pct(&ours, 0.99) / pct(&kernel, 0.99)
    );
}

/// Run `probe` while tcpdump captures `filter` on the client's interface with
/// nanosecond timestamps; returns the capture's text. tcpdump gets packets from the
/// kernel in blocks, handed over when full or after a timeout, and drops the last
/// one when interrupted: so after the probes, `mark` is repeated (a probe for the
/// unanswered `marker` address) until the capture shows it, and only then is tcpdump
/// stopped. Without this, the last probes (always the VIP's) were missing.
fn captured(client: &State, filter: &str, marker: &str, probe: impl FnOnce(), mark: impl Fn()) -> String {
    use std::io::{BufRead, BufReader};
    let mut dump = client
        .client_command("tcpdump")
        .args(["-i", &client.client_interface, "-n", "-l", "-tt", "--time-stamp-precision=nano", filter])
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
    let stdout = dump.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    probe();
    let mut out = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let mut seen = false;
    while !seen && std::time::Instant::now() < deadline {
        mark();
        while let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
            seen |= l.contains(marker);
            out.push_str(&l);
            out.push('\n');
        }
    }
    assert!(seen, "the capture never showed the end marker {marker}");
    let _ = Command::new("kill").args(["-INT", &dump.id().to_string()]).status();
    let _ = dump.wait();
    let _ = reader.join();
    for l in rx.try_iter() {
        out.push_str(&l);
        out.push('\n');
    }
    out
}

/// Requests that got no reply in a capture, by target.
type Unpaired = BTreeMap<String, usize>;

/// Request-to-reply times (µs) from a tcpdump capture in the client namespace while
/// arping probes the node's own address and the VIP, interleaved.
fn capture_latency(client: &State, node_ip: Ipv4Addr, n: usize) -> (Vec<f64>, Vec<f64>, Unpaired) {
    let probes = || {
        for _ in 0..10 {
            for target in [node_ip, VIP] {
                for _ in 0..n / 10 {
                    let _ = arping(client, &target.to_string(), "1");
                }
            }
        }
    };
    let marker = MARKER.to_string();
    let out = captured(client, "arp", &format!("who-has {marker} "), probes, || {
        let _ = arping(client, &marker, "1");
    });
    let mut unpaired = Unpaired::new();
    let mut asked: BTreeMap<String, f64> = BTreeMap::new();
    let (mut kernel, mut ours) = (Vec::new(), Vec::new());
    for l in out.lines() {
        let w: Vec<&str> = l.split_whitespace().collect();
        let Some(ts) = w.first().and_then(|t| t.parse::<f64>().ok()) else { continue };
        match (w.get(2), w.get(3)) {
            (Some(&"Request"), Some(&"who-has")) => {
                if let Some(ip) = w.get(4)
                    && asked.insert(ip.to_string(), ts).is_some()
                {
                    *unpaired.entry(ip.to_string()).or_default() += 1;
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
    for ip in asked.into_keys() {
        *unpaired.entry(ip).or_default() += 1;
    }
    unpaired.remove(&marker);
    (kernel, ours, unpaired)
}

/// Bounded floods from the client: UDP data to the VIP (which the BPF filter should
/// keep away from the responder) and ARP requests (answered per second), each with
/// the speaker process's CPU.
fn floods(client: &State, node_ip: Ipv4Addr, speaker: u32, quick: bool) -> String {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/flood.py");
    let count = if quick { "20000" } else { "300000" };
    let run = |args: &[&str]| -> (serde_json::Value, f64) {
        let before = cpu_time(speaker).unwrap_or_default();
        let out = client.client_command("python3").arg(&script).args(args).output().expect("python3");
        let after = cpu_time(speaker).unwrap_or_default();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        (v, (after - before).as_secs_f64())
    };
    let src = "198.51.100.2";
    let (data, data_cpu) = run(&["udp", &VIP.to_string(), count]);
    let (arp_ours, ours_cpu) = run(&["arp", &client.client_interface, &VIP.to_string(), src, count]);
    let (arp_kernel, _) = run(&["arp", &client.client_interface, &node_ip.to_string(), src, count]);
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
fn ndp_capture_latency(client: &State, node_ip: Ipv6Addr, n: usize) -> (Vec<f64>, Vec<f64>, Unpaired) {
    let probes = || {
        for _ in 0..10 {
            for target in [node_ip, VIP6] {
                for _ in 0..n / 10 {
                    let _ = ndisc6(client, &target.to_string());
                }
            }
        }
    };
    let marker = MARKER6.to_string();
    let out = captured(client, "icmp6", &format!("who has {marker},"), probes, || {
        let _ = ndisc6(client, &marker);
    });
    let mut unpaired = Unpaired::new();
    let mut asked: BTreeMap<String, f64> = BTreeMap::new();
    let (mut kernel, mut ours) = (Vec::new(), Vec::new());
    for l in out.lines() {
        let Some(ts) = l.split_whitespace().next().and_then(|t| t.parse::<f64>().ok()) else { continue };
        let after = |marker: &str| -> Option<String> {
            let rest = l.split(marker).nth(1)?;
            Some(rest.split([',', ' ']).find(|w| !w.is_empty())?.to_string())
        };
        if let Some(ip) = after("neighbor solicitation, who has ") {
            if asked.insert(ip.clone(), ts).is_some() {
                *unpaired.entry(ip).or_default() += 1;
            }
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
    for ip in asked.into_keys() {
        *unpaired.entry(ip).or_default() += 1;
    }
    unpaired.remove(&marker);
    (kernel, ours, unpaired)
}
