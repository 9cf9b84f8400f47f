//! Fast failure detection between speakers at a per-node cost independent of the
//! cluster size: each member is watched by [`ring::OBSERVERS`] observers (its
//! successors on as many hash rings, the same on every node), and declared dead only
//! when **every** live observer has lost it.
//!
//! - **Heartbeats** go only to the sender's observers, every `interval`: a node sends
//!   and receives about `OBSERVERS / interval` datagrams per second (80 at the 50 ms
//!   default) whether the cluster has 3 members or 3,000.
//! - **Suspicion**: an observer that has not heard a subject for `suspect_after`
//!   broadcasts it (to every member, three times, then once a second while it holds).
//! - **Consensus**: a member is dead at a node once every one of its observers (as
//!   that node computes them; one already dead abstains) suspects it at its current
//!   incarnation. One observer behind a lossy or broken link cannot fail anyone over
//!   while the others still hear it, and random loss must hit every observer at once.
//!   Detection is `suspect_after` (minus up to one interval) plus one broadcast hop,
//!   whatever the cluster size; a graceful leave is one broadcast.
//! - **Refutation**: an observer that hears a member it holds dead tells it so; the
//!   member takes a new incarnation and broadcasts that it is alive (SWIM's
//!   incarnation rule), and every member re-sends it the IPs it holds.
//!
//! Why not SWIM (`foca`, memberlist): one probe per period and dissemination by
//! gossip put detection at seconds. Why not every-node-to-every-node (the previous
//! release): `10 x (N-1)` datagrams per second per node, each with the full heard
//! list. Rapid's K observers on expander rings keep the cost constant; broadcasting
//! the (rare) suspicions instead of gossiping them keeps detection sub-second.
//!
//! The Lease stays the source of truth for membership (joining, graceful leave);
//! heartbeats only decide *alive* vs *dead* faster, and keep members alive while the
//! API server is unreachable (fail-static). Speakers of the previous release (their
//! Lease lacks [`RING_ANNOTATION`]) are sent and judged as before: every interval,
//! all-to-all, with the heard list (a rolling upgrade never fails anyone over).
//!
//! What a datagram must prove before it counts:
//! - the key: an HMAC-SHA256 tag over the whole datagram (any of the accepted keys,
//!   so a key can be rotated without a split);
//! - freshness: the sender's wall clock (format `FLB2`) within
//!   [`HeartbeatTiming::max_clock_skew`] of the receiver's, and a (incarnation,
//!   sequence) newer than the sender's high-water mark, which is kept as long as the
//!   sender holds a Lease (a replay of captured datagrams is refused however long
//!   after the capture it comes);
//! - membership: the sender, and every member it vouches for or suspects, holds a
//!   Lease; nothing is learnt about anyone else.
//!
//! A member whose datagrams arrive but fail authentication (a key mismatch) is
//! neither alive nor dead to heartbeats: its observer reports it *unverifiable*, and
//! every node leaves it to its Lease, as it does on its side; a mismatch slows
//! failover to Lease expiry and never makes two nodes answer.
//!
//! This module is pure (sans-IO): time is passed in, [`Detector::receive`] takes
//! datagrams and [`Detector::poll`] says what to send; the socket lives in
//! [`super::socket`], and the simulator (`speaker/benches/membership.rs`) drives the
//! same code over a simulated network.

pub mod ring;
mod wire;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::BuildHasherDefault;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Hash maps with a fixed hasher: lookups by member name are the detector's hot path
/// (a B-tree of names compares strings at every level), and a fixed hasher keeps the
/// simulator deterministic. Nothing depends on their iteration order.
type Fixed = BuildHasherDefault<std::collections::hash_map::DefaultHasher>;

pub use ring::{OBSERVERS, Rings};
pub use wire::{Claim, Format, Heartbeat, MAX_DATAGRAM, Reject, Suspicion, heartbeats, open, seal, seal_raw};

/// The annotation on a speaker's Lease saying it speaks the ring protocol (observers,
/// suspicion broadcasts); speakers without it are sent the previous release's
/// all-to-all heartbeats.
pub const RING_ANNOTATION: &str = "ferrolb.io/heartbeats";
/// Its value.
pub const RING_VALUE: &str = "ring-v1";

/// A suspicion broadcast is repeated while it holds, first after this, then at
/// doubling intervals up to [`SUSPICION_REFRESH_MAX`]: a member that missed it (three
/// lost datagrams) learns it within a second, and a member that stays dead (its
/// Lease lingers after a crash) costs its observers one broadcast a minute.
pub const SUSPICION_REFRESH: Duration = Duration::from_secs(1);
pub const SUSPICION_REFRESH_MAX: Duration = Duration::from_secs(60);
/// A suspicion list not refreshed for this long is forgotten (its observer is gone
/// or its broadcasts are lost).
pub const SUSPICION_TTL: Duration = Duration::from_secs(150);
/// How many times a broadcast (a state change, a takeover, a new suspicion list, a
/// refutation) is sent, one interval apart: one lost datagram loses nothing.
pub const BROADCAST_REPEATS: u8 = 3;
/// Members not heard directly yet are greeted again this often, this many at a time.
pub const GREET_EVERY: Duration = Duration::from_secs(1);
pub const GREET_BATCH: usize = 64;
/// The previous release's speakers heartbeat every 100 ms; they are judged dead after
/// at least this much silence, whatever this node's own `suspect_after`.
pub const LEGACY_SUSPECT_AFTER: Duration = Duration::from_millis(300);

