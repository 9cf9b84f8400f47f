//! BFD on the wire: [`crate::bfd::Session`]s run on a thread of their own with its own
//! single-threaded scheduler (a speaker busy with API work must not delay a 50 ms
//! packet), one receiving socket per family on UDP 3784 that takes TTL 255 only
//! (RFC 5881 §5, checked by the kernel), and per session a sending socket from a
//! port of 49152-65535 with TTL 255 (RFC 5881 §4).
//!
//! Received packets go to the session whose discriminator they name, or, while the
//! peer does not know it yet (your discriminator 0), to the session with the
//! sender's address; anything else is dropped.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::bfd::{self, Diag, Packet, State};

/// One session: with whom, from where, with which timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    /// The peer's address (packets go to its port 3784).
    pub peer: IpAddr,
    /// Send from this address (default: the kernel's choice for the peer).
    pub source: Option<IpAddr>,
    /// The timers.
    pub config: bfd::Config,
}

/// How a session last left Up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Down {
    /// The diagnostic: the detection time expired, the peer said down, ...
    pub diag: Diag,
    /// The peer said AdminDown: it stopped BFD on purpose, which is no failure of the
    /// path (RFC 5882 §3.2): its clients must not act on it.
    pub by_peer_admin: bool,
}

impl std::fmt::Display for Down {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.by_peer_admin, self.diag) {
            (true, _) => f.write_str("the peer stopped BFD (AdminDown)"),
            (false, Diag::ControlDetectionTimeExpired) => f.write_str("no BFD packet within the detection time"),
            (false, Diag::NeighborSignaledSessionDown) => f.write_str("the peer said the BFD session is down"),
            (false, d) => write!(f, "BFD down ({d:?})"),
        }
    }
}

/// What a session reports: its state and how it last went down. A session whose
/// sockets cannot be opened says so in the log and stays Down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub state: State,
    pub last_down: Option<Down>,
}

/// A session's packet counts, read by the owner's metrics.
#[derive(Debug, Default)]
pub struct Counters {
    /// Control packets taken by the session.
    pub received: AtomicU64,
    /// Control packets sent.
    pub sent: AtomicU64,
    /// Times the session came Up.
    pub ups: AtomicU64,
    /// Times it left Up.
    pub downs: AtomicU64,
}

/// How a session ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Run,
    /// Tell the peer (AdminDown): a deleted peer, a session ended on purpose.
    AdminDown,
    /// Fall silent: a speaker restarting with graceful restart, whose peer is to treat
    /// the silence as the control plane restarting (the C bit is clear).
    Silent,
}

/// A running session; dropping it ends the session with AdminDown.
pub struct Handle {
    /// The session's status.
    pub status: watch::Receiver<Status>,
    /// Its packet counts.
    pub counters: Arc<Counters>,
    stop: watch::Sender<Stop>,
}

impl Handle {
    /// End the session as `how` says.
    pub fn stop(self, how: Stop) {
        self.stop.send_replace(how);
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.stop.send_if_modified(|s| {
            let run = *s == Stop::Run;
            if run {
                *s = Stop::AdminDown;
            }
            run
        });
    }
}

struct Entry {
    peer: IpAddr,
    tx: mpsc::Sender<(Packet, Instant)>,
}

#[derive(Default)]
struct Registry {
    sessions: HashMap<u32, Entry>,
    /// Receiving sockets opened, by family (v4, v6): Ok, or why not.
    listening: [Option<Result<(), String>>; 2],
}

/// The BFD thread; cheap to clone. The thread ends when the last clone is dropped.
#[derive(Clone)]
pub struct Bfd {
    rt: tokio::runtime::Handle,
    registry: Arc<Mutex<Registry>>,
    /// The port this side listens on, and the one peers listen on (both 3784 but in tests).
    ports: (u16, u16),
    _alive: Arc<oneshot::Sender<()>>,
}

fn lock(m: &Mutex<Registry>) -> std::sync::MutexGuard<'_, Registry> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A random u64 from the standard library's per-process seed (no extra dependency).
fn random() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(Instant::now().elapsed().as_nanos() as u64);
    h.finish()
}

impl Bfd {
    /// Start the thread. Sockets are opened when a session first needs them.
    pub fn spawn() -> std::io::Result<Bfd> {
        Bfd::spawn_on_ports(bfd::PORT, bfd::PORT)
    }

