//! The heartbeat socket around [`super::detector::Detector`]: seals and sends what the
//! detector says to send (heartbeats to this node's observers, broadcasts of takeovers,
//! leaves and suspicions), feeds authenticated datagrams to it, and wakes the planner
//! when a member's liveness or a claim changes.
//!
//! It runs on a thread of its own ([`spawn`]) with its own scheduler: planning and API
//! work on the speaker's main runtime (a burst of Service events, a slow list) never
//! delay a heartbeat, which would make peers fail this node over falsely.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use ferrolb_common::lock;
use tokio::net::UdpSocket;
use tokio::sync::Notify;

use crate::membership::detector::{self, Claim, Detector, HeartbeatTiming, Liveness, Local};
use crate::metrics::Metrics;

/// Memberlist flags.
#[derive(Clone)]
pub struct HeartbeatSettings {
    /// UDP port every speaker listens on.
    pub port: u16,
    /// The shared HMAC keys: the first signs, any verifies (a rotation).
    pub keys: Vec<Vec<u8>>,
    /// Heartbeat timing.
    pub timing: HeartbeatTiming,
    /// Accept `FLB1` heartbeats (the previous release's).
    pub legacy: bool,
}

impl std::fmt::Debug for HeartbeatSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeartbeatSettings")
            .field("port", &self.port)
            .field("keys", &format!("<{} redacted>", self.keys.len()))
            .field("timing", &self.timing)
            .field("legacy", &self.legacy)
            .finish()
    }
}

/// State shared between the heartbeat task and the planner.
#[derive(Debug)]
pub struct Membership {
    /// The failure detector.
    pub detector: Mutex<Detector>,
    /// This node can announce (it has a usable interface).
    pub ready: AtomicBool,
    /// This node is shutting down.
    pub leaving: AtomicBool,
    /// IPs this node answers for: since (ms since the epoch) and when, locally.
    pub own: Mutex<BTreeMap<IpAddr, (u64, Instant)>>,
    /// Send a heartbeat now (a takeover or a leave).
    pub send_now: Notify,
    /// A heartbeat was accepted.
    pub received: Notify,
    /// This node is back from a lost link: since when, and when it first heard a
    /// peer again. It starts no new announcement meanwhile: its caches may be stale,
    /// and its peers re-send what they hold once they hear it.
    pub rejoin: Mutex<Option<Rejoin>>,
}

/// A rejoin in progress.
#[derive(Debug, Clone, Copy)]
pub struct Rejoin {
    pub since: Instant,
    pub heard: Option<Instant>,
}

/// The longest a rejoining node waits to hear a peer before it starts new
/// announcements anyway (a peer's neighbour entry for it may need a second to
/// resolve again after the link loss, and a node may be alone).
pub const REJOIN_MAX: std::time::Duration = std::time::Duration::from_secs(2);

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl Membership {
    /// Fresh state for node `me`.
    pub fn new(me: &str, timing: HeartbeatTiming) -> Self {
        Membership {
            detector: Mutex::new(Detector::new(me, timing, Instant::now())),
            ready: AtomicBool::new(false),
            leaving: AtomicBool::new(false),
            own: Mutex::new(BTreeMap::new()),
            send_now: Notify::new(),
            received: Notify::new(),
            rejoin: Mutex::new(None),
        }
    }

    /// This node can announce again after it could not (its link came back): listen
    /// first, and start no new announcement until it has heard a peer again and one
    /// `suspect_after` has passed since (at most [`REJOIN_MAX`]): by then its peers
    /// have told it which IPs they hold (they re-send every claim to a member they
    /// see come back), so it does not take back what they took over.
    pub fn rejoin(&self, now: Instant) {
        lock(&self.detector).restart_listening(now);
        *lock(&self.rejoin) = Some(Rejoin { since: now, heard: None });
    }

    /// When the current rejoin window ends, if one is open at `now`.
    pub fn rejoin_deadline(&self, now: Instant) -> Option<Instant> {
        let (last, suspect_after) = {
            let d = lock(&self.detector);
            (d.last_accepted(), d.timing().suspect_after)
        };
        let mut r = lock(&self.rejoin);
        let rj = r.as_mut()?;
        if rj.heard.is_none() {
            rj.heard = last.filter(|t| *t > rj.since);
        }
        let end = match rj.heard {
            Some(h) => (h + suspect_after).min(rj.since + REJOIN_MAX),
            None => rj.since + REJOIN_MAX,
        };
        (now < end).then_some(end)
    }

    /// Whether this node is within its rejoin window at `now`.
    pub fn rejoining(&self, now: Instant) -> bool {
        self.rejoin_deadline(now).is_some()
    }

    /// The detector's timing.
    pub fn detector_timing(&self) -> HeartbeatTiming {
        lock(&self.detector).timing()
    }

    /// This node started answering for `ip`: claim it in the next heartbeats.
    pub fn claimed(&self, ip: IpAddr) {
        lock(&self.own).insert(ip, (now_ms(), Instant::now()));
        self.send_now.notify_one();
    }

    /// This node stopped answering for `ip`.
    pub fn released(&self, ip: IpAddr) {
        lock(&self.own).remove(&ip);
    }

    /// Liveness of every member as heartbeats see it, this node included.
    pub fn liveness(&self, me: &str, now: Instant) -> BTreeMap<String, Liveness> {
        let mut v = lock(&self.detector).view(now);
        let mine = if self.ready.load(Ordering::Relaxed) && !self.leaving.load(Ordering::Relaxed) {
            Liveness::Alive
        } else {
            Liveness::Dead
        };
        v.insert(me.to_string(), mine);
        v
    }

    /// The newest claim per IP among alive peers and this node.
    pub fn claims(&self, me: &str, now: Instant) -> BTreeMap<IpAddr, (String, u64)> {
        let mut c = lock(&self.detector).claims(now);
        for (ip, (since, _)) in lock(&self.own).iter() {
            let newer = c.get(ip).is_none_or(|(n, s)| (*since, me) > (*s, n.as_str()));
            if newer {
                c.insert(*ip, (me.to_string(), *since));
            }
        }
        c
    }

    /// The IPs this node answers for that no other node has claimed since this node did.
    pub fn unclaimed(&self, me: &str, now: Instant) -> BTreeSet<IpAddr> {
        let theirs = lock(&self.detector).claims(now);
        lock(&self.own)
            .iter()
            .filter(|(ip, (mine, _))| !theirs.get(ip).is_some_and(|(n, s)| n != me && s >= mine))
            .map(|(ip, _)| *ip)
            .collect()
    }
}

