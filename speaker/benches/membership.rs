//! The heartbeat detector at scale, in the deterministic simulator
//! (`ferrolb_speaker::membership::sim`): the speaker's own detector code on a
//! simulated clock and network.
//!
//! 1. Cost and detection by cluster size: per-node datagrams and bytes per second in
//!    steady state, then crashes and a graceful leave, with the previous release's
//!    all-to-all protocol as the baseline (the same code in its legacy mode).
//! 2. Robustness at 1,000 nodes: 1 % loss on every link, one node's CPU saturated,
//!    one node that lost half its observers' links, crashes meanwhile; false deaths
//!    counted.
//!
//! `cargo bench -p ferrolb-speaker --bench membership` (a few minutes);
//! `FERROLB_BENCH_SOAK=600` makes section 2 ten simulated minutes,
//! `FERROLB_BENCH_MAX_NODES=3000` adds 3,000 nodes to section 1 (about ten minutes
//! more: every node's first broadcast reaches every other), `FERROLB_BENCH_SECTIONS=2`
//! runs only section 2. Without `--bench` (CI's `cargo test --benches`) it runs a
//! small smoke version.

use std::time::{Duration, Instant};

use ferrolb_speaker::membership::HeartbeatTiming;
use ferrolb_speaker::membership::sim::{Net, Sim, Stalls};

/// The speaker's default Lease duration (`--lease-duration`).
const LEASE: Duration = Duration::from_secs(15);

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// Per-node rates over a window: (sent/s mean, max, received/s mean, max, sent KB/s
/// mean, received KB/s mean).
fn rates(sim: &Sim, before: &[ferrolb_speaker::membership::sim::Traffic], secs: f64) -> [f64; 6] {
    let mut r = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
    let mut n = 0.0;
    for (i, b) in before.iter().enumerate() {
        if !sim.running(i) {
            continue;
        }
        let t = sim.traffic(i);
        let sent = (t.sent - b.sent) as f64 / secs;
        let recv = (t.received - b.received) as f64 / secs;
        r[0] += sent;
        r[1] = r[1].max(sent);
        r[2] += recv;
        r[3] = r[3].max(recv);
        r[4] += (t.sent_bytes - b.sent_bytes) as f64 / secs / 1000.0;
        r[5] += (t.received_bytes - b.received_bytes) as f64 / secs / 1000.0;
        n += 1.0;
    }
    for i in [0, 2, 4, 5] {
        r[i] /= n;
    }
    r
}

/// Detection times (ms) over every watch and every running node; and how many
/// (watch, node) pairs never saw it.
fn detections(sim: &Sim, leaves: bool) -> (Vec<f64>, usize) {
    let mut all = Vec::new();
    let mut missed = 0;
    for w in &sim.watches {
        if sim.running(w.node) == leaves {
            for d in sim.detection(w) {
                match d {
                    Some(d) => all.push(ms(d)),
                    None => missed += 1,
                }
            }
        }
    }
    all.sort_by(f64::total_cmp);
    (all, missed)
}

struct Row {
    label: String,
    n: usize,
    rates: [f64; 6],
    crash: (Vec<f64>, usize),
    leave: (Vec<f64>, usize),
    false_deaths: usize,
    wall: Duration,
}

fn print_row(r: &Row) {
    let (c, cm) = &r.crash;
    let (l, _) = &r.leave;
    println!(
        "{:<12} {:>5} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>7.0} {:>7.0} {:>7.0} {:>6} {:>7.1} {:>6} {:>7.1}",
        r.label,
        r.n,
        r.rates[0],
        r.rates[1],
        r.rates[2],
        r.rates[3],
        r.rates[4],
        r.rates[5],
        pct(c, 0.5),
        pct(c, 0.95),
        c.last().copied().unwrap_or(f64::NAN),
        cm,
        pct(l, 0.95),
        r.false_deaths,
        r.wall.as_secs_f64(),
    );
}

