//! Fast failure detection between speakers: authenticated UDP heartbeats.
//!
//! Every speaker sends a small heartbeat to every other member each
//! `interval`. A heartbeat carries, besides who sent it, how long ago the sender
//! last heard each other member directly, and the IPs the sender took over in
//! the last few seconds (its *claims*). A peer is **dead** only when nobody has
//! heard from it for `suspect_after`: neither this speaker directly nor any
//! member reporting it in their heartbeats. That is SWIM's indirect probe
//! without the extra round trip (every member reports continuously, so a lossy
//! link between two nodes does not fail anyone over while a third still hears
//! the peer), and with a fixed detection bound: `suspect_after` plus at most one
//! interval, whatever the cluster size.
//!
//! Why not `foca` (SWIM): it probes one random member per period, so detection
//! grows with the member count, and a death spreads by gossip over further
//! periods; its 1.5 s default period alone exceeds the sub-second target. Layer-2
//! clusters are one segment of tens of nodes, where all-to-all heartbeats at 10 Hz
//! cost a few hundred small datagrams per second in total.
//!
//! The Lease stays the source of truth for membership (joining, graceful leave);
//! heartbeats only decide *alive* vs *dead* faster, and keep members alive while
//! the API server is unreachable (fail-static). This module is pure: time is
//! passed in and the socket lives in [`super::socket`].
//!
//! What a heartbeat must prove before it counts:
//! - the key: an HMAC-SHA256 tag over the whole datagram (any of the accepted keys,
//!   so a key can be rotated without a split);
//! - freshness: the sender's wall clock (format `FLB2`) within
//!   [`HeartbeatTiming::max_clock_skew`] of the receiver's, and a (incarnation,
//!   sequence) newer than the sender's high-water mark, which is kept as long as the
//!   sender holds a Lease (so a replay of captured heartbeats is refused however long
//!   after the capture it comes);
//! - membership: the sender, and every member its heard list vouches for, holds a
//!   Lease; nothing is learnt about anyone else.
//!
//! A member whose datagrams arrive but fail authentication (a key mismatch) is
//! neither alive nor dead to heartbeats: it is judged by its Lease, on both sides,
//! so a mismatch slows failover to Lease expiry and never makes two nodes answer.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// Heartbeat timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatTiming {
    /// Time between heartbeats.
    pub interval: Duration,
    /// A member nobody heard from for this long is dead.
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
            interval: Duration::from_millis(100),
            suspect_after: Duration::from_millis(300),
            claim_window: Duration::from_secs(2),
            max_clock_skew: Duration::from_secs(5),
        }
    }
}

/// "I now answer for `ip`, since `since_ms`" (milliseconds since the Unix epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    pub ip: IpAddr,
    /// When the sender started answering for it.
    pub since_ms: u64,
}

/// One heartbeat datagram's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Sender's node name.
    pub node: String,
    /// Sender's process start (ms since the epoch); a restart is a new incarnation.
    pub incarnation: u64,
    /// Sequence number within the incarnation.
    pub seq: u64,
    /// The sender can announce (it has at least one usable interface).
    pub ready: bool,
    /// The sender is shutting down and hands its IPs over.
    pub leaving: bool,
    /// Milliseconds since the sender last heard each member directly.
    pub heard: Vec<(String, u32)>,
    /// IPs the sender took over recently.
    pub claims: Vec<Claim>,
    /// When it was sent (ms since the epoch, the sender's clock); `FLB2` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_ms: Option<u64>,
}

/// The datagram format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `FLB1`: no sending time. Spoken by the previous release; accepted (without the
    /// freshness check) only while `--memberlist-legacy-heartbeats` allows it.
    V1,
    /// `FLB2`: with the sending time.
    V2,
}

