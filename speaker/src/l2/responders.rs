//! One responder thread per usable interface, started and stopped as interfaces
//! come and go. Each blocks in the kernel on its packet socket, reads the
//! announcer's published table, and answers with [`respond`]. It also defends the
//! announced IPs: another host claiming one ([`conflict`]) draws an immediate
//! re-announcement (at most one per IP per second), and the conflict is passed to
//! the main loop for the Service's Event.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ferrolb_speaker_sys::{PacketSocket, scan_interfaces};

use crate::l2::announcer::{Announcer, Note};
use crate::l2::io::SysIo;
use crate::l2::table::TableReader;
use crate::metrics::Metrics;
use crate::responder::{Conflict, DropReason, Iface, conflict, requested_ip, respond};
use crate::wire::Mac;

/// The least time between two defenses of one IP (RFC 5227 says 10 s for a host's own
/// address; a VIP taken over is traffic lost, so sooner).
pub const DEFEND_INTERVAL: Duration = Duration::from_secs(1);

/// Where responder threads report the conflicts they defended: the interface and the
/// conflict, and a wake-up for the main loop.
#[derive(Debug, Clone)]
pub struct ConflictSink {
    /// The reports.
    pub tx: std::sync::mpsc::Sender<(String, Conflict)>,
    /// Wakes the main loop.
    pub wake: Arc<tokio::sync::Notify>,
}

/// The responder threads, by interface.
#[derive(Debug)]
pub struct Responders {
    threads: BTreeMap<String, Thread>,
    conflicts: ConflictSink,
}

/// One interface's thread; it ends within one receive timeout of being asked to.
#[derive(Debug)]
struct Thread {
    stop: Arc<AtomicBool>,
}

impl Drop for Thread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Responders {
    /// No threads yet; defended conflicts go to `conflicts`.
    pub fn new(conflicts: ConflictSink) -> Responders {
        Responders { threads: BTreeMap::new(), conflicts }
    }

    /// Interfaces answered on now.
    pub fn names(&self) -> BTreeSet<String> {
        self.threads.keys().cloned().collect()
    }

    /// Whether no interface is answered on.
    pub fn is_empty(&self) -> bool {
        self.threads.is_empty()
    }

    /// Rescan interfaces (minus `exclude`): stop the threads of interfaces that are
    /// gone, start one for each new interface, and tell the announcer the usable set.
    #[must_use = "the notes report frames sent and steps that failed"]
    pub fn refresh(&mut self, exclude: &[String], announcer: &mut Announcer<SysIo>, metrics: &Metrics) -> Vec<Note> {
        let links = match scan_interfaces(exclude) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list interfaces");
                return Vec::new();
            }
        };
        let present: BTreeSet<&str> = links.iter().map(|l| l.name.as_str()).collect();
        let gone: Vec<String> = self.threads.keys().filter(|n| !present.contains(n.as_str())).cloned().collect();
        for n in gone {
            tracing::warn!(iface = %n, "interface gone; announcing on the others");
            self.threads.remove(&n);
            announcer.io_mut().remove(&n);
        }
        for l in &links {
            if self.threads.contains_key(&l.name) {
                continue;
            }
            let sock = match PacketSocket::open(&l.name) {
                Ok(s) => Arc::new(s),
                Err(e) => {
                    tracing::warn!(iface = %l.name, error = %e, "cannot open a packet socket (CAP_NET_RAW?)");
                    continue;
                }
            };
            announcer.io_mut().add(sock.clone());
            let iface = Iface { name: l.name.clone(), mac: Mac(l.mac) };
            let stop = Arc::new(AtomicBool::new(false));
            let (table, metrics, st) = (announcer.reader(), metrics.clone(), stop.clone());
            let sink = self.conflicts.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("answer-{}", l.name))
                .spawn(move || read_loop(&sock, &iface, &table, &metrics, &sink, &st));
            match spawned {
                Ok(_) => {
                    self.threads.insert(l.name.clone(), Thread { stop });
                }
                Err(e) => tracing::warn!(iface = %l.name, error = %e, "cannot start the responder thread"),
            }
        }
        let usable: Vec<Iface> = links
            .iter()
            .filter(|l| self.threads.contains_key(&l.name))
            .map(|l| Iface { name: l.name.clone(), mac: Mac(l.mac) })
            .collect();
        announcer.set_interfaces(usable, Instant::now())
    }
}

