//! Everything a client measures, defined once for the demo, the tests and the
//! benches: which MAC answers ARP (`arping`) or NDP (`ndisc6`) for an IP, what
//! `curl` gets through a VIP, and the client-visible outage of a failover,
//! measured by a TCP prober in the client's namespace.

use std::net::{IpAddr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferrolb_common::lock;

/// A command running `program` inside network namespace `netns`.
pub fn netns_command(netns: &str, program: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", netns, program]);
    c
}

/// Run `args` (a program and its arguments) inside network namespace `netns`; its
/// stdout when it succeeded.
pub fn netns_exec(netns: &str, args: &[&str]) -> Option<String> {
    let (program, rest) = args.split_first()?;
    let out = netns_command(netns, program).args(rest).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Load an nft script (`nft -f -`) inside network namespace `netns`.
pub fn netns_nft(netns: &str, script: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut child =
        netns_command(netns, "nft").args(["-f", "-"]).stdin(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    child.stdin.take().expect("piped").write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    anyhow::ensure!(out.status.success(), "nft in {netns}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}

/// The MACs in `arping` output's replies, in order, lower case.
pub fn arping_replies(out: &str) -> Vec<String> {
    out.lines()
        .filter(|l| l.contains("reply from"))
        .filter_map(|l| l.split('[').nth(1)?.split(']').next().map(str::to_lowercase))
        .collect()
}

/// The MAC `ndisc6` resolved, lower case.
pub fn ndisc6_answer(out: &str) -> Option<String> {
    Some(out.lines().find(|l| l.contains("link-layer address"))?.rsplit(' ').next()?.trim().to_lowercase())
}

/// `http://IP:PORT/`, with brackets for IPv6.
pub fn url(ip: &str, port: u16) -> String {
    match ip.parse::<IpAddr>() {
        Ok(IpAddr::V6(_)) => format!("http://[{ip}]:{port}/"),
        _ => format!("http://{ip}:{port}/"),
    }
}

/// A client: a network namespace and its interface on the segment.
#[derive(Debug, Clone)]
pub struct ClientHost {
    /// The namespace's name.
    pub netns: String,
    /// The interface facing the nodes.
    pub iface: String,
}

impl ClientHost {
    /// A client in `netns` on `iface`.
    pub fn new(netns: &str, iface: &str) -> ClientHost {
        ClientHost { netns: netns.into(), iface: iface.into() }
    }

    /// Run `args` in the client's namespace; its stdout when it succeeded.
    pub fn exec(&self, args: &[&str]) -> Option<String> {
        netns_exec(&self.netns, args)
    }

    /// The MACs that answered `count` ARP requests for the IPv4 address `ip`, in order
    /// (one request a second, as arping sends them).
    /// Every reply arping printed counts, whatever its exit status (it fails when fewer
    /// than `count` replies came before its deadline).
    pub fn arp_replies(&self, ip: &str, count: u32) -> Vec<String> {
        let c = count.to_string();
        let out = netns_command(&self.netns, "arping").args(["-c", &c, "-w", &c, "-I", &self.iface, ip]).output();
        out.map(|o| arping_replies(&String::from_utf8_lossy(&o.stdout))).unwrap_or_default()
    }

    /// The MAC answering ARP (IPv4) or NDP (IPv6) for `ip`.
    pub fn answering_mac(&self, ip: &str) -> Option<String> {
        if ip.contains(':') {
            return ndisc6_answer(&self.exec(&["ndisc6", "-1", "-r", "2", "-w", "300", ip, &self.iface])?);
        }
        self.arp_replies(ip, 1).into_iter().next()
    }

    /// The body `curl` gets from `url` within `max_time`, when it is not empty.
    pub fn curl(&self, url: &str, max_time: Duration) -> Option<String> {
        let t = format!("{:.3}", max_time.as_secs_f64());
        self.exec(&["curl", "-s", "--max-time", &t, url]).filter(|b| !b.is_empty())
    }
}

/// One probe: when it started (since the prober started) and whether it connected.
#[derive(Debug, Clone, Copy)]
pub struct Probe {
    /// Start, relative to the prober's start.
    pub at: Duration,
    /// The TCP connection was established within the timeout.
    pub ok: bool,
    /// When it ended (connected or gave up), relative to the prober's start.
    pub done: Duration,
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
                        lock(&r).push(Probe { at, ok, done: started.elapsed() });
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
        let mut v = lock(&self.results).clone();
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

/// Every client-visible outage in `probes`: from a failed probe to the first
/// successful one after it, each run of failures once (a run that never recovered
/// is left out). The one definition of an outage in the demo, the tests and the benches.
pub fn outages(probes: &[Probe]) -> Vec<(Duration, Duration)> {
    let mut out = Vec::new();
    let mut since = None;
    for p in probes {
        match (p.ok, since) {
            (false, None) => since = Some(p.at),
            (true, Some(s)) => {
                out.push((s, p.at - s));
                since = None;
            }
            _ => {}
        }
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_output_parses() {
        let arping = "ARPING 198.51.100.100 from 198.51.100.9 eth0\n\
            Unicast reply from 198.51.100.100 [02:AA:00:00:00:01]  0.061ms\n\
            Unicast reply from 198.51.100.100 [02:aa:00:00:00:02]  0.070ms\nSent 2 probes\n";
        assert_eq!(arping_replies(arping), ["02:aa:00:00:00:01", "02:aa:00:00:00:02"]);
        let ndisc = "Soliciting fd42:f1b::100 (fd42:f1b::100) on eth0...\n\
            Target link-layer address: 02:AA:00:00:00:03\n from fd42:f1b::100\n";
        assert_eq!(ndisc6_answer(ndisc).as_deref(), Some("02:aa:00:00:00:03"));
        assert_eq!(ndisc6_answer("Timed out."), None);
        assert_eq!(url("198.51.100.7", 80), "http://198.51.100.7:80/");
        assert_eq!(url("fd42:f1b::7", 80), "http://[fd42:f1b::7]:80/");
    }

    #[test]
    fn the_outage_runs_from_the_first_failure_to_the_next_success() {
        let p = |ms: u64, ok: bool| Probe { at: Duration::from_millis(ms), ok, done: Duration::from_millis(ms) };
        let probes = [p(0, true), p(10, false), p(20, true), p(30, false), p(40, false), p(50, true)];
        assert_eq!(outage(&probes, Duration::ZERO), Some(Duration::from_millis(10)));
        assert_eq!(outage(&probes, Duration::from_millis(25)), Some(Duration::from_millis(20)));
        assert_eq!(outage(&probes[..5], Duration::from_millis(25)), None, "never recovered");
        assert!(!any_failed(&probes, Duration::from_millis(45)));
        let ms = |v: u64| Duration::from_millis(v);
        assert_eq!(outages(&probes), [(ms(10), ms(10)), (ms(30), ms(20))]);
        assert_eq!(outages(&probes[..5]), [(ms(10), ms(10))], "a run that never recovered is left out");
    }
}