/// Why a datagram was not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Reject {
    /// Too short to hold a tag, or not our format.
    #[error("malformed heartbeat ({0})")]
    Malformed(String),
    /// The HMAC does not verify: wrong key or tampered.
    #[error("heartbeat authentication failed (different memberlist key?)")]
    BadTag,
    /// Sent by this node (reflected or looped back).
    #[error("heartbeat from this node")]
    FromSelf,
    /// Not newer than what was already seen from the sender.
    #[error("replayed or reordered heartbeat")]
    Replay,
    /// Sent too long ago (or in the future) by the receiver's clock.
    #[error("stale heartbeat (sent {0} ms from this node's clock; clocks out of sync, or a replay)")]
    Stale(i64),
    /// The sender holds no Lease.
    #[error("heartbeat from a node that holds no speaker Lease")]
    NotMember,
    /// `FLB1` while legacy heartbeats are refused.
    #[error("FLB1 heartbeat while --memberlist-legacy-heartbeats=false")]
    Legacy,
}

impl Reject {
    /// The metric label.
    pub fn as_str(&self) -> &'static str {
        match self {
            Reject::Malformed(_) => "malformed",
            Reject::BadTag => "bad_tag",
            Reject::FromSelf => "from_self",
            Reject::Replay => "replay",
            Reject::Stale(_) => "stale",
            Reject::NotMember => "not_member",
            Reject::Legacy => "legacy",
        }
    }
}

const MAGIC_V1: &[u8; 4] = b"FLB1";
const MAGIC_V2: &[u8; 4] = b"FLB2";
const MAGIC_LEN: usize = 4;
const TAG_LEN: usize = 32;

/// Seal a heartbeat: magic, JSON body, HMAC-SHA256 over both. `FLB2` carries
/// `sent_ms` (set to `now_ms` when absent); `FLB1` never does.
pub fn seal(key: &[u8], hb: &Heartbeat, format: Format, now_ms: u64) -> Vec<u8> {
    let (magic, sent_ms) = match format {
        Format::V1 => (MAGIC_V1, None),
        Format::V2 => (MAGIC_V2, Some(hb.sent_ms.unwrap_or(now_ms))),
    };
    let mut out = magic.to_vec();
    if hb.sent_ms == sent_ms {
        out.extend(serde_json::to_vec(hb).expect("a heartbeat always serializes"));
    } else {
        out.extend(serde_json::to_vec(&Heartbeat { sent_ms, ..hb.clone() }).expect("a heartbeat always serializes"));
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(&out);
    out.extend(mac.finalize().into_bytes());
    out
}

/// An `FLB2` datagram carrying `body` as it is (valid JSON or not), tagged with
/// `key`: what a holder of the key could send. For fuzzing and tests.
pub fn seal_raw(key: &[u8], body: &[u8]) -> Vec<u8> {
    let mut out = MAGIC_V2.to_vec();
    out.extend(body);
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(&out);
    out.extend(mac.finalize().into_bytes());
    out
}

/// Verify (with any of `keys`) and decode a datagram.
pub fn open<K: AsRef<[u8]>>(keys: &[K], datagram: &[u8]) -> Result<(Heartbeat, Format), Reject> {
    let format = match datagram.get(..MAGIC_LEN) {
        Some(m) if m == MAGIC_V1 => Format::V1,
        Some(m) if m == MAGIC_V2 => Format::V2,
        _ => return Err(Reject::Malformed(format!("{} bytes without an FLB1 or FLB2 header", datagram.len()))),
    };
    if datagram.len() < MAGIC_LEN + TAG_LEN {
        return Err(Reject::Malformed(format!("{} bytes: too short for a tag", datagram.len())));
    }
    let (body, tag) = datagram.split_at(datagram.len() - TAG_LEN);
    let verified = keys.iter().any(|key| {
        let mut mac = Hmac::<Sha256>::new_from_slice(key.as_ref()).expect("HMAC takes any key length");
        mac.update(body);
        mac.verify_slice(tag).is_ok()
    });
    if !verified {
        return Err(Reject::BadTag);
    }
    let hb: Heartbeat = serde_json::from_slice(&body[MAGIC_LEN..]).map_err(|e| Reject::Malformed(e.to_string()))?;
    match (format, hb.sent_ms) {
        (Format::V2, None) => Err(Reject::Malformed("FLB2 heartbeat without sent_ms".into())),
        (Format::V1, Some(_)) => Err(Reject::Malformed("FLB1 heartbeat with sent_ms".into())),
        _ => Ok((hb, format)),
    }
}

/// What heartbeats say about a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// Heard (directly or through another member) within `suspect_after`.
    Alive,
    /// Nobody heard it for `suspect_after`, it said it is leaving, or it cannot announce.
    Dead,
    /// Never heard: heartbeats have no opinion (the Lease decides).
    Unknown,
}

