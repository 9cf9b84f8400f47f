//! A deterministic simulator of the heartbeat detector: N [`Detector`]s on a simulated
//! clock and network (per-link latency, jitter and loss, cut links, CPU stalls,
//! crashes and graceful leaves), polled as the socket loop polls them (every
//! [`HeartbeatTiming::poll_every`]). It runs the speaker's own detector code; only
//! the UDP socket, the HMAC and the clock are simulated. Seeded: the same seed gives
//! the same run.
//!
//! Used by the detector's tests (small clusters, exact scenarios) and by the
//! membership benchmark (`cargo bench -p ferrolb-speaker --bench membership`: up to
//! thousands of nodes, minutes of simulated time).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::rc::Rc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::detector::{Claim, Detector, Format, Heartbeat, HeartbeatTiming, Liveness, Local};

/// The simulated wall clock at the start (ms since the epoch).
const WALL0: u64 = 1_800_000_000_000;
/// A sealed datagram is its JSON plus the 4-byte magic and the 32-byte tag.
const SEAL_OVERHEAD: usize = 36;

/// The simulated network.
#[derive(Debug, Clone, Copy)]
pub struct Net {
    /// One-way latency of every link.
    pub latency: Duration,
    /// Added uniformly at random, 0 to this, per datagram.
    pub jitter: Duration,
    /// Probability that a datagram is lost, on every link.
    pub loss: f64,
}

impl Default for Net {
    fn default() -> Self {
        Net { latency: Duration::from_micros(200), jitter: Duration::from_micros(300), loss: 0.0 }
    }
}

/// A saturated CPU: the node's heartbeat thread is not scheduled for stalls of
/// `min..max`, starting on average every `every`. Its timers fire late and datagrams
/// wait in the socket buffer meanwhile, to be handled in order when it runs again.
#[derive(Debug, Clone, Copy)]
pub struct Stalls {
    pub every: Duration,
    pub min: Duration,
    pub max: Duration,
}

#[derive(Debug, Clone)]
enum Event {
    Poll(usize),
    Deliver { to: usize, hb: Rc<Heartbeat>, bytes: usize },
}

/// An event in the queue, ordered by time, then by when it was queued.
#[derive(Debug)]
struct Queued(Duration, u64, Event);

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        (self.0, self.1) == (other.0, other.1)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.0, self.1).cmp(&(other.0, other.1))
    }
}

/// Per-node traffic counters.
#[derive(Debug, Clone, Copy, Default)]
pub struct Traffic {
    pub sent: u64,
    pub sent_bytes: u64,
    pub received: u64,
    pub received_bytes: u64,
}

struct Node {
    det: Detector,
    local: Local,
    running: bool,
    /// Stall windows still to come (start, end), in order.
    stalls: Vec<(Duration, Duration)>,
    traffic: Traffic,
}

/// A death or leave being watched: when it happened, and when each node saw it.
#[derive(Debug, Clone)]
pub struct Watch {
    pub node: usize,
    pub at: Duration,
    pub seen: BTreeMap<usize, Duration>,
    /// When the node's Lease expired: from then on no one judges it.
    pub expired: Option<Duration>,
}

/// The simulation.
pub struct Sim {
    t0: Instant,
    now: Duration,
    timing: HeartbeatTiming,
    net: Net,
    rng: StdRng,
    queue: BinaryHeap<Reverse<Queued>>,
    order: u64,
    names: Vec<String>,
    index: BTreeMap<String, usize>,
    nodes: Vec<Node>,
    /// Directed links that drop everything (from, to).
    cut: BTreeSet<(usize, usize)>,
    /// Deaths and leaves whose detection is measured.
    pub watches: Vec<Watch>,
    /// (observer, subject, when): a running node judged dead by another.
    pub false_deaths: Vec<(usize, usize, Duration)>,
    /// Pairs currently judged falsely dead (so an episode counts once).
    falsely_dead: BTreeSet<(usize, usize)>,
    /// (node, crashed, when): a crashed node that `node` had judged dead judged alive
    /// again (its IPs would move back to a dead node); once per pair.
    pub resurrections: Vec<(usize, usize, Duration)>,
    expired: BTreeSet<usize>,
}