/// Steady state for `steady`, then `crashes` crashes and one leave, `gap` apart.
fn scale_run(label: &str, n: usize, timing: HeartbeatTiming, legacy: bool, steady: Duration, crashes: usize) -> Row {
    let started = Instant::now();
    let mut sim = Sim::new(n, timing, Net::default(), 7 + n as u64);
    if legacy {
        sim.all_legacy();
    }
    let warm = Duration::from_secs(3);
    sim.run_until(warm);
    let before: Vec<_> = (0..n).map(|i| sim.traffic(i)).collect();
    sim.run_until(warm + steady);
    let rates = rates(&sim, &before, steady.as_secs_f64());
    let gap = Duration::from_secs(2);
    let mut t = sim.now();
    // At most a fifth of the nodes, distinct, spread over the cluster, each at another
    // phase of the heartbeat interval.
    let crashes = crashes.min(n / 5).max(1);
    for k in 0..crashes {
        let victim = (k * n / crashes + 3) % n;
        t += gap + Duration::from_micros((k as u64 * 17_389) % timing.interval.as_micros() as u64);
        sim.run_until(t);
        sim.crash(victim);
    }
    t += gap;
    sim.run_until(t);
    let leaver = (n / crashes / 2 + 3) % n;
    assert!(sim.running(leaver));
    sim.leave(leaver);
    sim.run_until(t + gap);
    Row {
        label: label.into(),
        n,
        rates,
        crash: detections(&sim, false),
        leave: detections(&sim, true),
        false_deaths: sim.false_deaths.len(),
        wall: started.elapsed(),
    }
}

fn header(title: &str) {
    println!("\n{title}");
    println!(
        "{:<12} {:>5} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7} {:>7} {:>6} {:>7} {:>6} {:>7}",
        "protocol",
        "nodes",
        "sent/s",
        "max",
        "recv/s",
        "max",
        "sentKB/s",
        "recvKB/s",
        "det p50",
        "p95",
        "max ms",
        "missed",
        "leave95",
        "false",
        "wall s"
    );
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let soak: u64 = std::env::var("FERROLB_BENCH_SOAK").ok().and_then(|v| v.parse().ok()).unwrap_or(60);
    let timing = HeartbeatTiming::default();
    let legacy_timing = HeartbeatTiming {
        interval: Duration::from_millis(100),
        suspect_after: Duration::from_millis(300),
        ..HeartbeatTiming::default()
    };
    println!(
        "ferrolb membership simulator: interval {:?}, suspect-after {:?}, {} observers per node; \
         network 0.2-0.5 ms one way{}",
        timing.interval,
        timing.suspect_after,
        ferrolb_speaker::membership::detector::OBSERVERS,
        if quick { " (smoke run)" } else { "" }
    );

    let sections = std::env::var("FERROLB_BENCH_SECTIONS").unwrap_or_else(|_| "1,2".into());
    let max_nodes: usize = std::env::var("FERROLB_BENCH_MAX_NODES").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    if sections.split(',').any(|s| s.trim() == "1") {
        section_one(quick, max_nodes, timing, legacy_timing);
    }
    if sections.split(',').any(|s| s.trim() == "2") {
        section_two(quick, soak, timing);
    }
}

fn section_one(quick: bool, max_nodes: usize, timing: HeartbeatTiming, legacy_timing: HeartbeatTiming) {
    header("1. Per-node cost (steady state) and detection by cluster size (crashes, then one graceful leave)");
    let all = [10, 100, 300, 1000, 3000];
    let sizes: Vec<usize> = if quick { vec![10, 50] } else { all.into_iter().filter(|n| *n <= max_nodes).collect() };
    // The previous release's all-to-all heartbeats (100 ms, heard lists), where the
    // simulation stays affordable: the baseline.
    let legacy_sizes: &[usize] = if quick { &[10] } else { &[10, 100] };
    for &n in legacy_sizes {
        print_row(&scale_run("all-to-all", n, legacy_timing, true, Duration::from_secs(if quick { 2 } else { 5 }), 3));
    }
    for n in sizes {
        let steady = Duration::from_secs(if quick || n >= 1000 { 3 } else { 10 });
        let crashes = if quick || n >= 1000 { 3 } else { 8 };
        let row = scale_run("rings", n, timing, false, steady, crashes);
        print_row(&row);
        assert_eq!(row.false_deaths, 0, "{n} nodes, no loss: a false death");
        assert_eq!(row.crash.1, 0, "{n} nodes: a crash some node never saw");
    }
}