/// Answer ARP requests and neighbor solicitations on one interface until stopped. A
/// thread of its own blocked in the kernel: a request wakes it directly, with no
/// runtime scheduling between the frame and the reply (2.2x the kernel's reply time
/// as a tokio task, against 1.5x as a thread, measured by the `arp_latency` bench).
fn read_loop(
    sock: &PacketSocket,
    iface: &Iface,
    table: &TableReader,
    metrics: &Metrics,
    sink: &ConflictSink,
    stop: &AtomicBool,
) {
    let mut buf = vec![0u8; 9216];
    let mut defended: HashMap<IpAddr, Instant> = HashMap::new();
    while !stop.load(Ordering::Relaxed) {
        let n = match sock.recv_timeout(&mut buf, Duration::from_millis(200)) {
            Ok(Some(n)) => n,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(iface = %iface.name, error = %e, "receive failed; responder stops");
                return;
            }
        };
        let frame = &buf[..n];
        let (asked, answer, claimed) = {
            let t = table.load();
            let answer = respond(&t, iface, frame);
            // Only what is a valid request for an announced IP counts as one.
            let valid = answer.as_ref().map_or_else(|r| r.valid_request(), |_| true);
            let asked = requested_ip(frame).filter(|ip| valid && t.get(ip).is_some());
            let claimed = answer.as_ref().err().and_then(|_| conflict(&t, iface, frame));
            (asked, answer, claimed)
        };
        if let Some(c) = claimed {
            defend(sock, iface, metrics, sink, &mut defended, c);
            continue;
        }
        // Reply first, count after: the metrics stay off the request-to-reply path.
        let count_request = || {
            if let Some(ip) = asked {
                metrics.requests.with_label_values(&[&ip.to_string()]).inc();
            }
        };
        match answer {
            Ok(reply) => {
                let sent = sock.send(&reply.frame);
                count_request();
                match sent {
                    Ok(()) => metrics.responses.with_label_values(&[&reply.ip.to_string()]).inc(),
                    Err(e) => tracing::warn!(iface = %iface.name, error = %e, "reply not sent"),
                }
            }
            Err(reason) => {
                count_request();
                metrics.dropped.with_label_values(&[reason.as_str()]).inc();
            }
        }
    }
}

/// Another host claimed an announced IP: count it, re-announce at once unless this IP
/// was defended within [`DEFEND_INTERVAL`], and report each defense to the main loop.
fn defend(
    sock: &PacketSocket,
    iface: &Iface,
    metrics: &Metrics,
    sink: &ConflictSink,
    defended: &mut HashMap<IpAddr, Instant>,
    c: Conflict,
) {
    metrics.ip_conflicts.inc();
    metrics.dropped.with_label_values(&[DropReason::IpConflict.as_str()]).inc();
    let now = Instant::now();
    if defended.get(&c.ip).is_some_and(|at| now.duration_since(*at) < DEFEND_INTERVAL) {
        return;
    }
    defended.retain(|_, at| now.duration_since(*at) < DEFEND_INTERVAL);
    defended.insert(c.ip, now);
    let mut sent = 0;
    for f in c.defense(iface) {
        match sock.send(&f) {
            Ok(()) => sent += 1,
            Err(e) => tracing::warn!(iface = %iface.name, error = %e, "defense not sent"),
        }
    }
    metrics.gratuitous.with_label_values(&[&c.ip.to_string()]).inc_by(sent);
    if sink.tx.send((iface.name.clone(), c)).is_ok() {
        sink.wake.notify_one();
    }
}