#[derive(Debug, Clone)]
struct Peer {
    incarnation: u64,
    seq: u64,
    /// Freshest evidence of life, direct or reported.
    last_any: Instant,
    /// Last datagram received from it.
    last_direct: Option<Instant>,
    ready: bool,
    leaving: bool,
    /// The format of its last accepted datagram (what it is sent).
    format: Format,
}

/// The heartbeat state of one speaker.
#[derive(Debug)]
pub struct Detector {
    me: String,
    timing: HeartbeatTiming,
    /// When this speaker (re)started listening: nobody is judged dead on heartbeats
    /// before `suspect_after` has passed since, so a speaker that starts or whose link
    /// comes back does not take everything over before it hears anyone.
    listening_since: Instant,
    peers: BTreeMap<String, Peer>,
    /// Newest claim per IP from peers: (node, since_ms, received).
    claims: BTreeMap<IpAddr, (String, u64, Instant)>,
    /// The nodes holding a speaker Lease (this one aside): the only senders heard.
    members: std::collections::BTreeSet<String>,
    /// Last datagram from a member's address that failed authentication.
    auth_failed: BTreeMap<String, Instant>,
    /// Whether `FLB1` heartbeats are accepted.
    legacy: bool,
}

impl Detector {
    /// A detector for node `me`, listening from `now`.
    pub fn new(me: &str, timing: HeartbeatTiming, now: Instant) -> Self {
        Detector {
            me: me.into(),
            timing,
            listening_since: now,
            peers: BTreeMap::new(),
            claims: BTreeMap::new(),
            members: Default::default(),
            auth_failed: BTreeMap::new(),
            legacy: true,
        }
    }

    /// Accept `FLB1` heartbeats (from speakers of the previous release) or not.
    pub fn accept_legacy(&mut self, on: bool) {
        self.legacy = on;
    }