    /// [`Bfd::spawn`] listening on `listen` and sending to the peers' `peer` (tests run
    /// two on one host).
    pub fn spawn_on_ports(listen: u16, peer: u16) -> std::io::Result<Bfd> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let handle = rt.handle().clone();
        let (alive, dead) = oneshot::channel::<()>();
        std::thread::Builder::new().name("bfd".into()).spawn(move || {
            // Ends when every clone of the Bfd is gone (the sender drops).
            let _ = rt.block_on(dead);
        })?;
        Ok(Bfd { rt: handle, registry: Arc::default(), ports: (listen, peer), _alive: Arc::new(alive) })
    }

    /// Start a session.
    pub fn add(&self, spec: Spec) -> Handle {
        let (status_tx, status) = watch::channel(Status { state: State::Down, last_down: None });
        let counters = Arc::new(Counters::default());
        let (stop, stop_rx) = watch::channel(Stop::Run);
        let (tx, rx) = mpsc::channel(64);
        let disc = {
            let mut reg = lock(&self.registry);
            let mut d = (random() as u32).max(1);
            while reg.sessions.contains_key(&d) {
                d = d.wrapping_add(1).max(1);
            }
            reg.sessions.insert(d, Entry { peer: spec.peer, tx });
            d
        };
        let task = SessionTask {
            spec,
            disc,
            ports: self.ports,
            packets: rx,
            status: status_tx,
            counters: counters.clone(),
            stop: stop_rx,
            registry: self.registry.clone(),
        };
        self.rt.spawn(task.run());
        Handle { status, counters, stop }
    }

    /// Sessions running now.
    pub fn sessions(&self) -> usize {
        lock(&self.registry).sessions.len()
    }
}

struct SessionTask {
    spec: Spec,
    disc: u32,
    ports: (u16, u16),
    packets: mpsc::Receiver<(Packet, Instant)>,
    status: watch::Sender<Status>,
    counters: Arc<Counters>,
    stop: watch::Receiver<Stop>,
    registry: Arc<Mutex<Registry>>,
}

impl SessionTask {
    async fn run(mut self) {
        let fail = |e: String| tracing::warn!(peer = %self.spec.peer, error = %e, "BFD session cannot run");
        if let Err(e) = listen(&self.registry, self.spec.peer.is_ipv6(), self.ports.0) {
            fail(e);
        }
        let sock = match sender(&self.spec, self.ports.1).await {
            Ok(s) => Some(s),
            Err(e) => {
                fail(format!("sending socket to {}: {e}", self.spec.peer));
                None
            }
        };
        let mut session = bfd::Session::new(self.spec.config, self.disc, Instant::now().into_std());
        let mut rng = random() | 1;
        let mut jitter = move || {
            // xorshift64: the transmit jitter needs no more.
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng >> 11) as f64 / (1u64 << 53) as f64
        };
        loop {
            let deadline = Instant::from_std(session.deadline());
            let (events, out) = tokio::select! {
                _ = tokio::time::sleep_until(deadline) => session.tick(Instant::now().into_std(), jitter()),
                p = self.packets.recv() => {
                    let Some((p, at)) = p else { break };
                    match session.receive(at.into_std(), &p) {
                        Ok(r) => {
                            self.counters.received.fetch_add(1, Ordering::Relaxed);
                            r
                        }
                        Err(e) => {
                            tracing::debug!(peer = %self.spec.peer, error = %e, "BFD packet refused");
                            continue;
                        }
                    }
                }
                r = self.stop.changed() => {
                    let how = if r.is_err() { Stop::AdminDown } else { *self.stop.borrow() };
                    match how {
                        Stop::Run => continue,
                        Stop::AdminDown => {
                            let bye = session.admin_down();
                            // Twice: one lost datagram must not leave the peer to time out.
                            for _ in 0..2 {
                                send(&sock, &bye, &self.counters).await;
                            }
                        }
                        Stop::Silent => {}
                    }
                    break;
                }
            };
            for e in events {
                match e {
                    bfd::Event::Up => {
                        self.counters.ups.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(peer = %self.spec.peer, "BFD session up");
                    }
                    bfd::Event::Down(diag) => {
                        self.counters.downs.fetch_add(1, Ordering::Relaxed);
                        let down = Down { diag, by_peer_admin: session.peer_admin_down() };
                        tracing::info!(peer = %self.spec.peer, why = %down, "BFD session down");
                        self.status.send_modify(|s| s.last_down = Some(down));
                    }
                }
            }
            self.status.send_if_modified(|s| {
                let changed = s.state != session.state();
                s.state = session.state();
                changed
            });
            if let Some(p) = out {
                send(&sock, &p, &self.counters).await;
            }
        }
        lock(&self.registry).sessions.remove(&self.disc);
    }
}