fn section_two(quick: bool, soak: u64, timing: HeartbeatTiming) {
    let (n, secs) = if quick { (100, 10) } else { (1000, soak) };
    header(&format!(
        "2. {n} nodes for {secs} s: 1 % loss on every link, one node's CPU saturated (stalls 10-100 ms, every 0.5 s \
         on average), one node cut off from 2 of its 4 observers, a crash every 5 s (its Lease expiring 15 s later)"
    ));
    let started = Instant::now();
    let mut sim = Sim::new(n, timing, Net { loss: 0.01, ..Net::default() }, 42);
    let warm = Duration::from_secs(3);
    sim.run_until(warm);
    let end = warm + Duration::from_secs(secs);
    let (busy, lossy) = (1, 2);
    sim.saturate(
        busy,
        Stalls { every: Duration::from_millis(500), min: Duration::from_millis(10), max: Duration::from_millis(100) },
        end,
    );
    let observers: Vec<usize> = sim
        .detector(lossy)
        .observers()
        .iter()
        .filter_map(|o| o.strip_prefix("node-").and_then(|i| i.parse().ok()))
        .collect();
    for o in observers.iter().take(2) {
        sim.set_cut_both(lossy, *o, true);
    }
    let before: Vec<_> = (0..n).map(|i| sim.traffic(i)).collect();
    let mut t = warm;
    let mut k = 0;
    let mut crashed: Vec<(usize, Duration)> = Vec::new();
    while t + Duration::from_secs(5) < end {
        t += Duration::from_secs(5);
        sim.run_until(t);
        // A crashed node's Lease expires a Lease duration later (the speaker's default,
        // 15 s): the others forget it, as in a cluster (and the dead stop adding up).
        for (v, _) in crashed.iter().filter(|(_, at)| t.saturating_sub(*at) >= LEASE) {
            sim.expire_lease(*v);
        }
        crashed.retain(|(_, at)| t.saturating_sub(*at) < LEASE);
        // Progress on stderr for long soaks (the table comes at the end).
        if (t - warm).as_secs() % 60 == 0 {
            eprintln!(
                "  {:>4} s simulated, {:.0} s wall: {} false deaths, {} crashes",
                (t - warm).as_secs(),
                started.elapsed().as_secs_f64(),
                sim.false_deaths.len(),
                k
            );
        }
        let mut victim = (k * 7919 + 101) % n;
        while victim == busy || victim == lossy {
            victim = (victim + 3) % n;
        }
        if sim.running(victim) {
            sim.crash(victim);
            crashed.push((victim, t));
        }
        k += 1;
    }
    sim.run_until(end);
    let row = Row {
        label: "rings".into(),
        n,
        rates: rates(&sim, &before, secs as f64),
        crash: detections(&sim, false),
        leave: (Vec::new(), 0),
        false_deaths: sim.false_deaths.len(),
        wall: started.elapsed(),
    };
    print_row(&row);
    for (o, s, at) in sim.false_deaths.iter().take(10) {
        println!("  false death: {} judged {} dead at {:.3} s", sim.name(*o), sim.name(*s), at.as_secs_f64());
    }
    println!(
        "  crashed nodes judged alive again after being judged dead (their IPs would move back): {} (node, crashed) pairs",
        sim.resurrections.len()
    );
    // Who did not see a crash, if anyone: the special nodes are named.
    let role = |j: usize| match j {
        _ if j == busy => " (the CPU-saturated node)",
        _ if j == lossy => " (the half-cut node)",
        _ => "",
    };
    for w in sim.watches.iter().filter(|w| !sim.running(w.node)) {
        for j in (0..n).filter(|j| *j != w.node && sim.running(*j) && !w.seen.contains_key(j)) {
            println!(
                "  missed: {}{} never judged {} (crashed at {:.1} s) dead",
                sim.name(j),
                role(j),
                sim.name(w.node),
                w.at.as_secs_f64()
            );
        }
    }
    assert!(sim.running(lossy), "the lossy node was never crashed");
}