/// Heartbeat timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatTiming {
    /// Time between heartbeats.
    pub interval: Duration,
    /// An observer that has not heard a subject for this long suspects it.
    pub suspect_after: Duration,
    /// How long a takeover is repeated in heartbeats (and trusted by receivers).
    pub claim_window: Duration,
    /// A heartbeat whose sending time is further than this from the receiver's clock
    /// is refused as stale (the bound on how late a captured heartbeat can be replayed
    /// to a speaker that has no high-water mark for its sender yet).
    pub max_clock_skew: Duration,
}

impl Default for HeartbeatTiming {
    fn default() -> Self {
        HeartbeatTiming {
            interval: Duration::from_millis(50),
            suspect_after: Duration::from_millis(200),
            claim_window: Duration::from_secs(2),
            max_clock_skew: Duration::from_secs(5),
        }
    }
}

impl HeartbeatTiming {
    /// How often [`Detector::poll`] should run: four times per interval, so a silence
    /// is judged within a quarter interval of `suspect_after`.
    pub fn poll_every(&self) -> Duration {
        self.interval / 4
    }
}

/// What heartbeats say about a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// Heard, and not declared dead.
    Alive,
    /// Its observers lost it, it said it is leaving, or it cannot announce.
    Dead,
    /// Never heard, or unverifiable: heartbeats have no opinion (the Lease decides).
    Unknown,
}

#[derive(Debug, Clone)]
struct Peer {
    incarnation: u64,
    seq: u64,
    /// Freshest evidence of life, direct or reported (previous-release members).
    last_any: Instant,
    /// Last datagram received from it (this incarnation).
    last_direct: Option<Instant>,
    ready: bool,
    leaving: bool,
    /// The format of its last accepted datagram (what it is sent).
    format: Format,
}

/// An observer's current (non-empty) suspicion list, as last broadcast.
#[derive(Debug, Clone)]
struct Report {
    received: Instant,
    /// Subject -> (incarnation, unverifiable).
    entries: BTreeMap<String, (u64, bool)>,
}

impl Report {
    fn new(received: Instant) -> Self {
        Report { received, entries: BTreeMap::new() }
    }
}

/// This node's own state, as the rest of the speaker sets it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Local {
    /// It can announce (it has a usable interface).
    pub ready: bool,
    /// It is shutting down and hands its IPs over.
    pub leaving: bool,
    /// Every IP it answers for: since when (ms since the epoch), and when locally.
    pub claims: Vec<(Claim, Instant)>,
}

/// Since when a subject watched since `since` counts as silent: since it was last
/// heard, since this node began to watch it, or since it (re)started listening,
/// whichever is latest.
fn silent_since(peer: Option<&Peer>, since: Instant, listening_since: Instant) -> Instant {
    peer.and_then(|p| p.last_direct).map_or(since, |heard| heard.max(since)).max(listening_since)
}

/// One more interval gone for each member in `left` (sends still owed to it); those
/// with none left are dropped.
fn count_down(left: &mut BTreeMap<String, u8>) {
    left.retain(|_, n| {
        *n -= 1;
        *n > 0
    });
}

/// Datagrams to send: `parts` (each one datagram, with its own sequence number) to
/// each of `to`, in `format`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub to: Vec<String>,
    pub parts: Vec<Heartbeat>,
    pub format: Format,
}