    /// The nodes that hold a speaker Lease, this one aside. A node that no longer holds
    /// one is forgotten: its high-water mark, claims and evidence about it.
    pub fn set_members(&mut self, members: impl IntoIterator<Item = String>) {
        self.members = members.into_iter().filter(|m| *m != self.me).collect();
        let members = &self.members;
        self.peers.retain(|n, _| members.contains(n));
        self.auth_failed.retain(|n, _| members.contains(n));
        self.claims.retain(|_, (n, _, _)| members.contains(n));
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
            Some(p) if p.last_direct.is_some() && self.legacy => p.format,
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

    /// Take in a verified heartbeat received at `now` (`now_ms` on the wall clock).
    pub fn receive(&mut self, hb: Heartbeat, format: Format, now: Instant, now_ms: u64) -> Result<(), Reject> {
        if hb.node == self.me {
            return Err(Reject::FromSelf);
        }
        if !self.members.contains(&hb.node) {
            return Err(Reject::NotMember);
        }
        match (format, hb.sent_ms) {
            (Format::V1, _) if !self.legacy => return Err(Reject::Legacy),
            (Format::V2, sent) => {
                let skew = now_ms as i128 - i128::from(sent.unwrap_or(0));
                if skew.unsigned_abs() > self.timing.max_clock_skew.as_millis() {
                    return Err(Reject::Stale(skew.clamp(i64::MIN.into(), i64::MAX.into()) as i64));
                }
            }
            (Format::V1, _) => {}
        }
        if let Some(p) = self.peers.get(&hb.node)
            && p.last_direct.is_some()
            && (hb.incarnation, hb.seq) <= (p.incarnation, p.seq)
        {
            return Err(Reject::Replay);
        }
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
        // Indirect evidence: the sender heard these members `age` ago.
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
        if !hb.leaving {
            for c in hb.claims {
                let newer = self.claims.get(&c.ip).is_none_or(|(n, s, _)| (c.since_ms, hb.node.as_str()) > (*s, n));
                if newer {
                    self.claims.insert(c.ip, (hb.node.clone(), c.since_ms, now));
                }
            }
        }
        Ok(())
    }

    /// What heartbeats say about `node` at `now`.
    pub fn liveness(&self, node: &str, now: Instant) -> Liveness {
        if self.mismatch(node, now) {
            return Liveness::Unknown;
        }
        let Some(p) = self.peers.get(node) else { return Liveness::Unknown };
        if p.leaving || !p.ready {
            return Liveness::Dead;
        }
        // Judged from the later of the last sign of life and the start of listening.
        let silent = now.saturating_duration_since(p.last_any.max(self.listening_since));
        if silent <= self.timing.suspect_after { Liveness::Alive } else { Liveness::Dead }
    }

    /// Every known peer's liveness.
    pub fn view(&self, now: Instant) -> BTreeMap<String, Liveness> {
        self.peers.keys().map(|n| (n.clone(), self.liveness(n, now))).collect()
    }

    /// For this node's heartbeat: how long ago each peer was last heard directly
    /// (peers silent for over ten suspect windows are left out).
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
}

/// The largest sealed heartbeat datagram: under a 1500-byte MTU with room for IP, UDP
/// and tunnel headers, so heartbeats are never fragmented.
pub const MAX_DATAGRAM: usize = 1200;

/// Split a heartbeat over datagrams of at most [`MAX_DATAGRAM`] bytes once sealed: each
/// carries the flags and a share of the heard list and the claims, with consecutive
/// sequence numbers. Receivers take heard entries and claims as additive evidence, so
/// the parts mean what the whole would. An entry too large for any datagram (a node
/// name of over a kilobyte) goes alone and may be fragmented.
pub fn heartbeats(base: &Heartbeat) -> Vec<Heartbeat> {
    let empty = Heartbeat { heard: Vec::new(), claims: Vec::new(), ..base.clone() };
    let overhead = MAGIC_LEN + TAG_LEN + json_len(&Heartbeat { sent_ms: Some(u64::MAX), ..empty.clone() });
    let mut parts = vec![empty.clone()];
    let mut size = overhead;
    enum Entry<'a> {
        Heard(&'a (String, u32)),
        Claim(Claim),
    }
    let entries = base.heard.iter().map(Entry::Heard).chain(base.claims.iter().map(|c| Entry::Claim(*c)));
    for e in entries {
        // One more list entry costs its encoding and a comma; start a new part when full.
        let n = 1 + match &e {
            Entry::Heard(h) => json_len(h),
            Entry::Claim(c) => json_len(c),
        };
        let last = parts.last().expect("never empty");
        if size + n > MAX_DATAGRAM && (!last.heard.is_empty() || !last.claims.is_empty()) {
            parts.push(empty.clone());
            size = overhead;
        }
        size += n;
        let last = parts.last_mut().expect("never empty");
        match e {
            Entry::Heard(h) => last.heard.push(h.clone()),
            Entry::Claim(c) => last.claims.push(c),
        }
    }
    for (i, p) in parts.iter_mut().enumerate() {
        p.seq = base.seq + i as u64;
    }
    parts
}

/// The length of a value's JSON, as [`seal`] encodes it.
fn json_len<T: Serialize>(v: &T) -> usize {
    serde_json::to_vec(v).map(|v| v.len()).unwrap_or(0)
}

#[cfg(test)]
mod tests;