async fn send(sock: &Option<UdpSocket>, p: &Packet, counters: &Counters) {
    if let Some(s) = sock {
        // A peer not (yet) listening answers with ICMP, which the next send reports:
        // nothing to do but go on sending.
        if s.send(&p.encode()).await.is_ok() {
            counters.sent.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The sending socket of a session: from a free port of 49152-65535, TTL 255,
/// connected to the peer's BFD port.
async fn sender(spec: &Spec, port: u16) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Socket, Type};
    let v6 = spec.peer.is_ipv6();
    let local = spec.source.unwrap_or(if v6 { Ipv6Addr::UNSPECIFIED.into() } else { Ipv4Addr::UNSPECIFIED.into() });
    let mut last = None;
    for i in 0..64u64 {
        let s = Socket::new(if v6 { Domain::IPV6 } else { Domain::IPV4 }, Type::DGRAM, None)?;
        if v6 {
            s.set_unicast_hops_v6(255)?;
        } else {
            s.set_ttl_v4(255)?;
        }
        s.set_nonblocking(true)?;
        let p = 49152 + ((random().wrapping_add(i)) % 16384) as u16;
        match s.bind(&SocketAddr::new(local, p).into()) {
            Ok(()) => {
                s.connect(&SocketAddr::new(spec.peer, port).into())?;
                return UdpSocket::from_std(s.into());
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no free source port")))
}

/// Open the receiving socket of a family once; its failure is every session's.
fn listen(registry: &Arc<Mutex<Registry>>, v6: bool, port: u16) -> Result<(), String> {
    let i = usize::from(v6);
    if let Some(r) = &lock(registry).listening[i] {
        return r.clone();
    }
    let opened = (|| -> std::io::Result<UdpSocket> {
        use socket2::{Domain, Socket, Type};
        let s = Socket::new(if v6 { Domain::IPV6 } else { Domain::IPV4 }, Type::DGRAM, None)?;
        if v6 {
            s.set_only_v6(true)?;
        }
        {
            use std::os::fd::AsRawFd;
            ferrolb_speaker_sys::set_min_ttl(s.as_raw_fd(), v6, 255)?;
        }
        s.set_nonblocking(true)?;
        let any: IpAddr = if v6 { Ipv6Addr::UNSPECIFIED.into() } else { Ipv4Addr::UNSPECIFIED.into() };
        s.bind(&SocketAddr::new(any, port).into())?;
        UdpSocket::from_std(s.into())
    })();
    let verdict = match opened {
        Ok(sock) => {
            tokio::spawn(receive(sock, registry.clone()));
            Ok(())
        }
        Err(e) => Err(format!(
            "UDP port {port} ({}): {e}; another BFD daemon on this node (FRR's bfdd?) holds it",
            if v6 { "IPv6" } else { "IPv4" }
        )),
    };
    lock(registry).listening[i] = Some(verdict.clone());
    verdict
}

async fn receive(sock: UdpSocket, registry: Arc<Mutex<Registry>>) {
    let mut buf = [0u8; 256];
    loop {
        let (n, from) = match sock.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "BFD receive failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let at = Instant::now();
        let target = Packet::decode(&buf[..n]).ok().and_then(|p| {
            let reg = lock(&registry);
            let from = from.ip().to_canonical();
            let entry = if p.your_disc != 0 {
                reg.sessions.get(&p.your_disc).filter(|e| e.peer == from)
            } else {
                reg.sessions.values().find(|e| e.peer == from)
            };
            entry.map(|e| (e.tx.clone(), p))
        });
        // Anything no session takes (undecodable, or from no peer) is dropped.
        if let Some((tx, p)) = target {
            let _ = tx.try_send((p, at));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(peer: &str, ms: u64) -> Spec {
        Spec {
            peer: peer.parse().unwrap(),
            source: None,
            config: bfd::Config {
                transmit_interval: Duration::from_millis(ms),
                receive_interval: Duration::from_millis(ms),
                detect_mult: 3,
                passive: false,
            },
        }
    }

    async fn until(h: &mut watch::Receiver<Status>, f: impl Fn(&Status) -> bool) -> Status {
        tokio::time::timeout(Duration::from_secs(10), h.wait_for(|s| f(s))).await.expect("in time").unwrap().clone()
    }

    /// Two BFD threads on loopback, each the other's peer (one listening on a port of
    /// its own): Up, then one stops silently and the other detects it; AdminDown is
    /// reported as the peer's doing.
    #[tokio::test]
    async fn two_speakers_come_up_and_detect_silence_and_admin_down() {
        // Distinct ports per test run; a second listener on 3784 would need root.
        let base = 20000 + (random() % 20000) as u16;
        let a = Bfd::spawn_on_ports(base, base + 1).unwrap();
        let b = Bfd::spawn_on_ports(base + 1, base).unwrap();
        // Both peers are 127.0.0.1: each thread has one session, found by address until
        // the discriminators are known.
        let mut ha = a.add(spec("127.0.0.1", 20));
        let mut hb = b.add(spec("127.0.0.1", 20));
        until(&mut ha.status, |s| s.state == State::Up).await;
        until(&mut hb.status, |s| s.state == State::Up).await;
        let started = Instant::now();
        hb.stop(Stop::Silent);
        let s = until(&mut ha.status, |s| s.state != State::Up).await;
        assert_eq!(s.last_down, Some(Down { diag: Diag::ControlDetectionTimeExpired, by_peer_admin: false }));
        let took = started.elapsed();
        assert!(took < Duration::from_millis(1000), "{took:?}");
        // Up again with a new session on b, then b says AdminDown.
        let mut hb = b.add(spec("127.0.0.1", 20));
        until(&mut ha.status, |s| s.state == State::Up).await;
        until(&mut hb.status, |s| s.state == State::Up).await;
        assert!(ha.counters.received.load(Ordering::Relaxed) > 0 && ha.counters.sent.load(Ordering::Relaxed) > 0);
        hb.stop(Stop::AdminDown);
        let s = until(&mut ha.status, |s| s.state != State::Up).await;
        assert!(s.last_down.is_some_and(|d| d.by_peer_admin), "{s:?}");
        drop(ha);
        tokio::time::timeout(Duration::from_secs(5), async {
            while a.sessions() > 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the session ended");
    }
}