/// Bind the heartbeat socket: dual-stack `[::]:port`, or `0.0.0.0:port` without IPv6.
pub fn bind(port: u16) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let v6 = (|| {
        let s = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
        s.set_only_v6(false)?;
        s.bind(&SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port).into())?;
        Ok::<_, std::io::Error>(s)
    })();
    let s = match v6 {
        Ok(s) => s,
        Err(_) => {
            let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
            s.bind(&SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), port).into())?;
            s
        }
    };
    s.set_nonblocking(true)?;
    Ok(s.into())
}

/// The heartbeat thread; [`HeartbeatThread::stop`] or dropping this ends it.
#[derive(Debug)]
pub struct HeartbeatThread {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl HeartbeatThread {
    /// Stop sending and receiving (after a graceful leave).
    pub fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Told a member's name and address when its datagrams start failing authentication.
pub type OnMismatch = Box<dyn Fn(&str, IpAddr) + Send>;

/// A member heartbeats may go to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Its node name.
    pub name: String,
    /// Where its speaker listens.
    pub addr: SocketAddr,
    /// It speaks the ring protocol (its Lease says so); else the previous release's.
    pub ring: bool,
}

/// What the heartbeat loop needs besides its socket.
pub struct Loop {
    /// Port, keys, timing.
    pub settings: HeartbeatSettings,
    /// The state shared with the planner.
    pub membership: Arc<Membership>,
    /// The other members and where they listen.
    pub peers: Box<dyn Fn() -> Vec<Target> + Send>,
    /// Wakes the planner.
    pub changed: Arc<Notify>,
    /// The speaker's metrics.
    pub metrics: Metrics,
    /// Called once when a member's datagrams start failing authentication (a key
    /// mismatch): its name and address.
    pub on_mismatch: OnMismatch,
}

/// Run the heartbeat loop on a thread of its own, with its own single-threaded
/// scheduler, until stopped.
pub fn spawn(socket: std::net::UdpSocket, l: Loop) -> std::io::Result<HeartbeatThread> {
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let span = tracing::info_span!("heartbeats");
    std::thread::Builder::new().name("heartbeats".into()).spawn(move || {
        let _entered = span.enter();
        rt.block_on(async move {
            let socket = match UdpSocket::from_std(socket) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "heartbeat socket unusable; failure detection falls back to Leases");
                    return;
                }
            };
            tokio::select! {
                _ = run(socket, l) => {}
                _ = stopped => {}
            }
        });
    })?;
    Ok(HeartbeatThread { stop: Some(stop) })
}