/// The heartbeat state of one speaker.
#[derive(Debug)]
pub struct Detector {
    me: String,
    timing: HeartbeatTiming,
    incarnation: u64,
    seq: u64,
    /// When this speaker (re)started listening: nobody is suspected before
    /// `suspect_after` has passed since, so a speaker that starts or whose link comes
    /// back does not suspect anyone before it could hear them.
    listening_since: Instant,
    peers: HashMap<String, Peer, Fixed>,
    /// Newest claim per IP from peers: (node, since_ms, received).
    claims: BTreeMap<IpAddr, (String, u64, Instant)>,
    /// The nodes holding a speaker Lease (this one aside): the only senders heard.
    members: HashSet<String, Fixed>,
    /// Those of them that speak only the previous release's all-to-all heartbeats.
    legacy: BTreeSet<String>,
    /// Last datagram from a member's address that failed authentication.
    auth_failed: BTreeMap<String, Instant>,
    /// Whether `FLB1` heartbeats are accepted.
    accept_v1: bool,
    /// The rings over the ring members and this node.
    rings: Rings,
    /// Members skipped as observers: dead or leaving, as last judged.
    skip: BTreeSet<String>,
    /// Each judged subject's observers on the rings and skip set as they stand
    /// (cleared whenever either changes, in `place`).
    observers_of: HashMap<String, Vec<String>, Fixed>,
    /// The members this node observes, and since when.
    subjects: BTreeMap<String, Instant>,
    /// This node's observers (where its heartbeats go).
    observers: Vec<String>,
    /// This node's verdicts on its subjects: subject -> (incarnation, unverifiable).
    verdicts: BTreeMap<String, (u64, bool)>,
    /// Other observers' suspicion lists, and the generation of each one's last.
    reports: BTreeMap<String, Report>,
    generations: HashMap<String, u64, Fixed>,
    /// Ring members that said they are leaving.
    leaving: BTreeSet<String>,
    /// Members dead by consensus, each with the incarnation it died at (it stays dead
    /// until heard at a newer one); and those some observer cannot authenticate.
    dead: BTreeMap<String, u64>,
    vetoed: BTreeSet<String>,
    /// When a datagram was last accepted.
    last_accepted: Option<Instant>,
    /// When the last judgement and the last poll ran.
    last_judged: Option<Instant>,
    last_polled: Option<Instant>,
    // What to send next.
    next_beat: Option<Instant>,
    broadcasts_left: u8,
    next_broadcast: Option<Instant>,
    last_broadcast: Option<Instant>,
    /// The current interval between refreshes of a held suspicion list.
    refresh_every: Duration,
    /// The flags and claims last broadcast.
    announced: (bool, bool, BTreeSet<(IpAddr, u64)>),
    /// Members to send every claim this node holds (they came back), and how often;
    /// only while it holds any.
    welcome: BTreeMap<String, u8>,
    holds_claims: bool,
    /// Members that joined since this node started, to greet, and how often.
    hello: BTreeMap<String, u8>,
    /// When members not heard yet are greeted again.
    next_greeting: Option<Instant>,
    /// Whether this node's first broadcasts (which greet every member) are done.
    greeted_all: bool,
    /// Members that greeted this node, to answer; and when each was last answered.
    greet_back: BTreeSet<String>,
    answered: HashMap<String, Instant, Fixed>,
    /// Members to tell they are dead, and when each was last told.
    notices: BTreeSet<String>,
    noticed: BTreeMap<String, Instant>,
}

impl Detector {
    /// A detector for node `me`, listening from `now`.
    pub fn new(me: &str, timing: HeartbeatTiming, now: Instant) -> Self {
        Detector {
            me: me.into(),
            timing,
            incarnation: 0,
            seq: 0,
            listening_since: now,
            peers: HashMap::default(),
            claims: BTreeMap::new(),
            members: HashSet::default(),
            legacy: BTreeSet::new(),
            auth_failed: BTreeMap::new(),
            accept_v1: true,
            rings: Rings::new([&me.to_string()]),
            skip: BTreeSet::new(),
            observers_of: HashMap::default(),
            subjects: BTreeMap::new(),
            observers: Vec::new(),
            verdicts: BTreeMap::new(),
            reports: BTreeMap::new(),
            generations: HashMap::default(),
            leaving: BTreeSet::new(),
            dead: BTreeMap::new(),
            vetoed: BTreeSet::new(),
            last_accepted: None,
            last_judged: None,
            last_polled: None,
            next_beat: None,
            broadcasts_left: 0,
            next_broadcast: None,
            last_broadcast: None,
            refresh_every: SUSPICION_REFRESH,
            announced: (false, false, BTreeSet::new()),
            welcome: BTreeMap::new(),
            holds_claims: false,
            hello: BTreeMap::new(),
            next_greeting: None,
            greeted_all: false,
            greet_back: BTreeSet::new(),
            answered: HashMap::default(),
            notices: BTreeSet::new(),
            noticed: BTreeMap::new(),
        }
    }

    /// This process's incarnation (its start, ms since the epoch): a restart is a new
    /// incarnation, whose heartbeats its peers take although its sequence restarts.
    pub fn set_incarnation(&mut self, incarnation: u64) {
        self.incarnation = incarnation;
    }

    /// The current incarnation (it grows when this node refutes its death).
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// Accept `FLB1` heartbeats (from speakers of the previous release) or not.
    pub fn accept_legacy(&mut self, on: bool) {
        self.accept_v1 = on;
    }

    /// The nodes that hold a speaker Lease, this one aside, all speaking the ring
    /// protocol. See [`Detector::set_members_with_legacy`].
    pub fn set_members(&mut self, members: impl IntoIterator<Item = String>) {
        self.set_members_with_legacy(members, std::iter::empty());
    }

