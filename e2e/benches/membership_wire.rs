//! The heartbeat rings on the wire: the chart's speakers (from the image under runc
//! when `FERROLB_SANDBOX_IMAGE` is set, as `scripts/bench` does) in a sandbox of 40
//! node namespaces (`FERROLB_BENCH_NODES`).
//!
//! 1. Per-node datagrams and bytes per second, from each speaker's own counters over
//!    a 10 s window, next to the simulator's prediction for the same cluster size (the
//!    same detector code on a simulated network, run here): the baseline.
//! 2. Speakers killed one at a time (SIGKILL, nothing restarts them): detection at
//!    every other speaker, from its log line `peer dead ... peer=<node>`.
//!
//! Needs root. `cargo bench -p ferrolb-e2e --bench membership_wire` (`FERROLB_BENCH_KEEP=1`
//! keeps the speakers' logs); without `--bench`
//! (CI's `cargo test --benches`) a 5-node smoke run.

use std::time::{Duration, Instant};

use ferrolb_e2e::bench::peak_rss_mib;
use ferrolb_e2e::sandbox::{Families, Options, Sandbox};
use ferrolb_e2e::topology::privileged;
use ferrolb_speaker::membership::HeartbeatTiming;
use ferrolb_speaker::membership::detector::ring::Rings;
use ferrolb_speaker::membership::sim::{Net, Sim};

const COUNTERS: [&str; 4] = [
    "ferrolb_memberlist_heartbeats_sent_total",
    "ferrolb_memberlist_heartbeats_received_total",
    "ferrolb_memberlist_sent_bytes_total",
    "ferrolb_memberlist_received_bytes_total",
];

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Per node: sent/s, received/s, sent KB/s, received KB/s.
fn rates(before: &[[f64; 4]], after: &[[f64; 4]], secs: f64) -> Vec<[f64; 4]> {
    before
        .iter()
        .zip(after)
        .map(|(b, a)| {
            let d = |i: usize| (a[i] - b[i]) / secs;
            [d(0), d(1), d(2) / 1000.0, d(3) / 1000.0]
        })
        .collect()
}

fn row(label: &str, n: usize, r: &[[f64; 4]]) {
    let col = |i: usize| {
        let v: Vec<f64> = r.iter().map(|x| x[i]).collect();
        (v.iter().sum::<f64>() / v.len() as f64, v.iter().copied().fold(0.0, f64::max))
    };
    let (s, sm) = col(0);
    let (rv, rm) = col(1);
    let (sk, skm) = col(2);
    let (rk, _) = col(3);
    println!("{label:<26} {n:>5} {s:>8.1} {sm:>8.1} {rv:>8.1} {rm:>8.1} {sk:>8.1} {skm:>8.1} {rk:>8.1}");
}

/// When each speaker but `victim` logged it dead, after `since` (ms after it).
fn detections(sb: &Sandbox, victim: &str, since: chrono::DateTime<chrono::Utc>, skip: &[String]) -> Vec<Option<f64>> {
    let token = format!("peer={victim}");
    sb.state
        .nodes
        .iter()
        .filter(|n| n.name != victim && !skip.contains(&n.name))
        .map(|n| {
            let log = std::fs::read_to_string(sb.state.run_dir.join(format!("speaker-{}.log", n.name))).ok()?;
            log.lines()
                .filter(|l| l.contains("peer dead") && l.split_whitespace().any(|w| w == token))
                .filter_map(|l| l.split_whitespace().next()?.parse::<chrono::DateTime<chrono::Utc>>().ok())
                .filter(|t| *t >= since)
                .min()
                .map(|t| (t - since).num_microseconds().unwrap_or(0) as f64 / 1000.0)
        })
        .collect()
}

