//! Shared pieces of the bench binaries: a client that probes a VIP over TCP from
//! the client namespace, outage extraction, percentiles and the printed tables.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One probe: when it started (since the prober started) and whether it connected.
#[derive(Debug, Clone, Copy)]
pub struct Probe {
    /// Start, relative to the prober's start.
    pub at: Duration,
    /// The TCP connection was established within the timeout.
    pub ok: bool,
}

/// Opens a TCP connection to a target every `every`, from inside a network namespace.
pub struct Prober {
    started: Instant,
    stop: Arc<AtomicBool>,
    results: Arc<Mutex<Vec<Probe>>>,
    thread: Option<std::thread::JoinHandle<std::io::Result<std::io::Result<()>>>>,
}

impl Prober {
    /// Start probing `target` from the namespace at `netns_path`, each attempt
    /// bounded by `timeout`.
    pub fn start(netns_path: &str, target: SocketAddr, every: Duration, timeout: Duration) -> anyhow::Result<Prober> {
        let stop = Arc::new(AtomicBool::new(false));
        let results: Arc<Mutex<Vec<Probe>>> = Arc::default();
        let started = Instant::now();
        let (s, r) = (stop.clone(), results.clone());
        let thread = crate::netns::in_netns(netns_path, move || -> std::io::Result<()> {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                let mut pending = tokio::task::JoinSet::new();
                while !s.load(Ordering::Relaxed) {
                    tick.tick().await;
                    let at = started.elapsed();
                    let r = r.clone();
                    pending.spawn(async move {
                        let ok = matches!(
                            tokio::time::timeout(timeout, tokio::net::TcpStream::connect(target)).await,
                            Ok(Ok(_))
                        );
                        r.lock().unwrap_or_else(|p| p.into_inner()).push(Probe { at, ok });
                    });
                    while pending.try_join_next().is_some() {}
                }
                while pending.join_next().await.is_some() {}
            });
            Ok(())
        })?;
        Ok(Prober { started, stop, results, thread: Some(thread) })
    }

    /// Time since the prober started.
    pub fn now(&self) -> Duration {
        self.started.elapsed()
    }

    /// Probes so far, in start order.
    pub fn results(&self) -> Vec<Probe> {
        let mut v = self.results.lock().unwrap_or_else(|p| p.into_inner()).clone();
        v.sort_by_key(|p| p.at);
        v
    }

    /// Whether every probe started in the last `window` (and at least one) succeeded
    /// after something failed since `from`.
    pub fn recovered_since(&self, from: Duration, window: Duration) -> bool {
        let r = self.results();
        let failed = r.iter().any(|p| p.at >= from && !p.ok);
        let now = self.now();
        let recent: Vec<&Probe> = r.iter().filter(|p| p.at + window + Duration::from_millis(400) >= now).collect();
        failed && !recent.is_empty() && recent.iter().all(|p| p.ok)
    }

    /// Stop and return every probe.
    pub fn stop(mut self) -> Vec<Probe> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.results()
    }
}

/// The client-visible outage after `from`: from the first failed probe to the first
/// successful one after it (0 when nothing failed; `None` when it never recovered).
pub fn outage(probes: &[Probe], from: Duration) -> Option<Duration> {
    let first_fail = probes.iter().find(|p| p.at >= from && !p.ok)?.at;
    probes.iter().find(|p| p.at > first_fail && p.ok).map(|p| p.at - first_fail)
}

/// Whether any probe after `from` failed.
pub fn any_failed(probes: &[Probe], from: Duration) -> bool {
    probes.iter().any(|p| p.at >= from && !p.ok)
}

/// p-quantile (0..=1) of sorted values, nearest rank.
pub fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// One row of a printed table.
#[derive(Debug, Clone)]
pub struct Row {
    /// What was measured.
    pub name: String,
    /// Values (ms or another unit, see the table).
    pub values: Vec<f64>,
}

impl Row {
    /// A row from values in any order.
    pub fn new(name: &str, mut values: Vec<f64>) -> Row {
        values.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        Row { name: name.into(), values }
    }
    /// Median.
    pub fn p50(&self) -> f64 {
        pct(&self.values, 0.5)
    }
    /// 95th percentile.
    pub fn p95(&self) -> f64 {
        pct(&self.values, 0.95)
    }
    /// 99th percentile.
    pub fn p99(&self) -> f64 {
        pct(&self.values, 0.99)
    }
    /// Largest.
    pub fn max(&self) -> f64 {
        self.values.last().copied().unwrap_or(f64::NAN)
    }
}

/// Print rows as a table of n, p50, p95, p99 and max in `unit`, with each row's
/// p50 ratio to `baseline` (a row name) when given.
pub fn print_table(title: &str, unit: &str, rows: &[Row], baseline: Option<&str>) {
    println!("\n{title}");
    println!(
        "| {:<56} | {:>5} | {:>9} | {:>9} | {:>9} | {:>9} | {:>10} |",
        "case",
        "n",
        format!("p50 {unit}"),
        format!("p95 {unit}"),
        format!("p99 {unit}"),
        format!("max {unit}"),
        "p50 ratio"
    );
    println!("|{}|-------|-----------|-----------|-----------|-----------|------------|", "-".repeat(58));
    let base = baseline.and_then(|b| rows.iter().find(|r| r.name == b)).map(|r| r.p50());
    for r in rows {
        let ratio = match base {
            Some(b) if b > 0.0 => format!("{:.3}x", r.p50() / b),
            _ => "-".into(),
        };
        println!(
            "| {:<56} | {:>5} | {:>9.1} | {:>9.1} | {:>9.1} | {:>9.1} | {:>10} |",
            r.name,
            r.values.len(),
            r.p50(),
            r.p95(),
            r.p99(),
            r.max(),
            ratio
        );
    }
}

/// Peak resident memory of a process (VmHWM), in MiB.
pub fn peak_rss_mib(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = s.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// CPU time (user + system) a process used so far, from /proc.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = s.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let (utime, stime): (u64, u64) = (f.get(11)?.parse().ok()?, f.get(12)?.parse().ok()?);
    // /proc reports clock ticks of USER_HZ, which is 100 on every Linux ABI.
    let hz = 100.0;
    Some(Duration::from_secs_f64((utime + stime) as f64 / hz))
}
