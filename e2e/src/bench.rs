//! Shared pieces of the bench binaries: percentiles and the printed tables. What
//! a client measures (probes, outages, ARP/NDP answers) is in [`crate::client`].

use std::time::Duration;

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