    /// The nodes that hold a speaker Lease, this one aside: `ring` speak the ring
    /// protocol, `legacy` only the previous release's all-to-all heartbeats. A node
    /// that no longer holds one is forgotten: its high-water mark, claims, reports and
    /// evidence about it.
    pub fn set_members_with_legacy(
        &mut self,
        ring: impl IntoIterator<Item = String>,
        legacy: impl IntoIterator<Item = String>,
    ) {
        let legacy: BTreeSet<String> = legacy.into_iter().filter(|m| *m != self.me).collect();
        let ring: BTreeSet<String> = ring.into_iter().filter(|m| *m != self.me && !legacy.contains(m)).collect();
        let members: HashSet<String, Fixed> = ring.union(&legacy).cloned().collect();
        if members == self.members && legacy == self.legacy {
            return;
        }
        // A member that joined after this node's first broadcast hears from it directly
        // once (its heartbeats go only to its observers): every member knows every
        // other as alive, which keeps them alive while the API server is unreachable.
        if self.last_polled.is_some() {
            for m in ring.iter().filter(|m| !self.members.contains(*m)) {
                self.hello.insert(m.clone(), BROADCAST_REPEATS);
            }
        }
        self.members = members;
        self.legacy = legacy;
        let members = &self.members;
        self.peers.retain(|n, _| members.contains(n));
        self.auth_failed.retain(|n, _| members.contains(n));
        self.claims.retain(|_, (n, _, _)| members.contains(n));
        self.reports.retain(|n, _| members.contains(n));
        self.generations.retain(|n, _| members.contains(n));
        self.leaving.retain(|n| members.contains(n) && !self.legacy.contains(n));
        self.welcome.retain(|n, _| members.contains(n));
        self.hello.retain(|n, _| members.contains(n));
        self.greet_back.retain(|n| members.contains(n));
        self.answered.retain(|n, _| members.contains(n));
        self.notices.retain(|n| members.contains(n));
        self.noticed.retain(|n, _| members.contains(n));
        self.rings = Rings::new(ring.iter().chain([&self.me]));
        self.place(self.listening_since.max(self.last_judged.unwrap_or(self.listening_since)));
    }

    /// Recompute this node's observers and subjects on the current rings.
    fn place(&mut self, now: Instant) {
        self.observers_of.clear();
        self.observers = self.rings.observers(&self.me, &self.skip);
        let all = self.rings.all_observers(&self.skip);
        let mine: BTreeSet<&String> = all.iter().filter(|(_, o)| o.contains(&self.me)).map(|(s, _)| s).collect();
        self.subjects.retain(|s, _| mine.contains(s));
        for s in mine {
            self.subjects.entry(s.clone()).or_insert(now);
        }
    }

    /// A datagram from `member`'s address failed authentication at `now`: until a
    /// good heartbeat from it, or ten suspect windows without such datagrams,
    /// heartbeats have no opinion about it (its Lease decides, as it does on its side).
    pub fn auth_failed(&mut self, member: &str, now: Instant) {
        if self.members.contains(member) {
            self.auth_failed.insert(member.to_string(), now);
        }
    }

    /// Members whose datagrams fail authentication now.
    pub fn mismatched(&self, now: Instant) -> Vec<String> {
        self.auth_failed.keys().filter(|n| self.mismatch(n, now)).cloned().collect()
    }

    /// A mismatch holds for ten suspect windows after the last failing datagram: a
    /// scheduling hiccup on either side must not flip the member back to dead (its
    /// peers would take its IPs while it still answers for them); a mismatched member
    /// that really stops is dead after that hold, still long before its Lease expires.
    fn mismatch(&self, node: &str, now: Instant) -> bool {
        let Some(at) = self.auth_failed.get(node) else { return false };
        let fresh = now.saturating_duration_since(*at) <= self.timing.suspect_after * 10;
        let since_good = self.peers.get(node).and_then(|p| p.last_direct).is_none_or(|good| good < *at);
        fresh && since_good
    }

    /// The format to send `member`: what it last spoke, `FLB2` by default.
    pub fn format_for(&self, member: &str) -> Format {
        match self.peers.get(member) {
            Some(p) if p.last_direct.is_some() && self.accept_v1 => p.format,
            _ => Format::V2,
        }
    }

    /// The timing in use.
    pub fn timing(&self) -> HeartbeatTiming {
        self.timing
    }

    /// Start the warm-up again (this node's link came back).
    pub fn restart_listening(&mut self, now: Instant) {
        self.listening_since = now;
    }

    /// When a datagram from a member was last accepted.
    pub fn last_accepted(&self) -> Option<Instant> {
        self.last_accepted
    }

    /// This node's observers: where its heartbeats go.
    pub fn observers(&self) -> &[String] {
        &self.observers
    }

    /// The members this node observes.
    pub fn subjects(&self) -> impl Iterator<Item = &String> {
        self.subjects.keys()
    }

