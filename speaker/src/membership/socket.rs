//! The heartbeat socket around [`super::detector::Detector`]: sends this node's
//! heartbeat to every member each interval (and at once when it takes an IP over or
//! leaves), feeds authenticated heartbeats to the detector, and wakes the planner
//! when a member's liveness or a claim changes.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use ferrolb_common::lock;
use tokio::net::UdpSocket;
use tokio::sync::Notify;

use crate::membership::detector::{self, Claim, Detector, Heartbeat, HeartbeatTiming, Liveness};
use crate::metrics::Metrics;

/// Memberlist flags.
#[derive(Clone)]
pub struct HeartbeatSettings {
    /// UDP port every speaker listens on.
    pub port: u16,
    /// The shared HMAC key.
    pub key: Vec<u8>,
    /// Heartbeat timing.
    pub timing: HeartbeatTiming,
}

impl std::fmt::Debug for HeartbeatSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeartbeatSettings")
            .field("port", &self.port)
            .field("key", &"<redacted>")
            .field("timing", &self.timing)
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
}

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
        }
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
pub fn bind(port: u16) -> std::io::Result<UdpSocket> {
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
    UdpSocket::from_std(s.into())
}

/// Run the heartbeat loop on `socket` until aborted. `peers` lists the other members
/// and where they listen; `changed` wakes the planner.
pub async fn run(
    socket: UdpSocket,
    me: String,
    settings: HeartbeatSettings,
    membership: Arc<Membership>,
    peers: impl Fn() -> Vec<(String, SocketAddr)> + Send + 'static,
    changed: Arc<Notify>,
    metrics: Metrics,
) {
    let timing = settings.timing;
    let dual = socket.local_addr().map(|a| a.is_ipv6()).unwrap_or(false);
    let incarnation = now_ms();
    let mut seq: u64 = 0;
    let mut tick = tokio::time::interval(timing.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Liveness is re-judged four times per interval, so a death is seen within a
    // quarter interval of `suspect_after`.
    let mut check = tokio::time::interval(timing.interval / 4);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buf = vec![0u8; 65_536];
    let mut last: (BTreeMap<String, Liveness>, BTreeMap<IpAddr, String>) = Default::default();
    let mut warned_tag: std::collections::BTreeSet<IpAddr> = Default::default();
    let mut targets: Vec<(String, SocketAddr)> = Vec::new();
    loop {
        let mut send = false;
        tokio::select! {
            _ = tick.tick() => { send = true; }
            _ = check.tick() => {}
            _ = membership.send_now.notified() => { send = true; }
            r = socket.recv_from(&mut buf) => match r {
                Ok((n, from)) => {
                    let r = detector::open(&settings.key, &buf[..n])
                        .and_then(|hb| lock(&membership.detector).receive(hb, Instant::now()));
                    match r {
                        Ok(()) => {
                            metrics.heartbeats_received.inc();
                            membership.received.notify_waiters();
                        }
                        Err(e) => {
                            metrics.heartbeats_rejected.with_label_values(&[e.as_str()]).inc();
                            if e == detector::Reject::BadTag && warned_tag.insert(from.ip()) {
                                tracing::warn!(%from, error = %e, "memberlist datagram refused");
                            } else {
                                tracing::debug!(%from, error = %e, "memberlist datagram refused");
                            }
                        }
                    }
                }
                Err(e) => tracing::debug!(error = %e, "memberlist receive failed"),
            },
        }
        let now = Instant::now();
        if send {
            let hb = {
                let d = lock(&membership.detector);
                let own = lock(&membership.own);
                Heartbeat {
                    node: me.clone(),
                    incarnation,
                    seq,
                    ready: membership.ready.load(Ordering::Relaxed),
                    leaving: membership.leaving.load(Ordering::Relaxed),
                    heard: d.heard(now),
                    claims: own
                        .iter()
                        .filter(|(_, (_, at))| now.saturating_duration_since(*at) <= timing.claim_window)
                        .map(|(ip, (since, _))| Claim { ip: *ip, since_ms: *since })
                        .collect(),
                }
            };
            let parts = detector::heartbeats(&hb);
            seq += parts.len() as u64;
            targets = peers();
            for part in &parts {
                let datagram = detector::seal(&settings.key, part);
                for (_, t) in &targets {
                    let to = match (dual, t) {
                        (true, SocketAddr::V4(a)) => SocketAddr::new(IpAddr::V6(a.ip().to_ipv6_mapped()), a.port()),
                        _ => *t,
                    };
                    match socket.send_to(&datagram, to).await {
                        Ok(_) => metrics.heartbeats_sent.inc(),
                        Err(e) => tracing::debug!(%to, error = %e, "heartbeat not sent"),
                    }
                }
            }
            lock(&membership.detector).expire(now);
        }
        // Wake the planner when a member's liveness or a claim changed.
        let (view, claims) = {
            let d = lock(&membership.detector);
            let claims: BTreeMap<IpAddr, String> = d.claims(now).into_iter().map(|(ip, (n, _))| (ip, n)).collect();
            (d.view(now), claims)
        };
        count_peers(&metrics, &targets, &view);
        if (&view, &claims) != (&last.0, &last.1) {
            for (node, l) in &view {
                let before = last.0.get(node).copied();
                if *l == Liveness::Dead && before == Some(Liveness::Alive) {
                    metrics.peers_dead.inc();
                    tracing::info!(peer = %node, "peer dead: no heartbeat from anyone within suspect-after, or it left");
                } else if *l == Liveness::Alive && before == Some(Liveness::Dead) {
                    tracing::info!(peer = %node, "peer alive again");
                }
            }
            last = (view, claims);
            changed.notify_one();
        }
    }
}

/// Set `ferrolb_memberlist_peers`: each member heartbeats go to, by what they say of it.
fn count_peers(metrics: &Metrics, targets: &[(String, SocketAddr)], view: &BTreeMap<String, Liveness>) {
    let mut counts = [0i64; 3];
    for (name, _) in targets {
        let i = match view.get(name) {
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