fn main() {
    assert!(privileged(), "the sandbox needs root");
    let quick = !std::env::args().any(|a| a == "--bench");
    let n: usize =
        if quick { 5 } else { std::env::var("FERROLB_BENCH_NODES").ok().and_then(|v| v.parse().ok()).unwrap_or(40) };
    let (window, kills) = if quick { (Duration::from_secs(2), 1) } else { (Duration::from_secs(10), 6) };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut opts = Options { nodes: n, families: Families::V4, ..Options::default() };
    if let Ok(filter) = std::env::var("FERROLB_BENCH_SPEAKER_LOG") {
        opts.values = serde_json::json!({"log": {"level": filter}});
    }
    let sb = rt.block_on(Sandbox::up_opts(&opts, dir.path())).expect("sandbox");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !sb.state.speakers_hear_each_other() {
        if Instant::now() > deadline {
            // Measured anyway; said plainly.
            for node in &sb.state.nodes {
                let m = sb.state.speaker_metrics(&node.name);
                let count =
                    |st: &str| ferrolb_e2e::sandbox::metric_sum(&m, "ferrolb_memberlist_peers", Some(("state", st)));
                if count("alive") < (n - 1) as f64 {
                    println!(
                        "  not all heard after 120 s: {} alive {} unheard {} dead {}",
                        node.name,
                        count("alive"),
                        count("unheard"),
                        count("dead")
                    );
                }
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    println!(
        "ferrolb heartbeat rings on the wire: {n} nodes, Pods from {}, up and all heard in {:.1} s",
        std::env::var("FERROLB_SANDBOX_IMAGE").unwrap_or_else(|_| "the workspace binaries".into()),
        started.elapsed().as_secs_f64()
    );
    let read = |sb: &Sandbox| -> Vec<[f64; 4]> {
        sb.state.nodes.iter().map(|node| COUNTERS.map(|c| sb.state.speaker_metric(&node.name, c))).collect()
    };
    let before = read(&sb);
    let t0 = Instant::now();
    std::thread::sleep(window);
    let after = read(&sb);
    let wire = rates(&before, &after, t0.elapsed().as_secs_f64());

    // The simulator's prediction for the same size and window, in this run.
    let mut sim = Sim::new(n, HeartbeatTiming::default(), Net::default(), 1);
    sim.run_until(Duration::from_secs(3));
    let sb0: Vec<[f64; 4]> = (0..n)
        .map(|i| {
            let t = sim.traffic(i);
            [t.sent as f64, t.received as f64, t.sent_bytes as f64, t.received_bytes as f64]
        })
        .collect();
    sim.run_until(Duration::from_secs(3) + window);
    let sa0: Vec<[f64; 4]> = (0..n)
        .map(|i| {
            let t = sim.traffic(i);
            [t.sent as f64, t.received as f64, t.sent_bytes as f64, t.received_bytes as f64]
        })
        .collect();
    let simulated = rates(&sb0, &sa0, window.as_secs_f64());

    println!("\n1. Per-node heartbeat traffic, steady state, {} s window (UDP payload)", window.as_secs());
    println!(
        "{:<26} {:>5} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "", "nodes", "sent/s", "max", "recv/s", "max", "sentKB/s", "max", "recvKB/s"
    );
    row("on the wire (speakers)", n, &wire);
    row("simulator (baseline)", n, &simulated);
    let rss: Vec<f64> =
        sb.state.nodes.iter().filter_map(|node| peak_rss_mib(sb.pid(&format!("speaker/{}", node.name))?)).collect();
    println!(
        "speaker peak RSS: max {:.1} MiB, mean {:.1} MiB (of {} speakers)",
        rss.iter().copied().fold(0.0, f64::max),
        rss.iter().sum::<f64>() / rss.len().max(1) as f64,
        rss.len()
    );

    println!("\n2. Speakers killed one at a time: SIGKILL to each other speaker logging it dead");
    let mut killed: Vec<String> = Vec::new();
    let mut all = Vec::new();
    let mut missed = 0;
    for k in 0..kills {
        let victim = format!("node-{}", (k * 7) % n + 1);
        if killed.contains(&victim) {
            continue;
        }
        // Its observers on the rings (the speakers killed before are dead everywhere).
        let names: Vec<String> = sb.state.nodes.iter().map(|n| n.name.clone()).collect();
        let skip: std::collections::BTreeSet<String> = killed.iter().cloned().collect();
        let observers = Rings::new(names.iter().filter(|n| !skip.contains(*n))).observers(&victim, &skip);
        let since = chrono::Utc::now();
        sb.signal_pod(&format!("speaker/{victim}"), "-KILL", true).expect("kill the speaker");
        let sent = (chrono::Utc::now() - since).num_microseconds().unwrap_or(0) as f64 / 1000.0;
        // Every other speaker logs it dead, or 15 s pass: those that did not are named
        // (with what their metrics say), and counted as missed.
        let limit = Instant::now() + Duration::from_secs(15);
        let seen = loop {
            let d = detections(&sb, &victim, since, &killed);
            if d.iter().all(Option::is_some) || Instant::now() > limit {
                break d;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let others = names.iter().filter(|m| **m != victim && !skip.contains(*m));
        for (m, _) in others.clone().zip(&seen).filter(|(_, d)| d.is_none()) {
            let metrics = sb.state.speaker_metrics(m);
            let count =
                |st: &str| ferrolb_e2e::sandbox::metric_sum(&metrics, "ferrolb_memberlist_peers", Some(("state", st)));
            println!(
                "  {m} did not judge {victim} dead within 15 s: it counts {} alive, {} dead, {} unheard, {} mismatched \
                 peers{}",
                count("alive"),
                count("dead"),
                count("unheard"),
                count("mismatched"),
                if observers.contains(m) { " (an observer)" } else { "" }
            );
        }
        let by_observers: Vec<String> = others
            .zip(&seen)
            .filter(|(m, _)| observers.contains(m))
            .map(|(m, d)| format!("{m} {}", d.map_or("-".into(), |d| format!("{d:.0} ms"))))
            .collect();
        killed.push(victim.clone());
        let mut v: Vec<f64> = seen.into_iter().flatten().collect();
        missed += (n - killed.len()).saturating_sub(v.len());
        v.sort_by(f64::total_cmp);
        println!(
            "  {victim}: seen by {} speakers, p50 {:.0} ms, max {:.0} ms; by its observers: {}; the kill took \
             {sent:.0} ms to send",
            v.len(),
            pct(&v, 0.5),
            v.last().copied().unwrap_or(f64::NAN),
            by_observers.join(", "),
        );
        all.extend(v);
        std::thread::sleep(Duration::from_secs(1));
    }
    all.sort_by(f64::total_cmp);
    println!(
        "detection over {} (kill, speaker) pairs: p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms; {missed} missed",
        all.len(),
        pct(&all, 0.5),
        pct(&all, 0.95),
        all.last().copied().unwrap_or(f64::NAN)
    );
    drop(sb);
    if std::env::var_os("FERROLB_BENCH_KEEP").is_some() {
        println!("logs kept in {}", dir.keep().display());
    }
}
