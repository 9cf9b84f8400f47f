//! The heartbeat datagram: its content, how it is sealed (HMAC-SHA256) and opened,
//! and how a large one is split so that no datagram is fragmented.

use std::net::IpAddr;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// "I now answer for `ip`, since `since_ms`" (milliseconds since the Unix epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    pub ip: IpAddr,
    /// When the sender started answering for it.
    pub since_ms: u64,
}

/// One heartbeat datagram's content. The same shape for the three ways it is sent:
/// a heartbeat to this node's observers (flags only), a broadcast to every member
/// (flags, claims, suspicions), and the all-to-all heartbeat of the previous release
/// (flags, heard list, claims) sent to speakers that speak only that. Fields a
/// previous release does not know are ignored by it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
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
    /// On a broadcast: the generation of the sender's suspicion list (the sequence
    /// number of the broadcast's first part). A newer generation replaces what the
    /// sender suspected before; parts of one broadcast share it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sgen: Option<u64>,
    /// The sender's subjects it has not heard from within `suspect_after` (or cannot
    /// authenticate), with the incarnation it knows of each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub suspects: Vec<Suspicion>,
    /// "You are dead to the cluster at this incarnation": told to a member whose
    /// heartbeat arrives after its observers declared it dead, so it takes a new
    /// incarnation and says it is alive.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dead: Vec<(String, u64)>,
    /// "I have just started, or just learnt you joined": the receiver answers once, so
    /// that each of the two has heard the other directly (ring heartbeats reach only
    /// observers).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hello: bool,
}

/// One observer's verdict about one of its subjects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suspicion {
    /// The subject.
    pub node: String,
    /// The subject's incarnation as the observer knows it (0: never heard).
    pub inc: u64,
    /// Its datagrams arrive but fail authentication (a key mismatch): not a death,
    /// a reason to leave it to its Lease.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unverifiable: bool,
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

/// The largest sealed heartbeat datagram: under a 1500-byte MTU with room for IP, UDP
/// and tunnel headers, so heartbeats are never fragmented.
pub const MAX_DATAGRAM: usize = 1200;

/// Split a heartbeat over datagrams of at most [`MAX_DATAGRAM`] bytes once sealed: each
/// carries the flags (and `sgen`) and a share of the heard list, the claims, the
/// suspicions and the dead notices, with consecutive sequence numbers. Receivers take
/// every list as additive evidence (suspicions within one generation), so the parts
/// mean what the whole would. An entry too large for any datagram (a node name of
/// over a kilobyte) goes alone and may be fragmented.
pub fn heartbeats(base: &Heartbeat) -> Vec<Heartbeat> {
    let empty =
        Heartbeat { heard: Vec::new(), claims: Vec::new(), suspects: Vec::new(), dead: Vec::new(), ..base.clone() };
    let overhead = MAGIC_LEN + TAG_LEN + json_len(&Heartbeat { sent_ms: Some(u64::MAX), ..empty.clone() });
    let mut parts = vec![empty.clone()];
    let mut size = overhead;
    enum Entry<'a> {
        Heard(&'a (String, u32)),
        Claim(Claim),
        Suspect(&'a Suspicion),
        Dead(&'a (String, u64)),
    }
    let entries = base
        .heard
        .iter()
        .map(Entry::Heard)
        .chain(base.claims.iter().map(|c| Entry::Claim(*c)))
        .chain(base.suspects.iter().map(Entry::Suspect))
        .chain(base.dead.iter().map(Entry::Dead));
    for e in entries {
        // One more list entry costs its encoding and a comma; start a new part when full.
        // (An empty list is not serialized at all: its field name costs up to 14 more.)
        let n = 1 + match &e {
            Entry::Heard(h) => json_len(h),
            Entry::Claim(c) => json_len(c),
            Entry::Suspect(s) => json_len(s) + 14,
            Entry::Dead(d) => json_len(d) + 10,
        };
        let last = parts.last().expect("never empty");
        let used =
            !last.heard.is_empty() || !last.claims.is_empty() || !last.suspects.is_empty() || !last.dead.is_empty();
        if size + n > MAX_DATAGRAM && used {
            parts.push(empty.clone());
            size = overhead;
        }
        size += n;
        let last = parts.last_mut().expect("never empty");
        match e {
            Entry::Heard(h) => last.heard.push(h.clone()),
            Entry::Claim(c) => last.claims.push(c),
            Entry::Suspect(s) => last.suspects.push(s.clone()),
            Entry::Dead(d) => last.dead.push(d.clone()),
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