impl Sim {
    /// `n` speakers named `node-0000`.., all members of the rings, started at random
    /// phases within the first interval; nothing is lost unless `net` says so.
    pub fn new(n: usize, timing: HeartbeatTiming, net: Net, seed: u64) -> Self {
        let t0 = Instant::now();
        let names: Vec<String> = (0..n).map(|i| format!("node-{i:04}")).collect();
        let index = names.iter().enumerate().map(|(i, n)| (n.clone(), i)).collect();
        let mut nodes = Vec::with_capacity(n);
        for (i, name) in names.iter().enumerate() {
            let mut det = Detector::new(name, timing, t0);
            det.set_incarnation(WALL0 + i as u64);
            det.set_members(names.iter().cloned());
            let local = Local { ready: true, leaving: false, claims: Vec::new() };
            nodes.push(Node { det, local, running: true, stalls: Vec::new(), traffic: Traffic::default() });
        }
        let mut sim = Sim {
            t0,
            now: Duration::ZERO,
            timing,
            net,
            rng: StdRng::seed_from_u64(seed),
            queue: BinaryHeap::new(),
            order: 0,
            names,
            index,
            nodes,
            cut: BTreeSet::new(),
            watches: Vec::new(),
            false_deaths: Vec::new(),
            falsely_dead: BTreeSet::new(),
            resurrections: Vec::new(),
            expired: BTreeSet::new(),
        };
        for i in 0..n {
            let phase = Duration::from_micros(sim.rng.random_range(0..timing.interval.as_micros() as u64));
            sim.push(phase, Event::Poll(i));
        }
        sim
    }

    /// Make every node speak the previous release's all-to-all heartbeats (the
    /// baseline): every member is sent every heartbeat, with the heard list.
    pub fn all_legacy(&mut self) {
        for n in &mut self.nodes {
            n.det.set_members_with_legacy(std::iter::empty(), self.names.iter().cloned());
        }
    }

    /// A rolling upgrade half done: `old` speak only the previous release's
    /// heartbeats (all-to-all, to everyone); the others speak the ring protocol among
    /// themselves and the previous one to `old`.
    pub fn speak_legacy(&mut self, old: &[usize]) {
        let old_names: Vec<String> = old.iter().map(|i| self.names[*i].clone()).collect();
        let new_names: Vec<String> = self.names.iter().filter(|n| !old_names.contains(n)).cloned().collect();
        for (i, n) in self.nodes.iter_mut().enumerate() {
            if old.contains(&i) {
                n.det.set_members_with_legacy(std::iter::empty(), self.names.iter().cloned());
            } else {
                n.det.set_members_with_legacy(new_names.iter().cloned(), old_names.iter().cloned());
            }
        }
    }

    fn push(&mut self, at: Duration, e: Event) {
        self.order += 1;
        self.queue.push(Reverse(Queued(at, self.order, e)));
    }

    /// Simulated time since the start.
    pub fn now(&self) -> Duration {
        self.now
    }

    /// Node `i`'s name.
    pub fn name(&self, i: usize) -> &str {
        &self.names[i]
    }

    /// The number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the simulation has no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Node `i`'s detector.
    pub fn detector(&self, i: usize) -> &Detector {
        &self.nodes[i].det
    }

    /// What node `of` says about node `about` now.
    pub fn liveness(&self, of: usize, about: usize) -> Liveness {
        self.nodes[of].det.liveness(&self.names[about], self.t0 + self.now)
    }

    /// Node `i`'s traffic so far.
    pub fn traffic(&self, i: usize) -> Traffic {
        self.nodes[i].traffic
    }

    /// Whether node `i` is running.
    pub fn running(&self, i: usize) -> bool {
        self.nodes[i].running
    }

    /// Node `i` crashes now (nothing more from or to it); its detection is watched.
    pub fn crash(&mut self, i: usize) {
        self.nodes[i].running = false;
        self.watches.push(Watch { node: i, at: self.now, seen: BTreeMap::new(), expired: None });
    }

    /// Node `i` starts a graceful leave now (it keeps running); watched.
    /// Node `i`'s Lease expired (it crashed a Lease duration ago): every running
    /// node's detector forgets it, as the speakers do when its Lease goes.
    pub fn expire_lease(&mut self, i: usize) {
        self.expired.insert(i);
        let members: Vec<String> =
            self.names.iter().enumerate().filter(|(j, _)| !self.expired.contains(j)).map(|(_, n)| n.clone()).collect();
        for n in self.nodes.iter_mut().filter(|n| n.running) {
            n.det.set_members(members.iter().cloned());
        }
        let now = self.now;
        for w in self.watches.iter_mut().filter(|w| w.node == i && w.expired.is_none()) {
            w.expired = Some(now);
        }
    }

    pub fn leave(&mut self, i: usize) {
        self.nodes[i].local.leaving = true;
        self.watches.push(Watch { node: i, at: self.now, seen: BTreeMap::new(), expired: None });
    }

    /// Node `i` now answers for `ip` (a takeover, claimed to its peers).
    pub fn claim(&mut self, i: usize, ip: std::net::IpAddr) {
        let claim = Claim { ip, since_ms: WALL0 + self.now.as_millis() as u64 };
        self.nodes[i].local.claims.push((claim, self.t0 + self.now));
    }

    /// Cut (or restore) the link from `a` to `b`, one direction.
    pub fn set_cut(&mut self, a: usize, b: usize, cut: bool) {
        if cut {
            self.cut.insert((a, b));
        } else {
            self.cut.remove(&(a, b));
        }
    }