    /// Take in a verified heartbeat received at `now` (`now_ms` on the wall clock).
    pub fn receive(
        &mut self,
        hb: impl std::borrow::Borrow<Heartbeat>,
        format: Format,
        now: Instant,
        now_ms: u64,
    ) -> Result<(), Reject> {
        let hb = hb.borrow();
        if hb.node == self.me {
            return Err(Reject::FromSelf);
        }
        if !self.members.contains(&hb.node) {
            return Err(Reject::NotMember);
        }
        match (format, hb.sent_ms) {
            (Format::V1, _) if !self.accept_v1 => return Err(Reject::Legacy),
            (Format::V2, sent) => {
                let skew = now_ms as i128 - i128::from(sent.unwrap_or(0));
                if skew.unsigned_abs() > self.timing.max_clock_skew.as_millis() {
                    return Err(Reject::Stale(skew.clamp(i64::MIN.into(), i64::MAX.into()) as i64));
                }
            }
            (Format::V1, _) => {}
        }
        let before = self.peers.get(&hb.node).cloned();
        if let Some(p) = &before
            && p.last_direct.is_some()
            && (hb.incarnation, hb.seq) <= (p.incarnation, p.seq)
        {
            return Err(Reject::Replay);
        }
        let was = self.liveness(&hb.node, now);
        let new_incarnation =
            before.as_ref().is_some_and(|p| p.last_direct.is_some() && hb.incarnation > p.incarnation);
        // Heard at the incarnation its observers declared dead: tell it.
        if self.dead.contains_key(&hb.node) && !new_incarnation && !hb.leaving {
            self.notices.insert(hb.node.clone());
        }
        // (A member heard for the first time changes judgements only if it is leaving.)
        let state_changed = match &before {
            Some(p) => (p.ready, p.leaving) != (hb.ready, hb.leaving),
            None => hb.leaving,
        };
        self.peers.insert(
            hb.node.clone(),
            Peer {
                incarnation: hb.incarnation,
                seq: hb.seq,
                last_any: now,
                last_direct: Some(now),
                ready: hb.ready,
                leaving: hb.leaving,
                format,
            },
        );
        if hb.leaving && !self.is_legacy(&hb.node) {
            self.leaving.insert(hb.node.clone());
        } else {
            self.leaving.remove(&hb.node);
        }
        if new_incarnation {
            // Its earlier incarnation's dead notices, suspicion lists and their
            // generations (its sequence numbers restarted) no longer apply.
            self.notices.remove(&hb.node);
            self.generations.remove(&hb.node);
            self.reports.remove(&hb.node);
        }
        // A member seen again after being dead (or for the first time, or restarted)
        // learns which IPs this node holds.
        if self.holds_claims && hb.ready && !hb.leaving && (was != Liveness::Alive || new_incarnation) {
            self.welcome.insert(hb.node.clone(), BROADCAST_REPEATS);
        }
        // Indirect evidence (previous-release members): the sender heard these members
        // `age` ago.
        for (name, age_ms) in &hb.heard {
            if *name == self.me || *name == hb.node || !self.members.contains(name) {
                continue;
            }
            let Some(at) = now.checked_sub(Duration::from_millis(u64::from(*age_ms))) else { continue };
            match self.peers.get_mut(name) {
                Some(p) => p.last_any = p.last_any.max(at),
                // A member known only through others: it exists and is alive as of `at`.
                None => {
                    self.peers.insert(
                        name.clone(),
                        Peer {
                            incarnation: 0,
                            seq: 0,
                            last_any: at,
                            last_direct: None,
                            ready: true,
                            leaving: false,
                            format: Format::V2,
                        },
                    );
                }
            }
        }
        // Greetings are answered at most once a second per member (a first broadcast
        // repeats its greeting three times; a lost answer is asked for again).
        if hb.hello
            && !hb.leaving
            && self.answered.get(&hb.node).is_none_or(|t| now.saturating_duration_since(*t) >= GREET_EVERY)
        {
            self.answered.insert(hb.node.clone(), now);
            self.greet_back.insert(hb.node.clone());
        }
        let mut rejudge = state_changed || new_incarnation;
        if let Some(generation) = hb.sgen {
            let entries = hb
                .suspects
                .iter()
                .filter(|s| s.node == self.me || self.members.contains(&s.node))
                .map(|s| (s.node.clone(), (s.inc, s.unverifiable)));
            // Only non-empty lists are kept (judging walks them, and in steady state
            // there are none); every sender's generation is, so that a part of an
            // older broadcast arriving late is not taken.
            let entries: Vec<(String, (u64, bool))> = entries.collect();
            let known = self.generations.get(&hb.node).copied();
            if known.is_none_or(|g| g < generation) {
                // A newer list replaces the sender's previous one.
                self.generations.insert(hb.node.clone(), generation);
                rejudge |= self.reports.remove(&hb.node).is_some();
            }
            // A part of the newest list (not of an older broadcast arriving late) adds up.
            if known.is_none_or(|g| g <= generation) && !entries.is_empty() {
                let r = self.reports.entry(hb.node.clone()).or_insert_with(|| Report::new(now));
                r.entries.extend(entries);
                r.received = now;
                rejudge = true;
            }
        }
        if hb.dead.iter().any(|(n, inc)| *n == self.me && *inc == self.incarnation) {
            // Declared dead while alive (a lost link, a stall): a new incarnation, said
            // at once to everyone.
            self.incarnation = self.incarnation.max(now_ms).max(self.incarnation + 1);
            self.broadcast_soon(now);
        }
        if !hb.leaving {
            for c in &hb.claims {
                let newer = self.claims.get(&c.ip).is_none_or(|(n, s, _)| (c.since_ms, hb.node.as_str()) > (*s, n));
                if newer {
                    self.claims.insert(c.ip, (hb.node.clone(), c.since_ms, now));
                }
            }
        }
        if rejudge {
            self.judge(now);
        }
        self.last_accepted = Some(now);
        Ok(())
    }

    fn broadcast_soon(&mut self, now: Instant) {
        self.broadcasts_left = BROADCAST_REPEATS;
        self.next_broadcast = Some(now);
    }