/// The receiving half of the loop: what it keeps between datagrams.
struct Receiver<'a> {
    keys: &'a [Vec<u8>],
    membership: &'a Membership,
    metrics: &'a Metrics,
    warned: BTreeSet<IpAddr>,
}

impl Receiver<'_> {
    /// Take one datagram from `from`.
    fn take(&mut self, datagram: &[u8], from: SocketAddr, targets: &[Target]) {
        self.metrics.heartbeat_bytes_received.inc_by(datagram.len() as u64);
        let r = detector::open(self.keys, datagram).and_then(|(hb, format)| {
            if !hb.suspects.is_empty() {
                tracing::debug!(
                    from = %hb.node,
                    generation = ?hb.sgen,
                    suspects = ?hb.suspects.iter().map(|s| s.node.as_str()).collect::<Vec<_>>(),
                    "suspicions received"
                );
            }
            lock(&self.membership.detector).receive(hb, format, Instant::now(), now_ms())
        });
        let e = match r {
            Ok(()) => {
                self.metrics.heartbeats_received.inc();
                self.membership.received.notify_waiters();
                return;
            }
            Err(e) => e,
        };
        self.metrics.heartbeats_rejected.with_label_values(&[e.as_str()]).inc();
        let member = member_at(targets, from.ip());
        // From a member's address and alive, but unverifiable (another key, a clock out
        // of the window, a refused format): judged by its Lease, not dead.
        let unverifiable =
            matches!(e, detector::Reject::BadTag | detector::Reject::Stale(_) | detector::Reject::Legacy);
        if unverifiable && let Some(m) = member {
            lock(&self.membership.detector).auth_failed(m, Instant::now());
        }
        let first = matches!(e, detector::Reject::BadTag | detector::Reject::Stale(_))
            && self.warned.insert(from.ip().to_canonical());
        if first {
            tracing::warn!(%from, member = member.unwrap_or("-"), error = %e, "memberlist datagram refused");
        } else {
            tracing::debug!(%from, error = %e, "memberlist datagram refused");
        }
    }
}