    /// Cut (or restore) both directions between `a` and `b`.
    pub fn set_cut_both(&mut self, a: usize, b: usize, cut: bool) {
        self.set_cut(a, b, cut);
        self.set_cut(b, a, cut);
    }

    /// Node `i`'s CPU is saturated from now until `until`.
    pub fn saturate(&mut self, i: usize, stalls: Stalls, until: Duration) {
        let mut t = self.now;
        let mut windows = Vec::new();
        loop {
            // Exponential gaps between stalls, mean `every`.
            let u: f64 = self.rng.random_range(f64::EPSILON..1.0);
            t += stalls.every.mul_f64(-u.ln());
            if t >= until {
                break;
            }
            let len = self.rng.random_range(stalls.min..=stalls.max);
            windows.push((t, t + len));
            t += len;
        }
        self.nodes[i].stalls = windows;
    }

    /// Run until `until` (simulated time since the start).
    pub fn run_until(&mut self, until: Duration) {
        while let Some(Reverse(Queued(at, _, _))) = self.queue.peek() {
            if *at > until {
                break;
            }
            let Some(Reverse(Queued(at, _, event))) = self.queue.pop() else { break };
            self.now = at;
            let node = match &event {
                Event::Poll(i) => *i,
                Event::Deliver { to, .. } => *to,
            };
            if !self.nodes[node].running {
                continue;
            }
            // A stalled node handles the event when it runs again (in order).
            let stalls = &mut self.nodes[node].stalls;
            while stalls.first().is_some_and(|(_, end)| *end <= at) {
                stalls.remove(0);
            }
            if let Some((start, end)) = stalls.first().copied()
                && start <= at
            {
                self.push(end, event);
                continue;
            }
            match event {
                Event::Poll(i) => self.poll(i),
                Event::Deliver { to, hb, bytes } => {
                    let now = self.t0 + self.now;
                    let wall = WALL0 + self.now.as_millis() as u64;
                    let n = &mut self.nodes[to];
                    n.traffic.received += 1;
                    n.traffic.received_bytes += bytes as u64;
                    let _ = n.det.receive(&*hb, Format::V2, now, wall);
                }
            }
        }
        self.now = until;
    }

    fn poll(&mut self, i: usize) {
        let now = self.t0 + self.now;
        let wall = WALL0 + self.now.as_millis() as u64;
        let out = {
            let n = &mut self.nodes[i];
            n.det.poll(now, wall, &n.local)
        };
        for o in out {
            for part in o.parts {
                let bytes = serde_json::to_vec(&part).map_or(0, |v| v.len()) + SEAL_OVERHEAD;
                let part = Rc::new(part);
                for to in &o.to {
                    let Some(&j) = self.index.get(to) else { continue };
                    let t = &mut self.nodes[i].traffic;
                    t.sent += 1;
                    t.sent_bytes += bytes as u64;
                    if self.cut.contains(&(i, j)) || (self.net.loss > 0.0 && self.rng.random_bool(self.net.loss)) {
                        continue;
                    }
                    let jitter = self.rng.random_range(0..=self.net.jitter.as_micros() as u64);
                    let at = self.now + self.net.latency + Duration::from_micros(jitter);
                    self.push(at, Event::Deliver { to: j, hb: part.clone(), bytes });
                }
            }
        }
        self.observe(i);
        self.push(self.now + self.timing.poll_every(), Event::Poll(i));
    }

    /// Record what node `i` now says about watched nodes, and any false death.
    fn observe(&mut self, i: usize) {
        let now = self.t0 + self.now;
        for w in &mut self.watches {
            if w.node == i || w.expired.is_some() {
                continue;
            }
            let dead = self.nodes[i].det.liveness(&self.names[w.node], now) == Liveness::Dead;
            if dead && !w.seen.contains_key(&i) {
                w.seen.insert(i, self.now - w.at);
            }
            let crashed = !self.nodes[w.node].running;
            if crashed
                && !dead
                && w.seen.contains_key(&i)
                && !self.resurrections.iter().any(|(o, s, _)| (*o, *s) == (i, w.node))
            {
                self.resurrections.push((i, w.node, self.now));
            }
        }
        let dead: Vec<usize> = self.nodes[i].det.dead().filter_map(|n| self.index.get(n).copied()).collect();
        self.falsely_dead.retain(|(o, s)| *o != i || dead.contains(s));
        for s in dead {
            let really = !self.nodes[s].running || self.nodes[s].local.leaving;
            if !really && self.falsely_dead.insert((i, s)) {
                self.false_deaths.push((i, s, self.now));
            }
        }
    }

    /// Detection times of watch `w` at every node still running (None: not seen).
    pub fn detection(&self, w: &Watch) -> Vec<Option<Duration>> {
        (0..self.nodes.len())
            .filter(|j| *j != w.node && self.nodes[*j].running)
            .map(|j| w.seen.get(&j).copied())
            .collect()
    }
}