    /// Whether `node` speaks only the previous release's heartbeats.
    fn is_legacy(&self, node: &str) -> bool {
        self.legacy.contains(node)
    }

    /// Do not count `stalled` as silence of any subject: each one's silence is judged
    /// from that much later.
    fn credit_stall(&mut self, stalled: Duration) {
        for (s, since) in self.subjects.iter_mut() {
            let from = silent_since(self.peers.get(s), *since, self.listening_since);
            *since = (*since).max(from + stalled);
        }
    }

    /// This node's verdict on each subject at `now`.
    fn verdicts_at(&self, now: Instant) -> BTreeMap<String, (u64, bool)> {
        let mut out = BTreeMap::new();
        for (s, since) in &self.subjects {
            let p = self.peers.get(s);
            if p.is_some_and(|p| p.leaving) {
                continue;
            }
            let inc = p.map_or(0, |p| p.incarnation);
            if self.mismatch(s, now) {
                out.insert(s.clone(), (inc, true));
                continue;
            }
            // (A subject never heard is reported at incarnation 0: see `judge`.)
            let from = silent_since(p, *since, self.listening_since);
            let silent = now.saturating_duration_since(from) > self.timing.suspect_after;
            // A held suspicion ends only when the subject is heard again (a stall credit
            // moves `since`, not the evidence).
            let held = self.verdicts.contains_key(s)
                && p.and_then(|p| p.last_direct)
                    .is_none_or(|h| now.saturating_duration_since(h) > self.timing.suspect_after);
            if silent || held {
                out.insert(s.clone(), (inc, false));
            }
        }
        out
    }

    /// Judge at `now`: this node's verdicts, then who is dead by consensus.
    fn judge(&mut self, now: Instant) {
        self.last_judged = Some(self.last_judged.map_or(now, |l| l.max(now)));
        let verdicts = self.verdicts_at(now);
        if verdicts != self.verdicts {
            self.verdicts = verdicts;
            self.refresh_every = SUSPICION_REFRESH;
            self.broadcast_soon(now);
        }
        let ttl = SUSPICION_TTL;
        self.reports.retain(|_, r| now.saturating_duration_since(r.received) <= ttl);
        // Candidates: every member someone suspects.
        let mut candidates: BTreeSet<&String> = self.verdicts.keys().collect();
        for r in self.reports.values() {
            candidates.extend(r.entries.keys());
        }
        let mut dead = BTreeMap::new();
        let mut vetoed = BTreeSet::new();
        for x in candidates {
            if *x == self.me || !self.members.contains(x) || self.is_legacy(x) {
                continue;
            }
            let known = self.peers.get(x).map_or(0, |p| p.incarnation);
            // Observers as the rings stood at the last judgement (a dead one skipped,
            // its ring's next member standing in).
            let observers: &Vec<String> =
                self.observers_of.entry(x.clone()).or_insert_with(|| self.rings.observers(x, &self.skip));
            // Dead when every observer suspects it, at least one of them at the newest
            // incarnation anyone here knows (a replacement observer that never heard it
            // reports incarnation 0; a member nobody ever heard is never dead: its Lease
            // decides, as it does on its side).
            let mut all = !observers.is_empty();
            let mut newest = 0;
            for o in observers {
                let v = if *o == self.me {
                    self.verdicts.get(x).copied()
                } else {
                    self.reports.get(o).and_then(|r| r.entries.get(x)).copied()
                };
                match v {
                    Some((_, true)) => {
                        vetoed.insert(x.clone());
                        all = false;
                        break;
                    }
                    Some((inc, false)) => newest = newest.max(inc),
                    None => {
                        all = false;
                        break;
                    }
                }
            }
            if all && newest > 0 && newest >= known {
                dead.insert(x.clone(), newest);
            }
        }
        // Dead stays dead at that incarnation until the member is heard at a newer one
        // (it refuted, or restarted), whatever happens to its observers meanwhile: the
        // death of one puts a stand-in in its place that never heard the dead member,
        // and the consensus would be lost until the stand-in suspected it too (found on
        // the wire: dead members alive again everywhere, flapping, for seconds).
        for (x, inc) in &self.dead {
            let known = self.peers.get(x).map_or(0, |p| p.incarnation);
            if !dead.contains_key(x) && self.members.contains(x) && !self.is_legacy(x) && known <= *inc {
                dead.insert(x.clone(), *inc);
                vetoed.remove(x);
            }
        }
        self.dead = dead;
        self.vetoed = vetoed;
        let skip_now = self.skip.len() == self.dead.len() + self.leaving.len()
            && self.dead.keys().chain(&self.leaving).all(|n| self.skip.contains(n));
        if !skip_now {
            self.skip = self.dead.keys().chain(&self.leaving).cloned().collect();
            self.place(now);
        }
    }