/// Run the heartbeat loop on `socket` until dropped.
pub async fn run(socket: UdpSocket, l: Loop) {
    let Loop { settings, membership, peers, changed, metrics, on_mismatch } = l;
    let timing = settings.timing;
    {
        let mut d = lock(&membership.detector);
        d.accept_legacy(settings.legacy);
        d.set_incarnation(now_ms());
    }
    let dual = socket.local_addr().map(|a| a.is_ipv6()).unwrap_or(false);
    // The detector is polled four times per interval (and after every datagram): it
    // says when a heartbeat or broadcast is due, and judges silences.
    let mut tick = tokio::time::interval(timing.poll_every());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buf = vec![0u8; 65_536];
    let mut last: (BTreeMap<String, Liveness>, BTreeMap<IpAddr, String>) = Default::default();
    let mut mismatched: BTreeSet<String> = BTreeSet::new();
    let mut rx = Receiver { keys: &settings.keys, membership: &membership, metrics: &metrics, warned: BTreeSet::new() };
    let mut targets: Vec<Target> = peers();
    set_members(&membership, &targets);
    let mut targets_at = Instant::now();
    let mut incarnation = lock(&membership.detector).incarnation();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = membership.send_now.notified() => {}
            r = socket.recv_from(&mut buf) => match r {
                Ok((n, from)) => rx.take(&buf[..n], from, &targets),
                Err(e) => tracing::debug!(error = %e, "memberlist receive failed"),
            },
        }
        // Read whatever else has arrived before judging: after a stall of this thread,
        // the datagrams that came meanwhile are evidence, not silence.
        while let Ok((n, from)) = socket.try_recv_from(&mut buf) {
            rx.take(&buf[..n], from, &targets);
        }
        let now = Instant::now();
        if now.saturating_duration_since(targets_at) >= timing.interval {
            targets = peers();
            targets_at = now;
            set_members(&membership, &targets);
        }
        let outgoing = {
            let local = Local {
                ready: membership.ready.load(Ordering::Relaxed),
                leaving: membership.leaving.load(Ordering::Relaxed),
                claims: lock(&membership.own)
                    .iter()
                    .map(|(ip, (since, at))| (Claim { ip: *ip, since_ms: *since }, *at))
                    .collect(),
            };
            let mut d = lock(&membership.detector);
            metrics.ring.with_label_values(&["observers"]).set(d.observers().len() as i64);
            metrics.ring.with_label_values(&["subjects"]).set(d.subjects().count() as i64);
            let out = d.poll(now, now_ms(), &local);
            if d.incarnation() != std::mem::replace(&mut incarnation, d.incarnation()) {
                tracing::info!(
                    incarnation = d.incarnation(),
                    "this node's observers had declared it dead (a lost link, a stall): alive again under a new incarnation"
                );
            }
            for o in out.iter().filter(|o| o.parts.iter().any(|p| !p.dead.is_empty())) {
                tracing::info!(peer = ?o.to, "telling a member heard after its observers declared it dead");
            }
            out
        };
        let key = &settings.keys[0];
        let sent_ms = now_ms();
        for out in &outgoing {
            for part in &out.parts {
                if !part.suspects.is_empty() {
                    tracing::debug!(
                        to = out.to.len(),
                        generation = ?part.sgen,
                        suspects = ?part.suspects.iter().map(|s| s.node.as_str()).collect::<Vec<_>>(),
                        "suspicions sent"
                    );
                }
                let datagram = detector::seal(key, part, out.format, sent_ms);
                for name in &out.to {
                    let Some(t) = targets.iter().find(|t| t.name == *name) else { continue };
                    let to = match (dual, t.addr) {
                        (true, SocketAddr::V4(a)) => SocketAddr::new(IpAddr::V6(a.ip().to_ipv6_mapped()), a.port()),
                        (_, a) => a,
                    };
                    match socket.send_to(&datagram, to).await {
                        Ok(n) => {
                            metrics.heartbeats_sent.inc();
                            metrics.heartbeat_bytes_sent.inc_by(n as u64);
                        }
                        Err(e) => tracing::debug!(%to, error = %e, "heartbeat not sent"),
                    }
                }
            }
        }
        // Wake the planner when a member's liveness or a claim changed.
        let (view, claims, now_mismatched) = {
            let d = lock(&membership.detector);
            let claims: BTreeMap<IpAddr, String> = d.claims(now).into_iter().map(|(ip, (n, _))| (ip, n)).collect();
            (d.view(now), claims, d.mismatched(now).into_iter().collect::<BTreeSet<String>>())
        };
        for m in now_mismatched.difference(&mismatched) {
            if let Some(t) = targets.iter().find(|t| t.name == *m) {
                on_mismatch(m, t.addr.ip());
            }
        }
        if now_mismatched.len() < mismatched.len() {
            // A mismatch that ended may warn again if it comes back.
            rx.warned.retain(|ip| {
                targets.iter().any(|t| t.addr.ip().to_canonical() == *ip && now_mismatched.contains(&t.name))
            });
        }
        mismatched = now_mismatched;
        count_peers(&metrics, &targets, &view, &mismatched);
        if (&view, &claims) != (&last.0, &last.1) {
            for (node, l) in &view {
                let before = last.0.get(node).copied();
                if *l == Liveness::Dead && before == Some(Liveness::Alive) {
                    metrics.peers_dead.inc();
                    tracing::info!(peer = %node, "peer dead: its observers lost it, or it left");
                } else if *l == Liveness::Alive && before == Some(Liveness::Dead) {
                    tracing::info!(peer = %node, "peer alive again");
                }
            }
            last = (view, claims);
            changed.notify_one();
        }
    }
}

/// Tell the detector who the members are (only when `targets` was read again: the
/// member set changes with Leases, not with every datagram).
fn set_members(membership: &Membership, targets: &[Target]) {
    lock(&membership.detector).set_members_with_legacy(
        targets.iter().filter(|t| t.ring).map(|t| t.name.clone()),
        targets.iter().filter(|t| !t.ring).map(|t| t.name.clone()),
    );
}

/// The member listening at `ip` (a v4-mapped source counts as its IPv4 address).
fn member_at(targets: &[Target], ip: IpAddr) -> Option<&str> {
    let ip = ip.to_canonical();
    targets.iter().find(|t| t.addr.ip().to_canonical() == ip).map(|t| t.name.as_str())
}

/// Set `ferrolb_memberlist_peers`: each member heartbeats go to, by what they say of it.
fn count_peers(
    metrics: &Metrics,
    targets: &[Target],
    view: &BTreeMap<String, Liveness>,
    mismatched: &BTreeSet<String>,
) {
    let mut counts = [0i64; 4];
    for Target { name, .. } in targets {
        let i = match view.get(name) {
            _ if mismatched.contains(name) => 3,
            Some(Liveness::Alive) => 0,
            Some(Liveness::Dead) => 1,
            Some(Liveness::Unknown) | None => 2,
        };
        counts[i] += 1;
    }
    for (state, n) in crate::metrics::PEER_STATES.iter().zip(counts) {
        metrics.peers.with_label_values(&[state]).set(n);
    }
}