    /// What heartbeats say about `node` at `now`.
    pub fn liveness(&self, node: &str, now: Instant) -> Liveness {
        if self.mismatch(node, now) {
            return Liveness::Unknown;
        }
        let p = self.peers.get(node);
        if p.is_some_and(|p| p.leaving || !p.ready) {
            return Liveness::Dead;
        }
        if self.is_legacy(node) {
            // The previous release's rule: silent to everyone for the window.
            let Some(p) = p else { return Liveness::Unknown };
            let window = self.timing.suspect_after.max(LEGACY_SUSPECT_AFTER);
            let silent = now.saturating_duration_since(p.last_any.max(self.listening_since));
            return if silent <= window { Liveness::Alive } else { Liveness::Dead };
        }
        if self.dead.contains_key(node) {
            return Liveness::Dead;
        }
        if self.vetoed.contains(node) {
            return Liveness::Unknown;
        }
        // Heard from (this incarnation) and not declared dead by its observers.
        match p {
            Some(p) if p.last_direct.is_some() => Liveness::Alive,
            _ => Liveness::Unknown,
        }
    }

    /// Every known member's liveness.
    pub fn view(&self, now: Instant) -> BTreeMap<String, Liveness> {
        self.peers
            .keys()
            .chain(self.dead.keys())
            .chain(&self.vetoed)
            .map(|n| (n.clone(), self.liveness(n, now)))
            .collect()
    }

    /// The members dead by their observers' consensus (leaving ones aside).
    pub fn dead(&self) -> impl Iterator<Item = &String> {
        self.dead.keys()
    }

    /// For a previous-release heartbeat: how long ago each peer was last heard
    /// directly (peers silent for over ten suspect windows are left out).
    pub fn heard(&self, now: Instant) -> Vec<(String, u32)> {
        let horizon = self.timing.suspect_after * 10;
        self.peers
            .iter()
            .filter_map(|(n, p)| {
                let age = now.saturating_duration_since(p.last_direct?);
                (age <= horizon).then(|| (n.clone(), u32::try_from(age.as_millis()).unwrap_or(u32::MAX)))
            })
            .collect()
    }

    /// Current claims by alive peers, made within the claim window: IP -> (node, since_ms).
    pub fn claims(&self, now: Instant) -> BTreeMap<IpAddr, (String, u64)> {
        self.claims
            .iter()
            .filter(|(_, (n, _, at))| {
                now.saturating_duration_since(*at) <= self.timing.claim_window
                    && self.liveness(n, now) == Liveness::Alive
            })
            .map(|(ip, (n, s, _))| (*ip, (n.clone(), *s)))
            .collect()
    }

    /// Forget claims older than the claim window. Peers are forgotten only with their
    /// Lease ([`Detector::set_members`]): their high-water marks outlive any silence.
    pub fn expire(&mut self, now: Instant) {
        let window = self.timing.claim_window;
        self.claims.retain(|_, (_, _, at)| now.saturating_duration_since(*at) <= window);
    }

    /// Judge, and say what to send at `now` (`now_ms` on the wall clock), given this
    /// node's own state: the heartbeat to its observers each interval (and the
    /// all-to-all one to previous-release members), a broadcast when its flags,
    /// claims or suspicions changed (repeated, and refreshed while suspicions hold),
    /// every claim to members that came back, and dead notices.
    pub fn poll(&mut self, now: Instant, now_ms: u64, local: &Local) -> Vec<Outgoing> {
        // Polled late (this node's own loop stalled, its CPU starved): the time it did
        // not run is not counted as its subjects' silence; a stalled observer judges
        // only what it could have heard.
        if let Some(last) = self.last_polled {
            let late = now.saturating_duration_since(last).saturating_sub(self.timing.poll_every());
            if late > self.timing.poll_every() {
                self.credit_stall(late);
            }
        }
        self.last_polled = Some(now);
        self.judge(now);
        self.expire(now);
        let recent: BTreeSet<(IpAddr, u64)> = local
            .claims
            .iter()
            .filter(|(_, at)| now.saturating_duration_since(*at) <= self.timing.claim_window)
            .map(|(c, _)| (c.ip, c.since_ms))
            .collect();
        let (ready, leaving, announced) = &self.announced;
        if (*ready, *leaving) != (local.ready, local.leaving) || !recent.is_subset(announced) {
            self.broadcast_soon(now);
        }
        self.announced = (local.ready, local.leaving, recent.clone());
        self.holds_claims = !local.claims.is_empty();
        let base = Heartbeat {
            node: self.me.clone(),
            incarnation: self.incarnation,
            ready: local.ready,
            leaving: local.leaving,
            sent_ms: Some(now_ms),
            ..Heartbeat::default()
        };
        let recent_claims: Vec<Claim> =
            recent.iter().map(|(ip, since_ms)| Claim { ip: *ip, since_ms: *since_ms }).collect();
        let all_claims: Vec<Claim> = local.claims.iter().map(|(c, _)| *c).collect();
        let mut out = Vec::new();
        let beat = self.next_beat.is_none_or(|t| now >= t);
        if beat {
            self.next_beat = Some(now + self.timing.interval);
            if !self.observers.is_empty() {
                out.push((self.observers.clone(), base.clone(), Format::V2));
            }
            // Previous-release members: all-to-all, with the heard list and claims.
            let heard = if self.legacy.is_empty() { Vec::new() } else { self.heard(now) };
            let mut by_format: BTreeMap<(bool, bool), Vec<String>> = BTreeMap::new();
            for m in &self.legacy {
                let welcome = self.welcome.contains_key(m);
                by_format.entry((self.format_for(m) == Format::V2, welcome)).or_default().push(m.clone());
            }
            for ((v2, welcome), to) in by_format {
                let claims = if welcome { all_claims.clone() } else { recent_claims.clone() };
                let hb = Heartbeat { heard: heard.clone(), claims, ..base.clone() };
                out.push((to, hb, if v2 { Format::V2 } else { Format::V1 }));
            }
            // Ring members that came back: every claim, once per interval.
            let welcome: Vec<String> = match all_claims.is_empty() {
                true => Vec::new(),
                false => self.welcome.keys().filter(|m| !self.is_legacy(m)).cloned().collect(),
            };
            if !welcome.is_empty() {
                out.push((welcome.clone(), Heartbeat { claims: all_claims.clone(), ..base.clone() }, Format::V2));
            }
            // Members leaving wait for the new holders' claims before they stop
            // answering: this node's recent claims, every interval until they are gone,
            // so that a lost broadcast does not leave a leaver waiting to its deadline
            // while this node already answers.
            let leavers: Vec<String> = match recent_claims.is_empty() {
                true => Vec::new(),
                false => self.leaving.iter().filter(|m| !welcome.contains(m)).cloned().collect(),
            };
            if !leavers.is_empty() {
                out.push((leavers, Heartbeat { claims: recent_claims.clone(), ..base.clone() }, Format::V2));
            }
            count_down(&mut self.welcome);
            let mut hello: Vec<String> =
                self.hello.keys().filter(|m| !welcome.contains(m) && !self.is_legacy(m)).cloned().collect();
            // Members never heard directly are greeted again every second (a greeting
            // is lost when it reaches a speaker that holds its Lease but has not bound
            // its heartbeat port yet), at most GREET_BATCH at a time.
            // (The first broadcasts greet everyone: the first round comes a second later.)
            let greet_now = match self.next_greeting {
                Some(t) if now < t => false,
                at => {
                    self.next_greeting = Some(now + GREET_EVERY);
                    at.is_some()
                }
            };
            if greet_now {
                let unheard = self
                    .members
                    .iter()
                    .filter(|m| !self.is_legacy(m) && !hello.contains(m) && !welcome.contains(m))
                    .filter(|m| self.peers.get(*m).is_none_or(|p| p.last_direct.is_none()))
                    .take(GREET_BATCH)
                    .cloned()
                    .collect::<Vec<_>>();
                hello.extend(unheard);
            }
            if !hello.is_empty() {
                out.push((hello, Heartbeat { hello: true, ..base.clone() }, Format::V2));
            }
            count_down(&mut self.hello);
        }
        let due = self.broadcasts_left > 0 && self.next_broadcast.is_none_or(|t| now >= t);
        let refresh = !self.verdicts.is_empty()
            && self.last_broadcast.is_some_and(|t| now.saturating_duration_since(t) >= self.refresh_every);
        if refresh && !due {
            self.refresh_every = (self.refresh_every * 2).min(SUSPICION_REFRESH_MAX);
        }
        if due || refresh {
            self.broadcasts_left = self.broadcasts_left.saturating_sub(1);
            self.next_broadcast = Some(now + self.timing.interval);
            self.last_broadcast = Some(now);
            let to: Vec<String> = self.members.iter().filter(|m| !self.is_legacy(m)).cloned().collect();
            if !to.is_empty() {
                let suspects = self
                    .verdicts
                    .iter()
                    .map(|(n, (inc, unverifiable))| Suspicion {
                        node: n.clone(),
                        inc: *inc,
                        unverifiable: *unverifiable,
                    })
                    .collect();
                // `sgen` is set below, to the first part's sequence number. The first
                // broadcasts greet every member.
                let hello = !self.greeted_all;
                let hb = Heartbeat { claims: recent_claims.clone(), suspects, sgen: Some(0), hello, ..base.clone() };
                out.push((to, hb, Format::V2));
            }
            if self.broadcasts_left == 0 {
                self.greeted_all = true;
            }
        }
        // Members that greeted this node hear from it once, directly.
        let back: Vec<String> =
            std::mem::take(&mut self.greet_back).into_iter().filter(|m| !self.is_legacy(m)).collect();
        if !back.is_empty() {
            out.push((back, base.clone(), Format::V2));
        }
        let notices: Vec<String> = std::mem::take(&mut self.notices)
            .into_iter()
            .filter(|m| self.noticed.get(m).is_none_or(|t| now.saturating_duration_since(*t) >= self.timing.interval))
            .collect();
        for m in notices {
            let inc = self.peers.get(&m).map_or(0, |p| p.incarnation);
            self.noticed.insert(m.clone(), now);
            out.push((vec![m.clone()], Heartbeat { dead: vec![(m, inc)], ..base.clone() }, Format::V2));
        }
        out.into_iter()
            .map(|(to, mut hb, format)| {
                hb.seq = self.seq + 1;
                if hb.sgen.is_some() {
                    hb.sgen = Some(hb.seq);
                }
                let parts = heartbeats(&hb);
                self.seq += parts.len() as u64;
                Outgoing { to, parts, format }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
